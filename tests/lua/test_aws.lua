-- The AWS clients against the sandbox's emulator (whose fidelity test_sandbox_aws.lua checks
-- with the real awscli): regions and endpoints, signed requests whose signatures the sandbox
-- verifies, CloudFormation change sets and stack waits, Amplify jobs, retries on throttling,
-- malformed answers, and the credential chain — the chain in child hosts, since it reads the
-- environment.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local http = require("stagehost.http")
local aws = require("stagehost.aws")
local sandbox = require("stagehost.sandbox")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

local CREDS = { access_key_id = "AKIDTESTCLIENT", secret_access_key = "test/secret/Key+0123456789abcdefghijklmn" }

-- A sandbox that knows CREDS; it checks every signature against the keys it knows.
local function start()
  local sb = sandbox.start{ aws = { keys = { [CREDS.access_key_id] = CREDS.secret_access_key } } }
  sb.state.aws.step_seconds = 0.05
  return sb
end

local POLL = { min = 0.02, max = 0.1 }

local function cfn(sb)
  return aws.cloudformation{ region = "us-east-1", endpoint = sb.url, credentials = CREDS, poll = POLL, retry_base = 0.05 }
end
local function amplify(sb)
  return aws.amplify{ region = "us-east-1", endpoint = sb.url, credentials = CREDS, poll = POLL, retry_base = 0.05 }
end

local TEMPLATE = {
  AWSTemplateFormatVersion = "2010-09-09",
  Parameters = { Stage = { Type = "String", Default = "staging" } },
  Resources = {
    Bucket = { Type = "AWS::S3::Bucket" },
    Api = { Type = "AWS::ApiGateway::RestApi", Properties = { Name = "api" } },
  },
  Outputs = {
    BucketName = { Value = { Ref = "Bucket" } },
    StageName = { Value = { Ref = "Stage" } },
    ApiUrl = { Value = { ["Fn::Sub"] = "https://${Api}.execute-api.${AWS::Region}.amazonaws.com/${Stage}/" } },
  },
}

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

T.test("regions, endpoints and ARNs: clear messages for what is wrong", function()
  T.eq(aws.region("eu-west-2"), "eu-west-2")
  T.eq(aws.region("us-gov-west-1"), "us-gov-west-1")
  T.raises(function() aws.region("us-east1") end, "unknown region 'us-east1'")
  T.raises(function() aws.region("virginia") end, "AWS_REGION")
  T.raises(function() aws.cloudformation{ region = "mars-1" } end, "aws.cloudformation: unknown region 'mars-1'")
  -- the message points at the user's line, however deep in the clients the check ran
  T.raises(function() aws.sts{ region = "eu-west-1" }:assume_role{ role_arn = "deploy" } end,
    "test_aws%.lua:%d+: aws: malformed ARN 'deploy'")
  T.raises(function() aws.cloudformation{ region = "mars-1" } end, "test_aws%.lua:%d+: aws: aws.cloudformation")
  T.eq(aws.parse_arn("arn:aws:iam::123456789012:role/deploy").resource, "role/deploy")
  T.raises(function() aws.parse_arn("arn:aws:iam:role/deploy") end, "malformed ARN 'arn:aws:iam:role/deploy'")
  T.eq(aws.form{ Action = "X", Capabilities = { "A", "B" }, Parameters = { { ParameterKey = "k v", ParameterValue = "a&b" } } },
    "Action=X&Capabilities.member.1=A&Capabilities.member.2=B&Parameters.member.1.ParameterKey=k%20v&Parameters.member.1.ParameterValue=a%26b")
end)

