/*
 * The integer AVX-512 kernels, included twice by quant_avx512.c: with
 * QUANT_VNNI 0 (AVX-512BW multiply-adds) and QUANT_VNNI 1 (VPDPBUSD /
 * VPDPWSSD, compiled under a target pragma).  QUANT_SUFFIX names the copy.
 * Not a header of its own: only quant_avx512.c may include it.
 */

#define QCAT2(a, b) a##b
#define QCAT(a, b) QCAT2(a, b)
#define FN(x) QCAT(x, QUANT_SUFFIX)

/*
 * acc + sum of u8 x s8 products, four per 32-bit lane.  Without VNNI the
 * pairs go through int16 (maddubs), which is exact while each pair of
 * products fits: callers keep the unsigned side below 128.
 */
#if QUANT_VNNI
#define DPBUSD(acc, u, s) _mm512_dpbusd_epi32((acc), (u), (s))
#define DPWSSD(acc, x, y) _mm512_dpwssd_epi32((acc), (x), (y))
#else
#define DPBUSD(acc, u, s) _mm512_add_epi32((acc), _mm512_madd_epi16(	\
	_mm512_maddubs_epi16((u), (s)), _mm512_set1_epi16(1)))
#define DPWSSD(acc, x, y) _mm512_add_epi32((acc), _mm512_madd_epi16((x), (y)))
#endif

/* --------------------------------------------- legacy 32-element blocks */

/*
 * A unit is two consecutive blocks (64 elements).  Weights become unsigned
 * bytes q with a per-type offset o (the value is q - o): the offset is
 * taken out once per activation block, as -o * sum(a) spread over the
 * same int32 lanes the products land in.
 */

QUANT_INLINE int
FN(lg_wbytes)(enum orcd_dtype t)
{
	switch (t) {
	case ORCD_DTYPE_Q4_0: return 18;
	case ORCD_DTYPE_Q4_1: return 20;
	case ORCD_DTYPE_Q5_0: return 22;
	case ORCD_DTYPE_Q5_1: return 24;
	default: return 34;
	}
}

QUANT_INLINE int
FN(lg_offset)(enum orcd_dtype t)
{
	switch (t) {
	case ORCD_DTYPE_Q4_0: return 8;
	case ORCD_DTYPE_Q5_0: return 16;
	/* Q8_0: w + 128 is the unsigned operand of VPDPBUSD. */
	case ORCD_DTYPE_Q8_0: return QUANT_VNNI ? 128 : 0;
	default: return 0;
	}
}

QUANT_INLINE int
FN(lg_has_min)(enum orcd_dtype t)
{
	return t == ORCD_DTYPE_Q4_1 || t == ORCD_DTYPE_Q5_1;
}

struct FN(lg_col) {
	__m512i q;	/* activation bytes */
	__m512i corr;	/* -o * sums of 4 activations, per int32 lane */
	__m512 d;	/* activation scales, 8 lanes per block */
	__m512 s;	/* Q8_1 only: d * sum(q) per block */
};

QUANT_INLINE void
FN(lg_load_col)(enum orcd_dtype t, const uint8_t *y, int two,
    struct FN(lg_col) *col)
{
	const int ab = FN(lg_has_min)(t) ? 36 : 34;
	const int qoff = FN(lg_has_min)(t) ? 4 : 2;
	const int o = FN(lg_offset)(t);

	col->q = bytes2(y + qoff, y + ab + qoff, two);
	col->d = scales2(load_u16(y), two ? load_u16(y + ab) : 0);
	if (FN(lg_has_min)(t))
		col->s = scales2(load_u16(y + 2), two ? load_u16(y + ab + 2) : 0);
	if (o != 0)
		col->corr = _mm512_madd_epi16(_mm512_maddubs_epi16(
		    _mm512_set1_epi8((char)o), col->q), _mm512_set1_epi16(-1));
	else
		col->corr = _mm512_setzero_si512();
}

struct FN(lg_row) {
	__m512i q;	/* unsigned weight bytes (|w| for Q8_0 without VNNI) */
	__mmask64 neg;	/* Q8_0 without VNNI: lanes where w < 0 */
	__m512 d;
	__m512 m;	/* Q4_1 / Q5_1: the block min, once per block */
};

QUANT_INLINE void
FN(lg_load_row)(enum orcd_dtype t, const uint8_t *x, int two,
    struct FN(lg_row) *row)
{
	const int wb = FN(lg_wbytes)(t);
	const uint8_t *x1 = x + wb;

