---@meta stagehost.crypto
-- LuaLS annotations for `require "stagehost.crypto"` (bindings/crypto.c, on OpenSSL's
-- libcrypto). Definitions only: this file is never loaded by stagehost.

---@alias stagehost.crypto.Encoding "hex"|"raw"

---Digests, MACs, random bytes, codecs and AES-256-GCM.
---
---The codecs: base64, base64url (RFC 4648 section 5, unpadded, as JWTs use) and lower-case hex
---(decoded in either case, no separators). A decoder returns nil and a message for invalid input.
---@class stagehost.crypto
---@field base64_encode fun(data: string): string base64 (RFC 4648), padded
---@field base64_decode fun(text: string): string|nil, string? the data, or nil and why the text is not base64
---@field base64url_encode fun(data: string): string base64url (RFC 4648 section 5), unpadded, as JWTs use
---@field base64url_decode fun(text: string): string|nil, string? the data, or nil and why the text is not base64url
---@field hex_encode fun(data: string): string lower-case hex
---@field hex_decode fun(text: string): string|nil, string? the data (hex in either case, no separators), or nil and why not
local crypto = {}

---SHA-256 of data, lower-case hex by default.
---@param data string
---@param encoding? stagehost.crypto.Encoding
---@return string
function crypto.sha256(data, encoding) end

---HMAC-SHA256 of msg with key, lower-case hex by default.
---@param key string
---@param msg string
---@param encoding? stagehost.crypto.Encoding
---@return string
function crypto.hmac_sha256(key, msg, encoding) end

---n bytes from the CSPRNG (0 to 1 MiB).
---@param n integer
---@return string
function crypto.random(n) end

---Compares in constant time (for equal lengths).
---@param a string
---@param b string
---@return boolean
function crypto.equal(a, b) end

---Encrypts and authenticates with AES-256-GCM: version byte, 12-byte nonce, ciphertext, 16-byte tag.
---@param key string 32 raw bytes (any other length raises)
---@param plaintext string
---@param aad? string authenticated, not stored; must be the same to open
---@return string blob
function crypto.seal(key, plaintext, aad) end

---Reverses `seal`; a blob cut short, of another version, altered, or sealed with another key or
---aad gives `nil, message, "EBADMSG"`.
---@param key string 32 raw bytes
---@param blob string
---@param aad? string
---@return string|nil plaintext
---@return string? message
---@return string? code "EBADMSG"
function crypto.open(key, blob, aad) end

return crypto
