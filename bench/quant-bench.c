/*
 * quant-bench: single-threaded speed of the CPU matmul kernels, per kernel
 * set.  For each weight type and shape it prints the weight-streaming rate
 * of the GEMV (nc = 1) with the weights in cache ("hot", one matrix) and
 * streamed from memory ("cold", a ring of copies larger than the L3), and
 * the GFLOP/s of nc = 128.  Times include quantizing the activation rows,
 * as a forward pass pays for it.  Not run by make check.
 *
 * With QUANT_BENCH_THREADS=N the GEMVs also run on N threads (rows split
 * evenly, a spinning barrier per call), to see the memory-bound rate of a
 * whole machine.
 *
 * usage: quant-bench [isa ...]   (default: every kernel set this CPU has)
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>
#include <time.h>

#include "orcd/dtype.h"
#include "cpu/quant.h"

#define COLD_BYTES ((size_t)256 << 20)

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;

static float
rand_float(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

struct bench_case {
	enum orcd_dtype t;
	int nr;
	int64_t n;
};

static int
cmp_double(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * Seconds per call of quantize(activations) + matmul: the median over
 * 0.4 s of individually timed calls, so that time the machine spends on
 * other work (it shares its cores) only moves a few samples.
 */
static double
time_matmul(enum orcd_dtype t, int64_t n, uint8_t *const *w, int copies,
    size_t ws, int nr, const float *x, uint8_t *a, size_t as, int nc,
    float *out)
{
	const enum orcd_dtype at = quant_vec_dot_type(t);
	enum { MAX_SAMPLES = 100000 };
	static double samples[MAX_SAMPLES];
	const double start = now();
	int ns = 0;

	for (int i = 0; i < copies; i++)
		quant_matmul(t, n, w[i], ws, nr, a, as, nc, out, (size_t)nr);
	do {
		for (int i = 0; i < copies && ns < MAX_SAMPLES; i++) {
			const double t0 = now();

			for (int c = 0; c < nc; c++)
				quant_quantize_row(
				    at, x + (size_t)c * n, a + c * as, n);
			quant_matmul(
			    t, n, w[i], ws, nr, a, as, nc, out, (size_t)nr);
			samples[ns++] = now() - t0;
		}
	} while (now() - start < 0.4 && ns < MAX_SAMPLES);
	qsort(samples, (size_t)ns, sizeof(samples[0]), cmp_double);
	return samples[ns / 2];
}

/* The threaded GEMV: workers spin on a generation counter. */
struct mt {
	enum orcd_dtype t;
	int64_t n;
	uint8_t *const *w;
	int copies;
	size_t ws;
	int nr;
	const uint8_t *a;
	float *out;
	int nthreads;
	atomic_int go;		/* generation to run, -1 to exit */
	atomic_int done;	/* workers finished with the generation */
};

struct mt_arg {
	struct mt *m;
	int id;
	int copy;
};

static void
mt_part(struct mt *m, int id, int copy)
{
	const int per = (m->nr + m->nthreads - 1) / m->nthreads;
	const int r0 = id * per;
	const int nr = m->nr - r0 < per ? m->nr - r0 : per;

	if (nr > 0)
		quant_matmul(m->t, m->n, m->w[copy] + (size_t)r0 * m->ws, m->ws,
		    nr, m->a, 0, 1, m->out + r0, (size_t)m->nr);
}

static int
mt_worker(void *arg)
{
	struct mt_arg *ma = arg;
	struct mt *m = ma->m;
	int seen = 0;

	for (;;) {
		int g;

		while ((g = atomic_load(&m->go)) == seen)
			;
		if (g < 0)
			return 0;
		seen = g;
		mt_part(m, ma->id, g % m->copies);
		atomic_fetch_add(&m->done, 1);
	}
}

/* Seconds per threaded GEMV over the ring of copies (best of 7). */
static double
time_gemv_mt(struct mt *m)
{
	thrd_t th[64];
	struct mt_arg args[64];
	double best = 1e30;
	int gen = 0;

	atomic_store(&m->go, 0);
	for (int i = 1; i < m->nthreads; i++) {
		args[i].m = m;
		args[i].id = i;
		thrd_create(&th[i], mt_worker, &args[i]);
	}
	for (int trial = 0; trial < 7; trial++) {
		const double t0 = now();
		int iters = 0;
		double el;

		do {
			gen++;
			atomic_store(&m->done, 0);
			atomic_store(&m->go, gen);
			mt_part(m, 0, gen % m->copies);
			while (atomic_load(&m->done) != m->nthreads - 1)
				;
			iters++;
			el = now() - t0;
		} while (el < 0.1);
		if (el / iters < best)
			best = el / iters;
	}
	atomic_store(&m->go, -1);
	for (int i = 1; i < m->nthreads; i++)
		thrd_join(th[i], NULL);
	return best;
}

