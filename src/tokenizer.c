/*
 * Tokenizers (see tokenizer.h).  The behaviour follows llama.cpp's
 * llama-vocab.cpp so that ids match it exactly:
 *
 *  - special-token partition: the texts of CONTROL / USER_DEFINED /
 *    UNKNOWN tokens are cut out of the input, longest token first, before
 *    anything else runs; the remaining raw fragments are tokenized alone;
 *  - SPM: spaces become U+2581, a space is prefixed to the first fragment
 *    and to each one after a special token, then adjacent symbols (UTF-8
 *    characters) are merged, highest vocabulary score first, and symbols
 *    that are not tokens fall back to <0xNN> byte tokens;
 *  - BPE: the pre-tokenizer (hand-written matchers equivalent to each
 *    model's regex, over codepoint class tables) splits a fragment into
 *    words, each word's bytes map to GPT-2 byte symbols, and adjacent
 *    symbols merge by lowest merge rank.
 *
 * Token texts, scores, attributes and pieces are copied out of the GGUF at
 * load; lookups use open-addressing hash tables.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "unicode.h"

/* tokenizer.ggml.token_type values */
enum {
	TOKEN_TYPE_UNDEFINED = 0,
	TOKEN_TYPE_NORMAL = 1,
	TOKEN_TYPE_UNKNOWN = 2,
	TOKEN_TYPE_CONTROL = 3,
	TOKEN_TYPE_USER_DEFINED = 4,
	TOKEN_TYPE_UNUSED = 5,
	TOKEN_TYPE_BYTE = 6,
};

/* Internal per-token flags, beside the public attributes. */
#define TOKEN_EOG		0x01
#define TOKEN_PIECE_UTF8	0x02

enum pre_kind {
	PRE_DEFAULT,
	PRE_GPT2,
	PRE_QWEN2,
	PRE_LLAMA3,
	PRE_STARCODER,
	PRE_DEEPSEEK_CODER,
};

/* Pre-tokenizer names llama.cpp maps to the regexes implemented here. */
static const struct {
	const char *name;
	enum pre_kind kind;
} pre_names[] = {
	{ "default", PRE_DEFAULT },
	{ "gpt-2", PRE_GPT2 },
	{ "phi-2", PRE_GPT2 },
	{ "mpt", PRE_GPT2 },
	{ "olmo", PRE_GPT2 },
	{ "qwen2", PRE_QWEN2 },
	{ "deepseek-r1-qwen", PRE_QWEN2 },
	{ "megrez", PRE_QWEN2 },
	{ "stablelm2", PRE_QWEN2 },
	{ "llama3", PRE_LLAMA3 },
	{ "llama-v3", PRE_LLAMA3 },
	{ "llama-bpe", PRE_LLAMA3 },
	{ "falcon3", PRE_LLAMA3 },
	{ "pixtral", PRE_LLAMA3 },
	{ "starcoder", PRE_STARCODER },
	{ "refact", PRE_STARCODER },
	{ "smollm", PRE_STARCODER },
	{ "codeshell", PRE_STARCODER },
	{ "command-r", PRE_STARCODER },
	{ "deepseek-coder", PRE_DEEPSEEK_CODER },
};

/*
 * Texts llama.cpp uses to find special tokens that the metadata does not
 * name.  U+FF5C and U+2581 are spelled as UTF-8 bytes.
 */
#define FW_BAR "\xef\xbd\x9c"
#define SPM_SP "\xe2\x96\x81"

static const char *const eot_texts[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
	"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
	"<" FW_BAR "end" SPM_SP "of" SPM_SP "sentence" FW_BAR ">",
	"<end_of_utterance>", NULL
};
static const char *const eom_texts[] = { "<|eom_id|>", NULL };
static const char *const fim_pre_texts[] = {
	"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
	"<" FW_BAR "fim" SPM_SP "begin" FW_BAR ">", "<PRE>", SPM_SP "<PRE>",
	"<|code_prefix|>", "<|prefix|>", NULL
};
static const char *const fim_suf_texts[] = {
	"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
	"<" FW_BAR "fim" SPM_SP "hole" FW_BAR ">", "<SUF>", SPM_SP "<SUF>",
	"<|code_suffix|>", "<|suffix|>", NULL
};
static const char *const fim_mid_texts[] = {
	"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
	"<" FW_BAR "fim" SPM_SP "end" FW_BAR ">", "<MID>", SPM_SP "<MID>",
	"<|code_middle|>", "<|middle|>", NULL
};
static const char *const fim_pad_texts[] = {
	"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL
};
static const char *const fim_rep_texts[] = {
	"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL
};
static const char *const fim_sep_texts[] = { "<|file_sep|>", NULL };
static const char *const eog_texts[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
	"<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
	"<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
	"<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
	"<" FW_BAR "end" SPM_SP "of" SPM_SP "sentence" FW_BAR ">", "[e~[", NULL
};
/* gpt-oss markers llama.cpp always renders (made USER_DEFINED). */
static const char *const render_texts[] = {
	"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL
};

/* Hash table entries; one cache line holds several, and the stored hash
 * bits spare a look at the text of every colliding token. */
struct vocab_slot {
	uint32_t id1;		/* id + 1; 0 = empty */
	uint32_t hash;		/* high bits of the text's hash */
};

struct merge_slot {
	uint64_t key;		/* (left id << 32) | right id; MERGE_EMPTY */
	int32_t rank;
	int32_t result;		/* id of the merged token */
};

struct tokenizer {
	enum tokenizer_type type;
	enum pre_kind pre;
	char *pre_name;
	int32_t n_vocab;

	char *text;		/* all token texts, back to back */
	size_t *text_off;	/* n_vocab + 1 */
	float *score;
	uint8_t *attr;		/* TOKENIZER_ATTR_* */
	uint8_t *flags;		/* TOKEN_* */
	char *piece;
	size_t *piece_off;	/* n_vocab + 1 */

	struct vocab_slot *slots; /* text -> id */
	size_t slot_mask;

	/* BPE merges: (left id, right id) -> rank, merged id */
	struct merge_slot *merges;
	size_t merge_mask;

	int32_t *special;	/* CONTROL/USER_DEFINED/UNKNOWN, longest first */
	size_t n_special;

	int32_t byte_tok[256];	/* SPM <0xNN>; BPE the GPT-2 symbol of a byte */
	int32_t byte_fb[256][2]; /* BPE: ids for a byte symbol not in vocab */

	int32_t bos, eos, eot, eom, unk, sep, pad, mask;
	int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
	bool add_bos, add_eos, add_space_prefix, ignore_merges;
	bool spm_word_split;	/* no token has U+2581 after another character */
};

#define MERGE_EMPTY UINT64_MAX

/* Growable arrays used while encoding. */
struct ids_vec {
	int32_t *v;
	size_t n, cap;
};

struct seg {
	size_t start, len;
};

struct segs {
	struct seg *v;
	size_t n, cap;
};

struct frag {
	size_t start, len;
	int32_t tok;		/* -1: raw text */
};

struct frags {
	struct frag *v;
	size_t n, cap;
};

/* Symbols and bigrams index a fragment's bytes with 32 bits (encode
 * refuses larger texts) to keep them small. */
struct sym {
	int32_t prev, next;
	uint32_t start, n;	/* bytes of the (escaped) text */
	int32_t id;		/* BPE: token of the symbol, -1 if none */
};

struct bigram {
	double key;		/* SPM: -score; BPE: rank (smaller first) */
	int32_t left, right;
	uint32_t size;
	int32_t result;
};

struct encode_ctx {
	const struct tokenizer *t;
	struct ids_vec out;
	uint32_t *cpt;
	uint16_t *cflags;
	size_t cpt_cap, cflags_cap;
	struct segs segs_a, segs_b;
	char *buf;
	size_t buf_cap;
	struct sym *sym;
	size_t sym_cap;
	struct bigram *heap;
	size_t heap_n, heap_cap;
	struct orcd_err *err;
};

static int
oom(struct orcd_err *err)
{
	return orcd_errf(err, "tokenizer: out of memory");
}

/* Grows *p (elements of size sz) to hold at least need; 0 or -1. */
static int
grow(void **p, size_t *cap, size_t need, size_t sz)
{
	size_t ncap;
	void *np;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap : 16;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / sz)
			return -1;
		ncap *= 2;
	}
	np = realloc(*p, ncap * sz);
	if (np == NULL)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

