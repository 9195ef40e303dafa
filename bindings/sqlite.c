/* stagehost.core.sqlite on the system's SQLite 3: the durable run state of the pipeline engine
 * (runs, stages, events, checkpoints, artifacts), shared by a running host and `stagehost runs`
 * in another terminal, so every database is opened in WAL mode (readers never block the writer)
 * with synchronous=FULL (a commit that returned survives a crash or a kill -9) and foreign keys
 * enforced.
 *
 * The module is synchronous: a call runs to the end on the loop's thread. Statements are short,
 * but waiting on another process's lock blocks the whole host for up to busy_timeout
 * milliseconds (5000 by default); pass a smaller busy_timeout where that matters.
 *
 * Values: nil <-> NULL, integers <-> INTEGER (all 64 bits), floats <-> REAL, booleans are bound
 * as 0/1 (read back as integers). A string is bound as TEXT when it is valid UTF-8 without NUL
 * bytes and as a BLOB otherwise, so any byte string round-trips exactly; TEXT and BLOB both read
 * back as strings. (A BLOB never equals TEXT in SQL, so look binary keys up with binary
 * parameters, which the same rule guarantees.) NULL columns are absent from the row table.
 *
 * Failures of the world (a missing directory, a file that is not a database, SQLITE_BUSY, a
 * constraint, a syntax error) return nil, message, code name ("SQLITE_BUSY"); misuse (wrong
 * argument types, a parameter count that does not match the SQL, a closed database) raises. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <sqlite3.h>

#include "auxlib.h"

#define SH_SQLITE_DB_MT "stagehost.sqlite.db"
/* Prepared statements kept per connection. The engine uses a few dozen distinct statements;
 * past this the least recently used one is finalized. */
#define SH_SQLITE_CACHE_MAX 64
/* How much of the SQL an error message quotes. */
#define SH_SQLITE_SNIPPET 60

typedef struct {
  char *sql; /* malloc'd copy of the statement's text, the cache key */
  size_t len;
  sqlite3_stmt *stmt;
  uint64_t used; /* tick of the last use, for LRU eviction */
} sh_sqlite_cached_t;

/* The userdata "stagehost.sqlite.db". Everything SQLite hands out is owned here, so a Lua error
 * (out of memory, a bad argument) at any point leaves nothing that __gc cannot release. The
 * path as given is the userdata's user value. */
typedef struct {
  sqlite3 *db;          /* NULL once closed */
  sqlite3_stmt *active; /* a cached statement between its first step and its reset */
  int depth;            /* db:transaction calls in progress, for savepoint names */
  int ncached;
  uint64_t tick;
  sh_sqlite_cached_t cache[SH_SQLITE_CACHE_MAX];
} sh_sqlite_db_t;

/* ---- helpers ---- */

/* The name of a result code's primary part, as the SQLite documentation spells it. */
static const char *sh_sqlite_codename(int rc) {
  static const char *const names[] = {
      "SQLITE_OK", "SQLITE_ERROR", "SQLITE_INTERNAL", "SQLITE_PERM", "SQLITE_ABORT",
      "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM", "SQLITE_READONLY", "SQLITE_INTERRUPT",
      "SQLITE_IOERR", "SQLITE_CORRUPT", "SQLITE_NOTFOUND", "SQLITE_FULL", "SQLITE_CANTOPEN",
      "SQLITE_PROTOCOL", "SQLITE_EMPTY", "SQLITE_SCHEMA", "SQLITE_TOOBIG", "SQLITE_CONSTRAINT",
      "SQLITE_MISMATCH", "SQLITE_MISUSE", "SQLITE_NOLFS", "SQLITE_AUTH", "SQLITE_FORMAT",
      "SQLITE_RANGE", "SQLITE_NOTADB", "SQLITE_NOTICE", "SQLITE_WARNING",
  };
  int primary = rc & 0xff;
  if (primary >= 0 && (size_t)primary < sizeof names / sizeof names[0]) return names[primary];
  if (primary == SQLITE_ROW) return "SQLITE_ROW";
  if (primary == SQLITE_DONE) return "SQLITE_DONE";
  return "SQLITE_ERROR";
}

