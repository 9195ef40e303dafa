/* stagehost.core.json on cJSON. Decoded arrays and objects carry a metatable so that an empty
 * array stays [] when encoded again; json.array(t) / json.object(t) mark tables by hand. Object
 * keys are encoded sorted, so reports and run records are byte-for-byte reproducible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <lauxlib.h>

#include "auxlib.h"

#define SH_JSON_ARRAY_MT "stagehost.json.array"
#define SH_JSON_OBJECT_MT "stagehost.json.object"
#define SH_JSON_MAX_DEPTH CJSON_NESTING_LIMIT

/* json.null: a light userdata, like lua-cjson's, so it compares equal to itself everywhere */
#define sh_json_pushnull(L) lua_pushlightuserdata(L, NULL)

/* ---- decode ---- */

/* cJSON's tree is kept in a box (bindings/auxlib.h) while it is turned into Lua values:
 * building a table or growing the stack can raise (out of memory, stack overflow), and the
 * tree must be freed then too, not only on the way out */
static void sh_json_tree_release(void *data) {
  cJSON *root = *(cJSON **)data;
  if (root) cJSON_Delete(root);
}

static void sh_json_push(lua_State *L, const cJSON *item, int depth) {
  luaL_checkstack(L, 4, "json.decode: nesting too deep");
  if (cJSON_IsNull(item)) sh_json_pushnull(L);
  else if (cJSON_IsFalse(item)) lua_pushboolean(L, 0);
  else if (cJSON_IsTrue(item)) lua_pushboolean(L, 1);
  else if (cJSON_IsString(item)) lua_pushstring(L, item->valuestring);
  else if (cJSON_IsNumber(item)) {
    double d = item->valuedouble;
    /* integers stay integers (exit codes, ids, counts) when they are exact */
    if (d == floor(d) && fabs(d) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)d);
    else lua_pushnumber(L, d);
  } else if (cJSON_IsArray(item)) {
    lua_createtable(L, cJSON_GetArraySize(item), 0);
    lua_Integer i = 1;
    for (const cJSON *c = item->child; c; c = c->next) {
      sh_json_push(L, c, depth + 1);
      lua_rawseti(L, -2, i++);
    }
    luaL_setmetatable(L, SH_JSON_ARRAY_MT);
  } else {
    lua_createtable(L, 0, cJSON_GetArraySize(item));
    for (const cJSON *c = item->child; c; c = c->next) {
      sh_json_push(L, c, depth + 1);
      lua_setfield(L, -2, c->string);
    }
    luaL_setmetatable(L, SH_JSON_OBJECT_MT);
  }
}

/* Describe where s[0..off) ends: line, column, and how deeply it is nested at that point. */
static void sh_json_where(const char *s, size_t off, int *line, int *col, int *depth) {
  int in_string = 0;
  *line = 1, *col = 1, *depth = 0;
  for (size_t i = 0; i < off; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\' && i + 1 < off) i++, (*col)++;
      else if (c == '"') in_string = 0;
    } else if (c == '"') in_string = 1;
    else if (c == '[' || c == '{') (*depth)++;
    else if (c == ']' || c == '}') (*depth)--;
    if (c == '\n') (*line)++, *col = 1;
    else (*col)++;
  }
}

/* Offset of a \u0000 escape inside a string, or len. */
static size_t sh_json_find_u0000(const char *s, size_t len) {
  int in_string = 0;
  for (size_t i = 0; i < len; i++) {
    if (!in_string) {
      in_string = s[i] == '"';
    } else if (s[i] == '"') {
      in_string = 0;
    } else if (s[i] == '\\' && i + 1 < len) {
      if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0) return i;
      i++;
    }
  }
  return len;
}

/* Does the tree hold a number beyond a double's range (strtod made it infinite)? JSON has no
 * infinity, so such a value could not be encoded again: decode refuses it as out of range. */
