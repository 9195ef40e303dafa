-- Manual approval: one reviewer, 24 h, through stagehost.approval (the gate and every vote are
-- in the state database; `stagehost approve RUN` votes from any terminal). Approved -> the
-- deployment goes on; rejected or no decision in time -> the run is cancelled (exit 3) and
-- the notify stage still reports it.
--
-- Stop-gap until the staging-flow issue replaces it with a flag only sandbox pipelines accept:
-- `--var approve=yes` (or `=no`) records that vote, as the run's actor, with the request. With
-- neither and no terminal to wait at (CI), nobody could vote in time, so the gate times out at
-- once ("approval required"); `--var approval_timeout=24h` waits for `stagehost approve` anyway.
local approval = require("stagehost.approval")
local log = require("stagehost.log")

return function(ctx)
  local checklist = ctx.outputs["pre-deployment-checks"].checklist
  local said, votes = ctx.vars.approve, {}
  if said == "yes" or said == "no" then
    votes[1] = { who = ctx.run.actor, decision = said == "yes" and "approved" or "rejected",
      comment = said == "no" and "rejected with --var approve=no" or nil, via = "command line (--var approve)" }
  elseif said ~= nil then
    error(("--var approve must be yes or no (got '%s')"):format(said), 0)
  end
  local timeout = ctx.vars.approval_timeout or ((#votes > 0 or log.isatty()) and "24h" or "0s")

  local r = approval.request{
    title = ("Deploy %s to staging"):format(ctx.run.tag or ("run " .. ctx.run.id)),
    checklist = checklist, required = 1, timeout = timeout, votes = votes,
  }
  local lines = {}
  for _, v in ipairs(r.votes) do
    lines[#lines + 1] = ("%s %s%s"):format(v.who, v.decision, v.comment and (": " .. v.comment) or "")
  end
  r.summary = #lines > 0 and table.concat(lines, "; ") or "no votes"
  if r.decision == "approved" then return r end
  if r.decision == "rejected" then
    ctx:cancel(("approval rejected by %s: %s"):format(r.rejected_by or "?", r.reason or "no reason given"))
  end
  ctx:cancel(("approval required: nobody approved this run within %s (pass --var approve=yes, or run "
    .. "'stagehost approve %s' from another terminal while it waits; --var approval_timeout=24h waits without a terminal)")
    :format(timeout, ctx.run.id))
end
