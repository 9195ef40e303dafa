/* Logging and secret masking. Every byte stagehost prints or stores as a log passes through
 * sh_mask_* first, so a secret registered with log.mask (or found in the environment) never
 * reaches a console, a log file or a report. */
#ifndef SH_LOG_H
#define SH_LOG_H

#include <stddef.h>

enum { SH_LOG_DEBUG, SH_LOG_INFO, SH_LOG_WARN, SH_LOG_ERROR, SH_LOG_OFF };

/* Reads STAGEHOST_LOG_LEVEL and masks the values of environment variables whose names contain
 * TOKEN, SECRET, PASSWORD or KEY. */
void sh_log_init(char **environ_);
void sh_log_shutdown(void);
int sh_log_level(void);
void sh_log_set_level(int level);
int sh_log_parse_level(const char *name); /* -1 when unknown */
const char *sh_log_level_name(int level);
int sh_log_enabled(int level);

/* Write one message (masked) with a timestamp and level to stderr and to every file sink. */
void sh_log_write(int level, const char *msg, size_t len);
void sh_log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct sh_log_ctx;
/* A line of a child's output: always to the log files (ctx's included: the context of the task
 * that started the child), to the console at debug level or with echo on, unless quiet (the
 * child was started with quiet = true). label "" or NULL: no "label| " head (print's lines). */
void sh_log_output(struct sh_log_ctx *ctx, const char *label, const char *line, size_t len, int quiet);
/* print()'s text: under the running task's log context, each line as that task's output (to
 * its file, to the console as "[prefix] line" when output is echoed); without one, masked to
 * stdout as before. */
void sh_log_print(const char *s, size_t len);

/* Show children's output on the console whatever the level (a pipeline run does). */
void sh_log_set_echo(int on);
/* Keep the console quiet (a live view owns the screen); files still get everything. */
void sh_log_set_console(int on);
/* Off: lines logged under a context that has a file (log.bind with a path) stay off the
 * console and go to that file only; lines without one still print. Under GitHub Actions the
 * engine prints each stage's file in a fold, so each line appears once. On by default. */
void sh_log_set_context_console(int on);
int sh_log_context_console(void);

/* Secrets. Shorter than SH_MASK_MIN bytes are refused: masking "1" would mangle every line. */
#define SH_MASK_MIN 4
int sh_mask_add(const char *secret, size_t len);
size_t sh_mask_longest(void);
/* The registered secrets, longest first: sh_mask_secret(i, &len) for i < sh_mask_count(). */
size_t sh_mask_count(void);
const char *sh_mask_secret(size_t i, size_t *len);
/* Returns a malloc'd copy of s with every secret replaced by "***"; *outlen gets its length. */
char *sh_mask_apply(const char *s, size_t len, size_t *outlen);
/* Where a long partial line may be cut so that no secret is split between the two pieces:
 * the last (longest secret - 1) bytes stay back, and no occurrence spans the cut. */
size_t sh_mask_safe_cut(const char *s, size_t len);
/* Write s masked to a FILE-like fd. */
void sh_mask_fwrite(const char *s, size_t len, void *file);

/* io.write / io.stdout:write (stream 0) and io.stderr:write (1): masked, each stream's unfinished
 * line held back (a secret split across writes is masked whole) until a newline, a flush or the
 * exit. sh_log_stdio_held says whether anything is held, for a flush timer. */
void sh_log_stdio_write(int stream, const char *s, size_t len);
void sh_log_stdio_flush(void);
/* The same for a flush timer or an explicit flush: all but a tail that may be the start of a
 * secret (held until more comes, or the exit). */
void sh_log_stdio_flush_ready(void);
int sh_log_stdio_held(void);

/* Log files besides the console. Returns 0 or -errno. */
int sh_log_add_file(const char *path);

/* A task's log context: a prefix for its console lines and a file that gets all of its lines
 * (its children's output included, whatever the level). Shared by the tasks it spawns. */
typedef struct sh_log_ctx {
  int refs;
  int fd;              /* -1 when none */
  char prefix[64];     /* "" when none */
  char last[160];      /* its latest line, masked, for a live view */
} sh_log_ctx_t;

sh_log_ctx_t *sh_log_ctx_new(const char *prefix, const char *path, int *err);
void sh_log_ctx_retain(sh_log_ctx_t *c);
void sh_log_ctx_release(sh_log_ctx_t *c);
/* The scheduler tells the log whose context applies to the lines written now. */
void sh_log_set_context_source(sh_log_ctx_t *(*current)(void));

#endif
