-- A run is never left inconsistent, and stages see what a deployment engineer needs: unstorable
-- outputs, the end-of-run invariant, host errors and signals, secret outputs across a resume,
-- artifacts across a resume, file modes, cleanup after a cancellation, re-runs and reuse,
-- concurrency groups, ctx.stages, triggers and env, retries that name their cause, the live
-- view of a stage waiting for a person.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local pipeline = require("stagehost.pipeline")
local Run = require("stagehost.pipeline.run")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

local run = T.execute

local sh = T.stagehost

local project = T.project

local function status(dir, id)
  local r = sh(dir, { "status", id, "--json" })
  T.eq(r.code, 0, r.stderr)
  local st = json.decode(r.stdout)
  st.by = {}
  for _, s in ipairs(st.stages) do st.by[s.name] = s end
  return st
end

local function mode_of(path)
  local _, _, mode = fs.exists(path)
  return mode
end

local wait_for = T.wait_for

-- ---- 1. runs are never inconsistent ----

T.test("outputs that cannot be stored fail that stage, naming the path; the run goes on along its failure path", function()
  local cycle = {}
  cycle.self = cycle
  local cases = {
    { { handle = io.stdout }, "outputs.handle: a userdata cannot be stored" },
    { { steps = { 1, print } }, "outputs.steps[2]: a function cannot be stored" },
    { { deep = { t = cycle } }, "outputs.deep.t.self: a cycle cannot be stored" },
    { { co = coroutine.create(print) }, "outputs.co: a thread cannot be stored" },
    { { ["a key"] = { [true] = 1 } }, 'outputs["a key"]: a key of type boolean cannot be stored' },
    { { n = 0 / 0 }, "outputs.n: " },
    { { log = ("x"):rep(2 * 1024 * 1024) }, "outputs: 2.0 MiB is more than the 1 MiB a stage's outputs may hold" },
  }
  for _, case in ipairs(cases) do
    local p = pipeline.define{ name = "bad-outputs", stages = {
      { name = "make", run = function() return case[1] end },
      { name = "use", needs = { "make" }, run = function() return {} end },
      { name = "on-failure", needs = { "use" }, when = "failure", run = function() return { ran = true } end },
    } }
    local r = run(p)
    T.eq(r.status, "failure")
    T.eq(r.stages.make.status, "failure")
    T.has(r.stages.make.error, case[2])
    T.eq(r.stages.use.status, "skipped")
    T.eq(r.stages["on-failure"].outputs.ran, true, "the failure path ran")
  end
  -- through the command line: one consistent record, run.json and the report written
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "handle", stages = {
      { name = "make", run = function() return { handle = io.stdout } end },
      { name = "use", needs = { "make" }, run = function() end },
    } }
  ]] }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 1, r.stderr)
  T.match(r.stdout, "✗ make +failure +[%d.]+s +outputs%.handle: a userdata cannot be stored")
  local id = r.stdout:match("^run (%S+)")
  local st = status(dir, id)
  T.eq(st.status, "failure")
  T.eq(st.by.make.status, "failure"); T.eq(st.by.use.status, "skipped")
  local record = json.decode(fs.read(dir .. "/.stagehost/runs/" .. id .. "/run.json"))
  T.eq(record.status, "failure"); T.eq(record.stages[1].error, "outputs.handle: a userdata cannot be stored")
  T.ok(fs.exists(dir .. "/.stagehost/runs/" .. id .. "/report.html"))
  fs.remove(dir, { recursive = true })
end)

T.test("the end-of-run invariant: every stage terminal, the status the one its stages make", function()
  local function fake(statuses, status, cancelling)
    local r = { order = {}, records = {}, status = status, cancelling = cancelling }
    for i, s in ipairs(statuses) do
      r.order[i] = "s" .. i
      r.records["s" .. i] = { status = s }
    end
    return r
  end
  T.eq(Run.check_ended(fake({ "success", "skipped" }, "success")), nil)
  T.match(Run.check_ended(fake({ "success", "running" }, "success")), "stage 's2' is still running")
  T.match(Run.check_ended(fake({ "success", "pending" }, "success")), "still pending")
  T.match(Run.check_ended(fake({ "failure", "success" }, "success")), "says success but its stages make it failure")
  T.eq(Run.check_ended(fake({ "failure", "success" }, "cancelled", "cancelled by X")), nil, "a cancelled run is cancelled")
  T.match(Run.check_ended(fake({ "cancelled" }, "success")), "make it cancelled")
  local allowed = fake({ "failure" }, "success")
  allowed.records.s1.allowed_failure = true
  T.eq(Run.check_ended(allowed), nil, "an allowed failure does not fail the run")
end)