static int
ids_push(struct ids_vec *v, int32_t id)
{
	if (grow((void **)&v->v, &v->cap, v->n + 1, sizeof(*v->v)) != 0)
		return -1;
	v->v[v->n++] = id;
	return 0;
}

static int
segs_push(struct segs *s, size_t start, size_t len)
{
	if (grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)) != 0)
		return -1;
	s->v[s->n].start = start;
	s->v[s->n].len = len;
	s->n++;
	return 0;
}

static int
frags_push(struct frags *f, size_t start, size_t len, int32_t tok)
{
	if (grow((void **)&f->v, &f->cap, f->n + 1, sizeof(*f->v)) != 0)
		return -1;
	f->v[f->n].start = start;
	f->v[f->n].len = len;
	f->v[f->n].tok = tok;
	f->n++;
	return 0;
}

/* ---------------------------------------------------------------------
 * Hash tables
 */

static uint64_t
hash_bytes(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 29);
}

static uint64_t
hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static size_t
table_size(size_t n)
{
	size_t sz = 16;

	/* load factor at most 0.7 */
	while (sz < n + n / 2 - n / 16)
		sz *= 2;
	return sz;
}

static const char *
tok_text(const struct tokenizer *t, int32_t id, size_t *len)
{
	*len = t->text_off[id + 1] - t->text_off[id];
	return t->text + t->text_off[id];
}

static int32_t
vocab_find(const struct tokenizer *t, const char *s, size_t n)
{
	uint64_t h = hash_bytes(s, n);
	size_t i = h & t->slot_mask, len;
	const char *p;
	int32_t id;

	while (t->slots[i].id1 != 0) {
		if (t->slots[i].hash == (uint32_t)(h >> 32)) {
			id = (int32_t)(t->slots[i].id1 - 1);
			p = tok_text(t, id, &len);
			if (len == n && memcmp(p, s, n) == 0)
				return id;
		}
		i = (i + 1) & t->slot_mask;
	}
	return -1;
}

static int32_t
vocab_find_str(const struct tokenizer *t, const char *s)
{
	return vocab_find(t, s, strlen(s));
}

/* Inserts id; a later token with the same text replaces the earlier one,
 * as llama.cpp's token_to_id map does. */
static void
vocab_insert(struct tokenizer *t, int32_t id)
{
	size_t n, len, i;
	const char *s = tok_text(t, id, &n), *p;
	uint64_t h = hash_bytes(s, n);
	int32_t other;

	i = h & t->slot_mask;
	while (t->slots[i].id1 != 0) {
		if (t->slots[i].hash == (uint32_t)(h >> 32)) {
			other = (int32_t)(t->slots[i].id1 - 1);
			p = tok_text(t, other, &len);
			if (len == n && memcmp(p, s, n) == 0)
				break;
		}
		i = (i + 1) & t->slot_mask;
	}
	t->slots[i].id1 = (uint32_t)id + 1;
	t->slots[i].hash = (uint32_t)(h >> 32);
}

static struct merge_slot *
merge_slot(const struct tokenizer *t, uint64_t key)
{
	size_t i = hash_u64(key) & t->merge_mask;

	while (t->merges[i].key != MERGE_EMPTY && t->merges[i].key != key)
		i = (i + 1) & t->merge_mask;
	return &t->merges[i];
}

static bool
merge_find(const struct tokenizer *t, int32_t left, int32_t right, int32_t *rank,
    int32_t *result)
{
	uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
	const struct merge_slot *m;

	if (t->merges == NULL)
		return false;
	m = merge_slot(t, key);
	if (m->key == MERGE_EMPTY)
		return false;
	*rank = m->rank;
	*result = m->result;
	return true;
}

/* ---------------------------------------------------------------------
 * Loading
 */

static int
load_vocab(struct tokenizer *t, const struct gguf_file *f, struct orcd_err *err)
{
	const struct gguf_kv *toks, *scores = NULL, *types = NULL;
	size_t total = 0, off, i;
	char empty[32];
	int rc;

	rc = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &toks, err);
	if (rc < 0)
		return -1;
	if (rc > 0)
		return orcd_errf(err, "tokenizer: no tokenizer.ggml.tokens in the model");
	if (toks->arr_n == 0)
		return orcd_errf(err, "tokenizer: tokenizer.ggml.tokens is empty");
	if (toks->arr_n >= INT32_MAX)
		return orcd_errf(err, "tokenizer: tokenizer.ggml.tokens has %llu entries, "
		    "too many", (unsigned long long)toks->arr_n);
	t->n_vocab = (int32_t)toks->arr_n;

	rc = gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &scores, err);
	if (rc < 0)
		return -1;
	if (rc == 0 && scores->arr_n < toks->arr_n)
		return orcd_errf(err, "tokenizer: tokenizer.ggml.scores has %llu entries "
		    "for %d tokens", (unsigned long long)scores->arr_n, t->n_vocab);
	if (rc > 0)
		scores = NULL;

	types = gguf_find(f, "tokenizer.ggml.token_type");
	if (types != NULL) {
		if (types->type != GGUF_TYPE_ARRAY ||
		    (types->arr_type != GGUF_TYPE_INT32 && types->arr_type != GGUF_TYPE_UINT32 &&
		    types->arr_type != GGUF_TYPE_INT8 && types->arr_type != GGUF_TYPE_UINT8 &&
		    types->arr_type != GGUF_TYPE_INT16 && types->arr_type != GGUF_TYPE_UINT16))
			return orcd_errf(err, "tokenizer: tokenizer.ggml.token_type is not "
			    "an integer array");
		if (types->arr_n < toks->arr_n)
			return orcd_errf(err, "tokenizer: tokenizer.ggml.token_type has %llu "
			    "entries for %d tokens", (unsigned long long)types->arr_n, t->n_vocab);
	}

	for (i = 0; i < toks->arr_n; i++) {
		/* an empty token is renamed "[EMPTY_i]", as llama.cpp does */
		total += toks->arr_strs[i].len ? toks->arr_strs[i].len : sizeof(empty);
	}
	t->text = malloc(total + 1);
	t->text_off = malloc((toks->arr_n + 1) * sizeof(*t->text_off));
	t->score = calloc(toks->arr_n, sizeof(*t->score));
	t->attr = calloc(toks->arr_n, 1);
	t->flags = calloc(toks->arr_n, 1);
	if (t->text == NULL || t->text_off == NULL || t->score == NULL || t->attr == NULL ||
	    t->flags == NULL)
		return oom(err);

	off = 0;
	for (i = 0; i < toks->arr_n; i++) {
		const struct gguf_str *s = &toks->arr_strs[i];

		t->text_off[i] = off;
		if (s->len == 0) {
			int n = snprintf(empty, sizeof(empty), "[EMPTY_%zu]", i);

			memcpy(t->text + off, empty, (size_t)n);
			off += (size_t)n;
		} else {
			memcpy(t->text + off, s->ptr, s->len);
			off += s->len;
		}
		if (scores != NULL)
			t->score[i] = gguf_arr_f32(scores, i);
		if (types == NULL) {
			t->attr[i] = TOKENIZER_ATTR_NORMAL;
			continue;
		}
		switch (gguf_arr_i64(types, i)) {
		case TOKEN_TYPE_NORMAL:
			t->attr[i] = TOKENIZER_ATTR_NORMAL;
			break;
		case TOKEN_TYPE_UNKNOWN:
			t->attr[i] = TOKENIZER_ATTR_UNKNOWN;
			break;
		case TOKEN_TYPE_CONTROL:
			t->attr[i] = TOKENIZER_ATTR_CONTROL;
			break;
		case TOKEN_TYPE_USER_DEFINED:
			t->attr[i] = TOKENIZER_ATTR_USER_DEFINED;
			break;
		case TOKEN_TYPE_UNUSED:
			t->attr[i] = TOKENIZER_ATTR_UNUSED;
			break;
		case TOKEN_TYPE_BYTE:
			t->attr[i] = TOKENIZER_ATTR_BYTE;
			break;
		default:
			t->attr[i] = 0;	/* undefined: renders as nothing */
			break;
		}
	}
	t->text_off[toks->arr_n] = off;
	t->text[off] = '\0';

	t->slot_mask = table_size(toks->arr_n) - 1;
	t->slots = calloc(t->slot_mask + 1, sizeof(*t->slots));
	if (t->slots == NULL)
		return oom(err);
	for (i = 0; i < toks->arr_n; i++)
		vocab_insert(t, (int32_t)i);
	return 0;
}

