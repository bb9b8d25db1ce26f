/**
 * Real-kernel test sandbox: a named network namespace plus a throwaway root
 * (an overlay of `/` with its writable layer in a fresh temp dir), so tests can
 * change firewall rules, create users and write files without touching the host.
 *
 * Every command runs in its own `unshare --mount` namespace that mounts the
 * overlay, proc, sysfs and /dev, then `chroot`s into it, so no mount outlives a
 * command. Processes that must share a mount instance (flock tests, loops
 * running while rules change) therefore belong in one `sh()` script.
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** Firewall arrangement of a sandbox root. */
export type Backend = 'iptables-nft' | 'iptables-legacy' | 'nft-only';

/** All backends, for `describe.each`. */
export const BACKENDS: Backend[] = ['iptables-nft', 'iptables-legacy', 'nft-only'];

/** Extra IPv4 loopback address that tests lock; covered by lo's 127.0.0.0/8 route. */
export const LOCKED_V4 = '127.77.0.1';

/** Second IPv4 loopback address that tests may lock alongside {@link LOCKED_V4}. */
export const LOCKED_V4_B = '127.77.0.2';

/** IPv4 address clients bind to, so the locked address is never the source of a test connection. */
export const CLIENT_V4 = '127.0.0.1';

/**
 * IPv6 address (documentation range, on the namespace's lo) that clients bind to
 * when they connect to `::1`. A client bound to `::1` would make the server's
 * replies go to the locked address and be rejected for the server's owner.
 */
export const CLIENT_V6 = '2001:db8:77::2';

/** Search path used for every command inside the root. */
export const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Path of the program under test: `assets/ip-lockdown.sh` in the repository, or
 * the file named by IP_LOCKDOWN_PROGRAM (to check that the tests catch a changed copy).
 */
export const PROGRAM_SOURCE = process.env.IP_LOCKDOWN_PROGRAM ?? path.resolve(__dirname, '..', '..', 'assets', 'ip-lockdown.sh');

/** Path the program is installed to inside the root, as on an instance. */
export const PROGRAM_PATH = '/usr/local/sbin/ip-lockdown';

/** Result of a command run in the sandbox. */
export interface RunResult {
  /** Exit status, or null when a signal ended the command. */
  readonly status: number | null;
  /** Signal that ended the command, if any (a timeout ends it with SIGTERM or SIGKILL). */
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall-clock run time of the whole command, including namespace and mount setup. */
  readonly durationMs: number;
}

/** Options of {@link Sandbox.run} and {@link Sandbox.sh}. */
export interface RunOptions {
  /** User name or numeric uid to run as (default root). A numeric uid runs with no supplementary groups. */
  readonly user?: string | number;
  /** Text written to the command's standard input. */
  readonly input?: string;
  /** Time limit in milliseconds (default 60000); the whole process group is killed after it. */
  readonly timeoutMs?: number;
  /** Extra environment variables. Apart from these, the command gets only PATH, HOME, LANG and LC_ALL. */
  readonly env?: Record<string, string>;
}

/** Options of {@link Sandbox.create}. */
export interface SandboxOptions {
  /** Firewall tools present in the root. */
  readonly backend: Backend;
}

/** Result of {@link Sandbox.curl}. */
export interface CurlResult {
  /** True when curl exited 0 and the server returned status 200. */
  readonly ok: boolean;
  /** curl's exit status (7: connection refused or reset, 28: timed out). */
  readonly exitCode: number | null;
  /** HTTP status returned by the server, or 0 when there was no response. */
  readonly httpCode: number;
  readonly durationMs: number;
  readonly stderr: string;
}

/** Options of {@link Sandbox.curl}. */
export interface CurlOptions {
  /** Source address to bind (default {@link CLIENT_V4} for IPv4 URLs, {@link CLIENT_V6} for IPv6 URLs). */
  readonly source?: string;
  /** curl's `--connect-timeout` in seconds (default 8). */
  readonly connectTimeoutSec?: number;
}

/** Outcome of a UDP datagram sent by {@link Sandbox.udpProbe}. */
export type UdpOutcome = 'reply' | 'icmp-error' | 'timeout' | 'error';

