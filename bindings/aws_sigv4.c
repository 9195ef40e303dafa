/* stagehost.core.aws_sigv4: AWS Signature Version 4 request signing on OpenSSL (SHA-256 and
 * HMAC-SHA256), for the AWS clients of the stdlib (CloudFormation, S3, STS, ...).
 *
 * sign(opts) -> headers, debug. What is ours is the canonical form of a request, which the
 * signature covers byte for byte, so every rule below follows the SigV4 specification and its
 * published test suite:
 *   - the path: non-S3 services get "." / ".." removed and empty segments collapsed, and every
 *     byte but the unreserved ones and '/' percent-encoded, '%' included (the URL's path is
 *     what goes on the wire, already encoded once: AWS wants it encoded a second time). S3 paths
 *     are object keys: never normalised, encoded once (an existing %XX is kept);
 *   - the query: each name and value percent-decoded then re-encoded (RFC 3986; '+' is a plain
 *     plus, not a space), sorted by name then value;
 *   - the headers: lower-case names, values trimmed with runs of white space (obs-fold line
 *     breaks included) folded to one space; a value given as an array is joined with ','.
 *
 * The secret only ever lives in stack buffers that are cleansed after use: it is never
 * interned as a Lua string, printed or kept. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auxlib.h"

#define SH_SIGV4_WHO "aws.sign" /* misuse is "bad argument #1 to 'aws.sign' (...)" */

/* AWS secrets are 40 characters; the bound keeps "AWS4" + secret in a stack buffer */
#define SH_SIGV4_SECRET_MAX 1024
#define SH_SIGV4_SHA256_LEN 32
#define SH_SIGV4_DATE_LEN 16 /* 20150830T123600Z */
/* 9999-12-31T23:59:59Z: the last second an X-Amz-Date can spell */
#define SH_SIGV4_TIME_MAX 253402300799LL

typedef struct {
  const char *s;
  size_t n;
} sh_sigv4_str;

typedef struct {
  sh_sigv4_str name, value;
  const char *given; /* the name as the caller spelled it, for messages; NULL for ours */
} sh_sigv4_pair;

typedef struct {
  sh_sigv4_str authority; /* host[:port], as written */
  sh_sigv4_str host_header;
  sh_sigv4_str path;
  sh_sigv4_str query;
} sh_sigv4_url;

/* ---- bytes ---- */

static int sh_sigv4_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

static int sh_sigv4_hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int sh_sigv4_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void sh_sigv4_addpct(luaL_Buffer *b, unsigned char c) {
  static const char hex[] = "0123456789ABCDEF";
  char e[3] = {'%', hex[c >> 4], hex[c & 15]};
  luaL_addlstring(b, e, 3);
}

/* A byte as SigV4 writes it: unreserved characters as they are, everything else %XX */
static void sh_sigv4_addenc(luaL_Buffer *b, unsigned char c) {
  if (sh_sigv4_unreserved(c)) luaL_addchar(b, (char)c);
  else sh_sigv4_addpct(b, c);
}

static void sh_sigv4_tohex(const unsigned char *md, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  out[2 * n] = '\0';
}

/* Is s[i..] a %XX escape? -> the byte, or -1 */
static int sh_sigv4_escape_at(const char *s, size_t n, size_t i) {
  if (s[i] != '%' || i + 2 >= n) return -1;
  int hi = sh_sigv4_hexval((unsigned char)s[i + 1]), lo = sh_sigv4_hexval((unsigned char)s[i + 2]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int sh_sigv4_cmpstr(sh_sigv4_str a, sh_sigv4_str b) {
  int c = memcmp(a.s, b.s, a.n < b.n ? a.n : b.n);
  return c ? c : (a.n > b.n) - (a.n < b.n);
}

static int sh_sigv4_cmppair(const void *pa, const void *pb) {
  const sh_sigv4_pair *a = pa, *b = pb;
  int c = sh_sigv4_cmpstr(a->name, b->name);
  return c ? c : sh_sigv4_cmpstr(a->value, b->value);
}

/* A caller's string for an error message: one line (control bytes as \xNN), and not a page long */
static void sh_sigv4_push_shown(lua_State *L, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n && i < 200; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) {
      char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
      luaL_addlstring(&b, e, 4);
    } else {
      luaL_addchar(&b, (char)c);
    }
  }
  if (n > 200) luaL_addstring(&b, "...");
  luaL_pushresult(&b);
}

/* An OpenSSL call failed: raise with its reason, and leave the thread's error queue empty so
 * the reason does not surface later under some unrelated call (as crypto.c's sh_crypto_fail). */
