import {
  allowed, createProgramSandbox, curlAs, flushFirewall, LOCKS_DIR, rejected, resetLockdown,
  runProgramExpecting, savedLocks, UNLOCKED_V4,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, LOCKED_V4, LOCKED_V4_B, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

describeKernel('classic form and saved locks', () => {
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

    it('runs under dash', () => {
      const shell = sandbox.run(['readlink', '-f', '/bin/sh']);
      expect(shell.stdout.trim()).toBe('/usr/bin/dash');
    });

    it('allows the listed user and rejects others', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'root', LOCKED_V4)).toMatchObject(rejected('root', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', UNLOCKED_V4)).toMatchObject(allowed('bob', UNLOCKED_V4));
    });

    it('saves the classic lock as a config file', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      const locks = savedLocks(sandbox);
      expect(locks).toEqual([`cli-${LOCKED_V4}.conf`]);
      const config = sandbox.readFile(`${LOCKS_DIR}/${locks[0]}`);
      expect(config).toMatch(new RegExp(`^\\s*address\\s+${LOCKED_V4.replace(/\./g, '\\.')}\\s*$`, 'm'));
      expect(config).toMatch(/^\s*user\s+alice\s*$/m);
      const mode = sandbox.run(['stat', '-c', '%a', `${LOCKS_DIR}/${locks[0]}`]).stdout.trim();
      expect(mode).toBe('644');
    });

    it('replaces the classic lock of an address', () => {
      runProgramExpecting(sandbox, [`${LOCKED_V4}/32`, 'alice']);
      runProgramExpecting(sandbox, [LOCKED_V4, 'bob']);

      expect(savedLocks(sandbox)).toHaveLength(1);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(rejected('alice', LOCKED_V4));
    });

    it('treats two ipv6 spellings as one address', () => {
      runProgramExpecting(sandbox, ['0:0:0:0:0:0:0:1', 'alice']);
      runProgramExpecting(sandbox, ['::1', 'bob']);

      expect(savedLocks(sandbox)).toHaveLength(1);
      expect(curlAs(sandbox, 'bob', '::1')).toMatchObject(allowed('bob', '::1'));
      expect(curlAs(sandbox, 'alice', '::1')).toMatchObject(rejected('alice', '::1'));
    });

    it('allows root when listed', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'root']);

      expect(curlAs(sandbox, 'root', LOCKED_V4)).toMatchObject(allowed('root', LOCKED_V4));
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(rejected('alice', LOCKED_V4));
    });

    it('accepts a numeric uid', () => {
      const uid = sandbox.uidOf('alice');
      runProgramExpecting(sandbox, [LOCKED_V4, `${uid}`]);

      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, uid, LOCKED_V4)).toMatchObject(allowed(uid, LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('allows a supplementary group member', () => {
      runProgramExpecting(sandbox, ['--group', 'ops', LOCKED_V4]);

      expect(curlAs(sandbox, 'dave', LOCKED_V4)).toMatchObject(allowed('dave', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('combines users and groups', () => {
      runProgramExpecting(sandbox, ['--group', 'ops', LOCKED_V4, 'alice']);

      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'dave', LOCKED_V4)).toMatchObject(allowed('dave', LOCKED_V4));
      expect(curlAs(sandbox, 'carol', LOCKED_V4)).toMatchObject(rejected('carol', LOCKED_V4));
    });

    it('rejects everyone when no user is listed', () => {
      runProgramExpecting(sandbox, [LOCKED_V4]);

      for (const user of ['root', 'alice', 'bob']) {
        expect(curlAs(sandbox, user, LOCKED_V4)).toMatchObject(rejected(user, LOCKED_V4));
      }
      expect(curlAs(sandbox, 'bob', UNLOCKED_V4)).toMatchObject(allowed('bob', UNLOCKED_V4));
    });

    it('locks several addresses', () => {
      runProgramExpecting(sandbox, [`${LOCKED_V4},${LOCKED_V4_B}`, 'alice']);

      for (const address of [LOCKED_V4, LOCKED_V4_B]) {
        expect(curlAs(sandbox, 'alice', address)).toMatchObject(allowed('alice', address));
        expect(curlAs(sandbox, 'bob', address)).toMatchObject(rejected('bob', address));
      }
      expect(curlAs(sandbox, 'bob', UNLOCKED_V4)).toMatchObject(allowed('bob', UNLOCKED_V4));
    });

    it('locks an ipv4 cidr block', () => {
      runProgramExpecting(sandbox, ['127.77.0.0/24', 'alice']);

      for (const address of [LOCKED_V4, LOCKED_V4_B]) {
        expect(curlAs(sandbox, 'alice', address)).toMatchObject(allowed('alice', address));
        expect(curlAs(sandbox, 'bob', address)).toMatchObject(rejected('bob', address));
      }
      expect(curlAs(sandbox, 'bob', UNLOCKED_V4)).toMatchObject(allowed('bob', UNLOCKED_V4));
    });

    it('locks an ipv6 address', () => {
      runProgramExpecting(sandbox, ['::1', 'alice']);

      expect(curlAs(sandbox, 'alice', '::1')).toMatchObject(allowed('alice', '::1'));
      expect(curlAs(sandbox, 'bob', '::1')).toMatchObject(rejected('bob', '::1'));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));
    });

    it('applies a config file under a name', () => {
      sandbox.writeFile('/root/web.conf', [
        '# web tier',
        `address ${LOCKED_V4}`,
        '',
        '  user alice  ',
        'group ops',
      ].join('\n') + '\n');

      runProgramExpecting(sandbox, ['--config', '/root/web.conf', '--name', 'web']);

      expect(savedLocks(sandbox)).toEqual(['web.conf']);
      expect(sandbox.readFile(`${LOCKS_DIR}/web.conf`)).toMatch(/^\s*user\s+alice\s*$/m);
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'dave', LOCKED_V4)).toMatchObject(allowed('dave', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('names a config lock after its file by default', () => {
      sandbox.writeFile('/root/api.conf', `address ${LOCKED_V4}\nuser alice\n`);

      runProgramExpecting(sandbox, ['--config', '/root/api.conf']);

      expect(savedLocks(sandbox)).toEqual(['api.conf']);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('replaces a lock saved under the same name', () => {
      sandbox.writeFile('/root/web.conf', `address ${LOCKED_V4}\nuser alice\n`);
      runProgramExpecting(sandbox, ['--config', '/root/web.conf', '--name', 'web']);
      sandbox.writeFile('/root/web.conf', `address ${LOCKED_V4}\nuser bob\n`);
      runProgramExpecting(sandbox, ['--config', '/root/web.conf', '--name', 'web']);

      expect(savedLocks(sandbox)).toEqual(['web.conf']);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(rejected('alice', LOCKED_V4));
    });

    it('intersects two locks on one address', () => {
      sandbox.writeFile('/root/a.conf', `address ${LOCKED_V4}\naddress ${LOCKED_V4_B}\nuser alice\nuser bob\n`);
      sandbox.writeFile('/root/b.conf', `address ${LOCKED_V4}\nuser alice\nuser carol\n`);

      runProgramExpecting(sandbox, ['--config', '/root/a.conf', '--name', 'a']);
      runProgramExpecting(sandbox, ['--config', '/root/b.conf', '--name', 'b']);

      expect(savedLocks(sandbox)).toEqual(['a.conf', 'b.conf']);
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'carol', LOCKED_V4)).toMatchObject(rejected('carol', LOCKED_V4));
      // The second address is named only by the first lock, so its own list applies there.
      expect(curlAs(sandbox, 'bob', LOCKED_V4_B)).toMatchObject(allowed('bob', LOCKED_V4_B));
      expect(curlAs(sandbox, 'carol', LOCKED_V4_B)).toMatchObject(rejected('carol', LOCKED_V4_B));
    });

    it('re-applies saved locks with --apply', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      runProgramExpecting(sandbox, [LOCKED_V4_B, 'bob']);
      flushFirewall(sandbox);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(allowed('bob', LOCKED_V4));

      runProgramExpecting(sandbox, ['--apply']);

      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4_B)).toMatchObject(allowed('bob', LOCKED_V4_B));
      expect(curlAs(sandbox, 'alice', LOCKED_V4_B)).toMatchObject(rejected('alice', LOCKED_V4_B));
    });

    it('selects the backend of the root', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      const nft = sandbox.run(['nft', 'list', 'tables']).stdout;
      if (backend === 'nft-only') {
        expect(nft).toContain('inet ip_lockdown');
      } else {
        expect(sandbox.run(['iptables', '-S', 'IPLOCKDOWN']).status).toBe(0);
        expect(nft).not.toContain('ip_lockdown');
      }
    });
  });
});
