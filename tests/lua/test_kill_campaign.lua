-- kill -9 everywhere (issue 14, item 11): the staging flow of scripts/ in the sandbox, killed
-- with SIGKILL right after one durable write after another, each time resumed (again and again
-- when a resume is killed too) until the run ends; then what the run left is held against an
-- uninterrupted run's.
--
-- A kill point is a durable write of the host: a commit to the state database (a stage's row
-- and its event, the run's row, a checkpoint, an artifact's row, a process group recorded or
-- forgotten, a lock, an approval gate's transaction) or the sandbox's world written to disk
-- after a request that changed it (the cloud has done it; the host has not heard the answer
-- yet). A hook given with `stagehost -e` counts them in the host itself and SIGKILLs the host
-- right after the chosen one; nothing in stagehost knows about it. A point is named by the
-- stage whose start it follows and the number of writes since: "validate:12" is the 12th
-- write after "stage validate running" in the host that runs validate ("start:N" before any
-- stage started). Points are taken from an uninterrupted run's list, so each names one place
-- in the flow; a resumed host starts the interrupted stage again, so a chain of kills
-- (validate:5, then validate:30, then integration-tests:4, ...) reaches them one after the
-- other. A resumed stage may write less than its first attempt did (what it uploaded is
-- there): a host that would pass its point without reaching it is killed at the first write
-- after it, and the point it was killed at is the one counted.
--
-- What is asserted of every chain, against the uninterrupted reference run:
--  * every stage ends as in the reference and the run with it; the record (stage statuses,
--    artifacts, the deterministic outputs) is the reference's;
--  * no stage finished twice: in the events table, once a stage has a terminal event, no later
--    event of it says anything else (a stage killed before its end was committed runs again
--    from its start: that is allowed, it had not finished);
--  * no cloud operation started twice: the sandbox's request log (kept across hosts in
--    STATE/sandbox/requests.jsonl) holds as many ExecuteChangeSet, StartJob and CreateRelease
--    requests as the reference's (one each at most); CreateChangeSet may repeat only as often
--    as validate started again, and then the change set executed is the one validate recorded
--    (executing it makes CloudFormation drop the stack's other change sets, and there is one
--    ExecuteChangeSet), so a change set of a killed validate never ran;
--  * an approval keeps its gate: the same deadline, the same votes, one decision, an audit
--    chain that verifies.
--
-- The CI setting (STAGEHOST_SANDBOX_STEP=0.02; about four minutes on two cores): the whole flow
-- once as the reference, then 56 points spread over a `--from validate` run (which reuses the
-- checks and the gate of the reference) in 4 chains, 2 points in the pre-deployment checks
-- (`--only`), and the approval given by `stagehost approve` across 3 kills. KILL_CAMPAIGN=long
-- (a local setting, about two hours): every point of the `--from validate` run in 8 chains, and
-- every point of the whole flow (checks and approval included), one kill per run.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local task = require("stagehost.task")
local sqlite = require("stagehost.core.sqlite")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))
local LONG = os.getenv("KILL_CAMPAIGN") == "long"
local WORK = T.tempdir()
local TAG = "rc-0.0.1-kill"
-- a copy of the example app (its node_modules linked): the runs write reports/ and dist/ in it,
-- and other tests deploy the one in the tree meanwhile
local APP = WORK .. "/app"

