/* stagehost.core.smtp: one e-mail through libcurl's SMTP client (STARTTLS, AUTH, the envelope
 * and the dialogue are curl's; the message text is Lua's, stdlib/stagehost/notify/email.lua).
 *
 * Each message is sent by curl_easy_perform on a thread of its own, which tells the loop through
 * a uv_async_t when it is done; the task is parked meanwhile. Not the multi-socket API on the
 * loop, as bindings/http_client.c does for HTTP: libcurl 7.88 (Debian 12) finishes an SMTP
 * upload in its "done" step with a blocking wait for the server's reply to the end of DATA, and
 * curl_multi_remove_handle of a message in flight does the same, so on the loop a slow or
 * silent server would stop everything for up to the timeout (measured: a cancelled send to a
 * server that never greets held the loop 60 s). Not libuv's thread pool either: a silent server
 * would hold one of its four threads, which every fs call needs.
 *
 * Cancellation: the abort (task cancelled, or its task.timeout passed) sets a flag and lets the
 * task unwind at once; curl's progress callback, which it calls at least once a second even
 * inside its blocking waits, sees the flag and ends the transfer; the thread's result is then
 * dropped. A message is one thread and one async handle; the host's exit waits for both. */
#define _GNU_SOURCE /* strdup */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <uv.h>

#include "../host/log.h"
#include "../host/sched.h"
#include "../host/util.h"
#include "auxlib.h"
#include "curl_module.h"

/* One message on its way. Two owners hold it: the task's wait (released by the continuation or
 * by the abort, whichever comes) and the async handle (released by its close callback, after
 * the thread has ended); it is freed when both have let go. Fields below `thread` are written
 * by the thread until it signals, and read by the loop only after joining it. */
typedef struct {
  sh_wait_t wait;
  uv_async_t async;              /* the thread is done: called on the loop */
  uv_thread_t thread;
  atomic_int cancelled;          /* set by the abort; read by curl's progress callback */
  int refs;                      /* loop thread only */
  int tls_required;
  char *where;                   /* scheme://host:port, no credentials: for messages */
  CURL *easy;                    /* the thread's; cleaned up there */
  struct curl_slist *rcpt;
  char *body;
  size_t body_len, body_off;
  CURLcode result;
  long reply;                    /* the server's last reply code (250, 535, 550 ...) */
  char errbuf[CURL_ERROR_SIZE];
} sh_smtp_send_t;

static void sh_smtp_unref(sh_smtp_send_t *s) {
  if (--s->refs > 0) return;
  if (s->easy) curl_easy_cleanup(s->easy); /* only when no thread ever ran */
  curl_slist_free_all(s->rcpt);
  free(s->body);
  free(s->where);
  free(s);
}

static void sh_smtp_async_closed(uv_handle_t *handle) { sh_smtp_unref(handle->data); }

/* called by libcurl with the next piece of the message (it escapes lines that start with '.'
 * and ends the DATA itself); on the thread */
static size_t sh_smtp_read_fn(char *buf, size_t size, size_t n, void *userp) {
  sh_smtp_send_t *s = userp;
  size_t room = size * n, left = s->body_len - s->body_off;
  if (room > left) room = left;
  memcpy(buf, s->body + s->body_off, room);
  s->body_off += room;
  return room;
}

/* called by libcurl at least once a second, also while it waits for a reply; on the thread.
 * Non-zero ends the transfer (CURLE_ABORTED_BY_CALLBACK). */
static int sh_smtp_progress_fn(void *userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                               curl_off_t ulnow) {
  sh_smtp_send_t *s = userp;
  (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  return atomic_load(&s->cancelled) ? 1 : 0;
}

/* The thread: the whole SMTP dialogue, then the connection closed, then a word to the loop. It
 * touches neither Lua nor the loop, but for uv_async_send. */
static void sh_smtp_thread(void *arg) {
  sh_smtp_send_t *s = arg;
  s->result = curl_easy_perform(s->easy);
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->reply);
  curl_easy_cleanup(s->easy); /* a QUIT it may still wait for is waited for here */
  s->easy = NULL;
  uv_async_send(&s->async);
}

