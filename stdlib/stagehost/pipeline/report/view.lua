-- The run as the reports see it: its stages in order (the run's, then the pipeline's), a record
-- for each (a stage that never ran is "pending"), how each is wired, its test cases, and where
-- each sits in time.
local time = require("stagehost.util.time")

local view = {}

-- The run's stages in the order it ran them, then the pipeline's others in declaration order.
function view.stage_names(run, p)
  local names, seen = {}, {}
  local function add(n)
    if not seen[n] then seen[n], names[#names + 1] = true, n end
  end
  for _, n in ipairs(run.order or {}) do add(n) end
  if p then for _, st in ipairs(p.stages) do add(st.name) end end
  return names
end

function view.record(run, name)
  return (run.stages and run.stages[name]) or { name = name, status = "pending" }
end

-- A stage's definition in the pipeline, or nil (no pipeline, or a stage it no longer has).
function view.spec(p, name)
  return p and p.by_name and p.by_name[name]
end

-- How a stage follows its needs: "success", "failure", "always" or "decision".
function view.edge_kind(st)
  local when = st and st.when or "success"
  if when == "failure" or when == "always" or when == "decision" then return when end
  return "success"
end

-- "when always", "if approved", or nil for the usual "every need succeeded".
function view.when_label(st)
  local kind = view.edge_kind(st)
  if kind == "success" then return nil end
  if kind == "decision" then
    return "if " .. tostring(st.decision_name or "decision"):gsub("%.lua$", ""):gsub("^.*/", "")
  end
  return "when " .. kind
end

-- ---- test cases (a stage's outputs.tests) ----

-- outputs.tests when it is a non-empty list of tables, else nil.
function view.tests_of(rec)
  local t = type(rec.outputs) == "table" and rec.outputs.tests
  if type(t) ~= "table" then return nil end
  local cases = {}
  for _, c in ipairs(t) do
    if type(c) == "table" then cases[#cases + 1] = c end
  end
  return #cases > 0 and cases or nil
end

-- "passed", "failure", "error" or "skipped", from the many words test runners use.
function view.case_kind(c)
  local s = tostring(c.status or "passed"):lower()
  if s == "failed" or s == "failure" or s == "fail" then return "failure" end
  if s == "error" or s == "errored" then return "error" end
  if s == "skipped" or s == "skip" or s == "pending" then return "skipped" end
  return "passed"
end

function view.count_cases(cases)
  local n = { tests = #cases, failure = 0, error = 0, skipped = 0, passed = 0, time = 0 }
  for _, c in ipairs(cases) do
    local k = view.case_kind(c)
    n[k] = n[k] + 1
    if type(c.time) == "number" then n.time = n.time + c.time end
  end
  return n
end

-- The start of a stage's note: its error, its reason and the run it was reused from, each
-- passed through escape (the report's own), in that order.
function view.outcome_notes(rec, escape)
  local note = {}
  if rec.error then note[#note + 1] = escape(rec.error) end
  if rec.reason then note[#note + 1] = escape(rec.reason) end
  if rec.reused_from then
    note[#note + 1] = escape(("reused from run %s%s"):format(rec.reused_from,
      rec.approved_by and (", approved by " .. rec.approved_by) or ""))
  end
  return note
end

-- "tests: 2 passed, 1 failed, 0 skipped" for a stage that reported tests, else nil.
function view.tests_note(rec)
  local cases = view.tests_of(rec)
  if not cases then return nil end
  local c = view.count_cases(cases)
  return ("tests: %d passed, %d failed, %d skipped"):format(c.passed, c.failure + c.error, c.skipped)
end

-- ---- time ----

local epoch = time.parse_iso8601

-- Offsets in seconds from the run's start, for the timeline. Timestamps have whole seconds, the
-- duration is exact: a bar is placed by the first and sized by the second.
function view.timing(run, names)
  local t0 = epoch(run.started_at)
  if not t0 then
    for _, n in ipairs(names) do
      local s = epoch(view.record(run, n).started_at)
      if s and (not t0 or s < t0) then t0 = s end
    end
  end
  local spans, last = {}, 0
  if not t0 then return spans, 0 end
  for _, n in ipairs(names) do
    local rec = view.record(run, n)
    local s, f = epoch(rec.started_at), epoch(rec.finished_at)
    local span
    if s then
      local finish = type(rec.duration) == "number" and (s + rec.duration) or f
        or (rec.status == "running" and os.time()) or s
      span = { from = s - t0, to = finish - t0 }
    elseif f then -- decided without running (a broken decision): a point in time
      span = { from = f - t0, to = f - t0, instant = true }
    end
    if span then
      spans[n] = span
      if span.to > last then last = span.to end
    end
  end
  local rf = epoch(run.finished_at)
  if rf and rf - t0 > last then last = rf - t0 end
  return spans, last
end

-- The run's length: its own timestamps (whole seconds), or the end of its last stage when that
-- is later (exact durations). Nothing while the run has not finished.
function view.total_duration(run, names)
  if not (epoch(run.started_at) and epoch(run.finished_at)) then return nil end
  local _, last = view.timing(run, names)
  return last
end

return view
