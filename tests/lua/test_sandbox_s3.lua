-- S3 in the sandbox, checked against Debian's awscli (s3api and `s3 cp`, path-style, signed
-- with SigV4 as it signs for AWS) and through stagehost's own client (aws.s3), plus what
-- awscli never sends: a wrong Content-MD5, a payload hash that does not match the body.
local T = require("harness")
local proc = require("stagehost.proc")
local fs = require("stagehost.fs")
local http = require("stagehost.http")
local crypto = require("stagehost.crypto")
local json = require("stagehost.json")
local sandbox = require("stagehost.sandbox")
local aws_mod = require("stagehost.aws")

local function with_sandbox(fn)
  local sb = sandbox.start{}
  local ok, err = xpcall(fn, debug.traceback, sb)
  sb:close()
  if not ok then error(err, 0) end
end

-- awscli against the sandbox (T.awscli), path-style addressing from a config file of its own
local function config(dir)
  local path = dir .. "/aws-config"
  if not fs.exists(path) then
    assert(fs.write(path, "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"))
  end
  return { AWS_CONFIG_FILE = path }
end

local function aws(sb, dir, args) return T.awscli(sb, args, config(dir)) end
local function aws_ok(sb, dir, args) return T.awscli_ok(sb, args, config(dir)) end

local function md5_hex(data)
  return proc.run{ "md5sum", stdin = data }.stdout:match("^(%x+)")
end

