-- Approval gates: votes from `stagehost approve` processes reach a waiting host within a
-- second; N of M, groups (AND), require_comment; refused votes (self-approval, unlisted,
-- malformed, no reason, decided gate) change nothing; a rejection or a timeout cancels the run
-- and the always-stages still report it; reminders; kill -9 between votes and a deadline that
-- passes while no host runs, then resume; a moved commit voids earlier votes; the hash-chained
-- audit (`approvals --audit`, run.json) detects an edited record.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local gate = require("stagehost.approval.gate")

local HAVE_NOTIFY = pcall(require, "stagehost.notify")

-- A pipeline whose stage `gate` asks approval.request(OPTS) and writes what it got to
-- result.json; `deploy` follows an approval, `notify` (when = "always") writes the gate's
-- status. Both wait for a file `go` while a file `hold` exists. With notify, every message
-- goes to the channel file channels/capture.lua, which appends it to notifications.jsonl.
local function project(opts_src, files)
  local dir = T.tempdir("channels")
  local p = ([[
local pipeline = require("stagehost.pipeline")
local approval = require("stagehost.approval")
local json = require("stagehost.json")
local fs = require("stagehost.fs")
local task = require("stagehost.task")
local function hold() if fs.exists("hold") then while not fs.exists("go") do task.sleep(0.02) end end end
return pipeline.define{ name = "gated", %s
  stages = {
    { name = "gate", run = function(ctx)
      local r = approval.request(%s)
      fs.write("result.json", json.encode(r))
      if r.decision ~= "approved" then ctx:cancel("approval " .. r.decision) end
      return r
    end },
    { name = "deploy", needs = { "gate" }, run = function() fs.write("deployed", "yes") hold() return {} end },
    { name = "notify", needs = { "deploy" }, when = "always", run = function(ctx)
      fs.write("notified", ctx.stages.gate.status .. ": " .. tostring(ctx.stages.gate.error))
      hold()
      return {}
    end },
  } }
]]):format(HAVE_NOTIFY and 'notify = { { channel = "capture" } },' or "", opts_src)
  assert(fs.write(dir .. "/p.lua", p))
  assert(fs.write(dir .. "/channels/capture.lua", T.CAPTURE_ALL))
  for name, text in pairs(files or {}) do assert(fs.write(dir .. "/" .. name, text)) end
  return dir
end

-- `stagehost ARGS` in dir
local function sh(dir, args, env)
  return T.stagehost(dir, args, { timeout = 60, env = env })
end

local function approve(dir, id, who, ...)
  return sh(dir, { "approve", id, "--as", who, ... })
end

local function run_host(dir, env) return T.spawn_stagehost(dir, { "run", "p.lua", "--actor", "dana" }, { env = env }) end

local function pending(dir)
  local r = sh(dir, { "approvals", "--json" })
  T.eq(r.code, 0, r.stderr)
  return json.decode(r.stdout)
end

local function audit(dir, id)
  local r = sh(dir, { "approvals", "--audit", id, "--json" })
  return json.decode(r.stdout), r
end

local function kinds(g)
  local out = {}
  for i, e in ipairs(g.events) do out[i] = e.kind .. (e.who and (":" .. e.who) or "") .. (e.decision and (":" .. e.decision) or "") end
  return table.concat(out, " ")
end

