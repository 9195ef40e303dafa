#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "../bindings/auxlib.h"
#include "log.h"
#include "util.h"

#define SH_TASK_MT "stagehost.task"
#define SH_SCHED_KEY "stagehost.sched"
#define SH_STATE_MT "stagehost.module_state"

typedef struct {
  void (*fn)(void *);
  void *arg;
} sh_hook_t;

struct sh_sched {
  lua_State *L;           /* the main state; idle whenever the scheduler resumes a task */
  uv_loop_t *loop;
  uv_check_t check;       /* resumes ready tasks after each poll */
  uv_idle_t idle;         /* active while tasks are ready, so the poll does not block */
  uv_timer_t timer;       /* serves the sh_timer_t heap */
  sh_timer_t **heap;      /* min-heap by (due, seq) */
  size_t heap_len, heap_cap;
  uint64_t timer_seq;
  sh_task_t *ready_head, *ready_tail;
  sh_task_t *live;        /* every task not yet done */
  size_t nlive;
  sh_task_t *running;     /* the task being resumed, if any */
  sh_task_t *main;        /* the script's task: its error ends the run */
  unsigned long next_id;
  int unobserved;         /* failed tasks reported with nobody joining */
  int gc_stress;          /* full GC after each resume (STAGEHOST_GC_STRESS) */
  sh_buf_t hooks;         /* sh_hook_t[], run on SIGINT/SIGTERM */
  int handles_closing;
};

/* ---- timers: one uv_timer_t for the whole heap ---- */

