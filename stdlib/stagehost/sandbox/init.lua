-- The sandbox: one loopback server that emulates the AWS APIs stagehost uses (CloudFormation,
-- STS, Amplify, S3) and the GitHub REST API, so the whole flow runs with no account; it also
-- serves what gets deployed (REST APIs running their Lambda code with node: apigw.lua; Amplify
-- apps: amplify.lua) and stub OAuth and AI providers (stubs.lua). The tests use
-- it as their fake of AWS and GitHub, and its fidelity is checked with the real `aws` CLI and
-- @octokit/rest. It is as strict as the services: every AWS request must carry a SigV4
-- signature made with a key it knows, and GitHub answers only the tokens and repositories it
-- was given (401 "Bad credentials", 404 "Not Found" otherwise).
--
--   local sb = require("stagehost.sandbox").start{
--     port = 0,
--     aws = { keys = { AKIDEXAMPLE = "secret" },                      -- more keys it accepts
--             oidc = { ["token.actions.githubusercontent.com"] = { "sts.amazonaws.com" } } },
--     github = { repos = { "owner/name" }, tokens = { "ghp_..." }, user = "stagehost-bot" },
--   }
--   sb.url         -- "http://127.0.0.1:PORT": AWS_ENDPOINT_URL for every AWS service
--   sb.github_url  -- sb.url .. "/github": GITHUB_API_URL (a path prefix, as GitHub Enterprise has)
--   sb.credentials -- {access_key_id, secret_access_key}: a key pair it issued and accepts
--   sb.github_token, sb.github_repo -- a token it accepts (the first of github.tokens) and a
--                  repository it has (the first of github.repos, default "stagehost/sandbox")
--   sb.state       -- the emulated world: sb.state.aws, sb.state.github (tests may look and seed)
--   sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 400,
--                 code = "Throttling", message = "Rate exceeded", times = 2, headers = {} }
--   sb.requests    -- every request seen: { service =, action =, method =, path = }
--   sb.verify_signature -- the SigV4 check (on); a test may replace it, or set it to false
--   sb:use()       -- point this process's AWS and GitHub clients at it (stagehost run --sandbox)
--   sb:close()
-- More start options: persist = DIR (keep the world in DIR/world.lua and the request log in
-- DIR/requests.jsonl, loading what is there: persist.lua), step_seconds (the simulated time
-- one step of a stack or job takes), amplify_auto_create (apps and branches exist on first use),
-- faults = a list (or its JSON text: `stagehost run --sandbox` reads STAGEHOST_SANDBOX_FAULTS) of
-- sb:fail_next specs (cut = true: the request is served, then its answer cut off half-way), where
-- {service = "amplify", action = "StartJob", outcome = "PENDING" |
-- "FAILED" | "CANCELLED"} queues a job outcome instead (they replace the saved queue), and
-- {service = "cloudformation", action = "CreateChangeSet", outcome = "PENDING"} makes the next
-- change set stay CREATE_PENDING.
--   sb.oauth_url, sb.oauth_authorize_url, sb.ai_url -- the stub providers (stubs.lua); stack
--                  parameters named in sb.state.aws.parameter_defaults default to them
--   sb:app_url(app_id, branch) -- where the sandbox serves a deployed Amplify branch
--   sandbox.local_url(url) -- an execute-api or amplifyapp.com URL as the running sandbox serves it
--   sandbox.current() -- the sandbox sb:use() pointed this process at, or nil
local http = require("stagehost.http")
local log = require("stagehost.log")

local sandbox = {}
local current -- the sandbox sb:use() pointed this process at

local Sandbox = {}
Sandbox.__index = Sandbox

-- Queue a fault: the next `times` requests matching service (and action, when given) get it
-- instead of their normal answer. The service module renders it in its own protocol.
function Sandbox:fail_next(fault)
  if type(fault) ~= "table" or type(fault.service) ~= "string" then
    require("stagehost.errors").argument(1, "sandbox:fail_next", "table with service expected")
  end
  local f = {}
  for k, v in pairs(fault) do f[k] = v end
  f.times = f.times or 1
  table.insert(self.faults, f)
end

