/* stagehost.core.proc: child processes. proc.run (stdlib/stagehost/proc.lua) is spawn +
 * read_line + wait. Children start with posix_spawn, which glibc runs as a vfork: unlike
 * uv_spawn's fork (libuv 1.44) it copies no page tables, so starting many children is cheap.
 * A SIGCHLD handle on the loop reaps them. Each child leads its own session and process group,
 * so a timeout or a cancel reaches its grandchildren too. */
#define _GNU_SOURCE /* pipe2, POSIX_SPAWN_SETSID, posix_spawn_file_actions_addchdir_np */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "../host/log.h"
#include "../host/sched.h"

#define SH_PROC_MT "stagehost.process"
#define SH_CONTAINER(ptr, type, field) ((type *)((char *)(ptr) - offsetof(type, field)))
#define SH_PROC_LINE_MAX (64 * 1024)        /* a longer line is passed on in pieces */
#define SH_PROC_QUEUE_HIGH (1024 * 1024)    /* queued on_line bytes that pause reading */
#define SH_PROC_QUEUE_LOW (256 * 1024)
#define SH_PROC_DEFAULT_MAX_OUTPUT (4 * 1024 * 1024)
#define SH_PROC_DRAIN_SECONDS 1.0           /* after exit, how long pipes may stay open */
#define SH_PROC_GROUP_POLL 0.05             /* while terminating: is anyone left in the group? */

extern char **environ;

enum { SH_WAIT_NONE, SH_WAIT_EXIT, SH_WAIT_LINE };

typedef struct sh_line {
  struct sh_line *next;
  int stream;
  size_t len;
  char data[];
} sh_line_t;

/* The tail of one output stream, bounded: beyond 2 * limit the older half is dropped. */
typedef struct {
  char *data;
  size_t len, cap, limit;
  int truncated;
} sh_capture_t;

typedef struct {
  char *data;
  size_t len, cap;
} sh_partial_t;

typedef struct sh_proc sh_proc_t;
struct sh_proc {
  uv_pipe_t pipes[3];         /* 0 stdin, 1 stdout, 2 stderr */
  int pipe_open[3];           /* initialised and not yet closing */
  int open_handles;           /* handles whose close callback has not run yet */
  int lua_alive;              /* the userdata still points here */
  sh_sched_t *sched;
  sh_proc_t *prev, *next;     /* every live child, for shutdown */
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
  sh_partial_t part[3];
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
  uv_write_t req;
  sh_wait_t wait;
  sh_proc_t *proc;
  int status, close_after;
  char data[];
} sh_proc_write_t;

static sh_proc_t *sh_proc_all;
static int sh_proc_hook_installed;

/* One SIGCHLD handle per loop reaps our children. It keeps the loop alive while any child has
 * not been reaped, as a process handle would. Owned by a userdata in the registry, so it closes
 * with the Lua state. */
typedef struct {
  uv_signal_t sigchld;
  int running;
} sh_reaper_t;

static void sh_reaper_closed(uv_handle_t *h) { free(h->data); }

static void sh_reaper_set_running(sh_reaper_t *r, int delta) {
  r->running += delta;
  if (r->running > 0) uv_ref((uv_handle_t *)&r->sigchld);
  else uv_unref((uv_handle_t *)&r->sigchld);
}

