/*
 * loadgen -- a load generator for orcd's HTTP/SSE API, and for llama.cpp's
 * llama-server through the OpenAI-compatible /v1/completions endpoint, so
 * that one tool measures both servers the same way.
 *
 * One libevent event_base drives every socket: CONCURRENCY stream slots that
 * each keep one request in flight (a new one starts as soon as the previous
 * one ends, on the same keep-alive connection when the server allows it), an
 * optional /health prober on its own connection, /cancel control connections
 * and optional "hold" connections that open a stream and then read slowly or
 * not at all, to see whether the server bounds what it buffers for them.
 *
 * The HTTP/1.1 response parser and the SSE parser below are incremental: they
 * take bytes as they arrive, so a line, an event or a chunk header may be
 * split across chunks and reads anywhere.  A malformed response is counted as
 * an outcome, never trusted.  Every latency sample is kept so percentiles are
 * exact (nearest rank over the sorted samples).  Times come from
 * CLOCK_MONOTONIC, read once per read callback: tokens that arrive in the same
 * read have the same arrival time, which is what a client sees.
 */

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <jansson.h>

#define LG_LINE_MAX		8192		/* status, header, chunk-size line */
#define LG_HEAD_MAX		65536		/* whole header section */
#define LG_SSE_MAX		(1 << 20)	/* one SSE line or one event's data */
#define LG_BODY_MAX		8192		/* kept start of a non-SSE body */
#define LG_CODE_MAX		64		/* error codes, stop reasons */
#define LG_COUNTERS_MAX		64		/* distinct names per table */
#define LG_BACKOFF_S		0.010		/* pause after a connection error */
#define LG_PROMPT_FILE_MAX	(64 << 20)

/* ------------------------------------------------------------------ */
/* Clock, random numbers.                                              */

static double
clock_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
}

static struct timeval
clock_timeval(double seconds)
{
	struct timeval	tv;

	if (seconds < 0)
		seconds = 0;
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return (tv);
}

/* splitmix64: small, seedable, good enough to pick which requests to cancel. */
static uint64_t
rng_next(uint64_t *state)
{
	uint64_t	z;

	z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31));
}

static double
rng_unit(uint64_t *state)
{
	return ((double)(rng_next(state) >> 11) * 0x1.0p-53);
}

