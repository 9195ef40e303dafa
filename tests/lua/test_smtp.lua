-- E-mail through libcurl's SMTP on the event loop (stagehost.core.smtp) and the notify channel
-- on it, against a real SMTP server: Debian's python3-aiosmtpd (tests/python/smtp_sink.py),
-- which keeps each message and what Python's RFC 5322 parser makes of it. Plain SMTP, AUTH,
-- STARTTLS, implicit TLS (smtps://), tls = "required" refused, a server that is down, a server
-- that never answers (the task cancelled mid-dialogue).
local T = require("harness")
local task = require("stagehost.task")
local http = require("stagehost.http") -- loaded now: its curl timer belongs in every baseline
local json = require("stagehost.json")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")
local log = require("stagehost.log")
local smtp = require("stagehost.core.smtp")
local notify = require("stagehost.notify")
local email = require("stagehost.notify.email")

local FAST = { attempts = 3, base = 0.01, cap = 0.02 }

local sinks = {} -- every server started, stopped by T.run's teardown whatever the tests did

-- Start the SMTP sink with these extra arguments; -> {port, dir, url, messages(), stop()}.
local function start_sink(...)
  local dir = T.tempdir()
  local h, port = T.smtp_sink(dir, ...)
  local s = { dir = dir, h = h, port = port }
  sinks[#sinks + 1] = s
  s.url = "smtp://127.0.0.1:" .. port
  function s.messages()
    local out = {}
    for _, name in ipairs(fs.list(dir) or {}) do
      local n = name:match("^(%d+)%.json$")
      if n then out[tonumber(n)] = json.decode(fs.read(dir .. "/" .. name)) end
    end
    return out
  end
  function s.stop()
    if s.stopped then return end
    s.stopped = true
    h:kill("TERM")
    h:wait()
    fs.remove(dir, { recursive = true })
  end
  return s
end

-- A self-signed certificate for 127.0.0.1, made once with openssl.
local cert_dir
local function certificate()
  if not cert_dir then
    cert_dir = T.tempdir()
    proc.run{ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-keyout", cert_dir .. "/key.pem", "-out", cert_dir .. "/cert.pem", check = true, quiet = true }
  end
  return cert_dir .. "/cert.pem", cert_dir .. "/key.pem"
end

local with_channels = T.with_channels

local TITLE = "Déploiement échoué — staging rc-1.2.0 (étape infrastructure, un titre assez long pour être plié)"
local TEXT = "The stack rolled back.\n.a line that starts with a dot\n"
  .. "a = b, and a long line: " .. ("0123456789"):rep(12) .. "\nlast line "

T.test("email: an RFC 5322 message — Date, From, To, Subject (RFC 2047), Message-ID, MIME, UTF-8 body", function()
  local s = start_sink()
  local before = os.time()
  with_channels({ { channel = "email", url = s.url, from = "Deploys <ci@example.com>",
    to = { "ops@example.com", "Dev Team <dev@example.com>" } } }, function()
    local r = notify.send{ event = "deploy.failure", phase = "infrastructure", title = TITLE, text = TEXT,
      fields = { { name = "Tag", value = "rc-1.2.0" } }, run = { id = "R1", pipeline = "staging", tag = "rc-1.2.0" } }
    T.eq(r.email.ok, true, r.email.error)
  end)
  local m = s.messages()[1]
  T.ok(m, "the server got the message")
  T.eq(m.mail_from, "ci@example.com")
  T.eq(table.concat(m.rcpt_tos, ","), "ops@example.com,dev@example.com")
  T.eq(#m.defects, 0, "Python's parser finds no defect: " .. table.concat(m.defects, "; "))
  T.eq(m.headers.From, "Deploys <ci@example.com>")
  T.eq(m.headers.To, "ops@example.com, Dev Team <dev@example.com>")
  T.eq(m.headers.Subject, TITLE, "the Subject decodes to the title")
  T.match(m.data, "\r\nSubject: =%?UTF%-8%?B%?[%w+/=]+%?=\r\n =%?UTF%-8%?B%?", "RFC 2047 words, folded")
  T.ok(m.date and m.date >= before - 1 and m.date <= os.time() + 1, "Date is now: " .. tostring(m.date))
  T.match(m.data, "^Date: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d %+0000\r\n")
  T.match(m.headers["Message-ID"], "^<%x+%.%d+@example%.com>$")
  T.eq(m.headers["MIME-Version"], "1.0")
  T.match(m.headers["Content-Type"], "^text/plain; charset=\"?[Uu][Tt][Ff]%-8\"?$")
  T.eq(m.headers["X-Stagehost-Event"], "deploy.failure")
  local want = notify.plain{ event = "deploy.failure", status = "failure", phase = "infrastructure", text = TEXT,
    fields = { { name = "Tag", value = "rc-1.2.0" } }, run = { id = "R1", pipeline = "staging", tag = "rc-1.2.0" } }
  T.eq(m.body:gsub("\r\n", "\n"), want .. "\n", "the body decodes to the text, fields and run")
  for line in m.data:gmatch("([^\n]*)\n") do T.ok(#line <= 78, "a line of at most 76 characters + CRLF: " .. line) end
  s.stop()
end, { timeout = 60 })

T.test("email: secrets are masked in the subject, the body and the fields", function()
  local secret = log.mask([[smtp"se\cret-0xBADC0DE]])
  local s = start_sink()
  with_channels({ { channel = "email", url = s.url, from = "ci@example.com", to = "ops@example.com" } }, function()
    local r = notify.send{ event = "deploy.failure", title = "leaked " .. secret, text = "text " .. secret,
      fields = { { name = "field " .. secret, value = secret } } }
    T.eq(r.email.ok, true, r.email.error)
  end)
  local m = s.messages()[1]
  T.ok(not m.data:find("BADC0DE", 1, true), "no piece of the secret in the message")
  T.eq(m.headers.Subject, "leaked ***")
  T.has(m.body, "text ***"); T.has(m.body, "field ***: ***")
  s.stop()
end, { timeout = 60 })

T.test("email: AUTH with username and password; a wrong password is refused at once, not retried", function()
  local s = start_sink("--auth", "deployer:s3cret-pw")
  with_channels({ { channel = "email", url = s.url, from = "ci@example.com", to = "ops@example.com",
    username = "deployer", password = "s3cret-pw" } }, function()
    local r = notify.send{ event = "deploy.success", title = "authenticated" }
    T.eq(r.email.ok, true, r.email.error)
  end)
  T.eq(s.messages()[1].login, "deployer")
  T.eq(log.masked("s3cret-pw"), "***", "the password is masked from the start")
  with_channels({ { channel = "email", url = s.url, from = "ci@example.com", to = "ops@example.com",
    username = "deployer", password = "wrong-pw", retry = FAST } }, function()
    local t0 = task.now()
    local r = notify.send{ event = "deploy.success", title = "refused" }
    T.eq(r.email.ok, false)
    T.match(r.email.error, "535")
    T.ok(task.now() - t0 < 1, "an authentication failure is not retried")
  end)
  local ok, err, kind, reply = smtp.send{ url = s.url, from = "ci@example.com", to = { "ops@example.com" }, body = "x" }
  T.eq(ok, nil); T.match(err, "the server said 530"); T.eq(kind, "rejected"); T.eq(reply, 530)
  T.eq(#s.messages(), 1)
  s.stop()
end, { timeout = 60 })

T.test("email: STARTTLS when the server offers it; a certificate that does not verify is refused", function()
  local cert, key = certificate()
  local s = start_sink("--starttls", cert, key)
  local ok, err, kind = smtp.send{ url = s.url, from = "ci@example.com", to = "ops@example.com",
    body = "Subject: unverified\r\n\r\nx\r\n" }
  T.eq(ok, nil, "a self-signed certificate does not verify"); T.eq(kind, "tls", err)
  with_channels({ { channel = "email", url = s.url, from = "ci@example.com", to = "ops@example.com",
    insecure = true, tls = "required" } }, function()
    local r = notify.send{ event = "deploy.success", title = "over TLS" }
    T.eq(r.email.ok, true, r.email.error)
  end)
  local msgs = s.messages()
  T.eq(#msgs, 1)
  T.eq(msgs[1].tls, true, "STARTTLS was used")
  T.eq(msgs[1].headers.Subject, "over TLS")
  -- tls = "try" (the default) uses it too
  T.eq((smtp.send{ url = s.url, from = "ci@example.com", to = "ops@example.com", insecure = true,
    body = "Subject: try\r\n\r\nx\r\n" }), true)
  T.eq(s.messages()[2].tls, true)
  s.stop()
end, { timeout = 60 })

T.test("email: smtps:// is TLS from the first byte", function()
  local cert, key = certificate()
  local s = start_sink("--smtps", cert, key)
  with_channels({ { channel = "email", url = "smtps://127.0.0.1:" .. s.port, from = "ci@example.com",
    to = "ops@example.com", insecure = true } }, function()
    local r = notify.send{ event = "deploy.success", title = "implicit TLS" }
    T.eq(r.email.ok, true, r.email.error)
  end)
  T.eq(s.messages()[1].tls, true)
  s.stop()
end, { timeout = 60 })

T.test("email: tls = \"required\" against a server without STARTTLS is refused with a clear error", function()
  local s = start_sink()
  with_channels({ { channel = "email", url = s.url, from = "ci@example.com", to = "ops@example.com",
    tls = "required", retry = FAST } }, function()
    local r = notify.send{ event = "deploy.success", title = "must not go in clear" }
    T.eq(r.email.ok, false)
    T.has(r.email.error, "smtp: " .. s.url .. " does not offer STARTTLS and tls = \"required\": the message was not sent")
  end)
  T.eq(#s.messages(), 0, "nothing was sent")
  s.stop()
end, { timeout = 60 })

T.test("email: a server that is down gives nil and a message; the channel retries, then reports", function()
  local probe = http.serve{ handler = function() return "" end }
  local url = "smtp://127.0.0.1:" .. probe.port
  probe:close()
  task.sleep(0.05)
  local ok, err, kind = smtp.send{ url = url, from = "ci@example.com", to = "ops@example.com", body = "x" }
  T.eq(ok, nil); T.eq(kind, "refused")
  T.has(err, "smtp: sending through " .. url .. " failed: ")
  local retries = 0
  with_channels({ { channel = "email", url = url, from = "ci@example.com", to = "ops@example.com",
    retry = { attempts = 3, base = 0.01, on_retry = function() retries = retries + 1 end } } }, function()
    local r = notify.send{ event = "deploy.failure", title = "nobody listens" }
    T.eq(r.email.ok, false); T.match(r.email.error, "Couldn't connect")
  end)
  T.eq(retries, 2, "a refused connection is tried again")
end)

T.test("email: a server that never answers: the task's timeout aborts the dialogue and leaves nothing open", function()
  local tarpit = http.serve{ handler = function() task.sleep(30) end } -- no SMTP greeting ever
  local in_time = task.timeout(0.3, smtp.send, { url = "smtp://127.0.0.1:" .. tarpit.port, from = "ci@example.com",
    to = "ops@example.com", body = "x" })
  T.eq(in_time, false)
  -- and curl's own timeout, when the task waits
  local ok, err, kind = smtp.send{ url = "smtp://127.0.0.1:" .. tarpit.port, from = "ci@example.com",
    to = "ops@example.com", body = "x", timeout = 0.3 }
  T.eq(ok, nil); T.eq(kind, "timeout", err)
  tarpit:close()
end)

T.test("smtp.send misuse raises, naming the option", function()
  T.raises(smtp.send, "url' must be smtp://host:port or smtps://host:port", { url = "http://x", from = "a@b.c",
    to = "d@e.f", body = "x" })
  T.raises(smtp.send, "option 'to' needs at least one address", { url = "smtp://x", from = "a@b.c", to = {}, body = "x" })
  T.raises(smtp.send, "option 'from' must be a bare address", { url = "smtp://x", from = "A <a@b.c>", to = "d@e.f", body = "x" })
  T.raises(smtp.send, "option 'to' must be a bare address", { url = "smtp://x", from = "a@b.c", to = { "d@e.f\r\nRCPT" }, body = "x" })
  T.raises(smtp.send, "option 'tls' must be \"try\" or \"required\"", { url = "smtp://x", from = "a@b.c", to = "d@e.f",
    body = "x", tls = "yes" })
  T.raises(smtp.send, "unknown option 'pasword'", { url = "smtp://x", from = "a@b.c", to = "d@e.f", body = "x", pasword = "x" })
end)

T.test("the pieces of a message: addresses, RFC 2047 words, quoted-printable", function()
  T.eq(email.address("Deploys <ci@example.com>"), "ci@example.com")
  T.eq(email.address("ci@example.com"), "ci@example.com")
  T.eq(email.address("not an address"), nil)
  T.eq(email.encode_words("plain ASCII"), "plain ASCII")
  local words = email.encode_words(("é"):rep(40))
  for word in words:gmatch("[^\r\n ]+") do T.ok(#word <= 75, word) end
  T.eq(email.quoted_printable("a=b é \n.dot"), "a=3Db =C3=A9=20\r\n.dot")
  local long = email.quoted_printable(("x"):rep(74) .. "é")
  for line in (long .. "\r\n"):gmatch("([^\r\n]*)\r\n") do T.ok(#line <= 76, line) end
  T.match(long, "^x+=\r\n")
end)

T.run(function()
  for _, s in ipairs(sinks) do s.stop() end
  if cert_dir then fs.remove(cert_dir, { recursive = true }) end
end)
