/* http.serve's connections: accept, read, parse (bindings/http_request.c), write, the slow-client
 * timers and every lifetime, on libuv alone. A complete request goes to the Lua face
 * (sh_server_start_handler in bindings/http_server.c); a response comes back as bytes to send. A
 * connection stops reading while one of its requests is handled and resumes once the response
 * is written, so pipelined requests are answered in order and a slow handler or client holds up
 * nobody else. Nothing here raises. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../host/util.h"
#include "http_server.h"

#define SH_SERVER_LINGER_SECONDS 2.0 /* after a last response: wait this long for the client's EOF */
#define SH_SERVER_READ_CHUNK (64 * 1024)

static int sh_server_conn_consume(sh_server_conn_t *c, const char *data, size_t len, char *owned);
static void sh_server_conn_maybe_next(sh_server_conn_t *c);
static void sh_server_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* The struct goes once nothing can reach it: no userdata, no listener, no connection, no
 * task waiting in close(). */
void sh_server_maybe_free(sh_server_t *s) {
  if (s->lua_alive || s->listener_open || s->nconns > 0 || s->closers) return;
  sh_server_state_t *st = s->state;
  if (s->prev) s->prev->next = s->next;
  else st->all = s->next;
  if (s->next) s->next->prev = s->prev;
  SH_SERVER_DEBUG("http.serve %s: freed", s->label);
  free(s);
  if (!st->lua_alive && !st->all) free(st);
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
void sh_server_listener_closed(uv_handle_t *h) {
  sh_server_t *s = h->data;
  s->listener_open = 0;
  sh_server_check_drained(s);
}

/* The handle and every stream userdata hold one reference; the last one frees the memory. */
void sh_server_conn_unref(sh_server_conn_t *c) {
  if (--c->refs > 0) return;
  sh_http_parse_free(&c->parse);
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
void sh_server_conn_close(sh_server_conn_t *c, const char *why) {
  if (!c->open) return;
  c->open = 0;
  c->reading = 0;
  sh_server_conn_disarm(c);
  SH_SERVER_DEBUG("http.serve %s: connection %lu closed (%s)", c->server ? c->server->label : "?", c->id, why);
  free(c->pending);
  c->pending = NULL;
  c->pending_off = c->pending_len = 0;
  sh_http_parse_free(&c->parse);
  uv_close((uv_handle_t *)&c->tcp, sh_server_conn_closed);
}

/* called by libuv before each read; reads are consumed at once, so one buffer serves all */
static void sh_server_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char chunk[SH_SERVER_READ_CHUNK];
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(chunk, sizeof chunk);
}

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
  sh_await_done(&w->await, status);
}

/* Queue the concatenation of parts as one write. On failure the connection is closed and NULL
 * returned; nothing raises. */
sh_server_write_t *sh_server_conn_send(sh_server_conn_t *c, const uv_buf_t *parts, int nparts) {
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
void sh_server_conn_respond(sh_server_conn_t *c, const uv_buf_t *parts, int nparts) {
  c->responded = 1;
  size_t len = 0;
  for (int i = 0; i < nparts; i++) len += parts[i].len;
  if (len > 0) {
    sh_server_conn_send(c, parts, nparts);
  } else if (c->open && c->writes == 0) {
    sh_server_conn_arm(c, SH_TIMER_KICK, 0);
  }
}

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

/* A request is complete: stop reading (later bytes wait in pending), and hand it to a new task.
 * Called from libuv callbacks only, where the main state is idle. */
static void sh_server_conn_dispatch(sh_server_conn_t *c) {
  sh_http_request_t *r = sh_http_parse_take(&c->parse);
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
    sh_http_request_free(r);
    sh_server_conn_simple(c, 503, 1);
    return;
  }
  SH_SERVER_DEBUG("http.serve %s: connection %lu: %s %.*s", s->label, c->id,
                  http_method_str((enum http_method)r->method), (int)(r->url.len > 200 ? 200 : r->url.len),
                  r->url.data ? r->url.data : "");
  sh_server_start_handler(c, r);
  sh_http_request_free(r);
}

const char *sh_server_reason(int status) {
  const char *r = http_status_str((enum http_status)status);
  return strcmp(r, "<unknown>") == 0 ? "" : r;
}

/* "Date: ...\r\n" (RFC 9110 section 6.6.1: an origin server with a clock sends it), formatted
 * once a second. */
const char *sh_server_date_line(void) {
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
void sh_server_conn_simple(sh_server_conn_t *c, int status, int close_after) {
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
  size_t used = sh_http_parse_feed(&c->parse, data, len);
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
void sh_server_accept(uv_stream_t *listener, int status) {
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
  sh_http_parse_init(&c->parse, s->body_limit, s->header_limit);
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
