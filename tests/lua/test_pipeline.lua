-- The pipeline engine: order, parallelism, failure paths, decisions, timeouts, retries, bad
-- pipelines, graphs and the command line around them.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local pipeline = require("stagehost.pipeline")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")


local run = T.execute

-- Write files into a fresh dir, run `stagehost run pipeline.lua ARGS` there.
local function cli(files, args, env)
  local dir = T.project(files, "stages", "decisions")
  local r = T.stagehost(dir, args, { env = env, timeout = 60 })
  r.dir = dir
  return r
end

T.test("independent stages run concurrently; needs wait; outputs flow", function()
  local p = pipeline.define{ name = "par", stages = {
    { name = "a", run = function() local t0 = task.now() task.sleep(0.3) return { t0 = t0, t1 = task.now() } end },
    { name = "b", run = function() local t0 = task.now() task.sleep(0.3) return { t0 = t0, t1 = task.now() } end },
    { name = "c", needs = { "a", "b" }, run = function(ctx)
      return { started = task.now(), sum = ctx.outputs.a.t0 + ctx.outputs.b.t0 } end },
  } }
  local t0 = task.now()
  local r = run(p)
  local took = task.now() - t0
  T.eq(r.status, "success")
  local a, b, c = r.stages.a.outputs, r.stages.b.outputs, r.stages.c.outputs
  T.ok(b.t0 < a.t1 and a.t0 < b.t1, "a and b overlapped")
  T.ok(c.started >= math.max(a.t1, b.t1), "c started after both")
  T.ok(took < 30, "took " .. took .. "s") -- the overlap above is what shows concurrency
  T.eq(c.sum, a.t0 + b.t0)
end)

T.test("a failure reaches when = failure and always stages and skips the rest", function()
  local ran = {}
  local function mark(name) return function() ran[#ran + 1] = name end end
  local p = pipeline.define{ name = "fail", stages = {
    { name = "build", run = mark("build") },
    { name = "deploy", needs = { "build" }, run = function() error("stack failed") end },
    { name = "tests", needs = { "deploy" }, run = mark("tests") },
    { name = "release", needs = { "tests" }, run = mark("release") },
    { name = "notify-failure", needs = { "deploy", "tests" }, when = "failure", run = mark("notify-failure") },
    { name = "notify", needs = { "release" }, when = "always", run = mark("notify") },
    { name = "only-on-success", needs = { "build" }, when = "failure", run = mark("never") },
  } }
  local r = run(p)
  T.eq(r.status, "failure")
  T.eq(r.stages.deploy.status, "failure"); T.match(r.stages.deploy.error, "stack failed")
  T.eq(r.stages.tests.status, "skipped"); T.eq(r.stages.release.status, "skipped")
  T.eq(r.stages["notify-failure"].status, "success")
  T.eq(r.stages.notify.status, "success")
  T.eq(r.stages["only-on-success"].status, "skipped")
  table.sort(ran)
  T.eq(table.concat(ran, ","), "build,notify,notify-failure")
end)

T.test("decisions: a function, a file, a failing decision", function()
  local dir = T.tempdir("stages", "decisions")
  assert(fs.write(dir .. "/decisions/tests_passed.lua",
    "return function(run) return run.stages.tests.outputs.failed == 0 end\n"))
  assert(fs.write(dir .. "/decisions/broken.lua", "return function(run) error('no data') end\n"))
  assert(fs.write(dir .. "/pipeline.lua", [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "dec", stages = {
      { name = "tests", run = function() return { failed = 0 } end },
      { name = "mark-ready", needs = { "tests" }, when = "decisions/tests_passed.lua", run = function() return { ok = true } end },
      { name = "big-change", needs = { "tests" }, when = function(run) return run.vars.big == "yes" end, run = function() end },
      { name = "weird", needs = { "tests" }, when = "decisions/broken.lua", run = function() end },
    } }
  ]]))
  pipeline.loading = dir .. "/pipeline.lua"
  local p = dofile(dir .. "/pipeline.lua")
  pipeline.loading = nil
  local r = run(p, { vars = { big = "no" } })
  T.eq(r.stages["mark-ready"].status, "success")
  T.eq(r.stages["big-change"].status, "skipped"); T.match(r.stages["big-change"].reason, "said no")
  T.eq(r.stages.weird.status, "failure"); T.match(r.stages.weird.error, "decisions/broken.lua failed: .*no data")
  T.eq(r.status, "failure")
  fs.remove(dir, { recursive = true })
end)

