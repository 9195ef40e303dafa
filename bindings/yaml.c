/* stagehost.core.yaml: YAML documents (CloudFormation / SAM templates, configuration) to Lua
 * values, on libyaml's event parser. decode(s) -> value | nil, "line L, column C: reason".
 *
 *   - mappings are tables marked as JSON objects, sequences arrays marked as JSON arrays (the
 *     metatables stagehost.json uses), so json.encode(yaml.decode(s)) keeps {} and [];
 *   - mapping keys are strings, the scalar's text as written ("1: x" has the key "1"): keys
 *     name things in templates and configuration, and Lua or JSON want them as strings (an
 *     alias used as a key is its anchored scalar's text, "0x10" not "16"). A
 *     duplicate key is an error, as CloudFormation makes it; "<<" merges mappings (explicit keys
 *     win, earlier merged mappings win over later ones);
 *   - plain scalars resolve by the YAML 1.2 core schema (null, bool, int, float, else string),
 *     quoted and block scalars stay strings; !!str, !!int, !!float, !!bool, !!null force a type;
 *   - CloudFormation's short forms become their long forms: !Ref X -> {Ref = "X"}, !Condition X
 *     -> {Condition = "X"}, !GetAtt A.B -> {["Fn::GetAtt"] = {"A", "B"}}, !Name v ->
 *     {["Fn::Name"] = v}; a tagged scalar stays a string;
 *   - an alias is the same Lua table as its anchor. Counting every node an alias stands for,
 *     a document may hold at most SH_YAML_MAX_NODES (an alias bomb is refused, not expanded);
 *   - one document: an empty stream is json.null, a second document is an error (a stray
 *     "---" in a template is a mistake to report, not a file to half-read).
 *
 * The input is data from the world: malformed YAML is a nil + message, never a raise. libyaml's
 * parser and its current event live in a to-be-closed userdata, so a Lua error (out of memory)
 * in the middle still frees them. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <yaml.h>

#include "auxlib.h"

/* the metatables of bindings/json.c: the same registry names give the same tables */
#define SH_YAML_ARRAY_MT "stagehost.json.array"
#define SH_YAML_OBJECT_MT "stagehost.json.object"
#define SH_YAML_MAX_DEPTH 512
#define SH_YAML_MAX_NODES 1000000
#define SH_YAML_STD_TAG "tag:yaml.org,2002:"

enum { SH_YAML_SEQ = 1, SH_YAML_MAP = 2 };

/* An open collection. Its slots on the Lua stack: idx - 3 anchor name or nil, idx - 2 tag or nil,
 * idx - 1 the "<<" sources or nil, idx the table; idx + 1 the pending key of a mapping. */
typedef struct {
  int kind;
  int idx;
  lua_Integer n;
  int have_key, key_is_merge;
  yaml_mark_t key_mark;
  long start_nodes;
} sh_yaml_frame;

/* libyaml's parser and its current event, kept in a box (bindings/auxlib.h) for the parse:
 * building the Lua values may raise, and they must be freed then too */
typedef struct {
  yaml_parser_t parser;
  yaml_event_t event;
  int parser_live, event_live;
  sh_yaml_frame frames[SH_YAML_MAX_DEPTH];
} sh_yaml_box;

typedef struct {
  lua_State *L;
  sh_yaml_box *box;
  const char *input;
  size_t input_len;
  int depth;
  int result;  /* stack slot of the document's value */
  int anchors; /* name -> value */
  int sizes;   /* name -> nodes the value stands for */
  int raws;    /* name -> a scalar's text as written (an alias used as a key is that text) */
  int have_root, documents;
  long nodes;
  char err[200];
  yaml_mark_t err_mark;
} sh_yaml_state;

static void sh_yaml_box_release(void *data) {
  sh_yaml_box *box = data;
  if (box->event_live) yaml_event_delete(&box->event);
  if (box->parser_live) yaml_parser_delete(&box->parser);
}

/* Record our own reason to stop; -> -1 for the caller to return */
static int sh_yaml_error(sh_yaml_state *st, yaml_mark_t mark, const char *fmt, const char *arg) {
  snprintf(st->err, sizeof st->err, fmt, arg);
  st->err_mark = mark;
  return -1;
}

/* ---- scalars ---- */

