-- CloudFormation (Query protocol, 2010-05-15) in the sandbox: the API actions, over templates
-- (cfn_template.lua: parse, check, parameters, capabilities; sam.lua: the SAM transform),
-- their evaluation (cfn_eval.lua: intrinsic functions, conditions, made-up ids and
-- attributes) and stacks that move on as they are polled (cfn_stack.lua). One step is
-- sb.state.aws.step_seconds: a change set is CREATE_PENDING for a step, CREATE_IN_PROGRESS
-- for one more, then CREATE_COMPLETE (or FAILED when it changes nothing); an executed stack
-- creates, updates or deletes one resource per two steps, in dependency order (ties
-- alphabetical), then completes.
--
-- To make a resource fail, put in its Metadata
--   "stagehost:fail": "<reason>"
-- It then ends CREATE_FAILED (UPDATE_FAILED when modified) with that reason as its
-- ResourceStatusReason, the resources after it are not touched, and the stack rolls back:
-- ROLLBACK_IN_PROGRESS -> ROLLBACK_COMPLETE on a create, UPDATE_ROLLBACK_IN_PROGRESS ->
-- UPDATE_ROLLBACK_COMPLETE on an update.
--
-- Replacement in change sets is an approximation: True when the type or a naming property
-- (BucketName, FunctionName, ...) changes, False otherwise.
local wire = require("stagehost.sandbox.wire")
local tpl = require("stagehost.sandbox.cfn_template")
local eval = require("stagehost.sandbox.cfn_eval")
local stacks = require("stagehost.sandbox.cfn_stack")
local apigw = require("stagehost.sandbox.apigw")

local cfn = wire.query_service("2010-05-15", "http://cloudformation.amazonaws.com/doc/2010-05-15/", {
  CreateChangeSet = { "StackName", "ChangeSetName" }, DescribeChangeSet = { "ChangeSetName" },
  ExecuteChangeSet = { "ChangeSetName" }, DeleteChangeSet = { "ChangeSetName" }, ListChangeSets = { "StackName" },
  ListStackResources = { "StackName" }, DeleteStack = { "StackName" },
})

local NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."

function cfn.init(sb)
  local state = sb.state.aws
  state.stacks = state.stacks or {}           -- by stack id, deleted ones included
  state.stack_names = state.stack_names or {} -- live stack name -> stack id
  state.change_sets = state.change_sets or {} -- by change set id
end

function cfn.handle(sb, _, ctx)
  stacks.advance_all(sb)
  return wire.query_dispatch(cfn, sb, ctx)
end

-- cfn.advance_all(sb): apply every stack's due steps (what handle does before each request)
cfn.advance_all = stacks.advance_all

local validation = tpl.invalid
local find_stack = stacks.find

---------------------------------------------------------------------------------------------------
-- what several answers share

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

local function stack_arn(sb, region, name)
  return ("arn:aws:cloudformation:%s:%s:stack/%s/%s"):format(region, sb.state.aws.account_id, name, wire.uuid())
end