	row->d = scales2(load_u16(x), two ? load_u16(x1) : 0);
	switch (t) {
	case ORCD_DTYPE_Q4_0:
		row->q = nibbles2(x + 2, x1 + 2, two);
		break;
	case ORCD_DTYPE_Q4_1:
		row->q = nibbles2(x + 4, x1 + 4, two);
		row->m = scales2_once(load_u16(x + 2), two ? load_u16(x1 + 2) : 0);
		break;
	case ORCD_DTYPE_Q5_0:
	case ORCD_DTYPE_Q5_1: {
		const int hoff = t == ORCD_DTYPE_Q5_0 ? 2 : 4;
		const uint64_t qh = load_u32(x + hoff) |
		    (two ? (uint64_t)load_u32(x1 + hoff) << 32 : 0);

		const __m512i nib = nibbles2(x + hoff + 4, x1 + hoff + 4, two);

		/* qh bit j is the fifth bit of element j: a byte mask as is. */
		row->q = _mm512_mask_add_epi8(nib, _cvtu64_mask64(qh), nib,
		    _mm512_set1_epi8(16));
		if (t == ORCD_DTYPE_Q5_1)
			row->m = scales2_once(load_u16(x + 2),
			    two ? load_u16(x1 + 2) : 0);
		break;
	}
	default: {
		__m512i w = bytes2(x + 2, x1 + 2, two);

		if (QUANT_VNNI) {
			row->q = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
		} else {
			row->q = _mm512_abs_epi8(w);
			row->neg = _mm512_movepi8_mask(w);
		}
		break;
	}
	}
}

QUANT_INLINE void
FN(lg_step)(enum orcd_dtype t, const uint8_t *const *wr, const uint8_t *const *ac,
    int R, int C, int64_t b, int two, __m512 acc[4][4])
{
	const int wb = FN(lg_wbytes)(t);
	const int ab = FN(lg_has_min)(t) ? 36 : 34;
	struct FN(lg_col) col[4];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		FN(lg_load_col)(t, ac[c] + b * ab, two, &col[c]);
#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		struct FN(lg_row) row;

		FN(lg_load_row)(t, wr[r] + b * wb, two, &row);
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			__m512i aq = col[c].q, sum;

			if (t == ORCD_DTYPE_Q8_0 && !QUANT_VNNI)
				aq = _mm512_mask_sub_epi8(aq, row.neg,
				    _mm512_setzero_si512(), aq);
			sum = DPBUSD(col[c].corr, row.q, aq);
			acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
			    _mm512_mul_ps(row.d, col[c].d), acc[r][c]);
			if (FN(lg_has_min)(t))
				acc[r][c] = _mm512_fmadd_ps(row.m, col[c].s, acc[r][c]);
		}
	}
}

QUANT_INLINE void
FN(lg_tile)(enum orcd_dtype t, const struct mm_args *p, int r0, int c0, int R,
    int C)
{
	const int64_t nb = p->n / QUANT_QK;
	const uint8_t *wr[4], *ac[4];
	__m512 acc[4][4];
	int64_t b = 0;

#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		wr[r] = p->w + (size_t)(r0 + r) * p->ws;
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	}
#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		ac[c] = p->a + (size_t)(c0 + c) * p->as;
	for (; b + 2 <= nb; b += 2)
		FN(lg_step)(t, wr, ac, R, C, b, 1, acc);
	if (b < nb)
		FN(lg_step)(t, wr, ac, R, C, b, 0, acc);
	store_tile(p, r0, c0, R, C, acc);
}

#define Q4_0_TILE(p, r0, c0, R, C) FN(lg_tile)(ORCD_DTYPE_Q4_0, p, r0, c0, R, C)
#define Q4_1_TILE(p, r0, c0, R, C) FN(lg_tile)(ORCD_DTYPE_Q4_1, p, r0, c0, R, C)
#define Q5_0_TILE(p, r0, c0, R, C) FN(lg_tile)(ORCD_DTYPE_Q5_0, p, r0, c0, R, C)
#define Q5_1_TILE(p, r0, c0, R, C) FN(lg_tile)(ORCD_DTYPE_Q5_1, p, r0, c0, R, C)
#define Q8_0_TILE(p, r0, c0, R, C) FN(lg_tile)(ORCD_DTYPE_Q8_0, p, r0, c0, R, C)
MM_TILE_SET(FN(q4_0), Q4_0_TILE)
MM_TILE_SET(FN(q4_1), Q4_1_TILE)
MM_TILE_SET(FN(q5_0), Q5_0_TILE)
MM_TILE_SET(FN(q5_1), Q5_1_TILE)
MM_TILE_SET(FN(q8_0), Q8_0_TILE)
#undef Q4_0_TILE
#undef Q4_1_TILE
#undef Q5_0_TILE
#undef Q5_1_TILE
#undef Q8_0_TILE

