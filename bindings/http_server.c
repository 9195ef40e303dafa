/* stagehost.core.http_server: http.serve, an HTTP/1.1 server on libuv TCP; the Lua face. Every
 * request's handler runs in its own task; this file builds the request table it gets, turns what
 * it returns (or what req:stream sends) into a response, and owns the server object. The
 * connections themselves are bindings/http_conn.c's, and the parsing bindings/http_request.c's
 * (which knows nothing of sockets or Lua, so a fuzzer drives it alone). Servers belong to the
 * scheduler that made them. */
#define _GNU_SOURCE /* qsort_r */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../host/util.h"
#include "http_server.h"
#include "auxlib.h"

/* ---- requests to Lua ---- */


static int sh_server_name_cmp(const sh_http_request_t *r, size_t i, size_t j) {
  const sh_http_header_t *x = sh_http_header(r, i), *y = sh_http_header(r, j);
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int d = n ? memcmp(sh_http_at(&r->names, x->name_off), sh_http_at(&r->names, y->name_off), n) : 0;
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
static void sh_server_push_headers(lua_State *L, const sh_http_request_t *r) {
  lua_createtable(L, 0, (int)r->nheaders);
  if (r->nheaders == 0) return;
  size_t *order = lua_newuserdatauv(L, r->nheaders * sizeof *order, 0); /* freed by the GC */
  for (size_t i = 0; i < r->nheaders; i++) order[i] = i;
  qsort_r(order, r->nheaders, sizeof *order, sh_server_header_cmp, (void *)r);
  for (size_t i = 0; i < r->nheaders;) {
    const sh_http_header_t *h = sh_http_header(r, order[i]);
    size_t j = i + 1;
    while (j < r->nheaders && sh_server_name_cmp(r, order[i], order[j]) == 0) j++;
    lua_pushlstring(L, sh_http_at(&r->names, h->name_off), h->name_len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t k = i; k < j; k++) {
      const sh_http_header_t *v = sh_http_header(r, order[k]);
      if (k > i) luaL_addlstring(&b, ", ", 2);
      luaL_addlstring(&b, sh_http_at(&r->names, v->value_off), v->value_len);
    }
    luaL_pushresult(&b);
    lua_rawset(L, -4);
    i = j;
  }
  lua_pop(L, 1);
}

static void sh_server_push_request(lua_State *L, sh_server_conn_t *c, const sh_http_request_t *r) {
  lua_createtable(L, 0, 10);
  sh_setfield_string(L, "method", http_method_str((enum http_method)r->method));
  const char *url = sh_http_at(&r->url, 0);
  sh_setfield_lstring(L, "url", url, r->url.len);
  /* path and query: http-parser's URL splitter handles origin, absolute and authority forms
   * (its offsets are 16 bits: a longer URL, or "*" of OPTIONS, is split at '?' and '#') */
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (r->url.len > 0 && r->url.len <= UINT16_MAX &&
      http_parser_parse_url(url, r->url.len, r->method == HTTP_CONNECT, &u) == 0) {
    if (u.field_set & (1 << UF_PATH))
      sh_setfield_lstring(L, "path", url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    else
      sh_setfield_string(L, "path", "/");
    if (u.field_set & (1 << UF_QUERY))
      sh_setfield_lstring(L, "query", url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  } else {
    size_t path_end = 0, query_end;
    while (path_end < r->url.len && url[path_end] != '?' && url[path_end] != '#') path_end++;
    sh_setfield_lstring(L, "path", url, path_end);
    if (path_end < r->url.len && url[path_end] == '?') {
      for (query_end = path_end + 1; query_end < r->url.len && url[query_end] != '#'; query_end++) {
      }
      sh_setfield_lstring(L, "query", url + path_end + 1, query_end - path_end - 1);
    }
  }
  lua_pushfstring(L, "%d.%d", (int)r->major, (int)r->minor);
  lua_setfield(L, -2, "version");
  sh_server_push_headers(L, r);
  lua_setfield(L, -2, "headers");
  sh_setfield_lstring(L, "body", sh_http_at(&r->body, 0), r->body.len);
  sh_setfield_string(L, "remote", c->remote);
  luaL_setmetatable(L, SH_SERVER_REQUEST_MT);
}

static int sh_server_handler_body(lua_State *L);

/* Runs protected on the main state: build the request's Lua objects and spawn its task. The
 * stream userdata takes its connection reference first, so an error after it leaks nothing. */
static int sh_server_dispatch_p(lua_State *L) {
  sh_server_conn_t *c = lua_touserdata(L, 1);
  const sh_http_request_t *r = lua_touserdata(L, 2);
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

void sh_server_start_handler(sh_server_conn_t *c, const sh_http_request_t *r) {
  sh_server_t *s = c->server;
  lua_State *L = s->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, sh_server_dispatch_p);
  lua_pushlightuserdata(L, c);
  lua_pushlightuserdata(L, (void *)r);
  int rc = lua_pcall(L, 2, 0, 0);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    sh_log_printf(SH_LOG_ERROR, "http.serve %s: cannot start a handler: %s", s->label, msg ? msg : "?");
    sh_server_conn_simple(c, 500, 1);
  }
  lua_settop(L, top);
}


/* ---- responses ---- */





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

/* A response the server cannot send. For req:stream (arg: the index of its options) that is
 * misuse of the argument, of option key if given; for what a handler returned (arg 0) it is an
 * error the handler's task logs for the request, prefixed with who. */
static int sh_server_bad(lua_State *L, int arg, const char *who, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  if (arg && key) return sh_opt_error(L, arg, who, key, "%s", msg);
  if (arg) return sh_argerror(L, arg, who, "%s", msg);
  return luaL_error(L, "%s: %s%s%s", who, key ? key : "", key ? " " : "", msg);
}

/* Add "name: value\r\n" for the value at the top (a string or a number) to the lines table. */
static void sh_server_add_header(lua_State *L, int lines, int *n, const char *name, int arg, const char *who) {
  int t = lua_type(L, -1);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    sh_server_bad(L, arg, who, NULL, "header '%s' must be a string or a number, got %s", name, luaL_typename(L, -1));
  size_t vl;
  const char *v = lua_tolstring(L, -1, &vl);
  for (size_t i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
      sh_server_bad(L, arg, who, NULL, "header '%s' has a line break or NUL in its value", name);
  lua_pushfstring(L, "%s: %s\r\n", name, v);
  lua_rawseti(L, lines, ++*n);
}

/* Push the status line and headers of a response. Framing headers are the server's: the
 * handler's content-length, transfer-encoding and connection are dropped ("connection: close"
 * is honoured). Decides c->keep_alive. May raise (bad headers, see sh_server_bad for arg and
 * who); keeps no C memory meanwhile. */
static void sh_server_push_head(lua_State *L, sh_server_conn_t *c, int status, int hidx, const char *default_type,
                                int frame, size_t length, int arg, const char *who) {
  lua_newtable(L);
  int lines = lua_gettop(L), n = 0, has_type = 0;
  if (hidx) {
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        sh_server_bad(L, arg, who, NULL, "header names must be strings, got %s", luaL_typename(L, -2));
      size_t nl;
      const char *name = lua_tolstring(L, -2, &nl);
      if (!sh_server_token(name, nl)) sh_server_bad(L, arg, who, NULL, "bad header name '%s'", name);
      if (sh_http_is(name, nl, "content-length") || sh_http_is(name, nl, "transfer-encoding")) {
        lua_pop(L, 1);
        continue;
      }
      if (sh_http_is(name, nl, "connection")) {
        const char *v = lua_tostring(L, -1);
        if (v && strstr(v, "close")) c->keep_alive = 0;
        lua_pop(L, 1);
        continue;
      }
      if (sh_http_is(name, nl, "content-type")) has_type = 1;
      if (lua_type(L, -1) == LUA_TTABLE) { /* one line per element: set-cookie and the like */
        lua_Integer count = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= count; i++) {
          lua_rawgeti(L, -1, i);
          sh_server_add_header(L, lines, &n, name, arg, who);
          lua_pop(L, 1);
        }
      } else {
        sh_server_add_header(L, lines, &n, name, arg, who);
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

/* The status at idx (nil: 200); arg and who as for sh_server_bad. */
static int sh_server_status(lua_State *L, int idx, int arg, const char *who) {
  if (lua_isnil(L, idx)) return 200;
  int exact = 0;
  lua_Integer st = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &exact) : 0;
  if (!exact) sh_server_bad(L, arg, who, "status", "must be an integer, got %s", luaL_typename(L, idx));
  if (st < 200 || st > 599) sh_server_bad(L, arg, who, "status", "must be between 200 and 599, got %d", (int)st);
  return (int)st;
}

/* The headers table at idx: its index, or 0 for nil; arg and who as for sh_server_bad. */
static int sh_server_headers(lua_State *L, int idx, int arg, const char *who) {
  if (lua_istable(L, idx)) return idx;
  if (!lua_isnil(L, idx)) sh_server_bad(L, arg, who, "headers", "must be a table, got %s", luaL_typename(L, idx));
  return 0;
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
      return sh_server_bad(L, 0, who, "body", "must be a string, got %s", luaL_typename(L, 3));
    }
    lua_getfield(L, 1, "status"); /* 4 */
    status = sh_server_status(L, 4, 0, who);
    lua_getfield(L, 1, "headers"); /* 5 */
    hidx = sh_server_headers(L, 5, 0, who);
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
                      blen, 0, who);
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

/* message handler of the handler's pcall: a traceback for errors, cancellations untouched */
static int sh_server_msgh(lua_State *L) {
  if (sh_is_cancel_error(L, 1)) return 1;
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
    if (sh_is_cancel_error(L, -1)) {
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

/* SIGINT/SIGTERM: every task is being cancelled; stop this scheduler's servers so the loop can
 * end. */
static void sh_server_shutdown_hook(void *arg) {
  sh_server_state_t *st = arg;
  for (sh_server_t *s = st->all; s; s = s->next) sh_server_stop(s->L, s, 1);
}

static void *sh_server_state_create(lua_State *L) {
  sh_server_state_t *st = calloc(1, sizeof *st);
  if (!st) luaL_error(L, "http.serve: out of memory");
  st->sched = sh_sched_get(L);
  st->lua_alive = 1;
  sh_sched_on_shutdown(st->sched, sh_server_shutdown_hook, st);
  return st;
}

/* sh_sched_state's release, in lua_close: close every server and connection now, since no
 * callback may reach Lua or the scheduler once they are gone. */
static void sh_server_state_release(lua_State *L, void *arg) {
  sh_server_state_t *st = arg;
  sh_sched_off_shutdown(st->sched, sh_server_shutdown_hook, st);
  for (sh_server_t *s = st->all; s; s = s->next) sh_server_stop(L, s, 1);
  st->lua_alive = 0;
  if (!st->all) free(st);
}

static sh_server_state_t *sh_server_state_get(lua_State *L) {
  return sh_sched_state(L, SH_SERVER_STATE_KEY, sh_server_state_create, sh_server_state_release);
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

/* server:close(): stop now, and (inside a task) wait until every connection has closed */
static int sh_server_close(lua_State *L) {
  sh_server_t *s = sh_check_server(L, 1);
  sh_server_stop(L, s, 0);
  if (!s->listener_open && s->nconns == 0) return 0;
  if (!sh_sched_can_wait(L)) return 0; /* outside a task: the connections drain on their own */
  sh_sched_check_wait(L, "server:close"); /* a pending cancel raises here, before the closer exists */
  sh_server_closer_t *cl = calloc(1, sizeof *cl);
  if (!cl) return luaL_error(L, "server:close: out of memory");
  sh_sched_park(L, &cl->wait, sh_server_closer_abort);
  cl->server = s;
  cl->next = s->closers;
  if (s->closers) s->closers->prev = cl;
  s->closers = cl;
  return sh_sched_yield(L, NULL, 0); /* woken once the last connection closed; returns nothing */
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

/* __index: port and host, then the methods */
static int sh_server_index(lua_State *L) {
  sh_server_t *s = sh_check_server(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "port") == 0) lua_pushinteger(L, s->port);
  else if (strcmp(key, "host") == 0) lua_pushstring(L, s->host);
  else return sh_index_methods(L);
  return 1;
}

static int sh_server_tostring(lua_State *L) {
  sh_server_ud_t *ud = luaL_checkudata(L, 1, SH_SERVER_MT);
  if (!ud->srv) lua_pushliteral(L, "http server (gone)");
  else lua_pushfstring(L, "http server %s%s", ud->srv->label, ud->srv->closing ? " (closed)" : "");
  return 1;
}

/* ---- options ---- */

/* opts[key], a number from min up (and not absurdly large), else what it must be */
static double sh_server_opt_number(lua_State *L, const char *key, double def, double min, const char *what) {
  double v = sh_opt_number(L, 1, key, def, "http.serve");
  if (!(v >= min) || v > 1e15) sh_opt_rangeerror(L, 1, key, what, "http.serve");
  return v;
}

/* http.serve{host=, port=, handler=, body_limit=, header_limit=, header_timeout=, idle_timeout=,
 * body_timeout=} -> server */
static int sh_server_serve(lua_State *L) {
  const char *who = "http.serve";
  if (!lua_istable(L, 1))
    return sh_argerror(L, 1, who, "table of options expected, e.g. {port = 8080, handler = fn}, got %s",
                       luaL_typename(L, 1));
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "handler") != LUA_TFUNCTION) /* 2 */
    return sh_opt_typeerror(L, 1, who, "handler", "a function");
  const char *host = sh_opt_string(L, 1, "host", who);
  if (!host) host = "127.0.0.1";
  lua_getfield(L, 1, "port"); /* 3 */
  if (!lua_isnil(L, 3) && !lua_isinteger(L, 3))
    return sh_opt_error(L, 1, who, "port", "must be an integer, got %s",
                        lua_type(L, 3) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, 3));
  lua_Integer port = lua_isnil(L, 3) ? 0 : lua_tointeger(L, 3);
  if (port < 0 || port > 65535) return sh_opt_error(L, 1, who, "port", "must be between 0 and 65535, got %I", port);
  lua_pop(L, 1);
  double body_limit = sh_server_opt_number(L, "body_limit", 1048576, 0, "a number of bytes >= 0");
  double header_limit = sh_server_opt_number(L, "header_limit", 65536, 1, "a number of bytes >= 1");
  double header_timeout = sh_server_opt_number(L, "header_timeout", 10, 0.001, "a number of seconds > 0");
  double idle_timeout = sh_server_opt_number(L, "idle_timeout", 30, 0.001, "a number of seconds > 0");
  double body_timeout = sh_server_opt_number(L, "body_timeout", 30, 0.001, "a number of seconds > 0");
  if (strlen(host) >= sizeof ((sh_server_t *)0)->host) return sh_opt_error(L, 1, who, "host", "is too long");
  sh_server_state_t *st = sh_server_state_get(L);

  char label[80];
  snprintf(label, sizeof label, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, (int)port);
  struct sockaddr_storage addr;
  const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
  if (uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)&addr) != 0)
    return luaL_error(L, "%s: cannot listen on %s: not an IP address (give one such as 127.0.0.1)", who, label);

  sh_server_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, 0); /* 3 */
  ud->srv = NULL;
  luaL_setmetatable(L, SH_SERVER_MT);
  sh_server_t *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "%s: out of memory", who);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  s->sched = st->sched;
  s->state = st;
  s->handler_ref = s->anchor_ref = LUA_NOREF;
  s->body_limit = (size_t)body_limit;
  s->header_limit = (size_t)header_limit;
  s->header_timeout = header_timeout;
  s->idle_timeout = idle_timeout;
  s->body_timeout = body_timeout;
  snprintf(s->host, sizeof s->host, "%s", host);
  s->next = st->all;
  if (st->all) st->all->prev = s;
  st->all = s;
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
  s->lua_alive = 1;
  ud->srv = s; /* from here the userdata's __gc owns s, should taking a ref run out of memory */
  lua_pushvalue(L, 2);
  s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 3);
  s->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* a listening server runs on, held or not */
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
    return sh_argerror(L, 2, who, "table of options {status =, headers =} expected, got %s", luaL_typename(L, 2));
  lua_settop(L, 2);
  lua_getfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2); /* 4: the stream userdata */
  sh_server_stream_t *x = luaL_testudata(L, 4, SH_SERVER_STREAM_MT);
  if (!x) return luaL_error(L, "%s: not a request of http.serve", who);
  sh_server_conn_t *c = x->conn;
  if (!c || !c->open) return sh_failure(L, "ECONNRESET", "%s: the connection is closed", who);
  if (!sh_server_exchange(x) || c->streaming || c->responded)
    return luaL_error(L, "%s: the response to this request was already started", who);
  int status = 200, hidx = 0;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "status"); /* 5 */
    status = sh_server_status(L, 5, 2, who);
    lua_getfield(L, 2, "headers"); /* 6 */
    hidx = sh_server_headers(L, 6, 2, who);
  }
  int bodyless = c->req_head || status == 204 || status == 304;
  int frame = bodyless ? SH_FRAME_NONE : c->req_minor >= 1 ? SH_FRAME_CHUNKED : SH_FRAME_CLOSE;
  sh_server_push_head(L, c, status, hidx, NULL, frame, 0, 2, who);
  size_t hl;
  const char *head = lua_tolstring(L, -1, &hl);
  c->streaming = 1;
  c->frame = frame;
  uv_buf_t part = uv_buf_init((char *)head, (unsigned)hl);
  sh_server_conn_send(c, &part, 1);
  lua_pushvalue(L, 4);
  return 1;
}