static int sh_sigv4_ssl_fail(lua_State *L, const char *what) {
  unsigned long e = ERR_peek_last_error();
  char reason[256] = "unknown error";
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  return luaL_error(L, "aws.sign: %s failed: %s", what, reason);
}

/* A URL for an error message: its scheme and host only. The userinfo may hold a password and
 * the query a pre-signed X-Amz-Signature or a session token, so neither is ever echoed; a
 * "user:password@" becomes "***@". Without a "://" the whole text is taken as the host part. */
static void sh_sigv4_push_url_shown(lua_State *L, const char *u, size_t n) {
  /* a scheme is letters, digits, '+', '-', '.' (RFC 3986): a "://" later on is in the path */
  size_t a = 0, i = 0;
  while (i < n && ((u[i] >= 'a' && u[i] <= 'z') || (u[i] >= 'A' && u[i] <= 'Z') ||
                   (i > 0 && ((u[i] >= '0' && u[i] <= '9') || u[i] == '+' || u[i] == '-' || u[i] == '.'))))
    i++;
  if (i > 0 && i + 2 < n && u[i] == ':' && u[i + 1] == '/' && u[i + 2] == '/') a = i + 3;
  size_t e = a, at = 0;
  int has_at = 0;
  while (e < n && u[e] != '/' && u[e] != '?' && u[e] != '#') {
    if (u[e] == '@') at = e, has_at = 1;
    e++;
  }
  lua_pushlstring(L, u, a);
  if (has_at) {
    lua_pushliteral(L, "***");
    lua_pushlstring(L, u + at, e - at);
  } else {
    lua_pushlstring(L, u + a, e - a);
  }
  lua_concat(L, has_at ? 3 : 2);
  size_t rn;
  const char *raw = lua_tolstring(L, -1, &rn);
  sh_sigv4_push_shown(L, raw, rn);
  lua_remove(L, -2);
}

/* ---- options ---- */

/* Push opts[key] and return it as a string, or NULL (nil pushed) when optional and absent. The
 * value stays on the stack, so the pointer stays valid. */
static const char *sh_sigv4_field(lua_State *L, int t, const char *key, const char *label, int required, size_t *len) {
  int ty = lua_getfield(L, t, key);
  if (ty == LUA_TNIL && !required) {
    if (len) *len = 0;
    return NULL;
  }
  if (ty != LUA_TSTRING) sh_opt_typeerror(L, 1, SH_SIGV4_WHO, label, "a string");
  return lua_tolstring(L, -1, len);
}

/* region, service and the key id go into the credential scope, which '/' separates */
static const char *sh_sigv4_scope_part(lua_State *L, int t, const char *key, const char *label, size_t *len) {
  const char *s = sh_sigv4_field(L, t, key, label, 1, len);
  if (*len == 0) sh_opt_error(L, 1, SH_SIGV4_WHO, label, "must not be empty");
  for (size_t i = 0; i < *len; i++)
    if (s[i] == '/' || (unsigned char)s[i] <= ' ' || s[i] == 0x7f)
      sh_opt_error(L, 1, SH_SIGV4_WHO, label, "must not contain '/', spaces or control characters");
  return s;
}

static int sh_sigv4_num(const char *s, int n) {
  int v = 0;
  for (int i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
  return v;
}

/* "YYYYMMDDTHHMMSSZ", digits already checked: month 1-12, a day the month has (leap years
 * counted), hour < 24, minute < 60, second < 60 (X-Amz-Date has no leap seconds) */
static int sh_sigv4_valid_date(const char *s) {
  static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int year = sh_sigv4_num(s, 4), month = sh_sigv4_num(s + 4, 2), day = sh_sigv4_num(s + 6, 2);
  int hour = sh_sigv4_num(s + 9, 2), minute = sh_sigv4_num(s + 11, 2), second = sh_sigv4_num(s + 13, 2);
  if (month < 1 || month > 12 || day < 1) return 0;
  int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day > mdays[month - 1] + (month == 2 && leap)) return 0;
  return hour < 24 && minute < 60 && second < 60;
}

