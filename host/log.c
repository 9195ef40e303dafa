#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

typedef struct {
  char *bytes;
  size_t len;
} sh_secret_t;

static struct {
  int level;
  sh_secret_t *secrets; /* longest first, so a secret containing another is masked whole */
  size_t nsecrets;
  unsigned char first_byte[256]; /* quick reject: does any secret start with this byte? */
  int *files;
  size_t nfiles;
} sh_log = {SH_LOG_INFO, NULL, 0, {0}, NULL, 0};

static void sh_write_all(int fd, const char *s, size_t len);

static void sh_stdio_flush_one(int stream);

/* What io.write held back of each stream's unfinished line (see sh_log_stdio_write). */
typedef struct {
  sh_buf_t held;
} sh_stdio_t;

static sh_stdio_t sh_stdio[2]; /* stdout, stderr */
static sh_log_ctx_t *(*sh_log_context)(void);
static int sh_log_echo; /* show children's output on the console at any level (pipeline runs) */
static int sh_log_quiet; /* a live view owns the console */
static int sh_log_ctx_console = 1; /* lines under a context with a file also go to the console */

void sh_log_set_echo(int on) { sh_log_echo = on; }
void sh_log_set_console(int on) { sh_log_quiet = !on; }
void sh_log_set_context_console(int on) { sh_log_ctx_console = on; }
int sh_log_context_console(void) { return sh_log_ctx_console; }

void sh_log_set_context_source(sh_log_ctx_t *(*current)(void)) { sh_log_context = current; }

sh_log_ctx_t *sh_log_ctx_new(const char *prefix, const char *path, int *err) {
  sh_log_ctx_t *c = calloc(1, sizeof *c);
  if (!c) {
    *err = ENOMEM;
    return NULL;
  }
  c->refs = 1;
  c->fd = -1;
  snprintf(c->prefix, sizeof c->prefix, "%s", prefix ? prefix : "");
  if (path) {
    c->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (c->fd < 0) {
      *err = errno;
      free(c);
      return NULL;
    }
  }
  return c;
}

void sh_log_ctx_retain(sh_log_ctx_t *c) {
  if (c) c->refs++;
}

void sh_log_ctx_release(sh_log_ctx_t *c) {
  if (!c || --c->refs > 0) return;
  if (c->fd >= 0) close(c->fd);
  free(c);
}

static const char *const sh_log_names[] = {"debug", "info", "warn", "error", "off"};

int sh_log_parse_level(const char *name) {
  for (int i = 0; i <= SH_LOG_OFF; i++)
    if (strcasecmp(name, sh_log_names[i]) == 0) return i;
  return -1;
}

const char *sh_log_level_name(int level) { return sh_log_names[level]; }
int sh_log_level(void) { return sh_log.level; }
void sh_log_set_level(int level) { sh_log.level = level; }
int sh_log_enabled(int level) { return level >= sh_log.level; }

static int sh_log_is_secret_name(const char *name, size_t len) {
  static const char *const words[] = {"TOKEN", "SECRET", "PASSWORD", "KEY"};
  for (size_t w = 0; w < sizeof words / sizeof *words; w++) {
    size_t wl = strlen(words[w]);
    for (size_t i = 0; i + wl <= len; i++)
      if (strncasecmp(name + i, words[w], wl) == 0) return 1;
  }
  return 0;
}

static void sh_log_at_exit(void) { sh_log_stdio_flush(); }

void sh_log_init(char **env) {
  atexit(sh_log_at_exit); /* os.exit leaves through exit(): what io.write held goes out masked */
  const char *lvl = getenv("STAGEHOST_LOG_LEVEL");
  if (lvl && *lvl) {
    int l = sh_log_parse_level(lvl);
    if (l >= 0) sh_log.level = l;
  }
  for (char **e = env; e && *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq || !sh_log_is_secret_name(*e, (size_t)(eq - *e))) continue;
    sh_mask_add(eq + 1, strlen(eq + 1));
  }
}