local function check_stack_name(name, field)
  if name == nil then
    validation(("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null"):format(field))
  end
  if name:sub(1, 4) ~= "arn:" and (not name:match("^%a[%w%-]*$") or #name > 128) then
    validation(("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*|arn:[-a-zA-Z0-9:/._+]*"):format(name, field))
  end
end

---------------------------------------------------------------------------------------------------
-- change sets

-- Once seen created, a change set stays so: the world is saved before that answer goes out
-- ("now", see changes_world), and the next host's clock may lag this one's by up to a second
-- (wire.clock is anchored on whole seconds).
local function change_set_status(cs)
  local elapsed = wire.clock() - cs.created
  if not cs.settled then
    if elapsed < cs.step then return "CREATE_PENDING", nil end
    if elapsed < 2 * cs.step then return "CREATE_IN_PROGRESS", nil end
    cs.settled = "now"
  end
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

-- Compare the stack as it is with the change set's model -> the list of resource changes.
local function compute_changes(sb, stack, model, params)
  local new_env = eval.env(sb, stack, model, params, {})
  local new_active, new_order = eval.active_resources(new_env)
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
        local recreate = (tpl.REPLACING_PROPS[key] or tpl.NAME_PROPS[def.Type] == key) and "Always" or "Never"
        if recreate == "Always" then replacement = "True" end
        details[#details + 1] = { attribute = "Properties", name = key, recreation = recreate,
          source = "DirectModification" }
      end
      local changed_params = {}
      for key in pairs(tpl.params_used(def.Properties, model)) do
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
  local caps, why = tpl.required_capabilities(model, true)
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
  local model = tpl.load(params.TemplateBody)
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
    model = tpl.load(params.TemplateBody)
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
  local model = tpl.load(body)
  local given = wire.members(params, "Parameters")
  -- the sandbox's own defaults (sb.state.aws.parameter_defaults: the stub providers' URLs under
  -- the names apps give them) stand in for a value the change set leaves out
  local named = {}
  for _, m in ipairs(given) do if type(m) == "table" and m.ParameterKey then named[m.ParameterKey] = true end end
  for key, value in pairs(state.parameter_defaults or {}) do
    if model.params[key] and not named[key] then given[#given + 1] = { ParameterKey = key, ParameterValue = value } end
  end
  local values = tpl.parameter_values(model, given, stack and stack.params)
  local given_caps = wire.members(params, "Capabilities")
  local has = {}
  for _, c in ipairs(given_caps) do has[c] = true end
  local needed = tpl.required_capabilities(model, false)
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
    stacks.set_status(stack, "REVIEW_IN_PROGRESS", "User Initiated", now)
  end
  local tags = wire.members(params, "Tags")
  -- an update that names no tags keeps the stack's, as UpdateStack does
  if #tags == 0 and kind == "UPDATE" then tags = stack.tags or {} end
  local changes, unchanged = {}, false
  if not model.transform_error then
    changes = compute_changes(sb, stack, model, values)
    unchanged = kind == "UPDATE" and wire.deep_equal(stack.model.template, model.template)
      and wire.deep_equal(stack.params, values) and wire.deep_equal(stack.tags or {}, tags)
  end
  local final_reason = model.transform_error or (unchanged and NO_CHANGES) or nil
  local cs = {
    id = ("arn:aws:cloudformation:%s:%s:changeSet/%s/%s"):format(stack.region, state.account_id, params.ChangeSetName, wire.uuid()),
    name = params.ChangeSetName, stack_id = stack.id, stack_name = stack.name, type = kind, created = now,
    step = sb.state.aws.step_seconds, model = model, params = values, changes = changes, capabilities = given_caps,
    tags = tags, description = params.Description,
    final_status = final_reason and "FAILED" or "CREATE_COMPLETE", final_reason = final_reason,
  }
  -- a change set CloudFormation never gets to (a fault {service = "cloudformation", action =
  -- "CreateChangeSet", outcome = "PENDING"}): CREATE_PENDING for good
  local stuck = state.change_set_next and table.remove(state.change_set_next, 1)
  if stuck == "PENDING" then cs.step = math.huge end
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
  stacks.start_plan(sb, stack, stacks.plan_execution(sb, stack, cs), nil, { kind = "execute", change_set = cs.id })
  stacks.advance(stack)
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

local function stack_xml(stack, sb)
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
      return wire.el("OutputKey", o.key) .. wire.el("OutputValue", sb and apigw.local_urls(sb, o.value) or o.value)
        .. wire.el("Description", o.description)
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
  return wire.list("Stacks", list, function(stack) return stack_xml(stack, sb) end)
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
    stacks.forget(sb, stack, wire.clock())
    return false
  end
  if stack.plan then
    -- AWS lets a delete follow an operation in progress: it starts when that one ends
    stack.queued = stack.queued or {}
    table.insert(stack.queued, function(at) stacks.start_plan(sb, stack, stacks.plan_delete(sb, stack), at, { kind = "delete" }) end)
  else
    stacks.start_plan(sb, stack, stacks.plan_delete(sb, stack), nil, { kind = "delete" })
    stacks.advance(stack)
  end
  return false
end

return cfn