static void sh_proc_maybe_free(sh_proc_t *p) {
  /* an unreaped child stays listed, or it would never be reaped */
  if (p->lua_alive || p->open_handles > 0 || (p->spawned && !p->exited) || p->kill_timer.slot != SIZE_MAX ||
      p->drain_timer.slot != SIZE_MAX || p->timeout_timer.slot != SIZE_MAX)
    return;
  if (p->prev) p->prev->next = p->next;
  else if (sh_proc_all == p) sh_proc_all = p->next;
  if (p->next) p->next->prev = p->prev;
  for (int i = 0; i < 3; i++) {
    free(p->cap[i].data);
    free(p->part[i].data);
  }
  while (p->lines_head) {
    sh_line_t *l = p->lines_head;
    p->lines_head = l->next;
    free(l);
  }
  sh_log_ctx_release(p->log_ctx);
  free(p);
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

/* Something changed: wake the waiting task if what it waits for is there. */
static void sh_proc_progress(sh_proc_t *p) {
  if (!p->wait.task) return;
  if ((p->wait_kind == SH_WAIT_EXIT && sh_proc_finished(p)) ||
      (p->wait_kind == SH_WAIT_LINE && (p->lines_head || sh_proc_reading_done(p))))
    sh_sched_wake(&p->wait);
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

static void sh_capture_add(sh_capture_t *c, const char *s, size_t n) {
  if (c->limit == 0) return;
  if (n >= c->limit) { /* this chunk alone fills the window */
    s += n - c->limit;
    if (n > c->limit || c->len > 0) c->truncated = 1;
    n = c->limit;
    c->len = 0;
  }
  if (c->len + n > 2 * c->limit) { /* keep the newest limit bytes; amortised O(1) per byte */
    size_t keep = c->limit - n;
    memmove(c->data, c->data + c->len - keep, keep);
    c->len = keep;
    c->truncated = 1;
  }
  if (c->len + n > c->cap) {
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + n) cap *= 2;
    if (cap > 2 * c->limit) cap = 2 * c->limit;
    char *grown = realloc(c->data, cap);
    if (!grown) return;
    c->data = grown;
    c->cap = cap;
  }
  memcpy(c->data + c->len, s, n);
  c->len += n;
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

static void sh_partial_append(sh_partial_t *b, const char *s, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

static void sh_proc_output(sh_proc_t *p, int stream, const char *s, size_t n) {
  sh_capture_add(&p->cap[stream], s, n);
  sh_partial_t *b = &p->part[stream];
  while (n > 0) {
    const char *nl = memchr(s, '\n', n);
    if (!nl) {
      sh_partial_append(b, s, n);
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
      sh_partial_append(b, s, k);
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
  sh_reaper_t *r = h->data;
  (void)signum;
  for (;;) {
    int status;
    pid_t got = waitpid(-1, &status, WNOHANG);
    if (got <= 0) break;
    for (sh_proc_t *p = sh_proc_all; p; p = p->next) {
      if (p->spawned && !p->exited && p->pid == got) {
        sh_reaper_set_running(r, -1);
        sh_proc_exited(p, status); /* may free p: the loop stops here */
        break;
      }
    }
  }
}

static int sh_reaper_gc(lua_State *L) {
  sh_reaper_t **rr = lua_touserdata(L, 1);
  if (*rr) uv_close((uv_handle_t *)&(*rr)->sigchld, sh_reaper_closed);
  *rr = NULL;
  return 0;
}

static sh_reaper_t *sh_reaper_get(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, "stagehost.proc.reaper") == LUA_TUSERDATA) {
    sh_reaper_t *r = *(sh_reaper_t **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return r;
  }
  lua_pop(L, 1);
  sh_reaper_t **rr = lua_newuserdatauv(L, sizeof *rr, 0);
  *rr = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, sh_reaper_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "stagehost.proc.reaper");
  sh_reaper_t *r = calloc(1, sizeof *r);
  if (!r) luaL_error(L, "proc: out of memory");
#ifdef PR_SET_CHILD_SUBREAPER
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif
  uv_signal_init(sh_sched_loop(L), &r->sigchld);
  r->sigchld.data = r;
  uv_signal_start(&r->sigchld, sh_proc_sigchld, SIGCHLD);
  uv_unref((uv_handle_t *)&r->sigchld);
  *rr = r;
  return r;
}

/* Find prog the way execvp would, in the PATH the child will have. Returns 0 or an errno. */
static int sh_proc_resolve(const char *prog, char **env, char *out, size_t cap) {
  if (strchr(prog, '/')) {
    snprintf(out, cap, "%s", prog);
    return 0;
  }
  const char *path = NULL;
  if (env) {
    for (char **e = env; *e; e++)
      if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  } else {
    path = getenv("PATH");
  }
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  int seen_eacces = 0;
  for (const char *dir = path;; dir++) {
    const char *end = strchr(dir, ':');
    size_t dl = end ? (size_t)(end - dir) : strlen(dir);
    if (dl == 0) snprintf(out, cap, "%s", prog); /* an empty entry is the current directory */
    else snprintf(out, cap, "%.*s/%s", (int)dl, dir, prog);
    struct stat st;
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(out, X_OK) == 0) return 0;
      seen_eacces = 1;
    }
    if (!end) break;
    dir = end;
  }
  return seen_eacces ? EACCES : ENOENT;
}

/* Attach our end of a pipe to a libuv handle of p. */
static void sh_proc_open_pipe(sh_proc_t *p, uv_loop_t *loop, int i, int fd) {
  uv_pipe_init(loop, &p->pipes[i], 0);
  p->pipes[i].data = p;
  uv_pipe_open(&p->pipes[i], fd);
  p->pipe_open[i] = 1;
  p->open_handles++;
}

/* posix_spawn with the child's stdio, directory, session and signal state. Returns 0 or an
 * errno (an exec failure included: glibc reports it from the vfork'd child). */
static int sh_proc_posix_spawn(pid_t *pid, const char *path, char **argv, char **env, const char *cwd,
                               const int child_fds[3]) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  for (int i = 0; i < 3; i++) {
    if (child_fds[i] >= 0) posix_spawn_file_actions_adddup2(&fa, child_fds[i], i);
    else posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
  /* the host ignores SIGPIPE and may block signals: the child starts clean */
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int rc = posix_spawn(pid, path, &fa, &attr, argv, env ? env : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc;
}

/* ---- spawning ---- */

typedef struct {
  char **argv, **env;
  int nargv, nenv;
  int out_fd, err_fd;
} sh_spawn_args_t;

static void sh_spawn_args_free(sh_spawn_args_t *a) {
  if (a->argv)
    for (int i = 0; i < a->nargv; i++) free(a->argv[i]);
  free(a->argv);
  if (a->env)
    for (int i = 0; i < a->nenv; i++) free(a->env[i]);
  free(a->env);
  if (a->out_fd >= 0) close(a->out_fd);
  if (a->err_fd >= 0) close(a->err_fd);
}

/* The inherited environment with the env table's entries on top; false removes a variable. */
static char **sh_build_env(lua_State *L, int idx, int *count, const char *who) {
  size_t n = 0;
  for (char **e = environ; *e; e++) n++;
  lua_pushnil(L);
  size_t extra = 0;
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "%s: env keys must be strings (got %s)", who, luaL_typename(L, -2));
    int vt = lua_type(L, -1);
    if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
      luaL_error(L, "%s: env.%s must be a string, a number or false (got %s)", who,
                 lua_tostring(L, -2), luaL_typename(L, -1));
    extra++;
    lua_pop(L, 1);
  }
  char **env = calloc(n + extra + 1, sizeof *env);
  if (!env) luaL_error(L, "%s: out of memory", who);
  int k = 0;
  for (char **e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    size_t nl = eq ? (size_t)(eq - *e) : strlen(*e);
    lua_pushlstring(L, *e, nl);
    lua_rawget(L, idx);
    int overridden = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!overridden) env[k++] = strdup(*e);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_toboolean(L, -1)) {
      lua_pushvalue(L, -2);
      lua_pushliteral(L, "=");
      lua_pushvalue(L, -3);
      lua_concat(L, 3);
      env[k++] = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  *count = k;
  return env;
}

