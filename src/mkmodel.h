/*
 * Synthetic GGUF model generator (the library behind orcd-mkmodel).
 *
 * Writes a model with the exact shapes and metadata of a real one
 * (Qwen2.5-0.5B, Qwen2.5-7B, Llama-2-7B, or small test shapes), random
 * weights drawn deterministically from a seed, and a complete, valid
 * tokenizer of the model's vocabulary size, so that orcd and llama.cpp can
 * load, run and be benchmarked on models that cannot be downloaded.
 *
 * Quantized mixes choose each tensor's type as llama.cpp's quantizer does
 * for the same file type (mkmodel_tensor_type), so a generated Q4_K_M file
 * has the same per-tensor types and size as a real one.
 *
 * Weights are generated row by row from a counter-based hash of (seed,
 * tensor name, element index), quantized on worker threads and streamed to
 * disk in order; the output is byte-identical for any thread count, and a
 * tensor's bytes do not depend on the other tensors (blk.0 of a 2-layer
 * model equals blk.0 of the full model).
 */
#ifndef ORCD_MKMODEL_H
#define ORCD_MKMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orcd/dtype.h"
#include "err.h"

enum mkmodel_vocab_kind {
	MKMODEL_VOCAB_SPM,	/* tokenizer.ggml.model "llama" */
	MKMODEL_VOCAB_BPE_QWEN2,	/* "gpt2" with pre "qwen2" */
};

struct mkmodel_shape {
	char arch[16];		/* "llama" or "qwen2" */
	char name[64];		/* general.name */
	enum mkmodel_vocab_kind vocab;
	uint32_t n_embd;
	uint32_t n_layer;
	uint32_t n_head;
	uint32_t n_head_kv;
	uint32_t n_ff;
	uint32_t n_vocab;	/* rows of token_embd = tokenizer entries */
	uint32_t n_ctx;		/* {arch}.context_length */
	float rope_theta;
	float rms_eps;
	bool tied_embd;		/* no output.weight: the output reuses token_embd */
	bool qkv_bias;		/* attn_{q,k,v}.bias tensors */
};

struct mkmodel_preset {
	const char *name;	/* --preset NAME */
	const char *desc;
	struct mkmodel_shape shape;
};

/* The preset table; mkmodel_preset_at(i) is NULL past the end. */
const struct mkmodel_preset *mkmodel_preset_at(size_t i);
const struct mkmodel_preset *mkmodel_preset_find(const char *name);

enum mkmodel_mix {
	MKMODEL_MIX_F32,
	MKMODEL_MIX_F16,
	MKMODEL_MIX_BF16,
	MKMODEL_MIX_Q8_0,
	MKMODEL_MIX_Q4_0,
	MKMODEL_MIX_Q4_K_M,
	MKMODEL_MIX_Q5_K_M,
	MKMODEL_MIX_Q6_K,
	MKMODEL_MIX_COUNT
};

/* "q4_k_m" etc. (case-insensitive); -1 with err if unknown. */
int mkmodel_mix_parse(const char *s, enum mkmodel_mix *out, struct orcd_err *err);
const char *mkmodel_mix_name(enum mkmodel_mix m);
/* general.file_type (llama_ftype) of the mix. */
uint32_t mkmodel_mix_file_type(enum mkmodel_mix m);

/* What a tensor is; decides its name, shape, type and initialisation. */
enum mkmodel_role {
	MKMODEL_TOKEN_EMBD,
	MKMODEL_ATTN_NORM,
	MKMODEL_ATTN_Q,
	MKMODEL_ATTN_Q_BIAS,
	MKMODEL_ATTN_K,
	MKMODEL_ATTN_K_BIAS,
	MKMODEL_ATTN_V,
	MKMODEL_ATTN_V_BIAS,
	MKMODEL_ATTN_OUTPUT,
	MKMODEL_FFN_NORM,
	MKMODEL_FFN_GATE,
	MKMODEL_FFN_UP,
	MKMODEL_FFN_DOWN,
	MKMODEL_OUTPUT_NORM,
	MKMODEL_OUTPUT,
};

/*
 * The type llama.cpp's quantizer (llama_tensor_get_type) gives a tensor of
 * this role for the mix: 1D tensors stay F32; the output (and a tied
 * token_embd) gets Q6_K, or Q8_0 when its rows are not a whole number of
 * the mix's blocks; attn_v and ffn_down get Q6_K in the "more bits" layers
 * of Q4_K_M / Q5_K_M; then a row length that is not a multiple of the
 * chosen type's block falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
 * then F16).  ncols is the row length (ne[0]).
 */
