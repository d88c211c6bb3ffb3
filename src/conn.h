/*
 * HTTP/1.x connections: a bufferevent plus an llhttp parser per connection,
 * with limits (header bytes 431, body bytes 413, header/body read timeouts
 * 408, malformed 400), keep-alive and pipelining (requests are answered in
 * order; while a response streams, later requests wait in the input
 * buffer).  A finished request goes to api_dispatch(); the handler answers
 * at once (conn_respond*) or starts a stream (conn_stream_begin ... end).
 */
#ifndef ORCD_CONN_H
#define ORCD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct orcd;
struct conn;
struct req;
struct evbuffer;
struct bufferevent;

#define HTTP_MAX_HEADERS 64

struct http_header {
	char *name;
	char *value;
};

struct http_req {
	int method;                 /* llhttp_method_t */
	char *url;                  /* as received */
	size_t url_len;
	char *path;                 /* url without the query string */
	struct http_header hdr[HTTP_MAX_HEADERS];
	int n_hdr;
	char *body;                 /* NUL-terminated */
	size_t body_len;
	int http_major, http_minor;
	bool keep_alive;
	char corr_id[96];           /* X-Correlation-Id or generated */
	double t_start;             /* first byte (monotonic s) */
	double t_complete;          /* message complete */
};

/* Case-insensitive header lookup; NULL if absent. */
const char *http_req_header(const struct http_req *r, const char *name);
const char *http_status_text(int status);

/* Accepts a new socket (called by the listener). */
void conn_accept(struct orcd *o, int fd, const char *peer);
/* Open connections. */
int conn_count(const struct orcd *o);
/* Drain: close idle connections now, and every connection once its
 * current response is done. */
void conn_drain_all(struct orcd *o);
/* Closes every connection at once (final shutdown). */
void conn_close_all(struct orcd *o);

const struct http_req *conn_request(const struct conn *c);
const char *conn_corr_id(const struct conn *c);

/* A complete response (Content-Length).  extra: further header lines, each
 * ending in "\r\n", or NULL. */
void conn_respond(struct conn *c, int status, const char *content_type,
    const char *body, size_t len, const char *extra);
/* {"error":{"code":code,"message":...}} */
void conn_respond_error(struct conn *c, int status, const char *code,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Starts a streamed response owned by r: status line and headers (plus
 * Transfer-Encoding: chunked on HTTP/1.1, else Connection: close) and
 * returns the output buffer.  r is told of disconnect (req_on_disconnect)
 * and of drained output (req_on_writable). */
struct evbuffer *conn_stream_begin(struct conn *c, struct req *r, const char *content_type,
    const char *extra, bool *chunked);
/* The stream is complete: later requests on the connection are served (or
 * it closes after the output is flushed). */
void conn_stream_end(struct conn *c);
/* True if the unsent output is above the configured high watermark. */
bool conn_output_full(const struct conn *c);
size_t conn_output_pending(const struct conn *c);

#endif
