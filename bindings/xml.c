/* stagehost.core.xml: XML documents (AWS query API responses, S3 listings) to Lua tables, on
 * expat. decode(s) -> root | nil, "line L, column C: reason"; escape(s) -> s.
 *
 * An element is { name = "Tag", attrs = { k = v }, text = "direct character data", [i] = child }.
 * Names are kept as written (no namespace processing): AWS responses put one default namespace
 * on the root, and callers want "DescribeStacksResult", not a URI-qualified name.
 *
 * The input is data from the world: malformed XML is a nil + message, never a raise. Any
 * DOCTYPE is refused outright: no AWS response has one, and a DTD is how a document changes
 * what it means behind the parser's back (billion laughs, external entities, an external subset
 * whose entities expat never reads, ATTLIST defaults that add attributes). Nesting is bounded.
 *
 * A Lua error must never unwind through expat: it would leave memory expat holds in its own
 * locals (the bindings of an empty element, ...) unreachable, and XML_ParserFree could not
 * free it. So each handler does its Lua work in a protected call, and a failure there (out
 * of memory) stops the parser; the error is raised again once the parser is freed. The parser
 * itself lives in a to-be-closed userdata, freed on every exit. */
#include <stdio.h>
#include <string.h>

#include <expat.h>
#include <lauxlib.h>

#include "auxlib.h"

#define SH_XML_MAX_DEPTH 512
/* XML_Parse takes an int length */
#define SH_XML_CHUNK (1 << 30)

/* expat's parser, kept in a box (bindings/auxlib.h) for the parse: a handler's Lua part may
 * raise, and the parser must be freed then too */
typedef struct {
  XML_Parser parser;
} sh_xml_box;

/* The state a parse shares with its handlers. The open elements live in a Lua table, two
 * slots each: [2d - 1] the element, [2d] the table of its text pieces (joined when it closes,
 * so long text arriving in many chunks is not copied over and over); [0] the root, once done.
 * The current event's data waits in cur_* for the protected call that uses it. */
typedef struct {
  lua_State *L;
  XML_Parser parser;
  int stack;   /* index of the element table */
  int errslot; /* index of a Lua error raised by a handler's protected call */
  int depth;
  int have_root;
  int failed; /* a protected call failed: the error is in errslot */
  char err[160]; /* our own reason to stop ("" when expat's error stands) */
  unsigned long line, column;
  const XML_Char *cur_name;
  const XML_Char **cur_attrs;
  const XML_Char *cur_text;
  int cur_len;
} sh_xml_state;

static void sh_xml_box_release(void *data) {
  sh_xml_box *box = data;
  if (box->parser) XML_ParserFree(box->parser);
}

/* Stop the parse with our own reason, at the position of the current event */
static void sh_xml_stop(sh_xml_state *st, const char *why) {
  if (st->err[0]) return;
  snprintf(st->err, sizeof st->err, "%s", why);
  st->line = (unsigned long)XML_GetCurrentLineNumber(st->parser);
  st->column = (unsigned long)XML_GetCurrentColumnNumber(st->parser) + 1;
  XML_StopParser(st->parser, XML_FALSE);
}

/* ---- the protected halves of the handlers: fn(state, stack) ---- */

static int sh_xml_p_start(lua_State *L) {
  const sh_xml_state *st = lua_touserdata(L, 1);
  lua_createtable(L, 0, 3);
  sh_setfield_string(L, "name", st->cur_name);
  lua_newtable(L);
  for (int i = 0; st->cur_attrs[i]; i += 2) sh_setfield_string(L, st->cur_attrs[i], st->cur_attrs[i + 1]);
  lua_setfield(L, -2, "attrs");
  lua_rawseti(L, 2, 2 * (lua_Integer)st->depth + 1);
  lua_newtable(L);
  lua_rawseti(L, 2, 2 * (lua_Integer)st->depth + 2);
  return 0;
}

static int sh_xml_p_text(lua_State *L) {
  const sh_xml_state *st = lua_touserdata(L, 1);
  lua_rawgeti(L, 2, 2 * (lua_Integer)st->depth);
  lua_pushlstring(L, st->cur_text, (size_t)st->cur_len);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

static int sh_xml_p_end(lua_State *L) {
  const sh_xml_state *st = lua_touserdata(L, 1);
  lua_Integer d = st->depth;
  lua_rawgeti(L, 2, 2 * d - 1);
  int elem = lua_gettop(L);
  lua_rawgeti(L, 2, 2 * d);
  int pieces = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, pieces);
  if (n == 1) {
    lua_rawgeti(L, pieces, 1);
  } else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, pieces, i);
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
  }
  lua_setfield(L, elem, "text");
  if (d > 1) {
    lua_rawgeti(L, 2, 2 * d - 3);
    lua_pushvalue(L, elem);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  } else {
    lua_pushvalue(L, elem);
    lua_rawseti(L, 2, 0);
  }
  lua_pushnil(L);
  lua_rawseti(L, 2, 2 * d);
  lua_pushnil(L);
  lua_rawseti(L, 2, 2 * d - 1);
  return 0;
}

