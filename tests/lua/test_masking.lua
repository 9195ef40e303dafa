-- Secrets stay masked in every sink: io.write and io.stderr:write (also split across writes, and
-- a prompt without a newline), their JSON-escaped and URL-encoded forms (state database,
-- run.json, JSON artifacts), --tag/--env/--actor, report.html and the step summary when a colour
-- code sits inside a secret, and URL credentials in http.request's errors and debug lines.
local T = require("harness")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local url = require("stagehost.util.url")

-- A secret with a quote, a backslash and a space: its JSON and URL forms differ from it.
local SECRET = 'tok"en\\with space-' .. require("stagehost.crypto").hex_encode(require("stagehost.crypto").random(4))
local PASSWORD = "pa55word-" .. require("stagehost.crypto").hex_encode(require("stagehost.crypto").random(4))

-- Every form a secret may be written in; none of them may appear in text.
local function forms(secret)
  local quoted = json.encode(secret)
  return { raw = secret, json = quoted:sub(2, -2), url = url.encode(secret), url_lower = (url.encode(secret):gsub("%%%x%x", string.lower)) }
end

local function no_secret(text, what)
  for _, secret in ipairs{ SECRET, PASSWORD } do
    for form, s in pairs(forms(secret)) do
      T.eq(text:find(s, 1, true), nil, ("%s holds the %s form of a secret"):format(what, form))
    end
  end
end

T.test("the forms themselves differ from the secret (the test would see a leak)", function()
  local f = forms(SECRET)
  T.ok(f.json ~= f.raw and f.url ~= f.raw and f.url_lower ~= f.url)
end)

T.test("io.write, io.stdout:write and io.stderr:write mask, also a secret split across writes", function()
  local dir = T.project{ ["w.lua"] = [[
    local secret = os.getenv("API_TOKEN")
    local half = #secret // 2
    io.write("one ", secret:sub(1, half)); io.write(secret:sub(half + 1), " end\n")
    io.stdout:write("two ", secret:sub(1, 3)); io.stdout:write(secret:sub(4), "\n")
    io.stderr:write("three ", secret:sub(1, half)); io.stderr:write(secret:sub(half + 1), "\n")
    io.write("prompt ", secret:sub(1, 5))
    require("stagehost.task").sleep(0.5) -- the prompt is shown meanwhile, not held until the exit
    io.write(secret:sub(6), " later\n")
    io.output():write("four ", secret, "\n")
    local f = assert(io.open("plain.txt", "w")); f:write(secret); f:close() -- files are data: as written
    io.write("last ", secret) -- no newline: out at the exit, masked
  ]] }
  local r = T.stagehost(dir, { "w.lua" }, { env = { API_TOKEN = SECRET } })
  T.eq(r.code, 0, r.stderr)
  no_secret(r.stdout .. r.stderr, "the console")
  T.eq(r.stdout, "one *** end\ntwo ***\nprompt *** later\nfour ***\nlast ***")
  T.eq(r.stderr, "three ***\n")
  T.eq(fs.read(dir .. "/plain.txt"), SECRET)
  fs.remove(dir, { recursive = true })
end)

T.test("a prompt without a newline is shown while the script waits, not held until the exit", function()
  local dir = T.project{ ["p.lua"] = [[
    io.write("Continue? ")
    require("stagehost.task").sleep(0.5)
    require("stagehost.fs").write("asked", "")
    require("stagehost.task").sleep(30)
  ]] }
  local p = require("stagehost.proc").spawn{ os.getenv("STAGEHOST_BIN"), "p.lua", cwd = dir }
  T.wait_for(dir .. "/asked")
  p:kill("KILL") -- no exit: what is on stdout was written before
  local r = p:wait()
  T.eq(r.stdout, "Continue? ")
  fs.remove(dir, { recursive = true })
end)

