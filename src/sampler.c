/*
 * Token sampler (see sampler.h for the exact definition it implements).
 *
 * Candidates are 64-bit keys: the logit mapped to an order-preserving
 * unsigned integer, inverted so that larger logits come first, above the
 * token id.  Ascending key order is then exactly "logit descending, id
 * ascending", and every sort and heap compares plain integers.
 *
 * Three paths, chosen from the params:
 * - greedy and top-k: one pass over the logits with a heap of k keys; the
 *   penalized tokens are skipped in the pass and offered afterwards with
 *   their penalized logits, so the logits are never copied;
 * - top-p and/or min-p without top-k: the logits are bucketed by their
 *   distance to the maximum; the bucket masses say which buckets can be
 *   kept, and only those tokens are gathered and sorted;
 * - plain temperature sampling over the whole vocabulary: the draw walks
 *   the tokens in id order by block sums; nothing is sorted.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

/* The float arithmetic must not be fused into multiply-adds (sampler.h).
 * clang honours the standard pragma; GCC has no equivalent, so where FMA
 * is enabled (-mfma, -march=native, arm64) build with -ffp-contract=off. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* Buckets over d = distance to the max logit (in nats, after temperature
 * where it applies): BUCKET_SCALE per nat up to BUCKET_RANGE, the last one
 * takes the rest (and -inf, NaN). */
#define BUCKET_SCALE 4
#define BUCKET_RANGE 32
#define N_BUCKETS (BUCKET_SCALE * BUCKET_RANGE + 1)
/* Finer buckets, only counted, to find a large top_k's threshold. */
#define COUNT_SCALE 32
#define N_COUNT_BUCKETS (COUNT_SCALE * BUCKET_RANGE + 1)
#define N_LANES 16		/* independent partial sums per bucket */
#define HEAP_K_MAX 128		/* larger top_k: by count buckets */
#define BLOCK 16		/* tokens per step of the vocabulary passes */

struct sampler {
	struct sampler_params params;
	int n_vocab;
	uint64_t counter;	/* draws since new/reset */

	int32_t *history;	/* ring of the last repeat_last_n tokens */
	int history_len;	/* valid entries */
	int history_pos;	/* next slot to write */
	uint64_t *pen_mask;	/* bitmap: penalized in this step */
	int32_t *pen_ids;	/* distinct penalized tokens in this step */
	int n_pen;

	uint64_t *keys;		/* candidates */
	uint64_t *scratch;	/* radix sort buffer, then weights */
	int keys_cap;
	float *penalized;	/* penalized logits (bucket paths) */
};

void
sampler_params_default(struct sampler_params *p)
{
	p->temperature = 0.8f;
	p->top_k = 40;
	p->top_p = 0.95f;
	p->min_p = 0.05f;
	p->repeat_penalty = 1.0f;
	p->repeat_last_n = 64;
	p->seed = 0;
}

int
sampler_params_validate(const struct sampler_params *p, struct orcd_err *err)
{
	if (!isfinite(p->temperature) || p->temperature < 0 ||
	    p->temperature > SAMPLER_TEMPERATURE_MAX)
		return orcd_errf(err, "sampler: temperature %g is not in "
		    "[0, %g] (0 is greedy)", (double)p->temperature,
		    (double)SAMPLER_TEMPERATURE_MAX);
	if (!(p->top_p > 0 && p->top_p <= 1))
		return orcd_errf(err, "sampler: top_p %g is not in (0, 1] "
		    "(1 is off)", (double)p->top_p);
	if (!(p->min_p >= 0 && p->min_p < 1))
		return orcd_errf(err, "sampler: min_p %g is not in [0, 1) "
		    "(0 is off)", (double)p->min_p);
	if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0 ||
	    !isfinite(1.0f / p->repeat_penalty))
		return orcd_errf(err, "sampler: repeat_penalty %g must be "
		    "finite and > 0 (1 is off)", (double)p->repeat_penalty);
	if (p->repeat_last_n < 0 ||
	    p->repeat_last_n > SAMPLER_REPEAT_LAST_N_MAX)
		return orcd_errf(err, "sampler: repeat_last_n %d is not in "
		    "[0, %d] (0 is off)", p->repeat_last_n,
		    SAMPLER_REPEAT_LAST_N_MAX);
	return 0;
}

