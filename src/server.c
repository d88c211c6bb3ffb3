/*
 * Listeners and HTTP connections (server.h, conn.h).  Each connection is a
 * bufferevent and an llhttp parser; input is fed to the parser only while
 * no response is streaming, so pipelined requests are answered in order.
 * Limits are enforced inside the parser callbacks (they return HPE_USER
 * with our status code recorded) and by one timer per connection whose
 * meaning follows the connection's phase: idle (keep-alive), reading
 * headers, reading the body.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <llhttp.h>

#include "api.h"
#include "conn.h"
#include "log.h"
#include "metrics_orcd.h"
#include "orcd.h"
#include "req.h"
#include "server.h"

enum conn_phase {
	CONN_IDLE,      /* between requests */
	CONN_READING,   /* a request is being parsed */
	CONN_BUSY,      /* a response is streaming */
	CONN_CLOSING,   /* flushing the last bytes, then closed */
};

struct growbuf {
	char *p;
	size_t n, cap;
};

struct conn {
	TAILQ_ENTRY(conn) link;
	struct orcd *o;
	struct bufferevent *bev;
	llhttp_t parser;
	enum conn_phase phase;
	struct http_req req;
	struct growbuf field, value, url, body;
	bool in_value;
	size_t header_bytes;
	int fail_status;            /* set by a callback that rejects the request */
	const char *fail_code;
	bool message_done;
	struct req *stream;
	struct event *timer;
	struct event *resume;       /* deferred parse of pipelined input */
	uint64_t id;
	char peer[64];
};

struct server {
	struct evconnlistener *listeners[CONF_MAX_LISTEN];
	int n_listeners;
	int port;
	TAILQ_HEAD(, conn) conns;
	int n_conns;
	llhttp_settings_t settings;
};

static void conn_free(struct conn *c, bool notify);
static void conn_process(struct conn *c);
static void conn_arm_timer(struct conn *c, int ms);

/* ------------------------------------------------------------ helpers */

static int
growbuf_append(struct growbuf *b, const char *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = (b->n + n + 1) * 2;
		char *np = realloc(b->p, cap);

		if (np == NULL)
			return -1;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = '\0';
	return 0;
}

static void
growbuf_free(struct growbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

const char *
http_status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

const char *
http_req_header(const struct http_req *r, const char *name)
{
	for (int i = 0; i < r->n_hdr; i++)
		if (strcasecmp(r->hdr[i].name, name) == 0)
			return r->hdr[i].value;
	return NULL;
}

static void
http_req_clear(struct http_req *r)
{
	for (int i = 0; i < r->n_hdr; i++) {
		free(r->hdr[i].name);
		free(r->hdr[i].value);
	}
	free(r->url);
	free(r->path);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* Resets per-request parse state (the parser itself keeps running). */
static void
conn_reset_request(struct conn *c)
{
	http_req_clear(&c->req);
	growbuf_free(&c->field);
	growbuf_free(&c->value);
	growbuf_free(&c->url);
	growbuf_free(&c->body);
	c->in_value = false;
	c->header_bytes = 0;
	c->fail_status = 0;
	c->fail_code = NULL;
	c->message_done = false;
}

static int
conn_reject(struct conn *c, int status, const char *code)
{
	c->fail_status = status;
	c->fail_code = code;
	return HPE_USER;
}

/* ------------------------------------------------------------ llhttp callbacks */

#define CONN(p) ((struct conn *)(p)->data)

static int
on_message_begin(llhttp_t *p)
{
	struct conn *c = CONN(p);

	conn_reset_request(c);
	c->phase = CONN_READING;
	c->req.t_start = orcd_now();
	conn_arm_timer(c, c->o->cfg.header_timeout_ms);
	return 0;
}

static int
count_header(struct conn *c, size_t n)
{
	c->header_bytes += n;
	if (c->header_bytes > (size_t)c->o->cfg.max_header_bytes)
		return conn_reject(c, 431, "headers_too_large");
	return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = CONN(p);

	if (count_header(c, n) != 0)
		return HPE_USER;
	return growbuf_append(&c->url, at, n) == 0 ? 0 : conn_reject(c, 500, "out_of_memory");
}

/* RFC 9110 token characters: llhttp lets spaces in header names through,
 * which would let "Host : x" mean something to a proxy and not to us. */
static bool
is_token(const char *s, size_t n)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr(extra, s[i]) == NULL)
			return false;
	return true;
}

