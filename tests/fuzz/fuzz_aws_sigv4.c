/* libFuzzer target for stagehost.core.aws_sigv4's sign (bindings/aws_sigv4.c, compiled into
 * this executable): a request made from the input — method, URL (path and query), body, time,
 * session token and headers — is signed, and sign either raises one line of misuse in the form
 * "bad argument #1 to 'aws.sign' (...)" or returns headers and a canonical request that keeps
 * SigV4's rules: the URI encoded (no dot or empty segments outside S3), the query's names and
 * values encoded and sorted, header names lower case and sorted without repeats, values trimmed
 * and folded, the signed headers those names, the string to sign built on the request's
 * SHA-256, the Authorization header naming them with a 64 hex digit signature. The canonical
 * query of the canonical query is itself (its encoding is a fixed point), and so is an S3
 * path's. An allocation failure at any point must end in a memory error, leaking nothing.
 *
 * The input: one byte of flags, then fields separated by 0x1E: method, URL, body, time, session
 * token, then headers as name 0x1F value (a value with 0x1D in it is an array of values).
 * Build: CC=clang cmake -S . -B build-fz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz/aws_sigv4.
 * Longer, by hand: build-fz/tests/fuzz_aws_sigv4 -max_total_time=600 -dict=tests/fuzz/aws_sigv4.dict
 *   build-fz/tests/fuzz-corpus-aws_sigv4 tests/fuzz/seeds-aws_sigv4 */
#include <openssl/evp.h>

/* the header's decode helpers are for decoders: sign is not one */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-function"
#include "fuzz_lua.h"
#pragma clang diagnostic pop

int luaopen_stagehost_core_aws_sigv4(lua_State *L);

#define SH_FUZZ_SIGV4_MOD "stagehost.core.aws_sigv4"
#define SH_FUZZ_SIGV4_FS '\x1e'
#define SH_FUZZ_SIGV4_NV '\x1f'
#define SH_FUZZ_SIGV4_AV '\x1d'

enum {
  SH_FUZZ_S3 = 1,          /* service "s3" (paths signed as keys), else "service" */
  SH_FUZZ_UNSIGNED = 2,    /* unsigned_payload = true */
  SH_FUZZ_TOKEN = 4,       /* credentials.session_token = the token field */
  SH_FUZZ_TIME_EPOCH = 8,  /* time = the time field as integer epoch seconds */
  SH_FUZZ_TIME_STRING = 16 /* time = the time field as it is (else the suite's 20150830T123600Z) */
};

typedef struct {
  const char *s;
  size_t n;
} sh_fuzz_span;

/* The next field of [*p, end) up to sep (or the end): the span, *p past the separator */
static sh_fuzz_span sh_fuzz_next(const char **p, const char *end, char sep) {
  const char *q = memchr(*p, sep, (size_t)(end - *p));
  sh_fuzz_span f = {*p, (size_t)((q ? q : end) - *p)};
  *p = q ? q + 1 : end;
  return f;
}

