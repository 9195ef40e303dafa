-- Notifications: deploy.success, or deploy.failure naming the phase that failed or was
-- cancelled (read from ctx.stages), to every channel of the pipeline's notify = {...}. A
-- channel that fails is logged and does not fail this stage. The message is also kept as an
-- artifact.
local notify = require("stagehost.notify")

-- The seed's stages in order, and the phase each is in a notification.
local PHASES = {
  { "pre-deployment-checks", "checks" },
  { "approval-gate", "approval" },
  { "validate", "validation" },
  { "deploy-infrastructure", "infrastructure" },
  { "deploy-frontend", "frontend" },
  { "integration-tests", "tests" },
  { "mark-release-ready", "release" },
}

return function(ctx)
  local stopped
  for _, p in ipairs(PHASES) do
    local stage = ctx.stages[p[1]]
    if stage and (stage.status == "failure" or stage.status == "cancelled") then
      stopped = stopped or { name = p[1], phase = p[2], stage = stage }
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
  local fields = { { name = "Tag", value = ctx.run.tag or "(none)" }, { name = "Run", value = ctx.run.id } }
  local frontend = ctx.outputs["deploy-frontend"]
  if ready and frontend and frontend.url then fields[#fields + 1] = { name = "URL", value = tostring(frontend.url) } end
  if stopped then fields[#fields + 1] = { name = "Stage", value = stopped.name } end
  local event = ready and "deploy.success" or "deploy.failure"
  local delivered = notify.send{
    event = event, phase = stopped and stopped.phase, fields = fields, text = message,
    status = ready and "success" or (stopped and stopped.stage.status == "cancelled" and "cancelled") or "failure",
    title = ready and ("Staging: %s deployed"):format(ctx.run.tag or ctx.run.id)
      or ("Staging: deployment %s%s"):format(stopped and stopped.stage.status == "cancelled" and "cancelled" or "failed",
        stopped and (" in " .. stopped.phase) or ""),
  }
  ctx:artifact("notification.json", { event = event, phase = stopped and stopped.phase,
    stage = stopped and stopped.name, message = message, delivered = delivered })
  if ready then ctx.log.info(message) else ctx.log.error(message) end
  return { message = message, success = ready == true, phase = stopped and stopped.phase,
    stage = stopped and stopped.name, delivered = delivered }
end
