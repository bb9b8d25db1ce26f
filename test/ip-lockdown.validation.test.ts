import { App, Annotations as CoreAnnotations, Duration, Lazy, Stack, Token } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { IpLockdown, IpLockdownProps, ReapplySchedule } from '../src';

function newStack(): Stack {
  return new Stack(new App(), 'Stack');
}

function lockWith(props: IpLockdownProps): IpLockdown {
  return new IpLockdown(newStack(), 'Lock', props);
}

describe('destinations', () => {
  test.each([
    ['IPv4 address', '192.0.2.10'],
    ['IPv4 CIDR block', '10.0.0.0/8'],
    ['IPv4 /32 block', '192.0.2.10/32'],
    ['IPv4 /25 block', '192.168.1.128/25'],
    ['IPv4 /1 block', '128.0.0.0/1'],
    ['IPv6 address', '2001:db8::1'],
    ['full IPv6 address', '2001:0db8:0000:0000:0000:0000:0000:0001'],
    ['IPv6 loopback address', '::1'],
  ])('accepts an %s', (_kind, address) => {
    expect(() => lockWith({ destinations: [address] })).not.toThrow();
  });

  test.each([
    ['a hostname', 'metadata.internal', /destinations: 'metadata.internal' is not an IPv4 address/],
    ['an IPv6 CIDR block', 'fd00:ec2::/64', /destinations: IPv6 CIDR blocks such as 'fd00:ec2::\/64' are not supported/],
    ['host bits in a CIDR block', '10.0.0.1/8', /destinations: the IPv4 CIDR block '10.0.0.1\/8' has host bits set. Write it as '10.0.0.0\/8'/],
    ['host bits in a /25 block', '192.168.1.130/25', /Write it as '192.168.1.128\/25'/],
    ['a /0 block', '0.0.0.0/0', /destinations: invalid IPv4 CIDR block '0.0.0.0\/0'. The prefix must be 1 to 32/],
    ['a prefix over 32', '10.0.0.0/33', /prefix must be 1 to 32/],
    ['a prefix with a leading zero', '10.0.0.0/08', /prefix must be 1 to 32/],
    ['an octet with a leading zero', '010.0.0.1', /is not an IPv4 address/],
    ['an incomplete address', '10.0.1', /is not an IPv4 address/],
    ['an IPv6 zone id', 'fe80::1%eth0', /zone ids/],
    ['IPv4-embedded IPv6 notation', '::ffff:192.0.2.1', /IPv4-embedded IPv6 notation/],
    ['an empty string', '', /is not an IPv4 address/],
    ['the unspecified IPv6 address', '::', /unspecified address or an IPv4-mapped/],
    ['an IPv4-mapped IPv6 address in hex', '::ffff:c000:201', /IPv4-mapped or IPv4-compatible/],
    ['an IPv4-compatible IPv6 address', '::c000:201', /IPv4-mapped or IPv4-compatible/],
  ])('rejects %s', (_case, address, message) => {
    expect(() => lockWith({ destinations: [address] })).toThrow(message);
  });

  test('rejects an empty list', () => {
    expect(() => lockWith({ destinations: [] })).toThrow(/destinations: the list is empty/);
  });

  test('rejects a repeated address', () => {
    expect(() => lockWith({ destinations: ['192.0.2.1', '192.0.2.1'] })).toThrow(/destinations: '192.0.2.1' repeats '192.0.2.1'/);
  });

  test('rejects an address repeated as a /32 block', () => {
    expect(() => lockWith({ destinations: ['192.0.2.1', '192.0.2.1/32'] })).toThrow(/destinations: '192.0.2.1\/32' repeats '192.0.2.1'/);
  });

  test('rejects an IPv6 address repeated in another notation', () => {
    expect(() => lockWith({ destinations: ['fd00:ec2::254', 'FD00:EC2:0:0:0:0:0:254'] }))
      .toThrow(/destinations: 'FD00:EC2:0:0:0:0:0:254' repeats 'fd00:ec2::254'/);
  });

  test('rejects an unresolved token', () => {
    expect(() => lockWith({ destinations: [Lazy.string({ produce: () => '192.0.2.1' })] }))
      .toThrow(/destinations: an unresolved token is not supported/);
  });

  test('rejects an unresolved token list', () => {
    expect(() => lockWith({ destinations: Token.asList(Lazy.any({ produce: () => ['192.0.2.1'] })) }))
      .toThrow(/destinations: an unresolved token list is not supported/);
  });
});

