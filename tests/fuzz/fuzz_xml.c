/* libFuzzer target for stagehost.core.xml (bindings/xml.c, compiled into this executable):
 * decode of arbitrary bytes must return a well-formed element tree or nil + "line L, column C:
 * reason", never raise, crash or leak; escape must round-trip any text XML can carry, as
 * element text and as an attribute value; and an allocation failure at any point of a decode
 * must end in a memory error with everything freed (ASan's leak check sees what is not).
 * Build: CC=clang cmake -S . -B build-fuzz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz/xml. */
#include "fuzz_lua.h"

int luaopen_stagehost_core_xml(lua_State *L);

#define SH_FUZZ_XML_MOD "stagehost.core.xml"

/* Checks the element on top (left there): { name, attrs = {k = v}, text, [i] = child } with
 * strings where strings belong, and nothing else. */
static void sh_fuzz_xml_check_elem(lua_State *L, int depth) {
  SH_FUZZ_CHECK(depth <= 512, "element tree deeper than the module's limit: %d", depth);
  SH_FUZZ_CHECK(lua_checkstack(L, 6), "%s", "no Lua stack for the tree walk");
  int e = lua_gettop(L);
  SH_FUZZ_CHECK(lua_type(L, e) == LUA_TTABLE, "element is a %s", luaL_typename(L, e));
  SH_FUZZ_CHECK(lua_getfield(L, e, "name") == LUA_TSTRING && lua_rawlen(L, -1) > 0, "%s", "element without a name");
  SH_FUZZ_CHECK(lua_getfield(L, e, "text") == LUA_TSTRING, "%s", "element text is not a string");
  SH_FUZZ_CHECK(lua_getfield(L, e, "attrs") == LUA_TTABLE, "%s", "element attrs is not a table");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    SH_FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING, "attribute %s = %s",
                  luaL_typename(L, -2), luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_settop(L, e);
  lua_Integer n = (lua_Integer)lua_rawlen(L, e);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, e, i);
    sh_fuzz_xml_check_elem(L, depth + 1);
    lua_pop(L, 1);
  }
  /* the only keys: name, text, attrs and the children 1..n */
  lua_Integer keys = 0;
  lua_pushnil(L);
  while (lua_next(L, e)) keys++, lua_pop(L, 1);
  SH_FUZZ_CHECK(keys == n + 3, "element has %lld keys for %lld children", (long long)keys, (long long)n);
}

/* decode's results (2 slots on top): the root element, or nil + a positioned message */
static void sh_fuzz_xml_check_result(lua_State *L) {
  if (lua_isnil(L, -2)) {
    size_t n = 0;
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : "";
    SH_FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING && sh_fuzz_is_position_message(m, n), "decode failed with '%s'", m);
    return;
  }
  SH_FUZZ_CHECK(lua_isnil(L, -1), "decode returned a second value, a %s", luaL_typename(L, -1));
  lua_pushvalue(L, -2);
  sh_fuzz_xml_check_elem(L, 1);
  lua_pop(L, 1);
}

/* Text escape must carry through a document: well-formed UTF-8 (no overlong forms, surrogates
 * or code points past U+10FFFF, which expat refuses as it must) made of XML 1.0 Chars, i.e. no
 * control characters but tab, LF and CR, and not U+FFFE or U+FFFF. Anything else no escaping
 * can put in a document, so such an input is skipped, not a failure. */
static int sh_fuzz_xml_is_char_data(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t c = s[i];
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || n - i < len) return 0;
    if (len > 1) c &= 0x3F >> (len - 1);
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      c = c << 6 | (s[i + k] & 0x3F);
    }
    static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_for_len[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0xFFFE || c == 0xFFFF) return 0;
    i += len;
  }
  return 1;
}

/* Round trip of the string at s_idx through escape, as element text and as attribute value */
static void sh_fuzz_xml_round_trip(lua_State *L, int mod, int s_idx) {
  static const char *const wrap[][2] = {{"<a>", "</a>"}, {"<a v=\"", "\"/>"}};
  for (int w = 0; w < 2; w++) {
    lua_getfield(L, mod, "decode");
    lua_pushstring(L, wrap[w][0]);
    lua_getfield(L, mod, "escape");
    lua_pushvalue(L, s_idx);
    int status = lua_pcall(L, 1, 1, 0);
    SH_FUZZ_CHECK(status == LUA_OK, "escape raised: %s", lua_tostring(L, -1));
    lua_pushstring(L, wrap[w][1]);
    lua_concat(L, 3);
    status = lua_pcall(L, 1, 2, 0);
    SH_FUZZ_CHECK(status == LUA_OK, "decode of an escaped string raised: %s", lua_tostring(L, -1));
    SH_FUZZ_CHECK(lua_type(L, -2) == LUA_TTABLE, "escaped string did not decode: %s", lua_tostring(L, -1));
    if (w == 0) lua_getfield(L, -2, "text");
    else lua_getfield(L, -2, "attrs"), lua_getfield(L, -1, "v"), lua_remove(L, -2);
    SH_FUZZ_CHECK(lua_rawequal(L, -1, s_idx), "%s did not round-trip (got %llu bytes for %llu)",
                  w == 0 ? "element text" : "attribute value", (unsigned long long)lua_rawlen(L, -1),
                  (unsigned long long)lua_rawlen(L, s_idx));
    lua_pop(L, 3);
  }
}

/* after decode: text that is all character data round-trips through escape */
static void sh_fuzz_xml_more(lua_State *L, int mod, int s, const uint8_t *data, size_t size) {
  lua_pop(L, 2);
  if (sh_fuzz_xml_is_char_data(data, size)) sh_fuzz_xml_round_trip(L, mod, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return sh_fuzz_decode_target(data, size, luaopen_stagehost_core_xml, SH_FUZZ_XML_MOD, sh_fuzz_xml_check_result,
                               sh_fuzz_xml_more);
}
