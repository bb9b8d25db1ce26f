import {
  createProgramSandbox, describeRun, FAST_FAIL_MS, iptablesRules, nftTable, resetLockdown, runProgram,
  runProgramExpecting, SLOW_CONNECT_TIMEOUT_SEC, urlOf, usesIptables,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, ForwardingTopology, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

const IFACE_PATTERN = 'veth-ipld+';

describeKernel('forwarded traffic', () => {
  describe.each(BACKENDS)('%s', (backend) => {
    let sandbox: Sandbox;
    let topology: ForwardingTopology;
    let lockedUpstream: string;
    let openUpstream: string;

    beforeAll(() => {
      sandbox = createProgramSandbox(backend);
      topology = sandbox.addForwardingTopology({ containerIface: 'veth-ipld0' });
      [lockedUpstream, openUpstream] = topology.upstreamAddresses;
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    beforeEach(() => {
      resetLockdown(sandbox);
    });

    function containerCurl(address: string, connectTimeoutSec?: number) {
      const url = urlOf(address, topology.port);
      return { url, ...sandbox.curlFromNamespace(topology.containerNs, url, { connectTimeoutSec }) };
    }

    it('forwards container traffic before any lock', () => {
      expect(containerCurl(lockedUpstream)).toMatchObject({ ok: true });
      expect(containerCurl(openUpstream)).toMatchObject({ ok: true });
    });

    it('rejects forwarded traffic to a locked address', () => {
      const args = ['--block-forwarded', IFACE_PATTERN, lockedUpstream, 'alice'];
      runProgramExpecting(sandbox, args);

      const blocked = containerCurl(lockedUpstream, SLOW_CONNECT_TIMEOUT_SEC);

      expect(blocked).toMatchObject({ ok: false, exitCode: 7 });
      expect(blocked.durationMs).toBeLessThan(FAST_FAIL_MS);
      expect(containerCurl(openUpstream)).toMatchObject({ ok: true });
    });

    it('still applies the owner lock to local processes', () => {
      runProgramExpecting(sandbox, ['--block-forwarded', IFACE_PATTERN, lockedUpstream, 'alice']);

      const url = urlOf(lockedUpstream, topology.port);
      // The sandbox end of the upstream link is the source, so the server's replies are not locked.
      expect(sandbox.curl('alice', url, { source: '198.51.100.1' })).toMatchObject({ ok: true });
      expect(sandbox.curl('bob', url, { source: '198.51.100.1' })).toMatchObject({ ok: false, exitCode: 7 });
    });

    it('leaves forwarded traffic alone without --block-forwarded', () => {
      runProgramExpecting(sandbox, [lockedUpstream, 'alice']);

      expect(containerCurl(lockedUpstream)).toMatchObject({ ok: true });
    });

    it('reads the interface pattern from a config file', () => {
      sandbox.writeFile('/root/docker.conf', `address ${lockedUpstream}\nuser alice\nblock-forwarded ${IFACE_PATTERN}\n`);
      runProgramExpecting(sandbox, ['--config', '/root/docker.conf', '--name', 'docker']);

      expect(containerCurl(lockedUpstream)).toMatchObject({ ok: false, exitCode: 7 });
      expect(containerCurl(openUpstream)).toMatchObject({ ok: true });
      expect(runProgram(sandbox, ['--status']).status).toBe(0);
    });

    it('ignores traffic from interfaces that do not match', () => {
      runProgramExpecting(sandbox, ['--block-forwarded', 'docker0', lockedUpstream, 'alice']);

      expect(containerCurl(lockedUpstream)).toMatchObject({ ok: true });
    });

    if (usesIptables(backend)) {
      it('jumps first from forward and an existing docker-user chain', () => {
        const foreign = sandbox.sh([
          'iptables -N DOCKER-USER',
          'iptables -A DOCKER-USER -s 203.0.113.7 -j RETURN',
          'iptables -A FORWARD -j DOCKER-USER',
          'iptables -I FORWARD 1 -j ACCEPT',
        ].join(' && '));
        expect(foreign.status).toBe(0);

        const args = ['--block-forwarded', IFACE_PATTERN, lockedUpstream, 'alice'];
        const result = runProgram(sandbox, args);
        expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 0 });

        const forward = iptablesRules(sandbox, 4, 'FORWARD');
        const dockerUser = iptablesRules(sandbox, 4, 'DOCKER-USER');
        expect(forward[1]).toBe('-A FORWARD -j IPLOCKDOWN-FWD');
        expect(forward).toContain('-A FORWARD -j ACCEPT');
        expect(forward).toContain('-A FORWARD -j DOCKER-USER');
        expect(dockerUser[1]).toBe('-A DOCKER-USER -j IPLOCKDOWN-FWD');
        expect(dockerUser).toContain('-A DOCKER-USER -s 203.0.113.7/32 -j RETURN');
        expect(containerCurl(lockedUpstream)).toMatchObject({ ok: false, exitCode: 7 });
      });

      it('keeps a foreign forward policy', () => {
        // Docker sets the FORWARD policy to DROP; declaring FORWARD in the restore input would reset it.
        expect(sandbox.run(['iptables', '-P', 'FORWARD', 'DROP']).status).toBe(0);
        expect(sandbox.run(['iptables', '-A', 'FORWARD', '-j', 'ACCEPT']).status).toBe(0);

        runProgramExpecting(sandbox, ['--block-forwarded', IFACE_PATTERN, lockedUpstream, 'alice']);

        const forward = iptablesRules(sandbox, 4, 'FORWARD');
        expect(forward[0]).toBe('-P FORWARD DROP');
        expect(sandbox.run(['iptables', '-P', 'FORWARD', 'ACCEPT']).status).toBe(0);
      });
    } else {
      it('hooks forward in its own table', () => {
        runProgramExpecting(sandbox, ['--block-forwarded', IFACE_PATTERN, lockedUpstream, 'alice']);

        const table = nftTable(sandbox);
        expect(table).toMatch(/hook forward/);
        expect(table).toMatch(/iifname "veth-ipld\*"/);
      });
    }
  });
});
