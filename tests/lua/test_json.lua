local T = require("harness")
local json = require("stagehost.json")

-- Deep structural equality; array/object kind is compared through json.is_array when both
-- sides carry a kind.
local function deep_eq(a, b, path)
  path = path or "$"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then
      return false, ("%s: %s %s vs %s %s"):format(path, math.type(a), a, math.type(b), b)
    end
    if a ~= b then return false, ("%s: %s vs %s"):format(path, a, b) end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, ("%s: %s vs %s"):format(path, tostring(a), tostring(b)) end
    return true
  end
  for k, v in pairs(a) do
    local ok, where = deep_eq(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": missing on the left" end
  end
  return true
end

local function same(a, b, what)
  local ok, where = deep_eq(a, b)
  if not ok then error((what and what .. ": " or "") .. "values differ at " .. where, 2) end
end

-- Run every check, then fail once listing all that failed (so one bug does not hide another).
local function check_all(checks)
  local failures = {}
  for _, fn in ipairs(checks) do
    local ok, err = pcall(fn)
    if not ok then failures[#failures + 1] = tostring(err) end
  end
  if #failures > 0 then error(#failures .. " of " .. #checks .. " checks failed:\n" .. table.concat(failures, "\n"), 2) end
end

-- Bad input is data from the world: json.decode returns nil and "line L, column C: reason"
-- (exactly two values, as xml.decode and yaml.decode), never raises.
local function decode_error(text)
  local n, value, err = (function(...) return select("#", ...), ... end)(json.decode(text))
  if value ~= nil then error(("json.decode(%q) should have failed"):format(text), 2) end
  T.eq(n, 2, "nil and a message")
  T.eq(type(err), "string", "the message is a string")
  T.match(err, "^line %d+, column %d+: ", "the message starts with the position")
  return err
end


local function encode_error(value, opts)
  local ok, err = pcall(json.encode, value, opts)
  if ok then error("json.encode should have failed, got " .. tostring(err), 2) end
  T.eq(type(err), "string", "error is a string")
  return err
end

T.test("round trip of nested values", function()
  local value = {
    name = "stage",
    count = 3,
    ratio = 0.25,
    ok = true,
    failed = false,
    list = { 1, 2, { 3, { 4, { five = 5 } } }, "six" },
    nested = { a = { b = { c = { d = "deep" } } } },
    empty_list = json.array {},
    empty_obj = json.object {},
  }
  local text = json.encode(value)
  T.eq(type(text), "string")
  local back = json.decode(text)
  same(back, value, "decode(encode(v))")
  T.eq(json.encode(back), text, "encode is stable")
  -- and from text: decode then encode gives the same canonical text
  local canonical = '{"a":[1,2.5,"x",true,false,null,{"b":[]}],"c":{}}'
  T.eq(json.encode(json.decode(canonical)), canonical)
  -- scalars at the top level
  T.eq(json.decode("42"), 42)
  T.eq(json.decode('"s"'), "s")
  T.eq(json.decode("true"), true)
  T.eq(json.decode("false"), false)
  T.eq(json.encode(42), "42")
  T.eq(json.encode("s"), '"s"')
  T.eq(json.encode(true), "true")
  T.eq(json.encode(false), "false")
end)

T.test("json.null encodes as null and decodes to json.null", function()
  T.ok(json.null ~= nil, "json.null exists")
  T.ok(json.null == json.null, "json.null == json.null")
  T.eq(json.encode(json.null), "null")
  T.eq(json.decode("null"), json.null)
  T.ok(json.decode("null") == json.null)
  local arr = json.decode("[1,null,3]")
  T.eq(#arr, 3, "null keeps its slot in an array")
  T.eq(arr[2], json.null)
  T.eq(json.encode(arr), "[1,null,3]")
  local obj = json.decode('{"a":null,"b":1}')
  T.eq(obj.a, json.null, "an object member set to null stays present")
  T.eq(json.encode(obj), '{"a":null,"b":1}')
  T.eq(json.encode({ json.null, json.null }), "[null,null]")
  T.eq(json.encode({ x = json.null }), '{"x":null}')
  -- json.null from two separate requires is the same value
  T.ok(require("stagehost.core.json").null == json.null)
end)

T.test("decoded arrays and objects keep their kind when encoded again", function()
  T.eq(json.encode(json.decode("[]")), "[]")
  T.eq(json.encode(json.decode("{}")), "{}")
  T.eq(json.encode(json.decode('{"a":[],"b":{},"c":[{}],"d":{"e":[]}}')),
    '{"a":[],"b":{},"c":[{}],"d":{"e":[]}}')
  T.eq(json.is_array(json.decode("[]")), true)
  T.eq(json.is_array(json.decode("{}")), false)
  T.eq(json.is_array(json.decode("[1,2]")), true)
  T.eq(json.is_array({}), false, "a plain table has no kind")
  -- a decoded array that was emptied stays an array, an emptied object stays an object
  local a = json.decode("[1,2]")
  a[1], a[2] = nil, nil
  T.eq(json.encode(a), "[]")
  local o = json.decode('{"k":1}')
  o.k = nil
  T.eq(json.encode(o), "{}")
end)

T.test("json.array{} and json.object{} mark tables", function()
  T.eq(json.encode(json.array {}), "[]")
  T.eq(json.encode(json.object {}), "{}")
  T.eq(json.encode({}), "{}", "an unmarked empty table is an object")
  T.eq(json.encode(json.array()), "[]", "no argument gives a new empty array")
  T.eq(json.encode(json.object()), "{}", "no argument gives a new empty object")
  local t = { 1, 2 }
  T.ok(json.array(t) == t, "json.array returns the same table")
  T.eq(json.is_array(t), true)
  T.eq(json.encode(json.array { "a", "b" }), '["a","b"]')
  T.eq(json.encode({ list = json.array {}, map = json.object {} }), '{"list":[],"map":{}}')
  T.eq(json.encode({ json.array {}, json.object {} }), "[[],{}]")
end)

T.test("json.array / json.object with an extra argument mark only the first", function()
  local a, b = {}, {}
  local string_mt = debug.getmetatable("")
  local number_mt = debug.getmetatable(0)
  local ok, err = pcall(function()
    T.ok(json.array(a, b) == a, "returns its first argument")
    json.object({}, "x")
    json.array({}, 42)
  end)
  -- put shared metatables back at once: a wrong one breaks every string method
  local string_changed = debug.getmetatable("") ~= string_mt
  local number_changed = debug.getmetatable(0) ~= number_mt
  debug.setmetatable("", string_mt)
  debug.setmetatable(0, number_mt)
  T.ok(ok, tostring(err))
  check_all {
    function() T.eq(json.is_array(a), true, "json.array(a, b) marks a") end,
    function() T.eq(getmetatable(b), nil, "json.array(a, b) leaves b alone") end,
    function() T.eq(string_changed, false, "json.object({}, 'x') changed the metatable of all strings") end,
    function() T.eq(number_changed, false, "json.array({}, 42) changed the metatable of all numbers") end,
  }
end)

T.test("integers stay integers, encoded exactly", function()
  local big = math.tointeger(2 ^ 53) + 1
  T.eq(math.type(big), "integer")
  T.eq(json.encode(big), "9007199254740993", "2^53+1 exact")
  T.eq(json.encode(-(1 << 62)), "-4611686018427387904", "-2^62 exact")
  T.eq(json.encode(math.maxinteger), "9223372036854775807")
  T.eq(json.encode(math.mininteger), "-9223372036854775808")
  T.eq(json.encode({ 0, -1, 7, 1000000 }), "[0,-1,7,1000000]")
  for _, n in ipairs { 0, 1, -1, 42, 123456789, -987654321, 4294967296, 9007199254740991 } do
    local back = json.decode(json.encode(n))
    T.eq(math.type(back), "integer", "math.type of " .. n)
    T.eq(back, n)
  end
  local arr = json.decode("[1,-2,0,3000000000]")
  for i = 1, 4 do T.eq(math.type(arr[i]), "integer", "element " .. i) end
  T.eq(math.type(json.decode('{"code":1}').code), "integer")
end)

T.test("integers: exact up to 2^53 both ways; beyond, encode is exact and decode is the nearest float", function()
  -- cJSON keeps numbers as doubles, so a decoded integer beyond 2^53 cannot be exact; the
  -- README documents it. What must hold: no error, and the nearest double comes back.
  local limit = math.tointeger(2 ^ 53)
  T.eq(json.decode(json.encode(limit - 1)), limit - 1)
  T.eq(math.type(json.decode(json.encode(limit - 1))), "integer")
  T.eq(json.decode(json.encode(1 - limit)), 1 - limit)
  -- from 2^53 on a double may stand for several integers: it stays a float to say so
  T.eq(math.type(json.decode(json.encode(limit))), "float")
  T.eq(json.encode(limit + 1), "9007199254740993", "encode is exact")
  local back = json.decode("9007199254740993")
  T.eq(math.type(back), "float")
  T.eq(back, 2.0 ^ 53, "nearest double")
end)

T.test("floats round trip", function()
  for _, f in ipairs { 1.5, 1e-7, 0.1, -2.75, 3.141592653589793, 1e300, -1e-300, 1 / 3, 123456.789 } do
    local text = json.encode(f)
    local back = json.decode(text)
    T.eq(math.type(back), "float", "math.type of " .. text)
    T.eq(back, f, "round trip of " .. text)
  end
  T.eq(json.encode(1.5), "1.5")
  T.eq(json.decode("1.5"), 1.5)
  T.eq(json.decode("1e-7"), 1e-7)
  T.eq(json.decode("-0.5"), -0.5)
  T.eq(json.decode("2.5E3"), 2500)
  local t = json.decode(json.encode({ x = 0.1, y = { 1.5, 1e-7 } }))
  T.eq(t.x, 0.1)
  T.eq(t.y[1], 1.5)
  T.eq(t.y[2], 1e-7)
end)

T.test("floats round trip bit-exactly (no precision lost in the last digit)", function()
  -- 17 significant digits are needed for some doubles; fewer digits give a neighbour (or inf)
  local checks = {}
  for _, f in ipairs { 0.1 + 0.2, 1.7976931348623157e308, -1.7976931348623157e308, 2 ^ -1074 * 3, 1 / 3 } do
    checks[#checks + 1] = function()
      local text = json.encode(f)
      local back = json.decode(text)
      T.eq(("%.17g"):format(back), ("%.17g"):format(f), "round trip of " .. ("%.17g"):format(f) .. " (encoded as " .. text .. ")")
    end
  end
  check_all(checks)
end)

T.test("strings: unicode, escapes, quotes and control characters", function()
  local samples = {
    "",
    "plain",
    'say "hi"',
    "back\\slash",
    "slash / here",
    "line1\nline2\r\n",
    "tab\there",
    "\b\f",
    "é ü ß ñ",
    "日本語のテキスト",
    "emoji 😀 🚀",
    "\226\128\168 line separator",
    "mixed \"quotes\" and \\ and \t and 😀",
  }
  local ctl = {}
  for i = 1, 31 do ctl[#ctl + 1] = string.char(i) end
  samples[#samples + 1] = table.concat(ctl) .. "\127"
  for _, s in ipairs(samples) do
    local text = json.encode(s)
    T.eq(text:sub(1, 1), '"')
    T.eq(text:sub(-1), '"')
    T.no_match(text:sub(2, -2), "[%z\1-\31]", "no raw control characters in " .. text)
    T.eq(json.decode(text), s, "round trip of " .. ("%q"):format(s))
    T.eq(json.decode(json.encode({ s }))[1], s)
    T.eq(json.decode(json.encode({ [s ~= "" and s or "k"] = s }))[s ~= "" and s or "k"], s, "as key and value")
  end
  T.eq(json.encode('a"b'), '"a\\"b"')
  T.eq(json.encode("a\\b"), '"a\\\\b"')
  T.eq(json.encode("a\nb"), '"a\\nb"')
  T.eq(json.encode("\1"), '"\\u0001"')
  -- escapes in the input
  T.eq(json.decode('"\\u00e9\\u65e5\\ud83d\\ude00\\/\\"\\\\\\b\\f\\n\\r\\t"'), "é日😀/\"\\\b\f\n\r\t")
end)

T.test("strings with NUL bytes are refused clearly, never truncated", function()
  -- cJSON carries C strings; silently cutting a value at a NUL would corrupt data
  T.raises(function() json.encode("a\0b") end, "json.encode: string with a NUL byte")
  T.raises(function() json.encode({ x = { "a\0b" } }) end, "at $.x[1]")
  T.raises(function() json.encode({ ["k\0x"] = 1 }) end, "object key with a NUL byte")
  T.has(decode_error('"a\\u0000b"'), "\\u0000")
  T.match(decode_error('{"k\\u0000x":1}'), "^line 1, column 4: ")
  -- an escaped backslash followed by the text u0000 is not a NUL
  T.eq(json.decode('"\\\\u0000"'), "\\u0000")
end)

T.test("object keys are sorted in the output", function()
  T.eq(json.encode({ b = 1, a = 2, c = 3 }), '{"a":2,"b":1,"c":3}')
  T.eq(json.encode({ ["b"] = 1, ["a"] = 2, ["B"] = 3, ["aa"] = 4, ["10"] = 5, ["9"] = 6 }),
    '{"10":5,"9":6,"B":3,"a":2,"aa":4,"b":1}', "byte order")
  T.eq(json.encode({ z = { y = 1, x = 2 }, a = { { d = 1, c = 2 } } }), '{"a":[{"c":2,"d":1}],"z":{"x":2,"y":1}}',
    "nested objects sorted too")
  -- the same table built in different orders encodes identically
  local t1, t2 = {}, {}
  for i = 1, 100 do t1["k" .. i] = i end
  for i = 100, 1, -1 do t2["k" .. i] = i end
  T.eq(json.encode(t1), json.encode(t2))
  local text = json.encode(t1)
  local last
  for key in text:gmatch('"(k%d+)"') do
    if last then T.ok(last < key, ("%s before %s"):format(last, key)) end
    last = key
  end
end)

T.test("pretty output is indented with two spaces, no tabs", function()
  local value = { b = 1, a = { 1, 2 }, c = { d = { e = "x\ty" } }, f = json.array {}, g = json.object {} }
  local text = json.encode(value, { pretty = true })
  T.no_match(text, "\t", "no raw tabs")
  T.match(text, "\n", "several lines")
  T.match(text, '^{\n  "a": ', "two-space indent at level 1")
  T.match(text, '\n    "d": {', "four-space indent at level 2")
  T.match(text, '\n      "e": "x\\ty"', "six-space indent at level 3")
  for line in text:gmatch("[^\n]+") do
    local indent = line:match("^( *)")
    T.eq(#indent % 2, 0, "even indentation in " .. ("%q"):format(line))
  end
  T.ok(text:find('"a"') < text:find('"b"') and text:find('"b"') < text:find('"c"'), "sorted keys")
  same(json.decode(text), value, "pretty output decodes to the same value")
  T.eq(json.encode(value, { pretty = false }), json.encode(value), "pretty = false is compact")
  T.no_match(json.encode(value), "\n", "compact output is one line")
end)

T.test("decode errors name the line and column", function()
  local cases = {
    { "trailing comma", "[1,2,]", 1, 6 },
    { "trailing comma in object", '{"a":1,}', 1, nil },
    { "unterminated string", '["abc', 1, nil },
    { "bare word", "hello", 1, 1 },
    { "error on line 3", '{\n  "a": 1,\n  "b": x\n}', 3, 8 },
    { "trailing garbage", "[1] x", 1, 5 },
    { "trailing garbage after an object", '{"a":1}}', 1, 8 },
    { "missing colon", '{"a" 1}', 1, nil },
    { "unclosed array", "[1,2", 1, nil },
  }
  for _, c in ipairs(cases) do
    local name, text, line, col = c[1], c[2], c[3], c[4]
    local err = decode_error(text)
    T.no_match(err, "\n", name .. ": one line")
    local l, k = err:match("line (%d+), column (%d+)")
    T.ok(l, name .. ": names line and column in " .. err)
    T.eq(tonumber(l), line, name .. ": line")
    if col then T.eq(tonumber(k), col, name .. ": column") end
  end
end)

T.test("decode of empty or blank input fails clearly", function()
  local err = decode_error("")
  T.eq(err, "line 1, column 1: empty input")
  local err2 = decode_error("   \n  ")
  T.match(err2, "^line 2, column 3: ", "blank input names where it ended")
  T.has(err2, "unexpected end")
end)

T.test("decode of input with a NUL byte names the line and column", function()
  local err = decode_error("[1]\0")
  T.match(err, "NUL")
  T.match(err, "line 1, column 4", "NUL position as line and column")
  local err2 = decode_error('[1,\n"a\0b"]')
  T.match(err2, "line 2, column 3", "NUL on line 2")
end)

T.test("encode errors name the path of the bad value", function()
  local err = encode_error({ a = { b = { 1, 2, function() end } } })
  T.match(err, "^json%.encode: ")
  T.match(err, "function")
  T.has(err, "$.a.b[3]", "path of a function")
  err = encode_error({ a = { b = { 1, coroutine.create(function() end) } } })
  T.match(err, "thread")
  T.has(err, "$.a.b[2]", "path of a coroutine")
  err = encode_error({ a = { b = { 0 / 0 } } })
  T.match(err, "NaN")
  T.has(err, "$.a.b[1]", "path of NaN")
  err = encode_error({ x = { y = math.huge } })
  T.match(err, "infinity")
  T.has(err, "$.x.y", "path of inf")
  err = encode_error({ x = -math.huge })
  T.has(err, "$.x", "path of -inf")
  err = encode_error({ list = { io.stdout } })
  T.match(err, "userdata")
  T.has(err, "$.list[1]")
  -- top-level bad values
  T.match(encode_error(function() end), "at %$$")
  T.match(encode_error(0 / 0), "at %$$")
  for _, e in ipairs { err } do T.no_match(e, "\n") end
end)

T.test("encode of a table containing itself fails clearly", function()
  local t = { name = "loop" }
  t.self = t
  local err = encode_error(t)
  T.match(err, "^json%.encode: ")
  T.match(err, "contains itself")
  T.has(err, "$.self.self")
  T.no_match(err, "\n")
  local a = {}
  a[1] = { a }
  err = encode_error({ root = a })
  T.match(err, "contains itself")
  T.has(err, "$.root[1][1][1]")
end)

T.test("encode of sparse arrays and mixed key tables fails with the path", function()
  local err = encode_error({ a = { b = { 1, 2, { [1] = 1, [3] = 3 } } } })
  T.match(err, "holes")
  T.has(err, "$.a.b[3]", "path of a sparse array")
  err = encode_error({ [1] = "x", [3] = "y" })
  T.match(err, "holes")
  T.match(err, "at %$$")
  err = encode_error({ a = { 1, 2, x = 3 } })
  T.match(err, "mixes string keys")
  T.has(err, "$.a", "path of a mixed table")
  err = encode_error({ cfg = { [1.5] = true } })
  T.has(err, "$.cfg")
  err = encode_error({ cfg = { name = "x", [true] = 1 } })
  T.match(err, "boolean")
  T.has(err, "$.cfg")
  -- an array with a hole filled by json.null is fine
  T.eq(json.encode({ 1, json.null, 3 }), "[1,null,3]")
end)

T.test("decode of a deeply nested array", function()
  local depth = 150
  local text = string.rep("[", depth) .. "1" .. string.rep("]", depth)
  local v = json.decode(text)
  local d = 0
  while type(v) == "table" do
    d = d + 1
    v = v[1]
  end
  T.eq(d, depth)
  T.eq(v, 1)
  T.eq(json.encode(json.decode(text)), text, "150 levels encode again")
  local objs = string.rep('{"a":', depth) .. "null" .. string.rep("}", depth)
  T.eq(json.encode(json.decode(objs)), objs, "150 levels of objects")
end)

T.test("decode of 100000 nested arrays fails with a clear message", function()
  local depth = 100000
  local text = string.rep("[", depth) .. string.rep("]", depth)
  local err = decode_error(text)
  T.ok(#err < 300, "message is short")
  T.no_match(err, "\n")
  -- the input is valid JSON: the message should say it is nested too deeply, not that it is invalid
  T.ok(err:find("deep") or err:find("nest"), "names nesting as the problem: " .. err)
  -- and the runtime is still fine afterwards
  T.eq(json.encode(json.decode("[1]")), "[1]")
end)

T.test("decode frees cJSON's tree when building the Lua value raises", function()
  -- The Lua stack is filled until json.decode has room to start but not for every level of the
  -- document, so luaL_checkstack raises half way through the conversion; each failed decode
  -- must not keep its cJSON tree (~12 MiB here). Run apart so the RSS measure is its own.
  local script = [==[
    local json = require("stagehost.json")
    local doc = "[" .. ("1,"):rep(200000) .. ("["):rep(900) .. ("]"):rep(900) .. "]"
    local probe, reached, msg
    local function dive(n) reached = n if n == 0 then return probe() end local r = dive(n - 1) return r end
    local function climb(n) reached = n local r = climb(n + 1) return r end
    pcall(climb, 0)
    local n = reached - 5
    probe = function() local ok, e = pcall(json.decode, doc) if not ok then msg = e end return ok end
    repeat
      msg = nil
      pcall(dive, n)
      if msg and msg:find("nesting too deep", 1, true) then break end
      n = n - 50
    until n < 0
    assert(n > 0, "could not make json.decode run out of stack")
    local function rss() return tonumber(io.open("/proc/self/status"):read("a"):match("VmRSS:%s*(%d+)")) end
    pcall(dive, n); pcall(dive, n); collectgarbage()
    local before = rss()
    for _ = 1, 20 do pcall(dive, n) collectgarbage() end
    io.write(rss() - before)
  ]==]
  local proc = require("stagehost.proc")
  local r = proc.run{ os.getenv("STAGEHOST_BIN"), "-e", script,
    env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=1" } }
  T.eq(r.code, 0, r.stderr)
  -- before the fix: ~16 MiB more per failed decode, 320 MiB over twenty. Without a leak the
  -- heap's own growth (fragmentation) has been seen up to ~55 MiB, once in a while: the bound
  -- sits between the two
  T.ok(tonumber(r.stdout) < 96 * 1024, "RSS grew by " .. r.stdout .. " KiB over twenty failed decodes")
end, { timeout = 240 })

T.test("decode and encode reject wrong argument types", function()
  T.raises(json.decode, "bad argument #1 to 'json.decode' (string expected, got nil)", nil)
  T.raises(json.decode, "bad argument #1 to 'json.decode' (string expected, got table)", {})
  T.raises(json.decode, "bad argument #1 to 'json.decode' (string expected, got number)", 42)
  T.raises(json.encode, "bad argument #1")
  T.raises(json.encode, "bad argument #2", {}, 42)
  T.raises(json.array, "bad argument #1", 42)
  T.raises(json.object, "bad argument #1", "x")
end)

T.run()
