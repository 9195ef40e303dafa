-- Durable run state: kill -9 at many points and resume, cancel from another process, readers
-- while a host writes, artifact pruning, and a corrupt database left as it was.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")


local sh = T.stagehost

-- A fresh directory holding p.lua: the pipeline `name` with the stages given as Lua source (the
-- items of its stages list).
local function pipeline_dir(name, stages)
  return T.project { ["p.lua"] = ("local pipeline = require 'stagehost.pipeline'\n"
    .. "return pipeline.define{ name = %q, stages = {\n%s\n} }\n"):format(name, stages) }
end

-- A pipeline of one stage that does nothing.
local ONE_STAGE = "{ name = 'a', run = function() end }"

-- The record of run id, as `stagehost status ID --json` in dir prints it.
local function status(dir, id)
  return json.decode(sh(dir, { "status", id, "--json" }).stdout)
end

-- Each stage does three checkpointed steps and notes in journal.txt what it did. With
-- KILL_AT=POINT the host stops at that point (and waits to be killed): "start a", "step a 2"
-- (done, not yet recorded), "saved a 2" (recorded), "return a" (about to return its outputs).
local RESUMABLE = [[
local pipeline = require("stagehost.pipeline")
local task = require("stagehost.task")
local function note(line)
  local f = assert(io.open("journal.txt", "a"))
  f:write(line, "\n")
  f:close()
end
local function point(name)
  if os.getenv("KILL_AT") == name then
    local f = assert(io.open("reached", "w"))
    f:write(name)
    f:close()
    while true do task.sleep(1) end
  end
end
local function stage(name)
  return function(ctx)
    point("start " .. name)
    local from = (ctx:checkpoint("step") or 0) + 1
    note(("start %s at %d"):format(name, from))
    for i = from, 3 do
      task.sleep(0.01)
      -- do the step, then record it: a kill between the two repeats the step, never skips it
      note(("step %s %d"):format(name, i))
      point(("step %s %d"):format(name, i))
      ctx:checkpoint("step", i)
      point(("saved %s %d"):format(name, i))
    end
    note("done " .. name)
    point("return " .. name)
    return { steps = 3 }
  end
end
return pipeline.define{ name = "resumable", stages = {
  { name = "a", run = stage("a") },
  { name = "b", run = stage("b") },
  { name = "c", needs = { "a", "b" }, run = stage("c") },
  { name = "d", needs = { "c" }, run = stage("d") },
  { name = "e", needs = { "d" }, run = stage("e") },
  { name = "f", needs = { "c" }, run = stage("f") },
} }
]]

local function journal(dir)
  local counts, text = {}, fs.read(dir .. "/journal.txt") or ""
  for line in text:gmatch("[^\n]+") do counts[line] = (counts[line] or 0) + 1 end
  return counts, text
end

