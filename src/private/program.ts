import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';

/**
 * Location of the on-instance program in the package. This file compiles to
 * `lib/private/` and runs from `src/private/` under ts-jest, so two levels up
 * is the package root in both cases.
 */
export const PROGRAM_SOURCE_PATH = path.join(__dirname, '..', '..', 'assets', 'ip-lockdown.sh');

// Byte 9 of a gzip header names the operating system that wrote it, and zlib
// fills in the build machine's. Fixing it to Unix (3) keeps the output the same
// wherever the app is synthesized.
const GZIP_OS_BYTE = 9;
const GZIP_OS_UNIX = 3;

const BASE64_LINE_LENGTH = 76;

let cachedEncoding: string | undefined;

/**
 * Shrinks the program for embedding: drops every line whose first non-blank
 * character is `#` (except the shebang on line 1) and every line's leading
 * indentation. Blank lines stay, so line numbers in shell error messages still
 * point near the right place.
 *
 * NOTE: this is safe only because the program keeps its heredoc bodies free of
 * `#`-leading lines and of significant indentation.
 */
export function stripProgram(source: string): string {
  const lines = source.split('\n');
  const keptLines: string[] = [];
  lines.forEach((line, index) => {
    const trimmed = line.replace(/^[ \t]+/, '');
    if (index === 0 && trimmed.startsWith('#!')) {
      keptLines.push(trimmed);
    } else if (!trimmed.startsWith('#')) {
      keptLines.push(trimmed);
    }
  });
  return keptLines.join('\n');
}

/** Compresses text with gzip level 9 and encodes it as base64 in lines of 76 characters. */
export function gzipBase64(text: string): string {
  const compressed = zlib.gzipSync(Buffer.from(text, 'utf8'), { level: 9 });
  compressed[GZIP_OS_BYTE] = GZIP_OS_UNIX;
  const encoded = compressed.toString('base64');
  const lines: string[] = [];
  for (let offset = 0; offset < encoded.length; offset += BASE64_LINE_LENGTH) {
    lines.push(encoded.slice(offset, offset + BASE64_LINE_LENGTH));
  }
  return lines.join('\n');
}

/**
 * Returns the program, stripped, gzipped and base64-encoded, read from the
 * package once per process.
 *
 * @throws when the program file is missing from the package
 */
export function encodedProgram(): string {
  if (cachedEncoding === undefined) {
    if (!fs.existsSync(PROGRAM_SOURCE_PATH)) {
      throw new Error(`cdk-ip-lockdown: the on-instance program was not found at ${PROGRAM_SOURCE_PATH}. The package is incomplete; reinstall cdk-ip-lockdown.`);
    }
    const source = fs.readFileSync(PROGRAM_SOURCE_PATH, 'utf8');
    cachedEncoding = gzipBase64(stripProgram(source));
  }
  return cachedEncoding;
}
