-- Feeds every binding wrong argument types and checks that each call either succeeds or raises
-- a clear, one-line error naming the function, and that nothing crashes.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")

local MODULES = {
  { "stagehost.task", task },
  { "stagehost.core.task", require "stagehost.core.task" },
  { "stagehost.proc", proc },
  { "stagehost.core.proc", require "stagehost.core.proc" },
  { "stagehost.fs", fs },
  { "stagehost.core.fs", require "stagehost.core.fs" },
  { "stagehost.json", json },
  { "stagehost.core.json", require "stagehost.core.json" },
  { "stagehost.log", log },
  { "stagehost.core.log", require "stagehost.core.log" },
  -- crypto.lua is the C module itself: seal, open and the rest once
  { "stagehost.crypto", require "stagehost.crypto" },
  { "stagehost.xml", require "stagehost.xml" },
  { "stagehost.yaml", require "stagehost.yaml" },
  { "stagehost.core.aws_sigv4", require "stagehost.core.aws_sigv4" },
  { "stagehost.github", require "stagehost.github" },
  -- all of aws but the credential chain, which would ask the instance metadata address
  { "stagehost.aws", (function()
    local t = {}
    for k, v in pairs(require "stagehost.aws") do t[k] = v end
    t.credentials = nil
    return t
  end)() },
}

-- Calls that may legitimately block: a timeout of the 2 s guard counts as success for them.
local MAY_BLOCK = { sleep = true, join = true, wait = true, read_line = true, timeout = true }

-- Each wrong value is made fresh for every call (json.array marks the table it gets, etc.).
local VALUES = {
  { "nil", function() return nil end },
  { "42", function() return 42 end },
  { '"x"', function() return "x" end },
  { "{}", function() return {} end },
  { "true", function() return true end },
  { "function", function() return function() end end },
  { "coroutine", function() return coroutine.create(function() end) end },
  { "io.stdout", function() return io.stdout end },
}