static void *
lg_xrealloc(void *p, size_t n)
{
	void	*q;

	if ((q = realloc(p, n == 0 ? 1 : n)) == NULL) {
		fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return (q);
}

/* ------------------------------------------------------------------ */
/* Samples (all kept, for exact percentiles) and named counters.       */

struct samples {
	double	*v;
	size_t	 n;
	size_t	 cap;
	int	 sorted;
};

static void
samples_add(struct samples *s, double x)
{
	if (s->n == s->cap) {
		s->cap = s->cap == 0 ? 1024 : s->cap * 2;
		s->v = lg_xrealloc(s->v, s->cap * sizeof *s->v);
	}
	s->v[s->n++] = x;
	s->sorted = 0;
}

static int
samples_cmp(const void *a, const void *b)
{
	double	x = *(const double *)a, y = *(const double *)b;

	return (x < y ? -1 : x > y);
}

static void
samples_sort(struct samples *s)
{
	if (!s->sorted && s->n > 1)
		qsort(s->v, s->n, sizeof *s->v, samples_cmp);
	s->sorted = 1;
}

/* Nearest-rank percentile over sorted samples; NAN when there are none. */
static double
samples_pct(struct samples *s, double p)
{
	size_t	rank;

	if (s->n == 0)
		return (NAN);
	samples_sort(s);
	rank = (size_t)ceil(p * (double)s->n);
	if (rank < 1)
		rank = 1;
	if (rank > s->n)
		rank = s->n;
	return (s->v[rank - 1]);
}

static double
samples_mean(const struct samples *s)
{
	double	sum = 0;
	size_t	i;

	if (s->n == 0)
		return (NAN);
	for (i = 0; i < s->n; i++)
		sum += s->v[i];
	return (sum / (double)s->n);
}

static void
samples_free(struct samples *s)
{
	free(s->v);
	memset(s, 0, sizeof *s);
}

struct counter {
	char		*name;
	uint64_t	 n;
};

struct counters {
	struct counter	*v;
	size_t		 n;
	size_t		 cap;
};

/*
 * Names come from the server (error codes, stop reasons), so they are
 * clipped, made printable and capped in number: a hostile server cannot make
 * the table grow without bound.
 */
static void
counters_add(struct counters *c, const char *name, uint64_t k)
{
	char	clean[LG_CODE_MAX];
	size_t	i;

	for (i = 0; name[i] != '\0' && i < sizeof clean - 1; i++)
		clean[i] = isprint((unsigned char)name[i]) &&
		    name[i] != '"' && name[i] != '\\' ? name[i] : '?';
	clean[i] = '\0';
	if (i == 0)
		strcpy(clean, "(empty)");
	for (i = 0; i < c->n; i++) {
		if (strcmp(c->v[i].name, clean) == 0) {
			c->v[i].n += k;
			return;
		}
	}
	/* The last place is kept for "(other)". */
	if (c->n >= LG_COUNTERS_MAX - 1 && strcmp(clean, "(other)") != 0) {
		counters_add(c, "(other)", k);
		return;
	}
	if (c->n == c->cap) {
		c->cap = c->cap == 0 ? 8 : c->cap * 2;
		c->v = lg_xrealloc(c->v, c->cap * sizeof *c->v);
	}
	c->v[c->n].name = strdup(clean);
	if (c->v[c->n].name == NULL) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	c->v[c->n].n = k;
	c->n++;
}

static void
counters_addf(struct counters *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
counters_addf(struct counters *c, const char *fmt, ...)
{
	char	name[LG_CODE_MAX];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	counters_add(c, name, 1);
}

static void
counters_free(struct counters *c)
{
	size_t	i;

	for (i = 0; i < c->n; i++)
		free(c->v[i].name);
	free(c->v);
	memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ */
/* Server-Sent Events parser.                                          */

/* Returns 0 to go on, nonzero to stop the stream. */
typedef int (*sse_event_fn)(void *, const char *, char *, size_t);

struct sse {
	char		*line;
	size_t		 line_len;
	size_t		 line_cap;
	char		*data;
	size_t		 data_len;
	size_t		 data_cap;
	int		 has_data;
	int		 after_cr;	/* last byte was CR: a following LF ends nothing */
	char		 event[LG_CODE_MAX];
	char		 error[128];
	uint64_t	 comments;
	sse_event_fn	 on_event;
	void		*arg;
};

static void
sse_init(struct sse *s, sse_event_fn on_event, void *arg)
{
	memset(s, 0, sizeof *s);
	s->on_event = on_event;
	s->arg = arg;
}

static void
sse_reset(struct sse *s)
{
	s->line_len = s->data_len = 0;
	s->has_data = s->after_cr = 0;
	s->event[0] = s->error[0] = '\0';
}

static void
sse_free(struct sse *s)
{
	free(s->line);
	free(s->data);
	s->line = s->data = NULL;
	s->line_cap = s->data_cap = 0;
}

static int
sse_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
	size_t	want = *len + n + 1;

	if (want > LG_SSE_MAX)
		return (-1);
	if (want > *cap) {
		*cap = *cap < 256 ? 256 : *cap;
		while (*cap < want)
			*cap *= 2;
		*buf = lg_xrealloc(*buf, *cap);
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return (0);
}

/* A blank line ends an event; one without a data field is dropped (per spec). */
static int
sse_dispatch(struct sse *s)
{
	const char	*name;
	int		 r;

	if (!s->has_data) {
		s->event[0] = '\0';
		return (0);
	}
	s->data_len--;			/* the '\n' after the last data line */
	s->data[s->data_len] = '\0';
	name = s->event[0] != '\0' ? s->event : "message";
	r = s->on_event(s->arg, name, s->data, s->data_len);
	s->data_len = 0;
	s->has_data = 0;
	s->event[0] = '\0';
	return (r);
}

static int
sse_line(struct sse *s)
{
	const char	*line = s->line, *colon, *value;
	size_t		 len = s->line_len, name_len, value_len;

	if (len == 0)
		return (sse_dispatch(s));
	if (line[0] == ':') {
		s->comments++;		/* keep-alive ping */
		return (0);
	}
	if ((colon = memchr(line, ':', len)) != NULL) {
		name_len = (size_t)(colon - line);
		value = colon + 1;
		if (value < line + len && *value == ' ')
			value++;
		value_len = len - (size_t)(value - line);
	} else {
		name_len = len;
		value = line + len;
		value_len = 0;
	}
	if (name_len == 5 && memcmp(line, "event", 5) == 0) {
		if (value_len >= sizeof s->event)
			value_len = sizeof s->event - 1;
		memcpy(s->event, value, value_len);
		s->event[value_len] = '\0';
	} else if (name_len == 4 && memcmp(line, "data", 4) == 0) {
		if (sse_append(&s->data, &s->data_len, &s->data_cap, value,
		    value_len) == -1 ||
		    sse_append(&s->data, &s->data_len, &s->data_cap, "\n",
		    1) == -1) {
			snprintf(s->error, sizeof s->error,
			    "SSE event data over %d bytes", LG_SSE_MAX);
			return (-1);
		}
		s->has_data = 1;
	}
	/* id, retry and unknown fields do not matter to a benchmark. */
	return (0);
}

/*
 * Feed bytes; lines end in LF, CRLF or CR (all three are legal SSE).
 * Returns 0 when all was taken, -1 on error (s->error says why), or the
 * nonzero value of an event callback that asked to stop.
 */
static int
sse_feed(struct sse *s, const char *p, size_t n)
{
	size_t	i = 0, j;
	int	r;

	while (i < n) {
		if (s->after_cr) {
			s->after_cr = 0;
			if (p[i] == '\n') {
				i++;
				continue;
			}
		}
		for (j = i; j < n && p[j] != '\n' && p[j] != '\r'; j++)
			continue;
		if (sse_append(&s->line, &s->line_len, &s->line_cap, p + i,
		    j - i) == -1) {
			snprintf(s->error, sizeof s->error,
			    "SSE line over %d bytes", LG_SSE_MAX);
			return (-1);
		}
		if (j == n)
			break;
		if (p[j] == '\r')
			s->after_cr = 1;
		i = j + 1;
		r = sse_line(s);
		s->line_len = 0;
		if (r != 0)
			return (r);
	}
	return (0);
}

/* ------------------------------------------------------------------ */
/* Incremental HTTP/1.1 response parser.                               */

enum http_state {
	HTTP_STATUS_LINE,
	HTTP_HEADER_LINE,
	HTTP_BODY_LENGTH,
	HTTP_CHUNK_SIZE,
	HTTP_CHUNK_DATA,
	HTTP_CHUNK_END,
	HTTP_TRAILER_LINE,
	HTTP_BODY_CLOSE,
	HTTP_COMPLETE,
	HTTP_FAILED
};

enum http_framing {
	HTTP_FRAMING_NONE,
	HTTP_FRAMING_LENGTH,
	HTTP_FRAMING_CHUNKED,
	HTTP_FRAMING_CLOSE
};

enum http_feed {
	HTTP_FEED_MORE,		/* all bytes taken, response not complete */
	HTTP_FEED_DONE,		/* response complete; *used says where it ended */
	HTTP_FEED_STOP,		/* the body callback asked to stop */
	HTTP_FEED_ERROR		/* malformed; hr->error says why */
};

/* Returns 0 to go on, nonzero to stop. */
typedef int (*http_body_fn)(void *, const char *, size_t);

struct http_resp {
	enum http_state		 state;
	enum http_framing	 framing;
	int			 status;
	int			 minor;
	int			 keep_alive;
	int			 is_sse;
	int			 chunked;
	int64_t			 content_length;	/* -1: absent */
	uint64_t		 remaining;	/* in the body or current chunk */
	size_t			 head_bytes;
	uint64_t		 bytes;		/* all bytes fed */
	char			*line;
	size_t			 line_len;
	size_t			 line_cap;
	char			 error[160];
	http_body_fn		 on_body;
	void			*arg;
};

static const char *
http_state_name(enum http_state state)
{
	switch (state) {
	case HTTP_STATUS_LINE:
		return ("status line");
	case HTTP_HEADER_LINE:
		return ("headers");
	case HTTP_BODY_LENGTH:
		return ("Content-Length body");
	case HTTP_CHUNK_SIZE:
	case HTTP_CHUNK_DATA:
	case HTTP_CHUNK_END:
		return ("chunked body");
	case HTTP_TRAILER_LINE:
		return ("chunked trailer");
	case HTTP_BODY_CLOSE:
		return ("close-delimited body");
	case HTTP_COMPLETE:
		return ("complete response");
	case HTTP_FAILED:
		break;
	}
	return ("failed response");
}

static void
http_resp_init(struct http_resp *hr, http_body_fn on_body, void *arg)
{
	memset(hr, 0, sizeof *hr);
	hr->content_length = -1;
	hr->on_body = on_body;
	hr->arg = arg;
}

/* Ready for the next response on the connection; keeps the line buffer. */
static void
http_resp_reset(struct http_resp *hr)
{
	char	*line = hr->line;
	size_t	 cap = hr->line_cap;

	http_resp_init(hr, hr->on_body, hr->arg);
	hr->line = line;
	hr->line_cap = cap;
}

static void
http_resp_free(struct http_resp *hr)
{
	free(hr->line);
	hr->line = NULL;
	hr->line_cap = 0;
}

static enum http_feed
http_fail(struct http_resp *hr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum http_feed
http_fail(struct http_resp *hr, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(hr->error, sizeof hr->error, fmt, ap);
	va_end(ap);
	hr->state = HTTP_FAILED;
	return (HTTP_FEED_ERROR);
}

/*
 * Gather one line into hr->line (CR stripped, NUL-terminated).  Returns 1
 * when it is complete, 0 when the input ran out first, -1 when too long.
 */
static int
http_take_line(struct http_resp *hr, const char *p, size_t n, size_t *pos)
{
	const char	*start = p + *pos, *nl;
	size_t		 avail = n - *pos, take;

	nl = memchr(start, '\n', avail);
	take = nl != NULL ? (size_t)(nl - start) : avail;
	if (hr->line_len + take + 1 > LG_LINE_MAX)
		return (-1);
	if (hr->line_len + take + 1 > hr->line_cap) {
		hr->line_cap = hr->line_cap < 128 ? 128 : hr->line_cap;
		while (hr->line_cap < hr->line_len + take + 1)
			hr->line_cap *= 2;
		hr->line = lg_xrealloc(hr->line, hr->line_cap);
	}
	memcpy(hr->line + hr->line_len, start, take);
	hr->line_len += take;
	*pos += take;
	if (nl == NULL)
		return (0);
	(*pos)++;
	if (hr->line_len > 0 && hr->line[hr->line_len - 1] == '\r')
		hr->line_len--;
	hr->line[hr->line_len] = '\0';
	return (1);
}

static int
http_parse_status(struct http_resp *hr)
{
	const char	*l = hr->line;

	if (hr->line_len < 12 || strncmp(l, "HTTP/1.", 7) != 0 ||
	    (l[7] != '0' && l[7] != '1') || l[8] != ' ' ||
	    !isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
	    !isdigit((unsigned char)l[11]) || (l[12] != ' ' && l[12] != '\0'))
		return (-1);
	hr->minor = l[7] - '0';
	hr->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	hr->keep_alive = hr->minor == 1;
	return (0);
}

static char *
http_trim(char *s)
{
	char	*e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return (s);
}

static int
http_parse_header(struct http_resp *hr)
{
	char		*line = hr->line, *colon, *value, *tok, *save, *p;
	char		*last;
	long long	 cl;

	if ((colon = strchr(line, ':')) == NULL || colon == line)
		return (http_fail(hr, "header line without a name: \"%.40s\"",
		    line), -1);
	for (p = line; p < colon; p++) {
		/* RFC 9112 5.1: no space before the colon; no obs-fold. */
		if (*p == ' ' || *p == '\t')
			return (http_fail(hr, "space in header name: "
			    "\"%.40s\"", line), -1);
	}
	*colon = '\0';
	value = http_trim(colon + 1);
	if (strcasecmp(line, "content-length") == 0) {
		if (*value == '\0' || strspn(value, "0123456789") !=
		    strlen(value) || strlen(value) > 15)
			return (http_fail(hr, "bad Content-Length \"%.40s\"",
			    value), -1);
		cl = strtoll(value, NULL, 10);
		if (hr->content_length >= 0 && hr->content_length != cl)
			return (http_fail(hr, "two different Content-Length "
			    "headers"), -1);
		hr->content_length = cl;
	} else if (strcasecmp(line, "transfer-encoding") == 0) {
		last = strrchr(value, ',');
		last = http_trim(last != NULL ? last + 1 : value);
		if (strcasecmp(last, "chunked") != 0)
			return (http_fail(hr, "unsupported Transfer-Encoding "
			    "\"%.40s\"", value), -1);
		hr->chunked = 1;
	} else if (strcasecmp(line, "connection") == 0) {
		for (tok = strtok_r(value, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save)) {
			tok = http_trim(tok);
			if (strcasecmp(tok, "close") == 0)
				hr->keep_alive = 0;
			else if (strcasecmp(tok, "keep-alive") == 0 &&
			    hr->minor == 0)
				hr->keep_alive = 1;
		}
	} else if (strcasecmp(line, "content-type") == 0) {
		hr->is_sse = strncasecmp(value, "text/event-stream", 17) == 0;
	}
	return (0);
}

/* The blank line after the headers: decide how the body is delimited. */
static void
http_headers_done(struct http_resp *hr)
{
	if (hr->status >= 100 && hr->status < 200) {
		/* An interim response; the real status line follows. */
		http_resp_reset(hr);
		return;
	}
	if (hr->status == 204 || hr->status == 304) {
		hr->framing = HTTP_FRAMING_NONE;
		hr->state = HTTP_COMPLETE;
	} else if (hr->chunked) {
		hr->framing = HTTP_FRAMING_CHUNKED;
		hr->state = HTTP_CHUNK_SIZE;
	} else if (hr->content_length >= 0) {
		hr->framing = HTTP_FRAMING_LENGTH;
		hr->remaining = (uint64_t)hr->content_length;
		hr->state = hr->remaining > 0 ? HTTP_BODY_LENGTH :
		    HTTP_COMPLETE;
	} else {
		hr->framing = HTTP_FRAMING_CLOSE;
		hr->keep_alive = 0;
		hr->state = HTTP_BODY_CLOSE;
	}
}

static int
http_parse_chunk_size(struct http_resp *hr)
{
	const char	*p = hr->line;
	uint64_t	 size = 0;
	int		 digits = 0, d;

	while (*p == ' ' || *p == '\t')
		p++;
	for (; isxdigit((unsigned char)*p); p++, digits++) {
		d = isdigit((unsigned char)*p) ? *p - '0' :
		    tolower((unsigned char)*p) - 'a' + 10;
		if (size > (UINT64_C(1) << 40))
			return (http_fail(hr, "chunk size too large"), -1);
		size = size * 16 + (uint64_t)d;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (digits == 0 || (*p != '\0' && *p != ';'))
		return (http_fail(hr, "bad chunk size line \"%.40s\"",
		    hr->line), -1);
	hr->remaining = size;
	hr->state = size == 0 ? HTTP_TRAILER_LINE : HTTP_CHUNK_DATA;
	return (0);
}

/*
 * Feed n bytes of the connection.  *used is how many belong to this response
 * (bytes after a complete response belong to the next one).
 */
static enum http_feed
http_resp_feed(struct http_resp *hr, const char *p, size_t n, size_t *used)
{
	enum http_feed	 result = HTTP_FEED_MORE;
	size_t		 pos = 0, before, take;
	int		 r;

	while (hr->state != HTTP_COMPLETE && hr->state != HTTP_FAILED &&
	    pos < n) {
		switch (hr->state) {
		case HTTP_STATUS_LINE:
		case HTTP_HEADER_LINE:
		case HTTP_TRAILER_LINE:
			before = pos;
			r = http_take_line(hr, p, n, &pos);
			hr->head_bytes += pos - before;
			if (r == -1 || hr->head_bytes > LG_HEAD_MAX) {
				result = http_fail(hr, "%s over %d bytes",
				    http_state_name(hr->state), r == -1 ?
				    LG_LINE_MAX : LG_HEAD_MAX);
				goto out;
			}
			if (r == 0)
				break;
			if (memchr(hr->line, '\0', hr->line_len) != NULL) {
				result = http_fail(hr, "NUL byte in %s",
				    http_state_name(hr->state));
				goto out;
			}
			if (hr->state == HTTP_STATUS_LINE) {
				/* Tolerate a stray blank line before it. */
				if (hr->line_len > 0 &&
				    http_parse_status(hr) == -1) {
					result = http_fail(hr, "bad status line"
					    " \"%.40s\"", hr->line);
					goto out;
				}
				if (hr->line_len > 0)
					hr->state = HTTP_HEADER_LINE;
			} else if (hr->state == HTTP_HEADER_LINE) {
				if (hr->line_len == 0)
					http_headers_done(hr);
				else if (http_parse_header(hr) == -1) {
					result = HTTP_FEED_ERROR;
					goto out;
				}
			} else if (hr->line_len == 0)
				hr->state = HTTP_COMPLETE;
			hr->line_len = 0;
			break;
		case HTTP_CHUNK_SIZE:
		case HTTP_CHUNK_END:
			r = http_take_line(hr, p, n, &pos);
			if (r == -1) {
				result = http_fail(hr, "chunk line over %d bytes",
				    LG_LINE_MAX);
				goto out;
			}
			if (r == 0)
				break;
			if (hr->state == HTTP_CHUNK_END) {
				if (hr->line_len != 0) {
					result = http_fail(hr, "chunk data not "
					    "followed by CRLF");
					goto out;
				}
				hr->state = HTTP_CHUNK_SIZE;
			} else if (http_parse_chunk_size(hr) == -1) {
				result = HTTP_FEED_ERROR;
				goto out;
			}
			hr->line_len = 0;
			break;
		case HTTP_BODY_LENGTH:
		case HTTP_CHUNK_DATA:
		case HTTP_BODY_CLOSE:
			take = n - pos;
			if (hr->state != HTTP_BODY_CLOSE && take > hr->remaining)
				take = (size_t)hr->remaining;
			r = hr->on_body != NULL ?
			    hr->on_body(hr->arg, p + pos, take) : 0;
			pos += take;
			if (hr->state != HTTP_BODY_CLOSE) {
				hr->remaining -= take;
				if (hr->remaining == 0)
					hr->state = hr->state ==
					    HTTP_CHUNK_DATA ? HTTP_CHUNK_END :
					    HTTP_COMPLETE;
			}
			if (r != 0) {
				result = HTTP_FEED_STOP;
				goto out;
			}
			break;
		case HTTP_COMPLETE:
		case HTTP_FAILED:
			break;
		}
	}
	if (hr->state == HTTP_COMPLETE)
		result = HTTP_FEED_DONE;
	else if (hr->state == HTTP_FAILED)
		result = HTTP_FEED_ERROR;
out:
	hr->bytes += pos;
	*used = pos;
	return (result);
}

/* The peer closed: complete only when the body was close-delimited. */
static int
http_resp_eof(struct http_resp *hr)
{
	if (hr->state == HTTP_BODY_CLOSE)
		hr->state = HTTP_COMPLETE;
	if (hr->state == HTTP_COMPLETE)
		return (0);
	if (hr->state != HTTP_FAILED) {
		if (hr->state == HTTP_STATUS_LINE && hr->bytes == 0)
			snprintf(hr->error, sizeof hr->error,
			    "connection closed before the response");
		else
			snprintf(hr->error, sizeof hr->error,
			    "connection closed inside the %s",
			    http_state_name(hr->state));
		hr->state = HTTP_FAILED;
	}
	return (-1);
}

/* ------------------------------------------------------------------ */
/* Configuration.                                                      */

enum lg_api {
	LG_API_ORCD,
	LG_API_OPENAI
};

struct lg_config {
	const char	*host;
	const char	*port;
	int		 concurrency;
	int64_t		 total;		/* -1: unlimited (needs duration) */
	char		*prompt;
	int		 max_tokens;
	double		 temperature;
	enum lg_api	 api;
	const char	*model;
	int		 cache_prompt;
	double		 health_rps;
	double		 cancel_frac;
	double		 disconnect_frac;
	int		 deadline_ms;
	double		 duration_s;
	int		 json;
	int		 ignore_eos;
	double		 timeout_s;
	int		 hold;
	double		 hold_seconds;
	int		 hold_read_bps;
	int		 hold_max_tokens;
	uint64_t	 seed;
	const char	*id_prefix;
};

/* ------------------------------------------------------------------ */
/* Shared state.                                                       */

enum lg_outcome {
	OUT_OK,			/* end event (orcd) or [DONE] (openai) */
	OUT_SSE_ERROR,		/* error event in the stream */
	OUT_HTTP_ERROR,		/* a status other than 200 */
	OUT_CONN_ERROR,		/* connect failed, reset, closed early */
	OUT_TIMEOUT,
	OUT_MALFORMED,		/* the response broke HTTP, SSE or JSON */
	OUT_TRUNCATED,		/* stream ended with no end or error event */
	OUT_DISCONNECTED,	/* we closed it on purpose */
	OUT_COUNT
};

static const char *const lg_outcome_names[OUT_COUNT] = {
	"ok", "sse_error", "http_error", "conn_error", "timeout", "malformed",
	"truncated", "disconnected"
};

struct lg;

enum slot_state {
	SLOT_IDLE,		/* between requests; a backoff may be pending */
	SLOT_CONNECTING,
	SLOT_WAITING,		/* request sent, response coming */
	SLOT_DONE
};

enum slot_action {
	ACT_NONE,
	ACT_DISCONNECT,
	ACT_MALFORMED
};

struct req {
	uint64_t	 id;
	char		 job_id[64];
	double		 t_send;
	double		 t_last;	/* last token */
	double		 t_end;		/* terminal event */
	double		 t_cancel;
	int64_t		 tokens;
	int64_t		 server_tokens;	/* as the server reported; -1 unknown */
	int64_t		 cancel_at;	/* after this many tokens; 0 never */
	int64_t		 disconnect_at;
	int		 cancel_sent;
	int		 retried;	/* resent once on a fresh connection */
	int		 terminal;
	enum lg_outcome	 result;	/* valid when terminal */
	char		 code[LG_CODE_MAX];
	char		 stop_reason[LG_CODE_MAX];
	char		 error[200];
};

struct slot {
	struct lg		*lg;
	int			 index;
	enum slot_state		 state;
	enum slot_action	 action;
	struct bufferevent	*bev;
	uint64_t		 conn_requests;	/* on the current connection */
	struct event		*timer;		/* timeout, or backoff */
	struct http_resp	 hr;
	struct sse		 sse;
	struct req		 req;
	double			 t_read;
	char			 body[LG_BODY_MAX];
	size_t			 body_len;
};

enum ctl_state {
	CTL_FREE,		/* no connection */
	CTL_IDLE,		/* keep-alive connection, unused */
	CTL_BUSY
};

/* A /cancel control connection; kept in a pool, reused by keep-alive. */
struct ctl {
	struct lg		*lg;
	enum ctl_state		 state;
	struct bufferevent	*bev;
	struct http_resp	 hr;
	double			 t_sent;
	struct ctl		*next;
};

struct health {
	struct bufferevent	*bev;
	struct http_resp	 hr;
	struct event		*tick;
	int			 busy;
	double			 t_sent;
	uint64_t		 sent;
	uint64_t		 skipped;	/* previous one still in flight */
	uint64_t		 errors;
};

struct hold_conn {
	struct lg		*lg;
	struct bufferevent	*bev;
	struct http_resp	 hr;
	struct sse		 sse;
	int			 connected;
	int			 closed;	/* EOF or error seen */
	int			 terminal;
	uint64_t		 bytes;
	uint64_t		 tokens;
};

struct hold_report {
	int		 done;
	uint64_t	 requested;
	uint64_t	 connected;
	uint64_t	 connect_failed;
	uint64_t	 headers;	/* a status line came back */
	uint64_t	 status_200;
	uint64_t	 open;		/* still ESTABLISHED, stream unfinished */
	uint64_t	 finished;	/* the server ended the stream */
	uint64_t	 closed;	/* the server closed or reset it */
	uint64_t	 http_error;
	uint64_t	 bytes_read;
	uint64_t	 bytes_unread;	/* queued in our socket buffers */
	uint64_t	 tokens;
};

struct lg {
	struct lg_config	 cfg;
	struct event_base	*base;
	struct sockaddr_storage	 addr;
	socklen_t		 addrlen;
	char			 hostport[300];
	uint64_t		 rng;

	struct slot		*slots;
	int			 slots_active;
	uint64_t		 issued;
	uint64_t		 finished;
	int			 stopping;	/* no new requests */
	int			 duration_over;
	struct event		*duration_ev;
	struct event		*sigint_ev;
	struct event		*sigterm_ev;
	int			 signals;

	double			 t_first_send;
	double			 t_last_end;
	uint64_t		 tokens_total;
	uint64_t		 connections;
	uint64_t		 reused_requests;
	uint64_t		 keepalive_retries;

	uint64_t		 outcomes[OUT_COUNT];
	struct counters		 stop_reasons;
	struct counters		 sse_error_codes;
	struct counters		 http_status;
	struct counters		 http_error_codes;
	struct samples		 ttft;
	struct samples		 itl;
	struct samples		 e2e;
	struct samples		 queue;
	struct samples		 tokens_per_req;

	struct ctl		*ctls;
	uint64_t		 cancel_sent;
	uint64_t		 cancel_confirmed;
	uint64_t		 cancel_late;	/* stream ended normally anyway */
	uint64_t		 cancel_other;
	uint64_t		 cancel_errors;
	struct counters		 cancel_status;
	struct samples		 cancel_lat;
	struct samples		 cancel_ack;

	struct health		 health;
	struct samples		 health_lat;
	struct counters		 health_status;

	struct hold_conn	*holds;
	struct event		*hold_ev;
	struct ev_token_bucket_cfg *hold_bucket;
	struct hold_report	 hold_report;

	uint64_t		 index_gaps;
	uint64_t		 token_mismatch;
	uint64_t		 events_after_end;
	uint64_t		 unknown_events;
	uint64_t		 framing_timeouts;
	uint64_t		 errors_logged;
	char			 last_error[256];
};

static void	slot_next(struct slot *);
static void	slot_connect(struct slot *);
static void	lg_check_done(struct lg *);

static void
lg_note_error(struct lg *lg, const char *what, const char *why)
{
	char	*p, *end;

	snprintf(lg->last_error, sizeof lg->last_error, "%s: %s", what, why);
	/* Server text (error bodies) may hold newlines; keep one line. */
	for (p = lg->last_error; *p != '\0'; p++) {
		if (!isprint((unsigned char)*p))
			*p = ' ';
	}
	end = lg->last_error + strlen(lg->last_error);
	while (end > lg->last_error && end[-1] == ' ')
		*--end = '\0';
	/* A few on stderr help debugging; a flood would hide the report. */
	if (lg->errors_logged++ < 5 && !lg->cfg.json)
		fprintf(stderr, "loadgen: %s\n", lg->last_error);
}

/* Open a non-blocking TCP connection to the server. */
static struct bufferevent *
lg_connect(struct lg *lg, bufferevent_data_cb on_read,
    bufferevent_event_cb on_event, void *arg, char *err, size_t errlen)
{
	struct bufferevent	*bev;
	int			 fd, one = 1;

	fd = socket(lg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return (NULL);
	}
	/* Small requests and cancels must not wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	bev = bufferevent_socket_new(lg->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		snprintf(err, errlen, "bufferevent_socket_new failed");
		return (NULL);
	}
	bufferevent_setcb(bev, on_read, NULL, on_event, arg);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&lg->addr,
	    (int)lg->addrlen) == -1) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		bufferevent_free(bev);
		return (NULL);
	}
	lg->connections++;
	return (bev);
}

/* The JSON body of a generation request for the chosen API. */
static char *
lg_request_body(struct lg *lg, const char *job_id, int max_tokens)
{
	const struct lg_config	*cfg = &lg->cfg;
	json_t			*o, *params;
	char			*s;

	if (cfg->api == LG_API_ORCD) {
		o = json_pack("{s:s, s:s, s:{s:i, s:f}}", "job_id", job_id,
		    "prompt", cfg->prompt, "params", "max_tokens", max_tokens,
		    "temperature", cfg->temperature);
		if (o == NULL)
			return (NULL);
		if (cfg->ignore_eos) {
			params = json_object_get(o, "params");
			json_object_set_new(params, "ignore_eos", json_true());
		}
	} else {
		/*
		 * llama-server reads n_predict and cache_prompt; OpenAI clients
		 * read max_tokens.  Both are sent so either server honours them.
		 */
		o = json_pack("{s:s, s:i, s:i, s:f, s:b, s:b}", "prompt",
		    cfg->prompt, "max_tokens", max_tokens, "n_predict",
		    max_tokens, "temperature", cfg->temperature, "stream", 1,
		    "cache_prompt", cfg->cache_prompt);
		if (o == NULL)
			return (NULL);
		if (cfg->ignore_eos)
			json_object_set_new(o, "ignore_eos", json_true());
		if (cfg->model != NULL)
			json_object_set_new(o, "model",
			    json_string(cfg->model));
	}
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return (s);
}

static int
lg_write_request(struct lg *lg, struct bufferevent *bev, const char *job_id,
    int max_tokens, int deadline_ms)
{
	struct evbuffer	*out = bufferevent_get_output(bev);
	char		*body;
	size_t		 len;

	if ((body = lg_request_body(lg, job_id, max_tokens)) == NULL)
		return (-1);
	len = strlen(body);
	evbuffer_add_printf(out, "POST %s HTTP/1.1\r\nHost: %s\r\n"
	    "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
	    "X-Correlation-Id: %s\r\n",
	    lg->cfg.api == LG_API_ORCD ? "/execute" : "/v1/completions",
	    lg->hostport, job_id);
	if (deadline_ms > 0)
		evbuffer_add_printf(out, "X-Deadline-Ms: %d\r\n", deadline_ms);
	evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", len);
	evbuffer_add(out, body, len);
	free(body);
	return (0);
}

/* ------------------------------------------------------------------ */
/* Cancel control connections.                                         */

static void
ctl_close(struct ctl *c)
{
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	c->bev = NULL;
	c->state = CTL_FREE;
}

static void
ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct ctl	*c = arg;
	struct lg	*lg = c->lg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_iovec v[8];
	enum http_feed	 r = HTTP_FEED_MORE;
	size_t		 used, total = 0;
	int		 i, nv;

	if (c->state != CTL_BUSY) {
		ctl_close(c);		/* bytes nobody asked for */
		return;
	}
	nv = evbuffer_peek(in, -1, NULL, v, 8);
	for (i = 0; i < nv && i < 8; i++) {
		r = http_resp_feed(&c->hr, v[i].iov_base, v[i].iov_len, &used);
		total += used;
		if (r != HTTP_FEED_MORE)
			break;
	}
	evbuffer_drain(in, total);
	if (r == HTTP_FEED_MORE)
		return;
	if (r == HTTP_FEED_DONE) {
		samples_add(&lg->cancel_ack, (clock_now() - c->t_sent) * 1e3);
		counters_addf(&lg->cancel_status, "%d", c->hr.status);
		if (c->hr.keep_alive && evbuffer_get_length(in) == 0) {
			c->state = CTL_IDLE;
			return;
		}
	} else {
		lg->cancel_errors++;
		lg_note_error(lg, "cancel", c->hr.error);
	}
	ctl_close(c);
}

static void
ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl	*c = arg;
	struct lg	*lg = c->lg;

	(void)bev;

	if (what & BEV_EVENT_CONNECTED)
		return;
	if (c->state == CTL_BUSY) {
		if ((what & BEV_EVENT_EOF) && http_resp_eof(&c->hr) == 0) {
			samples_add(&lg->cancel_ack,
			    (clock_now() - c->t_sent) * 1e3);
			counters_addf(&lg->cancel_status, "%d", c->hr.status);
		} else {
			lg->cancel_errors++;
			lg_note_error(lg, "cancel", (what & BEV_EVENT_EOF) ?
			    c->hr.error : evutil_socket_error_to_string(
			    EVUTIL_SOCKET_ERROR()));
		}
	}
	ctl_close(c);
}

static void
ctl_cancel(struct lg *lg, struct req *q)
{
	struct ctl	*c, *free_one = NULL;
	struct evbuffer	*out;
	json_t		*o;
	char		*body, err[160];

	for (c = lg->ctls; c != NULL; c = c->next) {
		if (c->state == CTL_IDLE)
			break;
		if (c->state == CTL_FREE && free_one == NULL)
			free_one = c;
	}
	if (c == NULL) {
		if ((c = free_one) == NULL) {
			c = lg_xrealloc(NULL, sizeof *c);
			memset(c, 0, sizeof *c);
			c->lg = lg;
			http_resp_init(&c->hr, NULL, NULL);
			c->next = lg->ctls;
			lg->ctls = c;
		}
		c->bev = lg_connect(lg, ctl_read_cb, ctl_event_cb, c, err,
		    sizeof err);
		if (c->bev == NULL) {
			lg->cancel_errors++;
			lg_note_error(lg, "cancel", err);
			return;
		}
	}
	o = json_pack("{s:s}", "job_id", q->job_id);
	body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (body == NULL) {
		lg->cancel_errors++;
		return;
	}
	out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out, "POST /cancel HTTP/1.1\r\nHost: %s\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    lg->hostport, strlen(body), body);
	free(body);
	http_resp_reset(&c->hr);
	c->state = CTL_BUSY;
	c->t_sent = clock_now();
	q->cancel_sent = 1;
	q->t_cancel = c->t_sent;
	lg->cancel_sent++;
}

/* ------------------------------------------------------------------ */
/* Stream slots: one request in flight each.                           */

static void
slot_close(struct slot *s)
{
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	s->bev = NULL;
	s->conn_requests = 0;
}

static int
slot_token(struct slot *s)
{
	struct req	*q = &s->req;
	struct lg	*lg = s->lg;

	q->tokens++;
	lg->tokens_total++;
	if (q->tokens == 1)
		samples_add(&lg->ttft, (s->t_read - q->t_send) * 1e3);
	else
		samples_add(&lg->itl, (s->t_read - q->t_last) * 1e3);
	q->t_last = s->t_read;
	if (q->disconnect_at > 0 && q->tokens >= q->disconnect_at) {
		s->action = ACT_DISCONNECT;
		return (1);
	}
	if (q->cancel_at > 0 && !q->cancel_sent && q->tokens >= q->cancel_at)
		ctl_cancel(lg, q);
	return (0);
}

static int
slot_malformed(struct slot *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
slot_malformed(struct slot *s, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(s->req.error, sizeof s->req.error, fmt, ap);
	va_end(ap);
	s->action = ACT_MALFORMED;
	return (1);
}

static void
slot_terminal(struct slot *s, enum lg_outcome result, const char *code)
{
	struct req	*q = &s->req;

	q->terminal = 1;
	q->result = result;
	q->t_end = s->t_read;
	if (code != NULL)
		snprintf(q->code, sizeof q->code, "%s", code);
	if (result == OUT_SSE_ERROR && q->cancel_sent &&
	    strcmp(q->code, "cancelled") == 0)
		samples_add(&s->lg->cancel_lat, (s->t_read - q->t_cancel) *
		    1e3);
}

static const char *
json_string_or(json_t *o, const char *key, const char *dflt)
{
	json_t	*v = json_object_get(o, key);

	return (json_is_string(v) ? json_string_value(v) : dflt);
}

/* One orcd event: started, token, end or error. */
static int
slot_event_orcd(struct slot *s, const char *name, char *data, size_t len)
{
	struct req	*q = &s->req;
	struct lg	*lg = s->lg;
	json_t		*j, *v;
	json_error_t	 je;
	int		 r = 0;

	j = json_loadb(data, len, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		return (slot_malformed(s, "%s event: data is not a JSON object"
		    " (%s)", name, je.text));
	}
	if (strcmp(name, "token") == 0) {
		v = json_object_get(j, "index");
		if (!json_is_integer(v) ||
		    !json_is_string(json_object_get(j, "text"))) {
			json_decref(j);
			return (slot_malformed(s, "token event without an "
			    "integer index and a string text"));
		}
		if (json_integer_value(v) != q->tokens)
			lg->index_gaps++;
		r = slot_token(s);
	} else if (strcmp(name, "started") == 0) {
		v = json_object_get(j, "queue_ms");
		if (json_is_number(v))
			samples_add(&lg->queue, json_number_value(v));
	} else if (strcmp(name, "end") == 0) {
		v = json_object_get(j, "tokens");
		if (json_is_integer(v))
			q->server_tokens = json_integer_value(v);
		snprintf(q->stop_reason, sizeof q->stop_reason, "%s",
		    json_string_or(j, "stop_reason", "unknown"));
		slot_terminal(s, OUT_OK, NULL);
	} else if (strcmp(name, "error") == 0) {
		slot_terminal(s, OUT_SSE_ERROR, json_string_or(j, "code",
		    "(no code)"));
		snprintf(q->error, sizeof q->error, "error event %s: %s",
		    q->code, json_string_or(j, "message", ""));
	} else
		lg->unknown_events++;
	json_decref(j);
	return (r);
}

/* One OpenAI-style chunk: data {choices:[{text, finish_reason}]} or [DONE]. */
static int
slot_event_openai(struct slot *s, const char *name, char *data, size_t len)
{
	struct req	*q = &s->req;
	json_t		*j, *err, *c0, *text, *fr, *usage, *v;
	json_error_t	 je;
	char		 code[LG_CODE_MAX];
	int		 r = 0;

	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		slot_terminal(s, OUT_OK, NULL);
		return (0);
	}
	j = json_loadb(data, len, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		return (slot_malformed(s, "stream chunk is not a JSON object "
		    "(%s)", je.text));
	}
	if ((err = json_object_get(j, "error")) != NULL ||
	    strcmp(name, "error") == 0) {
		/* llama-server: data: {"error":{"code":500,"type":"..."}} */
		if (!json_is_object(err))
			err = j;
		v = json_object_get(err, "code");
		if (json_is_string(json_object_get(err, "type")))
			snprintf(code, sizeof code, "%s",
			    json_string_value(json_object_get(err, "type")));
		else if (json_is_string(v))
			snprintf(code, sizeof code, "%s", json_string_value(v));
		else if (json_is_integer(v))
			snprintf(code, sizeof code, "%" JSON_INTEGER_FORMAT,
			    json_integer_value(v));
		else
			snprintf(code, sizeof code, "(no code)");
		slot_terminal(s, OUT_SSE_ERROR, code);
		snprintf(q->error, sizeof q->error, "stream error %s: %s",
		    code, json_string_or(err, "message", ""));
		json_decref(j);
		return (0);
	}
	c0 = json_array_get(json_object_get(j, "choices"), 0);
	text = json_object_get(c0, "text");
	fr = json_object_get(c0, "finish_reason");
	usage = json_object_get(j, "usage");
	if (json_is_integer(json_object_get(usage, "completion_tokens")))
		q->server_tokens = json_integer_value(json_object_get(usage,
		    "completion_tokens"));
	if (json_is_string(fr))
		snprintf(q->stop_reason, sizeof q->stop_reason, "%s",
		    json_string_value(fr));
	/* The closing chunk carries finish_reason and usually no text. */
	if (json_is_string(text) && (json_string_length(text) > 0 ||
	    !json_is_string(fr)))
		r = slot_token(s);
	json_decref(j);
	return (r);
}

static int
slot_on_event(void *arg, const char *name, char *data, size_t len)
{
	struct slot	*s = arg;

	if (s->req.terminal) {
		s->lg->events_after_end++;
		return (0);
	}
	if (s->lg->cfg.api == LG_API_OPENAI)
		return (slot_event_openai(s, name, data, len));
	return (slot_event_orcd(s, name, data, len));
}

static int
slot_on_body(void *arg, const char *p, size_t n)
{
	struct slot	*s = arg;
	size_t		 room;
	int		 r;

	if (s->hr.status == 200 && s->hr.is_sse) {
		if ((r = sse_feed(&s->sse, p, n)) == -1)
			return (slot_malformed(s, "%s", s->sse.error));
		return (r);
	}
	/* An error reply: keep its start, for the error code. */
	room = sizeof s->body - 1 - s->body_len;
	if (n > room)
		n = room;
	memcpy(s->body + s->body_len, p, n);
	s->body_len += n;
	s->body[s->body_len] = '\0';
	return (0);
}

/* The end of a request, whatever it was; keep says the connection is reusable. */
static void
slot_finish(struct slot *s, enum lg_outcome out, int keep)
{
	struct lg	*lg = s->lg;
	struct req	*q = &s->req;
	double		 t = q->terminal ? q->t_end : clock_now();
	json_t		*j, *e;
	struct timeval	 tv;

	evtimer_del(s->timer);
	lg->outcomes[out]++;
	lg->finished++;
	if (t > lg->t_last_end)
		lg->t_last_end = t;
	if (s->hr.status != 0)
		counters_addf(&lg->http_status, "%d", s->hr.status);
	switch (out) {
	case OUT_OK:
		samples_add(&lg->e2e, (t - q->t_send) * 1e3);
		samples_add(&lg->tokens_per_req, (double)q->tokens);
		counters_add(&lg->stop_reasons, q->stop_reason[0] != '\0' ?
		    q->stop_reason : "unknown", 1);
		if (q->server_tokens >= 0 && q->server_tokens != q->tokens)
			lg->token_mismatch++;
		break;
	case OUT_SSE_ERROR:
		counters_add(&lg->sse_error_codes, q->code, 1);
		break;
	case OUT_HTTP_ERROR:
		j = json_loads(s->body, 0, NULL);
		e = json_object_get(j, "error");
		counters_addf(&lg->http_error_codes, "%d %s", s->hr.status,
		    json_string_or(e, "code", json_string_or(e, "type",
		    "(no code)")));
		snprintf(q->error, sizeof q->error, "HTTP %d: %.120s",
		    s->hr.status, s->body);
		json_decref(j);
		break;
	default:
		break;
	}
	if (q->cancel_sent) {
		if (out == OUT_SSE_ERROR && strcmp(q->code, "cancelled") == 0)
			lg->cancel_confirmed++;
		else if (out == OUT_OK)
			lg->cancel_late++;
		else
			lg->cancel_other++;
	}
	if (out != OUT_OK && out != OUT_DISCONNECTED &&
	    !(out == OUT_SSE_ERROR && q->cancel_sent))
		lg_note_error(lg, lg_outcome_names[out], q->error[0] != '\0' ?
		    q->error : "(no detail)");
	if (!keep)
		slot_close(s);
	s->state = SLOT_IDLE;
	if (out == OUT_CONN_ERROR) {
		/* Do not spin when the server is down. */
		tv = clock_timeval(LG_BACKOFF_S);
		evtimer_add(s->timer, &tv);
		return;
	}
	slot_next(s);
}

/* The HTTP response is complete; leftover says bytes followed it. */
static void
slot_response_done(struct slot *s, int leftover)
{
	struct req	*q = &s->req;
	int		 keep;

	keep = s->hr.keep_alive && !leftover &&
	    s->hr.framing != HTTP_FRAMING_CLOSE;
	if (s->hr.status != 200)
		slot_finish(s, OUT_HTTP_ERROR, keep);
	else if (!s->hr.is_sse) {
		snprintf(q->error, sizeof q->error,
		    "200 reply without Content-Type text/event-stream");
		slot_finish(s, OUT_MALFORMED, keep);
	} else if (!q->terminal) {
		snprintf(q->error, sizeof q->error, "stream ended after %"
		    PRId64 " tokens with no end or error event", q->tokens);
		slot_finish(s, OUT_TRUNCATED, keep);
	} else
		slot_finish(s, q->result, keep);
}

static void
slot_read_cb(struct bufferevent *bev, void *arg)
{
	struct slot	*s = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_iovec v[16];
	enum http_feed	 r;
	size_t		 used, total;
	int		 i, nv;

	s->t_read = clock_now();
	while (evbuffer_get_length(in) > 0) {
		if (s->state != SLOT_WAITING) {
			slot_close(s);	/* bytes nobody asked for */
			return;
		}
		nv = evbuffer_peek(in, -1, NULL, v, 16);
		if (nv > 16)
			nv = 16;
		r = HTTP_FEED_MORE;
		total = 0;
		for (i = 0; i < nv; i++) {
			r = http_resp_feed(&s->hr, v[i].iov_base,
			    v[i].iov_len, &used);
			total += used;
			if (r != HTTP_FEED_MORE)
				break;
		}
		evbuffer_drain(in, total);
		switch (r) {
		case HTTP_FEED_MORE:
			/*
			 * A close-delimited stream has nothing more to say
			 * after its last event; do not wait for the close.
			 */
			if (s->req.terminal &&
			    s->hr.framing == HTTP_FRAMING_CLOSE) {
				slot_finish(s, s->req.result, 0);
				return;
			}
			continue;
		case HTTP_FEED_DONE:
			slot_response_done(s, evbuffer_get_length(in) > 0);
			return;
		case HTTP_FEED_STOP:
			if (s->action == ACT_DISCONNECT)
				slot_finish(s, OUT_DISCONNECTED, 0);
			else
				slot_finish(s, OUT_MALFORMED, 0);
			return;
		case HTTP_FEED_ERROR:
			snprintf(s->req.error, sizeof s->req.error, "%s",
			    s->hr.error);
			slot_finish(s, OUT_MALFORMED, 0);
			return;
		}
	}
}

static void
slot_send(struct slot *s)
{
	struct lg	*lg = s->lg;
	struct req	*q = &s->req;
	struct timeval	 tv;

	if (lg_write_request(lg, s->bev, q->job_id, lg->cfg.max_tokens,
	    lg->cfg.deadline_ms) == -1) {
		/* Checked at startup, so only memory can make this fail. */
		fprintf(stderr, "loadgen: cannot build the request body\n");
		exit(1);
	}
	q->t_send = clock_now();
	if (lg->t_first_send == 0)
		lg->t_first_send = q->t_send;
	if (s->conn_requests++ > 0)
		lg->reused_requests++;
	s->state = SLOT_WAITING;
	if (lg->cfg.timeout_s > 0) {
		tv = clock_timeval(lg->cfg.timeout_s);
		evtimer_add(s->timer, &tv);
	}
}

static void
slot_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct slot	*s = arg;
	struct req	*q = &s->req;

	(void)bev;

	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == SLOT_CONNECTING)
			slot_send(s);
		return;
	}
	if (s->state != SLOT_WAITING && s->state != SLOT_CONNECTING) {
		slot_close(s);		/* an idle keep-alive connection closed */
		return;
	}
	s->t_read = clock_now();
	if (s->state == SLOT_WAITING && s->hr.bytes == 0 &&
	    s->conn_requests > 1 && !q->retried) {
		/*
		 * The server closed a keep-alive connection just as we reused
		 * it (llama-server closes after every stream, yet says
		 * Keep-Alive).  Like curl, resend once on a new connection.
		 */
		q->retried = 1;
		s->lg->keepalive_retries++;
		evtimer_del(s->timer);
		slot_close(s);
		slot_connect(s);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		if (s->state == SLOT_WAITING && http_resp_eof(&s->hr) == 0) {
			slot_response_done(s, 0);
			return;
		}
		if (q->terminal) {
			slot_finish(s, q->result, 0);
			return;
		}
		snprintf(q->error, sizeof q->error, "%s", s->hr.error);
		if (s->hr.status == 200 && s->hr.is_sse &&
		    s->hr.state != HTTP_HEADER_LINE)
			slot_finish(s, OUT_TRUNCATED, 0);
		else
			slot_finish(s, OUT_CONN_ERROR, 0);
		return;
	}
	/* BEV_EVENT_ERROR: connect refused, reset, ... */
	if (q->terminal) {
		slot_finish(s, q->result, 0);
		return;
	}
	snprintf(q->error, sizeof q->error, "%s%s",
	    s->state == SLOT_CONNECTING ? "connect: " : "",
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	slot_finish(s, OUT_CONN_ERROR, 0);
}

/* A new connection for the slot's request; it is sent once connected. */
static void
slot_connect(struct slot *s)
{
	struct req	*q = &s->req;
	char		 err[160];

	s->bev = lg_connect(s->lg, slot_read_cb, slot_event_cb, s, err,
	    sizeof err);
	s->state = SLOT_CONNECTING;
	if (s->bev == NULL) {
		snprintf(q->error, sizeof q->error, "%s", err);
		q->t_send = clock_now();
		slot_finish(s, OUT_CONN_ERROR, 0);
	}
}

static void
slot_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct slot	*s = arg;
	struct req	*q = &s->req;

	(void)fd;
	(void)what;

	if (s->state == SLOT_IDLE) {
		slot_next(s);		/* the backoff is over */
		return;
	}
	if (s->state != SLOT_WAITING && s->state != SLOT_CONNECTING)
		return;
	if (q->terminal) {
		/* The stream ended but its framing never did. */
		s->lg->framing_timeouts++;
		slot_finish(s, q->result, 0);
		return;
	}
	snprintf(q->error, sizeof q->error, "no complete response after %g s"
	    " (%" PRId64 " tokens)", s->lg->cfg.timeout_s, q->tokens);
	slot_finish(s, OUT_TIMEOUT, 0);
}

static int64_t
lg_pick_token(struct lg *lg)
{
	int	max = lg->cfg.max_tokens;

	if (max <= 1)
		return (1);
	return (1 + (int64_t)(rng_next(&lg->rng) % (uint64_t)(max - 1)));
}

/* Start the next request on this slot, or retire the slot. */
static void
slot_next(struct slot *s)
{
	struct lg	*lg = s->lg;
	struct req	*q = &s->req;
	double		 u;

	if (lg->stopping || (lg->cfg.total >= 0 &&
	    lg->issued >= (uint64_t)lg->cfg.total)) {
		s->state = SLOT_DONE;
		slot_close(s);
		lg->slots_active--;
		lg_check_done(lg);
		return;
	}
	memset(q, 0, sizeof *q);
	q->id = lg->issued++;
	q->server_tokens = -1;
	snprintf(q->job_id, sizeof q->job_id, "%s-%" PRIu64, lg->cfg.id_prefix,
	    q->id);
	u = rng_unit(&lg->rng);
	if (u < lg->cfg.cancel_frac)
		q->cancel_at = lg_pick_token(lg);
	else if (u < lg->cfg.cancel_frac + lg->cfg.disconnect_frac)
		q->disconnect_at = lg_pick_token(lg);
	http_resp_reset(&s->hr);
	sse_reset(&s->sse);
	s->body_len = 0;
	s->body[0] = '\0';
	s->action = ACT_NONE;
	if (s->bev != NULL)
		slot_send(s);
	else
		slot_connect(s);
}

/* ------------------------------------------------------------------ */
/* Health prober.                                                      */

static void
health_close(struct lg *lg)
{
	if (lg->health.bev != NULL)
		bufferevent_free(lg->health.bev);
	lg->health.bev = NULL;
	lg->health.busy = 0;
}

static void
health_read_cb(struct bufferevent *bev, void *arg)
{
	struct lg	*lg = arg;
	struct health	*h = &lg->health;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_iovec v[8];
	enum http_feed	 r = HTTP_FEED_MORE;
	size_t		 used, total = 0;
	int		 i, nv;

	if (!h->busy) {
		health_close(lg);
		return;
	}
	nv = evbuffer_peek(in, -1, NULL, v, 8);
	for (i = 0; i < nv && i < 8; i++) {
		r = http_resp_feed(&h->hr, v[i].iov_base, v[i].iov_len, &used);
		total += used;
		if (r != HTTP_FEED_MORE)
			break;
	}
	evbuffer_drain(in, total);
	if (r == HTTP_FEED_MORE)
		return;
	if (r == HTTP_FEED_DONE) {
		samples_add(&lg->health_lat, (clock_now() - h->t_sent) * 1e3);
		counters_addf(&lg->health_status, "%d", h->hr.status);
		h->busy = 0;
		if (h->hr.keep_alive && evbuffer_get_length(in) == 0)
			return;
	} else {
		h->errors++;
		lg_note_error(lg, "health", h->hr.error);
	}
	health_close(lg);
}

static void
health_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct lg	*lg = arg;
	struct health	*h = &lg->health;

	(void)bev;

	if (what & BEV_EVENT_CONNECTED)
		return;
	if (h->busy) {
		if ((what & BEV_EVENT_EOF) && http_resp_eof(&h->hr) == 0) {
			samples_add(&lg->health_lat,
			    (clock_now() - h->t_sent) * 1e3);
			counters_addf(&lg->health_status, "%d", h->hr.status);
		} else {
			h->errors++;
			lg_note_error(lg, "health", (what & BEV_EVENT_EOF) ?
			    h->hr.error : evutil_socket_error_to_string(
			    EVUTIL_SOCKET_ERROR()));
		}
	}
	health_close(lg);
}

