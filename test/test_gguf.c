/*
 * GGUF reader tests: a small file built here byte by byte from the format
 * description parses to the expected index; the same file cut at every byte
 * offset, and with every header byte mutated, gives a clean error (or a
 * valid parse) and never reads out of bounds — run under ASAN+UBSAN by the
 * sanitizer variant of make check.  Real model files are parsed when the
 * shared models are present.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orcd/dtype.h"
#include "gguf.h"
#include "model.h"
#include "test_util.h"

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void
put(struct buf *b, const void *v, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, v, n);
	b->n += n;
}

static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(struct buf *b, float v) { put(b, &v, 4); }

static void
put_str(struct buf *b, const char *s)
{
	put_u64(b, strlen(s));
	put(b, s, strlen(s));
}

static void
put_key(struct buf *b, const char *k, uint32_t type)
{
	put_str(b, k);
	put_u32(b, type);
}

static void
pad_to(struct buf *b, size_t align)
{
	static const uint8_t zero[64];

	while (b->n % align != 0)
		put(b, zero, 1);
}

/*
 * A complete tiny llama model: 1 layer, n_embd 32, 2 heads, 1 kv head,
 * n_ff 32, vocab 4 (SPM tokens), F32 weights filled with small values.
 */
#define T_EMBD 32
#define T_FF 32
#define T_VOCAB 4

struct tinfo {
	const char *name;
	uint64_t ne0, ne1; /* ne1 0 = 1-D */
};

static const struct tinfo tiny_tensors[] = {
	{ "token_embd.weight", T_EMBD, T_VOCAB },
	{ "output_norm.weight", T_EMBD, 0 },
	{ "blk.0.attn_norm.weight", T_EMBD, 0 },
	{ "blk.0.ffn_norm.weight", T_EMBD, 0 },
	{ "blk.0.attn_q.weight", T_EMBD, T_EMBD },
	{ "blk.0.attn_k.weight", T_EMBD, T_EMBD / 2 },
	{ "blk.0.attn_v.weight", T_EMBD, T_EMBD / 2 },
	{ "blk.0.attn_output.weight", T_EMBD, T_EMBD },
	{ "blk.0.ffn_gate.weight", T_EMBD, T_FF },
	{ "blk.0.ffn_up.weight", T_EMBD, T_FF },
	{ "blk.0.ffn_down.weight", T_FF, T_EMBD },
};
#define N_TINY (sizeof(tiny_tensors) / sizeof(tiny_tensors[0]))

