/* stagehost.core.proc: child processes. proc.run (stdlib/stagehost/proc.lua) is spawn +
 * read_line + wait. This file keeps a running child: its pipes, timers, waits and handle;
 * bindings/proc_spawn.c turns the options into a started child. A SIGCHLD handle on the loop
 * reaps them. Each child leads its own session and process group, so a timeout or a cancel
 * reaches its grandchildren too. Children belong to the scheduler that started them: each Lua
 * state (so each scheduler) has its own list, reaper and shutdown hook. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "../host/log.h"
#include "../host/sched.h"
#include "../host/util.h"
#include "auxlib.h"
#include "modules.h"
#include "proc_spawn.h"

#define SH_PROC_MT "stagehost.process"
#define SH_PROC_STATE_KEY "stagehost.proc.state"
#define SH_PROC_LINE_MAX (64 * 1024)        /* a longer line is passed on in pieces */
#define SH_PROC_QUEUE_HIGH (1024 * 1024)    /* queued on_line bytes that pause reading */
#define SH_PROC_QUEUE_LOW (256 * 1024)
#define SH_PROC_DRAIN_SECONDS 1.0           /* after exit, how long pipes may stay open */
#define SH_PROC_GROUP_POLL 0.05             /* while terminating: is anyone left in the group? */

enum { SH_WAIT_NONE, SH_WAIT_EXIT, SH_WAIT_LINE };

typedef struct sh_line {
  struct sh_line *next;
  int stream;
  size_t len;
  char data[];
} sh_line_t;

/* The tail of one output stream, bounded: beyond 2 * limit the older half is dropped. */
typedef struct {
  sh_buf_t buf;               /* its limit is 2 * limit */
  size_t limit;
  int truncated;
} sh_capture_t;

typedef struct sh_proc sh_proc_t;
typedef struct sh_proc_state sh_proc_state_t;

/* The children of one scheduler, and the SIGCHLD handle that reaps them. Made with the module
 * (sh_sched_state); freed once Lua has let go of it, its handle has closed and no child is left
 * listed. */
struct sh_proc_state {
  uv_signal_t sigchld;        /* keeps the loop alive while any child has not been reaped */
  sh_sched_t *sched;
  sh_proc_t *all;             /* every live child of this scheduler, for reaping and shutdown */
  int running;                /* children spawned and not yet reaped */
  int lua_alive;              /* the registry still holds it */
  int handle_open;            /* the SIGCHLD handle's close callback has not run yet */
  sh_proc_state_t *prev, *next; /* every scheduler's, for sh_proc_kill_all */
};
struct sh_proc {
  uv_pipe_t pipes[3];         /* 0 stdin, 1 stdout, 2 stderr */
  int pipe_open[3];           /* initialised and not yet closing */
  int open_handles;           /* handles whose close callback has not run yet */
  int lua_alive;              /* the userdata still points here */
  sh_sched_t *sched;
  sh_proc_state_t *state;     /* the scheduler's list this child is on */
  sh_proc_t *prev, *next;
  sh_wait_t wait;             /* a task in wait() or read_line() */
  int wait_kind;
  sh_timer_t timeout_timer, kill_timer, drain_timer;
  double grace;               /* seconds between SIGTERM and SIGKILL */
  uint64_t kill_due;          /* hrtime (ns) at which the group gets SIGKILL */
  int spawned, exited, timed_out, terminating;
  int64_t exit_status;
  int term_signal;
  uint64_t start_ns, end_ns;
  sh_capture_t cap[3];
  sh_buf_t part[3];           /* a line not complete yet */
  int capture[3];             /* stream is a pipe we read */
  int stdin_is_pipe;          /* spawned with stdin = true or data */
  int want_lines;             /* queue lines for read_line (on_line) */
  int quiet;                  /* its output stays off the console (log files still get it) */
  sh_line_t *lines_head, *lines_tail;
  size_t lines_bytes;
  int paused;                 /* reading stopped until the queue drains */
  int pid;
  char label[64];             /* "name[pid]" for log lines */
  sh_log_ctx_t *log_ctx;      /* the spawning task's: where its output is logged */
};

typedef struct {
  sh_await_t await; /* first: the record is freed through it */
  uv_write_t req;
  sh_proc_t *proc;
  int close_after;
  char data[];
} sh_proc_write_t;

/* Every scheduler's state, so that os.exit and a second signal (sh_proc_kill_all, which main.c
 * calls without a scheduler) reach every child of the process. Each child list is per state. */
static sh_proc_state_t *sh_proc_states;