static int sh_yaml_is(const char *s, size_t n, const char *a, const char *b, const char *c) {
  return (n == strlen(a) && memcmp(s, a, n) == 0) || (n == strlen(b) && memcmp(s, b, n) == 0) ||
         (n == strlen(c) && memcmp(s, c, n) == 0);
}

static int sh_yaml_digits(const char *s, size_t n, int base) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int ok = base == 8    ? (c >= '0' && c <= '7')
             : base == 10 ? (c >= '0' && c <= '9')
                          : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
    if (!ok) return 0;
  }
  return 1;
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static int sh_yaml_is_float(const char *s, size_t n) {
  size_t i = 0, d = 0;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++, d++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, d++;
  }
  if (d == 0) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    size_t e = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, e++;
    if (e == 0) return 0;
  }
  return i == n;
}

/* Hex or octal digits (already checked) beyond 64 bits, as the nearest float: strtoull can only
 * say ERANGE, and strtod reads neither "0o" nor hex without "0x". Multiplying by 8 or 16 is
 * exact in binary floating point, so only the additions round. */
static double sh_yaml_big(const char *d, int base) {
  double v = 0;
  for (; *d; d++) {
    int c = *d;
    int digit = c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0';
    v = v * base + digit;
  }
  return v;
}

enum { SH_YAML_ANY, SH_YAML_NULL, SH_YAML_BOOL, SH_YAML_INT, SH_YAML_FLOAT };

/* Push s resolved by the core schema. want narrows it to one type: -> -1 (nothing pushed) when s
 * is not of that type. s is NUL-terminated (libyaml's scalar value). */
static int sh_yaml_resolve(lua_State *L, const char *s, size_t n, int want) {
  if (want == SH_YAML_ANY || want == SH_YAML_NULL) {
    if (n == 0 || sh_yaml_is(s, n, "~", "null", "Null") || (n == 4 && memcmp(s, "NULL", 4) == 0)) {
      lua_pushlightuserdata(L, NULL); /* json.null */
      return 0;
    }
  }
  if (want == SH_YAML_ANY || want == SH_YAML_BOOL) {
    if (sh_yaml_is(s, n, "true", "True", "TRUE")) return lua_pushboolean(L, 1), 0;
    if (sh_yaml_is(s, n, "false", "False", "FALSE")) return lua_pushboolean(L, 0), 0;
  }
  if (want == SH_YAML_ANY || want == SH_YAML_INT) {
    int base = 0;
    const char *d = s;
    if (n > 2 && s[0] == '0' && s[1] == 'o' && sh_yaml_digits(s + 2, n - 2, 8)) base = 8, d = s + 2;
    else if (n > 2 && s[0] == '0' && s[1] == 'x' && sh_yaml_digits(s + 2, n - 2, 16)) base = 16, d = s + 2;
    else if (n > 0 && (s[0] == '-' || s[0] == '+') ? sh_yaml_digits(s + 1, n - 1, 10) : sh_yaml_digits(s, n, 10))
      base = 10;
    if (base) {
      errno = 0;
      char *end;
      if (base == 10) {
        long long v = strtoll(d, &end, 10);
        /* beyond 64 bits: the nearest float, as Lua's own tonumber would give */
        if (errno == ERANGE) lua_pushnumber(L, strtod(s, NULL));
        else lua_pushinteger(L, (lua_Integer)v);
      } else {
        unsigned long long v = strtoull(d, &end, base);
        if (errno == ERANGE) lua_pushnumber(L, sh_yaml_big(d, base)); /* v is ULLONG_MAX: useless */
        else if (v > (unsigned long long)LUA_MAXINTEGER) lua_pushnumber(L, (lua_Number)v);
        else lua_pushinteger(L, (lua_Integer)v);
      }
      return 0;
    }
  }
  if (want == SH_YAML_ANY || want == SH_YAML_FLOAT) {
    if (sh_yaml_is_float(s, n)) return lua_pushnumber(L, strtod(s, NULL)), 0;
    const char *t = s;
    size_t tn = n;
    double sign = 1;
    if (tn > 0 && (t[0] == '-' || t[0] == '+')) sign = t[0] == '-' ? -1 : 1, t++, tn--;
    if (sh_yaml_is(t, tn, ".inf", ".Inf", ".INF")) return lua_pushnumber(L, sign * HUGE_VAL), 0;
    if (t == s && sh_yaml_is(s, n, ".nan", ".NaN", ".NAN")) return lua_pushnumber(L, NAN), 0;
  }
  if (want != SH_YAML_ANY) return -1;
  lua_pushlstring(L, s, n);
  return 0;
}

