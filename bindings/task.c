/* stagehost.core.task: spawn, join, cancel, sleep, now, timeout, current. task.all is Lua
 * (stdlib/stagehost/task.lua) on top of spawn and join. */
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "../host/sched.h"
#include "../host/util.h"
#include "auxlib.h"

#define SH_TASK_MT "stagehost.task"

static sh_task_t *sh_check_task(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, SH_TASK_MT);
}

static int sh_task_spawn_l(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  sh_task_spawn(L, lua_gettop(L) - 1);
  return 1;
}

/* Push what a finished task left: true and its results, or false, the error, the traceback.
 * Values are copied, so a task can be joined any number of times. */
static int sh_join_results(lua_State *L, sh_task_t *t) {
  if (t->outcome == SH_TASK_OK) {
    int base = lua_gettop(t->co) - t->nresults;
    luaL_checkstack(L, t->nresults + 1, "too many results to join");
    lua_pushboolean(L, 1);
    for (int i = 1; i <= t->nresults; i++) lua_pushvalue(t->co, base + i);
    lua_xmove(t->co, L, t->nresults);
    return t->nresults + 1;
  }
  lua_pushboolean(L, 0);
  lua_pushvalue(t->co, 1);
  lua_pushvalue(t->co, 2);
  lua_xmove(t->co, L, 2);
  return 3;
}

static void sh_join_abort(sh_wait_t *w) {
  sh_task_t *me = SH_CONTAINER(w, sh_task_t, join_wait);
  sh_task_t *target = me->join_target;
  if (me->join_prev)
    me->join_prev->join_next = me->join_next;
  else if (target && target->joiners == me)
    target->joiners = me->join_next;
  if (me->join_next) me->join_next->join_prev = me->join_prev;
  me->join_next = me->join_prev = NULL;
  me->join_target = NULL;
}

static int sh_join_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  sh_task_t *me = sh_task_current(L);
  me->join_target = NULL;
  return sh_join_results(L, sh_check_task(L, 1));
}

static int sh_task_join(lua_State *L) {
  sh_task_t *t = sh_check_task(L, 1);
  lua_settop(L, 1);
  sh_task_t *me = sh_task_current(L);
  if (!me) sh_sched_check_wait(L, "task:join"); /* raises: joining is for tasks */
  if (me == t) return luaL_error(L, "task:join: a task cannot join itself");
  sh_task_observe(t);
  if (sh_task_done(t)) { /* nothing to wait for: also fine where a task cannot yield */
    sh_sched_check(L, "task:join");
    return sh_join_results(L, t);
  }
  sh_sched_check_wait(L, "task:join");
  sh_sched_park(L, &me->join_wait, sh_join_abort);
  me->join_target = t;
  me->join_prev = NULL;
  me->join_next = t->joiners;
  if (t->joiners) t->joiners->join_prev = me;
  t->joiners = me;
  return sh_sched_yield(L, sh_join_k, 0);
}

static int sh_task_cancel_l(lua_State *L) {
  sh_task_t *t = sh_check_task(L, 1);
  const char *reason = luaL_optstring(L, 2, "cancelled");
  lua_pushboolean(L, sh_task_cancel(t, reason));
  return 1;
}

static int sh_task_status(lua_State *L) {
  sh_task_t *t = sh_check_task(L, 1);
  static const char *const outcomes[] = {"success", "failure", "cancelled"};
  lua_pushstring(L, sh_task_done(t) ? outcomes[t->outcome] : "running");
  return 1;
}

static int sh_task_tostring(lua_State *L) {
  sh_task_t *t = sh_check_task(L, 1);
  lua_pushfstring(L, "task %d (%s)", (int)t->id,
                  sh_task_done(t) ? (t->outcome == SH_TASK_OK ? "done" : "failed") : "running");
  return 1;
}

