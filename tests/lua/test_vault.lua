local T = require("harness")
local vault = require("stagehost.pipeline.vault")
local crypto = require("stagehost.crypto")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local proc = require("stagehost.proc")

local BIN = assert(os.getenv("STAGEHOST_BIN"), "run through ctest (STAGEHOST_BIN)")
local ENV = "STAGEHOST_STATE_KEY"

-- These tests choose the key source themselves: with the variable set outside, run again
-- without it.
if os.getenv(ENV) then
  local r = proc.run { BIN, arg[0], env = { [ENV] = false }, timeout = 280 }
  io.stdout:write(r.stdout)
  io.stderr:write(r.stderr)
  os.exit(r.code)
end

local HEX64 = "^" .. ("%x"):rep(64) .. "\n$"

-- A fresh temp directory for one test, removed afterwards whether it passed or not.
local function with_dir(fn)
  local dir = T.tempdir()
  local ok, err = xpcall(fn, debug.traceback, dir)
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end

-- vault.open must raise a configuration error: exit code 2, one line. Returns the message.
local function refused(state_dir, what)
  local ok, err = pcall(vault.open, state_dir)
  T.eq(ok, false, what .. ": vault.open fails")
  T.eq(type(err), "table", what .. ": an error object")
  T.eq(err.exit_code, 2, what .. ": exit code")
  T.eq(type(err.message), "string", what .. ": message")
  T.no_match(err.message, "\n", what .. ": one line")
  return err.message
end

-- v:unseal(text, where) is refused: nil, a one-line message matching pattern, and code (what
-- names the case in failures). -> the message
local function unseal_refused(v, text, where, pattern, code, what)
  local value, err, c = v:unseal(text, where)
  T.eq(value, nil, what)
  T.match(err, pattern, what)
  T.no_match(err, "\n", what .. ": one line")
  T.eq(c, code, what .. ": code")
  return err
end

-- A child stagehost running code with `vault` and `dir` defined; env is merged over ours, stdin
-- (when given) is written to it.
local function child(dir, code, env, stdin)
  local src = ("local vault = require 'stagehost.pipeline.vault' local dir = %q "):format(dir) .. code
  return proc.run { BIN, "-e", src, env = env, stdin = stdin, timeout = 30 }
end

-- A fresh key in hex, as a key file or STAGEHOST_STATE_KEY holds it.
local function new_key() return crypto.hex_encode(crypto.random(32)) end

-- The state directory dir/name, made now, with a key file holding content made with mode.
-- -> the directory and the key file's path
local function with_key_file(dir, name, content, mode)
  local state = dir .. "/" .. name
  assert(fs.mkdir(state))
  local path = state .. "/state.key"
  assert(fs.write(path, content, { mode = mode }))
  return state, path
end

T.test("a missing key file is created once (0600, 64 hex digits) and reused", function()
  with_dir(function(dir)
    local state = dir .. "/state" -- missing: created with the key
    local path = state .. "/state.key"
    local v1 = vault.open(state)
    T.eq(v1.source, path, "the key's source")
    local content = fs.read(path)
    T.match(content, HEX64, "64 hex digits and a newline")
    local ok, kind, mode = fs.exists(path)
    T.ok(ok and kind == "file", "a file")
    T.eq(mode, 384, "mode 0600")
    T.eq(proc.run { "stat", "-c", "%a", path }.stdout, "600\n", "stat agrees")
    T.eq(getmetatable(v1).__name, "stagehost.vault")
    T.no_match(tostring(v1), "%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x", "tostring shows no key")
    T.no_match(json.encode(v1), content:sub(1, 16), "encoding the vault shows no key")

    local v2 = vault.open(state)
    T.eq(fs.read(path), content, "the second open reuses the file")
    local text = v1:seal({ token = "s3cr3t-deploy-token" }, "run-1/deploy")
    T.eq(v2:unseal(text, "run-1/deploy").token, "s3cr3t-deploy-token", "the same key")
    T.eq(select(3, fs.exists(path)), 384, "mode still 0600")
    local names = fs.list(state)
    T.eq(table.concat(names, ","), "state.key", "no temp files")
  end)
end)

T.test("processes racing to create the key file all end up with the one key", function()
  with_dir(function(dir)
    local results = T.concurrently(6, function(i)
      return child(dir, ("io.write(vault.open(dir):seal('from %d'))"):format(i), { [ENV] = false })
    end)
    local v = vault.open(dir)
    for i, r in ipairs(results) do
      T.eq(r.code, 0, "racer " .. i .. ": " .. r.stderr)
      local value, err = v:unseal(r.stdout)
      T.eq(err, nil, "racer " .. i .. "'s value opens with the key on disk")
      T.eq(value, "from " .. i)
    end
    T.eq(table.concat(fs.list(dir), ","), "state.key", "one key file, no temp files")
  end)
end, { timeout = 120 })

