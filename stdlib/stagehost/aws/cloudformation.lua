-- CloudFormation (Query protocol, 2010-05-15): validate, change sets (create, wait, preview,
-- execute, delete), stack waits that stream events and explain failures, outputs.
--
--   local cfn = aws.cloudformation{ region = "eu-west-1", poll = { min = 2, max = 15 } }
--   cfn:validate_template{ body = text }               -> {description, parameters, capabilities}
--   cfn:create_change_set{ stack_name, body | url | template, parameters, capabilities, tags }
--                                                       -> {id, stack_id, type = "CREATE"|"UPDATE"}
--   cfn:wait_change_set(id)                            -> change set (+ no_changes = true)
--   cfn:describe_change_set(id)                        -> {status, changes = {{action, logical_id,
--                                                          physical_id, type, replacement}}, preview}
--   cfn:execute_change_set(id) / cfn:delete_change_set(id)
--   cfn:wait_stack(name, {timeout})                    -> {status, ok, reason, failed_resources, outputs}
--   cfn:describe_stack(name) -> stack | nil;  cfn:outputs(name) -> {key = value}
--   cfn:deploy{ stack_name, body, parameters, ... }    -> all of the above in order
local aws = require("stagehost.aws")
local errors = require("stagehost.errors")
local xml = require("stagehost.xml")
local json = require("stagehost.json")
local log = require("stagehost.log")
local task = require("stagehost.task")

local VERSION = "2010-05-15"
-- Default capabilities: a SAM template needs CAPABILITY_AUTO_EXPAND for its transform, and most
-- real stacks create IAM roles. A caller who wants fewer passes its own list.
local DEFAULT_CAPABILITIES = { "CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND" }
-- What CloudFormation says when a change set would change nothing (two wordings in the wild).
local NO_CHANGES = { "didn't contain changes", "No updates are to be performed" }

local cloudformation = {}
local Client, new_client = aws.client_class("aws.cloudformation", { poll = { 2, 15 } })

function cloudformation.new(opts)
  local client = new_client(opts)
  client.markers = {} -- stack name -> newest event id seen before an execution
  client.executed = {} -- stack name -> true from execute_change_set until wait_stack saw it move
  return client
end

-- Deleting is safe to repeat after a lost answer; creating and executing are not.
local IDEMPOTENT = { DeleteStack = true }

function Client:call(action, params)
  return aws.query("cloudformation", self.region, action, VERSION, params,
    { credentials = self.credentials, endpoint = self.endpoint, retry_base = self.retry_base,
      idempotent = IDEMPOTENT[action] })
end

-- ---- reading answers ----

local function members(node, ...)
  local list = node and xml.path(node, ...)
  return list and xml.children(list, "member") or {}
end

