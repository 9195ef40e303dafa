-- Waiting costs nothing, and votes come from every channel: `run --detach` records the gate and
-- exits (status waiting), approval.detach.tick resumes the run once the gate decides (never
-- twice), `approve --resume` continues it in the foreground; the terminal prompt through a real
-- pty; the GitHub issue channel against the sandbox (a checklist issue, /approve by listed
-- approvers and team members, others ignored, ETag 304s, closed with the outcome, picked up
-- again after kill -9 with no vote lost or counted twice); N of M over CLI, terminal and GitHub.
local T = require("harness")
local task = require("stagehost.task")
local fs = require("stagehost.fs")
local json = require("stagehost.json")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

-- The HTTP client keeps one timer for the whole process, made by its first request: made here,
-- before the per-test leak checks take their baselines.
do
  local sb = require("stagehost.sandbox").start{}
  require("stagehost.http").request{ url = sb.github_url .. "/rate_limit" }
  sb:close()
end

-- A pipeline: `build`, then `gate` (approval.request(OPTS), its result in result.json, a
-- decision other than approved cancels the run), then `deploy` (writes `deployed`).
local function project(opts_src)
  local dir = T.tempdir()
  assert(fs.write(dir .. "/p.lua", ([[
local pipeline = require("stagehost.pipeline")
local approval = require("stagehost.approval")
local json = require("stagehost.json")
local fs = require("stagehost.fs")
return pipeline.define{ name = "gated",
  stages = {
    { name = "build", run = function() fs.write("built", "yes") return {} end },
    { name = "gate", needs = { "build" }, run = function(ctx)
      local r = approval.request(%s)
      fs.write("result.json", json.encode(r))
      if r.decision ~= "approved" then ctx:cancel("approval " .. r.decision) end
      return r
    end },
    { name = "deploy", needs = { "gate" }, run = function() fs.write("deployed", "yes") return {} end },
  } }
]]):format(opts_src)))
  return dir
end

local function sh(dir, args, env)
  return T.stagehost(dir, args, { timeout = 60, env = env })
end

local function status(dir, id)
  local r = sh(dir, { "status", id, "--json" })
  T.eq(r.code, 0, r.stderr)
  return json.decode(r.stdout)
end

local function kinds(dir, id)
  local r = sh(dir, { "approvals", "--audit", id, "--json" })
  T.eq(r.code, 0, r.stderr)
  local g = json.decode(r.stdout).gates[1]
  local out = {}
  for i, e in ipairs(g.events) do
    out[i] = e.kind .. (e.who and (":" .. e.who) or "") .. (e.decision and (":" .. e.decision) or "")
      .. ((e.kind == "voted" and e.via) and ("@" .. e.via) or "")
  end
  return table.concat(out, " "), g
end

