/*
 * Tests of the GGUF writer and the synthetic model generator: writer round
 * trips through the reader (every value type, alignment, streaming, error
 * paths), llama.cpp's per-tensor quant types for the real shapes, the
 * tokenizers' validity, and generated tiny models read back with gguf_open
 * (keys, tensors, determinism, --ascii-output scaling).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu/quant.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "mkmodel.h"

static char tmpdir[256];

static int
setup_tmpdir(void **state)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_mkmodel.XXXXXX",
	    base != NULL && *base != '\0' ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	quant_init();
	return 0;
}

static int
teardown_tmpdir(void **state)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	char p[512];

	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tmpdir);
	return 0;
}

static void
tmp_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static bool
file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static unsigned char *
read_all(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	unsigned char *buf;
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

/* ------------------------------------------------------------ writer */

static void
test_writer_roundtrip(void **state)
{
	struct orcd_err err = { { 0 } };
	struct gguf_writer *w;
	struct gguf_file *f;
	const struct gguf_kv *kv;
	const struct gguf_tensor *t;
	struct gguf_str s;
	char path[512];
	const char *strs[] = { "alpha", "", "\xc4\xa0gamma" };
	int32_t ints[] = { -1, 0, 7, 2147483647 };
	float fl[] = { 0.5f, -2.0f };
	uint8_t bools[] = { 1, 0, 1 };
	float vec[5] = { 1, 2, 3, 4, 5 };
	uint16_t mat[3][64];
	uint64_t ne1[1] = { 5 }, ne2[2] = { 64, 3 }, ne3[2] = { 32, 2 }, nb;
	uint8_t q8[2][34];
	uint32_t u32;
	int64_t i64;
	float f32;
	bool b;
	size_t i, j;

	for (i = 0; i < 3; i++)
		for (j = 0; j < 64; j++)
			mat[i][j] = (uint16_t)(i * 64 + j);
	memset(q8, 0x5a, sizeof(q8));
	tmp_path(path, sizeof(path), "rt.gguf");

	w = gguf_writer_new(GGUF_DEFAULT_ALIGNMENT, &err);
	assert_non_null(w);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama", &err), 0);
	assert_int_equal(gguf_writer_add_u8(w, "t.u8", 200, &err), 0);
	assert_int_equal(gguf_writer_add_i8(w, "t.i8", -100, &err), 0);
	assert_int_equal(gguf_writer_add_u16(w, "t.u16", 60000, &err), 0);
	assert_int_equal(gguf_writer_add_i16(w, "t.i16", -30000, &err), 0);
	assert_int_equal(gguf_writer_add_u32(w, "t.u32", 4000000000u, &err), 0);
	assert_int_equal(gguf_writer_add_i32(w, "t.i32", -2000000000, &err), 0);
	assert_int_equal(gguf_writer_add_u64(w, "t.u64", 1ULL << 40, &err), 0);
	assert_int_equal(gguf_writer_add_i64(w, "t.i64", -(1LL << 40), &err), 0);
	assert_int_equal(gguf_writer_add_f32(w, "t.f32", 1.5f, &err), 0);
	assert_int_equal(gguf_writer_add_f64(w, "t.f64", -0.125, &err), 0);
	assert_int_equal(gguf_writer_add_bool(w, "t.bool", true, &err), 0);
	assert_int_equal(gguf_writer_add_strn(w, "t.strn", "a\0b", 3, &err), 0);
	assert_int_equal(gguf_writer_add_arr(w, "t.ai32", GGUF_TYPE_INT32, ints, 4, &err), 0);
	assert_int_equal(gguf_writer_add_arr(w, "t.af32", GGUF_TYPE_FLOAT32, fl, 2, &err), 0);
	assert_int_equal(gguf_writer_add_arr(w, "t.abool", GGUF_TYPE_BOOL, bools, 3, &err), 0);
	assert_int_equal(gguf_writer_add_arr(w, "t.aempty", GGUF_TYPE_UINT64, NULL, 0, &err), 0);
	assert_int_equal(gguf_writer_add_arr_str(w, "t.astr", strs, NULL, 3, &err), 0);
	/* Duplicates and non-numeric arrays are refused. */
	assert_int_equal(gguf_writer_add_u32(w, "t.u8", 1, &err), -1);
	assert_non_null(strstr(err.msg, "t.u8"));
	assert_int_equal(gguf_writer_add_arr(w, "t.bad", GGUF_TYPE_STRING, strs, 1, &err), -1);

	assert_int_equal(gguf_writer_add_tensor(w, "vec", ORCD_DTYPE_F32, 1, ne1, &nb, &err), 0);
	assert_int_equal(nb, 20);
	assert_int_equal(gguf_writer_add_tensor(w, "mat", ORCD_DTYPE_F16, 2, ne2, &nb, &err), 0);
	assert_int_equal(nb, 384);
	assert_int_equal(gguf_writer_add_tensor(w, "q8", ORCD_DTYPE_Q8_0, 2, ne3, &nb, &err), 0);
	assert_int_equal(nb, 68);
	assert_int_equal(gguf_writer_add_tensor(w, "mat", ORCD_DTYPE_F16, 2, ne2, NULL, &err), -1);
	assert_int_equal(gguf_writer_add_tensor(w, "odd", ORCD_DTYPE_Q8_0, 2, ne2 /* 64 ok */,
	    NULL, &err), 0);
	{
		uint64_t bad[2] = { 48, 1 };
		assert_int_equal(gguf_writer_add_tensor(w, "bad", ORCD_DTYPE_Q4_K, 2, bad, NULL,
		    &err), -1);
		assert_non_null(strstr(err.msg, "bad"));
	}

	assert_int_equal(gguf_writer_begin(w, path, &err), 0);
	assert_int_equal(gguf_writer_add_u32(w, "late", 1, &err), -1);
	/* Data in odd pieces, one of them spanning two tensors. */
	assert_int_equal(gguf_writer_write(w, vec, 8, &err), 0);
	assert_int_equal(gguf_writer_write(w, (char *)vec + 8, 12, &err), 0);
	assert_int_equal(gguf_writer_write(w, mat, sizeof(mat), &err), 0);
	{
		uint8_t both[68 + 3 * 68];
		memcpy(both, q8, 68);
		memset(both + 68, 0x33, sizeof(both) - 68);
		assert_int_equal(gguf_writer_write(w, both, sizeof(both), &err), 0);
	}
	assert_int_equal(gguf_writer_write(w, "x", 1, &err), -1);	/* past the end */
	assert_int_equal(gguf_writer_finish(w, &err), 0);
	assert_int_equal(gguf_writer_data_written(w), 32 + 384 + 96 + 224);
	gguf_writer_free(w);

	assert_int_equal(gguf_open(path, &f, &err), 0);
	assert_int_equal(f->version, 3);
	assert_int_equal(f->alignment, 32);
	assert_int_equal(f->data_offset % 32, 0);
	assert_int_equal(gguf_get_str(f, "general.architecture", &s, &err), 0);
	assert_true(gguf_str_eq(s, "llama"));
	kv = gguf_find(f, "t.u8");
	assert_int_equal(kv->type, GGUF_TYPE_UINT8);
	assert_int_equal(kv->v.u, 200);
	kv = gguf_find(f, "t.i8");
	assert_int_equal(kv->type, GGUF_TYPE_INT8);
	assert_int_equal(kv->v.i, -100);
	assert_int_equal(gguf_find(f, "t.u16")->v.u, 60000);
	assert_int_equal(gguf_find(f, "t.i16")->v.i, -30000);
	assert_int_equal(gguf_get_u32(f, "t.u32", &u32, &err), 0);
	assert_int_equal(u32, 4000000000u);
	assert_int_equal(gguf_get_i64(f, "t.i32", &i64, &err), 0);
	assert_int_equal(i64, -2000000000);
	assert_int_equal(gguf_get_i64(f, "t.u64", &i64, &err), 0);
	assert_int_equal(i64, 1LL << 40);
	assert_int_equal(gguf_get_i64(f, "t.i64", &i64, &err), 0);
	assert_int_equal(i64, -(1LL << 40));
	assert_int_equal(gguf_get_f32(f, "t.f32", &f32, &err), 0);
	assert_true(f32 == 1.5f);
	kv = gguf_find(f, "t.f64");
	assert_int_equal(kv->type, GGUF_TYPE_FLOAT64);
	assert_true(kv->v.f == -0.125);
	assert_int_equal(gguf_get_bool(f, "t.bool", &b, &err), 0);
	assert_true(b);
	assert_int_equal(gguf_get_str(f, "t.strn", &s, &err), 0);
	assert_int_equal(s.len, 3);
	assert_memory_equal(s.ptr, "a\0b", 3);
	assert_int_equal(gguf_get_arr(f, "t.ai32", GGUF_TYPE_INT32, &kv, &err), 0);
	assert_int_equal(kv->arr_n, 4);
	for (i = 0; i < 4; i++)
		assert_int_equal(gguf_arr_i64(kv, i), ints[i]);
	assert_int_equal(gguf_get_arr(f, "t.af32", GGUF_TYPE_FLOAT32, &kv, &err), 0);
	assert_true(gguf_arr_f32(kv, 1) == -2.0f);
	assert_int_equal(gguf_get_arr(f, "t.abool", GGUF_TYPE_BOOL, &kv, &err), 0);
	assert_int_equal(kv->arr_n, 3);
	assert_int_equal(kv->arr_data[1], 0);
	assert_int_equal(gguf_get_arr(f, "t.aempty", GGUF_TYPE_UINT64, &kv, &err), 0);
	assert_int_equal(kv->arr_n, 0);
	assert_int_equal(gguf_get_arr(f, "t.astr", GGUF_TYPE_STRING, &kv, &err), 0);
	assert_int_equal(kv->arr_n, 3);
	for (i = 0; i < 3; i++)
		assert_true(gguf_str_eq(kv->arr_strs[i], strs[i]));
	assert_null(gguf_find(f, "late"));

	assert_int_equal(f->n_tensors, 4);
	t = gguf_find_tensor(f, "vec");
	assert_int_equal(t->n_dims, 1);
	assert_int_equal(t->offset, 0);
	assert_memory_equal(t->data, vec, sizeof(vec));
	t = gguf_find_tensor(f, "mat");
	assert_int_equal(t->type, ORCD_DTYPE_F16);
	assert_int_equal(t->ne[0], 64);
	assert_int_equal(t->ne[1], 3);
	assert_int_equal(t->offset, 32);
	assert_memory_equal(t->data, mat, sizeof(mat));
	t = gguf_find_tensor(f, "q8");
	assert_int_equal(t->offset, 32 + 384);
	assert_memory_equal(t->data, q8, sizeof(q8));
	t = gguf_find_tensor(f, "odd");
	assert_int_equal(t->offset, 32 + 384 + 96);
	assert_int_equal(((const uint8_t *)t->data)[0], 0x33);
	gguf_close(f);
}