/* Run fn(state, stack) protected; -> 0, or -1 with the parser stopped */
static int sh_xml_call(sh_xml_state *st, lua_CFunction fn) {
  lua_State *L = st->L;
  /* neither pushing nor checking raises: lua_checkstack answers 0 when it cannot grow */
  if (lua_checkstack(L, 3)) {
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, st);
    lua_pushvalue(L, st->stack);
    if (lua_pcall(L, 2, 0, 0) == LUA_OK) return 0;
    lua_replace(L, st->errslot);
  }
  st->failed = 1;
  XML_StopParser(st->parser, XML_FALSE);
  return -1;
}

static void XMLCALL sh_xml_start(void *ud, const XML_Char *name, const XML_Char **attrs) {
  sh_xml_state *st = ud;
  if (st->err[0] || st->failed) return;
  if (st->depth >= SH_XML_MAX_DEPTH) {
    sh_xml_stop(st, "elements nested deeper than 512");
    return;
  }
  st->cur_name = name;
  st->cur_attrs = attrs;
  if (sh_xml_call(st, sh_xml_p_start) == 0) st->depth++;
}

static void XMLCALL sh_xml_text(void *ud, const XML_Char *s, int len) {
  sh_xml_state *st = ud;
  if (st->err[0] || st->failed || st->depth == 0) return;
  st->cur_text = s;
  st->cur_len = len;
  sh_xml_call(st, sh_xml_p_text);
}

static void XMLCALL sh_xml_end(void *ud, const XML_Char *name) {
  sh_xml_state *st = ud;
  (void)name; /* expat has checked it matches the start tag */
  if (st->err[0] || st->failed || st->depth == 0) return;
  if (sh_xml_call(st, sh_xml_p_end) != 0) return;
  if (--st->depth == 0) st->have_root = 1;
}

