-- http.serve (stagehost.core.http_server), driven by the real curl and by raw sockets from
-- python3: request fields, bodies, keep-alive, pipelining, limits, slow clients, yielding
-- handlers, errors, streaming, closing. Every test closes its server, so the harness's leak
-- check also proves that connections and handler tasks are gone afterwards.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local core = require("stagehost.core.http_server")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

local function url(srv, path) return ("http://127.0.0.1:%d%s"):format(srv.port, path or "/") end

-- curl(args...[, {stdin = ...}]) -> proc.run's result
local function curl(...)
  local argv = { "curl", "-s", "--max-time", "20", ... }
  if type(argv[#argv]) == "table" then
    for k, v in pairs(table.remove(argv)) do argv[k] = v end
  end
  return proc.run(argv)
end

-- A raw client: sends stdin to the port, reads until EOF (or 10 s), prints what it got on stdout
-- and the seconds from sending to EOF on stderr. Modes: "shut" half-closes after sending.
local RAW = [[
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
data = sys.stdin.buffer.read()
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(data)
t0 = time.time()
if "shut" in mode:
    s.shutdown(socket.SHUT_WR)
out = b""
while True:
    try:
        b = s.recv(65536)
    except socket.timeout:
        out += b"<timeout>"
        break
    except ConnectionResetError:
        out += b"<reset>"
        break
    if not b:
        break
    out += b
sys.stdout.buffer.write(out)
sys.stderr.write("%.3f" % (time.time() - t0))
]]

-- the interpreter itself: a version manager's shim would add most of a second per call
local PYTHON = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"

local function raw(srv, data, mode)
  local r = proc.run{ PYTHON, "-I", "-S", "-c", RAW, srv.port, mode or "-", stdin = data, timeout = 30 }
  T.eq(r.code, 0, "raw client: " .. r.stderr)
  return r.stdout, tonumber(r.stderr)
end

-- Count "HTTP/1.1 " status lines in a raw response stream, in order.
local function statuses(s)
  local out = {}
  for code in s:gmatch("HTTP/1%.1 (%d%d%d)") do out[#out + 1] = code end
  return table.concat(out, ",")
end

local function echo_handler(req)
  return { status = 200, headers = { ["content-type"] = "text/plain" }, body = req.method .. " " .. req.path .. " " .. req.body }
end

T.test("GET and POST: the request's fields", function()
  local seen
  local srv <close> = core.serve{ handler = function(req)
    seen = req
    return "hello " .. req.method
  end }
  T.eq(srv.host, "127.0.0.1"); T.ok(srv.port > 0)
  local r = curl("-i", "-H", "X-Rep: a", "-H", "X-Rep: b", "-H", "X-Mixed-Case: Yes", url(srv, "/a/b?x=1&y=%20"))
  T.eq(r.code, 0)
  T.match(r.stdout, "^HTTP/1%.1 200 OK\r\n")
  T.has(r.stdout, "Content-Type: text/plain; charset=utf-8\r\n", "a string gets text/plain")
  T.has(r.stdout, "Content-Length: 9\r\n")
  T.match(r.stdout, "\r\n\r\nhello GET$")
  T.eq(seen.method, "GET"); T.eq(seen.path, "/a/b"); T.eq(seen.query, "x=1&y=%20")
  T.eq(seen.url, "/a/b?x=1&y=%20"); T.eq(seen.version, "1.1"); T.eq(seen.body, "")
  T.eq(seen.remote, "127.0.0.1")
  T.eq(seen.headers["x-rep"], "a, b", "repeated headers are joined")
  T.eq(seen.headers["x-mixed-case"], "Yes", "names are lower-cased, values kept")
  T.match(seen.headers["user-agent"], "^curl/")
  T.eq(seen.headers.Host, nil)
  T.eq(seen.headers.host, "127.0.0.1:" .. srv.port)

  local long = "/" .. ("l"):rep(70000)
  local big <close> = core.serve{ header_limit = 200000, handler = function(req) seen = req return "long" end }
  T.eq(raw(big, "GET " .. long .. "?q=1#f HTTP/1.1\r\nConnection: close\r\n\r\n"):match("long$"), "long")
  T.eq(seen.path, long, "a URL over 64 KiB is split too"); T.eq(seen.query, "q=1")
  raw(big, "OPTIONS * HTTP/1.1\r\nConnection: close\r\n\r\n")
  T.eq(seen.path, "*"); T.eq(seen.query, nil)
  raw(big, "GET http://example.com:8080/abs/p?x=y HTTP/1.1\r\nConnection: close\r\n\r\n")
  T.eq(seen.path, "/abs/p", "absolute form"); T.eq(seen.query, "x=y")
  local huge = ("h"):rep(150000)
  T.eq(statuses(raw(big, "GET / HTTP/1.1\r\nX-Huge: " .. huge .. "\r\nConnection: close\r\n\r\n")), "200",
    "a header_limit above http-parser's 80 KiB default holds")
  T.eq(seen.headers["x-huge"], huge)
  big:close()

  local lines = {}
  for i = 1, 20000 do lines[i] = "payload-" .. i end
  local body = table.concat(lines, "\n") .. "\0binary\255"
  r = curl("--data-binary", "@-", "-H", "Content-Type: application/octet-stream", url(srv, "/post"), { stdin = body })
  T.eq(r.stdout, "hello POST")
  T.eq(seen.method, "POST"); T.eq(seen.path, "/post"); T.eq(seen.query, nil)
  T.eq(seen.body, body); T.eq(seen.headers["content-length"], tostring(#body))
  srv:close()
end)

T.test("responses: status, headers, body; 204; HEAD; HTTP/1.0", function()
  local srv <close> = core.serve{ handler = function(req)
    if req.path == "/none" then return { status = 204, body = "ignored" } end
    if req.path == "/cookies" then return { headers = { ["set-cookie"] = { "a=1", "b=2" } }, body = "c" } end
    if req.path == "/odd" then return { status = 299, body = "odd" } end
    return { status = 409, headers = { ["X-Thing"] = "v", ["content-length"] = "999", ["X-Num"] = 7 }, body = "teapot" }
  end }
  local r = curl("-i", url(srv, "/x"))
  T.match(r.stdout, "^HTTP/1%.1 409 Conflict\r\n")
  T.has(r.stdout, "X-Thing: v\r\n"); T.has(r.stdout, "X-Num: 7\r\n")
  T.has(r.stdout, "Content-Length: 6\r\n", "Content-Length is the server's")
  T.no_match(r.stdout, "999"); T.no_match(r.stdout, "Content%-Type", "no default type for tables")
  T.match(r.stdout, "\r\n\r\nteapot$")
  T.match(curl("-i", url(srv, "/odd")).stdout, "^HTTP/1%.1 299 \r\n", "an unnamed status has an empty reason")
  r = curl("-i", url(srv, "/none"))
  T.match(r.stdout, "^HTTP/1%.1 204 No Content\r\n"); T.no_match(r.stdout, "ignored"); T.no_match(r.stdout, "Content%-Length")
  r = curl("-i", url(srv, "/cookies"))
  T.has(r.stdout, "set-cookie: a=1\r\n"); T.has(r.stdout, "set-cookie: b=2\r\n")
  r = curl("-I", url(srv, "/x"))
  T.has(r.stdout, "Content-Length: 6\r\n", "HEAD gets the length")
  T.no_match(r.stdout, "teapot", "but no body")
  local out = raw(srv, "GET /x HTTP/1.0\r\n\r\n")
  T.match(out, "^HTTP/1%.1 409"); T.has(out, "Connection: close\r\n"); T.match(out, "teapot$")
  out = raw(srv, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /none HTTP/1.0\r\n\r\n")
  T.eq(statuses(out), "409,204", "HTTP/1.0 keep-alive")
  T.has(out, "Connection: keep-alive\r\n")
  srv:close()
end)

T.test("a chunked request body is decoded", function()
  local srv <close> = core.serve{ handler = function(req)
    return req.headers["transfer-encoding"] .. ":" .. req.body
  end }
  local r = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunked world", url(srv, "/c"))
  T.eq(r.stdout, "chunked:hello chunked world")
  local out = raw(srv, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    .. "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
  T.match(out, "chunked:hello world$")
  srv:close()
end)

T.test("keep-alive: curl reuses the connection; Connection: close and HTTP/1.0 close it", function()
  local srv <close> = core.serve{ handler = echo_handler }
  local r = curl("-w", "[%{num_connects}]", url(srv, "/one"), url(srv, "/two"))
  T.eq(r.stdout, "GET /one [1]GET /two [0]")
  r = curl("-H", "Connection: close", "-w", "[%{num_connects}]", url(srv, "/one"), url(srv, "/two"))
  T.eq(r.stdout, "GET /one [1]GET /two [1]")
  r = curl("-0", "-w", "[%{num_connects}]", url(srv, "/one"), url(srv, "/two"))
  T.eq(r.stdout, "GET /one [1]GET /two [1]")
  srv:close()
end)

T.test("pipelining: requests sent at once are answered in order", function()
  local order = {}
  local srv <close> = core.serve{ handler = function(req)
    if req.path == "/slow" then task.sleep(0.2) end
    order[#order + 1] = req.path
    return req.path .. ":" .. req.body
  end }
  local out = raw(srv, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    .. "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    .. "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  T.eq(statuses(out), "200,200,200")
  local a, b, c = out:find("/slow:", 1, true), out:find("/fast:abc", 1, true), out:find("/last:", 1, true)
  T.ok(a and b and c and a < b and b < c, "responses in request order: " .. out)
  T.eq(table.concat(order, ","), "/slow,/fast,/last", "handled one after another")
  local many = {}
  for i = 1, 300 do many[i] = ("GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n"):format(i) end
  many[#many + 1] = "GET /end HTTP/1.1\r\nConnection: close\r\n\r\n"
  out = raw(srv, table.concat(many))
  local paths = {}
  for p in out:gmatch("\r\n\r\n(/[%w]+):") do paths[#paths + 1] = p end
  T.eq(#paths, 301, "every pipelined request answered")
  for i = 1, 300 do T.eq(paths[i], "/p" .. i) end
  T.eq(paths[301], "/end")
  srv:close()
end)

T.test("thousands of repeated headers are joined in one pass", function()
  local seen
  local srv <close> = core.serve{ handler = function(req) seen = req.headers return "ok" end }
  local lines = {}
  for i = 1, 12000 do lines[i] = "x:" .. (i % 10) end
  local t0 = task.now()
  local out = raw(srv, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" .. table.concat(lines, "\r\n") .. "\r\n\r\n")
  T.eq(statuses(out), "200")
  T.eq(#seen.x, 12000 * 3 - 2, "one value, joined with \", \"")
  T.eq(seen.x:sub(1, 10), "1, 2, 3, 4"); T.eq(seen.host, "h")
  T.ok(task.now() - t0 < 3, "in linear time")
  srv:close()
end)

T.test("Expect: 100-continue is answered at once", function()
  local srv <close> = core.serve{ handler = echo_handler }
  local r = curl("-H", "Expect: 100-continue", "--data-binary", "abc", url(srv, "/e"))
  T.eq(r.stdout, "POST /e abc")
  T.ok(r.duration < 0.9, "curl did not wait out its 1 s expect timeout: " .. r.duration)
  srv:close()
end)

T.test("413 for a body over body_limit (declared or chunked), then close", function()
  local calls = 0
  local srv <close> = core.serve{ body_limit = 10, handler = function(req) calls = calls + 1 return req.body end }
  T.eq(curl("--data-binary", "0123456789", url(srv)).stdout, "0123456789", "exactly the limit is fine")
  local r = curl("-i", "--data-binary", ("x"):rep(100), url(srv))
  T.match(r.stdout, "^HTTP/1%.1 413 Payload Too Large\r\n"); T.has(r.stdout, "Connection: close\r\n")
  r = curl("-i", "-H", "Transfer-Encoding: chunked", "--data-binary", ("y"):rep(100), url(srv))
  T.match(r.stdout, "^HTTP/1%.1 413 ")
  -- a big declared body is refused before it is sent; what follows is never parsed
  local out = raw(srv, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" .. ("z"):rep(5000)
    .. "GET / HTTP/1.1\r\n\r\n")
  T.eq(statuses(out), "413")
  T.eq(calls, 1, "the handler never saw a refused request")
  srv:close()
end)

T.test("431 for headers over header_limit", function()
  local srv <close> = core.serve{ header_limit = 300, handler = echo_handler }
  T.eq(curl(url(srv, "/ok")).stdout, "GET /ok ")
  local r = curl("-i", "-H", "X-Big: " .. ("a"):rep(400), url(srv))
  T.match(r.stdout, "^HTTP/1%.1 431 Request Header Fields Too Large\r\n")
  r = curl("-i", url(srv, "/" .. ("p"):rep(400)))
  T.match(r.stdout, "^HTTP/1%.1 431 ", "the URL counts too")
  local many = {}
  for i = 1, 60 do many[#many + 1] = ("X-H%d: v"):format(i) end
  local out = raw(srv, "GET / HTTP/1.1\r\n" .. table.concat(many, "\r\n") .. "\r\n\r\n")
  T.eq(statuses(out), "431")
  srv:close()
end)

T.test("400 on a malformed request; the server still serves", function()
  local srv <close> = core.serve{ handler = echo_handler }
  local out = raw(srv, "GARBAGE\r\n\r\n")
  T.match(out, "^HTTP/1%.1 400 Bad Request\r\n"); T.has(out, "Connection: close\r\n")
  out = raw(srv, "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
  T.eq(statuses(out), "400", "Content-Length with chunked is refused (request smuggling)")
  out = raw(srv, "GET / HTTP/1.1\r\nBad Header\r\n\r\n")
  T.eq(statuses(out), "400")
  out = raw(srv, ("\0\1\2\255"):rep(100))
  T.eq(statuses(out), "400")
  T.eq(curl(url(srv, "/still")).stdout, "GET /still ")
  srv:close()
end)

T.test("a truncated request is closed without an answer; the server still serves", function()
  local calls = 0
  local srv <close> = core.serve{ handler = function() calls = calls + 1 return "x" end }
  local out, took = raw(srv, "GET / HTTP/1.1\r\nHost: x\r\n", "shut")
  T.eq(out, ""); T.ok(took < 2, "closed at once: " .. took)
  out, took = raw(srv, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "shut")
  T.eq(out, ""); T.ok(took < 2)
  T.eq(calls, 0)
  T.eq(curl(url(srv)).stdout, "x")
  srv:close()
end)

T.test("slow clients: 408 on slow headers or a stalled body; idle connections close", function()
  local srv <close> = core.serve{ header_timeout = 0.3, body_timeout = 0.3, idle_timeout = 0.5, handler = echo_handler }
  local slow = task.spawn(function() return raw(srv, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow") end)
  local stalled = task.spawn(function() return raw(srv, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") end)
  local idle = task.spawn(function() return raw(srv, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n") end)
  local _, out, took = slow:join()
  T.match(out, "^HTTP/1%.1 408 Request Timeout\r\n"); T.has(out, "Connection: close\r\n")
  T.ok(took >= 0.2 and took < 3, "after header_timeout: " .. took)
  _, out, took = stalled:join()
  T.match(out, "^HTTP/1%.1 408 "); T.ok(took >= 0.2 and took < 3, "after body_timeout: " .. took)
  _, out, took = idle:join()
  T.eq(statuses(out), "200", "answered, then closed silently when idle")
  T.ok(took >= 0.4 and took < 3, "after idle_timeout: " .. took)
  srv:close()
end)

T.test("slow clients never hold up others", function()
  local handled = 0
  local srv = core.serve{ header_timeout = 3, body_timeout = 3,
    handler = function(req) handled = handled + 1 return echo_handler(req) end }
  local slow = {}
  for i = 1, 5 do
    slow[i] = task.spawn(function()
      return raw(srv, i % 2 == 0 and "GET / HTTP/1.1\r\nX-Slow" or "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab")
    end)
  end
  -- all five connected (ss counts the established connections to the port) and stuck: no
  -- request of theirs reached the handler
  local function connected()
    local r = proc.run{ "ss", "-Htn", "state", "established", ("( dport = :%d )"):format(srv.port) }
    return select(2, r.stdout:gsub("\n", ""))
  end
  local deadline = task.now() + 10
  while connected() < 5 and task.now() < deadline do task.sleep(0.02) end
  T.eq(connected(), 5, "five slow clients connected")
  T.eq(handled, 0, "none of them got a request through")
  local fast = curl(url(srv, "/fast"))
  T.eq(fast.stdout, "GET /fast ")
  T.ok(fast.duration < 1.5, "served at once beside five stuck clients: " .. fast.duration)
  for i = 1, 5 do T.eq(slow[i]:status(), "running", "still stuck") end
  local t0 = task.now()
  srv:close()
  T.ok(task.now() - t0 < 1.5, "close drops half-received requests at once")
  for i = 1, 5 do
    local _, out = slow[i]:join()
    T.eq(out, "", "dropped unanswered")
  end
end)

T.test("handlers yield (task.sleep, proc.run); 50 concurrent curl requests", function()
  local running, peak = 0, 0
  local srv <close> = core.serve{ handler = function(req)
    running = running + 1
    peak = math.max(peak, running)
    task.sleep(0.1)
    local r = proc.run{ "echo", req.query }
    running = running - 1
    return { body = r.stdout }
  end }
  local fns = {}
  for i = 1, 50 do fns[i] = function() return curl(url(srv, "/n?" .. i)) end end
  local results = task.all(fns)
  for i = 1, 50 do
    T.eq(results[i].code, 0, "curl " .. i)
    T.eq(results[i].stdout, i .. "\n")
  end
  T.ok(peak > 1, "handlers ran concurrently (peak " .. peak .. ")")
  T.eq(running, 0)
  srv:close()
end)

-- The errors below are logged, as they should be; the next test checks the log.
local function quiet()
  local log = require("stagehost.log")
  local level = log.level()
  log.level("off")
  return setmetatable({}, { __close = function() log.level(level) end })
end

T.test("a handler error is a 500 and the connection goes on; bad return values too", function()
  local _ <close> = quiet()
  local srv <close> = core.serve{ handler = function(req)
    if req.path == "/boom" then error("boom") end
    if req.path == "/bool" then return true end
    if req.path == "/status" then return { status = 99 } end
    if req.path == "/fraction" then return { status = 200.5 } end
    if req.path == "/float" then return { status = 202.0, body = "float" } end
    if req.path == "/crlf" then return { headers = { ["x-bad"] = "a\r\nInjected: 1" } } end
    if req.path == "/nil" then return nil end
    return "ok"
  end }
  local r = curl("-w", "[%{http_code} %{num_connects}]", url(srv, "/boom"), url(srv, "/ok"))
  T.eq(r.stdout, "500 Internal Server Error\n[500 1]ok[200 0]")
  T.match(curl("-i", url(srv, "/float")).stdout, "^HTTP/1%.1 202 ", "an integral float is a status")
  for _, path in ipairs{ "/bool", "/status", "/fraction", "/crlf", "/nil" } do
    r = curl("-i", url(srv, path))
    T.match(r.stdout, "^HTTP/1%.1 500 ", path)
    T.no_match(r.stdout, "Injected")
  end
  srv:close()
end)

T.test("a handler error is logged at error level with its traceback", function()
  local r = proc.run{ STAGEHOST, "-e", [[
    local core = require("stagehost.core.http_server")
    local proc = require("stagehost.proc")
    local function fail_here() error("kaput") end
    local srv = core.serve{ handler = function(req)
      if req.path == "/bool" then return false end
      fail_here()
    end }
    local base = "http://127.0.0.1:" .. srv.port
    print(proc.run{ "curl", "-s", "-w", " %{http_code}", base .. "/x", base .. "/bool" }.stdout)
    srv:close()
  ]], timeout = 30 }
  T.eq(r.code, 0, r.stderr)
  T.eq(r.stdout, "500 Internal Server Error\n 500500 Internal Server Error\n 500\n")
  T.match(r.stderr, "ERROR http%.serve: handler failed for GET /x: %(command line%):3: kaput\nstack traceback:\n")
  T.has(r.stderr, "in upvalue 'fail_here'")
  T.match(r.stderr, "ERROR http%.serve: bad response for GET /bool: http%.serve: the handler returned a boolean")
end)

T.test("req:stream: chunks go out as they are written", function()
  local srv <close> = core.serve{ handler = function(req)
    local s = req:stream{ status = 201, headers = { ["content-type"] = "text/event-stream" } }
    T.eq(s:write("data: one\n\n"), true)
    task.sleep(0.4)
    T.eq(s:write("data: two\n\n"), true)
    T.eq(s:write(""), true, "an empty write sends nothing")
    s:write("data: three\n\n")
    s:close()
    s:close()
    T.raises(function() s:write("late") end, "stream:write: the stream is closed")
  end }
  local t0 = task.now()
  local times = {}
  local r = proc.run{ "curl", "-s", "-N", url(srv, "/events"), timeout = 20,
    on_line = function(_, line) if line ~= "" then times[line] = task.now() - t0 end end }
  T.eq(r.stdout, "data: one\n\ndata: two\n\ndata: three\n\n")
  T.ok(times["data: one"] < times["data: two"] - 0.2, "the first chunk came before the second was written")
  r = curl("-i", "--raw", url(srv, "/events"))
  T.match(r.stdout, "^HTTP/1%.1 201 Created\r\n")
  T.has(r.stdout, "Transfer-Encoding: chunked\r\n"); T.has(r.stdout, "content-type: text/event-stream\r\n")
  T.has(r.stdout, "\r\n\r\nb\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\nd\r\ndata: three\n\n\r\n0\r\n\r\n")
  r = curl("-0", "-i", url(srv, "/events"))
  T.no_match(r.stdout, "Transfer%-Encoding", "HTTP/1.0: the body ends with the connection")
  T.match(r.stdout, "\r\n\r\ndata: one\n\ndata: two\n\ndata: three\n\n$")
  srv:close()
end)

T.test("req:stream: a handler that returns closes its stream; keep-alive goes on", function()
  local srv <close> = core.serve{ handler = function(req)
    if req.path == "/s" then
      local s = req:stream()
      s:write("partial")
      T.raises(function() req:stream() end, "already started")
      return
    end
    return "after"
  end }
  local r = curl("-w", "[%{num_connects}]", url(srv, "/s"), url(srv, "/x"))
  T.eq(r.stdout, "partial[1]after[0]")
  srv:close()
end)

T.test("stream:write reports a client that went away", function()
  local result = {}
  local done = false
  local srv <close> = core.serve{ handler = function(req)
    local s = req:stream()
    for _ = 1, 400 do
      local ok, msg, code = s:write(("x"):rep(1000) .. "\n")
      if not ok then result = { msg = msg, code = code } break end
      task.sleep(0.01)
    end
    done = true
  end }
  local r = curl("--max-time", "0.3", url(srv, "/forever"))
  T.eq(r.code, 28, "curl timed out")
  local deadline = task.now() + 10
  while not done and task.now() < deadline do task.sleep(0.02) end
  T.ok(done, "the handler ended")
  T.match(result.msg, "^stream:write: "); T.ok(result.code, "an error code")
  srv:close()
end)

T.test("server:close() lets an in-flight request finish, then returns", function()
  local started = false
  local srv = core.serve{ handler = function()
    started = true
    task.sleep(0.3)
    return "finished"
  end }
  local port = srv.port
  local client = task.spawn(function() return curl("-i", url(srv, "/slow")) end)
  while not started do task.sleep(0.01) end
  local t0 = task.now()
  srv:close()
  local took = task.now() - t0
  T.ok(took > 0.15 and took < 3, "waited for the request: " .. took)
  local _, r = client:join()
  T.match(r.stdout, "^HTTP/1%.1 200 OK\r\n"); T.has(r.stdout, "Connection: close\r\n")
  T.match(r.stdout, "finished$")
  T.eq(curl("http://127.0.0.1:" .. port .. "/").code, 7, "no longer accepting")
  T.eq(srv.port, port, "fields stay readable")
  srv:close()
end)

-- The wait is checked before anything is allocated for it: a cancellation already pending when
-- close() would wait raises, and the record close() parks on never exists (under ASan, which
-- fails the run on a leak, this caught a closer leaked by every such call).
T.test("server:close() in a task already cancelled stops the server and raises, leaking nothing", function()
  local srv = core.serve{ handler = function() return "never" end }
  local port = srv.port
  local reached = false
  local t = task.spawn(function()
    task.current():cancel("stopped before closing")
    srv:close() -- the listener's close is pending: close() would wait
    reached = true
  end)
  local ok, err = t:join()
  T.eq(ok, false); T.eq(err.kind, "cancelled"); T.eq(tostring(err), "stopped before closing")
  T.eq(reached, false, "close() raised the cancellation")
  T.eq(t:status(), "cancelled")
  T.eq(curl("http://127.0.0.1:" .. port .. "/").code, 7, "the server stopped all the same")
end)

T.test("server:close() closes idle keep-alive connections at once", function()
  local served = false
  local srv = core.serve{ idle_timeout = 30, handler = function(req)
    served = true
    return echo_handler(req)
  end }
  local client = task.spawn(function() return raw(srv, "GET /k HTTP/1.1\r\nHost: x\r\n\r\n") end)
  while not served do task.sleep(0.01) end
  task.sleep(0.2) -- the response is written; the connection is idle
  local t0 = task.now()
  srv:close()
  T.ok(task.now() - t0 < 1, "close did not wait for the idle timeout")
  local _, out, took = client:join()
  T.eq(statuses(out), "200")
  T.ok(took < 5, "the client saw the close: " .. took)
end)

T.test("a cancelled handler closes its connection unanswered", function()
  local handler_task
  local srv <close> = core.serve{ handler = function(req)
    if req.path == "/ok" then return "ok" end
    handler_task = task.current()
    task.sleep(30)
  end }
  local client = task.spawn(function() return curl(url(srv, "/hang")) end)
  while not handler_task do task.sleep(0.01) end
  handler_task:cancel("stop it")
  local _, r = client:join()
  T.eq(r.code, 52, "curl: empty reply")
  T.eq(handler_task:status(), "cancelled")
  T.eq(curl(url(srv, "/ok")).stdout, "ok")
  srv:close()
end)

T.test("a to-be-closed server stops listening when its block ends", function()
  local port
  do
    local srv <close> = core.serve{ handler = echo_handler }
    port = srv.port
    T.eq(curl(url(srv, "/x")).stdout, "GET /x ")
  end
  T.eq(curl("http://127.0.0.1:" .. port .. "/").code, 7)
end)

T.test("bind errors name host:port", function()
  local srv <close> = core.serve{ handler = echo_handler }
  local err = T.raises(function() core.serve{ port = srv.port, handler = echo_handler } end,
    "http.serve: cannot listen on 127.0.0.1:" .. srv.port .. ": address already in use")
  T.no_match(tostring(err), "\n")
  T.raises(function() core.serve{ host = "no.such.host", port = 8080, handler = echo_handler } end,
    "http.serve: cannot listen on no.such.host:8080: not an IP address")
  T.raises(function() core.serve{ host = "192.0.2.1", handler = echo_handler } end,
    "http.serve: cannot listen on 192.0.2.1:0:")
  srv:close()
end)

T.test("wrong argument types raise naming the function", function()
  local f = function() end
  local bad = "bad argument #1 to 'http.serve' ("
  T.raises(function() core.serve() end, bad .. "table of options expected, e.g. {port = 8080, handler = fn}, got no value)")
  T.raises(function() core.serve(42) end, bad .. "table of options expected")
  T.raises(function() core.serve{} end, bad .. "option 'handler' must be a function, got nil)")
  T.raises(function() core.serve{ handler = "f" } end, bad .. "option 'handler' must be a function, got string)")
  T.raises(function() core.serve{ handler = f, port = "80" } end, bad .. "option 'port' must be an integer, got string)")
  T.raises(function() core.serve{ handler = f, port = 1.5 } end, bad .. "option 'port' must be an integer, got a fraction)")
  T.raises(function() core.serve{ handler = f, port = 70000 } end, bad .. "option 'port' must be between 0 and 65535, got 70000)")
  T.raises(function() core.serve{ handler = f, host = 1 } end, bad .. "option 'host' must be a string, got number)")
  T.raises(function() core.serve{ handler = f, body_limit = -1 } end, bad .. "option 'body_limit' must be a number of bytes >= 0, got -1)")
  T.raises(function() core.serve{ handler = f, header_timeout = "x" } end, bad .. "option 'header_timeout' must be a number, got string)")
  T.raises(function() core.serve{ handler = f, idle_timeout = 0 } end, bad .. "option 'idle_timeout' must be a number of seconds > 0, got 0)")
  local srv <close> = core.serve{ handler = function(req)
    local ok1, e1 = pcall(req.stream, req, 5)
    local ok2, e2 = pcall(req.stream, req, { status = "x" })
    local ok3, e3 = pcall(req.stream, {}, {})
    local ok4, e4 = pcall(req.stream, req, { headers = { ["bad name"] = "v" } })
    return table.concat({ tostring(ok1), e1, tostring(ok2), e2, tostring(ok3), e3, tostring(ok4), e4 }, "|")
  end }
  local r = curl(url(srv))
  T.has(r.stdout, "false|bad argument #1 to 'req:stream' (table of options {status =, headers =} expected, got number)")
  T.has(r.stdout, "false|bad argument #1 to 'req:stream' (option 'status' must be an integer, got string)")
  T.has(r.stdout, "false|req:stream: not a request of http.serve")
  T.has(r.stdout, "false|bad argument #1 to 'req:stream' (bad header name 'bad name')")
  T.raises(function() srv.close(42) end, "stagehost.http.server expected")
  srv:close()
end)

T.run()