static void
test_writer_incomplete(void **state)
{
	struct orcd_err err = { { 0 } };
	struct gguf_writer *w;
	char path[512], partial[600];
	uint64_t ne[1] = { 8 };
	float v[8] = { 0 };

	tmp_path(path, sizeof(path), "short.gguf");
	snprintf(partial, sizeof(partial), "%s.partial", path);
	w = gguf_writer_new(GGUF_DEFAULT_ALIGNMENT, &err);
	assert_non_null(w);
	assert_int_equal(gguf_writer_add_tensor(w, "v", ORCD_DTYPE_F32, 1, ne, NULL, &err), 0);
	assert_int_equal(gguf_writer_write(w, v, 4, &err), -1);	/* before begin */
	assert_int_equal(gguf_writer_begin(w, path, &err), 0);
	assert_true(file_exists(partial));
	assert_int_equal(gguf_writer_write(w, v, 16, &err), 0);
	assert_int_equal(gguf_writer_finish(w, &err), -1);
	assert_non_null(strstr(err.msg, "16 of 32"));
	gguf_writer_free(w);
	/* Neither the partial nor the final file is left behind. */
	assert_false(file_exists(partial));
	assert_false(file_exists(path));

	/* A non-default alignment is recorded and honoured. */
	w = gguf_writer_new(64, &err);
	assert_non_null(w);
	assert_int_equal(gguf_writer_add_tensor(w, "a", ORCD_DTYPE_F32, 1, ne, NULL, &err), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "b", ORCD_DTYPE_F32, 1, ne, NULL, &err), 0);
	assert_int_equal(gguf_writer_begin(w, path, &err), 0);
	assert_int_equal(gguf_writer_write(w, v, 32, &err), 0);
	assert_int_equal(gguf_writer_write(w, v, 32, &err), 0);
	assert_int_equal(gguf_writer_finish(w, &err), 0);
	assert_int_equal(gguf_writer_file_bytes(w), gguf_writer_header_bytes(w) + 128);
	gguf_writer_free(w);
	{
		struct gguf_file *f;
		struct stat st;

		assert_int_equal(gguf_open(path, &f, &err), 0);
		assert_int_equal(f->alignment, 64);
		assert_int_equal(f->data_offset % 64, 0);
		assert_int_equal(gguf_find_tensor(f, "b")->offset, 64);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal((uint64_t)st.st_size, f->data_offset + 128);
		gguf_close(f);
	}
	assert_null(gguf_writer_new(48, &err));
}