static void
bench_one(const struct bench_case *bc)
{
	const enum orcd_dtype t = bc->t, at = quant_vec_dot_type(t);
	const int64_t n = bc->n;
	const int nr = bc->nr, ncol = 128;
	uint64_t ws, as;
	float *x, *out;
	uint8_t *a, *w[512];
	int copies;

	if (!dtype_row_bytes(t, (uint64_t)n, &ws) ||
	    !dtype_row_bytes(at, (uint64_t)n, &as))
		return;
	const size_t mat = (size_t)ws * nr;
	copies = (int)(COLD_BYTES / mat) + 1;
	if (copies > 512)
		copies = 512;
	x = malloc(sizeof(float) * (size_t)n * (nr > ncol ? nr : ncol));
	a = malloc((size_t)as * ncol);
	out = malloc(sizeof(float) * (size_t)nr * ncol);
	for (size_t i = 0; i < (size_t)n * (nr > ncol ? nr : ncol); i++)
		x[i] = rand_float();
	/* One block for the ring, as a model's weights sit in one mapping. */
	uint8_t *ring = malloc(mat * (size_t)copies);
	for (int i = 0; i < copies; i++)
		w[i] = ring + mat * (size_t)i;
	for (int r = 0; r < nr; r++)
		quant_quantize_row(t, x + (size_t)r * n, w[0] + (size_t)r * ws,
		    n);
	for (int i = 1; i < copies; i++)
		memcpy(w[i], w[0], mat);
	for (int i = 0; i < (nr > ncol ? nr : ncol) * n; i++)
		x[i] = rand_float() * 4.0f;

	const double hot = time_matmul(t, n, w, 1, ws, nr, x, a, as, 1, out);
	const double cold =
	    time_matmul(t, n, w, copies, ws, nr, x, a, as, 1, out);
	const double gemm =
	    time_matmul(t, n, w, 1, ws, nr, x, a, as, ncol, out);

	printf("%-10s %-5s %5dx%-5lld  gemv hot %7.1f us %6.1f GB/s"
	    "  cold %7.1f us %6.1f GB/s  nc=%d %8.0f us %6.1f GFLOP/s",
	    quant_isa(), dtype_name(t), nr, (long long)n, hot * 1e6,
	    (double)mat / hot / 1e9, cold * 1e6, (double)mat / cold / 1e9, ncol,
	    gemm * 1e6, 2.0 * nr * (double)n * ncol / gemm / 1e9);
	const char *th = getenv("QUANT_BENCH_THREADS");
	if (th != NULL && atoi(th) > 1 && atoi(th) <= 64) {
		struct mt m = { .t = t,
			.n = n,
			.w = w,
			.copies = copies,
			.ws = ws,
			.nr = nr,
			.a = a,
			.out = out,
			.nthreads = atoi(th) };

		quant_quantize_row(at, x, a, n);
		const double mt = time_gemv_mt(&m);
		printf("  %d threads cold %7.1f us %6.1f GB/s", m.nthreads,
		    mt * 1e6, (double)mat / mt / 1e9);
	}
	printf("\n");
	fflush(stdout);
	free(ring);
	free(x);
	free(a);
	free(out);
}

int
main(int argc, char **argv)
{
	static const char *const all[] = { "scalar", "avx2", "avx512",
		"avx512vnni" };
	/* Qwen2.5-0.5B shapes: ffn_down (896 x 4864) and ffn_up (4864 x 896);
	 * K-quant rows must be whole super-blocks, so they use 4864 x 1024. */
	static const struct bench_case cases[] = {
		{ ORCD_DTYPE_Q4_K, 896, 4864 }, { ORCD_DTYPE_Q4_K, 4864, 1024 },
		{ ORCD_DTYPE_Q5_0, 896, 4864 }, { ORCD_DTYPE_Q5_0, 4864, 896 },
		{ ORCD_DTYPE_Q8_0, 896, 4864 }, { ORCD_DTYPE_Q8_0, 4864, 896 },
		{ ORCD_DTYPE_Q6_K, 896, 4864 }, { ORCD_DTYPE_Q6_K, 4864, 1024 },
		{ ORCD_DTYPE_F16, 896, 4864 }, { ORCD_DTYPE_F16, 4864, 896 },
		{ ORCD_DTYPE_Q4_0, 896, 4864 }, { ORCD_DTYPE_Q4_1, 896, 4864 },
		{ ORCD_DTYPE_Q5_1, 896, 4864 }, { ORCD_DTYPE_Q5_K, 896, 4864 },
		{ ORCD_DTYPE_BF16, 896, 4864 }, { ORCD_DTYPE_F32, 896, 4864 },
	};
	const char *const *names = argc > 1 ?
	    (const char *const *)argv + 1 : all;
	const int n_names = argc > 1 ? argc - 1 : 4;
	const char *types = getenv("QUANT_BENCH_TYPES");

	for (int k = 0; k < n_names; k++) {
		if (quant_set_isa(names[k]) != 0) {
			printf("%-10s not available on this CPU\n", names[k]);
			continue;
		}
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			if (types != NULL &&
			    strstr(types, dtype_name(cases[i].t)) == NULL)
				continue;
			bench_one(&cases[i]);
		}
	}
	return 0;
}
