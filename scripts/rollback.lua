-- Roll an environment back to a recorded release: its template, parameters and Amplify job.
--
--   stagehost run scripts/rollback.lua --env staging                    # the newest good release
--   stagehost run scripts/rollback.lua --env production --var release=v1.3.2
local pipeline = require("stagehost.pipeline")

return pipeline.define {
  name = "rollback",
  trigger = { manual = true },
  concurrency = function(run) return "deploy-" .. (run.env or "?") end,
  notify = require("notify_channels"),
  stages = {
    { name = "rollback", run = "stages/rollback.lua", timeout = "30m" },
    { name = "smoke-check", needs = { "rollback" }, run = "stages/smoke_check.lua", timeout = "5m", retry = 1 },
    { name = "notify", needs = { "rollback", "smoke-check" }, when = "always", run = "stages/notify.lua" },
  },
}