static int
commit_header(struct conn *c)
{
	struct http_req *r = &c->req;

	if (c->field.n == 0)
		return 0;
	if (!is_token(c->field.p, c->field.n))
		return conn_reject(c, 400, "bad_header_name");
	if (r->n_hdr >= HTTP_MAX_HEADERS)
		return conn_reject(c, 431, "too_many_headers");
	r->hdr[r->n_hdr].name = c->field.p ? c->field.p : strdup("");
	r->hdr[r->n_hdr].value = c->value.p ? c->value.p : strdup("");
	r->n_hdr++;
	memset(&c->field, 0, sizeof(c->field));
	memset(&c->value, 0, sizeof(c->value));
	return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = CONN(p);

	if (count_header(c, n) != 0)
		return HPE_USER;
	if (c->in_value) {
		if (commit_header(c) != 0)
			return HPE_USER;
		c->in_value = false;
	}
	return growbuf_append(&c->field, at, n) == 0 ? 0 : conn_reject(c, 500, "out_of_memory");
}

static int
on_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = CONN(p);

	if (count_header(c, n) != 0)
		return HPE_USER;
	c->in_value = true;
	return growbuf_append(&c->value, at, n) == 0 ? 0 : conn_reject(c, 500, "out_of_memory");
}

static void
set_corr_id(struct conn *c)
{
	const char *h = http_req_header(&c->req, "X-Correlation-Id");
	bool ok = h != NULL && *h != '\0' && strlen(h) < sizeof(c->req.corr_id);

	for (const char *s = h; ok && *s != '\0'; s++)
		if (!isgraph((unsigned char)*s))
			ok = false;
	if (ok)
		snprintf(c->req.corr_id, sizeof(c->req.corr_id), "%s", h);
	else
		snprintf(c->req.corr_id, sizeof(c->req.corr_id), "%08lx-%06llx",
		    (unsigned long)(c->o->t_start * 1e3) & 0xffffffffUL,
		    (unsigned long long)++c->o->next_id);
}

static int
on_headers_complete(llhttp_t *p)
{
	struct conn *c = CONN(p);
	struct http_req *r = &c->req;
	char *q;

	if (c->in_value && commit_header(c) != 0)
		return HPE_USER;
	c->in_value = false;
	r->method = llhttp_get_method(p);
	r->http_major = llhttp_get_http_major(p);
	r->http_minor = llhttp_get_http_minor(p);
	r->keep_alive = llhttp_should_keep_alive(p);
	r->url = c->url.p ? c->url.p : strdup("/");
	r->url_len = c->url.n;
	memset(&c->url, 0, sizeof(c->url));
	r->path = strdup(r->url);
	if (r->path != NULL && (q = strchr(r->path, '?')) != NULL)
		*q = '\0';
	set_corr_id(c);
	if (r->http_major != 1)
		return conn_reject(c, 505, "http_version");
	if ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length > (uint64_t)c->o->cfg.max_body_bytes)
		return conn_reject(c, 413, "body_too_large");
	conn_arm_timer(c, c->o->cfg.body_timeout_ms);
	return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = CONN(p);

	if (c->body.n + n > (size_t)c->o->cfg.max_body_bytes)
		return conn_reject(c, 413, "body_too_large");
	return growbuf_append(&c->body, at, n) == 0 ? 0 : conn_reject(c, 500, "out_of_memory");
}

static int
on_message_complete(llhttp_t *p)
{
	struct conn *c = CONN(p);

	c->req.body = c->body.p ? c->body.p : strdup("");
	c->req.body_len = c->body.n;
	memset(&c->body, 0, sizeof(c->body));
	c->req.t_complete = orcd_now();
	c->message_done = true;
	conn_arm_timer(c, -1);
	/* One request at a time: stop here, dispatch, then go on. */
	return HPE_PAUSED;
}

/* ------------------------------------------------------------ responses */

static void
write_head(struct conn *c, int status, const char *ctype, const char *extra,
    const char *framing, bool close)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nServer: orcd\r\n",
	    c->req.http_minor == 0 ? 0 : 1, status, http_status_text(status));
	if (ctype != NULL)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
	if (c->req.corr_id[0] != '\0')
		evbuffer_add_printf(out, "X-Correlation-Id: %s\r\n", c->req.corr_id);
	if (framing != NULL)
		evbuffer_add(out, framing, strlen(framing));
	if (extra != NULL)
		evbuffer_add(out, extra, strlen(extra));
	if (close)
		evbuffer_add_printf(out, "Connection: close\r\n");
	else if (c->req.http_minor == 0)
		evbuffer_add_printf(out, "Connection: keep-alive\r\n");
	evbuffer_add(out, "\r\n", 2);
}

