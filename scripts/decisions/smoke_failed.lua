-- Roll back when the smoke check ran against the new deployment and failed (not when an
-- earlier stage stopped the run before anything was deployed), and the environment's policy
-- says it rolls back on its own (policy.lua: auto_rollback).
local policy = require("policy")

return function(run)
  local smoke = run.stages["smoke-check"]
  local env = policy.environments[run.env or run.pipeline]
  return smoke ~= nil and smoke.status == "failure" and env ~= nil and env.auto_rollback == true
end