-- Every point of every stage: its start, each step before and after its checkpoint, its return.
local KILL_POINTS = {}
for _, name in ipairs{ "a", "b", "c", "d", "e", "f" } do
  KILL_POINTS[#KILL_POINTS + 1] = "start " .. name
  for i = 1, 3 do
    KILL_POINTS[#KILL_POINTS + 1] = ("step %s %d"):format(name, i)
    KILL_POINTS[#KILL_POINTS + 1] = ("saved %s %d"):format(name, i)
  end
  KILL_POINTS[#KILL_POINTS + 1] = "return " .. name
end
local NEEDS = { a = {}, b = {}, c = { "a", "b" }, d = { "c" }, e = { "d" }, f = { "c" } }

T.test(("kill -9 at each of %d points of every stage, then resume: the stage killed runs again, nothing finished does"):format(#KILL_POINTS), function()
  local wait_reached = function(dir)
    local deadline = task.now() + 60
    while not fs.exists(dir .. "/reached") do
      if task.now() > deadline then error("the host never reached its kill point", 2) end
      task.sleep(0.01)
    end
  end
  for _, kill_at in ipairs(KILL_POINTS) do
    local at = kill_at:match("(%a)%s*%d*$")
    local dir = T.project { ["p.lua"] = RESUMABLE }
    local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { KILL_AT = kill_at } }
    wait_reached(dir)
    host:kill("KILL")
    host:wait()
    local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
    local killed = status(dir, id)
    T.eq(killed.status, "interrupted", kill_at .. ": a killed host's run")
    local before = {}
    for _, s in ipairs(killed.stages) do before[s.name] = s.status end
    -- the kill interrupted exactly this stage: it is recorded running, what it needs finished
    T.eq(before[at], "running", kill_at .. ": the interrupted stage")
    for _, need in ipairs(NEEDS[at]) do T.eq(before[need], "success", kill_at .. ": " .. need .. " had finished") end
    local r = sh(dir, { "resume", id }, { env = { KILL_AT = false } })
    T.eq(r.code, 0, kill_at .. ": " .. r.stderr)
    T.eq(r.stdout:match("^run (%S+)\n"), id)
    T.match(r.stderr, "%[" .. at .. "%] ▶ started again %(resumed%)")
    local final = status(dir, id)
    T.eq(final.status, "success", kill_at)
    local counts, text = journal(dir)
    for _, name in ipairs{ "a", "b", "c", "d", "e", "f" } do
      T.eq(counts["done " .. name] ~= nil, true, ("%s: %s finished: %s"):format(kill_at, name, text))
      if before[name] == "success" then
        T.eq(counts["done " .. name], 1, ("%s: %s had finished before the kill and ran again"):format(kill_at, name))
        T.eq(counts["start " .. name .. " at 1"], 1, ("%s: %s started once"):format(kill_at, name))
      end
      -- a step recorded in a checkpoint is never done twice: the resumed stage starts after it
      for i = 1, 3 do
        T.ok((counts[("step %s %d"):format(name, i)] or 0) <= 2, ("%s: step %s %d repeated"):format(kill_at, name, i))
      end
    end
    -- the interrupted stage went on from its last recorded step
    local saved = tonumber(kill_at:match("^saved %a (%d)$") or "") or tonumber(kill_at:match("^step %a (%d)$") or "1") - 1
    if kill_at:match("^return") then saved = 3 end
    if kill_at:match("^start") then saved = 0 end
    T.eq(counts[("start %s at %d"):format(at, saved + 1)] ~= nil or saved == 3, true,
      ("%s: resumed at step %d: %s"):format(kill_at, saved + 1, text))
    fs.remove(dir, { recursive = true })
  end
end, { timeout = 600 })

T.test("resume refuses a run that is running or finished, and unknown ids", function()
  local dir = T.project { ["p.lua"] = RESUMABLE }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  local id = r.stdout:match("^run (%S+)")
  local again = sh(dir, { "resume", id })
  T.eq(again.code, 2); T.match(again.stderr, "already ended %(success%): nothing to resume")
  local unknown = sh(dir, { "resume", "nope" })
  T.eq(unknown.code, 2); T.match(unknown.stderr, "no run 'nope'")
  -- a unique prefix of the id is enough
  T.eq(sh(dir, { "status", id:sub(1, 17) }).code, 0)
  fs.remove(dir, { recursive = true })
end)

T.test("cancel from another process: the host stops its stages, records cancelled, exits 3", function()
  local dir = pipeline_dir("long", [[
    { name = "wait", run = function()
      local proc = require("stagehost.proc")
      print("child " .. proc.spawn{ "sleep", "30" }.pid)
      proc.run{ "sleep", "30" }
    end },
    { name = "after", needs = { "wait" }, when = "always", run = function() end },
  ]])
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, lines = true }
  local id, child
  repeat
    local _, line = host:read_line()
    id = id or (line and line:match("^run (%S+)"))
    child = line and tonumber(line:match("child (%d+)$"))
  until child or not line
  T.ok(child and T.alive(child), "the stage's child runs")
  local c = sh(dir, { "cancel", id })
  T.eq(c.code, 0, c.stderr)
  T.has(c.stdout, "cancel requested for run " .. id)
  local t0 = task.now()
  local r = host:wait()
  T.eq(r.code, 3)
  T.ok(task.now() - t0 < 5, "stopped promptly")
  T.ok(T.gone(child), "the process the stage left running was stopped")
  local st = status(dir, id)
  T.eq(st.status, "cancelled")
  -- a when = "always" stage still runs after a cancellation (its cleanup)
  T.eq(st.stages[1].status, "cancelled"); T.eq(st.stages[2].status, "success")
  local not_running = sh(dir, { "cancel", id })
  T.eq(not_running.code, 2); T.match(not_running.stderr, "is not running")
  fs.remove(dir, { recursive = true })
end)

T.test("runs and status while another host writes", function()
  local stages = {}
  for i = 1, 40 do
    stages[#stages + 1] = ("{ name = 's%d', %s run = function() require('stagehost.task').sleep(0.05) end },"):format(i,
      i > 1 and ("needs = { 's%d' },"):format(i - 1) or "")
  end
  local dir = pipeline_dir("busy", table.concat(stages, "\n"))
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, lines = true }
  local _, first = host:read_line()
  local id = first:match("^run (%S+)")
  -- readers see the run move while it is written: running, with more stages done each time
  local mid_run, last_done = 0, -1
  for _ = 1, 15 do
    local runs = sh(dir, { "runs", "--json" })
    T.eq(runs.code, 0, runs.stderr)
    T.eq(json.decode(runs.stdout)[1].id, id)
    local st = sh(dir, { "status", id, "--json" })
    T.eq(st.code, 0, st.stderr)
    local record = json.decode(st.stdout)
    T.eq(#record.stages, 40)
    local done = 0
    for _, s in ipairs(record.stages) do if s.status == "success" then done = done + 1 end end
    T.ok(done >= last_done, "never fewer stages done than before")
    if record.status == "running" and done < 40 then mid_run = mid_run + 1 end
    last_done = done
  end
  repeat local _, l = host:read_line() until not l
  T.eq(host:wait().code, 0)
  T.ok(mid_run >= 3, ("reads made while the host was writing: %d of 15"):format(mid_run))
  fs.remove(dir, { recursive = true })
end)

T.test("artifacts: stored as artifacts/STAGE/NAME with sha256; prune removes expired ones and whole old runs", function()
  local dir = pipeline_dir("art", [[
    { name = "report", run = function(ctx)
      ctx:artifact("keep.txt", "kept for long")
      ctx:artifact("short.txt", "expires now", { retention_days = 0 })
      ctx:artifact("data.json", { a = 1 })
    end },
  ]])
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  local id = r.stdout:match("^run (%S+)")
  local st = status(dir, id)
  T.eq(#st.artifacts, 3)
  T.eq(st.artifacts[1].sha256, require("stagehost.crypto").sha256("kept for long"))
  local rundir = dir .. "/.stagehost/runs/" .. id
  local adir = rundir .. "/artifacts/report/"
  T.eq(fs.read(adir .. "keep.txt"), "kept for long")
  T.has(fs.read(rundir .. "/report.html"), 'href="artifacts/report/short.txt"')
  local pr = sh(dir, { "prune" })
  T.eq(pr.code, 0, pr.stderr); T.match(pr.stdout, "pruned 0 run%(s%) and 1 artifact")
  T.eq(fs.exists(adir .. "short.txt"), false)
  T.eq(#status(dir, id).artifacts, 2)
  -- the kept run's record and report were written again: no link to the deleted file
  local html = fs.read(rundir .. "/report.html")
  T.has(html, 'href="artifacts/report/keep.txt"')
  T.eq(html:find("short.txt", 1, true), nil, "no link to a deleted artifact")
  T.eq(fs.read(rundir .. "/run.json"):find("short.txt", 1, true), nil)
  -- pruned from another directory: paths are the state directory's, not the caller's
  local elsewhere = T.tempdir()
  local all = sh(elsewhere, { "prune", "--older-than", "0s", "--state", dir .. "/.stagehost" })
  T.eq(all.code, 0, all.stderr); T.match(all.stdout, "pruned 1 run%(s%) and 2 artifact")
  T.eq(fs.exists(rundir), false, "the run's directory went with it")
  T.eq(sh(dir, { "status", id }).code, 2, "and its rows")
  local bad = sh(dir, { "prune", "--older-than", "soon" })
  T.eq(bad.code, 2); T.match(bad.stderr, "%-%-older%-than wants a duration")
  local old = sh(dir, { "artifacts", "prune" })
  T.eq(old.code, 2); T.has(old.stderr, "stagehost prune")
  fs.remove(dir, { recursive = true })
  fs.remove(elsewhere, { recursive = true })
end)

T.test("a corrupt state database: a clear message, nothing overwritten", function()
  local dir = pipeline_dir("x", ONE_STAGE)
  assert(fs.mkdir(dir .. "/.stagehost"))
  local garbage = ("this is not sqlite "):rep(300)
  assert(fs.write(dir .. "/.stagehost/state.db", garbage))
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 2)
  T.match(r.stderr, "is not a usable state database")
  T.match(r.stderr, "nothing was changed")
  T.eq(fs.read(dir .. "/.stagehost/state.db"), garbage, "left as it was")
  -- --state and STAGEHOST_STATE_DIR choose another place
  local other = sh(dir, { "run", "p.lua", "--state", dir .. "/elsewhere" })
  T.eq(other.code, 0, other.stderr)
  T.ok(fs.exists(dir .. "/elsewhere/state.db"))
  local env = sh(dir, { "runs" }, { env = { STAGEHOST_STATE_DIR = dir .. "/elsewhere" } })
  T.match(env.stdout, "\n%S+ +x +success")
  fs.remove(dir, { recursive = true })
end)

T.test("secrets are masked in everything a run stores: state, run.json, artifacts, reports", function()
  local dir = pipeline_dir("sec", [[
    { name = "leaky", run = function(ctx)
      local token = os.getenv("RELEASE_TOKEN")
      ctx:checkpoint("token", token)
      ctx:artifact("notes.txt", "token: " .. token)
      return { token = token, note = "uses " .. token }
    end },
    { name = "after", needs = { "leaky" }, run = function(ctx) error("failed with " .. ctx.outputs.leaky.token, 0) end },
  ]])
  local secret = "rel-secret-XYZ-123"
  local r = sh(dir, { "run", "p.lua" }, { env = { RELEASE_TOKEN = secret } })
  T.eq(r.code, 1, r.stderr)
  T.no_match(r.stdout .. r.stderr, secret)
  local found = proc.run{ "grep", "-rl", secret, dir .. "/.stagehost" }
  T.eq(found.stdout, "", "files holding the secret")
  local id = r.stdout:match("^run (%S+)")
  local st = status(dir, id)
  T.eq(st.stages[1].outputs.token, "***")
  T.eq(st.stages[2].error, "failed with ***")
  fs.remove(dir, { recursive = true })
end)

T.test("a locked state database: a clear message after STAGEHOST_STATE_TIMEOUT, exit 2", function()
  local dir = pipeline_dir("x", ONE_STAGE)
  T.eq(sh(dir, { "run", "p.lua" }).code, 0) -- the database exists
  local holder = proc.spawn{ STAGEHOST, "-e", [[
    local db = assert(require("stagehost.core.sqlite").open(".stagehost/state.db"))
    assert(db:exec("BEGIN IMMEDIATE"))
    print("locked")
    require("stagehost.task").sleep(5)
  ]], cwd = dir, lines = true }
  local _, line = holder:read_line()
  T.eq(line, "locked")
  local t0 = task.now()
  local r = sh(dir, { "run", "p.lua" }, { env = { STAGEHOST_STATE_TIMEOUT = "200" } })
  T.eq(r.code, 2, r.stderr)
  T.match(r.stderr, "is locked by another process")
  T.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line")
  T.ok(task.now() - t0 < 4, "did not wait for the holder")
  holder:kill("TERM")
  holder:wait()
  fs.remove(dir, { recursive = true })
end)

T.run()
