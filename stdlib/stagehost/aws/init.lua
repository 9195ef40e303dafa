-- AWS: SigV4 signing (C), the standard credential chain, signed requests with retries, and
-- the CloudFormation and Amplify clients.
--
--   aws.sign{method, url, headers, body, service, region, credentials, time} -> headers to add
--   aws.credentials{profile=} -> {access_key_id, secret_access_key, session_token, expires, source}
--   aws.request{service, region, method, path, query, headers, body | form | json, credentials,
--               endpoint, operation, retry} -> response (+ .xml or .json decoded)
--   aws.query(service, region, action, version, params, opts) -> the <ActionResult> element
--   aws.region(region) -> a checked region name;  aws.endpoint(service, region) -> base URL
--   aws.parse_arn(arn) -> {partition, service, region, account, resource}
--   aws.cloudformation{region=}, aws.amplify{region=}, aws.sts{region=}, aws.s3{region=}
--
-- AWS errors are raised as tables {code, message, request_id, status, service, operation}
-- that print as one line.
local json = require("stagehost.json")
local retry = require("stagehost.util.retry")
local errors = require("stagehost.errors")

local aws = {}

-- Defaults for the whole process (stagehost run --sandbox points every client at the
-- sandbox): each beats the environment; an explicit option beats it.
local defaults = {}

