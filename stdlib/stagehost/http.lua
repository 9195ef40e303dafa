-- HTTP: http.request (libcurl's multi interface on the event loop) and http.serve.
-- Any HTTP status is a result; a transport failure raises an error naming the URL.
local core = require "stagehost.core.http_client"
local json = require "stagehost.json"
local task = require "stagehost.task"
local log = require "stagehost.log"
local time = require "stagehost.util.time"

local http = {}

local RETRY_STATUSES = { [408] = true, [425] = true, [429] = true, [500] = true, [502] = true,
  [503] = true, [504] = true }
-- transport failures worth another attempt; a TLS or a URL problem will not heal by waiting
local RETRY_KINDS = { timeout = true, refused = true, resolve = true, transport = true }

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
  Oct = 10, Nov = 11, Dec = 12 }

-- Retry-After is seconds or an HTTP date (RFC 9110 section 10.2.3); nil when unreadable.
function http.retry_after(value, now)
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then return tonumber(secs) end
  local d, mon, y, hh, mm, ss = value:match("%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT")
  if not d or not MONTHS[mon] then return nil end
  local at = time.epoch(tonumber(y), MONTHS[mon], tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
  return math.max(0, at - (now or os.time()))
end

local function retry_policy(retry)
  if retry == nil or retry == false then return { attempts = 1, statuses = {} } end
  if type(retry) == "number" then retry = { attempts = retry } end
  if type(retry) ~= "table" then
    error(("bad argument #1 to 'http.request' (retry must be a number or a table, got %s)"):format(type(retry)), 3)
  end
  return {
    attempts = retry.attempts or 3,
    base = retry.base or 0.5,     -- first backoff ceiling, seconds
    max = retry.max or 30,        -- largest backoff
    max_wait = retry.max_wait or 120, -- largest Retry-After honoured
    statuses = retry.statuses or RETRY_STATUSES,
  }
end

-- http.request{method, url, headers, body | json | body_file, timeout, connect_timeout,
--              retry = n | {attempts, base, max, max_wait, statuses}, output = path, follow,
--              max_redirects, insecure} -> {status, headers, body, url, duration}
function http.request(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'http.request' (table expected, got %s)"):format(type(opts)), 2)
  end
  local req = {}
  for k, v in pairs(opts) do req[k] = v end
  req.retry = nil
  if opts.json ~= nil then
    if opts.body ~= nil then error("http.request: give either body or json, not both", 2) end
    req.json = nil
    req.body = json.encode(opts.json)
    local headers = {}
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    local has_type = false
    for k in pairs(headers) do if k:lower() == "content-type" then has_type = true end end
    if not has_type then headers["Content-Type"] = "application/json" end
    req.headers = headers
  end
  local policy = retry_policy(opts.retry)
  local res, err, kind
  for attempt = 1, policy.attempts do
    local ok
    ok, res, err, kind = pcall(core.request, req)
    if not ok then error(res, 2) end -- misuse: bad options, malformed URL
    local retryable = (res and policy.statuses[res.status]) or (not res and RETRY_KINDS[kind])
    if not retryable or attempt == policy.attempts then break end
    local wait = res and http.retry_after(res.headers["retry-after"])
    if wait then
      wait = math.min(wait, policy.max_wait)
    else -- exponential backoff with full jitter
      wait = math.random() * math.min(policy.max, policy.base * 2 ^ (attempt - 1))
    end
    log.warn(("http.request: %s %s: %s; attempt %d of %d in %.1fs"):format(req.method or "GET", req.url,
      res and ("HTTP " .. res.status) or err, attempt + 1, policy.attempts, wait))
    task.sleep(wait)
  end
  if not res then error(err, 2) end
  return res
end

-- http.serve{host = "127.0.0.1", port = 0, handler = fn(req) -> response} -> server
function http.serve(opts)
  return require("stagehost.core.http_server").serve(opts)
end

return http