void sh_log_shutdown(void) {
  sh_log_stdio_flush(); /* while the secrets are still known */
  sh_buf_free(&sh_stdio[0].held);
  sh_buf_free(&sh_stdio[1].held);
  for (size_t i = 0; i < sh_log.nsecrets; i++) {
    /* wipe before freeing: a core dump should not hold them either */
    memset(sh_log.secrets[i].bytes, 0, sh_log.secrets[i].len);
    free(sh_log.secrets[i].bytes);
  }
  free(sh_log.secrets);
  for (size_t i = 0; i < sh_log.nfiles; i++) close(sh_log.files[i]);
  free(sh_log.files);
  memset(&sh_log, 0, sizeof sh_log);
  sh_log.level = SH_LOG_INFO;
}

/* Under GitHub Actions the runner masks too, but only what it is told: tell it, line by line,
 * bypassing our own masking (which would print the command as "::add-mask::***"). */
static void sh_mask_tell_actions(const char *secret, size_t len) {
  const char *gha = getenv("GITHUB_ACTIONS");
  if (!gha || strcmp(gha, "true") != 0) return;
  fflush(stdout);
  const char *p = secret, *end = secret + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (n > 0) {
      sh_write_all(STDOUT_FILENO, "::add-mask::", 12);
      sh_write_all(STDOUT_FILENO, p, n);
      sh_write_all(STDOUT_FILENO, "\n", 1);
    }
    p += n + 1;
  }
}

static int sh_mask_add_one(const char *secret, size_t len) {
  for (size_t i = 0; i < sh_log.nsecrets; i++)
    if (sh_log.secrets[i].len == len && memcmp(sh_log.secrets[i].bytes, secret, len) == 0)
      return 0;
  sh_mask_tell_actions(secret, len);
  sh_secret_t *grown = realloc(sh_log.secrets, (sh_log.nsecrets + 1) * sizeof *grown);
  if (!grown) return -1;
  sh_log.secrets = grown;
  char *copy = malloc(len);
  if (!copy) return -1;
  memcpy(copy, secret, len);
  size_t at = 0;
  while (at < sh_log.nsecrets && sh_log.secrets[at].len >= len) at++;
  memmove(&sh_log.secrets[at + 1], &sh_log.secrets[at], (sh_log.nsecrets - at) * sizeof *grown);
  sh_log.secrets[at].bytes = copy;
  sh_log.secrets[at].len = len;
  sh_log.nsecrets++;
  sh_log.first_byte[(unsigned char)secret[0]] = 1;
  return 0;
}

/* The secret as a JSON string's inside carries it (cJSON's and SQLite's escapes): a secret with
 * a '"', a '\\' or a control character in it is stored so in the state database and run.json. */
static int sh_mask_json_form(const char *s, size_t len, sh_buf_t *out) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    int n = 0;
    switch (c) {
      case '"': n = snprintf(esc, sizeof esc, "\\\""); break;
      case '\\': n = snprintf(esc, sizeof esc, "\\\\"); break;
      case '\b': n = snprintf(esc, sizeof esc, "\\b"); break;
      case '\f': n = snprintf(esc, sizeof esc, "\\f"); break;
      case '\n': n = snprintf(esc, sizeof esc, "\\n"); break;
      case '\r': n = snprintf(esc, sizeof esc, "\\r"); break;
      case '\t': n = snprintf(esc, sizeof esc, "\\t"); break;
      default:
        if (c < 0x20) n = snprintf(esc, sizeof esc, "\\u%04x", c);
        else esc[0] = (char)c, n = 1;
    }
    if (sh_buf_add(out, esc, (size_t)n) != 0) return -1;
  }
  return 0;
}

/* The secret percent-encoded (RFC 3986: all but unreserved characters), hex in upper or lower
 * case: a password in a URL's userinfo or a query. */
static int sh_mask_url_form(const char *s, size_t len, int lower, sh_buf_t *out) {
  const char *hex = lower ? "0123456789abcdef" : "0123456789ABCDEF";
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    char enc[3] = {(char)c, 0, 0};
    size_t n = 1;
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c))) {
      enc[0] = '%', enc[1] = hex[c >> 4], enc[2] = hex[c & 15];
      n = 3;
    }
    if (sh_buf_add(out, enc, n) != 0) return -1;
  }
  return 0;
}

