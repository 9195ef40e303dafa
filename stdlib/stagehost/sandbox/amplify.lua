-- Amplify (REST-JSON, 2017-07-25): apps, branches and jobs.
--
-- A job moves on as it is polled, one phase per sb.state.aws.step_seconds: PENDING,
-- PROVISIONING, then RUNNING through the steps BUILD, DEPLOY and VERIFY, then SUCCEED.
-- To make a job fail, give the branch (or the app) the environment variable
--   STAGEHOST_FAIL_STEP=BUILD|DEPLOY|VERIFY
-- (read when the job starts): that step ends FAILED with a statusReason, the steps after it never
-- run, and the job ends FAILED.
-- Every step has a logUrl served by the sandbox itself, unsigned, as Amplify's presigned URLs are.
-- Timestamps are epoch seconds, as REST-JSON carries them.
--
-- Knobs (sb.state.aws): amplify_auto_create = true makes an app or branch that a request names
-- exist on first use (appId and name are the id asked for; `stagehost run --sandbox` sets it, so
-- a flow written for a real app id runs as is); amplify_next_jobs = {"PENDING" | "FAILED" |
-- "CANCELLED", ...} gives the next StartJobs those outcomes, in order: stuck in PENDING for
-- ever, FAILED in BUILD, CANCELLED while BUILD runs (a job with no queued outcome succeeds).
-- The served app: http://HOST:PORT/_app/{appId}/{branch}/ (sb:app_url) serves, once a job of
-- the branch succeeded, the files of sb.state.aws.sites[appId or app name] (a directory, e.g.
-- the frontend's dist/) or else a page naming the app, branch and job; 404 before that.
local json = require("stagehost.json")
local wire = require("stagehost.sandbox.wire")

local amplify = { protocol = "rest-json" }

local STEPS = { "BUILD", "DEPLOY", "VERIFY" }
-- phases before the first step: PENDING, then PROVISIONING
local STEPS_START = 2
local JOB_TYPES = { RELEASE = true, RETRY = true, MANUAL = true, WEB_HOOK = true }
local STAGES = { PRODUCTION = true, BETA = true, DEVELOPMENT = true, EXPERIMENTAL = true, PULL_REQUEST = true }
local PLATFORMS = { WEB = true, WEB_DYNAMIC = true, WEB_COMPUTE = true }
local LOG_PREFIX = "/_sandbox/amplify/logs/"

function amplify.init(sb)
  sb.state.aws.apps = sb.state.aws.apps or {}
end

local function bad_request(message) wire.fail("BadRequestException", message, 400) end
local function not_found(message) wire.fail("NotFoundException", message, 404) end

local function decode_segment(s) return wire.unescape(s, false) end

-- (method, path) -> the operation and its path parameters; nil for a path Amplify lacks
local ROUTES = {
  { "GET", "^/apps$", "ListApps" },
  { "POST", "^/apps$", "CreateApp" },
  { "GET", "^/apps/([^/]+)$", "GetApp" },
  { "POST", "^/apps/([^/]+)$", "UpdateApp" },
  { "DELETE", "^/apps/([^/]+)$", "DeleteApp" },
  { "GET", "^/apps/([^/]+)/branches$", "ListBranches" },
  { "POST", "^/apps/([^/]+)/branches$", "CreateBranch" },
  { "GET", "^/apps/([^/]+)/branches/([^/]+)$", "GetBranch" },
  { "POST", "^/apps/([^/]+)/branches/([^/]+)$", "UpdateBranch" },
  { "DELETE", "^/apps/([^/]+)/branches/([^/]+)$", "DeleteBranch" },
  { "GET", "^/apps/([^/]+)/branches/([^/]+)/jobs$", "ListJobs" },
  { "POST", "^/apps/([^/]+)/branches/([^/]+)/jobs$", "StartJob" },
  { "GET", "^/apps/([^/]+)/branches/([^/]+)/jobs/([^/]+)$", "GetJob" },
  { "DELETE", "^/apps/([^/]+)/branches/([^/]+)/jobs/([^/]+)/stop$", "StopJob" },
}

function amplify.route(req)
  for _, r in ipairs(ROUTES) do
    if req.method == r[1] then
      local found = { req.path:find(r[2]) }
      if found[1] then
        local captures = { table.unpack(found, 3) }
        local route = { app_id = captures[1] and decode_segment(captures[1]),
          branch = captures[2] and decode_segment(captures[2]), job_id = captures[3] and decode_segment(captures[3]) }
        return r[3], route
      end
    end
  end
  return nil, nil
end

---------------------------------------------------------------------------------------------------
-- state lookups

local new_app, new_branch -- below

local function app_of(sb, app_id)
  local app = sb.state.aws.apps[app_id]
  if not app and sb.state.aws.amplify_auto_create and app_id:match("^[%w%-_]+$") then
    app = new_app(sb, app_id, { name = app_id }, sb.state.aws.region)
  end
  if not app then not_found(("App %s not found."):format(app_id)) end
  return app
end

local function branch_of(sb, app_id, name)
  local app = app_of(sb, app_id)
  local branch = app.branches[name]
  if not branch and sb.state.aws.amplify_auto_create then branch = new_branch(app, name, { stage = "NONE" }) end
  if not branch then not_found(("Branch %s not found for app %s."):format(name, app_id)) end
  return app, branch
end

local function job_of(sb, route)
  local app, branch = branch_of(sb, route.app_id, route.branch)
  local job = branch.jobs[route.job_id]
  if not job then not_found(("Job %s not found for branch %s."):format(route.job_id, route.branch)) end
  return app, branch, job
end

---------------------------------------------------------------------------------------------------
-- jobs: status from elapsed time

-- The job as of now: its status, end time and its steps (only those that have started).
local function job_view(job)
  local step = job.step_seconds
  local phase = math.floor((wire.clock() - job.start) / step)
  if job.outcome == "PENDING" then phase = 0 end -- stuck: never provisioned
  if job.stopped_at then
    phase = math.min(phase, math.floor((job.stopped_at - job.start) / step))
  end
  local steps, status, end_time = {}, nil, nil
  if phase < 1 then status = "PENDING"
  elseif phase < STEPS_START then status = "PROVISIONING"
  else status = "RUNNING" end
  for i, name in ipairs(STEPS) do
    local begins = STEPS_START + i - 1
    if phase < begins then break end
    local s = { stepName = name, startTime = job.start + begins * step,
      logUrl = job.log_base .. name }
    local failing = job.fail_step == name
    if phase >= begins + 1 then
      s.endTime = job.start + (begins + 1) * step
      s.status = failing and "FAILED" or "SUCCEED"
      if failing then
        s.statusReason = job.outcome == "FAILED" and ("%s failed: the sandbox was told to fail this job"):format(name)
          or ("%s failed: the environment variable STAGEHOST_FAIL_STEP is %s"):format(name, name)
        status, end_time = "FAILED", s.endTime
      end
    else
      s.status = "RUNNING"
      s.endTime = s.startTime -- required by the model; final once the step ends
    end
    steps[#steps + 1] = s
    if failing and s.status == "FAILED" then break end
  end
  if status == "RUNNING" and phase >= STEPS_START + #STEPS then
    status, end_time = "SUCCEED", job.start + (STEPS_START + #STEPS) * step
  end
  if job.stopped_at and status ~= "SUCCEED" and status ~= "FAILED" then
    status, end_time = "CANCELLED", job.stopped_at
  end
  return { status = status, end_time = end_time, steps = steps }
end

local function job_summary(job)
  local view = job_view(job)
  return {
    jobArn = job.arn, jobId = job.id, jobType = job.type,
    commitId = job.commit_id, commitMessage = job.commit_message, commitTime = job.commit_time,
    startTime = job.start, status = view.status, endTime = view.end_time,
  }
end

---------------------------------------------------------------------------------------------------
-- app and branch views

local function app_view(app)
  local view = {}
  for k, v in pairs(app.fields) do view[k] = v end
  view.appId, view.appArn, view.defaultDomain = app.id, app.arn, app.id .. ".amplifyapp.com"
  view.createTime, view.updateTime = app.create_time, app.update_time
  for _, name in ipairs(wire.sorted_keys(app.branches)) do
    local branch = app.branches[name]
    if branch.fields.stage == "PRODUCTION" then
      local latest = branch.jobs[tostring(branch.job_count)]
      local summary = latest and job_summary(latest)
      view.productionBranch = { branchName = name, status = summary and summary.status,
        lastDeployTime = summary and summary.endTime }
      break
    end
  end
  return view
end

local function branch_view(app, branch)
  local view = {}
  for k, v in pairs(branch.fields) do view[k] = v end
  view.branchName, view.branchArn = branch.name, ("%s/branches/%s"):format(app.arn, wire.escape(branch.name))
  view.createTime, view.updateTime = branch.create_time, branch.update_time
  view.activeJobId = branch.job_count > 0 and tostring(branch.job_count) or ""
  view.totalNumberOfJobs = tostring(branch.job_count)
  return view
end

-- Copy the request's settable fields over `fields`: what is sent replaces what was there (the
-- API does not merge environmentVariables: the client does).
local function apply_fields(fields, body, allowed)
  for _, key in ipairs(allowed) do
    if body[key] ~= nil then fields[key] = body[key] end
  end
end

local function check_env(env, field)
  if env == nil then return end
  if type(env) ~= "table" then bad_request(("%s must be a map of strings"):format(field)) end
  for k, v in pairs(env) do
    if type(k) ~= "string" or type(v) ~= "string" then bad_request(("%s must be a map of strings"):format(field)) end
  end
end

local APP_FIELDS = { "name", "description", "repository", "platform", "iamServiceRoleArn", "environmentVariables",
  "enableBranchAutoBuild", "enableBranchAutoDeletion", "enableBasicAuth", "basicAuthCredentials", "customRules",
  "tags", "buildSpec", "customHeaders", "enableAutoBranchCreation", "autoBranchCreationPatterns",
  "autoBranchCreationConfig" }
local BRANCH_FIELDS = { "description", "stage", "framework", "enableNotification", "enableAutoBuild",
  "environmentVariables", "basicAuthCredentials", "enableBasicAuth", "enablePerformanceMode", "tags", "buildSpec",
  "ttl", "displayName", "enablePullRequestPreview", "pullRequestEnvironmentName", "backendEnvironmentArn" }

local function check_app_body(body)
  if body.name ~= nil and (type(body.name) ~= "string" or #body.name < 1 or #body.name > 255) then
    bad_request("1 validation error detected: Value at 'name' failed to satisfy constraint: Member must have length between 1 and 255")
  end
  if body.platform ~= nil and not PLATFORMS[body.platform] then
    bad_request(("1 validation error detected: Value '%s' at 'platform' failed to satisfy constraint: Member must satisfy enum value set: [WEB, WEB_DYNAMIC, WEB_COMPUTE]"):format(tostring(body.platform)))
  end
  check_env(body.environmentVariables, "environmentVariables")
end

local function check_branch_body(body)
  if body.stage ~= nil and not STAGES[body.stage] then
    bad_request(("1 validation error detected: Value '%s' at 'stage' failed to satisfy constraint: Member must satisfy enum value set: [PRODUCTION, BETA, DEVELOPMENT, EXPERIMENTAL, PULL_REQUEST]"):format(tostring(body.stage)))
  end
  check_env(body.environmentVariables, "environmentVariables")
end

---------------------------------------------------------------------------------------------------
-- operations: fn(sb, route, body, query, ctx) -> the answer's JSON value

local ops = {}

function ops.ListApps(sb)
  local apps = {}
  for _, id in ipairs(wire.sorted_keys(sb.state.aws.apps)) do apps[#apps + 1] = app_view(sb.state.aws.apps[id]) end
  return { apps = json.array(apps) }
end

function new_app(sb, id, body, region)
  local now = wire.clock()
  local app = {
    id = id, arn = ("arn:aws:amplify:%s:%s:apps/%s"):format(region, sb.state.aws.account_id, id),
    create_time = now, update_time = now, branches = {},
    fields = { platform = "WEB", environmentVariables = json.object{}, enableBranchAutoBuild = false,
      enableBranchAutoDeletion = false, enableBasicAuth = false, customRules = json.array{}, description = "",
      repository = "" },
  }
  apply_fields(app.fields, body, APP_FIELDS)
  app.fields.oauthToken, app.fields.accessToken = nil, nil -- secrets are never echoed
  sb.state.aws.apps[id] = app
  return app
end

function ops.CreateApp(sb, _, body, _, ctx)
  if body.name == nil then bad_request("1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null") end
  check_app_body(body)
  local id
  repeat id = "d" .. wire.random_lower(13) until not sb.state.aws.apps[id]
  return { app = app_view(new_app(sb, id, body, ctx.region)) }
end

function ops.GetApp(sb, route) return { app = app_view(app_of(sb, route.app_id)) } end

function ops.UpdateApp(sb, route, body)
  local app = app_of(sb, route.app_id)
  check_app_body(body)
  apply_fields(app.fields, body, APP_FIELDS)
  app.update_time = wire.clock()
  return { app = app_view(app) }
end

function ops.DeleteApp(sb, route)
  local app = app_of(sb, route.app_id)
  sb.state.aws.apps[route.app_id] = nil
  return { app = app_view(app) }
end

function ops.ListBranches(sb, route)
  local app = app_of(sb, route.app_id)
  local branches = {}
  for _, name in ipairs(wire.sorted_keys(app.branches)) do branches[#branches + 1] = branch_view(app, app.branches[name]) end
  return { branches = json.array(branches) }
end

function ops.CreateBranch(sb, route, body)
  local app = app_of(sb, route.app_id)
  local name = body.branchName
  if type(name) ~= "string" or #name < 1 or #name > 255 then
    bad_request("1 validation error detected: Value at 'branchName' failed to satisfy constraint: Member must have length between 1 and 255")
  end
  if app.branches[name] then bad_request(("Branch %s already exists for app %s."):format(name, app.id)) end
  check_branch_body(body)
  return { branch = branch_view(app, new_branch(app, name, body)) }
end

function new_branch(app, name, body)
  local now = wire.clock()
  local branch = {
    name = name, create_time = now, update_time = now, jobs = {}, job_count = 0,
    fields = { description = "", stage = "NONE", displayName = (name:gsub("[^%w%-]", "-")), enableNotification = false,
      environmentVariables = json.object{}, enableAutoBuild = true, customDomains = json.array{}, framework = "",
      enableBasicAuth = false, ttl = "5", enablePullRequestPreview = false },
  }
  apply_fields(branch.fields, body, BRANCH_FIELDS)
  app.branches[name] = branch
  return branch
end

function ops.GetBranch(sb, route)
  local app, branch = branch_of(sb, route.app_id, route.branch)
  return { branch = branch_view(app, branch) }
end

function ops.UpdateBranch(sb, route, body)
  local app, branch = branch_of(sb, route.app_id, route.branch)
  check_branch_body(body)
  apply_fields(branch.fields, body, BRANCH_FIELDS)
  branch.update_time = wire.clock()
  return { branch = branch_view(app, branch) }
end

function ops.DeleteBranch(sb, route)
  local app, branch = branch_of(sb, route.app_id, route.branch)
  app.branches[route.branch] = nil
  return { branch = branch_view(app, branch) }
end

function ops.ListJobs(sb, route)
  local _, branch = branch_of(sb, route.app_id, route.branch)
  local summaries = {}
  for n = branch.job_count, 1, -1 do summaries[#summaries + 1] = job_summary(branch.jobs[tostring(n)]) end
  return { jobSummaries = json.array(summaries) }
end

local function fail_step_of(app, branch)
  local step = branch.fields.environmentVariables and branch.fields.environmentVariables.STAGEHOST_FAIL_STEP
  if step == nil then step = app.fields.environmentVariables and app.fields.environmentVariables.STAGEHOST_FAIL_STEP end
  return step
end

function ops.StartJob(sb, route, body, _, ctx)
  local app, branch = branch_of(sb, route.app_id, route.branch)
  if not JOB_TYPES[body.jobType] then
    bad_request(("1 validation error detected: Value '%s' at 'jobType' failed to satisfy constraint: Member must satisfy enum value set: [RELEASE, RETRY, MANUAL, WEB_HOOK]"):format(tostring(body.jobType)))
  end
  local retried
  if body.jobType == "RETRY" then
    retried = body.jobId and branch.jobs[tostring(body.jobId)]
    if not retried then bad_request("A RETRY job needs the jobId of an existing job") end
  end
  branch.job_count = branch.job_count + 1
  local id = tostring(branch.job_count)
  local now = wire.clock()
  local job = {
    id = id, type = body.jobType, start = now, step_seconds = sb.state.aws.step_seconds,
    arn = ("%s/branches/%s/jobs/%s"):format(app.arn, wire.escape(branch.name), id),
    commit_id = body.commitId or (retried and retried.commit_id) or "HEAD",
    commit_message = body.commitMessage or (retried and retried.commit_message) or "",
    commit_time = body.commitTime or now,
    fail_step = fail_step_of(app, branch),
    outcome = table.remove(sb.state.aws.amplify_next_jobs or {}, 1),
    log_base = ("%s%s%s/%s/%s/"):format(sb.url or "", LOG_PREFIX, app.id, wire.escape(branch.name), id),
    region = ctx.region,
  }
  if job.outcome == "FAILED" then job.fail_step = "BUILD" end
  if job.outcome == "CANCELLED" then job.stopped_at = now + (STEPS_START + 0.5) * job.step_seconds end
  branch.jobs[id] = job
  return { jobSummary = job_summary(job) }
end

function ops.GetJob(sb, route)
  local _, _, job = job_of(sb, route)
  local view = job_view(job)
  return { job = { summary = job_summary(job), steps = json.array(view.steps) } }
end

function ops.StopJob(sb, route)
  local _, _, job = job_of(sb, route)
  if not job.stopped_at then job.stopped_at = wire.clock() end
  return { jobSummary = job_summary(job) }
end

function amplify.handle(sb, req, ctx)
  local op = ctx.action and ops[ctx.action]
  if not op then
    wire.fail("UnknownOperationException", ("no Amplify operation for %s %s"):format(req.method, req.path), 404)
  end
  local body = {}
  if req.body ~= "" then
    local decoded = json.decode(req.body)
    if type(decoded) ~= "table" then bad_request("The request body is not a valid JSON object.") end
    body = decoded
  end
  local query = wire.parse_form(req.query)
  return wire.json_response(op(sb, ctx.route, body, query, ctx), ctx.request_id)
end

---------------------------------------------------------------------------------------------------
-- step logs, fetched unsigned from a step's logUrl

function amplify.serves_unsigned(req)
  return req.method == "GET" and req.path:sub(1, #LOG_PREFIX) == LOG_PREFIX
end

function amplify.handle_unsigned(sb, req)
  local app_id, branch_name, job_id, step = req.path:sub(#LOG_PREFIX + 1):match("^([^/]+)/([^/]+)/([^/]+)/([^/]+)$")
  local app = app_id and sb.state.aws.apps[app_id]
  local branch = app and app.branches[decode_segment(branch_name)]
  local job = branch and branch.jobs[job_id]
  if not job then
    return { status = 404, headers = { ["Content-Type"] = "application/xml" },
      body = "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>" }
  end
  local lines = {}
  for _, s in ipairs(job_view(job).steps) do
    if s.stepName == step then
      local env = wire.sorted_keys(branch.fields.environmentVariables)
      -- names only: values may be secrets
      lines[#lines + 1] = ("# %s of job %s on %s/%s (%s)"):format(step, job.id, app.id, branch.name, job.commit_id)
      lines[#lines + 1] = "# environment variables: " .. table.concat(env, ", ")
      lines[#lines + 1] = ("# status: %s"):format(s.status)
      if s.statusReason then lines[#lines + 1] = "# " .. s.statusReason end
    end
  end
  if #lines == 0 then
    return { status = 404, headers = { ["Content-Type"] = "application/xml" },
      body = "<Error><Code>NoSuchKey</Code><Message>The step has not started.</Message></Error>" }
  end
  return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = table.concat(lines, "\n") .. "\n" }
end

---------------------------------------------------------------------------------------------------
-- the deployed app, served from the branch's URL once a job succeeded

amplify.SITE_PREFIX = "/_app/"

local TYPES = { html = "text/html; charset=utf-8", js = "text/javascript", mjs = "text/javascript",
  css = "text/css", json = "application/json", svg = "image/svg+xml", png = "image/png", ico = "image/x-icon",
  txt = "text/plain; charset=utf-8", map = "application/json", woff2 = "font/woff2" }

function amplify.serves_site(req)
  return (req.method == "GET" or req.method == "HEAD") and req.path:sub(1, #amplify.SITE_PREFIX) == amplify.SITE_PREFIX
end

local function page(status, title, text)
  return { status = status, headers = { ["Content-Type"] = "text/html; charset=utf-8" },
    body = ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>\n")
      :format(wire.xml_escape(title), wire.xml_escape(title), wire.xml_escape(text)) }
end

function amplify.handle_site(sb, req)
  local app_id, branch_name, rest = req.path:sub(#amplify.SITE_PREFIX + 1):match("^([^/]+)/([^/]+)(.*)$")
  local app = app_id and sb.state.aws.apps[app_id]
  local branch = app and app.branches[decode_segment(branch_name)]
  sb:record("amplify", "Site", req)
  if not branch then return page(404, "Not Found", "No such Amplify app or branch in the sandbox.") end
  local deployed
  for n = branch.job_count, 1, -1 do
    local job = branch.jobs[tostring(n)]
    if job_view(job).status == "SUCCEED" then deployed = job break end
  end
  if not deployed then return page(404, "Not deployed", ("Branch %s of %s has no successful job yet."):format(branch.name, app.id)) end
  local sites = sb.state.aws.sites or {}
  local dir = sites[app.id] or sites[app.fields.name]
  if not dir then
    return page(200, ("%s (%s)"):format(app.fields.name or app.id, branch.name),
      ("Deployed by job %s (commit %s) in the stagehost sandbox."):format(deployed.id, tostring(deployed.commit_id)))
  end
  rest = decode_segment(rest or "")
  if rest == "" or rest:sub(-1) == "/" then rest = rest .. "index.html" end
  if rest:find("..", 1, true) then return page(400, "Bad Request", "The path is not allowed.") end
  local fs = require("stagehost.fs")
  local body = fs.read(dir .. rest)
  if not body and not rest:match("%.[%w]+$") then rest, body = "/index.html", fs.read(dir .. "/index.html") end -- SPA routes
  if not body then return page(404, "Not Found", "No such file.") end
  return { status = 200, headers = { ["Content-Type"] = TYPES[rest:match("%.(%w+)$") or ""] or "application/octet-stream" },
    body = body }
end

return amplify
