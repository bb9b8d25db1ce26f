import { spawnSync } from 'child_process';
import * as fs from 'fs';
import {
  BACKENDS, CLIENT_V4, CLIENT_V6, describeKernel, kernelSandboxUnavailableReason, LOCKED_V4,
  requireKernelSandbox, Sandbox,
} from './sandbox';

jest.setTimeout(120_000);

describe('kernel sandbox gate', () => {
  const savedCi = process.env.CI;

  afterEach(() => {
    jest.restoreAllMocks();
    if (savedCi === undefined) {
      delete process.env.CI;
    } else {
      process.env.CI = savedCi;
    }
  });

  it('names root as the reason when not root', () => {
    jest.spyOn(process, 'getuid').mockReturnValue(1000);
    expect(kernelSandboxUnavailableReason()).toMatch(/root/);
  });

  it('skips with a message outside ci', () => {
    jest.spyOn(process, 'getuid').mockReturnValue(1000);
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    delete process.env.CI;

    expect(requireKernelSandbox()).toBe(false);
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/skipping real-kernel tests: .*root/));
  });

  it('throws instead of skipping in ci', () => {
    jest.spyOn(process, 'getuid').mockReturnValue(1000);
    process.env.CI = 'true';

    expect(() => requireKernelSandbox()).toThrow(/CI=true/);
  });
});

describeKernel('sandbox', () => {
  describe.each(BACKENDS)('%s root', (backend) => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = Sandbox.create({ backend });
      sandbox.addUser('alice');
      sandbox.addUser('bob');
      sandbox.startHttpServer(LOCKED_V4, 8080);
      sandbox.startHttpServer('::1', 8080);
      sandbox.startUdpEchoServer(LOCKED_V4, 9999);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    it('reaches the server as two users', () => {
      for (const user of ['alice', 'bob']) {
        const result = sandbox.curl(user, `http://${LOCKED_V4}:8080/`);
        expect({ user, ...result }).toMatchObject({ user, ok: true, httpCode: 200 });
      }
    });

    it('reaches the ipv6 server', () => {
      const result = sandbox.curl('alice', 'http://[::1]:8080/');
      expect(result).toMatchObject({ ok: true, httpCode: 200 });
    });

    it('runs commands as the named user', () => {
      const result = sandbox.run(['id', '-un'], { user: 'alice' });
      expect(result.status).toBe(0);
      expect(result.stdout.trim()).toBe('alice');
    });

    it('runs commands with a numeric uid', () => {
      const result = sandbox.run(['id', '-u'], { user: 4321 });
      expect(result.stdout.trim()).toBe('4321');
    });

    it('keeps users inside the root', () => {
      const hostPasswd = fs.readFileSync('/etc/passwd', 'utf8');
      expect(hostPasswd).not.toMatch(/^alice:/m);
      expect(sandbox.readFile('/etc/passwd')).toMatch(/^alice:/m);
    });

    it('keeps firewall rules inside the namespace', () => {
      const marker = `sandbox-check-${process.pid}`;
      const add = sandbox.sh(`nft add table inet ${marker}`);
      expect(add.status).toBe(0);
      expect(sandbox.run(['nft', 'list', 'tables']).stdout).toContain(marker);
      const hostTables = spawnSync('nft', ['list', 'tables'], { encoding: 'utf8' }).stdout;
      expect(hostTables).not.toContain(marker);
      expect(sandbox.run(['nft', 'delete', 'table', 'inet', marker]).status).toBe(0);
    });

    it('reports a rejected connection', () => {
      const uid = sandbox.uidOf('bob');
      const table = [
        'table inet sandbox_check {',
        '  chain out {',
        '    type filter hook output priority 0;',
        `    ip daddr ${LOCKED_V4} meta l4proto tcp meta skuid ${uid} reject with tcp reset`,
        '  }',
        '}',
      ].join('\n');
      const added = sandbox.run(['nft', '-f', '-'], { input: table });
      expect(added.stderr).toBe('');
      expect(added.status).toBe(0);
      const bob = sandbox.curl('bob', `http://${LOCKED_V4}:8080/`);
      const alice = sandbox.curl('alice', `http://${LOCKED_V4}:8080/`);
      expect(sandbox.run(['nft', 'delete', 'table', 'inet', 'sandbox_check']).status).toBe(0);
      expect(bob).toMatchObject({ ok: false, exitCode: 7, httpCode: 0 });
      expect(alice.ok).toBe(true);
    });

    it('tells udp replies, icmp errors and drops apart', () => {
      const bobUid = sandbox.uidOf('bob');
      const table = [
        'table inet sandbox_udp_check {',
        '  chain out {',
        '    type filter hook output priority 0;',
        `    ip daddr ${LOCKED_V4} meta l4proto udp meta skuid ${bobUid} reject`,
        `    ip daddr ${LOCKED_V4} meta l4proto udp meta skuid 4321 drop`,
        '  }',
        '}',
      ].join('\n');
      expect(sandbox.run(['nft', '-f', '-'], { input: table }).status).toBe(0);
      const alice = sandbox.udpProbe('alice', LOCKED_V4, 9999, { waitSec: 5 });
      const bob = sandbox.udpProbe('bob', LOCKED_V4, 9999, { waitSec: 5 });
      const dropped = sandbox.udpProbe(4321, LOCKED_V4, 9999, { waitSec: 1 });
      expect(sandbox.run(['nft', 'delete', 'table', 'inet', 'sandbox_udp_check']).status).toBe(0);

      expect(alice).toMatchObject({ outcome: 'reply', sendErrno: '' });
      expect(bob).toMatchObject({ outcome: 'icmp-error', receiveErrno: 'ECONNREFUSED' });
      expect(dropped).toMatchObject({ outcome: 'timeout' });
    });

    it('binds clients to the client address', () => {
      const result = sandbox.sh('ip -o addr show dev lo');
      expect(result.stdout).toContain(LOCKED_V4);
      expect(result.stdout).toContain(CLIENT_V4);
      expect(result.stdout).toContain(CLIENT_V6);
    });

    it('provides the arranged backend', () => {
      const iptables = sandbox.sh('command -v iptables && iptables -V');
      if (backend === 'nft-only') {
        expect(iptables.status).not.toBe(0);
        expect(sandbox.run(['nft', '--version']).status).toBe(0);
      } else {
        expect(iptables.status).toBe(0);
        expect(iptables.stdout).toContain(backend === 'iptables-legacy' ? '(legacy)' : '(nf_tables)');
      }
    });

    it('writes and reads files in the root', () => {
      sandbox.writeFile('/etc/ip-lockdown-sandbox-check/file.txt', 'hello\n', 0o600);
      expect(sandbox.readFile('/etc/ip-lockdown-sandbox-check/file.txt')).toBe('hello\n');
      expect(sandbox.run(['stat', '-c', '%a', '/etc/ip-lockdown-sandbox-check/file.txt']).stdout.trim()).toBe('600');
      expect(fs.existsSync('/etc/ip-lockdown-sandbox-check')).toBe(false);
    });
  });

  describe('destroy', () => {
    it('removes everything and runs twice', () => {
      const sandbox = Sandbox.create({ backend: 'iptables-nft' });
      sandbox.startHttpServer(LOCKED_V4, 8080);
      sandbox.destroy();
      sandbox.destroy();
      expect(fs.existsSync(sandbox.tempDir)).toBe(false);
      expect(fs.existsSync(`/run/netns/${sandbox.namespace}`)).toBe(false);
    });
  });
});
