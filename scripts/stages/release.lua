-- Mark the release ready: release notes from the changes since the last rc tag. (The GitHub
-- release is updated once the GitHub client lands; until then the notes are an artifact.)
local proc = require("stagehost.proc")

return function(ctx)
  local root = ctx.pipeline.dir .. "/.."
  local range = ctx.outputs.validate.range
  local log = proc.run{ "git", "log", "--no-merges", "--format=- %s (%h)", range, cwd = root }
  local notes = ("# %s\n\n%s"):format(ctx.run.tag or ("staging run " .. ctx.run.id),
    log.ok and log.stdout or "(no git history here)\n")
  ctx:artifact("release-notes.md", notes)
  ctx.log.info("release ready: " .. (ctx.run.tag or ctx.run.id))
  return { notes = notes, ready = true }
end