/* A secret and the forms it takes in JSON and in URLs, each masked wherever it appears. */
int sh_mask_add(const char *secret, size_t len) {
  if (len < SH_MASK_MIN) return -1;
  if (sh_mask_add_one(secret, len) != 0) return -1;
  int rc = 0;
  for (int form = 0; form < 3; form++) {
    sh_buf_t b = {0};
    int bad = form == 0 ? sh_mask_json_form(secret, len, &b) : sh_mask_url_form(secret, len, form == 2, &b);
    if (bad) rc = -1;
    else if (b.len != len || memcmp(b.data, secret, len) != 0) rc |= sh_mask_add_one(b.data, b.len);
    if (b.data) memset(b.data, 0, b.len);
    sh_buf_free(&b);
  }
  return rc;
}

size_t sh_mask_longest(void) { return sh_log.nsecrets ? sh_log.secrets[0].len : 0; }

size_t sh_mask_count(void) { return sh_log.nsecrets; }

const char *sh_mask_secret(size_t i, size_t *len) {
  if (i >= sh_log.nsecrets) return NULL;
  *len = sh_log.secrets[i].len;
  return sh_log.secrets[i].bytes;
}

static size_t sh_mask_match(const char *s, size_t len) {
  if (!sh_log.first_byte[(unsigned char)*s]) return 0;
  for (size_t k = 0; k < sh_log.nsecrets; k++) {
    const sh_secret_t *sec = &sh_log.secrets[k];
    if (sec->len <= len && memcmp(s, sec->bytes, sec->len) == 0) return sec->len;
  }
  return 0;
}

size_t sh_mask_safe_cut(const char *s, size_t len) {
  size_t longest = sh_mask_longest();
  if (longest <= 1 || len < longest) return len;
  size_t cut = len - (longest - 1);
  for (size_t i = cut >= longest ? cut - longest + 1 : 0; i < cut; i++) {
    size_t m = sh_mask_match(s + i, len - i);
    if (m && i + m > cut) cut = i + m; /* never split an occurrence; chains extend the cut */
  }
  return cut;
}

char *sh_mask_apply(const char *s, size_t len, size_t *outlen) {
  /* "***" is shorter than any secret (SH_MASK_MIN), so len + 1 bytes always suffice */
  char *out = malloc(len + 1);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    size_t m = sh_log.nsecrets ? sh_mask_match(s + i, len - i) : 0;
    if (m) {
      memcpy(out + o, "***", 3);
      o += 3;
      i += m;
    } else {
      out[o++] = s[i++];
    }
  }
  out[o] = '\0';
  *outlen = o;
  return out;
}

static void sh_write_all(int fd, const char *s, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, s, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return; /* a closed console must not take the run down */
    }
    s += n;
    len -= (size_t)n;
  }
}

void sh_mask_fwrite(const char *s, size_t len, void *file) {
  size_t n;
  char *m = sh_mask_apply(s, len, &n);
  if (!m) return;
  fwrite(m, 1, n, (FILE *)file);
  free(m);
}

static size_t sh_log_stamp(char *buf, size_t cap) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  return (size_t)snprintf(buf, cap, "%02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                          ts.tv_nsec / 1000000);
}

/* Assemble "stamp head [prefix] body\n", mask it whole and send it to the chosen outputs: the
 * console, every global log file, and the running task's own log file. */
static sh_log_ctx_t *sh_log_current(void) { return sh_log_context ? sh_log_context() : NULL; }

