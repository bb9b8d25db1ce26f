import { Annotations, AspectPriority, Aspects, IAspect, Names } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct, IConstruct } from 'constructs';
import { FailureMode, LockSpec, renderLockBlock } from './private/lock-block';
import {
  autoScalingGroupTarget,
  instanceTarget,
  launchTemplateTarget,
  LockTarget,
  UnsupportedTargetError,
} from './private/targets';
import { attachLockToUserData } from './private/user-data-locks';
import { addUserDataSizeValidation } from './private/user-data-size';
import {
  METADATA_ADDRESSES,
  parseDestinations,
  validateAccounts,
  validateInterfacePatterns,
  validateLockName,
} from './private/validation';
import { ReapplySchedule } from './reapply-schedule';

const TAG_KEY_PREFIX = 'ip-lockdown:';
const TAG_VALUE = 'enabled';
const SSM_MANAGED_POLICY = 'AmazonSSMManagedInstanceCore';

/**
 * Properties of an {@link IpLockdown}.
 */
export interface IpLockdownProps {
  /**
   * OS users allowed to connect to the locked destinations, by name or numeric uid.
   *
   * Every other process on the instance gets a TCP reset or an ICMP
   * unreachable error. A name must match `[a-z_][a-z0-9_.-]*[$]?` and be at most
   * 32 characters long.
   *
   * NOTE: a user that does not exist when the lock is applied is skipped (and
   * stays locked out) until the next apply, at the next boot or association
   * run. Create users before the lock's place in the user data, or list a
   * numeric uid.
   *
   * @default ['root']
   */
  readonly allowedUsers?: string[];

  /**
   * OS groups whose members may connect to the locked destinations, by name or numeric gid.
   *
   * A process is allowed when its primary or any supplementary group is listed.
   * Names follow the same rule as `allowedUsers`.
   *
   * NOTE: with the nftables backend (hosts without a working `iptables`), groups
   * are expanded to their member users when the lock is applied, so a user added
   * to a group later is allowed only after the next apply.
   *
   * @default - no group is allowed
   */
  readonly allowedGroups?: string[];

  /**
   * Addresses to lock: IPv4 addresses, IPv4 CIDR blocks, or IPv6 addresses.
   *
   * IPv4 CIDR blocks must have no host bits set and a prefix from /1 to /32.
   * IPv6 CIDR blocks and hostnames are not supported.
   *
   * @default - both instance metadata service addresses, 169.254.169.254 and fd00:ec2::254
   */
  readonly destinations?: string[];

  /**
   * Reapplies the lock on running instances on a schedule, through an SSM State
   * Manager association.
   *
   * The association reinstalls the program and the lock file and reapplies the
   * rules, so changed props reach running instances and rules removed by hand or
   * by another tool come back. A run that cannot apply the lock fails, which
   * shows in the association's status and compliance.
   *
   * NOTE: the association reaches an instance only when its SSM agent runs and
   * can reach Systems Manager, and its role allows it. The construct attaches
   * the `AmazonSSMManagedInstanceCore` managed policy to each target's role
   * where it can.
   *
   * @default - no association: the lock is applied by UserData at first boot and by the boot service at each later boot
   */
  readonly reapplySchedule?: ReapplySchedule;

  /**
   * EC2 instances to lock. More can be added with `addInstance()`.
   *
   * @default - none
   */
  readonly instances?: ec2.Instance[];

  /**
   * Auto Scaling groups to lock. More can be added with `addAutoScalingGroup()`.
   *
   * @default - none
   */
  readonly autoScalingGroups?: autoscaling.AutoScalingGroup[];

  /**
   * Launch templates to lock. More can be added with `addLaunchTemplate()`.
   *
   * @default - none
   */
  readonly launchTemplates?: ec2.LaunchTemplate[];

  /**
   * Interfaces whose forwarded traffic to the locked destinations is rejected,
   * as iptables interface patterns (`docker0`, or `br-+` for every interface
   * whose name starts with `br-`).
   *
   * Containers on a bridge network reach the host's destinations through the
   * FORWARD path, where the owner match cannot see which user sent a packet, so
   * their traffic is either all allowed or all rejected. Listing the bridge
   * rejects it all.
   *
   * NOTE: without this, containers on a bridge network are not covered by the
   * lock. Containers that use the host network are covered like any process.
   *
   * @default - forwarded traffic is not blocked
   */
  readonly blockForwardedInterfaces?: string[];

