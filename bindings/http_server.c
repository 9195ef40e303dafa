/* stagehost.core.http_server: http.serve, an HTTP/1.1 server on libuv TCP, requests parsed by
 * http-parser. Every request's handler runs in its own task. A connection stops reading while
 * one of its requests is handled and resumes once the response is written, so pipelined requests
 * are answered in order and a slow handler or client holds up nobody else.
 *
 * The file has two parts. The parsing glue (bytes in, request structs out, limits enforced) knows
 * nothing of sockets or Lua, so a fuzzer drives it alone (built with SH_HTTP_SERVER_FUZZ, which
 * leaves the second part out). The server part owns sockets, timers, tasks and Lua objects. */
#define _GNU_SOURCE /* qsort_r */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

/* ======================= part 1: the parsing glue (no sockets, no Lua) ======================= */

typedef struct {
  char *data;
  size_t len, cap;
} sh_server_buf_t;

typedef struct {
  size_t name_off, name_len;  /* into names: lower-cased */
  size_t value_off, value_len;
} sh_server_header_t;

/* One complete request as the parser saw it. */
typedef struct {
  unsigned method;             /* enum http_method */
  unsigned short major, minor;
  int keep_alive;              /* http_should_keep_alive, and no protocol upgrade */
  int expect_continue;         /* "Expect: 100-continue" on HTTP/1.1 */
  sh_server_buf_t url, body;
  sh_server_buf_t names;         /* header names and values, back to back */
  sh_server_header_t *headers;
  size_t nheaders, cap;
} sh_server_request_t;

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
  sh_server_request_t *req;      /* NULL between requests */
} sh_server_parse_t;

static int sh_server_buf_add(sh_server_buf_t *b, const char *s, size_t n) {
  if (n == 0) return 0;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return -1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  return 0;
}

/* The bytes of b at off; "" for an empty buffer, whose data may be NULL. */
static const char *sh_server_at(const sh_server_buf_t *b, size_t off) { return b->data ? b->data + off : ""; }

static void sh_server_request_free(sh_server_request_t *r) {
  if (!r) return;
  free(r->url.data);
  free(r->body.data);
  free(r->names.data);
  free(r->headers);
  free(r);
}

static sh_server_parse_t *sh_server_parse_of(http_parser *hp) { return hp->data; }

/* Remember the first reason only: a later callback error must not turn a 413 into a 400. */
static int sh_server_refuse(sh_server_parse_t *p, int status) {
  if (!p->status) p->status = status;
  return -1;
}

static int sh_server_count(sh_server_parse_t *p, size_t n) {
  p->header_bytes += n;
  return p->header_bytes > p->header_limit ? sh_server_refuse(p, 431) : 0;
}

static int sh_server_on_begin(http_parser *hp) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  sh_server_request_free(p->req);
  p->req = calloc(1, sizeof *p->req);
  if (!p->req) return sh_server_refuse(p, 500);
  p->header_bytes = 0;
  p->in_value = 0;
  p->headers_done = 0;
  return 0;
}

static int sh_server_on_url(http_parser *hp, const char *at, size_t n) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  if (!p->req) return sh_server_refuse(p, 400);
  if (sh_server_count(p, n)) return -1;
  return sh_server_buf_add(&p->req->url, at, n) ? sh_server_refuse(p, 500) : 0;
}

static int sh_server_on_header_field(http_parser *hp, const char *at, size_t n) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  sh_server_request_t *r = p->req;
  if (!r) return sh_server_refuse(p, 400);
  if (sh_server_count(p, n)) return -1;
  if (p->headers_done) return 0; /* trailers after a chunked body: counted, never merged */
  if (p->in_value || r->nheaders == 0) {
    if (r->nheaders == r->cap) {
      size_t cap = r->cap ? r->cap * 2 : 16;
      sh_server_header_t *grown = realloc(r->headers, cap * sizeof *grown);
      if (!grown) return sh_server_refuse(p, 500);
      r->headers = grown;
      r->cap = cap;
    }
    sh_server_header_t *h = &r->headers[r->nheaders++];
    h->name_off = h->value_off = r->names.len;
    h->name_len = h->value_len = 0;
    p->in_value = 0;
  }
  sh_server_header_t *h = &r->headers[r->nheaders - 1];
  size_t from = r->names.len;
  if (sh_server_buf_add(&r->names, at, n)) return sh_server_refuse(p, 500);
  for (size_t i = from; i < r->names.len; i++)
    if (r->names.data[i] >= 'A' && r->names.data[i] <= 'Z') r->names.data[i] += 'a' - 'A';
  h->name_len += n;
  return 0;
}

static int sh_server_on_header_value(http_parser *hp, const char *at, size_t n) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  sh_server_request_t *r = p->req;
  if (!r || (r->nheaders == 0 && !p->headers_done)) return sh_server_refuse(p, 400);
  if (sh_server_count(p, n)) return -1;
  if (p->headers_done) return 0;
  sh_server_header_t *h = &r->headers[r->nheaders - 1];
  if (!p->in_value) {
    h->value_off = r->names.len;
    p->in_value = 1;
  }
  if (sh_server_buf_add(&r->names, at, n)) return sh_server_refuse(p, 500);
  h->value_len += n;
  return 0;
}

static int sh_server_is(const char *s, size_t n, const char *lit) {
  size_t l = strlen(lit);
  if (n != l) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 'a' - 'A') : s[i];
    if (c != lit[i]) return 0;
  }
  return 1;
}

static int sh_server_on_headers_complete(http_parser *hp) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  sh_server_request_t *r = p->req;
  if (!r) return sh_server_refuse(p, 400);
  p->headers_done = 1;
  r->method = hp->method;
  r->major = hp->http_major;
  r->minor = hp->http_minor;
  /* a declared length over the limit is refused before a byte of it is read */
  if (!(hp->flags & F_CHUNKED) && hp->content_length != UINT64_MAX && hp->content_length > p->body_limit)
    return sh_server_refuse(p, 413);
  for (size_t i = 0; i < r->nheaders; i++) {
    const sh_server_header_t *h = &r->headers[i];
    if (sh_server_is(sh_server_at(&r->names, h->name_off), h->name_len, "expect") &&
        sh_server_is(sh_server_at(&r->names, h->value_off), h->value_len, "100-continue") && r->major == 1 &&
        r->minor >= 1)
      r->expect_continue = 1;
  }
  p->want_continue = r->expect_continue;
  return 0;
}

static int sh_server_on_body(http_parser *hp, const char *at, size_t n) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  sh_server_request_t *r = p->req;
  if (!r) return sh_server_refuse(p, 400);
  if (n > p->body_limit - r->body.len) return sh_server_refuse(p, 413); /* chunked bodies end here */
  return sh_server_buf_add(&r->body, at, n) ? sh_server_refuse(p, 500) : 0;
}

/* Pausing here makes http_parser_execute return right after this request's last byte, so the
 * bytes of a pipelined next request stay with the caller until this one is answered. */
static int sh_server_on_complete(http_parser *hp) {
  sh_server_parse_t *p = sh_server_parse_of(hp);
  if (!p->req) return sh_server_refuse(p, 400);
  p->req->keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
  p->complete = 1;
  p->want_continue = 0;
  http_parser_pause(hp, 1);
  return 0;
}

static const http_parser_settings sh_server_settings = {
    .on_message_begin = sh_server_on_begin,
    .on_url = sh_server_on_url,
    .on_header_field = sh_server_on_header_field,
    .on_header_value = sh_server_on_header_value,
    .on_headers_complete = sh_server_on_headers_complete,
    .on_body = sh_server_on_body,
    .on_message_complete = sh_server_on_complete,
};

static void sh_server_parse_init(sh_server_parse_t *p, size_t body_limit, size_t header_limit) {
  memset(p, 0, sizeof *p);
  http_parser_init(&p->parser, HTTP_REQUEST);
  p->parser.data = p;
  p->body_limit = body_limit;
  p->header_limit = header_limit;
}

static void sh_server_parse_free(sh_server_parse_t *p) {
  sh_server_request_free(p->req);
  p->req = NULL;
}

/* Feed received bytes; returns how many were used. It stops early after a complete request
 * (p->complete: take it, answer it, then feed the rest) or when the input is refused
 * (p->status: answer with that status and close). */
