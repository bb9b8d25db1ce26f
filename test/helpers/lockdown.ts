/**
 * Helpers for tests that run the ip-lockdown program inside a {@link Sandbox}.
 */
import { Backend, CurlOptions, CurlResult, LOCKED_V4, LOCKED_V4_B, PROGRAM_PATH, RunOptions, RunResult, Sandbox, shellQuote } from './sandbox';

/** Directory of saved locks inside the root. */
export const LOCKS_DIR = '/etc/ip-lockdown/locks.d';

/** Port of the HTTP servers the program tests start. */
export const HTTP_PORT = 8080;

/**
 * Bound for "rejected fast": a rejected connection must fail in well under
 * this many milliseconds, while curl's connect timeout is {@link SLOW_CONNECT_TIMEOUT_SEC}.
 */
export const FAST_FAIL_MS = 5000;

/** curl connect timeout (seconds) used when a test measures how fast a rejection is. */
export const SLOW_CONNECT_TIMEOUT_SEC = 20;

/** Runs the installed program under `/bin/sh` (dash on Debian), as the instances do. */
export function runProgram(sandbox: Sandbox, args: string[], options: RunOptions = {}): RunResult {
  return sandbox.run(['/bin/sh', PROGRAM_PATH, ...args], options);
}

/** Formats a program run for a failure message. */
export function describeRun(args: string[], result: Pick<RunResult, 'status' | 'stdout' | 'stderr'>): string {
  return `ip-lockdown ${args.join(' ')} -> status ${result.status}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

/** Runs the program and throws with its output unless it exits with `expectedStatus` (default 0). */
export function runProgramExpecting(sandbox: Sandbox, args: string[], expectedStatus = 0, options: RunOptions = {}): RunResult {
  const result = runProgram(sandbox, args, options);
  if (result.status !== expectedStatus) {
    throw new Error(`expected exit ${expectedStatus}: ${describeRun(args, result)}`);
  }
  return result;
}

/** Reports whether the program in `backend`'s root is expected to use iptables (else nft). */
export function usesIptables(backend: Backend): boolean {
  return backend !== 'nft-only';
}

// `nft flush ruleset` also removes the tables of iptables-nft; legacy tables
// need their own tools, and their policies survive a flush.
function flushScript(backend: Backend): string {
  if (backend !== 'iptables-legacy') {
    return 'nft flush ruleset';
  }
  const legacy = ['iptables', 'ip6tables'].map((tool) =>
    `${tool} -F && ${tool} -X && ${tool} -P INPUT ACCEPT && ${tool} -P FORWARD ACCEPT && ${tool} -P OUTPUT ACCEPT`);
  return [...legacy, 'nft flush ruleset'].join(' && ');
}

/**
 * Removes every firewall rule in the namespace (ours and foreign) and the
 * program's saved locks and state, so each test starts from a fresh instance.
 */
export function resetLockdown(sandbox: Sandbox): void {
  const result = sandbox.sh(`${flushScript(sandbox.backend)} && rm -rf /etc/ip-lockdown /run/ip-lockdown /run/ip-lockdown.lock`);
  if (result.status !== 0) {
    throw new Error(`resetting the sandbox failed: ${result.stderr}`);
  }
}

/** Removes every firewall rule in the namespace but keeps the saved locks, as a reboot does. */
export function flushFirewall(sandbox: Sandbox): void {
  const result = sandbox.sh(flushScript(sandbox.backend));
  if (result.status !== 0) {
    throw new Error(`flushing the firewall failed: ${result.stderr}`);
  }
}

function normalizeRuleset(text: string): string {
  return text
    .split('\n')
    .filter((line) => !line.startsWith('#'))
    .map((line) => line.replace(/\[\d+:\d+\]/g, '[0:0]').replace(/counter packets \d+ bytes \d+/g, 'counter'))
    .join('\n');
}

function rulesetScript(backend: Backend): string {
  return usesIptables(backend)
    ? 'echo "== iptables-save"; iptables-save && echo "== ip6tables-save" && ip6tables-save && echo "== nft" && nft list ruleset'
    : 'echo "== nft"; nft list ruleset';
}

/**
 * Returns the namespace's whole ruleset as the backend's tools print it
 * (`iptables-save`/`ip6tables-save` where present, and `nft list ruleset`),
 * without timestamps or packet counters, for before/after comparisons.
 */
export function rulesetSnapshot(sandbox: Sandbox): string {
  const result = sandbox.sh(rulesetScript(sandbox.backend));
  if (result.status !== 0) {
    throw new Error(`reading the ruleset failed: ${result.stderr}`);
  }
  return normalizeRuleset(result.stdout);
}

function stateScript(backend: Backend): string {
  return `${rulesetScript(backend)} && echo "== locks" && for file in ${LOCKS_DIR}/*; do [ -e "$file" ] || continue; echo "-- $file"; cat "$file"; done`;
}

/**
 * Returns {@link rulesetSnapshot} followed by the saved lock files and their
 * content, in one sandbox command, to check that a run changed nothing.
 */
export function stateSnapshot(sandbox: Sandbox): string {
  const result = sandbox.sh(stateScript(sandbox.backend));
  if (result.status !== 0) {
    throw new Error(`reading the ruleset and saved locks failed: ${result.stderr}`);
  }
  return normalizeRuleset(result.stdout);
}

/** One program run of {@link runProgramBatch}. */
export interface BatchRun {
  readonly args: string[];
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** {@link stateSnapshot} taken right after the run. */
  readonly state: string;
}

/**
 * Runs the program once per argument list, one after another in a single
 * sandbox command, and takes a {@link stateSnapshot} after each run. Much
 * faster than separate commands for long tables of cases. Compare states only
 * with states from a batch: the text differs slightly from {@link stateSnapshot}.
 */
export function runProgramBatch(sandbox: Sandbox, argLists: string[][]): BatchRun[] {
  const marker = `@@batch-${process.pid}`;
  const script = argLists.map((args, index) => [
    `/bin/sh ${PROGRAM_PATH} ${args.map(shellQuote).join(' ')} >/tmp/batch.out 2>/tmp/batch.err`,
    'status=$?',
    `echo "${marker} ${index} status $status"`,
    // The bare echo ends a last line that has no newline, so no marker is glued to it.
    `echo "${marker} ${index} stdout"; cat /tmp/batch.out; echo`,
    `echo "${marker} ${index} stderr"; cat /tmp/batch.err; echo`,
    `echo "${marker} ${index} state"; ${stateScript(sandbox.backend)}`,
  ].join('\n')).join('\n') + `\necho "${marker} end end"`;
  const result = sandbox.sh(script, { timeoutMs: 300_000 });
  if (result.status !== 0) {
    throw new Error(`batch of program runs failed: ${result.stderr}`);
  }
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of result.stdout.split('\n')) {
    if (line.startsWith(`${marker} `)) {
      const [, index, kind, value] = line.split(' ');
      current = [];
      sections.set(`${index} ${kind}`, kind === 'status' ? [value] : current);
      continue;
    }
    current?.push(line);
  }
  return argLists.map((args, index) => {
    const text = (kind: string) => (sections.get(`${index} ${kind}`) ?? []).join('\n');
    const statusText = sections.get(`${index} status`)?.[0];
    return {
      args,
      status: statusText === undefined ? null : Number(statusText),
      stdout: text('stdout'),
      stderr: text('stderr'),
      state: normalizeRuleset(text('state')),
    };
  });
}