T.test("STAGEHOST_STATE_KEY is used instead of a key file", function()
  with_dir(function(dir)
    local key = new_key()
    local sealed = child(dir, [[
      local v = vault.open(dir)
      io.write(v.source, '\n', v:seal({ token = 's3cr3t-deploy-token', n = 42 }, 'run-1/deploy'))
    ]], { [ENV] = key })
    T.eq(sealed.code, 0, sealed.stderr)
    local source, text = sealed.stdout:match("^([^\n]*)\n(.*)$")
    T.eq(source, ENV, "the key's source")
    T.ok(vault.is_sealed(text), "sealed text: " .. sealed.stdout)
    T.eq(fs.exists(dir .. "/state.key"), false, "no key file made")

    local code = "local v, err = vault.open(dir):unseal(io.read('a'), 'run-1/deploy') "
      .. "if v then io.write(v.token, ' ', v.n) else io.write(err) end"
    local same = child(dir, code, { [ENV] = key:upper() }, text)
    T.eq(same.code, 0, same.stderr)
    T.eq(same.stdout, "s3cr3t-deploy-token 42", "the same key (in upper case) opens it")

    local other = child(dir, code, { [ENV] = new_key() }, text)
    T.eq(other.code, 0, other.stderr)
    T.has(other.stdout, "does not open with the key from STAGEHOST_STATE_KEY", "another key")
    T.has(other.stdout, "sealed with another key")

    -- and the key file of this directory (made now) is another key again
    unseal_refused(vault.open(dir), text, "run-1/deploy", "set STAGEHOST_STATE_KEY to the key it was written with",
      "EBADMSG", "the key file's key does not open it")
  end)
end)

T.test("a bad STAGEHOST_STATE_KEY is one exit-2 line naming the variable, never its value", function()
  with_dir(function(dir)
    local key = new_key()
    for what, value in pairs {
      ["too short"] = "abc",
      ["63 digits"] = key:sub(1, 63),
      ["65 digits"] = key .. "0",
      ["not hex"] = ("g"):rep(64),
      ["0x prefix"] = "0x" .. key:sub(1, 62),
      ["trailing newline"] = key .. "\n",
      ["empty"] = "",
    } do
      local r = child(dir, "vault.open(dir) print('opened')", { [ENV] = value })
      T.eq(r.code, 2, what .. ": exit code")
      T.eq(r.stdout, "", what .. ": nothing opened")
      T.match(r.stderr, "^[^\n]+\n$", what .. ": one line")
      T.has(r.stderr, "STAGEHOST_STATE_KEY must be 64 hex digits", what)
      T.has(r.stderr, "unset it to use " .. dir .. "/state.key", what .. ": what to do")
      if #value >= 3 then T.no_match(r.stderr, (value:gsub("%p", "%%%0")), what .. ": the value is not shown") end
      T.no_match(r.stderr, "%*%*%*", what .. ": nor shown masked")
    end
    T.eq(fs.exists(dir .. "/state.key"), false, "no key file made")
  end)
end)

T.test("seal/unseal round trips values, bound to where they are stored", function()
  with_dir(function(dir)
    local v = vault.open(dir)
    local value = { token = "s3cr3t-deploy-token", url = "https://example.test/x", n = 42, ok = true,
      list = json.array { 1, 2, 3 }, nested = { a = { b = "c" } } }
    local text = v:seal(value, "run-1/deploy")
    T.eq(type(text), "string")
    T.match(text, "^sealed:v1:[%w+/]+=*$", "prefix and base64")
    T.no_match(text, "s3cr3t", "the secret does not show")
    T.ok(vault.is_sealed(text), "is_sealed")
    T.eq(vault.is_sealed("s3cr3t"), false)
    T.eq(vault.is_sealed(42), false)
    local back, err = v:unseal(text, "run-1/deploy")
    T.eq(err, nil)
    T.eq(json.encode(back), json.encode(value), "the same value back")
    T.ok(v:seal(value, "run-1/deploy") ~= text, "each seal differs")
    for _, scalar in ipairs { "a string", 3.5, -7, true, false, "" } do
      T.eq(v:unseal(v:seal(scalar)), scalar, "scalar " .. tostring(scalar))
    end
    -- where binds: the same text does not open for another place, or for none
    unseal_refused(v, text, "run-2/deploy", "'run%-2/deploy'", "EBADMSG", "another where, named in the message")
    T.eq(v:unseal(text), nil, "no where")
    T.eq(v:unseal(v:seal("x"), ""), "x", "an empty where is no where")
  end)
end)

