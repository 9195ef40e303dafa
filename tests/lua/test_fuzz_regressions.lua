-- What the libFuzzer targets of tests/fuzz found, each kept as a test of the behaviour that
-- holds now (the inputs themselves are in the targets' seed directories too, which the fuzz
-- tests replay first).
local T = require("harness")
local json = require("stagehost.json")
local pipeline = require("stagehost.pipeline")
local errors = require("stagehost.errors")
local fs = require("stagehost.fs")

local FUZZ = (debug.getinfo(1, "S").source:match("^@(.*)/lua/[^/]*$") or "tests") .. "/fuzz"

-- fuzz_json: "1e309" decoded to math.huge, which encode refuses ("NaN or infinity cannot be
-- encoded"), so a decoded document could not be written again (a run record, a report). JSON
-- has no infinity: decode now says the number is out of range, where it is.
T.test("json.decode refuses numbers beyond a double's range, naming where", function()
  local found = assert(fs.read(FUZZ .. "/seeds-json/regression-huge-number.json"))
  local v, err = json.decode(found)
  T.eq(v, nil)
  T.match(err, "^line 1, column %d+: number out of range")
  for _, c in ipairs {
    -- text, the line and column of the number
    { "1e309", 1, 1 },
    { "[1.7976931348623157e308, -1e400]", 1, 26 },
    { '{"a": "1e999",\n "b": 123456789e310}', 2, 7 },
    { "9" .. ("9"):rep(400), 1, 1 },
  } do
    T.decode_error(json.decode, c[1], c[2], c[3], "number out of range")
  end
  -- the largest double and a string that reads like a huge number still decode
  T.eq(json.decode("1.7976931348623157e308"), 1.7976931348623157e308)
  T.eq(json.decode('["1e999", 1e-400]')[1], "1e999")
  T.eq(json.decode("[1e-400]")[1], 0.0, "an underflow is zero, which encodes")
end)

-- fuzz_pipeline: pipeline.seconds("999...9") (and "999...9h", and math.huge) returned
-- infinity, which a stage's timeout, `describe --format json` and an approval's stored
-- durations carry into json.encode, which raises.
T.test("pipeline.seconds is never infinite", function()
  T.eq(pipeline.seconds(("9"):rep(400)), nil)
  T.eq(pipeline.seconds(("9"):rep(400) .. "h"), nil)
  T.eq(pipeline.seconds("1h" .. ("9"):rep(400) .. "ms"), nil)
  T.eq(pipeline.seconds(math.huge), nil)
  T.eq(pipeline.seconds(0 / 0), nil)
  -- what it reads stays as it was
  T.eq(pipeline.seconds("90"), 90)
  T.eq(pipeline.seconds("1h30m"), 5400)
  T.eq(pipeline.seconds("500ms"), 0.5)
  T.eq(pipeline.seconds(("9"):rep(300)), tonumber(("9"):rep(300)))
  local err = T.raises(pipeline.define, "timeout must be seconds", { name = "p", stages = {
    { name = "a", run = function() end, timeout = ("9"):rep(400) .. "s" } } })
  T.ok(errors.is(err, "config"), "a config error")
end)

-- fuzz_pipeline: a field name with a line break in it ({"nam\ne": ...}) made a config error of
-- two lines, though the loader promises one (the host prints it as it is)
T.test("a config error quoting a name with a line break is still one line", function()
  for _, spec in ipairs {
    { ["nam\ne"] = "p", name = "p", stages = { { name = "a", run = function() end } } },
    { name = "p", stages = { { name = "a\nb", run = function() end } } },
    { name = "p", stages = { { name = "a", run = function() end, when = "fail\r\nure" } } },
    { name = "p", stages = { { name = "a", run = function() end, needs = { "b\0c" } } } },
  } do
    local ok, err = pcall(pipeline.define, spec)
    T.eq(ok, false)
    T.ok(errors.is(err, "config"), tostring(err))
    T.no_match(err.message, "[%c]", "one line, no control characters")
    T.match(err.message, "\\x0[AD0]", "the break is shown")
  end
  -- and through the command line: one line on stderr, exit 2
  local dir = T.project { ["pipeline.lua"] = 'local pipeline = require "stagehost.pipeline"\n'
    .. 'return pipeline.define{ name = "p", stages = { { name = "x\\ny", run = function() end } } }\n' }
  local r = T.stagehost(dir, { "run", "pipeline.lua" })
  T.eq(r.code, 2, r.stderr)
  T.has(r.stderr, "got x\\x0Ay)")
  T.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
  fs.remove(dir, { recursive = true })
end)

T.run()
