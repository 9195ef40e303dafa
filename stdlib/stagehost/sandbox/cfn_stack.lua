-- Stacks in the sandbox, moving on as they are polled: an operation is a plan of steps, one per
-- sb.state.aws.step_seconds, applied when a request comes in (cfn.handle advances them all
-- first). An executed change set creates, updates or deletes one resource per two steps, in
-- dependency order, then completes; a resource whose Metadata has "stagehost:fail": "<reason>"
-- fails with that reason and the stack rolls back. Every status change is a stack event.
local wire = require("stagehost.sandbox.wire")
local tpl = require("stagehost.sandbox.cfn_template")
local eval = require("stagehost.sandbox.cfn_eval")

local stacks = {}

local STACK_TYPE = tpl.STACK_TYPE
local FAIL_KEY = "stagehost:fail"

-- By name (live stacks) or by stack id (deleted ones too); nil when there is none.
function stacks.find(sb, name_or_id)
  local state = sb.state.aws
  if name_or_id == nil then return nil end
  if name_or_id:sub(1, 4) == "arn:" then return state.stacks[name_or_id] end
  local id = state.stack_names[name_or_id]
  return id and state.stacks[id]
end

-- ---- events ----

local function event(stack, t, logical, physical, kind, status, reason)
  stack.events[#stack.events + 1] = {
    id = wire.uuid(), time = t, logical = logical, physical = physical or "", type = kind, status = status,
    reason = reason,
  }
end

function stacks.set_status(stack, status, reason, t)
  stack.status, stack.reason = status, reason
  event(stack, t, stack.name, stack.id, STACK_TYPE, status, reason)
end
local set_stack_status = stacks.set_status

local function set_resource_status(stack, r, status, reason, t)
  r.status, r.reason, r.time = status, reason, t
  event(stack, t, r.logical, r.physical, r.type, status, reason)
end

-- The end of a stack: DELETE_COMPLETE at t, its name free again, its change sets gone.
function stacks.forget(sb, stack, t)
  local state = sb.state.aws
  set_stack_status(stack, "DELETE_COMPLETE", nil, t)
  stack.deleted = t
  if state.stack_names[stack.name] == stack.id then state.stack_names[stack.name] = nil end
  for id, cs in pairs(state.change_sets) do
    if cs.stack_id == stack.id then state.change_sets[id] = nil end
  end
end

-- ---- plans ----

-- Start a plan: steps[i](t) runs once now >= start + (i - 1) * step. The first runs at once.
-- origin ({kind = "execute", change_set = id} or {kind = "delete"}) and the stack as it was
-- (plan_base) let a saved world rebuild the plan (persist.lua).
function stacks.start_plan(sb, stack, steps, at, origin)
  local base = {}
  for k, v in pairs(stack) do
    if k ~= "plan" and k ~= "plan_base" and k ~= "queued" then base[k] = wire.copy(v) end
  end
  stack.plan_base = origin and base or nil
  stack.plan = { start = at or wire.clock(), step = sb.state.aws.step_seconds, steps = steps, applied = 0, origin = origin }
end

-- Apply the steps that are due; a finished plan hands over to a queued one (a delete that
-- waited for an update), which starts when the last step would have.
function stacks.advance(stack)
  while stack.plan do
    local plan = stack.plan
    local now = wire.clock()
    while plan.applied < #plan.steps and plan.start + plan.applied * plan.step <= now do
      plan.applied = plan.applied + 1
      plan.steps[plan.applied](plan.start + (plan.applied - 1) * plan.step)
    end
    if plan.applied < #plan.steps then return end
    stack.plan, stack.plan_base = nil, nil
    local queued = table.remove(stack.queued or {}, 1)
    if queued then queued(plan.start + #plan.steps * plan.step) end
  end
end

function stacks.advance_all(sb)
  for _, stack in pairs(sb.state.aws.stacks) do stacks.advance(stack) end
end

local function fail_reason_of(def)
  local meta = type(def) == "table" and def.Metadata
  local reason = type(meta) == "table" and meta[FAIL_KEY]
  if reason == nil or reason == false then return nil end
  return tostring(reason)
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
      r.physical = eval.physical_id(env, logical, def)
      set_resource_status(stack, r, "CREATE_IN_PROGRESS", "Resource creation Initiated", t)
    else
      r.def, r.type = def, def.Type
      set_resource_status(stack, r, "UPDATE_IN_PROGRESS", nil, t)
      if replacement then
        r.replaced_physical = r.physical
        r.physical, r.attrs = eval.physical_id(env, logical, def), nil
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

-- A failed create: ROLLBACK_IN_PROGRESS, what was created deleted, ROLLBACK_COMPLETE.
local function rollback_create_steps(sb, steps, stack, cs, touched, reason)
  steps[#steps + 1] = function(t) set_stack_status(stack, "ROLLBACK_IN_PROGRESS", reason, t) end
  for i = #touched, 1, -1 do delete_steps(steps, stack, touched[i].logical) end
  steps[#steps + 1] = function(t)
    set_stack_status(stack, "ROLLBACK_COMPLETE", reason, t)
    stack.model, stack.params = cs.model, cs.params
    finish_change_set(sb, stack, "EXECUTE_FAILED")
  end
end

-- A failed update: modified resources go back to what they were (backup: the records before
-- the update), then the cleanup deletes the added ones and the replacements made.
local function rollback_update_steps(sb, steps, stack, touched, backup, reason)
  steps[#steps + 1] = function(t) set_stack_status(stack, "UPDATE_ROLLBACK_IN_PROGRESS", reason, t) end
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

-- stacks.plan_execution(sb, stack, cs) -> the steps that execute a change set on its stack:
-- a create (from REVIEW_IN_PROGRESS) or an update, with its rollback when a resource fails.
function stacks.plan_execution(sb, stack, cs)
  local env = eval.env(sb, stack, cs.model, cs.params, stack.resources)
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
  local _, order = eval.active_resources(env)
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
    local reason = ("The following resource(s) failed to %s: [%s]. "):format(what, failed.logical)
    if creating then
      rollback_create_steps(sb, steps, stack, cs, touched, reason .. "Rollback requested by user.")
    else
      rollback_update_steps(sb, steps, stack, touched, backup, reason)
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
    stack.outputs = eval.outputs(env)
    stack.capabilities, stack.tags, stack.change_set_id = cs.capabilities, cs.tags, cs.id
    if not creating then stack.updated = t end
    set_stack_status(stack, prefix .. "_COMPLETE", nil, t)
    finish_change_set(sb, stack, "EXECUTE_COMPLETE")
  end
  return steps
end

-- stacks.plan_delete(sb, stack) -> the steps that delete a stack's resources, newest first.
function stacks.plan_delete(sb, stack)
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
  steps[#steps + 1] = function(t) stacks.forget(sb, stack, t) end
  return steps
end

return stacks
