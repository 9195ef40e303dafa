-- Manual approval: one reviewer, 24 h (the stage's timeout). Approved -> the deployment goes
-- on; rejected or no decision -> the run is cancelled (exit 3).
return function(ctx)
  ctx.log.info("checklist for the approver:\n" .. ctx.outputs["pre-deployment-checks"].checklist)
  local decision = ctx.vars.approve
  if decision == "yes" then
    ctx.log.info("approved by " .. (ctx.run.actor or "?"))
    return { decision = "approved", by = ctx.run.actor }
  end
  if decision == "no" then ctx:cancel("approval rejected by " .. (ctx.run.actor or "?")) end
  ctx:cancel("approval required: nobody approved this run (pass --var approve=yes to approve, approve=no to reject)")
end
