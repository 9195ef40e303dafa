-- What gets deployed into the sandbox runs: a SAM app (tests/fixtures/sam-mini, one TypeScript
-- handler) packaged as `sam build` + `sam package` do (esbuild from tests/node, a deterministic
-- zip named by its SHA-256), deployed as a stack whose API the sandbox serves by running the
-- bundle with node, which reaches the stub AI provider; Amplify apps made on first use, a stuck
-- job, the served app; and the world kept across kill -9 + resume of a sandbox run.
local T = require("harness")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local http = require("stagehost.http")
local proc = require("stagehost.proc")
local sandbox = require("stagehost.sandbox")
local aws = require("stagehost.aws")
local sam = require("stagehost.sam")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local SOURCE = os.getenv("STAGEHOST_SOURCE_DIR") or arg[0]:match("^(.*)/tests/lua/[^/]*$") or "."
if SOURCE:sub(1, 1) ~= "/" then SOURCE = fs.cwd() .. "/" .. SOURCE end
local FIXTURE = SOURCE .. "/tests/fixtures/sam-mini"
local ESBUILD = SOURCE .. "/tests/node/node_modules/.bin/esbuild"

local function need_esbuild()
  if not fs.exists(ESBUILD) then
    error(("esbuild is missing (%s): run .ci/install-deps (npm ci in tests/node)"):format(ESBUILD), 0)
  end
end

-- A copy of the fixture app in a temporary directory (the packager writes its build there).
local function app_copy()
  local dir = T.tempdir()
  assert(proc.run{ "cp", "-R", FIXTURE .. "/.", dir }.ok)
  return dir
end

-- fn(sb) with a fresh sandbox that this process's AWS and GitHub clients use (T.with_sandbox).
local function with_sandbox(opts, fn) return T.with_sandbox(opts, fn, true) end

local count = T.sandbox_requests