/* called by libuv on the loop once the thread has sent its word: the task (if it still waits)
 * gets the result */
static void sh_smtp_async_cb(uv_async_t *async) {
  sh_smtp_send_t *s = async->data;
  uv_thread_join(&s->thread); /* it has returned or is returning: no wait to speak of */
  sh_log_printf(SH_LOG_DEBUG, "smtp %s: done (%s, reply %ld)%s", s->where, curl_easy_strerror(s->result), s->reply,
                atomic_load(&s->cancelled) ? ", dropped: the task was cancelled" : "");
  sh_sched_wake(&s->wait); /* nothing when aborted */
  uv_close((uv_handle_t *)&s->async, sh_smtp_async_closed);
}

/* The task was cancelled (or timed out) while the message was on its way: the thread is told to
 * stop and finishes on its own; whatever it got is dropped. The wait's reference goes. */
static void sh_smtp_abort(sh_wait_t *w) {
  sh_smtp_send_t *s = SH_CONTAINER(w, sh_smtp_send_t, wait);
  sh_log_printf(SH_LOG_DEBUG, "smtp %s: aborted", s->where);
  atomic_store(&s->cancelled, 1);
  sh_smtp_unref(s);
}

/* A failure in a word the Lua layer can decide on (retry or not). */
static const char *sh_smtp_failure_kind(CURLcode rc, long reply) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_COULDNT_CONNECT: return "refused";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return "resolve";
    case CURLE_LOGIN_DENIED: return "auth";
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE: return "tls";
    default: break;
  }
  if (reply >= 500 && reply < 600) return "rejected"; /* a permanent refusal (RFC 5321 4.2.1) */
  if (reply >= 400 && reply < 500) return "transient"; /* try again later */
  return "transport";
}

/* The continuation, inside the task: true, reply | nil, message, kind, reply */
static int sh_smtp_send_k(lua_State *L, int status, lua_KContext ctx) {
  sh_smtp_send_t *s = (sh_smtp_send_t *)ctx;
  (void)status;
  int n;
  if (s->result == CURLE_OK) {
    lua_pushboolean(L, 1);
    lua_pushinteger(L, s->reply);
    n = 2;
  } else if (s->result == CURLE_USE_SSL_FAILED && s->tls_required) {
    sh_failure(L, "tls", "smtp: %s does not offer STARTTLS and tls = \"required\": the message was not sent",
               s->where);
    lua_pushinteger(L, s->reply);
    n = 4;
  } else {
    const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(s->result);
    if (s->reply > 0)
      sh_failure(L, sh_smtp_failure_kind(s->result, s->reply), "smtp: sending through %s failed: %s (the server said %d)",
                 s->where, why, (int)s->reply);
    else
      sh_failure(L, sh_smtp_failure_kind(s->result, s->reply), "smtp: sending through %s failed: %s", s->where, why);
    lua_pushinteger(L, s->reply);
    n = 4;
  }
  sh_smtp_unref(s);
  return n;
}

static double sh_smtp_opt_seconds(lua_State *L, const char *key, double def) {
  double v = sh_opt_number(L, 1, key, def, "smtp.send");
  if (!(v >= 0)) sh_opt_rangeerror(L, 1, key, "a number of seconds >= 0", "smtp.send");
  return v;
}

/* An address as the envelope takes it: "<a@b>". Raises for one that could break the dialogue. */
static void sh_smtp_check_address(lua_State *L, const char *key, const char *a) {
  if (!*a || strpbrk(a, "\r\n<> \t"))
    sh_opt_error(L, 1, "smtp.send", key, "must be a bare address like ops@example.com (got '%s')", a);
}

