/*
 * Tests for src/tokenizer.c: llama.cpp's tokenizer test vectors for every
 * ggml-vocab-*.gguf in the shared models directory, the golden prompts and
 * generations of the real models, encode/decode round trips, special-token
 * parsing, malformed vocabularies (GGUF images built here byte by byte),
 * and the streaming UTF-8 assembler.  Prints load and encode timings.
 *
 * The models directory is test_models_dir()'s ($ORCD_TEST_MODELS, else
 * $srcdir/../shared/models).  Without it only the self-contained tests run
 * and the program exits 77.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "test_util.h"
#include "tokenizer.h"
#include "unicode.h"

static char models_dir[4096];

static const char *const vocab_names[] = {
	"llama-spm", "gpt-2", "deepseek-coder", "starcoder", "qwen2-synth", NULL
};

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool
find_models(void)
{
	const char *dir = test_models_dir();

	if (dir == NULL)
		return false;
	snprintf(models_dir, sizeof(models_dir), "%s", dir);
	return true;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Opens models_dir/name and loads its tokenizer; the GGUF is closed at
 * once, which also checks that the tokenizer keeps nothing of it. */
static struct tokenizer *
load_model(const char *name, double *ms)
{
	struct orcd_err err = { "" };
	struct gguf_file *f;
	struct tokenizer *t;
	char path[4300];
	double t0;

	snprintf(path, sizeof(path), "%s/%s", models_dir, name);
	if (gguf_open(path, &f, &err) != 0)
		fail_msg("%s: %s", path, err.msg);
	t0 = now_ms();
	if (tokenizer_load(f, &t, &err) != 0)
		fail_msg("%s: %s", path, err.msg);
	if (ms != NULL)
		*ms = now_ms() - t0;
	gguf_close(f);
	return t;
}

static void
encode(const struct tokenizer *t, const char *s, size_t n, bool add_special, bool parse_special,
    int32_t **ids, size_t *n_ids)
{
	struct orcd_err err = { "" };

	if (tokenizer_encode(t, s, n, add_special, parse_special, ids, n_ids, &err) != 0)
		fail_msg("encode: %s", err.msg);
}

/* ---------------------------------------------------------------------
 * llama.cpp test vectors
 */

struct vectors {
	char *inp, *out;
	const char *text[64];
	size_t text_len[64];
	const char *ids[64];	/* line of .out */
	size_t n;
};

#define SEPARATOR "\n__ggml_vocab_test__\n"

static void
read_vectors(const char *vocab, struct vectors *v)
{
	char path[4300], *p, *q;
	size_t len;

	snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf.inp", models_dir, vocab);
	v->inp = slurp(path, &len);
	assert_non_null(v->inp);
	snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf.out", models_dir, vocab);
	v->out = slurp(path, &len);
	assert_non_null(v->out);
	v->n = 0;
	/* every case, the last included, ends with the separator */
	for (p = v->inp; (q = strstr(p, SEPARATOR)) != NULL; p = q + strlen(SEPARATOR)) {
		assert_true(v->n < 64);
		v->text[v->n] = p;
		v->text_len[v->n] = (size_t)(q - p);
		v->n++;
	}
	p = v->out;
	for (len = 0; len < v->n; len++) {
		q = strchr(p, '\n');
		assert_non_null(q);
		*q = '\0';
		v->ids[len] = p;
		p = q + 1;
	}
}

static void
free_vectors(struct vectors *v)
{
	free(v->inp);
	free(v->out);
}

/* Compares ids with a space-separated list; returns true if equal. */
static bool
ids_equal(const int32_t *ids, size_t n, const char *expected)
{
	const char *p = expected;
	char *end;
	size_t i = 0;
	long v;

	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		v = strtol(p, &end, 10);
		if (end == p || i >= n || ids[i] != v)
			return false;
		i++;
		p = end;
	}
	return i == n;
}

static void
print_ids(const char *what, const int32_t *ids, size_t n)
{
	size_t i;

	printf("  %s:", what);
	for (i = 0; i < n; i++)
		printf(" %d", ids[i]);
	printf("\n");
}

static void
test_vocab_vectors(void **state)
{
	const char *const *name;
	struct vectors v;
	char file[128];
	int32_t *ids;
	size_t n, i, total = 0, bad = 0;
	double ms;

	(void)state;
	for (name = vocab_names; *name != NULL; name++) {
		struct tokenizer *t;

		snprintf(file, sizeof(file), "ggml-vocab-%s.gguf", *name);
		t = load_model(file, &ms);
		read_vectors(*name, &v);
		assert_int_equal(v.n, 46);
		for (i = 0; i < v.n; i++) {
			encode(t, v.text[i], v.text_len[i], false, false, &ids, &n);
			if (!ids_equal(ids, n, v.ids[i])) {
				printf("%s case %zu: '%.*s'\n  expected: %s\n", *name, i,
				    (int)v.text_len[i], v.text[i], v.ids[i]);
				print_ids("got", ids, n);
				bad++;
			}
			total++;
			free(ids);
		}
		printf("%-15s %6d tokens, loaded in %6.2f ms, %zu cases\n", *name,
		    tokenizer_n_vocab(t), ms, v.n);
		free_vectors(&v);
		tokenizer_free(t);
	}
	printf("test vectors: %zu passed, %zu failed\n", total - bad, bad);
	assert_int_equal(bad, 0);
}