  /**
   * Logs each rejected connection attempt (rate-limited) to the kernel log.
   *
   * Useful to find which process needs access before tightening the allow-list.
   *
   * @default false
   */
  readonly logBlocked?: boolean;

  /**
   * Installs a systemd boot service that reapplies every saved lock early at
   * each boot, before the network comes up.
   *
   * Firewall rules do not survive a reboot and UserData runs only at first
   * boot, so without the service an instance is unlocked after a reboot until
   * the association (if any) runs again. On an instance without systemd, the
   * program logs that and carries on.
   *
   * NOTE: the boot service reapplies every lock saved on the instance, so when
   * several locks share an instance and any one of them installs the service,
   * all of them persist across reboots.
   *
   * @default true
   */
  readonly bootPersistence?: boolean;

  /**
   * Embeds the `ip-lockdown` program in the UserData block.
   *
   * The block with the embedded program (gzip and base64) takes about 13.6 KB
   * of the 16 KB that EC2 allows for raw UserData. Set this to false when the
   * machine image already has the program at `/usr/local/sbin/ip-lockdown`.
   * Copy `assets/ip-lockdown.sh` from this package when you build the image.
   * The block then only writes the lock file and applies it. When the program is
   * missing, the block logs an error and exits with status 3, and the rest of the
   * user data still runs. The SSM document always embeds the program, so a
   * scheduled reapply installs or updates it either way.
   *
   * NOTE: when several locks share a UserData object, the program is embedded
   * if any of them embeds it.
   *
   * @default true
   */
  readonly embedProgram?: boolean;

  /**
   * Name of the lock on the instance: its file is `/etc/ip-lockdown/locks.d/<lockName>.conf`
   * and its tag key is `ip-lockdown:<lockName>`.
   *
   * Locks with different names compose on one instance: a connection to an
   * address is allowed only if every lock naming that address allows the user.
   * 1 to 64 characters from `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
   *
   * NOTE: renaming a lock (or, with the default, moving the construct in the
   * tree) leaves the old lock file on running instances, where it still
   * applies. Set a name explicitly to keep it stable across refactoring.
   *
   * @default - derived from the construct's path, unique within the app
   */
  readonly lockName?: string;
}

/**
 * Locks network access to the instance metadata service (or other addresses)
 * to named OS users on EC2 instances, Auto Scaling groups and launch templates.
 *
 * Any process on an instance can call the instance metadata service and take
 * the instance role's credentials. This construct appends a block to each
 * target's UserData that installs the `ip-lockdown` program, saves the lock and
 * applies it with iptables (or nftables) owner rules. Only the allowed users
 * can then connect, and everyone else gets a TCP reset. The block needs no
 * network access at launch. A boot service reapplies the lock at every boot,
 * and an optional SSM State Manager association reapplies it on a schedule.
 *
 * NOTE: Linux targets only. The user data block runs in a subshell, and when
 * it fails, it logs an error and the rest of the user data still runs.
 *
 * NOTE: at first boot the lock takes effect when cloud-init runs the user data,
 * late in the boot. Processes that start earlier can reach the destinations
 * until then. At later boots the boot service applies the lock before the
 * network comes up.
 *
 * @example
 * declare const instance: ec2.Instance;
 * const lockdown = new IpLockdown(this, 'MetadataLockdown', {
 *   allowedUsers: ['root', 'app'],
 *   reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
 * });
 * lockdown.addInstance(instance);
 */
export class IpLockdown extends Construct {
  /**
   * Name of the lock on the instance, as in `/etc/ip-lockdown/locks.d/<lockName>.conf`.
   */
  public readonly lockName: string;

  /**
   * Key of the tag put on every target, with the value `enabled`. The
   * association selects its instances by this tag.
   */
  public readonly tagKey: string;

  /**
   * The SSM Command document that applies this lock, when `reapplySchedule` is set.
   */
  public readonly document?: ssm.CfnDocument;

  /**
   * The State Manager association that runs the document on tagged instances,
   * when `reapplySchedule` is set.
   */
  public readonly association?: ssm.CfnAssociation;

  private readonly lock: LockSpec;
  private readonly attachedTargets = new Set<IConstruct>();