T.test("a host error (the state store failing) ends the run: every stage terminal, the record written", function()
  local dir = T.tempdir()
  local p = pipeline.define{ name = "host-error", stages = {
    { name = "a", run = function() return { v = 1 } end },
    { name = "b", needs = { "a" }, run = function() task.sleep(0.05) return {} end },
    { name = "c", needs = { "b" }, run = function() return {} end },
  } }
  local store = Run.memory_store()
  local saves = 0
  store.save_stage = function(_, _, rec)
    if rec.name == "a" and rec.status == "success" then
      saves = saves + 1
      if saves == 1 then error("disk I/O error (simulated)") end
    end
  end
  local ok, err = pcall(run, p, { store = store, state_dir = dir })
  T.eq(ok, false)
  T.has(tostring(err), "disk I/O error (simulated)")
  local runs = fs.list(dir .. "/runs")
  T.eq(#runs, 1)
  local record = json.decode(assert(fs.read(dir .. "/runs/" .. runs[1] .. "/run.json")))
  T.eq(record.status, "failure")
  T.has(record.error, "disk I/O error (simulated)")
  for _, s in ipairs(record.stages) do
    T.ok(Run.TERMINAL[s.status], s.name .. " is terminal: " .. s.status)
  end
  T.ok(fs.exists(dir .. "/runs/" .. runs[1] .. "/report.html"))
  fs.remove(dir, { recursive = true })
end)

local SIGNALLED = [[
local pipeline = require("stagehost.pipeline")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
return pipeline.define{ name = "signalled", stages = {
  { name = "deploy", run = function()
    local left = proc.spawn{ "sleep", "60" } -- held: a collected handle would stop it
    fs.write("deploy.pid", tostring(left.pid))
    -- a wait that ended just before the cancel arrived returns; the next one sees the cancel
    while true do proc.run{ "sleep", "60" } end
  end },
  { name = "after", needs = { "deploy" }, run = function() fs.write("after-ran", "yes") end },
  { name = "notify", needs = { "after" }, when = "always", run = function(ctx)
    fs.write("notified", ctx.stages.deploy.status .. " " .. tostring(ctx.stages.deploy.error))
    if os.getenv("SLOW_CLEANUP") then proc.run{ "sleep", "60" } end
    return { said = true }
  end },
  { name = "on-cancel", needs = { "deploy" }, when = "cancelled", run = function() return { cleaned = true } end },
} }
]]

T.test("SIGINT/SIGTERM: stages stopped, always and cancelled stages still run, the record and reports written", function()
  for _, sig in ipairs{ { "INT", 130 }, { "TERM", 143 } } do
    local dir = project{ ["p.lua"] = SIGNALLED }
    local summary = dir .. "/summary.md"
    local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, stderr = dir .. "/host.err",
      env = { GITHUB_STEP_SUMMARY = summary, STAGEHOST_LOG_LEVEL = "debug" } }
    wait_for(dir .. "/deploy.pid")
    local child = tonumber(fs.read(dir .. "/deploy.pid"))
    host:kill(sig[1])
    local r = host:wait()
    T.eq(r.code, sig[2], "exit code after SIG" .. sig[1])
    T.ok(T.gone(child), "the stage's process is gone")
    T.eq(fs.exists(dir .. "/after-ran"), false)
    T.match(fs.read(dir .. "/notified"), "^cancelled interrupted %(SIG" .. sig[1] .. "%)", fs.read(dir .. "/host.err"))
    local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
    local st = status(dir, id)
    T.eq(st.status, "cancelled")
    T.eq(st.by.deploy.status, "cancelled"); T.eq(st.by.after.status, "cancelled")
    T.eq(st.by.notify.status, "success"); T.eq(st.by["on-cancel"].status, "success")
    local record = json.decode(fs.read(dir .. "/.stagehost/runs/" .. id .. "/run.json"))
    T.eq(record.status, "cancelled")
    T.ok(fs.exists(dir .. "/.stagehost/runs/" .. id .. "/report.html"))
    T.match(fs.read(summary) or "", "signalled: cancelled")
    fs.remove(dir, { recursive = true })
  end
end, { timeout = 120 })

T.test("a second signal ends the host at once, skipping the cleanup; the run stays resumable", function()
  local dir = project{ ["p.lua"] = SIGNALLED }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { SLOW_CLEANUP = "1" } }
  wait_for(dir .. "/deploy.pid")
  host:kill("INT")
  wait_for(dir .. "/notified") -- the cleanup stage runs (and now sleeps 60 s)
  local t0 = task.now()
  host:kill("INT")
  local r = host:wait()
  T.ok(task.now() - t0 < 5, "ended at once")
  T.eq(r.code, 130)
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  T.eq(status(dir, id).status, "interrupted")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- 2. secrets in outputs survive a resume ----

