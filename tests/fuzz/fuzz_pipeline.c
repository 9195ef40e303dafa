/* libFuzzer target for the pipeline loader and the duration parser, which are Lua
 * (stdlib/stagehost/pipeline.lua: pipeline.define and pipeline.seconds): each input runs in a
 * fresh Lua state with the standard libraries and the source tree's stdlib on package.path,
 * as stagehost has them, and tests/fuzz/fuzz_pipeline.lua checks the contracts (read it for
 * what they are). The only C modules these Lua modules reach are preloaded: stagehost.core.errors
 * (bindings/auxlib.c), which the config errors are made of, and stagehost.core.json
 * (bindings/json.c), which turns the input into a spec. stagehost.notify (a spec's notify field)
 * needs the scheduler and is not loaded: a stub takes its place, so every other field is still
 * checked. A failed check raises; the target prints it and aborts, which libFuzzer records.
 * The Lua library is not instrumented, so libFuzzer would see json.c's coverage only: a line
 * hook feeds it the Lua code's, as pairs of lines executed one after the other, through
 * libFuzzer's extra counters.
 * Build: CC=clang cmake -S . -B build-fz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz/pipeline.
 * Longer, by hand: build-fz/tests/fuzz_pipeline -max_total_time=600 -dict=tests/fuzz/pipeline.dict
 *   build-fz/tests/fuzz-corpus-pipeline tests/fuzz/seeds-pipeline */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "bindings/auxlib.h"

int sh_json_open(lua_State *L);

#ifndef SH_FUZZ_STDLIB
#error "SH_FUZZ_STDLIB (the source tree's stdlib directory) must be defined"
#endif
#ifndef SH_FUZZ_DIR
#error "SH_FUZZ_DIR (tests/fuzz of the source tree) must be defined"
#endif

/* Lua line-pair coverage for libFuzzer: it reads this section after each input */
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t sh_fuzz_lua_cov[1 << 15];
static uint32_t sh_fuzz_prev_line;

static void sh_fuzz_line_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return;
  /* a function is known by where it is defined: the same across the fresh states of inputs */
  uint32_t here = ((uint32_t)ar->linedefined * 2654435761u) ^ ((uint32_t)ar->lastlinedefined * 40503u) ^
                  ((uint32_t)ar->currentline * 2246822519u);
  uint32_t slot = (here ^ (sh_fuzz_prev_line >> 1)) & (sizeof sh_fuzz_lua_cov - 1);
  if (sh_fuzz_lua_cov[slot] < 255) sh_fuzz_lua_cov[slot]++;
  sh_fuzz_prev_line = here;
}

/* A directory with the files a spec's run and when may name, made once per process and
 * removed when it exits */
static char sh_fuzz_dir[] = "/tmp/stagehost-fuzz-pipeline-XXXXXX";
static const char *const sh_fuzz_files[][2] = {
  {"pipeline.lua", "local pipeline = require(\"stagehost.pipeline\")\n"
                   "return pipeline.define{\n  name = \"app\",\n  stages = {\n"
                   "    { name = \"build\", run = \"ok.lua\" },\n    { name = \"deploy\", run = \"ok.lua\" },\n"
                   "  },\n}\n"},
  {"ok.lua", "return function(ctx) return ctx end\n"},
  {"decide.lua", "return function() return true end\n"},
  {"bad.lua", "return function(\n"},
  {"value.lua", "return 42\n"},
  {"binary.lua", "\x1bLuaT\x00\x19\x93\r\n\x1a\n"},
};
#define SH_FUZZ_NFILES (sizeof sh_fuzz_files / sizeof sh_fuzz_files[0])

static void sh_fuzz_scratch_remove(void) {
  char path[sizeof sh_fuzz_dir + 32];
  for (size_t i = 0; i < SH_FUZZ_NFILES; i++) {
    snprintf(path, sizeof path, "%s/%s", sh_fuzz_dir, sh_fuzz_files[i][0]);
    remove(path);
  }
  rmdir(sh_fuzz_dir);
}

static const char *sh_fuzz_scratch(void) {
  static int made;
  if (made) return sh_fuzz_dir;
  if (!mkdtemp(sh_fuzz_dir)) abort();
  atexit(sh_fuzz_scratch_remove);
  for (size_t i = 0; i < SH_FUZZ_NFILES; i++) {
    char path[sizeof sh_fuzz_dir + 32];
    snprintf(path, sizeof path, "%s/%s", sh_fuzz_dir, sh_fuzz_files[i][0]);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(sh_fuzz_files[i][1], 1, strlen(sh_fuzz_files[i][1]), f) != strlen(sh_fuzz_files[i][1]) ||
        fclose(f) != 0)
      abort();
  }
  made = 1;
  return sh_fuzz_dir;
}

/* stagehost.notify stand-in: check(spec, where, dir) takes anything */
static int sh_fuzz_notify_check(lua_State *L) {
  lua_newtable(L);
  return 1;
}

static int sh_fuzz_notify_open(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, sh_fuzz_notify_check);
  lua_setfield(L, -2, "check");
  return 1;
}

static void sh_fuzz_preload(lua_State *L, const char *name, lua_CFunction open) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = sh_fuzz_scratch();
  lua_State *L = luaL_newstate();
  if (!L) abort();
  luaL_openlibs(L);
  sh_fuzz_preload(L, "stagehost.core.errors", sh_errors_open);
  sh_fuzz_preload(L, "stagehost.core.json", sh_json_open);
  sh_fuzz_preload(L, "stagehost.notify", sh_fuzz_notify_open);
  lua_getglobal(L, "package");
  lua_pushliteral(L, SH_FUZZ_STDLIB "/?.lua;" SH_FUZZ_STDLIB "/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath"); /* nothing from the system's Lua modules */
  lua_pop(L, 1);

  if (luaL_loadfilex(L, SH_FUZZ_DIR "/fuzz_pipeline.lua", "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_pipeline.lua: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pushlstring(L, (const char *)data, size);
  lua_pushstring(L, dir);
  sh_fuzz_prev_line = 0;
  lua_sethook(L, sh_fuzz_line_hook, LUA_MASKLINE, 0);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    const char *m = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "%s\n", m);
    abort();
  }
  lua_close(L);
  return 0;
}
