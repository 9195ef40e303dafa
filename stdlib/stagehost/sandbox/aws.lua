-- The AWS side of the sandbox: one endpoint for CloudFormation, STS, Amplify and S3, as real
-- clients reach it with AWS_ENDPOINT_URL / --endpoint-url. A request is routed by the service
-- named in its SigV4 credential scope; unsigned STS calls (AssumeRoleWithWebIdentity) by their
-- Action. Each service module implements its actions; this file owns what they share:
-- authentication errors, the signature hook, recording, queued faults and error rendering.
--
-- Knobs (sb.state.aws; tests may set them at any time):
--   step_seconds        seconds per step of every simulated transition (0.2): a change set is
--                       PENDING one step and IN_PROGRESS one more; a stack resource takes two
--                       steps; an Amplify job phase one step
--   credential_seconds  the longest life of credentials STS issues (3600): a role's maximum
--                       session; set it small to make clients refresh
--   page_size           events per DescribeStackEvents page (100)
--   account_id, region  the emulated account and the region of unsigned calls
--   caller              {arn =, user_id =} GetCallerIdentity's answer for keys STS did not issue
-- Faults (sb:fail_next{service =, action =, code =, message =, status =, headers =, body =,
-- times =}) are taken after authentication, as AWS throttles only callers it knows: Query
-- services answer <ErrorResponse> with status 400 by default (Type Receiver from 500 up);
-- REST-JSON ones x-amzn-ErrorType: code and {"message"} with 429 by default for Throttl* and
-- TooManyRequests* codes, else 400; a body is sent verbatim instead (malformed answers).
-- Service actions are Query Action names (DescribeStacks) or Amplify operation names (GetJob).
-- State the tests may read or seed: keys (issued credentials by access key id: secret, token,
-- expires, arn, user_id), issued (a count), stacks, change_sets, apps.
-- Keys: every signed request is checked as AWS checks it (signature.lua) against
-- state.keys[access key id] = {secret, token?, expires?}: sb.credentials (made at start, what
-- sb:use() hands out), the start option aws.keys = {AKID = secret}, and what STS issues. An
-- unknown key is InvalidClientTokenId, a wrong signature SignatureDoesNotMatch (403; the
-- REST-JSON names UnrecognizedClientException, InvalidSignatureException for Amplify).
-- Hook: sb.verify_signature = function(req, service, region) -> true | false, code, message
-- (or false, message) replaces the check; false (or nil) turns it off.
-- Web identity: state.oidc[issuer without https://] = {audiences...} are the OIDC providers
-- the account trusts (default: GitHub Actions' issuer with the audience sts.amazonaws.com;
-- the start option aws.oidc adds more). See sts.lua.
local crypto = require("stagehost.crypto")
local log = require("stagehost.log")
local wire = require("stagehost.sandbox.wire")

local aws = {}

local services = {
  cloudformation = require "stagehost.sandbox.cloudformation",
  sts = require "stagehost.sandbox.sts",
  amplify = require "stagehost.sandbox.amplify",
  s3 = require "stagehost.sandbox.s3",
}

-- STS actions a client sends without a signature: the caller has no credentials yet
local UNSIGNED_STS = { AssumeRoleWithWebIdentity = true, AssumeRoleWithSAML = true }

-- The access key id sb.credentials carries; its secret is new for every sandbox, so only a
-- client given sb.credentials (or a key the test adds) gets through.
local SANDBOX_KEY_ID = "AKIDSTAGEHOSTSANDBOX"

function aws.init(sb, opts)
  local state = sb.state.aws
  state.keys = state.keys or {}
  local secret = crypto.base64_encode(crypto.random(30)):gsub("[+/=]", "x")
  sb.credentials = { access_key_id = SANDBOX_KEY_ID, secret_access_key = secret }
  state.keys[SANDBOX_KEY_ID] = { secret = secret }
  for key_id, key_secret in pairs(opts.keys or {}) do
    if type(key_id) ~= "string" or type(key_secret) ~= "string" then
      error("aws.keys must map access key ids to secrets (strings)", 0)
    end
    state.keys[key_id] = { secret = key_secret }
  end
  state.oidc = state.oidc or { ["token.actions.githubusercontent.com"] = { "sts.amazonaws.com" } }
  for issuer, audiences in pairs(opts.oidc or {}) do
    if type(issuer) ~= "string" or type(audiences) ~= "table" then
      error("aws.oidc must map issuers to lists of audiences", 0)
    end
    state.oidc[(issuer:gsub("^https://", ""))] = audiences
  end
  sb.verify_signature = require("stagehost.sandbox.signature").verifier(sb)
  state.account_id = state.account_id or wire.ACCOUNT_ID
  state.region = state.region or "us-east-1"
  state.step_seconds = state.step_seconds or 0.2
  state.credential_seconds = state.credential_seconds or 3600
  state.page_size = state.page_size or 100
  state.issued = state.issued or 0
  for _, service in pairs(services) do service.init(sb) end
end

-- Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
-- SignedHeaders=a;b, Signature=hex -> the parts, or nil and what is missing (as AWS words it)
local function parse_authorization(header)
  local algorithm, rest = header:match("^%s*(%S+)%s+(.*)$")
  if algorithm ~= "AWS4-HMAC-SHA256" then
    return nil, ("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=%s"):format(header)
  end
  local fields = {}
  for k, v in rest:gmatch("([%w]+)=([^,%s]*)") do fields[k] = v end
  local missing = {}
  for _, name in ipairs{ "Credential", "Signature", "SignedHeaders" } do
    if not fields[name] or fields[name] == "" then
      missing[#missing + 1] = ("Authorization header requires '%s' parameter."):format(name)
    end
  end
  local key, date, region, service, terminator
  if fields.Credential then
    key, date, region, service, terminator = fields.Credential:match("^([^/]+)/(%d%d%d%d%d%d%d%d)/([^/]+)/([^/]+)/([^/]+)$")
    if not key or terminator ~= "aws4_request" then
      missing[#missing + 1] = ("Credential should be scoped to a valid region. Credential=%s"):format(fields.Credential)
    end
  end
  if #missing > 0 then
    return nil, table.concat(missing, " ") .. " Authorization=" .. header
  end
  return { access_key = key, date = date, region = region, service = service,
    signed_headers = fields.SignedHeaders, signature = fields.Signature }
end

local function is_form(req)
  local ctype = (req.headers["content-type"] or ""):lower()
  return req.method == "POST" and (ctype == "" or ctype:find("application/x-www-form-urlencoded", 1, true))
end

-- Which service a request without a usable credential scope meant: an Amplify path, or an STS
-- action named in the form.
local function guess_service(req, params)
  if req.path == "/apps" or req.path:sub(1, 6) == "/apps/" then return "amplify" end
  local action = params.Action
  if action and services.sts.actions[action] then return "sts" end
  if action and services.cloudformation.actions[action] then return "cloudformation" end
  return nil
end

local function render(service, err, request_id)
  if services[service].protocol == "rest-json" then return wire.json_error(err, request_id) end
  if services[service].protocol == "rest-xml" then return services[service].error_response(err, request_id) end
  return wire.query_error(services[service].namespace, err, request_id)
end

-- An issued credential past its expiry is refused however well it is signed: clients that do
-- not refresh must notice, as they would against AWS.
local function check_expiry(sb, auth)
  local issued = auth and sb.state.aws.keys[auth.access_key]
  if issued and issued.expires and wire.clock() >= issued.expires then
    return { code = "ExpiredToken", message = "The security token included in the request is expired", status = 403 }
  end
end

local function rest_json_code(code)
  local map = {
    MissingAuthenticationToken = "MissingAuthenticationTokenException",
    IncompleteSignature = "IncompleteSignatureException",
    SignatureDoesNotMatch = "InvalidSignatureException",
    ExpiredToken = "ExpiredTokenException",
    InvalidClientTokenId = "UnrecognizedClientException",
  }
  return map[code] or code
end

function aws.handle(sb, req)
  local request_id = wire.uuid()
  if services.amplify.serves_unsigned(req) then
    sb:record("amplify", "GetLog", req)
    return services.amplify.handle_unsigned(sb, req)
  end

  local params = wire.parse_form(req.query)
  if is_form(req) then wire.parse_form(req.body, params) end

  local header = req.headers["authorization"]
  local auth, auth_problem
  if header then auth, auth_problem = parse_authorization(header) end
  local service = auth and auth.service or guess_service(req, params)
  local module = services[service or ""]
  if not module then
    sb:record(service or "unknown", params.Action, req)
    if not header then
      return wire.query_error(services.sts.namespace, { code = "MissingAuthenticationToken",
        message = "Request is missing Authentication Token", status = 403 }, request_id)
    end
    return wire.json_error({ code = "UnknownServiceException", status = 404,
      message = ("the stagehost sandbox does not emulate the service %q"):format(tostring(service)) }, request_id)
  end

  local action, route
  if module.protocol == "rest-json" or module.protocol == "rest-xml" then
    action, route = module.route(req)
  else
    action = params.Action
  end
  sb:record(service, action, req)

  local unsigned_ok = service == "sts" and UNSIGNED_STS[action]
  local problem
  if not header and not unsigned_ok then
    problem = { code = "MissingAuthenticationToken", message = "Request is missing Authentication Token", status = 403 }
  elseif header and not auth and not unsigned_ok then
    problem = { code = "IncompleteSignature", message = auth_problem, status = 403 }
  elseif auth and sb.verify_signature then
    local ok, code, message = sb.verify_signature(req, service, auth.region)
    if not ok and message == nil and code ~= nil and not tostring(code):match("^%u%w+$") then
      code, message = nil, code -- the short form: false, message
    end
    if not ok then
      problem = { code = code or "SignatureDoesNotMatch", status = 403, message = message or
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details." }
    end
  end
  problem = problem or (not unsigned_ok and check_expiry(sb, auth))
  if problem then
    if module.protocol == "rest-json" then problem.code = rest_json_code(problem.code) end
    return render(service, problem, request_id)
  end

  local fault = sb:take_fault(service, action)
  if fault then
    local err = { code = fault.code or "InternalFailure", message = fault.message or "fault injected by the sandbox",
      status = fault.status, headers = fault.headers, body = fault.body }
    if not err.status and module.protocol == "rest-xml" then
      err.status = tostring(err.code) == "SlowDown" and 503 or 400
    end
    if not err.status and module.protocol == "rest-json" then
      local code = tostring(err.code)
      err.status = (code:find("Throttl") or code:find("TooManyRequests")) and 429 or 400
    end
    return render(service, err, request_id)
  end

  local ctx = {
    service = service, action = action, route = route, params = params, request_id = request_id,
    region = auth and auth.region or sb.state.aws.region,
    access_key = auth and auth.access_key,
  }
  local ok, result = pcall(module.handle, sb, req, ctx)
  if ok then return result end
  if not wire.is_error(result) then
    log.error(("sandbox: %s %s failed: %s"):format(service, tostring(action), tostring(result)))
    result = { code = "InternalFailure", message = "the sandbox failed: " .. tostring(result), status = 500 }
  end
  return render(service, result, request_id)
end

return aws
