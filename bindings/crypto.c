/* stagehost.core.crypto on OpenSSL libcrypto 3: SHA-256, HMAC-SHA256 (webhook signatures, AWS
 * SigV4), a CSPRNG, a constant-time comparison, base64 / base64url / hex codecs, and AES-256-GCM
 * sealing (secrets kept at rest in the state store).
 *
 * The hashing, the randomness, the comparison and the codecs' bit work are OpenSSL's. What is
 * ours is validation: EVP_DecodeBlock silently decodes "Z===" and "=Zg=" (it treats '=' as zero
 * bits anywhere), requires padding, and never says how many of its output bytes are padding; so
 * the decoders check the input first, naming the position of the first bad byte, and hand
 * OpenSSL only well-formed, fully padded groups. Codec failures return nil + message (the input
 * is data from the world); misuse (wrong types, a bad mode, an impossible length) raises. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "auxlib.h"

#define SH_CRYPTO_RANDOM_MAX (1024 * 1024)
/* Input handed to OpenSSL's int-sized codec calls at a time: whole 3-byte groups to encode,
 * whole 4-character groups to decode, so padding can only occur in the last chunk. */
#define SH_CRYPTO_ENC_CHUNK (3 * 4096)
#define SH_CRYPTO_DEC_CHUNK (4 * 4096)

/* Raise with OpenSSL's reason for the failure, and leave its error queue empty so a later,
 * unrelated failure does not report this one. */
static int sh_crypto_fail(lua_State *L, const char *fname, const char *what) {
  unsigned long e = ERR_peek_last_error();
  char reason[256] = "unknown error";
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  return luaL_error(L, "crypto.%s: %s failed: %s", fname, what, reason);
}

/* A digest as lower-case hex (OpenSSL's hex helper writes upper case) or as raw bytes. */
static int sh_crypto_push_digest(lua_State *L, const unsigned char *md, size_t len, int raw, const char *fname) {
  if (raw) {
    lua_pushlstring(L, (const char *)md, len);
    return 1;
  }
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  size_t hl;
  if (!OPENSSL_buf2hexstr_ex(hex, sizeof hex, &hl, md, len, '\0')) return sh_crypto_fail(L, fname, "hex encoding");
  for (size_t i = 0; i < 2 * len; i++)
    if (hex[i] >= 'A' && hex[i] <= 'F') hex[i] = (char)(hex[i] - 'A' + 'a');
  lua_pushlstring(L, hex, 2 * len);
  return 1;
}

static const char *const sh_crypto_modes[] = {"hex", "raw", NULL};

/* sha256(data [, "hex" | "raw"]) -> digest */
static int sh_crypto_sha256(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  int raw = luaL_checkoption(L, 2, "hex", sh_crypto_modes);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int ml = 0;
  if (!EVP_Digest(data, len, md, &ml, EVP_sha256(), NULL)) return sh_crypto_fail(L, "sha256", "EVP_Digest");
  return sh_crypto_push_digest(L, md, ml, raw, "sha256");
}

/* hmac_sha256(key, msg [, "hex" | "raw"]) -> MAC */
static int sh_crypto_hmac_sha256(lua_State *L) {
  size_t klen, mlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  int raw = luaL_checkoption(L, 3, "hex", sh_crypto_modes);
  /* HMAC() takes the key length as an int */
  luaL_argcheck(L, klen <= INT_MAX, 1, "key too long");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int ml = 0;
  if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, md, &ml))
    return sh_crypto_fail(L, "hmac_sha256", "HMAC");
  return sh_crypto_push_digest(L, md, ml, raw, "hmac_sha256");
}

