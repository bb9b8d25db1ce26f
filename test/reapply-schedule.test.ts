import { Duration, Lazy, Token } from 'aws-cdk-lib';
import { ReapplySchedule } from '../src';

describe('ReapplySchedule.rate', () => {
  test.each([
    [Duration.minutes(30), 'rate(30 minutes)'],
    [Duration.minutes(90), 'rate(90 minutes)'],
    [Duration.hours(1), 'rate(1 hour)'],
    [Duration.minutes(120), 'rate(2 hours)'],
    [Duration.days(1), 'rate(1 day)'],
    [Duration.hours(48), 'rate(2 days)'],
    [Duration.days(30), 'rate(30 days)'],
    [Duration.seconds(1800), 'rate(30 minutes)'],
  ])('renders %s as %s', (interval, expected) => {
    expect(ReapplySchedule.rate(interval).expressionString).toBe(expected);
  });

  test('rejects an interval under 30 minutes', () => {
    expect(() => ReapplySchedule.rate(Duration.minutes(29))).toThrow(/at least 30 minutes and less than 31 days/);
  });

  test('rejects an interval of 31 days', () => {
    expect(() => ReapplySchedule.rate(Duration.days(31))).toThrow(/less than 31 days/);
  });

  test('rejects a fraction of a minute', () => {
    expect(() => ReapplySchedule.rate(Duration.seconds(1830))).toThrow(/not a whole number of minutes/);
  });

  test('rejects an unresolved token', () => {
    const interval = Duration.minutes(Token.asNumber(Lazy.number({ produce: () => 30 })));
    expect(() => ReapplySchedule.rate(interval)).toThrow(/ReapplySchedule.rate: an unresolved token is not supported/);
  });
});

describe('ReapplySchedule.cron', () => {
  test.each([
    ['0 2 ? * SUN *', 'cron(0 2 ? * SUN *)'],
    ['cron(0 2 ? * SUN *)', 'cron(0 2 ? * SUN *)'],
    ['0/30 * * * ? *', 'cron(0/30 * * * ? *)'],
    ['0 0/4 * * ? *', 'cron(0 0/4 * * ? *)'],
    ['15 13 ? * MON-FRI *', 'cron(15 13 ? * MON-FRI *)'],
    ['0 8 1 JAN,JUL ? *', 'cron(0 8 1 JAN,JUL ? *)'],
    ['0 2 ? * THU#2 *', 'cron(0 2 ? * THU#2 *)'],
    ['0 2 L * ? *', 'cron(0 2 L * ? *)'],
    ['0   */30  *  * * ?  *', 'cron(0 */30 * * * ? *)'],
  ])('renders %s as %s', (expression, expected) => {
    expect(ReapplySchedule.cron(expression).expressionString).toBe(expected);
  });

  test.each([
    ['five fields', '0 2 * * ?', /has 6 fields .* found 5/],
    ['eight fields', '0 0 2 * * ? * *', /found 8/],
    ['a seconds field other than 0', '30 0 2 * * ? *', /seconds field .* can only be 0/],
    ['a letter in the hours field', '0 H * * ? *', /the hours field 'H' may contain only digits and , - \* \//],
    ['a question mark in the minutes field', '? 2 * * ? *', /the minutes field/],
    ['a hash in the day-of-month field', '0 2 1#2 * ? *', /the day-of-month field/],
    ['an unknown month name', '0 2 1 FOO ? *', /'FOO' in the month field is not a valid name/],
    ['an unknown day name', '0 2 ? * FUN *', /'FUN' in the day-of-week field is not a valid name/],
    ['a shell metacharacter', '0 2 ? * SUN $(reboot)', /year field/],
    ['both day fields set', '0 2 1 * MON *', /exactly one of day-of-month \('1'\) and day-of-week \('MON'\) must be '\?'/],
    ['both day fields as question marks', '0 2 ? * ? *', /exactly one of day-of-month/],
  ])('rejects %s', (_case, expression, message) => {
    expect(() => ReapplySchedule.cron(expression)).toThrow(message);
  });

  test('rejects an unresolved token', () => {
    expect(() => ReapplySchedule.cron(Lazy.string({ produce: () => '0 2 ? * SUN *' })))
      .toThrow(/ReapplySchedule.cron: an unresolved token is not supported/);
  });
});

describe('ReapplySchedule.expression', () => {
  test.each([
    'rate(30 minutes)',
    'rate(1 hour)',
    'rate(12 hours)',
    'rate(1 day)',
    'rate(30 days)',
    'cron(0 2 ? * SUN *)',
  ])('accepts %s', (expression) => {
    expect(ReapplySchedule.expression(expression).expressionString).toBe(expression);
  });

  test.each([
    ['a singular unit for 2', 'rate(2 hour)', /singular for 1 and plural otherwise/],
    ['a plural unit for 1', 'rate(1 hours)', /singular for 1 and plural otherwise/],
    ['29 minutes', 'rate(29 minutes)', /at least 30 minutes/],
    ['31 days', 'rate(31 days)', /less than 31 days/],
    ['seconds', 'rate(3600 seconds)', /not a rate or cron expression/],
    ['a one-time schedule', 'at(2030-01-01T00:00:00)', /not a rate or cron expression/],
    ['a bad cron', 'cron(0 2 * * *)', /found 5/],
    ['text', 'daily', /not a rate or cron expression/],
  ])('rejects %s', (_case, expression, message) => {
    expect(() => ReapplySchedule.expression(expression)).toThrow(message);
  });

  test('rejects an unresolved token', () => {
    expect(() => ReapplySchedule.expression(Lazy.string({ produce: () => 'rate(1 hour)' })))
      .toThrow(/ReapplySchedule.expression: an unresolved token is not supported/);
  });
});