/* The state goes once nothing can reach it: the Lua state is closed, its handle too, and no
 * child is listed (one that is never reaped keeps it, as it keeps itself). */
static void sh_proc_state_maybe_free(sh_proc_state_t *st) {
  if (st->lua_alive || st->handle_open || st->all) return;
  if (st->prev) st->prev->next = st->next;
  else sh_proc_states = st->next;
  if (st->next) st->next->prev = st->prev;
  free(st);
}

/* called by libuv once the SIGCHLD handle is closed */
static void sh_proc_state_closed(uv_handle_t *h) {
  sh_proc_state_t *st = h->data;
  st->handle_open = 0;
  sh_proc_state_maybe_free(st);
}

static void sh_proc_state_set_running(sh_proc_state_t *st, int delta) {
  st->running += delta;
  if (st->running > 0) uv_ref((uv_handle_t *)&st->sigchld);
  else uv_unref((uv_handle_t *)&st->sigchld);
}

static void sh_proc_maybe_free(sh_proc_t *p) {
  /* an unreaped child stays listed, or it would never be reaped */
  if (p->lua_alive || p->open_handles > 0 || (p->spawned && !p->exited) || p->kill_timer.slot != SIZE_MAX ||
      p->drain_timer.slot != SIZE_MAX || p->timeout_timer.slot != SIZE_MAX)
    return;
  sh_proc_state_t *st = p->state;
  if (p->prev) p->prev->next = p->next;
  else st->all = p->next;
  if (p->next) p->next->prev = p->prev;
  for (int i = 0; i < 3; i++) {
    sh_buf_free(&p->cap[i].buf);
    sh_buf_free(&p->part[i]);
  }
  while (p->lines_head) {
    sh_line_t *l = p->lines_head;
    p->lines_head = l->next;
    free(l);
  }
  sh_log_ctx_release(p->log_ctx);
  free(p);
  sh_proc_state_maybe_free(st);
}

/* called by libuv when a handle of p has closed; the last one may free p */
static void sh_proc_handle_closed(uv_handle_t *h) {
  sh_proc_t *p = h->data;
  p->open_handles--;
  sh_proc_maybe_free(p);
}

static void sh_proc_close_pipe(sh_proc_t *p, int i) {
  if (!p->pipe_open[i]) return;
  p->pipe_open[i] = 0;
  uv_close((uv_handle_t *)&p->pipes[i], sh_proc_handle_closed);
}

static int sh_proc_finished(const sh_proc_t *p) {
  return p->exited && !p->pipe_open[1] && !p->pipe_open[2];
}

static int sh_proc_reading_done(const sh_proc_t *p) { return !p->pipe_open[1] && !p->pipe_open[2]; }

/* Has the process what a wait of this kind waits for (its end, or a line or the end of output)? */
static int sh_proc_ready(const sh_proc_t *p, int kind) {
  switch (kind) {
  case SH_WAIT_EXIT: return sh_proc_finished(p);
  case SH_WAIT_LINE: return p->lines_head || sh_proc_reading_done(p);
  default: return 0;
  }
}

/* Something changed: wake the waiting task if what it waits for is there. */
static void sh_proc_progress(sh_proc_t *p) {
  if (p->wait.task && sh_proc_ready(p, p->wait_kind)) sh_sched_wake(&p->wait);
}

static void sh_proc_signal_group(sh_proc_t *p, int sig) {
  if (p->pid > 0) kill(-p->pid, sig);
}

/* SIGTERM to the group now, SIGKILL after the grace period, even if the leader exits first:
 * its grandchildren may not have. Idempotent. */
static void sh_proc_terminate(sh_proc_t *p) {
  if (!p->spawned || p->terminating || (p->exited && p->exit_status == 0 && !p->term_signal)) return;
  p->terminating = 1;
  sh_log_printf(SH_LOG_DEBUG, "process %s: SIGTERM to its group", p->label);
  sh_proc_signal_group(p, SIGTERM);
  p->kill_due = uv_hrtime() + (uint64_t)(p->grace * 1e9);
  sh_timer_arm(p->sched, &p->kill_timer, p->grace < SH_PROC_GROUP_POLL ? p->grace : SH_PROC_GROUP_POLL);
}

/* During the grace period, poll the group: once every member is gone there is nothing left to
 * kill, and the host need not sit out the rest of the grace period. */