/* ------------------------------------------------------------ type plan */

struct type_count {
	int type;
	size_t n;
};

static size_t
plan_count(const struct mkmodel_plan *p, int type)
{
	size_t i, n = 0;

	for (i = 0; i < p->n; i++)
		n += p->t[i].type == (enum orcd_dtype)type;
	return n;
}

static const struct mkmodel_tensor *
plan_find(const struct mkmodel_plan *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		if (strcmp(p->t[i].name, name) == 0)
			return &p->t[i];
	}
	return NULL;
}

static void
make_plan(const char *preset, enum mkmodel_mix mix, struct mkmodel_plan *p)
{
	struct mkmodel_opts o;
	struct orcd_err err = { { 0 } };

	mkmodel_opts_init(&o, mkmodel_preset_find(preset));
	o.mix = mix;
	assert_int_equal(mkmodel_plan(&o, p, &err), 0);
}

static void
test_plan_qwen05_q4km(void **state)
{
	struct mkmodel_plan p;
	const struct mkmodel_tensor *t;
	char name[64];
	unsigned l;
	/* use_more_bits(i, 24): i < 3, i >= 21, or (i - 3) % 3 == 2 */
	static const bool more[24] = { 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1,
	    0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1 };

	make_plan("qwen2.5-0.5b", MKMODEL_MIX_Q4_K_M, &p);
	/* llama-quantize Q4_K_M on Qwen2.5-0.5B: 290 tensors. */
	assert_int_equal(p.n, 290);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_F32), 121);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q8_0), 13);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q5_0), 132);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q4_K), 12);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q6_K), 12);
	assert_null(plan_find(&p, "output.weight"));
	/* Tied embedding: output rule, 896 % 256 != 0 -> Q8_0. */
	t = plan_find(&p, "token_embd.weight");
	assert_int_equal(t->type, ORCD_DTYPE_Q8_0);
	assert_int_equal(t->ne[0], 896);
	assert_int_equal(t->ne[1], 151936);
	for (l = 0; l < 24; l++) {
		snprintf(name, sizeof(name), "blk.%u.attn_v.weight", l);
		t = plan_find(&p, name);
		/* Q6_K -> Q8_0 and Q4_K -> Q5_0 fallbacks for 896 columns */
		assert_int_equal(t->type, more[l] ? ORCD_DTYPE_Q8_0 : ORCD_DTYPE_Q5_0);
		assert_int_equal(t->ne[1], 128);
		snprintf(name, sizeof(name), "blk.%u.ffn_down.weight", l);
		t = plan_find(&p, name);
		assert_int_equal(t->type, more[l] ? ORCD_DTYPE_Q6_K : ORCD_DTYPE_Q4_K);
		assert_int_equal(t->ne[0], 4864);
		snprintf(name, sizeof(name), "blk.%u.ffn_gate.weight", l);
		assert_int_equal(plan_find(&p, name)->type, ORCD_DTYPE_Q5_0);
		snprintf(name, sizeof(name), "blk.%u.attn_q.weight", l);
		assert_int_equal(plan_find(&p, name)->type, ORCD_DTYPE_Q5_0);
		snprintf(name, sizeof(name), "blk.%u.attn_k.bias", l);
		t = plan_find(&p, name);
		assert_int_equal(t->type, ORCD_DTYPE_F32);
		assert_int_equal(t->n_dims, 1);
		assert_int_equal(t->ne[0], 128);
	}
	/* Close to the ~0.40 GB of the published file. */
	assert_true(p.data_bytes > 380000000 && p.data_bytes < 400000000);
	mkmodel_plan_free(&p);
}

