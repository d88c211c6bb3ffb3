/*
 * Tensor element types, numbered as in the GGUF file format (ggml type ids),
 * and their block geometry.  Shared by the CPU engine, the CUDA backend and
 * the model generator.
 */
#ifndef ORCD_DTYPE_H
#define ORCD_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

enum orcd_dtype {
	ORCD_DTYPE_F32 = 0,
	ORCD_DTYPE_F16 = 1,
	ORCD_DTYPE_Q4_0 = 2,
	ORCD_DTYPE_Q4_1 = 3,
	ORCD_DTYPE_Q5_0 = 6,
	ORCD_DTYPE_Q5_1 = 7,
	ORCD_DTYPE_Q8_0 = 8,
	ORCD_DTYPE_Q8_1 = 9,   /* activations only (dot partner of Q4_1/Q5_1) */
	ORCD_DTYPE_Q4_K = 12,
	ORCD_DTYPE_Q5_K = 13,
	ORCD_DTYPE_Q6_K = 14,
	ORCD_DTYPE_Q8_K = 15,  /* activations only (dot partner of K-quants) */
	ORCD_DTYPE_BF16 = 30,
	ORCD_DTYPE_COUNT = 40, /* upper bound of ids, for tables */
};

#define ORCD_QK 32   /* elements per block of the legacy quants */
#define ORCD_QK_K 256 /* elements per super-block of the K-quants */

/* Block sizes in elements and bytes; 0 for ids orcd does not support. */
size_t dtype_block_elems(int type);
size_t dtype_block_bytes(int type);
/* Short name ("q4_K", "f16"), or NULL if unsupported. */
const char *dtype_name(int type);
/* True if a model tensor may use this type (the activation-only Q8_1 and Q8_K
 * are not valid weight types). */
bool dtype_is_weight_type(int type);
/* Bytes of a row of n elements; false if n is not a whole number of blocks
 * or the type is unsupported. */
bool dtype_row_bytes(int type, uint64_t n, uint64_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
