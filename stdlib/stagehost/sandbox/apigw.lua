-- API Gateway REST APIs of deployed stacks, served by the sandbox for real: a request to
--   http://127.0.0.1:PORT/_api/{restApiId}/{stage}/{path}
-- runs the Lambda function whose SAM Api event (Path, Method) matches, with the API Gateway v1
-- proxy event, as `sam local start-api` does (lambda.lua runs the code with node), and answers
-- with the {statusCode, headers, multiValueHeaders, body, isBase64Encoded} it returns.
--
-- The execute-api host: https://{restApiId}.execute-api.{region}.amazonaws.com/{stage}/... cannot
-- reach a loopback server, so the sandbox shows every such URL of a stack's outputs as
-- http://127.0.0.1:PORT/_api/{restApiId}/{stage}/... (apigw.local_urls, applied when
-- DescribeStacks renders outputs): `${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com`
-- in an output's Fn::Sub becomes a URL integration tests can call. The stored output keeps the
-- AWS form, so a sandbox restarted on another port still answers with its own.
--
-- Routes come from the template as written (AWS::Serverless::Function Events of Type Api, on
-- the implicit ServerlessRestApi or the AWS::Serverless::Api their RestApiId names); {name}
-- path parameters and {proxy+} are matched, Method any matches every method. No route: 403
-- {"message":"Missing Authentication Token"}; a function that fails or times out: 502
-- {"message":"Internal server error"}, as API Gateway answers.
local json = require("stagehost.json")
local wire = require("stagehost.sandbox.wire")
local eval = require("stagehost.sandbox.cfn_eval")
local lambda = require("stagehost.sandbox.lambda")

local apigw = {}

apigw.PREFIX = "/_api/"

local function is_table(v) return type(v) == "table" end

local function ref_of(v)
  if type(v) == "string" then return v end
  if is_table(v) and type(v.Ref) == "string" then return v.Ref end
  return nil
end

-- The API's RestApi resource in a live stack: stack, logical id
local function find_api(sb, api_id)
  for _, stack in pairs(sb.state.aws.stacks or {}) do
    if not stack.deleted and stack.model then
      for logical, r in pairs(stack.resources) do
        if r.type == "AWS::ApiGateway::RestApi" and r.physical == api_id and r.status ~= "DELETE_COMPLETE" then
          return stack, logical
        end
      end
    end
  end
end

-- The template as written (before the SAM transform), decoded once per model.
local raw_cache = setmetatable({}, { __mode = "k" })
local function raw_template(model)
  if raw_cache[model] == nil then
    local body = model.body or ""
    local doc
    if body:match("^%s*{") then doc = json.decode(body) else doc = require("stagehost.yaml").decode(body) end
    raw_cache[model] = is_table(doc) and doc or false
  end
  return raw_cache[model] or nil
end