/* Encoding then concatenating the pieces gives the input back (BPE). */
static void
test_bpe_round_trip(void **state)
{
	const char *const *name;
	struct vectors v;
	struct orcd_err err;
	char file[128], *text;
	int32_t *ids;
	size_t n, i, len, checked = 0;

	(void)state;
	for (name = vocab_names + 1; *name != NULL; name++) {
		struct tokenizer *t;

		snprintf(file, sizeof(file), "ggml-vocab-%s.gguf", *name);
		t = load_model(file, NULL);
		assert_int_equal(tokenizer_type(t), TOKENIZER_BPE);
		read_vectors(*name, &v);
		for (i = 0; i < v.n; i++) {
			encode(t, v.text[i], v.text_len[i], false, false, &ids, &n);
			assert_int_equal(tokenizer_decode(t, ids, n, &text, &len, &err), 0);
			if (len != v.text_len[i] || memcmp(text, v.text[i], len) != 0)
				fail_msg("%s case %zu: round trip gave '%s'", *name, i, text);
			free(text);
			free(ids);
			checked++;
		}
		free_vectors(&v);
		tokenizer_free(t);
	}
	printf("round trips: %zu passed\n", checked);
}

/* ---------------------------------------------------------------------
 * Golden prompts and generations (golden.jsonl)
 */

/* Finds "key": in line and returns the character after the colon. */
static const char *
json_field(const char *line, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(line, pat);
	assert_non_null(p);
	p += strlen(pat);
	while (*p == ' ')
		p++;
	return p;
}

static void
put_utf8(char *out, size_t *n, uint32_t cpt)
{
	*n += unicode_encode(cpt, out + *n);
}

/* A JSON string value at p; returns malloc'd bytes. */
static char *
json_string(const char *p, size_t *len)
{
	char *out = malloc(strlen(p) + 1), *end;
	size_t n = 0;
	uint32_t cpt, lo;
	char hex[5] = { 0 };

	assert_non_null(out);
	assert_int_equal(*p, '"');
	for (p++; *p != '"'; p++) {
		assert_true(*p != '\0');
		if (*p != '\\') {
			out[n++] = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'n': out[n++] = '\n'; break;
		case 't': out[n++] = '\t'; break;
		case 'r': out[n++] = '\r'; break;
		case 'b': out[n++] = '\b'; break;
		case 'f': out[n++] = '\f'; break;
		case 'u':
			memcpy(hex, p + 1, 4);
			cpt = (uint32_t)strtoul(hex, &end, 16);
			p += 4;
			if (cpt >= 0xd800 && cpt < 0xdc00 && p[1] == '\\' && p[2] == 'u') {
				memcpy(hex, p + 3, 4);
				lo = (uint32_t)strtoul(hex, &end, 16);
				cpt = 0x10000 + ((cpt - 0xd800) << 10) + (lo - 0xdc00);
				p += 6;
			}
			put_utf8(out, &n, cpt);
			break;
		default: out[n++] = *p; break;
		}
	}
	out[n] = '\0';
	*len = n;
	return out;
}

static size_t
json_ints(const char *p, int32_t *out, size_t max)
{
	size_t n = 0;
	char *end;

	assert_int_equal(*p, '[');
	p++;
	for (;;) {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == ']')
			return n;
		assert_true(n < max);
		out[n++] = (int32_t)strtol(p, &end, 10);
		assert_true(end != p);
		p = end;
	}
}

static void
test_golden(void **state)
{
	char path[4300], *data, *line, *next, *model, *prompt, *gen_text, *text;
	int32_t want[512], gen[512], *ids;
	size_t len, n_want, n_gen, n, mlen, plen, glen, cases = 0;
	struct orcd_err err;

	(void)state;
	snprintf(path, sizeof(path), "%s/golden.jsonl", models_dir);
	data = slurp(path, &len);
	assert_non_null(data);
	for (line = data; *line != '\0'; line = next) {
		struct tokenizer *t;

		next = strchr(line, '\n');
		if (next == NULL)
			next = line + strlen(line);
		else
			*next++ = '\0';
		if (*line == '\0')
			continue;
		model = json_string(json_field(line, "model"), &mlen);
		prompt = json_string(json_field(line, "prompt"), &plen);
		gen_text = json_string(json_field(line, "gen_text"), &glen);
		n_want = json_ints(json_field(line, "prompt_ids"), want, 512);
		n_gen = json_ints(json_field(line, "gen_ids"), gen, 512);

		t = load_model(model, NULL);
		assert_true(tokenizer_add_bos(t));
		encode(t, prompt, plen, true, false, &ids, &n);
		if (n != n_want || memcmp(ids, want, n * sizeof(*ids)) != 0) {
			print_ids("got", ids, n);
			print_ids("expected", want, n_want);
			fail_msg("%s: prompt '%s' tokenized differently", model, prompt);
		}
		free(ids);
		assert_int_equal(tokenizer_decode(t, gen, n_gen, &text, &len, &err), 0);
		if (len != glen || memcmp(text, gen_text, len) != 0)
			fail_msg("%s: pieces give '%s', expected '%s'", model, text, gen_text);
		printf("golden %-28s prompt '%s': %zu ids, %zu generated ids ok\n", model,
		    prompt, n_want, n_gen);
		free(text);
		free(model);
		free(prompt);
		free(gen_text);
		tokenizer_free(t);
		cases++;
	}
	free(data);
	assert_true(cases >= 4);
}

