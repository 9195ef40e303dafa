/* The bindings' auxiliary library: see auxlib.h. */
#include "auxlib.h"

#include <stdarg.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

/* A method's self is not an argument the caller counts (luaL_argerror does the same). */
static int sh_arg_number(int arg, const char *who) { return strchr(who, ':') && arg > 1 ? arg - 1 : arg; }

/* The one text of a misuse message, luaL_argerror's: n is the argument as the caller counts it.
 * Lua's errors.argument makes its messages here too (argument_message below). */
static const char *sh_push_argmsg(lua_State *L, lua_Integer n, const char *who, const char *key, const char *msg) {
  if (key) return lua_pushfstring(L, "bad argument #%I to '%s' (option '%s' %s)", n, who, key, msg);
  return lua_pushfstring(L, "bad argument #%I to '%s' (%s)", n, who, msg);
}

static int sh_raise_v(lua_State *L, int arg, const char *who, const char *key, const char *fmt, va_list ap) {
  const char *msg = lua_pushvfstring(L, fmt, ap);
  luaL_where(L, 1); /* the caller's line, as luaL_error gives it */
  sh_push_argmsg(L, sh_arg_number(arg, who), who, key, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

int sh_argerror(lua_State *L, int arg, const char *who, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sh_raise_v(L, arg, who, NULL, fmt, ap);
  va_end(ap); /* not reached */
  return 0;
}

const char *sh_check_lstring(lua_State *L, int arg, const char *who, size_t *len) {
  if (lua_type(L, arg) != LUA_TSTRING) sh_argerror(L, arg, who, "string expected, got %s", luaL_typename(L, arg));
  return lua_tolstring(L, arg, len);
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

int sh_decode_failure(lua_State *L, lua_Integer line, lua_Integer column, const char *why) {
  lua_pushnil(L);
  lua_pushfstring(L, "line %I, column %I: %s", line, column, why);
  return 2;
}

int sh_uv_result(lua_State *L, int rc, const char *who) {
  if (rc < 0) return sh_failure(L, uv_err_name(rc), "%s: %s", who, uv_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- error objects ---- */

/* tostring(e): its message; one without a string message still prints as one line */
static int sh_error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushliteral(L, "message");
  int t = lua_rawget(L, 1);
  if (t == LUA_TSTRING) return 1;
  if (t != LUA_TNIL) {
    luaL_tolstring(L, -1, NULL);
    return 1;
  }
  lua_pushliteral(L, "kind");
  if (lua_rawget(L, 1) == LUA_TSTRING) return 1;
  lua_pushliteral(L, "error");
  return 1;
}

void sh_error_metatable(lua_State *L) {
  if (luaL_newmetatable(L, SH_ERROR_MT)) {
    lua_pushcfunction(L, sh_error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

void sh_error_push(lua_State *L, const char *kind, const char *code, const char *message) {
  lua_createtable(L, 0, 4);
  sh_setfield_string(L, "kind", kind);
  if (code) sh_setfield_string(L, "code", code);
  sh_setfield_string(L, "message", message);
  sh_error_metatable(L);
  lua_setmetatable(L, -2);
}

int sh_error_is(lua_State *L, int idx, const char *kind) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, SH_ERROR_MT);
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!is || !kind) return is;
  lua_pushliteral(L, "kind");
  is = lua_rawget(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return is;
}

/* errors.new(kind, message [, fields]) -> error object; fields are copied in after kind and
 * message (so they may set code, reason, exit_code, ...). */
static int sh_errors_new(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) return sh_argerror(L, 1, "errors.new", "string expected, got %s", luaL_typename(L, 1));
  if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
    return sh_argerror(L, 3, "errors.new", "table or nil expected, got %s", luaL_typename(L, 3));
  const char *message = luaL_tolstring(L, 2, NULL); /* at 4 */
  sh_error_push(L, lua_tostring(L, 1), NULL, message);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* errors.argument_message(n, fname, message) -> "bad argument #n to 'fname' (message)" */
static int sh_errors_argument_message(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  const char *who = luaL_checkstring(L, 2);
  const char *msg = luaL_checkstring(L, 3);
  sh_push_argmsg(L, n, who, NULL, msg);
  return 1;
}

int sh_errors_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"new", sh_errors_new}, {"argument_message", sh_errors_argument_message}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  sh_error_metatable(L);
  lua_setfield(L, -2, "Error");
  return 1;
}

static int sh_is_metamethod(const char *name) { return name[0] == '_' && name[1] == '_'; }

void sh_metatable(lua_State *L, const char *name, const luaL_Reg *class_funcs) {
  if (luaL_newmetatable(L, name)) {
    int own_index = 0, nmethods = 0;
    for (const luaL_Reg *f = class_funcs; f->name; f++) {
      if (!sh_is_metamethod(f->name)) {
        nmethods++;
        continue;
      }
      lua_pushcfunction(L, f->func);
      lua_setfield(L, -2, f->name);
      own_index |= strcmp(f->name, "__index") == 0;
    }
    if (nmethods) {
      lua_createtable(L, 0, nmethods);
      for (const luaL_Reg *f = class_funcs; f->name; f++) {
        if (sh_is_metamethod(f->name)) continue;
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
      }
      lua_setfield(L, -2, own_index ? "methods" : "__index");
    }
  }
  lua_pop(L, 1);
}

int sh_index_methods(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, lua_tostring(L, 2));
  return 1;
}

int sh_newmodule(lua_State *L, const luaL_Reg *funcs, const char *class_name, const luaL_Reg *class_funcs) {
  if (class_name) sh_metatable(L, class_name, class_funcs);
  int n = 0;
  while (funcs[n].name) n++;
  luaL_checkversion(L); /* as luaL_newlib does */
  lua_createtable(L, 0, n);
  luaL_setfuncs(L, funcs, 0);
  return 1;
}

/* The setters of one Lua type each (lua_pushstring, lua_pushinteger, ...): push, then set. */
#define SH_SETFIELD(type, ctype)                                        \
  void sh_setfield_##type(lua_State *L, const char *key, ctype value) { \
    lua_push##type(L, value);                                           \
    lua_setfield(L, -2, key);                                           \
  }
SH_SETFIELD(string, const char *)
SH_SETFIELD(integer, lua_Integer)
SH_SETFIELD(number, lua_Number)
SH_SETFIELD(boolean, int)
#undef SH_SETFIELD

void sh_setfield_lstring(lua_State *L, const char *key, const char *value, size_t len) {
  lua_pushlstring(L, value, len);
  lua_setfield(L, -2, key);
}

void sh_setfield_value(lua_State *L, const char *key, int idx) {
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, key);
}