static void sh_proc_kill_fire(sh_timer_t *t) {
  sh_proc_t *p = SH_CONTAINER(t, sh_proc_t, kill_timer);
  if (kill(-p->pid, 0) != 0 && errno == ESRCH) {
    sh_proc_maybe_free(p);
    return;
  }
  uint64_t now = uv_hrtime();
  if (now < p->kill_due) {
    double left = (double)(p->kill_due - now) / 1e9;
    sh_timer_arm(p->sched, &p->kill_timer, left < SH_PROC_GROUP_POLL ? left : SH_PROC_GROUP_POLL);
    return;
  }
  sh_log_printf(SH_LOG_DEBUG, "process %s: SIGKILL to its group", p->label);
  sh_proc_signal_group(p, SIGKILL);
  sh_proc_maybe_free(p);
}

static void sh_proc_timeout_fire(sh_timer_t *t) {
  sh_proc_t *p = SH_CONTAINER(t, sh_proc_t, timeout_timer);
  if (p->exited) return;
  p->timed_out = 1;
  sh_log_printf(SH_LOG_DEBUG, "process %s: timed out", p->label);
  sh_proc_terminate(p);
}

/* The leader exited but something it started still holds a pipe: stop waiting for EOF. */
static void sh_proc_drain_fire(sh_timer_t *t) {
  sh_proc_t *p = SH_CONTAINER(t, sh_proc_t, drain_timer);
  sh_proc_close_pipe(p, 1);
  sh_proc_close_pipe(p, 2);
  sh_proc_progress(p);
  sh_proc_maybe_free(p);
}

/* ---- output: capture, log, line queue ---- */

/* Called from libuv's read callback: nothing here raises; out of memory loses the chunk. */
static void sh_capture_add(sh_capture_t *c, const char *s, size_t n) {
  sh_buf_t *b = &c->buf;
  if (c->limit == 0) return;
  if (n >= c->limit) { /* this chunk alone fills the window */
    s += n - c->limit;
    if (n > c->limit || b->len > 0) c->truncated = 1;
    n = c->limit;
    b->len = 0;
  }
  if (b->len + n > 2 * c->limit) { /* keep the newest limit bytes; amortised O(1) per byte */
    size_t keep = c->limit - n;
    memmove(b->data, b->data + b->len - keep, keep);
    b->len = keep;
    c->truncated = 1;
  }
  sh_buf_add(b, s, n); /* never grows past b->limit, 2 * limit */
}

static void sh_proc_emit_line(sh_proc_t *p, int stream, const char *s, size_t n) {
  if (n > 0 && s[n - 1] == '\r') n--;
  sh_log_output(p->log_ctx, p->label, s, n, p->quiet);
  if (!p->want_lines) return;
  sh_line_t *l = malloc(sizeof *l + n + 1);
  if (!l) return;
  l->next = NULL;
  l->stream = stream;
  l->len = n;
  memcpy(l->data, s, n);
  l->data[n] = '\0';
  if (p->lines_tail) p->lines_tail->next = l;
  else p->lines_head = l;
  p->lines_tail = l;
  p->lines_bytes += n;
  if (!p->paused && p->lines_bytes > SH_PROC_QUEUE_HIGH) { /* on_line is slower than the child */
    p->paused = 1;
    for (int i = 1; i <= 2; i++)
      if (p->pipe_open[i]) uv_read_stop((uv_stream_t *)&p->pipes[i]);
  }
}

static void sh_proc_output(sh_proc_t *p, int stream, const char *s, size_t n) {
  sh_capture_add(&p->cap[stream], s, n);
  sh_buf_t *b = &p->part[stream];
  while (n > 0) {
    const char *nl = memchr(s, '\n', n);
    if (!nl) {
      sh_buf_add(b, s, n); /* out of memory: the piece is lost, nothing raises */
      if (b->len > SH_PROC_LINE_MAX) {
        size_t cut = sh_mask_safe_cut(b->data, b->len);
        sh_proc_emit_line(p, stream, b->data, cut);
        memmove(b->data, b->data + cut, b->len - cut);
        b->len -= cut;
      }
      return;
    }
    size_t k = (size_t)(nl - s);
    if (b->len > 0) {
      sh_buf_add(b, s, k);
      sh_proc_emit_line(p, stream, b->data, b->len);
      b->len = 0;
    } else {
      sh_proc_emit_line(p, stream, s, k);
    }
    s += k + 1;
    n -= k + 1;
  }
}

/* called by libuv before each read; one buffer serves every pipe since reads are consumed at once */
static void sh_proc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char chunk[64 * 1024];
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(chunk, sizeof chunk);
}

