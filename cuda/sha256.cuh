/*
 * SHA-256 on the GPU for the seal digests (doc/seal.md): the compression
 * function over sixteen big-endian message words, and the two hashes the
 * seal's Merkle trees need, leaf = SHA-256(0x00 || block) and
 * parent = SHA-256(0x01 || left || right).  Both prefixes are one byte, so
 * every message word straddles two words of the input; a funnel shift
 * builds it from two loads instead of byte-wise assembly.
 */
#ifndef ORCD_CUDA_SHA256_CUH
#define ORCD_CUDA_SHA256_CUH

#include "common.cuh"

#define SEAL_GPU_BLOCK_BYTES 4096u

__device__ __forceinline__ uint32_t
sha256_rotr(uint32_t x, int n)
{
	return __funnelshift_r(x, x, n);
}

/* Little-endian load of 4 bytes -> the big-endian word SHA-256 reads. */
__device__ __forceinline__ uint32_t
sha256_bswap(uint32_t x)
{
	return __byte_perm(x, 0, 0x0123);
}

/* Byte-oriented message word: (hi << 24) | (lo >> 8), i.e. the word that
 * starts one byte before lo. */
__device__ __forceinline__ uint32_t
sha256_shift1(uint32_t hi, uint32_t lo)
{
	return __funnelshift_r(lo, hi, 8);
}

__device__ __forceinline__ void
sha256_init(uint32_t h[8])
{
	h[0] = 0x6a09e667u; h[1] = 0xbb67ae85u; h[2] = 0x3c6ef372u; h[3] = 0xa54ff53au;
	h[4] = 0x510e527fu; h[5] = 0x9b05688cu; h[6] = 0x1f83d9abu; h[7] = 0x5be0cd19u;
}

__device__ void sha256_compress(uint32_t h[8], const uint32_t m[16]);

/* SHA-256(0x01 || left || right), digests as big-endian state words. */
__device__ __forceinline__ void
sha256_parent(const uint32_t l[8], const uint32_t r[8], uint32_t out[8])
{
	uint32_t m[16];

	sha256_init(out);
	m[0] = sha256_shift1(0x01u, l[0]);
#pragma unroll
	for (int i = 1; i < 8; i++)
		m[i] = sha256_shift1(l[i - 1], l[i]);
	m[8] = sha256_shift1(l[7], r[0]);
#pragma unroll
	for (int i = 9; i < 16; i++)
		m[i] = sha256_shift1(r[i - 9], r[i - 8]);
	sha256_compress(out, m);
	/* 65 bytes: the last byte of r, then the 0x80 pad, the bit length */
	m[0] = (r[7] << 24) | 0x00800000u;
#pragma unroll
	for (int i = 1; i < 15; i++)
		m[i] = 0;
	m[15] = 65u * 8u;
	sha256_compress(out, m);
}

#endif
