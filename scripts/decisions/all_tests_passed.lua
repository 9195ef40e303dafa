-- "All tests passed?": the release is marked ready only then.
return function(run)
  local tests = run.stages["integration-tests"]
  return tests.status == "success" and tests.outputs.failed == 0
end
