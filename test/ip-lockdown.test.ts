import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { App, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { IpLockdown } from '../src';
import { countEmbeddedPrograms, embeddedProgramBase64, userDataOf } from './private/template-user-data';

const PROGRAM_SOURCE = path.join(__dirname, '..', 'assets', 'ip-lockdown.sh');
const ASG_LAUNCH_TEMPLATE_FLAG = '@aws-cdk/aws-autoscaling:generateLaunchTemplateInsteadOfLaunchConfig';

function newStack(context: Record<string, unknown> = {}) {
  const app = new App({ context });
  const stack = new Stack(app, 'Stack');
  const vpc = new ec2.Vpc(stack, 'Vpc', {
    maxAzs: 1,
    natGateways: 0,
    subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
  });
  return { app, stack, vpc };
}

function newInstance(stack: Stack, vpc: ec2.IVpc, id = 'Web', props: Partial<ec2.InstanceProps> = {}): ec2.Instance {
  return new ec2.Instance(stack, id, {
    vpc,
    instanceType: new ec2.InstanceType('t3.micro'),
    machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    ...props,
  });
}

function newLaunchTemplate(stack: Stack, id: string, props: ec2.LaunchTemplateProps = {}): ec2.LaunchTemplate {
  return new ec2.LaunchTemplate(stack, id, {
    instanceType: new ec2.InstanceType('t3.micro'),
    machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    ...props,
  });
}

/** Strips comment lines and indentation from the program, independently of the construct's code. */
function expectedStrippedProgram(): string {
  return fs.readFileSync(PROGRAM_SOURCE, 'utf8')
    .split('\n')
    .filter((line, index) => index === 0 || !/^[ \t]*#/.test(line))
    .map((line) => line.replace(/^[ \t]+/, ''))
    .join('\n');
}

function decodeProgram(base64Lines: string[]): string {
  return zlib.gunzipSync(Buffer.from(base64Lines.join(''), 'base64')).toString('utf8');
}

describe('user data block', () => {
  test('appends the exact lock block to an instance', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', allowedUsers: ['root', 'app'], instances: [instance] });

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    const program = embeddedProgramBase64(script);
    expect(script).toBe([
      '#!/bin/bash',
      '# cdk-ip-lockdown: imds',
      '(',
      'umask 022',
      'mkdir -p /usr/local/sbin /etc/ip-lockdown/locks.d || exit 1',
      'base64 -d <<\'IP_LOCKDOWN_PROGRAM\' | gzip -dc >/usr/local/sbin/ip-lockdown.new || exit 1',
      ...program,
      'IP_LOCKDOWN_PROGRAM',
      'chmod 0755 /usr/local/sbin/ip-lockdown.new || exit 1',
      'mv -f /usr/local/sbin/ip-lockdown.new /usr/local/sbin/ip-lockdown || exit 1',
      'cat >/etc/ip-lockdown/locks.d/imds.conf.new <<\'IP_LOCKDOWN_LOCK\' || exit 1',
      'address 169.254.169.254',
      'address fd00:ec2::254',
      'user root',
      'user app',
      'IP_LOCKDOWN_LOCK',
      'mv -f /etc/ip-lockdown/locks.d/imds.conf.new /etc/ip-lockdown/locks.d/imds.conf || exit 1',
      '/usr/local/sbin/ip-lockdown --install-boot-service || exit 1',
      '/usr/local/sbin/ip-lockdown --apply',
      ') || echo "ip-lockdown: ERROR: lock setup failed with exit status $?, see the messages above; the remaining user data still runs" >&2',
    ].join('\n'));
  });

  test('embeds the program stripped of comments and indentation', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    const program = embeddedProgramBase64(userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance'));
    const decoded = decodeProgram(program);
    expect(decoded).toBe(expectedStrippedProgram());
    expect(decoded.startsWith('#!/bin/sh\n')).toBe(true);
    expect(program.every((line) => line.length <= 76)).toBe(true);
  });

  test('embeds a program that sh still parses', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    const decoded = decodeProgram(embeddedProgramBase64(userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance')));
    const parsed = spawnSync('/bin/sh', ['-n'], { input: decoded, encoding: 'utf8' });
    expect(parsed.stderr).toBe('');
    expect(parsed.status).toBe(0);
  });

  test('renders user data that sh and bash parse', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    instance.addUserData('echo before');

    // WHEN
    new IpLockdown(stack, 'Lock', {
      instances: [instance],
      allowedGroups: ['ops'],
      blockForwardedInterfaces: ['docker0'],
      logBlocked: true,
    });
    instance.addUserData('echo after');

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    for (const shell of ['/bin/sh', 'bash']) {
      const parsed = spawnSync(shell, ['-n'], { input: script, encoding: 'utf8' });
      expect(parsed.stderr).toBe('');
      expect(parsed.status).toBe(0);
    }
  });

  test('writes every option to the lock file', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', {
      lockName: 'custom',
      destinations: ['10.0.0.0/8', '192.0.2.10', '2001:db8::1'],
      allowedUsers: ['root', '1001'],
      allowedGroups: ['ops', '2000'],
      logBlocked: true,
      blockForwardedInterfaces: ['docker0', 'br-+'],
      instances: [instance],
    });

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    expect(script).toContain([
      'cat >/etc/ip-lockdown/locks.d/custom.conf.new <<\'IP_LOCKDOWN_LOCK\' || exit 1',
      'address 10.0.0.0/8',
      'address 192.0.2.10',
      'address 2001:db8::1',
      'user root',
      'user 1001',
      'group ops',
      'group 2000',
      'log-blocked',
      'block-forwarded docker0',
      'block-forwarded br-+',
      'IP_LOCKDOWN_LOCK',
    ].join('\n'));
  });

  test('skips boot service without persistence', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', { bootPersistence: false, instances: [instance] });

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    expect(script).not.toContain('--install-boot-service');
    expect(script).toContain('/usr/local/sbin/ip-lockdown --apply');
  });

  test('leaves the program out when embedProgram is false', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', embedProgram: false, instances: [instance] });

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    expect(countEmbeddedPrograms(script)).toBe(0);
    expect(script).toContain('mkdir -p /etc/ip-lockdown/locks.d || exit 1\n[ -x /usr/local/sbin/ip-lockdown ] || {');
    expect(script).toContain('cat >/etc/ip-lockdown/locks.d/imds.conf.new');
    expect(script).toContain('/usr/local/sbin/ip-lockdown --apply');
    expect(Buffer.byteLength(script)).toBeLessThan(1024);
  });

  test('embeds the program when any lock on the user data does', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Baked', { lockName: 'baked', embedProgram: false, instances: [instance] });
    new IpLockdown(stack, 'Embedded', { lockName: 'embedded', destinations: ['10.1.2.3'], instances: [instance] });

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    expect(countEmbeddedPrograms(script)).toBe(1);
    expect(script).not.toContain('[ -x /usr/local/sbin/ip-lockdown ]');
  });

  test('keeps surrounding user commands in order', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    instance.addUserData('echo before');

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });
    instance.addUserData('echo after');

    // THEN
    const lines = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance').split('\n');
    const before = lines.indexOf('echo before');
    const open = lines.indexOf('(');
    const close = lines.findIndex((line) => line.startsWith(') || echo'));
    const after = lines.indexOf('echo after');
    expect(before).toBe(1);
    expect(open).toBe(before + 2);
    expect(after).toBe(close + 1);
    expect(after).toBe(lines.length - 1);
  });

  test('composes two locks in one block', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Metadata', { lockName: 'metadata', instances: [instance] });
    new IpLockdown(stack, 'Internal', { lockName: 'internal', destinations: ['10.1.2.3'], allowedUsers: ['app'], instances: [instance] });

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    expect(countEmbeddedPrograms(script)).toBe(1);
    expect(script).toContain('# cdk-ip-lockdown: metadata, internal');
    expect(script).toContain('cat >/etc/ip-lockdown/locks.d/metadata.conf.new');
    expect(script).toContain('cat >/etc/ip-lockdown/locks.d/internal.conf.new <<\'IP_LOCKDOWN_LOCK\' || exit 1\naddress 10.1.2.3\nuser app\nIP_LOCKDOWN_LOCK');
    expect(script.match(/ip-lockdown --apply/g)).toHaveLength(1);
    expect(script.match(/--install-boot-service/g)).toHaveLength(1);
  });

  test('embeds program once for shared user data', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const userData = ec2.UserData.forLinux();
    const first = newInstance(stack, vpc, 'First', { userData });
    const second = newInstance(stack, vpc, 'Second', { userData });

    // WHEN
    const lock = new IpLockdown(stack, 'Lock', { instances: [first] });
    lock.addInstance(second);
    lock.addInstance(second);

    // THEN
    const script = stack.resolve(userData.render());
    expect(countEmbeddedPrograms(script)).toBe(1);
    expect(script.match(/^\($/gm)).toHaveLength(1);
  });

  test('throws for duplicate lock names', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    new IpLockdown(stack, 'First', { lockName: 'same', instances: [instance] });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Second', { lockName: 'same', instances: [instance] }))
      .toThrow(/lockName: another IpLockdown named 'same'/);
  });

  test('derives lock name from path', () => {
    // GIVEN
    const { stack } = newStack();

    // WHEN
    const lock = new IpLockdown(stack, 'Metadata Lock!', {});

    // THEN
    expect(lock.lockName).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);
    expect(lock.lockName).toMatch(/^StackMetadataLock/);
    expect(lock.tagKey).toBe(`ip-lockdown:${lock.lockName}`);
  });

  test('derives different lock names for different constructs', () => {
    // GIVEN
    const { stack } = newStack();

    // WHEN
    const first = new IpLockdown(stack, 'A'.repeat(100), {});
    const second = new IpLockdown(stack, `${'A'.repeat(100)}B`, {});

    // THEN
    expect(first.lockName.length).toBeLessThanOrEqual(64);
    expect(second.lockName.length).toBeLessThanOrEqual(64);
    expect(first.lockName).not.toBe(second.lockName);
  });
});

