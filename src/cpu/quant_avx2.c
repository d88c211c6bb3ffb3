/* AVX2 kernels (placeholder while the AVX-512 path is validated). */
#include <immintrin.h>
#include "cpu/quant_impl.h"
const struct quant_kernels quant_kernels_avx2 = {
	.name = "avx2",
	.matmul = {
		[ORCD_DTYPE_F32] = quant_scalar_matmul_f32,
		[ORCD_DTYPE_F16] = quant_scalar_matmul_f16,
		[ORCD_DTYPE_BF16] = quant_scalar_matmul_bf16,
		[ORCD_DTYPE_Q4_0] = quant_scalar_matmul_q4_0,
		[ORCD_DTYPE_Q4_1] = quant_scalar_matmul_q4_1,
		[ORCD_DTYPE_Q5_0] = quant_scalar_matmul_q5_0,
		[ORCD_DTYPE_Q5_1] = quant_scalar_matmul_q5_1,
		[ORCD_DTYPE_Q8_0] = quant_scalar_matmul_q8_0,
		[ORCD_DTYPE_Q4_K] = quant_scalar_matmul_q4_K,
		[ORCD_DTYPE_Q5_K] = quant_scalar_matmul_q5_K,
		[ORCD_DTYPE_Q6_K] = quant_scalar_matmul_q6_K,
	},
	.quantize_q8_0 = quant_scalar_quantize_q8_0,
	.quantize_q8_1 = quant_scalar_quantize_q8_1,
	.quantize_q8_K = quant_scalar_quantize_q8_K,
	.fp16_from_fp32 = quant_scalar_fp16_from_fp32,
	.fp32_from_fp16 = quant_scalar_fp32_from_fp16,
};
