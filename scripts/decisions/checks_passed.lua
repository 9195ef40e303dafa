-- Development has no approver to weigh a failed check: it deploys only when every check passed.
return function(run)
  local checks = run.stages["pre-deployment-checks"]
  return checks ~= nil and checks.status == "success" and checks.outputs.failed == 0
end
