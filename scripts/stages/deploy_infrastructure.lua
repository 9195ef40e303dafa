-- Deploy the infrastructure: execute the change set validate created (SAM deploy), wait until
-- the stack is stable, capture its outputs. Killed during the wait, `stagehost resume`
-- re-attaches to the same stack operation instead of starting another.
local App = require("lib.app")
local deploy = require("lib.deploy")

return function(ctx)
  local app = App.of(ctx)
  local v = ctx.outputs.validate
  local status = "NO_CHANGES"
  if not v.no_changes then status = deploy.execute(ctx, app, v.change_set).status end
  local outputs = deploy.outputs(app)
  ctx:artifact("stack-outputs.json", outputs)
  ctx.log.info(("stack %s: %s; ApiUrl %s"):format(app.stack, status, tostring(outputs.ApiUrl)))
  return { stack = app.stack, status = status, outputs = outputs, api_url = outputs.ApiUrl,
    no_changes = v.no_changes == true }
end
