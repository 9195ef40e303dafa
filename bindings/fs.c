/* stagehost.core.fs: files on libuv's thread pool, so a slow disk never stalls the loop. Each
 * call is one job (open+read+close, or write+fsync+rename) instead of a chain of uv_fs calls.
 * Where the caller cannot wait (a module's top-level code) the same job runs inline. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "../host/sched.h"
#include "../host/util.h"
#include "auxlib.h"

enum { SH_FS_READ, SH_FS_WRITE, SH_FS_EXISTS, SH_FS_MKDIR, SH_FS_LIST, SH_FS_REMOVE };
static const char *const sh_fs_names[] = {"fs.read", "fs.write", "fs.exists", "fs.mkdir", "fs.list", "fs.remove"};

typedef struct {
  uv_work_t work;
  sh_wait_t wait;
  int op;
  char *path;
  sh_buf_t data;       /* write: input; read: output */
  int mode;            /* write, mkdir: the exact permissions asked for, or -1 */
  int recursive;       /* remove */
  int exclusive;       /* write: fail with EEXIST rather than replace */
  int err;             /* errno of the failed step */
  const char *step;    /* which step failed, for the message */
  sh_buf_t names;      /* list: output, an array of malloc'd char * */
  int kind;            /* exists: 0 none, 1 file, 2 directory, 3 other */
  int perm;            /* exists: the permission bits */
} sh_fs_req_t;

static size_t sh_fs_nnames(const sh_fs_req_t *r) { return r->names.len / sizeof(char *); }
static char **sh_fs_names_of(const sh_fs_req_t *r) { return (char **)r->names.data; }

static void sh_fs_req_free(sh_fs_req_t *r) {
  free(r->path);
  sh_buf_free(&r->data);
  for (size_t i = 0; i < sh_fs_nnames(r); i++) free(sh_fs_names_of(r)[i]);
  sh_buf_free(&r->names);
  free(r);
}

static int sh_fs_fail(sh_fs_req_t *r, const char *step) {
  r->err = errno;
  r->step = step;
  return -1;
}

static void sh_fs_read_job(sh_fs_req_t *r) {
  int fd = open(r->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    sh_fs_fail(r, "open");
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    sh_fs_fail(r, "stat");
    close(fd);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    sh_fs_fail(r, "read");
    close(fd);
    return;
  }
  /* the size plus one, so the read that sees the end needs no more room; files that grow, or
   * /proc files that report size 0, make it grow */
  size_t want = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
  sh_buf_t *b = &r->data;
  for (;;) {
    if (b->len == b->cap && sh_buf_reserve(b, b->cap ? b->cap : want) != 0) {
      errno = ENOMEM;
      sh_fs_fail(r, "read");
      break;
    }
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
    if (n < 0) {
      if (errno == EINTR) continue;
      sh_fs_fail(r, "read");
      break;
    }
    if (n == 0) break;
    b->len += (size_t)n;
  }
  close(fd);
}

/* Atomic replace: a reader sees the old content or the new, never a part; after a crash the
 * file is whole too (fsync before rename). Permissions: a mode asked for is set exactly on the
 * temp file before any data is in it, so a 0600 file's content is never readable by others; a
 * replaced file keeps its mode; a new file gets 0666 less the umask, as from any program.
 * exclusive: the temp file is linked to the name instead of renamed over it; link(2) fails if
 * anything is there (a dangling symlink too), so of writers racing to create a file exactly one
 * wins, and the name never shows a half-written file. */
static void sh_fs_write_job(sh_fs_req_t *r) {
  static unsigned long counter; /* temp names unique across concurrent writes */
  struct stat st;
  if (!r->exclusive && lstat(r->path, &st) == 0 && S_ISLNK(st.st_mode)) {
    char *target = realpath(r->path, NULL); /* replace the file the link points at, not the link */
    if (target) {
      free(r->path);
      r->path = target;
    }
  }
  if (r->mode < 0 && !r->exclusive && stat(r->path, &st) == 0) r->mode = (int)(st.st_mode & 07777);
  size_t pl = strlen(r->path);
  char *tmp = malloc(pl + 32);
  if (!tmp) {
    errno = ENOMEM;
    sh_fs_fail(r, "write");
    return;
  }
  snprintf(tmp, pl + 32, "%s.tmp.%d.%lu", r->path, (int)getpid(),
           __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
  /* the umask only takes bits away: never more open than asked, then fchmod makes it exact */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, r->mode >= 0 ? (mode_t)(r->mode & 0777) : 0666);
  if (fd < 0) {
    sh_fs_fail(r, "create");
    free(tmp);
    return;
  }
  if (r->mode >= 0 && fchmod(fd, (mode_t)r->mode) != 0) sh_fs_fail(r, "chmod");
  size_t off = 0;
  while (!r->step && off < r->data.len) {
    ssize_t n = write(fd, r->data.data + off, r->data.len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      sh_fs_fail(r, "write");
      break;
    }
    off += (size_t)n;
  }
  if (!r->step && fsync(fd) != 0) sh_fs_fail(r, "fsync");
  if (close(fd) != 0 && !r->step) sh_fs_fail(r, "close");
  if (!r->step) {
    if (r->exclusive ? link(tmp, r->path) != 0 : rename(tmp, r->path) != 0)
      sh_fs_fail(r, r->exclusive ? "create" : "rename");
  }
  if (r->step || r->exclusive) unlink(tmp);
  free(tmp);
}