T.test("a secret output reaches the next stage, also after kill -9 and resume, and is stored sealed and shown masked", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local fs = require("stagehost.fs")
    local task = require("stagehost.task")
    return pipeline.define{ name = "secret", stages = {
      { name = "login", run = function() return { token = os.getenv("DEPLOY_TOKEN"), user = "ci" } end },
      { name = "deploy", needs = { "login" }, run = function(ctx)
        fs.write("deploy-started", "")
        while not fs.exists("go") do task.sleep(0.02) end
        fs.write("token-seen", ctx.outputs.login.token == os.getenv("EXPECTED") and "real" or "wrong")
        return { used = true }
      end },
    } }
  ]] }
  local secret = "s3cr3t-deploy-token-" .. require("stagehost.crypto").hex_encode(require("stagehost.crypto").random(6))
  local env = { DEPLOY_TOKEN = secret, EXPECTED = secret }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = env }
  wait_for(dir .. "/deploy-started")
  host:kill("KILL")
  host:wait()
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  -- the resumed host does not have the variable: the value comes from the sealed outputs
  assert(fs.write(dir .. "/go", ""))
  local r = sh(dir, { "resume", id }, { env = { DEPLOY_TOKEN = false, EXPECTED = secret } })
  T.eq(r.code, 0, r.stderr)
  T.eq(fs.read(dir .. "/token-seen"), "real")
  local st = status(dir, id)
  T.eq(st.by.login.outputs.token, "***"); T.eq(st.by.login.outputs.user, "ci")
  for _, file in ipairs{ "run.json", "report.html" } do
    local text = fs.read(dir .. "/.stagehost/runs/" .. id .. "/" .. file)
    T.eq(text:find(secret, 1, true), nil, file .. " has no secret")
  end
  T.eq((r.stdout .. r.stderr):find(secret, 1, true), nil, "the console has no secret")
  local db = fs.read(dir .. "/.stagehost/state.db") .. (fs.read(dir .. "/.stagehost/state.db-wal") or "")
  T.eq(db:find(secret, 1, true), nil, "the database holds it only sealed")
  T.has(db, "sealed:v1:")
  T.eq(mode_of(dir .. "/.stagehost/state.key"), 384, "the key file is 0600")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("two resumes of one run at the same moment: one runs it, the other exits 2 naming the host", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local fs = require("stagehost.fs")
    local task = require("stagehost.task")
    return pipeline.define{ name = "claimed", stages = {
      { name = "deploy", run = function()
        local f = assert(io.open("deploys", "a")) f:write("x") f:close()
        fs.write("deploy-started", "")
        while not fs.exists("go") do task.sleep(0.02) end
      end },
    } }
  ]] }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir }
  wait_for(dir .. "/deploy-started")
  host:kill("KILL")
  host:wait()
  fs.remove(dir .. "/deploy-started")
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local a = proc.spawn{ STAGEHOST, "resume", id, cwd = dir, stderr = dir .. "/a.err" }
  local b = proc.spawn{ STAGEHOST, "resume", id, cwd = dir, stderr = dir .. "/b.err" }
  wait_for(dir .. "/deploy-started")
  task.sleep(0.3) -- the loser has had its time to start the stage too, if it could
  assert(fs.write(dir .. "/go", ""))
  local ra, rb = a:wait(), b:wait()
  local codes = { ra.code, rb.code }
  table.sort(codes)
  T.eq(table.concat(codes, ","), "0,2", "one resumed, one refused")
  local loser = fs.read(dir .. (ra.code == 2 and "/a.err" or "/b.err"))
  T.match(loser, "is still running %(host pid %d+%): one host runs a run at a time")
  T.eq(fs.read(dir .. "/deploys"), "xx", "the deploy ran once more, not twice")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- 3. artifacts across a resume ----

T.test("after a resume, run.json and the report list every artifact, under artifacts/STAGE/NAME", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local fs = require("stagehost.fs")
    local task = require("stagehost.task")
    return pipeline.define{ name = "arts", stages = {
      { name = "checks", run = function(ctx) ctx:artifact("checklist.md", "# all good\n") end },
      { name = "deploy", needs = { "checks" }, run = function(ctx)
        ctx:artifact("before-kill.txt", "made by the first host")
        fs.write("deploy-started", "")
        while not fs.exists("go") do task.sleep(0.02) end
        ctx:artifact("outputs.json", { url = "https://example.test" })
      end },
    } }
  ]] }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir }
  wait_for(dir .. "/deploy-started")
  host:kill("KILL")
  host:wait()
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  assert(fs.write(dir .. "/go", ""))
  local r = sh(dir, { "resume", id })
  T.eq(r.code, 0, r.stderr)
  local rundir = dir .. "/.stagehost/runs/" .. id
  local record = json.decode(fs.read(rundir .. "/run.json"))
  local files = {}
  for _, s in ipairs(record.stages) do
    for _, a in ipairs(s.artifacts) do files[#files + 1] = a.file end
  end
  table.sort(files)
  T.eq(table.concat(files, " "), "artifacts/checks/checklist.md artifacts/deploy/before-kill.txt artifacts/deploy/outputs.json")
  local html = fs.read(rundir .. "/report.html")
  for _, f in ipairs(files) do
    T.has(html, 'href="' .. f .. '"')
    T.ok(fs.exists(rundir .. "/" .. f), f .. " exists")
  end
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- 5. files and directories ----

T.test("the state directory is 0700, the database and key 0600, run directories 0700; artifacts honour the umask", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "modes", stages = {
      { name = "a", run = function(ctx) ctx:artifact("x.txt", "x") return { k = os.getenv("API_TOKEN") } end },
    } }
  ]] }
  local r = proc.run{ "sh", "-c", 'umask 022; exec "$0" run p.lua', STAGEHOST, cwd = dir, env = { API_TOKEN = "tok-123456" } }
  T.eq(r.code, 0, r.stderr)
  local state = dir .. "/.stagehost"
  local id = r.stdout:match("^run (%S+)")
  T.eq(mode_of(state), 448, "state dir")
  T.eq(mode_of(state .. "/state.db"), 384, "database")
  T.eq(mode_of(state .. "/state.key"), 384, "key")
  T.eq(mode_of(state .. "/runs/" .. id), 448, "run directory")
  T.eq(mode_of(state .. "/runs/" .. id .. "/artifacts/a/x.txt"), 420, "an artifact: 0666 less the umask 022")
  fs.remove(dir, { recursive = true })
end)

-- ---- 6. cleanup after a cancellation; when = failure is transitive ----

T.test("when = failure means any stage before it failed, not only a direct need", function()
  local p = pipeline.define{ name = "transitive", stages = {
    { name = "infra", run = function() error("stack failed", 0) end },
    { name = "frontend", needs = { "infra" }, run = function() end },
    { name = "tests", needs = { "frontend" }, run = function() end },
    { name = "report-failure", needs = { "tests" }, when = "failure", run = function(ctx)
      return { phase = ctx.stages.infra.status, frontend = ctx.stages.frontend.status }
    end },
  } }
  local r = run(p)
  T.eq(r.stages["report-failure"].status, "success")
  T.eq(r.stages["report-failure"].outputs.phase, "failure")
  T.eq(r.stages["report-failure"].outputs.frontend, "skipped")
end)

