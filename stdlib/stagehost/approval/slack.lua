-- Slack approvals: the Approve/Reject buttons of the approval.requested Slack message (with a
-- comment box), and their interactive callbacks, which Slack POSTs to `stagehost serve` at
-- /slack/interactive. A callback counts only when X-Slack-Signature is
-- "v0=" .. hex(HMAC-SHA256(signing secret, "v0:" .. X-Slack-Request-Timestamp .. ":" .. raw body))
-- and the timestamp is within 5 minutes of now; anything else (bad or missing signature, stale,
-- a body that is not `payload=<JSON>` of a block action) is a 4xx and one log line, the gate
-- untouched. The voter is the Slack user's username (else name, else id): it must be one of the
-- gate's approvers as listed. Once the gate decides, the message is replaced in place through
-- the payload's response_url ({replace_original = true}); a refused vote gets an ephemeral reply.
local approval = require("stagehost.approval")
local gate = require("stagehost.approval.gate")
local crypto = require("stagehost.crypto")
local json = require("stagehost.json")
local log = require("stagehost.log")
local task = require("stagehost.task")
local url = require("stagehost.util.url")

local slack = {}

slack.WINDOW = 300 -- seconds a callback's timestamp may differ from now
slack.APPROVE, slack.REJECT, slack.COMMENT = "stagehost_approve", "stagehost_reject", "stagehost_comment"

-- The blocks to add to an approval.requested message: a comment box and the two buttons, each
-- carrying the gate id.
function slack.blocks(gate_id)
  return {
    { type = "input", block_id = "stagehost_comment_block", optional = true,
      label = { type = "plain_text", text = "Comment (needed to reject)" },
      element = { type = "plain_text_input", action_id = slack.COMMENT, multiline = true } },
    { type = "actions", block_id = "stagehost_vote", elements = json.array{
      { type = "button", action_id = slack.APPROVE, style = "primary", value = gate_id,
        text = { type = "plain_text", text = "Approve" } },
      { type = "button", action_id = slack.REJECT, style = "danger", value = gate_id,
        text = { type = "plain_text", text = "Reject" } } } },
  }
end

-- slack.verify(secret, headers, body, now) -> true, or nil, HTTP status, why
function slack.verify(secret, headers, body, now)
  local ts, sig = headers["x-slack-request-timestamp"], headers["x-slack-signature"]
  if not ts or not sig then return nil, 401, "no X-Slack-Signature or X-Slack-Request-Timestamp" end
  local t = ts:match("^%d+$") and tonumber(ts)
  if not t then return nil, 401, "X-Slack-Request-Timestamp is not a number" end
  if math.abs(now - t) > slack.WINDOW then return nil, 401, ("stale request (timestamp %d s from now)"):format(math.floor(t - now)) end
  local want = "v0=" .. crypto.hmac_sha256(secret, "v0:" .. ts .. ":" .. body)
  if not crypto.equal(sig, want) then return nil, 401, "bad signature" end
  return true
end

-- The payload of a block action, or nil and why.
function slack.payload(body)
  local text
  for pair in body:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if k == "payload" then text = url.decode(v, true) end
  end
  if not text then return nil, "the body has no payload=" end
  local ok, p = pcall(json.decode, text)
  if not ok or type(p) ~= "table" then return nil, "the payload is not JSON" end
  if p.type ~= "block_actions" or type(p.actions) ~= "table" or type(p.actions[1]) ~= "table" or type(p.user) ~= "table" then
    return nil, "the payload is not a block action with a user"
  end
  local a = p.actions[1]
  if (a.action_id ~= slack.APPROVE and a.action_id ~= slack.REJECT) or type(a.value) ~= "string" then
    return nil, "the action is not a stagehost vote"
  end
  local who = p.user.username or p.user.name or p.user.id
  if type(who) ~= "string" or who == "" then return nil, "the payload names no user" end
  local comment
  for _, block in pairs(type(p.state) == "table" and type(p.state.values) == "table" and p.state.values or {}) do
    local input = type(block) == "table" and block[slack.COMMENT]
    if type(input) == "table" and type(input.value) == "string" and input.value:find("%S") then comment = input.value end
  end
  local response_url = type(p.response_url) == "string" and p.response_url:match("^https?://") and p.response_url or nil
  return { who = who, decision = a.action_id == slack.APPROVE and "approved" or "rejected", gate = a.value,
    comment = comment, response_url = response_url }
