/* stagehost.core.tty: lines typed on the terminal the host runs in, read without blocking the
 * loop (the approval prompt under the live view). One reader per Lua state, on a uv_tty_t over
 * standard input; it reads only while a task waits for a line, so keystrokes meant for a child
 * process or a later prompt are not taken early, and closes when asked (tty.close) or when the
 * Lua state closes.
 *
 *   tty.is_tty() -> is standard input a terminal, and this host in its foreground (a host
 *                   started with & would be stopped by SIGTTIN if it read it)?
 *   tty.read_line() -> the next line without its end ("\n", "\r\n"), or nil at end of input,
 *                      or nil, message, code; a wait (call it inside a task)
 *   tty.close() -> closes the reader; a later read_line opens it again */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "bindings/auxlib.h"
#include "host/sched.h"
#include "host/util.h"

#define SH_TTY_KEY "stagehost.tty.state"
#define SH_TTY_MAX_LINE 65536 /* a longer line is cut: nobody types that much at a prompt */

typedef struct {
  uv_tty_t handle;    /* over fd 0; valid while open */
  int open;           /* handle initialised and not closing */
  int closing;        /* uv_close called, its callback still to come */
  int reading;        /* uv_read_start is in effect */
  int eof;            /* end of input seen (the terminal hung up, ^D) */
  int err;            /* a libuv read error, 0 when none */
  int released;       /* the Lua state let go: free once the handle has closed */
  sh_buf_t buf;       /* bytes read that are not yet a whole line */
  char chunk[4096];   /* what libuv reads into */
  sh_wait_t wait;     /* the task waiting for a line; wait.task is NULL when none */
} sh_tty_t;

static void sh_tty_closed(uv_handle_t *h) {
  sh_tty_t *t = h->data;
  t->closing = 0;
  if (t->released) {
    sh_buf_free(&t->buf);
    free(t);
  }
}

static void sh_tty_stop(sh_tty_t *t) {
  if (t->reading) uv_read_stop((uv_stream_t *)&t->handle);
  t->reading = 0;
}

static void sh_tty_shut(sh_tty_t *t) {
  sh_tty_stop(t);
  if (t->open) {
    t->open = 0;
    t->closing = 1;
    uv_close((uv_handle_t *)&t->handle, sh_tty_closed);
  }
}

/* Is there a whole line in the buffer? */
static int sh_tty_has_line(const sh_tty_t *t) {
  return t->buf.len > 0 && memchr(t->buf.data, '\n', t->buf.len) != NULL;
}

/* called by libuv before a read: the reader's own chunk */
static void sh_tty_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  sh_tty_t *t = h->data;
  (void)suggested;
  *out = uv_buf_init(t->chunk, sizeof t->chunk);
}

/* called by libuv with what was typed: kept; the waiting task is woken by a whole line, the
 * end of input or an error, and reading stops until the next read_line */
static void sh_tty_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  sh_tty_t *t = s->data;
  if (n > 0) {
    size_t room = t->buf.len < SH_TTY_MAX_LINE ? SH_TTY_MAX_LINE - t->buf.len : 0;
    size_t take = (size_t)n < room ? (size_t)n : room;
    if (take > 0 && sh_buf_reserve(&t->buf, take) == 0) {
      memcpy(t->buf.data + t->buf.len, b->base, take);
      t->buf.len += take;
    }
    if (take < (size_t)n && memchr(b->base + take, '\n', (size_t)n - take) && sh_buf_reserve(&t->buf, 1) == 0)
      t->buf.data[t->buf.len++] = '\n'; /* the over-long line still ends */
    if (!sh_tty_has_line(t)) return;
  } else if (n == UV_EOF) {
    t->eof = 1;
  } else if (n < 0) {
    t->err = (int)n;
  } else {
    return;
  }
  sh_tty_stop(t);
  sh_sched_wake(&t->wait);
}

/* the waiting task was cancelled: stop reading (its pointer is cleared already) */
static void sh_tty_abort(sh_wait_t *w) {
  sh_tty_t *t = SH_CONTAINER(w, sh_tty_t, wait);
  sh_tty_stop(t);
}

static void sh_tty_release(lua_State *L, void *arg) {
  sh_tty_t *t = arg;
  (void)L;
  t->released = 1;
  sh_tty_shut(t);
  if (!t->closing) { /* else the close callback frees it */
    sh_buf_free(&t->buf);
    free(t);
  }
}

