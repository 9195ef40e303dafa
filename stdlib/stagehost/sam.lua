-- Packaging a SAM application as `sam build` + `sam package` do, for TypeScript/JavaScript
-- functions: each AWS::Serverless::Function is bundled with esbuild, zipped DETERMINISTICALLY,
-- uploaded to S3 under a key named by the zip's SHA-256, and its CodeUri rewritten to that
-- object. Same sources -> same bundle -> same bytes -> same key, so an unchanged function is
-- found in the bucket (head_object) and not uploaded again, and the template is unchanged too:
-- CloudFormation then answers "no changes".
--
--   local sam = require("stagehost.sam")
--   local p = sam.package{
--     dir = "examples/webapp",     -- the application (template and package.json); default "."
--     template = "template.yaml",  -- relative to dir; SAM's default name
--     bucket = "my-artifacts",     -- S3 bucket (created when missing unless create_bucket = false)
--     prefix = "webapp",           -- key prefix (optional)
--     s3 = aws.s3{...},            -- the client (default aws.s3{region = region})
--     region = "eu-west-1",
--     esbuild = "/path/to/esbuild",-- default: `npx --no-install esbuild`, run in dir
--     target = "node20",           -- esbuild --target
--     build_dir = "DIR",           -- where bundles and zips are made (default dir/.aws-sam/stagehost)
--   }
--   p.template   -- the template (a table) with every packaged CodeUri = "s3://bucket/key"
--   p.body       -- p.template as JSON text: CreateChangeSet's TemplateBody
--   p.functions  -- [logical id] = {key, uri, sha256, size, zip (path), entry, handler, uploaded}
--   p.changed    -- sorted logical ids whose zip was not in the bucket yet (uploaded now)
--   p.uploaded   -- how many zips were uploaded
--
-- The zip: Debian's Info-ZIP `zip -X -D` (no extra fields: no uid/gid, no extended
-- timestamps; no directory entries) over the files in byte order, each set to mode 0644 and
-- mtime 1980-01-01 00:00:00 with TZ=UTC (the DOS epoch: zip stores local time, so the zone is
-- fixed). Info-ZIP is packaged everywhere, its output is stable across versions for these
-- flags, and SAM's own zips are ordinary deflate zips that Lambda reads the same way.
local errors = require("stagehost.errors")
local fs = require("stagehost.fs")
local json = require("stagehost.json")
local log = require("stagehost.log")
local proc = require("stagehost.proc")
local crypto = require("stagehost.crypto")

local sam = {}

local FUNCTION = "AWS::Serverless::Function"
local SOURCE_EXTENSIONS = { ".ts", ".mts", ".cts", ".js", ".mjs", ".cjs" }
local FIXED_TIME = "198001010000.00" -- touch -t: the first second a zip can store

-- a template or a source that is not there: the caller's to fix (one line, exit 2)
local function fail(fmt, ...)
  errors.config("sam.package: " .. fmt, ...)
end

local function is_table(v) return type(v) == "table" end

local function run(argv, what)
  argv.quiet = true
  local r = proc.run(argv)
  if not r.ok then
    error(("sam.package: %s failed (exit %d): %s"):format(what, r.code, (((r.stderr or "") .. (r.stdout or "")):gsub("%s+$", ""))), 0)
  end
  return r
end

-- The entry file of a function: Metadata.BuildProperties.EntryPoints[1] (as SAM's esbuild
-- builder takes it), else the Handler's module ("handlers/auth.handler" ->
-- CodeUri/handlers/auth.ts, .js, ...). -> the entry (relative to dir) and the module path the
-- bundle must have in the zip for the Handler to find it.
local function entry_of(dir, logical, code_uri, handler, metadata)
  local module = handler:match("^(.*)%.[^./]+$")
  if not module then fail("%s: Handler '%s' is not of the form file.function", logical, handler) end
  local base = code_uri:gsub("/+$", "")
  local props = is_table(metadata) and is_table(metadata.BuildProperties) and metadata.BuildProperties
  local given = props and is_table(props.EntryPoints) and props.EntryPoints[1]
  if type(given) == "string" then
    local entry = base .. "/" .. given
    if not fs.exists(dir .. "/" .. entry) then fail("%s: entry point '%s' does not exist", logical, entry) end
    return entry, module
  end
  for _, ext in ipairs(SOURCE_EXTENSIONS) do
    local entry = base .. "/" .. module .. ext
    if fs.exists(dir .. "/" .. entry) then return entry, module end
  end
  fail("%s: no source for Handler '%s' under CodeUri '%s' (looked for %s%s with %s)", logical, handler, code_uri,
    base .. "/", module, table.concat(SOURCE_EXTENSIONS, ", "))
end

local function esbuild_argv(opts)
  if opts.esbuild then
    -- esbuild runs in the app's directory; a relative path is the caller's
    local path = opts.esbuild
    if path:find("/", 1, true) and path:sub(1, 1) ~= "/" then path = fs.cwd() .. "/" .. path end
    return { path }
  end
  return { "npx", "--no-install", "esbuild" }
end

