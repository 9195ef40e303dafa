-- The stagehost binary as a user meets it: exit codes, messages, signals, arg, paths.
local T = require "harness"
local task = require "stagehost.task"
local proc = require "stagehost.proc"
local fs = require "stagehost.fs"

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

local function sh(args, opts)
  local argv = { STAGEHOST }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  for k, v in pairs(opts or {}) do argv[k] = v end
  argv.timeout = argv.timeout or 60
  return proc.run(argv)
end


local function first_line(s) return (s:match("^[^\n]*")) end

T.test("--version and --help", function()
  local r = sh{ "--version" }
  T.eq(r.code, 0); T.match(r.stdout, "^stagehost %d+%.%d+%.%d+")
  local h = sh{ "--help" }
  T.eq(h.code, 0); T.match(h.stdout, "usage: stagehost"); T.match(h.stdout, "exit codes")
end)

T.test("usage errors exit 2 with the usage on stderr", function()
  for _, args in ipairs{ {}, { "--frobnicate" }, { "-e" }, { "-x", "file.lua" } } do
    local r = sh(args)
    T.eq(r.code, 2, table.concat(args, " "))
    T.match(r.stderr, "^stagehost: ")
    T.match(r.stderr, "usage: stagehost")
    T.eq(r.stdout, "")
  end
  T.match(sh{ "--frobnicate" }.stderr, "unknown option '%-%-frobnicate'")
end)

T.test("a missing script exits 2 with one line naming it", function()
  local r = sh{ "/no/such/script.lua" }
  T.eq(r.code, 2)
  T.eq(first_line(r.stderr), "stagehost: cannot open /no/such/script.lua: No such file or directory (check the script's path)")
  T.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line")
end)

T.test("a syntax error exits 2 with file:line", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/bad.lua", "local x = 1\nlocal y = = 2\n"))
  local r = sh{ dir .. "/bad.lua" }
  T.eq(r.code, 2)
  T.match(first_line(r.stderr), "^stagehost: " .. dir:gsub("%p", "%%%0") .. "/bad%.lua:2: unexpected symbol near '='$")
  local e = sh{ "-e", "x = = 1" }
  T.eq(e.code, 2); T.match(e.stderr, "%(command line%):1:")
  fs.remove(dir, { recursive = true })
end)

T.test("an uncaught error exits 1 with file:line and a traceback", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/fail.lua", "local function deploy()\n  error('stack not found')\nend\ndeploy()\n"))
  local r = sh{ dir .. "/fail.lua" }
  T.eq(r.code, 1)
  T.match(first_line(r.stderr), "fail%.lua:2: stack not found$")
  T.match(r.stderr, "stack traceback:")
  T.match(r.stderr, "fail%.lua:4: in main chunk")
  fs.remove(dir, { recursive = true })
end)

T.test("an uncaught error ends the host at once, even with a server, a timer and a child still running", function()
  local r = sh({ "-e", [[
local task, proc = require "stagehost.task", require "stagehost.proc"
local server = require("stagehost.http").serve{ handler = function() return "up" end }
task.spawn(function() task.sleep(30) end)
task.spawn(function() proc.run{ "sleep", "30" } end)
task.sleep(0.1)
error("deploy failed")
]] }, { timeout = 20 })
  T.eq(r.code, 1, r.stderr)
  T.eq(r.timed_out, false)
  T.ok(r.duration < 10, "did not wait for the server, the timer or the child: " .. r.duration)
  T.match(first_line(r.stderr), "deploy failed$")
end)

T.test("strange error values never crash the host", function()
  local cases = {
    { "error(nil)", "nil" },
    { "error({})", "table: 0x" },
    { "error(setmetatable({}, {__tostring = function() return 'custom message' end}))", "custom message" },
    { "error(setmetatable({}, {__tostring = function() error('nested') end}))", "error object is a table value" },
    { "local function f() return f() + 1 end f()", "stack overflow" },
    { "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x", "stack overflow" },
    { "string.rep('x', 1 << 40)", "too large" },
    { "coroutine.wrap(function() require('stagehost.task').sleep(1) end)()", "cannot wait here" },
  }
  for _, c in ipairs(cases) do
    local r = sh{ "-e", c[1] }
    T.eq(r.code, 1, c[1] .. " -> " .. r.stderr)
    T.match(r.stderr, c[2]:gsub("%p", "%%%0"), c[1])
    T.eq(r.signal, nil, c[1])
  end
end)