/* random(n) -> n bytes from OpenSSL's CSPRNG, for tokens, nonces and temporary secrets */
static int sh_crypto_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= SH_CRYPTO_RANDOM_MAX, 1, "length must be between 0 and 1048576");
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  /* RAND_bytes fails rather than return weak bytes (e.g. when it cannot seed): raise */
  if (n > 0 && RAND_bytes(p, (int)n) != 1) return sh_crypto_fail(L, "random", "RAND_bytes");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* equal(a, b) -> bool. For equal lengths every byte is compared whatever the content, so the
 * time says nothing about where a forged signature first differs; the length itself is not
 * secret (a MAC's length is public), so different lengths answer false at once. */
static int sh_crypto_equal(lua_State *L) {
  size_t la, lb;
  const char *a = luaL_checklstring(L, 1, &la);
  const char *b = luaL_checklstring(L, 2, &lb);
  lua_pushboolean(L, la == lb && CRYPTO_memcmp(a, b, la) == 0);
  return 1;
}

/* ---- base64 ---- */

/* Encode with EVP_EncodeBlock (standard alphabet, padded, no line breaks); base64url then maps
 * the two characters that differ and drops the padding, as JWTs (RFC 7515) want. */
static int sh_crypto_b64encode(lua_State *L, int url) {
  size_t len;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t off = 0; off < len; off += SH_CRYPTO_ENC_CHUNK) {
    size_t n = len - off < SH_CRYPTO_ENC_CHUNK ? len - off : SH_CRYPTO_ENC_CHUNK;
    /* 4 characters per 3 bytes, plus the NUL EVP_EncodeBlock writes */
    char *out = luaL_prepbuffsize(&b, (n + 2) / 3 * 4 + 1);
    int w = EVP_EncodeBlock((unsigned char *)out, s + off, (int)n);
    if (url) {
      for (int i = 0; i < w; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
        else if (out[i] == '=') {
          w = i; /* padding only ever ends the last group */
          break;
        }
      }
    }
    luaL_addsize(&b, (size_t)w);
  }
  luaL_pushresult(&b);
  return 1;
}

static int sh_crypto_base64_encode(lua_State *L) { return sh_crypto_b64encode(L, 0); }
static int sh_crypto_base64url_encode(lua_State *L) { return sh_crypto_b64encode(L, 1); }

static int sh_crypto_isspace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The value of an alphabet character (0..63), or -1. base64url's '-' and '_' take the places
 * of '+' and '/'; each alphabet refuses the other's two, since a mix means a mangled value. */
static int sh_crypto_b64value(unsigned char c, int url) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == (url ? '-' : '+')) return 62;
  if (c == (url ? '_' : '/')) return 63;
  return -1;
}

/* Return nil, "crypto.NAME: what at position P ('c')": P counts bytes from 1, c shows the
 * offending byte when there is one (c >= 0), escaped unless printable. */
static int sh_crypto_reject(lua_State *L, const char *fname, const char *what, size_t pos, int c) {
  char shown[32] = "";
  if (c >= 0x21 && c < 0x7f) snprintf(shown, sizeof shown, " ('%c')", c);
  else if (c >= 0) snprintf(shown, sizeof shown, " (byte 0x%02x)", (unsigned)c);
  lua_pushnil(L);
  lua_pushfstring(L, "crypto.%s: %s at position %I%s", fname, what, (lua_Integer)pos, shown);
  return 2;
}

/* Decode the validated groups in in[0..n) (n a multiple of 4, in the standard alphabet) into b;
 * pad is how many of the last group's characters are '=', whose output bytes are dropped. */
static int sh_crypto_b64flush(luaL_Buffer *b, const char *in, size_t n, size_t pad) {
  if (n == 0) return 0;
  unsigned char *out = (unsigned char *)luaL_prepbuffsize(b, n / 4 * 3);
  int w = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
  if (w < 0 || (size_t)w != n / 4 * 3) return -1;
  luaL_addsize(b, (size_t)w - pad);
  return 0;
}

/* Accepts the alphabet with '=' padding, without padding (padding is all or nothing: "Zg=" is
 * refused), and ASCII whitespace anywhere (line-wrapped PEM-style and AWS output). Non-zero
 * bits in the unused low bits of the last character ("Zh==") are accepted, as most decoders
 * do (RFC 4648 3.5 makes rejecting them optional): they decode to the same bytes. */