/* ---- CloudFormation short forms ---- */

static void sh_yaml_mark(lua_State *L, const char *mt) {
  luaL_setmetatable(L, mt);
}

/* The value on top, tagged !Name, becomes its long form in place */
static void sh_yaml_cfn(lua_State *L, const char *name) {
  lua_createtable(L, 0, 1);
  lua_insert(L, -2);
  if (strcmp(name, "GetAtt") == 0 && lua_type(L, -1) == LUA_TSTRING) {
    /* "Resource.Attribute.Path": the resource's name has no dot, its attribute may */
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    const char *dot = memchr(s, '.', n);
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, s, dot ? (size_t)(dot - s) : n);
    lua_rawseti(L, -2, 1);
    if (dot) {
      lua_pushlstring(L, dot + 1, n - (size_t)(dot - s) - 1);
      lua_rawseti(L, -2, 2);
    }
    sh_yaml_mark(L, SH_YAML_ARRAY_MT);
    lua_replace(L, -2);
  }
  if (strcmp(name, "Ref") == 0 || strcmp(name, "Condition") == 0) lua_setfield(L, -2, name);
  else {
    lua_pushfstring(L, "Fn::%s", name);
    lua_insert(L, -2);
    lua_rawset(L, -3);
  }
  sh_yaml_mark(L, SH_YAML_OBJECT_MT);
}

/* A local tag ("!Ref"), as opposed to a standard one ("!!str" arrives resolved as a URI) */
static const char *sh_yaml_local_tag(const char *tag) {
  return tag && tag[0] == '!' && tag[1] != '\0' ? tag + 1 : NULL;
}

/* ---- the tree ---- */

static int sh_yaml_is_array(lua_State *L, int idx) { return sh_has_metatable(L, idx, SH_YAML_ARRAY_MT); }

/* A complete node is on top: it becomes the document, an item, a key, or a key's value. */
static int sh_yaml_attach(sh_yaml_state *st, yaml_mark_t mark, int merge_key) {
  lua_State *L = st->L;
  if (st->depth == 0) {
    lua_replace(L, st->result);
    st->have_root = 1;
    return 0;
  }
  sh_yaml_frame *f = &st->box->frames[st->depth - 1];
  if (f->kind == SH_YAML_SEQ) {
    lua_rawseti(L, f->idx, ++f->n);
    return 0;
  }
  if (!f->have_key) {
    int ty = lua_type(L, -1);
    /* only an alias can bring anything but a string here */
    if (ty == LUA_TTABLE) return sh_yaml_error(st, mark, "%s", "mapping keys must be scalars");
    if (ty == LUA_TBOOLEAN) lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false"), lua_replace(L, -2);
    else if (ty == LUA_TLIGHTUSERDATA) lua_pushliteral(L, "null"), lua_replace(L, -2);
    else lua_tostring(L, -1);
    f->have_key = 1;
    f->key_is_merge = merge_key;
    f->key_mark = mark;
    return 0;
  }
  f->have_key = 0;
  if (f->key_is_merge) {
    int ok = lua_istable(L, -1);
    if (ok && sh_yaml_is_array(L, -1)) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      for (lua_Integer i = 1; ok && i <= n; i++) {
        lua_rawgeti(L, -1, i);
        ok = lua_istable(L, -1) && !sh_yaml_is_array(L, -1);
        lua_pop(L, 1);
      }
    }
    if (!ok) return sh_yaml_error(st, f->key_mark, "%s", "'<<' needs a mapping or a sequence of mappings");
    if (lua_isnil(L, f->idx - 1)) {
      lua_newtable(L);
      lua_replace(L, f->idx - 1);
    }
    lua_rawseti(L, f->idx - 1, (lua_Integer)lua_rawlen(L, f->idx - 1) + 1);
    lua_pop(L, 1); /* the key */
    return 0;
  }
  lua_pushvalue(L, -2);
  if (lua_rawget(L, f->idx) != LUA_TNIL)
    return sh_yaml_error(st, f->key_mark, "duplicate key '%.80s'", lua_tostring(L, -3));
  lua_pop(L, 1);
  lua_rawset(L, f->idx);
  return 0;
}

