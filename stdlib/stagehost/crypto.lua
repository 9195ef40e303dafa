-- Crypto on OpenSSL: sha256, hmac_sha256, random, equal (constant time), base64, base64url, hex,
-- and AES-256-GCM seal/open.
return require "stagehost.core.crypto"
