/* The inside of the http_server module, shared by its two files: bindings/http_conn.c keeps
 * connections (accept, read, parse, write, timers, lifetimes; libuv only) and bindings/
 * http_server.c is the Lua face (http.serve, the server object, handler tasks, responses built
 * from Lua values, req:stream). Not an API of its own. */
#ifndef SH_HTTP_SERVER_H
#define SH_HTTP_SERVER_H

#include <stddef.h>

#include <lua.h>
#include <uv.h>

#include "../host/log.h"
#include "../host/sched.h"
#include "http_request.h"

#define SH_SERVER_MT "stagehost.http.server"
#define SH_SERVER_STREAM_MT "stagehost.http.stream"
#define SH_SERVER_REQUEST_MT "stagehost.http.request"
#define SH_SERVER_EXCHANGES "stagehost.http.server.exchanges" /* weak: request table -> stream */
#define SH_SERVER_STATE_KEY "stagehost.http.server.state"

#define SH_SERVER_DEBUG(...)                                            \
  do {                                                                  \
    if (sh_log_enabled(SH_LOG_DEBUG)) sh_log_printf(SH_LOG_DEBUG, __VA_ARGS__); \
  } while (0)

typedef struct sh_server sh_server_t;
typedef struct sh_server_conn sh_server_conn_t;
typedef struct sh_server_closer sh_server_closer_t;

/* The servers of one scheduler. Made with the module (sh_sched_state); released as the Lua state
 * closes, which stops every server at once; freed with the last server struct after that. */
typedef struct {
  sh_sched_t *sched;
  sh_server_t *all;             /* every server struct not freed yet */
  int lua_alive;                /* the registry still holds it */
} sh_server_state_t;

/* A connection is reading a request, busy with one (handler running or response being written,
 * reading stopped), or lingering: response sent, write side shut, draining until the client's
 * EOF so that closing does not reset a response the client has not read yet. */
enum { SH_CONN_READING, SH_CONN_BUSY, SH_CONN_LINGER };

/* What the connection's one timer means now; states never need two at once. */
enum { SH_TIMER_NONE, SH_TIMER_IDLE, SH_TIMER_HEADER, SH_TIMER_BODY, SH_TIMER_WRITE, SH_TIMER_LINGER, SH_TIMER_KICK };

/* How a response's body is delimited. */
enum { SH_FRAME_LENGTH, SH_FRAME_CHUNKED, SH_FRAME_CLOSE, SH_FRAME_NONE };

struct sh_server {
  uv_tcp_t tcp;                 /* the listener */
  lua_State *L;                 /* the main state: requests are dispatched there, from callbacks */
  sh_sched_t *sched;
  int handler_ref;              /* registry ref to the handler until the server closes */
  int anchor_ref;               /* registry ref to the userdata while listening */
  int closing;                  /* close() or __gc ran: no new connections or requests */
  int listener_open;            /* the listener's close callback has not run yet */
  int lua_alive;                /* the userdata still points here */
  sh_server_conn_t *conns;      /* connections whose handles are not closed yet */
  size_t nconns;
  sh_server_closer_t *closers;  /* tasks in close() waiting for the last connection */
  sh_server_state_t *state;     /* the scheduler's servers, for its shutdown hook */
  sh_server_t *prev, *next;
  size_t body_limit, header_limit;
  double header_timeout, idle_timeout, body_timeout;
  unsigned long next_conn_id;
  int port;
  char host[64];
  char label[80];               /* "host:port" for messages */
};

struct sh_server_conn {
  uv_tcp_t tcp;
  uv_shutdown_t shutdown;
  sh_server_t *server;          /* NULL once the handle closed and the server let go of it */
  sh_sched_t *sched;
  int refs;                     /* the open handle, plus one per stream userdata */
  int open;                     /* uv_close not called yet */
  int reading;                  /* uv_read_start is active */
  int state;                    /* SH_CONN_* */
  sh_http_parse_t parse;
  char *pending;                /* received, not parsed yet: pipelined requests (only while busy) */
  size_t pending_off, pending_len; /* the bytes are pending[pending_off, pending_len) */
  unsigned seq;                 /* bumped per request; a stream userdata of an older one is stale */
  int writes;                   /* uv_write requests not completed */
  int responded;                /* the current response's last bytes are queued */
  int streaming;                /* req:stream sent the head; chunks may follow */
  int frame;                    /* SH_FRAME_* of the current streamed response */
  int req_head;                 /* the current request is HEAD: no body bytes go out */
  int req_minor;                /* HTTP/1.x of the current request */
  int keep_alive;               /* the connection stays open after this response */
  int got_bytes;                /* bytes of the next request arrived (a 408 makes sense) */
  sh_timer_t timer;
  int timer_kind;               /* SH_TIMER_* */
  unsigned long id;
  char remote[64];
  sh_server_conn_t *prev, *next;
};

/* A write of response bytes; a task in stream:write waits on it. */
typedef struct {
  sh_await_t await; /* first: the record is freed through it */
  uv_write_t req;
  sh_server_conn_t *conn;
  char data[];
} sh_server_write_t;

/* A task in server:close(). */
struct sh_server_closer {
  sh_wait_t wait;
  sh_server_t *server;
  sh_server_closer_t *prev, *next;
};

/* The userdata of a server; the struct outlives it until every connection is closed. */
typedef struct {
  sh_server_t *srv;
} sh_server_ud_t;

/* The userdata of one request's exchange, returned by req:stream as the stream object. It holds
 * a reference on the connection, so it never points at freed memory; seq tells a stale one. */
typedef struct {
  sh_server_conn_t *conn;
  unsigned seq;
} sh_server_stream_t;

/* ---- bindings/http_conn.c ---- */

/* called by libuv for each new connection to a listening server */
void sh_server_accept(uv_stream_t *listener, int status);
/* called by libuv once a server's listener is closed */
void sh_server_listener_closed(uv_handle_t *h);
/* Free the server struct if nothing can reach it any more. */
void sh_server_maybe_free(sh_server_t *s);
/* The handle and every stream userdata hold one reference; the last one frees the memory. */
void sh_server_conn_unref(sh_server_conn_t *c);
/* Close now; idempotent. */
void sh_server_conn_close(sh_server_conn_t *c, const char *why);
/* Queue parts as one write (NULL, the connection closed, when that fails); never raises. */
sh_server_write_t *sh_server_conn_send(sh_server_conn_t *c, const uv_buf_t *parts, int nparts);
/* The current response is complete once these parts are written. */
void sh_server_conn_respond(sh_server_conn_t *c, const uv_buf_t *parts, int nparts);
/* A response the server writes itself (errors); close_after closes the connection after it. */
void sh_server_conn_simple(sh_server_conn_t *c, int status, int close_after);
/* The reason phrase of a status ("" if none), and the "Date: ...\r\n" line. */
const char *sh_server_reason(int status);
const char *sh_server_date_line(void);

/* ---- bindings/http_server.c ---- */

/* Hand a complete request to a new handler task (on failure it is answered with 500). Called by
 * the connection from libuv callbacks only, where the main state is idle. */
void sh_server_start_handler(sh_server_conn_t *c, const sh_http_request_t *r);

#endif