static void
health_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lg	*lg = arg;
	struct health	*h = &lg->health;
	char		 err[160];

	(void)fd;
	(void)what;

	if (h->busy) {
		h->skipped++;	/* slower than the asked rate */
		return;
	}
	if (h->bev == NULL) {
		h->bev = lg_connect(lg, health_read_cb, health_event_cb, lg,
		    err, sizeof err);
		if (h->bev == NULL) {
			h->errors++;
			lg_note_error(lg, "health", err);
			return;
		}
	}
	bufferevent_priority_set(h->bev, 0);
	evbuffer_add_printf(bufferevent_get_output(h->bev),
	    "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", lg->hostport);
	http_resp_reset(&h->hr);
	h->busy = 1;
	h->sent++;
	h->t_sent = clock_now();
	/* send now rather than at the loop's next write pass, so the latency
	 * is the server's and not this process's queue of stream events */
	if (bufferevent_getfd(h->bev) >= 0)
		(void)evbuffer_write(bufferevent_get_output(h->bev), bufferevent_getfd(h->bev));
}

/* ------------------------------------------------------------------ */
/* Hold connections: open streams, then read slowly or not at all.     */

static int
hold_on_event(void *arg, const char *name, char *data, size_t len)
{
	struct hold_conn	*hc = arg;

	if (strcmp(name, "token") == 0 || (hc->lg->cfg.api == LG_API_OPENAI &&
	    !(len == 6 && memcmp(data, "[DONE]", 6) == 0)))
		hc->tokens++;
	else if (strcmp(name, "end") == 0 || strcmp(name, "error") == 0 ||
	    (len == 6 && memcmp(data, "[DONE]", 6) == 0))
		hc->terminal = 1;
	return (0);
}