T.test("a cancelled run (ctx:cancel) runs its always and cancelled stages; cancelled stages skip when not cancelled", function()
  local p = pipeline.define{ name = "rejected", stages = {
    { name = "approval", run = function(ctx) ctx:cancel("approval rejected by dana") end },
    { name = "deploy", needs = { "approval" }, run = function() return { deployed = true } end },
    { name = "on-failure", needs = { "deploy" }, when = "failure", run = function() end },
    { name = "notify", needs = { "deploy" }, when = "always", run = function(ctx)
      return { said = ctx.stages.approval.error }
    end },
    { name = "on-cancel", needs = { "approval" }, when = "cancelled", run = function() return { cleaned = true } end },
  } }
  local r = run(p)
  T.eq(r.status, "cancelled")
  T.eq(r.stages.approval.status, "cancelled"); T.eq(r.stages.deploy.status, "cancelled")
  T.eq(r.stages["on-failure"].status, "cancelled")
  T.eq(r.stages.notify.outputs.said, "approval rejected by dana")
  T.eq(r.stages["on-cancel"].outputs.cleaned, true)
  local ok = run(pipeline.define{ name = "fine", stages = {
    { name = "a", run = function() end },
    { name = "on-cancel", needs = { "a" }, when = "cancelled", run = function() end },
  } })
  T.eq(ok.status, "success")
  T.eq(ok.stages["on-cancel"].status, "skipped"); T.eq(ok.stages["on-cancel"].reason, "the run was not cancelled")
end)

T.test("cleanup_timeout bounds the cleanup stages of a cancelled run", function()
  local p = pipeline.define{ name = "slow-cleanup", cleanup_timeout = "300ms", stages = {
    { name = "approval", run = function(ctx) ctx:cancel("timed out waiting for approval") end },
    { name = "notify", needs = { "approval" }, when = "always", run = function() task.sleep(30) end },
  } }
  local t0 = task.now()
  local r = run(p)
  T.ok(task.now() - t0 < 10, "cut at the cleanup timeout")
  T.eq(r.status, "cancelled")
  T.eq(r.stages.notify.status, "cancelled"); T.match(r.stages.notify.error, "cleanup_timeout")
  T.raises(function() pipeline.define{ name = "x", cleanup_timeout = "soon", stages = { { name = "a", run = print } } } end,
    "cleanup_timeout must be seconds")
end)

-- ---- 7. re-runs and reuse ----

local RERUN = [[
local pipeline = require("stagehost.pipeline")
local fs = require("stagehost.fs")
local function count(name)
  local n = tonumber(fs.read("ran-" .. name) or "0") + 1
  fs.write("ran-" .. name, tostring(n))
  return n
end
return pipeline.define{ name = "rerun", stages = {
  { name = "checks", run = function() count("checks") return { checklist = "ok" } end },
  { name = "approval", gate = true, needs = { "checks" }, run = function(ctx)
    count("approval")
    return { votes = { { who = "dana", decision = "approved" } } }
  end },
  { name = "deploy", needs = { "approval" }, run = function(ctx)
    count("deploy")
    if fs.exists("break-deploy") then error("stack failed", 0) end
    return { url = "https://app.test", checklist = ctx.outputs.checks.checklist }
  end },
  { name = "tests", needs = { "deploy" }, run = function(ctx) count("tests") return { url = ctx.outputs.deploy.url } end },
} }
]]