static void *sh_tty_create(lua_State *L) {
  sh_tty_t *t = calloc(1, sizeof *t);
  if (!t) luaL_error(L, "tty: out of memory");
  return t;
}

static sh_tty_t *sh_tty_get(lua_State *L) { return sh_sched_state(L, SH_TTY_KEY, sh_tty_create, sh_tty_release); }

/* Push the next line from the buffer (1), or nothing (0). */
static int sh_tty_push_line(lua_State *L, sh_tty_t *t) {
  char *nl = t->buf.len ? memchr(t->buf.data, '\n', t->buf.len) : NULL;
  if (!nl) return 0;
  size_t n = (size_t)(nl - t->buf.data);
  size_t shown = n > 0 && t->buf.data[n - 1] == '\r' ? n - 1 : n;
  lua_pushlstring(L, t->buf.data, shown);
  memmove(t->buf.data, nl + 1, t->buf.len - n - 1);
  t->buf.len -= n + 1;
  return 1;
}

/* What read_line returns when no wait is needed (a line, the end, an error), or -1. */
static int sh_tty_result(lua_State *L, sh_tty_t *t) {
  if (sh_tty_push_line(L, t)) return 1;
  if (t->err) {
    int err = t->err;
    t->err = 0;
    return sh_failure(L, uv_err_name(err), "tty.read_line: %s", uv_strerror(err));
  }
  if (t->eof) {
    if (t->buf.len > 0) { /* the last line, without its end */
      lua_pushlstring(L, t->buf.data, t->buf.len);
      t->buf.len = 0;
      return 1;
    }
    lua_pushnil(L);
    return 1;
  }
  return -1;
}

static int sh_tty_read_k(lua_State *L, int status, lua_KContext ctx) {
  sh_tty_t *t = (sh_tty_t *)ctx;
  (void)status;
  int n = sh_tty_result(L, t);
  if (n >= 0) return n;
  lua_pushnil(L); /* woken without a line: cannot happen, but never loop here */
  return 1;
}

static int sh_tty_read_line(lua_State *L) {
  sh_tty_t *t = sh_tty_get(L);
  int n = sh_tty_result(L, t);
  if (n >= 0) {
    sh_sched_check(L, "tty.read_line");
    return n;
  }
  sh_sched_check_wait(L, "tty.read_line");
  if (t->wait.task) return luaL_error(L, "tty.read_line: another task is reading the terminal already");
  if (t->closing) return sh_failure(L, "EBUSY", "tty.read_line: the terminal reader is still closing");
  if (!t->open) {
    if (uv_guess_handle(STDIN_FILENO) != UV_TTY)
      return sh_failure(L, "ENOTTY", "tty.read_line: standard input is not a terminal");
    int rc = uv_tty_init(sh_sched_loop(L), &t->handle, STDIN_FILENO, 1);
    if (rc < 0) return sh_failure(L, uv_err_name(rc), "tty.read_line: %s", uv_strerror(rc));
    t->handle.data = t;
    t->open = 1;
  }
  int rc = uv_read_start((uv_stream_t *)&t->handle, sh_tty_alloc, sh_tty_read);
  if (rc < 0) return sh_failure(L, uv_err_name(rc), "tty.read_line: %s", uv_strerror(rc));
  t->reading = 1;
  sh_sched_park(L, &t->wait, sh_tty_abort);
  return sh_sched_yield(L, sh_tty_read_k, (lua_KContext)t);
}

static int sh_tty_close(lua_State *L) {
  sh_tty_t *t = sh_tty_get(L);
  if (t->wait.task) return luaL_error(L, "tty.close: a task is reading the terminal");
  sh_tty_shut(t);
  t->buf.len = 0;
  t->eof = t->err = 0;
  return 0;
}

static int sh_tty_is_tty(lua_State *L) {
  lua_pushboolean(L, uv_guess_handle(STDIN_FILENO) == UV_TTY && tcgetpgrp(STDIN_FILENO) == getpgrp());
  return 1;
}

int luaopen_stagehost_core_tty(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"read_line", sh_tty_read_line}, {"close", sh_tty_close}, {"is_tty", sh_tty_is_tty}, {NULL, NULL}};
  return sh_newmodule(L, funcs, NULL, NULL);
}
