-- A Discord channel in one file: `notify = {{channel = "discord", url = os.getenv("DISCORD_WEBHOOK_URL")}}`
-- in a pipeline beside this folder finds it by its name. The URL is a channel webhook's (Server
-- Settings → Integrations → Webhooks); Discord answers 204. The message becomes one embed:
-- the title, the text, the fields inline, a colour for the status.
--
-- A channel file returns function(message, config), or, as here, a table with that function as
-- `send` and the settings it cannot do without as `required` (a pipeline that leaves one out
-- stops at load, exit 2, naming it) and those to mask as `secrets`.
local notify = require("stagehost.notify")
local json = require("stagehost.json")

local COLOURS = { success = 0x2EB67D, failure = 0xE01E5A, cancelled = 0xECB22E, pending = 0x5865F2 }

-- Discord's limits: title 256 characters, description 4096, 25 fields of 256 / 1024
local function cut(s, n) return #s > n and (s:sub(1, n - 3) .. "...") or s end

return {
  required = { url = "https://discord.com/api/webhooks/ID/TOKEN" },
  secrets = { "url" },
  send = function(message, config)
    local fields = json.array{}
    for i, f in ipairs(message.fields) do
      if i > 25 then break end
      fields[i] = { name = cut(f.name, 256), value = cut(f.value, 1024), inline = true }
    end
    local run = message.run or {}
    local footer = message.event .. (message.phase and (" · phase " .. message.phase) or "")
      .. (run.id and (" · run " .. run.id) or "")
    notify.post(config.url, { json = {
      username = config.username or "stagehost",
      allowed_mentions = { parse = json.array{} }, -- a title with @everyone pings nobody
      embeds = json.array{ {
        title = cut(message.title, 256),
        description = message.text and cut(message.text, 4096) or nil,
        url = run.url,
        color = COLOURS[message.status] or 0x99AAB5,
        fields = fields,
        footer = { text = cut(footer, 2048) },
        timestamp = message.at,
      } },
    } })
  end,
}