/* Create directory p; a mode asked for is set exactly (mkdir's is cut by the umask). 0 when it
 * made p; -1 when mkdir failed (EEXIST: something is there), -2 when chmod did, errno set. */
static int sh_fs_mkdir_at(const char *p, int mode) {
  if (mkdir(p, mode >= 0 ? (mode_t)(mode & 0777) : 0777) != 0) return -1;
  if (mode >= 0 && chmod(p, (mode_t)mode) != 0) return -2;
  return 0;
}

/* Parents first; only the directories it creates get the mode, an existing one is left alone. */
static void sh_fs_mkdir_job(sh_fs_req_t *r) {
  char *p = r->path;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    int rc = sh_fs_mkdir_at(p, r->mode);
    int e = errno;
    *s = '/';
    if (rc == -2 || (rc != 0 && e != EEXIST)) {
      errno = e;
      sh_fs_fail(r, rc == -2 ? "chmod" : "mkdir");
      return;
    }
  }
  int rc = sh_fs_mkdir_at(p, r->mode);
  if (rc == -2) {
    sh_fs_fail(r, "chmod");
  } else if (rc != 0) {
    struct stat st;
    if (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
      if (errno == 0) errno = EEXIST;
      sh_fs_fail(r, "mkdir");
    }
  }
}

static int sh_name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sh_fs_list_job(sh_fs_req_t *r) {
  DIR *d = opendir(r->path);
  if (!d) {
    sh_fs_fail(r, "opendir");
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char *name = strdup(e->d_name);
    if (!name || sh_buf_add(&r->names, &name, sizeof name) != 0) {
      free(name);
      break;
    }
  }
  closedir(d);
  if (sh_fs_nnames(r) > 1) qsort(sh_fs_names_of(r), sh_fs_nnames(r), sizeof(char *), sh_name_cmp);
}

static int sh_remove_tree(int dirfd, const char *name) {
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return -1;
  }
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (unlinkat(fd, e->d_name, 0) == 0) continue;
    if (errno != EISDIR && errno != EPERM) {
      rc = -1;
      break;
    }
    rc = sh_remove_tree(fd, e->d_name);
  }
  closedir(d);
  if (rc == 0) rc = unlinkat(dirfd, name, AT_REMOVEDIR);
  return rc;
}

static void sh_fs_remove_job(sh_fs_req_t *r) {
  if (unlink(r->path) == 0) return;
  if (errno != EISDIR && errno != EPERM) {
    sh_fs_fail(r, "remove");
    return;
  }
  if (r->recursive ? sh_remove_tree(AT_FDCWD, r->path) != 0 : rmdir(r->path) != 0) sh_fs_fail(r, "remove");
}

static void sh_fs_exists_job(sh_fs_req_t *r) {
  struct stat st;
  if (stat(r->path, &st) != 0) {
    r->kind = 0;
    return;
  }
  r->kind = S_ISREG(st.st_mode) ? 1 : S_ISDIR(st.st_mode) ? 2 : 3;
  r->perm = (int)(st.st_mode & 07777);
}

/* runs on a thread-pool thread: no Lua here */
static void sh_fs_job(uv_work_t *work) {
  sh_fs_req_t *r = SH_CONTAINER(work, sh_fs_req_t, work);
  switch (r->op) {
    case SH_FS_READ: sh_fs_read_job(r); break;
    case SH_FS_WRITE: sh_fs_write_job(r); break;
    case SH_FS_EXISTS: sh_fs_exists_job(r); break;
    case SH_FS_MKDIR: sh_fs_mkdir_job(r); break;
    case SH_FS_LIST: sh_fs_list_job(r); break;
    case SH_FS_REMOVE: sh_fs_remove_job(r); break;
  }
}

/* called by libuv on the loop thread after the job (or its cancellation) */
static void sh_fs_after(uv_work_t *work, int status) {
  sh_fs_req_t *r = SH_CONTAINER(work, sh_fs_req_t, work);
  (void)status;
  if (r->wait.task) sh_sched_wake(&r->wait);
  else sh_fs_req_free(r); /* its task was cancelled meanwhile */
}

static void sh_fs_abort(sh_wait_t *w) {
  sh_fs_req_t *r = SH_CONTAINER(w, sh_fs_req_t, wait);
  uv_cancel((uv_req_t *)&r->work); /* if it already runs, sh_fs_after frees it later */
}

