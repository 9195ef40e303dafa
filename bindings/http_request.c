/* http.serve's request parsing on http-parser: see http_request.h. */
#include "http_request.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void sh_http_request_free(sh_http_request_t *r) {
  if (!r) return;
  sh_buf_free(&r->url);
  sh_buf_free(&r->body);
  sh_buf_free(&r->names);
  sh_buf_free(&r->headers);
  free(r);
}

int sh_http_is(const char *s, size_t n, const char *lit) {
  size_t l = strlen(lit);
  if (n != l) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 'a' - 'A') : s[i];
    if (c != lit[i]) return 0;
  }
  return 1;
}

static sh_http_parse_t *sh_http_parse_of(http_parser *hp) { return hp->data; }

static sh_http_header_t *sh_http_last_header(sh_http_request_t *r) {
  return (sh_http_header_t *)r->headers.data + r->nheaders - 1;
}

/* Remember the first reason only: a later callback error must not turn a 413 into a 400. */
static int sh_http_refuse(sh_http_parse_t *p, int status) {
  if (!p->status) p->status = status;
  return -1;
}

static int sh_http_count(sh_http_parse_t *p, size_t n) {
  p->header_bytes += n;
  return p->header_bytes > p->header_limit ? sh_http_refuse(p, 431) : 0;
}

static int sh_http_on_begin(http_parser *hp) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  sh_http_request_free(p->req);
  p->req = calloc(1, sizeof *p->req);
  if (!p->req) return sh_http_refuse(p, 500);
  p->header_bytes = 0;
  p->in_value = 0;
  p->headers_done = 0;
  return 0;
}

static int sh_http_on_url(http_parser *hp, const char *at, size_t n) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  if (!p->req) return sh_http_refuse(p, 400);
  if (sh_http_count(p, n)) return -1;
  return sh_buf_add(&p->req->url, at, n) ? sh_http_refuse(p, 500) : 0;
}

static int sh_http_on_header_field(http_parser *hp, const char *at, size_t n) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  sh_http_request_t *r = p->req;
  if (!r) return sh_http_refuse(p, 400);
  if (sh_http_count(p, n)) return -1;
  if (p->headers_done) return 0; /* trailers after a chunked body: counted, never merged */
  if (p->in_value || r->nheaders == 0) {
    sh_http_header_t h = {r->names.len, 0, r->names.len, 0};
    if (sh_buf_add(&r->headers, &h, sizeof h)) return sh_http_refuse(p, 500);
    r->nheaders++;
    p->in_value = 0;
  }
  size_t from = r->names.len;
  if (sh_buf_add(&r->names, at, n)) return sh_http_refuse(p, 500);
  for (size_t i = from; i < r->names.len; i++)
    if (r->names.data[i] >= 'A' && r->names.data[i] <= 'Z') r->names.data[i] += 'a' - 'A';
  sh_http_last_header(r)->name_len += n;
  return 0;
}

static int sh_http_on_header_value(http_parser *hp, const char *at, size_t n) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  sh_http_request_t *r = p->req;
  if (!r || (r->nheaders == 0 && !p->headers_done)) return sh_http_refuse(p, 400);
  if (sh_http_count(p, n)) return -1;
  if (p->headers_done) return 0;
  sh_http_header_t *h = sh_http_last_header(r);
  if (!p->in_value) {
    h->value_off = r->names.len;
    p->in_value = 1;
  }
  if (sh_buf_add(&r->names, at, n)) return sh_http_refuse(p, 500);
  h->value_len += n;
  return 0;
}

static int sh_http_on_headers_complete(http_parser *hp) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  sh_http_request_t *r = p->req;
  if (!r) return sh_http_refuse(p, 400);
  p->headers_done = 1;
  r->method = hp->method;
  r->major = hp->http_major;
  r->minor = hp->http_minor;
  /* a declared length over the limit is refused before a byte of it is read */
  if (!(hp->flags & F_CHUNKED) && hp->content_length != UINT64_MAX && hp->content_length > p->body_limit)
    return sh_http_refuse(p, 413);
  for (size_t i = 0; i < r->nheaders; i++) {
    const sh_http_header_t *h = sh_http_header(r, i);
    if (sh_http_is(sh_http_at(&r->names, h->name_off), h->name_len, "expect") &&
        sh_http_is(sh_http_at(&r->names, h->value_off), h->value_len, "100-continue") && r->major == 1 &&
        r->minor >= 1)
      r->expect_continue = 1;
  }
  p->want_continue = r->expect_continue;
  return 0;
}

static int sh_http_on_body(http_parser *hp, const char *at, size_t n) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  sh_http_request_t *r = p->req;
  if (!r) return sh_http_refuse(p, 400);
  if (n > p->body_limit - r->body.len) return sh_http_refuse(p, 413); /* chunked bodies end here */
  return sh_buf_add(&r->body, at, n) ? sh_http_refuse(p, 500) : 0;
}

/* Pausing here makes http_parser_execute return right after this request's last byte, so the
 * bytes of a pipelined next request stay with the caller until this one is answered. */
static int sh_http_on_complete(http_parser *hp) {
  sh_http_parse_t *p = sh_http_parse_of(hp);
  if (!p->req) return sh_http_refuse(p, 400);
  p->req->keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
  p->complete = 1;
  p->want_continue = 0;
  http_parser_pause(hp, 1);
  return 0;
}

static const http_parser_settings sh_http_settings = {
    .on_message_begin = sh_http_on_begin,
    .on_url = sh_http_on_url,
    .on_header_field = sh_http_on_header_field,
    .on_header_value = sh_http_on_header_value,
    .on_headers_complete = sh_http_on_headers_complete,
    .on_body = sh_http_on_body,
    .on_message_complete = sh_http_on_complete,
};

/* http-parser's own cap on raw header bytes (80 KiB, whitespace and line ends included) is
 * process-wide and only a backstop behind header_limit: raised when a parser allows more, never
 * lowered. */
static void sh_http_raise_cap(size_t header_limit) {
  static double cap = 80 * 1024;
  double want = (double)header_limit * 2 + 8192;
  if (want <= cap) return;
  cap = want > UINT32_MAX ? UINT32_MAX : want;
  http_parser_set_max_header_size((uint32_t)cap);
}

void sh_http_parse_init(sh_http_parse_t *p, size_t body_limit, size_t header_limit) {
  memset(p, 0, sizeof *p);
  http_parser_init(&p->parser, HTTP_REQUEST);
  p->parser.data = p;
  p->body_limit = body_limit;
  p->header_limit = header_limit;
  sh_http_raise_cap(header_limit);
}

void sh_http_parse_free(sh_http_parse_t *p) {
  sh_http_request_free(p->req);
  p->req = NULL;
}

size_t sh_http_parse_feed(sh_http_parse_t *p, const char *data, size_t len) {
  if (p->status || p->complete || len == 0) return 0;
  size_t n = http_parser_execute(&p->parser, &sh_http_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&p->parser);
  if (e == HPE_PAUSED) return n;
  if (e != HPE_OK) {
    sh_http_refuse(p, e == HPE_HEADER_OVERFLOW ? 431 : 400);
    return n;
  }
  if (n < len && !p->complete) sh_http_refuse(p, 400); /* cannot happen with these callbacks */
  return n;
}

sh_http_request_t *sh_http_parse_take(sh_http_parse_t *p) {
  if (!p->complete) return NULL;
  sh_http_request_t *r = p->req;
  p->req = NULL;
  p->complete = p->headers_done = p->in_value = 0;
  p->header_bytes = 0;
  http_parser_pause(&p->parser, 0);
  return r;
}
