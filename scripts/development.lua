-- The development deployment: every push to develop. Basic checks (lint, types, unit tests),
-- no approval, validate, deploy, then a smoke check; when the smoke check fails the
-- environment goes back to its last good release on its own.
--
--   stagehost run scripts/development.lua --sandbox
local pipeline = require("stagehost.pipeline")

return pipeline.define {
  name = "development",
  trigger = { branches = { "develop" }, manual = true },
  concurrency = { group = "deploy-development", cancel_in_progress = true },
  notify = require("notify_channels"),
  stages = {
    { name = "pre-deployment-checks", run = "stages/pre_checks.lua", timeout = "15m" },
    { name = "validate", needs = { "pre-deployment-checks" }, when = "decisions/checks_passed.lua",
      run = "stages/validate.lua", timeout = "5m" },
    { name = "deploy-infrastructure", needs = { "validate" }, run = "stages/deploy_infrastructure.lua", timeout = "30m" },
    { name = "deploy-frontend", needs = { "deploy-infrastructure" }, run = "stages/deploy_frontend.lua", timeout = "20m" },
    { name = "smoke-check", needs = { "deploy-frontend" }, run = "stages/smoke_check.lua", timeout = "5m", retry = 1 },
    { name = "rollback", needs = { "smoke-check" }, when = "decisions/smoke_failed.lua",
      run = "stages/rollback.lua", timeout = "30m" },
    { name = "notify", needs = { "smoke-check", "rollback" }, when = "always", run = "stages/notify.lua" },
  },
}