  constructor(scope: Construct, id: string, props: IpLockdownProps = {}) {
    super(scope, id);

    const destinations = parseDestinations(props.destinations ?? METADATA_ADDRESSES, 'destinations');
    const users = validateAccounts(props.allowedUsers ?? ['root'], 'allowedUsers');
    const groups = validateAccounts(props.allowedGroups ?? [], 'allowedGroups');
    const interfaces = validateInterfacePatterns(props.blockForwardedInterfaces ?? [], 'blockForwardedInterfaces');
    this.lockName = validateLockName(props.lockName ?? defaultLockName(this), 'lockName');
    this.tagKey = `${TAG_KEY_PREFIX}${this.lockName}`;

    this.lock = {
      name: this.lockName,
      addresses: destinations.map((destination) => destination.text),
      users,
      groups,
      logBlocked: props.logBlocked ?? false,
      blockForwardedInterfaces: interfaces,
      bootPersistence: props.bootPersistence ?? true,
      embedProgram: props.embedProgram ?? true,
    };

    if (destinations.some((destination) => destination.coversMetadata) && !users.includes('root') && !users.includes('0')) {
      Annotations.of(this).addWarningV2('cdk-ip-lockdown:IpLockdown.metadataWithoutRoot',
        'The lock covers the instance metadata service but allowedUsers does not include root (uid 0). '
        + 'The SSM agent, cloud-init and cfn-signal run as root and need instance metadata. Add \'root\' to allowedUsers unless you mean to cut them off.');
    }

    if (props.reapplySchedule === undefined) {
      Annotations.of(this).addWarningV2('cdk-ip-lockdown:IpLockdown.noReapplySchedule',
        'No reapplySchedule is set, so the lock reaches instances only through UserData, which runs at first boot. '
        + 'Changes to the allow-list or destinations reach running instances only when they are replaced. '
        + 'Set reapplySchedule to push changes through an SSM State Manager association.');
    } else {
      this.document = this.createDocument();
      this.association = this.createAssociation(this.document, props.reapplySchedule);
    }

    for (const instance of props.instances ?? []) {
      this.addInstance(instance);
    }
    for (const group of props.autoScalingGroups ?? []) {
      this.addAutoScalingGroup(group);
    }
    for (const template of props.launchTemplates ?? []) {
      this.addLaunchTemplate(template);
    }
  }

  /**
   * Locks an EC2 instance: appends the lock block to its UserData and tags it.
   *
   * Adding the same instance again does nothing.
   *
   * NOTE: the block goes into the instance's UserData object, so other targets
   * that share that object are locked too.
   *
   * @throws when the instance runs Windows or its UserData cannot take shell commands
   */
  public addInstance(instance: ec2.Instance): void {
    this.attach(instance, () => instanceTarget(instance));
  }

  /**
   * Locks an Auto Scaling group: appends the lock block to the UserData of its
   * launch configuration or launch template, and tags the group so the tag
   * propagates to the instances it launches.
   *
   * Adding the same group again does nothing.
   *
   * @throws when the group runs Windows, or its launch template has no user data or is imported
   */
  public addAutoScalingGroup(autoScalingGroup: autoscaling.AutoScalingGroup): void {
    this.attach(autoScalingGroup, () => autoScalingGroupTarget(autoScalingGroup));
  }

  /**
   * Locks a launch template: appends the lock block to its UserData and adds
   * the tag to the instances it launches.
   *
   * Adding the same template again does nothing.
   *
   * @throws when the template runs Windows or has no user data
   */
  public addLaunchTemplate(launchTemplate: ec2.LaunchTemplate): void {
    this.attach(launchTemplate, () => launchTemplateTarget(launchTemplate));
  }

  /**
   * Locks every EC2 instance and Auto Scaling group under a scope, including
   * those added to the scope after this call, through an Aspect.
   *
   * Windows targets are skipped with a warning. A Linux target that cannot be
   * locked (for example an Auto Scaling group whose launch template has no user
   * data) gets an error annotation, which fails synthesis.
   *
   * NOTE: standalone launch templates are not picked up; add them with
   * `addLaunchTemplate()`.
   */
  public applyToScope(scope: IConstruct): void {
    // The aspect sets tags through the resources' tag managers, never Tags.of():
    // an aspect that an aspect adds is not applied.
    const aspect: IAspect = {
      visit: (node) => this.visitInScope(node),
    };
    Aspects.of(scope).add(aspect, { priority: AspectPriority.MUTATING });
  }

