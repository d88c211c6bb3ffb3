/*
 * Model loading: reads the architecture's hyperparameters from GGUF metadata,
 * binds every tensor by name and checks its shape and type, so the engines
 * can index weights without further checks.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orcd/dtype.h"
#include "cpu/quant.h"
#include "model.h"
#include "tokenizer.h"

const char *
model_arch_name(enum model_arch a)
{
	return a == MODEL_ARCH_QWEN2 ? "qwen2" : "llama";
}

/* Reads "<arch>.<suffix>" as a positive int; required unless def >= 0. */
static int
hp_int(const struct gguf_file *g, const char *arch, const char *suffix, int def,
    int *out, struct orcd_err *err)
{
	char key[128];
	uint32_t v;
	int rc;

	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	rc = gguf_get_u32(g, key, &v, err);
	if (rc < 0)
		return -1;
	if (rc == 1) {
		if (def < 0)
			return orcd_errf(err, "model: required key '%s' is missing", key);
		*out = def;
		return 0;
	}
	if (v == 0 || v > (1u << 24))
		return orcd_errf(err, "model: key '%s' has invalid value %u", key, v);
	*out = (int)v;
	return 0;
}

static int
hp_float(const struct gguf_file *g, const char *arch, const char *suffix, float def,
    float *out, struct orcd_err *err)
{
	char key[128];
	int rc;

	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	rc = gguf_get_f32(g, key, out, err);
	if (rc < 0)
		return -1;
	if (rc == 1)
		*out = def;
	if (!isfinite(*out) || *out <= 0)
		return orcd_errf(err, "model: key '%s' has invalid value %g", key,
		    (double)*out);
	return 0;
}

static int
read_hparams(const struct gguf_file *g, struct model_hparams *hp, struct orcd_err *err)
{
	struct gguf_str arch;
	const char *a;
	int key_len, val_len;

	if (gguf_get_str(g, "general.architecture", &arch, err) != 0)
		return orcd_errf(err, "model: general.architecture is missing or "
		    "not a string");
	if (gguf_str_eq(arch, "llama")) {
		hp->arch = MODEL_ARCH_LLAMA;
		hp->rope_type = MODEL_ROPE_NORM;
	} else if (gguf_str_eq(arch, "qwen2")) {
		hp->arch = MODEL_ARCH_QWEN2;
		hp->rope_type = MODEL_ROPE_NEOX;
	} else {
		return orcd_errf(err, "model: architecture '%.*s' is not supported "
		    "(supported: llama, qwen2)", (int)(arch.len > 64 ? 64 : arch.len),
		    arch.ptr);
	}
	a = model_arch_name(hp->arch);
	if (hp_int(g, a, "embedding_length", -1, &hp->n_embd, err) != 0 ||
	    hp_int(g, a, "block_count", -1, &hp->n_layer, err) != 0 ||
	    hp_int(g, a, "feed_forward_length", -1, &hp->n_ff, err) != 0 ||
	    hp_int(g, a, "attention.head_count", -1, &hp->n_head, err) != 0 ||
	    hp_int(g, a, "context_length", 2048, &hp->n_ctx_train, err) != 0)
		return -1;
	if (hp_int(g, a, "attention.head_count_kv", hp->n_head, &hp->n_head_kv, err) != 0)
		return -1;
	if (hp->n_embd % hp->n_head != 0)
		return orcd_errf(err, "model: embedding_length %d is not a multiple "
		    "of head_count %d", hp->n_embd, hp->n_head);
	if (hp_int(g, a, "attention.key_length", hp->n_embd / hp->n_head, &key_len, err) != 0 ||
	    hp_int(g, a, "attention.value_length", key_len, &val_len, err) != 0)
		return -1;
	if (key_len != val_len)
		return orcd_errf(err, "model: attention.key_length %d != "
		    "value_length %d is not supported", key_len, val_len);
	hp->head_dim = key_len;
	if (hp->n_head % hp->n_head_kv != 0)
		return orcd_errf(err, "model: head_count %d is not a multiple of "
		    "head_count_kv %d", hp->n_head, hp->n_head_kv);
	if (hp_int(g, a, "rope.dimension_count", hp->head_dim, &hp->n_rot, err) != 0)
		return -1;
	if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
		return orcd_errf(err, "model: rope.dimension_count %d must be even "
		    "and <= the head size %d", hp->n_rot, hp->head_dim);
	if (hp_float(g, a, "rope.freq_base", 10000.0f, &hp->rope_freq_base, err) != 0 ||
	    hp_float(g, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, err) != 0)
		return -1;

	/* Linear rope scaling is the only kind the engines implement. */
	hp->rope_freq_scale = 1.0f;
	{
		char key[128];
		struct gguf_str kind;
		float factor;

		snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
		if (gguf_get_str(g, key, &kind, err) == 0 &&
		    !gguf_str_eq(kind, "none") && !gguf_str_eq(kind, "linear"))
			return orcd_errf(err, "model: rope scaling type '%.*s' is not "
			    "supported (only linear)", (int)(kind.len > 32 ? 32 : kind.len),
			    kind.ptr);
		snprintf(key, sizeof(key), "%s.rope.scaling.factor", a);
		if (gguf_get_f32(g, key, &factor, err) == 0 && factor > 0 &&
		    factor != 1.0f)
			hp->rope_freq_scale = 1.0f / factor;
		snprintf(key, sizeof(key), "%s.rope.scale_linear", a);
		if (gguf_get_f32(g, key, &factor, err) == 0 && factor > 0 &&
		    factor != 1.0f)
			hp->rope_freq_scale = 1.0f / factor;
	}
	return 0;
}