T.test("rerun --failed reuses what succeeded (attempt 2, linked), the gate's approver named", function()
  local dir = project{ ["p.lua"] = RERUN, ["break-deploy"] = "" }
  local first = sh(dir, { "run", "p.lua" })
  T.eq(first.code, 1, first.stderr)
  local id = first.stdout:match("^run (%S+)")
  fs.remove(dir .. "/break-deploy")
  local again = sh(dir, { "rerun", id, "--failed" })
  T.eq(again.code, 0, again.stderr)
  local id2 = again.stdout:match("^run (%S+)")
  T.ok(id2 ~= id, "a new run")
  T.eq(fs.read(dir .. "/ran-checks"), "1"); T.eq(fs.read(dir .. "/ran-approval"), "1")
  T.eq(fs.read(dir .. "/ran-deploy"), "2"); T.eq(fs.read(dir .. "/ran-tests"), "1")
  local st = status(dir, id2)
  T.eq(st.attempt, 2); T.eq(st.rerun_of, id)
  T.eq(st.by.checks.reused_from, id); T.eq(st.by.approval.reused_from, id)
  T.eq(st.by.approval.approved_by, "dana")
  T.eq(st.by.tests.outputs.url, "https://app.test")
  T.match(again.stdout, "approval +success +reused from run " .. id:gsub("%-", "%%-") .. ", approved by dana")
  local html = fs.read(dir .. "/.stagehost/runs/" .. id2 .. "/report.html")
  T.has(html, "approved by dana")
  -- a third attempt from a stage: what comes before it is reused, it and what follows run
  local from = sh(dir, { "rerun", id2, "--from", "tests" })
  T.eq(from.code, 0, from.stderr)
  T.eq(status(dir, from.stdout:match("^run (%S+)")).attempt, 3)
  T.eq(fs.read(dir .. "/ran-deploy"), "2"); T.eq(fs.read(dir .. "/ran-tests"), "2")
  -- rerun without a flag runs everything again, the gate included
  local all = sh(dir, { "rerun", id })
  T.eq(all.code, 0, all.stderr)
  T.eq(fs.read(dir .. "/ran-approval"), "2")
  T.eq(sh(dir, { "rerun", id, "--from", "nope" }).code, 2)
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("--from/--only never skip an approval gate that no run of the same tag and commit passed", function()
  local dir = project{ ["p.lua"] = RERUN }
  local none = sh(dir, { "run", "p.lua", "--from", "deploy", "--tag", "rc-1" })
  T.eq(none.code, 2)
  T.has(none.stderr, "would skip the approval gate 'approval'")
  T.eq(fs.exists(dir .. "/ran-deploy"), false, "nothing ran")
  T.eq(sh(dir, { "run", "p.lua", "--tag", "rc-1" }).code, 0)
  local from = sh(dir, { "run", "p.lua", "--from", "deploy", "--tag", "rc-1" })
  T.eq(from.code, 0, from.stderr)
  T.match(from.stdout, "approval +success +reused from run %S+, approved by dana")
  -- another tag: the gate passed for rc-1 does not stand for rc-2
  local other = sh(dir, { "run", "p.lua", "--from", "deploy", "--tag", "rc-2" })
  T.eq(other.code, 2); T.has(other.stderr, "at tag rc-2")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("--from takes outputs from a run that ran those stages, not from a newer --only run that skipped them", function()
  local dir = project{ ["p.lua"] = RERUN }
  local full = sh(dir, { "run", "p.lua", "--tag", "rc-1" })
  T.eq(full.code, 0, full.stderr)
  local full_id = full.stdout:match("^run (%S+)")
  -- a newer successful run in which deploy did not run
  local only = sh(dir, { "run", "p.lua", "--tag", "rc-1", "--only", "checks" })
  T.eq(only.code, 0, only.stderr)
  local from = sh(dir, { "run", "p.lua", "--from", "tests", "--tag", "rc-1" })
  T.eq(from.code, 0, from.stderr)
  local st = status(dir, from.stdout:match("^run (%S+)"))
  T.eq(st.by.deploy.status, "success")
  T.eq(st.by.deploy.reused_from, full_id)
  T.eq(st.by.tests.status, "success")
  T.eq(st.by.tests.outputs.url, "https://app.test")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- 8. concurrency groups ----

local GROUPED = [[
local pipeline = require("stagehost.pipeline")
local fs = require("stagehost.fs")
local task = require("stagehost.task")
return pipeline.define{ name = "grouped", concurrency = { group = "staging", cancel_in_progress = os.getenv("CANCEL") == "1" },
  stages = {
    { name = "deploy", run = function(ctx)
      fs.write("started-" .. os.getenv("WHO"), tostring(task.now()))
      while not fs.exists("release-" .. os.getenv("WHO")) do task.sleep(0.02) end
      fs.write("finished-" .. os.getenv("WHO"), "")
    end },
  } }
]]

T.test("concurrency: a second run in the group waits; cancel_in_progress cancels the older; a dead holder's lock is taken over", function()
  local dir = project{ ["p.lua"] = GROUPED }
  local one = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { WHO = "one" } }
  wait_for(dir .. "/started-one")
  local two = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { WHO = "two" }, lines = true }
  local waiting
  repeat
    local _, line = two:read_line()
    waiting = line and line:find("waiting: concurrency group 'staging' is held by run", 1, true)
  until waiting or not line
  T.ok(waiting, "the second run says it waits")
  T.eq(fs.exists(dir .. "/started-two"), false, "and does not start")
  assert(fs.write(dir .. "/release-one", ""))
  T.eq(one:wait().code, 0)
  wait_for(dir .. "/started-two")
  assert(fs.write(dir .. "/release-two", ""))
  repeat local _, l = two:read_line() until not l
  T.eq(two:wait().code, 0)
  -- cancel_in_progress: the newer run cancels the one that holds the group
  local three = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { WHO = "three" } }
  wait_for(dir .. "/started-three")
  local four = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { WHO = "four", CANCEL = "1" } }
  T.eq(three:wait().code, 3, "the older run was cancelled")
  wait_for(dir .. "/started-four")
  assert(fs.write(dir .. "/release-four", ""))
  T.eq(four:wait().code, 0)
  -- kill -9 the holder: its lock goes with its host
  local five = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { WHO = "five" } }
  wait_for(dir .. "/started-five")
  five:kill("KILL")
  five:wait()
  local six = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { WHO = "six" } }
  wait_for(dir .. "/started-six")
  assert(fs.write(dir .. "/release-six", ""))
  T.eq(six:wait().code, 0)
  fs.remove(dir, { recursive = true })
end, { timeout = 180 })

