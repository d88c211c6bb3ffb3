/*
 * The CUDA kernels of the GPU backend, seen from C: plain types only
 * (pointers, ints, floats; a cudaStream_t travels as void *), so code in
 * src/ can include this without the CUDA headers.
 *
 * Every function is asynchronous on the given stream (NULL: the legacy
 * default stream) and returns 0 or a cudaError_t value as an int.  Bad
 * arguments return cudaErrorInvalidValue (1) and launch nothing; nothing
 * here allocates, synchronizes or touches host memory, so all of it may be
 * captured into a CUDA graph.
 *
 * Pointers are device pointers.  Strides of float or int arrays (ld*) count
 * elements; strides of byte buffers (*_stride) count bytes.  Type ids are
 * enum orcd_dtype (orcd/dtype.h); weight and activation rows use the ggml
 * block layouts byte for byte, as on the CPU (src/cpu/quant.h).
 *
 * Numerics follow the CPU engine (src/cpu/forward.c, src/cpu/quant.c): the
 * activation conversions are bit-identical to quant_quantize_row, matrix
 * products compute the same integer block dots as quant_vec_dot (only the
 * order of the float sums over blocks differs), and the small ops round at
 * the same points (see each function).
 */
#ifndef ORCD_CUDA_OPS_H
#define ORCD_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ activations */

/* The activation type a weight of type wtype is multiplied with (as
 * quant_vec_dot_type), or -1 if the GPU kernels do not support wtype. */
int cuda_act_type(int wtype);
/* Bytes of one row of n elements of type t (weights or activations); 0 if
 * t is unsupported or n is not a whole number of blocks. */
size_t cuda_row_bytes(int t, int n);

/*
 * dst row r = x row r converted to act_type, exactly as quant_quantize_row:
 * Q8_0, Q8_1 (scale amax/127, multiplier 127/amax, round half to even),
 * Q8_K (scale from the signed maximum, first one on ties), F16 and BF16
 * (round to nearest even), F32 (a copy).  n must be a whole number of
 * blocks; dst_stride >= cuda_row_bytes(act_type, n) and keeps the rows
 * aligned (4 bytes for Q8_K and F32, else 2).
 */
int cuda_quantize_act(int act_type, const float *x, size_t ldx, int rows,
    int n, void *dst, size_t dst_stride, void *stream);

/* ---------------------------------------------------------- matrix product */

/*
 * out[t * ldo + r] = dot(weight row r, activation row t) (+ bias[r])
 * for r < n_rows, t < n_tok; then, if residual is not NULL,
 * out[t * ldo + r] = residual[t * ldo + r] + that (residual may be out:
 * the residual add of the forward pass in place).
 *
 * w: n_rows rows of type wtype, w_stride bytes apart (2-byte aligned);
 * act: n_tok rows of type cuda_act_type(wtype) (F32 weights: the float
 * rows themselves), act_stride bytes apart.  n_in is a whole number of the
 * weight type's blocks.  n_tok <= 8 runs the decode GEMV (every weight
 * byte read once per call); larger n_tok runs a tiled kernel that reads
 * the weights once per 64 tokens.
 */
int cuda_matmul(int wtype, const void *w, size_t w_stride, int n_rows,
    int n_in, const void *act, size_t act_stride, int n_tok, float *out,
    size_t ldo, const float *bias, const float *residual, void *stream);

/* ------------------------------------------------------------ small ops */

/*
 * y = (x * scale) * weight per row, scale = 1 / sqrtf(mean + eps) with the
 * mean of squares summed in double, as the CPU (the float products are
 * summed in double in a different order, which leaves the float mean the
 * same in all but astronomically rare cases).  y may be x.
 */
int cuda_rmsnorm(const float *x, size_t ldx, const float *weight, int rows,
    int n, float eps, float *y, size_t ldy, void *stream);

/*
 * RoPE and the KV-cache write for n_tok tokens at positions pos[t] (device
 * array): q (n_head heads) and k (n_head_kv heads) get their bias added
 * (bq, bk, bv may be NULL), then the first n_rot dimensions of every head
 * are rotated, pairs (2i, 2i+1) (neox = 0, llama) or (i, i + n_rot/2)
 * (neox = 1, qwen2); theta_i = pos * theta_scale^i by repeated float
 * multiplication, theta_scale = powf(freq_base, -2/n_rot) (computed on the
 * host with the C library, like the CPU), angle = freq_scale * theta_i.
 * q is rotated in place; k and v (+ bias) are written as f16 to
 * k_cache[t] + layer_off + pos[t] * kv_dim and likewise v_cache[t]
 * (k_cache, v_cache: device arrays of n_tok per-token base pointers, so a
 * batch may mix sequences; layout [n_ctx][kv_dim] with kv_dim =
 * n_head_kv * head_dim).  Tokens whose position is outside [0, n_ctx)
 * are rotated but not written to the caches.
 */
int cuda_rope_kv(int n_tok, int n_head, int n_head_kv, int head_dim,
    int n_rot, int neox, float freq_base, float freq_scale, const int *pos,
    float *q, size_t ldq, const float *k, size_t ldk, const float *v,
    size_t ldv, const float *bq, const float *bk, const float *bv,
    uint16_t *const *k_cache, uint16_t *const *v_cache, size_t layer_off,
    int n_ctx, void *stream);

