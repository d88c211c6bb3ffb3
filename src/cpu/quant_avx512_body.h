/*
 * The integer AVX-512 kernels, included twice by quant_avx512.c: with
 * QUANT_VNNI 0 (AVX-512BW multiply-adds) and QUANT_VNNI 1 (VPDPBUSD /
 * VPDPWSSD, compiled under a target pragma).  QUANT_SUFFIX names the copy.
 * Not a header of its own: only quant_avx512.c may include it.
 */

#define QCAT2(a, b) a##b
#define QCAT(a, b) QCAT2(a, b)
#define FN(x) QCAT(x, QUANT_SUFFIX)

/* acc + the int16 pair products of x and y, per int32 lane. */
#if QUANT_VNNI
#define DPWSSD(acc, x, y) _mm512_dpwssd_epi32((acc), (x), (y))
#else
#define DPWSSD(acc, x, y) _mm512_add_epi32((acc), _mm512_madd_epi16((x), (y)))
#endif

/* --------------------------------------------- legacy 32-element blocks */

/*
 * A unit is four consecutive blocks (128 elements), held as two vectors:
 * 128-bit lane k of the first has elements 0-15 of block k, of the second
 * elements 16-31.  Both products of a block land in the same four int32
 * lanes, so one float multiply-add covers four blocks.  Weights become
 * unsigned bytes q with a per-type offset o (the value is q - o); the
 * offset is taken out once per activation block, as -o * sum(a) spread
 * over the same int32 lanes the products land in.
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

/*
 * Packed activation column, per unit: the two byte vectors, the offset
 * correction, the scales (and for Q8_1 the block sums s), each one
 * 64-byte vector the row kernel loads whole.
 */
QUANT_INLINE size_t
FN(lg_unit_bytes)(enum orcd_dtype t)
{
	return FN(lg_has_min)(t) ? 320 : 256;
}

/* The trailing blocks of a row, padded with zero blocks to a unit. */
QUANT_INLINE const uint8_t *
FN(lg_tail)(const uint8_t *x, int64_t nb, int64_t u, int bb, uint8_t *tmp)
{
	const int64_t left = nb - 4 * u;

	if (left >= 4)
		return x;
	memset(tmp, 0, (size_t)4 * (size_t)bb);
	memcpy(tmp, x, (size_t)left * (size_t)bb);
	return tmp;
}

QUANT_INLINE void
FN(lg_pack)(enum orcd_dtype t, const struct mm_args *p, int c0, int C,
    uint8_t *pack)
{
	const int64_t nb = p->n / QUANT_QK, nu = (nb + 3) / 4;
	const size_t ub = FN(lg_unit_bytes)(t);
	const int ab = FN(lg_has_min)(t) ? 36 : 34;
	const int qoff = ab - 32;
	const int o = FN(lg_offset)(t);
	uint8_t tmp[4 * 36];

	for (int c = 0; c < C; c++) {
		const uint8_t *col = p->a + (size_t)(c0 + c) * p->as;

		for (int64_t u = 0; u < nu; u++) {
			const uint8_t *y = FN(lg_tail)(
			    col + (size_t)u * 4 * (size_t)ab, nb, u, ab, tmp);
			uint8_t *d =
			    pack + ((size_t)u * (size_t)C + (size_t)c) * ub;
			const __m512i a0 = load4x128(y + qoff, ab);
			const __m512i a1 = load4x128(y + qoff + 16, ab);
			__m512i corr = _mm512_setzero_si512();

			if (o != 0) {
				const __m512i vo = _mm512_set1_epi8((char)o);
				const __m512i m1 = _mm512_set1_epi16(-1);

				corr = _mm512_add_epi32(
				    _mm512_madd_epi16(
					_mm512_maddubs_epi16(vo, a0), m1),
				    _mm512_madd_epi16(
					_mm512_maddubs_epi16(vo, a1), m1));
			}
			_mm512_store_si512(d, a0);
			_mm512_store_si512(d + 64, a1);
			_mm512_store_si512(d + 128, corr);
			_mm512_store_ps(d + 192, scales4(y, ab, 0));
			if (FN(lg_has_min)(t))
				_mm512_store_ps(d + 256, scales4(y + 2, ab, 0));
		}
	}
}

