-- Pipelines: pipeline.define{name, trigger, stages} checks a pipeline when its file loads and
-- returns the object `stagehost FILE.lua` and `stagehost run` execute. Every mistake is one
-- line with the pipeline's file:line and exit code 2.
local pipeline = {}

local PIPELINE_MT = { __name = "stagehost.pipeline" }
local STAGE_FIELDS = { name = true, needs = true, run = true, timeout = true, retry = true,
  continue_on_error = true, when = true, description = true, concurrency = true, gate = true }
local PIPELINE_FIELDS = { name = true, trigger = true, stages = true, description = true, env = true,
  concurrency = true, cleanup_timeout = true, notify = true, auto_approve = true }
local TRIGGER_FIELDS = { tags = true, branches = true, manual = true }
local WHEN_WORDS = { success = true, failure = true, always = true, cancelled = true }

-- A configuration error: printed as one line, no traceback, exit code 2.
local function config_error(where, fmt, ...)
  -- a value quoted in the message (a field name, a stage name) may hold a line break: shown
  -- as \x0A, the message stays one line
  local msg = fmt:format(...):gsub("%c", function(c) return ("\\x%02X"):format(c:byte()) end)
  require("stagehost.errors").config("%s: %s", where, msg)
end
pipeline.config_error = config_error

function pipeline.is(value)
  return getmetatable(value) == PIPELINE_MT
end

-- "90", 90, "500ms", "10s", "30m", "24h", "1h30m" -> seconds; nil when unreadable. Never
-- infinite (math.huge, 400 digits): a run record, describe and an approval's JSON cannot hold it.
function pipeline.seconds(value)
  if type(value) == "number" then return value >= 0 and value < math.huge and value or nil end
  if type(value) ~= "string" then return nil end
  if value:match("^%d+%.?%d*$") then return pipeline.seconds(tonumber(value)) end
  local total, rest = 0, value
  local units = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }
  while #rest > 0 do
    local n, tail = rest:match("^(%d+%.?%d*)ms(.*)$")
    local unit = "ms"
    if not n then n, unit, tail = rest:match("^(%d+%.?%d*)([smhd])(.*)$") end
    if not n then return nil end
    total, rest = total + tonumber(n) * units[unit], tail
  end
  return pipeline.seconds(total)
end

