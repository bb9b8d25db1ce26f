import {
  allowed, createProgramSandbox, curlAs, describeRun, flushFirewall, rejected, resetLockdown, runProgram,
  runProgramExpecting,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, LOCKED_V4, PROGRAM_PATH, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

const UNIT_PATH = '/etc/systemd/system/ip-lockdown.service';
const WANTS_LINK = '/etc/systemd/system/sysinit.target.wants/ip-lockdown.service';

/** Returns the `Key=value` lines of a unit file, keyed by section and key. */
function parseUnit(text: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  let section = '';
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    const header = line.match(/^\[(.+)\]$/);
    if (header) {
      section = header[1];
      continue;
    }
    const pair = line.match(/^([A-Za-z]+)=(.*)$/);
    if (pair) {
      const key = `${section}.${pair[1]}`;
      entries.set(key, [...(entries.get(key) ?? []), pair[2]]);
    }
  }
  return entries;
}

describeKernel('boot service', () => {
  describe.each(BACKENDS)('%s', (backend) => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox(backend);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    beforeEach(() => {
      resetLockdown(sandbox);
      sandbox.sh(`rm -f ${UNIT_PATH} ${WANTS_LINK}`);
    });

    it('writes and enables the unit', () => {
      const result = runProgram(sandbox, ['--install-boot-service']);
      expect({ status: result.status, run: describeRun(['--install-boot-service'], result) }).toMatchObject({ status: 0 });

      const unit = parseUnit(sandbox.readFile(UNIT_PATH));
      expect(unit.get('Unit.DefaultDependencies')).toEqual(['no']);
      expect(unit.get('Unit.After')?.join(' ')).toContain('local-fs.target');
      expect(unit.get('Unit.Before')?.join(' ')).toContain('network-pre.target');
      expect(unit.get('Unit.Wants')?.join(' ')).toContain('network-pre.target');
      expect(unit.get('Service.Type')).toEqual(['oneshot']);
      expect(unit.get('Service.ExecStart')).toEqual([`${PROGRAM_PATH} --apply`]);
      expect(unit.get('Install.WantedBy')).toEqual(['sysinit.target']);

      const link = sandbox.run(['readlink', '-f', WANTS_LINK]);
      expect(link.status).toBe(0);
      expect(link.stdout.trim()).toBe(UNIT_PATH);
      expect(sandbox.run(['test', '-L', WANTS_LINK]).status).toBe(0);
    });

    it('restores the lock after a simulated reboot', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      runProgramExpecting(sandbox, ['--install-boot-service']);
      const execStart = parseUnit(sandbox.readFile(UNIT_PATH)).get('Service.ExecStart')?.[0];
      expect(execStart).toBeDefined();

      // A reboot empties the firewall and /run but keeps /etc.
      flushFirewall(sandbox);
      sandbox.sh('rm -rf /run/ip-lockdown /run/ip-lockdown.lock');
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));
      expect(runProgram(sandbox, ['--status']).status).toBe(1);

      const boot = sandbox.run(execStart!.split(/\s+/));

      expect({ status: boot.status, stderr: boot.stderr }).toMatchObject({ status: 0 });
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(runProgram(sandbox, ['--status']).status).toBe(0);
    });

    it('logs and exits 0 without systemd', () => {
      const hide = sandbox.sh('mv /etc/systemd /etc/systemd.hidden && for f in /usr/bin/systemctl /bin/systemctl; do if [ -e "$f" ]; then mv "$f" "$f.hidden"; fi; done');
      expect(hide.status).toBe(0);
      try {
        expect(sandbox.sh('command -v systemctl').status).not.toBe(0);

        const result = runProgram(sandbox, ['--install-boot-service']);

        expect({ status: result.status, run: describeRun(['--install-boot-service'], result) }).toMatchObject({ status: 0 });
        expect(result.stderr).toMatch(/^ip-lockdown: [a-z]+: .*systemd/m);
        expect(sandbox.exists(UNIT_PATH)).toBe(false);
      } finally {
        sandbox.sh('mv /etc/systemd.hidden /etc/systemd; for f in /usr/bin/systemctl /bin/systemctl; do if [ -e "$f.hidden" ]; then mv "$f.hidden" "$f"; fi; done');
      }
    });
  });
});
