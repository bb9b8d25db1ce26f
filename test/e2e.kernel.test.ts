/**
 * End to end on a real kernel. The tests synthesize the example stack and take
 * two scripts out of the CloudFormation template: the UserData that EC2 would
 * run, and the command of the association's SSM document. They run both as
 * root in a sandbox (network namespace plus throwaway root). A loopback HTTP
 * server replaces the metadata service, so no packet leaves the namespace.
 */
import { Template } from 'aws-cdk-lib/assertions';
import { ALLOWED_GROUP, buildIntegStack, DEFAULT_ALLOWED_USERS, MARKER_DIR, newExampleApp } from '../integ/app';
import { BACKENDS, describeKernel, LOCKED_V4, RunResult, Sandbox } from './helpers/sandbox';

jest.setTimeout(180_000);

const PORT = 8080;
const URL = `http://${LOCKED_V4}:${PORT}/`;
const TAG = { Key: 'ip-lockdown:metadata', Value: 'enabled' };

// A rejected connection gets a reset at once; the connect timeout is far
// longer, so a client that hangs instead of failing cannot pass.
const CONNECT_TIMEOUT_SEC = 20;
const FAST_FAIL_MS = 5000;

// The variant lists a user that does not exist at launch, to show that the
// association picks the user up once it exists.
const LATE_USER = 'late';

/** Where cloud-init keeps the UserData script it runs, and where the SSM agent writes a command's script. */
const USER_DATA_PATH = '/var/lib/cloud/instance/scripts/part-001';
const SSM_SCRIPT_PATH = '/var/lib/amazon/ssm/instance/document/orchestration/command/awsrunShellScript/applyIpLockdown/_script.sh';

type Resources = Record<string, { Type: string; Properties: any }>;

interface SynthesizedStack {
  readonly resources: Resources;
  readonly instanceUserData: string;
  readonly launchTemplateUserData: string;
  readonly documentCommand: string;
}

/**
 * Replaces the CloudFormation intrinsics that UserData can contain with what
 * they stand for: Fn::Join is joined, and references become placeholder text
 * (the lock block contains none, but the user's own commands may).
 */
function resolveIntrinsics(value: unknown): string {
  if (typeof value === 'string') {
    return value;
  }
  const object = value as Record<string, any>;
  if (object['Fn::Join'] !== undefined) {
    const [separator, parts] = object['Fn::Join'] as [string, unknown[]];
    return parts.map(resolveIntrinsics).join(separator);
  }
  if (object.Ref !== undefined) {
    return `PLACEHOLDER-REF-${object.Ref}`;
  }
  if (object['Fn::GetAtt'] !== undefined) {
    return `PLACEHOLDER-GETATT-${(object['Fn::GetAtt'] as string[]).join('.')}`;
  }
  throw new Error(`unsupported intrinsic in user data: ${JSON.stringify(value)}`);
}

/** Returns the script that EC2 runs from a UserData property (`Fn::Base64` of the script). */
function userDataScript(userData: any): string {
  expect(Object.keys(userData)).toEqual(['Fn::Base64']);
  return resolveIntrinsics(userData['Fn::Base64']);
}

function onlyResource(resources: Resources, type: string): [string, Resources[string]] {
  const matches = Object.entries(resources).filter(([, resource]) => resource.Type === type);
  expect(matches.map(([id]) => id)).toHaveLength(1);
  return matches[0];
}

function synthesize(options: { destinations?: string[]; allowedUsers?: string[] }): SynthesizedStack {
  const stack = buildIntegStack(newExampleApp(), options);
  const resources: Resources = Template.fromStack(stack).toJSON().Resources;

  const [, instance] = onlyResource(resources, 'AWS::EC2::Instance');
  const [, group] = onlyResource(resources, 'AWS::AutoScaling::AutoScalingGroup');
  const launchTemplate = resources[group.Properties.LaunchTemplate.LaunchTemplateId.Ref];
  expect(launchTemplate.Type).toBe('AWS::EC2::LaunchTemplate');

  const [, document] = onlyResource(resources, 'AWS::SSM::Document');
  const steps = document.Properties.Content.mainSteps;
  expect(steps).toHaveLength(1);
  expect(steps[0].action).toBe('aws:runShellScript');

  return {
    resources,
    instanceUserData: userDataScript(instance.Properties.UserData),
    launchTemplateUserData: userDataScript(launchTemplate.Properties.LaunchTemplateData.UserData),
    documentCommand: (steps[0].inputs.runCommand as unknown[]).map(resolveIntrinsics).join('\n'),
  };
}