static bool
conn_should_close(struct conn *c)
{
	return !c->req.keep_alive || c->o->phase == ORCD_DRAINING ||
	    c->o->phase == ORCD_FAILED;
}

static void
conn_close_after_flush(struct conn *c)
{
	c->phase = CONN_CLOSING;
	conn_arm_timer(c, -1);
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_free(c, true);
	/* else the write callback frees it once the output is flushed */
}

/* After a complete response: next request, or close. */
static void
conn_response_done(struct conn *c, bool close)
{
	if (close || conn_should_close(c)) {
		conn_close_after_flush(c);
		return;
	}
	conn_reset_request(c);
	c->phase = CONN_IDLE;
	conn_arm_timer(c, c->o->cfg.keepalive_timeout_ms);
	/* pipelined input already buffered is parsed from a fresh callback */
	event_active(c->resume, 0, 0);
}

void
conn_respond(struct conn *c, int status, const char *content_type,
    const char *body, size_t len, const char *extra)
{
	char framing[64];
	bool close = conn_should_close(c) || status == 400 || status == 408 ||
	    status == 413 || status == 431 || status == 505 || c->fail_status != 0;

	snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
	write_head(c, status, content_type, extra, framing, close);
	if (len > 0 && c->req.method != HTTP_HEAD)
		evbuffer_add(bufferevent_get_output(c->bev), body, len);
	orcd_metrics_http(c->o, status);
	conn_response_done(c, close);
}

void
conn_respond_error(struct conn *c, int status, const char *code, const char *fmt, ...)
{
	char msg[512], esc[sizeof(msg) * 6], body[sizeof(esc) + 128];
	size_t n = 0;
	va_list ap;
	int len;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (const char *s = msg; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(esc + n, 7, "\\u%04x", ch);
		} else {
			esc[n++] = (char)ch;
		}
	}
	esc[n] = '\0';
	len = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
	    code, esc);
	log_msg(status >= 500 ? LOG_WARN : LOG_INFO, c->req.corr_id[0] ? c->req.corr_id : NULL,
	    "%s %s -> %d %s: %s", c->req.url ? llhttp_method_name(c->req.method) : "-",
	    c->req.url ? c->req.url : "-", status, code, msg);
	conn_respond(c, status, "application/json", body, (size_t)len,
	    status == 429 || status == 503 ? "Retry-After: 1\r\n" : NULL);
}

struct evbuffer *
conn_stream_begin(struct conn *c, struct req *r, const char *content_type,
    const char *extra, bool *chunked)
{
	*chunked = c->req.http_minor >= 1;
	write_head(c, 200, content_type, extra,
	    *chunked ? "Transfer-Encoding: chunked\r\n" : NULL, !*chunked);
	c->stream = r;
	c->phase = CONN_BUSY;
	bufferevent_priority_set(c->bev, ORCD_PRIO_STREAM);
	/* the write callback fires when the output drops below half the limit */
	bufferevent_setwatermark(c->bev, EV_WRITE, (size_t)c->o->cfg.write_high_watermark / 2, 0);
	orcd_metrics_http(c->o, 200);
	return bufferevent_get_output(c->bev);
}

void
conn_stream_end(struct conn *c)
{
	bool close = c->req.http_minor == 0;

	c->stream = NULL;
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_priority_set(c->bev, ORCD_PRIO_DEFAULT);
	conn_response_done(c, close);
}

bool
conn_output_full(const struct conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev)) >
	    (size_t)c->o->cfg.write_high_watermark;
}

size_t
conn_output_pending(const struct conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev));
}

const struct http_req *
conn_request(const struct conn *c)
{
	return &c->req;
}

const char *
conn_corr_id(const struct conn *c)
{
	return c->req.corr_id;
}

/* ------------------------------------------------------------ parsing */

static void
conn_fail(struct conn *c, int status, const char *code, const char *msg)
{
	/* The request may be half-parsed: answer on a clean slate. */
	c->req.keep_alive = false;
	c->fail_status = status;
	if (c->req.http_major == 0) {
		c->req.http_major = 1;
		c->req.http_minor = 1;
	}
	conn_respond_error(c, status, code, "%s", msg);
}