static void
test_plan_7b(void **state)
{
	struct mkmodel_plan p;

	/* Llama-2-7B Q4_K_M: output and 16 + 16 more-bits attn_v/ffn_down
	 * are Q6_K, all other matrices Q4_K, token_embd included. */
	make_plan("llama-7b", MKMODEL_MIX_Q4_K_M, &p);
	assert_int_equal(p.n, 291);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_F32), 65);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q6_K), 33);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q4_K), 193);
	assert_int_equal(plan_find(&p, "token_embd.weight")->type, ORCD_DTYPE_Q4_K);
	assert_int_equal(plan_find(&p, "output.weight")->type, ORCD_DTYPE_Q6_K);
	assert_int_equal(plan_find(&p, "blk.6.attn_v.weight")->type, ORCD_DTYPE_Q6_K);
	assert_int_equal(plan_find(&p, "blk.7.attn_v.weight")->type, ORCD_DTYPE_Q4_K);
	assert_int_equal(plan_find(&p, "blk.31.ffn_down.weight")->type, ORCD_DTYPE_Q6_K);
	assert_int_equal(plan_find(&p, "blk.0.attn_k.weight")->ne[1], 4096);
	/* 4.08 GB like the published llama-2-7b.Q4_K_M.gguf */
	assert_true(p.data_bytes > 4000000000ULL && p.data_bytes < 4100000000ULL);
	mkmodel_plan_free(&p);

	make_plan("qwen2.5-7b", MKMODEL_MIX_Q4_K_M, &p);
	assert_int_equal(p.n, 339);
	assert_int_equal(plan_find(&p, "token_embd.weight")->type, ORCD_DTYPE_Q4_K);
	assert_int_equal(plan_find(&p, "output.weight")->type, ORCD_DTYPE_Q6_K);
	assert_int_equal(plan_find(&p, "output.weight")->ne[1], 152064);
	assert_int_equal(plan_find(&p, "blk.0.attn_v.weight")->ne[1], 512);
	assert_int_equal(plan_find(&p, "blk.0.ffn_down.weight")->type, ORCD_DTYPE_Q6_K);
	assert_int_equal(plan_find(&p, "blk.0.ffn_down.weight")->ne[0], 18944);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q5_0), 0);
	mkmodel_plan_free(&p);

	make_plan("qwen2.5-0.5b", MKMODEL_MIX_F16, &p);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_F16), 169);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_F32), 121);
	mkmodel_plan_free(&p);
	make_plan("qwen2.5-0.5b", MKMODEL_MIX_Q8_0, &p);
	assert_int_equal(plan_count(&p, ORCD_DTYPE_Q8_0), 169);
	mkmodel_plan_free(&p);
}

static void
test_tensor_type_rules(void **state)
{
	struct orcd_err err = { { 0 } };
	enum orcd_dtype t;

#define TYPE(mix, role, layer, nl, ncols, tied) \
	(assert_int_equal(mkmodel_tensor_type((mix), (role), (layer), (nl), (ncols), (tied), &t, \
	    &err), 0), t)
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_Q, 0, 8, 4096, false), ORCD_DTYPE_Q4_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_Q, 0, 8, 896, false), ORCD_DTYPE_Q5_0);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_V, 0, 8, 896, false), ORCD_DTYPE_Q8_0);
	/* use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2 */
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_V, 2, 8, 4096, false), ORCD_DTYPE_Q4_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_V, 3, 8, 4096, false), ORCD_DTYPE_Q6_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_FFN_DOWN, 4, 8, 4096, false), ORCD_DTYPE_Q4_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_V, 7, 8, 4096, false), ORCD_DTYPE_Q6_K);
	/* A single layer is both first and last eighth. */
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_FFN_DOWN, 0, 1, 4096, false), ORCD_DTYPE_Q6_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q5_K_M, MKMODEL_ATTN_Q, 2, 8, 896, false), ORCD_DTYPE_Q5_1);
	assert_int_equal(TYPE(MKMODEL_MIX_Q5_K_M, MKMODEL_ATTN_Q, 2, 8, 4096, false), ORCD_DTYPE_Q5_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q6_K, MKMODEL_ATTN_Q, 2, 8, 896, false), ORCD_DTYPE_Q8_0);
	/* Output: Q6_K, or Q8_0 when rows are not whole blocks of the mix. */
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_OUTPUT, 0, 8, 4096, false), ORCD_DTYPE_Q6_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_0, MKMODEL_OUTPUT, 0, 8, 4096, false), ORCD_DTYPE_Q6_K);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_0, MKMODEL_OUTPUT, 0, 8, 896, false), ORCD_DTYPE_Q8_0);
	assert_int_equal(TYPE(MKMODEL_MIX_Q8_0, MKMODEL_OUTPUT, 0, 8, 4096, false), ORCD_DTYPE_Q8_0);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_0, MKMODEL_TOKEN_EMBD, 0, 8, 4096, false), ORCD_DTYPE_Q4_0);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_0, MKMODEL_TOKEN_EMBD, 0, 8, 4096, true), ORCD_DTYPE_Q6_K);
	/* Rows not a multiple of 32 after the fallback: F16. */
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_ATTN_Q, 0, 8, 48, false), ORCD_DTYPE_F16);
	assert_int_equal(TYPE(MKMODEL_MIX_Q4_K_M, MKMODEL_FFN_NORM, 0, 8, 48, false), ORCD_DTYPE_F32);
	assert_int_equal(TYPE(MKMODEL_MIX_F16, MKMODEL_ATTN_Q, 0, 8, 48, false), ORCD_DTYPE_F16);
	assert_int_equal(TYPE(MKMODEL_MIX_BF16, MKMODEL_OUTPUT, 0, 8, 48, false), ORCD_DTYPE_BF16);
	assert_int_equal(TYPE(MKMODEL_MIX_F32, MKMODEL_OUTPUT, 0, 8, 48, false), ORCD_DTYPE_F32);
#undef TYPE
	/* Q8_0 has no fallback, as in llama.cpp. */
	assert_int_equal(mkmodel_tensor_type(MKMODEL_MIX_Q8_0, MKMODEL_ATTN_Q, 0, 8, 48, false, &t,
	    &err), -1);
	assert_non_null(strstr(err.msg, "48"));
}

