/**
 * Synth benchmarks 3 (scaling: resources added and synth time with many
 * targets) and 4 (UserData size, and what happens at EC2's 16,384-byte limit).
 * Pure CDK: no AWS calls, no lookups (env-agnostic stacks, an SSM-parameter AMI).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { judge, median, printVerdicts, times } from './report';
import { IpLockdown, IpLockdownProps, ReapplySchedule } from '../src';
import { encodedProgram, PROGRAM_SOURCE_PATH } from '../src/private/program';

const SIZES = (process.env.BENCH_SYNTH_SIZES ?? '1,50,200').split(',').map(Number);
const SYNTH_REPEATS = Number(process.env.BENCH_SYNTH_REPEATS ?? '7');
const SYNTH_GOAL_AT_LARGEST = 1.1;
const USER_DATA_GOAL_BYTES = 3072;
const EC2_USER_DATA_LIMIT = 16_384;
// CloudFormation's maximum template body, uploaded through S3 as the CDK does.
const CFN_TEMPLATE_LIMIT = 1_000_000;

type Template = { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }> };

interface Built {
  readonly app: App;
  readonly stack: Stack;
  readonly instances: ec2.Instance[];
}

const outDirs: string[] = [];

function newApp(): App {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'ip-lockdown-bench-'));
  outDirs.push(outdir);
  return new App({
    outdir,
    context: {
      // 200 instances and 200 groups make about 1,800 resources, more than the 500
      // CloudFormation allows in one stack, so the CDK's check is off to measure scaling.
      '@aws-cdk/core:stackResourceLimit': 0,
      // What `cdk init` sets today: Auto Scaling groups get a launch template.
      '@aws-cdk/aws-autoscaling:generateLaunchTemplateInsteadOfLaunchConfig': true,
    },
  });
}

/** Builds a stack with `count` instances and `count` Auto Scaling groups, optionally under one lock. */
function buildFleet(count: number, locked: boolean): Built {
  const app = newApp();
  const stack = new Stack(app, 'Fleet');
  const vpc = new ec2.Vpc(stack, 'Vpc', {
    natGateways: 0,
    subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
  });
  const machineImage = ec2.MachineImage.latestAmazonLinux2023();
  const instanceType = new ec2.InstanceType('t3.micro');
  const instances: ec2.Instance[] = [];
  const groups: autoscaling.AutoScalingGroup[] = [];
  for (let i = 0; i < count; i += 1) {
    instances.push(new ec2.Instance(stack, `Instance${i}`, { vpc, machineImage, instanceType }));
    groups.push(new autoscaling.AutoScalingGroup(stack, `Group${i}`, { vpc, machineImage, instanceType }));
  }
  if (locked) {
    new IpLockdown(stack, 'Lockdown', {
      reapplySchedule: ReapplySchedule.rate(Duration.minutes(30)),
      instances,
      autoScalingGroups: groups,
    });
  }
  return { app, stack, instances };
}

function template(built: Built): Template {
  return synthesize(built).template;
}

/** Synthesizes the app; returns the stack's template and the size of its template file. */
function synthesize(built: Built): { template: Template; fileBytes: number } {
  const artifact = built.app.synth().getStackByName(built.stack.stackName);
  return { template: artifact.template as Template, fileBytes: fs.statSync(artifact.templateFullPath).size };
}

interface SynthTime {
  readonly wallMs: number;
  /** CPU time of this process (user + system, all threads), which other load on the machine barely moves. */
  readonly cpuMs: number;
}

