import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { IpLockdown, IpLockdownProps, ReapplySchedule } from '../src';
import { BACKENDS, describeKernel, LOCKED_V4, RunResult, Sandbox } from './helpers/sandbox';
import { userDataOf } from './private/template-user-data';

jest.setTimeout(180_000);

const PORT = 8080;
const URL = `http://${LOCKED_V4}:${PORT}/`;
const USER_DATA_PATH = '/var/lib/cloud/instance/scripts/part-001';

/**
 * Synthesizes an instance locked by one IpLockdown per entry of `locks`, with
 * `before` and `after` commands around the block, and returns the template.
 */
function synthesize(locks: IpLockdownProps[], commands: { before?: string[]; after?: string[] } = {}): Template {
  const stack = new Stack(new App(), 'Stack');
  const vpc = new ec2.Vpc(stack, 'Vpc', {
    maxAzs: 1,
    natGateways: 0,
    subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
  });
  const instance = new ec2.Instance(stack, 'Web', {
    vpc,
    instanceType: new ec2.InstanceType('t3.micro'),
    machineImage: ec2.MachineImage.latestAmazonLinux2023(),
  });
  instance.addUserData(...(commands.before ?? []));
  locks.forEach((props, index) => new IpLockdown(stack, `Lock${index}`, { ...props, instances: [instance] }));
  instance.addUserData(...(commands.after ?? []));
  return Template.fromStack(stack);
}

/** Runs a script inside the sandbox root as root with /bin/sh, the way an instance would run it. */
function runScript(sandbox: Sandbox, script: string): RunResult {
  sandbox.writeFile(USER_DATA_PATH, script, 0o700);
  return sandbox.run(['/bin/sh', USER_DATA_PATH], { timeoutMs: 120_000 });
}