/* ------------------------------------------------------------ vocabularies */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool
sorted_has(const char **sorted, size_t n, const char *s)
{
	return bsearch(&s, sorted, n, sizeof(*sorted), cmp_str) != NULL;
}

static void
check_unique(const struct mkmodel_vocab *v, const char ***sorted_out)
{
	const char **sorted = malloc(v->n_tokens * sizeof(*sorted));
	uint32_t i;

	assert_non_null(sorted);
	memcpy(sorted, v->tokens, v->n_tokens * sizeof(*sorted));
	qsort(sorted, v->n_tokens, sizeof(*sorted), cmp_str);
	for (i = 1; i < v->n_tokens; i++) {
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			fail_msg("duplicate token '%s'", sorted[i]);
	}
	*sorted_out = sorted;
}

static void
test_vocab_qwen(void **state)
{
	const struct mkmodel_preset *pr = mkmodel_preset_find("qwen2.5-0.5b");
	struct orcd_err err = { { 0 } };
	struct mkmodel_vocab v;
	const char **sorted;
	char left[64], joined[64];
	const char *sp;
	uint32_t i;
	size_t n_ascii = 0;

	assert_int_equal(mkmodel_vocab_build(&pr->shape, &v, &err), 0);
	assert_int_equal(v.n_tokens, 151936);
	assert_int_equal(v.n_merges, 151643 - 256);
	assert_string_equal(v.model, "gpt2");
	assert_string_equal(v.pre, "qwen2");
	assert_null(v.scores);
	assert_false(v.add_bos);
	assert_int_equal(v.bos, 151643);
	assert_int_equal(v.pad, 151643);
	assert_int_equal(v.eos, 151645);
	/* GPT-2 byte symbols in GPT-2 order. */
	assert_string_equal(v.tokens[0], "!");
	assert_string_equal(v.tokens[198], "\xc4\x8a");	/* newline */
	assert_string_equal(v.tokens[220], "\xc4\xa0");	/* space */
	assert_string_equal(v.tokens[255], "\xc5\x83");	/* byte 0xad */
	assert_string_equal(v.tokens[151643], "<|endoftext|>");
	assert_string_equal(v.tokens[151644], "<|im_start|>");
	assert_string_equal(v.tokens[151645], "<|im_end|>");
	assert_string_equal(v.tokens[151657], "<tool_call>");
	assert_string_equal(v.tokens[151664], "<|file_sep|>");
	assert_string_equal(v.tokens[151665], "[PAD151665]");
	assert_int_equal(v.types[151643], MKMODEL_TOKEN_CONTROL);
	assert_int_equal(v.types[151657], MKMODEL_TOKEN_USER_DEFINED);
	assert_int_equal(v.types[151935], MKMODEL_TOKEN_UNUSED);
	assert_int_equal(v.types[1000], MKMODEL_TOKEN_NORMAL);
	assert_false(v.ascii[151645]);
	assert_true(v.ascii[0]);
	assert_false(v.ascii[198]);
	assert_true(v.ascii[220]);
	/* Shell order: the first merge joins the most common symbol, space,
	 * with itself. */
	assert_string_equal(v.merges[0], "\xc4\xa0 \xc4\xa0");

	check_unique(&v, &sorted);
	/* Merge k produces token 256 + k; both halves are tokens. */
	for (i = 0; i < v.n_merges; i++) {
		sp = strchr(v.merges[i] + 1, ' ');
		assert_non_null(sp);
		assert_true((size_t)(sp - v.merges[i]) < sizeof(left));
		memcpy(left, v.merges[i], (size_t)(sp - v.merges[i]));
		left[sp - v.merges[i]] = '\0';
		assert_true(sorted_has(sorted, v.n_tokens, left));
		assert_true(sorted_has(sorted, v.n_tokens, sp + 1));
		snprintf(joined, sizeof(joined), "%s%s", left, sp + 1);
		assert_string_equal(joined, v.tokens[256 + i]);
	}
	for (i = 0; i < v.n_tokens; i++)
		n_ascii += v.ascii[i];
	/* 95 printable bytes, their 95^2 pairs, and the triples: 85851 =
	 * 335 * 256 + 91 of them, on pairs that are all ASCII, with 95 (the
	 * last pair: 91) ASCII third symbols. */
	assert_int_equal(n_ascii, 95 + 95 * 95 + 335 * 95 + 91);
	free(sorted);
	mkmodel_vocab_free(&v);

	/* A small BPE vocabulary keeps the specials at its end. */
	assert_int_equal(mkmodel_vocab_build(&mkmodel_preset_find("tiny-qwen2")->shape, &v, &err), 0);
	assert_int_equal(v.n_tokens, 1024);
	assert_int_equal(v.n_merges, 1024 - 22 - 256);
	assert_int_equal(v.bos, 1002);
	assert_string_equal(v.tokens[1002], "<|endoftext|>");
	assert_string_equal(v.tokens[1004], "<|im_end|>");
	assert_int_equal(v.eos, 1004);
	check_unique(&v, &sorted);
	free(sorted);
	mkmodel_vocab_free(&v);
}