static int
penalty_on(const struct sampler_params *p)
{
	return p->repeat_penalty != 1.0f && p->repeat_last_n > 0;
}

/* top_k as a candidate count, or 0 when it does not cut anything. */
bool
sampler_is_greedy(const struct sampler *s)
{
	return s->params.temperature <= 0 && !penalty_on(&s->params);
}

static int
top_k_count(const struct sampler_params *p, int n_vocab)
{
	return p->top_k > 0 && p->top_k < n_vocab ? p->top_k : 0;
}

struct sampler *
sampler_new(const struct sampler_params *p, int n_vocab, struct orcd_err *err)
{
	struct sampler *s;
	size_t n_keys, n_scratch;
	int k, whole;

	if (sampler_params_validate(p, err) != 0)
		return NULL;
	if (n_vocab <= 0) {
		orcd_errf(err, "sampler: n_vocab %d must be > 0", n_vocab);
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		orcd_errf(err, "sampler: out of memory");
		return NULL;
	}
	s->params = *p;
	s->n_vocab = n_vocab;

	if (penalty_on(p)) {
		s->history = calloc(p->repeat_last_n, sizeof(*s->history));
		s->pen_ids = calloc(p->repeat_last_n, sizeof(*s->pen_ids));
		s->pen_mask = calloc(n_vocab / 64 + 1, sizeof(*s->pen_mask));
		if (s->history == NULL || s->pen_ids == NULL ||
		    s->pen_mask == NULL)
			goto fail;
	}

	/* Scratch as large as the path these params take needs. */
	k = top_k_count(p, n_vocab);
	n_keys = n_scratch = n_vocab;
	whole = 1;		/* a path that reads a penalized copy */
	if (p->temperature <= 0 || isinf(1.0f / p->temperature)) {
		n_keys = n_scratch = 1;
		whole = 0;
	} else if (k > 0 && k <= HEAP_K_MAX) {
		n_keys = n_scratch = k;
		whole = 0;
	} else if (k == 0 && p->top_p >= 1.0f && p->min_p <= 0) {
		n_keys = 1;		/* no cut: block sums only */
		n_scratch = n_vocab / BLOCK + 1;
	}
	if (whole && penalty_on(p)) {
		s->penalized = malloc(n_vocab * sizeof(*s->penalized));
		if (s->penalized == NULL)
			goto fail;
	}
	s->keys = malloc(n_keys * sizeof(*s->keys));
	s->scratch = malloc(n_scratch * sizeof(*s->scratch));
	if (s->keys == NULL || s->scratch == NULL)
		goto fail;
	return s;

fail:
	orcd_errf(err, "sampler: out of memory for %d tokens", n_vocab);
	sampler_free(s);
	return NULL;
}

void
sampler_free(struct sampler *s)
{
	if (s == NULL)
		return;
	free(s->history);
	free(s->pen_ids);
	free(s->pen_mask);
	free(s->keys);
	free(s->scratch);
	free(s->penalized);
	free(s);
}

void
sampler_reset(struct sampler *s)
{
	s->counter = 0;
	s->history_len = 0;
	s->history_pos = 0;
}

void
sampler_accept(struct sampler *s, int32_t token)
{
	if (s->history == NULL || token < 0 || token >= s->n_vocab)
		return;
	s->history[s->history_pos] = token;
	if (++s->history_pos == s->params.repeat_last_n)
		s->history_pos = 0;
	if (s->history_len < s->params.repeat_last_n)
		s->history_len++;
}

/* ---- the defined arithmetic (sampler.h) ---- */

static uint64_t
splitmix64_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double
sampler_uniform(uint64_t seed, uint64_t counter)
{
	uint64_t z;

	z = splitmix64_mix(splitmix64_mix(seed) +
	    (counter + 1) * 0x9e3779b97f4a7c15ULL);
	return (double)(z >> 11) * 0x1p-53;
}

/*
 * The same computation on a scalar and on vectors of 4 floats (GCC vector
 * extensions: SSE2 on x86-64, NEON on arm64, plain code elsewhere).  The
 * vector version is written out because the compiler keeps the scalar one
 * branchy under -ftrapping-math; both do the same IEEE operations in the
 * same order, so they give the same bits.
 */
