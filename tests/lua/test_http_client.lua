-- http.request against a real nginx (started here, on loopback) and its failure modes.
local T = require("harness")
local task = require("stagehost.task")
local http = require("stagehost.http")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")
local nginx = require("nginx")

local ngx = nginx.start()

T.test("GET: status, lower-case headers, body, effective url, duration", function()
  local r = http.request{ url = ngx.url("/1k.txt") }
  T.eq(r.status, 200)
  T.eq(r.body, ("0123456789abcdef"):rep(64))
  T.eq(r.headers["content-length"], "1024")
  T.match(r.headers["server"], "^nginx")
  T.eq(r.url, ngx.url("/1k.txt"))
  T.ok(r.duration >= 0 and r.duration < 5)
end)

T.test("any HTTP status is a result", function()
  T.eq(http.request{ url = ngx.url("/missing") }.status, 404)
  local busy = http.request{ url = ngx.url("/status/503") }
  T.eq(busy.status, 503); T.eq(busy.body, "busy")
end)

T.test("repeated headers are joined; HEAD has no body", function()
  local r = http.request{ url = ngx.url("/headers") }
  T.eq(r.headers["x-multi"], "one, two")
  local h = http.request{ method = "HEAD", url = ngx.url("/1k.txt") }
  T.eq(h.status, 200); T.eq(h.body, ""); T.eq(h.headers["content-length"], "1024")
end)

