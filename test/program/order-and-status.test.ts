import {
  allowed, createProgramSandbox, curlAs, describeRun, flushFirewall, iptablesRules, LOCKS_DIR, nftTable,
  rejected, resetLockdown, runProgram, runProgramExpecting, savedLocks, usesIptables,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, LOCKED_V4, LOCKED_V4_B, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

const IPTABLES_BACKENDS = BACKENDS.filter(usesIptables);

function addForeignIptablesRules(sandbox: Sandbox): void {
  const script = [
    'iptables -I OUTPUT 1 -j ACCEPT',
    'iptables -N DOCKER-USER',
    'iptables -A DOCKER-USER -s 203.0.113.7 -j RETURN',
    'iptables -A FORWARD -j DOCKER-USER',
    'iptables -N FOREIGN-CHAIN',
    'iptables -A FOREIGN-CHAIN -d 203.0.113.9 -j ACCEPT',
  ].join(' && ');
  const result = sandbox.sh(script);
  if (result.status !== 0) {
    throw new Error(`adding foreign rules failed: ${result.stderr}`);
  }
}

describeKernel('rule order, status and unlock', () => {
  describe.each(IPTABLES_BACKENDS)('%s', (backend) => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox(backend);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    beforeEach(() => {
      resetLockdown(sandbox);
    });

    it('jumps to our chain first in OUTPUT', () => {
      runProgramExpecting(sandbox, [`${LOCKED_V4},::1`, 'alice']);

      expect(iptablesRules(sandbox, 4, 'OUTPUT')[1]).toBe('-A OUTPUT -j IPLOCKDOWN');
      expect(iptablesRules(sandbox, 6, 'OUTPUT')[1]).toBe('-A OUTPUT -j IPLOCKDOWN');
    });

    it('moves our jump back in front of a foreign rule', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      addForeignIptablesRules(sandbox);
      expect(iptablesRules(sandbox, 4, 'OUTPUT')[1]).toBe('-A OUTPUT -j ACCEPT');
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));

      runProgramExpecting(sandbox, ['--apply']);

      const output = iptablesRules(sandbox, 4, 'OUTPUT');
      expect(output[1]).toBe('-A OUTPUT -j IPLOCKDOWN');
      expect(output.filter((rule) => rule === '-A OUTPUT -j IPLOCKDOWN')).toHaveLength(1);
      expect(output).toContain('-A OUTPUT -j ACCEPT');
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('keeps foreign rules and chains', () => {
      addForeignIptablesRules(sandbox);
      const foreign = iptablesRules(sandbox, 4).filter((rule) => !rule.includes('IPLOCKDOWN'));

      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      runProgramExpecting(sandbox, [LOCKED_V4_B, 'bob']);
      runProgramExpecting(sandbox, ['--unlock', LOCKED_V4_B]);

      const after = iptablesRules(sandbox, 4);
      expect(after.filter((rule) => !rule.includes('IPLOCKDOWN'))).toEqual(foreign);
      expect(after).toContain('-A DOCKER-USER -s 203.0.113.7/32 -j RETURN');
      expect(after).toContain('-A FOREIGN-CHAIN -d 203.0.113.9/32 -j ACCEPT');
    });

    it('reports drift when a foreign rule is above our jump', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      expect(runProgram(sandbox, ['--status']).status).toBe(0);

      expect(sandbox.run(['iptables', '-I', 'OUTPUT', '1', '-j', 'ACCEPT']).status).toBe(0);

      const status = runProgram(sandbox, ['--status']);
      expect({ status: status.status, run: describeRun(['--status'], status) }).toMatchObject({ status: 1 });
    });

    it('reports drift when a lock chain lost a rule', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      const lockChain = iptablesRules(sandbox, 4)
        .map((rule) => rule.match(/^-N (IPLOCKDOWN-\S+)/)?.[1])
        .find((chain) => chain !== undefined && chain !== 'IPLOCKDOWN-FWD');
      expect(lockChain).toBeDefined();
      expect(sandbox.run(['iptables', '-D', lockChain!, '1']).status).toBe(0);

      expect(runProgram(sandbox, ['--status']).status).toBe(1);
    });
  });

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
    });

    it('reports status 1 before anything is applied', () => {
      expect(runProgram(sandbox, ['--status']).status).toBe(1);
    });

    it('reports the lock in place with status 0', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      const status = runProgram(sandbox, ['--status']);

      expect({ status: status.status, run: describeRun(['--status'], status) }).toMatchObject({ status: 0 });
      expect(status.stdout).toContain(LOCKED_V4);
      expect(status.stdout).toContain('alice');
    });

    it('reports drift after a flush', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      flushFirewall(sandbox);

      const status = runProgram(sandbox, ['--status']);

      expect({ status: status.status, run: describeRun(['--status'], status) }).toMatchObject({ status: 1 });
    });

    it('reports drift when a named user appears', () => {
      const user = 'latecomer';
      const first = runProgram(sandbox, [LOCKED_V4, 'alice', user]);
      expect({ status: first.status, run: describeRun([LOCKED_V4, 'alice', user], first) }).toMatchObject({ status: 4 });

      sandbox.addUser(user);

      const status = runProgram(sandbox, ['--status']);
      expect({ status: status.status, run: describeRun(['--status'], status) }).toMatchObject({ status: 1 });
      expect(curlAs(sandbox, user, LOCKED_V4)).toMatchObject(rejected(user, LOCKED_V4));

      runProgramExpecting(sandbox, ['--apply']);
      expect(runProgram(sandbox, ['--status']).status).toBe(0);
      expect(curlAs(sandbox, user, LOCKED_V4)).toMatchObject(allowed(user, LOCKED_V4));
    });

    it('unlocks one address and keeps the others', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      sandbox.writeFile('/root/both.conf', `address ${LOCKED_V4}\naddress ${LOCKED_V4_B}\nuser carol\n`);
      runProgramExpecting(sandbox, ['--config', '/root/both.conf', '--name', 'both']);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));

      runProgramExpecting(sandbox, ['--unlock', LOCKED_V4]);

      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4_B)).toMatchObject(rejected('bob', LOCKED_V4_B));
      expect(curlAs(sandbox, 'carol', LOCKED_V4_B)).toMatchObject(allowed('carol', LOCKED_V4_B));
      // The classic lock named only the unlocked address, so it is deleted.
      expect(savedLocks(sandbox)).toEqual(['both.conf']);
      const both = sandbox.readFile(`${LOCKS_DIR}/both.conf`);
      expect(both).not.toContain(LOCKED_V4 + '\n');
      expect(both).toContain(LOCKED_V4_B);
      expect(runProgram(sandbox, ['--status']).status).toBe(0);
    });

    it('removes all our rules when the last lock is unlocked', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      runProgramExpecting(sandbox, ['--unlock', LOCKED_V4]);

      expect(savedLocks(sandbox)).toEqual([]);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));
      if (usesIptables(backend)) {
        expect(iptablesRules(sandbox, 4).filter((rule) => rule.includes('IPLOCKDOWN'))).toEqual([]);
        expect(iptablesRules(sandbox, 6).filter((rule) => rule.includes('IPLOCKDOWN'))).toEqual([]);
      } else {
        expect(nftTable(sandbox)).not.toContain(LOCKED_V4);
      }
    });

    it('leaves foreign nft tables alone', () => {
      const foreign = [
        'table inet foreign_tool {',
        '  chain out {',
        '    type filter hook output priority -300; policy accept;',
        '    ip daddr 203.0.113.9 counter accept',
        '  }',
        '}',
      ].join('\n');
      expect(sandbox.run(['nft', '-f', '-'], { input: foreign }).status).toBe(0);
      const before = sandbox.run(['nft', 'list', 'table', 'inet', 'foreign_tool']).stdout;

      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      runProgramExpecting(sandbox, ['--unlock', LOCKED_V4]);
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      expect(sandbox.run(['nft', 'list', 'table', 'inet', 'foreign_tool']).stdout).toBe(before);
      // An accept in another base chain does not end evaluation in ours.
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });
  });
});