/** Returns `iptables -S` (or `ip6tables -S` for family 6) of one chain, or of all chains when `chain` is omitted. */
export function iptablesRules(sandbox: Sandbox, family: 4 | 6 = 4, chain?: string): string[] {
  const tool = family === 4 ? 'iptables' : 'ip6tables';
  const result = sandbox.run(chain === undefined ? [tool, '-S'] : [tool, '-S', chain]);
  if (result.status !== 0) {
    throw new Error(`${tool} -S ${chain ?? ''} failed: ${result.stderr}`);
  }
  return result.stdout.split('\n').filter((line) => line.length > 0);
}

/** Returns the program's nft table `inet ip_lockdown`, or '' when it does not exist. */
export function nftTable(sandbox: Sandbox): string {
  const result = sandbox.run(['nft', 'list', 'table', 'inet', 'ip_lockdown']);
  return result.status === 0 ? result.stdout : '';
}

/** Returns the rule text of our rules for the backend: every `iptables -S`/`ip6tables -S` line, or the nft table. */
export function ourRulesText(sandbox: Sandbox): string {
  if (usesIptables(sandbox.backend)) {
    return [...iptablesRules(sandbox, 4), ...iptablesRules(sandbox, 6)].join('\n');
  }
  return nftTable(sandbox);
}

