/*
 * Tokenizers: SentencePiece-style ("llama" vocabularies) and byte-level BPE
 * ("gpt2" vocabularies with the gpt-2, qwen2, llama3, starcoder,
 * deepseek-coder or default pre-tokenizer), loaded from GGUF metadata and
 * giving the same ids as llama.cpp.  Also the token -> text side: the piece
 * each token contributes to output, and a streaming UTF-8 assembler that
 * holds back a character split across tokens.
 *
 * A loaded tokenizer is immutable: any number of threads may encode and
 * look up pieces at once.
 */
#ifndef ORCD_TOKENIZER_H
#define ORCD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

struct tokenizer;

enum tokenizer_type {
	TOKENIZER_SPM,		/* tokenizer.ggml.model "llama" */
	TOKENIZER_BPE,		/* tokenizer.ggml.model "gpt2" */
};

/* Token attributes, from tokenizer.ggml.token_type and llama.cpp's
 * adjustments by token text (end-of-generation markers become CONTROL). */
#define TOKENIZER_ATTR_UNKNOWN		0x01	/* type 2 */
#define TOKENIZER_ATTR_UNUSED		0x02	/* type 5 */
#define TOKENIZER_ATTR_NORMAL		0x04	/* type 1 */
#define TOKENIZER_ATTR_CONTROL		0x08	/* type 3 */
#define TOKENIZER_ATTR_USER_DEFINED	0x10	/* type 4 */
#define TOKENIZER_ATTR_BYTE		0x20	/* type 6 */

/*
 * Reads tokenizer.ggml.* from f.  Everything needed is copied: f may be
 * closed (unmapped) as soon as this returns.  Malformed metadata (missing
 * or mistyped arrays, an empty vocabulary, special ids out of range, merges
 * naming unknown tokens, an unknown model or pre-tokenizer) is an error.
 */
int tokenizer_load(const struct gguf_file *f, struct tokenizer **out, struct orcd_err *err);
void tokenizer_free(struct tokenizer *t);

enum tokenizer_type tokenizer_type(const struct tokenizer *t);
/* The pre-tokenizer name as in the file ("" for SPM). */
const char *tokenizer_pre_name(const struct tokenizer *t);
int32_t tokenizer_n_vocab(const struct tokenizer *t);

/* Special ids; -1 if the vocabulary has none. */
int32_t tokenizer_bos(const struct tokenizer *t);
int32_t tokenizer_eos(const struct tokenizer *t);
int32_t tokenizer_eot(const struct tokenizer *t);
int32_t tokenizer_unk(const struct tokenizer *t);
int32_t tokenizer_pad(const struct tokenizer *t);
/* Whether encoding with add_special prepends BOS / appends EOS. */
bool tokenizer_add_bos(const struct tokenizer *t);
bool tokenizer_add_eos(const struct tokenizer *t);

/* End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by
 * text (<|im_end|>, <|endoftext|>, <|eot_id|>, FIM pad/repo/sep, ...). */
bool tokenizer_is_eog(const struct tokenizer *t, int32_t id);
/* TOKENIZER_ATTR_* bits of id (0 if out of range). */
unsigned tokenizer_attr(const struct tokenizer *t, int32_t id);

/*
 * Encodes len bytes of text (any bytes; need not be valid UTF-8 or
 * NUL-terminated).  add_special: BOS/EOS as the model asks.  parse_special:
 * texts of CONTROL tokens in the input become those tokens (USER_DEFINED
 * ones always do, as in llama.cpp).  *ids is malloc'd (free() it), possibly
 * NULL when *n_ids is 0.
 */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special,
    bool parse_special, int32_t **ids, size_t *n_ids, struct orcd_err *err);

/*
 * The bytes id adds to output text (llama.cpp's token_to_piece with
 * special=false): SPM U+2581 becomes a space and <0xNN> the byte NN, BPE
 * pieces are decoded from the GPT-2 byte alphabet, CONTROL and UNKNOWN
 * tokens give "".  Not NUL-terminated; may be a fragment of a UTF-8
 * character.  Out-of-range ids give "".
 */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id, size_t *len);
/* True if the piece is complete, valid UTF-8 on its own (so it can be sent
 * as it is when no partial character is pending). */
bool tokenizer_piece_is_utf8(const struct tokenizer *t, int32_t id);
/* Concatenation of the pieces of ids (raw bytes, not validated); *out is
 * malloc'd and NUL-terminated. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n_ids, char **out,
    size_t *out_len, struct orcd_err *err);

/* The vocabulary text of id (e.g. "<|im_start|>", "Ġthe", "▁the"). */
const char *tokenizer_token_text(const struct tokenizer *t, int32_t id, size_t *len);
/* The id whose vocabulary text is exactly text[0..len), or -1. */
int32_t tokenizer_token_id(const struct tokenizer *t, const char *text, size_t len);

/*
 * Streaming UTF-8 assembly of generated pieces for one output stream.
 * tokenizer_utf8_feed() writes the valid UTF-8 that the bytes so far make
 * and holds back an incomplete trailing sequence until later bytes complete
 * it.  Ill-formed bytes become U+FFFD (one per maximal ill-formed subpart,
 * as Unicode recommends); nothing is dropped.  out needs
 * TOKENIZER_UTF8_OUT_MAX(len) bytes.
 */
struct tokenizer_utf8 {
	uint8_t pend[4];
	uint8_t n_pend;
};

#define TOKENIZER_UTF8_OUT_MAX(len) (3 * (size_t)(len) + 3)

void tokenizer_utf8_init(struct tokenizer_utf8 *u);
size_t tokenizer_utf8_feed(struct tokenizer_utf8 *u, const char *in, size_t len, char *out);
/* End of stream: a held-back incomplete sequence becomes U+FFFD.  out needs
 * 3 bytes. */
size_t tokenizer_utf8_flush(struct tokenizer_utf8 *u, char *out);
/* True if bytes are held back. */
bool tokenizer_utf8_pending(const struct tokenizer_utf8 *u);

#endif
