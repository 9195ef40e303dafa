/* stagehost.core.log: leveled, timestamped, masked log lines; log.group is Lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "../host/log.h"
#include "../host/sched.h"
#include "auxlib.h"

/* Join the arguments like print() does, with spaces. */
static void sh_log_concat(lua_State *L, int first) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = first; i <= n; i++) {
    if (i > first) luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
}

static int sh_log_at(lua_State *L, int level) {
  if (!sh_log_enabled(level)) return 0;
  sh_log_concat(L, 1);
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  sh_log_write(level, msg, len);
  return 0;
}

static int sh_log_debug_l(lua_State *L) { return sh_log_at(L, SH_LOG_DEBUG); }
static int sh_log_info_l(lua_State *L) { return sh_log_at(L, SH_LOG_INFO); }
static int sh_log_warn_l(lua_State *L) { return sh_log_at(L, SH_LOG_WARN); }
static int sh_log_error_l(lua_State *L) { return sh_log_at(L, SH_LOG_ERROR); }

/* log.mask(secret) -> secret: from now on it prints as *** everywhere */
static int sh_log_mask_l(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (len < SH_MASK_MIN)
    return luaL_error(L, "log.mask: a secret shorter than %d characters cannot be masked safely", SH_MASK_MIN);
  if (sh_mask_add(s, len) != 0) return luaL_error(L, "log.mask: out of memory");
  lua_settop(L, 1);
  return 1;
}

/* log.level() -> name; log.level(name) sets it */
static int sh_log_level_l(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    int l = sh_log_parse_level(luaL_checkstring(L, 1));
    if (l < 0) return luaL_argerror(L, 1, "expected \"debug\", \"info\", \"warn\", \"error\" or \"off\"");
    sh_log_set_level(l);
  }
  lua_pushstring(L, sh_log_level_name(sh_log_level()));
  return 1;
}

/* log.masked(s) -> s with every secret replaced, for output stagehost does not write itself */
static int sh_log_masked_l(lua_State *L) {
  size_t len, ml;
  const char *s = luaL_checklstring(L, 1, &len);
  char *m = sh_mask_apply(s, len, &ml);
  if (!m) return luaL_error(L, "log.masked: out of memory");
  lua_pushlstring(L, m, ml);
  free(m);
  return 1;
}

static int sh_log_contains(const char *s, size_t len, const char *sub, size_t sl) {
  if (sl == 0 || sl > len) return 0;
  for (const char *p = s, *last = s + (len - sl); p <= last; p++) {
    p = memchr(p, sub[0], (size_t)(last - p) + 1);
    if (!p) return 0;
    if (memcmp(p, sub, sl) == 0) return 1;
  }
  return 0;
}

/* log.secrets_in(s) -> the registered secrets that occur in s, each once, longest first (a
 * secret inside another counts too): what to mask again when s is read back in another
 * process, e.g. a stage's outputs after a resume. */
static int sh_log_secrets_in_l(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_newtable(L);
  lua_Integer n = 0;
  for (size_t i = 0, count = sh_mask_count(); i < count; i++) {
    size_t sl;
    const char *secret = sh_mask_secret(i, &sl);
    if (sh_log_contains(s, len, secret, sl)) {
      lua_pushlstring(L, secret, sl);
      lua_rawseti(L, -2, ++n);
    }
  }
  return 1;
}

#define SH_LOG_CTX_MT "stagehost.log.context"

static int sh_log_ctx_gc(lua_State *L) {
  sh_log_ctx_t **cc = luaL_checkudata(L, 1, SH_LOG_CTX_MT);
  sh_log_ctx_release(*cc);
  *cc = NULL;
  return 0;
}

/* context:last() -> the latest line logged under it (masked), or "" */
static int sh_log_ctx_last(lua_State *L) {
  sh_log_ctx_t **cc = luaL_checkudata(L, 1, SH_LOG_CTX_MT);
  lua_pushstring(L, *cc ? (*cc)->last : "");
  return 1;
}

