/* stagehost.core.http_client: HTTP requests on libcurl's multi-socket API, driven by the uv
 * loop as curl's docs/examples/multi-uv.c does: one uv_poll_t per socket curl names, one
 * uv_timer_t for curl's timeout. One multi handle per Lua state, so connections (and TLS
 * sessions, DNS answers) are reused across requests and tasks. Retries, JSON bodies and the
 * public API are Lua (stdlib/stagehost/http.lua). */
#define _GNU_SOURCE /* O_CLOEXEC, strndup */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <uv.h>

#include "../host/log.h"
#include "../host/sched.h"
#include "../host/util.h"
#include "auxlib.h"
#include "curl_module.h"

#define SH_HTTP_KEY "stagehost.http_client.multi"
#define SH_HTTP_MAX_BODY (64.0 * 1024 * 1024) /* max_body's default */

typedef struct sh_http sh_http_t;

/* A socket curl asked us to watch. Freed in the poll handle's close callback. */
typedef struct sh_http_sock {
  uv_poll_t poll;
  curl_socket_t fd;
  int events;                /* what the poll watches now; 0 before the first start or once
                                libuv stopped it on a socket error */
  int want;                  /* what curl asked to watch last */
  sh_http_t *http;
  struct sh_http_sock *prev, *next;
} sh_http_sock_t;

struct sh_http {
  CURLM *multi;
  uv_loop_t *loop;
  uv_timer_t timer;          /* curl's timeout */
  int in_flight;             /* transfers added and not yet done: handles are ref'd while > 0 */
  sh_http_sock_t *socks;     /* every watched socket, to (un)ref them with in_flight */
};

/* One transfer. Owned by the request until done; freed by the continuation, or by the abort
 * if the task was cancelled first. */
typedef struct {
  sh_wait_t wait;
  sh_http_t *http;
  CURL *easy;
  struct curl_slist *headers;
  sh_buf_t body, head;       /* response body (unless output) and raw header lines */
  char *method, *url;        /* url as messages show it: credentials as *** */
  char *out_path, *out_tmp;  /* output = path: written to out_tmp, renamed when complete */
  int out_fd, in_fd;
  int write_failed;
  int over_limit;            /* the body grew past limit: aborted, reported as EBODYLIMIT */
  uint64_t limit, received;  /* decoded body bytes allowed (max_body or max_output) and got */
  CURLcode result;
  uint64_t started;
  char errbuf[CURL_ERROR_SIZE];
} sh_http_req_t;

/* url with the credentials of scheme://user:password@host shown as *** (a malloc'd string, NULL
 * when out of memory): every message and log line names the URL so, never as given. */
static char *sh_http_redacted(const char *url) {
  const char *auth = strstr(url, "://"), *at = NULL;
  if (auth) {
    auth += 3;
    for (const char *p = auth; *p && !strchr("/?#", *p); p++)
      if (*p == '@') at = p;
  }
  if (!at) return strdup(url);
  size_t head = (size_t)(auth - url), n = head + 3 + strlen(at) + 1;
  char *out = malloc(n);
  if (out) snprintf(out, n, "%.*s***%s", (int)head, url, at);
  return out;
}

/* Push url redacted as above. */
static const char *sh_http_push_redacted(lua_State *L, const char *url) {
  char *shown = sh_http_redacted(url);
  if (!shown) luaL_error(L, "http.request: out of memory");
  lua_pushstring(L, shown);
  free(shown);
  return lua_tostring(L, -1);
}

/* ---- the multi handle on the loop ---- */

/* While no transfer is in flight, neither the timer nor an idle cached connection's socket may
 * keep the loop (and so the script) alive. */
static void sh_http_set_refs(sh_http_t *h) {
  void (*set)(uv_handle_t *) = h->in_flight > 0 ? uv_ref : uv_unref;
  set((uv_handle_t *)&h->timer);
  for (sh_http_sock_t *s = h->socks; s; s = s->next) set((uv_handle_t *)&s->poll);
}

static void sh_http_sock_closed(uv_handle_t *handle) { free(handle->data); }

static void sh_http_check_done(sh_http_t *h);
static void sh_http_poll_cb(uv_poll_t *poll, int status, int events);

