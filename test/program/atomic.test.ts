import {
  allowed, createProgramSandbox, curlAs, describeRun, HTTP_PORT, rejected, resetLockdown,
  rulesetSnapshot, runProgram, runProgramExpecting, usesIptables,
} from '../helpers/lockdown';
import { BACKENDS, CLIENT_V4, describeKernel, LOCKED_V4, LOCKED_V4_B, PROGRAM_PATH, Sandbox } from '../helpers/sandbox';

jest.setTimeout(240_000);

/** Parses `key=value` words from a script's output line. */
function parseCounters(text: string): Record<string, number> {
  const counters: Record<string, number> = {};
  for (const match of text.matchAll(/(\w+)=(\d+)/g)) {
    counters[match[1]] = Number(match[2]);
  }
  return counters;
}

describeKernel('atomic and idempotent apply', () => {
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

    it('gives the same ruleset after ten runs', () => {
      sandbox.writeFile('/root/web.conf', `address ${LOCKED_V4}\naddress ::1\nuser alice\ngroup ops\nlog-blocked\n`);
      runProgramExpecting(sandbox, [LOCKED_V4_B, 'bob']);
      runProgramExpecting(sandbox, ['--config', '/root/web.conf', '--name', 'web']);
      const once = rulesetSnapshot(sandbox);

      // Nine more runs of the same command make ten.
      const script = [
        'i=0',
        'while [ $i -lt 9 ]; do',
        `  /bin/sh ${PROGRAM_PATH} --config /root/web.conf --name web || exit 10`,
        '  i=$((i + 1))',
        'done',
      ].join('\n');
      const repeated = sandbox.sh(script, { timeoutMs: 180_000 });
      expect({ status: repeated.status, stderr: repeated.stderr.slice(-2000) }).toMatchObject({ status: 0 });

      expect(rulesetSnapshot(sandbox)).toBe(once);
    });

    it('prints one transaction per family on --dry-run', () => {
      const args = ['--dry-run', `${LOCKED_V4},::1`, 'alice'];
      const result = runProgram(sandbox, args);
      expect({ status: result.status, run: describeRun(args, result) }).toMatchObject({ status: 0 });
      const lines = result.stdout.split('\n').map((line) => line.trim());

      if (usesIptables(backend)) {
        const tableLines = lines.filter((line) => line.startsWith('*'));
        const commits = lines.filter((line) => line === 'COMMIT');
        // One filter transaction for IPv4 and one for IPv6, nothing committed in between.
        expect(tableLines).toEqual(['*filter', '*filter']);
        expect(commits).toHaveLength(2);
        const declared = lines.filter((line) => line.startsWith(':')).map((line) => line.slice(1).split(/\s/)[0]);
        expect(declared.length).toBeGreaterThan(0);
        for (const chain of declared) {
          expect(chain).toMatch(/^IPLOCKDOWN/);
        }
        // A chain declaration in --noflush input flushes that chain (and sets a built-in chain's
        // policy), and -F/-X on a chain that is not ours would remove foreign rules.
        const foreignFlushes = lines.filter((line) => /^-(F|X|Z)\b/.test(line) && !/^-(F|X|Z)\s+IPLOCKDOWN/.test(line));
        expect(foreignFlushes).toEqual([]);
      } else {
        const text = result.stdout;
        expect(text.match(/delete table inet ip_lockdown/g) ?? []).toHaveLength(1);
        // An add before the delete keeps the delete from failing on a first run; the
        // full definition follows it, all in one file.
        const deleteAt = text.indexOf('delete table inet ip_lockdown');
        const firstMention = text.search(/(add )?table inet ip_lockdown/);
        expect(firstMention).toBeLessThan(deleteAt);
        expect(text.slice(deleteAt)).toMatch(/table inet ip_lockdown\s*\{[^}]*chain/);
        expect(text).not.toMatch(/flush ruleset/);
      }
    });

    it('never lets a blocked user through while locks change', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));

      // One script, so the loop and the program share the root's mount and run at once.
      const curl = `${sandbox.userShellPrefix('bob')} curl -s -o /dev/null --connect-timeout 2 --max-time 3 --interface ${CLIENT_V4} http://${LOCKED_V4}:${HTTP_PORT}/`;
      const script = [
        'rm -f /tmp/stop /tmp/loop.out',
        '(',
        '  attempts=0 successes=0',
        '  while [ ! -e /tmp/stop ] && [ $attempts -lt 3000 ]; do',
        `    if ${curl}; then successes=$((successes + 1)); fi`,
        '    attempts=$((attempts + 1))',
        '  done',
        '  echo "attempts=$attempts successes=$successes" > /tmp/loop.out',
        ') &',
        'loop=$!',
        'runs=0 failures=0',
        'while [ $runs -lt 12 ]; do',
        `  /bin/sh ${PROGRAM_PATH} ${LOCKED_V4} alice carol >/dev/null 2>&1 || failures=$((failures + 1))`,
        `  /bin/sh ${PROGRAM_PATH} ${LOCKED_V4} alice dave >/dev/null 2>&1 || failures=$((failures + 1))`,
        '  runs=$((runs + 2))',
        'done',
        'touch /tmp/stop',
        'wait $loop',
        'echo "runs=$runs failures=$failures $(cat /tmp/loop.out)"',
      ].join('\n');

      const result = sandbox.sh(script, { timeoutMs: 180_000 });

      expect(result.status).toBe(0);
      const counters = parseCounters(result.stdout);
      expect(counters).toMatchObject({ runs: 12, failures: 0, successes: 0 });
      expect(counters.attempts).toBeGreaterThanOrEqual(5);
      expect(curlAs(sandbox, 'dave', LOCKED_V4)).toMatchObject(allowed('dave', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('waits for a run holding the program lock', () => {
      const holdSeconds = 2;
      const script = [
        'rm -f /tmp/held',
        `flock /run/ip-lockdown.lock sh -c 'touch /tmp/held; sleep ${holdSeconds}' & holder=$!`,
        'tries=0',
        'while [ ! -e /tmp/held ] && [ $tries -lt 100 ]; do sleep 0.05; tries=$((tries + 1)); done',
        '[ -e /tmp/held ] || { echo "lock holder did not start" >&2; exit 20; }',
        'start=$(date +%s%N)',
        `/bin/sh ${PROGRAM_PATH} ${LOCKED_V4} alice; status=$?`,
        'end=$(date +%s%N)',
        'wait $holder',
        'echo "status=$status elapsed_ms=$(( (end - start) / 1000000 ))"',
      ].join('\n');

      const result = sandbox.sh(script, { timeoutMs: 60_000 });

      const counters = parseCounters(result.stdout);
      expect({ counters, stderr: result.stderr }).toMatchObject({ counters: { status: 0 } });
      expect(counters.elapsed_ms).toBeGreaterThanOrEqual((holdSeconds - 0.5) * 1000);
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });

    it('ends two concurrent runs in a correct ruleset', () => {
      runProgramExpecting(sandbox, [LOCKED_V4, 'alice']);
      runProgramExpecting(sandbox, [LOCKED_V4_B, 'bob']);
      const sequential = rulesetSnapshot(sandbox);
      resetLockdown(sandbox);

      const script = [
        `/bin/sh ${PROGRAM_PATH} ${LOCKED_V4} alice > /tmp/first.out 2>&1 & first=$!`,
        `/bin/sh ${PROGRAM_PATH} ${LOCKED_V4_B} bob > /tmp/second.out 2>&1 & second=$!`,
        'wait $first; first_status=$?',
        'wait $second; second_status=$?',
        'echo "first=$first_status second=$second_status"',
        'cat /tmp/first.out /tmp/second.out >&2',
      ].join('\n');
      const result = sandbox.sh(script, { timeoutMs: 120_000 });

      expect({ counters: parseCounters(result.stdout), stderr: result.stderr }).toMatchObject({ counters: { first: 0, second: 0 } });
      expect(rulesetSnapshot(sandbox)).toBe(sequential);
      expect(runProgram(sandbox, ['--status']).status).toBe(0);
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4_B)).toMatchObject(allowed('bob', LOCKED_V4_B));
      expect(curlAs(sandbox, 'alice', LOCKED_V4_B)).toMatchObject(rejected('alice', LOCKED_V4_B));
    });
  });

  describe('iptables-legacy xtables lock', () => {
    let sandbox: Sandbox;

    beforeAll(() => {
      sandbox = createProgramSandbox('iptables-legacy');
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    // NOTE: iptables 1.8.9 (Debian 12) waits for the xtables lock even without -w,
    // so this shows that a run waits and then succeeds, not that the program passes -w.
    it('waits for another holder of the xtables lock', () => {
      const holdSeconds = 3;
      const script = [
        'rm -f /tmp/held',
        `flock /run/xtables.lock sh -c 'touch /tmp/held; sleep ${holdSeconds}' & holder=$!`,
        'tries=0',
        'while [ ! -e /tmp/held ] && [ $tries -lt 100 ]; do sleep 0.05; tries=$((tries + 1)); done',
        '[ -e /tmp/held ] || { echo "lock holder did not start" >&2; exit 20; }',
        'start=$(date +%s%N)',
        `/bin/sh ${PROGRAM_PATH} ${LOCKED_V4} alice; status=$?`,
        'end=$(date +%s%N)',
        'wait $holder',
        'echo "status=$status elapsed_ms=$(( (end - start) / 1000000 ))"',
      ].join('\n');

      const result = sandbox.sh(script, { timeoutMs: 60_000 });

      const counters = parseCounters(result.stdout);
      expect({ counters, stderr: result.stderr }).toMatchObject({ counters: { status: 0 } });
      // The lock was held for the whole hold time when the run started, so a run that waited took most of it.
      expect(counters.elapsed_ms).toBeGreaterThanOrEqual((holdSeconds - 1) * 1000);
      expect(curlAs(sandbox, 'alice', LOCKED_V4)).toMatchObject(allowed('alice', LOCKED_V4));
      expect(curlAs(sandbox, 'bob', LOCKED_V4)).toMatchObject(rejected('bob', LOCKED_V4));
    });
  });
});