static int sh_sqlite_isspace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The start of the SQL for an error message: whitespace runs collapsed to one space (statements
 * are usually written over several lines), at most SH_SQLITE_SNIPPET bytes, cut on a UTF-8
 * character boundary, "..." when cut. */
static void sh_sqlite_snippet(const char *sql, size_t len, char *out, size_t cap) {
  size_t n = 0, i = 0, max = cap - 4 < SH_SQLITE_SNIPPET ? cap - 4 : SH_SQLITE_SNIPPET;
  while (i < len && sh_sqlite_isspace(sql[i])) i++;
  for (; i < len; i++) {
    if (sh_sqlite_isspace(sql[i])) continue;
    size_t need = (n > 0 && sh_sqlite_isspace(sql[i - 1])) ? 2 : 1;
    if (n + need > max) break;
    if (need == 2) out[n++] = ' ';
    out[n++] = sql[i];
  }
  if (i < len) {
    /* cut inside a multi-byte character: drop its first bytes too */
    if (((unsigned char)sql[i] & 0xC0) == 0x80) {
      while (n > 0 && ((unsigned char)out[n - 1] & 0xC0) == 0x80) n--;
      if (n > 0) n--;
    }
    out[n++] = '.', out[n++] = '.', out[n++] = '.';
  }
  out[n] = '\0';
}

/* Push nil, "FNAME: SQLite's message (SQL: "...")", code name: the failure of one statement. */
static int sh_sqlite_fail(lua_State *L, const char *fname, int rc, const char *msg, const char *sql, size_t len) {
  char snip[SH_SQLITE_SNIPPET + 8];
  sh_sqlite_snippet(sql, len, snip, sizeof snip);
  return sh_failure(L, sh_sqlite_codename(rc), "%s: %s (SQL: \"%s\")", fname, msg, snip);
}

/* Valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF) without NUL bytes:
 * such a string is bound as TEXT, anything else as a BLOB. */
