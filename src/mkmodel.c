/*
 * Synthetic GGUF model generator (see mkmodel.h): presets, the per-tensor
 * type plan (llama.cpp's quantizer rules), the tokenizers, the weight
 * generator and the threaded, streaming writer.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cpu/quant.h"
#include "gguf_writer.h"
#include "mkmodel.h"

/* ------------------------------------------------------------ presets */

/*
 * Shapes are those of the published models' config.json (hidden_size,
 * num_hidden_layers, num_attention_heads, num_key_value_heads,
 * intermediate_size, vocab_size, max_position_embeddings, rope_theta,
 * rms_norm_eps, tie_word_embeddings).
 */
static const struct mkmodel_preset mkmodel_presets[] = {
	{ "qwen2.5-0.5b", "Qwen2.5-0.5B(-Instruct): qwen2, tied embeddings, QKV bias",
	  { "qwen2", "Qwen2.5-0.5B-Instruct (synthetic)", MKMODEL_VOCAB_BPE_QWEN2,
	    896, 24, 14, 2, 4864, 151936, 32768, 1000000.0f, 1e-6f, true, true } },
	{ "qwen2.5-7b", "Qwen2.5-7B(-Instruct): qwen2, untied output, QKV bias",
	  { "qwen2", "Qwen2.5-7B-Instruct (synthetic)", MKMODEL_VOCAB_BPE_QWEN2,
	    3584, 28, 28, 4, 18944, 152064, 32768, 1000000.0f, 1e-6f, false, true } },
	{ "llama-7b", "Llama-2-7B: llama, SPM vocabulary, untied output",
	  { "llama", "Llama-2-7B (synthetic)", MKMODEL_VOCAB_SPM,
	    4096, 32, 32, 32, 11008, 32000, 4096, 10000.0f, 1e-5f, false, false } },
	{ "tiny", "small llama model for tests: 64 wide, 2 layers, GQA, SPM 512",
	  { "llama", "tiny-llama (synthetic)", MKMODEL_VOCAB_SPM,
	    64, 2, 4, 2, 128, 512, 2048, 10000.0f, 1e-5f, false, false } },
	{ "tiny-qwen2", "small qwen2 model for tests: 256 wide, 2 layers, BPE 1024, tied",
	  { "qwen2", "tiny-qwen2 (synthetic)", MKMODEL_VOCAB_BPE_QWEN2,
	    256, 2, 4, 2, 512, 1024, 4096, 1000000.0f, 1e-6f, true, true } },
};

#define MKMODEL_N_PRESETS (sizeof(mkmodel_presets) / sizeof(mkmodel_presets[0]))

const struct mkmodel_preset *
mkmodel_preset_at(size_t i)
{
	return i < MKMODEL_N_PRESETS ? &mkmodel_presets[i] : NULL;
}

const struct mkmodel_preset *
mkmodel_preset_find(const char *name)
{
	size_t i;

	for (i = 0; i < MKMODEL_N_PRESETS; i++) {
		if (strcasecmp(mkmodel_presets[i].name, name) == 0)
			return &mkmodel_presets[i];
	}
	/* The Llama-2 name people also type. */
	if (strcasecmp(name, "llama2-7b") == 0)
		return mkmodel_preset_find("llama-7b");
	return NULL;
}

/* ------------------------------------------------------------ mixes */

struct mkmodel_mix_info {
	const char *name;
	uint32_t file_type;		/* llama_ftype */
	enum orcd_dtype base;		/* type of an ordinary 2D weight */
	bool quantized;			/* llama.cpp's per-tensor rules apply */
};

static const struct mkmodel_mix_info mkmodel_mixes[MKMODEL_MIX_COUNT] = {
	[MKMODEL_MIX_F32] = { "f32", 0, ORCD_DTYPE_F32, false },
	[MKMODEL_MIX_F16] = { "f16", 1, ORCD_DTYPE_F16, false },
	[MKMODEL_MIX_BF16] = { "bf16", 32, ORCD_DTYPE_BF16, false },
	[MKMODEL_MIX_Q8_0] = { "q8_0", 7, ORCD_DTYPE_Q8_0, true },
	[MKMODEL_MIX_Q4_0] = { "q4_0", 2, ORCD_DTYPE_Q4_0, true },
	[MKMODEL_MIX_Q4_K_M] = { "q4_k_m", 15, ORCD_DTYPE_Q4_K, true },
	[MKMODEL_MIX_Q5_K_M] = { "q5_k_m", 17, ORCD_DTYPE_Q5_K, true },
	[MKMODEL_MIX_Q6_K] = { "q6_k", 18, ORCD_DTYPE_Q6_K, true },
};

int
mkmodel_mix_parse(const char *s, enum mkmodel_mix *out, struct orcd_err *err)
{
	int i;

	for (i = 0; i < MKMODEL_MIX_COUNT; i++) {
		if (strcasecmp(mkmodel_mixes[i].name, s) == 0) {
			*out = (enum mkmodel_mix)i;
			return 0;
		}
	}
	return orcd_errf(err, "unknown quant mix '%s' (f32, f16, bf16, q8_0, q4_0, q4_k_m, "
	    "q5_k_m, q6_k)", s);
}

const char *
mkmodel_mix_name(enum mkmodel_mix m)
{
	return (unsigned)m < MKMODEL_MIX_COUNT ? mkmodel_mixes[m].name : "?";
}

uint32_t
mkmodel_mix_file_type(enum mkmodel_mix m)
{
	return (unsigned)m < MKMODEL_MIX_COUNT ? mkmodel_mixes[m].file_type : 0;
}

/* ------------------------------------------------------------ type plan */

