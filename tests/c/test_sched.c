/* The scheduler on a real loop: timer heap order, disarm, tasks resumed only from the loop,
 * cancellation aborting a wait, the check -> allocate -> park order of a primitive, module state
 * per Lua state, shutdown hooks per scheduler, and no handle left once everything is closed. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "bindings/auxlib.h"
#include "bindings/modules.h"
#include "check.h"
#include "host/log.h"
#include "host/sched.h"
#include "host/util.h"

static int fired[16];
static int fire_order[16];
static int nfired;

typedef struct {
  sh_timer_t timer; /* first member: the callback casts back */
  int id;
} test_timer_t;

static void on_fire(sh_timer_t *t) {
  test_timer_t *tt = (test_timer_t *)t;
  fired[tt->id]++;
  fire_order[nfired++] = tt->id;
}

static void never_called(sh_timer_t *t) {
  (void)t;
  fprintf(stderr, "a disarmed timer fired\n");
  exit(1);
}

/* What every test runs on: a loop, and a Lua state with its scheduler and the core modules. */
typedef struct {
  uv_loop_t loop;
  sh_sched_t *s;
  lua_State *L;
} fixture_t;

static void setup(fixture_t *f) {
  uv_loop_init(&f->loop);
  f->L = luaL_newstate();
  luaL_openlibs(f->L);
  f->s = sh_sched_new(f->L, &f->loop);
  sh_modules_preload(f->L);
}

/* The Lua state goes first (a test may do this itself, to look in between) ... */
static void close_state(fixture_t *f) {
  sh_sched_shutdown(f->s);
  lua_close(f->L);
  f->L = NULL;
}

