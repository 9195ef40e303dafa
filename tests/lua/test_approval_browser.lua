-- The approval page in a real browser (tests/node/approval_browser.mjs: Debian's chromium,
-- puppeteer-core from tests/node): a pipeline waits on a gate, the browser opens alice's
-- signed link from the approval.requested notification, approves with a comment, and the run
-- then succeeds. Screenshots are kept in the test's output directory (the build tree's
-- tests/approval-browser). chromium and the node packages come from .ci/install-deps; without
-- them this test fails rather than skips.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local source_dir = os.getenv("STAGEHOST_SOURCE_DIR") or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]*$") or "."
if source_dir:sub(1, 1) ~= "/" then source_dir = os.getenv("PWD") .. "/" .. source_dir end
local node_dir = source_dir .. "/tests/node"
local out_dir = (os.getenv("STAGEHOST_BUILD_DIR") or T.tempdir("browser-out")) .. "/tests/approval-browser"

T.test("a browser opens the signed link, approves with a comment, and the run succeeds", function()
  T.ok(proc.run{ "/bin/sh", "-c", "command -v node && command -v chromium" }.ok, "node or chromium is missing: run .ci/install-deps")
  T.ok(fs.exists(node_dir .. "/node_modules/puppeteer-core/package.json"), "tests/node/node_modules is missing: run .ci/install-deps")
  local dir = T.project({
    ["p.lua"] = T.approval_pipeline("browser", [[{ title = "Deploy 2.0 to staging", approvers = {"alice", "bob"}, timeout = "1h",
      checklist = "## Before you approve\n- [x] CI green\n- [ ] **smoke test** <script>alert('x')</script>",
      preview = "~ stack web: 2 changes" }]], "{ by = r.votes[1].who }",
      [[{ name = "deploy", needs = { "gate" }, run = function() return {} end }]]),
    ["channels/capture.lua"] = T.CAPTURE_REQUESTED }, "browser")
  local host = proc.spawn{ STAGEHOST, "run", "p.lua", "--actor", "dana", cwd = dir }
  local m = T.requested(dir)
  local link
  for _, l in ipairs(m.approval.links) do if l.who == "alice" then link = l.url end end
  T.ok(link, "alice's signed link is in the notification")
  local r = proc.run{ "node", node_dir .. "/approval_browser.mjs", link, out_dir, cwd = node_dir, timeout = 120 }
  T.eq(r.code, 0, "approval_browser.mjs: " .. r.stderr .. r.stdout)
  T.match(r.stdout, "browser ok: ")
  local done = host:wait()
  T.eq(done.code, 0, "the run succeeds after the browser's approval")
  T.ok(fs.exists(out_dir .. "/1-gate.png") and fs.exists(out_dir .. "/2-voted.png"), "the screenshots are kept in " .. out_dir)
  local audit = T.stagehost(dir, { "approvals", "--audit", m.approval.run, "--json" })
  local events = json.decode(audit.stdout).gates[1].events
  local voted
  for _, e in ipairs(events) do if e.kind == "voted" then voted = e end end
  T.eq(voted.who, "alice"); T.eq(voted.via, "web page"); T.eq(voted.comment, "Checked in the browser")
end, { timeout = 180 })

T.run()
