/* Shared by the libFuzzer targets that drive a Lua C module's decode (fuzz_json.c, fuzz_xml.c,
 * fuzz_yaml.c; fuzz_aws_sigv4.c uses the state, the allocator and the call): a fresh Lua state
 * per input, so nothing one input leaves behind changes the next one's run and a reproducer
 * replays alone; an allocator that can be told to fail, so the modules' claim that an
 * out-of-memory error in the middle of a parse frees everything is exercised too; and the check
 * of the "line L, column C: reason" messages the modules promise. Header-only with static
 * functions: each fuzz target is its own executable with one translation unit of its own. */
#ifndef SH_FUZZ_LUA_H
#define SH_FUZZ_LUA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

/* Allocation accounting for one input. fail_at == 0: never fail; otherwise the fail_at-th
 * allocation (counted from arming) that grows memory returns NULL, as do all after it, the
 * way a process out of memory stays out of memory. */
typedef struct {
  unsigned long allocs;
  unsigned long fail_at;
  int armed;
} sh_fuzz_alloc_state;

static void *sh_fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sh_fuzz_alloc_state *a = ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  /* Lua assumes an allocator never fails to shrink (lua_Alloc in the manual): only growth may */
  if (a->armed && (ptr == NULL || nsize > osize)) {
    a->allocs++;
    if (a->fail_at && a->allocs >= a->fail_at) return NULL;
  }
  return realloc(ptr, nsize);
}

/* A state with the standard libraries, as the brief of these targets (and stagehost) has it */
static lua_State *sh_fuzz_state(sh_fuzz_alloc_state *a, lua_CFunction luaopen, const char *modname) {
  memset(a, 0, sizeof *a);
  lua_State *L = lua_newstate(sh_fuzz_alloc, a);
  if (!L) abort();
  luaL_openlibs(L);
  luaL_requiref(L, modname, luaopen, 0);
  return L; /* the module table is on top */
}

/* A failed check is a crash libFuzzer records with the input that caused it */
#define SH_FUZZ_CHECK(cond, ...)                                                                  \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      fprintf(stderr, "fuzz invariant failed: %s\n  ", #cond);                                    \
      fprintf(stderr, __VA_ARGS__);                                                               \
      fputc('\n', stderr);                                                                        \
      abort();                                                                                    \
    }                                                                                             \
  } while (0)

/* "line L, column C: reason" with L, C >= 1 and a non-empty reason */
static int sh_fuzz_is_position_message(const char *m, size_t n) {
  const char *end = m + n;
  const char *p = m;
  static const char *const parts[] = {"line ", ", column "};
  for (int k = 0; k < 2; k++) {
    size_t pl = strlen(parts[k]);
    if ((size_t)(end - p) < pl || memcmp(p, parts[k], pl) != 0) return 0;
    p += pl;
    if (p >= end || *p < '1' || *p > '9') return 0;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  return (size_t)(end - p) > 2 && p[0] == ':' && p[1] == ' ';
}

/* Under an injected allocation failure the only acceptable raise is one about memory: LUA_ERRMEM
 * itself, or a module's own "out of memory" error for an allocation Lua did not make. */
static void sh_fuzz_check_oom_raise(lua_State *L, int status) {
  if (status == LUA_ERRMEM) return;
  size_t n = 0;
  const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : "(not a string)";
  SH_FUZZ_CHECK(strstr(m, "out of memory") != NULL || strstr(m, "not enough memory") != NULL,
                "status %d, error under allocation failure: %s", status, m);
}

/* 32-bit FNV-1a: spreads the injected failure over the whole parse, reproducibly per input */
static uint32_t sh_fuzz_hash(const uint8_t *data, size_t size) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 16777619u;
  return h;
}

/* Call the module's function fname (the module table at index mod) on the value at index arg
 * with the allocator armed: -> lua_pcall's status, two results (or the error) on the stack. */
static int sh_fuzz_call(lua_State *L, sh_fuzz_alloc_state *a, int mod, const char *fname, int arg) {
  lua_getfield(L, mod, fname);
  lua_pushvalue(L, arg);
  a->armed = 1;
  int status = lua_pcall(L, 1, 2, 0);
  a->armed = 0;
  return status;
}

/* Pass 2 of a decode target: the same decode of data in a fresh state, with one of its
 * allocations failing (which one is picked from the input, among the decode_allocs pass 1
 * counted) and every one after it. It must end in a memory error, or in a result check_result
 * accepts (the failure hit memory decode did not need after all). */
static void sh_fuzz_decode_oom(const uint8_t *data, size_t size, unsigned long decode_allocs, lua_CFunction luaopen,
                               const char *modname, void (*check_result)(lua_State *L)) {
  if (decode_allocs == 0) return;
  sh_fuzz_alloc_state a;
  lua_State *L = sh_fuzz_state(&a, luaopen, modname);
  lua_pushlstring(L, (const char *)data, size);
  a.fail_at = 1 + sh_fuzz_hash(data, size) % decode_allocs;
  int status = sh_fuzz_call(L, &a, lua_gettop(L) - 1, "decode", lua_gettop(L));
  if (status == LUA_OK) check_result(L);
  else sh_fuzz_check_oom_raise(L, status);
  lua_close(L);
}

/* The whole of a decode target's LLVMFuzzerTestOneInput. Pass 1, the contract with memory to
 * spare: decode(data) must not raise and check_result must accept its two results; then, when
 * given, more(L, mod, s, data, size) checks further with those results on top of the stack (the
 * module table at index mod, the input string at index s). Pass 2: sh_fuzz_decode_oom with the
 * count of the allocations pass 1's decode made. */
static int sh_fuzz_decode_target(const uint8_t *data, size_t size, lua_CFunction luaopen, const char *modname,
                                 void (*check_result)(lua_State *L),
                                 void (*more)(lua_State *L, int mod, int s, const uint8_t *data, size_t size)) {
  sh_fuzz_alloc_state a;
  lua_State *L = sh_fuzz_state(&a, luaopen, modname);
  int mod = lua_gettop(L);
  lua_pushlstring(L, (const char *)data, size);
  int s = lua_gettop(L);
  int status = sh_fuzz_call(L, &a, mod, "decode", s);
  unsigned long decode_allocs = a.allocs;
  SH_FUZZ_CHECK(status == LUA_OK, "decode raised: %s", lua_tostring(L, -1));
  check_result(L);
  if (more) more(L, mod, s, data, size);
  lua_close(L);
  sh_fuzz_decode_oom(data, size, decode_allocs, luaopen, modname, check_result);
  return 0;
}

#endif