static void
test_vocab_spm(void **state)
{
	const struct mkmodel_preset *pr = mkmodel_preset_find("llama-7b");
	struct orcd_err err = { { 0 } };
	struct mkmodel_vocab v;
	const char **sorted;
	uint32_t i;

	assert_int_equal(mkmodel_vocab_build(&pr->shape, &v, &err), 0);
	assert_int_equal(v.n_tokens, 32000);
	assert_string_equal(v.model, "llama");
	assert_null(v.merges);
	assert_true(v.add_bos);
	assert_int_equal(v.bos, 1);
	assert_int_equal(v.eos, 2);
	assert_int_equal(v.unk, 0);
	assert_string_equal(v.tokens[0], "<unk>");
	assert_string_equal(v.tokens[1], "<s>");
	assert_string_equal(v.tokens[2], "</s>");
	assert_string_equal(v.tokens[3], "<0x00>");
	assert_string_equal(v.tokens[3 + 0x0a], "<0x0A>");
	assert_string_equal(v.tokens[258], "<0xFF>");
	assert_int_equal(v.types[0], MKMODEL_TOKEN_UNKNOWN);
	assert_int_equal(v.types[1], MKMODEL_TOKEN_CONTROL);
	assert_int_equal(v.types[100], MKMODEL_TOKEN_BYTE);
	assert_int_equal(v.types[259], MKMODEL_TOKEN_NORMAL);
	assert_string_equal(v.tokens[259], "\xe2\x96\x81");
	assert_string_equal(v.tokens[260], "\xe2\x96\x81" "e");
	assert_string_equal(v.tokens[261], "e");
	assert_false(v.ascii[2]);
	assert_false(v.ascii[3 + 0x0a]);
	assert_true(v.ascii[3 + 'A']);
	assert_false(v.ascii[3 + 0x80]);
	for (i = 260; i < v.n_tokens; i++) {
		assert_true(v.scores[i] < v.scores[i - 1]);
		assert_true(v.ascii[i]);
	}
	check_unique(&v, &sorted);
	free(sorted);
	mkmodel_vocab_free(&v);
}

/* ------------------------------------------------------------ tiny models */

static void
write_model(const char *preset, enum mkmodel_mix mix, uint64_t seed, int threads, bool ascii,
    uint32_t n_layer, const char *path)
{
	struct mkmodel_opts o;
	struct orcd_err err = { { 0 } };

	mkmodel_opts_init(&o, mkmodel_preset_find(preset));
	o.mix = mix;
	o.seed = seed;
	o.n_threads = threads;
	o.ascii_output = ascii;
	if (n_layer > 0)
		o.shape.n_layer = n_layer;
	if (mkmodel_write(&o, path, &err) != 0)
		fail_msg("mkmodel_write %s %s: %s", preset, mkmodel_mix_name(mix), err.msg);
}

static void
check_model(const char *preset, enum mkmodel_mix mix, const char *path)
{
	const struct mkmodel_preset *pr = mkmodel_preset_find(preset);
	const struct mkmodel_shape *s = &pr->shape;
	struct mkmodel_opts o;
	struct mkmodel_plan p;
	struct orcd_err err = { { 0 } };
	struct gguf_file *f;
	const struct gguf_kv *kv;
	struct gguf_str str;
	char key[96];
	uint32_t u;
	float fv;
	bool b;
	size_t i;
	uint64_t expect_off = 0;
	struct stat st;

	mkmodel_opts_init(&o, pr);
	o.mix = mix;
	assert_int_equal(mkmodel_plan(&o, &p, &err), 0);
	if (gguf_open(path, &f, &err) != 0)
		fail_msg("gguf_open %s: %s", path, err.msg);
	assert_int_equal(f->version, 3);
	assert_int_equal(gguf_get_str(f, "general.architecture", &str, &err), 0);
	assert_true(gguf_str_eq(str, s->arch));
	assert_int_equal(gguf_get_u32(f, "general.file_type", &u, &err), 0);
	assert_int_equal(u, mkmodel_mix_file_type(mix));
	assert_int_equal(gguf_get_u32(f, "general.quantization_version", &u, &err), 0);
	assert_int_equal(u, 2);
#define ARCH_U32(suffix, want) do { \
		snprintf(key, sizeof(key), "%s.%s", s->arch, (suffix)); \
		assert_int_equal(gguf_get_u32(f, key, &u, &err), 0); \
		assert_int_equal(u, (want)); \
	} while (0)
	ARCH_U32("embedding_length", s->n_embd);
	ARCH_U32("block_count", s->n_layer);
	ARCH_U32("feed_forward_length", s->n_ff);
	ARCH_U32("attention.head_count", s->n_head);
	ARCH_U32("attention.head_count_kv", s->n_head_kv);
	ARCH_U32("context_length", s->n_ctx);
	ARCH_U32("rope.dimension_count", s->n_embd / s->n_head);
#undef ARCH_U32
	snprintf(key, sizeof(key), "%s.rope.freq_base", s->arch);
	assert_int_equal(gguf_get_f32(f, key, &fv, &err), 0);
	assert_true(fv == s->rope_theta);
	snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", s->arch);
	assert_int_equal(gguf_get_f32(f, key, &fv, &err), 0);
	assert_true(fv == s->rms_eps);

	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &kv, &err), 0);
	assert_int_equal(kv->arr_n, s->n_vocab);
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &kv, &err), 0);
	assert_int_equal(kv->arr_n, s->n_vocab);
	assert_int_equal(gguf_get_str(f, "tokenizer.ggml.model", &str, &err), 0);
	assert_int_equal(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b, &err), 0);
	if (s->vocab == MKMODEL_VOCAB_SPM) {
		assert_true(gguf_str_eq(str, "llama"));
		assert_true(b);
		assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &kv,
		    &err), 0);
		assert_int_equal(kv->arr_n, s->n_vocab);
		assert_null(gguf_find(f, "tokenizer.ggml.merges"));
		assert_null(gguf_find(f, "tokenizer.chat_template"));
	} else {
		assert_true(gguf_str_eq(str, "gpt2"));
		assert_false(b);
		assert_int_equal(gguf_get_str(f, "tokenizer.ggml.pre", &str, &err), 0);
		assert_true(gguf_str_eq(str, "qwen2"));
		assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &kv,
		    &err), 0);
		assert_int_equal(kv->arr_n, s->n_vocab - 22 - 256);
		assert_int_equal(gguf_get_str(f, "tokenizer.chat_template", &str, &err), 0);
		assert_non_null(memmem(str.ptr, str.len, "<|im_start|>", 12));
		assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u, &err), 0);
		assert_int_equal(u, s->n_vocab - 22 + 2);
	}

	assert_int_equal(f->n_tensors, p.n);
	for (i = 0; i < p.n; i++) {
		const struct gguf_tensor *t = &f->tensors[i];

		/* In plan order, packed at the default alignment. */
		assert_true(gguf_str_eq(t->name, p.t[i].name));
		assert_int_equal(t->n_dims, p.t[i].n_dims);
		assert_int_equal(t->ne[0], p.t[i].ne[0]);
		assert_int_equal(t->ne[1], p.t[i].ne[1]);
		assert_int_equal(t->type, p.t[i].type);
		assert_int_equal(t->nbytes, p.t[i].nbytes);
		assert_int_equal(t->offset, expect_off);
		expect_off += (p.t[i].nbytes + 31) / 32 * 32;
	}
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, f->data_offset + expect_off);
	gguf_close(f);
	mkmodel_plan_free(&p);
}

