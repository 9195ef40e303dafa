-- The sandbox judged by AWS's own tools, where this machine has them (the image's default
-- python3 ships them; a fresh Debian does not):
--   * aws-sam-translator: the sandbox's SAM expansion makes the resources (logical ids and
--     types; a Deployment's hash suffix aside) that samtranslator's transform makes, for every
--     SAM template in tests/ and examples/;
--   * moto_server: stagehost's CloudFormation client validates, deploys a stack through a
--     change set, waits, reads events and outputs, and deletes, against moto (modelled on AWS,
--     written by others), not only against our own sandbox;
--   * cfn-lint: the tests' templates are templates CloudFormation's linter finds no error in.
-- Each oracle is looked for when the file loads (python3 on PATH, then /usr/bin/python3). A
-- missing one is a skip that says why ("SKIP: <test>: <reason>"), never a silent pass; when
-- every oracle is missing the file exits 77, which ctest shows as skipped (SKIP_RETURN_CODE 77
-- in tests/CMakeLists.txt).
local T = require("harness")
local task = require("stagehost.task")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local yaml = require("stagehost.yaml")
local http = require("stagehost.http")

local source_dir = os.getenv("STAGEHOST_SOURCE_DIR")
  or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]*$") or "."
local PY_DIR = source_dir .. "/tests/python"
local SAM_TRANSFORM = "AWS::Serverless-2016-10-31"

---------------------------------------------------------------------------------------------------
-- skips: an oracle is looked for when the file loads; a test whose oracle is missing is not
-- run but reported, and a file whose every test skipped exits 77

local registered, skipped = 0, {}