-- {path, method, fn} for every Api event on the API `api_logical`
local function routes_of(model, api_logical)
  local raw = raw_template(model)
  local routes = {}
  for logical, def in pairs(raw and is_table(raw.Resources) and raw.Resources or {}) do
    local props = is_table(def) and def.Type == "AWS::Serverless::Function" and is_table(def.Properties) and def.Properties
    for _, event in pairs(props and is_table(props.Events) and props.Events or {}) do
      local p = is_table(event) and event.Type == "Api" and is_table(event.Properties) and event.Properties
      if p and type(p.Path) == "string" and type(p.Method) == "string" then
        local api = p.RestApiId ~= nil and ref_of(p.RestApiId) or "ServerlessRestApi"
        if api == api_logical then routes[#routes + 1] = { path = p.Path, method = p.Method:upper(), fn = logical } end
      end
    end
  end
  -- literal segments before parameters, as API Gateway prefers the most specific resource
  table.sort(routes, function(a, b)
    local pa, pb = select(2, a.path:gsub("{", "")), select(2, b.path:gsub("{", ""))
    if pa ~= pb then return pa < pb end
    return a.path .. a.method < b.path .. b.method
  end)
  return routes
end

local function segments(path) return require("stagehost.util.tables").matches(path, "[^/]+") end

-- path parameters when the route's path template matches the request path, else nil
local function match_path(template, path)
  local t, p = segments(template), segments(path)
  local params = {}
  for i, seg in ipairs(t) do
    local greedy = seg:match("^{(.+)%+}$")
    if greedy then
      if i > #p then return nil end
      params[greedy] = table.concat(p, "/", i)
      return params
    end
    if i > #p then return nil end
    local name = seg:match("^{(.+)}$")
    if name then params[name] = wire.unescape(p[i], false)
    elseif seg ~= p[i] then return nil end
  end
  if #t ~= #p then return nil end
  return params
end

local function json_response(status, value, headers)
  local h = { ["Content-Type"] = "application/json", ["x-amzn-RequestId"] = wire.uuid() }
  for k, v in pairs(headers or {}) do h[k] = v end
  return { status = status, headers = h, body = json.encode(value) }
end

local function query_params(query)
  local single, multi = {}, {}
  for pair in (query or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = wire.unescape(k, true), wire.unescape(v, true)
    single[k] = v
    multi[k] = multi[k] or json.array{}
    table.insert(multi[k], v)
  end
  if next(single) == nil then return json.null, json.null end
  return single, multi
end

local function event_of(req, api_id, stage, route, rest, params)
  local headers, multi_headers = {}, {}
  for k, v in pairs(req.headers) do
    headers[k] = type(v) == "table" and table.concat(v, ",") or v
    multi_headers[k] = json.array(type(v) == "table" and v or { v })
  end
  local qs, mqs = query_params(req.query)
  local body = req.body
  return {
    resource = route.path, path = rest, httpMethod = req.method, headers = headers, multiValueHeaders = multi_headers,
    queryStringParameters = qs, multiValueQueryStringParameters = mqs,
    pathParameters = next(params) and params or json.null, stageVariables = json.null,
    requestContext = { resourcePath = route.path, httpMethod = req.method, path = "/" .. stage .. rest, stage = stage,
      requestId = wire.uuid(), apiId = api_id, accountId = wire.ACCOUNT_ID, protocol = "HTTP/1.1",
      requestTimeEpoch = math.floor(wire.clock() * 1000), identity = { sourceIp = "127.0.0.1",
        userAgent = req.headers["user-agent"] or json.null } },
    body = (body ~= nil and body ~= "") and body or json.null, isBase64Encoded = false,
  }
end

local function function_config(sb, stack, logical)
  local r = stack.resources[logical]
  if not r or not is_table(r.def) or r.status == "DELETE_COMPLETE" then return nil end
  local env = eval.env(sb, stack, stack.model, stack.params, stack.resources)
  local ok, props = pcall(eval.resolve, r.def.Properties or {}, env)
  if not ok then return nil end
  local vars = is_table(props.Environment) and is_table(props.Environment.Variables) and props.Environment.Variables or {}
  return { name = r.physical, handler = props.Handler, code = props.Code, environment = vars, timeout = props.Timeout,
    memory = props.MemorySize, region = stack.region, runtime = props.Runtime,
    arn = ("arn:aws:lambda:%s:%s:function:%s"):format(stack.region, sb.state.aws.account_id, tostring(r.physical)) }
end

-- The proxy integration's answer as an HTTP response, or nil when it is malformed.
local function response_of(result)
  if not is_table(result) or math.tointeger(tonumber(result.statusCode)) == nil then return nil end
  local headers = {}
  for k, v in pairs(is_table(result.multiValueHeaders) and result.multiValueHeaders or {}) do
    headers[k] = is_table(v) and v or { tostring(v) }
  end
  for k, v in pairs(is_table(result.headers) and result.headers or {}) do headers[k] = tostring(v) end
  local body = result.body
  if body == nil or body == json.null then body = "" end
  if type(body) ~= "string" then return nil end
  if result.isBase64Encoded == true then body = require("stagehost.crypto").base64_decode(body) or "" end
  return { status = math.tointeger(tonumber(result.statusCode)), headers = headers, body = body }
end

function apigw.handle(sb, req)
  local api_id, stage, rest = req.path:sub(#apigw.PREFIX + 1):match("^([^/]+)/([^/]+)(.*)$")
  if not api_id then return json_response(403, { message = "Forbidden" }) end
  if rest == "" then rest = "/" end
  sb:record("apigateway", req.method .. " " .. rest, req)
  local stack, api_logical = find_api(sb, api_id)
  if not stack then return json_response(403, { message = "Forbidden" }) end
  for _, route in ipairs(routes_of(stack.model, api_logical)) do
    local params = (route.method == "ANY" or route.method == req.method) and match_path(route.path, rest)
    if params then
      local fn = function_config(sb, stack, route.fn)
      if not fn then break end
      local result, err = lambda.invoke(sb, fn, event_of(req, api_id, stage, route, rest, params))
      local res = result and response_of(result)
      if not res then
        require("stagehost.log").warn(("sandbox: %s %s on API %s: function %s: %s"):format(req.method, rest, api_id,
          route.fn, err and (err.type .. ": " .. err.message) or "malformed proxy response"))
        return json_response(502, { message = "Internal server error" }, { ["x-amzn-ErrorType"] = "InternalServerErrorException" })
      end
      return res
    end
  end
  return json_response(403, { message = "Missing Authentication Token" }, { ["x-amzn-ErrorType"] = "MissingAuthenticationTokenException" })
end

-- Every https://{id}.execute-api.{region}.amazonaws.com URL of an API the sandbox serves, as
-- the sandbox's own URL for it; other text unchanged.
function apigw.local_urls(sb, value)
  if type(value) ~= "string" or not value:find(".execute-api.", 1, true) then return value end
  return (value:gsub("https://(%w+)%.execute%-api%.[%w%-]+%.amazonaws%.com", function(id)
    if find_api(sb, id) then return sb.url .. apigw.PREFIX .. id end
  end))
end

return apigw
