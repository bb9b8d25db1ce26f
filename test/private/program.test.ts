import * as zlib from 'zlib';
import { encodedProgram, gzipBase64, stripProgram } from '../../src/private/program';

describe('stripProgram', () => {
  test('drops comments and indentation', () => {
    // GIVEN
    const source = [
      '#!/bin/sh',
      '# a header comment',
      'set -eu',
      '',
      'main() {',
      '\t# an indented comment',
      '\tlocal name="$1" # a trailing comment stays',
      '    echo "#not a comment" >&2',
      '}',
      '  #no space after the hash',
      'main "$@"',
    ].join('\n');

    // WHEN
    const stripped = stripProgram(source);

    // THEN
    expect(stripped).toBe([
      '#!/bin/sh',
      'set -eu',
      '',
      'main() {',
      'local name="$1" # a trailing comment stays',
      'echo "#not a comment" >&2',
      '}',
      'main "$@"',
    ].join('\n'));
  });

  test('drops a first-line comment', () => {
    expect(stripProgram('# comment\necho hi')).toBe('echo hi');
  });

  test('keeps heredoc bodies that follow the rules', () => {
    // GIVEN
    const source = [
      '#!/bin/sh',
      'cat <<EOF',
      '[Unit]',
      'Description=x',
      '',
      '[Service]',
      'EOF',
    ].join('\n');

    // WHEN / THEN
    expect(stripProgram(source)).toBe(source);
  });
});

describe('gzipBase64', () => {
  test('round-trips through gunzip', () => {
    // GIVEN
    const text = 'echo hello\n'.repeat(200);

    // WHEN
    const encoded = gzipBase64(text);

    // THEN
    expect(zlib.gunzipSync(Buffer.from(encoded.replace(/\n/g, ''), 'base64')).toString('utf8')).toBe(text);
  });

  test('wraps lines at 76 characters', () => {
    // GIVEN
    const text = Array.from({ length: 500 }, (_, index) => `line ${index * 7919}`).join('\n');

    // WHEN
    const lines = gzipBase64(text).split('\n');

    // THEN
    expect(lines.length).toBeGreaterThan(2);
    expect(lines.slice(0, -1).every((line) => line.length === 76)).toBe(true);
    expect(lines[lines.length - 1].length).toBeLessThanOrEqual(76);
  });

  test('writes a fixed gzip header', () => {
    // WHEN
    const header = Buffer.from(gzipBase64('x').replace(/\n/g, ''), 'base64').subarray(0, 10);

    // THEN
    expect(header.readUInt32LE(4)).toBe(0);
    expect(header[9]).toBe(3);
  });
});

describe('encodedProgram', () => {
  test('encodes the packaged program', () => {
    // WHEN
    const decoded = zlib.gunzipSync(Buffer.from(encodedProgram().replace(/\n/g, ''), 'base64')).toString('utf8');

    // THEN
    expect(decoded.startsWith('#!/bin/sh\n')).toBe(true);
    expect(decoded).toContain('--install-boot-service');
    expect(decoded.split('\n').filter((line) => /^[ \t]/.test(line) || (line.startsWith('#') && !line.startsWith('#!')))).toEqual([]);
  });
});
