-- Crypto on OpenSSL: sha256, hmac_sha256, random, equal (constant time), base64, base64url, hex.
return require "stagehost.core.crypto"
