---@meta stagehost.util.retry
-- LuaLS annotations for `require "stagehost.util.retry"` (stdlib/stagehost/util/retry.lua),
-- the one retry loop of http, aws and github. Definitions only: never loaded by stagehost.

---What one attempt gave, as `classify` sees it.
---@class stagehost.util.retry.Outcome
---@field attempt integer
---@field attempts integer
---@field result any what fn returned first
---@field response? table the result when it has an integer `status`
---@field error any fn's second return, or what it raised
---@field kind? string fn's third return (http's failure kinds: "timeout", "refused", ...)
---@field raised? boolean fn raised
---@field request any the policy's `request`

---What `on_retry` gets.
---@class stagehost.util.retry.Info
---@field name? string
---@field attempt integer the attempt about to be made
---@field attempts integer
---@field wait number seconds
---@field reason any
---@field outcome stagehost.util.retry.Outcome
---@field message string the warning's line

---@class stagehost.util.retry.Policy
---@field attempts? integer calls of fn at most, the first included (default 3)
---@field base? number backoff ceiling after the first attempt, seconds, doubled after each (0.5)
---@field cap? number largest backoff ceiling (30)
---@field max_wait? number largest wait a classifier's hint (Retry-After) may ask for (120)
---@field classify? fun(outcome: stagehost.util.retry.Outcome): boolean, any?, number? again, reason, wait; default: retry any failure
---@field name? string the warning's prefix
---@field request? any handed to classify as outcome.request
---@field sleep? fun(seconds: number) default task.sleep
---@field random? fun(): number default math.random
---@field on_retry? fun(info: stagehost.util.retry.Info) default: log.warn(info.message)

---@class stagehost.util.retry
---@field DEFAULTS {attempts: integer, base: number, cap: number, max_wait: number}
---@field TRANSIENT_KINDS table<string, boolean> transport failures that may heal by waiting
local retry = {}

---Calls `fn(attempt)` until it succeeds, `classify` says no, or the attempts are spent; returns
---(or raises again) what the last attempt returned (or raised). A cancellation passes through.
---@param policy stagehost.util.retry.Policy
---@param fn fun(attempt: integer): ...
---@return any ...
function retry.run(policy, fn) end

---Full-jitter backoff: uniform in [0, min(cap, base * 2^(attempt-1))).
---@param attempt integer the attempt that just failed (1 first)
---@param base number
---@param cap number
---@param random? fun(): number
---@return number seconds
function retry.backoff(attempt, base, cap, random) end

---Seconds a Retry-After asks for (seconds or an HTTP date); nil when absent or unreadable.
---@param value string|table<string, string>|nil a header value, or lower-case headers
---@param now? integer epoch seconds
---@return integer|number|nil
function retry.after(value, now) end

---Is err a task cancellation or timeout?
---@param err any
---@return boolean
function retry.is_cancellation(err) end

---The credentials of any URL in text replaced by ***.
---@param text any
---@return string
function retry.redact(text) end

---Raises "bad argument #1 to 'who' (...)" for a malformed policy.
---@param policy any
---@param who? string
---@param level? integer
---@param what? string prefix of field names in messages
---@return stagehost.util.retry.Policy
function retry.check(policy, who, level, what) end

---The warning's line: "NAME: retrying in 1.3s (attempt 2 of 4): REASON".
---@param info {name?: string, attempt: integer, attempts: integer, wait: number, reason?: any}
---@return string
function retry.message(info) end

return retry
