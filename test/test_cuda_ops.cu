/*
 * The CUDA kernels (include/orcd/cuda_ops.h) against the CPU engine: every
 * kernel and weight type on fresh random inputs each run (the seed is
 * printed; ORCD_TEST_SEED=n repeats a run), outputs poisoned first so an
 * unwritten element shows, padding around outputs checked untouched.
 *
 * References: quant_quantize_row, quant_matmul and quant_dequantize_row
 * from the CPU library, and re-implementations of forward.c's RMSNorm,
 * RoPE, attention and SwiGLU written here with the same rounding points.
 * Tolerances: conversions, dequantization, residual add: bit-identical;
 * matmul: 1e-5 of (|ref| + rms(ref)) (the same integer block dots, only
 * the float sums over blocks in another order); RMSNorm and RoPE: within
 * 2 ulp (double sums / cos and sin may round differently in rare cases);
 * f16 KV cache: within 1 f16 ulp; attention: 1e-3 of the head's largest
 * sum_j p_j |v_j[d]| (summation order; a probability whose f16 rounding
 * flips moves the output by 2^-11 of its term); SwiGLU: within 4 ulp
 * (glibc's expf is not correctly rounded everywhere).
 *
 * Then timings (cudaEvent, median of 20 after warm-up): the decode GEMV in
 * GB/s of weights, per call inside a CUDA graph and as a plain launch.
 *
 * Prints one PASS/FAIL line per check and `cuda ops: N passed, M failed`;
 * exits 0 if all passed, 1 if not, 77 without a CUDA device.
 */
#include <cuda_runtime.h>

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vector>

extern "C" {
#include "cpu/quant.h"
}
#include "orcd/cuda_ops.h"
#include "orcd/dtype.h"

/* ------------------------------------------------------------ reporting */

static int n_pass, n_fail;

static void __attribute__((format(printf, 2, 3)))
report(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s  ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (ok)
		n_pass++;
	else
		n_fail++;
}

/* A CUDA call that must succeed; on failure the check fails and the
 * current test function returns. */