/* A DOCTYPE of any kind: refused at its start, before expat reads a declaration of it. */
static void XMLCALL sh_xml_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                                   int has_internal_subset) {
  (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
  sh_xml_stop(ud, "DOCTYPE is not allowed");
}

/* The two handlers below cannot fire once every DOCTYPE is refused; they stay as a second line
 * should that refusal ever be loosened. Any entity declaration: refused. */
static void XMLCALL sh_xml_entity_decl(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                                       int value_len, const XML_Char *base, const XML_Char *system_id,
                                       const XML_Char *public_id, const XML_Char *notation) {
  (void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)system_id, (void)public_id,
      (void)notation;
  sh_xml_stop(ud, "entity declarations are not allowed");
}

/* A reference expat could not resolve because the DOCTYPE names an external subset it does not
 * read: the text would silently lose it, so it is an error like any undefined entity. */
static void XMLCALL sh_xml_skipped(void *ud, const XML_Char *name, int is_param) {
  (void)is_param;
  char why[128];
  snprintf(why, sizeof why, "undefined entity '%.80s'", name);
  sh_xml_stop(ud, why);
}

/* decode(s) -> root element | nil, "line L, column C: reason" */
static int sh_xml_decode(lua_State *L) {
  size_t len;
  const char *s = sh_check_lstring(L, 1, "xml.decode", &len);
  lua_settop(L, 1);

  sh_xml_box *box = sh_newbox(L, sizeof *box, sh_xml_box_release); /* at 2 */
  /* NULL encoding: the document's declaration decides, UTF-8 otherwise; names stay unsplit */
  box->parser = XML_ParserCreate(NULL);
  if (!box->parser) return luaL_error(L, "xml.decode: out of memory");

  sh_xml_state st;
  memset(&st, 0, sizeof st);
  st.L = L;
  st.parser = box->parser;
  lua_newtable(L);
  st.stack = lua_gettop(L);
  lua_pushnil(L);
  st.errslot = lua_gettop(L);
  XML_SetUserData(box->parser, &st);
  XML_SetElementHandler(box->parser, sh_xml_start, sh_xml_end);
  XML_SetCharacterDataHandler(box->parser, sh_xml_text);
  XML_SetStartDoctypeDeclHandler(box->parser, sh_xml_doctype);
  XML_SetEntityDeclHandler(box->parser, sh_xml_entity_decl);
  XML_SetSkippedEntityHandler(box->parser, sh_xml_skipped);
  XML_SetParamEntityParsing(box->parser, XML_PARAM_ENTITY_PARSING_NEVER);

  enum XML_Status status = XML_STATUS_OK;
  size_t off = 0;
  do {
    size_t n = len - off < SH_XML_CHUNK ? len - off : SH_XML_CHUNK;
    int last = off + n == len;
    status = XML_Parse(box->parser, s + off, (int)n, last);
    off += n;
  } while (status == XML_STATUS_OK && off < len);

  if (st.failed) {
    /* free the parser first: the error may not unwind through anything holding it */
    XML_ParserFree(box->parser);
    box->parser = NULL;
    if (lua_isnil(L, st.errslot)) return luaL_error(L, "xml.decode: out of memory");
    lua_pushvalue(L, st.errslot);
    return lua_error(L);
  }
  if (st.err[0]) return sh_decode_failure(L, st.line, st.column, st.err);
  if (status != XML_STATUS_OK)
    return sh_decode_failure(L, (lua_Integer)XML_GetCurrentLineNumber(box->parser),
                             (lua_Integer)XML_GetCurrentColumnNumber(box->parser) + 1,
                             XML_ErrorString(XML_GetErrorCode(box->parser)));
  if (!st.have_root) return sh_decode_failure(L, 1, 1, "no element found");
  lua_rawgeti(L, st.stack, 0);
  return 1; /* closing the box frees the parser */
}

/* The UTF-8 sequence at s[i..len): -> its length with *cp set, or 0 when it is not valid UTF-8
 * (a stray continuation byte, a truncated or overlong sequence, a surrogate, beyond U+10FFFF). */
static size_t sh_xml_utf8(const unsigned char *s, size_t len, size_t i, unsigned long *cp) {
  unsigned char c = s[i];
  size_t n;
  unsigned long v, min;
  if (c < 0x80) return *cp = c, 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2, v = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, v = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, v = c & 0x07, min = 0x10000;
  else return 0;
  if (len - i < n) return 0;
  for (size_t k = 1; k < n; k++) {
    if ((s[i + k] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i + k] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

/* escape(s): for text and attribute values alike. Tab, line feed and carriage return become
 * character references too, so a value survives an attribute's white-space normalisation and
 * a "\r\n" is not turned into "\n". What XML 1.0 cannot carry at all (NUL, the other C0
 * controls, U+FFFE, U+FFFF, bytes that are not UTF-8) is an error: no escape exists for it, and
 * writing it anyway gives a document every parser refuses, AWS's included. */
static int sh_xml_escape(lua_State *L) {
  int ty = lua_type(L, 1);
  if (ty != LUA_TSTRING && ty != LUA_TNUMBER)
    return sh_argerror(L, 1, "xml.escape", "string expected, got %s", luaL_typename(L, 1));
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  const unsigned char *u = (const unsigned char *)s;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len;) {
    unsigned long cp;
    size_t n = sh_xml_utf8(u, len, i, &cp);
    if (n == 0) {
      char hex[3];
      snprintf(hex, sizeof hex, "%02X", u[i]);
      return sh_argerror(L, 1, "xml.escape", "invalid UTF-8 at position %I, byte 0x%s", (lua_Integer)i + 1, hex);
    }
    if (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') {
      char hex[3];
      snprintf(hex, sizeof hex, "%02X", (unsigned)cp);
      return sh_argerror(L, 1, "xml.escape", "byte 0x%s at position %I is not allowed in XML", hex, (lua_Integer)i + 1);
    }
    if (cp == 0xFFFE || cp == 0xFFFF)
      return sh_argerror(L, 1, "xml.escape", "character U+%s at position %I is not allowed in XML",
                         cp == 0xFFFE ? "FFFE" : "FFFF", (lua_Integer)i + 1);
    switch (cp) {
    case '&': luaL_addstring(&b, "&amp;"); break;
    case '<': luaL_addstring(&b, "&lt;"); break;
    case '>': luaL_addstring(&b, "&gt;"); break;
    case '"': luaL_addstring(&b, "&quot;"); break;
    case '\'': luaL_addstring(&b, "&apos;"); break;
    case '\t': luaL_addstring(&b, "&#9;"); break;
    case '\n': luaL_addstring(&b, "&#10;"); break;
    case '\r': luaL_addstring(&b, "&#13;"); break;
    default: luaL_addlstring(&b, s + i, n);
    }
    i += n;
  }
  luaL_pushresult(&b);
  return 1;
}

int luaopen_stagehost_core_xml(lua_State *L) {
  static const luaL_Reg funcs[] = {{"decode", sh_xml_decode}, {"escape", sh_xml_escape}, {NULL, NULL}};
  return sh_newmodule(L, funcs, NULL, NULL);
}
