/* The shared helpers: the growable buffer (growth, its limit, never a partial append) and the
 * misuse messages of bindings/auxlib.c in luaL_argerror's one form. */
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "bindings/auxlib.h"
#include "check.h"
#include "host/util.h"

static void test_buf(void) {
  sh_buf_t b = {0};
  CHECK(b.data == NULL);
  CHECK_EQ_INT(sh_buf_add(&b, "", 0), 0);
  CHECK(b.data == NULL); /* nothing added, nothing allocated */
  for (int i = 0; i < 1000; i++) CHECK_EQ_INT(sh_buf_add(&b, "abc", 3), 0);
  CHECK_EQ_INT(b.len, 3000);
  CHECK(b.cap >= b.len && b.cap < 2 * 3000 + 256);
  CHECK(memcmp(b.data + 2997, "abc", 3) == 0);
  size_t cap = b.cap;
  CHECK_EQ_INT(sh_buf_reserve(&b, b.cap - b.len), 0);
  CHECK_EQ_INT(b.cap, cap); /* room enough: no realloc */
  CHECK_EQ_INT(sh_buf_reserve(&b, (size_t)-1), -1); /* cannot be had: b unchanged */
  CHECK_EQ_INT(b.len, 3000);
  CHECK_EQ_INT(sh_buf_add(&b, "x", (size_t)-1 - 10), -1);
  CHECK_EQ_INT(b.len, 3000);
  sh_buf_free(&b);
  CHECK(b.data == NULL && b.len == 0 && b.cap == 0);

  sh_buf_t big = {0};
  CHECK_EQ_INT(sh_buf_reserve(&big, 100000), 0);
  CHECK_EQ_INT(big.cap, 100000); /* one large request is met exactly, not doubled */
  sh_buf_free(&big);

  sh_buf_t bounded = {.limit = 1000};
  for (int i = 0; i < 100; i++) CHECK_EQ_INT(sh_buf_add(&bounded, "0123456789", 10), 0);
  CHECK_EQ_INT(bounded.len, 1000);
  CHECK_EQ_INT(bounded.cap, 1000); /* doubling stops at the limit */
  CHECK_EQ_INT(sh_buf_add(&bounded, "more", 4), 0); /* past it only when one request needs it */
  CHECK_EQ_INT(bounded.cap, 1004);
  sh_buf_free(&bounded);
}

/* Run a chunk calling the C functions under test; NULL when it ran, else its error message
 * without the position luaL_error puts before it ("[string ...]:1: "). */
static const char *run(lua_State *L, const char *code) {
  lua_settop(L, 0);
  if (luaL_dostring(L, code) == LUA_OK) return NULL;
  const char *msg = lua_tostring(L, -1), *after = strstr(msg, "]:1: ");
  return after ? after + 5 : msg;
}

static int f_string(lua_State *L) {
  const char *s = sh_opt_string(L, 1, "name", "m.f");
  lua_pushstring(L, s ? s : "(absent)");
  return 1;
}

static int f_number(lua_State *L) {
  double v = sh_opt_number(L, 1, "timeout", 7, "m.f");
  if (v < 0) sh_opt_rangeerror(L, 1, "timeout", ">= 0", "m.f");
  lua_pushnumber(L, v);
  return 1;
}

static int f_bool(lua_State *L) {
  lua_pushboolean(L, sh_opt_bool(L, 1, "quiet", 1, "m.f"));
  return 1;
}

static int f_table(lua_State *L) {
  lua_pushboolean(L, sh_opt_table(L, 1, "env", "m.f"));
  return 1;
}

static int f_keys(lua_State *L) {
  static const char *const allowed[] = {"a", "b", NULL};
  sh_opt_unknown_keys(L, 2, allowed, "m.f");
  return 0;
}

static int f_method(lua_State *L) { return sh_argerror(L, 2, "obj:write", "string expected, got %s", luaL_typename(L, 2)); }

static void test_opts(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_register(L, "f_string", f_string);
  lua_register(L, "f_number", f_number);
  lua_register(L, "f_bool", f_bool);
  lua_register(L, "f_table", f_table);
  lua_register(L, "f_keys", f_keys);
  lua_register(L, "f_method", f_method);
  CHECK(run(L, "assert(f_string{} == '(absent)' and f_string{name = 'x'} == 'x')") == NULL);
  CHECK(strcmp(run(L, "f_string{name = 1}"), "bad argument #1 to 'm.f' (option 'name' must be a string, got number)") == 0);
  CHECK(run(L, "assert(f_number{} == 7 and f_number{timeout = 2.5} == 2.5)") == NULL);
  CHECK(strcmp(run(L, "f_number{timeout = 'soon'}"), "bad argument #1 to 'm.f' (option 'timeout' must be a number, got string)") == 0);
  CHECK(strcmp(run(L, "f_number{timeout = -1}"), "bad argument #1 to 'm.f' (option 'timeout' must be >= 0, got -1)") == 0);
  CHECK(run(L, "assert(f_bool{} == true and f_bool{quiet = false} == false)") == NULL);
  CHECK(strcmp(run(L, "f_bool{quiet = 1}"), "bad argument #1 to 'm.f' (option 'quiet' must be a boolean, got number)") == 0);
  CHECK(run(L, "assert(f_table{} == false and f_table{env = {}} == true)") == NULL);
  CHECK(strcmp(run(L, "f_table{env = 'x'}"), "bad argument #1 to 'm.f' (option 'env' must be a table, got string)") == 0);
  CHECK(run(L, "f_keys(nil, {a = 1, b = 2})") == NULL);
  CHECK(strcmp(run(L, "f_keys(nil, {a = 1, c = 2})"), "bad argument #2 to 'm.f' (unknown option 'c')") == 0);
  CHECK(strcmp(run(L, "f_keys(nil, {a = 1, [3] = 2})"), "bad argument #2 to 'm.f' (unknown option '3')") == 0);
  /* a method does not count self, as luaL_argerror does */
  CHECK(strcmp(run(L, "f_method({}, 42)"), "bad argument #1 to 'obj:write' (string expected, got number)") == 0);
  lua_close(L);
}

int main(void) {
  test_buf();
  test_opts();
  puts("test_util: ok");
  return 0;
}