static int sh_crypto_b64decode(lua_State *L, int url) {
  const char *fname = url ? "base64url_decode" : "base64_decode";
  size_t len;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);

  /* Pass 1: validate, so a bad input is refused with where it went wrong and nothing decoded. */
  size_t ndata = 0, npad = 0, last = 0, last_pad = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (sh_crypto_isspace(c)) continue;
    if (c == '=') {
      /* padding may only follow 2 or 3 characters of a group, at most two of it */
      if (ndata % 4 < 2 || npad >= 4 - ndata % 4) return sh_crypto_reject(L, fname, "unexpected padding", i + 1, -1);
      npad++;
      last_pad = i + 1;
    } else if (sh_crypto_b64value(c, url) < 0) {
      return sh_crypto_reject(L, fname, "invalid character", i + 1, c);
    } else if (npad) {
      return sh_crypto_reject(L, fname, "data after padding", i + 1, c);
    } else {
      ndata++;
      last = i + 1;
    }
  }
  size_t tail = ndata % 4;
  /* one character carries 6 bits, less than a byte: the input was cut */
  if (tail == 1) return sh_crypto_reject(L, fname, "truncated input, a lone character", last, -1);
  /* where the missing '=' should have been */
  if (npad && npad != 4 - tail) return sh_crypto_reject(L, fname, "incomplete padding", last_pad + 1, -1);

  /* Pass 2: copy the significant characters, in the standard alphabet, into whole groups for
   * EVP_DecodeBlock, and complete the missing padding of the last group. */
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char chunk[SH_CRYPTO_DEC_CHUNK];
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = (char)s[i];
    if (sh_crypto_isspace((unsigned char)c) || c == '=') continue;
    if (url) c = c == '-' ? '+' : c == '_' ? '/' : c;
    chunk[n++] = c;
    if (n == sizeof chunk) {
      if (sh_crypto_b64flush(&b, chunk, n, 0) != 0) return sh_crypto_fail(L, fname, "EVP_DecodeBlock");
      n = 0;
    }
  }
  size_t pad = tail ? 4 - tail : 0;
  for (size_t i = 0; i < pad; i++) chunk[n++] = '='; /* room: n % 4 == tail before this */
  if (sh_crypto_b64flush(&b, chunk, n, pad) != 0) return sh_crypto_fail(L, fname, "EVP_DecodeBlock");
  luaL_pushresult(&b);
  return 1;
}

static int sh_crypto_base64_decode(lua_State *L) { return sh_crypto_b64decode(L, 0); }
static int sh_crypto_base64url_decode(lua_State *L) { return sh_crypto_b64decode(L, 1); }

/* ---- hex ---- */

/* hex_encode(s) -> lower-case hex, like sha256's hex output and sha256sum's */
static int sh_crypto_hex_encode(lua_State *L) {
  size_t len;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len <= (((size_t)-1) - 1) / 2, 1, "string too long");
  luaL_Buffer b;
  /* OPENSSL_buf2hexstr_ex writes a terminating NUL after the 2 * len digits */
  char *out = luaL_buffinitsize(L, &b, 2 * len + 1);
  if (!OPENSSL_buf2hexstr_ex(out, 2 * len + 1, NULL, s, len, '\0')) return sh_crypto_fail(L, "hex_encode", "OPENSSL_buf2hexstr_ex");
  for (size_t i = 0; i < 2 * len; i++)
    if (out[i] >= 'A' && out[i] <= 'F') out[i] = (char)(out[i] - 'A' + 'a');
  luaL_pushresultsize(&b, 2 * len);
  return 1;
}

/* hex_decode(s) -> bytes; either case, no separators or whitespace */
static int sh_crypto_hex_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  /* Validate first: OpenSSL's parser says neither where nor why, and it stops at a NUL byte,
   * which this loop refuses. */
  for (size_t i = 0; i < len; i++)
    if (OPENSSL_hexchar2int((unsigned char)s[i]) < 0)
      return sh_crypto_reject(L, "hex_decode", "invalid hex digit", i + 1, (unsigned char)s[i]);
  if (len % 2) {
    lua_pushnil(L);
    lua_pushfstring(L, "crypto.hex_decode: odd number of digits (%I)", (lua_Integer)len);
    return 2;
  }
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, len / 2);
  size_t n = 0;
  /* s is NUL-terminated (every Lua string is) and holds no other NUL, as checked above */
  if (len && !OPENSSL_hexstr2buf_ex(out, len / 2, &n, s, '\0')) return sh_crypto_fail(L, "hex_decode", "OPENSSL_hexstr2buf_ex");
  luaL_pushresultsize(&b, n);
  return 1;
}

