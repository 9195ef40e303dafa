/* stagehost: the host, as lua.c is Lua's. main() sets up the runtime (the loop, the Lua state,
 * the scheduler, the preloaded modules, the library paths, signals, print and os.exit) and hands
 * argv to stdlib/stagehost/cli.lua, which owns every command, the usage text and the mapping from
 * errors to exit codes. The host keeps what only it can know: a signal (exit 128+N), tasks stuck
 * waiting on each other, failed tasks nobody joined and handles left open. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "../bindings/auxlib.h"
#include "../bindings/modules.h"
#include "log.h"
#include "sched.h"

#ifndef STAGEHOST_VERSION
#define STAGEHOST_VERSION "0.0.0"
#endif

extern char **environ;

enum { SH_EXIT_OK = 0, SH_EXIT_FAILED = 1, SH_EXIT_USAGE = 2 };

typedef struct {
  uv_loop_t loop;
  lua_State *L;
  sh_sched_t *sched;
  sh_task_t *main_task;
  uv_signal_t signals[3];
  int exit_signal;     /* first SIGINT/SIGTERM/SIGHUP received */
  int signal_count;
} sh_host_t;

static sh_host_t sh_host;

/* Print a message masked, prefixed with "stagehost: ", on stderr. */
static void sh_report(const char *msg, size_t len) {
  fflush(stdout);
  fputs("stagehost: ", stderr);
  sh_mask_fwrite(msg, len, stderr);
  fputc('\n', stderr);
  fflush(stderr);
}

/* ---- stdlib lookup: STAGEHOST_PATH, then beside the binary (build tree), then installed ---- */

static int sh_has_stdlib(const char *dir) {
  char probe[PATH_MAX + 32];
  snprintf(probe, sizeof probe, "%s/stagehost/init.lua", dir);
  return access(probe, R_OK) == 0;
}

static int sh_find_stdlib(char *out, size_t cap) {
  const char *env = getenv("STAGEHOST_PATH");
  if (env && *env) {
    snprintf(out, cap, "%s", env);
    return sh_has_stdlib(out) ? 0 : -1;
  }
  char exe[PATH_MAX - 32]; /* room for the suffixes below */
  size_t n = sizeof exe;
  if (uv_exepath(exe, &n) != 0) return -1;
  char *slash = strrchr(exe, '/');
  if (!slash) return -1;
  *slash = '\0';
  snprintf(out, cap, "%s/stdlib", exe);
  if (sh_has_stdlib(out)) return 0;
  snprintf(out, cap, "%s/../share/stagehost/lua", exe);
  if (sh_has_stdlib(out)) return 0;
  return -1;
}

/* package[field] = the string on top of the stack .. package[field]; pops that string. */
static void sh_prepend_package(lua_State *L, const char *field) {
  lua_getglobal(L, "package");
  lua_insert(L, -2);
  lua_getfield(L, -2, field);
  lua_concat(L, 2);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

/* C modules: build/lib beside the binary, or lib/stagehost in the installed prefix. */
static void sh_setup_cpath(lua_State *L) {
  char exe[PATH_MAX - 64];
  size_t n = sizeof exe;
  if (uv_exepath(exe, &n) != 0) return;
  char *slash = strrchr(exe, '/');
  if (!slash) return;
  *slash = '\0';
  lua_pushfstring(L, "%s/lib/?.so;%s/../lib/stagehost/?.so;", exe, exe);
  sh_prepend_package(L, "cpath");
}

/* package.path: the stdlib first. The directory of a script is added by cli.lua, which knows
 * which argument is the script; it goes right after the stdlib's two entries. */
static int sh_setup_paths(lua_State *L) {
  sh_setup_cpath(L);
  char dir[PATH_MAX];
  if (sh_find_stdlib(dir, sizeof dir) != 0) {
    const char *env = getenv("STAGEHOST_PATH");
    if (env && *env)
      fprintf(stderr, "stagehost: STAGEHOST_PATH=%s has no stagehost/init.lua (point it at the stdlib directory or unset it)\n", env);
    else
      fputs("stagehost: cannot find the Lua library (stagehost/init.lua) beside the binary or in "
            "PREFIX/share/stagehost/lua (set STAGEHOST_PATH to the stdlib directory)\n", stderr);
    return -1;
  }
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  sh_prepend_package(L, "path");
  return 0;
}

/* ---- print and os.exit, replaced: print masks secrets, os.exit stops children first ---- */

static int sh_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  sh_log_print(s, len);
  return 0;
}

static int sh_os_exit(lua_State *L) {
  int code = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? 0 : 1) : (int)luaL_optinteger(L, 1, 0);
  sh_proc_kill_all(SIGTERM);
  fflush(stdout);
  fflush(stderr);
  exit(code);
}