/* Fill the mapping at idx from one "<<" source: only the keys it does not have */
static void sh_yaml_merge_from(lua_State *L, int idx, int src) {
  lua_pushnil(L);
  while (lua_next(L, src)) {
    lua_pushvalue(L, -2);
    if (lua_rawget(L, idx) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, idx);
    } else {
      lua_pop(L, 2);
    }
  }
}

static void sh_yaml_apply_merges(lua_State *L, int idx) {
  int merges = idx - 1;
  lua_Integer n = (lua_Integer)lua_rawlen(L, merges);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, merges, i);
    int src = lua_gettop(L);
    if (sh_yaml_is_array(L, src)) {
      lua_Integer m = (lua_Integer)lua_rawlen(L, src);
      for (lua_Integer j = 1; j <= m; j++) {
        lua_rawgeti(L, src, j);
        sh_yaml_merge_from(L, idx, lua_gettop(L));
        lua_pop(L, 1);
      }
    } else {
      sh_yaml_merge_from(L, idx, src);
    }
    lua_pop(L, 1);
  }
}

static void sh_yaml_push_anchor_tag(lua_State *L, const yaml_char_t *anchor, const yaml_char_t *tag) {
  if (anchor) lua_pushstring(L, (const char *)anchor);
  else lua_pushnil(L);
  if (tag) lua_pushstring(L, (const char *)tag);
  else lua_pushnil(L);
}

/* Remember the node on top under its anchor, with the number of nodes it stands for and, for
 * a scalar, its text as written (raw, or NULL for a collection; a redefined anchor drops the
 * text of the one before) */
static void sh_yaml_anchor(sh_yaml_state *st, int name_idx, long size, const char *raw, size_t raw_len) {
  lua_State *L = st->L;
  lua_pushvalue(L, name_idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, st->anchors);
  lua_pushvalue(L, name_idx);
  lua_pushinteger(L, size);
  lua_rawset(L, st->sizes);
  lua_pushvalue(L, name_idx);
  if (raw) lua_pushlstring(L, raw, raw_len);
  else lua_pushnil(L);
  lua_rawset(L, st->raws);
}

static int sh_yaml_count(sh_yaml_state *st, yaml_mark_t mark, long n) {
  st->nodes += n;
  if (st->nodes > SH_YAML_MAX_NODES)
    return sh_yaml_error(st, mark, "%s", "more than 1000000 nodes once aliases are expanded");
  return 0;
}

static int sh_yaml_in_key(sh_yaml_state *st) {
  if (st->depth == 0) return 0;
  const sh_yaml_frame *f = &st->box->frames[st->depth - 1];
  return f->kind == SH_YAML_MAP && !f->have_key;
}

static int sh_yaml_on_scalar(sh_yaml_state *st, const yaml_event_t *ev) {
  lua_State *L = st->L;
  const char *s = (const char *)ev->data.scalar.value;
  size_t n = ev->data.scalar.length;
  const char *tag = (const char *)ev->data.scalar.tag;
  int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  if (sh_yaml_count(st, ev->start_mark, 1)) return -1;
  int merge = 0;
  if (sh_yaml_in_key(st)) {
    lua_pushlstring(L, s, n);
    merge = plain && !tag && n == 2 && memcmp(s, "<<", 2) == 0;
  } else if (!tag) {
    if (plain) sh_yaml_resolve(L, s, n, SH_YAML_ANY);
    else lua_pushlstring(L, s, n);
  } else if (strncmp(tag, SH_YAML_STD_TAG, strlen(SH_YAML_STD_TAG)) == 0) {
    const char *t = tag + strlen(SH_YAML_STD_TAG);
    int want = strcmp(t, "null") == 0    ? SH_YAML_NULL
               : strcmp(t, "bool") == 0  ? SH_YAML_BOOL
               : strcmp(t, "int") == 0   ? SH_YAML_INT
               : strcmp(t, "float") == 0 ? SH_YAML_FLOAT
                                         : SH_YAML_ANY;
    if (want == SH_YAML_ANY) lua_pushlstring(L, s, n); /* !!str, !!binary, ...: the text */
    else if (sh_yaml_resolve(L, s, n, want) != 0) {
      snprintf(st->err, sizeof st->err, "'%.80s' is not a valid !!%s", s, t);
      st->err_mark = ev->start_mark;
      return -1;
    }
  } else {
    lua_pushlstring(L, s, n);
    const char *name = sh_yaml_local_tag(tag);
    if (name) sh_yaml_cfn(L, name);
  }
  if (ev->data.scalar.anchor) {
    lua_pushstring(L, (const char *)ev->data.scalar.anchor);
    lua_insert(L, -2);
    sh_yaml_anchor(st, lua_gettop(L) - 1, 1, s, n);
    lua_remove(L, -2);
  }
  return sh_yaml_attach(st, ev->start_mark, merge);
}

