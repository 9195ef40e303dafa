-- What every stage of the flows needs to know about the application and where it goes: the
-- repository root, the app's directory, the target environment and its policy, and npm run
-- in the app with its output live in the stage's log.
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")
local policy = require("policy")

local app = {}

-- app.of(ctx) -> {root, dir, env, policy (the environment's), stack, branch, region}
-- The environment is --env, else the pipeline's name (staging, development, production).
function app.of(ctx)
  local root = ctx.pipeline.dir:gsub("/scripts/?$", "")
  if root == ctx.pipeline.dir then root = ctx.pipeline.dir .. "/.." end
  local env = ctx.run.env or ctx.run.pipeline
  local p = policy.environments[env]
  if not p then
    local names = {}
    for name in pairs(policy.environments) do names[#names + 1] = name end
    table.sort(names)
    error(("no environment '%s' in scripts/policy.lua (it has %s): pass --env NAME"):format(env, table.concat(names, ", ")), 0)
  end
  local dir = ctx.vars.app or policy.app
  if dir:sub(1, 1) ~= "/" then dir = root .. "/" .. dir end
  return { root = root, dir = dir, env = env, policy = p, stack = ctx.vars.stack or p.stack,
    branch = p.branch, region = policy.region, bucket = policy.bucket, amplify_app = policy.amplify_app }
end

-- The app's npm packages, installed (npm ci) when node_modules has none yet; after a change
-- of package-lock.json, run `npm ci` in the app once. -> the proc.run result.
function app.install(a)
  local modules = fs.exists(a.dir .. "/node_modules/.package-lock.json")
  if modules then return { ok = true, code = 0, skipped = true } end
  return proc.run{ "npm", "ci", "--no-audit", "--no-fund", cwd = a.dir, name = "npm ci", timeout = 900 }
end

-- Run a command of the app's node_modules/.bin (eslint, tsc, ...) in the app's directory.
-- opts: env, name, timeout, stdout (a path).
function app.npx(a, argv, opts)
  opts = opts or {}
  local cmd = { "npx", "--no-install" }
  for _, v in ipairs(argv) do cmd[#cmd + 1] = v end
  cmd.cwd, cmd.env, cmd.name, cmd.timeout = a.dir, opts.env, opts.name, opts.timeout or 600
  cmd.quiet = opts.quiet
  return proc.run(cmd)
end

return app