local function parse_stack(m)
  local stack = {
    name = xml.text(m, "StackName"), id = xml.text(m, "StackId"), status = xml.text(m, "StackStatus"),
    status_reason = xml.text(m, "StackStatusReason"), description = xml.text(m, "Description"),
    creation_time = xml.text(m, "CreationTime"), last_updated_time = xml.text(m, "LastUpdatedTime"),
    outputs = {}, output_list = {}, parameters = {}, capabilities = {}, tags = {},
  }
  -- an entry without its key is skipped: there is nothing to file it under
  for _, o in ipairs(members(m, "Outputs")) do
    local key = xml.text(o, "OutputKey")
    if key then
      stack.outputs[key] = xml.text(o, "OutputValue") or ""
      stack.output_list[#stack.output_list + 1] = { key = key, value = stack.outputs[key],
        description = xml.text(o, "Description"), export_name = xml.text(o, "ExportName") }
    end
  end
  for _, p in ipairs(members(m, "Parameters")) do
    local key = xml.text(p, "ParameterKey")
    if key then stack.parameters[key] = xml.text(p, "ParameterValue") or "" end
  end
  for _, c in ipairs(members(m, "Capabilities")) do stack.capabilities[#stack.capabilities + 1] = xml.text(c) end
  for _, t in ipairs(members(m, "Tags")) do
    local key = xml.text(t, "Key")
    if key then stack.tags[key] = xml.text(t, "Value") or "" end
  end
  return stack
end

local function check_stack_name(name, who)
  if type(name) ~= "string" or not name:match("^%a[%w%-]*$") or #name > 128 then
    error(("aws.cloudformation: %s: stack name %s is not valid (letters, digits and hyphens, starting with a letter, at most 128)"):format(
      who, type(name) == "string" and ("'" .. name .. "'") or tostring(name)), 3)
  end
end

-- ---- templates ----

-- A template as a body string: given as text, or as a Lua table encoded to JSON.
local function template_params(opts, who)
  local params = {}
  if opts.template ~= nil then
    if type(opts.template) ~= "table" then
      error(("aws.cloudformation: %s: template must be a table (use body = for text)"):format(who), 3)
    end
    params.TemplateBody = json.encode(opts.template)
  elseif opts.body ~= nil then
    if type(opts.body) ~= "string" then error(("aws.cloudformation: %s: body must be a string"):format(who), 3) end
    params.TemplateBody = opts.body
  elseif opts.url ~= nil then
    params.TemplateURL = opts.url
  else
    error(("aws.cloudformation: %s: give the template as body = text, template = table or url = S3 URL"):format(who), 3)
  end
  if params.TemplateBody and #params.TemplateBody > 51200 then
    error(("aws.cloudformation: %s: the template is %d bytes; CloudFormation takes at most 51,200 inline: upload it to S3 and pass url ="):format(
      who, #params.TemplateBody), 3)
  end
  return params
end

function Client:validate_template(opts)
  local r = self:call("ValidateTemplate", template_params(opts or {}, "validate_template"))
  local out = { description = xml.text(r, "Description"), parameters = {}, capabilities = {},
    capabilities_reason = xml.text(r, "CapabilitiesReason"), transforms = {} }
  for _, p in ipairs(members(r, "Parameters")) do
    out.parameters[#out.parameters + 1] = { key = xml.text(p, "ParameterKey"), default = xml.text(p, "DefaultValue"),
      no_echo = xml.text(p, "NoEcho") == "true", description = xml.text(p, "Description") }
  end
  for _, c in ipairs(members(r, "Capabilities")) do out.capabilities[#out.capabilities + 1] = xml.text(c) end
  for _, t in ipairs(members(r, "DeclaredTransforms")) do out.transforms[#out.transforms + 1] = xml.text(t) end
  return out
end

-- ---- stacks ----

local function missing_stack(e)
  return aws.is_error(e, "ValidationError") and tostring(e.message):find("does not exist", 1, true)
end

-- describe_stack(name) -> stack, or nil when there is no such stack
function Client:describe_stack(name)
  check_stack_name(name, "describe_stack")
  local ok, r = pcall(self.call, self, "DescribeStacks", { StackName = name })
  if not ok then
    if missing_stack(r) then return nil end
    error(r, 0)
  end
  local m = members(r, "Stacks")[1]
  return m and parse_stack(m) or nil
end

function Client:outputs(name)
  local stack = self:describe_stack(name)
  if not stack then error(("aws.cloudformation: outputs: stack '%s' does not exist in %s"):format(name, self.region), 2) end
  return stack.outputs
end

-- Events newest first, stopping at `stop_id` (exclusive) or after `max_pages`.
function Client:events(name, stop_id, max_pages)
  local events, token = {}, nil
  for _ = 1, max_pages or 10 do
    local r = self:call("DescribeStackEvents", { StackName = name, NextToken = token })
    for _, m in ipairs(members(r, "StackEvents")) do
      local e = { id = xml.text(m, "EventId"), logical_id = xml.text(m, "LogicalResourceId"),
        physical_id = xml.text(m, "PhysicalResourceId"), type = xml.text(m, "ResourceType"),
        status = xml.text(m, "ResourceStatus"), reason = xml.text(m, "ResourceStatusReason"),
        time = xml.text(m, "Timestamp") }
      if stop_id ~= nil and e.id == stop_id then return events end
      if e.id then events[#events + 1] = e end -- an event without an id cannot be tracked
    end
    token = xml.text(r, "NextToken")
    if not token then break end
  end
  return events
end

local function terminal(status)
  return status and not status:find("_IN_PROGRESS$") and status ~= "REVIEW_IN_PROGRESS"
end
local SUCCEEDED = { CREATE_COMPLETE = true, UPDATE_COMPLETE = true, IMPORT_COMPLETE = true, DELETE_COMPLETE = true }

local function show_event(stack_name, e)
  local line = ("cloudformation: %s %s (%s) %s"):format(stack_name, e.logical_id or "?", e.type or "?", e.status or "?")
  if e.reason and e.reason ~= "" then line = line .. ": " .. e.reason end
  if e.status and e.status:find("FAILED$") then log.warn(line) else log.info(line) end
end

-- wait_stack(name, {timeout = 3600}) -> {status, ok, reason, failed_resources, outputs, stack}.
-- Polls with backoff, logs every new stack event once, in order.
function Client:wait_stack(name, opts)
  check_stack_name(name, "wait_stack")
  opts = opts or {}
  local deadline = task.now() + (opts.timeout or 3600)
  local marker = self.markers[name]
  -- without a marker from execute_change_set, the stack's history is old news except its
  -- last moments: whoever started the update did so just before calling us
  local since = opts.since or (os.time() - 30)
  local seen, failed = {}, {}
  local seen_new, started = false, task.now()
  local first = true
  local delay = self.poll_min
  -- log each new event once, oldest first, and note the failed resources; false when the
  -- stack is gone (a finished delete)
  local function drain()
    local got, events = pcall(self.events, self, name, marker, (first and not marker) and 1 or 10)
    if not got then
      if opts.deleting and missing_stack(events) then return false end
      error(events, 0)
    end
    for i = #events, 1, -1 do
      local e = events[i]
      if not seen[e.id] then
        seen[e.id] = true
        local old = first and not marker and (aws.parse_time(e.time) or 0) < since
        if not old then
          seen_new = true
          show_event(name, e)
          if e.status and e.status:find("FAILED$") and e.logical_id ~= name then
            failed[#failed + 1] = { logical_id = e.logical_id, type = e.type, status = e.status, reason = e.reason }
          end
        end
      end
    end
    if events[1] then marker = events[1].id end
    first = false
    return true
  end
  while true do
    if not drain() then return { status = "DELETE_COMPLETE", ok = true, failed_resources = {} } end
    local stack = self:describe_stack(name)
    if not stack then
      if opts.deleting then return { status = "DELETE_COMPLETE", ok = true, failed_resources = {} } end
      error(("aws.cloudformation: wait_stack: stack '%s' does not exist in %s"):format(name, self.region), 2)
    end
    -- right after ExecuteChangeSet an update may still show the last run's UPDATE_COMPLETE:
    -- that is only the end of this run once a new event proves the stack moved (or after a
    -- minute of silence, in case events are not readable)
    local moved = seen_new or not self.executed[name] or task.now() - started > 60
    if terminal(stack.status) and moved then
      drain() -- the events that arrived between the listing and the status
      self.executed[name] = nil
      self.markers[name] = marker
      local ok = SUCCEEDED[stack.status] == true
      -- a cancelled resource is collateral damage; the ones that failed for a reason come first
      for i, f in ipairs(failed) do f.order = i end
      table.sort(failed, function(a, b)
        local ca = tostring(a.reason):find("cancelled", 1, true) and 1 or 0
        local cb = tostring(b.reason):find("cancelled", 1, true) and 1 or 0
        if ca ~= cb then return ca < cb end
        return a.order < b.order -- in the order they happened: the root cause first
      end)
      for _, f in ipairs(failed) do f.order = nil end
      return { status = stack.status, ok = ok, reason = stack.status_reason, failed_resources = ok and {} or failed,
        outputs = stack.outputs, stack = stack }
    end
    if task.now() >= deadline then
      error(("aws.cloudformation: wait_stack: stack '%s' still %s after %ds"):format(name, stack.status,
        opts.timeout or 3600), 2)
    end
    task.sleep(delay)
    delay = math.min(self.poll_max, delay * 1.5)
  end
end

-- ---- change sets ----

local function parameter_list(parameters)
  local list = {}
  if parameters == nil then return nil end
  if type(parameters) ~= "table" then error("aws.cloudformation: parameters must be a table of name = value", 3) end
  local keys = {}
  for k in pairs(parameters) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = parameters[k]
    if v == true or (type(v) == "table" and v.use_previous) then
      list[#list + 1] = { ParameterKey = k, UsePreviousValue = true }
    else
      list[#list + 1] = { ParameterKey = k, ParameterValue = tostring(v) }
    end
  end
  return list
end

local function tag_list(tags)
  if tags == nil then return nil end
  local keys, list = {}, {}
  for k in pairs(tags) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do list[#list + 1] = { Key = k, Value = tostring(tags[k]) } end
  return list
end

-- create_change_set{stack_name, body | template | url, parameters = {k = v}, capabilities,
--                   tags = {k = v}, change_set_name, description, role_arn}
function Client:create_change_set(opts)
  errors.check_table(opts, 1, "create_change_set")
  check_stack_name(opts.stack_name, "create_change_set")
  local params = template_params(opts, "create_change_set")
  local existing = self:describe_stack(opts.stack_name)
  -- a stack in REVIEW_IN_PROGRESS was only ever a CREATE change set that never ran
  local kind = (existing == nil or existing.status == "REVIEW_IN_PROGRESS") and "CREATE" or "UPDATE"
  if existing and existing.status == "ROLLBACK_COMPLETE" then
    error(("aws.cloudformation: stack '%s' is ROLLBACK_COMPLETE (its creation failed): delete it before deploying again"):format(
      opts.stack_name), 2)
  end
  params.StackName = opts.stack_name
  params.ChangeSetName = opts.change_set_name or ("stagehost-" .. os.date("!%Y%m%d%H%M%S") .. "-" .. math.random(1000, 9999))
  params.ChangeSetType = kind
  params.Description = opts.description
  params.RoleARN = opts.role_arn
  params.Parameters = parameter_list(opts.parameters)
  params.Capabilities = opts.capabilities or DEFAULT_CAPABILITIES
  params.Tags = tag_list(opts.tags)
  local r = self:call("CreateChangeSet", params)
  return { id = xml.text(r, "Id"), stack_id = xml.text(r, "StackId"), type = kind,
    name = params.ChangeSetName, stack_name = opts.stack_name }
end

local function change_set_ref(cs, stack_name)
  if type(cs) == "table" then return cs.id, cs.stack_name end
  return cs, stack_name
end

function Client:describe_change_set(cs, stack_name)
  local id, stack = change_set_ref(cs, stack_name)
  local out, token = nil, nil
  repeat
    local r = self:call("DescribeChangeSet", { ChangeSetName = id, StackName = stack, NextToken = token })
    out = out or { id = xml.text(r, "ChangeSetId") or id, name = xml.text(r, "ChangeSetName"),
      stack_name = xml.text(r, "StackName") or stack, stack_id = xml.text(r, "StackId"),
      status = xml.text(r, "Status"), status_reason = xml.text(r, "StatusReason"),
      execution_status = xml.text(r, "ExecutionStatus"), changes = {} }
    for _, m in ipairs(members(r, "Changes")) do
      local rc = xml.path(m, "ResourceChange")
      if rc then
        out.changes[#out.changes + 1] = { action = xml.text(rc, "Action"), logical_id = xml.text(rc, "LogicalResourceId"),
          physical_id = xml.text(rc, "PhysicalResourceId"), type = xml.text(rc, "ResourceType"),
          replacement = xml.text(rc, "Replacement") }
      end
    end
    token = xml.text(r, "NextToken")
  until not token
  out.preview = cloudformation.preview(out.changes)
  return out
end

-- A change set as lines a reviewer reads: action, logical id, type, and replacement when it
-- would replace the resource.
function cloudformation.preview(changes)
  local lines = {}
  for _, c in ipairs(changes) do
    local line = ("%-7s %s (%s)"):format(c.action or "?", c.logical_id or "?", c.type or "?")
    if c.replacement == "True" then line = line .. "  REPLACEMENT"
    elseif c.replacement == "Conditional" then line = line .. "  may be replaced" end
    lines[#lines + 1] = line
  end
  if #lines == 0 then return "(no changes)" end
  return table.concat(lines, "\n")
end

local function no_changes(reason)
  for _, phrase in ipairs(NO_CHANGES) do
    if reason and reason:find(phrase, 1, true) then return true end
  end
  return false
end

-- wait_change_set(cs, {timeout = 600}) -> the described change set; no_changes = true when
-- CloudFormation found nothing to change (that is a result, not a failure).
function Client:wait_change_set(cs, opts)
  local id, stack = change_set_ref(cs, opts and opts.stack_name)
  local deadline = task.now() + ((opts and opts.timeout) or 600)
  local delay = self.poll_min / 2
  while true do
    local d = self:describe_change_set(id, stack)
    if d.status == "CREATE_COMPLETE" then return d end
    if d.status == "FAILED" then
      if no_changes(d.status_reason) then
        d.no_changes = true
        return d
      end
      error(aws.error{ service = "cloudformation", operation = "CreateChangeSet", code = "ChangeSetFailed",
        message = ("change set %s failed: %s"):format(d.name or id, d.status_reason or "no reason given") }, 2)
    end
    if task.now() >= deadline then
      error(("aws.cloudformation: wait_change_set: %s still %s after %ds"):format(id, d.status, (opts and opts.timeout) or 600), 2)
    end
    task.sleep(delay)
    delay = math.min(self.poll_max / 2, delay * 1.5)
  end
end

function Client:execute_change_set(cs, stack_name)
  local id, stack = change_set_ref(cs, stack_name)
  -- remember where the stack's event history stands, so wait_stack shows only what follows
  local name = stack or (type(cs) == "table" and cs.stack_name)
  if name then
    local last = self:events(name, nil, 1)[1]
    self.markers[name] = last and last.id or nil
    self.executed[name] = true
  end
  self:call("ExecuteChangeSet", { ChangeSetName = id, StackName = stack })
end

function Client:delete_change_set(cs, stack_name)
  local id, stack = change_set_ref(cs, stack_name)
  self:call("DeleteChangeSet", { ChangeSetName = id, StackName = stack })
end

function Client:delete_stack(name, opts)
  check_stack_name(name, "delete_stack")
  self:call("DeleteStack", { StackName = name })
  if opts and opts.wait then return self:wait_stack(name, { timeout = opts.timeout, deleting = true }) end
end

-- deploy{stack_name, body | template | url, parameters, capabilities, tags, timeout} ->
-- {status, no_changes, changes, preview, outputs}. Fails with the failed resources' reasons.
function Client:deploy(opts)
  -- an operation already under way (a run killed during its wait, then resumed) is waited for,
  -- not started again: the change set made afterwards finds nothing left to do
  local current = opts and type(opts.stack_name) == "string" and self:describe_stack(opts.stack_name)
  if current and current.status:find("_IN_PROGRESS$") and current.status ~= "REVIEW_IN_PROGRESS" then
    log.info(("cloudformation: %s is %s: waiting for that operation to end"):format(opts.stack_name, current.status))
    self:wait_stack(opts.stack_name, { timeout = opts.timeout, since = 0 })
  end
  local cs = self:create_change_set(opts)
  local d = self:wait_change_set(cs)
  if d.no_changes then
    log.info(("cloudformation: %s: no changes to deploy"):format(opts.stack_name))
    self:delete_change_set(cs)
    local stack = self:describe_stack(opts.stack_name)
    return { status = stack and stack.status, no_changes = true, changes = {}, preview = d.preview,
      outputs = stack and stack.outputs or {}, stack = stack }
  end
  log.info(("cloudformation: %s: %s change set %s\n%s"):format(opts.stack_name, cs.type, cs.name, d.preview))
  self:execute_change_set(cs)
  local result = self:wait_stack(opts.stack_name, { timeout = opts.timeout })
  result.changes, result.preview, result.type = d.changes, d.preview, cs.type
  if not result.ok then
    local reasons = {}
    for _, f in ipairs(result.failed_resources) do
      reasons[#reasons + 1] = ("%s (%s): %s"):format(f.logical_id, f.type, f.reason or f.status)
    end
    error(aws.error{ service = "cloudformation", operation = "deploy", code = result.status,
      message = ("stack %s ended %s%s"):format(opts.stack_name, result.status,
        #reasons > 0 and ("; " .. table.concat(reasons, "; ")) or (result.reason and ("; " .. result.reason) or "")),
      failed_resources = result.failed_resources }, 2)
  end
  return result
end

return cloudformation
