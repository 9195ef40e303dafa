/* libFuzzer target for stagehost.core.json (bindings/json.c, compiled into this executable):
 * decode of arbitrary bytes must return a JSON value as the module builds it (arrays and objects
 * marked by their metatables, integers where exact, json.null for null) or nil + "line L, column
 * C: reason" with a position inside the input, never raise, crash or leak; what decodes must
 * encode again (compact and pretty) and decode to the same value, and the compact text must be
 * a fixed point of decode + encode; an allocation failure at any point of a decode must end in a
 * memory error with cJSON's tree freed (ASan's leak check sees what is not).
 * Build: CC=clang cmake -S . -B build-fz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz/json.
 * Longer, by hand: build-fz/tests/fuzz_json -max_total_time=600 -dict=tests/fuzz/json.dict
 *   build-fz/tests/fuzz-corpus-json tests/fuzz/seeds-json */
#include <math.h>

#include "fuzz_lua.h"

int sh_json_open(lua_State *L);

#define SH_FUZZ_JSON_MOD "stagehost.core.json"
#define SH_FUZZ_JSON_DEPTH 1000 /* cJSON's CJSON_NESTING_LIMIT, which decode keeps */

/* Is the table at idx marked with the registry metatable `mt`? */
static int sh_fuzz_json_marked(lua_State *L, int idx, const char *mt) {
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, mt);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* Checks the value on top (left there) is one decode may build */
static void sh_fuzz_json_check_value(lua_State *L, int depth) {
  SH_FUZZ_CHECK(depth <= SH_FUZZ_JSON_DEPTH + 1, "value nested deeper than cJSON's limit: %d", depth);
  SH_FUZZ_CHECK(lua_checkstack(L, 6), "%s", "no Lua stack for the value walk");
  int v = lua_gettop(L);
  switch (lua_type(L, v)) {
    case LUA_TBOOLEAN: return;
    case LUA_TNUMBER:
      if (!lua_isinteger(L, v)) {
        double d = lua_tonumber(L, v);
        SH_FUZZ_CHECK(!isnan(d), "%s", "decode made a NaN");
        /* an exact integer below 2^53 is pushed as one (exit codes, ids and counts stay integers) */
        SH_FUZZ_CHECK(!(d == floor(d) && fabs(d) < 9007199254740992.0), "integral float %.17g", d);
      }
      return;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, v, &n);
      SH_FUZZ_CHECK(strlen(s) == n, "%s", "decoded string with a NUL byte inside");
      return;
    }
    case LUA_TLIGHTUSERDATA:
      SH_FUZZ_CHECK(lua_touserdata(L, v) == NULL, "%s", "a light userdata that is not json.null");
      return;
    case LUA_TTABLE: break;
    default: SH_FUZZ_CHECK(0, "decode made a %s", luaL_typename(L, v));
  }
  int array = sh_fuzz_json_marked(L, v, "stagehost.json.array");
  int object = sh_fuzz_json_marked(L, v, "stagehost.json.object");
  SH_FUZZ_CHECK(array != object, "%s", "a decoded table is marked neither array nor object (or both)");
  lua_Integer n = (lua_Integer)lua_rawlen(L, v), keys = 0;
  lua_pushnil(L);
  while (lua_next(L, v)) {
    keys++;
    if (array) {
      SH_FUZZ_CHECK(lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n,
                    "%s", "array with a key outside 1..#t");
    } else {
      SH_FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING, "object key is a %s", luaL_typename(L, -2));
    }
    sh_fuzz_json_check_value(L, depth + 1);
    lua_pop(L, 1);
  }
  if (array) SH_FUZZ_CHECK(keys == n, "array of %lld elements with %lld keys", (long long)n, (long long)keys);
}