/* ---------------------------------------------------------------------
 * Special tokens, pieces, end of generation
 */

static void
test_qwen2_special(void **state)
{
	struct tokenizer *t = load_model("ggml-vocab-qwen2-synth.gguf", NULL);
	const char *s = "<|im_start|>user", *piece;
	int32_t *ids, *plain, id, n_eog = 0;
	size_t n, n_plain, i, len;
	char *text;
	struct orcd_err err;

	(void)state;
	assert_int_equal(tokenizer_token_id(t, "<|im_start|>", 12), 151644);
	assert_int_equal(tokenizer_token_id(t, "<|im_start", 10), -1);
	assert_int_equal(tokenizer_bos(t), 151643);
	assert_int_equal(tokenizer_eos(t), 151645);
	assert_false(tokenizer_add_bos(t));
	assert_string_equal(tokenizer_pre_name(t), "qwen2");

	/* parsed: the marker, then "user" exactly as alone */
	encode(t, s, strlen(s), false, true, &ids, &n);
	encode(t, "user", 4, false, false, &plain, &n_plain);
	assert_true(n == n_plain + 1);
	assert_int_equal(ids[0], 151644);
	assert_memory_equal(ids + 1, plain, n_plain * sizeof(*plain));
	free(ids);
	free(plain);

	/* not parsed: CONTROL text stays text and round-trips */
	encode(t, s, strlen(s), false, false, &ids, &n);
	for (i = 0; i < n; i++)
		assert_true(ids[i] < 151643);
	assert_int_equal(tokenizer_decode(t, ids, n, &text, &len, &err), 0);
	assert_string_equal(text, s);
	free(text);
	free(ids);

	/* USER_DEFINED tokens are matched even without parse_special */
	s = "a<tool_call>{}</tool_call>";
	encode(t, s, strlen(s), false, false, &ids, &n);
	assert_true(n >= 4);
	assert_int_equal(ids[1], 151657);
	assert_int_equal(ids[n - 1], 151658);
	free(ids);

	/* the end-of-generation set llama.cpp derives */
	for (id = 0; id < tokenizer_n_vocab(t); id++)
		n_eog += tokenizer_is_eog(t, id);
	assert_int_equal(n_eog, 5);
	assert_true(tokenizer_is_eog(t, 151643));	/* <|endoftext|> */
	assert_true(tokenizer_is_eog(t, 151645));	/* <|im_end|> */
	assert_true(tokenizer_is_eog(t, 151662));	/* <|fim_pad|> */
	assert_true(tokenizer_is_eog(t, 151663));	/* <|repo_name|> */
	assert_true(tokenizer_is_eog(t, 151664));	/* <|file_sep|> */
	assert_false(tokenizer_is_eog(t, 151644));
	assert_false(tokenizer_is_eog(t, -1));
	assert_false(tokenizer_is_eog(t, 1 << 30));

	/* pieces: control renders empty, user-defined as text, bytes decoded */
	piece = tokenizer_piece(t, 151644, &len);
	assert_int_equal(len, 0);
	piece = tokenizer_piece(t, 151657, &len);
	assert_int_equal(len, 11);
	assert_memory_equal(piece, "<tool_call>", 11);
	piece = tokenizer_piece(t, 220, &len);	/* Ġ */
	assert_int_equal(len, 1);
	assert_int_equal(piece[0], ' ');
	piece = tokenizer_piece(t, 198, &len);	/* Ċ */
	assert_int_equal(len, 1);
	assert_int_equal(piece[0], '\n');
	assert_int_equal(tokenizer_attr(t, 151644), TOKENIZER_ATTR_CONTROL);
	assert_int_equal(tokenizer_attr(t, 151657), TOKENIZER_ATTR_USER_DEFINED);
	tokenizer_free(t);
}

