local T = require("harness")
local crypto = require("stagehost.crypto")
local proc = require("stagehost.proc") -- here, not in a test: its first load starts lasting handles

-- Every expected value below was also recomputed on the development machine with
-- `printf ... | sha256sum`, `openssl dgst -sha256 -mac HMAC -macopt hexkey:...` and `base64`.

local function bytes(hex) return (assert(crypto.hex_decode(hex))) end
local function rep(byte, n) return string.char(byte):rep(n) end

-- Run check(case, i) for every case, then fail once listing all that failed (so one bug does
-- not hide another).
local function check_each(cases, check)
  local failures = {}
  for i, case in ipairs(cases) do
    local ok, err = pcall(check, case, i)
    if not ok then failures[#failures + 1] = ("#%d: %s"):format(i, tostring(err)) end
  end
  if #failures > 0 then error(#failures .. " of " .. #cases .. " checks failed:\n" .. table.concat(failures, "\n"), 2) end
end

-- decoding must fail with nil + a message naming the position
local function rejected(fn, input, what)
  local v, err = fn(input)
  T.eq(v, nil, ("%s(%q) value"):format(what, input))
  T.eq(type(err), "string", ("%s(%q) message"):format(what, input))
  T.has(err, what, "message names the function")
  return err
end

-- ---- SHA-256 ----

-- FIPS 180-2, Appendix B (B.1 one block, B.2 multi-block, B.3 one million "a")
local SHA256_FIPS = {
  { "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
  { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
  { ("a"):rep(1000000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
  -- the empty message is not in FIPS 180-2's appendix; this is NIST CAVP SHAVS SHA256ShortMsg, Len = 0
  { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
}

T.test("sha256: FIPS 180-2 example vectors", function()
  check_each(SHA256_FIPS, function(v)
    T.eq(crypto.sha256(v[1]), v[2], ("sha256 of %d bytes"):format(#v[1]))
    T.eq(crypto.sha256(v[1], "hex"), v[2], "explicit hex mode")
  end)
end)

T.test("sha256: raw output agrees with hex", function()
  for _, v in ipairs(SHA256_FIPS) do
    local raw = crypto.sha256(v[1], "raw")
    T.eq(#raw, 32, "raw length")
    T.eq(crypto.hex_encode(raw), v[2])
  end
  -- binary input with NUL bytes is hashed whole (sha256sum of printf 'a\0b' agrees)
  T.eq(crypto.sha256("a\0b"), "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138", "NUL does not end the input")
end)

-- ---- HMAC-SHA256 ----

-- RFC 4231, section 4 (test cases 1-7), HMAC-SHA-256 results
local HMAC_RFC4231 = {
  { key = rep(0x0b, 20), data = "Hi There",
    mac = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
  { key = "Jefe", data = "what do ya want for nothing?",
    mac = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
  { key = rep(0xaa, 20), data = rep(0xdd, 50),
    mac = "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
  { key = bytes "0102030405060708090a0b0c0d0e0f10111213141516171819", data = rep(0xcd, 50),
    mac = "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
  -- case 5: the RFC gives only the output truncated to 128 bits
  { key = rep(0x0c, 20), data = "Test With Truncation", mac = "a3b6167473100ee06e0c796c2955552b", truncated = true },
  { key = rep(0xaa, 131), data = "Test Using Larger Than Block-Size Key - Hash Key First",
    mac = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
  { key = rep(0xaa, 131),
    data = "This is a test using a larger than block-size key and a larger than block-size data. "
      .. "The key needs to be hashed before being used by the HMAC algorithm.",
    mac = "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
}

T.test("hmac_sha256: RFC 4231 test cases 1-7", function()
  check_each(HMAC_RFC4231, function(v, i)
    local mac = crypto.hmac_sha256(v.key, v.data)
    T.eq(#mac, 64, "case " .. i .. " hex length")
    if v.truncated then mac = mac:sub(1, 32) end
    T.eq(mac, v.mac, "RFC 4231 case " .. i)
    local raw = crypto.hmac_sha256(v.key, v.data, "raw")
    T.eq(#raw, 32, "case " .. i .. " raw length")
    T.eq(crypto.hex_encode(raw):sub(1, #v.mac), v.mac, "case " .. i .. " raw agrees")
  end)
end)

T.test("hmac_sha256: empty key and message", function()
  -- printf '' | openssl dgst -sha256 -hmac ''
  T.eq(crypto.hmac_sha256("", ""), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
end)

T.test("hmac_sha256: GitHub's documented webhook example verifies", function()
  -- docs.github.com, "Validating webhook deliveries", testing the webhook payload validation
  local secret = "It's a Secret to Everybody"
  local payload = "Hello, World!"
  local header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
  T.eq(crypto.equal("sha256=" .. crypto.hmac_sha256(secret, payload), header), true)
  T.eq(crypto.equal("sha256=" .. crypto.hmac_sha256(secret, payload .. "\n"), header), false, "altered payload")
  T.eq(crypto.equal("sha256=" .. crypto.hmac_sha256(secret .. "x", payload), header), false, "wrong secret")
end)

T.test("sha256/hmac_sha256: a bad mode raises naming it", function()
  T.raises(function() crypto.sha256("x", "base64") end, "invalid option 'base64'")
  T.raises(function() crypto.sha256("x", "RAW") end, "invalid option 'RAW'")
  T.raises(function() crypto.hmac_sha256("k", "x", "binary") end, "invalid option 'binary'")
  T.raises(function() crypto.sha256("x", {}) end, "bad argument #2 to 'sha256'")
  -- nil means the default
  T.eq(crypto.sha256("abc", nil), SHA256_FIPS[1][2])
end)

-- ---- random ----

T.test("random: lengths and bounds", function()
  for _, n in ipairs { 0, 1, 2, 15, 16, 17, 32, 1000, 65536, 1024 * 1024 } do
    local r = crypto.random(n)
    T.eq(type(r), "string")
    T.eq(#r, n, "random(" .. n .. ")")
  end
  T.raises(function() crypto.random(-1) end, "bad argument #1 to 'random'")
  T.raises(function() crypto.random(1024 * 1024 + 1) end, "bad argument #1 to 'random'")
  T.raises(function() crypto.random(math.maxinteger) end, "bad argument #1 to 'random'")
  T.raises(function() crypto.random(1.5) end, "bad argument #1 to 'random'")
  T.raises(function() crypto.random() end, "bad argument #1 to 'random'")
  T.raises(function() crypto.random("many") end, "bad argument #1 to 'random'")
end)

T.test("random: calls differ, 10000 x 16 bytes all distinct", function()
  T.ok(crypto.random(32) ~= crypto.random(32), "two calls differ")
  local seen, n = {}, 10000
  for i = 1, n do
    local r = crypto.random(16)
    T.eq(#r, 16)
    if seen[r] then error(("random(16) repeated a value after %d calls"):format(i)) end
    seen[r] = true
  end
  -- every byte value turns up in 1 MiB (each is missed with probability ~e^-4096)
  local big, counts = crypto.random(1024 * 1024), {}
  for i = 1, #big, 1 do counts[big:byte(i)] = true end
  for b = 0, 255 do T.ok(counts[b], "byte " .. b .. " occurs") end
end)

-- ---- equal ----

T.test("equal: constant-time comparison results", function()
  T.eq(crypto.equal("abc", "abc"), true)
  T.eq(crypto.equal("abc", "abd"), false)
  T.eq(crypto.equal("abc", "xbc"), false)
  T.eq(crypto.equal("abc", "ab"), false, "different lengths")
  T.eq(crypto.equal("ab", "abc"), false, "different lengths")
  T.eq(crypto.equal("", ""), true, "empty")
  T.eq(crypto.equal("", "a"), false, "empty vs one byte")
  T.eq(crypto.equal("a\0b", "a\0b"), true, "NUL bytes")
  T.eq(crypto.equal("a\0b", "a\0c"), false, "difference after a NUL")
  local mac = crypto.hmac_sha256("k", "m", "raw")
  T.eq(crypto.equal(mac, crypto.hmac_sha256("k", "m", "raw")), true)
  T.eq(crypto.equal(mac, crypto.hmac_sha256("k", "n", "raw")), false)
end)

-- ---- base64 / base64url ----

-- RFC 4648, section 10 (test vectors for BASE64); base64url has the same characters here,
-- without the padding.
local B64_RFC4648 = {
  { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
  { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
}

T.test("base64: RFC 4648 section 10 vectors both ways", function()
  for _, v in ipairs(B64_RFC4648) do
    T.eq(crypto.base64_encode(v[1]), v[2], "encode " .. v[1])
    T.eq(crypto.base64_decode(v[2]), v[1], "decode " .. v[2])
    local url = v[2]:gsub("=", "")
    T.eq(crypto.base64url_encode(v[1]), url, "url encode " .. v[1])
    T.eq(crypto.base64url_decode(url), v[1], "url decode " .. url)
    -- lenient forms: missing padding, and padding in base64url
    T.eq(crypto.base64_decode(url), v[1], "decode without padding " .. url)
    T.eq(crypto.base64url_decode(v[2]), v[1], "url decode with padding " .. v[2])
  end
end)

T.test("base64: the two alphabets differ in '+/' vs '-_'", function()
  -- bytes fb ff: `printf '\373\377' | base64` gives +/8=, `basenc --base64url` -_8=
  T.eq(crypto.base64_encode("\xfb\xff"), "+/8=")
  T.eq(crypto.base64url_encode("\xfb\xff"), "-_8")
  T.eq(crypto.base64_decode("+/8="), "\xfb\xff")
  T.eq(crypto.base64url_decode("-_8"), "\xfb\xff")
  T.match(rejected(crypto.base64_decode, "-_8=", "base64_decode"), "position 1")
  T.match(rejected(crypto.base64url_decode, "+/8", "base64url_decode"), "position 1")
  T.match(rejected(crypto.base64url_decode, "-/8", "base64url_decode"), "position 2")
end)

T.test("base64: round trips of all byte values and random strings", function()
  local all = {}
  for b = 0, 255 do all[#all + 1] = string.char(b) end
  all = table.concat(all)
  for _, s in ipairs { all, all:reverse(), all .. all:sub(1, 1), all .. all:sub(1, 2) } do
    local enc = crypto.base64_encode(s)
    T.no_match(enc, "[^A-Za-z0-9+/=]", "standard alphabet")
    T.eq(crypto.base64_decode(enc), s)
    local url = crypto.base64url_encode(s)
    T.no_match(url, "[^A-Za-z0-9_%-]", "url alphabet, no padding")
    T.eq(crypto.base64url_decode(url), s)
  end
  for n = 0, 100 do
    local s = crypto.random(n)
    local enc = crypto.base64_encode(s)
    T.eq(#enc, (n + 2) // 3 * 4, "padded length for " .. n)
    T.eq(crypto.base64_decode(enc), s, "round trip of " .. n .. " bytes")
    local url = crypto.base64url_encode(s)
    T.eq(url, (enc:gsub("+", "-"):gsub("/", "_"):gsub("=", "")), "url form of " .. n .. " bytes")
    T.eq(crypto.base64url_decode(url), s, "url round trip of " .. n .. " bytes")
  end
  -- large enough to cross the C side's chunking several times, with a partial last group
  local big = crypto.random(200001)
  T.eq(crypto.base64_decode(crypto.base64_encode(big)), big, "200001 bytes")
  T.eq(crypto.base64url_decode(crypto.base64url_encode(big)), big, "200001 bytes, url")
end)

T.test("base64: agrees with base64(1) on this machine", function()
  -- big enough for several of the decoder's chunks, and 100001 % 3 ~= 0 for padding
  local s = crypto.random(100001)
  local r = proc.run { "base64", "-w", "0", stdin = s }
  T.ok(r.ok, "base64 ran")
  T.eq(crypto.base64_encode(s), r.stdout)
  -- and GNU's wrapped output (76 columns, newline-terminated) decodes
  r = proc.run { "base64", stdin = s }
  T.ok(r.stdout:find("\n", 1, true), "wrapped")
  T.eq(crypto.base64_decode(r.stdout), s)
end)

T.test("base64: whitespace and newlines are ignored", function()
  T.eq(crypto.base64_decode("Zm9v\nYmFy\n"), "foobar")
  T.eq(crypto.base64_decode("  Zm9v YmE=\r\n"), "fooba")
  T.eq(crypto.base64_decode("Zm9vYg=\n="), "foob", "split padding")
  T.eq(crypto.base64_decode("\tZ\fm\v8"), "fo", "all ASCII whitespace, no padding")
  T.eq(crypto.base64_decode(" \n "), "", "only whitespace")
  T.eq(crypto.base64url_decode("Zm9v\nYmE"), "fooba")
end)

T.test("base64: invalid input is rejected with a position", function()
  check_each({
    -- input, pattern the message must match
    { "Zg=", "incomplete padding at position 4" },
    { "Z===", "unexpected padding at position 2" },
    { "=Zg=", "unexpected padding at position 1" },
    { "Zg===", "unexpected padding at position 5" },
    { "Zm9v=", "unexpected padding at position 5" },
    { "Zg==Zg==", "data after padding at position 5" },
    { "Zg=a", "data after padding at position 4" },
    { "Z", "lone character at position 1" },
    { "Zm9vY", "lone character at position 5" },
    { "Zm9vY\n", "lone character at position 5" },
    { "Zm9v!", "invalid character at position 5 %('!'%)" },
    { "Zm.v", "invalid character at position 3" },
    { "Zm9\0v", "invalid character at position 4 %(byte 0x00%)" },
    { "Zm9v\xc3\xa9", "invalid character at position 5 %(byte 0xc3%)" },
    { "Zm9v-_", "invalid character at position 5" },
    { "=", "unexpected padding at position 1" },
    { "====", "unexpected padding at position 1" },
  }, function(c)
    T.match(rejected(crypto.base64_decode, c[1], "base64_decode"), c[2], ("%q"):format(c[1]))
  end)
  T.match(rejected(crypto.base64url_decode, "Zg=", "base64url_decode"), "incomplete padding")
  T.match(rejected(crypto.base64url_decode, "Z", "base64url_decode"), "lone character")
  T.match(rejected(crypto.base64url_decode, "ab.c", "base64url_decode"), "position 3")
end)

-- ---- hex ----

T.test("hex: round trips, case, and invalid input", function()
  T.eq(crypto.hex_encode(""), "")
  T.eq(crypto.hex_decode(""), "")
  T.eq(crypto.hex_encode("\0\1\xab\xff"), "0001abff")
  local all = {}
  for b = 0, 255 do all[#all + 1] = string.char(b) end
  all = table.concat(all)
  local hex = crypto.hex_encode(all)
  T.eq(#hex, 512)
  T.no_match(hex, "[^0-9a-f]", "lower case")
  T.eq(crypto.hex_decode(hex), all)
  T.eq(crypto.hex_decode(hex:upper()), all, "upper case accepted")
  T.eq(crypto.hex_decode("aBcD"), "\xab\xcd", "mixed case")
  for n = 0, 64 do
    local s = crypto.random(n)
    T.eq(crypto.hex_decode(crypto.hex_encode(s)), s)
  end
  local v, err = crypto.hex_decode("abc")
  T.eq(v, nil)
  T.match(err, "hex_decode: odd number of digits")
  T.match(rejected(crypto.hex_decode, "zz", "hex_decode"), "invalid hex digit at position 1 %('z'%)")
  T.match(rejected(crypto.hex_decode, "0g", "hex_decode"), "position 2")
  T.match(rejected(crypto.hex_decode, "ab cd", "hex_decode"), "position 3 %(byte 0x20%)")
  T.match(rejected(crypto.hex_decode, "ab\0c", "hex_decode"), "position 3 %(byte 0x00%)")
  T.match(rejected(crypto.hex_decode, "0x41", "hex_decode"), "position 2")
end)

-- ---- AES-256-GCM seal / open ----

-- blob = version 0x01 || nonce (12) || ciphertext || tag (16)
local OVERHEAD = 1 + 12 + 16

T.test("seal/open: round trips of empty to 1 MiB plaintexts, with and without aad", function()
  local key = crypto.random(32)
  for _, n in ipairs { 0, 1, 15, 16, 17, 255, 4096, 1024 * 1024 + 3 } do
    local pt = crypto.random(math.min(n, 1024 * 1024)) .. ("z"):rep(n - 1024 * 1024)
    local blob = crypto.seal(key, pt)
    T.eq(#blob, n + OVERHEAD, "blob length for " .. n .. " bytes")
    T.eq(blob:byte(1), 1, "version byte")
    T.ok(crypto.open(key, blob) == pt, "round trip of " .. n .. " bytes")
    local with_aad = crypto.seal(key, pt, "run-1/deploy")
    T.ok(crypto.open(key, with_aad, "run-1/deploy") == pt, "round trip with aad, " .. n .. " bytes")
  end
  T.eq(crypto.open(key, crypto.seal(key, "")), "", "empty plaintext")
  T.eq(crypto.open(key, crypto.seal(key, "a\0b\0")), "a\0b\0", "NUL bytes")
  -- an empty aad is no aad (GCM authenticates zero bytes either way)
  T.eq(crypto.open(key, crypto.seal(key, "x", "")), "x")
  T.eq(crypto.open(key, crypto.seal(key, "x"), ""), "x")
  -- a fresh random nonce each time: the same plaintext never seals the same way twice
  local a, b = crypto.seal(key, "same"), crypto.seal(key, "same")
  T.ok(a ~= b, "two seals differ")
  T.ok(a:sub(2, 13) ~= b:sub(2, 13), "their nonces differ")
  T.eq(crypto.open(key, a), "same")
  T.eq(crypto.open(key, b), "same")
  -- the plaintext does not show through
  local secret = "hunter2-the-deploy-token"
  T.no_match(crypto.seal(key, secret), "hunter2", "ciphertext hides the plaintext")
end)

-- "The Galois/Counter Mode of Operation (GCM)", McGrew and Viega (the submission NIST SP 800-38D
-- is based on), appendix B, test cases 13-16: AES-256, 96-bit IV. python3's
-- cryptography.hazmat AESGCM gives the same ciphertexts and tags.
-- Case 16 is case 15 (same key and IV) with an aad and only the first 60 bytes of plaintext.
local GCM_KEY_15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
local GCM_IV_15 = "cafebabefacedbaddecaf888"
local GCM_PT_15 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
  .. "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
local GCM_CT_15 = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
  .. "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
local GCM_SPEC = {
  { case = 13, key = ("00"):rep(32), iv = ("00"):rep(12), pt = "", aad = "", ct = "",
    tag = "530f8afbc74536b9a963b4f1c4cb738b" },
  { case = 14, key = ("00"):rep(32), iv = ("00"):rep(12), pt = ("00"):rep(16), aad = "",
    ct = "cea7403d4d606b6e074ec5d3baf39d18", tag = "d0d1c8a799996bf0265b98b5d48ab919" },
  { case = 15, key = GCM_KEY_15, iv = GCM_IV_15, pt = GCM_PT_15, aad = "", ct = GCM_CT_15,
    tag = "b094dac5d93471bdec1a502270e3cc6c" },
  { case = 16, key = GCM_KEY_15, iv = GCM_IV_15, pt = GCM_PT_15:sub(1, 120),
    aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2", ct = GCM_CT_15:sub(1, 120),
    tag = "76fc6ece0f4e1768cddf8853bb2d551b" },
}

T.test("open: AES-256-GCM known answers (GCM spec test cases 13-16) in the blob format", function()
  check_each(GCM_SPEC, function(v)
    local key, aad = bytes(v.key), bytes(v.aad)
    local blob = "\1" .. bytes(v.iv) .. bytes(v.ct) .. bytes(v.tag)
    local pt, err, code = crypto.open(key, blob, v.aad ~= "" and aad or nil)
    T.eq(err, nil, "case " .. v.case .. " message")
    T.eq(code, nil, "case " .. v.case .. " code")
    T.eq(crypto.hex_encode(pt or "?"), v.pt, "case " .. v.case .. " plaintext")
    -- the same blob with its tag's last bit flipped is refused
    local bad = blob:sub(1, -2) .. string.char(blob:byte(-1) ~ 1)
    T.eq(crypto.open(key, bad, aad), nil, "case " .. v.case .. " with a flipped tag bit")
    if v.aad ~= "" then T.eq(crypto.open(key, blob), nil, "case " .. v.case .. " without its aad") end
  end)
end)

-- python3 with the cryptography package, when this machine has one (Debian: python3-cryptography)
local function python_aesgcm()
  for _, py in ipairs { "/usr/bin/python3", "python3" } do
    local ok, r = pcall(proc.run, { py, "-c", "import cryptography.hazmat.primitives.ciphers.aead", timeout = 30 })
    if ok and r.ok then return py end
  end
end

-- Encrypts (e) or decrypts (d) with AESGCM; arguments and output in hex.
local PY_GCM = [==[
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
op, key, nonce, data, aad = sys.argv[1], *[bytes.fromhex(a) for a in sys.argv[2:]]
g = AESGCM(key)
out = g.encrypt(nonce, data, aad or None) if op == "e" else g.decrypt(nonce, data, aad or None)
print(out.hex())
]==]

T.test("seal/open: agree with python's cryptography AESGCM both ways", function()
  local py = python_aesgcm()
  if not py then
    io.stdout:write("# python3 with the cryptography package is not installed: cross-check not run\n")
    return
  end
  local hex = crypto.hex_encode
  for _, n in ipairs { 0, 1, 16, 33, 1000 } do
    local key, nonce, pt, aad = crypto.random(32), crypto.random(12), crypto.random(n), n > 0 and crypto.random(n % 20 + 1) or ""
    -- python seals, we open
    local r = proc.run { py, "-c", PY_GCM, "e", hex(key), hex(nonce), hex(pt), hex(aad), timeout = 30 }
    T.ok(r.ok, "python encrypt: " .. r.stderr)
    local ct_tag = bytes(r.stdout:gsub("%s+$", ""))
    T.eq(crypto.hex_encode(crypto.open(key, "\1" .. nonce .. ct_tag, aad) or "?"), hex(pt), "open python's " .. n .. " bytes")
    -- we seal, python opens (the blob without its version byte is nonce || ciphertext || tag)
    local blob = crypto.seal(key, pt, aad)
    r = proc.run { py, "-c", PY_GCM, "d", hex(key), hex(blob:sub(2, 13)), hex(blob:sub(14)), hex(aad), timeout = 30 }
    T.ok(r.ok, "python decrypt of our " .. n .. " bytes: " .. r.stderr)
    T.eq(r.stdout:gsub("%s+$", ""), hex(pt), "python opens our " .. n .. " bytes")
  end
end)

-- open must fail with nil, a message naming crypto.open, and EBADMSG
local function refused(pattern, key, blob, aad, what)
  local pt, err, code = crypto.open(key, blob, aad)
  T.eq(pt, nil, what)
  T.match(err, "^crypto%.open: ", what)
  T.match(err, pattern, what)
  T.eq(code, "EBADMSG", what)
end

T.test("open: a flipped bit in the version, nonce, ciphertext or tag is refused", function()
  local key = crypto.random(32)
  local pt = "deploy token 0123456789abcdef"
  local blob = crypto.seal(key, pt, "aad")
  T.eq(crypto.open(key, blob, "aad"), pt, "the original opens")
  local flips = {}
  for i = 1, #blob do
    for _, bit in ipairs { 0, 7 } do flips[#flips + 1] = { byte = i, bit = bit } end
  end
  check_each(flips, function(f)
    local i, bit = f.byte, f.bit
    local bad = blob:sub(1, i - 1) .. string.char(blob:byte(i) ~ (1 << bit)) .. blob:sub(i + 1)
    local part = i == 1 and "version" or i <= 13 and "nonce" or i <= #blob - 16 and "ciphertext" or "tag"
    local pattern = i == 1 and "unknown blob version" or "authentication failed"
    refused(pattern, key, bad, "aad", ("bit %d of byte %d (%s)"):format(bit, i, part))
  end)
end)

T.test("open: another key, another or missing aad, a truncated or extended blob", function()
  local key = crypto.random(32)
  local blob = crypto.seal(key, "the secret", "run-1/deploy")
  refused("authentication failed", crypto.random(32), blob, "run-1/deploy", "another key")
  local other = key:sub(1, 31) .. string.char(key:byte(32) ~ 1)
  refused("authentication failed", other, blob, "run-1/deploy", "a key one bit off")
  refused("authentication failed", key, blob, "run-1/deplox", "another aad")
  refused("authentication failed", key, blob, nil, "no aad")
  refused("authentication failed", key, crypto.seal(key, "x"), "aad", "an aad the seal did not have")
  for n = 0, #blob - 1 do
    refused(n < OVERHEAD and "truncated blob %(" .. n .. " bytes" or "authentication failed", key, blob:sub(1, n),
      "run-1/deploy", "cut to " .. n .. " bytes")
  end
  refused("authentication failed", key, blob .. "\0", "run-1/deploy", "a byte appended")
  refused("unknown blob version 2", key, "\2" .. blob:sub(2), "run-1/deploy", "version 2")
  T.eq(crypto.open(key, blob, "run-1/deploy"), "the secret", "the original still opens")
end)

T.test("seal/open: a key of other than 32 bytes raises naming the function", function()
  for _, n in ipairs { 0, 5, 16, 31, 33, 64 } do
    local k = ("k"):rep(n)
    T.raises(function() crypto.seal(k, "x") end, ("bad argument #1 to '[%%w%%.]*seal' %%(32%%-byte key expected, got %d bytes%%)"):format(n))
    T.raises(function() crypto.open(k, ("x"):rep(40)) end, ("bad argument #1 to '[%%w%%.]*open' %%(32%%-byte key expected, got %d bytes%%)"):format(n))
  end
  -- the hex form of a key is not the key
  T.raises(function() crypto.seal(crypto.hex_encode(crypto.random(32)), "x") end, "got 64 bytes")
end)

-- ---- misuse ----

T.test("wrong argument types raise naming the function", function()
  check_each({
    { "sha256", 1, function() crypto.sha256(nil) end },
    { "sha256", 1, function() crypto.sha256({}) end },
    { "hmac_sha256", 1, function() crypto.hmac_sha256(nil, "m") end },
    { "hmac_sha256", 2, function() crypto.hmac_sha256("k", true) end },
    { "random", 1, function() crypto.random({}) end },
    { "equal", 1, function() crypto.equal(nil, "a") end },
    { "equal", 2, function() crypto.equal("a", {}) end },
    { "base64_encode", 1, function() crypto.base64_encode() end },
    { "base64_decode", 1, function() crypto.base64_decode(false) end },
    { "base64url_encode", 1, function() crypto.base64url_encode({}) end },
    { "base64url_decode", 1, function() crypto.base64url_decode(print) end },
    { "hex_encode", 1, function() crypto.hex_encode(nil) end },
    { "hex_decode", 1, function() crypto.hex_decode(io.stdout) end },
    { "seal", 1, function() crypto.seal(nil, "x") end },
    { "seal", 2, function() crypto.seal(("k"):rep(32), nil) end },
    { "seal", 2, function() crypto.seal(("k"):rep(32), {}) end },
    { "seal", 3, function() crypto.seal(("k"):rep(32), "x", {}) end },
    { "open", 1, function() crypto.open(42.5, "x") end },
    { "open", 2, function() crypto.open(("k"):rep(32)) end },
    { "open", 3, function() crypto.open(("k"):rep(32), ("x"):rep(40), true) end },
  }, function(c)
    T.raises(c[3], ("bad argument #%d to '%s'"):format(c[2], c[1]))
  end)
  -- called without a name at hand (through pcall) the message still names it
  local ok, err = pcall(crypto.sha256, {})
  T.eq(ok, false)
  T.match(err, "bad argument #1 to '[%w%.]*sha256'")
end)

T.test("require paths give the same module", function()
  T.eq(require "stagehost.core.crypto", crypto)
  for _, name in ipairs { "sha256", "hmac_sha256", "random", "equal", "base64_encode", "base64_decode",
    "base64url_encode", "base64url_decode", "hex_encode", "hex_decode", "seal", "open" } do
    T.eq(type(crypto[name]), "function", name)
  end
end)

T.run()
