-- Notifications: deploy.success, or deploy.failure naming the phase that failed or was
-- cancelled (read from ctx.stages), to every channel of the pipeline's notify = {...}. A
-- channel that fails is logged and does not fail this stage. The message is also kept as an
-- artifact.
local notify = require("stagehost.notify")

-- The stages of every flow in order, and the phase each is in a notification.
local PHASES = {
  { "pre-deployment-checks", "checks" },
  { "approval-gate", "approval" },
  { "validate", "validation" },
  { "deploy-infrastructure", "infrastructure" },
  { "deploy-frontend", "frontend" },
  { "integration-tests", "tests" },
  { "smoke-check", "tests" },
  { "mark-release-ready", "release" },
  { "rollback", "infrastructure" },
}

local function title_case(s) return (s:gsub("^%l", string.upper)) end

return function(ctx)
  local env = title_case(ctx.run.env or ctx.run.pipeline)
  local stopped
  for _, p in ipairs(PHASES) do
    local stage = ctx.stages[p[1]]
    if stage and (stage.status == "failure" or stage.status == "cancelled") then
      stopped = stopped or { name = p[1], phase = p[2], stage = stage }
    end
  end
  local rollback = ctx.stages.rollback
  local rolled_back = rollback and rollback.status == "success" and rollback.outputs or nil
  local what = ctx.run.tag or ctx.run.id
  local message
  if stopped then
    message = ("Deployment %s at %s: %s (run %s)"):format(stopped.stage.status == "failure" and "failed" or "cancelled",
      stopped.name, stopped.stage.error or stopped.stage.reason or "?", ctx.run.id)
    if rolled_back and stopped.name ~= "rollback" then
      message = message .. ("; rolled back to the release of run %s"):format(rolled_back.rolled_back_to)
    end
  elseif rolled_back and ctx.run.pipeline == "rollback" then
    message = ("%s rolled back to the release of run %s (%s)"):format(env, rolled_back.rolled_back_to, rolled_back.tag or "no tag")
  else
    message = ("Deployment complete: %s is live in %s"):format(what, env:lower())
  end
  local fields = { { name = "Tag", value = ctx.run.tag or "(none)" }, { name = "Run", value = ctx.run.id } }
  local frontend = ctx.outputs["deploy-frontend"] or rolled_back
  if not stopped and frontend and frontend.url then fields[#fields + 1] = { name = "URL", value = tostring(frontend.url) } end
  if stopped then fields[#fields + 1] = { name = "Stage", value = stopped.name } end
  local event = stopped and "deploy.failure" or "deploy.success"
  local status = not stopped and "success" or (stopped.stage.status == "cancelled" and "cancelled" or "failure")
  local delivered = notify.send{
    event = event, phase = stopped and stopped.phase, fields = fields, text = message, status = status,
    title = not stopped and ("%s: %s deployed"):format(env, what)
      or ("%s: deployment %s in %s"):format(env, status == "cancelled" and "cancelled" or "failed", stopped.phase),
  }
  ctx:artifact("notification.json", { event = event, phase = stopped and stopped.phase,
    stage = stopped and stopped.name, message = message, delivered = delivered })
  if stopped then ctx.log.error(message) else ctx.log.info(message) end
  return { message = message, success = not stopped, phase = stopped and stopped.phase,
    stage = stopped and stopped.name, delivered = delivered, rolled_back_to = rolled_back and rolled_back.rolled_back_to }
end
