-- http.request against stagehost's own server playing a misbehaving peer: retries, Retry-After,
-- bodies cut off, slow answers, cancellation, and load from many tasks.
local T = require("harness")
local task = require("stagehost.task")
local http = require("stagehost.http")
local crypto = require("stagehost.crypto")
local errors = require("stagehost.errors")

-- A server whose handler is swapped per test.
local handler = function() return { status = 404 } end
-- a short idle timeout: kept-alive connections close between tests, so the harness's check for
-- leftover handles sees only what a test leaked
local server = http.serve{ idle_timeout = 0.3, handler = function(req) return handler(req) end }
local function url(path) return ("http://127.0.0.1:%d%s"):format(server.port, path or "/") end

T.test("a 503 and then a 200: retried, and the 200 is the result", function()
  local calls = 0
  handler = function()
    calls = calls + 1
    if calls == 1 then return { status = 503, body = "busy" } end
    return { status = 200, body = "fine" }
  end
  local r = http.request{ url = url("/flaky"), retry = { attempts = 3, base = 0.01 } }
  T.eq(r.status, 200); T.eq(r.body, "fine"); T.eq(calls, 2)
end)

T.test("retries give up after the attempts; the last answer is the result", function()
  local calls = 0
  handler = function() calls = calls + 1 return { status = 500, body = "still broken" } end
  local r = http.request{ url = url("/down"), retry = { attempts = 3, base = 0.01 } }
  T.eq(r.status, 500); T.eq(calls, 3)
  calls = 0
  T.eq(http.request{ url = url("/down") }.status, 500)
  T.eq(calls, 1, "no retry unless asked")
  calls = 0
  handler = function() calls = calls + 1 return { status = 404 } end
  T.eq(http.request{ url = url("/gone"), retry = 3 }.status, 404)
  T.eq(calls, 1, "a 404 is not retried")
end)

T.test("Retry-After is honoured", function()
  local calls, first = 0, nil
  handler = function()
    calls = calls + 1
    if calls == 1 then
      first = task.now()
      return { status = 429, headers = { ["Retry-After"] = "1" }, body = "slow down" }
    end
    return { status = 200, body = ("waited %.2f"):format(task.now() - first) }
  end
  local r = http.request{ url = url("/limited"), retry = { attempts = 2, base = 0.01 } }
  T.eq(r.status, 200)
  local waited = tonumber(r.body:match("waited (%S+)"))
  T.ok(waited >= 0.95 and waited < 3, "waited " .. waited .. "s")
end)

T.test("a body cut off mid-way is a transport error, not a short body", function()
  handler = function(req)
    local s = req:stream{ status = 200, headers = { ["Content-Type"] = "text/plain" } }
    s:write("first part, ")
    error("the handler dies mid-response")
  end
  local err = T.raises(function() http.request{ url = url("/cut") } end, "GET " .. url("/cut") .. " failed")
  T.ok(errors.is(err, "transport")); T.eq(err.code, "ETRANSPORT"); T.eq(err.url, url("/cut"))
end)

T.test("slow responses: a total timeout stops waiting", function()
  handler = function() task.sleep(2) return "late" end
  local t0 = task.now()
  local err = T.raises(function() http.request{ url = url("/slow"), timeout = 0.2 } end, "timed out")
  T.eq(err.code, "ETIMEDOUT")
  T.ok(task.now() - t0 < 1.5)
end)

T.test("cancel mid-transfer: the client stops at once, the server's writes fail cleanly", function()
  local writes, write_error = 0, nil
  handler = function(req)
    local s = req:stream{ status = 200 }
    for _ = 1, 200 do
      local ok, written, err = pcall(s.write, s, ("x"):rep(16384))
      if not ok or not written then write_error = ok and err or written return end
      writes = writes + 1
      task.sleep(0.01)
    end
    s:close()
  end
  local t = task.spawn(function() return http.request{ url = url("/stream") } end)
  task.sleep(0.1)
  local t0 = task.now()
  t:cancel("user gave up")
  T.eq((t:join()), false)
  -- the stream had ~2 s to go: a cancel that waited for it would take that long
  T.ok(task.now() - t0 < 1, "the request ended at once")
  local deadline = task.now() + 3
  while not write_error and task.now() < deadline do task.sleep(0.02) end
  T.ok(write_error, "the server saw the connection go (after " .. writes .. " writes)")
end)

T.test("request and response bodies survive byte for byte, both ways", function()
  handler = function(req)
    return { status = 200, headers = { ["X-Sha"] = crypto.sha256(req.body) }, body = req.body }
  end
  local data = crypto.random(1024 * 1024)
  local r = http.request{ method = "POST", url = url("/echo"), body = data }
  T.eq(r.status, 200); T.eq(#r.body, #data); T.ok(r.body == data)
  T.eq(r.headers["x-sha"], crypto.sha256(data))
  local j = http.request{ method = "PUT", url = url("/echo"), json = { name = "stack", n = 3 } }
  T.eq(j.body, '{"n":3,"name":"stack"}')
end)

T.test("1,000 concurrent requests from 100 tasks against http.serve", function()
  local seen = 0
  handler = function(req) seen = seen + 1 return { status = 200, body = req.path } end
  local fns = {}
  for i = 1, 100 do
    fns[i] = function()
      local ok = 0
      for j = 1, 10 do
        local path = ("/t%d/r%d"):format(i, j)
        local r = http.request{ url = url(path) }
        if r.status == 200 and r.body == path then ok = ok + 1 end
      end
      return ok
    end
  end
  local total = 0
  for _, n in ipairs(task.all(fns)) do total = total + n end
  T.eq(total, 1000); T.eq(seen, 1000)
end)

T.run(function() server:close() end)