static void
test_tiny_all_mixes(void **state)
{
	static const char *const presets[] = { "tiny", "tiny-qwen2" };
	char path[512], partial[600];
	size_t i;
	int m;

	for (i = 0; i < 2; i++) {
		for (m = 0; m < MKMODEL_MIX_COUNT; m++) {
			snprintf(path, sizeof(path), "%s/%s-%s.gguf", tmpdir, presets[i],
			    mkmodel_mix_name((enum mkmodel_mix)m));
			write_model(presets[i], (enum mkmodel_mix)m, 1, 2, false, 0, path);
			snprintf(partial, sizeof(partial), "%s.partial", path);
			assert_false(file_exists(partial));
			check_model(presets[i], (enum mkmodel_mix)m, path);
			unlink(path);
		}
	}
}

static const void *
tensor_data(const struct gguf_file *f, const char *name, uint64_t *nbytes)
{
	const struct gguf_tensor *t = gguf_find_tensor(f, name);

	assert_non_null(t);
	*nbytes = t->nbytes;
	return t->data;
}

static void
test_determinism(void **state)
{
	char a[512], b[512], c[512], d[512];
	unsigned char *ba, *bb, *bc;
	size_t la, lb, lc;
	struct orcd_err err = { { 0 } };
	struct gguf_file *fa, *fc, *fd;
	const void *pa, *pc;
	uint64_t na, nc;

	tmp_path(a, sizeof(a), "det-a.gguf");
	tmp_path(b, sizeof(b), "det-b.gguf");
	tmp_path(c, sizeof(c), "det-c.gguf");
	tmp_path(d, sizeof(d), "det-d.gguf");
	/* Same seed, different thread counts: identical bytes. */
	write_model("tiny-qwen2", MKMODEL_MIX_Q4_K_M, 7, 1, false, 0, a);
	write_model("tiny-qwen2", MKMODEL_MIX_Q4_K_M, 7, 5, false, 0, b);
	write_model("tiny-qwen2", MKMODEL_MIX_Q4_K_M, 8, 2, false, 0, c);
	ba = read_all(a, &la);
	bb = read_all(b, &lb);
	bc = read_all(c, &lc);
	assert_int_equal(la, lb);
	assert_memory_equal(ba, bb, la);
	/* Another seed: same layout, different weights. */
	assert_int_equal(la, lc);
	assert_memory_not_equal(ba, bc, la);
	assert_int_equal(gguf_open(a, &fa, &err), 0);
	assert_int_equal(gguf_open(c, &fc, &err), 0);
	pa = tensor_data(fa, "blk.1.ffn_down.weight", &na);
	pc = tensor_data(fc, "blk.1.ffn_down.weight", &nc);
	assert_int_equal(na, nc);
	assert_memory_not_equal(pa, pc, na);
	/* Norms are the same constant whatever the seed. */
	pa = tensor_data(fa, "blk.1.ffn_norm.weight", &na);
	pc = tensor_data(fc, "blk.1.ffn_norm.weight", &nc);
	assert_memory_equal(pa, pc, na);

	/* Nor on the instruction set the quantizers run with. */
	{
		static const enum mkmodel_mix mixes[] = { MKMODEL_MIX_F16, MKMODEL_MIX_Q8_0,
		    MKMODEL_MIX_Q4_K_M };
		unsigned char *x, *y;
		size_t lx, ly, k;

		for (k = 0; k < sizeof(mixes) / sizeof(mixes[0]); k++) {
			setenv("ORCD_CPU_ISA", "scalar", 1);
			write_model("tiny-qwen2", mixes[k], 7, 2, false, 0, b);
			unsetenv("ORCD_CPU_ISA");
			write_model("tiny-qwen2", mixes[k], 7, 2, false, 0, d);
			x = read_all(b, &lx);
			y = read_all(d, &ly);
			assert_int_equal(lx, ly);
			assert_memory_equal(x, y, lx);
			free(x);
			free(y);
		}
		quant_init();
	}

	/* A tensor's bytes do not depend on the number of layers. */
	write_model("tiny-qwen2", MKMODEL_MIX_Q4_K_M, 7, 2, false, 1, d);
	assert_int_equal(gguf_open(d, &fd, &err), 0);
	pa = tensor_data(fa, "blk.0.attn_q.weight", &na);
	pc = tensor_data(fd, "blk.0.attn_q.weight", &nc);
	assert_int_equal(na, nc);
	assert_memory_equal(pa, pc, na);
	assert_null(gguf_find_tensor(fd, "blk.1.attn_q.weight"));
	gguf_close(fa);
	gguf_close(fc);
	gguf_close(fd);
	free(ba);
	free(bb);
	free(bc);
}

/* Row RMS of an F32 matrix. */
static double
row_rms(const float *m, uint64_t ne0, uint64_t r)
{
	double s = 0;
	uint64_t i;

	for (i = 0; i < ne0; i++)
		s += (double)m[r * ne0 + i] * m[r * ne0 + i];
	return sqrt(s / (double)ne0);
}

