/* stagehost: run a Lua script (or, later, the pipeline it returns) as the main task on the loop.
 * Exit codes: 0 ok, 1 the script failed, 2 usage or load error, 3 cancelled, 128+N on signal N. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "../bindings/modules.h"
#include "log.h"
#include "sched.h"

#ifndef STAGEHOST_VERSION
#define STAGEHOST_VERSION "0.0.0"
#endif

extern char **environ;

enum { SH_EXIT_OK = 0, SH_EXIT_FAILED = 1, SH_EXIT_USAGE = 2, SH_EXIT_CANCELLED = 3 };

static const char sh_usage[] =
    "usage: stagehost [options] [SCRIPT.lua [args...]]\n"
    "       stagehost run PIPELINE.lua [--tag T] [--env E] [--var k=v] [--only S] [--from S] [--dry-run]\n"
    "                                  [--sandbox]\n"
    "       stagehost graph PIPELINE.lua [--format mermaid|dot|json]\n"
    "\n"
    "Runs SCRIPT.lua as a task on stagehost's event loop; a script that returns\n"
    "pipeline.define{...} runs that pipeline (the same flags as 'run' follow it).\n"
    "\n"
    "options:\n"
    "  -e CODE      run CODE (before SCRIPT, if one is given)\n"
    "  --version    print the version and exit\n"
    "  -h, --help   print this help and exit\n"
    "  --           stop reading options\n"
    "\n"
    "environment:\n"
    "  STAGEHOST_PATH       directory holding the Lua stdlib (stagehost/init.lua)\n"
    "  STAGEHOST_LOG_LEVEL  debug, info (default), warn, error or off\n"
    "\n"
    "exit codes: 0 success, 1 script failed, 2 usage or load error, 3 cancelled,\n"
    "            130 interrupted (SIGINT), 143 terminated (SIGTERM)\n";

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

static int sh_usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "stagehost: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n\n%s", sh_usage);
  return SH_EXIT_USAGE;
}

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

/* C modules: build/lib beside the binary, or lib/stagehost in the installed prefix. */
static void sh_setup_cpath(lua_State *L) {
  char exe[PATH_MAX - 64];
  size_t n = sizeof exe;
  if (uv_exepath(exe, &n) != 0) return;
  char *slash = strrchr(exe, '/');
  if (!slash) return;
  *slash = '\0';
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lib/?.so;%s/../lib/stagehost/?.so;", exe, exe);
  lua_getfield(L, -2, "cpath");
  lua_concat(L, 2);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
}