/* called by libuv with output from the child, or EOF */
static void sh_proc_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  sh_proc_t *p = stream->data;
  int i = stream == (uv_stream_t *)&p->pipes[1] ? 1 : 2;
  if (nread > 0) {
    sh_proc_output(p, i, buf->base, (size_t)nread);
    if (p->lines_head) sh_proc_progress(p);
    return;
  }
  if (nread == 0) return;
  if (p->part[i].len > 0) {
    sh_proc_emit_line(p, i, p->part[i].data, p->part[i].len);
    p->part[i].len = 0;
  }
  sh_proc_close_pipe(p, i);
  if (sh_proc_reading_done(p)) sh_timer_disarm(p->sched, &p->drain_timer);
  sh_proc_progress(p);
}

/* The child was reaped (its pipes may still be open). */
static void sh_proc_exited(sh_proc_t *p, int status) {
  p->exited = 1;
  p->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
  p->term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  p->end_ns = uv_hrtime();
  sh_timer_disarm(p->sched, &p->timeout_timer);
  sh_log_printf(SH_LOG_DEBUG, "process %s: exited with %d (signal %d)", p->label, (int)p->exit_status,
                p->term_signal);
  sh_proc_close_pipe(p, 0); /* nobody reads it any more; pending writes end with ECANCELED */
  if (!p->terminating) sh_timer_disarm(p->sched, &p->kill_timer);
  if (!sh_proc_reading_done(p)) sh_timer_arm(p->sched, &p->drain_timer, SH_PROC_DRAIN_SECONDS);
  sh_proc_progress(p);
  sh_proc_maybe_free(p);
}

/* called by libuv on SIGCHLD. Signals coalesce, so reap until nothing is left. As a subreaper
 * the host also inherits its children's orphans: reaping them at once means a killed group is
 * really gone (no zombies lingering until PID 1 gets round to them). */
static void sh_proc_sigchld(uv_signal_t *h, int signum) {
  sh_proc_state_t *st = h->data;
  (void)signum;
  for (;;) {
    int status;
    pid_t got = waitpid(-1, &status, WNOHANG);
    if (got <= 0) break;
    for (sh_proc_t *p = st->all; p; p = p->next) {
      if (p->spawned && !p->exited && p->pid == got) {
        sh_proc_state_set_running(st, -1);
        sh_proc_exited(p, status); /* may free p: the loop stops here */
        break;
      }
    }
  }
}

/* SIGINT/SIGTERM: every task is being cancelled; terminate this scheduler's children. */
static void sh_proc_shutdown_hook(void *arg) {
  sh_proc_state_t *st = arg;
  for (sh_proc_t *p = st->all; p; p = p->next)
    if (!p->exited) sh_proc_terminate(p);
}

/* sh_sched_state's create, with the module: the reaper runs before the first child, so no
 * SIGCHLD is missed, and the scheduler's shutdown hook knows this scheduler's children. */
static void *sh_proc_state_create(lua_State *L) {
  sh_proc_state_t *st = calloc(1, sizeof *st);
  if (!st) luaL_error(L, "proc: out of memory");
#ifdef PR_SET_CHILD_SUBREAPER
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif
  st->sched = sh_sched_get(L);
  uv_signal_init(sh_sched_loop(L), &st->sigchld);
  st->sigchld.data = st;
  uv_signal_start(&st->sigchld, sh_proc_sigchld, SIGCHLD);
  uv_unref((uv_handle_t *)&st->sigchld);
  st->lua_alive = st->handle_open = 1;
  st->next = sh_proc_states;
  if (sh_proc_states) sh_proc_states->prev = st;
  sh_proc_states = st;
  sh_sched_on_shutdown(st->sched, sh_proc_shutdown_hook, st);
  return st;
}

/* sh_sched_state's release, as the Lua state closes: the hook goes and the reaper closes; the
 * children still listed keep the struct until they are freed. */
static void sh_proc_state_release(lua_State *L, void *arg) {
  sh_proc_state_t *st = arg;
  (void)L;
  sh_sched_off_shutdown(st->sched, sh_proc_shutdown_hook, st);
  st->lua_alive = 0;
  uv_close((uv_handle_t *)&st->sigchld, sh_proc_state_closed);
}

static sh_proc_state_t *sh_proc_state_get(lua_State *L) {
  return sh_sched_state(L, SH_PROC_STATE_KEY, sh_proc_state_create, sh_proc_state_release);
}