/* Binds tensor `name` with shape (ne0, ne1); ne1 == 0 means a vector. */
static int
bind(struct model *m, const char *name, int64_t ne0, int64_t ne1, bool optional,
    struct model_weight *w, struct orcd_err *err)
{
	const struct gguf_tensor *t = gguf_find_tensor(m->gguf, name);
	uint32_t want_dims = ne1 == 0 ? 1 : 2;

	memset(w, 0, sizeof(*w));
	if (t == NULL) {
		if (optional)
			return 1;
		return orcd_errf(err, "model: tensor '%s' is missing", name);
	}
	if (t->n_dims != want_dims || (int64_t)t->ne[0] != ne0 ||
	    (ne1 != 0 && (int64_t)t->ne[1] != ne1))
		return orcd_errf(err, "model: tensor '%s' (descriptor at byte offset "
		    "%" PRIu64 ") has shape [%" PRIu64 ", %" PRIu64 "] with %u dims, "
		    "expected [%" PRId64 ", %" PRId64 "]", name, t->info_offset,
		    t->ne[0], t->ne[1], t->n_dims, ne0, ne1 == 0 ? 1 : ne1);
	w->type = t->type;
	w->ne0 = ne0;
	w->ne1 = ne1 == 0 ? 1 : ne1;
	w->data = t->data;
	w->nbytes = t->nbytes;
	w->row_bytes = t->nbytes / (uint64_t)w->ne1;
	w->name = strndup(name, 96);
	m->weight_bytes += t->nbytes;
	return 0;
}

/* Binds a vector and returns a float copy of it (norm weights, biases). */
static int
bind_vector(struct model *m, const char *name, int64_t n, bool optional,
    float **out, struct orcd_err *err)
{
	struct model_weight w;
	int rc = bind(m, name, n, 0, optional, &w, err);

	*out = NULL;
	if (rc != 0)
		return rc;
	free((void *)w.name);
	*out = malloc((size_t)n * sizeof(float));
	if (*out == NULL)
		return orcd_errf(err, "model: out of memory for '%s'", name);
	quant_dequantize_row(w.type, w.data, *out, n);
	return 0;
}

static int
bind_layer(struct model *m, int il, struct orcd_err *err)
{
	const struct model_hparams *hp = &m->hp;
	struct model_layer *L = &m->layers[il];
	int64_t q_out = (int64_t)hp->n_head * hp->head_dim;
	int64_t kv_out = (int64_t)hp->n_head_kv * hp->head_dim;
	bool bias = hp->arch == MODEL_ARCH_QWEN2;
	char n[96];
	int rc;

#define NAME(s) (snprintf(n, sizeof(n), "blk.%d.%s", il, (s)), n)
	if (bind_vector(m, NAME("attn_norm.weight"), hp->n_embd, false, &L->attn_norm, err) != 0 ||
	    bind_vector(m, NAME("ffn_norm.weight"), hp->n_embd, false, &L->ffn_norm, err) != 0 ||
	    bind(m, NAME("attn_q.weight"), hp->n_embd, q_out, false, &L->wq, err) != 0 ||
	    bind(m, NAME("attn_k.weight"), hp->n_embd, kv_out, false, &L->wk, err) != 0 ||
	    bind(m, NAME("attn_v.weight"), hp->n_embd, kv_out, false, &L->wv, err) != 0 ||
	    bind(m, NAME("attn_output.weight"), q_out, hp->n_embd, false, &L->wo, err) != 0 ||
	    bind(m, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, false, &L->w_gate, err) != 0 ||
	    bind(m, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, false, &L->w_up, err) != 0 ||
	    bind(m, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, false, &L->w_down, err) != 0)
		return -1;
	/* qwen2 requires q/k/v biases; llama models may carry them too. */
	if ((rc = bind_vector(m, NAME("attn_q.bias"), q_out, !bias, &L->bq, err)) < 0 ||
	    (rc = bind_vector(m, NAME("attn_k.bias"), kv_out, !bias, &L->bk, err)) < 0 ||
	    (rc = bind_vector(m, NAME("attn_v.bias"), kv_out, !bias, &L->bv, err)) < 0)
		return -1;
#undef NAME
	return 0;
}

