-- CloudFormation templates for the sandbox: parse (JSON, or YAML with stagehost.yaml), check as
-- CloudFormation does before it makes a change set (top-level keys, the format version,
-- resource types, every Ref and GetAtt resolvable, outputs with values), expand the SAM
-- transform (sam.lua), and answer what the API asks of a template: its parameters and their
-- values, the capabilities it needs, the order its resources are created in. Evaluating a
-- template for a stack (intrinsic functions, conditions, made-up ids) is cfn_eval.lua.
local json = require("stagehost.json")
local wire = require("stagehost.sandbox.wire")
local sam = require("stagehost.sandbox.sam")

local tpl = {}

tpl.STACK_TYPE = sam.STACK_TYPE

local TOP_LEVEL = { AWSTemplateFormatVersion = true, Description = true, Metadata = true, Parameters = true,
  Rules = true, Mappings = true, Conditions = true, Transform = true, Resources = true, Outputs = true, Hooks = true }

local IAM_TYPES = { ["AWS::IAM::AccessKey"] = true, ["AWS::IAM::Group"] = true, ["AWS::IAM::InstanceProfile"] = true,
  ["AWS::IAM::Policy"] = true, ["AWS::IAM::Role"] = true, ["AWS::IAM::User"] = true,
  ["AWS::IAM::UserToGroupAddition"] = true, ["AWS::IAM::ManagedPolicy"] = true }
local IAM_NAME_PROPS = { "RoleName", "UserName", "GroupName", "ManagedPolicyName", "InstanceProfileName" }

-- the property that names a resource: its physical id when given, and a change to it replaces
tpl.NAME_PROPS = {
  ["AWS::S3::Bucket"] = "BucketName", ["AWS::Lambda::Function"] = "FunctionName",
  ["AWS::DynamoDB::Table"] = "TableName", ["AWS::IAM::Role"] = "RoleName", ["AWS::IAM::User"] = "UserName",
  ["AWS::SQS::Queue"] = "QueueName", ["AWS::SNS::Topic"] = "TopicName", ["AWS::Logs::LogGroup"] = "LogGroupName",
  ["AWS::ECR::Repository"] = "RepositoryName", ["AWS::IAM::ManagedPolicy"] = "ManagedPolicyName",
  ["AWS::StepFunctions::StateMachine"] = "StateMachineName", ["AWS::Events::Rule"] = "Name",
}
-- other properties whose change replaces a resource
tpl.REPLACING_PROPS = { KeySchema = true, AvailabilityZone = true, CidrBlock = true, VpcId = true, ImageId = true,
  Engine = true }

-- ---- errors, as CloudFormation words them ----

function tpl.invalid(message) wire.fail("ValidationError", message) end
local invalid = tpl.invalid

local function format_error(message) invalid("Template format error: " .. message) end

-- Fails with message (a format whose %s gets the items, sorted, comma-separated) when there are
-- items; through fail, or as a template format error.
local function refuse_listed(items, message, fail)
  if #items == 0 then return end
  table.sort(items)
  local fail_with = fail or format_error
  fail_with(message:format(table.concat(items, ", ")))
end

-- ---- reading values ----

function tpl.trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
local trim = tpl.trim

local function list_of(v)
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return { v }
end

-- The single key of an intrinsic function call ({"Ref": x}) and its argument, or nil.
function tpl.intrinsic(v)
  if type(v) ~= "table" then return nil end
  local key = next(v)
  if key == nil or next(v, key) ~= nil or type(key) ~= "string" then return nil end
  if key == "Ref" or key == "Condition" or key:sub(1, 4) == "Fn::" then return key, v[key] end
  return nil
end
local intrinsic = tpl.intrinsic

function tpl.is_pseudo(name) return name:sub(1, 5) == "AWS::" end
local is_pseudo = tpl.is_pseudo

-- Fn::Sub's string: calls fn(name) for each ${name}, skipping ${!literal}.
local function sub_names(s, fn)
  for name in s:gmatch("%${([^}]*)}") do
    if name:sub(1, 1) ~= "!" then fn(trim(name)) end
  end
end

-- Walk a value; visit(kind, target, attribute) for every Ref ("ref") and GetAtt ("getatt").
function tpl.walk_refs(v, visit)
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
    tpl.walk_refs(vars, visit)
    if type(s) == "string" then
      sub_names(s, function(name)
        if vars and vars[name] ~= nil then return end
        local target, attr = name:match("^([^%.]+)%.(.+)$")
        if target then visit("getatt", target, attr) else visit("ref", name) end
      end)
    end
    return
  end
  for _, child in pairs(v) do tpl.walk_refs(child, visit) end
end
local walk_refs = tpl.walk_refs

-- The parameters a resource definition refers to (a set of keys).
function tpl.params_used(def, model)
  local used = {}
  walk_refs(def, function(kind, target) if kind == "ref" and model.params[target] then used[target] = true end end)
  return used
end

-- ---- loading ----

local function decode(body)
  if body == nil or body == "" then invalid("Either Template URL or Template Body must be specified.") end
  local template
  if trim(body):sub(1, 1) == "{" then
    local decoded, why = json.decode(body)
    if decoded == nil then format_error("JSON not well-formed. (" .. why .. ")") end
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

