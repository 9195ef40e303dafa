-- The sandbox: one loopback server that emulates the AWS APIs stagehost uses (CloudFormation,
-- STS, Amplify) and the GitHub REST API, so the whole flow runs with no account. The tests use
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
local http = require("stagehost.http")
local log = require("stagehost.log")

local sandbox = {}

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

-- The queued fault for this service and action, consumed; nil when none applies.
function Sandbox:take_fault(service, action)
  for i, f in ipairs(self.faults) do
    if f.service == service and (f.action == nil or f.action == action) then
      f.times = f.times - 1
      if f.times <= 0 then table.remove(self.faults, i) end
      return f
    end
  end
  return nil
end

function Sandbox:record(service, action, req)
  self.requests[#self.requests + 1] = { service = service, action = action, method = req.method, path = req.path }
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
  local aws_before = require("stagehost.aws").configure{ endpoint = self.url, region = opts.region or "us-east-1",
    credentials = { access_key_id = self.credentials.access_key_id,
      secret_access_key = self.credentials.secret_access_key, source = "sandbox" } }
  local github_before = require("stagehost.github").configure{ api_url = self.github_url, token = self.github_token,
    repo = repo }
  return function()
    require("stagehost.aws").configure(aws_before)
    require("stagehost.github").configure(github_before)
  end
end

function Sandbox:close()
  if self.server then
    self.server:close()
    self.server = nil
  end
end

local GITHUB_PREFIX = "/github"

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
  local self = setmetatable({ faults = {}, requests = {}, state = { aws = {}, github = {} } }, Sandbox)
  local aws = require("stagehost.sandbox.aws")
  local github = require("stagehost.sandbox.github")
  local ok, err = pcall(function()
    aws.init(self, opts.aws or {})
    github.init(self, opts.github or {})
  end)
  if not ok then require("stagehost.errors").argument(1, "sandbox.start", "%s", (tostring(err):gsub("^[^:]*:%d+: ", ""))) end
  self.server = http.serve{
    host = opts.host or "127.0.0.1",
    port = opts.port or 0,
    handler = function(req)
      if req.path == GITHUB_PREFIX or req.path:sub(1, #GITHUB_PREFIX + 1) == GITHUB_PREFIX .. "/" then
        req.path = req.path:sub(#GITHUB_PREFIX + 1)
        if req.path == "" then req.path = "/" end
        return github.handle(self, req)
      end
      return aws.handle(self, req)
    end,
  }
  self.port = self.server.port
  self.url = ("http://%s:%d"):format(opts.host or "127.0.0.1", self.port)
  self.github_url = self.url .. GITHUB_PREFIX
  log.debug(("sandbox: AWS and GitHub emulator on %s"):format(self.url))
  return self
end

return sandbox