T.test("sam.package: esbuild bundle, deterministic zip, key by SHA-256; unchanged sources upload nothing", function()
  need_esbuild()
  with_sandbox({}, function(sb)
    local dir = app_copy()
    local first = sam.package{ dir = dir, bucket = "artifacts-1", prefix = "mini", esbuild = ESBUILD }
    local fn = first.functions.HelloFunction
    T.match(fn.key, "^mini/%x+%.zip$")
    T.eq(fn.key, "mini/" .. fn.sha256 .. ".zip")
    T.eq(first.uploaded, 1)
    T.eq(table.concat(first.changed, ","), "HelloFunction")
    T.eq(fn.uri, "s3://artifacts-1/" .. fn.key)
    T.eq(first.template.Resources.HelloFunction.Properties.CodeUri, fn.uri)
    T.eq(first.template.Globals.Function.CodeUri, nil, "the local CodeUri of Globals is gone")
    local body = json.decode(first.body)
    T.eq(body.Resources.HelloFunction.Properties.CodeUri, fn.uri, "the JSON body carries the rewritten CodeUri")
    -- the zip holds the bundle where the Handler looks for it, and nothing else
    local listing = proc.run{ "unzip", "-Z1", fn.zip }.stdout
    T.eq(listing, "handlers/hello.js\n")
    local bundled = proc.run{ "unzip", "-p", fn.zip, "handlers/hello.js" }.stdout
    T.has(bundled, "function greet(", "the imported module is bundled in")
    local bytes = fs.read(fn.zip)
    local puts = count(sb, "s3", "PutObject")
    -- again, from a fresh build directory and after touching the sources: same bytes, same key
    assert(proc.run{ "touch", dir .. "/src/greet.ts", dir .. "/src/handlers/hello.ts" }.ok)
    local second = sam.package{ dir = dir, bucket = "artifacts-1", prefix = "mini", esbuild = ESBUILD,
      build_dir = dir .. "/other-build" }
    T.eq(second.functions.HelloFunction.key, fn.key)
    T.eq(fs.read(second.functions.HelloFunction.zip), bytes, "the same sources give the same zip bytes")
    T.eq(second.uploaded, 0)
    T.eq(#second.changed, 0)
    T.eq(count(sb, "s3", "PutObject"), puts, "no second upload")
    T.eq(second.body, first.body, "the same template text")
    -- a changed source is a new object
    assert(fs.write(dir .. "/src/greet.ts", (fs.read(dir .. "/src/greet.ts"):gsub("!`", "?`"))))
    local third = sam.package{ dir = dir, bucket = "artifacts-1", prefix = "mini", esbuild = ESBUILD }
    T.ok(third.functions.HelloFunction.key ~= fn.key, "a changed function gets a new key")
    T.eq(table.concat(third.changed, ","), "HelloFunction")
    -- a Handler whose file is missing is the caller's mistake, said in one line
    local broken = dir .. "/broken.yaml"
    assert(fs.write(broken, (fs.read(dir .. "/template.yaml"):gsub("handlers/hello%.handler", "handlers/nope.handler"))))
    local e = T.raises(function() sam.package{ dir = dir, template = "broken.yaml", bucket = "artifacts-1", esbuild = ESBUILD } end)
    T.has(tostring(e), "HelloFunction: no source for Handler 'handlers/nope.handler'")
    fs.remove(dir, { recursive = true })
  end)
end, { timeout = 120 })

T.test("a deployed SAM stack's API is served: node runs the bundle, path parameters, the stub AI provider", function()
  need_esbuild()
  with_sandbox({ step_seconds = 0.02 }, function(sb)
    local dir = app_copy()
    local p = sam.package{ dir = dir, bucket = "artifacts-2", esbuild = ESBUILD }
    local cfn = aws.cloudformation{}
    T.ok(cfn.poll_max <= 0.1, "the sandbox sets the waiters' pace to its simulated clock")
    -- AiUrl is not passed: the sandbox's default for it is its stub AI provider
    local result = cfn:deploy{ stack_name = "mini", body = p.body }
    T.eq(result.status, "CREATE_COMPLETE")
    local url = result.outputs.ApiUrl
    T.match(url, "^http://127%.0%.0%.1:%d+/_api/%w+/Prod/$")
    T.eq(sandbox.local_url("https://" .. url:match("/_api/(%w+)/") .. ".execute-api.us-east-1.amazonaws.com/Prod/"), url)
    local r = http.request{ url = url .. "hello/Ada%20L?lang=en" }
    T.eq(r.status, 200, r.body)
    local doc = json.decode(r.body)
    T.eq(doc.message, "hello, Ada L!", "the path parameter and the GREETING variable from the parameter default")
    T.eq(doc.query.lang, "en")
    T.eq(r.headers["x-region"], "us-east-1", "AWS_REGION as Lambda sets it")
    r = http.request{ method = "POST", url = url .. "ask", body = json.encode{ prompt = "a haiku" },
      headers = { ["Content-Type"] = "application/json" } }
    T.eq(r.status, 200, r.body)
    T.eq(json.decode(r.body).answer, "Sandbox AI reply to: a haiku", "the handler reached the stub AI provider")
    T.eq(count(sb, "stub", "ai/complete"), 1)
    r = http.request{ method = "DELETE", url = url .. "ask" }
    T.eq(r.status, 403, "no such route, as API Gateway answers")
    T.eq(json.decode(r.body).message, "Missing Authentication Token")
    -- a provider failing makes the handler fail: 502 as API Gateway answers for a crashed function
    sb:fail_next{ service = "stub", action = "ai", status = 503, body = "down" }
    r = http.request{ method = "POST", url = url .. "ask", body = "{}" }
    T.eq(r.status, 502)
    T.eq(json.decode(r.body).message, "Internal server error")
    -- an update with a new greeting: the served API follows the stack
    local again = cfn:deploy{ stack_name = "mini", body = p.body,
      parameters = { Greeting = "bonjour" } }
    T.eq(again.status, "UPDATE_COMPLETE")
    T.eq(json.decode(http.request{ url = url .. "hello/Lin" }.body).message, "bonjour, Lin!")
    -- the stub OAuth provider: the sandbox code gets a token, another code does not
    r = http.request{ method = "POST", url = sb.oauth_url, body = "grant_type=authorization_code&code=sandbox-code",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }
    T.eq(r.status, 200)
    T.match(json.decode(r.body).access_token, "^sandbox%-token%-")
    r = http.request{ method = "POST", url = sb.oauth_url, body = json.encode{ code = "stolen" },
      headers = { ["Content-Type"] = "application/json" } }
    T.eq(r.status, 400)
    fs.remove(dir, { recursive = true })
  end)
end, { timeout = 120 })

T.test("amplify: app and branch made on first use, a job stuck in PENDING, the served app once a job succeeded", function()
  with_sandbox({ step_seconds = 0.02, amplify_auto_create = true }, function(sb)
    local amp = aws.amplify{}
    local app = amp:get_app("webapp")
    T.eq(app.appId, "webapp")
    local page = http.request{ url = sb:app_url("webapp", "main") }
    T.eq(page.status, 404, "not deployed yet")
    local job = amp:start_job("webapp", "main", { commit_id = "abc123" })
    local done = amp:wait_job("webapp", "main", job.jobId, { timeout = 30 })
    T.eq(done.status, "SUCCEED")
    page = http.request{ url = sb:app_url("webapp", "main") }
    T.eq(page.status, 200)
    T.has(page.body, "commit abc123")
    T.eq(sandbox.local_url(amp:branch_url("webapp", "main")), sb:app_url("webapp", "main"))
    -- a dist directory to serve
    local dist = T.tempdir()
    assert(fs.write(dist .. "/index.html", "<h1>webapp</h1>"))
    sb.state.aws.sites = { webapp = dist }
    T.eq(http.request{ url = sb:app_url("webapp", "main") }.body, "<h1>webapp</h1>")
    T.eq(http.request{ url = sb:app_url("webapp", "main") .. "some/route" }.body, "<h1>webapp</h1>", "SPA fallback")
    -- stuck, failed, cancelled on demand
    sb.state.aws.amplify_next_jobs = { "PENDING", "FAILED", "CANCELLED" }
    local stuck = amp:start_job("webapp", "main", {})
    local e = T.raises(function() amp:wait_job("webapp", "main", stuck.jobId, { timeout = 30, pending_timeout = 0.3 }) end)
    T.ok(aws.is_error(e, "JobStuckPending"), tostring(e))
    local failed = amp:wait_job("webapp", "main", amp:start_job("webapp", "main", {}).jobId, { timeout = 30 })
    T.eq(failed.status, "FAILED")
    T.eq(failed.failed_step.name, "BUILD")
    local cancelled = amp:wait_job("webapp", "main", amp:start_job("webapp", "main", {}).jobId, { timeout = 30 })
    T.eq(cancelled.status, "CANCELLED")
    fs.remove(dist, { recursive = true })
  end)
end, { timeout = 60 })

-- A pipeline that packages the fixture and deploys it, pausing nowhere: the test kills its host
-- while CloudFormation is creating the stack.
local PIPELINE = [[
local pipeline = require("stagehost.pipeline")
local aws = require("stagehost.aws")
local sam = require("stagehost.sam")
local http = require("stagehost.http")
return pipeline.define{ name = "mini", stages = {
  { name = "infra", run = function(ctx)
    local p = sam.package{ dir = os.getenv("APP_DIR"), bucket = "mini-artifacts", esbuild = os.getenv("ESBUILD") }
    print("infra: packaged")
    local result = aws.cloudformation{}:deploy{ stack_name = "mini-staging", body = p.body }
    return { api_url = result.outputs.ApiUrl, no_changes = result.no_changes == true }
  end },
  { name = "smoke", needs = { "infra" }, run = function(ctx)
    local r = http.request{ url = ctx.outputs.infra.api_url .. "hello/resume" }
    assert(r.status == 200, r.body)
    return { message = require("stagehost.json").decode(r.body).message }
  end },
} }
]]

T.test("run --sandbox: kill -9 during the stack wait, resume re-attaches: one ExecuteChangeSet in requests.jsonl", function()
  need_esbuild()
  local dir = T.tempdir()
  local app = app_copy()
  assert(fs.write(dir .. "/p.lua", PIPELINE))
  local env = { HOME = dir, APP_DIR = app, ESBUILD = ESBUILD, STAGEHOST_SANDBOX_STEP = "0.4", -- a create of ~8 s: the resume comes during it
    AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_PROFILE = false, AWS_REGION = false,
    AWS_ENDPOINT_URL = false, GITHUB_TOKEN = false, GITHUB_REPOSITORY = false, GITHUB_ACTIONS = false }
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", "--sandbox", cwd = dir, lines = true, env = env }
  local id, killed
  for _ = 1, 400 do
    local _, line = host:read_line()
    if not line then break end
    id = id or line:match("^run (%S+)")
    if line:find("HelloFunction (AWS::Lambda::Function) CREATE_IN_PROGRESS", 1, true) then
      host:kill("KILL")
      killed = true
      break
    end
  end
  host:wait()
  T.ok(id and killed, "killed the host while the stack was being created")
  local world = dir .. "/.stagehost/sandbox/world.lua"
  T.ok(fs.exists(world), "the world is on disk")
  local r = T.stagehost(dir, { "resume", id }, { env = env })
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.has(r.stderr, "waiting for that operation to end", "the resumed deploy re-attached")
  local executes, creates = 0, 0
  for line in assert(fs.read(dir .. "/.stagehost/sandbox/requests.jsonl")):gmatch("[^\n]+") do
    local q = json.decode(line)
    if q.action == "ExecuteChangeSet" then executes = executes + 1 end
    if q.action == "CreateChangeSet" then creates = creates + 1 end
  end
  T.eq(executes, 1, "one ExecuteChangeSet across both hosts")
  T.eq(creates, 2, "the resumed deploy's change set found nothing to do")
  local st = json.decode(T.stagehost(dir, { "status", id, "--json" }, { env = env }).stdout)
  T.eq(st.status, "success")
  for _, s in ipairs(st.stages) do
    if s.name == "infra" then T.eq(s.outputs.no_changes, true) end
    if s.name == "smoke" then T.eq(s.outputs.message, "hello, resume!", "the API answered after the resume") end
  end
  fs.remove(dir, { recursive = true })
  fs.remove(app, { recursive = true })
end, { timeout = 180 })

T.test("persist: the world and the request log survive a restart; a damaged world is one line, exit 2", function()
  local dir = T.tempdir()
  local sb = sandbox.start{ persist = dir .. "/state/sandbox" }
  local key, port = sb.credentials.secret_access_key, sb.port
  local s3 = aws.s3{ region = "us-east-1", endpoint = sb.url, credentials = sb.credentials }
  s3:create_bucket{ bucket = "kept" }
  s3:put_object{ bucket = "kept", key = "a", body = "still here" }
  sb:close()
  T.ok(fs.exists(dir .. "/state/sandbox/world.lua") and fs.exists(dir .. "/state/sandbox/requests.jsonl"))
  local again = sandbox.start{ persist = dir .. "/state/sandbox" }
  T.eq(again.port, port, "the saved port, while it is free")
  T.eq(again.credentials.secret_access_key, key, "the same key pair, so clients configured before still sign right")
  local s3b = aws.s3{ region = "us-east-1", endpoint = again.url, credentials = again.credentials }
  T.eq(s3b:get_object{ bucket = "kept", key = "a" }.body, "still here")
  T.eq(count(again, "s3", "PutObject"), 1, "the request log goes on from the saved one")
  again:close()
  assert(fs.write(dir .. "/state/sandbox/world.lua", "return {"))
  local e = T.raises(function() sandbox.start{ persist = dir .. "/state/sandbox" } end)
  T.has(tostring(e), "world.lua is damaged")
  assert(fs.write(dir .. "/p.lua", PIPELINE))
  local r = T.stagehost(dir, { "run", "p.lua", "--sandbox", "--state", dir .. "/state" }, { env = { HOME = dir } })
  T.eq(r.code, 2, r.stderr)
  T.has(r.stderr, "remove it to start from an empty world")
  fs.remove(dir, { recursive = true })
end, { timeout = 60 })

T.test("run --sandbox: STAGEHOST_SANDBOX_FAULTS queues faults and job outcomes; a bad list is one line, exit 2", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/p.lua", [=[
local aws = require("stagehost.aws")
return require("stagehost.pipeline").define{ name = "front", stages = {
  { name = "frontend", run = function()
    local amp = aws.amplify{}
    local job = amp:start_job("webapp", "main", {})
    local r = amp:wait_job("webapp", "main", job.jobId, { pending_timeout = 1 })
    print("job ended " .. r.status)
    return { status = r.status }
  end },
} }
]=]))
  local env = { HOME = dir, STAGEHOST_SANDBOX_STEP = "0.05",
    STAGEHOST_SANDBOX_FAULTS = json.encode{ { service = "amplify", action = "StartJob", outcome = "PENDING" } } }
  local r = T.stagehost(dir, { "run", "p.lua", "--sandbox" }, { env = env })
  T.eq(r.code, 1, r.stderr)
  T.has(r.stdout .. r.stderr, "JobStuckPending")
  env.STAGEHOST_SANDBOX_FAULTS = json.encode{ { service = "amplify", action = "StartJob", outcome = "CANCELLED" } }
  r = T.stagehost(dir, { "run", "p.lua", "--sandbox" }, { env = env })
  T.eq(r.code, 0, r.stderr)
  T.has(r.stdout .. r.stderr, "job ended CANCELLED")
  env.STAGEHOST_SANDBOX_FAULTS = "[{"
  r = T.stagehost(dir, { "run", "p.lua", "--sandbox" }, { env = env })
  T.eq(r.code, 2, r.stderr)
  T.has(r.stderr, "sandbox: faults: not a JSON list of faults")
  fs.remove(dir, { recursive = true })
end, { timeout = 60 })

T.run()
