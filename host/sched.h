/* The scheduler: every script, handler and spawned function is a task (a Lua coroutine) driven
 * from the libuv loop. A primitive parks its task on an sh_wait_t and yields; the libuv callback
 * only records results and calls sh_sched_wake(); the scheduler resumes ready tasks from one
 * place (a check handle at the top of the loop), never from inside another task or callback. */
#ifndef SH_SCHED_H
#define SH_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <uv.h>

typedef struct sh_sched sh_sched_t;
typedef struct sh_task sh_task_t;
typedef struct sh_wait sh_wait_t;
typedef struct sh_timer sh_timer_t;

/* What a parked task waits on. Owned by the primitive (embedded in its request). */
struct sh_wait {
  sh_task_t *task;              /* the parked task; NULL once woken or aborted */
  void (*abort)(sh_wait_t *w);  /* stop the work; called after task is cleared, must not resume */
};

/* A lightweight timer: an entry in the scheduler's heap, all served by one uv_timer_t. */
struct sh_timer {
  uint64_t due;                 /* uv_hrtime() (ns) at which it fires; never earlier */
  uint64_t seq;                 /* tie-break so equal deadlines fire in arming order */
  size_t slot;                  /* index in the heap, SIZE_MAX when not armed */
  void (*fire)(sh_timer_t *t);  /* called from the loop; may re-arm, must not raise */
};

/* Task outcome, as join() and the exit code see it. */
enum { SH_TASK_OK, SH_TASK_ERROR, SH_TASK_CANCELLED };
enum { SH_TASK_READY, SH_TASK_RUNNING, SH_TASK_WAITING, SH_TASK_DONE };

typedef struct sh_scope sh_scope_t;

/* A task: the userdata "stagehost.task". Its coroutine is its first user value; while the task
 * is not done the userdata is anchored in the registry, so a task nobody holds still runs. When
 * done, the coroutine's stack holds its results (or the error value and its traceback). */
struct sh_task {
  sh_sched_t *sched;
  lua_State *co;              /* the coroutine; its extra space points back here */
  int anchor;                 /* registry ref to the userdata while not done */
  unsigned long id;           /* for logs: task 1 is the main script */
  int state;                  /* SH_TASK_READY/RUNNING/WAITING/DONE */
  int outcome;                /* SH_TASK_OK/ERROR/CANCELLED once done */
  int started;                /* resumed at least once */
  int nargs;                  /* values on co's stack to pass to the first resume */
  int queued;                 /* in the ready queue */
  int plain_yield;            /* parked by coroutine.yield, not by a primitive */
  int interrupted;            /* its wait was aborted: raise the pending error on resume */
  int cancelled;              /* t:cancel() was called; every later wait raises */
  int observed;               /* someone joined it, so its failure is not reported */
  int reported;               /* its failure was reported as unobserved */
  int nresults;               /* values left on co's stack when done */
  char *cancel_reason;        /* malloc'd */
  sh_wait_t *wait;            /* what it is parked on, while SH_TASK_WAITING */
  lua_KFunction k;            /* the primitive's continuation */
  lua_KContext kctx;
  sh_scope_t *scopes;         /* innermost task.timeout scope */
  sh_task_t *ready_next;
  sh_task_t *live_prev, *live_next;
  sh_task_t *joiners;         /* tasks parked in join() on this one, linked by join_next */
  sh_task_t *join_next, *join_prev;
  sh_task_t *join_target;     /* the task this one is joining */
  sh_wait_t join_wait;        /* embedded: a task waits on one thing at a time */
  sh_wait_t sleep_wait;
  sh_timer_t sleep_timer;
  struct sh_log_ctx *log_ctx;  /* prefix and file for its log lines; inherited by its spawns */
};

sh_sched_t *sh_sched_new(lua_State *L, uv_loop_t *loop);
/* Cancels every live task's pending work so no callback can reach freed tasks; call before
 * lua_close. Frees nothing Lua owns. */
void sh_sched_shutdown(sh_sched_t *s);
void sh_sched_free(sh_sched_t *s);
sh_sched_t *sh_sched_get(lua_State *L);
uv_loop_t *sh_sched_loop(lua_State *L);

/* Spawn the function at the top of L's stack (with nargs arguments above it) as a task; pops
 * them and pushes the task object. */
sh_task_t *sh_task_spawn(lua_State *L, int nargs);
/* The task running on L (NULL outside any task, e.g. inside a plain coroutine). */
sh_task_t *sh_task_current(lua_State *L);
int sh_task_done(const sh_task_t *t);
int sh_task_outcome(const sh_task_t *t);
/* Push the task's error value (or nil); for the host's final report. */
void sh_task_push_error(lua_State *L, sh_task_t *t);
void sh_task_push_traceback(lua_State *L, sh_task_t *t);
/* Somebody takes responsibility for the task's outcome (join, or the host for the main task). */
void sh_task_observe(sh_task_t *t);
/* Request cancellation; returns 0 when the task is done or already cancelled. */
int sh_task_cancel(sh_task_t *t, const char *reason);
void sh_task_cancel_all(sh_sched_t *s, const char *reason);
/* Tasks that failed with nobody joining them (each already reported on stderr). */
int sh_sched_unobserved_failures(sh_sched_t *s);
/* The script's task; when it fails with an error, uv_run returns. */
void sh_sched_set_main(sh_sched_t *s, sh_task_t *t);
size_t sh_sched_live_tasks(sh_sched_t *s);
size_t sh_sched_armed_timers(sh_sched_t *s);