static int sh_timer_before(const sh_timer_t *a, const sh_timer_t *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void sh_heap_swap(sh_sched_t *s, size_t i, size_t j) {
  sh_timer_t *t = s->heap[i];
  s->heap[i] = s->heap[j];
  s->heap[j] = t;
  s->heap[i]->slot = i;
  s->heap[j]->slot = j;
}

static void sh_heap_up(sh_sched_t *s, size_t i) {
  while (i > 0 && sh_timer_before(s->heap[i], s->heap[(i - 1) / 2])) {
    sh_heap_swap(s, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void sh_heap_down(sh_sched_t *s, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < s->heap_len && sh_timer_before(s->heap[l], s->heap[m])) m = l;
    if (r < s->heap_len && sh_timer_before(s->heap[r], s->heap[m])) m = r;
    if (m == i) return;
    sh_heap_swap(s, i, m);
    i = m;
  }
}

static void sh_timer_cb(uv_timer_t *handle);

/* Keep the uv timer pointed at the earliest entry; stopped when the heap is empty so an idle
 * heap does not keep the loop alive. Deadlines are in hrtime, not the loop's cached time: a task
 * resumed late in a long iteration would otherwise arm against a stale clock and wake early. */
static void sh_timer_reschedule(sh_sched_t *s) {
  if (s->heap_len == 0) {
    uv_timer_stop(&s->timer);
    return;
  }
  uint64_t now = uv_hrtime(), due = s->heap[0]->due;
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_timer_start(&s->timer, sh_timer_cb, ms, 0);
}

void sh_timer_init(sh_timer_t *t, void (*fire)(sh_timer_t *)) {
  memset(t, 0, sizeof *t);
  t->slot = SIZE_MAX;
  t->fire = fire;
}

void sh_timer_disarm(sh_sched_t *s, sh_timer_t *t) {
  if (t->slot == SIZE_MAX) return;
  size_t i = t->slot;
  s->heap_len--;
  if (i != s->heap_len) {
    s->heap[i] = s->heap[s->heap_len];
    s->heap[i]->slot = i;
    sh_heap_down(s, i);
    sh_heap_up(s, i);
  }
  t->slot = SIZE_MAX;
  if (i == 0) sh_timer_reschedule(s);
}

void sh_timer_arm(sh_sched_t *s, sh_timer_t *t, double seconds) {
  sh_timer_disarm(s, t);
  if (s->heap_len == s->heap_cap) {
    size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
    sh_timer_t **grown = realloc(s->heap, cap * sizeof *grown);
    if (!grown) abort(); /* out of memory in the loop: nothing sane is left to do */
    s->heap = grown;
    s->heap_cap = cap;
  }
  if (!(seconds > 0)) seconds = 0;
  if (seconds > 1e9) seconds = 1e9;
  t->due = uv_hrtime() + (uint64_t)(seconds * 1e9);
  t->seq = s->timer_seq++;
  t->slot = s->heap_len;
  s->heap[s->heap_len++] = t;
  sh_heap_up(s, t->slot);
  if (t->slot == 0) sh_timer_reschedule(s);
}

/* called by libuv when the earliest heap entry is due (libuv's coarse clock may call it a
 * little early: then nothing fires and the timer is re-armed for the rest) */
static void sh_timer_cb(uv_timer_t *handle) {
  sh_sched_t *s = handle->data;
  uint64_t now = uv_hrtime();
  while (s->heap_len > 0 && s->heap[0]->due <= now) {
    sh_timer_t *t = s->heap[0];
    sh_timer_disarm(s, t);
    t->fire(t);
  }
  sh_timer_reschedule(s);
}

/* ---- the ready queue ---- */

static void sh_idle_cb(uv_idle_t *handle) {
  /* nothing: an active idle handle only makes the poll return at once */
  (void)handle;
}

static void sh_ready_push(sh_sched_t *s, sh_task_t *t) {
  if (t->queued) return;
  t->queued = 1;
  t->ready_next = NULL;
  if (s->ready_tail)
    s->ready_tail->ready_next = t;
  else
    s->ready_head = t;
  s->ready_tail = t;
  if (!uv_is_active((uv_handle_t *)&s->idle)) uv_idle_start(&s->idle, sh_idle_cb);
}

static sh_task_t *sh_ready_pop(sh_sched_t *s) {
  sh_task_t *t = s->ready_head;
  if (!t) return NULL;
  s->ready_head = t->ready_next;
  if (!s->ready_head) s->ready_tail = NULL;
  t->queued = 0;
  t->ready_next = NULL;
  return t;
}

/* ---- tasks ---- */

static sh_task_t *sh_task_of(lua_State *L) { return *(sh_task_t **)lua_getextraspace(L); }

sh_task_t *sh_task_current(lua_State *L) { return sh_task_of(L); }
int sh_task_done(const sh_task_t *t) { return t->state == SH_TASK_DONE; }
int sh_task_outcome(const sh_task_t *t) { return t->outcome; }
size_t sh_sched_live_tasks(sh_sched_t *s) { return s->nlive; }
size_t sh_sched_armed_timers(sh_sched_t *s) { return s->heap_len; }
int sh_sched_unobserved_failures(sh_sched_t *s) { return s->unobserved; }

void sh_sched_set_main(sh_sched_t *s, sh_task_t *t) { s->main = t; }

sh_sched_t *sh_sched_get(lua_State *L) {
  sh_task_t *t = sh_task_of(L);
  if (t) return t->sched;
  lua_getfield(L, LUA_REGISTRYINDEX, SH_SCHED_KEY);
  sh_sched_t *s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s;
}

uv_loop_t *sh_sched_loop(lua_State *L) { return sh_sched_get(L)->loop; }

void sh_sched_trace(sh_task_t *t, const char *what) {
  if (sh_log_enabled(SH_LOG_DEBUG)) sh_log_printf(SH_LOG_DEBUG, "task %lu %s", t->id, what);
}

static void sh_live_unlink(sh_sched_t *s, sh_task_t *t) {
  if (t->live_prev)
    t->live_prev->live_next = t->live_next;
  else
    s->live = t->live_next;
  if (t->live_next) t->live_next->live_prev = t->live_prev;
  t->live_prev = t->live_next = NULL;
  s->nlive--;
}

void sh_push_cancel_error(lua_State *L, const char *kind, const char *reason, const void *scope) {
  sh_error_push(L, kind, NULL, reason);
  sh_setfield_string(L, "reason", reason);
  if (scope) {
    lua_pushlightuserdata(L, (void *)scope);
    lua_setfield(L, -2, "scope");
  }
}

static int sh_has_pending(const sh_task_t *t) {
  if (t->cancelled) return 1;
  for (const sh_scope_t *sc = t->scopes; sc; sc = sc->outer)
    if (sc->expired) return 1;
  return 0;
}

/* The error that unwinds a task: its cancellation first, else its outermost expired scope. */
static int sh_push_pending(lua_State *L, sh_task_t *t) {
  if (t->cancelled) {
    sh_push_cancel_error(L, "cancelled", t->cancel_reason ? t->cancel_reason : "cancelled", NULL);
    return 1;
  }
  sh_scope_t *hit = NULL;
  for (sh_scope_t *sc = t->scopes; sc; sc = sc->outer)
    if (sc->expired) hit = sc;
  if (!hit) return 0;
  char msg[64];
  snprintf(msg, sizeof msg, "timeout after %gs", hit->seconds);
  sh_push_cancel_error(L, "timeout", msg, hit);
  return 1;
}

static int sh_task_finish_wake(sh_sched_t *s, sh_task_t *t);

/* Wake a waiting task early: abort its primitive (which then owns its own cleanup) and queue it
 * so its continuation raises the pending error. */
static void sh_task_interrupt(sh_task_t *t) {
  if (t->state == SH_TASK_WAITING) {
    sh_wait_t *w = t->wait;
    t->wait = NULL;
    w->task = NULL;
    w->abort(w);
    t->interrupted = 1;
    t->state = SH_TASK_READY;
    sh_ready_push(t->sched, t);
  } else if (t->state == SH_TASK_READY && t->plain_yield) {
    t->interrupted = 1;
  }
}

static int sh_task_gc(lua_State *L) {
  sh_task_t *t = luaL_checkudata(L, 1, SH_TASK_MT);
  sh_log_ctx_release(t->log_ctx);
  t->log_ctx = NULL;
  if (t->reported && t->co) { /* failed, and nobody will ever join it now */
    size_t len;
    const char *tb = lua_tolstring(t->co, 2, &len);
    lua_pushfstring(L, "task %d failed and nobody joined it: %s", (int)t->id, tb ? tb : "?");
    tb = lua_tolstring(L, -1, &len);
    sh_log_write(SH_LOG_ERROR, tb, len);
    t->reported = 0; /* still counted in the exit code */
  }
  free(t->cancel_reason);
  t->cancel_reason = NULL;
  return 0;
}

sh_task_t *sh_task_spawn(lua_State *L, int nargs) {
  sh_sched_t *s = sh_sched_get(L);
  int fidx = lua_gettop(L) - nargs;
  sh_task_t *t = lua_newuserdatauv(L, sizeof *t, 1);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, SH_TASK_MT);
  t->sched = s;
  t->id = ++s->next_id;
  sh_task_t *parent = sh_task_of(L);
  if (parent && parent->log_ctx) {
    t->log_ctx = parent->log_ctx;
    sh_log_ctx_retain(t->log_ctx);
  }
  t->co = lua_newthread(L);
  *(sh_task_t **)lua_getextraspace(t->co) = t;
  lua_setiuservalue(L, -2, 1);
  /* stack: fn args... task */
  lua_insert(L, fidx);                 /* task fn args... */
  lua_xmove(L, t->co, nargs + 1);      /* fn and args move to the coroutine */
  t->nargs = nargs;
  lua_pushvalue(L, fidx);
  t->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  t->live_next = s->live;
  if (s->live) s->live->live_prev = t;
  s->live = t;
  s->nlive++;
  t->state = SH_TASK_READY;
  sh_ready_push(s, t);
  sh_sched_trace(t, "spawned");
  return t;
}

/* Done: record the outcome, release the anchor so an unreferenced task can be collected, and
 * wake every joiner. Values stay on t->co's stack for join(). */
static void sh_task_finish(sh_sched_t *s, sh_task_t *t, int outcome, int nresults) {
  t->state = SH_TASK_DONE;
  t->outcome = outcome;
  t->nresults = nresults;
  sh_live_unlink(s, t);
  sh_task_finish_wake(s, t);
  sh_sched_trace(t, outcome == SH_TASK_OK ? "finished" : outcome == SH_TASK_CANCELLED ? "cancelled" : "failed");
  /* a failed script ends the host even while a server or a timer would keep the loop alive;
   * after a success they keep it running, as a serving script expects. A cancellation (a
   * signal, `stagehost cancel`) already has its own way down, with grace periods. */
  if (t == s->main && outcome == SH_TASK_ERROR) uv_stop(s->loop);
  if (outcome == SH_TASK_ERROR && !t->observed) {
    /* nobody joined it yet; a join may still come (task.all joins one by one), so the error
     * is only printed when the task is collected unjoined, or at exit */
    t->reported = 1;
    s->unobserved++;
  }
  luaL_unref(s->L, LUA_REGISTRYINDEX, t->anchor);
  t->anchor = LUA_NOREF;
}

static int sh_task_finish_wake(sh_sched_t *s, sh_task_t *t) {
  (void)s;
  int n = 0;
  while (t->joiners) {
    sh_task_t *j = t->joiners;
    t->joiners = j->join_next;
    j->join_next = j->join_prev = NULL;
    sh_sched_wake(&j->join_wait);
    n++;
  }
  return n;
}

static void sh_interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  sh_task_t *t = sh_task_of(L);
  if (t && sh_push_pending(L, t)) lua_error(L);
}

