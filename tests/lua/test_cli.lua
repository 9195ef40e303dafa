-- The stagehost binary as a user meets it: exit codes, messages, signals, arg, paths.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

-- `stagehost ARGS` here; a timeout of 60 s unless opts gives one
local function sh(args, opts)
  local o = { timeout = 60 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return T.stagehost(nil, args, o)
end


local function first_line(s) return (s:match("^[^\n]*")) end

-- `stagehost DIR/NAME`, DIR a fresh directory whose file NAME holds source: -> the result, DIR
local function run_file(name, source)
  local dir = T.project { [name] = source }
  return sh{ dir .. "/" .. name }, dir
end

-- The commands and options DESIGN.md's "Command line" gives for the commands that exist.
local COMMANDS = {
  { "run", { "--tag", "--env", "--var", "--only", "--from", "--state", "--actor", "--sandbox", "--dry-run" } },
  { "graph", { "--format" } },
  { "runs", { "--json", "--state" } },
  { "status", { "--json", "--state" } },
  { "logs", { "--state" } },
  { "resume", { "--state" } },
  { "rerun", { "--failed", "--from", "--state" } },
  { "cancel", { "--state" } },
  { "prune", { "--older-than", "--state" } },
  { "approve", { "--reject", "--comment", "--as", "--stage", "--state" } },
  { "approvals", { "--audit", "--json", "--state" } },
  { "serve", { "--listen", "--trust-header", "--public-url", "--state" } },
  { "help", {} },
}
local RUNS_A_PIPELINE = { run = true, resume = true, rerun = true }

local function lines_of(s) return select(2, s:gsub("\n", "")) end

T.test("--version and --help", function()
  local r = sh{ "--version" }
  T.eq(r.code, 0); T.match(r.stdout, "^stagehost %d+%.%d+%.%d+")
  local h = sh{ "--help" }
  T.eq(h.code, 0); T.match(h.stdout, "^usage: stagehost"); T.match(h.stdout, "exit codes")
  T.eq(h.stderr, "")
  T.eq(sh{ "-h" }.stdout, h.stdout)
end)

T.test("--help lists every command with every option, the global options and the exit codes", function()
  local h = sh{ "--help" }
  T.eq(h.code, 0)
  for _, c in ipairs(COMMANDS) do
    local name, options = c[1], c[2]
    -- a command's synopsis starts its line and may wrap onto the lines below
    local block = h.stdout:match("\n  " .. name .. "[ \n].-\n        %S[^\n]*")
    T.ok(block, "--help lists '" .. name .. "' with a one-line summary")
    for _, o in ipairs(options) do T.match(block, "[%[|] ?" .. o:gsub("%p", "%%%0") .. "[ %]]", name .. " " .. o) end
  end
  for _, o in ipairs{ "-e CODE", "--version", "-h, --help", "--  " } do T.has(h.stdout, "\n  " .. o, o) end
  for _, code in ipairs{ "0", "1", "2", "3", "130", "143" } do T.match(h.stdout, "\n  " .. code .. " +%a", "exit code " .. code) end
  for _, later in ipairs{ "artifacts" } do
    T.no_match(h.stdout, "\n  " .. later .. " ", "no command '" .. later .. "' yet")
  end
  -- the test knows every command the command line has
  local known = {}
  for _, c in ipairs(COMMANDS) do known[c[1]] = true end
  for _, cmd in ipairs(require("stagehost.cli").commands) do
    if not cmd.hidden then T.ok(known[cmd.name], "command '" .. cmd.name .. "' is in this test's list") end
  end
end)

T.test("help COMMAND and COMMAND --help: usage, every option with its meaning, exit codes; stdout, exit 0", function()
  local dir = T.tempdir()
  for _, c in ipairs(COMMANDS) do
    local name, options = c[1], c[2]
    local h = sh({ "help", name }, { cwd = dir })
    T.eq(h.code, 0, "help " .. name .. ": " .. h.stderr)
    T.eq(h.stderr, "", "help " .. name)
    T.match(h.stdout, "^usage: stagehost " .. name .. "[ \n]", "help " .. name)
    for _, o in ipairs(options) do -- its meaning beside it, or below it when the option is long
      local line = "\n  " .. o:gsub("%p", "%%%0")
      T.ok(h.stdout:find(line .. " [^\n]-  +%a") or h.stdout:find(line .. "[^\n]*\n" .. (" "):rep(22) .. "%a"),
        name .. ": " .. o .. " with a one-line meaning")
    end
    T.match(h.stdout, "\nexit codes:\n  0 +success\n  1? ?")
    T.match(h.stdout, "\n  2 +usage or configuration error")
    if RUNS_A_PIPELINE[name] then
      for _, code in ipairs{ "1", "3", "130", "143" } do T.match(h.stdout, "\n  " .. code .. " +%a", name .. " exit " .. code) end
    end
    for _, form in ipairs{ { name, "--help" }, { name, "-h" } } do
      local f = sh(form, { cwd = dir })
      T.eq(f.code, 0, table.concat(form, " ") .. ": " .. f.stderr)
      T.eq(f.stdout, h.stdout, table.concat(form, " ") .. " prints what 'help " .. name .. "' prints")
    end
  end
  -- after the arguments too: `run --help` never opens a file named --help
  local after = sh({ "run", "pipeline.lua", "--help" }, { cwd = dir })
  T.eq(after.code, 0); T.match(after.stdout, "^usage: stagehost run ")
  T.eq(sh({ "help" }, { cwd = dir }).stdout, sh{ "--help" }.stdout)
  T.eq(fs.exists(dir .. "/.stagehost"), false, "help opens no state")
  fs.remove(dir, { recursive = true })
end)

T.test("help nosuch: one line with a did-you-mean, exit 2", function()
  for _, c in ipairs{ { "nosuch", "did you mean one of run, graph, runs" }, { "stauts", "did you mean 'status'?" } } do
    local r = sh{ "help", c[1] }
    T.eq(r.code, 2, c[1]); T.eq(r.stdout, "")
    T.eq(lines_of(r.stderr), 1, "one line: " .. r.stderr)
    T.match(r.stderr, "^stagehost help: no command '" .. c[1] .. "' ")
    T.has(r.stderr, c[2])
  end
end)

T.test("a missing argument names itself, exit 2, before any state is opened", function()
  local dir = T.tempdir()
  for _, name in ipairs{ "status", "logs", "resume", "rerun", "cancel" } do
    for _, args in ipairs{ { name }, { name, "--state", "elsewhere" }, { name, "--json" } } do
      if args[2] ~= "--json" or name == "status" then
        local r = sh(args, { cwd = dir })
        T.eq(r.code, 2, table.concat(args, " "))
        T.eq(r.stderr, "stagehost " .. name .. ": give the run ID (see 'stagehost runs')\n")
        T.eq(r.stdout, "")
      end
    end
  end
  for _, name in ipairs{ "run", "graph" } do
    local r = sh({ name }, { cwd = dir })
    T.eq(r.code, 2, name)
    T.eq(r.stderr, ("stagehost %s: give the pipeline file (see 'stagehost help %s')\n"):format(name, name))
  end
  T.eq(fs.exists(dir .. "/.stagehost"), false, "no state directory was created")
  T.eq(fs.exists(dir .. "/elsewhere"), false, "nor the one --state names")
  fs.remove(dir, { recursive = true })
end)

T.test("usage errors: one line naming what is wrong and where the help is, exit 2", function()
  local dir = T.tempdir()
  local cases = {
    { {}, "^stagehost: nothing to run: give a script, a command or %-e CODE; see 'stagehost %-%-help'\n$" },
    { { "--frobnicate" }, "^stagehost: unknown option '%-%-frobnicate'; see 'stagehost %-%-help'\n$" },
    { { "-e" }, "^stagehost: option '%-e' needs an argument" },
    { { "-x", "file.lua" }, "^stagehost: unknown option '%-x'" },
    { { "nosuch" }, "^stagehost: unknown command 'nosuch' %(did you mean one of run, graph" },
    { { "statsu", "x" }, "^stagehost: unknown command 'statsu' %(did you mean 'status'%?%)" },
    { { "status", "RUN1", "--jsn" }, "^stagehost status: unknown option '%-%-jsn' %(did you mean '%-%-json'%?%); see 'stagehost help status'\n$" },
    { { "run", "p.lua", "--tagg", "x" }, "^stagehost run: unknown option '%-%-tagg' %(did you mean '%-%-tag'%?%); see 'stagehost help run'\n$" },
    { { "run", "p.lua", "--tag" }, "^stagehost run: option '%-%-tag' needs a value" },
    { { "runs", "--json=yes" }, "^stagehost runs: option '%-%-json' takes no value" },
    { { "runs", "extra" }, "^stagehost runs: unexpected argument 'extra'; see 'stagehost help runs'\n$" },
    { { "graph", "p.lua", "--format", "svg" }, "^stagehost graph: %-%-format must be mermaid, dot or json %(got 'svg'%)" },
    { { "rerun", "RUN1", "--failed", "--from", "deploy" }, "^stagehost rerun: give %-%-failed or %-%-from S, not both" },
    { { "prune", "--older-than", "soon" }, "^stagehost prune: %-%-older%-than wants a duration like 30d" },
    { { "artifacts", "prune" }, "^stagehost artifacts: 'stagehost artifacts prune' is now 'stagehost prune" },
  }
  for _, c in ipairs(cases) do
    local what = table.concat(c[1], " ")
    local r = sh(c[1], { cwd = dir })
    T.eq(r.code, 2, what .. ": " .. r.stderr)
    T.match(r.stderr, c[2], what)
    T.eq(lines_of(r.stderr), 1, what .. ": one line, not the whole usage")
    T.no_match(r.stderr, "usage:", what)
    T.eq(r.stdout, "", what)
  end
  T.eq(fs.exists(dir .. "/.stagehost"), false, "no state directory was created")
  fs.remove(dir, { recursive = true })
end)

-- A pipeline whose stage returns ctx.vars as its outputs, in a fresh directory.
local function vars_pipeline()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/p.lua", [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "vars", stages = {
      { name = "show", run = function(ctx) local out = {} for k, v in pairs(ctx.vars) do out[k] = v end return out end },
      { name = "after", needs = { "show" }, run = function() end },
    } }
  ]]))
  return dir