static bool
mkmodel_role_is_1d(enum mkmodel_role r)
{
	switch (r) {
	case MKMODEL_ATTN_NORM:
	case MKMODEL_FFN_NORM:
	case MKMODEL_OUTPUT_NORM:
	case MKMODEL_ATTN_Q_BIAS:
	case MKMODEL_ATTN_K_BIAS:
	case MKMODEL_ATTN_V_BIAS:
		return true;
	default:
		return false;
	}
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third layer in between get the larger type. */
static bool
mkmodel_use_more_bits(int i_layer, int n_layer)
{
	return i_layer < n_layer / 8 || i_layer >= 7 * n_layer / 8 ||
	    (i_layer - n_layer / 8) % 3 == 2;
}

int
mkmodel_tensor_type(enum mkmodel_mix mix, enum mkmodel_role role, uint32_t layer,
    uint32_t n_layer, uint64_t ncols, bool tied_embd, enum orcd_dtype *out,
    struct orcd_err *err)
{
	const struct mkmodel_mix_info *mi;
	enum orcd_dtype t;
	size_t blk;

	if ((unsigned)mix >= MKMODEL_MIX_COUNT)
		return orcd_errf(err, "mkmodel: invalid mix %d", (int)mix);
	mi = &mkmodel_mixes[mix];
	/* Norms and biases are never converted or quantized. */
	if (mkmodel_role_is_1d(role)) {
		*out = ORCD_DTYPE_F32;
		return 0;
	}
	if (!mi->quantized) {
		*out = mi->base;
		return 0;
	}

	t = mi->base;
	if (role == MKMODEL_OUTPUT || (tied_embd && role == MKMODEL_TOKEN_EMBD)) {
		/* The output matrix (or the embedding that doubles as it). */
		blk = dtype_block_elems(mi->base);
		if (ncols % blk != 0)
			t = ORCD_DTYPE_Q8_0;
		else if (mi->base != ORCD_DTYPE_Q8_0)
			t = ORCD_DTYPE_Q6_K;
	} else if (role == MKMODEL_ATTN_V) {
		/* One attn_v per layer, so llama.cpp's running count of attn_v
		 * tensors in layer order equals the layer index. */
		if ((mix == MKMODEL_MIX_Q4_K_M || mix == MKMODEL_MIX_Q5_K_M) &&
		    mkmodel_use_more_bits((int)layer, (int)n_layer))
			t = ORCD_DTYPE_Q6_K;
	} else if (role == MKMODEL_FFN_DOWN) {
		if ((mix == MKMODEL_MIX_Q4_K_M || mix == MKMODEL_MIX_Q5_K_M) &&
		    mkmodel_use_more_bits((int)layer, (int)n_layer))
			t = ORCD_DTYPE_Q6_K;
	}

	/* Row length not a whole number of blocks: llama.cpp's fallbacks. */
	if (ncols % dtype_block_elems(t) != 0) {
		switch (t) {
		case ORCD_DTYPE_Q4_K: t = ORCD_DTYPE_Q5_0; break;
		case ORCD_DTYPE_Q5_K: t = ORCD_DTYPE_Q5_1; break;
		case ORCD_DTYPE_Q6_K: t = ORCD_DTYPE_Q8_0; break;
		default:
			return orcd_errf(err, "mkmodel: row length %llu is not a multiple of the %s "
			    "block (%zu) and %s has no fallback type", (unsigned long long)ncols,
			    dtype_name(t), dtype_block_elems(t), dtype_name(t));
		}
		if (ncols % dtype_block_elems(t) != 0)
			t = ORCD_DTYPE_F16;
	}
	*out = t;
	return 0;
}

/* ------------------------------------------------------------ shapes */

void
mkmodel_opts_init(struct mkmodel_opts *o, const struct mkmodel_preset *p)
{
	memset(o, 0, sizeof(*o));
	if (p != NULL)
		o->shape = p->shape;
	o->mix = MKMODEL_MIX_F16;
	o->seed = 1;
}

/* Fewest tokens each vocabulary kind can be built with. */
#define MKMODEL_SPM_MIN_VOCAB (3 + 256 + 1)
#define MKMODEL_QWEN_N_SPECIAL 22
#define MKMODEL_BPE_MIN_VOCAB (256 + MKMODEL_QWEN_N_SPECIAL)

int
mkmodel_shape_check(const struct mkmodel_shape *s, struct orcd_err *err)
{
	if (strcmp(s->arch, "llama") != 0 && strcmp(s->arch, "qwen2") != 0)
		return orcd_errf(err, "mkmodel: architecture '%s' is not llama or qwen2", s->arch);
	if (s->n_embd == 0 || s->n_layer == 0 || s->n_head == 0 || s->n_head_kv == 0 ||
	    s->n_ff == 0 || s->n_ctx == 0)
		return orcd_errf(err, "mkmodel: n_embd, n_layer, n_head, n_head_kv, n_ff and "
		    "n_ctx must be positive");
	if (s->n_layer > 1000)
		return orcd_errf(err, "mkmodel: n_layer %u is too large (at most 1000)", s->n_layer);
	if (s->n_embd % s->n_head != 0)
		return orcd_errf(err, "mkmodel: n_embd %u is not a multiple of n_head %u",
		    s->n_embd, s->n_head);
	if (s->n_head % s->n_head_kv != 0)
		return orcd_errf(err, "mkmodel: n_head %u is not a multiple of n_head_kv %u",
		    s->n_head, s->n_head_kv);
	if ((s->n_embd / s->n_head) % 2 != 0)
		return orcd_errf(err, "mkmodel: head dimension %u is odd (RoPE rotates pairs)",
		    s->n_embd / s->n_head);
	if (s->vocab == MKMODEL_VOCAB_SPM && s->n_vocab < MKMODEL_SPM_MIN_VOCAB)
		return orcd_errf(err, "mkmodel: an SPM vocabulary needs at least %d tokens, not %u",
		    MKMODEL_SPM_MIN_VOCAB, s->n_vocab);
	if (s->vocab == MKMODEL_VOCAB_BPE_QWEN2 && s->n_vocab < MKMODEL_BPE_MIN_VOCAB)
		return orcd_errf(err, "mkmodel: a BPE vocabulary needs at least %d tokens, not %u",
		    MKMODEL_BPE_MIN_VOCAB, s->n_vocab);
	if (!(s->rope_theta > 0.0f) || !(s->rms_eps > 0.0f))
		return orcd_errf(err, "mkmodel: rope theta and rms epsilon must be positive");
	return 0;
}

static int
mkmodel_plan_add(struct mkmodel_plan *p, const struct mkmodel_opts *o, enum mkmodel_role role,
    uint32_t layer, const char *name, uint64_t ne0, uint64_t ne1, struct orcd_err *err)
{
	struct mkmodel_tensor *t = &p->t[p->n];
	uint64_t row_bytes;

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->role = role;
	t->layer = layer;
	t->n_dims = ne1 == 0 ? 1 : 2;
	t->ne[0] = ne0;
	t->ne[1] = ne1 == 0 ? 1 : ne1;
	if (mkmodel_tensor_type(o->mix, role, layer, o->shape.n_layer, ne0, o->shape.tied_embd,
	    &t->type, err) != 0)
		return -1;
	if (!dtype_row_bytes(t->type, ne0, &row_bytes))
		return orcd_errf(err, "mkmodel: tensor %s: row length %llu does not fit type %s",
		    name, (unsigned long long)ne0, dtype_name(t->type));
	t->nbytes = row_bytes * t->ne[1];
	p->data_bytes += t->nbytes;
	p->n++;
	return 0;
}

int
mkmodel_plan(const struct mkmodel_opts *o, struct mkmodel_plan *out, struct orcd_err *err)
{
	const struct mkmodel_shape *s = &o->shape;
	struct mkmodel_plan p = { 0 };
	uint64_t kv_dim;
	size_t cap;
	uint32_t l;
	char name[48];

	if (mkmodel_shape_check(s, err) != 0)
		return -1;
	kv_dim = (uint64_t)s->n_embd / s->n_head * s->n_head_kv;
	cap = 3 + (size_t)s->n_layer * 12;
	p.t = calloc(cap, sizeof(*p.t));
	if (p.t == NULL)
		return orcd_errf(err, "mkmodel: out of memory");

#define ADD(role, layer, nm, ne0, ne1) \
	do { \
		if (mkmodel_plan_add(&p, o, (role), (layer), (nm), (ne0), (ne1), err) != 0) \
			goto fail; \
	} while (0)
#define ADDL(role, suffix, ne0, ne1) \
	do { \
		snprintf(name, sizeof(name), "blk.%u.%s", l, (suffix)); \
		ADD((role), l, name, (ne0), (ne1)); \
	} while (0)

	ADD(MKMODEL_TOKEN_EMBD, 0, "token_embd.weight", s->n_embd, s->n_vocab);
	for (l = 0; l < s->n_layer; l++) {
		ADDL(MKMODEL_ATTN_NORM, "attn_norm.weight", s->n_embd, 0);
		ADDL(MKMODEL_ATTN_Q, "attn_q.weight", s->n_embd, s->n_embd);
		if (s->qkv_bias)
			ADDL(MKMODEL_ATTN_Q_BIAS, "attn_q.bias", s->n_embd, 0);
		ADDL(MKMODEL_ATTN_K, "attn_k.weight", s->n_embd, kv_dim);
		if (s->qkv_bias)
			ADDL(MKMODEL_ATTN_K_BIAS, "attn_k.bias", kv_dim, 0);
		ADDL(MKMODEL_ATTN_V, "attn_v.weight", s->n_embd, kv_dim);
		if (s->qkv_bias)
			ADDL(MKMODEL_ATTN_V_BIAS, "attn_v.bias", kv_dim, 0);
		ADDL(MKMODEL_ATTN_OUTPUT, "attn_output.weight", s->n_embd, s->n_embd);
		ADDL(MKMODEL_FFN_NORM, "ffn_norm.weight", s->n_embd, 0);
		ADDL(MKMODEL_FFN_GATE, "ffn_gate.weight", s->n_embd, s->n_ff);
		ADDL(MKMODEL_FFN_UP, "ffn_up.weight", s->n_embd, s->n_ff);
		ADDL(MKMODEL_FFN_DOWN, "ffn_down.weight", s->n_ff, s->n_embd);
	}
	ADD(MKMODEL_OUTPUT_NORM, 0, "output_norm.weight", s->n_embd, 0);
	if (!s->tied_embd)
		ADD(MKMODEL_OUTPUT, 0, "output.weight", s->n_embd, s->n_vocab);
#undef ADDL
#undef ADD

	*out = p;
	return 0;
fail:
	free(p.t);
	return -1;
}

void
mkmodel_plan_free(struct mkmodel_plan *p)
{
	if (p == NULL)
		return;
	free(p->t);
	p->t = NULL;
	p->n = 0;
}

/* ------------------------------------------------------------ vocabularies */

/* Strings are appended to one growing arena; pointers are set at the end
 * because the arena moves while it grows. */
struct mkmodel_strtab {
	char *buf;
	size_t len, cap;
	size_t *off;
	size_t n, n_cap;
	bool oom;
};

static void
mkmodel_strtab_begin(struct mkmodel_strtab *st)
{
	size_t ncap;
	size_t *no;

	if (st->oom)
		return;
	if (st->n == st->n_cap) {
		ncap = st->n_cap == 0 ? 1024 : st->n_cap * 2;
		no = realloc(st->off, ncap * sizeof(*no));
		if (no == NULL) {
			st->oom = true;
			return;
		}
		st->off = no;
		st->n_cap = ncap;
	}
	st->off[st->n++] = st->len;
}

static void
mkmodel_strtab_put(struct mkmodel_strtab *st, const char *s, size_t len)
{
	size_t ncap;
	char *nb;

	if (st->oom)
		return;
	if (st->len + len + 1 > st->cap) {
		ncap = st->cap == 0 ? 65536 : st->cap;
		while (ncap < st->len + len + 1)
			ncap *= 2;
		nb = realloc(st->buf, ncap);
		if (nb == NULL) {
			st->oom = true;
			return;
		}
		st->buf = nb;
		st->cap = ncap;
	}
	memcpy(st->buf + st->len, s, len);
	st->len += len;
	st->buf[st->len] = '\0';
}

/* Ends the current string (the NUL is already in place). */
static void
mkmodel_strtab_end(struct mkmodel_strtab *st)
{
	if (!st->oom)
		st->len++;
}

static void
mkmodel_strtab_add(struct mkmodel_strtab *st, const char *s)
{
	mkmodel_strtab_begin(st);
	mkmodel_strtab_put(st, s, strlen(s));
	mkmodel_strtab_end(st);
}

static const char **
mkmodel_strtab_ptrs(const struct mkmodel_strtab *st, size_t first, size_t n)
{
	const char **p;
	size_t i;

	p = malloc((n == 0 ? 1 : n) * sizeof(*p));
	if (p == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		p[i] = st->buf + st->off[first + i];
	return p;
}

static size_t
mkmodel_utf8(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	out[0] = (char)(0xc0 | (cp >> 6));
	out[1] = (char)(0x80 | (cp & 0x3f));
	return 2;	/* byte symbols are all below U+0800 */
}

/*
 * Byte-level BPE alphabet: GPT-2 maps each byte to a printable code point
 * (33..126, 161..172, 174..255 map to themselves; the other 68 bytes to
 * U+0100 upwards in byte order) and numbers the symbols in that order.
 */
struct mkmodel_bytes {
	uint8_t byte_of_id[256];	/* symbol id -> byte */
	char sym[256][3];		/* byte -> UTF-8 of its symbol */
	uint8_t sym_len[256];
	uint8_t order[256];		/* bytes, most useful first */
};

static bool
mkmodel_byte_is_direct(int b)
{
	return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static bool
mkmodel_byte_is_ascii(int b)
{
	return b >= 0x20 && b <= 0x7e;
}

static void
mkmodel_bytes_init(struct mkmodel_bytes *mb)
{
	/* Letter frequency order, so the first merges are the common ones. */
	static const char prefer[] = " etaoinsrhldcumfpgwybvkxjqz"
	    "ETAOINSRHLDCUMFPGWYBVKXJQZ0123456789";
	bool used[256] = { false };
	int b, id = 0, n_extra = 0, k = 0;
	size_t i;

	for (b = 0; b < 256; b++) {
		if (mkmodel_byte_is_direct(b))
			mb->byte_of_id[id++] = (uint8_t)b;
	}
	for (b = 0; b < 256; b++) {
		uint32_t cp;

		if (mkmodel_byte_is_direct(b))
			cp = (uint32_t)b;
		else {
			cp = 256 + (uint32_t)n_extra++;
			mb->byte_of_id[id++] = (uint8_t)b;
		}
		mb->sym_len[b] = (uint8_t)mkmodel_utf8(cp, mb->sym[b]);
		mb->sym[b][mb->sym_len[b]] = '\0';
	}
	/* Priority order: space, letters, digits, the rest of printable
	 * ASCII, newline and tab, then every other byte. */
	for (i = 0; i < sizeof(prefer) - 1; i++) {
		b = (unsigned char)prefer[i];
		mb->order[k++] = (uint8_t)b;
		used[b] = true;
	}
	for (b = 0x20; b <= 0x7e; b++) {
		if (!used[b]) {
			mb->order[k++] = (uint8_t)b;
			used[b] = true;
		}
	}
	mb->order[k++] = '\n';
	used['\n'] = true;
	mb->order[k++] = '\t';
	used['\t'] = true;
	for (b = 0; b < 256; b++) {
		if (!used[b])
			mb->order[k++] = (uint8_t)b;
	}
}

/* Pair number k in "shell" order: all pairs of the first s+1 preferred
 * symbols come before any pair that uses symbol s+1, so a small
 * vocabulary still merges the common letters. */
static void
mkmodel_shell_pair(uint32_t k, uint32_t *first, uint32_t *second)
{
	uint32_t s = (uint32_t)sqrt((double)k);
	uint32_t r;

	while (s * s > k)
		s--;
	while ((s + 1) * (s + 1) <= k)
		s++;
	r = k - s * s;
	if (r <= s) {
		*first = s;
		*second = r;
	} else {
		*first = r - s - 1;
		*second = s;
	}
}

/* Qwen2.5's added tokens, in id order from 151643. */
static const char *const mkmodel_qwen_special[MKMODEL_QWEN_N_SPECIAL] = {
	"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
	"<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
	"<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
	"<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
	"<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
	"<|repo_name|>", "<|file_sep|>",
};

#define MKMODEL_QWEN_BASE 151643u	/* ids below this are byte-level BPE */
#define MKMODEL_N_PAIRS (256u * 256u)

static const char mkmodel_chatml[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/* Llama-2-chat's [INST] format, own wording. */
static const char mkmodel_llama2_chat[] =
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{%- set first = 1 %}"
    "{%- else %}{%- set sys = '' %}{%- set first = 0 %}{%- endif %}"
    "{%- for message in messages[first:] %}"
    "{%- if message['role'] == 'user' %}"
    "{{- bos_token + '[INST] ' + (sys if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + ' ' + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}";

const char *
mkmodel_chat_template(const char *name)
{
	if (strcasecmp(name, "chatml") == 0)
		return mkmodel_chatml;
	if (strcasecmp(name, "llama2") == 0)
		return mkmodel_llama2_chat;
	if (strcasecmp(name, "none") == 0)
		return "";
	return NULL;
}

static int
mkmodel_vocab_bpe(const struct mkmodel_shape *s, struct mkmodel_vocab *v,
    struct mkmodel_strtab *tok, struct mkmodel_strtab *mrg, struct orcd_err *err)
{
	struct mkmodel_bytes mb;
	uint32_t n_base, n_merges, id, k, a, b, t, m, i;
	char buf[32];

	mkmodel_bytes_init(&mb);
	n_base = s->n_vocab >= MKMODEL_QWEN_BASE + MKMODEL_QWEN_N_SPECIAL ?
	    MKMODEL_QWEN_BASE : s->n_vocab - MKMODEL_QWEN_N_SPECIAL;
	n_merges = n_base - 256;
	if (n_merges > MKMODEL_N_PAIRS * 256u)
		return orcd_errf(err, "mkmodel: BPE vocabulary of %u tokens is too large", s->n_vocab);

	for (id = 0; id < 256; id++) {
		b = mb.byte_of_id[id];
		mkmodel_strtab_add(tok, mb.sym[b]);
		v->types[id] = MKMODEL_TOKEN_NORMAL;
		v->ascii[id] = mkmodel_byte_is_ascii((int)b);
	}
	for (k = 0; k < n_merges; k++, id++) {
		mkmodel_strtab_begin(tok);
		mkmodel_strtab_begin(mrg);
		if (k < MKMODEL_N_PAIRS) {
			/* Two byte symbols. */
			mkmodel_shell_pair(k, &a, &b);
			a = mb.order[a];
			b = mb.order[b];
			v->ascii[id] = mkmodel_byte_is_ascii((int)a) && mkmodel_byte_is_ascii((int)b);
			mkmodel_strtab_put(tok, mb.sym[a], mb.sym_len[a]);
			mkmodel_strtab_put(tok, mb.sym[b], mb.sym_len[b]);
			mkmodel_strtab_put(mrg, mb.sym[a], mb.sym_len[a]);
			mkmodel_strtab_put(mrg, " ", 1);
			mkmodel_strtab_put(mrg, mb.sym[b], mb.sym_len[b]);
		} else {
			/* Pair token t (an earlier, common pair) plus a symbol. */
			t = (k - MKMODEL_N_PAIRS) / 256;
			m = mb.order[(k - MKMODEL_N_PAIRS) % 256];
			mkmodel_shell_pair(t, &a, &b);
			a = mb.order[a];
			b = mb.order[b];
			v->ascii[id] = mkmodel_byte_is_ascii((int)a) && mkmodel_byte_is_ascii((int)b) &&
			    mkmodel_byte_is_ascii((int)m);
			mkmodel_strtab_put(tok, mb.sym[a], mb.sym_len[a]);
			mkmodel_strtab_put(tok, mb.sym[b], mb.sym_len[b]);
			mkmodel_strtab_put(tok, mb.sym[m], mb.sym_len[m]);
			mkmodel_strtab_put(mrg, mb.sym[a], mb.sym_len[a]);
			mkmodel_strtab_put(mrg, mb.sym[b], mb.sym_len[b]);
			mkmodel_strtab_put(mrg, " ", 1);
			mkmodel_strtab_put(mrg, mb.sym[m], mb.sym_len[m]);
		}
		mkmodel_strtab_end(tok);
		mkmodel_strtab_end(mrg);
		v->types[id] = MKMODEL_TOKEN_NORMAL;
	}
	for (i = 0; i < MKMODEL_QWEN_N_SPECIAL; i++, id++) {
		mkmodel_strtab_add(tok, mkmodel_qwen_special[i]);
		/* <tool_call> and </tool_call> are not special in Qwen's
		 * tokenizer_config, so GGUF marks them USER_DEFINED. */
		v->types[id] = i == 14 || i == 15 ? MKMODEL_TOKEN_USER_DEFINED :
		    MKMODEL_TOKEN_CONTROL;
		v->ascii[id] = 0;
	}
	for (; id < s->n_vocab; id++) {
		snprintf(buf, sizeof(buf), "[PAD%u]", id);
		mkmodel_strtab_add(tok, buf);
		v->types[id] = MKMODEL_TOKEN_UNUSED;
		v->ascii[id] = 0;
	}
	v->n_merges = n_merges;
	v->bos = (int32_t)n_base;		/* <|endoftext|> */
	v->pad = (int32_t)n_base;
	v->eos = (int32_t)n_base + 2;		/* <|im_end|> */
	v->unk = -1;
	v->add_bos = false;
	v->model = "gpt2";
	v->pre = "qwen2";
	v->chat_template = mkmodel_chatml;
	return 0;
}

static int
mkmodel_vocab_spm(const struct mkmodel_shape *s, struct mkmodel_vocab *v,
    struct mkmodel_strtab *tok, struct orcd_err *err)
{
	static const char space[] = "\xe2\x96\x81";	/* U+2581, SentencePiece's space */
	struct mkmodel_bytes mb;
	char alpha1[96], piece[64];
	uint32_t id, n1 = 0, len, j;
	uint64_t idx, count, x;
	int b;
	float score = 0.0f;

	mkmodel_bytes_init(&mb);
	/* Single pieces use every printable non-space byte; longer ones the
	 * 26 lower-case letters in frequency order. */
	for (j = 0; j < 256; j++) {
		b = mb.order[j];
		if (b != ' ' && mkmodel_byte_is_ascii(b))
			alpha1[n1++] = (char)b;
	}

	mkmodel_strtab_add(tok, "<unk>");
	v->types[0] = MKMODEL_TOKEN_UNKNOWN;
	mkmodel_strtab_add(tok, "<s>");
	v->types[1] = MKMODEL_TOKEN_CONTROL;
	mkmodel_strtab_add(tok, "</s>");
	v->types[2] = MKMODEL_TOKEN_CONTROL;
	for (j = 0; j < 3; j++) {
		v->scores[j] = 0.0f;
		v->ascii[j] = 0;
	}
	for (b = 0; b < 256; b++) {
		id = 3 + (uint32_t)b;
		snprintf(piece, sizeof(piece), "<0x%02X>", b);
		mkmodel_strtab_add(tok, piece);
		v->types[id] = MKMODEL_TOKEN_BYTE;
		v->scores[id] = 0.0f;
		v->ascii[id] = mkmodel_byte_is_ascii(b);
	}
	id = 259;
	/* The lone space piece, then by length: "\u2581" + s and s. */
	mkmodel_strtab_add(tok, space);
	v->types[id] = MKMODEL_TOKEN_NORMAL;
	v->scores[id] = score;
	v->ascii[id] = 1;
	id++;
	for (len = 1; id < s->n_vocab; len++) {
		if (len > 12)
			return orcd_errf(err, "mkmodel: SPM vocabulary of %u tokens is too large",
			    s->n_vocab);
		count = 1;
		for (j = 0; j < len; j++)
			count *= len == 1 ? n1 : 26;
		for (idx = 0; idx < count && id < s->n_vocab; idx++) {
			/* Digits of idx, most significant first. */
			x = idx;
			for (j = len; j-- > 0;) {
				piece[j] = len == 1 ? alpha1[x % n1] : alpha1[x % 26];
				x /= len == 1 ? n1 : 26;
			}
			piece[len] = '\0';
			for (j = 0; j < 2 && id < s->n_vocab; j++, id++) {
				mkmodel_strtab_begin(tok);
				if (j == 0)
					mkmodel_strtab_put(tok, space, sizeof(space) - 1);
				mkmodel_strtab_put(tok, piece, len);
				mkmodel_strtab_end(tok);
				score -= 1.0f;
				v->types[id] = MKMODEL_TOKEN_NORMAL;
				v->scores[id] = score;
				v->ascii[id] = 1;
			}
		}
	}
	v->n_merges = 0;
	v->unk = 0;
	v->bos = 1;
	v->eos = 2;
	v->pad = -1;
	v->add_bos = true;
	v->model = "llama";
	v->pre = NULL;
	v->chat_template = NULL;
	return 0;
}

int
mkmodel_vocab_build(const struct mkmodel_shape *s, struct mkmodel_vocab *v,
    struct orcd_err *err)
{
	struct mkmodel_strtab tok = { 0 }, mrg = { 0 };
	int rc;

	memset(v, 0, sizeof(*v));
	if (mkmodel_shape_check(s, err) != 0)
		return -1;
	v->n_tokens = s->n_vocab;
	v->types = calloc(s->n_vocab, sizeof(*v->types));
	v->ascii = calloc(s->n_vocab, 1);
	if (s->vocab == MKMODEL_VOCAB_SPM)
		v->scores = calloc(s->n_vocab, sizeof(*v->scores));
	if (v->types == NULL || v->ascii == NULL ||
	    (s->vocab == MKMODEL_VOCAB_SPM && v->scores == NULL)) {
		orcd_errf(err, "mkmodel: out of memory building the vocabulary");
		goto fail;
	}
	if (s->vocab == MKMODEL_VOCAB_SPM)
		rc = mkmodel_vocab_spm(s, v, &tok, err);
	else
		rc = mkmodel_vocab_bpe(s, v, &tok, &mrg, err);
	if (rc != 0)
		goto fail;
	if (tok.oom || mrg.oom) {
		orcd_errf(err, "mkmodel: out of memory building the vocabulary");
		goto fail;
	}
	if (tok.n != s->n_vocab) {
		orcd_errf(err, "mkmodel: built %zu tokens for a vocabulary of %u", tok.n, s->n_vocab);
		goto fail;
	}
	/* One arena: the tokens, then the merges. */
	if (mrg.len > 0) {
		size_t i, first = tok.n;

		for (i = 0; i < mrg.n; i++) {
			mkmodel_strtab_begin(&tok);
			mkmodel_strtab_put(&tok, mrg.buf + mrg.off[i], strlen(mrg.buf + mrg.off[i]));
			mkmodel_strtab_end(&tok);
		}
		if (tok.oom) {
			orcd_errf(err, "mkmodel: out of memory building the vocabulary");
			goto fail;
		}
		v->merges = mkmodel_strtab_ptrs(&tok, first, mrg.n);
		if (v->merges == NULL) {
			orcd_errf(err, "mkmodel: out of memory building the vocabulary");
			goto fail;
		}
	}
	v->tokens = mkmodel_strtab_ptrs(&tok, 0, s->n_vocab);
	if (v->tokens == NULL) {
		orcd_errf(err, "mkmodel: out of memory building the vocabulary");
		goto fail;
	}
	v->arena = tok.buf;
	free(tok.off);
	free(mrg.buf);
	free(mrg.off);
	return 0;
fail:
	free(tok.buf);
	free(tok.off);
	free(mrg.buf);
	free(mrg.off);
	mkmodel_vocab_free(v);
	return -1;
}

void
mkmodel_vocab_free(struct mkmodel_vocab *v)
{
	if (v == NULL)
		return;
	free(v->tokens);
	free(v->merges);
	free(v->scores);
	free(v->types);
	free(v->ascii);
	free(v->arena);
	memset(v, 0, sizeof(*v));
}

/* ------------------------------------------------------------ weights */

static uint64_t
mkmodel_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Per-tensor stream key: the seed and the tensor's name, so a tensor's
 * values do not depend on which other tensors the model has. */
static uint64_t
mkmodel_tensor_key(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL;	/* FNV-1a */

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	return mkmodel_mix64(seed ^ mkmodel_mix64(h));
}

/* Sum of four 16-bit uniforms (Irwin-Hall), scaled to unit variance: close
 * enough to normal, bounded (|x| < 3.47) and one hash per element. */
static inline float
mkmodel_normalish(uint64_t key, uint64_t index)
{
	uint64_t h = mkmodel_mix64(key + index * 0x9e3779b97f4a7c15ULL);
	uint32_t sum = (uint32_t)(h & 0xffff) + (uint32_t)((h >> 16) & 0xffff) +
	    (uint32_t)((h >> 32) & 0xffff) + (uint32_t)(h >> 48);

	/* mean of the sum is 4 * 32767.5; its std 65536 / sqrt(3) */
	return ((float)sum - 131070.0f) * (1.7320508f / 65536.0f);
}

float
mkmodel_random(uint64_t seed, const char *name, uint64_t index)
{
	return mkmodel_normalish(mkmodel_tensor_key(seed, name), index);
}

/* How a tensor's values are drawn. */
static void
mkmodel_init_of(const struct mkmodel_tensor *t, float *constant, float *std)
{
	*constant = 0.0f;
	switch (t->role) {
	case MKMODEL_ATTN_NORM:
	case MKMODEL_FFN_NORM:
	case MKMODEL_OUTPUT_NORM:
		*constant = 1.0f;
		*std = 0.0f;
		break;
	case MKMODEL_ATTN_Q_BIAS:
	case MKMODEL_ATTN_K_BIAS:
	case MKMODEL_ATTN_V_BIAS:
		*std = 0.02f;
		break;
	default:
		/* Unit-variance outputs for unit-variance inputs: activations
		 * neither vanish nor blow up over many layers. */
		*std = 1.0f / sqrtf((float)t->ne[0]);
		break;
	}
}

/* Scale of the embedding/output rows of tokens --ascii-output avoids. */
#define MKMODEL_ASCII_SCALE 0.05f

/* ------------------------------------------------------------ writer */

#define MKMODEL_CHUNK_BYTES (2u << 20)

struct mkmodel_chunk {
	uint32_t tensor;
	uint64_t row0;
	uint64_t n_rows;
	size_t bytes;
};

struct mkmodel_slot {
	uint8_t *buf;
	int64_t avail;		/* the chunk that may be built in it */
	int64_t ready;		/* the chunk it holds, or -1 */
};

struct mkmodel_job {
	const struct mkmodel_opts *o;
	const struct mkmodel_plan *plan;
	const uint8_t *ascii;	/* per token, or NULL */
	uint64_t *keys;		/* per tensor */
	uint64_t *row_bytes;	/* per tensor */
	struct mkmodel_chunk *chunks;
	size_t n_chunks;

	pthread_mutex_t mu;
	pthread_cond_t cond_free;	/* a slot was written out */
	pthread_cond_t cond_ready;	/* a slot was filled */
	struct mkmodel_slot *slots;
	size_t n_slots;
	size_t next;		/* next chunk to hand to a worker */
	bool abort;
	size_t max_row;		/* longest row, for the float scratch */
};

static void
mkmodel_build_chunk(struct mkmodel_job *j, const struct mkmodel_chunk *c, uint8_t *out,
    float *row)
{
	const struct mkmodel_tensor *t = &j->plan->t[c->tensor];
	uint64_t key = j->keys[c->tensor];
	uint64_t ne0 = t->ne[0], r, i, base;
	float constant, std, scale;
	bool ascii_rows;

	mkmodel_init_of(t, &constant, &std);
	ascii_rows = j->ascii != NULL && (t->role == MKMODEL_OUTPUT ||
	    (t->role == MKMODEL_TOKEN_EMBD && j->o->shape.tied_embd));
	for (r = c->row0; r < c->row0 + c->n_rows; r++) {
		scale = std;
		if (ascii_rows && !j->ascii[r])
			scale *= MKMODEL_ASCII_SCALE;
		base = r * ne0;
		if (std == 0.0f) {
			for (i = 0; i < ne0; i++)
				row[i] = constant;
		} else {
			for (i = 0; i < ne0; i++)
				row[i] = constant + scale * mkmodel_normalish(key, base + i);
		}
		/* F32/F16/BF16 conversion is in here too. */
		quant_quantize_row(t->type, row, out + (r - c->row0) * j->row_bytes[c->tensor],
		    (int64_t)ne0);
	}
}

static void *
mkmodel_worker(void *arg)
{
	struct mkmodel_job *j = arg;
	struct mkmodel_slot *slot;
	float *row;
	size_t c;

	row = malloc(j->max_row * sizeof(float));
	pthread_mutex_lock(&j->mu);
	if (row == NULL) {
		j->abort = true;
		pthread_cond_broadcast(&j->cond_ready);
	}
	while (!j->abort && j->next < j->n_chunks) {
		c = j->next++;
		slot = &j->slots[c % j->n_slots];
		while (!j->abort && slot->avail != (int64_t)c)
			pthread_cond_wait(&j->cond_free, &j->mu);
		if (j->abort)
			break;
		pthread_mutex_unlock(&j->mu);
		mkmodel_build_chunk(j, &j->chunks[c], slot->buf, row);
		pthread_mutex_lock(&j->mu);
		slot->ready = (int64_t)c;
		pthread_cond_broadcast(&j->cond_ready);
	}
	pthread_mutex_unlock(&j->mu);
	free(row);
	return NULL;
}

/* Cuts every tensor into chunks of whole rows of about CHUNK_BYTES. */
static int
mkmodel_make_chunks(struct mkmodel_job *j, struct orcd_err *err)
{
	const struct mkmodel_plan *p = j->plan;
	size_t i, n = 0, cap = 0;
	uint64_t rows_per, r;
	struct mkmodel_chunk *nc;

	for (i = 0; i < p->n; i++) {
		if (!dtype_row_bytes(p->t[i].type, p->t[i].ne[0], &j->row_bytes[i]))
			return orcd_errf(err, "mkmodel: tensor %s: bad row length", p->t[i].name);
		rows_per = MKMODEL_CHUNK_BYTES / j->row_bytes[i];
		if (rows_per == 0)
			rows_per = 1;
		for (r = 0; r < p->t[i].ne[1]; r += rows_per) {
			if (n == cap) {
				cap = cap == 0 ? 1024 : cap * 2;
				nc = realloc(j->chunks, cap * sizeof(*nc));
				if (nc == NULL)
					return orcd_errf(err, "mkmodel: out of memory");
				j->chunks = nc;
			}
			j->chunks[n].tensor = (uint32_t)i;
			j->chunks[n].row0 = r;
			j->chunks[n].n_rows = p->t[i].ne[1] - r < rows_per ? p->t[i].ne[1] - r : rows_per;
			j->chunks[n].bytes = (size_t)(j->chunks[n].n_rows * j->row_bytes[i]);
			n++;
		}
		if (p->t[i].ne[0] > j->max_row)
			j->max_row = p->t[i].ne[0];
	}
	j->n_chunks = n;
	return 0;
}

static int
mkmodel_add_metadata(struct gguf_writer *w, const struct mkmodel_opts *o,
    const struct mkmodel_vocab *v, struct orcd_err *err)
{
	const struct mkmodel_shape *s = &o->shape;
	const char *tmpl;
	char key[96], desc[256];
	uint32_t head_dim = s->n_embd / s->n_head;

#define KEY(suffix) (snprintf(key, sizeof(key), "%s.%s", s->arch, (suffix)), key)
#define TRY(call) do { if ((call) != 0) return -1; } while (0)

	snprintf(desc, sizeof(desc), "Synthetic model with random weights (seed %llu%s), made by "
	    "orcd-mkmodel for testing and benchmarks; it is not a trained model",
	    (unsigned long long)o->seed, o->ascii_output ? ", ASCII output" : "");
	TRY(gguf_writer_add_str(w, "general.architecture", s->arch, err));
	TRY(gguf_writer_add_str(w, "general.type", "model", err));
	TRY(gguf_writer_add_str(w, "general.name", s->name, err));
	TRY(gguf_writer_add_str(w, "general.description", desc, err));
	TRY(gguf_writer_add_u32(w, "general.file_type", mkmodel_mix_file_type(o->mix), err));
	TRY(gguf_writer_add_u32(w, "general.quantization_version", 2, err));
	TRY(gguf_writer_add_u64(w, "orcd.mkmodel.seed", o->seed, err));
	TRY(gguf_writer_add_bool(w, "orcd.mkmodel.ascii_output", o->ascii_output, err));

	TRY(gguf_writer_add_u32(w, KEY("vocab_size"), s->n_vocab, err));
	TRY(gguf_writer_add_u32(w, KEY("context_length"), s->n_ctx, err));
	TRY(gguf_writer_add_u32(w, KEY("embedding_length"), s->n_embd, err));
	TRY(gguf_writer_add_u32(w, KEY("block_count"), s->n_layer, err));
	TRY(gguf_writer_add_u32(w, KEY("feed_forward_length"), s->n_ff, err));
	TRY(gguf_writer_add_u32(w, KEY("attention.head_count"), s->n_head, err));
	TRY(gguf_writer_add_u32(w, KEY("attention.head_count_kv"), s->n_head_kv, err));
	TRY(gguf_writer_add_u32(w, KEY("rope.dimension_count"), head_dim, err));
	TRY(gguf_writer_add_f32(w, KEY("rope.freq_base"), s->rope_theta, err));
	TRY(gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), s->rms_eps, err));

	TRY(gguf_writer_add_str(w, "tokenizer.ggml.model", v->model, err));
	if (v->pre != NULL)
		TRY(gguf_writer_add_str(w, "tokenizer.ggml.pre", v->pre, err));
	TRY(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", v->tokens, NULL, v->n_tokens, err));
	if (v->scores != NULL)
		TRY(gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v->scores,
		    v->n_tokens, err));
	TRY(gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types,
	    v->n_tokens, err));
	if (v->merges != NULL)
		TRY(gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", v->merges, NULL, v->n_merges,
		    err));
	TRY(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos, err));
	TRY(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos, err));
	if (v->unk >= 0)
		TRY(gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk, err));
	if (v->pad >= 0)
		TRY(gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad, err));
	TRY(gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos, err));
	TRY(gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false, err));
	tmpl = o->chat_template != NULL ? o->chat_template : v->chat_template;
	if (tmpl != NULL && tmpl[0] != '\0')
		TRY(gguf_writer_add_str(w, "tokenizer.chat_template", tmpl, err));