/* Build sign's options table from the input, push it */
static void sh_fuzz_sigv4_opts(lua_State *L, const uint8_t *data, size_t size) {
  unsigned flags = size ? data[0] : 0;
  const char *p = size ? (const char *)data + 1 : (const char *)data, *end = (const char *)data + size;
  sh_fuzz_span method = sh_fuzz_next(&p, end, SH_FUZZ_SIGV4_FS), url = sh_fuzz_next(&p, end, SH_FUZZ_SIGV4_FS);
  sh_fuzz_span body = sh_fuzz_next(&p, end, SH_FUZZ_SIGV4_FS), time = sh_fuzz_next(&p, end, SH_FUZZ_SIGV4_FS);
  sh_fuzz_span token = sh_fuzz_next(&p, end, SH_FUZZ_SIGV4_FS);

  lua_createtable(L, 0, 10);
  int t = lua_gettop(L);
  lua_pushlstring(L, method.s, method.n);
  lua_setfield(L, t, "method");
  lua_pushlstring(L, url.s, url.n);
  lua_setfield(L, t, "url");
  if (body.n) {
    lua_pushlstring(L, body.s, body.n);
    lua_setfield(L, t, "body");
  }
  lua_pushstring(L, flags & SH_FUZZ_S3 ? "s3" : "service");
  lua_setfield(L, t, "service");
  lua_pushliteral(L, "us-east-1");
  lua_setfield(L, t, "region");
  if (flags & SH_FUZZ_UNSIGNED) {
    lua_pushboolean(L, 1);
    lua_setfield(L, t, "unsigned_payload");
  }
  if (flags & SH_FUZZ_TIME_EPOCH) {
    char num[32];
    size_t n = time.n < sizeof num - 1 ? time.n : sizeof num - 1;
    memcpy(num, time.s, n);
    num[n] = '\0';
    lua_pushinteger(L, (lua_Integer)strtoll(num, NULL, 10));
  } else if (flags & SH_FUZZ_TIME_STRING) {
    lua_pushlstring(L, time.s, time.n);
  } else {
    lua_pushliteral(L, "20150830T123600Z");
  }
  lua_setfield(L, t, "time");

  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "AKIDEXAMPLE");
  lua_setfield(L, -2, "access_key_id");
  lua_pushliteral(L, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
  lua_setfield(L, -2, "secret_access_key");
  if (flags & SH_FUZZ_TOKEN) {
    lua_pushlstring(L, token.s, token.n);
    lua_setfield(L, -2, "session_token");
  }
  lua_setfield(L, t, "credentials");

  /* headers: a name given twice keeps the last value, as a Lua table constructor would */
  lua_newtable(L);
  while (p < end) {
    sh_fuzz_span h = sh_fuzz_next(&p, end, SH_FUZZ_SIGV4_FS);
    const char *hp = h.s, *he = h.s + h.n;
    sh_fuzz_span name = sh_fuzz_next(&hp, he, SH_FUZZ_SIGV4_NV);
    lua_pushlstring(L, name.s, name.n);
    sh_fuzz_span value = {hp, (size_t)(he - hp)};
    if (!memchr(value.s, SH_FUZZ_SIGV4_AV, value.n)) {
      lua_pushlstring(L, value.s, value.n);
    } else {
      lua_newtable(L);
      for (lua_Integer i = 1; hp <= he && i <= 64; i++) {
        sh_fuzz_span v = sh_fuzz_next(&hp, he, SH_FUZZ_SIGV4_AV);
        lua_pushlstring(L, v.s, v.n);
        lua_rawseti(L, -2, i);
        if (hp == he) break;
      }
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, t, "headers");
}

/* ---- the canonical request's rules ---- */

static int sh_fuzz_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
static int sh_fuzz_upper_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

static int sh_fuzz_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

/* s[0..n) is SigV4-encoded: unreserved bytes, `extra`, and %XX in upper case only */
static int sh_fuzz_encoded(const char *s, size_t n, char extra) {
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      if (i + 2 >= n) return 0;
      if (!sh_fuzz_upper_hex(s[i + 1]) || !sh_fuzz_upper_hex(s[i + 2])) return 0;
      i += 2;
    } else if (!sh_fuzz_unreserved((unsigned char)s[i]) && s[i] != extra) {
      return 0;
    }
  }
  return 1;
}

static int sh_fuzz_cmp(sh_fuzz_span a, sh_fuzz_span b) {
  int c = memcmp(a.s, b.s, a.n < b.n ? a.n : b.n);
  return c ? c : (a.n > b.n) - (a.n < b.n);
}

static int sh_fuzz_is(sh_fuzz_span a, const char *s) { return a.n == strlen(s) && memcmp(a.s, s, a.n) == 0; }