/* ---- AES-256-GCM ---- */

/* A sealed blob is version (1 byte, 0x01) || nonce (12 random bytes) || ciphertext (as long as
 * the plaintext) || tag (16 bytes). The version byte lets a later format (another cipher, a key
 * id) be told apart instead of failing authentication. It is not part of the AAD, so what
 * follows it is plain GCM (SP 800-38D's IV, C, T) that any AES-GCM implementation opens; an
 * altered version byte is refused all the same. A random 96-bit nonce per seal is safe for
 * 2^32 seals under one key (SP 800-38D 8.3), far beyond a state store's use. The key is never
 * copied: OpenSSL expands it into the cipher context, which EVP_CIPHER_CTX_free cleanses. */
#define SH_SEAL_VERSION 0x01
#define SH_SEAL_KEY 32
#define SH_SEAL_NONCE 12
#define SH_SEAL_TAG 16
#define SH_SEAL_OVERHEAD (1 + SH_SEAL_NONCE + SH_SEAL_TAG)
/* EVP's update calls take int lengths: larger inputs go through in pieces of this size */
#define SH_SEAL_CHUNK (1 << 30)

static const char *sh_crypto_checkkey(lua_State *L, int arg) {
  size_t len;
  const char *key = luaL_checklstring(L, arg, &len);
  if (len != SH_SEAL_KEY) {
    lua_pushfstring(L, "32-byte key expected, got %I bytes", (lua_Integer)len);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
  return key;
}

/* Feed the caller's aad, if any. */
static int sh_crypto_gcm_aad(EVP_CIPHER_CTX *ctx, const unsigned char *aad, size_t alen) {
  int outl;
  for (size_t off = 0; off < alen; off += SH_SEAL_CHUNK) {
    size_t n = alen - off < SH_SEAL_CHUNK ? alen - off : SH_SEAL_CHUNK;
    if (EVP_CipherUpdate(ctx, NULL, &outl, aad + off, (int)n) != 1) return 0;
  }
  return 1;
}

/* Run the cipher over in[0..len) into out (GCM is a stream mode: out has len bytes). */
static int sh_crypto_gcm_update(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *in, size_t len) {
  for (size_t off = 0; off < len; off += SH_SEAL_CHUNK) {
    size_t n = len - off < SH_SEAL_CHUNK ? len - off : SH_SEAL_CHUNK;
    int outl = 0;
    if (EVP_CipherUpdate(ctx, out + off, &outl, in + off, (int)n) != 1 || (size_t)outl != n) return 0;
  }
  return 1;
}

/* Start AES-256-GCM (enc 1 seals, 0 opens) with key and nonce, feed the aad, and run the cipher
 * over in[0..len) into out: everything but the tag. */
static int sh_crypto_gcm_begin(EVP_CIPHER_CTX *ctx, int enc, const unsigned char *key, const unsigned char *nonce,
                               const unsigned char *aad, size_t alen, unsigned char *out,
                               const unsigned char *in, size_t len) {
  return ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc) == 1 &&
         sh_crypto_gcm_aad(ctx, aad, alen) && sh_crypto_gcm_update(ctx, out, in, len);
}

/* seal(key, plaintext [, aad]) -> blob. Misuse raises; so does an OpenSSL failure (no entropy,
 * no memory), which says nothing about the data. */
static int sh_crypto_seal(lua_State *L) {
  const unsigned char *key = (const unsigned char *)sh_crypto_checkkey(L, 1);
  size_t plen, alen = 0;
  const unsigned char *pt = (const unsigned char *)luaL_checklstring(L, 2, &plen);
  const unsigned char *aad = (const unsigned char *)luaL_optlstring(L, 3, NULL, &alen);
  luaL_argcheck(L, plen <= ((size_t)-1) - SH_SEAL_OVERHEAD, 2, "plaintext too long");
  size_t total = plen + SH_SEAL_OVERHEAD;
  /* the Lua buffer first: it may raise (out of memory), which must not leak a cipher context */
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, total);
  out[0] = SH_SEAL_VERSION;
  unsigned char *nonce = out + 1, *ct = nonce + SH_SEAL_NONCE, *tag = ct + plen;
  if (RAND_bytes(nonce, SH_SEAL_NONCE) != 1) return sh_crypto_fail(L, "seal", "RAND_bytes");
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int outl = 0;
  int ok = sh_crypto_gcm_begin(ctx, 1, key, nonce, aad, alen, ct, pt, plen) &&
           EVP_EncryptFinal_ex(ctx, ct + plen, &outl) == 1 && outl == 0 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SH_SEAL_TAG, tag) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) return sh_crypto_fail(L, "seal", "AES-256-GCM encryption");
  luaL_pushresultsize(&b, total);
  return 1;
}