/* ---- boxes ---- */

#define SH_BOX_MT "stagehost.box"

/* A box's userdata: this head, then the binding's bytes, aligned as Lua aligns a userdata's
 * block (LUAI_MAXALIGN: numbers and pointers; Lua promises no more, so neither does a box). */
typedef union {
  void (*release)(void *data); /* NULL once it has run */
  LUAI_MAXALIGN;
} sh_box_head;

/* __close and __gc of a box: release its resource, once */
static int sh_box_close(lua_State *L) {
  sh_box_head *h = luaL_checkudata(L, 1, SH_BOX_MT);
  void (*release)(void *) = h->release;
  h->release = NULL;
  if (release) release(h + 1);
  return 0;
}

void *sh_newbox(lua_State *L, size_t size, void (*release)(void *data)) {
  static const luaL_Reg class_funcs[] = {{"__gc", sh_box_close}, {"__close", sh_box_close}, {NULL, NULL}};
  sh_metatable(L, SH_BOX_MT, class_funcs); /* before the box: raising then leaves nothing behind */
  sh_box_head *h = lua_newuserdatauv(L, sizeof *h + size, 0);
  memset(h + 1, 0, size);
  h->release = release;
  luaL_setmetatable(L, SH_BOX_MT);
  lua_toclose(L, -1);
  return h + 1;
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