static int sh_json_has_huge(const cJSON *item) {
  for (; item; item = item->next) {
    if (cJSON_IsNumber(item) && isinf(item->valuedouble)) return 1;
    if (item->child && sh_json_has_huge(item->child)) return 1;
  }
  return 0;
}

/* Offset of the first number of s (valid JSON) that reads as infinite, or len. */
static size_t sh_json_find_huge(const char *s, size_t len) {
  int in_string = 0;
  for (size_t i = 0; i < len; i++) {
    if (in_string) {
      if (s[i] == '\\') i++;
      else if (s[i] == '"') in_string = 0;
    } else if (s[i] == '"') {
      in_string = 1;
    } else if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
      char *end;
      if (isinf(strtod(s + i, &end))) return i;
      if (end > s + i) i = (size_t)(end - s) - 1;
    }
  }
  return len;
}

/* decode(s) -> value | nil, "line L, column C: reason": bad input is data from the world, as
 * xml.decode and yaml.decode have it. A non-string raises (misuse), and so does running out of
 * memory or of Lua stack while the value is built. */
static int sh_json_decode(lua_State *L) {
  size_t len;
  const char *s = sh_check_lstring(L, 1, "json.decode", &len);
  lua_settop(L, 1);
  if (len == 0) return sh_decode_failure(L, 1, 1, "empty input");
  int line, col, depth;
  size_t zero = strlen(s);
  if (zero < len) {
    sh_json_where(s, zero, &line, &col, &depth);
    return sh_decode_failure(L, line, col, "invalid JSON: NUL byte");
  }
  /* cJSON would decode \u0000 and then cut the string there: refuse instead of corrupting */
  size_t nul = sh_json_find_u0000(s, len);
  if (nul < len) {
    sh_json_where(s, nul, &line, &col, &depth);
    return sh_decode_failure(L, line, col, "\\u0000 in a string is not supported");
  }
  cJSON **tree = sh_newbox(L, sizeof *tree, sh_json_tree_release);
  /* Lua strings end in a NUL; cJSON wants it inside the length to accept the end of input */
  const char *end = NULL;
  cJSON *root = *tree = cJSON_ParseWithLengthOpts(s, len + 1, &end, 1);
  if (!root) {
    size_t off = end && end >= s ? (size_t)(end - s) : 0;
    if (off > len) off = len;
    sh_json_where(s, off, &line, &col, &depth);
    if (depth >= CJSON_NESTING_LIMIT) {
      lua_pushfstring(L, "nesting deeper than %d levels", CJSON_NESTING_LIMIT);
      return sh_decode_failure(L, line, col, lua_tostring(L, -1));
    }
    char near[24];
    size_t nl = len - off < 16 ? len - off : 16, k = 0;
    for (size_t i = 0; i < nl; i++) near[k++] = (s[off + i] == '\n' || s[off + i] == '\r') ? ' ' : s[off + i];
    near[k] = '\0';
    if (!nl) return sh_decode_failure(L, line, col, "invalid JSON (unexpected end)");
    lua_pushfstring(L, "invalid JSON near '%s'", near);
    return sh_decode_failure(L, line, col, lua_tostring(L, -1));
  }
  if (sh_json_has_huge(root)) {
    sh_json_where(s, sh_json_find_huge(s, len), &line, &col, &depth);
    return sh_decode_failure(L, line, col, "number out of range (a double ends near 1.8e308)");
  }
  sh_json_push(L, root, 0);
  return 1; /* closing the box frees the tree */
}

/* ---- encode ---- */

/* Building never raises: a failure sets err and returns NULL, and each level frees what it
 * built, so no cJSON tree leaks past a bad value. */
typedef struct {
  lua_State *L;
  const char *err;
  char errbuf[96];
  char path[256]; /* where the bad value is: $.stages[2].name */
} sh_json_enc_t;

static cJSON *sh_json_build(sh_json_enc_t *e, int idx, int depth);

