import { Duration, Token } from 'aws-cdk-lib';

// State Manager runs associations on rate expressions of at least 30 minutes
// and less than 31 days, with units minute(s), hour(s) or day(s).
const MIN_RATE_MINUTES = 30;
const MAX_RATE_MINUTES_EXCLUSIVE = 31 * 24 * 60;

const RATE_EXPRESSION = /^rate\(([1-9][0-9]*) (minute|minutes|hour|hours|day|days)\)$/;
const CRON_EXPRESSION = /^cron\((.*)\)$/;

const MONTH_NAMES = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAY_NAMES = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

/** One field of a Systems Manager cron expression: its name, allowed characters and words. */
interface CronField {
  readonly name: string;
  readonly characters: RegExp;
  readonly allowedCharacters: string;
  readonly words?: string[];
}

// Fields and wildcards of Systems Manager cron expressions, in order.
const CRON_FIELDS: CronField[] = [
  { name: 'minutes', characters: /^[0-9,*/-]+$/, allowedCharacters: 'digits and , - * /' },
  { name: 'hours', characters: /^[0-9,*/-]+$/, allowedCharacters: 'digits and , - * /' },
  { name: 'day-of-month', characters: /^[0-9,*/?LW-]+$/, allowedCharacters: 'digits and , - * / ? L W' },
  { name: 'month', characters: /^[0-9A-Za-z,*/-]+$/, allowedCharacters: 'digits, JAN to DEC and , - * /', words: MONTH_NAMES },
  { name: 'day-of-week', characters: /^[0-9A-Za-z,*/?L#-]+$/, allowedCharacters: 'digits, SUN to SAT and , - * ? L #', words: [...DAY_NAMES, 'L'] },
  { name: 'year', characters: /^[0-9,*/-]+$/, allowedCharacters: 'digits and , - * /' },
];

/**
 * How often the SSM State Manager association reapplies the lock on running instances.
 *
 * Rendered as the association's `ScheduleExpression`. Each factory checks the
 * limits State Manager puts on association schedules, so a bad schedule fails
 * at synth time rather than at deploy time.
 *
 * @see https://docs.aws.amazon.com/systems-manager/latest/userguide/reference-cron-and-rate-expressions.html
 */
export class ReapplySchedule {
  /**
   * A fixed interval, such as `ReapplySchedule.rate(Duration.minutes(30))`.
   *
   * Rendered in the largest whole unit: 90 minutes as `rate(90 minutes)`,
   * 2 hours as `rate(2 hours)`, 1 day as `rate(1 day)`.
   *
   * @param interval at least 30 minutes and less than 31 days, a whole number of minutes
   */
  public static rate(interval: Duration): ReapplySchedule {
    if (interval.isUnresolved()) {
      throw new Error('ReapplySchedule.rate: an unresolved token is not supported as the interval. Use a literal Duration, such as Duration.minutes(30).');
    }
    const minutes = interval.toMinutes({ integral: false });
    if (!Number.isInteger(minutes)) {
      throw new Error(`ReapplySchedule.rate: the interval ${interval.toHumanString()} is not a whole number of minutes.`);
    }
    checkRateRange(minutes, `ReapplySchedule.rate(${interval.toHumanString()})`);
    return new ReapplySchedule(renderRate(minutes));
  }

  /**
   * A cron schedule in UTC, such as `ReapplySchedule.cron('0 2 ? * SUN *')` for
   * 02:00 every Sunday.
   *
   * Six fields: minutes, hours, day-of-month, month, day-of-week, year; or seven
   * with a leading seconds field, which must be 0. One of day-of-month and
   * day-of-week must be `?`. The expression may also be given wrapped, as
   * `cron(0 2 ? * SUN *)`.
   *
   * NOTE: State Manager accepts only some cron schedules for associations
   * (every 30 minutes, every 1, 2, 4, 8 or 12 hours, or daily or weekly at a set
   * time). This method checks the fields and their characters; a schedule of
   * another shape passes here and is rejected at deploy time.
   *
   * @param expression the cron fields, separated by spaces
   */
  public static cron(expression: string): ReapplySchedule {
    if (Token.isUnresolved(expression)) {
      throw new Error('ReapplySchedule.cron: an unresolved token is not supported as the expression. Use a literal cron expression, such as \'0 2 ? * SUN *\'.');
    }
    const wrapped = CRON_EXPRESSION.exec(expression.trim());
    const fields = wrapped ? wrapped[1] : expression;
    return new ReapplySchedule(`cron(${validateCronFields(fields)})`);
  }

  /**
   * A schedule expression as State Manager writes it: `rate(30 minutes)`,
   * `rate(1 hour)` or `cron(0 2 ? * SUN *)`.
   *
   * Useful when the schedule comes from configuration. It is checked like
   * `rate()` and `cron()`, and a rate's unit must be singular for 1 and plural
   * otherwise, as State Manager requires.
   *
   * @param expression a `rate(...)` or `cron(...)` expression
   */
  public static expression(expression: string): ReapplySchedule {
    if (Token.isUnresolved(expression)) {
      throw new Error('ReapplySchedule.expression: an unresolved token is not supported. Use a literal expression, such as \'rate(30 minutes)\'.');
    }
    const text = expression.trim();

    const rate = RATE_EXPRESSION.exec(text);
    if (rate) {
      const value = Number(rate[1]);
      const unit = rate[2];
      const plural = unit.endsWith('s');
      if ((value === 1) === plural) {
        throw new Error(`ReapplySchedule.expression: '${text}' is invalid: the unit must be singular for 1 and plural otherwise, such as 'rate(1 hour)' or 'rate(2 hours)'.`);
      }
      const minutesPerUnit = unit.startsWith('day') ? 24 * 60 : unit.startsWith('hour') ? 60 : 1;
      checkRateRange(value * minutesPerUnit, `ReapplySchedule.expression('${text}')`);
      return new ReapplySchedule(text);
    }

    if (CRON_EXPRESSION.test(text)) {
      return ReapplySchedule.cron(text);
    }

    throw new Error(`ReapplySchedule.expression: '${text}' is not a rate or cron expression. Use a form such as 'rate(30 minutes)', 'rate(1 day)' or 'cron(0 2 ? * SUN *)'.`);
  }

  /**
   * The schedule as State Manager's `ScheduleExpression`, such as `rate(30 minutes)`.
   */
  public readonly expressionString: string;

  private constructor(expressionString: string) {
    this.expressionString = expressionString;
  }
}

function checkRateRange(minutes: number, prefix: string): void {
  if (minutes < MIN_RATE_MINUTES || minutes >= MAX_RATE_MINUTES_EXCLUSIVE) {
    throw new Error(`${prefix}: State Manager runs associations at intervals of at least 30 minutes and less than 31 days.`);
  }
}

function renderRate(minutes: number): string {
  const [value, unit] = minutes % (24 * 60) === 0
    ? [minutes / (24 * 60), 'day']
    : minutes % 60 === 0
      ? [minutes / 60, 'hour']
      : [minutes, 'minute'];
  return `rate(${value} ${unit}${value === 1 ? '' : 's'})`;
}

/**
 * Checks the fields of a cron expression and returns them joined by single spaces.
 */
function validateCronFields(text: string): string {
  const prefix = `ReapplySchedule.cron('${text}')`;
  const fields = text.trim().split(/\s+/).filter((field) => field !== '');

  if (fields.length !== 6 && fields.length !== 7) {
    throw new Error(`${prefix}: a cron expression has 6 fields (minutes hours day-of-month month day-of-week year) or 7 with a leading seconds field; found ${fields.length}.`);
  }
  if (fields.length === 7) {
    if (fields[0] !== '0') {
      throw new Error(`${prefix}: the seconds field of an association's cron expression can only be 0.`);
    }
  }

  const named = fields.length === 7 ? fields.slice(1) : fields;
  named.forEach((value, index) => {
    const field = CRON_FIELDS[index];
    if (!field.characters.test(value)) {
      throw new Error(`${prefix}: the ${field.name} field '${value}' may contain only ${field.allowedCharacters}.`);
    }
    for (const word of value.match(/[A-Za-z]+/g) ?? []) {
      // L and W are single-letter wildcards that may follow a number (5L, 15W).
      const wildcard = (field.name === 'day-of-month' && (word === 'L' || word === 'W' || word === 'LW'))
        || (field.name === 'day-of-week' && word === 'L');
      if (!wildcard && !(field.words ?? []).includes(word.toUpperCase())) {
        throw new Error(`${prefix}: '${word}' in the ${field.name} field is not a valid name; use ${field.allowedCharacters}.`);
      }
    }
  });

  const dayOfMonth = named[2];
  const dayOfWeek = named[4];
  if ((dayOfMonth === '?') === (dayOfWeek === '?')) {
    throw new Error(`${prefix}: exactly one of day-of-month ('${dayOfMonth}') and day-of-week ('${dayOfWeek}') must be '?'.`);
  }

  return fields.join(' ');
}