/* The canonical URI: "/" first, encoded; outside S3 no empty, "." or ".." segment */
static void sh_fuzz_check_uri(sh_fuzz_span uri, int s3) {
  SH_FUZZ_CHECK(uri.n >= 1 && uri.s[0] == '/', "canonical URI '%.*s' does not start with '/'", (int)uri.n, uri.s);
  SH_FUZZ_CHECK(sh_fuzz_encoded(uri.s, uri.n, '/'), "canonical URI '%.*s' is not encoded", (int)uri.n, uri.s);
  if (s3 || uri.n == 1) return;
  const char *p = uri.s + 1, *end = uri.s + uri.n;
  while (p < end) {
    sh_fuzz_span seg = sh_fuzz_next(&p, end, '/');
    SH_FUZZ_CHECK(seg.n > 0 && !sh_fuzz_is(seg, ".") && !sh_fuzz_is(seg, ".."),
                  "canonical URI '%.*s' has an empty or dot segment", (int)uri.n, uri.s);
  }
}

/* The canonical query: name=value pairs joined by '&', each side encoded, sorted by name then value */
static void sh_fuzz_check_query(sh_fuzz_span q) {
  const char *p = q.s, *end = q.s + q.n;
  sh_fuzz_span prev_name = {"", 0}, prev_value = {"", 0};
  int first = 1;
  while (p < end) {
    sh_fuzz_span pair = sh_fuzz_next(&p, end, '&');
    const char *eq = memchr(pair.s, '=', pair.n);
    SH_FUZZ_CHECK(eq != NULL, "query pair '%.*s' without '='", (int)pair.n, pair.s);
    sh_fuzz_span name = {pair.s, (size_t)(eq - pair.s)}, value = {eq + 1, pair.n - name.n - 1};
    SH_FUZZ_CHECK(sh_fuzz_encoded(name.s, name.n, 0) && sh_fuzz_encoded(value.s, value.n, 0),
                  "query pair '%.*s' is not encoded", (int)pair.n, pair.s);
    int c = sh_fuzz_cmp(prev_name, name);
    SH_FUZZ_CHECK(first || c < 0 || (c == 0 && sh_fuzz_cmp(prev_value, value) <= 0), "query '%.*s' is not sorted",
                  (int)q.n, q.s);
    prev_name = name, prev_value = value, first = 0;
  }
  SH_FUZZ_CHECK(q.n == 0 || q.s[q.n - 1] != '&', "query '%.*s' ends in '&'", (int)q.n, q.s);
}

/* One header line "name:value": a lower-case token name, a value trimmed and folded */
static sh_fuzz_span sh_fuzz_check_header(sh_fuzz_span line) {
  const char *colon = memchr(line.s, ':', line.n);
  SH_FUZZ_CHECK(colon != NULL && colon > line.s, "header line '%.*s' without a name", (int)line.n, line.s);
  sh_fuzz_span name = {line.s, (size_t)(colon - line.s)}, value = {colon + 1, line.n - name.n - 1};
  for (size_t i = 0; i < name.n; i++) {
    unsigned char c = (unsigned char)name.s[i];
    SH_FUZZ_CHECK(c > ' ' && c < 0x7f && !(c >= 'A' && c <= 'Z') && !strchr("\"(),/:;<=>?@[\\]{}", c),
                  "header name '%.*s'", (int)name.n, name.s);
  }
  for (size_t i = 0; i < value.n; i++) {
    unsigned char c = (unsigned char)value.s[i];
    SH_FUZZ_CHECK(c >= ' ' && c != 0x7f, "header '%.*s' keeps a control character", (int)name.n, name.s);
    SH_FUZZ_CHECK(c != ' ' || (i > 0 && i + 1 < value.n && value.s[i + 1] != ' '),
                  "header '%.*s': value '%.*s' not trimmed or folded", (int)name.n, name.s, (int)value.n, value.s);
  }
  return name;
}

static int sh_fuzz_field(lua_State *L, int t, const char *key, sh_fuzz_span *out) {
  lua_getfield(L, t, key);
  if (lua_type(L, -1) != LUA_TSTRING) return 0;
  out->s = lua_tolstring(L, -1, &out->n); /* anchored in t */
  lua_pop(L, 1);
  return 1;
}

