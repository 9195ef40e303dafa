/* stagehost.core.fswatch: wait until something in a directory changes (inotify, through
 * uv_fs_event_t), costing no CPU meanwhile. A waiting approval gate watches the state
 * directory: another process's commit writes state.db-wal there, and the gate wakes at once
 * instead of polling the database.
 *
 *   fswatch.open(path) -> watcher, or nil, message, code
 *   watcher:wait() -> true once something changed since the last wait (at once when it did
 *                     already); a wait (inside a task; bound it with task.timeout)
 *   watcher:close()   (also its __gc and __close) */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "bindings/auxlib.h"
#include "host/sched.h"
#include "host/util.h"

#define SH_FSWATCH_MT "stagehost.fswatch"

typedef struct {
  uv_fs_event_t handle; /* freed in its close callback, never before */
  int changes;          /* events since the last wait returned */
  sh_wait_t wait;       /* the task waiting for a change; wait.task NULL when none */
} sh_fswatch_t;

typedef struct {
  sh_fswatch_t *w; /* NULL once closed */
} sh_fswatch_ud_t;

static void sh_fswatch_closed(uv_handle_t *h) { free(h->data); }

/* called by libuv when an entry of the directory changed: counted; a waiting task is woken */
static void sh_fswatch_event(uv_fs_event_t *h, const char *name, int events, int status) {
  sh_fswatch_t *w = h->data;
  (void)name;
  (void)events;
  (void)status; /* an error wakes the waiter too: it then reads the database, as on a change */
  w->changes++;
  sh_sched_wake(&w->wait);
}

/* the waiting task was cancelled: nothing to stop (the watch goes on counting) */
static void sh_fswatch_abort(sh_wait_t *wait) { (void)wait; }

static sh_fswatch_ud_t *sh_fswatch_check(lua_State *L, const char *who) {
  sh_fswatch_ud_t *ud = luaL_checkudata(L, 1, SH_FSWATCH_MT);
  if (!ud->w) luaL_error(L, "%s: the watcher is closed", who);
  return ud;
}

static int sh_fswatch_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  sh_fswatch_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->w = NULL;
  luaL_setmetatable(L, SH_FSWATCH_MT);
  sh_fswatch_t *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "fswatch.open: out of memory");
  uv_fs_event_init(sh_sched_loop(L), &w->handle);
  w->handle.data = w;
  int rc = uv_fs_event_start(&w->handle, sh_fswatch_event, path, 0);
  if (rc < 0) {
    uv_close((uv_handle_t *)&w->handle, sh_fswatch_closed);
    return sh_failure(L, uv_err_name(rc), "fswatch.open: %s: %s", path, uv_strerror(rc));
  }
  /* a watch alone does not keep the host running */
  uv_unref((uv_handle_t *)&w->handle);
  ud->w = w;
  return 1;
}

static int sh_fswatch_wait_k(lua_State *L, int status, lua_KContext ctx) {
  sh_fswatch_ud_t *ud = (sh_fswatch_ud_t *)ctx;
  (void)status;
  if (ud->w) ud->w->changes = 0;
  lua_pushboolean(L, 1);
  return 1;
}

static int sh_fswatch_wait(lua_State *L) {
  sh_fswatch_ud_t *ud = sh_fswatch_check(L, "watcher:wait");
  sh_fswatch_t *w = ud->w;
  if (w->changes > 0) {
    sh_sched_check(L, "watcher:wait");
    w->changes = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  sh_sched_check_wait(L, "watcher:wait");
  if (w->wait.task) return luaL_error(L, "watcher:wait: another task waits on this watcher");
  sh_sched_park(L, &w->wait, sh_fswatch_abort);
  return sh_sched_yield(L, sh_fswatch_wait_k, (lua_KContext)ud);
}

/* close, __gc and __close: the watch stops; its memory goes in the close callback. A task
 * parked on it holds the userdata, so __gc never meets one; an explicit close then raises. */
static int sh_fswatch_close(lua_State *L) {
  sh_fswatch_ud_t *ud = luaL_checkudata(L, 1, SH_FSWATCH_MT);
  sh_fswatch_t *w = ud->w;
  if (!w) return 0;
  if (w->wait.task) return luaL_error(L, "watcher:close: a task waits on this watcher");
  ud->w = NULL;
  uv_close((uv_handle_t *)&w->handle, sh_fswatch_closed);
  return 0;
}

static const luaL_Reg sh_fswatch_class[] = {
    {"wait", sh_fswatch_wait}, {"close", sh_fswatch_close},
    {"__gc", sh_fswatch_close}, {"__close", sh_fswatch_close},
    {NULL, NULL},
};

int luaopen_stagehost_core_fswatch(lua_State *L) {
  static const luaL_Reg funcs[] = {{"open", sh_fswatch_open}, {NULL, NULL}};
  return sh_newmodule(L, funcs, SH_FSWATCH_MT, sh_fswatch_class);
}