/** Result of {@link Sandbox.udpProbe}. */
export interface UdpProbeResult {
  /**
   * `reply`: the echo server sent the datagram back. `icmp-error`: the socket received an ICMP
   * error (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH or EACCES), which a REJECT
   * produces and a DROP does not. `timeout`: nothing arrived within the wait.
   * `error`: any other failure, see `detail`.
   */
  readonly outcome: UdpOutcome;
  /** errno name of the send, if it failed (EPERM when a netfilter rule dropped the datagram). */
  readonly sendErrno: string;
  /** errno name of the receive, if it failed. */
  readonly receiveErrno: string;
  readonly detail: string;
  readonly durationMs: number;
}

/** Namespaces and addresses of a forwarding setup made by {@link Sandbox.addForwardingTopology}. */
export interface ForwardingTopology {
  /** Namespace playing a container; its default route goes through the sandbox namespace. */
  readonly containerNs: string;
  /** Namespace behind the sandbox namespace that hosts the servers. */
  readonly upstreamNs: string;
  /** Sandbox-side interface facing the container. */
  readonly containerIface: string;
  /** Container address, in 192.0.2.0/24. */
  readonly containerAddress: string;
  /** Upstream addresses (198.51.100.0/24), each with an HTTP server on `port`. */
  readonly upstreamAddresses: readonly string[];
  readonly port: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const SERVER_READY_TIMEOUT_MS = 10_000;

let sandboxCounter = 0;
const liveSandboxes = new Set<Sandbox>();

process.on('exit', () => {
  for (const sandbox of liveSandboxes) {
    sandbox.destroy();
  }
});

/** Quotes a string for a POSIX shell command line. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, '\'\\\'\'')}'`;
}

/** Blocks the calling thread for `ms` milliseconds without spawning a process. */
export function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function hostCommandExists(name: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0;
}

/**
 * Returns why real-kernel tests cannot run here, or undefined when they can:
 * they need root and the host tools the sandbox is built from.
 */
export function kernelSandboxUnavailableReason(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return 'they need root (network namespaces, overlay mounts, chroot)';
  }
  const missing = ['unshare', 'ip', 'chroot', 'mount', 'setpriv', 'curl', 'timeout', 'nft', 'iptables', 'xtables-legacy-multi', 'xtables-nft-multi']
    .filter((tool) => !hostCommandExists(tool));
  if (missing.length > 0) {
    return `required host tools not found: ${missing.join(', ')}`;
  }
  return undefined;
}

/**
 * Reports whether real-kernel tests can run. When they cannot, logs the reason and
 * returns false so the caller skips them; with CI=true it throws instead, so a
 * suite can never pass in CI by not running.
 */
export function requireKernelSandbox(): boolean {
  const reason = kernelSandboxUnavailableReason();
  if (reason === undefined) {
    return true;
  }
  if (process.env.CI === 'true') {
    throw new Error(`real-kernel tests cannot run: ${reason}. CI=true, so a skipped suite counts as a failure.`);
  }
  console.warn(`skipping real-kernel tests: ${reason}`);
  return false;
}

/** `describe` that runs only where {@link requireKernelSandbox} allows, and is skipped (or throws in CI) elsewhere. */
export function describeKernel(name: string, fn: () => void): void {
  if (requireKernelSandbox()) {
    describe(name, fn);
  } else {
    describe.skip(name, fn);
  }
}

