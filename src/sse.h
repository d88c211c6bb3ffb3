/*
 * Server-Sent Events output.  At model load every vocabulary piece is
 * rendered once as a JSON-escaped string (struct sse_vocab); a token event
 * is then a small copied header, an evbuffer_add_reference() of the piece
 * and a static suffix.  Only a piece that is not complete UTF-8 on its own
 * (or meets a pending partial character) takes the copying path through the
 * request's UTF-8 assembler.  Frames are HTTP/1.1 chunks when the response
 * is chunked.
 */
#ifndef ORCD_SSE_H
#define ORCD_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tokenizer.h"

struct evbuffer;

struct sse_vocab {
	int32_t n;
	char *arena;              /* all escaped pieces */
	uint32_t *off, *len;
	uint8_t *whole;           /* piece is complete UTF-8 by itself */
	const struct tokenizer *tok;
};

struct sse_vocab *sse_vocab_new(const struct tokenizer *t, struct orcd_err *err);
void sse_vocab_free(struct sse_vocab *v);

/* JSON string escaping of n bytes (valid UTF-8 expected); out needs 6n bytes. */
size_t sse_json_escape(const char *in, size_t n, char *out);

struct sse_stream {
	struct evbuffer *out;
	bool chunked;
	struct tokenizer_utf8 u8;
	uint64_t bytes;           /* payload bytes written (for metrics) */
};

void sse_stream_init(struct sse_stream *s, struct evbuffer *out, bool chunked);
/* One event with a JSON data line (copied). */
void sse_event(struct sse_stream *s, const char *name, const char *json, size_t len);
/* A token event {"index":N,"text":"..."}; zero-copy when possible.  The
 * text is the piece of id (through the stream's UTF-8 assembler). */
void sse_token(struct sse_stream *s, const struct sse_vocab *v, int index, int32_t id);
/* A token event with explicit raw text (the stop-string path). */
void sse_token_text(struct sse_stream *s, int index, const char *text, size_t len);
/* Releases a held-back partial character (as U+FFFD) into *out (3 bytes). */
size_t sse_flush_utf8(struct sse_stream *s, char *out);
/* Ends a chunked body (the zero-length chunk). */
void sse_finish(struct sse_stream *s);

#endif