static int sh_yaml_on_alias(sh_yaml_state *st, const yaml_event_t *ev) {
  lua_State *L = st->L;
  const char *name = (const char *)ev->data.alias.anchor;
  lua_pushstring(L, name);
  if (lua_rawget(L, st->sizes) == LUA_TNIL) return sh_yaml_error(st, ev->start_mark, "unknown alias '*%s'", name);
  long size = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (sh_yaml_count(st, ev->start_mark, size)) return -1;
  /* a key is the text as written ("&x 0x10" then "*x : 1" has the key "0x10", not "16"), as
   * it would be had the scalar been written there; a collection stays an error in attach */
  if (sh_yaml_in_key(st)) {
    lua_pushstring(L, name);
    if (lua_rawget(L, st->raws) != LUA_TNIL) return sh_yaml_attach(st, ev->start_mark, 0);
    lua_pop(L, 1);
  }
  lua_pushstring(L, name);
  lua_rawget(L, st->anchors);
  return sh_yaml_attach(st, ev->start_mark, 0);
}

static int sh_yaml_on_start(sh_yaml_state *st, const yaml_event_t *ev, int kind) {
  lua_State *L = st->L;
  if (sh_yaml_in_key(st)) return sh_yaml_error(st, ev->start_mark, "%s", "mapping keys must be scalars");
  if (st->depth >= SH_YAML_MAX_DEPTH)
    return sh_yaml_error(st, ev->start_mark, "%s", "collections nested deeper than 512");
  if (sh_yaml_count(st, ev->start_mark, 1)) return -1;
  luaL_checkstack(L, 10, "yaml.decode: nesting too deep");
  if (kind == SH_YAML_SEQ) sh_yaml_push_anchor_tag(L, ev->data.sequence_start.anchor, ev->data.sequence_start.tag);
  else sh_yaml_push_anchor_tag(L, ev->data.mapping_start.anchor, ev->data.mapping_start.tag);
  lua_pushnil(L); /* "<<" sources */
  lua_newtable(L);
  sh_yaml_frame *f = &st->box->frames[st->depth++];
  memset(f, 0, sizeof *f);
  f->kind = kind;
  f->idx = lua_gettop(L);
  f->start_nodes = st->nodes - 1;
  return 0;
}

static int sh_yaml_on_end(sh_yaml_state *st, const yaml_event_t *ev) {
  lua_State *L = st->L;
  sh_yaml_frame *f = &st->box->frames[st->depth - 1];
  int idx = f->idx;
  if (f->kind == SH_YAML_MAP && !lua_isnil(L, idx - 1)) sh_yaml_apply_merges(L, idx);
  sh_yaml_mark(L, f->kind == SH_YAML_SEQ ? SH_YAML_ARRAY_MT : SH_YAML_OBJECT_MT);
  const char *name = lua_isnil(L, idx - 2) ? NULL : sh_yaml_local_tag(lua_tostring(L, idx - 2));
  if (name) sh_yaml_cfn(L, name);
  if (!lua_isnil(L, idx - 3)) sh_yaml_anchor(st, idx - 3, st->nodes - f->start_nodes, NULL, 0);
  lua_copy(L, -1, idx - 3);
  lua_settop(L, idx - 3);
  st->depth--;
  return sh_yaml_attach(st, ev->start_mark, 0);
}

/* libyaml's own error: a scanner or parser error has a mark; a reader error (bad UTF-8, a
 * control character) only a byte offset, turned into a line and column here. */