/* Attach our end of a pipe to a libuv handle of p. */
static void sh_proc_open_pipe(sh_proc_t *p, uv_loop_t *loop, int i, int fd) {
  uv_pipe_init(loop, &p->pipes[i], 0);
  p->pipes[i].data = p;
  uv_pipe_open(&p->pipes[i], fd);
  p->pipe_open[i] = 1;
  p->open_handles++;
}

static sh_proc_t *sh_check_proc(lua_State *L, int idx) {
  sh_proc_t **pp = luaL_checkudata(L, idx, SH_PROC_MT);
  if (!*pp) {
    lua_Debug ar;
    const char *name = lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name ? ar.name : "?";
    luaL_error(L, "process:%s: the process handle is closed", name);
  }
  return *pp;
}

static void sh_proc_write_cb(uv_write_t *req, int status);

/* Queue data for the child's stdin; the result reaches a waiting task through w->await. */
static sh_proc_write_t *sh_proc_queue_write(sh_proc_t *p, const char *data, size_t len, int close_after) {
  sh_proc_write_t *w = malloc(sizeof *w + len);
  if (!w) return NULL;
  memset(w, 0, sizeof *w);
  memcpy(w->data, data, len);
  w->proc = p;
  w->close_after = close_after;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&p->pipes[0], &buf, 1, sh_proc_write_cb);
  if (rc < 0) {
    free(w);
    return NULL;
  }
  return w;
}

/* proc.spawn(opts [, who [, want_lines]]). Everything that may raise comes first (the options,
 * the userdata, the module state); from sh_spawn_build on C memory is held, and a failure frees
 * it before raising. */
static int sh_proc_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *who = luaL_optstring(L, 2, "proc.spawn");
  int want_lines = lua_toboolean(L, 3);
  lua_settop(L, 2); /* who stays alive at 2 */
  sh_sched_check(L, who);
  sh_spawn_t sp;
  sh_spawn_read(L, 1, who, &sp); /* pushes argv and the environment */
  sh_proc_t **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, SH_PROC_MT);
  sh_proc_state_t *st = sh_proc_state_get(L);
  uv_loop_t *loop = sh_sched_loop(L);

  const char *failed;
  int rc = sh_spawn_build(L, &sp, &failed);
  sh_proc_t *p = rc == 0 ? calloc(1, sizeof *p) : NULL;
  if (!p) {
    sh_spawn_free(&sp);
    if (failed) return luaL_error(L, "%s: cannot open %s file '%s': %s", who, failed,
                                  strcmp(failed, "stdout") == 0 ? sp.out_path : sp.err_path, strerror(rc));
    return luaL_error(L, "%s: out of memory", who);
  }
  p->sched = st->sched;
  p->state = st;
  sh_task_t *owner = sh_task_current(L);
  if (owner && owner->log_ctx) {
    p->log_ctx = owner->log_ctx;
    sh_log_ctx_retain(p->log_ctx);
  }
  p->grace = sp.grace;
  p->want_lines = want_lines;
  p->quiet = sp.quiet;
  sh_timer_init(&p->timeout_timer, sh_proc_timeout_fire);
  sh_timer_init(&p->kill_timer, sh_proc_kill_fire);
  sh_timer_init(&p->drain_timer, sh_proc_drain_fire);
  for (int i = 1; i <= 2; i++) {
    p->cap[i].limit = (size_t)sp.max_output;
    p->cap[i].buf.limit = 2 * (size_t)sp.max_output;
  }
  p->next = st->all; /* listed from the start, so maybe_free's unlink is uniform */
  if (st->all) st->all->prev = p;
  st->all = p;

  /* pipes: [i][0] is the read end; the child's end goes to child_fds, ours to a uv_pipe_t */
  int pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  int child_fds[3] = {-1, sp.out_fd, sp.err_fd};
  if (sp.stdin_pipe) {
    if (pipe2(pipes[0], O_CLOEXEC) != 0) rc = errno;
    else child_fds[0] = pipes[0][0];
  }
  for (int i = 1; i <= 2 && rc == 0; i++) {
    if (child_fds[i] >= 0) continue;
    if (pipe2(pipes[i], O_CLOEXEC) != 0) rc = errno;
    else child_fds[i] = pipes[i][1];
  }
  pid_t pid = 0;
  p->start_ns = uv_hrtime();
  if (rc == 0) rc = sh_spawn_exec(&sp, child_fds, &pid);
  for (int i = 0; i < 3; i++) { /* the child's ends are the child's now; ours go to libuv */
    int ours = i == 0 ? pipes[0][1] : pipes[i][0], theirs = i == 0 ? pipes[0][0] : pipes[i][1];
    if (theirs >= 0) close(theirs);
    if (ours < 0) continue;
    if (rc != 0) close(ours);
    else sh_proc_open_pipe(p, loop, i, ours);
  }
  if (sp.stdin_pipe && rc == 0) p->stdin_is_pipe = 1;
  for (int i = 1; i <= 2; i++) p->capture[i] = p->pipe_open[i];
  const char *base = strrchr(sp.argv[0], '/');
  snprintf(p->label, sizeof p->label, "%s[%d]", sp.name ? sp.name : sp.shell ? "sh" : base ? base + 1 : sp.argv[0],
           (int)pid);
  if (rc != 0) {
    char prog[256];
    snprintf(prog, sizeof prog, "%s", sp.argv[0]);
    sh_spawn_free(&sp);
    sh_proc_maybe_free(p);
    if (rc == ENOENT && !strchr(prog, '/'))
      return luaL_error(L, "%s: program '%s' not found in PATH (install it or give its full path)", who, prog);
    if (rc == ENOENT) return luaL_error(L, "%s: cannot run '%s': no such file", who, prog);
    return luaL_error(L, "%s: cannot run '%s': %s", who, prog, uv_strerror(-rc));
  }
  sh_spawn_free(&sp);
  *ud = p;
  p->lua_alive = 1;
  p->spawned = 1;
  p->pid = pid;
  sh_proc_state_set_running(st, 1);
  sh_log_printf(SH_LOG_DEBUG, "process %s: started", p->label);
  for (int i = 1; i <= 2; i++)
    if (p->pipe_open[i]) uv_read_start((uv_stream_t *)&p->pipes[i], sh_proc_alloc, sh_proc_read);
  if (sp.stdin_data) {
    if (sp.stdin_len == 0 || !sh_proc_queue_write(p, sp.stdin_data, sp.stdin_len, 1)) sh_proc_close_pipe(p, 0);
  }
  if (sp.timeout > 0) sh_timer_arm(p->sched, &p->timeout_timer, sp.timeout);
  return 1;
}

