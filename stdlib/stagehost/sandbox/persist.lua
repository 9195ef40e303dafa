-- The sandbox's world kept on disk, so a `stagehost run --sandbox` killed with -9 and resumed
-- finds the stacks, change sets, objects, apps and releases it left, mid-operation included:
--   DIR/world.lua      sb.state and the keys it issued, written after every request
--   DIR/requests.jsonl the request log (sb.requests), one JSON object a line
-- Both are replaced atomically (fs.write: a temporary file renamed over), and a request's
-- answer goes out only after a write that includes its effect is on disk.
--
-- The world is written as Lua data (a table constructor per table, then the links between
-- them), not JSON: the state is a graph (a change set and its stack share one model), keys are
-- not all strings, json.null and json.array/json.object marks must survive. It is read back
-- with load() in text mode and an empty environment: data, never code.
-- A stack operation in progress is a list of closures (cfn_stack.lua); it is saved as where it
-- came from (the change set executed, or a delete), when it started and the stack as it was
-- before it, and rebuilt on load: the steps already due are applied again at once, so the
-- operation goes on where the clock says it is (events and made-up physical ids are new).
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local task = require("stagehost.task")
local wire = require("stagehost.sandbox.wire")

local persist = {}

local ARRAY_MT, OBJECT_MT = getmetatable(json.array{}), getmetatable(json.object{})

local function key_text(k)
  if type(k) == "string" or math.type(k) == "float" then return ("[%q]"):format(k) end
  if type(k) == "number" or type(k) == "boolean" then return ("[%s]"):format(tostring(k)) end
  return nil
end

