-- S3 (REST-XML, path-style addressing) in the sandbox: buckets and objects as the packager and
-- awscli use them. http://HOST:PORT/bucket is a bucket, http://HOST:PORT/bucket/key an object;
-- virtual-hosted style (bucket.s3.amazonaws.com) cannot reach a loopback server, so clients are
-- told to use path style (awscli: `s3 = addressing_style = path` in its config).
--
--   PUT /b            CreateBucket          HEAD /b          HeadBucket
--   GET /b?list-type=2 ListObjectsV2 (prefix, delimiter, max-keys, continuation-token,
--                     start-after)
--   PUT /b/k          PutObject: Content-MD5 checked when sent; ETag is the quoted MD5 hex
--   HEAD /b/k, GET /b/k, DELETE /b/k   HeadObject, GetObject (one Range: bytes=a-b, a- or -n
--                     gives 206 and that slice, as awscli's ranged downloads ask), DeleteObject
--   GET /             ListBuckets
-- Multipart uploads (what awscli's `s3 cp` sends for a file over 8 MB):
--   POST /b/k?uploads                 CreateMultipartUpload -> UploadId
--   PUT /b/k?partNumber=N&uploadId=U  UploadPart (1..10000; Content-MD5 checked when sent)
--   POST /b/k?uploadId=U              CompleteMultipartUpload: the listed parts, ascending, each
--                     ETag as UploadPart gave it, all but the last at least 5 MiB; the object's
--                     ETag is the MD5 of the parts' binary MD5s, "-" and the number of parts
--   DELETE /b/k?uploadId=U            AbortMultipartUpload
-- An upload id that is unknown, aborted or completed is NoSuchUpload (404).
--
-- Signatures: SigV4 with the header x-amz-content-sha256 as S3 requires it: the hex SHA-256 of
-- the body (checked against the body: XAmzContentSHA256Mismatch) or UNSIGNED-PAYLOAD; the
-- streaming aws-chunked forms are refused with NotImplemented. Errors are S3's <Error> documents
-- (NoSuchBucket, NoSuchKey, BucketAlreadyOwnedByYou, BadDigest, InvalidDigest, ...); a HEAD gets
-- the status alone, as S3 sends it.
-- State: sb.state.aws.s3.buckets[name] = {created, region, objects = {[key] = {body, etag,
-- content_type, modified, metadata}}, uploads = {[upload id] = {key, initiated, content_type,
-- metadata, parts = {[number] = {body, etag, modified}}}}}. Object and part bodies live in
-- memory and in the saved world: the sandbox is for apps, not data sets (the server takes
-- bodies up to 64 MiB).
local crypto = require("stagehost.crypto")
local proc = require("stagehost.proc")
local xml = require("stagehost.xml")
local wire = require("stagehost.sandbox.wire")

local s3 = { protocol = "rest-xml" }

local NS = "http://s3.amazonaws.com/doc/2006-03-01/"
local EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

function s3.init(sb)
  sb.state.aws.s3 = sb.state.aws.s3 or { buckets = {} }
end

-- Query parameters that are not a subresource: the operations above take them. Any other
-- (?acl, ?tagging, ?versioning, ...) names an operation the sandbox does not have.
local PLAIN = { ["x-id"] = true, ["list-type"] = true, prefix = true, delimiter = true, ["max-keys"] = true,
  ["continuation-token"] = true, ["start-after"] = true, marker = true, ["encoding-type"] = true,
  ["fetch-owner"] = true, versionId = true }

-- an object's ?uploadId requests by method
local MULTIPART = { PUT = "UploadPart", POST = "CompleteMultipartUpload", DELETE = "AbortMultipartUpload" }

-- (method, path, query) -> the operation and {bucket, key}
function s3.route(req)
  local bucket, rest = req.path:match("^/([^/]+)/?(.*)$")
  if not bucket then
    return req.method == "GET" and "ListBuckets" or "MethodNotAllowed", {}
  end
  local route = { bucket = wire.unescape(bucket, false), key = rest ~= "" and wire.unescape(rest, false) or nil }
  local m = req.method
  local q = wire.parse_form(req.query)
  if route.key and (q.uploads or q.uploadId) then
    local op = q.uploads and m == "POST" and "CreateMultipartUpload" or q.uploadId and MULTIPART[m]
    -- GET ?uploadId (ListParts) falls through to NotImplemented: awscli never sends it
    if op then return op, route end
  end
  for name in pairs(q) do
    if name == "location" and not route.key and m == "GET" then return "GetBucketLocation", route end
    if not PLAIN[name] and not name:match("^response%-") then
      route.subresource = name
      return "NotImplemented", route
    end
  end
  if route.key then
    local ops = { PUT = "PutObject", GET = "GetObject", HEAD = "HeadObject", DELETE = "DeleteObject" }
    return ops[m] or "MethodNotAllowed", route
  end
  local ops = { PUT = "CreateBucket", HEAD = "HeadBucket", DELETE = "DeleteBucket",
    GET = (req.query or ""):find("list%-type=2") and "ListObjectsV2" or "ListObjects" }
  return ops[m] or "MethodNotAllowed", route
end

-- S3's error document (the server sends none to a HEAD).
function s3.error_response(err, request_id)
  local headers = { ["Content-Type"] = "application/xml", ["x-amz-request-id"] = request_id,
    ["x-amz-id-2"] = request_id }
  for k, v in pairs(err.headers or {}) do headers[k] = v end
  local body = err.body or ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>%s%s%s%s</Error>\n'):format(
    wire.el("Code", err.code), wire.el("Message", err.message), wire.el("Resource", err.resource),
    wire.el("RequestId", request_id))
  return { status = err.status or 400, headers = headers, body = body }
end

local function fail(code, message, status) wire.fail(code, message, status or 400) end

-- A 200 answer with the XML document <name xmlns=S3's>inner...</name>.
local function xml_answer(name, ...)
  return 200, { ["Content-Type"] = "application/xml" },
    ('<?xml version="1.0" encoding="UTF-8"?>\n<%s xmlns="%s">%s</%s>\n'):format(name, NS, table.concat{ ... }, name)
end

local function bucket_of(sb, name)
  local b = sb.state.aws.s3.buckets[name]
  if not b then fail("NoSuchBucket", "The specified bucket does not exist", 404) end
  return b
end

-- the body's MD5 as 16 raw bytes: coreutils' md5sum (stagehost's crypto has no MD5, and S3's
-- ETag is a checksum, not a security measure)
local function md5(body)
  local r = proc.run{ "md5sum", stdin = body, quiet = true }
  local hex = r.ok and r.stdout:match("^(%x+)")
  if not hex then error("md5sum failed: " .. tostring(r.stderr), 0) end
  return crypto.hex_decode(hex), hex
end

local function http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t)) end

