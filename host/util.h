/* Small helpers the host and every binding share, header-only so that the Lua C modules and the
 * fuzz targets get them without linking anything: the struct around an embedded member, and one
 * growable byte buffer. Neither touches Lua, so neither can raise: they are safe to use while C
 * memory is held, in libuv and libcurl callbacks, and on libuv's thread pool. */
#ifndef SH_UTIL_H
#define SH_UTIL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The struct of type `type` whose member `field` is at ptr (a wait, a timer or a uv request
 * embedded in a binding's own record). */
#define SH_CONTAINER(ptr, type, field) ((type *)((char *)(ptr) - offsetof(type, field)))

/* A growable buffer on malloc. Zero-initialised it is empty and owns nothing; data stays NULL
 * until the first byte, so readers write `b.data ? b.data : ""`. It only grows, doubling, and
 * never past `limit` when that is set (a bounded capture), unless one request needs more. */
typedef struct {
  char *data;
  size_t len, cap;
  size_t limit; /* 0, or a capacity it does not grow past */
} sh_buf_t;

/* Room for n more bytes after len. 0, or -1 when out of memory (then b is unchanged). */
static inline int sh_buf_reserve(sh_buf_t *b, size_t n) {
  if (n > (size_t)-1 - b->len) return -1;
  size_t need = b->len + n;
  if (need <= b->cap) return 0;
  size_t cap = b->cap > (size_t)-1 / 2 ? need : b->cap * 2;
  if (cap < 256) cap = 256;
  if (cap < need) cap = need;
  if (b->limit && cap > b->limit) cap = need > b->limit ? need : b->limit;
  char *grown = realloc(b->data, cap);
  if (!grown) return -1;
  b->data = grown;
  b->cap = cap;
  return 0;
}

/* Append n bytes. 0, or -1 when out of memory (then nothing was appended). */
static inline int sh_buf_add(sh_buf_t *b, const void *s, size_t n) {
  if (n == 0) return 0;
  if (sh_buf_reserve(b, n) != 0) return -1;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  return 0;
}

/* Free the memory; b is empty again (its limit stays). */
static inline void sh_buf_free(sh_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

#endif