/*
 * Attention of n_tok tokens over their own sequence's cache (pointers and
 * layout as cuda_rope_kv; the caches must be 16-byte aligned): token t,
 * head h (kv head h / (n_head / n_head_kv)) attends positions 0..pos[t].
 * Numerics as the CPU: q rounded to f16, scores f16 x f16 summed in f32
 * times 1/sqrtf(head_dim), softmax against the maximum with the sum in
 * double, probabilities rounded to f16, out[d] = sum_j v[j][d] * p_j in
 * f32.  head_dim is a multiple of 8, at most 256.
 *
 * max_len is an upper bound of pos[t] + 1 over the batch (positions are
 * clamped to it and to n_ctx).  Long contexts are split over the context
 * (flash-decoding style: split maxima, then sums, then weighted values,
 * combined exactly in that order so the rounding points stay those of
 * the CPU); split_len = 0 chooses the split for this device, > 0 forces
 * that many positions per split (at least 64, at most 8192; split_len >=
 * max_len: no split where the context fits in shared memory).  workspace
 * (16-byte aligned) must hold cuda_attention_workspace_bytes() of the same
 * head counts and split_len on the same device; the size returned for
 * (n_tok, max_len) covers every call with at most n_tok tokens and at most
 * max_len positions, so one allocation for the largest batch serves all
 * steps (0 when no call can split; workspace may then be NULL).
 * out: [n_tok][n_head * head_dim] at row stride ldo (q and out must not
 * overlap).
 */
size_t cuda_attention_workspace_bytes(int n_tok, int n_head, int head_dim,
    int max_len, int split_len);
int cuda_attention(int n_tok, int n_head, int n_head_kv, int head_dim,
    const int *pos, const float *q, size_t ldq,
    const uint16_t *const *k_cache, const uint16_t *const *v_cache,
    size_t layer_off, int n_ctx, int max_len, int split_len, void *workspace,
    size_t workspace_bytes, float *out, size_t ldo, void *stream);

/*
 * The same over a paged cache: one pool of blocks for K and one for V,
 * each block [n_layer][block_tokens][n_head_kv * head_dim] f16
 * (block_elems elements; block_tokens a power of two); tables[t] is token
 * t's sequence's block table (device int32, block ids in position order),
 * position p of layer l at pool + tables[t][p / block_tokens] *
 * block_elems + layer_off + (p % block_tokens) * kv_dim, with layer_off =
 * l * block_tokens * kv_dim.  n_ctx bounds the positions as before.
 */
int cuda_rope_kv_paged(int n_tok, int n_head, int n_head_kv, int head_dim,
    int n_rot, int neox, float freq_base, float freq_scale, const int *pos,
    float *q, size_t ldq, const float *k, size_t ldk, const float *v,
    size_t ldv, const float *bq, const float *bk, const float *bv,
    const int32_t *const *tables, uint16_t *k_pool, uint16_t *v_pool,
    int block_tokens, size_t block_elems, size_t layer_off, int n_ctx,
    void *stream);
int cuda_attention_paged(int n_tok, int n_head, int n_head_kv, int head_dim,
    const int *pos, const float *q, size_t ldq, const int32_t *const *tables,
    const uint16_t *k_pool, const uint16_t *v_pool, int block_tokens,
    size_t block_elems, size_t layer_off, int n_ctx, int max_len, int split_len,
    void *workspace, size_t workspace_bytes, float *out, size_t ldo, void *stream);

/* y[i] = a[i] + b[i]; y may be a or b. */
int cuda_add(float *y, const float *a, const float *b, size_t n,
    void *stream);

/* y = silu(gate) * up per element, silu(g) = g / (1 + expf(-g)) (the
 * exponential is computed in double and rounded: the correctly rounded
 * expf that the C library returns in all but rare cases).  y may alias
 * gate or up. */
int cuda_swiglu(float *y, size_t ldy, const float *gate, size_t ldg,
    const float *up, size_t ldu, int rows, int n, void *stream);

/* out row t = table row tokens[t] dequantized, exactly as
 * quant_dequantize_row (any weight type); rows of ids outside
 * [0, n_vocab) are filled with zeros (the caller validates ids). */
int cuda_embed(int wtype, const void *table, size_t row_bytes, int n_vocab,
    int n_embd, const int *tokens, int n_tok, float *out, size_t ldo,
    void *stream);

/* out[r] = index of the largest element of row r (ties: lowest index;
 * NaN never wins; a row of NaNs gives 0). */
int cuda_argmax(const float *x, size_t ldx, int rows, int n, int *out,
    void *stream);

/* ------------------------------------------------------------ seal */

/*
 * Seal chunk digests (doc/seal.md): out[32 c .. 32 c + 32) = the Merkle
 * root over the 4 KiB blocks of chunk c (leaf = SHA-256(0x00 || block),
 * parent = SHA-256(0x01 || left || right), an odd last node carried up).
 * Chunk c is len[c] bytes, 1 .. 1 MiB (a longer chunk gets no digest:
 * the caller checks), at ptr[c], any alignment (16-byte aligned chunks
 * take the fast path).  ptr and len are device arrays.
 */
int cuda_seal_digests(const uint8_t *const *ptr, const uint32_t *len, int n_chunks,
    uint8_t *out, void *stream);

#ifdef __cplusplus
}
#endif
#endif