T.test("cloudformation: validate, change set create -> execute -> stable -> outputs", function()
  local sb = start()
  local c = cfn(sb)
  local v = c:validate_template{ template = TEMPLATE }
  T.eq(v.parameters[1].key, "Stage")
  T.eq(v.parameters[1].default, "staging")
  T.eq(c:describe_stack("web-staging"), nil, "no stack yet")

  local cs = c:create_change_set{ stack_name = "web-staging", template = TEMPLATE, parameters = { Stage = "staging" } }
  T.eq(cs.type, "CREATE")
  T.match(cs.id, "^arn:aws:cloudformation:us%-east%-1:")
  local d = c:wait_change_set(cs)
  T.eq(d.status, "CREATE_COMPLETE")
  T.eq(d.no_changes, nil)
  T.eq(#d.changes, 2)
  T.has(d.preview, "Add     Api (AWS::ApiGateway::RestApi)")
  T.has(d.preview, "Add     Bucket (AWS::S3::Bucket)")
  c:execute_change_set(cs)
  local result = c:wait_stack("web-staging")
  T.eq(result.status, "CREATE_COMPLETE")
  T.ok(result.ok)
  T.eq(#result.failed_resources, 0)
  local outputs = c:outputs("web-staging")
  T.eq(outputs.StageName, "staging")
  T.match(outputs.BucketName, "^web%-staging%-bucket%-") -- S3 names are lower case
  -- the sandbox serves the API it deployed, so it shows the execute-api URL as its own
  T.match(outputs.ApiUrl, "^http://127%.0%.0%.1:%d+/_api/%w+/staging/$")
  T.eq(c:describe_stack("web-staging").status, "CREATE_COMPLETE")

  -- the same template again: "no changes" is a result, not a failure
  local again = c:deploy{ stack_name = "web-staging", template = TEMPLATE, parameters = { Stage = "staging" } }
  T.eq(again.no_changes, true)
  T.eq(again.status, "CREATE_COMPLETE")
  T.eq(again.outputs.StageName, "staging")

  -- a real change is an UPDATE with a Modify in its preview
  local changed = copy(TEMPLATE)
  changed.Resources.Api.Properties.Name = "api-v2"
  local up = c:deploy{ stack_name = "web-staging", template = changed, parameters = { Stage = "staging" } }
  T.eq(up.type, "UPDATE")
  T.eq(up.status, "UPDATE_COMPLETE")
  T.has(up.preview, "Modify  Api (AWS::ApiGateway::RestApi)")
  sb:close()
end)

T.test("cloudformation: a failed stack returns its failed resources with their reasons", function()
  local sb = start()
  local c = cfn(sb)
  local broken = copy(TEMPLATE)
  broken.Resources.Api.Metadata = { ["stagehost:fail"] = "Resource handler returned message: \"Invalid API name\"" }
  local cs = c:create_change_set{ stack_name = "broken", template = broken }
  c:wait_change_set(cs)
  c:execute_change_set(cs)
  local result = c:wait_stack("broken")
  T.eq(result.ok, false)
  T.eq(result.status, "ROLLBACK_COMPLETE")
  T.eq(result.failed_resources[1].logical_id, "Api")
  T.eq(result.failed_resources[1].type, "AWS::ApiGateway::RestApi")
  T.has(result.failed_resources[1].reason, "Invalid API name")
  -- deploy raises one error carrying the same reasons; a ROLLBACK_COMPLETE stack must go first
  local err = T.raises(function() c:deploy{ stack_name = "broken", template = broken } end, "delete it before deploying again")
  T.ok(type(err) == "string")
  c:delete_stack("broken", { wait = true })
  err = T.raises(function() c:deploy{ stack_name = "broken", template = broken } end, "Invalid API name")
  T.ok(aws.is_error(err), "an aws error table")
  T.eq(err.code, "ROLLBACK_COMPLETE")
  T.eq(err.failed_resources[1].logical_id, "Api")
  sb:close()
end)

T.test("throttling then success: the request is retried with backoff", function()
  local sb = start()
  local c = cfn(sb)
  sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 400, code = "Throttling",
    message = "Rate exceeded", times = 2 }
  T.eq(c:describe_stack("nothing-here"), nil)
  local seen = 0
  for _, r in ipairs(sb.requests) do
    if r.action == "DescribeStacks" then seen = seen + 1 end
  end
  T.eq(seen, 3, "two throttled attempts and the one that got through")
  -- a client error is not retried, and arrives as a table with the AWS fields
  sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 403, code = "AccessDenied",
    message = "User is not authorized" }
  local err = T.raises(function() c:describe_stack("x") end, "AccessDenied")
  T.eq(err.status, 403)
  T.eq(err.code, "AccessDenied")
  T.eq(err.message, "User is not authorized")
  T.ok(err.request_id, "the request id")
  T.has(tostring(err), "aws: cloudformation DescribeStacks: AccessDenied: User is not authorized (HTTP 403")
  sb:close()
end)

