import * as fs from 'fs';
import * as path from 'path';
import { App, Duration, Fn, Stack, StackProps } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { NagSuppressions } from 'cdk-nag';
import { IpLockdown, ReapplySchedule } from '../src';

/** Directory where the example's own UserData commands leave marker files. */
export const MARKER_DIR = '/var/lib/ip-lockdown-example';

/** Users the example lock allows; `app` is created by the UserData before the lock. */
export const DEFAULT_ALLOWED_USERS = ['root', 'app'];

/** Group whose members the example lock allows; created by the UserData before the lock. */
export const ALLOWED_GROUP = 'ops';

/** Options of {@link buildIntegStack}. */
export interface IntegStackOptions {
  /**
   * Addresses to lock.
   *
   * @default - the instance metadata service addresses
   */
  readonly destinations?: string[];

  /**
   * Users allowed to reach the destinations. A test lists a user that does not
   * exist at launch to show that the association picks it up once it exists.
   *
   * @default DEFAULT_ALLOWED_USERS
   */
  readonly allowedUsers?: string[];

  /** @default 'IpLockdownInteg' */
  readonly stackName?: string;
}

/** The example stack: one instance and one Auto Scaling group under one lock. */
export class IpLockdownIntegStack extends Stack {
  public readonly instance: ec2.Instance;
  public readonly launchTemplate: ec2.LaunchTemplate;
  public readonly autoScalingGroup: autoscaling.AutoScalingGroup;
  public readonly lockdown: IpLockdown;

  constructor(scope: App, id: string, options: IntegStackOptions = {}, props: StackProps = {}) {
    super(scope, id, props);

    // Two availability zones named through Fn::GetAZs: the stack stays
    // environment-agnostic and synthesis makes no context lookup.
    const vpc = new ec2.Vpc(this, 'Vpc', {
      availabilityZones: [Fn.select(0, Fn.getAzs()), Fn.select(1, Fn.getAzs())],
      // Public subnets only: instances reach Systems Manager through the
      // internet gateway, so the example needs no NAT gateway.
      natGateways: 0,
      subnetConfiguration: [{ name: 'Public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
      flowLogs: { All: { trafficType: ec2.FlowLogTrafficType.REJECT } },
    });

    // No inbound rule: the example is operated through Systems Manager only.
    const securityGroup = new ec2.SecurityGroup(this, 'InstanceSecurityGroup', {
      vpc,
      description: 'ip-lockdown example instances: no inbound access, outbound to Systems Manager',
      allowAllOutbound: true,
    });

    const ec2Principal = new iam.ServicePrincipal('ec2.amazonaws.com');
    const machineImage = ec2.MachineImage.latestAmazonLinux2023();
    const instanceType = ec2.InstanceType.of(ec2.InstanceClass.T3, ec2.InstanceSize.MICRO);
    const blockDevices: ec2.BlockDevice[] = [{
      deviceName: '/dev/xvda',
      volume: ec2.BlockDeviceVolume.ebs(8, { encrypted: true }),
    }];

    // The instance and the group get their own UserData objects, each with the
    // same commands around the lock block, so each shows the block in place.
    const instanceUserData = ec2.UserData.forLinux();
    addCommandsBeforeLock(instanceUserData);
    this.instance = new ec2.Instance(this, 'Instance', {
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      securityGroup,
      instanceType,
      machineImage,
      blockDevices,
      role: new iam.Role(this, 'InstanceRole', { assumedBy: ec2Principal }),
      userData: instanceUserData,
      requireImdsv2: true,
      detailedMonitoring: true,
    });

    const groupUserData = ec2.UserData.forLinux();
    addCommandsBeforeLock(groupUserData);
    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      machineImage,
      instanceType,
      blockDevices,
      securityGroup,
      role: new iam.Role(this, 'GroupRole', { assumedBy: ec2Principal }),
      userData: groupUserData,
      requireImdsv2: true,
      detailedMonitoring: true,
    });
    this.autoScalingGroup = new autoscaling.AutoScalingGroup(this, 'AutoScalingGroup', {
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      launchTemplate: this.launchTemplate,
      minCapacity: 1,
      maxCapacity: 1,
    });

    this.lockdown = new IpLockdown(this, 'MetadataLockdown', {
      allowedUsers: options.allowedUsers ?? DEFAULT_ALLOWED_USERS,
      allowedGroups: [ALLOWED_GROUP],
      destinations: options.destinations,
      reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
      lockName: 'metadata',
    });
    this.lockdown.addInstance(this.instance);
    this.lockdown.addAutoScalingGroup(this.autoScalingGroup);

    addCommandsAfterLock(instanceUserData);
    addCommandsAfterLock(groupUserData);

    suppressAcceptedFindings(this);
  }
}

/**
 * Creates an App with the feature flags of the example app (the `context` of
 * the root cdk.json), so tests synthesize the stack the way `cdk synth` does.
 */
export function newExampleApp(): App {
  const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8'));
  return new App({ context: cdkJson.context });
}

/**
 * Builds the example stack in `app`; the integ test, the example app and the
 * end-to-end tests all synthesize it through this function.
 */
export function buildIntegStack(app: App, options: IntegStackOptions = {}): IpLockdownIntegStack {
  return new IpLockdownIntegStack(app, options.stackName ?? 'IpLockdownInteg', options);
}

// The user's own commands before the lock: the allowed user and group must
// exist when the lock is applied, or the lock skips them until the next apply.
function addCommandsBeforeLock(userData: ec2.UserData): void {
  userData.addCommands(
    `mkdir -p ${MARKER_DIR}`,
    `getent group ${ALLOWED_GROUP} >/dev/null || groupadd --system ${ALLOWED_GROUP}`,
    'id -u app >/dev/null 2>&1 || useradd --system --no-create-home --shell /sbin/nologin app',
    `echo before-lock >${MARKER_DIR}/before-lock`,
  );
}

// The user's own commands after the lock: they run whatever the lock block did.
function addCommandsAfterLock(userData: ec2.UserData): void {
  userData.addCommands(`echo after-lock >${MARKER_DIR}/after-lock`);
}

// Findings of AwsSolutionsChecks that the example accepts, each with the reason.
function suppressAcceptedFindings(stack: IpLockdownIntegStack): void {
  NagSuppressions.addResourceSuppressions([stack.instance.role, stack.launchTemplate.role!], [
    {
      id: 'AwsSolutions-IAM4',
      reason: 'AmazonSSMManagedInstanceCore is the AWS managed policy that Systems Manager documents for instances it manages; the association needs it.',
      appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore'],
    },
  ]);
  NagSuppressions.addResourceSuppressions(stack.instance, [
    { id: 'AwsSolutions-EC29', reason: 'A short-lived example instance that the test deploys and destroys; termination protection would block the teardown.' },
  ]);
  NagSuppressions.addResourceSuppressions(stack.autoScalingGroup, [
    { id: 'AwsSolutions-AS3', reason: 'A one-instance example group; scaling notifications would have no reader.' },
  ]);
}
