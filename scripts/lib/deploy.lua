-- The cloud steps the flows share: package the app's functions and upload them (as `sam
-- package`), preview and run a CloudFormation change set, re-attach to it after a resume,
-- deploy the frontend on Amplify, and the record of a release that rollback redeploys.
local aws = require("stagehost.aws")
local crypto = require("stagehost.crypto")
local json = require("stagehost.json")
local log = require("stagehost.log")
local sam = require("stagehost.sam")

local deploy = {}

-- A template parameter's value: --var NAME=VALUE, else the environment's parameters in
-- policy.lua (and, in a sandbox run, policy.sandbox_parameters over them), else the
-- template's default (left out of the change set). In a sandbox run the emulator gives
-- parameters nobody set its stub providers' addresses (OAuthTokenUrl, AiApiUrl).
local function parameters(ctx, app, template)
  local policy = require("policy")
  local out = {}
  for name, def in pairs(template.Parameters or {}) do
    if type(def) == "table" and def.NoEcho and ctx.vars[name] ~= nil then
      error(("%s is a NoEcho (secret) parameter: give it in the environment as %s, not as --var (a --var is kept in run.json and the state database)")
        :format(name, deploy.secret_env_name(name)), 0)
    end
    local v = ctx.vars[name]
    if v == nil and ctx.run.sandbox then v = (policy.sandbox_parameters or {})[name] end
    if v == nil then v = (app.policy.parameters or {})[name] end
    if v ~= nil then out[name] = tostring(v) end
  end
  return out
end

-- AiApiKey -> AI_API_KEY: where a NoEcho parameter's value comes from.
function deploy.secret_env_name(name)
  return (name:gsub("(%l)(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2"):upper())
end

-- The values of the template's NoEcho parameters found in the environment, masked from now on.
-- They are read at each call and never stored: outputs, run.json and release records hold only
-- the other parameters, and a rollback reads them from the environment again.
function deploy.secret_parameters(template)
  local out = {}
  for name, def in pairs(type(template) == "table" and template.Parameters or {}) do
    local value = type(def) == "table" and def.NoEcho and os.getenv(deploy.secret_env_name(name))
    if value and value ~= "" then
      log.mask(value)
      out[name] = value
    end
  end
  return out
end

-- The parameters of a change set: the stored ones and the secret ones of the environment.
function deploy.with_secrets(public, body)
  local all = {}
  for k, v in pairs(public or {}) do all[k] = v end
  for k, v in pairs(deploy.secret_parameters(json.decode(body))) do all[k] = v end
  return all
end

-- deploy.package(ctx, app, template) -> {body, sha256, template_key, parameters, functions, changed}
-- The packaged template goes to the bucket too, named by its hash: a rollback redeploys it.
function deploy.package(ctx, app, template)
  local s3 = aws.s3{ region = app.region }
  local p = sam.package{ dir = app.dir, bucket = app.bucket, prefix = app.env, region = app.region, s3 = s3 }
  local sha = crypto.hex_encode(crypto.sha256(p.body))
  local key = ("%s/templates/%s.json"):format(app.env, sha)
  if not s3:head_object{ bucket = app.bucket, key = key } then
    s3:put_object{ bucket = app.bucket, key = key, body = p.body, content_type = "application/json" }
  end
  local functions, count = {}, 0
  for id, f in pairs(p.functions) do
    functions[id] = { key = f.key, sha256 = f.sha256, uploaded = f.uploaded }
    count = count + 1
  end
  log.info(("packaged %d function(s) into s3://%s; %s"):format(count, app.bucket,
    #p.changed > 0 and ("changed: " .. table.concat(p.changed, ", ")) or "none changed"))
  return { body = p.body, sha256 = sha, template_key = key, parameters = parameters(ctx, app, template),
    functions = functions, changed = p.changed }
end

-- A change set as a Markdown table a reviewer reads.
function deploy.preview_markdown(stack, changes, kind)
  local lines = { ("### Change set for stack `%s` (%s)"):format(stack, kind or "UPDATE"), "",
    "| Action | Resource | Type | Replacement |", "|---|---|---|---|" }
  for _, c in ipairs(changes) do
    lines[#lines + 1] = ("| %s | `%s` | %s | %s |"):format(c.action or "?", c.logical_id or "?", c.type or "?",
      c.replacement == "True" and "**yes**" or (c.replacement == "Conditional" and "maybe" or "no"))
  end
  if #changes == 0 then lines[#lines + 1] = "| — | no changes | | |" end
  return table.concat(lines, "\n") .. "\n"
end

-- deploy.change_set(ctx, app, packaged) -> {id, type, no_changes, changes, preview_markdown}
function deploy.change_set(ctx, app, packaged)
  local cfn = aws.cloudformation{ region = app.region }
  local cs = cfn:create_change_set{ stack_name = app.stack, body = packaged.body,
    parameters = deploy.with_secrets(packaged.parameters, packaged.body),
    description = ("stagehost run %s (%s)"):format(ctx.run.id, ctx.run.tag or "no tag"),
    tags = { ["stagehost:environment"] = app.env } }
  -- a change set CloudFormation never gets to (stuck CREATE_PENDING) fails validate in time
  local d = cfn:wait_change_set(cs, { timeout = tonumber(ctx.vars.change_set_timeout) or 600 })
  if d.no_changes then
    cfn:delete_change_set(cs)
    ctx.log.info(("stack %s: no changes (the same template and parameters are deployed)"):format(app.stack))
    return { no_changes = true, type = cs.type, changes = {},
      preview_markdown = ("### Stack `%s`: no changes\n\nThe deployed template and parameters are the same.\n"):format(app.stack) }
  end
  local md = deploy.preview_markdown(app.stack, d.changes, cs.type)
  ctx.log.info(("change set %s (%s):\n%s"):format(cs.name, cs.type, d.preview))
  return { id = cs.id, type = cs.type, changes = d.changes, preview_markdown = md }
end

-- deploy.execute(ctx, app, change_set_id) -> the stack's wait result. The change set is
-- executed once: a checkpoint says so before the call, and a resumed stage asks
-- CloudFormation whether it ran, then re-attaches to the stack's wait instead of executing
-- again.
function deploy.execute(ctx, app, change_set_id)
  local cfn = aws.cloudformation{ region = app.region }
  if ctx:checkpoint("executing") == change_set_id then
    local d = cfn:describe_change_set(change_set_id, app.stack)
    if d.execution_status and d.execution_status ~= "AVAILABLE" then
      ctx.log.info(("re-attaching to stack %s: change set already %s"):format(app.stack, d.execution_status))
    else
      cfn:execute_change_set(change_set_id, app.stack)
    end
  else
    ctx:checkpoint("executing", change_set_id)
    local ok, err = pcall(cfn.execute_change_set, cfn, change_set_id, app.stack)
    if not ok then
      -- the answer was lost (a cut connection, a timeout): whether CloudFormation took the
      -- call is the change set's execution status; a second ExecuteChangeSet is not safe
      local asked, d = pcall(cfn.describe_change_set, cfn, change_set_id, app.stack)
      if not (asked and d.execution_status and d.execution_status ~= "AVAILABLE") then error(err, 0) end
      ctx.log.warn(("ExecuteChangeSet's answer was lost (%s), but the change set is %s: waiting for the stack")
        :format(require("stagehost.errors").first_line(err), d.execution_status))
    end
  end
  local r = cfn:wait_stack(app.stack, { timeout = 3600 })
  if not r.ok then
    local reasons = {}
    for _, f in ipairs(r.failed_resources or {}) do
      reasons[#reasons + 1] = ("%s (%s): %s"):format(f.logical_id, f.type, f.reason or f.status)
    end
    error(("stack %s ended %s%s"):format(app.stack, r.status,
      #reasons > 0 and (": " .. table.concat(reasons, "; ")) or (r.reason and (": " .. r.reason) or "")), 0)
  end
  return r
end

-- deploy.outputs(app) -> the stack's outputs {Key = value}
function deploy.outputs(app)
  return aws.cloudformation{ region = app.region }:outputs(app.stack)
end

-- The Amplify app of the policy (by name) and the environment's branch, created on first use.
-- -> amp client, app id
function deploy.amplify_branch(app)
  local amp = aws.amplify{ region = app.region }
  local found = amp:find_app(app.amplify_app)
  if not found then
    found = amp:create_app{ name = app.amplify_app, platform = "WEB" }
    log.info(("amplify: created app %s (%s)"):format(app.amplify_app, found.appId))
  end
  local ok = pcall(amp.get_branch, amp, found.appId, app.branch)
  if not ok then
    amp:create_branch(found.appId, app.branch, { stage = app.env == "production" and "PRODUCTION" or "DEVELOPMENT" })
    log.info(("amplify: created branch %s of %s"):format(app.branch, app.amplify_app))
  end
  return amp, found.appId
end

-- The newest job id of a branch (Amplify numbers a branch's jobs 1, 2, ...), 0 when it has none.
local function newest_job(amp, app_id, branch)
  local doc = amp:call("GET", ("/apps/%s/branches/%s/jobs"):format(app_id, branch), "ListJobs")
  local newest = 0
  for _, j in ipairs(doc.jobSummaries or {}) do newest = math.max(newest, tonumber(j.jobId) or 0) end
  return newest
end

-- deploy.frontend(ctx, app, variables, opts) -> {job_id, status, url, steps}. The job id is a
-- checkpoint: a resumed stage watches the job it started instead of starting another. So is the
-- branch's newest job before StartJob: a host killed after Amplify took the job but before its
-- id was written leaves a resumed stage a job newer than that one, which it watches.
-- opts.job_type/job_id: "RETRY" of a recorded job (a rollback).
function deploy.frontend(ctx, app, variables, opts)
  opts = opts or {}
  local amp, app_id = deploy.amplify_branch(app)
  amp:update_branch(app_id, app.branch, { environment_variables = variables })
  local job_id = ctx:checkpoint("amplify_job")
  local before = ctx:checkpoint("amplify_jobs_before")
  if not job_id and before then
    local newest = newest_job(amp, app_id, app.branch)
    if newest > before then
      job_id = tostring(newest)
      ctx:checkpoint("amplify_job", job_id)
    end
  end
  if not job_id and ctx.run.sandbox then deploy.sandbox_site(ctx, app, app_id, variables) end
  if not job_id then
    local newest_before = newest_job(amp, app_id, app.branch)
    ctx:checkpoint("amplify_jobs_before", newest_before)
    local ok, job = pcall(amp.start_job, amp, app_id, app.branch, { job_type = opts.job_type, job_id = opts.job_id,
      commit_id = ctx.run.commit, job_reason = ("stagehost run %s"):format(ctx.run.id) })
    if ok then
      job_id = job.jobId
    else
      -- the answer was lost: a job newer than the newest before is the one Amplify started
      local asked, newest = pcall(newest_job, amp, app_id, app.branch)
      if not (asked and newest > newest_before) then error(job, 0) end
      job_id = tostring(newest)
      ctx.log.warn(("StartJob's answer was lost (%s), but Amplify started job %s: watching it")
        :format(require("stagehost.errors").first_line(job), job_id))
    end
    ctx:checkpoint("amplify_job", job_id)
  else
    ctx.log.info(("re-attaching to Amplify job %s"):format(job_id))
  end
  local r = amp:wait_job(app_id, app.branch, job_id, { timeout = opts.timeout or 1800,
    pending_timeout = opts.pending_timeout or 600 })
  if not r.ok then
    local f = r.failed_step
    error(("Amplify job %s of %s/%s ended %s%s"):format(job_id, app.amplify_app, app.branch, r.status,
      f and (": step %s %s%s"):format(f.name, f.status, f.reason and (" (" .. f.reason .. ")") or "") or ""), 0)
  end
  local url = amp:branch_url(app_id, app.branch)
  if ctx.run.sandbox then url = require("stagehost.sandbox").local_url(url) end
  return { app_id = app_id, job_id = job_id, status = r.status, url = url }
end

-- Amplify Hosting builds the site from amplify.yml on its own machines, with the branch's
-- variables; the emulator builds nothing. So a sandbox run builds it here the same way
-- (npm run build with those variables) and gives the emulator the files to serve once the job
-- succeeds. Each run keeps its own copy: a rollback serves the files of its release again.
function deploy.sandbox_site(ctx, app, app_id, variables)
  local proc = require("stagehost.proc")
  proc.run{ "npm", "run", "--silent", "build", cwd = app.dir, env = variables, name = "frontend build", timeout = 600,
    check = true }
  local site = ctx.dir .. "/site"
  proc.run{ "rm", "-rf", site, check = true }
  proc.run{ "cp", "-R", app.dir .. "/dist", site, check = true }
  local sb = require("stagehost.sandbox").current()
  sb.state.aws.sites = sb.state.aws.sites or {}
  sb.state.aws.sites[app_id] = site
end

-- What a rollback needs to put this release back, kept as the `release.json` artifact of the
-- stage that found it good (mark-release-ready, or development's smoke check); read back by
-- deploy.find_release.
function deploy.record_release(ctx, app)
  local rec = deploy.release_record(ctx, app)
  ctx:artifact("release.json", rec)
  return rec
end

function deploy.release_record(ctx, app)
  local v, infra, front = ctx.outputs.validate, ctx.outputs["deploy-infrastructure"], ctx.outputs["deploy-frontend"]
  return { run = ctx.run.id, tag = ctx.run.tag, commit = ctx.run.commit, environment = app.env, stack = app.stack,
    bucket = app.bucket, template_key = v and v.template_key, parameters = v and v.parameters,
    amplify_app = app.amplify_app, branch = app.branch, amplify_job = front and front.job_id,
    outputs = infra and infra.outputs }
end

-- The newest successful release of an environment (or the one of run/tag `which`), read from
-- the run records in the state directory: -> record, or nil and why.
function deploy.find_release(ctx, env, which, before_run)
  local fs = require("stagehost.fs")
  local state = ctx.dir and ctx.dir:match("^(.*)/runs/[^/]+$")
  if not state then return nil, "this run has no state directory" end
  local ids = fs.list(state .. "/runs") or {}
  table.sort(ids, function(a, b) return a > b end)
  for _, id in ipairs(ids) do
    if id ~= ctx.run.id and (not before_run or id < before_run) then
      local stages = fs.list(("%s/runs/%s/artifacts"):format(state, id)) or {}
      for _, stage in ipairs(stages) do
        local text = fs.read(("%s/runs/%s/artifacts/%s/release.json"):format(state, id, stage))
        local rec = text and json.decode(text)
        if type(rec) == "table" and rec.environment == env and (which == nil or which == rec.run or which == rec.tag) then
          return rec
        end
      end
    end
  end
  return nil, ("no recorded release of %s%s in %s"):format(env, which and (" named " .. which) or "", state)
end

return deploy