end

-- The message that replaces the original once the gate is decided.
function slack.decided(g, decision, votes)
  local lines = {}
  for _, v in ipairs(votes) do
    lines[#lines + 1] = ("• %s %s%s"):format(v.who, v.decision, v.comment and (": " .. v.comment) or "")
  end
  local mark = decision == "approved" and ":white_check_mark:" or (decision == "rejected" and ":x:" or ":hourglass:")
  local text = ("%s Approval %s: %s"):format(mark, decision == "timeout" and "timed out" or decision, g.title)
  return { replace_original = true, text = text, blocks = json.array{
    { type = "section", text = { type = "mrkdwn", text = text } },
    { type = "context", elements = json.array{ { type = "mrkdwn",
      text = (#lines > 0 and table.concat(lines, "\n") or "No votes.") .. "\ngate " .. g.id } } } } }
end

-- POST one JSON answer to a response_url, in its own task (Slack wants the callback's answer
-- within 3 seconds); a failure is one log line.
local function reply(response_url, body, insecure)
  if not response_url then return end
  task.spawn(function()
    local ok, res = pcall(require("stagehost.http").request, { method = "POST", url = response_url, json = body,
      timeout = 10, insecure = insecure })
    if not ok or res.status > 299 then
      log.warn(("slack: response_url was not updated: %s"):format(ok and ("HTTP " .. res.status) or tostring(res):match("^[^\n]*")))
    end
  end)
end

-- slack.handler{store, secret, insecure} -> fn(req) -> response, and watch(): a function that,
-- called now and then, replaces the messages of gates decided elsewhere.
function slack.handler(o)
  local watching = {} -- gate id -> the latest response_url of a click on its message
  local function answer(status, text) return { status = status, headers = { ["Content-Type"] = "text/plain; charset=utf-8" }, body = text } end
  local function bad(req, status, why)
    log.warn(("slack: %d for a callback from %s: %s; nothing was recorded"):format(status, req.remote or "?", why))
    return answer(status, why .. "\n")
  end
  local function decided(id)
    local g = gate.load(o.store, id)
    if not g or g.status == "pending" then return false end
    local votes = {}
    local t = gate.tally(g, gate.events(o.store, id), gate.clock(o.store))
    for i, e in ipairs(t.votes) do votes[i] = gate.vote_of(e) end
    reply(watching[id], slack.decided(g, g.status, votes), o.insecure)
    watching[id] = nil
    return true
  end
  local function handle(req)
    local ok, status, why = slack.verify(o.secret, req.headers, req.body or "", os.time())
    if not ok then return bad(req, status, why) end
    local p, perr = slack.payload(req.body or "")
    if not p then return bad(req, 400, perr) end
    if p.response_url then watching[p.gate] = p.response_url end
    local r, no = approval.vote(o.store, p.gate, { who = p.who, decision = p.decision, comment = p.comment, via = "slack" })
    if not r then
      log.warn(("slack: %s's vote on %s was refused: %s"):format(p.who, p.gate, no))
      reply(p.response_url, { response_type = "ephemeral", replace_original = false, text = "Your vote was refused: " .. no }, o.insecure)
      return answer(no:find("already decided") and 409 or 403, no .. "\n")
    end
    log.info(("slack: %s %s gate %s (%s)"):format(r.who, r.decision, r.gate, r.progress))
    if r.decision_now then
      -- the waiting stage records the decision; the tally already says it
      local g = gate.load(o.store, r.gate)
      local t = gate.tally(g, gate.events(o.store, r.gate), gate.clock(o.store))
      local votes = {}
      for i, e in ipairs(t.votes) do votes[i] = gate.vote_of(e) end
      reply(p.response_url, slack.decided(g, r.decision_now, votes), o.insecure)
      watching[p.gate] = nil
    else
      reply(p.response_url, { response_type = "ephemeral", replace_original = false,
        text = ("Your vote was recorded: %s (%s approvals)"):format(r.decision, r.progress) }, o.insecure)
    end
    return answer(200, "")
  end
  local function watch()
    for id in pairs(watching) do decided(id) end
  end
  return handle, watch
end

return slack