T.test("after a 5xx only reads are repeated: a change set is never executed twice", function()
  local sb = start()
  local c = cfn(sb)
  local cs = c:create_change_set{ stack_name = "once", template = TEMPLATE }
  c:wait_change_set(cs)
  sb:fail_next{ service = "cloudformation", action = "ExecuteChangeSet", status = 502, code = "InternalFailure",
    message = "upstream went away" }
  local err = T.raises(function() c:execute_change_set(cs) end, "InternalFailure")
  T.eq(err.status, 502)
  local executes, describes = 0, 0
  for _, r in ipairs(sb.requests) do
    if r.action == "ExecuteChangeSet" then executes = executes + 1 end
  end
  T.eq(executes, 1, "ExecuteChangeSet sent once")
  sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 503, code = "ServiceUnavailable" }
  T.ok(c:describe_stack("once"), "a read goes again after a 503")
  for _, r in ipairs(sb.requests) do
    if r.action == "DescribeStacks" then describes = describes + 1 end
  end
  T.ok(describes >= 2, "DescribeStacks repeated")
  sb:close()
end)

T.test("a timeout or cancel stops a request at once and stays a timeout or cancel", function()
  local arrived = 0
  local slow = http.serve{ handler = function() arrived = arrived + 1 task.sleep(5) return "late" end }
  local endpoint = ("http://127.0.0.1:%d"):format(slow.port)
  local started = task.now()
  local ok, why = task.timeout(0.2, function()
    return aws.request{ service = "sts", region = "us-east-1", endpoint = endpoint, credentials = CREDS,
      form = { Action = "GetCallerIdentity", Version = "2011-06-15" } }
  end)
  T.eq(ok, false); T.eq(why, "timeout")
  T.ok(task.now() - started < 2, "no retries after the timeout")
  local t = task.spawn(function()
    return aws.request{ service = "sts", region = "us-east-1", endpoint = endpoint, credentials = CREDS,
      form = { Action = "GetCallerIdentity", Version = "2011-06-15" } }
  end)
  -- cancel only once the request is in flight (the server has it), and time the cancel
  local deadline = task.now() + 10
  while arrived < 2 and task.now() < deadline do task.sleep(0.01) end
  T.eq(arrived, 2, "the request was in flight")
  local t0 = task.now()
  t:cancel("enough")
  local done, err = t:join()
  T.ok(task.now() - t0 < 1, "stopped at once (the answer was 5 s away)")
  T.eq(done, false)
  T.eq(type(err) == "table" and err.kind, "cancelled", "the cancellation itself, not an AWS error")
  slow:close()
end)

T.test("a refused connection is a TransportError carrying http.request's code and words", function()
  local closed = http.serve{ handler = function() return "" end }
  local endpoint = ("http://127.0.0.1:%d"):format(closed.port)
  closed:close()
  local err = T.raises(function()
    local r = aws.request{ service = "sts", region = "us-east-1", endpoint = endpoint, credentials = CREDS,
      form = { Action = "GetCallerIdentity", Version = "2011-06-15" }, retry = false }
    return r
  end, "TransportError")
  T.ok(aws.is_error(err, "TransportError"), tostring(err))
  T.eq(err.kind, "ECONNREFUSED")
  T.has(err.message, "http.request: POST " .. endpoint .. "/ failed: ")
  T.match(tostring(err), "^aws: sts GetCallerIdentity: TransportError: http%.request: POST ")
  T.no_match(tostring(err), "%.lua:%d+:", "no line of the library in the message")
end)