static void
test_spm_pieces(void **state)
{
	struct tokenizer *t = load_model("ggml-vocab-llama-spm.gguf", NULL);
	int32_t *ids, *ids2;
	size_t n, n2, len;
	const char *p;

	(void)state;
	assert_int_equal(tokenizer_type(t), TOKENIZER_SPM);
	assert_true(tokenizer_add_bos(t));
	assert_int_equal(tokenizer_bos(t), 1);
	assert_true(tokenizer_is_eog(t, 2));
	p = tokenizer_piece(t, tokenizer_token_id(t, "<0x0A>", 6), &len);
	assert_int_equal(len, 1);
	assert_int_equal(p[0], '\n');
	p = tokenizer_piece(t, tokenizer_token_id(t, "\xe2\x96\x81the", 6), &len);
	assert_int_equal(len, 4);
	assert_memory_equal(p, " the", 4);
	p = tokenizer_piece(t, 2, &len);	/* </s> */
	assert_int_equal(len, 0);
	/* byte tokens give parts of characters */
	assert_false(tokenizer_piece_is_utf8(t, tokenizer_token_id(t, "<0xF0>", 6)));
	assert_true(tokenizer_piece_is_utf8(t, tokenizer_token_id(t, "<0x41>", 6)));

	/* <s> in text: parsed only when asked; a space prefix follows it */
	encode(t, "<s>hi", 5, false, true, &ids, &n);
	encode(t, "hi", 2, false, false, &ids2, &n2);
	assert_int_equal(ids[0], 1);
	assert_int_equal(n, n2 + 1);
	assert_memory_equal(ids + 1, ids2, n2 * sizeof(*ids2));
	free(ids);
	free(ids2);
	encode(t, "<s>hi", 5, false, false, &ids, &n);
	assert_int_not_equal(ids[0], 1);
	free(ids);
	/* BOS only */
	encode(t, "", 0, true, false, &ids, &n);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 1);
	free(ids);
	encode(t, "", 0, false, false, &ids, &n);
	assert_int_equal(n, 0);
	free(ids);
	tokenizer_free(t);
}

/* Pieces of an encoded text, fed one by one through the UTF-8 assembler,
 * give the text back; split characters are held back in between. */
static void
test_stream_pieces(void **state)
{
	struct tokenizer *t = load_model("ggml-vocab-gpt-2.gguf", NULL);
	const char *s = "Grüße 🦙🦙 — 你好, мир! \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd";
	struct tokenizer_utf8 u;
	char out[4096], tmp[64];
	int32_t *ids;
	size_t n, i, o = 0, len, k, held = 0;
	const char *p;

	(void)state;
	encode(t, s, strlen(s), false, false, &ids, &n);
	tokenizer_utf8_init(&u);
	for (i = 0; i < n; i++) {
		p = tokenizer_piece(t, ids[i], &len);
		assert_true(TOKENIZER_UTF8_OUT_MAX(len) <= sizeof(tmp));
		k = tokenizer_utf8_feed(&u, p, len, tmp);
		assert_true(unicode_utf8_valid(tmp, k));
		if (tokenizer_utf8_pending(&u))
			held++;
		memcpy(out + o, tmp, k);
		o += k;
	}
	o += tokenizer_utf8_flush(&u, out + o);
	assert_int_equal(o, strlen(s));
	assert_memory_equal(out, s, o);
	assert_true(held > 0);	/* the emoji are split into byte tokens */
	free(ids);
	tokenizer_free(t);
}

/* ---------------------------------------------------------------------
 * Timing (printed, loosely bounded)
 */

static void
test_timing(void **state)
{
	struct vectors v;
	double load_ms, best = 1e9, t0, ms;
	struct tokenizer *t;
	char *big;
	size_t len = 0, i, n, total_ids = 0;
	int32_t *ids;
	int rep;

	(void)state;
	for (rep = 0; rep < 3; rep++) {
		t = load_model("ggml-vocab-qwen2-synth.gguf", &load_ms);
		if (load_ms < best)
			best = load_ms;
		tokenizer_free(t);
	}
	printf("qwen2-synth (151665 tokens, 151387 merges): best load %.1f ms\n", best);
	assert_true(best < 1000);

	read_vectors("qwen2-synth", &v);
	big = malloc(1 << 20);
	assert_non_null(big);
	while (len + 4096 < (1 << 20)) {
		for (i = 0; i < v.n && len + v.text_len[i] + 1 < (1 << 20); i++) {
			memcpy(big + len, v.text[i], v.text_len[i]);
			len += v.text_len[i];
			big[len++] = '\n';
		}
	}
	for (i = 0; vocab_names[i] != NULL; i++) {
		char file[128];

		snprintf(file, sizeof(file), "ggml-vocab-%s.gguf", vocab_names[i]);
		t = load_model(file, NULL);
		t0 = now_ms();
		encode(t, big, len, false, false, &ids, &n);
		ms = now_ms() - t0;
		total_ids += n;
		printf("encode %-15s %zu bytes -> %zu ids in %6.1f ms (%.1f MB/s)\n",
		    vocab_names[i], len, n, ms, len / ms / 1e3);
		free(ids);
		tokenizer_free(t);
	}
	assert_true(total_ids > 0);
	free(big);
	free_vectors(&v);
}

/* ---------------------------------------------------------------------
 * Self-contained: GGUF images built here
 */

struct img {
	uint8_t *p;
	size_t n, cap;
	uint64_t n_kv;
};

static void
img_put(struct img *m, const void *data, size_t n)
{
	if (m->n + n > m->cap) {
		m->cap = (m->n + n) * 2 + 64;
		m->p = realloc(m->p, m->cap);
		assert_non_null(m->p);
	}
	memcpy(m->p + m->n, data, n);
	m->n += n;
}

static void
img_u32(struct img *m, uint32_t v)
{
	img_put(m, &v, 4);	/* little-endian host, as GGUF */
}

static void
img_u64(struct img *m, uint64_t v)
{
	img_put(m, &v, 8);
}