static const char *sh_opt_string(lua_State *L, int idx, const char *key, const char *who) {
  lua_getfield(L, idx, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "%s: '%s' must be a string (got %s)", who, key, luaL_typename(L, -1));
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* still referenced by the options table */
  return s;
}

static double sh_opt_number(lua_State *L, int idx, const char *key, double def, const char *who) {
  lua_getfield(L, idx, key);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "%s: '%s' must be a number (got %s)", who, key, luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
    if (!(v >= 0)) luaL_error(L, "%s: '%s' must be >= 0", who, key);
  }
  lua_pop(L, 1);
  return v;
}

static int sh_opt_boolean(lua_State *L, int idx, const char *key, const char *who) {
  int t = lua_getfield(L, idx, key);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "%s: '%s' must be a boolean (got %s)", who, key, luaL_typename(L, -1));
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
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

static void sh_proc_shutdown_hook(void *arg) {
  (void)arg;
  for (sh_proc_t *p = sh_proc_all; p; p = p->next)
    if (!p->exited) sh_proc_terminate(p);
}

static void sh_proc_write_cb(uv_write_t *req, int status);

/* Queue data for the child's stdin; the result reaches a waiting task through w->wait. */
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

/* proc.spawn(opts [, who [, want_lines]]) */
static int sh_proc_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *who = luaL_optstring(L, 2, "proc.spawn");
  int want_lines = lua_toboolean(L, 3);
  lua_settop(L, 1);
  sh_sched_check(L, who);

  sh_spawn_args_t a = {NULL, NULL, 0, 0, -1, -1};
  const char *shell = sh_opt_string(L, 1, "shell", who);
  const char *cwd = sh_opt_string(L, 1, "cwd", who);
  const char *out_path = sh_opt_string(L, 1, "stdout", who);
  const char *err_path = sh_opt_string(L, 1, "stderr", who);
  const char *name = sh_opt_string(L, 1, "name", who);
  double timeout = sh_opt_number(L, 1, "timeout", 0, who);
  double grace = sh_opt_number(L, 1, "grace", 5, who);
  double max_output = sh_opt_number(L, 1, "max_output", SH_PROC_DEFAULT_MAX_OUTPUT, who);
  int quiet = sh_opt_boolean(L, 1, "quiet", who);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  if (shell && n > 0) return luaL_error(L, "%s: give either argv or shell=, not both", who);
  if (!shell && n == 0)
    return luaL_error(L, "%s: nothing to run (give the program and its arguments, e.g. {\"make\", \"test\"}, or shell=\"...\")", who);
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, 1, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return luaL_error(L, "%s: argv[%d] must be a string (got %s)", who, (int)i, luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_getfield(L, 1, "stdin");
  int stdin_type = lua_type(L, -1);
  if (stdin_type != LUA_TNIL && stdin_type != LUA_TSTRING && stdin_type != LUA_TBOOLEAN)
    return luaL_error(L, "%s: 'stdin' must be a string, or true for a pipe (got %s)", who, luaL_typename(L, -1));
  size_t stdin_len = 0;
  const char *stdin_data = stdin_type == LUA_TSTRING ? lua_tolstring(L, -1, &stdin_len) : NULL;
  int stdin_pipe = stdin_data != NULL || (stdin_type == LUA_TBOOLEAN && lua_toboolean(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, 1, "env");
  if (!lua_isnil(L, -1) && !lua_istable(L, -1))
    return luaL_error(L, "%s: 'env' must be a table (got %s)", who, luaL_typename(L, -1));
  int env_idx = lua_istable(L, -1) ? lua_gettop(L) : 0;
  if (cwd) {
    struct stat st;
    if (stat(cwd, &st) != 0 || !S_ISDIR(st.st_mode))
      return luaL_error(L, "%s: cwd '%s' is not a directory", who, cwd);
  }

  /* from here on, C memory is held: no Lua errors until it is handed over */
  if (env_idx) a.env = sh_build_env(L, env_idx, &a.nenv, who);
  a.nargv = shell ? 3 : (int)n;
  a.argv = calloc((size_t)a.nargv + 1, sizeof *a.argv);
  if (shell) {
    a.argv[0] = strdup("/bin/sh");
    a.argv[1] = strdup("-c");
    a.argv[2] = strdup(shell);
  } else {
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 1, i);
      a.argv[i - 1] = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  if (out_path) {
    a.out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (a.out_fd < 0) {
      int e = errno;
      sh_spawn_args_free(&a);
      return luaL_error(L, "%s: cannot open stdout file '%s': %s", who, out_path, strerror(e));
    }
  }
  if (err_path) {
    a.err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (a.err_fd < 0) {
      int e = errno;
      sh_spawn_args_free(&a);
      return luaL_error(L, "%s: cannot open stderr file '%s': %s", who, err_path, strerror(e));
    }
  }

  sh_proc_t **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, SH_PROC_MT);
  sh_proc_t *p = calloc(1, sizeof *p);
  if (!p) {
    sh_spawn_args_free(&a);
    return luaL_error(L, "%s: out of memory", who);
  }
  uv_loop_t *loop = sh_sched_loop(L);
  sh_reaper_t *reaper = sh_reaper_get(L); /* before the first spawn, so no SIGCHLD is missed */
  p->sched = sh_sched_get(L);
  sh_task_t *owner = sh_task_current(L);
  if (owner && owner->log_ctx) {
    p->log_ctx = owner->log_ctx;
    sh_log_ctx_retain(p->log_ctx);
  }
  p->grace = grace;
  p->want_lines = want_lines;
  p->quiet = quiet;
  sh_timer_init(&p->timeout_timer, sh_proc_timeout_fire);
  sh_timer_init(&p->kill_timer, sh_proc_kill_fire);
  sh_timer_init(&p->drain_timer, sh_proc_drain_fire);
  for (int i = 1; i <= 2; i++) p->cap[i].limit = (size_t)max_output;
  p->next = sh_proc_all; /* listed from the start, so maybe_free's unlink is uniform */
  if (sh_proc_all) sh_proc_all->prev = p;
  sh_proc_all = p;

  /* pipes: [i][0] is the read end; the child's end goes to child_fds, ours to a uv_pipe_t */
  int pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  int child_fds[3] = {-1, a.out_fd, a.err_fd};
  int rc = 0;
  if (stdin_pipe) {
    if (pipe2(pipes[0], O_CLOEXEC) != 0) rc = errno;
    else child_fds[0] = pipes[0][0];
  }
  for (int i = 1; i <= 2 && rc == 0; i++) {
    if (child_fds[i] >= 0) continue;
    if (pipe2(pipes[i], O_CLOEXEC) != 0) rc = errno;
    else child_fds[i] = pipes[i][1];
  }
  char path[4096];
  if (rc == 0) rc = sh_proc_resolve(a.argv[0], a.env, path, sizeof path);
  pid_t pid = 0;
  p->start_ns = uv_hrtime();
  if (rc == 0) rc = sh_proc_posix_spawn(&pid, path, a.argv, a.env, cwd, child_fds);
  for (int i = 0; i < 3; i++) { /* the child's ends are the child's now; ours go to libuv */
    int ours = i == 0 ? pipes[0][1] : pipes[i][0], theirs = i == 0 ? pipes[0][0] : pipes[i][1];
    if (theirs >= 0) close(theirs);
    if (ours < 0) continue;
    if (rc != 0) close(ours);
    else sh_proc_open_pipe(p, loop, i, ours);
  }
  if (stdin_pipe && rc == 0) p->stdin_is_pipe = 1;
  for (int i = 1; i <= 2; i++) p->capture[i] = p->pipe_open[i];
  const char *base = strrchr(a.argv[0], '/');
  snprintf(p->label, sizeof p->label, "%s[%d]", name ? name : (shell ? "sh" : base ? base + 1 : a.argv[0]), (int)pid);
  if (rc != 0) {
    char prog[256];
    snprintf(prog, sizeof prog, "%s", a.argv[0]);
    sh_spawn_args_free(&a);
    sh_proc_maybe_free(p);
    if (rc == ENOENT && !strchr(prog, '/'))
      return luaL_error(L, "%s: program '%s' not found in PATH (install it or give its full path)", who, prog);
    if (rc == ENOENT)
      return luaL_error(L, "%s: cannot run '%s': no such file", who, prog);
    return luaL_error(L, "%s: cannot run '%s': %s", who, prog, uv_strerror(-rc));
  }
  sh_spawn_args_free(&a);
  *ud = p;
  p->lua_alive = 1;
  p->spawned = 1;
  p->pid = pid;
  sh_reaper_set_running(reaper, 1);
  if (!sh_proc_hook_installed) {
    sh_proc_hook_installed = 1;
    sh_sched_on_shutdown(p->sched, sh_proc_shutdown_hook, NULL);
  }
  sh_log_printf(SH_LOG_DEBUG, "process %s: started", p->label);
  for (int i = 1; i <= 2; i++)
    if (p->pipe_open[i]) uv_read_start((uv_stream_t *)&p->pipes[i], sh_proc_alloc, sh_proc_read);
  if (stdin_data) {
    if (stdin_len == 0 || !sh_proc_queue_write(p, stdin_data, stdin_len, 1)) sh_proc_close_pipe(p, 0);
  }
  if (timeout > 0) sh_timer_arm(p->sched, &p->timeout_timer, timeout);
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
  size_t len = c->len > c->limit ? c->limit : c->len;
  lua_pushlstring(L, c->data ? c->data + c->len - len : "", len);
  lua_setfield(L, -2, field);
  if (c->truncated) {
    char key[32];
    snprintf(key, sizeof key, "%s_truncated", field);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, key);
  }
}