describeKernel('lock applied from synthesized user data', () => {
  describe.each(BACKENDS)('%s root', (backend) => {
    let sandbox: Sandbox;

    beforeEach(() => {
      sandbox = Sandbox.create({ backend });
      sandbox.addUser('tester');
      sandbox.addUser('other');
      sandbox.startHttpServer(LOCKED_V4, PORT);
    });

    afterEach(() => {
      sandbox?.destroy();
    });

    test('allows listed user, rejects other', () => {
      // GIVEN
      const template = synthesize([{ lockName: 'test', destinations: [LOCKED_V4], allowedUsers: ['root', 'tester'] }]);
      expect(sandbox.curl('other', URL).ok).toBe(true);

      // WHEN
      const result = runScript(sandbox, userDataOf(template, 'AWS::EC2::Instance'));

      // THEN
      expect(result.stderr).not.toContain('ip-lockdown: ERROR');
      expect(result.status).toBe(0);
      expect(sandbox.curl('tester', URL)).toMatchObject({ ok: true, httpCode: 200 });
      expect(sandbox.curl('root', URL)).toMatchObject({ ok: true, httpCode: 200 });
      expect(sandbox.curl('other', URL)).toMatchObject({ ok: false, httpCode: 0 });
      expect(sandbox.readFile('/etc/ip-lockdown/locks.d/test.conf')).toBe(`address ${LOCKED_V4}\nuser root\nuser tester\n`);
      expect(sandbox.run(['stat', '-c', '%a', '/usr/local/sbin/ip-lockdown']).stdout.trim()).toBe('755');
      expect(sandbox.readFile('/etc/systemd/system/ip-lockdown.service')).toContain('ExecStart=/usr/local/sbin/ip-lockdown --apply');
    });
  });

  describe('user data behaviour, iptables-nft root', () => {
    let sandbox: Sandbox;

    beforeEach(() => {
      sandbox = Sandbox.create({ backend: 'iptables-nft' });
      sandbox.addUser('tester');
      sandbox.addUser('other');
      sandbox.startHttpServer(LOCKED_V4, PORT);
    });

    afterEach(() => {
      sandbox?.destroy();
    });

    test('runs surrounding user commands in order', () => {
      // GIVEN
      const template = synthesize([{ destinations: [LOCKED_V4], allowedUsers: ['root', 'tester'] }], {
        before: ['echo before >>/tmp/order'],
        after: ['echo after >>/tmp/order'],
      });

      // WHEN
      const result = runScript(sandbox, userDataOf(template, 'AWS::EC2::Instance'));

      // THEN
      expect(result.status).toBe(0);
      expect(sandbox.readFile('/tmp/order')).toBe('before\nafter\n');
    });

    test('continues user data after failure', () => {
      // GIVEN a lock that names a user the instance lacks, after the user's own set -e
      const template = synthesize([{ destinations: [LOCKED_V4], allowedUsers: ['root', 'tester', 'ghost'] }], {
        before: ['set -e'],
        after: ['echo after >/tmp/after'],
      });

      // WHEN
      const result = runScript(sandbox, userDataOf(template, 'AWS::EC2::Instance'));

      // THEN
      expect(result.stderr).toContain('ip-lockdown: ERROR: lock setup failed with exit status 4');
      expect(result.status).toBe(0);
      expect(sandbox.readFile('/tmp/after')).toBe('after\n');
      expect(sandbox.curl('tester', URL).ok).toBe(true);
      expect(sandbox.curl('other', URL).ok).toBe(false);
    });

    test('applies a baked-in program without embedding', () => {
      // GIVEN an image that already has the program, and a lock that does not embed it
      sandbox.installProgram();
      const template = synthesize([{ lockName: 'baked', destinations: [LOCKED_V4], allowedUsers: ['root', 'tester'], embedProgram: false }]);

      // WHEN
      const result = runScript(sandbox, userDataOf(template, 'AWS::EC2::Instance'));

      // THEN
      expect(result.stderr).not.toContain('ip-lockdown: ERROR');
      expect(result.status).toBe(0);
      expect(sandbox.curl('tester', URL).ok).toBe(true);
      expect(sandbox.curl('other', URL).ok).toBe(false);
    });

    test('reports a missing baked-in program', () => {
      // GIVEN an image without the program
      const template = synthesize([{ destinations: [LOCKED_V4], allowedUsers: ['root', 'tester'], embedProgram: false }], {
        after: ['echo after >/tmp/after'],
      });

      // WHEN
      const result = runScript(sandbox, userDataOf(template, 'AWS::EC2::Instance'));

      // THEN
      expect(result.stderr).toContain('/usr/local/sbin/ip-lockdown is missing');
      expect(result.stderr).toContain('lock setup failed with exit status 3');
      expect(sandbox.readFile('/tmp/after')).toBe('after\n');
    });

    test('composes two locks by intersection', () => {
      // GIVEN
      const template = synthesize([
        { lockName: 'wide', destinations: [LOCKED_V4], allowedUsers: ['root', 'tester', 'other'] },
        { lockName: 'narrow', destinations: [LOCKED_V4], allowedUsers: ['root', 'tester'] },
      ]);

      // WHEN
      const result = runScript(sandbox, userDataOf(template, 'AWS::EC2::Instance'));

      // THEN
      expect(result.status).toBe(0);
      expect(sandbox.curl('tester', URL).ok).toBe(true);
      expect(sandbox.curl('other', URL).ok).toBe(false);
    });

    test('document exits with program status', () => {
      // GIVEN a document whose lock names a user the instance lacks
      const template = synthesize([{
        lockName: 'reapplied',
        destinations: [LOCKED_V4],
        allowedUsers: ['root', 'tester', 'ghost'],
        reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
      }]);
      const document = Object.values(template.findResources('AWS::SSM::Document'))[0];
      const commands: string[] = document.Properties.Content.mainSteps[0].inputs.runCommand;

      // WHEN
      const result = runScript(sandbox, `${commands.join('\n')}\n`);

      // THEN
      expect(result.status).toBe(4);
      expect(result.stderr).toContain('ghost');
      expect(sandbox.readFile('/etc/ip-lockdown/locks.d/reapplied.conf')).toContain('user ghost');
      expect(sandbox.curl('tester', URL).ok).toBe(true);
      expect(sandbox.curl('other', URL).ok).toBe(false);
    });

    test('document exits 0 when applied', () => {
      // GIVEN
      const template = synthesize([{
        destinations: [LOCKED_V4],
        allowedUsers: ['root', 'tester'],
        reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
      }]);
      const document = Object.values(template.findResources('AWS::SSM::Document'))[0];
      const commands: string[] = document.Properties.Content.mainSteps[0].inputs.runCommand;

      // WHEN
      const result = runScript(sandbox, `${commands.join('\n')}\n`);

      // THEN
      expect(result.stderr).not.toContain('ERROR');
      expect(result.status).toBe(0);
      expect(sandbox.curl('other', URL).ok).toBe(false);
    });
  });
});
