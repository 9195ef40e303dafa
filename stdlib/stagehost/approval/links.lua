-- Signed per-approver links to the approval page, the page's CSRF tokens, and where the page is
-- served. A link is BASE/gate?id=GATE&t=TOKEN with TOKEN = base64url(JSON claims) "."
-- base64url(HMAC-SHA256(key, "stagehost approval link v1\n" .. the claims' text)); the claims
-- name the run, the gate, the approver and the expiry (the gate's deadline). Whoever holds the
-- link may vote as that approver on that gate until then: it is sent only in the
-- approval.requested notification, never logged. The key is STATE_DIR/approval.key (64 hex
-- digits, mode 0600, created on first use; one readable by others is refused, as vault refuses
-- state.key). CSRF: a session is a random cookie; its token is an HMAC of it, so the server
-- keeps nothing per session.
--
-- Where the page is: $STAGEHOST_PUBLIC_URL (the address people reach, e.g. behind a proxy),
-- else the URL a running `stagehost serve` recorded in STATE_DIR/serve.json (with its pid and
-- start time: a dead server's file is ignored), else the waiting host's own server.
local crypto = require("stagehost.crypto")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local process = require("stagehost.util.process")
local url = require("stagehost.util.url")
local errors = require("stagehost.errors")

local links = {}

local KEY_FILE, SERVE_FILE = "approval.key", "serve.json"
local LINK_DOMAIN, CSRF_DOMAIN = "stagehost approval link v1\n", "stagehost approval csrf v1\n"
local keys = {} -- state dir -> raw key, read once per process

local function fail(fmt, ...) errors.exit(2, fmt, ...) end

-- links.key(dir) -> the raw 32-byte key of the state directory, created when missing.
function links.key(dir)
  if keys[dir] then return keys[dir] end
  local path = dir .. "/" .. KEY_FILE
  for _ = 1, 2 do
    local exists, kind, perm = fs.exists(path)
    if exists then
      if kind ~= "file" then fail("%s is a %s, not a key file: move it aside", path, kind) end
      if perm & 63 ~= 0 then
        fail("%s is accessible by others (mode %04o, 0600 expected): run `chmod 600 %s`; links signed with it may be forged", path, perm, path)
      end
      local hex = (fs.read(path) or ""):match("^(%x+)\n?$")
      if not hex or #hex ~= 64 then fail("%s does not hold a key (64 hex digits expected): move it aside to make a new one", path) end
      keys[dir] = crypto.hex_decode(hex)
      return keys[dir]
    end
    local ok, err = fs.mkdir(dir, { mode = 448 })
    if not ok then fail("cannot use state directory '%s': %s", dir, err) end
    local hex = crypto.hex_encode(crypto.random(32))
    local done, werr, code = fs.write(path, hex .. "\n", { mode = 384, exclusive = true })
    if done then
      keys[dir] = crypto.hex_decode(hex)
      return keys[dir]
    end
    if code ~= "EEXIST" then fail("cannot create %s: %s", path, werr) end
  end
  fail("cannot create %s: something unreadable is in the way", path)
end

-- links.sign(key, {run, gate, who, exp}) -> token
function links.sign(key, claims)
  local text = json.encode({ r = claims.run, g = claims.gate, w = claims.who, e = math.floor(claims.exp) })
  return crypto.base64url_encode(text) .. "." .. crypto.base64url_encode(crypto.hmac_sha256(key, LINK_DOMAIN .. text, "raw"))
end

-- links.verify(key, token, now) -> {run, gate, who, exp}, or nil and why ("malformed",
-- "forged", "expired at ...").
function links.verify(key, token, now)
  if type(token) ~= "string" or #token > 2048 then return nil, "malformed" end
  local body, mac = token:match("^([%w_%-]+)%.([%w_%-]+)$")
  local text = body and crypto.base64url_decode(body)
  local got = mac and crypto.base64url_decode(mac)
  if not text or not got then return nil, "malformed" end
  if not crypto.equal(got, crypto.hmac_sha256(key, LINK_DOMAIN .. text, "raw")) then return nil, "forged" end
  local ok, c = pcall(json.decode, text)
  if not ok or type(c) ~= "table" or type(c.g) ~= "string" or type(c.w) ~= "string" or math.type(c.e) ~= "integer" then
    return nil, "malformed"
  end
  if now >= c.e then return nil, "expired at " .. os.date("!%Y-%m-%dT%H:%M:%SZ", c.e) end
  return { run = c.r, gate = c.g, who = c.w, exp = c.e }
end

-- A fresh session id (the cookie), and the CSRF token that goes with it.
function links.session() return crypto.base64url_encode(crypto.random(18)) end

function links.csrf(key, session)
  return crypto.base64url_encode(crypto.hmac_sha256(key, CSRF_DOMAIN .. session, "raw"))
end

function links.csrf_ok(key, session, token)
  if type(session) ~= "string" or session == "" or type(token) ~= "string" then return false end
  return crypto.equal(token, links.csrf(key, session))
end

-- ---- where the page is ----

-- Record this process as the state directory's server: {url, public_url, pid, started}.
function links.register(dir, page_url, public_url)
  local pid = process.self()
  local text = json.encode({ url = page_url, public_url = public_url, pid = pid, started = process.start_time(pid) })
  local tmp = ("%s/%s.%d"):format(dir, SERVE_FILE, pid)
  assert(fs.write(tmp, text .. "\n", { mode = 384 }))
  assert(os.rename(tmp, dir .. "/" .. SERVE_FILE))
end

-- Remove the record, if it is this process's.
function links.unregister(dir)
  local r = links.server(dir)
  if r and r.pid == process.self() then os.remove(dir .. "/" .. SERVE_FILE) end
end

-- links.server(dir) -> the record of a live `stagehost serve`, or nil.
function links.server(dir)
  -- plain io: this runs in serve's cleanup too, where a cancelled task cannot wait on fs
  local f = io.open(dir .. "/" .. SERVE_FILE)
  local text = f and f:read("a")
  if f then f:close() end
  local ok, r = pcall(json.decode, text or "")
  if not ok or type(r) ~= "table" or math.type(r.pid) ~= "integer" or type(r.url) ~= "string" then return nil end
  if not process.alive(r.pid, r.started) then return nil end
  return r
end

-- The URL people open: $STAGEHOST_PUBLIC_URL, the serve's, else own (may be nil).
function links.base(dir, own)
  local env = os.getenv("STAGEHOST_PUBLIC_URL")
  if env and env ~= "" then return (env:gsub("/+$", "")) end
  local r = dir and links.server(dir)
  if r then return r.public_url or r.url end
  return own
end

-- The page of a gate, with a token when one is given.
function links.page(base, gate_id, token)
  return ("%s/gate?id=%s%s"):format(base, url.encode(gate_id), token and ("&t=" .. token) or "")
end

-- links.for_gate(dir, g, base) -> json array {{who, url}} for each listed approver (valid until
-- the gate's deadline), or an empty one when the gate takes anyone or there is no page.
function links.for_gate(dir, g, base, approvers)
  local out = json.array{}
  if not (dir and base and approvers) then return out end
  local key = links.key(dir)
  for _, who in ipairs(approvers) do
    local token = links.sign(key, { run = g.run_id, gate = g.id, who = who, exp = g.deadline })
    out[#out + 1] = { who = who, url = links.page(base, g.id, token) }
  end
  return out
end

-- The `approval` part of the approval.requested notification: {gate, run, page, links =
-- {{who, url}}}, or nil when there is no page to link to. The channels that can carry a
-- private link per person (e-mail, Teams, Slack) use it; the console never prints it.
function links.message_part(dir, g, own)
  local base = links.base(dir, own)
  if not base then return nil end
  local ok, list = pcall(links.for_gate, dir, g, base, require("stagehost.approval.gate").approvers(g.spec))
  if not ok then
    require("stagehost.log").warn("approval: no signed links: " .. errors.first_line(list))
    list = json.array{}
  end
  return { gate = g.id, run = g.run_id, page = links.page(base, g.id), links = list }
end

return links