/* X-Amz-Date for opts.time: epoch seconds, "YYYYMMDDTHHMMSSZ", or nil for now */
static void sh_sigv4_date(lua_State *L, int t, char out[SH_SIGV4_DATE_LEN + 1]) {
  int ty = lua_getfield(L, t, "time");
  if (ty == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    int ok = n == SH_SIGV4_DATE_LEN && s[8] == 'T' && s[15] == 'Z';
    for (size_t i = 0; ok && i < 15; i++)
      if (i != 8 && (s[i] < '0' || s[i] > '9')) ok = 0;
    /* AWS refuses a date that is no date; say so here rather than as a signature mismatch */
    if (ok && !sh_sigv4_valid_date(s)) {
      sh_sigv4_push_shown(L, s, n);
      sh_argerror(L, 1, SH_SIGV4_WHO, "time '%s' is not a real date and time (UTC)", lua_tostring(L, -1));
    }
    if (!ok) {
      sh_sigv4_push_shown(L, s, n);
      sh_opt_error(L, 1, SH_SIGV4_WHO, "time", "must look like 20150830T123600Z, got '%s'", lua_tostring(L, -1));
    }
    memcpy(out, s, SH_SIGV4_DATE_LEN + 1);
    lua_pop(L, 1);
    return;
  }
  time_t now;
  if (ty == LUA_TNIL) {
    now = time(NULL);
  } else {
    int isint = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (ty != LUA_TNUMBER || !isint)
      sh_opt_error(L, 1, SH_SIGV4_WHO, "time", "must be integer epoch seconds or a string like 20150830T123600Z, got %s",
                 luaL_typename(L, -1));
    if (v < 0 || v > SH_SIGV4_TIME_MAX) sh_argerror(L, 1, SH_SIGV4_WHO, "time out of range");
    now = (time_t)v;
  }
  lua_pop(L, 1);
  struct tm tm;
  if (!gmtime_r(&now, &tm) || strftime(out, SH_SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != SH_SIGV4_DATE_LEN)
    sh_argerror(L, 1, SH_SIGV4_WHO, "time out of range");
}

/* ---- URL ---- */

static int sh_sigv4_prefix(const char *s, size_t n, const char *p) {
  size_t pn = strlen(p);
  if (n < pn) return 0;
  for (size_t i = 0; i < pn; i++) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != p[i]) return 0;
  }
  return 1;
}

/* Split http(s)://host[:port]/path?query#fragment. -> NULL, or why it is malformed */
static const char *sh_sigv4_parse_url(const char *u, size_t n, sh_sigv4_url *out) {
  size_t i, default_port;
  if (sh_sigv4_prefix(u, n, "https://")) i = 8, default_port = 443;
  else if (sh_sigv4_prefix(u, n, "http://")) i = 7, default_port = 80;
  else return "not http:// or https://";
  for (size_t k = 0; k < n; k++)
    if ((unsigned char)u[k] < 0x20 || u[k] == 0x7f) return "it has a control character";

  size_t a = i;
  while (i < n && u[i] != '/' && u[i] != '?' && u[i] != '#') i++;
  out->authority = (sh_sigv4_str){u + a, i - a};
  if (i == a) return "no host";
  if (memchr(u + a, '@', i - a)) return "user info (user@ or user:password@) is not supported";
  /* the port is after the last ':' outside an IPv6 literal's brackets */
  size_t host_end = i;
  if (u[a] == '[') {
    size_t k = a;
    while (k < i && u[k] != ']') k++;
    if (k == i) return "an unclosed '[' in the host";
    host_end = k + 1;
    if (host_end < i && u[host_end] != ':') return "text after the ']' of the host";
  } else {
    for (size_t k = a; k < i; k++)
      if (u[k] == ':') host_end = k;
  }
  for (size_t k = a; k < host_end; k++)
    if (u[k] == ' ') return "a space in the host";
  if (host_end == a) return "no host";
  size_t port = 0;
  if (host_end < i) {
    size_t digits = i - host_end - 1;
    if (digits == 0 || digits > 5) return "a bad port";
    for (size_t k = host_end + 1; k < i; k++) {
      if (u[k] < '0' || u[k] > '9') return "a bad port";
      port = port * 10 + (size_t)(u[k] - '0');
    }
    if (port == 0 || port > 65535) return "a bad port";
  }
  /* the Host a client sends: the default port is left out */
  out->host_header = host_end < i && port == default_port ? (sh_sigv4_str){u + a, host_end - a} : out->authority;

  size_t p = i;
  while (i < n && u[i] != '?' && u[i] != '#') i++;
  out->path = (sh_sigv4_str){u + p, i - p};
  out->query = (sh_sigv4_str){u + n, 0};
  if (i < n && u[i] == '?') {
    size_t q = ++i;
    while (i < n && u[i] != '#') i++;
    out->query = (sh_sigv4_str){u + q, i - q};
  }
  return NULL;
}

/* ---- canonical URI ---- */

/* Does the path have a "." or ".." segment? An S3 key is signed as written, but libcurl (and
 * most HTTP clients) resolve those segments before sending, so what S3 checks the signature
 * against would not be what was signed. Escaped dots ("%2E") are left alone by curl. */
