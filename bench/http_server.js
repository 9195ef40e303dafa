'use strict';
// HTTP server benchmark, node peer: the same hello-world server as http_server.lua on node's
// http module (keep-alive by default).
// usage: node http_server.js; prints the port once it listens, then serves until terminated.
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.statusCode = 200;
  res.end('hello');
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