static void
conn_process(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	while (c->phase == CONN_IDLE || c->phase == CONN_READING) {
		struct evbuffer_iovec v;
		llhttp_errno_t e;
		size_t used;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return;
		e = llhttp_execute(&c->parser, v.iov_base, v.iov_len);
		if (e == HPE_OK) {
			used = v.iov_len;
		} else if (e == HPE_PAUSED) {
			used = (size_t)(llhttp_get_error_pos(&c->parser) - (const char *)v.iov_base);
			llhttp_resume(&c->parser);
		} else {
			evbuffer_drain(in, evbuffer_get_length(in));
			if (c->fail_status != 0) {
				char msg[128];

				if (c->fail_status == 431 || c->fail_status == 413)
					snprintf(msg, sizeof(msg), "request rejected: %s (limits: "
					    "headers %ld bytes, %d header fields, body %ld bytes)",
					    c->fail_code, c->o->cfg.max_header_bytes, HTTP_MAX_HEADERS,
					    c->o->cfg.max_body_bytes);
				else
					snprintf(msg, sizeof(msg), "request rejected: %s", c->fail_code);
				conn_fail(c, c->fail_status, c->fail_code, msg);
			} else {
				char msg[256];

				snprintf(msg, sizeof(msg), "malformed HTTP request: %s (%s)",
				    llhttp_get_error_reason(&c->parser), llhttp_errno_name(e));
				conn_fail(c, 400, "bad_request", msg);
			}
			return;
		}
		evbuffer_drain(in, used);
		if (c->message_done) {
			c->message_done = false;
			c->phase = CONN_BUSY; /* until the handler answers */
			api_dispatch(c->o, c);
			/* conn may be gone now (closed), or streaming */
			return;
		}
	}
}

static void
conn_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_process(arg);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->phase == CONN_IDLE || c->phase == CONN_READING)
		conn_process(c);
	/* else: a response is streaming; input waits (bounded by the read
	 * watermark) and is parsed when the response ends */
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->phase == CONN_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c, true);
		return;
	}
	if (c->stream != NULL)
		req_on_writable(c->stream);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->phase == CONN_READING) {
		/* half-closed in the middle of a request: say what was wrong */
		llhttp_errno_t e = llhttp_finish(&c->parser);

		conn_fail(c, 400, "incomplete_request", e == HPE_OK ?
		    "the connection was closed before the request was complete" :
		    llhttp_get_error_reason(&c->parser));
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		log_debug("connection %llu from %s closed by peer%s",
		    (unsigned long long)c->id, c->peer,
		    (what & BEV_EVENT_ERROR) ? " (error)" : "");
		conn_free(c, true);
	}
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	switch (c->phase) {
	case CONN_READING:
		evbuffer_drain(bufferevent_get_input(c->bev),
		    evbuffer_get_length(bufferevent_get_input(c->bev)));
		conn_fail(c, 408, "request_timeout", "the request was not received in time");
		break;
	case CONN_IDLE:
		conn_free(c, true);
		break;
	default:
		break;
	}
}

static void
conn_arm_timer(struct conn *c, int ms)
{
	if (ms < 0) {
		evtimer_del(c->timer);
		return;
	}
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	evtimer_add(c->timer, &tv);
}

/* ------------------------------------------------------------ lifecycle */

static void
conn_free(struct conn *c, bool notify)
{
	struct orcd *o = c->o;
	struct server *s = o->server;

	if (c->stream != NULL) {
		struct req *r = c->stream;

		c->stream = NULL;
		if (notify)
			req_on_disconnect(r);
	}
	TAILQ_REMOVE(&s->conns, c, link);
	s->n_conns--;
	orcd_metrics_conn_gauge(o, s->n_conns);
	event_free(c->timer);
	event_free(c->resume);
	bufferevent_free(c->bev);
	conn_reset_request(c);
	free(c);
	if (o->phase == ORCD_DRAINING)
		orcd_maybe_exit(o);
}

void
conn_accept(struct orcd *o, int fd, const char *peer)
{
	struct server *s = o->server;
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c == NULL) {
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->o = o;
	c->id = ++o->next_id;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->bev = bufferevent_socket_new(o->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(o->base, conn_timer_cb, c);
	if (c->timer != NULL)
		event_priority_set(c->timer, ORCD_PRIO_TIMER);
	c->resume = event_new(o->base, -1, 0, conn_resume_cb, c);
	if (c->bev == NULL || c->timer == NULL || c->resume == NULL) {
		if (c->bev)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer)
			event_free(c->timer);
		if (c->resume)
			event_free(c->resume);
		free(c);
		return;
	}
	llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
	c->parser.data = c;
	c->phase = CONN_IDLE;
	TAILQ_INSERT_TAIL(&s->conns, c, link);
	s->n_conns++;
	orcd_metrics_conn_gauge(o, s->n_conns);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	/* bound what a client can queue up behind a streaming response */
	bufferevent_setwatermark(c->bev, EV_READ, 0,
	    (size_t)(o->cfg.max_header_bytes + o->cfg.max_body_bytes + 4096));
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	conn_arm_timer(c, o->cfg.keepalive_timeout_ms);
}

