-- What the AWS emulators share on the wire: identifiers, timestamps, the Query protocol (form
-- bodies in, XML out) and the REST-JSON protocol (JSON bodies, x-amzn-ErrorType errors), and the
-- error value a service handler raises to answer with an AWS error.
local crypto = require("stagehost.crypto")
local json = require("stagehost.json")
local task = require("stagehost.task")

local wire = {}

wire.ACCOUNT_ID = "123456789012"

---------------------------------------------------------------------------------------------------
-- time: one clock for state transitions and timestamps, so an event's time and the moment it
-- became visible agree. Wall time anchored once, advanced by the monotonic clock (sub-second).

local anchor_wall, anchor_mono

function wire.clock()
  if not anchor_wall then anchor_wall, anchor_mono = os.time(), task.now() end
  return anchor_wall + (task.now() - anchor_mono)
end

-- "2026-01-01T00:00:00.123Z" (what the Query services send) or, with whole = true, without the
-- fraction (STS credential expirations).
function wire.iso8601(t, whole)
  local secs = math.floor(t)
  local s = os.date("!%Y-%m-%dT%H:%M:%S", secs)
  if whole then return s .. "Z" end
  return ("%s.%03dZ"):format(s, math.floor((t - secs) * 1000))
end

---------------------------------------------------------------------------------------------------
-- identifiers

local UPPER_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
local LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

