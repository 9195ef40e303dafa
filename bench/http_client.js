'use strict';
// HTTP client benchmark, node peer: the same job as http_client.lua on node's global fetch
// (undici, keep-alive connections by default), WIDTH workers on a shared counter.
// usage: node http_client.js URL [COUNT=5000] [WIDTH=32] [SIZE=1024]
// prints "ok COUNT SECONDS"; exits 1 on any bad response or transport failure.
const url = process.argv[2];
const count = Number(process.argv[3] || 5000);
const width = Number(process.argv[4] || 32);
const size = Number(process.argv[5] || 1024);

let started = 0;
let good = 0;
let bad = 0;
let firstBad = null;

async function worker() {
  while (started < count) {
    started++;
    try {
      const res = await fetch(url);
      const body = await res.arrayBuffer(); // reads the body to the end, so the socket is reused
      if (res.status === 200 && body.byteLength === size) good++;
      else {
        bad++;
        if (firstBad === null) firstBad = `status ${res.status}, ${body.byteLength} body bytes`;
      }
    } catch (err) {
      bad++;
      if (firstBad === null) firstBad = String(err && err.cause ? `${err} (${err.cause})` : err);
    }
  }
}

if (!url) {
  console.error('usage: node http_client.js URL [COUNT] [WIDTH] [SIZE]');
  process.exit(2);
}
const t0 = process.hrtime.bigint();
Promise.all(Array.from({ length: width }, worker)).then(() => {
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  if (good !== count) {
    console.error(`http_client.js: ${good} of ${count} responses good, ${bad} bad; first bad: ${firstBad}`);
    process.exit(1);
  }
  console.log(`ok ${good} ${elapsed.toFixed(6)}`);
});
