-- CloudFormation (Query protocol, 2010-05-15): templates, change sets and stacks, moving on as
-- they are polled (one step = sb.state.aws.step_seconds): a change set is CREATE_PENDING for a
-- step, CREATE_IN_PROGRESS for one more, then CREATE_COMPLETE (or FAILED when it changes
-- nothing); an executed stack creates, updates or deletes one resource per two steps, in
-- dependency order (ties alphabetical), then completes.
--
-- To make a resource fail, put in its Metadata
--   "stagehost:fail": "<reason>"
-- It then ends CREATE_FAILED (UPDATE_FAILED when modified) with that reason as its
-- ResourceStatusReason, the resources after it are not touched, and the stack rolls back:
-- ROLLBACK_IN_PROGRESS -> ROLLBACK_COMPLETE on a create, UPDATE_ROLLBACK_IN_PROGRESS ->
-- UPDATE_ROLLBACK_COMPLETE on an update.
--
-- Templates are JSON, or YAML when the stagehost.yaml module is available. Intrinsic functions
-- (Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split, Fn::If, Fn::FindInMap,
-- Fn::ImportValue, Fn::Base64, Fn::GetAZs) and Conditions are evaluated; physical ids and
-- attributes are made up in the shapes AWS uses. The AWS::Serverless-2016-10-31 transform is
-- expanded to the main resources SAM creates (functions with their implicit roles, the implicit
-- ServerlessRestApi / ServerlessHttpApi), enough for outputs such as ${ServerlessRestApi}.
-- Replacement in change sets is an approximation: True when the type or a naming property
-- (BucketName, FunctionName, ...) changes, False otherwise.
local crypto = require "stagehost.crypto"
local json = require "stagehost.json"
local wire = require "stagehost.sandbox.wire"

local cfn = {
  protocol = "query",
  version = "2010-05-15",
  namespace = "http://cloudformation.amazonaws.com/doc/2010-05-15/",
  actions = {},
}

local NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."
local SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
local STACK_TYPE = "AWS::CloudFormation::Stack"
local FAIL_KEY = "stagehost:fail"

local TOP_LEVEL = { AWSTemplateFormatVersion = true, Description = true, Metadata = true, Parameters = true,
  Rules = true, Mappings = true, Conditions = true, Transform = true, Resources = true, Outputs = true, Hooks = true }

local IAM_TYPES = { ["AWS::IAM::AccessKey"] = true, ["AWS::IAM::Group"] = true, ["AWS::IAM::InstanceProfile"] = true,
  ["AWS::IAM::Policy"] = true, ["AWS::IAM::Role"] = true, ["AWS::IAM::User"] = true,
  ["AWS::IAM::UserToGroupAddition"] = true, ["AWS::IAM::ManagedPolicy"] = true }
local IAM_NAME_PROPS = { "RoleName", "UserName", "GroupName", "ManagedPolicyName", "InstanceProfileName" }

-- the property that names a resource: its physical id when given, and a change to it replaces
local NAME_PROPS = {
  ["AWS::S3::Bucket"] = "BucketName", ["AWS::Lambda::Function"] = "FunctionName",
  ["AWS::DynamoDB::Table"] = "TableName", ["AWS::IAM::Role"] = "RoleName", ["AWS::IAM::User"] = "UserName",
  ["AWS::SQS::Queue"] = "QueueName", ["AWS::SNS::Topic"] = "TopicName", ["AWS::Logs::LogGroup"] = "LogGroupName",
  ["AWS::ECR::Repository"] = "RepositoryName", ["AWS::IAM::ManagedPolicy"] = "ManagedPolicyName",
  ["AWS::StepFunctions::StateMachine"] = "StateMachineName", ["AWS::Events::Rule"] = "Name",
}
local REPLACING_PROPS = { KeySchema = true, AvailabilityZone = true, CidrBlock = true, VpcId = true, ImageId = true,
  Engine = true }

function cfn.init(sb)
  local state = sb.state.aws
  state.stacks = state.stacks or {}           -- by stack id, deleted ones included
  state.stack_names = state.stack_names or {} -- live stack name -> stack id
  state.change_sets = state.change_sets or {} -- by change set id
end

function cfn.handle(sb, _, ctx)
  cfn.advance_all(sb)
  return wire.query_dispatch(cfn, sb, ctx)
end

local function validation(message) wire.fail("ValidationError", message) end
local function format_error(message) validation("Template format error: " .. message) end

local function step_seconds(sb) return sb.state.aws.step_seconds end

---------------------------------------------------------------------------------------------------
-- templates: parse, check, expand

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function decode_template(body)
  if body == nil or body == "" then validation("Either Template URL or Template Body must be specified.") end
  local template
  if trim(body):sub(1, 1) == "{" then
    local ok, decoded = pcall(json.decode, body)
    if not ok then format_error("JSON not well-formed. (" .. tostring(decoded):gsub("^json%.decode: ", "") .. ")") end
    template = decoded
  else
    local loaded, yaml = pcall(require, "stagehost.yaml")
    if not loaded then
      format_error("YAML templates need the stagehost.yaml module, which this build lacks")
    end
    -- a failure is nil + message from the world, or an error raised
    local ok, decoded, problem = pcall(yaml.decode, body)
    if not ok or decoded == nil then
      format_error("YAML not well-formed. (" .. tostring(ok and problem or decoded) .. ")")
    end
    template = decoded
  end
  if type(template) ~= "table" then format_error("YAML not well-formed. (the template is not a mapping)") end
  return template
end

local function list_of(v)
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return { v }
end

-- The single key of an intrinsic function call ({"Ref": x}), or nil.
local function intrinsic(v)
  if type(v) ~= "table" then return nil end
  local key = next(v)
  if key == nil or next(v, key) ~= nil or type(key) ~= "string" then return nil end
  if key == "Ref" or key == "Condition" or key:sub(1, 4) == "Fn::" then return key, v[key] end
  return nil
end

-- Fn::Sub's string: calls fn(name) for each ${name}, skipping ${!literal}.
local function sub_names(s, fn)
  for name in s:gmatch("%${([^}]*)}") do
    if name:sub(1, 1) ~= "!" then fn(trim(name)) end
  end
end

-- Walk a value; visit(kind, target, attribute) for every Ref ("ref") and GetAtt ("getatt").
local function walk_refs(v, visit)
  if type(v) ~= "table" then return end
  local fn, arg = intrinsic(v)
  if fn == "Ref" then
    if type(arg) == "string" then visit("ref", arg) end
    return
  elseif fn == "Fn::GetAtt" then
    local target, attr
    if type(arg) == "string" then target, attr = arg:match("^([^%.]+)%.(.+)$") else target, attr = arg[1], arg[2] end
    if type(target) == "string" then visit("getatt", target, attr) end
    return
  elseif fn == "Fn::Sub" then
    local s, vars = arg, nil
    if type(arg) == "table" then s, vars = arg[1], arg[2] end
    walk_refs(vars, visit)
    if type(s) == "string" then
      sub_names(s, function(name)
        if vars and vars[name] ~= nil then return end
        local target, attr = name:match("^([^%.]+)%.(.+)$")
        if target then visit("getatt", target, attr) else visit("ref", name) end
      end)
    end
    return
  end
  for _, child in pairs(v) do walk_refs(child, visit) end
end

local function is_pseudo(name) return name:sub(1, 5) == "AWS::" end