static void sh_log_emit(sh_log_ctx_t *ctx, int to_console, int to_files, const char *head, const char *body,
                        size_t len) {
  char stamp[32], pre[72] = "";
  size_t sl = sh_log_stamp(stamp, sizeof stamp);
  if (ctx && ctx->prefix[0] && head[0] != '[') snprintf(pre, sizeof pre, "[%s] ", ctx->prefix);
  size_t hl = strlen(head), pl = strlen(pre);
  size_t total = sl + hl + pl + len + 1;
  char *line = malloc(total);
  if (!line) return;
  memcpy(line, stamp, sl);
  memcpy(line + sl, head, hl);
  memcpy(line + sl + hl, pre, pl);
  memcpy(line + sl + hl + pl, body, len);
  line[total - 1] = '\n';
  size_t ml;
  char *masked = sh_mask_apply(line, total, &ml);
  free(line);
  if (!masked) return;
  fflush(stdout); /* keep print() and log lines in order on a shared terminal */
  /* a context's file is printed later (a fold under GitHub Actions): not twice */
  if (ctx && ctx->fd >= 0 && !sh_log_ctx_console) to_console = 0;
  if (to_console && !sh_log_quiet) sh_write_all(STDERR_FILENO, masked, ml);
  if (ctx) { /* the body alone, masked, first line only: a live view's "last line" */
    size_t bl;
    char *mb = sh_mask_apply(body, len, &bl);
    if (mb) {
      size_t n = 0;
      while (n < bl && n < sizeof ctx->last - 1 && mb[n] != '\n') n++;
      memcpy(ctx->last, mb, n);
      ctx->last[n] = '\0';
      free(mb);
    }
  }
  if (to_files) {
    for (size_t i = 0; i < sh_log.nfiles; i++) sh_write_all(sh_log.files[i], masked, ml);
    if (ctx && ctx->fd >= 0) sh_write_all(ctx->fd, masked, ml);
  }
  free(masked);
}

static int sh_log_has_task_file(void) {
  sh_log_ctx_t *ctx = sh_log_current();
  return ctx && ctx->fd >= 0;
}

void sh_log_write(int level, const char *msg, size_t len) {
  /* files get info and above always (a stage log is complete whatever the console shows), and
   * debug lines only when debugging */
  int console = sh_log_enabled(level), files = level >= SH_LOG_INFO || console;
  if (!console && !(files && (sh_log.nfiles > 0 || sh_log_has_task_file()))) return;
  static const char *const heads[] = {"DEBUG ", "INFO  ", "WARN  ", "ERROR "};
  sh_log_emit(sh_log_current(), console, files, heads[level], msg, len);
}