end

T.test("--var splits at the first '=' only: commas and '=' stay in the value, k= is empty", function()
  local json = require("stagehost.json")
  local dir = vars_pipeline()
  local r = sh({ "run", "p.lua", "--var", "reviewers=alice,bob", "--var", "url=https://x/?a=1&b=2",
    "--var", "empty=", "--var=inline=a,b=c" }, { cwd = dir })
  T.eq(r.code, 0, r.stderr)
  local id = T.ok(r.stdout:match("^run (%S+)\n"), "run ID")
  local st = sh({ "status", id, "--json" }, { cwd = dir })
  T.eq(st.code, 0, st.stderr)
  local run = json.decode(st.stdout)
  local want = { reviewers = "alice,bob", url = "https://x/?a=1&b=2", empty = "", inline = "a,b=c" }
  local outputs = run.stages[1].outputs
  for k, v in pairs(want) do
    T.eq(run.vars[k], v, "vars." .. k)
    T.eq(outputs[k], v, "ctx.vars." .. k)
  end
  local n = 0
  for _ in pairs(outputs) do n = n + 1 end
  T.eq(n, 4, "four variables, no 'bob' or 'b'")
  T.eq(json.decode(assert(fs.read(dir .. "/.stagehost/runs/" .. id .. "/run.json"))).vars.reviewers, "alice,bob")
  -- --only still splits at commas
  local only = sh({ "run", "p.lua", "--only", "show,nosuch", "--dry-run" }, { cwd = dir })
  T.eq(only.code, 2); T.has(only.stderr, "'nosuch' is not a stage of 'vars'")
  local both = sh({ "run", "p.lua", "--only", "show,after", "--dry-run" }, { cwd = dir })
  T.eq(both.code, 0, both.stderr)
  fs.remove(dir, { recursive = true })
end)

