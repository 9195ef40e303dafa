-- Run reports: the HTML page (self-contained, escaped, masked, graph laid out by depth), JUnit
-- XML from outputs.tests, the GitHub job summary, and write_all in a child host with
-- GITHUB_STEP_SUMMARY set. STAGEHOST_REPORT_SAMPLE=DIR also keeps the seed-shaped sample there.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local log = require("stagehost.log")
local crypto = require("stagehost.crypto")
local pipeline = require("stagehost.pipeline")
local engine = require("stagehost.pipeline.engine")
local report = require("stagehost.pipeline.report")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local PYTHON = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"
local SECRET = "s3cr3t-report-value"
local HOSTILE = "<script>alert(1)</script>"

local function execute(p, dir, opts)
  opts = opts or {}
  opts.selected = opts.selected or engine.select(p)
  opts.state_dir = dir
  return engine.execute(p, opts)
end

local function count(s, sub)
  local n, i = 0, 1
  while true do
    local at = s:find(sub, i, true)
    if not at then return n end
    n, i = n + 1, at + #sub
  end
end

-- Every start tag closed in order (void elements aside): python's html.parser, which is
-- forgiving, only tokenises; the nesting is checked here.
local CHECK_HTML = [[
import sys
from html.parser import HTMLParser
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source", "track", "embed"}
class P(HTMLParser):
    def __init__(self):
        super().__init__(); self.stack = []; self.refs = []
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src", "xlink:href", "action", "data"): self.refs.append((tag, k, v))
        if tag not in VOID: self.stack.append(tag)
    def handle_startendtag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src", "xlink:href", "action", "data"): self.refs.append((tag, k, v))
    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            sys.exit("unbalanced </%s> with open %s" % (tag, self.stack[-3:]))
        self.stack.pop()
p = P(); p.feed(open(sys.argv[1], encoding="utf-8").read()); p.close()
if p.stack: sys.exit("unclosed: %s" % p.stack)
for tag, k, v in p.refs: print(tag, k, v)
]]

