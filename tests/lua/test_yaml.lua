local T = require("harness")
local yaml = require("stagehost.yaml")
local json = require("stagehost.json")

-- decoding must fail with nil + "line L, column C: reason" (libyaml may add its context after)
local function rejected(s, line, column, reason)
  return (T.decode_error(yaml.decode, s, line, column, reason))
end

local SAM = [==[
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: >
  The staging web API:
  one function behind an HTTP API.

Parameters:
  Env:
    Type: String
    AllowedValues: [staging, production]
    Default: staging

Conditions:
  IsProd: !Equals [!Ref Env, production]

Globals:
  Function:
    Timeout: 30
    MemorySize: 512

Resources:
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Runtime: python3.12
      CodeUri: src/
      Environment:
        Variables:
          TABLE: !Ref Table
          BUCKET_ARN: !GetAtt Bucket.Arn
          STAGE: !Sub "${Env}-api"
          REGIONS: !Join [",", [!Ref "AWS::Region", us-west-2]]
      Events:
        Root:
          Type: HttpApi
          Properties: { Path: /, Method: get }
  Table:
    Type: AWS::Serverless::SimpleTable
    Condition: IsProd
  Bucket:
    Type: AWS::S3::Bucket
    DeletionPolicy: Retain
    Properties:
      BucketName: !If [IsProd, !Sub "${AWS::StackName}-assets", !Ref "AWS::NoValue"]
      Tags: []

Outputs:
  ApiUrl:
    Description: The API's URL
    Value: !Sub "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.amazonaws.com/"
    Export:
      Name: !Sub "${AWS::StackName}-url"
  FunctionArn:
    Value: !GetAtt [ApiFunction, Arn]
  FirstAz:
    Value: !Select [0, !GetAZs ""]
]==]

T.test("a SAM template: the short forms become their long forms", function()
  local t = assert(yaml.decode(SAM))
  T.eq(t.AWSTemplateFormatVersion, "2010-09-09")
  T.eq(t.Transform, "AWS::Serverless-2016-10-31")
  T.eq(t.Description, "The staging web API: one function behind an HTTP API.\n")
  T.eq(t.Parameters.Env.Default, "staging")
  T.eq(json.encode(t.Conditions.IsProd), '{"Fn::Equals":[{"Ref":"Env"},"production"]}')
  T.eq(math.type(t.Globals.Function.Timeout), "integer")
  T.eq(t.Globals.Function.MemorySize, 512)
  local fn = t.Resources.ApiFunction
  T.eq(fn.Type, "AWS::Serverless::Function")
  local vars = fn.Properties.Environment.Variables
  T.eq(json.encode(vars.TABLE), '{"Ref":"Table"}')
  T.eq(json.encode(vars.BUCKET_ARN), '{"Fn::GetAtt":["Bucket","Arn"]}')
  T.eq(json.encode(vars.STAGE), '{"Fn::Sub":"${Env}-api"}')
  T.eq(json.encode(vars.REGIONS), '{"Fn::Join":[",",[{"Ref":"AWS::Region"},"us-west-2"]]}')
  T.eq(json.encode(fn.Properties.Events.Root.Properties), '{"Method":"get","Path":"/"}')
  T.eq(t.Resources.Table.Condition, "IsProd")
  T.eq(json.encode(t.Resources.Bucket.Properties.BucketName),
    '{"Fn::If":["IsProd",{"Fn::Sub":"${AWS::StackName}-assets"},{"Ref":"AWS::NoValue"}]}')
  T.eq(json.encode(t.Resources.Bucket.Properties.Tags), "[]", "an empty sequence stays []")
  T.eq(json.encode(t.Outputs.ApiUrl.Export.Name), '{"Fn::Sub":"${AWS::StackName}-url"}')
  T.eq(json.encode(t.Outputs.FunctionArn.Value), '{"Fn::GetAtt":["ApiFunction","Arn"]}', "GetAtt's sequence form")
  T.eq(json.encode(t.Outputs.FirstAz.Value), '{"Fn::Select":[0,{"Fn::GetAZs":""}]}')
  -- the whole template goes to CloudFormation as JSON
  local again = json.decode(json.encode(t))
  T.eq(again.Resources.ApiFunction.Properties.Handler, "app.handler")
end)