describe('allowed users and groups', () => {
  test.each([
    ['a plain name', 'app'],
    ['a name with digits, dots and dashes', 'svc_app-1.2'],
    ['a machine account name', 'host$'],
    ['a 32-character name', `a${'b'.repeat(31)}`],
    ['uid 0', '0'],
    ['the largest uid', '4294967294'],
  ])('accepts %s', (_case, name) => {
    expect(() => lockWith({ allowedUsers: ['root', name] })).not.toThrow();
    expect(() => lockWith({ allowedGroups: [name] })).not.toThrow();
  });

  test.each([
    ['an empty name', ''],
    ['an upper-case name', 'App'],
    ['a name starting with a digit', '1app'],
    ['a name with a space', 'app user'],
    ['a name with a shell metacharacter', 'app;reboot'],
    ['a 33-character name', `a${'b'.repeat(32)}`],
    ['a dollar sign in the middle', 'ho$t'],
    ['a numeric id with a leading zero', '01'],
    ['a numeric id beyond the uid range', '4294967295'],
    ['a negative id', '-1'],
  ])('rejects %s', (_case, name) => {
    expect(() => lockWith({ allowedUsers: [name] })).toThrow(/allowedUsers: invalid name/);
    expect(() => lockWith({ allowedGroups: [name] })).toThrow(/allowedGroups: invalid name/);
  });

  test('rejects a repeated user', () => {
    expect(() => lockWith({ allowedUsers: ['root', 'root'] })).toThrow(/allowedUsers: 'root' is listed more than once/);
  });

  test('rejects a repeated group', () => {
    expect(() => lockWith({ allowedGroups: ['ops', 'ops'] })).toThrow(/allowedGroups: 'ops' is listed more than once/);
  });

  test('rejects an unresolved token in a user name', () => {
    expect(() => lockWith({ allowedUsers: [Lazy.string({ produce: () => 'app' })] }))
      .toThrow(/allowedUsers: an unresolved token is not supported/);
  });

  test('rejects an unresolved token in a group name', () => {
    expect(() => lockWith({ allowedGroups: [Lazy.string({ produce: () => 'ops' })] }))
      .toThrow(/allowedGroups: an unresolved token is not supported/);
  });
});

describe('lock name and interfaces', () => {
  test.each([
    ['an empty name', ''],
    ['a leading dot', '.hidden'],
    ['a slash', 'a/b'],
    ['a space', 'a b'],
    ['65 characters', 'a'.repeat(65)],
  ])('rejects a lock name with %s', (_case, name) => {
    expect(() => lockWith({ lockName: name })).toThrow(/lockName: invalid lock name/);
  });

  test('accepts a 64-character lock name', () => {
    expect(lockWith({ lockName: `A${'b'.repeat(63)}` }).tagKey).toBe(`ip-lockdown:A${'b'.repeat(63)}`);
  });

  test('rejects an unresolved token as lock name', () => {
    expect(() => lockWith({ lockName: Lazy.string({ produce: () => 'x' }) })).toThrow(/lockName: an unresolved token is not supported/);
  });

  test.each([
    ['an empty pattern', ''],
    ['a leading dash', '-br'],
    ['a wildcard in the middle', 'br+0'],
    ['two wildcards', 'br++'],
    ['16 characters', 'a'.repeat(16)],
    ['a space', 'eth 0'],
  ])('rejects an interface pattern with %s', (_case, pattern) => {
    expect(() => lockWith({ blockForwardedInterfaces: [pattern] })).toThrow(/blockForwardedInterfaces: invalid interface pattern/);
  });

  test('rejects a repeated interface pattern', () => {
    expect(() => lockWith({ blockForwardedInterfaces: ['docker0', 'docker0'] })).toThrow(/blockForwardedInterfaces: 'docker0' is listed more than once/);
  });

  test('accepts a 15-character interface pattern with a wildcard', () => {
    expect(() => lockWith({ blockForwardedInterfaces: [`${'b'.repeat(14)}+`, 'docker0'] })).not.toThrow();
  });

  test('accepts a lone wildcard for every interface', () => {
    expect(() => lockWith({ blockForwardedInterfaces: ['+'] })).not.toThrow();
  });
});