/* Watch what curl asked for, unless the poll already does. */
static void sh_http_sock_watch(sh_http_sock_t *s) {
  if (s->want == s->events || uv_is_closing((uv_handle_t *)&s->poll)) return;
  /* libuv 1.44 re-registers the fd with epoll on every start: only when it changes */
  if (s->want == 0) uv_poll_stop(&s->poll);
  else uv_poll_start(&s->poll, s->want, sh_http_poll_cb);
  s->events = s->want;
}

/* called by libuv when a socket curl watches is ready, or has an error pending */
static void sh_http_poll_cb(uv_poll_t *poll, int status, int events) {
  sh_http_sock_t *s = poll->data;
  sh_http_t *h = s->http;
  int flags = 0;
  if (status < 0) {
    /* A reset (POLLERR: libuv has stopped the poll and says UV_EBADF). Handed on as
     * CURL_CSELECT_ERR, curl fails the transfer at once ("select/poll returned error"): a server
     * that closes a kept-alive connection as the next request arrives failed half of 300
     * requests so. Told "ready", curl reads the reset itself and, as its own event loop does,
     * retries a request on a reused connection that died before any answer. */
    s->events = 0;
    if (s->want & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (s->want & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running;
  curl_multi_socket_action(h->multi, s->fd, flags, &running);
  /* s is still memory here (a REMOVE only starts its close): restart the poll libuv stopped if
   * curl still watches the socket */
  sh_http_sock_watch(s);
  sh_http_check_done(h);
}

/* called by libuv when curl's timeout expires */
static void sh_http_timer_cb(uv_timer_t *timer) {
  sh_http_t *h = timer->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  sh_http_check_done(h);
}

/* called by libcurl when the timeout it needs changes */
static int sh_http_timer_fn(CURLM *multi, long timeout_ms, void *userp) {
  sh_http_t *h = userp;
  (void)multi;
  /* 0 means "as soon as possible": a 0 ms libuv timer runs on the next loop iteration without
   * blocking in the poll. (Rounding it up to 1 ms, as curl's libuv example does, delays the
   * start of every new transfer by a millisecond: with 32 in flight that alone caps a client
   * near 32,000 requests a second.) The call cannot be made from here: curl forbids it inside
   * this callback. */
  if (timeout_ms < 0) uv_timer_stop(&h->timer);
  else uv_timer_start(&h->timer, sh_http_timer_cb, (uint64_t)timeout_ms, 0);
  return 0;
}

/* called by libcurl to start, change or stop watching a socket */
static int sh_http_socket_fn(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp) {
  sh_http_t *h = userp;
  sh_http_sock_t *s = socketp;
  (void)easy;
  if (action == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(h->multi, fd, NULL);
      if (s->prev) s->prev->next = s->next;
      else h->socks = s->next;
      if (s->next) s->next->prev = s->prev;
      uv_poll_stop(&s->poll); /* stops at once, so curl may reuse the fd number right away */
      uv_close((uv_handle_t *)&s->poll, sh_http_sock_closed);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -1;
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    s->fd = fd;
    s->http = h;
    s->next = h->socks;
    if (h->socks) h->socks->prev = s;
    h->socks = s;
    if (h->in_flight == 0) uv_unref((uv_handle_t *)&s->poll);
    curl_multi_assign(h->multi, fd, s);
  }
  s->want = 0;
  if (action & CURL_POLL_IN) s->want |= UV_READABLE;
  if (action & CURL_POLL_OUT) s->want |= UV_WRITABLE;
  sh_http_sock_watch(s);
  return 0;
}

static void sh_http_finish_output(sh_http_req_t *r, int keep) {
  if (r->out_fd < 0) return;
  close(r->out_fd);
  r->out_fd = -1;
  if (keep && rename(r->out_tmp, r->out_path) == 0) return;
  unlink(r->out_tmp);
}

/* Read every finished transfer. Called after each curl_multi_socket_action, whichever path
 * called it (curl's own example misses transfers that end in the timer path). */
static void sh_http_check_done(sh_http_t *h) {
  CURLMsg *msg;
  int pending;
  while ((msg = curl_multi_info_read(h->multi, &pending)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode result = msg->data.result;
    sh_http_req_t *r = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    curl_multi_remove_handle(h->multi, easy); /* msg is invalid from here on */
    h->in_flight--;
    sh_http_set_refs(h);
    if (!r) continue;
    r->result = result == CURLE_OK && (r->write_failed || r->over_limit) ? CURLE_WRITE_ERROR : result;
    sh_http_finish_output(r, r->result == CURLE_OK);
    sh_log_printf(SH_LOG_DEBUG, "http %s %s: done (%s)", r->method, r->url, curl_easy_strerror(r->result));
    sh_sched_wake(&r->wait);
  }
}

static void sh_http_timer_closed(uv_handle_t *handle) {
  sh_http_t *h = handle->data;
  free(h);
}

/* sh_sched_state's release, as Lua closes: no transfer is in flight (the scheduler aborted
 * every wait first). */
static void sh_http_release(lua_State *L, void *arg) {
  sh_http_t *h = arg;
  (void)L;
  curl_multi_cleanup(h->multi); /* closes cached connections: REMOVE callbacks close the polls */
  uv_close((uv_handle_t *)&h->timer, sh_http_timer_closed);
}

/* sh_sched_state's create: one multi handle per Lua state, so connections are reused */
static void *sh_http_create(lua_State *L) {
  sh_http_t *h = calloc(1, sizeof *h);
  if (!h) luaL_error(L, "http: out of memory");
  h->loop = sh_sched_loop(L);
  h->multi = curl_multi_init();
  if (!h->multi) {
    free(h);
    luaL_error(L, "http: cannot create a curl multi handle");
  }
  uv_timer_init(h->loop, &h->timer);
  h->timer.data = h;
  uv_unref((uv_handle_t *)&h->timer);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sh_http_socket_fn);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, sh_http_timer_fn);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  /* curl's default cache (4 x the transfers running) shrinks when a burst of transfers ends
   * before their tasks start the next ones, and every connection dropped is a new handshake */
  curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 256L);
  return h;
}

static sh_http_t *sh_http_get(lua_State *L) {
  return sh_sched_state(L, SH_HTTP_KEY, sh_http_create, sh_http_release);
}

/* ---- one request ---- */

static void sh_http_req_free(sh_http_req_t *r) {
  if (r->easy) curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  sh_http_finish_output(r, 0);
  if (r->in_fd >= 0) close(r->in_fd);
  sh_buf_free(&r->body);
  sh_buf_free(&r->head);
  free(r->method);
  free(r->url);
  free(r->out_path);
  free(r->out_tmp);
  free(r);
}

/* called by libcurl with body bytes, decoded (gzip, br, zstd, deflate): the limit counts what
 * the caller would get, so 500 KB of gzip cannot become 500 MB in memory */
static size_t sh_http_write_fn(char *data, size_t size, size_t n, void *userp) {
  sh_http_req_t *r = userp;
  size_t len = size * n;
  if (len > r->limit - r->received) {
    r->over_limit = 1;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  r->received += len;
  if (r->out_fd >= 0) {
    size_t off = 0;
    while (off < len) {
      ssize_t w = write(r->out_fd, data + off, len - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        r->write_failed = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
      }
      off += (size_t)w;
    }
    return len;
  }
  return sh_buf_add(&r->body, data, len) == 0 ? len : 0;
}

/* called by libcurl with each header line; a new status line (a redirect, 100 Continue)
 * starts the header set over */
static size_t sh_http_header_fn(char *data, size_t size, size_t n, void *userp) {
  sh_http_req_t *r = userp;
  size_t len = size * n;
  if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) r->head.len = 0;
  return sh_buf_add(&r->head, data, len) == 0 ? len : 0;
}

/* called by libcurl for the next piece of a body read from a file */
static size_t sh_http_read_fn(char *buf, size_t size, size_t n, void *userp) {
  sh_http_req_t *r = userp;
  for (;;) {
    ssize_t got = read(r->in_fd, buf, size * n);
    if (got >= 0) return (size_t)got;
    if (errno != EINTR) return CURL_READFUNC_ABORT;
  }
}

static void sh_http_abort(sh_wait_t *w) {
  sh_http_req_t *r = SH_CONTAINER(w, sh_http_req_t, wait);
  sh_log_printf(SH_LOG_DEBUG, "http %s %s: aborted", r->method, r->url);
  curl_multi_remove_handle(r->http->multi, r->easy);
  r->http->in_flight--;
  sh_http_set_refs(r->http);
  sh_http_req_free(r);
}

/* A transport failure as a kind the Lua layer decides on (retry or not: retry.TRANSIENT_KINDS
 * of stdlib/stagehost/util/retry.lua) and as the error object's code, an errno-like name:
 *   timeout ETIMEDOUT, refused ECONNREFUSED, resolve ENOTFOUND, tls TLS, read and write EIO
 *   (the body file or the output file), redirects EREDIRECTS, anything else ETRANSPORT. */
static void sh_http_failure_kind(CURLcode rc, const char **kind, const char **code) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: *kind = "timeout", *code = "ETIMEDOUT"; return;
    case CURLE_COULDNT_CONNECT: *kind = "refused", *code = "ECONNREFUSED"; return;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: *kind = "resolve", *code = "ENOTFOUND"; return;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE: *kind = "tls", *code = "TLS"; return;
    case CURLE_WRITE_ERROR: *kind = "write", *code = "EIO"; return;
    case CURLE_READ_ERROR: *kind = "read", *code = "EIO"; return;
    case CURLE_TOO_MANY_REDIRECTS: *kind = "redirects", *code = "EREDIRECTS"; return;
    default: *kind = "transport", *code = "ETRANSPORT"; return;
  }
}

