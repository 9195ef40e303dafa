/* The bindings' auxiliary library: see auxlib.h. */
#include "auxlib.h"

#include <stdarg.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

/* A method's self is not an argument the caller counts (luaL_argerror does the same). */
static int sh_arg_number(int arg, const char *who) { return strchr(who, ':') && arg > 1 ? arg - 1 : arg; }

static int sh_raise_v(lua_State *L, int arg, const char *who, const char *key, const char *fmt, va_list ap) {
  const char *msg = lua_pushvfstring(L, fmt, ap);
  if (key) return luaL_error(L, "bad argument #%d to '%s' (option '%s' %s)", sh_arg_number(arg, who), who, key, msg);
  return luaL_error(L, "bad argument #%d to '%s' (%s)", sh_arg_number(arg, who), who, msg);
}

int sh_argerror(lua_State *L, int arg, const char *who, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sh_raise_v(L, arg, who, NULL, fmt, ap);
  va_end(ap); /* not reached */
  return 0;
}

int sh_opt_error(lua_State *L, int arg, const char *who, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sh_raise_v(L, arg, who, key, fmt, ap);
  va_end(ap); /* not reached */
  return 0;
}

int sh_opt_typeerror(lua_State *L, int arg, const char *who, const char *key, const char *expected) {
  return sh_opt_error(L, arg, who, key, "must be %s, got %s", expected, luaL_typename(L, -1));
}

int sh_opt_rangeerror(lua_State *L, int idx, const char *key, const char *what, const char *who) {
  lua_getfield(L, idx, key);
  return sh_opt_error(L, idx, who, key, "must be %s, got %s", what, luaL_tolstring(L, -1, NULL));
}

const char *sh_opt_lstring(lua_State *L, int idx, const char *key, size_t *len, const char *who) {
  int t = lua_getfield(L, idx, key);
  const char *s = NULL;
  if (len) *len = 0;
  if (t == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  else if (t != LUA_TNIL) sh_opt_typeerror(L, idx, who, key, "a string");
  lua_pop(L, 1); /* s is still referenced by the options table */
  return s;
}

const char *sh_opt_string(lua_State *L, int idx, const char *key, const char *who) {
  return sh_opt_lstring(L, idx, key, NULL, who);
}

double sh_opt_number(lua_State *L, int idx, const char *key, double def, const char *who) {
  int t = lua_getfield(L, idx, key);
  double v = def;
  if (t == LUA_TNUMBER) v = (double)lua_tonumber(L, -1);
  else if (t != LUA_TNIL) sh_opt_typeerror(L, idx, who, key, "a number");
  lua_pop(L, 1);
  return v;
}

int sh_opt_bool(lua_State *L, int idx, const char *key, int def, const char *who) {
  int t = lua_getfield(L, idx, key);
  int v = def;
  if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL) sh_opt_typeerror(L, idx, who, key, "a boolean");
  lua_pop(L, 1);
  return v;
}

int sh_opt_table(lua_State *L, int idx, const char *key, const char *who) {
  int t = lua_getfield(L, idx, key);
  if (t == LUA_TTABLE) return 1;
  if (t != LUA_TNIL) sh_opt_typeerror(L, idx, who, key, "a table");
  lua_pop(L, 1);
  return 0;
}

void sh_opt_unknown_keys(lua_State *L, int idx, const char *const allowed[], const char *who) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int known = 0;
    for (int i = 0; k && allowed[i] && !known; i++) known = strcmp(k, allowed[i]) == 0;
    if (!known) {
      lua_pushvalue(L, -1); /* luaL_tolstring on the key itself would confuse lua_next */
      sh_argerror(L, idx, who, "unknown option '%s'", luaL_tolstring(L, -1, NULL));
    }
  }
}

int sh_failure(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

int sh_uv_result(lua_State *L, int rc, const char *who) {
  if (rc < 0) return sh_failure(L, uv_err_name(rc), "%s: %s", who, uv_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

void sh_metatable(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {
    if (meta) luaL_setfuncs(L, meta, 0);
    if (methods) {
      int own_index = lua_getfield(L, -1, "__index") != LUA_TNIL;
      lua_pop(L, 1);
      lua_newtable(L);
      luaL_setfuncs(L, methods, 0);
      lua_setfield(L, -2, own_index ? "methods" : "__index");
    }
  }
  lua_pop(L, 1);
}

int sh_has_metatable(lua_State *L, int idx, const char *name) {
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, name);
  int eq = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return eq;
}

int sh_push_uv_path(lua_State *L, int (*fn)(char *buf, size_t *size), const char *who) {
  char buf[4096];
  size_t n = sizeof buf;
  int rc = fn(buf, &n);
  if (rc != 0) return luaL_error(L, "%s: %s", who, uv_strerror(rc));
  lua_pushlstring(L, buf, n);
  return 1;
}
