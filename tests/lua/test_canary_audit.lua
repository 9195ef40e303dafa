-- Canary audit: the whole staging flow in the sandbox with a canary secret in every input that
-- can carry one (the GitHub token, AWS keys, the webhook and Slack signing secrets, the Slack
-- webhook URL, the SMTP password, an unrelated *_TOKEN; and the credentials the sandbox
-- issues, which sign and authorise every request of the run), then every place the run writes
-- or sends to is searched for each canary as it is, JSON-escaped and percent-encoded: the
-- console, `status --json`, `logs` and `runs`, every file under the state directory (logs,
-- run.json, report.html, junit, artifacts, the state database's bytes, the sandbox's request
-- log and world), an sqlite3 dump of the database, and what the receivers got (webhook,
-- Slack, mail). The canaries hold ", \, /, + and a space, which change under JSON escaping
-- and URL encoding.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local http = require("stagehost.http")
local json = require("stagehost.json")
local url = require("stagehost.util.url")
local flow = require("flow")

local STAGEHOST = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"))

local function canary(name)
  return ('cnry-%s-Q"b\\s/p+e x%s'):format(name, require("stagehost.crypto").hex_encode(require("stagehost.crypto").random(4)))
end

-- Where a canary may be found in an encoded form: -> {form name = text}
local function forms(c)
  local escaped = json.encode(c):sub(2, -2)
  local pct = url.encode(c)
  return { raw = c, json = escaped, url = pct, url_lower = (pct:gsub("%%%x%x", string.lower)),
    form = (pct:gsub("%%20", "+")), json_of_json = json.encode(escaped):sub(2, -2) }
end