/* log.bind(prefix [, path]) -> context: from now on this task's lines (and those of the tasks it
 * spawns) carry [prefix] on the console and also go to the file at path */
static int sh_log_bind_l(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, NULL);
  const char *path = luaL_optstring(L, 2, NULL);
  if (!sh_task_current(L)) return luaL_error(L, "log.bind: only inside a stagehost task");
  int err = 0;
  sh_log_ctx_t **cc = lua_newuserdatauv(L, sizeof *cc, 0);
  *cc = NULL;
  luaL_setmetatable(L, SH_LOG_CTX_MT);
  sh_log_ctx_t *ctx = sh_log_ctx_new(prefix, path, &err);
  if (!ctx) return luaL_error(L, "log.bind: cannot open log file '%s': %s", path ? path : "", strerror(err));
  sh_log_ctx_retain(ctx); /* one reference for the task, one for the returned handle */
  *cc = ctx;
  sh_task_set_log_ctx(L, ctx);
  return 1;
}

/* log.context_id() -> a value naming the log context of the running task (the one log.bind
 * gave it or one of its spawners), equal for every task that shares it; nil when there is none.
 * The engine finds a stage's run from a task the stage spawned through it. */
static int sh_log_context_id_l(lua_State *L) {
  sh_task_t *t = sh_task_current(L);
  if (!t || !t->log_ctx) return 0;
  lua_pushlightuserdata(L, t->log_ctx);
  return 1;
}

/* log.console(on): off while a live view owns the screen */
static int sh_log_console_l(lua_State *L) {
  sh_log_set_console(lua_toboolean(L, 1));
  return 0;
}

/* log.isatty() -> is standard output a terminal that can redraw (not TERM=dumb)? */
static int sh_log_isatty_l(lua_State *L) {
  const char *term = getenv("TERM");
  lua_pushboolean(L, isatty(STDOUT_FILENO) && term && strcmp(term, "dumb") != 0);
  return 1;
}

/* log.echo_output(on): children's output lines on the console whatever the level */
static int sh_log_echo_l(lua_State *L) {
  sh_log_set_echo(lua_toboolean(L, 1));
  return 0;
}

/* log.context_console(on) -> the previous setting. Off: lines logged under a context bound with
 * a file (each pipeline stage's) stay off the console and go to that file only; lines without
 * such a context still print. For GitHub Actions, where the engine prints each stage's file in
 * a fold afterwards. */
static int sh_log_context_console_l(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  lua_pushboolean(L, sh_log_context_console());
  sh_log_set_context_console(lua_toboolean(L, 1));
  return 1;
}

/* ---- io.write, io.stdout:write, io.stderr:write: masked (host/log.c holds unfinished lines) ---- */

#define SH_STDIO_FLUSH_AFTER 0.1 /* seconds a prompt without a newline waits, at most */
#define SH_IO_OUTPUT "_IO_output" /* liolib's registry key of the default output file */

static sh_timer_t sh_stdio_timer;

/* called from the timer heap: what is held back (a prompt, a progress dot) goes out */
static void sh_stdio_timer_fire(sh_timer_t *t) {
  (void)t;
  sh_log_stdio_flush_ready();
}

/* 0 for stdout, 1 for stderr, -1 for any other (or closed) file: the value at idx */
static int sh_stdio_stream(lua_State *L, int idx) {
  luaL_Stream *p = luaL_testudata(L, idx, LUA_FILEHANDLE);
  if (!p || !p->closef || !p->f) return -1;
  return p->f == stdout ? 0 : p->f == stderr ? 1 : -1;
}