int sh_is_cancel_error(lua_State *L, int idx) {
  return sh_error_is(L, idx, "cancelled") || sh_error_is(L, idx, "timeout");
}

/* Runs on the main state, protected: __tostring of an error object may itself fail. */
static int sh_describe_error(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  const char *msg = luaL_tolstring(L, 2, NULL);
  luaL_traceback(L, co, msg, 0);
  return 1;
}

/* A task raised: take the traceback while its frames still exist, then reset the coroutine so
 * its pending to-be-closed variables run, and leave [error, traceback] on its stack. Functions
 * are never called on the dead coroutine itself. */
static void sh_task_fail(sh_sched_t *s, sh_task_t *t) {
  lua_State *L = s->L, *co = t->co;
  int cancelled = sh_is_cancel_error(co, -1);
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1); /* L: err */
  lua_pushcfunction(L, sh_describe_error);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushvalue(L, -3); /* L: err describe co err */
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
  }
  lua_pushvalue(co, -1); /* the reset closes with the original error on top */
  lua_resetthread(co);
  lua_settop(co, 0);
  lua_xmove(L, co, 2); /* co: err traceback */
  sh_task_finish(s, t, cancelled ? SH_TASK_CANCELLED : SH_TASK_ERROR, 2);
}

/* Resume one task and file the result. Only called from sh_sched_drain: no other task is
 * running and the main state's stack is free. */
