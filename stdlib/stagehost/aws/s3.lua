-- S3 (REST-XML), the part a deployment needs: buckets for packaged code, objects put, looked
-- at and fetched. Requests go path-style (ENDPOINT/bucket/key), which every S3 endpoint takes
-- and the only form a custom endpoint (the sandbox, a MinIO) can serve.
--
--   local s3 = aws.s3{ region = "eu-west-1" }
--   s3:create_bucket{ bucket }                      -> {created = true | false (already yours)}
--   s3:put_object{ bucket, key, body | file, content_type, metadata = {k = v} } -> {etag}
--   s3:head_object{ bucket, key }  -> {etag, size, content_type, last_modified, metadata} | nil (404)
--   s3:get_object{ bucket, key }   -> {body, etag, content_type, metadata}
--   s3:delete_object{ bucket, key }
-- S3's errors (NoSuchBucket, NoSuchKey, AccessDenied, ...) are raised as aws errors.
local aws = require("stagehost.aws")
local crypto = require("stagehost.crypto")
local errors = require("stagehost.errors")

local s3 = {}
local Client, new_client = aws.client_class("aws.s3")

function s3.new(opts)
  return new_client(opts)
end

-- A key as it goes into a path: each segment percent-encoded, the slashes kept.
local function key_path(key)
  local parts = {}
  for segment in (key .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = aws.uri_encode(segment) end
  return table.concat(parts, "/")
end

local function check(opts, who, need_key)
  errors.check_table(opts, 1, "aws.s3:" .. who)
  if type(opts.bucket) ~= "string" or opts.bucket == "" then
    errors.argument(1, "aws.s3:" .. who, "bucket must be a non-empty string, got %s", type(opts.bucket))
  end
  if need_key and (type(opts.key) ~= "string" or opts.key == "") then
    errors.argument(1, "aws.s3:" .. who, "key must be a non-empty string, got %s", type(opts.key))
  end
end

-- PutObject and DeleteObject leave the same object however often they are sent; CreateBucket
-- answers BucketAlreadyOwnedByYou the second time, which create_bucket takes as success.
function Client:call(operation, method, path, opts)
  opts = opts or {}
  local headers = { ["x-amz-content-sha256"] = crypto.sha256(opts.body or "", "hex") }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  return aws.request{ service = "s3", region = self.region, method = method, path = path, query = opts.query,
    headers = headers, body = opts.body, operation = operation, credentials = self.credentials,
    endpoint = self.endpoint, retry_base = self.retry_base, idempotent = true, raw = true }
end

function Client:create_bucket(opts)
  check(opts, "create_bucket")
  local body
  if self.region ~= "us-east-1" then
    body = ('<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>')
      :format(self.region)
  end
  local ok, err = pcall(self.call, self, "CreateBucket", "PUT", "/" .. aws.uri_encode(opts.bucket), { body = body })
  if ok then return { created = true } end
  if aws.is_error(err, "BucketAlreadyOwnedByYou") then return { created = false } end
  error(err, 2)
end

function Client:put_object(opts)
  check(opts, "put_object", true)
  local body = opts.body
  if body == nil and opts.file ~= nil then
    local err
    body, err = require("stagehost.fs").read(opts.file)
    if not body then errors.argument(1, "aws.s3:put_object", "cannot read file '%s': %s", tostring(opts.file), tostring(err)) end
  end
  if type(body) ~= "string" then
    errors.argument(1, "aws.s3:put_object", "give body (a string) or file (a path), got body %s", type(body))
  end
  local headers = { ["Content-Type"] = opts.content_type or "application/octet-stream" }
  for k, v in pairs(opts.metadata or {}) do headers["x-amz-meta-" .. k] = tostring(v) end
  local res = self:call("PutObject", "PUT", "/" .. aws.uri_encode(opts.bucket) .. "/" .. key_path(opts.key),
    { body = body, headers = headers })
  return { etag = res.headers["etag"], size = #body }
end

local function metadata_of(headers)
  local meta = {}
  for k, v in pairs(headers) do
    local name = k:match("^x%-amz%-meta%-(.+)$")
    if name then meta[name] = v end
  end
  return meta
end

function Client:head_object(opts)
  check(opts, "head_object", true)
  local ok, res = pcall(self.call, self, "HeadObject", "HEAD", "/" .. aws.uri_encode(opts.bucket) .. "/" .. key_path(opts.key))
  if not ok then
    -- a HEAD answer has no body, so S3's 404 comes without a code
    if aws.is_error(res) and res.status == 404 and res.code ~= "NoSuchBucket" then return nil end
    error(res, 2)
  end
  local h = res.headers
  return { etag = h["etag"], size = tonumber(h["content-length"]), content_type = h["content-type"],
    last_modified = h["last-modified"], metadata = metadata_of(h) }
end

function Client:get_object(opts)
  check(opts, "get_object", true)
  local res = self:call("GetObject", "GET", "/" .. aws.uri_encode(opts.bucket) .. "/" .. key_path(opts.key))
  local h = res.headers
  return { body = res.body, etag = h["etag"], content_type = h["content-type"], metadata = metadata_of(h) }
end

function Client:delete_object(opts)
  check(opts, "delete_object", true)
  self:call("DeleteObject", "DELETE", "/" .. aws.uri_encode(opts.bucket) .. "/" .. key_path(opts.key))
end

return s3
