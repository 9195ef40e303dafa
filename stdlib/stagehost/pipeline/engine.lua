-- The engine's front: which stages a run executes (selection), its plan, and execute(), which
-- hands the run to a Run (pipeline/run.lua: scheduling, verdicts, cancellation, the end of a
-- run) whose stages get a Ctx (pipeline/ctx.lua).
local Run = require("stagehost.pipeline.run")
local time = require("stagehost.util.time")

local M = {}

M.new_run_id = Run.new_id
M.order = Run.order

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

M.memory_store = Run.memory_store
M.fmt_duration = time.duration
M.actions_fold = Run.actions_fold

-- M.execute(p, opts) -> the ended run (see Run.new for opts). Kept for embedding and tests;
-- the command line goes through stagehost.pipeline.runner.
function M.execute(p, opts)
  return Run.new(p, opts):execute()
end

return M