static void sh_task_resume(sh_sched_t *s, sh_task_t *t) {
  lua_State *co = t->co;
  int nargs = t->nargs, nres = 0;
  t->nargs = 0;
  if (!t->started) {
    t->started = 1;
    if (t->cancelled) { /* cancelled before it ever ran: end it without running a line */
      lua_settop(co, 0);
      sh_push_pending(co, t);
      lua_pushliteral(co, "");
      sh_task_finish(s, t, SH_TASK_CANCELLED, 2);
      return;
    }
  }
  if (t->plain_yield && t->interrupted) {
    t->interrupted = 0;
    lua_sethook(co, sh_interrupt_hook, LUA_MASKCOUNT, 1);
  }
  t->plain_yield = 0;
  t->state = SH_TASK_RUNNING;
  s->running = t;
  int status = lua_resume(co, s->L, nargs, &nres);
  s->running = NULL;
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (t->state == SH_TASK_RUNNING) { /* coroutine.yield() from the task itself: run it again later */
      t->plain_yield = 1;
      t->state = SH_TASK_READY;
      sh_ready_push(s, t);
    }
  } else if (status == LUA_OK) {
    sh_task_finish(s, t, SH_TASK_OK, nres);
  } else {
    sh_task_fail(s, t);
  }
  if (s->gc_stress) lua_gc(s->L, LUA_GCCOLLECT);
}

/* called by libuv after each poll (and whenever idle keeps the loop spinning) */
static void sh_sched_drain(uv_check_t *handle) {
  sh_sched_t *s = handle->data;
  /* only the tasks queued now: a task that keeps yielding must not starve I/O */
  size_t n = 0;
  for (sh_task_t *t = s->ready_head; t; t = t->ready_next) n++;
  while (n-- > 0) {
    sh_task_t *t = sh_ready_pop(s);
    if (!t) break;
    if (t->state == SH_TASK_DONE) continue;
    sh_task_resume(s, t);
  }
  if (!s->ready_head) uv_idle_stop(&s->idle);
}