struct FN(lg_row) {
	__m512i q[2];	/* unsigned weight bytes (|w| for Q8_0 without VNNI) */
	__mmask64 neg[2];	/* Q8_0 without VNNI: lanes where w < 0 */
	__m512 d;
	__m512 m;	/* Q4_1 / Q5_1: the block min, once per block */
};

QUANT_INLINE void
FN(lg_load_row)(enum orcd_dtype t, const uint8_t *x, struct FN(lg_row) *row)
{
	const int wb = FN(lg_wbytes)(t);
	const __m512i m4 = _mm512_set1_epi8(0x0f);

	row->d = scales4(x, wb, 0);
	row->neg[0] = row->neg[1] = 0;
	row->m = _mm512_setzero_ps();
	switch (t) {
	case ORCD_DTYPE_Q4_0:
	case ORCD_DTYPE_Q4_1: {
		const __m512i z =
		    load4x128(x + (t == ORCD_DTYPE_Q4_0 ? 2 : 4), wb);

		row->q[0] = _mm512_and_si512(z, m4);
		row->q[1] = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
		if (t == ORCD_DTYPE_Q4_1)
			row->m = scales4(x + 2, wb, 1);
		break;
	}
	case ORCD_DTYPE_Q5_0:
	case ORCD_DTYPE_Q5_1: {
		const int hoff = t == ORCD_DTYPE_Q5_0 ? 2 : 4;
		const __m512i z = load4x128(x + hoff + 4, wb);
		const uint32_t h0 = load_u32(x + hoff);
		const uint32_t h1 = load_u32(x + wb + hoff);
		const uint32_t h2 = load_u32(x + 2 * wb + hoff);
		const uint32_t h3 = load_u32(x + 3 * wb + hoff);
		/* qh bit e is the fifth bit of element e: bits 0-15 go with the
		 * low nibbles of lane k, bits 16-31 with the high ones. */
		const uint64_t k0 = (uint64_t)(h0 & 0xffff) |
		    (uint64_t)(h1 & 0xffff) << 16 |
		    (uint64_t)(h2 & 0xffff) << 32 |
		    (uint64_t)(h3 & 0xffff) << 48;
		const uint64_t k1 = (uint64_t)(h0 >> 16) |
		    (uint64_t)(h1 >> 16) << 16 | (uint64_t)(h2 >> 16) << 32 |
		    (uint64_t)(h3 >> 16) << 48;
		const __m512i sixteen = _mm512_set1_epi8(16);
		const __m512i lo = _mm512_and_si512(z, m4);
		const __m512i hi =
		    _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);

		row->q[0] =
		    _mm512_mask_add_epi8(lo, _cvtu64_mask64(k0), lo, sixteen);
		row->q[1] =
		    _mm512_mask_add_epi8(hi, _cvtu64_mask64(k1), hi, sixteen);
		if (t == ORCD_DTYPE_Q5_1)
			row->m = scales4(x + 2, wb, 1);
		break;
	}
	default:
		for (int i = 0; i < 2; i++) {
			const __m512i w = load4x128(x + 2 + 16 * i, wb);

			if (QUANT_VNNI) {
				row->q[i] = _mm512_xor_si512(w,
				    _mm512_set1_epi8((char)0x80));
			} else {
				row->q[i] = _mm512_abs_epi8(w);
				row->neg[i] = _mm512_movepi8_mask(w);
			}
		}
		break;
	}
}

/* Sum over one unit of q * a (minus the offset), per int32 lane. */
QUANT_INLINE __m512i
FN(lg_dot)(enum orcd_dtype t, const struct FN(lg_row) *row, const uint8_t *d)
{
	const __m512i a0 = _mm512_load_si512(d), a1 = _mm512_load_si512(d + 64);
	const __m512i ones = _mm512_set1_epi16(1);

	if (t == ORCD_DTYPE_Q8_0 && !QUANT_VNNI) {
		/* |w| * (a with w's sign): the pair sums fit int16, their
		 * sum over both halves would not. */
		const __m512i z = _mm512_setzero_si512();

		return _mm512_add_epi32(
		    _mm512_madd_epi16(_mm512_maddubs_epi16(row->q[0],
		    _mm512_mask_sub_epi8(a0, row->neg[0], z, a0)), ones),
		    _mm512_madd_epi16(_mm512_maddubs_epi16(row->q[1],
		    _mm512_mask_sub_epi8(a1, row->neg[1], z, a1)), ones));
	}
#if QUANT_VNNI
	return _mm512_dpbusd_epi32(
	    _mm512_dpbusd_epi32(_mm512_load_si512(d + 128), row->q[0], a0),
	    row->q[1], a1);
#else
	/* q < 32: both halves' pair sums add up within int16. */
	return _mm512_add_epi32(_mm512_load_si512(d + 128), _mm512_madd_epi16(
	    _mm512_add_epi16(_mm512_maddubs_epi16(row->q[0], a0),
	    _mm512_maddubs_epi16(row->q[1], a1)), ones));
#endif
}

