-- stagehost run --sandbox: a pipeline whose stages deploy a CloudFormation stack and cut a
-- GitHub release runs to the end with no account and no credentials, against the emulator the
-- host starts; the same pipeline without --sandbox fails for want of credentials. A resumed
-- sandbox run is a sandbox run again.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")

local PIPELINE = [[
local pipeline = require("stagehost.pipeline")
local aws = require("stagehost.aws")
local github = require("stagehost.github")
local task = require("stagehost.task")

local TEMPLATE = {
  Resources = { Api = { Type = "AWS::ApiGateway::RestApi", Properties = { Name = "api" } } },
  Outputs = { ApiUrl = { Value = { ["Fn::Sub"] = "https://${Api}.execute-api.${AWS::Region}.amazonaws.com/prod/" } } },
}

return pipeline.define{ name = "cloud", stages = {
  { name = "infra", run = function(ctx)
    local cfn = aws.cloudformation{ poll = { min = 0.05, max = 0.2 } }
    local result = cfn:deploy{ stack_name = "web-staging", template = TEMPLATE }
    return { api_url = result.outputs.ApiUrl, sandbox = ctx.run.sandbox == true }
  end },
  { name = "release", needs = { "infra" }, run = function(ctx)
    if os.getenv("PAUSE_FILE") then
      print("release: waiting")
      while not require("stagehost.fs").exists(os.getenv("PAUSE_FILE")) do task.sleep(0.05) end
    end
    local gh = github.client{}
    local release = gh:create_release{ tag_name = "rc-1", name = "rc-1", body = "API at " .. ctx.outputs.infra.api_url }
    return { release_url = release.html_url, tag = release.tag_name }
  end },
} }
]]

-- No credentials anywhere: the environment is emptied of AWS and GitHub settings.
local function clean_env(dir, extra)
  local env = { HOME = dir, AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_SESSION_TOKEN = false,
    AWS_PROFILE = false, AWS_ROLE_ARN = false, AWS_WEB_IDENTITY_TOKEN_FILE = false, AWS_ENDPOINT_URL = false,
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = false, AWS_CONTAINER_CREDENTIALS_FULL_URI = false,
    AWS_EC2_METADATA_DISABLED = "true", AWS_REGION = false, AWS_DEFAULT_REGION = false,
    GITHUB_TOKEN = false, GITHUB_API_URL = false, GITHUB_REPOSITORY = false, GITHUB_ACTIONS = false }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function sh(dir, args, extra)
  return T.stagehost(dir, args, { env = clean_env(dir, extra) })
end

local function status(dir, id)
  return json.decode(sh(dir, { "status", id, "--json" }).stdout)
end

local function outputs_of(st, name)
  for _, s in ipairs(st.stages) do
    if s.name == name then return s.outputs or {}, s end
  end
end

T.test("run --sandbox: stack deployed, release cut, no account needed", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/p.lua", PIPELINE))
  local r = sh(dir, { "run", "p.lua", "--sandbox" })
  T.eq(r.code, 0, r.stdout .. r.stderr)
  local id = r.stdout:match("^run (%S+)\n")
  T.ok(id, "the first line is the run id")
  T.match(r.stderr, "sandbox: AWS %(CloudFormation, STS, Amplify%) and GitHub are emulated at http://127%.0%.0%.1:%d+")
  T.has(r.stderr, "CREATE_COMPLETE")
  local st = status(dir, id)
  T.eq(st.status, "success")
  local infra = outputs_of(st, "infra")
  -- the sandbox serves the API it deployed: the execute-api URL comes back as its own
  T.match(infra.api_url, "^http://127%.0%.0%.1:%d+/_api/%w+/prod/$")
  T.eq(infra.sandbox, true, "ctx.run.sandbox")
  local release = outputs_of(st, "release")
  T.eq(release.tag, "rc-1")
  T.match(release.release_url, "/releases/tag/rc%-1$")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("the same pipeline without --sandbox fails for want of credentials, saying what to set", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/p.lua", PIPELINE))
  local r = sh(dir, { "run", "p.lua" }, { AWS_REGION = "us-east-1" })
  T.eq(r.code, 1, r.stderr)
  T.has(r.stdout .. r.stderr, "no credentials found")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("a resumed sandbox run gets a sandbox again", function()
  local dir = T.tempdir()
  assert(fs.write(dir .. "/p.lua", PIPELINE))
  local pause = dir .. "/go"
  local argv = { STAGEHOST, "run", "p.lua", "--sandbox", cwd = dir, lines = true,
    env = clean_env(dir, { PAUSE_FILE = pause }) }
  local host = proc.spawn(argv)
  local id
  for _ = 1, 200 do
    local _, line = host:read_line()
    if not line then break end
    id = id or line:match("^run (%S+)")
    if line:find("release: waiting", 1, true) then break end
  end
  host:kill("KILL")
  host:wait()
  T.ok(id, "saw the run id")
  T.eq(status(dir, id).status, "interrupted")
  assert(fs.write(pause, "go"))
  local r = sh(dir, { "resume", id }, { PAUSE_FILE = pause })
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.match(r.stderr, "sandbox: AWS")
  local st = status(dir, id)
  T.eq(st.status, "success")
  T.eq(outputs_of(st, "release").tag, "rc-1")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.run()
