-- The webhook channel: the message as JSON, POSTed with the headers GitHub's webhooks have:
--   X-Stagehost-Event: deploy.failure
--   X-Stagehost-Delivery: 32 hex digits, new for each message (the same for its retries)
--   X-Stagehost-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>
-- A receiver checks the signature over the raw body in constant time, as for GitHub's
-- X-Hub-Signature-256 (github.verify_webhook does it for stagehost itself).
--   {channel = "webhook", url = "https://ops.example.com/hooks/deploys", secret = os.getenv("HOOK_SECRET"),
--    headers = {...}}
local notify = require("stagehost.notify")
local json = require("stagehost.json")

-- one delivery id per message, kept across its retries (channels share the message table and
-- must not change it)
local deliveries = setmetatable({}, { __mode = "k" })

return {
  settings = { url = "string", secret = "string", headers = "table", insecure = "boolean" },
  required = { url = "https://...", secret = "a shared secret the receiver checks the signature with" },
  secrets = { "secret" },
  check = function(config)
    if not config.url:match("^https?://") then return "url must be an http:// or https:// URL" end
    for k, v in pairs(config.headers or {}) do
      if type(k) ~= "string" or type(v) ~= "string" then return "headers must map names to strings" end
    end
  end,
  send = function(m, config)
    local crypto = require("stagehost.crypto")
    local body = json.encode(m)
    local headers = {}
    for k, v in pairs(config.headers or {}) do headers[k] = v end
    headers["Content-Type"] = "application/json"
    headers["X-Stagehost-Event"] = m.event
    deliveries[m] = deliveries[m] or crypto.hex_encode(crypto.random(16))
    headers["X-Stagehost-Delivery"] = deliveries[m]
    headers["X-Stagehost-Signature-256"] = "sha256=" .. crypto.hmac_sha256(config.secret, body)
    notify.post(config.url, { body = body, headers = headers, insecure = config.insecure })
    return true
  end,
}
