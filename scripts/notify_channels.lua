-- Where the flows' notifications go: the console always, and each chat or mail channel whose
-- setting is in the environment (a CI secret). One list for every flow; filter with `on`.
local function env(name) return os.getenv(name) end

return {
  { channel = "console" },
  { channel = "slack", url = env("SLACK_WEBHOOK_URL"), enabled = env("SLACK_WEBHOOK_URL") ~= nil },
  { channel = "teams", url = env("TEAMS_WORKFLOW_URL"), enabled = env("TEAMS_WORKFLOW_URL") ~= nil,
    on = { "approval.*", "deploy.*", "release.*" } },
  { channel = "webhook", url = env("DEPLOY_WEBHOOK_URL"), secret = env("DEPLOY_WEBHOOK_SECRET"),
    enabled = env("DEPLOY_WEBHOOK_URL") ~= nil },
  { channel = "email", url = env("SMTP_URL"), from = env("SMTP_FROM"), to = env("RELEASE_MANAGERS"),
    username = env("SMTP_USER"), password = env("SMTP_PASSWORD"), enabled = env("SMTP_URL") ~= nil,
    on = { "approval.requested", "deploy.failure", "release.ready" } },
}