static int sh_sigv4_dot_segments(sh_sigv4_str path) {
  size_t start = 0;
  for (size_t i = 0; i <= path.n; i++) {
    if (i < path.n && path.s[i] != '/') continue;
    size_t len = i - start;
    if ((len == 1 && path.s[start] == '.') || (len == 2 && path.s[start] == '.' && path.s[start + 1] == '.'))
      return 1;
    start = i + 1;
  }
  return 0;
}

/* S3: the key as it is, each byte encoded once; an escape already there stays (in upper case) */
static void sh_sigv4_uri_s3(lua_State *L, sh_sigv4_str path) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (path.n == 0) luaL_addchar(&b, '/');
  for (size_t i = 0; i < path.n; i++) {
    unsigned char c = (unsigned char)path.s[i];
    int e = sh_sigv4_escape_at(path.s, path.n, i);
    if (e >= 0) {
      sh_sigv4_addpct(&b, (unsigned char)e);
      i += 2;
    } else if (sh_sigv4_unreserved(c) || c == '/') {
      luaL_addchar(&b, (char)c);
    } else {
      sh_sigv4_addpct(&b, c);
    }
  }
  luaL_pushresult(&b);
}

/* How many parts s has when split at sep: one more than the separators. */
static size_t sh_sigv4_parts(sh_sigv4_str s, char sep) {
  size_t n = 1;
  for (size_t i = 0; i < s.n; i++)
    if (s.s[i] == sep) n++;
  return n;
}

/* Other services: remove_dot_segments, empty segments dropped, then every segment encoded */
static void sh_sigv4_uri_normalized(lua_State *L, sh_sigv4_str path) {
  size_t nseg = sh_sigv4_parts(path, '/');
  sh_sigv4_str *seg = lua_newuserdatauv(L, nseg * sizeof *seg, 0);
  size_t top = 0, start = 0;
  int trailing = 0;
  for (size_t i = 0; i <= path.n; i++) {
    if (i < path.n && path.s[i] != '/') continue;
    sh_sigv4_str s = {path.s + start, i - start};
    start = i + 1;
    /* a path that ends in "/", "/." or "/.." names a directory: it keeps its final slash */
    trailing = s.n == 0 || (s.n == 1 && s.s[0] == '.') || (s.n == 2 && s.s[0] == '.' && s.s[1] == '.');
    if (s.n == 2 && s.s[0] == '.' && s.s[1] == '.') {
      if (top) top--;
    } else if (!trailing) {
      seg[top++] = s;
    }
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '/');
  for (size_t k = 0; k < top; k++) {
    if (k) luaL_addchar(&b, '/');
    for (size_t i = 0; i < seg[k].n; i++) {
      unsigned char c = (unsigned char)seg[k].s[i];
      sh_sigv4_addenc(&b, c);
    }
  }
  if (top && trailing) luaL_addchar(&b, '/');
  luaL_pushresult(&b);
  lua_remove(L, -2); /* the segment array */
}

/* ---- canonical query ---- */

/* Push s decoded (%XX) and re-encoded the RFC 3986 way */
static void sh_sigv4_requote(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    int e = sh_sigv4_escape_at(s, n, i);
    unsigned char c = (unsigned char)s[i];
    if (e >= 0) {
      c = (unsigned char)e;
      i += 2;
    }
    sh_sigv4_addenc(&b, c);
  }
  luaL_pushresult(&b);
}

static void sh_sigv4_query(lua_State *L, sh_sigv4_str q) {
  size_t max = sh_sigv4_parts(q, '&');
  sh_sigv4_pair *p = lua_newuserdatauv(L, max * sizeof *p, 0);
  lua_newtable(L); /* anchors the encoded strings */
  size_t np = 0, start = 0;
  int k = 0;
  for (size_t i = 0; i <= q.n; i++) {
    if (i < q.n && q.s[i] != '&') continue;
    const char *part = q.s + start;
    size_t len = i - start, eq = 0;
    start = i + 1;
    if (len == 0) continue;
    while (eq < len && part[eq] != '=') eq++;
    sh_sigv4_requote(L, part, eq);
    p[np].name.s = lua_tolstring(L, -1, &p[np].name.n);
    lua_rawseti(L, -2, ++k);
    sh_sigv4_requote(L, eq < len ? part + eq + 1 : part, eq < len ? len - eq - 1 : 0);
    p[np].value.s = lua_tolstring(L, -1, &p[np].value.n);
    lua_rawseti(L, -2, ++k);
    np++;
  }
  qsort(p, np, sizeof *p, sh_sigv4_cmppair);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t j = 0; j < np; j++) {
    if (j) luaL_addchar(&b, '&');
    luaL_addlstring(&b, p[j].name.s, p[j].name.n);
    luaL_addchar(&b, '=');
    luaL_addlstring(&b, p[j].value.s, p[j].value.n);
  }
  luaL_pushresult(&b);
  lua_replace(L, -3); /* over the pair array; the anchors go with it */
  lua_pop(L, 1);
}