T.test("malformed XML or JSON from a server: an error naming the service and operation", function()
  local sb = start()
  sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 200, body = "<DescribeStacksResponse><oops" }
  local err = T.raises(function() cfn(sb):describe_stack("x") end, "malformed XML")
  T.has(tostring(err), "cloudformation DescribeStacks")
  sb:fail_next{ service = "cloudformation", action = "ValidateTemplate", status = 200, body = "<Something/>" }
  T.raises(function() cfn(sb):validate_template{ template = TEMPLATE } end, "expected a <ValidateTemplateResponse> document")
  sb:fail_next{ service = "amplify", status = 200, body = "{\"app\": [1, 2" }
  err = T.raises(function() amplify(sb):get_app("d1") end, "malformed JSON")
  T.has(tostring(err), "amplify GetApp")
  sb:close()
end)

T.test("signatures: the sandbox rejects a wrong secret and an unknown key, as AWS would", function()
  local sb = start()
  local wrong = { access_key_id = CREDS.access_key_id, secret_access_key = "not-the-secret-0123456789" }
  local c = aws.cloudformation{ region = "us-east-1", endpoint = sb.url, credentials = wrong, poll = POLL }
  local err = T.raises(function() c:describe_stack("x") end, "SignatureDoesNotMatch")
  T.eq(err.status, 403)
  local stranger = { access_key_id = "AKIDSTRANGER0000", secret_access_key = CREDS.secret_access_key }
  c = aws.cloudformation{ region = "us-east-1", endpoint = sb.url, credentials = stranger, poll = POLL }
  err = T.raises(function() c:describe_stack("x") end, "InvalidClientTokenId")
  T.eq(err.status, 403)
  sb:close()
end)

-- ---- signatures against botocore, AWS's own signer (tests/python/sigv4_botocore.py) ----
-- The sandbox verifies with stagehost's signer; these tests keep that from being a signer
-- checked only against itself.

local PY_DIR = (os.getenv("STAGEHOST_SOURCE_DIR") or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]*$") or ".")
  .. "/tests/python"

-- The python3 that has botocore: the image's default, else Debian's (python3-botocore).
local function botocore_python()
  for _, python in ipairs{ "python3", "/usr/bin/python3" } do
    local ok, r = pcall(proc.run, { python, "-c", "import botocore.auth", timeout = 60 })
    if ok and r.code == 0 then return python end
  end
  error("no python3 imports botocore: run .ci/install-deps (it installs python3-botocore)", 0)
end

-- botocore(case) -> what sigv4_botocore.py answers for one request
local function botocore(python, case)
  local r = proc.run{ python, PY_DIR .. "/sigv4_botocore.py", stdin = json.encode(case), timeout = 60 }
  T.eq(r.code, 0, "sigv4_botocore.py: " .. r.stderr)
  return json.decode(r.stdout)
end

T.test("signatures: stagehost's signer and botocore's agree byte for byte", function()
  local python = botocore_python()
  local token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="
  local cases = {
    { name = "a Query POST", method = "POST", url = "https://cloudformation.us-east-1.amazonaws.com/",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" },
      body = "Action=DescribeStacks&StackName=web-staging&Version=2010-05-15", service = "cloudformation" },
    { name = "a session token", method = "POST", url = "https://sts.amazonaws.com/", session_token = token,
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" },
      body = "Action=GetCallerIdentity&Version=2011-06-15", service = "sts" },
    { name = "a REST path with an encoded segment and a query", method = "GET", service = "amplify",
      url = "https://amplify.eu-west-1.amazonaws.com/apps/d1a2b3c4/branches/feature%2Fx/jobs?nextToken=a%2Bb%3D&maxResults=5",
      headers = {}, body = "", region = "eu-west-1" },
    { name = "a JSON body and a header with runs of spaces", method = "POST", service = "amplify",
      url = "https://amplify.us-east-1.amazonaws.com/apps/d1/branches/main/jobs",
      headers = { ["Content-Type"] = "application/json", ["X-Custom"] = "  two   spaces  " },
      body = json.encode{ jobType = "RELEASE", commitId = "abc123", commitMessage = "naïve ünïcode" } },
  }
  for _, case in ipairs(cases) do
    local region = case.region or "us-east-1"
    local creds = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
      session_token = case.session_token }
    local theirs = botocore(python, { method = case.method, url = case.url, headers = case.headers, body = case.body,
      service = case.service, region = region, access_key_id = creds.access_key_id,
      secret_access_key = creds.secret_access_key, session_token = creds.session_token, time = "20260301T123456Z" })
    local ours = aws.sign{ method = case.method, url = case.url, headers = case.headers, body = case.body,
      service = case.service, region = region, credentials = creds, time = "20260301T123456Z" }
    T.eq(ours.Authorization, theirs.headers.Authorization, case.name)
    T.eq(ours["X-Amz-Date"], theirs.headers["X-Amz-Date"], case.name)
    T.eq(ours["X-Amz-Security-Token"], theirs.headers["X-Amz-Security-Token"], case.name)
  end