/* The failure result: nil, an error object {kind = "transport", code, message, url, method,
 * reason} (bindings/auxlib.h), and the kind above. */
static int sh_http_push_failure(lua_State *L, sh_http_req_t *r) {
  const char *kind, *code;
  sh_http_failure_kind(r->result, &kind, &code);
  int base = lua_gettop(L);
  const char *reason = r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result);
  if (r->over_limit) { /* not a transient kind: the same answer would only be refused again */
    const char *opt = r->out_path ? "max_output" : "max_body";
    kind = "limit";
    code = "EBODYLIMIT";
    reason = lua_pushfstring(L, "the response body is larger than %s (%I bytes): raise %s%s", opt,
                             (lua_Integer)r->limit, opt, r->out_path ? "" : " or write it to a file with output = PATH");
  }
  const char *url = lua_pushstring(L, r->url);
  lua_pushfstring(L, "http.request: %s %s failed: %s", r->method, url, reason);
  sh_error_push(L, "transport", code, lua_tostring(L, -1));
  sh_setfield_value(L, "url", -3);
  sh_setfield_string(L, "method", r->method);
  sh_setfield_string(L, "reason", reason);
  if (r->over_limit) sh_setfield_integer(L, "limit", (lua_Integer)r->limit);
  lua_replace(L, base + 1); /* e ... */
  lua_settop(L, base + 1);
  lua_pushnil(L);
  lua_insert(L, base + 1);  /* nil e */
  lua_pushstring(L, kind);  /* nil e kind */
  return 3;
}

