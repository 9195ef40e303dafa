-- Carry stagehost's state directory between GitHub Actions jobs through S3, with stagehost's own
-- S3 client and credential chain (the same OIDC role as the deployment; no other tool).
--
--   stagehost examples/github-actions/state.lua restore    # before a run, resume or approve
--   stagehost examples/github-actions/state.lua save       # after it, also when it failed
--
-- The state is the deployments' memory: runs and their outputs (for resume, rerun, --from),
-- approval gates and votes, and the release records scripts/rollback.lua goes back to. A
-- runner's disk is gone when its job ends, and actions/cache cannot hold it: a cache saved by a
-- run on tag rc-2 is not visible to a run on tag rc-3 (caches are scoped to a ref and the
-- default branch). So one tarball in S3 holds it, written only by jobs of the concurrency group
-- "stagehost-state".
--
-- Environment: STAGEHOST_STATE_DIR (the directory), STAGEHOST_STATE_BUCKET (the bucket),
-- STAGEHOST_STATE_OBJECT (the key; default stagehost/state.tar.gz), AWS_REGION.
-- The state key is not saved with the data: give STAGEHOST_STATE_KEY as a secret instead.
local aws = require("stagehost.aws")
local fs = require("stagehost.fs")
local proc = require("stagehost.proc")

local function need(name)
  local v = os.getenv(name)
  if not v or v == "" then
    io.stderr:write(("state.lua: %s is not set (see examples/github-actions/README.md)\n"):format(name))
    os.exit(2)
  end
  return v
end

local command = ...
if command ~= "restore" and command ~= "save" then
  io.stderr:write("usage: stagehost examples/github-actions/state.lua restore|save\n")
  os.exit(2)
end

local dir = need("STAGEHOST_STATE_DIR")
need("STAGEHOST_STATE_KEY") -- without it stagehost would make DIR/state.key, and a key saved beside the data protects nothing
local bucket = need("STAGEHOST_STATE_BUCKET")
local key = os.getenv("STAGEHOST_STATE_OBJECT") or "stagehost/state.tar.gz"
local s3 = aws.s3{ region = os.getenv("AWS_REGION") }
-- the ETag restore saw, kept beside (not in) the state: save refuses to overwrite a newer copy
local seen = dir:gsub("/+$", "") .. ".etag"

if command == "restore" then
  fs.mkdir(dir, { mode = 448 }) -- 0700, as stagehost makes it: it holds logs and outputs
  local head = s3:head_object{ bucket = bucket, key = key }
  if not head then
    print(("state: nothing saved at s3://%s/%s yet; starting empty"):format(bucket, key))
    fs.write(seen, "none\n")
    return
  end
  local obj = s3:get_object{ bucket = bucket, key = key }
  local tarball = dir:gsub("/+$", "") .. ".tar.gz"
  assert(fs.write(tarball, obj.body, { mode = 384 }))
  proc.run{ "tar", "-xzf", tarball, "-C", dir, check = true }
  fs.remove(tarball)
  fs.write(seen, (obj.etag or head.etag or "?") .. "\n")
  print(("state: restored %d bytes from s3://%s/%s"):format(#obj.body, bucket, key))
  return
end

-- save: only when this job restored the copy that is still there (else another job wrote in
-- between, and overwriting would lose its runs)
local expected = (fs.read(seen) or ""):gsub("%s+$", "")
if expected == "" then -- a job that failed before its restore must not upload an empty state
  io.stderr:write(("state.lua: %s was not restored in this job (no %s): not saving it\n"):format(dir, seen))
  os.exit(1)
end
local head = s3:head_object{ bucket = bucket, key = key }
local now = head and head.etag or "none"
if expected ~= now then
  io.stderr:write(("state.lua: s3://%s/%s changed since this job restored it (%s, now %s): not overwriting it\n")
    :format(bucket, key, expected, now))
  os.exit(1)
end
-- the sandbox's emulated cloud is no use to a later job on another machine
local tarball = dir:gsub("/+$", "") .. ".tar.gz"
proc.run{ "tar", "-czf", tarball, "--exclude=./sandbox", "--exclude=./state.key", "-C", dir, ".", check = true }
local put = s3:put_object{ bucket = bucket, key = key, file = tarball, content_type = "application/gzip" }
fs.remove(tarball)
fs.write(seen, (put.etag or "?") .. "\n")
print(("state: saved %d bytes to s3://%s/%s"):format(put.size, bucket, key))
