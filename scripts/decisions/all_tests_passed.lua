-- "All tests passed?" of the seed: the release is marked ready only when the integration
-- tests ran and every one of them passed.
return function(run)
  local tests = run.stages["integration-tests"]
  return tests ~= nil and tests.status == "success" and tests.outputs.passed == true
end
