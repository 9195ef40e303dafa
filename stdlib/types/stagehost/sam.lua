---@meta stagehost.sam
-- LuaLS annotations for `require "stagehost.sam"` (stdlib/stagehost/sam.lua): packaging a SAM
-- application as `sam build` + `sam package` do. Definitions only.

---@class stagehost.sam.PackageOptions
---@field bucket string the S3 bucket for the zips (created when missing unless create_bucket = false)
---@field dir? string the application's directory (template and package.json); default "."
---@field template? string relative to dir; default "template.yaml"
---@field prefix? string S3 key prefix
---@field s3? stagehost.aws.S3 the client; default aws.s3{region = region}
---@field region? string
---@field create_bucket? boolean default true
---@field esbuild? string path of the esbuild binary; default `npx --no-install esbuild` in dir
---@field target? string esbuild --target; default "node20"
---@field build_dir? string where bundles and zips are made; default dir/.aws-sam/stagehost
---@field timeout? number seconds for one esbuild run; default 300

---@class stagehost.sam.PackagedFunction
---@field key string the S3 key: [prefix/]<sha256 of the zip>.zip
---@field uri string "s3://bucket/key", the new CodeUri
---@field sha256 string
---@field size integer bytes of the zip
---@field zip string the zip's path
---@field entry string the bundled source, relative to dir
---@field handler string
---@field uploaded boolean false when the bucket had it already

---@class stagehost.sam.Packaged
---@field template table the template with every packaged CodeUri rewritten
---@field body string the template as JSON text (CreateChangeSet's TemplateBody)
---@field functions table<string, stagehost.sam.PackagedFunction> by logical id
---@field changed string[] logical ids uploaded now (their zip was not in the bucket), sorted
---@field uploaded integer

---@class stagehost.sam.Function
---@field logical string
---@field code_uri string
---@field handler string
---@field entry string
---@field module string the Handler's module path, where the bundle goes in the zip

---@class stagehost.sam
local sam = {}

---Bundles each TypeScript/JavaScript AWS::Serverless::Function with esbuild, zips it
---deterministically, uploads it under its SHA-256 (unless there) and rewrites its CodeUri.
---@param opts stagehost.sam.PackageOptions
---@return stagehost.sam.Packaged
function sam.package(opts) end

---The functions of a decoded template that package would bundle, sorted by logical id.
---@param template table
---@param dir string the application's directory
---@return stagehost.sam.Function[]
function sam.functions(template, dir) end

return sam
