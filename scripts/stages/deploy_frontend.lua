-- Deploy the frontend: the stack's outputs become the Amplify branch's variables, an Amplify
-- job builds and deploys it, each step is followed as it goes, and the URL is captured. A job
-- that Amplify leaves PENDING is reported as stuck rather than waited on for the full timeout.
local App = require("lib.app")
local deploy = require("lib.deploy")

return function(ctx)
  local app = App.of(ctx)
  local infra = ctx.outputs["deploy-infrastructure"]
  local variables = { API_URL = infra.api_url, STAGE = app.env }
  for key, value in pairs(infra.outputs or {}) do variables["STACK_" .. key:upper()] = tostring(value) end
  local r = deploy.frontend(ctx, app, variables, {
    pending_timeout = ctx.vars.amplify_pending_timeout and tonumber(ctx.vars.amplify_pending_timeout) or nil })
  ctx.log.info(("frontend deployed: %s (job %s)"):format(r.url, r.job_id))
  return { url = r.url, job_id = r.job_id, app_id = r.app_id, status = r.status }
end
