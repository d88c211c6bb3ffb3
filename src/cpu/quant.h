/*
 * Quantized tensor formats on the CPU: dequantization, quantization (for
 * activations and for the model generator) and the dot-product kernels the
 * forward pass is built on.  Scalar reference paths plus AVX2 / AVX-512
 * variants chosen once at run time (quant_init).
 *
 * A weight row of type T is multiplied with an activation row that has first
 * been converted to quant_vec_dot_type(T) (as llama.cpp does, so results
 * match it closely): F32 -> F32, F16 -> F16, BF16 -> BF16, Q4_0/Q5_0/Q8_0 ->
 * Q8_0, Q4_1/Q5_1 -> Q8_1, Q4_K/Q5_K/Q6_K -> Q8_K.
 */
#ifndef ORCD_CPU_QUANT_H
#define ORCD_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "orcd/dtype.h"

/* Picks the best kernels for this CPU; safe to call more than once.
 * ORCD_CPU_ISA=scalar|avx2|avx512 in the environment caps the choice. */
void quant_init(void);
/* Name of the kernel set in use: "scalar", "avx2" or "avx512" (or
 * "avx512vnni", the avx512 set using the VNNI dot-product instructions). */
const char *quant_isa(void);
/* Switches to the named kernel set ("scalar", "avx2", "avx512",
 * "avx512vnni"), ignoring ORCD_CPU_ISA; -1 if this CPU or build lacks it.
 * For tests and benchmarks: not to be called while kernels are running. */
int quant_set_isa(const char *name);

/* The activation type a weight of type t is multiplied with. */
enum orcd_dtype quant_vec_dot_type(enum orcd_dtype t);

/* n must be a multiple of the type's block size. */
void quant_dequantize_row(enum orcd_dtype t, const void *src, float *dst, int64_t n);
void quant_quantize_row(enum orcd_dtype t, const float *src, void *dst, int64_t n);

/* out[c * ldo + r] = dot(weight row r, activation row c) for r < nr, c < nc.
 * w: nr rows of type t, w_stride bytes apart; a: nc rows of type
 * quant_vec_dot_type(t), a_stride bytes apart; each row has n elements.
 * Any nr, nc >= 1 are valid.  The SIMD kernels pack up to 8 activation
 * columns at a time and stream each weight row past them once, reading the
 * weights sequentially (nc = 1 is memory-bound); for larger nc the rows are
 * blocked for L2 and the k range for L1.  Thread-safe.  The packed
 * columns live in a 24 KB stack buffer when they fit (32-element types: 2
 * bytes per element and column; K-quants: 0.5), else in a malloc'd one (if
 * that fails the scalar kernel runs instead). */
void quant_matmul(enum orcd_dtype t, int64_t n,
    const void *w, size_t w_stride, int nr,
    const void *a, size_t a_stride, int nc,
    float *out, size_t ldo);

/* Single dot product, the nr = nc = 1 case. */
float quant_vec_dot(enum orcd_dtype t, int64_t n, const void *w, const void *a);

/* fp16 / bf16 helpers (IEEE round-to-nearest-even, as F16C does). */
uint16_t quant_fp32_to_fp16(float f);
float quant_fp16_to_fp32(uint16_t h);
uint16_t quant_fp32_to_bf16(float f);
float quant_bf16_to_fp32(uint16_t h);
/* Row conversions with the same rounding (vectorised). */
void quant_fp16_row_from_fp32(const float *src, uint16_t *dst, int64_t n);
void quant_fp32_row_from_fp16(const uint16_t *src, float *dst, int64_t n);

#endif