static size_t sh_server_parse_feed(sh_server_parse_t *p, const char *data, size_t len) {
  if (p->status || p->complete || len == 0) return 0;
  size_t n = http_parser_execute(&p->parser, &sh_server_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&p->parser);
  if (e == HPE_PAUSED) return n;
  if (e != HPE_OK) {
    sh_server_refuse(p, e == HPE_HEADER_OVERFLOW ? 431 : 400);
    return n;
  }
  if (n < len && !p->complete) sh_server_refuse(p, 400); /* cannot happen with these callbacks */
  return n;
}

/* Hand over the complete request; the caller owns it. The parser continues with the next. */
static sh_server_request_t *sh_server_parse_take(sh_server_parse_t *p) {
  if (!p->complete) return NULL;
  sh_server_request_t *r = p->req;
  p->req = NULL;
  p->complete = p->headers_done = p->in_value = 0;
  p->header_bytes = 0;
  http_parser_pause(&p->parser, 0);
  return r;
}

#ifdef SH_HTTP_SERVER_FUZZ
#include <stdio.h>

static void sh_server_fuzz_check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_http_server: invariant broken: %s\n", what);
    abort();
  }
}

/* The fuzzer's entry: drive the glue exactly as a connection does. The first byte is how the
 * input arrives (1..255 bytes at a time, 0 for all at once), the second picks the limits. Each
 * complete request is checked and freed; the rest is fed again while keep-alive holds. */
int sh_http_server_fuzz_one(const uint8_t *data, size_t size);
int sh_http_server_fuzz_one(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t piece = data[0] ? data[0] : size;
  size_t body_limit = (data[1] & 0x0f) ? (size_t)(data[1] & 0x0f) * 16 : 1048576;
  size_t header_limit = (data[1] >> 4) ? (size_t)(data[1] >> 4) * 32 : 65536;
  data += 2;
  size -= 2;
  sh_server_parse_t p;
  sh_server_parse_init(&p, body_limit, header_limit);
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < piece ? size - off : piece;
    size_t used = sh_server_parse_feed(&p, (const char *)data + off, n);
    sh_server_fuzz_check(used <= n, "used <= fed");
    off += used;
    if (p.status) {
      sh_server_fuzz_check(p.status == 400 || p.status == 413 || p.status == 431 || p.status == 500, "status");
      break;
    }
    if (!p.complete) {
      sh_server_fuzz_check(used == n, "all bytes used unless complete or refused");
      continue;
    }
    sh_server_request_t *r = sh_server_parse_take(&p);
    sh_server_fuzz_check(r != NULL, "a complete request");
    sh_server_fuzz_check(r->body.len <= body_limit, "body within the limit");
    size_t counted = r->url.len;
    for (size_t i = 0; i < r->nheaders; i++) {
      const sh_server_header_t *h = &r->headers[i];
      sh_server_fuzz_check(h->name_off + h->name_len <= r->names.len, "name in bounds");
      sh_server_fuzz_check(h->value_off + h->value_len <= r->names.len, "value in bounds");
      for (size_t k = 0; k < h->name_len; k++)
        sh_server_fuzz_check(!(r->names.data[h->name_off + k] >= 'A' && r->names.data[h->name_off + k] <= 'Z'),
                           "names lower-cased");
      counted += h->name_len + h->value_len;
    }
    sh_server_fuzz_check(counted <= header_limit, "headers within the limit");
    sh_server_fuzz_check(http_method_str((enum http_method)r->method) != NULL, "method");
    int keep = r->keep_alive;
    sh_server_request_free(r);
    if (!keep) break;
  }
  sh_server_parse_free(&p);
  return 0;
}

#else /* the server */

/* =========================== part 2: the server (libuv, Lua, tasks) =========================== */

#include <stdio.h>

#include <lauxlib.h>
#include <uv.h>

#include "../host/log.h"
#include "../host/sched.h"

#define SH_SERVER_MT "stagehost.http.server"
#define SH_SERVER_STREAM_MT "stagehost.http.stream"
#define SH_SERVER_REQUEST_MT "stagehost.http.request"
#define SH_SERVER_EXCHANGES "stagehost.http.server.exchanges" /* weak: request table -> stream */
#define SH_SERVER_CANCEL_MT "stagehost.cancelled"             /* the scheduler's cancel errors */
#define SH_CONTAINER(ptr, type, field) ((type *)((char *)(ptr) - offsetof(type, field)))
#define SH_SERVER_LINGER_SECONDS 2.0 /* after a last response: wait this long for the client's EOF */
#define SH_SERVER_READ_CHUNK (64 * 1024)

#define SH_SERVER_DEBUG(...)                                            \
  do {                                                                  \
    if (sh_log_enabled(SH_LOG_DEBUG)) sh_log_printf(SH_LOG_DEBUG, __VA_ARGS__); \
  } while (0)

typedef struct sh_server sh_server_t;
typedef struct sh_server_conn sh_server_conn_t;
typedef struct sh_server_closer sh_server_closer_t;

/* A connection is reading a request, busy with one (handler running or response being written,
 * reading stopped), or lingering: response sent, write side shut, draining until the client's
 * EOF so that closing does not reset a response the client has not read yet. */
enum { SH_CONN_READING, SH_CONN_BUSY, SH_CONN_LINGER };

/* What the connection's one timer means now; states never need two at once. */
enum { SH_TIMER_NONE, SH_TIMER_IDLE, SH_TIMER_HEADER, SH_TIMER_BODY, SH_TIMER_WRITE, SH_TIMER_LINGER, SH_TIMER_KICK };

/* How a response's body is delimited. */
enum { SH_FRAME_LENGTH, SH_FRAME_CHUNKED, SH_FRAME_CLOSE, SH_FRAME_NONE };

struct sh_server {
  uv_tcp_t tcp;                 /* the listener */
  lua_State *L;                 /* the main state: requests are dispatched there, from callbacks */
  sh_sched_t *sched;
  int handler_ref;              /* registry ref to the handler until the server closes */
  int anchor_ref;               /* registry ref to the userdata while listening */
  int closing;                  /* close() or __gc ran: no new connections or requests */
  int listener_open;            /* the listener's close callback has not run yet */
  int lua_alive;                /* the userdata still points here */
  sh_server_conn_t *conns;      /* connections whose handles are not closed yet */
  size_t nconns;
  sh_server_closer_t *closers;  /* tasks in close() waiting for the last connection */
  sh_server_t *prev, *next;     /* every server, for the shutdown hook */
  size_t body_limit, header_limit;
  double header_timeout, idle_timeout, body_timeout;
  unsigned long next_conn_id;
  int port;
  char host[64];
  char label[80];               /* "host:port" for messages */
};

struct sh_server_conn {
  uv_tcp_t tcp;
  uv_shutdown_t shutdown;
  sh_server_t *server;          /* NULL once the handle closed and the server let go of it */
  sh_sched_t *sched;
  int refs;                     /* the open handle, plus one per stream userdata */
  int open;                     /* uv_close not called yet */
  int reading;                  /* uv_read_start is active */
  int state;                    /* SH_CONN_* */
  sh_server_parse_t parse;
  char *pending;                /* received, not parsed yet: pipelined requests (only while busy) */
  size_t pending_off, pending_len; /* the bytes are pending[pending_off, pending_len) */
  unsigned seq;                 /* bumped per request; a stream userdata of an older one is stale */
  int writes;                   /* uv_write requests not completed */
  int responded;                /* the current response's last bytes are queued */
  int streaming;                /* req:stream sent the head; chunks may follow */
  int frame;                    /* SH_FRAME_* of the current streamed response */
  int req_head;                 /* the current request is HEAD: no body bytes go out */
  int req_minor;                /* HTTP/1.x of the current request */
  int keep_alive;               /* the connection stays open after this response */
  int got_bytes;                /* bytes of the next request arrived (a 408 makes sense) */
  sh_timer_t timer;
  int timer_kind;               /* SH_TIMER_* */
  unsigned long id;
  char remote[64];
  sh_server_conn_t *prev, *next;
};

/* A write of response bytes; a task in stream:write waits on it. */
typedef struct {
  uv_write_t req;
  sh_wait_t wait;
  sh_server_conn_t *conn;
  int status;
  char data[];
} sh_server_write_t;

/* A task in server:close(). */
struct sh_server_closer {
  sh_wait_t wait;
  sh_server_t *server;
  sh_server_closer_t *prev, *next;
};

