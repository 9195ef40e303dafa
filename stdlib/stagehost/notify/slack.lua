-- The Slack channel: an incoming webhook (api.slack.com/messaging/webhooks) gets a Block Kit
-- message — a header (the title), a section (the text), sections of fields, a context line
-- (status, event, phase, run) — and a plain `text` fallback for notifications and old clients.
--   {channel = "slack", url = "https://hooks.slack.com/services/T/B/X", username =, icon_emoji =,
--    channel_name = "#deploys", approvals = true}
-- approvals = true puts Approve/Reject buttons on approval.requested; Slack sends the clicks to
-- the app's Interactivity Request URL, which is `stagehost serve`'s /slack/interactive (it needs
-- $SLACK_SIGNING_SECRET); the Slack username must be an approver's name as listed.
-- The webhook URL is a secret (anyone holding it can post): it is masked from the start.
local notify = require("stagehost.notify")
local json = require("stagehost.json")

local EMOJI = { success = ":white_check_mark:", failure = ":x:", cancelled = ":no_entry_sign:",
  pending = ":hourglass_flowing_sand:", info = ":information_source:" }

-- mrkdwn treats &, < and > as control characters (api.slack.com/reference/surfaces/formatting)
local function escape(s)
  return (s:gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

-- at most n bytes, cut at a UTF-8 character boundary, "…" marking a cut
local function cut(s, n)
  if #s <= n then return s end
  local i = n - 3
  while i > 0 and (s:byte(i + 1) or 0) & 0xC0 == 0x80 do i = i - 1 end
  return s:sub(1, i) .. "…"
end

local function context_line(m)
  local parts = { ("%s *%s*"):format(EMOJI[m.status] or EMOJI.info, escape(m.status)), "`" .. escape(m.event) .. "`" }
  if m.phase then parts[#parts + 1] = "phase *" .. escape(m.phase) .. "*" end
  local r = m.run
  if r and r.id then
    local run = r.url and ("<%s|run %s>"):format(r.url, escape(r.id)) or ("run " .. escape(r.id))
    parts[#parts + 1] = (r.pipeline and (escape(r.pipeline) .. " ") or "") .. run
    if r.tag then parts[#parts + 1] = "tag `" .. escape(r.tag) .. "`" end
  end
  return table.concat(parts, " · ")
end

-- The payload for one message (also used by tests and by whoever wants to preview it).
local function payload(m, config)
  local blocks = json.array{
    { type = "header", text = { type = "plain_text", text = cut(m.title, 150), emoji = true } },
  }
  if m.text and m.text ~= "" then
    blocks[#blocks + 1] = { type = "section", text = { type = "mrkdwn", text = cut(escape(m.text), 3000) } }
  end
  -- a section holds at most 10 fields; 4 sections are plenty for a notification
  local section
  for i, f in ipairs(m.fields) do
    if i > 40 then break end
    if (i - 1) % 10 == 0 then
      section = { type = "section", fields = json.array{} }
      blocks[#blocks + 1] = section
    end
    section.fields[#section.fields + 1] = { type = "mrkdwn",
      text = cut(("*%s*\n%s"):format(escape(f.name), escape(f.value)), 2000) }
  end
  blocks[#blocks + 1] = { type = "context", elements = json.array{ { type = "mrkdwn", text = cut(context_line(m), 3000) } } }
  -- approvals = true: the approval.requested message gets a comment box and Approve/Reject
  -- buttons, answered through `stagehost serve` (stagehost.approval.slack)
  if config.approvals and m.event == "approval.requested" and type(m.approval) == "table" and m.approval.gate then
    for _, b in ipairs(require("stagehost.approval.slack").blocks(m.approval.gate)) do blocks[#blocks + 1] = b end
  end
  local fallback = ("%s %s"):format(EMOJI[m.status] or EMOJI.info, m.title)
  if m.text and m.text ~= "" then fallback = fallback .. ": " .. m.text end
  return {
    text = cut(escape(fallback), 3000),
    blocks = blocks,
    username = config.username, icon_emoji = config.icon_emoji, icon_url = config.icon_url,
    channel = config.channel_name,
  }
end

return notify.json_webhook {
  example = "https://hooks.slack.com/services/...", url_is = "the webhook's",
  settings = { username = "string", icon_emoji = "string", icon_url = "string", channel_name = "string",
    approvals = "boolean" },
  payload = payload,
}