-- The hook: counts the host's durable writes, notes each in KC_POINTS, and SIGKILLs the host
-- right after the write KC_KILL names (noting it in KC_KILLED first).
local HOOK = [==[
local target = os.getenv("KC_KILL")
local points_file, killed_file = os.getenv("KC_POINTS"), os.getenv("KC_KILLED")
-- a resumed stage may make fewer writes than the first attempt (what was uploaded stays): the
-- kill is at the point or, if the stage never gets that far, at the first write after it
local order = {}
for name in (os.getenv("KC_ORDER") or ""):gmatch("[^,]+") do order[name] = #order + 1; order[#order + 1] = name end
local target_stage, target_n = (target or ""):match("^(.*):(%d+)$")
target_n = tonumber(target_n)
local Store = require("stagehost.pipeline.store")
local anchor, since, depth = "start", -1, 0
local function self_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  return pid
end
local function append(path, line)
  if not path then return end
  local f = assert(io.open(path, "a"))
  f:write(line, "\n")
  f:close()
end
local function point(label)
  local started = label:match("^stage (%S+) running$")
  if started then anchor, since = started, 0 else since = since + 1 end
  local name = anchor .. ":" .. since
  append(points_file, name .. "\t" .. label)
  local here, there = order[anchor], order[target_stage or ""]
  if name == target or (here and there and target_n and (here > there or (here == there and since >= target_n))) then
    append(killed_file, name .. "\t" .. label)
    os.execute("kill -KILL " .. self_pid())
    while true do end
  end
end
local function wrap(method, describe)
  local inner = Store[method]
  Store[method] = function(self, ...)
    depth = depth + 1
    local r = table.pack(pcall(inner, self, ...))
    depth = depth - 1
    if not r[1] then error(r[2], 0) end
    if depth == 0 then
      local label = describe(...)
      if label then point(label) end
    end
    return table.unpack(r, 2, r.n)
  end
end
wrap("save_run", function(run) return "run " .. run.status end)
wrap("save_stage", function(run, rec) return ("stage %s %s"):format(rec.name, rec.status) end)
wrap("event", function(_, stage, kind) return ("event %s %s"):format(tostring(stage), kind) end)
wrap("checkpoint", function(_, stage, key, _, set) return set and ("checkpoint %s %s"):format(stage, key) or nil end)
wrap("artifact", function(_, a) return ("artifact %s/%s"):format(a.stage, a.name) end)
wrap("add_proc", function(_, stage) return "process recorded " .. stage end)
wrap("remove_procs", function(_, stage) return "process forgotten " .. stage end)
wrap("lock", function(group) return "lock " .. group end)
wrap("unlock", function(group) return "unlock " .. group end)
wrap("claim", function() return "claim" end)
wrap("request_cancel", function() return "cancel requested" end)
wrap("transaction", function() return "transaction" end)
wrap("query", function(sql)
  local verb = sql:match("^%s*(%u+)")
  if verb == "INSERT" or verb == "UPDATE" or verb == "DELETE" then return "write " .. sql:match("^%s*(%u+ %u* ?[%w_]+)") end
end)
local persist = require("stagehost.sandbox.persist")
local save, seen = persist.save, nil
persist.save = function(sb)
  save(sb)
  local n = #sb.requests
  seen = seen or n - 1
  if n > seen then -- a request changed the world (not the save as the sandbox closes)
    seen = n
    local r = sb.requests[n]
    point("cloud " .. tostring(r.action or (r.method .. " " .. r.path)))
  end
end
]==]

-- ---- running hosts ----

-- the commit every run deploys, read once: a gate is reused only at the same commit, and the
-- checkout may move while the campaign runs
local COMMIT

-- the stages of scripts/staging.lua in their order, after "start" (the writes before any stage)
local ORDER = { "start", "pre-deployment-checks", "approval-gate", "validate", "deploy-infrastructure", "deploy-frontend",
  "integration-tests", "mark-release-ready", "notify" }
local RANK = {}
for i, name in ipairs(ORDER) do RANK[name] = i end

-- Is the point `got` ("stage:n") the point `want` or later in the flow?
local function at_or_after(got, want)
  local gs, gn = got:match("^(.*):(%d+)$")
  local ws, wn = want:match("^(.*):(%d+)$")
  if not (gs and ws and RANK[gs] and RANK[ws]) then return got == want end
  return RANK[gs] > RANK[ws] or (RANK[gs] == RANK[ws] and tonumber(gn) >= tonumber(wn))
end