/* For quoting vocabulary strings in error messages. */
static int
clamp_len(uint64_t len)
{
	return len > 64 ? 64 : (int)len;
}

static int
load_merges(struct tokenizer *t, const struct gguf_file *f, struct orcd_err *err)
{
	const struct gguf_kv *m;
	char *cat = NULL;
	struct merge_slot *slot;
	size_t cat_cap = 0, i, p;
	int32_t left, right, result;
	uint64_t key;
	int rc;

	rc = gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &m, err);
	if (rc < 0)
		return -1;
	if (rc > 0)
		return orcd_errf(err, "tokenizer: BPE vocabulary without tokenizer.ggml.merges");
	t->merge_mask = table_size(m->arr_n) - 1;
	t->merges = malloc((t->merge_mask + 1) * sizeof(*t->merges));
	if (t->merges == NULL)
		return oom(err);
	for (i = 0; i <= t->merge_mask; i++)
		t->merges[i].key = MERGE_EMPTY;

	for (i = 0; i < m->arr_n; i++) {
		const struct gguf_str *s = &m->arr_strs[i];

		/* "left right"; the split is the first space after the first
		 * byte, so a left part may itself be a space */
		for (p = 1; p < s->len && s->ptr[p] != ' '; p++)
			;
		if (p >= s->len)
			goto bad_format;
		left = vocab_find(t, s->ptr, p);
		right = vocab_find(t, s->ptr + p + 1, s->len - p - 1);
		if (left < 0 || right < 0)
			goto bad_token;
		if (grow((void **)&cat, &cat_cap, s->len, 1) != 0) {
			free(cat);
			return oom(err);
		}
		memcpy(cat, s->ptr, p);
		memcpy(cat + p, s->ptr + p + 1, s->len - p - 1);
		result = vocab_find(t, cat, s->len - 1);
		if (result < 0)
			goto bad_result;
		key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
		slot = merge_slot(t, key);
		if (slot->key == MERGE_EMPTY) {
			/* a repeated pair keeps its first (lowest) rank */
			slot->key = key;
			slot->rank = (int32_t)i;
			slot->result = result;
		}
	}
	free(cat);
	return 0;

bad_format:
	free(cat);
	return orcd_errf(err, "tokenizer: merge %zu ('%.*s') is not two tokens separated "
	    "by a space", i, clamp_len(m->arr_strs[i].len), m->arr_strs[i].ptr);
bad_token:
	free(cat);
	return orcd_errf(err, "tokenizer: merge %zu ('%.*s') names a token that is not "
	    "in the vocabulary", i, clamp_len(m->arr_strs[i].len), m->arr_strs[i].ptr);
bad_result:
	free(cat);
	return orcd_errf(err, "tokenizer: merge %zu ('%.*s') makes a token that is not "
	    "in the vocabulary", i, clamp_len(m->arr_strs[i].len), m->arr_strs[i].ptr);
}

/*
 * Reads a special-token id key.  Absent, -1 and 0xFFFFFFFF (what converters
 * write for "none") keep the default in *id.  Out of range is an error for
 * the ids orcd relies on (strict), and ignored, as llama.cpp does, for the
 * others.
 */
static int
load_special_id(const struct tokenizer *t, const struct gguf_file *f, const char *key,
    int32_t *id, bool strict, struct orcd_err *err)
{
	int64_t v;
	int rc;

	rc = gguf_get_i64(f, key, &v, err);
	if (rc < 0)
		return -1;
	if (rc > 0 || v == -1 || v == (int64_t)UINT32_MAX)
		return 0;
	if (v < 0 || v >= t->n_vocab) {
		if (!strict)
			return 0;
		return orcd_errf(err, "tokenizer: %s = %lld is out of range for a vocabulary "
		    "of %d tokens", key, (long long)v, t->n_vocab);
	}
	*id = (int32_t)v;
	return 0;
}

static int
load_bool(const struct gguf_file *f, const char *key, bool *out, struct orcd_err *err)
{
	bool v;
	int rc = gguf_get_bool(f, key, &v, err);

	if (rc < 0)
		return -1;
	if (rc == 0)
		*out = v;
	return 0;
}

static int32_t
find_first(const struct tokenizer *t, const char *const *texts)
{
	int32_t id;

	for (; *texts != NULL; texts++)
		if ((id = vocab_find_str(t, *texts)) >= 0)
			return id;
	return -1;
}

/* If *id is unset, looks it up by the usual texts; such a token is made
 * CONTROL, as llama.cpp does, so that it is neither parsed from plain text
 * nor rendered. */
static void
detect_special(struct tokenizer *t, int32_t *id, const char *const *texts)
{
	if (*id >= 0)
		return;
	*id = find_first(t, texts);
	if (*id >= 0)
		t->attr[*id] |= TOKENIZER_ATTR_CONTROL;
}

static bool
eog_has(const struct tokenizer *t, const char *text, int32_t *id)
{
	int32_t i = vocab_find_str(t, text);

	if (id != NULL)
		*id = i;
	return i >= 0 && (t->flags[i] & TOKEN_EOG);
}

static void
build_eog(struct tokenizer *t)
{
	const char *const *p;
	int32_t id, end_id, s_id;
	bool has_call;

	if (t->fim_pad >= 0)
		t->flags[t->fim_pad] |= TOKEN_EOG;
	if (t->fim_rep >= 0)
		t->flags[t->fim_rep] |= TOKEN_EOG;
	if (t->fim_sep >= 0)
		t->flags[t->fim_sep] |= TOKEN_EOG;
	for (p = eog_texts; *p != NULL; p++) {
		if ((id = vocab_find_str(t, *p)) < 0)
			continue;
		t->flags[id] |= TOKEN_EOG;
		t->attr[id] |= TOKENIZER_ATTR_CONTROL;
	}
	for (p = render_texts; *p != NULL; p++)
		if ((id = vocab_find_str(t, *p)) >= 0)
			t->attr[id] = TOKENIZER_ATTR_USER_DEFINED;
	if (t->eos >= 0)
		t->flags[t->eos] |= TOKEN_EOG;
	if (t->eot >= 0)
		t->flags[t->eot] |= TOKEN_EOG;
	if (t->eom >= 0)
		t->flags[t->eom] |= TOKEN_EOG;

	/* harmony / solar-open: <|end|> ends a message, not the generation */
	has_call = eog_has(t, "<|call|>", NULL) || eog_has(t, "<|calls|>", NULL);
	if (eog_has(t, "<|end|>", &end_id) && has_call &&
	    (eog_has(t, "<|return|>", NULL) || eog_has(t, "<|flush|>", NULL))) {
		t->flags[end_id] &= ~TOKEN_EOG;
		t->attr[end_id] = TOKENIZER_ATTR_USER_DEFINED;
	}
	/* gemma4 / paddleocr: </s> is not an end there */
	if (eog_has(t, "<|tool_response>", NULL) && eog_has(t, "</s>", &s_id)) {
		t->flags[s_id] &= ~TOKEN_EOG;
		t->attr[s_id] = TOKENIZER_ATTR_NORMAL;
	}
}

struct special_sort {
	size_t len;
	int32_t id;
};