describe('warnings', () => {
  test('warns when metadata is locked without root', () => {
    // GIVEN
    const stack = newStack();

    // WHEN
    new IpLockdown(stack, 'Lock', { allowedUsers: ['app'] });

    // THEN
    Annotations.fromStack(stack).hasWarning('/Stack/Lock',
      Match.stringLikeRegexp('does not include root.*ack: cdk-ip-lockdown:IpLockdown.metadataWithoutRoot'));
  });

  test('warns for metadata CIDR without root', () => {
    // GIVEN
    const stack = newStack();

    // WHEN
    new IpLockdown(stack, 'Lock', { destinations: ['169.254.0.0/16'], allowedUsers: ['app'] });

    // THEN
    Annotations.fromStack(stack).hasWarning('/Stack/Lock', Match.stringLikeRegexp('metadataWithoutRoot'));
  });

  test('accepts root given as uid 0', () => {
    // GIVEN
    const stack = newStack();

    // WHEN
    new IpLockdown(stack, 'Lock', { allowedUsers: ['0', 'app'] });

    // THEN
    Annotations.fromStack(stack).hasNoWarning('/Stack/Lock', Match.stringLikeRegexp('metadataWithoutRoot'));
  });

  test('does not warn about root for other destinations', () => {
    // GIVEN
    const stack = newStack();

    // WHEN
    new IpLockdown(stack, 'Lock', { destinations: ['192.0.2.1'], allowedUsers: ['app'] });

    // THEN
    Annotations.fromStack(stack).hasNoWarning('/Stack/Lock', Match.stringLikeRegexp('metadataWithoutRoot'));
  });

  test('warns without a reapply schedule', () => {
    // GIVEN
    const stack = newStack();

    // WHEN
    new IpLockdown(stack, 'Lock', {});

    // THEN
    Annotations.fromStack(stack).hasWarning('/Stack/Lock',
      Match.stringLikeRegexp('UserData, which runs at first boot.*ack: cdk-ip-lockdown:IpLockdown.noReapplySchedule'));
  });

  test('does not warn with a reapply schedule', () => {
    // GIVEN
    const stack = newStack();

    // WHEN
    new IpLockdown(stack, 'Lock', { reapplySchedule: ReapplySchedule.rate(Duration.hours(1)) });

    // THEN
    Annotations.fromStack(stack).hasNoWarning('/Stack/Lock', Match.stringLikeRegexp('noReapplySchedule'));
  });

  test('lets a warning be acknowledged', () => {
    // GIVEN
    const stack = newStack();
    const lock = new IpLockdown(stack, 'Lock', {});

    // WHEN
    CoreAnnotations.of(lock).acknowledgeWarning('cdk-ip-lockdown:IpLockdown.noReapplySchedule', 'replaced on every change');

    // THEN
    Annotations.fromStack(stack).hasNoWarning('/Stack/Lock', Match.stringLikeRegexp('noReapplySchedule'));
  });
});