/* The userdata of a server; the struct outlives it until every connection is closed. */
typedef struct {
  sh_server_t *srv;
} sh_server_ud_t;

/* The userdata of one request's exchange, returned by req:stream as the stream object. It holds
 * a reference on the connection, so it never points at freed memory; seq tells a stale one. */
typedef struct {
  sh_server_conn_t *conn;
  unsigned seq;
} sh_server_stream_t;

static sh_server_t *sh_server_all;
static int sh_server_hook_installed;

static int sh_server_conn_consume(sh_server_conn_t *c, const char *data, size_t len, char *owned);
static void sh_server_conn_maybe_next(sh_server_conn_t *c);
static void sh_server_conn_simple(sh_server_conn_t *c, int status, int close_after);

/* ---- server lifetime ---- */

/* The struct goes once nothing can reach it: no userdata, no listener, no connection, no
 * task waiting in close(). */
static void sh_server_maybe_free(sh_server_t *s) {
  if (s->lua_alive || s->listener_open || s->nconns > 0 || s->closers) return;
  if (s->prev) s->prev->next = s->next;
  else if (sh_server_all == s) sh_server_all = s->next;
  if (s->next) s->next->prev = s->prev;
  SH_SERVER_DEBUG("http.serve %s: freed", s->label);
  free(s);
}

/* Called whenever a connection or the listener finished closing: once all are gone, every task
 * waiting in close() is woken (each closer is freed here; its task no longer needs it). */
static void sh_server_check_drained(sh_server_t *s) {
  if (s->listener_open || s->nconns > 0) return;
  while (s->closers) {
    sh_server_closer_t *w = s->closers;
    s->closers = w->next;
    sh_sched_wake(&w->wait);
    free(w);
  }
  sh_server_maybe_free(s);
}

/* called by libuv once the listener is closed */
static void sh_server_listener_closed(uv_handle_t *h) {
  sh_server_t *s = h->data;
  s->listener_open = 0;
  sh_server_check_drained(s);
}

/* ---- connection lifetime ---- */

/* The handle and every stream userdata hold one reference; the last one frees the memory. */
static void sh_server_conn_unref(sh_server_conn_t *c) {
  if (--c->refs > 0) return;
  sh_server_parse_free(&c->parse);
  free(c->pending);
  free(c);
}

/* One timer per connection: arming it replaces whatever it meant before. */
static void sh_server_conn_arm(sh_server_conn_t *c, int kind, double seconds) {
  c->timer_kind = kind;
  sh_timer_arm(c->sched, &c->timer, seconds);
}

static void sh_server_conn_disarm(sh_server_conn_t *c) {
  c->timer_kind = SH_TIMER_NONE;
  sh_timer_disarm(c->sched, &c->timer);
}

/* called by libuv once a connection's handle is closed (its writes have all been called back
 * by now): the server lets go of it, and the handle's reference is dropped. It reaches no Lua
 * and no timer: at exit it runs after lua_close, when the scheduler has already aborted every
 * task waiting in close(). */
static void sh_server_conn_closed(uv_handle_t *h) {
  sh_server_conn_t *c = h->data;
  sh_server_t *s = c->server;
  if (s) {
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->server = NULL;
    s->nconns--;
    sh_server_check_drained(s); /* may free s */
  }
  sh_server_conn_unref(c);
}

/* Close now. Idempotent; timers are disarmed here, never in the close callback, and pending
 * writes end with ECANCELED (a task waiting on one gets an error result). */
static void sh_server_conn_close(sh_server_conn_t *c, const char *why) {
  if (!c->open) return;
  c->open = 0;
  c->reading = 0;
  sh_server_conn_disarm(c);
  SH_SERVER_DEBUG("http.serve %s: connection %lu closed (%s)", c->server ? c->server->label : "?", c->id, why);
  free(c->pending);
  c->pending = NULL;
  c->pending_off = c->pending_len = 0;
  sh_server_parse_free(&c->parse);
  uv_close((uv_handle_t *)&c->tcp, sh_server_conn_closed);
}

/* called by libuv before each read; reads are consumed at once, so one buffer serves all */
static void sh_server_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char chunk[SH_SERVER_READ_CHUNK];
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(chunk, sizeof chunk);
}

static void sh_server_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Reading is on only while the connection waits for a request or lingers. */
static void sh_server_conn_read_start(sh_server_conn_t *c) {
  if (!c->open || c->reading) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, sh_server_alloc, sh_server_read) == 0) c->reading = 1;
  else sh_server_conn_close(c, "cannot read");
}

static void sh_server_conn_read_stop(sh_server_conn_t *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

/* called by libuv when the write side is shut after the last response */
static void sh_server_shutdown_done(uv_shutdown_t *req, int status) {
  sh_server_conn_t *c = SH_CONTAINER(req, sh_server_conn_t, shutdown);
  if (status < 0 && c->open) sh_server_conn_close(c, "shutdown failed");
}

/* The last response is out: shut the write side, then discard what the client still sends
 * until its EOF (or a short linger), so its unread bytes do not make the kernel reset the
 * connection before the client has read the response. */
static void sh_server_conn_linger(sh_server_conn_t *c) {
  if (!c->open) return;
  c->state = SH_CONN_LINGER;
  sh_server_conn_disarm(c);
  free(c->pending);
  c->pending = NULL;
  c->pending_off = c->pending_len = 0;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, sh_server_shutdown_done) != 0) {
    sh_server_conn_close(c, "done");
    return;
  }
  sh_server_conn_arm(c, SH_TIMER_LINGER, SH_SERVER_LINGER_SECONDS);
  sh_server_conn_read_start(c);
}

/* ---- writing ---- */

/* called by libuv when a write is done (or cancelled by a close): wake its task, or free it;
 * a completed last write moves the connection on to its next request */
static void sh_server_write_done(uv_write_t *req, int status) {
  sh_server_write_t *w = SH_CONTAINER(req, sh_server_write_t, req);
  sh_server_conn_t *c = w->conn;
  c->writes--;
  if (c->open) {
    if (status < 0) {
      sh_server_conn_close(c, uv_err_name(status));
    } else if (c->state == SH_CONN_BUSY) {
      if (c->writes > 0) sh_server_conn_arm(c, SH_TIMER_WRITE, c->server->idle_timeout);
      else if (c->timer_kind == SH_TIMER_WRITE) sh_server_conn_disarm(c);
      sh_server_conn_maybe_next(c);
    }
  }
  if (w->wait.task) {
    w->status = status;
    sh_sched_wake(&w->wait);
    return; /* the continuation frees it */
  }
  free(w);
}

/* Queue the concatenation of parts as one write. On failure the connection is closed and NULL
 * returned; nothing raises. */
static sh_server_write_t *sh_server_conn_send(sh_server_conn_t *c, const uv_buf_t *parts, int nparts) {
  if (!c->open) return NULL;
  size_t len = 0;
  for (int i = 0; i < nparts; i++) len += parts[i].len;
  sh_server_write_t *w = malloc(sizeof *w + len);
  if (!w) {
    sh_server_conn_close(c, "out of memory");
    return NULL;
  }
  memset(w, 0, sizeof *w);
  w->conn = c;
  size_t at = 0;
  for (int i = 0; i < nparts; i++) {
    if (parts[i].len) memcpy(w->data + at, parts[i].base, parts[i].len);
    at += parts[i].len;
  }
  /* uv_buf_init takes an unsigned int: a huge body goes out in 1 GiB pieces */
  uv_buf_t bufs[16];
  unsigned nbufs = 0;
  size_t off = 0;
  do {
    if (nbufs == 16) {
      free(w);
      sh_server_conn_close(c, "response too large");
      return NULL;
    }
    size_t n = len - off > ((size_t)1 << 30) ? ((size_t)1 << 30) : len - off;
    bufs[nbufs++] = uv_buf_init(w->data + off, (unsigned)n);
    off += n;
  } while (off < len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, sh_server_write_done);
  if (rc < 0) {
    free(w);
    sh_server_conn_close(c, uv_err_name(rc));
    return NULL;
  }
  if (c->writes++ == 0 && c->state == SH_CONN_BUSY) sh_server_conn_arm(c, SH_TIMER_WRITE, c->server->idle_timeout);
  return w;
}

/* The current response is complete once these parts are written. With nothing to write, the
 * move to the next request is deferred to the loop (a zero timer): this may run inside a task,
 * where dispatching the next request on the main state must not happen. */