-- Bundle one function into stage/<module>.js; -> nothing (raises on failure)
local function bundle(opts, dir, entry, outfile)
  local argv = esbuild_argv(opts)
  for _, a in ipairs{ entry, "--bundle", "--platform=node", "--target=" .. (opts.target or "node20"), "--format=cjs",
    "--outfile=" .. outfile, "--log-level=warning", "--charset=utf8" } do argv[#argv + 1] = a end
  argv.cwd = dir
  argv.timeout = opts.timeout or 300
  run(argv, "esbuild " .. entry)
end

-- The files under root, relative, sorted bytewise.
local function files_under(root, rel, out)
  out = out or {}
  for _, name in ipairs(assert(fs.list(root .. (rel and ("/" .. rel) or "")))) do
    local path = rel and (rel .. "/" .. name) or name
    local _, kind = fs.exists(root .. "/" .. path)
    if kind == "directory" then files_under(root, path, out) else out[#out + 1] = path end
  end
  table.sort(out)
  return out
end

-- A deterministic zip of everything under stage at zip_path.
local function deterministic_zip(stage, zip_path)
  local files = files_under(stage)
  local list = table.concat(files, "\n") .. "\n"
  fs.remove(zip_path)
  local touch = { "touch", "-h", "-t", FIXED_TIME, env = { TZ = "UTC" }, cwd = stage }
  local chmod = { "chmod", "0644", cwd = stage }
  for _, f in ipairs(files) do touch[#touch + 1], chmod[#chmod + 1] = f, f end
  run(chmod, "chmod")
  run(touch, "touch")
  run({ "zip", "-X", "-D", "-q", "-9", zip_path, "-@", cwd = stage, stdin = list, env = { TZ = "UTC" } }, "zip")
end

-- sam.functions(template, dir) -> the packageable functions: {logical, code_uri, handler, entry, module}
-- sorted by logical id; functions whose CodeUri is already s3:// (or has no Handler) are left.
function sam.functions(template, dir)
  local globals = is_table(template.Globals) and is_table(template.Globals.Function) and template.Globals.Function or {}
  local list = {}
  for logical, def in pairs(is_table(template.Resources) and template.Resources or {}) do
    if is_table(def) and def.Type == FUNCTION then
      local props = is_table(def.Properties) and def.Properties or {}
      local code_uri = props.CodeUri
      if code_uri == nil then code_uri = globals.CodeUri end
      local handler = props.Handler or globals.Handler
      if type(code_uri) == "string" and not code_uri:match("^s3://") and type(handler) == "string" then
        local entry, module = entry_of(dir, logical, code_uri, handler, def.Metadata)
        list[#list + 1] = { logical = logical, code_uri = code_uri, handler = handler, entry = entry, module = module }
      end
    end
  end
  table.sort(list, function(a, b) return a.logical < b.logical end)
  return list
end

function sam.package(opts)
  errors.check_table(opts, 1, "sam.package")
  if type(opts.bucket) ~= "string" or opts.bucket == "" then
    errors.argument(1, "sam.package", "bucket must be a non-empty string, got %s", type(opts.bucket))
  end
  local dir = opts.dir or "."
  local template_path = dir .. "/" .. (opts.template or "template.yaml")
  local text, err = fs.read(template_path)
  if not text then fail("cannot read %s: %s", template_path, tostring(err)) end
  local template, problem
  if text:match("^%s*{") then template, problem = json.decode(text)
  else template, problem = require("stagehost.yaml").decode(text) end
  if not is_table(template) then fail("%s is not a template: %s", template_path, tostring(problem)) end

  local s3 = opts.s3 or require("stagehost.aws").s3{ region = opts.region }
  if opts.create_bucket ~= false then s3:create_bucket{ bucket = opts.bucket } end
  local build = opts.build_dir or (dir .. "/.aws-sam/stagehost")
  if build:sub(1, 1) ~= "/" then build = fs.cwd() .. "/" .. build end -- zip and esbuild run elsewhere
  assert(fs.mkdir(build))

  local result = { template = template, functions = {}, changed = {}, uploaded = 0 }
  local globals = is_table(template.Globals) and is_table(template.Globals.Function) and template.Globals.Function
  for _, fn in ipairs(sam.functions(template, dir)) do
    local stage = build .. "/" .. fn.logical
    fs.remove(stage, { recursive = true })
    assert(fs.mkdir(stage))
    local outfile = stage .. "/" .. fn.module .. ".js"
    bundle(opts, dir, fn.entry, outfile)
    local zip_path = build .. "/" .. fn.logical .. ".zip"
    deterministic_zip(stage, zip_path)
    local bytes = assert(fs.read(zip_path))
    local sha = crypto.sha256(bytes, "hex")
    local key = (opts.prefix and (opts.prefix:gsub("/+$", "") .. "/") or "") .. sha .. ".zip"
    local present = s3:head_object{ bucket = opts.bucket, key = key }
    if not present then
      s3:put_object{ bucket = opts.bucket, key = key, body = bytes, content_type = "application/zip" }
      result.uploaded = result.uploaded + 1
      result.changed[#result.changed + 1] = fn.logical
      log.info(("sam.package: %s: uploaded s3://%s/%s (%d bytes)"):format(fn.logical, opts.bucket, key, #bytes))
    else
      log.info(("sam.package: %s: unchanged (s3://%s/%s is there)"):format(fn.logical, opts.bucket, key))
    end
    local uri = ("s3://%s/%s"):format(opts.bucket, key)
    local def = template.Resources[fn.logical]
    def.Properties = is_table(def.Properties) and def.Properties or {}
    def.Properties.CodeUri = uri
    result.functions[fn.logical] = { key = key, uri = uri, sha256 = sha, size = #bytes, zip = zip_path,
      entry = fn.entry, handler = fn.handler, uploaded = not present }
  end
  -- every function now names its own object: a local CodeUri in Globals would only mislead
  if globals and type(globals.CodeUri) == "string" and not globals.CodeUri:match("^s3://") then globals.CodeUri = nil end
  result.body = json.encode(template, { pretty = true })
  return result
end

return sam
