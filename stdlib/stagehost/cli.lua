-- The command line beyond `stagehost FILE.lua`: run, graph, runs, status, logs, resume, cancel,
-- artifacts prune. Exit codes travel as error objects with an exit_code field, which the host
-- prints as one line, without a traceback.
local pipeline = require "stagehost.pipeline"
local engine = require "stagehost.pipeline.engine"
local json = require "stagehost.json"
local fs = require "stagehost.fs"
local log = require "stagehost.log"

local cli = {}

local Exit = { __name = "stagehost.exit", __tostring = function(e) return e.message end }

local function exit(code, fmt, ...)
  error(setmetatable({ exit_code = code, message = fmt and fmt:format(...) or "" }, Exit), 0)
end
cli.exit = exit

local USAGE = [==[
usage: stagehost run PIPELINE.lua [--tag T] [--env E] [--var k=v]... [--only S]... [--from S]
                                  [--state DIR] [--dry-run] [--sandbox]
       stagehost graph PIPELINE.lua [--format mermaid|dot|json]
       stagehost runs [--json] | status RUN [--json] | logs RUN [STAGE] | resume RUN
       stagehost cancel RUN | artifacts prune [--older-than 30d]]==]

local function usage_error(fmt, ...)
  exit(2, "%s\n\n%s", fmt:format(...), USAGE)
end