static int
hold_on_body(void *arg, const char *p, size_t n)
{
	struct hold_conn	*hc = arg;

	if (hc->hr.status == 200 && hc->hr.is_sse)
		return (sse_feed(&hc->sse, p, n) == -1);
	return (0);
}

static void
hold_read_cb(struct bufferevent *bev, void *arg)
{
	struct hold_conn	*hc = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct evbuffer_iovec	 v[8];
	enum http_feed		 r = HTTP_FEED_MORE;
	size_t			 used, total = 0, len;
	int			 i, nv;

	len = evbuffer_get_length(in);
	hc->bytes += len;
	nv = evbuffer_peek(in, -1, NULL, v, 8);
	for (i = 0; i < nv && i < 8 && hc->hr.state != HTTP_FAILED &&
	    hc->hr.state != HTTP_COMPLETE; i++) {
		r = http_resp_feed(&hc->hr, v[i].iov_base, v[i].iov_len, &used);
		total += used;
		if (r != HTTP_FEED_MORE)
			break;
	}
	/* Whatever the parser thought of it, the bytes were read. */
	evbuffer_drain(in, len);
	if (r == HTTP_FEED_DONE)
		hc->terminal = 1;
	/* Not reading at all: stop once the status line is in. */
	if (hc->lg->cfg.hold_read_bps == 0 && hc->hr.state > HTTP_HEADER_LINE)
		bufferevent_disable(bev, EV_READ);
}

