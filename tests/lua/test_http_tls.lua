-- TLS is verified by default: a local HTTPS server with a self-signed certificate is refused,
-- and accepted with `insecure = true` (with a warning).
-- And the connect timeout is the connect's: a server that never completes the handshake.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local http = require("stagehost.http")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

-- An HTTPS server (python's http.server under ssl) on a free loopback port, with a certificate
-- for 127.0.0.1 made by openssl for this test. -> server {url, cert, stop}
local function https_server()
  local dir = T.tempdir()
  local made = proc.run{ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    "-keyout", dir .. "/key.pem", "-out", dir .. "/cert.pem", quiet = true }
  T.eq(made.code, 0, made.stderr)
  assert(fs.write(dir .. "/hello.txt", "hello over tls\n"))
  local server = proc.spawn{ "python3", "-u", "-c", [[
import http.server, ssl, sys, os
os.chdir(sys.argv[1])
srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("cert.pem", "key.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
]], dir, lines = true }
  local _, port = server:read_line()
  T.ok(tonumber(port), "the server's port: " .. tostring(port))
  return { url = ("https://127.0.0.1:%s/hello.txt"):format(port), cert = dir .. "/cert.pem",
    stop = function()
      server:kill("TERM")
      server:wait()
      fs.remove(dir, { recursive = true })
    end }
end

T.test("https: a self-signed certificate is refused by default, accepted with insecure = true", function()
  local s = https_server()
  local ok, err = pcall(http.request, { url = s.url, timeout = 10 })
  T.eq(ok, false, "refused")
  T.match(tostring(err), "[Cc]ertificate", "a certificate problem is named")
  -- insecure: accepted, with a warning on the log (in a child host, to read its stderr)
  local r = proc.run{ STAGEHOST, "-e", ("print(require('stagehost.http').request{ url = %q, insecure = true }.body)"):format(s.url),
    timeout = 30 }
  T.eq(r.code, 0, r.stderr)
  T.eq(r.stdout, "hello over tls\n\n")
  T.match(r.stderr, "TLS verification is off for https://127%.0%.0%.1:%d+/hello%.txt %(insecure = true%)")
  s.stop()
end)

T.test("connect_timeout bounds the connect, not the whole request", function()
  -- a listening socket whose accept queue is full never completes another handshake
  local holder = proc.spawn{ "python3", "-u", "-c", [[
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
fill = []
for _ in range(8):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(s.getsockname())
    except BlockingIOError:
        pass
    fill.append(c)
time.sleep(0.2)
print(s.getsockname()[1], flush=True)
time.sleep(60)
]], lines = true }
  local _, port = holder:read_line()
  T.ok(tonumber(port))
  local t0 = task.now()
  local ok, err = pcall(http.request, { url = ("http://127.0.0.1:%s/"):format(port), connect_timeout = 0.5, timeout = 30 })
  local took = task.now() - t0
  T.eq(ok, false)
  T.match(tostring(err):lower(), "time", "a timeout: " .. tostring(err))
  T.ok(took < 10, "the connect timeout ended it, not the 30 s total: " .. took .. " s")
  T.ok(took >= 0.4, "not before the connect timeout: " .. took .. " s")
  holder:kill("KILL")
  holder:wait()
end)

T.run()
