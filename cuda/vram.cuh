/*
 * VRAM tracker, the CUDA side: what the other cuda/ files use beyond the
 * plain C interface in include/orcd/vram.h (typed range checks for kernel
 * arguments and copies, the tracker's device).
 */
#ifndef ORCD_CUDA_VRAM_CUH
#define ORCD_CUDA_VRAM_CUH

#include <stddef.h>
#include <stdint.h>

#include "orcd/vram.h"

/* The device ordinal every allocation of v lives on. */
int vram_device(const struct vram *v);

/* Typed vram_check_range: n elements of T at p, with the byte count
 * checked for overflow (a wrapped count must never pass). */
template <typename T>
static inline bool
vram_check_elems(struct vram *v, const T *p, size_t n)
{
	if (n > SIZE_MAX / sizeof(T))
		return false;
	return vram_check_range(v, p, n * sizeof(T));
}

#endif