T.test("a stage timeout fails it and stops its processes", function()
  local pid
  local p = pipeline.define{ name = "to", stages = {
    { name = "hang", timeout = "300ms", run = function()
      proc.run{ "sh", "-c", "echo $$; sleep 30", on_line = function(_, l) pid = tonumber(l) end }
    end },
    { name = "after", needs = { "hang" }, when = "always", run = function() return { ran = true } end },
  } }
  local t0 = task.now()
  local r = run(p)
  T.ok(task.now() - t0 < 3)
  T.eq(r.stages.hang.status, "failure"); T.eq(r.stages.hang.error, "timed out after 300ms")
  T.ok(pid and T.gone(-pid), "the stage's process group is gone")
  T.eq(r.stages.after.outputs.ran, true)
end)

T.test("errors and outputs of a stage with a timeout come through", function()
  local p = pipeline.define{ name = "to2", stages = {
    { name = "fails", timeout = "10s", run = function() error("boom inside a timeout", 0) end },
    { name = "works", timeout = "10s", run = function() return { value = 42 } end },
  } }
  local r = run(p)
  T.eq(r.stages.fails.status, "failure"); T.eq(r.stages.fails.error, "boom inside a timeout")
  T.eq(r.stages.works.outputs.value, 42)
end)

T.test("retry: extra attempts until one succeeds, or the last failure", function()
  local calls = 0
  local p = pipeline.define{ name = "retry", stages = {
    { name = "flaky", retry = 2, run = function() calls = calls + 1 if calls < 3 then error("try " .. calls) end return { calls = calls } end },
    { name = "broken", retry = 1, run = function() error("always") end },
  } }
  local r = run(p)
  T.eq(r.stages.flaky.status, "success"); T.eq(r.stages.flaky.attempts, 3); T.eq(r.stages.flaky.outputs.calls, 3)
  T.eq(r.stages.broken.status, "failure"); T.eq(r.stages.broken.attempts, 2)
end)

T.test("continue_on_error: the stage fails, the run and its dependents go on", function()
  local p = pipeline.define{ name = "coe", stages = {
    { name = "scan", continue_on_error = true, run = function() error("3 findings") end },
    { name = "deploy", needs = { "scan" }, run = function() return { done = true } end },
  } }
  local r = run(p)
  T.eq(r.status, "success")
  T.eq(r.stages.scan.status, "failure"); T.eq(r.stages.scan.allowed_failure, true)
  T.eq(r.stages.deploy.status, "success")
end)

T.test("a stage returning a non-table fails clearly; a stage file must return a function", function()
  local p = pipeline.define{ name = "bad-return", stages = { { name = "x", run = function() return "done" end } } }
  local r = run(p)
  T.eq(r.stages.x.status, "failure"); T.match(r.stages.x.error, "returned a string; return a table")
end)

T.test("bad pipelines: one line with file:line, exit 2", function()
  local head = 'local pipeline = require "stagehost.pipeline"\nreturn pipeline.define{ name = "p", stages = {\n'
  local cases = {
    { '  { name = "build", run = function() end },\n  { name = "deploy", needs = { "biuld" }, run = function() end },\n',
      "pipeline.lua:4: stage 'deploy' needs 'biuld', which is not a stage (did you mean 'build'?)" },
    { '  { name = "a", needs = { "c" }, run = function() end },\n  { name = "b", needs = { "a" }, run = function() end },\n  { name = "c", needs = { "b" }, run = function() end },\n',
      "the stages form a cycle: a -> c -> b -> a" },
    { '  { name = "a", run = function() end },\n  { name = "a", run = function() end },\n', "two stages are named 'a'" },
    { '  { name = "a", run = function() end, need = { "x" } },\n', "pipeline.lua:3: stage 'a' has an unknown field 'need' (did you mean 'needs'?)" },
    { '  { name = "a", run = 42 },\n', "stage 'a' needs run = \"stages/FILE.lua\" or a function (got number)" },
    { '  { name = "a", run = "stages/missing.lua" },\n', "stage 'a': run file 'stages/missing.lua' not found" },
    { '  { name = "a", run = function() end, timeout = "soon" },\n', "timeout must be seconds or like" },
    { '  { name = "a", run = function() end, retry = -1 },\n', "retry must be a whole number" },
    { '  { name = "a", run = function() end, when = "sometimes" },\n', "when must be \"success\", \"failure\", \"always\"" },
    { '  { name = "a b", run = function() end },\n', "needs a name of letters, digits" },
  }
  for _, c in ipairs(cases) do
    local r = cli({ ["pipeline.lua"] = head .. c[1] .. "} }\n" }, { "run", "pipeline.lua" })
    T.eq(r.code, 2, c[2] .. " -> " .. r.stderr)
    T.has(r.stderr, c[2])
    T.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
    T.eq(r.stdout, "", "nothing ran")
    fs.remove(r.dir, { recursive = true })
  end
  local syntax = cli({ ["pipeline.lua"] = head .. '  { name = "a", run = "stages/a.lua" },\n} }\n',
    ["stages/a.lua"] = "return function(ctx)\n  local x = = 1\nend\n" }, { "run", "pipeline.lua" })
  T.eq(syntax.code, 2); T.has(syntax.stderr, "stages/a.lua:2:")
  fs.remove(syntax.dir, { recursive = true })
  local notp = cli({ ["pipeline.lua"] = "return 42\n" }, { "run", "pipeline.lua" })
  T.eq(notp.code, 2); T.has(notp.stderr, "does not return pipeline.define{...}")
  fs.remove(notp.dir, { recursive = true })
  local missing = cli({}, { "run", "nope.lua" })
  T.eq(missing.code, 2); T.has(missing.stderr, "cannot open pipeline 'nope.lua'")
  fs.remove(missing.dir, { recursive = true })
end)