-- Parse flags; spec maps a flag to "value", "list" or "flag". Returns options and positionals.
local function parse(args, spec, first)
  local opts, pos = {}, {}
  local i = first or 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w-]+)=(.*)$")
    name = name or a:match("^%-%-([%w-]+)$")
    if name then
      local kind = spec[name]
      if not kind then usage_error("unknown option '--%s'", name) end
      if kind == "flag" then
        opts[name] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = args[i]
          if v == nil then usage_error("option '--%s' needs a value", name) end
        end
        if kind == "list" then
          opts[name] = opts[name] or {}
          for part in v:gmatch("[^,]+") do opts[name][#opts[name] + 1] = part end
        else
          opts[name] = v
        end
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      usage_error("unknown option '%s'", a)
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

local RUN_FLAGS = { tag = "value", env = "value", var = "list", only = "list", from = "value",
  state = "value", ["dry-run"] = "flag", actor = "value", sandbox = "flag" }

function cli.state_dir(opts)
  return (opts and opts.state) or os.getenv("STAGEHOST_STATE_DIR") or ".stagehost"
end

-- Load a pipeline file: it must return pipeline.define{...}.
function cli.load(path)
  if not path then usage_error("give the pipeline file") end
  local chunk, err = loadfile(path)
  if not chunk then
    if err:find("cannot open") then exit(2, "cannot open pipeline '%s' (check the path)", path) end
    exit(2, "%s", err)
  end
  pipeline.loading = path
  local ok, p = pcall(chunk)
  pipeline.loading = nil
  if not ok then
    if type(p) == "table" and p.exit_code then error(p, 0) end
    exit(2, "%s", tostring(p))
  end
  if not pipeline.is(p) then exit(2, "%s does not return pipeline.define{...} (it returned %s)", path, type(p)) end
  return p
end

local function vars_of(list)
  local vars = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([%w_.-]+)=(.*)$")
    if not k then usage_error("--var wants key=value (got '%s')", kv) end
    vars[k] = v
  end
  return vars
end

local SYMBOLS = { success = "✓", failure = "✗", skipped = "○", cancelled = "■", running = "…", pending = " " }

local function summary(run)
  local lines = { "", ("run %s: %s"):format(run.id, run.status) }
  for _, name in ipairs(run.order) do
    local r = run.stages[name]
    local extra = r.duration and engine.fmt_duration(r.duration) or ""
    if r.status == "skipped" and r.reason then extra = r.reason end
    if r.status == "failure" and r.error then extra = extra .. "  " .. r.error end
    lines[#lines + 1] = ("  %s %-28s %-9s %s"):format(SYMBOLS[r.status] or "?", name, r.status, extra)
  end
  return table.concat(lines, "\n")
end

-- A live view for a terminal: a line per stage — status, name, elapsed time, last log line —
-- redrawn in place. The console's log lines stay off meanwhile (they are in the stage logs).
local function live_view(run)
  local task = require "stagehost.task"
  local spin = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" }
  local frame, drawn = 0, false
  local function draw()
    frame = frame + 1
    local out = {}
    if drawn then out[1] = ("\27[%dA"):format(#run.order) end
    for _, name in ipairs(run.order) do
      local r = run.stages[name]
      local symbol = r.status == "running" and spin[frame % #spin + 1] or (SYMBOLS[r.status] or " ")
      local elapsed = r.duration or (r.t0 and task.now() - r.t0)
      local last = r.status == "skipped" and (r.reason or "") or (r.log_context and r.log_context:last() or "")
      last = last:gsub("[%c]", " "):sub(1, 70)
      out[#out + 1] = ("\27[2K%s %-26s %8s  %s\n"):format(symbol, name, elapsed and engine.fmt_duration(elapsed) or "", last)
    end
    io.stdout:write(table.concat(out))
    io.stdout:flush()
    drawn = true
  end
  log.console(false)
  local t = task.spawn(function()
    while true do
      draw()
      task.sleep(0.1)
    end
  end)
  return function()
    t:cancel("run finished")
    draw()
    log.console(true)
  end
end

-- Write run.json beside the run's logs and artifacts (atomic, so a reader never sees half).
local function write_record(run)
  if not run.dir then return end
  local record = { id = run.id, pipeline = run.pipeline, file = run.file, tag = run.tag, env = run.env,
    actor = run.actor, vars = run.vars, status = run.status, started_at = run.started_at,
    finished_at = run.finished_at, stages = json.array{} }
  for _, name in ipairs(run.order) do
    local r = run.stages[name]
    record.stages[#record.stages + 1] = { name = name, status = r.status, started_at = r.started_at,
      finished_at = r.finished_at, duration = r.duration, attempts = r.attempts, outputs = r.outputs,
      error = r.error, reason = r.reason, allowed_failure = r.allowed_failure,
      artifacts = json.array(r.artifacts or {}) }
  end
  assert(fs.write(run.dir .. "/run.json", log.masked(json.encode(record, { pretty = true })) .. "\n"))
end

local function open_store(state_dir, readonly)
  return require("stagehost.pipeline.store").open(state_dir, { readonly = readonly })
end

local function finish(run, viewed)
  if viewed then print(("run %s: %s"):format(run.id, run.status)) else print(summary(run)) end
  if run.status == "failure" then exit(1, "run %s failed", run.id) end
  if run.status == "cancelled" then exit(3, "run %s was cancelled", run.id) end
  return 0
end

-- report.html, junit.xml (when stages reported tests) and the GitHub step summary.
local function write_reports(run, p)
  local ok, err = require("stagehost.pipeline.report").write_all(run, p)
  if not ok then log.warn("the run's reports could not be written: " .. tostring(err)) end
end

-- --sandbox: the emulator of CloudFormation, STS, Amplify and GitHub on loopback, with every
-- client of this host pointed at it. Its world lives as long as the host: a resumed sandbox
-- run starts from an empty one.
local function start_sandbox()
  local sb = require("stagehost.sandbox").start{}
  local restore = sb:use()
  local function stop()
    restore()
    sb:close()
  end
  return stop, sb.url
end

local function sandbox_note(url)
  if url then
    log.info(("sandbox: AWS (CloudFormation, STS, Amplify) and GitHub are emulated at %s; nothing leaves this machine"):format(url))
  end
end

-- Run pipeline p with command-line args; raises an exit object for anything but success.
function cli.run_pipeline(p, args)
  local opts = parse(args, RUN_FLAGS)
  local selected, err = engine.select(p, opts.only, opts.from)
  if not selected then usage_error("%s", err) end
  if opts["dry-run"] then
    print(engine.plan(p, selected))
    return 0
  end
  -- a run shows its stages' output as it comes, as a CI log does (under GitHub Actions each
  -- stage's log is printed folded when it ends instead)
  log.echo_output(os.getenv("GITHUB_ACTIONS") ~= "true")
  local state_dir = cli.state_dir(opts)
  local ok, mkerr = fs.mkdir(state_dir .. "/runs")
  if not ok then exit(2, "cannot use state directory '%s': %s", state_dir, mkerr) end
  local store = open_store(state_dir)
  local id = engine.new_run_id()
  local live = log.isatty() and os.getenv("GITHUB_ACTIONS") ~= "true"
  local stop_view
  local stop_sandbox, sandbox_url
  if opts.sandbox then stop_sandbox, sandbox_url = start_sandbox() end
  local run = engine.execute(p, {
    on_start = function(r)
      print("run " .. id)
      sandbox_note(sandbox_url)
      log.info(("pipeline '%s' (%s)%s%s"):format(p.name, p.file, opts.tag and (", tag " .. opts.tag) or "",
        opts.env and (", env " .. opts.env) or ""))
      if live then stop_view = live_view(r) end
    end,
    id = id, tag = opts.tag, env = opts.env, actor = opts.actor or os.getenv("GITHUB_ACTOR") or os.getenv("USER"),
    vars = vars_of(opts.var), selected = selected, state_dir = state_dir, store = store,
    cwd = fs.cwd(), args = args, sandbox = opts.sandbox,
  })
  if stop_sandbox then stop_sandbox() end
  -- SQLite holds every transition as it happens; run.json and the reports are the run's
  -- record once it is over
  write_record(run)
  write_reports(run, p)
  store:close()
  if stop_view then stop_view() end
  return finish(run, stop_view ~= nil)
end

local function cmd_graph(args)
  local opts, pos = parse(args, { format = "value" }, 2)
  local p = cli.load(pos[1])
  local format = opts.format or "mermaid"
  if format == "mermaid" then io.stdout:write(pipeline.mermaid(p))
  elseif format == "dot" then io.stdout:write(pipeline.dot(p))
  elseif format == "json" then io.stdout:write(json.encode(pipeline.describe(p), { pretty = true }), "\n")
  else usage_error("--format must be mermaid, dot or json (got '%s')", format) end
  return 0
end

local function state_of(args, first, spec)
  spec = spec or {}
  spec.state = "value"
  local opts, pos = parse(args, spec, first)
  return opts, pos, cli.state_dir(opts)
end

local function need_run(store, id)
  if not id then usage_error("give the run ID (see 'stagehost runs')") end
  local r = store:run(id)
  if not r then exit(2, "no run '%s' in %s (see 'stagehost runs')", id, store.path) end
  return r
end

local function cmd_runs(args)
  local opts, _, dir = state_of(args, 2, { json = "flag" })
  if not fs.exists(dir .. "/state.db") then
    if opts.json then print("[]") else print("no runs yet in " .. dir) end
    return 0
  end
  local store = open_store(dir, true)
  local rows = store:runs(50)
  store:close()
  if opts.json then
    local out = json.array{}
    for _, r in ipairs(rows) do
      out[#out + 1] = { id = r.id, pipeline = r.pipeline, status = r.status, tag = r.tag, env = r.env,
        started_at = r.started_at, finished_at = r.finished_at }
    end
    print(json.encode(out, { pretty = true }))
    return 0
  end
  print(("%-22s %-16s %-12s %-20s %s"):format("RUN", "PIPELINE", "STATUS", "STARTED", "TAG"))
  for _, r in ipairs(rows) do
    print(("%-22s %-16s %-12s %-20s %s"):format(r.id, r.pipeline, r.status, r.started_at or "", r.tag or ""))
  end
  return 0
end

local function cmd_status(args)
  local opts, pos, dir = state_of(args, 2, { json = "flag" })
  local store = open_store(dir, true)
  local r = need_run(store, pos[1])
  store:close()
  if opts.json then
    r.recorded_status = nil
    for _, s in ipairs(r.stages) do s.run_id = nil end
    r.stages = json.array(r.stages)
    r.artifacts = json.array(r.artifacts)
    print(json.encode(r, { pretty = true }))
    return 0
  end
  print(("run %s: %s — pipeline '%s' (%s)%s"):format(r.id, r.status, r.pipeline, r.file,
    r.tag and (", tag " .. r.tag) or ""))
  for _, s in ipairs(r.stages) do
    local extra = s.duration and engine.fmt_duration(s.duration) or ""
    if s.status == "skipped" and s.reason then extra = s.reason end
    if s.error then extra = extra .. "  " .. s.error end
    print(("  %s %-28s %-9s %s"):format(SYMBOLS[s.status] or "?", s.name, s.status, extra))
  end
  if r.status == "interrupted" then print("\nits host is gone: 'stagehost resume " .. r.id .. "' continues it") end
  return 0
end

local function cmd_logs(args)
  local _, pos, dir = state_of(args, 2)
  local store = open_store(dir, true)
  local r = need_run(store, pos[1])
  store:close()
  local names = {}
  if pos[2] then
    local known = false
    for _, s in ipairs(r.stages) do if s.name == pos[2] then known = true end end
    if not known then exit(2, "run %s has no stage '%s'", r.id, pos[2]) end
    names = { pos[2] }
  else
    for _, s in ipairs(r.stages) do names[#names + 1] = s.name end
  end
  for _, name in ipairs(names) do
    local text = fs.read(dir .. "/runs/" .. r.id .. "/logs/" .. name .. ".log")
    if text then
      if #names > 1 then print("== " .. name) end
      io.stdout:write(text)
    end
  end
  return 0
end

local function cmd_resume(args)
  local _, pos, dir = state_of(args, 2)
  local store = open_store(dir)
  local r = need_run(store, pos[1])
  if r.status == "running" then exit(2, "run %s is still running (host pid %d)", r.id, r.pid) end
  if r.status ~= "interrupted" then exit(2, "run %s already ended (%s): nothing to resume", r.id, r.status) end
  local path = (r.file:sub(1, 1) == "/" or not r.cwd) and r.file or (r.cwd .. "/" .. r.file)
  local p = cli.load(path)
  local ropts = parse(r.args, RUN_FLAGS)
  local selected, err = engine.select(p, ropts.only, ropts.from)
  if not selected then exit(2, "%s", err) end
  local previous = {}
  for _, s in ipairs(r.stages) do
    previous[s.name] = { name = s.name, status = s.status, started_at = s.started_at, finished_at = s.finished_at,
      duration = s.duration, attempts = s.attempts, outputs = s.outputs, error = s.error, reason = s.reason,
      allowed_failure = s.allowed_failure, artifacts = {} }
  end
  log.echo_output(os.getenv("GITHUB_ACTIONS") ~= "true")
  local stop_sandbox, sandbox_url
  if ropts.sandbox then stop_sandbox, sandbox_url = start_sandbox() end
  local run = engine.execute(p, {
    on_start = function()
      print("run " .. r.id)
      sandbox_note(sandbox_url)
      log.info(("resuming run %s of '%s' (%s)"):format(r.id, p.name, path))
    end,
    id = r.id, tag = r.tag, env = r.env, actor = r.actor, vars = r.vars, selected = selected, state_dir = dir,
    store = store, previous = previous, started_at = r.started_at, cwd = r.cwd, args = r.args,
    sandbox = ropts.sandbox,
  })
  if stop_sandbox then stop_sandbox() end
  write_record(run)
  write_reports(run, p)
  store:close()
  return finish(run)
end

local function cmd_cancel(args)
  local _, pos, dir = state_of(args, 2)
  local store = open_store(dir)
  local r = need_run(store, pos[1])
  if r.status ~= "running" then exit(2, "run %s is not running (%s)", r.id, r.status) end
  store:request_cancel(r.id)
  store:close()
  print(("cancel requested for run %s (host pid %d)"):format(r.id, r.pid))
  return 0
end

local function cmd_artifacts(args)
  if args[2] ~= "prune" then usage_error("artifacts: the only action is 'prune'") end
  local opts, _, dir = state_of(args, 3, { ["older-than"] = "value" })
  local older
  if opts["older-than"] then
    older = pipeline.seconds(opts["older-than"])
    if not older then usage_error("--older-than wants a duration like 30d or 12h (got '%s')", opts["older-than"]) end
  end
  if not fs.exists(dir .. "/state.db") then print("no artifacts in " .. dir) return 0 end
  local store = open_store(dir)
  local n, bytes = store:prune(older)
  store:close()
  print(("pruned %d artifact(s), %d bytes"):format(n, bytes))
  return 0
end

local COMMANDS = {
  runs = cmd_runs,
  status = cmd_status,
  logs = cmd_logs,
  resume = cmd_resume,
  cancel = cmd_cancel,
  artifacts = cmd_artifacts,
  run = function(args)
    local p = cli.load(args[2])
    local rest = {}
    for i = 3, #args do rest[#rest + 1] = args[i] end
    return cli.run_pipeline(p, rest)
  end,
  graph = cmd_graph,
}

-- stagehost SUBCOMMAND args...
function cli.main(...)
  local args = table.pack(...)
  local cmd = COMMANDS[args[1]]
  if not cmd then usage_error("unknown command '%s'", tostring(args[1])) end
  return cmd(args)
end

cli.commands = COMMANDS
return cli
