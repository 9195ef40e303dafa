-- Promises of the AWS clients that read the environment, each in a child host: the endpoint
-- resolution order, AWS_MAX_ATTEMPTS, Retry-After, one shared credentials refresh for tasks
-- that ask at once; and a cancel that stops a request in flight at once.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local json = require("stagehost.json")
local http = require("stagehost.http")
local aws = require("stagehost.aws")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

-- The AWS variables of this environment must not leak into the children's.
local CLEAN = {
  AWS_ENDPOINT_URL = false, AWS_ENDPOINT_URL_CLOUDFORMATION = false, AWS_ENDPOINT_URL_STS = false,
  AWS_IGNORE_CONFIGURED_ENDPOINT_URLS = false, AWS_MAX_ATTEMPTS = false, AWS_PROFILE = false,
  AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_SESSION_TOKEN = false,
  AWS_CONTAINER_CREDENTIALS_FULL_URI = false, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = false,
  AWS_WEB_IDENTITY_TOKEN_FILE = false, AWS_ROLE_ARN = false, AWS_EC2_METADATA_DISABLED = "true",
  AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent", AWS_REGION = "eu-west-1",
}

-- Run Lua code in a child host with env on top of CLEAN; -> its result (stdout decoded as JSON).
local function child(code, env)
  local e = {}
  for k, v in pairs(CLEAN) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = v end
  local r = proc.run{ STAGEHOST, "-e", code, env = e, timeout = 60 }
  T.eq(r.code, 0, r.stderr)
  return json.decode(r.stdout), r
end

T.test("endpoints: AWS_ENDPOINT_URL_<SERVICE> beats AWS_ENDPOINT_URL beats the regional one; IGNORE turns both off", function()
  local code = [[
    local aws = require("stagehost.aws")
    print(require("stagehost.json").encode{ cfn = aws.endpoint("cloudformation"), sts = aws.endpoint("sts") })
  ]]
  local none = child(code)
  T.eq(none.cfn, "https://cloudformation.eu-west-1.amazonaws.com"); T.eq(none.sts, "https://sts.eu-west-1.amazonaws.com")
  local global = child(code, { AWS_ENDPOINT_URL = "http://127.0.0.1:4566/" })
  T.eq(global.cfn, "http://127.0.0.1:4566"); T.eq(global.sts, "http://127.0.0.1:4566")
  local both = child(code, { AWS_ENDPOINT_URL = "http://127.0.0.1:4566", AWS_ENDPOINT_URL_CLOUDFORMATION = "http://127.0.0.1:5000" })
  T.eq(both.cfn, "http://127.0.0.1:5000", "the service's own variable wins")
  T.eq(both.sts, "http://127.0.0.1:4566", "the others keep the global one")
  local ignored = child(code, { AWS_ENDPOINT_URL = "http://127.0.0.1:4566", AWS_ENDPOINT_URL_CLOUDFORMATION = "http://127.0.0.1:5000",
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS = "true" })
  T.eq(ignored.cfn, "https://cloudformation.eu-west-1.amazonaws.com"); T.eq(ignored.sts, "https://sts.eu-west-1.amazonaws.com")
end)

-- A read against the sandbox with every answer throttled; -> how many requests reached it.
local THROTTLED = [[
  local aws = require("stagehost.aws")
  local sb = require("stagehost.sandbox").start{}
  local restore = sb:use{ region = "eu-west-1" }
  sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 400, code = "Throttling",
    message = "Rate exceeded", times = 100 }
  local c = aws.cloudformation{ retry_base = 0.001 }
  local ok, err = pcall(c.describe_stack, c, "x")
  local n = 0
  for _, r in ipairs(sb.requests) do if r.action == "DescribeStacks" then n = n + 1 end end
  restore()
  sb:close()
  print(require("stagehost.json").encode{ ok = ok, code = type(err) == "table" and err.code or tostring(err), requests = n })
]]

