#ifndef SH_MODULES_H
#define SH_MODULES_H

#include <lua.h>

int sh_task_open(lua_State *L);
int sh_proc_open(lua_State *L);
int sh_fs_open(lua_State *L);
int sh_json_open(lua_State *L);
int sh_log_open(lua_State *L);
/* io.write and the write method of io.stdout / io.stderr: masked like print (bindings/log.c) */
void sh_log_wrap_stdio(lua_State *L);
void sh_modules_preload(lua_State *L);
/* os.exit: stop every child process group before the host leaves */
void sh_proc_kill_all(int sig);
void sh_proc_host_exit(void);

#endif