local SEED = [[
local pipeline = require("stagehost.pipeline")
return pipeline.define {
  name = "staging",
  trigger = { tags = { "rc-*" }, manual = true },
  stages = {
    { name = "pre-deployment-checks", run = function(ctx) ctx.log.info("checks", ctx.vars.who) return { ok = true } end },
    { name = "approval-gate", needs = { "pre-deployment-checks" }, run = function() end, timeout = "24h" },
    { name = "deploy-infrastructure", needs = { "approval-gate" }, run = function(ctx) return { tag = ctx.run.tag } end },
    { name = "notify", needs = { "deploy-infrastructure" }, when = "always", run = function() end },
    { name = "notify-failure", needs = { "deploy-infrastructure" }, when = "failure", run = function() end },
  },
}
]]

T.test("graph: mermaid like the seed's Job Dependencies, dot, json", function()
  local r = cli({ ["staging.lua"] = SEED }, { "graph", "staging.lua" })
  T.eq(r.code, 0, r.stderr)
  T.eq(r.stdout, table.concat({
    "graph LR",
    "    A[pre-deployment-checks]", "    B[approval-gate]", "    C[deploy-infrastructure]",
    "    D[notify]", "    E[notify-failure]",
    "    A --> B", "    B --> C", "    C -.always.-> D", "    C -.failure.-> E", "" }, "\n"))
  local dot = proc.run{ STAGEHOST, "graph", "staging.lua", "--format", "dot", cwd = r.dir }
  T.has(dot.stdout, '"deploy-infrastructure" -> "notify-failure" [style=dashed, label="failure"];')
  local js = proc.run{ STAGEHOST, "graph", "staging.lua", "--format=json", cwd = r.dir }
  local g = json.decode(js.stdout)
  T.eq(g.name, "staging"); T.eq(#g.stages, 5); T.eq(g.stages[2].timeout, 86400)
  local bad = proc.run{ STAGEHOST, "graph", "staging.lua", "--format", "svg", cwd = r.dir }
  T.eq(bad.code, 2); T.has(bad.stderr, "--format must be mermaid, dot or json")
  fs.remove(r.dir, { recursive = true })
end)

T.test("run from the command line: first line 'run ID', --var, --tag, run.json and stage logs", function()
  local r = cli({ ["staging.lua"] = SEED }, { "run", "staging.lua", "--tag", "rc-1.2.0", "--var", "who=ci" })
  T.eq(r.code, 0, r.stderr)
  local id = r.stdout:match("^run (%S+)\n")
  T.ok(id, "first line is 'run ID': " .. r.stdout)
  local record = json.decode(assert(fs.read(r.dir .. "/.stagehost/runs/" .. id .. "/run.json")))
  T.eq(record.status, "success"); T.eq(record.tag, "rc-1.2.0"); T.eq(record.vars.who, "ci")
  T.eq(record.stages[3].name, "deploy-infrastructure"); T.eq(record.stages[3].outputs.tag, "rc-1.2.0")
  T.eq(record.stages[5].status, "skipped")
  local stage_log = assert(fs.read(r.dir .. "/.stagehost/runs/" .. id .. "/logs/pre-deployment-checks.log"))
  T.match(stage_log, "INFO  %[pre%-deployment%-checks%] checks ci")
  -- the same pipeline run directly: stagehost FILE.lua
  local direct = proc.run{ STAGEHOST, "staging.lua", "--env", "staging", cwd = r.dir }
  T.eq(direct.code, 0, direct.stderr); T.match(direct.stdout, "^run %S+\n")
  fs.remove(r.dir, { recursive = true })
end)

T.test("--only, --from and --dry-run", function()
  local r = cli({ ["staging.lua"] = SEED }, { "run", "staging.lua", "--dry-run" })
  T.eq(r.code, 0, r.stderr)
  T.match(r.stdout, "dry run, nothing is executed")
  T.match(r.stdout, " 3%. deploy%-infrastructure +runs %(function%) +needs approval%-gate")
  T.eq(fs.exists(r.dir .. "/.stagehost"), false, "nothing written")
  -- nothing earlier to take the skipped stages' outputs from: refused, naming what is missing
  local none = proc.run{ STAGEHOST, "run", "staging.lua", "--only", "deploy-infrastructure", cwd = r.dir }
  T.eq(none.code, 2, none.stderr)
  T.has(none.stderr, "--only skips 'pre-deployment-checks'")
  local whole = proc.run{ STAGEHOST, "run", "staging.lua", cwd = r.dir }
  T.eq(whole.code, 0, whole.stderr)
  local from = proc.run{ STAGEHOST, "run", "staging.lua", "--from", "approval-gate", cwd = r.dir }
  T.eq(from.code, 0, from.stderr)
  T.match(from.stdout, "✓ pre%-deployment%-checks +success +reused from run " .. whole.stdout:match("^run (%S+)"):gsub("%-", "%%-"))
  T.match(from.stdout, "✓ approval%-gate +success +[%d.]+s")
  local only = proc.run{ STAGEHOST, "run", "staging.lua", "--only", "deploy-infrastructure", cwd = r.dir }
  T.eq(only.code, 0, only.stderr)
  T.match(only.stdout, "✓ deploy%-infrastructure +success +[%d.]+s")
  T.match(only.stdout, "✓ pre%-deployment%-checks +success +reused from run")
  T.match(only.stdout, "○ notify +skipped +not selected")
  local bad = proc.run{ STAGEHOST, "run", "staging.lua", "--only", "deploy", cwd = r.dir }
  T.eq(bad.code, 2); T.has(bad.stderr, "--only: 'deploy' is not a stage of 'staging'")
  local flag = proc.run{ STAGEHOST, "run", "staging.lua", "--tagg", "x", cwd = r.dir }
  T.eq(flag.code, 2); T.has(flag.stderr, "unknown option '--tagg'")
  fs.remove(r.dir, { recursive = true })
end)

T.test("under GitHub Actions: ::add-mask:: for secrets, a fold per stage, ::error for failures", function()
  local r = cli({ ["p.lua"] = [[
    local pipeline = require("stagehost.pipeline")
    return pipeline.define{ name = "gha", stages = {
      { name = "build", run = function(ctx)
        ctx.log.info("token is", os.getenv("DEPLOY_TOKEN"))
        require("stagehost.proc").run{ "echo", "child line" }
      end },
      { name = "deploy", needs = { "build" }, run = function() error("stack failed at 100%\nsecond line", 0) end },
    } }
  ]] }, { "run", "p.lua" }, { GITHUB_ACTIONS = "true", DEPLOY_TOKEN = "gha-secret-value-1" })
  T.eq(r.code, 1, r.stderr)
  T.match(r.stdout, "^::add%-mask::gha%-secret%-value%-1\nrun %S+\n")
  local _, raw = (r.stdout .. r.stderr):gsub("gha%-secret%-value%-1", "")
  T.eq(raw, 1, "the secret appears once: in the add-mask command")
  T.match(r.stdout, "::group::✓ build — success in [%d.]+s\n[^\n]*%[build%] ▶ started")
  T.match(r.stdout, "%[build%] echo%[%d+%]| child line\n")
  T.match(r.stdout, "token is %*%*%*")
  T.match(r.stdout, "::endgroup::\n")
  T.match(r.stdout, "::error title=stage deploy failed::stack failed at 100%%25\n")
  T.no_match(r.stderr, "child line", "not echoed live under Actions")
  fs.remove(r.dir, { recursive = true })
end)

T.test("on a terminal: a live view redrawn in place, a line per stage", function()
  local dir = T.tempdir("stages", "decisions")
  assert(fs.write(dir .. "/p.lua", [[
    local pipeline = require("stagehost.pipeline")
    local task = require("stagehost.task")
    return pipeline.define{ name = "live", stages = {
      { name = "first", run = function(ctx) ctx.log.info("warming up") task.sleep(0.4) end },
      { name = "second", needs = { "first" }, run = function(ctx) ctx.log.info("last words") task.sleep(0.3) end },
    } }
  ]]))
  -- script(1) gives the host a pseudo-terminal
  local r = proc.run{ "script", "-qfec", STAGEHOST .. " run p.lua", "/dev/null", cwd = dir,
    env = { TERM = "xterm" }, timeout = 60 }
  T.eq(r.code, 0, r.stdout)
  T.has(r.stdout, "\27[2A", "cursor moved up over the two stage lines")
  T.match(r.stdout, "\27%[2K✓ first +[%d.]+s  ✓ succeeded")
  T.match(r.stdout, "\27%[2K[^\n]* second +[%d.]+s  last words")
  T.match(r.stdout, "run %S+: success\r?\n$")
  T.no_match(r.stdout, "INFO  %[first%]", "log lines stay off the screen while the view is up")
  fs.remove(dir, { recursive = true })
end)

T.test("a failed run exits 1 with one line after the summary", function()
  local r = cli({ ["p.lua"] = 'local pipeline = require "stagehost.pipeline"\nreturn pipeline.define{ name = "f", stages = { { name = "x", run = function() error("nope") end } } }\n' },
    { "run", "p.lua" })
  T.eq(r.code, 1)
  T.match(r.stdout, "✗ x +failure")
  T.match(r.stderr, "\nstagehost: run %S+ failed\n$")
  fs.remove(r.dir, { recursive = true })
end)

-- ---- the command line around a pipeline ----

T.test("a pipeline file run directly takes the options of run: --var at the first '=', --help, unknown options", function()
  local r = cli({ ["staging.lua"] = SEED }, { "staging.lua", "--var", "who=ci,bot=x", "--tag", "rc-2.0.0" })
  T.eq(r.code, 0, r.stderr)
  local id = T.ok(r.stdout:match("^run (%S+)\n"), "run ID")
  local record = json.decode(assert(fs.read(r.dir .. "/.stagehost/runs/" .. id .. "/run.json")))
  T.eq(record.vars.who, "ci,bot=x"); T.eq(record.vars.bot, nil)
  local help = proc.run{ STAGEHOST, "staging.lua", "--help", cwd = r.dir }
  T.eq(help.code, 0, help.stderr); T.match(help.stdout, "^usage: stagehost run ")
  local bad = proc.run{ STAGEHOST, "staging.lua", "--tagg", "x", cwd = r.dir }
  T.eq(bad.code, 2)
  T.eq(bad.stderr, "stagehost run: unknown option '--tagg' (did you mean '--tag'?); see 'stagehost help run'\n")
  fs.remove(r.dir, { recursive = true })
end)

T.test("run: options before or after the pipeline file; a module beside the pipeline resolves", function()
  local dir = T.tempdir("ci")
  assert(fs.write(dir .. "/ci/helper.lua", "return { greeting = 'hello from beside the pipeline' }\n"))
  assert(fs.write(dir .. "/ci/p.lua", [[
    local pipeline = require("stagehost.pipeline")
    local helper = require("helper")
    return pipeline.define{ name = "beside", stages = {
      { name = "greet", run = function(ctx) return { said = helper.greeting, env = ctx.run.env } end },
    } }
  ]]))
  local r = proc.run{ STAGEHOST, "run", "--env", "staging", "ci/p.lua", "--var", "a=1", cwd = dir, timeout = 60 }
  T.eq(r.code, 0, r.stderr)
  local id = r.stdout:match("^run (%S+)\n")
  local record = json.decode(assert(fs.read(dir .. "/.stagehost/runs/" .. id .. "/run.json")))
  T.eq(record.stages[1].outputs.said, "hello from beside the pipeline")
  T.eq(record.stages[1].outputs.env, "staging")
  local st = json.decode(proc.run{ STAGEHOST, "status", id, "--json", cwd = dir }.stdout)
  T.eq(table.concat(st.args, " "), "--env staging --var a=1", "the run keeps its options, not the pipeline's path")
  local extra = proc.run{ STAGEHOST, "run", "ci/p.lua", "other.lua", cwd = dir }
  T.eq(extra.code, 2); T.has(extra.stderr, "stagehost run: unexpected argument 'other.lua'")
  fs.remove(dir, { recursive = true })
end)

T.run()
