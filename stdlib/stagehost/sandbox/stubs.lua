-- Stub third-party providers the sandbox serves, so an app that signs users in with OAuth and
-- asks an AI model for text runs with no account anywhere:
--   GET  /_stub/oauth/authorize?redirect_uri=U&state=S  -> 302 to U?code=sandbox-code&state=S
--   POST /_stub/oauth/token   (form or JSON, code = "sandbox-code") -> {"access_token", "token_type",
--        "scope"}; another code -> 400 {"error": "invalid_grant"}
--   GET  /_stub/oauth/user    (Authorization: Bearer <a token it issued>) -> {"login", "id"}
--   POST /_stub/ai/complete   {"prompt": "..."} -> {"text": "...", "model": "sandbox"}
-- sb.oauth_url is the token endpoint, sb.ai_url the completion endpoint. Faults:
-- sb:fail_next{service = "stub", action = "oauth" | "ai", status = 503, message = ...}.
local json = require("stagehost.json")
local wire = require("stagehost.sandbox.wire")

local stubs = {}

stubs.PREFIX = "/_stub/"
stubs.CODE = "sandbox-code"

local function reply(status, value, headers)
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return { status = status, headers = h, body = json.encode(value) }
end

local function params_of(req)
  local ctype = (req.headers["content-type"] or ""):lower()
  if ctype:find("json", 1, true) then
    local doc = json.decode(req.body or "")
    return type(doc) == "table" and doc or {}
  end
  return wire.parse_form(req.body, wire.parse_form(req.query))
end

local function oauth(sb, req, what)
  local state = sb.state.stubs
  if what == "authorize" then
    local q = wire.parse_form(req.query)
    if not q.redirect_uri then return reply(400, { error = "invalid_request", error_description = "redirect_uri is missing" }) end
    local sep = q.redirect_uri:find("?", 1, true) and "&" or "?"
    local location = q.redirect_uri .. sep .. "code=" .. stubs.CODE .. (q.state and ("&state=" .. wire.escape(q.state)) or "")
    return { status = 302, headers = { Location = location }, body = "" }
  elseif what == "token" and req.method == "POST" then
    local p = params_of(req)
    if p.code ~= stubs.CODE then
      return reply(400, { error = "invalid_grant", error_description = "the code is not one the sandbox issued" })
    end
    local token = "sandbox-token-" .. wire.random_lower(16)
    state.tokens[token] = true
    return reply(200, { access_token = token, token_type = "bearer", scope = "read:user" })
  elseif what == "user" then
    local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)$")
    if not token or not state.tokens[token] then return reply(401, { message = "Bad credentials" }) end
    return reply(200, { login = "sandbox-user", id = 1 })
  end
  return reply(404, { message = "Not Found" })
end

local function ai(req)
  if req.method ~= "POST" then return reply(405, { message = "POST a JSON body with a prompt" }) end
  local p = params_of(req)
  local prompt = type(p.prompt) == "string" and p.prompt or ""
  return reply(200, { text = ("Sandbox AI reply to: %s"):format(prompt), model = "sandbox" })
end

function stubs.init(sb)
  sb.state.stubs = sb.state.stubs or { tokens = {} }
  sb.oauth_url = sb.url .. stubs.PREFIX .. "oauth/token"
  sb.oauth_authorize_url = sb.url .. stubs.PREFIX .. "oauth/authorize"
  sb.ai_url = sb.url .. stubs.PREFIX .. "ai/complete"
end

function stubs.handle(sb, req)
  local provider, what = req.path:sub(#stubs.PREFIX + 1):match("^([^/]+)/?(.*)$")
  sb:record("stub", (provider or "") .. "/" .. (what or ""), req)
  local fault = sb:take_fault("stub", provider)
  if fault then
    return { status = fault.status or 503, headers = { ["Content-Type"] = "application/json" },
      body = fault.body or json.encode{ message = fault.message or "fault injected by the sandbox" } }
  end
  if provider == "oauth" then return oauth(sb, req, what) end
  if provider == "ai" and what == "complete" then return ai(req) end
  return reply(404, { message = "Not Found" })
end

return stubs