local PIPELINE = [[
local pipeline = require("stagehost.pipeline")
local url = require("stagehost.util.url")
return pipeline.define{ name = "leaky", stages = {
  { name = "talk", run = function(ctx)
    local secret = os.getenv("API_TOKEN")
    io.write("split ", secret:sub(1, 4)); io.write(secret:sub(5), "\n")
    io.stderr:write("err ", secret, "\n")
    print("encoded https://h/?t=" .. url.encode(secret))
    ctx:artifact("data.json", { token = secret, nested = { secret } })
    ctx:artifact("notes.txt", "encoded " .. url.encode(secret))
    ctx:checkpoint("step", secret)
    return { echoed = "value " .. secret }
  end },
  { name = "colour", needs = { "talk" }, run = function()
    local p = os.getenv("DEPLOY_PASSWORD")
    error("login refused for " .. p:sub(1, 4) .. "\27[1m" .. p:sub(5) .. "\27[0m", 0)
  end },
} }
]]

T.test("a pipeline's every sink: console, stage log, state database, run.json, artifacts, report, step summary", function()
  local dir = T.project{ ["p.lua"] = PIPELINE }
  local summary = dir .. "/summary.md"
  local r = T.stagehost(dir, { "run", "p.lua", "--tag", "v1-" .. SECRET, "--env", PASSWORD, "--actor", SECRET },
    { env = { API_TOKEN = SECRET, DEPLOY_PASSWORD = PASSWORD, GITHUB_STEP_SUMMARY = summary } })
  T.eq(r.code, 1, r.stderr) -- the colour stage fails
  no_secret(r.stdout .. r.stderr, "the console")
  T.has(r.stdout, "split ***")
  local id = assert(fs.list(dir .. "/.stagehost/runs"))[1]
  local run_dir = dir .. "/.stagehost/runs/" .. id
  no_secret(fs.read(run_dir .. "/logs/talk.log"), "the stage log")
  T.has(r.stderr, "err ***")
  local db = fs.read(dir .. "/.stagehost/state.db") .. (fs.read(dir .. "/.stagehost/state.db-wal") or "")
  no_secret(db, "the state database")
  no_secret(fs.read(run_dir .. "/run.json"), "run.json")
  local data = fs.read(run_dir .. "/artifacts/talk/data.json")
  no_secret(data, "the JSON artifact")
  T.has(data, "***")
  no_secret(fs.read(run_dir .. "/artifacts/talk/notes.txt"), "the text artifact")
  local html = fs.read(run_dir .. "/report.html")
  no_secret(html, "report.html")
  T.has(html, "login refused for ***")
  local md = fs.read(summary)
  no_secret(md, "the step summary")
  T.has(md, "login refused for \\*\\*\\*")
  local st = json.decode(T.stagehost(dir, { "status", id, "--json" }).stdout)
  no_secret(json.encode(st), "status --json")
  fs.remove(dir, { recursive = true })
end, { timeout = 120 })

T.test("URL credentials are shown as *** in http.request's errors, retry warnings and debug lines", function()
  local dir = T.project{ ["h.lua"] = [[
    local http = require("stagehost.http")
    local port = require("stagehost.http").serve{ handler = function() return "" end }
    local srv = port
    local target = ("http://deploy:hunter2pw@127.0.0.1:%d/"):format(srv.port)
    srv:close()
    local ok, e = pcall(http.request, { url = target, retry = { attempts = 2, base = 0 } })
    print("message", e.message)
    print("url", e.url)
    local ok2, e2 = pcall(http.request, { url = "http://deploy:hunter2pw@exa mple/" })
    print("misuse", e2)
  ]] }
  local r = T.stagehost(dir, { "h.lua" }, { env = { STAGEHOST_LOG_LEVEL = "debug" } })
  T.eq(r.code, 0, r.stderr)
  local all = r.stdout .. r.stderr
  T.eq(all:find("hunter2pw", 1, true), nil, "no password anywhere: " .. all)
  T.match(r.stdout, "message\t[^\n]*http://%*%*%*@127%.0%.0%.1")
  T.match(r.stderr, "DEBUG +http GET http://%*%*%*@127")
  T.match(r.stderr, "WARN +http%.request: retrying[^\n]*http://%*%*%*@127")
  fs.remove(dir, { recursive = true })
end)

T.run()