typedef float vec_f __attribute__((vector_size(16)));
typedef int32_t vec_i __attribute__((vector_size(16)));
#define VEC_LEN 4

static inline vec_f
vec_select(vec_i mask, vec_f a, vec_f b)
{
	return (vec_f)((mask & (vec_i)a) | (~mask & (vec_i)b));
}

static inline float
exp_neg(float d)
{
	union { float f; uint32_t u; } scale;
	float x, r, p;
	int ok, k;

	/* NaN, +inf and d > 87 give 0; e^-87 is still a normal float. */
	ok = d <= 87.0f;
	x = d > 0.0f ? d : 0.0f;
	x = ok ? x : 0.0f;
	/* e^-x = 2^-k * e^r with r = k ln2 - x in about [-0.347, 0.347];
	 * ln2 split in two so that k * hi is exact. */
	k = (int)(x * 1.44269504f + 0.5f);
	r = ((float)k * 0.693359375f - x) + (float)k * -2.12194440e-4f;
	p = 1.0f / 5040;
	p = p * r + 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	scale.u = (uint32_t)(127 - k) << 23;
	return ok ? p * scale.f : 0.0f;
}

static inline vec_f
exp_neg_vec(vec_f d)
{
	const vec_f zero = { 0 };
	vec_f x, r, p, kf;
	vec_i ok, k;

	ok = d <= 87.0f;
	x = vec_select(d > 0.0f, d, zero);
	x = vec_select(ok, x, zero);
	k = __builtin_convertvector(x * 1.44269504f + 0.5f, vec_i);
	kf = __builtin_convertvector(k, vec_f);
	r = (kf * 0.693359375f - x) + kf * -2.12194440e-4f;
	p = zero + 1.0f / 5040;
	p = p * r + 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	return vec_select(ok, p * (vec_f)((127 - k) << 23), zero);
}

float
sampler_exp_neg(float d)
{
	return exp_neg(d);
}

/* ---- keys ---- */

static uint64_t
key_make(float logit, int32_t id)
{
	union { float f; uint32_t u; } v;
	uint32_t ord;

	/* NaN sorts as -inf, -0 as +0 (adding +0 turns -0 into +0). */
	v.f = logit != logit ? -INFINITY : logit + 0.0f;
	/* Order-preserving map to unsigned, then inverted: descending. */
	ord = (v.u & 0x80000000u) ? ~v.u : (v.u | 0x80000000u);
	return (uint64_t)~ord << 32 | (uint32_t)id;
}

static float
key_logit(uint64_t key)
{
	union { float f; uint32_t u; } v;
	uint32_t ord;

	ord = ~(uint32_t)(key >> 32);
	v.u = (ord & 0x80000000u) ? (ord & 0x7fffffffu) : ~ord;
	return v.f;
}

static int32_t
key_id(uint64_t key)
{
	return (int32_t)(uint32_t)key;
}

/* Sorts ascending; tmp holds n keys.  Keys are unique (the id), so any
 * correct sort gives the same result. */