static int sh_sqlite_is_text(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      if (c == 0) return 0;
      i++;
      continue;
    }
    size_t k;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) k = 2, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07;
    else return 0;
    if (n - i <= k) return 0;
    for (size_t j = 1; j <= k; j++) {
      unsigned cc = s[i + j];
      if ((cc & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (cc & 0x3F);
    }
    if (k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    i += k + 1;
  }
  return 1;
}

static sh_sqlite_db_t *sh_sqlite_checkopen(lua_State *L, const char *fname) {
  sh_sqlite_db_t *d = luaL_checkudata(L, 1, SH_SQLITE_DB_MT);
  if (!d->db) luaL_error(L, "sqlite: the database is closed (db:%s)", fname);
  return d;
}

/* A call that raised between a cached statement's first step and its reset (out of memory while
 * building rows) left it running, holding a read snapshot and pointers to argument strings that
 * are gone: end it before the connection does anything else. */
static void sh_sqlite_settle(sh_sqlite_db_t *d) {
  if (d->active) {
    sqlite3_reset(d->active);
    sqlite3_clear_bindings(d->active);
    d->active = NULL;
  }
}

static void sh_sqlite_close_db(sh_sqlite_db_t *d) {
  if (!d->db) return;
  for (int i = 0; i < d->ncached; i++) {
    sqlite3_finalize(d->cache[i].stmt);
    free(d->cache[i].sql);
  }
  d->ncached = 0;
  d->active = NULL;
  /* with every statement finalized this closes at once (and rolls back an open transaction;
   * the last connection to a WAL database also checkpoints and removes the -wal file) */
  sqlite3_close_v2(d->db);
  d->db = NULL;
}

/* Is the rest of a SQL text (after one statement) empty, whitespace or comments? */
static int sh_sqlite_tail_empty(sqlite3 *db, const char *tail) {
  while (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';') tail++;
  if (!*tail) return 1;
  sqlite3_stmt *more = NULL;
  int rc = sqlite3_prepare_v2(db, tail, -1, &more, NULL);
  sqlite3_finalize(more);
  return rc == SQLITE_OK && more == NULL;
}

/* The prepared statement for sql, from the cache or freshly prepared into it. Returns SQLite's
 * result code (the statement's failure to prepare is the caller's to report); misuse (no
 * statement, several) raises. */
static int sh_sqlite_prepare_cached(lua_State *L, sh_sqlite_db_t *d, const char *sql, size_t len,
                                    sqlite3_stmt **out) {
  d->tick++;
  for (int i = 0; i < d->ncached; i++) {
    sh_sqlite_cached_t *e = &d->cache[i];
    if (e->len == len && memcmp(e->sql, sql, len) == 0) {
      e->used = d->tick;
      *out = e->stmt;
      return SQLITE_OK;
    }
  }
  luaL_argcheck(L, len < INT_MAX, 2, "SQL too long");
  sqlite3_stmt *stmt = NULL;
  const char *tail = NULL;
  /* len + 1: the text is NUL-terminated (a Lua string), which spares SQLite a copy */
  int rc = sqlite3_prepare_v3(d->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
  if (rc != SQLITE_OK) return rc;
  if (!stmt) return luaL_argerror(L, 2, "no SQL statement, only whitespace or comments");
  if (!sh_sqlite_tail_empty(d->db, tail)) {
    sqlite3_finalize(stmt);
    return luaL_argerror(L, 2, "more than one SQL statement: db:query runs one, db:exec several");
  }
  char *key = malloc(len + 1);
  if (!key) {
    sqlite3_finalize(stmt);
    return luaL_error(L, "db:query: not enough memory");
  }
  memcpy(key, sql, len + 1);
  int slot = d->ncached;
  if (slot == SH_SQLITE_CACHE_MAX) {
    slot = 0;
    for (int i = 1; i < d->ncached; i++)
      if (d->cache[i].used < d->cache[slot].used) slot = i;
    sqlite3_finalize(d->cache[slot].stmt);
    free(d->cache[slot].sql);
  } else {
    d->ncached++;
  }
  d->cache[slot] = (sh_sqlite_cached_t){.sql = key, .len = len, .stmt = stmt, .used = d->tick};
  *out = stmt;
  return SQLITE_OK;
}

/* Run a statement that returns at most one row we care about (setup pragmas); the first
 * column of the first row is copied into val. */
static int sh_sqlite_pragma(sqlite3 *db, const char *sql, char *val, size_t cap) {
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    if (val) {
      const unsigned char *t = sqlite3_column_text(stmt, 0);
      snprintf(val, cap, "%s", t ? (const char *)t : "");
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
  }
  /* finalize hands step's error (and message) to the connection */
  int frc = sqlite3_finalize(stmt);
  return rc == SQLITE_DONE ? SQLITE_OK : frc != SQLITE_OK ? frc : rc;
}

/* ---- sqlite.open ---- */

/* open(path [, {readonly = false, busy_timeout = 5000, create = true, synchronous = "full"}]) -> db
 *   | nil, message, code
 * synchronous "normal": in WAL mode a commit survives the process being killed, not a power
 * loss, and costs no fsync per commit. */
static int sh_sqlite_open(lua_State *L) {
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  luaL_argcheck(L, strlen(path) == plen, 1, "path contains a NUL byte");
  int readonly = 0, create = 1, sync_normal = 0;
  lua_Integer timeout = 5000;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    /* a misspelt option would otherwise be silently ignored */
    static const char *const known[] = {"readonly", "busy_timeout", "create", "synchronous", NULL};
    sh_opt_unknown_keys(L, 2, known, "sqlite.open");
    readonly = sh_opt_bool(L, 2, "readonly", 0, "sqlite.open");
    create = sh_opt_bool(L, 2, "create", 1, "sqlite.open");
    const char *sync = sh_opt_string(L, 2, "synchronous", "sqlite.open");
    if (sync && strcmp(sync, "normal") == 0) sync_normal = 1;
    else if (sync && strcmp(sync, "full") != 0)
      return sh_opt_rangeerror(L, 2, "synchronous", "\"full\" or \"normal\"", "sqlite.open");
    int t = lua_getfield(L, 2, "busy_timeout");
    if (t != LUA_TNIL) {
      int isint = 0;
      timeout = lua_tointegerx(L, -1, &isint);
      if (t != LUA_TNUMBER || !isint || timeout < 0 || timeout > INT_MAX)
        return sh_opt_rangeerror(L, 2, "busy_timeout", "a whole number of milliseconds >= 0", "sqlite.open");
    }
    lua_pop(L, 1);
  }

  /* the userdata first, so the handle has an owner (and a __gc) before it exists */
  sh_sqlite_db_t *d = lua_newuserdatauv(L, sizeof *d, 1);
  memset(d, 0, sizeof *d);
  luaL_setmetatable(L, SH_SQLITE_DB_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);

  /* NOMUTEX: a connection is only used from the loop's thread. No URI filenames: a path is a
   * path. */
  int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0)) |
              SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path, &d->db, flags, NULL);
  char val[32] = "";
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(d->db, (int)timeout);
    /* SQLite reads the file lazily: read the header now, so a file that is not a database (or
     * is encrypted, or truncated) is reported here rather than by the first query */
    rc = sh_sqlite_pragma(d->db, "PRAGMA schema_version", NULL, 0);
  }
  if (rc == SQLITE_OK && !readonly) {
    /* WAL mode is a property of the file: set once, every later connection finds it */
    rc = sh_sqlite_pragma(d->db, "PRAGMA journal_mode=WAL", val, sizeof val);
    const char *file = sqlite3_db_filename(d->db, "main");
    /* in-memory and temporary databases (":memory:", "") have no WAL; a file must get it, or
     * readers and the writer would block each other */
    if (rc == SQLITE_OK && file && *file && strcmp(val, "wal") != 0) rc = -1;
  }
  if (rc == SQLITE_OK)
    rc = sh_sqlite_pragma(d->db, sync_normal ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", NULL, 0);
  if (rc == SQLITE_OK) rc = sh_sqlite_pragma(d->db, "PRAGMA foreign_keys=ON", NULL, 0);
  if (rc != SQLITE_OK) {
    lua_pushnil(L);
    if (rc == -1) {
      lua_pushfstring(L, "sqlite.open: cannot open '%s': cannot switch to WAL mode (journal_mode is '%s')", path, val);
      rc = SQLITE_ERROR;
    } else {
      const char *msg = d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc);
      /* "unable to open database file" says nothing of why: add the system's reason */
      int eno = d->db ? sqlite3_system_errno(d->db) : 0;
      int prim = rc & 0xff;
      if (eno && (prim == SQLITE_CANTOPEN || prim == SQLITE_IOERR || prim == SQLITE_PERM || prim == SQLITE_READONLY))
        lua_pushfstring(L, "sqlite.open: cannot open '%s': %s (%s)", path, msg, strerror(eno));
      else
        lua_pushfstring(L, "sqlite.open: cannot open '%s': %s", path, msg);
    }
    lua_pushstring(L, sh_sqlite_codename(rc));
    sh_sqlite_close_db(d);
    return 3;
  }
  return 1;
}