static void sh_server_conn_respond(sh_server_conn_t *c, const uv_buf_t *parts, int nparts) {
  c->responded = 1;
  size_t len = 0;
  for (int i = 0; i < nparts; i++) len += parts[i].len;
  if (len > 0) {
    sh_server_conn_send(c, parts, nparts);
  } else if (c->open && c->writes == 0) {
    sh_server_conn_arm(c, SH_TIMER_KICK, 0);
  }
}

/* ---- requests to Lua ---- */

/* The response is out: go on with the next request (the pending bytes first) or close. Runs from
 * the loop only (write callbacks, the kick timer), never inside a task: dispatching the next
 * request uses the main state. */
static void sh_server_conn_maybe_next(sh_server_conn_t *c) {
  if (!c->open || c->state != SH_CONN_BUSY || !c->responded || c->writes > 0) return;
  if (!c->keep_alive || !c->server || c->server->closing) {
    sh_server_conn_linger(c);
    return;
  }
  c->state = SH_CONN_READING;
  c->responded = c->streaming = 0;
  c->got_bytes = 0;
  sh_server_conn_arm(c, SH_TIMER_IDLE, c->server->idle_timeout);
  char *pending = c->pending;
  size_t off = c->pending_off, end = c->pending_len;
  c->pending = NULL;
  c->pending_off = c->pending_len = 0;
  if (pending && !sh_server_conn_consume(c, pending + off, end - off, pending)) free(pending);
  if (c->open && c->state == SH_CONN_READING) sh_server_conn_read_start(c);
}

static int sh_server_name_cmp(const sh_server_request_t *r, size_t i, size_t j) {
  const sh_server_header_t *x = &r->headers[i], *y = &r->headers[j];
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int d = n ? memcmp(sh_server_at(&r->names, x->name_off), sh_server_at(&r->names, y->name_off), n) : 0;
  if (d) return d;
  return x->name_len == y->name_len ? 0 : x->name_len < y->name_len ? -1 : 1;
}

/* qsort_r order of header indices: by name, then by arrival */
static int sh_server_header_cmp(const void *a, const void *b, void *ctx) {
  size_t i = *(const size_t *)a, j = *(const size_t *)b;
  int d = sh_server_name_cmp(ctx, i, j);
  return d ? d : i < j ? -1 : i > j;
}

/* Push the headers as a table; a repeated name gets one value, joined with ", " as RFC 9110
 * allows. Sorted first so each name is joined once: joining pairwise would copy quadratically,
 * and a request may carry thousands of repeats. */
static void sh_server_push_headers(lua_State *L, const sh_server_request_t *r) {
  lua_createtable(L, 0, (int)r->nheaders);
  if (r->nheaders == 0) return;
  size_t *order = lua_newuserdatauv(L, r->nheaders * sizeof *order, 0); /* freed by the GC */
  for (size_t i = 0; i < r->nheaders; i++) order[i] = i;
  qsort_r(order, r->nheaders, sizeof *order, sh_server_header_cmp, (void *)r);
  for (size_t i = 0; i < r->nheaders;) {
    const sh_server_header_t *h = &r->headers[order[i]];
    size_t j = i + 1;
    while (j < r->nheaders && sh_server_name_cmp(r, order[i], order[j]) == 0) j++;
    lua_pushlstring(L, sh_server_at(&r->names, h->name_off), h->name_len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t k = i; k < j; k++) {
      const sh_server_header_t *v = &r->headers[order[k]];
      if (k > i) luaL_addlstring(&b, ", ", 2);
      luaL_addlstring(&b, sh_server_at(&r->names, v->value_off), v->value_len);
    }
    luaL_pushresult(&b);
    lua_rawset(L, -4);
    i = j;
  }
  lua_pop(L, 1);
}

static void sh_server_push_request(lua_State *L, sh_server_conn_t *c, sh_server_request_t *r) {
  lua_createtable(L, 0, 10);
  lua_pushstring(L, http_method_str((enum http_method)r->method));
  lua_setfield(L, -2, "method");
  const char *url = sh_server_at(&r->url, 0);
  lua_pushlstring(L, url, r->url.len);
  lua_setfield(L, -2, "url");
  /* path and query: http-parser's URL splitter handles origin, absolute and authority forms
   * (its offsets are 16 bits: a longer URL, or "*" of OPTIONS, is split at '?' and '#') */
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (r->url.len > 0 && r->url.len <= UINT16_MAX &&
      http_parser_parse_url(url, r->url.len, r->method == HTTP_CONNECT, &u) == 0) {
    if (u.field_set & (1 << UF_PATH)) lua_pushlstring(L, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    else lua_pushliteral(L, "/");
    lua_setfield(L, -2, "path");
    if (u.field_set & (1 << UF_QUERY)) {
      lua_pushlstring(L, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
      lua_setfield(L, -2, "query");
    }
  } else {
    size_t path_end = 0, query_end;
    while (path_end < r->url.len && url[path_end] != '?' && url[path_end] != '#') path_end++;
    lua_pushlstring(L, url, path_end);
    lua_setfield(L, -2, "path");
    if (path_end < r->url.len && url[path_end] == '?') {
      for (query_end = path_end + 1; query_end < r->url.len && url[query_end] != '#'; query_end++) {
      }
      lua_pushlstring(L, url + path_end + 1, query_end - path_end - 1);
      lua_setfield(L, -2, "query");
    }
  }
  lua_pushfstring(L, "%d.%d", (int)r->major, (int)r->minor);
  lua_setfield(L, -2, "version");
  sh_server_push_headers(L, r);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, sh_server_at(&r->body, 0), r->body.len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, c->remote);
  lua_setfield(L, -2, "remote");
  luaL_setmetatable(L, SH_SERVER_REQUEST_MT);
}

static int sh_server_handler_body(lua_State *L);

/* Runs protected on the main state: build the request's Lua objects and spawn its task. The
 * stream userdata takes its connection reference first, so an error after it leaks nothing. */
static int sh_server_dispatch_p(lua_State *L) {
  sh_server_conn_t *c = lua_touserdata(L, 1);
  sh_server_request_t *r = lua_touserdata(L, 2);
  lua_settop(L, 0);
  lua_pushcfunction(L, sh_server_handler_body);
  sh_server_stream_t *x = lua_newuserdatauv(L, sizeof *x, 0);
  x->conn = c;
  x->seq = c->seq;
  c->refs++;
  luaL_setmetatable(L, SH_SERVER_STREAM_MT);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->server->handler_ref);
  sh_server_push_request(L, c, r);
  lua_getfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  sh_task_spawn(L, 3);
  return 0;
}

/* A request is complete: stop reading (later bytes wait in pending), and hand it to a new task.
 * Called from libuv callbacks only, where the main state is idle. */
static void sh_server_conn_dispatch(sh_server_conn_t *c) {
  sh_server_request_t *r = sh_server_parse_take(&c->parse);
  sh_server_conn_read_stop(c);
  sh_server_conn_disarm(c);
  c->state = SH_CONN_BUSY;
  c->seq++;
  c->responded = c->streaming = 0;
  c->req_head = r->method == HTTP_HEAD;
  c->req_minor = r->major == 1 ? r->minor : 0;
  c->keep_alive = r->keep_alive;
  sh_server_t *s = c->server;
  if (s->closing) { /* cannot happen (closing closes reading connections) but cheap to refuse */
    sh_server_request_free(r);
    sh_server_conn_simple(c, 503, 1);
    return;
  }
  SH_SERVER_DEBUG("http.serve %s: connection %lu: %s %.*s", s->label, c->id,
                  http_method_str((enum http_method)r->method), (int)(r->url.len > 200 ? 200 : r->url.len),
                  r->url.data ? r->url.data : "");
  lua_State *L = s->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, sh_server_dispatch_p);
  lua_pushlightuserdata(L, c);
  lua_pushlightuserdata(L, r);
  int rc = lua_pcall(L, 2, 0, 0);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    sh_log_printf(SH_LOG_ERROR, "http.serve %s: cannot start a handler: %s", s->label, msg ? msg : "?");
    sh_server_conn_simple(c, 500, 1);
  }
  lua_settop(L, top);
  sh_server_request_free(r);
}

/* ---- responses ---- */

static const char *sh_server_reason(int status) {
  const char *r = http_status_str((enum http_status)status);
  return strcmp(r, "<unknown>") == 0 ? "" : r;
}