static int sh_setup_paths(lua_State *L, const char *script) {
  sh_setup_cpath(L);
  char dir[PATH_MAX];
  int found = sh_find_stdlib(dir, sizeof dir) == 0;
  const char *env = getenv("STAGEHOST_PATH");
  if (!found && env && *env) {
    fprintf(stderr, "stagehost: STAGEHOST_PATH=%s has no stagehost/init.lua (point it at the stdlib directory or unset it)\n", env);
    return -1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (found) {
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
    luaL_addvalue(&b);
  }
  /* modules beside the script resolve too, so a pipeline can keep helpers next to itself */
  if (script && strcmp(script, "-") != 0) {
    const char *slash = strrchr(script, '/');
    if (slash) {
      luaL_addlstring(&b, script, (size_t)(slash - script));
      luaL_addstring(&b, "/?.lua;");
    }
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_remove(L, -2);
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_getglobal(L, "package");
  lua_insert(L, -2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
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
  sh_mask_fwrite(s, len, stdout);
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

/* called by libuv on SIGINT/SIGTERM/SIGHUP: cancel every task, which kills the processes they
 * wait on; the loop then drains and main() exits 128+N. A second signal does not wait. */
static void sh_on_signal(uv_signal_t *h, int signum) {
  sh_host_t *host = h->data;
  if (++host->signal_count > 1) {
    sh_proc_kill_all(SIGKILL);
    fflush(stdout);
    _exit(128 + host->exit_signal);
  }
  host->exit_signal = signum;
  const char *name = signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "SIGHUP";
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

/* Runs the -e chunks, then the script; a script that returns a pipeline has it run. */
static const char sh_driver[] =
    "local chunks, args = ...\n"
    "for i = 1, #chunks - 1 do chunks[i]() end\n"
    /* through select: a function value that comes from a call has no name, so tracebacks
     * call the script "main chunk", as lua(1) does */
    "local results = table.pack(select(1, chunks[#chunks])(table.unpack(args, 1, args.n)))\n"
    "local pipeline = package.loaded['stagehost.pipeline']\n"
    "if pipeline and pipeline.is(results[1]) then return pipeline.main(results[1], args) end\n"
    "return table.unpack(results, 1, results.n)\n";

/* Subcommands, handled by the Lua side (stdlib/stagehost/cli.lua). */
static const char *const sh_subcommands[] = {"run", "graph", "approve", "runs", "status", "logs",
                                             "resume", "cancel", "serve", "artifacts", NULL};
static const char sh_cli_chunk[] = "return require('stagehost.cli').main(...)";

static int sh_is_subcommand(const char *a) {
  for (const char *const *c = sh_subcommands; *c; c++)
    if (strcmp(a, *c) == 0) return 1;
  return 0;
}

static void sh_build_arg(lua_State *L, char **argv, int argc, int script_at) {
  lua_createtable(L, argc - script_at, script_at + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script_at);
  }
  lua_setglobal(L, "arg");
}

static void sh_walk_report(uv_handle_t *h, void *arg) {
  int *n = arg;
  if (uv_is_closing(h)) return;
  (*n)++;
  fprintf(stderr, "stagehost: handle left open at exit: %s\n", uv_handle_type_name(uv_handle_get_type(h)));
}

static int sh_finish(sh_host_t *host, int code) {
  sh_sched_shutdown(host->sched);
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
  if (sh_task_outcome(t) == SH_TASK_ERROR) {
    /* an error object with an exit_code (a pipeline mistake, a failed run) is one line, no
     * traceback: it says what happened and where already */
    sh_task_push_error(L, t);
    int code = -1;
    if (lua_istable(L, -1)) {
      if (lua_getfield(L, -1, "exit_code") == LUA_TNUMBER && lua_isinteger(L, -1)) code = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    if (code >= 0) {
      size_t len;
      const char *msg = luaL_tolstring(L, -1, &len);
      if (len > 0) sh_report(msg, len);
      lua_pop(L, 2);
      return code;
    }
    lua_pop(L, 1);
    sh_task_push_traceback(L, t);
    size_t len;
    const char *tb = lua_tolstring(L, -1, &len);
    sh_report(tb ? tb : "error", tb ? len : 5);
    lua_pop(L, 1);
    return SH_EXIT_FAILED;
  }
  if (sh_task_outcome(t) == SH_TASK_CANCELLED) {
    sh_task_push_error(L, t);
    size_t len;
    const char *msg = luaL_tolstring(L, -1, &len);
    sh_report(msg, len);
    lua_pop(L, 2);
    return SH_EXIT_CANCELLED;
  }
  return sh_sched_unobserved_failures(host->sched) > 0 ? SH_EXIT_FAILED : SH_EXIT_OK;
}

int main(int argc, char **argv) {
  const char *codes[64];
  int ncodes = 0, script_at = argc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      script_at = i + 1;
      break;
    }
    if (strcmp(a, "-") == 0 || a[0] != '-') {
      script_at = i;
      break;
    }
    if (strcmp(a, "--version") == 0) {
      printf("stagehost %s (%s, libuv %s)\n", STAGEHOST_VERSION, LUA_RELEASE, uv_version_string());
      return SH_EXIT_OK;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(sh_usage, stdout);
      return SH_EXIT_OK;
    }
    if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) return sh_usage_error("option '%s' needs an argument", a);
      if (ncodes == (int)(sizeof codes / sizeof *codes)) return sh_usage_error("too many %s options", "-e");
      codes[ncodes++] = argv[++i];
      continue;
    }
    return sh_usage_error("unknown option '%s'", a);
  }
  const char *script = script_at < argc ? argv[script_at] : NULL;
  if (!script && ncodes == 0) return sh_usage_error("%s", "nothing to run: give a script or -e CODE");
  int subcommand = script && ncodes == 0 && sh_is_subcommand(script) && access(script, F_OK) != 0;

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
  lua_pushcfunction(L, sh_print);
  lua_setglobal(L, "print");
  lua_getglobal(L, "os");
  lua_pushcfunction(L, sh_os_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  if (sh_setup_paths(L, script) != 0) return sh_finish(host, SH_EXIT_USAGE);
  sh_build_arg(L, argv, argc, script ? script_at : 0);

  /* driver, chunks, args: load everything before running anything */
  if (luaL_loadbuffer(L, sh_driver, sizeof sh_driver - 1, "=stagehost") != LUA_OK) abort();
  lua_createtable(L, ncodes + 1, 0);
  for (int i = 0; i < ncodes; i++) {
    if (luaL_loadbuffer(L, codes[i], strlen(codes[i]), "=(command line)") != LUA_OK) {
      size_t len;
      const char *msg = lua_tolstring(L, -1, &len);
      sh_report(msg, len);
      return sh_finish(host, SH_EXIT_USAGE);
    }
    lua_rawseti(L, -2, i + 1);
  }
  if (subcommand) {
    if (luaL_loadbuffer(L, sh_cli_chunk, sizeof sh_cli_chunk - 1, "=stagehost") != LUA_OK) abort();
    lua_rawseti(L, -2, ncodes + 1);
  } else if (script) {
    int rc = luaL_loadfile(L, strcmp(script, "-") == 0 ? NULL : script);
    if (rc != LUA_OK) {
      size_t len;
      const char *msg = lua_tolstring(L, -1, &len);
      if (rc == LUA_ERRFILE) {
        lua_pushfstring(L, "%s (check the script's path)", msg);
        msg = lua_tolstring(L, -1, &len);
      }
      sh_report(msg, len);
      return sh_finish(host, SH_EXIT_USAGE);
    }
    lua_rawseti(L, -2, ncodes + 1);
  }
  /* a subcommand gets its own name as the first argument */
  int first = subcommand ? script_at : script_at + 1;
  int nargs = script ? argc - first : 0;
  lua_createtable(L, nargs, 1);
  for (int i = 0; i < nargs; i++) {
    lua_pushstring(L, argv[first + i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  host->main_task = sh_task_spawn(L, 2);
  sh_task_observe(host->main_task);
  sh_sched_set_main(host->sched, host->main_task);
  lua_setfield(L, LUA_REGISTRYINDEX, "stagehost.main_task"); /* keeps it after it finishes */

  sh_signals_start(host);
  uv_run(&host->loop, UV_RUN_DEFAULT);
  return sh_finish(host, sh_main_outcome(host));
}