/* ---- canonical headers ---- */

/* A header name: visible ASCII but the separators HTTP forbids; pushed lower-cased */
static void sh_sigv4_push_name(lua_State *L, const char *s, size_t n) {
  if (n == 0) sh_argerror(L, 1, SH_SIGV4_WHO, "header names must not be empty");
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c)) {
      sh_sigv4_push_shown(L, s, n);
      sh_argerror(L, 1, SH_SIGV4_WHO, "invalid header name '%s'", lua_tostring(L, -1));
    }
    out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  luaL_pushresultsize(&b, n);
}

/* Add one value to b trimmed, white space runs folded to one space */
static void sh_sigv4_add_value(lua_State *L, luaL_Buffer *b, const char *s, size_t n, const char *name) {
  size_t i = 0, end = n;
  while (i < end && sh_sigv4_space((unsigned char)s[i])) i++;
  while (end > i && sh_sigv4_space((unsigned char)s[end - 1])) end--;
  for (; i < end; i++) {
    unsigned char c = (unsigned char)s[i];
    if (sh_sigv4_space(c)) {
      while (i + 1 < end && sh_sigv4_space((unsigned char)s[i + 1])) i++;
      luaL_addchar(b, ' ');
    } else if (c < 0x20 || c == 0x7f) {
      sh_argerror(L, 1, SH_SIGV4_WHO, "headers['%s'] has a control character", name);
    } else {
      luaL_addchar(b, (char)c);
    }
  }
}

/* A value on the stack at idx (string, number, or array of those), pushed canonical. The
 * buffer sits above everything this reads, as luaL_Buffer requires. */
static void sh_sigv4_push_value(lua_State *L, int idx, const char *name) {
  luaL_Buffer b;
  idx = lua_absindex(L, idx);
  int ty = lua_type(L, idx);
  if (ty == LUA_TSTRING || ty == LUA_TNUMBER) {
    lua_pushvalue(L, idx); /* a copy: tolstring may convert a number in place */
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    luaL_buffinit(L, &b);
    sh_sigv4_add_value(L, &b, s, n, name);
    luaL_pushresult(&b);
    lua_remove(L, -2);
    return;
  }
  if (ty != LUA_TTABLE)
    sh_argerror(L, 1, SH_SIGV4_WHO, "headers['%s'] must be a string or an array of strings, got %s", name,
               luaL_typename(L, idx));
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  /* each element, converted to a string, sits below the buffer */
  lua_createtable(L, n > 0 && n < INT_MAX ? (int)n : 0, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    int et = lua_rawgeti(L, idx, i);
    if (et != LUA_TSTRING && et != LUA_TNUMBER)
      sh_argerror(L, 1, SH_SIGV4_WHO, "headers['%s'][%I] must be a string, got %s", name, i, luaL_typename(L, -1));
    lua_tostring(L, -1);
    lua_rawseti(L, -2, i);
  }
  int list = lua_gettop(L);
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    lua_pop(L, 1); /* still anchored by list */
    if (i > 1) luaL_addchar(&b, ',');
    sh_sigv4_add_value(L, &b, s, len, name);
  }
  luaL_pushresult(&b);
  lua_remove(L, list);
}

typedef struct {
  sh_sigv4_pair *h;
  size_t n;
  int anchor; /* table index keeping every name and value alive */
  int k;
} sh_sigv4_headers;

static int sh_sigv4_has(const sh_sigv4_headers *hs, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < hs->n; i++)
    if (hs->h[i].name.n == n && memcmp(hs->h[i].name.s, name, n) == 0) return (int)i + 1;
  return 0;
}

/* Add a header of ours: name lower case, value already canonical (pushed by the caller, popped) */
static void sh_sigv4_add_ours(lua_State *L, sh_sigv4_headers *hs, const char *name) {
  sh_sigv4_pair *p = &hs->h[hs->n++];
  p->name = (sh_sigv4_str){name, strlen(name)};
  p->value.s = lua_tolstring(L, -1, &p->value.n);
  p->given = NULL;
  lua_rawseti(L, hs->anchor, ++hs->k);
}

