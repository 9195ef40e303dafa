-- Validate the infrastructure: the template parses, cfn-lint (AWS's when on PATH) and
-- `sam validate` (when sam is on PATH) find nothing, CloudFormation's ValidateTemplate
-- accepts it; then package the functions as `sam package` does and create the change set
-- whose preview is shown here and executed by deploy-infrastructure.
local aws = require("stagehost.aws")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")
local yaml = require("stagehost.yaml")
local App = require("lib.app")
local deploy = require("lib.deploy")

local function on_path(name)
  return proc.run{ "sh", "-c", 'command -v "$1"', "sh", name, quiet = true }.ok
end

-- cfn-lint: AWS's (pip/Debian) when on PATH, else npm's from the app's node_modules.
local function cfn_lint(app)
  local argv = on_path("cfn-lint") and { "cfn-lint", "--format", "parseable", "template.yaml" }
    or (fs.exists(app.dir .. "/node_modules/.bin/cfn-lint") and { "npx", "--no-install", "cfn-lint", "validate", "template.yaml" })
  if not argv then return { status = "skipped", summary = "cfn-lint is not installed (pip install cfn-lint)" } end
  argv.cwd, argv.name, argv.timeout = app.dir, "cfn-lint", 300
  local r = proc.run(argv)
  if r.ok then return { status = "passed", summary = "no findings" } end
  local findings = {}
  for line in r.stdout:gmatch("[^\n]+") do findings[#findings + 1] = line end
  -- cfn-lint exits 4 for warnings only, 8 for informational: those do not stop a deployment
  if r.code == 4 or r.code == 8 or r.code == 12 then
    return { status = "passed", summary = ("%d warning(s)"):format(#findings), details = findings }
  end
  return { status = "failed", summary = ("%d finding(s), exit %d"):format(#findings, r.code), details = findings }
end

local function sam_validate(app)
  if not on_path("sam") then return { status = "skipped", summary = "sam is not on PATH" } end
  local r = proc.run{ "sam", "validate", "--lint", cwd = app.dir, name = "sam validate", timeout = 300 }
  return { status = r.ok and "passed" or "failed", summary = r.ok and "valid" or ("exit " .. r.code) }
end

return function(ctx)
  local app = App.of(ctx)
  local text = assert(fs.read(app.dir .. "/template.yaml"))
  local template, why = yaml.decode(text)
  if type(template) ~= "table" then error(("template.yaml does not parse: %s"):format(why or "not a mapping"), 0) end

  local lint, sam = cfn_lint(app), sam_validate(app)
  ctx.log.info(("cfn-lint: %s (%s); sam validate: %s (%s)"):format(lint.status, lint.summary, sam.status, sam.summary))
  if lint.status == "failed" then
    error("cfn-lint found errors in template.yaml:\n" .. table.concat(lint.details or {}, "\n"), 0)
  end
  if sam.status == "failed" then error("sam validate failed: " .. sam.summary, 0) end

  local cfn = aws.cloudformation{ region = app.region }
  local validated = cfn:validate_template{ body = text }
  ctx.log.info(("ValidateTemplate: %d parameter(s), capabilities %s"):format(#(validated.parameters or {}),
    table.concat(validated.capabilities or {}, ", ")))

  local packaged = deploy.package(ctx, app, template)
  local change = deploy.change_set(ctx, app, packaged)
  ctx:artifact("change-set.md", change.preview_markdown)
  ctx:artifact("change-set.json", change.changes)
  return {
    template_sha256 = packaged.sha256, template_key = packaged.template_key, parameters = packaged.parameters,
    functions = packaged.functions, change_set = change.id, change_set_type = change.type, stack_name = app.stack,
    no_changes = change.no_changes, preview = change.preview_markdown,
    checks = { cfn_lint = lint.status, sam_validate = sam.status, validate_template = "passed" },
  }
end