/* "Date: ...\r\n" (RFC 9110 section 6.6.1: an origin server with a clock sends it), formatted
 * once a second. */
static const char *sh_server_date_line(void) {
  static char line[64];
  static time_t last;
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    last = now;
  }
  return line;
}

/* A response the server writes itself (errors). The request is refused or failed; with
 * close_after the connection closes once it is written. */
static void sh_server_conn_simple(sh_server_conn_t *c, int status, int close_after) {
  if (!c->open) return;
  char head[256], body[96];
  const char *reason = sh_server_reason(status);
  int bl = snprintf(body, sizeof body, "%d %s\n", status, reason);
  if (close_after || !c->server || c->server->closing) c->keep_alive = 0;
  const char *conn = !c->keep_alive ? "Connection: close\r\n" : c->req_minor == 0 ? "Connection: keep-alive\r\n" : "";
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n",
                    status, reason, sh_server_date_line(), bl, conn);
  uv_buf_t parts[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init(body, c->req_head ? 0 : (unsigned)bl)};
  sh_server_conn_respond(c, parts, 2);
}

/* The input was refused (400, 413, 431) or timed out (408): answer, then close. */
static void sh_server_conn_fail(sh_server_conn_t *c, int status) {
  SH_SERVER_DEBUG("http.serve %s: connection %lu: refused with %d", c->server->label, c->id, status);
  sh_server_conn_read_stop(c);
  sh_server_conn_disarm(c);
  c->state = SH_CONN_BUSY;
  c->seq++;
  c->responded = c->streaming = 0;
  c->req_head = 0;
  c->req_minor = 1;
  sh_server_conn_simple(c, status, 1);
}

static int sh_server_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          strchr("!#$%&'*+-.^_`|~", ch)))
      return 0;
  }
  return 1;
}

/* Add "name: value\r\n" for the value at the top (a string or a number) to the lines table. */
static void sh_server_add_header(lua_State *L, int lines, int *n, const char *name, const char *who) {
  int t = lua_type(L, -1);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    luaL_error(L, "%s: header '%s' must be a string or a number (got %s)", who, name, luaL_typename(L, -1));
  size_t vl;
  const char *v = lua_tolstring(L, -1, &vl);
  for (size_t i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
      luaL_error(L, "%s: header '%s' has a line break or NUL in its value", who, name);
  lua_pushfstring(L, "%s: %s\r\n", name, v);
  lua_rawseti(L, lines, ++*n);
}

/* Push the status line and headers of a response. Framing headers are the server's: the
 * handler's content-length, transfer-encoding and connection are dropped ("connection: close"
 * is honoured). Decides c->keep_alive. May raise (bad headers); keeps no C memory meanwhile. */
static void sh_server_push_head(lua_State *L, sh_server_conn_t *c, int status, int hidx, const char *default_type,
                                int frame, size_t length, const char *who) {
  lua_newtable(L);
  int lines = lua_gettop(L), n = 0, has_type = 0;
  if (hidx) {
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "%s: header names must be strings (got %s)", who, luaL_typename(L, -2));
      size_t nl;
      const char *name = lua_tolstring(L, -2, &nl);
      if (!sh_server_token(name, nl)) luaL_error(L, "%s: bad header name '%s'", who, name);
      if (sh_server_is(name, nl, "content-length") || sh_server_is(name, nl, "transfer-encoding")) {
        lua_pop(L, 1);
        continue;
      }
      if (sh_server_is(name, nl, "connection")) {
        const char *v = lua_tostring(L, -1);
        if (v && strstr(v, "close")) c->keep_alive = 0;
        lua_pop(L, 1);
        continue;
      }
      if (sh_server_is(name, nl, "content-type")) has_type = 1;
      if (lua_type(L, -1) == LUA_TTABLE) { /* one line per element: set-cookie and the like */
        lua_Integer count = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= count; i++) {
          lua_rawgeti(L, -1, i);
          sh_server_add_header(L, lines, &n, name, who);
          lua_pop(L, 1);
        }
      } else {
        sh_server_add_header(L, lines, &n, name, who);
      }
      lua_pop(L, 1);
    }
  }
  if (frame == SH_FRAME_CLOSE || !c->server || c->server->closing) c->keep_alive = 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char line[128];
  snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, sh_server_reason(status));
  luaL_addstring(&b, line);
  luaL_addstring(&b, sh_server_date_line());
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, lines, i);
    luaL_addvalue(&b);
  }
  if (!has_type && default_type) {
    luaL_addstring(&b, "Content-Type: ");
    luaL_addstring(&b, default_type);
    luaL_addstring(&b, "\r\n");
  }
  if (frame == SH_FRAME_LENGTH) {
    snprintf(line, sizeof line, "Content-Length: %zu\r\n", length);
    luaL_addstring(&b, line);
  } else if (frame == SH_FRAME_CHUNKED) {
    luaL_addstring(&b, "Transfer-Encoding: chunked\r\n");
  }
  if (!c->keep_alive) luaL_addstring(&b, "Connection: close\r\n");
  else if (c->req_minor == 0) luaL_addstring(&b, "Connection: keep-alive\r\n");
  luaL_addstring(&b, "\r\n");
  luaL_pushresult(&b);
  lua_remove(L, lines);
}

static int sh_server_status(lua_State *L, int idx, const char *who) {
  if (lua_isnil(L, idx)) return 200;
  int exact = 0;
  lua_Integer st = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &exact) : 0;
  if (!exact) luaL_error(L, "%s: status must be an integer (got %s)", who, luaL_typename(L, idx));
  if (st < 200 || st > 599) luaL_error(L, "%s: status must be between 200 and 599 (got %d)", who, (int)st);
  return (int)st;
}

/* Runs protected inside the handler's task: turn what the handler returned (1) into the head
 * and the body to send for connection (2). */
static int sh_server_build_p(lua_State *L) {
  sh_server_conn_t *c = lua_touserdata(L, 2);
  const char *who = "http.serve: the handler's response";
  int status = 200, hidx = 0;
  const char *default_type = NULL;
  size_t blen = 0;
  lua_settop(L, 2);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushvalue(L, 1); /* 3: body */
    default_type = "text/plain; charset=utf-8";
  } else if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "body"); /* 3 */
    int bt = lua_type(L, 3);
    if (bt == LUA_TNIL) {
      lua_pushliteral(L, "");
      lua_replace(L, 3);
    } else if (bt != LUA_TSTRING && bt != LUA_TNUMBER) {
      return luaL_error(L, "%s: body must be a string (got %s)", who, luaL_typename(L, 3));
    }
    lua_getfield(L, 1, "status"); /* 4 */
    status = sh_server_status(L, 4, who);
    lua_getfield(L, 1, "headers"); /* 5 */
    if (!lua_isnil(L, 5) && !lua_istable(L, 5))
      return luaL_error(L, "%s: headers must be a table (got %s)", who, luaL_typename(L, 5));
    if (lua_istable(L, 5)) hidx = 5;
  } else if (lua_isnil(L, 1)) {
    return luaL_error(L, "%s: the handler returned nothing (return a table, a string, or use req:stream)",
                      "http.serve");
  } else {
    return luaL_error(L, "%s: the handler returned a %s (expected a table, a string, or nil after req:stream)",
                      "http.serve", luaL_typename(L, 1));
  }
  lua_tolstring(L, 3, &blen);
  int bodyless = status == 204 || status == 304;
  sh_server_push_head(L, c, status, hidx, bodyless ? NULL : default_type, bodyless ? SH_FRAME_NONE : SH_FRAME_LENGTH,
                      blen, who);
  if (bodyless || c->req_head) lua_pushliteral(L, "");
  else lua_pushvalue(L, 3);
  return 2;
}

/* The connection of a stream userdata while its exchange is the current one, else NULL. */
static sh_server_conn_t *sh_server_exchange(sh_server_stream_t *x) {
  sh_server_conn_t *c = x->conn;
  if (!c || !c->open || c->seq != x->seq || c->state != SH_CONN_BUSY) return NULL;
  return c;
}

static int sh_server_is_cancel(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, SH_SERVER_CANCEL_MT);
  int eq = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return eq;
}

/* message handler of the handler's pcall: a traceback for errors, cancellations untouched */
static int sh_server_msgh(lua_State *L) {
  if (sh_server_is_cancel(L, 1)) return 1;
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
    else msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Log a handler's failure at error level, naming the request (req is at 3, untouched by
 * metamethods: raw reads). */