void sh_log_printf(int level, const char *fmt, ...) {
  if (!sh_log_enabled(level) && (level < SH_LOG_INFO || (sh_log.nfiles == 0 && !sh_log_has_task_file()))) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  sh_log_write(level, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void sh_log_output(sh_log_ctx_t *ctx, const char *label, const char *line, size_t len, int quiet) {
  int console = !quiet && (sh_log_enabled(SH_LOG_DEBUG) || (sh_log_echo && sh_log.level < SH_LOG_OFF));
  if (!console && sh_log.nfiles == 0 && !(ctx && ctx->fd >= 0)) return;
  char head[160] = ""; /* without a label, sh_log_emit adds the "[prefix] " itself */
  if (label && label[0]) {
    if (ctx && ctx->prefix[0]) snprintf(head, sizeof head, "[%s] %s| ", ctx->prefix, label);
    else snprintf(head, sizeof head, "%s| ", label);
  }
  sh_log_emit(ctx, console, 1, head, line, len);
}

void sh_log_print(const char *s, size_t len) {
  if (sh_stdio[0].held.len > 0) sh_stdio_flush_one(0); /* io.write's unfinished line comes first */
  sh_log_ctx_t *ctx = sh_log_current();
  if (!ctx) {
    sh_mask_fwrite(s, len, stdout);
    return;
  }
  /* masked whole before it is cut into lines, so a secret that spans lines is still caught */
  size_t ml;
  char *m = sh_mask_apply(s, len, &ml);
  if (!m) return;
  if (ml > 0 && m[ml - 1] == '\n') ml--; /* print's own newline ends the last line */
  for (const char *p = m, *end = m + ml;;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    sh_log_output(ctx, NULL, p, nl ? (size_t)(nl - p) : (size_t)(end - p), 0);
    if (!nl) break;
    p = nl + 1;
  }
  free(m);
}

/* ---- io.write on stdout and stderr: masked a line at a time ----
 * A secret written in two pieces ("tok", "en123\n") is only recognisable once both are there, so
 * each stream holds its unfinished line until a newline, a flush, the flush timer (a prompt
 * without a newline: bindings/log.c arms it) or the exit. The text goes to the stream itself,
 * inside a stage too: io.write is how the engine prints a stage's log in its fold. */
#define SH_STDIO_HOLD_MAX (64 * 1024) /* past this an unfinished line goes out at a safe cut */

/* Send text (complete lines, or a flushed piece) masked to its stream. */
static void sh_stdio_emit(int stream, const char *s, size_t len) {
  size_t ml;
  char *m = sh_mask_apply(s, len, &ml);
  if (!m) return;
  if (stream == 0) {
    fwrite(m, 1, ml, stdout);
    fflush(stdout);
  } else {
    fflush(stdout);
    sh_write_all(STDERR_FILENO, m, ml);
  }
  free(m);
}

static void sh_stdio_flush_one(int stream) {
  sh_stdio_t *st = &sh_stdio[stream];
  if (st->held.len > 0) sh_stdio_emit(stream, st->held.data, st->held.len);
  st->held.len = 0;
  if (st->held.cap > SH_STDIO_HOLD_MAX) sh_buf_free(&st->held);
}

void sh_log_stdio_flush(void) {
  sh_stdio_flush_one(0);
  sh_stdio_flush_one(1);
}

/* Where held text may be cut when no more is coming for now: before a tail that is the start of
 * a secret (it may be finished by the next write), else at the end. */
static size_t sh_mask_prefix_cut(const char *s, size_t len) {
  size_t longest = sh_mask_longest();
  for (size_t i = len > longest ? len - longest + 1 : 0; i < len; i++) {
    if (!sh_log.first_byte[(unsigned char)s[i]]) continue;
    for (size_t k = 0; k < sh_log.nsecrets; k++)
      if (sh_log.secrets[k].len > len - i && memcmp(s + i, sh_log.secrets[k].bytes, len - i) == 0) return i;
  }
  return len;
}

void sh_log_stdio_flush_ready(void) {
  for (int stream = 0; stream < 2; stream++) {
    sh_stdio_t *st = &sh_stdio[stream];
    size_t out = st->held.len ? sh_mask_prefix_cut(st->held.data, st->held.len) : 0;
    if (out == 0) continue;
    sh_stdio_emit(stream, st->held.data, out);
    memmove(st->held.data, st->held.data + out, st->held.len - out);
    st->held.len -= out;
  }
}

int sh_log_stdio_held(void) { return sh_stdio[0].held.len > 0 || sh_stdio[1].held.len > 0; }

void sh_log_stdio_write(int stream, const char *s, size_t len) {
  sh_stdio_t *st = &sh_stdio[stream];
  if (sh_buf_add(&st->held, s, len) != 0) { /* out of memory: what is held, then this */
    sh_stdio_flush_one(stream);
    sh_stdio_emit(stream, s, len);
    return;
  }
  const char *nl = NULL;
  for (size_t i = st->held.len; i > st->held.len - len; i--)
    if (st->held.data[i - 1] == '\n') {
      nl = st->held.data + i - 1;
      break;
    }
  size_t out = nl ? (size_t)(nl - st->held.data) + 1 : 0;
  if (!nl && st->held.len > SH_STDIO_HOLD_MAX) out = sh_mask_safe_cut(st->held.data, st->held.len);
  if (out == 0) return;
  sh_stdio_emit(stream, st->held.data, out);
  memmove(st->held.data, st->held.data + out, st->held.len - out);
  st->held.len -= out;
}

int sh_log_add_file(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int *grown = realloc(sh_log.files, (sh_log.nfiles + 1) * sizeof *grown);
  if (!grown) {
    close(fd);
    return -ENOMEM;
  }
  sh_log.files = grown;
  sh_log.files[sh_log.nfiles++] = fd;
  return 0;
}