static int sh_fs_results(lua_State *L, sh_fs_req_t *r) {
  int n = 1;
  if (r->step) {
    n = sh_failure(L, uv_err_name(-r->err), "%s: cannot %s '%s': %s", sh_fs_names[r->op], r->step, r->path,
                   strerror(r->err));
  } else {
    switch (r->op) {
      case SH_FS_READ: lua_pushlstring(L, r->data.data ? r->data.data : "", r->data.len); break;
      case SH_FS_EXISTS:
        lua_pushboolean(L, r->kind != 0);
        if (r->kind) {
          static const char *const kinds[] = {"", "file", "directory", "other"};
          lua_pushstring(L, kinds[r->kind]);
          lua_pushinteger(L, r->perm);
          n = 3;
        }
        break;
      case SH_FS_LIST:
        lua_createtable(L, (int)sh_fs_nnames(r), 0);
        for (size_t i = 0; i < sh_fs_nnames(r); i++) {
          lua_pushstring(L, sh_fs_names_of(r)[i]);
          lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
      default: lua_pushboolean(L, 1);
    }
  }
  sh_fs_req_free(r);
  return n;
}

static int sh_fs_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return sh_fs_results(L, (sh_fs_req_t *)ctx);
}

/* opts.mode (at index idx): -1 when absent; an integer permission 0..07777 else, or raises
 * naming the function. */
static int sh_fs_opt_mode(lua_State *L, int idx, int op) {
  int mode = -1;
  if (lua_getfield(L, idx, "mode") != LUA_TNIL) {
    lua_Integer m = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || m < 0 || m > 07777) {
      const char *got = lua_isinteger(L, -1) ? lua_pushfstring(L, "%I", m) : luaL_typename(L, -1);
      return sh_opt_error(L, idx, sh_fs_names[op], "mode",
                          "must be an integer permission from 0 to 4095 (07777), such as 420 (0644), got %s", got);
    }
    mode = (int)m;
  }
  lua_pop(L, 1);
  return mode;
}

static int sh_fs_start(lua_State *L, int op) {
  size_t pl;
  const char *path = luaL_checklstring(L, 1, &pl);
  if (pl == 0 || strlen(path) != pl) return luaL_argerror(L, 1, "must be a non-empty path without NUL bytes");
  /* options first: reading them may raise, and nothing is allocated yet */
  int mode = -1, exclusive = 0, recursive = 0;
  if (op == SH_FS_WRITE && lua_istable(L, 3)) {
    mode = sh_fs_opt_mode(L, 3, op);
    exclusive = sh_opt_bool(L, 3, "exclusive", 0, "fs.write");
  }
  if (op == SH_FS_MKDIR && lua_istable(L, 2)) mode = sh_fs_opt_mode(L, 2, op);
  if (op == SH_FS_REMOVE && lua_istable(L, 2)) {
    lua_getfield(L, 2, "recursive");
    recursive = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  int can_wait = sh_sched_can_wait(L);
  if (can_wait) sh_sched_check_wait(L, sh_fs_names[op]);
  sh_fs_req_t *r = calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "%s: out of memory", sh_fs_names[op]);
  r->op = op;
  r->mode = mode;
  r->exclusive = exclusive;
  r->recursive = recursive;
  r->path = strdup(path);
  int copied = 0;
  if (op == SH_FS_WRITE) {
    size_t len;
    const char *data = lua_tolstring(L, 2, &len);
    copied = sh_buf_add(&r->data, data, len);
  }
  if (!r->path || copied != 0) {
    sh_fs_req_free(r);
    return luaL_error(L, "%s: out of memory", sh_fs_names[op]);
  }
  if (!can_wait) {
    sh_fs_job(&r->work);
    return sh_fs_results(L, r);
  }
  int rc = uv_queue_work(sh_sched_loop(L), &r->work, sh_fs_job, sh_fs_after);
  if (rc != 0) {
    sh_fs_req_free(r);
    return luaL_error(L, "%s: %s", sh_fs_names[op], uv_strerror(rc));
  }
  sh_sched_park(L, &r->wait, sh_fs_abort);
  return sh_sched_yield(L, sh_fs_k, (lua_KContext)r);
}

static int sh_fs_read(lua_State *L) { return sh_fs_start(L, SH_FS_READ); }
static int sh_fs_write(lua_State *L) {
  luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  return sh_fs_start(L, SH_FS_WRITE);
}
static int sh_fs_exists(lua_State *L) { return sh_fs_start(L, SH_FS_EXISTS); }
static int sh_fs_mkdir(lua_State *L) {
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  return sh_fs_start(L, SH_FS_MKDIR);
}
static int sh_fs_list(lua_State *L) { return sh_fs_start(L, SH_FS_LIST); }
static int sh_fs_remove(lua_State *L) {
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  return sh_fs_start(L, SH_FS_REMOVE);
}

/* fs.cwd() -> the process's working directory (not $PWD, which a parent may not have updated) */
static int sh_fs_cwd(lua_State *L) { return sh_push_uv_path(L, uv_cwd, "fs.cwd"); }

static const luaL_Reg sh_fs_funcs[] = {
    {"read", sh_fs_read},     {"write", sh_fs_write}, {"exists", sh_fs_exists},
    {"mkdir", sh_fs_mkdir},   {"list", sh_fs_list},   {"remove", sh_fs_remove},
    {"cwd", sh_fs_cwd},
    {NULL, NULL},
};

int sh_fs_open(lua_State *L) {
  return sh_newmodule(L, sh_fs_funcs, NULL, NULL);
}
