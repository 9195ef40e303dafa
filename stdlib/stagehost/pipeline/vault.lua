-- Secret values at rest in the state store: JSON-encoded, sealed with AES-256-GCM
-- (crypto.seal) and kept as text "sealed:v1:" .. base64(blob), so a resumed run gets them back
-- instead of "***". The key (32 bytes) comes from STAGEHOST_STATE_KEY (64 hex digits), else from
-- STATE_DIR/state.key (64 hex digits and a newline, mode 0600), created on first use.
--
-- A key file that others may read (any group or other bit) is refused, as ssh refuses such a
-- private key, rather than fixed: it may already have been copied, which a silent chmod would
-- hide, and fixing it is one command the message gives. A key file with bad content is refused
-- too, never overwritten: the values sealed with the key it held would be lost.
local crypto = require("stagehost.crypto")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")

local vault = {}

local Vault = { __name = "stagehost.vault" }
Vault.__index = Vault

local PREFIX = "sealed:v1:"
local ENV = "STAGEHOST_STATE_KEY"
local KEY_FILE = "state.key"
local HEX_KEY = "^" .. ("%x"):rep(64) .. "$"

-- Each vault's raw key, out of the object itself so that no dump or encoding of it shows it.
local keys = setmetatable({}, { __mode = "k" })

-- One line, exit code 2: a configuration the run cannot go on with.
local function fail(fmt, ...)
  -- required here: the command line requires the pipeline modules, which require this one
  require("stagehost.errors").exit(2, fmt, ...)
end

local function key_from_env(value, dir)
  if not value:match(HEX_KEY) then
    local problem = #value ~= 64 and ("it has %d characters"):format(#value)
      or "it holds characters other than hex digits"
    fail("%s must be 64 hex digits (a 32-byte key, e.g. from `openssl rand -hex 32`) but %s: set it to the key "
      .. "the state in %s was sealed with, or unset it to use %s/%s", ENV, problem, dir, dir, KEY_FILE)
  end
  return (crypto.hex_decode(value))
end

-- The key in an existing file, checked like ssh checks a private key.
local function read_key_file(path, kind, perm)
  if kind ~= "file" then
    fail("%s is a %s, not a key file: move it aside, or set %s", path, kind, ENV)
  end
  if perm & 63 ~= 0 then -- 0077: any permission for group or others
    fail("%s is accessible by others (mode %04o, 0600 expected): run `chmod 600 %s` and consider the key "
      .. "exposed, or set %s", path, perm, path, ENV)
  end
  local text, err = fs.read(path)
  if not text then fail("cannot read the state key: %s (or set %s)", err, ENV) end
  local hex = text:match("^(%x+)\n?$")
  if not hex or #hex ~= 64 then
    fail("%s does not hold a state key (64 hex digits expected; the file was left as it is): restore it "
      .. "from a backup, or set %s to the key", path, ENV)
  end
  log.mask(hex)
  return (crypto.hex_decode(hex))
end

-- The key in DIR/state.key, created (0600, exclusively) when missing. Of processes racing to
-- create it one wins; the others find its complete file on their second look.
local function key_from_file(dir)
  local ok, err = fs.mkdir(dir)
  if not ok then fail("cannot use state directory '%s': %s", dir, err) end
  local path = dir .. "/" .. KEY_FILE
  for _ = 1, 2 do
    local exists, kind, perm = fs.exists(path)
    if exists then return read_key_file(path, kind, perm) end
    local hex = crypto.hex_encode(crypto.random(32))
    local done, werr, code = fs.write(path, hex .. "\n", { mode = 384, exclusive = true })
    if done then
      log.mask(hex)
      return (crypto.hex_decode(hex))
    end
    if code ~= "EEXIST" then fail("cannot create the state key: %s (or set %s)", werr, ENV) end
  end
  fail("cannot create the state key %s: something unreadable is in the way (a dangling symbolic link?): "
    .. "move it aside, or set %s", path, ENV)
end

-- vault.open(state_dir) -> vault; raises an exit-2 error (one line) when the key is unusable.
function vault.open(state_dir)
  if type(state_dir) ~= "string" or state_dir == "" then
    require("stagehost.errors").argument(1, "vault.open", "state directory expected, got %s",
      state_dir == "" and "an empty string" or type(state_dir))
  end
  local env = os.getenv(ENV)
  local v = setmetatable({}, Vault)
  if env then
    keys[v] = key_from_env(env, state_dir)
    v.source = ENV
  else
    keys[v] = key_from_file(state_dir)
    v.source = state_dir .. "/" .. KEY_FILE
  end
  return v
end

-- Is s the text of a sealed value?
function vault.is_sealed(s)
  return type(s) == "string" and s:sub(1, #PREFIX) == PREFIX
end

local function check_where(where, fname)
  if where ~= nil and type(where) ~= "string" then
    require("stagehost.errors").argument_at(3, 2, fname, "string expected, got %s", type(where))
  end
end

-- v:seal(value [, where]) -> text. where (e.g. "RUN/STAGE") is bound to the text as AAD: it
-- unseals only with the same where, so a sealed value copied elsewhere in the store is refused.
function Vault:seal(value, where)
  check_where(where, "seal")
  local blob = crypto.seal(keys[self], json.encode(value), PREFIX .. (where or ""))
  return PREFIX .. crypto.base64_encode(blob)
end

-- v:unseal(text [, where]) -> value, or nil, message, code ("EINVAL": not sealed text at all;
-- "EBADMSG": damaged, altered, or sealed with another key or for another where).
function Vault:unseal(text, where)
  if type(text) ~= "string" then
    require("stagehost.errors").argument(1, "unseal", "string expected, got %s", type(text))
  end
  check_where(where, "unseal")
  local what = where and ("the sealed value of '%s'"):format(where) or "a sealed value"
  if not vault.is_sealed(text) then
    return nil, ("%s is not sealed text (it does not start with %s)"):format(what, PREFIX), "EINVAL"
  end
  local blob, err = crypto.base64_decode(text:sub(#PREFIX + 1))
  if not blob then return nil, ("%s is damaged: %s"):format(what, err), "EBADMSG" end
  local plain
  plain, err = crypto.open(keys[self], blob, PREFIX .. (where or ""))
  if not plain then
    if not err:find("authentication", 1, true) then return nil, ("%s is damaged: %s"):format(what, err), "EBADMSG" end
    return nil, ("%s does not open with the key from %s: it was sealed with another key, or altered; set %s to "
      .. "the key it was written with, or put back the %s it was written with"):format(what, self.source, ENV, KEY_FILE),
      "EBADMSG"
  end
  local value, why = json.decode(plain)
  if value == nil then return nil, ("%s holds no JSON: %s"):format(what, why), "EBADMSG" end
  return value
end

function Vault:__tostring()
  return ("stagehost.vault (key from %s)"):format(self.source)
end

return vault
