-- An ntfy channel in one file (https://ntfy.sh, or your own server): push notifications to
-- phones subscribed to a topic.
--   notify = {{channel = "ntfy", url = "https://ntfy.sh/acme-deploys", token = os.getenv("NTFY_TOKEN")}}
-- The simplest form of a channel file: it returns function(message, config). The message is
-- published as JSON to the server's root (so a title need not fit an HTTP header); failures
-- carry the priority and the tags that make phones buzz.
local notify = require("stagehost.notify")

local TAGS = { success = "white_check_mark", failure = "rotating_light", cancelled = "no_entry", pending = "hourglass" }

return function(message, config)
  local server, topic = tostring(config.url or ""):match("^(https?://[^/]+)/([%w_%-]+)$")
  if not server then error("ntfy: url must be the topic's URL, like https://ntfy.sh/TOPIC", 0) end
  local headers = {}
  if config.token then headers.Authorization = "Bearer " .. config.token end
  notify.post(server, { headers = headers, json = {
    topic = topic,
    title = message.title,
    message = notify.plain(message),
    tags = { TAGS[message.status] or "information_source" },
    priority = message.status == "failure" and 4 or 3,
    click = message.run and message.run.url or nil,
  } })
end