T.test("arg and ... as lua(1) gives them; -e runs before the script", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/args.lua", "print(arg[0], arg[1], arg[2], #arg, select('#', ...), table.concat({...}, ','), X)\n"))
  local r = sh{ "-e", "X = 'set by -e'", dir .. "/args.lua", "one", "two words" }
  T.eq(r.code, 0, r.stderr)
  T.eq(r.stdout, ("%s/args.lua\tone\ttwo words\t2\t2\tone,two words\tset by -e\n"):format(dir))
  fs.remove(dir, { recursive = true })
end)

T.test("modules beside the script are found; require 'stagehost' gives every module", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/helper.lua", "return { greet = function() return 'hi from helper' end }\n"))
  assert(fs.write(dir .. "/main.lua", [[
    local sh = require "stagehost"
    print(require("helper").greet(), type(sh.proc.run), type(sh.task.spawn), sh.json.encode{1})
    print(pcall(function() return sh.nope end))
  ]]))
  local r = sh{ dir .. "/main.lua" }
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "^hi from helper\tfunction\tfunction\t%[1%]\n")
  T.match(r.stdout, "stagehost has no module 'nope'")
  fs.remove(dir, { recursive = true })
end)

T.test("STAGEHOST_PATH pointing nowhere is a configuration error", function()
  local r = sh({ "-e", "" }, { env = { STAGEHOST_PATH = "/nonexistent" } })
  T.eq(r.code, 2)
  T.match(r.stderr, "STAGEHOST_PATH=/nonexistent has no stagehost/init.lua")
end)

T.test("a task failing with nobody joining it makes the script fail", function()
  local r = sh{ "-e", "local task = require 'stagehost.task' task.spawn(function() error('background broke') end) task.sleep(0.05) print('main done')" }
  T.eq(r.code, 1)
  T.eq(r.stdout, "main done\n")
  T.match(r.stderr, "nobody joined it: %(command line%):1: background broke")
  local joined = sh{ "-e", "local task = require 'stagehost.task' local t = task.spawn(function() error('handled') end) task.sleep(0.05) assert(not t:join())" }
  T.eq(joined.code, 0, joined.stderr)
  T.eq(joined.stderr, "")
end)

T.test("the script ends when its last task ends", function()
  local r = sh{ "-e", "local task = require 'stagehost.task' task.spawn(function() task.sleep(0.2) print('late task ran') end)" }
  T.eq(r.code, 0); T.eq(r.stdout, "late task ran\n")
end)

T.test("a join cycle is reported instead of hanging", function()
  local r = sh{ "-e", [[
    local task = require 'stagehost.task'
    local a
    local b = task.spawn(function() task.sleep(0.01) return a:join() end)
    a = task.current()
    b:join()
  ]] }
  T.eq(r.code, 1)
  T.match(r.stderr, "the script is stuck")
end)

T.test("a cancelled main task exits 3", function()
  local r = sh{ "-e", "local task = require 'stagehost.task' task.current():cancel('approval rejected') task.sleep(1)" }
  T.eq(r.code, 3)
  T.eq(r.stderr, "stagehost: approval rejected\n")
end)

T.test("os.exit keeps its code and stops running children", function()
  T.eq(sh{ "-e", "os.exit(5)" }.code, 5)
  T.eq(sh{ "-e", "os.exit(true)" }.code, 0)
  T.eq(sh{ "-e", "os.exit(false)" }.code, 1)
  local r = sh{ "-e", "local p = require('stagehost.proc').spawn{'sleep', '30'} print(p.pid) os.exit(0)" }
  T.eq(r.code, 0)
  local pid = tonumber(r.stdout)
  T.ok(T.gone(pid), "the child is gone")
end)

-- Start a host whose script starts `child_shell`, prints its pid and waits on it; return the
-- host's handle and the child's pid (its process group id too).
local function host_with_child(child_shell, grace)
  local p = proc.spawn{ STAGEHOST, "-e", ([[
    local proc = require 'stagehost.proc'
    local child = proc.spawn{ 'sh', '-c', %q, grace = %s }
    print(child.pid)
    child:wait()
    print('not reached')
  ]]):format(child_shell or "sleep 30 & sleep 30; wait", grace or 5), lines = true }
  local _, line = p:read_line()
  return p, tonumber(line)
end

T.test("SIGTERM to the host: exit 143, the child's group is gone", function()
  local host, child = host_with_child()
  T.ok(child and T.alive(-child), "child group running")
  host:kill("TERM")
  local r = host:wait()
  T.eq(r.code, 143)
  T.no_match(r.stdout, "not reached")
  T.ok(T.gone(-child, 1), "no member of the child's group is left")
end)

T.test("SIGINT to the host: exit 130, the child's group is gone", function()
  local host, child = host_with_child()
  host:kill("INT")
  local r = host:wait()
  T.eq(r.code, 130)
  T.ok(T.gone(-child, 1))
  T.match(r.stderr, "SIGINT received: cancelling")
end)

T.test("SIGTERM reaches a child that ignores it: SIGKILL after the grace period", function()
  local host, child = host_with_child('trap "" TERM; sleep 30', 0.3)
  task.sleep(0.05)
  host:kill("TERM")
  local r = host:wait()
  T.eq(r.code, 143)
  T.ok(T.gone(-child, 1))
end)

T.run()