/* ---- db methods ---- */

/* db:exec(sql) -> true | nil, message, code. Runs every statement of sql in turn (schema
 * creation, migrations), without parameters; rows are discarded. Stops at the first failure:
 * the statements before it stay done (wrap them in BEGIN/COMMIT or db:transaction to make the
 * whole all-or-nothing). */
/* The SQL of db:exec and db:query (argument 2), without NUL bytes. */
static const char *sh_sqlite_checksql(lua_State *L, size_t *len) {
  const char *sql = luaL_checklstring(L, 2, len);
  luaL_argcheck(L, strlen(sql) == *len, 2, "SQL contains a NUL byte");
  return sql;
}

static int sh_sqlite_exec(lua_State *L) {
  sh_sqlite_db_t *d = sh_sqlite_checkopen(L, "exec");
  size_t len;
  const char *sql = sh_sqlite_checksql(L, &len);
  luaL_argcheck(L, lua_gettop(L) <= 2, 3, "db:exec takes no parameters, db:query does");
  sh_sqlite_settle(d);
  const char *p = sql;
  while (*p) {
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(d->db, p, -1, &stmt, &tail);
    if (rc != SQLITE_OK) return sh_sqlite_fail(L, "db:exec", rc, sqlite3_errmsg(d->db), p, strlen(p));
    if (!stmt) break; /* only whitespace and comments were left */
    if (sqlite3_bind_parameter_count(stmt) > 0) {
      sqlite3_finalize(stmt);
      return luaL_argerror(L, 2, "a statement has parameters: db:exec binds none, db:query does");
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) {
      /* copy the message: finalize is the last call on the statement, pushing could raise */
      char msg[512];
      snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(d->db));
      sqlite3_finalize(stmt);
      return sh_sqlite_fail(L, "db:exec", rc, msg, p, (size_t)(tail - p));
    }
    sqlite3_finalize(stmt);
    p = tail;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* db:query(sql, ...) -> rows, changes, last_insert_rowid | nil, message, code */
static int sh_sqlite_query(lua_State *L) {
  sh_sqlite_db_t *d = sh_sqlite_checkopen(L, "query");
  size_t len;
  const char *sql = sh_sqlite_checksql(L, &len);
  int nargs = lua_gettop(L) - 2;
  /* check every parameter before binding any, so a bad one leaves the statement untouched */
  for (int i = 1; i <= nargs; i++) {
    int t = lua_type(L, 2 + i);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
      return luaL_argerror(L, 2 + i, lua_pushfstring(L, "SQL parameter %d is a %s; expected nil, boolean, number or string",
                                                     i, luaL_typename(L, 2 + i)));
  }
  sh_sqlite_settle(d);
  sqlite3_stmt *stmt = NULL;
  int rc = sh_sqlite_prepare_cached(L, d, sql, len, &stmt);
  if (rc != SQLITE_OK) return sh_sqlite_fail(L, "db:query", rc, sqlite3_errmsg(d->db), sql, len);
  int np = sqlite3_bind_parameter_count(stmt);
  if (np != nargs) {
    char snip[SH_SQLITE_SNIPPET + 8];
    sh_sqlite_snippet(sql, len, snip, sizeof snip);
    return luaL_argerror(L, 2 + (np < nargs ? np : nargs) + 1,
                         lua_pushfstring(L, "the SQL takes %d parameter%s, %d given; SQL: \"%s\"", np, np == 1 ? "" : "s", nargs, snip));
  }
  /* Strings are bound SQLITE_STATIC: they stay on this call's stack until the bindings are
   * cleared below (or by sh_sqlite_settle, if a Lua error cuts the call short). */
  for (int i = 1; i <= nargs && rc == SQLITE_OK; i++) {
    int idx = 2 + i;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: rc = sqlite3_bind_null(stmt, i); break;
    case LUA_TBOOLEAN: rc = sqlite3_bind_int(stmt, i, lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) rc = sqlite3_bind_int64(stmt, i, (sqlite3_int64)lua_tointeger(L, idx));
      else rc = sqlite3_bind_double(stmt, i, (double)lua_tonumber(L, idx));
      break;
    default: {
      size_t sl;
      const char *s = lua_tolstring(L, idx, &sl);
      if (sh_sqlite_is_text((const unsigned char *)s, sl)) rc = sqlite3_bind_text64(stmt, i, s, sl, SQLITE_STATIC, SQLITE_UTF8);
      else rc = sqlite3_bind_blob64(stmt, i, s, sl, SQLITE_STATIC);
    }
    }
  }
  d->active = stmt;
  if (rc != SQLITE_OK) {
    sh_sqlite_fail(L, "db:query", rc, sqlite3_errmsg(d->db), sql, len);
    sh_sqlite_settle(d);
    return 3;
  }

  lua_newtable(L);
  int rows = lua_gettop(L);
  int ncols = -1;
  sqlite3_int64 before = sqlite3_total_changes64(d->db);
  lua_Integer n = 0;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (ncols < 0) {
      /* Only now: a step after a schema change re-prepares the statement, and "SELECT *" may
       * then have other columns than it had when it was cached. The names once, above the
       * rows table; each row's keys are copies of them. */
      ncols = sqlite3_column_count(stmt);
      luaL_checkstack(L, ncols + 4, "db:query: too many columns");
      for (int c = 0; c < ncols; c++) {
        const char *name = sqlite3_column_name(stmt, c);
        if (name) lua_pushstring(L, name);
        else lua_pushfstring(L, "%d", c + 1);
      }
    }
    lua_createtable(L, 0, ncols);
    for (int c = 0; c < ncols; c++) {
      int t = sqlite3_column_type(stmt, c);
      if (t == SQLITE_NULL) continue;
      lua_pushvalue(L, rows + 1 + c);
      switch (t) {
      case SQLITE_INTEGER: lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(stmt, c)); break;
      case SQLITE_FLOAT: lua_pushnumber(L, (lua_Number)sqlite3_column_double(stmt, c)); break;
      case SQLITE_TEXT: {
        const char *s = (const char *)sqlite3_column_text(stmt, c);
        lua_pushlstring(L, s ? s : "", (size_t)sqlite3_column_bytes(stmt, c));
        break;
      }
      default: {
        const void *b = sqlite3_column_blob(stmt, c);
        lua_pushlstring(L, b ? (const char *)b : "", (size_t)sqlite3_column_bytes(stmt, c));
      }
      }
      lua_rawset(L, -3);
    }
    lua_rawseti(L, rows, ++n);
  }
  if (rc != SQLITE_DONE) {
    sh_sqlite_fail(L, "db:query", rc, sqlite3_errmsg(d->db), sql, len);
    sh_sqlite_settle(d);
    return 3;
  }
  sh_sqlite_settle(d);
  lua_settop(L, rows);
  /* sqlite3_changes64 keeps the count of the last INSERT/UPDATE/DELETE, whatever ran since; a
   * statement that changed nothing (a SELECT, DDL) reports 0 rather than a stale count */
  lua_pushinteger(L, sqlite3_total_changes64(d->db) != before ? (lua_Integer)sqlite3_changes64(d->db) : 0);
  lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(d->db));
  return 3;
}