static void
img_str(struct img *m, const char *s)
{
	img_u64(m, strlen(s));
	img_put(m, s, strlen(s));
}

static void
img_begin(struct img *m)
{
	memset(m, 0, sizeof(*m));
	img_put(m, "GGUF", 4);
	img_u32(m, 3);
	img_u64(m, 0);		/* tensors */
	img_u64(m, 0);		/* key/values, patched by img_end */
}

static void
img_key(struct img *m, const char *key, enum gguf_vtype type)
{
	img_str(m, key);
	img_u32(m, type);
	m->n_kv++;
}

static void
kv_str(struct img *m, const char *key, const char *v)
{
	img_key(m, key, GGUF_TYPE_STRING);
	img_str(m, v);
}

static void
kv_u32(struct img *m, const char *key, uint32_t v)
{
	img_key(m, key, GGUF_TYPE_UINT32);
	img_u32(m, v);
}

static void
kv_bool(struct img *m, const char *key, bool v)
{
	uint8_t b = v;

	img_key(m, key, GGUF_TYPE_BOOL);
	img_put(m, &b, 1);
}

static void
kv_strs(struct img *m, const char *key, const char *const *v, size_t n)
{
	size_t i;

	img_key(m, key, GGUF_TYPE_ARRAY);
	img_u32(m, GGUF_TYPE_STRING);
	img_u64(m, n);
	for (i = 0; i < n; i++)
		img_str(m, v[i]);
}

static void
kv_i32s(struct img *m, const char *key, const int32_t *v, size_t n)
{
	img_key(m, key, GGUF_TYPE_ARRAY);
	img_u32(m, GGUF_TYPE_INT32);
	img_u64(m, n);
	img_put(m, v, n * 4);
}

static void
kv_f32s(struct img *m, const char *key, const float *v, size_t n)
{
	img_key(m, key, GGUF_TYPE_ARRAY);
	img_u32(m, GGUF_TYPE_FLOAT32);
	img_u64(m, n);
	img_put(m, v, n * 4);
}

static void
img_end(struct img *m)
{
	static const uint8_t zero[32];

	memcpy(m->p + 16, &m->n_kv, 8);
	img_put(m, zero, (32 - m->n % 32) % 32);
}

/* A small SentencePiece vocabulary. */
static const char *const spm_tokens[] = {
	"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab",
	"\xe2\x96\x81" "ab", "<0x63>", "<0x0A>", "<my>",
};
static const float spm_scores[] = { 0, 0, 0, -1, -2, -2, -3, -4, -0.5f, 0, 0, 0 };
static const int32_t spm_types[] = { 2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, 4 };
#define N_SPM (sizeof(spm_tokens) / sizeof(spm_tokens[0]))

/* A small byte-level BPE vocabulary ("Ġ" is U+0120, the space symbol). */
static const char *const bpe_tokens[] = {
	"a", "b", "\xc4\xa0", "ab", "\xc4\xa0" "a", "\xc4\xa0" "ab", "<|endoftext|>", "1",
};
static const int32_t bpe_types[] = { 1, 1, 1, 1, 1, 1, 3, 1 };
/* "Ġ a" outranks "a b", so " ab" is Ġa + b, then Ġab */
static const char *const bpe_merges[] = { "\xc4\xa0 a", "a b", "\xc4\xa0" "a b" };
#define N_BPE (sizeof(bpe_tokens) / sizeof(bpe_tokens[0]))

enum variant {
	V_OK,
	V_NO_MODEL,
	V_MODEL_BERT,
	V_MODEL_NOT_STRING,
	V_NO_TOKENS,
	V_TOKENS_NOT_STRINGS,
	V_TOKENS_EMPTY,
	V_SCORES_SHORT,
	V_TYPES_NOT_INTS,
	V_TYPES_SHORT,
	V_BOS_RANGE,
	V_EOS_NOT_INT,
	V_NO_MERGES,
	V_MERGE_NO_SPACE,
	V_MERGE_UNKNOWN,
	V_MERGE_NO_RESULT,
	V_MERGES_NOT_STRINGS,
	V_PRE_UNKNOWN,
	V_ADD_BOS_NO_BOS,
};

static void
build_spm(struct img *m, enum variant v)
{
	static const int32_t bad[3] = { 1, 2, 3 };

	img_begin(m);
	kv_str(m, "general.architecture", "llama");
	if (v == V_MODEL_NOT_STRING)
		kv_u32(m, "tokenizer.ggml.model", 1);
	else if (v != V_NO_MODEL)
		kv_str(m, "tokenizer.ggml.model", v == V_MODEL_BERT ? "bert" : "llama");
	if (v == V_TOKENS_NOT_STRINGS)
		kv_i32s(m, "tokenizer.ggml.tokens", bad, 3);
	else if (v == V_TOKENS_EMPTY)
		kv_strs(m, "tokenizer.ggml.tokens", spm_tokens, 0);
	else if (v != V_NO_TOKENS)
		kv_strs(m, "tokenizer.ggml.tokens", spm_tokens, N_SPM);
	kv_f32s(m, "tokenizer.ggml.scores", spm_scores, v == V_SCORES_SHORT ? 3 : N_SPM);
	if (v == V_TYPES_NOT_INTS)
		kv_strs(m, "tokenizer.ggml.token_type", spm_tokens, N_SPM);
	else
		kv_i32s(m, "tokenizer.ggml.token_type", spm_types, v == V_TYPES_SHORT ? 2 : N_SPM);
	kv_u32(m, "tokenizer.ggml.bos_token_id", v == V_BOS_RANGE ? (uint32_t)N_SPM : 1);
	if (v == V_EOS_NOT_INT)
		kv_str(m, "tokenizer.ggml.eos_token_id", "2");
	else
		kv_u32(m, "tokenizer.ggml.eos_token_id", 2);
	kv_u32(m, "tokenizer.ggml.padding_token_id", UINT32_MAX);	/* "none" */
	img_end(m);
}

