import { Resource, TagManager } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { IConstruct } from 'constructs';

/** A target the lock cannot be attached to, with the fix in the message. */
export class UnsupportedTargetError extends Error {
  /** True when the target runs Windows, which `applyToScope` skips with a warning. */
  public readonly windows: boolean;

  constructor(message: string, windows: boolean = false) {
    super(message);
    this.name = 'UnsupportedTargetError';
    this.windows = windows;
  }
}

/** An instance, Auto Scaling group or launch template, reduced to what the lock needs. */
export interface LockTarget {
  readonly construct: IConstruct;
  /** Kind and path, for messages: "instance 'Stack/Web'". */
  readonly description: string;
  readonly userData: ec2.UserData;
  /** The instance role, when the construct can attach policies to it. */
  readonly role?: iam.IRole;
  /** Reason the role is not reachable, when `role` is undefined. */
  readonly roleUnreachableReason?: string;
  /** Tags the target so that the instances it runs carry the tag. */
  setTag(key: string, value: string): void;
}

const LINUX_USER_DATA_FIX = 'Give it Linux user data, such as ec2.UserData.forLinux(), and add your own commands to that';

/**
 * Resolves an EC2 instance.
 *
 * @throws UnsupportedTargetError for Windows or user data that cannot take shell commands
 */
export function instanceTarget(instance: ec2.Instance): LockTarget {
  const description = `instance '${instance.node.path}'`;
  rejectWindows(instance.osType, description);
  checkUserData(instance.userData, description);

  return {
    construct: instance,
    description,
    userData: instance.userData,
    ...reachableRole(instance.role),
    setTag: (key, value) => instance.instance.tags.setTag(key, value),
  };
}

/**
 * Resolves an Auto Scaling group, made from a machine image or a launch template.
 *
 * @throws UnsupportedTargetError for Windows, or a launch template without user data or imported
 */
export function autoScalingGroupTarget(group: autoscaling.AutoScalingGroup): LockTarget {
  const description = `Auto Scaling group '${group.node.path}'`;
  rejectWindows(group.osType, description);

  let userData: ec2.UserData;
  try {
    userData = group.userData;
  } catch {
    throw new UnsupportedTargetError(`${description} uses a launch template that has no user data or is imported. `
      + 'Create the launch template in this app with user data: new ec2.LaunchTemplate(this, \'Template\', { ..., userData: ec2.UserData.forLinux() }).');
  }
  checkUserData(userData, description);

  let role: iam.IRole | undefined;
  try {
    role = group.role;
  } catch {
    role = undefined;
  }

  const cfnGroup = group.node.defaultChild as autoscaling.CfnAutoScalingGroup;
  return {
    construct: group,
    description,
    userData,
    ...(role === undefined
      ? { roleUnreachableReason: 'its launch template has no role' }
      : reachableRole(role)),
    // Propagated at launch, so every instance the group starts carries the tag.
    setTag: (key, value) => cfnGroup.tags.setTag(key, value, 0, true),
  };
}

/**
 * Resolves a launch template.
 *
 * @throws UnsupportedTargetError for Windows, or a template without user data
 */
export function launchTemplateTarget(template: ec2.LaunchTemplate): LockTarget {
  const description = `launch template '${template.node.path}'`;
  rejectWindows(template.osType, description);

  const userData = template.userData;
  if (userData === undefined) {
    throw new UnsupportedTargetError(`${description} has no user data. Create it with user data: new ec2.LaunchTemplate(this, '${template.node.id}', { ..., userData: ec2.UserData.forLinux() }).`);
  }
  checkUserData(userData, description);

  return {
    construct: template,
    description,
    userData,
    ...(template.role === undefined
      ? { roleUnreachableReason: 'it has no role (set its role or instanceProfile)' }
      : reachableRole(template.role)),
    // The template puts its tags on the instances (and volumes) it launches.
    // Its tag manager is protected; TagManager.of() is the public way to it.
    setTag: (key, value) => TagManager.of(template)?.setTag(key, value),
  };
}

function rejectWindows(osType: ec2.OperatingSystemType | undefined, description: string): void {
  if (osType === ec2.OperatingSystemType.WINDOWS) {
    throw new UnsupportedTargetError(`${description} runs Windows. IpLockdown supports Linux targets only.`, true);
  }
}

function checkUserData(userData: ec2.UserData, description: string): void {
  // Rendering is only inspected here: WindowsUserData is not exported, but it
  // always renders inside <powershell> tags.
  if (userData.render().startsWith('<powershell>')) {
    throw new UnsupportedTargetError(`${description} has Windows user data. IpLockdown supports Linux targets only.`, true);
  }

  // CustomUserData is not exported either. It is the only UserData that rejects
  // addOnExitCommands (MultipartUserData does too when it has no default part,
  // so commands could not be added to it), and with no commands the call
  // changes nothing on the others.
  try {
    userData.addOnExitCommands();
  } catch {
    throw new UnsupportedTargetError(`${description} has user data that cannot take shell commands (UserData.custom, or a MultipartUserData without a default part). ${LINUX_USER_DATA_FIX}.`);
  }
}

function reachableRole(role: iam.IRole): { role?: iam.IRole; roleUnreachableReason?: string } {
  // An imported role silently ignores addManagedPolicy, so it counts as unreachable.
  if (!Resource.isOwnedResource(role)) {
    return { roleUnreachableReason: `its role '${role.node.path}' is imported, so policies cannot be attached to it` };
  }
  return { role };
}
