-- Manual approval, as the policy of the environment says (staging: one approver, 24 h). The
-- gate and every vote are in the state database; approvers answer on the terminal, with
-- `stagehost approve RUN`, on the web page of `stagehost serve` or from the channels the
-- pipeline configures. Approved -> the deployment goes on; rejected or no decision in time ->
-- the run is cancelled (exit 3) and the notify stage still reports it. In the sandbox (and in
-- pipelines that allow it) `--auto-approve` approves at once, for demos and CI.
local approval = require("stagehost.approval")
local App = require("lib.app")

return function(ctx)
  local app = App.of(ctx)
  local rule = app.policy.approval
  local checks = ctx.outputs["pre-deployment-checks"]
  local r = approval.request{
    title = ("Deploy %s to %s"):format(ctx.run.tag or ("run " .. ctx.run.id), app.env),
    checklist = checks.checklist,
    required = rule.required, approvers = rule.approvers, timeout = ctx.vars.approval_timeout or rule.timeout,
    remind = rule.remind, forbid = rule.forbid, require_comment = rule.require_comment,
    channels = rule.channels,
  }
  local said = {}
  for _, v in ipairs(r.votes) do
    said[#said + 1] = ("%s %s%s"):format(v.who, v.decision, v.comment and (": " .. v.comment) or "")
  end
  r.summary = #said > 0 and table.concat(said, "; ") or "no votes"
  if r.decision == "approved" then return r end
  if r.decision == "rejected" then
    ctx:cancel(("approval rejected by %s: %s"):format(r.rejected_by or "?", r.reason or "no reason given"))
  end
  ctx:cancel(("approval timed out: %d of %d approvals by the deadline (approve with 'stagehost approve %s' while it waits)")
    :format(r.approvals or 0, r.required or rule.required, ctx.run.id))
end