static void sh_http_push_headers(lua_State *L, sh_http_req_t *r) {
  lua_newtable(L);
  char *p = r->head.data, *end = p ? p + r->head.len : NULL;
  while (p && p < end) {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    char *line_end = eol ? eol : end;
    char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon && strncmp(p, "HTTP/", 5) != 0) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (char *c = p; c < colon; c++) luaL_addchar(&b, (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
      luaL_pushresult(&b); /* name */
      char *v = colon + 1, *ve = line_end;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated header: join as HTTP allows */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = line_end + 1;
  }
}

static int sh_http_result(lua_State *L, sh_http_req_t *r) {
  if (r->result != CURLE_OK) {
    sh_http_push_failure(L, r);
    sh_http_req_free(r);
    return 3;
  }
  long status = 0;
  char *effective = NULL;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &effective);
  lua_createtable(L, 0, 5);
  sh_setfield_integer(L, "status", status);
  sh_http_push_headers(L, r);
  lua_setfield(L, -2, "headers");
  if (!r->out_path) sh_setfield_lstring(L, "body", r->body.data ? r->body.data : "", r->body.len);
  sh_setfield_string(L, "url", effective ? effective : r->url);
  sh_setfield_number(L, "duration", (double)(uv_hrtime() - r->started) / 1e9);
  sh_http_req_free(r);
  return 1;
}

static int sh_http_request_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return sh_http_result(L, (sh_http_req_t *)ctx);
}

