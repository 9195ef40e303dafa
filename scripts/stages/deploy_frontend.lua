-- Deploy the "frontend": environment from the infrastructure's outputs into its config, start
-- it, check it comes up, capture its URL.
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")

return function(ctx)
  local infra = ctx.outputs["deploy-infrastructure"]
  local env = { STAGEHOST_PREFIX = infra.prefix, STAGEHOST_VERSION = infra.version, STAGEHOST_ENV = ctx.run.env or "staging" }
  local lines = {}
  for _, k in ipairs{ "STAGEHOST_ENV", "STAGEHOST_PREFIX", "STAGEHOST_VERSION" } do lines[#lines + 1] = k .. "=" .. env[k] end
  assert(fs.mkdir(infra.prefix .. "/etc"))
  assert(fs.write(infra.prefix .. "/etc/staging.env", table.concat(lines, "\n") .. "\n"))
  -- the deployed build finds its own library with that environment
  local probe = proc.run{ infra.binary, "-e", "print(package.path:match('^[^;]+'))", env = env }
  if not probe.ok then error("the deployed build does not start: " .. probe.stderr, 0) end
  local url = "file://" .. infra.prefix .. "/share/stagehost/lua"
  ctx.log.info("frontend at " .. url)
  return { url = url, env = env }
end