T.test("--var without '=' or without a name: one line, exit 2, nothing runs", function()
  local dir = vars_pipeline()
  for _, c in ipairs{ { "noequals", "wants NAME=VALUE (got 'noequals')" }, { "=value", "wants a name before the '=' (got '=value')" },
      { "a b=c", "(got 'a b')" } } do
    local v = c[1]
    local r = sh({ "run", "p.lua", "--var", v }, { cwd = dir })
    T.eq(r.code, 2, v)
    T.match(r.stderr, "^stagehost run: %-%-var", v)
    T.has(r.stderr, c[2], v)
    T.eq(lines_of(r.stderr), 1, v .. ": one line")
    T.eq(r.stdout, "", v)
  end
  T.eq(fs.exists(dir .. "/.stagehost"), false, "no run was recorded")
  fs.remove(dir, { recursive = true })
end)

T.test("a missing script exits 2 with one line naming it", function()
  local r = sh{ "/no/such/script.lua" }
  T.eq(r.code, 2)
  T.eq(first_line(r.stderr), "stagehost: cannot open /no/such/script.lua: No such file or directory (check the script's path)")
  T.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line")
end)

T.test("a syntax error exits 2 with file:line", function()
  local r, dir = run_file("bad.lua", "local x = 1\nlocal y = = 2\n")
  T.eq(r.code, 2)
  T.match(first_line(r.stderr), "^stagehost: " .. dir:gsub("%p", "%%%0") .. "/bad%.lua:2: unexpected symbol near '='$")
  local e = sh{ "-e", "x = = 1" }
  T.eq(e.code, 2); T.match(e.stderr, "%(command line%):1:")
  fs.remove(dir, { recursive = true })
end)

