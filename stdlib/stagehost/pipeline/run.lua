-- A Run: one execution of a pipeline. Stages are tasks; a stage starts when every stage it
-- needs is finished and its verdict is "run". Every transition goes to the store before it is
-- acted on, so a run that dies can be resumed. A cancelled run (ctx:cancel, `stagehost cancel`,
-- the first SIGINT/SIGTERM) still runs its `when = "always"` and `when = "cancelled"` stages,
-- within the pipeline's cleanup_timeout. However a run ends, Run:finish makes every stage
-- terminal, derives the run's status from them and writes run.json and the reports: that is
-- the one place where a run ends.
local task = require("stagehost.task")
local log = require("stagehost.log")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local errors = require("stagehost.errors")
local time = require("stagehost.util.time")
local Ctx = require("stagehost.pipeline.ctx")

local Run = {}
Run.__index = Run
Run.__name = "stagehost.run"

local TERMINAL = { success = true, failure = true, skipped = true, cancelled = true }
Run.TERMINAL = TERMINAL

local SYMBOL = require("stagehost.util.status").symbol
Run.SYMBOL = SYMBOL

local function in_actions() return os.getenv("GITHUB_ACTIONS") == "true" end

-- Runs executing in this host, for the signal handler: the first SIGINT/SIGTERM cancels them
-- (their cleanup stages still run), a second one ends the host at once.
Run.active = setmetatable({}, { __mode = "k" })

-- The stage each stage task runs ({run =, stage =, ctx =}), for modules called from inside a
-- stage without its ctx (approval.request). Run.current() -> that, or nil outside a stage's task.
-- A task the stage spawned (task.all, task.spawn) shares the stage's log context, which names
-- the stage too while it runs.
local stage_of_task = setmetatable({}, { __mode = "k" })
local stage_of_log = {}
function Run.current()
  local here = stage_of_task[task.current()]
  if here then return here end
  local id = log.context_id()
  return id and stage_of_log[id] or nil
end

-- The time it started and 16 random bits (from the CSPRNG: math.random's seed can repeat
-- between hosts started at once).
function Run.new_id()
  local r = require("stagehost.crypto").random(2)
  return os.date("!%Y%m%d-%H%M%S") .. ("-%02x%02x"):format(r:byte(1, 2))
end