/* sign's two results at out (headers) and dbg: the rules above, and the headers agree */
static void sh_fuzz_check_signed(lua_State *L, int opts, int out, int dbg) {
  sh_fuzz_span creq, sts, signed_headers, sig, scope, authz, date, method;
  SH_FUZZ_CHECK(sh_fuzz_field(L, dbg, "canonical_request", &creq) && sh_fuzz_field(L, dbg, "string_to_sign", &sts) &&
                    sh_fuzz_field(L, dbg, "signed_headers", &signed_headers) &&
                    sh_fuzz_field(L, dbg, "signature", &sig) && sh_fuzz_field(L, dbg, "scope", &scope),
                "%s", "debug lacks a field");
  SH_FUZZ_CHECK(sh_fuzz_field(L, out, "Authorization", &authz) && sh_fuzz_field(L, out, "X-Amz-Date", &date),
                "%s", "headers lack Authorization or X-Amz-Date");
  SH_FUZZ_CHECK(sh_fuzz_field(L, opts, "method", &method), "%s", "no method");
  SH_FUZZ_CHECK(sig.n == 64, "signature of %zu characters", sig.n);
  for (size_t i = 0; i < sig.n; i++) SH_FUZZ_CHECK(sh_fuzz_hex(sig.s[i]), "signature '%.*s'", (int)sig.n, sig.s);

  lua_getfield(L, opts, "service");
  int s3 = strcmp(lua_tostring(L, -1), "s3") == 0;
  lua_pop(L, 1);

  /* method \n uri \n query \n header lines \n \n signed headers \n payload */
  const char *p = creq.s, *end = creq.s + creq.n;
  sh_fuzz_span m = sh_fuzz_next(&p, end, '\n');
  SH_FUZZ_CHECK(sh_fuzz_cmp(m, method) == 0, "method line '%.*s'", (int)m.n, m.s);
  sh_fuzz_check_uri(sh_fuzz_next(&p, end, '\n'), s3);
  sh_fuzz_span query = sh_fuzz_next(&p, end, '\n');
  sh_fuzz_check_query(query);
  char names[8192];
  size_t nl = 0;
  sh_fuzz_span prev = {"", 0}, given_hash = {NULL, 0};
  int host = 0, amz_date = 0;
  for (;;) {
    SH_FUZZ_CHECK(p < end, "%s", "canonical request ends inside the headers");
    sh_fuzz_span line = sh_fuzz_next(&p, end, '\n');
    if (line.n == 0) break;
    sh_fuzz_span name = sh_fuzz_check_header(line);
    SH_FUZZ_CHECK(sh_fuzz_cmp(prev, name) < 0, "header '%.*s' after '%.*s': not sorted or repeated", (int)name.n,
                  name.s, (int)prev.n, prev.s);
    prev = name;
    host |= sh_fuzz_is(name, "host");
    if (sh_fuzz_is(name, "x-amz-date")) {
      amz_date = 1;
      SH_FUZZ_CHECK(line.n == 11 + date.n && memcmp(line.s + 11, date.s, date.n) == 0, "%s", "x-amz-date is not X-Amz-Date");
    }
    if (sh_fuzz_is(name, "x-amz-content-sha256")) given_hash = (sh_fuzz_span){line.s + 21, line.n - 21};
    if (nl && nl < sizeof names) names[nl++] = ';';
    size_t room = nl < sizeof names ? sizeof names - nl : 0;
    memcpy(names + nl, name.s, name.n < room ? name.n : room);
    nl += name.n < room ? name.n : room;
  }
  SH_FUZZ_CHECK(host && amz_date, "%s", "host or x-amz-date not signed");
  sh_fuzz_span sh = sh_fuzz_next(&p, end, '\n');
  SH_FUZZ_CHECK(sh_fuzz_cmp(sh, signed_headers) == 0, "signed headers line '%.*s' vs debug's '%.*s'", (int)sh.n,
                sh.s, (int)signed_headers.n, signed_headers.s);
  if (nl < sizeof names)
    SH_FUZZ_CHECK(sh_fuzz_cmp(sh, (sh_fuzz_span){names, nl}) == 0, "signed headers '%.*s' are not the names '%.*s'",
                  (int)sh.n, sh.s, (int)nl, names);
  SH_FUZZ_CHECK(p < end && memchr(p, '\n', (size_t)(end - p)) == NULL, "%s", "the payload line is not the last");
  sh_fuzz_span payload = {p, (size_t)(end - p)};
  int hex = payload.n == 64;
  for (size_t i = 0; hex && i < payload.n; i++) hex = sh_fuzz_hex(payload.s[i]);
  SH_FUZZ_CHECK(hex || sh_fuzz_is(payload, "UNSIGNED-PAYLOAD") || (given_hash.s && sh_fuzz_cmp(payload, given_hash) == 0),
                "payload hash '%.*s'", (int)payload.n, payload.s);

  /* the string to sign: algorithm, date, scope, hex SHA-256 of the canonical request */
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int ml = 0;
  SH_FUZZ_CHECK(EVP_Digest(creq.s, creq.n, md, &ml, EVP_sha256(), NULL) && ml == 32, "%s", "SHA-256");
  char expect[512];
  int el = snprintf(expect, sizeof expect, "AWS4-HMAC-SHA256\n%.*s\n%.*s\n", (int)date.n, date.s, (int)scope.n, scope.s);
  for (unsigned i = 0; i < ml && el + 2 < (int)sizeof expect; i++)
    el += snprintf(expect + el, sizeof expect - (size_t)el, "%02x", md[i]);
  SH_FUZZ_CHECK(sts.n == (size_t)el && memcmp(sts.s, expect, sts.n) == 0, "string to sign\n%.*s\nexpected\n%s",
                (int)sts.n, sts.s, expect);
  SH_FUZZ_CHECK(scope.n > 9 && memcmp(scope.s, date.s, 8) == 0, "scope '%.*s' not of the date", (int)scope.n, scope.s);

  lua_pushfstring(L, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/%s, SignedHeaders=%s, Signature=%s",
                  lua_pushlstring(L, scope.s, scope.n), lua_pushlstring(L, signed_headers.s, signed_headers.n),
                  lua_pushlstring(L, sig.s, sig.n));
  SH_FUZZ_CHECK(authz.n == lua_rawlen(L, -1) && memcmp(authz.s, lua_tostring(L, -1), authz.n) == 0,
                "Authorization '%.*s'", (int)authz.n, authz.s);
  lua_pop(L, 4);
}