/** Lists the saved lock files (names only, sorted). */
export function savedLocks(sandbox: Sandbox): string[] {
  const result = sandbox.sh(`ls -1 ${LOCKS_DIR} 2>/dev/null || true`);
  return result.stdout.split('\n').filter((line) => line.length > 0).sort();
}

/** Builds the URL of the HTTP test server on `address`. */
export function urlOf(address: string, port: number = HTTP_PORT): string {
  return address.includes(':') ? `http://[${address}]:${port}/` : `http://${address}:${port}/`;
}

/** A curl result labelled with the user who ran it and the URL, so a failed expectation names the case. */
export interface LabelledCurl extends CurlResult {
  readonly user: string;
  readonly url: string;
}

/** Runs {@link Sandbox.curl} and labels the result. */
export function curlAs(sandbox: Sandbox, user: string | number, address: string, options: CurlOptions = {}): LabelledCurl {
  const url = urlOf(address);
  return { user: `${user}`, url, ...sandbox.curl(user, url, options) };
}

/** Expected shape of a connection the lock allowed. */
export function allowed(user: string | number, address: string): Partial<LabelledCurl> {
  return { user: `${user}`, url: urlOf(address), ok: true, httpCode: 200 };
}

/**
 * Expected shape of a connection the lock rejected: curl exit 7 (refused or
 * reset), not 28 (a timeout, which a DROP would cause).
 */
export function rejected(user: string | number, address: string): Partial<LabelledCurl> {
  return { user: `${user}`, url: urlOf(address), ok: false, exitCode: 7, httpCode: 0 };
}

/** Unlocked control address with an HTTP server, to show a lock is specific to its addresses. */
export const UNLOCKED_V4 = '127.88.0.1';

/**
 * Creates a sandbox with the program installed, group `ops`, users alice, bob,
 * carol and dave (dave has `ops` as a supplementary group), and HTTP servers on
 * {@link LOCKED_V4}, {@link LOCKED_V4_B}, {@link UNLOCKED_V4} and `::1`.
 */
export function createProgramSandbox(backend: Backend): Sandbox {
  const sandbox = Sandbox.create({ backend });
  try {
    sandbox.addGroup('ops');
    for (const user of ['alice', 'bob', 'carol']) {
      sandbox.addUser(user);
    }
    sandbox.addUser('dave', { groups: ['ops'] });
    sandbox.installProgram();
    for (const address of [LOCKED_V4, LOCKED_V4_B, UNLOCKED_V4, '::1']) {
      sandbox.startHttpServer(address, HTTP_PORT);
    }
  } catch (error) {
    sandbox.destroy();
    throw error;
  }
  return sandbox;
}

// Test double for iptables-restore and ip6tables-restore. A transaction that
// allows an owner (so not a reject-everyone fallback) fails. Anything else goes
// to the real tool, the xtables multi-call binary that "$0.real" links to.
const FAILING_RESTORE = `#!/bin/sh
for last do :; done
if [ -n "\${last:-}" ] && [ -f "$last" ]; then
  input=$last
else
  input=$(mktemp)
  cat > "$input"
fi
if grep -q -e '--uid-owner' -e '--gid-owner' "$input"; then
  echo "$(basename "$0"): simulated failure" >&2
  exit 1
fi
exec "$(readlink -f "$0.real")" "$(basename "$0")" "$@" < "$input"
`;