#undef TRY
#undef KEY
	return 0;
}

static int
mkmodel_thread_count(int n)
{
	long cpus;

	if (n > 0)
		return n > 256 ? 256 : n;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1)
		cpus = 1;
	return cpus > 256 ? 256 : (int)cpus;
}

int
mkmodel_write(const struct mkmodel_opts *o, const char *path, struct orcd_err *err)
{
	struct mkmodel_plan plan = { 0 };
	struct mkmodel_vocab vocab = { 0 };
	struct mkmodel_job job;
	struct gguf_writer *w = NULL;
	pthread_t *threads = NULL;
	int n_threads = 0, started = 0, i, rc = -1;
	uint64_t done = 0, total;
	size_t c, s;
	bool locked = false;

	memset(&job, 0, sizeof(job));
	pthread_mutex_init(&job.mu, NULL);
	pthread_cond_init(&job.cond_free, NULL);
	pthread_cond_init(&job.cond_ready, NULL);
	quant_init();

	if (mkmodel_plan(o, &plan, err) != 0)
		goto fail;
	if (mkmodel_vocab_build(&o->shape, &vocab, err) != 0)
		goto fail;
	w = gguf_writer_new(GGUF_DEFAULT_ALIGNMENT, err);
	if (w == NULL)
		goto fail;
	if (mkmodel_add_metadata(w, o, &vocab, err) != 0)
		goto fail;
	for (c = 0; c < plan.n; c++) {
		if (gguf_writer_add_tensor(w, plan.t[c].name, plan.t[c].type, plan.t[c].n_dims,
		    plan.t[c].ne, NULL, err) != 0)
			goto fail;
	}

	job.o = o;
	job.plan = &plan;
	job.ascii = o->ascii_output ? vocab.ascii : NULL;
	job.keys = calloc(plan.n, sizeof(*job.keys));
	job.row_bytes = calloc(plan.n, sizeof(*job.row_bytes));
	if (job.keys == NULL || job.row_bytes == NULL) {
		orcd_errf(err, "mkmodel: out of memory");
		goto fail;
	}
	for (c = 0; c < plan.n; c++)
		job.keys[c] = mkmodel_tensor_key(o->seed, plan.t[c].name);
	if (mkmodel_make_chunks(&job, err) != 0)
		goto fail;

	/* Two slots per worker: one being built, one waiting to be written,
	 * so the workers never wait for the disk in steady state. */
	n_threads = mkmodel_thread_count(o->n_threads);
	job.n_slots = (size_t)n_threads * 2 + 2;
	if (job.n_slots > job.n_chunks)
		job.n_slots = job.n_chunks > 0 ? job.n_chunks : 1;
	job.slots = calloc(job.n_slots, sizeof(*job.slots));
	if (job.slots == NULL) {
		orcd_errf(err, "mkmodel: out of memory");
		goto fail;
	}
	for (s = 0; s < job.n_slots; s++) {
		size_t cap = 0;

		for (c = s; c < job.n_chunks; c += job.n_slots) {
			if (job.chunks[c].bytes > cap)
				cap = job.chunks[c].bytes;
		}
		job.slots[s].buf = malloc(cap > 0 ? cap : 1);
		if (job.slots[s].buf == NULL) {
			orcd_errf(err, "mkmodel: out of memory for the output buffers");
			goto fail;
		}
		job.slots[s].avail = (int64_t)s;
		job.slots[s].ready = -1;
	}

	if (gguf_writer_begin(w, path, err) != 0)
		goto fail;
	total = plan.data_bytes;

	threads = calloc((size_t)n_threads, sizeof(*threads));
	if (threads == NULL) {
		orcd_errf(err, "mkmodel: out of memory");
		goto fail;
	}
	for (i = 0; i < n_threads; i++) {
		if (pthread_create(&threads[i], NULL, mkmodel_worker, &job) != 0) {
			orcd_errf(err, "mkmodel: cannot start worker thread %d", i);
			goto fail;
		}
		started++;
	}

	/* This thread writes the chunks out in order as they become ready. */
	for (c = 0; c < job.n_chunks; c++) {
		struct mkmodel_slot *slot = &job.slots[c % job.n_slots];
		const struct mkmodel_chunk *ch = &job.chunks[c];

		pthread_mutex_lock(&job.mu);
		locked = true;
		while (!job.abort && slot->ready != (int64_t)c)
			pthread_cond_wait(&job.cond_ready, &job.mu);
		if (job.abort) {
			orcd_errf(err, "mkmodel: a worker thread ran out of memory");
			goto fail;
		}
		pthread_mutex_unlock(&job.mu);
		locked = false;
		if (gguf_writer_write(w, slot->buf, ch->bytes, err) != 0)
			goto fail;
		done += ch->bytes;
		pthread_mutex_lock(&job.mu);
		slot->ready = -1;
		slot->avail = (int64_t)(c + job.n_slots);
		pthread_cond_broadcast(&job.cond_free);
		pthread_mutex_unlock(&job.mu);
		if (o->progress != NULL)
			o->progress(o->progress_arg, ch->tensor, plan.n, plan.t[ch->tensor].name,
			    done, total);
	}
	if (gguf_writer_finish(w, err) != 0)
		goto fail;
	rc = 0;
fail:
	if (!locked)
		pthread_mutex_lock(&job.mu);
	if (rc != 0)
		job.abort = true;
	pthread_cond_broadcast(&job.cond_free);
	pthread_cond_broadcast(&job.cond_ready);
	pthread_mutex_unlock(&job.mu);
	for (i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	if (job.slots != NULL) {
		for (s = 0; s < job.n_slots; s++)
			free(job.slots[s].buf);
	}
	free(job.slots);
	free(job.chunks);
	free(job.keys);
	free(job.row_bytes);
	pthread_cond_destroy(&job.cond_ready);
	pthread_cond_destroy(&job.cond_free);
	pthread_mutex_destroy(&job.mu);
	gguf_writer_free(w);	/* removes path.partial on failure */
	mkmodel_vocab_free(&vocab);
	mkmodel_plan_free(&plan);
	return rc;
}
