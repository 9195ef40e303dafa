-- The files a run leaves in its directory when it ends: run.json (the record, masked, written
-- atomically so a reader never sees half), report.html, junit.xml and GitHub's step summary.
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")

local record = {}

local function artifact_entry(a)
  return { name = a.name, stage = a.stage, file = a.file, size = a.size, sha256 = a.sha256,
    created_at = a.created_at, expires_at = a.expires_at }
end

-- The run as run.json has it: what `stagehost status --json` and a reader of the directory see.
function record.of(run)
  local out = { id = run.id, pipeline = run.pipeline, file = run.file, tag = run.tag, env = run.env,
    actor = run.actor, vars = run.vars, status = run.status, started_at = run.started_at,
    finished_at = run.finished_at, attempt = run.attempt, rerun_of = run.rerun_of, commit = run.commit,
    error = run.host_error, stages = json.array{} }
  for _, name in ipairs(run.order) do
    local r = run.records[name]
    local artifacts = json.array{}
    for i, a in ipairs(r.artifacts or {}) do artifacts[i] = artifact_entry(a) end
    out.stages[#out.stages + 1] = { name = name, status = r.status, started_at = r.started_at,
      finished_at = r.finished_at, duration = r.duration, attempts = r.attempts, outputs = r.outputs,
      error = r.error, reason = r.reason, allowed_failure = r.allowed_failure, reused_from = r.reused_from,
      approved_by = r.approved_by, artifacts = artifacts }
  end
  -- the run's approval gates, each with its hash-chained audit trail (stagehost.approval)
  out.approvals = require("stagehost.approval").record_of(run)
  return out
end

-- Write run.json and the reports; raises with what could not be written.
function record.write(run)
  local problems = {}
  if run.dir then
    local ok, err = fs.write(run.dir .. "/run.json", log.masked(json.encode(record.of(run), { pretty = true })) .. "\n")
    if not ok then problems[#problems + 1] = ("cannot write %s/run.json: %s"):format(run.dir, err) end
  end
  local ok, err = require("stagehost.pipeline.report").write_all(run, run.p)
  if not ok then problems[#problems + 1] = "the reports: " .. tostring(err) end
  if #problems > 0 then error(table.concat(problems, "; "), 0) end
end

return record