-- The candidate within two edits of word, for "did you mean"; strict also wants fewer edits
-- than half the word (short words, like command names, match nothing by accident).
local function closest(word, candidates, strict)
  local best, best_d
  for _, c in ipairs(candidates) do
    -- edit distance, small strings only
    local m, n = #word, #c
    local prev = {}
    for j = 0, n do prev[j] = j end
    for i = 1, m do
      local cur = { [0] = i }
      for j = 1, n do
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (word:sub(i, i) == c:sub(j, j) and 0 or 1))
      end
      prev = cur
    end
    if prev[n] <= 2 and (not strict or prev[n] < #word / 2) and (not best_d or prev[n] < best_d) then
      best, best_d = c, prev[n]
    end
  end
  return best
end
pipeline.closest = closest

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  return keys
end

-- A configuration error for a key of t that fields does not have, naming the closest one:
-- "<what> has an unknown field 'x' (did you mean 'y'?)<tail>".
local function check_fields(where, t, fields, what, tail)
  for key in pairs(t) do
    if not fields[key] then
      local hint = type(key) == "string" and closest(key, sorted_keys(fields))
      config_error(where, "%s has an unknown field '%s'%s%s", what, tostring(key),
        hint and (" (did you mean '" .. hint .. "'?)") or "", tail or "")
    end
  end
end

-- Load a Lua file named relative to the pipeline file; it must return a function. Text only:
-- precompiled chunks are not checked by Lua's loader and can crash the host.
local function load_relative(where, dir, path, what)
  local full = path:sub(1, 1) == "/" and path or (dir .. "/" .. path)
  local chunk, err = loadfile(full, "t")
  if not chunk then
    if err:find("cannot open") then config_error(where, "%s file '%s' not found (looked at %s)", what, path, full) end
    config_error(where, "%s file '%s' does not load: %s", what, path, err)
  end
  return chunk, full
end

-- concurrency = "group" | function(run) -> group | {group = ..., cancel_in_progress = bool}
local function check_concurrency(where, label, value)
  if value == nil then return nil end
  local spec = value
  if type(value) == "string" or type(value) == "function" then spec = { group = value } end
  if type(spec) ~= "table" then
    config_error(where, "%s: concurrency must be a group name, a function(run) or {group = ..., cancel_in_progress = true} (got %s)",
      label, type(value))
  end
  for key in pairs(spec) do
    if key ~= "group" and key ~= "cancel_in_progress" then
      config_error(where, "%s: concurrency has an unknown field '%s' (it takes group and cancel_in_progress)", label, tostring(key))
    end
  end
  if not ((type(spec.group) == "string" and spec.group ~= "") or type(spec.group) == "function") then
    config_error(where, "%s: concurrency needs a group: a name or a function(run) returning one", label)
  end
  if spec.cancel_in_progress ~= nil and type(spec.cancel_in_progress) ~= "boolean" then
    config_error(where, "%s: concurrency.cancel_in_progress must be true or false", label)
  end
  return { group = spec.group, cancel_in_progress = spec.cancel_in_progress == true }
end

-- trigger = {tags = {"rc-*"}, branches = {"develop"}, manual = true}
local function check_trigger(where, trigger)
  if trigger == nil then return { manual = true } end
  if type(trigger) ~= "table" then config_error(where, "trigger must be a table like {tags = {\"rc-*\"}, manual = true}") end
  check_fields(where, trigger, TRIGGER_FIELDS, "trigger", " (it takes tags, branches and manual)")
  if trigger.manual ~= nil and type(trigger.manual) ~= "boolean" then
    config_error(where, "trigger.manual must be true or false (got %s)", type(trigger.manual))
  end
  local out = { manual = trigger.manual ~= false }
  for _, key in ipairs{ "tags", "branches" } do
    local list = trigger[key]
    if type(list) == "string" then list = { list } end
    if list ~= nil then
      if type(list) ~= "table" or #list == 0 then
        config_error(where, "trigger.%s must be a list of patterns like {\"%s\"}", key, key == "tags" and "rc-*" or "main")
      end
      for i, pattern in ipairs(list) do
        if type(pattern) ~= "string" or pattern == "" then
          config_error(where, "trigger.%s[%d] must be a pattern string (got %s)", key, i, type(pattern))
        end
      end
      out[key] = list
    end
  end
  if not out.manual and not out.tags and not out.branches then
    config_error(where, "trigger allows no run at all: give tags, branches or manual = true")
  end
  return out
end

-- env = {NAME = "value"}: names as the shell takes them, values strings (numbers and booleans
-- are written out)
local function check_env(where, env)
  if env == nil then return {} end
  if type(env) ~= "table" then config_error(where, "env must be a table of NAME = \"value\" (got %s)", type(env)) end
  local out = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      config_error(where, "env: '%s' is not a variable name (letters, digits and '_', not starting with a digit)", tostring(k))
    end
    if type(v) == "number" or type(v) == "boolean" then v = tostring(v) end
    if type(v) ~= "string" then config_error(where, "env.%s must be a string (got %s)", k, type(v)) end
    out[k] = v
  end
  return out
end

-- Shell-style patterns as GitHub Actions reads them in tag and branch filters: '*' is anything
-- but '/', '**' is anything, '?' one character.
function pipeline.glob_match(pattern, s)
  local lua = pattern:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0")
  lua = lua:gsub("%*%*", "\1"):gsub("%*", "[^/]*"):gsub("\1", ".*"):gsub("%?", ".")
  return s:match("^" .. lua .. "$") ~= nil
end

-- Does this run's origin match the trigger? facts: {tag = , branch = , manual = bool}.
-- Returns nil when it may run, else the reason it may not.
function pipeline.trigger_refusal(p, facts)
  local t = p.trigger
  local function any(list, value)
    for _, pattern in ipairs(list) do if pipeline.glob_match(pattern, value) then return true end end
    return false
  end
  if facts.tag and t.tags then
    if any(t.tags, facts.tag) then return nil end
    return ("tag '%s' does not match the trigger of pipeline '%s' (tags %s)"):format(facts.tag, p.name,
      table.concat(t.tags, ", "))
  end
  if facts.branch and not facts.manual then
    if t.branches and any(t.branches, facts.branch) then return nil end
    return ("a push to branch '%s' does not trigger pipeline '%s' (%s)"):format(facts.branch, p.name,
      t.branches and ("branches " .. table.concat(t.branches, ", ")) or "it has no branches trigger")
  end
  if t.manual then return nil end
  local wants = {}
  if t.tags then wants[#wants + 1] = "a tag matching " .. table.concat(t.tags, ", ") .. " (--tag)" end
  if t.branches then wants[#wants + 1] = "a push to " .. table.concat(t.branches, ", ") end
  return ("pipeline '%s' does not run by hand (trigger.manual = false): it wants %s"):format(p.name,
    table.concat(wants, " or "))
end

local function check_stage(where, dir, st, i, names)
  if type(st) ~= "table" then config_error(where, "stages[%d] must be a table (got %s)", i, type(st)) end
  if type(st.name) ~= "string" or not st.name:match("^[%w][%w_.%-]*$") then
    config_error(where, "stages[%d] needs a name of letters, digits, '-', '_' or '.' (got %s)", i, tostring(st.name))
  end
  local label = ("stage '%s'"):format(st.name)
  check_fields(where, st, STAGE_FIELDS, label)
  if names[st.name] then config_error(where, "two stages are named '%s' (names must be unique)", st.name) end
  names[st.name] = i
  local stage = { name = st.name, needs = {}, retry = 0, continue_on_error = st.continue_on_error == true,
    when = "success", description = st.description }
  if st.needs ~= nil then
    local needs = type(st.needs) == "string" and { st.needs } or st.needs
    if type(needs) ~= "table" then config_error(where, "%s: needs must be a list of stage names", label) end
    for j, n in ipairs(needs) do
      if type(n) ~= "string" then config_error(where, "%s: needs[%d] must be a stage name (got %s)", label, j, type(n)) end
      stage.needs[#stage.needs + 1] = n
    end
  end
  if type(st.run) == "function" then
    stage.run = st.run
  elseif type(st.run) == "string" then
    stage.run_chunk, stage.run_file = load_relative(where, dir, st.run, label .. ": run")
    stage.run_name = st.run
  else
    config_error(where, "%s needs run = \"stages/FILE.lua\" or a function (got %s)", label, type(st.run))
  end
  if st.timeout ~= nil then
    stage.timeout = pipeline.seconds(st.timeout)
    if not stage.timeout then
      config_error(where, "%s: timeout must be seconds or like \"10s\", \"30m\", \"24h\" (got %s)", label, tostring(st.timeout))
    end
    stage.timeout_text = tostring(st.timeout)
  end
  if st.retry ~= nil then
    if math.type(st.retry) ~= "integer" or st.retry < 0 then
      config_error(where, "%s: retry must be a whole number of extra attempts (got %s)", label, tostring(st.retry))
    end
    stage.retry = st.retry
  end
  if st.continue_on_error ~= nil and type(st.continue_on_error) ~= "boolean" then
    config_error(where, "%s: continue_on_error must be true or false", label)
  end
  if st.gate ~= nil and type(st.gate) ~= "boolean" then config_error(where, "%s: gate must be true or false", label) end
  stage.gate = st.gate == true
  stage.concurrency = check_concurrency(where, label, st.concurrency)
  local when = st.when
  if when == nil then
    stage.when = "success"
  elseif type(when) == "function" then
    stage.when, stage.decision = "decision", when
    stage.decision_name = "function"
  elseif type(when) == "string" and WHEN_WORDS[when] then
    stage.when = when
  elseif type(when) == "string" and when:match("%.lua$") then
    stage.when = "decision"
    stage.decision_chunk = load_relative(where, dir, when, label .. ": when")
    stage.decision_name = when
  else
    local hint = type(when) == "string" and closest(when, sorted_keys(WHEN_WORDS))
    config_error(where, "%s: when must be \"success\", \"failure\", \"always\", \"cancelled\", a decision file (.lua) or a function (got %s)%s",
      label, tostring(when), hint and (" (did you mean '" .. hint .. "'?)") or "")
  end
  return stage
end

-- Depth-first search for a cycle; returns the names along it, first repeated at the end.
local function find_cycle(stages, by_name)
  local state, stack = {}, {}
  local function visit(name)
    state[name] = "open"
    stack[#stack + 1] = name
    for _, n in ipairs(by_name[name].needs) do
      if state[n] == "open" then
        local cycle, started = {}, false
        for _, s in ipairs(stack) do
          if s == n then started = true end
          if started then cycle[#cycle + 1] = s end
        end
        cycle[#cycle + 1] = n
        return cycle
      elseif not state[n] then
        local c = visit(n)
        if c then return c end
      end
    end
    stack[#stack] = nil
    state[name] = "done"
  end
  for _, st in ipairs(stages) do
    if not state[st.name] then
      local c = visit(st.name)
      if c then return c end
    end
  end
end

-- The file being loaded as a pipeline: set by whoever loads it, because `return
-- pipeline.define{...}` is a tail call and leaves no frame of the file on the stack.
pipeline.loading = nil

-- The first line of a file that matches a pattern, for messages that point at the mistake.
local function line_of(file, pattern)
  local f = io.open(file)
  if not f then return nil end
  local n = 0
  for line in f:lines() do
    n = n + 1
    if line:find(pattern) then
      f:close()
      return n
    end
  end
  f:close()
  return nil
end

local function stage_pattern(name)
  return "name%s*=%s*[\"']" .. name:gsub("%p", "%%%0") .. "[\"']"
end

-- pipeline.define{name, trigger = {tags, manual}, stages = {...}} -> pipeline
function pipeline.define(spec)
  local info = debug.getinfo(2, "Sl")
  local file = pipeline.loading or (info and info.source:sub(1, 1) == "@" and info.source:sub(2))
    or (arg and arg[0]) or "(pipeline)"
  local define_line = (info and info.source == "@" .. file and info.currentline > 0 and info.currentline)
    or line_of(file, "define") or 0
  local where = ("%s:%d"):format(file, define_line)
  local dir = file:match("^(.*)/[^/]*$") or "."
  -- a mistake in one stage points at that stage's name = "..." line when it can be found
  local function at_stage(name)
    local line = type(name) == "string" and line_of(file, stage_pattern(name))
    return line and ("%s:%d"):format(file, line) or where
  end
  if type(spec) ~= "table" then config_error(where, "pipeline.define needs a table (got %s)", type(spec)) end
  check_fields(where, spec, PIPELINE_FIELDS, "the pipeline")
  if type(spec.name) ~= "string" or spec.name == "" then config_error(where, "the pipeline needs a name (a string)") end
  if type(spec.stages) ~= "table" or #spec.stages == 0 then
    config_error(where, "pipeline '%s' needs stages = { {name = ..., run = ...}, ... }", spec.name)
  end
  local stages, by_name, names = {}, {}, {}
  for i, st in ipairs(spec.stages) do
    local stage = check_stage(at_stage(type(st) == "table" and st.name), dir, st, i, names)
    stage.index = i
    stages[i] = stage
    by_name[stage.name] = stage
  end
  for _, st in ipairs(stages) do
    for _, n in ipairs(st.needs) do
      if not by_name[n] then
        local hint = closest(n, sorted_keys(by_name))
        config_error(at_stage(st.name), "stage '%s' needs '%s', which is not a stage%s", st.name, n,
          hint and (" (did you mean '" .. hint .. "'?)") or "")
      end
      if n == st.name then config_error(at_stage(n), "stage '%s' needs itself", n) end
    end
  end
  local cycle = find_cycle(stages, by_name)
  if cycle then config_error(at_stage(cycle[1]), "the stages form a cycle: %s", table.concat(cycle, " -> ")) end
  local trigger = check_trigger(where, spec.trigger)
  local env = check_env(where, spec.env)
  local concurrency = check_concurrency(where, "the pipeline", spec.concurrency)
  local cleanup_timeout = 300
  if spec.cleanup_timeout ~= nil then
    cleanup_timeout = pipeline.seconds(spec.cleanup_timeout)
    if not cleanup_timeout then
      config_error(where, "cleanup_timeout must be seconds or like \"30s\", \"5m\" (got %s)", tostring(spec.cleanup_timeout))
    end
  end
  if spec.auto_approve ~= nil and type(spec.auto_approve) ~= "boolean" then
    config_error(where, "auto_approve must be true or false (got %s)", type(spec.auto_approve))
  end
  -- notify = {{channel = ...}, ...}: checked now, channel files found beside the pipeline
  local notify = spec.notify ~= nil and require("stagehost.notify").check(spec.notify, where, dir) or nil
  for _, st in ipairs(stages) do
    st.dependents = {}
  end
  for _, st in ipairs(stages) do
    for _, n in ipairs(st.needs) do
      local dep = by_name[n].dependents
      dep[#dep + 1] = st.name
    end
  end
  return setmetatable({ name = spec.name, description = spec.description, trigger = trigger, stages = stages,
    by_name = by_name, file = file, dir = dir, where = where, env = env, concurrency = concurrency,
    cleanup_timeout = cleanup_timeout, notify = notify, auto_approve = spec.auto_approve == true }, PIPELINE_MT)
end

-- ---- graphs ----

local function edge_kind(stage)
  if stage.when == "failure" then return "failure" end
  if stage.when == "always" then return "always" end
  if stage.when == "cancelled" then return "cancelled" end
  if stage.when == "decision" then return "if " .. (stage.decision_name or "decision"):gsub("%.lua$", ""):gsub("^.*/", "") end
  return nil
end

-- Mermaid in the style of the seed's "Job Dependencies": solid edges for success, dotted and
-- labelled for failure/always/decisions. statuses (optional) colours the nodes.
function pipeline.mermaid(p, statuses)
  local ids, lines = {}, { "graph LR" }
  for i, st in ipairs(p.stages) do
    ids[st.name] = i <= 26 and string.char(64 + i) or ("S" .. i)
    lines[#lines + 1] = ("    %s[%s]"):format(ids[st.name], st.name)
  end
  for _, st in ipairs(p.stages) do
    local kind = edge_kind(st)
    for _, n in ipairs(st.needs) do
      if kind then
        lines[#lines + 1] = ("    %s -.%s.-> %s"):format(ids[n], kind, ids[st.name])
      else
        lines[#lines + 1] = ("    %s --> %s"):format(ids[n], ids[st.name])
      end
    end
  end
  if statuses then
    local colours = require("stagehost.util.status").fill
    for _, st in ipairs(p.stages) do
      local c = colours[statuses[st.name] or "pending"]
      if c then lines[#lines + 1] = ("    style %s fill:%s"):format(ids[st.name], c) end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

function pipeline.dot(p)
  local lines = { ("digraph %q {"):format(p.name), "  rankdir=LR;", "  node [shape=box];" }
  for _, st in ipairs(p.stages) do lines[#lines + 1] = ("  %q;"):format(st.name) end
  for _, st in ipairs(p.stages) do
    local kind = edge_kind(st)
    for _, n in ipairs(st.needs) do
      lines[#lines + 1] = kind and ("  %q -> %q [style=dashed, label=%q];"):format(n, st.name, kind)
        or ("  %q -> %q;"):format(n, st.name)
    end
  end
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n") .. "\n"
end

function pipeline.describe(p)
  local json = require("stagehost.json")
  local out = { name = p.name, file = p.file, stages = json.array{} }
  for _, st in ipairs(p.stages) do
    out.stages[#out.stages + 1] = {
      name = st.name, needs = json.array(st.needs), when = st.when, decision = st.decision_name,
      timeout = st.timeout, retry = st.retry, continue_on_error = st.continue_on_error,
      run = st.run_name or "function",
    }
  end
  return out
end

-- ---- running ----

-- `stagehost FILE.lua [--tag T ...]`: run the pipeline the file returned.
function pipeline.main(p, args)
  return require("stagehost.cli").run_pipeline(p, args or {})
end

return pipeline
