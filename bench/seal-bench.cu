/*
 * bench/seal-bench: the seal digest (doc/seal.md) of weights in VRAM, the
 * GPU kernel against OpenSSL on the CPU (the code `orcd verify` and the
 * CPU backend run) on the same bytes in the same run.  For each size
 * (default 400 MB and 4 GB): fills a device buffer with pseudo-random
 * bytes, times the GPU verify (chunk digests kernel, copy back, Merkle top
 * on the host: what a re-verification costs) as the median of REPS, then
 * copies the bytes to the host and times OpenSSL with one thread and with
 * every core; checks the GPU digest equals the CPU's and prints GB/s and
 * the ratios.
 *
 * usage: seal-bench [-r REPS] [-t THREADS] [SIZE_MB ...]
 */
#include <cuda_runtime.h>

#include <algorithm>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vector>

extern "C" {
#include "seal.h"
}
#include "orcd/cuda_ops.h"

#define CHUNK (1u << 20)

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

__global__ void
fill_kernel(uint64_t *p, size_t n, uint64_t seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	    i += (size_t)gridDim.x * blockDim.x) {
		uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		p[i] = z ^ (z >> 31);
	}
}

struct cpu_job {
	const uint8_t *base;
	size_t bytes, first, last;   /* chunks [first, last) */
	uint8_t (*out)[32];
};

static void *
cpu_worker(void *arg)
{
	struct cpu_job *j = (struct cpu_job *)arg;

	for (size_t c = j->first; c < j->last; c++) {
		size_t off = c * CHUNK;

		seal_chunk_digest(j->base + off, std::min<size_t>(CHUNK, j->bytes - off), j->out[c]);
	}
	return NULL;
}