/* R (1 or 2) consecutive weight rows against C packed columns. */
QUANT_INLINE void
FN(lg_row_kernel)(enum orcd_dtype t, const struct mm_args *p, int r, int c0,
    int R, int C)
{
	const int64_t nb = p->n / QUANT_QK;
	const size_t ub = FN(lg_unit_bytes)(t);
	const int wb = FN(lg_wbytes)(t);
	const uint8_t *x =
	    p->w + (size_t)r * p->ws + (size_t)p->u0 * 4 * (size_t)wb;
	const uint8_t *pk = p->pack + (size_t)p->u0 * (size_t)C * ub;
	uint8_t tmp[2][4 * 34];
	__m512 acc[2][MM_PACK_COLS];

#pragma GCC unroll 2
	for (int i = 0; i < R; i++)
#pragma GCC unroll 8
		for (int c = 0; c < C; c++)
			acc[i][c] = _mm512_setzero_ps();
	for (int64_t u = p->u0; u < p->u1; u++) {
		struct FN(lg_row) row[2];

		quant_prefetch(x, 4 * wb);
#pragma GCC unroll 2
		for (int i = 0; i < R; i++) {
			const uint8_t *xi = FN(lg_tail)(x + (size_t)i * p->ws,
			    nb, u, wb, tmp[i]);

			FN(lg_load_row)(t, xi, &row[i]);
		}
#pragma GCC unroll 8
		for (int c = 0; c < C; c++) {
			const uint8_t *d = pk + (size_t)c * ub;
			const __m512 ad = _mm512_load_ps(d + 192);

#pragma GCC unroll 2
			for (int i = 0; i < R; i++) {
				acc[i][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(
				    FN(lg_dot)(t, &row[i], d)),
				    _mm512_mul_ps(row[i].d, ad), acc[i][c]);
				if (FN(lg_has_min)(t))
					acc[i][c] = _mm512_fmadd_ps(row[i].m,
					    _mm512_load_ps(d + 256), acc[i][c]);
			}
		}
		x += 4 * wb;
		pk += (size_t)C * ub;
	}
#pragma GCC unroll 2
	for (int i = 0; i < R; i++)
		store_row(p, r + i, c0, C, acc[i]);
}

