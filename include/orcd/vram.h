/*
 * The VRAM tracker: every device allocation of the CUDA backend goes
 * through it.  It records each live allocation (pointer, bytes, purpose,
 * label), keeps O(1) totals per purpose, the high-water mark and counters,
 * enforces a soft and a hard limit, checks that pointers and ranges handed
 * to kernels and copies lie inside tracked memory, verifies residency with
 * cudaPointerGetAttributes and measures leaks against a post-load baseline.
 *
 * Policy (DESIGN.md, "Integrity and VRAM policy"): weights, KV cache,
 * activations and scratch live in device memory from cudaMalloc, never
 * managed, mapped or host memory.  The only host memory the tracker hands
 * out is a small pinned IO buffer (sampled token ids), tracked and reported
 * apart and never counted as VRAM.
 *
 * This header is the extern "C" boundary: plain C types only, usable from
 * src/ without the CUDA headers.  All functions are thread-safe; reading the
 * totals (vram_check_limits, vram_over_soft, vram_snapshot) touches only
 * relaxed atomics and makes no CUDA call.
 */
#ifndef ORCD_VRAM_H
#define ORCD_VRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct orcd_err;   /* src/err.h */
struct vram;

enum vram_purpose {
	VRAM_WEIGHTS,
	VRAM_KV,
	VRAM_ACTIVATIONS,
	VRAM_SCRATCH,
	VRAM_IO,          /* device side of IO (token ids, logits out) */
	VRAM_NPURPOSES
};

/* Every reservation is a multiple of this many bytes. */
#define VRAM_ALIGN 256

/* Default cap on pinned host IO buffers: they are meant to be small. */
#define VRAM_PINNED_LIMIT_DEFAULT (1u << 20)

struct vram_config {
	int device;             /* CUDA device ordinal; -1: the current one */
	uint64_t soft_limit;    /* bytes of VRAM, 0 = none */
	uint64_t hard_limit;    /* bytes of VRAM, 0 = none */
	uint64_t pinned_limit;  /* bytes of pinned host IO buffers, 0 = none */
};

enum vram_limit_state {
	VRAM_LIMIT_OK,
	VRAM_LIMIT_SOFT,        /* above the soft limit */
	VRAM_LIMIT_HARD         /* above the hard limit (it was lowered) */
};

struct vram_purpose_stats {
	uint64_t bytes;         /* reserved (rounded) bytes live */
	uint64_t requested;     /* requested bytes live */
	uint64_t count;         /* live allocations */
	uint64_t peak;          /* high-water mark of bytes */
	uint64_t baseline;      /* bytes at vram_mark_baseline */
};

/* Each field is read atomically, the whole is not one instant. */
struct vram_stats {
	struct vram_purpose_stats purpose[VRAM_NPURPOSES];
	struct vram_purpose_stats total;   /* all device purposes */
	struct vram_purpose_stats pinned;  /* pinned host IO, not VRAM */
	uint64_t soft_limit;
	uint64_t hard_limit;
	uint64_t pinned_limit;
	uint64_t n_allocs;       /* successful allocations, cumulative */
	uint64_t n_frees;        /* successful frees, cumulative */
	uint64_t n_refused;      /* refused by the hard (or pinned) limit */
	uint64_t n_failed;       /* cudaMalloc / cudaHostAlloc failures */
	uint64_t n_over_soft;    /* allocations that left use above soft */
	uint64_t n_bad_free;     /* frees of untracked pointers, double frees */
	bool over_soft;
	int device;
};

struct vram_report {
	uint64_t checked;        /* device allocations checked */
	uint64_t bytes;          /* their reserved bytes */
	uint64_t pinned_checked; /* pinned IO buffers checked (must be host) */
	uint64_t violations;
	char first_label[64];    /* first offending allocation, "" if none */
	char first_reason[128];
	double usec;             /* time the check took */
};

struct vram_alloc_info {
	const void *ptr;
	size_t bytes;            /* requested */
	size_t reserved;         /* rounded up to VRAM_ALIGN */
	enum vram_purpose purpose;
	bool pinned;             /* pinned host IO buffer, not VRAM */
	bool foreign;            /* registered by vram_track_foreign */
	uint64_t seq;            /* allocation order, from 1 */
	const char *label;       /* valid during the callback only */
};

/* Returns nonzero to stop the walk. */
typedef int (*vram_foreach_fn)(const struct vram_alloc_info *info, void *arg);

