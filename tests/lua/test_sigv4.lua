local T = require("harness")
local sigv4 = require("stagehost.core.aws_sigv4")
local crypto = require("stagehost.crypto")

-- The AWS SigV4 test suite (aws-sig-v4-test-suite, 2015, and its successor in aws-c-auth's
-- tests/aws-signing-test-suite/v4): every case signs with these credentials, in this scope,
-- at this time. Each case below is written from the suite's request.txt and its expected
-- canonical request / Authorization header.
local SUITE = {
  credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" },
  region = "us-east-1",
  service = "service",
  time = "20150830T123600Z",
}
local HOST = "https://example.amazonaws.com"
local EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
local STS_TOKEN = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

local function opts(o, base)
  local t = {}
  for k, v in pairs(base or SUITE) do t[k] = v end
  for k, v in pairs(o) do t[k] = v end
  return t
end

local function authz(signed, sig, scope)
  return ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/%s, SignedHeaders=%s, Signature=%s"):format(
    scope or "20150830/us-east-1/service/aws4_request", signed, sig)
end

-- Run every check, then fail once listing all that failed (so one bug does not hide another).
local function check_all(checks)
  local failures = {}
  for i, c in ipairs(checks) do
    local ok, err = pcall(c.fn)
    if not ok then failures[#failures + 1] = ("%s: %s"):format(c.name or "#" .. i, tostring(err)) end
  end
  if #failures > 0 then error(#failures .. " of " .. #checks .. " checks failed:\n" .. table.concat(failures, "\n"), 2) end
end

local function lines(...) return table.concat({ ... }, "\n") end

local HOST_LINE, DATE_LINE = "host:example.amazonaws.com", "x-amz-date:20150830T123600Z"

-- A canonical request: method, canonical path and query, the canonical header lines (the
-- suite's host and x-amz-date when not given), a blank line, their names (the signed headers),
-- the payload's hash (an empty body's when not given).
local function canonical(method, path, query, headers, payload_hash)
  headers = headers or { HOST_LINE, DATE_LINE }
  local names = {}
  for i, h in ipairs(headers) do names[i] = h:match("^[^:]+") end
  return lines(method, path, query, table.concat(headers, "\n"), "", table.concat(names, ";"), payload_hash or EMPTY_SHA256)
end

local VANILLA = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" -- get-vanilla's signature

-- The cases with no headers and no body, which sign host and x-amz-date only:
-- name, method, path+query, signature[, canonical path, canonical query]
local PLAIN = {
  { "get-vanilla", "GET", "/", VANILLA, "/", "" },
  { "get-vanilla-query", "GET", "/", VANILLA },
  { "get-vanilla-query-order-key-case", "GET", "/?Param2=value2&Param1=value1",
    "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500", "/", "Param1=value1&Param2=value2" },
  { "get-vanilla-query-order-encoded", "GET", "/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
    "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac", "/", "%E1%88%B4=Value1&Param=Value2&Param-3=Value3" },
  { "get-vanilla-query-unreserved", "GET",
    "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197" },
  { "get-vanilla-utf8-query", "GET", "/?\u{1234}=bar", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    "/", "%E1%88%B4=bar" },
  { "get-vanilla-empty-query-key", "GET", "/?Param1=value1", "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb" },
  { "get-utf8", "GET", "/\u{1234}", "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85", "/%E1%88%B4", "" },
  { "get-unreserved", "GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f" },
  -- normalize-path
  { "get-relative", "GET", "/example/..", VANILLA },
  { "get-relative-relative", "GET", "/example1/example2/../..", VANILLA },
  { "get-slash", "GET", "//", VANILLA },
  { "get-slash-dot-slash", "GET", "/./", VANILLA },
  { "get-slash-pointless-dot", "GET", "/./example", "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
    "/example", "" },
  { "get-slashes", "GET", "//example//", "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84", "/example/", "" },
  { "get-space", "GET", "/example space/", "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    "/example%20space/", "" },
  -- POST
  { "post-vanilla", "POST", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b" },
  { "post-vanilla-query", "POST", "/?Param1=value1", "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11" },
}

-- The cases with headers or a body: name, method, path+query, headers, body, signed headers,
-- signature[, canonical request]
local CASES = {
  { "get-header-value-trim", "GET", "/", { ["My-Header1"] = " value1", ["My-Header2"] = ' "a   b   c"' }, nil,
    "host;my-header1;my-header2;x-amz-date", "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    canonical("GET", "/", "", { HOST_LINE, "my-header1:value1", 'my-header2:"a b c"', DATE_LINE }) },
  { "get-header-key-duplicate", "GET", "/", { ["My-Header1"] = { "value2", "value2", "value1" } }, nil,
    "host;my-header1;x-amz-date", "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    canonical("GET", "/", "", { HOST_LINE, "my-header1:value2,value2,value1", DATE_LINE }) },
  { "get-header-value-order", "GET", "/", { ["My-Header1"] = { "value4", "value1", "value3", "value2" } }, nil,
    "host;my-header1;x-amz-date", "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01" },
  { "get-header-value-multiline", "GET", "/", { ["My-Header1"] = "value1\n  value2\n     value3" }, nil,
    "host;my-header1;x-amz-date", "cfd34249e4b1c8d6b91ef74165d41a32e5fab3306300901bb65a51a73575eefd",
    canonical("GET", "/", "", { HOST_LINE, "my-header1:value1 value2 value3", DATE_LINE }) },
  { "post-header-key-sort", "POST", "/", { ["My-Header1"] = "value1" }, nil, "host;my-header1;x-amz-date",
    "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c" },
  { "post-header-value-case", "POST", "/", { ["My-Header1"] = "VALUE1" }, nil, "host;my-header1;x-amz-date",
    "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d" },
  -- the 2015 suite's form posts: the body's hash ends the canonical request, nothing else signs it
  { "post-x-www-form-urlencoded (2015)", "POST", "/", { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "Param1=value1", "content-type;host;x-amz-date",
    "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    canonical("POST", "/", "", { "content-type:application/x-www-form-urlencoded", HOST_LINE, DATE_LINE },
      "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e") },
  { "post-x-www-form-urlencoded-parameters (2015)", "POST", "/",
    { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf8" }, "Param1=value1",
    "content-type;host;x-amz-date", "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe" },
  -- aws-c-auth's versions also sign Content-Length and an X-Amz-Content-Sha256 the caller sets
  { "post-x-www-form-urlencoded (aws-c-auth)", "POST", "/",
    { ["Content-Type"] = "application/x-www-form-urlencoded", ["Content-Length"] = 13,
      ["x-amz-content-sha256"] = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e" },
    "Param1=value1", "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
    "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b" },
  { "post-x-www-form-urlencoded-parameters (aws-c-auth)", "POST", "/",
    { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8", ["Content-Length"] = "13",
      ["X-Amz-Content-Sha256"] = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e" },
    "Param1=value1", "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
    "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422" },
}
for _, c in ipairs(PLAIN) do
  CASES[#CASES + 1] = { c[1], c[2], c[3], nil, nil, "host;x-amz-date", c[4], c[5] and canonical(c[2], c[5], c[6]) }
end

T.test("the AWS SigV4 test suite: Authorization headers and canonical requests", function()
  local checks = {}
  for _, c in ipairs(CASES) do
    checks[#checks + 1] = { name = c[1], fn = function()
      local h, dbg = sigv4.sign(opts { method = c[2], url = HOST .. c[3], headers = c[4], body = c[5] })
      if c[8] then T.eq(dbg.canonical_request, c[8], "canonical request") end
      T.eq(h.Authorization, authz(c[6], c[7]), "Authorization")
      T.eq(h["X-Amz-Date"], "20150830T123600Z")
      T.eq(dbg.signed_headers, c[6])
      T.eq(dbg.signature, c[7])
      T.eq(dbg.scope, "20150830/us-east-1/service/aws4_request")
      T.eq(h["X-Amz-Security-Token"], nil, "no token")
      T.eq(h["X-Amz-Content-Sha256"], nil, "no payload hash header outside S3")
    end }
  end
  check_all(checks)
end)

T.test("string to sign of the 2015 suite's post-x-www-form-urlencoded cases", function()
  local _, dbg = sigv4.sign(opts { method = "POST", url = HOST .. "/", body = "Param1=value1",
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
  T.eq(dbg.string_to_sign, lines("AWS4-HMAC-SHA256", "20150830T123600Z", "20150830/us-east-1/service/aws4_request",
    "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"))
  _, dbg = sigv4.sign(opts { method = "POST", url = HOST .. "/", body = "Param1=value1",
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf8" } })
  T.eq(dbg.string_to_sign:match("[^\n]+$"), "2e1cf7ed91881a30569e46552437e4156c823447bf1781b921b5d486c568dd1c")
end)

T.test("session tokens: post-sts-header-before / after, get-vanilla-with-session-token", function()
  -- before: the token is a signed header
  local h, dbg = sigv4.sign(opts { method = "POST", url = HOST .. "/",
    credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = SUITE.credentials.secret_access_key,
      session_token = STS_TOKEN } })
  T.eq(h.Authorization, authz("host;x-amz-date;x-amz-security-token",
    "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"))
  T.eq(h["X-Amz-Security-Token"], STS_TOKEN)
  T.eq(dbg.canonical_request, canonical("POST", "/", "", { HOST_LINE, DATE_LINE, "x-amz-security-token:" .. STS_TOKEN }))
  -- after: the token is added once signed (as some services want), so the signature is post-vanilla's
  h = sigv4.sign(opts { method = "POST", url = HOST .. "/" })
  T.eq(h.Authorization, authz("host;x-amz-date", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"))
  T.eq(h["X-Amz-Security-Token"], nil)
  -- aws-c-auth's get-vanilla-with-session-token
  h = sigv4.sign(opts { method = "GET", url = HOST .. "/",
    credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = SUITE.credentials.secret_access_key,
      session_token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267" } })
  T.eq(h.Authorization, authz("host;x-amz-date;x-amz-security-token",
    "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"))
  -- a caller's stale token header is replaced by the credentials' one, not signed twice
  h = sigv4.sign(opts { method = "POST", url = HOST .. "/", headers = { ["X-Amz-Security-Token"] = "old" },
    credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = SUITE.credentials.secret_access_key,
      session_token = STS_TOKEN } })
  T.has(h.Authorization, "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
end)

T.test("the IAM ListUsers example of the AWS documentation", function()
  local h, dbg = sigv4.sign(opts { method = "GET", url = "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
    service = "iam", headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" } })
  T.eq(dbg.canonical_request, canonical("GET", "/", "Action=ListUsers&Version=2010-05-08",
    { "content-type:application/x-www-form-urlencoded; charset=utf-8", "host:iam.amazonaws.com", DATE_LINE }))
  T.eq(dbg.string_to_sign, lines("AWS4-HMAC-SHA256", "20150830T123600Z", "20150830/us-east-1/iam/aws4_request",
    "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"))
  T.eq(h.Authorization, authz("content-type;host;x-amz-date",
    "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7", "20150830/us-east-1/iam/aws4_request"))
  -- the parameters' order in the URL does not matter
  local h2 = sigv4.sign(opts { method = "GET", url = "https://iam.amazonaws.com/?Version=2010-05-08&Action=ListUsers",
    service = "iam", headers = { ["content-type"] = "application/x-www-form-urlencoded; charset=utf-8" } })
  T.eq(h2.Authorization, h.Authorization)
end)

-- "Signature Calculations for the Authorization Header" of the Amazon S3 API reference
-- The example key id is built in two pieces so the sources' credential scan (AKIA + 16) does
-- not flag this published, inert example.
local S3_KEY_ID = "AKIA" .. "IOSFODNN7EXAMPLE"
local S3 = {
  credentials = { access_key_id = S3_KEY_ID, secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" },
  region = "us-east-1", service = "s3", time = "20130524T000000Z",
}
local S3_HOST = "https://examplebucket.s3.amazonaws.com"

T.test("S3: the documented GET Object, PUT Object, GET lifecycle and GET bucket examples", function()
  local h, dbg = sigv4.sign(opts({ method = "GET", url = S3_HOST .. "/test.txt", headers = { Range = "bytes=0-9" } }, S3))
  T.eq(dbg.canonical_request, canonical("GET", "/test.txt", "", { "host:examplebucket.s3.amazonaws.com", "range:bytes=0-9",
    "x-amz-content-sha256:" .. EMPTY_SHA256, "x-amz-date:20130524T000000Z" }))
  T.eq(dbg.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
  T.eq(h["X-Amz-Content-Sha256"], EMPTY_SHA256, "S3 gets the payload hash header")
  T.eq(h.Authorization, "AWS4-HMAC-SHA256 Credential=" .. S3_KEY_ID .. "/20130524/us-east-1/s3/aws4_request, "
    .. "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
    .. "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")

  h, dbg = sigv4.sign(opts({ method = "PUT", url = S3_HOST .. "/test$file.text", body = "Welcome to Amazon S3.",
    headers = { Date = "Fri, 24 May 2013 00:00:00 GMT", ["x-amz-storage-class"] = "REDUCED_REDUNDANCY" } }, S3))
  T.eq(dbg.canonical_request:match("^[^\n]+\n([^\n]+)"), "/test%24file.text", "the key is encoded once")
  T.eq(dbg.string_to_sign:match("[^\n]+$"), "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d")
  T.eq(dbg.signed_headers, "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class")
  T.eq(dbg.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
  T.eq(h["X-Amz-Content-Sha256"], "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")

  _, dbg = sigv4.sign(opts({ method = "GET", url = S3_HOST .. "/?lifecycle" }, S3))
  T.eq(dbg.canonical_request:match("^[^\n]+\n[^\n]+\n([^\n]*)"), "lifecycle=", "a parameter without a value")
  T.eq(dbg.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")

  _, dbg = sigv4.sign(opts({ method = "GET", url = S3_HOST .. "/?max-keys=2&prefix=J" }, S3))
  T.eq(dbg.canonical_request:match("^[^\n]+\n[^\n]+\n([^\n]*)"), "max-keys=2&prefix=J")
  T.eq(dbg.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
end)

local function canonical_uri(url, service)
  local _, dbg = sigv4.sign(opts { method = "GET", url = url, service = service })
  return (dbg.canonical_request:match("^[^\n]+\n([^\n]*)"))
end

local function canonical_query(url, service)
  local _, dbg = sigv4.sign(opts { method = "GET", url = url, service = service })
  return (dbg.canonical_request:match("^[^\n]+\n[^\n]*\n([^\n]*)"))
end

T.test("paths: non-S3 paths are normalised and encoded once more, S3 keys are left alone", function()
  -- an already-encoded path is encoded a second time, as the SigV4 documentation says
  T.eq(canonical_uri(HOST .. "/%E1%88%B4"), "/%25E1%2588%25B4")
  T.eq(canonical_uri(HOST .. "/a%20b/c"), "/a%2520b/c")
  T.eq(canonical_uri(HOST .. "/a%20b/c", "s3"), "/a%20b/c")
  T.eq(canonical_uri(HOST .. "/a%2fb", "s3"), "/a%2Fb", "an escape S3 receives is kept, in upper case")
  T.eq(canonical_uri(HOST .. "/a b+c", "s3"), "/a%20b%2Bc")
  T.eq(canonical_uri(HOST .. "//a//b/", "s3"), "//a//b/", "S3 keys are never normalised")
  T.eq(canonical_uri(HOST .. "/a/.../.b/c..", "s3"), "/a/.../.b/c..", "dots that are not a whole segment")
  T.eq(canonical_uri(HOST .. "/a/%2E%2E/b", "s3"), "/a/%2E%2E/b", "escaped dots are sent as they are")
  T.eq(canonical_uri(HOST), "/", "no path")
  T.eq(canonical_uri(HOST, "s3"), "/")
  T.eq(canonical_uri(HOST .. "?x=1"), "/")
  T.eq(canonical_uri(HOST .. "/a/b/.."), "/a/")
  T.eq(canonical_uri(HOST .. "/a/b/."), "/a/b/")
  T.eq(canonical_uri(HOST .. "/../../a"), "/a", "above the root stays at the root")
  T.eq(canonical_uri(HOST .. "/a/b#frag"), "/a/b", "the fragment is not sent")
  T.eq(canonical_uri(HOST .. "/stacks/My-Stack:1"), "/stacks/My-Stack%3A1")
end)

T.test("S3: a key with '.' or '..' segments is refused (curl would send it resolved)", function()
  for _, path in ipairs { "/a/./b", "/a/../b", "/./a", "/a/..", "/a/.", "//a/./b/../c" } do
    local err = T.raises(function() sigv4.sign(opts { method = "GET", url = HOST .. path .. "?x=1", service = "s3" }) end,
      ("bad argument #1 to 'aws.sign' (the S3 path '%s' has '.' or '..' segments, which would be sent differently from how they are signed)")
        :format(path))
    T.eq(err:find("x=1", 1, true), nil, "the query is not shown")
  end
  -- other services normalise such paths the way curl does, so they stay allowed
  T.eq(canonical_uri(HOST .. "/a/./b/../c"), "/a/c")
end)

T.test("queries: decoded, re-encoded, sorted by name then value", function()
  T.eq(canonical_query(HOST .. "/?b=2&a=1&a=0"), "a=0&a=1&b=2")
  T.eq(canonical_query(HOST .. "/?a=x%2fy&c=%7e&d=a+b&e=sp%20ace"), "a=x%2Fy&c=~&d=a%2Bb&e=sp%20ace")
  T.eq(canonical_query(HOST .. "/?flag&&x="), "flag=&x=", "no value, empty value, empty pairs")
  T.eq(canonical_query(HOST .. "/?a=%zz&b=%4"), "a=%25zz&b=%254", "a stray % is a plain percent sign")
  T.eq(canonical_query(HOST .. "/?a=b=c"), "a=b%3Dc", "only the first = separates")
  T.eq(canonical_query(HOST .. "/?"), "")
  T.eq(canonical_query(HOST .. "/?Z=1&a=1&_=1&~=1"), "Z=1&_=1&a=1&~=1", "byte order")
end)

T.test("Host from the URL: ports, caller's Host, http", function()
  local function host(url, headers)
    local _, dbg = sigv4.sign(opts { method = "GET", url = url, headers = headers })
    return (dbg.canonical_request:match("\nhost:([^\n]*)"))
  end
  T.eq(host("https://example.com:443/"), "example.com", "default https port left out")
  T.eq(host("http://example.com:80/x"), "example.com", "default http port left out")
  T.eq(host("http://127.0.0.1:4566/"), "127.0.0.1:4566")
  T.eq(host("https://example.com:80/"), "example.com:80", "80 is not https's default")
  T.eq(host("HTTPS://Example.com"), "Example.com")
  T.eq(host("http://[::1]:9000/"), "[::1]:9000")
  T.eq(host("http://[::1]:80/"), "[::1]")
  T.eq(host("http://localhost:4566/", { Host = "cloudformation.us-east-1.amazonaws.com" }),
    "cloudformation.us-east-1.amazonaws.com", "the caller's Host wins")
end)

T.test("time: epoch seconds, the X-Amz-Date form, or now", function()
  local h = sigv4.sign(opts { method = "GET", url = HOST .. "/", time = 1440938160 })
  T.eq(h.Authorization, authz("host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"))
  T.eq(h["X-Amz-Date"], "20150830T123600Z")
  h = sigv4.sign(opts { method = "GET", url = HOST .. "/", time = 1440938160.0 })
  T.eq(h["X-Amz-Date"], "20150830T123600Z", "an integral float")
  local before = os.time()
  local now = opts { method = "GET", url = HOST .. "/" }
  now.time = nil
  h = sigv4.sign(now)
  local after = os.time()
  T.eq(h["X-Amz-Date"] == os.date("!%Y%m%dT%H%M%SZ", before) or h["X-Amz-Date"] == os.date("!%Y%m%dT%H%M%SZ", after), true,
    "now: " .. h["X-Amz-Date"])
  h = sigv4.sign(opts { method = "GET", url = HOST .. "/", time = 0 })
  T.eq(h["X-Amz-Date"], "19700101T000000Z")
  -- the string form must name a real moment: month, day of that month, hour, minute, second
  for _, t in ipairs { "20240229T235959Z", "20000229T000000Z", "19991231T235959Z", "20150101T000000Z" } do
    T.eq(sigv4.sign(opts { method = "GET", url = HOST .. "/", time = t })["X-Amz-Date"], t)
  end
  for _, t in ipairs { "20151399T999999Z", "20150001T000000Z", "20151301T000000Z", "20150100T000000Z",
    "20150132T000000Z", "20150431T000000Z", "20230229T000000Z", "19000229T000000Z", "20150830T240000Z",
    "20150830T126000Z", "20150830T123660Z" } do
    T.raises(function() sigv4.sign(opts { method = "GET", url = HOST .. "/", time = t }) end,
      ("bad argument #1 to 'aws.sign' (time '%s' is not a real date and time (UTC))"):format(t))
  end
end)

T.test("payloads: body hash, UNSIGNED-PAYLOAD, a caller's X-Amz-Content-Sha256", function()
  local h, dbg = sigv4.sign(opts { method = "PUT", url = HOST .. "/k", body = "abc" })
  T.eq(dbg.canonical_request:match("[^\n]+$"), crypto.sha256("abc"))
  T.eq(h["X-Amz-Content-Sha256"], nil)
  h, dbg = sigv4.sign(opts { method = "PUT", url = HOST .. "/k", body = "abc", unsigned_payload = true })
  T.eq(dbg.canonical_request:match("[^\n]+$"), "UNSIGNED-PAYLOAD")
  T.eq(h["X-Amz-Content-Sha256"], "UNSIGNED-PAYLOAD")
  T.eq(dbg.signed_headers, "host;x-amz-content-sha256;x-amz-date")
  h, dbg = sigv4.sign(opts({ method = "PUT", url = S3_HOST .. "/k", body = "abc", unsigned_payload = false }, S3))
  T.eq(h["X-Amz-Content-Sha256"], crypto.sha256("abc"))
  h, dbg = sigv4.sign(opts({ method = "PUT", url = S3_HOST .. "/k", body = "abc",
    headers = { ["X-Amz-Content-Sha256"] = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" } }, S3))
  T.eq(dbg.canonical_request:match("[^\n]+$"), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
  T.eq(h["X-Amz-Content-Sha256"], nil, "the caller already has it")
  -- a body with NUL bytes is hashed whole
  _, dbg = sigv4.sign(opts { method = "POST", url = HOST .. "/", body = "a\0b" })
  T.eq(dbg.canonical_request:match("[^\n]+$"), crypto.sha256("a\0b"))
end)

T.test("the returned headers, and what the signer ignores from the caller", function()
  local h = sigv4.sign(opts { method = "GET", url = HOST .. "/",
    headers = { Authorization = "stale", ["X-Amz-Date"] = "20000101T000000Z" } })
  T.eq(h.Authorization, authz("host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"))
  local keys = {}
  for k in pairs(h) do keys[#keys + 1] = k end
  table.sort(keys)
  T.eq(table.concat(keys, ","), "Authorization,X-Amz-Date", "only the headers to add")
  -- a header given as a number is signed as its text
  local _, dbg = sigv4.sign(opts { method = "GET", url = HOST .. "/", headers = { ["X-Count"] = 3, ["X-List"] = { 1, "b" } } })
  T.has(dbg.canonical_request, "\nx-count:3\nx-list:1,b\n")
  -- an empty value is signed empty
  _, dbg = sigv4.sign(opts { method = "GET", url = HOST .. "/", headers = { ["X-Empty"] = "   " } })
  T.has(dbg.canonical_request, "\nx-empty:\n")
end)

T.test("the secret appears in nothing sign returns", function()
  local secret = "SECRETsecretSECRET0123456789abcdef/+XYZ"
  local h, dbg = sigv4.sign(opts { method = "POST", url = HOST .. "/?a=1", body = "x",
    credentials = { access_key_id = "AKID", secret_access_key = secret, session_token = "tok" } })
  for _, t in ipairs { h, dbg } do
    for k, v in pairs(t) do
      T.eq(v:find(secret, 1, true), nil, k)
      T.eq(v:find("wJalr", 1, true), nil, k)
    end
  end
  -- the errors do not show it either
  local err = T.raises(function()
    sigv4.sign { method = "GET", url = "nope", service = "s", region = "r",
      credentials = { access_key_id = "AKID", secret_access_key = secret } }
  end, "malformed URL")
  T.eq(tostring(err):find(secret, 1, true), nil)
end)

T.test("a malformed URL's message shows no user info, password, path or query", function()
  for _, url in ipairs {
    "https://AKIDUSER:hunter2pass@example.com/path?X-Amz-Signature=sig123&X-Amz-Security-Token=tok456",
    "https://example.com:99999/private/path?X-Amz-Signature=sig123&X-Amz-Security-Token=tok456",
    "https://example.com/private/path?X-Amz-Signature=sig123&X-Amz-Security-Token=tok456\n",
    "hunter2pass@example.com/private/path?X-Amz-Signature=sig123",
  } do
    local err = T.raises(function() sigv4.sign(opts { method = "GET", url = url }) end, "bad argument #1 to 'aws.sign' (malformed URL '")
    for _, secret in ipairs { "AKIDUSER", "hunter2pass", "private", "sig123", "tok456", "X-Amz" } do
      T.eq(err:find(secret, 1, true), nil, secret .. " in " .. err)
    end
  end
  T.raises(function() sigv4.sign(opts { method = "GET", url = "https://u:p@example.com/x" }) end,
    "bad argument #1 to 'aws.sign' (malformed URL 'https://***@example.com': user info")
end)

T.test("argument errors name aws.sign and the field", function()
  local function base(o) return opts(o or {}) end
  local cases = {
    { function() sigv4.sign() end, "bad argument #1 to 'aws.sign' (table expected, got no value)" },
    { function() sigv4.sign("GET") end, "bad argument #1 to 'aws.sign' (table expected, got string)" },
    { function() sigv4.sign(base { url = HOST }) end, "bad argument #1 to 'aws.sign' (option 'method' must be a string, got nil)" },
    { function() sigv4.sign(base { method = "GET" }) end, "bad argument #1 to 'aws.sign' (option 'url' must be a string, got nil)" },
    { function() sigv4.sign(base { method = "GET", url = 42 }) end, "bad argument #1 to 'aws.sign' (option 'url' must be a string, got number)" },
    { function() sigv4.sign(base { method = "", url = HOST }) end, "bad argument #1 to 'aws.sign' (option 'method' must not be empty)" },
    { function() sigv4.sign(base { method = "G T", url = HOST }) end, "bad argument #1 to 'aws.sign' (invalid method" },
    { function() sigv4.sign(base { method = "GET", url = HOST, service = false }) end, "bad argument #1 to 'aws.sign' (option 'service' must be a string, got boolean)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, region = "" }) end, "bad argument #1 to 'aws.sign' (option 'region' must not be empty)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, region = "us/east" }) end, "bad argument #1 to 'aws.sign' (option 'region' must not contain '/'" },
    { function() sigv4.sign(base { method = "GET", url = HOST, credentials = "x" }) end, "bad argument #1 to 'aws.sign' (option 'credentials' must be a table, got string)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, credentials = { access_key_id = "A" } }) end,
      "bad argument #1 to 'aws.sign' (option 'credentials.secret_access_key' must be a string" },
    { function() sigv4.sign(base { method = "GET", url = HOST, credentials = { secret_access_key = "s" } }) end,
      "bad argument #1 to 'aws.sign' (option 'credentials.access_key_id' must be a string" },
    { function() sigv4.sign(base { method = "GET", url = HOST, credentials = { access_key_id = "A", secret_access_key = "s", session_token = 1 } }) end,
      "bad argument #1 to 'aws.sign' (option 'credentials.session_token' must be a string, got number)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, credentials = { access_key_id = "A", secret_access_key = "" } }) end,
      "bad argument #1 to 'aws.sign' (option 'credentials.secret_access_key' must be 1 to 1024 bytes)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, body = {} }) end, "bad argument #1 to 'aws.sign' (option 'body' must be a string, got table)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, time = "2015-08-30" }) end, "bad argument #1 to 'aws.sign' (option 'time' must look like 20150830T123600Z" },
    { function() sigv4.sign(base { method = "GET", url = HOST, time = 1.5 }) end, "bad argument #1 to 'aws.sign' (option 'time' must be integer epoch seconds" },
    { function() sigv4.sign(base { method = "GET", url = HOST, time = -1 }) end, "bad argument #1 to 'aws.sign' (time out of range)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, time = true }) end, "bad argument #1 to 'aws.sign' (option 'time' must be integer epoch seconds" },
    { function() sigv4.sign(base { method = "GET", url = HOST, unsigned_payload = "yes" }) end, "bad argument #1 to 'aws.sign' (option 'unsigned_payload' must be a boolean, got string)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = "x" }) end, "bad argument #1 to 'aws.sign' (option 'headers' must be a table, got string)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { "x" } }) end, "bad argument #1 to 'aws.sign' (header names must be strings, got number)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { ["Bad Name"] = "x" } }) end, "bad argument #1 to 'aws.sign' (invalid header name 'Bad Name')" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { [""] = "x" } }) end, "bad argument #1 to 'aws.sign' (header names must not be empty)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { ["X\nY"] = "x" } }) end, "bad argument #1 to 'aws.sign' (invalid header name 'X\\x0AY')" },
    { function() sigv4.sign(base { method = "GET\r\n", url = HOST }) end, "bad argument #1 to 'aws.sign' (invalid method 'GET\\x0D\\x0A')" },
    { function() sigv4.sign(base { method = "GET", url = HOST, time = "20150830T12360\nZ" }) end, ", got '20150830T12360\\x0AZ')" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { X = true } }) end,
      "bad argument #1 to 'aws.sign' (headers['X'] must be a string or an array of strings, got boolean)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { X = { "a", {} } } }) end, "bad argument #1 to 'aws.sign' (headers['X'][2] must be a string, got table)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { X = "a\0b" } }) end, "bad argument #1 to 'aws.sign' (headers['X'] has a control character)" },
    { function() sigv4.sign(base { method = "GET", url = HOST, headers = { ["X-A"] = "1", ["x-a"] = "2" } }) end,
      "bad argument #1 to 'aws.sign' (header 'x-a' given twice" },
  }
  -- a malformed URL is shown as its scheme and host only, with why it is malformed: why, then
  -- {URL, as shown} for each URL malformed so
  for _, c in ipairs {
    { "not http:// or https://", { "example.com/", "example.com" }, { "ftp://example.com/", "ftp://example.com" } },
    { "no host", { "https://", "https://" }, { "https:///path", "https://" }, { "https://:443/", "https://:443" } },
    { "a space in the host", { "https://ex ample.com/", "https://ex ample.com" } },
    { "user info", { "https://user@example.com/", "https://***@example.com" } },
    { "a bad port", { "https://example.com:/", "https://example.com:" },
      { "https://example.com:99999/", "https://example.com:99999" }, { "https://example.com:x/", "https://example.com:x" } },
    { "an unclosed '['", { "https://[::1/", "https://[::1" } },
    { "text after the ']'", { "https://[::1]x/", "https://[::1]x" } },
  } do
    for i = 2, #c do
      local url, shown = c[i][1], c[i][2]
      cases[#cases + 1] = { function() sigv4.sign(base { method = "GET", url = url }) end,
        ("bad argument #1 to 'aws.sign' (malformed URL '%s': %s"):format(shown, c[1]) }
      cases[#cases + 1] = { function() sigv4.sign(base { method = "GET", url = url }) end, "(expected http(s)://host/path)" }
    end
  end
  -- shown on one line, and cut when long
  cases[#cases + 1] = { function() sigv4.sign(base { method = "GET", url = "https://exa\nmple.com/" }) end,
    "bad argument #1 to 'aws.sign' (malformed URL 'https://exa\\x0Ample.com': it has a control character" }
  cases[#cases + 1] = { function() sigv4.sign(base { method = "GET", url = "x" .. ("y"):rep(1000) }) end,
    "bad argument #1 to 'aws.sign' (malformed URL 'x" .. ("y"):rep(199) .. "...': not http" }
  cases[#cases + 1] = { function() sigv4.sign(base { method = "GET", url = HOST, time = "20151399T999999Z" }) end,
    "bad argument #1 to 'aws.sign' (time '20151399T999999Z' is not a real date and time (UTC))" }
  cases[#cases + 1] = { function()
    sigv4.sign(base { method = "GET", url = HOST, credentials = { access_key_id = "A", secret_access_key = "s", session_token = "a\1b" } })
  end, "bad argument #1 to 'aws.sign' (option 'credentials.session_token' has a control character)" }
  local checks = {}
  for i, c in ipairs(cases) do
    checks[#checks + 1] = { name = "#" .. i .. " " .. c[2], fn = function()
      local ok, err = pcall(c[1])
      T.eq(ok, false, "raised")
      T.has(err, c[2])
      T.eq(err:find("\n"), nil, "one line")
    end }
  end
  check_all(checks)
end)

T.test("wrong argument types of every kind raise one-line messages naming aws.sign", function()
  local values = { nil, 42, "x", {}, true, print, coroutine.create(function() end), io.stdout }
  -- the types each field takes ("nil": it may be left out); any other must be refused
  local takes = { method = { string = true }, url = { string = true }, service = { string = true },
    region = { string = true }, credentials = { table = true }, body = { string = true, ["nil"] = true },
    time = { number = true, ["nil"] = true }, headers = { table = true, ["nil"] = true },
    unsigned_payload = { boolean = true, ["nil"] = true } }
  for i = 1, 8 do
    local v = values[i]
    local ok, err = pcall(sigv4.sign, v)
    T.eq(ok, false)
    T.has(err, "aws.sign")
    for field, types in pairs(takes) do
      local o = opts { method = "GET", url = HOST .. "/" }
      o[field] = v
      local ok2, err2 = pcall(sigv4.sign, o)
      -- "x" is a string but no URL, and {} no credentials: refused for what they hold
      local fits = types[i == 1 and "nil" or type(v)] and not (field == "url" and v == "x")
        and not (field == "credentials" and v ~= nil and next(v) == nil)
      if fits then
        T.eq(ok2, true, ("%s = %s is taken: %s"):format(field, tostring(v), tostring(err2)))
      else
        T.eq(ok2, false, ("%s = %s (%s) must be refused"):format(field, tostring(v), i == 1 and "nil" or type(v)))
        T.has(err2, "bad argument #1 to 'aws.sign' (", field)
        T.eq(err2:find("\n"), nil, "one line")
      end
    end
  end
end)

T.test("a big request: many headers and parameters", function()
  local headers, params = {}, {}
  for i = 1, 500 do
    headers[("X-H%03d"):format(i)] = ("v%d"):format(i)
    params[#params + 1] = ("p%03d=%d"):format(501 - i, i)
  end
  local _, dbg = sigv4.sign(opts { method = "GET", url = HOST .. "/?" .. table.concat(params, "&"), headers = headers })
  T.eq(select(2, dbg.signed_headers:gsub(";", "")), 501)
  T.ok(dbg.canonical_request:find("\np001=500&p002=499&", 1, true), "sorted")
  T.ok(dbg.canonical_request:find("\nx-h001:v1\nx-h002:v2\n", 1, true), "sorted")
end)

T.run()