-- SAM: expand the transform's resource types into the resources SAM would create. Not all of
-- SAM: the resources whose names templates refer to.
local function expand_sam(template)
  local resources, extra = template.Resources, {}
  local globals = type(template.Globals) == "table" and template.Globals or {}
  local function add(logical, def) if resources[logical] == nil then extra[logical] = def end end
  for logical, def in pairs(resources) do
    local kind = type(def) == "table" and def.Type
    local props = type(def) == "table" and def.Properties or {}
    if kind == "AWS::Serverless::Function" then
      for k, v in pairs(type(globals.Function) == "table" and globals.Function or {}) do
        if props[k] == nil then props[k] = v end
      end
      def.Type, def.Properties = "AWS::Lambda::Function", props
      if props.Role == nil then
        add(logical .. "Role", { Type = "AWS::IAM::Role", Properties = { AssumeRolePolicyDocument = {} } })
        props.Role = { ["Fn::GetAtt"] = { logical .. "Role", "Arn" } }
      end
      for event_name, event in pairs(type(props.Events) == "table" and props.Events or {}) do
        local event_props = type(event) == "table" and event.Properties or {}
        if event.Type == "Api" and event_props.RestApiId == nil then
          add("ServerlessRestApi", { Type = "AWS::ApiGateway::RestApi", Properties = { Name = { Ref = "AWS::StackName" } } })
          add("ServerlessRestApiProdStage", { Type = "AWS::ApiGateway::Stage",
            Properties = { StageName = "Prod", RestApiId = { Ref = "ServerlessRestApi" } } })
          add(logical .. event_name .. "PermissionProd", { Type = "AWS::Lambda::Permission",
            Properties = { FunctionName = { Ref = logical }, SourceArn = { Ref = "ServerlessRestApi" } } })
        elseif event.Type == "HttpApi" and event_props.ApiId == nil then
          add("ServerlessHttpApi", { Type = "AWS::ApiGatewayV2::Api", Properties = {} })
          add("ServerlessHttpApiApiGatewayDefaultStage", { Type = "AWS::ApiGatewayV2::Stage",
            Properties = { StageName = "$default", ApiId = { Ref = "ServerlessHttpApi" } } })
        end
      end
      props.Events = nil
    elseif kind == "AWS::Serverless::Api" then
      def.Type = "AWS::ApiGateway::RestApi"
      local stage = props.StageName or "Prod"
      add(logical .. (type(stage) == "string" and stage or "Prod") .. "Stage", { Type = "AWS::ApiGateway::Stage",
        Properties = { StageName = stage, RestApiId = { Ref = logical } } })
    elseif kind == "AWS::Serverless::HttpApi" then
      def.Type = "AWS::ApiGatewayV2::Api"
    elseif kind == "AWS::Serverless::SimpleTable" then
      def.Type = "AWS::DynamoDB::Table"
    elseif kind == "AWS::Serverless::LayerVersion" then
      def.Type = "AWS::Lambda::LayerVersion"
    elseif kind == "AWS::Serverless::StateMachine" then
      def.Type = "AWS::StepFunctions::StateMachine"
    elseif kind == "AWS::Serverless::Application" then
      def.Type = STACK_TYPE
    end
  end
  for logical, def in pairs(extra) do resources[logical] = def end
end