describe('targets', () => {
  test('tags an instance', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', instances: [instance] });

    // THEN
    Template.fromStack(stack).hasResourceProperties('AWS::EC2::Instance', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled' }]),
    });
  });

  test('locks group from machine image', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', {
      vpc,
      instanceType: new ec2.InstanceType('t3.micro'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    });

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', autoScalingGroups: [group] });

    // THEN
    const template = Template.fromStack(stack);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::AutoScaling::LaunchConfiguration'))).toBe(1);
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled', PropagateAtLaunch: true }]),
    });
  });

  test('locks group with generated launch template', () => {
    // GIVEN
    const { stack, vpc } = newStack({ [ASG_LAUNCH_TEMPLATE_FLAG]: true });
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', {
      vpc,
      instanceType: new ec2.InstanceType('t3.micro'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    });

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', autoScalingGroups: [group] });

    // THEN
    const template = Template.fromStack(stack);
    template.resourceCountIs('AWS::AutoScaling::LaunchConfiguration', 0);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::EC2::LaunchTemplate'))).toBe(1);
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled', PropagateAtLaunch: true }]),
    });
  });

  test('locks group on launch template', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const launchTemplate = newLaunchTemplate(stack, 'Template', { userData: ec2.UserData.forLinux() });
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', { vpc, launchTemplate });

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', autoScalingGroups: [group] });

    // THEN
    const template = Template.fromStack(stack);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::EC2::LaunchTemplate'))).toBe(1);
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled', PropagateAtLaunch: true }]),
    });
  });

  test('throws for group template without user data', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const launchTemplate = newLaunchTemplate(stack, 'Template');
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', { vpc, launchTemplate });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { autoScalingGroups: [group] }))
      .toThrow(/Auto Scaling group 'Stack\/Group' uses a launch template that has no user data.*userData: ec2\.UserData\.forLinux\(\)/);
  });

  test('throws for group on imported template', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const launchTemplate = ec2.LaunchTemplate.fromLaunchTemplateAttributes(stack, 'Imported', { launchTemplateId: 'lt-0123456789abcdef0' });
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', { vpc, launchTemplate });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { autoScalingGroups: [group] })).toThrow(/has no user data or is imported/);
  });

  test('locks a launch template with user data', () => {
    // GIVEN
    const { stack } = newStack();
    const launchTemplate = newLaunchTemplate(stack, 'Template', { userData: ec2.UserData.forLinux() });

    // WHEN
    new IpLockdown(stack, 'Lock', { lockName: 'imds', launchTemplates: [launchTemplate] });

    // THEN
    const template = Template.fromStack(stack);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::EC2::LaunchTemplate'))).toBe(1);
    template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        TagSpecifications: Match.arrayWith([{
          ResourceType: 'instance',
          Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled' }]),
        }]),
      }),
    });
  });

  test('throws for a launch template without user data', () => {
    // GIVEN
    const { stack } = newStack();
    const launchTemplate = newLaunchTemplate(stack, 'Template');

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { launchTemplates: [launchTemplate] }))
      .toThrow(/launch template 'Stack\/Template' has no user data.*userData: ec2\.UserData\.forLinux\(\)/);
  });

  test('throws for a windows instance', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc, 'Windows', {
      machineImage: ec2.MachineImage.latestWindows(ec2.WindowsVersion.WINDOWS_SERVER_2022_ENGLISH_FULL_BASE),
    });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { instances: [instance] })).toThrow(/runs Windows. IpLockdown supports Linux targets only/);
  });

  test('throws for a windows auto scaling group', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', {
      vpc,
      instanceType: new ec2.InstanceType('t3.micro'),
      machineImage: ec2.MachineImage.latestWindows(ec2.WindowsVersion.WINDOWS_SERVER_2022_ENGLISH_FULL_BASE),
    });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { autoScalingGroups: [group] })).toThrow(/Linux targets only/);
  });

  test('throws for windows template user data', () => {
    // GIVEN
    const { stack } = newStack();
    const launchTemplate = new ec2.LaunchTemplate(stack, 'Template', { userData: ec2.UserData.forWindows() });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { launchTemplates: [launchTemplate] })).toThrow(/has Windows user data/);
  });

  test('throws for custom user data', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc, 'Web', { userData: ec2.UserData.custom('#cloud-config\npackages: [jq]') });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { instances: [instance] })).toThrow(/UserData\.custom.*ec2\.UserData\.forLinux\(\)/);
  });

  test('throws for multipart without default part', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const userData = new ec2.MultipartUserData();
    userData.addPart(ec2.MultipartBody.fromRawBody({ contentType: 'text/cloud-config', body: 'packages: [jq]' }));
    const instance = newInstance(stack, vpc, 'Web', { userData });

    // WHEN / THEN
    expect(() => new IpLockdown(stack, 'Lock', { instances: [instance] })).toThrow(/MultipartUserData without a default part/);
  });

  test('locks multipart user data through its default part', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const shell = ec2.UserData.forLinux();
    const userData = new ec2.MultipartUserData();
    userData.addUserDataPart(shell, ec2.MultipartBody.SHELL_SCRIPT, true);
    const instance = newInstance(stack, vpc, 'Web', { userData });

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    expect(countEmbeddedPrograms(stack.resolve(shell.render()))).toBe(1);
  });

  test('throws for oversized user data', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    instance.addUserData(`echo ${'x'.repeat(16_000)}`);

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    expect(() => Template.fromStack(stack))
      .toThrow(/The user data of instance 'Stack\/Web' is \d+ bytes \(the IpLockdown block takes \d+ of them\), more than the 16384 bytes EC2 accepts. Shorten your own user data .* set embedProgram: false/);
  });

  test('accepts exactly 16384 user data bytes', () => {
    // GIVEN
    const stackWithComment = (length: number) => {
      const { stack, vpc } = newStack();
      const instance = newInstance(stack, vpc);
      new IpLockdown(stack, 'Lock', { lockName: 'imds', instances: [instance] });
      instance.addUserData(`#${'x'.repeat(length - 1)}`);
      return stack;
    };
    const baseline = Buffer.byteLength(userDataOf(Template.fromStack(stackWithComment(1)), 'AWS::EC2::Instance'));
    const fitting = 16_384 - baseline + 1;

    // WHEN
    const atLimit = stackWithComment(fitting);
    const overLimit = stackWithComment(fitting + 1);

    // THEN
    expect(Buffer.byteLength(userDataOf(Template.fromStack(atLimit), 'AWS::EC2::Instance'))).toBe(16_384);
    expect(() => Template.fromStack(overLimit)).toThrow(/is 16385 bytes/);
  });

  test('accepts user data that fits', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    instance.addUserData(`echo ${'x'.repeat(1_000)}`);

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    expect(() => Template.fromStack(stack)).not.toThrow();
  });
});