/* Run one transaction-control statement; on failure, raise naming what failed and SQLite's
 * code. */
static int sh_sqlite_control(sh_sqlite_db_t *d, const char *sql, char *err, size_t cap) {
  int rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) snprintf(err, cap, "%s failed: %s (%s)", sql, sqlite3_errmsg(d->db), sh_sqlite_codename(rc));
  return rc;
}

/* db:transaction(fn, ...) -> fn's results. fn(...) runs inside BEGIN IMMEDIATE ... COMMIT (the
 * write lock is taken at once, so the transaction cannot fail half-way for want of it), or
 * inside a SAVEPOINT when a transaction is already open. If fn raises, everything it did is
 * rolled back and its error is raised again, unchanged. Failing to begin (SQLITE_BUSY after
 * busy_timeout) or to commit raises too, naming the code: fn's results leave no room for a
 * nil, message return, and a transaction that silently did not happen is worse than an error.
 *
 * fn is called with lua_pcall, so it cannot wait: a task.sleep, proc.run or http.request inside
 * it raises "cannot wait here" and the transaction rolls back. Gather what you need first, then
 * write. */
static int sh_sqlite_transaction(lua_State *L) {
  sh_sqlite_db_t *d = sh_sqlite_checkopen(L, "transaction");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  sh_sqlite_settle(d);
  int outer = sqlite3_get_autocommit(d->db);
  int level = d->depth + 1;
  char sql[96], err[640];
  if (outer) snprintf(sql, sizeof sql, "BEGIN IMMEDIATE");
  else snprintf(sql, sizeof sql, "SAVEPOINT stagehost_tx_%d", level);
  if (sh_sqlite_control(d, sql, err, sizeof err) != SQLITE_OK) return luaL_error(L, "db:transaction: %s", err);

  d->depth = level;
  int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  /* d stays valid: the userdata is at index 1. fn may have closed it, though. */
  d->depth = level - 1;

  if (status != LUA_OK) {
    if (d->db) {
      sh_sqlite_settle(d);
      if (outer) {
        /* SQLite may have rolled back already (some I/O and SQLITE_FULL errors do) */
        if (!sqlite3_get_autocommit(d->db)) sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
      } else {
        snprintf(sql, sizeof sql, "ROLLBACK TO stagehost_tx_%d; RELEASE stagehost_tx_%d", level, level);
        sqlite3_exec(d->db, sql, NULL, NULL, NULL);
      }
    }
    return lua_error(L); /* the error value, as fn raised it */
  }
  int nres = lua_gettop(L) - 1;
  if (!d->db) return luaL_error(L, "db:transaction: the database was closed inside the transaction (it was rolled back)");
  sh_sqlite_settle(d);
  if (outer) {
    if (sqlite3_get_autocommit(d->db))
      return luaL_error(L, "db:transaction: the transaction was ended inside fn (by COMMIT or ROLLBACK)");
    if (sh_sqlite_control(d, "COMMIT", err, sizeof err) != SQLITE_OK) {
      if (!sqlite3_get_autocommit(d->db)) sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
      return luaL_error(L, "db:transaction: %s (rolled back)", err);
    }
  } else {
    snprintf(sql, sizeof sql, "RELEASE stagehost_tx_%d", level);
    if (sh_sqlite_control(d, sql, err, sizeof err) != SQLITE_OK) return luaL_error(L, "db:transaction: %s", err);
  }
  return nres;
}

