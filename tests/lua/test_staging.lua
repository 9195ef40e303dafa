-- The flows of scripts/ on the example app (examples/webapp), in the sandbox: staging end to
-- end and its failure paths, development's automatic rollback, production's two approvals.
-- One state directory for the file, so later tests reuse what earlier ones deployed, as a
-- team's runs do (--from, "no changes").
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local task = require("stagehost.task")
local flow = require("flow")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))
local STATE = T.tempdir()

-- `stagehost run scripts/NAME.lua --sandbox --state STATE ARGS...`, env added to its environment
local function argv_of(name, args, env)
  local argv = { STAGEHOST, "run", SOURCE .. "/scripts/" .. name .. ".lua", "--sandbox", "--state", STATE }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.timeout, argv.env = 600, { STAGEHOST_BIN = STAGEHOST, GITHUB_ACTIONS = false, NO_COLOR = "1" }
  for k, v in pairs(env or {}) do argv.env[k] = v end
  return argv
end

-- Run the flow NAME with ARGS..., env added to its environment; -> the result, the run's id in .id
local function run_in(env, name, ...)
  local r = proc.run(argv_of(name, { ... }, env))
  r.id = r.stdout:match("^run (%S+)") or error("no run id in: " .. r.stdout:sub(1, 300) .. r.stderr:sub(1, 300))
  return r
end

local function run(name, ...) return run_in(nil, name, ...) end

-- Start a run in the background; -> the process and its run id (flow.start). Read it to its end
-- with flow.finish.
local function start(name, ...)
  local argv = argv_of(name, { ... })
  argv.timeout = nil
  return flow.start(argv)
end