static void
build_bpe(struct img *m, enum variant v)
{
	static const char *const no_space[] = { "a b", "ab" };
	static const char *const unknown[] = { "a b", "a z" };
	static const char *const no_result[] = { "a b", "b a" };
	static const int32_t ints[2] = { 1, 2 };

	img_begin(m);
	kv_str(m, "tokenizer.ggml.model", "gpt2");
	kv_str(m, "tokenizer.ggml.pre", v == V_PRE_UNKNOWN ? "no-such-pre" : "gpt-2");
	kv_strs(m, "tokenizer.ggml.tokens", bpe_tokens, N_BPE);
	kv_i32s(m, "tokenizer.ggml.token_type", bpe_types, N_BPE);
	if (v == V_MERGE_NO_SPACE)
		kv_strs(m, "tokenizer.ggml.merges", no_space, 2);
	else if (v == V_MERGE_UNKNOWN)
		kv_strs(m, "tokenizer.ggml.merges", unknown, 2);
	else if (v == V_MERGE_NO_RESULT)
		kv_strs(m, "tokenizer.ggml.merges", no_result, 2);
	else if (v == V_MERGES_NOT_STRINGS)
		kv_i32s(m, "tokenizer.ggml.merges", ints, 2);
	else if (v != V_NO_MERGES)
		kv_strs(m, "tokenizer.ggml.merges", bpe_merges, 3);
	if (v != V_ADD_BOS_NO_BOS)
		kv_u32(m, "tokenizer.ggml.eos_token_id", 6);
	else
		kv_bool(m, "tokenizer.ggml.add_bos_token", true);
	img_end(m);
}

static int
load_image(struct img *m, struct tokenizer **t, struct orcd_err *err)
{
	struct gguf_file *f;
	int rc;

	if (gguf_parse(m->p, m->n, &f, err) != 0)
		fail_msg("gguf_parse of a test image: %s", err->msg);
	rc = tokenizer_load(f, t, err);
	gguf_close(f);
	/* the tokenizer must hold nothing of the image */
	memset(m->p, 0xa5, m->n);
	free(m->p);
	m->p = NULL;
	return rc;
}

static void
test_small_spm(void **state)
{
	struct orcd_err err = { "" };
	struct tokenizer *t;
	struct img m;
	int32_t *ids;
	size_t n, len;
	const char *p;

	(void)state;
	build_spm(&m, V_OK);
	if (load_image(&m, &t, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(tokenizer_n_vocab(t), N_SPM);
	assert_int_equal(tokenizer_pad(t), -1);
	/* "▁ab" outscores "▁a" + "b" */
	encode(t, "ab", 2, true, false, &ids, &n);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 8);
	free(ids);
	/* c: <0x63> byte fallback; d: no byte token, so <unk> */
	encode(t, "abcd", 4, false, false, &ids, &n);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 8);
	assert_int_equal(ids[1], 9);
	assert_int_equal(ids[2], 0);
	free(ids);
	/* user-defined text is matched without parse_special */
	encode(t, "a<my>", 5, false, false, &ids, &n);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 6);
	assert_int_equal(ids[1], 11);
	free(ids);
	p = tokenizer_piece(t, 8, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(p, " ab", 3);
	p = tokenizer_piece(t, 10, &len);
	assert_int_equal(len, 1);
	assert_int_equal(p[0], '\n');
	p = tokenizer_piece(t, 0, &len);
	assert_int_equal(len, 0);
	p = tokenizer_piece(t, 11, &len);
	assert_int_equal(len, 4);
	p = tokenizer_token_text(t, 2, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(p, "</s>", 4);
	assert_int_equal(tokenizer_token_id(t, "</s>", 4), 2);
	tokenizer_free(t);
}

static void
test_small_bpe(void **state)
{
	struct orcd_err err = { "" };
	struct tokenizer *t;
	struct img m;
	int32_t *ids;
	size_t n;

	(void)state;
	build_bpe(&m, V_OK);
	if (load_image(&m, &t, &err) != 0)
		fail_msg("%s", err.msg);
	assert_false(tokenizer_add_bos(t));
	assert_int_equal(tokenizer_bos(t), -1);
	assert_true(tokenizer_is_eog(t, 6));
	/* words "ab", " ab", " a"; with "a b" first, " ab" would be Ġ + ab */
	encode(t, "ab ab a", 7, true, false, &ids, &n);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 3);
	assert_int_equal(ids[1], 5);
	assert_int_equal(ids[2], 4);
	free(ids);
	/* "c" has no byte symbol in this vocabulary: dropped, as llama.cpp does */
	encode(t, "c1", 2, false, false, &ids, &n);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 7);
	free(ids);
	encode(t, "<|endoftext|>", 13, false, true, &ids, &n);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 6);
	free(ids);
	tokenizer_free(t);
}

