'use strict';
// Many-tasks benchmark, node peer: N promises each resolving after a S-second setTimeout.
// usage: node sleepers.js [N=10000] [S=0.2]; prints "ok N", exits 1 on a wrong result.
const n = Number(process.argv[2] || 10000);
const ms = Number(process.argv[3] || 0.2) * 1000;

const sleepers = Array.from({ length: n }, (_, i) => new Promise((resolve) => {
  setTimeout(() => resolve(i + 1), ms);
}));

Promise.all(sleepers).then((results) => {
  // The same checksum as sleepers.lua, so both sides prove every sleeper finished.
  const sum = results.reduce((a, b) => a + b, 0);
  if (results.length !== n || sum !== (n * (n + 1)) / 2) {
    console.error(`sleepers.js: ${results.length} results, checksum ${sum}`);
    process.exit(1);
  }
  console.log(`ok ${n}`);
});
