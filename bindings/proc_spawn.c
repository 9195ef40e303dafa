/* proc.spawn's options to a started child: see proc_spawn.h. Children start with posix_spawn,
 * which glibc runs as a vfork: unlike uv_spawn's fork (libuv 1.44) it copies no page tables, so
 * starting many children is cheap. */
#define _GNU_SOURCE /* POSIX_SPAWN_SETSID, posix_spawn_file_actions_addchdir_np */
#include "proc_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "auxlib.h"

#define SH_PROC_DEFAULT_MAX_OUTPUT (4 * 1024 * 1024)

extern char **environ;

/* ---- step 1: the options, checked, as Lua strings ---- */

/* The child's environment as a sequence of "NAME=value" strings: the inherited environment with
 * the env table's entries on top; false removes a variable. Checked first, built after. */
static void sh_spawn_push_env(lua_State *L, int env, int arg, const char *who) {
  lua_pushnil(L);
  while (lua_next(L, env)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      sh_opt_error(L, arg, who, "env", "must have string keys, got %s", luaL_typename(L, -2));
    int vt = lua_type(L, -1);
    if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
      sh_argerror(L, arg, who, "env.%s must be a string, a number or false, got %s", lua_tostring(L, -2),
                  luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_newtable(L);
  int out = lua_gettop(L);
  lua_Integer k = 0;
  for (char **e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    lua_pushlstring(L, *e, eq ? (size_t)(eq - *e) : strlen(*e));
    int overridden = lua_rawget(L, env) != LUA_TNIL;
    lua_pop(L, 1);
    if (overridden) continue;
    lua_pushstring(L, *e);
    lua_rawseti(L, out, ++k);
  }
  lua_pushnil(L);
  while (lua_next(L, env)) {
    if (lua_toboolean(L, -1)) {
      lua_pushvalue(L, -2);
      lua_pushliteral(L, "=");
      lua_pushvalue(L, -3);
      lua_concat(L, 3);
      lua_rawseti(L, out, ++k);
    }
    lua_pop(L, 1);
  }
}

void sh_spawn_read(lua_State *L, int idx, const char *who, sh_spawn_t *sp) {
  memset(sp, 0, sizeof *sp);
  sp->out_fd = sp->err_fd = -1;
  sp->who = who;
  sp->shell = sh_opt_string(L, idx, "shell", who);
  sp->cwd = sh_opt_string(L, idx, "cwd", who);
  sp->out_path = sh_opt_string(L, idx, "stdout", who);
  sp->err_path = sh_opt_string(L, idx, "stderr", who);
  sp->name = sh_opt_string(L, idx, "name", who);
  static const char *const numbers[] = {"timeout", "grace", "max_output"};
  double *values[] = {&sp->timeout, &sp->grace, &sp->max_output};
  const double defaults[] = {0, 5, SH_PROC_DEFAULT_MAX_OUTPUT};
  for (int i = 0; i < 3; i++) {
    *values[i] = sh_opt_number(L, idx, numbers[i], defaults[i], who);
    if (!(*values[i] >= 0)) sh_opt_rangeerror(L, idx, numbers[i], ">= 0", who);
  }
  sp->quiet = sh_opt_bool(L, idx, "quiet", 0, who);
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (sp->shell && n > 0) sh_argerror(L, idx, who, "give either argv or shell=, not both");
  if (!sp->shell && n == 0)
    sh_argerror(L, idx, who, "nothing to run: give the program and its arguments, e.g. {\"make\", \"test\"}, or shell=\"...\"");
  /* argv: strings only, numbers converted here (converting allocates, so not in step 2) */
  lua_createtable(L, sp->shell ? 3 : (int)n, 0);
  sp->argv_idx = lua_gettop(L);
  if (sp->shell) {
    lua_pushliteral(L, "/bin/sh");
    lua_rawseti(L, sp->argv_idx, 1);
    lua_pushliteral(L, "-c");
    lua_rawseti(L, sp->argv_idx, 2);
    lua_pushstring(L, sp->shell);
    lua_rawseti(L, sp->argv_idx, 3);
  }
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, idx, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      sh_argerror(L, idx, who, "argv[%d] must be a string, got %s", (int)i, luaL_typename(L, -1));
    lua_tostring(L, -1);
    lua_rawseti(L, sp->argv_idx, i);
  }
  int st = lua_getfield(L, idx, "stdin");
  if (st != LUA_TNIL && st != LUA_TSTRING && st != LUA_TBOOLEAN)
    sh_opt_typeerror(L, idx, who, "stdin", "a string, or true for a pipe");
  sp->stdin_data = st == LUA_TSTRING ? lua_tolstring(L, -1, &sp->stdin_len) : NULL; /* the table holds it */
  sp->stdin_pipe = sp->stdin_data != NULL || (st == LUA_TBOOLEAN && lua_toboolean(L, -1));
  lua_pop(L, 1);
  if (sh_opt_table(L, idx, "env", who)) {
    sh_spawn_push_env(L, lua_gettop(L), idx, who);
    lua_remove(L, -2); /* the caller's env table */
    sp->env_idx = lua_gettop(L);
  } else {
    lua_pushnil(L);
  }
  if (sp->cwd) {
    struct stat sb;
    if (stat(sp->cwd, &sb) != 0 || !S_ISDIR(sb.st_mode)) luaL_error(L, "%s: cwd '%s' is not a directory", who, sp->cwd);
  }
  luaL_checkstack(L, 4, who); /* step 2 reads the tables through the stack */
}

/* ---- step 2: C memory ---- */

/* A malloc'd, NULL-ended copy of the strings in the sequence at idx; NULL when out of memory.
 * Reads strings the table holds, so nothing here allocates in Lua or can raise. */
static char **sh_spawn_copy(lua_State *L, int idx) {
  size_t n = lua_rawlen(L, idx);
  char **out = calloc(n + 1, sizeof *out);
  for (size_t i = 0; out && i < n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    out[i] = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!out[i]) {
      for (size_t k = 0; k < i; k++) free(out[k]);
      free(out);
      out = NULL;
    }
  }
  return out;
}

