-- STS (Query protocol, 2011-06-15): GetCallerIdentity, AssumeRole, AssumeRoleWithWebIdentity.
-- Issued credentials are remembered in sb.state.aws.keys[access_key_id] = {secret, token,
-- expires, arn, user_id, account, role_arn} so a signature verifier can find their secret, and
-- GetCallerIdentity made with them answers with the assumed role, as AWS does.
local crypto = require "stagehost.crypto"
local json = require "stagehost.json"
local wire = require "stagehost.sandbox.wire"

local sts = {
  protocol = "query",
  version = "2011-06-15",
  namespace = "https://sts.amazonaws.com/doc/2011-06-15/",
  actions = {},
}

function sts.init(_) end

function sts.handle(sb, _, ctx)
  return wire.query_dispatch(sts, sb, ctx)
end

local function validation(field, value, constraint)
  wire.fail("ValidationError", ("1 validation error detected: Value %s at '%s' failed to satisfy constraint: %s")
    :format(value == nil and "null" or ("'" .. value .. "'"), field, constraint))
end

-- A stable id for a name: AWS ids (AIDA…, AROA…) do not change between calls for one principal.
local function principal_id(prefix, name)
  local digest = crypto.sha256(name)
  local out = {}
  for i = 1, 17 do
    local n = tonumber(digest:sub(i * 2 - 1, i * 2), 16) % 36
    out[i] = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"):sub(n + 1, n + 1)
  end
  return prefix .. table.concat(out)
end

-- arn:aws:iam::123456789012:role/path/name -> account, role name; nil when malformed
local function parse_role_arn(arn)
  if type(arn) ~= "string" then return nil end
  local account, resource = arn:match("^arn:aws[%w%-]*:iam::(%d%d%d%d%d%d%d%d%d%d%d%d):role/(.+)$")
  if not account or resource:find("/$") then return nil end
  return account, resource:match("([^/]+)$")
end

local function check_session_name(name)
  if name == nil then validation("roleSessionName", nil, "Member must not be null") end
  if #name < 2 or #name > 64 then
    validation("roleSessionName", name, "Member must have length between 2 and 64")
  end
  if name:find("[^%w_+=,%.@%-]") then
    validation("roleSessionName", name, "Member must satisfy regular expression pattern: [\\w+=,.@-]*")
  end
end

-- The credential's life: what the caller asked for (900..43200 s, default 3600), capped by
-- credential_seconds, the role's maximum session in this sandbox.
local function lifetime(sb, params)
  local requested = 3600
  if params.DurationSeconds then
    requested = math.tointeger(tonumber(params.DurationSeconds))
    if not requested then validation("durationSeconds", params.DurationSeconds, "Member must be a number") end
    if requested < 900 then
      validation("durationSeconds", params.DurationSeconds, "Member must have value greater than or equal to 900")
    elseif requested > 43200 then
      validation("durationSeconds", params.DurationSeconds, "Member must have value less than or equal to 43200")
    end
  end
  return math.min(requested, sb.state.aws.credential_seconds)
end

-- Issue and remember credentials for an assumed role session; returns their XML.
local function issue(sb, role_arn, role_name, account, session, params)
  local state = sb.state.aws
  local access_key = "ASIA" .. wire.random_upper(16)
  local secret = crypto.base64_encode(crypto.random(30))
  local token = "IQoJb3JpZ2luX2Vj" .. crypto.base64_encode(crypto.random(180))
  local expires = math.floor(wire.clock()) + lifetime(sb, params)
  local arn = ("arn:aws:sts::%s:assumed-role/%s/%s"):format(account, role_name, session)
  local user_id = principal_id("AROA", role_arn) .. ":" .. session
  state.keys[access_key] = { secret = secret, token = token, expires = expires, arn = arn, user_id = user_id,
    account = account, role_arn = role_arn }
  state.issued = state.issued + 1
  return table.concat{
    wire.raw_el("Credentials", table.concat{
      wire.el("AccessKeyId", access_key), wire.el("SecretAccessKey", secret),
      wire.el("SessionToken", token), wire.el("Expiration", wire.iso8601(expires, true)),
    }),
    wire.raw_el("AssumedRoleUser", wire.el("Arn", arn) .. wire.el("AssumedRoleId", user_id)),
  }
