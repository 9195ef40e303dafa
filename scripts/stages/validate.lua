-- Validate before deploying: the build definition configures (our "template validate"), the
-- pipeline files parse (our "lint"), and a preview of what changes since the last rc tag.
local proc = require("stagehost.proc")

local function under(root, path) return path:sub(1, 1) == "/" and path or (root .. "/" .. path) end

return function(ctx)
  local root = ctx.pipeline.dir .. "/.."
  local build = ctx.vars.build or "build"
  local configure = proc.run{ "cmake", "-S", root, "-B", under(root, build), cwd = root, name = "cmake" }
  if not configure.ok then error("the build definition does not configure:\n" .. configure.stderr, 0) end
  local lint = proc.run{ shell = "for f in scripts/*.lua scripts/stages/*.lua scripts/decisions/*.lua; do luac5.4 -p \"$f\" || exit 1; done",
    cwd = root, name = "lint" }
  if not lint.ok then error("pipeline files do not parse:\n" .. lint.stderr, 0) end
  local since = proc.run{ "git", "describe", "--tags", "--abbrev=0", "--match", "rc-*", cwd = root }
  local range = since.ok and (since.stdout:gsub("%s+$", "") .. "..HEAD") or "HEAD~10..HEAD"
  local preview = proc.run{ "git", "log", "--oneline", "--no-decorate", range, cwd = root }
  local changes = preview.ok and preview.stdout or "(no git history here)\n"
  ctx:artifact("change-preview.txt", changes)
  local count = select(2, changes:gsub("\n", ""))
  ctx.log.info(("%d change(s) in %s"):format(count, range))
  return { changes = count, range = range }
end
