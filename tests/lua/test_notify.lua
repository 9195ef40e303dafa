-- notify: every built-in channel against a loopback sink that checks its wire format (Slack
-- Block Kit, a Teams Adaptive Card, a signed webhook, GitHub through the sandbox), fan-out,
-- filters, retries, failures that never fail a run, masking, a channel in one file, and the
-- load errors of a bad configuration. E-mail is tests/lua/test_smtp.lua.
local T = require("harness")
local task = require("stagehost.task")
local http = require("stagehost.http") -- loaded now: its curl timer belongs in every baseline
local json = require("stagehost.json")
local log = require("stagehost.log")
local fs = require("stagehost.fs")
local crypto = require("stagehost.crypto")
local github = require("stagehost.github")
local notify = require("stagehost.notify")
local pipeline = require("stagehost.pipeline")
local engine = require("stagehost.pipeline.engine")

local FAST = { attempts = 3, base = 0.01, cap = 0.02 } -- retries that wait for nothing

-- A loopback HTTP sink that keeps every request; respond(req, n) may answer otherwise than 200.
local function sink(respond)
  local s = { requests = {} }
  s.server = http.serve{ handler = function(req)
    s.requests[#s.requests + 1] = req
    local r = respond and respond(req, #s.requests)
    return r or { status = 200, body = "ok" }
  end }
  s.url = ("http://127.0.0.1:%d/hook"):format(s.server.port)
  function s:close() self.server:close() end
  return s
end

-- A port nothing listens on.
local function dead_url()
  local s = http.serve{ handler = function() return "" end }
  local url = ("http://127.0.0.1:%d/hook"):format(s.port)
  s:close()
  return url
end

local with_channels = T.with_channels

local project = T.project

local function sh(dir, args) return T.stagehost(dir, args) end

local MESSAGE = { event = "deploy.failure", phase = "infrastructure", title = "Staging deploy failed",
  text = "The stack rolled back: <UPDATE_ROLLBACK_COMPLETE> & more", fields = { { name = "Tag", value = "rc-1.2.0" },
  { name = "Stage", value = "deploy-infrastructure" } }, run = { id = "20260101-000000-abcd", pipeline = "staging",
  tag = "rc-1.2.0", url = "https://github.com/acme/widgets/actions/runs/42" } }

-- ---- sending ----

T.test("channels are sent to at once: two slow sinks take about one delay, not two", function()
  local slow = function() task.sleep(0.5) end
  local a, b = sink(slow), sink(slow)
  with_channels({ { channel = "slack", url = a.url }, { channel = "teams", url = b.url } }, function()
    local t0 = task.now()
    local r = notify.send(MESSAGE)
    local took = task.now() - t0
    T.ok(r.slack.ok and r.teams.ok, "both delivered")
    T.eq(#a.requests, 1); T.eq(#b.requests, 1)
    T.ok(took >= 0.5 and took < 0.9, ("took %.2fs, one delay is 0.5s"):format(took))
  end)
  a:close(); b:close()
end)

T.test("'on' filters: each channel gets the events its patterns match", function()
  local deploys, starts, all = sink(), sink(), sink()
  with_channels({
    { channel = "webhook", name = "deploys", url = deploys.url, secret = "s3cret-deploys", on = { "deploy.*" } },
    { channel = "webhook", name = "starts", url = starts.url, secret = "s3cret-starts", on = "run.started" },
    { channel = "webhook", name = "all", url = all.url, secret = "s3cret-all" },
  }, function()
    local r = notify.send(MESSAGE)
    T.ok(r.deploys.ok and r.all.ok); T.eq(r.starts, nil, "starts does not take deploy.failure")
    r = notify.send{ event = "run.started", title = "started" }
    T.ok(r.starts.ok and r.all.ok); T.eq(r.deploys, nil)
    r = notify.send{ event = "approval.requested", title = "approve?" }
    T.ok(r.all.ok); T.eq(r.deploys, nil); T.eq(r.starts, nil)
  end)
  T.eq(#deploys.requests, 1); T.eq(deploys.requests[1].headers["x-stagehost-event"], "deploy.failure")
  T.eq(#starts.requests, 1); T.eq(starts.requests[1].headers["x-stagehost-event"], "run.started")
  T.eq(#all.requests, 3)
  T.eq(notify.glob("deploy.*", "deploy.success"), true)
  T.eq(notify.glob("deploy.*", "deployment.x"), false)
  T.eq(notify.glob("approval.?ecided", "approval.decided"), true)
  deploys:close(); starts:close(); all:close()
end)

T.test("a 503 is retried and then delivered; a 429 waits out its Retry-After; a 400 is not retried", function()
  local flaky = sink(function(_, n) if n == 1 then return { status = 503, body = "busy" } end end)
  local limited = sink(function(_, n)
    if n == 1 then return { status = 429, headers = { ["Retry-After"] = "1" }, body = "slow down" } end
  end)
  local refusing = sink(function() return { status = 400, body = "invalid_payload" } end)
  with_channels({ { channel = "slack", name = "flaky", url = flaky.url, retry = FAST },
    { channel = "slack", name = "limited", url = limited.url, retry = FAST },
    { channel = "slack", name = "refusing", url = refusing.url, retry = FAST } }, function()
    local t0 = task.now()
    local r = notify.send(MESSAGE)
    T.eq(r.flaky.ok, true); T.eq(#flaky.requests, 2, "one retry")
    T.eq(r.limited.ok, true); T.eq(#limited.requests, 2)
    T.ok(task.now() - t0 >= 1, "Retry-After: 1 was honoured")
    T.eq(r.refusing.ok, false); T.eq(#refusing.requests, 1, "a 400 will not heal by waiting")
    T.match(r.refusing.error, "HTTP 400 from .*: invalid_payload")
  end)
  flaky:close(); limited:close(); refusing:close()
end)

T.test("a channel that is down fails alone: the send returns, the others deliver, nothing raises", function()
  local up = sink()
  local hung = 0
  notify.channel("test-hangs", function() hung = hung + 1; task.sleep(30) end)
  notify.channel("test-raises", function() error("the channel has a bug") end)
  with_channels({ { channel = "webhook", name = "down", url = dead_url(), secret = "s3cret-down", retry = FAST },
    { channel = "teams", url = up.url },
    { channel = "test-hangs", timeout = 0.3, retry = FAST },
    { channel = "test-raises", retry = FAST } }, function()
    local t0 = task.now()
    local r = notify.send(MESSAGE)
    T.eq(r.teams.ok, true)
    T.eq(r.down.ok, false); T.match(r.down.error, "failed")
    T.eq(r["test-hangs"].ok, false); T.match(r["test-hangs"].error, "no answer within")
    T.eq(hung, 1, "a timeout is not retried past the channel's deadline")
    T.eq(r["test-raises"].ok, false); T.match(r["test-raises"].error, "the channel has a bug")
    T.ok(task.now() - t0 < 5)
  end)
  up:close()
end)

T.test("a failing channel is logged as one warning and the run succeeds", function()
  local got = sink(function() return { status = 400, body = "no_service" } end)
  local dir = project{ ["p.lua"] = ([[
    local pipeline = require("stagehost.pipeline")
    local notify = require("stagehost.notify")
    return pipeline.define{ name = "notified",
      notify = { { channel = "slack", url = %q, retry = { attempts = 2, base = 0.01 } },
                 { channel = "webhook", url = %q, secret = "s3cret-w", retry = { attempts = 2, base = 0.01 } } },
      stages = { { name = "tell", run = function()
        local r = notify.send{ event = "deploy.success", title = "shipped" }
        return { slack = r.slack.ok, webhook = r.webhook.ok, error = r.webhook.error }
      end } } }
  ]]):format(got.url, dead_url()) }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  local warnings = 0
  for line in r.stderr:gmatch("[^\n]+") do
    if line:find("did not deliver deploy.success", 1, true) then warnings = warnings + 1 end
  end
  T.eq(warnings, 2, "one line for each failing channel: " .. r.stderr)
  T.has(r.stderr, "notify: slack did not deliver deploy.success: HTTP 400 from ***: no_service")
  T.eq(#got.requests, 2, "run.started and deploy.success, a 400 not retried")
  local headers = {}
  for i, req in ipairs(got.requests) do headers[i] = json.decode(req.body).blocks[1].text.text end
  table.sort(headers)
  T.eq(headers[1], "notified: run " .. r.stdout:match("^run (%S+)") .. " started")
  T.eq(headers[2], "shipped")
  got:close()
  fs.remove(dir, { recursive = true })
end)

-- ---- wire formats ----

T.test("slack: Block Kit blocks (header, section, fields, context) and a text fallback", function()
  local s = sink()
  with_channels({ { channel = "slack", url = s.url, username = "stagehost" } }, function()
    T.eq(notify.send(MESSAGE).slack.ok, true)
  end)
  local req = s.requests[1]
  T.eq(req.method, "POST")
  T.eq(req.headers["content-type"], "application/json")
  local p = json.decode(req.body)
  T.eq(p.username, "stagehost")
  T.match(p.text, "^:x: Staging deploy failed: The stack rolled back: &lt;UPDATE_ROLLBACK_COMPLETE&gt; &amp; more$")
  T.eq(p.blocks[1].type, "header"); T.eq(p.blocks[1].text.type, "plain_text")
  T.eq(p.blocks[1].text.text, "Staging deploy failed")
  T.eq(p.blocks[2].type, "section"); T.eq(p.blocks[2].text.type, "mrkdwn")
  T.eq(p.blocks[2].text.text, "The stack rolled back: &lt;UPDATE_ROLLBACK_COMPLETE&gt; &amp; more")
  T.eq(p.blocks[3].type, "section")
  T.eq(p.blocks[3].fields[1].type, "mrkdwn"); T.eq(p.blocks[3].fields[1].text, "*Tag*\nrc-1.2.0")
  T.eq(p.blocks[3].fields[2].text, "*Stage*\ndeploy-infrastructure")
  T.eq(p.blocks[4].type, "context")
  local ctx = p.blocks[4].elements[1].text
  T.has(ctx, ":x: *failure*"); T.has(ctx, "`deploy.failure`"); T.has(ctx, "phase *infrastructure*")
  T.has(ctx, "staging <https://github.com/acme/widgets/actions/runs/42|run 20260101-000000-abcd>")
  T.eq(#p.blocks, 4)
  s:close()
end)

T.test("teams: an Adaptive Card 1.4 in the Workflows envelope; 202 Accepted is a delivery", function()
  local s = sink(function() return { status = 202, body = "" } end)
  with_channels({ { channel = "teams", url = s.url, retry = FAST } }, function()
    local r = notify.send(MESSAGE)
    T.eq(r.teams.ok, true, r.teams.error)
  end)
  T.eq(#s.requests, 1, "202 is not retried")
  local p = json.decode(s.requests[1].body)
  T.eq(p.type, "message")
  T.eq(#p.attachments, 1)
  T.eq(p.attachments[1].contentType, "application/vnd.microsoft.card.adaptive")
  local card = p.attachments[1].content
  T.eq(card.type, "AdaptiveCard"); T.eq(card.version, "1.4")
  T.eq(card["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json")
  T.eq(card.body[1].type, "TextBlock"); T.has(card.body[1].text, "Staging deploy failed")
  T.eq(card.body[1].color, "Attention")
  T.eq(card.body[2].text, MESSAGE.text)
  T.eq(card.body[3].type, "FactSet")
  T.eq(card.body[3].facts[1].title, "Tag"); T.eq(card.body[3].facts[1].value, "rc-1.2.0")
  T.has(card.body[4].text, "phase infrastructure")
  T.eq(card.actions[1].type, "Action.OpenUrl"); T.eq(card.actions[1].url, MESSAGE.run.url)
  s:close()
end)

T.test("webhook: the message as JSON, the event header, an HMAC-SHA256 signature the sink verifies", function()
  local secret = "whsec-0123456789"
  local verified = {}
  local s = sink(function(req)
    local sig = req.headers["x-stagehost-signature-256"] or ""
    local want = "sha256=" .. crypto.hmac_sha256(secret, req.body)
    verified[#verified + 1] = crypto.equal(sig, want) and github.verify_webhook(secret, req.body, sig)
    if not verified[#verified] then return { status = 401, body = "bad signature" } end
  end)
  with_channels({ { channel = "webhook", url = s.url, secret = secret } }, function()
    T.eq(notify.send(MESSAGE).webhook.ok, true)
  end)
  T.eq(verified[1], true, "the signature is sha256=<hex HMAC-SHA256(secret, body)>")
  local req = s.requests[1]
  T.eq(req.headers["x-stagehost-event"], "deploy.failure")
  T.eq(req.headers["content-type"], "application/json")
  T.match(req.headers["x-stagehost-delivery"], "^%x+$")
  local m = json.decode(req.body)
  T.eq(m.event, "deploy.failure"); T.eq(m.phase, "infrastructure"); T.eq(m.status, "failure")
  T.eq(m.title, MESSAGE.title); T.eq(m.text, MESSAGE.text)
  T.eq(m.fields[2].name, "Stage"); T.eq(m.fields[2].value, "deploy-infrastructure")
  T.eq(m.run.id, MESSAGE.run.id); T.eq(m.run.url, MESSAGE.run.url)
  T.match(m.at, "^%d%d%d%d%-%d%d%-%d%dT")
  -- a receiver with another secret refuses it, and the channel reports the refusal
  with_channels({ { channel = "webhook", url = s.url, secret = "not-the-secret" } }, function()
    local r = notify.send(MESSAGE).webhook
    T.eq(r.ok, false); T.match(r.error, "HTTP 401")
  end)
  T.eq(verified[2], false)
  s:close()
end)

T.test("secrets are masked in every payload, also ones holding a quote and a backslash", function()
  local secret = log.mask([[pa"ss\word-0xC0FFEE]])
  local slack, teams, hook = sink(), sink(), sink()
  local seen = {}
  notify.channel("test-capture", function(m) seen[#seen + 1] = m end)
  with_channels({ { channel = "slack", url = slack.url }, { channel = "teams", url = teams.url },
    { channel = "webhook", url = hook.url, secret = "s3cret-hook" }, { channel = "test-capture" } }, function()
    local r = notify.send{ event = "deploy.failure", title = "token " .. secret, text = "it leaked: " .. secret,
      fields = { { name = "key " .. secret, value = secret } } }
    for name, res in pairs(r) do T.eq(res.ok, true, name) end
  end)
  local escaped = json.encode(secret):sub(2, -2) -- as it would appear inside a JSON string
  for name, s in pairs{ slack = slack, teams = teams, webhook = hook } do
    local body = s.requests[1].body
    T.ok(not body:find(secret, 1, true), name .. ": the secret is not in the payload")
    T.ok(not body:find(escaped, 1, true), name .. ": nor its JSON-escaped form")
    T.ok(not body:find("C0FFEE", 1, true), name .. ": nor a piece of it")
    T.has(body, "***", name)
  end
  T.eq(seen[1].title, "token ***"); T.eq(seen[1].fields[1].name, "key ***"); T.eq(seen[1].fields[1].value, "***")
  slack:close(); teams:close(); hook:close()
end)

T.test("github: a commit status, a deployment status and an issue comment, through the sandbox", function()
  T.with_sandbox({}, function()
    local gh = github.client{}
    local issue = gh:create_issue{ title = "Release rc-1.2.0" }
    local deployment = gh:create_deployment{ ref = "main", environment = "staging" }
    local sha = ("ab"):rep(20)
    with_channels({ { channel = "github", sha = sha },
      { channel = "github", name = "deployment", deployment = deployment.id, environment = "staging" },
      { channel = "github", name = "comment", issue = issue.number, on = "deploy.*" } }, function()
      local r = notify.send(MESSAGE)
      T.eq(r.github.ok, true, r.github.error); T.eq(r.deployment.ok, true, r.deployment.error)
      T.eq(r.comment.ok, true, r.comment.error)
      local r2 = notify.send{ event = "run.started", title = "Staging run started", run = MESSAGE.run, sha = sha }
      T.eq(r2.github.ok, true); T.eq(r2.comment, nil, "the comment channel takes deploy.* only")
    end)
    local statuses = gh:list_statuses(sha)
    T.eq(#statuses, 2)
    T.eq(statuses[1].state, "pending"); T.eq(statuses[1].description, "Staging run started")
    T.eq(statuses[2].state, "failure"); T.eq(statuses[2].context, "stagehost/staging")
    T.eq(statuses[2].description, "Staging deploy failed"); T.eq(statuses[2].target_url, MESSAGE.run.url)
    local ds = gh:list_deployment_statuses(deployment.id) -- newest first
    T.eq(#ds, 2)
    T.eq(ds[1].state, "in_progress", "run.started"); T.eq(ds[2].state, "failure", "deploy.failure")
    T.eq(ds[2].log_url, MESSAGE.run.url); T.eq(ds[2].environment, "staging")
    local comments = gh:list_comments(issue.number)
    T.eq(#comments, 1)
    T.has(comments[1].body, "### ❌ Staging deploy failed")
    T.has(comments[1].body, "| **Tag** | rc-1.2.0 |")
    T.has(comments[1].body, "phase **infrastructure**")
    -- no commit to put a status on: reported, not raised
    with_channels({ { channel = "github" } }, function()
      local saved = os.getenv("GITHUB_SHA")
      if not saved then
        local r = notify.send{ event = "deploy.success", title = "no commit", run = { id = "x" } }
        T.eq(r.github.ok, false); T.match(r.github.error, "no commit to set a status on")
      end
    end)
  end, { repo = "acme/widgets" })
end)

-- ---- channels in one file, and mistakes ----

T.test("a channel in one file beside the pipeline: found by name, run.started and the stage's message", function()
  local s = sink()
  local dir = project{
    ["channels/pager.lua"] = [[
      local notify = require("stagehost.notify")
      return function(message, config)
        notify.post(config.url, { json = { what = message.event, title = message.title, who = config.team } })
      end
    ]],
    ["p.lua"] = ([[
      local pipeline = require("stagehost.pipeline")
      return pipeline.define{ name = "paged", notify = { { channel = "pager", url = %q, team = "sre" } },
        stages = { { name = "tell", run = function()
          local r = require("stagehost.notify").send{ event = "deploy.success", title = "paged ok" }
          assert(r.pager.ok, r.pager.error)
        end } } }
    ]]):format(s.url),
  }
  local r = sh(dir, { "run", "p.lua" })
  T.eq(r.code, 0, r.stderr)
  T.eq(#s.requests, 2)
  local events = {}
  for _, req in ipairs(s.requests) do
    local b = json.decode(req.body)
    events[b.what] = b
    T.eq(b.who, "sre")
  end
  T.ok(events["run.started"], "run.started came through the pipeline's channel")
  T.eq(events["deploy.success"].title, "paged ok")
  -- the shipped examples load as channel files too
  local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))
  local checked = notify.check({ { channel = "discord", url = "https://discord.example/api/webhooks/1/x" },
    { channel = "ntfy", url = "https://ntfy.example/acme" } }, "test", SOURCE .. "/scripts")
  T.eq(checked[1].source, SOURCE .. "/scripts/channels/discord.lua")
  T.eq(checked[2].source, SOURCE .. "/scripts/channels/ntfy.lua")
  s:close()
  fs.remove(dir, { recursive = true })
end)

T.test("load errors: unknown channel, missing setting, a channel file that does not load — exit 2, named", function()
  local function define(notify_src, extra)
    local files = { ["p.lua"] = ([[
      local pipeline = require("stagehost.pipeline")
      return pipeline.define{ name = "bad",
        notify = %s,
        stages = { { name = "a", run = function() end } } }
    ]]):format(notify_src) }
    for k, v in pairs(extra or {}) do files[k] = v end
    return project(files)
  end
  local cases = {
    { [[{ { channel = "slak", url = "https://hooks.slack.com/services/x" } }]],
      "p.lua:2: notify[1] (slak): unknown channel 'slak' (did you mean 'slack'?); the channels are console, email, github, slack, teams, webhook" },
    { [[{ { channel = "console" }, { channel = "slack" } }]], "p.lua:2: notify[2] (slack) needs url = " },
    { [[{ { channel = "webhook", url = "https://x.example/h" } }]], "notify[1] (webhook) needs secret" },
    { [[{ { channel = "email", url = "smtp://mail:25", to = "ops@example.com" } }]], "notify[1] (email) needs from" },
    { [[{ { channel = "email", url = "http://mail", from = "a@b.c", to = "ops@example.com" } }]],
      "url must be smtp://host:port or smtps://host:port" },
    { [[{ { channel = "slack", url = "https://h/x", on = { "deploy.sucess" } } }]], "(did you mean 'deploy.success'?)" },
    { [[{ { channel = "teams", ulr = "https://h/x" } }]], "unknown setting 'ulr' (did you mean 'url'?)" },
    { [[{ { channel = "broken" } }]], "notify[1] (broken): the channel file ",
      { ["channels/broken.lua"] = "return function(m, c)\n  if then end\nend\n" } },
    { [[{ { channel = "needy" } }]], "notify[1] (needy) needs url = \"https://needy.example\"",
      { ["channels/needy.lua"] = "return { required = { url = 'https://needy.example' }, send = function() end }\n" } },
    { [[{ { channel = "empty" } }]], "must return function(message, config)",
      { ["channels/empty.lua"] = "return 42\n" } },
    { [["console"]], "notify must be a list of channels" },
  }
  for _, c in ipairs(cases) do
    local dir = define(c[1], c[3])
    local r = sh(dir, { "run", "p.lua" })
    T.eq(r.code, 2, c[1] .. ": " .. r.stderr)
    T.has(r.stderr, c[2], c[1])
    T.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
    T.ok(not fs.exists(dir .. "/.stagehost"), "nothing ran")
    if c[3] and c[3]["channels/broken.lua"] then T.has(r.stderr, "channels/broken.lua:2:") end
    fs.remove(dir, { recursive = true })
  end
  -- the same checks for notify.configure in a script; a disabled channel needs nothing
  T.raises(notify.configure, "notify[1] (slack) needs url", { { channel = "slack" } })
  local before = notify.configure{ { channel = "slack", enabled = false } }
  T.eq(next(notify.send{ event = "deploy.success" }), nil, "a disabled channel gets nothing")
  notify.configure(before)
end)

T.test("misuse of notify.send and notify.channel raises, naming the function", function()
  T.raises(notify.send, "bad argument #1 to 'notify.send' (table expected, got string)", "x")
  T.raises(notify.send, "event must be a string, got nil", { title = "no event" })
  T.raises(notify.send, "fields[1] must be {name", { event = "deploy.success", fields = { 42 } })
  T.raises(notify.channel, "'slack' is a built-in channel", "slack", function() end)
  T.raises(notify.channel, "function(message, config)", "mine", 42)
end)

T.test("the message model: status from the event, fields from a map, the run's facts", function()
  local seen
  notify.channel("test-model", function(m) seen = m end)
  with_channels({ { channel = "test-model" } }, function()
    notify.send{ event = "deploy.success", title = "ok", fields = { B = 2, A = "one" } }
    T.eq(seen.status, "success"); T.eq(seen.fields[1].name, "A"); T.eq(seen.fields[2].value, "2")
    T.eq(json.encode(seen.fields):sub(1, 1), "[")
    notify.send{ event = "checks.completed", title = "4 of 4 passed" }
    T.eq(seen.status, "info"); T.eq(json.encode(seen.fields), "[]")
    T.eq(notify.plain{ event = "deploy.failure", status = "failure", phase = "tests", text = "3 failed",
      fields = { { name = "Tag", value = "rc-1" } }, run = { id = "R1", pipeline = "staging", tag = "rc-1" } },
      "3 failed\n\nTag: rc-1\n\nEvent: deploy.failure, phase tests (failure)\nRun: R1 of staging, tag rc-1")
  end)
end)

T.test("a pipeline's channels are the run's: run.started is sent through the engine, then dropped", function()
  local got = {}
  notify.channel("test-run", function(m) got[#got + 1] = m end)
  local p = pipeline.define{ name = "with-channels", notify = { { channel = "test-run" } }, stages = {
    { name = "one", run = function() require("stagehost.notify").send{ event = "deploy.success", title = "done" } end },
  } }
  local r = engine.execute(p, { selected = engine.select(p), tag = "rc-7" })
  T.eq(r.status, "success")
  T.eq(#got, 2)
  local started = got[1].event == "run.started" and got[1] or got[2]
  T.eq(started.run.pipeline, "with-channels"); T.eq(started.run.tag, "rc-7")
  T.eq(started.status, "pending")
  -- a later run of a pipeline without notify does not inherit them
  local q = pipeline.define{ name = "without", stages = { { name = "one", run = function()
    require("stagehost.notify").send{ event = "deploy.success" }
  end } } }
  T.eq(engine.execute(q, { selected = engine.select(q) }).status, "success")
  T.eq(#got, 2)
end)

T.test("the seed's notify stage: deploy.success, or deploy.failure naming the phase that stopped the run", function()
  local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))
  local got = {}
  notify.channel("test-seed", function(m) got[#got + 1] = m end)
  local function seed(failing, ready)
    local stages = {}
    local before
    for _, name in ipairs{ "validate", "deploy-infrastructure", "deploy-frontend", "integration-tests" } do
      stages[#stages + 1] = { name = name, needs = before and { before } or nil, run = function()
        if name == failing then error("the stack rolled back") end
        return name == "deploy-frontend" and { url = "https://staging.example.com" } or {}
      end }
      before = name
    end
    stages[#stages + 1] = { name = "mark-release-ready", needs = { before }, run = function()
      if failing == "mark-release-ready" then error("no release notes") end
      return { ready = ready }
    end }
    stages[#stages + 1] = { name = "notify", needs = { "mark-release-ready", "deploy-infrastructure" }, when = "always",
      run = SOURCE .. "/scripts/stages/notify.lua" }
    return pipeline.define{ name = "staging", notify = { { channel = "test-seed", on = "deploy.*" } }, stages = stages }
  end
  -- the notify stage keeps notification.json as an artifact: in a state directory of its own
  local state = T.tempdir()
  local p = seed(nil, true)
  local r = engine.execute(p, { selected = engine.select(p), tag = "rc-3", state_dir = state })
  T.eq(r.status, "success")
  T.eq(got[1].event, "deploy.success"); T.eq(got[1].status, "success"); T.eq(got[1].phase, nil)
  T.eq(got[1].title, "Staging: rc-3 deployed")
  T.eq(r.stages.notify.outputs.delivered["test-seed"].ok, true)
  for _, case in ipairs{ { "validate", "validation" }, { "deploy-infrastructure", "infrastructure" },
    { "deploy-frontend", "frontend" }, { "integration-tests", "tests" }, { "mark-release-ready", "release" } } do
    got = {}
    p = seed(case[1], true)
    r = engine.execute(p, { selected = engine.select(p), tag = "rc-3", state_dir = state })
    T.eq(r.status, "failure")
    T.eq(r.stages.notify.status, "success", "a failure notification does not fail the notify stage")
    T.eq(got[1].event, "deploy.failure", case[1]); T.eq(got[1].phase, case[2]); T.eq(got[1].status, "failure")
    T.eq(got[1].title, "Staging: deployment failed in " .. case[2])
    T.has(got[1].text, "Deployment failed at " .. case[1] .. ": ")
    T.eq(r.stages.notify.outputs.phase, case[2])
  end
end)

T.test("notify.json_webhook: its settings, masked url and URL check (slack and teams test its POST); misuse named", function()
  local ch = notify.json_webhook{ payload = function(m, config) return { text = m.title, who = config.who } end,
    example = "https://chat.example.com/hooks/...", url_is = "the hook's", settings = { who = "string" } }
  T.eq(ch.settings.url, "string"); T.eq(ch.settings.insecure, "boolean"); T.eq(ch.settings.who, "string")
  T.eq(ch.secrets[1], "url")
  T.eq(ch.check({ url = "ftp://x" }), "url must be the hook's https:// URL")
  T.eq(ch.check({ url = "https://x" }), nil)
  T.raises(function() notify.json_webhook() end, "bad argument #1 to 'notify.json_webhook' %(table expected, got nil%)")
  T.raises(function() notify.json_webhook{ example = "x", url_is = "y" } end,
    "bad argument #1 to 'notify.json_webhook' %(payload must be a function %(got nil%)%)")
  T.raises(function() notify.json_webhook{ payload = print, example = "x", url_is = "y", settings = "who" } end,
    "settings must be a table")
end)

T.run()