/* Re-sign with the canonical query (and for S3 the canonical path) as the URL's: both are fixed
 * points of their encoding */
static void sh_fuzz_check_fixed_point(lua_State *L, int mod, int opts, int dbg) {
  sh_fuzz_span creq;
  sh_fuzz_field(L, dbg, "canonical_request", &creq);
  const char *p = creq.s, *end = creq.s + creq.n;
  sh_fuzz_next(&p, end, '\n');
  sh_fuzz_span uri = sh_fuzz_next(&p, end, '\n'), query = sh_fuzz_next(&p, end, '\n');
  lua_getfield(L, opts, "service");
  int s3 = strcmp(lua_tostring(L, -1), "s3") == 0;
  lua_pop(L, 1);

  lua_getfield(L, mod, "sign");
  lua_createtable(L, 0, 8);
  int o2 = lua_gettop(L);
  static const char *const keep[] = {"method", "service", "region", "time", "credentials", "unsigned_payload", NULL};
  for (int i = 0; keep[i]; i++) {
    lua_getfield(L, opts, keep[i]);
    lua_setfield(L, o2, keep[i]);
  }
  lua_pushfstring(L, "https://example.amazonaws.com%s?", s3 ? lua_pushlstring(L, uri.s, uri.n) : "/");
  lua_pushlstring(L, query.s, query.n);
  lua_concat(L, 2);
  lua_setfield(L, o2, "url");
  if (s3) lua_pop(L, 1);
  int status = lua_pcall(L, 1, 2, 0);
  SH_FUZZ_CHECK(status == LUA_OK, "signing the canonical form again raised: %s", lua_tostring(L, -1));
  sh_fuzz_span creq2;
  sh_fuzz_field(L, lua_gettop(L), "canonical_request", &creq2);
  p = creq2.s, end = creq2.s + creq2.n;
  sh_fuzz_next(&p, end, '\n');
  sh_fuzz_span uri2 = sh_fuzz_next(&p, end, '\n'), query2 = sh_fuzz_next(&p, end, '\n');
  SH_FUZZ_CHECK(sh_fuzz_cmp(query, query2) == 0, "canonical query not a fixed point:\n  %.*s\n  %.*s", (int)query.n,
                query.s, (int)query2.n, query2.s);
  if (s3)
    SH_FUZZ_CHECK(sh_fuzz_cmp(uri, uri2) == 0, "S3 canonical URI not a fixed point:\n  %.*s\n  %.*s", (int)uri.n, uri.s,
                  (int)uri2.n, uri2.s);
  lua_pop(L, 2);
}

