-- The staging pipeline in scripts/, end to end: approved, rejected, and without an approver.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))
local BUILD = assert(os.getenv("STAGEHOST_BUILD_DIR"))

local function staging(state, ...)
  local argv = { STAGEHOST, "run", SOURCE .. "/scripts/staging.lua", "--state", state, "--var", "build=" .. BUILD,
    "--tag", "rc-9.9.9", ... }
  argv.timeout, argv.env = 600, { STAGEHOST_BIN = STAGEHOST }
  return proc.run(argv)
end

local function status(state, id)
  return json.decode(proc.run{ STAGEHOST, "status", id, "--json", "--state", state }.stdout)
end

T.test("approved: every stage succeeds and leaves its artifacts", function()
  local state = os.tmpname()
  os.remove(state)
  local r = staging(state, "--var", "approve=yes")
  T.eq(r.code, 0, r.stderr)
  local id = r.stdout:match("^run (%S+)")
  local st = status(state, id)
  T.eq(st.status, "success")
  local names = {}
  for _, s in ipairs(st.stages) do
    T.eq(s.status, "success", s.name)
    names[#names + 1] = s.name
  end
  T.eq(table.concat(names, ","), "pre-deployment-checks,approval-gate,validate,deploy-infrastructure,"
    .. "deploy-frontend,integration-tests,mark-release-ready,notify")
  local arts = {}
  for _, a in ipairs(st.artifacts) do arts[a.name] = a end
  for _, name in ipairs{ "checklist.md", "change-preview.txt", "stack-outputs.json", "test-report.json",
    "release-notes.md", "notification.json" } do
    T.ok(arts[name] and fs.exists(state .. "/" .. arts[name].path), "artifact " .. name)
  end
  T.match(fs.read(state .. "/" .. arts["checklist.md"].path), "4 of 4 checks passed; tag rc%-9%.9%.9")
  T.match(fs.read(state .. "/" .. arts["release-notes.md"].path), "^# rc%-9%.9%.9\n")
  T.eq(st.stages[8].outputs.success, true)
  T.match(st.stages[8].outputs.message, "rc%-9%.9%.9 is ready for production")
  fs.remove(state, { recursive = true })
end, { timeout = 600 })

T.test("rejected or unapproved: the run is cancelled (exit 3) and nothing is deployed", function()
  for _, case in ipairs{ { "--var", "approve=no", "approval rejected" }, { nil, nil, "approval required" } } do
    local state = os.tmpname()
    os.remove(state)
    local r = case[1] and staging(state, case[1], case[2]) or staging(state)
    T.eq(r.code, 3, r.stderr)
    local id = r.stdout:match("^run (%S+)")
    local st = status(state, id)
    T.eq(st.status, "cancelled")
    T.eq(st.stages[1].status, "success")
    T.eq(st.stages[2].status, "cancelled"); T.match(st.stages[2].error, case[3])
    for i = 3, #st.stages - 1 do T.eq(st.stages[i].status, "cancelled", st.stages[i].name) end
    -- notify (when = "always") still runs after the cancellation, and says so
    T.eq(st.stages[#st.stages].name, "notify")
    T.eq(st.stages[#st.stages].status, "success")
    T.match(st.stages[#st.stages].outputs.message, "cancelled at approval%-gate")
    T.eq(fs.exists(state .. "/runs/" .. id .. "/staging"), false, "nothing installed")
    fs.remove(state, { recursive = true })
  end
end, { timeout = 300 })

T.run()