/* The only place "cannot wait here" is raised, in one form for every primitive. Raising here,
 * before the primitive allocates anything, is what lets sh_sched_park never raise. */
sh_task_t *sh_sched_check_wait(lua_State *L, const char *who) {
  sh_task_t *t = sh_task_of(L);
  if (!t || !lua_isyieldable(L))
    luaL_error(L, "%s: cannot wait here (only inside a stagehost task, not in a plain coroutine, "
                  "a metamethod or a module's top-level code)", who);
  if (sh_push_pending(L, t)) lua_error(L);
  return t;
}

/* Registers w for the running task; sh_sched_check_wait has vouched for it earlier in the same
 * call, and nothing between can make a task pending (callbacks do not run inside a call). A
 * caller that skipped the check is a bug: abort loudly rather than park what cannot resume. */
void sh_sched_park(lua_State *L, sh_wait_t *w, void (*abort_fn)(sh_wait_t *)) {
  sh_task_t *t = sh_task_of(L);
  if (!t || !lua_isyieldable(L) || t->state != SH_TASK_RUNNING || t->wait || sh_has_pending(t)) {
    fprintf(stderr, "stagehost: sh_sched_park without sh_sched_check_wait (a bug)\n");
    abort();
  }
  w->task = t;
  w->abort = abort_fn;
  t->wait = w;
  t->state = SH_TASK_WAITING;
}

void sh_sched_check(lua_State *L, const char *who) {
  (void)who;
  sh_task_t *t = sh_task_of(L);
  if (t && sh_push_pending(L, t)) lua_error(L);
}

int sh_sched_can_wait(lua_State *L) { return sh_task_of(L) != NULL && lua_isyieldable(L); }

static int sh_sched_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  sh_task_t *t = sh_task_of(L);
  lua_KFunction k = t->k;
  lua_KContext kctx = t->kctx;
  t->k = NULL;
  if (t->interrupted) {
    t->interrupted = 0;
    if (sh_push_pending(L, t)) return lua_error(L);
    /* nothing pending any more (a scope left meanwhile): the work was still aborted */
    return luaL_error(L, "wait aborted");
  }
  return k ? k(L, status, kctx) : 0;
}

int sh_sched_yield(lua_State *L, lua_KFunction k, lua_KContext ctx) {
  sh_task_t *t = sh_task_of(L);
  t->k = k;
  t->kctx = ctx;
  return lua_yieldk(L, 0, 0, sh_sched_k);
}

/* The task was cancelled: the request completes on its own, and its callback frees the record
 * since no task waits on it any more. */
static void sh_await_abort(sh_wait_t *w) { (void)w; }

/* Inside the task, after the request's callback woke it: the record is ours to free now. */
static int sh_await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  sh_await_t *a = (sh_await_t *)ctx;
  int rc = a->status;
  const char *who = a->who;
  free(a);
  return sh_uv_result(L, rc, who);
}

int sh_await_yield(lua_State *L, sh_await_t *a, const char *who) {
  a->who = who;
  sh_sched_park(L, &a->wait, sh_await_abort);
  return sh_sched_yield(L, sh_await_k, (lua_KContext)a);
}

void sh_await_done(sh_await_t *a, int status) {
  if (!a->wait.task) {
    free(a);
    return;
  }
  a->status = status;
  sh_sched_wake(&a->wait);
}

void sh_sched_wake(sh_wait_t *w) {
  sh_task_t *t = w->task;
  if (!t) return; /* aborted: the primitive cleans up on its own */
  w->task = NULL;
  t->wait = NULL;
  t->state = SH_TASK_READY;
  sh_ready_push(t->sched, t);
}

void sh_task_cancel_all(sh_sched_t *s, const char *reason) {
  for (sh_task_t *t = s->live; t; t = t->live_next) {
    if (t->cancelled) continue;
    t->cancelled = 1;
    t->cancel_reason = strdup(reason);
    sh_task_interrupt(t);
  }
}