static void sh_server_log_failure(lua_State *L, const char *what, int msg_idx) {
  lua_pushliteral(L, "method");
  lua_rawget(L, 3);
  lua_pushliteral(L, "url");
  lua_rawget(L, 3);
  const char *method = lua_tostring(L, -2), *url = lua_tostring(L, -1);
  const char *msg = lua_tostring(L, msg_idx);
  lua_pushfstring(L, "http.serve: %s for %s %s: %s", what, method ? method : "?", url ? url : "?", msg ? msg : "?");
  size_t len;
  const char *line = lua_tolstring(L, -1, &len);
  sh_log_write(SH_LOG_ERROR, line, len);
  lua_pop(L, 3);
}

/* After the handler returned or raised, inside its task: send its response. A cancellation is
 * re-raised so the task ends cancelled (its connection is closed unanswered); any other error
 * is logged and answered with 500. Stack: stream, handler, req, msgh, result or error. */
static int sh_server_handler_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  sh_server_stream_t *x = lua_touserdata(L, 1);
  sh_server_conn_t *c = sh_server_exchange(x);
  if (status != LUA_OK && status != LUA_YIELD) {
    if (sh_server_is_cancel(L, -1)) {
      if (c) sh_server_conn_close(c, "handler cancelled");
      return lua_error(L);
    }
    sh_server_log_failure(L, "handler failed", lua_gettop(L));
    if (!c) return 0;
    if (c->streaming) sh_server_conn_close(c, "handler failed while streaming"); /* a truncated body */
    else if (!c->responded) sh_server_conn_simple(c, 500, 0);
    return 0;
  }
  if (!c || c->responded) return 0; /* the client is gone, or the stream was closed */
  if (c->streaming) { /* the handler returned without closing its stream */
    uv_buf_t last = uv_buf_init("0\r\n\r\n", c->frame == SH_FRAME_CHUNKED ? 5 : 0);
    sh_server_conn_respond(c, &last, 1);
    return 0;
  }
  int result = lua_gettop(L);
  lua_pushcfunction(L, sh_server_build_p);
  lua_pushvalue(L, result);
  lua_pushlightuserdata(L, c);
  if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
    sh_server_log_failure(L, "bad response", lua_gettop(L));
    sh_server_conn_simple(c, 500, 0);
    return 0;
  }
  size_t hl, bl;
  const char *head = lua_tolstring(L, -2, &hl), *body = lua_tolstring(L, -1, &bl);
  uv_buf_t parts[2] = {uv_buf_init((char *)head, (unsigned)hl), uv_buf_init((char *)body, 0)};
  parts[1].len = bl; /* may exceed an unsigned int: sh_server_conn_send splits it */
  sh_server_conn_respond(c, parts, 2);
  SH_SERVER_DEBUG("http.serve %s: connection %lu: responded", c->server->label, c->id);
  return 0;
}

/* The body of every handler task: handler(req), protected, then the continuation above. */
static int sh_server_handler_body(lua_State *L) {
  lua_settop(L, 3);
  lua_pushcfunction(L, sh_server_msgh);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  int status = lua_pcallk(L, 1, 1, 4, 0, sh_server_handler_k);
  return sh_server_handler_k(L, status, 0);
}

/* ---- reading ---- */

/* Bytes arrived for a reading connection: parse, answer refusals, dispatch a complete request
 * (keeping the bytes after it for later), keep the slow-client timers right. data lies in owned
 * (a malloc'd buffer of pending bytes) or in the read buffer (owned NULL); returns 1 if owned was
 * kept for the bytes left over, which the caller then must not free. Pipelined requests are thus
 * never copied more than once. */
static int sh_server_conn_consume(sh_server_conn_t *c, const char *data, size_t len, char *owned) {
  if (len == 0 || !c->open || c->state != SH_CONN_READING) return 0;
  sh_server_t *s = c->server;
  c->got_bytes = 1;
  if (c->timer_kind == SH_TIMER_IDLE) sh_server_conn_arm(c, SH_TIMER_HEADER, s->header_timeout);
  size_t body_before = c->parse.req ? c->parse.req->body.len : 0;
  int headers_before = c->parse.headers_done;
  size_t used = sh_server_parse_feed(&c->parse, data, len);
  if (c->parse.status) {
    sh_server_conn_fail(c, c->parse.status);
    return 0;
  }
  if (c->parse.complete) {
    int kept = 0;
    if (used < len && owned) {
      c->pending = owned;
      c->pending_off = (size_t)(data + used - owned);
      c->pending_len = c->pending_off + (len - used);
      kept = 1;
    } else if (used < len) {
      c->pending = malloc(len - used);
      if (!c->pending) {
        sh_server_conn_close(c, "out of memory");
        return 0;
      }
      memcpy(c->pending, data + used, len - used);
      c->pending_off = 0;
      c->pending_len = len - used;
    }
    sh_server_conn_dispatch(c);
    return kept;
  }
  if (c->parse.want_continue) {
    c->parse.want_continue = 0;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t part = uv_buf_init((char *)cont, sizeof cont - 1);
    sh_server_conn_send(c, &part, 1);
  }
  /* a body must keep moving: every bit of progress restarts its clock */
  if (c->open && c->parse.headers_done &&
      (!headers_before || (c->parse.req && c->parse.req->body.len != body_before)))
    sh_server_conn_arm(c, SH_TIMER_BODY, s->body_timeout);
  return 0;
}

/* called by libuv with bytes from a client, or its EOF or an error */
static void sh_server_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  sh_server_conn_t *c = stream->data;
  if (nread == 0 || !c->open) return;
  if (nread < 0) {
    const char *why = nread != UV_EOF ? uv_err_name((int)nread)
                      : c->state == SH_CONN_READING && c->parse.req ? "truncated request"
                                                                    : "client closed";
    sh_server_conn_close(c, why);
    return;
  }
  if (c->state != SH_CONN_READING) return; /* lingering: discard */
  sh_server_conn_consume(c, buf->base, (size_t)nread, NULL);
}

/* called from the timer heap: the connection's one timer fired; see SH_TIMER_* */
static void sh_server_conn_timer(sh_timer_t *t) {
  sh_server_conn_t *c = SH_CONTAINER(t, sh_server_conn_t, timer);
  int kind = c->timer_kind;
  c->timer_kind = SH_TIMER_NONE;
  if (!c->open) return;
  switch (kind) {
    case SH_TIMER_IDLE: sh_server_conn_close(c, "idle"); break;
    case SH_TIMER_HEADER:
      if (c->got_bytes) sh_server_conn_fail(c, 408);
      else sh_server_conn_close(c, "no request");
      break;
    case SH_TIMER_BODY: sh_server_conn_fail(c, 408); break;
    case SH_TIMER_WRITE: sh_server_conn_close(c, "client not reading"); break;
    case SH_TIMER_LINGER: sh_server_conn_close(c, "done"); break;
    case SH_TIMER_KICK: sh_server_conn_maybe_next(c); break;
    default: break;
  }
}

/* called by libuv for each new connection */
static void sh_server_accept(uv_stream_t *listener, int status) {
  sh_server_t *s = listener->data;
  if (status < 0) {
    sh_log_printf(SH_LOG_WARN, "http.serve %s: accept failed: %s", s->label, uv_strerror(status));
    return;
  }
  sh_server_conn_t *c = calloc(1, sizeof *c);
  if (!c) return; /* libuv calls again; the connection waits in the backlog */
  uv_tcp_init(listener->loop, &c->tcp);
  c->tcp.data = c;
  c->refs = 1;
  c->open = 1;
  c->server = s;
  c->sched = s->sched;
  c->id = ++s->next_conn_id;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  sh_timer_init(&c->timer, sh_server_conn_timer);
  sh_server_parse_init(&c->parse, s->body_limit, s->header_limit);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    sh_server_conn_close(c, "accept failed");
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage peer;
  int plen = sizeof peer;
  snprintf(c->remote, sizeof c->remote, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0) {
    if (peer.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&peer, c->remote, sizeof c->remote);
    else uv_ip4_name((struct sockaddr_in *)&peer, c->remote, sizeof c->remote);
  }
  SH_SERVER_DEBUG("http.serve %s: connection %lu from %s", s->label, c->id, c->remote);
  c->state = SH_CONN_READING;
  /* a new connection gets header_timeout for its first request (idle_timeout between requests) */
  sh_server_conn_arm(c, SH_TIMER_HEADER, s->header_timeout);
  sh_server_conn_read_start(c);
}

