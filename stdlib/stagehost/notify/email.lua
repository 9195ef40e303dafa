-- The e-mail channel: an RFC 5322 message — Date, From, To, Subject (the title; RFC 2047
-- encoded when it is not ASCII), Message-ID, MIME-Version, a text/plain UTF-8 body in
-- quoted-printable — sent through libcurl's SMTP client on the event loop (stagehost.core.smtp).
--   {channel = "email", url = "smtp://mail.example.com:587", from = "Deploys <ci@example.com>",
--    to = {"ops@example.com"}, username =, password =, tls = "try" | "required", insecure = false}
-- STARTTLS is used whenever the server offers it; tls = "required" refuses a server that does
-- not (use it whenever a password is sent); smtps:// is TLS from the first byte (port 465).
local notify = require("stagehost.notify")
local crypto = require("stagehost.crypto")

local email = {}

-- "Deploys <ci@example.com>" or "ci@example.com" -> "ci@example.com"; nil when there is none
function email.address(s)
  local inner = s:match("<([^<>%s]+@[^<>%s]+)>%s*$")
  if inner then return inner end
  return s:match("^%s*([^<>%s\"]+@[^<>%s\"]+)%s*$")
end

local function header_text(s)
  return (tostring(s):gsub("[%c]+", " "))
end

-- RFC 2047 "B" encoded-words for a header holding non-ASCII text: each at most 75 characters
-- and on a line of at most 76 (`used` of the first are taken, by "Subject: "), cut only between UTF-8
-- characters, folded onto new lines that start with a space.
function email.encode_words(s, used)
  if not s:find("[\128-\255]") then return s end
  local words, i, room = {}, 1, math.min(75, 76 - (used or 0))
  while i <= #s do
    -- "=?UTF-8?B?" and "?=" take 12 characters; base64 makes 4 of every 3 bytes
    local bytes = math.max(3, (room - 12) // 4 * 3)
    local j = math.min(i + bytes - 1, #s)
    while j < #s and j > i and (s:byte(j + 1) & 0xC0) == 0x80 do j = j - 1 end
    words[#words + 1] = "=?UTF-8?B?" .. crypto.base64_encode(s:sub(i, j)) .. "?="
    i, room = j + 1, 75 -- the lines after start with a space
  end
  return table.concat(words, "\r\n ")
end

-- approval.requested's page and each approver's signed link (each valid until the deadline,
-- for that person only), as lines after the message; "" for other messages.
function email.links(m)
  local a = m.approval
  if type(a) ~= "table" or not a.page then return "" end
  local lines = { "", "", "Approve or reject on the approval page:" }
  for _, l in ipairs(a.links or {}) do lines[#lines + 1] = ("  as %s: %s"):format(l.who, l.url) end
  if #(a.links or {}) == 0 then lines[#lines + 1] = "  " .. a.page end
  return table.concat(lines, "\n")
end

-- Quoted-printable (RFC 2045 6.7): lines of at most 76 characters, soft breaks '=', CRLF line
-- ends, every byte outside printable ASCII as =XX.
function email.quoted_printable(text)
  local out = {}
  for line in (text:gsub("\r\n", "\n") .. "\n"):gmatch("([^\n]*)\n") do
    local enc = line:gsub("[^\t\32-\60\62-\126]", function(c) return ("=%02X"):format(c:byte()) end)
    enc = enc:gsub("([ \t])$", function(c) return ("=%02X"):format(c:byte()) end)
    local pieces = {}
    while #enc > 76 do
      local cutat = 75
      -- never split an =XX escape
      if enc:sub(cutat - 1, cutat - 1) == "=" then cutat = cutat - 2
      elseif enc:sub(cutat, cutat) == "=" then cutat = cutat - 1 end
      pieces[#pieces + 1] = enc:sub(1, cutat) .. "="
      enc = enc:sub(cutat + 1)
    end
    pieces[#pieces + 1] = enc
    out[#out + 1] = table.concat(pieces, "\r\n")
  end
  return table.concat(out, "\r\n")
end

local function list_of(to)
  if type(to) == "string" then
    local out = {}
    for part in to:gmatch("[^,]+") do
      part = part:match("^%s*(.-)%s*$")
      if part ~= "" then out[#out + 1] = part end
    end
    return out
  end
  return to
end

-- The whole message as SMTP's DATA carries it (CRLF line ends).
function email.render(m, config, now)
  local to = list_of(config.to)
  local from_addr = email.address(config.from)
  local domain = from_addr:match("@(.+)$") or "stagehost.invalid"
  local id = ("%s.%d@%s"):format(crypto.hex_encode(crypto.random(12)), now or os.time(), domain)
  local shown = {}
  for i, a in ipairs(to) do shown[i] = header_text(a) end
  local subject = header_text(m.title)
  if #subject > 900 then subject = subject:sub(1, 900) end
  local headers = {
    "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S +0000", now),
    "From: " .. header_text(config.from),
    "To: " .. table.concat(shown, ",\r\n "),
    "Subject: " .. email.encode_words(subject, #"Subject: "),
    "Message-ID: <" .. id .. ">",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: quoted-printable",
    "X-Stagehost-Event: " .. header_text(m.event),
  }
  return table.concat(headers, "\r\n") .. "\r\n\r\n" .. email.quoted_printable(notify.plain(m) .. email.links(m)) .. "\r\n"
end

email.settings = { url = "string", from = "string", to = "string|[string]", username = "string",
  password = "string", tls = "string", insecure = "boolean" }
email.required = { url = "smtp://mail.example.com:587", from = "ci@example.com", to = "ops@example.com" }
email.secrets = { "password" }

function email.check(config)
  if not config.url:match("^smtps?://[^/]") then
    return ("url must be smtp://host:port or smtps://host:port (got '%s')"):format(config.url)
  end
  if config.tls ~= nil and config.tls ~= "try" and config.tls ~= "required" then
    return ("tls must be \"try\" or \"required\" (got '%s')"):format(tostring(config.tls))
  end
  if not email.address(config.from) then
    return ("from must be an address like ci@example.com or \"Name <ci@example.com>\" (got '%s')"):format(config.from)
  end
  for _, a in ipairs(list_of(config.to)) do
    if not email.address(a) then return ("to has '%s', which is not an address"):format(a) end
  end
  if (config.username == nil) ~= (config.password == nil) then
    return "give both username and password, or neither"
  end
end

function email.send(m, config)
  local smtp = require("stagehost.core.smtp")
  local rcpt = {}
  for i, a in ipairs(list_of(config.to)) do rcpt[i] = email.address(a) end
  local ok, err, kind = smtp.send{ url = config.url, from = email.address(config.from), to = rcpt,
    body = email.render(m, config), username = config.username, password = config.password,
    tls = config.tls, insecure = config.insecure, timeout = config.timeout }
  if not ok then return nil, err, kind end
  return true
end

return email