T.test("every CloudFormation short form", function()
  -- the document's lines, each with its value's long form as JSON
  local doc, expect = {}, {}
  for _, line in ipairs {
    { "ref: !Ref Name", '{"Ref":"Name"}' },
    { "cond: !Condition IsProd", '{"Condition":"IsProd"}' },
    { "getatt: !GetAtt Db.Endpoint.Address", '{"Fn::GetAtt":["Db","Endpoint.Address"]}' },
    { "getatt_nodot: !GetAtt Db", '{"Fn::GetAtt":["Db"]}' },
    { 'sub_list: !Sub ["${A}-x", {A: !Ref B}]', '{"Fn::Sub":["${A}-x",{"A":{"Ref":"B"}}]}' },
    { 'join: !Join [":", [a, b]]', '{"Fn::Join":[":",["a","b"]]}' },
    { 'select: !Select ["1", [a, b]]', '{"Fn::Select":["1",["a","b"]]}' },
    { 'split: !Split [",", "a,b"]', '{"Fn::Split":[",","a,b"]}' },
    { "if: !If [C, 1, 2]", '{"Fn::If":["C",1,2]}' },
    { "equals: !Equals [a, b]", '{"Fn::Equals":["a","b"]}' },
    { "not: !Not [!Equals [a, b]]", '{"Fn::Not":[{"Fn::Equals":["a","b"]}]}' },
    { "and: !And [!Condition A, !Condition B]", '{"Fn::And":[{"Condition":"A"},{"Condition":"B"}]}' },
    { "or: !Or [!Condition A, !Condition B]", '{"Fn::Or":[{"Condition":"A"},{"Condition":"B"}]}' },
    { "findinmap: !FindInMap [Map, Key, Value]", '{"Fn::FindInMap":["Map","Key","Value"]}' },
    { 'base64: !Base64 "hello"', '{"Fn::Base64":"hello"}' },
    { "cidr: !Cidr [10.0.0.0/16, 4, 8]", '{"Fn::Cidr":["10.0.0.0/16",4,8]}' },
    { "getazs: !GetAZs us-east-1", '{"Fn::GetAZs":"us-east-1"}' },
    { "import: !ImportValue shared-vpc-id", '{"Fn::ImportValue":"shared-vpc-id"}' },
    { "transform: !Transform {Name: AWS::Include, Parameters: {Location: s3://b/k}}",
      '{"Fn::Transform":{"Name":"AWS::Include","Parameters":{"Location":"s3://b/k"}}}' },
    { "block: !Sub |\n  #!/bin/bash\n  echo ${Env}", '{"Fn::Sub":"#!/bin/bash\\necho ${Env}\\n"}' },
    { "tagged_number: !Ref 42", '{"Ref":"42"}' },
  } do
    doc[#doc + 1] = line[1]
    expect[line[1]:match("^[%w_]+")] = line[2]
  end
  local t = assert(yaml.decode(table.concat(doc, "\n") .. "\n"))
  for k, v in pairs(expect) do T.eq(json.encode(t[k]), v, k) end
  for k in pairs(t) do T.ok(expect[k], "unexpected key " .. k) end
end)

T.test("plain scalars by the YAML 1.2 core schema", function()
  local cases = {
    -- text, value, math.type or type
    { "~", json.null }, { "null", json.null }, { "Null", json.null }, { "NULL", json.null }, { "", json.null },
    { "true", true }, { "True", true }, { "TRUE", true }, { "false", false }, { "False", false }, { "FALSE", false },
    { "0", 0, "integer" }, { "42", 42, "integer" }, { "-17", -17, "integer" }, { "+5", 5, "integer" },
    { "007", 7, "integer" }, { "0o17", 15, "integer" }, { "0x1F", 31, "integer" }, { "0xff", 255, "integer" },
    { "9223372036854775807", math.maxinteger, "integer" },
    { "-9223372036854775808", math.mininteger, "integer" },
    { "99999999999999999999", 1e20, "float" },
    { "1.5", 1.5, "float" }, { "-0.25", -0.25, "float" }, { ".5", 0.5, "float" }, { "1.", 1.0, "float" },
    { "1e3", 1000.0, "float" }, { "2.5E-3", 0.0025, "float" }, { "+1.0", 1.0, "float" },
    { ".inf", math.huge, "float" }, { ".Inf", math.huge, "float" }, { "+.INF", math.huge, "float" },
    { "-.inf", -math.huge, "float" },
    -- YAML 1.1's extras are strings in 1.2
    { "yes", "yes" }, { "no", "no" }, { "on", "on" }, { "off", "off" }, { "y", "y" },
    { "0b101", "0b101" }, { "1_000", "1_000" }, { "0x", "0x" }, { "0o8", "0o8" }, { "1e", "1e" },
    { "2010-09-09", "2010-09-09" }, { "12:30", "12:30" }, { "1.2.3", "1.2.3" }, { "-x", "-x" }, { ".", "." },
    { "nulls", "nulls" }, { "tRUE", "tRUE" }, { "-.nan", "-.nan" }, { "inf", "inf" }, { "nan", "nan" },
    { "hello world", "hello world" }, { "arn:aws:s3:::bucket", "arn:aws:s3:::bucket" },
  }
  for _, c in ipairs(cases) do
    local t = assert(yaml.decode("v: " .. c[1]))
    T.eq(t.v, c[2], ("%q"):format(c[1]))
    if c[3] then T.eq(math.type(t.v), c[3], ("%q type"):format(c[1])) end
  end
  -- hex and octal beyond 64 bits: the nearest float, not strtoull's ULLONG_MAX
  for _, c in ipairs {
    { "0x8000000000000000", 2.0 ^ 63 }, { "0xFFFFFFFFFFFFFFFF", 2.0 ^ 64 },
    { "0x10000000000000000", 2.0 ^ 64 }, { "0x100000000000000000000", 2.0 ^ 80 },
    { "0o7777777777777777777777777", 8.0 ^ 25 }, { "0o2000000000000000000000", 2.0 ^ 64 },
    { "0x" .. ("f"):rep(300), math.huge },
  } do
    local t = assert(yaml.decode("v: " .. c[1]))
    T.eq(t.v, c[2], c[1])
    T.eq(math.type(t.v), "float", c[1] .. " type")
  end
  T.eq(yaml.decode("v: !!int 0x100000000000000000000").v, 2.0 ^ 80, "!!int too")
  local nan = assert(yaml.decode("[.nan, .NaN, .NAN]"))
  for i = 1, 3 do T.ok(nan[i] ~= nan[i], "NaN " .. i) end
  -- a bare scalar document
  T.eq(yaml.decode("42"), 42)
  T.eq(yaml.decode("hello"), "hello")
end)

T.test("quoted and block scalars stay strings; explicit standard tags", function()
  local t = assert(yaml.decode([[
s1: 'true'
s2: "1"
s3: "null"
s4: ''
s5: "tab\there \u00e9"
s6: 'it''s'
lit: |
  line 1
   line 2
fold: >-
  folded
  text
keep: |+
  kept

str: !!str 123
int: !!int "12"
float: !!float 3
bool: !!bool "false"
nul: !!null ""
any: !!binary aGVsbG8=
nonspecific: ! 12
]]))
  T.eq(t.s1, "true")
  T.eq(t.s2, "1")
  T.eq(t.s3, "null")
  T.eq(t.s4, "")
  T.eq(t.s5, "tab\there \u{e9}")
  T.eq(t.s6, "it's")
  T.eq(t.lit, "line 1\n line 2\n")
  T.eq(t.fold, "folded text")
  T.eq(t.keep, "kept\n\n")
  T.eq(t.str, "123")
  T.eq(t.int, 12)
  T.eq(math.type(t.int), "integer")
  T.eq(t.float, 3.0)
  T.eq(math.type(t.float), "float")
  T.eq(t.bool, false)
  T.eq(t.nul, json.null)
  T.eq(t.any, "aGVsbG8=")
  T.eq(t.nonspecific, "12")
  rejected("a: !!int x", 1, 4, "'x' is not a valid !!int")
  rejected("a: !!bool yes", 1, 4, "'yes' is not a valid !!bool")
end)

T.test("mappings and sequences: JSON marks, keys as written, duplicates refused", function()
  local t = assert(yaml.decode("a: []\nb: {}\nc: [1, [2, []]]\nd:\n  - x\n  - {}\n"))
  T.eq(json.encode(t), '{"a":[],"b":{},"c":[1,[2,[]]],"d":["x",{}]}')
  T.ok(json.is_array(t.a), "sequences are arrays")
  T.ok(not json.is_array(t.b), "mappings are not")
  T.eq(getmetatable(t), getmetatable(json.decode("{}")), "mappings carry json's object mark")
  t = assert(yaml.decode("1: one\ntrue: yes\nnull: nothing\n~: tilde\n0x10: hex\n'q': quoted\n1.50: float\n"))
  T.eq(t["1"], "one")
  T.eq(t["true"], "yes")
  T.eq(t["null"], "nothing")
  T.eq(t["~"], "tilde")
  T.eq(t["0x10"], "hex", "keys are the text as written")
  T.eq(t.q, "quoted")
  T.eq(t["1.50"], "float")
  T.eq(t[1], nil)
  local err = rejected("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key 'a'")
  T.eq(err:find("\n"), nil, "one line")
  rejected("x:\n  k: 1\n  'k': 2\n", 3, 3, "duplicate key 'k'")
  rejected("? [a, b]\n: c\n", 1, 3, "mapping keys must be scalars")
  rejected("{[a]: b}", 1, 2, "mapping keys must be scalars")
  -- an empty value is null, an empty key the empty string
  t = assert(yaml.decode("a:\nb: ~\n? \n: c\n"))
  T.eq(t.a, json.null)
  T.eq(t.b, json.null)
  T.eq(t[""], "c")
end)

T.test("anchors, aliases and merge keys", function()
  local t = assert(yaml.decode([==[
defaults: &defaults
  Runtime: python3.12
  Timeout: 30
n: &n 5
list: &list [a, b]
fn1:
  <<: *defaults
  Timeout: 60
fn2:
  Handler: x
  <<: [*defaults, {Memory: 128, Runtime: node20}]
copy: *defaults
num: *n
again: *list
redefined: &n 6
num2: *n
]==]))
  T.eq(t.fn1.Runtime, "python3.12")
  T.eq(t.fn1.Timeout, 60, "an explicit key wins over a merged one, even after it")
  T.eq(t.fn1["<<"], nil)
  T.eq(t.fn2.Runtime, "python3.12", "earlier merged mappings win")
  T.eq(t.fn2.Memory, 128)
  T.eq(t.fn2.Handler, "x")
  T.eq(t.copy, t.defaults, "an alias is the anchor's table")
  T.eq(t.num, 5)
  T.eq(t.again, t.list)
  T.ok(json.is_array(t.again))
  T.eq(t.num2, 6, "a redefined anchor: the latest")
  T.eq(json.encode(t.fn2), '{"Handler":"x","Memory":128,"Runtime":"python3.12","Timeout":30}')
  -- a quoted "<<" is an ordinary key
  t = assert(yaml.decode("'<<': {a: 1}"))
  T.eq(t["<<"].a, 1)
  -- an alias used as a key is its scalar's text as written, like any key
  t = assert(yaml.decode("a: &x 0x10\n*x : 1\nb: &n ~\n*n : 2\nc: &q 'quoted'\n*q : 3\nd: &f 1.50\n*f : 4\n"))
  T.eq(t["0x10"], 1, "not 16")
  T.eq(t["16"], nil)
  T.eq(t["~"], 2, "not null")
  T.eq(t.quoted, 3)
  T.eq(t["1.50"], 4, "not 1.5")
  T.eq(t.a, 16, "the value is still resolved")
  rejected("a: &x 0x10\n*x : 1\n0x10: 2\n", 3, 1, "duplicate key '0x10'")
  t = assert(yaml.decode("&k key: *k\n"))
  T.eq(t.key, "key")
  -- a name anchored again on a collection is no longer a scalar
  rejected("a: &x 1\nb: &x [1]\n*x : 1\n", 3, 1, "mapping keys must be scalars")
  rejected("a: &x 1\nb:\n  <<: *x\n", 3, 3, "'<<' needs a mapping or a sequence of mappings")
  rejected("a: *nope\n", 1, 4, "unknown alias '*nope'")
  rejected("a: &a [1, *a]\n", 1, 11, "unknown alias '*a'")
end)

T.test("an alias bomb is refused; aliases below the limit are fine", function()
  local bomb = [==[
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
]==]
  local v, err = yaml.decode(bomb)
  T.eq(v, nil)
  T.match(err, "^line 7, column %d+: more than 1000000 nodes once aliases are expanded$")
  -- six levels: 597871 nodes expanded, allowed
  local ok = assert(yaml.decode(bomb:match("^(.-)\ng:")))
  T.eq(ok.f[9][9][9][9][9][9], "lol")
end)

T.test("documents: empty streams are null, a second document is an error", function()
  T.eq(yaml.decode(""), json.null)
  T.eq(yaml.decode("# just a comment\n"), json.null)
  T.eq(yaml.decode("---\n"), json.null)
  T.eq(yaml.decode("--- ~\n..."), json.null)
  T.eq(yaml.decode("---\na: 1\n...\n").a, 1, "explicit start and end markers")
  T.eq(yaml.decode("%YAML 1.2\n---\na: 1\n").a, 1, "a version directive")
  rejected("a: 1\n---\nb: 2\n", 2, 1, "more than one document (yaml.decode reads a single one)")
  rejected("---\n---\n", 2, 1, "more than one document")
end)

T.test("malformed YAML: nil and line:column", function()
  for _, c in ipairs {
    -- the document, the line and column the message names, the start of its reason
    { "a:\n\tb: 1\n", 2, 1, "found character that cannot start any token" },
    { "a: [1, 2\n", 2, 1, "did not find expected ',' or ']'" },
    { "a: {b: 1\n", 2, 1, "did not find expected ',' or '}'" },
    { "key: value\n  bad: indent\n", 2, 6, "mapping values are not allowed in this context" },
    { "a: 'unterminated\n", 2, 1, "found unexpected end of stream" },
    { "- a\nb: c\n", 2, 1, "did not find expected '-' indicator" },
    { "a: \xff\n", 1, 4, "invalid leading UTF-8 octet" },
    { "a: b\nc: caf\xc3\n", 2, 8, "invalid trailing UTF-8 octet" },
    { "a: caf\xc3", 1, 7, "incomplete UTF-8 octet sequence" },
    { "a: \1\n", 1, 4, "control characters are not allowed" },
    -- UTF-16 input: the position in characters, not in bytes
    { "\xff\xfea\0:\0 \0\1\0", 1, 4, "control characters are not allowed" },
    { "\xfe\xff\0a\0:\0 \0\1", 1, 4, "control characters are not allowed" },
    { "\xff\xfea\0:\0\n\0b\0:\0 \0\x3d\xd8\x00\xde\1\0", 2, 5, "control characters are not allowed" },
    { "\xef\xbb\xbfa: \1", 1, 4, "control characters are not allowed" },
    { "a: *\n", 1, 5, "did not find expected alphabetic or numeric character" },
    { "a: !<tag\n", 1, 9, "did not find the expected '>'" },
  } do
    rejected(table.unpack(c))
  end
end)

T.test("nesting: 512 levels decode, 513 do not", function()
  local v = assert(yaml.decode(("["):rep(512) .. ("]"):rep(512)))
  local depth = 1
  while v[1] do
    v, depth = v[1], depth + 1
  end
  T.eq(depth, 512)
  rejected(("["):rep(513) .. ("]"):rep(513), 1, 513, "collections nested deeper than 512")
  local err = select(2, yaml.decode(("["):rep(100000)))
  T.match(err, "^line 1, column 513: collections nested deeper than 512")
end)

T.test("a big document", function()
  local lines = {}
  for i = 1, 20000 do lines[#lines + 1] = ("k%05d: [%d, v%d, {x: %d}]"):format(i, i, i, i) end
  local t = assert(yaml.decode(table.concat(lines, "\n")))
  T.eq(t.k12345[1], 12345)
  T.eq(t.k12345[2], "v12345")
  T.eq(t.k12345[3].x, 12345)
end)

T.test("wrong argument types raise naming the function", function()
  T.wants_string(yaml.decode, "yaml.decode")
end)

T.test("module shape", function()
  T.eq(require "stagehost.core.yaml", yaml)
  T.eq(type(yaml.decode), "function")
  T.eq(require("stagehost").yaml, yaml)
end)

T.run()
