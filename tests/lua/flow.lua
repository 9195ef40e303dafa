-- What the tests of the flows of scripts/ share (test_staging, test_fault_matrix,
-- test_canary_audit, test_kill_campaign): a private copy of the example app, a run started in
-- the background and read to its end, a run's record read back, its artifacts, the sandbox's
-- request log.
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local proc = require("stagehost.proc")

local flow = {}

-- A private copy of examples/webapp in a new temporary directory (or in dir), its node_modules
-- linked: the flow writes reports/, dist/ and .aws-sam/ into the app's directory, and other
-- tests may run the flow on examples/webapp at the same time. -> the copy's path
function flow.app_copy(source, dir)
  local app = dir or require("harness").tempdir()
  local src = source .. "/examples/webapp"
  assert(fs.mkdir(app))
  for _, name in ipairs(assert(fs.list(src))) do
    if name ~= "node_modules" and name ~= "reports" and name ~= "dist" and name ~= ".build" and name ~= ".aws-sam" then
      proc.run{ "cp", "-a", src .. "/" .. name, app .. "/" .. name, check = true, timeout = 60 }
    end
  end
  assert(proc.run{ "ln", "-s", src .. "/node_modules", app .. "/node_modules" }.ok)
  return app
end

-- Start `stagehost run ...` (argv as proc.spawn takes it) in the background, its output read by
-- lines; -> the process and the run's id (its first line of output).
function flow.start(argv)
  argv.lines = true
  local p = proc.spawn(argv)
  local _, first = p:read_line()
  return p, assert(tostring(first):match("^run (%S+)"), "no run id: " .. tostring(first))
end

-- Read a run flow.start started to the end of its output, then wait for its exit; -> proc's
-- result with .lines (what it printed after its first line) and .output (those lines joined).
function flow.finish(p)
  local lines = {}
  while true do
    local _, line = p:read_line()
    if not line then break end
    lines[#lines + 1] = line
  end
  local r = p:wait()
  r.lines, r.output = lines, table.concat(lines, "\n")
  return r
end

-- `stagehost status ID --json` through stagehost(...) (a function running the CLI on the test's
-- state directory), its stages also by name.
function flow.status(stagehost, id)
  local r = stagehost("status", id, "--json")
  local st = assert(json.decode(r.stdout), r.stderr)
  for _, stage in ipairs(st.stages) do st.stages[stage.name] = stage end
  return st
end

-- An artifact of a run, or nil.
function flow.artifact(state, id, stage, name)
  return fs.read(("%s/runs/%s/artifacts/%s/%s"):format(state, id, stage, name))
end

-- The sandbox's request log kept in the state directory: every entry, decoded.
function flow.requests(state)
  local out = {}
  for line in (fs.read(state .. "/sandbox/requests.jsonl") or ""):gmatch("[^\n]+") do
    out[#out + 1] = assert(json.decode(line))
  end
  return out
end

return flow