/* The arguments from first on, as liolib's g_write takes them, to the masked stream. */
static void sh_stdio_write_args(lua_State *L, int stream, int first, const char *fname) {
  int n = lua_gettop(L);
  for (int i = first; i <= n; i++) {
    char num[64];
    size_t len;
    const char *s;
    if (lua_type(L, i) == LUA_TNUMBER) {
      int k = lua_isinteger(L, i) ? snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, i))
                                  : snprintf(num, sizeof num, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, i));
      s = num;
      len = (size_t)k;
    } else {
      s = lua_tolstring(L, i, &len);
      if (!s) luaL_error(L, "bad argument #%d to '%s' (string expected, got %s)", i - first + 1, fname, luaL_typename(L, i));
    }
    sh_log_stdio_write(stream, s, len);
  }
  if (sh_log_stdio_held() && sh_stdio_timer.slot == SIZE_MAX) {
    sh_sched_t *sched = sh_sched_get(L);
    if (sched) sh_timer_arm(sched, &sh_stdio_timer, SH_STDIO_FLUSH_AFTER);
  }
}

/* liolib's own function (upvalue 1) called with every argument: -> what it returns */
static int sh_stdio_liolib(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* io.write(...): masked when the default output is stdout or stderr, else liolib's */
static int sh_io_write(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, SH_IO_OUTPUT);
  int stream = sh_stdio_stream(L, -1);
  lua_pop(L, 1);
  if (stream < 0) return sh_stdio_liolib(L);
  sh_stdio_write_args(L, stream, 1, "write");
  lua_getfield(L, LUA_REGISTRYINDEX, SH_IO_OUTPUT);
  return 1;
}

/* file:write(...): masked for io.stdout and io.stderr, else liolib's */
static int sh_file_write(lua_State *L) {
  int stream = sh_stdio_stream(L, 1);
  if (stream < 0) return sh_stdio_liolib(L);
  sh_stdio_write_args(L, stream, 2, "write");
  lua_settop(L, 1);
  return 1;
}

/* io.flush() and file:flush(): what is held back goes out first */
static int sh_stdio_flush_l(lua_State *L) {
  sh_log_stdio_flush_ready();
  return sh_stdio_liolib(L);
}

/* Replace t[name] with f, which gets the old value as its upvalue. */
static void sh_wrap_field(lua_State *L, int t, const char *name, lua_CFunction f) {
  lua_getfield(L, t, name);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, t, name);
}

void sh_log_wrap_stdio(lua_State *L) {
  sh_timer_init(&sh_stdio_timer, sh_stdio_timer_fire);
  lua_getglobal(L, "io");
  int io = lua_gettop(L);
  sh_wrap_field(L, io, "write", sh_io_write);
  sh_wrap_field(L, io, "flush", sh_stdio_flush_l);
  luaL_getmetatable(L, LUA_FILEHANDLE);
  lua_getfield(L, -1, "__index"); /* the methods of every file */
  if (lua_istable(L, -1)) {
    int methods = lua_gettop(L);
    sh_wrap_field(L, methods, "write", sh_file_write);
    sh_wrap_field(L, methods, "flush", sh_stdio_flush_l);
  }
  lua_settop(L, io - 1);
}

static const luaL_Reg sh_log_funcs[] = {
    {"debug", sh_log_debug_l}, {"info", sh_log_info_l},   {"warn", sh_log_warn_l},
    {"error", sh_log_error_l}, {"mask", sh_log_mask_l},   {"level", sh_log_level_l},
    {"masked", sh_log_masked_l}, {"bind", sh_log_bind_l}, {"context_id", sh_log_context_id_l},   {"echo_output", sh_log_echo_l},
    {"console", sh_log_console_l}, {"isatty", sh_log_isatty_l},
    {"context_console", sh_log_context_console_l}, {"secrets_in", sh_log_secrets_in_l},
    {NULL, NULL},
};

int sh_log_open(lua_State *L) {
  static const luaL_Reg ctx_class[] = {{"last", sh_log_ctx_last}, {"__gc", sh_log_ctx_gc}, {NULL, NULL}};
  return sh_newmodule(L, sh_log_funcs, SH_LOG_CTX_MT, ctx_class);
}