local function check_html_file(path)
  local r = proc.run{ PYTHON, "-c", CHECK_HTML, path, timeout = 60 }
  T.eq(r.code, 0, "html nesting: " .. (r.stderr or ""))
  local refs = {}
  for tag, attr, value in r.stdout:gmatch("(%S+) (%S+) ([^\n]*)\n") do refs[#refs + 1] = { tag, attr, value } end
  return refs
end

-- A run with every status the page shows: success with artifacts and tests, a failure with a
-- hostile error, a skipped dependent, a when = failure stage, a stage left out by selection.
-- -> the run, its pipeline, and its new state directory (remove it when done)
local function mixed_run()
  local dir = T.tempdir()
  log.mask(SECRET)
  local p = pipeline.define{ name = "report-demo", stages = {
    { name = "build", run = function(ctx)
      ctx:artifact("app.tar.gz", "tarball bytes")
      ctx:artifact("release notes #1.md", "# notes\n")
      return { version = "1.2.3", leaked = "token=" .. SECRET }
    end },
    { name = "unit-tests", needs = { "build" }, run = function()
      return { tests = {
        { name = "adds", classname = "math", status = "passed", time = 0.012 },
        { name = "divides <by> zero & more", classname = "math", status = "failed", time = 0.5,
          message = "expected 1 got 2 <&> " .. SECRET },
        { name = "slow one", status = "skipped", time = 0 },
        { name = "multiplies", classname = "math", status = "passed", time = 0.2 },
      } }
    end },
    { name = "deploy", needs = { "unit-tests" }, run = function() error(HOSTILE, 0) end },
    { name = "smoke", needs = { "deploy" }, run = function() return { ok = true } end },
    { name = "notify-failure", needs = { "deploy", "smoke" }, when = "failure", run = function() end },
    { name = "extra", needs = { "build" }, run = function() end },
  } }
  local selected = engine.select(p)
  selected.extra = nil
  local run = execute(p, dir, { selected = selected, tag = "rc-1.2.3", env = "staging", actor = "alice",
    vars = { note = "<b>bold</b> & " .. SECRET } })
  return run, p, dir
end

T.test("html: self-contained, every stage, colours, links, escaped, masked", function()
  local run, p, dir = mixed_run()
  T.eq(run.status, "failure")
  T.eq(run.stages.deploy.error, HOSTILE)
  local html = report.html(run, p)

  -- nothing loads from elsewhere and nothing runs
  T.no_match(html, "<script", "no script element")
  T.no_match(html, "<link", "no linked stylesheet")
  T.no_match(html, "@import")
  T.no_match(html, "url%(%s*[\"']?[^#]", "url() only for the page's own markers")
  T.no_match(html, "[sS][rR][cC]%s*=%s*[\"']?%a+:")
  T.no_match(html, "href%s*=%s*[\"']?https?:")
  T.has(html, "default-src 'none'", "a CSP that forbids loading anything")
  local path = dir .. "/page.html"
  assert(fs.write(path, html))
  for _, ref in ipairs(check_html_file(path)) do
    local v = ref[3]
    T.ok(v:match("^logs/") or v:match("^artifacts/") or v:match("^#stage%-") or v == "junit.xml",
      "relative link only: " .. table.concat(ref, " "))
  end

  for _, name in ipairs{ "build", "unit-tests", "deploy", "smoke", "notify-failure", "extra" } do
    T.has(html, ">" .. name .. "<", "stage " .. name)
  end
  -- status colours on the graph's nodes
  T.match(html, '<g class="node status%-failure"><title>deploy:.-</title><rect [^>]*fill="#ffe1e1"', "deploy is red")
  T.match(html, '<g class="node status%-success"><title>build:.-</title><rect [^>]*fill="#e1f5e1"', "build is green")
  T.match(html, '<g class="node status%-skipped"><title>smoke:.-</title><rect [^>]*fill="#eeeeee"', "smoke is grey")
  T.match(html, 'class="edge edge%-failure"[^>]*stroke%-dasharray', "when = failure edges are dashed")
  T.match(html, 'class="edge edge%-success" d="[^"]*" fill="none" stroke="#555555" stroke%-width="1.6" marker', "others solid")

  -- logs and artifacts
  for _, name in ipairs{ "build", "unit-tests", "deploy", "smoke", "notify-failure" } do
    T.has(html, ('href="logs/%s.log"'):format(name))
  end
  T.no_match(html, 'href="logs/extra.log"', "a stage that never ran has no log to link")
  T.has(html, 'href="artifacts/build/app.tar.gz"')
  T.has(html, 'href="artifacts/build/release%20notes%20%231.md"')
  T.has(html, crypto.sha256("tarball bytes"))
  T.has(html, "13 B")
  T.ok(fs.exists(dir .. "/runs/" .. run.id .. "/artifacts/build/release notes #1.md"), "the link's target exists")

  -- hostile strings escaped, secrets masked
  T.has(html, "&lt;script&gt;alert(1)&lt;/script&gt;")
  T.has(html, "&lt;b&gt;bold&lt;/b&gt; &amp; ***")
  T.has(html, "divides &lt;by&gt; zero &amp; more")
  T.no_match(html, SECRET:gsub("%p", "%%%0"), "the secret")
  T.has(html, "token=***")

  -- header and timeline
  T.has(html, "rc-1.2.3"); T.has(html, "staging"); T.has(html, "alice"); T.has(html, run.id)
  T.match(html, '<h1>report%-demo <span class="badge status%-failure">')
  T.has(html, 'class="timeline"'); T.has(html, ">00:00<")
  fs.remove(dir, { recursive = true })
end)

-- x, y of a node's box in the graph
local function node_at(html, name)
  local x, y = html:match('<a href="#stage%-' .. name:gsub("%p", "%%%0") .. '"><g[^>]*><title>.-</title><rect x="(%d+)" y="(%d+)"')
  return tonumber(x), tonumber(y)
end

T.test("html graph: columns by dependency depth, rows in declaration order", function()
  local dir = T.tempdir()
  local noop = function() end
  local p = pipeline.define{ name = "layout", stages = {
    { name = "a", run = noop },
    { name = "b", run = noop },
    { name = "c", needs = { "a" }, run = noop },
    { name = "d", needs = { "c", "b" }, run = noop },
    { name = "e", needs = { "a" }, when = "always", run = noop },
    { name = "f", needs = { "a", "d" }, when = function() return true end, run = noop },
  } }
  local html = report.html(execute(p, dir), p)
  local ax, ay = node_at(html, "a")
  local bx, by = node_at(html, "b")
  local cx, cy = node_at(html, "c")
  local dx = node_at(html, "d")
  local ex, ey = node_at(html, "e")
  local fx = node_at(html, "f")
  T.ok(ax and bx and cx and dx and ex and fx, "every node drawn")
  T.eq(ax, bx); T.ok(ay < by, "b below a")
  T.ok(cx > ax, "c right of a"); T.ok(dx > cx, "d right of c"); T.ok(fx > dx, "f right of d")
  T.eq(ex, cx, "e in c's column"); T.ok(ey > cy, "e below c")
  T.has(html, 'class="edge edge-always"'); T.has(html, 'class="edge edge-decision"')
  T.has(html, ">when always<"); T.has(html, ">if function<")
  -- a -> f skips two columns with c in the way: it runs in a lane above the boxes
  T.match(html, '<path class="edge edge%-decision" d="M[%d.]+,[%d.]+ H[%d.]+ Q', "a laned edge")
  fs.remove(dir, { recursive = true })
end)

T.test("junit: one suite per stage with tests, counts, failure message, well-formed", function()
  local run, _, dir = mixed_run()
  local xml = report.junit(run)
  T.ok(xml, "junit xml")
  T.eq(count(xml, "<testsuite "), 1)
  T.eq(count(xml, "<testcase "), 4)
  T.eq(count(xml, "<testsuite "), count(xml, "</testsuite>"))
  T.match(xml, '<testsuite name="unit%-tests" tests="4" failures="1" errors="0" skipped="1" time="[%d.]+"')
  T.match(xml, '<testsuites name="[^"]*" tests="4" failures="1" errors="0" skipped="1"')
  T.has(xml, '<testcase name="divides &lt;by&gt; zero &amp; more" classname="math" time="0.500">')
  T.has(xml, '<failure message="expected 1 got 2 &lt;&amp;&gt; ***">expected 1 got 2 &lt;&amp;&gt; ***</failure>')
  T.has(xml, '<testcase name="slow one" classname="unit-tests" time="0.000">')
  T.has(xml, "<skipped/>")
  T.no_match(xml, SECRET:gsub("%p", "%%%0"))
  local path = dir .. "/junit.xml"
  assert(fs.write(path, xml))
  local r = proc.run{ PYTHON, "-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])", path, timeout = 60 }
  T.eq(r.code, 0, "minidom parses it: " .. r.stderr)

  -- a stage can report tests with a nasty name and control bytes; the xml stays well-formed
  local p2 = pipeline.define{ name = "no-tests", stages = { { name = "x", run = function() return { n = 1 } end } } }
  T.eq(report.junit(execute(p2, dir)), nil, "no tests, no junit")
  local p3 = pipeline.define{ name = "odd", stages = { { name = "x", run = function()
    return { tests = { { name = "bad\1bytes\255 \"q\" 'a'", status = "error", message = "line1\nline2 ]]>" } } }
  end } } }
  xml = report.junit(execute(p3, dir))
  T.match(xml, 'errors="1"')
  assert(fs.write(path, xml))
  r = proc.run{ PYTHON, "-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])", path, timeout = 60 }
  T.eq(r.code, 0, "minidom parses the odd one: " .. r.stderr)
  fs.remove(dir, { recursive = true })
end)

T.test("github summary: status heading, mermaid with statuses, a row per stage", function()
  local run, p, dir = mixed_run()
  local s = report.github_summary(run, p)
  T.match(s, "^## ❌ report%-demo: failure\n")
  T.has(s, "```mermaid\ngraph LR\n")
  T.has(s, "    C[deploy]\n"); T.has(s, "style C fill:#ffe1e1"); T.has(s, "style A fill:#e1f5e1")
  T.has(s, "    C -.failure.-> E\n")
  T.has(s, "| stage | status | started | duration | note |")
  for _, name in ipairs{ "build", "unit-tests", "deploy", "smoke", "notify-failure", "extra" } do
    T.match(s, "\n| " .. name:gsub("%p", "%%%0") .. " | ", "row for " .. name)
  end
  T.match(s, "| deploy | ✗ failure | %d%d:%d%d:%d%d | %d+ms | &lt;script&gt;alert%(1%)&lt;/script&gt; |")
  T.has(s, "| extra | ○ skipped |  |  | not selected |")
  T.has(s, "tests: 2 passed, 1 failed, 1 skipped")
  T.no_match(s, SECRET:gsub("%p", "%%%0"))
  fs.remove(dir, { recursive = true })
end)

T.test("write_all in a host with GITHUB_STEP_SUMMARY: files written, summary appended", function()
  local dir = T.tempdir()
  local summary = dir .. "/summary.md"
  assert(fs.write(summary, "earlier step\n"))
  assert(fs.write(dir .. "/main.lua", [[
    local pipeline = require("stagehost.pipeline")
    local engine = require("stagehost.pipeline.engine")
    local report = require("stagehost.pipeline.report")
    local p = pipeline.define{ name = "child", stages = {
      { name = "tests", run = function() return { tests = { { name = "t1", status = "failed", message = "boom" } } } end },
      { name = "after", needs = { "tests" }, when = "always", run = function(ctx)
        require("stagehost.log").mask("s3cr3t-canary")
        ctx:summary("### Checklist of after\n\n- [x] lint (s3cr3t-canary)\n")
      end },
    } }
    local run = engine.execute(p, { selected = engine.select(p), state_dir = arg[1] })
    local written = assert(report.write_all(run, p))
    print(run.dir)
    print(#written)
  ]]))
  local r = proc.run{ STAGEHOST, dir .. "/main.lua", dir .. "/state", env = { GITHUB_STEP_SUMMARY = summary },
    timeout = 60 }
  T.eq(r.code, 0, r.stderr)
  local run_dir, n = r.stdout:match("^([^\n]+)\n(%d+)\n$")
  T.eq(n, "3", "report.html, junit.xml and the summary")
  local html = assert(fs.read(run_dir .. "/report.html"))
  T.has(html, 'href="junit.xml"'); T.has(html, 'href="logs/tests.log"')
  check_html_file(run_dir .. "/report.html")
  T.has(assert(fs.read(run_dir .. "/junit.xml")), '<failure message="boom">boom</failure>')
  local text = assert(fs.read(summary))
  -- the stage itself succeeded: it reported a failed test case, it did not fail
  T.match(text, "^earlier step\n## ✅ child: success\n")
  T.has(text, "```mermaid"); T.has(text, "| tests | ✓ success |"); T.has(text, "| after | ✓ success |")
  T.has(text, "tests: 0 passed, 1 failed, 0 skipped")
  -- a stage's own part (ctx:summary) follows the table, masked
  T.match(text, "| after | ✓ success |[^\n]*\n\n### Checklist of after\n\n%- %[x%] lint %(%*%*%*%)\n")
  T.eq(text:find("s3cr3t-canary", 1, true), nil)

  -- without the variable nothing is appended; without tests no junit.xml
  assert(fs.write(dir .. "/main.lua", [[
    local pipeline = require("stagehost.pipeline")
    local engine = require("stagehost.pipeline.engine")
    local report = require("stagehost.pipeline.report")
    local p = pipeline.define{ name = "plain", stages = { { name = "only", run = function() end } } }
    local run = engine.execute(p, { selected = engine.select(p), state_dir = arg[1] })
    print(run.dir, #assert(report.write_all(run, p)))
  ]]))
  r = proc.run{ STAGEHOST, dir .. "/main.lua", dir .. "/state", env = { GITHUB_STEP_SUMMARY = false }, timeout = 60 }
  T.eq(r.code, 0, r.stderr)
  local plain_dir, written = r.stdout:match("^(%S+)\t(%d+)\n$")
  T.eq(written, "1")
  T.ok(fs.exists(plain_dir .. "/report.html")); T.ok(not fs.exists(plain_dir .. "/junit.xml"))
  T.eq(fs.read(summary), text, "summary untouched")
  fs.remove(dir, { recursive = true })
end)

-- The seed's flow as one run with the seed's timings: integration tests fail, so the release is
-- skipped and notify (when = always) reports it. -> as mixed_run
local function seed_run()
  local dir = T.tempdir()
  local function stage(outputs, artifacts)
    return function(ctx)
      for name, content in pairs(artifacts or {}) do ctx:artifact(name, content) end
      return outputs
    end
  end
  local p = pipeline.define{ name = "staging", stages = {
    { name = "pre-deployment-checks", run = stage({ tests = {
      { name = "eslint", classname = "checks", status = "passed", time = 41.2 },
      { name = "typescript", classname = "checks", status = "passed", time = 63.0 },
      { name = "unit tests", classname = "checks", status = "passed", time = 312.4 },
      { name = "security scan", classname = "checks", status = "passed", time = 88.9 },
    } }, { ["check-results.json"] = '{"eslint":"passed","typescript":"passed","tests":"passed","security":"passed"}\n' }) },
    { name = "generate-checklist", needs = { "pre-deployment-checks" },
      run = stage({}, { ["deployment-checklist.md"] = "# Deployment checklist\n- [x] ESLint\n- [x] TypeScript\n" }) },
    { name = "approval-gate", needs = { "generate-checklist" }, timeout = "24h",
      run = stage({ decision = "approved", by = "carol" }) },
    { name = "validate", needs = { "approval-gate" },
      run = stage({ changes = 7 }, { ["changeset-preview.json"] = ('{"changes":%s}\n'):format(("[1,2,3],"):rep(40) .. "[]") }) },
    { name = "deploy-infrastructure", needs = { "validate" },
      run = stage({ stack = "app-staging", api_url = "https://api.staging.example.com" },
        { ["stack-outputs.json"] = '{"ApiUrl":"https://api.staging.example.com","UserPoolId":"eu-west-1_abc"}\n' }) },
    { name = "deploy-frontend", needs = { "deploy-infrastructure" },
      run = stage({ url = "https://staging.example.com" }) },
    { name = "integration-tests", needs = { "deploy-frontend" }, retry = 1, run = function(ctx)
      ctx:artifact("test-report.json", '{"passed":11,"failed":1}\n')
      error("1 of 12 integration tests failed: OAuth callback returned 502", 0)
    end },
    { name = "mark-release-ready", needs = { "integration-tests" },
      run = stage({}, { ["release-notes.md"] = "# rc-2.4.0\n" }) },
    { name = "notify", needs = { "deploy-infrastructure", "deploy-frontend", "integration-tests", "mark-release-ready" },
      when = "always", run = stage({ sent = { "slack", "email" } }) },
  } }
  local run = execute(p, dir, { tag = "rc-2.4.0", env = "staging", actor = "dana", vars = { region = "eu-west-1" } })
  -- the seed's timeline: minutes, not the milliseconds of this test
  local plan = {
    { "pre-deployment-checks", 0, 492 }, { "generate-checklist", 492, 41 }, { "approval-gate", 533, 303 },
    { "validate", 836, 157 }, { "deploy-infrastructure", 993, 828 }, { "deploy-frontend", 1821, 475 },
    { "integration-tests", 2296, 680 }, { "notify", 2977, 4 },
  }
  local t0 = report.epoch("2025-03-14T09:30:00Z")
  local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
  run.started_at, run.finished_at = iso(t0), iso(t0 + 2982)
  for _, step in ipairs(plan) do
    local rec = run.stages[step[1]]
    rec.started_at, rec.finished_at, rec.duration = iso(t0 + step[2]), iso(t0 + step[2] + step[3]), step[3] + 0.0
    for _, a in ipairs(rec.artifacts) do a.created_at = rec.finished_at end
  end
  -- integration tests report their cases too (as a real runner would through outputs.tests)
  run.stages["integration-tests"].outputs = { tests = {
    { name = "auth flows", classname = "integration", status = "passed", time = 120.5 },
    { name = "content creation", classname = "integration", status = "passed", time = 201.0 },
    { name = "oauth callback", classname = "integration", status = "failed", time = 30.1,
      message = "POST /oauth/callback returned 502 Bad Gateway" },
    { name = "ai services", classname = "integration", status = "skipped", time = 0 },
  } }
  return run, p, dir
end

T.test("a seed-shaped run renders (STAGEHOST_REPORT_SAMPLE=DIR keeps it)", function()
  local run, p, dir = seed_run()
  T.eq(run.status, "failure")
  T.eq(run.stages["mark-release-ready"].status, "skipped")
  T.eq(run.stages.notify.status, "success")
  local html = report.html(run, p)
  T.has(html, ">50:00<", "the axis reaches the run's end") -- 2982 s, ticks every 5 minutes
  T.has(html, "1 of 12 integration tests failed")
  T.has(html, 'href="artifacts/integration-tests/test-report.json"')
  T.has(html, "13m48s")
  -- notify's needs two to four columns back would cross boxes: they run in lanes above
  local laned = 0
  for d in html:gmatch('<path class="edge edge%-always" d="([^"]*)"') do
    if d:find(" Q") then laned = laned + 1 end
  end
  T.eq(laned, 3, "laned edges")
  local sample = os.getenv("STAGEHOST_REPORT_SAMPLE")
  if sample then
    -- the page links logs/ and artifacts/ beside it: copy them, then write as write_all would
    -- (not write_all itself, which would append to a CI job's real summary)
    local run_dir = run.dir
    for _, sub in ipairs{ "logs", "artifacts" } do
      assert(fs.mkdir(sample .. "/" .. sub))
      for _, name in ipairs(assert(fs.list(run_dir .. "/" .. sub))) do
        assert(fs.write(sample .. "/" .. sub .. "/" .. name, assert(fs.read(run_dir .. "/" .. sub .. "/" .. name))))
      end
    end
    run.dir = sample
    assert(fs.write(sample .. "/report.html", report.html(run, p)))
    assert(fs.write(sample .. "/junit.xml", assert(report.junit(run))))
    assert(fs.write(sample .. "/summary.md", report.github_summary(run, p)))
    run.dir = run_dir
  end
  fs.remove(dir, { recursive = true })
end)

T.test("one table of statuses: glyphs, the terminal's blank pending, the page's colours", function()
  local statuses = require("stagehost.util.status")
  T.eq(statuses.symbol.success, "✓"); T.eq(statuses.symbol.failure, "✗"); T.eq(statuses.symbol.pending, "·")
  T.eq(statuses.terminal.pending, " ", "a stage not started stays blank on a terminal")
  T.eq(statuses.terminal.cancelled, "■", "the rest as everywhere")
  T.eq(statuses.heading.failure, "❌")
  T.eq(statuses.known("success"), "success"); T.eq(statuses.known("interrupted"), "pending"); T.eq(statuses.known(nil), "pending")
  local run, p, dir = mixed_run()
  local html = report.html(run, p)
  for _, s in ipairs(statuses.ORDER) do
    T.has(html, (".status-%s { background: %s; border-color: %s; color: %s; }"):format(s, statuses.fill[s],
      statuses.stroke[s], statuses.text[s]), "the badge of " .. s)
  end
  T.match(html, '<g class="node status%-failure"><title>deploy:.-</title><rect [^>]*fill="' .. statuses.fill.failure
    .. '" stroke="' .. statuses.stroke.failure .. '"')
  fs.remove(dir, { recursive = true })
end)

T.test("the reports' times: fine durations, times for people, ISO 8601 with offsets", function()
  local time = require("stagehost.util.time")
  T.eq(time.duration_fine(0.0123), "12ms"); T.eq(time.duration_fine(41), "41.0s"); T.eq(time.duration_fine(828), "13m48s")
  T.eq(time.duration_fine(nil), "", "no duration, no text")
  T.eq(time.human("2025-03-14T09:30:00Z"), "2025-03-14 09:30:00 UTC"); T.eq(time.human("soon"), "soon"); T.eq(time.human(nil), "")
  T.eq(time.clock("2025-03-14T09:30:05Z"), "09:30:05"); T.eq(time.clock(42), "")
  T.eq(report.epoch("2025-03-14T09:30:00Z"), 1741944600)
  T.eq(report.epoch("2025-03-14T11:30:00+02:00"), 1741944600, "an offset is honoured")
  T.eq(report.epoch("2025-03-14T09:30:00.250Z"), 1741944600.25)
  T.eq(report.epoch("yesterday"), nil)
end)


T.run()
