-- Lambda in the sandbox: a deployed AWS::Lambda::Function's code runs for real, with node, as
-- `sam local start-api` runs it. The code is the zip CloudFormation was given (Code.S3Bucket /
-- S3Key), fetched from the sandbox's own S3 and unzipped once per object into the work
-- directory; each invocation is one node process (lambda_runner.js, next to this file) that
-- reads the event on stdin and prints the result. The function's environment is its
-- Environment.Variables plus what Lambda sets (AWS_REGION, AWS_LAMBDA_FUNCTION_NAME, ...) and
-- credentials the sandbox accepts with AWS_ENDPOINT_URL pointing at it, and
-- STAGEHOST_SANDBOX_DATA_DIR (lambda.data_dir); none of the host's AWS or GitHub settings leak in.
local crypto = require("stagehost.crypto")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")
local proc = require("stagehost.proc")
local wire = require("stagehost.sandbox.wire")

local lambda = {}

local RUNNER = (package.searchpath("stagehost.sandbox.lambda", package.path) or ""):gsub("lambda%.lua$", "lambda_runner.js")

-- The host's variables a function must not see: Lambda gives a function its role's
-- credentials, not the deployer's.
local HIDDEN = { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN",
  "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GITHUB_TOKEN", "GH_TOKEN",
  "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_RUNTIME_TOKEN", "NODE_OPTIONS" }

-- The directory the sandbox unpacks code into (made on first use).
local function work_dir(sb)
  if not sb.work_dir then
    local base = os.getenv("TMPDIR")
    if not base or base == "" then base = "/tmp" end
    sb.work_dir = ("%s/stagehost-sandbox-%d-%s"):format(base, sb.port or 0, wire.random_lower(8))
  end
  assert(fs.mkdir(sb.work_dir .. "/code", { mode = 448 }))
  return sb.work_dir
end

-- lambda.data_dir(sb) -> a directory every function of the sandbox may keep files in across
-- invocations (each runs in a new process, as a cold Lambda does): STAGEHOST_SANDBOX_DATA_DIR.
-- Kept with the world when it persists, else removed with the sandbox.
function lambda.data_dir(sb)
  local dir = sb.persist and (sb.persist.dir .. "/data") or (work_dir(sb) .. "/data")
  assert(fs.mkdir(dir, { mode = 448 }))
  return dir
end

-- lambda.code_dir(sb, bucket, key) -> the directory holding the object's files, or nil and why
function lambda.code_dir(sb, bucket, key)
  local b = sb.state.aws.s3 and sb.state.aws.s3.buckets[bucket or ""]
  local obj = b and b.objects[key or ""]
  if not obj then return nil, ("the function's code s3://%s/%s is not in the sandbox's S3"):format(tostring(bucket), tostring(key)) end
  local dir = work_dir(sb) .. "/code/" .. crypto.sha256(obj.etag .. "\0" .. bucket .. "/" .. key, "hex"):sub(1, 24)
  if fs.exists(dir .. "/.unpacked") then return dir end
  fs.remove(dir, { recursive = true })
  assert(fs.mkdir(dir))
  assert(fs.write(dir .. "/.code.zip", obj.body))
  local r = proc.run{ "unzip", "-q", "-o", ".code.zip", "-d", ".", cwd = dir, quiet = true }
  if not r.ok then return nil, "unzip failed: " .. (r.stderr or "") end
  fs.remove(dir .. "/.code.zip")
  assert(fs.write(dir .. "/.unpacked", ""))
  return dir
end

-- lambda.invoke(sb, fn, event) -> result (decoded JSON) | nil, error {type, message}
-- fn = {name, arn, handler, code = {S3Bucket, S3Key}, environment = {K = v}, timeout, memory,
-- region, runtime}
function lambda.invoke(sb, fn, event)
  local dir, why = lambda.code_dir(sb, fn.code and fn.code.S3Bucket, fn.code and fn.code.S3Key)
  if not dir then return nil, { type = "Runtime.CodeMissing", message = why } end
  local timeout = tonumber(fn.timeout) or 3
  local request_id = wire.uuid()
  local env = {}
  for _, name in ipairs(HIDDEN) do env[name] = false end
  for k, v in pairs(fn.environment or {}) do env[k] = tostring(v) end
  local region = fn.region or sb.state.aws.region
  for k, v in pairs{
    AWS_REGION = region, AWS_DEFAULT_REGION = region, AWS_LAMBDA_FUNCTION_NAME = fn.name,
    AWS_LAMBDA_FUNCTION_VERSION = "$LATEST", AWS_LAMBDA_FUNCTION_MEMORY_SIZE = tostring(fn.memory or 128),
    AWS_LAMBDA_FUNCTION_TIMEOUT = tostring(timeout), AWS_EXECUTION_ENV = "AWS_Lambda_" .. tostring(fn.runtime or "nodejs20.x"),
    LAMBDA_TASK_ROOT = dir, STAGEHOST_REQUEST_ID = request_id, STAGEHOST_FUNCTION_ARN = fn.arn,
    AWS_ACCESS_KEY_ID = sb.credentials.access_key_id, AWS_SECRET_ACCESS_KEY = sb.credentials.secret_access_key,
    AWS_ENDPOINT_URL = sb.url, TZ = ":UTC", STAGEHOST_SANDBOX_DATA_DIR = lambda.data_dir(sb),
  } do env[k] = v end
  local r = proc.run{ "node", RUNNER, dir, fn.handler, cwd = dir, env = env, stdin = json.encode(event),
    timeout = timeout + 1, grace = 1, name = "lambda " .. tostring(fn.name), quiet = true }
  sb.invocations = sb.invocations or {}
  table.insert(sb.invocations, { name = fn.name, request_id = request_id, code = r.code, duration = r.duration,
    logs = r.stderr })
  if r.timed_out then
    return nil, { type = "Sandbox.Timedout", message = ("Task timed out after %.2f seconds"):format(timeout) }
  end
  local result = json.decode(r.stdout or "")
  if r.code ~= 0 then
    local e = type(result) == "table" and result or {}
    log.debug(("sandbox: lambda %s failed: %s"):format(tostring(fn.name), (r.stderr or ""):sub(1, 2000)))
    return nil, { type = e.errorType or "Runtime.ExitError", message = e.errorMessage or ("exit " .. r.code) }
  end
  return result
end

return lambda
