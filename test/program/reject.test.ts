import {
  allowed, createProgramSandbox, curlAs, FAST_FAIL_MS, nftTable, ourRulesText, rejected, resetLockdown,
  runProgram, runProgramExpecting, SLOW_CONNECT_TIMEOUT_SEC, usesIptables,
} from '../helpers/lockdown';
import { BACKENDS, describeKernel, LOCKED_V4, Sandbox } from '../helpers/sandbox';

jest.setTimeout(180_000);

const UDP_PORT = 9999;
const UDP_WAIT_SEC = 10;
const CLOSED_PORT = 9;

describeKernel('rejecting', () => {
  describe.each(BACKENDS)('%s', (backend) => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox(backend);
      sandbox.startUdpEchoServer(LOCKED_V4, UDP_PORT);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    beforeEach(() => {
      resetLockdown(sandbox);
    });

    it('resets a blocked tcp connection fast', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      const result = curlAs(sandbox, 'bob', LOCKED_V4, { connectTimeoutSec: SLOW_CONNECT_TIMEOUT_SEC });

      expect(result).toMatchObject(rejected('bob', LOCKED_V4));
      expect(result.durationMs).toBeLessThan(FAST_FAIL_MS);
    });

    it('answers blocked udp with an icmp error', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      const alice = sandbox.udpProbe('alice', LOCKED_V4, UDP_PORT, { waitSec: UDP_WAIT_SEC });
      const bob = sandbox.udpProbe('bob', LOCKED_V4, UDP_PORT, { waitSec: UDP_WAIT_SEC });

      expect(alice).toMatchObject({ outcome: 'reply' });
      // A DROP would leave bob waiting for the whole UDP_WAIT_SEC.
      expect(bob).toMatchObject({ outcome: 'icmp-error' });
      expect(bob.durationMs).toBeLessThan(FAST_FAIL_MS);
    });

    it('refuses fast when the client is bound to the locked address', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      // The reject's reset goes to the locked address itself. It has no socket, so
      // it must pass our rules, or the client would wait for the whole timeout.
      const result = curlAs(sandbox, 'bob', LOCKED_V4, { source: LOCKED_V4, connectTimeoutSec: SLOW_CONNECT_TIMEOUT_SEC });

      expect(result).toMatchObject(rejected('bob', LOCKED_V4));
      expect(result.durationMs).toBeLessThan(FAST_FAIL_MS);
    });

    it('passes kernel resets to a locked address', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      // Nothing listens on this port, so the kernel replies to the SYN with a reset from
      // its own TCP control socket (a socket with no file and no owner) to the locked
      // address. Dropping it would leave the client waiting for the whole timeout.
      const result = sandbox.curl('alice', `http://127.0.0.1:${CLOSED_PORT}/`, {
        source: LOCKED_V4,
        connectTimeoutSec: SLOW_CONNECT_TIMEOUT_SEC,
      });

      expect(result).toMatchObject({ ok: false, exitCode: 7 });
      expect(result.durationMs).toBeLessThan(FAST_FAIL_MS);
    });

    it('uses no drop rule', () => {
      runProgramExpecting(sandbox, ['--log-blocked', `${LOCKED_V4},::1`, 'alice']);

      const rules = ourRulesText(sandbox);

      expect(rules).toMatch(/reject/i);
      expect(rules).not.toMatch(/\bDROP\b|\bdrop\b/);
    });

    it('logs one summary line on stderr', () => {
      const result = runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);

      // A clean run has nothing to warn about, so its summary is all it prints.
      const lines = result.stderr.split('\n').filter((line) => line.length > 0);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^ip-lockdown: [a-z]+: \S/);
    });

    it('sends the summary to syslog', () => {
      // A stand-in logger records its arguments: the machine may have no syslog daemon.
      const logger = sandbox.sh('command -v logger').stdout.trim();
      expect(logger).not.toBe('');
      expect(sandbox.run(['mv', logger, `${logger}.real`]).status).toBe(0);
      sandbox.writeFile(logger, '#!/bin/sh\nprintf \'%s|\' "$@" >> /tmp/logger.log\necho >> /tmp/logger.log\n', 0o755);
      sandbox.sh('rm -f /tmp/logger.log');
      try {
        runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      } finally {
        sandbox.run(['mv', `${logger}.real`, logger]);
      }

      const calls = sandbox.readFile('/tmp/logger.log').split('\n').filter((line) => line.length > 0);
      expect(calls).toHaveLength(1);
      expect(calls[0]).toContain('-t|ip-lockdown|');
    });

    it('adds a rate-limited log rule with --log-blocked', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      const plain = ourRulesText(sandbox);
      resetLockdown(sandbox);

      runProgramExpecting(sandbox, ['--log-blocked', LOCKED_V4, 'alice']);
      const logged = ourRulesText(sandbox);

      if (usesIptables(backend)) {
        expect(plain).not.toMatch(/-j LOG/);
        const logRules = logged.split('\n').filter((rule) => rule.includes('-j LOG'));
        expect(logRules.length).toBeGreaterThanOrEqual(1);
        for (const rule of logRules) {
          expect(rule).toMatch(/-m limit --limit \d+\/(sec|min|hour|day)/);
        }
        // The log rule sits before the rejects of its chain, or it would never see a packet.
        const lines = logged.split('\n');
        const logAt = lines.findIndex((rule) => rule.includes('-j LOG'));
        const chain = lines[logAt].split(' ')[1];
        const rejectAt = lines.findIndex((rule) => rule.startsWith(`-A ${chain} `) && rule.includes('-j REJECT'));
        expect(logAt).toBeLessThan(rejectAt);
      } else {
        expect(plain).not.toMatch(/\blog\b/);
        expect(logged).toMatch(/limit rate \d+\/(second|minute|hour|day)[^\n]*\blog\b/);
      }
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
    });

    it('locks the metadata addresses in the rule text', () => {
      // Rule text only: no test connects to these addresses.
      runProgramExpecting(sandbox, ['169.254.169.254,fd00:ec2::254', 'root']);

      if (usesIptables(backend)) {
        const v4 = sandbox.run(['iptables', '-S', 'IPLOCKDOWN']).stdout;
        const v6 = sandbox.run(['ip6tables', '-S', 'IPLOCKDOWN']).stdout;
        expect(v4).toMatch(/-d 169\.254\.169\.254\/32 -j IPLOCKDOWN-\d+/);
        expect(v6).toMatch(/-d fd00:ec2::254\/128 -j IPLOCKDOWN-\d+/);
        const lockRules = ourRulesText(sandbox);
        expect(lockRules).toMatch(/--uid-owner 0 -j RETURN/);
      } else {
        const table = nftTable(sandbox);
        expect(table).toContain('169.254.169.254');
        expect(table).toContain('fd00:ec2::254');
        expect(table).toMatch(/skuid (0|root)\b/);
      }
      expect(runProgram(sandbox, ['--status']).status).toBe(0);
    });
  });
});
