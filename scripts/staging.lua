-- The staging deployment: pre-deployment checks -> approval (24 h) -> validate -> deploy
-- infrastructure -> deploy frontend -> integration tests -> mark release ready -> notify.
-- Until the cloud clients land, it deploys this repository itself to a local staging prefix
-- with local commands only, so anyone can run the whole flow:
--
--   stagehost run scripts/staging.lua --var approve=yes [--var build=build] [--tag rc-1.0.0]
local pipeline = require("stagehost.pipeline")

return pipeline.define {
  name = "staging",
  trigger = { tags = { "rc-*" }, manual = true },
  notify = { { channel = "console" } },
  stages = {
    { name = "pre-deployment-checks", run = "stages/pre_checks.lua", timeout = "10m" },
    { name = "approval-gate", needs = { "pre-deployment-checks" }, run = "stages/approval.lua", gate = true, timeout = "25h" },
    { name = "validate", needs = { "approval-gate" }, run = "stages/validate.lua", timeout = "3m" },
    { name = "deploy-infrastructure", needs = { "validate" }, run = "stages/deploy_infrastructure.lua", timeout = "15m" },
    { name = "deploy-frontend", needs = { "deploy-infrastructure" }, run = "stages/deploy_frontend.lua", timeout = "10m" },
    { name = "integration-tests", needs = { "deploy-frontend" }, run = "stages/integration_tests.lua", timeout = "15m" },
    { name = "mark-release-ready", needs = { "integration-tests" }, when = "decisions/all_tests_passed.lua",
      run = "stages/release.lua", timeout = "2m" },
    { name = "notify", needs = { "mark-release-ready", "deploy-infrastructure", "deploy-frontend", "integration-tests" },
      when = "always", run = "stages/notify.lua" },
  },
}