static int sh_proc_result(lua_State *L, sh_proc_t *p) {
  lua_createtable(L, 0, 10);
  int code = p->timed_out ? 124 : p->term_signal ? 128 + p->term_signal : (int)p->exit_status;
  lua_pushboolean(L, code == 0);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, code);
  lua_setfield(L, -2, "code");
  if (p->term_signal) {
    lua_pushstring(L, sh_signal_name(p->term_signal));
    lua_setfield(L, -2, "signal");
  }
  lua_pushboolean(L, p->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushnumber(L, (double)(p->end_ns - p->start_ns) / 1e9);
  lua_setfield(L, -2, "duration");
  lua_pushinteger(L, p->pid);
  lua_setfield(L, -2, "pid");
  sh_push_capture(L, p, 1, "stdout");
  sh_push_capture(L, p, 2, "stderr");
  return 1;
}

static int sh_proc_wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  sh_proc_t *p = sh_check_proc(L, 1);
  p->wait_kind = SH_WAIT_NONE;
  return sh_proc_result(L, p);
}

static void sh_proc_claim_wait(lua_State *L, sh_proc_t *p, int kind, const char *who) {
  if (p->wait_kind != SH_WAIT_NONE) luaL_error(L, "%s: another task is already waiting on this process", who);
  sh_sched_park(L, &p->wait, sh_proc_wait_abort, who);
  p->wait_kind = kind;
}