/* "smtp://host:port" of the URL, or raise for one that is not smtp:// or smtps://. Pushes the
 * display form on the stack (kept there until the send is set up); curl's memory is freed
 * before anything may raise. */
static int sh_smtp_check_url(lua_State *L, const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  char where[512];
  CURLUcode rc = u ? curl_url_set(u, CURLUPART_URL, url, 0) : CURLUE_OUT_OF_MEMORY;
  if (rc == CURLUE_OK) {
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
  }
  int ok = rc == CURLUE_OK && scheme && host && (strcmp(scheme, "smtp") == 0 || strcmp(scheme, "smtps") == 0);
  int implicit = ok && strcmp(scheme, "smtps") == 0;
  if (ok) snprintf(where, sizeof where, "%s://%s:%s", scheme, host, port ? port : "?");
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  if (rc != CURLUE_OK)
    sh_opt_error(L, 1, "smtp.send", "url", "is malformed: %s", curl_url_strerror(rc));
  if (!ok) sh_opt_error(L, 1, "smtp.send", "url", "must be smtp://host:port or smtps://host:port (got '%s')", url);
  lua_pushstring(L, where);
  return implicit;
}

static const char *const sh_smtp_options[] = {
    "url", "from", "to", "body", "username", "password", "tls", "timeout", "connect_timeout", "insecure", NULL,
};

/* core.send{url, from, to = {...} | "a@b", body, username, password, tls = "try"|"required",
 *           timeout = 60, connect_timeout = 30, insecure = false}
 *   -> true, reply | nil, message, kind, reply */