/* stream:write(data) -> true, or nil, message, code once the client is gone; waits until
 * libuv has written the chunk, so a slow client slows its writer down */
static int sh_server_stream_write(lua_State *L) {
  sh_server_stream_t *x = sh_check_stream(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  sh_server_conn_t *c = x->conn;
  if (!c || !c->open) return sh_failure(L, "ECONNRESET", "stream:write: the connection is closed");
  if (!sh_server_exchange(x) || !c->streaming || c->responded)
    return luaL_error(L, "stream:write: the stream is closed");
  if (len == 0 || c->frame == SH_FRAME_NONE) { /* an empty chunk would end the body */
    lua_pushboolean(L, 1);
    return 1;
  }
  sh_sched_check_wait(L, "stream:write"); /* before the write is allocated */
  char size[32];
  int sl = c->frame == SH_FRAME_CHUNKED ? snprintf(size, sizeof size, "%zx\r\n", len) : 0;
  uv_buf_t parts[3] = {uv_buf_init(size, (unsigned)sl), uv_buf_init((char *)data, 0),
                       uv_buf_init("\r\n", c->frame == SH_FRAME_CHUNKED ? 2 : 0)};
  parts[1].len = len;
  sh_server_write_t *w = sh_server_conn_send(c, parts, 3);
  if (!w) return sh_failure(L, "ECONNRESET", "stream:write: the connection is closed");
  return sh_await_yield(L, &w->await, "stream:write"); /* a cancelled writer's write still completes */
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

static const luaL_Reg sh_server_class[] = {
    {"close", sh_server_close},
    {"__index", sh_server_index}, {"__gc", sh_server_gc}, {"__close", sh_server_close_now},
    {"__tostring", sh_server_tostring},
    {NULL, NULL},
};

static const luaL_Reg sh_server_stream_class[] = {
    {"write", sh_server_stream_write}, {"close", sh_server_stream_close},
    {"__gc", sh_server_stream_gc}, {"__close", sh_server_stream_close},
    {NULL, NULL},
};

static const luaL_Reg sh_server_request_class[] = {{"stream", sh_server_req_stream}, {NULL, NULL}};

int luaopen_stagehost_core_http_server(lua_State *L) {
  static const luaL_Reg funcs[] = {{"serve", sh_server_serve}, {NULL, NULL}};
  sh_metatable(L, SH_SERVER_STREAM_MT, sh_server_stream_class);
  sh_metatable(L, SH_SERVER_REQUEST_MT, sh_server_request_class);
  if (lua_getfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES) != LUA_TTABLE) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    sh_setfield_string(L, "__mode", "k");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SH_SERVER_EXCHANGES);
  }
  lua_pop(L, 1);
  sh_server_state_get(L); /* now, before any server, so lua_close releases it after them */
  return sh_newmodule(L, funcs, SH_SERVER_MT, sh_server_class);
}