/* ------------------------------------------------ K-quant super-blocks */

/*
 * Q4_K / Q5_K: chunk p (64 elements) of the weights is sub-blocks 2p and
 * 2p + 1; maddubs turns it into 32 int16 pair sums that a multiply-add
 * with the two 6-bit scales (16 lanes each) folds into int32.  The mins
 * term, dmin * m_s * sum(a over s), is gathered for all columns of the
 * tile in one vector per row.
 */
QUANT_INLINE void
FN(k45_tile)(enum orcd_dtype t, const struct mm_args *p, int r0, int c0, int R,
    int C)
{
	const int64_t nb = p->n / QUANT_QK_K;
	const size_t wb = t == ORCD_DTYPE_Q4_K ? sizeof(struct quant_block_q4_K) :
	    sizeof(struct quant_block_q5_K);
	const __m512i m4 = _mm512_set1_epi8(0x0f);
	const __m512i sh04 = _mm512_set_epi64(0x0004000400040004,
	    0x0004000400040004, 0x0004000400040004, 0x0004000400040004,
	    0, 0, 0, 0);
	const uint8_t *wr[4];
	const struct quant_block_q8_K *ac[4];
	__m512 acc[4][4], accm[4];

#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		wr[r] = p->w + (size_t)(r0 + r) * p->ws;
		accm[r] = _mm512_setzero_ps();
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	}
#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		ac[c] = (const struct quant_block_q8_K *)(p->a + (size_t)(c0 + c) * p->as);

	for (int64_t i = 0; i < nb; i++) {
		__m512i asum = _mm512_setzero_si512();
		__m512 ad4 = _mm512_setzero_ps(), ad[4];

		/* Per column: d, and sums of a per 32-element sub-block. */
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			const struct quant_block_q8_K *y = &ac[c][i];
			__m256i s32 = _mm256_madd_epi16(_mm256_loadu_si256(
			    (const __m256i *)y->bsums), _mm256_set1_epi16(1));

			asum = _mm512_mask_broadcast_i32x4(asum,
			    (__mmask16)(0xf << (4 * c)), _mm256_cvtepi32_epi16(s32));
			ad[c] = _mm512_set1_ps(y->d);
			ad4 = _mm512_mask_broadcastss_ps(ad4,
			    (__mmask16)(0xf << (4 * c)), _mm_set_ss(y->d));
		}
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			const uint8_t *x = wr[r] + i * wb;
			const uint8_t *qs = t == ORCD_DTYPE_Q4_K ?
			    ((const struct quant_block_q4_K *)x)->qs :
			    ((const struct quant_block_q5_K *)x)->qs;
			const __m512i sm = _mm512_zextsi256_si512(
			    k_scales_mins(x + 4));
			__m512i q[4], sc[4];

#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) {
				q[j] = _mm512_and_si512(_mm512_srlv_epi16(
				    _mm512_broadcast_i64x4(_mm256_loadu_si256(
				    (const __m256i *)(qs + 32 * j))), sh04), m4);
				sc[j] = _mm512_permutexvar_epi16(_mm512_set_epi16(
				    2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
				    2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
				    2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
				    2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
				    2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j,
				    2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j,
				    2 * j, 2 * j), sm);
			}
			if (t == ORCD_DTYPE_Q5_K) {
				const __m512i qh = _mm512_broadcast_i64x4(
				    _mm256_loadu_si256((const __m256i *)
				    ((const struct quant_block_q5_K *)x)->qh));

#pragma GCC unroll 4
				for (int j = 0; j < 4; j++) {
					__m512i bit = _mm512_mask_blend_epi8(
					    0xffffffff00000000ull,
					    _mm512_set1_epi8((char)(1 << (2 * j))),
					    _mm512_set1_epi8((char)(1 << (2 * j + 1))));

					q[j] = _mm512_mask_add_epi8(q[j],
					    _mm512_test_epi8_mask(qh, bit), q[j],
					    _mm512_set1_epi8(16));
				}
			}
			const float d = quant_half_to_float(load_u16(x));
			const float dmin = quant_half_to_float(load_u16(x + 2));
			const __m512i mins = _mm512_permutexvar_epi16(
			    _mm512_set_epi16(15, 14, 13, 12, 11, 10, 9, 8,
			    15, 14, 13, 12, 11, 10, 9, 8, 15, 14, 13, 12, 11, 10,
			    9, 8, 15, 14, 13, 12, 11, 10, 9, 8), sm);

			accm[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(
			    _mm512_madd_epi16(mins, asum)),
			    _mm512_mul_ps(_mm512_set1_ps(dmin), ad4), accm[r]);
			const __m512 vd = _mm512_set1_ps(d);