function timeSynth(count: number, locked: boolean): SynthTime {
  (global as { gc?: () => void }).gc?.();
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  template(buildFleet(count, locked));
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
  const cpu = process.cpuUsage(cpuStart);
  return { wallMs, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** Lists the property paths (two levels below Properties) whose values differ. */
function changedPaths(before: Record<string, unknown> | undefined, after: Record<string, unknown> | undefined): string[] {
  const paths: string[] = [];
  const keys = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  for (const key of keys) {
    const a = before?.[key];
    const b = after?.[key];
    if (JSON.stringify(a) === JSON.stringify(b)) {
      continue;
    }
    const nested = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
    if (nested(a) && nested(b)) {
      for (const inner of new Set([...Object.keys(a), ...Object.keys(b)])) {
        if (JSON.stringify(a[inner]) !== JSON.stringify(b[inner])) {
          paths.push(`${key}.${inner}`);
        }
      }
    } else {
      paths.push(key);
    }
  }
  return paths;
}

// Per-target changes the goal allows: the lock block in UserData and the tag the association selects by.
const ALLOWED_CHANGE = /^(UserData(\.Fn::Base64)?|Tags|LaunchTemplateData\.UserData|LaunchTemplateData\.TagSpecifications|TagSpecifications)$/;
// IAM the association needs: the SSM managed policy on each target's own role.
const IAM_CHANGE = /^ManagedPolicyArns$/;

function scaling(): void {
  console.log('\n== 3. Synth scaling (N instances + N Auto Scaling groups, one IpLockdown over all with a 30-minute reapply schedule)');
  console.log('  goal: resources added constant in N; per target only UserData and tags change (plus the SSM managed policy on its role);'
    + ` synth time with/without <= ${SYNTH_GOAL_AT_LARGEST}x at N=${Math.max(...SIZES)}`);

  const addedByCount = new Map<number, string>();
  const addedBytes = new Map<number, number>();
  for (const count of SIZES) {
    const plain = synthesize(buildFleet(count, false));
    const locked = synthesize(buildFleet(count, true));
    const without = plain.template.Resources;
    const withLock = locked.template.Resources;
    const added = Object.keys(withLock).filter((id) => !(id in without)).map((id) => withLock[id].Type);
    const removed = Object.keys(without).filter((id) => !(id in withLock));
    const addedSummary = summarize(added);
    addedByCount.set(count, addedSummary);

    const changes = new Map<string, number>();
    for (const id of Object.keys(without)) {
      if (!(id in withLock)) {
        continue;
      }
      for (const changed of changedPaths(without[id].Properties, withLock[id].Properties)) {
        const key = `${without[id].Type} ${changed}`;
        changes.set(key, (changes.get(key) ?? 0) + 1);
      }
    }
    const other = [...changes.keys()].filter((key) => {
      const property = key.split(' ')[1];
      return !ALLOWED_CHANGE.test(property) && !IAM_CHANGE.test(property);
    });
    console.log(`  N=${count}: ${Object.keys(without).length} -> ${Object.keys(withLock).length} resources; added ${added.length}: ${addedSummary};`
      + ` removed ${removed.length}`);
    for (const [key, n] of [...changes.entries()].sort()) {
      console.log(`    changed on ${n}: ${key}`);
    }
    addedBytes.set(count, locked.fileBytes - plain.fileBytes);
    const over = (bytes: number): string => (bytes > CFN_TEMPLATE_LIMIT ? ' (over the limit)' : '');
    console.log(`    template file: ${plain.fileBytes} bytes${over(plain.fileBytes)} -> ${locked.fileBytes} bytes${over(locked.fileBytes)};`
      + ` CloudFormation accepts ${CFN_TEMPLATE_LIMIT}`);
    judge('3 synth scaling', `N=${count}: per-target changes limited to UserData, tags and the SSM managed policy${other.length ? ` (also: ${other.join(', ')})` : ''}`,
      other.length === 0 && removed.length === 0);
  }
  const smallest = Math.min(...SIZES);
  const largest = Math.max(...SIZES);
  if (largest > smallest) {
    const perTarget = (addedBytes.get(largest)! - addedBytes.get(smallest)!) / (2 * (largest - smallest));
    console.log(`  template bytes the lock adds per target: ${perTarget.toFixed(0)} (the lock block in each UserData, JSON-escaped);`
      + ` the lock blocks alone fill CloudFormation's ${CFN_TEMPLATE_LIMIT}-byte template limit at about ${Math.floor(CFN_TEMPLATE_LIMIT / perTarget)} targets per stack`);
  }
  const distinct = new Set(addedByCount.values());
  const constant = distinct.size === 1;
  console.log(`  resources added are ${constant ? 'the same' : 'NOT the same'} for N=${SIZES.join(', ')} ${judge('3 synth scaling', `resources added constant over N=${SIZES.join(', ')}`, constant)}`);

  // Warm up the JIT on both paths so the first timed run is not the slowest.
  timeSynth(Math.min(50, Math.max(...SIZES)), false);
  timeSynth(Math.min(50, Math.max(...SIZES)), true);
  for (const count of SIZES) {
    const withoutMs: SynthTime[] = [];
    const withMs: SynthTime[] = [];
    for (let repeat = 0; repeat < SYNTH_REPEATS; repeat += 1) {
      // Alternate the order so neither variant always runs on a fresher heap.
      if (repeat % 2 === 0) {
        withoutMs.push(timeSynth(count, false));
        withMs.push(timeSynth(count, true));
      } else {
        withMs.push(timeSynth(count, true));
        withoutMs.push(timeSynth(count, false));
      }
    }
    // Each pair ran back to back, so the ratio within a pair cancels slow swings
    // in the machine's load. The median over pairs drops the outliers.
    const pairRatios = withMs.map((t, i) => t.cpuMs / withoutMs[i].cpuMs).sort((a, b) => a - b);
    const ratio = median(pairRatios);
    const wallRatio = median(withMs.map((t, i) => t.wallMs / withoutMs[i].wallMs));
    let verdict = '(no goal at this N)';
    if (count === Math.max(...SIZES)) {
      verdict = `(goal <= ${SYNTH_GOAL_AT_LARGEST}x) ${judge('3 synth scaling', `synth CPU time at N=${count}: ${times(ratio)} without the lock (goal <= ${SYNTH_GOAL_AT_LARGEST}x)`, ratio <= SYNTH_GOAL_AT_LARGEST)}`;
    }
    console.log(`  N=${count}: synth CPU time with/without ${times(ratio)} ${verdict}; median of ${SYNTH_REPEATS} back-to-back pairs,`
      + ` pairs ranged ${times(pairRatios[0])} to ${times(pairRatios[pairRatios.length - 1])};`
      + ` CPU ${median(withoutMs.map((t) => t.cpuMs)).toFixed(0)} ms without, ${median(withMs.map((t) => t.cpuMs)).toFixed(0)} ms with; wall-time ratio ${times(wallRatio)}`);
  }
}

function summarize(types: string[]): string {
  const counts = new Map<string, number>();
  for (const type of types) {
    counts.set(type, (counts.get(type) ?? 0) + 1);
  }
  return [...counts.entries()].sort().map(([type, n]) => `${n} ${type}`).join(', ') || 'none';
}

/**
 * Returns the literal bytes of a rendered UserData value (the argument of
 * Fn::Base64) and the number of deploy-time values in it, which are not counted.
 */
function literalBytes(value: unknown): { bytes: number; tokens: number } {
  if (typeof value === 'string') {
    return { bytes: Buffer.byteLength(value, 'utf8'), tokens: 0 };
  }
  const join = (value as Record<string, unknown> | null)?.['Fn::Join'] as [string, unknown[]] | undefined;
  if (Array.isArray(join)) {
    const parts = join[1].map(literalBytes);
    return {
      bytes: parts.reduce((sum, part) => sum + part.bytes, 0) + Buffer.byteLength(join[0], 'utf8') * Math.max(0, join[1].length - 1),
      tokens: parts.reduce((sum, part) => sum + part.tokens, 0),
    };
  }
  return { bytes: 0, tokens: 1 };
}

function base64Length(bytes: number): number {
  return 4 * Math.ceil(bytes / 3);
}

type TargetKind = 'instance' | 'Auto Scaling group';

/** One target of a UserData measurement, and a way to lock it. */
interface OneTarget {
  readonly userData: ec2.UserData;
  lock(id: string, props?: IpLockdownProps): void;
}

/** Synthesizes a stack with one target and returns the size of the target's UserData. */
function targetUserData(kind: TargetKind, configure: (target: OneTarget) => void): { bytes: number; tokens: number } {
  const app = newApp();
  const stack = new Stack(app, 'One');
  const vpc = new ec2.Vpc(stack, 'Vpc', { natGateways: 0, subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }] });
  const machineImage = ec2.MachineImage.latestAmazonLinux2023();
  const instanceType = new ec2.InstanceType('t3.micro');
  if (kind === 'instance') {
    const instance = new ec2.Instance(stack, 'Instance', { vpc, machineImage, instanceType });
    configure({ userData: instance.userData, lock: (id, props) => { new IpLockdown(stack, id, { ...props, instances: [instance] }); } });
  } else {
    const group = new autoscaling.AutoScalingGroup(stack, 'Group', { vpc, machineImage, instanceType });
    configure({ userData: group.userData, lock: (id, props) => { new IpLockdown(stack, id, { ...props, autoScalingGroups: [group] }); } });
  }
  const resources = app.synth().getStackByName(stack.stackName).template.Resources as Template['Resources'];
  let rendered: unknown;
  if (kind === 'instance') {
    rendered = Object.values(resources).find((resource) => resource.Type === 'AWS::EC2::Instance')!.Properties!.UserData;
  } else {
    const launchTemplate = Object.values(resources).find((resource) => resource.Type === 'AWS::EC2::LaunchTemplate')!;
    rendered = (launchTemplate.Properties!.LaunchTemplateData as Record<string, unknown>).UserData;
  }
  return literalBytes((rendered as Record<string, unknown>)['Fn::Base64']);
}

