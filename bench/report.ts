/** Goal verdicts of one benchmark run, printed again at the end of the run. */
export interface Verdict {
  readonly benchmark: string;
  readonly description: string;
  readonly pass: boolean;
}

const verdicts: Verdict[] = [];

/** Records a goal check and returns the PASS/MISS word for the line being printed. */
export function judge(benchmark: string, description: string, pass: boolean): string {
  verdicts.push({ benchmark, description, pass });
  return pass ? 'PASS' : 'MISS';
}

/** Prints every recorded verdict and returns the number of misses. */
export function printVerdicts(title: string): number {
  const misses = verdicts.filter((verdict) => !verdict.pass).length;
  console.log(`\n${title}: ${verdicts.length - misses} PASS, ${misses} MISS`);
  for (const verdict of verdicts) {
    console.log(`  ${verdict.pass ? 'PASS' : 'MISS'}  [${verdict.benchmark}] ${verdict.description}`);
  }
  return misses;
}

/** Formats microseconds as milliseconds with one decimal. */
export function ms(microseconds: number): string {
  return `${(microseconds / 1000).toFixed(1)} ms`;
}

/** Formats a ratio with two significant decimals. */
export function times(ratio: number): string {
  return `${ratio.toFixed(2)}x`;
}

/** Returns the median of a non-empty list of numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** Parses "KEY key=value key="quoted value" ..." lines printed by the bench scripts. */
export function parseRecords(output: string, key: string): Array<Record<string, string>> {
  const records: Array<Record<string, string>> = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith(`${key} `)) {
      continue;
    }
    const record: Record<string, string> = {};
    for (const match of line.slice(key.length + 1).matchAll(/([a-z_]+)=("([^"]*)"|\S*)/g)) {
      record[match[1]] = match[3] ?? match[2];
    }
    records.push(record);
  }
  return records;
}