static cJSON *sh_json_fail(sh_json_enc_t *e, cJSON *partial, const char *what) {
  cJSON_Delete(partial);
  if (!e->err) {
    snprintf(e->errbuf, sizeof e->errbuf, "%s", what);
    e->err = e->errbuf;
  }
  return NULL;
}

/* 1 array, 2 object (by metatable), 0 decide by content */
static int sh_json_kind(lua_State *L, int idx) {
  return sh_has_metatable(L, idx, SH_JSON_ARRAY_MT) ? 1 : sh_has_metatable(L, idx, SH_JSON_OBJECT_MT) ? 2 : 0;
}

static int sh_key_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static cJSON *sh_json_array_of(sh_json_enc_t *e, int idx, lua_Integer n, int depth, size_t plen) {
  cJSON *arr = cJSON_CreateArray();
  for (lua_Integer i = 1; arr && i <= n; i++) {
    snprintf(e->path + plen, sizeof e->path - plen, "[%lld]", (long long)i);
    lua_rawgeti(e->L, idx, i);
    cJSON *c = sh_json_build(e, lua_gettop(e->L), depth + 1);
    lua_pop(e->L, 1);
    if (!c) return sh_json_fail(e, arr, "");
    cJSON_AddItemToArray(arr, c);
  }
  e->path[plen] = '\0';
  return arr;
}

static cJSON *sh_json_object_of(sh_json_enc_t *e, int idx, size_t count, int depth, size_t plen) {
  lua_State *L = e->L;
  const char **keys = malloc((count ? count : 1) * sizeof *keys);
  if (!keys) return sh_json_fail(e, NULL, "out of memory");
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    keys[k++] = lua_tostring(L, -2); /* stays alive: it is a key of the table */
    lua_pop(L, 1);
  }
  qsort(keys, count, sizeof *keys, sh_key_cmp);
  cJSON *obj = cJSON_CreateObject();
  for (size_t i = 0; obj && i < count; i++) {
    snprintf(e->path + plen, sizeof e->path - plen, ".%s", keys[i]);
    lua_getfield(L, idx, keys[i]);
    cJSON *c = sh_json_build(e, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
    if (!c) {
      free(keys);
      return sh_json_fail(e, obj, "");
    }
    cJSON_AddItemToObject(obj, keys[i], c);
  }
  free(keys);
  e->path[plen] = '\0';
  return obj;
}

static cJSON *sh_json_table(sh_json_enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  if (depth > SH_JSON_MAX_DEPTH) return sh_json_fail(e, NULL, "nesting too deep (a table that contains itself?)");
  if (!lua_checkstack(L, 8)) return sh_json_fail(e, NULL, "nesting too deep");
  int kind = sh_json_kind(L, idx);
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  size_t count = 0, strings = 0;
  const char *badkey = NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    count++;
    if (lua_type(L, -2) == LUA_TSTRING) {
      strings++;
      size_t kl;
      const char *key = lua_tolstring(L, -2, &kl);
      if (strlen(key) != kl) {
        lua_pop(L, 2);
        return sh_json_fail(e, NULL, "object key with a NUL byte");
      }
    }
    else if (!lua_isinteger(L, -2)) badkey = luaL_typename(L, -2);
    lua_pop(L, 1);
  }
  if (kind == 0) kind = (count == 0 || strings > 0) ? 2 : 1;
  size_t plen = strlen(e->path);
  if (kind == 1) {
    if ((size_t)n != count)
      return sh_json_fail(e, NULL, "array with holes or non-integer keys (fill gaps with json.null, or use json.object)");
    return sh_json_array_of(e, idx, n, depth, plen);
  }
  if (strings != count) {
    snprintf(e->errbuf, sizeof e->errbuf, "table mixes string keys with %s keys (JSON object keys are strings)",
             badkey ? badkey : "integer");
    e->err = e->errbuf;
    return NULL;
  }
  return sh_json_object_of(e, idx, count, depth, plen);
}