int
conn_count(const struct orcd *o)
{
	return o->server ? o->server->n_conns : 0;
}

void
conn_drain_all(struct orcd *o)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&o->server->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c->phase == CONN_IDLE)
			conn_close_after_flush(c);
	}
}

void
conn_close_all(struct orcd *o)
{
	struct conn *c;

	if (o->server == NULL)
		return;
	while ((c = TAILQ_FIRST(&o->server->conns)) != NULL)
		conn_free(c, true);
}

/* ------------------------------------------------------------ listeners */

static void
listener_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct orcd *o = arg;
	char peer[64] = "?";

	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)sa;
		char a[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
		snprintf(peer, sizeof(peer), "%s:%d", a, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
		char a[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
		snprintf(peer, sizeof(peer), "[%s]:%d", a, ntohs(in6->sin6_port));
	}
	if (o->server->n_conns >= o->cfg.max_connections) {
		static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
		    "Content-Type: application/json\r\nConnection: close\r\n"
		    "Retry-After: 1\r\nContent-Length: 79\r\n\r\n"
		    "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"connection limit reached\"}}";

		/* best effort: the socket is fresh, the reply fits its buffer */
		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* nothing to do: the client sees the close */
		}
		close(fd);
		orcd_metrics_http(o, 503);
		return;
	}
	conn_accept(o, fd, peer);
}

/* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0" (port 0: any free port). */
static int
parse_listen(const char *spec, struct sockaddr_storage *ss, int *sslen)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	char *end;
	long port;
	size_t hl;

	if (colon == NULL || colon == spec)
		return -1;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || end == colon + 1 || port < 0 || port > 65535)
		return -1;
	hl = (size_t)(colon - spec);
	if (spec[0] == '[') {
		if (hl < 3 || spec[hl - 1] != ']')
			return -1;
		spec++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*sslen = sizeof(*in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*sslen = sizeof(*in6);
		return 0;
	}
	return -1;
}

static int
listen_one(struct orcd *o, const char *spec, struct orcd_err *err)
{
	struct server *s = o->server;
	struct sockaddr_storage ss;
	int sslen;
	struct evconnlistener *l;

	if (parse_listen(spec, &ss, &sslen) != 0)
		return orcd_errf(err, "listen: cannot parse address '%s' (use 127.0.0.1:8080 "
		    "or [::1]:8080; port 0 picks a free port)", spec);
	l = evconnlistener_new_bind(o->base, listener_cb, o,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
	    (struct sockaddr *)&ss, sslen);
	if (l == NULL)
		return orcd_errf(err, "listen: cannot bind %s: %s", spec, strerror(errno));
	if (s->n_listeners == 0) {
		struct sockaddr_storage bound;
		socklen_t bl = sizeof(bound);

		if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &bl) == 0)
			s->port = ntohs(bound.ss_family == AF_INET6 ?
			    ((struct sockaddr_in6 *)&bound)->sin6_port :
			    ((struct sockaddr_in *)&bound)->sin_port);
	}
	s->listeners[s->n_listeners++] = l;
	return 0;
}

int
server_start(struct orcd *o, struct orcd_err *err)
{
	struct server *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return orcd_errf(err, "server: out of memory");
	o->server = s;
	TAILQ_INIT(&s->conns);
	llhttp_settings_init(&s->settings);
	s->settings.on_message_begin = on_message_begin;
	s->settings.on_url = on_url;
	s->settings.on_header_field = on_header_field;
	s->settings.on_header_value = on_header_value;
	s->settings.on_headers_complete = on_headers_complete;
	s->settings.on_body = on_body;
	s->settings.on_message_complete = on_message_complete;
	if (o->cfg.n_listen == 0)
		return listen_one(o, "127.0.0.1:8080", err);
	for (int i = 0; i < o->cfg.n_listen; i++)
		if (listen_one(o, o->cfg.listen[i], err) != 0)
			return -1;
	return 0;
}

void
server_stop_listening(struct orcd *o)
{
	struct server *s = o->server;

	if (s == NULL)
		return;
	for (int i = 0; i < s->n_listeners; i++)
		evconnlistener_free(s->listeners[i]);
	s->n_listeners = 0;
}

void
server_free(struct orcd *o)
{
	if (o->server == NULL)
		return;
	server_stop_listening(o);
	conn_close_all(o);
	free(o->server);
	o->server = NULL;
}

int
server_port(const struct orcd *o)
{
	return o->server ? o->server->port : 0;
}