static int sh_crypto_badmsg(lua_State *L, const char *fmt, lua_Integer n) {
  lua_pushnil(L);
  lua_pushfstring(L, fmt, n);
  lua_pushliteral(L, "EBADMSG");
  return 3;
}

/* open(key, blob [, aad]) -> plaintext, or nil, message, "EBADMSG" for a blob that is cut short,
 * of another version, or fails authentication (another key, another aad, altered bytes): such a
 * blob comes from the world. The plaintext is decrypted into a scratch userdata that is wiped
 * on both paths, so neither unauthenticated bytes nor a spare copy of the secret linger. */
static int sh_crypto_open(lua_State *L) {
  const unsigned char *key = (const unsigned char *)sh_crypto_checkkey(L, 1);
  size_t blen, alen = 0;
  const unsigned char *blob = (const unsigned char *)luaL_checklstring(L, 2, &blen);
  const unsigned char *aad = (const unsigned char *)luaL_optlstring(L, 3, NULL, &alen);
  if (blen < SH_SEAL_OVERHEAD)
    return sh_crypto_badmsg(L, "crypto.open: truncated blob (%I bytes, a sealed blob has at least 29)", (lua_Integer)blen);
  if (blob[0] != SH_SEAL_VERSION)
    return sh_crypto_badmsg(L, "crypto.open: unknown blob version %I (expected 1)", (lua_Integer)blob[0]);
  const unsigned char *nonce = blob + 1, *ct = nonce + SH_SEAL_NONCE;
  size_t plen = blen - SH_SEAL_OVERHEAD;
  const unsigned char *tag = ct + plen;
  unsigned char *pt = lua_newuserdatauv(L, plen ? plen : 1, 0); /* may raise: before the context */
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int outl = 0, setup = 0, authentic = 0;
  if (sh_crypto_gcm_begin(ctx, 0, key, nonce, aad, alen, pt, ct, plen) &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SH_SEAL_TAG, (void *)tag) == 1) {
    setup = 1;
    /* the only step that fails for bad data: the tag does not match */
    authentic = EVP_DecryptFinal_ex(ctx, pt + plen, &outl) == 1 && outl == 0;
  }
  EVP_CIPHER_CTX_free(ctx);
  if (!setup) {
    OPENSSL_cleanse(pt, plen);
    return sh_crypto_fail(L, "open", "AES-256-GCM decryption");
  }
  if (!authentic) {
    OPENSSL_cleanse(pt, plen);
    ERR_clear_error();
    return sh_crypto_badmsg(L, "crypto.open: authentication failed (another key or aad, or the data was altered)", 0);
  }
  lua_pushlstring(L, (const char *)pt, plen);
  OPENSSL_cleanse(pt, plen);
  return 1;
}

static const luaL_Reg sh_crypto_funcs[] = {
    {"sha256", sh_crypto_sha256}, {"hmac_sha256", sh_crypto_hmac_sha256},
    {"random", sh_crypto_random}, {"equal", sh_crypto_equal},
    {"base64_encode", sh_crypto_base64_encode}, {"base64_decode", sh_crypto_base64_decode},
    {"base64url_encode", sh_crypto_base64url_encode}, {"base64url_decode", sh_crypto_base64url_decode},
    {"hex_encode", sh_crypto_hex_encode}, {"hex_decode", sh_crypto_hex_decode},
    {"seal", sh_crypto_seal}, {"open", sh_crypto_open},
    {NULL, NULL},
};

int luaopen_stagehost_core_crypto(lua_State *L) {
  return sh_newmodule(L, sh_crypto_funcs, NULL, NULL);
}