-- Every regular file under dir -> {path}
local function files_under(dir, out)
  out = out or {}
  for _, name in ipairs(fs.list(dir) or {}) do
    local path = dir .. "/" .. name
    local _, kind = fs.exists(path)
    if kind == "directory" then files_under(path, out) elseif kind then out[#out + 1] = path end
  end
  return out
end

T.test("no canary secret reaches any sink of a whole staging run", function()
  local state = T.tempdir()
  local received = {}
  local sink = http.serve{ idle_timeout = 0.3, handler = function(req)
    received[#received + 1] = req
    return { status = 200, body = "ok" }
  end }
  local base = ("http://127.0.0.1:%d"):format(sink.port)
  -- a private copy of the app: other tests run the flow on examples/webapp at the same time
  local app = flow.app_copy(SOURCE)

  local canaries = {
    GITHUB_TOKEN = canary("github"),
    AWS_ACCESS_KEY_ID = "AKIA" .. canary("akid"),
    AWS_SECRET_ACCESS_KEY = canary("aws-secret"),
    AWS_SESSION_TOKEN = canary("aws-session"),
    DEPLOY_WEBHOOK_SECRET = canary("webhook"),
    SLACK_SIGNING_SECRET = canary("slack-signing"),
    DEPLOY_API_TOKEN = canary("unrelated"),
  }
  -- a mail server that takes only this password (Debian's python3-aiosmtpd)
  canaries.SMTP_PASSWORD = canary("smtp")
  local mail_dir = T.tempdir()
  local smtp, smtp_port = T.smtp_sink(mail_dir, "--auth", "deployer:" .. canaries.SMTP_PASSWORD)
  -- the Slack webhook URL is a secret too (its path is the credential); the sink serves it
  local slack_path = "/services/T000/B000/cnry-slack-" .. require("stagehost.crypto").hex_encode(require("stagehost.crypto").random(6))
  local env = { STAGEHOST_BIN = STAGEHOST, GITHUB_ACTIONS = false, NO_COLOR = "1", STAGEHOST_SANDBOX_STEP = "0.02",
    DEPLOY_WEBHOOK_URL = base .. "/hooks", SLACK_WEBHOOK_URL = base .. slack_path,
    SMTP_URL = "smtp://127.0.0.1:" .. smtp_port, SMTP_USER = "deployer", SMTP_FROM = "stagehost@example.com",
    RELEASE_MANAGERS = "rm@example.com" }
  for k, v in pairs(canaries) do env[k] = v end
  canaries.SLACK_WEBHOOK_URL = base .. slack_path

  local r = proc.run{ STAGEHOST, "run", SOURCE .. "/scripts/staging.lua", "--sandbox", "--auto-approve", "--state", state,
    "--tag", "rc-9.9.9", "--var", "app=" .. app, env = env, timeout = 300 }
  local id = r.stdout:match("^run (%S+)")
  T.eq(r.code, 0, r.stdout .. r.stderr)
  local function cli(...)
    local argv = { STAGEHOST, ... }
    argv[#argv + 1], argv[#argv + 2], argv.timeout, argv.env = "--state", state, 60, env
    local c = proc.run(argv)
    return c.stdout .. c.stderr
  end

  -- every sink: name -> text
  local sinks = {
    ["console (stdout)"] = r.stdout, ["console (stderr)"] = r.stderr,
    ["status --json"] = cli("status", id, "--json"), ["logs"] = cli("logs", id), ["runs"] = cli("runs"),
  }
  for _, path in ipairs(files_under(state)) do
    sinks[path:sub(#state + 2)] = fs.read(path) or ""
  end
  smtp:kill("TERM")
  smtp:wait()
  local mails = fs.list(mail_dir) or {}
  T.ok(#mails > 0, "the mail server took a message (the login worked)")
  for _, name in ipairs(mails) do sinks["mail " .. name] = fs.read(mail_dir .. "/" .. name) or "" end
  fs.remove(mail_dir, { recursive = true })
  local dump = proc.run{ "sqlite3", state .. "/state.db", ".dump", timeout = 60 }
  T.eq(dump.code, 0, dump.stderr)
  sinks["sqlite3 .dump of state.db"] = dump.stdout
  local got_slack, got_webhook = false, false
  for i, req in ipairs(received) do
    local head = {}
    for k, v in pairs(req.headers) do head[#head + 1] = k .. ": " .. v end
    table.sort(head)
    if req.path == slack_path then
      got_slack = true
      -- the receiver was told its own URL's path: only the body and headers count
      sinks[("notification %d to slack (headers, body)"):format(i)] = table.concat(head, "\n") .. "\n\n" .. (req.body or "")
    else
      got_webhook = got_webhook or req.path == "/hooks"
      sinks[("notification %d to %s"):format(i, req.path)] = req.path .. "\n" .. table.concat(head, "\n") .. "\n\n" .. (req.body or "")
    end
  end
  T.ok(got_slack, "the Slack sink got messages")
  T.ok(got_webhook, "the webhook sink got messages")
  T.ok(sinks["sandbox/requests.jsonl"], "the sandbox's request log is there")
  T.ok(sinks["runs/" .. id .. "/report.html"], "report.html is there")

  -- the credentials the sandbox issued this host, which signed every AWS request and
  -- authorised every GitHub one: in the sandbox's world (its business) and nowhere else
  local allowed = {}
  do
    local sb = require("stagehost.sandbox").start{ persist = state .. "/sandbox" }
    canaries["sandbox AWS secret key"] = sb.state.aws.keys.AKIDSTAGEHOSTSANDBOX.secret
    canaries["sandbox GitHub token"] = sb.github_token
    sb.persist = nil -- a look only: nothing saved
    sb:close()
    allowed["sandbox AWS secret key"] = { ["sandbox/world.lua"] = true }
    allowed["sandbox GitHub token"] = { ["sandbox/world.lua"] = true }
  end

  -- the search itself finds each form (a control: a search that finds nothing proves nothing)
  local control = canaries.DEPLOY_WEBHOOK_SECRET
  for _, text in ipairs{ json.encode{ s = control }, "https://h/?s=" .. url.encode(control), "a=" .. url.encode(control):gsub("%%%x%x", string.lower) } do
    local found = false
    for _, f in pairs(forms(control)) do found = found or text:find(f, 1, true) ~= nil end
    T.ok(found, "the search finds the canary in " .. text)
  end

  local leaks = {}
  for name, c in pairs(canaries) do
    for form, text in pairs(forms(c)) do
      for sink_name, content in pairs(sinks) do
        local at = content:find(text, 1, true)
        if at and not (allowed[name] and allowed[name][sink_name]) then
          leaks[#leaks + 1] = ("%s (%s) in %s: ...%s..."):format(name, form, sink_name,
            content:sub(math.max(1, at - 60), at + #text + 20):gsub("\n", "\\n"))
        end
      end
    end
  end
  table.sort(leaks)
  sink:close()
  fs.remove(state, { recursive = true })
  fs.remove(app, { recursive = true })
  T.eq(#leaks, 0, "canaries found:\n" .. table.concat(leaks, "\n"))
end, { timeout = 600 })

T.run()
