/* The bindings' auxiliary library, as lauxlib is Lua's: misuse messages in one form, the
 * readers of option tables, failure results, and metatables; every binding uses it.
 *
 * Misuse raises in luaL_argerror's form, naming the function as the caller wrote it:
 *   bad argument #1 to 'proc.run' (option 'quiet' must be a boolean, got number)
 * `who` is that name ("proc.run", "process:write"); `arg` is the argument's stack index, and for
 * a method (a name with ':') self is not counted, as luaL_argerror does. A failed operation in
 * the world is not misuse: it returns nil, message, code (STYLE.md, "Errors: two channels").
 *
 * Every function here may raise: call them before the binding holds any C memory. */
#ifndef SH_AUXLIB_H
#define SH_AUXLIB_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

/* Raise "bad argument #arg to 'who' (message)"; fmt is lua_pushfstring's. Never returns. */
int sh_argerror(lua_State *L, int arg, const char *who, const char *fmt, ...);

/* The string at arg (its length in *len); anything else, a number too (unlike
 * luaL_checklstring), raises "... (string expected, got <type>)". */
const char *sh_check_lstring(lua_State *L, int arg, const char *who, size_t *len);

/* Raise "bad argument #arg to 'who' (option 'key' message)", arg being the options table's. */
int sh_opt_error(lua_State *L, int arg, const char *who, const char *key, const char *fmt, ...);

/* Raise "... (option 'key' must be <expected>, got <type of the value at the top>)". */
int sh_opt_typeerror(lua_State *L, int arg, const char *who, const char *key, const char *expected);

/* Raise "... (option 'key' must be <what>, got <its value>)", for a value of the right type out
 * of range; the options table is at stack index idx (also its argument number). */
int sh_opt_rangeerror(lua_State *L, int idx, const char *key, const char *what, const char *who);

/* Readers of opts[key], the options table being at stack index idx (also its argument number,
 * as above). nil or absent gives the default; any other type raises. None leaves anything on the
 * stack: a string returned stays alive as long as the options table holds it. */
const char *sh_opt_lstring(lua_State *L, int idx, const char *key, size_t *len, const char *who);
const char *sh_opt_string(lua_State *L, int idx, const char *key, const char *who); /* NULL if absent */
double sh_opt_number(lua_State *L, int idx, const char *key, double def, const char *who);
int sh_opt_bool(lua_State *L, int idx, const char *key, int def, const char *who);

/* Push opts[key] when it is a table (-> 1) or nothing when it is nil (-> 0); raises otherwise. */
int sh_opt_table(lua_State *L, int idx, const char *key, const char *who);

/* Raise "... (unknown option 'x')" for a key of the options table not in allowed (NULL-ended):
 * for a binding whose every option is its own, so a misspelt one is not silently ignored. */
void sh_opt_unknown_keys(lua_State *L, int idx, const char *const allowed[], const char *who);

/* The other channel, as luaL_fileresult is Lua's: a failed operation in the world returns nil, a
 * message, and a code (an errno name such as "ECONNRESET"). Pushes the three; returns 3. */
int sh_failure(lua_State *L, const char *code, const char *fmt, ...);

/* A decoder's failure on data from the world (json, xml and yaml decode): pushes nil and
 * "line L, column C: why"; returns 2. */
int sh_decode_failure(lua_State *L, lua_Integer line, lua_Integer column, const char *why);

/* A libuv status as a result: true (-> 1) for rc >= 0, else sh_failure with "who: uv's message"
 * and uv's error name. */
int sh_uv_result(lua_State *L, int rc, const char *who);

/* ---- error objects: one model for C and Lua ----
 *
 * An error object is a table {kind = , code = , message = , ...} whose metatable is the one
 * registered as SH_ERROR_MT ("stagehost.error", __name set; __tostring returns message). The
 * scheduler's cancellations ({kind = "cancelled"|"timeout", reason, scope}), http.request's
 * transport failures ({kind = "transport", code = "ECONNREFUSED", url, method, reason}) and
 * stdlib/stagehost/errors.lua's errors.new all make theirs here, so one test (errors.is)
 * recognises every one. Misuse is not an error object: it raises a string (sh_argerror). */
#define SH_ERROR_MT "stagehost.error"

/* Push the shared metatable of error objects, creating it on first use. */
void sh_error_metatable(lua_State *L);

/* Push a new error object {kind, code, message}; code may be NULL (absent). The caller sets
 * any further fields on the table left at the top. */
void sh_error_push(lua_State *L, const char *kind, const char *code, const char *message);

/* Is the value at idx an error object (the shared metatable) and, unless kind is NULL, of that
 * kind? Reads raw fields only: it never calls a metamethod. */
int sh_error_is(lua_State *L, int idx, const char *kind);

/* The stagehost.core.errors module: new(kind, message [, fields]), argument_message(n, fname,
 * message) (the one misuse text, as sh_argerror makes it) and Error, the shared metatable. */
int sh_errors_open(lua_State *L);

/* ---- classes and modules ---- */

/* Create the metatable `name` once (luaL_newmetatable, so __name is set) from a class's
 * functions, listed together: those named "__..." are its metamethods, the others its methods,
 * kept as __index, or as the field "methods" when the class brings its own __index function
 * (which looks there after its own fields). A handle that closes and is collected the same way
 * lists one function as both "__gc" and "__close". Leaves the stack as it was. */
void sh_metatable(lua_State *L, const char *name, const luaL_Reg *class_funcs);

/* The end of a class's own __index function, once its fields are looked at: pushes the method
 * named by the key (a string, at 2) of the object at 1, or nil; returns 1. */
int sh_index_methods(lua_State *L);

/* What a module's luaopen_ returns: the metatable of its class made first (as sh_metatable;
 * none when class_name is NULL), then a new table of the module's funcs pushed. Returns 1. */
int sh_newmodule(lua_State *L, const luaL_Reg *funcs, const char *class_name, const luaL_Reg *class_funcs);

/* Set t[key] of the table at the top of the stack (as lua_setfield, so a __newindex runs): one
 * line a field for the builders of result tables. The value of sh_setfield_value is the one at
 * stack index idx. */
void sh_setfield_string(lua_State *L, const char *key, const char *value);
void sh_setfield_lstring(lua_State *L, const char *key, const char *value, size_t len);
void sh_setfield_integer(lua_State *L, const char *key, lua_Integer value);
void sh_setfield_number(lua_State *L, const char *key, lua_Number value);
void sh_setfield_boolean(lua_State *L, const char *key, int value);
void sh_setfield_value(lua_State *L, const char *key, int idx);

/* A C resource a binding holds while it builds Lua values (a parser, a decoded tree): building
 * may raise, and the resource must go on that way out too. Pushes a box, a to-be-closed
 * userdata of size zeroed bytes, and returns them: the binding keeps its resource there, and
 * release(data) runs once, when the box is closed or collected (so it must accept the zeroed
 * state of a resource not made yet). */
void *sh_newbox(lua_State *L, size_t size, void (*release)(void *data));

/* Has the value at idx the metatable registered as name? (luaL_testudata, for any value) */
int sh_has_metatable(lua_State *L, int idx, const char *name);

/* Push the path a libuv function fills in (uv_cwd, uv_exepath); raises "who: reason" when it
 * fails. */
int sh_push_uv_path(lua_State *L, int (*fn)(char *buf, size_t *size), const char *who);

#endif