static double sh_http_opt_nonneg(lua_State *L, const char *key, double def) {
  double v = sh_opt_number(L, 1, key, def, "http.request");
  if (!(v >= 0)) sh_opt_rangeerror(L, 1, key, "a number >= 0", "http.request");
  return v;
}

/* A byte limit option: math.huge or anything past 2^53 is no limit. */
static uint64_t sh_http_opt_limit(lua_State *L, const char *key, double def) {
  double v = sh_http_opt_nonneg(L, key, def);
  return v >= 9007199254740992.0 ? UINT64_MAX : (uint64_t)v;
}

static int sh_http_has_header(lua_State *L, int idx, const char *lower_name) {
  if (!idx) return 0;
  int found = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING && strcasecmp(lua_tostring(L, -2), lower_name) == 0) found = 1;
    lua_pop(L, 1);
  }
  return found;
}

/* Check the URL with curl's own parser, so what we accept is what curl will fetch. */
static void sh_http_check_url(lua_State *L, const char *url) {
  CURLU *u = curl_url();
  CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
  char *scheme = NULL;
  if (rc == CURLUE_OK) curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  int ok = rc == CURLUE_OK && scheme && (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0);
  curl_free(scheme);
  curl_url_cleanup(u);
  if (rc != CURLUE_OK || !ok) url = sh_http_push_redacted(L, url);
  if (rc != CURLUE_OK) sh_argerror(L, 1, "http.request", "malformed URL '%s': %s", url, curl_url_strerror(rc));
  if (!ok) sh_argerror(L, 1, "http.request", "URL '%s' is not http:// or https://", url);
}

/* core.request{method=, url=, headers={}, body=, body_file=, output=, timeout=,
 *              connect_timeout=, follow=, max_redirects=, insecure=, max_body=, max_output=}
 *   -> {status, headers, body, url, duration} | nil, error object, kind (sh_http_push_failure)
 * max_body bounds a body held in memory (default 64 MiB), max_output one written to output
 * (default none: a download to a file is what output is for); both count decoded bytes. */