function describeRun(description: string, result: RunResult): string {
  return `${description} exited ${result.status} (signal ${result.signal})\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

/** Runs the UserData as cloud-init does: an executable file, run as root with its shebang. */
function runUserData(sandbox: Sandbox, script: string): RunResult {
  sandbox.writeFile(USER_DATA_PATH, script, 0o700);
  return sandbox.run([USER_DATA_PATH], { timeoutMs: 120_000 });
}

/** Runs the document's command as the SSM agent does on Linux: a script file run by /bin/sh. */
function runDocumentCommand(sandbox: Sandbox, command: string): RunResult {
  sandbox.writeFile(SSM_SCRIPT_PATH, command, 0o700);
  return sandbox.run(['/bin/sh', SSM_SCRIPT_PATH], { timeoutMs: 120_000 });
}

/** Deletes every rule and chain, as `iptables -F; iptables -X` or `nft flush ruleset` by hand would. */
function flushFirewall(sandbox: Sandbox): void {
  const flush = sandbox.backend === 'iptables-legacy'
    ? 'for t in iptables ip6tables; do $t -F && $t -X || exit 1; done; nft flush ruleset'
    : 'nft flush ruleset';
  const result = sandbox.sh(flush);
  expect(describeRun('flushing the firewall', result)).toMatch(/exited 0 /);
}

/** Empties the firewall and /run (a tmpfs on a real host), as a reboot does. */
function simulateReboot(sandbox: Sandbox): void {
  flushFirewall(sandbox);
  const result = sandbox.sh('rm -rf /run/ip-lockdown /run/ip-lockdown.lock');
  expect(describeRun('emptying /run', result)).toMatch(/exited 0 /);
}

/** Returns the whole ruleset, without counters and the save tools' timestamp comments. */
function rulesetWithoutCounters(sandbox: Sandbox): string {
  const script = sandbox.backend === 'nft-only'
    ? 'nft list ruleset'
    : 'iptables-save && ip6tables-save && nft list ruleset';
  const result = sandbox.sh(script);
  expect(describeRun('saving the ruleset', result)).toMatch(/exited 0 /);
  return result.stdout
    .split('\n')
    .filter((line) => !line.startsWith('#'))
    .map((line) => line.replace(/\[\d+:\d+\]/g, '[0:0]').replace(/counter packets \d+ bytes \d+/g, 'counter'))
    .join('\n');
}

function expectReaches(sandbox: Sandbox, user: string | number): void {
  const result = sandbox.curl(user, URL, { connectTimeoutSec: CONNECT_TIMEOUT_SEC });
  expect({ user, ...result }).toMatchObject({ user, ok: true, httpCode: 200 });
}

function expectRejectedFast(sandbox: Sandbox, user: string | number): void {
  const result = sandbox.curl(user, URL, { connectTimeoutSec: CONNECT_TIMEOUT_SEC });
  // curl exit 7: the connection failed (here: reset), not 28 (timed out).
  expect({ user, ok: result.ok, exitCode: result.exitCode }).toEqual({ user, ok: false, exitCode: 7 });
  expect(result.durationMs).toBeLessThan(FAST_FAIL_MS);
}

function bootServiceExecStart(sandbox: Sandbox): string[] {
  const unit = sandbox.readFile('/etc/systemd/system/ip-lockdown.service');
  const execStart = unit.split('\n').find((line) => line.startsWith('ExecStart='));
  expect(execStart).toBeDefined();
  return execStart!.slice('ExecStart='.length).trim().split(/\s+/);
}

// Synthesized once: the loopback variant for the sandboxes, the default
// (metadata) stack only for its rules.
const loopbackStack = synthesize({ destinations: [LOCKED_V4], allowedUsers: [...DEFAULT_ALLOWED_USERS, LATE_USER] });
const metadataStack = synthesize({});

describe('synthesized example stack', () => {
  const stack = loopbackStack;

  test('tags the instance and the group for the association', () => {
    const [, instance] = onlyResource(stack.resources, 'AWS::EC2::Instance');
    const [, group] = onlyResource(stack.resources, 'AWS::AutoScaling::AutoScalingGroup');
    const [, association] = onlyResource(stack.resources, 'AWS::SSM::Association');

    expect(instance.Properties.Tags).toContainEqual(TAG);
    expect(group.Properties.Tags).toContainEqual({ ...TAG, PropagateAtLaunch: true });
    expect(association.Properties.Targets).toEqual([{ Key: `tag:${TAG.Key}`, Values: [TAG.Value] }]);
  });

  test('gives the instance and the group the same script', () => {
    expect(stack.launchTemplateUserData).toBe(stack.instanceUserData);
  });

  test('places the lock between the user commands', () => {
    const script = stack.instanceUserData;
    const before = script.indexOf(`${MARKER_DIR}/before-lock`);
    const lock = script.indexOf('# cdk-ip-lockdown: metadata');
    const after = script.indexOf(`${MARKER_DIR}/after-lock`);

    expect(before).toBeGreaterThan(0);
    expect(lock).toBeGreaterThan(before);
    expect(after).toBeGreaterThan(lock);
  });
});

describeKernel('example stack on a real kernel', () => {
  describe('metadata addresses (rules only, never connected to)', () => {
    let sandbox: Sandbox;
    let userData: RunResult;

    beforeAll(() => {
      sandbox = Sandbox.create({ backend: 'iptables-nft' });
      userData = runUserData(sandbox, metadataStack.instanceUserData);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    test('user data applies the lock', () => {
      expect(describeRun('the user data', userData)).toMatch(/exited 0 /);
      expect(userData.stderr).not.toContain('lock setup failed');
    });

    test('rules name both metadata addresses', () => {
      const v4 = sandbox.run(['iptables', '-S']);
      const v6 = sandbox.run(['ip6tables', '-S']);

      expect(v4.stdout).toMatch(/^-A OUTPUT -j IPLOCKDOWN$/m);
      expect(v4.stdout).toMatch(/^-A IPLOCKDOWN .*-d 169\.254\.169\.254\/32/m);
      expect(v6.stdout).toMatch(/^-A OUTPUT -j IPLOCKDOWN$/m);
      expect(v6.stdout).toMatch(/^-A IPLOCKDOWN .*-d fd00:ec2::254\/128/m);
    });

    test('status lists the lock and its users', () => {
      const status = sandbox.run(['ip-lockdown', '--status']);

      expect(describeRun('ip-lockdown --status', status)).toMatch(/exited 0 /);
      expect(status.stdout).toContain('lock metadata');
      expect(status.stdout).toContain('address 169.254.169.254');
      expect(status.stdout).toContain('address fd00:ec2::254');
      for (const user of DEFAULT_ALLOWED_USERS) {
        expect(status.stdout).toMatch(new RegExp(`user ${user} \\(uid \\d+\\)`));
      }
      expect(status.stdout).toMatch(new RegExp(`group ${ALLOWED_GROUP} \\(gid \\d+\\)`));
    });
  });

  describe.each(BACKENDS)('loopback destination, %s', (backend) => {
    const stack = loopbackStack;
    let sandbox: Sandbox;
    let userData: RunResult;

    beforeAll(() => {
      sandbox = Sandbox.create({ backend });
      sandbox.startHttpServer(LOCKED_V4, PORT);
      // Present at launch: a member of the allowed group and a user nobody allowed.
      sandbox.addGroup(ALLOWED_GROUP);
      sandbox.addUser('opsuser', { groups: [ALLOWED_GROUP] });
      sandbox.addUser('intruder');
      userData = runUserData(sandbox, stack.launchTemplateUserData);
    });

    afterAll(() => {
      sandbox?.destroy();
    });

    test('user data runs the commands around the lock', () => {
      expect(describeRun('the user data', userData)).toMatch(/exited 0 /);
      expect(sandbox.readFile(`${MARKER_DIR}/before-lock`)).toBe('before-lock\n');
      expect(sandbox.readFile(`${MARKER_DIR}/after-lock`)).toBe('after-lock\n');
    });

    test('user data reports the user missing at launch', () => {
      expect(userData.stderr).toContain(LATE_USER);
      expect(userData.stderr).toContain('lock setup failed with exit status 4');
    });

    test('listed users and group members reach the address', () => {
      for (const user of ['root', 'app', 'opsuser']) {
        expectReaches(sandbox, user);
      }
    });

    test('other users are rejected fast', () => {
      expectRejectedFast(sandbox, 'intruder');
      expectRejectedFast(sandbox, 'nobody');
      expectRejectedFast(sandbox, 4242);
    });

    test('association runs under dash', () => {
      const shell = sandbox.run(['readlink', '-f', '/bin/sh']);
      expect(shell.stdout.trim()).toBe('/usr/bin/dash');
    });

    test('association picks up a user created after launch', () => {
      sandbox.addUser(LATE_USER);
      expectRejectedFast(sandbox, LATE_USER);

      const run = runDocumentCommand(sandbox, stack.documentCommand);

      expect(describeRun('the association command', run)).toMatch(/exited 0 /);
      expectReaches(sandbox, LATE_USER);
      expectRejectedFast(sandbox, 'intruder');
    });

    test('association repairs a flushed ruleset', () => {
      flushFirewall(sandbox);
      expectReaches(sandbox, 'intruder');

      const run = runDocumentCommand(sandbox, stack.documentCommand);

      expect(describeRun('the association command', run)).toMatch(/exited 0 /);
      expectRejectedFast(sandbox, 'intruder');
      expectReaches(sandbox, 'app');
    });

    test('association leaves an intact ruleset unchanged', () => {
      const before = rulesetWithoutCounters(sandbox);
      expect(before).toContain(LOCKED_V4);

      const run = runDocumentCommand(sandbox, stack.documentCommand);

      expect(describeRun('the association command', run)).toMatch(/exited 0 /);
      expect(rulesetWithoutCounters(sandbox)).toBe(before);
    });

    test('boot service restores the lock after a reboot', () => {
      const execStart = bootServiceExecStart(sandbox);
      expect(execStart).toEqual(['/usr/local/sbin/ip-lockdown', '--apply']);
      simulateReboot(sandbox);
      expectReaches(sandbox, 'intruder');

      const boot = sandbox.run(execStart);

      expect(describeRun('the boot service', boot)).toMatch(/exited 0 /);
      expectRejectedFast(sandbox, 'intruder');
      for (const user of ['root', 'app', 'opsuser', LATE_USER]) {
        expectReaches(sandbox, user);
      }
      expect(sandbox.run(['ip-lockdown', '--status']).status).toBe(0);
    });

    test('dry run changes nothing', () => {
      const before = rulesetWithoutCounters(sandbox);

      const dryRun = sandbox.run(['ip-lockdown', '--apply', '--dry-run']);

      expect(describeRun('ip-lockdown --apply --dry-run', dryRun)).toMatch(/exited 0 /);
      expect(dryRun.stdout).toContain(LOCKED_V4);
      expect(rulesetWithoutCounters(sandbox)).toBe(before);
    });

    test('unlock opens the address', () => {
      const unlock = sandbox.run(['ip-lockdown', '--unlock', LOCKED_V4]);

      expect(describeRun('ip-lockdown --unlock', unlock)).toMatch(/exited 0 /);
      expectReaches(sandbox, 'intruder');
      expect(sandbox.exists('/etc/ip-lockdown/locks.d/metadata.conf')).toBe(false);
    });
  });
});