function checked(result: RunResult, description: string): RunResult {
  if (result.status !== 0) {
    throw new Error(`${description} failed with status ${result.status} (signal ${result.signal}): ${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result;
}

function runHost(argv: string[], options: { input?: string; timeoutMs?: number } = {}): RunResult {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const start = Date.now();
  // timeout(1) kills the whole process group, so background children of a script die with it.
  const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
  const result = spawnSync('timeout', ['-k', '2', `${seconds}`, ...argv], {
    input: options.input ?? '',
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: timeoutMs + 5000,
    killSignal: 'SIGKILL',
  });
  const durationMs = Date.now() - start;
  if (result.error && (result.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') {
    throw result.error;
  }
  return {
    status: result.status,
    signal: result.signal,
    stdout: result.stdout ?? '',
    stderr: result.stderr ?? '',
    durationMs,
  };
}

/** Runs a command in a named network namespace, outside any chroot. */
export function runInNamespace(namespace: string, argv: string[], options: { input?: string; timeoutMs?: number } = {}): RunResult {
  return runHost(['ip', 'netns', 'exec', namespace, ...argv], options);
}

// Runs inside `unshare --mount` in the sandbox namespace: mounts the overlay root
// and the kernel filesystems, then enters the root with a clean environment.
const ENTER_ROOT_SCRIPT = [
  'set -e',
  'upper=$1 work=$2 root=$3 tmp=$4',
  'shift 4',
  'mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$root"',
  'mount -t proc proc "$root/proc"',
  'mount -t sysfs sysfs "$root/sys"',
  'mount --rbind /dev "$root/dev"',
  'mount --bind "$tmp" "$root/tmp"',
  'exec chroot "$root" "$@"',
].join('\n');

const SERVER_SCRIPT = `
const [kind, address, port, readyFile] = process.argv.slice(1);
const fs = require('fs');
function ready(text) { fs.writeFileSync(readyFile, text); }
if (kind === 'http') {
  const server = require('http').createServer((request, response) => response.end('ok'));
  server.on('error', (error) => { ready('error ' + error.code); process.exit(1); });
  server.listen(Number(port), address, () => ready('listening'));
} else {
  const socket = require('dgram').createSocket(address.includes(':') ? 'udp6' : 'udp4');
  socket.on('error', (error) => { ready('error ' + error.code); process.exit(1); });
  socket.on('message', (message, peer) => socket.send(message, peer.port, peer.address));
  socket.bind(Number(port), address, () => ready('listening'));
}
// Exit when the test process goes away, so no server outlives it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

// Sends one datagram on a connected socket and waits for a reply. A REJECT
// target's ICMP error shows up as an error on the receive, a DROP as a timeout.
const UDP_PROBE_SCRIPT = `
import errno, socket, sys
address, port, source, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
family = socket.AF_INET6 if ':' in address else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((source, 0))
s.connect((address, port))
s.settimeout(wait)
send_errno = '-'
try:
    s.send(b'probe')
except OSError as e:
    send_errno = errno.errorcode.get(e.errno, str(e.errno))
icmp_errnos = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES)
try:
    s.recv(100)
    print('reply', send_errno, '-')
except socket.timeout:
    print('timeout', send_errno, '-')
except OSError as e:
    name = errno.errorcode.get(e.errno, str(e.errno))
    print('icmp-error' if e.errno in icmp_errnos else 'error', send_errno, name)
`;

interface ServerHandle {
  readonly child: ChildProcess;
  readonly description: string;
}

/**
 * A network namespace plus throwaway overlay root with one firewall backend arranged.
 * Create with {@link Sandbox.create}; always {@link Sandbox.destroy} it.
 */
export class Sandbox {
  /**
   * Creates the namespace and root, arranges `options.backend` and verifies it.
   * Throws with the failing command's output when any step fails; what was
   * created so far is destroyed first.
   */
  public static create(options: SandboxOptions): Sandbox {
    sandboxCounter += 1;
    const namespace = `ipld-${process.pid}-${sandboxCounter}`;
    const tempDir = fs.mkdtempSync(path.join(os.tmpdir(), `ipld-sandbox-${process.pid}-${sandboxCounter}-`));
    const sandbox = new Sandbox(namespace, tempDir, options.backend);
    liveSandboxes.add(sandbox);
    try {
      sandbox.setUpNamespace();
      sandbox.arrangeBackend();
    } catch (error) {
      sandbox.destroy();
      throw error;
    }
    return sandbox;
  }

  /** Name of the network namespace (`ip netns` name). */
  public readonly namespace: string;
  /** Backend arranged in the root. */
  public readonly backend: Backend;
  /** Host temp dir holding the overlay's upper and work dirs. */
  public readonly tempDir: string;

  private readonly upperDir: string;
  private readonly workDir: string;
  private readonly rootDir: string;
  private readonly rootTmpDir: string;
  private readonly stateDir: string;
  private readonly servers: ServerHandle[] = [];
  private readonly extraNamespaces: string[] = [];
  private serverCounter = 0;
  private destroyed = false;
  private namespaceCreated = false;

  private constructor(namespace: string, tempDir: string, backend: Backend) {
    this.namespace = namespace;
    this.tempDir = tempDir;
    this.backend = backend;
    this.upperDir = path.join(tempDir, 'upper');
    this.workDir = path.join(tempDir, 'work');
    this.rootDir = path.join(tempDir, 'root');
    this.rootTmpDir = path.join(tempDir, 'tmp');
    this.stateDir = path.join(tempDir, 'state');
    for (const dir of [this.upperDir, this.workDir, this.rootDir, this.rootTmpDir, this.stateDir]) {
      fs.mkdirSync(dir);
    }
    fs.chmodSync(this.rootTmpDir, 0o1777);
  }

  /**
   * Runs `argv` inside the namespace and the root, as root or `options.user`.
   * Never throws for a non-zero exit; check `status`.
   */
  public run(argv: string[], options: RunOptions = {}): RunResult {
    this.assertAlive();
    const env = {
      PATH: ROOT_PATH,
      HOME: '/root',
      LANG: 'C',
      LC_ALL: 'C',
      ...(options.env ?? {}),
    };
    const envArgs = Object.entries(env).map(([key, value]) => `${key}=${value}`);
    const command = ['/usr/bin/env', '-i', ...envArgs, ...this.userPrefix(options.user), ...argv];
    return runInNamespace(this.namespace, [
      'unshare', '--mount', '--propagation', 'private',
      '/bin/sh', '-c', ENTER_ROOT_SCRIPT, 'enter-root',
      this.upperDir, this.workDir, this.rootDir, this.rootTmpDir,
      ...command,
    ], { input: options.input, timeoutMs: options.timeoutMs });
  }

  /** Runs a `/bin/sh -c` script inside the namespace and the root; see {@link Sandbox.run}. */
  public sh(script: string, options: RunOptions = {}): RunResult {
    return this.run(['/bin/sh', '-c', script], options);
  }

  /**
   * Returns the argv prefix that drops root privileges to `user` inside the root:
   * `setpriv` with the user's primary group and supplementary groups, or for a
   * numeric uid, gid = uid and no supplementary groups. Empty for root.
   */
  public userPrefix(user: string | number | undefined): string[] {
    if (user === undefined || user === 'root' || user === 0) {
      return [];
    }
    if (typeof user === 'number' || /^[0-9]+$/.test(user)) {
      return ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--clear-groups', '--'];
    }
    const gid = this.lookUpPrimaryGid(user);
    return ['setpriv', `--reuid=${user}`, `--regid=${gid}`, '--init-groups', '--'];
  }

  /** Shell-quoted form of {@link Sandbox.userPrefix}, for use inside `sh()` scripts. */
  public userShellPrefix(user: string | number): string {
    return this.userPrefix(user).map(shellQuote).join(' ');
  }

  /** Creates a user (no home dir, nologin shell) in the root; throws on failure. */
  public addUser(name: string, options: { groups?: string[]; uid?: number } = {}): void {
    const argv = ['useradd', '-M', '-s', '/usr/sbin/nologin'];
    if (options.uid !== undefined) {
      argv.push('-u', `${options.uid}`);
    }
    if (options.groups && options.groups.length > 0) {
      argv.push('-G', options.groups.join(','));
    }
    argv.push(name);
    checked(this.run(argv), `useradd ${name}`);
  }

  /** Creates a group in the root; throws on failure. */
  public addGroup(name: string, options: { gid?: number } = {}): void {
    const argv = ['groupadd'];
    if (options.gid !== undefined) {
      argv.push('-g', `${options.gid}`);
    }
    argv.push(name);
    checked(this.run(argv), `groupadd ${name}`);
  }

  /** Returns the numeric uid of `name` inside the root. */
  public uidOf(name: string): number {
    return Number(checked(this.run(['id', '-u', name]), `id -u ${name}`).stdout.trim());
  }

  /** Writes a file inside the root (parent dirs created), with `mode` (default 0644). */
  public writeFile(filePath: string, content: string, mode: number = 0o644): void {
    checked(this.run(['/bin/sh', '-c', 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', 'write-file', filePath, mode.toString(8)], { input: content }),
      `writing ${filePath}`);
  }

  /** Returns the content of a file inside the root; throws when it cannot be read. */
  public readFile(filePath: string): string {
    return checked(this.run(['cat', '--', filePath]), `reading ${filePath}`).stdout;
  }

  /** Reports whether a path exists inside the root (a dangling symlink counts). */
  public exists(filePath: string): boolean {
    return this.run(['/bin/sh', '-c', 'test -e "$1" || test -L "$1"', 'exists', filePath]).status === 0;
  }

  /** Copies the program from `assets/ip-lockdown.sh` to {@link PROGRAM_PATH} in the root, mode 0755. */
  public installProgram(): void {
    if (!fs.existsSync(PROGRAM_SOURCE)) {
      throw new Error(`program not found at ${PROGRAM_SOURCE}`);
    }
    this.writeFile(PROGRAM_PATH, fs.readFileSync(PROGRAM_SOURCE, 'utf8'), 0o755);
  }

  /**
   * Starts an HTTP server that returns 200 "ok" on `address`:`port` in the namespace
   * (outside the root, as root) and waits until it listens.
   */
  public startHttpServer(address: string, port: number): void {
    this.startServer(this.namespace, 'http', address, port);
  }

  /** Starts a UDP echo server on `address`:`port` in the namespace and waits until it is bound. */
  public startUdpEchoServer(address: string, port: number): void {
    this.startServer(this.namespace, 'udp', address, port);
  }

  /**
   * Fetches `url` with curl inside the root as `user`, bound to a source address
   * that is not the locked one (see {@link CurlOptions.source}).
   */
  public curl(user: string | number, url: string, options: CurlOptions = {}): CurlResult {
    const isV6 = /^[a-z]+:\/\/\[/.test(url);
    const source = options.source ?? (isV6 ? CLIENT_V6 : CLIENT_V4);
    const connectTimeout = options.connectTimeoutSec ?? 8;
    const result = this.run([
      'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}',
      '--connect-timeout', `${connectTimeout}`, '--max-time', `${connectTimeout + 4}`,
      '--interface', source, url,
    ], { user, timeoutMs: (connectTimeout + 10) * 1000 });
    return curlResult(result);
  }

  /**
   * Sends one UDP datagram as `user` from `source` to `address`:`port` inside the
   * root and waits up to `waitSec` seconds for a reply or an ICMP error.
   */
  public udpProbe(user: string | number, address: string, port: number, options: { source?: string; waitSec?: number } = {}): UdpProbeResult {
    const source = options.source ?? (address.includes(':') ? CLIENT_V6 : CLIENT_V4);
    const waitSec = options.waitSec ?? 3;
    const result = this.run(['python3', '-c', UDP_PROBE_SCRIPT, address, `${port}`, source, `${waitSec}`],
      { user, timeoutMs: (waitSec + 10) * 1000 });
    const words = result.stdout.trim().split(/\s+/);
    const known: UdpOutcome[] = ['reply', 'icmp-error', 'timeout', 'error'];
    const outcome = known.includes(words[0] as UdpOutcome) ? (words[0] as UdpOutcome) : 'error';
    const errnoWord = (word: string | undefined) => (word === undefined || word === '-' ? '' : word);
    return {
      outcome,
      sendErrno: errnoWord(words[1]),
      receiveErrno: errnoWord(words[2]),
      detail: `${result.stdout.trim()} ${result.stderr.trim()}`.trim(),
      durationMs: result.durationMs,
    };
  }

  /**
   * Connects a container namespace and an upstream namespace to the sandbox
   * namespace with veth pairs and turns on forwarding in the sandbox namespace,
   * so container traffic to the upstream addresses passes the FORWARD hook there.
   * Starts an HTTP server on `port` of each upstream address.
   *
   * Container 192.0.2.2 -- 192.0.2.1 [sandbox] 198.51.100.1 -- upstream 198.51.100.2, .3
   */
  public addForwardingTopology(options: { containerIface?: string; port?: number } = {}): ForwardingTopology {
    const containerIface = options.containerIface ?? 'veth-ipld0';
    const port = options.port ?? 8080;
    const containerNs = `${this.namespace}-c`;
    const upstreamNs = `${this.namespace}-u`;
    const upstreamAddresses = ['198.51.100.2', '198.51.100.3'];
    for (const ns of [containerNs, upstreamNs]) {
      checked(runHost(['ip', 'netns', 'add', ns]), `ip netns add ${ns}`);
      this.extraNamespaces.push(ns);
      checked(runInNamespace(ns, ['ip', 'link', 'set', 'lo', 'up']), `lo up in ${ns}`);
    }
    const steps: Array<[string, string[]]> = [
      [this.namespace, ['ip', 'link', 'add', containerIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', containerNs]],
      [this.namespace, ['ip', 'link', 'add', 'up-ipld0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', upstreamNs]],
      [this.namespace, ['ip', 'addr', 'add', '192.0.2.1/24', 'dev', containerIface]],
      [this.namespace, ['ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'up-ipld0']],
      [this.namespace, ['ip', 'link', 'set', containerIface, 'up']],
      [this.namespace, ['ip', 'link', 'set', 'up-ipld0', 'up']],
      [this.namespace, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']],
      [containerNs, ['ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0']],
      [containerNs, ['ip', 'link', 'set', 'eth0', 'up']],
      [containerNs, ['ip', 'route', 'add', 'default', 'via', '192.0.2.1']],
      [upstreamNs, ['ip', 'addr', 'add', `${upstreamAddresses[0]}/24`, 'dev', 'eth0']],
      [upstreamNs, ['ip', 'addr', 'add', `${upstreamAddresses[1]}/24`, 'dev', 'eth0']],
      [upstreamNs, ['ip', 'link', 'set', 'eth0', 'up']],
      [upstreamNs, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']],
    ];
    for (const [ns, argv] of steps) {
      checked(runInNamespace(ns, argv), `${argv.join(' ')} in ${ns}`);
    }
    for (const address of upstreamAddresses) {
      this.startServer(upstreamNs, 'http', address, port);
    }
    return { containerNs, upstreamNs, containerIface, containerAddress: '192.0.2.2', upstreamAddresses, port };
  }

  /** Fetches `url` with the host's curl inside another namespace of this sandbox (for example the container). */
  public curlFromNamespace(namespace: string, url: string, options: { connectTimeoutSec?: number } = {}): CurlResult {
    if (namespace !== this.namespace && !this.extraNamespaces.includes(namespace)) {
      throw new Error(`namespace ${namespace} does not belong to this sandbox`);
    }
    const connectTimeout = options.connectTimeoutSec ?? 8;
    const result = runInNamespace(namespace, [
      'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}',
      '--connect-timeout', `${connectTimeout}`, '--max-time', `${connectTimeout + 4}`, url,
    ], { timeoutMs: (connectTimeout + 10) * 1000 });
    return curlResult(result);
  }

  /**
   * Kills the servers, deletes the namespaces and removes the temp dir.
   * Safe to call more than once; errors are collected and logged, not thrown.
   */
  public destroy(): void {
    if (this.destroyed) {
      return;
    }
    this.destroyed = true;
    liveSandboxes.delete(this);
    const problems: string[] = [];
    for (const server of this.servers) {
      if (server.child.exitCode === null && server.child.pid !== undefined) {
        try {
          process.kill(server.child.pid, 'SIGKILL');
        } catch (error) {
          problems.push(`killing ${server.description}: ${(error as Error).message}`);
        }
      }
    }
    const namespaces = [...this.extraNamespaces, ...(this.namespaceCreated ? [this.namespace] : [])];
    for (const ns of namespaces) {
      // Any process still in a namespace was started by this sandbox (a server or
      // a command past its timeout); it would keep the namespace alive.
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter((word) => /^[0-9]+$/.test(word))) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      const deleted = spawnSync('ip', ['netns', 'delete', ns], { encoding: 'utf8' });
      if (deleted.status !== 0) {
        problems.push(`ip netns delete ${ns}: ${deleted.stderr.trim()}`);
      }
    }
    try {
      fs.rmSync(this.tempDir, { recursive: true, force: true });
    } catch (error) {
      problems.push(`removing ${this.tempDir}: ${(error as Error).message}`);
    }
    if (problems.length > 0) {
      console.warn(`sandbox ${this.namespace} cleanup problems:\n${problems.join('\n')}`);
    }
  }

  private assertAlive(): void {
    if (this.destroyed) {
      throw new Error(`sandbox ${this.namespace} was destroyed`);
    }
  }

  private setUpNamespace(): void {
    checked(runHost(['ip', 'netns', 'add', this.namespace]), `ip netns add ${this.namespace}`);
    this.namespaceCreated = true;
    const steps = [
      ['ip', 'link', 'set', 'lo', 'up'],
      ['ip', 'addr', 'add', `${LOCKED_V4}/8`, 'dev', 'lo'],
      ['ip', 'addr', 'add', `${LOCKED_V4_B}/8`, 'dev', 'lo'],
      ['ip', '-6', 'addr', 'add', `${CLIENT_V6}/128`, 'dev', 'lo', 'nodad'],
    ];
    for (const argv of steps) {
      checked(runInNamespace(this.namespace, argv), `${argv.join(' ')} in ${this.namespace}`);
    }
  }

  private arrangeBackend(): void {
    const names = ['iptables', 'iptables-save', 'iptables-restore', 'ip6tables', 'ip6tables-save', 'ip6tables-restore'];
    if (this.backend === 'nft-only') {
      checked(this.sh('rm -f /usr/sbin/iptables* /usr/sbin/ip6tables* /usr/sbin/xtables-* /usr/sbin/arptables* /usr/sbin/ebtables*'),
        'removing the iptables binaries');
      const left = this.sh('for tool in iptables ip6tables iptables-restore ip6tables-restore iptables-save; do command -v "$tool" && exit 1; done; nft --version');
      if (left.status !== 0) {
        throw new Error(`nft-only root still has iptables tools or lacks nft: ${left.stdout}${left.stderr}`);
      }
      return;
    }
    const multi = this.backend === 'iptables-legacy' ? 'xtables-legacy-multi' : 'xtables-nft-multi';
    const link = names.map((name) => `ln -sf ${multi} /usr/sbin/${name}`).join(' && ');
    checked(this.sh(link), `linking iptables to ${multi}`);
    const expected = this.backend === 'iptables-legacy' ? '(legacy)' : '(nf_tables)';
    for (const tool of ['iptables', 'ip6tables', 'iptables-restore', 'ip6tables-restore']) {
      const version = checked(this.run([tool, '-V']), `${tool} -V`).stdout;
      if (!version.includes(expected)) {
        throw new Error(`${tool} -V in the ${this.backend} root printed "${version.trim()}", expected ${expected}`);
      }
    }
  }

  private lookUpPrimaryGid(user: string): number {
    // Reading the merged view's passwd avoids one namespace round trip per command.
    const upperPasswd = path.join(this.upperDir, 'etc', 'passwd');
    const passwd = fs.readFileSync(fs.existsSync(upperPasswd) ? upperPasswd : '/etc/passwd', 'utf8');
    for (const line of passwd.split('\n')) {
      const fields = line.split(':');
      if (fields[0] === user && fields.length >= 4) {
        return Number(fields[3]);
      }
    }
    throw new Error(`user ${user} not found in the sandbox root`);
  }

  private startServer(namespace: string, kind: 'http' | 'udp', address: string, port: number): void {
    this.serverCounter += 1;
    const readyFile = path.join(this.stateDir, `server-${this.serverCounter}.ready`);
    const description = `${kind} server on ${address} port ${port} in ${namespace}`;
    const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', SERVER_SCRIPT, kind, address, `${port}`, readyFile], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    this.servers.push({ child, description });
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    const deadline = Date.now() + SERVER_READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (fs.existsSync(readyFile)) {
        const state = fs.readFileSync(readyFile, 'utf8');
        if (state === 'listening') {
          return;
        }
        if (state.startsWith('error')) {
          throw new Error(`${description} failed to start: ${state}`);
        }
      }
      sleepMs(25);
    }
    throw new Error(`${description} did not start within ${SERVER_READY_TIMEOUT_MS} ms`);
  }
}

function curlResult(result: RunResult): CurlResult {
  const httpCode = Number(result.stdout.trim()) || 0;
  return {
    ok: result.status === 0 && httpCode === 200,
    exitCode: result.status,
    httpCode,
    durationMs: result.durationMs,
    stderr: result.stderr.trim(),
  };
}
