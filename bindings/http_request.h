/* http.serve's request parsing: bytes in, complete requests out, limits enforced, on
 * http-parser. It knows nothing of sockets or Lua, so the server (bindings/http_server.c) and the
 * fuzzer (tests/fuzz/fuzz_http_server.c) drive the same code. Nothing here raises; out of memory
 * refuses the request with 500. */
#ifndef SH_HTTP_REQUEST_H
#define SH_HTTP_REQUEST_H

#include <stddef.h>

#include <http_parser.h>

#include "../host/util.h"

typedef struct {
  size_t name_off, name_len;   /* into names: lower-cased */
  size_t value_off, value_len;
} sh_http_header_t;

/* One complete request as the parser saw it. */
typedef struct {
  unsigned method;             /* enum http_method */
  unsigned short major, minor;
  int keep_alive;              /* http_should_keep_alive, and no protocol upgrade */
  int expect_continue;         /* "Expect: 100-continue" on HTTP/1.1 */
  sh_buf_t url, body;
  sh_buf_t names;              /* header names and values, back to back */
  sh_buf_t headers;            /* an array of sh_http_header_t */
  size_t nheaders;
} sh_http_request_t;

/* The parser of one connection and the request it is building. */
typedef struct {
  http_parser parser;
  size_t body_limit, header_limit;
  size_t header_bytes;         /* url + header names + values of the current request */
  int status;                  /* why the input was refused (400, 413, 431, 500), or 0 */
  int in_value;                /* the last header callback was a value */
  int headers_done;            /* the current request's headers are complete */
  int complete;                /* req is a whole request and the parser is paused */
  int want_continue;           /* the client waits for "100 Continue" before its body */
  sh_http_request_t *req;      /* NULL between requests */
} sh_http_parse_t;

void sh_http_parse_init(sh_http_parse_t *p, size_t body_limit, size_t header_limit);
void sh_http_parse_free(sh_http_parse_t *p);

/* Feed received bytes; returns how many were used. It stops early after a complete request
 * (p->complete: take it, answer it, then feed the rest) or when the input is refused
 * (p->status: answer with that status and close). */
size_t sh_http_parse_feed(sh_http_parse_t *p, const char *data, size_t len);

/* Hand over the complete request (NULL if none); the caller owns it and frees it with
 * sh_http_request_free. The parser goes on with the next. */
sh_http_request_t *sh_http_parse_take(sh_http_parse_t *p);
void sh_http_request_free(sh_http_request_t *r);

/* Header i of r (i < r->nheaders). */
static inline const sh_http_header_t *sh_http_header(const sh_http_request_t *r, size_t i) {
  return (const sh_http_header_t *)r->headers.data + i;
}

/* The bytes of b at off; "" for an empty buffer, whose data may be NULL. */
static inline const char *sh_http_at(const sh_buf_t *b, size_t off) { return b->data ? b->data + off : ""; }

/* s[0..n) equals the lower-case literal lit, ignoring ASCII case. */
int sh_http_is(const char *s, size_t n, const char *lit);

#endif