/* Fills defaults: current device, no soft or hard limit, pinned limit
 * VRAM_PINNED_LIMIT_DEFAULT. */
void vram_config_init(struct vram_config *cfg);

/* cfg NULL: the defaults.  Fails when there is no CUDA device. */
struct vram *vram_create(const struct vram_config *cfg, struct orcd_err *err);

/* Frees every allocation still live (not foreign ones: they are only
 * dropped) and returns how many there were; when any, err (may be NULL)
 * lists their labels and bytes.  No other thread may use v any more. */
size_t vram_destroy(struct vram *v, struct orcd_err *err);

/* Device memory from cudaMalloc on the tracker's device (the calling
 * thread's current device is set to it).  bytes is rounded up to
 * VRAM_ALIGN.  Refused, with nothing allocated and the totals unchanged,
 * when it would take the use above the hard limit.  label (may be NULL) is
 * copied. */
int vram_alloc(struct vram *v, size_t bytes, enum vram_purpose purpose,
    const char *label, void **out, struct orcd_err *err);

/* A pinned host buffer (cudaHostAlloc) for IO, e.g. sampled token ids read
 * by the host: purpose VRAM_IO, counted in stats.pinned and never as VRAM,
 * capped by the pinned limit. */
int vram_alloc_io_pinned(struct vram *v, size_t bytes, const char *label,
    void **out, struct orcd_err *err);

/* Frees a pointer vram_alloc or vram_alloc_io_pinned returned (foreign
 * ones are only dropped).  ptr NULL: nothing.  An untracked pointer or a
 * double free is an error and nothing is freed. */
int vram_free(struct vram *v, void *ptr, struct orcd_err *err);

/* Tests only: registers memory the tracker did not allocate (managed,
 * pinned host, ...) as if it were device memory of this purpose, so that
 * tests can show vram_verify_residency catching it.  Counted like VRAM,
 * never freed by the tracker. */
int vram_track_foreign(struct vram *v, void *ptr, size_t bytes,
    enum vram_purpose purpose, const char *label, struct orcd_err *err);

/* True only when [ptr, ptr + bytes) lies inside one tracked allocation
 * (its requested bytes).  bytes 0: true when ptr is inside one. */
bool vram_check_range(struct vram *v, const void *ptr, size_t bytes);

/* Limits in bytes, 0 = none.  Lowering the hard limit below the current
 * use frees nothing: vram_check_limits then says VRAM_LIMIT_HARD. */
int vram_set_limits(struct vram *v, uint64_t soft_limit, uint64_t hard_limit,
    struct orcd_err *err);
/* O(1): cached atomics only, no CUDA call. */
enum vram_limit_state vram_check_limits(const struct vram *v);
bool vram_over_soft(const struct vram *v);

/* For every live allocation, cudaPointerGetAttributes must say device
 * memory on the tracker's device (first and last byte); pinned IO buffers
 * must say host memory.  Returns the number of violations (err, which may
 * be NULL, names the first), or -1 on bad arguments.  r may be NULL.
 * Holds the registry lock for the walk (allocation waits, totals do not). */
int vram_verify_residency(struct vram *v, struct vram_report *r,
    struct orcd_err *err);

/* Records the current totals (per purpose, total, pinned) as the baseline,
 * e.g. after the model is loaded. */
void vram_mark_baseline(struct vram *v);
/* Current bytes minus the baseline for a device purpose (0 for a bad
 * purpose or NULL v); negative when below the baseline. */
int64_t vram_leaked_bytes(const struct vram *v, enum vram_purpose purpose);
int64_t vram_leaked_total(const struct vram *v);

/* Copies all counters (for /health and /metrics); no CUDA call. */
void vram_snapshot(const struct vram *v, struct vram_stats *s);

/* Walks the live allocations in address order under the registry lock; fn
 * must not call back into the tracker.  Returns how many fn saw. */
size_t vram_foreach(struct vram *v, vram_foreach_fn fn, void *arg);

/* cudaMemGetInfo on the calling thread's current device. */
int vram_mem_info(size_t *free_bytes, size_t *total_bytes,
    struct orcd_err *err);

/* "weights", "kv", "activations", "scratch", "io"; "?" if out of range. */
const char *vram_purpose_name(enum vram_purpose purpose);

#ifdef __cplusplus
}
#endif

#endif
