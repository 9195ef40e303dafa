-- The approval page: what `stagehost serve` and a waiting host (the "web" channel) answer.
--   GET  /                  the pending gates of the state directory
--   GET  /gate?id=G[&t=T]   one gate: checklist (Markdown), change set, commit and tag, votes,
--                           and the form when the visitor has an identity
--   POST /gate              a vote (form: id, t, csrf, shown, decision, comment)
--   POST /slack/interactive Slack's button callbacks (stagehost.approval.slack)
--   GET  /healthz
-- Identity: a signed per-approver link (stagehost.approval.links), or the header a trusted
-- proxy sets, only when configured (trust_header). Every vote goes through approval.vote, so a
-- refusal there (not an approver, the run's actor, a decided gate, a missing comment) is a 4xx
-- page with the reason. A forged or expired link, or a bad CSRF token, is a 403 and one log
-- line. Every answer carries a strict CSP, X-Frame-Options DENY and no-referrer (the link is
-- a credential: it must not leak in a Referer).
local approval = require("stagehost.approval")
local gate = require("stagehost.approval.gate")
local links = require("stagehost.approval.links")
local html = require("stagehost.approval.web_html")
local log = require("stagehost.log")
local url = require("stagehost.util.url")

local web = {}

local SECURITY = {
  ["Content-Security-Policy"] = "default-src 'none'; style-src '" .. html.CSS_HASH .. "'; form-action 'self'; "
    .. "base-uri 'none'; frame-ancestors 'none'",
  ["X-Frame-Options"] = "DENY",
  ["X-Content-Type-Options"] = "nosniff",
  ["Referrer-Policy"] = "no-referrer",
  ["Cache-Control"] = "no-store",
}
local COOKIE = "sh_session"

-- "a=1&b=x+y" -> {a = "1", b = "x y"} (the first of a repeated name)
function web.form(s)
  local out = {}
  for pair in (s or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = url.decode(k, true)
    if out[k] == nil then out[k] = url.decode(v, true) end
  end
  return out
end

local function cookie(req, name)
  for k, v in (req.headers.cookie or ""):gmatch("([^=;%s]+)=([^;]*)") do
    if k == name then return v end
  end
end

local function respond(status, body, extra, ctype)
  local headers = { ["Content-Type"] = ctype or "text/html; charset=utf-8" }
  for k, v in pairs(SECURITY) do headers[k] = v end
  for k, v in pairs(extra or {}) do headers[k] = v end
  return { status = status, headers = headers, body = body }
end

-- A refusal the page explains: one log line, the gate untouched.
local function refuse(req, status, title, why)
  log.warn(("approval page: %d for %s %s from %s: %s"):format(status, req.method, req.path, req.remote or "?", why))
  return respond(status, html.error(title, why))
end

-- The HTTP status of a refusal approval.vote gave.
local function status_of(why)
  if why:find("already decided", 1, true) or why:find("timed out", 1, true) then return 409 end
  if why:find("comment", 1, true) or why:find("reason", 1, true) then return 422 end
  if why:find("^no approval gate") or why:find("has no approval gate") then return 404 end
  return 403
end

-- web.handler{store, dir, trust_header, slack, wake} -> fn(req) -> response. wake() is called
-- after each vote recorded (a waiting host's own writes do not wake its waiting stage).
function web.handler(o)
  local store, key = o.store, links.key(o.dir)
  local trust = o.trust_header and o.trust_header:lower()

  -- Who the visitor is: {who, token | header}, nil (anonymous), or nil and why (a bad link).
  local function identify(req, token, gate_id)
    if trust then
      local v = req.headers[trust]
      if v and v ~= "" then return { who = v, header = true } end
    end
    if token and token ~= "" then
      local c, why = links.verify(key, token, os.time())
      if not c then return nil, "signed link " .. why end
      if c.gate ~= gate_id then return nil, "the signed link is for another gate" end
      return { who = c.who, token = token }
    end
    return nil
  end

  local function view_of(g, id, session, notice, kind)
    local events = gate.events(store, g.id)
    local now = gate.clock(store)
    local t = gate.tally(g, events, now)
    local votes = {}
    for i, e in ipairs(t.votes) do votes[i] = gate.vote_of(e) end
    local status = g.status ~= "pending" and g.status or (t.decision or "pending")
    local listed = gate.approvers(g.spec)
    return { gate = g.id, title = g.title, run = g.run_id, stage = g.stage, status = status, progress = gate.progress(t),
      deadline = gate.iso(g.deadline), checklist = g.checklist, preview = g.preview, commit = g.subject.commit,
      tag = g.subject.tag, shown_sha256 = g.shown_sha256, votes = votes,
      approvers = listed and table.concat(listed, ", ") or "anyone", who = id and id.who, token = id and id.token,
      via_header = id and id.header, csrf = links.csrf(key, session), notice = notice, notice_kind = kind,
      require_comment = g.spec.require_comment }
  end

  local function session_of(req)
    local s = cookie(req, COOKIE)
    if s and s:match("^[%w_%-]+$") and #s <= 64 then return s, nil end
    s = links.session()
    return s, { ["Set-Cookie"] = ("%s=%s; Path=/; HttpOnly; SameSite=Strict"):format(COOKIE, s) }
  end

  local function show(req, q)
    local id_, why = identify(req, q.t, q.id)
    if why then return refuse(req, 403, "Link refused", why) end
    local g = gate.exists(store) and q.id and gate.load(store, q.id)
    if not g then return respond(404, html.error("No such approval", ("no approval gate '%s'"):format(tostring(q.id)))) end
    local session, set = session_of(req)
    return respond(200, html.gate(view_of(g, id_, session)), set)
  end

  local function vote(req)
    local f = web.form(req.body)
    local session = cookie(req, COOKIE)
    if not links.csrf_ok(key, session, f.csrf) then
      return refuse(req, 403, "Vote refused", "the form's CSRF token is missing or wrong: reload the page and vote again")
    end
    local id_, why = identify(req, f.t, f.id)
    if why then return refuse(req, 403, "Vote refused", why) end
    if not id_ then return refuse(req, 403, "Vote refused", "no identity: open the signed link you were sent") end
    local g = gate.exists(store) and f.id and gate.load(store, f.id)
    if not g then return refuse(req, 404, "Vote refused", ("no approval gate '%s'"):format(tostring(f.id))) end
    if f.decision ~= "approve" and f.decision ~= "reject" then
      return refuse(req, 400, "Vote refused", "decision must be approve or reject")
    end
    if f.shown and f.shown ~= g.shown_sha256 then
      return refuse(req, 409, "Vote refused", "what this gate shows changed since the page was loaded: look at it again, then vote")
    end
    local comment = f.comment and f.comment:gsub("\r\n", "\n")
    if comment and not comment:find("%S") then comment = nil end
    local r, no = approval.vote(store, g.id, { who = id_.who, decision = f.decision == "approve" and "approved" or "rejected",
      comment = comment, via = id_.header and ("web page (" .. o.trust_header .. ")") or "web page" })
    if not r then
      local status = status_of(no)
      log.warn(("approval page: %d for %s's vote on %s: %s"):format(status, id_.who, g.id, no))
      return respond(status, html.gate(view_of(g, id_, session, no, "refused")))
    end
    log.info(("approval page: %s %s gate %s (%s)"):format(r.who, r.decision, r.gate, r.progress))
    if o.wake then o.wake() end
    local said = ("Your vote was recorded: %s (%s approvals)%s."):format(r.decision, r.progress,
      r.decision_now and ("; the gate is decided: " .. r.decision_now) or "")
    return respond(200, html.gate(view_of(gate.load(store, g.id), id_, session, said, "ok")))
  end

  return function(req)
    local path, method = req.path or "/", req.method
    if path == "/" and (method == "GET" or method == "HEAD") then
      return respond(200, html.list(approval.pending(store)))
    elseif path == "/gate" and (method == "GET" or method == "HEAD") then
      return show(req, web.form(req.query))
    elseif path == "/gate" and method == "POST" then
      return vote(req)
    elseif path == "/slack/interactive" and method == "POST" then
      if not o.slack then return refuse(req, 404, "Not found", "Slack approvals are not configured (set SLACK_SIGNING_SECRET for stagehost serve)") end
      return o.slack(req)
    elseif path == "/healthz" then
      return respond(200, "ok\n", nil, "text/plain; charset=utf-8")
    end
    return respond(404, html.error("Not found", "nothing here: " .. path))
  end
end

return web
