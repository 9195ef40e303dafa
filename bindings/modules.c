/* Every C module the runtime provides, registered as package.preload["stagehost.core.NAME"];
 * stdlib/stagehost/NAME.lua builds the public module on it. */
#include <lauxlib.h>

#include "auxlib.h"
#include "modules.h"

static const luaL_Reg sh_modules[] = {
    {"stagehost.core.task", sh_task_open}, {"stagehost.core.proc", sh_proc_open},
    {"stagehost.core.fs", sh_fs_open},     {"stagehost.core.json", sh_json_open},
    {"stagehost.core.log", sh_log_open},   {"stagehost.core.errors", sh_errors_open},
    {NULL, NULL},
};

void sh_modules_preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = sh_modules; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}