-- A host (argv after the binary, in dir) as T.spawn; through `script` (a real pty, TERM=xterm)
-- when opts.pty, its input then a pipe the test types into.
local function host(dir, args, opts)
  opts = opts or {}
  if not opts.pty then return T.spawn_stagehost(dir, args, { env = opts.env or {} }) end
  local words = { STAGEHOST }
  for _, a in ipairs(args) do words[#words + 1] = "'" .. a .. "'" end
  local env = opts.env or {}
  env.TERM = "xterm"
  local self = T.spawn{ "script", "-qfec", table.concat(words, " "), "/dev/null", stdin = true, cwd = dir, env = env }
  function self.type(text) assert(self.h:write(text)) end
  local finish = self.finish
  function self.finish()
    self.h:close_stdin()
    return finish()
  end
  return self
end

-- ---- the primitives: a directory watch, the terminal reader ----

T.test("fswatch: a write in the directory wakes a wait at once; with no change it waits (bounded by task.timeout); a missing directory is a result, not a raise", function()
  local fswatch = require("stagehost.core.fswatch")
  local dir = T.tempdir()
  local w <close> = assert(fswatch.open(dir))
  T.eq(task.timeout(0.2, w.wait, w), false, "nothing changed: the wait is still waiting after 0.2 s")
  local writer = task.spawn(function()
    task.sleep(0.1)
    assert(fs.write(dir .. "/state.db-wal", "x"))
  end)
  local t0 = task.now()
  T.eq(task.timeout(10, w.wait, w), true)
  T.ok(task.now() - t0 < 2, "woken by the write, not by the bound")
  writer:join()
  assert(fs.write(dir .. "/again", "y"))
  task.sleep(0.05)
  T.eq(w:wait(), true, "a change since the last wait: at once")
  local none, msg, code = fswatch.open(dir .. "/missing")
  T.eq(none, nil); T.eq(code, "ENOENT"); T.match(msg, "^fswatch.open: .*missing")
  w:close()
  T.raises(function() w:wait() end, "watcher:wait: the watcher is closed")
  fs.remove(dir, { recursive = true })
end)

T.test("tty: with standard input not a terminal, read_line says so as a result; is_tty says no", function()
  local r = T.stagehost("/tmp", { "-e", [[
local tty = require("stagehost.core.tty")
local line, msg, code = tty.read_line()
print(tty.is_tty(), line, code, msg)
tty.close()]] }, { stdin = "typed\n" })
  T.eq(r.code, 0, r.stderr)
  T.eq(r.stdout, "false\tnil\tENOTTY\ttty.read_line: standard input is not a terminal\n")
end)

-- ---- run --detach, detach.tick, approve --resume ----

T.test("run --detach: the gate is recorded, the run is 'waiting' and the host exits 0 saying how to go on; detach.tick resumes it once the gate decides, and only once", function()
  local dir = project([[{ title = "Deploy rc-1", checklist = "- [x] tests pass\n", approvers = { "alice", "bob", "carol" },
    required = 2, forbid = "actor", timeout = "1h" }]])
  local r = sh(dir, { "run", "p.lua", "--detach", "--actor", "dana" })
  T.eq(r.code, 0, r.stdout .. r.stderr)
  local id = T.run_id(dir)
  T.has(r.stdout, "run " .. id .. ": waiting for approval; this host leaves, nothing keeps running")
  T.has(r.stdout, "gate " .. id .. "/gate/1: 'Deploy rc-1', until ")
  T.has(r.stdout, "stagehost approve " .. id)
  T.has(r.stdout, "stagehost resume " .. id .. " once the gate has decided")
  T.has(r.stdout, "'stagehost approve " .. id .. " --resume'")
  T.has(r.stdout, "'stagehost serve' continues it")
  local st = status(dir, id)
  T.eq(st.status, "waiting")
  T.eq(st.stages[1].status, "success"); T.eq(st.stages[2].status, "waiting"); T.eq(st.stages[3].status, "pending")
  T.eq(json.decode(fs.read(dir .. "/.stagehost/runs/" .. id .. "/run.json")).status, "waiting", "run.json says waiting")
  T.eq(fs.exists(dir .. "/deployed"), false, "nothing after the gate ran")
  local p = json.decode(sh(dir, { "approvals", "--json" }).stdout)
  T.eq(#p, 1); T.eq(p[1].host, "waiting"); T.eq(p[1].approvals, 0)

  local detach = require("stagehost.approval.detach")
  local store = require("stagehost.pipeline.store").open(dir .. "/.stagehost")
  local state = { state_dir = dir .. "/.stagehost" }
  T.eq(#detach.tick(store, state), 0, "an undecided gate: nothing resumes")
  local v = sh(dir, { "approve", id, "--as", "alice" })
  T.eq(v.code, 0, v.stderr)
  T.has(v.stdout, "the run is detached: the vote is kept; 'stagehost resume " .. id .. "' continues the run once the gate decides")
  T.eq(#detach.tick(store, state), 0, "1 of 2: still nothing")
  v = sh(dir, { "approve", id, "--as", "bob" })
  T.eq(v.code, 0, v.stderr)
  T.has(v.stdout, "the gate is decided: approved — the run is detached: 'stagehost resume " .. id .. "' continues the run")
  local started = detach.tick(store, state)
  T.eq(#started, 1); T.eq(started[1].run, id); T.eq(started[1].decision, "approved"); T.eq(started[1].gate, id .. "/gate/1")
  T.eq(#detach.tick(store, state), 0, "not twice while the first resume runs")
  local _, done = started[1].task:join()
  T.eq(done.code, 0, fs.read(dir .. "/.stagehost/runs/" .. id .. "/resume.log") or "")
  T.eq(#detach.tick(store, state), 0, "a finished run is not resumed again")
  store:close()
  T.eq(status(dir, id).status, "success")
  T.eq(fs.read(dir .. "/deployed"), "yes")
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "approved"); T.eq(#result.votes, 2)
  local k, g = kinds(dir, id)
  T.eq(k, "requested:dana voted:alice:approved@command line voted:bob:approved@command line decided:approved",
    "one request: the resumed stage found the gate")
  T.eq(g.verified, true)
  T.has(fs.read(dir .. "/.stagehost/runs/" .. id .. "/resume.log"), "run " .. id .. ": success")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a two-process race: a second resume of a run another host has claimed is refused (exit 2), the run goes on once", function()
  local dir = project([[{ title = "Deploy rc-1b", approvers = { "alice" }, timeout = "1h" }]])
  T.eq(sh(dir, { "run", "p.lua", "--detach", "--actor", "dana" }).code, 0)
  local id = T.run_id(dir)
  T.eq(sh(dir, { "approve", id, "--as", "alice" }).code, 0)
  local a = task.spawn(sh, dir, { "resume", id })
  local b = task.spawn(sh, dir, { "resume", id })
  local _, ra = a:join()
  local _, rb = b:join()
  local codes = { ra.code, rb.code }
  table.sort(codes)
  T.eq(codes[1], 0, ra.stderr .. rb.stderr); T.eq(codes[2], 2, "the loser is refused")
  local loser = ra.code == 2 and ra.stderr or rb.stderr
  T.ok(loser:find("is still running", 1, true) or loser:find("already ended", 1, true), loser)
  T.eq(status(dir, id).status, "success")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("approve --resume: an undecided gate says how many votes are missing and exits 0 without resuming; the deciding vote continues the run in the foreground", function()
  local dir = project([[{ title = "Deploy rc-2", approvers = { "alice", "bob" }, required = 2, timeout = "1h" }]])
  T.eq(sh(dir, { "run", "p.lua", "--detach", "--actor", "dana" }).code, 0)
  local id = T.run_id(dir)
  local r = sh(dir, { "approve", id, "--as", "alice", "--resume" })
  T.eq(r.code, 0, r.stderr)
  T.has(r.stdout, "1 more approval is needed: not resuming yet")
  T.eq(status(dir, id).status, "waiting")
  r = sh(dir, { "approve", id, "--as", "bob", "--resume", "--comment", "ship it" })
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.has(r.stdout, "the gate is decided: approved — continuing the run here")
  T.match(r.stdout, "run " .. id:gsub("%p", "%%%0") .. ": success")
  T.eq(fs.read(dir .. "/deployed"), "yes")
  T.eq(status(dir, id).status, "success")
  fs.remove(dir, { recursive = true })

  -- a rejection decides too: the resumed run is cancelled (exit 3)
  dir = project([[{ title = "Deploy rc-2b", approvers = { "alice" }, timeout = "1h" }]])
  T.eq(sh(dir, { "run", "p.lua", "--detach", "--actor", "dana" }).code, 0)
  id = T.run_id(dir)
  r = sh(dir, { "approve", id, "--as", "alice", "--reject", "--comment", "not today", "--resume" })
  T.eq(r.code, 3, r.stdout .. r.stderr)
  T.eq(json.decode(fs.read(dir .. "/result.json")).decision, "rejected")
  T.eq(fs.exists(dir .. "/deployed"), false)
  T.eq(status(dir, id).status, "cancelled")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a deadline that passes while a detached run waits: detach.tick resumes it and the gate times out (cancelled, exit 3)", function()
  local dir = project([[{ title = "Deploy rc-3", approvers = { "alice" }, timeout = "1500ms" }]])
  local started_at = task.now()
  T.eq(sh(dir, { "run", "p.lua", "--detach", "--actor", "dana" }).code, 0)
  local id = T.run_id(dir)
  local detach = require("stagehost.approval.detach")
  local store = require("stagehost.pipeline.store").open(dir .. "/.stagehost")
  local state = { state_dir = dir .. "/.stagehost" }
  T.eq(#detach.tick(store, state), 0, "before the deadline")
  task.sleep(math.max(0, started_at + 2 - task.now()))
  local started = detach.tick(store, state)
  T.eq(#started, 1); T.eq(started[1].decision, "timeout")
  local _, done = started[1].task:join()
  store:close()
  T.eq(done.code, 3)
  T.eq(json.decode(fs.read(dir .. "/result.json")).decision, "timeout")
  T.eq(status(dir, id).status, "cancelled")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- the terminal ----

T.test("terminal: under a pty the checklist is shown and 'approve? [y/N/c(omment)]' is answered as the OS user, with a comment; the actor is not asked and waits for the others", function()
  local dir = project([[{ title = "Deploy rc-4", checklist = "- [x] tests pass\n- [x] changelog", approvers = { "alice", "bob" },
    forbid = "actor", timeout = "1h" }]])
  local h = host(dir, { "run", "p.lua", "--actor", "dana" }, { pty = true, env = { USER = "alice", GITHUB_ACTOR = false } })
  h.line("approval needed: Deploy rc-4")
  h.line("- [x] changelog")
  h.type("c\n")
  h.type("checked the staging smoke run\n")
  h.type("y\n")
  h.line("approved as alice: 1 of 1 approvals — the gate is decided: approved")
  h.line("approval 'Deploy rc-4': approved")
  local r = h.finish()
  T.eq(r.code, 0, h.text())
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.votes[1].who, "alice"); T.eq(result.votes[1].via, "terminal")
  T.eq(result.votes[1].comment, "checked the staging smoke run")
  fs.remove(dir, { recursive = true })

  -- the OS user is the run's actor: no prompt, one line why; a vote from elsewhere decides
  dir = project([[{ title = "Deploy rc-5", approvers = { "alice", "dana" }, forbid = "actor", timeout = "1h" }]])
  h = host(dir, { "run", "p.lua", "--actor", "dana" }, { pty = true, env = { USER = "dana", GITHUB_ACTOR = false } })
  h.line("you (dana) cannot vote on this gate here: you started this run: someone else must approve it; waiting for the other channels")
  local id = T.run_id(dir)
  local v = sh(dir, { "approve", id, "--as", "alice" })
  T.eq(v.code, 0, v.stderr)
  h.line("approval 'Deploy rc-5': approved")
  r = h.finish()
  T.eq(r.code, 0, h.text())
  T.eq(h.text():find("approve? [y/N", 1, true), nil, "no prompt for the actor")
  fs.remove(dir, { recursive = true })

  -- a prompt still open when another channel decides: it ends, the reader is let go, the run goes on
  dir = project([[{ title = "Deploy rc-5b", approvers = { "alice", "bob" }, timeout = "1h" }]])
  h = host(dir, { "run", "p.lua", "--actor", "dana" }, { pty = true, env = { USER = "bob", GITHUB_ACTOR = false } })
  h.line("approval needed: Deploy rc-5b")
  task.sleep(0.3) -- the prompt is reading
  id = T.run_id(dir)
  T.eq(sh(dir, { "approve", id, "--as", "alice" }).code, 0)
  h.line("approval 'Deploy rc-5b': approved")
  r = h.finish()
  T.eq(r.code, 0, h.text())
  T.eq(json.decode(fs.read(dir .. "/result.json")).votes[1].via, "command line")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

-- ---- GitHub ----

local function sandbox()
  local sb = require("stagehost.sandbox").start{ github = { repos = { "acme/app" },
    tokens = { "t-bot", "t-alice", "t-eve", "t-carol" } } }
  sb.state.github.token_users = { ["t-alice"] = "alice", ["t-eve"] = "eve", ["t-carol"] = "carol" }
  sb.state.github.teams = { ["acme/sre"] = { "carol", "frank" } }
  local env = { GITHUB_API_URL = sb.github_url, GITHUB_TOKEN = "t-bot", GITHUB_REPOSITORY = "acme/app",
    STAGEHOST_GITHUB_POLL = "0.2", GITHUB_ACTOR = false, GITHUB_SHA = false }
  local function as(token)
    return require("stagehost.github").client{ token = token, repo = "acme/app", api_url = sb.github_url }
  end
  return sb, env, as
end

T.test("github: an issue with the checklist; /approve by a listed approver and by a member of a listed team decide; an unlisted one is ignored with one log line; polled with ETags (304s); closed with the outcome; kill -9 in between loses and doubles nothing", function()
  local sb, env, as = sandbox()
  local dir = project([[{ title = "Deploy rc-6", checklist = "- [x] migrations reviewed", approvers = { "alice", "@acme/sre" },
    required = 2, timeout = "1h", channels = { "cli", "github" } }]])
  local h = host(dir, { "run", "p.lua", "--actor", "dana" }, { env = env })
  h.line("approval github: issue #1 asks for the approval")
  local id = T.run_id(dir)
  local issue = sb.state.github.repos["acme/app"].issues[1]
  T.eq(issue.title, "Approval needed: Deploy rc-6")
  T.has(issue.body, "- [x] migrations reviewed")
  T.has(issue.body, "`/approve`")
  T.has(issue.body, "stagehost approve " .. id)
  T.has(issue.body, "alice, @acme/sre")
  task.sleep(0.8) -- a few polls of an unchanged issue
  -- polled while nothing changed: conditional requests answered 304, which cost no rate limit
  local n304 = 0
  for _, req in ipairs(sb.requests) do
    if req.method == "GET" and req.path == "/repos/acme/app/issues/1/comments" and req.status == 304 then n304 = n304 + 1 end
  end
  T.ok(n304 > 0, "the sandbox answered 304 to the comment polls: " .. n304 .. "\n" .. h.text())
  local used = sb.state.github.rate.used
  task.sleep(0.6)
  T.eq(sb.state.github.rate.used, used, "304s cost no rate limit")
  as("t-eve"):comment(1, "/approve me too")
  h.line("eve's /approve on issue #1 is ignored: not an approver of gate " .. id .. "/gate/1")
  as("t-alice"):comment(1, "/approve lgtm")
  h.line("vote: alice approved via github (1 of 2): lgtm")

  h.kill9() -- between two votes
  local r = sh(dir, { "status", id })
  T.has(r.stdout, "interrupted")
  h = host(dir, { "resume", id }, { env = env })
  h.line("approval github: issue #1 still asks for the approval")
  as("t-carol"):comment(1, "/approve")
  h.line("approval: 'Deploy rc-6' approved")
  local done = h.finish()
  T.eq(done.code, 0, h.text())
  T.eq(#sb.state.github.repos["acme/app"].issues, 1, "one issue, picked up again")
  T.eq(issue.state, "closed"); T.eq(issue.state_reason, "completed")
  local comments = sb.state.github.repos["acme/app"].comments[1]
  T.has(comments[#comments].body, "The gate is decided: **approved**")
  local k, g = kinds(dir, id)
  T.eq(k, "requested:dana voted:alice:approved@github voted:carol:approved@github decided:approved",
    "alice's vote kept and not counted again; eve's ignored")
  T.eq(g.events[3].data.member_of, "@acme/sre", "carol counted through the team")
  T.eq(fs.read(dir .. "/deployed"), "yes")
  sb:close()
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("3 of 3 over three channels at once: alice from the command line, bob at the terminal, carol on GitHub", function()
  local sb, env, as = sandbox()
  local dir = project([[{ title = "Deploy rc-7", approvers = { "alice", "bob", "carol" }, required = 3, forbid = "actor",
    timeout = "1h", channels = { "cli", "terminal", "github" } }]])
  env.USER = "bob"
  local h = host(dir, { "run", "p.lua", "--actor", "dana" }, { pty = true, env = env })
  h.line("approval needed: Deploy rc-7") -- (the live view keeps the log lines off the terminal)
  local deadline = task.now() + 20
  while not (sb.state.github.repos["acme/app"].issues or {})[1] do
    if task.now() > deadline then error("no issue was opened:\n" .. h.text()) end
    task.sleep(0.05)
  end
  local id = T.run_id(dir)
  local v = sh(dir, { "approve", id, "--as", "alice" })
  T.eq(v.code, 0, v.stderr)
  T.has(v.stdout, "1 of 3 approvals")
  as("t-carol"):comment(1, "/approve")
  -- the vote from GitHub is in the database before bob answers
  deadline = task.now() + 20
  while (json.decode(sh(dir, { "approvals", "--json" }).stdout)[1] or {}).approvals ~= 2 do
    if task.now() > deadline then error("carol's vote did not arrive:\n" .. h.text()) end
    task.sleep(0.1)
  end
  h.type("y\n")
  h.line("approved as bob: 3 of 3 approvals — the gate is decided: approved")
  local r = h.finish()
  T.eq(r.code, 0, h.text())
  local result = json.decode(fs.read(dir .. "/result.json"))
  T.eq(result.decision, "approved")
  local via = {}
  for _, vote in ipairs(result.votes) do via[vote.who] = vote.via end
  T.eq(via.alice, "command line"); T.eq(via.bob, "terminal"); T.eq(via.carol, "github")
  T.eq(sb.state.github.repos["acme/app"].issues[1].state, "closed")
  sb:close()
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.run()
