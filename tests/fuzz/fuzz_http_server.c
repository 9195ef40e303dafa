/* libFuzzer target for http.serve's request parsing: arbitrary bytes go through the same glue
 * a connection uses (bindings/http_server.c built with SH_HTTP_SERVER_FUZZ, which leaves out
 * sockets and Lua), in pieces, with keep-alive and pipelining, under small and default limits.
 * Build: CC=clang cmake -S . -B build-fuzz -DSTAGEHOST_FUZZ=ON; ctest -R fuzz. */
#include <stddef.h>
#include <stdint.h>

int sh_http_server_fuzz_one(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return sh_http_server_fuzz_one(data, size);
}