/* db:close() -> true; idempotent (also __close and __gc) */
static int sh_sqlite_close(lua_State *L) {
  sh_sqlite_db_t *d = luaL_checkudata(L, 1, SH_SQLITE_DB_MT);
  sh_sqlite_close_db(d);
  lua_pushboolean(L, 1);
  return 1;
}

/* db:changes() -> rows changed by the last INSERT, UPDATE or DELETE on this connection */
static int sh_sqlite_changes(lua_State *L) {
  sh_sqlite_db_t *d = sh_sqlite_checkopen(L, "changes");
  lua_pushinteger(L, (lua_Integer)sqlite3_changes64(d->db));
  return 1;
}

/* db:path() -> the path given to open (also once closed) */
static int sh_sqlite_path(lua_State *L) {
  luaL_checkudata(L, 1, SH_SQLITE_DB_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int sh_sqlite_tostring(lua_State *L) {
  sh_sqlite_db_t *d = luaL_checkudata(L, 1, SH_SQLITE_DB_MT);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "%s (%s%s)", SH_SQLITE_DB_MT, lua_tostring(L, -1), d->db ? "" : ", closed");
  return 1;
}

static const luaL_Reg sh_sqlite_db_class[] = {
    {"exec", sh_sqlite_exec}, {"query", sh_sqlite_query}, {"transaction", sh_sqlite_transaction},
    {"close", sh_sqlite_close}, {"changes", sh_sqlite_changes}, {"path", sh_sqlite_path},
    {"__gc", sh_sqlite_close}, {"__close", sh_sqlite_close}, {"__tostring", sh_sqlite_tostring},
    {NULL, NULL},
};

int luaopen_stagehost_core_sqlite(lua_State *L) {
  static const luaL_Reg funcs[] = {{"open", sh_sqlite_open}, {NULL, NULL}};
  sh_newmodule(L, funcs, SH_SQLITE_DB_MT, sh_sqlite_db_class);
  sh_setfield_string(L, "version", sqlite3_libversion());
  return 1;
}