static int sh_yaml_parser_error(lua_State *L, sh_yaml_state *st) {
  const yaml_parser_t *p = &st->box->parser;
  if (p->error == YAML_MEMORY_ERROR) return luaL_error(L, "yaml.decode: out of memory");
  size_t line, column;
  if (p->error == YAML_READER_ERROR) {
    line = 1, column = 1;
    const unsigned char *in = (const unsigned char *)st->input;
    size_t off = p->problem_offset < st->input_len ? p->problem_offset : st->input_len, i = 0;
    if (p->encoding == YAML_UTF16LE_ENCODING || p->encoding == YAML_UTF16BE_ENCODING) {
      /* the offset counts bytes of the UTF-16 input: count its code units instead, a
       * surrogate pair as one character, and the byte order mark as none */
      int le = p->encoding == YAML_UTF16LE_ENCODING;
      if (off >= 2 && ((le && in[0] == 0xFF && in[1] == 0xFE) || (!le && in[0] == 0xFE && in[1] == 0xFF))) i = 2;
      for (; i + 2 <= off; i += 2) {
        unsigned u = le ? (unsigned)in[i] | (unsigned)in[i + 1] << 8 : (unsigned)in[i] << 8 | in[i + 1];
        if (u == '\n') line++, column = 1;
        else if (u < 0xDC00 || u > 0xDFFF) column++;
      }
    } else {
      if (off >= 3 && in[0] == 0xEF && in[1] == 0xBB && in[2] == 0xBF) i = 3; /* the byte order mark */
      for (; i < off; i++) {
        if (in[i] == '\n') line++, column = 1;
        else if ((in[i] & 0xC0) != 0x80) column++;
      }
    }
  } else {
    line = p->problem_mark.line + 1, column = p->problem_mark.column + 1;
  }
  const char *why = p->problem ? p->problem : "error";
  if (p->context) why = lua_pushfstring(L, "%s (%s)", why, p->context);
  return sh_decode_failure(L, (lua_Integer)line, (lua_Integer)column, why);
}

/* decode(s) -> value | nil, "line L, column C: reason" */
static int sh_yaml_decode(lua_State *L) {
  size_t len;
  const char *s = sh_check_lstring(L, 1, "yaml.decode", &len);
  lua_settop(L, 1);

  sh_yaml_box *box = sh_newbox(L, sizeof *box, sh_yaml_box_release); /* at 2 */
  if (!yaml_parser_initialize(&box->parser)) return luaL_error(L, "yaml.decode: out of memory");
  box->parser_live = 1;
  /* the string stays alive at index 1 for the whole parse */
  yaml_parser_set_input_string(&box->parser, (const unsigned char *)s, len);

  sh_yaml_state st;
  memset(&st, 0, sizeof st);
  st.L = L;
  st.box = box;
  st.input = s;
  st.input_len = len;
  lua_pushlightuserdata(L, NULL); /* json.null: the value of an empty stream */
  st.result = lua_gettop(L);
  lua_newtable(L);
  st.anchors = lua_gettop(L);
  lua_newtable(L);
  st.sizes = lua_gettop(L);
  lua_newtable(L);
  st.raws = lua_gettop(L);

  for (;;) {
    if (!yaml_parser_parse(&box->parser, &box->event)) return sh_yaml_parser_error(L, &st);
    box->event_live = 1;
    yaml_event_t *ev = &box->event;
    int rc = 0, done = 0;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
      if (++st.documents > 1)
        rc = sh_yaml_error(&st, ev->start_mark, "%s", "more than one document (yaml.decode reads a single one)");
      break;
    case YAML_SCALAR_EVENT: rc = sh_yaml_on_scalar(&st, ev); break;
    case YAML_ALIAS_EVENT: rc = sh_yaml_on_alias(&st, ev); break;
    case YAML_SEQUENCE_START_EVENT: rc = sh_yaml_on_start(&st, ev, SH_YAML_SEQ); break;
    case YAML_MAPPING_START_EVENT: rc = sh_yaml_on_start(&st, ev, SH_YAML_MAP); break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: rc = sh_yaml_on_end(&st, ev); break;
    case YAML_STREAM_END_EVENT: done = 1; break;
    default: break;
    }
    yaml_event_delete(ev);
    box->event_live = 0;
    if (rc != 0) {
      return sh_decode_failure(L, (lua_Integer)st.err_mark.line + 1, (lua_Integer)st.err_mark.column + 1, st.err);
    }
    if (done) break;
  }
  lua_settop(L, st.result);
  return 1;
}

int luaopen_stagehost_core_yaml(lua_State *L) {
  static const luaL_Reg funcs[] = {{"decode", sh_yaml_decode}, {NULL, NULL}};
  /* whichever of json and yaml loads first creates them; the other finds them */
  luaL_newmetatable(L, SH_YAML_ARRAY_MT);
  luaL_newmetatable(L, SH_YAML_OBJECT_MT);
  lua_pop(L, 2);
  return sh_newmodule(L, funcs, NULL, NULL);
}