/* ---- methods ---- */

static void sh_proc_wait_abort(sh_wait_t *w) {
  sh_proc_t *p = SH_CONTAINER(w, sh_proc_t, wait);
  p->wait_kind = SH_WAIT_NONE;
  /* the waiting task was cancelled or timed out: the child must not outlive that */
  sh_proc_terminate(p);
}

static const char *sh_signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGPIPE: return "SIGPIPE";
    case SIGTERM: return "SIGTERM";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    default: return "SIG?";
  }
}

static void sh_push_capture(lua_State *L, sh_proc_t *p, int i, const char *field) {
  if (!p->capture[i]) return;
  sh_capture_t *c = &p->cap[i];
  size_t len = c->buf.len > c->limit ? c->limit : c->buf.len;
  sh_setfield_lstring(L, field, c->buf.data ? c->buf.data + c->buf.len - len : "", len);
  if (c->truncated) {
    char key[32];
    snprintf(key, sizeof key, "%s_truncated", field);
    sh_setfield_boolean(L, key, 1);
  }
}

static int sh_proc_result(lua_State *L, sh_proc_t *p) {
  lua_createtable(L, 0, 10);
  int code = p->timed_out ? 124 : p->term_signal ? 128 + p->term_signal : (int)p->exit_status;
  sh_setfield_boolean(L, "ok", code == 0);
  sh_setfield_integer(L, "code", code);
  if (p->term_signal) sh_setfield_string(L, "signal", sh_signal_name(p->term_signal));
  sh_setfield_boolean(L, "timed_out", p->timed_out);
  sh_setfield_number(L, "duration", (double)(p->end_ns - p->start_ns) / 1e9);
  sh_setfield_integer(L, "pid", p->pid);
  sh_push_capture(L, p, 1, "stdout");
  sh_push_capture(L, p, 2, "stderr");
  return 1;
}

static int sh_proc_pop_line(lua_State *L, sh_proc_t *p) {
  sh_line_t *l = p->lines_head;
  if (!l) {
    lua_pushnil(L);
    return 1;
  }
  p->lines_head = l->next;
  if (!p->lines_head) p->lines_tail = NULL;
  p->lines_bytes -= l->len;
  lua_pushstring(L, l->stream == 1 ? "stdout" : "stderr");
  lua_pushlstring(L, l->data, l->len);
  free(l);
  if (p->paused && p->lines_bytes < SH_PROC_QUEUE_LOW) {
    p->paused = 0;
    for (int i = 1; i <= 2; i++)
      if (p->pipe_open[i]) uv_read_start((uv_stream_t *)&p->pipes[i], sh_proc_alloc, sh_proc_read);
  }
  return 2;
}

