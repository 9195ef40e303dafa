-- STS (Query protocol, 2011-06-15): GetCallerIdentity, AssumeRole, AssumeRoleWithWebIdentity
-- (a JWT from an OIDC provider of sb.state.aws.oidc, for one of its audiences, unexpired).
-- Issued credentials are remembered in sb.state.aws.keys[access_key_id] = {secret, token,
-- expires, arn, user_id, account, role_arn} so a signature verifier can find their secret, and
-- GetCallerIdentity made with them answers with the assumed role, as AWS does.
local crypto = require("stagehost.crypto")
local json = require("stagehost.json")
local wire = require("stagehost.sandbox.wire")

local sts = wire.query_service("2011-06-15", "https://sts.amazonaws.com/doc/2011-06-15/", {
  AssumeRole = { "RoleArn", "RoleSessionName" },
  AssumeRoleWithWebIdentity = { "RoleArn", "RoleSessionName", "WebIdentityToken" },
})

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

-- What STS answers for a token it cannot accept.
local NOT_A_JWT = "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)"
local function invalid_token(message) wire.fail("InvalidIdentityToken", message) end

-- The header and claims of a JWT (header.payload.signature, each base64url, the first two JSON
-- objects); nil when the token is not one. The signature itself is not checked: the sandbox
-- cannot fetch the provider's keys.
local function jwt_parts(token)
  local header, payload, signature = token:match("^([%w%-_]+)%.([%w%-_]+)%.([%w%-_]+)$")
  if not header then return nil end
  local function object(part)
    local decoded = crypto.base64url_decode(part)
    if not decoded then return nil end
    local value = json.decode(decoded)
    if type(value) == "table" and not json.is_array(value) then return value end
    return nil
  end
  local h, claims = object(header), object(payload)
  if not h or not claims or type(h.alg) ~= "string" or h.alg == "none" or #signature < 4 then return nil end
  return h, claims
end

-- AssumeRoleWithWebIdentity checks what AWS checks of an OIDC token before it trusts it: a JWT,
-- with the claims it needs, from an issuer the account has an OIDC provider for (state.oidc),
-- for an audience that provider lists, not expired. Each refusal is AWS's code and words.
local function check_web_identity(sb, token)
  if #token < 4 then
    validation("webIdentityToken", "***", "Member must have length greater than or equal to 4")
  end
  local _, claims = jwt_parts(token)
  if not claims then invalid_token(NOT_A_JWT) end
  for _, claim in ipairs{ "iss", "sub", "aud", "exp" } do
    if claims[claim] == nil or claims[claim] == json.null then invalid_token(("Missing a required claim: %s"):format(claim)) end
  end
  if type(claims.iss) ~= "string" or type(claims.sub) ~= "string" or math.type(claims.exp) == nil then
    invalid_token(NOT_A_JWT)
  end
  local issuer = claims.iss:gsub("^https://", ""):gsub("/$", "")
  local audiences = sb.state.aws.oidc[issuer]
  if not audiences then
    invalid_token(("No OpenIDConnect provider found in your account for %s"):format(claims.iss))
  end
  local given = type(claims.aud) == "table" and claims.aud or { claims.aud }
  local audience
  for _, a in ipairs(given) do
    for _, accepted in ipairs(audiences) do
      if a == accepted then audience = a end
    end
  end
  if not audience then invalid_token("Incorrect token audience") end
  if claims.exp <= wire.clock() then
    wire.fail("ExpiredTokenException", ("Token expired: current date/time %d must be before the expiration date/time %d")
      :format(math.floor(wire.clock()), math.floor(claims.exp)))
  end
  return claims.sub, audience, ("arn:aws:iam::%%s:oidc-provider/%s"):format(issuer)
end

function sts.actions.AssumeRoleWithWebIdentity(sb, params)
  local account, role_name = role_of(params)
  local subject, audience, provider = check_web_identity(sb, params.WebIdentityToken)
  return issue(sb, params.RoleArn, role_name, account, params.RoleSessionName, params)
    .. wire.el("SubjectFromWebIdentityToken", subject)
    .. wire.el("Audience", audience)
    .. wire.el("Provider", provider:format(account))
end

return sts