/* OpenSSL over host memory with nt threads; seconds. */
static double
cpu_digest(const uint8_t *h, size_t bytes, size_t n_chunks, int nt, uint8_t (*out)[32],
    uint8_t root[32])
{
	std::vector<pthread_t> th(nt);
	std::vector<cpu_job> jobs(nt);
	double t0 = now_s();

	for (int i = 0; i < nt; i++) {
		jobs[i] = { h, bytes, n_chunks * i / nt, n_chunks * (i + 1) / nt, out };
		pthread_create(&th[i], NULL, cpu_worker, &jobs[i]);
	}
	for (int i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	seal_merkle_root(out, n_chunks, root);
	return now_s() - t0;
}

static int
bench_size(size_t bytes, int reps, int nt)
{
	const size_t n_chunks = (bytes + CHUNK - 1) / CHUNK;
	std::vector<const uint8_t *> ptrs(n_chunks);
	std::vector<uint32_t> lens(n_chunks);
	std::vector<double> t_gpu;
	uint8_t (*g)[32] = (uint8_t (*)[32])malloc(n_chunks * 32);
	uint8_t (*c)[32] = (uint8_t (*)[32])malloc(n_chunks * 32);
	uint8_t groot[32], croot[32];
	uint8_t *d = NULL, *h = NULL, *dout = NULL;
	const uint8_t **dptr = NULL;
	uint32_t *dlen = NULL;
	cudaStream_t s;
	int rc = 1;

	if (g == NULL || c == NULL || cudaMalloc(&d, bytes + 8) != cudaSuccess ||
	    cudaMalloc(&dout, n_chunks * 32) != cudaSuccess ||
	    cudaMalloc(&dptr, n_chunks * sizeof(void *)) != cudaSuccess ||
	    cudaMalloc(&dlen, n_chunks * 4) != cudaSuccess ||
	    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
		fprintf(stderr, "seal-bench: cannot allocate %zu bytes of VRAM\n", bytes);
		goto out;
	}
	fill_kernel<<<1024, 256, 0, s>>>((uint64_t *)d, (bytes + 7) / 8, 42);
	for (size_t i = 0; i < n_chunks; i++) {
		ptrs[i] = d + i * CHUNK;
		lens[i] = (uint32_t)std::min<size_t>(CHUNK, bytes - i * CHUNK);
	}
	cudaMemcpyAsync(dptr, ptrs.data(), n_chunks * sizeof(void *), cudaMemcpyHostToDevice, s);
	cudaMemcpyAsync(dlen, lens.data(), n_chunks * 4, cudaMemcpyHostToDevice, s);
	cudaStreamSynchronize(s);
	for (int r = 0; r <= reps; r++) {   /* the first run warms up */
		double t0 = now_s();

		if (cuda_seal_digests(dptr, dlen, (int)n_chunks, dout, s) != 0 ||
		    cudaMemcpyAsync(g, dout, n_chunks * 32, cudaMemcpyDeviceToHost, s) != cudaSuccess ||
		    cudaStreamSynchronize(s) != cudaSuccess) {
			fprintf(stderr, "seal-bench: GPU digest failed: %s\n",
			    cudaGetErrorString(cudaGetLastError()));
			goto out;
		}
		seal_merkle_root(g, n_chunks, groot);
		if (r > 0)
			t_gpu.push_back(now_s() - t0);
	}
	std::sort(t_gpu.begin(), t_gpu.end());

	if ((h = (uint8_t *)malloc(bytes)) == NULL ||
	    cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
		fprintf(stderr, "seal-bench: cannot copy %zu bytes to the host\n", bytes);
		goto out;
	}
	{
		const double tg = t_gpu[t_gpu.size() / 2];
		const double gb = (double)bytes / 1e9;
		double t1 = -1, tn;

		/* one thread only on sizes that take seconds, not minutes */
		if (bytes <= (size_t)1 << 30)
			t1 = cpu_digest(h, bytes, n_chunks, 1, c, croot);
		tn = cpu_digest(h, bytes, n_chunks, nt, c, croot);
		const bool same = memcmp(g, c, n_chunks * 32) == 0 && memcmp(groot, croot, 32) == 0;

		printf("%7.0f MB: GPU verify %8.3f ms (%6.1f GB/s, median of %d; min %.3f ms)",
		    bytes / 1e6, tg * 1e3, gb / tg, reps, t_gpu[0] * 1e3);
		if (t1 > 0)
			printf(" | OpenSSL 1 thread %8.1f ms (%5.2f GB/s, GPU %.0fx)", t1 * 1e3,
			    gb / t1, t1 / tg);
		printf(" | OpenSSL %d threads %8.1f ms (%5.2f GB/s, GPU %.1fx) | digests %s\n", nt,
		    tn * 1e3, gb / tn, tn / tg, same ? "equal" : "DIFFER");
		if (bytes == 400000000)
			printf("         target GPU verify of 400 MB < 10 ms: %s\n",
			    tg < 0.010 ? "met" : "NOT met");
		rc = same ? 0 : 1;
	}
out:
	free(g);
	free(c);
	free(h);
	cudaFree(d);
	cudaFree(dout);
	cudaFree(dptr);
	cudaFree(dlen);
	return rc;
}

int
main(int argc, char **argv)
{
	int reps = 10, nt = (int)sysconf(_SC_NPROCESSORS_ONLN), opt, rc = 0, n = 0;
	cudaDeviceProp prop;

	while ((opt = getopt(argc, argv, "r:t:")) != -1) {
		if (opt == 'r')
			reps = atoi(optarg);
		else if (opt == 't')
			nt = atoi(optarg);
		else {
			fprintf(stderr, "usage: seal-bench [-r REPS] [-t THREADS] [SIZE_MB ...]\n");
			return 2;
		}
	}
	if (reps < 1 || nt < 1) {
		fprintf(stderr, "seal-bench: -r and -t take positive numbers\n");
		return 2;
	}
	if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0 ||
	    cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
		fprintf(stderr, "seal-bench: no CUDA device\n");
		return 1;
	}
	printf("== seal digest (SHA-256 Merkle, 1 MiB chunks of 4 KiB leaves): %s, %d SMs; "
	    "host %ld CPUs\n", prop.name, prop.multiProcessorCount, sysconf(_SC_NPROCESSORS_ONLN));
	if (optind == argc) {
		rc |= bench_size(400000000, reps, nt);
		rc |= bench_size(4000000000ull, reps, nt);
	}
	for (int i = optind; i < argc; i++) {
		long mb = atol(argv[i]);

		if (mb <= 0) {
			fprintf(stderr, "seal-bench: bad size %s (megabytes)\n", argv[i]);
			return 2;
		}
		rc |= bench_size((size_t)mb * 1000000, reps, nt);
	}
	return rc;
}
