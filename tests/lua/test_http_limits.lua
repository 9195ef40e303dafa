-- http.request against a rude server (tests/python/rude_http.py): bodies that never end or
-- decompress to hundreds of megabytes meet max_body / max_output, and a server that closes
-- every connection right after its response (while claiming keep-alive) costs no request.
local T = require("harness")
local http = require("stagehost.http")
local errors = require("stagehost.errors")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")

local BOMB_MIB = 500 -- decoded; about 500 KB on the wire
local SOURCE = assert(os.getenv("STAGEHOST_SOURCE_DIR"), "run through ctest (STAGEHOST_SOURCE_DIR)")
local server = proc.spawn{ "python3", SOURCE .. "/tests/python/rude_http.py", tostring(BOMB_MIB),
  lines = true, stdin = true, name = "rude_http" }
local _, first = server:read_line()
local port = assert(tonumber(first), "rude_http.py did not say its port: " .. tostring(first))
local function url(path) return ("http://127.0.0.1:%d%s"):format(port, path) end

-- The error http.request raised for opts.
local function refusal(opts)
  local ok, err = pcall(http.request, opts)
  T.ok(not ok, "the request failed")
  return err
end

T.test("an endless body stops at max_body with an error naming it", function()
  local err = refusal{ url = url("/endless"), max_body = 1024 * 1024 }
  T.ok(errors.is(err, "transport"), "a transport error object")
  T.eq(err.code, "EBODYLIMIT")
  T.eq(err.limit, 1024 * 1024)
  T.has(err.message, "larger than max_body (1048576 bytes)")
  T.has(err.message, "/endless failed")
end)

T.test("max_body: a body of exactly the limit is a result, one byte more is refused", function()
  T.eq(http.request{ url = url("/size/1000"), max_body = 1000 }.body, ("x"):rep(1000))
  T.eq(refusal{ url = url("/size/1001"), max_body = 1000 }.code, "EBODYLIMIT")
  T.eq(http.request{ url = url("/size/0"), max_body = 0 }.body, "")
end)

T.test("a limit error is not retried: the same answer would be refused again", function()
  local tries = 0
  local err = refusal{ url = url("/size/100"), max_body = 10,
    retry = { attempts = 3, base = 0, on_retry = function() tries = tries + 1 end } }
  T.eq(err.code, "EBODYLIMIT")
  T.eq(tries, 0)
end)

T.test("a gzip bomb counts decoded bytes: 500 KB on the wire is refused under a 1 MiB max_body", function()
  local err = refusal{ url = url("/bomb"), max_body = 1024 * 1024 }
  T.eq(err.code, "EBODYLIMIT")
end)

T.test("a gzip bomb under the default max_body: refused, memory stays near the 64 MiB limit", function()
  -- a process of its own, so its peak resident size (VmHWM) measures this request alone
  local dir = T.project{ ["bomb.lua"] = ([[
    local http = require("stagehost.http")
    local ok, err = pcall(http.request, { url = %q })
    local status = io.open("/proc/self/status"):read("a")
    print(ok, err.code, err.limit, status:match("VmHWM:%%s*(%%d+) kB"))
  ]]):format(url("/bomb")) }
  local r = T.stagehost(dir, { "bomb.lua" })
  T.eq(r.code, 0, r.stderr)
  local ok, code, limit, peak_kb = r.stdout:match("^(%S+)\t(%S+)\t(%d+)\t(%d+)")
  T.eq(ok, "false"); T.eq(code, "EBODYLIMIT"); T.eq(tonumber(limit), 64 * 1024 * 1024)
  -- the whole body would be BOMB_MIB; the 64 MiB limit, the buffer's doubling (and, under
  -- ASan, its quarantine: 170 MB measured) stay far below
  T.ok(tonumber(peak_kb) < (BOMB_MIB - 200) * 1024, ("peak RSS %s kB"):format(peak_kb))
  fs.remove(dir, { recursive = true })
end)

T.test("output = PATH: max_body does not apply, max_output does; a refused file is not left", function()
  local dir = T.tempdir()
  local path = dir .. "/out.bin"
  local r = http.request{ url = url("/size/100000"), output = path, max_body = 10 }
  T.eq(r.status, 200)
  T.eq(#fs.read(path), 100000)
  local err = refusal{ url = url("/endless"), output = dir .. "/endless.bin", max_output = 1024 * 1024 }
  T.eq(err.code, "EBODYLIMIT")
  T.has(err.message, "larger than max_output (1048576 bytes)")
  T.eq(#fs.list(dir), 1, "only the complete download is there")
  fs.remove(dir, { recursive = true })
end)

T.test("max_body and max_output are checked: a number >= 0", function()
  T.raises(function() http.request{ url = url("/ok"), max_body = -1 } end, "max_body")
  T.raises(function() http.request{ url = url("/ok"), max_output = "big" } end, "max_output")
end)

-- ---- a server that closes each connection just after its response ----

T.test("300 GETs and 300 POSTs against a server that closes after each response all succeed", function()
  for _, method in ipairs{ "GET", "POST" } do
    local failed = {}
    for i = 1, 300 do
      local ok, r = pcall(http.request, { method = method, url = url("/ok"), body = method == "POST" and ("n=" .. i) or nil })
      if not ok or r.status ~= 200 or r.body ~= "ok" then failed[#failed + 1] = ok and r.status or tostring(r) end
    end
    T.eq(#failed, 0, method .. " failures: " .. tostring(failed[1]))
  end
end)

T.test("30 redirect loops against that server each end with EREDIRECTS", function()
  -- curl retries a request whose reused connection died at most 5 times per transfer; with
  -- this server every request of a chain may meet one, so a chain of 5 requests is the longest
  -- that curl's own command line also gets through every time
  for i = 1, 30 do
    local err = refusal{ url = url("/loop"), follow = true, max_redirects = 4 }
    T.eq(err.code, "EREDIRECTS", "loop " .. i .. ": " .. tostring(err))
  end
end)

T.test("the curl command line meets the same dead connections (the race is real) and gets 300 of 300", function()
  local argv = { "curl", "-sv", "-o", "/dev/null", "-w", "%{http_code}\\n" }
  for _ = 1, 300 do argv[#argv + 1] = url("/ok") end
  local r = proc.run(argv)
  T.eq(r.code, 0, r.stderr)
  local _, ok200 = r.stdout:gsub("200\n", "")
  T.eq(ok200, 300)
  T.has(r.stderr, "Connection died, retrying a fresh connect")
end)

T.run(function()
  server:close_stdin()
  server:wait()
end)