/* The shortest text that reads back as exactly d (cJSON's own printing keeps 15 digits). */
static const char *sh_json_double(double d) {
  static char buf[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  if (!strpbrk(buf, ".eEn")) strcat(buf, ".0"); /* keep it a float: 2.0 must not read back as 2 */
  return buf;
}

static cJSON *sh_json_build(sh_json_enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        char buf[32];
        snprintf(buf, sizeof buf, LUA_INTEGER_FMT, lua_tointeger(L, idx));
        return cJSON_CreateRaw(buf); /* exact beyond 2^53, unlike a double */
      } else {
        double d = lua_tonumber(L, idx);
        if (isnan(d) || isinf(d)) return sh_json_fail(e, NULL, "NaN or infinity cannot be encoded");
        return cJSON_CreateRaw(sh_json_double(d));
      }
    case LUA_TSTRING: {
      size_t len;
      const char *str = lua_tolstring(L, idx, &len);
      if (strlen(str) != len) return sh_json_fail(e, NULL, "string with a NUL byte (cJSON cannot carry it; encode it, e.g. base64)");
      return cJSON_CreateString(str);
    }
    case LUA_TTABLE: return sh_json_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return cJSON_CreateNull();
      /* fallthrough */
    default:
      snprintf(e->errbuf, sizeof e->errbuf, "cannot encode a %s value", luaL_typename(L, idx));
      e->err = e->errbuf;
      return NULL;
  }
}

/* cJSON indents with tabs; people and diffs expect two spaces. Tabs never occur inside
 * encoded strings (they are escaped), so every raw tab is layout. */
static char *sh_json_respace(const char *s) {
  size_t tabs = 0;
  for (const char *p = s; *p; p++) tabs += *p == '\t';
  char *out = malloc(strlen(s) + tabs + 1);
  if (!out) return NULL;
  char *o = out;
  for (const char *p = s; *p; p++) {
    if (*p == '\t') {
      if (p > s && p[-1] == ':') *o++ = ' ';
      else {
        *o++ = ' ';
        *o++ = ' ';
      }
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
  return out;
}

static int sh_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int pretty = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "pretty");
    pretty = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  sh_json_enc_t e;
  memset(&e, 0, sizeof e);
  e.L = L;
  strcpy(e.path, "$");
  cJSON *root = sh_json_build(&e, 1, 0);
  if (!root) return luaL_error(L, "json.encode: %s at %s", e.err ? e.err : "out of memory", e.path);
  char *text = pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!text) return luaL_error(L, "json.encode: out of memory");
  char *spaced = pretty ? sh_json_respace(text) : NULL;
  lua_pushstring(L, spaced ? spaced : text);
  free(spaced);
  cJSON_free(text);
  return 1;
}

static int sh_json_mark(lua_State *L, const char *mt) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_setmetatable(L, mt);
  return 1;
}

static int sh_json_array(lua_State *L) { return sh_json_mark(L, SH_JSON_ARRAY_MT); }
static int sh_json_object(lua_State *L) { return sh_json_mark(L, SH_JSON_OBJECT_MT); }

static int sh_json_is_array(lua_State *L) {
  lua_pushboolean(L, lua_istable(L, 1) && sh_json_kind(L, 1) == 1);
  return 1;
}

static const luaL_Reg sh_json_funcs[] = {
    {"encode", sh_json_encode}, {"decode", sh_json_decode},     {"array", sh_json_array},
    {"object", sh_json_object}, {"is_array", sh_json_is_array}, {NULL, NULL},
};

int sh_json_open(lua_State *L) {
  luaL_newmetatable(L, SH_JSON_ARRAY_MT);
  lua_pop(L, 1);
  luaL_newmetatable(L, SH_JSON_OBJECT_MT);
  lua_pop(L, 1);
  luaL_newlib(L, sh_json_funcs);
  sh_json_pushnull(L);
  lua_setfield(L, -2, "null");
  return 1;
}
