import {
  allowed, createProgramSandbox, curlAs, describeRun, installFailingApply, installMissingOwnerMatch, nftTable,
  OWNER_MATCH_TOOLS, rejected, removeFailingApply, resetLockdown, restoreTools, runProgram, runProgramExpecting,
  usesIptables,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, LOCKED_V4, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

describeKernel('failing closed', () => {
  describe.each(BACKENDS)('%s', (backend) => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox(backend);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    beforeEach(() => {
      removeFailingApply(sandbox);
      restoreTools(sandbox, OWNER_MATCH_TOOLS);
      resetLockdown(sandbox);
    });

    it('skips an unknown user with exit 4', () => {
      const args = [LOCKED_V4, 'alice', 'nosuchuser'];
      const result = runProgram(sandbox, args);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 4 });
      expect(result.stderr).toContain('nosuchuser');
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'root', LOCKED_V4)).toMatchObject(rejected('root', LOCKED_V4));
    });

    it('accepts a user name ending in a dollar sign', () => {
      // Such names (Samba machine accounts) are valid, so a missing one is exit 4, not a usage error.
      const args = [LOCKED_V4, 'alice', 'host$'];
      const result = runProgram(sandbox, args);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 4 });
      expect(result.stderr).toContain('host$');
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
    });

    it('skips an unknown group with exit 4', () => {
      const args = ['--group', 'nosuchgroup', LOCKED_V4, 'alice'];
      const result = runProgram(sandbox, args);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 4 });
      expect(result.stderr).toContain('nosuchgroup');
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('locks everyone out when the only user is unknown', () => {
      const result = runProgram(sandbox, [LOCKED_V4, 'nosuchuser']);

      expect(result.status).toBe(4);
      for (const user of ['root', 'alice', 'bob']) {
        expect(curlAs(sandbox, user, LOCKED_V4)).toMatchObject(rejected(user, LOCKED_V4));
      }
    });

    it('keeps the previous lock when applying fails', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      installFailingApply(sandbox);

      const args = [LOCKED_V4, 'bob'];
      const result = runProgram(sandbox, args);
      removeFailingApply(sandbox);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 5 });
      expect(result.stderr).toMatch(/^ip-lockdown: /m);
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('falls back to rejecting everyone when nothing was locked', () => {
      installFailingApply(sandbox);

      const args = [LOCKED_V4, 'alice'];
      const result = runProgram(sandbox, args);
      removeFailingApply(sandbox);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 5 });
      expect(result.stderr).toMatch(/fallback|everyone/i);
      for (const user of ['root', 'alice', 'bob']) {
        expect(curlAs(sandbox, user, LOCKED_V4)).toMatchObject(rejected(user, LOCKED_V4));
      }
      // The fallback is not the saved lock, so --status must not call it in place.
      expect(runProgram(sandbox, ['--status']).status).toBe(1);
    });

    if (usesIptables(backend)) {
      it('exits 3 without the owner match', () => {
        installMissingOwnerMatch(sandbox);
        const args = [LOCKED_V4, 'alice'];
        const result = runProgram(sandbox, args);
        removeFailingApply(sandbox);
        restoreTools(sandbox, OWNER_MATCH_TOOLS);

        expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 3 });
        expect(result.stderr).toMatch(/owner/);
      });
    }

    it('reports drift after a failed apply', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      installFailingApply(sandbox);
      const failed = runProgram(sandbox, [LOCKED_V4, 'bob']);
      removeFailingApply(sandbox);
      expect(failed.status).toBe(5);

      // The rules in place allow alice. If the saved lock now names bob, that is
      // drift (exit 1). If the old lock stayed saved, status 0 must report alice.
      const status = runProgram(sandbox, ['--status']);
      const bobAllowedNow = curlAs(sandbox, 'bob', LOCKED_V4).ok;
      expect(bobAllowedNow).toBe(false);
      if (status.status === 0) {
        expect(status.stdout).toContain('alice');
      } else {
        expect(status.status).toBe(1);
      }
    });
  });

  describe('without a firewall tool', () => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox('nft-only');
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    it('exits 3 when iptables is requested but missing', () => {
      const args = ['--backend', 'iptables', LOCKED_V4, 'alice'];
      const result = runProgram(sandbox, args);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 3 });
      expect(result.stderr).toMatch(/iptables/);
      expect(nftTable(sandbox)).toBe('');
    });

    it('exits 3 with neither iptables nor nft', () => {
      const hidden = sandbox.run(['mv', '/usr/sbin/nft', '/usr/sbin/nft.hidden']);
      expect(hidden.status).toBe(0);
      expect(sandbox.sh('command -v nft || command -v iptables').status).not.toBe(0);

      const args = [LOCKED_V4, 'alice'];
      const result = runProgram(sandbox, args);

      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 3 });
      expect(result.stderr).toMatch(/iptables/);
      expect(result.stderr).toMatch(/nft/);
    });
  });

  describe('explicit backend', () => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox('iptables-legacy');
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    it('uses nft when asked in an iptables root', () => {
      runProgramExpecting(sandbox, ['--backend', 'nft', LOCKED_V4, 'alice']);

      expect(nftTable(sandbox)).toContain('ip_lockdown');
      expect(sandbox.run(['iptables', '-S', 'IPLOCKDOWN']).status).not.toBe(0);
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });
  });
});