/* ---- task.timeout scopes ---- */

static void sh_scope_fire(sh_timer_t *timer) {
  sh_scope_t *sc = (sh_scope_t *)timer; /* timer is the first member */
  sc->expired = 1;
  sh_task_interrupt(sc->task);
}

void sh_scope_enter(lua_State *L, sh_scope_t *sc, double seconds) {
  sh_task_t *t = sh_task_of(L);
  sh_timer_init(&sc->timer, sh_scope_fire);
  sc->task = t;
  sc->seconds = seconds;
  sc->expired = 0;
  sc->outer = t->scopes;
  t->scopes = sc;
  sh_timer_arm(t->sched, &sc->timer, seconds);
}

void sh_scope_leave(lua_State *L, sh_scope_t *sc) {
  sh_task_t *t = sh_task_of(L);
  sh_timer_disarm(t->sched, &sc->timer);
  /* scopes nest with the C stack, so sc is innermost; unlink defensively anyway */
  for (sh_scope_t **p = &t->scopes; *p; p = &(*p)->outer)
    if (*p == sc) {
      *p = sc->outer;
      break;
    }
}

/* ---- task.cancel, join: the Lua side needs these two ---- */

int sh_task_cancel(sh_task_t *t, const char *reason) {
  if (t->state == SH_TASK_DONE || t->cancelled) return 0;
  t->cancelled = 1;
  t->cancel_reason = strdup(reason ? reason : "cancelled");
  sh_sched_trace(t, "cancel requested");
  if (!t->started) {
    sh_ready_push(t->sched, t); /* it is queued already; finishing happens on its turn */
    return 1;
  }
  sh_task_interrupt(t);
  return 1;
}

void sh_task_set_log_ctx(lua_State *L, sh_log_ctx_t *ctx) {
  sh_task_t *t = sh_task_of(L);
  if (!t) {
    sh_log_ctx_release(ctx);
    return;
  }
  sh_log_ctx_release(t->log_ctx);
  t->log_ctx = ctx;
}

static sh_sched_t *sh_log_sched; /* whose running task the log asks about */

static sh_log_ctx_t *sh_sched_log_ctx(void) {
  return sh_log_sched && sh_log_sched->running ? sh_log_sched->running->log_ctx : NULL;
}

void sh_task_observe(sh_task_t *t) {
  t->observed = 1;
  if (t->reported) { /* reported as unobserved already; now somebody handles it */
    t->reported = 0;
    t->sched->unobserved--;
  }
}

/* A failed task's coroutine holds [error, traceback]: push slot i of it, or nil. */
static void sh_task_push_failure(lua_State *L, sh_task_t *t, int i) {
  if (t->state != SH_TASK_DONE || t->outcome == SH_TASK_OK) {
    lua_pushnil(L);
    return;
  }
  lua_pushvalue(t->co, i);
  lua_xmove(t->co, L, 1);
}

void sh_task_push_error(lua_State *L, sh_task_t *t) { sh_task_push_failure(L, t, 1); }
void sh_task_push_traceback(lua_State *L, sh_task_t *t) { sh_task_push_failure(L, t, 2); }

/* ---- lifecycle ---- */

static size_t sh_sched_nhooks(const sh_sched_t *s) { return s->hooks.len / sizeof(sh_hook_t); }
static sh_hook_t *sh_sched_hook(const sh_sched_t *s, size_t i) { return (sh_hook_t *)s->hooks.data + i; }

void sh_sched_on_shutdown(sh_sched_t *s, void (*fn)(void *), void *arg) {
  sh_hook_t h = {fn, arg};
  sh_buf_add(&s->hooks, &h, sizeof h); /* out of memory: that module's children are not stopped early */
}

void sh_sched_off_shutdown(sh_sched_t *s, void (*fn)(void *), void *arg) {
  for (size_t i = 0; i < sh_sched_nhooks(s); i++) {
    sh_hook_t *h = sh_sched_hook(s, i);
    if (h->fn != fn || h->arg != arg) continue;
    memmove(h, h + 1, (sh_sched_nhooks(s) - i - 1) * sizeof *h);
    s->hooks.len -= sizeof *h;
    return;
  }
}

