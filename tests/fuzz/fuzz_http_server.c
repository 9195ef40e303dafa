/* libFuzzer target for http.serve's request parsing: arbitrary bytes go through the same code a
 * connection uses (bindings/http_request.c, which has no socket or Lua part), in pieces, with
 * keep-alive and pipelining, under small and default limits.
 * Build: CC=clang cmake -S . -B build-fuzz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bindings/http_request.h"

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_http_server: invariant broken: %s\n", what);
    abort();
  }
}

/* Drive the parser exactly as a connection does. The first byte is how the input arrives
 * (1..255 bytes at a time, 0 for all at once), the second picks the limits. Each complete
 * request is checked and freed; the rest is fed again while keep-alive holds. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t piece = data[0] ? data[0] : size;
  size_t body_limit = (data[1] & 0x0f) ? (size_t)(data[1] & 0x0f) * 16 : 1048576;
  size_t header_limit = (data[1] >> 4) ? (size_t)(data[1] >> 4) * 32 : 65536;
  data += 2;
  size -= 2;
  sh_http_parse_t p;
  sh_http_parse_init(&p, body_limit, header_limit);
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < piece ? size - off : piece;
    size_t used = sh_http_parse_feed(&p, (const char *)data + off, n);
    check(used <= n, "used <= fed");
    off += used;
    if (p.status) {
      check(p.status == 400 || p.status == 413 || p.status == 431 || p.status == 500, "status");
      break;
    }
    if (!p.complete) {
      check(used == n, "all bytes used unless complete or refused");
      continue;
    }
    sh_http_request_t *r = sh_http_parse_take(&p);
    check(r != NULL, "a complete request");
    check(r->body.len <= body_limit, "body within the limit");
    size_t counted = r->url.len;
    for (size_t i = 0; i < r->nheaders; i++) {
      const sh_http_header_t *h = sh_http_header(r, i);
      check(h->name_off + h->name_len <= r->names.len, "name in bounds");
      check(h->value_off + h->value_len <= r->names.len, "value in bounds");
      for (size_t k = 0; k < h->name_len; k++)
        check(!(r->names.data[h->name_off + k] >= 'A' && r->names.data[h->name_off + k] <= 'Z'), "names lower-cased");
      counted += h->name_len + h->value_len;
    }
    check(counted <= header_limit, "headers within the limit");
    check(http_method_str((enum http_method)r->method) != NULL, "method");
    int keep = r->keep_alive;
    sh_http_request_free(r);
    if (!keep) break;
  }
  sh_http_parse_free(&p);
  return 0;
}
