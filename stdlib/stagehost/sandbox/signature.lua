-- SigV4 verification for the sandbox: recompute the signature of a request from the keys the
-- sandbox knows and compare, as AWS does. With it on, a client that signs wrongly fails
-- against the sandbox exactly as it would against AWS.
local crypto = require("stagehost.crypto")
local time = require("stagehost.util.time")

local signature = {}

local MAX_SKEW = 15 * 60 -- AWS refuses requests signed more than 15 minutes away from its clock

-- verifier(sb) -> function(req, service, region) -> true | false, code, message
function signature.verifier(sb)
  local sign = require("stagehost.core.aws_sigv4").sign
  return function(req, service, region)
    local auth = req.headers.authorization or ""
    local key_id, date, scope_region, scope_service, signed, given =
      auth:match("^AWS4%-HMAC%-SHA256%s+Credential=([^/]+)/(%d+)/([^/]+)/([^/]+)/aws4_request,%s*SignedHeaders=([^,]+),%s*Signature=(%x+)$")
    if not key_id then return false, "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature" end
    local known = sb.state.aws.keys[key_id]
    if not known then return false, "InvalidClientTokenId", "The security token included in the request is invalid." end
    if known.token and known.token ~= req.headers["x-amz-security-token"] then
      return false, "InvalidClientTokenId", "The security token included in the request is invalid."
    end
    if known.expires and known.expires < os.time() then
      return false, "ExpiredToken", "The security token included in the request is expired"
    end
    local stamp = req.headers["x-amz-date"] or ""
    local y, mo, d, hh, mm, ss = stamp:match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
    if not y then return false, "IncompleteSignature", "X-Amz-Date is missing or malformed" end
    local at = time.epoch(tonumber(y), tonumber(mo), tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
    if math.abs(at - os.time()) > MAX_SKEW then
      return false, "SignatureDoesNotMatch", "Signature expired: " .. stamp .. " is now earlier or later than the allowed 15 minutes"
    end
    if date ~= stamp:sub(1, 8) or scope_service ~= service or (region and scope_region ~= region) then
      return false, "SignatureDoesNotMatch", "Credential should be scoped to a valid region and service"
    end
    local headers = {}
    for name in signed:gmatch("[^;]+") do
      if name ~= "x-amz-date" and name ~= "x-amz-security-token" then
        if req.headers[name] == nil then
          return false, "SignatureDoesNotMatch", "SignedHeaders names " .. name .. ", which the request does not have"
        end
        headers[name] = req.headers[name]
      end
    end
    local added, debug = sign{ method = req.method, url = "http://" .. (req.headers.host or "localhost") .. req.url,
      headers = headers, body = req.body, service = scope_service, region = scope_region, time = stamp,
      credentials = { access_key_id = key_id, secret_access_key = known.secret,
        session_token = req.headers["x-amz-security-token"] } }
    if debug.signed_headers ~= signed or not crypto.equal(debug.signature, given) then
      return false, "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    end
    return added ~= nil
  end
end

return signature
