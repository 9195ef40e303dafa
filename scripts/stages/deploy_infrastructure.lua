-- Deploy the "infrastructure": build, install into the staging prefix, wait until the installed
-- binary answers (our "stack stable"), capture its outputs.
local proc = require("stagehost.proc")

local function under(root, path) return path:sub(1, 1) == "/" and path or (root .. "/" .. path) end

return function(ctx)
  local root = ctx.pipeline.dir .. "/.."
  local build = under(root, ctx.vars.build or "build")
  local prefix = ctx.vars.prefix or (ctx.dir .. "/staging")
  local built = proc.run{ "cmake", "--build", build, "-j", "2", name = "build" }
  if not built.ok then error("build failed (exit " .. built.code .. ")", 0) end
  local installed = proc.run{ "cmake", "--install", build, "--prefix", prefix, name = "install" }
  if not installed.ok then error("install failed:\n" .. installed.stderr, 0) end
  local binary = prefix .. "/bin/stagehost"
  local version = proc.run{ binary, "--version" }
  if not version.ok then error("the installed binary does not start: " .. version.stderr, 0) end
  local outputs = { prefix = prefix, binary = binary, version = version.stdout:match("^stagehost (%S+)") }
  ctx:artifact("stack-outputs.json", outputs)
  ctx.log.info(("stagehost %s installed in %s"):format(outputs.version, prefix))
  return outputs
end
