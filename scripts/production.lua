-- The production deployment: v* tags. The same checks and stage files as staging, two
-- approvals from the production list (policy.lua; not the person who started the run nor an
-- author of the commits), then validate, deploy, a smoke check, and the release published.
--
--   stagehost run scripts/production.lua --tag v1.4.0
local pipeline = require("stagehost.pipeline")

return pipeline.define {
  name = "production",
  trigger = {
    tags = { "v*" },
    manual = false, -- only a release tag: a run by hand names one (--tag v1.4.0); HEAD alone is refused
  },
  concurrency = "deploy-production",
  notify = require("notify_channels"),
  stages = {
    { name = "pre-deployment-checks", run = "stages/pre_checks.lua", timeout = "15m" },
    { name = "approval-gate", needs = { "pre-deployment-checks" }, run = "stages/approval.lua", gate = true, timeout = "73h" },
    { name = "validate", needs = { "approval-gate" }, run = "stages/validate.lua", timeout = "5m" },
    { name = "deploy-infrastructure", needs = { "validate" }, run = "stages/deploy_infrastructure.lua", timeout = "30m" },
    { name = "deploy-frontend", needs = { "deploy-infrastructure" }, run = "stages/deploy_frontend.lua", timeout = "20m" },
    { name = "smoke-check", needs = { "deploy-frontend" }, run = "stages/smoke_check.lua", timeout = "5m", retry = 1 },
    { name = "mark-release-ready", needs = { "smoke-check" }, run = "stages/release.lua", timeout = "5m" },
    { name = "notify", needs = { "mark-release-ready", "deploy-infrastructure", "deploy-frontend", "smoke-check" },
      when = "always", run = "stages/notify.lua" },
  },
}