local function parameters_of(template)
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
  return params
end

-- The resource types as declared (SAM's before the transform), after checking each is one.
local function declared_types_of(template, has_sam)
  local original_types = {}
  for logical, def in pairs(template.Resources) do
    if type(def) ~= "table" or type(def.Type) ~= "string" then
      format_error(("[/Resources/%s] Every Resources object must contain a Type member."):format(logical))
    end
    original_types[logical] = def.Type
  end
  local unrecognized = {}
  for _, kind in pairs(original_types) do
    local is_sam = kind:match("^AWS::Serverless::")
    if (is_sam and not has_sam) or not (kind:match("^[%w]+::[%w]+::[%w]+$") or kind:match("^Custom::[%w_@%-]+$")) then
      unrecognized[#unrecognized + 1] = kind
    end
  end
  refuse_listed(unrecognized, "Unrecognized resource types: [%s]")
  local declared_types = {}
  for _, kind in pairs(original_types) do declared_types[kind] = true end
  return declared_types
end

-- Every Ref, GetAtt and Sub resolvable, every resource's Condition declared, every output valued.
local function check_references(params, resources, conditions, outputs)
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
  refuse_listed(unresolved, "Unresolved resource dependencies [%s] in the Resources block of the template")
end

-- tpl.load(body) -> the template's model: {body, template, description, params, param_keys,
-- resources, conditions, outputs, mappings, transforms, declared_types, transform_error}; a
-- template CloudFormation would refuse fails with its ValidationError. transform_error is the
-- message of a SAM transform that failed (the change set fails with it).
function tpl.load(body)
  local template = decode(body)
  local transforms = list_of(template.Transform)
  local has_sam = false
  for _, t in ipairs(transforms) do if t == sam.TRANSFORM then has_sam = true end end
  local unknown = {}
  for key in pairs(template) do
    if not TOP_LEVEL[key] and not (key == "Globals" and has_sam) then unknown[#unknown + 1] = tostring(key) end
  end
  refuse_listed(unknown, "Invalid template property or properties [%s]")
  if template.AWSTemplateFormatVersion ~= nil and tostring(template.AWSTemplateFormatVersion) ~= "2010-09-09" then
    format_error(("Unsupported template format version: %s"):format(tostring(template.AWSTemplateFormatVersion)))
  end
  if type(template.Resources) ~= "table" or next(template.Resources) == nil then
    format_error("At least one Resources member must be defined.")
  end
  local params = parameters_of(template)
  local declared_types = declared_types_of(template, has_sam)
  -- a transform that fails does not fail the call: CloudFormation makes the change set and
  -- fails it with the transform's message (ValidateTemplate does not run transforms)
  local transform_error
  if has_sam then
    local expanded, why = sam.expand(template)
    if not expanded then transform_error = why end
  end

  local resources = template.Resources
  local conditions = type(template.Conditions) == "table" and template.Conditions or {}
  local outputs = type(template.Outputs) == "table" and template.Outputs or {}
  if not transform_error then check_references(params, resources, conditions, outputs) end
  return {
    body = body, template = template, description = template.Description, params = params,
    param_keys = wire.sorted_keys(params), resources = resources, conditions = conditions, outputs = outputs,
    mappings = template.Mappings or {}, transforms = transforms, declared_types = declared_types,
    transform_error = transform_error,
  }
end

-- ---- what the API asks of a template ----

-- Resources in dependency order (Ref, GetAtt, Sub, DependsOn), ties alphabetical.
function tpl.dependency_order(resources)
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
  refuse_listed(missing, "Unresolved resource dependencies [%s] in the Resources block of the template")
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
    refuse_listed(cycle, "Circular dependency between resources: [%s]", invalid)
  end
  return order
end

-- The capabilities a model needs, and why (types, sorted): CAPABILITY_IAM for IAM resources
-- (CAPABILITY_NAMED_IAM when they carry names), CAPABILITY_AUTO_EXPAND for transforms.
-- declared_only: judge by the types as written (SAM's own), as ValidateTemplate does.
function tpl.required_capabilities(model, declared_only)
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

-- The parameter values of a change set: given ones (members: the request's Parameters),
-- previous ones (UsePreviousValue), defaults; each checked against its type and AllowedValues.
function tpl.parameter_values(model, members, previous)
  local values, unknown, missing = {}, {}, {}
  for _, m in ipairs(members) do
    local key = type(m) == "table" and m.ParameterKey
    if key then
      if not model.params[key] then
        unknown[#unknown + 1] = key
      elseif m.UsePreviousValue == "true" then
        if not previous or previous[key] == nil then
          invalid(("Invalid input for parameter key %s. Cannot specify usePreviousValue as true for a parameter key not in the previous template"):format(key))
        end
        values[key] = previous[key]
      else
        values[key] = m.ParameterValue or ""
      end
    end
  end
  refuse_listed(unknown, "Parameters: [%s] do not exist in the template", invalid)
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
          invalid(("Parameter '%s' must be one of AllowedValues"):format(key))
        end
      end
      if def.type == "Number" and not tonumber(values[key]) then
        invalid(("Parameter '%s' must be a number."):format(key))
      end
    end
  end
  refuse_listed(missing, "Parameters: [%s] must have values", invalid)
  return values
end

return tpl