static struct buf
build_tiny(size_t *header_end)
{
	struct buf b = { 0 };
	static const char *tokens[T_VOCAB] = { "<unk>", "<s>", "</s>", "\xe2\x96\x81" "a" };
	uint64_t off = 0;

	put(&b, "GGUF", 4);
	put_u32(&b, 3);
	put_u64(&b, N_TINY);
	put_u64(&b, 13);
	put_key(&b, "general.architecture", GGUF_TYPE_STRING); put_str(&b, "llama");
	put_key(&b, "general.name", GGUF_TYPE_STRING); put_str(&b, "tiny-test");
	put_key(&b, "general.alignment", GGUF_TYPE_UINT32); put_u32(&b, 32);
	put_key(&b, "llama.embedding_length", GGUF_TYPE_UINT32); put_u32(&b, T_EMBD);
	put_key(&b, "llama.block_count", GGUF_TYPE_UINT32); put_u32(&b, 1);
	put_key(&b, "llama.feed_forward_length", GGUF_TYPE_UINT32); put_u32(&b, T_FF);
	put_key(&b, "llama.attention.head_count", GGUF_TYPE_UINT32); put_u32(&b, 2);
	put_key(&b, "llama.attention.head_count_kv", GGUF_TYPE_UINT32); put_u32(&b, 1);
	put_key(&b, "llama.attention.layer_norm_rms_epsilon", GGUF_TYPE_FLOAT32); put_f32(&b, 1e-5f);
	put_key(&b, "tokenizer.ggml.model", GGUF_TYPE_STRING); put_str(&b, "llama");
	put_key(&b, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
	put_u32(&b, GGUF_TYPE_STRING); put_u64(&b, T_VOCAB);
	for (int i = 0; i < T_VOCAB; i++)
		put_str(&b, tokens[i]);
	put_key(&b, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
	put_u32(&b, GGUF_TYPE_FLOAT32); put_u64(&b, T_VOCAB);
	for (int i = 0; i < T_VOCAB; i++)
		put_f32(&b, -(float)i);
	put_key(&b, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY);
	put_u32(&b, GGUF_TYPE_INT32); put_u64(&b, T_VOCAB);
	put_u32(&b, 2); put_u32(&b, 3); put_u32(&b, 3); put_u32(&b, 1);

	for (size_t i = 0; i < N_TINY; i++) {
		const struct tinfo *t = &tiny_tensors[i];
		uint64_t n = t->ne0 * (t->ne1 ? t->ne1 : 1);

		put_str(&b, t->name);
		put_u32(&b, t->ne1 ? 2 : 1);
		put_u64(&b, t->ne0);
		if (t->ne1)
			put_u64(&b, t->ne1);
		put_u32(&b, ORCD_DTYPE_F32);
		put_u64(&b, off);
		off += (n * 4 + 31) / 32 * 32;
	}
	*header_end = b.n;
	pad_to(&b, 32);
	for (size_t i = 0; i < N_TINY; i++) {
		const struct tinfo *t = &tiny_tensors[i];
		uint64_t n = t->ne0 * (t->ne1 ? t->ne1 : 1);

		for (uint64_t j = 0; j < n; j++)
			put_f32(&b, t->ne1 ? (float)((j * 7 % 13) - 6) / 64.0f : 1.0f);
		pad_to(&b, 32);
	}
	return b;
}

static void
test_parse_tiny(void **state)
{
	size_t hdr;
	struct buf b = build_tiny(&hdr);
	struct gguf_file *f;
	struct orcd_err err;
	struct gguf_str s;
	uint32_t u;
	float fl;
	const struct gguf_kv *arr;

	assert_int_equal(gguf_parse(b.p, b.n, &f, &err), 0);
	assert_int_equal(f->version, 3);
	assert_int_equal(f->n_kv, 13);
	assert_int_equal(f->n_tensors, N_TINY);
	assert_int_equal(f->data_offset % 32, 0);
	assert_int_equal(gguf_get_str(f, "general.name", &s, &err), 0);
	assert_true(gguf_str_eq(s, "tiny-test"));
	assert_int_equal(gguf_get_u32(f, "llama.block_count", &u, &err), 0);
	assert_int_equal(u, 1);
	assert_int_equal(gguf_get_u32(f, "no.such.key", &u, &err), 1);
	/* a string is not an integer */
	assert_int_equal(gguf_get_u32(f, "general.name", &u, &err), -1);
	assert_non_null(strstr(err.msg, "general.name"));
	assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &fl, &err), 0);
	assert_true(fl == 1e-5f);
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &arr, &err), 0);
	assert_int_equal(arr->arr_n, T_VOCAB);
	assert_true(gguf_str_eq(arr->arr_strs[1], "<s>"));
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_TYPE_INT32, &arr, &err), -1);
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &arr, &err), 0);
	assert_int_equal(gguf_arr_i64(arr, 3), 1);

	const struct gguf_tensor *t = gguf_find_tensor(f, "blk.0.attn_k.weight");
	assert_non_null(t);
	assert_int_equal(t->ne[0], T_EMBD);
	assert_int_equal(t->ne[1], T_EMBD / 2);
	assert_int_equal(t->nbytes, T_EMBD * T_EMBD / 2 * 4);
	assert_ptr_equal(t->data, b.p + f->data_offset + t->offset);
	gguf_close(f);

	/* The tiny model is a loadable llama model. */
	struct model *m;
	assert_int_equal(gguf_parse(b.p, b.n, &f, &err), 0);
	assert_int_equal(model_load_gguf(f, "tiny", &m, &err), 0);
	assert_int_equal(m->hp.n_layer, 1);
	assert_int_equal(m->hp.n_head_kv, 1);
	assert_int_equal(m->hp.head_dim, 16);
	assert_true(m->tied_output);
	model_free(m);
	free(b.p);
}

