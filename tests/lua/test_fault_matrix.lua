-- The staging flow (scripts/staging.lua on examples/webapp) against a flaky world, in the
-- sandbox: throttling and 5xx bursts on every kind of call, connections cut mid-response,
-- a stack that rolls back, Amplify jobs that never finish or fail, GitHub's rate limits, and
-- notification channels that are down. Each test asserts how the run ends, what the sandbox's
-- request log shows (the retries, and that nothing that must happen once happened twice) and
-- the notification a webhook receiver got (X-Stagehost-Event and the phase).
-- Faults come from STAGEHOST_SANDBOX_FAULTS (sandbox/init.lua; cut = true serves the request and
-- then cuts its answer half-way). A full disk is a small tmpfs (mounting needs root, as in CI);
-- a clock jump is Debian's libfaketime under the host with only the wall clock moved.
-- One state directory for the file: the first test deploys, the others start --from the stage
-- the fault is in and reuse what came before.
local T = require("harness")
local flow = require("flow")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local http = require("stagehost.http")
local json = require("stagehost.json")
local task = require("stagehost.task")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))
local STATE = T.tempdir()
local unique = tostring(os.time())

local APP = flow.app_copy(SOURCE)
-- every run has this tag and commit: --from reuses the approval of an earlier run of the same
-- tag and commit (GITHUB_SHA pins it: the checkout may move on while the file runs)
local TAG = "rc-7.0.0"
local COMMIT = proc.run{ "git", "-C", SOURCE, "rev-parse", "HEAD", quiet = true }.stdout:match("%x+") or ("0"):rep(40)