/* Read opts.headers (index t, or nil) into hs, skipping the ones this signer sets itself. */
static void sh_sigv4_read_headers(lua_State *L, int t, sh_sigv4_headers *hs, int have_token) {
  size_t count = 0;
  if (!lua_isnil(L, t)) {
    if (!lua_istable(L, t)) sh_opt_error(L, 1, SH_SIGV4_WHO, "headers", "must be a table, got %s", luaL_typename(L, t));
    lua_pushnil(L);
    while (lua_next(L, t)) {
      count++;
      lua_pop(L, 1);
    }
  }
  /* host, x-amz-date, x-amz-security-token, x-amz-content-sha256 */
  hs->h = lua_newuserdatauv(L, (count + 4) * sizeof *hs->h, 0);
  lua_newtable(L);
  hs->anchor = lua_gettop(L);
  hs->n = 0;
  hs->k = 0;
  if (count == 0) return;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      sh_argerror(L, 1, SH_SIGV4_WHO, "header names must be strings, got %s", luaL_typename(L, -2));
    size_t nlen;
    const char *given = lua_tolstring(L, -2, &nlen);
    sh_sigv4_push_name(L, given, nlen);
    size_t ln;
    const char *lower = lua_tolstring(L, -1, &ln);
    /* these are the signer's to set: a stale copy from an earlier signing must not be signed */
    int skip = strcmp(lower, "authorization") == 0 || strcmp(lower, "x-amz-date") == 0 ||
               (have_token && strcmp(lower, "x-amz-security-token") == 0);
    if (skip) {
      lua_pop(L, 2);
      continue;
    }
    sh_sigv4_pair *p = &hs->h[hs->n++];
    p->name = (sh_sigv4_str){lower, ln};
    p->given = given; /* the key stays on the stack while it is used, then in opts.headers */
    lua_rawseti(L, hs->anchor, ++hs->k);
    sh_sigv4_push_value(L, -1, given);
    p->value.s = lua_tolstring(L, -1, &p->value.n);
    lua_rawseti(L, hs->anchor, ++hs->k);
    lua_pop(L, 1);
  }
}

/* ---- signing ---- */

static int sh_sigv4_hmac(const unsigned char *key, size_t klen, const void *msg, size_t mlen,
                         unsigned char out[SH_SIGV4_SHA256_LEN]) {
  unsigned int ol = 0;
  return HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &ol) && ol == SH_SIGV4_SHA256_LEN ? 0 : -1;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"),
 * then the signature over string_to_sign, as lower-case hex into sig. Cleanses every key. */
static int sh_sigv4_signature(const char *secret, size_t slen, const char *date8, const char *region,
                              const char *service, const char *sts, size_t stslen,
                              char sig[2 * SH_SIGV4_SHA256_LEN + 1]) {
  /* two key buffers used in turn: no HMAC writes the key it is reading */
  unsigned char k0[4 + SH_SIGV4_SECRET_MAX], ka[SH_SIGV4_SHA256_LEN], kb[SH_SIGV4_SHA256_LEN];
  memcpy(k0, "AWS4", 4);
  memcpy(k0 + 4, secret, slen);
  int rc = sh_sigv4_hmac(k0, 4 + slen, date8, 8, ka);
  if (rc == 0) rc = sh_sigv4_hmac(ka, sizeof ka, region, strlen(region), kb);
  if (rc == 0) rc = sh_sigv4_hmac(kb, sizeof kb, service, strlen(service), ka);
  if (rc == 0) rc = sh_sigv4_hmac(ka, sizeof ka, "aws4_request", 12, kb);
  if (rc == 0) rc = sh_sigv4_hmac(kb, sizeof kb, sts, stslen, ka);
  if (rc == 0) sh_sigv4_tohex(ka, sizeof ka, sig);
  OPENSSL_cleanse(k0, sizeof k0);
  OPENSSL_cleanse(ka, sizeof ka);
  OPENSSL_cleanse(kb, sizeof kb);
  return rc;
}

static int sh_sigv4_sha256_hex(const void *data, size_t n, char out[2 * SH_SIGV4_SHA256_LEN + 1]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int ml = 0;
  if (!EVP_Digest(data, n, md, &ml, EVP_sha256(), NULL) || ml != SH_SIGV4_SHA256_LEN) return -1;
  sh_sigv4_tohex(md, ml, out);
  return 0;
}

/* Append the string at stack index idx and a newline: a line of the canonical request. */
static void sh_sigv4_add_line(lua_State *L, luaL_Buffer *b, int idx) {
  lua_pushvalue(L, idx);
  luaL_addvalue(b);
  luaL_addchar(b, '\n');
}