T.test("a stage-level concurrency group serialises that stage across runs of one host", function()
  local order = {}
  local function p(tag)
    return pipeline.define{ name = "stage-group", stages = {
      { name = "deploy", concurrency = function(r) return "env-" .. r.vars.env end, run = function()
        order[#order + 1] = tag .. ">"
        task.sleep(0.1)
        order[#order + 1] = "<" .. tag
      end },
    } }
  end
  local store = Run.memory_store()
  local a = task.spawn(run, p("a"), { store = store, vars = { env = "staging" }, lock_poll = 0.02 })
  local b = task.spawn(run, p("b"), { store = store, vars = { env = "staging" }, lock_poll = 0.02 })
  a:join(); b:join()
  T.eq(table.concat(order, " "), "a> <a b> <b")
  T.raises(function() pipeline.define{ name = "x", concurrency = { grp = "x" }, stages = { { name = "a", run = print } } } end,
    "concurrency has an unknown field 'grp'")
end)

-- ---- 9. ctx.stages ----

T.test("ctx.stages and a decision's run.stages: status, outputs, error, times, attempts of every stage", function()
  local seen
  local p = pipeline.define{ name = "views", stages = {
    { name = "validate", retry = 1, run = function() error("template invalid", 0) end },
    { name = "deploy", needs = { "validate" }, run = function() end },
    { name = "notify", needs = { "deploy" }, when = "always", run = function(ctx)
      seen = {}
      for name, s in pairs(ctx.stages) do seen[name] = s end
      return {}
    end },
    { name = "decide", needs = { "deploy" }, when = function(r)
      return r.stages.validate.status == "failure" and r.stages.validate.error == "template invalid"
    end, run = function() end },
  } }
  local r = run(p)
  T.eq(seen.validate.status, "failure"); T.eq(seen.validate.error, "template invalid")
  T.eq(seen.validate.attempts, 2); T.ok(seen.validate.started and seen.validate.finished)
  T.eq(seen.deploy.status, "skipped"); T.eq(seen.notify.status, "running")
  T.eq(r.stages.decide.status, "success", "the decision saw the failed stage")
  local ro = run(pipeline.define{ name = "ro", stages = {
    { name = "a", run = function(ctx) ctx.stages.b = {} end },
    { name = "b", run = function(ctx) ctx.outputs.a = {} end },
  } })
  T.match(ro.stages.a.error, "ctx.stages is read%-only"); T.match(ro.stages.b.error, "ctx.outputs is read%-only")
end)

-- ---- 10. trigger and env ----

T.test("trigger is checked at load and enforced: tags, branches, manual; env reaches stages' processes and ctx.env", function()
  T.raises(function() pipeline.define{ name = "x", trigger = { tag = { "rc-*" } }, stages = { { name = "a", run = print } } } end,
    "trigger has an unknown field 'tag' (did you mean 'tags'?)")
  T.raises(function() pipeline.define{ name = "x", trigger = { tags = "" }, stages = { { name = "a", run = print } } } end,
    "trigger.tags[1] must be a pattern string")
  T.raises(function() pipeline.define{ name = "x", trigger = { manual = false }, stages = { { name = "a", run = print } } } end,
    "trigger allows no run at all")
  T.raises(function() pipeline.define{ name = "x", stagez = {}, stages = { { name = "a", run = print } } } end,
    "unknown field 'stagez' (did you mean 'stages'?)")
  T.raises(function() pipeline.define{ name = "x", stages = { { name = "a", run = print, when = "canceled" } } } end,
    "(got canceled) (did you mean 'cancelled'?)")
  T.ok(pipeline.glob_match("rc-*", "rc-1.2.0")); T.ok(not pipeline.glob_match("rc-*", "v1.2.0"))
  T.ok(not pipeline.glob_match("release/*", "release/a/b")); T.ok(pipeline.glob_match("release/**", "release/a/b"))
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local proc = require("stagehost.proc")
    return pipeline.define{ name = "tagged", trigger = { tags = { "rc-*" }, manual = os.getenv("MANUAL") == "1" },
      env = { APP_ENV = "staging", REGION = "eu-west-1" },
      stages = {
        { name = "a", run = function(ctx)
          return { child = proc.run{ "sh", "-c", "echo $APP_ENV/$REGION" }.stdout, env = ctx.env.APP_ENV, tag = ctx.run.tag }
        end },
      } }
  ]] }
  local wrong = sh(dir, { "run", "p.lua", "--tag", "v1.0.0" })
  T.eq(wrong.code, 2); T.has(wrong.stderr, "tag 'v1.0.0' does not match the trigger of pipeline 'tagged' (tags rc-*)")
  local by_hand = sh(dir, { "run", "p.lua" })
  T.eq(by_hand.code, 2); T.has(by_hand.stderr, "does not run by hand")
  local ok = sh(dir, { "run", "p.lua", "--tag", "rc-2.0.0" })
  T.eq(ok.code, 0, ok.stderr)
  local st = status(dir, ok.stdout:match("^run (%S+)"))
  T.eq(st.by.a.outputs.child, "staging/eu-west-1\n"); T.eq(st.by.a.outputs.env, "staging")
  -- under GitHub Actions the tag comes from GITHUB_REF
  local gha = sh(dir, { "run", "p.lua" }, { env = { GITHUB_ACTIONS = "true", GITHUB_REF = "refs/tags/rc-3.0.0", GITHUB_EVENT_NAME = "push" } })
  T.eq(gha.code, 0, gha.stderr)
  T.eq(status(dir, gha.stdout:match("run (%d+%-%d+%-%x+)")).by.a.outputs.tag, "rc-3.0.0")
  local push = sh(dir, { "run", "p.lua" }, { env = { GITHUB_ACTIONS = "true", GITHUB_REF = "refs/heads/main", GITHUB_EVENT_NAME = "push" } })
  T.eq(push.code, 2); T.has(push.stderr, "a push to branch 'main' does not trigger pipeline 'tagged'")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- 12. a retry names its cause ----

T.test("a retry's warning names the cause, also when task.all failed", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local task = require("stagehost.task")
    local tries = 0
    return pipeline.define{ name = "retrying", stages = {
      { name = "checks", retry = 1, run = function()
        tries = tries + 1
        if tries == 1 then
          task.all{ lint = function() error("eslint exited 1", 0) end, tsc = function() end }
        end
      end },
    } }
  ]] }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  T.match(r.stderr, "%[checks%] attempt 1 of 2 failed: [^\n]*lint: eslint exited 1 — retrying")
  fs.remove(dir, { recursive = true })
end)

-- ---- 13. print inside a stage; GitHub Actions shows every line once ----

