/* Secret masking: whole, overlapping and adjacent occurrences, and safe cuts of long lines. */
#include <string.h>

#include "check.h"
#include "host/log.h"

static void expect_masked(const char *in, const char *want) {
  size_t n;
  char *out = sh_mask_apply(in, strlen(in), &n);
  CHECK(out != NULL);
  if (strcmp(out, want) != 0) {
    fprintf(stderr, "mask(%s) = %s, want %s\n", in, out, want);
    exit(1);
  }
  CHECK_EQ_INT(n, strlen(want));
  free(out);
}

int main(void) {
  char *env[] = {"GITHUB_TOKEN=ghp_abcdef123456", "API_KEY=k3y-value", "PATH=/usr/bin", "SHORT_TOKEN=abc", NULL};
  sh_log_init(env);
  expect_masked("token ghp_abcdef123456 here", "token *** here");
  expect_masked("ghp_abcdef123456ghp_abcdef123456", "******");
  expect_masked("k3y-valuek3y-value!", "******!");
  expect_masked("/usr/bin stays", "/usr/bin stays");             /* PATH is not a secret */
  expect_masked("abc is too short to mask", "abc is too short to mask");
  CHECK(sh_mask_add("xy", 2) != 0);                               /* refused: shorter than SH_MASK_MIN */

  /* a secret that contains another is masked whole, not as *** plus a tail */
  CHECK(sh_mask_add("pass", 4) == 0);
  CHECK(sh_mask_add("password-long", 13) == 0);
  expect_masked("use password-long now", "use *** now");
  expect_masked("pass", "***");

  /* safe cut: never inside an occurrence; the last (longest - 1) bytes stay back */
  size_t longest = sh_mask_longest();
  CHECK_EQ_INT(longest, strlen("ghp_abcdef123456"));
  char line[100];
  memset(line, 'x', sizeof line);
  memcpy(line + 80, "ghp_abcdef123456", 16); /* occupies 80..95 */
  size_t cut = sh_mask_safe_cut(line, sizeof line);
  CHECK_EQ_INT(cut, 96); /* the plain cut (85) would split it: the cut moves past it */
  /* no secret: exactly the last (longest - 1) bytes stay back */
  memset(line, 'x', sizeof line);
  CHECK_EQ_INT(sh_mask_safe_cut(line, sizeof line), sizeof line - (longest - 1));
  /* a secret that ends before the plain cut leaves it where it is */
  memcpy(line + 10, "ghp_abcdef123456", 16);
  CHECK_EQ_INT(sh_mask_safe_cut(line, sizeof line), sizeof line - (longest - 1));

  memset(line, 'x', sizeof line);
  memcpy(line + 75, "ghp_abcdef123456", 16); /* occupies 75..90: straddles the plain cut at 85 */
  cut = sh_mask_safe_cut(line, sizeof line);
  CHECK_EQ_INT(cut, 91);

  sh_log_shutdown();
  puts("test_mask: ok");
  return 0;
}