static void
hold_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct hold_conn	*hc = arg;

	if (what & BEV_EVENT_CONNECTED) {
		hc->connected = 1;
		return;
	}
	hc->closed = 1;
	bufferevent_disable(bev, EV_READ | EV_WRITE);
}

static void
hold_start(struct lg *lg)
{
	struct hold_conn	*hc;
	struct timeval		 tick = { 0, 100000 };
	char			 job_id[64], err[160];
	size_t			 per_tick;
	int			 i;

	if (lg->cfg.hold_read_bps > 0) {
		per_tick = (size_t)lg->cfg.hold_read_bps / 10;
		if (per_tick == 0)
			per_tick = 1;
		lg->hold_bucket = ev_token_bucket_cfg_new(per_tick, per_tick,
		    EV_RATE_LIMIT_MAX, EV_RATE_LIMIT_MAX, &tick);
	}
	lg->holds = lg_xrealloc(NULL, (size_t)lg->cfg.hold * sizeof *lg->holds);
	memset(lg->holds, 0, (size_t)lg->cfg.hold * sizeof *lg->holds);
	for (i = 0; i < lg->cfg.hold; i++) {
		hc = &lg->holds[i];
		hc->lg = lg;
		http_resp_init(&hc->hr, hold_on_body, hc);
		sse_init(&hc->sse, hold_on_event, hc);
		lg->hold_report.requested++;
		hc->bev = lg_connect(lg, hold_read_cb, hold_event_cb, hc, err,
		    sizeof err);
		if (hc->bev == NULL) {
			hc->closed = 1;
			lg_note_error(lg, "hold", err);
			continue;
		}
		if (lg->hold_bucket != NULL)
			bufferevent_set_rate_limit(hc->bev, lg->hold_bucket);
		snprintf(job_id, sizeof job_id, "%s-hold-%d", lg->cfg.id_prefix,
		    i);
		/* No deadline: a held stream is meant to stay open. */
		if (lg_write_request(lg, hc->bev, job_id,
		    lg->cfg.hold_max_tokens, 0) == -1) {
			fprintf(stderr, "loadgen: cannot build a request\n");
			exit(1);
		}
	}
}

