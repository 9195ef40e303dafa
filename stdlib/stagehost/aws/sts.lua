-- STS (Query protocol, 2011-06-15): who am I, and the role assumptions the credential chain
-- needs (AssumeRole for profiles with role_arn, AssumeRoleWithWebIdentity for GitHub OIDC).
local aws = require("stagehost.aws")
local errors = require("stagehost.errors")
local xml = require("stagehost.xml")
local log = require("stagehost.log")

local VERSION = "2011-06-15"

local sts = {}
-- the global endpoint is legacy; the SDKs use a regional one (us-east-1 when nothing names a
-- region), and so do we
local Client
Client, sts.new = aws.client_class("aws.sts", { region = "us-east-1" })

function Client:call(action, params, extra)
  -- assuming a role twice only issues a second set of credentials: safe to repeat
  local opts = { credentials = self.credentials, endpoint = self.endpoint, retry_base = self.retry_base,
    idempotent = true }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return aws.query("sts", self.region, action, VERSION, params, opts)
end

-- Credentials from an STS answer, masked before anything can print them.
local function credentials_of(result, source)
  local c = xml.path(result, "Credentials")
  if not c then
    error(aws.error{ service = "sts", code = "MalformedResponse", message = "no Credentials in the answer" }, 3)
  end
  local creds = {
    access_key_id = xml.text(c, "AccessKeyId"),
    secret_access_key = xml.text(c, "SecretAccessKey"),
    session_token = xml.text(c, "SessionToken"),
    expires = aws.parse_time(xml.text(c, "Expiration")),
    source = source,
  }
  if not creds.access_key_id or not creds.secret_access_key then
    error(aws.error{ service = "sts", code = "MalformedResponse", message = "incomplete Credentials in the answer" }, 3)
  end
  log.mask(creds.secret_access_key)
  if creds.session_token then log.mask(creds.session_token) end
  return creds
end

function Client:get_caller_identity()
  local r = self:call("GetCallerIdentity")
  return { account = xml.text(r, "Account"), arn = xml.text(r, "Arn"), user_id = xml.text(r, "UserId") }
end

-- Both assumptions take a role and a session name and answer with credentials.
local function assume(self, action, opts, extra, call_opts, source)
  if type(opts) ~= "table" then
    errors.argument_at(3, 1, action, "table expected, got %s", type(opts))
  end
  aws.parse_arn(opts.role_arn)
  local params = { RoleArn = opts.role_arn, DurationSeconds = opts.duration,
    RoleSessionName = opts.session_name or ("stagehost-" .. os.time()) }
  for k, v in pairs(extra) do params[k] = v end
  return credentials_of(self:call(action, params, call_opts), source .. " " .. opts.role_arn)
end

-- assume_role{role_arn, session_name, duration, external_id} -> credentials
function Client:assume_role(opts)
  return assume(self, "AssumeRole", opts, { ExternalId = opts and opts.external_id }, nil, "assumed role")
end

-- assume_role_with_web_identity{role_arn, token, session_name, duration} -> credentials.
-- The call is unsigned: the token is the proof.
function Client:assume_role_with_web_identity(opts)
  return assume(self, "AssumeRoleWithWebIdentity", opts, { WebIdentityToken = opts and opts.token },
    { unsigned = true }, "web identity")
end

return sts