end)

T.test("signatures: a request botocore signs gets through the sandbox; a tampered signature or body does not", function()
  local python = botocore_python()
  local sb = start()
  local function send(extra)
    local case = { method = "POST", url = sb.url .. "/", body = "Action=GetCallerIdentity&Version=2011-06-15",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" }, service = "sts",
      region = "us-east-1", access_key_id = CREDS.access_key_id, secret_access_key = CREDS.secret_access_key, send = true }
    for k, v in pairs(extra or {}) do case[k] = v end
    return botocore(python, case)
  end
  local accepted = send()
  T.eq(accepted.status, 200, accepted.body)
  T.has(accepted.body, "<GetCallerIdentityResponse")
  local forged = send{ tamper = "signature" }
  T.eq(forged.status, 403)
  T.has(forged.body, "<Code>SignatureDoesNotMatch</Code>")
  local changed = send{ tamper = "body" }
  T.eq(changed.status, 403, "a body changed after signing")
  T.has(changed.body, "<Code>SignatureDoesNotMatch</Code>")
  local unknown = send{ access_key_id = "AKIDNOTKNOWN000" }
  T.eq(unknown.status, 403)
  T.has(unknown.body, "<Code>InvalidClientTokenId</Code>")
  local cfn_accepted = send{ service = "cloudformation", body = "Action=ListStacks&Version=2010-05-15" }
  T.eq(cfn_accepted.status, 200, cfn_accepted.body)
  local amplify_forged = send{ service = "amplify", method = "GET", url = sb.url .. "/apps", body = "", headers = {},
    tamper = "signature" }
  T.eq(amplify_forged.status, 403)
  local amplify = send{ service = "amplify", method = "GET", url = sb.url .. "/apps", body = "", headers = {} }
  T.eq(amplify.status, 200, amplify.body)
  sb:close()
end, { timeout = 90 })

local function seed_amplify(sb, env)
  local app = aws.request{ service = "amplify", region = "us-east-1", endpoint = sb.url, credentials = CREDS,
    method = "POST", path = "/apps", json = { name = "web" } }.json.app
  aws.request{ service = "amplify", region = "us-east-1", endpoint = sb.url, credentials = CREDS,
    method = "POST", path = "/apps/" .. app.appId .. "/branches",
    json = { branchName = "staging", environmentVariables = env or { KEEP = "1" } } }
  return app.appId
end