-- n random characters of an alphabet (rejection sampling keeps them uniform)
local function random_from(alphabet, n)
  local out = {}
  local limit = 256 - 256 % #alphabet
  while #out < n do
    for _, b in ipairs{ crypto.random(n):byte(1, -1) } do
      if b < limit and #out < n then
        local i = b % #alphabet + 1
        out[#out + 1] = alphabet:sub(i, i)
      end
    end
  end
  return table.concat(out)
end

function wire.random_upper(n) return random_from(UPPER_ALNUM, n) end
function wire.random_lower(n) return random_from(LOWER_ALNUM, n) end

function wire.uuid()
  local b = { crypto.random(16):byte(1, -1) }
  b[7] = (b[7] & 0x0f) | 0x40 -- version 4
  b[9] = (b[9] & 0x3f) | 0x80 -- RFC 4122 variant
  local hex = ("%02x"):rep(16):format(table.unpack(b))
  return ("%s-%s-%s-%s-%s"):format(hex:sub(1, 8), hex:sub(9, 12), hex:sub(13, 16), hex:sub(17, 20), hex:sub(21, 32))
end

---------------------------------------------------------------------------------------------------
-- errors: a handler raises wire.fail(...) and the dispatcher renders it in the service's protocol

local AwsError = {}
AwsError.__index = AwsError
AwsError.__tostring = function(e) return ("%s: %s"):format(e.code, e.message) end

-- Raise an AWS error. status defaults to 400; kind is "Sender" or "Receiver" (Query only).
function wire.fail(code, message, status, kind)
  error(setmetatable({ code = code, message = message, status = status or 400, kind = kind }, AwsError), 0)
end

function wire.is_error(v) return getmetatable(v) == AwsError end

---------------------------------------------------------------------------------------------------
-- form bodies and query strings (application/x-www-form-urlencoded); lenient, as a server must
-- be: a broken escape stays as it was rather than failing the request

wire.unescape = require("stagehost.util.url").decode
wire.escape = require("stagehost.util.url").encode

-- Decode into `into` (a table, created when nil); the first value of a repeated key wins.
function wire.parse_form(s, into)
  into = into or {}
  for pair in (s or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    k = wire.unescape(k, true)
    if k ~= "" and into[k] == nil then into[k] = wire.unescape(v, true) end
  end
  return into
end

-- The Query protocol's lists: Prefix.member.1, Prefix.member.2.Key, ... -> an array of strings
-- (for scalar members) or of tables (for structures), in index order.
function wire.members(params, prefix)
  local by_index = {}
  local head = prefix .. ".member."
  for k, v in pairs(params) do
    if k:sub(1, #head) == head then
      local index, field = k:sub(#head + 1):match("^(%d+)%.?(.*)$")
      index = tonumber(index)
      if index then
        if field == "" then
          by_index[index] = v
        else
          if type(by_index[index]) ~= "table" then by_index[index] = {} end
          by_index[index][field] = v
        end
      end
    end
  end
  local indexes = {}
  for i in pairs(by_index) do indexes[#indexes + 1] = i end
  table.sort(indexes)
  local list = {}
  for _, i in ipairs(indexes) do list[#list + 1] = by_index[i] end
  return list
end

---------------------------------------------------------------------------------------------------
-- XML, written only: each helper returns a string; nil and empty values leave elements out

-- Text content only (the answers have no attributes): quotes stay as they are, as AWS sends
-- them ("Value null at 'stackName'").
local XML_ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;" }

function wire.xml_escape(s)
  return (tostring(s):gsub("[&<>]", XML_ESCAPES))
end

-- <name>value</name>; booleans as true/false; nil gives "".
function wire.el(name, value)
  if value == nil then return "" end
  if type(value) == "boolean" then value = value and "true" or "false" end
  return ("<%s>%s</%s>"):format(name, wire.xml_escape(value), name)
end

-- <name>already-xml</name>
function wire.raw_el(name, inner)
  if inner == nil then return "" end
  return ("<%s>%s</%s>"):format(name, inner, name)
end

-- <name><member>…</member>…</name>; render(item) gives a member's inner XML (escaped text for
-- plain strings by default).
function wire.list(name, items, render)
  local parts = {}
  for _, item in ipairs(items or {}) do
    parts[#parts + 1] = "<member>" .. (render and render(item) or wire.xml_escape(item)) .. "</member>"
  end
  if #parts == 0 then return ("<%s/>"):format(name) end
  return ("<%s>%s</%s>"):format(name, table.concat(parts), name)
end

-- A Query protocol answer: <ActionResponse><ActionResult>result</ActionResult>…; result nil
-- means the action has no result element (DeleteStack).
function wire.query_response(namespace, action, result, request_id)
  local body = { ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s">'):format(action, namespace) }
  if result then body[#body + 1] = ("<%sResult>%s</%sResult>"):format(action, result, action) end
  body[#body + 1] = ("<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>\n"):format(request_id, action)
  return {
    status = 200,
    headers = { ["Content-Type"] = "text/xml", ["x-amzn-RequestId"] = request_id },
    body = table.concat(body),
  }
end

function wire.query_error(namespace, err, request_id)
  local body = ('<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="%s"><Error><Type>%s</Type>%s%s</Error><RequestId>%s</RequestId></ErrorResponse>\n')
    :format(namespace, err.kind or ((err.status or 400) >= 500 and "Receiver" or "Sender"),
      wire.el("Code", err.code), wire.el("Message", err.message), request_id)
  local headers = { ["Content-Type"] = "text/xml", ["x-amzn-RequestId"] = request_id }
  for k, v in pairs(err.headers or {}) do headers[k] = v end
  return { status = err.status or 400, headers = headers, body = err.body or body }
end

-- A Query-protocol service module: the API version every request must name, the XML namespace
-- of its answers, the parameters each action's API reference marks "Required: Yes", and the
-- actions table the module fills (see query_dispatch).
function wire.query_service(version, namespace, required)
  return { protocol = "query", version = version, namespace = namespace, actions = {}, required = required }
end

-- Run a Query service's action: module.actions[Action](sb, params, ctx) returns the result's
-- inner XML (or false for an action without a result element). module.required[Action] lists
-- the parameters the action's API requires: a missing one is refused before the handler runs,
-- in AWS's words ("Value null at 'stackName' failed to satisfy constraint: Member must not be
-- null").
function wire.query_dispatch(module, sb, ctx)
  if not ctx.action or ctx.action == "" then
    wire.fail("MissingAction", "The request must contain the parameter Action.")
  end
  -- the Query protocol names the API version in every request; an action exists only in the
  -- version that has it, and a request without a version finds none (as AWS answers)
  local handler = module.actions[ctx.action]
  local version = ctx.params.Version
  if not handler or version ~= module.version then
    wire.fail("InvalidAction", ("Could not find operation %s for version %s")
      :format(ctx.action, (version == nil or version == "") and "NO_VERSION_SPECIFIED" or version))
  end
  local missing = {}
  for _, name in ipairs(module.required and module.required[ctx.action] or {}) do
    if ctx.params[name] == nil then
      missing[#missing + 1] = ("Value null at '%s' failed to satisfy constraint: Member must not be null")
        :format(name:sub(1, 1):lower() .. name:sub(2))
    end
  end
  if #missing > 0 then
    wire.fail("ValidationError", ("%d validation error%s detected: %s"):format(#missing, #missing > 1 and "s" or "",
      table.concat(missing, "; ")))
  end
  local result = handler(sb, ctx.params, ctx)
  return wire.query_response(module.namespace, ctx.action, result or nil, ctx.request_id)
end

---------------------------------------------------------------------------------------------------
-- REST-JSON

function wire.json_response(value, request_id, status)
  return {
    status = status or 200,
    headers = { ["Content-Type"] = "application/json", ["x-amzn-RequestId"] = request_id },
    body = json.encode(value),
  }
end

function wire.json_error(err, request_id)
  local headers = {
    ["Content-Type"] = "application/json",
    ["x-amzn-RequestId"] = request_id,
    ["x-amzn-ErrorType"] = err.code,
  }
  for k, v in pairs(err.headers or {}) do headers[k] = v end
  return { status = err.status or 400, headers = headers, body = err.body or json.encode{ message = err.message } }
end

---------------------------------------------------------------------------------------------------
-- small value helpers the services share

function wire.deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not wire.deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

function wire.copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = wire.copy(x) end
  return setmetatable(out, getmetatable(v))
end

function wire.sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

return wire