#pragma GCC unroll 4
			for (int c = 0; c < C; c++) {
				const int8_t *y = ac[c][i].qs;
				__m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(q[0],
				    _mm512_loadu_si512(y)), sc[0]);

				s = DPWSSD(s, _mm512_maddubs_epi16(q[1],
				    _mm512_loadu_si512(y + 64)), sc[1]);
				s = DPWSSD(s, _mm512_maddubs_epi16(q[2],
				    _mm512_loadu_si512(y + 128)), sc[2]);
				s = DPWSSD(s, _mm512_maddubs_epi16(q[3],
				    _mm512_loadu_si512(y + 192)), sc[3]);
				acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
				    _mm512_mul_ps(vd, ad[c]), acc[r][c]);
			}
		}
	}
	/* Column c's mins sit in lanes 4c..4c+3 of accm. */
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_mask_sub_ps(acc[r][c],
			    (__mmask16)(0xf << (4 * c)), acc[r][c], accm[r]);
	store_tile(p, r0, c0, R, C, acc);
}

/*
 * Q6_K: chunk j (64 elements) is 4 groups of 16 with int8 scales; the
 * weights are unsigned 0..63 and the -32 offset is applied through the
 * activation's per-16 sums, in the same int32 accumulator.
 */
QUANT_INLINE void
FN(q6k_tile)(const struct mm_args *p, int r0, int c0, int R, int C)
{
	const int64_t nb = p->n / QUANT_QK_K;
	const __m512i m4 = _mm512_set1_epi8(0x0f);
	const __m512i m30 = _mm512_set1_epi8(0x30);
	/* qh bits 0-1 / 2-3 to bits 4-5 (low half: << 4, high half: << 2) */
	const __m512i shl = _mm512_set_epi64(0x0002000200020002,
	    0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
	    0x0004000400040004, 0x0004000400040004, 0x0004000400040004,
	    0x0004000400040004);
	/* qh bits 4-5 / 6-7 to bits 4-5 (>> 0, >> 2) */
	const __m512i shr = _mm512_set_epi64(0x0002000200020002,
	    0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
	    0, 0, 0, 0);
	const uint8_t *wr[4];
	const struct quant_block_q8_K *ac[4];
	__m512 acc[4][4];

#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		wr[r] = p->w + (size_t)(r0 + r) * p->ws;
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	}
#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		ac[c] = (const struct quant_block_q8_K *)(p->a + (size_t)(c0 + c) * p->as);

	for (int64_t i = 0; i < nb; i++) {
		__m512 ad[4];

#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			ad[c] = _mm512_set1_ps(ac[c][i].d);
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			const struct quant_block_q6_K *x =
			    (const struct quant_block_q6_K *)(wr[r]) + i;
			const __m256i sc16 = _mm256_cvtepi8_epi16(
			    _mm_loadu_si128((const __m128i *)x->scales));
			const __m512i scz = _mm512_zextsi256_si512(sc16);
			const __m512i nsc = _mm512_zextsi256_si512(_mm256_sub_epi16(
			    _mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5)));
			__m512i q[4], sc[4];