static int sh_proc_wait(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  lua_settop(L, 1);
  if (sh_proc_finished(p)) {
    sh_sched_check(L, "process:wait");
    return sh_proc_result(L, p);
  }
  sh_proc_claim_wait(L, p, SH_WAIT_EXIT, "process:wait");
  return sh_sched_yield(L, sh_proc_wait_k, 0);
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

static int sh_proc_read_line_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  sh_proc_t *p = sh_check_proc(L, 1);
  p->wait_kind = SH_WAIT_NONE;
  return sh_proc_pop_line(L, p);
}

/* p:read_line() -> "stdout"|"stderr", line; nil once both streams have ended */
static int sh_proc_read_line(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  lua_settop(L, 1);
  if (!p->want_lines) return luaL_error(L, "process:read_line: spawn the process with lines enabled");
  if (p->lines_head || sh_proc_reading_done(p)) {
    sh_sched_check(L, "process:read_line");
    return sh_proc_pop_line(L, p);
  }
  sh_proc_claim_wait(L, p, SH_WAIT_LINE, "process:read_line");
  return sh_sched_yield(L, sh_proc_read_line_k, 0);
}

/* called by libuv when a write to the child's stdin is done */
static void sh_proc_write_cb(uv_write_t *req, int status) {
  sh_proc_write_t *w = SH_CONTAINER(req, sh_proc_write_t, req);
  if (w->close_after) sh_proc_close_pipe(w->proc, 0);
  if (w->wait.task) {
    w->status = status;
    sh_sched_wake(&w->wait);
    return; /* the continuation frees it */
  }
  free(w);
}