int sh_spawn_build(lua_State *L, sh_spawn_t *sp, const char **failed) {
  *failed = NULL;
  sp->argv = sh_spawn_copy(L, sp->argv_idx);
  if (!sp->argv) return ENOMEM;
  if (sp->env_idx && !(sp->env = sh_spawn_copy(L, sp->env_idx))) return ENOMEM;
  if (sp->out_path) {
    sp->out_fd = open(sp->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (sp->out_fd < 0) return *failed = "stdout", errno;
  }
  if (sp->err_path) {
    sp->err_fd = open(sp->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (sp->err_fd < 0) return *failed = "stderr", errno;
  }
  return 0;
}

void sh_spawn_free(sh_spawn_t *sp) {
  for (char **v = sp->argv; v && *v; v++) free(*v);
  free(sp->argv);
  for (char **v = sp->env; v && *v; v++) free(*v);
  free(sp->env);
  sp->argv = sp->env = NULL;
  if (sp->out_fd >= 0) close(sp->out_fd);
  if (sp->err_fd >= 0) close(sp->err_fd);
  sp->out_fd = sp->err_fd = -1;
}

/* ---- step 3: the child ---- */

/* Find prog the way execvp would, in the PATH the child will have. Returns 0 or an errno. */
static int sh_spawn_resolve(const char *prog, char **env, char *out, size_t cap) {
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

/* posix_spawn with the child's stdio, directory, session and signal state. Returns 0 or an
 * errno (an exec failure included: glibc reports it from the vfork'd child). */
int sh_spawn_exec(sh_spawn_t *sp, const int child_fds[3], pid_t *pid) {
  char path[4096];
  int rc = sh_spawn_resolve(sp->argv[0], sp->env, path, sizeof path);
  if (rc != 0) return rc;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  for (int i = 0; i < 3; i++) {
    if (child_fds[i] >= 0) posix_spawn_file_actions_adddup2(&fa, child_fds[i], i);
    else posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  if (sp->cwd) posix_spawn_file_actions_addchdir_np(&fa, sp->cwd);
  /* the host ignores SIGPIPE and may block signals: the child starts clean */
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  rc = posix_spawn(pid, path, &fa, &attr, sp->argv, sp->env ? sp->env : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc;
}