static int
special_cmp(const void *a, const void *b)
{
	const struct special_sort *x = a, *y = b;

	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int
build_special(struct tokenizer *t, struct orcd_err *err)
{
	struct special_sort *v;
	size_t n = 0, i;
	int32_t id;

	for (id = 0; id < t->n_vocab; id++)
		if (t->attr[id] & (TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_USER_DEFINED |
		    TOKENIZER_ATTR_UNKNOWN))
			n++;
	if (n == 0)
		return 0;
	v = malloc(n * sizeof(*v));
	t->special = malloc(n * sizeof(*t->special));
	if (v == NULL || t->special == NULL) {
		free(v);
		return oom(err);
	}
	n = 0;
	for (id = 0; id < t->n_vocab; id++) {
		if (!(t->attr[id] & (TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_USER_DEFINED |
		    TOKENIZER_ATTR_UNKNOWN)))
			continue;
		v[n].len = t->text_off[id + 1] - t->text_off[id];
		v[n].id = id;
		n++;
	}
	/* longest first: a special token inside a longer one must not win */
	qsort(v, n, sizeof(*v), special_cmp);
	for (i = 0; i < n; i++)
		t->special[i] = v[i].id;
	t->n_special = n;
	free(v);
	return 0;
}

/*
 * True if every token is valid UTF-8 and has U+2581 only at its start or
 * right after another U+2581: then a token can never span the boundary
 * between a non-space character and a following space.
 */
static bool
spm_word_split(const struct tokenizer *t)
{
	const char *s;
	size_t n, i;
	int32_t id;

	for (id = 0; id < t->n_vocab; id++) {
		s = tok_text(t, id, &n);
		if (!unicode_utf8_valid(s, n))
			return false;
		for (i = 3; i + 3 <= n; i++)
			if (memcmp(s + i, SPM_SP, 3) == 0 && memcmp(s + i - 3, SPM_SP, 3) != 0)
				return false;
	}
	return true;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "<0xNN>" -> NN, else -1. */
static int
parse_byte_token(const char *s, size_t n)
{
	int hi, lo;

	if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
		return -1;
	hi = hex_digit(s[3]);
	lo = hex_digit(s[4]);
	if (hi < 0 || lo < 0)
		return -1;
	return hi * 16 + lo;
}

static void
build_byte_tokens(struct tokenizer *t)
{
	char buf[8], enc[4];
	size_t n;
	int b;

	for (b = 0; b < 256; b++) {
		t->byte_fb[b][0] = t->byte_fb[b][1] = -1;
		if (t->type == TOKENIZER_SPM) {
			/* byte fallback: <0xNN>, else the byte as a one-byte token */
			snprintf(buf, sizeof(buf), "<0x%02X>", b);
			t->byte_tok[b] = vocab_find_str(t, buf);
			if (t->byte_tok[b] < 0) {
				buf[0] = (char)b;
				t->byte_tok[b] = vocab_find(t, buf, 1);
			}
			continue;
		}
		n = unicode_encode(unicode_gpt2_byte_to_cpt((uint8_t)b), enc);
		t->byte_tok[b] = vocab_find(t, enc, n);
		if (t->byte_tok[b] < 0) {
			/* llama.cpp then looks up each byte of the symbol alone */
			t->byte_fb[b][0] = vocab_find(t, enc, 1);
			if (n > 1)
				t->byte_fb[b][1] = vocab_find(t, enc + 1, 1);
		}
	}
}

struct strbuf {
	char *p;
	size_t n, cap;
};

static int
sb_add(struct strbuf *sb, const char *s, size_t n)
{
	if (grow((void **)&sb->p, &sb->cap, sb->n + n + 1, 1) != 0)
		return -1;
	memcpy(sb->p + sb->n, s, n);
	sb->n += n;
	return 0;
}

/* SPM: the text with U+2581 turned back into spaces. */
static int
piece_spm_normal(struct strbuf *sb, const char *s, size_t n)
{
	size_t i = 0, start = 0;

	while (i < n) {
		if (n - i >= 3 && memcmp(s + i, SPM_SP, 3) == 0) {
			if (sb_add(sb, s + start, i - start) != 0 || sb_add(sb, " ", 1) != 0)
				return -1;
			i += 3;
			start = i;
		} else
			i++;
	}
	return sb_add(sb, s + start, n - start);
}

/* BPE: each character of the text stands for one byte. */
static int
piece_bpe_normal(struct strbuf *sb, const char *s, size_t n)
{
	char enc[4], hex[4];
	size_t pos = 0, k, len;
	uint32_t cpt;
	int b;

	while (pos < n) {
		cpt = unicode_decode_lenient(s, n, &pos);
		b = unicode_gpt2_cpt_to_byte(cpt);
		if (b >= 0) {
			char c = (char)b;

			if (sb_add(sb, &c, 1) != 0)
				return -1;
			continue;
		}
		/* not a byte symbol: llama.cpp writes this marker */
		len = unicode_encode(cpt, enc);
		if (sb_add(sb, "[UNK_BYTE_0x", 12) != 0)
			return -1;
		for (k = 0; k < len; k++) {
			snprintf(hex, sizeof(hex), "%02x", (uint8_t)enc[k]);
			if (sb_add(sb, hex, 2) != 0)
				return -1;
		}
		if (sb_add(sb, s, n) != 0 || sb_add(sb, "]", 1) != 0)
			return -1;
	}
	return 0;
}

static int
build_pieces(struct tokenizer *t, struct orcd_err *err)
{
	struct strbuf sb = { NULL, 0, 0 };
	const char *s;
	size_t n, start;
	unsigned a;
	int32_t id;
	int b, rc;

	t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof(*t->piece_off));
	if (t->piece_off == NULL || grow((void **)&sb.p, &sb.cap,
	    t->text_off[t->n_vocab] + 1, 1) != 0) {
		free(sb.p);
		return oom(err);
	}
	for (id = 0; id < t->n_vocab; id++) {
		t->piece_off[id] = start = sb.n;
		s = tok_text(t, id, &n);
		a = t->attr[id];
		rc = 0;
		if (a & (TOKENIZER_ATTR_UNKNOWN | TOKENIZER_ATTR_CONTROL))
			;	/* not rendered */
		else if (a & TOKENIZER_ATTR_USER_DEFINED)
			rc = sb_add(&sb, s, n);
		else if (a & TOKENIZER_ATTR_NORMAL)
			rc = t->type == TOKENIZER_SPM ? piece_spm_normal(&sb, s, n) :
			    piece_bpe_normal(&sb, s, n);
		else if (a & TOKENIZER_ATTR_BYTE) {
			if ((b = parse_byte_token(s, n)) >= 0) {
				char c = (char)b;

				rc = sb_add(&sb, &c, 1);
			} else
				rc = sb_add(&sb, s, n);
		}
		if (rc != 0) {
			free(sb.p);
			return oom(err);
		}
		if (unicode_utf8_valid(sb.p + start, sb.n - start))
			t->flags[id] |= TOKEN_PIECE_UTF8;
	}
	t->piece_off[t->n_vocab] = sb.n;
	t->piece = sb.p;
	return 0;
}

static int
load_model_kind(struct tokenizer *t, const struct gguf_file *f, struct orcd_err *err)
{
	struct gguf_str model, pre;
	size_t i;
	int rc;

	rc = gguf_get_str(f, "tokenizer.ggml.model", &model, err);
	if (rc < 0)
		return -1;
	if (rc > 0)
		return orcd_errf(err, "tokenizer: no tokenizer.ggml.model in the model");
	if (gguf_str_eq(model, "llama"))
		t->type = TOKENIZER_SPM;
	else if (gguf_str_eq(model, "gpt2"))
		t->type = TOKENIZER_BPE;
	else
		return orcd_errf(err, "tokenizer: unsupported tokenizer.ggml.model '%.*s' "
		    "(supported: llama, gpt2)", clamp_len(model.len), model.ptr);

	if (t->type == TOKENIZER_SPM) {
		t->pre_name = strdup("");
		return t->pre_name == NULL ? oom(err) : 0;
	}
	rc = gguf_get_str(f, "tokenizer.ggml.pre", &pre, err);
	if (rc < 0)
		return -1;
	if (rc > 0 || pre.len == 0) {
		/* llama.cpp falls back to its default regexes (with a warning) */
		pre.ptr = "default";
		pre.len = 7;
	}
	for (i = 0; i < sizeof(pre_names) / sizeof(pre_names[0]); i++) {
		if (gguf_str_eq(pre, pre_names[i].name)) {
			t->pre = pre_names[i].kind;
			t->pre_name = strdup(pre_names[i].name);
			return t->pre_name == NULL ? oom(err) : 0;
		}
	}
	return orcd_errf(err, "tokenizer: unknown pre-tokenizer tokenizer.ggml.pre = '%.*s' "
	    "(supported: default, gpt-2, qwen2, llama-bpe/llama3, starcoder, "
	    "deepseek-coder and their aliases)", clamp_len(pre.len), pre.ptr);
}

int
tokenizer_load(const struct gguf_file *f, struct tokenizer **out, struct orcd_err *err)
{
	static const struct {
		const char *key;
		size_t field;
		bool strict;
	} ids[] = {
		{ "tokenizer.ggml.bos_token_id", offsetof(struct tokenizer, bos), true },
		{ "tokenizer.ggml.eos_token_id", offsetof(struct tokenizer, eos), true },
		{ "tokenizer.ggml.eot_token_id", offsetof(struct tokenizer, eot), true },
		{ "tokenizer.ggml.eom_token_id", offsetof(struct tokenizer, eom), true },
		{ "tokenizer.ggml.unknown_token_id", offsetof(struct tokenizer, unk), true },
		{ "tokenizer.ggml.seperator_token_id", offsetof(struct tokenizer, sep), false },
		{ "tokenizer.ggml.padding_token_id", offsetof(struct tokenizer, pad), false },
		{ "tokenizer.ggml.mask_token_id", offsetof(struct tokenizer, mask), false },
		{ "tokenizer.ggml.fim_pre_token_id", offsetof(struct tokenizer, fim_pre), false },
		{ "tokenizer.ggml.fim_suf_token_id", offsetof(struct tokenizer, fim_suf), false },
		{ "tokenizer.ggml.fim_mid_token_id", offsetof(struct tokenizer, fim_mid), false },
		{ "tokenizer.ggml.fim_pad_token_id", offsetof(struct tokenizer, fim_pad), false },
		{ "tokenizer.ggml.fim_rep_token_id", offsetof(struct tokenizer, fim_rep), false },
		{ "tokenizer.ggml.fim_sep_token_id", offsetof(struct tokenizer, fim_sep), false },
		{ "tokenizer.ggml.prefix_token_id", offsetof(struct tokenizer, fim_pre), false },
		{ "tokenizer.ggml.suffix_token_id", offsetof(struct tokenizer, fim_suf), false },
		{ "tokenizer.ggml.middle_token_id", offsetof(struct tokenizer, fim_mid), false },
	};
	struct tokenizer *t;
	size_t i;

	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return oom(err);
	t->bos = t->eos = t->eot = t->eom = t->unk = t->sep = t->pad = t->mask = -1;
	t->fim_pre = t->fim_suf = t->fim_mid = t->fim_pad = t->fim_rep = t->fim_sep = -1;

	if (load_model_kind(t, f, err) != 0 || load_vocab(t, f, err) != 0)
		goto fail;
	if (t->type == TOKENIZER_BPE && load_merges(t, f, err) != 0)
		goto fail;

	if (t->type == TOKENIZER_SPM) {
		t->bos = t->n_vocab > 1 ? 1 : -1;
		t->eos = t->n_vocab > 2 ? 2 : -1;
		t->unk = 0;
		t->add_bos = true;
		t->add_space_prefix = true;
	} else {
		/* llama.cpp's defaults for BPE (bos = eos = 11) are an accident
		 * of history; a BPE file without the keys has none here */
		t->add_bos = t->pre == PRE_LLAMA3;
		t->ignore_merges = t->pre == PRE_LLAMA3;
	}
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (load_special_id(t, f, ids[i].key, (int32_t *)((char *)t + ids[i].field),
		    ids[i].strict, err) != 0)
			goto fail;
	if (load_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err) != 0 ||
	    load_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err) != 0 ||
	    load_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err) != 0)
		goto fail;
	if (t->add_bos && t->bos < 0) {
		orcd_errf(err, "tokenizer: the model asks for a BOS token but has none");
		goto fail;
	}
	if (t->add_eos && t->eos < 0) {
		orcd_errf(err, "tokenizer: the model asks for an EOS token but has none");
		goto fail;
	}

	detect_special(t, &t->eot, eot_texts);
	detect_special(t, &t->eom, eom_texts);
	detect_special(t, &t->fim_pre, fim_pre_texts);
	detect_special(t, &t->fim_suf, fim_suf_texts);
	detect_special(t, &t->fim_mid, fim_mid_texts);
	detect_special(t, &t->fim_pad, fim_pad_texts);
	detect_special(t, &t->fim_rep, fim_rep_texts);
	detect_special(t, &t->fim_sep, fim_sep_texts);
	build_eog(t);
	build_byte_tokens(t);
	if (t->type == TOKENIZER_SPM)
		t->spm_word_split = spm_word_split(t);
	if (build_special(t, err) != 0 || build_pieces(t, err) != 0)
		goto fail;
	*out = t;
	return 0;