-- The queued fault for this service and action, consumed; nil when none applies. A fault with
-- cut = true is not the service's to render (they ask without `cut`): the request is served as
-- usual, then the server's handler asks with cut = true and sends half of the answer before
-- dropping the connection, so the world has changed but the client never learns it -- what a
-- network failure after the fact looks like (the handler's error is logged by http.serve).
function Sandbox:take_fault(service, action, cut)
  for i, f in ipairs(self.faults) do
    if f.service == service and (f.action == nil or f.action == action) and (f.cut == true) == (cut == true) then
      f.times = f.times - 1
      if f.times <= 0 then table.remove(self.faults, i) end
      return f
    end
  end
  return nil
end

function Sandbox:record(service, action, req)
  self.requests[#self.requests + 1] = { service = service, action = action, method = req.method, path = req.path,
    time = require("stagehost.sandbox.wire").clock() }
end

-- sb:use{region =, repo =} -> restore: from now on every AWS and GitHub client of this process
-- talks to the sandbox (with credentials it issued and verifies), whatever the environment says.
-- The repository (opts.repo, else GITHUB_REPOSITORY, else sb.github_repo) is made to exist, so
-- a --sandbox run of a pipeline written for its own repository finds it. restore() puts the
-- previous configuration back.
function Sandbox:use(opts)
  opts = opts or {}
  local repo = opts.repo or os.getenv("GITHUB_REPOSITORY") or self.github_repo
  require("stagehost.sandbox.github").add_repo(self, repo)
  log.mask(self.credentials.secret_access_key)
  log.mask(self.github_token)
  -- waiters poll at the pace of the simulated clock, not at AWS's seconds
  local step = self.state.aws.step_seconds
  local aws_before = require("stagehost.aws").configure{ endpoint = self.url, region = opts.region or "us-east-1",
    poll = { min = math.max(0.01, step / 2), max = math.max(0.05, step * 2) },
    credentials = { access_key_id = self.credentials.access_key_id,
      secret_access_key = self.credentials.secret_access_key, source = "sandbox" } }
  local github_before = require("stagehost.github").configure{ api_url = self.github_url, token = self.github_token,
    repo = repo }
  current = self
  return function()
    if current == self then current = nil end
    require("stagehost.aws").configure(aws_before)
    require("stagehost.github").configure(github_before)
  end
end

function Sandbox:close()
  if self.persist and self.server then require("stagehost.sandbox.persist").save(self) end
  if self.server then
    self.server:close()
    self.server = nil
  end
  if current == self then current = nil end
  if self.work_dir then
    require("stagehost.fs").remove(self.work_dir, { recursive = true })
    self.work_dir = nil
  end
end

-- sb:app_url(app_id, branch) -> the URL the sandbox serves that Amplify branch at
function Sandbox:app_url(app_id, branch)
  return ("%s%s%s/%s/"):format(self.url, require("stagehost.sandbox.amplify").SITE_PREFIX, app_id,
    require("stagehost.util.url").encode(branch))
end

-- sandbox.current() -> the sandbox this process's clients use (sb:use()), or nil
function sandbox.current() return current end

-- sandbox.local_url(url[, sb]) -> url with an API Gateway (https://ID.execute-api.REGION.amazonaws.com)
-- or Amplify (https://BRANCH.APPID.amplifyapp.com) host replaced by the sandbox's address for
-- it; anything else unchanged. sb defaults to sandbox.current().
function sandbox.local_url(url, sb)
  sb = sb or current
  if not sb or type(url) ~= "string" then return url end
  url = require("stagehost.sandbox.apigw").local_urls(sb, url)
  return (url:gsub("^https://([%w%-]+)%.([%w]+)%.amplifyapp%.com/?", function(label, app_id)
    local app = sb.state.aws.apps and sb.state.aws.apps[app_id]
    if not app then return nil end
    for name, branch in pairs(app.branches) do
      if branch.fields.displayName == label or name == label then return sb:app_url(app_id, name) end
    end
  end))
end

local GITHUB_PREFIX = "/github"
local changes_world

-- The start option faults: sb:fail_next for each, Amplify job outcomes into their queue.
local function add_faults(sb, faults)
  if type(faults) == "string" then
    local decoded, why = require("stagehost.json").decode(faults)
    if type(decoded) ~= "table" then error(("not a JSON list of faults (%s)"):format(tostring(why)), 0) end
    faults = decoded
  end
  if type(faults) ~= "table" then error("a list of faults expected", 0) end
  local outcomes
  for i, f in ipairs(faults) do
    if type(f) ~= "table" or type(f.service) ~= "string" then error(("fault %d has no service"):format(i), 0) end
    if f.service == "cloudformation" and f.action == "CreateChangeSet" and f.outcome == "PENDING" then
      sb.change_set_faults = (sb.change_set_faults or 0) + 1
    elseif f.outcome ~= nil then
      if f.outcome ~= "PENDING" and f.outcome ~= "FAILED" and f.outcome ~= "CANCELLED" then
        error(("fault %d: outcome must be PENDING, FAILED or CANCELLED, got %s"):format(i, tostring(f.outcome)), 0)
      end
      outcomes = outcomes or {}
      outcomes[#outcomes + 1] = f.outcome
    else
      sb:fail_next(f)
    end
  end
  if outcomes then sb.state.aws.amplify_next_jobs = outcomes end
  return outcomes
end

-- Whether a request may have changed the world, so it must be saved before the answer goes:
-- anything but a read; a read that sees a change set created (it must stay created for the next
-- host); and, at most once a second, a read while a stack operation runs. Polling advances an
-- operation on simulated time, but a loaded world rebuilds it from the clock (persist.lua), so
-- saving every poll would only keep event ids that a rebuilt operation makes anew anyway.
-- Other reads (and the deployed API's calls) are saved with the next change, and by close.
local READS = { "^Describe", "^List", "^Get", "^Validate", "^HeadObject$", "^HeadBucket$", "^Site$" }
local PLAN_SAVE_EVERY = 1 -- seconds
function changes_world(sb, req, entry)
  local being_made = false -- a change set being created, or seen created by this request
  for _, cs in pairs(sb.state.aws.change_sets or {}) do
    being_made = being_made or (cs.settled ~= true and cs.execution == nil)
    if cs.settled == "now" then cs.settled = true end
  end
  if being_made then return true end
  -- the deployed API's and the stubs' calls change the app's own files, not the world
  local service = entry and entry.service
  local read = req.method == "GET" or req.method == "HEAD" or service == "apigateway" or service == "stub"
  local action = entry and entry.action
  if not read and type(action) == "string" then
    for _, pattern in ipairs(READS) do read = read or action:match(pattern) ~= nil end
  end
  if not read then return true end
  for _, stack in pairs(sb.state.aws.stacks or {}) do
    if stack.plan then
      local now = require("stagehost.task").now()
      if now - (sb.plan_saved_at or -math.huge) < PLAN_SAVE_EVERY then return false end
      sb.plan_saved_at = now
      return true
    end
  end
  return false
end

-- Which part of the sandbox answers a request: GitHub under /github, the deployed APIs, the
-- stub providers and the Amplify apps under their prefixes, AWS's APIs for the rest.
local function route(sb, req)
  local path = req.path
  if path == GITHUB_PREFIX or path:sub(1, #GITHUB_PREFIX + 1) == GITHUB_PREFIX .. "/" then
    req.path = path:sub(#GITHUB_PREFIX + 1)
    if req.path == "" then req.path = "/" end
    return require("stagehost.sandbox.github").handle(sb, req)
  end
  local apigw = require("stagehost.sandbox.apigw")
  if path:sub(1, #apigw.PREFIX) == apigw.PREFIX then return apigw.handle(sb, req) end
  local stubs = require("stagehost.sandbox.stubs")
  if path:sub(1, #stubs.PREFIX) == stubs.PREFIX then return stubs.handle(sb, req) end
  local amplify = require("stagehost.sandbox.amplify")
  if amplify.serves_site(req) then return amplify.handle_site(sb, req) end
  return require("stagehost.sandbox.aws").handle(sb, req)
end

-- sandbox.signature_verifier(sb) -> a function for sb.verify_signature that checks SigV4 with
-- the keys in sb.state.aws.keys (the ones STS issued, and any a test adds).
function sandbox.signature_verifier(sb)
  return require("stagehost.sandbox.signature").verifier(sb)
end

-- sandbox.start{ host = "127.0.0.1", port = 0, aws = {keys, oidc}, github = {repos, tokens,
-- user} } -> sandbox (see the top of this file)
function sandbox.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    require("stagehost.errors").argument(1, "sandbox.start", "table expected, got %s", type(opts))
  end
  for _, name in ipairs{ "aws", "github" } do
    if opts[name] ~= nil and type(opts[name]) ~= "table" then
      require("stagehost.errors").argument(1, "sandbox.start", "%s must be a table, got %s", name, type(opts[name]))
    end
  end
  if opts.persist ~= nil and (type(opts.persist) ~= "string" or opts.persist == "") then
    require("stagehost.errors").argument(1, "sandbox.start", "persist must be a directory path, got %s", type(opts.persist))
  end
  if opts.step_seconds ~= nil and not (tonumber(opts.step_seconds) and tonumber(opts.step_seconds) > 0) then
    require("stagehost.errors").argument(1, "sandbox.start", "step_seconds must be a number of seconds > 0, got %s",
      tostring(opts.step_seconds))
  end
  local self = setmetatable({ faults = {}, requests = {}, state = { aws = {}, github = {} } }, Sandbox)
  local aws = require("stagehost.sandbox.aws")
  local github = require("stagehost.sandbox.github")
  local ok, err = pcall(function()
    aws.init(self, opts.aws or {})
    github.init(self, opts.github or {})
    if opts.step_seconds ~= nil then self.state.aws.step_seconds = tonumber(opts.step_seconds) end
    if opts.amplify_auto_create then self.state.aws.amplify_auto_create = true end
  end)
  if not ok then require("stagehost.errors").argument(1, "sandbox.start", "%s", (tostring(err):gsub("^[^:]*:%d+: ", ""))) end
  local port = opts.port
  if port == nil and opts.persist then
    -- the port of the saved world, when free: URLs a resumed run kept stay good
    local saved = tonumber(require("stagehost.fs").read(opts.persist .. "/port") or "")
    if saved and pcall(function() http.serve{ host = opts.host or "127.0.0.1", port = saved, handler = function() end }:close() end) then
      port = saved
    end
  end
  self.server = http.serve{
    host = opts.host or "127.0.0.1",
    port = port or 0,
    body_limit = 64 * 1024 * 1024, -- S3 objects: bundled functions, a frontend's files
    handler = function(req)
      local seen = #self.requests
      local res = route(self, req)
      local entry = self.requests[seen + 1]
      if self.persist and changes_world(self, req, entry) then
        require("stagehost.sandbox.persist").save(self)
      end
      if entry and #self.faults > 0 and self:take_fault(entry.service, entry.action, true) then
        -- a fault {cut = true}: half of the answer, then the connection closes
        if type(res) == "string" then res = { status = 200, body = res } end
        local headers = {}
        for k, v in pairs(res.headers or {}) do
          if k:lower() ~= "content-length" then headers[k] = v end
        end
        local s = req:stream{ status = res.status or 200, headers = headers }
        local body = res.body or ""
        s:write(body:sub(1, #body // 2) .. " ")
        error(("sandbox: fault: connection cut mid-response to %s %s"):format(entry.service, tostring(entry.action)), 0)
      end
      return res
    end,
  }
  self.port = self.server.port
  self.url = ("http://%s:%d"):format(opts.host or "127.0.0.1", self.port)
  self.github_url = self.url .. GITHUB_PREFIX
  local stubs = require("stagehost.sandbox.stubs")
  stubs.init(self)
  self.state.aws.parameter_defaults = self.state.aws.parameter_defaults or {
    AiUrl = self.ai_url, AiEndpoint = self.ai_url, AiApiUrl = self.ai_url, AiCompleteUrl = self.ai_url,
    OAuthTokenUrl = self.oauth_url, OAuthUrl = self.oauth_url, OAuthTokenEndpoint = self.oauth_url,
    OAuthAuthorizeUrl = self.oauth_authorize_url,
  }
  local outcomes
  if opts.faults ~= nil then
    local ok_faults, why = pcall(add_faults, self, opts.faults)
    outcomes = ok_faults and why or nil
    if not ok_faults then
      self:close()
      require("stagehost.errors").config("sandbox: faults: %s", tostring(why):gsub("^[^:]*:%d+: ", ""))
    end
  end
  if opts.persist then
    local loaded_ok, loaded = pcall(require("stagehost.sandbox.persist").open, self, opts.persist)
    if not loaded_ok then
      self.persist = nil -- the damaged world stays as it was, for whoever looks at it
      self:close()
      error(loaded, 0)
    end
    -- the stubs' addresses are this server's, whatever the saved world had
    stubs.init(self)
    if outcomes then self.state.aws.amplify_next_jobs = outcomes end
    require("stagehost.fs").write(opts.persist .. "/port", tostring(self.port))
    for key, value in pairs(self.state.aws.parameter_defaults or {}) do
      local kind = type(value) == "string" and (value:match("/_stub/oauth/authorize$") and "oauth_authorize_url"
        or value:match("/_stub/oauth/") and "oauth_url" or value:match("/_stub/ai/") and "ai_url")
      if kind then self.state.aws.parameter_defaults[key] = self[kind] end
    end
  end
  -- queued here, after a saved world was loaded: they belong to this host's run
  if self.change_set_faults then
    self.state.aws.change_set_next = {}
    for i = 1, self.change_set_faults do self.state.aws.change_set_next[i] = "PENDING" end
  end
  log.debug(("sandbox: AWS and GitHub emulator on %s"):format(self.url))
  return self
end

return sandbox
