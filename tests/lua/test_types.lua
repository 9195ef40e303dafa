-- The LuaLS annotations of stdlib/types/ stay true to the code. For every meta file: it starts
-- with ---@meta, parses, names the module its path gives, and is not what the runtime loads;
-- every function it declares for a module or an object exists there as a function, and every
-- public function of the real module or object (its function-valued keys not starting with
-- '_') is declared -- so adding a function without annotating it fails here. The fields of
-- ctx, ctx.run, ctx.stages[name], a decision's run and pipeline.define's spec are compared
-- both ways with what the engine builds and accepts. STAGEHOST_TYPES_DIR points the test at
-- another copy of the files (to see it fail).
local T = require("harness")
local fs = require("stagehost.fs")
-- loaded before any test: some keep a handle for the whole run (curl's timer), which belongs
-- in every test's baseline
require "stagehost"
for _, name in ipairs{ "task", "proc", "fs", "json", "log", "http", "crypto", "xml", "yaml", "aws", "github",
  "sandbox", "sam", "pipeline", "errors", "util.retry", "pipeline.ctx", "pipeline.run", "core.http_server" } do
  require("stagehost." .. name)
end

local SOURCE = os.getenv("STAGEHOST_SOURCE_DIR") or arg[0]:match("^(.*)/tests/lua/[^/]*$") or "."
local TYPES = os.getenv("STAGEHOST_TYPES_DIR") or (SOURCE .. "/stdlib/types")

-- ---- reading the meta files ----

-- Every .lua file under dir, as paths relative to it, sorted.
local function lua_files(dir, prefix, out)
  out = out or {}
  local names = assert(fs.list(dir))
  for _, name in ipairs(names) do
    local full, rel = dir .. "/" .. name, (prefix and (prefix .. "/") or "") .. name
    local _, kind = fs.exists(full)
    if kind == "directory" then
      lua_files(full, rel, out)
    elseif name:match("%.lua$") then
      out[#out + 1] = rel
    end
  end
  table.sort(out)
  return out
end

-- The annotations of one file: its @meta name, its classes (fields, and functions defined as
-- `function VAR.name(` / `function VAR:name(` on the local table that follows a ---@class
-- block), aliases, and the variable it returns.
local function parse(path)
  local text = assert(fs.read(path))
  local info = { path = path, text = text, classes = {}, aliases = {}, order = {} }
  local class, vars, n = nil, {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if n == 1 then info.first = line end
    local name = line:match("^%-%-%-@class%s+([%w_.]+)")
    if name then
      T.ok(not info.classes[name], ("%s:%d: class %s declared twice"):format(path, n, name))
      class = { name = name, fields = {}, functions = {}, line = n }
      info.classes[name] = class
      info.order[#info.order + 1] = name
    elseif line:match("^%-%-%-@alias%s") then
      local alias, def = line:match("^%-%-%-@alias%s+([%w_.]+)%s+(.*)$")
      info.aliases[alias] = def
      class = nil
    elseif line:match("^%-%-%-") then
      local field, optional, ty = line:match("^%-%-%-@field%s+([%a_][%w_]*)(%??)%s+(%S.*)$")
      if field and class then
        T.ok(not class.fields[field], ("%s:%d: field %s.%s declared twice"):format(path, n, class.name, field))
        class.fields[field] = { optional = optional == "?", type = ty, fn = ty:match("^fun%(") ~= nil, line = n }
        -- a required fun() field is a function the code has; an optional one is a callback or
        -- a hook the caller may set (on_line, verify_signature)
        if ty:match("^fun%(") and optional == "" then class.functions[field] = n end
      end
    else
      local var = line:match("^local%s+([%a_][%w_]*)%s*=%s*{}%s*$")
      if var and class then
        vars[var] = class
        class.var = var
      end
      class = nil
      local owner, fname = line:match("^function%s+([%a_][%w_]*)[.:]([%a_][%w_]*)%s*%(")
      if owner then
        T.ok(vars[owner], ("%s:%d: function %s.%s: %s is not the table of a ---@class"):format(path, n, owner, fname, owner))
        T.ok(not vars[owner].functions[fname], ("%s:%d: %s.%s declared twice"):format(path, n, owner, fname))
        vars[owner].functions[fname] = n
      end
      local returned = line:match("^return%s+([%a_][%w_]*)%s*$")
      if returned then info.returns = vars[returned] end
    end
  end
  info.meta = info.first:match("^%-%-%-@meta%s+(%S+)")
  return info
end

-- ---- what the code has ----

local function registry_mt(name)
  local mt = debug.getregistry()[name]
  T.ok(type(mt) == "table", "a metatable named " .. name .. " in the registry")
  return mt
end

local function index_of(value)
  local mt = getmetatable(value)
  T.ok(type(mt) == "table" and type(mt.__index) == "table", "an object with an __index table")
  return mt.__index
end

-- The real table behind each class whose functions are declared: a module's table, or the
-- methods of its objects. A class with functions that has no entry here fails the test, so a
-- new object type gets a check too.
local OBJECTS = {
  ["stagehost.task.Task"] = function() return registry_mt("stagehost.task").__index end,
  ["stagehost.proc.Handle"] = function() return registry_mt("stagehost.process").methods end,
  ["stagehost.log.Context"] = function() return registry_mt("stagehost.log.context").__index end,
  ["stagehost.http.Server"] = function()
    require "stagehost.core.http_server"
    return registry_mt("stagehost.http.server").methods
  end,
  ["stagehost.http.Request"] = function()
    require "stagehost.core.http_server"
    return registry_mt("stagehost.http.request").__index
  end,
  ["stagehost.http.Stream"] = function()
    require "stagehost.core.http_server"
    return registry_mt("stagehost.http.stream").__index
  end,
  ["stagehost.aws.CloudFormation"] = function() return index_of(require("stagehost.aws").cloudformation{ region = "us-east-1" }) end,
  ["stagehost.aws.Amplify"] = function() return index_of(require("stagehost.aws").amplify{ region = "us-east-1" }) end,
  ["stagehost.aws.STS"] = function() return index_of(require("stagehost.aws").sts{ region = "us-east-1" }) end,
  ["stagehost.aws.S3"] = function() return index_of(require("stagehost.aws").s3{ region = "us-east-1" }) end,
  ["stagehost.github.Client"] = function()
    return index_of(require("stagehost.github").client{ token = "types-test-token", repo = "o/r", api_url = "http://127.0.0.1:9" })
  end,
  ["stagehost.sandbox.Sandbox"] = function()
    local sb = require("stagehost.sandbox").start{}
    local methods = index_of(sb)
    sb:close()
    return methods
  end,
  -- ctx's methods; new and stage_view are the engine's constructors, not called on a ctx
  ["stagehost.Ctx"] = function()
    local methods = {}
    for k, v in pairs(require "stagehost.pipeline.ctx") do
      if k ~= "new" and k ~= "stage_view" then methods[k] = v end
    end
    return methods
  end,
}

local sorted = require("stagehost.util.tables").sorted_keys

-- Both ways: each declared function is a function of real; each public function of real is
-- declared. Returns the problems, one line each.
local function compare_functions(class, real, where)
  local problems = {}
  for _, name in ipairs(sorted(class.functions)) do
    if type(real[name]) ~= "function" then
      problems[#problems + 1] = ("%s:%d: %s declares %s, but the code has %s there"):format(where, class.functions[name],
        class.name, name, real[name] == nil and "nothing" or ("a " .. type(real[name])))
    end
  end
  local names = {}
  for k, v in pairs(real) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then names[k] = true end
  end
  for _, name in ipairs(sorted(names)) do
    if not class.functions[name] then
      problems[#problems + 1] = ("%s: %s has a function %s that the annotations of %s do not declare"):format(where,
        class.name, name, class.name)
    end
  end
  return problems
end

-- A module's other fields: each public non-function value is declared, and each declared
-- field that is not optional has a value.
local function compare_fields(class, real, where)
  local problems = {}
  for k, v in pairs(real) do
    if type(k) == "string" and type(v) ~= "function" and not k:match("^_") and not class.fields[k] then
      problems[#problems + 1] = ("%s: %s.%s (a %s) is not declared as a ---@field"):format(where, class.name, k, type(v))
    end
  end
  for _, name in ipairs(sorted(class.fields)) do
    local f = class.fields[name]
    if not f.fn and not f.optional and real[name] == nil then
      problems[#problems + 1] = ("%s:%d: %s declares the field %s, which the code does not have"):format(where, f.line,
        class.name, name)
    end
  end
  return problems
end

-- Fails with every problem, one a line (sorted where they came from a hash walk).
local function no_problems(problems, sort)
  if sort then table.sort(problems) end
  if #problems > 0 then error(table.concat(problems, "\n"), 2) end
end

local function append(into, list)
  for _, v in ipairs(list) do into[#into + 1] = v end
end

-- ---- the tests ----

local files, parsed, by_class, by_meta

-- Reads and checks every meta file once: it starts with ---@meta, parses, and (unless it is
-- `---@meta _`) names the module its path gives and returns that module's table.
local function read_files()
  files, parsed, by_class, by_meta = lua_files(TYPES), {}, {}, {}
  T.ok(#files >= 17, ("meta files under %s (found %d)"):format(TYPES, #files))
  for _, rel in ipairs(files) do
    local path = TYPES .. "/" .. rel
    local chunk, err = loadfile(path, "t")
    T.ok(chunk, ("%s does not parse: %s"):format(rel, tostring(err)))
    local info = parse(path)
    info.rel = "stdlib/types/" .. rel -- as messages name it
    T.ok(info.first:match("^%-%-%-@meta"), rel .. " must start with ---@meta, got " .. ("%q"):format(info.first))
    parsed[rel] = info
    for name, class in pairs(info.classes) do
      T.ok(not by_class[name], ("class %s is declared in %s and in %s"):format(name, info.rel, by_class[name] and by_class[name].rel))
      by_class[name] = { class = class, rel = info.rel, info = info }
    end
    if info.meta ~= "_" then
      -- stagehost/util/retry.lua is `require "stagehost.util.retry"`, and LuaLS finds it there
      local module = rel:gsub("%.lua$", ""):gsub("/", ".")
      T.eq(info.meta, module, rel .. ": the ---@meta name")
      T.ok(info.classes[module], ("%s: a ---@class %s for the module"):format(rel, module))
      T.ok(info.returns == info.classes[module], ("%s: must end with `return` of the %s table"):format(rel, module))
      by_meta[module] = info
    end
  end
end

local function read_all()
  if files then return end
  local ok, err = pcall(read_files)
  if not ok then
    files = nil -- every test that needs them fails the same way
    error(err, 0)
  end
end

T.test("every meta file starts with ---@meta, parses, and names the module its path gives", read_all)

T.test("every stagehost.* type the annotations name is declared", function()
  read_all()
  local aliases = {}
  for _, info in pairs(parsed) do
    for name in pairs(info.aliases) do aliases[name] = true end
  end
  local problems = {}
  for _, rel in ipairs(files) do
    local n = 0
    for line in (parsed[rel].text .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if line:match("^%-%-%-@") and not line:match("^%-%-%-@meta") then
        for name in line:gmatch("stagehost%.[%w_.]*[%w_]") do
          if not by_class[name] and not aliases[name] then
            problems[#problems + 1] = ("%s:%d: unknown type %s"):format(parsed[rel].rel, n, name)
          end
        end
      end
    end
  end
  no_problems(problems)
end)

T.test("the runtime loads the real modules, never a meta file", function()
  read_all()
  T.ok(next(by_meta), "meta files were read")
  for module in pairs(by_meta) do
    local found = package.searchpath(module, package.path)
    T.ok(found, module .. " is on package.path")
    T.no_match(found, "/types/", module .. " resolves to")
    T.eq(type(require(module)), "table", module)
  end
end)

T.test("every public module has a meta file", function()
  read_all()
  local init = assert(fs.read(assert(package.searchpath("stagehost", package.path))))
  local list = T.ok(init:match("local modules = (%b{})"), "the module list of stagehost/init.lua")
  local want = { "stagehost", "stagehost.pipeline", "stagehost.errors", "stagehost.util.retry" }
  for name in list:gmatch("([%a_][%w_]*)%s*=%s*true") do want[#want + 1] = "stagehost." .. name end
  for _, module in ipairs(want) do T.ok(by_meta[module], "a meta file for " .. module) end
end)

T.test("require 'stagehost' gives the modules the stagehost class declares", function()
  read_all()
  local class = T.ok(by_class["stagehost"], "class stagehost").class
  local init = assert(fs.read(assert(package.searchpath("stagehost", package.path))))
  local names = {}
  for name in init:match("local modules = (%b{})"):gmatch("([%a_][%w_]*)%s*=%s*true") do names[name] = true end
  local stagehost = require("stagehost")
  local problems = {}
  for _, name in ipairs(sorted(class.fields)) do
    local ok, m = pcall(function() return stagehost[name] end)
    if not ok or m ~= require("stagehost." .. name) then
      problems[#problems + 1] = ("stagehost.lua:%d: require('stagehost').%s is not the module stagehost.%s"):format(
        class.fields[name].line, name, name)
    end
    if not class.fields[name].type:match("^stagehost%." .. name:gsub("%p", "%%%0") .. "$") then
      problems[#problems + 1] = ("stagehost.lua: field %s should have type stagehost.%s"):format(name, name)
    end
  end
  for _, name in ipairs(sorted(names)) do
    if not class.fields[name] then
      problems[#problems + 1] = ("stagehost/init.lua lists the module %s, which the class stagehost does not declare"):format(name)
    end
  end
  no_problems(problems)
end)

T.test("the functions of every module are declared, and exist", function()
  read_all()
  local problems = {}
  for module, info in pairs(by_meta) do
    local class, real = info.classes[module], require(module)
    if module == "stagehost" then
      T.eq(next(class.functions), nil, "the stagehost table has no functions")
    else
      append(problems, compare_functions(class, real, info.rel))
      append(problems, compare_fields(class, real, info.rel))
    end
  end
  no_problems(problems, "sort")
end)

T.test("the methods of every object type are declared, and exist", function()
  read_all()
  local problems = {}
  for name, entry in pairs(by_class) do
    local class = entry.class
    -- a class with a methods table of its own (local X = {} with function X:m() stubs) stands
    -- for real objects: their methods are compared with those of a live one
    if class.var and not by_meta[name] then
      local real = OBJECTS[name]
      if not real then
        problems[#problems + 1] = ("%s:%d: class %s has methods but no check: add it to OBJECTS in tests/lua/test_types.lua"):format(
          entry.rel, class.line, name)
      else
        append(problems, compare_functions(class, real(), entry.rel))
      end
    end
  end
  for name in pairs(OBJECTS) do
    if not (by_class[name] and by_class[name].class.var) then
      problems[#problems + 1] = ("OBJECTS checks %s, which no meta file declares with a table of methods"):format(name)
    end
  end
  no_problems(problems, "sort")
end)

-- The keys of a table against the fields of a class, both ways.
local function same_keys(t, class_name, what)
  local entry = T.ok(by_class[class_name], "class " .. class_name)
  local fields, problems = entry.class.fields, {}
  for k in pairs(t) do
    if type(k) == "string" and not k:match("^_") and not fields[k] then
      problems[#problems + 1] = ("%s has %s, which %s does not declare"):format(what, k, class_name)
    end
  end
  for _, k in ipairs(sorted(fields)) do
    if rawget(t, k) == nil then
      problems[#problems + 1] = ("%s:%d: %s declares %s, which %s does not have"):format(entry.rel, fields[k].line,
        class_name, k, what)
    end
  end
  return problems
end

T.test("ctx, ctx.run, ctx.stages[name] and a decision's run have the declared fields", function()
  read_all()
  local Ctx = require("stagehost.pipeline.ctx")
  local Run = require("stagehost.pipeline.run")
  -- every field the engine reads, set, so that none is missing for being nil
  local rec = { name = "build", status = "success", outputs = { url = "x" }, error = "e", reason = "r",
    started_at = "2026-01-01T00:00:00Z", finished_at = "2026-01-01T00:00:01Z", attempts = 1, duration = 1,
    reused_from = "run-0" }
  local run = { id = "run-1", tag = "rc-1", env = "staging", actor = "dana", sandbox = true, attempt = 2,
    commit = "abc", dir = "/tmp/run-1", vars = { k = "v" }, records = { build = rec }, cancelling = "stop",
    p = { name = "staging", env = { A = "1" }, file = "/p/staging.lua", dir = "/p" } }
  local ctx = Ctx.new(run, { name = "deploy" })
  local problems = {}
  for _, list in ipairs{
    same_keys(ctx, "stagehost.Ctx", "ctx"),
    same_keys(ctx.run, "stagehost.RunInfo", "ctx.run"),
    same_keys(ctx.pipeline, "stagehost.PipelineInfo", "ctx.pipeline"),
    same_keys(Ctx.stage_view(rec), "stagehost.StageView", "ctx.stages[name]"),
    same_keys(Run.view(run), "stagehost.RunView", "a decision's run"),
  } do
    append(problems, list)
  end
  T.eq(ctx.stages.build.status, "success", "ctx.stages reads the records")
  no_problems(problems)
end)

T.test("stage statuses and pipeline.define's fields are the ones the code accepts", function()
  read_all()
  local src = assert(fs.read(assert(package.searchpath("stagehost.pipeline", package.path))))
  local function set_of(name)
    local body = T.ok(src:match("local " .. name .. " = (%b{})"), name .. " in stdlib/stagehost/pipeline.lua")
    local set = {}
    for k in body:gmatch("([%a_][%w_]*)%s*=%s*true") do set[k] = true end
    return set
  end
  local problems = {}
  for table_name, class_name in pairs{ STAGE_FIELDS = "stagehost.pipeline.StageSpec",
    PIPELINE_FIELDS = "stagehost.pipeline.Spec", TRIGGER_FIELDS = "stagehost.pipeline.Trigger" } do
    for _, p in ipairs(same_keys(set_of(table_name), class_name, "pipeline.lua's " .. table_name)) do
      problems[#problems + 1] = p
    end
  end
  -- the alias strings against the code's sets
  local function literals(alias)
    local entry
    for _, info in pairs(parsed) do if info.aliases[alias] then entry = info.aliases[alias] end end
    T.ok(entry, "---@alias " .. alias)
    local set = {}
    for word in entry:gmatch('"([^"]*)"') do set[word] = true end
    return set
  end
  local function same_set(a, b, what)
    for _, k in ipairs(sorted(a)) do if not b[k] then problems[#problems + 1] = what .. ": " .. k .. " is not in the code" end end
    for _, k in ipairs(sorted(b)) do if not a[k] then problems[#problems + 1] = what .. ": " .. k .. " is not annotated" end end
  end
  same_set(literals("stagehost.pipeline.When"), set_of("WHEN_WORDS"), "when")
  same_set(literals("stagehost.StageStatus"), require("stagehost.pipeline.run").TERMINAL, "stagehost.StageStatus")
  no_problems(problems)
end)

-- cmake --install puts the annotations in share/stagehost/types, outside the runtime's path.
T.test("installed: share/stagehost/types, and the runtime still loads the real modules", function()
  read_all()
  local build = os.getenv("STAGEHOST_BUILD_DIR")
  if not build or os.getenv("STAGEHOST_TYPES_DIR") then return end
  local proc = require("stagehost.proc")
  local prefix = T.tempdir()
  local r = proc.run{ "cmake", "--install", build, "--prefix", prefix, quiet = true }
  T.ok(r.ok, "cmake --install: " .. tostring(r.stderr))
  for _, rel in ipairs(files) do
    T.ok(fs.exists(prefix .. "/share/stagehost/types/" .. rel), "installed " .. rel)
  end
  T.ok(not fs.exists(prefix .. "/share/stagehost/lua/types"), "no types under share/stagehost/lua")
  local out = proc.run{ prefix .. "/bin/stagehost", "-e",
    "print(package.searchpath('stagehost.proc', package.path)) print(type(require('stagehost.proc').run))", quiet = true }
  T.ok(out.ok, "the installed stagehost runs: " .. tostring(out.stderr))
  T.match(out.stdout, "/share/stagehost/lua/stagehost/proc%.lua\nfunction\n$", "what require 'stagehost.proc' loads")
  assert(fs.remove(prefix, { recursive = true }))
end, { timeout = 120 })

T.run()