-- Stages in an order that respects needs, declaration order otherwise (Kahn's algorithm).
function Run.order(p)
  local indegree, out, placed = {}, {}, {}
  for _, st in ipairs(p.stages) do indegree[st.name] = #st.needs end
  while #out < #p.stages do
    for _, st in ipairs(p.stages) do
      if not placed[st.name] and indegree[st.name] == 0 then
        placed[st.name] = true
        out[#out + 1] = st
        for _, d in ipairs(st.dependents) do indegree[d] = indegree[d] - 1 end
        break
      end
    end
  end
  return out
end

-- Every stage that `name` needs, directly or through others.
function Run.ancestors(p, name)
  local seen, out = {}, {}
  local function visit(n)
    for _, need in ipairs(p.by_name[n].needs) do
      if not seen[need] then
        seen[need] = true
        out[#out + 1] = need
        visit(need)
      end
    end
  end
  visit(name)
  return out, seen
end

-- A stage's outputs must survive the store and a resume: plain data only. Returns nil, or the
-- path of the first value that cannot be stored and why.
function Run.unstorable(value, path, seen)
  path, seen = path or "outputs", seen or {}
  local kind = type(value)
  if kind == "nil" or kind == "boolean" or kind == "string" or value == json.null then return nil end
  if kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      return ("%s: %s cannot be stored (not a finite number)"):format(path, tostring(value))
    end
    return nil
  end
  if kind ~= "table" then return ("%s: a %s cannot be stored"):format(path, kind) end
  if seen[value] then return ("%s: a cycle cannot be stored (this table contains itself)"):format(path) end
  seen[value] = true
  for k, v in pairs(value) do
    local child
    if type(k) == "string" then
      child = k:match("^[%a_][%w_]*$") and (path .. "." .. k) or ("%s[%q]"):format(path, k)
    elseif math.type(k) == "integer" then
      child = ("%s[%d]"):format(path, k)
    else
      return ("%s: a key of type %s cannot be stored (keys are strings or list positions)"):format(path, type(k))
    end
    local bad = Run.unstorable(v, child, seen)
    if bad then return bad end
  end
  seen[value] = nil
  return nil
end

-- Outputs are kept in memory, in the state database and in every later stage's view: large
-- data belongs in an artifact. Returns nil, or why the outputs are refused.
Run.MAX_OUTPUTS = 1024 * 1024
function Run.too_large(value)
  if value == nil then return nil end
  local size = #json.encode(value)
  if size <= Run.MAX_OUTPUTS then return nil end
  return ("outputs: %.1f MiB is more than the 1 MiB a stage's outputs may hold; keep large data in an artifact (ctx:artifact)")
    :format(size / 1048576)
end

-- The run's status as its stages make it. cancelling: the run was cancelled as a whole.
function Run.status_of(records, order, cancelling, host_error)
  if host_error then return "failure" end
  if cancelling then return "cancelled" end
  local status = "success"
  for _, name in ipairs(order) do
    local r = records[name]
    if r.status == "failure" and not r.allowed_failure then return "failure" end
    if r.status == "cancelled" then status = "cancelled" end
  end
  return status
end

-- The invariant of an ended run, checked in one place: every stage terminal, the status the
-- one its stages make. Returns nil, or what is wrong.
function Run.check_ended(run)
  for _, name in ipairs(run.order) do
    local r = run.records[name]
    if not TERMINAL[r.status] then return ("stage '%s' is still %s in an ended run"):format(name, r.status) end
  end
  local want = Run.status_of(run.records, run.order, run.cancelling, run.host_error)
  if run.status ~= want then return ("the run says %s but its stages make it %s"):format(run.status, want) end
  return nil
end

local function fresh_record(name)
  return { name = name, status = "pending", attempts = 0, outputs = {}, artifacts = {} }
end

-- Run.new(p, opts) -> run. opts: id, tag, env, actor, vars, selected (set of names), state_dir,
-- store, previous (records of the run being resumed), reuse (records taken from earlier runs,
-- for --from/--only/rerun), started_at, cwd, args, sandbox, attempt, rerun_of, commit,
-- cancel_poll, on_start(run), on_change(run, rec).
function Run.new(p, opts)
  local self = setmetatable({
    id = opts.id or Run.new_id(), pipeline = p.name, file = p.file, tag = opts.tag, env = opts.env,
    actor = opts.actor, vars = opts.vars or {}, status = "running", started_at = opts.started_at or time.now_iso(),
    cwd = opts.cwd, args = opts.args, sandbox = opts.sandbox, auto_approve = opts.auto_approve, attempt = opts.attempt or 1,
    rerun_of = opts.rerun_of, commit = opts.commit,
    p = p, opts = opts, store = opts.store or Run.memory_store(),
    records = {}, order = {}, live = {}, tasks = {}, running = {},
  }, Run)
  if opts.state_dir then self.dir = opts.state_dir .. "/runs/" .. self.id end
  for i, st in ipairs(Run.order(p)) do self.order[i] = st.name end
  local selected = opts.selected or {}
  for _, st in ipairs(p.stages) do
    local prev = opts.previous and opts.previous[st.name]
    local reused = opts.reuse and opts.reuse[st.name]
    local rec
    if prev and (prev.status == "success" or prev.status == "skipped" or (prev.status == "failure" and prev.allowed_failure)) then
      rec = prev -- finished before the host died: kept, not run again
      self.live[st.name] = { resumed = true }
    elseif reused then
      rec = reused
    else
      rec = fresh_record(st.name)
      if prev then -- what the interrupted attempt stored stays listed
        rec.artifacts = prev.artifacts or {}
        self.live[st.name] = { resumed_attempt = prev.status == "running" or prev.status == "waiting" }
      end
      if not selected[st.name] then
        rec.status, rec.reason, rec.not_selected = "skipped", "not selected", true
      end
    end
    rec.artifacts = rec.artifacts or {}
    self.records[st.name] = rec
  end
  -- kept for callers that read run.stages[name] (reports, tests)
  self.stages = self.records
  return self
end

-- A store that keeps nothing: for runs with no state directory (tests, embedded use).
function Run.memory_store()
  local checkpoints, locks = {}, {}
  return {
    save_run = function() end,
    save_stage = function() end,
    event = function() end,
    checkpoint = function(_, run_id, stage, key, value, set)
      local k = run_id .. "\0" .. stage .. "\0" .. key
      if set then checkpoints[k] = value end
      return checkpoints[k]
    end,
    artifact = function() end,
    lock = function(_, group, run_id)
      if locks[group] and locks[group] ~= run_id then return false, { run_id = locks[group] } end
      locks[group] = run_id
      return true
    end,
    unlock = function(_, group, run_id)
      if locks[group] == run_id then locks[group] = nil end
    end,
  }
end

local function traceback_of(e)
  if type(e) == "table" then return e end -- a cancellation or timeout object: keep its kind
  if tostring(e):find("\nstack traceback:\n", 1, true) then return e end -- traced where it was raised
  -- the stage's frames only: the engine's own are noise to whoever reads the stage log
  return (debug.traceback(tostring(e), 2):gsub("\n\t%[C%]: in function 'xpcall'.*$", ""))
end

-- ---- state changes ----

function Run:changed(rec)
  if rec then self.store:save_stage(self, rec) end
  self.store:save_run(self)
  if self.opts.on_change then self.opts.on_change(self, rec) end
end

-- A stage that makes an artifact again (a retry, a resumed stage) replaces it: one entry a name.
function Run:add_artifact(stage, entry)
  local list = self.records[stage].artifacts
  local at = #list + 1
  for i, a in ipairs(list) do if a.name == entry.name then at = i end end
  list[at] = entry
  self.store:artifact(self, entry)
end

function Run:set_waiting(stage, text)
  self.live[stage] = self.live[stage] or {}
  self.live[stage].waiting = text
end

-- What decisions and `ctx.stages` see of the run.
function Run:view()
  local stages = {}
  for name, r in pairs(self.records) do stages[name] = Ctx.stage_view(r) end
  return { id = self.id, tag = self.tag, env = self.env, vars = self.vars, actor = self.actor,
    pipeline = self.p.name, attempt = self.attempt, cancelled = self.cancelling ~= nil, stages = stages }
end

-- ---- verdicts ----

local function need_ok(r)
  return r.status == "success" or r.allowed_failure or r.not_selected
end

-- Did anything before this stage fail (as GitHub Actions' failure(): any ancestor)?
function Run:upstream_failed(st)
  for _, name in ipairs((Run.ancestors(self.p, st.name))) do
    local r = self.records[name]
    if r.status == "failure" and not r.allowed_failure then return name end
  end
  return nil
end

-- Run:verdict(st) -> "run" | "skip" | "fail" | "cancel", reason. Called once every need of the
-- stage has finished.
function Run:verdict(st)
  if self.cancelling then
    if st.when ~= "always" and st.when ~= "cancelled" then return "cancel", self.cancelling end
    if self.cleanup_expired then return "cancel", self.cleanup_expired end
    return "run"
  end
  if st.when == "always" then return "run" end
  if st.when == "cancelled" then return "skip", "the run was not cancelled" end
  if st.when == "success" then
    for _, n in ipairs(st.needs) do
      if not need_ok(self.records[n]) then return "skip", ("'%s' did not succeed"):format(n) end
    end
    return "run"
  end
  if st.when == "failure" then
    local failed = self:upstream_failed(st)
    if failed then return "run" end
    return "skip", "nothing before it failed"
  end
  local fn = st.decision
  if not fn then
    local ok, f = pcall(st.decision_chunk)
    if not ok or type(f) ~= "function" then
      return "fail", ("decision %s must return function(run) -> boolean%s"):format(st.decision_name,
        ok and "" or (": " .. errors.first_line(f)))
    end
    fn = f
  end
  local ok, yes = pcall(fn, self:view())
  if not ok then return "fail", ("decision %s failed: %s"):format(st.decision_name, errors.first_line(yes)) end
  if yes then return "run" end
  return "skip", ("decision %s said no"):format(st.decision_name)
end

-- Every task of the run goes through here: an error that escapes one (a stage's own errors
-- are caught in run_stage) is the host's — the store failing — and ends the run at once.
function Run:spawn(fn, ...)
  local args = table.pack(...)
  local t = task.spawn(function()
    local ok, e = xpcall(fn, traceback_of, table.unpack(args, 1, args.n))
    if not ok and not errors.is_cancel(e) then self:abort(e) end
  end)
  self.tasks[#self.tasks + 1] = t
  return t
end

-- The host cannot go on with this run: stop every task of it; execute() then ends the run.
function Run:abort(e)
  if self.host_error then return end
  self.host_error, self.host_trace = errors.first_line(e), e
  log.error(("run %s: the host failed: %s"):format(self.id, self.host_error))
  log.debug(tostring(e))
  for _, t in ipairs(self.tasks) do
    if t ~= task.current() then t:cancel("the host failed: " .. self.host_error) end
  end
end

-- Say something in a stage's own log and prefix (not in the stage that finished just now).
function Run:say_in(name, level, message)
  self:spawn(function()
    log.bind(name, self.dir and (self.dir .. "/logs/" .. name .. ".log"))
    log[level](message)
  end)
end

function Run:maybe_start(st)
  local rec = self.records[st.name]
  if rec.status ~= "pending" or self.ended or self.host_error or self.detaching then return end
  for _, n in ipairs(st.needs) do
    if not TERMINAL[self.records[n].status] then return end
  end
  local verdict, reason = self:verdict(st)
  if verdict == "run" then
    rec.status = "running"
    self:changed(rec) -- written before the stage acts
    self.running[st.name] = self:spawn(self.run_stage, self, st)
    return
  end
  if verdict == "fail" then -- the decision itself broke: a failure of this stage
    rec.status, rec.error, rec.finished_at = "failure", reason, time.now_iso()
    self:say_in(st.name, "error", ("✗ %s"):format(reason))
  elseif verdict == "cancel" then
    rec.status, rec.reason = "cancelled", reason
  else
    rec.status, rec.reason = "skipped", reason
    self:say_in(st.name, "info", ("○ skipped: %s"):format(reason))
  end
  self:changed(rec)
  self:settle(st)
end

function Run:settle(st)
  for _, d in ipairs(st.dependents) do self:maybe_start(self.p.by_name[d]) end
end

-- ---- concurrency groups ----

local function group_name(self, spec)
  local group = spec.group
  if type(group) == "function" then
    local ok, g = pcall(group, self:view())
    if not ok or type(g) ~= "string" or g == "" then
      return nil, ("concurrency group function %s"):format(ok and ("returned " .. type(g) .. ", not a name")
        or ("failed: " .. errors.first_line(g)))
    end
    group = g
  end
  return group
end

-- Wait until this run holds the group's lock (or, with cancel_in_progress, make the holder
-- stop). The lock is a row in the state database; a dead holder's lock is taken over.
function Run:acquire(spec, stage)
  local group, err = group_name(self, spec)
  if not group then return nil, err end
  local said, asked
  while true do
    local ok, holder = self.store:lock(group, self.id, stage)
    if ok then
      if said then log.info(("concurrency group '%s' is free: going on"):format(group)) end
      return group
    end
    if spec.cancel_in_progress and not asked and holder.run_id ~= self.id then
      asked = true
      log.warn(("concurrency group '%s': cancelling run %s, which holds it (cancel_in_progress)"):format(group, holder.run_id))
      if self.store.request_cancel then self.store:request_cancel(holder.run_id) end
    end
    if not said then
      said = true
      log.info(("waiting: concurrency group '%s' is held by run %s%s"):format(group, holder.run_id,
        holder.stage and (" (stage " .. holder.stage .. ")") or ""))
    end
    if self.cancelling then return nil, self.cancelling end
    task.sleep(self.opts.lock_poll or 0.5)
  end
end

-- ---- a stage ----

local function stage_function(st)
  if st.run then return st.run end
  local ok, f = pcall(st.run_chunk)
  if ok and type(f) == "function" then return f end
  return function()
    error(("%s must return function(ctx) (it returned %s)"):format(st.run_name, ok and type(f) or errors.first_line(f)), 0)
  end
end

-- One call of the stage's function, under its timeout; -> ok, result (outputs or error).
local function attempt(st, fn, ctx)
  if not st.timeout then return xpcall(fn, traceback_of, ctx) end
  -- traced inside the timeout: out here the stage's frames are gone
  local function traced(c)
    local ok, r = xpcall(fn, traceback_of, c)
    if not ok then error(r, 0) end
    return r
  end
  local ok, first, second = xpcall(task.timeout, traceback_of, st.timeout, traced, ctx)
  if not ok then return false, first end
  if first then return true, second end
  return false, ("timed out after %s"):format(st.timeout_text)
end

function Run:run_stage(st)
  local rec = self.records[st.name]
  local live = self.live[st.name] or {}
  self.live[st.name] = live
  live.log = log.bind(st.name, self.dir and (self.dir .. "/logs/" .. st.name .. ".log"))
  rec.started_at = time.now_iso()
  live.t0 = task.now()
  log.info("▶ started" .. (live.resumed_attempt and " again (resumed)" or "")
    .. (self.cancelling and (" (cleanup after: " .. self.cancelling .. ")") or ""))
  local ok, result, group = true, nil, nil
  if st.concurrency then
    group, result = self:acquire(st.concurrency, st.name)
    ok = group ~= nil
  end
  if ok then
    local fn = stage_function(st)
    for n = 1, st.retry + 1 do
      rec.attempts = n
      local ctx = Ctx.new(self, st)
      stage_of_task[task.current()] = { run = self, stage = st.name, ctx = ctx }
      local log_id = log.context_id()
      if log_id then stage_of_log[log_id] = stage_of_task[task.current()] end
      ok, result = attempt(st, fn, ctx)
      if log_id then stage_of_log[log_id] = nil end
      if ok then
        if result ~= nil and type(result) ~= "table" then
          ok, result = false, ("the stage returned a %s; return a table of outputs (or nothing)"):format(type(result))
        else
          local bad = Run.unstorable(result) or Run.too_large(result)
          if bad then ok, result = false, bad end
        end
        break
      end
      if errors.is_cancel(result) or n == st.retry + 1 then break end
      log.warn(("attempt %d of %d failed: %s — retrying"):format(n, st.retry + 1, errors.first_line(result)))
    end
  end
  if group then self.store:unlock(group, self.id) end
  live.waiting = nil
  local leftovers = require("stagehost.core.proc").stop_leftovers()
  if leftovers > 0 then log.warn(("stopped %d process(es) the stage left running"):format(leftovers)) end
  rec.finished_at = time.now_iso()
  rec.duration = task.now() - live.t0
  if ok then
    rec.status, rec.outputs = "success", result or {}
  elseif errors.is_cancel(result) and result.origin == "detach" then
    -- run --detach: the gate is recorded; the stage runs again when the run is resumed
    rec.status, rec.reason, rec.finished_at, rec.duration = "waiting", tostring(result.reason), nil, nil
  elseif errors.is_cancel(result) then
    rec.status, rec.error = "cancelled", tostring(result.reason or result)
    -- ctx:cancel (the stage's own word) cancels the run; a cancel from outside came from it
    if result.origin == "stage" then
      self:cancel(("cancelled by stage '%s': %s"):format(st.name, rec.error))
    end
  else
    rec.status, rec.error = "failure", errors.first_line(result)
    if type(result) == "string" and result:find("\n") then log.error(result) end
  end
  if rec.status == "failure" and st.continue_on_error then rec.allowed_failure = true end
  if rec.status == "waiting" then
    log.info(("⏸ %s: the host leaves; the stage runs again when the run is resumed"):format(rec.reason))
  elseif rec.status == "success" then
    log.info(("✓ succeeded in %s"):format(time.duration(rec.duration)))
  elseif rec.status == "cancelled" then
    log.warn(("■ cancelled after %s: %s"):format(time.duration(rec.duration), rec.error))
  else
    log.error(("✗ failed after %s: %s%s"):format(time.duration(rec.duration), rec.error,
      rec.allowed_failure and " (continue_on_error: the run goes on)" or ""))
  end
  -- the record and what follows are written by a fresh task: a cancelled stage task cannot
  -- wait on anything any more, not even the file write of the run record
  self:spawn(function()
    -- no later stage starts while this one's processes live: a deploy that traps SIGTERM gets
    -- SIGKILL after its grace period, and only then does, say, its rollback begin (this task
    -- has the stage's log context, by which its processes are known)
    local core_proc, give_up = require("stagehost.core.proc"), task.now() + 120
    while core_proc.running_in_context() > 0 and task.now() < give_up do task.sleep(0.05) end
    if task.now() >= give_up then log.warn("processes of this stage did not go after SIGKILL; going on") end
    if self.store.remove_procs and not self.host_error then self.store:remove_procs(self.id, st.name) end
    self.running[st.name] = nil
    if self.ended or self.host_error then return end -- the host failed meanwhile: finish records it
    self:changed(rec)
    if in_actions() then Run.actions_fold(self, rec) end
    self:settle(st)
  end)
end

-- ---- process groups a dead host left ----

-- A stage's child processes are recorded in the state database while they live (each leads its
-- own group): a host killed with -9 cannot stop them, and a resume must not run the stage again
-- beside them.
local function record_process(event, pid)
  local cur = Run.current()
  local run = cur and cur.run
  if not run or not run.store.add_proc then return end
  if event == "start" then run.store:add_proc(run.id, cur.stage, pid)
  else run.store:remove_procs(run.id, cur.stage, pid) end
end

local observing = false

-- Live members of process group pgid (zombies are gone already, whoever reaps them).
local function group_members(pgid)
  local n = 0
  for _, name in ipairs(fs.list("/proc") or {}) do
    if name:match("^%d+$") then
      local stat, state, pgrp = fs.read("/proc/" .. name .. "/stat"), nil, nil
      if stat then state, pgrp = stat:match("%) (%a) %d+ (%d+)") end
      if state and state ~= "Z" and tonumber(pgrp) == pgid then n = n + 1 end
    end
  end
  return n
end

Run.LEFTOVER_GRACE = 5 -- seconds between SIGTERM and SIGKILL, as proc.run's default grace

-- Stop the process groups of this run that a dead host recorded, each only if its leader is
-- still the process recorded (same pid and start time: a pid may be reused): SIGTERM, the grace
-- period, SIGKILL; then forget them. Runs before any stage starts again.
function Run:stop_left_processes()
  if not self.store.left_procs then return end
  local rows = self.store:left_procs(self.id)
  if #rows == 0 then return end
  local proc, process = require("stagehost.proc"), require("stagehost.util.process")
  local groups, count, hosts = {}, 0, {}
  for _, r in ipairs(rows) do
    local n = process.alive(r.pgid, r.started) and group_members(r.pgid) or 0
    if n > 0 and proc.signal_group(r.pgid, "TERM") then
      groups[#groups + 1], count = r.pgid, count + n
      if not hosts[r.host_pid] then hosts[#hosts + 1], hosts[r.host_pid] = tostring(r.host_pid), true end
    end
  end
  local function left()
    local out = {}
    for _, g in ipairs(groups) do if group_members(g) > 0 then out[#out + 1] = g end end
    return out
  end
  local deadline = task.now() + Run.LEFTOVER_GRACE
  while #left() > 0 and task.now() < deadline do task.sleep(0.05) end
  for _, g in ipairs(left()) do proc.signal_group(g, "KILL") end
  deadline = task.now() + 5
  while #left() > 0 and task.now() < deadline do task.sleep(0.05) end
  for _, r in ipairs(rows) do self.store:remove_procs(self.id, r.stage, r.pgid) end
  if count > 0 then
    log.warn(("stopped %d process%s left by the dead host (pid %s)"):format(count, count == 1 and "" or "es",
      table.concat(hosts, ", ")))
  end
end

-- ---- cancelling ----

-- Cancel the run: running stages are stopped, pending ones are cancelled as they come up,
-- except `when = "always"` and `when = "cancelled"` stages, which run within cleanup_timeout.
function Run:cancel(reason)
  if self.cancelling then return end
  self.cancelling = reason
  log.warn(("run %s: %s; stopping its stages"):format(self.id, reason))
  for name, t in pairs(self.running) do
    local when = self.p.by_name[name].when
    if when ~= "always" and when ~= "cancelled" then -- cleanup that already runs goes on
      if t ~= task.current() then t:cancel(reason) end
      self.running[name] = nil
    end
  end
  local limit = self.p.cleanup_timeout or 300
  self.cleanup = task.spawn(function()
    task.sleep(limit)
    self.cleanup_expired = ("cleanup_timeout (%s) passed"):format(time.duration(limit))
    for _, t in pairs(self.running) do t:cancel(self.cleanup_expired) end
  end)
end

-- ---- the whole run ----

-- Run:execute() -> self, ended: every stage terminal, the status set, the record written.
-- Raises only when the host itself must stop (its error was recorded first).
function Run:execute()
  local opts = self.opts
  Run.active[self] = true
  if self.dir then
    assert(fs.mkdir(self.dir .. "/logs", { mode = 448 }))
    assert(fs.mkdir(self.dir .. "/artifacts", { mode = 448 }))
  end
  -- under GitHub Actions a stage's lines appear once: in its fold when it ends
  local console_before = in_actions() and log.context_console(false)
  local restore_env = require("stagehost.proc").default_env(self.p.env)
  if self.store.add_proc and not observing then
    observing = true -- for every run of this host: it finds the run by the stage's task
    require("stagehost.proc").observe(record_process)
  end
  -- the run's row and every stage's in one transaction: a host killed between them left a run
  -- whose reused stages (--from, --only) its resume recorded as "skipped: not selected"
  local function rows()
    self.store:save_run(self)
    for _, name in ipairs(self.order) do self.store:save_stage(self, self.records[name]) end
  end
  if self.store.transaction then self.store:transaction(rows) else rows() end
  if opts.on_change then opts.on_change(self, nil) end
  -- only now is there something to resume: announce the id
  if opts.on_start then opts.on_start(self) end
  if opts.previous then self:stop_left_processes() end
  -- the pipeline's channels for this run, and run.started; a run with none configured
  -- anywhere does not load the module
  if self.p.notify or package.loaded["stagehost.notify"] then require("stagehost.notify").run_started(self) end

  local watcher
  if self.store.cancel_requested then
    self.watching, self.nappers = true, {}
    watcher = task.spawn(function() self:watch() end)
  end

  local ok, err = xpcall(function()
    local group
    if self.p.concurrency then
      local gerr
      group, gerr = self:acquire(self.p.concurrency)
      if not group then self:cancel(gerr) end
    end
    for _, name in ipairs(self.order) do self:maybe_start(self.p.by_name[name]) end
    local i = 1
    while i <= #self.tasks do -- the list grows as finishing stages start their dependents
      self.tasks[i]:join()
      i = i + 1
    end
    if group and not self.host_error then self.store:unlock(group, self.id) end
  end, traceback_of)
  if not ok and not errors.is_cancel(err) then self:abort(err) end
  if watcher then watcher:cancel("run finished") end
  self.watching = false
  if self.cleanup then self.cleanup:cancel("run finished") end
  restore_env()
  if console_before ~= false then log.context_console(console_before) end
  if self.host_error then
    self:finish()
    error(self.host_trace, 0)
  end
  if ok and self.detaching and not self.cancelling then
    self:suspend()
    return self
  end
  if ok then
    self:finish()
    return self
  end
  -- this task itself was cancelled: stop the stages, record, go
  self:cancel(tostring(err.reason or err))
  task.spawn(function() self:finish() end)
  error(err, 0)
end

-- ---- watching the state database ----

-- The longest time between two looks at the state database while the run lives: a vote or
-- `stagehost cancel` from another process is seen within WATCH seconds where the directory
-- cannot be watched; where it can (inotify), at once, and the look every WATCHED seconds only
-- catches what the watch missed.
Run.WATCH = 1
Run.WATCHED = 2

-- Look at the state database when its directory changes (another process's commit writes
-- state.db-wal; stagehost.core.fswatch, no CPU meanwhile), and at least every Run.WATCH
-- (WATCHED) seconds. PRAGMA data_version changes only when another process has committed, so a look
-- costs one cached statement and no read of the run's rows. On a change the cancel flag is
-- read and every nap is cut short. A waiting host costs ~4 ms of CPU a minute
-- (bench/approval_wait.sh; polling every half second cost 20).
function Run:watch()
  local function version()
    local rows = self.store:query("PRAGMA data_version")
    return rows[1] and rows[1].data_version
  end
  local watcher
  if self.store.dir then
    local ok, fswatch = pcall(require, "stagehost.core.fswatch")
    watcher = ok and fswatch.open(self.store.dir) or nil
  end
  local ok, err = pcall(function()
    local seen = version()
    while true do
      if watcher then
        if task.timeout(self.opts.cancel_poll or Run.WATCHED, watcher.wait, watcher) then
          task.sleep(0.02) -- one look for a burst of writes (a transaction is several)
        end
      else
        task.sleep(self.opts.cancel_poll or Run.WATCH)
      end
      local now = version()
      if now ~= seen then
        seen = now
        if self.store:cancel_requested(self.id) then self:cancel("cancelled by 'stagehost cancel'") end
        for t in pairs(self.nappers) do t:cancel("the state database changed") end
      end
    end
  end)
  if watcher then watcher:close() end
  if not ok then error(err, 0) end
end

-- Run:nap(seconds) -> woken: sleep up to seconds, less when another process changes the state
-- database meanwhile (woken = true then). Without a state database it is task.sleep. The nap
-- is a task of its own, cut short by cancelling it: no wait is left behind, whatever happens.
function Run:nap(seconds)
  if not self.watching then
    task.sleep(seconds)
    return false
  end
  local t = task.spawn(task.sleep, seconds)
  self.nappers[t] = true
  local ok, done = pcall(t.join, t)
  self.nappers[t] = nil
  if not ok then
    t:cancel("the napper was cancelled")
    error(done, 0)
  end
  return not done
end

-- Wake every nap now (a vote recorded by this very host, which data_version does not show).
function Run:wake()
  for t in pairs(self.nappers or {}) do t:cancel("woken") end
end

-- ---- detaching ----

-- An approval gate of a `run --detach` has been recorded and must wait: no stage starts from
-- now on, the ones running finish, and the run is then suspended (status "waiting").
function Run:detach(stage, g)
  self.detaching = self.detaching or {}
  self.detaching[#self.detaching + 1] = { stage = stage, gate = g.id, title = g.title, deadline = g.deadline }
end

-- The run stops here without ending: its gate stages are "waiting", the stages not started
-- are pending, and the run's status "waiting" tells `resume`, `approve --resume` and
-- `stagehost serve` (approval.detach) that it goes on when its gate decides.
function Run:suspend()
  Run.active[self] = nil
  self.status = "waiting"
  self:record_all()
end

-- Write every stage and the run to the store first (resume and status read it), then the
-- files (run.json, the reports); a failure of one does not keep the others from being written.
function Run:record_all()
  local problems = {}
  local ok, err = pcall(function()
    for _, name in ipairs(self.order) do self.store:save_stage(self, self.records[name]) end
    self.store:save_run(self)
  end)
  if not ok then problems[#problems + 1] = "the state database: " .. errors.first_line(err) end
  ok, err = pcall(require("stagehost.pipeline.record").write, self)
  if not ok then problems[#problems + 1] = errors.first_line(err) end
  if #problems > 0 then
    self.write_failed = table.concat(problems, "; ")
    log.error(("run %s: not everything could be recorded: %s"):format(self.id, self.write_failed))
  end
  if self.opts.on_change then self.opts.on_change(self, nil) end
end

-- The one place where a run ends (see the top of this file).
function Run:finish()
  self.ended = true
  Run.active[self] = nil
  local now = time.now_iso()
  for _, name in ipairs(self.order) do
    local r = self.records[name]
    if not TERMINAL[r.status] then
      r.status = "cancelled"
      r.reason = r.reason or (self.host_error and ("the host failed: " .. self.host_error)) or self.cancelling
        or "the run ended before it could start"
      r.finished_at = r.finished_at or now
    end
  end
  self.status = Run.status_of(self.records, self.order, self.cancelling, self.host_error)
  self.finished_at = now
  local wrong = Run.check_ended(self)
  if wrong then error("stagehost bug: " .. wrong) end
  self:record_all()
end

-- GitHub Actions: the stage's log in a fold, and an error annotation when it failed.
function Run.actions_fold(run, rec)
  local text = run.dir and fs.read(run.dir .. "/logs/" .. rec.name .. ".log") or ""
  io.stdout:write(("::group::%s %s — %s%s\n"):format(SYMBOL[rec.status] or "", rec.name, rec.status,
    rec.duration and (" in " .. time.duration(rec.duration)) or ""))
  io.stdout:write(log.masked(text))
  io.stdout:write("::endgroup::\n")
  if rec.status == "failure" and not rec.allowed_failure then
    -- annotation text: one line, with %, CR and LF escaped as the runner expects
    local msg = log.masked(tostring(rec.error or "failed")):gsub("%%", "%%25"):gsub("\r", "%%0D"):gsub("\n", "%%0A")
    io.stdout:write(("::error title=stage %s failed::%s\n"):format(rec.name, msg))
  end
  io.stdout:flush()
end

return Run
