-- The approval page and Slack approvals, over real HTTP against real hosts: a waiting host
-- serves its own page when no `stagehost serve` runs; signed links (good, forged, expired, for
-- someone not listed), the CSRF token (missing, wrong), a proxy's header trusted only when
-- configured, refusals shown as 4xx pages with the gate unchanged, a decided gate, HTML
-- escaping; Slack callbacks with good, bad and stale signatures and a malformed payload, and
-- the message replaced in place through response_url (a local sink).
local T = require("harness")
local task = require("stagehost.task")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local http = require("stagehost.http")
local crypto = require("stagehost.crypto")
local url = require("stagehost.util.url")
local links = require("stagehost.approval.links")

-- A project whose stage asks approval.request(OPTS); notifications go to notifications.jsonl.
local function project(opts_src)
  return T.project({ ["p.lua"] = T.approval_pipeline("web", opts_src), ["channels/capture.lua"] = T.CAPTURE_ALL }, "web")
end

local GATE = [[{ title = "Ship <b>1.0</b>", approvers = {"alice", "bob", "carol"}, required = 2, forbid = "actor",
  timeout = "1h", checklist = "# Release\n- [x] tests green <script>alert('x')</script>\n- [link](javascript:alert(1))",
  preview = "+ added <img src=x onerror=alert(1)>" }]]

-- A stagehost process whose output lines are kept (T.spawn).
local function spawn(dir, args, env) return T.spawn_stagehost(dir, args, { env = env }) end

local function requested(dir, host)
  T.wait_for(dir .. "/notifications.jsonl")
  local m
  local deadline = task.now() + 20
  repeat
    for line in (fs.read(dir .. "/notifications.jsonl") or ""):gmatch("[^\n]+") do
      local n = json.decode(line)
      if n.event == "approval.requested" then m = n end
    end
    if not m then task.sleep(0.05) end
  until m or task.now() > deadline
  return assert(m, "no approval.requested notification; the host said:\n" .. (host and host.text() or "?"))
end

local function link_of(m, who)
  for _, l in ipairs(m.approval.links) do if l.who == who then return l.url end end
end

