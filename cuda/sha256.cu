/*
 * Seal chunk digests on the GPU (doc/seal.md): a chunk's digest is the
 * Merkle root over its 4 KiB blocks.  One thread block per chunk, one
 * thread per block: each thread hashes its leaf (65 compressions for a
 * full block; a thread per 1 MiB chunk would run a few hundred long serial
 * hashes and leave the GPU idle), then the block folds the leaves level by
 * level in shared memory.  The model digest over the chunk digests is a
 * few thousand hashes at most and stays on the host.
 */
#include "orcd/cuda_ops.h"
#include "sha256.cuh"

#define SEAL_GPU_MAX_LEAVES 256    /* a 1 MiB chunk */

__constant__ uint32_t sha256_k[64] = {
	0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u,
	0x923f82a4u, 0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
	0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u,
	0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
	0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u,
	0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
	0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
	0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
	0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au,
	0x5b9cca4fu, 0x682e6ff3u, 0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
	0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

__device__ void
sha256_compress(uint32_t h[8], const uint32_t m[16])
{
	uint32_t w[16];
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
	uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];

#pragma unroll
	for (int i = 0; i < 16; i++)
		w[i] = m[i];
#pragma unroll
	for (int i = 0; i < 64; i++) {
		if (i >= 16) {
			const uint32_t w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
			const uint32_t s0 = sha256_rotr(w15, 7) ^ sha256_rotr(w15, 18) ^ (w15 >> 3);
			const uint32_t s1 = sha256_rotr(w2, 17) ^ sha256_rotr(w2, 19) ^ (w2 >> 10);

			w[i & 15] += s0 + w[(i - 7) & 15] + s1;
		}
		const uint32_t S1 = sha256_rotr(e, 6) ^ sha256_rotr(e, 11) ^ sha256_rotr(e, 25);
		const uint32_t ch = (e & f) ^ (~e & g);
		const uint32_t t1 = hh + S1 + ch + sha256_k[i] + w[i & 15];
		const uint32_t S0 = sha256_rotr(a, 2) ^ sha256_rotr(a, 13) ^ sha256_rotr(a, 22);
		const uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
		const uint32_t t2 = S0 + mj;

		hh = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d;
	h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

namespace {

/* Byte j of the leaf message 0x00 || data[0..n) || padding, for the
 * message blocks the word-wise path does not cover. */
__device__ __forceinline__ uint32_t
leaf_msg_byte(const uint8_t *data, uint32_t n, uint32_t j, uint32_t total)
{
	const uint64_t bits = (uint64_t)(n + 1) * 8;

	if (j == 0)
		return 0;
	if (j <= n)
		return data[j - 1];
	if (j == n + 1)
		return 0x80;
	if (j >= total - 8)
		return (uint32_t)(bits >> (8 * (total - 1 - j))) & 0xffu;
	return 0;
}

/* SHA-256(0x00 || data[0..n)), 1 <= n <= 4096. */
__device__ void
seal_leaf(const uint8_t *data, uint32_t n, uint32_t h[8])
{
	const uint32_t total = ((n + 1 + 8) / 64 + 1) * 64;  /* padded bytes */
	uint32_t m[16];
	uint32_t fast = 0, i;

	sha256_init(h);
	if (((uintptr_t)data & 15) == 0) {
		/* Message blocks made only of data bytes: block i holds data
		 * bytes 64i-1 .. 64i+62. */
		const uint4 *q = (const uint4 *)data;
		uint32_t prev = 0;    /* the byte before data: the 0x00 prefix */

		fast = (n + 1) / 64;
		for (i = 0; i < fast; i++) {
			uint32_t d[16];
#pragma unroll
			for (int k = 0; k < 4; k++) {
				const uint4 v = q[4 * i + k];

				d[4 * k + 0] = sha256_bswap(v.x);
				d[4 * k + 1] = sha256_bswap(v.y);
				d[4 * k + 2] = sha256_bswap(v.z);
				d[4 * k + 3] = sha256_bswap(v.w);
			}
			m[0] = sha256_shift1(prev, d[0]);
#pragma unroll
			for (int k = 1; k < 16; k++)
				m[k] = sha256_shift1(d[k - 1], d[k]);
			prev = d[15];
			sha256_compress(h, m);
		}
	}
	for (i = fast; i < total / 64; i++) {
		for (int k = 0; k < 16; k++) {
			const uint32_t j = i * 64 + 4 * k;

			m[k] = leaf_msg_byte(data, n, j, total) << 24 |
			    leaf_msg_byte(data, n, j + 1, total) << 16 |
			    leaf_msg_byte(data, n, j + 2, total) << 8 |
			    leaf_msg_byte(data, n, j + 3, total);
		}
		sha256_compress(h, m);
	}
}

/* One thread block per chunk: thread t hashes leaf t into shared memory,
 * then the block folds the leaves level by level. */
__global__ void __launch_bounds__(SEAL_GPU_MAX_LEAVES)
seal_chunk_kernel(const uint8_t *const *ptr, const uint32_t *len, uint8_t *out)
{
	__shared__ uint32_t node[SEAL_GPU_MAX_LEAVES][8];
	const int c = blockIdx.x;
	const uint32_t bytes = len[c];
	uint32_t n = (bytes + SEAL_GPU_BLOCK_BYTES - 1) / SEAL_GPU_BLOCK_BYTES;

	if (n > SEAL_GPU_MAX_LEAVES)   /* the host wrapper rejects these */
		return;
	if (threadIdx.x < n) {
		const uint32_t off = threadIdx.x * SEAL_GPU_BLOCK_BYTES;

		seal_leaf(ptr[c] + off, min(bytes - off, SEAL_GPU_BLOCK_BYTES), node[threadIdx.x]);
	}
	__syncthreads();
	while (n > 1) {
		const uint32_t parents = n / 2;
		uint32_t p[8];
		bool have = false;

		/* everything of this level is read before anyone writes */
		if (threadIdx.x < parents) {
			sha256_parent(node[2 * threadIdx.x], node[2 * threadIdx.x + 1], p);
			have = true;
		} else if (threadIdx.x == parents && (n & 1)) {
#pragma unroll
			for (int k = 0; k < 8; k++)
				p[k] = node[n - 1][k];   /* the odd node carried up */
			have = true;
		}
		__syncthreads();
		if (have) {
#pragma unroll
			for (int k = 0; k < 8; k++)
				node[threadIdx.x][k] = p[k];
		}
		__syncthreads();
		n = parents + (n & 1);
	}
	if (threadIdx.x < 32) {
		const uint32_t w = node[0][threadIdx.x / 4];

		out[(size_t)c * 32 + threadIdx.x] = (uint8_t)(w >> (24 - 8 * (threadIdx.x % 4)));
	}
}

} /* namespace */

extern "C" int
cuda_seal_digests(const uint8_t *const *ptr, const uint32_t *len, int n_chunks,
    uint8_t *out, void *stream)
{
	CUDA_OPS_CHECK(ptr != NULL && len != NULL && out != NULL && n_chunks > 0);
	seal_chunk_kernel<<<n_chunks, SEAL_GPU_MAX_LEAVES, 0, cuda_ops_stream(stream)>>>(ptr,
	    len, out);
	return cuda_ops_launched();
}