fail:
	tokenizer_free(t);
	return -1;
}

void
tokenizer_free(struct tokenizer *t)
{
	if (t == NULL)
		return;
	free(t->pre_name);
	free(t->text);
	free(t->text_off);
	free(t->score);
	free(t->attr);
	free(t->flags);
	free(t->piece);
	free(t->piece_off);
	free(t->slots);
	free(t->merges);
	free(t->special);
	free(t);
}

/* ---------------------------------------------------------------------
 * Accessors
 */

enum tokenizer_type
tokenizer_type(const struct tokenizer *t)
{
	return t->type;
}

const char *
tokenizer_pre_name(const struct tokenizer *t)
{
	return t->pre_name;
}

int32_t
tokenizer_n_vocab(const struct tokenizer *t)
{
	return t->n_vocab;
}

int32_t
tokenizer_bos(const struct tokenizer *t)
{
	return t->bos;
}

int32_t
tokenizer_eos(const struct tokenizer *t)
{
	return t->eos;
}

int32_t
tokenizer_eot(const struct tokenizer *t)
{
	return t->eot;
}

int32_t
tokenizer_unk(const struct tokenizer *t)
{
	return t->unk;
}

int32_t
tokenizer_pad(const struct tokenizer *t)
{
	return t->pad;
}

bool
tokenizer_add_bos(const struct tokenizer *t)
{
	return t->add_bos;
}

bool
tokenizer_add_eos(const struct tokenizer *t)
{
	return t->add_eos;
}

bool
tokenizer_is_eog(const struct tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab && (t->flags[id] & TOKEN_EOG);
}

unsigned
tokenizer_attr(const struct tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab ? t->attr[id] : 0;
}

const char *
tokenizer_piece(const struct tokenizer *t, int32_t id, size_t *len)
{
	if (id < 0 || id >= t->n_vocab) {
		*len = 0;
		return "";
	}
	*len = t->piece_off[id + 1] - t->piece_off[id];
	return t->piece + t->piece_off[id];
}

bool
tokenizer_piece_is_utf8(const struct tokenizer *t, int32_t id)
{
	return id < 0 || id >= t->n_vocab || (t->flags[id] & TOKEN_PIECE_UTF8);
}

const char *
tokenizer_token_text(const struct tokenizer *t, int32_t id, size_t *len)
{
	if (id < 0 || id >= t->n_vocab) {
		*len = 0;
		return "";
	}
	return tok_text(t, id, len);
}

int32_t
tokenizer_token_id(const struct tokenizer *t, const char *text, size_t len)
{
	return vocab_find(t, text, len);
}

int
tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n_ids, char **out,
    size_t *out_len, struct orcd_err *err)
{
	struct strbuf sb = { NULL, 0, 0 };
	const char *p;
	size_t i, n;

	*out = NULL;
	*out_len = 0;
	if (grow((void **)&sb.p, &sb.cap, 1, 1) != 0)
		return oom(err);
	for (i = 0; i < n_ids; i++) {
		p = tokenizer_piece(t, ids[i], &n);
		if (sb_add(&sb, p, n) != 0) {
			free(sb.p);
			return oom(err);
		}
	}
	sb.p[sb.n] = '\0';
	*out = sb.p;
	*out_len = sb.n;
	return 0;
}

/* ---------------------------------------------------------------------
 * Encoding: special-token partition
 */

/*
 * Splits text into raw fragments and special tokens.  Each special token in
 * turn (longest first) is cut out of every raw fragment left, leftmost
 * occurrences first; this order, not a left-to-right scan, is what
 * llama.cpp's tokenizer_st_partition does.
 */
static int
partition(const struct tokenizer *t, const char *text, size_t len, bool parse_special,
    struct frags *cur, struct frags *next)
{
	bool present[256] = { false };
	struct frags swap;
	const char *s, *hit;
	size_t i, k, n, pos, end;
	int32_t id;

	cur->n = 0;
	if (len == 0)
		return 0;
	if (frags_push(cur, 0, len, -1) != 0)
		return -1;
	for (i = 0; i < len; i++)
		present[(uint8_t)text[i]] = true;

