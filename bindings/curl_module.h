/* What the two libcurl modules (http_client.c, smtp.c) do alike when they are opened.
 * Header-only: each of them is a shared object of its own. */
#ifndef SH_CURL_MODULE_H
#define SH_CURL_MODULE_H

#include <curl/curl.h>
#include <lauxlib.h>

#include "auxlib.h"

/* libcurl's global set-up (once per module: libcurl counts the calls), then the module's table
 * of funcs pushed, with curl_version. Returns 1. */
static inline int sh_curl_newmodule(lua_State *L, const luaL_Reg *funcs) {
  static int initialised;
  if (!initialised) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    initialised = 1;
  }
  sh_newmodule(L, funcs, NULL, NULL);
  sh_setfield_string(L, "curl_version", curl_version());
  return 1;
}

#endif