/* Take stock of the hold connections, then close them all. */
static void
hold_finish(struct lg *lg)
{
	struct hold_report	*hr = &lg->hold_report;
	struct hold_conn	*hc;
	struct tcp_info		 ti;
	socklen_t		 tl;
	int			 i, unread, fd, established;

	for (i = 0; i < lg->cfg.hold; i++) {
		hc = &lg->holds[i];
		hr->bytes_read += hc->bytes;
		hr->tokens += hc->tokens;
		if (hc->connected)
			hr->connected++;
		else {
			hr->connect_failed++;
			goto next;
		}
		if (hc->hr.status != 0)
			hr->headers++;
		if (hc->hr.status == 200)
			hr->status_200++;
		else if (hc->hr.status != 0)
			hr->http_error++;
		established = 0;
		fd = hc->bev != NULL ? bufferevent_getfd(hc->bev) : -1;
		if (fd >= 0) {
			/*
			 * Reading is off, so libevent cannot see a close:
			 * ask the kernel.  CLOSE_WAIT means the server sent
			 * FIN; CLOSE means it reset the connection.
			 */
			tl = sizeof ti;
			memset(&ti, 0, sizeof ti);
			if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti,
			    &tl) == 0)
				established = ti.tcpi_state == TCP_ESTABLISHED;
			if (ioctl(fd, FIONREAD, &unread) == 0 && unread > 0)
				hr->bytes_unread += (uint64_t)unread;
		}
		if (hc->terminal)
			hr->finished++;
		else if (hc->closed || !established)
			hr->closed++;
		else if (hc->hr.status == 0 || hc->hr.status == 200)
			hr->open++;
next:
		if (hc->bev != NULL)
			bufferevent_free(hc->bev);
		hc->bev = NULL;
		http_resp_free(&hc->hr);
		sse_free(&hc->sse);
	}
	hr->done = 1;
}

static void
hold_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lg	*lg = arg;

	(void)fd;
	(void)what;

	hold_finish(lg);
	lg_check_done(lg);
}

/* ------------------------------------------------------------------ */
/* Run control.                                                        */

static void
lg_check_done(struct lg *lg)
{
	if (lg->slots_active > 0)
		return;
	if (lg->cfg.hold > 0 && !lg->hold_report.done)
		return;
	/* With no load and no hold, only the duration ends a health run. */
	if (lg->cfg.total == 0 && lg->cfg.hold == 0 && !lg->duration_over)
		return;
	if (lg->health.tick != NULL)
		evtimer_del(lg->health.tick);
	event_base_loopexit(lg->base, NULL);
}

static void
lg_duration_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lg	*lg = arg;

	(void)fd;
	(void)what;

	lg->stopping = 1;
	lg->duration_over = 1;
	lg_check_done(lg);
}

static void
lg_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct lg	*lg = arg;

	(void)sig;
	(void)what;

	if (lg->signals++ == 0 && lg->slots_active > 0) {
		fprintf(stderr, "loadgen: stopping; in-flight requests finish "
		    "(signal again to stop now)\n");
		lg->stopping = 1;
		lg->duration_over = 1;
		return;
	}
	event_base_loopexit(lg->base, NULL);
}

/* ------------------------------------------------------------------ */
/* Report.                                                             */

struct lg_stat_row {
	const char	*name;
	const char	*json_name;
	struct samples	*s;
};

static json_t *
report_num(double x)
{
	return (isfinite(x) ? json_real(x) : json_null());
}

static json_t *
report_samples_json(struct samples *s)
{
	json_t	*o = json_object();

	json_object_set_new(o, "n", json_integer((json_int_t)s->n));
	json_object_set_new(o, "mean", report_num(samples_mean(s)));
	json_object_set_new(o, "min", report_num(samples_pct(s, 0)));
	json_object_set_new(o, "p50", report_num(samples_pct(s, 0.50)));
	json_object_set_new(o, "p90", report_num(samples_pct(s, 0.90)));
	json_object_set_new(o, "p95", report_num(samples_pct(s, 0.95)));
	json_object_set_new(o, "p99", report_num(samples_pct(s, 0.99)));
	json_object_set_new(o, "p999", report_num(samples_pct(s, 0.999)));
	json_object_set_new(o, "max", report_num(samples_pct(s, 1.0)));
	return (o);
}

static json_t *
report_counters_json(const struct counters *c)
{
	json_t	*o = json_object();
	size_t	 i;

	for (i = 0; i < c->n; i++)
		json_object_set_new(o, c->v[i].name,
		    json_integer((json_int_t)c->v[i].n));
	return (o);
}

static void
report_counters_text(const char *title, const struct counters *c)
{
	size_t	i;

	if (c->n == 0)
		return;
	printf("%-16s", title);
	for (i = 0; i < c->n; i++)
		printf(" %s %" PRIu64 "%s", c->v[i].name, c->v[i].n,
		    i + 1 < c->n ? "," : "");
	printf("\n");
}

static double
report_wall(const struct lg *lg)
{
	if (lg->t_first_send == 0 || lg->t_last_end <= lg->t_first_send)
		return (0);
	return (lg->t_last_end - lg->t_first_send);
}

static void
report_json(struct lg *lg, struct lg_stat_row *rows, size_t nrows)
{
	const struct lg_config	*cfg = &lg->cfg;
	struct hold_report	*hr = &lg->hold_report;
	json_t			*o, *c, *lat, *x;
	double			 wall = report_wall(lg);
	size_t			 i;
	char			*s;

	o = json_object();
	c = json_pack("{s:s, s:s, s:s, s:i, s:I, s:i, s:f, s:f, s:f, s:i, "
	    "s:f, s:f, s:b, s:i}",
	    "host", cfg->host, "port", cfg->port,
	    "api", cfg->api == LG_API_ORCD ? "orcd" : "openai",
	    "concurrency", cfg->concurrency, "requests", (json_int_t)cfg->total,
	    "max_tokens", cfg->max_tokens, "health_rps", cfg->health_rps,
	    "cancel_frac", cfg->cancel_frac, "disconnect_frac",
	    cfg->disconnect_frac, "deadline_ms", cfg->deadline_ms,
	    "duration_s", cfg->duration_s, "timeout_s", cfg->timeout_s,
	    "ignore_eos", cfg->ignore_eos, "prompt_bytes",
	    (int)strlen(cfg->prompt));
	json_object_set_new(o, "config", c);
	json_object_set_new(o, "wall_s", json_real(wall));
	json_object_set_new(o, "requests", json_pack("{s:I, s:I, s:f, s:f}",
	    "finished", (json_int_t)lg->finished, "ok",
	    (json_int_t)lg->outcomes[OUT_OK], "per_s", wall > 0 ?
	    (double)lg->finished / wall : 0.0, "ok_per_s", wall > 0 ?
	    (double)lg->outcomes[OUT_OK] / wall : 0.0));
	json_object_set_new(o, "tokens", json_pack("{s:I, s:f}", "total",
	    (json_int_t)lg->tokens_total, "per_s", wall > 0 ?
	    (double)lg->tokens_total / wall : 0.0));
	json_object_set_new(o, "connections", json_pack("{s:I, s:I, s:I}",
	    "opened", (json_int_t)lg->connections, "reused_requests",
	    (json_int_t)lg->reused_requests, "keepalive_retries",
	    (json_int_t)lg->keepalive_retries));
	lat = json_object();
	for (i = 0; i < nrows; i++)
		json_object_set_new(lat, rows[i].json_name,
		    report_samples_json(rows[i].s));
	json_object_set_new(o, "latency_ms", lat);
	json_object_set_new(o, "tokens_per_request",
	    report_samples_json(&lg->tokens_per_req));
	x = json_object();
	for (i = 0; i < OUT_COUNT; i++)
		json_object_set_new(x, lg_outcome_names[i],
		    json_integer((json_int_t)lg->outcomes[i]));
	json_object_set_new(o, "outcomes", x);
	json_object_set_new(o, "stop_reasons",
	    report_counters_json(&lg->stop_reasons));
	json_object_set_new(o, "sse_error_codes",
	    report_counters_json(&lg->sse_error_codes));
	json_object_set_new(o, "http_status",
	    report_counters_json(&lg->http_status));
	json_object_set_new(o, "http_error_codes",
	    report_counters_json(&lg->http_error_codes));
	json_object_set_new(o, "cancel", json_pack("{s:I, s:I, s:I, s:I, s:I,"
	    " s:o}", "sent", (json_int_t)lg->cancel_sent, "confirmed",
	    (json_int_t)lg->cancel_confirmed, "late",
	    (json_int_t)lg->cancel_late, "other", (json_int_t)lg->cancel_other,
	    "errors", (json_int_t)lg->cancel_errors, "status",
	    report_counters_json(&lg->cancel_status)));
	json_object_set_new(o, "health", json_pack("{s:I, s:I, s:I, s:o}",
	    "sent", (json_int_t)lg->health.sent, "skipped",
	    (json_int_t)lg->health.skipped, "errors",
	    (json_int_t)lg->health.errors, "status",
	    report_counters_json(&lg->health_status)));
	if (cfg->hold > 0)
		json_object_set_new(o, "hold", json_pack("{s:i, s:f, s:i, s:I,"
		    " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		    "connections", cfg->hold, "seconds", cfg->hold_seconds,
		    "read_bps", cfg->hold_read_bps,
		    "connected", (json_int_t)hr->connected,
		    "connect_failed", (json_int_t)hr->connect_failed,
		    "headers", (json_int_t)hr->headers,
		    "status_200", (json_int_t)hr->status_200,
		    "open", (json_int_t)hr->open,
		    "finished", (json_int_t)hr->finished,
		    "closed", (json_int_t)hr->closed,
		    "http_error", (json_int_t)hr->http_error,
		    "bytes_read", (json_int_t)hr->bytes_read,
		    "bytes_unread", (json_int_t)hr->bytes_unread,
		    "tokens", (json_int_t)hr->tokens));
	json_object_set_new(o, "anomalies", json_pack("{s:I, s:I, s:I, s:I, "
	    "s:I}", "token_index_gaps", (json_int_t)lg->index_gaps,
	    "token_count_mismatch", (json_int_t)lg->token_mismatch,
	    "events_after_end", (json_int_t)lg->events_after_end,
	    "unknown_events", (json_int_t)lg->unknown_events,
	    "framing_timeouts", (json_int_t)lg->framing_timeouts));
	json_object_set_new(o, "last_error", lg->last_error[0] != '\0' ?
	    json_string(lg->last_error) : json_null());
	s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
	if (s != NULL)
		printf("%s\n", s);
	free(s);
	json_decref(o);
}

