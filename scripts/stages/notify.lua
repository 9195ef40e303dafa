-- Notifications: success, or the phase that failed or was cancelled, read from ctx.stages.
-- Notification channels (Slack, e-mail, webhooks) land with their issue; the message is
-- logged and kept as an artifact.
local PHASES = { "pre-deployment-checks", "approval-gate", "validate", "deploy-infrastructure",
  "deploy-frontend", "integration-tests", "mark-release-ready" }

return function(ctx)
  local stopped
  for _, name in ipairs(PHASES) do
    local stage = ctx.stages[name]
    if stage and (stage.status == "failure" or stage.status == "cancelled") then
      stopped = stopped or { name = name, stage = stage }
    end
  end
  local release = ctx.stages["mark-release-ready"]
  local ready = release and release.status == "success" and release.outputs.ready == true
  local message
  if ready then
    message = ("Deployment complete: %s is ready for production"):format(ctx.run.tag or ctx.run.id)
  elseif stopped then
    message = ("Deployment %s at %s: %s (run %s)"):format(stopped.stage.status == "failure" and "failed" or "cancelled",
      stopped.name, stopped.stage.error or stopped.stage.reason or "?", ctx.run.id)
  else
    message = ("Deployment stopped before the release: review run %s"):format(ctx.run.id)
  end
  ctx:artifact("notification.json", { event = ready and "deploy.success" or "deploy.failure",
    phase = stopped and stopped.name, message = message })
  if ready then ctx.log.info(message) else ctx.log.error(message) end
  return { message = message, success = ready == true, phase = stopped and stopped.name }
end
