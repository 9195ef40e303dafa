-- Amplify Hosting (REST-JSON): apps, branches, release jobs and a waiter that streams each
-- step's status and names the failing step.
--
--   local amp = aws.amplify{ region = "eu-west-1", poll = { min = 5, max = 15 } }
--   amp:get_app(app_id) -> app;  amp:get_branch(app_id, branch) -> branch
--   amp:list_apps() -> apps;  amp:find_app(name) -> app | nil;  amp:create_app{name, ...} -> app
--   amp:create_branch(app_id, branch, { stage, environment_variables, ... }) -> branch
--   amp:update_branch(app_id, branch, { environment_variables = {K = "v"}, ... })
--       environment variables are merged into the branch's, not replaced
--   amp:start_job(app_id, branch, { commit_id, commit_message, job_reason, job_type, job_id })
--       -> job summary (job_type = "RETRY" with job_id redeploys that job)
--   amp:get_job(app_id, branch, job_id) -> {summary, steps}
--   amp:wait_job(app_id, branch, job_id, { timeout }) -> {status, ok, failed_step, steps}
--   amp:branch_url(app_id, branch) -> "https://branch.d123.amplifyapp.com"
local aws = require("stagehost.aws")
local errors = require("stagehost.errors")
local log = require("stagehost.log")
local task = require("stagehost.task")

local amplify = {}
local Client
Client, amplify.new = aws.client_class("aws.amplify", { poll = { 5, 15 } })

local function check_id(value, what, who)
  if type(value) ~= "string" or value == "" then
    error(("aws.amplify: %s: %s must be a non-empty string (got %s)"):format(who, what,
      type(value) == "string" and "an empty string" or type(value)), 3)
  end
  return aws.uri_encode(value)
end

-- UpdateBranch sets the same fields again if repeated; StartJob would queue a second job.
local IDEMPOTENT = { UpdateBranch = true }

function Client:call(method, path, operation, body)
  local res = aws.request{ service = "amplify", region = self.region, method = method, path = path,
    json = body, operation = operation, credentials = self.credentials, endpoint = self.endpoint,
    retry_base = self.retry_base, idempotent = IDEMPOTENT[operation] }
  if type(res.json) ~= "table" then
    error(aws.error{ service = "amplify", operation = operation, code = "MalformedResponse", status = res.status,
      request_id = res.request_id, message = "expected a JSON object in the response" }, 3)
  end
  return res.json
end

local function field(doc, name, operation)
  local v = doc[name]
  if type(v) ~= "table" then
    error(aws.error{ service = "amplify", operation = operation, code = "MalformedResponse",
      message = ("the response has no '%s' object"):format(name) }, 3)
  end
  return v
end

-- list_apps() -> every app (all pages); find_app(name) -> the app of that name, or nil
function Client:list_apps()
  local apps, token = {}, nil
  repeat
    local path = "/apps?maxResults=100" .. (token and ("&nextToken=" .. aws.uri_encode(token)) or "")
    local doc = self:call("GET", path, "ListApps")
    for _, app in ipairs(doc.apps or {}) do apps[#apps + 1] = app end
    token = doc.nextToken
  until token == nil or token == ""
  return apps
end

function Client:find_app(name)
  for _, app in ipairs(self:list_apps()) do
    if app.name == name then return app end
  end
  return nil
end

-- create_app{name, platform, environment_variables, ...} -> app (fields as for update_branch)
function Client:create_app(fields)
  if type(fields) ~= "table" or type(fields.name) ~= "string" then
    errors.argument(1, "create_app", "table with a name expected")
  end
  local body = {}
  for k, v in pairs(fields) do body[(k:gsub("_(%l)", string.upper))] = v end
  return field(self:call("POST", "/apps", "CreateApp", body), "app", "CreateApp")
end

-- create_branch(app_id, branch, fields) -> branch
function Client:create_branch(app_id, branch, fields)
  local body = { branchName = branch }
  for k, v in pairs(fields or {}) do body[(k:gsub("_(%l)", string.upper))] = v end
  local path = ("/apps/%s/branches"):format(check_id(app_id, "app_id", "create_branch"))
  check_id(branch, "branch", "create_branch")
  return field(self:call("POST", path, "CreateBranch", body), "branch", "CreateBranch")
end

function Client:get_app(app_id)
  local app = check_id(app_id, "app_id", "get_app")
  return field(self:call("GET", "/apps/" .. app, "GetApp"), "app", "GetApp")
end

function Client:get_branch(app_id, branch)
  local path = ("/apps/%s/branches/%s"):format(check_id(app_id, "app_id", "get_branch"), check_id(branch, "branch", "get_branch"))
  return field(self:call("GET", path, "GetBranch"), "branch", "GetBranch")
end

-- update_branch(app_id, branch, fields): fields in snake_case or Amplify's camelCase;
-- environment_variables are merged over the branch's current ones (UpdateBranch itself
-- replaces the whole map, which would silently drop variables set elsewhere).
function Client:update_branch(app_id, branch, fields)
  if type(fields) ~= "table" then
    errors.argument(3, "update_branch", "table expected, got %s", type(fields))
  end
  local path = ("/apps/%s/branches/%s"):format(check_id(app_id, "app_id", "update_branch"), check_id(branch, "branch", "update_branch"))
  local body = {}
  for k, v in pairs(fields) do
    local camel = k:gsub("_(%l)", string.upper)
    body[camel] = v
  end
  if body.environmentVariables ~= nil then
    local current = self:get_branch(app_id, branch).environmentVariables or {}
    local merged = {}
    for k, v in pairs(current) do merged[k] = v end
    for k, v in pairs(body.environmentVariables) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean") then
        error(("aws.amplify: update_branch: environment variable %s must be a string"):format(tostring(k)), 2)
      end
      merged[k] = tostring(v)
    end
    body.environmentVariables = merged
  end
  return field(self:call("POST", path, "UpdateBranch", body), "branch", "UpdateBranch")
