-- How the command line runs a pipeline: `run`, `resume` and `rerun` are one path (launch),
-- which opens the state, starts the sandbox when asked, shows the run (live view on a
-- terminal), executes it and turns its end into an exit code. `prune` lives here too: it
-- rewrites the records of runs it touched.
local engine = require("stagehost.pipeline.engine")
local Run = require("stagehost.pipeline.run")
local Store = require("stagehost.pipeline.store")
local live = require("stagehost.pipeline.live")
local errors = require("stagehost.errors")
local fs = require("stagehost.fs")
local log = require("stagehost.log")
local time = require("stagehost.util.time")

local runner = {}

local function in_actions() return os.getenv("GITHUB_ACTIONS") == "true" end

function runner.state_dir(opts)
  return (opts and opts.state) or os.getenv("STAGEHOST_STATE_DIR") or ".stagehost"
end

function runner.open_store(dir, readonly)
  return Store.open(dir, { readonly = readonly })
end

-- ---- where a run comes from ----

-- What started this run, for the pipeline's trigger: a tag (--tag, else GITHUB_REF's tag under
-- GitHub Actions), a branch push (GitHub Actions' push event), or a person.
function runner.origin(tag)
  local facts = { tag = tag, manual = true }
  if in_actions() then
    local ref = os.getenv("GITHUB_REF") or ""
    facts.tag = facts.tag or ref:match("^refs/tags/(.+)$")
    facts.branch = ref:match("^refs/heads/(.+)$")
    local event = os.getenv("GITHUB_EVENT_NAME")
    facts.manual = event == nil or event == "workflow_dispatch" or event == "repository_dispatch"
  end
  return facts
end

-- The commit being deployed: GITHUB_SHA, else the pipeline's git checkout, else nil.
function runner.commit(p)
  local sha = os.getenv("GITHUB_SHA")
  if sha and sha:match("^%x+$") then return sha end
  local ok, r = pcall(require("stagehost.proc").run, { "git", "-C", p.dir, "rev-parse", "HEAD", quiet = true, timeout = 5 })
  if ok and r.ok then return r.stdout:match("^(%x+)") end
  return nil
end

local function copy_record(s, from_run)
  return { name = s.name, status = s.status, started_at = s.started_at, finished_at = s.finished_at,
    duration = s.duration, attempts = s.attempts, outputs = s.outputs, error = s.error, reason = s.reason,
    allowed_failure = s.allowed_failure, artifacts = {}, reused_from = from_run,
    approved_by = s.approved_by }
end

-- Who passed a gate, as its outputs say (approval.request's votes, or `by`).
local function approvers_of(rec)
  local o = rec.outputs or {}
  if type(o.votes) == "table" then
    local who = {}
    for _, v in ipairs(o.votes) do
      if type(v) == "table" and v.decision == "approved" then who[#who + 1] = tostring(v.who) end
    end
    if #who > 0 then return table.concat(who, ", ") end
  end
  return o.approved_by or o.by and tostring(o.by) or rec.approved_by
end

-- A gate a run does not execute stands only on an earlier pass of the same pipeline, tag and
-- commit: no flag ever skips an approval.
local function reuse_gate(store, p, facts, name, flag)
  local source = store:latest_stage_success(p.name, facts.tag, facts.commit, name)
  if not source then
    errors.exit(2, "%s would skip the approval gate '%s', and no earlier run of '%s'%s%s passed it: run the gate (drop %s)",
      flag, name, p.name, facts.tag and (" at tag " .. facts.tag) or "",
      facts.commit and (" and commit " .. facts.commit:sub(1, 12)) or "", flag)
  end
  for _, s in ipairs(source.stages) do
    if s.name == name then
      local rec = copy_record(s, source.id)
      rec.approved_by = approvers_of(s) or "?"
      return rec
    end
  end
end

-- --from/--only: the stages a selection needs but does not run take their outputs from the
-- newest successful run of the same pipeline and tag. -> reuse table, or exit 2 naming what
-- is missing.
function runner.reuse_for(store, p, selected, facts, flag)
  local needed = {}
  for _, st in ipairs(p.stages) do
    if selected[st.name] then
      for _, a in ipairs((Run.ancestors(p, st.name))) do
        if not selected[a] then needed[a] = true end
      end
    end
  end
  if next(needed) == nil then return nil end
  local reuse, source, plain = {}, nil, {}
  for _, st in ipairs(p.stages) do -- gates first: that refusal matters most
    if needed[st.name] and st.gate then reuse[st.name] = reuse_gate(store, p, facts, st.name, flag) end
    if needed[st.name] and not st.gate then plain[st.name] = true end
  end
  for _, st in ipairs(p.stages) do
    if needed[st.name] and not st.gate then
      source = source or store:latest_success(p.name, facts.tag, nil, plain)
      if not source then
        errors.exit(2, "%s skips '%s', which a selected stage needs, and no earlier successful run of '%s'%s ran it to take its outputs from: run the whole pipeline once first",
          flag, st.name, p.name, facts.tag and (" at tag " .. facts.tag) or "")
      end
      for _, s in ipairs(source.stages) do
        if s.name == st.name then reuse[st.name] = copy_record(s, source.id) end
      end
      if not reuse[st.name] then
        errors.exit(2, "%s skips '%s', and the run it takes outputs from (%s) has no such stage", flag, st.name, source.id)
      end
    end
  end
  return reuse
end

-- ---- showing a run ----

local function summary(run)
  local lines = { "", ("run %s: %s"):format(run.id, run.status) }
  for _, name in ipairs(run.order) do
    local r = run.records[name]
    local extra = r.duration and time.duration(r.duration) or ""
    if r.reused_from then extra = "reused from run " .. r.reused_from .. (r.approved_by and (", approved by " .. r.approved_by) or "") end
    if (r.status == "skipped" or r.status == "cancelled") and r.reason then extra = r.reason end
    if r.status == "failure" and r.error then extra = extra .. "  " .. r.error end
    lines[#lines + 1] = ("  %s %-28s %-9s %s"):format(require("stagehost.util.status").terminal[r.status] or "?", name, r.status, extra)
  end
  return table.concat(lines, "\n")
end
runner.summary = summary

-- --sandbox: the emulator of CloudFormation, STS, Amplify and GitHub on loopback, with every
-- client of this host pointed at it. Its world is kept in STATE_DIR/sandbox (world.lua,
-- requests.jsonl): a resumed run finds its stack operation, the next run what the last deployed.
-- STAGEHOST_SANDBOX_STEP sets the simulated seconds per step (default 0.2),
-- STAGEHOST_SANDBOX_FAULTS queues faults (a JSON list, see sandbox/init.lua).
local function start_sandbox(state_dir)
  local sb = require("stagehost.sandbox").start{ persist = state_dir and (state_dir .. "/sandbox"),
    amplify_auto_create = true, step_seconds = tonumber(os.getenv("STAGEHOST_SANDBOX_STEP")),
    faults = os.getenv("STAGEHOST_SANDBOX_FAULTS") }
  local restore = sb:use()
  return function()
    restore()
    sb:close()
  end, sb.url
end

-- The first SIGINT/SIGTERM cancels the runs of this host (their cleanup stages still run and
-- their records are written); a second one ends the host at once, leaving them resumable.
local function on_signal(name)
  for run in pairs(Run.active) do run:cancel(("interrupted (%s)"):format(name)) end
end

-- What a detached run's host says as it leaves: the gates it waits on and how it goes on.
local function continue_text(run)
  local state = run.opts.state_dir
  local where = ""
  if state and state ~= ".stagehost" and state ~= os.getenv("STAGEHOST_STATE_DIR") then where = " --state " .. state end
  local lines = { ("run %s: waiting for approval; this host leaves, nothing keeps running"):format(run.id) }
  for _, d in ipairs(run.detaching or {}) do
    lines[#lines + 1] = ("  gate %s: '%s', until %s"):format(d.gate, d.title,
      time.human(os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(d.deadline))))
  end
  lines[#lines + 1] = ("  vote:      stagehost approve %s%s   (to reject: --reject --comment WHY)"):format(run.id, where)
  lines[#lines + 1] = ("  continue:  stagehost resume %s%s once the gate has decided, or 'stagehost approve %s --resume%s'"):format(
    run.id, where, run.id, where)
  lines[#lines + 1] = "             (votes, then continues here); 'stagehost serve' continues it by itself when the gate decides"
  return table.concat(lines, "\n")
end

-- launch(p, store, opts, how) -> exit code, or raises an exit error. opts go to Run.new;
-- how.resuming names the run being resumed.
local function launch(p, store, opts, how)
  log.echo_output(not in_actions())
  local show_live = log.isatty() and not in_actions()
  local stop_view, stop_sandbox, sandbox_url
  if opts.sandbox then stop_sandbox, sandbox_url = start_sandbox(opts.state_dir) end
  require("stagehost.core.host").on_signal(on_signal)
  opts.store = store
  opts.on_start = function(run)
    print("run " .. run.id)
    if sandbox_url then
      log.info(("sandbox: AWS (CloudFormation, STS, Amplify) and GitHub are emulated at %s; nothing leaves this machine"):format(sandbox_url))
    end
    if how.resuming then
      log.info(("resuming run %s of '%s' (%s)"):format(run.id, p.name, p.file))
    else
      log.info(("pipeline '%s' (%s)%s%s%s"):format(p.name, p.file, run.tag and (", tag " .. run.tag) or "",
        run.env and (", env " .. run.env) or "",
        run.rerun_of and (", attempt %d (re-run of %s)"):format(run.attempt, run.rerun_of) or ""))
    end
    if show_live then stop_view = live.start(run) end
  end
  local run = Run.new(p, opts)
  local ok, err = pcall(run.execute, run)
  require("stagehost.core.host").on_signal(nil)
  if stop_view then stop_view() end
  if stop_sandbox then stop_sandbox() end
  pcall(store.close, store)
  if not ok and not run.host_error then error(err, 0) end
  if run.status == "waiting" then -- run --detach: suspended at a gate (exit 0, see README)
    if not stop_view then print(summary(run)) end
    print(continue_text(run))
    if run.write_failed then errors.exit(1, "run %s: %s", run.id, run.write_failed) end
    return 0
  end
  if stop_view then print(("run %s: %s"):format(run.id, run.status)) else print(summary(run)) end
  if run.host_error then
    -- the store may not hold the end (it was what failed): the run stays resumable
    errors.exit(1, "run %s failed: %s; when that is fixed, 'stagehost resume %s' continues it",
      run.id, run.host_error, run.id)
  end
  if run.write_failed then errors.exit(1, "run %s: %s", run.id, run.write_failed) end
  if run.status == "failure" then errors.exit(1, "run %s failed", run.id) end
  if run.status == "cancelled" then errors.exit(3, "run %s was cancelled: %s", run.id, run.cancelling or "a stage was cancelled") end
  return 0
end

-- ---- the commands ----

-- runner.run(p, o) with o = {tag, env, actor, vars, only, from, state, dry_run, sandbox, args}
function runner.run(p, o)
  local selected, err = engine.select(p, o.only, o.from)
  if not selected then errors.exit(2, "%s", err) end
  if o.auto_approve and not (o.sandbox or p.auto_approve) then
    errors.exit(2, "--auto-approve: pipeline '%s' takes it only with --sandbox (a pipeline that may approve itself says auto_approve = true, as a development one does); approve with 'stagehost approve RUN' instead", p.name)
  end
  if o.dry_run then
    print(engine.plan(p, selected))
    return 0
  end
  local facts = runner.origin(o.tag)
  local refusal = require("stagehost.pipeline").trigger_refusal(p, facts)
  if refusal then errors.exit(2, "%s", refusal) end
  local dir = runner.state_dir(o)
  local store = runner.open_store(dir)
  facts.commit = runner.commit(p)
  local reuse = runner.reuse_for(store, p, selected, facts, o.from and "--from" or "--only")
  return launch(p, store, {
    tag = facts.tag, env = o.env, actor = o.actor or require("stagehost.approval.identity").voter(nil),
    vars = o.vars or {}, selected = selected, state_dir = dir, cwd = fs.cwd(), args = o.args,
    sandbox = o.sandbox, auto_approve = o.auto_approve, commit = facts.commit, reuse = reuse,
    detach = o.detach,
  }, {})
end

-- The records of a stored run, as Run.new takes them.
local function records_of(row)
  local out = {}
  for _, s in ipairs(row.stages) do
    local rec = copy_record(s, s.reused_from)
    rec.artifacts = s.artifacts
    out[s.name] = rec
  end
  return out
end

local function pipeline_of(row, load)
  local path = (row.file:sub(1, 1) == "/" or not row.cwd) and row.file or (row.cwd .. "/" .. row.file)
  return load(path)
end

-- runner.resume(dir, id, load, parse_args): load(path) loads a pipeline, parse_args(args)
-- gives back the run options stored with the run.
function runner.resume(dir, id, load, parse_args)
  local store = runner.open_store(dir)
  local row = runner.need_run(store, id, { unseal = true })
  local claimed, holder = false, nil
  if row.status == "interrupted" or row.status == "waiting" then claimed, holder = store:claim(row.id) end
  if row.status == "running" or (holder and holder.status == "running") then
    errors.exit(2, "run %s is still running (host pid %s): one host runs a run at a time", row.id, tostring((holder or row).pid))
  end
  if not claimed then errors.exit(2, "run %s already ended (%s): nothing to resume", row.id, (holder or row).status) end
  local p = pipeline_of(row, load)
  local o = parse_args(row.args)
  local selected, err = engine.select(p, o.only, o.from)
  if not selected then errors.exit(2, "%s", err) end
  return launch(p, store, {
    id = row.id, tag = row.tag, env = row.env, actor = row.actor, vars = row.vars, selected = selected,
    state_dir = dir, previous = records_of(row), started_at = row.started_at, cwd = row.cwd, args = row.args,
    sandbox = o.sandbox, auto_approve = o.auto_approve, attempt = row.attempt, rerun_of = row.rerun_of, commit = row.commit,
    detach = o.detach,
  }, { resuming = true })
end

-- runner.rerun(dir, id, {failed = bool, from = STAGE}, load, parse_args): a new run, linked to
-- the old one (attempt 2, 3 …), reusing the outputs of the stages that succeeded in it.
function runner.rerun(dir, id, how, load, parse_args)
  local store = runner.open_store(dir)
  local row = runner.need_run(store, id, { unseal = true })
  if row.status == "running" then errors.exit(2, "run %s is still running: wait for it or cancel it first", row.id) end
  if row.status == "interrupted" then errors.exit(2, "run %s was interrupted: 'stagehost resume %s' continues it", row.id, row.id) end
  if row.status == "waiting" then errors.exit(2, "run %s waits for approval: 'stagehost resume %s' continues it once the gate decides", row.id, row.id) end
  local p = pipeline_of(row, load)
  local o = parse_args(row.args)
  local old = records_of(row)
  for name in pairs(old) do
    if not p.by_name[name] then old[name] = nil end -- the pipeline changed since
  end
  local selected, reuse = {}, {}
  local args, i = {}, 1
  while i <= #row.args do -- the old selection does not apply to the re-run
    local a = row.args[i]
    if a == "--only" or a == "--from" then i = i + 1
    elseif not (a:match("^%-%-only=") or a:match("^%-%-from=")) then args[#args + 1] = a end
    i = i + 1
  end
  if how.from then
    if not p.by_name[how.from] then errors.exit(2, "--from: '%s' is not a stage of '%s'", how.from, p.name) end
    selected = engine.select(p, nil, how.from)
    local needs = select(2, Run.ancestors(p, how.from))
    for _, st in ipairs(p.stages) do
      local r = old[st.name]
      if not selected[st.name] then
        if r and r.status == "success" then
          reuse[st.name] = copy_record(r, row.id)
        elseif needs[st.name] then
          errors.exit(2, "rerun --from %s: stage '%s', which it needs, did not succeed in run %s (%s): rerun --failed or the whole run",
            how.from, st.name, row.id, r and r.status or "missing")
        end
      end
    end
    args[#args + 1] = "--from"
    args[#args + 1] = how.from
  else
    for _, st in ipairs(p.stages) do
      local r = old[st.name]
      if how.failed and r and r.status == "success" then reuse[st.name] = copy_record(r, r.reused_from or row.id)
      else selected[st.name] = true end
    end
  end
  for name, rec in pairs(reuse) do
    if p.by_name[name].gate then rec.approved_by = approvers_of(rec) or "?" end
  end
  local attempt, root = store:next_attempt(row)
  return launch(p, store, {
    tag = row.tag, env = row.env, actor = require("stagehost.approval.identity").voter(nil) or row.actor,
    vars = row.vars, selected = selected, state_dir = dir, cwd = row.cwd, args = args, sandbox = o.sandbox,
    auto_approve = o.auto_approve, attempt = attempt, rerun_of = root, commit = row.commit, reuse = reuse,
  }, {})
end

function runner.need_run(store, id, opts)
  if not id then errors.exit(2, "give the run ID (see 'stagehost runs')") end
  local r = store:run(id, opts)
  if not r then errors.exit(2, "no run '%s' in %s (see 'stagehost runs')", id, store.path) end
  return r
end

-- A stored run as record.write takes it (for runs whose files must be written again).
function runner.stored_run(store, row)
  local run = { id = row.id, pipeline = row.pipeline, file = row.file, tag = row.tag, env = row.env,
    actor = row.actor, vars = row.vars, status = row.status, started_at = row.started_at,
    finished_at = row.finished_at, attempt = row.attempt, rerun_of = row.rerun_of, commit = row.commit,
    dir = store.dir .. "/runs/" .. row.id, order = {}, records = {} }
  for i, s in ipairs(row.stages) do
    run.order[i] = s.name
    run.records[s.name] = s
  end
  run.stages = run.records
  return run
end

-- runner.prune(dir, seconds) -> counts. Runs older than that go whole; expired artifacts of
-- the runs kept go too, and those runs' run.json and report.html are written again.
function runner.prune(dir, older_than)
  local store = runner.open_store(dir)
  local result = store:prune(older_than)
  for id in pairs(result.rewrite) do
    local row = store:run(id)
    if row then require("stagehost.pipeline.record").write(runner.stored_run(store, row)) end
  end
  store:close()
  return result
end

return runner