end

local function role_of(params)
  if params.RoleArn == nil then validation("roleArn", nil, "Member must not be null") end
  if #params.RoleArn < 20 then
    validation("roleArn", params.RoleArn, "Member must have length greater than or equal to 20")
  end
  local account, role_name = parse_role_arn(params.RoleArn)
  if not account then wire.fail("ValidationError", "Request ARN is invalid") end
  check_session_name(params.RoleSessionName)
  return account, role_name
end

function sts.actions.GetCallerIdentity(sb, _, ctx)
  local state = sb.state.aws
  local issued = state.keys[ctx.access_key or ""]
  local arn, user_id, account
  if issued and issued.arn then
    arn, user_id, account = issued.arn, issued.user_id, issued.account
  elseif state.caller then
    arn, user_id = state.caller.arn, state.caller.user_id
    account = state.caller.account or (arn and arn:match("^arn:[^:]+:[^:]+::(%d+):")) or state.account_id
  else
    arn = ("arn:aws:iam::%s:user/stagehost-sandbox"):format(state.account_id)
    user_id = principal_id("AIDA", ctx.access_key or "anonymous")
    account = state.account_id
  end
  return wire.el("Arn", arn) .. wire.el("UserId", user_id) .. wire.el("Account", account)
end

function sts.actions.AssumeRole(sb, params)
  local account, role_name = role_of(params)
  return issue(sb, params.RoleArn, role_name, account, params.RoleSessionName, params)
    .. wire.el("PackedPolicySize", params.Policy and 6 or nil)
end

-- The claims of a JWT, or nil when the token is not one (opaque tokens are accepted: the
-- sandbox trusts every identity provider).
local function jwt_claims(token)
  local payload = token:match("^[%w%-_]+%.([%w%-_]+)%.[%w%-_]*$")
  if not payload then return nil end
  local decoded = crypto.base64url_decode(payload)
  if not decoded then return nil end
  local ok, claims = pcall(json.decode, decoded)
  if ok and type(claims) == "table" then return claims end
  return nil
end

function sts.actions.AssumeRoleWithWebIdentity(sb, params)
  local token = params.WebIdentityToken
  if token == nil or token == "" then
    wire.fail("InvalidIdentityToken", "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)")
  end
  local account, role_name = role_of(params)
  local claims = jwt_claims(token)
  local subject, audience, provider
  if claims then
    if type(claims.exp) == "number" and claims.exp <= wire.clock() then
      wire.fail("ExpiredTokenException", ("Token expired: current date/time %d must be before the expiration date/time %d")
        :format(math.floor(wire.clock()), claims.exp))
    end
    subject = type(claims.sub) == "string" and claims.sub or nil
    audience = type(claims.aud) == "table" and claims.aud[1] or claims.aud
    local issuer = type(claims.iss) == "string" and claims.iss:gsub("^https://", "") or nil
    provider = issuer and ("arn:aws:iam::%s:oidc-provider/%s"):format(account, issuer)
  end
  -- an opaque token names no subject: derive a stable one so repeated calls agree
  subject = subject or crypto.sha256(token):sub(1, 24)
  provider = provider or params.ProviderId or ("arn:aws:iam::%s:oidc-provider/sandbox"):format(account)
  return issue(sb, params.RoleArn, role_name, account, params.RoleSessionName, params)
    .. wire.el("SubjectFromWebIdentityToken", subject)
    .. wire.el("Audience", type(audience) == "string" and audience or "sts.amazonaws.com")
    .. wire.el("Provider", provider)
end

return sts