local function notifications(dir)
  local out = {}
  for line in (fs.read(dir .. "/notifications.jsonl") or ""):gmatch("[^\n]+") do out[#out + 1] = json.decode(line) end
  return out
end

-- the last notification of the event (for which keep(m) holds, when given), or nil
local function last_notification(dir, event, keep)
  local found
  for _, m in ipairs(notifications(dir)) do
    if m.event == event and (not keep or keep(m)) then found = m end
  end
  return found
end

-- a run id or gate id inside a pattern
local function esc(s) return (s:gsub("%p", "%%%0")) end

-- change the state database behind stagehost's back
local function edit(dir, sql)
  local db = assert(require("stagehost.core.sqlite").open(dir .. "/.stagehost/state.db"))
  assert(db:exec(sql))
  db:close()
end

local function refused(r, pattern, what)
  T.eq(r.code, 2, (what or "") .. ": " .. r.stdout .. r.stderr)
  T.eq(r.stdout, "", what)
  T.match(r.stderr, "^stagehost approve: [^\n]+\n$", what)
  T.match(r.stderr, pattern, what)
end

-- ---- the tally, on its own ----

T.test("the tally: N of M, one vote per person (the later replaces the earlier), a rejection ends it, a void clears it, groups AND, the deadline", function()
  local function g(spec, deadline) return { id = "r/s/1", status = "pending", deadline = deadline or 100, spec = spec } end
  local seq = 0
  local function ev(kind, who, decision)
    seq = seq + 1
    return { seq = seq, kind = kind, who = who, decision = decision }
  end
  local nm = g{ required = 2, approvers = { "alice", "bob", "carol" } }
  T.eq(gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved") }, 0).decision, nil, "1 of 2")
  T.eq(gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved"), ev("voted", "Alice", "approved") }, 0).approvals, 1,
    "the same person twice counts once (names compared without case)")
  local t = gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved"), ev("voted", "bob", "approved") }, 0)
  T.eq(t.decision, "approved"); T.eq(#t.votes, 2)
  t = gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved"), ev("voted", "bob", "approved"), ev("voted", "alice", "rejected") }, 0)
  T.eq(t.decision, "rejected", "alice's rejection replaced her approval, and a rejection ends the gate")
  T.eq(#t.votes, 2)
  t = gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved"), ev("voided"), ev("voted", "bob", "approved") }, 0)
  T.eq(t.decision, nil, "the void took alice's vote away"); T.eq(t.approvals, 1)
  T.eq(gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved") }, 100).decision, "timeout", "deadline reached")
  T.eq(gate.tally(nm, { ev("requested"), ev("voted", "alice", "approved"), ev("voted", "bob", "approved") }, 1000).decision,
    "approved", "votes recorded in time decide even when seen after the deadline")
  local groups = g{ required = 2, groups = { { team = "sre", members = { "sam", "sue" }, required = 1 },
    { team = "leads", members = { "lee" }, required = 1 } } }
  t = gate.tally(groups, { ev("requested"), ev("voted", "sam", "approved"), ev("voted", "sue", "approved") }, 0)
  T.eq(t.decision, nil, "two from one team are not one from each"); T.eq(gate.progress(t), "sre 2/1, leads 0/1 (2 of 2)")
  t = gate.tally(groups, { ev("requested"), ev("voted", "sam", "approved"), ev("voted", "lee", "approved") }, 0)
  T.eq(t.decision, "approved")
  -- what a vote is refused for
  local events = { ev("requested") }
  local spec = { required = 1, approvers = { "dana", "alice" }, forbid = { "actor" }, require_comment = false }
  local open = { id = "r/s/1", status = "pending", deadline = 100, spec = spec, actor = "dana" }
  T.match(gate.refusal(open, events, 0, { who = "Dana", decision = "approved" }), "you started this run")
  T.match(gate.refusal(open, events, 0, { who = "mallory", decision = "approved" }), "mallory is not an approver")
  T.match(gate.refusal(open, events, 0, { who = "alice", decision = "rejected" }), "a rejection needs a reason")
  T.eq(gate.refusal(open, events, 0, { who = "alice", decision = "rejected", comment = "no" }), nil)
  T.match(gate.refusal(open, events, 100, { who = "alice", decision = "approved" }), "timed out at")
end)

T.test("in a run without a state directory the gate lives in memory; misuse raises at the caller's line", function()
  local pipeline = require("stagehost.pipeline")
  local engine = require("stagehost.pipeline.engine")
  local approval = require("stagehost.approval")
  local p = pipeline.define{ name = "in-memory", stages = {
    { name = "gate", run = function()
      return approval.request{ title = "in memory", votes = { { who = "alice", decision = "approved", comment = "ok" } } }
    end },
    { name = "typo", run = function() approval.request{ title = "x", aprovers = { "a" } } end },
    { name = "self", run = function()
      approval.request{ title = "y", forbid = "actor", votes = { { decision = "approved" } } }
    end },
  } }
  local r = engine.execute(p, { selected = engine.select(p), actor = "dana" })
  T.eq(r.stages.gate.status, "success", tostring(r.stages.gate.error))
  T.eq(r.stages.gate.outputs.decision, "approved"); T.eq(r.stages.gate.outputs.votes[1].who, "alice")
  T.eq(r.stages.gate.outputs.gate, r.id .. "/gate/1")
  T.eq(r.stages.typo.status, "failure")
  T.match(r.stages.typo.error, "test_approval%.lua:%d+: bad argument #1 to 'approval%.request' %(unknown option 'aprovers' %(did you mean 'approvers'%?%)%)")
  T.eq(r.stages.self.status, "failure")
  T.has(r.stages.self.error, "votes[1] (dana) was refused: you started this run: someone else must approve it")
  T.raises(function() approval.request{ title = "outside" } end, "approval.request: call it inside a stage")
end)

-- ---- through the command line ----

T.test("2 of 3: three `stagehost approve` processes vote while the host waits; each vote reaches it within a second; the third is refused, the gate being decided", function()
  local dir = project([[{ title = "Deploy rc-1", checklist = "- [x] tests pass\n", approvers = { "alice", "bob", "carol" },
    required = 2, forbid = "actor", timeout = "10m" }]])
  assert(fs.write(dir .. "/hold", ""))
  local h = run_host(dir)
  h.line("approval requested: 'Deploy rc-1'")
  local id = T.run_id(dir)
  T.ok(h.text():find("stagehost approve " .. id, 1, true), "the host says how to vote")
  local list = sh(dir, { "approvals" })
  T.eq(list.code, 0, list.stderr)
  T.match(list.stdout, esc(id) .. " +gate +Deploy rc%-1 +0/2 +%S+ +running")
  local p = pending(dir)
  T.eq(#p, 1); T.eq(p[1].run, id); T.eq(p[1].approvals, 0); T.eq(p[1].required, 2); T.eq(p[1].host, "running")
  T.ok(p[1].left > 500 and p[1].left <= 600, "time left: " .. p[1].left)
  local latencies = {}
  for i, who in ipairs{ "alice", "bob" } do
    local r = approve(dir, id, who, "--comment", "looks good to " .. who)
    local voted = task.now()
    T.eq(r.code, 0, r.stderr)
    T.match(r.stdout, "approved as " .. who .. " %(\"looks good to " .. who .. "\"%): " .. i .. " of 2 approvals")
    T.has(r.stdout, "bound to what was shown: sha256 " .. p[1].shown_sha256)
    local _, seen = h.line("vote: " .. who .. " approved", 10)
    latencies[i] = seen - voted
    -- the bound is 1 s; the margin is for two shared cores under ASan
    T.ok(latencies[i] < 1.5, ("%s's vote reached the host in %.3fs"):format(who, latencies[i]))
  end
  T.has(h.line("approval: 'Deploy rc-1' approved"), "alice approved: looks good to alice; bob approved")
  refused(approve(dir, id, "carol"), "gate " .. esc(id) .. "/gate/1 is already decided %(approved%)", "a vote on a decided gate")
  assert(fs.write(dir .. "/go", ""))
  local r = h.finish()
  T.eq(r.code, 0, h.text())
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "approved"); T.eq(result.gate, id .. "/gate/1"); T.eq(#result.votes, 2)
  T.eq(result.votes[1].who, "alice"); T.eq(result.votes[1].comment, "looks good to alice"); T.eq(result.votes[1].via, "command line")
  T.eq(result.votes[2].shown_sha256, result.shown_sha256)
  T.eq(fs.read(dir .. "/deployed"), "yes")
  -- run.json carries the gate with its audit trail, the chain intact
  local record = json.decode(fs.read(dir .. "/.stagehost/runs/" .. id .. "/run.json"))
  T.eq(#record.approvals, 1)
  local g = record.approvals[1]
  T.eq(g.gate, id .. "/gate/1"); T.eq(g.status, "approved"); T.eq(g.verified, true)
  T.eq(kinds(g), "requested:dana voted:alice:approved voted:bob:approved decided:approved")
  local prev = gate.genesis(g.gate)
  for _, e in ipairs(g.events) do
    T.eq(e.prev_hash, prev, "event " .. e.seq .. " carries the hash of the one before")
    prev = e.hash
  end
  T.eq(#pending(dir), 0, "nothing pending any more")
  io.stdout:write(("    vote latencies: %.3fs, %.3fs\n"):format(latencies[1], latencies[2]))
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("refused votes change nothing: self-approval, an unlisted approver, malformed input, a rejection without a reason, a run without a gate; a later vote replaces an earlier one; a rejection ends the gate and the always-stage reports it (exit 3)", function()
  local dir = project([[{ title = "Deploy rc-2", approvers = { "dana", "alice", "bob" }, required = 2, forbid = "actor", timeout = "10m" }]],
    { ["plain.lua"] = [[return require("stagehost.pipeline").define{ name = "plain", stages = { { name = "a", run = function() end } } }]] })
  assert(fs.write(dir .. "/hold", ""))
  local h = run_host(dir)
  h.line("approval requested: 'Deploy rc-2'")
  local id
  for _, p in ipairs(pending(dir)) do id = p.run end
  T.ok(id, "the run waits")
  refused(approve(dir, id, "dana"), "you started this run: someone else must approve it", "self-approval")
  refused(approve(dir, id, "mallory"), "mallory is not an approver of gate " .. esc(id) .. "/gate/1 %(approvers: dana, alice, bob%)", "unlisted")
  refused(approve(dir, id, ""), "the name is empty", "an empty name")
  refused(approve(dir, id, "al\nice"), "control character", "a name with a newline")
  refused(approve(dir, id, "alice", "--reject"), "a rejection needs a reason", "a rejection without a comment")
  refused(approve(dir, id, "alice", "--comment", ("x"):rep(3000)), "the comment is 3000 bytes long", "a comment too long")
  refused(approve(dir, "nosuchrun", "alice"), "no run 'nosuchrun'", "no such run")
  local usage = sh(dir, { "approve", id, "--as" })
  T.eq(usage.code, 2); T.match(usage.stderr, "^stagehost approve: option '%-%-as' needs a value")
  local before = audit(dir, id)
  T.eq(kinds(before.gates[1]), "requested:dana", "the gate is unchanged")
  -- alice twice: one vote, the later one
  T.eq(approve(dir, id, "alice").code, 0)
  T.eq(approve(dir, id, "alice", "--comment", "second look").code, 0)
  h.line("vote: alice approved via command line (1 of 2): second look")
  local p = pending(dir)[1]
  T.eq(p.approvals, 1, "alice counts once"); T.eq(#p.votes, 1); T.eq(p.votes[1].comment, "second look")
  -- then she rejects: that replaces her approval, and ends the gate
  local r = approve(dir, id, "alice", "--reject", "--comment", "the migration is not reversible")
  T.eq(r.code, 0, r.stderr)
  T.has(r.stdout, "the gate is decided: rejected")
  h.line("approval: 'Deploy rc-2' rejected")
  refused(approve(dir, id, "bob"), "already decided %(rejected%)", "a vote on the rejected gate")
  h.line("[notify] ▶ started")
  assert(fs.write(dir .. "/go", ""))
  local done = h.finish()
  T.eq(done.code, 3, h.text())
  T.match(fs.read(dir .. "/notified"), "^cancelled: approval rejected")
  T.eq(fs.exists(dir .. "/deployed"), false, "nothing deployed")
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "rejected"); T.eq(result.rejected_by, "alice"); T.eq(result.reason, "the migration is not reversible")
  T.eq(#result.votes, 1, "only alice's latest vote counts")
  local g = audit(dir, id).gates[1]
  T.eq(kinds(g), "requested:dana voted:alice:approved voted:alice:approved voted:alice:rejected decided:rejected")
  refused(approve(dir, id, "bob"), "run " .. esc(id) .. " ended %(cancelled%)", "a run that ended")
  -- (started after the other ended: two runs started in one second may get one id in an ASan build)
  local plain = sh(dir, { "run", "plain.lua" })
  T.eq(plain.code, 0, plain.stderr)
  local other = plain.stdout:match("^run (%S+)")
  refused(approve(dir, other, "alice"), "run " .. esc(other) .. " ended %(success%)", "a run without a gate")
  if HAVE_NOTIFY then
    local decided = last_notification(dir, "approval.decided")
    T.ok(decided, "approval.decided was sent")
    T.eq(decided.status, "failure"); T.has(decided.text, "alice rejected: the migration is not reversible")
  end
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a gate nobody decides times out: a reminder before, decision timeout, the run cancelled (exit 3), the always-stage reports it", function()
  local dir = project([[{ title = "Deploy rc-3", timeout = "2s", remind = { "1s", "1h" } }]])
  local h = run_host(dir)
  local r = h.finish()
  T.eq(r.code, 3, h.text())
  T.has(h.text(), "approval reminder: 'Deploy rc-3' times out in")
  T.has(h.text(), "approval: 'Deploy rc-3' timed out")
  T.eq(json.decode(fs.read(dir .. "/result.json")).decision, "timeout")
  T.match(fs.read(dir .. "/notified"), "^cancelled: approval timeout")
  local g = audit(dir, T.run_id(dir)).gates[1]
  T.eq(kinds(g), "requested:dana reminded decided:timeout", "one reminder (1h is before the request), then the timeout")
  T.eq(g.events[2].data.before, "1s")
  local t1 = require("stagehost.util.time").parse_iso8601(g.events[1].at)
  local t2 = require("stagehost.util.time").parse_iso8601(g.events[2].at)
  local t3 = require("stagehost.util.time").parse_iso8601(g.events[3].at)
  T.ok(t2 - t1 >= 0.9 and t2 - t1 < 1.8, ("reminded %.2fs after the request"):format(t2 - t1))
  T.ok(t3 - t1 >= 1.95 and t3 - t1 < 3, ("timed out %.2fs after the request"):format(t3 - t1))
  if HAVE_NOTIFY then
    local events = {}
    for _, m in ipairs(notifications(dir)) do
      if m.event:match("^approval%.") then events[#events + 1] = m.event .. "/" .. m.status end
    end
    T.eq(table.concat(events, " "), "approval.requested/pending approval.reminder/pending approval.decided/cancelled")
  end
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("kill -9 between two votes, then resume: both votes count and the deadline is the one first set", function()
  local dir = project([[{ title = "Deploy rc-4", approvers = { "alice", "bob", "carol" }, required = 2, timeout = "1h" }]])
  local h = run_host(dir)
  h.line("approval requested: 'Deploy rc-4'")
  local id = T.run_id(dir)
  local first = pending(dir)[1]
  T.eq(approve(dir, id, "alice").code, 0)
  h.line("vote: alice approved")
  h.kill9()
  local p = pending(dir)[1]
  T.eq(p.host, "interrupted"); T.eq(p.approvals, 1, "alice's vote is kept"); T.eq(p.deadline, first.deadline)
  -- bob votes while no host runs: kept, and decisive once the run resumes
  local r = approve(dir, id, "bob")
  T.eq(r.code, 0, r.stderr)
  T.has(r.stdout, "the gate is decided: approved — its host is gone: 'stagehost resume " .. id .. "' continues the run")
  local resumed = sh(dir, { "resume", id })
  T.eq(resumed.code, 0, resumed.stdout .. resumed.stderr)
  T.has(resumed.stdout .. resumed.stderr, "is still open ('Deploy rc-4', until")
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "approved"); T.eq(#result.votes, 2)
  T.eq(result.votes[1].who, "alice"); T.eq(result.votes[2].who, "bob")
  local g = audit(dir, id).gates[1]
  T.eq(kinds(g), "requested:dana voted:alice:approved voted:bob:approved decided:approved", "one request, no vote lost")
  T.eq(g.deadline, first.deadline, "the deadline first set")
  T.eq(g.verified, true)
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a deadline that passes while no host runs: a vote after it is refused, and resume decides timeout (cancelled, exit 3)", function()
  local dir = project([[{ title = "Deploy rc-5", timeout = "1500ms" }]])
  local h = run_host(dir)
  local _, requested = h.line("approval requested: 'Deploy rc-5'")
  h.kill9()
  local id = T.run_id(dir)
  task.sleep(math.max(0, requested + 1.7 - task.now()))
  refused(approve(dir, id, "alice"), "gate " .. esc(id) .. "/gate/1 timed out at ", "a vote after the deadline")
  local resumed = sh(dir, { "resume", id })
  T.eq(resumed.code, 3, resumed.stdout .. resumed.stderr)
  T.eq(json.decode(fs.read(dir .. "/result.json")).decision, "timeout")
  T.match(fs.read(dir .. "/notified"), "^cancelled: approval timeout")
  local g = audit(dir, id).gates[1]
  T.eq(kinds(g), "requested:dana decided:timeout")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("groups: one approver from each team (AND across groups); forbid = \"authors\" bars the author of the commit", function()
  local dir = project([[{ title = "Deploy rc-6", forbid = { "actor", "authors" },
    approvers = { { team = "sre", members = { "sam", "sue", "ann" } }, { team = "leads", members = { "lee" } } } }]])
  local git = { "git", "-C", dir, "-c", "user.name=Ann Author", "-c", "user.email=ann@example.com" }
  local function run_git(...)
    local argv = { table.unpack(git) }
    for _, a in ipairs{ ... } do argv[#argv + 1] = a end
    argv.quiet = true
    local r = proc.run(argv)
    T.eq(r.code, 0, r.stderr)
  end
  run_git("init", "-q")
  run_git("commit", "-q", "--allow-empty", "-m", "the change being deployed")
  local h = run_host(dir, { GITHUB_SHA = false })
  h.line("approval requested: 'Deploy rc-6' — 2 approvals from sam, sue, ann, lee")
  local id = T.run_id(dir)
  refused(approve(dir, id, "ann"), "you wrote commits being deployed: someone else must approve it", "the author")
  T.eq(approve(dir, id, "sam").code, 0)
  T.eq(approve(dir, id, "sue").code, 0)
  h.line("vote: sue approved via command line (sre 2/1, leads 0/1 (2 of 2))")
  local p = pending(dir)[1]
  T.eq(p.decision, nil, "two from one team are not enough")
  local list = sh(dir, { "approvals" })
  T.match(list.stdout, "sre 2/1, leads 0/1")
  local r = approve(dir, id, "lee")
  T.has(r.stdout, "the gate is decided: approved")
  T.eq(h.finish().code, 0, h.text())
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "approved"); T.eq(#result.votes, 3)
  T.ok(result.commit and #result.commit == 40, "bound to the checkout's commit")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("require_comment: a vote without a reason is refused; the comment reaches the result, the audit and approval.decided", function()
  local dir = project([[{ title = "Deploy rc-7", require_comment = true }]])
  local h = run_host(dir)
  h.line("approval requested: 'Deploy rc-7'")
  local id = T.run_id(dir)
  refused(approve(dir, id, "alice"), "this gate needs a comment with every vote", "no comment")
  refused(approve(dir, id, "alice", "--comment", "   "), "this gate needs a comment with every vote", "a blank comment")
  edit(dir, "UPDATE gate_events SET who = 'mallory' WHERE seq = 1")
  refused(approve(dir, id, "alice", "--comment", "x"), "its record was edited %(event 1 %(requested%) was edited", "a vote onto an edited record")
  edit(dir, "UPDATE gate_events SET who = 'dana' WHERE seq = 1")
  T.eq(approve(dir, id, "alice", "--comment", "dashboards are green").code, 0)
  T.eq(h.finish().code, 0, h.text())
  T.eq(json.decode(fs.read(dir .. "/result.json")).votes[1].comment, "dashboards are green")
  local g = audit(dir, id).gates[1]
  T.eq(kinds(g), "requested:dana voted:alice:approved decided:approved")
  T.eq(g.events[2].comment, "dashboards are green")
  if HAVE_NOTIFY then
    T.eq((last_notification(dir, "approval.decided") or {}).text, "alice approved: dashboards are green")
  end
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("the commit moved before the gate decided (resumed with another GITHUB_SHA): earlier votes are void and the approvers told", function()
  local dir = project([[{ title = "Deploy rc-8", approvers = { "alice", "bob" }, required = 2, timeout = "1h" }]])
  local old, new = ("a"):rep(40), ("b"):rep(40)
  local h = run_host(dir, { GITHUB_SHA = old })
  h.line("approval requested: 'Deploy rc-8'")
  local id = T.run_id(dir)
  local before = pending(dir)[1]
  T.eq(before.commit, old)
  T.eq(approve(dir, id, "alice").code, 0)
  h.line("vote: alice approved")
  h.kill9()
  local again = T.spawn_stagehost(dir, { "resume", id }, { env = { GITHUB_SHA = new } })
  again.line("earlier votes on 'Deploy rc-8' are void")
  local p = pending(dir)[1]
  T.eq(p.approvals, 0, "alice's vote was for the old commit"); T.eq(p.commit, new)
  T.ok(p.shown_sha256 ~= before.shown_sha256, "what is shown changed")
  T.eq(approve(dir, id, "alice").code, 0)
  T.eq(approve(dir, id, "bob").code, 0)
  T.eq(again.finish().code, 0, again.text())
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "approved"); T.eq(result.commit, new)
  for _, v in ipairs(result.votes) do T.eq(v.shown_sha256, p.shown_sha256, v.who .. "'s vote is bound to the new commit") end
  local g = audit(dir, id).gates[1]
  T.eq(kinds(g), "requested:dana voted:alice:approved voided voted:alice:approved voted:bob:approved decided:approved")
  T.match(g.events[3].data.reason, "the commit moved from aaaaaaaaaaaa to bbbbbbbbbbbb")
  if HAVE_NOTIFY then
    local told = last_notification(dir, "approval.requested", function(m) return m.title:find("again", 1, true) end)
    T.match(told and told.text, "the commit moved from aaaaaaaaaaaa to bbbbbbbbbbbb: earlier votes are void")
  end
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("approvals --audit: every event with who, channel and time; an edited row breaks the chain (exit 2, where it breaks)", function()
  local dir = project([[{ title = "Deploy rc-9", votes = { { who = "alice", decision = "approved", comment = "ok", via = "stage" } } }]])
  local r = sh(dir, { "run", "p.lua", "--actor", "dana" })
  T.eq(r.code, 0, r.stderr)
  local id = T.run_id(dir)
  local text = sh(dir, { "approvals", "--audit", id })
  T.eq(text.code, 0, text.stderr)
  T.match(text.stdout, "gate " .. esc(id) .. "/gate/1 — 'Deploy rc%-9' %(approved%)")
  T.match(text.stdout, "\n +1 +%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z +requested +dana +stage gate ")
  T.match(text.stdout, "\n +2 +%S+ +voted +alice +stage +approved; \"ok\"; shown %x+")
  T.match(text.stdout, "\n +3 +%S+ +decided +%- +stage gate +approved; 1 of 1 approvals")
  T.match(text.stdout, "chain: 3 events, each bound to the one before; verified")
  local good = audit(dir, id)
  T.eq(good.verified, true)
  edit(dir, "UPDATE gate_events SET comment = 'ok, and more' WHERE seq = 2")
  local bad, res = audit(dir, id)
  T.eq(res.code, 2)
  T.eq(res.stderr, ("stagehost approvals: the approval record of run %s was edited: gate %s/gate/1, event 2 (voted) was edited: its content does not match its hash\n"):format(id, id))
  T.eq(bad.verified, false); T.eq(bad.gates[1].broken_at, 2)
  local shown = sh(dir, { "approvals", "--audit", id })
  T.eq(shown.code, 2)
  T.match(shown.stdout, "\n +2 [^\n]+ <%-%- BROKEN\n")
  T.has(shown.stdout, "chain: BROKEN at event 2")
  edit(dir, "UPDATE gate_events SET comment = 'ok' WHERE seq = 2")
  T.eq(audit(dir, id).verified, true, "put back, it holds again")
  edit(dir, "DELETE FROM gate_events WHERE seq = 3")
  bad = audit(dir, id)
  T.eq(bad.verified, false); T.match(bad.gates[1].problem, "events were removed or added")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.run()
