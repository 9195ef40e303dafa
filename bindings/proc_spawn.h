/* proc.spawn's options, from the Lua table to a started child: the half of stagehost.core.proc
 * that knows about argv, environments, PATH and posix_spawn (bindings/proc.c keeps the running
 * process: its pipes, timers, waits and handle). In three steps, so that no Lua error can cut
 * through C memory:
 *   1. sh_spawn_read checks the options and leaves argv and the environment on the Lua stack as
 *      tables of strings (it may raise; it allocates no C memory);
 *   2. sh_spawn_build copies them into C memory and opens the output files (it never raises);
 *   3. sh_spawn_exec starts the child (it never raises). */
#ifndef SH_PROC_SPAWN_H
#define SH_PROC_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include <lua.h>

typedef struct {
  /* read by sh_spawn_read; strings are the options table's own */
  const char *who;                /* "proc.run", "proc.spawn": names the caller in messages */
  const char *shell, *cwd, *out_path, *err_path, *name;
  double timeout, grace, max_output;
  int quiet;
  int stdin_pipe;                 /* stdin = true, or data */
  const char *stdin_data;         /* stdin = "data", or NULL */
  size_t stdin_len;
  int argv_idx, env_idx;          /* the string tables sh_spawn_read pushed (env_idx 0: inherit) */
  /* made by sh_spawn_build; freed by sh_spawn_free */
  char **argv, **env;             /* NULL-ended; env NULL: the host's own environment */
  int out_fd, err_fd;             /* the stdout = PATH and stderr = PATH files, or -1 */
} sh_spawn_t;

/* Read and check the options table at idx (argument #idx of who); push the argv table and the
 * environment table (or nil) and note their indices. Raises on misuse. */
void sh_spawn_read(lua_State *L, int idx, const char *who, sh_spawn_t *sp);

/* Copy argv and the environment into C memory and open the output files. 0, or an errno with
 * *failed naming what failed ("stdout", "stderr"; NULL for memory). Never raises. */
int sh_spawn_build(lua_State *L, sh_spawn_t *sp, const char **failed);

/* Resolve argv[0] in the child's PATH and start it, in its own session, with child_fds as its
 * stdin, stdout and stderr (-1: /dev/null). 0 or an errno. Never raises. */
int sh_spawn_exec(sh_spawn_t *sp, const int child_fds[3], pid_t *pid);

void sh_spawn_free(sh_spawn_t *sp);

#endif