-- Resources in dependency order (Ref, GetAtt, Sub, DependsOn), ties alphabetical.
local function dependency_order(resources)
  local deps, dependents, missing = {}, {}, {}
  for logical, def in pairs(resources) do
    deps[logical] = {}
    local function need(target)
      if target ~= logical and resources[target] then deps[logical][target] = true end
    end
    walk_refs(def.Properties, function(_, target) need(target) end)
    for _, target in ipairs(list_of(def.DependsOn)) do
      if resources[target] then need(target) else missing[#missing + 1] = target end
    end
  end
  if #missing > 0 then
    table.sort(missing)
    format_error(("Unresolved resource dependencies [%s] in the Resources block of the template"):format(table.concat(missing, ", ")))
  end
  local count = {}
  for logical, needs in pairs(deps) do
    count[logical] = 0
    for target in pairs(needs) do
      count[logical] = count[logical] + 1
      dependents[target] = dependents[target] or {}
      table.insert(dependents[target], logical)
    end
  end
  local ready, order = {}, {}
  for logical, n in pairs(count) do if n == 0 then ready[#ready + 1] = logical end end
  while #ready > 0 do
    table.sort(ready, function(a, b) return a > b end)
    local logical = table.remove(ready)
    order[#order + 1] = logical
    for _, d in ipairs(dependents[logical] or {}) do
      count[d] = count[d] - 1
      if count[d] == 0 then ready[#ready + 1] = d end
    end
  end
  if #order < #wire.sorted_keys(resources) then
    local cycle = {}
    for logical, n in pairs(count) do if n > 0 then cycle[#cycle + 1] = logical end end
    table.sort(cycle)
    validation(("Circular dependency between resources: [%s]"):format(table.concat(cycle, ", ")))
  end
  return order
end

-- Parse and check a template body -> its model: {body, template, description, params,
-- param_keys, resources, conditions, outputs, transforms}.
local function load_template(body)
  local template = decode_template(body)
  local transforms = list_of(template.Transform)
  local has_sam = false
  for _, t in ipairs(transforms) do if t == SAM_TRANSFORM then has_sam = true end end
  local unknown = {}
  for key in pairs(template) do
    if not TOP_LEVEL[key] and not (key == "Globals" and has_sam) then unknown[#unknown + 1] = tostring(key) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    format_error(("Invalid template property or properties [%s]"):format(table.concat(unknown, ", ")))
  end
  if template.AWSTemplateFormatVersion ~= nil and tostring(template.AWSTemplateFormatVersion) ~= "2010-09-09" then
    format_error(("Unsupported template format version: %s"):format(tostring(template.AWSTemplateFormatVersion)))
  end
  if type(template.Resources) ~= "table" or next(template.Resources) == nil then
    format_error("At least one Resources member must be defined.")
  end
  local params = {}
  for key, def in pairs(type(template.Parameters) == "table" and template.Parameters or {}) do
    if type(def) ~= "table" or type(def.Type) ~= "string" then
      format_error(("[/Parameters/%s] Every Parameters object must contain a Type member."):format(key))
    end
    params[key] = {
      type = def.Type,
      default = def.Default ~= nil and tostring(def.Default) or nil,
      no_echo = def.NoEcho == true or def.NoEcho == "true",
      description = def.Description,
      allowed = type(def.AllowedValues) == "table" and def.AllowedValues or nil,
    }
  end
  local original_types = {}
  for logical, def in pairs(template.Resources) do
    if type(def) ~= "table" or type(def.Type) ~= "string" then
      format_error(("[/Resources/%s] Every Resources object must contain a Type member."):format(logical))
    end
    original_types[logical] = def.Type
  end
  local unrecognized = {}
  for _, kind in pairs(original_types) do
    local sam = kind:match("^AWS::Serverless::")
    if (sam and not has_sam) or not (kind:match("^[%w]+::[%w]+::[%w]+$") or kind:match("^Custom::[%w_@%-]+$")) then
      unrecognized[#unrecognized + 1] = kind
    end
  end
  if #unrecognized > 0 then
    table.sort(unrecognized)
    format_error(("Unrecognized resource types: [%s]"):format(table.concat(unrecognized, ", ")))
  end
  local declared_types = {}
  for _, kind in pairs(original_types) do declared_types[kind] = true end
  if has_sam then expand_sam(template) end

  local resources = template.Resources
  local conditions = type(template.Conditions) == "table" and template.Conditions or {}
  local outputs = type(template.Outputs) == "table" and template.Outputs or {}
  local unresolved, seen = {}, {}
  local function check(kind, target)
    local known = params[target] or resources[target] or is_pseudo(target)
    if kind == "getatt" then known = resources[target] end
    if not known and not seen[target] then
      seen[target] = true
      unresolved[#unresolved + 1] = target
    end
  end
  for _, def in pairs(resources) do
    walk_refs(def.Properties, check)
    if def.Condition ~= nil and conditions[def.Condition] == nil then
      format_error(("Unresolved dependencies [%s]. Cannot reference resources in the Conditions block of the template"):format(tostring(def.Condition)))
    end
  end
  for key, out in pairs(outputs) do
    if type(out) ~= "table" or out.Value == nil then
      format_error(("[/Outputs/%s] 'null' values are not allowed in templates"):format(key))
    end
    walk_refs(out, check)
  end
  if #unresolved > 0 then
    table.sort(unresolved)
    format_error(("Unresolved resource dependencies [%s] in the Resources block of the template"):format(table.concat(unresolved, ", ")))
  end
  local param_keys = wire.sorted_keys(params)
  return {
    body = body, template = template, description = template.Description, params = params, param_keys = param_keys,
    resources = resources, conditions = conditions, outputs = outputs, mappings = template.Mappings or {},
    transforms = transforms, declared_types = declared_types,
  }
end

-- The capabilities a model needs, and why (types, sorted): CAPABILITY_IAM for IAM resources
-- (CAPABILITY_NAMED_IAM when they carry names), CAPABILITY_AUTO_EXPAND for transforms.
local function required_capabilities(model, declared_only)
  local caps, why = {}, {}
  local named, iam = false, false
  local types = {}
  if declared_only then
    for kind in pairs(model.declared_types) do types[#types + 1] = { kind = kind } end
  else
    for _, def in pairs(model.resources) do types[#types + 1] = { kind = def.Type, props = def.Properties } end
  end
  for _, t in ipairs(types) do
    if IAM_TYPES[t.kind] then
      iam = true
      why[t.kind] = true
      for _, p in ipairs(IAM_NAME_PROPS) do
        if type(t.props) == "table" and t.props[p] ~= nil then named = true end
      end
    end
  end
  if named then caps[#caps + 1] = "CAPABILITY_NAMED_IAM" elseif iam then caps[#caps + 1] = "CAPABILITY_IAM" end
  if #model.transforms > 0 then
    caps[#caps + 1] = "CAPABILITY_AUTO_EXPAND"
    for _, t in ipairs(model.transforms) do why[tostring(t)] = true end
  end
  return caps, wire.sorted_keys(why)
end

---------------------------------------------------------------------------------------------------
-- evaluation: intrinsic functions, conditions, physical ids and attributes

local NOVALUE = setmetatable({}, { __name = "AWS::NoValue" })

-- env: {stack, model, params (values), resources (logical -> record), region, account, sb}
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
  validation(("Template error: resource %s is not available yet"):format(name))
end

local function service_of(kind)
  local service, resource = kind:match("^AWS::([%w]+)::([%w]+)$")
  return (service or "custom"):lower(), (resource or kind):lower()
end

-- Fn::GetAtt: attributes in the shapes AWS gives them, computed once per resource.
local function get_att(env, logical, attr)
  local r = env.resources[logical]
  if not r or not r.physical then
    validation(("Template error: instance of Fn::GetAtt references undefined resource %s"):format(logical))
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

local function condition_value(env, name)
  env.condition_cache = env.condition_cache or {}
  local cached = env.condition_cache[name]
  if cached ~= nil then
    if cached == "evaluating" then validation(("Circular dependency in Conditions: [%s]"):format(name)) end
    return cached
  end
  local def = env.model.conditions[name]
  if def == nil then validation(("Template format error: Unresolved condition dependencies [%s]"):format(name)) end
  env.condition_cache[name] = "evaluating"
  local value = resolve(def, env) == true
  env.condition_cache[name] = value
  return value
end

local function as_string(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = as_string(x) end
    return table.concat(parts, ",")
  end
  if v == true then return "true" elseif v == false then return "false" end
  return v ~= nil and tostring(v) or ""
end

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

function resolve(v, env)
  if type(v) ~= "table" or v == NOVALUE then return v end
  local fn, arg = intrinsic(v)
  if fn == "Ref" then return ref(env, resolve(arg, env))
  elseif fn == "Condition" then return condition_value(env, arg)
  elseif fn == "Fn::GetAtt" then
    local target, attr
    if type(arg) == "string" then target, attr = arg:match("^([^%.]+)%.(.+)$") else target, attr = arg[1], resolve(arg[2], env) end
    return get_att(env, target, attr)
  elseif fn == "Fn::Sub" then
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
  elseif fn == "Fn::Join" then
    local items = resolve(arg[2], env)
    local parts = {}
    for i, x in ipairs(items) do parts[i] = as_string(x) end
    return table.concat(parts, arg[1])
  elseif fn == "Fn::Select" then
    local items = resolve(arg[2], env)
    return items[(math.tointeger(tonumber(resolve(arg[1], env))) or 0) + 1]
  elseif fn == "Fn::Split" then
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
  elseif fn == "Fn::If" then
    if condition_value(env, arg[1]) then return resolve(arg[2], env) end
    return resolve(arg[3], env)
  elseif fn == "Fn::Equals" then return as_string(resolve(arg[1], env)) == as_string(resolve(arg[2], env))
  elseif fn == "Fn::Not" then return not resolve(arg[1], env)
  elseif fn == "Fn::And" then
    for _, c in ipairs(arg) do if not resolve(c, env) then return false end end
    return true
  elseif fn == "Fn::Or" then
    for _, c in ipairs(arg) do if resolve(c, env) then return true end end
    return false
  elseif fn == "Fn::FindInMap" then
    local map = env.model.mappings[resolve(arg[1], env)] or {}
    local top = map[resolve(arg[2], env)] or {}
    return top[resolve(arg[3], env)]
  elseif fn == "Fn::ImportValue" then
    local name = as_string(resolve(arg, env))
    local value = exports_of(env)[name]
    if value == nil then validation(("No export named %s found."):format(name)) end
    return value
  elseif fn == "Fn::Base64" then return crypto.base64_encode(as_string(resolve(arg, env)))
  elseif fn == "Fn::GetAZs" then return { env.region .. "a", env.region .. "b", env.region .. "c" }
  end
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

-- The resources whose Condition holds under these parameters, in dependency order.
local function active_resources(env)
  local active = {}
  for logical, def in pairs(env.model.resources) do
    if def.Condition == nil or condition_value(env, def.Condition) then active[logical] = def end
  end
  return active, dependency_order(active)
end

-- A made-up physical id in the shape AWS gives that type.
local function physical_id(env, logical, def)
  local name_prop = NAME_PROPS[def.Type]
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
  elseif kind == STACK_TYPE then
    return ("arn:aws:cloudformation:%s:%s:stack/%s/%s"):format(env.region, env.account, generated, wire.uuid())
  end
  return generated
end

local function fail_reason_of(def)
  local meta = type(def) == "table" and def.Metadata
  local reason = type(meta) == "table" and meta[FAIL_KEY]
  if reason == nil or reason == false then return nil end
  return tostring(reason)
end

---------------------------------------------------------------------------------------------------
-- parameters

-- The parameter values of a change set: given ones, previous ones (UsePreviousValue), defaults.
local function parameter_values(model, members, previous)
  local values, unknown, missing = {}, {}, {}
  for _, m in ipairs(members) do
    local key = type(m) == "table" and m.ParameterKey
    if key then
      if not model.params[key] then
        unknown[#unknown + 1] = key
      elseif m.UsePreviousValue == "true" then
        if not previous or previous[key] == nil then
          validation(("Invalid input for parameter key %s. Cannot specify usePreviousValue as true for a parameter key not in the previous template"):format(key))
        end
        values[key] = previous[key]
      else
        values[key] = m.ParameterValue or ""
      end
    end
  end
  if #unknown > 0 then
    table.sort(unknown)
    validation(("Parameters: [%s] do not exist in the template"):format(table.concat(unknown, ", ")))
  end
  for _, key in ipairs(model.param_keys) do
    local def = model.params[key]
    if values[key] == nil then values[key] = def.default end
    if values[key] == nil then
      missing[#missing + 1] = key
    else
      if def.allowed then
        local allowed = false
        for _, a in ipairs(def.allowed) do if tostring(a) == values[key] then allowed = true end end
        if not allowed then
          validation(("Parameter '%s' must be one of AllowedValues"):format(key))
        end
      end
      if def.type == "Number" and not tonumber(values[key]) then
        validation(("Parameter '%s' must be a number."):format(key))
      end
    end
  end
  if #missing > 0 then validation(("Parameters: [%s] must have values"):format(table.concat(missing, ", "))) end
  return values
end

local function parameters_xml(model, values)
  local list = {}
  for _, key in ipairs(model and model.param_keys or {}) do
    if values[key] ~= nil then
      list[#list + 1] = { key = key, value = model.params[key].no_echo and "****" or values[key] }
    end
  end
  return wire.list("Parameters", list, function(p)
    return wire.el("ParameterKey", p.key) .. wire.el("ParameterValue", p.value)
  end)
end

local function tags_xml(tags)
  return wire.list("Tags", tags, function(t) return wire.el("Key", t.Key) .. wire.el("Value", t.Value) end)
end

---------------------------------------------------------------------------------------------------
-- stacks: lookup, events, timed plans

local function stack_arn(sb, region, name)
  return ("arn:aws:cloudformation:%s:%s:stack/%s/%s"):format(region, sb.state.aws.account_id, name, wire.uuid())
end

-- By name (live stacks) or by stack id (deleted ones too); nil when there is none.
local function find_stack(sb, name_or_id)
  local state = sb.state.aws
  if name_or_id == nil then return nil end
  if name_or_id:sub(1, 4) == "arn:" then return state.stacks[name_or_id] end
  local id = state.stack_names[name_or_id]
  return id and state.stacks[id]
end

local function check_stack_name(name, field)
  if name == nil then
    validation(("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null"):format(field))
  end
  if name:sub(1, 4) ~= "arn:" and (not name:match("^%a[%w%-]*$") or #name > 128) then
    validation(("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*|arn:[-a-zA-Z0-9:/._+]*"):format(name, field))
  end
end

local function event(stack, t, logical, physical, kind, status, reason)
  stack.events[#stack.events + 1] = {
    id = wire.uuid(), time = t, logical = logical, physical = physical or "", type = kind, status = status,
    reason = reason,
  }
end

local function set_stack_status(stack, status, reason, t)
  stack.status, stack.reason = status, reason
  event(stack, t, stack.name, stack.id, STACK_TYPE, status, reason)
end

local function set_resource_status(stack, r, status, reason, t)
  r.status, r.reason, r.time = status, reason, t
  event(stack, t, r.logical, r.physical, r.type, status, reason)
end

-- Start a plan: steps[i](t) runs once now >= start + (i - 1) * step. The first runs at once.
local function start_plan(sb, stack, steps, at)
  stack.plan = { start = at or wire.clock(), step = step_seconds(sb), steps = steps, applied = 0 }
end

local function advance(stack)
  while stack.plan do
    local plan = stack.plan
    local now = wire.clock()
    while plan.applied < #plan.steps and plan.start + plan.applied * plan.step <= now do
      plan.applied = plan.applied + 1
      plan.steps[plan.applied](plan.start + (plan.applied - 1) * plan.step)
    end
    if plan.applied < #plan.steps then return end
    stack.plan = nil
    local queued = table.remove(stack.queued or {}, 1)
    if queued then queued(plan.start + #plan.steps * plan.step) end
  end
end

function cfn.advance_all(sb)
  for _, stack in pairs(sb.state.aws.stacks) do advance(stack) end
end

local function resolve_outputs(env)
  local outputs = {}
  for _, key in ipairs(wire.sorted_keys(env.model.outputs)) do
    local out = env.model.outputs[key]
    if out.Condition == nil or condition_value(env, out.Condition) then
      local export = type(out.Export) == "table" and out.Export.Name ~= nil and as_string(resolve(out.Export.Name, env)) or nil
      outputs[#outputs + 1] = { key = key, value = as_string(resolve(out.Value, env)), description = out.Description,
        export = export }
    end
  end
  return outputs
end

local function finish_change_set(sb, stack, result)
  local cs = stack.executing and sb.state.aws.change_sets[stack.executing]
  if cs then cs.execution = result end
  stack.executing = nil
end

-- The steps that create or update one resource (two steps); returns whether it fails.
local function touch_steps(steps, stack, env, logical, action, replacement)
  local def = env.model.resources[logical]
  local fail = fail_reason_of(def)
  local verb = action == "Add" and "CREATE" or "UPDATE"
  steps[#steps + 1] = function(t)
    local r = stack.resources[logical]
    if action == "Add" then
      r = { logical = logical, type = def.Type, def = def }
      stack.resources[logical] = r
      set_resource_status(stack, r, "CREATE_IN_PROGRESS", nil, t)
      r.physical = physical_id(env, logical, def)
      set_resource_status(stack, r, "CREATE_IN_PROGRESS", "Resource creation Initiated", t)
    else
      r.def, r.type = def, def.Type
      set_resource_status(stack, r, "UPDATE_IN_PROGRESS", nil, t)
      if replacement then
        r.replaced_physical = r.physical
        r.physical, r.attrs = physical_id(env, logical, def), nil
        set_resource_status(stack, r, "UPDATE_IN_PROGRESS",
          "Requested update requires the creation of a new physical resource; hence creating one.", t)
      end
    end
  end
  steps[#steps + 1] = function(t)
    local r = stack.resources[logical]
    set_resource_status(stack, r, verb .. (fail and "_FAILED" or "_COMPLETE"), fail, t)
  end
  return fail ~= nil
end

-- Two steps deleting a resource record: DELETE_IN_PROGRESS, DELETE_COMPLETE; `physical`
-- overrides the id shown (the old one of a replaced resource). drop removes the record.
local function delete_steps(steps, stack, logical, physical, drop)
  steps[#steps + 1] = function(t)
    local r = stack.resources[logical]
    if physical then event(stack, t, logical, physical, r.type, "DELETE_IN_PROGRESS") return end
    set_resource_status(stack, r, "DELETE_IN_PROGRESS", nil, t)
  end
  steps[#steps + 1] = function(t)
    local r = stack.resources[logical]
    if physical then
      event(stack, t, logical, physical, r.type, "DELETE_COMPLETE")
      r.replaced_physical = nil
      return
    end
    set_resource_status(stack, r, "DELETE_COMPLETE", nil, t)
    if drop then stack.resources[logical] = nil end
  end
end

local function failed_list(failed) return "[" .. failed .. "]" end

-- Execute a change set on its stack: create (from REVIEW_IN_PROGRESS) or update.
local function plan_execution(sb, stack, cs)
  local env = { sb = sb, stack = stack, model = cs.model, params = cs.params, resources = stack.resources,
    region = stack.region, account = sb.state.aws.account_id }
  local creating = cs.type == "CREATE"
  local prefix = creating and "CREATE" or "UPDATE"
  local steps = {}
  steps[1] = function(t)
    stack.executing = cs.id
    set_stack_status(stack, prefix .. "_IN_PROGRESS", "User Initiated", t)
  end
  local backup = {}
  for logical, r in pairs(stack.resources) do
    local copy = {}
    for k, v in pairs(r) do copy[k] = v end
    backup[logical] = copy
  end
  local _, order = active_resources(env)
  local by_logical = {}
  for _, change in ipairs(cs.changes) do by_logical[change.logical] = change end
  local touched, failed = {}, nil
  for _, logical in ipairs(order) do
    local change = by_logical[logical]
    if change and (change.action == "Add" or change.action == "Modify") then
      touched[#touched + 1] = change
      if touch_steps(steps, stack, env, logical, change.action, change.replacement == "True") then
        failed = change
        break
      end
    end
  end

  if failed then
    local what = failed.action == "Add" and "create" or "update"
    local reason = ("The following resource(s) failed to %s: %s. "):format(what, failed_list(failed.logical))
    if creating then
      reason = reason .. "Rollback requested by user."
      steps[#steps + 1] = function(t) set_stack_status(stack, "ROLLBACK_IN_PROGRESS", reason, t) end
      for i = #touched, 1, -1 do delete_steps(steps, stack, touched[i].logical) end
      steps[#steps + 1] = function(t)
        set_stack_status(stack, "ROLLBACK_COMPLETE", reason, t)
        stack.model, stack.params = cs.model, cs.params
        finish_change_set(sb, stack, "EXECUTE_FAILED")
      end
    else
      steps[#steps + 1] = function(t) set_stack_status(stack, "UPDATE_ROLLBACK_IN_PROGRESS", reason, t) end
      -- modified resources go back to what they were; added ones are deleted in the cleanup
      for i = #touched, 1, -1 do
        local change = touched[i]
        if change.action == "Modify" then
          local logical = change.logical
          steps[#steps + 1] = function(t)
            local r = stack.resources[logical]
            local old = backup[logical]
            r.def, r.type = old.def, old.type
            set_resource_status(stack, r, "UPDATE_IN_PROGRESS", nil, t)
          end
          steps[#steps + 1] = function(t)
            local r = stack.resources[logical]
            local new_physical = r.physical
            r.physical, r.attrs = backup[logical].physical, backup[logical].attrs
            r.replaced_physical = new_physical ~= r.physical and new_physical or nil
            set_resource_status(stack, r, "UPDATE_COMPLETE", nil, t)
          end
        end
      end
      steps[#steps + 1] = function(t) set_stack_status(stack, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", nil, t) end
      for i = #touched, 1, -1 do
        local change = touched[i]
        if change.action == "Add" then
          delete_steps(steps, stack, change.logical, nil, true)
        elseif change.replacement == "True" then
          -- the replacement made before the failure goes; the original stays
          local logical = change.logical
          steps[#steps + 1] = function(t)
            local r = stack.resources[logical]
            if r.replaced_physical then event(stack, t, logical, r.replaced_physical, r.type, "DELETE_IN_PROGRESS") end
          end
          steps[#steps + 1] = function(t)
            local r = stack.resources[logical]
            if r.replaced_physical then event(stack, t, logical, r.replaced_physical, r.type, "DELETE_COMPLETE") end
            r.replaced_physical = nil
          end
        end
      end
      steps[#steps + 1] = function(t)
        set_stack_status(stack, "UPDATE_ROLLBACK_COMPLETE", nil, t)
        stack.updated = t
        finish_change_set(sb, stack, "EXECUTE_FAILED")
      end
    end
    return steps
  end

  if not creating then
    steps[#steps + 1] = function(t) set_stack_status(stack, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", nil, t) end
    for i = #stack.order, 1, -1 do
      local logical = stack.order[i]
      local change = by_logical[logical]
      if change and change.action == "Remove" then
        delete_steps(steps, stack, logical, nil, true)
      elseif change and change.replacement == "True" then
        local old_physical = backup[logical] and backup[logical].physical
        delete_steps(steps, stack, logical, old_physical)
      end
    end
  end
  steps[#steps + 1] = function(t)
    env.condition_cache = nil
    stack.model, stack.params, stack.order = cs.model, cs.params, order
    stack.outputs = resolve_outputs(env)
    stack.capabilities, stack.tags, stack.change_set_id = cs.capabilities, cs.tags, cs.id
    if not creating then stack.updated = t end
    set_stack_status(stack, prefix .. "_COMPLETE", nil, t)
    finish_change_set(sb, stack, "EXECUTE_COMPLETE")
  end
  return steps
end

local function plan_delete(sb, stack)
  local steps = {}
  steps[1] = function(t) set_stack_status(stack, "DELETE_IN_PROGRESS", "User Initiated", t) end
  local order = {}
  for _, logical in ipairs(stack.order or {}) do order[#order + 1] = logical end
  -- resources a failed create left behind are not in the order yet
  for _, logical in ipairs(wire.sorted_keys(stack.resources)) do
    local listed = false
    for _, l in ipairs(order) do if l == logical then listed = true end end
    if not listed then order[#order + 1] = logical end
  end
  for i = #order, 1, -1 do
    local r = stack.resources[order[i]]
    if r and r.status ~= "DELETE_COMPLETE" then delete_steps(steps, stack, order[i]) end
  end
  steps[#steps + 1] = function(t)
    set_stack_status(stack, "DELETE_COMPLETE", nil, t)
    stack.deleted = t
    local state = sb.state.aws
    if state.stack_names[stack.name] == stack.id then state.stack_names[stack.name] = nil end
    for id, cs in pairs(state.change_sets) do
      if cs.stack_id == stack.id then state.change_sets[id] = nil end
    end
  end
  return steps
end

---------------------------------------------------------------------------------------------------
-- change sets

local function change_set_status(cs)
  local elapsed = wire.clock() - cs.created
  if elapsed < cs.step then return "CREATE_PENDING", nil end
  if elapsed < 2 * cs.step then return "CREATE_IN_PROGRESS", nil end
  return cs.final_status, cs.final_reason
end

local function execution_status(cs)
  if cs.execution then return cs.execution end
  local status = change_set_status(cs)
  if status == "CREATE_COMPLETE" then return "AVAILABLE" end
  return "UNAVAILABLE"
end

local function find_change_set(sb, name, stack_name)
  local state = sb.state.aws
  if name and name:sub(1, 4) == "arn:" then
    local cs = state.change_sets[name]
    if cs then return cs end
  elseif name then
    local stack = find_stack(sb, stack_name)
    if stack then
      for _, cs in pairs(state.change_sets) do
        if cs.stack_id == stack.id and cs.name == name then return cs end
      end
    end
  end
  wire.fail("ChangeSetNotFound", ("ChangeSet [%s] does not exist"):format(tostring(name)), 404)
end

local function property_diff(old_props, new_props)
  old_props = type(old_props) == "table" and old_props or {}
  new_props = type(new_props) == "table" and new_props or {}
  local changed = {}
  local keys = {}
  for k in pairs(old_props) do keys[k] = true end
  for k in pairs(new_props) do keys[k] = true end
  for _, key in ipairs(wire.sorted_keys(keys)) do
    if not wire.deep_equal(old_props[key], new_props[key]) then changed[#changed + 1] = key end
  end
  return changed
end

-- The parameters a resource definition refers to.
local function params_used(def, model)
  local used = {}
  walk_refs(def, function(kind, target) if kind == "ref" and model.params[target] then used[target] = true end end)
  return used
end

-- Compare the stack as it is with the change set's model -> the list of resource changes.
local function compute_changes(sb, stack, model, params)
  local new_env = { sb = sb, stack = stack, model = model, params = params, resources = {}, region = stack.region,
    account = sb.state.aws.account_id }
  local new_active, new_order = active_resources(new_env)
  local old_active = {}
  if stack.model and stack.status ~= "REVIEW_IN_PROGRESS" then
    for logical, r in pairs(stack.resources) do
      if r.status ~= "DELETE_COMPLETE" then old_active[logical] = r end
    end
  end
  local changes = {}
  for _, logical in ipairs(new_order) do
    local def, old = new_active[logical], old_active[logical]
    if not old then
      changes[#changes + 1] = { action = "Add", logical = logical, type = def.Type }
    else
      local details, replacement = {}, "False"
      if old.type ~= def.Type then replacement = "True" end
      for _, key in ipairs(property_diff(old.def.Properties, def.Properties)) do
        local recreate = (REPLACING_PROPS[key] or NAME_PROPS[def.Type] == key) and "Always" or "Never"
        if recreate == "Always" then replacement = "True" end
        details[#details + 1] = { attribute = "Properties", name = key, recreation = recreate,
          source = "DirectModification" }
      end
      local changed_params = {}
      for key in pairs(params_used(def.Properties, model)) do
        if stack.params[key] ~= params[key] then changed_params[#changed_params + 1] = key end
      end
      table.sort(changed_params)
      for _, key in ipairs(changed_params) do
        details[#details + 1] = { attribute = "Properties", recreation = "Never", source = "ParameterReference",
          causing = key }
      end
      local scope = {}
      if #details > 0 then scope[#scope + 1] = "Properties" end
      if not wire.deep_equal(old.def.Metadata, def.Metadata) then
        scope[#scope + 1] = "Metadata"
        details[#details + 1] = { attribute = "Metadata", recreation = "Never", source = "DirectModification" }
      end
      if replacement == "True" or #details > 0 then
        changes[#changes + 1] = { action = "Modify", logical = logical, type = def.Type, physical = old.physical,
          replacement = replacement, scope = scope, details = details }
      end
    end
  end
  for _, logical in ipairs(wire.sorted_keys(old_active)) do
    if not new_active[logical] then
      local old = old_active[logical]
      changes[#changes + 1] = { action = "Remove", logical = logical, type = old.type, physical = old.physical }
    end
  end
  return changes
end

local function changes_xml(cs)
  return wire.list("Changes", cs.changes, function(c)
    local detail_xml = wire.list("Details", c.details, function(d)
      return wire.raw_el("Target", wire.el("Attribute", d.attribute) .. wire.el("Name", d.name)
          .. wire.el("RequiresRecreation", d.recreation))
        .. wire.el("Evaluation", "Static") .. wire.el("ChangeSource", d.source) .. wire.el("CausingEntity", d.causing)
    end)
    return wire.el("Type", "Resource") .. wire.raw_el("ResourceChange", table.concat{
      wire.el("Action", c.action), wire.el("LogicalResourceId", c.logical), wire.el("PhysicalResourceId", c.physical),
      wire.el("ResourceType", c.type), wire.el("Replacement", c.replacement), wire.list("Scope", c.scope or {}),
      detail_xml,
    })
  end)
end

---------------------------------------------------------------------------------------------------
-- actions

local A = cfn.actions

-- The capabilities a template needs, why, and its transforms: what ValidateTemplate and
-- GetTemplateSummary both answer.
local function capabilities_summary(model)
  local caps, why = required_capabilities(model, true)
  local reason
  if #caps > 0 then reason = ("The following resource(s) require capabilities: [%s]"):format(table.concat(why, ", ")) end
  local declared = {}
  for _, t in ipairs(model.transforms) do declared[#declared + 1] = tostring(t) end
  return caps, reason, declared
end

local function template_body_only(params)
  if params.TemplateURL and not params.TemplateBody then
    validation("TemplateURL is not supported by the stagehost sandbox: send TemplateBody")
  end
end

function A.ValidateTemplate(_, params)
  template_body_only(params)
  local model = load_template(params.TemplateBody)
  local caps, reason, declared = capabilities_summary(model)
  return table.concat{
    wire.list("Parameters", model.param_keys, function(key)
      local p = model.params[key]
      return wire.el("ParameterKey", key) .. wire.el("DefaultValue", p.default) .. wire.el("NoEcho", p.no_echo)
        .. wire.el("Description", p.description)
    end),
    wire.el("Description", model.description),
    wire.list("Capabilities", caps),
    wire.el("CapabilitiesReason", reason),
    wire.list("DeclaredTransforms", declared),
  }
end

-- What `aws cloudformation deploy` reads before an update: the parameters of a template, or of
-- the template a stack runs.
function A.GetTemplateSummary(sb, params)
  local model
  if params.StackName then
    local stack = find_stack(sb, params.StackName)
    if not stack then validation(("Stack with id %s does not exist"):format(params.StackName)) end
    if not stack.model then validation(("Stack [%s] does not have a template yet"):format(stack.name)) end
    model = stack.model
  else
    template_body_only(params)
    model = load_template(params.TemplateBody)
  end
  local caps, reason, declared = capabilities_summary(model)
  return table.concat{
    wire.list("Parameters", model.param_keys, function(key)
      local p = model.params[key]
      local allowed = {}
      for i, a in ipairs(p.allowed or {}) do allowed[i] = tostring(a) end
      return wire.el("ParameterKey", key) .. wire.el("DefaultValue", p.default) .. wire.el("ParameterType", p.type)
        .. wire.el("NoEcho", p.no_echo) .. wire.el("Description", p.description)
        .. wire.raw_el("ParameterConstraints", wire.list("AllowedValues", allowed))
    end),
    wire.el("Description", model.description),
    wire.list("Capabilities", caps),
    wire.el("CapabilitiesReason", reason),
    wire.list("ResourceTypes", wire.sorted_keys(model.declared_types)),
    wire.el("Version", "2010-09-09"),
    wire.list("DeclaredTransforms", declared),
  }
end

function A.CreateChangeSet(sb, params, ctx)
  local state = sb.state.aws
  check_stack_name(params.StackName, "stackName")
  if params.ChangeSetName == nil or not params.ChangeSetName:match("^%a[%w%-]*$") or #params.ChangeSetName > 128 then
    validation(("1 validation error detected: Value '%s' at 'changeSetName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*"):format(tostring(params.ChangeSetName)))
  end
  local kind = params.ChangeSetType or "UPDATE"
  if kind ~= "CREATE" and kind ~= "UPDATE" then
    validation(("1 validation error detected: Value '%s' at 'changeSetType' failed to satisfy constraint: Member must satisfy enum value set: [CREATE, UPDATE, IMPORT]"):format(kind))
  end
  local stack = find_stack(sb, params.StackName)
  if kind == "UPDATE" then
    if not stack then validation(("Stack [%s] does not exist"):format(params.StackName)) end
    if stack.status == "REVIEW_IN_PROGRESS" then
      validation(("Stack [%s] does not exist"):format(stack.name))
    end
    if stack.plan or stack.status:match("_IN_PROGRESS$") then
      validation(("Stack:%s is in %s state and can not be updated."):format(stack.id, stack.status))
    end
    if stack.status == "ROLLBACK_COMPLETE" or stack.status:match("FAILED$") then
      validation(("Stack:%s is in %s state and can not be updated."):format(stack.id, stack.status))
    end
  elseif stack and stack.status ~= "REVIEW_IN_PROGRESS" then
    validation(("Stack [%s] already exists and cannot be created again with the changeSet [%s]."):format(stack.name, params.ChangeSetName))
  end
  if stack then
    for _, cs in pairs(state.change_sets) do
      if cs.stack_id == stack.id and cs.name == params.ChangeSetName then
        wire.fail("AlreadyExistsException", ("ChangeSet %s already exists"):format(params.ChangeSetName))
      end
    end
  end

  local body = params.TemplateBody
  if params.UsePreviousTemplate == "true" then
    if not stack or not stack.model then validation("UsePreviousTemplate is only allowed for an existing stack") end
    body = stack.model.body
  elseif params.TemplateURL and not body then
    validation("TemplateURL is not supported by the stagehost sandbox: send TemplateBody")
  end
  local model = load_template(body)
  local values = parameter_values(model, wire.members(params, "Parameters"), stack and stack.params)
  local given_caps = wire.members(params, "Capabilities")
  local has = {}
  for _, c in ipairs(given_caps) do has[c] = true end
  local needed = required_capabilities(model, false)
  local lacking = {}
  for _, c in ipairs(needed) do
    if not has[c] and not (c == "CAPABILITY_IAM" and has.CAPABILITY_NAMED_IAM) then lacking[#lacking + 1] = c end
  end
  if #lacking > 0 then
    wire.fail("InsufficientCapabilitiesException", ("Requires capabilities : [%s]"):format(table.concat(lacking, ", ")))
  end

  local now = wire.clock()
  if not stack then
    local id = stack_arn(sb, ctx.region, params.StackName)
    stack = { id = id, name = params.StackName, region = ctx.region, created = now, status = "REVIEW_IN_PROGRESS",
      events = {}, resources = {}, order = {}, params = {}, tags = {}, capabilities = {} }
    state.stacks[id], state.stack_names[stack.name] = stack, id
    set_stack_status(stack, "REVIEW_IN_PROGRESS", "User Initiated", now)
  end
  local tags = wire.members(params, "Tags")
  -- an update that names no tags keeps the stack's, as UpdateStack does
  if #tags == 0 and kind == "UPDATE" then tags = stack.tags or {} end
  local changes = compute_changes(sb, stack, model, values)
  local unchanged = kind == "UPDATE" and wire.deep_equal(stack.model.template, model.template)
    and wire.deep_equal(stack.params, values) and wire.deep_equal(stack.tags or {}, tags)
  local cs = {
    id = ("arn:aws:cloudformation:%s:%s:changeSet/%s/%s"):format(stack.region, state.account_id, params.ChangeSetName, wire.uuid()),
    name = params.ChangeSetName, stack_id = stack.id, stack_name = stack.name, type = kind, created = now,
    step = step_seconds(sb), model = model, params = values, changes = changes, capabilities = given_caps,
    tags = tags, description = params.Description,
    final_status = unchanged and "FAILED" or "CREATE_COMPLETE", final_reason = unchanged and NO_CHANGES or nil,
  }
  state.change_sets[cs.id] = cs
  return wire.el("Id", cs.id) .. wire.el("StackId", stack.id)
end

function A.DescribeChangeSet(sb, params)
  local cs = find_change_set(sb, params.ChangeSetName, params.StackName)
  local status, reason = change_set_status(cs)
  local ready = status == "CREATE_COMPLETE" or status == "FAILED"
  return table.concat{
    wire.el("ChangeSetName", cs.name), wire.el("ChangeSetId", cs.id), wire.el("StackId", cs.stack_id),
    wire.el("StackName", cs.stack_name), wire.el("Description", cs.description),
    parameters_xml(cs.model, cs.params), wire.el("CreationTime", wire.iso8601(cs.created)),
    wire.el("ExecutionStatus", execution_status(cs)), wire.el("Status", status), wire.el("StatusReason", reason),
    wire.list("NotificationARNs", {}), wire.raw_el("RollbackConfiguration", ""),
    wire.list("Capabilities", cs.capabilities), tags_xml(cs.tags),
    -- AWS lists the changes once it has computed them
    changes_xml(ready and cs or { changes = {} }),
    wire.el("IncludeNestedStacks", false),
  }
end

function A.ListChangeSets(sb, params)
  local stack = find_stack(sb, params.StackName)
  if not stack then validation(("Stack [%s] does not exist"):format(tostring(params.StackName))) end
  local list = {}
  for _, cs in pairs(sb.state.aws.change_sets) do
    if cs.stack_id == stack.id then list[#list + 1] = cs end
  end
  table.sort(list, function(a, b) return a.created < b.created end)
  return wire.list("Summaries", list, function(cs)
    local status, reason = change_set_status(cs)
    return table.concat{
      wire.el("StackId", cs.stack_id), wire.el("StackName", cs.stack_name), wire.el("ChangeSetId", cs.id),
      wire.el("ChangeSetName", cs.name), wire.el("ExecutionStatus", execution_status(cs)), wire.el("Status", status),
      wire.el("StatusReason", reason), wire.el("CreationTime", wire.iso8601(cs.created)),
      wire.el("Description", cs.description), wire.el("IncludeNestedStacks", false),
    }
  end)
end

function A.ExecuteChangeSet(sb, params)
  local state = sb.state.aws
  local cs = find_change_set(sb, params.ChangeSetName, params.StackName)
  local status = execution_status(cs)
  if status ~= "AVAILABLE" then
    wire.fail("InvalidChangeSetStatus", ("ChangeSet [%s] cannot be executed in its current execution status of [%s]"):format(cs.id, status))
  end
  local stack = state.stacks[cs.stack_id]
  if stack.plan then
    validation(("Stack:%s is in %s state and can not be updated."):format(stack.id, stack.status))
  end
  -- executing one change set makes the stack's other change sets obsolete: AWS deletes them
  for id, other in pairs(state.change_sets) do
    if other.stack_id == stack.id and other ~= cs then state.change_sets[id] = nil end
  end
  cs.execution = "EXECUTE_IN_PROGRESS"
  start_plan(sb, stack, plan_execution(sb, stack, cs))
  advance(stack)
  return ""
end

function A.DeleteChangeSet(sb, params)
  local cs = find_change_set(sb, params.ChangeSetName, params.StackName)
  if cs.execution == "EXECUTE_IN_PROGRESS" then
    wire.fail("InvalidChangeSetStatus", ("ChangeSet [%s] cannot be deleted while it is being executed"):format(cs.id))
  end
  sb.state.aws.change_sets[cs.id] = nil
  return ""
end

local function stack_xml(stack)
  -- outputs exist once a create completed; an update replaces them only when it completes
  local outputs = stack.outputs
  return table.concat{
    wire.el("StackId", stack.id), wire.el("StackName", stack.name), wire.el("ChangeSetId", stack.change_set_id),
    wire.el("Description", stack.model and stack.model.description),
    parameters_xml(stack.model, stack.params or {}),
    wire.el("CreationTime", wire.iso8601(stack.created)),
    wire.el("DeletionTime", stack.deleted and wire.iso8601(stack.deleted)),
    wire.el("LastUpdatedTime", stack.updated and wire.iso8601(stack.updated)),
    wire.raw_el("RollbackConfiguration", ""),
    wire.el("StackStatus", stack.status), wire.el("StackStatusReason", stack.reason),
    wire.el("DisableRollback", false), wire.list("NotificationARNs", {}),
    wire.list("Capabilities", stack.capabilities or {}),
    type(outputs) == "table" and wire.list("Outputs", outputs, function(o)
      return wire.el("OutputKey", o.key) .. wire.el("OutputValue", o.value) .. wire.el("Description", o.description)
        .. wire.el("ExportName", o.export)
    end) or "",
    tags_xml(stack.tags or {}), wire.el("EnableTerminationProtection", false),
    wire.raw_el("DriftInformation", wire.el("StackDriftStatus", "NOT_CHECKED")),
  }
end

function A.DescribeStacks(sb, params)
  local list = {}
  if params.StackName then
    local stack = find_stack(sb, params.StackName)
    if not stack then validation(("Stack with id %s does not exist"):format(params.StackName)) end
    list[1] = stack
  else
    for _, stack in pairs(sb.state.aws.stacks) do
      if not stack.deleted then list[#list + 1] = stack end
    end
    table.sort(list, function(a, b) return a.created > b.created end)
  end
  return wire.list("Stacks", list, stack_xml)
end

function A.ListStacks(sb, params)
  local filter = {}
  for _, s in ipairs(wire.members(params, "StackStatusFilter")) do filter[s] = true end
  local list = {}
  for _, stack in pairs(sb.state.aws.stacks) do
    if next(filter) == nil or filter[stack.status] then list[#list + 1] = stack end
  end
  table.sort(list, function(a, b) return a.created > b.created end)
  return wire.list("StackSummaries", list, function(stack)
    return table.concat{
      wire.el("StackId", stack.id), wire.el("StackName", stack.name),
      wire.el("TemplateDescription", stack.model and stack.model.description),
      wire.el("CreationTime", wire.iso8601(stack.created)),
      wire.el("LastUpdatedTime", stack.updated and wire.iso8601(stack.updated)),
      wire.el("DeletionTime", stack.deleted and wire.iso8601(stack.deleted)),
      wire.el("StackStatus", stack.status), wire.el("StackStatusReason", stack.reason),
    }
  end)
end

local function existing_stack(sb, name)
  local stack = find_stack(sb, name)
  if not stack then validation(("Stack [%s] does not exist"):format(tostring(name))) end
  return stack
end

function A.DescribeStackEvents(sb, params)
  local stack = existing_stack(sb, params.StackName)
  local page = sb.state.aws.page_size
  -- the token names the next (older) event, so events arriving between pages shift nothing
  local from = #stack.events
  if params.NextToken then
    from = math.tointeger(tonumber(params.NextToken))
    if not from or from < 1 or from > #stack.events then validation("Invalid NextToken") end
  end
  local events = {}
  local last = math.max(1, from - page + 1)
  for i = from, last, -1 do events[#events + 1] = stack.events[i] end
  return wire.list("StackEvents", events, function(e)
    return table.concat{
      wire.el("StackId", stack.id), wire.el("EventId", e.id), wire.el("StackName", stack.name),
      wire.el("LogicalResourceId", e.logical), wire.el("PhysicalResourceId", e.physical),
      wire.el("ResourceType", e.type), wire.el("Timestamp", wire.iso8601(e.time)),
      wire.el("ResourceStatus", e.status), wire.el("ResourceStatusReason", e.reason),
    }
  end) .. wire.el("NextToken", last > 1 and tostring(last - 1) or nil)
end

local function resources_sorted(stack)
  local list = {}
  for _, logical in ipairs(wire.sorted_keys(stack.resources)) do list[#list + 1] = stack.resources[logical] end
  return list
end

function A.DescribeStackResources(sb, params)
  local stack = existing_stack(sb, params.StackName)
  local list = {}
  for _, r in ipairs(resources_sorted(stack)) do
    if params.LogicalResourceId == nil or params.LogicalResourceId == r.logical then list[#list + 1] = r end
  end
  return wire.list("StackResources", list, function(r)
    return table.concat{
      wire.el("StackName", stack.name), wire.el("StackId", stack.id), wire.el("LogicalResourceId", r.logical),
      wire.el("PhysicalResourceId", r.physical), wire.el("ResourceType", r.type),
      wire.el("Timestamp", wire.iso8601(r.time)), wire.el("ResourceStatus", r.status),
      wire.el("ResourceStatusReason", r.reason),
      wire.raw_el("DriftInformation", wire.el("StackResourceDriftStatus", "NOT_CHECKED")),
    }
  end)
end

function A.ListStackResources(sb, params)
  local stack = existing_stack(sb, params.StackName)
  return wire.list("StackResourceSummaries", resources_sorted(stack), function(r)
    return table.concat{
      wire.el("LogicalResourceId", r.logical), wire.el("PhysicalResourceId", r.physical),
      wire.el("ResourceType", r.type), wire.el("LastUpdatedTimestamp", wire.iso8601(r.time)),
      wire.el("ResourceStatus", r.status), wire.el("ResourceStatusReason", r.reason),
      wire.raw_el("DriftInformation", wire.el("StackResourceDriftStatus", "NOT_CHECKED")),
    }
  end)
end

function A.GetTemplate(sb, params)
  local body
  if params.ChangeSetName then
    body = find_change_set(sb, params.ChangeSetName, params.StackName).model.body
  else
    local stack = existing_stack(sb, params.StackName)
    body = stack.model and stack.model.body
    if not body then validation(("Stack [%s] does not have a template yet"):format(stack.name)) end
  end
  return wire.el("TemplateBody", body) .. wire.list("StagesAvailable", { "Original", "Processed" })
end

function A.DeleteStack(sb, params)
  check_stack_name(params.StackName, "stackName")
  local stack = find_stack(sb, params.StackName)
  -- deleting a stack that is not there succeeds, as on AWS
  if not stack or stack.deleted or stack.status == "DELETE_IN_PROGRESS" then return false end
  if stack.status == "REVIEW_IN_PROGRESS" and not stack.plan then
    local now = wire.clock()
    set_stack_status(stack, "DELETE_COMPLETE", nil, now)
    stack.deleted = now
    sb.state.aws.stack_names[stack.name] = nil
    for id, cs in pairs(sb.state.aws.change_sets) do
      if cs.stack_id == stack.id then sb.state.aws.change_sets[id] = nil end
    end
    return false
  end
  if stack.plan then
    -- AWS lets a delete follow an operation in progress: it starts when that one ends
    stack.queued = stack.queued or {}
    table.insert(stack.queued, function(at) start_plan(sb, stack, plan_delete(sb, stack), at) end)
  else
    start_plan(sb, stack, plan_delete(sb, stack))
    advance(stack)
  end
  return false
end

return cfn