static void
test_malformed(void **state)
{
	static const struct {
		enum variant v;
		bool bpe;
		const char *msg;	/* part of the expected error */
	} cases[] = {
		{ V_NO_MODEL, false, "no tokenizer.ggml.model" },
		{ V_MODEL_BERT, false, "unsupported tokenizer.ggml.model 'bert'" },
		{ V_MODEL_NOT_STRING, false, "tokenizer.ggml.model" },
		{ V_NO_TOKENS, false, "no tokenizer.ggml.tokens" },
		{ V_TOKENS_NOT_STRINGS, false, "tokenizer.ggml.tokens" },
		{ V_TOKENS_EMPTY, false, "tokenizer.ggml.tokens is empty" },
		{ V_SCORES_SHORT, false, "tokenizer.ggml.scores has 3 entries" },
		{ V_TYPES_NOT_INTS, false, "token_type is not an integer array" },
		{ V_TYPES_SHORT, false, "token_type has 2 entries" },
		{ V_BOS_RANGE, false, "bos_token_id = 12 is out of range" },
		{ V_EOS_NOT_INT, false, "eos_token_id" },
		{ V_NO_MERGES, true, "without tokenizer.ggml.merges" },
		{ V_MERGE_NO_SPACE, true, "merge 1 ('ab') is not two tokens" },
		{ V_MERGE_UNKNOWN, true, "merge 1 ('a z') names a token that is not" },
		{ V_MERGE_NO_RESULT, true, "merge 1 ('b a') makes a token that is not" },
		{ V_MERGES_NOT_STRINGS, true, "tokenizer.ggml.merges" },
		{ V_PRE_UNKNOWN, true, "unknown pre-tokenizer tokenizer.ggml.pre = 'no-such-pre'" },
		{ V_ADD_BOS_NO_BOS, true, "asks for a BOS token but has none" },
	};
	struct orcd_err err;
	struct tokenizer *t;
	struct img m;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].bpe)
			build_bpe(&m, cases[i].v);
		else
			build_spm(&m, cases[i].v);
		memset(&err, 0, sizeof(err));
		t = (struct tokenizer *)&m;	/* must be reset to NULL */
		assert_int_equal(load_image(&m, &t, &err), -1);
		assert_null(t);
		if (strstr(err.msg, cases[i].msg) == NULL)
			fail_msg("case %zu: error '%s' lacks '%s'", i, err.msg, cases[i].msg);
	}
}

/* ---------------------------------------------------------------------
 * UTF-8 assembly
 */

static size_t
feed_all(const char *in, size_t len, char *out)
{
	struct tokenizer_utf8 u;
	size_t o;

	tokenizer_utf8_init(&u);
	o = tokenizer_utf8_feed(&u, in, len, out);
	return o + tokenizer_utf8_flush(&u, out + o);
}

#define FFFD "\xef\xbf\xbd"