#define LG_SET(tname, T)						\
	QUANT_INLINE void						\
	FN(tname##_row)(const struct mm_args *p, int r, int c0, int C)	\
	{								\
		FN(lg_row_kernel)(T, p, r, c0, 1, C);			\
	}								\
	QUANT_INLINE void						\
	FN(tname##_row2)(const struct mm_args *p, int r, int c0, int R, \
	    int C)							\
	{								\
		FN(lg_row_kernel)(T, p, r, c0, R, C);			\
	}								\
	static void							\
	FN(tname##_pack)(const struct mm_args *p, int c0, int C,	\
	    uint8_t *pk)						\
	{								\
		FN(lg_pack)(T, p, c0, C, pk);				\
	}								\
	MM_ROW_SET(FN(tname), FN(tname##_row))				\
	MM_ROW2_SET(FN(tname), FN(tname##_row2))			\
	MM_PACKED_ENTRY(FN(matmul_##tname), MM_PACK_COLS,		\
	    QCAT(FN(tname), _rows), QCAT(FN(tname), _rows2),		\
	    FN(tname##_pack), (size_t)(n / 128 + 1) * FN(lg_unit_bytes)(T), \
	    128, FN(lg_unit_bytes)(T), quant_scalar_matmul_##tname)

LG_SET(q4_0, ORCD_DTYPE_Q4_0)
LG_SET(q4_1, ORCD_DTYPE_Q4_1)
LG_SET(q5_0, ORCD_DTYPE_Q5_0)
LG_SET(q5_1, ORCD_DTYPE_Q5_1)
LG_SET(q8_0, ORCD_DTYPE_Q8_0)

/* ------------------------------------------------ K-quant super-blocks */

/*
 * The packed part of a Q8_K column tile, per super-block and group of 4
 * columns: the activation sums per 32-element sub-block (8 int16 per
 * column, for the Q4_K / Q5_K mins) and the scales d (4 lanes per
 * column).  The quants themselves are read in place.
 */
#define K_PACK_GROUP 128

QUANT_INLINE void
FN(k_pack)(const struct mm_args *p, int c0, int C, uint8_t *pack)
{
	const int64_t nb = p->n / QUANT_QK_K;
	const int ng = (C + 3) / 4;

	for (int64_t i = 0; i < nb; i++) {
		for (int g = 0; g < ng; g++) {
			__m512i asum = _mm512_setzero_si512();
			__m512 ad4 = _mm512_setzero_ps();

			for (int c = 4 * g; c < C && c < 4 * g + 4; c++) {
				const struct quant_block_q8_K *y =
				    (const struct quant_block_q8_K *)(p->a +
				    (size_t)(c0 + c) * p->as) + i;
				const __mmask16 k =
				    (__mmask16)(0xf << (4 * (c % 4)));
				__m256i s32 = _mm256_madd_epi16(
				    _mm256_loadu_si256(
					(const __m256i *)y->bsums),
				    _mm256_set1_epi16(1));

				asum = _mm512_mask_broadcast_i32x4(asum, k,
				    _mm256_cvtepi32_epi16(s32));
				ad4 = _mm512_mask_broadcastss_ps(ad4, k,
				    _mm_set_ss(y->d));
			}
			uint8_t *d = pack +
			    ((size_t)i * (size_t)ng + (size_t)g) * K_PACK_GROUP;
			_mm512_store_si512(d, asum);
			_mm512_store_ps(d + 64, ad4);
		}
	}
}

#if QUANT_VNNI
/*
 * With VNNI the four chunks go through VPDPBUSD (4 products per int32
 * lane, each lane within one sub-block), two chunks' lane sums are
 * packed to int16 (they fit: at most 4 * 63 * 128) and one multiply-add
 * per pair of chunks applies the scales: 6 multiplies per super-block
 * and column instead of 8.  Lane 8k + i of the packed pair (2m, 2m + 1)
 * is chunk 2m + (i >= 4), int32 lane 4k + i % 4; the scale index tables
 * say which scale each lane takes.
 */
static const short k45_packed_scale_idx[2][32] __attribute__((aligned(64))) = {
	{ 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2,
	  1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3 },
	{ 4, 4, 4, 4, 6, 6, 6, 6, 4, 4, 4, 4, 6, 6, 6, 6,
	  5, 5, 5, 5, 7, 7, 7, 7, 5, 5, 5, 5, 7, 7, 7, 7 },
};
static const short q6k_packed_scale_idx[2][32] __attribute__((aligned(64))) = {
	{ 0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5,
	  2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7 },
	{ 8, 8, 8, 8, 12, 12, 12, 12, 9, 9, 9, 9, 13, 13, 13, 13,
	  10, 10, 10, 10, 14, 14, 14, 14, 11, 11, 11, 11, 15, 15, 15, 15 },
};
#endif

/*
 * Sum over a super-block of scale * (weight * activation) for unsigned
 * weight chunks q[0..3] and the 64-byte activation chunks at y, per int32
 * lane; sc as built by the row kernels.
 */
QUANT_INLINE __m512i
FN(k_dot)(const __m512i *q, const __m512i *sc, const int8_t *y)
{
#if QUANT_VNNI
	const __m512i z = _mm512_setzero_si512();
	const __m512i p0 = _mm512_packs_epi32(
	    _mm512_dpbusd_epi32(z, q[0], _mm512_loadu_si512(y)),
	    _mm512_dpbusd_epi32(z, q[1], _mm512_loadu_si512(y + 64)));
	const __m512i p1 = _mm512_packs_epi32(
	    _mm512_dpbusd_epi32(z, q[2], _mm512_loadu_si512(y + 128)),
	    _mm512_dpbusd_epi32(z, q[3], _mm512_loadu_si512(y + 192)));

	return _mm512_dpwssd_epi32(_mm512_madd_epi16(p0, sc[0]), p1, sc[1]);
#else
	__m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(q[0],
	    _mm512_loadu_si512(y)), sc[0]);

	s = DPWSSD(s, _mm512_maddubs_epi16(q[1], _mm512_loadu_si512(y + 64)),
	    sc[1]);
	s = DPWSSD(s, _mm512_maddubs_epi16(q[2], _mm512_loadu_si512(y + 128)),
	    sc[2]);
	return DPWSSD(s, _mm512_maddubs_epi16(q[3],
	    _mm512_loadu_si512(y + 192)), sc[3]);
#endif
}

/*
 * Q4_K / Q5_K row kernel: chunk j (64 elements) of the weights is
 * sub-blocks 2j and 2j + 1; maddubs turns it into 32 int16 pair sums that
 * a multiply-add with the two 6-bit scales (16 lanes each) folds into
 * int32.  The mins term, dmin * m_s * sum(a over s), is done for 4
 * columns at once against the packed sub-block sums.
 */
QUANT_INLINE void
FN(k45_row)(enum orcd_dtype t, const struct mm_args *p, int r, int c0, int C)
{
	const int ng = (C + 3) / 4;
	const size_t wb = t == ORCD_DTYPE_Q4_K ?
	    sizeof(struct quant_block_q4_K) : sizeof(struct quant_block_q5_K);
	const __m512i m4 = _mm512_set1_epi8(0x0f);
	const __m512i sh04 = _mm512_set_epi64(0x0004000400040004,
	    0x0004000400040004, 0x0004000400040004, 0x0004000400040004,
	    0, 0, 0, 0);
	const uint8_t *x = p->w + (size_t)r * p->ws + (size_t)p->u0 * wb;
	const uint8_t *pk = p->pack + (size_t)p->u0 * (size_t)ng * K_PACK_GROUP;
	const struct quant_block_q8_K *ac[MM_PACK_COLS];
	__m512 acc[MM_PACK_COLS], accm[2];

#pragma GCC unroll 8
	for (int c = 0; c < C; c++) {
		acc[c] = _mm512_setzero_ps();
		ac[c] = (const struct quant_block_q8_K *)(p->a +
		    (size_t)(c0 + c) * p->as);
	}
	accm[0] = accm[1] = _mm512_setzero_ps();
	for (int64_t i = p->u0; i < p->u1; i++) {
		quant_prefetch(x, (int)wb);
		const uint8_t *qs = x + (t == ORCD_DTYPE_Q4_K ? 16 : 48);
		/* [sc0..sc7, m0..m7] as int16 */
		const __m128i smb = k_scale_min_bytes(x + 4);
		const __m512i sm =
		    _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(smb));
		__m512i q[4], sc[4];

#pragma GCC unroll 4
		for (int j = 0; j < 4; j++) {
			/* int16 lanes 0-15: scale 2j, 16-31: scale 2j + 1 */
			const short lo = (short)(2 * j),
				    hi = (short)(2 * j + 1);

			q[j] = _mm512_and_si512(_mm512_srlv_epi16(
			    _mm512_broadcast_i64x4(_mm256_loadu_si256(
			    (const __m256i *)(qs + 32 * j))), sh04), m4);
#if QUANT_VNNI
			(void)lo;
			(void)hi;
			if (j < 2)
				sc[j] = _mm512_permutexvar_epi16(
				    _mm512_load_si512(k45_packed_scale_idx[j]),
				    sm);
#else
			sc[j] = _mm512_permutexvar_epi16(
			    _mm512_set_epi16(hi, hi, hi, hi, hi, hi, hi, hi, hi,
				hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo,
				lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo),
			    sm);
#endif
		}
		if (t == ORCD_DTYPE_Q5_K) {
			const __m512i qh = _mm512_broadcast_i64x4(
			    _mm256_loadu_si256((const __m256i *)(x + 16)));

#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) {
				/* low nibbles: qh bit 2j, high: 2j + 1 */
				__m512i bit = _mm512_mask_blend_epi8(
				    0xffffffff00000000ull,
				    _mm512_set1_epi8((char)(1 << (2 * j))),
				    _mm512_set1_epi8((char)(1 << (2 * j + 1))));

				q[j] = _mm512_mask_add_epi8(q[j],
				    _mm512_test_epi8_mask(qh, bit), q[j],
				    _mm512_set1_epi8(16));
			}
		}
		/* d and dmin converted together */
		const __m128 ddm =
		    _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(x)));
		const __m512 vd = _mm512_broadcastss_ps(ddm);
		const __m512 vdmin =
		    _mm512_broadcastss_ps(_mm_movehdup_ps(ddm));
		/* m0..m7 as int16 */
		const __m128i mins8 = _mm_cvtepu8_epi16(_mm_srli_si128(smb, 8));

		if (C == 1) {
			/* One column: 128-bit operations do (the GEMV). */
			const __m128 m = _mm_cvtepi32_ps(_mm_madd_epi16(mins8,
			    _mm_load_si128((const __m128i *)pk)));

			accm[0] = _mm512_castps128_ps512(_mm_fmadd_ps(m,
			    _mm_mul_ps(_mm512_castps512_ps128(vdmin),
			    _mm_load_ps((const float *)(pk + 64))),
			    _mm512_castps512_ps128(accm[0])));
		} else {
			const __m512i mins = _mm512_broadcast_i32x4(mins8);

#pragma GCC unroll 2
			for (int g = 0; g < ng; g++) {
				const uint8_t *pg = pk + g * K_PACK_GROUP;
				const __m512i mi = _mm512_madd_epi16(mins,
				    _mm512_load_si512(pg));
				const __m512 f = _mm512_mul_ps(vdmin,
				    _mm512_load_ps(pg + 64));

				accm[g] = _mm512_fmadd_ps(
				    _mm512_cvtepi32_ps(mi), f, accm[g]);
			}
		}
#pragma GCC unroll 8
		for (int c = 0; c < C; c++) {
			const int8_t *y = ac[c][i].qs;
			const __m512i s = FN(k_dot)(q, sc, y);

			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
			    _mm512_mul_ps(vd, _mm512_set1_ps(ac[c][i].d)),
			    acc[c]);
		}
		x += wb;
		pk += (size_t)ng * K_PACK_GROUP;
	}
	/* Column c's mins sit in lanes 4(c % 4).. of accm[c / 4] (with one
	 * column only lanes 0-3 were written: the upper ones are garbage). */
#pragma GCC unroll 8
	for (int c = 0; c < C; c++)
		acc[c] = _mm512_mask_sub_ps(acc[c],
		    (__mmask16)(0xf << (4 * (c % 4))), acc[c], accm[c / 4]);
	store_row(p, r, c0, C, acc);
}

/*
 * Q6_K row kernel: chunk j (64 elements) is 4 groups of 16 with int8
 * scales; the weights are unsigned 0..63 and the -32 offset is applied
 * through the activation's per-16 sums, in the same int32 accumulator.
 */
QUANT_INLINE void
FN(q6k_row)(const struct mm_args *p, int r, int c0, int C)
{
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
	const struct quant_block_q6_K *x =
	    (const struct quant_block_q6_K *)(p->w + (size_t)r * p->ws) + p->u0;
	const struct quant_block_q8_K *ac[MM_PACK_COLS];
	__m512 acc[MM_PACK_COLS];

#pragma GCC unroll 8
	for (int c = 0; c < C; c++) {
		acc[c] = _mm512_setzero_ps();
		ac[c] = (const struct quant_block_q8_K *)(p->a +
		    (size_t)(c0 + c) * p->as);
	}
	for (int64_t i = p->u0; i < p->u1; i++, x++) {
		quant_prefetch(x, (int)sizeof(*x));
		const __m256i sc16 = _mm256_cvtepi8_epi16(
		    _mm_loadu_si128((const __m128i *)x->scales));
		const __m512i scz = _mm512_zextsi256_si512(sc16);
		const __m512i nsc = _mm512_zextsi256_si512(_mm256_sub_epi16(
		    _mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5)));
		__m512i q[4], sc[4];

#pragma GCC unroll 2
		for (int h = 0; h < 2; h++) {
			const __m512i l = _mm512_loadu_si512(x->ql + 64 * h);
			const __m512i hb =
			    _mm512_broadcast_i64x4(_mm256_loadu_si256(
				(const __m256i *)(x->qh + 32 * h)));

			/* (l & 0x0f) | hbits, one ternary-logic op */
			q[2 * h] = _mm512_ternarylogic_epi32(l,
			    _mm512_and_si512(_mm512_sllv_epi16(hb, shl), m30),
			    m4, 0xec);
			q[2 * h + 1] = _mm512_ternarylogic_epi32(
			    _mm512_srli_epi16(l, 4),
			    _mm512_and_si512(_mm512_srlv_epi16(hb, shr), m30),
			    m4, 0xec);
		}
#if QUANT_VNNI
		for (int j = 0; j < 2; j++)
			sc[j] = _mm512_permutexvar_epi16(
			    _mm512_load_si512(q6k_packed_scale_idx[j]), scz);
#else
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++) {
			const short g = (short)(4 * j);

			sc[j] = _mm512_permutexvar_epi16(
			    _mm512_set_epi16(g + 3, g + 3, g + 3, g + 3, g + 3,
				g + 3, g + 3, g + 3, g + 2, g + 2, g + 2, g + 2,
				g + 2, g + 2, g + 2, g + 2, g + 1, g + 1, g + 1,
				g + 1, g + 1, g + 1, g + 1, g + 1, g, g, g, g,
				g, g, g, g),
			    scz);
		}
#endif
		const __m512 vd = _mm512_set1_ps(half_f16c(x->d));
#pragma GCC unroll 8
		for (int c = 0; c < C; c++) {
			const struct quant_block_q8_K *y = &ac[c][i];
			__m512i s = FN(k_dot)(q, sc, y->qs);

			s = DPWSSD(s, nsc, _mm512_zextsi256_si512(
			    _mm256_loadu_si256((const __m256i *)y->bsums)));
			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
			    _mm512_mul_ps(vd, _mm512_set1_ps(y->d)), acc[c]);
		}
	}
	store_row(p, r, c0, C, acc);
}

