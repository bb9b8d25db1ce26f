#!/usr/bin/env node
// Checks that each Python example in README.md is what jsii-rosetta makes of
// the TypeScript example just before it. Rosetta compiles the TypeScript
// examples (strict mode) and writes their translations to .jsii.tabl.json.
// The Python package cannot be imported without PyPI, so the translation is
// the check.
// Run after `jsii-rosetta extract`. Exits 1 and prints the expected Python on a
// mismatch.
'use strict';

const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const tablet = JSON.parse(fs.readFileSync(path.join(root, '.jsii.tabl.json'), 'utf8'));

// Blank-line runs differ between rosetta's output and hand-written code.
function normalize(source) {
  return source.replace(/\n{2,}/g, '\n\n').trim();
}

function pythonTranslationOf(typescript) {
  const source = typescript.trim();
  for (const snippet of Object.values(tablet.snippets)) {
    if (snippet.translations.$.source.trim() === source) {
      return snippet.translations.python?.source;
    }
  }
  return undefined;
}

const blocks = [...readme.matchAll(/^```(\w+)[^\n]*\n([\s\S]*?)^```$/gm)]
  .map((match) => ({ language: match[1], source: match[2], line: readme.slice(0, match.index).split('\n').length }));

let failures = 0;
let checked = 0;
blocks.forEach((block, index) => {
  if (block.language !== 'python') {
    return;
  }
  const previous = blocks[index - 1];
  if (previous === undefined || previous.language !== 'ts') {
    console.error(`README.md:${block.line}: a Python example must follow the TypeScript example it translates`);
    failures++;
    return;
  }
  const expected = pythonTranslationOf(previous.source);
  if (expected === undefined) {
    console.error(`README.md:${previous.line}: jsii-rosetta has no Python translation of this example; run jsii-rosetta extract first`);
    failures++;
    return;
  }
  if (normalize(expected) !== normalize(block.source)) {
    console.error(`README.md:${block.line}: the Python example differs from jsii-rosetta's translation of the TypeScript example above it. Expected:\n${normalize(expected)}\n`);
    failures++;
    return;
  }
  checked++;
});

if (failures > 0) {
  process.exit(1);
}
console.error(`check-readme-python: ${checked} Python examples match their TypeScript examples`);