-- oracle_test(name, find, fn, opts): find() -> the oracle (passed to fn), or nil and why not.
local function oracle_test(name, find, fn, opts)
  local oracle, why = find()
  if oracle == nil then
    skipped[#skipped + 1] = name
    io.stdout:write(("SKIP: %s: %s\n"):format(name, why))
    return
  end
  registered = registered + 1
  T.test(name, function() return fn(oracle) end, opts)
end

---------------------------------------------------------------------------------------------------
-- the Python that has the oracles: the image's default python3 first, then Debian's

local python_cache

-- The first python3 on PATH (or /usr/bin/python3) that imports every module of `modules`;
-- nil and why not otherwise.
local function python_with(modules)
  python_cache = python_cache or {}
  local key = table.concat(modules, ",")
  if python_cache[key] ~= nil then return python_cache[key] or nil, python_cache[key .. "?"] end
  local tried = {}
  for _, python in ipairs{ "python3", "/usr/bin/python3" } do
    local check = ("import %s"):format(key)
    local ok, r = pcall(proc.run, { python, "-c", check, timeout = 60 })
    if ok and r.code == 0 then
      python_cache[key] = python
      return python
    end
    tried[#tried + 1] = ("%s: %s"):format(python, ok and (r.stderr:match("([^\n]*)\n?$") or "exit " .. r.code) or tostring(r))
  end
  python_cache[key] = false
  python_cache[key .. "?"] = ("no python3 imports %s (%s)"):format(key, table.concat(tried, "; "))
  return nil, python_cache[key .. "?"]
end

-- A find for oracle_test: the python3 that imports module, or nil and why not, beginning
-- "<package> is not installed".
local function python_module(module, package)
  return function()
    local python, why = python_with{ module }
    if not python then return nil, package .. " is not installed: " .. why end
    return python
  end
end

---------------------------------------------------------------------------------------------------
-- (a) SAM: every SAM template in the tests, expanded by the sandbox and by samtranslator

-- Templates written as Lua tables in test files (test_sandbox_aws.lua), which no scan finds:
-- kept here in the same form. YAML and JSON ones, in files or in Lua long strings, are found
-- by scan_templates below.
local TABLE_TEMPLATES = {
  ["test_sandbox_aws.lua: a function with no events"] = {
    Transform = SAM_TRANSFORM,
    Resources = { Fn = { Type = "AWS::Serverless::Function",
      Properties = { Handler = "x", Runtime = "nodejs24.x", InlineCode = "exports.handler = async () => 1" } } },
  },
  ["test_sandbox_aws.lua: intrinsics, conditions, SAM"] = {
    Transform = SAM_TRANSFORM,
    Parameters = { Env = { Type = "String", Default = "staging", AllowedValues = { "staging", "production" } } },
    Conditions = { IsProd = { ["Fn::Equals"] = { { Ref = "Env" }, "production" } } },
    Globals = { Function = { Runtime = "nodejs24.x" } },
    Resources = {
      Assets = { Type = "AWS::S3::Bucket" },
      ProdOnly = { Type = "AWS::SQS::Queue", Condition = "IsProd" },
      Fn = { Type = "AWS::Serverless::Function", Properties = { Handler = "app.handler",
        InlineCode = "exports.handler = async () => 1", Events = { Http = { Type = "HttpApi" } } } },
    },
  },
}

-- The sandbox's own cases, beyond what the tests deploy: every event type it expands (explicit
-- and implicit APIs, a conditional function, an alias, a layer an output refers to), and what
-- SAM refuses (compared message by message).
TABLE_TEMPLATES["the sandbox's SAM: every event type"] = json.decode[==[
{
 "Conditions": {
  "IsProd": {
   "Fn::Equals": [
    {
     "Ref": "AWS::Region"
    },
    "us-west-2"
   ]
  }
 },
 "Outputs": {
  "Layer": {
   "Value": {
    "Ref": "L"
   }
  }
 },
 "Resources": {
  "App": {
   "Properties": {
    "Location": "https://s3.amazonaws.com/b/t.yaml"
   },
   "Type": "AWS::Serverless::Application"
  },
  "B": {
   "Type": "AWS::S3::Bucket"
  },
  "Fn": {
   "Properties": {
    "CodeUri": "s3://stagehost-artifacts/fn.zip",
    "Events": {
     "A1": {
      "Properties": {
       "Method": "get",
       "Path": "/a",
       "RestApiId": {
        "Ref": "MyApi"
       }
      },
      "Type": "Api"
     },
     "Cw": {
      "Properties": {
       "Pattern": {
        "source": [
         "x"
        ]
       }
      },
      "Type": "CloudWatchEvent"
     },
     "Ddb": {
      "Properties": {
       "StartingPosition": "LATEST",
       "Stream": {
        "Fn::GetAtt": [
         "Tab",
         "StreamArn"
        ]
       }
      },
      "Type": "DynamoDB"
     },
     "Ev": {
      "Properties": {
       "Pattern": {
        "source": [
         "x"
        ]
       }
      },
      "Type": "EventBridgeRule"
     },
     "H1": {
      "Properties": {
       "ApiId": {
        "Ref": "MyHttp"
       }
      },
      "Type": "HttpApi"
     },
     "H2": {
      "Properties": {
       "ApiId": {
        "Ref": "MyHttp2"
       },
       "Method": "get",
       "Path": "/x"
      },
      "Type": "HttpApi"
     },
     "Sched": {
      "Properties": {
       "Schedule": "rate(1 hour)"
      },
      "Type": "Schedule"
     },
     "Sns": {
      "Properties": {
       "Topic": {
        "Ref": "T"
       }
      },
      "Type": "SNS"
     },
     "Sqs": {
      "Properties": {
       "Queue": {
        "Fn::GetAtt": [
         "Q",
         "Arn"
        ]
       }
      },
      "Type": "SQS"
     }
    },
    "Handler": "a",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "Fn2": {
   "Properties": {
    "AutoPublishAlias": "live",
    "Events": {
     "Other": {
      "Properties": {
       "Method": "post",
       "Path": "/o"
      },
      "Type": "Api"
     },
     "Root": {
      "Properties": {
       "Method": "get",
       "Path": "/"
      },
      "Type": "Api"
     }
    },
    "Handler": "a",
    "InlineCode": "x",
    "Role": "arn:aws:iam::123456789012:role/r",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "L": {
   "Properties": {
    "ContentUri": "s3://stagehost-artifacts/layer.zip"
   },
   "Type": "AWS::Serverless::LayerVersion"
  },
  "Logs": {
   "Properties": {
    "Events": {
     "Alexa": {
      "Type": "AlexaSkill"
     },
     "Iot": {
      "Properties": {
       "Sql": "SELECT * FROM x"
      },
      "Type": "IoTRule"
     },
     "Logs": {
      "Properties": {
       "FilterPattern": "",
       "LogGroupName": "g"
      },
      "Type": "CloudWatchLogs"
     },
     "Mq": {
      "Properties": {
       "Broker": "arn:aws:mq:us-east-1:123456789012:broker:orders:b-0123abcd",
       "Queues": [
        "q"
       ],
       "SourceAccessConfigurations": [
        {
         "Type": "BASIC_AUTH",
         "URI": "arn:aws:secretsmanager:us-east-1:123456789012:secret:mq-AbCdEf"
        }
       ]
      },
      "Type": "MQ"
     },
     "S2": {
      "Properties": {
       "ScheduleExpression": "rate(1 hour)"
      },
      "Type": "ScheduleV2"
     }
    },
    "Handler": "a",
    "InlineCode": "x",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "MyApi": {
   "Properties": {
    "StageName": "v1"
   },
   "Type": "AWS::Serverless::Api"
  },
  "MyHttp": {
   "Properties": {},
   "Type": "AWS::Serverless::HttpApi"
  },
  "MyHttp2": {
   "Properties": {
    "StageName": "beta"
   },
   "Type": "AWS::Serverless::HttpApi"
  },
  "ProdFn": {
   "Condition": "IsProd",
   "Properties": {
    "CodeUri": {
     "Bucket": "stagehost-artifacts",
     "Key": "prod-fn.zip"
    },
    "Events": {
     "Http": {
      "Properties": {
       "Method": "get",
       "Path": "/p"
      },
      "Type": "HttpApi"
     }
    },
    "Handler": "a",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "Q": {
   "Type": "AWS::SQS::Queue"
  },
  "S3Fn": {
   "Properties": {
    "Events": {
     "Up": {
      "Properties": {
       "Bucket": {
        "Ref": "B"
       },
       "Events": "s3:ObjectCreated:*"
      },
      "Type": "S3"
     }
    },
    "Handler": "a",
    "InlineCode": "x",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "SM": {
   "Properties": {
    "Definition": {
     "StartAt": "a",
     "States": {
      "a": {
       "End": true,
       "Type": "Pass"
      }
     }
    }
   },
   "Type": "AWS::Serverless::StateMachine"
  },
  "T": {
   "Type": "AWS::SNS::Topic"
  },
  "Tab": {
   "Properties": {
    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
    "StreamSpecification": {
     "StreamViewType": "NEW_IMAGE"
    }
   },
   "Type": "AWS::DynamoDB::Table"
  },
  "Tbl": {
   "Type": "AWS::Serverless::SimpleTable"
  }
 },
 "Transform": "AWS::Serverless-2016-10-31"
}
]==]
TABLE_TEMPLATES["the sandbox's SAM: what the transform refuses"] = json.decode[==[
{
 "Resources": {
  "BadEvents": {
   "Properties": {
    "Events": {
     "NoMethod": {
      "Properties": {
       "Path": "/"
      },
      "Type": "Api"
     },
     "Queue": {
      "Properties": {},
      "Type": "SQS"
     },
     "What": {
      "Type": "Carrier"
     }
    },
    "Handler": "a",
    "InlineCode": "x",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "LocalCode": {
   "Properties": {
    "CodeUri": "s3://only-a-bucket",
    "Handler": "a",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "NoCode": {
   "Properties": {
    "Handler": "a",
    "Runtime": "nodejs24.x"
   },
   "Type": "AWS::Serverless::Function"
  },
  "NoStage": {
   "Properties": {},
   "Type": "AWS::Serverless::Api"
  }
 },
 "Transform": "AWS::Serverless-2016-10-31"
}
]==]

-- Every Lua long string of `text` that holds a SAM template in YAML.
local function long_strings(text)
  local found = {}
  local pos = 1
  while true do
    local s, e, eq = text:find("%[(=*)%[", pos)
    if not s then break end
    local close = "]" .. eq .. "]"
    local stop = text:find(close, e + 1, true)
    if not stop then break end
    local body = text:sub(e + 1, stop - 1)
    if body:find("Transform:%s*" .. SAM_TRANSFORM:gsub("%-", "%%-")) then found[#found + 1] = body end
    pos = stop + #close
  end
  return found
end

local function walk(dir, out)
  for _, name in ipairs(fs.list(dir) or {}) do
    local path = dir .. "/" .. name
    local _, kind = fs.exists(path)
    if kind == "directory" then
      if name ~= "node_modules" and name:sub(1, 1) ~= "." then walk(path, out) end
    else
      out[#out + 1] = path
    end
  end
  return out
end

-- {name = template table} for every SAM template under tests/ and examples/: YAML or JSON
-- files, and YAML in Lua long strings, plus TABLE_TEMPLATES.
local function sam_templates()
  local templates = {}
  for name, t in pairs(TABLE_TEMPLATES) do templates[name] = t end
  local files = walk(source_dir .. "/tests", {})
  if fs.exists(source_dir .. "/examples") then walk(source_dir .. "/examples", files) end
  for _, path in ipairs(files) do
    local rel = path:sub(#source_dir + 2)
    if path:match("%.ya?ml$") or path:match("%.json$") or path:match("%.template$") then
      local text = fs.read(path)
      if text and text:find(SAM_TRANSFORM, 1, true) then
        local t, err = yaml.decode(text)
        assert(t, ("%s: %s"):format(rel, tostring(err)))
        templates[rel] = t
      end
    elseif path:match("%.lua$") then
      for i, body in ipairs(long_strings(fs.read(path) or "")) do
        local t, err = yaml.decode(body)
        assert(t, ("%s (template %d): %s"):format(rel, i, tostring(err)))
        templates[("%s (template %d)"):format(rel, i)] = t
      end
    end
  end
  return templates
end

-- What `sam package` (or `sam deploy`) does before the transform runs: a local code path
-- becomes the S3 object it was uploaded to. Templates in the tests are written as a developer
-- keeps them (CodeUri: src/); the transform only ever sees them packaged.
local function packaged(template)
  local t = json.decode(json.encode(template))
  local function fix(props)
    if type(props) ~= "table" then return end
    for _, key in ipairs{ "CodeUri", "ContentUri", "DefinitionUri" } do
      local v = props[key]
      if type(v) == "string" and not v:match("^s3://") and not v:match("^https?://") then
        props[key] = "s3://stagehost-packaged/" .. v:gsub("/+$", ""):gsub("[^%w%-_.]", "-") .. ".zip"
      end
    end
  end
  for _, def in pairs(type(t.Resources) == "table" and t.Resources or {}) do
    if type(def) == "table" then fix(def.Properties) end
  end
  for _, section in pairs(type(t.Globals) == "table" and t.Globals or {}) do fix(section) end
  return t
end

-- The resources the sandbox's transform makes: {logical = type}, or nil and its refusal.
local function sandbox_resources(template)
  local copy = json.decode(json.encode(template))
  local ok, why = require("stagehost.sandbox.sam").expand(copy)
  if not ok then return nil, why end
  local out = {}
  for logical, def in pairs(copy.Resources) do out[logical] = def.Type end
  return out
end

-- A Deployment's logical id ends in a hash of the API's definition (ServerlessRestApiDeployment
-- 945d53ab0b), a Version's and a layer's in a hash of their code: compared without it.
local HASHED = { ["AWS::ApiGateway::Deployment"] = true, ["AWS::Lambda::Version"] = true,
  ["AWS::Lambda::LayerVersion"] = true }
local function normalise(resources)
  local out = {}
  for logical, kind in pairs(resources) do
    if HASHED[kind] then logical = logical:gsub("%x%x%x%x%x%x%x%x%x%x$", "<hash>") end
    out[logical] = kind
  end
  return out
end

local sorted_keys = require("stagehost.util.tables").sorted_keys

-- The differences between two {logical = type} maps, one line each.
local function differences(ours, theirs)
  local lines = {}
  for _, logical in ipairs(sorted_keys(theirs)) do
    if ours[logical] == nil then
      lines[#lines + 1] = ("  missing in the sandbox: %s (%s)"):format(logical, theirs[logical])
    elseif ours[logical] ~= theirs[logical] then
      lines[#lines + 1] = ("  %s: the sandbox says %s, samtranslator %s"):format(logical, ours[logical], theirs[logical])
    end
  end
  for _, logical in ipairs(sorted_keys(ours)) do
    if theirs[logical] == nil then
      lines[#lines + 1] = ("  only in the sandbox: %s (%s)"):format(logical, ours[logical])
    end
  end
  return lines
end

oracle_test("SAM: the sandbox's expansion makes samtranslator's resources for every SAM template in the tests",
    python_module("samtranslator.translator.transform", "aws-sam-translator"), function(python)
  local templates = sam_templates()
  local names = sorted_keys(templates)
  T.ok(#names >= 4, "found the tests' SAM templates (" .. #names .. ")")
  local cases = json.array{}
  for _, name in ipairs(names) do
    templates[name] = packaged(templates[name])
    cases[#cases + 1] = { name = name, template = templates[name] }
  end
  local r = proc.run{ python, PY_DIR .. "/sam_resources.py", stdin = json.encode(cases), timeout = 120 }
  T.eq(r.code, 0, "sam_resources.py: " .. r.stderr)
  local answers = json.decode(r.stdout)
  local problems = {}
  for _, name in ipairs(names) do
    local answer = answers[name]
    local ours, refusal = sandbox_resources(templates[name])
    if answer.error and not refusal then
      problems[#problems + 1] = ("%s: samtranslator refuses it (%s); the sandbox accepts it"):format(name, answer.error)
    elseif refusal and not answer.error then
      problems[#problems + 1] = ("%s: the sandbox refuses it (%s); samtranslator accepts it"):format(name, refusal)
    elseif refusal then
      -- both refuse: with the same words for the same resources
      for cause in answer.error:gmatch("[^\n]+") do
        if not refusal:find(cause, 1, true) then
          problems[#problems + 1] = ("%s: samtranslator says %q; the sandbox says %q"):format(name, cause, refusal)
        end
      end
    else
      local lines = differences(normalise(ours), normalise(answer.resources))
      if #lines > 0 then problems[#problems + 1] = name .. ":\n" .. table.concat(lines, "\n") end
    end
  end
  if #problems > 0 then io.stdout:write("    " .. table.concat(problems, "\n"):gsub("\n", "\n    ") .. "\n") end
  T.eq(#problems, 0, "templates on which the sandbox and samtranslator differ (listed above)")
  io.stdout:write(("    %d SAM templates agree: %s\n"):format(#names, table.concat(names, ", ")))
end, { timeout = 180 })

---------------------------------------------------------------------------------------------------
-- (b) stagehost's CloudFormation client against moto_server, an emulator modelled on AWS that
-- is not ours

-- A free loopback port: bound, read and let go (moto binds it a moment later).
local function free_port()
  local probe = http.serve{ host = "127.0.0.1", port = 0, handler = function() return "" end }
  local port = probe.port
  probe:close()
  return port
end

-- moto_server on a free loopback port for fn(url); stopped (and waited for) whatever fn does.
local function with_moto(python, fn)
  local port = free_port()
  local server = proc.spawn{ python, "-m", "moto.server", "-H", "127.0.0.1", "-p", tostring(port), name = "moto",
    env = { AWS_DEFAULT_REGION = "us-east-1", AWS_EC2_METADATA_DISABLED = "true" } }
  local url = ("http://127.0.0.1:%d"):format(port)
  local ok, err = pcall(function()
    local deadline = task.now() + 30
    while true do
      local up, r = pcall(http.request, { url = url .. "/moto-api/", timeout = 2 })
      if up and r.status == 200 then break end
      T.ok(task.now() < deadline, "moto_server answered within 30 s on " .. url)
      task.sleep(0.1)
    end
    fn(url)
  end)
  server:kill()
  server:wait()
  if not ok then error(err, 0) end
end

-- A template moto models: a bucket and a queue, a parameter used, outputs by Ref and GetAtt.
local MOTO_TEMPLATE = {
  AWSTemplateFormatVersion = "2010-09-09",
  Description = "stagehost client against moto",
  Parameters = { QueueName = { Type = "String", Default = "stagehost-oracle-queue" } },
  Resources = {
    Bucket = { Type = "AWS::S3::Bucket" },
    Queue = { Type = "AWS::SQS::Queue", Properties = { QueueName = { Ref = "QueueName" }, VisibilityTimeout = 60 } },
  },
  Outputs = {
    BucketName = { Value = { Ref = "Bucket" } },
    QueueArn = { Value = { ["Fn::GetAtt"] = { "Queue", "Arn" } } },
    QueueUrl = { Value = { Ref = "Queue" } },
  },
}

oracle_test("CloudFormation: stagehost's client deploys through a change set on moto_server and reads what it answers",
    python_module("moto.server", "moto (moto_server)"), function(python)
  local aws = require("stagehost.aws")
  with_moto(python, function(url)
    local cfn = aws.cloudformation{ region = "us-east-1", endpoint = url, poll = { min = 0.05, max = 0.3 },
      credentials = { access_key_id = "AKIDMOTOORACLE", secret_access_key = "moto-oracle-secret" } }
    local checked = cfn:validate_template{ template = MOTO_TEMPLATE }
    T.eq(checked.description, "stagehost client against moto")
    T.eq(cfn:describe_stack("stagehost-oracle"), nil, "a missing stack is nil (moto's ValidationError read as AWS's)")

    local cs = cfn:create_change_set{ stack_name = "stagehost-oracle", template = MOTO_TEMPLATE }
    T.eq(cs.type, "CREATE")
    T.match(cs.id, "^arn:aws:cloudformation:us%-east%-1:%d+:changeSet/")
    local described = cfn:wait_change_set(cs)
    T.eq(described.status, "CREATE_COMPLETE")
    local adds = {}
    for _, c in ipairs(described.changes) do adds[#adds + 1] = c.action .. " " .. c.logical_id .. " " .. c.type end
    table.sort(adds)
    T.eq(table.concat(adds, ", "), "Add Bucket AWS::S3::Bucket, Add Queue AWS::SQS::Queue")
    cfn:execute_change_set(cs)
    local done = cfn:wait_stack("stagehost-oracle", { timeout = 60 })
    T.eq(done.status, "CREATE_COMPLETE"); T.ok(done.ok, "the stack is stable")
    local stack = cfn:describe_stack("stagehost-oracle")
    T.eq(stack.status, "CREATE_COMPLETE")
    T.ok(#cfn:events("stagehost-oracle") >= 2, "the stack's events read")

    -- moto 5.2 builds no outputs for a stack made by ExecuteChangeSet (its change set updates
    -- the resources only), so the outputs moto does answer are read from a stack it creates
    -- directly: the parser meets moto's DescribeStacks with outputs either way
    aws.query("cloudformation", "us-east-1", "CreateStack", "2010-05-15", {
      StackName = "stagehost-oracle-direct", TemplateBody = json.encode(MOTO_TEMPLATE),
      ["Parameters.member.1.ParameterKey"] = "QueueName", ["Parameters.member.1.ParameterValue"] = "direct-queue",
    }, { endpoint = url, credentials = cfn.credentials })
    local direct = cfn:wait_stack("stagehost-oracle-direct", { timeout = 60 })
    T.eq(direct.status, "CREATE_COMPLETE")
    local outputs = cfn:outputs("stagehost-oracle-direct")
    T.match(outputs.BucketName, "^stagehost%-oracle%-direct%-bucket%-", "Ref of a bucket: its made-up name")
    T.eq(outputs.QueueArn, "arn:aws:sqs:us-east-1:123456789012:direct-queue")
    T.match(outputs.QueueUrl, "/123456789012/direct%-queue$")

    cfn:delete_stack("stagehost-oracle", { wait = true })
    T.eq(cfn:describe_stack("stagehost-oracle"), nil, "deleted")
  end)
end, { timeout = 180 })

---------------------------------------------------------------------------------------------------
-- (c) cfn-lint on the tests' templates: an error fails, warnings are listed

-- cfn-lint on PATH, else the module of a python3 that has it
local function find_cfn_lint()
  local which = proc.run{ "/bin/sh", "-c", "command -v cfn-lint" }
  if which.ok and proc.run{ (which.stdout:gsub("%s+$", "")), "--version", timeout = 60 }.ok then
    return { (which.stdout:gsub("%s+$", "")) }
  end
  local python, why = python_module("cfnlint", "cfn-lint")()
  if python then return { python, "-m", "cfnlint" } end
  return nil, why
end

oracle_test("cfn-lint: the tests' templates have no errors", find_cfn_lint, function(command)
  local dir = T.tempdir()
  local templates = sam_templates()
  templates["the sandbox's SAM: what the transform refuses"] = nil -- refused on purpose
  templates["moto: a bucket and a queue"] = MOTO_TEMPLATE
  local argv = {}
  for _, part in ipairs(command) do argv[#argv + 1] = part end
  for _, a in ipairs{ "--format", "json", "--regions", "us-east-1", "--" } do argv[#argv + 1] = a end
  local by_file = {}
  for i, name in ipairs(sorted_keys(templates)) do
    local path = ("%s/template-%02d.json"):format(dir, i)
    assert(fs.write(path, json.encode(templates[name], { pretty = true })))
    by_file[path] = name
    argv[#argv + 1] = path
  end
  argv.timeout = 180
  local r = proc.run(argv)
  fs.remove(dir, { recursive = true })
  local ok, findings = pcall(json.decode, r.stdout)
  T.ok(ok and type(findings) == "table", "cfn-lint's JSON (exit " .. r.code .. "): " .. r.stderr .. r.stdout)
  local errors, warnings = {}, {}
  for _, f in ipairs(findings) do
    local where = ("%s: %s %s (%s)"):format(by_file[f.Filename] or f.Filename, f.Rule.Id, f.Message,
      table.concat(f.Location and f.Location.Path or {}, "/"))
    if f.Level == "Error" then errors[#errors + 1] = where else warnings[#warnings + 1] = where end
  end
  for _, w in ipairs(warnings) do io.stdout:write("    cfn-lint warning: " .. w .. "\n") end
  for _, e in ipairs(errors) do io.stdout:write("    cfn-lint error: " .. e .. "\n") end
  T.eq(#errors, 0, "cfn-lint errors in the tests' templates (listed above)")
end, { timeout = 240 })

if registered == 0 then
  -- every oracle is missing: ctest shows the file as skipped (SKIP_RETURN_CODE 77)
  io.stdout:write(("0 passed, 0 failed, %d skipped\n"):format(#skipped))
  io.stdout:flush()
  os.exit(77)
end
T.run(function()
  if #skipped > 0 then
    io.stdout:write(("%d skipped (oracle missing): %s\n"):format(#skipped, table.concat(skipped, "; ")))
  end
end)
