-- What a stage script gets: `ctx`. One Ctx per stage attempt, made by the Run; every method is
-- called the same way (`ctx:artifact(...)`, `ctx:checkpoint(...)`, `ctx:cancel(...)`,
-- `ctx:waiting(...)`), every field is plain data or a read-only view of the run.
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")
local crypto = require("stagehost.crypto")
local errors = require("stagehost.errors")
local time = require("stagehost.util.time")

local Ctx = {}
Ctx.__index = Ctx
Ctx.__name = "stagehost.ctx"

-- A read-only view of the run's records as they are now: ctx.outputs.NAME and ctx.stages.NAME
-- give view(record); pairs walks every stage.
local function readonly(what, records, view)
  return setmetatable({}, {
    __index = function(_, name)
      local r = records[name]
      return r and view(r)
    end,
    __newindex = function() error(("ctx.%s is read-only: return a table from the stage instead"):format(what), 2) end,
    __pairs = function()
      return function(_, key)
        local name, r = next(records, key)
        if name ~= nil then return name, view(r) end
      end, nil, nil
    end,
  })
end

-- The public face of a stage's record, for ctx.stages and decisions' run.stages.
function Ctx.stage_view(rec)
  return { status = rec.status, outputs = rec.outputs, error = rec.error, reason = rec.reason,
    started = rec.started_at, finished = rec.finished_at, attempts = rec.attempts,
    duration = rec.duration, reused_from = rec.reused_from }
end

-- Ctx.new(run, stage) -> ctx for one attempt of the stage
function Ctx.new(run, st)
  local records = run.records
  local ctx = setmetatable({
    stage = st.name,
    run = { id = run.id, tag = run.tag, env = run.env, actor = run.actor, pipeline = run.p.name,
      sandbox = run.sandbox, auto_approve = run.auto_approve, attempt = run.attempt, commit = run.commit, dir = run.dir },
    vars = run.vars,
    env = run.p.env,
    log = log,
    pipeline = { name = run.p.name, file = run.p.file, dir = run.p.dir },
    dir = run.dir, -- this run's directory (logs, artifacts)
    outputs = readonly("outputs", records, function(r) return r.outputs end),
    stages = readonly("stages", records, Ctx.stage_view),
  }, Ctx)
  -- methods reach the run through a private field
  rawset(ctx, "_run", run)
  return ctx
end

-- ctx:artifact(name, content [, {retention_days = N}]) -> path. A table is stored as JSON.
-- Stored under the run's artifacts/STAGE/NAME, masked, with its sha256 in the state database.
function Ctx:artifact(name, content, opts)
  local run = self._run
  if type(name) ~= "string" or name == "" or name:find("/", 1, true) or name:find("^%.") or name:find("%z") then
    errors.argument(1, "ctx:artifact", "a file name without '/' and not starting with '.' (got %s)", tostring(name))
  end
  local days = 30
  if opts ~= nil then
    if type(opts) ~= "table" then errors.argument(3, "ctx:artifact", "table expected, got %s", type(opts)) end
    if opts.retention_days ~= nil then
      days = opts.retention_days
      if type(days) ~= "number" or days < 0 or days ~= days or days > 36500 then
        errors.argument(3, "ctx:artifact", "retention_days must be a number of days from 0 to 36500 (got %s)", tostring(days))
      end
    end
  end
  if type(content) ~= "string" then content = json.encode(content, { pretty = true }) end
  content = log.masked(content) -- an artifact is output too: no secret in it
  local relative = "artifacts/" .. self.stage .. "/" .. name
  local path = (run.dir or ".") .. "/" .. relative
  assert(fs.mkdir((run.dir or ".") .. "/artifacts/" .. self.stage))
  assert(fs.write(path, content))
  local entry = { name = name, stage = self.stage, path = path, file = relative, size = #content,
    sha256 = crypto.sha256(content), created_at = time.now_iso(), retention_days = days }
  run:add_artifact(self.stage, entry)
  return path
end

-- ctx:cancel(reason): end the whole run as cancelled (exit 3), e.g. when an approval is
-- rejected; stages with when = "always" or "cancelled" still run.
function Ctx:cancel(reason)
  error(errors.cancelled(tostring(reason or "cancelled"), { origin = "stage" }), 0)
end

-- ctx:summary(markdown) -> path: the stage's part of the job summary ($GITHUB_STEP_SUMMARY
-- under GitHub Actions), kept as its artifact summary.md; a second call replaces the first.
function Ctx:summary(text)
  if type(text) ~= "string" then errors.argument(1, "ctx:summary", "string expected, got %s", type(text)) end
  return self:artifact("summary.md", text)
end

-- ctx:checkpoint(key [, value]): set persists at once and returns the value; get reads it
-- back, also after a resume.
function Ctx:checkpoint(key, value)
  if type(key) ~= "string" then errors.argument(1, "ctx:checkpoint", "string expected, got %s", type(key)) end
  local store = self._run.store
  if value ~= nil then return store:checkpoint(self._run.id, self.stage, key, value, true) end
  return store:checkpoint(self._run.id, self.stage, key)
end

-- ctx:waiting(text): the stage waits for a person (an approval, a manual step); the live view
-- shows the text whole instead of cutting it to a column. ctx:waiting(nil) ends that.
function Ctx:waiting(text)
  if text ~= nil and type(text) ~= "string" then errors.argument(1, "ctx:waiting", "string or nil expected, got %s", type(text)) end
  self._run:set_waiting(self.stage, text)
end

return Ctx