const LARGE_DESTINATIONS = ['169.254.169.254', 'fd00:ec2::254', '10.0.0.1', '10.0.0.2', '10.0.1.0/24', '10.1.0.0/16',
  '172.16.0.10', '192.168.1.1', '2001:db8::1', '2001:db8::2'];
const LARGE_USERS = Array.from({ length: 30 }, (_, i) => `appuser${String(i + 1).padStart(2, '0')}`);

function userDataSize(): void {
  console.log(`\n== 4. UserData size (one instance; goal for the default lock: <= ${USER_DATA_GOAL_BYTES} bytes raw)`);
  const base = targetUserData('instance', () => undefined);
  const large: IpLockdownProps = { destinations: LARGE_DESTINATIONS, allowedUsers: LARGE_USERS };
  const configs: Array<[string, (target: OneTarget) => void]> = [
    ['default (IMDS v4+v6, root)', (target) => target.lock('Lockdown')],
    [`large (${LARGE_DESTINATIONS.length} addresses, ${LARGE_USERS.length} users)`, (target) => target.lock('Lockdown', large)],
    ['two locks on one instance (default + large)', (target) => {
      target.lock('Lockdown');
      target.lock('Second', large);
    }],
    ['embedProgram: false, otherwise default (the image ships the program)', (target) => target.lock('Lockdown', { embedProgram: false })],
  ];
  let defaultAdded = -1;
  console.log(`  without a lock: ${base.bytes} bytes raw`);
  const program = encodedProgram();
  console.log(`  the embedded program: ${fs.statSync(PROGRAM_SOURCE_PATH).size} bytes as shipped, ${program.length} bytes stripped, gzipped and base64-encoded`);
  for (const [name, configure] of configs) {
    const locked = targetUserData('instance', configure);
    const added = locked.bytes - base.bytes;
    const addedBase64 = base64Length(locked.bytes) - base64Length(base.bytes);
    let verdict = '';
    if (defaultAdded < 0) {
      // The first configuration is the default one, which the goal is for.
      defaultAdded = added;
      verdict = ` (goal <= ${USER_DATA_GOAL_BYTES}) ${judge('4 user data', `default lock adds ${added} bytes raw (goal <= ${USER_DATA_GOAL_BYTES})`, added <= USER_DATA_GOAL_BYTES)}`;
    }
    const tokenNote = locked.tokens > 0 ? `, ${locked.tokens} deploy-time values not counted` : '';
    console.log(`  ${name}: adds ${added} bytes raw${verdict}, ${addedBase64} bytes base64; total ${locked.bytes} raw${tokenNote}`);
  }
  console.log(`  room left for the target's own user data next to the default lock: ${EC2_USER_DATA_LIMIT - base.bytes - defaultAdded} bytes`);

  // EC2 counts user data before base64 encoding. Fill the target's own user data
  // so that the total lands exactly on the limit, then one byte over.
  console.log(`  limit: EC2 accepts ${EC2_USER_DATA_LIMIT} bytes of user data (before base64)`);
  for (const kind of ['instance', 'Auto Scaling group'] as TargetKind[]) {
    const kindBase = targetUserData(kind, () => undefined).bytes;
    for (const fillerFirst of [true, false]) {
      for (const over of [0, 1]) {
        // The filler is one more command line: a newline, then a comment.
        const fillerBytes = EC2_USER_DATA_LIMIT - kindBase - defaultAdded - 1 + over;
        const filler = `#${'x'.repeat(fillerBytes - 1)}`;
        let outcome: string;
        let failed = false;
        let total = -1;
        try {
          total = targetUserData(kind, (target) => {
            if (fillerFirst) {
              target.userData.addCommands(filler);
              target.lock('Lockdown');
            } else {
              target.lock('Lockdown');
              target.userData.addCommands(filler);
            }
          }).bytes;
          outcome = `synth succeeded, user data ${total} bytes`;
        } catch (error) {
          failed = true;
          outcome = `synth failed: ${(error as Error).message.split('\n').filter((line) => line.trim()).slice(0, 3).join(' / ')}`;
        }
        const expected = over === 1 ? 'fails' : 'succeeds';
        const pass = over === 1 ? failed : !failed && total === EC2_USER_DATA_LIMIT;
        const size = EC2_USER_DATA_LIMIT + over;
        const order = fillerFirst ? 'own commands before the lock' : 'own commands added after the lock';
        console.log(`  ${kind}, ${order}, ${size} bytes in all: ${outcome} (expected: ${expected}) `
          + judge('4 user data', `${kind}, ${order}, ${size} bytes: synth ${expected}`, pass));
      }
    }
  }
}

function main(): void {
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.CDK_DISABLE_CLI_TELEMETRY = 'true';
  try {
    scaling();
    userDataSize();
  } finally {
    for (const dir of outDirs) {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  printVerdicts('synth goals');
}

main();