/* Deep equality of the values at a and b: same types, same integer/float subtypes, same marks */
static int sh_fuzz_json_same(lua_State *L, int a, int b, int depth) {
  a = lua_absindex(L, a), b = lua_absindex(L, b);
  if (lua_type(L, a) != lua_type(L, b)) return 0;
  if (lua_type(L, a) == LUA_TNUMBER && lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
  if (lua_type(L, a) != LUA_TTABLE) return lua_rawequal(L, a, b);
  if (depth > SH_FUZZ_JSON_DEPTH + 2 || !lua_checkstack(L, 6)) return 0;
  if (sh_fuzz_json_marked(L, a, "stagehost.json.array") != sh_fuzz_json_marked(L, b, "stagehost.json.array"))
    return 0;
  size_t na = 0, nb = 0;
  lua_pushnil(L);
  while (lua_next(L, a)) {
    na++;
    lua_pushvalue(L, -2);
    lua_rawget(L, b);
    int same = sh_fuzz_json_same(L, -2, -1, depth + 1);
    lua_pop(L, 2);
    if (!same) {
      lua_pop(L, 1);
      return 0;
    }
  }
  lua_pushnil(L);
  while (lua_next(L, b)) nb++, lua_pop(L, 1);
  return na == nb;
}

/* "line L, ..." whose line is one the input has */
static void sh_fuzz_json_check_position(const char *m, const uint8_t *data, size_t size) {
  long line = strtol(m + 5, NULL, 10), lines = 1;
  for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
  SH_FUZZ_CHECK(line >= 1 && line <= lines, "'%s' for an input of %ld lines", m, lines);
}

/* decode's results (2 slots on top): a value and nothing, or nil + a positioned message */
static void sh_fuzz_json_check_result(lua_State *L) {
  if (lua_isnil(L, -2)) {
    size_t n = 0;
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : "";
    SH_FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING && sh_fuzz_is_position_message(m, n), "decode failed with '%s'", m);
    SH_FUZZ_CHECK(memchr(m, '\n', n) == NULL, "a decode error of more than one line: '%s'", m);
    return;
  }
  SH_FUZZ_CHECK(lua_isnil(L, -1), "decode returned a second value, a %s", luaL_typename(L, -1));
  lua_pushvalue(L, -2);
  sh_fuzz_json_check_value(L, 1);
  lua_pop(L, 1);
}

/* encode(value at v [, {pretty = true}]) -> pushes the text; encode must not raise on a value
 * decode made: nothing but JSON's own values is in it */
static void sh_fuzz_json_encode(lua_State *L, int mod, int v, int pretty) {
  lua_getfield(L, mod, "encode");
  lua_pushvalue(L, v);
  if (pretty) {
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "pretty");
  }
  int status = lua_pcall(L, 1 + pretty, 1, 0);
  SH_FUZZ_CHECK(status == LUA_OK, "encode of a decoded value raised: %s", lua_tostring(L, -1));
  SH_FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING, "encode returned a %s", luaL_typename(L, -1));
}

/* decode(string at s) -> pushes the value, which must be there */
static void sh_fuzz_json_redecode(lua_State *L, int mod, int s, const char *what) {
  lua_getfield(L, mod, "decode");
  lua_pushvalue(L, s);
  int status = lua_pcall(L, 1, 2, 0);
  SH_FUZZ_CHECK(status == LUA_OK, "decode of %s raised: %s", what, lua_tostring(L, -1));
  SH_FUZZ_CHECK(!lua_isnil(L, -2), "%s does not decode: %s\n  text: %s", what, lua_tostring(L, -1), lua_tostring(L, s));
  lua_pop(L, 1);
}

/* value v (decoded) -> encode -> decode gives v again, compact and pretty; and the compact
 * text decodes and encodes to itself */
static void sh_fuzz_json_round_trip(lua_State *L, int mod, int v) {
  sh_fuzz_json_encode(L, mod, v, 0);
  int text = lua_gettop(L);
  sh_fuzz_json_redecode(L, mod, text, "encode's output");
  int v2 = lua_gettop(L);
  SH_FUZZ_CHECK(sh_fuzz_json_same(L, v, v2, 0), "decode(encode(v)) differs from v; encode(v) = %s", lua_tostring(L, text));
  sh_fuzz_json_encode(L, mod, v2, 0);
  SH_FUZZ_CHECK(lua_rawequal(L, -1, text), "encode is not a fixed point:\n  %s\n  %s", lua_tostring(L, text),
                lua_tostring(L, -1));
  sh_fuzz_json_encode(L, mod, v, 1);
  sh_fuzz_json_redecode(L, mod, lua_gettop(L), "pretty encode's output");
  SH_FUZZ_CHECK(sh_fuzz_json_same(L, v, -1, 0), "decode(encode(v, {pretty = true})) differs from v: %s",
                lua_tostring(L, -2));
  lua_settop(L, v);
}

/* after decode: a failure's position message, or a value that round-trips */
static void sh_fuzz_json_more(lua_State *L, int mod, int s, const uint8_t *data, size_t size) {
  (void)s;
  if (lua_isnil(L, -2)) {
    sh_fuzz_json_check_position(lua_tostring(L, -1), data, size);
  } else {
    lua_pop(L, 1);
    sh_fuzz_json_round_trip(L, mod, lua_gettop(L));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return sh_fuzz_decode_target(data, size, sh_json_open, SH_FUZZ_JSON_MOD, sh_fuzz_json_check_result, sh_fuzz_json_more);
}