// Test double for nft: the same rule for \`nft -f\` input that matches skuid/skgid.
const FAILING_NFT = `#!/bin/sh
file= previous=
for arg do
  case $previous in -f|--file) file=$arg ;; esac
  previous=$arg
done
if [ -n "$file" ]; then
  case $file in
    -|/dev/stdin) input=$(mktemp); cat > "$input" ;;
    *) input=$file ;;
  esac
  if grep -q -e skuid -e skgid "$input"; then
    echo "nft: simulated failure" >&2
    exit 1
  fi
  exec /usr/sbin/nft.real "$@" < "$input"
fi
exec /usr/sbin/nft.real "$@"
`;

/** Tools that {@link installFailingApply} replaces in the root for the backend. */
function applyTools(sandbox: Sandbox): string[] {
  return usesIptables(sandbox.backend)
    ? ['/usr/sbin/iptables-restore', '/usr/sbin/ip6tables-restore']
    : ['/usr/sbin/nft'];
}

/**
 * Moves `tool` (an absolute path in the root) to `tool.real` and writes
 * `script` in its place. {@link restoreTools} undoes it.
 */
export function replaceTool(sandbox: Sandbox, tool: string, script: string): void {
  const moved = sandbox.run(['mv', tool, `${tool}.real`]);
  if (moved.status !== 0) {
    throw new Error(`moving ${tool} aside failed: ${moved.stderr}`);
  }
  sandbox.writeFile(tool, script, 0o755);
}

/** Puts back every tool that {@link replaceTool} moved aside; a tool that was not replaced is left alone. */
export function restoreTools(sandbox: Sandbox, tools: string[]): void {
  for (const tool of tools) {
    const restored = sandbox.run(['/bin/sh', '-c', 'if [ -e "$1.real" ] || [ -L "$1.real" ]; then mv -f "$1.real" "$1"; fi', 'restore', tool]);
    if (restored.status !== 0) {
      throw new Error(`restoring ${tool} failed: ${restored.stderr}`);
    }
  }
}

/**
 * Replaces the backend's apply tool in the root (`iptables-restore` and
 * `ip6tables-restore`, or `nft`) with a wrapper that fails every transaction
 * allowing a user or group and passes anything else to the real tool.
 * {@link removeFailingApply} puts the real tools back.
 */
export function installFailingApply(sandbox: Sandbox): void {
  const wrapper = usesIptables(sandbox.backend) ? FAILING_RESTORE : FAILING_NFT;
  for (const tool of applyTools(sandbox)) {
    replaceTool(sandbox, tool, wrapper);
  }
}

/** Undoes {@link installFailingApply}. */
export function removeFailingApply(sandbox: Sandbox): void {
  restoreTools(sandbox, applyTools(sandbox));
}

// Test double for iptables and ip6tables in a kernel without the owner match:
// any command that uses it fails the way iptables reports a missing match.
const NO_OWNER_MATCH = `#!/bin/sh
for arg do
  if [ "$arg" = owner ]; then
    echo "$(basename "$0") v1.8.9: Couldn't load match 'owner':No such file or directory" >&2
    exit 2
  fi
done
exec "$(readlink -f "$0.real")" "$(basename "$0")" "$@"
`;

/** Tools that {@link installMissingOwnerMatch} replaces. */
export const OWNER_MATCH_TOOLS = ['/usr/sbin/iptables', '/usr/sbin/ip6tables'];

/**
 * Makes the root behave like a kernel without the owner match (iptables
 * backends only): `iptables`/`ip6tables` commands that use `-m owner` fail,
 * and so does every restore that allows an owner ({@link installFailingApply}).
 * Undo with {@link restoreTools} on {@link OWNER_MATCH_TOOLS} and {@link removeFailingApply}.
 */
export function installMissingOwnerMatch(sandbox: Sandbox): void {
  installFailingApply(sandbox);
  for (const tool of OWNER_MATCH_TOOLS) {
    replaceTool(sandbox, tool, NO_OWNER_MATCH);
  }
}
