-- The checks of fuzz_pipeline.c, which runs this file in a fresh Lua state per input with the
-- source tree's stdlib on package.path: returns function(input, dir) that raises "fuzz
-- invariant failed: ..." when pipeline.seconds or pipeline.define breaks its contract.
--   pipeline.seconds(s): a number of seconds >= 0 and finite, or nil; never raises.
--   pipeline.define(spec): a pipeline whose stages keep what define promises, or the config
--     error it documents: an error object of kind "config", exit code 2, one line starting
--     with the pipeline file's path:line. Never an internal error ("attempt to ...").
-- spec is the input decoded as JSON, the string "<fn>" standing for a function (JSON has
-- none); run files resolve in dir, which fuzz_pipeline.c fills once.
local pipeline = require("stagehost.pipeline")
local errors = require("stagehost.errors")
local json = require("stagehost.json")

local function fail(fmt, ...)
  error("fuzz invariant failed: " .. fmt:format(...), 0)
end

local function check_seconds(value)
  local ok, r = pcall(pipeline.seconds, value)
  if not ok then fail("pipeline.seconds(%q) raised: %s", tostring(value), tostring(r)) end
  if r == nil then return nil end
  if type(r) ~= "number" or r ~= r or r < 0 or r == math.huge then
    fail("pipeline.seconds(%q) returned %s", tostring(value), tostring(r))
  end
  if type(value) == "string" and value:match("^%d+$") and r ~= tonumber(value) then
    fail("pipeline.seconds(%q) returned %s for a plain number", value, tostring(r))
  end
  return r
end

-- The decoded JSON as a Lua-written spec would be: plain tables, "<fn>" a function
local function to_spec(v, depth)
  if v == "<fn>" then return function() end end
  if type(v) ~= "table" or depth > 64 then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = to_spec(x, depth + 1) end
  return t
end

-- What a pipeline define returned must hold
local function check_pipeline(p, spec)
  if not pipeline.is(p) then fail("define returned a %s, not a pipeline", type(p)) end
  if p.name ~= spec.name then fail("pipeline name %s for %s", tostring(p.name), tostring(spec.name)) end
  if #p.stages ~= #spec.stages then fail("%d stages for %d", #p.stages, #spec.stages) end
  local indegree, order = {}, {}
  for i, st in ipairs(p.stages) do
    if p.by_name[st.name] ~= st or st.index ~= i then fail("stage %d is not by_name[%s]", i, tostring(st.name)) end
    if type(st.name) ~= "string" or not st.name:match("^[%w][%w_.%-]*$") then fail("stage name %q", tostring(st.name)) end
    if st.timeout ~= nil then check_seconds(st.timeout) end
    if math.type(st.retry) ~= "integer" or st.retry < 0 then fail("stage %s: retry %s", st.name, tostring(st.retry)) end
    if not ({ success = true, failure = true, always = true, cancelled = true, decision = true })[st.when] then
      fail("stage %s: when %s", st.name, tostring(st.when))
    end
    if type(st.run) ~= "function" and type(st.run_chunk) ~= "function" then fail("stage %s runs nothing", st.name) end
    indegree[st.name] = #st.needs
    for _, n in ipairs(st.needs) do
      if not p.by_name[n] or n == st.name then fail("stage %s needs %s", st.name, tostring(n)) end
    end
  end
  -- acyclic: every stage is reached by taking away those whose needs are met
  local ready = {}
  for _, st in ipairs(p.stages) do if indegree[st.name] == 0 then ready[#ready + 1] = st.name end end
  while #ready > 0 do
    local name = table.remove(ready)
    order[#order + 1] = name
    for _, d in ipairs(p.by_name[name].dependents) do
      local needs_left = 0
      for _, n in ipairs(p.by_name[d].needs) do if n == name then needs_left = needs_left + 1 end end
      indegree[d] = indegree[d] - needs_left
      if indegree[d] == 0 then ready[#ready + 1] = d end
    end
  end
  if #order ~= #p.stages then fail("the stages of a defined pipeline form a cycle") end
  check_seconds(p.cleanup_timeout)
  if type(p.trigger.manual) ~= "boolean" then fail("trigger.manual is a %s", type(p.trigger.manual)) end
  if not (p.trigger.manual or p.trigger.tags or p.trigger.branches) then fail("a trigger that allows no run") end
  for k, v in pairs(p.env) do
    if type(k) ~= "string" or type(v) ~= "string" then fail("env %s = %s", tostring(k), tostring(v)) end
  end
  -- what `stagehost graph` and `describe` make of it must not raise either
  pipeline.mermaid(p)
  pipeline.dot(p)
  json.encode(pipeline.describe(p))
end

local function check_define(spec, where)
  local ok, p = pcall(pipeline.define, spec)
  if ok then return check_pipeline(p, spec) end
  if not errors.is(p, "config") then fail("define raised %s", tostring(p)) end
  local msg = rawget(p, "message")
  if p.exit_code ~= 2 then fail("a config error with exit code %s", tostring(p.exit_code)) end
  if type(msg) ~= "string" or msg:find("\n") or msg:find("\r") then fail("a config error not on one line: %q", tostring(msg)) end
  if msg:sub(1, #where) ~= where then fail("a config error not at the pipeline's file: %s", msg) end
end

return function(input, dir)
  check_seconds(input)
  local n = tonumber(input)
  if n then check_seconds(n) end

  local file = dir .. "/pipeline.lua"
  pipeline.loading = file
  -- run and when files resolve in dir only: a fuzzed path must not make the fuzzer read
  -- /dev/zero or load the host's files
  local real_loadfile = loadfile
  loadfile = function(path, mode) -- luacheck: ignore (the global load_relative calls)
    if type(path) == "string" and path:sub(1, #dir + 1) == dir .. "/" and not path:find("/..", #dir, true)
      and path:match("^[^\n]*%.lua$") then
      return real_loadfile(path, mode)
    end
    return nil, "cannot open " .. tostring(path)
  end
  local value = json.decode(input)
  if value == nil then value = input end
  check_define(to_spec(value, 0), file .. ":")
end