static void
report_text(struct lg *lg, struct lg_stat_row *rows, size_t nrows)
{
	const struct lg_config	*cfg = &lg->cfg;
	struct hold_report	*hr = &lg->hold_report;
	struct samples		*s;
	double			 wall = report_wall(lg);
	size_t			 i;
	char			 total[32];

	if (cfg->total < 0)
		snprintf(total, sizeof total, "unlimited");
	else
		snprintf(total, sizeof total, "%" PRId64, cfg->total);
	printf("loadgen: %s API at %s, concurrency %d, %s requests%s, "
	    "max_tokens %d\n", cfg->api == LG_API_ORCD ? "orcd" : "openai",
	    lg->hostport, cfg->concurrency, total, cfg->duration_s > 0 ?
	    " or duration" : "", cfg->max_tokens);
	printf("%-16s %.3f s (first send to last end)\n", "wall time", wall);
	printf("%-16s %" PRIu64 " finished, %" PRIu64 " ok, %.2f req/s "
	    "(%.2f ok/s)\n", "requests", lg->finished, lg->outcomes[OUT_OK],
	    wall > 0 ? (double)lg->finished / wall : 0.0, wall > 0 ?
	    (double)lg->outcomes[OUT_OK] / wall : 0.0);
	printf("%-16s %" PRIu64 " received, %.1f tok/s aggregate\n", "tokens",
	    lg->tokens_total, wall > 0 ? (double)lg->tokens_total / wall : 0.0);
	printf("%-16s %" PRIu64 " opened, %" PRIu64 " requests reused one, %"
	    PRIu64 " resent after a keep-alive close\n", "connections",
	    lg->connections, lg->reused_requests, lg->keepalive_retries);
	printf("\n%-16s %8s %9s %9s %9s %9s %9s %9s %9s\n", "latency (ms)", "n",
	    "mean", "p50", "p90", "p95", "p99", "p99.9", "max");
	for (i = 0; i < nrows; i++) {
		s = rows[i].s;
		if (s->n == 0)
			continue;
		printf("%-16s %8zu %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n",
		    rows[i].name, s->n, samples_mean(s), samples_pct(s, 0.5),
		    samples_pct(s, 0.9), samples_pct(s, 0.95),
		    samples_pct(s, 0.99), samples_pct(s, 0.999),
		    samples_pct(s, 1.0));
	}
	printf("\n%-16s", "outcomes");
	for (i = 0; i < OUT_COUNT; i++)
		printf(" %s %" PRIu64 "%s", lg_outcome_names[i],
		    lg->outcomes[i], i + 1 < OUT_COUNT ? "," : "\n");
	report_counters_text("stop reasons", &lg->stop_reasons);
	report_counters_text("sse errors", &lg->sse_error_codes);
	report_counters_text("http status", &lg->http_status);
	report_counters_text("http errors", &lg->http_error_codes);
	if (lg->cancel_sent > 0 || lg->cancel_errors > 0) {
		printf("%-16s sent %" PRIu64 ", confirmed %" PRIu64 ", late %"
		    PRIu64 ", other %" PRIu64 ", errors %" PRIu64 "\n",
		    "cancel", lg->cancel_sent, lg->cancel_confirmed,
		    lg->cancel_late, lg->cancel_other, lg->cancel_errors);
		report_counters_text("cancel status", &lg->cancel_status);
	}
	if (lg->health.sent > 0 || lg->health.errors > 0) {
		printf("%-16s sent %" PRIu64 ", skipped %" PRIu64 ", errors %"
		    PRIu64 "\n", "health", lg->health.sent,
		    lg->health.skipped, lg->health.errors);
		report_counters_text("health status", &lg->health_status);
	}
	if (cfg->hold > 0)
		printf("%-16s %d for %g s at %d B/s: connected %" PRIu64
		    ", open %" PRIu64 ", finished %" PRIu64 ", closed %"
		    PRIu64 ", http errors %" PRIu64 ", connect failed %"
		    PRIu64 "; %" PRIu64 " bytes read, %" PRIu64 " unread, %"
		    PRIu64 " tokens\n", "hold", cfg->hold, cfg->hold_seconds,
		    cfg->hold_read_bps, hr->connected, hr->open, hr->finished,
		    hr->closed, hr->http_error, hr->connect_failed,
		    hr->bytes_read, hr->bytes_unread, hr->tokens);
	printf("%-16s token index gaps %" PRIu64 ", token count mismatches %"
	    PRIu64 ", events after end %" PRIu64 ", unknown events %" PRIu64
	    ", framing timeouts %" PRIu64 "\n", "anomalies", lg->index_gaps,
	    lg->token_mismatch, lg->events_after_end, lg->unknown_events,
	    lg->framing_timeouts);
	if (lg->last_error[0] != '\0')
		printf("%-16s %s\n", "last error", lg->last_error);
}

static void
report(struct lg *lg)
{
	struct lg_stat_row rows[] = {
		{ "ttft", "ttft", &lg->ttft },
		{ "inter-token", "inter_token", &lg->itl },
		{ "e2e (ok)", "e2e", &lg->e2e },
		{ "queue (server)", "queue", &lg->queue },
		{ "health", "health", &lg->health_lat },
		{ "cancel", "cancel", &lg->cancel_lat },
		{ "cancel ack", "cancel_ack", &lg->cancel_ack },
	};

	if (lg->cfg.json)
		report_json(lg, rows, sizeof rows / sizeof rows[0]);
	else
		report_text(lg, rows, sizeof rows / sizeof rows[0]);
}

/* ------------------------------------------------------------------ */
/* Command line.                                                       */

static void
usage(FILE *f)
{
	fprintf(f,
"usage: loadgen [options]\n"
"Drive orcd's POST /execute SSE API (or an OpenAI-compatible\n"
"/v1/completions stream, e.g. llama-server) and report latency percentiles.\n"
"\n"
"  --host HOST            server address (default 127.0.0.1)\n"
"  --port, -p PORT        server port (default 8080)\n"
"  -c, --concurrency N    streams kept open at all times (default 1)\n"
"  -n, --requests N       requests in all (default 100; unlimited with\n"
"                         --duration; 0: no load, only health or hold)\n"
"  --prompt TEXT          prompt (default \"Once upon a time\")\n"
"  --prompt-file F        prompt read from a file\n"
"  --prompt-tokens N      prompt of about N tokens (a repeated word)\n"
"  -m, --max-tokens N     tokens to generate per request (default 32)\n"
"  --temperature T        sampling temperature (default 0)\n"
"  --ignore-eos           ask the server to ignore end-of-sequence\n"
"  --api orcd|openai      orcd: POST /execute; openai: POST /v1/completions\n"
"  --model NAME           \"model\" field for --api openai\n"
"  --cache-prompt         let llama-server reuse its prompt cache (off)\n"
"  --deadline-ms MS       send X-Deadline-Ms: MS with each request\n"
"  --duration S           stop starting requests after S seconds\n"
"  --timeout S            give up on a request after S seconds (default 120;\n"
"                         0: never)\n"
"  --health-rps R         GET /health R times a second on its own\n"
"                         keep-alive connection\n"
"  --cancel-frac F        cancel this fraction of requests by POST /cancel\n"
"                         after a random number of tokens (orcd only)\n"
"  --disconnect-frac F    close this fraction of streams after a random\n"
"                         number of tokens\n"
"  --hold N               also open N streams that read slowly or not at all\n"
"  --hold-seconds S       keep them for S seconds (default 10)\n"
"  --hold-read-bps B      read B bytes/s on each (default 0: stop reading\n"
"                         after the response headers)\n"
"  --hold-max-tokens N    max_tokens of held streams (default 1000000)\n"
"  --seed N               random seed for cancel/disconnect picks (1)\n"
"  --id-prefix P          job ids are P-<n> (default lg)\n"
"  --json                 print one JSON object instead of the table\n"
"  -h, --help             this text\n"
"\n"
"Latencies: ttft is request sent to first token; inter-token is the gap\n"
"between consecutive tokens of a request; e2e is sent to end event (ok\n"
"requests); cancel is POST /cancel sent to the stream's cancelled error.\n"
"Percentiles are nearest-rank over all samples.  Tokens/s is all tokens\n"
"received over the time from the first send to the last end.\n");
}

static int
parse_int(const char *s, const char *opt, long long min, long long max,
    long long *out)
{
	char		*end;
	long long	 v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "loadgen: %s: \"%s\" is not an integer in "
		    "[%lld, %lld]\n", opt, s, min, max);
		return (-1);
	}
	*out = v;
	return (0);
}

static int
parse_double(const char *s, const char *opt, double min, double max,
    double *out)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max)) {
		fprintf(stderr, "loadgen: %s: \"%s\" is not a number in "
		    "[%g, %g]\n", opt, s, min, max);
		return (-1);
	}
	*out = v;
	return (0);
}

static char *
read_file(const char *path)
{
	FILE	*f;
	char	*buf = NULL;
	size_t	 len = 0, n;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
		return (NULL);
	}
	buf = lg_xrealloc(NULL, 65536 + 1);
	while ((n = fread(buf + len, 1, 65536, f)) > 0) {
		len += n;
		if (len > LG_PROMPT_FILE_MAX) {
			fprintf(stderr, "loadgen: %s: over %d bytes\n", path,
			    LG_PROMPT_FILE_MAX);
			goto fail;
		}
		buf = lg_xrealloc(buf, len + 65536 + 1);
	}
	if (ferror(f)) {
		fprintf(stderr, "loadgen: %s: read error\n", path);
		goto fail;
	}
	fclose(f);
	buf[len] = '\0';
	return (buf);
fail:
	fclose(f);
	free(buf);
	return (NULL);
}

enum {
	OPT_HOST = 256, OPT_PROMPT, OPT_PROMPT_FILE, OPT_PROMPT_TOKENS,
	OPT_API, OPT_HEALTH_RPS, OPT_CANCEL_FRAC, OPT_DISCONNECT_FRAC,
	OPT_DEADLINE_MS, OPT_DURATION, OPT_JSON, OPT_IGNORE_EOS, OPT_TIMEOUT,
	OPT_HOLD, OPT_HOLD_SECONDS, OPT_HOLD_READ_BPS, OPT_HOLD_MAX_TOKENS,
	OPT_SEED, OPT_MODEL, OPT_CACHE_PROMPT, OPT_ID_PREFIX, OPT_TEMPERATURE
};

