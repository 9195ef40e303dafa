-- A template evaluated for one stack: Ref (parameters, pseudo parameters, resources), the
-- intrinsic functions (Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split, Fn::If,
-- Fn::Equals/Not/And/Or, Fn::FindInMap, Fn::ImportValue, Fn::Base64, Fn::GetAZs), Conditions,
-- and the physical ids and attributes AWS would give each resource, made up in its shapes.
--
-- An env is what evaluation sees: {sb, stack, model, params (values), resources (logical ->
-- record with .physical once created), region, account}; conditions are cached in it.
local crypto = require("stagehost.crypto")
local wire = require("stagehost.sandbox.wire")
local tpl = require("stagehost.sandbox.cfn_template")

local eval = {}

local invalid, trim, intrinsic, is_pseudo = tpl.invalid, tpl.trim, tpl.intrinsic, tpl.is_pseudo

local NOVALUE = setmetatable({}, { __name = "AWS::NoValue" })

-- eval.env(sb, stack, model, params, resources) -> the env to evaluate model in for stack.
function eval.env(sb, stack, model, params, resources)
  return { sb = sb, stack = stack, model = model, params = params, resources = resources, region = stack.region,
    account = sb.state.aws.account_id }
end

local resolve

local function param_value(env, key)
  local v = env.params[key]
  local def = env.model.params[key]
  if v ~= nil and def and (def.type == "CommaDelimitedList" or def.type:match("^List<")) then
    local items = {}
    for item in (v .. ","):gmatch("([^,]*),") do items[#items + 1] = trim(item) end
    return items
  end
  return v
end

local function pseudo(env, name)
  local values = {
    ["AWS::Region"] = env.region, ["AWS::AccountId"] = env.account, ["AWS::StackName"] = env.stack.name,
    ["AWS::StackId"] = env.stack.id, ["AWS::Partition"] = "aws", ["AWS::URLSuffix"] = "amazonaws.com",
    ["AWS::NotificationARNs"] = {},
  }
  if name == "AWS::NoValue" then return NOVALUE end
  return values[name]
end

local function ref(env, name)
  if is_pseudo(name) then return pseudo(env, name) end
  if env.model.params[name] then return param_value(env, name) end
  local r = env.resources[name]
  if r and r.physical then return r.physical end
  invalid(("Template error: resource %s is not available yet"):format(name))
end

local function service_of(kind)
  local service, resource = kind:match("^AWS::([%w]+)::([%w]+)$")
  return (service or "custom"):lower(), (resource or kind):lower()
end

-- Fn::GetAtt: attributes in the shapes AWS gives them, computed once per resource.
local function get_att(env, logical, attr)
  local r = env.resources[logical]
  if not r or not r.physical then
    invalid(("Template error: instance of Fn::GetAtt references undefined resource %s"):format(logical))
  end
  r.attrs = r.attrs or {}
  if r.attrs[attr] then return r.attrs[attr] end
  local id, region, account, kind = r.physical, env.region, env.account, r.type
  local value
  if attr == "Arn" then
    local arns = {
      ["AWS::Lambda::Function"] = ("arn:aws:lambda:%s:%s:function:%s"):format(region, account, id),
      ["AWS::IAM::Role"] = ("arn:aws:iam::%s:role/%s"):format(account, id),
      ["AWS::IAM::User"] = ("arn:aws:iam::%s:user/%s"):format(account, id),
      ["AWS::S3::Bucket"] = ("arn:aws:s3:::%s"):format(id),
      ["AWS::DynamoDB::Table"] = ("arn:aws:dynamodb:%s:%s:table/%s"):format(region, account, id),
      ["AWS::SQS::Queue"] = ("arn:aws:sqs:%s:%s:%s"):format(region, account, id:match("([^/]+)$")),
      ["AWS::SNS::Topic"] = id,
      ["AWS::StepFunctions::StateMachine"] = ("arn:aws:states:%s:%s:stateMachine:%s"):format(region, account, id),
      ["AWS::Logs::LogGroup"] = ("arn:aws:logs:%s:%s:log-group:%s:*"):format(region, account, id),
    }
    local service, resource = service_of(kind)
    value = arns[kind] or ("arn:aws:%s:%s:%s:%s/%s"):format(service, region, account, resource, id)
  elseif kind == "AWS::ApiGateway::RestApi" and attr == "RootResourceId" then
    value = wire.random_lower(10)
  elseif kind:match("^AWS::ApiGateway") and (attr == "Url" or attr == "URL" or attr == "Endpoint") then
    value = ("https://%s.execute-api.%s.amazonaws.com/Prod/"):format(id, region)
  elseif kind == "AWS::ApiGatewayV2::Api" and (attr == "ApiEndpoint" or attr == "Url") then
    value = ("https://%s.execute-api.%s.amazonaws.com"):format(id, region)
  elseif kind == "AWS::Lambda::Url" and attr == "FunctionUrl" then
    value = ("https://%s.lambda-url.%s.on.aws/"):format(wire.random_lower(32), region)
  elseif kind == "AWS::S3::Bucket" and attr == "WebsiteURL" then
    value = ("http://%s.s3-website-%s.amazonaws.com"):format(id, region)
  elseif kind == "AWS::S3::Bucket" and attr == "DomainName" then
    value = ("%s.s3.amazonaws.com"):format(id)
  elseif kind == "AWS::S3::Bucket" and attr == "RegionalDomainName" then
    value = ("%s.s3.%s.amazonaws.com"):format(id, region)
  elseif kind == "AWS::CloudFront::Distribution" and attr == "DomainName" then
    value = ("%s.cloudfront.net"):format(wire.random_lower(14))
  elseif kind == "AWS::Amplify::App" and attr == "DefaultDomain" then
    value = id .. ".amplifyapp.com"
  elseif attr:match("Url$") or attr:match("URL$") or attr == "Endpoint" then
    value = ("https://%s.%s.%s.amazonaws.com/"):format(id:lower(), service_of(kind), region)
  elseif attr:match("Name$") then
    value = id:match("([^/:]+)$")
  else
    value = ("%s.%s"):format(id, attr)
  end
  r.attrs[attr] = value
  return value
end

-- Whether the template's condition `name` holds (cached in env).
local function condition(env, name)
  env.condition_cache = env.condition_cache or {}
  local cached = env.condition_cache[name]
  if cached ~= nil then
    if cached == "evaluating" then invalid(("Circular dependency in Conditions: [%s]"):format(name)) end
    return cached
  end
  local def = env.model.conditions[name]
  if def == nil then invalid(("Template format error: Unresolved condition dependencies [%s]"):format(name)) end
  env.condition_cache[name] = "evaluating"
  local value = resolve(def, env) == true
  env.condition_cache[name] = value
  return value
end

-- A value as CloudFormation writes it into a string: lists comma-separated.
local function as_string(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = as_string(x) end
    return table.concat(parts, ",")
  end
  if v == true then return "true" elseif v == false then return "false" end
  return v ~= nil and tostring(v) or ""
end

-- What Fn::ImportValue sees: the exports of the live stacks.
local function exports_of(env)
  local exports = {}
  for _, stack in pairs(env.sb.state.aws.stacks) do
    if not stack.deleted then
      for _, out in ipairs(stack.outputs or {}) do
        if out.export then exports[out.export] = out.value end
      end
    end
  end
  return exports
end

-- Each intrinsic function: fn(arg, env) -> its value.
local FN = {
  Ref = function(arg, env) return ref(env, resolve(arg, env)) end,
  Condition = function(arg, env) return condition(env, arg) end,
  ["Fn::GetAtt"] = function(arg, env)
    local target, attr
    if type(arg) == "string" then target, attr = arg:match("^([^%.]+)%.(.+)$") else target, attr = arg[1], resolve(arg[2], env) end
    return get_att(env, target, attr)
  end,
  ["Fn::Sub"] = function(arg, env)
    local s, vars = arg, {}
    if type(arg) == "table" then s, vars = arg[1], resolve(arg[2] or {}, env) end
    return (s:gsub("%${([^}]*)}", function(name)
      if name:sub(1, 1) == "!" then return "${" .. name:sub(2) .. "}" end
      name = trim(name)
      if vars[name] ~= nil then return as_string(vars[name]) end
      local target, attr = name:match("^([^%.]+)%.(.+)$")
      if target and not is_pseudo(name) then return as_string(get_att(env, target, attr)) end
      return as_string(ref(env, name))
    end))
  end,
  ["Fn::Join"] = function(arg, env)
    local items = resolve(arg[2], env)
    local parts = {}
    for i, x in ipairs(items) do parts[i] = as_string(x) end
    return table.concat(parts, arg[1])
  end,
  ["Fn::Select"] = function(arg, env)
    local items = resolve(arg[2], env)
    return items[(math.tointeger(tonumber(resolve(arg[1], env))) or 0) + 1]
  end,
  ["Fn::Split"] = function(arg, env)
    local s, items = as_string(resolve(arg[2], env)), {}
    local start = 1
    while true do
      local i, j = s:find(arg[1], start, true)
      if not i then break end
      items[#items + 1] = s:sub(start, i - 1)
      start = j + 1
    end
    items[#items + 1] = s:sub(start)
    return items
  end,
  ["Fn::If"] = function(arg, env)
    if condition(env, arg[1]) then return resolve(arg[2], env) end
    return resolve(arg[3], env)
  end,
  ["Fn::Equals"] = function(arg, env) return as_string(resolve(arg[1], env)) == as_string(resolve(arg[2], env)) end,
  ["Fn::Not"] = function(arg, env) return not resolve(arg[1], env) end,
  ["Fn::And"] = function(arg, env)
    for _, c in ipairs(arg) do if not resolve(c, env) then return false end end
    return true
  end,
  ["Fn::Or"] = function(arg, env)
    for _, c in ipairs(arg) do if resolve(c, env) then return true end end
    return false
  end,
  ["Fn::FindInMap"] = function(arg, env)
    local map = env.model.mappings[resolve(arg[1], env)] or {}
    local top = map[resolve(arg[2], env)] or {}
    return top[resolve(arg[3], env)]
  end,
  ["Fn::ImportValue"] = function(arg, env)
    local name = as_string(resolve(arg, env))
    local value = exports_of(env)[name]
    if value == nil then invalid(("No export named %s found."):format(name)) end
    return value
  end,
  ["Fn::Base64"] = function(arg, env) return crypto.base64_encode(as_string(resolve(arg, env))) end,
  ["Fn::GetAZs"] = function(_, env) return { env.region .. "a", env.region .. "b", env.region .. "c" } end,
}

-- eval.resolve(v, env) -> v with every intrinsic function evaluated; AWS::NoValue drops the key
-- or list item it stands in.
function resolve(v, env)
  if type(v) ~= "table" or v == NOVALUE then return v end
  local fn, arg = intrinsic(v)
  if FN[fn] then return FN[fn](arg, env) end
  local out = {}
  local is_array = #v > 0
  for k, x in pairs(v) do
    local r = resolve(x, env)
    if r ~= NOVALUE then
      if is_array and math.type(k) == "integer" then out[#out + 1] = r else out[k] = r end
    end
  end
  return out
end
eval.resolve = resolve

-- The resources whose Condition holds under these parameters, and their dependency order.
function eval.active_resources(env)
  local active = {}
  for logical, def in pairs(env.model.resources) do
    if def.Condition == nil or condition(env, def.Condition) then active[logical] = def end
  end
  return active, tpl.dependency_order(active)
end

-- A made-up physical id in the shape AWS gives that type; the naming property's value when set.
function eval.physical_id(env, logical, def)
  local name_prop = tpl.NAME_PROPS[def.Type]
  if name_prop and type(def.Properties) == "table" and def.Properties[name_prop] ~= nil then
    local ok, name = pcall(resolve, def.Properties[name_prop], env)
    if ok and type(name) == "string" then return name end
  end
  local stack_part, logical_part = env.stack.name:sub(1, 30), logical:sub(1, 20)
  local generated = ("%s-%s-%s"):format(stack_part, logical_part, wire.random_upper(12))
  local kind = def.Type
  if kind == "AWS::S3::Bucket" then return generated:lower()
  elseif kind == "AWS::ApiGateway::RestApi" or kind == "AWS::ApiGatewayV2::Api" then return wire.random_lower(10)
  elseif kind == "AWS::ApiGateway::Stage" or kind == "AWS::ApiGatewayV2::Stage" then
    local stage = type(def.Properties) == "table" and def.Properties.StageName
    return type(stage) == "string" and stage or "Prod"
  elseif kind == "AWS::ApiGateway::Deployment" then return wire.random_lower(6)
  elseif kind == "AWS::SNS::Topic" then return ("arn:aws:sns:%s:%s:%s"):format(env.region, env.account, generated)
  elseif kind == "AWS::SQS::Queue" then
    return ("https://sqs.%s.amazonaws.com/%s/%s"):format(env.region, env.account, generated)
  elseif kind == "AWS::Amplify::App" then return "d" .. wire.random_lower(13)
  elseif kind == tpl.STACK_TYPE then
    return ("arn:aws:cloudformation:%s:%s:stack/%s/%s"):format(env.region, env.account, generated, wire.uuid())
  end
  return generated
end

-- The stack's outputs whose Condition holds: {key, value, description, export}, by key.
function eval.outputs(env)
  local outputs = {}
  for _, key in ipairs(wire.sorted_keys(env.model.outputs)) do
    local out = env.model.outputs[key]
    if out.Condition == nil or condition(env, out.Condition) then
      local export = type(out.Export) == "table" and out.Export.Name ~= nil and as_string(resolve(out.Export.Name, env)) or nil
      outputs[#outputs + 1] = { key = key, value = as_string(resolve(out.Value, env)), description = out.Description,
        export = export }
    end
  end
  return outputs
end

return eval
