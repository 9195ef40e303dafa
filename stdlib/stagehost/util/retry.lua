-- One retry policy for http, aws and github: a number of attempts, exponential backoff with
-- full jitter, Retry-After, and a classifier per client that decides what is safe to repeat.
-- Every retry logs one warning naming the cause and the wait; a cancellation or a task.timeout
-- passes straight through, never retried.
--
--   retry.run(policy, fn) -> whatever fn's last attempt returned
--   retry.backoff(attempt, base, cap [, random]) -> seconds to wait after that attempt failed
--   retry.after(headers | value [, now]) -> seconds a Retry-After asks for, or nil
--   retry.is_cancellation(err) -> whether err is a task cancellation or timeout
--   retry.redact(text) -> text with the credentials of any URL in it replaced by ***
--   retry.TRANSIENT_KINDS: the transport failures (http's kinds) that may heal by waiting
--
-- policy = {
--   attempts = 3,        -- at most this many calls of fn, the first included
--   base = 0.5,          -- backoff ceiling after the first attempt, doubled after each
--   cap = 30,            -- largest backoff ceiling
--   max_wait = 120,      -- largest wait a classifier's hint (Retry-After) may ask for
--   classify = fn(outcome) -> again, reason, wait_hint   -- default: retry any failure
--   name = "http.request", -- the warning's prefix
--   request = any,       -- handed to classify as outcome.request (method, idempotency, ...)
--   sleep = task.sleep, random = math.random,  -- injectable: tests wait for nothing
--   on_retry = fn(info), -- default: log.warn(info.message)
-- }
--
-- fn(attempt) makes one attempt. It returns a result (for an HTTP client, a response of any
-- status), or nil, error, kind (the house convention for a failed operation); it may also raise.
-- classify gets the outcome {attempt, attempts, result, response (result when it has a
-- status), error, kind, raised, request} and says whether to try again, why (for the warning),
-- and optionally how long to wait (capped at max_wait; without it the backoff applies).
-- A cancellation raised by fn or by the sleep propagates at once, unclassified. When the
-- classifier says no or the attempts are spent, run returns what fn returned, or raises again
-- what it raised, unchanged.
local task = require("stagehost.task")
local log = require("stagehost.log")
local time = require("stagehost.util.time")
local errors = require("stagehost.errors")

local retry = {}

retry.DEFAULTS = { attempts = 3, base = 0.5, cap = 30, max_wait = 120 }

-- Transport failures (the kinds http's core reports) worth another attempt: a refused, cut or
-- timed-out connection or a name that did not resolve may heal by waiting; a TLS or URL
-- problem will not.
retry.TRANSIENT_KINDS = { timeout = true, refused = true, resolve = true, transport = true }

-- Full jitter (the AWS architecture blog's "Exponential Backoff And Jitter"): uniform in
-- [0, min(cap, base * 2^(attempt-1))), attempt being the one that just failed (1 first).
function retry.backoff(attempt, base, cap, random)
  local ceiling = math.min(cap, base * 2 ^ (attempt - 1))
  return (random or math.random)() * ceiling
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
  Oct = 10, Nov = 11, Dec = 12 }
-- a Retry-After beyond this is somebody's bug; kept an integer so messages can print it
local LONGEST = 1000000000

-- Retry-After is delay-seconds or an HTTP date (RFC 9110 section 10.2.3): seconds from now
-- (now: epoch seconds, os.time() by default), never negative; nil when absent or unreadable.
-- Given a table of lower-case headers it reads their retry-after.
function retry.after(value, now)
  if type(value) == "table" then value = value["retry-after"] end
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then return math.min(math.tointeger(tonumber(secs)) or LONGEST, LONGEST) end
  local d, mon, y, hh, mm, ss = value:match("^%s*%a+, (%d%d?) (%a+) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT%s*$")
  if not d or not MONTHS[mon] then return nil end
  d, y, hh, mm, ss = tonumber(d), tonumber(y), tonumber(hh), tonumber(mm), tonumber(ss)
  if d < 1 or d > 31 or hh > 23 or mm > 59 or ss > 60 then return nil end
  local at = time.epoch(y, MONTHS[mon], d, hh, mm, ss)
  return math.min(math.max(0, at - (now or os.time())), LONGEST)
end

-- The scheduler's cancellation and timeout errors, and the pipeline's cancellations.
retry.is_cancellation = errors.is_cancel

-- scheme://user:password@host -> scheme://***@host, wherever a URL appears in the text
function retry.redact(text)
  return (tostring(text):gsub("(%a[%w+.%-]*://)[^/?#@%s]+@", "%1***@"))
end

-- The default classifier: any failure (a raise, or a nil or false result) is tried again.
local function classify_any(o)
  if o.raised or not o.result then
    return true, o.error ~= nil and tostring(o.error) or "no result"
  end
  return false
end

-- field names in messages are prefixed with `what` ("retry." inside http.request's options)
local function check(policy, who, level, what)
  what = what or ""
  local function bad(fmt, ...)
    errors.argument_at(level + 1, 1, who, fmt, ...)
  end
  if type(policy) ~= "table" then bad("%stable expected, got %s", what, type(policy)) end
  local a = policy.attempts
  if a ~= nil and not (type(a) == "number" and a >= 1 and a < math.huge and a == math.floor(a)) then
    bad("%sattempts must be a whole number of at least 1, got %s", what, tostring(a))
  end
  for _, name in ipairs{ "base", "cap", "max_wait" } do
    local v = policy[name]
    if v ~= nil and (type(v) ~= "number" or v < 0 or v ~= v) then
      bad("%s%s must be a number of seconds >= 0, got %s", what, name, type(v) == "number" and tostring(v) or type(v))
    end
  end
  for _, name in ipairs{ "classify", "sleep", "random", "on_retry" } do
    if policy[name] ~= nil and type(policy[name]) ~= "function" then
      bad("%s%s must be a function, got %s", what, name, type(policy[name]))
    end
  end
  if policy.name ~= nil and type(policy.name) ~= "string" then
    bad("%sname must be a string, got %s", what, type(policy.name))
  end
end

-- retry.check(policy, who [, level [, what]]): raise "bad argument #1 to 'who' (what..."
-- for a malformed policy, as a caller taking one in its options wants before anything is sent.
function retry.check(policy, who, level, what)
  check(policy, who or "retry.run", (level or 1) + 1, what)
  return policy
end

-- The warning's line: "NAME: retrying in 1.3s (attempt 2 of 4): REASON", credentials redacted.
function retry.message(info)
  local line = ("retrying in %.1fs (attempt %d of %d): %s"):format(info.wait, info.attempt, info.attempts,
    tostring(info.reason or "failed"))
  if info.name then line = info.name .. ": " .. line end
  return retry.redact(line)
end

local function default_on_retry(info) log.warn(info.message) end

-- Runs fn until it succeeds, the classifier says no, or the attempts are spent. The sleep is
-- outside any pcall, and a raise from fn is classified only when it is not a cancellation, so
-- a cancel or task.timeout during a wait or an attempt always unwinds the task.
function retry.run(policy, fn)
  check(policy, "retry.run", 2)
  if type(fn) ~= "function" then
    errors.argument(2, "retry.run", "function expected, got %s", type(fn))
  end
  local attempts = math.tointeger(policy.attempts or retry.DEFAULTS.attempts)
  local base = policy.base or retry.DEFAULTS.base
  local cap = policy.cap or retry.DEFAULTS.cap
  local max_wait = policy.max_wait or retry.DEFAULTS.max_wait
  local classify = policy.classify or classify_any
  local sleep = policy.sleep or task.sleep
  local random = policy.random or math.random
  local on_retry = policy.on_retry or default_on_retry
  for attempt = 1, attempts do
    local values = table.pack(pcall(fn, attempt))
    local outcome = { attempt = attempt, attempts = attempts, request = policy.request }
    if values[1] then
      outcome.result, outcome.error, outcome.kind = values[2], values[3], values[4]
      if type(values[2]) == "table" and math.type(rawget(values[2], "status")) == "integer" then
        outcome.response = values[2]
      end
    else
      if retry.is_cancellation(values[2]) then error(values[2], 0) end
      outcome.raised, outcome.error = true, values[2]
    end
    local again, reason, hint = classify(outcome)
    if not again or attempt == attempts then
      if outcome.raised then error(values[2], 0) end
      return table.unpack(values, 2, values.n)
    end
    local wait
    if type(hint) == "number" and hint == hint then
      wait = math.min(math.max(hint, 0), max_wait)
    else
      wait = retry.backoff(attempt, base, cap, random)
    end
    local info = { name = policy.name, attempt = attempt + 1, attempts = attempts, wait = wait,
      reason = reason, outcome = outcome }
    info.message = retry.message(info)
    on_retry(info)
    sleep(wait)
  end
end

return retry