T.test("an uncaught error exits 1 with file:line and a traceback", function()
  local r, dir = run_file("fail.lua", "local function deploy()\n  error('stack not found')\nend\ndeploy()\n")
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

T.test("a script from stdin ('-'); '--' makes the next argument the script even when named like a command", function()
  local r = sh({ "-", "one", "two" }, { stdin = "print(arg[0], ...)\n" })
  T.eq(r.code, 0, r.stderr); T.eq(r.stdout, "-\tone\ttwo\n")
  local dir = T.tempdir()
  assert(fs.write(dir .. "/runs", "print('the script named runs', ...)\n"))
  local script = sh({ "--", "runs", "--json" }, { cwd = dir })
  T.eq(script.code, 0, script.stderr); T.eq(script.stdout, "the script named runs\t--json\n")
  local command = sh({ "runs", "--json" }, { cwd = dir })
  T.eq(command.code, 0, command.stderr); T.eq(command.stdout, "[]\n", "a command name is the command")
  local first = sh({ "-e", "print('-e first')", "runs", "--json" }, { cwd = dir })
  T.eq(first.code, 0, first.stderr); T.eq(first.stdout, "-e first\n[]\n", "-e runs before a command too")
  fs.remove(dir, { recursive = true })
end)

T.test("modules beside the script are found; require 'stagehost' gives every module", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/helper.lua", "return { greet = function() return 'hi from helper' end }\n"))
  assert(fs.write(dir .. "/main.lua", [[
    local sh = require("stagehost")
    print(require("helper").greet(), type(sh.proc.run), type(sh.task.spawn), sh.json.encode{1})
    print(pcall(function() return sh.nope end))
  ]]))
  local r = sh{ dir .. "/main.lua" }
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "^hi from helper\tfunction\tfunction\t%[1%]\n")
  T.match(r.stdout, "stagehost has no module 'nope'")
  fs.remove(dir, { recursive = true })
end)

