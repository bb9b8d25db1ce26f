import { Lazy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { FailureMode, LockSpec, renderLockBlock } from './lock-block';

/**
 * The locks attached to one UserData object. They render as one block at the
 * position of the first lock, so the program is embedded and `--apply` runs
 * once however many locks share the UserData.
 */
class UserDataLocks {
  private readonly locks: LockSpec[] = [];

  constructor(userData: ec2.UserData) {
    // Uncached, so locks attached after an early resolve (an aspect, or a size
    // check) still land in the block.
    userData.addCommands(Lazy.uncachedString({ produce: () => this.render() }));
  }

  public render(): string {
    return renderLockBlock(this.locks, FailureMode.LOG_AND_CONTINUE);
  }

  /**
   * Adds a lock; adding the same lock again does nothing.
   *
   * @returns false when another lock with the same name is already attached
   */
  public add(lock: LockSpec): boolean {
    const existing = this.locks.find((candidate) => candidate.name === lock.name);
    if (existing === undefined) {
      this.locks.push(lock);
      return true;
    }
    return existing === lock;
  }
}

// Keyed by the UserData object, which several targets may share.
const locksByUserData = new WeakMap<ec2.UserData, UserDataLocks>();

/**
 * Returns the size in bytes of the lock block in a UserData object, or 0 when it has none.
 */
export function lockBlockBytes(userData: ec2.UserData): number {
  const locks = locksByUserData.get(userData);
  return locks === undefined ? 0 : Buffer.byteLength(locks.render(), 'utf8');
}

/**
 * Attaches a lock to a UserData object, adding the lock block to it on first use.
 *
 * @returns false when a different lock with the same name is already attached
 */
export function attachLockToUserData(userData: ec2.UserData, lock: LockSpec): boolean {
  let locks = locksByUserData.get(userData);
  if (locks === undefined) {
    locks = new UserDataLocks(userData);
    locksByUserData.set(userData, locks);
  }
  return locks.add(lock);
}