describe('applyToScope', () => {
  test('locks instances and groups in scope', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const lock = new IpLockdown(stack, 'Lock', { lockName: 'imds' });
    newInstance(stack, vpc);
    new autoscaling.AutoScalingGroup(stack, 'Group', {
      vpc,
      instanceType: new ec2.InstanceType('t3.micro'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    });

    // WHEN
    lock.applyToScope(stack);

    // THEN
    const template = Template.fromStack(stack);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::EC2::Instance'))).toBe(1);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::AutoScaling::LaunchConfiguration'))).toBe(1);
    template.hasResourceProperties('AWS::EC2::Instance', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled' }]),
    });
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled', PropagateAtLaunch: true }]),
    });
  });

  test('locks a target added after the call', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const lock = new IpLockdown(stack, 'Lock', {});

    // WHEN
    lock.applyToScope(stack);
    newInstance(stack, vpc);

    // THEN
    expect(countEmbeddedPrograms(userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance'))).toBe(1);
  });

  test('does not lock targets outside the scope', () => {
    // GIVEN
    const { app, stack, vpc } = newStack();
    const other = new Stack(app, 'Other');
    const otherVpc = new ec2.Vpc(other, 'Vpc', { maxAzs: 1, natGateways: 0, subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }] });
    newInstance(other, otherVpc);
    newInstance(stack, vpc);
    const lock = new IpLockdown(stack, 'Lock', {});

    // WHEN
    lock.applyToScope(stack);

    // THEN
    expect(countEmbeddedPrograms(userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance'))).toBe(1);
    expect(countEmbeddedPrograms(userDataOf(Template.fromStack(other), 'AWS::EC2::Instance'))).toBe(0);
  });

  test('ignores a target added twice', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    const lock = new IpLockdown(stack, 'Lock', { instances: [instance] });

    // WHEN
    lock.applyToScope(stack);

    // THEN
    const script = userDataOf(Template.fromStack(stack), 'AWS::EC2::Instance');
    expect(countEmbeddedPrograms(script)).toBe(1);
    expect(script.match(/^cat >\/etc\/ip-lockdown\/locks\.d\//gm)).toHaveLength(1);
  });

  test('skips a windows instance with a warning', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    newInstance(stack, vpc, 'Windows', {
      machineImage: ec2.MachineImage.latestWindows(ec2.WindowsVersion.WINDOWS_SERVER_2022_ENGLISH_FULL_BASE),
    });
    const lock = new IpLockdown(stack, 'Lock', {});

    // WHEN
    lock.applyToScope(stack);

    // THEN
    const template = Template.fromStack(stack);
    expect(JSON.stringify(template.toJSON())).not.toContain('IP_LOCKDOWN_PROGRAM');
    Annotations.fromStack(stack).hasWarning('/Stack/Lock', Match.stringLikeRegexp("instance 'Stack/Windows' runs Windows.*applyToScope skipped it"));
  });

  test('reports unlockable group as error', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const launchTemplate = newLaunchTemplate(stack, 'Template');
    new autoscaling.AutoScalingGroup(stack, 'Group', { vpc, launchTemplate });
    const lock = new IpLockdown(stack, 'Lock', {});

    // WHEN
    lock.applyToScope(stack);

    // THEN
    Annotations.fromStack(stack).hasError('/Stack/Group', Match.stringLikeRegexp('cannot lock this target.*has no user data'));
  });
});

describe('instance role', () => {
  test('keeps the role unchanged without a schedule', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
    const instance = newInstance(stack, vpc, 'Web', { role });

    // WHEN
    new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    Template.fromStack(stack).hasResourceProperties('AWS::IAM::Role', { ManagedPolicyArns: Match.absent() });
  });
});