T.test("AWS_MAX_ATTEMPTS sets how many times a throttled call is tried", function()
  local two = child(THROTTLED, { AWS_MAX_ATTEMPTS = "2" })
  T.eq(two.ok, false); T.eq(two.code, "Throttling"); T.eq(two.requests, 2)
  local seven = child(THROTTLED, { AWS_MAX_ATTEMPTS = "7" })
  T.eq(seven.requests, 7)
  local default = child(THROTTLED)
  T.eq(default.requests, 5, "five attempts by default")
  local e = {}
  for k, v in pairs(CLEAN) do e[k] = v end
  e.AWS_MAX_ATTEMPTS = "lots"
  local bad = proc.run{ STAGEHOST, "-e", THROTTLED, env = e, timeout = 60 }
  T.has(bad.stdout .. bad.stderr, "check AWS_MAX_ATTEMPTS")
end)

T.test("Retry-After from AWS is honoured between attempts", function()
  local r = child([[
    local aws = require("stagehost.aws")
    local task = require("stagehost.task")
    local sb = require("stagehost.sandbox").start{}
    local restore = sb:use{ region = "eu-west-1" }
    sb:fail_next{ service = "cloudformation", action = "DescribeStacks", status = 503, code = "ServiceUnavailable",
      message = "busy", headers = { ["Retry-After"] = "1" } }
    local c = aws.cloudformation{ retry_base = 0.001 }
    local t0 = task.now()
    local stack = c:describe_stack("nothing-here")
    local took = task.now() - t0
    restore()
    sb:close()
    print(require("stagehost.json").encode{ took = took, found = stack ~= nil })
  ]])
  T.eq(r.found, false)
  -- the backoff alone would have waited a millisecond
  T.ok(r.took >= 0.9, "waited for Retry-After: " .. r.took .. " s")
end)

T.test("tasks that ask for credentials at once share one refresh", function()
  local asked = 0
  local srv = http.serve{ handler = function()
    asked = asked + 1
    task.sleep(0.2) -- long enough for every task to be waiting on this one request
    return json.encode{ AccessKeyId = "ASIASHARED", SecretAccessKey = "shared-secret-0123456789",
      Token = "shared-token", Expiration = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 3600) }
  end }
  local r = child([[
    local aws = require("stagehost.aws")
    local task = require("stagehost.task")
    local fns = {}
    for i = 1, 10 do fns[i] = function() return aws.credentials().access_key_id end end
    local ids = task.all(fns)
    print(require("stagehost.json").encode{ n = #ids, first = ids[1], last = ids[10] })
  ]], { AWS_CONTAINER_CREDENTIALS_FULL_URI = ("http://127.0.0.1:%d/creds"):format(srv.port) })
  srv:close()
  T.eq(r.n, 10); T.eq(r.first, "ASIASHARED"); T.eq(r.last, "ASIASHARED")
  T.eq(asked, 1, "ten tasks, one request to the credentials endpoint")
end)

T.test("a cancel stops an AWS request that is in flight at once", function()
  local arrived, closed = false, false
  local slow = http.serve{ handler = function(req)
    arrived = true
    local s = req:stream{ status = 200 }
    -- the server learns that the client went away when its writes fail
    for _ = 1, 300 do
      local ok, written = pcall(s.write, s, ("x"):rep(16384))
      if not ok or not written then closed = true return end
      task.sleep(0.02)
    end
    s:close()
  end }
  local t = task.spawn(function()
    return aws.request{ service = "sts", region = "us-east-1", endpoint = ("http://127.0.0.1:%d"):format(slow.port),
      credentials = { access_key_id = "AKIDX", secret_access_key = "secret-0123456789" },
      form = { Action = "GetCallerIdentity", Version = "2011-06-15" } }
  end)
  local deadline = task.now() + 10
  while not arrived and task.now() < deadline do task.sleep(0.01) end
  T.ok(arrived, "the request was in flight")
  local t0 = task.now()
  t:cancel("enough")
  local done, err = t:join()
  T.ok(task.now() - t0 < 1, "ended at once (the answer had 6 s to go)")
  T.eq(done, false); T.eq(type(err) == "table" and err.kind, "cancelled")
  deadline = task.now() + 5
  while not closed and task.now() < deadline do task.sleep(0.02) end
  T.ok(closed, "the connection was closed, not left to finish")
  slow:close()
end)

T.run()