/* sign(opts) -> headers to add, debug */
static int sh_sigv4_sign(lua_State *L) {
  if (!lua_istable(L, 1)) return sh_argerror(L, 1, SH_SIGV4_WHO, "table expected, got %s", luaL_typename(L, 1));
  lua_settop(L, 1);
  luaL_checkstack(L, 40, "aws.sign");

  size_t mlen, ulen, blen, rlen, svlen, aklen, sklen, toklen;
  const char *method = sh_sigv4_field(L, 1, "method", "method", 1, &mlen);
  for (size_t i = 0; i < mlen; i++) {
    if ((unsigned char)method[i] <= ' ' || method[i] == 0x7f) {
      sh_sigv4_push_shown(L, method, mlen);
      sh_argerror(L, 1, SH_SIGV4_WHO, "invalid method '%s'", lua_tostring(L, -1));
    }
  }
  if (mlen == 0) sh_opt_error(L, 1, SH_SIGV4_WHO, "method", "must not be empty");
  const char *url = sh_sigv4_field(L, 1, "url", "url", 1, &ulen);
  const char *body = sh_sigv4_field(L, 1, "body", "body", 0, &blen);
  const char *service = sh_sigv4_scope_part(L, 1, "service", "service", &svlen);
  const char *region = sh_sigv4_scope_part(L, 1, "region", "region", &rlen);
  if (lua_getfield(L, 1, "credentials") != LUA_TTABLE) sh_opt_typeerror(L, 1, SH_SIGV4_WHO, "credentials", "a table");
  int creds = lua_gettop(L);
  const char *akid = sh_sigv4_scope_part(L, creds, "access_key_id", "credentials.access_key_id", &aklen);
  const char *secret = sh_sigv4_field(L, creds, "secret_access_key", "credentials.secret_access_key", 1, &sklen);
  if (sklen == 0 || sklen > SH_SIGV4_SECRET_MAX)
    sh_opt_error(L, 1, SH_SIGV4_WHO, "credentials.secret_access_key", "must be 1 to %d bytes", SH_SIGV4_SECRET_MAX);
  const char *token = sh_sigv4_field(L, creds, "session_token", "credentials.session_token", 0, &toklen);
  if (token && toklen == 0) token = NULL;
  /* checked here so the message names the field the caller set, not the header it becomes; a
   * tab or line break too: the token is sent as given, and no AWS token has one */
  for (size_t i = 0; token && i < toklen; i++)
    if ((unsigned char)token[i] < 0x20 || token[i] == 0x7f)
      sh_opt_error(L, 1, SH_SIGV4_WHO, "credentials.session_token", "has a control character");
  int unsigned_payload = sh_opt_bool(L, 1, "unsigned_payload", 0, SH_SIGV4_WHO);
  int s3 = svlen == 2 && memcmp(service, "s3", 2) == 0;
  char date[SH_SIGV4_DATE_LEN + 1];
  sh_sigv4_date(L, 1, date);

  sh_sigv4_url u;
  memset(&u, 0, sizeof u); /* sh_argerror does not return, but the compiler cannot tell */
  const char *bad_url = sh_sigv4_parse_url(url, ulen, &u);
  if (bad_url) {
    sh_sigv4_push_url_shown(L, url, ulen);
    sh_argerror(L, 1, SH_SIGV4_WHO, "malformed URL '%s': %s (expected http(s)://host/path)", lua_tostring(L, -1), bad_url);
  }
  if (s3 && sh_sigv4_dot_segments(u.path)) {
    sh_sigv4_push_shown(L, u.path.s, u.path.n);
    sh_argerror(L, 1, SH_SIGV4_WHO,
                "the S3 path '%s' has '.' or '..' segments, which would be sent differently from how they are "
                "signed",
                lua_tostring(L, -1));
  }

  lua_getfield(L, 1, "headers");
  sh_sigv4_headers hs;
  sh_sigv4_read_headers(L, lua_gettop(L), &hs, token != NULL);

  /* payload hash: the caller's x-amz-content-sha256 (S3's streaming and unsigned forms) wins */
  char body_hash[2 * SH_SIGV4_SHA256_LEN + 1];
  int given_hash = sh_sigv4_has(&hs, "x-amz-content-sha256");
  if (given_hash) {
    lua_pushlstring(L, hs.h[given_hash - 1].value.s, hs.h[given_hash - 1].value.n);
  } else if (unsigned_payload) {
    lua_pushliteral(L, "UNSIGNED-PAYLOAD");
  } else {
    if (sh_sigv4_sha256_hex(body ? body : "", blen, body_hash) != 0) sh_sigv4_ssl_fail(L, "SHA-256");
    lua_pushstring(L, body_hash);
  }
  int payload = lua_gettop(L);
  int send_hash = (s3 || unsigned_payload) && !given_hash;

  if (!sh_sigv4_has(&hs, "host")) {
    lua_pushlstring(L, u.host_header.s, u.host_header.n);
    sh_sigv4_add_ours(L, &hs, "host");
  }
  lua_pushstring(L, date);
  sh_sigv4_add_ours(L, &hs, "x-amz-date");
  if (token) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    sh_sigv4_add_value(L, &b, token, toklen, "x-amz-security-token");
    luaL_pushresult(&b);
    sh_sigv4_add_ours(L, &hs, "x-amz-security-token");
  }
  if (send_hash) {
    lua_pushvalue(L, payload);
    sh_sigv4_add_ours(L, &hs, "x-amz-content-sha256");
  }
  qsort(hs.h, hs.n, sizeof *hs.h, sh_sigv4_cmppair);
  for (size_t i = 1; i < hs.n; i++)
    if (sh_sigv4_cmpstr(hs.h[i - 1].name, hs.h[i].name) == 0)
      sh_argerror(L, 1, SH_SIGV4_WHO, "header '%s' given twice (as '%s' and '%s'): give one name with an array of values",
                  hs.h[i].name.s, hs.h[i - 1].given ? hs.h[i - 1].given : hs.h[i - 1].name.s,
                  hs.h[i].given ? hs.h[i].given : hs.h[i].name.s);

  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < hs.n; i++) {
    if (i) luaL_addchar(&b, ';');
    luaL_addlstring(&b, hs.h[i].name.s, hs.h[i].name.n);
  }
  luaL_pushresult(&b);
  int signed_headers = lua_gettop(L);

  if (s3) sh_sigv4_uri_s3(L, u.path);
  else sh_sigv4_uri_normalized(L, u.path);
  int uri = lua_gettop(L);
  sh_sigv4_query(L, u.query);
  int query = lua_gettop(L);

  luaL_buffinit(L, &b);
  luaL_addlstring(&b, method, mlen);
  luaL_addchar(&b, '\n');
  sh_sigv4_add_line(L, &b, uri);
  sh_sigv4_add_line(L, &b, query);
  for (size_t i = 0; i < hs.n; i++) {
    luaL_addlstring(&b, hs.h[i].name.s, hs.h[i].name.n);
    luaL_addchar(&b, ':');
    luaL_addlstring(&b, hs.h[i].value.s, hs.h[i].value.n);
    luaL_addchar(&b, '\n');
  }
  luaL_addchar(&b, '\n');
  sh_sigv4_add_line(L, &b, signed_headers);
  lua_pushvalue(L, payload); /* the last line, without a newline */
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  int creq = lua_gettop(L);

  char date8[9];
  memcpy(date8, date, 8);
  date8[8] = '\0';
  lua_pushfstring(L, "%s/%s/%s/aws4_request", date8, region, service);
  int scope = lua_gettop(L);
  size_t creqlen;
  const char *creqs = lua_tolstring(L, creq, &creqlen);
  char creq_hash[2 * SH_SIGV4_SHA256_LEN + 1];
  if (sh_sigv4_sha256_hex(creqs, creqlen, creq_hash) != 0) sh_sigv4_ssl_fail(L, "SHA-256");
  lua_pushfstring(L, "AWS4-HMAC-SHA256\n%s\n%s\n%s", date, lua_tostring(L, scope), creq_hash);
  int sts = lua_gettop(L);

  size_t stslen;
  const char *stss = lua_tolstring(L, sts, &stslen);
  char sig[2 * SH_SIGV4_SHA256_LEN + 1];
  if (sh_sigv4_signature(secret, sklen, date, region, service, stss, stslen, sig) != 0)
    sh_sigv4_ssl_fail(L, "HMAC-SHA256");

  lua_createtable(L, 0, 4);
  lua_pushfstring(L, "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s", akid, lua_tostring(L, scope),
                  lua_tostring(L, signed_headers), sig);
  lua_setfield(L, -2, "Authorization");
  sh_setfield_lstring(L, "X-Amz-Date", date, SH_SIGV4_DATE_LEN);
  if (token) sh_setfield_lstring(L, "X-Amz-Security-Token", token, toklen);
  if (send_hash) sh_setfield_value(L, "X-Amz-Content-Sha256", payload);

  lua_createtable(L, 0, 5);
  sh_setfield_value(L, "canonical_request", creq);
  sh_setfield_value(L, "string_to_sign", sts);
  sh_setfield_value(L, "signed_headers", signed_headers);
  sh_setfield_lstring(L, "signature", sig, 2 * SH_SIGV4_SHA256_LEN);
  sh_setfield_value(L, "scope", scope);
  return 2;
}

int luaopen_stagehost_core_aws_sigv4(lua_State *L) {
  static const luaL_Reg funcs[] = {{"sign", sh_sigv4_sign}, {NULL, NULL}};
  return sh_newmodule(L, funcs, NULL, NULL);
}