int
model_load_gguf(struct gguf_file *g, const char *label, struct model **out,
    struct orcd_err *err)
{
	struct model *m;
	struct gguf_str name;
	int64_t ft;
	int rc;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		gguf_close(g);
		return orcd_errf(err, "model: out of memory");
	}
	m->gguf = g;
	quant_init();
	if (read_hparams(g, &m->hp, err) != 0)
		goto fail;
	if (gguf_get_str(g, "general.name", &name, NULL) == 0 && name.len > 0)
		snprintf(m->name, sizeof(m->name), "%.*s",
		    (int)(name.len < sizeof(m->name) ? name.len : sizeof(m->name) - 1),
		    name.ptr);
	else
		snprintf(m->name, sizeof(m->name), "%s", label ? label : "model");
	m->file_type = gguf_get_i64(g, "general.file_type", &ft, NULL) == 0 ? (int)ft : -1;

	if (tokenizer_load(g, &m->tok, err) != 0)
		goto fail;
	m->hp.n_vocab = tokenizer_n_vocab(m->tok);

	if (bind(m, "token_embd.weight", m->hp.n_embd, m->hp.n_vocab, false,
	    &m->tok_embd, err) != 0)
		goto fail;
	if (bind_vector(m, "output_norm.weight", m->hp.n_embd, false,
	    &m->output_norm, err) != 0)
		goto fail;
	rc = bind(m, "output.weight", m->hp.n_embd, m->hp.n_vocab, true, &m->output, err);
	if (rc < 0)
		goto fail;
	if (rc == 1) {
		m->output = m->tok_embd;
		m->output.name = strdup(m->tok_embd.name);
		m->tied_output = true;
	}
	m->layers = calloc((size_t)m->hp.n_layer, sizeof(*m->layers));
	if (m->layers == NULL) {
		orcd_errf(err, "model: out of memory");
		goto fail;
	}
	for (int il = 0; il < m->hp.n_layer; il++)
		if (bind_layer(m, il, err) != 0)
			goto fail;
	*out = m;
	return 0;
fail:
	model_free(m);
	return -1;
}

int
model_load(const char *path, struct model **out, struct orcd_err *err)
{
	struct gguf_file *g;
	const char *base = strrchr(path, '/');

	*out = NULL;
	if (gguf_open(path, &g, err) != 0)
		return -1;
	if (model_load_gguf(g, base ? base + 1 : path, out, err) != 0) {
		orcd_err_prefix(err, path);
		return -1;
	}
	return 0;
}

static void
weight_free(struct model_weight *w)
{
	free((void *)w->name);
}

void
model_free(struct model *m)
{
	if (m == NULL)
		return;
	if (m->layers != NULL) {
		for (int il = 0; il < m->hp.n_layer; il++) {
			struct model_layer *L = &m->layers[il];

			free(L->attn_norm);
			free(L->ffn_norm);
			free(L->bq);
			free(L->bk);
			free(L->bv);
			weight_free(&L->wq);
			weight_free(&L->wk);
			weight_free(&L->wv);
			weight_free(&L->wo);
			weight_free(&L->w_gate);
			weight_free(&L->w_up);
			weight_free(&L->w_down);
		}
		free(m->layers);
	}
	weight_free(&m->tok_embd);
	weight_free(&m->output);
	free(m->output_norm);
	if (m->tok != NULL)
		tokenizer_free(m->tok);
	gguf_close(m->gguf);
	free(m);
}

void
model_describe(const struct model *m, char *buf, size_t len)
{
	const struct model_hparams *hp = &m->hp;

	snprintf(buf, len, "%s (%s): %d layers, n_embd %d, %d heads (%d kv, "
	    "head %d), n_ff %d, vocab %d, ctx %d, %.2f GB of weights%s",
	    m->name, model_arch_name(hp->arch), hp->n_layer, hp->n_embd,
	    hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_vocab,
	    hp->n_ctx_train, (double)m->weight_bytes / 1e9,
	    m->tied_output ? ", tied output" : "");
}