local function object_headers(obj, request_id)
  local h = { ["ETag"] = obj.etag, ["Content-Type"] = obj.content_type, ["Last-Modified"] = http_date(obj.modified),
    ["Accept-Ranges"] = "bytes", ["x-amz-request-id"] = request_id }
  for k, v in pairs(obj.metadata or {}) do h["x-amz-meta-" .. k] = v end
  return h
end

local ops = {}

function ops.ListBuckets(sb)
  local items = {}
  for _, name in ipairs(wire.sorted_keys(sb.state.aws.s3.buckets)) do
    items[#items + 1] = "<Bucket>" .. wire.el("Name", name)
      .. wire.el("CreationDate", wire.iso8601(sb.state.aws.s3.buckets[name].created)) .. "</Bucket>"
  end
  return xml_answer("ListAllMyBucketsResult", "<Owner>", wire.el("ID", sb.state.aws.account_id), "</Owner><Buckets>",
    table.concat(items), "</Buckets>")
end

function ops.CreateBucket(sb, route, req, ctx)
  local name = route.bucket
  if #name < 3 or #name > 63 or not name:match("^[a-z0-9][a-z0-9%.%-]*[a-z0-9]$") then
    fail("InvalidBucketName", "The specified bucket is not valid.")
  end
  local buckets = sb.state.aws.s3.buckets
  if buckets[name] then
    fail("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.", 409)
  end
  buckets[name] = { created = wire.clock(), region = ctx.region, objects = {} }
  return 200, { Location = "/" .. name }, ""
end

function ops.GetBucketLocation(sb, route)
  local b = bucket_of(sb, route.bucket)
  -- us-east-1 is the empty constraint, as S3 answers it
  return xml_answer("LocationConstraint", b.region ~= "us-east-1" and wire.xml_escape(b.region or "") or "")
end

function ops.NotImplemented(_, route)
  fail("NotImplemented", ("the stagehost sandbox's S3 has no '?%s' operation (buckets and objects only: no ACLs, tags, versions, copies or listings of uploads and parts)")
    :format(tostring(route.subresource)), 501)
end

function ops.HeadBucket(sb, route)
  local b = bucket_of(sb, route.bucket)
  return 200, { ["x-amz-bucket-region"] = b.region }, ""
end

function ops.DeleteBucket(sb, route)
  local b = bucket_of(sb, route.bucket)
  if next(b.objects) then fail("BucketNotEmpty", "The bucket you tried to delete is not empty", 409) end
  sb.state.aws.s3.buckets[route.bucket] = nil
  return 204, {}, ""
end

-- The body's quoted MD5 hex (its ETag), once the Content-MD5 a client sent matches it.
local function checked_etag(req)
  local raw, hex = md5(req.body)
  local given = req.headers["content-md5"]
  if given then
    local decoded = crypto.base64_decode(given)
    if not decoded or #decoded ~= 16 then fail("InvalidDigest", "The Content-MD5 you specified was invalid.") end
    if decoded ~= raw then fail("BadDigest", "The Content-MD5 you specified did not match what we received.") end
  end
  return '"' .. hex .. '"'
end

-- What a new object takes from the request that makes it: x-amz-meta-* and Content-Type.
local function described(req, into)
  into.metadata = {}
  for k, v in pairs(req.headers) do
    local name = k:match("^x%-amz%-meta%-(.+)$")
    if name then into.metadata[name] = v end
  end
  into.content_type = req.headers["content-type"] or "binary/octet-stream"
  return into
end

function ops.PutObject(sb, route, req)
  local b = bucket_of(sb, route.bucket)
  local obj = described(req, { body = req.body, etag = checked_etag(req), modified = wire.clock() })
  b.objects[route.key] = obj
  return 200, { ETag = obj.etag }, ""
end

local function object_of(sb, route)
  local b = bucket_of(sb, route.bucket)
  local obj = b.objects[route.key]
  if not obj then
    fail("NoSuchKey", "The specified key does not exist.", 404)
  end
  return obj
end

function ops.HeadObject(sb, route, _, ctx)
  local obj = object_of(sb, route)
  -- the server sends no body to a HEAD but announces the length of this one, as S3 does
  return 200, object_headers(obj, ctx.request_id), obj.body
end

-- Range: bytes=first-last | first- | -suffix -> first, last (1-based, inclusive); nil for a
-- header S3 would ignore (several ranges, another unit, nonsense); false when none of the body
-- is in it.
local function byte_range(spec, size)
  local first, last = (spec or ""):match("^%s*bytes=(%d*)%-(%d*)%s*$")
  if not first or (first == "" and last == "") then return nil end
  first, last = math.tointeger(tonumber(first)), math.tointeger(tonumber(last))
  if not first then
    if last == 0 then return false end
    first, last = math.max(size - last, 0), size - 1
  end
  if last and last < first then return nil end
  if first >= size then return false end
  return first + 1, math.min(last or size - 1, size - 1) + 1
end

function ops.GetObject(sb, route, req, ctx)
  local obj = object_of(sb, route)
  local headers = object_headers(obj, ctx.request_id)
  local first, last = byte_range(req.headers.range, #obj.body)
  if first == false then
    fail("InvalidRange", "The requested range is not satisfiable", 416)
  elseif first then
    headers["Content-Range"] = ("bytes %d-%d/%d"):format(first - 1, last - 1, #obj.body)
    return 206, headers, obj.body:sub(first, last)
  end
  return 200, headers, obj.body
end

function ops.DeleteObject(sb, route)
  bucket_of(sb, route.bucket).objects[route.key] = nil
  return 204, {}, ""
end

-- ---- multipart uploads ----

local MIN_PART = 5 * 1024 * 1024

local function uploads_of(b)
  b.uploads = b.uploads or {} -- a world saved before multipart uploads existed has none
  return b.uploads
end

-- the upload ?uploadId names, in this bucket and for this key
local function upload_of(sb, route, req)
  local id = wire.parse_form(req.query).uploadId
  local upload = uploads_of(bucket_of(sb, route.bucket))[id]
  if not upload or upload.key ~= route.key then
    fail("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.", 404)
  end
  return upload, id
end

function ops.CreateMultipartUpload(sb, route, req)
  local uploads = uploads_of(bucket_of(sb, route.bucket))
  local id = wire.random_lower(64)
  uploads[id] = described(req, { key = route.key, initiated = wire.clock(), parts = {} })
  return xml_answer("InitiateMultipartUploadResult", wire.el("Bucket", route.bucket), wire.el("Key", route.key),
    wire.el("UploadId", id))
end

function ops.UploadPart(sb, route, req)
  local upload = upload_of(sb, route, req)
  local number = math.tointeger(tonumber(wire.parse_form(req.query).partNumber))
  if not number or number < 1 or number > 10000 then
    fail("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
  end
  local part = { body = req.body, etag = checked_etag(req), modified = wire.clock() }
  upload.parts[number] = part
  return 200, { ETag = part.etag }, ""
end

-- The <Part>s of a CompleteMultipartUpload body: {number, etag} in the order given, which must
-- be ascending (checked before any part is looked at).
local function listed_parts(body)
  local root = xml.decode(body or "")
  local listed = {}
  for _, p in ipairs(root and root.name == "CompleteMultipartUpload" and xml.children(root, "Part") or {}) do
    local number, etag = math.tointeger(tonumber(xml.text(p, "PartNumber"))), xml.text(p, "ETag")
    if not number or not etag then listed = {} break end
    listed[#listed + 1] = { number = number, etag = etag }
  end
  if #listed == 0 then
    fail("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
  end
  for i = 2, #listed do
    if listed[i].number <= listed[i - 1].number then
      fail("InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by part number.")
    end
  end
  return listed
end

local function unquoted(etag) return (etag:gsub('^"(.*)"$', "%1"):lower()) end

function ops.CompleteMultipartUpload(sb, route, req)
  local upload, id = upload_of(sb, route, req)
  local listed = listed_parts(req.body)
  local bodies, digests = {}, {}
  for i, p in ipairs(listed) do
    local part = upload.parts[p.number]
    if not part or unquoted(part.etag) ~= unquoted(p.etag) then
      fail("InvalidPart", "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.")
    end
    if i < #listed and #part.body < MIN_PART then
      fail("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
    end
    bodies[i], digests[i] = part.body, crypto.hex_decode(unquoted(part.etag))
  end
  local _, hex = md5(table.concat(digests))
  local obj = { body = table.concat(bodies), etag = ('"%s-%d"'):format(hex, #listed), modified = wire.clock(),
    metadata = upload.metadata, content_type = upload.content_type }
  local b = bucket_of(sb, route.bucket)
  b.objects[route.key] = obj
  b.uploads[id] = nil
  local location = ("%s/%s/%s"):format(sb.url, wire.escape(route.bucket), (wire.escape(route.key):gsub("%%2F", "/")))
  return xml_answer("CompleteMultipartUploadResult", wire.el("Location", location), wire.el("Bucket", route.bucket), wire.el("Key", route.key), wire.el("ETag", obj.etag))
end

function ops.AbortMultipartUpload(sb, route, req)
  local _, id = upload_of(sb, route, req)
  bucket_of(sb, route.bucket).uploads[id] = nil
  return 204, {}, ""
end

local function list_objects(sb, route, req, v2)
  local b = bucket_of(sb, route.bucket)
  local q = wire.parse_form(req.query)
  local prefix, delimiter = q.prefix or "", q.delimiter
  local max = math.tointeger(tonumber(q["max-keys"] or "1000")) or 1000
  local after = q["continuation-token"] or q["start-after"] or q.marker or ""
  local contents, prefixes, seen, count, truncated, last = {}, {}, {}, 0, false, nil
  for _, key in ipairs(wire.sorted_keys(b.objects)) do
    if key:sub(1, #prefix) == prefix and key > after then
      local common
      if delimiter and delimiter ~= "" then
        local at = key:find(delimiter, #prefix + 1, true)
        if at then common = key:sub(1, at + #delimiter - 1) end
      end
      if not (common and seen[common]) then
        if count >= max then truncated = true break end
        count = count + 1
        if common then
          seen[common] = true
          prefixes[#prefixes + 1] = "<CommonPrefixes>" .. wire.el("Prefix", common) .. "</CommonPrefixes>"
          last = common
        else
          local obj = b.objects[key]
          contents[#contents + 1] = "<Contents>" .. wire.el("Key", key) .. wire.el("LastModified", wire.iso8601(obj.modified))
            .. wire.el("ETag", obj.etag) .. wire.el("Size", #obj.body) .. wire.el("StorageClass", "STANDARD") .. "</Contents>"
          last = key
        end
      end
    end
  end
  local parts = { wire.el("Name", route.bucket), "<Prefix>" .. wire.xml_escape(prefix) .. "</Prefix>", wire.el("Delimiter", delimiter),
    wire.el("MaxKeys", max), wire.el("IsTruncated", truncated) }
  if v2 then
    parts[#parts + 1] = wire.el("KeyCount", count)
    parts[#parts + 1] = wire.el("ContinuationToken", q["continuation-token"])
    parts[#parts + 1] = wire.el("StartAfter", q["start-after"])
    if truncated then parts[#parts + 1] = wire.el("NextContinuationToken", last) end
  else
    parts[#parts + 1] = wire.el("Marker", q.marker or "")
    if truncated then parts[#parts + 1] = wire.el("NextMarker", last) end
  end
  parts[#parts + 1] = table.concat(contents) .. table.concat(prefixes)
  return xml_answer("ListBucketResult", table.concat(parts))
end

function ops.ListObjectsV2(sb, route, req) return list_objects(sb, route, req, true) end
function ops.ListObjects(sb, route, req) return list_objects(sb, route, req, false) end

-- What S3 checks of a signed request beyond the signature: the payload hash header.
local function check_payload(req)
  local declared = req.headers["x-amz-content-sha256"]
  if not declared then
    fail("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
  end
  if declared == "UNSIGNED-PAYLOAD" then return end
  if declared:match("^STREAMING%-") then
    fail("NotImplemented", "the stagehost sandbox does not take aws-chunked (streaming) uploads: send the body whole", 501)
  end
  local actual = req.body == "" and EMPTY_SHA256 or crypto.sha256(req.body, "hex")
  if declared:lower() ~= actual then
    fail("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
  end
end

function s3.handle(sb, req, ctx)
  local op = ops[ctx.action]
  if not op then fail("MethodNotAllowed", "The specified method is not allowed against this resource.", 405) end
  if req.headers.authorization then check_payload(req) end
  local status, headers, body = op(sb, ctx.route, req, ctx)
  headers["x-amz-request-id"] = ctx.request_id
  headers["x-amz-id-2"] = ctx.request_id
  return { status = status, headers = headers, body = body }
end

return s3