-- The webhook receiver: every delivery {event, headers, body (decoded)}, in order.
local received = {}
local sink = http.serve{ idle_timeout = 0.3, handler = function(req)
  received[#received + 1] = { event = req.headers["x-stagehost-event"], headers = req.headers, body = json.decode(req.body or "") }
  return { status = 204 }
end }
local SINK_URL = ("http://127.0.0.1:%d/hooks/deploys"):format(sink.port)

-- A port nothing listens on (bound, then released).
local function closed_port()
  local s = http.serve{ handler = function() return { status = 500 } end }
  local port = s.port
  s:close()
  return port
end

-- The argv of `stagehost run scripts/staging.lua --sandbox --state STATE --tag TAG ARGS...` on
-- the app's copy, with the given faults and environment (false unsets a variable); state, when
-- given, instead of STATE.
local function staging_argv(args, faults, env, state)
  local argv = { STAGEHOST, "run", SOURCE .. "/scripts/staging.lua", "--sandbox", "--state", state or STATE, "--tag", TAG }
  local has_app = false
  for _, a in ipairs(args) do
    argv[#argv + 1] = a
    if a:match("^app=") then has_app = true end
  end
  if not has_app then argv[#argv + 1], argv[#argv + 2] = "--var", "app=" .. APP end
  argv.env = { STAGEHOST_BIN = STAGEHOST, GITHUB_ACTIONS = false, NO_COLOR = "1", STAGEHOST_SANDBOX_STEP = "0.02",
    GITHUB_SHA = COMMIT, DEPLOY_WEBHOOK_URL = SINK_URL, DEPLOY_WEBHOOK_SECRET = "fault-matrix-secret",
    STAGEHOST_SANDBOX_FAULTS = faults and json.encode(faults) or false }
  for k, v in pairs(env or {}) do argv.env[k] = v end
  return argv
end

-- What the webhook receiver got after its first `first` deliveries.
local function deliveries_since(first)
  local out = {}
  for i = first + 1, #received do out[#out + 1] = received[i] end
  return out
end

-- Run staging (staging_argv) -> the result with .id, .out (stdout and stderr) and .deliveries
-- (what the webhook receiver got meanwhile)
local function run(args, faults, env)
  local argv = staging_argv(args, faults, env)
  argv.timeout = 300
  local first = #received
  local r = proc.run(argv)
  r.out = r.stdout .. r.stderr
  r.id = r.stdout:match("^run (%S+)") or error("no run id in: " .. r.out:sub(1, 600))
  r.deliveries = deliveries_since(first)
  return r
end

local function stagehost(...)
  local argv = { STAGEHOST, ... }
  argv[#argv + 1], argv[#argv + 2], argv.timeout = "--state", STATE, 300
  argv.env = { NO_COLOR = "1", STAGEHOST_SANDBOX_FAULTS = false, GITHUB_SHA = COMMIT }
  return proc.run(argv)
end

local function status(id) return flow.status(stagehost, id) end
local function artifact(id, stage, name) return flow.artifact(STATE, id, stage, name) end

-- The sandbox's request log: entries of service (and action) after the first `from` entries.
local function requests(service, action, from)
  local out = {}
  for i, r in ipairs(flow.requests(STATE)) do
    if i > (from or 0) and r.service == service and (action == nil or r.action == action) then out[#out + 1] = r end
  end
  return out
end
local function mark() return #flow.requests(STATE) end

-- The run's deploy.* notification: what the notify stage recorded and what the receiver got
-- (one delivery, its event header the event, the phase in its body).
local function notified(r, event, phase)
  local sent = assert(json.decode(artifact(r.id, "notify", "notification.json") or ""), "no notification.json")
  T.eq(sent.event, event, "notification.json event")
  T.eq(sent.phase, phase, "notification.json phase")
  local got
  for _, d in ipairs(r.deliveries) do
    if d.event and d.event:match("^deploy%.") then
      T.eq(got, nil, "one deploy.* delivery")
      got = d
    end
  end
  T.ok(got, "the webhook receiver got a deploy.* notification: " .. r.out:sub(-800))
  T.eq(got.event, event, "X-Stagehost-Event")
  T.match(got.headers["x-stagehost-signature-256"] or "", "^sha256=%x+$")
  T.eq(got.body.event, event)
  T.eq(got.body.phase, phase, "the phase the receiver got")
  return sent, got
end

-- Take the GitHub release of tag out of the sandbox's saved world (no run is going on: the
-- emulator has no DELETE for releases), so the next run creates it again.
local function delete_release(tag)
  local sb = require("stagehost.sandbox").start{ persist = STATE .. "/sandbox" }
  local ok, err = pcall(function()
    for _, repo in pairs(sb.state.github.repos) do
      for i = #(repo.releases or {}), 1, -1 do
        if repo.releases[i].tag_name == tag then table.remove(repo.releases, i) end
      end
    end
    require("stagehost.sandbox.persist").save(sb)
  end)
  sb:close()
  if not ok then error(err, 0) end
end

local function throttle(service, action, code, times)
  return { service = service, action = action, code = code, times = times, message = "Rate exceeded" }
end

local GH_TAG = "GET /repos/{owner}/{repo}/releases/tags/{tag}"
local GH_CREATE = "POST /repos/{owner}/{repo}/releases"

T.test("baseline: the whole flow deploys and the receiver gets deploy.success", function()
  local r = run{ "--auto-approve" }
  T.eq(r.code, 0, r.out)
  T.eq(status(r.id).status, "success")
  notified(r, "deploy.success", nil)
end, { timeout = 300 })

T.test("throttling on every call kind (CloudFormation, Amplify, S3, GitHub): retried, the run succeeds", function()
  delete_release(TAG) -- so that this run creates it
  local from = mark()
  local r = run({ "--auto-approve", "--from", "validate", "--var", "OAuthClientId=throttled-" .. unique }, {
    throttle("cloudformation", "DescribeChangeSet", "Throttling", 2),
    throttle("cloudformation", "ExecuteChangeSet", "Throttling", 1),
    throttle("cloudformation", "DescribeStacks", "Throttling", 2),
    throttle("amplify", "StartJob", "TooManyRequestsException", 1),
    throttle("amplify", "GetJob", "TooManyRequestsException", 2),
    throttle("s3", "HeadObject", "SlowDown", 1),
    -- GitHub's secondary limit: 403 or 429 with Retry-After, on a read and on the create
    { service = "github", action = GH_TAG, status = 403, headers = { ["Retry-After"] = "1" },
      message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again." },
    { service = "github", action = GH_CREATE, status = 429, headers = { ["Retry-After"] = "1" },
      message = "You have exceeded a secondary rate limit." },
  })
  T.eq(r.code, 0, r.out)
  T.eq(status(r.id).status, "success")
  -- one throttled ExecuteChangeSet, then the one that ran: two requests, one execution
  T.eq(#requests("cloudformation", "ExecuteChangeSet", from), 2, "ExecuteChangeSet: throttled once, then executed")
  T.eq(#requests("amplify", "StartJob", from), 2, "StartJob: throttled once, then started")
  T.ok(#requests("cloudformation", "DescribeChangeSet", from) >= 3, "DescribeChangeSet retried")
  T.ok(#requests("amplify", "GetJob", from) >= 3, "GetJob retried")
  local tags = requests("github", GH_TAG, from)
  T.eq(#tags, 2, "the release lookup: refused once, then answered")
  T.eq(tags[1].status, 403)
  local creates = requests("github", GH_CREATE, from)
  T.eq(#creates, 2, "the create: refused once (429), then created once")
  T.eq(creates[1].status, 429); T.eq(creates[2].status, 201)
  T.match(r.out, "aws: cloudformation ExecuteChangeSet: retrying in [%d.]+s %(attempt 2 of 5%): Throttling %(HTTP 400%)")
  T.match(r.out, "TooManyRequestsException %(HTTP 429%)")
  -- a HEAD answer has no body, so S3's SlowDown reaches the client as a bare 503
  T.match(r.out, "aws: s3 HeadObject: retrying in [%d.]+s %(attempt 2 of 5%): %w+ %(HTTP 503%)")
  notified(r, "deploy.success", nil)
end, { timeout = 300 })

T.test("STS throttled (the flow makes no STS call in the sandbox): GetCallerIdentity is retried", function()
  T.with_sandbox({ step_seconds = 0.02 }, function(sb)
    sb:fail_next{ service = "sts", action = "GetCallerIdentity", code = "Throttling", times = 2 }
    sb:fail_next{ service = "sts", action = "GetCallerIdentity", code = "ServiceUnavailable", status = 503, times = 1 }
    local who = require("stagehost.aws").sts{ retry_base = 0.05 }:get_caller_identity()
    T.match(tostring(who.account), "^%d+$")
    T.eq(T.sandbox_requests(sb, "sts", "GetCallerIdentity"), 4, "three refusals, then the answer")
  end, true)
end)

T.test("5xx bursts on reads of every service: retried, the run succeeds", function()
  local from = mark()
  local r = run({ "--auto-approve", "--from", "validate" }, {
    { service = "cloudformation", action = "ValidateTemplate", code = "InternalFailure", status = 500, times = 2 },
    { service = "cloudformation", action = "DescribeStacks", code = "ServiceUnavailable", status = 503, times = 2 },
    { service = "amplify", action = "GetBranch", code = "InternalFailureException", status = 500, times = 2 },
    { service = "s3", action = "HeadObject", code = "InternalError", status = 500, times = 2 },
    { service = "github", action = GH_TAG, status = 502, message = "Server Error", times = 2 },
  })
  T.eq(r.code, 0, r.out)
  T.eq(#requests("cloudformation", "ValidateTemplate", from), 3, "ValidateTemplate: two 500s, then answered")
  local tags = requests("github", GH_TAG, from)
  T.eq(#tags, 3); T.eq(tags[1].status, 502); T.eq(tags[3].status, 200)
  notified(r, "deploy.success", nil)
end, { timeout = 300 })

T.test("connections cut mid-response on idempotent calls: retried, the run succeeds", function()
  local from = mark()
  local r = run({ "--auto-approve", "--from", "validate" }, {
    { service = "cloudformation", action = "ValidateTemplate", cut = true },
    { service = "cloudformation", action = "DescribeStacks", cut = true },
    { service = "amplify", action = "GetBranch", cut = true },
    { service = "github", action = GH_TAG, cut = true },
  })
  T.eq(r.code, 0, r.out)
  T.match(r.out, "connection cut mid%-response to cloudformation ValidateTemplate")
  T.eq(#requests("cloudformation", "ValidateTemplate", from), 2, "cut once, then answered")
  T.eq(#requests("github", GH_TAG, from), 2, "cut once, then answered")
  T.match(r.out, "TransportError")
  notified(r, "deploy.success", nil)
end, { timeout = 300 })

T.test("ExecuteChangeSet's answer cut: not sent again; the stage asks the change set and waits for the stack", function()
  local from = mark()
  local r = run({ "--auto-approve", "--from", "validate", "--var", "OAuthClientId=cut-execute-" .. unique },
    { { service = "cloudformation", action = "ExecuteChangeSet", cut = true } })
  T.eq(r.code, 0, r.out)
  T.eq(#requests("cloudformation", "ExecuteChangeSet", from), 1, "one ExecuteChangeSet: a cut non-idempotent call is not repeated")
  T.match(r.out, "ExecuteChangeSet's answer was lost %(.-%), but the change set is EXECUTE_")
  local st = status(r.id)
  T.eq(st.stages["deploy-infrastructure"].status, "success")
  notified(r, "deploy.success")
end, { timeout = 300 })

T.test("StartJob's answer cut: not sent again; the stage watches the job Amplify started", function()
  local from = mark()
  local r = run({ "--auto-approve", "--from", "deploy-frontend" }, { { service = "amplify", action = "StartJob", cut = true } })
  T.eq(r.code, 0, r.out)
  T.eq(#requests("amplify", "StartJob", from), 1, "one StartJob")
  T.match(r.out, "StartJob's answer was lost %(.-%), but Amplify started job %d+: watching it")
  T.eq(status(r.id).stages["deploy-frontend"].status, "success")
  notified(r, "deploy.success")
end, { timeout = 300 })

T.test("CreateRelease's answer cut: not sent again; the next run updates that release instead of making another", function()
  delete_release(TAG)
  local from = mark()
  local r = run({ "--auto-approve", "--from", "mark-release-ready" }, { { service = "github", action = GH_CREATE, cut = true } })
  T.eq(r.code, 1, r.out)
  T.eq(#requests("github", GH_CREATE, from), 1, "one create")
  T.eq(status(r.id).stages["mark-release-ready"].status, "failure")
  notified(r, "deploy.failure", "release")
  local again = run{ "--auto-approve", "--from", "mark-release-ready" }
  T.eq(again.code, 0, again.out)
  T.eq(#requests("github", GH_CREATE, from), 1, "still one create: the release the cut call made was found and updated")
  T.ok(#requests("github", "PATCH /repos/{owner}/{repo}/releases/{release_id}", from) >= 1, "updated")
end, { timeout = 300 })

T.test("a resource that fails: the stack rolls back; infrastructure failure naming the resource and its reason", function()
  -- a copy of the app whose template marks a resource to fail (the sandbox's stagehost:fail)
  local app = flow.app_copy(SOURCE)
  local template = assert(fs.read(app .. "/template.yaml"))
  -- a plain CloudFormation resource (the SAM transform keeps it as it is), first to be created
  local resource = "FaultyQueue"
  local patched, n = template:gsub("\nResources:\n", ("\nResources:\n  %s:\n    Type: AWS::SQS::Queue\n    Metadata:\n"
    .. "      stagehost:fail: \"quota exceeded for %s\"\n"):format(resource, resource), 1)
  T.eq(n, 1, "the template has a Resources section")
  assert(fs.write(app .. "/template.yaml", patched))
  local stack = "webapp-rollback-" .. unique
  local r = run({ "--auto-approve", "--from", "validate", "--var", "app=" .. app, "--var", "stack=" .. stack }, nil)
  fs.remove(app, { recursive = true })
  T.eq(r.code, 1, r.out)
  local st = status(r.id)
  local err = st.stages["deploy-infrastructure"].error
  T.eq(st.stages["deploy-infrastructure"].status, "failure")
  T.match(err, "stack " .. stack:gsub("%-", "%%-") .. " ended ROLLBACK_COMPLETE")
  T.has(err, resource)
  T.has(err, "quota exceeded for " .. resource)
  local sent = notified(r, "deploy.failure", "infrastructure")
  T.has(sent.message, "quota exceeded for " .. resource)
end, { timeout = 300 })

T.test("a change set stuck in CREATE_PENDING: validate fails when its wait is over, nothing executed", function()
  local from = mark()
  local r = run({ "--auto-approve", "--from", "validate", "--var", "OAuthClientId=stuck-" .. unique,
    "--var", "change_set_timeout=1" }, { { service = "cloudformation", action = "CreateChangeSet", outcome = "PENDING" } })
  T.eq(r.code, 1, r.out)
  local st = status(r.id)
  T.eq(st.stages.validate.status, "failure")
  T.match(st.stages.validate.error, "still CREATE_PENDING after 1s")
  T.eq(#requests("cloudformation", "ExecuteChangeSet", from), 0)
  notified(r, "deploy.failure", "validation")
end, { timeout = 300 })

for _, case in ipairs{
  { "PENDING", { "--var", "amplify_pending_timeout=1" }, "PENDING" },
  { "FAILED", {}, "ended FAILED" },
  { "CANCELLED", {}, "ended CANCELLED" },
} do
  T.test(("an Amplify job %s: frontend failure"):format(case[1]), function()
    local args = { "--auto-approve", "--from", "deploy-frontend" }
    for _, a in ipairs(case[2]) do args[#args + 1] = a end
    local r = run(args, { { service = "amplify", action = "StartJob", outcome = case[1] } })
    T.eq(r.code, 1, r.out)
    local st = status(r.id)
    T.eq(st.stages["deploy-frontend"].status, "failure")
    T.match(st.stages["deploy-frontend"].error, case[3])
    T.eq(st.stages["integration-tests"].status, "skipped")
    notified(r, "deploy.failure", "frontend")
  end, { timeout = 300 })
end

T.test("GitHub's primary rate limit: a reset within max_wait is waited out; a later one fails clearly", function()
  local soon = os.time() + 2
  local t0 = task.now()
  local r = run({ "--auto-approve", "--from", "mark-release-ready" }, {
    { service = "github", action = GH_TAG, status = 403, message = "API rate limit exceeded for user ID 1.",
      headers = { ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Reset"] = tostring(soon) } } })
  T.eq(r.code, 0, r.out)
  T.ok(task.now() - t0 >= 1, "it waited for the reset")
  notified(r, "deploy.success", nil)
  local late = run({ "--auto-approve", "--from", "mark-release-ready" }, {
    { service = "github", action = GH_TAG, status = 403, message = "API rate limit exceeded for user ID 1.",
      headers = { ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Reset"] = tostring(os.time() + 7200) } } })
  T.eq(late.code, 1, late.out)
  local err = status(late.id).stages["mark-release-ready"].error
  T.match(err, "API rate limit exceeded; it resets at .* more than max_wait = 900 s")
  notified(late, "deploy.failure", "release")
end, { timeout = 300 })

T.test("GitHub's secondary rate limit beyond max_wait: fails at once, saying so", function()
  local t0 = task.now()
  local r = run({ "--auto-approve", "--from", "mark-release-ready" }, {
    { service = "github", action = GH_TAG, status = 403, headers = { ["Retry-After"] = "3600" },
      message = "You have exceeded a secondary rate limit." } })
  T.eq(r.code, 1, r.out)
  T.match(status(r.id).stages["mark-release-ready"].error, "secondary rate limit: GitHub asks to wait 3600 s, more than max_wait = 900 s")
  T.ok(task.now() - t0 < 120, "no long wait")
  notified(r, "deploy.failure", "release")
end, { timeout = 300 })

T.test("the webhook receiver is down: the run succeeds, the failed delivery is logged and recorded", function()
  local r = run({ "--auto-approve", "--from", "mark-release-ready" }, nil,
    { DEPLOY_WEBHOOK_URL = ("http://127.0.0.1:%d/hooks"):format(closed_port()) })
  T.eq(r.code, 0, r.out)
  T.eq(status(r.id).status, "success")
  T.match(r.out, "notify: webhook did not deliver deploy%.success")
  local sent = json.decode(artifact(r.id, "notify", "notification.json"))
  T.eq(sent.event, "deploy.success")
  T.eq(sent.delivered.webhook.ok, false)
  T.eq(sent.delivered.console.ok, true)
end, { timeout = 300 })

T.test("SMTP refusing (a closed port): the run succeeds; the webhook still gets its notification", function()
  local r = run({ "--auto-approve", "--from", "mark-release-ready" }, nil, {
    SMTP_URL = ("smtp://127.0.0.1:%d"):format(closed_port()), SMTP_FROM = "stagehost@example.com",
    RELEASE_MANAGERS = "rm@example.com" })
  T.eq(r.code, 0, r.out)
  T.match(r.out, "notify: email did not deliver release%.ready")
  notified(r, "deploy.success", nil)
end, { timeout = 300 })

T.test("SMTP refusing (aiosmtpd turns the login down): the run succeeds; the refusal is logged", function()
  local out = T.tempdir()
  local h, port = T.smtp_sink(out, "--auth", "deployer:right-password")
  local ok, err = pcall(function()
    local r = run({ "--auto-approve", "--from", "mark-release-ready" }, nil, {
      SMTP_URL = "smtp://127.0.0.1:" .. port, SMTP_FROM = "stagehost@example.com", RELEASE_MANAGERS = "rm@example.com",
      SMTP_USER = "deployer", SMTP_PASSWORD = "wrong-password" })
    T.eq(r.code, 0, r.out)
    T.match(r.out, "notify: email did not deliver release%.ready: [^\n]*535")
    T.eq(#(fs.list(out) or {}), 0, "no message accepted")
    notified(r, "deploy.success", nil)
  end)
  h:kill("TERM")
  h:wait()
  fs.remove(out, { recursive = true })
  if not ok then error(err, 0) end
end, { timeout = 300 })

T.test("the disk fills up during a stage: the run fails saying so and how to go on; resumed, it completes", function()
  -- a copy of the state directory on a small tmpfs (mounting needs root, as in CI)
  local mnt = T.tempdir()
  local m = proc.run{ "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt, quiet = true }
  T.eq(m.code, 0, "mount a tmpfs (needs root / CAP_SYS_ADMIN): " .. m.stderr)
  local ok, err = pcall(function()
    T.ok(proc.run{ "cp", "-a", STATE .. "/.", mnt .. "/" }.ok, "copy the state")
    local argv = staging_argv({ "--auto-approve", "--from", "integration-tests" }, nil,
      { DEPLOY_WEBHOOK_URL = false, DEPLOY_WEBHOOK_SECRET = false }, mnt)
    local p, id = flow.start(argv)
    -- the integration tests run for seconds: fill the disk while they do
    T.wait_for(("%s/runs/%s/logs/integration-tests.log"):format(mnt, id), 60)
    task.sleep(0.3)
    proc.run{ "dd", "if=/dev/zero", "of=" .. mnt .. "/filler", "bs=64k", quiet = true }
    local r = flow.finish(p)
    T.eq(r.code, 1, r.output:sub(-1500))
    local last = r.lines[#r.lines]
    T.match(last, ("^stagehost: run %s failed: .*full"):format(id:gsub("%-", "%%-")))
    T.has(last, ("when that is fixed, 'stagehost resume %s' continues it"):format(id))
    fs.remove(mnt .. "/filler")
    local again = proc.run{ STAGEHOST, "resume", id, "--state", mnt, env = argv.env, timeout = 300 }
    T.eq(again.code, 0, again.stdout .. again.stderr)
    local st = proc.run{ STAGEHOST, "status", id, "--json", "--state", mnt, timeout = 60 }
    T.eq(json.decode(st.stdout).status, "success")
  end)
  proc.run{ "umount", mnt }
  fs.remove(mnt, { recursive = true })
  if not ok then error(err, 0) end
end, { timeout = 300 })

T.test("a clock jump during an approval wait: the gate decides by its deadline on the wall clock", function()
  -- Debian's libfaketime moves this run's wall clock (the state database's clock, which the
  -- gate reads, and os.time) by what the offset file says, read afresh on every call; the
  -- monotonic clock the loop sleeps by is left alone, as when NTP steps the clock
  local lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
  T.ok(fs.exists(lib), lib .. " is missing: install Debian's faketime (.ci/install-deps)")
  local dir = T.tempdir()
  local offset = dir .. "/offset"
  assert(fs.write(offset, "+0\n"))
  local argv = staging_argv({ "--from", "approval-gate", "--var", "approval_timeout=1h" }, nil, { LD_PRELOAD = lib,
    FAKETIME_TIMESTAMP_FILE = offset, FAKETIME_NO_CACHE = "1", FAKETIME_DONT_FAKE_MONOTONIC = "1" })
  local first = #received
  local p, id = flow.start(argv)
  local function pending()
    local r = stagehost("approvals", "--json")
    for _, g in ipairs(json.decode(r.stdout) or {}) do
      if g.run == id or g.run_id == id then return g end
    end
  end
  local deadline = task.now() + 120
  while not pending() do
    T.ok(task.now() < deadline, "the gate was requested")
    task.sleep(0.2)
  end
  -- 30 minutes on: still before the one-hour deadline, so still waiting
  assert(fs.write(offset, "+30m\n"))
  task.sleep(3)
  T.ok(pending(), "still pending half an hour later")
  -- two hours on: past the deadline, decided at the gate's next look. A waiting gate looks when
  -- another process commits to the state database, else every 120 s (approval.lua's RECHECK):
  -- another run's commit (a one-stage pipeline) makes it look now
  assert(fs.write(offset, "+2h\n"))
  local jumped = task.now()
  assert(fs.write(dir .. "/tick.lua", [[
return require("stagehost.pipeline").define{ name = "tick", stages = { { name = "tick", run = function() end } } }
]]))
  local tick = proc.run{ STAGEHOST, "run", dir .. "/tick.lua", "--state", STATE, timeout = 60, env = { NO_COLOR = "1" } }
  T.eq(tick.code, 0, tick.stdout .. tick.stderr)
  local r = flow.finish(p)
  T.eq(r.code, 3, r.output:sub(-1500))
  T.ok(task.now() - jumped < 60, "decided soon after the jump")
  local st = status(id)
  T.eq(st.stages["approval-gate"].status, "cancelled")
  T.match(st.stages["approval-gate"].reason or st.stages["approval-gate"].error or "", "approval timed out")
  notified({ id = id, out = r.output, deliveries = deliveries_since(first) }, "deploy.failure", "approval")
  fs.remove(dir, { recursive = true })
end, { timeout = 300 })

T.run(function()
  sink:close()
  fs.remove(STATE, { recursive = true })
end)