-- persist.encode(root) -> Lua text whose load()(null, array, object) gives an equal graph.
-- Functions and userdata other than json.null are left out.
function persist.encode(root)
  local ids, order = {}, {}
  local function visit(t)
    if ids[t] then return end
    order[#order + 1] = t
    ids[t] = #order
    for k, v in pairs(t) do
      if type(k) == "table" then visit(k) end
      if type(v) == "table" then visit(v) end
    end
  end
  visit(root)
  local out = { "local N, A, O = ...\nlocal T = {}\n" }
  for i = 1, #order do out[#out + 1] = ("T[%d] = {}\n"):format(i) end
  local function value_text(v)
    local kind = type(v)
    if kind == "string" then return ("%q"):format(v) end
    if kind == "number" then return math.type(v) == "integer" and tostring(v) or ("%q"):format(v) end
    if kind == "boolean" then return tostring(v) end
    if kind == "table" then return ("T[%d]"):format(ids[v]) end
    if v == json.null then return "N" end
    return nil
  end
  for i, t in ipairs(order) do
    for k, v in pairs(t) do
      local kt, vt = key_text(k), value_text(v)
      if kt and vt then out[#out + 1] = ("T[%d]%s = %s\n"):format(i, kt, vt) end
    end
    local mt = getmetatable(t)
    if mt == ARRAY_MT then out[#out + 1] = ("A(T[%d])\n"):format(i)
    elseif mt == OBJECT_MT then out[#out + 1] = ("O(T[%d])\n"):format(i) end
  end
  out[#out + 1] = "return T[1]\n"
  return table.concat(out)
end

function persist.decode(text, name)
  local chunk, err = load(text, "=" .. (name or "world"), "t", {})
  if not chunk then return nil, err end
  local ok, value = pcall(chunk, json.null, function(t) setmetatable(t, ARRAY_MT) end,
    function(t) setmetatable(t, OBJECT_MT) end)
  if not ok then return nil, value end
  return value
end

-- ---- stack operations in progress ----

-- The stack fields a plan started from (cfn_stack.start_plan keeps them as stack.plan_base).
local function plans_out(state)
  local saved = {}
  for _, stack in pairs(state.aws.stacks or {}) do
    if stack.plan or stack.queued then
      saved[stack] = { plan = stack.plan, queued = stack.queued }
      local p = stack.plan
      stack.plan = p and { origin = p.origin, start = p.start, step = p.step } or nil
      stack.queued = stack.queued and #stack.queued or nil
    end
  end
  return function()
    for stack, s in pairs(saved) do stack.plan, stack.queued = s.plan, s.queued end
  end
end

local function plans_in(sb)
  local stacks = require("stagehost.sandbox.cfn_stack")
  for _, stack in pairs(sb.state.aws.stacks or {}) do
    local p, queued = stack.plan, stack.queued
    stack.plan, stack.queued = nil, nil
    if p and p.origin and stack.plan_base then
      for k in pairs(stack) do
        if stack.plan_base[k] == nil and k ~= "plan_base" then stack[k] = nil end
      end
      for k, v in pairs(stack.plan_base) do stack[k] = v end
      local steps
      if p.origin.kind == "execute" then
        local cs = sb.state.aws.change_sets[p.origin.change_set]
        steps = cs and stacks.plan_execution(sb, stack, cs)
      else
        steps = stacks.plan_delete(sb, stack)
      end
      -- the clock of this process may lag the last one's by up to a second (it is anchored
      -- on whole seconds): a plan never starts in the future
      if steps then stacks.start_plan(sb, stack, steps, math.min(p.start, wire.clock()), p.origin) end
    end
    for _ = 1, tonumber(queued) or 0 do
      stack.queued = stack.queued or {}
      table.insert(stack.queued, function(at)
        stacks.start_plan(sb, stack, stacks.plan_delete(sb, stack), at, { kind = "delete" })
      end)
    end
  end
end

-- ---- files ----

local function world_text(sb)
  local restore = plans_out(sb.state)
  local ok, text = pcall(persist.encode, { state = sb.state, requests = sb.requests, port = sb.port })
  restore()
  if not ok then error(text, 0) end
  return text
end

local function requests_text(sb)
  local lines = {}
  for i, r in ipairs(sb.requests) do lines[i] = json.encode(r) end
  return table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
end

-- persist.save(sb): write the world and the log; returns once a write begun after this call
-- finished (one writer at a time; a burst of requests shares writes).
function persist.save(sb)
  local p = sb.persist
  p.wanted = p.wanted + 1
  local mine = p.wanted
  if p.writing then
    while p.written < mine and p.writing do task.sleep(0.002) end
    if p.written >= mine then return end
  end
  p.writing = true
  local ok, err = pcall(function()
    while p.written < p.wanted do
      local generation = p.wanted
      assert(fs.write(p.dir .. "/world.lua", world_text(sb)))
      assert(fs.write(p.dir .. "/requests.jsonl", requests_text(sb)))
      p.written = generation
    end
  end)
  p.writing = false
  if not ok then
    require("stagehost.log").error("sandbox: cannot save the world in " .. p.dir .. ": " .. require("stagehost.errors").first_line(err))
  end
end

-- persist.open(sb, dir): keep sb's world in dir from now on, loading what is there first.
-- -> true when a world was loaded
function persist.open(sb, dir)
  assert(fs.mkdir(dir, { mode = 448 }))
  sb.persist = { dir = dir, wanted = 0, written = 0 }
  local text = fs.read(dir .. "/world.lua")
  if not text then return false end
  local world, err = persist.decode(text, dir .. "/world.lua")
  if type(world) ~= "table" or type(world.state) ~= "table" then
    require("stagehost.errors").config("sandbox: %s/world.lua is damaged (%s): remove it to start from an empty world",
      dir, tostring(err))
  end
  local fresh = sb.state
  sb.state = world.state
  -- the keys this sandbox made stay valid, and so do the ones the saved world had
  for k, v in pairs(fresh.aws.keys or {}) do
    if not sb.state.aws.keys[k] then sb.state.aws.keys[k] = v end
  end
  local kept = sb.state.aws.keys[sb.credentials.access_key_id]
  if kept then sb.credentials.secret_access_key = kept.secret end
  if type(sb.state.github.tokens) == "table" and sb.state.github.tokens[1] then sb.github_token = sb.state.github.tokens[1] end
  for k, v in pairs(fresh) do
    if sb.state[k] == nil then sb.state[k] = v end
  end
  sb.requests = world.requests or {}
  plans_in(sb)
  return true, world.port
end

return persist
