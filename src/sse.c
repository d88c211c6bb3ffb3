/* SSE output (see sse.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "sse.h"

static const char token_suffix[] = "\"}\n\n";
static const char token_suffix_chunk[] = "\"}\n\n\r\n";
static const char crlf[] = "\r\n";

size_t
sse_json_escape(const char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		switch (c) {
		case '"': out[o++] = '\\'; out[o++] = '"'; break;
		case '\\': out[o++] = '\\'; out[o++] = '\\'; break;
		case '\n': out[o++] = '\\'; out[o++] = 'n'; break;
		case '\r': out[o++] = '\\'; out[o++] = 'r'; break;
		case '\t': out[o++] = '\\'; out[o++] = 't'; break;
		default:
			if (c < 0x20 || c == 0x7f) {
				memcpy(out + o, "\\u00", 4);
				out[o + 4] = hex[c >> 4];
				out[o + 5] = hex[c & 15];
				o += 6;
			} else {
				out[o++] = (char)c;
			}
		}
	}
	return o;
}

struct sse_vocab *
sse_vocab_new(const struct tokenizer *t, struct orcd_err *err)
{
	struct sse_vocab *v = calloc(1, sizeof(*v));
	size_t total = 0, pos = 0;
	int32_t n = tokenizer_n_vocab(t);

	if (v == NULL)
		goto oom;
	v->n = n;
	v->tok = t;
	v->off = calloc((size_t)n, sizeof(*v->off));
	v->len = calloc((size_t)n, sizeof(*v->len));
	v->whole = calloc((size_t)n, 1);
	if (!v->off || !v->len || !v->whole)
		goto oom;
	for (int32_t i = 0; i < n; i++) {
		size_t len;

		tokenizer_piece(t, i, &len);
		total += 6 * len;
	}
	v->arena = malloc(total ? total : 1);
	if (v->arena == NULL)
		goto oom;
	for (int32_t i = 0; i < n; i++) {
		size_t len;
		const char *p = tokenizer_piece(t, i, &len);

		v->whole[i] = tokenizer_piece_is_utf8(t, i);
		v->off[i] = (uint32_t)pos;
		if (v->whole[i])
			pos += sse_json_escape(p, len, v->arena + pos);
		v->len[i] = (uint32_t)(pos - v->off[i]);
	}
	return v;
oom:
	sse_vocab_free(v);
	orcd_errf(err, "sse: out of memory for the escaped vocabulary");
	return NULL;
}

void
sse_vocab_free(struct sse_vocab *v)
{
	if (v == NULL)
		return;
	free(v->arena);
	free(v->off);
	free(v->len);
	free(v->whole);
	free(v);
}

void
sse_stream_init(struct sse_stream *s, struct evbuffer *out, bool chunked)
{
	memset(s, 0, sizeof(*s));
	s->out = out;
	s->chunked = chunked;
	tokenizer_utf8_init(&s->u8);
}

void
sse_event(struct sse_stream *s, const char *name, const char *json, size_t len)
{
	size_t body = 7 + strlen(name) + 7 + len + 2; /* "event: X\ndata: J\n\n" */

	if (s->chunked)
		evbuffer_add_printf(s->out, "%zx\r\n", body);
	evbuffer_add_printf(s->out, "event: %s\ndata: ", name);
	evbuffer_add(s->out, json, len);
	evbuffer_add(s->out, "\n\n", 2);
	if (s->chunked)
		evbuffer_add(s->out, crlf, 2);
	s->bytes += body;
}

/* The copied part: chunk size line, event line and the JSON up to the text. */
static void
token_head(struct sse_stream *s, int index, size_t text_len)
{
	char head[96];
	int hn = snprintf(head, sizeof(head), "event: token\ndata: {\"index\":%d,\"text\":\"", index);
	size_t body = (size_t)hn + text_len + sizeof(token_suffix) - 1;

	if (s->chunked) {
		char line[128];
		int ln = snprintf(line, sizeof(line), "%zx\r\n%s", body, head);

		evbuffer_add(s->out, line, (size_t)ln);
	} else {
		evbuffer_add(s->out, head, (size_t)hn);
	}
	s->bytes += body;
}

static void
token_tail(struct sse_stream *s)
{
	if (s->chunked)
		evbuffer_add_reference(s->out, token_suffix_chunk,
		    sizeof(token_suffix_chunk) - 1, NULL, NULL);
	else
		evbuffer_add_reference(s->out, token_suffix, sizeof(token_suffix) - 1,
		    NULL, NULL);
}

void
sse_token_text(struct sse_stream *s, int index, const char *text, size_t len)
{
	char stack[1024];
	char *esc = len * 6 <= sizeof(stack) ? stack : malloc(len * 6);
	size_t n;

	if (esc == NULL)
		return;
	n = sse_json_escape(text, len, esc);
	token_head(s, index, n);
	evbuffer_add(s->out, esc, n);
	token_tail(s);
	if (esc != stack)
		free(esc);
}

void
sse_token(struct sse_stream *s, const struct sse_vocab *v, int index, int32_t id)
{
	if (id >= 0 && id < v->n && v->whole[id] && !tokenizer_utf8_pending(&s->u8)) {
		token_head(s, index, v->len[id]);
		if (v->len[id] > 0)
			evbuffer_add_reference(s->out, v->arena + v->off[id], v->len[id],
			    NULL, NULL);
		token_tail(s);
		return;
	}
	/* A partial character: assemble, then copy what is complete. */
	size_t plen;
	const char *p = tokenizer_piece(v->tok, id, &plen);
	char stack[512];
	char *buf = TOKENIZER_UTF8_OUT_MAX(plen) <= sizeof(stack) ? stack :
	    malloc(TOKENIZER_UTF8_OUT_MAX(plen));

	if (buf == NULL)
		return;
	size_t n = tokenizer_utf8_feed(&s->u8, p, plen, buf);
	sse_token_text(s, index, buf, n);
	if (buf != stack)
		free(buf);
}

size_t
sse_flush_utf8(struct sse_stream *s, char *out)
{
	return tokenizer_utf8_flush(&s->u8, out);
}

void
sse_finish(struct sse_stream *s)
{
	if (s->chunked)
		evbuffer_add(s->out, "0\r\n\r\n", 5);
}