T.test("print in a stage gets the [stage] prefix and its log; under GitHub Actions every line appears once", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "printing", stages = {
      { name = "build", run = function(ctx)
        print("printed by the stage")
        ctx.log.info("logged by the stage")
        require("stagehost.proc").run{ "echo", "said by a child" }
      end },
    } }
  ]] }
  local plain = sh(dir, { "run", "p.lua" })
  T.eq(plain.code, 0, plain.stderr)
  T.match(plain.stderr, "%[build%] printed by the stage\n")
  local id = plain.stdout:match("^run (%S+)")
  T.has(fs.read(dir .. "/.stagehost/runs/" .. id .. "/logs/build.log"), "printed by the stage")
  local gha = sh(dir, { "run", "p.lua" }, { env = { GITHUB_ACTIONS = "true" } })
  T.eq(gha.code, 0, gha.stderr)
  local all = gha.stdout .. gha.stderr
  for _, line in ipairs{ "printed by the stage", "logged by the stage", "said by a child" } do
    local _, n = all:gsub(line, "")
    T.eq(n, 1, line .. " appears once")
  end
  T.match(gha.stdout, "::group::✓ build[^\n]*\n.*printed by the stage.*::endgroup::")
  fs.remove(dir, { recursive = true })
end)

-- ---- the store waits out another process's lock without blocking the loop ----

local LOCKED = [[
local pipeline = require("stagehost.pipeline")
local task = require("stagehost.task")
local fs = require("stagehost.fs")
return pipeline.define{ name = "locked", stages = {
  { name = "ticker", run = function()
    fs.write("ticking", "")
    local last, gap = task.now(), 0
    local stop = task.now() + 3
    while task.now() < stop do
      task.sleep(0.01)
      gap = math.max(gap, task.now() - last)
      last = task.now()
    end
    return { max_gap = gap }
  end },
  { name = "writer", run = function()
    while not fs.exists("locked") do task.sleep(0.01) end
    return { wrote = true } -- recording this waits for the lock
  end },
  { name = "after", needs = { "writer" }, run = function() return { ran = true } end },
} }
]]

-- Hold the state database's write lock for `seconds` from another process.
local function hold_lock(dir, seconds)
  return proc.spawn{ STAGEHOST, "-e", ([[
    local db = assert(require("stagehost.core.sqlite").open(".stagehost/state.db"))
    assert(db:exec("BEGIN EXCLUSIVE"))
    require("stagehost.fs").write("locked", "")
    require("stagehost.task").sleep(%s)
    assert(db:exec("COMMIT"))
  ]]):format(seconds), cwd = dir }
end

T.test("a locked state database is waited for on a timer: the loop keeps running meanwhile", function()
  local dir = project{ ["p.lua"] = LOCKED }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { STAGEHOST_STATE_TIMEOUT = "20000" } }
  wait_for(dir .. "/ticking")
  local holder = hold_lock(dir, 1.5)
  T.eq(holder:wait().code, 0)
  local r = host:wait()
  T.eq(r.code, 0)
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local st = status(dir, id)
  T.eq(st.by.after.outputs.ran, true)
  -- SQLite's busy handler would have stalled every task for the 1.5 s the lock was held
  T.ok(st.by.ticker.outputs.max_gap < 0.75, "longest stall of the loop: " .. st.by.ticker.outputs.max_gap .. " s")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a state write that cannot be made ends the run as failed with one line, and the run stays resumable", function()
  local dir = project{ ["p.lua"] = LOCKED }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { STAGEHOST_STATE_TIMEOUT = "300" } }
  wait_for(dir .. "/ticking")
  local holder = hold_lock(dir, 4)
  local r = host:wait()
  T.eq(r.code, 1)
  T.eq(holder:wait().code, 0)
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local st = status(dir, id)
  T.eq(st.status, "interrupted", "the database does not say it ended")
  T.ok(st.by.after.status ~= "success", "nothing after the lost write ran")
  local resumed = sh(dir, { "resume", id })
  T.eq(resumed.code, 0, resumed.stderr)
  T.eq(status(dir, id).by.after.outputs.ran, true)
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- promises of the engine with no test before ----

T.test("a missing or unparsable when file is a load error: one line, file:line, exit 2", function()
  local dir = project{
    ["missing.lua"] = [[
local pipeline = require("stagehost.pipeline")
return pipeline.define{ name = "w", stages = {
  { name = "a", run = function() end },
  { name = "b", needs = { "a" }, when = "decisions/nope.lua", run = function() end },
} }
]],
    ["broken.lua"] = [[
local pipeline = require("stagehost.pipeline")
return pipeline.define{ name = "w", stages = {
  { name = "a", run = function() end },
  { name = "b", needs = { "a" }, when = "decide.lua", run = function() end },
} }
]],
    ["decide.lua"] = "return function(run) return run.stages.a.status == \"success\" end end\n",
  }
  local missing = sh(dir, { "run", "missing.lua" })
  T.eq(missing.code, 2)
  T.match(missing.stderr, "^stagehost: missing%.lua:4: stage 'b': when file 'decisions/nope%.lua' not found")
  local broken = sh(dir, { "run", "broken.lua" })
  T.eq(broken.code, 2)
  T.match(broken.stderr, "^stagehost: broken%.lua:4: stage 'b': when file 'decide%.lua' does not load: ")
  T.eq(select(2, broken.stderr:gsub("\n", "")), 1, "one line")
  T.eq(fs.exists(dir .. "/.stagehost"), false, "nothing ran")
  fs.remove(dir, { recursive = true })
end)

