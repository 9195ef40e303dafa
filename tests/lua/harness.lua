-- A small test harness run by stagehost itself. Each test runs in its own task; afterwards the
-- harness lets the loop settle, collects garbage and fails the test if it left tasks, timers
-- or libuv handles behind. Prints "N passed, N failed" and exits 1 on any failure.
local task = require("stagehost.task")
-- loaded now: its SIGCHLD handle lasts for the whole run, so it belongs in every baseline
require "stagehost.proc"

local T = {}
local tests = {}

function T.test(name, fn, opts)
  tests[#tests + 1] = { name = name, fn = fn, timeout = opts and opts.timeout or 60 }
end

local function fail(msg, level)
  error(msg, (level or 1) + 2)
end

local function show(v)
  if type(v) == "string" then return ("%q"):format(#v > 200 and v:sub(1, 200) .. "..." or v) end
  return tostring(v)
end

function T.eq(actual, expected, what)
  if actual ~= expected then
    fail(("%sexpected %s, got %s"):format(what and what .. ": " or "", show(expected), show(actual)))
  end
end

function T.ok(value, what)
  if not value then fail(("expected a true value%s, got %s"):format(what and " (" .. what .. ")" or "", show(value))) end
  return value
end

function T.match(s, pattern, what)
  if type(s) ~= "string" or not s:find(pattern) then
    fail(("%sexpected a string matching %q, got %s"):format(what and what .. ": " or "", pattern, show(s)))
  end
end

-- Plain substring (paths like $.a.b[3] and file names are full of pattern characters).
function T.has(s, sub, what)
  if type(s) ~= "string" or not s:find(sub, 1, true) then
    fail(("%sexpected %s to contain %q"):format(what and what .. ": " or "", show(s), sub))
  end
end

function T.no_match(s, pattern, what)
  if type(s) == "string" and s:find(pattern) then
    fail(("%sexpected no match for %q in %s"):format(what and what .. ": " or "", pattern, show(s)))
  end
end

-- T.raises(fn, pattern, ...) -> the error value; fails unless fn(...) raises an error whose
-- message matches pattern (plain substring when the pattern has no magic).
function T.raises(fn, pattern, ...)
  local ok, err = pcall(fn, ...)
  if ok then fail(("expected an error matching %q, but the call succeeded"):format(pattern)) end
  local msg = tostring(err)
  if pattern and not msg:find(pattern, 1, true) and not msg:find(pattern) then
    fail(("expected an error matching %q, got %s"):format(pattern, show(msg)))
  end
  return err
end

-- fn (named name in its messages) raises a one-line "bad argument #1 ... (string expected, got
-- TYPE)" for any first argument that is not a string, none included.
function T.wants_string(fn, name)
  local prefix = ("bad argument #1 to '%s' (string expected, got "):format(name)
  for _, v in ipairs { 42, {}, true, print, io.stdout } do
    local err = T.raises(function() fn(v) end, prefix)
    T.eq(tostring(err):find("\n"), nil, "one line")
  end
  T.raises(function() fn() end, prefix .. "no value)")
  T.raises(function() fn(nil) end, prefix .. "nil)")
end

-- decode(text) fails as stagehost's decoders do: nil and a message starting "line L, column
-- C: reason". -> the message, and what follows reason in it (a decoder may add its context).
function T.decode_error(decode, text, line, column, reason)
  local what = ("decode(%q)"):format(text:sub(1, 60))
  local v, err = decode(text)
  T.eq(v, nil, what .. " value")
  T.eq(type(err), "string", what .. " message")
  local expected = ("line %d, column %d: %s"):format(line, column, reason)
  T.eq(err:sub(1, #expected), expected, what)
  return err, err:sub(#expected + 1)
end

-- Is a process (or, with a negative id, any member of a process group) still running? Zombies
-- do not count: an orphan killed with its group stays a zombie until PID 1 reaps it.
function T.alive(pid)
  local fs = require("stagehost.fs")
  local names = fs.list("/proc") or {}
  for _, name in ipairs(names) do
    if name:match("^%d+$") then
      local stat = fs.read("/proc/" .. name .. "/stat")
      -- pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
      local state, pgrp
      if stat then state, pgrp = stat:match("%) (%a) %d+ (%d+)") end
      if state and state ~= "Z" then
        if (pid > 0 and tonumber(name) == pid) or (pid < 0 and tonumber(pgrp) == -pid) then return true end
      end
    end
  end
  return false
end

-- A fresh empty directory under /tmp (with the given subdirectories); remove it when done.
function T.tempdir(...)
  local fs = require("stagehost.fs")
  local dir = os.tmpname() -- a unique name; the file it created makes way for the directory
  os.remove(dir)
  assert(fs.mkdir(dir))
  for _, sub in ipairs{ ... } do assert(fs.mkdir(dir .. "/" .. sub)) end
  return dir
end

-- A fresh T.tempdir(...) holding files {name = text}; a name may have directories in it.
function T.project(files, ...)
  local fs = require("stagehost.fs")
  local dir = T.tempdir(...)
  for name, text in pairs(files) do
    local sub = name:match("^(.*)/[^/]*$")
    if sub then assert(fs.mkdir(dir .. "/" .. sub)) end
    assert(fs.write(dir .. "/" .. name, text))
  end
  return dir
end

-- The argv of `stagehost ARGS` in dir (STAGEHOST_BIN, set by ctest); opts (env, timeout, ...)
-- go into it as they are.
local function stagehost_argv(dir, args, opts)
  local argv = { (assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")) }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.cwd = dir
  for k, v in pairs(opts or {}) do argv[k] = v end
  return argv
end

-- `stagehost ARGS` in dir through proc.run; a timeout of 120 s unless opts say otherwise.
function T.stagehost(dir, args, opts)
  local argv = stagehost_argv(dir, args, opts)
  argv.timeout = argv.timeout or 120
  return require("stagehost.proc").run(argv)
end

-- A child (proc.spawn(argv), argv.lines set) whose output lines are read as they come and kept:
-- self.lines[i] = {at = task.now() when it was read, text = the line, a pty's "\r" removed}.
--   self.line(text, within) -> the first line holding text (plain), when it was read; waits up
--     to within seconds (30) for it, then raises with all the child said
--   self.text() -> every line so far, joined with "\n"
--   self.finish() -> proc's wait result (the reader first: its read_line ends at end of output)
--   self.stop(), self.kill9(): SIGTERM, SIGKILL, then finish()
function T.spawn(argv)
  argv.lines = true
  local self = { h = require("stagehost.proc").spawn(argv), lines = {} }
  self.reader = task.spawn(function()
    while true do
      local stream, line = self.h:read_line()
      if not stream then return end
      self.lines[#self.lines + 1] = { at = task.now(), text = (line:gsub("\r", "")) }
    end
  end)
  function self.text()
    local out = {}
    for i, l in ipairs(self.lines) do out[i] = l.text end
    return table.concat(out, "\n")
  end
  function self.line(text, within)
    local deadline = task.now() + (within or 30)
    while true do
      for _, l in ipairs(self.lines) do
        if l.text:find(text, 1, true) then return l.text, l.at end
      end
      if task.now() > deadline then
        error(("no line holding %q within %ss; the process said:\n%s"):format(text, within or 30, self.text()), 2)
      end
      task.sleep(0.01)
    end
  end
  function self.finish()
    self.reader:join()
    return self.h:wait()
  end
  function self.stop()
    self.h:kill("TERM")
    return self.finish()
  end
  function self.kill9()
    self.h:kill("KILL")
    return self.finish()
  end
  return self
end

-- `stagehost ARGS` in dir as T.spawn; opts (env, ...) go into the argv as they are.
function T.spawn_stagehost(dir, args, opts)
  return T.spawn(stagehost_argv(dir, args, opts))
end

-- The id of the one run in dir's state directory (.stagehost).
function T.run_id(dir)
  return assert(require("stagehost.fs").list(dir .. "/.stagehost/runs"))[1]
end

-- The source of a pipeline `name` whose stage `gate` asks approval.request(REQUEST) (Lua source
-- of its argument) and cancels the run unless it is approved, returning gate_returns (source,
-- "{}" when nil); the stages in the source `more` follow. Its notifications go to the channel
-- "capture" (channels/capture.lua: T.CAPTURE_ALL or T.CAPTURE_REQUESTED).
function T.approval_pipeline(name, request, gate_returns, more)
  return ([[
local pipeline = require("stagehost.pipeline")
local approval = require("stagehost.approval")
return pipeline.define{ name = %q, notify = { { channel = "capture" } }, stages = {
  { name = "gate", run = function(ctx)
    local r = approval.request(%s)
    if r.decision ~= "approved" then ctx:cancel("approval " .. r.decision) end
    return %s
  end },%s } }
]]):format(name, request, gate_returns or "{}", more and ("\n  " .. more) or "")
end

-- A notification channel (the source of channels/NAME.lua) appending every message, as JSON, to
-- notifications.jsonl in the pipeline's directory.
T.CAPTURE_ALL = [[
return function(m)
  local f = assert(io.open("notifications.jsonl", "a"))
  f:write(require("stagehost.json").encode(m), "\n")
  f:close()
  return true
end
]]

-- A notification channel writing the last approval.requested message, as JSON, to requested.json
-- in the pipeline's directory (read it with T.requested).
T.CAPTURE_REQUESTED = [[
return function(m)
  if m.event ~= "approval.requested" then return true end
  local f = assert(io.open("requested.json", "w"))
  f:write(require("stagehost.json").encode(m))
  f:close()
  return true
end
]]

-- The approval.requested message T.CAPTURE_REQUESTED wrote in dir, waiting for it (T.wait_for).
function T.requested(dir, within)
  T.wait_for(dir .. "/requested.json", within)
  task.sleep(0.05) -- the file is written in one go, but let it be closed
  return require("stagehost.json").decode(assert(require("stagehost.fs").read(dir .. "/requested.json")))
end

-- Wait until a file exists (a stage says it reached a point); raises after within seconds (20).
function T.wait_for(path, within)
  local fs = require("stagehost.fs")
  local deadline = task.now() + (within or 20)
  while not fs.exists(path) do
    if task.now() > deadline then error("timed out waiting for " .. path, 2) end
    task.sleep(0.02)
  end
end

-- fn(1), ..., fn(n), each in its own task at the same time: -> their results in that order
-- (task.all: raises when any of them does).
function T.concurrently(n, fn)
  local fns = {}
  for i = 1, n do fns[i] = function() return fn(i) end end
  return task.all(fns)
end

-- Run the pipeline p in this process (engine.execute), all its stages unless opts.selected.
function T.execute(p, opts)
  local engine = require("stagehost.pipeline.engine")
  opts = opts or {}
  opts.selected = opts.selected or engine.select(p)
  return engine.execute(p, opts)
end

-- Debian's awscli, by path: a version manager's `aws` shim earlier on PATH is not the reference.
T.AWSCLI = "/usr/bin/aws"

-- Raises (one line, no position) when Debian's awscli is not installed.
function T.require_awscli()
  local f = io.open(T.AWSCLI)
  if not f then error(("Debian's awscli is missing (%s): run .ci/install-deps"):format(T.AWSCLI), 0) end
  f:close()
end

-- `aws ARGS --endpoint-url SB --output json` against the sandbox sb, signed with the key pair it
-- made (sb.credentials, which it verifies as AWS would) and with no configuration of the user's;
-- env (overrides, false removes) goes on top. -> proc.run's result, with .json when stdout is JSON.
function T.awscli(sb, args, env)
  T.require_awscli()
  local argv = { T.AWSCLI }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  for _, a in ipairs{ "--endpoint-url", sb.url, "--output", "json" } do argv[#argv + 1] = a end
  argv.env = {
    AWS_ACCESS_KEY_ID = sb.credentials.access_key_id, AWS_SECRET_ACCESS_KEY = sb.credentials.secret_access_key,
    AWS_SESSION_TOKEN = false,
    AWS_DEFAULT_REGION = "us-east-1", AWS_REGION = false, AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent",
    AWS_PAGER = "", AWS_EC2_METADATA_DISABLED = "true",
  }
  for k, v in pairs(env or {}) do argv.env[k] = v end
  argv.timeout = 90
  local r = require("stagehost.proc").run(argv)
  if r.code == 0 and r.stdout:match("^%s*[%[{]") then r.json = require("stagehost.json").decode(r.stdout) end
  return r
end

-- Like T.awscli, but the call must succeed: -> its JSON ({} when it printed nothing).
function T.awscli_ok(sb, args, env)
  local r = T.awscli(sb, args, env)
  T.eq(r.code, 0, "aws " .. table.concat(args, " ") .. ": " .. r.stderr)
  return r.json or {}
end

-- Run fn with the notify channels list configured, and the previous ones back afterwards
-- whatever happens.
function T.with_channels(list, fn)
  local notify = require("stagehost.notify")
  local before = notify.configure(list)
  local ok, err = xpcall(fn, debug.traceback)
  notify.configure(before)
  if not ok then error(err, 0) end
end

-- Run fn(sb) with a fresh sandbox.start(opts), closed whatever happens. With use (true, or the
-- options of sb:use) this process's AWS and GitHub clients talk to it while fn runs.
function T.with_sandbox(opts, fn, use)
  local sb = require("stagehost.sandbox").start(opts)
  local restore = use and sb:use(type(use) == "table" and use or nil)
  local ok, err = xpcall(fn, debug.traceback, sb)
  if restore then restore() end
  sb:close()
  if not ok then error(err, 0) end
end

-- How many requests the sandbox sb served for service (and action, when given).
function T.sandbox_requests(sb, service, action)
  local n = 0
  for _, r in ipairs(sb.requests) do
    if r.service == service and (action == nil or r.action == action) then n = n + 1 end
  end
  return n
end

-- Debian's python3-aiosmtpd as a mail server on a free port (tests/python/smtp_sink.py), writing
-- each message it accepts into the directory out; more arguments go to the script ("--auth",
-- "user:password", "--tls", ...). -> the process (stop it with :kill("TERM") and :wait()) and
-- its port, once it listens (within 20 s, else it raises).
function T.smtp_sink(out, ...)
  local source = assert(os.getenv("STAGEHOST_SOURCE_DIR"), "run through ctest (STAGEHOST_SOURCE_DIR)")
  local argv = { "/usr/bin/python3", source .. "/tests/python/smtp_sink.py", "--out", out, ... }
  argv.lines, argv.name = true, "smtp-sink"
  local h = require("stagehost.proc").spawn(argv)
  local ok, port = task.timeout(20, function()
    while true do
      local stream, line = h:read_line()
      if not stream then error("the SMTP sink ended before listening (is python3-aiosmtpd installed?)", 0) end
      local p = line:match("^listening (%d+)$")
      if p then return tonumber(p) end
    end
  end)
  if not (ok and port) then
    h:kill("KILL")
    h:wait()
    error(ok and "the SMTP sink did not start within 20 s" or tostring(port), 2)
  end
  return h, port
end

-- Wait until T.alive(pid) is false; returns whether it happened within the time.
function T.gone(pid, within)
  local deadline = task.now() + (within or 3)
  while T.alive(pid) do
    if task.now() > deadline then return false end
    task.sleep(0.02)
  end
  return true
end

local function settle(baseline)
  local deadline = task.now() + 10
  local now
  repeat
    collectgarbage("collect")
    task.sleep(0.01)
    now = task.stats()
    -- the harness's own task is live while it checks
    if now.tasks <= baseline.tasks and now.timers <= baseline.timers and now.handles <= baseline.handles then
      return nil
    end
  until task.now() > deadline
  return ("left behind: %d task(s), %d timer(s), %d handle(s) (baseline %d, %d, %d)"):format(
    now.tasks, now.timers, now.handles, baseline.tasks, baseline.timers, baseline.handles)
end

-- T.run([teardown]): run every test, then teardown (stop fixtures), then exit.
function T.run(teardown)
  local passed, failed = 0, 0
  local only = os.getenv("TEST_ONLY")
  for _, t in ipairs(tests) do
    if not only or t.name:find(only, 1, true) then
      collectgarbage("collect")
      task.sleep(0)
      local baseline = task.stats()
      local started = task.now()
      local runner = task.spawn(function()
        return task.timeout(t.timeout, function()
          return xpcall(t.fn, debug.traceback)
        end)
      end)
      local _, in_time, ok, err = runner:join()
      local problem
      if not in_time then
        problem = ("did not finish within %ss"):format(t.timeout)
      elseif not ok then
        problem = tostring(err)
      else
        problem = settle(baseline)
      end
      if problem then
        failed = failed + 1
        io.stdout:write(("not ok - %s\n    %s\n"):format(t.name, problem:gsub("\n", "\n    ")))
      else
        passed = passed + 1
        io.stdout:write(("ok - %s (%.2fs)\n"):format(t.name, task.now() - started))
      end
    end
  end
  if teardown then teardown() end
  io.stdout:write(("%d passed, %d failed\n"):format(passed, failed))
  io.stdout:flush()
  os.exit(failed == 0 and 0 or 1)
end

return T