static void sh_proc_write_abort(sh_wait_t *wait) {
  (void)wait; /* the write completes on its own; its callback frees it */
}

static int sh_proc_write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  sh_proc_write_t *w = (sh_proc_write_t *)ctx;
  int rc = w->status;
  free(w);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "process:write: %s", uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int sh_proc_write(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (!p->stdin_is_pipe) return luaL_error(L, "process:write: stdin is not a pipe (spawn with stdin = true)");
  if (!p->pipe_open[0]) {
    lua_pushnil(L);
    lua_pushstring(L, p->exited ? "process:write: the process has exited" : "process:write: stdin was closed");
    lua_pushliteral(L, "EPIPE");
    return 3;
  }
  sh_task_t *t = sh_task_current(L);
  if (!t || !lua_isyieldable(L)) return luaL_error(L, "process:write: cannot wait here (only inside a stagehost task)");
  sh_sched_check(L, "process:write");
  sh_proc_write_t *w = sh_proc_queue_write(p, data, len, 0);
  if (!w) {
    lua_pushnil(L);
    lua_pushliteral(L, "process:write: the child's stdin is closed");
    lua_pushliteral(L, "EPIPE");
    return 3;
  }
  sh_sched_park(L, &w->wait, sh_proc_write_abort, "process:write");
  return sh_sched_yield(L, sh_proc_write_k, (lua_KContext)w);
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

static int sh_proc_index(lua_State *L) {
  sh_proc_t *p = sh_check_proc(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "pid") == 0) {
    lua_pushinteger(L, p->pid);
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, key);
  return 1;
}