static void
test_weights_and_ascii(void **state)
{
	const struct mkmodel_preset *pr;
	struct orcd_err err = { { 0 } };
	struct mkmodel_vocab v;
	struct gguf_file *f;
	const float *m;
	char path[512];
	uint64_t nb, r, i;
	double sum = 0, sq = 0, rms;
	int pass;

	tmp_path(path, sizeof(path), "w.gguf");
	for (pass = 0; pass < 2; pass++) {
		const char *preset = pass == 0 ? "tiny" : "tiny-qwen2";
		const char *outname = pass == 0 ? "output.weight" : "token_embd.weight";

		pr = mkmodel_preset_find(preset);
		assert_int_equal(mkmodel_vocab_build(&pr->shape, &v, &err), 0);
		write_model(preset, MKMODEL_MIX_F32, 3, 2, true, 0, path);
		assert_int_equal(gguf_open(path, &f, &err), 0);
		/* Projections: std 1/sqrt(row length); norms exactly 1. */
		m = tensor_data(f, "blk.0.attn_q.weight", &nb);
		sum = sq = 0;
		for (i = 0; i < nb / 4; i++) {
			sum += m[i];
			sq += (double)m[i] * m[i];
		}
		sum /= (double)(nb / 4);
		sq = sqrt(sq / (double)(nb / 4));
		assert_true(fabs(sum) < 0.01);
		assert_true(fabs(sq * sqrt((double)pr->shape.n_embd) - 1.0) < 0.05);
		assert_true(m[0] == mkmodel_random(3, "blk.0.attn_q.weight", 0) /
		    sqrtf((float)pr->shape.n_embd));
		m = tensor_data(f, "blk.1.attn_norm.weight", &nb);
		for (i = 0; i < nb / 4; i++)
			assert_true(m[i] == 1.0f);
		/* --ascii-output: rows of the tokens to avoid are 20x smaller
		 * in the matrix that produces the logits. */
		m = tensor_data(f, outname, &nb);
		for (r = 0; r < pr->shape.n_vocab; r++) {
			rms = row_rms(m, pr->shape.n_embd, r) * sqrt((double)pr->shape.n_embd);
			if (v.ascii[r])
				assert_true(rms > 0.5 && rms < 1.5);
			else
				assert_true(rms > 0.5 * 0.05 && rms < 1.5 * 0.05);
		}
		gguf_close(f);
		mkmodel_vocab_free(&v);
		unlink(path);
	}
	/* Without --ascii-output every row has the same scale. */
	write_model("tiny", MKMODEL_MIX_F32, 3, 2, false, 0, path);
	assert_int_equal(gguf_open(path, &f, &err), 0);
	m = tensor_data(f, "output.weight", &nb);
	rms = row_rms(m, 64, 2) * 8.0;		/* </s> */
	assert_true(rms > 0.5 && rms < 1.5);
	gguf_close(f);
	unlink(path);
}

static void
test_errors(void **state)
{
	struct mkmodel_opts o;
	struct orcd_err err = { { 0 } };
	struct mkmodel_plan p;
	enum mkmodel_mix mix;
	char path[512];

	assert_null(mkmodel_preset_find("gpt-5"));
	assert_non_null(mkmodel_preset_find("LLAMA2-7B"));
	assert_int_equal(mkmodel_mix_parse("Q4_K_M", &mix, &err), 0);
	assert_int_equal(mix, MKMODEL_MIX_Q4_K_M);
	assert_int_equal(mkmodel_mix_parse("q3_k", &mix, &err), -1);
	assert_non_null(strstr(err.msg, "q3_k"));
	assert_int_equal(mkmodel_mix_file_type(MKMODEL_MIX_Q4_K_M), 15);
	assert_int_equal(mkmodel_mix_file_type(MKMODEL_MIX_Q8_0), 7);
	assert_int_equal(mkmodel_mix_file_type(MKMODEL_MIX_F16), 1);
	assert_non_null(mkmodel_chat_template("chatml"));
	assert_string_equal(mkmodel_chat_template("none"), "");
	assert_null(mkmodel_chat_template("alpaca"));

	mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
	o.shape.n_head_kv = 3;
	assert_int_equal(mkmodel_plan(&o, &p, &err), -1);
	assert_non_null(strstr(err.msg, "n_head_kv"));
	mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
	o.shape.n_vocab = 100;
	assert_int_equal(mkmodel_plan(&o, &p, &err), -1);
	assert_non_null(strstr(err.msg, "vocabulary"));
	/* n_embd 48 cannot be Q8_0 (no fallback), as in llama.cpp. */
	mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
	o.shape.n_embd = 48;
	o.shape.n_head = 3;
	o.shape.n_head_kv = 3;
	o.mix = MKMODEL_MIX_Q8_0;
	assert_int_equal(mkmodel_plan(&o, &p, &err), -1);
	/* Unwritable destination: error, no file. */
	mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
	snprintf(path, sizeof(path), "%s/no/such/dir/x.gguf", tmpdir);
	assert_int_equal(mkmodel_write(&o, path, &err), -1);
	assert_non_null(strstr(err.msg, "no/such/dir"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writer_roundtrip),
		cmocka_unit_test(test_writer_incomplete),
		cmocka_unit_test(test_plan_qwen05_q4km),
		cmocka_unit_test(test_plan_7b),
		cmocka_unit_test(test_tensor_type_rules),
		cmocka_unit_test(test_vocab_qwen),
		cmocka_unit_test(test_vocab_spm),
		cmocka_unit_test(test_tiny_all_mixes),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_weights_and_ascii),
		cmocka_unit_test(test_errors),
	};

	return cmocka_run_group_tests(tests, setup_tmpdir, teardown_tmpdir);
}