/* Parses, and on success also loads as a model: neither may crash. */
static int
parse_and_load(const uint8_t *p, size_t n)
{
	struct gguf_file *f;
	struct model *m;
	struct orcd_err err;

	err.msg[0] = 0;
	if (gguf_parse(p, n, &f, &err) != 0) {
		assert_true(err.msg[0] != 0);
		return -1;
	}
	if (model_load_gguf(f, "mutant", &m, &err) != 0) {
		assert_true(err.msg[0] != 0);
		return -1;
	}
	model_free(m);
	return 0;
}

static void
test_truncation(void **state)
{
	size_t hdr;
	struct buf b = build_tiny(&hdr);

	/* Every prefix is a copy in its own exact-size allocation, so ASAN sees
	 * any read past the cut. */
	for (size_t cut = 0; cut < b.n; cut++) {
		uint8_t *p = malloc(cut ? cut : 1);

		memcpy(p, b.p, cut);
		assert_int_equal(parse_and_load(p, cut), -1);
		free(p);
	}
	assert_int_equal(parse_and_load(b.p, b.n), 0);
	free(b.p);
}

static void
test_mutation(void **state)
{
	static const uint8_t vals[] = { 0x00, 0x01, 0x7f, 0x80, 0xff };
	size_t hdr;
	struct buf b = build_tiny(&hdr);
	uint8_t *p = malloc(b.n);
	int ok = 0, bad = 0;

	/* Every byte of the header (metadata and tensor descriptors). */
	for (size_t i = 0; i < hdr; i++) {
		for (size_t v = 0; v < sizeof(vals) + 1; v++) {
			memcpy(p, b.p, b.n);
			p[i] = v < sizeof(vals) ? vals[v] : (uint8_t)(b.p[i] + 1);
			if (p[i] == b.p[i])
				continue;
			if (parse_and_load(p, b.n) == 0)
				ok++;
			else
				bad++;
		}
	}
	/* Most mutations must be caught; some (a weight value, a name byte)
	 * legitimately still load. */
	assert_true(bad > ok);
	free(p);
	free(b.p);
}

static void
test_errors_name_offsets(void **state)
{
	size_t hdr;
	struct buf b = build_tiny(&hdr);
	struct gguf_file *f;
	struct orcd_err err;

	b.p[0] = 'X';
	assert_int_equal(gguf_parse(b.p, b.n, &f, &err), -1);
	assert_non_null(strstr(err.msg, "magic"));
	b.p[0] = 'G';
	b.p[4] = 9;
	assert_int_equal(gguf_parse(b.p, b.n, &f, &err), -1);
	assert_non_null(strstr(err.msg, "version 9"));
	b.p[4] = 3;
	/* tensor count far beyond the file */
	uint64_t huge = UINT64_MAX / 2;
	memcpy(b.p + 8, &huge, 8);
	assert_int_equal(gguf_parse(b.p, b.n, &f, &err), -1);
	assert_non_null(strstr(err.msg, "tensor count"));
	free(b.p);

	/* an over-long string length names its offset */
	b = build_tiny(&hdr);
	memcpy(b.p + 24, &huge, 8);
	assert_int_equal(gguf_parse(b.p, b.n, &f, &err), -1);
	assert_non_null(strstr(err.msg, "byte offset 24"));
	free(b.p);

	/* data cut short: the tensor whose data is missing is named */
	b = build_tiny(&hdr);
	assert_int_equal(gguf_parse(b.p, b.n - 64, &f, &err), -1);
	assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
	free(b.p);
}

static void
test_real_models(void **state)
{
	static const char *files[] = {
		"stories260K.gguf", "stories260K-qwen2arch.gguf",
		"TinyStories-656K-f16.gguf", "TinyStories-656K-Q8_0.gguf",
	};
	const char *dir = test_models_dir();
	char path[4096];

	if (dir == NULL)
		skip();
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		struct model *m;
		struct orcd_err err;

		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		if (model_load(path, &m, &err) != 0)
			fail_msg("%s: %s", files[i], err.msg);
		assert_true(m->hp.n_layer > 0);
		if (strstr(files[i], "qwen2") != NULL) {
			assert_int_equal(m->hp.arch, MODEL_ARCH_QWEN2);
			assert_non_null(m->layers[0].bq);
		}
		if (strstr(files[i], "656K") != NULL)
			assert_true(m->tied_output);
		model_free(m);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_tiny),
		cmocka_unit_test(test_errors_name_offsets),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_mutation),
		cmocka_unit_test(test_real_models),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
