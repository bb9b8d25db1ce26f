import { encodedProgram } from './program';

/** Path of the installed program on the instance. */
export const PROGRAM_PATH = '/usr/local/sbin/ip-lockdown';

/** Directory of the saved locks, one `NAME.conf` file per lock. */
export const LOCKS_DIR = '/etc/ip-lockdown/locks.d';

const PROGRAM_DELIMITER = 'IP_LOCKDOWN_PROGRAM';
const LOCK_DELIMITER = 'IP_LOCKDOWN_LOCK';

/** Everything one lock writes to its file on the instance. All values are already validated. */
export interface LockSpec {
  readonly name: string;
  readonly addresses: string[];
  readonly users: string[];
  readonly groups: string[];
  readonly logBlocked: boolean;
  readonly blockForwardedInterfaces: string[];
  readonly bootPersistence: boolean;
  /** Whether the block writes the program, or expects it already installed at PROGRAM_PATH. */
  readonly embedProgram: boolean;
}

/** Behaviour of the block when a step fails. */
export enum FailureMode {
  /**
   * Log to stderr and let the commands after the block run (UserData: a failed
   * lock must not stop the user's own commands).
   */
  LOG_AND_CONTINUE = 'log',
  /** End with the failing step's exit status (SSM: the association reports the run as failed). */
  EXIT_WITH_STATUS = 'exit',
}

/** Renders the lock file in the program's configuration format. */
export function renderLockConfig(lock: LockSpec): string {
  const lines = [
    ...lock.addresses.map((address) => `address ${address}`),
    ...lock.users.map((user) => `user ${user}`),
    ...lock.groups.map((group) => `group ${group}`),
    ...(lock.logBlocked ? ['log-blocked'] : []),
    ...lock.blockForwardedInterfaces.map((pattern) => `block-forwarded ${pattern}`),
  ];
  return lines.join('\n');
}

/**
 * Renders the shell block that installs the program, writes each lock's file,
 * installs the boot service when a lock requests it, and applies every saved lock.
 *
 * The block runs in a subshell so that nothing it sets (umask, exits) reaches
 * the commands around it. It checks each step with `|| exit 1` instead of
 * `set -e`, because a shell ignores `set -e` inside a command on the left of
 * `||`, and the UserData form needs that `||` to log a failure and go on.
 * Exit status 1 means installing the program or writing a lock file failed.
 * Status 3 also means that the program is missing when the block does not
 * embed it. Otherwise 2 to 5 come from `ip-lockdown --apply`.
 *
 * The block is POSIX sh: UserData runs it with the image's shell (bash by
 * default) and the SSM agent runs commands with /bin/sh, which is dash on
 * Debian and Ubuntu. Values come from validated props and go into quoted
 * heredocs, so the shell expands nothing in them.
 */
export function renderLockBlock(locks: LockSpec[], failureMode: FailureMode): string {
  const program = `${PROGRAM_PATH}`;
  const staged = `${PROGRAM_PATH}.new`;

  const lines = [
    `# cdk-ip-lockdown: ${locks.map((lock) => lock.name).join(', ')}`,
    '(',
    'umask 022',
  ];

  if (locks.some((lock) => lock.embedProgram)) {
    lines.push(
      `mkdir -p /usr/local/sbin ${LOCKS_DIR} || exit 1`,
      // The program is staged and renamed, so a failed decode never replaces a working copy.
      `base64 -d <<'${PROGRAM_DELIMITER}' | gzip -dc >${staged} || exit 1`,
      encodedProgram(),
      PROGRAM_DELIMITER,
      `chmod 0755 ${staged} || exit 1`,
      `mv -f ${staged} ${program} || exit 1`,
    );
  } else {
    lines.push(
      `mkdir -p ${LOCKS_DIR} || exit 1`,
      `[ -x ${program} ] || { echo "ip-lockdown: ERROR: ${program} is missing; the image must provide it when embedProgram is false" >&2; exit 3; }`,
    );
  }

  for (const lock of locks) {
    const file = `${LOCKS_DIR}/${lock.name}.conf`;
    // Written next to the target and renamed, so a concurrent --apply never reads half a file.
    lines.push(
      `cat >${file}.new <<'${LOCK_DELIMITER}' || exit 1`,
      renderLockConfig(lock),
      LOCK_DELIMITER,
      `mv -f ${file}.new ${file} || exit 1`,
    );
  }

  if (locks.some((lock) => lock.bootPersistence)) {
    lines.push(`${program} --install-boot-service || exit 1`);
  }
  lines.push(`${program} --apply`);

  if (failureMode === FailureMode.LOG_AND_CONTINUE) {
    lines.push(') || echo "ip-lockdown: ERROR: lock setup failed with exit status $?, see the messages above; the remaining user data still runs" >&2');
  } else {
    lines.push(')');
  }
  return lines.join('\n');
}