-- GET or POST with a cookie jar of one session.
local function client()
  local jar
  local c = {}
  function c.get(u, headers)
    local h = { Cookie = jar and ("sh_session=" .. jar) or nil }
    for k, v in pairs(headers or {}) do h[k] = v end
    local r = http.request{ url = u, headers = h }
    local set = r.headers["set-cookie"]
    if set then jar = set:match("sh_session=([^;]+)") end
    return r
  end
  function c.post(u, form, headers)
    local parts = {}
    for k, v in pairs(form) do parts[#parts + 1] = url.encode(k) .. "=" .. url.encode(v) end
    local h = { ["Content-Type"] = "application/x-www-form-urlencoded", Cookie = jar and ("sh_session=" .. jar) or nil }
    for k, v in pairs(headers or {}) do h[k] = v end
    return http.request{ method = "POST", url = u, body = table.concat(parts, "&"), headers = h }
  end
  return c
end

local function csrf_of(body) return body:match('name="csrf" value="([^"]+)"') end
local function base_of(u) return u:match("^(http://[^/]+)") end
local function token_of(u) return u:match("[?&]t=([^&]+)") end

local function events(dir, gate_id)
  local r = T.stagehost(dir, { "approvals", "--audit", gate_id:match("^[^/]+"), "--json" })
  local a = json.decode(r.stdout)
  return #a.gates[1].events
end

T.test("a waiting host serves the page itself: the signed link, the checklist escaped, a vote via the page decides the gate", function()
  local dir = project([[{ title = "One", approvers = {"alice"}, checklist = "- [ ] <script>alert(1)</script> *done*" }]])
  local host = spawn(dir, { "run", "p.lua", "--actor", "dana" })
  local m = requested(dir, host)
  T.ok(fs.exists(dir .. "/.stagehost/approval.key"))
  local _, _, perm = fs.exists(dir .. "/.stagehost/approval.key")
  T.eq(perm & 511, 384, "the key is 0600")
  local u = assert(link_of(m, "alice"))
  T.match(u, "^http://127%.0%.0%.1:%d+/gate%?id=")
  local c = client()
  local page = c.get(u)
  T.eq(page.status, 200)
  T.eq(page.headers["x-frame-options"], "DENY")
  T.match(page.headers["content-security-policy"], "default%-src 'none'")
  T.eq(page.headers["referrer-policy"], "no-referrer")
  T.no_match(page.body, "<script>", "raw HTML in the checklist is left out")
  T.has(page.body, "<em>done</em>", "the checklist is Markdown")
  T.has(page.body, 'Voting as <b id="who">alice</b>')
  local r = c.post(base_of(u) .. "/gate", { id = m.approval.gate, t = token_of(u), csrf = csrf_of(page.body),
    decision = "approve", comment = "looks <fine>" })
  T.eq(r.status, 200, r.body)
  T.has(r.body, "the gate is decided: approved")
  T.has(r.body, "looks &lt;fine&gt;")
  T.eq(host.finish().code, 0, host.text())
  T.has(host.text(), "vote: alice approved via web page (1 of 1): looks <fine>")
end, { timeout = 90 })

T.test("serve: forged and expired links, CSRF, an unlisted approver, a missing reason, a decided gate; a proxy header only when trusted", function()
  local dir = project(GATE)
  local srv = spawn(dir, { "serve", "--listen", "127.0.0.1:0" })
  local base = srv.line("serving approvals on "):match("(http://%S+)/$")
  T.ok(fs.exists(dir .. "/.stagehost/serve.json"))
  local host = spawn(dir, { "run", "p.lua", "--actor", "dana" })
  local m = requested(dir, host)
  local id = m.approval.gate
  local alice = assert(link_of(m, "alice"))
  T.eq(base_of(alice), base, "the links point at the running serve")
  T.no_match(host.text(), "approval page: http", "the host does not serve a page of its own")
  local before = events(dir, id)
  local c = client()

  -- a forged link: another signature, or another name under alice's signature
  local forged = alice:gsub("%.([%w_%-]+)$", "." .. crypto.base64url_encode(("x"):rep(32)))
  local r = c.get(forged)
  T.eq(r.status, 403)
  T.has(r.body, "signed link forged")
  local claims = json.decode(crypto.base64url_decode(token_of(alice):match("^([^.]+)")))
  claims.w = "bob"
  r = c.get(base .. "/gate?id=" .. url.encode(id) .. "&t=" .. crypto.base64url_encode(json.encode(claims)) .. "." .. token_of(alice):match("%.(.*)$"))
  T.eq(r.status, 403, "a name changed under the signature")
  -- expired: signed with the real key, past its expiry
  local key = links.key(dir .. "/.stagehost")
  local old = links.sign(key, { run = m.approval.run, gate = id, who = "alice", exp = os.time() - 5 })
  r = c.get(base .. "/gate?id=" .. url.encode(id) .. "&t=" .. old)
  T.eq(r.status, 403)
  T.has(r.body, "signed link expired at")

  -- CSRF: missing, then wrong
  local page = c.get(alice)
  T.eq(page.status, 200)
  r = c.post(base .. "/gate", { id = id, t = token_of(alice), decision = "approve" })
  T.eq(r.status, 403); T.has(r.body, "CSRF")
  r = c.post(base .. "/gate", { id = id, t = token_of(alice), csrf = "AAAA" .. csrf_of(page.body):sub(5), decision = "approve" })
  T.eq(r.status, 403); T.has(r.body, "CSRF")
  local other = client() -- a token from one session is no good in another
  other.get(base .. "/")
  r = other.post(base .. "/gate", { id = id, t = token_of(alice), csrf = csrf_of(page.body), decision = "approve" })
  T.eq(r.status, 403)

  -- a proxy's header is not trusted unless configured
  local anon = client()
  local p2 = anon.get(base .. "/gate?id=" .. url.encode(id), { ["X-Forwarded-User"] = "alice" })
  T.eq(p2.status, 200); T.has(p2.body, 'id="no-identity"')
  local with_form = anon.get(alice) -- a CSRF token of this session (the page without identity has no form)
  r = anon.post(base .. "/gate", { id = id, csrf = csrf_of(with_form.body), decision = "approve" }, { ["X-Forwarded-User"] = "alice" })
  T.eq(r.status, 403); T.has(r.body, "no identity")

  -- not an approver; the run's actor; a rejection without a reason
  local mallory = links.page(base, id, links.sign(key, { run = m.approval.run, gate = id, who = "mallory", exp = os.time() + 600 }))
  local mc = client()
  local mp = mc.get(mallory)
  r = mc.post(base .. "/gate", { id = id, t = token_of(mallory), csrf = csrf_of(mp.body), decision = "approve" })
  T.eq(r.status, 403); T.has(r.body, "mallory is not an approver")
  r = c.post(base .. "/gate", { id = id, t = token_of(alice), csrf = csrf_of(page.body), decision = "reject" })
  T.eq(r.status, 422); T.has(r.body, "a rejection needs a reason")
  T.eq(events(dir, id), before, "no refusal changed the gate")
  T.has(srv.text(), "403 for GET /gate from 127.0.0.1: signed link forged")
  T.has(srv.text(), "403 for POST /gate from 127.0.0.1: the form's CSRF token is missing or wrong")

  -- the page: escaped title, checklist and preview
  T.has(page.body, "Ship &lt;b&gt;1.0&lt;/b&gt;")
  T.no_match(page.body, "<script>"); T.no_match(page.body, "<img"); T.no_match(page.body, "javascript:")
  T.has(page.body, "&lt;img src=x onerror=alert(1)&gt;")

  -- two approvals decide; a vote after that (from a page loaded before) is refused
  local carol = client()
  local cp = carol.get(link_of(m, "carol"))
  r = c.post(base .. "/gate", { id = id, t = token_of(alice), csrf = csrf_of(page.body), decision = "approve", comment = "ok" })
  T.eq(r.status, 200, r.body)
  local bob = client()
  local bp = bob.get(link_of(m, "bob"))
  r = bob.post(base .. "/gate", { id = id, t = token_of(link_of(m, "bob")), csrf = csrf_of(bp.body), decision = "approve" })
  T.eq(r.status, 200); T.has(r.body, "the gate is decided: approved")
  T.has(carol.get(link_of(m, "carol")).body, 'id="decided"')
  r = carol.post(base .. "/gate", { id = id, t = token_of(link_of(m, "carol")), csrf = csrf_of(cp.body), decision = "approve" })
  T.eq(r.status, 409); T.has(r.body, "already decided")
  T.eq(host.finish().code, 0, host.text())
  srv.stop()
  T.ok(not fs.exists(dir .. "/.stagehost/serve.json"), "serve removes its record when it stops")
end, { timeout = 120 })

T.test("run --detach, a vote on serve's page, and serve finishes the run", function()
  local dir = project([[{ title = "Later", approvers = {"alice"}, timeout = "1h" }]])
  local srv = spawn(dir, { "serve", "--listen", "127.0.0.1:0" })
  local base = srv.line("serving approvals on "):match("(http://%S+)/$")
  local host = spawn(dir, { "run", "p.lua", "--actor", "dana", "--detach" })
  T.eq(host.finish().code, 0, host.text())
  local m = requested(dir, host)
  local u = link_of(m, "alice")
  T.eq(base_of(u), base)
  local c = client()
  local page = c.get(u)
  local r = c.post(base .. "/gate", { id = m.approval.gate, t = token_of(u), csrf = csrf_of(page.body), decision = "approve" })
  T.eq(r.status, 200, r.body)
  srv.line("its resume succeeded", 60)
  local st = json.decode(T.stagehost(dir, { "status", m.approval.run, "--json" }).stdout)
  T.eq(st.status, "success")
  srv.stop()
end, { timeout = 120 })

T.test("serve --trust-header: the proxy's header names the voter", function()
  local dir = project([[{ title = "Hdr", approvers = {"alice"}, timeout = "1h" }]])
  local srv = spawn(dir, { "serve", "--listen", "127.0.0.1:0", "--trust-header", "X-Forwarded-User" })
  local base = srv.line("serving approvals on "):match("(http://%S+)/$")
  local host = spawn(dir, { "run", "p.lua", "--actor", "dana" })
  local id = requested(dir, host).approval.gate
  local c = client()
  local p = c.get(base .. "/gate?id=" .. url.encode(id), { ["X-Forwarded-User"] = "alice" })
  T.has(p.body, 'Voting as <b id="who">alice</b>')
  local r = c.post(base .. "/gate", { id = id, csrf = csrf_of(p.body), decision = "approve" }, { ["X-Forwarded-User"] = "alice" })
  T.eq(r.status, 200, r.body)
  T.eq(host.finish().code, 0, host.text())
  T.has(host.text(), "alice approved via web page (X-Forwarded-User)")
  srv.stop()
end, { timeout = 90 })

-- Slack's signature over a body, at a time.
local function signed(secret, body, ts)
  return { ["Content-Type"] = "application/x-www-form-urlencoded", ["X-Slack-Request-Timestamp"] = tostring(ts),
    ["X-Slack-Signature"] = "v0=" .. crypto.hmac_sha256(secret, "v0:" .. ts .. ":" .. body) }
end

T.test("Slack: good, bad and stale signatures, a malformed payload; the message replaced in place once decided", function()
  local got = {}
  local sink <close> = http.serve{ handler = function(req)
    got[#got + 1] = json.decode(req.body)
    return { status = 200, body = "ok" }
  end }
  local secret = "8f742231b10e8888abcd99yyyzzz85a5"
  local dir = project([[{ title = "Chat", approvers = {"alice", "bob"}, required = 2, timeout = "1h" }]])
  local srv = spawn(dir, { "serve", "--listen", "127.0.0.1:0" }, { SLACK_SIGNING_SECRET = secret })
  local base = srv.line("serving approvals on "):match("(http://%S+)/$")
  local host = spawn(dir, { "run", "p.lua", "--actor", "dana" })
  local id = requested(dir, host).approval.gate
  local function payload(user, action, comment)
    local p = { type = "block_actions", user = { id = "U1", username = user }, response_url = ("http://127.0.0.1:%d/hook"):format(sink.port),
      actions = { { action_id = action, value = id } },
      state = { values = { stagehost_comment_block = { stagehost_comment = { type = "plain_text_input", value = comment } } } } }
    return "payload=" .. url.encode(json.encode(p))
  end
  local function post(body, headers)
    return http.request{ method = "POST", url = base .. "/slack/interactive", body = body, headers = headers }
  end
  local now = os.time()
  local body = payload("alice", "stagehost_approve", "fine")
  local h = signed(secret, body, now)
  h["X-Slack-Signature"] = "v0=" .. crypto.hmac_sha256("wrong", "v0:" .. now .. ":" .. body)
  T.eq(post(body, h).status, 401, "bad signature")
  T.eq(post(body, signed(secret, body, now - 301)).status, 401, "stale")
  T.eq(post(body, { ["Content-Type"] = "application/x-www-form-urlencoded" }).status, 401, "unsigned")
  T.eq(post("payload=%7Bnot-json", signed(secret, "payload=%7Bnot-json", now)).status, 400, "malformed")
  local wrong = payload("mallory", "stagehost_approve")
  T.eq(post(wrong, signed(secret, wrong, now)).status, 403, "not an approver")
  T.eq(events(dir, id), 1, "only the requested event: nothing was recorded")
  T.has(srv.text(), "slack: 401 for a callback from 127.0.0.1: bad signature")
  T.has(srv.text(), "stale request")

  T.eq(post(body, signed(secret, body, now)).status, 200)
  local second = payload("bob", "stagehost_approve")
  T.eq(post(second, signed(secret, second, now)).status, 200)
  T.eq(host.finish().code, 0, host.text())
  T.has(host.text(), "vote: alice approved via slack (1 of 2): fine")
  local deadline = task.now() + 10
  local replaced
  while not replaced and task.now() < deadline do
    for _, m in ipairs(got) do if m.replace_original == true then replaced = m end end
    task.sleep(0.05)
  end
  T.ok(replaced, "the message was replaced: " .. json.encode(got))
  T.match(replaced.text, "Approval approved: Chat")
  srv.stop()
  sink:close()
end, { timeout = 90 })

T.test("approval.requested carries the links: Slack buttons (approvals = true), a Teams Action.OpenUrl per approver, the links in the e-mail", function()
  local m = { event = "approval.requested", title = "Approval needed: X", text = "t", status = "pending", fields = {},
    approval = { gate = "R/gate/1", run = "R", page = "http://h/gate?id=R%2Fgate%2F1",
      links = { { who = "alice", url = "http://h/gate?id=R%2Fgate%2F1&t=AAA.BBB" } } } }
  local slack = require("stagehost.notify.slack")
  local function actions(p)
    for _, b in ipairs(p.blocks) do if b.type == "actions" then return b end end
  end
  T.eq(actions(slack.payload(m, { url = "http://x" })), nil, "no buttons unless approvals = true")
  local a = actions(slack.payload(m, { url = "http://x", approvals = true }))
  T.eq(a.elements[1].action_id, "stagehost_approve"); T.eq(a.elements[1].value, "R/gate/1")
  T.eq(a.elements[2].action_id, "stagehost_reject")
  local teams = require("stagehost.notify.teams").payload(m).attachments[1].content
  T.eq(teams.actions[1].type, "Action.OpenUrl"); T.eq(teams.actions[1].url, m.approval.links[1].url)
  T.has(teams.actions[1].title, "alice")
  local mail = require("stagehost.notify.email").render(m, { from = "ci@example.com", to = { "ops@example.com" } }, 0)
  T.has(mail:gsub("=\r\n", ""), "as alice: http://h/gate?id=3DR%2Fgate%2F1&t=3DAAA.BBB")
end)

T.test("links: a token names its gate, person and expiry; any change to it is forged", function()
  local key = ("k"):rep(32)
  local t = links.sign(key, { run = "R", gate = "R/s/1", who = "alice", exp = 2000 })
  local c = links.verify(key, t, 1000)
  T.eq(c.who, "alice"); T.eq(c.gate, "R/s/1"); T.eq(c.exp, 2000)
  T.eq(select(2, links.verify(key, t, 2000)), "expired at 1970-01-01T00:33:20Z")
  T.eq(select(2, links.verify(("j"):rep(32), t, 1000)), "forged")
  local body, mac = t:match("^(.-)%.(.*)$")
  T.eq(select(2, links.verify(key, body .. "." .. (mac:sub(1, 1) == "A" and "B" or "A") .. mac:sub(2), 1000)), "forged")
  local other = crypto.base64url_encode((crypto.base64url_decode(body):gsub("alice", "alicf")))
  T.eq(select(2, links.verify(key, other .. "." .. mac, 1000)), "forged")
  T.eq(select(2, links.verify(key, "nodot", 1000)), "malformed")
  T.ok(links.csrf_ok(key, "s1", links.csrf(key, "s1")))
  T.ok(not links.csrf_ok(key, "s2", links.csrf(key, "s1")))
  T.ok(not links.csrf_ok(key, nil, links.csrf(key, "s1")))
end)

T.test("markdown.html: CommonMark in safe mode; misuse named", function()
  local markdown = require("stagehost.markdown")
  local h = markdown.html("# T\n- [ ] *a* <script>x()</script>\n[l](javascript:alert(1)) ![i](data:image/png;base64,AA)\n<div onclick=x>d</div>")
  T.has(h, "<h1>T</h1>"); T.has(h, "<em>a</em>")
  T.no_match(h, "<script"); T.no_match(h, "<div"); T.no_match(h, "javascript:")
  T.has(h, '<a href="">l</a>', "an unsafe link is emptied")
  T.has(markdown.html("a\255b"), "a\239\191\189b", "invalid UTF-8 becomes U+FFFD")
  T.has(markdown.html('"q" -- x', { smart = true }), "“q” – x")
  T.raises(function() markdown.html({}) end, "bad argument #1 to 'html'")
  T.raises(function() markdown.html("x", { smart = 1 }) end, "bad argument #2 to 'markdown.html' %(option 'smart' must be a boolean")
  T.raises(function() markdown.html(("x"):rep(5 << 20)) end, "text too long")
  T.match(markdown.version(), "^%d+%.%d+")
end)

T.run()