static void sh_sleep_fire(sh_timer_t *timer) {
  sh_task_t *t = SH_CONTAINER(timer, sh_task_t, sleep_timer);
  sh_sched_wake(&t->sleep_wait);
}

static void sh_sleep_abort(sh_wait_t *w) {
  sh_task_t *t = SH_CONTAINER(w, sh_task_t, sleep_wait);
  sh_timer_disarm(t->sched, &t->sleep_timer);
}

static int sh_task_sleep(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  if (seconds != seconds || seconds < 0) luaL_argerror(L, 1, "must be a number of seconds >= 0");
  sh_task_t *t = sh_sched_check_wait(L, "task.sleep");
  sh_sched_park(L, &t->sleep_wait, sh_sleep_abort);
  sh_timer_init(&t->sleep_timer, sh_sleep_fire);
  sh_timer_arm(t->sched, &t->sleep_timer, seconds);
  return sh_sched_yield(L, NULL, 0); /* returns nothing */
}

static int sh_task_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

static int sh_task_current_l(lua_State *L) {
  sh_task_t *t = sh_task_current(L);
  if (!t) {
    lua_pushnil(L);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->anchor);
  return 1;
}

/* After fn returned or raised: leave the scope, then report completion, the scope's own
 * timeout, or re-raise anything else (an outer timeout or a cancellation included). */
static int sh_timeout_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  sh_scope_t *sc = lua_touserdata(L, 1);
  sh_scope_leave(L, sc);
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pushboolean(L, 1);
    lua_replace(L, 2);
    return lua_gettop(L) - 1;
  }
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "scope");
    int mine = lua_touserdata(L, -1) == (void *)sc;
    lua_pop(L, 1);
    if (mine) {
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "timeout");
      return 2;
    }
  }
  return lua_error(L);
}

static int sh_task_timeout(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  if (seconds != seconds || seconds < 0) luaL_argerror(L, 1, "must be a number of seconds >= 0");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  sh_sched_check_wait(L, "task.timeout"); /* its fn runs in this task, and may wait */
  int nargs = lua_gettop(L) - 2;
  sh_scope_t *sc = lua_newuserdatauv(L, sizeof *sc, 0);
  lua_insert(L, 1); /* scope seconds fn args... */
  sh_scope_enter(L, sc, seconds);
  int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, 0, sh_timeout_k);
  return sh_timeout_k(L, status, 0);
}

static void sh_count_handle(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) ++*(int *)arg;
}

/* task.stats() -> {tasks, timers, handles}: what is still alive, for leak checks in tests */
static int sh_task_stats(lua_State *L) {
  sh_sched_t *s = sh_sched_get(L);
  int handles = 0;
  uv_walk(sh_sched_loop(L), sh_count_handle, &handles);
  lua_createtable(L, 0, 3);
  sh_setfield_integer(L, "tasks", (lua_Integer)sh_sched_live_tasks(s));
  sh_setfield_integer(L, "timers", (lua_Integer)sh_sched_armed_timers(s));
  sh_setfield_integer(L, "handles", handles);
  return 1;
}

static const luaL_Reg sh_task_methods[] = {
    {"join", sh_task_join},
    {"cancel", sh_task_cancel_l},
    {"status", sh_task_status},
    {NULL, NULL},
};

static const luaL_Reg sh_task_funcs[] = {
    {"spawn", sh_task_spawn_l},
    {"sleep", sh_task_sleep},
    {"now", sh_task_now},
    {"timeout", sh_task_timeout},
    {"current", sh_task_current_l},
    {"stats", sh_task_stats},
    {"join", sh_task_join},
    {"cancel", sh_task_cancel_l},
    {NULL, NULL},
};

int sh_task_open(lua_State *L) {
  luaL_getmetatable(L, SH_TASK_MT); /* created by the scheduler, which owns __gc (and __name) */
  luaL_newlib(L, sh_task_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, sh_task_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newlib(L, sh_task_funcs);
  return 1;
}