-- How the host ends `stagehost -e SCRIPT` (run with opts): its exit code; stdout and stderr
-- where given, and a pattern stderr must match (says).
for _, c in ipairs {
  { "STAGEHOST_PATH pointing nowhere is a configuration error", "",
    opts = { env = { STAGEHOST_PATH = "/nonexistent" } },
    code = 2, says = "STAGEHOST_PATH=/nonexistent has no stagehost/init.lua" },
  { "a task failing with nobody joining it makes the script fail",
    "local task = require 'stagehost.task' task.spawn(function() error('background broke') end) task.sleep(0.05) print('main done')",
    code = 1, stdout = "main done\n", says = "nobody joined it: %(command line%):1: background broke" },
  { "a failing task that is joined leaves the script alone",
    "local task = require 'stagehost.task' local t = task.spawn(function() error('handled') end) task.sleep(0.05) assert(not t:join())",
    code = 0, stderr = "" },
  { "the script ends when its last task ends",
    "local task = require 'stagehost.task' task.spawn(function() task.sleep(0.2) print('late task ran') end)",
    code = 0, stdout = "late task ran\n" },
  { "a join cycle is reported instead of hanging", [[
    local task = require("stagehost.task")
    local a
    local b = task.spawn(function() task.sleep(0.01) return a:join() end)
    a = task.current()
    b:join()
  ]], code = 1, says = "the script is stuck" },
  { "a cancelled main task exits 3",
    "local task = require 'stagehost.task' task.current():cancel('approval rejected') task.sleep(1)",
    code = 3, stderr = "stagehost: approval rejected\n" },
} do
  T.test(c[1], function()
    local r = sh({ "-e", c[2] }, c.opts)
    T.eq(r.code, c.code, r.stderr)
    if c.stdout then T.eq(r.stdout, c.stdout) end
    if c.stderr then T.eq(r.stderr, c.stderr) end
    if c.says then T.match(r.stderr, c.says) end
  end)
end

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
    local proc = require("stagehost.proc")
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
  local ready = os.tmpname()
  os.remove(ready)
  local host, child = host_with_child(('trap "" TERM; : > %s; sleep 30'):format(ready), 0.5)
  -- TERM only once the child ignores it, or the KILL path is never taken
  local deadline = task.now() + 10
  while not require("stagehost.fs").exists(ready) and task.now() < deadline do task.sleep(0.01) end
  T.ok(require("stagehost.fs").exists(ready), "the child ignores TERM now")
  local t0 = task.now()
  host:kill("TERM")
  local r = host:wait()
  T.eq(r.code, 143)
  T.ok(T.gone(-child, 1))
  -- TERM alone did nothing: the group lived until the grace period ran out and KILL came
  T.ok(task.now() - t0 >= 0.45, "stopped only after the grace period: " .. (task.now() - t0) .. " s")
  os.remove(ready)
end)

T.test("precompiled Lua is never loaded: script, pipeline, stage file or module", function()
  local dir = T.tempdir()
  local fs = require("stagehost.fs")
  assert(fs.write(dir .. "/src.lua", "print('from bytecode')\n"))
  local compiled = proc.run{ "luac5.4", "-o", dir .. "/bc.luac", dir .. "/src.lua" }
  T.eq(compiled.code, 0, compiled.stderr)
  local bc = fs.read(dir .. "/bc.luac")
  assert(fs.write(dir .. "/mod.lua", bc))
  assert(fs.write(dir .. "/stage.lua", bc))
  assert(fs.write(dir .. "/p.lua", "local pipeline = require('stagehost.pipeline')\n"
    .. "return pipeline.define{ name = 'bc', stages = { { name = 'a', run = 'stage.lua' } } }\n"))
  local script = proc.run{ STAGEHOST, "bc.luac", cwd = dir }
  T.eq(script.code, 2); T.eq(script.stderr, "stagehost: bc.luac: precompiled Lua is not loaded; give the source\n")
  local run = proc.run{ STAGEHOST, "run", "bc.luac", cwd = dir }
  T.eq(run.code, 2); T.has(run.stderr, "bc.luac: precompiled Lua is not loaded")
  local stage = proc.run{ STAGEHOST, "run", "p.lua", cwd = dir }
  T.eq(stage.code, 2); T.has(stage.stderr, "run file 'stage.lua' does not load: attempt to load a binary chunk")
  local mod = proc.run{ STAGEHOST, "-e", "require('mod')", cwd = dir, env = { LUA_PATH = dir .. "/?.lua" } }
  T.eq(mod.code, 1); T.has(mod.stderr, "attempt to load a binary chunk")
  T.no_match(script.stdout .. run.stdout .. stage.stdout .. mod.stdout, "from bytecode")
  fs.remove(dir, { recursive = true })
end)

T.run()
