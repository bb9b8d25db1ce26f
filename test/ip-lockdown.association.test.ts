import { App, Duration, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { IpLockdown, ReapplySchedule } from '../src';
import { countEmbeddedPrograms, userDataOf } from './private/template-user-data';

const SSM_CORE_POLICY_ARN = {
  'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iam::aws:policy/AmazonSSMManagedInstanceCore']],
};

function newStack() {
  const app = new App();
  const stack = new Stack(app, 'Stack');
  const vpc = new ec2.Vpc(stack, 'Vpc', {
    maxAzs: 1,
    natGateways: 0,
    subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
  });
  return { stack, vpc };
}

function newInstance(stack: Stack, vpc: ec2.IVpc, id = 'Web', props: Partial<ec2.InstanceProps> = {}): ec2.Instance {
  return new ec2.Instance(stack, id, {
    vpc,
    instanceType: new ec2.InstanceType('t3.micro'),
    machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    ...props,
  });
}

function newGroup(stack: Stack, vpc: ec2.IVpc, id = 'Group'): autoscaling.AutoScalingGroup {
  return new autoscaling.AutoScalingGroup(stack, id, {
    vpc,
    instanceType: new ec2.InstanceType('t3.micro'),
    machineImage: ec2.MachineImage.latestAmazonLinux2023(),
  });
}

function documentCommands(template: Template): string[] {
  const documents = Object.values(template.findResources('AWS::SSM::Document'));
  expect(documents).toHaveLength(1);
  return documents[0].Properties.Content.mainSteps[0].inputs.runCommand;
}

describe('reapply association', () => {
  test('creates one association for many targets', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const first = newInstance(stack, vpc, 'First');
    const second = newInstance(stack, vpc, 'Second');
    const group = newGroup(stack, vpc);

    // WHEN
    const lock = new IpLockdown(stack, 'Lock', {
      lockName: 'imds',
      reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
      instances: [first, second],
      autoScalingGroups: [group],
    });

    // THEN
    const template = Template.fromStack(stack);
    template.resourceCountIs('AWS::SSM::Document', 1);
    template.resourceCountIs('AWS::SSM::Association', 1);
    template.hasResourceProperties('AWS::SSM::Document', {
      DocumentType: 'Command',
      Content: {
        schemaVersion: '2.2',
        description: Match.stringLikeRegexp('imds'),
        mainSteps: [{
          action: 'aws:runShellScript',
          name: 'applyIpLockdown',
          precondition: { StringEquals: ['platformType', 'Linux'] },
          inputs: { timeoutSeconds: '600', runCommand: Match.anyValue() },
        }],
      },
    });
    template.hasResourceProperties('AWS::SSM::Association', {
      Name: { Ref: stack.getLogicalId(lock.document!) },
      Targets: [{ Key: 'tag:ip-lockdown:imds', Values: ['enabled'] }],
      ScheduleExpression: 'rate(30 minutes)',
      ApplyOnlyAtCronInterval: false,
      ComplianceSeverity: 'HIGH',
      MaxConcurrency: '50%',
      MaxErrors: '100%',
    });
    expect(lock.association).toBeDefined();
  });

  test('document repeats the user data block', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', {
      lockName: 'imds',
      reapplySchedule: ReapplySchedule.cron('0 2 ? * SUN *'),
      instances: [instance],
    });

    // THEN
    const template = Template.fromStack(stack);
    const commands = documentCommands(template);
    const userDataLines = userDataOf(template, 'AWS::EC2::Instance').split('\n');
    expect(userDataLines[0]).toBe('#!/bin/bash');
    expect(userDataLines[userDataLines.length - 1]).toMatch(/^\) \|\| echo "ip-lockdown: ERROR: /);
    expect(commands[commands.length - 1]).toBe(')');
    expect(commands.slice(0, -1)).toEqual(userDataLines.slice(1, -1));
    template.hasResourceProperties('AWS::SSM::Association', { ScheduleExpression: 'cron(0 2 ? * SUN *)' });
  });

  test('document embeds the program when user data does not', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    new IpLockdown(stack, 'Lock', {
      lockName: 'imds',
      embedProgram: false,
      reapplySchedule: ReapplySchedule.rate(Duration.hours(1)),
      instances: [instance],
    });

    // THEN
    const template = Template.fromStack(stack);
    const commands = documentCommands(template);
    expect(countEmbeddedPrograms(commands.join('\n'))).toBe(1);
    expect(countEmbeddedPrograms(userDataOf(template, 'AWS::EC2::Instance'))).toBe(0);
  });

  test('writes only its own lock into the document', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    new IpLockdown(stack, 'Other', { lockName: 'other', destinations: ['10.0.0.1'], instances: [instance] });

    // WHEN
    new IpLockdown(stack, 'Lock', {
      lockName: 'imds',
      reapplySchedule: ReapplySchedule.rate(Duration.hours(1)),
      instances: [instance],
    });

    // THEN
    const commands = documentCommands(Template.fromStack(stack)).join('\n');
    expect(commands).toContain('locks.d/imds.conf.new');
    expect(commands).not.toContain('other.conf');
  });

  test('tags every kind of target for the association', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);
    const group = newGroup(stack, vpc);
    const launchTemplate = new ec2.LaunchTemplate(stack, 'Template', {
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
      userData: ec2.UserData.forLinux(),
    });

    // WHEN
    new IpLockdown(stack, 'Lock', {
      lockName: 'imds',
      reapplySchedule: ReapplySchedule.rate(Duration.days(1)),
      instances: [instance],
      autoScalingGroups: [group],
      launchTemplates: [launchTemplate],
    });

    // THEN
    const template = Template.fromStack(stack);
    template.hasResourceProperties('AWS::EC2::Instance', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled' }]),
    });
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled', PropagateAtLaunch: true }]),
    });
    template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        TagSpecifications: Match.arrayWith([{
          ResourceType: 'instance',
          Tags: Match.arrayWith([{ Key: 'ip-lockdown:imds', Value: 'enabled' }]),
        }]),
      }),
    });
    template.hasResourceProperties('AWS::SSM::Association', { ScheduleExpression: 'rate(1 day)' });
  });

  test('creates no ssm resources without a schedule', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instance = newInstance(stack, vpc);

    // WHEN
    const lock = new IpLockdown(stack, 'Lock', { instances: [instance] });

    // THEN
    const template = Template.fromStack(stack);
    template.resourceCountIs('AWS::SSM::Document', 0);
    template.resourceCountIs('AWS::SSM::Association', 0);
    expect(lock.document).toBeUndefined();
    expect(lock.association).toBeUndefined();
  });
});