local function stagehost(...)
  local argv = { STAGEHOST, ... }
  argv[#argv + 1], argv[#argv + 2], argv.timeout = "--state", STATE, 300
  return proc.run(argv)
end

local function status(id) return flow.status(stagehost, id) end
local function artifact(id, stage, name) return flow.artifact(STATE, id, stage, name) end
-- What the notify stage of a run sent (its notification.json), decoded.
local function notification(id) return json.decode(artifact(id, "notify", "notification.json")) end

-- The run r ended with the exit code code; -> the run's status.
local function ended(r, code)
  T.eq(r.code, code, r.stdout .. r.stderr)
  return status(r.id)
end

-- The run r failed (exit 1) in stage, with an error matching pattern; -> the run's status.
local function failed_in(r, stage, pattern)
  local st = ended(r, 1)
  T.eq(st.stages[stage].status, "failure")
  T.match(st.stages[stage].error, pattern)
  return st
end

-- The run's notify stage sent deploy.failure naming phase.
local function failure_notified(id, phase)
  local sent = notification(id)
  T.eq(sent.event, "deploy.failure")
  T.eq(sent.phase, phase)
end

-- The sandbox's request log (kept in the state directory across hosts): calls of an action.
local function calls(action)
  local n = 0
  for _, r in ipairs(flow.requests(STATE)) do
    if r.action == action then n = n + 1 end
  end
  return n
end

-- Wait until the run has a pending gate; -> its listing in `stagehost approvals --json`.
local function pending_gate(id)
  for _ = 1, 600 do
    local r = stagehost("approvals", "--json")
    for _, g in ipairs(json.decode(r.stdout) or {}) do
      if g.run == id or g.run_id == id then return g end
    end
    task.sleep(0.1)
  end
  error("no pending gate for run " .. id)
end

T.test("staging, happy path: every stage in order, the artifacts of the seed, a GitHub prerelease", function()
  local r = run("staging", "--auto-approve", "--tag", "rc-1.0.0")
  local st = ended(r, 0)
  T.eq(st.status, "success")
  for _, name in ipairs{ "pre-deployment-checks", "approval-gate", "validate", "deploy-infrastructure",
    "deploy-frontend", "integration-tests", "mark-release-ready", "notify" } do
    T.eq(st.stages[name].status, "success", name)
  end
  T.match(artifact(r.id, "pre-deployment-checks", "checklist.md"), "%[x%] ✅ %*%*ESLint%*%*")
  T.ok(json.decode(artifact(r.id, "pre-deployment-checks", "checklist.json")).total == 4)
  T.match(artifact(r.id, "validate", "change-set.md"), "| Add | `AuthFunction` |")
  T.match(artifact(r.id, "deploy-infrastructure", "stack-outputs.json"), "ApiUrl")
  T.match(artifact(r.id, "integration-tests", "integration-tests.xml"), "<testsuites")
  local notes = artifact(r.id, "mark-release-ready", "release-notes.md")
  T.match(notes, "^# rc%-1%.0%.0")
  T.match(notes, "\n%- [^\n]+ %(%x+, [^)\n]+%)\n", "a line per commit: subject (hash, author)")
  T.no_match(notes, "\nAuthor: ", "git's own format")
  local release = st.stages["mark-release-ready"].outputs
  T.match(tostring(release.release_url), "rc%-1%.0%.0")
  T.eq(st.stages["integration-tests"].outputs.tests > 0, true)
  T.eq(calls("ExecuteChangeSet"), 1)
end, { timeout = 300 })

T.test("an unchanged app deploys as 'no changes': same zips, same template, nothing executed", function()
  local before = calls("ExecuteChangeSet")
  local r = run("staging", "--auto-approve", "--tag", "rc-1.0.0", "--from", "validate")
  local st = ended(r, 0)
  T.eq(st.stages.validate.outputs.no_changes, true)
  T.eq(st.stages["deploy-infrastructure"].outputs.status, "NO_CHANGES")
  T.eq(calls("ExecuteChangeSet"), before)
end, { timeout = 300 })

T.test("--from deploy-frontend reuses the infrastructure's outputs of the last good run", function()
  local r = run("staging", "--auto-approve", "--tag", "rc-1.0.0", "--from", "deploy-frontend")
  local st = ended(r, 0)
  T.ok(st.stages["deploy-infrastructure"].reused_from, "deploy-infrastructure reused")
  T.match(tostring(st.stages["deploy-infrastructure"].outputs.api_url), "^http://127%.0%.0%.1:")
  T.eq(st.stages["deploy-frontend"].status, "success")
end, { timeout = 300 })

T.test("a failed check still reaches the approval, and the checklist shows it", function()
  local r = run("staging", "--auto-approve", "--var", "plant_lint_error=1", "--only", "pre-deployment-checks,approval-gate")
  local st = ended(r, 0)
  T.eq(st.stages["approval-gate"].status, "success")
  T.eq(st.stages["pre-deployment-checks"].outputs.checks.lint, "failed")
  local checklist = artifact(r.id, "pre-deployment-checks", "checklist.md")
  T.match(checklist, "%[ %] ❌ %*%*ESLint%*%*: 1 error")
  T.match(checklist, "lint%-error%.ts")
end, { timeout = 300 })

T.test("rejected: the run is cancelled (exit 3), nothing deployed, and notify reports it", function()
  local p, id = start("staging", "--from", "approval-gate")
  pending_gate(id)
  local vote = stagehost("approve", id, "--reject", "--comment", "the change set replaces the table", "--as", "reviewer")
  T.eq(vote.code, 0, vote.stderr)
  local r = flow.finish(p)
  T.eq(r.code, 3, r.output)
  local st = status(id)
  T.eq(st.stages["approval-gate"].status, "cancelled")
  T.eq(st.stages.validate.status, "cancelled")
  T.eq(st.stages.notify.status, "success")
  local sent = notification(id)
  T.eq(sent.event, "deploy.failure")
  T.match(sent.message, "approval rejected by reviewer: the change set replaces the table")
end, { timeout = 300 })

T.test("no decision in time: the approval times out and the run is cancelled", function()
  local r = run("staging", "--from", "approval-gate", "--var", "approval_timeout=1s")
  local st = ended(r, 3)
  T.eq(st.stages["approval-gate"].status, "cancelled")
  T.match(st.stages["approval-gate"].reason or st.stages["approval-gate"].error or "", "approval timed out")
end, { timeout = 120 })

T.test("an integration failure is notified as the tests phase; no release, no rollback in staging", function()
  -- the AI endpoint forwards to a provider that is not there
  local r = run("staging", "--auto-approve", "--from", "validate", "--var", "AiApiUrl=http://127.0.0.1:9/complete")
  local st = failed_in(r, "integration-tests", "integration tests failed")
  T.eq(st.stages["mark-release-ready"].status, "skipped")
  failure_notified(r.id, "tests")
end, { timeout = 300 })

T.test("a NoEcho parameter comes from the environment, is masked everywhere, and is refused as --var", function()
  local canary = "ai-key/\"canary\" + " .. os.time()
  local r = run_in({ AI_API_KEY = canary }, "staging", "--auto-approve", "--from", "validate")
  T.eq(r.code, 0, r.stdout .. r.stderr)
  local found = proc.run{ "grep", "-rlF", canary, STATE, quiet = true }
  T.eq(found.stdout, "", "the key is in no file of the state directory")
  T.eq((r.stdout .. r.stderr):find(canary, 1, true), nil)
  T.eq(status(r.id).stages.validate.outputs.parameters.AiApiKey, nil, "not among the stored parameters")
  local refused = run("staging", "--auto-approve", "--from", "validate", "--var", "AiApiKey=in-argv")
  T.eq(refused.code, 1)
  T.match(status(refused.id).stages.validate.error, "AiApiKey is a NoEcho %(secret%) parameter: give it in the environment as AI_API_KEY")
end, { timeout = 300 })

T.test("an infrastructure failure is notified as infrastructure; staging does not roll back", function()
  local faults = json.encode{ { service = "cloudformation", action = "ExecuteChangeSet", status = 400,
    code = "ValidationError", message = "Stack webapp-staging is in UPDATE_ROLLBACK_FAILED state and can not be updated." } }
  local r = run_in({ STAGEHOST_SANDBOX_FAULTS = faults }, "staging", "--auto-approve", "--from", "validate",
    "--var", "OAuthClientId=webapp-infra-fault")
  local st = failed_in(r, "deploy-infrastructure", "UPDATE_ROLLBACK_FAILED")
  T.eq(st.stages["deploy-frontend"].status, "skipped")
  failure_notified(r.id, "infrastructure")
  T.eq(st.stages.rollback, nil, "staging has no rollback stage")
end, { timeout = 300 })

T.test("a frontend failure (the Amplify job FAILED) is notified as frontend", function()
  local faults = json.encode{ { service = "amplify", action = "StartJob", outcome = "FAILED" } }
  local r = run_in({ STAGEHOST_SANDBOX_FAULTS = faults }, "staging", "--auto-approve", "--from", "deploy-frontend")
  failed_in(r, "deploy-frontend", "ended FAILED")
  T.eq(notification(r.id).phase, "frontend")
end, { timeout = 300 })

T.test("kill -9 during the stack wait: resume re-attaches to the same stack operation", function()
  local before = calls("ExecuteChangeSet")
  local p, id = start("staging", "--auto-approve", "--from", "validate", "--var", "OAuthClientId=webapp-killed-" .. os.time())
  for _ = 1, 600 do
    if calls("ExecuteChangeSet") > before then break end
    task.sleep(0.05)
  end
  T.eq(calls("ExecuteChangeSet"), before + 1, "the change set was executed")
  task.sleep(0.3) -- inside the stack wait
  p:kill("KILL")
  p:wait()
  local r = stagehost("resume", id)
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.match(r.stdout .. r.stderr, "re%-attaching to stack webapp%-staging")
  T.eq(calls("ExecuteChangeSet"), before + 1, "one ExecuteChangeSet in the emulator's request log")
  local st = status(id)
  T.eq(st.status, "success")
  T.eq(st.stages["integration-tests"].status, "success")
end, { timeout = 300 })

T.test("development: a failed smoke check rolls back to the last good release on its own", function()
  local good = run("development")
  T.eq(good.code, 0, good.stdout .. good.stderr)
  T.ok(artifact(good.id, "smoke-check", "release.json"), "the good release is recorded")
  -- a bad configuration: the functions store in DynamoDB, which the sandbox does not have
  local bad = run("development", "--var", "StorageMode=dynamodb")
  local st = ended(bad, 1)
  T.eq(st.stages["smoke-check"].status, "failure")
  T.eq(st.stages.rollback.status, "success")
  T.eq(st.stages.rollback.outputs.rolled_back_to, good.id)
  local sent = notification(bad.id)
  T.has(sent.message, "rolled back to the release of run " .. good.id)
  -- and the rolled-back stack works again
  local check = run("rollback", "--env", "development", "--var", "release=" .. good.id)
  T.eq(check.code, 0, check.stdout .. check.stderr)
end, { timeout = 600 })

T.test("production: two approvals from the production list; the actor cannot approve", function()
  local p, id = start("production", "--tag", "v1.0.0", "--actor", "alice")
  pending_gate(id)
  local own = stagehost("approve", id, "--as", "alice", "--comment", "mine")
  T.eq(own.code, 2, own.stdout)
  T.match(own.stderr, "you started this run")
  local stranger = stagehost("approve", id, "--as", "mallory", "--comment", "looks fine")
  T.eq(stranger.code, 2)
  T.match(stranger.stderr, "not an approver")
  T.eq(stagehost("approve", id, "--as", "bob", "--comment", "checked the change set").code, 0)
  T.eq(stagehost("approve", id, "--as", "carol", "--comment", "ok from SRE").code, 0)
  local r = flow.finish(p)
  T.eq(r.code, 0, r.output)
  local st = status(id)
  T.eq(st.stages["approval-gate"].outputs.approvals, 2)
  T.eq(st.stages["smoke-check"].status, "success")
  T.match(artifact(id, "mark-release-ready", "release-notes.md"), "bob approved via")
end, { timeout = 600 })

T.test("production runs only for a release tag: a run without one is refused before anything starts", function()
  local r = proc.run{ STAGEHOST, "run", SOURCE .. "/scripts/production.lua", "--sandbox", "--state", STATE, timeout = 30 }
  T.eq(r.code, 2, r.stdout .. r.stderr)
  T.eq(r.stderr, "stagehost: pipeline 'production' does not run by hand (trigger.manual = false): it wants a tag matching v* (--tag)\n")
  T.no_match(r.stdout, "^run ")
  local wrong = proc.run{ STAGEHOST, "run", SOURCE .. "/scripts/production.lua", "--sandbox", "--tag", "rc-1.0.0",
    "--state", STATE, timeout = 30 }
  T.eq(wrong.code, 2)
  T.match(wrong.stderr, "tag 'rc%-1%.0%.0' does not match the trigger of pipeline 'production' %(tags v%*%)")
end)

T.test("--auto-approve outside the sandbox is refused for a pipeline that does not allow it", function()
  local r = proc.run{ STAGEHOST, "run", SOURCE .. "/scripts/staging.lua", "--auto-approve", "--state", STATE, timeout = 30 }
  T.eq(r.code, 2)
  T.match(r.stderr, "%-%-auto%-approve: pipeline 'staging' takes it only with %-%-sandbox")
end)

T.run()
