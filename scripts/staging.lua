-- The staging deployment of the example app (examples/webapp): pre-deployment checks ->
-- approval (24 h) -> validate -> deploy infrastructure -> deploy frontend -> integration
-- tests -> mark release ready -> notify. Each stage is a file in stages/, each decision one in
-- decisions/; who approves and where it deploys is in policy.lua.
--
--   stagehost run scripts/staging.lua --sandbox --auto-approve    # the whole flow, no account
--   stagehost run scripts/staging.lua --tag rc-1.4.0                # for real (AWS and GitHub)
local pipeline = require("stagehost.pipeline")

return pipeline.define {
  name = "staging",
  trigger = { tags = { "rc-*" }, manual = true },
  concurrency = "deploy-staging",
  notify = require("notify_channels"),
  stages = {
    { name = "pre-deployment-checks", run = "stages/pre_checks.lua", timeout = "15m" },
    { name = "approval-gate", needs = { "pre-deployment-checks" }, run = "stages/approval.lua", gate = true, timeout = "25h" },
    { name = "validate", needs = { "approval-gate" }, run = "stages/validate.lua", timeout = "5m" },
    { name = "deploy-infrastructure", needs = { "validate" }, run = "stages/deploy_infrastructure.lua", timeout = "30m" },
    { name = "deploy-frontend", needs = { "deploy-infrastructure" }, run = "stages/deploy_frontend.lua", timeout = "20m" },
    { name = "integration-tests", needs = { "deploy-frontend" }, run = "stages/integration_tests.lua", timeout = "15m" },
    { name = "mark-release-ready", needs = { "integration-tests" }, when = "decisions/all_tests_passed.lua",
      run = "stages/release.lua", timeout = "5m" },
    { name = "notify", needs = { "mark-release-ready", "deploy-infrastructure", "deploy-frontend", "integration-tests" },
      when = "always", run = "stages/notify.lua" },
  },
}