static int
parse_args(struct lg_config *cfg, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, OPT_HOST },
		{ "port", required_argument, NULL, 'p' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "requests", required_argument, NULL, 'n' },
		{ "prompt", required_argument, NULL, OPT_PROMPT },
		{ "prompt-file", required_argument, NULL, OPT_PROMPT_FILE },
		{ "prompt-tokens", required_argument, NULL, OPT_PROMPT_TOKENS },
		{ "max-tokens", required_argument, NULL, 'm' },
		{ "temperature", required_argument, NULL, OPT_TEMPERATURE },
		{ "api", required_argument, NULL, OPT_API },
		{ "model", required_argument, NULL, OPT_MODEL },
		{ "cache-prompt", no_argument, NULL, OPT_CACHE_PROMPT },
		{ "health-rps", required_argument, NULL, OPT_HEALTH_RPS },
		{ "cancel-frac", required_argument, NULL, OPT_CANCEL_FRAC },
		{ "disconnect-frac", required_argument, NULL,
		    OPT_DISCONNECT_FRAC },
		{ "deadline-ms", required_argument, NULL, OPT_DEADLINE_MS },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "ignore-eos", no_argument, NULL, OPT_IGNORE_EOS },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "hold-seconds", required_argument, NULL, OPT_HOLD_SECONDS },
		{ "hold-read-bps", required_argument, NULL, OPT_HOLD_READ_BPS },
		{ "hold-max-tokens", required_argument, NULL,
		    OPT_HOLD_MAX_TOKENS },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "id-prefix", required_argument, NULL, OPT_ID_PREFIX },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	long long	 v;
	int		 ch, total_given = 0, prompt_sources = 0;
	size_t		 i;
	char		*p;

	cfg->host = "127.0.0.1";
	cfg->port = "8080";
	cfg->concurrency = 1;
	cfg->total = 100;
	cfg->max_tokens = 32;
	cfg->api = LG_API_ORCD;
	cfg->timeout_s = 120;
	cfg->hold_seconds = 10;
	cfg->hold_max_tokens = 1000000;
	cfg->seed = 1;
	cfg->id_prefix = "lg";

	while ((ch = getopt_long(argc, argv, "p:c:n:m:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case OPT_HOST:
			cfg->host = optarg;
			break;
		case 'p':
			if (parse_int(optarg, "--port", 1, 65535, &v) == -1)
				return (-1);
			cfg->port = optarg;
			break;
		case 'c':
			if (parse_int(optarg, "-c", 1, 1000000, &v) == -1)
				return (-1);
			cfg->concurrency = (int)v;
			break;
		case 'n':
			if (parse_int(optarg, "-n", 0, INT64_MAX / 2, &v) == -1)
				return (-1);
			cfg->total = v;
			total_given = 1;
			break;
		case OPT_PROMPT:
			free(cfg->prompt);
			if ((cfg->prompt = strdup(optarg)) == NULL)
				return (-1);
			prompt_sources++;
			break;
		case OPT_PROMPT_FILE:
			free(cfg->prompt);
			if ((cfg->prompt = read_file(optarg)) == NULL)
				return (-1);
			prompt_sources++;
			break;
		case OPT_PROMPT_TOKENS:
			if (parse_int(optarg, "--prompt-tokens", 1, 10000000,
			    &v) == -1)
				return (-1);
			free(cfg->prompt);
			/* "hello" is one token in every common vocabulary. */
			cfg->prompt = lg_xrealloc(NULL, (size_t)v * 6 + 1);
			for (i = 0, p = cfg->prompt; i < (size_t)v; i++) {
				memcpy(p, i == 0 ? "hello" : " hello",
				    i == 0 ? 5 : 6);
				p += i == 0 ? 5 : 6;
			}
			*p = '\0';
			prompt_sources++;
			break;
		case 'm':
			if (parse_int(optarg, "--max-tokens", 1, INT_MAX,
			    &v) == -1)
				return (-1);
			cfg->max_tokens = (int)v;
			break;
		case OPT_TEMPERATURE:
			if (parse_double(optarg, "--temperature", 0, 100,
			    &cfg->temperature) == -1)
				return (-1);
			break;
		case OPT_API:
			if (strcmp(optarg, "orcd") == 0)
				cfg->api = LG_API_ORCD;
			else if (strcmp(optarg, "openai") == 0)
				cfg->api = LG_API_OPENAI;
			else {
				fprintf(stderr, "loadgen: --api: \"%s\" is "
				    "neither orcd nor openai\n", optarg);
				return (-1);
			}
			break;
		case OPT_MODEL:
			cfg->model = optarg;
			break;
		case OPT_CACHE_PROMPT:
			cfg->cache_prompt = 1;
			break;
		case OPT_HEALTH_RPS:
			if (parse_double(optarg, "--health-rps", 0, 100000,
			    &cfg->health_rps) == -1)
				return (-1);
			break;
		case OPT_CANCEL_FRAC:
			if (parse_double(optarg, "--cancel-frac", 0, 1,
			    &cfg->cancel_frac) == -1)
				return (-1);
			break;
		case OPT_DISCONNECT_FRAC:
			if (parse_double(optarg, "--disconnect-frac", 0, 1,
			    &cfg->disconnect_frac) == -1)
				return (-1);
			break;
		case OPT_DEADLINE_MS:
			if (parse_int(optarg, "--deadline-ms", 1, INT_MAX,
			    &v) == -1)
				return (-1);
			cfg->deadline_ms = (int)v;
			break;
		case OPT_DURATION:
			if (parse_double(optarg, "--duration", 0.001, 1e7,
			    &cfg->duration_s) == -1)
				return (-1);
			break;
		case OPT_JSON:
			cfg->json = 1;
			break;
		case OPT_IGNORE_EOS:
			cfg->ignore_eos = 1;
			break;
		case OPT_TIMEOUT:
			if (parse_double(optarg, "--timeout", 0, 1e7,
			    &cfg->timeout_s) == -1)
				return (-1);
			break;
		case OPT_HOLD:
			if (parse_int(optarg, "--hold", 0, 1000000, &v) == -1)
				return (-1);
			cfg->hold = (int)v;
			break;
		case OPT_HOLD_SECONDS:
			if (parse_double(optarg, "--hold-seconds", 0.001, 1e7,
			    &cfg->hold_seconds) == -1)
				return (-1);
			break;
		case OPT_HOLD_READ_BPS:
			if (parse_int(optarg, "--hold-read-bps", 0, INT_MAX,
			    &v) == -1)
				return (-1);
			cfg->hold_read_bps = (int)v;
			break;
		case OPT_HOLD_MAX_TOKENS:
			if (parse_int(optarg, "--hold-max-tokens", 1, INT_MAX,
			    &v) == -1)
				return (-1);
			cfg->hold_max_tokens = (int)v;
			break;
		case OPT_SEED:
			if (parse_int(optarg, "--seed", 0, INT64_MAX, &v) == -1)
				return (-1);
			cfg->seed = (uint64_t)v;
			break;
		case OPT_ID_PREFIX:
			cfg->id_prefix = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return (-1);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "loadgen: unexpected argument \"%s\"\n",
		    argv[optind]);
		return (-1);
	}
	if (prompt_sources > 1) {
		fprintf(stderr, "loadgen: give one of --prompt, --prompt-file "
		    "and --prompt-tokens\n");
		return (-1);
	}
	if (cfg->prompt == NULL &&
	    (cfg->prompt = strdup("Once upon a time")) == NULL)
		return (-1);
	if (!total_given)
		cfg->total = cfg->duration_s > 0 ? -1 : cfg->hold > 0 ? 0 : 100;
	if (cfg->cancel_frac + cfg->disconnect_frac > 1) {
		fprintf(stderr, "loadgen: --cancel-frac plus --disconnect-frac "
		    "is over 1\n");
		return (-1);
	}
	if (cfg->cancel_frac > 0 && cfg->api != LG_API_ORCD) {
		fprintf(stderr, "loadgen: --cancel-frac needs --api orcd (the "
		    "OpenAI API has no cancel; use --disconnect-frac)\n");
		return (-1);
	}
	if (cfg->total == 0 && cfg->hold == 0 &&
	    !(cfg->health_rps > 0 && cfg->duration_s > 0)) {
		fprintf(stderr, "loadgen: nothing to do: -n 0 needs --hold, or "
		    "--health-rps with --duration\n");
		return (-1);
	}
	return (0);
}

/* ------------------------------------------------------------------ */
/* Main.                                                               */

static int
lg_resolve(struct lg *lg)
{
	struct addrinfo	 hints, *res;
	int		 r;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((r = getaddrinfo(lg->cfg.host, lg->cfg.port, &hints, &res)) != 0) {
		fprintf(stderr, "loadgen: %s:%s: %s\n", lg->cfg.host,
		    lg->cfg.port, gai_strerror(r));
		return (-1);
	}
	memcpy(&lg->addr, res->ai_addr, res->ai_addrlen);
	lg->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(lg->hostport, sizeof lg->hostport,
	    strchr(lg->cfg.host, ':') != NULL ? "[%s]:%s" : "%s:%s",
	    lg->cfg.host, lg->cfg.port);
	return (0);
}

/* Many streams need many descriptors; the default soft limit is 1024. */
static void
lg_raise_nofile(struct lg *lg)
{
	struct rlimit	rl;
	rlim_t		want;

	want = (rlim_t)lg->cfg.concurrency * 2 + (rlim_t)lg->cfg.hold + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur >= want)
		return;
	if (rl.rlim_max < want) {
		struct rlimit	up = { want, want };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < want)
		fprintf(stderr, "loadgen: warning: descriptor limit %llu is "
		    "below the %llu this run may need\n",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

static void
lg_free(struct lg *lg)
{
	struct ctl	*c, *next;
	struct slot	*s;
	int		 i;

	for (i = 0; lg->slots != NULL && i < lg->cfg.concurrency; i++) {
		s = &lg->slots[i];
		slot_close(s);
		if (s->timer != NULL)
			event_free(s->timer);
		http_resp_free(&s->hr);
		sse_free(&s->sse);
	}
	free(lg->slots);
	for (c = lg->ctls; c != NULL; c = next) {
		next = c->next;
		ctl_close(c);
		http_resp_free(&c->hr);
		free(c);
	}
	if (lg->holds != NULL && !lg->hold_report.done)
		hold_finish(lg);
	free(lg->holds);
	if (lg->hold_bucket != NULL)
		ev_token_bucket_cfg_free(lg->hold_bucket);
	health_close(lg);
	http_resp_free(&lg->health.hr);
	if (lg->health.tick != NULL)
		event_free(lg->health.tick);
	if (lg->hold_ev != NULL)
		event_free(lg->hold_ev);
	if (lg->duration_ev != NULL)
		event_free(lg->duration_ev);
	if (lg->sigint_ev != NULL)
		event_free(lg->sigint_ev);
	if (lg->sigterm_ev != NULL)
		event_free(lg->sigterm_ev);
	samples_free(&lg->ttft);
	samples_free(&lg->itl);
	samples_free(&lg->e2e);
	samples_free(&lg->queue);
	samples_free(&lg->tokens_per_req);
	samples_free(&lg->cancel_lat);
	samples_free(&lg->cancel_ack);
	samples_free(&lg->health_lat);
	counters_free(&lg->stop_reasons);
	counters_free(&lg->sse_error_codes);
	counters_free(&lg->http_status);
	counters_free(&lg->http_error_codes);
	counters_free(&lg->cancel_status);
	counters_free(&lg->health_status);
	if (lg->base != NULL)
		event_base_free(lg->base);
	free(lg->cfg.prompt);
}

int
main(int argc, char **argv)
{
	struct lg	 lg;
	struct timeval	 tv;
	char		*body;
	int		 i, rc = 1;

	memset(&lg, 0, sizeof lg);
	if (parse_args(&lg.cfg, argc, argv) == -1)
		goto out;
	lg.rng = lg.cfg.seed;
	signal(SIGPIPE, SIG_IGN);
	if (lg_resolve(&lg) == -1)
		goto out;
	if ((body = lg_request_body(&lg, "probe", 1)) == NULL) {
		fprintf(stderr, "loadgen: the prompt is not valid UTF-8\n");
		goto out;
	}
	free(body);
	lg_raise_nofile(&lg);
	{
		/* precise timers (timerfd) so the health schedule is kept, and two
		 * priorities so health probes are not queued behind stream reads */
		struct event_config *ec = event_config_new();

		if (ec != NULL)
			event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
		lg.base = ec != NULL ? event_base_new_with_config(ec) : NULL;
		if (ec != NULL)
			event_config_free(ec);
	}
	if (lg.base == NULL || event_base_priority_init(lg.base, 2) != 0) {
		fprintf(stderr, "loadgen: event_base_new failed\n");
		goto out;
	}
	lg.sigint_ev = evsignal_new(lg.base, SIGINT, lg_signal_cb, &lg);
	lg.sigterm_ev = evsignal_new(lg.base, SIGTERM, lg_signal_cb, &lg);
	evsignal_add(lg.sigint_ev, NULL);
	evsignal_add(lg.sigterm_ev, NULL);

	if (lg.cfg.duration_s > 0) {
		lg.duration_ev = evtimer_new(lg.base, lg_duration_cb, &lg);
		tv = clock_timeval(lg.cfg.duration_s);
		evtimer_add(lg.duration_ev, &tv);
	}
	if (lg.cfg.hold > 0) {
		hold_start(&lg);
		lg.hold_ev = evtimer_new(lg.base, hold_timer_cb, &lg);
		tv = clock_timeval(lg.cfg.hold_seconds);
		evtimer_add(lg.hold_ev, &tv);
	}
	if (lg.cfg.health_rps > 0) {
		lg.health.tick = event_new(lg.base, -1, EV_PERSIST,
		    health_tick_cb, &lg);
		http_resp_init(&lg.health.hr, NULL, NULL);
		tv = clock_timeval(1.0 / lg.cfg.health_rps);
		evtimer_add(lg.health.tick, &tv);
	}
	lg.slots = lg_xrealloc(NULL, (size_t)lg.cfg.concurrency *
	    sizeof *lg.slots);
	memset(lg.slots, 0, (size_t)lg.cfg.concurrency * sizeof *lg.slots);
	for (i = 0; i < lg.cfg.concurrency; i++) {
		lg.slots[i].lg = &lg;
		lg.slots[i].index = i;
		lg.slots[i].timer = evtimer_new(lg.base, slot_timer_cb,
		    &lg.slots[i]);
		http_resp_init(&lg.slots[i].hr, slot_on_body, &lg.slots[i]);
		sse_init(&lg.slots[i].sse, slot_on_event, &lg.slots[i]);
	}
	lg.slots_active = lg.cfg.total == 0 ? 0 : lg.cfg.concurrency;
	for (i = 0; i < lg.cfg.concurrency && lg.cfg.total != 0; i++)
		slot_next(&lg.slots[i]);
	lg_check_done(&lg);

	event_base_dispatch(lg.base);

	if (lg.cfg.hold > 0 && !lg.hold_report.done)
		hold_finish(&lg);
	report(&lg);
	rc = 0;
out:
	lg_free(&lg);
	return (rc);
}
