-- Notifications: success, or which deployment stage failed. Notification channels (Slack,
-- e-mail, webhooks) land with their issue; the message is logged and kept as an artifact.
return function(ctx)
  local run = ctx.outputs
  local failed
  for _, name in ipairs{ "deploy-infrastructure", "deploy-frontend", "integration-tests" } do
    if run[name] == nil or next(run[name]) == nil then failed = failed or name end
  end
  local ready = run["mark-release-ready"] and run["mark-release-ready"].ready
  local message = ready and ("Deployment complete: %s is ready for production"):format(ctx.run.tag or ctx.run.id)
    or ("Deployment failed at %s: review the logs of run %s"):format(failed or "?", ctx.run.id)
  ctx:artifact("notification.json", { event = ready and "deploy.success" or "deploy.failure", message = message })
  if ready then ctx.log.info(message) else ctx.log.error(message) end
  return { message = message, success = ready == true }
end