int mkmodel_tensor_type(enum mkmodel_mix mix, enum mkmodel_role role, uint32_t layer,
    uint32_t n_layer, uint64_t ncols, bool tied_embd, enum orcd_dtype *out,
    struct orcd_err *err);

struct mkmodel_tensor {
	char name[48];
	enum mkmodel_role role;
	uint32_t layer;		/* 0 for the non-layer tensors */
	uint32_t n_dims;	/* 1 or 2 */
	uint64_t ne[2];		/* ne[0] = row length */
	enum orcd_dtype type;
	uint64_t nbytes;
};

struct mkmodel_plan {
	size_t n;
	struct mkmodel_tensor *t;
	uint64_t data_bytes;	/* sum of nbytes (without padding) */
};

struct mkmodel_opts {
	struct mkmodel_shape shape;	/* from a preset, then overridden */
	enum mkmodel_mix mix;
	uint64_t seed;
	/* Scale the embedding/output rows of every token whose text is not
	 * printable ASCII (and of special tokens) down, so greedy output is
	 * printable ASCII. */
	bool ascii_output;
	int n_threads;			/* <= 0: online CPUs */
	const char *chat_template;	/* NULL: the vocabulary's default;
					 * "" for none */
	/* Called on the calling thread after each piece of data is written. */
	void (*progress)(void *arg, size_t tensor, size_t n_tensors, const char *name,
	    uint64_t bytes_done, uint64_t bytes_total);
	void *progress_arg;
};

/* Fills o with the preset's shape and defaults (mix f16, seed 1, auto
 * threads, no ASCII restriction). */
void mkmodel_opts_init(struct mkmodel_opts *o, const struct mkmodel_preset *p);

/* Checks a shape for consistency (head counts divide, blocks fit, ...). */
int mkmodel_shape_check(const struct mkmodel_shape *s, struct orcd_err *err);

/* The tensors of the model in file order, with types and sizes. */
int mkmodel_plan(const struct mkmodel_opts *o, struct mkmodel_plan *out, struct orcd_err *err);
void mkmodel_plan_free(struct mkmodel_plan *p);

/* llama.cpp token types (tokenizer.ggml.token_type). */
enum mkmodel_token_type {
	MKMODEL_TOKEN_NORMAL = 1,
	MKMODEL_TOKEN_UNKNOWN = 2,
	MKMODEL_TOKEN_CONTROL = 3,
	MKMODEL_TOKEN_USER_DEFINED = 4,
	MKMODEL_TOKEN_UNUSED = 5,
	MKMODEL_TOKEN_BYTE = 6,
};

struct mkmodel_vocab {
	uint32_t n_tokens;
	const char **tokens;	/* NUL-terminated, into one arena */
	float *scores;		/* SPM only; NULL for BPE */
	int32_t *types;		/* enum mkmodel_token_type */
	uint8_t *ascii;		/* 1 if the token's text is printable ASCII */
	uint32_t n_merges;	/* BPE only */
	const char **merges;	/* "left right" */
	int32_t bos, eos, pad, unk;	/* -1 if none */
	bool add_bos;
	const char *model;	/* tokenizer.ggml.model */
	const char *pre;	/* tokenizer.ggml.pre, or NULL */
	const char *chat_template;	/* default template, or NULL */
	char *arena;
};

/*
 * Builds the tokenizer of a shape: s->n_vocab tokens.
 *  SPM: <unk>, <s>, </s>, <0x00>..<0xFF>, then "\u2581"-prefixed and plain
 *  ASCII pieces with descending scores.
 *  BPE (qwen2): the 256 GPT-2 byte symbols in GPT-2 order, then one token
 *  per merge (pairs of symbols, then a pair and a symbol), Qwen2.5's 22
 *  added tokens at 151643..151664 (or at the end of a smaller vocabulary),
 *  and "[PADn]" tokens up to n_vocab.  Every merge's parts and result are
 *  tokens.
 */
int mkmodel_vocab_build(const struct mkmodel_shape *s, struct mkmodel_vocab *v,
    struct orcd_err *err);
void mkmodel_vocab_free(struct mkmodel_vocab *v);

/* Built-in chat templates by name: "chatml", "llama2", or "none" (gives
 * ""); NULL if unknown. */
const char *mkmodel_chat_template(const char *name);

/* Writes the model to path (via path.partial). */
int mkmodel_write(const struct mkmodel_opts *o, const char *path, struct orcd_err *err);

/* The value of element `index` of the tensor named `name` before scaling:
 * approximately standard normal, from (seed, name, index) alone. */
float mkmodel_random(uint64_t seed, const char *name, uint64_t index);

#endif
