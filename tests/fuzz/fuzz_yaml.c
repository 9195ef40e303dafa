/* libFuzzer target for stagehost.core.yaml (bindings/yaml.c, compiled into this executable):
 * decode of arbitrary bytes must return a value or nil + "line L, column C: reason", never raise,
 * crash or leak, and an allocation failure at any point of a decode must end in a memory error
 * with libyaml's parser and event freed (ASan's leak check sees what is not).
 * The module needs nothing from stagehost.core.json: it creates json's array and object
 * metatables itself under the same registry names, and json.null is a NULL light userdata.
 * Build: CC=clang cmake -S . -B build-fuzz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz/yaml. */
#include "fuzz_lua.h"

int luaopen_stagehost_core_yaml(lua_State *L);

#define SH_FUZZ_YAML_MOD "stagehost.core.yaml"

/* A table decode made is marked as a JSON array or object, whatever it holds */
static void sh_fuzz_yaml_check_table(lua_State *L, int idx) {
  SH_FUZZ_CHECK(lua_getmetatable(L, idx), "%s", "a decoded table has no metatable");
  int arr = luaL_getmetatable(L, "stagehost.json.array") == LUA_TTABLE && lua_rawequal(L, -1, -2);
  int obj = luaL_getmetatable(L, "stagehost.json.object") == LUA_TTABLE && lua_rawequal(L, -1, -3);
  SH_FUZZ_CHECK(arr || obj, "%s", "a decoded table is neither a JSON array nor a JSON object");
  lua_pop(L, 3);
}

/* decode's results (2 slots on top). The value is not walked: with aliases a tree of a few
 * hundred bytes may stand for a million nodes, which is the module's limit, not a bug. Its
 * first level is, since the document's root is where the marking and the short forms end. */
static void sh_fuzz_yaml_check_result(lua_State *L) {
  int v = lua_gettop(L) - 1;
  switch (lua_type(L, v)) {
  case LUA_TNIL: {
    size_t n = 0;
    const char *m = lua_type(L, v + 1) == LUA_TSTRING ? lua_tolstring(L, v + 1, &n) : "";
    SH_FUZZ_CHECK(lua_type(L, v + 1) == LUA_TSTRING && sh_fuzz_is_position_message(m, n), "decode failed with '%s'", m);
    return;
  }
  case LUA_TLIGHTUSERDATA:
    SH_FUZZ_CHECK(lua_touserdata(L, v) == NULL, "%s", "a light userdata other than json.null");
    break;
  case LUA_TBOOLEAN:
  case LUA_TNUMBER:
  case LUA_TSTRING: break;
  case LUA_TTABLE:
    SH_FUZZ_CHECK(lua_checkstack(L, 4), "%s", "no Lua stack for the check");
    sh_fuzz_yaml_check_table(L, v);
    lua_pushnil(L);
    while (lua_next(L, v)) {
      if (lua_type(L, -1) == LUA_TTABLE) sh_fuzz_yaml_check_table(L, lua_gettop(L));
      lua_pop(L, 1);
    }
    break;
  default: SH_FUZZ_CHECK(0, "decode returned a %s", luaL_typename(L, v));
  }
  SH_FUZZ_CHECK(lua_isnil(L, v + 1), "decode returned a second value, a %s", luaL_typename(L, v + 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return sh_fuzz_decode_target(data, size, luaopen_stagehost_core_yaml, SH_FUZZ_YAML_MOD, sh_fuzz_yaml_check_result, NULL);
}
