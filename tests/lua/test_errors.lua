-- One error model: error objects made in C (the scheduler's cancellations, http.request's
-- transport failures) and in Lua (errors.new, ctx:cancel) share one metatable and one test;
-- misuse raises one string form, from C and Lua alike; json.decode returns nil and a position.
local T = require("harness")
local task = require("stagehost.task")
local http = require("stagehost.http")
local json = require("stagehost.json")
local errors = require("stagehost.errors")

-- A loopback port with nothing listening: a server's, closed again.
local function closed_port()
  local s = http.serve{ handler = function() return "" end }
  local port = s.port
  s:close()
  return port
end

-- The transport error a request raises (the test fails if it does not raise one).
local function transport_error(req)
  local ok, e = pcall(http.request, req)
  T.eq(ok, false, "the request fails")
  T.ok(errors.is(e, "transport"), "a transport error object: " .. tostring(e))
  return e
end

T.test("the C constructor and the Lua one give the same metatable", function()
  local core = require("stagehost.core.errors")
  local from_lua = errors.new("config", "a message", { exit_code = 2 })
  local t = task.spawn(function() task.sleep(10) end)
  task.sleep(0)
  t:cancel("stop")
  local _, from_scheduler = t:join()
  local from_http = transport_error{ url = ("http://127.0.0.1:%d/"):format(closed_port()) }
  T.ok(errors.Error == core.Error, "errors.Error is the C module's")
  T.ok(debug.getregistry()["stagehost.error"] == errors.Error, "registered as stagehost.error")
  T.eq(errors.Error.__name, "stagehost.error")
  for what, e in pairs{ lua = from_lua, scheduler = from_scheduler, http = from_http, core = core.new("x", "y") } do
    T.ok(getmetatable(e) == errors.Error, what .. "'s error has the shared metatable")
  end
  T.eq(from_lua.kind, "config"); T.eq(from_lua.message, "a message"); T.eq(from_lua.exit_code, 2)
end)

T.test("errors.is and errors.is_cancel: a scheduler cancel, a timeout, ctx:cancel's error", function()
  -- the scheduler's cancel, as the cancelled task's own pcall sees it
  local seen
  local t = task.spawn(function()
    local _, e = pcall(task.sleep, 10)
    seen = e
    error(e, 0)
  end)
  task.sleep(0)
  t:cancel("the run was cancelled")
  local ok, joined = t:join()
  T.eq(ok, false)
  T.ok(rawequal(seen, joined), "join gives the error the task saw")
  T.ok(errors.is(seen, "cancelled")); T.ok(errors.is_cancel(seen)); T.ok(not errors.is(seen, "timeout"))
  T.eq(seen.reason, "the run was cancelled"); T.eq(seen.message, "the run was cancelled")
  T.eq(t:status(), "cancelled")
  -- a timeout of an outer task.timeout, as the function under it sees it
  local timed
  local in_time, why = task.timeout(0.05, function()
    local _, e = pcall(task.sleep, 10)
    timed = e
    error(e, 0)
  end)
  T.eq(in_time, false); T.eq(why, "timeout")
  T.ok(errors.is(timed, "timeout")); T.ok(errors.is_cancel(timed), "a timeout is a cancellation")
  T.eq(timed.reason, "timeout after 0.05s"); T.eq(tostring(timed), "timeout after 0.05s")
  T.eq(type(timed.scope), "userdata", "the scope that expired")
  -- ctx:cancel: a cancellation too, marked as the stage's own word
  local Ctx = require("stagehost.pipeline.ctx")
  local cok, own = pcall(Ctx.cancel, nil, "rejected by alice")
  T.eq(cok, false)
  T.ok(errors.is(own, "cancelled")); T.ok(errors.is_cancel(own))
  T.eq(own.origin, "stage"); T.eq(own.reason, "rejected by alice"); T.eq(tostring(own), "rejected by alice")
  T.eq(seen.origin, nil, "a cancel from outside has no origin")
  -- what is not one
  T.ok(not errors.is_cancel({ kind = "cancelled" }), "a look-alike table is not an error object")
  T.ok(not errors.is({ kind = "transport" }, "transport"))
  T.ok(not errors.is_cancel("cancelled")); T.ok(not errors.is_cancel(nil))
  T.ok(not errors.is_cancel(errors.new("transport", "x")))
  T.ok(errors.is(errors.new("transport", "x")), "without a kind: any error object")
  T.ok(require("stagehost.util.retry").is_cancellation(timed), "retry's test agrees")
end)

T.test("tostring is the message, one line for anything", function()
  T.eq(tostring(errors.new("exit", "run 7 failed")), "run 7 failed")
  T.eq(tostring(errors.new("x", 42)), "42", "a message that is not a string is made one")
  T.eq(tostring(errors.cancelled("enough")), "enough")
  local e = errors.new("x", "m", { code = "EX", reason = "why" })
  T.eq(e.code, "EX"); T.eq(e.reason, "why"); T.eq(e.kind, "x")
  T.eq(errors.first_line(errors.new("x", "one\ntwo")), "one")
  T.raises(errors.new, "bad argument #1 to 'errors.new' (string expected, got nil)", nil, "m")
  T.raises(errors.new, "bad argument #3 to 'errors.new' (table or nil expected, got number)", "x", "m", 5)
end)