describe('ssm permissions', () => {
  test('adds ssm policy to target roles', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const instanceRole = new iam.Role(stack, 'InstanceRole', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
    const groupRole = new iam.Role(stack, 'GroupRole', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
    const instance = newInstance(stack, vpc, 'Web', { role: instanceRole });
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', {
      vpc,
      role: groupRole,
      instanceType: new ec2.InstanceType('t3.micro'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
    });

    // WHEN
    new IpLockdown(stack, 'Lock', {
      reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
      instances: [instance],
      autoScalingGroups: [group],
    });

    // THEN
    const template = Template.fromStack(stack);
    for (const role of [instanceRole, groupRole]) {
      expect(template.toJSON().Resources[stack.getLogicalId(role.node.defaultChild as iam.CfnRole)].Properties.ManagedPolicyArns)
        .toEqual([SSM_CORE_POLICY_ARN]);
    }
  });

  test('adds ssm policy once per role', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
    const instance = newInstance(stack, vpc, 'Web', { role });

    // WHEN
    new IpLockdown(stack, 'First', { lockName: 'first', reapplySchedule: ReapplySchedule.rate(Duration.hours(2)), instances: [instance] });
    new IpLockdown(stack, 'Second', { lockName: 'second', reapplySchedule: ReapplySchedule.rate(Duration.hours(2)), instances: [instance] });

    // THEN
    Template.fromStack(stack).hasResourceProperties('AWS::IAM::Role', { ManagedPolicyArns: [SSM_CORE_POLICY_ARN] });
  });

  test('adds ssm policy to template role', () => {
    // GIVEN
    const { stack } = newStack();
    const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com') });
    const launchTemplate = new ec2.LaunchTemplate(stack, 'Template', { role, userData: ec2.UserData.forLinux() });

    // WHEN
    new IpLockdown(stack, 'Lock', { reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)), launchTemplates: [launchTemplate] });

    // THEN
    Template.fromStack(stack).hasResourceProperties('AWS::IAM::Role', { ManagedPolicyArns: [SSM_CORE_POLICY_ARN] });
    Annotations.fromStack(stack).hasNoWarning('/Stack/Lock', Match.stringLikeRegexp('ssmRoleNotReachable'));
  });

  test('warns about a launch template without a role', () => {
    // GIVEN
    const { stack } = newStack();
    const launchTemplate = new ec2.LaunchTemplate(stack, 'Template', { userData: ec2.UserData.forLinux() });

    // WHEN
    new IpLockdown(stack, 'Lock', { reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)), launchTemplates: [launchTemplate] });

    // THEN
    Annotations.fromStack(stack).hasWarning('/Stack/Lock',
      Match.stringLikeRegexp("launch template 'Stack/Template'.*it has no role.*AmazonSSMManagedInstanceCore.*ack: cdk-ip-lockdown:IpLockdown.ssmRoleNotReachable"));
  });

  test('warns about an imported instance role', () => {
    // GIVEN
    const { stack, vpc } = newStack();
    const role = iam.Role.fromRoleArn(stack, 'Imported', 'arn:aws:iam::123456789012:role/web', { mutable: true });
    const instance = newInstance(stack, vpc, 'Web', { role });

    // WHEN
    new IpLockdown(stack, 'Lock', { reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)), instances: [instance] });

    // THEN
    Annotations.fromStack(stack).hasWarning('/Stack/Lock',
      Match.stringLikeRegexp("instance 'Stack/Web'.*role 'Stack/Imported' is imported.*ack: cdk-ip-lockdown:IpLockdown.ssmRoleNotReachable"));
  });

  test('skips role warnings without schedule', () => {
    // GIVEN
    const { stack } = newStack();
    const launchTemplate = new ec2.LaunchTemplate(stack, 'Template', { userData: ec2.UserData.forLinux() });

    // WHEN
    new IpLockdown(stack, 'Lock', { launchTemplates: [launchTemplate] });

    // THEN
    Annotations.fromStack(stack).hasNoWarning('/Stack/Lock', Match.stringLikeRegexp('ssmRoleNotReachable'));
  });
});