local function env_of(extra)
  local env = { STAGEHOST_BIN = STAGEHOST, GITHUB_ACTIONS = false, NO_COLOR = "1", STAGEHOST_SANDBOX_STEP = "0.02",
    KC_KILL = false, KC_POINTS = false, KC_KILLED = false, GITHUB_SHA = COMMIT or false,
    KC_ORDER = table.concat(ORDER, ",") }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- stagehost with the hook; -> the proc.run result (code, signal, stdout, stderr)
local function host(args, env)
  local argv = { STAGEHOST, "-e", HOOK }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.timeout, argv.env = 600, env_of(env)
  return proc.run(argv)
end

local function start_run(state, args, env)
  local argv = { "run", SOURCE .. "/scripts/staging.lua", "--sandbox", "--state", state, "--tag", TAG, "--var", "app=" .. APP }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return host(argv, env)
end

local function stagehost(state, ...)
  local argv = { STAGEHOST, ... }
  argv[#argv + 1], argv[#argv + 2], argv.timeout, argv.env = "--state", state, 120, env_of()
  return proc.run(argv)
end

local function run_ids(state)
  local r = stagehost(state, "runs", "--json")
  local ids = {}
  for _, row in ipairs(json.decode(r.stdout) or {}) do ids[row.id] = true end
  return ids
end

local function status(state, id)
  return require("flow").status(function(...) return stagehost(state, ...) end, id)
end

local function copy_dir(from, to)
  local r = proc.run{ "cp", "-a", from, to, timeout = 60 }
  assert(r.ok, r.stderr)
end

local function read_points(path)
  local out = {}
  for line in (fs.read(path) or ""):gmatch("[^\n]+") do
    local name, label = line:match("^([^\t]+)\t(.*)$")
    out[#out + 1] = { name = name, label = label }
  end
  return out
end

-- ---- what a run left ----

local function db_rows(state, sql, ...)
  local db = assert(sqlite.open(state .. "/state.db", { readonly = true, busy_timeout = 5000 }))
  local rows = assert(db:query(sql, ...))
  db:close()
  return rows
end

-- The sandbox's requests after the first `skip` lines: counts by action (or METHOD path).
local function requests(state, skip)
  local counts, n = {}, 0
  for line in (fs.read(state .. "/sandbox/requests.jsonl") or ""):gmatch("[^\n]+") do
    n = n + 1
    if n > (skip or 0) then
      local r = json.decode(line)
      local key = r.action or (r.method .. " " .. r.path)
      counts[key] = (counts[key] or 0) + 1
    end
  end
  return counts, n
end

local function lines_of(path)
  local n = 0
  for _ in (fs.read(path) or ""):gmatch("[^\n]+") do n = n + 1 end
  return n
end

local ONCE = { "ExecuteChangeSet", "StartJob", "POST /repos/{owner}/{repo}/releases" }

-- What must be the same in an interrupted and an uninterrupted run: stage statuses, artifacts
-- (stage/name), and the outputs that do not hold ids, times or addresses.
local STABLE = {
  ["pre-deployment-checks"] = { "checks", "failed", "checklist" },
  ["approval-gate"] = { "decision", "approvals", "required" },
  validate = { "template_sha256", "template_key", "parameters", "functions", "change_set_type", "stack_name",
    "no_changes", "checks" },
  ["deploy-infrastructure"] = { "stack", "status", "no_changes" },
  ["deploy-frontend"] = { "status" },
  ["integration-tests"] = { "passed", "tests", "failed", "areas" },
  ["mark-release-ready"] = { "ready", "previous_tag" },
  notify = { "success", "phase", "stage" },
}

local function canonical(v)
  if type(v) ~= "table" then return json.encode(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = json.encode(tostring(k)) .. ":" .. canonical(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function record_of(state, id)
  local st = status(state, id)
  local out = { status = st.status, stages = {} }
  local run_json = json.decode(assert(fs.read(("%s/runs/%s/run.json"):format(state, id)), "run.json written"))
  local arts = {}
  for _, s in ipairs(run_json.stages) do
    for _, a in ipairs(s.artifacts or {}) do arts[#arts + 1] = s.name .. "/" .. tostring(a.name or a.file) end
  end
  table.sort(arts)
  out.artifacts = table.concat(arts, " ")
  for _, s in ipairs(st.stages) do
    local kept = {}
    for _, key in ipairs(STABLE[s.name] or {}) do kept[key] = (s.outputs or {})[key] end
    out.stages[s.name] = { status = s.status, outputs = canonical(kept), reused = s.reused_from ~= nil }
  end
  return out
end

local function same_record(got, want, what)
  T.eq(got.status, want.status, what .. ": the run's status")
  for name, w in pairs(want.stages) do
    local g = got.stages[name] or {}
    T.eq(g.status, w.status, what .. ": stage " .. name)
    T.eq(g.reused, w.reused, what .. ": stage " .. name .. " reused")
    T.eq(g.outputs, w.outputs, what .. ": the outputs of " .. name)
  end
  T.eq(got.artifacts, want.artifacts, what .. ": the artifacts")
end

-- No stage finished twice: after a stage's first terminal event, only that same status.
local TERMINAL = { success = true, failure = true, skipped = true, cancelled = true }
local function finished_once(state, id, what)
  local first = {}
  for _, e in ipairs(db_rows(state, "SELECT stage, kind FROM events WHERE run_id = ? ORDER BY id", id)) do
    local done = first[e.stage]
    if done then
      T.eq(e.kind, done, ("%s: stage %s had ended %s, then an event says %s"):format(what, e.stage, done, e.kind))
    elseif TERMINAL[e.kind] then
      first[e.stage] = e.kind
    end
  end
  local runs = db_rows(state, "SELECT COUNT(*) AS n FROM events WHERE run_id = ? AND stage = 'validate' AND kind = 'running'", id)
  return runs[1].n -- how often validate started
end

-- No cloud operation started twice (see the top of this file).
local function cloud_once(state, skip, id, want, validate_starts, what)
  local got = requests(state, skip)
  for _, action in ipairs(ONCE) do
    T.eq(got[action] or 0, want[action] or 0, what .. ": " .. action .. " requests")
  end
  T.ok((got.CreateChangeSet or 0) <= math.max(1, validate_starts),
    ("%s: %d CreateChangeSet for %d starts of validate"):format(what, got.CreateChangeSet or 0, validate_starts))
  if (want.ExecuteChangeSet or 0) > 0 then
    local cs = status(state, id).stages.validate.outputs.change_set
    local world = require("stagehost.sandbox.persist").decode(assert(fs.read(state .. "/sandbox/world.lua")))
    local executed = world.state.aws.change_sets[cs]
    T.ok(executed, what .. ": the change set validate recorded exists")
    -- (EXECUTE_IN_PROGRESS when the sandbox rebuilt the stack operation after a kill: it does not
    -- mark the change set complete then; the stack itself is checked by the stages' success)
    T.match(tostring(executed and executed.execution), "^EXECUTE_[CI]", what .. ": the change set validate recorded was executed")
  end
end

-- ---- chains ----

-- Run once with args, killing the host at plan[1], its resume at plan[2], ... and resuming
-- without a kill after the plan is used up, until the run ends. -> id, the points killed at.
local function chain(state, args, plan, what)
  local killed_file = state .. "/.killed"
  local before = run_ids(state)
  local r = start_run(state, args, { KC_KILL = plan[1] or false, KC_KILLED = killed_file })
  local id
  for candidate in pairs(run_ids(state)) do
    if not before[candidate] then id = candidate end
  end
  T.ok(id, what .. ": a run was recorded: " .. r.stdout:sub(1, 300) .. r.stderr:sub(-300))
  local i, hosts = 1, 1
  while r.signal == "SIGKILL" do
    i = i + 1
    hosts = hosts + 1
    T.ok(hosts <= #plan + 3, what .. ": the run never ends")
    local st = status(state, id)
    T.eq(st.status, "interrupted", what .. ": a killed host's run")
    r = host({ "resume", id, "--state", state }, { KC_KILL = plan[i] or false, KC_KILLED = killed_file })
  end
  T.ok(r.signal == nil, what .. ": ended by " .. tostring(r.signal))
  T.eq(status(state, id).status, "success", what .. ": the run's end, after " .. hosts .. " hosts: "
    .. r.stdout:sub(-1500) .. r.stderr:sub(-1500))
  local killed = read_points(killed_file)
  for k, p in ipairs(killed) do
    T.ok(at_or_after(p.name, plan[k]), ("%s: kill %d was at %s, before its point %s"):format(what, k, p.name, plan[k]))
  end
  T.eq(#killed, #plan, what .. ": every planned kill happened (" .. #killed .. " of " .. #plan .. ")")
  return id, killed, r
end

-- ---- the campaign ----

local BASE = WORK .. "/base"
local reference = {}

-- The points of a run up to the end of its last stage. What follows (the lock given back, every
-- stage's row and the run's written once more as it ends) is written by whichever host ends
-- the run, counted from "start" in a resumed one: a chain can name it only before its first kill.
local function points_of(file)
  local out = {}
  for _, p in ipairs(read_points(file)) do
    out[#out + 1] = p
    if p.label == "stage notify success" then break end
  end
  return out
end

-- count points spread evenly over the list (all of them when count is nil), dealt round-robin
-- into n chains (each stays in flow order).
local function plans(points, count, n)
  local picked, seen = {}, {}
  count = math.min(count or #points, #points)
  for k = 0, count - 1 do
    local i = 1 + (count > 1 and k * (#points - 1) // (count - 1) or 0)
    if not seen[i] then seen[i], picked[#picked + 1] = true, points[i].name end
  end
  local out = {}
  for c = 1, n do out[c] = {} end
  for i, name in ipairs(picked) do table.insert(out[(i - 1) % n + 1], name) end
  return out, #picked
end

local covered = {}
local function cover(killed)
  for _, p in ipairs(killed) do
    if not covered[p.name] then covered[p.name], covered[#covered + 1] = p.label, p.name end
  end
end

local function copy_app() require("flow").app_copy(SOURCE, APP) end

T.test("the reference: the whole flow uninterrupted, every durable write listed", function()
  local head = proc.run{ "git", "-C", SOURCE, "rev-parse", "HEAD", quiet = true }
  COMMIT = head.ok and head.stdout:match("^(%x+)") or ("0"):rep(40)
  copy_app()
  local r = start_run(BASE, { "--auto-approve" }, { KC_POINTS = WORK .. "/full.points" })
  T.eq(r.code, 0, r.stdout:sub(-2000) .. r.stderr:sub(-2000))
  local id = r.stdout:match("^run (%S+)")
  T.eq(status(BASE, id).status, "success")
  reference.full = points_of(WORK .. "/full.points")
  reference.full_record, reference.full_requests = record_of(BASE, id), requests(BASE, 0)
  T.ok(#reference.full > 100, "the flow makes many durable writes: " .. #reference.full)
  copy_dir(BASE, WORK .. "/snapshot")
  -- the same from validate on, uninterrupted, with a changed parameter so that the change set
  -- has changes and is executed: the record the chains must end with
  local ref = WORK .. "/ref-validate"
  copy_dir(WORK .. "/snapshot", ref)
  local skip = lines_of(ref .. "/sandbox/requests.jsonl")
  local v = start_run(ref, { "--auto-approve", "--from", "validate", "--var", "OAuthClientId=kill-campaign" },
    { KC_POINTS = WORK .. "/validate.points" })
  T.eq(v.code, 0, v.stdout:sub(-2000) .. v.stderr:sub(-2000))
  local vid = v.stdout:match("^run (%S+)")
  reference.validate = { record = record_of(ref, vid), requests = requests(ref, skip),
    points = points_of(WORK .. "/validate.points") }
  T.eq(reference.validate.requests.ExecuteChangeSet, 1, "the reference executes its change set")
  T.eq(reference.validate.requests.StartJob, 1, "the reference starts one Amplify job")
  T.eq(reference.validate.record.stages["approval-gate"].reused, true, "the gate is reused from the whole run")
  T.ok(#reference.validate.points >= 60, "points from validate on: " .. #reference.validate.points)
  fs.remove(ref, { recursive = true })
end, { timeout = 300 })

T.test("kill -9 at points from validate to the end, each resumed until the run ends: the reference's record, nothing twice", function()
  T.ok(reference.validate, "the reference ran")
  -- CI: 56 points in 4 chains (about three minutes on two cores); long: every point, 8 chains
  local list, picked = plans(reference.validate.points, not LONG and 56 or nil, LONG and 8 or 4)
  T.ok(picked >= 50 or LONG, "at least 50 points: " .. picked)
  for c, plan in ipairs(list) do
    local state = ("%s/chain-%d"):format(WORK, c)
    copy_dir(WORK .. "/snapshot", state)
    local skip = lines_of(state .. "/sandbox/requests.jsonl")
    local what = ("chain %d (%s)"):format(c, table.concat(plan, " "))
    local id, killed = chain(state, { "--auto-approve", "--from", "validate", "--var", "OAuthClientId=kill-campaign" },
      plan, what)
    cover(killed)
    local starts = finished_once(state, id, what)
    cloud_once(state, skip, id, reference.validate.requests, starts, what)
    same_record(record_of(state, id), reference.validate.record, what)
    fs.remove(state, { recursive = true })
  end
end, { timeout = LONG and 36000 or 600 })

T.test("kill -9 in the pre-deployment checks, as they start and as their artifacts are written", function()
  local state = WORK .. "/checks"
  copy_dir(WORK .. "/snapshot", state)
  local plan = { "pre-deployment-checks:1", "pre-deployment-checks:5" }
  local what = "checks chain"
  local id, killed = chain(state, { "--auto-approve", "--only", "pre-deployment-checks" }, plan, what)
  cover(killed)
  finished_once(state, id, what)
  local st = status(state, id)
  T.eq(st.status, "success", what)
  T.eq(st.stages["pre-deployment-checks"].outputs.failed, 0, what .. ": the checks passed")
  fs.remove(state, { recursive = true })
end, { timeout = 300 })

-- The gate's row and events, for the approval variant.
local function gate_of(state, id)
  local g = db_rows(state, "SELECT * FROM gates WHERE run_id = ? AND stage = 'approval-gate'", id)[1]
  local events = g and db_rows(state, "SELECT kind, who, decision FROM gate_events WHERE gate_id = ? ORDER BY seq", g.id) or {}
  return g, events
end

T.test("approval by `stagehost approve` across kills: the gate keeps its deadline and votes, one decision", function()
  local state = WORK .. "/approval"
  copy_dir(WORK .. "/snapshot", state)
  local killed_file = state .. "/.killed"
  local before = run_ids(state)
  -- 1: killed right after the gate and its `requested` event were committed
  local r = start_run(state, { "--only", "approval-gate" }, { KC_KILL = "approval-gate:2", KC_KILLED = killed_file })
  T.eq(r.signal, "SIGKILL", "killed after the gate was made: " .. r.stderr:sub(-500))
  local id
  for candidate in pairs(run_ids(state)) do if not before[candidate] then id = candidate end end
  local g1, e1 = gate_of(state, id)
  T.ok(g1, "the gate was committed before the kill")
  T.eq(#e1, 1); T.eq(e1[1].kind, "requested")
  -- 2: a resumed host waits on the same gate, and is killed while it waits (no write to
  -- hook on: killed from here once its log says it is waiting)
  local argv = { STAGEHOST, "resume", id, "--state", state, env = env_of(), stdout = state .. "/waiting.out",
    stderr = state .. "/waiting.err" }
  local waiting = proc.spawn(argv)
  local deadline = task.now() + 60
  local log_path = ("%s/runs/%s/logs/approval-gate.log"):format(state, id)
  while not (fs.read(log_path) or ""):find("its votes and deadline are kept", 1, true) do
    T.ok(task.now() < deadline, "the resumed host waits on the gate it found")
    task.sleep(0.05)
  end
  waiting:kill("KILL")
  waiting:wait()
  cover({ { name = "approval-gate:waiting", label = "waiting for a vote (killed from outside)" } })
  local g2 = gate_of(state, id)
  T.eq(g2.deadline, g1.deadline, "the deadline is kept across a kill")
  -- 3: the vote, while no host runs the run
  local vote = stagehost(state, "approve", id, "--as", "reviewer", "--comment", "checked after the kill")
  T.eq(vote.code, 0, vote.stderr)
  -- 4: a host that sees the vote and is killed right after recording the decision, then one
  -- that finishes
  local plan_kill = "approval-gate:3"
  r = host({ "resume", id, "--state", state }, { KC_KILL = plan_kill, KC_KILLED = killed_file })
  T.eq(r.signal, "SIGKILL", "killed after the decision: " .. r.stderr:sub(-500))
  r = host({ "resume", id, "--state", state }, {})
  T.eq(r.code, 0, r.stdout:sub(-1000) .. r.stderr:sub(-1000))
  local killed = read_points(killed_file)
  T.eq(#killed, 2)
  T.eq(killed[1].name, "approval-gate:2"); T.eq(killed[2].name, plan_kill)
  T.eq(killed[1].label, "transaction"); T.eq(killed[2].label, "transaction")
  cover(killed)
  local what = "approval"
  finished_once(state, id, what)
  local g, events = gate_of(state, id)
  T.eq(g.deadline, g1.deadline, "the deadline is the first host's")
  T.eq(g.status, "approved")
  local kinds = {}
  for _, e in ipairs(events) do kinds[#kinds + 1] = e.kind end
  T.eq(table.concat(kinds, " "), "requested voted decided", "one request, one vote, one decision")
  local st = status(state, id)
  local out = st.stages["approval-gate"].outputs
  T.eq(st.stages["approval-gate"].status, "success")
  T.eq(#out.votes, 1); T.eq(out.votes[1].who, "reviewer"); T.eq(out.votes[1].comment, "checked after the kill")
  local audit = stagehost(state, "approvals", "--audit", id)
  T.eq(audit.code, 0, "the gate's hash chain verifies: " .. audit.stdout .. audit.stderr)
  fs.remove(state, { recursive = true })
end, { timeout = 300 })

if LONG then
  T.test("long: every point of the whole flow, one kill per run, each resumed to the end", function()
    for i, p in ipairs(reference.full) do
      local state = ("%s/long-%d"):format(WORK, i)
      fs.mkdir(state)
      local what = ("point %d %s (%s)"):format(i, p.name, p.label)
      local id, killed = chain(state, { "--auto-approve" }, { p.name }, what)
      cover(killed)
      local starts = finished_once(state, id, what)
      cloud_once(state, 0, id, reference.full_requests, starts, what)
      same_record(record_of(state, id), reference.full_record, what)
      fs.remove(state, { recursive = true })
    end
  end, { timeout = 36000 })
end

T.test("at least 50 distinct kill points were covered", function()
  table.sort(covered)
  local lines = {}
  for _, name in ipairs(covered) do lines[#lines + 1] = name .. "  " .. covered[name] end
  print(("%d distinct kill points:\n  %s"):format(#covered, table.concat(lines, "\n  ")))
  T.ok(#covered >= 50, "distinct kill points: " .. #covered)
end)

T.run(function() fs.remove(WORK, { recursive = true }) end)