#define CK(call)							\
	do {								\
		cudaError_t ck_e_ = (cudaError_t)(call);		\
		if (ck_e_ != cudaSuccess) {				\
			report(false, "%s:%d %s: %s", __FILE__, __LINE__,	\
			    #call, cudaGetErrorString(ck_e_));		\
			(void)cudaGetLastError();			\
			return;						\
		}							\
	} while (0)

/* ------------------------------------------------------------- random */

static uint64_t rng_state;

static uint64_t
rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double
rng_unit(void)
{
	return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static int
rng_int(int n)
{
	return (int)(rng_next() % (uint64_t)n);
}

/* Uniform in (-1, 1), never 0. */
static float
rng_sym(void)
{
	float v = (float)(2.0 * rng_unit() - 1.0);

	return v != 0.0f ? v : 0.5f;
}

static float
rng_gauss(void)
{
	const double r = sqrt(-2.0 * log(rng_unit()));
	float v = (float)(r * cos(6.283185307179586 * rng_unit()));

	return v != 0.0f ? v : 1e-3f;
}

static void
fill_gauss(float *x, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = rng_gauss() * scale;
}

/* --------------------------------------------------------- device memory */

/* Device buffers of one test, freed together. */
struct dev_pool {
	std::vector<void *> bufs;

	~dev_pool()
	{
		for (void *p : bufs)
			cudaFree(p);
	}
	void *
	get(size_t n)
	{
		void *p = NULL;

		if (cudaMalloc(&p, n != 0 ? n : 16) != cudaSuccess) {
			fprintf(stderr, "cudaMalloc(%zu) failed\n", n);
			exit(1);
		}
		bufs.push_back(p);
		return p;
	}
	template <typename T>
	T *
	up(const std::vector<T> &v)
	{
		T *p = (T *)get(v.size() * sizeof(T));

		if (cudaMemcpy(p, v.data(), v.size() * sizeof(T),
		    cudaMemcpyHostToDevice) != cudaSuccess) {
			fprintf(stderr, "upload failed\n");
			exit(1);
		}
		return p;
	}
};

template <typename T>
static cudaError_t
down(std::vector<T> &v, const void *d)
{
	return cudaMemcpy(v.data(), d, v.size() * sizeof(T),
	    cudaMemcpyDeviceToHost);
}

static uint32_t
fbits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

/* Distance in units in the last place (same sign assumed). */
static uint32_t
ulps(float a, float b)
{
	const uint32_t x = fbits(a), y = fbits(b);

	if (a == b)
		return 0;
	if ((x ^ y) & 0x80000000u)
		return 0xffffffffu;
	return x > y ? x - y : y - x;
}

static const uint32_t POISON_F32 = 0xffffffffu;	/* a NaN */

static bool
is_poison(float f)
{
	return fbits(f) == POISON_F32;
}

static size_t
row_bytes(int t, int n)
{
	uint64_t b = 0;

	if (!dtype_row_bytes(t, (uint64_t)n, &b))
		return 0;
	return (size_t)b;
}

/* --------------------------------------------------------- 0. geometry */

static void
test_geometry(void)
{
	static const int types[] = { ORCD_DTYPE_F32, ORCD_DTYPE_F16,
	    ORCD_DTYPE_BF16, ORCD_DTYPE_Q4_0, ORCD_DTYPE_Q4_1, ORCD_DTYPE_Q5_0,
	    ORCD_DTYPE_Q5_1, ORCD_DTYPE_Q8_0, ORCD_DTYPE_Q4_K, ORCD_DTYPE_Q5_K,
	    ORCD_DTYPE_Q6_K };
	bool ok = true;

	for (int t : types) {
		ok &= cuda_act_type(t) == (int)quant_vec_dot_type((enum orcd_dtype)t);
		for (int n : { 1, 32, 96, 256, 896, 4864 })
			ok &= cuda_row_bytes(t, n) == row_bytes(t, n);
	}
	for (int t : { ORCD_DTYPE_Q8_0, ORCD_DTYPE_Q8_1, ORCD_DTYPE_Q8_K })
		for (int n : { 32, 256, 4864, 33 })
			ok &= cuda_row_bytes(t, n) == row_bytes(t, n);
	ok &= cuda_act_type(ORCD_DTYPE_Q8_K) == -1 && cuda_act_type(99) == -1;
	report(ok, "geometry: cuda_act_type and cuda_row_bytes agree with the CPU");
}

/* ------------------------------------------------- 1. activation types */

/* Rows that exercise the quantizers' corner cases. */
static void
make_act_rows(std::vector<float> &x, int rows, int n, size_t ldx, int at)
{
	for (int r = 0; r < rows; r++) {
		float *row = &x[(size_t)r * ldx];

		for (int i = 0; i < n; i++) {
			/* per-32 block scales over 5 decades */
			const float sc = powf(10.0f, (float)(((i / 32) * 7 + r) % 11) /
			    2.0f - 3.0f);

			row[i] = rng_gauss() * sc;
		}
	}
	if (rows < 3)
		return;
	float *row = &x[ldx];	/* row 1: rounding ties */
	if (at == ORCD_DTYPE_Q8_0 || at == ORCD_DTYPE_Q8_1) {
		/* amax 127: multiplier 1, halves round to even */
		for (int i = 0; i < 32 && i < n; i++)
			row[i] = (float)(i - 16) + 0.5f;
		row[0] = -127.0f;
	} else if (at == ORCD_DTYPE_Q8_K) {
		/* max -127: iscale 1; then a block whose largest magnitude
		 * occurs twice with opposite signs (the first one counts) */
		for (int i = 0; i < 256 && i < n; i++)
			row[i] = (float)((i % 200) - 100) + 0.5f;
		row[7] = -127.0f;
		if (n >= 512) {
			for (int i = 256; i < 512; i++)
				row[i] = rng_sym();
			row[256 + 5] = -3.0f;
			row[256 + 100] = 3.0f;
		}
	} else if (at == ORCD_DTYPE_F16 || at == ORCD_DTYPE_BF16) {
		static const float sp[] = { 1e-6f, -3e-8f, 70000.0f, -65519.0f,
		    65520.0f, -0.0f, 1.0009765625f + 0.00048828125f, 5.96e-8f,
		    1.00390625f, 3.0e38f, 1e-40f };

		for (size_t i = 0; i < sizeof(sp) / sizeof(sp[0]) &&
		    (int)i < n; i++)
			row[i] = sp[i];
	}
	const int be = at == ORCD_DTYPE_Q8_K ? 256 :
	    at == ORCD_DTYPE_Q8_0 || at == ORCD_DTYPE_Q8_1 ? 32 : 1;

	if (at != ORCD_DTYPE_F32 && n >= 2 * be) {
		/* row 2, second block: all zero (a zero scale) */
		float *z = &x[2 * ldx];

		for (int i = be; i < 2 * be; i++)
			z[i] = 0.0f;
	}
}

static void
test_quantize_one(int at, int rows, int n, int xpad, int dpad)
{
	dev_pool dp;
	const size_t ldx = (size_t)n + xpad, rb = row_bytes(at, n);
	const size_t stride = rb + dpad;
	std::vector<float> x((size_t)rows * ldx, 0.0f);
	std::vector<uint8_t> ref((size_t)rows * stride), got(ref.size());
	bool ok = true;
	int bad_row = -1;

	make_act_rows(x, rows, n, ldx, at);
	for (int r = 0; r < rows; r++)
		quant_quantize_row((enum orcd_dtype)at, &x[(size_t)r * ldx],
		    &ref[(size_t)r * stride], n);
	float *dx = dp.up(x);
	uint8_t *dd = (uint8_t *)dp.get(ref.size());

	/* Twice, under different poison: a byte left unwritten cannot match
	 * the reference both times. */
	for (int poison : { 0x00, 0xff }) {
		CK(cudaMemset(dd, poison, ref.size()));
		CK(cuda_quantize_act(at, dx, ldx, rows, n, dd, stride, NULL));
		CK(cudaDeviceSynchronize());
		CK(down(got, dd));
		for (int r = 0; r < rows && ok; r++) {
			const uint8_t *g = &got[(size_t)r * stride];

			if (memcmp(g, &ref[(size_t)r * stride], rb) != 0) {
				ok = false;
				bad_row = r;
			}
			for (size_t i = rb; i < stride; i++)
				if (g[i] != poison) {
					ok = false;
					bad_row = r;
				}
		}
	}
	report(ok, "quantize %-5s %4d x %-5d stride %zu: bytes identical to "
	    "quant_quantize_row%s", dtype_name(at), rows, n, stride,
	    ok ? "" : " (first bad row printed)");
	if (!ok && bad_row >= 0) {
		for (size_t i = 0; i < rb; i++)
			if (got[(size_t)bad_row * stride + i] !=
			    ref[(size_t)bad_row * stride + i]) {
				printf("      row %d byte %zu: gpu %02x cpu %02x\n",
				    bad_row, i, got[(size_t)bad_row * stride + i],
				    ref[(size_t)bad_row * stride + i]);
				break;
			}
	}
}

static void
test_quantize(void)
{
	for (int at : { ORCD_DTYPE_Q8_0, ORCD_DTYPE_Q8_1 }) {
		test_quantize_one(at, 1, 32, 0, 0);
		test_quantize_one(at, 3, 96, 3, 2);
		test_quantize_one(at, 7, 896, 0, 6);
		test_quantize_one(at, 5, 4864, 1, 0);
		test_quantize_one(at, 64, 896, 0, 14);
	}
	test_quantize_one(ORCD_DTYPE_Q8_K, 1, 256, 0, 0);
	test_quantize_one(ORCD_DTYPE_Q8_K, 3, 512, 5, 4);
	test_quantize_one(ORCD_DTYPE_Q8_K, 7, 4864, 0, 12);
	test_quantize_one(ORCD_DTYPE_Q8_K, 64, 1024, 2, 0);
	for (int at : { ORCD_DTYPE_F16, ORCD_DTYPE_BF16, ORCD_DTYPE_F32 }) {
		test_quantize_one(at, 1, 1, 0, 0);
		test_quantize_one(at, 3, 67, 1, at == ORCD_DTYPE_F32 ? 4 : 2);
		test_quantize_one(at, 7, 896, 0, 8);
		test_quantize_one(at, 64, 4864, 3, 0);
	}
}

/* ------------------------------------------------------------ 2. matmul */

struct mm_shape {
	int rows, n_in;
	std::vector<int> toks;
};

static void
test_matmul_shape(int wt, const mm_shape &sh, int wpad, int apad, int opad)
{
	dev_pool dp;
	const int at = quant_vec_dot_type((enum orcd_dtype)wt);
	const int rows = sh.rows, n = sh.n_in;
	const int nt_max = *std::max_element(sh.toks.begin(), sh.toks.end());
	const size_t wrb = row_bytes(wt, n), arb = row_bytes(at, n);
	const size_t ws = wrb + wpad, as = arb + apad;
	const size_t ldo = (size_t)rows + opad;
	std::vector<uint8_t> w((size_t)rows * ws, 0), a((size_t)nt_max * as, 0);
	std::vector<float> tmp((size_t)(n > 0 ? n : 1));
	std::vector<float> ref((size_t)nt_max * rows);
	std::vector<float> bias(rows);

	/* Weights with a scale per row; activations gaussian. */
	for (int r = 0; r < rows; r++) {
		const float sc = 0.02f + 0.2f * (float)rng_unit();

		for (int i = 0; i < n; i++)
			tmp[i] = rng_sym() * sc;
		quant_quantize_row((enum orcd_dtype)wt, tmp.data(),
		    &w[(size_t)r * ws], n);
	}
	for (int t = 0; t < nt_max; t++) {
		fill_gauss(tmp.data(), n, 1.0f);
		quant_quantize_row((enum orcd_dtype)at, tmp.data(),
		    &a[(size_t)t * as], n);
	}
	for (int r = 0; r < rows; r++)
		bias[r] = rng_gauss();
	quant_matmul((enum orcd_dtype)wt, n, w.data(), ws, rows, a.data(), as,
	    nt_max, ref.data(), rows);

	uint8_t *dw = dp.up(w);
	uint8_t *da = dp.up(a);
	float *dbias = dp.up(bias);
	float *dout = (float *)dp.get((size_t)nt_max * ldo * sizeof(float));
	std::vector<float> got((size_t)nt_max * ldo), res(got.size());

	for (size_t k = 0; k < sh.toks.size(); k++) {
		const int nt = sh.toks[k];
		const int mode = (int)(k % 3);	/* plain, bias, residual */
		double rms = 0.0;

		for (size_t i = 0; i < (size_t)nt * rows; i++)
			rms += (double)ref[i] * ref[i];
		rms = sqrt(rms / ((double)nt * rows));
		if (mode == 2) {
			for (size_t i = 0; i < res.size(); i++)
				res[i] = (size_t)(i % ldo) < (size_t)rows ?
				    rng_gauss() : 0.0f;
			for (int t = 0; t < nt; t++)
				for (size_t i = rows; i < ldo; i++) {
					float p;
					memcpy(&p, &POISON_F32, 4);
					res[(size_t)t * ldo + i] = p;
				}
			CK(cudaMemcpy(dout, res.data(), (size_t)nt * ldo * 4,
			    cudaMemcpyHostToDevice));
		} else {
			CK(cudaMemset(dout, 0xff, (size_t)nt_max * ldo * 4));
		}
		CK(cuda_matmul(wt, dw, ws, rows, n, da, as, nt, dout, ldo,
		    mode == 1 ? dbias : NULL, mode == 2 ? dout : NULL, NULL));
		CK(cudaDeviceSynchronize());
		CK(down(got, dout));

		double worst = 0.0;
		long unwritten = 0, pad_touched = 0, bad = 0;
		int wr = -1, wtk = -1;

		for (int t = 0; t < nt; t++) {
			for (int r = 0; r < rows; r++) {
				const float d = ref[(size_t)t * rows + r];
				const float g = got[(size_t)t * ldo + r];
				float want = d;

				if (mode == 1)
					want = d + bias[r];
				if (mode == 2)
					want = res[(size_t)t * ldo + r] + d;
				if (is_poison(g) || isnan(g)) {
					unwritten++;
					continue;
				}
				const double tol = 1e-5 * (fabs(d) + rms) +
				    2.4e-7 * fabs(want);
				const double e = fabs((double)g - want);

				if (e > tol)
					bad++;
				if (e / (fabs(d) + rms) > worst) {
					worst = e / (fabs(d) + rms);
					wr = r;
					wtk = t;
				}
			}
			for (size_t i = rows; i < ldo; i++)
				if (!is_poison(got[(size_t)t * ldo + i]))
					pad_touched++;
		}
		/* rows past nt must not be written either */
		for (size_t i = (size_t)nt * ldo; i < got.size() && mode != 2; i++)
			if (!is_poison(got[i]))
				pad_touched++;
		const bool ok = unwritten == 0 && pad_touched == 0 && bad == 0;

		report(ok, "matmul %-5s %6d x %-5d n_tok %3d%s%s: max err %.2e "
		    "of (|ref| + rms)%s", dtype_name(wt), rows, n, nt,
		    mode == 1 ? " +bias" : mode == 2 ? " +residual" : "",
		    wpad || apad || opad ? " (padded strides)" : "", worst,
		    ok ? "" : " <- bad");
		if (!ok)
			printf("      unwritten %ld, padding written %ld, out of "
			    "tolerance %ld (worst at token %d row %d: gpu %.8g "
			    "cpu %.8g)\n", unwritten, pad_touched, bad, wtk, wr,
			    wtk >= 0 ? got[(size_t)wtk * ldo + wr] : 0.0,
			    wtk >= 0 ? ref[(size_t)wtk * rows + wr] : 0.0);
	}
}

static void
test_matmul(void)
{
	static const int legacy[] = { ORCD_DTYPE_Q4_0, ORCD_DTYPE_Q4_1,
	    ORCD_DTYPE_Q5_0, ORCD_DTYPE_Q5_1, ORCD_DTYPE_Q8_0 };
	static const int kq[] = { ORCD_DTYPE_Q4_K, ORCD_DTYPE_Q5_K,
	    ORCD_DTYPE_Q6_K };
	static const int fl[] = { ORCD_DTYPE_F32, ORCD_DTYPE_F16,
	    ORCD_DTYPE_BF16 };

	for (int wt : legacy) {
		test_matmul_shape(wt, { 896, 896, { 1, 2, 3, 5, 8, 9, 64, 300 } },
		    0, 0, 0);
		test_matmul_shape(wt, { 4864, 896, { 1, 4, 33 } }, 0, 0, 0);
		test_matmul_shape(wt, { 37, 96, { 1, 3, 8, 17, 100 } }, 2, 2, 3);
		test_matmul_shape(wt, { 1, 32, { 1, 9 } }, 0, 0, 0);
		test_matmul_shape(wt, { 130, 160, { 2, 65 } }, 6, 4, 1);
		/* k longer than one GEMV activation chunk for 8 tokens; for
		 * one or two tokens, 8 or 4 warps share each row */
		test_matmul_shape(wt, { 64, 8192, { 8, 1, 5, 2, 16, 32 } }, 0, 0, 0);
		/* batched decode: 9 .. 32 tokens take the GEMV with 16 or 32 */
		test_matmul_shape(wt, { 896, 896, { 12, 16, 24, 32 } }, 0, 0, 0);
	}
	for (int wt : kq) {
		test_matmul_shape(wt, { 896, 4864, { 1, 2, 3, 5, 8, 9, 64, 300 } },
		    0, 0, 0);
		test_matmul_shape(wt, { 4864, 512, { 1, 4, 33 } }, 0, 0, 0);
		test_matmul_shape(wt, { 37, 768, { 1, 3, 8, 17, 100 } }, 2, 4, 3);
		test_matmul_shape(wt, { 1, 256, { 1, 9 } }, 0, 0, 0);
		test_matmul_shape(wt, { 130, 512, { 2, 65 } }, 6, 8, 1);
		test_matmul_shape(wt, { 16, 4096, { 1, 3, 8 } }, 2, 4, 5);
		test_matmul_shape(wt, { 896, 4864, { 12, 16, 24, 32 } }, 0, 0, 0);
	}
	for (int wt : fl) {
		const int ap = wt == ORCD_DTYPE_F32 ? 4 : 2;

		test_matmul_shape(wt, { 896, 896, { 1, 2, 3, 5, 8, 9, 64, 300 } },
		    0, 0, 0);
		test_matmul_shape(wt, { 4864, 896, { 1, 4, 33 } }, 0, 0, 0);
		test_matmul_shape(wt, { 37, 67, { 1, 3, 8, 17, 100 } }, 2, ap, 3);
		test_matmul_shape(wt, { 1, 1, { 1, 9 } }, 0, 0, 0);
		test_matmul_shape(wt, { 130, 135, { 2, 65 } }, 6, 2 * ap, 1);
		/* several GEMV activation chunks */
		test_matmul_shape(wt, { 64, 20000, { 1, 8, 16, 32 } }, 0, 0, 0);
	}
	/* Qwen2.5-0.5B's output layer (tied Q8_0 embeddings) */
	test_matmul_shape(ORCD_DTYPE_Q8_0, { 151936, 896, { 1, 3 } }, 0, 0, 0);
}

/* ----------------------------------------------------------- 3. RMSNorm */

static void
rmsnorm_ref(float *dst, const float *x, const float *w, int n, float eps)
{
	double sum = 0.0;

	for (int i = 0; i < n; i++)
		sum += (double)(x[i] * x[i]);
	const float mean = (float)(sum / n);
	const float scale = 1.0f / sqrtf(mean + eps);
	for (int i = 0; i < n; i++)
		dst[i] = (x[i] * scale) * w[i];
}

static void
test_rmsnorm_one(int rows, int n, int pad, float eps, bool in_place)
{
	dev_pool dp;
	const size_t ld = (size_t)n + pad;
	std::vector<float> x(rows * ld), w(n), ref(rows * ld), got(rows * ld);

	fill_gauss(x.data(), x.size(), 3.0f);
	for (int i = 0; i < n; i++)
		w[i] = 1.0f + 0.3f * rng_gauss();
	for (int r = 0; r < rows; r++)
		rmsnorm_ref(&ref[r * ld], &x[r * ld], w.data(), n, eps);

	float *dx = dp.up(x), *dw = dp.up(w);
	float *dy = in_place ? dx : (float *)dp.get(x.size() * 4);

	if (!in_place)
		CK(cudaMemset(dy, 0xff, x.size() * 4));
	CK(cuda_rmsnorm(dx, ld, dw, rows, n, eps, dy, ld, NULL));
	CK(cudaDeviceSynchronize());
	CK(down(got, dy));

	long exact = 0, bad = 0;
	uint32_t worst = 0;

	for (int r = 0; r < rows; r++) {
		for (int i = 0; i < n; i++) {
			const float g = got[r * ld + i], e = ref[r * ld + i];
			const uint32_t u = ulps(g, e);

			exact += u == 0;
			bad += u > 2;
			worst = u > worst ? u : worst;
		}
		for (int i = n; i < (int)ld; i++)
			if (!in_place && !is_poison(got[r * ld + i]))
				bad++;
	}
	report(bad == 0, "rmsnorm %4d x %-5d eps %g%s: %ld of %ld bit-identical, "
	    "max %u ulp", rows, n, (double)eps, in_place ? " in place" : "",
	    exact, (long)rows * n, worst);
}

static void
test_rmsnorm(void)
{
	test_rmsnorm_one(1, 896, 0, 1e-6f, false);
	test_rmsnorm_one(7, 896, 3, 1e-6f, false);
	test_rmsnorm_one(300, 896, 0, 1e-6f, true);
	test_rmsnorm_one(3, 64, 1, 1e-5f, false);
	test_rmsnorm_one(2, 4864, 0, 1e-5f, false);
	test_rmsnorm_one(1, 5, 0, 1e-5f, true);
}

/* -------------------------------------------------------------- 4. RoPE */

struct rope_cfg {
	const char *name;
	int n_head, n_head_kv, hd, n_rot, neox;
	float base, fscale;
	bool bias;
	int n_ctx;
};

/* forward.c's rope_tables and rope_apply */
static void
rope_ref_head(float *head, int pos, const rope_cfg &c)
{
	const float theta_scale = powf(c.base, -2.0f / (float)c.n_rot);
	float theta = (float)pos;
	const int half = c.n_rot / 2;
	std::vector<float> cs(half), sn(half);

	for (int i = 0; i < half; i++) {
		float t = c.fscale * theta;

		cs[i] = cosf(t);
		sn[i] = sinf(t);
		theta *= theta_scale;
	}
	for (int i = 0; i < half; i++) {
		const int i0 = c.neox ? i : 2 * i, i1 = c.neox ? i + half : 2 * i + 1;
		const float x0 = head[i0], x1 = head[i1];

		head[i0] = x0 * cs[i] - x1 * sn[i];
		head[i1] = x0 * sn[i] + x1 * cs[i];
	}
}

static void
test_rope_one(const rope_cfg &c, int n_tok, int n_seq, bool bad_pos)
{
	dev_pool dp;
	const int qd = c.n_head * c.hd, kvd = c.n_head_kv * c.hd;
	const int n_layer = 2, layer = 1;
	const size_t per_seq = (size_t)n_layer * c.n_ctx * kvd;
	const size_t layer_off = (size_t)layer * c.n_ctx * kvd;
	const size_t ldq = qd + 3, ldk = kvd + 1, ldv = kvd + 2;
	std::vector<float> q(n_tok * ldq), k(n_tok * ldk), v(n_tok * ldv);
	std::vector<float> bq(qd), bk(kvd), bv(kvd);
	std::vector<int> pos(n_tok), seq(n_tok);
	std::vector<uint16_t> cache_ref((size_t)n_seq * per_seq, 0xffff);

	fill_gauss(q.data(), q.size(), 1.0f);
	fill_gauss(k.data(), k.size(), 1.0f);
	fill_gauss(v.data(), v.size(), 1.0f);
	fill_gauss(bq.data(), qd, 0.5f);
	fill_gauss(bk.data(), kvd, 0.5f);
	fill_gauss(bv.data(), kvd, 0.5f);
	/* distinct positions per sequence, including both ends */
	for (int t = 0; t < n_tok; t++) {
		seq[t] = t % n_seq;
		for (;;) {
			int p = t == 0 ? c.n_ctx - 1 : t == 1 ? 0 : rng_int(c.n_ctx);
			bool used = false;

			for (int u = 0; u < t; u++)
				used |= seq[u] == seq[t] && pos[u] == p;
			if (!used) {
				pos[t] = p;
				break;
			}
		}
	}
	if (bad_pos)
		pos[n_tok - 1] = c.n_ctx;	/* rotated, never written */

	std::vector<float> qref(q);
	std::vector<uint16_t> kc_ref(cache_ref), vc_ref(cache_ref);

	for (int t = 0; t < n_tok; t++) {
		std::vector<float> kt(kvd);

		for (int i = 0; i < qd; i++)
			qref[t * ldq + i] = c.bias ? q[t * ldq + i] + bq[i] :
			    q[t * ldq + i];
		for (int h = 0; h < c.n_head; h++)
			rope_ref_head(&qref[t * ldq + (size_t)h * c.hd], pos[t], c);
		for (int i = 0; i < kvd; i++)
			kt[i] = c.bias ? k[t * ldk + i] + bk[i] : k[t * ldk + i];
		for (int h = 0; h < c.n_head_kv; h++)
			rope_ref_head(&kt[(size_t)h * c.hd], pos[t], c);
		if (pos[t] < 0 || pos[t] >= c.n_ctx)
			continue;
		uint16_t *kd = &kc_ref[seq[t] * per_seq + layer_off +
		    (size_t)pos[t] * kvd];
		uint16_t *vd = &vc_ref[seq[t] * per_seq + layer_off +
		    (size_t)pos[t] * kvd];
		for (int i = 0; i < kvd; i++) {
			kd[i] = quant_fp32_to_fp16(kt[i]);
			vd[i] = quant_fp32_to_fp16(c.bias ? v[t * ldv + i] + bv[i] :
			    v[t * ldv + i]);
		}
	}

	float *dq = dp.up(q), *dk = dp.up(k), *dv = dp.up(v);
	float *dbq = dp.up(bq), *dbk = dp.up(bk), *dbv = dp.up(bv);
	int *dpos = dp.up(pos);
	uint16_t *kc = dp.up(cache_ref), *vc = dp.up(cache_ref);
	std::vector<uint16_t *> kp(n_tok), vp(n_tok);

	for (int t = 0; t < n_tok; t++) {
		kp[t] = kc + seq[t] * per_seq;
		vp[t] = vc + seq[t] * per_seq;
	}
	uint16_t **dkp = dp.up(kp), **dvp = dp.up(vp);

	CK(cuda_rope_kv(n_tok, c.n_head, c.n_head_kv, c.hd, c.n_rot, c.neox,
	    c.base, c.fscale, dpos, dq, ldq, dk, ldk, dv, ldv,
	    c.bias ? dbq : NULL, c.bias ? dbk : NULL, c.bias ? dbv : NULL, dkp,
	    dvp, layer_off, c.n_ctx, NULL));
	CK(cudaDeviceSynchronize());

	std::vector<float> qg(q.size());
	std::vector<uint16_t> kg(cache_ref.size()), vg(cache_ref.size());

	CK(down(qg, dq));
	CK(down(kg, kc));
	CK(down(vg, vc));

	long exact = 0, bad = 0, total = 0, kv_bad = 0, kv_off1 = 0;
	uint32_t worst = 0;

	for (int t = 0; t < n_tok; t++) {
		for (size_t i = 0; i < ldq; i++) {
			const float g = qg[t * ldq + i], e = qref[t * ldq + i];

			if ((int)i >= qd) {	/* padding: untouched */
				bad += fbits(g) != fbits(e);
				continue;
			}
			const uint32_t u = ulps(g, e);

			/* tiny outputs of a cancelling rotation: absolute slack */
			const bool close = fabsf(g - e) <= 4e-7f;

			total++;
			exact += u == 0;
			if (u > 2 && !close)
				bad++;
			if (!close)
				worst = u > worst ? u : worst;
		}
	}
	for (size_t i = 0; i < kg.size(); i++) {
		for (int which = 0; which < 2; which++) {
			const uint16_t g = which ? vg[i] : kg[i];
			const uint16_t e = which ? vc_ref[i] : kc_ref[i];

			if (g == e)
				continue;
			/* a written value may differ by one f16 step; an
			 * unwritten one must still be the poison */
			if (e == 0xffff || g == 0xffff ||
			    ((g ^ e) & 0x8000) != 0 || abs((int)g - (int)e) > 1)
				kv_bad++;
			else
				kv_off1++;
		}
	}
	report(bad == 0 && kv_bad == 0, "rope %-12s n_tok %2d (%d seqs%s): q %ld "
	    "of %ld bit-identical, max %u ulp; KV cache %ld values 1 f16 ulp off, "
	    "%ld wrong", c.name, n_tok, n_seq, bad_pos ? ", one position out of "
	    "range" : "", exact, total, worst, kv_off1, kv_bad);
}

static void
test_rope(void)
{
	const rope_cfg qwen = { "qwen2", 14, 2, 64, 64, 1, 1000000.0f, 1.0f,
	    true, 32768 };
	const rope_cfg llama = { "llama-tiny", 8, 4, 8, 8, 0, 10000.0f, 1.0f,
	    false, 2048 };
	const rope_cfg part = { "partial-rot", 4, 2, 64, 32, 0, 10000.0f, 0.25f,
	    true, 4096 };
	const rope_cfg mha = { "mha-128", 4, 4, 128, 128, 1, 500000.0f, 1.0f,
	    false, 32768 };

	test_rope_one(qwen, 1, 1, false);
	test_rope_one(qwen, 5, 3, false);
	test_rope_one(qwen, 64, 1, false);
	test_rope_one(llama, 9, 3, true);
	test_rope_one(part, 7, 2, false);
	test_rope_one(mha, 3, 3, false);
}

/* --------------------------------------------------------- 5. attention */

/* forward.c's att_task on a [n_ctx][kv_dim] V layout, in double at the end */
static void
att_ref(const float *q, const uint16_t *kb, const uint16_t *vb, size_t kv_dim,
    int n, int hd, float *out, float *mag)
{
	std::vector<uint16_t> q16(hd), p16(n);
	std::vector<float> sc(n);
	const float scale = 1.0f / sqrtf((float)hd);
	float max = -INFINITY;
	double sum = 0.0;

	quant_fp16_row_from_fp32(q, q16.data(), hd);
	quant_matmul(ORCD_DTYPE_F16, hd, kb, kv_dim * 2, n, q16.data(), 0, 1,
	    sc.data(), (size_t)n);
	for (int i = 0; i < n; i++) {
		sc[i] *= scale;
		if (sc[i] > max)
			max = sc[i];
	}
	for (int i = 0; i < n; i++) {
		sc[i] = expf(sc[i] - max);
		sum += (double)sc[i];
	}
	const float inv = (float)(1.0 / sum);
	for (int i = 0; i < n; i++)
		p16[i] = quant_fp32_to_fp16(sc[i] * inv);
	for (int d = 0; d < hd; d++) {
		double acc = 0.0, m = 0.0;

		for (int j = 0; j < n; j++) {
			const double t = (double)quant_fp16_to_fp32(
			    vb[(size_t)j * kv_dim + d]) * quant_fp16_to_fp32(p16[j]);

			acc += t;
			m += fabs(t);
		}
		out[d] = (float)acc;
		mag[d] = (float)m;
	}
}

struct att_cfg {
	const char *name;
	int n_head, n_head_kv, hd, n_ctx;
};

/*
 * Tokens of n_seq sequences: token t belongs to seq[t] at pos[t].  Each
 * sequence's cache (2 layers, layer 1 used) is random f16 up to its
 * largest position.
 */
static void
test_attention_one(const att_cfg &c, const std::vector<int> &seq,
    const std::vector<int> &pos, int split_len, const char *what)
{
	dev_pool dp;
	const int n_tok = (int)seq.size();
	const int n_seq = *std::max_element(seq.begin(), seq.end()) + 1;
	const int qd = c.n_head * c.hd, kvd = c.n_head_kv * c.hd;
	const size_t per_seq = (size_t)2 * c.n_ctx * kvd;
	const size_t layer_off = (size_t)c.n_ctx * kvd;
	const size_t ldq = qd + 5, ldo = qd + 3;
	std::vector<uint16_t> kc((size_t)n_seq * per_seq, 0x7e00);
	std::vector<uint16_t> vc(kc.size(), 0x7e00);
	std::vector<float> q(n_tok * ldq), ref(n_tok * ldo, 0.0f);
	std::vector<float> mag(ref.size(), 0.0f);
	int max_len = 0;

	for (int t = 0; t < n_tok; t++)
		max_len = std::max(max_len, pos[t] + 1);
	for (int s = 0; s < n_seq; s++) {
		int top = 0;

		for (int t = 0; t < n_tok; t++)
			if (seq[t] == s)
				top = std::max(top, pos[t] + 1);
		for (size_t i = 0; i < (size_t)top * kvd; i++) {
			kc[s * per_seq + layer_off + i] =
			    quant_fp32_to_fp16(rng_gauss());
			vc[s * per_seq + layer_off + i] =
			    quant_fp32_to_fp16(rng_gauss());
		}
	}
	/* peaky enough that the maximum matters */
	fill_gauss(q.data(), q.size(), 2.5f);
	for (int t = 0; t < n_tok; t++)
		for (int h = 0; h < c.n_head; h++) {
			const int g = h / (c.n_head / c.n_head_kv);
			const size_t base = seq[t] * per_seq + layer_off +
			    (size_t)g * c.hd;

			att_ref(&q[t * ldq + (size_t)h * c.hd], &kc[base], &vc[base],
			    kvd, pos[t] + 1, c.hd, &ref[t * ldo + (size_t)h * c.hd],
			    &mag[t * ldo + (size_t)h * c.hd]);
		}

	const size_t wsb = cuda_attention_workspace_bytes(n_tok, c.n_head, c.hd,
	    max_len, split_len);
	uint16_t *dk = dp.up(kc), *dv = dp.up(vc);
	float *dq = dp.up(q);
	int *dpos = dp.up(pos);
	void *ws = wsb != 0 ? dp.get(wsb) : NULL;
	float *dout = (float *)dp.get(ref.size() * 4);
	std::vector<const uint16_t *> kp(n_tok), vp(n_tok);

	for (int t = 0; t < n_tok; t++) {
		kp[t] = dk + seq[t] * per_seq;
		vp[t] = dv + seq[t] * per_seq;
	}
	const uint16_t **dkp = dp.up(kp), **dvp = dp.up(vp);

	CK(cudaMemset(dout, 0xff, ref.size() * 4));
	CK(cuda_attention(n_tok, c.n_head, c.n_head_kv, c.hd, dpos, dq, ldq, dkp,
	    dvp, layer_off, c.n_ctx, max_len, split_len, ws, wsb, dout, ldo,
	    NULL));
	CK(cudaDeviceSynchronize());

	std::vector<float> got(ref.size());
	CK(down(got, dout));

	double worst = 0.0;
	long bad = 0;

	for (int t = 0; t < n_tok; t++) {
		for (int h = 0; h < c.n_head; h++) {
			const float *e = &ref[t * ldo + (size_t)h * c.hd];
			const float *g = &got[t * ldo + (size_t)h * c.hd];
			float scale = 0.0f;

			for (int d = 0; d < c.hd; d++)
				scale = std::max(scale,
				    mag[t * ldo + (size_t)h * c.hd + d]);
			for (int d = 0; d < c.hd; d++) {
				const double err = fabs((double)g[d] - e[d]) /
				    (scale + 1e-30);

				if (isnan(g[d]) || err > 1e-3)
					bad++;
				if (err > worst)
					worst = err;
			}
		}
		for (size_t i = qd; i < ldo; i++)
			bad += !is_poison(got[t * ldo + i]);
	}
	report(bad == 0, "attention %-9s %-20s n_tok %3d max_len %5d split %6d "
	    "(ws %zu B): max err %.2e of max sum p|v|", c.name, what, n_tok,
	    max_len, split_len, wsb, worst);
}

static void
test_attention(void)
{
	const att_cfg qwen = { "qwen2", 14, 2, 64, 4096 };
	const att_cfg qwen_long = { "qwen2", 14, 2, 64, 32768 };
	const att_cfg tiny = { "llama-8", 8, 4, 8, 1024 };
	const att_cfg mha = { "mha-128", 4, 4, 128, 2048 };
	const att_cfg h16 = { "gqa-16", 16, 2, 16, 1024 };
	const std::vector<int> dseq = { 0, 1, 2, 3 };
	const std::vector<int> dpos = { 0, 16, 299, 3999 };
	std::vector<int> pseq(64, 0), ppos(64);

	for (int i = 0; i < 64; i++)
		ppos[i] = 1000 + i;
	for (int split : { 0, 128, 100000 })
		test_attention_one(qwen, dseq, dpos, split, "decode 4 seqs");
	for (int split : { 0, 256 })
		test_attention_one(qwen, pseq, ppos, split, "prefill 64 tokens");
	/* 100000: one block per (token, head), 128 KB of shared memory */
	for (int split : { 0, 100000 })
		test_attention_one(qwen_long, { 0 }, { 32767 }, split,
		    "decode at 32768");
	/* enough (token, head) pairs not to split: the same large path */
	std::vector<int> lseq(16, 0), lpos(16);
	for (int i = 0; i < 16; i++)
		lpos[i] = 20000 + i;
	test_attention_one(qwen_long, lseq, lpos, 0, "prefill at 20000");
	for (int split : { 0, 64 })
		test_attention_one(tiny, { 0, 1, 2 }, { 4, 49, 499 }, split,
		    "decode 3 seqs");
	for (int split : { 0, 512 })
		test_attention_one(mha, { 0, 1 }, { 32, 1499 }, split,
		    "decode 2 seqs");
	test_attention_one(h16, { 0, 0, 1 }, { 5, 6, 699 }, 0, "mixed batch");

	/* One allocation for the largest batch covers smaller calls. */
	bool mono = true;
	for (int split : { 0, 300 }) {
		const size_t big = cuda_attention_workspace_bytes(64, 14, 64, 32768,
		    split);

		for (int n = 1; n <= 64; n += 7)
			for (int L = 1; L <= 32768; L = L * 3 + 1)
				mono &= cuda_attention_workspace_bytes(n, 14, 64, L,
				    split) <= big;
	}
	report(mono, "attention workspace for (64 tokens, 32768) covers every "
	    "smaller call");
}

/* ------------------------------------------------------- 6. elementwise */

static void
test_add(void)
{
	dev_pool dp;

	for (size_t n : { (size_t)2689, (size_t)1000003 }) {
		std::vector<float> a(n), b(n), got(n);

		fill_gauss(a.data(), n, 10.0f);
		fill_gauss(b.data(), n, 0.1f);
		float *da = dp.up(a), *db = dp.up(b);
		float *dy = (float *)dp.get((n + 1) * 4);
		long bad = 0;

		/* into a poisoned buffer (one element past the end stays) */
		CK(cudaMemset(dy, 0xff, (n + 1) * 4));
		CK(cuda_add(dy, da, db, n, NULL));
		CK(cudaDeviceSynchronize());
		got.resize(n + 1);
		CK(down(got, dy));
		for (size_t i = 0; i < n; i++)
			bad += fbits(got[i]) != fbits(a[i] + b[i]);
		bad += !is_poison(got[n]);
		/* and in place */
		CK(cuda_add(da, da, db, n, NULL));
		CK(cudaDeviceSynchronize());
		got.resize(n);
		CK(down(got, da));
		for (size_t i = 0; i < n; i++)
			bad += fbits(got[i]) != fbits(a[i] + b[i]);
		report(bad == 0, "add %zu (into a poisoned buffer, then in place): "
		    "%ld differ", n, bad);
	}
}

static void
test_swiglu(void)
{
	dev_pool dp;
	const int rows = 7, n = 4864;
	const size_t lg = n + 3, lu = n + 1, ly = n + 2;
	std::vector<float> g(rows * lg), u(rows * lu), got(rows * ly);

	fill_gauss(g.data(), g.size(), 4.0f);
	fill_gauss(u.data(), u.size(), 1.0f);
	g[0] = -100.0f;		/* exp(100): large */
	g[1] = -89.0f;		/* exp overflows: silu = -0 */
	g[2] = 88.0f;
	g[3] = 1e-30f;
	float *dg = dp.up(g), *du = dp.up(u);
	float *dy = (float *)dp.get(got.size() * 4);

	CK(cudaMemset(dy, 0xff, got.size() * 4));
	CK(cuda_swiglu(dy, ly, dg, lg, du, lu, rows, n, NULL));
	CK(cudaDeviceSynchronize());
	CK(down(got, dy));

	long exact = 0, bad = 0;
	uint32_t worst = 0;
	for (int r = 0; r < rows; r++) {
		for (int i = 0; i < n; i++) {
			const float x = g[r * lg + i];
			const float e = (x / (1.0f + expf(-x))) * u[r * lu + i];
			const uint32_t d = ulps(got[r * ly + i], e);

			exact += d == 0;
			bad += d > 4;
			worst = std::max(worst, d);
		}
		for (size_t i = n; i < ly; i++)
			bad += !is_poison(got[r * ly + i]);
	}
	report(bad == 0, "swiglu %d x %d (strided): %ld of %d bit-identical, "
	    "max %u ulp (glibc's expf is not always correctly rounded)", rows,
	    n, exact, rows * n, worst);
}

static void
test_embed(void)
{
	static const int types[] = { ORCD_DTYPE_F32, ORCD_DTYPE_F16,
	    ORCD_DTYPE_BF16, ORCD_DTYPE_Q4_0, ORCD_DTYPE_Q4_1, ORCD_DTYPE_Q5_0,
	    ORCD_DTYPE_Q5_1, ORCD_DTYPE_Q8_0, ORCD_DTYPE_Q4_K, ORCD_DTYPE_Q5_K,
	    ORCD_DTYPE_Q6_K };

	for (int wt : types) {
		dev_pool dp;
		const bool k = wt == ORCD_DTYPE_Q4_K || wt == ORCD_DTYPE_Q5_K ||
		    wt == ORCD_DTYPE_Q6_K;
		const int n_vocab = 1000, n = k ? 1024 : 896, n_tok = 12;
		const size_t rb = row_bytes(wt, n) + 2, ldo = n + 1;
		std::vector<uint8_t> table((size_t)n_vocab * rb, 0);
		std::vector<float> tmp(n), ref((size_t)n_tok * ldo), got(ref.size());
		std::vector<int> tok(n_tok);

		for (int v = 0; v < n_vocab; v++) {
			fill_gauss(tmp.data(), n, 0.05f);
			quant_quantize_row((enum orcd_dtype)wt, tmp.data(),
			    &table[v * rb], n);
		}
		for (int t = 0; t < n_tok; t++)
			tok[t] = t == 0 ? 0 : t == 1 ? n_vocab - 1 : t == 2 ? -1 :
			    rng_int(n_vocab);
		for (int t = 0; t < n_tok; t++) {
			float *o = &ref[t * ldo];

			if (tok[t] < 0)
				memset(o, 0, n * sizeof(float));
			else
				quant_dequantize_row((enum orcd_dtype)wt,
				    &table[tok[t] * rb], o, n);
			memcpy(&o[n], &POISON_F32, 4);
		}
		uint8_t *dt = dp.up(table);
		int *dtok = dp.up(tok);
		float *dout = (float *)dp.get(ref.size() * 4);

		CK(cudaMemset(dout, 0xff, ref.size() * 4));
		CK(cuda_embed(wt, dt, rb, n_vocab, n, dtok, n_tok, dout, ldo, NULL));
		CK(cudaDeviceSynchronize());
		CK(down(got, dout));
		long bad = 0;
		for (size_t i = 0; i < ref.size(); i++)
			bad += fbits(got[i]) != fbits(ref[i]);
		report(bad == 0, "embed %-5s %d tokens x %d (ids 0, last, -1): %ld "
		    "differ from quant_dequantize_row", dtype_name(wt), n_tok, n,
		    bad);
	}
}

static int
argmax_ref(const float *x, int n)
{
	int bi = -1;

	for (int i = 0; i < n; i++)
		if (!isnan(x[i]) && (bi < 0 || x[i] > x[bi]))
			bi = i;
	return bi < 0 ? 0 : bi;
}

static void
test_argmax(void)
{
	dev_pool dp;
	const int n = 151936, rows = 8;
	const size_t ld = n + 5;
	std::vector<float> x(rows * ld);
	std::vector<int> got(rows + 1, -7);
	float nan_;

	memcpy(&nan_, &POISON_F32, 4);
	fill_gauss(x.data(), x.size(), 3.0f);
	/* row 1: ties, the lowest index wins */
	x[1 * ld + 5000] = 100.0f;
	x[1 * ld + 100] = 100.0f;
	x[1 * ld + n - 1] = 100.0f;
	/* row 2: all -inf */
	for (int i = 0; i < n; i++)
		x[2 * ld + i] = -INFINITY;
	/* row 3: NaNs around the maximum */
	for (int i = 0; i < n; i += 3)
		x[3 * ld + i] = nan_;
	x[3 * ld + 77777] = 50.0f;
	/* row 4: all NaN */
	for (int i = 0; i < n; i++)
		x[4 * ld + i] = nan_;
	/* row 5: the maximum at the end; row 6 at the start */
	x[5 * ld + n - 1] = 1e30f;
	x[6 * ld + 0] = INFINITY;
	/* row 7: negative values only */
	for (int i = 0; i < n; i++)
		x[7 * ld + i] = -fabsf(x[7 * ld + i]) - 1.0f;

	float *dx = dp.up(x);
	int *dout = dp.up(got);

	CK(cuda_argmax(dx, ld, rows, n, dout, NULL));
	CK(cudaDeviceSynchronize());
	CK(down(got, dout));
	int bad = 0;
	for (int r = 0; r < rows; r++) {
		const int e = argmax_ref(&x[r * ld], n);

		if (got[r] != e) {
			bad++;
			printf("      row %d: gpu %d cpu %d\n", r, got[r], e);
		}
	}
	bad += got[rows] != -7;
	report(bad == 0, "argmax %d x %d (ties, -inf, NaN rows): %d wrong", rows,
	    n, bad);

	/* n = 1 */
	std::vector<float> one = { -3.0f };
	float *d1 = dp.up(one);
	CK(cuda_argmax(d1, 1, 1, 1, dout, NULL));
	CK(cudaDeviceSynchronize());
	CK(down(got, dout));
	report(got[0] == 0, "argmax 1 x 1: %d", got[0]);
}

/* ------------------------------------------------- 7. argument checks */

static void
test_args(void)
{
	dev_pool dp;
	uint8_t *b = (uint8_t *)dp.get(1 << 20);
	float *f = (float *)b;
	int bad = 0;

#define EXPECT_REJECT(call)						\
	do {								\
		if ((call) == 0) {					\
			bad++;						\
			printf("      accepted: %s\n", #call);		\
		}							\
	} while (0)
	EXPECT_REJECT(cuda_matmul(ORCD_DTYPE_Q4_0, b, 18, 4, 33, b, 34, 1, f,
	    4, NULL, NULL, NULL));
	EXPECT_REJECT(cuda_matmul(ORCD_DTYPE_Q8_K, b, 292, 4, 256, b, 292, 1,
	    f, 4, NULL, NULL, NULL));
	EXPECT_REJECT(cuda_matmul(ORCD_DTYPE_Q8_0, NULL, 34, 4, 32, b, 34, 1,
	    f, 4, NULL, NULL, NULL));
	EXPECT_REJECT(cuda_matmul(ORCD_DTYPE_Q8_0, b + 1, 34, 4, 32, b, 34, 1,
	    f, 4, NULL, NULL, NULL));
	EXPECT_REJECT(cuda_matmul(ORCD_DTYPE_Q8_0, b, 30, 4, 32, b, 34, 1, f,
	    4, NULL, NULL, NULL));
	EXPECT_REJECT(cuda_matmul(ORCD_DTYPE_Q4_K, b, 144, 4, 256, b, 292, 2,
	    f, 2, NULL, NULL, NULL));
	EXPECT_REJECT(cuda_quantize_act(ORCD_DTYPE_Q8_K, f, 300, 1, 300, b, 300,
	    NULL));
	EXPECT_REJECT(cuda_quantize_act(ORCD_DTYPE_Q4_0, f, 32, 1, 32, b, 18,
	    NULL));
	EXPECT_REJECT(cuda_rmsnorm(f, 8, f, 0, 8, 1e-5f, f, 8, NULL));
	EXPECT_REJECT(cuda_rope_kv(1, 2, 1, 8, 7, 0, 1e4f, 1.0f, (int *)b, f, 16,
	    f, 8, f, 8, NULL, NULL, NULL, (uint16_t **)b, (uint16_t **)b, 0, 16,
	    NULL));
	EXPECT_REJECT(cuda_attention(1, 2, 1, 12, (int *)b, f, 24,
	    (const uint16_t **)b, (const uint16_t **)b, 0, 16, 16, 0, NULL, 0, f,
	    24, NULL));
	EXPECT_REJECT(cuda_attention(1, 3, 2, 8, (int *)b, f, 24,
	    (const uint16_t **)b, (const uint16_t **)b, 0, 16, 16, 0, NULL, 0, f,
	    24, NULL));
	EXPECT_REJECT(cuda_embed(ORCD_DTYPE_Q8_1, b, 36, 4, 32, (int *)b, 1, f,
	    32, NULL));
	EXPECT_REJECT(cuda_argmax(f, 4, 1, 0, (int *)b, NULL));
	EXPECT_REJECT(cuda_swiglu(f, 4, f, 2, f, 4, 2, 4, NULL));
	/* the split path without a workspace */
	EXPECT_REJECT(cuda_attention(1, 2, 1, 8, (int *)b, f, 16,
	    (const uint16_t **)b, (const uint16_t **)b, 0, 4096, 4096, 64, NULL,
	    0, f, 16, NULL));
#undef EXPECT_REJECT
	const cudaError_t sticky = cudaDeviceSynchronize();

	report(bad == 0 && sticky == cudaSuccess && cudaGetLastError() ==
	    cudaSuccess, "invalid arguments rejected before any launch (%d "
	    "accepted)", bad);
}

/* ----------------------------------------------------------- 8. timing */

__global__ void
fill_bytes(uint32_t *p, size_t words, uint32_t seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < words;
	    i += (size_t)gridDim.x * blockDim.x) {
		uint32_t x = (uint32_t)i * 2654435761u ^ seed;

		x ^= x >> 15;
		x *= 0x2c1b3c6du;
		x ^= x >> 12;
		/* keep f16 scales finite-ish: clear bit 14 of each half */
		p[i] = x & 0xbfffbfffu;
	}
}

static double
median(std::vector<double> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

static void
time_gemv(int wt, int rows, int n, const char *label)
{
	dev_pool dp;
	const int at = quant_vec_dot_type((enum orcd_dtype)wt);
	const size_t wb = row_bytes(wt, n) * rows, ab = row_bytes(at, n);
	/* enough copies that the weights never sit in L2 */
	const int copies = (int)std::max<size_t>(2, ((size_t)512 << 20) / wb);
	std::vector<uint8_t *> w(copies);
	std::vector<float> x(n);
	cudaStream_t s;
	cudaGraph_t g;
	cudaGraphExec_t ge;
	cudaEvent_t e0, e1;

	for (int i = 0; i < copies; i++) {
		w[i] = (uint8_t *)dp.get(wb);
		fill_bytes<<<1024, 256>>>((uint32_t *)w[i], wb / 4, 77u + i);
	}
	fill_gauss(x.data(), n, 1.0f);
	float *dx = dp.up(x);
	void *da = dp.get(ab);
	float *dout = (float *)dp.get((size_t)rows * 4);

	CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	CK(cuda_quantize_act(at, dx, n, 1, n, da, ab, s));
	CK(cudaStreamSynchronize(s));
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
	for (int i = 0; i < copies; i++)
		if (cuda_matmul(wt, w[i], row_bytes(wt, n), rows, n,
		    at == ORCD_DTYPE_F32 ? (const void *)dx : da, ab, 1, dout,
		    rows, NULL, NULL, s) != 0)
			break;
	CK(cudaStreamEndCapture(s, &g));
	CK(cudaGraphInstantiate(&ge, g, 0));

	std::vector<double> tg, tl;
	float ms;

	for (int it = 0; it < 23; it++) {
		CK(cudaEventRecord(e0, s));
		CK(cudaGraphLaunch(ge, s));
		CK(cudaEventRecord(e1, s));
		CK(cudaEventSynchronize(e1));
		CK(cudaEventElapsedTime(&ms, e0, e1));
		if (it >= 3)
			tg.push_back(ms * 1e3 / copies);
	}
	for (int it = 0; it < 23; it++) {
		CK(cudaEventRecord(e0, s));
		CK(cuda_matmul(wt, w[it % copies], row_bytes(wt, n), rows, n,
		    at == ORCD_DTYPE_F32 ? (const void *)dx : da, ab, 1, dout, rows,
		    NULL, NULL, s));
		CK(cudaEventRecord(e1, s));
		CK(cudaEventSynchronize(e1));
		CK(cudaEventElapsedTime(&ms, e0, e1));
		if (it >= 3)
			tl.push_back(ms * 1e3);
	}
	const double ug = median(tg), ul = median(tl);

	printf("TIME  gemv %-5s %6d x %-5d %-22s %7.2f MB: graph %7.2f us "
	    "%7.0f GB/s | launch %7.2f us %7.0f GB/s\n", dtype_name(wt), rows, n,
	    label, wb / 1e6, ug, wb / (ug * 1e3), ul, wb / (ul * 1e3));
	cudaGraphExecDestroy(ge);
	cudaGraphDestroy(g);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaStreamDestroy(s);
}

static void
time_prefill(int wt, int rows, int n, int n_tok)
{
	dev_pool dp;
	const int at = quant_vec_dot_type((enum orcd_dtype)wt);
	const size_t wb = row_bytes(wt, n) * rows, ab = row_bytes(at, n);
	std::vector<float> x((size_t)n * n_tok);
	cudaEvent_t e0, e1;
	std::vector<double> t;
	float ms;

	uint8_t *dw = (uint8_t *)dp.get(wb);
	fill_bytes<<<1024, 256>>>((uint32_t *)dw, wb / 4, 5u);
	fill_gauss(x.data(), x.size(), 1.0f);
	float *dx = dp.up(x);
	void *da = dp.get(ab * n_tok);
	float *dout = (float *)dp.get((size_t)rows * n_tok * 4);

	CK(cuda_quantize_act(at, dx, n, n_tok, n, da, ab, NULL));
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	for (int it = 0; it < 23; it++) {
		CK(cudaEventRecord(e0, NULL));
		CK(cuda_matmul(wt, dw, row_bytes(wt, n), rows, n,
		    at == ORCD_DTYPE_F32 ? (const void *)dx : da, ab, n_tok, dout,
		    rows, NULL, NULL, NULL));
		CK(cudaEventRecord(e1, NULL));
		CK(cudaEventSynchronize(e1));
		CK(cudaEventElapsedTime(&ms, e0, e1));
		if (it >= 3)
			t.push_back(ms * 1e3);
	}
	const double us = median(t);

	printf("TIME  prefill %-5s %5d x %-5d x %3d tokens: %8.1f us %7.2f "
	    "TMAC/s\n", dtype_name(wt), rows, n, n_tok, us,
	    (double)rows * n * n_tok / (us * 1e6));
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
}

static void
time_attention(int n_tok, int len)
{
	dev_pool dp;
	const int nh = 14, nkv = 2, hd = 64, kvd = nkv * hd;
	std::vector<float> q((size_t)n_tok * nh * hd);
	std::vector<int> pos(n_tok, len - 1);
	cudaEvent_t e0, e1;
	std::vector<double> t;
	float ms;

	fill_gauss(q.data(), q.size(), 1.0f);
	uint16_t *kv = (uint16_t *)dp.get((size_t)n_tok * len * kvd * 2 * 2);
	fill_bytes<<<1024, 256>>>((uint32_t *)kv, (size_t)n_tok * len * kvd, 9u);
	std::vector<const uint16_t *> kp(n_tok), vp(n_tok);
	for (int i = 0; i < n_tok; i++) {
		kp[i] = kv + (size_t)i * len * kvd * 2;
		vp[i] = kp[i] + (size_t)len * kvd;
	}
	const uint16_t **dkp = dp.up(kp), **dvp = dp.up(vp);
	float *dq = dp.up(q);
	int *dpos = dp.up(pos);
	float *dout = (float *)dp.get(q.size() * 4);
	const size_t wsb = cuda_attention_workspace_bytes(n_tok, nh, hd, len, 0);
	void *ws = wsb ? dp.get(wsb) : NULL;

	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	for (int it = 0; it < 23; it++) {
		CK(cudaEventRecord(e0, NULL));
		CK(cuda_attention(n_tok, nh, nkv, hd, dpos, dq, nh * hd, dkp, dvp, 0,
		    len, len, 0, ws, wsb, dout, nh * hd, NULL));
		CK(cudaEventRecord(e1, NULL));
		CK(cudaEventSynchronize(e1));
		CK(cudaEventElapsedTime(&ms, e0, e1));
		if (it >= 3)
			t.push_back(ms * 1e3);
	}
	const double us = median(t);
	const double bytes = (double)n_tok * len * kvd * 2 * 2;

	printf("TIME  attention qwen2 %3d seqs x %5d positions: %8.1f us "
	    "(%6.0f GB/s of KV)\n", n_tok, len, us, bytes / (us * 1e3));
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
}

static void
timings(void)
{
	time_gemv(ORCD_DTYPE_Q4_K, 896, 4864, "(ffn_down)");
	time_gemv(ORCD_DTYPE_Q6_K, 896, 4864, "(ffn_down)");
	time_gemv(ORCD_DTYPE_Q5_0, 4864, 896, "(ffn_gate/up)");
	time_gemv(ORCD_DTYPE_Q8_0, 4864, 896, "(ffn_gate/up)");
	time_gemv(ORCD_DTYPE_Q4_0, 4864, 896, "(ffn_gate/up)");
	time_gemv(ORCD_DTYPE_F16, 4864, 896, "(ffn_gate/up)");
	time_gemv(ORCD_DTYPE_Q8_0, 151936, 896, "(output layer)");
	time_gemv(ORCD_DTYPE_Q4_K, 14336, 4096, "(8B-class ffn)");
	time_prefill(ORCD_DTYPE_Q8_0, 4864, 896, 256);
	time_prefill(ORCD_DTYPE_Q4_K, 896, 4864, 256);
	time_prefill(ORCD_DTYPE_F16, 4864, 896, 256);
	time_attention(1, 4096);
	time_attention(1, 32768);
	time_attention(16, 2048);
}

/* ---------------------------------------------------------------- seal */

/* The seal layout from its description (doc/seal.md), over OpenSSL's
 * SHA-256: leaf = H(0x00 || block), parent = H(0x01 || l || r), 4 KiB
 * blocks, an odd last node carried up. */
static void
seal_ref_hash(uint8_t prefix, const uint8_t *a, size_t na, const uint8_t *b,
    size_t nb, uint8_t out[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, &prefix, 1);
	EVP_DigestUpdate(ctx, a, na);
	if (nb > 0)
		EVP_DigestUpdate(ctx, b, nb);
	EVP_DigestFinal_ex(ctx, out, NULL);
	EVP_MD_CTX_free(ctx);
}

static void
seal_ref_chunk(const uint8_t *data, size_t n, uint8_t out[32])
{
	std::vector<std::array<uint8_t, 32>> lv;

	for (size_t off = 0; off < n; off += 4096) {
		std::array<uint8_t, 32> h;

		seal_ref_hash(0x00, data + off, std::min<size_t>(4096, n - off), NULL, 0, h.data());
		lv.push_back(h);
	}
	while (lv.size() > 1) {
		std::vector<std::array<uint8_t, 32>> up;

		for (size_t i = 0; i + 1 < lv.size(); i += 2) {
			std::array<uint8_t, 32> h;

			seal_ref_hash(0x01, lv[i].data(), 32, lv[i + 1].data(), 32, h.data());
			up.push_back(h);
		}
		if (lv.size() & 1)
			up.push_back(lv.back());
		lv.swap(up);
	}
	memcpy(out, lv[0].data(), 32);
}

/* Chunks of the given sizes at the given misalignments in one device
 * buffer, digested on the GPU and by the reference. */
static bool
seal_case(const std::vector<uint32_t> &sizes, uint32_t misalign, double *gbps)
{
	dev_pool dp;
	std::vector<size_t> at(sizes.size());
	size_t total = 0;

	for (size_t c = 0; c < sizes.size(); c++) {
		at[c] = total + misalign;
		total += ((size_t)sizes[c] + misalign + 255) / 256 * 256;
	}
	std::vector<uint8_t> host(total);
	for (size_t i = 0; i < total; i += 8) {
		uint64_t r = rng_next();

		memcpy(&host[i], &r, std::min<size_t>(8, total - i));
	}
	uint8_t *d = dp.up(host);
	std::vector<const uint8_t *> ptrs(sizes.size());
	for (size_t c = 0; c < sizes.size(); c++)
		ptrs[c] = d + at[c];
	const uint8_t *const *dptr = dp.up(ptrs);
	const uint32_t *dlen = dp.up(sizes);
	std::vector<uint8_t> got(sizes.size() * 32 + 32, 0xa5);
	uint8_t *dout = dp.up(got);
	cudaEvent_t e0, e1;

	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	cudaEventRecord(e0, NULL);
	int rc = cuda_seal_digests(dptr, dlen, (int)sizes.size(), dout, NULL);
	cudaEventRecord(e1, NULL);
	if (rc != 0 || cudaDeviceSynchronize() != cudaSuccess || down(got, dout) != cudaSuccess) {
		printf("      launch failed: %d\n", rc);
		return false;
	}
	float ms = 0;
	cudaEventElapsedTime(&ms, e0, e1);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	if (gbps != NULL) {
		size_t bytes = 0;
		for (uint32_t n : sizes)
			bytes += n;
		*gbps = bytes / (ms * 1e-3) / 1e9;
	}
	int bad = 0;
	for (size_t c = 0; c < sizes.size(); c++) {
		uint8_t want[32];

		seal_ref_chunk(&host[at[c]], sizes[c], want);
		if (memcmp(want, &got[c * 32], 32) != 0 && bad++ < 3)
			printf("      chunk %zu (%u bytes, misaligned by %u): digest differs\n",
			    c, sizes[c], misalign);
	}
	for (size_t i = sizes.size() * 32; i < got.size(); i++)
		if (got[i] != 0xa5)
			bad++;
	return bad == 0;
}

static void
test_seal(void)
{
	/* around every SHA-256 padding boundary (55/56/63/64 bytes with the
	 * prefix), the 4 KiB block edge and the 1 MiB chunk */
	static const uint32_t edge[] = { 1, 2, 3, 4, 5, 54, 55, 56, 57, 62, 63, 64, 65,
		118, 119, 120, 127, 128, 129, 1000, 4094, 4095, 4096, 4097, 8191, 8192,
		8193, 12288, 65536 + 17, 1048575, 1048576 };
	const uint32_t mis[] = { 0, 1, 3, 16 };

	for (uint32_t m : mis) {
		std::vector<uint32_t> sizes(edge, edge + sizeof(edge) / sizeof(edge[0]));

		report(seal_case(sizes, m, NULL), "seal digests: %zu edge sizes 1 .. 1 MiB, "
		    "chunks misaligned by %u bytes, equal OpenSSL", sizes.size(), m);
	}
	/* random sizes, an odd number of chunks of odd leaf counts */
	std::vector<uint32_t> sizes;
	for (int i = 0; i < 301; i++)
		sizes.push_back(1 + (uint32_t)rng_int(1048576));
	report(seal_case(sizes, 0, NULL), "seal digests: 301 chunks of random sizes equal OpenSSL");
	/* 64 MiB of full chunks: throughput (the 400 MB / 4 GB numbers are
	 * bench/seal-bench's) */
	std::vector<uint32_t> full(64, 1048576);
	double gbps = 0;
	seal_case(full, 0, NULL);   /* warm-up */
	bool ok = seal_case(full, 0, &gbps);
	report(ok, "seal digests: 64 x 1 MiB equal OpenSSL, %.1f GB/s on the GPU", gbps);

	/* argument checks */
	report(cuda_seal_digests(NULL, NULL, 1, NULL, NULL) ==
	    (int)cudaErrorInvalidValue, "seal digests: null arguments rejected");
}

/* -------------------------------------------------------------- main */

int
main(void)
{
	int ndev = 0;
	cudaDeviceProp prop;
	const char *seed_env = getenv("ORCD_TEST_SEED");
	uint64_t seed;

	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
		printf("no CUDA device: skipped\n");
		return 77;
	}
	if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
		printf("cannot query the CUDA device: skipped\n");
		return 77;
	}
	seed = seed_env != NULL ? strtoull(seed_env, NULL, 0) :
	    (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	rng_state = seed;
	quant_init();
	printf("device: %s (sm_%d%d, %d SMs, %.0f GB); CPU kernels: %s; "
	    "seed: ORCD_TEST_SEED=%llu\n", prop.name, prop.major, prop.minor,
	    prop.multiProcessorCount, prop.totalGlobalMem / 1e9, quant_isa(),
	    (unsigned long long)seed);

	test_geometry();
	test_quantize();
	test_matmul();
	test_rmsnorm();
	test_rope();
	test_attention();
	test_add();
	test_swiglu();
	test_embed();
	test_argmax();
	test_seal();
	test_args();
	if (getenv("ORCD_TEST_NO_TIMING") == NULL)
		timings();

	printf("cuda ops: %d passed, %d failed\n", n_pass, n_fail);
	return n_fail == 0 ? 0 : 1;
}