static int sh_http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  const char *who = "http.request";
  const char *url = sh_opt_string(L, 1, "url", who);
  if (!url) return sh_opt_error(L, 1, who, "url", "is required");
  const char *method = sh_opt_string(L, 1, "method", who);
  const char *output = sh_opt_string(L, 1, "output", who);
  const char *body_file = sh_opt_string(L, 1, "body_file", who);
  double timeout = sh_http_opt_nonneg(L, "timeout", 0);
  double connect_timeout = sh_http_opt_nonneg(L, "connect_timeout", 30);
  double max_redirects = sh_http_opt_nonneg(L, "max_redirects", 10);
  uint64_t max_body = sh_http_opt_limit(L, "max_body", SH_HTTP_MAX_BODY);
  uint64_t max_output = sh_http_opt_limit(L, "max_output", HUGE_VAL);
  lua_getfield(L, 1, "follow");
  int follow = lua_toboolean(L, -1);
  lua_getfield(L, 1, "insecure");
  int insecure = lua_toboolean(L, -1);
  lua_pop(L, 2);
  size_t body_len = 0;
  const char *body = sh_opt_lstring(L, 1, "body", &body_len, who);
  int headers_idx = sh_opt_table(L, 1, "headers", who) ? lua_gettop(L) : 0;
  if (body && body_file) return sh_argerror(L, 1, who, "give either body or body_file, not both");
  sh_http_check_url(L, url);
  if (!method) method = body || body_file ? "POST" : "GET";
  for (const char *c = method; *c; c++)
    if (!(*c >= 'A' && *c <= 'Z')) return sh_argerror(L, 1, who, "method '%s' must be upper-case letters", method);
  /* header lines are checked and formatted as Lua strings before the request holds any C
   * memory, so a bad header, or running out of memory, raises cleanly */
  lua_newtable(L);
  int lines_idx = lua_gettop(L), nlines = 0;
  if (headers_idx) {
    lua_pushnil(L);
    while (lua_next(L, headers_idx)) {
      if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
        return sh_opt_error(L, 1, who, "headers", "must map names to strings (bad entry %s = %s)",
                            luaL_tolstring(L, -2, NULL), luaL_typename(L, -2));
      const char *name = lua_tostring(L, -2), *v = lua_tostring(L, -1);
      if (strpbrk(name, "\r\n:") || strpbrk(v, "\r\n"))
        return sh_argerror(L, 1, who, "header '%s' has a line break or a colon in it", name);
      /* curl takes "Name:" or "Name: " (nothing but blanks after the colon) as "do not send
       * Name"; its documented "Name;" form sends the header with an empty value, which is what
       * the caller asked for and what aws.sign signs ("name:"). That form cannot carry a name
       * with a ';' in it. */
      if (v[strspn(v, " \t")] == '\0') {
        if (strchr(name, ';')) return sh_argerror(L, 1, who, "header '%s' has a ';' in its name", name);
        lua_pushfstring(L, "%s;", name);
      } else {
        lua_pushfstring(L, "%s: %s", name, v);
      }
      lua_rawseti(L, lines_idx, ++nlines);
      lua_pop(L, 1);
    }
  }
  sh_sched_check_wait(L, who); /* before anything is allocated for the transfer */

  sh_http_t *h = sh_http_get(L);
  sh_http_req_t *r = calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "http.request: out of memory");
  r->out_fd = r->in_fd = -1;
  r->http = h;
  r->limit = output ? max_output : max_body;
  r->method = strdup(method);
  r->url = sh_http_redacted(url);
  r->easy = curl_easy_init();
  if (!r->easy || !r->method || !r->url) {
    sh_http_req_free(r);
    return luaL_error(L, "http.request: out of memory");
  }
  for (int i = 1; i <= nlines; i++) {
    lua_rawgeti(L, lines_idx, i);
    struct curl_slist *more = curl_slist_append(r->headers, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!more) {
      sh_http_req_free(r);
      return luaL_error(L, "http.request: out of memory");
    }
    r->headers = more;
  }
  if (output) {
    size_t n = strlen(output) + 32;
    r->out_path = strdup(output);
    r->out_tmp = malloc(n);
    if (r->out_tmp) snprintf(r->out_tmp, n, "%s.part.%d", output, (int)getpid());
    if (r->out_tmp) r->out_fd = open(r->out_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (r->out_fd < 0) {
      int e = errno;
      sh_http_req_free(r);
      return luaL_error(L, "http.request: cannot write output file '%s': %s", output, strerror(e));
    }
  }
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_USERAGENT, "stagehost/" STAGEHOST_VERSION);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sh_http_write_fn);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, sh_http_header_fn);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
  if (timeout > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
  if (follow) {
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)max_redirects);
  }
  if (insecure) {
    sh_log_printf(SH_LOG_WARN, "http.request: TLS verification is off for %s (insecure = true)", r->url);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  else if (strcmp(method, "GET") != 0 || body || body_file) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    /* curl would label any body form-urlencoded; send a type only when the caller gave one */
    if (!sh_http_has_header(L, headers_idx, "content-type"))
      r->headers = curl_slist_append(r->headers, "Content-Type:");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
  } else if (body_file) {
    struct stat st;
    r->in_fd = open(body_file, O_RDONLY | O_CLOEXEC);
    if (r->in_fd < 0 || fstat(r->in_fd, &st) != 0) {
      int err = errno;
      sh_http_req_free(r);
      return luaL_error(L, "http.request: cannot read body_file '%s': %s", body_file, strerror(err));
    }
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, sh_http_read_fn);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    r->headers = curl_slist_append(r->headers, "Expect:"); /* no 100-continue round trip */
  } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
  }
  if (r->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  r->started = uv_hrtime();
  CURLMcode mc = curl_multi_add_handle(h->multi, e);
  if (mc != CURLM_OK) {
    sh_http_req_free(r);
    return luaL_error(L, "http.request: %s", curl_multi_strerror(mc));
  }
  h->in_flight++;
  sh_http_set_refs(h);
  sh_log_printf(SH_LOG_DEBUG, "http %s %s: started", method, r->url);
  sh_sched_park(L, &r->wait, sh_http_abort);
  return sh_sched_yield(L, sh_http_request_k, (lua_KContext)r);
}

int luaopen_stagehost_core_http_client(lua_State *L) {
  static const luaL_Reg funcs[] = {{"request", sh_http_request}, {NULL, NULL}};
  sh_curl_newmodule(L, funcs);
  sh_http_get(L); /* now: its timer lasts as long as Lua, and belongs in any leak baseline */
  return 1;
}