-- aws.configure{endpoint =, region =, credentials =, poll = {min =, max =}} -> the previous
-- defaults (poll: the waiters' interval bounds, for clients created without their own)
function aws.configure(opts)
  errors.check_table(opts, 1, "aws.configure")
  for _, name in ipairs{ "endpoint", "region" } do
    if opts[name] ~= nil and type(opts[name]) ~= "string" then
      errors.argument(1, "aws.configure", "%s must be a string, got %s", name, type(opts[name]))
    end
  end
  if opts.credentials ~= nil and type(opts.credentials) ~= "table" then
    errors.argument(1, "aws.configure", "credentials must be a table, got %s", type(opts.credentials))
  end
  if opts.poll ~= nil and type(opts.poll) ~= "table" then
    errors.argument(1, "aws.configure", "poll must be a table {min =, max =}, got %s", type(opts.poll))
  end
  local previous = defaults
  defaults = { endpoint = opts.endpoint, region = opts.region, credentials = opts.credentials, poll = opts.poll }
  return previous
end

local sigv4 -- loaded on first use: a script that only reads outputs never pays for OpenSSL
local function signer()
  sigv4 = sigv4 or require "stagehost.core.aws_sigv4"
  return sigv4
end

-- ---- errors ----

local AwsError = {}
AwsError.__index = AwsError
AwsError.__name = "stagehost.aws.error"
function AwsError.__tostring(e)
  local where = e.service and ("%s %s"):format(e.service, e.operation or "request") or "request"
  local line = ("aws: %s: %s%s"):format(where, e.code or "Error", e.message and e.message ~= "" and (": " .. e.message) or "")
  if e.status then line = line .. (" (HTTP %d"):format(e.status) .. (e.request_id and (", request " .. e.request_id) or "") .. ")" end
  return line
end

function aws.error(fields) return setmetatable(fields, AwsError) end
function aws.is_error(e, code)
  return getmetatable(e) == AwsError and (code == nil or e.code == code)
end

-- A mistake of the caller or the environment: one line saying what to set, raised as a string.
-- It names the first line outside stagehost's own library: the user's line that set it off,
-- however deep in the clients the check ran.
local function misuse(fmt, ...)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info then level = 0 break end -- no user frame (called from C): no position
    if info.what ~= "C" and not info.source:find("/stagehost/[^/]*%.lua$") and
      not info.source:find("/stagehost/aws/", 1, true) and
      not info.source:find("/stagehost/util/", 1, true) then break end
    level = level + 1
  end
  error(("aws: " .. fmt):format(...), level)
end

-- ---- regions, endpoints, ARNs ----

-- Region names are partition-prefix-number: us-east-1, eu-central-2, us-gov-west-1,
-- cn-northwest-1, us-iso-east-1. A new region of that shape is accepted without a release
-- of ours; a typo like "us-east1" or "virginia" is not.
-- An environment variable set to "" counts as unset, as the SDKs read it.
local function env(name)
  local v = os.getenv(name)
  return v ~= "" and v or nil
end

-- The region: given, configured, AWS_REGION, AWS_DEFAULT_REGION, the profile's, then fallback.
local function resolve_region(region, who, fallback)
  if type(who) ~= "string" then who = nil end
  region = region or defaults.region or env("AWS_REGION") or env("AWS_DEFAULT_REGION")
  if region == nil or region == "" then
    region = require("stagehost.aws.credentials").profile_region()
  end
  if region == nil or region == "" then region = fallback end
  if region == nil or region == "" then
    misuse("%sno region: pass region = \"us-east-1\" or set AWS_REGION", who and (who .. ": ") or "")
  end
  if type(region) ~= "string" or not region:match("^%l%l%l?%l?%-[%l%-]*%l%-%d+$") then
    misuse("%sunknown region '%s' (expected a name like us-east-1 or eu-west-2; check region = or AWS_REGION)",
      who and (who .. ": ") or "", tostring(region))
  end
  return region
end

-- aws.region([region]) -> the region to use: the one given, else AWS_REGION,
-- AWS_DEFAULT_REGION or the profile's, checked.
function aws.region(region)
  if region ~= nil and type(region) ~= "string" then
    errors.argument(1, "aws.region", "string expected, got %s", type(region))
  end
  return resolve_region(region, "aws.region")
end

-- AWS_ENDPOINT_URL_<SERVICE> beats AWS_ENDPOINT_URL beats the regional endpoint, as the SDKs
-- do; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true turns the first two off.
function aws.endpoint(service, region)
  if type(service) ~= "string" or service == "" then
    errors.argument(1, "aws.endpoint", "service name expected, got %s", type(service))
  end
  region = resolve_region(region, "aws.endpoint")
  if defaults.endpoint then return defaults.endpoint end
  if (env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") or ""):lower() ~= "true" then
    local configured = env("AWS_ENDPOINT_URL_" .. service:upper():gsub("[%s%-]", "_")) or env("AWS_ENDPOINT_URL")
    if configured then return (configured:gsub("/+$", "")) end
  end
  -- the three services here are reached under their signing names
  local suffix = region:match("^cn%-") and "amazonaws.com.cn" or "amazonaws.com"
  return ("https://%s.%s.%s"):format(service, region, suffix)
end

function aws.parse_arn(arn)
  local partition, service, region, account, resource
  if type(arn) == "string" then
    partition, service, region, account, resource = arn:match("^arn:([%w%-]+):([%w%-]+):([%w%-]*):(%d*):(.+)$")
  end
  if not partition then
    misuse("malformed ARN '%s' (expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, e.g. arn:aws:iam::123456789012:role/deploy)",
      tostring(arn))
  end
  return { partition = partition, service = service, region = region, account = account, resource = resource }
end

-- AWS writes times as ISO 8601 (Query/XML) or epoch seconds (REST-JSON).
function aws.parse_time(v)
  if type(v) == "number" then return v end
  return require("stagehost.util.time").parse_iso8601(v)
end

-- ---- encoding ----

local uri_encode = require("stagehost.util.url").encode
aws.uri_encode = uri_encode

-- Query-protocol parameters: nested Lua values flattened as AWS names them —
-- {Capabilities = {"A"}} -> Capabilities.member.1=A; {Parameters = {{ParameterKey = "k"}}} ->
-- Parameters.member.1.ParameterKey=k. Sorted, so a request is reproducible.
local function flatten(prefix, value, out)
  if type(value) == "table" then
    if #value > 0 or json.is_array(value) then
      for i, v in ipairs(value) do flatten(prefix .. ".member." .. i, v, out) end
    else
      for k, v in pairs(value) do flatten(prefix == "" and k or (prefix .. "." .. k), v, out) end
    end
  elseif type(value) == "boolean" then
    out[#out + 1] = { prefix, value and "true" or "false" }
  elseif value ~= nil then
    out[#out + 1] = { prefix, tostring(value) }
  end
  return out
end

function aws.form(params)
  errors.check_table(params, 1, "aws.form")
  local pairs_ = flatten("", params, {})
  table.sort(pairs_, function(a, b) return a[1] < b[1] end)
  local parts = {}
  for i, p in ipairs(pairs_) do parts[i] = uri_encode(p[1]) .. "=" .. uri_encode(p[2]) end
  return table.concat(parts, "&")
end

-- ---- signing and credentials ----

function aws.sign(opts)
  return signer().sign(opts)
end

function aws.credentials(opts)
  if defaults.credentials and not (type(opts) == "table" and opts.profile) then return defaults.credentials end
  return require("stagehost.aws.credentials").resolve(opts)
end

-- ---- requests ----

local THROTTLE_CODES = {
  Throttling = true, ThrottlingException = true, ThrottledException = true, RequestThrottledException = true,
  TooManyRequestsException = true, RequestLimitExceeded = true, RequestThrottled = true,
  SlowDown = true, PriorRequestNotComplete = true, BandwidthLimitExceeded = true,
  EC2ThrottledException = true, TransactionInProgressException = true,
}
-- Failures the SDKs retry as transient (besides 5xx), for requests safe to repeat.
local TRANSIENT_CODES = { RequestTimeout = true, RequestTimeoutException = true, IDPCommunicationError = true,
  InternalFailure = true, ServiceUnavailable = true }
-- http.request's transport failures that may heal by waiting (retry.TRANSIENT_KINDS, by code):
-- refused, timed out, a name that did not resolve, a cut connection.
local TRANSIENT_TRANSPORT = { ECONNREFUSED = true, ETIMEDOUT = true, ENOTFOUND = true, ETRANSPORT = true }

local function request_id(res)
  return res.headers["x-amzn-requestid"] or res.headers["x-amz-request-id"]
end

local function xml_decode(text)
  return require("stagehost.xml").decode(text)
end

-- An error answer in whichever protocol the service speaks, as an AwsError.
local function decode_error(res, service, operation)
  local e = { status = res.status, service = service, operation = operation, request_id = request_id(res) }
  local ctype = res.headers["content-type"] or ""
  local body = res.body or ""
  if body:match("^%s*<") then
    local root = xml_decode(body)
    if root then
      local xml = require("stagehost.xml")
      local err = xml.path(root, "Error") or root -- Query wraps it in ErrorResponse; S3 does not
      e.code = xml.text(err, "Code")
      e.message = xml.text(err, "Message")
      e.request_id = e.request_id or xml.text(root, "RequestId") or xml.text(root, "RequestID")
    end
  elseif body:match("^%s*{") or ctype:find("json", 1, true) then
    local doc = json.decode(body)
    if type(doc) == "table" then
      e.code = doc.__type or doc.code or doc.Code
      e.message = doc.message or doc.Message
    end
  end
  local header_type = res.headers["x-amzn-errortype"]
  if header_type and header_type ~= "" then e.code = header_type end
  if e.code then e.code = tostring(e.code):gsub("^.*#", ""):gsub(":.*$", "") end
  if not e.code then
    e.code = res.status >= 500 and "InternalFailure" or (res.status == 429 and "TooManyRequestsException" or "HTTP" .. res.status)
    e.message = e.message or (body ~= "" and body:sub(1, 200):gsub("%s+", " ") or nil)
  end
  return aws.error(e)
end

-- Whether an answer or failure deserves another attempt (a stagehost.util.retry classifier).
-- Throttling means AWS refused the request, so it is safe to repeat anything; after a 5xx or a
-- broken connection AWS may have acted already, so only an idempotent request goes again (no
-- second change set execution, no second release job). A transport failure that may heal by
-- waiting is one of TRANSIENT_TRANSPORT; a TLS or URL problem is not.
local function classify(o)
  local e, idempotent = o.error, o.request.idempotent
  if o.raised or e == nil then return false end -- a success, or misuse
  local res = o.response
  if not res then
    if not (idempotent and TRANSIENT_TRANSPORT[o.kind]) then return false end
    return true, ("TransportError: %s %s failed: %s"):format(e.transport.method, e.transport.url, e.transport.reason)
  end
  local again = THROTTLE_CODES[e.code] or res.status == 429 or
    (idempotent and (TRANSIENT_CODES[e.code] or res.status >= 500))
  if not again then return false end
  local h = res.headers
  return true, ("%s (HTTP %d)"):format(e.code, res.status), retry.after(h["retry-after"] or h["x-amz-retry-after"])
end

local function max_attempts(opts)
  local n
  if opts.retry ~= nil then
    n = opts.retry == false and 1 or opts.retry
  else
    n = os.getenv("AWS_MAX_ATTEMPTS")
    if n == "" then n = nil end
    n = n or 5
  end
  local attempts = math.tointeger(tonumber(n))
  if not attempts or attempts < 1 then
    error(("aws.request: retry must be a whole number of attempts of at least 1, or false (got %s; check AWS_MAX_ATTEMPTS)"):format(
      tostring(n)), 3)
  end
  return attempts
end

-- GET and HEAD, and Query actions that only read, can be repeated whatever happened.
local function idempotent_by_default(method, operation)
  if method == "GET" or method == "HEAD" then return true end
  if type(operation) ~= "string" then return false end
  for _, prefix in ipairs{ "Describe", "List", "Get", "Validate" } do
    if operation:sub(1, #prefix) == prefix then return true end
  end
  return false
end

-- aws.request{service, region, method = "POST", path = "/", query = {k = v} | "raw",
--             headers, body | form = {...} | json = value, credentials, endpoint, operation,
--             timeout, retry = attempts | false, retry_base = 1, idempotent, unsigned, raw}
--   -> response with .xml / .json (raw = true: the body as it came, decoded never). `idempotent` defaults to true for GET/HEAD and for Query
--   actions that read (Describe*, List*, Get*, Validate*): only those are repeated after a 5xx
--   or a broken connection.
function aws.request(opts)
  errors.check_table(opts, 1, "aws.request")
  local service = opts.service
  if type(service) ~= "string" or service == "" then
    errors.argument(1, "aws.request", "service must be a string such as \"cloudformation\"")
  end
  local region = resolve_region(opts.region, "aws.request")
  local operation = opts.operation or (type(opts.form) == "table" and opts.form.Action) or opts.path or "/"
  local base = opts.endpoint or aws.endpoint(service, region)
  local path = opts.path or "/"
  local query = opts.query
  if type(query) == "table" then query = aws.form(query) end
  local url = base .. path .. ((query and query ~= "") and ("?" .. query) or "")

  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local body = opts.body or ""
  if opts.form ~= nil then
    body = aws.form(opts.form)
    headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
  elseif opts.json ~= nil then
    body = json.encode(opts.json)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  headers["User-Agent"] = headers["User-Agent"] or "stagehost"

  local method = opts.method or "POST"
  local idempotent = opts.idempotent
  if idempotent == nil then idempotent = idempotent_by_default(method, operation) end
  local http = require("stagehost.http")
  -- exponential backoff with full jitter, as the SDKs' "standard" retry mode: 1 s, 2 s, 4 s …
  -- at most 20 s, and a Retry-After honoured up to 20 s
  local policy = { attempts = max_attempts(opts), base = math.max(0, tonumber(opts.retry_base) or 1), cap = 20, max_wait = 20,
    name = ("aws: %s %s"):format(service, operation), classify = classify,
    request = { method = method, url = url, operation = operation, idempotent = idempotent } }
  -- one attempt, signed afresh (a signature is good for minutes only), through http.request
  -- without its retries (these are the policy's): the response, with the AwsError it carries
  -- when it is not a success; nil, a TransportError and the transport error's code when
  -- nothing came back. Misuse and a cancelled task raise through.
  local res, err = retry.run(policy, function()
    local send = {}
    for k, v in pairs(headers) do send[k] = v end
    if not opts.unsigned then
      local creds = opts.credentials or aws.credentials()
      local added = aws.sign{ method = method, url = url, headers = send, body = body,
        service = service, region = region, credentials = creds }
      for k, v in pairs(added) do send[k] = v end
    end
    local ok, r = pcall(http.request, { method = method, url = url, headers = send, body = body,
      timeout = opts.timeout or 60, connect_timeout = opts.connect_timeout or 10, retry = false })
    if not ok then
      if not errors.is(r, "transport") then error(r, 0) end -- misuse, a cancellation: as they are
      return nil, aws.error{ service = service, operation = operation, code = "TransportError",
        message = tostring(r), kind = r.code, transport = r }, r.code
    end
    if r.status < 300 then return r end
    return r, decode_error(r, service, operation)
  end)
  if err ~= nil then error(err, 2) end

  local text = res.body or ""
  local ctype = res.headers["content-type"] or ""
  if opts.raw then -- an S3 object is the caller's bytes, whatever they look like
    res.request_id = request_id(res)
    return res
  end
  if text:match("^%s*<") or ctype:find("xml", 1, true) then
    local root, why = xml_decode(text)
    if not root then
      error(aws.error{ service = service, operation = operation, code = "MalformedResponse", status = res.status,
        request_id = request_id(res), message = "malformed XML in the response (" .. tostring(why) .. ")" }, 2)
    end
    res.xml = root
  elseif text ~= "" and (text:match("^%s*[%[{]") or ctype:find("json", 1, true)) then
    local doc, why = json.decode(text)
    if doc == nil then
      error(aws.error{ service = service, operation = operation, code = "MalformedResponse", status = res.status,
        request_id = request_id(res), message = "malformed JSON in the response (" .. why .. ")" }, 2)
    end
    res.json = doc
  end
  res.request_id = request_id(res)
  return res
end

-- The Query protocol (CloudFormation, STS, …): form-encoded Action + Version, an XML answer
-- whose <ActionResult> is returned.
function aws.query(service, region, action, version, params, opts)
  for i, v in ipairs{ service, action, version } do
    if type(v) ~= "string" then
      errors.argument(i == 1 and 1 or i + 1, "aws.query", "string expected, got %s", type(v))
    end
  end
  region = resolve_region(region, "aws.query")
  local form = { Action = action, Version = version }
  for k, v in pairs(params or {}) do form[k] = v end
  local req = { service = service, region = region, form = form, operation = action }
  for k, v in pairs(opts or {}) do req[k] = v end
  local res = aws.request(req)
  local xml = require("stagehost.xml")
  local result = res.xml and xml.path(res.xml, action .. "Result")
  if not res.xml or res.xml.name ~= action .. "Response" then
    error(aws.error{ service = service, operation = action, code = "MalformedResponse", status = res.status,
      request_id = res.request_id, message = ("expected a <%sResponse> document, got %s"):format(action,
        res.xml and ("<" .. res.xml.name .. ">") or "no XML") }, 2)
  end
  return result or { name = action .. "Result", attrs = {}, text = "" }, res
end

-- ---- clients ----

aws.resolve_region = resolve_region -- for the clients, whose messages name themselves

-- The fields every service client starts with, from its constructor's options: the region
-- (resolved, else fallback; who names the constructor in messages), credentials, endpoint
-- and retry_base.
function aws.client_fields(opts, who, fallback)
  if type(who) ~= "string" then errors.argument(2, "aws.client_fields", "string expected, got %s", type(who)) end
  errors.check_table(opts, 1, who)
  if fallback ~= nil and type(fallback) ~= "string" then
    errors.argument(3, "aws.client_fields", "string expected, got %s", type(fallback))
  end
  return { region = resolve_region(opts.region, who, fallback), credentials = opts.credentials,
    endpoint = opts.endpoint, retry_base = opts.retry_base }
end

-- A service client's class: Client (add methods to it) and new(opts) -> a client with the
-- fields above, and, when poll = {min, max} is given, the poll interval bounds a waiter uses
-- (opts.poll overrides them).
function aws.client_class(who, class_defaults)
  class_defaults = class_defaults or {}
  local Client = {}
  Client.__index = Client
  local function new(opts)
    opts = opts or {}
    local configured = defaults
    local client = aws.client_fields(opts, who, class_defaults.region)
    if class_defaults.poll then
      -- a waiter's pace: the caller's, else the process's (the sandbox's simulated time), else the class's
      local poll = opts.poll or configured.poll or {}
      client.poll_min, client.poll_max = poll.min or class_defaults.poll[1], poll.max or class_defaults.poll[2]
    end
    return setmetatable(client, Client)
  end
  return Client, new
end

function aws.cloudformation(opts) return require("stagehost.aws.cloudformation").new(opts) end
function aws.amplify(opts) return require("stagehost.aws.amplify").new(opts) end
function aws.sts(opts) return require("stagehost.aws.sts").new(opts) end
function aws.s3(opts) return require("stagehost.aws.s3").new(opts) end

return aws