/* ... then the scheduler and the loop, which must have nothing left. */
static void finish(fixture_t *f) {
  if (f->L) close_state(f);
  sh_sched_free(f->s);
  CHECK_EQ_INT(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  CHECK_EQ_INT(uv_loop_close(&f->loop), 0); /* a leaked handle fails here */
}

static void test_timer_heap(fixture_t *f) {
  sh_sched_t *s = f->s;
  static const double delays[] = {0.030, 0.010, 0.050, 0.020, 0.040, 0.010, 0.060, 0.005};
  test_timer_t timers[8];
  for (int i = 0; i < 8; i++) {
    sh_timer_init(&timers[i].timer, on_fire);
    timers[i].id = i;
    sh_timer_arm(s, &timers[i].timer, delays[i]);
  }
  test_timer_t cancelled;
  sh_timer_init(&cancelled.timer, never_called);
  cancelled.id = 15;
  sh_timer_arm(s, &cancelled.timer, 0.001);
  sh_timer_disarm(s, &cancelled.timer);
  sh_timer_disarm(s, &cancelled.timer); /* twice is harmless */
  CHECK_EQ_INT(sh_sched_armed_timers(s), 8);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(nfired, 8);
  for (int i = 0; i < 8; i++) CHECK_EQ_INT(fired[i], 1);
  /* deadline order; equal deadlines in arming order (1 before 5) */
  static const int want[] = {7, 1, 5, 3, 0, 4, 2, 6};
  for (int i = 0; i < 8; i++) CHECK_EQ_INT(fire_order[i], want[i]);
  CHECK_EQ_INT(sh_sched_armed_timers(s), 0);
}

/* Spawn a Lua chunk as a task; returns the task (anchored in the registry by the caller). */
static sh_task_t *spawn_chunk(lua_State *L, const char *code) {
  CHECK(luaL_loadstring(L, code) == LUA_OK);
  sh_task_t *t = sh_task_spawn(L, 0);
  luaL_ref(L, LUA_REGISTRYINDEX);
  return t;
}

static void test_tasks(fixture_t *f) {
  lua_State *L = f->L;
  sh_task_t *sleeper = spawn_chunk(L, "local task = require 'stagehost.core.task' task.sleep(0.02) return 'slept'");
  sh_task_t *failing = spawn_chunk(L, "error('deliberate')");
  sh_task_t *waiting = spawn_chunk(L, "local task = require 'stagehost.core.task' task.sleep(60) return 'never'");
  sh_task_t *tbc = spawn_chunk(L,
      "local task = require 'stagehost.core.task'\n"
      "local _ <close> = setmetatable({}, {__close = function() CLOSED = true end})\n"
      "task.sleep(60)");
  sh_task_observe(failing); /* examined below: not an unobserved failure */
  /* nothing runs before the loop does: spawning only queues */
  CHECK(!sh_task_done(sleeper));
  CHECK(!sh_task_done(failing));
  CHECK_EQ_INT(sh_sched_live_tasks(f->s), 4);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* first turn: everything starts and parks or ends */
  CHECK(sh_task_done(failing));
  CHECK_EQ_INT(sh_task_outcome(failing), SH_TASK_ERROR);
  sh_task_push_error(L, failing);
  CHECK(strstr(lua_tostring(L, -1), "deliberate") != NULL);
  lua_pop(L, 1);
  CHECK(sh_task_cancel(waiting, "test cancel") == 1);
  CHECK(sh_task_cancel(waiting, "again") == 0);
  CHECK(sh_task_cancel(tbc, "close it") == 1);
  /* the cancelled sleeps must not keep the loop for 60 s: measured, with room for a slow machine */
  uint64_t drained_from = uv_hrtime();
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK((uv_hrtime() - drained_from) / 1000000000u < 10);
  CHECK(sh_task_done(sleeper));
  CHECK_EQ_INT(sh_task_outcome(sleeper), SH_TASK_OK);
  CHECK_EQ_INT(sh_task_outcome(waiting), SH_TASK_CANCELLED);
  CHECK_EQ_INT(sh_task_outcome(tbc), SH_TASK_CANCELLED);
  /* the cancellation is an error object of the one model: shared metatable, kind, reason */
  sh_task_push_error(L, waiting);
  CHECK(sh_is_cancel_error(L, -1));
  CHECK(sh_error_is(L, -1, "cancelled"));
  CHECK(!sh_error_is(L, -1, "timeout"));
  CHECK(strcmp(luaL_tolstring(L, -1, NULL), "test cancel") == 0);
  lua_getfield(L, -2, "reason");
  CHECK(strcmp(lua_tostring(L, -1), "test cancel") == 0);
  lua_getmetatable(L, -3);
  luaL_getmetatable(L, SH_ERROR_MT);
  CHECK(lua_rawequal(L, -1, -2));
  lua_pop(L, 5);
  lua_getglobal(L, "CLOSED");
  CHECK(lua_toboolean(L, -1)); /* the to-be-closed variable ran on cancellation */
  lua_pop(L, 1);
  CHECK_EQ_INT(sh_sched_live_tasks(f->s), 0);
  CHECK_EQ_INT(sh_sched_armed_timers(f->s), 0);
  CHECK_EQ_INT(sh_sched_unobserved_failures(f->s), 0);
}

/* A timeout's error, a look-alike table and other error objects, as sh_is_cancel_error sees them. */
static void test_cancel_errors(fixture_t *f) {
  lua_State *L = f->L;
  sh_task_t *timed = spawn_chunk(L,
      "local task = require 'stagehost.core.task'\n"
      "return task.timeout(0.001, function() local _, e = pcall(task.sleep, 60) TIMED = e error(e, 0) end)");
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(sh_task_outcome(timed), SH_TASK_OK); /* task.timeout returned false, "timeout" */
  lua_getglobal(L, "TIMED");
  CHECK(sh_is_cancel_error(L, -1));
  CHECK(sh_error_is(L, -1, "timeout"));
  CHECK(strcmp(luaL_tolstring(L, -1, NULL), "timeout after 0.001s") == 0);
  lua_getfield(L, -2, "scope");
  CHECK(lua_islightuserdata(L, -1));
  lua_pop(L, 3);
  /* errors.cancelled (ctx:cancel's) is one too; a look-alike table and a transport error are not */
  CHECK(luaL_dostring(L, "return require('stagehost.core.errors').new('cancelled', 'by the stage', {origin = 'stage'})") == LUA_OK);
  CHECK(sh_is_cancel_error(L, -1));
  CHECK(luaL_dostring(L, "return {kind = 'cancelled', reason = 'x'}") == LUA_OK);
  CHECK(!sh_is_cancel_error(L, -1));
  CHECK(!sh_error_is(L, -1, NULL));
  sh_error_push(L, "transport", "ECONNREFUSED", "refused");
  CHECK(!sh_is_cancel_error(L, -1));
  CHECK(sh_error_is(L, -1, "transport"));
  lua_getfield(L, -1, "code");
  CHECK(strcmp(lua_tostring(L, -1), "ECONNREFUSED") == 0);
  lua_pop(L, 4);
}

static void test_shutdown_with_parked_tasks(fixture_t *f) {
  /* tasks parked forever (a join cycle) must be detached before Lua goes away */
  lua_State *L = f->L;
  spawn_chunk(L,
      "local task = require 'stagehost.core.task'\n"
      "local me = task.current()\n"
      "local other = task.spawn(function() return me:join() end)\n"
      "other:join()");
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(sh_sched_live_tasks(f->s), 2);
}

/* ---- a primitive written the way sched.h asks: check, allocate, park ---- */

typedef struct {
  sh_wait_t wait;
  sh_timer_t timer;
} test_wait_t;

static int live_records; /* allocated and not yet freed */

static void test_wait_fire(sh_timer_t *t) {
  test_wait_t *w = SH_CONTAINER(t, test_wait_t, timer);
  sh_sched_wake(&w->wait);
}

static sh_sched_t *test_wait_sched;

/* the task was cancelled while parked: the record is the abort's to free */
static void test_wait_abort(sh_wait_t *wait) {
  test_wait_t *w = SH_CONTAINER(wait, test_wait_t, wait);
  sh_timer_disarm(test_wait_sched, &w->timer);
  free(w);
  live_records--;
}

static int test_wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  free((test_wait_t *)ctx);
  live_records--;
  lua_pushliteral(L, "woken");
  return 1;
}