T.test("tampered or damaged sealed text is refused with a message", function()
  with_dir(function(dir)
    local v = vault.open(dir)
    local text = v:seal({ token = "s3cr3t-deploy-token" }, "w")
    local body = text:sub(#"sealed:v1:" + 1)
    local function check(bad, pattern, code, what) unseal_refused(v, bad, "w", pattern, code, what) end
    -- one base64 character changed, at the start (nonce), middle (ciphertext) and end (tag)
    for _, at in ipairs { 3, #body // 2, #body - 2 } do
      local ch = body:sub(at, at)
      local swapped = "sealed:v1:" .. body:sub(1, at - 1) .. (ch == "A" and "B" or "A") .. body:sub(at + 1)
      check(swapped, "sealed with another key, or altered", "EBADMSG", "character " .. at .. " changed")
    end
    check(text:sub(1, 30), "is damaged: crypto%.open: truncated", "EBADMSG", "cut short")
    check(text:sub(1, -5), "sealed with another key, or altered", "EBADMSG", "last bytes cut")
    check("sealed:v1:not base64!", "is damaged: crypto%.base64_decode", "EBADMSG", "not base64")
    check(body, "is not sealed text", "EINVAL", "no prefix")
    check("sealed:v2:" .. body, "is not sealed text", "EINVAL", "another version")
    check("***", "is not sealed text", "EINVAL", "a masked value from before")
    T.eq(v:unseal(text, "w").token, "s3cr3t-deploy-token", "the original still opens")
  end)
end)

T.test("a value sealed with another key: the message says what to do", function()
  with_dir(function(dir)
    local a, b = vault.open(dir .. "/a"), vault.open(dir .. "/b")
    local err = unseal_refused(b, a:seal({ token = "s3cr3t" }, "run-1/deploy"), "run-1/deploy",
      "the sealed value of 'run%-1/deploy'", "EBADMSG", "another key")
    T.has(err, "does not open with the key from " .. dir .. "/b/state.key")
    T.has(err, "sealed with another key")
    T.has(err, "set STAGEHOST_STATE_KEY to the key it was written with")
  end)
end)

T.test("a key file others may read is refused, as ssh does, and left as it is", function()
  with_dir(function(dir)
    local content = new_key() .. "\n"
    for _, m in ipairs { { 420, "0644" }, { 416, "0640" }, { 388, "0604" }, { 392, "0610" } } do
      local state, path = with_key_file(dir, m[2], content, m[1])
      local msg = refused(state, "mode " .. m[2])
      T.has(msg, path, "names the file")
      T.has(msg, "mode " .. m[2], "names the mode")
      T.has(msg, "chmod 600 " .. path, "says what to do")
      T.eq(fs.read(path), content, "content unchanged")
      T.eq(select(3, fs.exists(path)), m[1], "mode unchanged")
    end
    -- owner-only modes are fine: 0400 (read-only) opens with the key in it
    local state = with_key_file(dir, "0400", content, 256)
    local text = vault.open(state):seal("x")
    local blob = crypto.base64_decode(text:sub(11))
    T.eq(crypto.open(crypto.hex_decode(content:sub(1, 64)), blob, "sealed:v1:"), '"x"', "sealed with the file's key")
  end)
end)

T.test("a key file with bad content is refused and never overwritten", function()
  with_dir(function(dir)
    local key = new_key()
    local cases = {
      { "empty", "" },
      { "text", "not a key\n" },
      { "63 digits", key:sub(1, 63) .. "\n" },
      { "two newlines", key .. "\n\n" },
      { "spaces", " " .. key .. "\n" },
    }
    for i, c in ipairs(cases) do
      local state, path = with_key_file(dir, "s" .. i, c[2], 384)
      local msg = refused(state, c[1])
      T.has(msg, path .. " does not hold a state key", c[1])
      T.has(msg, "restore it from a backup", c[1])
      T.eq(fs.read(path), c[2], c[1] .. ": content unchanged")
    end
    -- a directory where the key should be
    assert(fs.mkdir(dir .. "/d/state.key"))
    T.has(refused(dir .. "/d", "a directory"), "is a directory, not a key file")
    -- without a newline it is a key
    with_key_file(dir, "ok", key, 384)
    T.eq(vault.open(dir .. "/ok"):unseal(vault.open(dir .. "/ok"):seal(1)), 1)
  end)
end)

T.test("the binary reports an unusable key file in one line with exit code 2", function()
  with_dir(function(dir)
    assert(fs.write(dir .. "/state.key", new_key() .. "\n", { mode = 420 }))
    local r = child(dir, "vault.open(dir)", { [ENV] = false })
    T.eq(r.code, 2)
    T.match(r.stderr, "^[^\n]+\n$", "one line")
    T.has(r.stderr, dir .. "/state.key is accessible by others")
  end)
end)

T.test("wrong arguments raise naming the function", function()
  with_dir(function(dir)
    T.raises(vault.open, "bad argument #1 to 'vault.open' (state directory expected, got number)", 42)
    T.raises(vault.open, "bad argument #1 to 'vault.open' (state directory expected, got nil)")
    T.raises(vault.open, "got an empty string", "")
    local v = vault.open(dir)
    T.raises(function() return v:unseal(42) end, "bad argument #1 to 'unseal' (string expected, got number)")
    T.raises(function() return v:unseal("sealed:v1:", {}) end, "bad argument #2 to 'unseal' (string expected, got table)")
    T.raises(function() return v:seal("x", 42) end, "bad argument #2 to 'seal' (string expected, got number)")
    T.raises(function() return v:seal(print) end, "json.encode: cannot encode a function")
  end)
end)

T.run()
