-- HTTP: http.request (libcurl's multi interface on the event loop) and http.serve.
-- Any HTTP status is a result; a transport failure raises an error object (stagehost.errors)
--   {kind = "transport", code, message, url, method, reason}
-- code: ECONNREFUSED (refused), ETIMEDOUT (timeout or connect_timeout), ENOTFOUND (the name or
-- proxy did not resolve), TLS (handshake or certificate), EIO (reading body_file or writing
-- output), EREDIRECTS (more than max_redirects), EBODYLIMIT (the decoded body grew past max_body,
-- or max_output with output; field limit), ETRANSPORT (anything else: a cut connection,
-- an empty answer, ...). message is what a raised string said before, "FILE:LINE: http.request:
-- GET URL failed: REASON" (the caller's line, as error(msg, 2) gives it); url is the URL with any
-- credentials shown as ***; reason is libcurl's words.
local core = require("stagehost.core.http_client")
local json = require("stagehost.json")
local retry = require("stagehost.util.retry")
local errors = require("stagehost.errors")

local http = {}

local RETRY_STATUSES = { [408] = true, [425] = true, [429] = true, [500] = true, [502] = true,
  [503] = true, [504] = true }

-- Retry-After is seconds or an HTTP date (RFC 9110 section 10.2.3); nil when unreadable.
function http.retry_after(value, now)
  return retry.after(value, now)
end

-- http.request's own rule: the statuses asked for (any method: the caller opted in) and the
-- transport failures that may heal by waiting; the answer's Retry-After is the wait.
local function status_classifier(statuses)
  return function(o)
    if o.response then
      if not statuses[o.response.status] then return false end
      return true, ("HTTP %d from %s"):format(o.response.status, o.request.url), retry.after(o.response.headers)
    end
    if not o.raised and retry.TRANSIENT_KINDS[o.kind] then
      local e = o.error
      return true, ("%s %s failed: %s"):format(e.method, e.url, e.reason)
    end
    return false
  end
end

-- retry = n | {attempts, base, cap (or max), max_wait, statuses, classify, name, sleep,
-- random, on_retry}: a stagehost.util.retry policy; nil or false is one attempt.
local function retry_policy(opt, req)
  if opt == nil or opt == false then return { attempts = 1, direct = true } end
  if type(opt) == "number" then opt = { attempts = opt } end
  if type(opt) ~= "table" then
    errors.argument_at(3, 1, "http.request", "retry must be a number or a table, got %s", type(opt))
  end
  retry.check(opt, "http.request", 3, "retry.")
  for _, name in ipairs{ "max", "statuses" } do
    local want = name == "max" and "number" or "table"
    if opt[name] ~= nil and type(opt[name]) ~= want then
      errors.argument_at(3, 1, "http.request", "retry.%s must be a %s, got %s", name, want, type(opt[name]))
    end
  end
  return {
    attempts = opt.attempts or 3,
    base = opt.base or 0.5,           -- first backoff ceiling, seconds
    cap = opt.cap or opt.max or 30,   -- largest backoff
    max_wait = opt.max_wait or 120,   -- largest Retry-After honoured
    classify = opt.classify or status_classifier(opt.statuses or RETRY_STATUSES),
    name = opt.name or "http.request",
    request = { method = req.method or "GET", url = req.url },
    sleep = opt.sleep, random = opt.random, on_retry = opt.on_retry,
    -- one attempt that no classifier has to see (one may raise, as github's does past max_wait)
    direct = (opt.attempts or 3) == 1 and opt.classify == nil,
  }
end

-- The position error(msg, level) puts before a message, level seen from the caller of where:
-- "stages/deploy.lua:12: ", or "" when that caller is not Lua (pcall(http.request, ...)).
local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline > 0 then return ("%s:%d: "):format(info.short_src, info.currentline) end
  return ""
end

-- http.request{method, url, headers, body | json | body_file, timeout, connect_timeout,
--              retry = n | {attempts, base, cap, max_wait, statuses, classify, ...}, output = path, follow,
--              max_redirects, insecure, max_body = 64 MiB, max_output = none}
--   -> {status, headers, body, url, duration};
-- a transport failure raises the error object above (the last one, after retries).
function http.request(opts)
  errors.check_table(opts, 1, "http.request")
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
  local policy = retry_policy(opts.retry, req)
  local ok, res, err
  if policy.direct then
    ok, res, err = pcall(core.request, req)
  else
    ok, res, err = pcall(retry.run, policy, function() return core.request(req) end)
  end
  if not ok then error(res, 2) end -- misuse (bad options, malformed URL); a cancellation as it is
  if not res then
    if errors.is(err, "transport") then err.message = where(2) .. err.message end
    error(err, 2)
  end
  return res
end

-- http.serve{host = "127.0.0.1", port = 0, handler = fn(req) -> response} -> server
function http.serve(opts)
  return require("stagehost.core.http_server").serve(opts)
end

return http