/* test.wait(seconds): the record exists only once the wait is sure to park */
static int test_wait(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  sh_sched_check_wait(L, "test.wait");
  test_wait_t *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "test.wait: out of memory");
  live_records++;
  sh_timer_init(&w->timer, test_wait_fire);
  sh_timer_arm(test_wait_sched, &w->timer, seconds);
  sh_sched_park(L, &w->wait, test_wait_abort);
  return sh_sched_yield(L, test_wait_k, (lua_KContext)w);
}

static void test_check_then_park(fixture_t *f) {
  lua_State *L = f->L;
  test_wait_sched = f->s;
  lua_register(L, "test_wait", test_wait);
  /* outside a task: the scheduler's one message, before anything is allocated */
  CHECK(luaL_dostring(L, "test_wait(0)") != LUA_OK);
  CHECK(strstr(lua_tostring(L, -1), "test.wait: cannot wait here (only inside a stagehost task") != NULL);
  lua_pop(L, 1);
  CHECK_EQ_INT(live_records, 0);
  sh_task_t *plain = spawn_chunk(L, "R1 = test_wait(0.001)");
  sh_task_t *in_coroutine = spawn_chunk(L, "R2 = select(2, coroutine.resume(coroutine.create(test_wait), 0))");
  sh_task_t *cancelled = spawn_chunk(L,
      "local task = require 'stagehost.core.task'\n"
      "task.cancel(task.current(), 'cancelled first')\n"
      "local ok, err = pcall(test_wait, 60)\n"
      "R3 = tostring(err)");
  sh_task_t *aborted = spawn_chunk(L, "test_wait(60)");
  uv_run(&f->loop, UV_RUN_NOWAIT);
  CHECK(sh_task_cancel(aborted, "aborted while parked") == 1);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(sh_task_outcome(plain), SH_TASK_OK);
  CHECK_EQ_INT(sh_task_outcome(in_coroutine), SH_TASK_OK);
  CHECK_EQ_INT(sh_task_outcome(cancelled), SH_TASK_OK);
  CHECK_EQ_INT(sh_task_outcome(aborted), SH_TASK_CANCELLED);
  lua_getglobal(L, "R1");
  CHECK(strcmp(lua_tostring(L, -1), "woken") == 0);
  lua_getglobal(L, "R2");
  CHECK(strstr(lua_tostring(L, -1), "test.wait: cannot wait here") != NULL);
  lua_getglobal(L, "R3");
  CHECK(strcmp(lua_tostring(L, -1), "cancelled first") == 0);
  lua_pop(L, 3);
  CHECK_EQ_INT(live_records, 0); /* nothing allocated and then unwound */
}

