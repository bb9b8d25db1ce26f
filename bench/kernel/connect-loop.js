// Connects to HOST:PORT from SOURCE over and over, as whatever user runs it, and
// counts attempts and completed TCP handshakes (a handshake that completes means
// the lock let the SYN out). Stops when STOP_FILE exists, after MAX_SECONDS, or
// after MAX_ATTEMPTS, whichever comes first; then writes a JSON summary to OUT_FILE.
//
// Usage: node connect-loop.js HOST PORT SOURCE STOP_FILE OUT_FILE MAX_SECONDS MAX_ATTEMPTS PARALLEL
'use strict';
const fs = require('fs');
const net = require('net');

const [host, portText, source, stopFile, outFile, maxSecondsText, maxAttemptsText, parallelText] = process.argv.slice(2);
const port = Number(portText);
const maxMs = Number(maxSecondsText) * 1000;
const maxAttempts = Number(maxAttemptsText);
const parallel = Number(parallelText);
// A SYN that vanishes (no reset, no ICMP error) would hang the connect; a REJECT never does.
const CONNECT_TIMEOUT_MS = 1000;

const startedAt = Date.now();
let attempts = 0;
let successes = 0;
let firstSuccessAt = null;
let lastSuccessAt = null;
const errors = {};
let stopping = false;

function stop() {
  if (stopping) {
    return;
  }
  stopping = true;
  clearInterval(watcher);
}

function finish() {
  const summary = {
    attempts,
    successes,
    errors,
    startedAt,
    endedAt: Date.now(),
    firstSuccessAt,
    lastSuccessAt,
  };
  fs.writeFileSync(outFile, JSON.stringify(summary));
}

function attemptOnce(done) {
  if (stopping || attempts >= maxAttempts || Date.now() - startedAt >= maxMs) {
    stop();
    done();
    return;
  }
  attempts += 1;
  let settled = false;
  const socket = net.connect({ host, port, localAddress: source });
  const timer = setTimeout(() => settle('timeout'), CONNECT_TIMEOUT_MS);
  function settle(outcome) {
    if (settled) {
      return;
    }
    settled = true;
    clearTimeout(timer);
    if (outcome === 'connected') {
      const now = Date.now();
      successes += 1;
      firstSuccessAt = firstSuccessAt ?? now;
      lastSuccessAt = now;
      // A reset instead of a FIN leaves no TIME_WAIT entry, so a long window
      // cannot use up the ephemeral ports.
      socket.resetAndDestroy();
    } else {
      errors[outcome] = (errors[outcome] ?? 0) + 1;
      socket.destroy();
    }
    setImmediate(() => attemptOnce(done));
  }
  socket.once('connect', () => settle('connected'));
  socket.once('error', (error) => settle(error.code ?? 'error'));
}

const watcher = setInterval(() => {
  if (fs.existsSync(stopFile)) {
    stop();
  }
}, 20);

let running = parallel;
for (let i = 0; i < parallel; i += 1) {
  attemptOnce(() => {
    running -= 1;
    if (running === 0) {
      finish();
    }
  });
}