void sh_sched_run_shutdown_hooks(sh_sched_t *s) {
  for (size_t i = 0; i < sh_sched_nhooks(s); i++) sh_sched_hook(s, i)->fn(sh_sched_hook(s, i)->arg);
}

/* ---- module state: one per Lua state, hence per scheduler ---- */

/* The registry's hold on a module's state: the userdata's __gc is the module's release. */
typedef struct {
  void *state;                                /* NULL until create succeeded */
  void (*release)(lua_State *L, void *state);
} sh_state_box_t;

static int sh_state_box_gc(lua_State *L) {
  sh_state_box_t *box = luaL_checkudata(L, 1, SH_STATE_MT);
  void *state = box->state;
  box->state = NULL;
  if (state) box->release(L, state);
  return 0;
}

void *sh_sched_state(lua_State *L, const char *key, void *(*create)(lua_State *L),
                     void (*release)(lua_State *L, void *state)) {
  sh_state_box_t *box;
  if (lua_getfield(L, LUA_REGISTRYINDEX, key) == LUA_TUSERDATA) {
    box = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (box->state) return box->state;
  } else {
    lua_pop(L, 1);
    /* registered before create runs, so a state create made is always released */
    box = lua_newuserdatauv(L, sizeof *box, 0);
    box->state = NULL;
    box->release = release;
    luaL_setmetatable(L, SH_STATE_MT);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
  }
  box->state = create(L);
  return box->state;
}

sh_sched_t *sh_sched_new(lua_State *L, uv_loop_t *loop) {
  sh_sched_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->L = L;
  s->loop = loop;
  const char *stress = getenv("STAGEHOST_GC_STRESS");
  s->gc_stress = stress && *stress && strcmp(stress, "0") != 0;
#ifdef SH_GC_STRESS
  s->gc_stress = 1;
#endif
  uv_check_init(loop, &s->check);
  s->check.data = s;
  uv_check_start(&s->check, sh_sched_drain);
  uv_unref((uv_handle_t *)&s->check);
  uv_idle_init(loop, &s->idle);
  s->idle.data = s;
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  *(sh_task_t **)lua_getextraspace(L) = NULL;
  sh_log_sched = s;
  sh_log_set_context_source(sh_sched_log_ctx);
  lua_pushlightuserdata(L, s);
  lua_setfield(L, LUA_REGISTRYINDEX, SH_SCHED_KEY);
  static const luaL_Reg task_class[] = {{"__gc", sh_task_gc}, {NULL, NULL}};
  static const luaL_Reg state_class[] = {{"__gc", sh_state_box_gc}, {NULL, NULL}};
  sh_metatable(L, SH_TASK_MT, task_class);
  sh_metatable(L, SH_STATE_MT, state_class);
  sh_error_metatable(L); /* made now: a cancellation must not be the first to need it */
  lua_pop(L, 1);
  return s;
}

void sh_sched_shutdown(sh_sched_t *s) {
  /* tasks still parked (a deadlock, or an exit while waiting) must not be reachable from a
   * late callback once Lua is gone */
  for (sh_task_t *t = s->live; t; t = t->live_next) {
    if (t->state == SH_TASK_WAITING && t->wait) {
      sh_wait_t *w = t->wait;
      t->wait = NULL;
      w->task = NULL;
      w->abort(w);
    }
  }
  while (s->heap_len > 0) sh_timer_disarm(s, s->heap[0]);
  while (sh_ready_pop(s)) {
  }
}

static void sh_sched_closed(uv_handle_t *h) {
  sh_sched_t *s = h->data;
  if (sh_log_sched == s) {
    sh_log_sched = NULL;
    sh_log_set_context_source(NULL);
  }
  if (--s->handles_closing == 0) {
    free(s->heap);
    sh_buf_free(&s->hooks);
    free(s);
  }
}

void sh_sched_free(sh_sched_t *s) {
  s->handles_closing = 3;
  uv_close((uv_handle_t *)&s->check, sh_sched_closed);
  uv_close((uv_handle_t *)&s->idle, sh_sched_closed);
  uv_close((uv_handle_t *)&s->timer, sh_sched_closed);
}