	for (k = 0; k < t->n_special; k++) {
		id = t->special[k];
		/* CONTROL and UNKNOWN only when asked; USER_DEFINED always */
		if (!parse_special &&
		    (t->attr[id] & (TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_UNKNOWN)))
			continue;
		s = tok_text(t, id, &n);
		if (n > len || !present[(uint8_t)s[0]])
			continue;
		next->n = 0;
		for (i = 0; i < cur->n; i++) {
			struct frag fr = cur->v[i];

			if (fr.tok >= 0 || fr.len < n) {
				if (frags_push(next, fr.start, fr.len, fr.tok) != 0)
					return -1;
				continue;
			}
			pos = fr.start;
			end = fr.start + fr.len;
			while (end - pos >= n &&
			    (hit = memmem(text + pos, end - pos, s, n)) != NULL) {
				size_t h = (size_t)(hit - text);

				if (h > pos && frags_push(next, pos, h - pos, -1) != 0)
					return -1;
				if (frags_push(next, h, n, id) != 0)
					return -1;
				pos = h + n;
			}
			if (pos < end && frags_push(next, pos, end - pos, -1) != 0)
				return -1;
		}
		swap = *cur;
		*cur = *next;
		*next = swap;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * Encoding: merge queue (a binary min-heap on key, then left index)
 */

static bool
bigram_before(const struct bigram *a, const struct bigram *b)
{
	if (a->key != b->key)
		return a->key < b->key;
	return a->left < b->left;
}

static int
heap_push(struct encode_ctx *c, const struct bigram *b)
{
	size_t i, parent;

	if (grow((void **)&c->heap, &c->heap_cap, c->heap_n + 1, sizeof(*c->heap)) != 0)
		return -1;
	i = c->heap_n++;
	while (i > 0) {
		parent = (i - 1) / 2;
		if (!bigram_before(b, &c->heap[parent]))
			break;
		c->heap[i] = c->heap[parent];
		i = parent;
	}
	c->heap[i] = *b;
	return 0;
}

static struct bigram
heap_pop(struct encode_ctx *c)
{
	struct bigram top = c->heap[0], last = c->heap[--c->heap_n];
	size_t i = 0, child, n = c->heap_n;

	for (;;) {
		child = 2 * i + 1;
		if (child >= n)
			break;
		if (child + 1 < n && bigram_before(&c->heap[child + 1], &c->heap[child]))
			child++;
		if (!bigram_before(&c->heap[child], &last))
			break;
		c->heap[i] = c->heap[child];
		i = child;
	}
	if (n > 0)
		c->heap[i] = last;
	return top;
}

/* Unlinks the right symbol of b into the left one. */
static void
sym_merge(struct sym *sym, const struct bigram *b)
{
	struct sym *l = &sym[b->left], *r = &sym[b->right];

	l->n += r->n;
	r->n = 0;
	l->next = r->next;
	if (r->next >= 0)
		sym[r->next].prev = b->left;
}

static int
ensure_buf(struct encode_ctx *c, size_t n)
{
	if (grow((void **)&c->buf, &c->buf_cap, n, 1) != 0)
		return -1;
	return 0;
}

static int
ensure_sym(struct encode_ctx *c, size_t n)
{
	return grow((void **)&c->sym, &c->sym_cap, n, sizeof(*c->sym));
}

/* ---------------------------------------------------------------------
 * Encoding: SentencePiece
 */

static int
spm_try(struct encode_ctx *c, int32_t left, int32_t right)
{
	struct bigram b;
	int32_t id;

	if (left < 0 || right < 0)
		return 0;
	b.size = c->sym[left].n + c->sym[right].n;
	id = vocab_find(c->t, c->buf + c->sym[left].start, b.size);
	if (id < 0)
		return 0;
	b.key = -(double)c->t->score[id];
	b.left = left;
	b.right = right;
	b.result = id;
	return heap_push(c, &b);
}

static bool
sym_is_space(const struct encode_ctx *c, size_t k)
{
	return c->sym[k].n == 3 && memcmp(c->buf + c->sym[k].start, SPM_SP, 3) == 0;
}

/* Merges the symbols first..last (linked among themselves) and emits the
 * tokens. */
static int
spm_chunk(struct encode_ctx *c, size_t first, size_t last)
{
	const struct tokenizer *t = c->t;
	struct bigram b;
	size_t i;
	int32_t id, j;

	c->heap_n = 0;
	for (i = first + 1; i <= last; i++)
		if (spm_try(c, (int32_t)i - 1, (int32_t)i) != 0)
			return oom(c->err);
	while (c->heap_n > 0) {
		b = heap_pop(c);
		/* stale if either side was merged away or has grown */
		if (c->sym[b.left].n == 0 || c->sym[b.right].n == 0 ||
		    c->sym[b.left].n + c->sym[b.right].n != b.size)
			continue;
		sym_merge(c->sym, &b);
		if (spm_try(c, c->sym[b.left].prev, b.left) != 0 ||
		    spm_try(c, b.left, c->sym[b.left].next) != 0)
			return oom(c->err);
	}

	for (j = (int32_t)first; j != -1; j = c->sym[j].next) {
		struct sym *sy = &c->sym[j];

		id = vocab_find(t, c->buf + sy->start, sy->n);
		if (id >= 0) {
			if (ids_push(&c->out, id) != 0)
				return oom(c->err);
			continue;
		}
		for (i = 0; i < sy->n; i++) {
			uint8_t byte = (uint8_t)c->buf[sy->start + i];

			id = t->byte_tok[byte];
			if (id < 0)
				id = t->unk;
			if (id < 0)
				return orcd_errf(c->err, "tokenizer: byte 0x%02x has no token "
				    "and the vocabulary has no unknown token", byte);
			if (ids_push(&c->out, id) != 0)
				return oom(c->err);
		}
	}
	return 0;
}

static int
spm_fragment(struct encode_ctx *c, const char *s, size_t n, bool prefix)
{
	size_t m = 0, i, pos, l, k, first;

	if (n > (SIZE_MAX - 3) / 3 || ensure_buf(c, 3 * n + 3) != 0)
		return oom(c->err);
	if (prefix) {
		memcpy(c->buf, SPM_SP, 3);
		m = 3;
	}
	for (i = 0; i < n; i++) {
		if (s[i] == ' ') {
			memcpy(c->buf + m, SPM_SP, 3);
			m += 3;
		} else
			c->buf[m++] = s[i];
	}
	if (m == 0)
		return 0;

	/* one symbol per UTF-8 character (by the lead byte alone) */
	if (ensure_sym(c, m) != 0)
		return oom(c->err);
	k = 0;
	for (pos = 0; pos < m; pos += l) {
		l = unicode_seq_len((uint8_t)c->buf[pos]);
		if (l > m - pos)
			l = m - pos;
		c->sym[k].start = (uint32_t)pos;
		c->sym[k].n = (uint32_t)l;
		c->sym[k].id = -1;
		k++;
	}

	/*
	 * Where no token has U+2581 after another character (true of most
	 * SentencePiece vocabularies, see spm_word_split), no merge can cross
	 * a space that follows a non-space, so each word is merged alone: the
	 * same result with a small merge queue instead of one for the whole
	 * text.
	 */
	first = 0;
	for (i = 0; i < k; i++) {
		bool cut = i + 1 == k || (c->t->spm_word_split && sym_is_space(c, i + 1) &&
		    !sym_is_space(c, i));

		c->sym[i].prev = i == first ? -1 : (int32_t)i - 1;
		c->sym[i].next = cut ? -1 : (int32_t)i + 1;
		if (!cut)
			continue;
		if (spm_chunk(c, first, i) != 0)
			return -1;
		first = i + 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * Encoding: BPE pre-tokenizers
 *
 * Each model's regex is a list of stages.  A "scan" stage (llama.cpp's
 * hand-written gpt2 / qwen2 / llama3 splitters) cuts a segment into tokens
 * end to end.  A "regex" stage finds leftmost matches of a simple pattern
 * and keeps the text between matches as segments too, as a split with
 * std::regex_iterator does.  Matchers work on codepoints and their class
 * flags; positions at or past `end` are outside the segment.
 */

enum stage {
	ST_END,
	ST_SCAN_GPT2,		/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
				 * ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
	ST_SCAN_QWEN2,		/* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
				 * ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|
				 * \s+(?!\S)|\s+ */
	ST_SCAN_LLAMA3,		/* the same with \p{N}{1,3} */
	ST_RX_NUMBER,		/* \p{N} */
	ST_RX_NUMBERS,		/* \p{N}+ */
	ST_RX_CRLF,		/* [\r\n] */
	ST_RX_WS_LETTERS,	/* \s?\p{L}+ */
	ST_RX_WS_PUNCT,		/* \s?\p{P}+ */
	ST_RX_CJK,		/* [一-龥ࠀ-一가-퟿]+ */
	ST_RX_PUNCT_SYM,	/* [\p{P}\$\+<=>\^~\|]+ */
	ST_RX_3DIGITS,		/* [0-9][0-9][0-9] */
};

static const enum stage stages_default[] = {
	ST_RX_PUNCT_SYM, ST_SCAN_GPT2, ST_RX_NUMBERS, ST_RX_3DIGITS, ST_END
};
static const enum stage stages_gpt2[] = { ST_SCAN_GPT2, ST_END };
static const enum stage stages_qwen2[] = { ST_SCAN_QWEN2, ST_END };
static const enum stage stages_llama3[] = { ST_SCAN_LLAMA3, ST_END };
static const enum stage stages_starcoder[] = { ST_RX_NUMBER, ST_SCAN_GPT2, ST_END };
static const enum stage stages_deepseek_coder[] = {
	ST_RX_CRLF, ST_RX_WS_LETTERS, ST_RX_WS_PUNCT, ST_RX_CJK, ST_RX_NUMBER, ST_END
};

#define F_WS	UNICODE_WHITESPACE
#define F_L	UNICODE_LETTER
#define F_N	UNICODE_NUMBER
#define F_P	UNICODE_PUNCT

static uint16_t
flag_at(const uint16_t *fl, size_t i, size_t end)
{
	return i < end ? fl[i] : 0;
}

static uint32_t
ascii_lower(uint32_t c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd at i: its length, else 0. */
static size_t
contraction(const uint32_t *c, size_t i, size_t end, bool fold)
{
	uint32_t a, b;

	if (c[i] != '\'' || i + 1 >= end)
		return 0;
	a = fold ? ascii_lower(c[i + 1]) : c[i + 1];
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if (i + 2 >= end)
		return 0;
	b = fold ? ascii_lower(c[i + 2]) : c[i + 2];
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

/* Length of the run of codepoints from i with any of mask set. */
static size_t
run_of(const uint16_t *fl, size_t i, size_t end, uint16_t mask)
{
	size_t j = i;

	while (j < end && (fl[j] & mask))
		j++;
	return j - i;
}

/* Whitespace at i: \s+(?!\S) then \s+ (the tail of both scanners). */
static size_t
scan_spaces(const uint16_t *fl, size_t i, size_t end)
{
	size_t n = run_of(fl, i, end, F_WS);

	/* leave the last space to prefix the next word */
	if (n > 1 && i + n < end)
		return n - 1;
	return n > 0 ? n : 1;
}

static size_t
scan_gpt2(const uint32_t *c, const uint16_t *fl, size_t i, size_t end)
{
	size_t n, sp = c[i] == ' ';
	uint16_t f = sp ? flag_at(fl, i + 1, end) : fl[i];

	if ((n = contraction(c, i, end, false)) > 0)
		return n;
	/* " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" */
	if (f & F_L)
		return sp + run_of(fl, i + sp, end, F_L);
	if (f & F_N)
		return sp + run_of(fl, i + sp, end, F_N);
	if (f != 0 && !(f & (F_WS | F_L | F_N))) {
		n = i + sp;
		while (n < end && !(fl[n] & (F_WS | F_L | F_N)))
			n++;
		return n - i;
	}
	return scan_spaces(fl, i, end);
}

static size_t
scan_qwen2(const uint32_t *c, const uint16_t *fl, size_t i, size_t end, size_t max_digits)
{
	size_t n, j, last_nl;
	uint16_t f = fl[i], f2;

	if ((n = contraction(c, i, end, true)) > 0)
		return n;
	/* [^\r\n\p{L}\p{N}]?\p{L}+ */
	if (c[i] != '\r' && c[i] != '\n' && !(f & F_N) &&
	    ((f & F_L) || (flag_at(fl, i + 1, end) & F_L)))
		return 1 + run_of(fl, i + 1, end, F_L);
	/* \p{N} or \p{N}{1,3} */
	if (f & F_N) {
		n = run_of(fl, i, end, F_N);
		return n < max_digits ? n : max_digits;
	}
	/* " ?[^\s\p{L}\p{N}]+[\r\n]*"; a lone space at the end of the segment
	 * comes out as one token here, as \s+ would give it */
	f2 = c[i] == ' ' ? flag_at(fl, i + 1, end) : f;
	if (!(f2 & (F_WS | F_L | F_N))) {
		j = i + (c[i] == ' ');
		while (j < end && !(fl[j] & (F_WS | F_L | F_N)))
			j++;
		while (j < end && (c[j] == '\r' || c[j] == '\n'))
			j++;
		return j - i;
	}
	/* \s*[\r\n]+: through the last newline of the whitespace run */
	n = run_of(fl, i, end, F_WS);
	last_nl = 0;
	for (j = i; j < i + n; j++)
		if (c[j] == '\r' || c[j] == '\n')
			last_nl = j + 1;
	if (last_nl > 0)
		return last_nl - i;
	return scan_spaces(fl, i, end);
}

/* A regex stage's match at i (0: none). */
static size_t
match_at(enum stage st, const uint32_t *c, const uint16_t *fl, size_t i, size_t end)
{
	uint16_t mask;
	size_t n;

	switch (st) {
	case ST_RX_NUMBER:
		return (fl[i] & F_N) ? 1 : 0;
	case ST_RX_NUMBERS:
		return run_of(fl, i, end, F_N);
	case ST_RX_CRLF:
		return c[i] == '\r' || c[i] == '\n';
	case ST_RX_WS_LETTERS:
	case ST_RX_WS_PUNCT:
		mask = st == ST_RX_WS_LETTERS ? F_L : F_P;
		if ((fl[i] & F_WS) && (flag_at(fl, i + 1, end) & mask))
			return 1 + run_of(fl, i + 1, end, mask);
		return run_of(fl, i, end, mask);
	case ST_RX_CJK:
		/* llama.cpp matches this on text whose non-ASCII whitespace
		 * was replaced by \v, so U+3000 and the like do not match */
		for (n = i; n < end; n++) {
			if (!((c[n] >= 0x800 && c[n] <= 0x9fa5) ||
			    (c[n] >= 0xac00 && c[n] <= 0xd7ff)) || (fl[n] & F_WS))
				break;
		}
		return n - i;
	case ST_RX_PUNCT_SYM:
		for (n = i; n < end; n++) {
			if (!(fl[n] & F_P) && (c[n] >= 0x80 ||
			    strchr("$+<=>^~|", (int)c[n]) == NULL || c[n] == 0))
				break;
		}
		return n - i;
	case ST_RX_3DIGITS:
		for (n = 0; n < 3; n++)
			if (i + n >= end || c[i + n] < '0' || c[i + n] > '9')
				return 0;
		return 3;
	default:
		return 0;
	}
}

static int
run_stage(enum stage st, const uint32_t *c, const uint16_t *fl, const struct segs *in,
    struct segs *out)
{
	size_t k, pos, i, end, n;

	out->n = 0;
	for (k = 0; k < in->n; k++) {
		pos = in->v[k].start;
		end = pos + in->v[k].len;
		if (st == ST_SCAN_GPT2 || st == ST_SCAN_QWEN2 || st == ST_SCAN_LLAMA3) {
			for (; pos < end; pos += n) {
				if (st == ST_SCAN_GPT2)
					n = scan_gpt2(c, fl, pos, end);
				else if (st == ST_SCAN_QWEN2)
					n = scan_qwen2(c, fl, pos, end, 1);
				else
					n = scan_qwen2(c, fl, pos, end, 3);
				if (segs_push(out, pos, n) != 0)
					return -1;
			}
			continue;
		}
		for (i = pos; i < end; ) {
			n = match_at(st, c, fl, i, end);
			if (n == 0) {
				i++;
				continue;
			}
			if (i > pos && segs_push(out, pos, i - pos) != 0)
				return -1;
			if (segs_push(out, i, n) != 0)
				return -1;
			i += n;
			pos = i;
		}
		if (pos < end && segs_push(out, pos, end - pos) != 0)
			return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * Encoding: byte-level BPE
 */

static int
bpe_try(struct encode_ctx *c, int32_t left, int32_t right)
{
	struct bigram b;
	int32_t rank;

	if (left < 0 || right < 0 || c->sym[left].id < 0 || c->sym[right].id < 0)
		return 0;
	if (!merge_find(c->t, c->sym[left].id, c->sym[right].id, &rank, &b.result))
		return 0;
	b.key = rank;
	b.left = left;
	b.right = right;
	b.size = c->sym[left].n + c->sym[right].n;
	return heap_push(c, &b);
}

/* One pre-tokenized word: codepoints [start, start + len). */
static int
bpe_word(struct encode_ctx *c, size_t start, size_t len)
{
	const struct tokenizer *t = c->t;
	struct bigram b;
	size_t nb = 0, i, m;
	int32_t id, j;
	uint8_t byte;

	/* the word's bytes, re-encoded from its codepoints (so invalid input
	 * bytes are U+FFFD by now), then their GPT-2 spelling after them */
	if (len > SIZE_MAX / 12 || ensure_buf(c, 12 * len) != 0)
		return oom(c->err);
	for (i = 0; i < len; i++)
		nb += unicode_encode(c->cpt[start + i], c->buf + nb);

	if (t->ignore_merges) {
		m = nb;
		for (i = 0; i < nb; i++)
			m += unicode_encode(unicode_gpt2_byte_to_cpt((uint8_t)c->buf[i]),
			    c->buf + m);
		id = vocab_find(t, c->buf + nb, m - nb);
		if (id >= 0)
			return ids_push(&c->out, id) != 0 ? oom(c->err) : 0;
	}

	if (ensure_sym(c, nb) != 0)
		return oom(c->err);
	for (i = 0; i < nb; i++) {
		c->sym[i].prev = (int32_t)i - 1;
		c->sym[i].next = i + 1 == nb ? -1 : (int32_t)i + 1;
		c->sym[i].start = (uint32_t)i;
		c->sym[i].n = 1;
		c->sym[i].id = t->byte_tok[(uint8_t)c->buf[i]];
	}
	c->heap_n = 0;
	for (i = 1; i < nb; i++)
		if (bpe_try(c, (int32_t)i - 1, (int32_t)i) != 0)
			return oom(c->err);
	while (c->heap_n > 0) {
		b = heap_pop(c);
		if (c->sym[b.left].n == 0 || c->sym[b.right].n == 0 ||
		    c->sym[b.left].n + c->sym[b.right].n != b.size)
			continue;
		sym_merge(c->sym, &b);
		c->sym[b.left].id = b.result;
		if (bpe_try(c, c->sym[b.left].prev, b.left) != 0 ||
		    bpe_try(c, b.left, c->sym[b.left].next) != 0)
			return oom(c->err);
	}

	for (j = 0; nb > 0 && j != -1; j = c->sym[j].next) {
		if (c->sym[j].id >= 0) {
			if (ids_push(&c->out, c->sym[j].id) != 0)
				return oom(c->err);
			continue;
		}
		/* a byte whose symbol is not in the vocabulary */
		byte = (uint8_t)c->buf[c->sym[j].start];
		for (i = 0; i < 2; i++)
			if (t->byte_fb[byte][i] >= 0 && ids_push(&c->out, t->byte_fb[byte][i]) != 0)
				return oom(c->err);
	}
	return 0;
}

static int
bpe_fragment(struct encode_ctx *c, const char *s, size_t n)
{
	const enum stage *st;
	struct segs *in = &c->segs_a, *out = &c->segs_b, *tmp;
	size_t pos = 0, nc = 0, k;

	if (grow((void **)&c->cpt, &c->cpt_cap, n, sizeof(*c->cpt)) != 0 ||
	    grow((void **)&c->cflags, &c->cflags_cap, n, sizeof(*c->cflags)) != 0)
		return oom(c->err);
	while (pos < n) {
		c->cpt[nc] = unicode_decode_lenient(s, n, &pos);
		c->cflags[nc] = unicode_flags(c->cpt[nc]);
		nc++;
	}

	switch (c->t->pre) {
	case PRE_GPT2:
		st = stages_gpt2;
		break;
	case PRE_QWEN2:
		st = stages_qwen2;
		break;
	case PRE_LLAMA3:
		st = stages_llama3;
		break;
	case PRE_STARCODER:
		st = stages_starcoder;
		break;
	case PRE_DEEPSEEK_CODER:
		st = stages_deepseek_coder;
		break;
	default:
		st = stages_default;
		break;
	}
	in->n = 0;
	if (segs_push(in, 0, nc) != 0)
		return oom(c->err);
	for (; *st != ST_END; st++) {
		if (run_stage(*st, c->cpt, c->cflags, in, out) != 0)
			return oom(c->err);
		tmp = in;
		in = out;
		out = tmp;
	}
	for (k = 0; k < in->n; k++)
		if (bpe_word(c, in->v[k].start, in->v[k].len) != 0)
			return -1;
	return 0;
}

int
tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special,
    bool parse_special, int32_t **ids, size_t *n_ids, struct orcd_err *err)
{
	struct encode_ctx c;
	struct frags cur = { NULL, 0, 0 }, next = { NULL, 0, 0 };
	bool prev_special = true;
	size_t i;
	int rc = -1;

	*ids = NULL;
	*n_ids = 0;
	if (len > UINT32_MAX / 4)
		return orcd_errf(err, "tokenizer: text of %zu bytes is too long to encode", len);
	memset(&c, 0, sizeof(c));
	c.t = t;
	c.err = err;
	if (partition(t, text, len, parse_special, &cur, &next) != 0) {
		oom(err);
		goto fail;
	}
	if (add_special && t->add_bos && ids_push(&c.out, t->bos) != 0) {
		oom(err);
		goto fail;
	}
	for (i = 0; i < cur.n; i++) {
		const struct frag *fr = &cur.v[i];

		if (fr->tok >= 0) {
			if (ids_push(&c.out, fr->tok) != 0) {
				oom(err);
				goto fail;
			}
			prev_special = true;
			continue;
		}
		if (t->type == TOKENIZER_SPM) {
			/* SentencePiece's dummy prefix, again after each special
			 * token as llama.cpp does */
			if (spm_fragment(&c, text + fr->start, fr->len,
			    t->add_space_prefix && prev_special) != 0)
				goto fail;
		} else if (bpe_fragment(&c, text + fr->start, fr->len) != 0)
			goto fail;
		prev_special = false;
	}
	if (add_special && t->add_eos && ids_push(&c.out, t->eos) != 0) {
		oom(err);
		goto fail;
	}
	*ids = c.out.v;
	*n_ids = c.out.n;
	c.out.v = NULL;
	rc = 0;
fail:
	free(c.out.v);
	free(c.cpt);
	free(c.cflags);
	free(c.segs_a.v);
	free(c.segs_b.v);
	free(c.buf);
	free(c.sym);
	free(c.heap);
	free(cur.v);
	free(next.v);
	return rc;
}

/* ---------------------------------------------------------------------
 * Streaming UTF-8 assembly
 */

static size_t
put_replacement(char *out)
{
	memcpy(out, "\xef\xbf\xbd", 3);
	return 3;
}

void
tokenizer_utf8_init(struct tokenizer_utf8 *u)
{
	u->n_pend = 0;
}

bool
tokenizer_utf8_pending(const struct tokenizer_utf8 *u)
{
	return u->n_pend > 0;
}

size_t
tokenizer_utf8_feed(struct tokenizer_utf8 *u, const char *in, size_t len, char *out)
{
	const uint8_t *s = (const uint8_t *)in;
	uint8_t tmp[4];
	size_t pos = 0, o = 0, start;
	int r;

	/* finish (or give up on) the held-back sequence first */
	while (u->n_pend > 0 && pos < len) {
		memcpy(tmp, u->pend, u->n_pend);
		tmp[u->n_pend] = s[pos];
		r = unicode_utf8_check(tmp, (size_t)u->n_pend + 1);
		if (r > 0) {
			memcpy(out + o, tmp, (size_t)r);
			o += (size_t)r;
			u->n_pend = 0;
			pos++;
		} else if (r == 0) {
			u->pend[u->n_pend++] = s[pos++];
		} else {
			/* the held bytes were a valid prefix, so the new byte is
			 * what breaks it: replace them and look at it afresh */
			o += put_replacement(out + o);
			u->n_pend = 0;
		}
	}
	while (pos < len) {
		/* copy runs of well-formed text in one go */
		start = pos;
		while (pos < len && (r = unicode_utf8_check(s + pos, len - pos)) > 0)
			pos += (size_t)r;
		memcpy(out + o, s + start, pos - start);
		o += pos - start;
		if (pos >= len)
			break;
		r = unicode_utf8_check(s + pos, len - pos);
		if (r == 0) {
			memcpy(u->pend, s + pos, len - pos);
			u->n_pend = (uint8_t)(len - pos);
			break;
		}
		o += put_replacement(out + o);
		pos += (size_t)-r;
	}
	return o;
}

size_t
tokenizer_utf8_flush(struct tokenizer_utf8 *u, char *out)
{
	if (u->n_pend == 0)
		return 0;
	u->n_pend = 0;
	return put_replacement(out);
}