#pragma GCC unroll 2
			for (int h = 0; h < 2; h++) {
				const __m512i l = _mm512_loadu_si512(x->ql + 64 * h);
				const __m512i hb = _mm512_broadcast_i64x4(
				    _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h)));

				/* (l & 0x0f) | hbits, one ternary-logic op */
				q[2 * h] = _mm512_ternarylogic_epi32(l,
				    _mm512_and_si512(_mm512_sllv_epi16(hb, shl), m30),
				    m4, 0xec);
				q[2 * h + 1] = _mm512_ternarylogic_epi32(
				    _mm512_srli_epi16(l, 4),
				    _mm512_and_si512(_mm512_srlv_epi16(hb, shr), m30),
				    m4, 0xec);
			}
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) {
				const short g = (short)(4 * j);

				sc[j] = _mm512_permutexvar_epi16(_mm512_set_epi16(
				    g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 3,
				    g + 2, g + 2, g + 2, g + 2, g + 2, g + 2, g + 2, g + 2,
				    g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1,
				    g, g, g, g, g, g, g, g), scz);
			}
			const __m512 vd = _mm512_set1_ps(quant_half_to_float(x->d));
#pragma GCC unroll 4
			for (int c = 0; c < C; c++) {
				const struct quant_block_q8_K *y = &ac[c][i];
				__m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(q[0],
				    _mm512_loadu_si512(y->qs)), sc[0]);

				s = DPWSSD(s, _mm512_maddubs_epi16(q[1],
				    _mm512_loadu_si512(y->qs + 64)), sc[1]);
				s = DPWSSD(s, _mm512_maddubs_epi16(q[2],
				    _mm512_loadu_si512(y->qs + 128)), sc[2]);
				s = DPWSSD(s, _mm512_maddubs_epi16(q[3],
				    _mm512_loadu_si512(y->qs + 192)), sc[3]);
				s = DPWSSD(s, nsc, _mm512_zextsi256_si512(
				    _mm256_loadu_si256((const __m256i *)y->bsums)));
				acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
				    _mm512_mul_ps(vd, ad[c]), acc[r][c]);
			}
		}
	}
	store_tile(p, r0, c0, R, C, acc);
}

#define Q4_K_TILE(p, r0, c0, R, C) FN(k45_tile)(ORCD_DTYPE_Q4_K, p, r0, c0, R, C)
#define Q5_K_TILE(p, r0, c0, R, C) FN(k45_tile)(ORCD_DTYPE_Q5_K, p, r0, c0, R, C)
#define Q6_K_TILE(p, r0, c0, R, C) FN(q6k_tile)(p, r0, c0, R, C)
MM_TILE_SET(FN(q4_K), Q4_K_TILE)
MM_TILE_SET(FN(q5_K), Q5_K_TILE)
MM_TILE_SET(FN(q6_K), Q6_K_TILE)
#undef Q4_K_TILE
#undef Q5_K_TILE
#undef Q6_K_TILE

MM_ENTRY(FN(matmul_q4_0), QCAT(FN(q4_0), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q4_1), QCAT(FN(q4_1), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q5_0), QCAT(FN(q5_0), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q5_1), QCAT(FN(q5_1), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q8_0), QCAT(FN(q8_0), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q4_K), QCAT(FN(q4_K), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q5_K), QCAT(FN(q5_K), _tiles), 4, 4)
MM_ENTRY(FN(matmul_q6_K), QCAT(FN(q6_K), _tiles), 4, 4)

const struct quant_kernels FN(quant_kernels) = {
	.name = QUANT_VNNI ? "avx512vnni" : "avx512",
	.matmul = {
		[ORCD_DTYPE_F32] = matmul_f32_avx512,
		[ORCD_DTYPE_F16] = matmul_f16_avx512,
		[ORCD_DTYPE_BF16] = matmul_bf16_avx512,
		[ORCD_DTYPE_Q4_0] = FN(matmul_q4_0),
		[ORCD_DTYPE_Q4_1] = FN(matmul_q4_1),
		[ORCD_DTYPE_Q5_0] = FN(matmul_q5_0),
		[ORCD_DTYPE_Q5_1] = FN(matmul_q5_1),
		[ORCD_DTYPE_Q8_0] = FN(matmul_q8_0),
		[ORCD_DTYPE_Q4_K] = FN(matmul_q4_K),
		[ORCD_DTYPE_Q5_K] = FN(matmul_q5_K),
		[ORCD_DTYPE_Q6_K] = FN(matmul_q6_K),
	},
	.quantize_q8_0 = quantize_q8_0_avx512,
	.quantize_q8_1 = quantize_q8_1_avx512,
	.quantize_q8_K = quantize_q8_K_avx512,
	.fp16_from_fp32 = fp16_from_fp32_avx512,
	.fp32_from_fp16 = fp32_from_fp16_avx512,
};

#undef DPBUSD
#undef DPWSSD
#undef FN
#undef QCAT
#undef QCAT2