static void
keys_sort(uint64_t *a, uint64_t *tmp, int n)
{
	uint32_t hist[8][256], off;
	uint64_t *src = a, *dst = tmp, *t;
	int i, j, digit, shift;

	if (n < 64) {
		for (i = 1; i < n; i++) {
			uint64_t x = a[i];

			for (j = i; j > 0 && a[j - 1] > x; j--)
				a[j] = a[j - 1];
			a[j] = x;
		}
		return;
	}
	/* LSD radix sort, one byte at a time, skipping bytes all keys share
	 * (the id's high bytes, the logit's exponent within a bucket). */
	memset(hist, 0, sizeof(hist));
	for (i = 0; i < n; i++)
		for (digit = 0; digit < 8; digit++)
			hist[digit][(a[i] >> (digit * 8)) & 0xff]++;
	for (digit = 0; digit < 8; digit++) {
		shift = digit * 8;
		if (hist[digit][(a[0] >> shift) & 0xff] == (uint32_t)n)
			continue;
		off = 0;
		for (j = 0; j < 256; j++) {
			uint32_t c = hist[digit][j];

			hist[digit][j] = off;
			off += c;
		}
		for (i = 0; i < n; i++)
			dst[hist[digit][(src[i] >> shift) & 0xff]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
	if (src != a)
		memcpy(a, src, n * sizeof(*a));
}

/* Max-heap of keys: the root is the worst candidate kept. */
static void
heap_sift_down(uint64_t *h, int n, int i)
{
	uint64_t x = h[i];
	int c;

	while ((c = 2 * i + 1) < n) {
		if (c + 1 < n && h[c + 1] > h[c])
			c++;
		if (h[c] <= x)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

static void
heap_push(uint64_t *h, int *n, uint64_t x)
{
	int i = (*n)++, parent;

	while (i > 0 && h[parent = (i - 1) / 2] < x) {
		h[i] = h[parent];
		i = parent;
	}
	h[i] = x;
}

/* Heap to ascending order, in place. */
static void
heap_sort(uint64_t *h, int n)
{
	uint64_t t;

	while (n > 1) {
		t = h[0];
		h[0] = h[--n];
		h[n] = t;
		heap_sift_down(h, n, 0);
	}
}

/* ---- penalty ---- */

static float
penalize(float logit, float penalty)
{
	return logit > 0 ? logit / penalty : logit * penalty;
}

static int
is_penalized(const struct sampler *s, int i)
{
	return (s->pen_mask[i >> 6] >> (i & 63)) & 1;
}

/* Marks the distinct tokens of the window for this step. */
static void
penalty_mark(struct sampler *s)
{
	int i, t;

	s->n_pen = 0;
	for (i = 0; i < s->history_len; i++) {
		t = s->history[i];
		if (!is_penalized(s, t)) {
			s->pen_mask[t >> 6] |= 1ULL << (t & 63);
			s->pen_ids[s->n_pen++] = t;
		}
	}
}

static void
penalty_unmark(struct sampler *s)
{
	int i, t;

	for (i = 0; i < s->n_pen; i++) {
		t = s->pen_ids[i];
		s->pen_mask[t >> 6] &= ~(1ULL << (t & 63));
	}
	s->n_pen = 0;
}

/* The logits the bucket paths read: a penalized copy when needed. */
static const float *
penalty_view(struct sampler *s, const float *logits)
{
	int i, t;

	if (s->n_pen == 0)
		return logits;
	memcpy(s->penalized, logits, s->n_vocab * sizeof(*logits));
	for (i = 0; i < s->n_pen; i++) {
		t = s->pen_ids[i];
		s->penalized[t] = penalize(logits[t], s->params.repeat_penalty);
	}
	return s->penalized;
}

/* ---- selection ---- */

/*
 * The passes over the vocabulary work in blocks of BLOCK tokens with
 * fixed-length inner loops on vectors; a block is looked at token by token
 * only when one of its tokens matters.  Every operation is elementwise, so
 * the results are the same bits as a plain loop.
 */

static void
heap_offer(uint64_t *heap, int *n, int k, uint64_t key)
{
	if (*n < k)
		heap_push(heap, n, key);
	else if (key < heap[0]) {
		heap[0] = key;
		heap_sift_down(heap, *n, 0);
	}
}

/* The k best (penalized) candidates as a heap; returns their count. */
static int
select_top_k(struct sampler *s, const float *logits, int k, uint64_t *heap)
{
	const int n_vocab = s->n_vocab;
	const int pen = s->n_pen > 0;
	float threshold, v;
	int n = 0, i, j, hit;

	for (i = 0; i < n_vocab && n < k; i++)
		if (!pen || !is_penalized(s, i))
			heap_push(heap, &n, key_make(logits[i], i));
	/* Later ids lose ties, so a strict compare against the worst kept
	 * logit is the whole test; NaN never passes it. */
	threshold = n > 0 ? key_logit(heap[0]) : -INFINITY;
	for (; i < n_vocab; i++) {
		if (i % BLOCK == 0 && i + BLOCK <= n_vocab) {
			hit = 0;
			for (j = 0; j < BLOCK; j++)
				hit |= logits[i + j] > threshold;
			if (!hit) {
				i += BLOCK - 1;
				continue;
			}
		}
		v = logits[i];
		if (v > threshold && (!pen || !is_penalized(s, i))) {
			heap[0] = key_make(v, i);
			heap_sift_down(heap, n, 0);
			threshold = key_logit(heap[0]);
		}
	}
	for (j = 0; j < s->n_pen; j++) {
		i = s->pen_ids[j];
		heap_offer(heap, &n, k, key_make(penalize(logits[i],
		    s->params.repeat_penalty), i));
	}
	return n;
}

/* The largest logit and the first id having it (NaN as -inf). */
static float
logits_max(const float *l, int n, int32_t *id)
{
	vec_f mx[BLOCK / VEC_LEN], v;
	vec_i ix[BLOCK / VEC_LEN], gt, at;
	float m = -INFINITY;
	int i, j, c;

	/* Per column of the blocks: the first maximum in that column. */
	for (j = 0; j < BLOCK / VEC_LEN; j++) {
		for (c = 0; c < VEC_LEN; c++) {
			mx[j][c] = -INFINITY;
			ix[j][c] = 0;
		}
	}
	for (i = 0; i + BLOCK <= n; i += BLOCK) {
		for (j = 0; j < BLOCK / VEC_LEN; j++) {
			memcpy(&v, l + i + j * VEC_LEN, sizeof(v));
			gt = v > mx[j];
			at = (vec_i){ 0, 1, 2, 3 } + (i + j * VEC_LEN);
			mx[j] = vec_select(gt, v, mx[j]);
			ix[j] = (gt & at) | (~gt & ix[j]);
		}
	}
	*id = 0;
	for (j = 0; j < BLOCK / VEC_LEN; j++) {
		for (c = 0; c < VEC_LEN; c++) {
			if (mx[j][c] > m || (mx[j][c] == m && ix[j][c] < *id)) {
				m = mx[j][c];
				*id = ix[j][c];
			}
		}
	}
	/* The rest has higher ids: only a larger logit wins. */
	for (; i < n; i++) {
		if (l[i] > m) {
			m = l[i];
			*id = i;
		}
	}
	return m;
}

/* Bucket of d >= 0 with scale buckets per nat (a power of 2, so exact);
 * NaN goes last.  The clamp comes first so that no branch is needed. */
static inline int
bucket_of_scaled(float d, float scale)
{
	d = d < (float)BUCKET_RANGE ? d : (float)BUCKET_RANGE;
	return (int)(d * scale);
}

static inline vec_i
bucket_of_vec(vec_f d, float scale)
{
	const vec_f range = { 0 };

	d = vec_select(d < (float)BUCKET_RANGE, d, range + BUCKET_RANGE);
	return __builtin_convertvector(d * scale, vec_i);
}

static inline int
bucket_of(float d)
{
	return bucket_of_scaled(d, BUCKET_SCALE);
}

/* d = (m - l[i]) * inv_temp for the BLOCK tokens from l. */
static inline void
block_distances(const float *l, float m, float inv_temp, vec_f d[])
{
	vec_f v;
	int j;

	for (j = 0; j < BLOCK / VEC_LEN; j++) {
		memcpy(&v, l + j * VEC_LEN, sizeof(v));
		d[j] = (m - v) * inv_temp;
	}
}

/* Appends the tokens whose bucket of d = (m - l) * inv_temp is in
 * [lo, hi]; returns the new count. */
static int
gather_scaled(struct sampler *s, const float *l, float m, float inv_temp,
    float scale, int lo, int hi, int n)
{
	const int n_vocab = s->n_vocab;
	vec_f d[BLOCK / VEC_LEN];
	vec_i in[BLOCK / VEC_LEN], b, any = { 0 };
	int i, j, hit;

	for (i = 0; i + BLOCK <= n_vocab; i += BLOCK) {
		block_distances(l + i, m, inv_temp, d);
		for (j = 0; j < BLOCK / VEC_LEN; j++) {
			b = bucket_of_vec(d[j], scale);
			in[j] = (b >= lo) & (b <= hi);
			any = j == 0 ? in[j] : any | in[j];
		}
		hit = 0;
		for (j = 0; j < VEC_LEN; j++)
			hit |= any[j];
		if (!hit)
			continue;
		for (j = 0; j < BLOCK; j++)
			if (in[j / VEC_LEN][j % VEC_LEN])
				s->keys[n++] = key_make(l[i + j], i + j);
	}
	for (; i < n_vocab; i++) {
		j = bucket_of_scaled((m - l[i]) * inv_temp, scale);
		if (j >= lo && j <= hi)
			s->keys[n++] = key_make(l[i], i);
	}
	return n;
}

static int
gather_buckets(struct sampler *s, const float *l, float m, float inv_temp,
    int lo, int hi, int n)
{
	return gather_scaled(s, l, m, inv_temp, BUCKET_SCALE, lo, hi, n);
}

/* The k best of the (penalized) logits l with maximum m, sorted, at the
 * start of keys: the fine buckets that hold them are gathered and sorted.
 * Returns k. */
static int
select_top_k_buckets(struct sampler *s, const float *l, float m, int k)
{
	uint32_t count[VEC_LEN][N_COUNT_BUCKETS];
	vec_f d[BLOCK / VEC_LEN];
	vec_i b;
	int i, j, c, n, have;

	memset(count, 0, sizeof(count));
	for (i = 0; i + BLOCK <= s->n_vocab; i += BLOCK) {
		block_distances(l + i, m, 1.0f, d);
		for (j = 0; j < BLOCK / VEC_LEN; j++) {
			b = bucket_of_vec(d[j], COUNT_SCALE);
			for (c = 0; c < VEC_LEN; c++)
				count[c][b[c]]++;
		}
	}
	for (; i < s->n_vocab; i++)
		count[0][bucket_of_scaled(m - l[i], COUNT_SCALE)]++;
	have = 0;
	for (j = 0; j < N_COUNT_BUCKETS - 1; j++) {
		for (c = 0; c < VEC_LEN; c++)
			have += count[c][j];
		if (have >= k)
			break;
	}
	n = gather_scaled(s, l, m, 1.0f, COUNT_SCALE, 0, j, 0);
	keys_sort(s->keys, s->scratch, n);
	return k;
}

/*
 * Per bucket masses of e^-((m - l) * inv_temp); returns their sum.  Token i
 * adds into lane i % 16 of its bucket, in id order; a bucket's mass is the
 * pairwise sum ((lane0 + lane1) + (lane2 + lane3)) + ... of its 16 lanes;
 * the total adds the buckets in order.  The lanes keep consecutive
 * additions independent.
 */
static double
bucket_masses(const float *l, int n, float m, float inv_temp,
    double mass[N_BUCKETS])
{
	double lane[N_LANES][N_BUCKETS], sum = 0;
	vec_f d[BLOCK / VEC_LEN], w[BLOCK / VEC_LEN];
	vec_i b[BLOCK / VEC_LEN];
	float dd;
	int i, j;

	memset(lane, 0, sizeof(lane));
	for (i = 0; i + BLOCK <= n; i += BLOCK) {
		block_distances(l + i, m, inv_temp, d);
		for (j = 0; j < BLOCK / VEC_LEN; j++) {
			w[j] = exp_neg_vec(d[j]);
			b[j] = bucket_of_vec(d[j], BUCKET_SCALE);
		}
		for (j = 0; j < BLOCK; j++)
			lane[j % N_LANES][b[j / VEC_LEN][j % VEC_LEN]] +=
			    w[j / VEC_LEN][j % VEC_LEN];
	}
	for (; i < n; i++) {
		dd = (m - l[i]) * inv_temp;
		lane[i % N_LANES][bucket_of(dd)] += exp_neg(dd);
	}
	for (j = 0; j < N_BUCKETS; j++) {
		double t[N_LANES];
		int c, width;

		for (c = 0; c < N_LANES; c++)
			t[c] = lane[c][j];
		for (width = 1; width < N_LANES; width *= 2)
			for (c = 0; c < N_LANES; c += 2 * width)
				t[c] += t[c + width];
		mass[j] = t[0];
		sum += mass[j];
	}
	return sum;
}

/* ---- truncation and draw over sorted candidates ---- */

/* w[i] = e^-((m - logit_i) * inv_temp) for n sorted keys. */
static void
key_weights(const uint64_t *keys, int n, float m, float inv_temp, float *w)
{
	float d[VEC_LEN];
	vec_f v;
	int i, j;

	for (i = 0; i + VEC_LEN <= n; i += VEC_LEN) {
		for (j = 0; j < VEC_LEN; j++)
			d[j] = (m - key_logit(keys[i + j])) * inv_temp;
		memcpy(&v, d, sizeof(v));
		v = exp_neg_vec(v);
		memcpy(w + i, &v, sizeof(v));
	}
	for (; i < n; i++)
		w[i] = exp_neg((m - key_logit(keys[i])) * inv_temp);
}

/* How many of the n sorted keys top-p and min-p keep, given the total
 * weight S of all candidates (these n, or the whole vocabulary); *reached
 * says whether a cut was found.  Uses the scratch for the weights. */
static int
cut_sorted(struct sampler *s, const uint64_t *keys, int n, double S,
    int *reached)
{
	const float min_p = s->params.min_p;
	const int top_p_on = s->params.top_p < 1.0f;
	const double target = (double)s->params.top_p * S;
	const float m = key_logit(keys[0]);
	float *w = (float *)s->scratch;
	double c = 0;
	int i, done;

	*reached = 1;
	/* Weights a block ahead: the cut usually comes early. */
	for (done = 0; done < n; done += BLOCK * 8) {
		key_weights(keys + done, n - done < BLOCK * 8 ? n - done :
		    BLOCK * 8, m, 1.0f, w + done);
		for (i = done; i < n && i < done + BLOCK * 8; i++) {
			if (min_p > 0 && i > 0 && w[i] < min_p)
				return i;
			c += w[i];
			if (top_p_on && c >= target)
				return i + 1;
		}
	}
	*reached = 0;
	return n;
}

static int32_t
draw_sorted(struct sampler *s, const uint64_t *keys, int n, double u)
{
	const float inv_temp = 1.0f / s->params.temperature;
	float *v = (float *)s->scratch;
	double V = 0, t, c = 0;
	int i, last = 0;

	if (n == 1)
		return key_id(keys[0]);
	key_weights(keys, n, key_logit(keys[0]), inv_temp, v);
	for (i = 0; i < n; i++)
		V += v[i];
	t = u * V;
	for (i = 0; i < n; i++) {
		if (v[i] > 0)
			last = i;
		c += v[i];
		if (c > t)
			return key_id(keys[i]);
	}
	return key_id(keys[last]);
}

/* ---- the paths ---- */

static int32_t
sample_top_k(struct sampler *s, const float *logits, int k, double u)
{
	double S = 0;
	int n, reached;
	float m;

	if (k <= HEAP_K_MAX) {
		n = select_top_k(s, logits, k, s->keys);
		heap_sort(s->keys, n);
		m = key_logit(s->keys[0]);
		if (!isfinite(m) || k == 1)
			return key_id(s->keys[0]);
	} else {
		const float *l = penalty_view(s, logits);
		int32_t id;

		m = logits_max(l, s->n_vocab, &id);
		if (!isfinite(m))
			return id;
		n = select_top_k_buckets(s, l, m, k);
	}
	if (s->params.top_p < 1.0f || s->params.min_p > 0) {
		if (s->params.top_p < 1.0f) {
			float *w = (float *)s->scratch;

			key_weights(s->keys, n, m, 1.0f, w);
			for (int i = 0; i < n; i++)
				S += w[i];
		}
		n = cut_sorted(s, s->keys, n, S, &reached);
	}
	return draw_sorted(s, s->keys, n, u);
}

/* top-p and/or min-p over the whole vocabulary. */
static int32_t
sample_nucleus(struct sampler *s, const float *l, double u)
{
	double mass[N_BUCKETS], S = 0, target, cum;
	int32_t id;
	int b, last, n, kept, reached, min_p_bound = 0;
	float m, bound;

	m = logits_max(l, s->n_vocab, &id);
	if (!isfinite(m))
		return id;
	/* The last bucket that can hold a kept token, with one bucket (or a
	 * small margin) to spare for rounding; the walk below decides. */
	last = N_BUCKETS - 1;
	if (s->params.top_p < 1.0f) {
		S = bucket_masses(l, s->n_vocab, m, 1.0f, mass);
		target = (double)s->params.top_p * S;
		cum = 0;
		for (b = 0; b < N_BUCKETS - 1; b++) {
			cum += mass[b];
			if (cum >= target)
				break;
		}
		last = b + 1 < N_BUCKETS ? b + 1 : N_BUCKETS - 1;
	}
	if (s->params.min_p > 0) {
		/* w < min_p exactly when d > -ln(min_p); logf's rounding is
		 * far inside the margin. */
		bound = -logf(s->params.min_p) * 1.001f + 0.01f;
		b = bucket_of(bound);
		if (b <= last) {
			last = b;
			min_p_bound = 1;
		}
	}
	n = gather_buckets(s, l, m, 1.0f, 0, last, 0);
	keys_sort(s->keys, s->scratch, n);
	kept = cut_sorted(s, s->keys, n, S, &reached);
	if (!reached && !min_p_bound && last < N_BUCKETS - 1) {
		/* Everything past a min-p bound fails min-p, so only top-p
		 * gets here: rounding put its cut past the buckets gathered.
		 * The rest sorts after them, so it is sorted on its own and
		 * appended. */
		int more = gather_buckets(s, l, m, 1.0f, last + 1,
		    N_BUCKETS - 1, n);

		keys_sort(s->keys + n, s->scratch, more - n);
		kept = cut_sorted(s, s->keys, more, S, &reached);
	}
	return draw_sorted(s, s->keys, kept, u);
}

/* The sum of BLOCK (16) weights in double: s_c = (w_c + w_c+4) +
 * (w_c+8 + w_c+12) for c = 0..3, then (s_0 + s_1) + (s_2 + s_3). */
static double
block_sum(const float *w)
{
	double t[4];
	int c;

	for (c = 0; c < 4; c++)
		t[c] = ((double)w[c] + (double)w[c + 4]) +
		    ((double)w[c + 8] + (double)w[c + 12]);
	return (t[0] + t[1]) + (t[2] + t[3]);
}

/*
 * Temperature only: no cut, so the draw walks the vocabulary in id order
 * (sampler.h) and nothing is sorted.  Block sums find the block where the
 * running sum passes u * V; only that block is walked token by token.
 */
static int32_t
sample_full(struct sampler *s, const float *l, double u)
{
	const float inv_temp = 1.0f / s->params.temperature;
	const int n = s->n_vocab;
	double *sums = (double *)s->scratch, V = 0, t, c = 0;
	vec_f d[BLOCK / VEC_LEN], w[BLOCK / VEC_LEN];
	int32_t id, last;
	int i, j, b, n_blocks = 0;
	float m, v, wf[BLOCK];

	m = logits_max(l, n, &id);
	if (!isfinite(m))
		return id;
	for (i = 0; i < n; i += BLOCK) {
		if (i + BLOCK <= n) {
			block_distances(l + i, m, inv_temp, d);
			for (j = 0; j < BLOCK / VEC_LEN; j++)
				w[j] = exp_neg_vec(d[j]);
			memcpy(wf, w, sizeof(wf));
			sums[n_blocks] = block_sum(wf);
		} else {
			sums[n_blocks] = 0;
			for (j = i; j < n; j++)
				sums[n_blocks] +=
				    exp_neg((m - l[j]) * inv_temp);
		}
		V += sums[n_blocks++];
	}
	t = u * V;
	last = id;
	for (b = 0; b < n_blocks; b++) {
		if (c + sums[b] <= t) {
			c += sums[b];
			continue;
		}
		for (i = b * BLOCK; i < n && i < (b + 1) * BLOCK; i++) {
			v = exp_neg((m - l[i]) * inv_temp);
			if (v > 0)
				last = i;
			c += v;
			if (c > t)
				return i;
		}
		/* The block sum was added pairwise, the walk in order: when
		 * rounding leaves the walk short, go on to the next block. */
	}
	return last;
}

int32_t
sampler_sample(struct sampler *s, const float *logits)
{
	const struct sampler_params *p = &s->params;
	double u;
	int32_t token;
	int k;

	u = sampler_uniform(p->seed, s->counter++);
	if (s->history_len > 0 && penalty_on(p))
		penalty_mark(s);

	k = top_k_count(p, s->n_vocab);
	if (p->temperature <= 0 || isinf(1.0f / p->temperature))
		token = sample_top_k(s, logits, 1, u);
	else if (k > 0)
		token = sample_top_k(s, logits, k, u);
	else if (p->top_p < 1.0f || p->min_p > 0)
		token = sample_nucleus(s, penalty_view(s, logits), u);
	else
		token = sample_full(s, penalty_view(s, logits), u);

	penalty_unmark(s);
	return token;
}