T.test("redirects only on request; a loop stops with a clear error", function()
  local r = http.request{ url = ngx.url("/redirect") }
  T.eq(r.status, 302); T.eq(r.headers.location, ngx.url("/1k.txt"))
  local f = http.request{ url = ngx.url("/redirect"), follow = true }
  T.eq(f.status, 200); T.eq(f.url, ngx.url("/1k.txt")); T.eq(#f.body, 1024)
  T.raises(function() http.request{ url = ngx.url("/redirect-loop"), follow = true, max_redirects = 3 } end,
    "/redirect-loop failed: Maximum (3) redirects followed")
end)

T.test("request bodies: string, json, file; PUT then GET back byte for byte", function()
  local r = http.request{ method = "POST", url = ngx.url("/upload"), body = "hello" }
  T.eq(r.body, "length=5 type= method=POST")
  local j = http.request{ method = "POST", url = ngx.url("/upload"), json = { a = 1 } }
  T.eq(j.body, "length=7 type=application/json method=POST")
  local blob = {}
  for i = 0, 255 do blob[#blob + 1] = string.char(i) end
  local data = table.concat(blob):rep(4096) -- 1 MiB of every byte value
  local src = os.tmpname()
  assert(fs.write(src, data))
  local put = http.request{ method = "PUT", url = ngx.url("/dav/upload.bin"), body_file = src }
  T.ok(put.status == 201 or put.status == 204, "PUT status " .. put.status)
  local back = http.request{ url = ngx.url("/dav/upload.bin") }
  T.eq(#back.body, #data); T.ok(back.body == data, "the file came back unchanged")
  os.remove(src)
  T.raises(function() http.request{ method = "PUT", url = ngx.url("/dav/x"), body_file = "/no/such/file" } end,
    "cannot read body_file '/no/such/file'")
end)

T.test("output = path streams to a file, complete or not at all", function()
  local out = os.tmpname()
  local r = http.request{ url = ngx.url("/big.bin"), output = out }
  T.eq(r.status, 200); T.eq(r.body, nil)
  local got = assert(fs.read(out))
  T.eq(#got, 8 * 1024 * 1024)
  T.eq(got:sub(1, 1024), nginx.big_line(1))
  -- a transfer that fails leaves the previous content and no partial file behind
  assert(fs.write(out, "previous"))
  T.raises(function() http.request{ url = ngx.url("/slow/big.bin"), output = out, timeout = 0.3 } end, "timed out")
  T.eq(fs.read(out), "previous")
  local dir = out:match("^(.*)/")
  for _, name in ipairs(fs.list(dir)) do T.no_match(name, "%.part%.", "partial file left: " .. name) end
  os.remove(out)
end)

T.test("memory stays bounded while streaming 8 MiB x 8 to files", function()
  local script = ([[
    local http = require("stagehost.http")
    local task = require("stagehost.task")
    local fns = {}
    for i = 1, 8 do fns[i] = function() return http.request{ url = %q, output = os.tmpname() }.status end end
    task.all(fns)
    print(io.open("/proc/self/status"):read("a"):match("VmHWM:%%s*(%%d+)"))
  ]]):format(ngx.url("/big.bin"))
  local r = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", script,
    env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=1" } }
  T.eq(r.code, 0, r.stderr)
  T.ok(tonumber(r.stdout) < 40 * 1024, "peak RSS " .. r.stdout .. " KiB")
end)

T.test("1,000 concurrent requests from 100 tasks reuse connections", function()
  local before = ngx.accepted()
  local fns = {}
  for i = 1, 100 do
    fns[i] = function()
      local n = 0
      for _ = 1, 10 do
        local r = http.request{ url = ngx.url("/1k.txt") }
        if r.status == 200 and #r.body == 1024 then n = n + 1 end
      end
      return n
    end
  end
  local counts = task.all(fns)
  local total = 0
  for _, n in ipairs(counts) do total = total + n end
  T.eq(total, 1000)
  -- at most one connection per task in flight (plus the status request's): nothing dropped
  -- from the cache and opened again
  local opened = ngx.accepted() - before
  T.ok(opened <= 101, "connections opened for 1,000 requests: " .. opened)
end)

-- (the connect timeout alone, against a server that never completes a handshake, is in
-- test_http_tls.lua)
T.test("the total timeout, reported as such", function()
  local t0 = task.now()
  local ok, err = pcall(http.request, { url = ngx.url("/slow/big.bin"), timeout = 0.2 })
  T.eq(ok, false); T.match(tostring(err), "/slow/big.bin failed: .*[Tt]imed? ?out")
  T.ok(task.now() - t0 < 2)
end)

T.test("a refused connection is an error naming the URL", function()
  local port = nginx.free_port()
  local url = ("http://127.0.0.1:%d/x"):format(port)
  T.raises(function() http.request{ url = url } end, "GET " .. url .. " failed")
  T.raises(function() http.request{ url = url, retry = { attempts = 2, base = 0.01 } } end, "Couldn't connect")
end)

T.test("cancelling the task aborts the transfer at once", function()
  local t = task.spawn(function() return http.request{ url = ngx.url("/slow/big.bin") } end)
  task.sleep(0.1)
  local t0 = task.now()
  t:cancel("stop download")
  local ok, err = t:join()
  T.eq(ok, false); T.eq(tostring(err), "stop download")
  T.ok(task.now() - t0 < 0.5)
  -- and the same through task.timeout
  local in_time = task.timeout(0.1, http.request, { url = ngx.url("/slow/big.bin") })
  T.eq(in_time, false)
end)

T.test("proxies come from the standard environment variables", function()
  local script = ([[
    local r = require("stagehost.http").request{ url = "http://stagehost-proxy-test.invalid/host" }
    io.write(r.status, " ", r.body)
  ]])
  local via = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", script, env = { http_proxy = ngx.url("") } }
  -- the .invalid name cannot resolve: an answer at all means the proxy carried the request
  T.eq(via.stdout, "200 host=stagehost-proxy-test.invalid uri=/host", via.stderr)
  local bypass = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", script,
    env = { http_proxy = ngx.url(""), no_proxy = "stagehost-proxy-test.invalid" } }
  T.eq(bypass.code, 1)
  T.match(bypass.stderr, "Could not resolve host")
end)

T.test("an empty or all-blank header value is sent empty, not dropped", function()
  -- nginx's config cannot echo an arbitrary header, so a local http.serve records what arrives
  local seen
  local srv <close> = http.serve{ handler = function(req) seen = req.headers return "ok" end }
  local r = http.request{ url = ("http://127.0.0.1:%d/h"):format(srv.port),
    headers = { ["X-Empty"] = "", ["X-Blank"] = " \t ", ["X-Full"] = "v" } }
  T.eq(r.status, 200)
  T.eq(seen["x-empty"], "", "X-Empty arrived")
  T.eq(seen["x-blank"], "", "X-Blank arrived")
  T.eq(seen["x-full"], "v")
  T.raises(function() http.request{ url = ngx.url("/"), headers = { ["X;A"] = "" } } end, "has a ';' in its name")
  srv:close()
end)

T.test("malformed URLs and bad options: an error naming them", function()
  T.raises(function() http.request{ url = "ht tp://x" } end, "malformed URL 'ht tp://x'")
  T.raises(function() http.request{ url = "http://" } end, "malformed URL 'http://'")
  T.raises(function() http.request{ url = "file:///etc/passwd" } end, "is not http:// or https://")
  T.raises(function() http.request{} end, "'url' is required")
  T.raises(function() http.request("http://x") end, "bad argument #1 to 'http.request' (table expected, got string)")
  T.raises(function() http.request{ url = ngx.url("/"), headers = { ["X-Bad"] = "a\r\nInjected: 1" } } end, "line break")
  T.raises(function() http.request{ url = ngx.url("/"), method = "get" } end, "upper-case")
  T.raises(function() http.request{ url = ngx.url("/"), timeout = "soon" } end, "'timeout' must be a number")
  T.raises(function() http.request{ url = ngx.url("/"), body = "x", json = {} } end, "either body or json")
  T.raises(function() http.request{ url = ngx.url("/"), retry = "often" } end, "retry must be a number or a table")
end)

-- (insecure against a real TLS server with a self-signed certificate: test_http_tls.lua)
T.test("insecure = true warns", function()
  local r = proc.run{ os.getenv("STAGEHOST_BIN"), "-e",
    ("require('stagehost.http').request{ url = %q, insecure = true }"):format(ngx.url("/1k.txt")) }
  T.eq(r.code, 0, r.stderr)
  T.match(r.stderr, "WARN  http.request: TLS verification is off")
end)

T.test("Retry-After: seconds and HTTP dates", function()
  T.eq(http.retry_after("120"), 120)
  T.eq(http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 60), 60)
  T.eq(http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 + 60), 0)
  T.eq(http.retry_after("soon"), nil)
  T.eq(http.retry_after(nil), nil)
end)

T.run(ngx.close)