static int sh_smtp_send(lua_State *L) {
  const char *who = "smtp.send";
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  sh_opt_unknown_keys(L, 1, sh_smtp_options, who);
  const char *url = sh_opt_string(L, 1, "url", who);
  if (!url) return sh_opt_error(L, 1, who, "url", "is required");
  const char *from = sh_opt_string(L, 1, "from", who);
  if (!from) return sh_opt_error(L, 1, who, "from", "is required");
  sh_smtp_check_address(L, "from", from);
  size_t body_len = 0;
  const char *body = sh_opt_lstring(L, 1, "body", &body_len, who);
  if (!body) return sh_opt_error(L, 1, who, "body", "is required");
  const char *username = sh_opt_string(L, 1, "username", who);
  const char *password = sh_opt_string(L, 1, "password", who);
  const char *tls = sh_opt_string(L, 1, "tls", who);
  if (tls && strcmp(tls, "try") != 0 && strcmp(tls, "required") != 0)
    return sh_opt_error(L, 1, who, "tls", "must be \"try\" or \"required\" (got '%s')", tls);
  int tls_required = tls && strcmp(tls, "required") == 0;
  double timeout = sh_smtp_opt_seconds(L, "timeout", 60);
  double connect_timeout = sh_smtp_opt_seconds(L, "connect_timeout", 30);
  int insecure = sh_opt_bool(L, 1, "insecure", 0, who);
  /* recipients, as "<a@b>" strings in a table, before any C memory is held */
  lua_newtable(L);
  int rcpt_idx = lua_gettop(L), nrcpt = 0;
  lua_getfield(L, 1, "to");
  if (lua_type(L, -1) == LUA_TSTRING) {
    sh_smtp_check_address(L, "to", lua_tostring(L, -1));
    lua_pushfstring(L, "<%s>", lua_tostring(L, -1));
    lua_rawseti(L, rcpt_idx, ++nrcpt);
  } else if (lua_type(L, -1) == LUA_TTABLE) {
    for (lua_Integer i = 1;; i++) {
      int t = lua_rawgeti(L, -1, i);
      if (t == LUA_TNIL) {
        lua_pop(L, 1);
        break;
      }
      if (t != LUA_TSTRING) return sh_opt_error(L, 1, who, "to", "must be a list of addresses (item %d is a %s)", (int)i, luaL_typename(L, -1));
      sh_smtp_check_address(L, "to", lua_tostring(L, -1));
      lua_pushfstring(L, "<%s>", lua_tostring(L, -1));
      lua_rawseti(L, rcpt_idx, ++nrcpt);
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    return sh_opt_typeerror(L, 1, who, "to", "an address or a list of addresses");
  }
  lua_pop(L, 1);
  if (nrcpt == 0) return sh_opt_error(L, 1, who, "to", "needs at least one address");
  int implicit_tls = sh_smtp_check_url(L, url);
  const char *where = lua_tostring(L, -1);
  lua_pushfstring(L, "<%s>", from);
  const char *mail_from = lua_tostring(L, -1);
  sh_sched_check_wait(L, who); /* before anything is allocated for the message */

  sh_smtp_send_t *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "smtp.send: out of memory");
  s->refs = 1; /* the wait; the async handle takes its own once it exists */
  atomic_init(&s->cancelled, 0);
  s->tls_required = tls_required;
  s->where = strdup(where);
  s->body = malloc(body_len ? body_len : 1);
  s->easy = curl_easy_init();
  int oom = !s->where || !s->body || !s->easy;
  for (int i = 1; i <= nrcpt && !oom; i++) {
    lua_rawgeti(L, rcpt_idx, i);
    struct curl_slist *more = curl_slist_append(s->rcpt, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!more) oom = 1;
    else s->rcpt = more;
  }
  if (oom) {
    sh_smtp_unref(s);
    return luaL_error(L, "smtp.send: out of memory");
  }
  if (body_len) memcpy(s->body, body, body_len);
  s->body_len = body_len;

  CURL *e = s->easy;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L); /* a thread must not get curl's SIGALRM */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  curl_easy_setopt(e, CURLOPT_MAIL_FROM, mail_from);
  curl_easy_setopt(e, CURLOPT_MAIL_RCPT, s->rcpt);
  curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(e, CURLOPT_READFUNCTION, sh_smtp_read_fn);
  curl_easy_setopt(e, CURLOPT_READDATA, s);
  curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, sh_smtp_progress_fn);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, s);
  /* STARTTLS whenever the server offers it; "required" refuses a server that does not. An
   * smtps:// URL is TLS from the first byte either way. */
  curl_easy_setopt(e, CURLOPT_USE_SSL, (long)(tls_required || implicit_tls ? CURLUSESSL_ALL : CURLUSESSL_TRY));
  if (username) curl_easy_setopt(e, CURLOPT_USERNAME, username);
  if (password) curl_easy_setopt(e, CURLOPT_PASSWORD, password);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
  if (timeout > 0) {
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, (long)(timeout + 1)); /* its QUIT too */
  }
  if (insecure) {
    sh_log_printf(SH_LOG_WARN, "smtp.send: TLS verification is off for %s (insecure = true)", s->where);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  int rc = uv_async_init(sh_sched_loop(L), &s->async, sh_smtp_async_cb);
  if (rc != 0) {
    sh_smtp_unref(s);
    return luaL_error(L, "smtp.send: %s", uv_strerror(rc));
  }
  s->async.data = s;
  s->refs++;
  rc = uv_thread_create(&s->thread, sh_smtp_thread, s);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->async, sh_smtp_async_closed); /* frees s, later */
    sh_smtp_unref(s);
    return luaL_error(L, "smtp.send: cannot start a thread: %s", uv_strerror(rc));
  }
  sh_log_printf(SH_LOG_DEBUG, "smtp %s: sending to %d recipient(s)", where, nrcpt);
  sh_sched_park(L, &s->wait, sh_smtp_abort);
  return sh_sched_yield(L, sh_smtp_send_k, (lua_KContext)s);
}

int luaopen_stagehost_core_smtp(lua_State *L) {
  static const luaL_Reg funcs[] = {{"send", sh_smtp_send}, {NULL, NULL}};
  return sh_curl_newmodule(L, funcs);
}