/* ---- signals ---- */

#define SH_SIGNAL_HOOK "stagehost.on_signal"

/* host.on_signal(fn | nil): on the first SIGINT/SIGTERM/SIGHUP, fn(name) runs as a new task
 * instead of the host cancelling every task, so a pipeline can stop its stages and still run
 * its cleanup and write its record. A second signal ends the host at once either way. */
static int sh_host_on_signal(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, SH_SIGNAL_HOOK);
  return 0;
}

static int sh_host_open(lua_State *L) {
  static const luaL_Reg funcs[] = {{"on_signal", sh_host_on_signal}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

/* Spawns the hook (at 1) with the signal's name (at 2); under lua_pcall, because spawning
 * allocates and a callback has no protected frame of its own. */
static int sh_spawn_signal_hook(lua_State *L) {
  sh_task_spawn(L, 1);
  return 0;
}

/* Hands the signal to the Lua hook when there is one; 0 when there is none or it failed. */
static int sh_signal_to_hook(sh_host_t *host, const char *name) {
  lua_State *L = host->L;
  if (lua_getfield(L, LUA_REGISTRYINDEX, SH_SIGNAL_HOOK) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushcfunction(L, sh_spawn_signal_hook);
  lua_insert(L, -2);
  lua_pushstring(L, name);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* called by libuv on SIGINT/SIGTERM/SIGHUP: hand it to the Lua hook (a pipeline run), else
 * cancel every task, which kills the processes they wait on; the loop then drains and main()
 * exits 128+N. A second signal does not wait. */
static void sh_on_signal(uv_signal_t *h, int signum) {
  sh_host_t *host = h->data;
  if (++host->signal_count > 1) {
    sh_proc_kill_all(SIGKILL);
    fflush(stdout);
    _exit(128 + host->exit_signal);
  }
  host->exit_signal = signum;
  const char *name = signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "SIGHUP";
  if (sh_signal_to_hook(host, name)) {
    sh_log_printf(SH_LOG_WARN, "%s received: stopping the run (a second signal ends the host at once)", name);
    return;
  }
  sh_log_printf(SH_LOG_WARN, "%s received: cancelling %zu task(s) and stopping their processes", name,
                sh_sched_live_tasks(host->sched));
  char reason[64];
  snprintf(reason, sizeof reason, "interrupted (%s)", name);
  sh_task_cancel_all(host->sched, reason);
  sh_sched_run_shutdown_hooks(host->sched);
}

static void sh_signals_start(sh_host_t *host) {
  static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(&host->loop, &host->signals[i]);
    host->signals[i].data = host;
    uv_signal_start(&host->signals[i], sh_on_signal, sigs[i]);
    uv_unref((uv_handle_t *)&host->signals[i]); /* signals alone do not keep a script alive */
  }
}

/* ---- the main task ---- */

/* The main task: the command line, as cli.lua reads it (cli.main(argv, host)). */
static const char sh_cli_chunk[] = "return require('stagehost.cli').main(...)";

/* argv as lua.c's createargtable has it: argv[0] at 0, the arguments from 1, n = argc - 1. */
static void sh_push_argv(lua_State *L, int argc, char **argv) {
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  sh_setfield_integer(L, "n", argc - 1);
}

/* host.signal() for cli.lua: the signal the host received ("SIGINT", ...) or nil. Its exit code
 * (128+N) and its report are the host's, so cli.lua stays quiet then. */
static int sh_received_signal(lua_State *L) {
  int s = sh_host.exit_signal;
  if (!s) return 0;
  lua_pushstring(L, s == SIGINT ? "SIGINT" : s == SIGTERM ? "SIGTERM" : "SIGHUP");
  return 1;
}

/* The host's facts for cli.lua: what `stagehost --version` prints, which only the build knows,
 * and host.signal. */
static void sh_push_host(lua_State *L) {
  lua_createtable(L, 0, 4);
  lua_pushcfunction(L, sh_received_signal);
  lua_setfield(L, -2, "signal");
  sh_setfield_string(L, "version", STAGEHOST_VERSION);
  sh_setfield_string(L, "lua", LUA_RELEASE);
  sh_setfield_string(L, "libuv", uv_version_string());
}

static void sh_walk_report(uv_handle_t *h, void *arg) {
  int *n = arg;
  if (uv_is_closing(h)) return;
  (*n)++;
  fprintf(stderr, "stagehost: handle left open at exit: %s\n", uv_handle_type_name(uv_handle_get_type(h)));
}

static int sh_finish(sh_host_t *host, int code) {
  sh_sched_shutdown(host->sched);
  sh_proc_host_exit();
  lua_close(host->L);
  sh_sched_free(host->sched);
  uv_run(&host->loop, UV_RUN_DEFAULT); /* close callbacks of everything Lua released */
  for (int i = 0; i < 3; i++)
    if (host->signals[i].loop && !uv_is_closing((uv_handle_t *)&host->signals[i]))
      uv_close((uv_handle_t *)&host->signals[i], NULL);
  uv_run(&host->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&host->loop) != 0) {
    int n = 0;
    uv_walk(&host->loop, sh_walk_report, &n);
    const char *strict = getenv("STAGEHOST_CHECK_HANDLES");
    if (strict && *strict && strcmp(strict, "0") != 0 && code == 0) code = 70;
  }
  sh_log_shutdown();
  fflush(stdout);
  return code;
}

/* The exit code cli.main gave: its integer result, or the exit_code of the error object it raised
 * (it has reported it already; raising is how a failure stops the loop at once, servers and
 * timers notwithstanding). -1 when it gave none: cli.lua itself could not run. */
static int sh_main_code(lua_State *L, sh_task_t *t) {
  int code = -1;
  if (sh_task_outcome(t) == SH_TASK_OK) {
    lua_State *co = t->co;
    int first = lua_gettop(co) - t->nresults + 1;
    code = t->nresults > 0 && lua_isinteger(co, first) ? (int)lua_tointeger(co, first) : SH_EXIT_OK;
  } else if (sh_task_outcome(t) == SH_TASK_ERROR) {
    int top = lua_gettop(L);
    sh_task_push_error(L, t);
    if (lua_istable(L, -1) && lua_getfield(L, -1, "exit_code") == LUA_TNUMBER && lua_isinteger(L, -1))
      code = (int)lua_tointeger(L, -1);
    lua_settop(L, top);
  }
  return code;
}

/* A signal is the host's to report; so are tasks stuck on each other and failed tasks nobody
 * joined. Everything else was mapped to a code by cli.lua. */
static int sh_main_outcome(sh_host_t *host) {
  lua_State *L = host->L;
  if (host->exit_signal) return 128 + host->exit_signal;
  sh_task_t *t = host->main_task;
  if (!sh_task_done(t)) {
    char msg[200];
    int n = snprintf(msg, sizeof msg,
                     "the script is stuck: %zu task(s) wait on each other and nothing else can wake "
                     "them (look for a join cycle)",
                     sh_sched_live_tasks(host->sched));
    sh_report(msg, (size_t)n);
    return SH_EXIT_FAILED;
  }
  int code = sh_main_code(L, t);
  if (code < 0) { /* the command line itself failed (a broken stdlib): say where */
    int top = lua_gettop(L);
    sh_task_push_traceback(L, t);
    size_t len;
    const char *tb = lua_tolstring(L, -1, &len);
    if (!tb || len == 0) {
      sh_task_push_error(L, t);
      tb = luaL_tolstring(L, -1, &len);
    }
    sh_report(tb, len);
    lua_settop(L, top);
    return SH_EXIT_FAILED;
  }
  if (code == SH_EXIT_OK && sh_sched_unobserved_failures(host->sched) > 0) return SH_EXIT_FAILED;
  return code;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a closed pipe is an error result, not a reason to die */
  setvbuf(stdout, NULL, _IOLBF, 0);
  sh_log_init(environ);

  sh_host_t *host = &sh_host;
  uv_loop_init(&host->loop);
  host->L = luaL_newstate();
  lua_State *L = host->L;
  luaL_openlibs(L);
  host->sched = sh_sched_new(L, &host->loop);
  sh_modules_preload(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, sh_host_open);
  lua_setfield(L, -2, "stagehost.core.host");
  lua_pop(L, 1);
  lua_pushcfunction(L, sh_print);
  lua_setglobal(L, "print");
  sh_log_wrap_stdio(L);
  lua_getglobal(L, "os");
  lua_pushcfunction(L, sh_os_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  if (sh_setup_paths(L) != 0) return sh_finish(host, SH_EXIT_USAGE);

  if (luaL_loadbuffer(L, sh_cli_chunk, sizeof sh_cli_chunk - 1, "=stagehost") != LUA_OK) abort();
  sh_push_argv(L, argc, argv);
  sh_push_host(L);
  host->main_task = sh_task_spawn(L, 2);
  sh_task_observe(host->main_task);
  sh_sched_set_main(host->sched, host->main_task);
  lua_setfield(L, LUA_REGISTRYINDEX, "stagehost.main_task"); /* keeps it after it finishes */

  sh_signals_start(host);
  uv_run(&host->loop, UV_RUN_DEFAULT);
  return sh_finish(host, sh_main_outcome(host));
}