  private visitInScope(node: IConstruct): void {
    let resolve: (() => LockTarget) | undefined;
    if (node instanceof ec2.Instance) {
      resolve = () => instanceTarget(node);
    } else if (node instanceof autoscaling.AutoScalingGroup) {
      resolve = () => autoScalingGroupTarget(node);
    }
    if (resolve === undefined) {
      return;
    }

    try {
      this.attach(node, resolve);
    } catch (error) {
      if (error instanceof UnsupportedTargetError && error.windows) {
        Annotations.of(this).addWarningV2('cdk-ip-lockdown:IpLockdown.windowsTargetSkipped',
          `${error.message} applyToScope skipped it.`);
      } else {
        Annotations.of(node).addError(`IpLockdown '${this.node.path}' (applyToScope) cannot lock this target: ${(error as Error).message}`);
      }
    }
  }

  private attach(construct: IConstruct, resolve: () => LockTarget): void {
    if (this.attachedTargets.has(construct)) {
      return;
    }
    const target = resolve();

    if (!attachLockToUserData(target.userData, this.lock)) {
      throw new Error(`lockName: another IpLockdown named '${this.lockName}' is already attached to the user data of ${target.description}. Give one of them a different lockName.`);
    }
    this.attachedTargets.add(construct);

    target.setTag(this.tagKey, TAG_VALUE);
    addUserDataSizeValidation(target.construct, target.description, target.userData);

    if (this.association !== undefined) {
      this.grantSsmToTarget(target);
    }
  }

  private grantSsmToTarget(target: LockTarget): void {
    if (target.role === undefined) {
      Annotations.of(this).addWarningV2('cdk-ip-lockdown:IpLockdown.ssmRoleNotReachable',
        `The association cannot reach the instances of ${target.description} unless their role allows Systems Manager, and ${target.roleUnreachableReason}. `
        + `Attach the ${SSM_MANAGED_POLICY} managed policy to their role yourself.`);
      return;
    }
    target.role.addManagedPolicy(iam.ManagedPolicy.fromAwsManagedPolicyName(SSM_MANAGED_POLICY));
  }

  private createDocument(): ssm.CfnDocument {
    // The Command document embeds the program and the lock instead of
    // downloading them. The command is then self-contained and versioned with
    // the stack (a changed lock is a new document), and instances need no
    // access to S3 or the internet to run it.
    return new ssm.CfnDocument(this, 'Document', {
      documentType: 'Command',
      content: {
        schemaVersion: '2.2',
        description: `Installs ip-lockdown and applies the lock '${this.lockName}'. Fails when the lock cannot be applied.`,
        mainSteps: [{
          action: 'aws:runShellScript',
          name: 'applyIpLockdown',
          precondition: { StringEquals: ['platformType', 'Linux'] },
          inputs: {
            // Generous: the program waits for other firewall tools' locks.
            timeoutSeconds: '600',
            runCommand: renderLockBlock([{ ...this.lock, embedProgram: true }], FailureMode.EXIT_WITH_STATUS).split('\n'),
          },
        }],
      },
    });
  }

  private createAssociation(document: ssm.CfnDocument, schedule: ReapplySchedule): ssm.CfnAssociation {
    return new ssm.CfnAssociation(this, 'Association', {
      name: document.ref,
      targets: [{ key: `tag:${this.tagKey}`, values: [TAG_VALUE] }],
      scheduleExpression: schedule.expressionString,
      // Run at once on new instances and after every change, not only at the next interval.
      applyOnlyAtCronInterval: false,
      // An unapplied lock leaves the instance role's credentials open to every process.
      complianceSeverity: 'HIGH',
      maxConcurrency: '50%',
      // A failed run leaves the instance's previous rules in place, so stopping
      // early protects nothing. Every instance should run and report.
      maxErrors: '100%',
    });
  }
}

/**
 * Derives a lock name from the construct's path: unique within the app and
 * within the program's name rule.
 */
function defaultLockName(scope: IConstruct): string {
  const name = Names.uniqueResourceName(scope, { maxLength: 64, allowedSpecialCharacters: '_.-' });
  return name.replace(/^[^A-Za-z0-9]+/, '');
}
