/* stagehost.core.markdown: CommonMark to HTML on libcmark (Debian's libcmark). Safe mode only:
 * raw HTML in the text becomes a comment and javascript:, vbscript:, file: and most data: links
 * are dropped, so a checklist written by anyone can be shown on the approval page. */
#include <stdlib.h>
#include <string.h>

#include <cmark.h>
#include <lauxlib.h>

#include "auxlib.h"

/* At most this many bytes of Markdown: a checklist, not a book (the page answers in one go). */
#define SH_MARKDOWN_MAX (4u << 20)

/* html(text [, {smart = bool, hardbreaks = bool}]) -> HTML (invalid UTF-8 replaced by U+FFFD) */
static int sh_markdown_html(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  if (len > SH_MARKDOWN_MAX) return sh_argerror(L, 1, "markdown.html", "text too long (%d bytes, at most %d)", (int)len,
                                                (int)SH_MARKDOWN_MAX);
  /* CMARK_OPT_SAFE is the default since cmark 0.29 (CMARK_OPT_UNSAFE turns it off); it is named
   * here so that an older libcmark is safe too */
  int options = CMARK_OPT_SAFE | CMARK_OPT_VALIDATE_UTF8;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (sh_opt_bool(L, 2, "smart", 0, "markdown.html")) options |= CMARK_OPT_SMART;
    if (sh_opt_bool(L, 2, "hardbreaks", 0, "markdown.html")) options |= CMARK_OPT_HARDBREAKS;
  }
  char *html = cmark_markdown_to_html(text, len, options);
  if (!html) return luaL_error(L, "markdown.html: out of memory");
  lua_pushstring(L, html);
  cmark_get_default_mem_allocator()->free(html);
  return 1;
}

/* version() -> libcmark's version, "0.30.2" */
static int sh_markdown_version(lua_State *L) {
  lua_pushstring(L, cmark_version_string());
  return 1;
}

int luaopen_stagehost_core_markdown(lua_State *L) {
  static const luaL_Reg funcs[] = {{"html", sh_markdown_html}, {"version", sh_markdown_version}, {NULL, NULL}};
  return sh_newmodule(L, funcs, NULL, NULL);
}
