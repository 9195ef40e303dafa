-- Driver of run.sh's approval_serve benchmark (run by stagehost itself):
--   stagehost bench/approval_serve.lua WORKDIR [GATES] [CONNECTIONS] [VOTES]
-- 1. a state directory with GATES (200) pending gates of runs whose hosts are gone, and one
--    real host waiting on a gate (approvers alice); `stagehost serve` on it;
-- 2. CONNECTIONS (1,000) keep-alive connections, each having fetched one approval page (python3
--    holds them open), then serve's RSS (VmRSS, and VmHWM, its peak) while they stay open;
-- 3. VOTES times, on a fresh waiting host each: a vote through the page (the signed link, the
--    CSRF token, the POST) until the waiting stage logs the vote (its stdout line).
-- Prints one line: "ok gates=N connections=N held=N rss_kib=N hwm_kib=N vote_s=MEDIAN vote_max_s=MAX"

-- the test harness's process reader, project sources and notification capture
package.path = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/../tests/lua/?.lua;" .. package.path
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local http = require("stagehost.http")
local url = require("stagehost.util.url")

local work = assert(arg[1], "usage: approval_serve.lua WORKDIR [GATES] [CONNECTIONS] [VOTES]")
local GATES, CONNS, VOTES = tonumber(arg[2] or 200), tonumber(arg[3] or 1000), tonumber(arg[4] or 3)
assert(os.getenv("STAGEHOST_BIN"), "STAGEHOST_BIN is the stagehost under test")
local state = work .. "/.stagehost"

assert(fs.write(work .. "/p.lua", T.approval_pipeline("bench",
  [[{ title = "Bench", approvers = {"alice"}, timeout = "1h", checklist = "- [ ] ok" }]])))
assert(fs.mkdir(work .. "/channels"))
assert(fs.write(work .. "/channels/capture.lua", T.CAPTURE_REQUESTED))

-- 1. the gates: rows as approval.request makes them, for runs whose hosts are gone
do
  local store = require("stagehost.pipeline.runner").open_store(state)
  local gate = require("stagehost.approval.gate")
  gate.ensure(store)
  local spec = { approvers = { "alice", "bob", "carol" }, required = 2, timeout = 86400, forbid = {}, channels = { "cli", "web" } }
  store:transaction(function(st)
    local now, at = gate.clock(st)
    for i = 1, GATES do
      local id = ("bench-%04d"):format(i)
      st:query([[INSERT INTO runs (id, pipeline, file, status, started_at, pid, host_started) VALUES (?,?,?,?,?,?,?)]],
        id, "bench", "p.lua", "running", at, 1, "0")
      local checklist = ("# Release %d\n- [x] tests\n- [ ] **smoke** on staging\n"):format(i)
      local subject, shown = gate.subject(checklist, "~ 3 changes", nil, nil, nil)
      gate.create(st, { id = id .. "/gate/1", run_id = id, stage = "gate", n = 1, title = "Release " .. i, spec = spec,
        actor = "dana", checklist = checklist, preview = "~ 3 changes", subject = subject, shown = shown, at = at,
        deadline = now + 86400 })
    end
  end)
  store:close()
end

local function spawn(args) return T.spawn_stagehost(work, args) end

local serve = spawn{ "serve", "--listen", "127.0.0.1:0" }
local base = serve.line("serving approvals on "):match("(http://%S+)/$")
local host, port = base:match("^http://([^:]+):(%d+)$")

-- 2. the connections
local holder = proc.spawn{ "python3", "-c", [[
import socket, sys
host, port, n, gates = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(n):
    s = socket.create_connection((host, port))
    path = "/gate?id=bench-%04d%%2Fgate%%2F1" % (i % gates + 1)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    socks.append(s)
held = 0
for s in socks:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(65536)
    if head.startswith(b"HTTP/1.1 200") and b"Release" in body:
        held += 1
print("held", held, flush=True)
sys.stdin.read()
]], host, port, tostring(CONNS), tostring(GATES), stdin = true, lines = true }
local _, said = holder:read_line()
local held = tonumber(said:match("held (%d+)"))
task.sleep(0.5)
local status = assert(fs.read(("/proc/%d/status"):format(serve.h.pid)))
local rss, hwm = tonumber(status:match("VmRSS:%s*(%d+)")), tonumber(status:match("VmHWM:%s*(%d+)"))

-- 3. vote to resumed stage, with the connections still open
local times = {}
for i = 1, VOTES do
  os.remove(work .. "/requested.json")
  local h = spawn{ "run", "p.lua", "--actor", "dana" }
  local m = T.requested(work, 30)
  local link = m.approval.links[1].url
  local page = http.request{ url = link }
  local cookie = assert(page.headers["set-cookie"]):match("^([^;]+)")
  local form = ("id=%s&t=%s&csrf=%s&decision=approve&comment=bench"):format(url.encode(m.approval.gate),
    link:match("[?&]t=([^&]+)"), url.encode(page.body:match('name="csrf" value="([^"]+)"')))
  local t0 = task.now()
  local r = http.request{ method = "POST", url = base .. "/gate", body = form,
    headers = { Cookie = cookie, ["Content-Type"] = "application/x-www-form-urlencoded" } }
  assert(r.status == 200, "the vote was refused: " .. r.status)
  local _, seen = h.line("vote: alice approved via web page", 30)
  times[i] = seen - t0
  assert(h.finish().code == 0, "the run did not succeed")
  io.stderr:write(("  vote %d: %.3f s\n"):format(i, times[i]))
end
table.sort(times)

holder:close_stdin()
holder:wait()
serve.stop()
print(("ok gates=%d connections=%d held=%d rss_kib=%d hwm_kib=%d vote_s=%.4f vote_max_s=%.4f"):format(GATES, CONNS, held, rss, hwm,
  times[(#times + 1) // 2], times[#times]))
