/*
 * Block geometry and names of the tensor element types (GGUF / ggml type
 * ids).  Only the types orcd can compute with are described; everything
 * else reports size 0 so that the model loader rejects it.
 */
#include <stddef.h>
#include <stdint.h>

#include "orcd/dtype.h"

struct dtype_info {
	const char *name;
	uint32_t block_elems;
	uint32_t block_bytes;
	bool weight;
};

static const struct dtype_info dtype_table[ORCD_DTYPE_COUNT] = {
	[ORCD_DTYPE_F32] = { "f32", 1, 4, true },
	[ORCD_DTYPE_F16] = { "f16", 1, 2, true },
	[ORCD_DTYPE_BF16] = { "bf16", 1, 2, true },
	[ORCD_DTYPE_Q4_0] = { "q4_0", ORCD_QK, 2 + ORCD_QK / 2, true },
	[ORCD_DTYPE_Q4_1] = { "q4_1", ORCD_QK, 4 + ORCD_QK / 2, true },
	[ORCD_DTYPE_Q5_0] = { "q5_0", ORCD_QK, 6 + ORCD_QK / 2, true },
	[ORCD_DTYPE_Q5_1] = { "q5_1", ORCD_QK, 8 + ORCD_QK / 2, true },
	[ORCD_DTYPE_Q8_0] = { "q8_0", ORCD_QK, 2 + ORCD_QK, true },
	[ORCD_DTYPE_Q8_1] = { "q8_1", ORCD_QK, 4 + ORCD_QK, false },
	[ORCD_DTYPE_Q4_K] = { "q4_K", ORCD_QK_K, 4 + 12 + ORCD_QK_K / 2, true },
	[ORCD_DTYPE_Q5_K] = { "q5_K", ORCD_QK_K,
	    4 + 12 + ORCD_QK_K / 8 + ORCD_QK_K / 2, true },
	[ORCD_DTYPE_Q6_K] = { "q6_K", ORCD_QK_K,
	    2 + ORCD_QK_K / 16 + 3 * ORCD_QK_K / 4, true },
	[ORCD_DTYPE_Q8_K] = { "q8_K", ORCD_QK_K,
	    4 + ORCD_QK_K + 2 * (ORCD_QK_K / 16), false },
};

static const struct dtype_info *
dtype_lookup(int type)
{
	if (type < 0 || type >= ORCD_DTYPE_COUNT)
		return NULL;
	if (dtype_table[type].name == NULL)
		return NULL;
	return &dtype_table[type];
}

size_t
dtype_block_elems(int type)
{
	const struct dtype_info *d = dtype_lookup(type);

	return d != NULL ? d->block_elems : 0;
}

size_t
dtype_block_bytes(int type)
{
	const struct dtype_info *d = dtype_lookup(type);

	return d != NULL ? d->block_bytes : 0;
}

const char *
dtype_name(int type)
{
	const struct dtype_info *d = dtype_lookup(type);

	return d != NULL ? d->name : NULL;
}

bool
dtype_is_weight_type(int type)
{
	const struct dtype_info *d = dtype_lookup(type);

	return d != NULL && d->weight;
}

bool
dtype_row_bytes(int type, uint64_t n, uint64_t *bytes)
{
	const struct dtype_info *d = dtype_lookup(type);

	if (d == NULL || n % d->block_elems != 0)
		return false;
	/* Reject sizes whose byte count would not fit in 64 bits. */
	if (n / d->block_elems > UINT64_MAX / d->block_bytes)
		return false;
	*bytes = n / d->block_elems * d->block_bytes;
	return true;
}