T.test("processes a stage leaves running are stopped when it ends, and their orphans leave no zombies", function()
  local dir = project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local proc = require("stagehost.proc")
    local fs = require("stagehost.fs")
    local task = require("stagehost.task")
    local function zombies()
      local n, me = 0, fs.read("/proc/self/stat"):match("^(%d+)")
      for _, name in ipairs(fs.list("/proc")) do
        local stat = name:match("^%d+$") and fs.read("/proc/" .. name .. "/stat")
        local state, ppid = stat and stat:match("%) (%a) (%d+)")
        if state == "Z" and ppid == me then n = n + 1 end
      end
      return n
    end
    return pipeline.define{ name = "leftovers", stages = {
      { name = "start", run = function()
        -- one child left running, and a grandchild orphaned by its shell in a session of its
        -- own (so no process-group kill reaches it): reparented to us, the subreaper
        local left = proc.spawn{ "sleep", "60" } -- held to the end: a collected handle stops its child
        fs.write("left.pid", tostring(left.pid))
        proc.run{ "sh", "-c", "setsid sleep 0.3 >/dev/null 2>&1 & echo $! > orphan.pid" }
        local orphan = fs.read("orphan.pid"):match("%d+")
        local ppid = (fs.read("/proc/" .. orphan .. "/stat") or ""):match("%) %a (%d+)")
        return { reparented = ppid == fs.read("/proc/self/stat"):match("^(%d+)") }
      end },
      { name = "check", needs = { "start" }, run = function()
        task.sleep(0.6) -- the orphan's sleep has ended by now
        return { zombies = zombies() }
      end },
    } }
  ]] }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  T.match(r.stderr, "%[start%] stopped 1 process%(es%) the stage left running")
  T.ok(T.gone(tonumber(fs.read(dir .. "/left.pid"))), "the leftover child is gone")
  local st = status(dir, r.stdout:match("^run (%S+)"))
  T.eq(st.by.start.outputs.reparented, true, "the orphan was reparented to the host (its subreaper)")
  T.eq(st.by.check.outputs.zombies, 0, "and reaped by it")
  fs.remove(dir, { recursive = true })
end)

T.test("a stage's timeout or cancel: TERM, KILL after the grace period, and nothing later starts before its processes are gone", function()
  local dir = T.project{ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    local proc = require("stagehost.proc")
    local fs = require("stagehost.fs")
    local function alive(pid)
      local stat = fs.read("/proc/" .. pid .. "/stat")
      return stat ~= nil and not stat:match("%) Z")
    end
    return pipeline.define{ name = "traps", stages = {
      { name = "deploy", timeout = os.getenv("STAGE_TIMEOUT"), run = function()
        -- a deploy that ignores SIGTERM, as some do
        proc.run{ "sh", "-c", "trap '' TERM; echo $$ > deploy.pid; while :; do sleep 1; done", grace = 1 }
      end },
      { name = "rollback", needs = { "deploy" }, when = "always", run = function()
        return { deploy_alive = alive(fs.read("deploy.pid"):match("%d+")) }
      end },
    } }
  ]] }
  -- a timeout
  local t0 = task.now()
  local r = T.stagehost(dir, { "run", "p.lua" }, { env = { STAGE_TIMEOUT = "500ms" } })
  T.eq(r.code, 1, r.stderr)
  T.ok(task.now() - t0 < 20, "the host did not wait for the trapping process to end by itself")
  local st = status(dir, r.stdout:match("^run (%S+)"))
  T.eq(st.by.deploy.error, "timed out after 500ms")
  T.eq(st.by.rollback.outputs.deploy_alive, false, "the rollback started after the deploy's processes were gone")
  -- stagehost cancel
  fs.remove(dir .. "/deploy.pid")
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", cwd = dir, env = { STAGE_TIMEOUT = "10m" } }
  T.wait_for(dir .. "/deploy.pid")
  local id = assert(fs.list(dir .. "/.stagehost/runs"))
  table.sort(id)
  local newest
  for _, name in ipairs(id) do if name ~= r.stdout:match("^run (%S+)") then newest = name end end
  t0 = task.now()
  T.eq(T.stagehost(dir, { "cancel", newest }).code, 0)
  T.eq(host:wait().code, 3)
  T.ok(task.now() - t0 < 20, "cancel did not wait for the trapping process to end by itself")
  local pid = tonumber(fs.read(dir .. "/deploy.pid"):match("%d+"))
  T.ok(T.gone(-pid), "its group is gone")
  T.eq(status(dir, newest).by.rollback.outputs.deploy_alive, false)
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- 15. the live view of a stage waiting for a person ----

T.test("the live view shows a waiting stage's whole text, wrapped, never cut", function()
  local live = require("stagehost.pipeline.live")
  local text = "Approve the deployment of rc-1.2.3 to staging: open http://127.0.0.1:8080/approve/abcdef0123456789 or run 'stagehost approve 20261206-101010-abcd' from any terminal"
  local fake = { order = { "approval", "deploy" }, records = {
    approval = { status = "running" }, deploy = { status = "pending" } },
    live = { approval = { t0 = task.now(), waiting = text } } }
  local lines = live.frame(fake, 1)
  T.ok(#lines > 2, "wrapped over several lines")
  T.match(lines[1], "^⏸ approval +[%d.]+s  Approve the deployment")
  local joined = { (lines[1]:gsub("^⏸ approval +[%d.]+s  ", "")) }
  for i = 2, #lines - 1 do joined[#joined + 1] = (lines[i]:gsub("^ +", "")) end
  T.eq(table.concat(joined, " "), text, "every word, in order")
  T.match(lines[#lines], "^  deploy")
  -- a running stage's last log line is cut to the screen, with a mark
  fake.live.approval = { t0 = task.now(), log = { last = function() return ("x"):rep(500) end } }
  T.match(live.frame(fake, 1)[1], "x…$")
end)

T.run()