/* Primitives wait in three steps, so that nothing is allocated and then unwound:
 *   1. sh_sched_check_wait(L, who) may raise: "WHO: cannot wait here (...)" when L is not a task
 *      that may yield (the one place that message is made), or the task's pending cancellation
 *      or timeout. Call it before allocating anything for the wait.
 *   2. allocate the wait record and start the work (raise only after freeing it again);
 *   3. sh_sched_park(L, w, abort) registers w and never raises; then return sh_sched_yield().
 * When resumed, k runs inside the task (it may raise); a NULL k returns nothing. */
sh_task_t *sh_sched_check_wait(lua_State *L, const char *who);
void sh_sched_park(lua_State *L, sh_wait_t *w, void (*abort)(sh_wait_t *));
int sh_sched_yield(lua_State *L, lua_KFunction k, lua_KContext ctx);
/* Raise the task's pending cancellation or timeout, if any (outside a task: nothing); primitives
 * that do not wait (a result already there, a spawn) call it so a cancelled task starts nothing. */
void sh_sched_check(lua_State *L, const char *who);
/* From a callback: the work is done; queue the parked task. Safe when already aborted. */
void sh_sched_wake(sh_wait_t *w);
/* May this L wait (a task coroutine, yieldable)? Primitives with a synchronous fallback use it. */
int sh_sched_can_wait(lua_State *L);

/* A libuv request a task waits for (a write) and whose work a cancel does not stop: its record
 * is malloc'd and begins with an sh_await_t. The request's callback calls sh_await_done, which
 * wakes the task (whose continuation frees the record and returns true, or nil, message, code
 * as sh_uv_result does) or, when no task waits any more, frees the record itself. */
typedef struct {
  sh_wait_t wait;
  int status;      /* the request's, once done */
  const char *who; /* names the request in a failure: "process:write" */
} sh_await_t;
/* Step 3 above for such a request: park on it and yield (after step 1 and starting it). */
int sh_await_yield(lua_State *L, sh_await_t *a, const char *who);
void sh_await_done(sh_await_t *a, int status);

void sh_timer_init(sh_timer_t *t, void (*fire)(sh_timer_t *));
void sh_timer_arm(sh_sched_t *s, sh_timer_t *t, double seconds);
void sh_timer_disarm(sh_sched_t *s, sh_timer_t *t);

/* Called by the scheduler on SIGINT/SIGTERM and before exit: kill child process groups etc.
 * Registered by each module's per-scheduler state (sh_sched_state) when it is made, removed when
 * it is released; keeps the shutdown path free of module knowledge. */
void sh_sched_on_shutdown(sh_sched_t *s, void (*fn)(void *), void *arg);
void sh_sched_off_shutdown(sh_sched_t *s, void (*fn)(void *), void *arg);
void sh_sched_run_shutdown_hooks(sh_sched_t *s);

/* A module's state for this scheduler (its child processes, its servers, its curl handle): kept
 * in the registry under key, so there is one per Lua state, hence per scheduler. On first use
 * create(L) makes it (it may raise: the next call tries again); release(L, state) runs when the
 * Lua state closes and then owns the state's end (a state with handles frees itself once they
 * have closed). */
void *sh_sched_state(lua_State *L, const char *key, void *(*create)(lua_State *L),
                     void (*release)(lua_State *L, void *state));

/* Give the running task (and the tasks it spawns from now on) a log context; takes the
 * caller's reference. */
void sh_task_set_log_ctx(lua_State *L, struct sh_log_ctx *ctx);

/* Debug logging of task state changes (tests assert on it with STAGEHOST_LOG_LEVEL=debug). */
void sh_sched_trace(sh_task_t *t, const char *what);

/* Push the error object that unwinds a cancelled or timed-out task: an error object of
 * bindings/auxlib.h (metatable "stagehost.error") with kind "cancelled" or "timeout", message
 * and reason the reason, and scope (the task.timeout scope that expired) for a timeout. */
void sh_push_cancel_error(lua_State *L, const char *kind, const char *reason, const void *scope);
/* Is the value at idx such an error object (any error object of kind "cancelled" or
 * "timeout", ctx:cancel's included)? */
int sh_is_cancel_error(lua_State *L, int idx);

/* Timeout scopes (task.timeout): a deadline on the running task. */
struct sh_scope {
  sh_timer_t timer;      /* fires at the deadline */
  sh_task_t *task;       /* owner */
  sh_scope_t *outer;     /* enclosing scope of the same task */
  double seconds;        /* for the message */
  int expired;
};
void sh_scope_enter(lua_State *L, sh_scope_t *sc, double seconds);
void sh_scope_leave(lua_State *L, sh_scope_t *sc);

#endif