-- () (nil) (42) ... and every two-argument mix
local ARGLISTS = { { label = "()", make = function() return { n = 0 } end } }
for _, v in ipairs(VALUES) do
  ARGLISTS[#ARGLISTS + 1] = { label = "(" .. v[1] .. ")", make = function() return { v[2](), n = 1 } end }
end
for _, a in ipairs(VALUES) do
  for _, b in ipairs(VALUES) do
    ARGLISTS[#ARGLISTS + 1] = {
      label = "(" .. a[1] .. ", " .. b[1] .. ")",
      make = function() return { a[2](), b[2](), n = 2 } end,
    }
  end
end

local function sorted_keys(t)
  local keys = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

-- A caller whose call site names the function the way user code would (m.name(...) or
-- o:name(...)), so Lua's own "bad argument ... to 'name'" sees a name. Not a tail call.
local function make_caller(style, name, target)
  local src
  if style == "field" then
    src = "local m = ... return function(...) local r = table.pack(m.%s(...)) return r end"
  elseif style == "method" then
    src = "local o = ... return function(...) local r = table.pack(o:%s(...)) return r end"
  end
  return assert(load(src:format(name), "=(caller " .. name .. ")"))(target)
end

local function first_line(msg)
  return (msg:match("^(.-)\nstack traceback") or msg)
end

-- What is wrong with an error raised by `name` (nil when it is fine).
local function judge_error(name, err, also_ok)
  if type(err) ~= "string" then return "raised a " .. type(err) .. " instead of a message" end
  if err == "" then return "raised an empty message" end
  if first_line(err):find("\n") then return "message is not one line: " .. ("%q"):format(err) end
  local named = err:find(name, 1, true) or err:find("bad argument", 1, true)
  for _, extra in ipairs(also_ok or {}) do named = named or err:find(extra, 1, true) end
  if not named then return "message names neither the function nor a bad argument: " .. err end
  if err:find("to '?'", 1, true) then return "message does not know the function's name: " .. err end
  if err:find("bad argument", 1, true) and not err:find("%(.+%)") then
    return "bad argument message does not say what was expected: " .. err
  end
  return nil
end

-- Shared metatables a binding must never change (a call that sets the metatable of the wrong
-- value would break every string, number, ... for the rest of the run).
local SHARED = {
  { "strings", "" },
  { "numbers", 0 },
  { "booleans", true },
  { "nil", nil },
  { "functions", print },
  { "coroutines", coroutine.create(function() end) },
  { "io.stdout", io.stdout },
  { "io.stderr", io.stderr },
  { "json.null (light userdata)", json.null },
}
local SHARED_MT = {}
for i, s in ipairs(SHARED) do SHARED_MT[i] = debug.getmetatable(s[2]) end

-- -> nil, or a description of every shared metatable that changed (each is put back)
local function check_shared()
  local changed
  for i, s in ipairs(SHARED) do
    local now = debug.getmetatable(s[2])
    if now ~= SHARED_MT[i] then
      debug.setmetatable(s[2], SHARED_MT[i])
      local name = type(now) == "table" and rawget(now, "__name") or tostring(now)
      changed = (changed and changed .. ", " or "") .. ("set the metatable of %s (to %s)"):format(s[1], tostring(name))
    end
  end
  return changed
end

-- Run fn(...) in its own task, guarded by a 2 s timeout.
-- -> "ok" | "timeout" | "error" | "task-failed", err, what it broke
local function guarded(fn, args)
  local t = task.spawn(function(...)
    local res = table.pack(pcall(task.timeout, 2, fn, ...))
    local broke = check_shared() -- before anything else runs: no yield in between
    return broke, table.unpack(res, 1, res.n)
  end, table.unpack(args, 1, args.n))
  local done, broke, pok, in_time, err = t:join()
  if not done then return "task-failed", broke end
  if not pok then return "error", in_time, broke end
  if in_time == false and err == "timeout" then return "timeout", nil, broke end
  return "ok", nil, broke
end

-- Calls every arglist on one callee concurrently; returns a list of problems.
local function fuzz(label, name, caller, opts)
  opts = opts or {}
  local problems, runs = {}, {}
  for i, al in ipairs(ARGLISTS) do
    local args = al.make()
    if opts.fix_args then opts.fix_args(args) end
    local shown = al.label
    runs[i] = task.spawn(function()
      local outcome, err, broke = guarded(caller, args)
      if broke then
        problems[#problems + 1] = ("%s%s: %s"):format(label, shown, broke)
      end
      if outcome == "timeout" then
        if not MAY_BLOCK[name] then
          problems[#problems + 1] = ("%s%s: did not return within 2 s"):format(label, shown)
        end
      elseif outcome == "task-failed" then
        problems[#problems + 1] = ("%s%s: the calling task failed: %s"):format(label, shown, tostring(err))
      elseif outcome == "error" then
        local extra = opts.also_ok and opts.also_ok(args) or nil
        local why = judge_error(name, err, extra)
        if why then problems[#problems + 1] = ("%s%s: %s"):format(label, shown, why) end
      end
    end)
  end
  for _, t in ipairs(runs) do
    local ok, err = t:join()
    if not ok then problems[#problems + 1] = label .. ": fuzz task failed: " .. tostring(err) end
  end
  return problems
end

local function report(problems)
  if #problems == 0 then return end
  table.sort(problems)
  local shown = {}
  for i = 1, math.min(#problems, 40) do shown[i] = "  " .. problems[i] end
  if #problems > 40 then shown[#shown + 1] = ("  ... and %d more"):format(#problems - 40) end
  error(("%d problem(s):\n%s"):format(#problems, table.concat(shown, "\n")), 0)
end

-- Temp directory for fs calls: a string or number path argument is put inside it, so the
-- fuzz never creates or removes files in the working directory.
local function new_tmpdir()
  local base = os.tmpname() -- a new unique file; the directory is named after it
  local dir = base .. "-stagehost-test-badargs"
  assert(not fs.exists(dir), "fresh temp dir name")
  assert(fs.mkdir(dir))
  return dir, base
end

local function quiet(fn)
  local saved = log.level()
  log.level("off")
  local ok, err = pcall(fn)
  log.level(saved)
  if not ok then error(err, 0) end
end

T.test("every module function with wrong argument types", function()
  local dir, base = new_tmpdir()
  local problems, seen, count = {}, {}, 0
  quiet(function()
    for _, mod in ipairs(MODULES) do
      local modname, m = mod[1], mod[2]
      for _, name in ipairs(sorted_keys(m)) do
        local fn = m[name]
        -- the public modules re-export the C functions; each function object is fuzzed once
        if not seen[fn] then
          seen[fn] = modname .. "." .. name
          count = count + 1
          local opts = {}
          if modname:find("fs$") then
            opts.fix_args = function(args)
              local p = args[1]
              if type(p) == "string" or type(p) == "number" then args[1] = dir .. "/" .. tostring(p) end
            end
          end
          if modname:find("log$") and name == "bind" then
            -- bind's 2nd argument is a log file it opens for appending: keep it in the temp dir
            opts.fix_args = function(args)
              local p = args[2]
              if type(p) == "string" or type(p) == "number" then args[2] = dir .. "/" .. tostring(p) end
            end
          end
          if modname == "stagehost.core.proc" and name == "spawn" then
            -- the C spawn's 2nd argument is the name its messages use ("proc.run", "proc.spawn")
            opts.also_ok = function(args)
              if type(args[2]) == "string" or type(args[2]) == "number" then return { tostring(args[2]) } end
            end
          end
          local found = fuzz(modname .. "." .. name, name, make_caller("field", name, m), opts)
          for _, p in ipairs(found) do problems[#problems + 1] = p end
        end
      end
    end
  end)
  local ok, err = fs.remove(dir, { recursive = true })
  os.remove(base)
  T.ok(ok, err)
  T.ok(count >= 25, "fuzzed " .. count .. " functions")
  report(problems)
end, { timeout = 180 })

T.test("every task method with wrong argument types", function()
  local t = task.spawn(function() return "done" end)
  T.eq(select(2, t:join()), "done")
  local methods = getmetatable(t).__index
  T.eq(type(methods), "table")
  local names = sorted_keys(methods)
  T.ok(#names >= 3, "task methods: " .. table.concat(names, ","))
  local problems = {}
  for _, name in ipairs(names) do
    -- t:name(wrong...) with a good self, and t.name(wrong...) with a wrong self
    for _, p in ipairs(fuzz("task:" .. name, name, make_caller("method", name, t))) do problems[#problems + 1] = p end
    for _, p in ipairs(fuzz("task." .. name, name, make_caller("field", name, t))) do problems[#problems + 1] = p end
  end
  T.eq(t:status(), "success", "the task is unchanged")
  report(problems)
end, { timeout = 120 })

T.test("every process handle method with wrong argument types", function()
  local p = proc.spawn { "sleep", "0" }
  local r = p:wait()
  T.eq(r.ok, true)
  local mt = getmetatable(p)
  local methods = type(mt) == "table" and mt.methods or nil
  local names = methods and sorted_keys(methods) or { "close_stdin", "kill", "read_line", "wait", "write" }
  T.ok(#names >= 5, "process methods: " .. table.concat(names, ","))
  local problems = {}
  quiet(function()
    for _, name in ipairs(names) do
      T.eq(type(p[name]), "function", "p." .. name)
      for _, x in ipairs(fuzz("process:" .. name, name, make_caller("method", name, p))) do problems[#problems + 1] = x end
      for _, x in ipairs(fuzz("process." .. name, name, make_caller("field", name, p))) do problems[#problems + 1] = x end
    end
  end)
  T.eq(p:wait().code, 0, "the handle still works")
  T.eq(type(p.pid), "number")
  report(problems)
end, { timeout = 120 })

T.test("indexing a process handle with wrong key types", function()
  local p = proc.spawn { "sleep", "0" }
  p:wait()
  local problems = {}
  for _, v in ipairs(VALUES) do
    local ok, err = pcall(function() local x = p[v[2]()] return x end)
    if not ok then
      local why = judge_error("index", err)
      if why then problems[#problems + 1] = "p[" .. v[1] .. "]: " .. why end
    end
  end
  report(problems)
end)

T.test("a closed process handle fails clearly", function()
  local p
  do
    local q <close> = proc.spawn { "sleep", "0" }
    q:wait()
    p = q
  end
  local err = T.raises(function() local r = p:wait() return r end, "closed")
  T.no_match(err, "\n")
  T.raises(function() local r = p:kill() return r end, "closed")
  T.raises(function() local r = p.pid return r end, "closed")
end)

T.test("key error messages", function()
  local err = T.raises(function() local r = proc.run(42) return r end,
    "bad argument #1 to 'proc.run' (table expected, got number)")
  T.no_match(err, "\n")
  err = T.raises(function() local r = proc.run {} return r end, "nothing to run")
  T.match(err, "proc%.run")
  err = T.raises(function() local r = proc.spawn {} return r end, "nothing to run")
  T.match(err, "proc%.spawn")
  err = T.raises(function() local r = proc.run { "no-such-program-xyz" } return r end, "'no-such-program-xyz'")
  T.match(err, "not found")
  T.match(err, "proc%.run")
  err = T.raises(function() task.sleep("abc") end, "bad argument")
  T.match(err, "sleep")
  T.match(err, "number expected")
  err = T.raises(function() local r = json.decode(nil) return r end, "bad argument")
  T.match(err, "decode")
  T.match(err, "string expected")
  err = T.raises(function() local r = fs.read({}) return r end, "bad argument")
  T.match(err, "read")
  T.match(err, "string expected")
  err = T.raises(function() local r = task.spawn(42) return r end, "bad argument")
  T.match(err, "spawn")
  err = T.raises(function() local r = log.mask({}) return r end, "bad argument")
  T.match(err, "mask")
  err = T.raises(function() local r = task.all(42) return r end, "bad argument #1 to 'task.all' (table expected, got number)")
  err = T.raises(function() local r = log.group(42) return r end, "bad argument #1 to 'log.group'")
end)

T.test("errors from proc.run and proc.spawn blame the caller's line", function()
  local here = "test_badargs%.lua:%d+: "
  local cases = {
    { "proc.run(42)", function() local r = proc.run(42) return r end },
    { "proc.run{on_line = 42}", function() local r = proc.run { "true", on_line = 42 } return r end },
    { "proc.run{}", function() local r = proc.run {} return r end },
    { "proc.run{timeout = 'x'}", function() local r = proc.run { "true", timeout = "x" } return r end },
    { "proc.run{missing program}", function() local r = proc.run { "no-such-program-xyz" } return r end },
    { "proc.run{check = 'x'}", function() local r = proc.run { "true", check = "x" } return r end },
    { "proc.run{quiet = 'x'}", function() local r = proc.run { "true", quiet = "x" } return r end },
    { "proc.run{check = true, exit 1}", function() local r = proc.run { "false", check = true } return r end },
    { "proc.spawn{quiet = 'x'}", function() local r = proc.spawn { "true", quiet = "x" } return r end },
    { "proc.spawn(42)", function() local r = proc.spawn(42) return r end },
    { "proc.spawn{}", function() local r = proc.spawn {} return r end },
    { "proc.spawn{timeout = 'x'}", function() local r = proc.spawn { "true", timeout = "x" } return r end },
  }
  local problems = {}
  for _, c in ipairs(cases) do
    local ok, err = pcall(c[2])
    if ok then
      problems[#problems + 1] = c[1] .. ": did not fail"
    elseif type(err) ~= "string" or not err:find("^[^\n]*" .. here) then
      problems[#problems + 1] = ("%s: message does not start with this file's line: %s"):format(c[1], tostring(err))
    end
  end
  report(problems)
end)

T.test("the binary reports a bad argument in one clear line", function()
  local bin = os.getenv("STAGEHOST_BIN")
  if not bin or bin == "" then
    local i = -1
    while arg[i - 1] do i = i - 1 end
    bin = arg[i]
  end
  T.ok(bin, "path of the stagehost binary")
  local r = proc.run { bin, "-e", "require('stagehost.proc').run(42)", timeout = 30 }
  T.eq(r.code, 1, "exit code")
  local first = r.stderr:match("^[^\n]*")
  T.ok(first and first ~= "", "stderr has a first line")
  T.match(first, "bad argument #1 to 'proc%.run' %(table expected, got number%)", "first line of stderr")
  local plain = first:find("(command line):1:", 1, true)
  T.ok(plain, "first line names the location (command line):1: -- got " .. ("%q"):format(first))
end)

T.run()