/* ---- the server object ---- */

/* Stop at once without waiting: no more connections, idle or half-received ones closed, busy
 * ones closed after their response (hard: also those). Releases the Lua refs (handler, anchor)
 * through L, which must be idle or the running thread. */
static void sh_server_stop(lua_State *L, sh_server_t *s, int hard) {
  if (!s->closing) {
    s->closing = 1;
    SH_SERVER_DEBUG("http.serve %s: closing (%zu connection(s) open)", s->label, s->nconns);
    uv_close((uv_handle_t *)&s->tcp, sh_server_listener_closed);
    luaL_unref(L, LUA_REGISTRYINDEX, s->handler_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->anchor_ref);
    s->handler_ref = s->anchor_ref = LUA_NOREF;
  }
  for (sh_server_conn_t *c = s->conns; c; c = c->next) {
    if (c->state == SH_CONN_READING || hard) sh_server_conn_close(c, "server closed");
    else if (c->state == SH_CONN_BUSY) c->keep_alive = 0;
  }
}

/* SIGINT/SIGTERM: every task is being cancelled; stop every server so the loop can end. */
static void sh_server_shutdown_hook(void *arg) {
  (void)arg;
  for (sh_server_t *s = sh_server_all; s; s = s->next) sh_server_stop(s->L, s, 1);
}

/* The server struct of a userdata; it lives as long as the userdata does. */
static sh_server_t *sh_check_server(lua_State *L, int idx) {
  sh_server_ud_t *ud = luaL_checkudata(L, idx, SH_SERVER_MT);
  if (!ud->srv) luaL_error(L, "server: the server is gone");
  return ud->srv;
}

/* The task in close() was cancelled: unlink and free its record; the drain goes on without it. */
static void sh_server_closer_abort(sh_wait_t *w) {
  sh_server_closer_t *cl = SH_CONTAINER(w, sh_server_closer_t, wait);
  sh_server_t *s = cl->server;
  if (cl->prev) cl->prev->next = cl->next;
  else s->closers = cl->next;
  if (cl->next) cl->next->prev = cl->prev;
  free(cl);
  sh_server_maybe_free(s);
}

/* the last connection closed; the closer record was freed by whoever woke this task */
static int sh_server_close_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* server:close(): stop now, and (inside a task) wait until every connection has closed */
static int sh_server_close(lua_State *L) {
  sh_server_t *s = sh_check_server(L, 1);
  sh_server_stop(L, s, 0);
  if (!s->listener_open && s->nconns == 0) return 0;
  if (!sh_sched_can_wait(L)) return 0; /* outside a task: the connections drain on their own */
  sh_server_closer_t *cl = calloc(1, sizeof *cl);
  if (!cl) return luaL_error(L, "server:close: out of memory");
  sh_sched_park(L, &cl->wait, sh_server_closer_abort, "server:close"); /* raises a pending cancel */
  cl->server = s;
  cl->next = s->closers;
  if (s->closers) s->closers->prev = cl;
  s->closers = cl;
  return sh_sched_yield(L, sh_server_close_k, 0);
}

/* __close: stop without waiting (it may run where a task cannot wait) */
static int sh_server_close_now(lua_State *L) {
  sh_server_ud_t *ud = luaL_checkudata(L, 1, SH_SERVER_MT);
  if (ud->srv) sh_server_stop(L, ud->srv, 0);
  return 0;
}

/* __gc: the userdata lets go; the struct is freed once its connections are closed */
static int sh_server_gc(lua_State *L) {
  sh_server_ud_t *ud = luaL_checkudata(L, 1, SH_SERVER_MT);
  sh_server_t *s = ud->srv;
  if (!s) return 0;
  ud->srv = NULL;
  sh_server_stop(L, s, 0);
  s->lua_alive = 0;
  sh_server_maybe_free(s);
  return 0;
}

static int sh_server_index(lua_State *L) {
  sh_server_t *s = sh_check_server(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "port") == 0) {
    lua_pushinteger(L, s->port);
    return 1;
  }
  if (strcmp(key, "host") == 0) {
    lua_pushstring(L, s->host);
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, key);
  return 1;
}

static int sh_server_tostring(lua_State *L) {
  sh_server_ud_t *ud = luaL_checkudata(L, 1, SH_SERVER_MT);
  if (!ud->srv) lua_pushliteral(L, "http server (gone)");
  else lua_pushfstring(L, "http server %s%s", ud->srv->label, ud->srv->closing ? " (closed)" : "");
  return 1;
}

/* ---- options ---- */

static double sh_server_opt_number(lua_State *L, const char *key, double def, double min, const char *what,
                                   const char *who) {
  lua_getfield(L, 1, key);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "%s: '%s' must be a number (got %s)", who, key, luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
    if (!(v >= min) || v > 1e15) luaL_error(L, "%s: '%s' must be %s (got %s)", who, key, what, lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  return v;
}

/* http.serve{host=, port=, handler=, body_limit=, header_limit=, header_timeout=, idle_timeout=,
 * body_timeout=} -> server */
static int sh_server_serve(lua_State *L) {
  const char *who = "http.serve";
  if (!lua_istable(L, 1))
    return luaL_error(L, "%s: expected a table of options, e.g. {port = 8080, handler = fn} (got %s)", who,
                      luaL_typename(L, 1));
  lua_settop(L, 1);
  lua_getfield(L, 1, "handler"); /* 2 */
  if (!lua_isfunction(L, 2))
    return luaL_error(L, "%s: 'handler' must be a function (got %s)", who, luaL_typename(L, 2));
  lua_getfield(L, 1, "host"); /* 3 */
  if (!lua_isnil(L, 3) && lua_type(L, 3) != LUA_TSTRING)
    return luaL_error(L, "%s: 'host' must be a string (got %s)", who, luaL_typename(L, 3));
  const char *host = lua_isnil(L, 3) ? "127.0.0.1" : lua_tostring(L, 3);
  lua_getfield(L, 1, "port"); /* 4 */
  if (!lua_isnil(L, 4) && !lua_isinteger(L, 4))
    return luaL_error(L, "%s: 'port' must be an integer (got %s)", who,
                      lua_type(L, 4) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, 4));
  lua_Integer port = lua_isnil(L, 4) ? 0 : lua_tointeger(L, 4);
  if (port < 0 || port > 65535) return luaL_error(L, "%s: 'port' must be between 0 and 65535", who);
  double body_limit = sh_server_opt_number(L, "body_limit", 1048576, 0, "a number of bytes >= 0", who);
  double header_limit = sh_server_opt_number(L, "header_limit", 65536, 1, "a number of bytes >= 1", who);
  double header_timeout = sh_server_opt_number(L, "header_timeout", 10, 0.001, "a number of seconds > 0", who);
  double idle_timeout = sh_server_opt_number(L, "idle_timeout", 30, 0.001, "a number of seconds > 0", who);
  double body_timeout = sh_server_opt_number(L, "body_timeout", 30, 0.001, "a number of seconds > 0", who);
  if (strlen(host) >= sizeof ((sh_server_t *)0)->host) return luaL_error(L, "%s: 'host' is too long", who);
  /* http-parser's own cap on raw header bytes (80 KiB, whitespace and line ends included) is
   * process-wide and only a backstop: raise it when a server allows more, never lower it */
  static double parser_cap = 80 * 1024;
  if (header_limit * 2 + 8192 > parser_cap) {
    parser_cap = header_limit * 2 + 8192 > UINT32_MAX ? UINT32_MAX : header_limit * 2 + 8192;
    http_parser_set_max_header_size((uint32_t)parser_cap);
  }

  char label[80];
  snprintf(label, sizeof label, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, (int)port);
  struct sockaddr_storage addr;
  const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
  if (uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)&addr) != 0)
    return luaL_error(L, "%s: cannot listen on %s: not an IP address (give one such as 127.0.0.1)", who, label);

  sh_server_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, 0); /* 5 */
  ud->srv = NULL;
  luaL_setmetatable(L, SH_SERVER_MT);
  sh_server_t *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "%s: out of memory", who);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  s->sched = sh_sched_get(L);
  s->handler_ref = s->anchor_ref = LUA_NOREF;
  s->body_limit = (size_t)body_limit;
  s->header_limit = (size_t)header_limit;
  s->header_timeout = header_timeout;
  s->idle_timeout = idle_timeout;
  s->body_timeout = body_timeout;
  snprintf(s->host, sizeof s->host, "%s", host);
  s->next = sh_server_all;
  if (sh_server_all) sh_server_all->prev = s;
  sh_server_all = s;
  uv_tcp_init(sh_sched_loop(L), &s->tcp);
  s->tcp.data = s;
  s->listener_open = 1;
  int rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 511, sh_server_accept);
  if (rc != 0) {
    s->closing = 1;
    uv_close((uv_handle_t *)&s->tcp, sh_server_listener_closed); /* frees s */
    return luaL_error(L, "%s: cannot listen on %s: %s", who, label, uv_strerror(rc));
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  s->port = (int)port;
  if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &blen) == 0)
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
  snprintf(s->label, sizeof s->label, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, s->port);
  lua_pushvalue(L, 2);
  s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 5);
  s->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* a listening server runs on, held or not */
  s->lua_alive = 1;
  ud->srv = s;
  if (!sh_server_hook_installed) {
    sh_server_hook_installed = 1;
    sh_sched_on_shutdown(s->sched, sh_server_shutdown_hook, NULL);
  }
  SH_SERVER_DEBUG("http.serve %s: listening", s->label);
  return 1;
}

