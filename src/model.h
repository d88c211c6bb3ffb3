/*
 * A loaded model: hyperparameters and tensor bindings for the llama and qwen2
 * architectures, read from a GGUF file and validated (every tensor present
 * with the exact shape the hyperparameters imply).  Weights stay in the
 * file's mmap; backends read them from here (the CPU directly, CUDA by
 * uploading them).
 */
#ifndef ORCD_MODEL_H
#define ORCD_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

struct tokenizer;

enum model_arch {
	MODEL_ARCH_LLAMA,
	MODEL_ARCH_QWEN2,
};

enum model_rope {
	MODEL_ROPE_NORM, /* rotate pairs (2i, 2i+1): llama */
	MODEL_ROPE_NEOX, /* rotate pairs (i, i + n_rot/2): qwen2 */
};

struct model_hparams {
	enum model_arch arch;
	enum model_rope rope_type;
	int n_vocab;
	int n_embd;
	int n_layer;
	int n_head;
	int n_head_kv;
	int head_dim;    /* per-head size of q and k (and v) */
	int n_rot;       /* rotary dimensions per head */
	int n_ff;
	int n_ctx_train;
	float rope_freq_base;
	float rope_freq_scale;
	float rms_eps;
};

/* A weight matrix (ne0 = input size, ne1 = rows/outputs) or vector (ne1 = 1). */
struct model_weight {
	int type;           /* enum orcd_dtype */
	int64_t ne0, ne1;
	uint64_t row_bytes;
	uint64_t nbytes;
	const void *data;   /* in the mmap */
	const char *name;   /* "blk.3.attn_q.weight" (owned by the model) */
};

struct model_layer {
	float *attn_norm;             /* n_embd, dequantized copy */
	float *ffn_norm;
	float *bq, *bk, *bv;          /* biases or NULL (qwen2 has them) */
	struct model_weight wq, wk, wv, wo;
	struct model_weight w_gate, w_up, w_down;
};

struct model {
	struct gguf_file *gguf;
	struct model_hparams hp;
	struct tokenizer *tok;
	char name[128];               /* general.name or the file's base name */
	struct model_weight tok_embd;
	struct model_weight output;   /* == tok_embd when tied */
	bool tied_output;
	float *output_norm;
	struct model_layer *layers;
	uint64_t weight_bytes;        /* sum of tensor data sizes */
	int file_type;                /* general.file_type, -1 if absent */
};

/* Opens, parses and validates path; the model owns the mapping. */
int model_load(const char *path, struct model **out, struct orcd_err *err);
/* Same from an already parsed file; takes ownership of g (also on error). */
int model_load_gguf(struct gguf_file *g, const char *label, struct model **out,
    struct orcd_err *err);
void model_free(struct model *m);

const char *model_arch_name(enum model_arch a);
/* One line summary for logs ("qwen2 24 layers 896 embd ... 0.40 GB"). */
void model_describe(const struct model *m, char *buf, size_t len);

#endif