T.test("amplify: variables merged, a release job succeeds, the branch URL", function()
  local sb = start()
  local a = amplify(sb)
  local app_id = seed_amplify(sb)
  local b = a:update_branch(app_id, "staging", { environment_variables = { API_URL = "https://api.example" } })
  T.eq(b.environmentVariables.KEEP, "1", "kept what was there")
  T.eq(b.environmentVariables.API_URL, "https://api.example")
  T.eq(a:get_branch(app_id, "staging").environmentVariables.KEEP, "1")
  local job = a:start_job(app_id, "staging", { commit_id = "abc123" })
  T.ok(job.jobId, "a job id")
  T.eq(job.jobType, "RELEASE")
  local done = a:wait_job(app_id, "staging", job.jobId)
  T.eq(done.status, "SUCCEED")
  T.ok(done.ok)
  T.eq(done.failed_step, nil)
  T.ok(#done.steps >= 2, "steps reported")
  T.match(a:branch_url(app_id, "staging"), "^https://staging%." .. app_id .. "%.amplifyapp%.com$")
  local err = T.raises(function() a:get_branch(app_id, "nope") end, "NotFoundException")
  T.eq(err.status, 404)
  T.raises(function() a:get_app("") end, "app_id must be a non-empty string")
  sb:close()
end)

T.test("amplify: a failing job names the failing step", function()
  local sb = start()
  local a = amplify(sb)
  local app_id = seed_amplify(sb, { STAGEHOST_FAIL_STEP = "BUILD" })
  local job = a:start_job(app_id, "staging")
  local done = a:wait_job(app_id, "staging", job.jobId)
  T.eq(done.status, "FAILED")
  T.eq(done.ok, false)
  T.eq(done.failed_step.name, "BUILD")
  T.ok(done.failed_step.reason, "a reason for the failure")
  sb:close()
end)

-- ---- the credential chain, in child hosts with a controlled environment ----

local CLEAN_ENV = {
  AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_SESSION_TOKEN = false, AWS_PROFILE = false,
  AWS_DEFAULT_PROFILE = false, AWS_ROLE_ARN = false, AWS_WEB_IDENTITY_TOKEN_FILE = false,
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = false, AWS_CONTAINER_CREDENTIALS_FULL_URI = false,
  AWS_CONTAINER_AUTHORIZATION_TOKEN = false, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = false,
  AWS_EC2_METADATA_SERVICE_ENDPOINT = false, AWS_EC2_METADATA_DISABLED = "true",
  AWS_DEFAULT_REGION = false, AWS_REGION = "us-east-1", AWS_ENDPOINT_URL_STS = false,
}

-- Runs code in a child stagehost whose environment is CLEAN_ENV + env, HOME in a temp dir.
local function child(sb, code, env)
  local dir = T.tempdir(".aws")
  assert(fs.write(dir .. "/main.lua", code))
  local e = { HOME = dir, AWS_ENDPOINT_URL = sb.url, AWS_CONFIG_FILE = false, AWS_SHARED_CREDENTIALS_FILE = false }
  for k, v in pairs(CLEAN_ENV) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = type(v) == "string" and v:gsub("%$HOME", dir) or v end
  for name, text in pairs(env and env.files or {}) do assert(fs.write(dir .. "/" .. name, text)) end
  e.files = nil
  local r = proc.run{ STAGEHOST, dir .. "/main.lua", env = e, timeout = 60 }
  fs.remove(dir, { recursive = true })
  return r
end

local SHOW = [[
local aws = require("stagehost.aws")
local json = require("stagehost.json")
local c = aws.credentials()
-- an access key id read from the environment is masked like any *KEY* variable: compare it here
local id = c.access_key_id == os.getenv("AWS_ACCESS_KEY_ID") and "(AWS_ACCESS_KEY_ID)" or c.access_key_id
print(json.encode{ source = c.source, id = id, token = c.session_token ~= nil, expires = c.expires })
]]

local function shown(r)
  T.eq(r.code, 0, r.stderr)
  return json.decode(r.stdout:match("[^\n]+"))
end

T.test("credentials: environment, then profiles in the shared files", function()
  local sb = start()
  local c = shown(child(sb, SHOW, { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "env-secret-value" }))
  T.eq(c.source, "environment"); T.eq(c.id, "(AWS_ACCESS_KEY_ID)")
  local half = child(sb, SHOW, { AWS_ACCESS_KEY_ID = "AKIDENV" })
  T.eq(half.code, 1); T.has(half.stderr, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")

  local files = {
    [".aws/credentials"] = "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = file-secret-value\n\n" ..
      "[ci]\naws_access_key_id=AKIDCI\naws_secret_access_key=ci-secret-value\n",
    [".aws/config"] = "[default]\nregion = eu-west-1\n# a comment\n[profile deployer]\nrole_arn = arn:aws:iam::123456789012:role/deploy\n" ..
      "source_profile = ci\nregion = us-east-1\ns3 =\n  max_concurrent_requests = 4\n",
  }
  sb.state.aws.keys.AKIDCI = { secret = "ci-secret-value" } -- the source profile's key, known to "AWS"
  c = shown(child(sb, SHOW, { files = files }))
  T.eq(c.source, "profile default"); T.eq(c.id, "AKIDFILE")
  c = shown(child(sb, SHOW, { files = files, AWS_PROFILE = "ci" }))
  T.eq(c.id, "AKIDCI")
  local before = sb.state.aws.issued or 0
  c = shown(child(sb, SHOW, { files = files, AWS_PROFILE = "deployer" }))
  T.has(c.source, "role arn:aws:iam::123456789012:role/deploy")
  T.match(c.id, "^ASIA"); T.eq(c.token, true); T.ok(c.expires, "temporary credentials expire")
  T.eq((sb.state.aws.issued or 0) - before, 1, "one AssumeRole")
  -- a profile asked for by name wins over keys in the environment
  local named = child(sb, [[
local c = require("stagehost.aws").credentials{ profile = "ci" }
print(c.source)
]], { files = files, AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "env-secret-value" })
  T.eq(named.stdout, "profile ci\n", named.stderr)
  local missing = child(sb, SHOW, { files = files, AWS_PROFILE = "nope" })
  T.eq(missing.code, 1); T.has(missing.stderr, "profile 'nope' (AWS_PROFILE) is not in")
  -- the region comes from the profile when nothing else names one
  local region = child(sb, "print(require('stagehost.aws').region())", { files = files, AWS_REGION = false })
  T.eq(region.stdout, "eu-west-1\n", region.stderr)
  sb:close()
end)

T.test("credentials: web identity (the GitHub Actions OIDC route), refreshed before expiry", function()
  local sb = start()
  -- credentials that expire 302 s from now are due for renewal two seconds from now
  sb.state.aws.credential_seconds = 302
  local code = [[
local aws = require("stagehost.aws")
local task = require("stagehost.task")
local a = aws.credentials()
local b = aws.credentials() -- cached
task.sleep(2.1)
local c = aws.credentials() -- within five minutes of expiry: renewed
print(a.source, a.access_key_id == b.access_key_id, a.access_key_id ~= c.access_key_id)
print(aws.sts{}:get_caller_identity().arn)
]]
  -- a token as GitHub Actions' OIDC provider issues it: the sandbox, as STS, takes only a JWT
  -- from a provider it trusts, for its audience, unexpired
  local crypto = require("stagehost.crypto")
  local jwt = crypto.base64url_encode(json.encode{ alg = "RS256", typ = "JWT" }) .. "."
    .. crypto.base64url_encode(json.encode{ iss = "https://token.actions.githubusercontent.com", aud = "sts.amazonaws.com",
      sub = "repo:acme/web:ref:refs/heads/main", exp = os.time() + 3600, iat = os.time() })
    .. ".oidc-token-body-signature"
  local r = child(sb, code, { AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/gha-deploy",
    AWS_WEB_IDENTITY_TOKEN_FILE = "$HOME/token", files = { token = jwt .. "\n" } })
  T.eq(r.code, 0, r.stderr)
  T.has(r.stdout, "web identity arn:aws:iam::123456789012:role/gha-deploy\ttrue\ttrue")
  T.has(r.stdout, "gha-deploy")
  local assumed = 0
  for _, q in ipairs(sb.requests) do
    if q.action == "AssumeRoleWithWebIdentity" then assumed = assumed + 1 end
  end
  T.eq(assumed, 2, "one call, then one renewal")
  T.no_match(r.stdout .. r.stderr, "oidc%-token%-body", "the token never printed")
  local bad = child(sb, SHOW, { AWS_ROLE_ARN = "role/gha-deploy", AWS_WEB_IDENTITY_TOKEN_FILE = "$HOME/token",
    files = { token = "t0ken" } })
  T.eq(bad.code, 1, bad.stderr); T.has(bad.stderr, "malformed ARN 'role/gha-deploy'")
  sb:close()
end)

-- A loopback server answering like the ECS agent or EC2's IMDSv2.
local function metadata_server(expect_token)
  local seen = {}
  local srv = http.serve{ handler = function(req)
    seen[#seen + 1] = req.method .. " " .. req.path
    local creds = json.encode{ Code = "Success", AccessKeyId = "ASIAMETA", SecretAccessKey = "meta-secret-value",
      Token = "meta-session-token", Expiration = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 3600) }
    if req.path == "/latest/api/token" then
      if req.method ~= "PUT" or not req.headers["x-aws-ec2-metadata-token-ttl-seconds"] then return { status = 400, body = "" } end
      return "imds-session"
    end
    if req.path:find("^/latest/meta%-data/iam/security%-credentials/") then
      if req.headers["x-aws-ec2-metadata-token"] ~= "imds-session" then return { status = 401, body = "" } end
      if req.path == "/latest/meta-data/iam/security-credentials/" then return "ec2-role\n" end
      return creds
    end
    if req.path == "/creds" then
      if req.headers.authorization ~= expect_token then return { status = 403, body = "" } end
      return creds
    end
    return { status = 404, body = "" }
  end }
  return srv, seen
end

T.test("credentials: ECS container credentials and IMDSv2", function()
  local sb = start()
  local srv, seen = metadata_server("Bearer ecs-token")
  local base = ("http://127.0.0.1:%d"):format(srv.port)
  local c = shown(child(sb, SHOW, { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds",
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = "$HOME/ecs", files = { ecs = "Bearer ecs-token\n" } }))
  T.eq(c.source, "container credentials"); T.eq(c.id, "ASIAMETA"); T.eq(c.token, true)
  c = shown(child(sb, SHOW, { AWS_EC2_METADATA_DISABLED = "false", AWS_EC2_METADATA_SERVICE_ENDPOINT = base }))
  T.eq(c.source, "instance metadata (role ec2-role)"); T.eq(c.id, "ASIAMETA")
  T.has(table.concat(seen, ","), "PUT /latest/api/token,GET /latest/meta-data/iam/security-credentials/,GET /latest/meta-data/iam/security-credentials/ec2-role")
  -- the token never travels in the clear to anything but loopback or the agents' addresses
  local remote = child(sb, SHOW, { AWS_CONTAINER_CREDENTIALS_FULL_URI = "http://203.0.113.9/creds",
    AWS_CONTAINER_AUTHORIZATION_TOKEN = "Bearer ecs-token" })
  T.eq(remote.code, 1); T.has(remote.stderr, "is neither https nor a loopback or ECS/EKS agent address")
  local unreadable = child(sb, SHOW, { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds",
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = "$HOME/missing" })
  T.eq(unreadable.code, 1); T.has(unreadable.stderr, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  srv:close()
  sb:close()
end)

T.test("credentials: none found lists every source tried and what to set", function()
  local sb = start()
  local r = child(sb, SHOW, {})
  T.eq(r.code, 1)
  for _, source in ipairs{ "environment (", "web identity (", "shared config (", "container (", "instance metadata (" } do
    T.has(r.stderr:match("^[^\n]*"), source)
  end
  -- one line says it all; the traceback below it is the host's for any uncaught error
  T.has(r.stderr:match("^[^\n]*"), "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
  sb:close()
end)

T.test("secrets from the chain are masked in the log", function()
  local sb = start()
  local r = child(sb, [[
local aws = require("stagehost.aws")
local c = aws.credentials()
require("stagehost.log").info("secret is " .. c.secret_access_key)
]], { AWS_ACCESS_KEY_ID = "AKIDENV", AWS_SECRET_ACCESS_KEY = "env-secret-value" })
  T.eq(r.code, 0, r.stderr)
  T.has(r.stderr, "secret is ***")
  T.no_match(r.stderr, "env%-secret%-value")
  sb:close()
end)

T.test("bad arguments raise one clear line", function()
  T.raises(function() aws.request(42) end, "bad argument #1 to 'aws.request' (table expected, got number)")
  T.raises(function() aws.request{} end, "service must be a string")
  T.raises(function() aws.cloudformation(7) end, "bad argument #1 to 'aws.cloudformation'")
  local c = aws.cloudformation{ region = "us-east-1", endpoint = "http://127.0.0.1:9", credentials = CREDS }
  T.raises(function() c:describe_stack("9lives") end, "stack name '9lives' is not valid")
  T.raises(function() c:create_change_set{ stack_name = "ok" } end, "give the template as body")
  T.raises(function() aws.credentials(5) end, "bad argument #1 to 'aws.credentials'")
end)

T.run()
