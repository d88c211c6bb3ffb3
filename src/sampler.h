/*
 * Token sampler: turns one step's logits into a token id.  The chain is the
 * one llama.cpp's common sampler uses by default:
 *
 *	repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw
 *
 * Everything is fully defined, so the same seed and the same logits give the
 * same tokens on any machine, and the CUDA backend can implement the same
 * computation (the reference for its tests is this file).
 *
 * Exact definition of sampler_sample (l = logits, n = n_vocab):
 *
 * 0. Draw number.  c is the number of sampler_sample calls since
 *    sampler_new or sampler_reset (every call uses one draw, greedy too).
 *    u = sampler_uniform(seed, c), with, in uint64_t arithmetic mod 2^64:
 *
 *	mix(z) = z ^= z >> 30, z *= 0xbf58476d1ce4e5b9,
 *	         z ^= z >> 27, z *= 0x94d049bb133111eb, z ^ (z >> 31)
 *	z      = mix(mix(seed) + (c + 1) * 0x9e3779b97f4a7c15)
 *	u      = (double)(z >> 11) * 0x1p-53		(in [0, 1))
 *
 *    (output number c, counting from 0, of splitmix64 started from the
 *    state mix(seed)).  Greedy and single-candidate steps use their draw
 *    too, so the draw of step c never depends on earlier steps.
 *
 * 1. Penalty.  W = the distinct tokens among the last repeat_last_n tokens
 *    given to sampler_accept.  For t in W (once, however often it occurs):
 *    l'[t] = l[t] > 0 ? l[t] / repeat_penalty : l[t] * repeat_penalty.
 *    Other tokens: l'[i] = l[i].  Off when repeat_penalty == 1 or
 *    repeat_last_n == 0.
 *
 * 2. Order.  NaN counts as -inf and -0 as +0.  Tokens are ordered by l'
 *    descending, then id ascending: a total order, so "sorted" is unique.
 *
 * 3. Greedy (temperature <= 0, or so small that 1.0f / T is inf): the
 *    first token in that order.  Also when the largest l' is +inf or -inf
 *    (no finite distribution exists).
 *
 * 4. Candidates: the first min(top_k, n) tokens in that order (top_k <= 0
 *    or >= n: all n).  m = l' of the first candidate.
 *    Weights at temperature 1: w_i = sampler_exp_neg(m - l'_i) (float).
 *    S = sum of w_i over the candidates, in double.
 *
 * 5. top-p (top_p < 1): keep the shortest prefix whose running double sum
 *    of w (in candidate order) is >= top_p * S (all, if rounding leaves
 *    none).
 *    min-p (min_p > 0): also cut the prefix at the first candidate after
 *    the first with w_i < min_p (i.e. p_i < min_p * p_max).  The two cuts
 *    commute; the result is the shorter prefix.
 *
 * 6. Temperature T: with the float r = 1.0f / T,
 *    v_i = sampler_exp_neg((m - l'_i) * r) (float), V = sum of v_i in
 *    double.
 *
 * 7. Draw: walking the kept candidates in order with a running double sum
 *    C of v_i, the result is the first with C > u * V.  (If rounding leaves
 *    none, the last kept candidate with v_i > 0.)  A token with v_i == 0
 *    can never be drawn.
 *
 * 7'. Without any cut (top_k, top_p and min_p all off) the walk is over
 *    the whole vocabulary in id order instead, so nothing needs sorting:
 *    the ids form blocks of 16 (the last may be shorter); with v_0..v_15
 *    a block's weights in double, s_c = (v_c + v_c+4) + (v_c+8 + v_c+12)
 *    for c = 0..3 and its sum B_b = (s_0 + s_1) + (s_2 + s_3) (a short
 *    last block adds in id order); V = B_0 + B_1 + ... in order.
 *    With C = 0, for each block in order: if C + B_b <= u * V then
 *    C += B_b, else walk its ids with C += v_i and return the first with
 *    C > u * V (carrying C on to the next block if none).
 *
 * The sums S and V are in double in a fixed order (candidate order; for
 * top-p without top-k, S is the sum of per-bucket partial sums), so the
 * results are bit-reproducible on the CPU.  An implementation that sums S
 * in another order can change a decision only when top_p * S lies within
 * double rounding of a boundary (about 1e-16 relative).  The float
 * expressions above must be evaluated without fused multiply-add (x86-64
 * without -mfma does not fuse; on targets that do, build this file with
 * -ffp-contract=off; in CUDA use __fmul_rn/__fadd_rn/__fdiv_rn).  The
 * logits themselves differ between backends, so equal tokens from the CPU
 * and the GPU need equal logits first.
 *
 * Cost: greedy is one pass over the logits; top-k (up to 128) is one pass
 * keeping a heap of k, a larger top-k counts logits in fine buckets and
 * sorts only the buckets it needs; top-p/min-p without top-k read the
 * logits three times and sort only the tokens in the logit buckets that
 * can be kept; no cut at all: three passes, no sort.
 *
 * A sampler has no global state and allocates only in sampler_new; one
 * thread uses a given sampler at a time.
 */
