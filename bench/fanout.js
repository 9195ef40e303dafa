'use strict';
// Fan-out benchmark, node peer: the same job as fanout.lua on child_process.execFile, which
// captures stdout like proc.run does.
// usage: node fanout.js [COUNT=400] [WIDTH=16]; prints "ok COUNT", exits 1 on any bad child.
const { execFile } = require('node:child_process');

const count = Number(process.argv[2] || 400);
const width = Number(process.argv[3] || 16);

let started = 0;
let good = 0;
let firstBad = null;

function runOne() {
  return new Promise((resolve) => {
    execFile('sh', ['-c', 'echo hi'], (err, stdout, stderr) => {
      resolve(err || stdout !== 'hi\n' ? { err, stdout, stderr } : null);
    });
  });
}

// A pool of workers on a shared counter, as in fanout.lua, rather than 400 promises behind a
// semaphore: it keeps the two sides' scheduling identical.
async function worker() {
  while (started < count) {
    started++;
    const bad = await runOne();
    if (bad === null) good++;
    else if (firstBad === null) firstBad = bad;
  }
}

Promise.all(Array.from({ length: width }, worker)).then(() => {
  if (good !== count) {
    console.error(`fanout.js: ${good} of ${count} children good; first bad:`, firstBad);
    process.exit(1);
  }
  console.log(`ok ${good}`);
});