/* What a wait of this kind returns: the result, or the next line. */
static int sh_proc_deliver(lua_State *L, sh_proc_t *p, int kind) {
  return kind == SH_WAIT_EXIT ? sh_proc_result(L, p) : sh_proc_pop_line(L, p);
}

static int sh_proc_wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  sh_proc_t *p = sh_check_proc(L, 1);
  p->wait_kind = SH_WAIT_NONE;
  return sh_proc_deliver(L, p, (int)ctx);
}

/* process:wait and process:read_line: what the process has now, or the task parks (one task
 * per process at a time) until it has it. */
static int sh_proc_await(lua_State *L, sh_proc_t *p, int kind, const char *who) {
  lua_settop(L, 1);
  if (sh_proc_ready(p, kind)) {
    sh_sched_check(L, who);
    return sh_proc_deliver(L, p, kind);
  }
  if (p->wait_kind != SH_WAIT_NONE) luaL_error(L, "%s: another task is already waiting on this process", who);
  sh_sched_check_wait(L, who);
  sh_sched_park(L, &p->wait, sh_proc_wait_abort);
  p->wait_kind = kind;
  return sh_sched_yield(L, sh_proc_wait_k, (lua_KContext)kind);
}

static int sh_proc_wait(lua_State *L) {
  return sh_proc_await(L, sh_check_proc(L, 1), SH_WAIT_EXIT, "process:wait");
}

/* p:read_line() -> "stdout"|"stderr", line; nil once both streams have ended */
static int sh_proc_read_line(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  if (!p->want_lines) return luaL_error(L, "process:read_line: spawn the process with lines enabled");
  return sh_proc_await(L, p, SH_WAIT_LINE, "process:read_line");
}

/* called by libuv when a write to the child's stdin is done */
static void sh_proc_write_cb(uv_write_t *req, int status) {
  sh_proc_write_t *w = SH_CONTAINER(req, sh_proc_write_t, req);
  if (w->close_after) sh_proc_close_pipe(w->proc, 0);
  sh_await_done(&w->await, status);
}

static int sh_proc_write(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (!p->stdin_is_pipe) return luaL_error(L, "process:write: stdin is not a pipe (spawn with stdin = true)");
  if (!p->pipe_open[0])
    return sh_failure(L, "EPIPE", "process:write: %s", p->exited ? "the process has exited" : "stdin was closed");
  sh_sched_check_wait(L, "process:write"); /* before the write is allocated */
  sh_proc_write_t *w = sh_proc_queue_write(p, data, len, 0);
  if (!w) return sh_failure(L, "EPIPE", "process:write: the child's stdin is closed");
  return sh_await_yield(L, &w->await, "process:write"); /* a cancelled writer's write still completes */
}

static int sh_proc_close_stdin(lua_State *L) {
  sh_proc_close_pipe(sh_check_proc(L, 1), 0);
  return 0;
}