end

function Client:start_job(app_id, branch, opts)
  opts = opts or {}
  local path = ("/apps/%s/branches/%s/jobs"):format(check_id(app_id, "app_id", "start_job"), check_id(branch, "branch", "start_job"))
  local doc = self:call("POST", path, "StartJob", { jobType = opts.job_type or "RELEASE", jobId = opts.job_id, commitId = opts.commit_id,
    commitMessage = opts.commit_message, jobReason = opts.job_reason })
  return field(doc, "jobSummary", "StartJob")
end

function Client:get_job(app_id, branch, job_id)
  local path = ("/apps/%s/branches/%s/jobs/%s"):format(check_id(app_id, "app_id", "get_job"),
    check_id(branch, "branch", "get_job"),
    check_id(type(job_id) == "number" and tostring(math.tointeger(job_id) or job_id) or job_id, "job_id", "get_job"))
  local job = field(self:call("GET", path, "GetJob"), "job", "GetJob")
  job.summary = job.summary or {}
  job.steps = job.steps or {}
  return job
end

local DONE = { SUCCEED = true, FAILED = true, CANCELLED = true }

-- wait_job(app_id, branch, job_id, {timeout = 3600, pending_timeout = 600}) -> {status, ok,
-- failed_step, steps, job}. A job still PENDING after pending_timeout seconds (no build
-- capacity, a stuck queue) is reported as such instead of waiting out the whole timeout.
function Client:wait_job(app_id, branch, job_id, opts)
  local started = task.now()
  local deadline = started + ((opts and opts.timeout) or 3600)
  local pending_deadline = started + ((opts and opts.pending_timeout) or 600)
  local shown = {}
  local delay = self.poll_min
  while true do
    local job = self:get_job(app_id, branch, job_id)
    for _, step in ipairs(job.steps) do
      local key = tostring(step.stepName) .. "=" .. tostring(step.status)
      if not shown[key] then
        shown[key] = true
        local line = ("amplify: %s/%s job %s: %s %s"):format(app_id, branch, job_id, tostring(step.stepName), tostring(step.status))
        if step.statusReason then line = line .. ": " .. tostring(step.statusReason) end
        if step.status == "FAILED" then log.warn(line) else log.info(line) end
      end
    end
    local status = job.summary.status
    if DONE[status] then
      local failed
      for _, step in ipairs(job.steps) do
        if step.status == "FAILED" or step.status == "CANCELLED" then
          failed = { name = step.stepName, status = step.status, reason = step.statusReason, log_url = step.logUrl }
          break
        end
      end
      return { status = status, ok = status == "SUCCEED", failed_step = failed, steps = job.steps, job = job }
    end
    if status == "PENDING" and task.now() >= pending_deadline then
      error(aws.error{ service = "amplify", operation = "wait_job", code = "JobStuckPending",
        message = ("job %s of %s/%s is still PENDING after %ds: Amplify has not started it (build capacity or a stuck queue)"):format(
          job_id, app_id, branch, math.floor(task.now() - started)) }, 2)
    end
    if task.now() >= deadline then
      error(("aws.amplify: wait_job: job %s of %s/%s still %s after %ds"):format(job_id, app_id, branch,
        tostring(status), (opts and opts.timeout) or 3600), 2)
    end
    task.sleep(delay)
    delay = math.min(self.poll_max, delay * 1.5)
  end
end

-- The branch's URL as Amplify serves it: https://<display name>.<app's default domain>.
function Client:branch_url(app_id, branch)
  local app = self:get_app(app_id)
  local b = self:get_branch(app_id, branch)
  local label = b.displayName or branch:gsub("[^%w%-]", "-")
  if type(app.defaultDomain) ~= "string" then
    error(aws.error{ service = "amplify", operation = "GetApp", code = "MalformedResponse",
      message = "the app has no defaultDomain" }, 2)
  end
  return ("https://%s.%s"):format(label, app.defaultDomain)
end

return amplify