/* ---- streams ---- */

static sh_server_stream_t *sh_check_stream(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, SH_SERVER_STREAM_MT);
}

/* req:stream{status=, headers=} -> stream: send the head now; the body follows in chunks */
static int sh_server_req_stream(lua_State *L) {
  const char *who = "req:stream";
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
    return luaL_error(L, "%s: expected a table of options {status =, headers =} (got %s)", who, luaL_typename(L, 2));
  lua_settop(L, 2);
  lua_getfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2); /* 4: the stream userdata */
  sh_server_stream_t *x = luaL_testudata(L, 4, SH_SERVER_STREAM_MT);
  if (!x) return luaL_error(L, "%s: not a request of http.serve", who);
  sh_server_conn_t *c = x->conn;
  if (!c || !c->open) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: the connection is closed", who);
    lua_pushliteral(L, "ECONNRESET");
    return 3;
  }
  if (!sh_server_exchange(x) || c->streaming || c->responded)
    return luaL_error(L, "%s: the response to this request was already started", who);
  int status = 200, hidx = 0;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "status"); /* 5 */
    status = sh_server_status(L, 5, who);
    lua_getfield(L, 2, "headers"); /* 6 */
    if (!lua_isnil(L, 6) && !lua_istable(L, 6))
      return luaL_error(L, "%s: headers must be a table (got %s)", who, luaL_typename(L, 6));
    if (lua_istable(L, 6)) hidx = 6;
  }
  int bodyless = c->req_head || status == 204 || status == 304;
  int frame = bodyless ? SH_FRAME_NONE : c->req_minor >= 1 ? SH_FRAME_CHUNKED : SH_FRAME_CLOSE;
  sh_server_push_head(L, c, status, hidx, NULL, frame, 0, who);
  size_t hl;
  const char *head = lua_tolstring(L, -1, &hl);
  c->streaming = 1;
  c->frame = frame;
  uv_buf_t part = uv_buf_init((char *)head, (unsigned)hl);
  sh_server_conn_send(c, &part, 1);
  lua_pushvalue(L, 4);
  return 1;
}

/* The writer was cancelled: the write still completes (or is cancelled by a close) on its own,
 * and its callback frees it since no task waits on it any more. */
static void sh_server_write_abort(sh_wait_t *w) { (void)w; }

/* Inside the writer's task after the write's callback woke it: the write is ours to free now. */
static int sh_server_stream_write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  sh_server_write_t *w = (sh_server_write_t *)ctx;
  int rc = w->status;
  free(w);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "stream:write: %s", uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* stream:write(data) -> true, or nil, message, code once the client is gone; waits until
 * libuv has written the chunk, so a slow client slows its writer down */
static int sh_server_stream_write(lua_State *L) {
  sh_server_stream_t *x = sh_check_stream(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  sh_server_conn_t *c = x->conn;
  if (!c || !c->open) {
    lua_pushnil(L);
    lua_pushliteral(L, "stream:write: the connection is closed");
    lua_pushliteral(L, "ECONNRESET");
    return 3;
  }
  if (!sh_server_exchange(x) || !c->streaming || c->responded)
    return luaL_error(L, "stream:write: the stream is closed");
  if (len == 0 || c->frame == SH_FRAME_NONE) { /* an empty chunk would end the body */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!sh_sched_can_wait(L)) return luaL_error(L, "stream:write: cannot wait here (only inside a stagehost task)");
  sh_sched_check(L, "stream:write");
  char size[32];
  int sl = c->frame == SH_FRAME_CHUNKED ? snprintf(size, sizeof size, "%zx\r\n", len) : 0;
  uv_buf_t parts[3] = {uv_buf_init(size, (unsigned)sl), uv_buf_init((char *)data, 0),
                       uv_buf_init("\r\n", c->frame == SH_FRAME_CHUNKED ? 2 : 0)};
  parts[1].len = len;
  sh_server_write_t *w = sh_server_conn_send(c, parts, 3);
  if (!w) {
    lua_pushnil(L);
    lua_pushliteral(L, "stream:write: the connection is closed");
    lua_pushliteral(L, "ECONNRESET");
    return 3;
  }
  sh_sched_park(L, &w->wait, sh_server_write_abort, "stream:write");
  return sh_sched_yield(L, sh_server_stream_write_k, (lua_KContext)w);
}

/* stream:close(): the last chunk; idempotent, never waits (also __close) */
static int sh_server_stream_close(lua_State *L) {
  sh_server_stream_t *x = sh_check_stream(L, 1);
  sh_server_conn_t *c = sh_server_exchange(x);
  if (!c || !c->streaming || c->responded) return 0;
  uv_buf_t last = uv_buf_init("0\r\n\r\n", c->frame == SH_FRAME_CHUNKED ? 5 : 0);
  sh_server_conn_respond(c, &last, 1);
  return 0;
}

/* __gc: drop the connection reference; the connection is freed with its last one. If its
 * request was never answered, nothing can answer it any more (its task is gone): close. */
static int sh_server_stream_gc(lua_State *L) {
  sh_server_stream_t *x = sh_check_stream(L, 1);
  sh_server_conn_t *c = sh_server_exchange(x);
  if (c && !c->responded) sh_server_conn_close(c, "request abandoned");
  if (x->conn) sh_server_conn_unref(x->conn);
  x->conn = NULL;
  return 0;
}

/* __gc of a registry sentinel, so it runs only in lua_close: close every server and connection
 * now, since no callback may reach Lua or the scheduler once they are gone. */
static int sh_server_state_closing(lua_State *L) {
  for (sh_server_t *s = sh_server_all; s; s = s->next) sh_server_stop(L, s, 1);
  return 0;
}

static const luaL_Reg sh_server_methods[] = {
    {"close", sh_server_close},
    {NULL, NULL},
};

static const luaL_Reg sh_server_stream_methods[] = {
    {"write", sh_server_stream_write},
    {"close", sh_server_stream_close},
    {NULL, NULL},
};

static const luaL_Reg sh_server_request_methods[] = {
    {"stream", sh_server_req_stream},
    {NULL, NULL},
};

static const luaL_Reg sh_server_funcs[] = {
    {"serve", sh_server_serve},
    {NULL, NULL},
};

int luaopen_stagehost_core_http_server(lua_State *L);
int luaopen_stagehost_core_http_server(lua_State *L) {
  if (luaL_newmetatable(L, SH_SERVER_MT)) {
    luaL_newlib(L, sh_server_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, sh_server_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sh_server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sh_server_close_now);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, sh_server_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SH_SERVER_STREAM_MT)) {
    luaL_newlib(L, sh_server_stream_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sh_server_stream_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sh_server_stream_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SH_SERVER_REQUEST_MT)) {
    luaL_newlib(L, sh_server_request_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES) != LUA_TTABLE) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "stagehost.http.server.sentinel") != LUA_TUSERDATA) {
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, sh_server_state_closing);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "stagehost.http.server.sentinel");
  }
  lua_pop(L, 1);
  luaL_newlib(L, sh_server_funcs);
  return 1;
}

#endif /* SH_HTTP_SERVER_FUZZ */