static int sh_signal_from_name(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return SIGTERM;
  if (lua_type(L, idx) == LUA_TNUMBER) return (int)luaL_checkinteger(L, idx);
  const char *name = luaL_checkstring(L, idx);
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  static const struct { const char *name; int sig; } names[] = {
      {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT}, {"HUP", SIGHUP},
      {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
  };
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (strcmp(name, names[i].name) == 0) return names[i].sig;
  return luaL_argerror(L, idx, "unknown signal (use \"TERM\", \"KILL\", \"INT\", \"HUP\", ...)");
}

/* p:kill([sig]) signals the whole group; "TERM" (default) also arms the SIGKILL fallback */
static int sh_proc_kill(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  int sig = sh_signal_from_name(L, 2);
  if (p->exited) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (sig == SIGTERM) sh_proc_terminate(p);
  else sh_proc_signal_group(p, sig);
  lua_pushboolean(L, 1);
  return 1;
}

/* __gc and __close: a child nobody can wait for any more is terminated, then p is freed once its
 * handles have closed. */
static int sh_proc_gc(lua_State *L) {
  sh_proc_t **pp = luaL_checkudata(L, 1, SH_PROC_MT);
  sh_proc_t *p = *pp;
  if (!p) return 0;
  *pp = NULL;
  if (!p->exited) sh_proc_terminate(p);
  p->lua_alive = 0;
  sh_proc_maybe_free(p);
  return 0;
}

/* __index: pid, then the methods */
static int sh_proc_index(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  if (strcmp(luaL_checkstring(L, 2), "pid") != 0) return sh_index_methods(L);
  lua_pushinteger(L, p->pid);
  return 1;
}

static const luaL_Reg sh_proc_class[] = {
    {"wait", sh_proc_wait}, {"read_line", sh_proc_read_line}, {"write", sh_proc_write},
    {"close_stdin", sh_proc_close_stdin}, {"kill", sh_proc_kill},
    {"__index", sh_proc_index}, {"__gc", sh_proc_gc}, {"__close", sh_proc_gc},
    {NULL, NULL},
};

/* proc.stop_leftovers() -> n: terminate the still-running children started under the calling
 * task's log context (a pipeline stage and its sub-tasks), as a CI runner ends a job's leftover
 * processes when the job ends. */
static int sh_proc_stop_leftovers(lua_State *L) {
  sh_task_t *t = sh_task_current(L);
  int n = 0;
  if (t && t->log_ctx)
    for (sh_proc_t *p = sh_proc_state_get(L)->all; p; p = p->next)
      if (p->spawned && !p->exited && !p->terminating && p->log_ctx == t->log_ctx) {
        sh_proc_terminate(p);
        n++;
      }
  lua_pushinteger(L, n);
  return 1;
}

/* proc.running_in_context() -> n: processes started under the calling task's log context (a
 * pipeline stage) whose group may still have members: not reaped yet, or being terminated. The
 * engine waits for 0 before a later stage starts, so a deploy that traps SIGTERM is not still
 * running beside its rollback. */
static int sh_proc_running_in_context(lua_State *L) {
  sh_task_t *t = sh_task_current(L);
  int n = 0;
  if (t && t->log_ctx)
    for (sh_proc_t *p = sh_proc_state_get(L)->all; p; p = p->next)
      if (p->log_ctx == t->log_ctx && p->spawned && (!p->exited || p->kill_timer.slot != SIZE_MAX)) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* proc.signal_group(pgid, [sig]) -> true | nil, message, code: signal a process group this host
 * did not start (one a dead host left, as its state database recorded it); the caller has
 * checked it is still that group. */
static int sh_proc_signal_group_l(lua_State *L) {
  lua_Integer pgid = luaL_checkinteger(L, 1);
  luaL_argcheck(L, pgid > 1 && pgid <= INT_MAX, 1, "a process group id > 1");
  int sig = sh_signal_from_name(L, 2);
  if (kill(-(pid_t)pgid, sig) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  int e = errno;
  const char *code = e == ESRCH ? "ESRCH" : e == EPERM ? "EPERM" : "EINVAL";
  return sh_failure(L, code, "proc.signal_group: %d: %s", (int)pgid, strerror(e));
}

/* proc.executable() -> the path of the running stagehost, to run it again (tests, stages) */
static int sh_proc_executable(lua_State *L) { return sh_push_uv_path(L, uv_exepath, "proc.executable"); }

static const luaL_Reg sh_proc_funcs[] = {
    {"spawn", sh_proc_spawn},
    {"executable", sh_proc_executable},
    {"running_in_context", sh_proc_running_in_context},
    {"stop_leftovers", sh_proc_stop_leftovers},
    {"signal_group", sh_proc_signal_group_l},
    {NULL, NULL},
};

/* For os.exit and a second signal: stop every child now, without waiting. The process is
 * ending, so this reaches the children of every scheduler in it. */
void sh_proc_kill_all(int sig) {
  for (sh_proc_state_t *st = sh_proc_states; st; st = st->next)
    for (sh_proc_t *p = st->all; p; p = p->next)
      if (!p->exited) sh_proc_signal_group(p, sig);
}

/* The host is leaving and its timers with it: a group already asked to stop (SIGTERM, whose
 * SIGKILL was waiting for the grace period) gets SIGKILL now, any other SIGTERM, so that no
 * child outlives the host unasked. */
void sh_proc_host_exit(void) {
  for (sh_proc_state_t *st = sh_proc_states; st; st = st->next)
    for (sh_proc_t *p = st->all; p; p = p->next)
      if (p->spawned && (!p->exited || p->terminating)) sh_proc_signal_group(p, p->terminating ? SIGKILL : SIGTERM);
}

int sh_proc_open(lua_State *L) {
  sh_proc_state_get(L); /* now, so its reaper is there before the first child and part of any baseline */
  return sh_newmodule(L, sh_proc_funcs, SH_PROC_MT, sh_proc_class);
}