/* A raise from sign with memory to spare: misuse, one line, naming aws.sign */
static void sh_fuzz_check_misuse(lua_State *L) {
  size_t n = 0;
  const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : "(not a string)";
  static const char prefix[] = "bad argument #1 to 'aws.sign' (";
  SH_FUZZ_CHECK(n > sizeof prefix && memcmp(m, prefix, sizeof prefix - 1) == 0 && m[n - 1] == ')',
                "sign raised '%s'", m);
  SH_FUZZ_CHECK(memchr(m, '\n', n) == NULL && strlen(m) == n, "sign raised more than one line: '%s'", m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sh_fuzz_alloc_state a;

  /* pass 1: the contract, with memory to spare; the allocations sign makes are counted */
  lua_State *L = sh_fuzz_state(&a, luaopen_stagehost_core_aws_sigv4, SH_FUZZ_SIGV4_MOD);
  int mod = lua_gettop(L);
  sh_fuzz_sigv4_opts(L, data, size);
  int opts = lua_gettop(L);
  int status = sh_fuzz_call(L, &a, mod, "sign", opts);
  unsigned long sign_allocs = a.allocs;
  int signed_ok = status == LUA_OK;
  if (signed_ok) {
    SH_FUZZ_CHECK(lua_istable(L, -2) && lua_istable(L, -1), "%s", "sign did not return two tables");
    sh_fuzz_check_signed(L, opts, lua_gettop(L) - 1, lua_gettop(L));
    sh_fuzz_check_fixed_point(L, mod, opts, lua_gettop(L));
  } else {
    SH_FUZZ_CHECK(status == LUA_ERRRUN, "sign failed with status %d", status);
    sh_fuzz_check_misuse(L);
  }
  lua_close(L);

  /* pass 2: the same signing with one of its allocations failing, and every one after it */
  if (sign_allocs == 0) return 0;
  L = sh_fuzz_state(&a, luaopen_stagehost_core_aws_sigv4, SH_FUZZ_SIGV4_MOD);
  mod = lua_gettop(L);
  sh_fuzz_sigv4_opts(L, data, size);
  opts = lua_gettop(L);
  a.fail_at = 1 + sh_fuzz_hash(data, size) % sign_allocs;
  status = sh_fuzz_call(L, &a, mod, "sign", opts);
  if (status == LUA_OK) sh_fuzz_check_signed(L, opts, lua_gettop(L) - 1, lua_gettop(L));
  else if (status == LUA_ERRMEM || signed_ok) sh_fuzz_check_oom_raise(L, status);
  else if (strstr(lua_tostring(L, -1), "memory") == NULL) sh_fuzz_check_misuse(L);
  lua_close(L);
  return 0;
}