static const luaL_Reg sh_proc_methods[] = {
    {"wait", sh_proc_wait},
    {"read_line", sh_proc_read_line},
    {"write", sh_proc_write},
    {"close_stdin", sh_proc_close_stdin},
    {"kill", sh_proc_kill},
    {NULL, NULL},
};

/* proc.stop_leftovers() -> n: terminate the still-running children started under the calling
 * task's log context (a pipeline stage and its sub-tasks), as a CI runner ends a job's leftover
 * processes when the job ends. */
static int sh_proc_stop_leftovers(lua_State *L) {
  sh_task_t *t = sh_task_current(L);
  int n = 0;
  if (t && t->log_ctx)
    for (sh_proc_t *p = sh_proc_all; p; p = p->next)
      if (p->spawned && !p->exited && !p->terminating && p->log_ctx == t->log_ctx) {
        sh_proc_terminate(p);
        n++;
      }
  lua_pushinteger(L, n);
  return 1;
}

/* proc.executable() -> the path of the running stagehost, to run it again (tests, stages) */
static int sh_proc_executable(lua_State *L) {
  char buf[4096];
  size_t n = sizeof buf;
  int rc = uv_exepath(buf, &n);
  if (rc != 0) return luaL_error(L, "proc.executable: %s", uv_strerror(rc));
  lua_pushlstring(L, buf, n);
  return 1;
}

static const luaL_Reg sh_proc_funcs[] = {
    {"spawn", sh_proc_spawn},
    {"executable", sh_proc_executable},
    {"stop_leftovers", sh_proc_stop_leftovers},
    {NULL, NULL},
};

/* For os.exit: stop every child now, without waiting. */
void sh_proc_kill_all(int sig) {
  for (sh_proc_t *p = sh_proc_all; p; p = p->next)
    if (!p->exited) sh_proc_signal_group(p, sig);
}

int sh_proc_open(lua_State *L) {
  if (luaL_newmetatable(L, SH_PROC_MT)) {
    luaL_newlib(L, sh_proc_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, sh_proc_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sh_proc_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sh_proc_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  sh_reaper_get(L); /* now, so it is there before the first child and part of any baseline */
  luaL_newlib(L, sh_proc_funcs);
  return 1;
}
