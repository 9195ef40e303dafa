-- The Microsoft Teams channel: a Workflows webhook (the "Post to a channel when a webhook request
-- is received" template; Office 365 connectors are retired) gets an Adaptive Card 1.4 — the
-- title coloured by status, the text, the fields as a FactSet, a line naming the event, phase
-- and run, and a button to the run when it has a URL — in the envelope Workflows expect:
-- {type = "message", attachments = {{contentType = "application/vnd.microsoft.card.adaptive",
-- content = card}}}. Workflows answer 202 Accepted: any 2xx is a delivery.
--   {channel = "teams", url = "https://prod-00.westus.logic.azure.com/workflows/..."}
-- The URL carries its signature (sig=...): it is masked from the start.
local notify = require("stagehost.notify")
local json = require("stagehost.json")

local COLOR = { success = "Good", failure = "Attention", cancelled = "Warning", pending = "Accent", info = "Default" }
local MARK = { success = "✅", failure = "❌", cancelled = "⛔", pending = "⏳", info = "ℹ️" }

local function card(m)
  local body = json.array{
    { type = "TextBlock", text = ("%s %s"):format(MARK[m.status] or MARK.info, m.title), weight = "Bolder",
      size = "Medium", wrap = true, color = COLOR[m.status] or COLOR.info, style = "heading" },
  }
  if m.text and m.text ~= "" then body[#body + 1] = { type = "TextBlock", text = m.text, wrap = true } end
  if #m.fields > 0 then
    local facts = json.array{}
    for i, f in ipairs(m.fields) do facts[i] = { title = f.name, value = f.value } end
    body[#body + 1] = { type = "FactSet", facts = facts }
  end
  local about = { m.status, m.event }
  if m.phase then about[#about + 1] = "phase " .. m.phase end
  local r = m.run
  if r and r.id then
    about[#about + 1] = (r.pipeline and (r.pipeline .. " ") or "") .. "run " .. r.id
    if r.tag then about[#about + 1] = "tag " .. r.tag end
  end
  body[#body + 1] = { type = "TextBlock", text = table.concat(about, " · "), isSubtle = true, size = "Small", wrap = true }
  local c = {
    ["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json",
    type = "AdaptiveCard", version = "1.4", body = body, msteams = { width = "Full" },
  }
  local actions = json.array{}
  -- approval.requested: a button per approver to their signed link (or one to the page)
  local a = type(m.approval) == "table" and m.approval or {}
  for _, l in ipairs(a.links or {}) do
    actions[#actions + 1] = { type = "Action.OpenUrl", title = "Approve or reject as " .. l.who, url = l.url }
  end
  if a.page and #actions == 0 then actions[#actions + 1] = { type = "Action.OpenUrl", title = "Open the approval page", url = a.page } end
  if r and r.url then actions[#actions + 1] = { type = "Action.OpenUrl", title = "Open the run", url = r.url } end
  if #actions > 0 then c.actions = actions end
  return c
end

local function payload(m)
  return { type = "message", attachments = json.array{
    { contentType = "application/vnd.microsoft.card.adaptive", contentUrl = json.null, content = card(m) },
  } }
end

return notify.json_webhook {
  example = "https://....logic.azure.com/workflows/...", url_is = "the workflow's",
  payload = payload,
}