T.test("a refused connection: kind transport, code ECONNREFUSED, no credentials in the message", function()
  local url = ("http://deploy:s3cret@127.0.0.1:%d/hooks?x=1"):format(closed_port())
  local e
  local ok, raised = pcall(function() local r = http.request{ url = url, method = "POST", body = "x" } return r end)
  e = raised
  T.eq(ok, false)
  T.ok(errors.is(e, "transport"))
  T.eq(e.code, "ECONNREFUSED")
  T.eq(e.method, "POST")
  T.eq(e.url, url:gsub("deploy:s3cret@", "***@"), "the URL, credentials shown as ***")
  T.no_match(tostring(e), "s3cret"); T.no_match(e.reason, "s3cret")
  -- today's text: the caller's line, then http.request's words
  T.match(tostring(e), "^[^\n]*test_errors%.lua:%d+: http%.request: POST http://%*%*%*@127%.0%.0%.1:%d+/hooks%?x=1 failed: ")
  T.eq(tostring(e), e.message)
  T.has(e.message, e.reason)
  -- through pcall(http.request, ...) there is no caller's line to name
  local direct = transport_error{ url = url }
  T.match(direct.message, "^http%.request: GET ")
  -- retried, the last failure is raised the same way
  local again = transport_error{ url = url, retry = { attempts = 2, base = 0.001, on_retry = function() end } }
  T.eq(again.code, "ECONNREFUSED")
end)

T.test("a timeout, a TLS failure and too many redirects have their own codes", function()
  local srv <close> = http.serve{ handler = function(req)
    if req.path == "/slow" then task.sleep(1) return "late" end
    return { status = 302, headers = { Location = "/loop" } }
  end }
  local base = ("127.0.0.1:%d"):format(srv.port)
  local slow = transport_error{ url = "http://" .. base .. "/slow", timeout = 0.2 }
  T.eq(slow.code, "ETIMEDOUT")
  -- TLS spoken to a plain HTTP server: the handshake fails
  local tls = transport_error{ url = "https://" .. base .. "/", timeout = 10 }
  T.eq(tls.code, "TLS", tls.message)
  local loop = transport_error{ url = "http://" .. base .. "/loop", follow = true, max_redirects = 2 }
  T.eq(loop.code, "EREDIRECTS", loop.message)
end)

T.test("json.decode: nil and \"line L, column C: ...\" on bad input; misuse raises", function()
  local n = select("#", json.decode('{\n  "a": x\n}'))
  T.eq(n, 2, "two values, as xml.decode gives")
  local value, err = json.decode('{\n  "a": x\n}')
  T.eq(value, nil)
  T.match(err, "^line 2, column 8: invalid JSON near 'x")
  T.eq(select(2, json.decode("")), "line 1, column 1: empty input")
  T.eq(json.decode("null"), json.null, "null is json.null, never nil")
  -- same convention as the other decoders
  T.match(select(2, require("stagehost.xml").decode("<a>")), "^line %d+, column %d+: ")
  T.raises(json.decode, "bad argument #1 to 'json.decode' (string expected, got nil)", nil)
end)

-- a public function that checks its argument itself, and one whose helper does
local function public(x)
  if type(x) ~= "string" then errors.argument(1, "demo.public", "string expected, got %s", type(x)) end
  return x
end
local function check_opts(opts)
  if type(opts.n) ~= "number" then errors.argument_at(3, 1, "demo.helped", "n must be a number, got %s", type(opts.n)) end
end
local function helped(opts)
  check_opts(opts)
  return opts.n
end

T.test("misuse: one form from C and Lua, raised at the caller's line", function()
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(function() local r = public(42) return r end)
  T.eq(ok, false)
  T.eq(err, ("%s:%d: bad argument #1 to 'demo.public' (string expected, got number)"):format(
    debug.getinfo(1, "S").short_src, line))
  line = debug.getinfo(1, "l").currentline + 1
  ok, err = pcall(function() local r = helped{ n = "x" } return r end)
  T.eq(err, ("%s:%d: bad argument #1 to 'demo.helped' (n must be a number, got string)"):format(
    debug.getinfo(1, "S").short_src, line))
  -- the text C's sh_argerror makes is the text errors.argument makes
  local _, from_c = pcall(json.decode, 42)
  T.eq(from_c, errors.argument_message(1, "json.decode", "string expected, got %s", "number"))
end)

T.test("first_line drops a position in stagehost's own modules and keeps one in the user's files", function()
  local library = assert(package.searchpath("stagehost.errors", package.path)):match("^(.*/)stagehost/errors%.lua$")
  T.eq(errors.first_line(library .. "stagehost/pipeline/store.lua:560: state database s.db: db:query: disk is full\nstack"),
    "state database s.db: db:query: disk is full")
  T.eq(errors.first_line("run failed: " .. library .. "stagehost/sandbox/persist.lua:156: fs.write: No space"),
    "run failed: fs.write: No space")
  T.eq(errors.first_line("scripts/stages/deploy.lua:12: the stack rolled back"), "scripts/stages/deploy.lua:12: the stack rolled back")
  T.eq(errors.first_line("/elsewhere/stagehost/store.lua:3: kept"), "/elsewhere/stagehost/store.lua:3: kept")
end)

T.run()
