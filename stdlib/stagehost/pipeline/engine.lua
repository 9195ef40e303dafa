-- The engine: runs a pipeline's stages as tasks. A stage starts when every stage it needs has
-- finished and its `when` holds; stages whose needs are met run concurrently. Every transition
-- goes to the store before it is acted on, so a run that dies can be resumed.
local task = require "stagehost.task"
local log = require "stagehost.log"
local fs = require "stagehost.fs"
local json = require "stagehost.json"

local M = {}

-- Under GitHub Actions a finished stage's whole log is printed folded in a group, failures
-- become annotations, and children's output is not echoed live as well.
local in_actions = os.getenv("GITHUB_ACTIONS") == "true"

local function now_iso() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

function M.new_run_id()
  return os.date("!%Y%m%d-%H%M%S") .. ("-%04x"):format(math.random(0, 0xffff))
end

-- Stages in an order that respects needs, declaration order otherwise (Kahn's algorithm).
function M.order(p)
  local indegree, out = {}, {}
  for _, st in ipairs(p.stages) do indegree[st.name] = #st.needs end
  local placed = {}
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

-- Which stages this run executes: all, --only NAMES, or --from NAME and what follows it.
function M.select(p, only, from)
  local selected = {}
  if only and #only > 0 then
    for _, n in ipairs(only) do
      if not p.by_name[n] then return nil, ("--only: '%s' is not a stage of '%s'"):format(n, p.name) end
      selected[n] = true
    end
  elseif from then
    if not p.by_name[from] then return nil, ("--from: '%s' is not a stage of '%s'"):format(from, p.name) end
    local function mark(name)
      if selected[name] then return end
      selected[name] = true
      for _, d in ipairs(p.by_name[name].dependents) do mark(d) end
    end
    mark(from)
  else
    for _, st in ipairs(p.stages) do selected[st.name] = true end
  end
  return selected
end

local function describe_when(st)
  if st.when == "decision" then return "when " .. (st.decision_name or "decision") end
  if st.when == "success" then return nil end
  return "when " .. st.when
end

-- The plan of a dry run: what would run, in order, and nothing executed.
function M.plan(p, selected)
  local lines = { ("plan for pipeline '%s' (%s) — dry run, nothing is executed:"):format(p.name, p.file) }
  for i, st in ipairs(M.order(p)) do
    local bits = {}
    if #st.needs > 0 then bits[#bits + 1] = "needs " .. table.concat(st.needs, ", ") end
    bits[#bits + 1] = describe_when(st)
    if st.timeout then bits[#bits + 1] = "timeout " .. st.timeout_text end
    if st.retry > 0 then bits[#bits + 1] = ("retry %d"):format(st.retry) end
    if st.continue_on_error then bits[#bits + 1] = "continue on error" end
    lines[#lines + 1] = ("%2d. %-28s runs %-28s %s%s"):format(i, st.name, st.run_name or "(function)",
      table.concat(bits, "; "), selected[st.name] and "" or "  [not selected]")
  end
  return table.concat(lines, "\n")
end

-- A store that keeps nothing: for when no state directory can be used.
local function memory_store()
  local checkpoints = {}
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
  }
end
M.memory_store = memory_store

local function fmt_duration(s)
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, (s % 3600) // 60)
end
M.fmt_duration = fmt_duration

local function first_line(s)
  s = tostring(s)
  return s:match("^[^\n]*")
end

local SYMBOL = { success = "✓", failure = "✗", cancelled = "■", skipped = "○" }

-- GitHub Actions: the stage's log in a fold, and an error annotation when it failed.
function M.actions_fold(run, rec)
  local text = run.dir and fs.read(run.dir .. "/logs/" .. rec.name .. ".log") or ""
  io.stdout:write(("::group::%s %s — %s%s\n"):format(SYMBOL[rec.status] or "", rec.name, rec.status,
    rec.duration and (" in " .. fmt_duration(rec.duration)) or ""))
  io.stdout:write(log.masked(text))
  io.stdout:write("::endgroup::\n")
  if rec.status == "failure" and not rec.allowed_failure then
    -- annotation text: one line, with %, CR and LF escaped as the runner expects
    local msg = log.masked(tostring(rec.error or "failed")):gsub("%%", "%%25"):gsub("\r", "%%0D"):gsub("\n", "%%0A")
    io.stdout:write(("::error title=stage %s failed::%s\n"):format(rec.name, msg))
  end
  io.stdout:flush()
end

-- M.execute(p, opts) -> run record. opts: id, tag, env, actor, vars, selected (set), state_dir,
-- store, previous (records of a run being resumed), on_change (called after each transition).
function M.execute(p, opts)
  local store = opts.store or memory_store()
  local run = {
    id = opts.id or M.new_run_id(), pipeline = p.name, file = p.file, tag = opts.tag, env = opts.env,
    actor = opts.actor, vars = opts.vars or {}, status = "running",
    started_at = opts.started_at or now_iso(), cwd = opts.cwd, args = opts.args, sandbox = opts.sandbox,
  }
  if opts.state_dir then run.dir = opts.state_dir .. "/runs/" .. run.id end
  local records, order = {}, M.order(p)
  for _, st in ipairs(p.stages) do
    local prev = opts.previous and opts.previous[st.name]
    if prev and (prev.status == "success" or prev.status == "skipped" or (prev.status == "failure" and prev.allowed_failure)) then
      records[st.name] = prev -- finished before the host died: kept, not run again
      prev.resumed = true
    else
      records[st.name] = { name = st.name, status = "pending", attempts = 0, outputs = {}, artifacts = {} }
    end
    if not opts.selected[st.name] and records[st.name].status == "pending" then
      records[st.name].status = "skipped"
      records[st.name].reason = "not selected"
      records[st.name].not_selected = true
    end
  end
  run.stages = records
  run.order = {}
  for i, st in ipairs(order) do run.order[i] = st.name end
  if run.dir then
    assert(fs.mkdir(run.dir .. "/logs"))
    assert(fs.mkdir(run.dir .. "/artifacts"))
  end
  local function changed(rec)
    if rec then store:save_stage(run, rec) end
    store:save_run(run)
    if opts.on_change then opts.on_change(run, rec) end
  end
  store:save_run(run)
  for _, st in ipairs(order) do store:save_stage(run, records[st.name]) end
  -- only now is there something to resume: announce the id
  if opts.on_start then opts.on_start(run) end

  local outputs = setmetatable({}, {
    __index = function(_, name) local r = records[name] return r and r.outputs end,
    __newindex = function() error("ctx.outputs is read-only: return a table from the stage instead", 2) end,
  })
  local function run_view()
    local stages = {}
    for name, r in pairs(records) do stages[name] = { status = r.status, outputs = r.outputs } end
    return { id = run.id, tag = run.tag, env = run.env, vars = run.vars, pipeline = p.name, stages = stages }
  end

  local function need_ok(n)
    local r = records[n]
    return r.status == "success" or r.allowed_failure or r.not_selected
  end
  local function need_failed(n)
    local r = records[n]
    return (r.status == "failure" and not r.allowed_failure) or r.status == "cancelled"
  end
  local function finished(r) return r.status ~= "pending" and r.status ~= "running" end

  local tasks = {}
  local run_stage

  -- Decide whether a stage whose needs are all finished runs; nil and a reason when skipped.
  local function decide(st)
    if st.when == "always" then return true end
    if st.when == "success" then
      for _, n in ipairs(st.needs) do
        if not need_ok(n) then return nil, ("'%s' did not succeed"):format(n) end
      end
      return true
    end
    if st.when == "failure" then
      for _, n in ipairs(st.needs) do if need_failed(n) then return true end end
      return nil, "nothing it needs failed"
    end
    local fn = st.decision
    if not fn then
      local ok, f = pcall(st.decision_chunk)
      if not ok or type(f) ~= "function" then
        return false, ("decision %s must return function(run) -> boolean%s"):format(st.decision_name,
          ok and "" or (": " .. first_line(f)))
      end
      fn = f
    end
    local ok, verdict = pcall(fn, run_view())
    if not ok then return false, ("decision %s failed: %s"):format(st.decision_name, first_line(verdict)) end
    if verdict then return true end
    return nil, ("decision %s said no"):format(st.decision_name)
  end

  local settle
  local function maybe_start(st)
    local rec = records[st.name]
    if rec.status ~= "pending" then return end
    for _, n in ipairs(st.needs) do if not finished(records[n]) then return end end
    if run.cancelling then -- a cancelled run starts nothing new
      rec.status, rec.reason = "cancelled", run.cancelling
      changed(rec)
      settle(st)
      return
    end
    local go, reason = decide(st)
    if go then
      rec.status = "running"
      changed(rec) -- written before the stage acts
      tasks[#tasks + 1] = task.spawn(run_stage, st)
    elseif go == false then -- the decision itself broke: that is a failure of this stage
      rec.status, rec.error, rec.finished_at = "failure", reason, now_iso()
      log.error(("✗ %s: %s"):format(st.name, reason))
      changed(rec)
      settle(st)
    else
      rec.status, rec.reason = "skipped", reason
      changed(rec)
      -- said in the skipped stage's own log and prefix, not the stage that finished just now
      tasks[#tasks + 1] = task.spawn(function()
        log.bind(st.name, run.dir and (run.dir .. "/logs/" .. st.name .. ".log"))
        log.info(("○ skipped: %s"):format(reason))
      end)
      settle(st)
    end
  end
  function settle(st)
    for _, d in ipairs(st.dependents) do maybe_start(p.by_name[d]) end
  end

  local function traceback_of(e)
    if type(e) == "table" then return e end -- a cancellation or timeout object: keep its kind
    -- the stage's frames only: the engine's own are noise to whoever reads the stage log
    return (debug.traceback(tostring(e), 2):gsub("\n\t%[C%]: in function 'xpcall'.*$", ""))
  end

  function run_stage(st)
    local rec = records[st.name]
    rec.log_context = log.bind(st.name, run.dir and (run.dir .. "/logs/" .. st.name .. ".log"))
    rec.started_at = now_iso()
    local t0 = task.now()
    rec.t0 = t0
    log.info("▶ started" .. (rec.resumed_attempt and " again (resumed)" or ""))
    local ctx = {
      stage = st.name,
      run = { id = run.id, tag = run.tag, env = run.env, actor = run.actor, pipeline = p.name, sandbox = run.sandbox },
      vars = run.vars, outputs = outputs, log = log,
      pipeline = { name = p.name, file = p.file, dir = p.dir },
      dir = run.dir, -- this run's directory (logs, artifacts)
    }
    function ctx:artifact(name, content, aopts)
      if type(name) ~= "string" or name == "" or name:find("/") or name:find("^%.") then
        error("ctx:artifact: name must be a file name without '/' (got " .. tostring(name) .. ")", 2)
      end
      if type(content) ~= "string" then content = json.encode(content, { pretty = true }) end
      content = log.masked(content) -- an artifact is output too: no secret in it
      local path = (run.dir or ".") .. "/artifacts/" .. st.name .. "--" .. name
      assert(fs.write(path, content))
      local entry = { name = name, stage = st.name, path = path, size = #content,
        sha256 = require("stagehost.crypto").sha256(content), created_at = now_iso(),
        retention_days = aopts and aopts.retention_days or 30 }
      rec.artifacts[#rec.artifacts + 1] = entry
      store:artifact(run, entry)
      return path
    end
    -- End the whole run as cancelled (exit 3), e.g. when an approval is rejected.
    function ctx:cancel(reason)
      error(setmetatable({ kind = "cancelled", reason = tostring(reason or "cancelled") },
        { __tostring = function(e) return e.reason end }), 0)
    end
    function ctx:checkpoint(key, value)
      if type(key) ~= "string" then error("ctx:checkpoint: key must be a string", 2) end
      if value ~= nil then return store:checkpoint(run.id, st.name, key, value, true) end
      return store:checkpoint(run.id, st.name, key)
    end
    local fn = st.run
    if not fn then
      local ok, f = pcall(st.run_chunk)
      if ok and type(f) == "function" then fn = f
      else fn = function() error(("%s must return function(ctx) (it returned %s)"):format(st.run_name,
        ok and type(f) or first_line(f)), 0) end end
    end
    local attempts = st.retry + 1
    local ok, result
    for attempt = 1, attempts do
      rec.attempts = attempt
      if st.timeout then
        local first, second
        ok, first, second = xpcall(task.timeout, traceback_of, st.timeout, fn, ctx)
        if not ok then result = first -- the error
        elseif first then result = second -- in time: the stage's outputs
        else ok, result = false, ("timed out after %s"):format(st.timeout_text) end
      else
        ok, result = xpcall(fn, traceback_of, ctx)
      end
      if ok then break end
      local cancelled = type(result) == "table" and result.kind == "cancelled"
      if cancelled or attempt == attempts then break end
      log.warn(("attempt %d of %d failed: %s — retrying"):format(attempt, attempts, first_line(result)))
    end
    local leftovers = require("stagehost.core.proc").stop_leftovers()
    if leftovers > 0 then log.warn(("stopped %d process(es) the stage left running"):format(leftovers)) end
    rec.finished_at = now_iso()
    rec.duration = task.now() - t0
    if ok then
      if result ~= nil and type(result) ~= "table" then
        rec.status, rec.error = "failure", ("the stage returned a %s; return a table of outputs (or nothing)"):format(type(result))
      else
        rec.status, rec.outputs = "success", result or {}
      end
    elseif type(result) == "table" and result.kind == "cancelled" then
      rec.status, rec.error = "cancelled", tostring(result)
      if not run.cancelling then run.cancelling = "cancelled by stage '" .. st.name .. "': " .. rec.error end
    else
      rec.status, rec.error = "failure", first_line(result)
      if type(result) == "string" and result:find("\n") then log.error(result) end
    end
    if rec.status == "failure" and st.continue_on_error then rec.allowed_failure = true end
    if rec.status == "success" then
      log.info(("✓ succeeded in %s"):format(fmt_duration(rec.duration)))
    elseif rec.status == "cancelled" then
      log.warn(("■ cancelled after %s: %s"):format(fmt_duration(rec.duration), rec.error))
    else
      log.error(("✗ failed after %s: %s%s"):format(fmt_duration(rec.duration), rec.error,
        rec.allowed_failure and " (continue_on_error: the run goes on)" or ""))
    end
    -- the record and what follows are written by a fresh task: a cancelled stage task cannot
    -- wait on anything any more, not even the file write of the run record
    tasks[#tasks + 1] = task.spawn(function()
      changed(rec)
      if in_actions then M.actions_fold(run, rec) end
      settle(st)
    end)
  end

  -- `stagehost cancel ID` from another terminal: the store says so; stop what runs
  local function cancel_stages(reason)
    if run.cancelling then return end
    run.cancelling = reason
    log.warn(("run %s: %s; stopping its stages"):format(run.id, reason))
    for _, t in ipairs(tasks) do t:cancel(reason) end
  end
  local watcher
  if store.cancel_requested then
    watcher = task.spawn(function()
      while true do
        task.sleep(opts.cancel_poll or 0.25)
        if store:cancel_requested(run.id) then cancel_stages("cancelled by 'stagehost cancel'") end
      end
    end)
  end

  -- stages that can start now (no needs, or needs finished in an earlier run)
  for _, st in ipairs(order) do maybe_start(st) end
  local joined, jerr = pcall(function()
    local i = 1
    while i <= #tasks do -- the list grows as finishing stages start their dependents
      tasks[i]:join()
      i = i + 1
    end
  end)
  if watcher then watcher:cancel("run finished") end
  if not joined then -- the host itself is being stopped (SIGINT, SIGTERM): record that, then go
    cancel_stages(tostring(jerr))
    run.status, run.finished_at = "cancelled", now_iso()
    changed(nil)
    error(jerr, 0)
  end

  local status = "success"
  for _, st in ipairs(order) do
    local r = records[st.name]
    if r.status == "cancelled" then status = "cancelled" end
    if r.status == "failure" and not r.allowed_failure and status ~= "cancelled" then status = "failure" end
  end
  run.status, run.finished_at = status, now_iso()
  changed(nil)
  return run
end

return M