/* Q6_K needs nothing packed. */
static void
FN(no_pack)(const struct mm_args *p, int c0, int C, uint8_t *pack)
{
	(void)p;
	(void)c0;
	(void)C;
	(void)pack;
}

#define Q4_K_ROW(p, r, c0, C) FN(k45_row)(ORCD_DTYPE_Q4_K, p, r, c0, C)
#define Q5_K_ROW(p, r, c0, C) FN(k45_row)(ORCD_DTYPE_Q5_K, p, r, c0, C)
MM_ROW_SET(FN(q4_K), Q4_K_ROW)
MM_ROW_SET(FN(q5_K), Q5_K_ROW)
MM_ROW_SET(FN(q6_K), FN(q6k_row))
#undef Q4_K_ROW
#undef Q5_K_ROW

MM_PACKED_ENTRY(FN(matmul_q4_K), MM_PACK_COLS, QCAT(FN(q4_K), _rows), NULL,
    FN(k_pack), (size_t)(n / QUANT_QK_K) * K_PACK_GROUP, QUANT_QK_K,
    sizeof(struct quant_block_q8_K) + K_PACK_GROUP / 4,
    quant_scalar_matmul_q4_K)
MM_PACKED_ENTRY(FN(matmul_q5_K), MM_PACK_COLS, QCAT(FN(q5_K), _rows), NULL,
    FN(k_pack), (size_t)(n / QUANT_QK_K) * K_PACK_GROUP, QUANT_QK_K,
    sizeof(struct quant_block_q8_K) + K_PACK_GROUP / 4,
    quant_scalar_matmul_q5_K)
MM_PACKED_ENTRY(FN(matmul_q6_K), MM_PACK_COLS, QCAT(FN(q6_K), _rows), NULL,
    FN(no_pack), 0, QUANT_QK_K, sizeof(struct quant_block_q8_K),
    quant_scalar_matmul_q6_K)

const struct quant_kernels FN(quant_kernels) = {
	.name = QUANT_VNNI ? "avx512vnni" : "avx512",
	.matmul = {
		[ORCD_DTYPE_F32] = matmul_f32_avx512,
		/* 512-bit fp16 conversion is slow on Zen 4, where the AVX2
		 * kernel streams 54 GB/s from cache against 35. */
		[ORCD_DTYPE_F16] = quant_avx2_matmul_f16,
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

#undef LG_SET
#undef K_PACK_GROUP
#undef DPWSSD
#undef FN
#undef QCAT
#undef QCAT2
