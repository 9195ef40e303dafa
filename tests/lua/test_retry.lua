-- stagehost.util.retry: the one retry policy of http, aws and github. Backoff bounds, Retry-After
-- parsing, caps, the classifier's word, cancellation passing through, and the warning line;
-- sleep and random are injected, so nothing here waits for a backoff or depends on luck.
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local http = require("stagehost.http")
local retry = require("stagehost.util.retry")

-- A deterministic stand-in for math.random(): a linear congruential sequence in [0, 1).
local function lcg(seed)
  local x = seed
  return function()
    x = (x * 1103515245 + 12345) % 2147483648
    return x / 2147483648
  end
end

-- A policy whose sleeps are recorded, not waited.
local function recorded(policy)
  local slept, warnings = {}, {}
  policy.sleep = function(s) slept[#slept + 1] = s end
  policy.on_retry = function(info) warnings[#warnings + 1] = info.message end
  return policy, slept, warnings
end

T.test("full jitter: every draw lies in [0, min(cap, base * 2^(n-1))) and spans it", function()
  local random = lcg(42)
  for attempt = 1, 12 do
    local ceiling = math.min(2, 0.1 * 2 ^ (attempt - 1))
    local lo, hi = math.huge, -math.huge
    for _ = 1, 2000 do
      local d = retry.backoff(attempt, 0.1, 2, random)
      T.ok(d >= 0 and d < ceiling, ("attempt %d: %g outside [0, %g)"):format(attempt, d, ceiling))
      lo, hi = math.min(lo, d), math.max(hi, d)
    end
    -- full jitter, not "equal jitter" (ceiling/2 + random * ceiling/2): the low half is used too
    T.ok(lo < 0.05 * ceiling, ("attempt %d: smallest draw %g of ceiling %g"):format(attempt, lo, ceiling))
    T.ok(hi > 0.95 * ceiling, ("attempt %d: largest draw %g of ceiling %g"):format(attempt, hi, ceiling))
  end
  T.eq(retry.backoff(1, 0.5, 30, function() return 0 end), 0)
  T.eq(retry.backoff(3, 0.5, 30, function() return 0.5 end), 1.0, "0.5 * 0.5 * 2^2")
end)

T.test("the cap bounds the backoff, and max_wait bounds a Retry-After", function()
  local almost_one = function() return 1 - 1e-9 end
  T.ok(retry.backoff(40, 1, 5, almost_one) < 5, "cap 5 after 40 attempts")
  T.ok(retry.backoff(40, 1, 5, almost_one) > 4.99, "and the cap is reached")
  local calls = 0
  local policy, slept = recorded{ attempts = 3, base = 0.1, cap = 1, max_wait = 3,
    classify = function() return true, "busy", 1000 end }
  local r, e = retry.run(policy, function() calls = calls + 1 return nil, "busy" end)
  T.eq(r, nil); T.eq(e, "busy"); T.eq(calls, 3)
  T.eq(#slept, 2); T.eq(slept[1], 3, "a 1000 s hint waits max_wait"); T.eq(slept[2], 3)
  -- a hint below max_wait is the wait, whatever the backoff would say; a negative one is 0
  policy, slept = recorded{ attempts = 3, base = 100, cap = 100, max_wait = 60,
    classify = function(o) return true, "busy", o.attempt == 1 and 2.5 or -4 end }
  retry.run(policy, function() return nil, "busy" end)
  T.eq(slept[1], 2.5); T.eq(slept[2], 0)
end)

T.test("Retry-After: seconds and HTTP dates; unreadable values are ignored", function()
  T.eq(retry.after("120"), 120)
  T.eq(retry.after(" 7 "), 7)
  T.eq(retry.after("0"), 0)
  T.eq(retry.after({ ["retry-after"] = "30" }), 30, "read from lower-case headers")
  T.eq(retry.after({ ["content-type"] = "text/plain" }), nil)
  local at = 1445412480 -- Wed, 21 Oct 2015 07:28:00 GMT
  T.eq(retry.after("Wed, 21 Oct 2015 07:28:00 GMT", at - 60), 60)
  T.eq(retry.after("Wed, 21 Oct 2015 07:28:00 GMT", at + 60), 0, "a date in the past: no wait")
  T.eq(retry.after({ ["retry-after"] = "Wed, 21 Oct 2015 07:28:30 GMT" }, at), 30)
  T.eq(http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", at - 5), 5, "http.retry_after is the same parser")
  for _, bad in ipairs{ "soon", "", "-5", "1.5", "12s", "0x10", "Wed, 32 Oct 2015 07:28:00 GMT",
    "Wed, 21 Foo 2015 07:28:00 GMT", "Wed, 21 Oct 2015 25:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 PST",
    "21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT trailing" } do
    T.eq(retry.after(bad, at), nil, ("%q"):format(bad))
  end
  T.eq(retry.after(nil), nil); T.eq(retry.after(120), nil)
  T.ok(retry.after("99999999999999999999999") <= 1e9, "an absurd value stays a printable integer")
end)

T.test("a classifier saying no stops at once: one attempt, no sleep, the result as it was", function()
  local calls, seen = 0, nil
  local policy, slept, warnings = recorded{ attempts = 5, base = 10,
    request = { method = "POST" },
    classify = function(o) seen = o return false, "not safe to repeat" end }
  local err = setmetatable({}, { __tostring = function() return "502 after the POST was sent" end })
  local r, e, kind = retry.run(policy, function(attempt) calls = calls + 1 return nil, err, "transport" end)
  T.eq(calls, 1); T.eq(#slept, 0); T.eq(#warnings, 0)
  T.eq(r, nil); T.ok(rawequal(e, err), "the same error object"); T.eq(kind, "transport")
  T.eq(seen.attempt, 1); T.eq(seen.attempts, 5); T.eq(seen.request.method, "POST")
  T.eq(seen.kind, "transport"); T.ok(rawequal(seen.error, err)); T.eq(seen.raised, nil)
  -- a success is not retried either, and every value comes back
  calls = 0
  local a, b, c = retry.run({ attempts = 3 }, function() calls = calls + 1 return "ok", 2, 3 end)
  T.eq(calls, 1); T.eq(a, "ok"); T.eq(b, 2); T.eq(c, 3)
end)

T.test("attempts spent: the last error is returned, or raised, unchanged", function()
  local errors = {}
  local policy, slept = recorded{ attempts = 4, base = 0.01 }
  local r, e, kind = retry.run(policy, function(attempt)
    errors[attempt] = { n = attempt }
    return nil, errors[attempt], "refused"
  end)
  T.eq(#errors, 4); T.eq(#slept, 3)
  T.eq(r, nil); T.ok(rawequal(e, errors[4]), "the fourth error, not a wrapper"); T.eq(kind, "refused")
  -- raised errors: retried by the default classifier, the last one raised again as it was
  local raised = {}
  policy, slept = recorded{ attempts = 3, base = 0.01 }
  local ok, err = pcall(retry.run, policy, function(attempt)
    raised[attempt] = setmetatable({ n = attempt }, { __tostring = function(t) return "failure " .. t.n end })
    error(raised[attempt])
  end)
  T.eq(ok, false); T.ok(rawequal(err, raised[3]), "the third raised error itself"); T.eq(#slept, 2)
  ok, err = pcall(retry.run, { attempts = 2, sleep = function() end, on_retry = function() end },
    function() error("plain message", 0) end)
  T.eq(ok, false); T.eq(err, "plain message")
  -- success on a later attempt: the backoff after attempt n is drawn below base * 2^(n-1)
  local n = 0
  policy, slept = recorded{ attempts = 5, base = 1, cap = 100, random = function() return 0.5 end }
  T.eq(retry.run(policy, function() n = n + 1 if n < 4 then return nil, "again" end return "done" end), "done")
  T.eq(#slept, 3); T.eq(slept[1], 0.5); T.eq(slept[2], 1); T.eq(slept[3], 2)
end)

T.test("a cancel during the backoff sleep unwinds at once, well under the backoff", function()
  local calls, classified = 0, 0
  local t = task.spawn(function()
    return retry.run({ attempts = 3, base = 30, cap = 30, random = function() return 1 - 1e-9 end,
      on_retry = function() end,
      classify = function() classified = classified + 1 return true, "always" end },
      function() calls = calls + 1 return nil, "down" end)
  end)
  task.sleep(0.1)
  local t0 = task.now()
  t:cancel("operator gave up")
  local ok, err = t:join()
  local took = task.now() - t0
  T.eq(ok, false)
  T.eq(type(err) == "table" and err.kind, "cancelled", "the cancellation itself: " .. tostring(err))
  T.eq(tostring(err), "operator gave up")
  T.ok(took < 0.5, ("ended %.3fs after the cancel, backoff was ~30s"):format(took))
  T.eq(calls, 1, "no attempt after the cancel"); T.eq(classified, 1)
end)

T.test("a cancel or timeout during an attempt is never classified nor retried", function()
  local calls, classified = 0, 0
  local policy = { attempts = 5, base = 0, on_retry = function() end,
    classify = function() classified = classified + 1 return true, "everything is retryable" end }
  local t0 = task.now()
  local in_time = task.timeout(0.1, retry.run, policy, function()
    calls = calls + 1
    task.sleep(5)
  end)
  T.eq(in_time, false, "task.timeout saw its own timeout")
  T.ok(task.now() - t0 < 1, "at once")
  T.eq(calls, 1); T.eq(classified, 0)
  local t = task.spawn(retry.run, policy, function() calls = calls + 1 task.sleep(5) end)
  task.sleep(0.05)
  t:cancel("stop")
  local ok, err = t:join()
  T.eq(ok, false); T.eq(err.kind, "cancelled"); T.eq(calls, 2); T.eq(classified, 0)
  T.ok(retry.is_cancellation(err)); T.ok(not retry.is_cancellation("cancelled"))
  T.ok(not retry.is_cancellation({ kind = "refused" }))
end)

T.test("each retry warns once, naming the cause and the wait, never URL credentials", function()
  local policy, slept, warnings = recorded{ attempts = 3, base = 2, random = function() return 0.65 end,
    name = "http.request",
    classify = function(o)
      return true, ("HTTP 503 from https://deploy:hunter2@example.test/api?x=1 (attempt %d)"):format(o.attempt)
    end }
  retry.run(policy, function() return nil, "503" end)
  T.eq(#warnings, 2)
  T.eq(warnings[1], "http.request: retrying in 1.3s (attempt 2 of 3): HTTP 503 from https://***@example.test/api?x=1 (attempt 1)")
  T.eq(warnings[2], "http.request: retrying in 2.6s (attempt 3 of 3): HTTP 503 from https://***@example.test/api?x=1 (attempt 2)")
  T.eq(slept[1], 1.3); T.eq(slept[2], 2.6)
  T.eq(retry.redact("GET http://tok@h:1/p and ftp://a:b@c/ but not mail a@b"), "GET http://***@h:1/p and ftp://***@c/ but not mail a@b")
  -- the default on_retry is a warning on stderr
  local script = [[
    local retry = require("stagehost.util.retry")
    local n = 0
    retry.run({ attempts = 2, base = 0, name = "demo", sleep = function() end },
      function() n = n + 1 if n == 1 then return nil, "down at http://u:pw@h.test/x" end return true end)
  ]]
  local r = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", script }
  T.eq(r.code, 0, r.stderr)
  T.match(r.stderr, "WARN +demo: retrying in 0%.0s %(attempt 2 of 2%): down at http://%*%*%*@h%.test/x")
  T.no_match(r.stderr, "pw@")
end)

T.test("http.request runs the policy: its classifier, sleep, random and warning", function()
  local calls = 0
  local srv <close> = http.serve{ handler = function()
    calls = calls + 1
    if calls < 3 then return { status = 503, headers = { ["Retry-After"] = calls == 1 and "7" or nil }, body = "busy" } end
    return { status = 200, body = "fine" }
  end }
  local url = ("http://ci:s3cret@127.0.0.1:%d/flaky"):format(srv.port)
  local slept, warnings = {}, {}
  local r = http.request{ url = url, retry = { attempts = 3, base = 4, random = function() return 0.25 end,
    sleep = function(s) slept[#slept + 1] = s end, on_retry = function(i) warnings[#warnings + 1] = i.message end } }
  T.eq(r.status, 200); T.eq(calls, 3)
  T.eq(slept[1], 7, "Retry-After"); T.eq(slept[2], 2, "0.25 * 4 * 2^1")
  T.eq(warnings[1], ("http.request: retrying in 7.0s (attempt 2 of 3): HTTP 503 from http://***@127.0.0.1:%d/flaky"):format(srv.port))
  -- a caller's classifier replaces the status list; a false one stops at the first answer
  calls = 0
  r = http.request{ url = url, retry = { attempts = 3, classify = function() return false end } }
  T.eq(r.status, 503); T.eq(calls, 1)
  -- a bad policy is misuse, reported before anything is sent
  calls = 0
  T.raises(function() http.request{ url = url, retry = { attempts = 0 } } end,
    "bad argument #1 to 'http.request' (retry.attempts must be a whole number of at least 1, got 0)")
  T.raises(function() http.request{ url = url, retry = { base = -1 } } end, "retry.base must be a number of seconds >= 0")
  T.raises(function() http.request{ url = url, retry = { classify = "yes" } } end, "retry.classify must be a function")
  T.eq(calls, 0)
  T.raises(function() retry.run({ attempts = 1.5 }, function() end) end, "bad argument #1 to 'retry.run' (attempts must be")
  T.raises(function() retry.run({}, "fn") end, "bad argument #2 to 'retry.run' (function expected, got string)")
end)

T.run()