static void
test_utf8_assembler(void **state)
{
	/* expected: what Python's bytes.decode("utf-8", "replace") gives */
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "plain", "plain" },
		{ "\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9" },
		{ "\xed\xa0\x80", FFFD FFFD FFFD },		/* surrogate */
		{ "\xe2\x82" "A", FFFD "A" },			/* truncated */
		{ "\xf0\x9f\xa6", FFFD },			/* truncated at end */
		{ "\xc0\xaf", FFFD FFFD },			/* overlong */
		{ "\xff", FFFD },
		{ "a\xf4\x90\x80\x80" "b", "a" FFFD FFFD FFFD FFFD "b" },
		{ "\xe0\x9f\x80", FFFD FFFD FFFD },
		{ "\xf0\x8f\xbf\xbf", FFFD FFFD FFFD FFFD },
		{ "\xe1\x80\xe2\xf0\x91\x92\xf1\xbf" "A", FFFD FFFD FFFD FFFD "A" },
		{ "\xf0\x9f\xa6\x99", "\xf0\x9f\xa6\x99" },
	};
	struct tokenizer_utf8 u;
	char out[256], out2[256];
	const char *llama = "\xf0\x9f\xa6\x99";
	size_t i, k, o, n, cut, len;
	unsigned seed = 12345;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = feed_all(cases[i].in, strlen(cases[i].in), out);
		if (n != strlen(cases[i].out) || memcmp(out, cases[i].out, n) != 0)
			fail_msg("utf8 case %zu: got %zu bytes", i, n);
	}

	/* a 4-byte character arriving one byte at a time */
	tokenizer_utf8_init(&u);
	for (i = 0, o = 0; i < 4; i++) {
		k = tokenizer_utf8_feed(&u, llama + i, 1, out + o);
		assert_int_equal(k, i < 3 ? 0 : 4);
		assert_int_equal(tokenizer_utf8_pending(&u), i < 3);
		o += k;
	}
	assert_memory_equal(out, llama, 4);
	/* held bytes broken by the next piece */
	tokenizer_utf8_init(&u);
	assert_int_equal(tokenizer_utf8_feed(&u, "x\xe2\x82", 3, out), 1);
	k = tokenizer_utf8_feed(&u, "y", 1, out);
	assert_int_equal(k, 4);
	assert_memory_equal(out, FFFD "y", 4);
	assert_int_equal(tokenizer_utf8_flush(&u, out), 0);
	/* flush of a held prefix */
	assert_int_equal(tokenizer_utf8_feed(&u, "\xc3", 1, out), 0);
	assert_int_equal(tokenizer_utf8_flush(&u, out), 3);
	assert_false(tokenizer_utf8_pending(&u));

	/* any split of any bytes gives what one feed gives */
	for (i = 0; i < 2000; i++) {
		char in[16];

		len = 1 + (seed = seed * 1103515245 + 12345) % 12;
		for (k = 0; k < len; k++) {
			seed = seed * 1103515245 + 12345;
			/* mostly bytes that matter to UTF-8 */
			in[k] = (char)((seed >> 16) % 3 == 0 ? 'a' : 0x80 + (seed >> 8) % 128);
		}
		n = feed_all(in, len, out);
		assert_true(unicode_utf8_valid(out, n));
		cut = (seed >> 4) % (len + 1);
		tokenizer_utf8_init(&u);
		o = tokenizer_utf8_feed(&u, in, cut, out2);
		o += tokenizer_utf8_feed(&u, in + cut, len - cut, out2 + o);
		o += tokenizer_utf8_flush(&u, out2 + o);
		assert_true(o <= TOKENIZER_UTF8_OUT_MAX(len));
		assert_int_equal(o, n);
		assert_memory_equal(out, out2, n);
	}
}

static void
test_unicode_tables(void **state)
{
	(void)state;
	assert_string_equal(unicode_data_version, "15.1.0");
	assert_int_equal(unicode_flags('a'), UNICODE_LETTER);
	assert_int_equal(unicode_flags(' '), UNICODE_SEPARATOR | UNICODE_WHITESPACE);
	assert_int_equal(unicode_flags('\n'), UNICODE_CONTROL | UNICODE_WHITESPACE);
	assert_int_equal(unicode_flags(0x1c), UNICODE_CONTROL);	/* not White_Space */
	assert_int_equal(unicode_flags('7'), UNICODE_NUMBER);
	assert_int_equal(unicode_flags('$'), UNICODE_SYMBOL);
	assert_int_equal(unicode_flags('_'), UNICODE_PUNCT);
	assert_int_equal(unicode_flags(0x3000), UNICODE_SEPARATOR | UNICODE_WHITESPACE);
	assert_int_equal(unicode_flags(0x4e2d), UNICODE_LETTER);	/* 中 */
	assert_int_equal(unicode_flags(0x0301), UNICODE_MARK);
	assert_int_equal(unicode_flags(0x2167), UNICODE_NUMBER);	/* Ⅷ */
	assert_int_equal(unicode_flags(0x0378), UNICODE_UNDEFINED);
	assert_int_equal(unicode_flags(0x2ebf0), UNICODE_LETTER);	/* 15.1 */
	assert_int_equal(unicode_flags(0x10ffff), UNICODE_UNDEFINED);
	assert_int_equal(unicode_flags(0x110000), UNICODE_UNDEFINED);
	assert_int_equal(unicode_gpt2_byte_to_cpt(' '), 0x120);
	assert_int_equal(unicode_gpt2_byte_to_cpt('\n'), 0x10a);
	assert_int_equal(unicode_gpt2_byte_to_cpt(0xad), 0x143);
	for (int b = 0; b < 256; b++)
		assert_int_equal(unicode_gpt2_cpt_to_byte(unicode_gpt2_byte_to_cpt((uint8_t)b)), b);
	assert_int_equal(unicode_gpt2_cpt_to_byte(0x144), -1);
	assert_int_equal(unicode_gpt2_cpt_to_byte(0x20), -1);
}

int
main(void)
{
	const struct CMUnitTest self[] = {
		cmocka_unit_test(test_unicode_tables),
		cmocka_unit_test(test_utf8_assembler),
		cmocka_unit_test(test_small_spm),
		cmocka_unit_test(test_small_bpe),
		cmocka_unit_test(test_malformed),
	};
	const struct CMUnitTest models[] = {
		cmocka_unit_test(test_vocab_vectors),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_bpe_round_trip),
		cmocka_unit_test(test_qwen2_special),
		cmocka_unit_test(test_spm_pieces),
		cmocka_unit_test(test_stream_pieces),
		cmocka_unit_test(test_timing),
	};
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = cmocka_run_group_tests_name("tokenizer", self, NULL, NULL);
	if (!find_models()) {
		printf("test models not found: skipping the tests that need them\n");
		return rc != 0 ? rc : 77;
	}
	return rc | cmocka_run_group_tests_name("tokenizer models", models, NULL, NULL);
}