/* ---- module state: one per Lua state, made once, released with it ---- */

static int created, released, refuse_create;

static void *count_create(lua_State *L) {
  if (refuse_create) {
    refuse_create = 0;
    luaL_error(L, "not now");
  }
  created++;
  return &created;
}

static void count_release(lua_State *L, void *state) {
  (void)L;
  CHECK(state == &created);
  released++;
}

static int get_state(lua_State *L) {
  lua_pushboolean(L, sh_sched_state(L, "test.state", count_create, count_release) == &created);
  return 1;
}

static void test_module_state(fixture_t *f) {
  lua_State *L = f->L;
  lua_register(L, "get_state", get_state);
  refuse_create = 1;
  CHECK(luaL_dostring(L, "return get_state()") != LUA_OK); /* create raised: nothing kept */
  lua_pop(L, 1);
  CHECK_EQ_INT(created, 0);
  CHECK(luaL_dostring(L, "assert(get_state()) assert(get_state())") == LUA_OK);
  CHECK_EQ_INT(created, 1); /* made on the next use, and only once */
  CHECK_EQ_INT(released, 0);
  close_state(f);
  CHECK_EQ_INT(released, 1); /* with the Lua state */
}

/* ---- shutdown hooks: each scheduler stops its own children ---- */

/* A scheduler with a child that would sleep for 30 s; its shutdown hooks must stop it. Run once
 * per scheduler: the hook is registered per scheduler, not once per process. */
static void test_hooks_per_scheduler(fixture_t *f) {
  static int rounds;
  int round = ++rounds;
  lua_State *L = f->L;
  sh_task_t *t = spawn_chunk(L,
      "local proc = require 'stagehost.core.proc'\n"
      "local p = proc.spawn({'sleep', '30', grace = 0.5}, 'test', false)\n"
      "return p:wait()");
  uv_run(&f->loop, UV_RUN_NOWAIT); /* the child runs, the task waits on it */
  CHECK(!sh_task_done(t));
  uint64_t t0 = uv_hrtime();
  sh_sched_run_shutdown_hooks(f->s); /* what main.c does on SIGINT/SIGTERM */
  while (!sh_task_done(t) && uv_hrtime() - t0 < 10000000000ULL) uv_run(&f->loop, UV_RUN_ONCE);
  CHECK(sh_task_done(t));
  CHECK(uv_hrtime() - t0 < 5000000000ULL); /* stopped, not waited out */
  CHECK_EQ_INT(sh_task_outcome(t), SH_TASK_OK);
  lua_State *co = t->co;
  lua_getfield(co, -1, "signal");
  if (!lua_isstring(co, -1) || strcmp(lua_tostring(co, -1), "SIGTERM") != 0) {
    fprintf(stderr, "round %d: the child was not stopped by this scheduler's hook\n", round);
    exit(1);
  }
  lua_pop(co, 1);
}

int main(void) {
  static void (*const tests[])(fixture_t *f) = {
      test_timer_heap, test_tasks, test_cancel_errors, test_shutdown_with_parked_tasks, test_check_then_park,
      test_module_state,
      test_hooks_per_scheduler, test_hooks_per_scheduler, /* twice: a second scheduler's hook */
  };
  sh_log_init(NULL);
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
    fixture_t f;
    setup(&f);
    tests[i](&f);
    finish(&f);
  }
  sh_log_shutdown();
  puts("test_sched: ok");
  return 0;
}
