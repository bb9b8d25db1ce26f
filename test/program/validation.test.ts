import {
  BatchRun, createProgramSandbox, describeRun, LOCKS_DIR, resetLockdown, runProgram, runProgramBatch,
  runProgramExpecting, stateSnapshot,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, LOCKED_V4, LOCKED_V4_B, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

// Each case must exit 2 and change neither the ruleset nor the saved locks.
const INVALID_COMMAND_LINES: Array<[string, string[]]> = [
  ['a hostname', ['example.com', 'alice']],
  ['an ipv6 cidr block', ['2001:db8::/64', 'alice']],
  ['a /0 block', ['0.0.0.0/0', 'alice']],
  ['a /0 prefix on an address', [`${LOCKED_V4}/0`, 'alice']],
  ['a prefix over 32', [`${LOCKED_V4}/33`, 'alice']],
  ['a block with host bits set', ['127.77.0.1/24', 'alice']],
  ['an octet over 255', ['127.77.0.256', 'alice']],
  ['three octets', ['127.77.1', 'alice']],
  ['garbage', ['not-an-address', 'alice']],
  ['a bad address among good ones', [`${LOCKED_V4},bogus`, 'alice']],
  ['an uppercase user name', [LOCKED_V4, 'Alice']],
  ['a user name with a space', [LOCKED_V4, 'al ice']],
  ['a user name over 32 characters', [LOCKED_V4, 'a'.repeat(33)]],
  ['a user name with a slash', [LOCKED_V4, 'alice/bob']],
  ['a bad group name', ['--group', 'Ops Team', LOCKED_V4, 'alice']],
  ['an unknown option', ['--frobnicate', LOCKED_V4, 'alice']],
  ['a bad lock name', ['--config', '/root/valid.conf', '--name', '../escape']],
  ['a lock name with a slash', ['--config', '/root/valid.conf', '--name', 'a/b']],
  ['a bad backend', ['--backend', 'ipfw', LOCKED_V4, 'alice']],
  ['a missing address', []],
  ['--unlock with a hostname', ['--unlock', 'example.com']],
];

// Each config has one bad line at line 3.
const INVALID_CONFIGS: Array<[string, string]> = [
  ['an unknown directive', 'adress 127.77.0.2'],
  ['a hostname address', 'address example.com'],
  ['an ipv6 cidr address', 'address 2001:db8::/64'],
  ['a /0 address', 'address 0.0.0.0/0'],
  ['a bad user name', 'user Not-Valid'],
  ['two values on one line', 'user alice bob'],
  ['a bad group', 'group $(id)'],
  ['a directive without a value', 'address'],
  ['a bad interface pattern', 'block-forwarded eth0;reboot'],
];

// Names that a shell would run if the program ever evaluated an argument.
const INJECTION_NAMES = [
  '$(touch /tmp/pwned)',
  ';touch /tmp/pwned',
  '`touch /tmp/pwned`',
  'alice;touch /tmp/pwned',
  'alice$(touch /tmp/pwned)',
  'alice|touch /tmp/pwned',
  'alice && touch /tmp/pwned',
];

describeKernel('validation', () => {
  describe.each(BACKENDS)('%s', (backend) => {
    let sandbox: Sandbox;
    let baseline: BatchRun;
    let commandLineRuns: BatchRun[];
    let configRuns: BatchRun[];
    let injectionRuns: BatchRun[];
    let pwnedAfterBatch: boolean;

    // The tables run in one sandbox command per backend: a usage error must
    // leave nothing changed, so every run is compared with the state before
    // them all.
    beforeAll(() => {
      sandbox = createProgramSandbox(backend);
      resetLockdown(sandbox);
      sandbox.sh('rm -f /tmp/pwned');
      sandbox.writeFile('/root/valid.conf', `address ${LOCKED_V4}\nuser alice\n`);
      INVALID_CONFIGS.forEach(([, badLine], index) => {
        sandbox.writeFile(`/root/bad${index}.conf`, `# comment\naddress ${LOCKED_V4}\n${badLine}\nuser alice\n`);
      });
      // A lock in place first, so "nothing changed" also covers not dropping it.
      runProgramExpecting(sandbox, [LOCKED_V4_B, 'bob']);

      const runs = runProgramBatch(sandbox, [
        ['--help'],
        ...INVALID_COMMAND_LINES.map(([, args]) => args),
        ...INVALID_CONFIGS.map((_, index) => ['--config', `/root/bad${index}.conf`, '--name', 'bad']),
        ...INJECTION_NAMES.map((name) => [LOCKED_V4, name]),
      ]);
      baseline = runs[0];
      commandLineRuns = runs.slice(1, 1 + INVALID_COMMAND_LINES.length);
      configRuns = runs.slice(1 + INVALID_COMMAND_LINES.length, 1 + INVALID_COMMAND_LINES.length + INVALID_CONFIGS.length);
      injectionRuns = runs.slice(1 + INVALID_COMMAND_LINES.length + INVALID_CONFIGS.length);
      pwnedAfterBatch = sandbox.exists('/tmp/pwned');
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    it.each(INVALID_COMMAND_LINES.map(([name], index) => [name, index] as const))('rejects %s', (_name, index) => {
      const run = commandLineRuns[index];

      expect({ status: run.status, run: describeBatchRun(run) }).toMatchObject({ status: 2 });
      expect(run.stderr).toMatch(/^ip-lockdown: /m);
      expect(run.state).toBe(baseline.state);
    });

    it('says ipv6 blocks are not supported', () => {
      const run = commandLineRuns[INVALID_COMMAND_LINES.findIndex(([name]) => name === 'an ipv6 cidr block')];
      expect(run.status).toBe(2);
      expect(run.stderr).toMatch(/not supported/i);
    });

    it.each(INVALID_CONFIGS.map(([name], index) => [name, index] as const))('rejects a config with %s', (_name, index) => {
      const run = configRuns[index];

      expect({ status: run.status, run: describeBatchRun(run) }).toMatchObject({ status: 2 });
      expect(run.stderr).toContain(`/root/bad${index}.conf`);
      expect(run.stderr).toMatch(/line 3\b|:3\b/);
      expect(run.state).toBe(baseline.state);
    });

    it.each(INJECTION_NAMES.map((name, index) => [name, index] as const))('never runs the user name %s', (_name, index) => {
      const run = injectionRuns[index];

      expect({ status: run.status, run: describeBatchRun(run) }).toMatchObject({ status: 2 });
      expect(run.state).toBe(baseline.state);
      expect(pwnedAfterBatch).toBe(false);
    });

    it('rejects a bad saved lock on --apply', () => {
      const before = stateSnapshot(sandbox);
      sandbox.writeFile(`${LOCKS_DIR}/broken.conf`, `address ${LOCKED_V4}\nusr alice\n`);

      const result = runProgram(sandbox, ['--apply']);
      sandbox.sh(`rm -f ${LOCKS_DIR}/broken.conf`);

      expect({ status: result.status, run: describeRun(['--apply'], result) }).toMatchObject({ status: 2 });
      expect(result.stderr).toContain('broken.conf');
      expect(stateSnapshot(sandbox)).toBe(before);
    });

    it('rejects a missing config file', () => {
      const before = stateSnapshot(sandbox);
      const result = runProgram(sandbox, ['--config', '/root/missing.conf', '--name', 'missing']);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain('/root/missing.conf');
      expect(stateSnapshot(sandbox)).toBe(before);
    });

    it('never runs the group name or config values', () => {
      sandbox.sh('rm -f /tmp/pwned');
      const group = runProgram(sandbox, ['--group', '$(touch /tmp/pwned)', LOCKED_V4]);
      expect(group.status).toBe(2);
      expect(sandbox.exists('/tmp/pwned')).toBe(false);
      sandbox.writeFile('/root/evil.conf', [
        `address ${LOCKED_V4}`,
        'user $(touch /tmp/pwned)',
        'group `touch /tmp/pwned`',
        'address 127.77.0.1;touch /tmp/pwned',
        'block-forwarded $(touch /tmp/pwned)',
      ].join('\n') + '\n');
      const config = runProgram(sandbox, ['--config', '/root/evil.conf', '--name', 'evil']);
      expect(config.status).toBe(2);
      const name = runProgram(sandbox, ['--config', '/root/valid.conf', '--name', '$(touch /tmp/pwned)']);
      expect(name.status).toBe(2);
      expect(sandbox.exists('/tmp/pwned')).toBe(false);
    });

    it('changes nothing on --dry-run', () => {
      const before = stateSnapshot(sandbox);

      const result = runProgram(sandbox, ['--dry-run', LOCKED_V4, 'alice']);

      expect({ status: result.status, run: describeRun(['--dry-run'], result) }).toMatchObject({ status: 0 });
      expect(result.stdout).toContain(LOCKED_V4);
      expect(stateSnapshot(sandbox)).toBe(before);
    });

    // Refusing the combination (exit 2) is as good as a dry run for the boot service.
    it.each([
      ['--unlock', ['--dry-run', '--unlock', LOCKED_V4_B], [0]],
      ['--config', ['--dry-run', '--config', '/root/valid.conf', '--name', 'dry'], [0]],
      ['--apply', ['--dry-run', '--apply'], [0]],
      ['--install-boot-service', ['--dry-run', '--install-boot-service'], [0, 2]],
    ])('changes nothing on --dry-run with %s', (_name, args, statuses) => {
      sandbox.sh('rm -f /etc/systemd/system/ip-lockdown.service /etc/systemd/system/sysinit.target.wants/ip-lockdown.service');
      const before = stateSnapshot(sandbox);

      const result = runProgram(sandbox, args);

      expect(statuses).toContain(result.status);
      expect(stateSnapshot(sandbox)).toBe(before);
      expect(sandbox.exists('/etc/systemd/system/ip-lockdown.service')).toBe(false);
    });

    it('lists options and exit codes in --help', () => {
      expect(baseline.status).toBe(0);
      const options = ['--config', '--name', '--apply', '--status', '--unlock', '--install-boot-service',
        '--group', '--log-blocked', '--block-forwarded', '--dry-run', '--backend'];
      for (const option of options) {
        expect(baseline.stdout).toContain(option);
      }
      const exitSection = baseline.stdout.slice(baseline.stdout.search(/exit/i));
      for (const code of ['0', '1', '2', '3', '4', '5']) {
        expect(exitSection).toMatch(new RegExp(`(^|\\s)${code}\\b`, 'm'));
      }
    });
  });
});

function describeBatchRun(run: BatchRun): string {
  return describeRun(run.args, run);
}
