-- Roll back when the smoke check ran against the new deployment and failed (not when an
-- earlier stage stopped the run before anything was deployed).
return function(run)
  local smoke = run.stages["smoke-check"]
  return smoke ~= nil and smoke.status == "failure"
end