#ifndef ORCD_SAMPLER_H
#define ORCD_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define SAMPLER_TEMPERATURE_MAX 100.0f
#define SAMPLER_REPEAT_LAST_N_MAX (1 << 20)

struct sampler_params {
	float temperature;	/* <= 0: greedy (argmax, ties -> lowest id) */
	int top_k;		/* <= 0: off */
	float top_p;		/* >= 1: off */
	float min_p;		/* <= 0: off */
	float repeat_penalty;	/* 1: off; l > 0 ? l / p : l * p */
	int repeat_last_n;	/* window of accepted tokens; 0: off.  The
				   caller maps llama.cpp's -1 (whole context)
				   to the context length. */
	uint64_t seed;
};

struct sampler;

/* llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1 (off), repeat_last_n 64, seed 0. */
void	sampler_params_default(struct sampler_params *p);

/* 0 when p is usable, else -1 with err naming the field: temperature in
 * [0, SAMPLER_TEMPERATURE_MAX], top_p in (0, 1], min_p in [0, 1),
 * repeat_penalty finite and > 0 (and 1/p finite), repeat_last_n in
 * [0, SAMPLER_REPEAT_LAST_N_MAX].  top_k may be anything (<= 0 is off). */
int	sampler_params_validate(const struct sampler_params *p,
	    struct orcd_err *err);

/* A sampler for a vocabulary of n_vocab tokens; params are copied.  Its
 * scratch memory is sized for the params: a few KB for greedy or
 * top_k <= 128, n_vocab / 2 bytes without any cut, else 16 bytes per
 * vocabulary entry; the penalty adds n_vocab / 8 bytes (and n_vocab * 4
 * where the whole vocabulary is read: no top_k or a larger one). */
struct sampler *sampler_new(const struct sampler_params *p, int n_vocab,
	    struct orcd_err *err);
void	sampler_free(struct sampler *s);

/* Forgets the accepted tokens and restarts the draw counter at 0. */
void	sampler_reset(struct sampler *s);

/* Records a token for the repetition penalty window: the generated ones,
 * and the prompt's too if they should count (llama.cpp's server feeds it
 * the prompt).  Ids outside [0, n_vocab) are ignored; with the penalty off
 * nothing is kept. */
void	sampler_accept(struct sampler *s, int32_t token);

/* The next token for these n_vocab logits (not modified); always a valid
 * id.  Does not call sampler_accept. */
int32_t	sampler_sample(struct sampler *s, const float *logits);

/* True when the token is the plain argmax of the logits (temperature 0 and
 * no repetition penalty), so a backend may pick it on the device; the draw
 * counter then does not advance, which greedy does not depend on. */
bool	sampler_is_greedy(const struct sampler *s);

/* The draw number of step 0 above, exposed for the CUDA backend's tests. */
double	sampler_uniform(uint64_t seed, uint64_t counter);

/*
 * e^-d for d >= 0 (negative d is taken as 0), 0 for d > 87 or NaN, with
 * only float +, -, * and a float to int conversion, so that any IEEE
 * machine computes the same bits (relative error below 3e-7):
 *
 *	k = (int)(d * 1.44269504f + 0.5f)		(truncation)
 *	r = (k * 0.693359375f - d) + k * -2.12194440e-4f	(float)
 *	p = 1/5040; then p = p * r + a for a = 1/720, 1/120, 1/24, 1/6,
 *	    0.5, 1, 1 in that order	(each 1/n rounded to float)
 *	result = p * 2^-k		(exact: builds the float's exponent)
 */
float	sampler_exp_neg(float d);

#endif
