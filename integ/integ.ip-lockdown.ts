/**
 * Example and integration test: an instance and an Auto Scaling group under
 * one IpLockdown with a reapply schedule.
 *
 *   npx projen integ          compare with the committed snapshot (no AWS access)
 *   npx projen integ:update   rewrite the snapshot without deploying
 *   npx cdk deploy IpLockdownInteg   deploy it as an example (needs AWS credentials)
 *
 * The assertions run only on a real deployment (`integ-runner` without
 * `--dry-run`, with credentials): they ask Systems Manager to run
 * `ip-lockdown --status` on the instances and check that the live rules match
 * the lock and name the metadata address. They inspect rules and never connect
 * to the metadata service; the tests prove on a real kernel, with a loopback
 * stand-in, that a blocked user is rejected.
 */
import { ExpectedResult, IntegTest, Match } from '@aws-cdk/integ-tests-alpha';
import { App, Duration } from 'aws-cdk-lib';
import { buildIntegStack } from './app';

const app = new App();
const stack = buildIntegStack(app);

const integ = new IntegTest(app, 'IpLockdownIntegTest', {
  testCases: [stack],
  diffAssets: true,
  // A change to the program or the lock changes the instance's UserData and the
  // document's content, and both changes replace the resource. That is how
  // the lock reaches a single instance without a reapply schedule.
  allowDestroy: ['AWS::EC2::Instance', 'AWS::SSM::Document'],
});

// UserData runs after the SSM agent registers, so every command first waits
// for cloud-init to finish.
const waitForUserData = 'cloud-init status --wait >/dev/null';

// `--status` exits 1 when the live rules differ from the saved lock. The
// shell script of AWS-RunShellScript does not stop at a failed command, so
// each check exits itself. The report must list the metadata address.
const probeCommands = [
  waitForUserData,
  'ip-lockdown --status >/tmp/ip-lockdown-status || { cat /tmp/ip-lockdown-status; exit 1; }',
  'cat /tmp/ip-lockdown-status',
  'grep -q "address 169.254.169.254" /tmp/ip-lockdown-status || exit 1',
  'echo LOCK-NAMES-IMDS',
];
const probeTimeout = { totalTimeout: Duration.minutes(10), interval: Duration.seconds(20) };

// SendCommand fails for an instance whose SSM agent has not registered yet.
function waitUntilOnline(filter: { Key: string; Values: string[] }) {
  return integ.assertions.awsApiCall('SSM', 'describeInstanceInformation', { Filters: [filter] })
    .expect(ExpectedResult.objectLike({
      InstanceInformationList: Match.arrayWith([Match.objectLike({ PingStatus: 'Online' })]),
    }))
    .waitForAssertions(probeTimeout);
}

// The single instance: the command succeeds only when the lock is in place.
const instanceProbe = integ.assertions.awsApiCall('SSM', 'sendCommand', {
  DocumentName: 'AWS-RunShellScript',
  InstanceIds: [stack.instance.instanceId],
  Parameters: { commands: probeCommands },
});
waitUntilOnline({ Key: 'InstanceIds', Values: [stack.instance.instanceId] }).next(instanceProbe);
integ.assertions.awsApiCall('SSM', 'getCommandInvocation', {
  CommandId: instanceProbe.getAttString('Command.CommandId'),
  InstanceId: stack.instance.instanceId,
}).expect(ExpectedResult.objectLike({
  Status: 'Success',
  StandardOutputContent: Match.stringLikeRegexp('LOCK-NAMES-IMDS'),
})).waitForAssertions(probeTimeout);

// The group's instance, found by the tag the group propagates.
const groupProbe = integ.assertions.awsApiCall('SSM', 'sendCommand', {
  DocumentName: 'AWS-RunShellScript',
  Targets: [{ Key: 'tag:aws:autoscaling:groupName', Values: [stack.autoScalingGroup.autoScalingGroupName] }],
  Parameters: { commands: probeCommands },
});
waitUntilOnline({ Key: 'tag:aws:autoscaling:groupName', Values: [stack.autoScalingGroup.autoScalingGroupName] }).next(groupProbe);
integ.assertions.awsApiCall('SSM', 'listCommandInvocations', {
  CommandId: groupProbe.getAttString('Command.CommandId'),
  Details: true,
}).expect(ExpectedResult.objectLike({
  CommandInvocations: Match.arrayWith([Match.objectLike({ Status: 'Success' })]),
})).waitForAssertions(probeTimeout);

// The association applies at once to every tagged instance, then on its schedule.
integ.assertions.awsApiCall('SSM', 'describeAssociation', {
  AssociationId: stack.lockdown.association!.attrAssociationId,
}).expect(ExpectedResult.objectLike({
  AssociationDescription: Match.objectLike({ Overview: Match.objectLike({ Status: 'Success' }) }),
})).waitForAssertions(probeTimeout);

app.synth();