T.test("s3api via awscli: bucket, put (Content-MD5 checked), head, get, list, delete; s3 cp both ways", function()
  with_sandbox(function(sb)
    local dir = T.tempdir()
    local body = ("stagehost sandbox object\n"):rep(50) .. "\0\255 binary tail"
    assert(fs.write(dir .. "/in.bin", body))
    aws_ok(sb, dir, { "s3api", "create-bucket", "--bucket", "artifacts-1" })
    aws_ok(sb, dir, { "s3api", "head-bucket", "--bucket", "artifacts-1" })
    local md5 = crypto.base64_encode(crypto.hex_decode(md5_hex(body)))
    local put = aws_ok(sb, dir, { "s3api", "put-object", "--bucket", "artifacts-1", "--key", "dir/a b.bin",
      "--body", dir .. "/in.bin", "--content-md5", md5, "--content-type", "application/zip" })
    T.eq(put.ETag, '"' .. md5_hex(body) .. '"', "ETag is the quoted MD5 hex")
    local head = aws_ok(sb, dir, { "s3api", "head-object", "--bucket", "artifacts-1", "--key", "dir/a b.bin" })
    T.eq(head.ContentLength, #body)
    T.eq(head.ContentType, "application/zip")
    T.eq(head.ETag, put.ETag)
    aws_ok(sb, dir, { "s3api", "get-object", "--bucket", "artifacts-1", "--key", "dir/a b.bin", dir .. "/out.bin" })
    T.eq(fs.read(dir .. "/out.bin"), body, "the bytes come back")
    -- a wrong Content-MD5 is refused, as S3 refuses it
    local bad = aws(sb, dir, { "s3api", "put-object", "--bucket", "artifacts-1", "--key", "x", "--body", dir .. "/in.bin",
      "--content-md5", crypto.base64_encode(("\0"):rep(16)) })
    T.ok(bad.code ~= 0)
    T.has(bad.stderr, "BadDigest")
    -- s3 cp (the high-level command) up and down
    aws_ok(sb, dir, { "s3", "cp", dir .. "/in.bin", "s3://artifacts-1/cp/copied.bin" })
    aws_ok(sb, dir, { "s3", "cp", "s3://artifacts-1/cp/copied.bin", dir .. "/back.bin" })
    T.eq(fs.read(dir .. "/back.bin"), body)
    local list = aws_ok(sb, dir, { "s3api", "list-objects-v2", "--bucket", "artifacts-1" })
    T.eq(#list.Contents, 2)
    T.eq(list.Contents[1].Key, "cp/copied.bin", "sorted by key")
    T.eq(list.Contents[2].Key, "dir/a b.bin")
    T.eq(list.Contents[2].Size, #body)
    local by_prefix = aws_ok(sb, dir, { "s3api", "list-objects-v2", "--bucket", "artifacts-1", "--prefix", "dir/" })
    T.eq(#by_prefix.Contents, 1)
    -- missing things, as awscli prints S3's errors
    local nokey = aws(sb, dir, { "s3api", "get-object", "--bucket", "artifacts-1", "--key", "nope", dir .. "/x" })
    T.has(nokey.stderr, "NoSuchKey")
    local nobucket = aws(sb, dir, { "s3api", "list-objects-v2", "--bucket", "missing-bucket" })
    T.has(nobucket.stderr, "NoSuchBucket")
    local nohead = aws(sb, dir, { "s3api", "head-object", "--bucket", "artifacts-1", "--key", "nope" })
    T.has(nohead.stderr, "404")
    aws_ok(sb, dir, { "s3api", "delete-object", "--bucket", "artifacts-1", "--key", "dir/a b.bin" })
    T.eq(#aws_ok(sb, dir, { "s3api", "list-objects-v2", "--bucket", "artifacts-1" }).Contents, 1)
    -- a wrong secret is refused
    local forged = sb.credentials.secret_access_key
    sb.state.aws.keys[sb.credentials.access_key_id].secret = "other"
    local refused = aws(sb, dir, { "s3api", "head-bucket", "--bucket", "artifacts-1" })
    sb.state.aws.keys[sb.credentials.access_key_id].secret = forged
    T.ok(refused.code ~= 0, "a bad signature is refused")
    fs.remove(dir, { recursive = true })
  end)
end, { timeout = 180 })

-- the ETag S3 gives an object made of these parts: the MD5 of their binary MD5s, "-", their number
local function multipart_etag(parts)
  local digests = {}
  for i, part in ipairs(parts) do digests[i] = crypto.hex_decode(md5_hex(part)) end
  return ('"%s-%d"'):format(md5_hex(table.concat(digests)), #parts)
end

T.test("s3 cp of a 20 MiB file: a multipart upload in 8 MiB parts (ETag ...-3), back by ranged GETs, byte-identical", function()
  with_sandbox(function(sb)
    local dir = T.tempdir()
    local MiB = 1024 * 1024
    local chunks = {}
    for i = 1, 20 do chunks[i] = (("%08d"):format(i) .. crypto.random(56)):rep(MiB // 64) end
    local body = table.concat(chunks)
    assert(fs.write(dir .. "/big.bin", body))
    aws_ok(sb, dir, { "s3api", "create-bucket", "--bucket", "big-1" })
    aws_ok(sb, dir, { "s3", "cp", dir .. "/big.bin", "s3://big-1/big.bin" })
    T.eq(T.sandbox_requests(sb, "s3", "CreateMultipartUpload"), 1, "over the CLI's threshold, s3 cp uploads in parts")
    T.eq(T.sandbox_requests(sb, "s3", "UploadPart"), 3)
    T.eq(T.sandbox_requests(sb, "s3", "CompleteMultipartUpload"), 1)
    T.eq(next(sb.state.aws.s3.buckets["big-1"].uploads), nil, "a completed upload is gone")
    local head = aws_ok(sb, dir, { "s3api", "head-object", "--bucket", "big-1", "--key", "big.bin" })
    T.eq(head.ContentLength, #body)
    T.eq(head.ETag, multipart_etag{ body:sub(1, 8 * MiB), body:sub(8 * MiB + 1, 16 * MiB), body:sub(16 * MiB + 1) })
    aws_ok(sb, dir, { "s3", "cp", "s3://big-1/big.bin", dir .. "/back.bin" })
    T.ok(T.sandbox_requests(sb, "s3", "GetObject") >= 3, "down in ranges too")
    local back = fs.read(dir .. "/back.bin")
    T.eq(#back, #body)
    T.ok(back == body, "the bytes come back")
    fs.remove(dir, { recursive = true })
  end)
end, { timeout = 240 })

T.test("s3api multipart: two parts complete to their concatenation; NoSuchUpload, InvalidPart, EntityTooSmall, InvalidPartOrder as S3 answers", function()
  with_sandbox(function(sb)
    local dir = T.tempdir()
    local bucket, key = "mp-1", "dir/joined.bin"
    local p1, p2, p3 = ("first part "):rep(5 * 1024 * 1024 // 11 + 1), "second part\0\255", "third"
    T.ok(#p1 >= 5 * 1024 * 1024)
    aws_ok(sb, dir, { "s3api", "create-bucket", "--bucket", bucket })
    local function create()
      local r = aws_ok(sb, dir, { "s3api", "create-multipart-upload", "--bucket", bucket, "--key", key })
      T.eq(r.Bucket, bucket)
      T.eq(r.Key, key)
      return r.UploadId
    end
    local function upload_part(id, number, body)
      local file = ("%s/part-%d"):format(dir, number)
      assert(fs.write(file, body))
      return aws(sb, dir, { "s3api", "upload-part", "--bucket", bucket, "--key", key, "--upload-id", id,
        "--part-number", tostring(number), "--body", file })
    end
    local function complete(id, parts)
      local listed = {}
      for i, p in ipairs(parts) do listed[i] = { PartNumber = p[1], ETag = p[2] } end
      return aws(sb, dir, { "s3api", "complete-multipart-upload", "--bucket", bucket, "--key", key, "--upload-id", id,
        "--multipart-upload", json.encode{ Parts = listed } })
    end
    local id = create()
    local etags = {}
    -- part 4 is as big as part 1: listed before it, only the order is wrong
    for n, body in ipairs{ p1, p2, p3, p1 } do
      local r = upload_part(id, n, body)
      T.eq(r.code, 0, r.stderr)
      etags[n] = r.json.ETag
      T.eq(etags[n], '"' .. md5_hex(body) .. '"', "a part's ETag is its quoted MD5")
    end
    local refused = {
      { { { 1, '"' .. md5_hex("other") .. '"' }, { 2, etags[2] } }, "(InvalidPart)", "an ETag that is not the part's" },
      { { { 1, etags[1] }, { 5, etags[2] } }, "(InvalidPart)", "a part never uploaded" },
      { { { 2, etags[2] }, { 3, etags[3] } }, "(EntityTooSmall)", "a first part under 5 MiB" },
      { { { 4, etags[4] }, { 1, etags[1] } }, "(InvalidPartOrder)", "parts out of order" },
    }
    for _, case in ipairs(refused) do
      local r = complete(id, case[1])
      T.ok(r.code ~= 0, case[3])
      T.has(r.stderr, case[2], case[3])
      T.eq(sb.state.aws.s3.buckets[bucket].objects[key], nil, "no object from a refused completion")
    end
    local done = complete(id, { { 1, etags[1] }, { 2, etags[2] } })
    T.eq(done.code, 0, done.stderr)
    T.eq(done.json.ETag, multipart_etag{ p1, p2 })
    T.eq(done.json.Key, key)
    T.match(done.json.Location, "^" .. sb.url:gsub("%p", "%%%0") .. "/mp%-1/dir/joined%.bin$")
    aws_ok(sb, dir, { "s3api", "get-object", "--bucket", bucket, "--key", key, dir .. "/joined.bin" })
    T.ok(fs.read(dir .. "/joined.bin") == p1 .. p2, "the object is the listed parts, concatenated")
    T.has(complete(id, { { 1, etags[1] } }).stderr, "NoSuchUpload", "a completed upload is gone")
    -- aborted: its parts are refused from then on
    local aborted = create()
    T.eq(upload_part(aborted, 1, p2).code, 0)
    aws_ok(sb, dir, { "s3api", "abort-multipart-upload", "--bucket", bucket, "--key", key, "--upload-id", aborted })
    local late = upload_part(aborted, 2, p2)
    T.ok(late.code ~= 0)
    T.has(late.stderr, "NoSuchUpload")
    T.has(upload_part("not-an-upload", 1, p2).stderr, "NoSuchUpload")
    fs.remove(dir, { recursive = true })
  end)
end, { timeout = 240 })

T.test("s3 multipart: an upload in progress survives a restart of a persisted sandbox; a body that is not the list is MalformedXML", function()
  local dir = T.tempdir()
  local function signed(sb, method, path, body)
    local url = sb.url .. path
    local h = { ["x-amz-content-sha256"] = crypto.sha256(body, "hex") }
    for k, v in pairs(aws_mod.sign{ method = method, url = url, headers = h, body = body, service = "s3",
      region = "us-east-1", credentials = sb.credentials }) do h[k] = v end
    return http.request{ method = method, url = url, headers = h, body = body, retry = false }
  end
  local sb = sandbox.start{ persist = dir .. "/sandbox" }
  local url = sb.url
  aws_mod.s3{ region = "us-east-1", endpoint = sb.url, credentials = sb.credentials }:create_bucket{ bucket = "kept-1" }
  local r = signed(sb, "POST", "/kept-1/k?uploads", "")
  T.eq(r.status, 200, r.body)
  T.has(r.body, "<InitiateMultipartUploadResult")
  local id = r.body:match("<UploadId>(.-)</UploadId>")
  T.ok(id, r.body)
  r = signed(sb, "PUT", "/kept-1/k?partNumber=1&uploadId=" .. id, "only part")
  T.eq(r.status, 200, r.body)
  T.eq(r.headers.etag, '"' .. md5_hex("only part") .. '"')
  sb:close()
  local again = sandbox.start{ persist = dir .. "/sandbox" }
  T.eq(again.url, url, "the saved port")
  for _, body in ipairs{ "<CompleteMultipartUpload><Part><PartNumber>1</Part>", "<Other/>",
    "<CompleteMultipartUpload></CompleteMultipartUpload>" } do
    r = signed(again, "POST", "/kept-1/k?uploadId=" .. id, body)
    T.eq(r.status, 400, body)
    T.has(r.body, "<Code>MalformedXML</Code>", body)
  end
  r = signed(again, "POST", "/kept-1/k?uploadId=" .. id, ('<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber><ETag>%s</ETag></Part></CompleteMultipartUpload>')
    :format(md5_hex("only part")))
  T.eq(r.status, 200, r.body)
  T.has(r.body, "<CompleteMultipartUploadResult")
  T.eq(again.state.aws.s3.buckets["kept-1"].objects.k.body, "only part", "the part uploaded before the restart")
  r = signed(again, "DELETE", "/kept-1/k?uploadId=" .. id, "")
  T.eq(r.status, 404)
  T.has(r.body, "<Code>NoSuchUpload</Code>")
  again:close()
  fs.remove(dir, { recursive = true })
end, { timeout = 60 })

T.test("s3: a payload hash that does not match, a missing one, streaming uploads: refused as S3 does", function()
  with_sandbox(function(sb)
    local s3 = aws_mod.s3{ region = "us-east-1", endpoint = sb.url, credentials = sb.credentials }
    s3:create_bucket{ bucket = "b-1" }
    local function put(headers, body)
      local h = {}
      for k, v in pairs(headers) do h[k] = v end
      local url = sb.url .. "/b-1/k"
      local added = aws_mod.sign{ method = "PUT", url = url, headers = h, body = body, service = "s3",
        region = "us-east-1", credentials = sb.credentials }
      for k, v in pairs(added) do h[k] = v end
      return http.request{ method = "PUT", url = url, headers = h, body = body, retry = false }
    end
    local r = put({ ["x-amz-content-sha256"] = crypto.sha256("other", "hex") }, "body")
    T.eq(r.status, 400)
    T.has(r.body, "XAmzContentSHA256Mismatch")
    r = put({ ["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD" }, "body")
    T.eq(r.status, 200, r.body)
    r = put({ ["x-amz-content-sha256"] = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" }, "body")
    T.eq(r.status, 501)
    T.has(r.body, "NotImplemented")
    -- a subresource it lacks is refused, never taken for the object itself
    local function signed_get(url)
      local h = { ["x-amz-content-sha256"] = crypto.sha256("", "hex") }
      for k, v in pairs(aws_mod.sign{ method = "GET", url = url, headers = h, body = "", service = "s3",
        region = "us-east-1", credentials = sb.credentials }) do h[k] = v end
      return http.request{ method = "GET", url = url, headers = h, retry = false }
    end
    r = signed_get(sb.url .. "/b-1/k?tagging")
    T.eq(r.status, 501)
    T.has(r.body, "no '?tagging' operation")
    r = signed_get(sb.url .. "/b-1?location")
    T.eq(r.status, 200)
    T.has(r.body, "<LocationConstraint")
    local unsigned = http.request{ method = "GET", url = sb.url .. "/b-1/k", retry = false }
    T.eq(unsigned.status, 403, "no signature, no object")
  end)
end)

T.test("aws.s3: create_bucket, put_object (body and file), head_object nil when missing, get_object", function()
  with_sandbox(function(sb)
    local restore = sb:use()
    local ok, err = pcall(function()
      local s3 = aws_mod.s3{}
      T.eq(s3:create_bucket{ bucket = "deploy-1" }.created, true)
      T.eq(s3:create_bucket{ bucket = "deploy-1" }.created, false, "an existing own bucket is fine")
      T.eq(s3:head_object{ bucket = "deploy-1", key = "a.zip" }, nil)
      local put = s3:put_object{ bucket = "deploy-1", key = "a.zip", body = "zip bytes", content_type = "application/zip" }
      T.eq(put.etag, '"' .. md5_hex("zip bytes") .. '"')
      local head = s3:head_object{ bucket = "deploy-1", key = "a.zip" }
      T.eq(head.etag, put.etag)
      T.eq(head.size, 9)
      T.eq(head.content_type, "application/zip")
      T.eq(s3:get_object{ bucket = "deploy-1", key = "a.zip" }.body, "zip bytes")
      -- an object that looks like a document is still the caller's bytes
      for _, text in ipairs{ "<html><p>unclosed", "{not json", "[1," } do
        s3:put_object{ bucket = "deploy-1", key = "page", body = text, content_type = "text/html" }
        T.eq(s3:get_object{ bucket = "deploy-1", key = "page" }.body, text)
      end
      local dir = T.tempdir()
      assert(fs.write(dir .. "/f", "from a file"))
      s3:put_object{ bucket = "deploy-1", key = "f", file = dir .. "/f" }
      T.eq(s3:get_object{ bucket = "deploy-1", key = "f" }.body, "from a file")
      local e = T.raises(function() s3:get_object{ bucket = "deploy-1", key = "nope" } end)
      T.ok(aws_mod.is_error(e, "NoSuchKey"), tostring(e))
      local e2 = T.raises(function() s3:put_object{ bucket = "nope-bucket", key = "k", body = "" } end)
      T.ok(aws_mod.is_error(e2, "NoSuchBucket"), tostring(e2))
      T.raises(function() s3:put_object{ bucket = "deploy-1", key = "k" } end, "give body")
      fs.remove(dir, { recursive = true })
    end)
    restore()
    if not ok then error(err, 0) end
  end)
end)

T.run()
