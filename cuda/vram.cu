/*
 * VRAM tracker (include/orcd/vram.h): every device allocation of the CUDA
 * backend goes through vram_alloc, so that the daemon always knows what it
 * holds in VRAM, where and why.
 *
 * Two halves with different costs:
 *   - counters: relaxed atomics, read in O(1) with no lock and no CUDA call
 *     (the /health and /metrics paths and per-step limit checks);
 *   - the registry of live allocations: a treap keyed by address under a
 *     mutex.  Allocation is not a hot path; an ordered index is needed
 *     anyway so that vram_check_range can find the allocation holding an
 *     interior pointer.  Priorities are a hash of the address, so the tree
 *     is balanced in expectation with no random state.
 *
 * The hard limit is enforced by reserving the bytes on the total with a
 * compare-and-swap before cudaMalloc, so racing allocations can never take
 * the use above it together.
 */
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include <cuda_runtime.h>

extern "C" {
#include "err.h"
}
#include "orcd/vram.h"
#include "vram.cuh"

/* Remembered frees, to tell a double free from a stray pointer. */
#define VRAM_FREED_RING 64
#define VRAM_FREED_LABEL 48

struct vram_entry {
	uintptr_t addr;
	size_t requested;
	size_t reserved;
	uint64_t seq;
	uint64_t prio;
	enum vram_purpose purpose;
	bool pinned;
	bool foreign;
	struct vram_entry *left;
	struct vram_entry *right;
	char *label;              /* stored just after the entry */
};

struct vram_counters {
	std::atomic<uint64_t> bytes{0};
	std::atomic<uint64_t> requested{0};
	std::atomic<uint64_t> count{0};
	std::atomic<uint64_t> peak{0};
	std::atomic<uint64_t> baseline{0};
};

struct vram_freed {
	uintptr_t addr;
	char label[VRAM_FREED_LABEL];
};

struct vram {
	int device;

	std::atomic<uint64_t> soft_limit{0};
	std::atomic<uint64_t> hard_limit{0};
	std::atomic<uint64_t> pinned_limit{0};

	/* total.bytes is the reservation the hard limit is checked against. */
	struct vram_counters purpose[VRAM_NPURPOSES];
	struct vram_counters total;
	struct vram_counters pinned;

	std::atomic<uint64_t> n_allocs{0};
	std::atomic<uint64_t> n_frees{0};
	std::atomic<uint64_t> n_refused{0};
	std::atomic<uint64_t> n_failed{0};
	std::atomic<uint64_t> n_over_soft{0};
	std::atomic<uint64_t> n_bad_free{0};

	std::mutex lock;          /* everything below */
	struct vram_entry *root = nullptr;
	uint64_t seq = 0;
	struct vram_freed freed[VRAM_FREED_RING];
	unsigned freed_next = 0;
};

static const char *vram_purpose_names[VRAM_NPURPOSES] = {
	"weights", "kv", "activations", "scratch", "io"
};

static const std::memory_order relaxed = std::memory_order_relaxed;

const char *
vram_purpose_name(enum vram_purpose purpose)
{
	if ((unsigned)purpose >= VRAM_NPURPOSES)
		return "?";
	return vram_purpose_names[purpose];
}

int
vram_device(const struct vram *v)
{
	return v != nullptr ? v->device : -1;
}

/* splitmix64's finalizer: cudaMalloc addresses are regular, the
 * priorities must not be. */
static uint64_t
vram_hash(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* --- the registry (callers hold v->lock) ------------------------------ */

/* Splits t into the nodes below key (l) and the rest (r). */
static void
vram_split(struct vram_entry *t, uintptr_t key, struct vram_entry **l,
    struct vram_entry **r)
{
	if (t == nullptr) {
		*l = *r = nullptr;
		return;
	}
	if (t->addr < key) {
		vram_split(t->right, key, &t->right, r);
		*l = t;
	} else {
		vram_split(t->left, key, l, &t->left);
		*r = t;
	}
}

/* Every key in l is below every key in r. */
static struct vram_entry *
vram_merge(struct vram_entry *l, struct vram_entry *r)
{
	if (l == nullptr)
		return r;
	if (r == nullptr)
		return l;
	if (l->prio > r->prio) {
		l->right = vram_merge(l->right, r);
		return l;
	}
	r->left = vram_merge(l, r->left);
	return r;
}

/* The entry with the greatest address <= a: the only one that can hold a. */
static struct vram_entry *
vram_find_le(struct vram_entry *t, uintptr_t a)
{
	struct vram_entry *best = nullptr;

	while (t != nullptr) {
		if (t->addr <= a) {
			best = t;
			t = t->right;
		} else
			t = t->left;
	}
	return best;
}

/* Inserts e unless it overlaps a live entry (then returns that one). */
static struct vram_entry *
vram_insert(struct vram *v, struct vram_entry *e)
{
	struct vram_entry *prev, *l, *r;

	prev = vram_find_le(v->root, e->addr + e->reserved - 1);
	if (prev != nullptr && prev->addr + prev->reserved > e->addr)
		return prev;
	vram_split(v->root, e->addr, &l, &r);
	v->root = vram_merge(vram_merge(l, e), r);
	e->seq = ++v->seq;
	return nullptr;
}

static struct vram_entry *
vram_remove(struct vram *v, uintptr_t a)
{
	struct vram_entry **link = &v->root, *e;

	while (*link != nullptr && (*link)->addr != a)
		link = a < (*link)->addr ? &(*link)->left : &(*link)->right;
	if ((e = *link) == nullptr)
		return nullptr;
	*link = vram_merge(e->left, e->right);
	e->left = e->right = nullptr;
	return e;
}

static void
vram_remember_free(struct vram *v, const struct vram_entry *e)
{
	struct vram_freed *f = &v->freed[v->freed_next % VRAM_FREED_RING];

	f->addr = e->addr;
	snprintf(f->label, sizeof(f->label), "%s", e->label);
	v->freed_next++;
}

/* Newest first: the address may have been freed more than once. */
static const struct vram_freed *
vram_find_freed(const struct vram *v, uintptr_t a)
{
	unsigned i, n;

	n = v->freed_next < VRAM_FREED_RING ? v->freed_next : VRAM_FREED_RING;
	for (i = 1; i <= n; i++) {
		const struct vram_freed *f =
		    &v->freed[(v->freed_next - i) % VRAM_FREED_RING];
		if (f->addr == a)
			return f;
	}
	return nullptr;
}

static struct vram_entry *
vram_entry_new(uintptr_t addr, size_t requested, size_t reserved,
    enum vram_purpose purpose, bool pinned, bool foreign, const char *label)
{
	struct vram_entry *e;
	size_t n = strlen(label);

	e = (struct vram_entry *)malloc(sizeof(*e) + n + 1);
	if (e == nullptr)
		return nullptr;
	e->addr = addr;
	e->requested = requested;
	e->reserved = reserved;
	e->seq = 0;
	e->prio = vram_hash(addr);
	e->purpose = purpose;
	e->pinned = pinned;
	e->foreign = foreign;
	e->left = e->right = nullptr;
	e->label = (char *)(e + 1);
	memcpy(e->label, label, n + 1);
	return e;
}

/* --- counters --------------------------------------------------------- */

static void
vram_raise_peak(std::atomic<uint64_t> &peak, uint64_t value)
{
	uint64_t cur = peak.load(relaxed);

	while (value > cur && !peak.compare_exchange_weak(cur, value, relaxed))
		;
}

/*
 * Adds r to c.bytes unless that would pass limit (0 = none).  Returns 0, or
 * -1 with *use set to the bytes in use that made it fail.
 */
static int
vram_reserve(struct vram_counters &c, uint64_t limit, uint64_t r,
    uint64_t *use)
{
	uint64_t cur = c.bytes.load(relaxed);

	do {
		if (r > UINT64_MAX - cur || (limit != 0 && cur + r > limit)) {
			*use = cur;
			return -1;
		}
	} while (!c.bytes.compare_exchange_weak(cur, cur + r, relaxed));
	*use = cur + r;
	return 0;
}

/* The rest of the counters once the allocation exists (the reservation on
 * the total, or on pinned, is already made and use is its result). */
static void
vram_count_alloc(struct vram *v, const struct vram_entry *e, uint64_t use)
{
	struct vram_counters &all = e->pinned ? v->pinned : v->total;
	uint64_t soft, b;

	if (!e->pinned) {
		struct vram_counters &c = v->purpose[e->purpose];

		b = c.bytes.fetch_add(e->reserved, relaxed) + e->reserved;
		c.requested.fetch_add(e->requested, relaxed);
		c.count.fetch_add(1, relaxed);
		vram_raise_peak(c.peak, b);
		soft = v->soft_limit.load(relaxed);
		if (soft != 0 && use > soft)
			v->n_over_soft.fetch_add(1, relaxed);
	}
	all.requested.fetch_add(e->requested, relaxed);
	all.count.fetch_add(1, relaxed);
	vram_raise_peak(all.peak, use);
	v->n_allocs.fetch_add(1, relaxed);
}

static void
vram_count_free(struct vram *v, const struct vram_entry *e)
{
	struct vram_counters &all = e->pinned ? v->pinned : v->total;

	if (!e->pinned) {
		struct vram_counters &c = v->purpose[e->purpose];

		c.bytes.fetch_sub(e->reserved, relaxed);
		c.requested.fetch_sub(e->requested, relaxed);
		c.count.fetch_sub(1, relaxed);
	}
	all.bytes.fetch_sub(e->reserved, relaxed);
	all.requested.fetch_sub(e->requested, relaxed);
	all.count.fetch_sub(1, relaxed);
	v->n_frees.fetch_add(1, relaxed);
}

/* --- lifetime --------------------------------------------------------- */

void
vram_config_init(struct vram_config *cfg)
{
	if (cfg == nullptr)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->device = -1;
	cfg->pinned_limit = VRAM_PINNED_LIMIT_DEFAULT;
}

struct vram *
vram_create(const struct vram_config *cfg, struct orcd_err *err)
{
	struct vram_config defaults;
	struct vram *v;
	cudaError_t ce;
	int n = 0, dev;

	if (cfg == nullptr) {
		vram_config_init(&defaults);
		cfg = &defaults;
	}
	if (cfg->hard_limit != 0 && cfg->soft_limit > cfg->hard_limit) {
		orcd_errf(err, "vram_create: soft limit %" PRIu64 " bytes "
		    "above the hard limit %" PRIu64, cfg->soft_limit,
		    cfg->hard_limit);
		return nullptr;
	}
	if ((ce = cudaGetDeviceCount(&n)) != cudaSuccess || n <= 0) {
		cudaGetLastError();
		orcd_errf(err, "vram_create: no CUDA device "
		    "(cudaGetDeviceCount: %s)", ce != cudaSuccess ?
		    cudaGetErrorString(ce) : "0 devices");
		return nullptr;
	}
	dev = cfg->device;
	if (dev < 0 && (ce = cudaGetDevice(&dev)) != cudaSuccess) {
		cudaGetLastError();
		orcd_errf(err, "vram_create: cudaGetDevice: %s",
		    cudaGetErrorString(ce));
		return nullptr;
	}
	if (dev >= n) {
		orcd_errf(err, "vram_create: device %d out of range (%d "
		    "devices)", dev, n);
		return nullptr;
	}

	v = new (std::nothrow) struct vram;
	if (v == nullptr) {
		orcd_errf(err, "vram_create: out of memory");
		return nullptr;
	}
	v->device = dev;
	v->soft_limit.store(cfg->soft_limit, relaxed);
	v->hard_limit.store(cfg->hard_limit, relaxed);
	v->pinned_limit.store(cfg->pinned_limit, relaxed);
	memset(v->freed, 0, sizeof(v->freed));
	return v;
}

/* Frees the memory behind e (never a foreign one); returns the error. */
static cudaError_t
vram_release(const struct vram_entry *e)
{
	cudaError_t ce;

	if (e->foreign)
		return cudaSuccess;
	if (e->pinned)
		ce = cudaFreeHost((void *)e->addr);
	else
		ce = cudaFree((void *)e->addr);
	if (ce != cudaSuccess)
		cudaGetLastError();
	return ce;
}

size_t
vram_destroy(struct vram *v, struct orcd_err *err)
{
	struct vram_entry *e;
	char msg[sizeof(err->msg)];
	size_t n = 0, len = 0, listed = 0;
	uint64_t bytes = 0;
	int w;

	if (v == nullptr)
		return 0;
	if (cudaSetDevice(v->device) != cudaSuccess)
		cudaGetLastError();   /* e.g. at exit, the runtime going away */
	msg[0] = '\0';
	/* Nobody else may use v now, the lock is for form's sake. */
	v->lock.lock();
	while ((e = v->root) != nullptr) {
		v->root = vram_merge(e->left, e->right);
		n++;
		bytes += e->reserved;
		if (len < sizeof(msg)) {
			w = snprintf(msg + len, sizeof(msg) - len,
			    "%s'%s' (%s%s, %zu B)", listed > 0 ? ", " : "",
			    e->label, e->pinned ? "pinned " : "",
			    vram_purpose_name(e->purpose), e->requested);
			if (w > 0)
				len += (size_t)w;
			listed++;
		}
		vram_release(e);
		free(e);
	}
	v->lock.unlock();
	if (n > 0)
		orcd_errf(err, "vram_destroy: %zu allocations (%" PRIu64
		    " bytes) still live: %s", n, bytes, msg);
	delete v;
	return n;
}

/* --- allocation ------------------------------------------------------- */

/* Checks shared by vram_alloc, vram_alloc_io_pinned and vram_track_foreign. */
static int
vram_check_args(const char *fn, struct vram *v, size_t bytes,
    enum vram_purpose purpose, const char *label, struct orcd_err *err)
{
	if (v == nullptr)
		return orcd_errf(err, "%s: '%s': NULL tracker", fn, label);
	if ((unsigned)purpose >= VRAM_NPURPOSES)
		return orcd_errf(err, "%s: '%s': bad purpose %d", fn, label,
		    (int)purpose);
	if (bytes == 0)
		return orcd_errf(err, "%s: '%s' (%s): zero bytes", fn, label,
		    vram_purpose_name(purpose));
	if (bytes > SIZE_MAX - (VRAM_ALIGN - 1))
		return orcd_errf(err, "%s: '%s' (%s): %zu bytes overflow when "
		    "rounded up to %d", fn, label, vram_purpose_name(purpose),
		    bytes, VRAM_ALIGN);
	return 0;
}

static int
vram_alloc_common(const char *fn, struct vram *v, size_t bytes,
    enum vram_purpose purpose, bool pinned, const char *label, void **out,
    struct orcd_err *err)
{
	struct vram_counters &all = pinned ? v->pinned : v->total;
	struct vram_entry *e = nullptr, *clash;
	uint64_t limit, use;
	size_t reserved;
	cudaError_t ce;
	void *p = nullptr;
	int cur;

	reserved = (bytes + (VRAM_ALIGN - 1)) & ~(size_t)(VRAM_ALIGN - 1);
	limit = pinned ? v->pinned_limit.load(relaxed) :
	    v->hard_limit.load(relaxed);
	if (vram_reserve(all, limit, reserved, &use) != 0) {
		v->n_refused.fetch_add(1, relaxed);
		return orcd_errf(err, "%s: '%s' (%s): %zu bytes (%zu reserved) "
		    "refused: %" PRIu64 " bytes in use, %s limit %" PRIu64, fn,
		    label, vram_purpose_name(purpose), bytes, reserved, use,
		    pinned ? "pinned" : "hard", limit);
	}

	if ((ce = cudaGetDevice(&cur)) != cudaSuccess || (cur != v->device &&
	    (ce = cudaSetDevice(v->device)) != cudaSuccess)) {
		cudaGetLastError();
		orcd_errf(err, "%s: '%s': selecting device %d: %s", fn, label,
		    v->device, cudaGetErrorString(ce));
		goto fail;
	}
	if (pinned)
		ce = cudaHostAlloc(&p, reserved, cudaHostAllocDefault);
	else
		ce = cudaMalloc(&p, reserved);
	if (ce != cudaSuccess) {
		/* Out of memory is not sticky: clear it so that it does not
		 * surface at the next unrelated launch check. */
		cudaGetLastError();
		p = nullptr;
		v->n_failed.fetch_add(1, relaxed);
		orcd_errf(err, "%s: '%s' (%s): %s of %zu bytes failed: %s "
		    "(%" PRIu64 " bytes in use with it)", fn, label,
		    vram_purpose_name(purpose), pinned ? "cudaHostAlloc" :
		    "cudaMalloc", reserved, cudaGetErrorString(ce), use);
		goto fail;
	}
	if ((uintptr_t)p % VRAM_ALIGN != 0) {
		orcd_errf(err, "%s: '%s': %p is not %d-byte aligned", fn, label,
		    p, VRAM_ALIGN);
		goto fail;
	}
	e = vram_entry_new((uintptr_t)p, bytes, reserved, purpose, pinned,
	    false, label);
	if (e == nullptr) {
		orcd_errf(err, "%s: '%s': out of host memory for the registry",
		    fn, label);
		goto fail;
	}
	v->lock.lock();
	clash = vram_insert(v, e);
	if (clash != nullptr)
		orcd_errf(err, "%s: '%s': %p from the driver overlaps tracked "
		    "'%s' at %p", fn, label, p, clash->label,
		    (void *)clash->addr);
	v->lock.unlock();
	if (clash != nullptr)
		goto fail;

	vram_count_alloc(v, e, use);
	*out = p;
	return 0;

fail:
	free(e);
	if (p != nullptr) {
		if (pinned)
			cudaFreeHost(p);
		else
			cudaFree(p);
		cudaGetLastError();
	}
	all.bytes.fetch_sub(reserved, relaxed);
	return -1;
}

int
vram_alloc(struct vram *v, size_t bytes, enum vram_purpose purpose,
    const char *label, void **out, struct orcd_err *err)
{
	if (label == nullptr)
		label = "(unlabeled)";
	if (out == nullptr)
		return orcd_errf(err, "vram_alloc: '%s': NULL out pointer",
		    label);
	*out = nullptr;
	if (vram_check_args("vram_alloc", v, bytes, purpose, label, err) != 0)
		return -1;
	return vram_alloc_common("vram_alloc", v, bytes, purpose, false, label,
	    out, err);
}

int
vram_alloc_io_pinned(struct vram *v, size_t bytes, const char *label,
    void **out, struct orcd_err *err)
{
	if (label == nullptr)
		label = "(unlabeled)";
	if (out == nullptr)
		return orcd_errf(err, "vram_alloc_io_pinned: '%s': NULL out "
		    "pointer", label);
	*out = nullptr;
	if (vram_check_args("vram_alloc_io_pinned", v, bytes, VRAM_IO, label,
	    err) != 0)
		return -1;
	return vram_alloc_common("vram_alloc_io_pinned", v, bytes, VRAM_IO,
	    true, label, out, err);
}

int
vram_track_foreign(struct vram *v, void *ptr, size_t bytes,
    enum vram_purpose purpose, const char *label, struct orcd_err *err)
{
	const char *fn = "vram_track_foreign";
	struct vram_entry *e, *clash;
	uint64_t use;

	if (label == nullptr)
		label = "(unlabeled)";
	if (vram_check_args(fn, v, bytes, purpose, label, err) != 0)
		return -1;
	if (ptr == nullptr)
		return orcd_errf(err, "%s: '%s': NULL pointer", fn, label);
	if (bytes > UINTPTR_MAX - (uintptr_t)ptr)
		return orcd_errf(err, "%s: '%s': %p + %zu bytes wraps", fn,
		    label, ptr, bytes);
	if (vram_reserve(v->total, v->hard_limit.load(relaxed), bytes,
	    &use) != 0) {
		v->n_refused.fetch_add(1, relaxed);
		return orcd_errf(err, "%s: '%s': %zu bytes refused: %" PRIu64
		    " bytes in use, hard limit %" PRIu64, fn, label, bytes, use,
		    v->hard_limit.load(relaxed));
	}
	e = vram_entry_new((uintptr_t)ptr, bytes, bytes, purpose, false, true,
	    label);
	if (e == nullptr) {
		v->total.bytes.fetch_sub(bytes, relaxed);
		return orcd_errf(err, "%s: '%s': out of host memory", fn,
		    label);
	}
	v->lock.lock();
	clash = vram_insert(v, e);
	if (clash != nullptr)
		orcd_errf(err, "%s: '%s': %p overlaps tracked '%s' at %p", fn,
		    label, ptr, clash->label, (void *)clash->addr);
	v->lock.unlock();
	if (clash != nullptr) {
		free(e);
		v->total.bytes.fetch_sub(bytes, relaxed);
		return -1;
	}
	vram_count_alloc(v, e, use);
	return 0;
}

int
vram_free(struct vram *v, void *ptr, struct orcd_err *err)
{
	struct vram_entry *e, *in;
	const struct vram_freed *f;
	uintptr_t a = (uintptr_t)ptr;
	cudaError_t ce;
	int cur;

	if (v == nullptr)
		return orcd_errf(err, "vram_free: %p: NULL tracker", ptr);
	if (ptr == nullptr)
		return 0;

	v->lock.lock();
	if ((e = vram_remove(v, a)) != nullptr) {
		vram_remember_free(v, e);
		v->lock.unlock();
		goto found;
	}
	v->n_bad_free.fetch_add(1, relaxed);
	in = vram_find_le(v->root, a);
	if (in != nullptr && a - in->addr < in->reserved)
		orcd_errf(err, "vram_free: %p is %zu bytes inside '%s' (%p), "
		    "not its start; nothing freed", ptr, (size_t)(a - in->addr),
		    in->label, (void *)in->addr);
	else if ((f = vram_find_freed(v, a)) != nullptr)
		orcd_errf(err, "vram_free: double free of %p (was '%s'); "
		    "nothing freed", ptr, f->label);
	else
		orcd_errf(err, "vram_free: %p is not a tracked allocation; "
		    "nothing freed", ptr);
	v->lock.unlock();
	return -1;

found:
	/* cudaFree may wait for the device: never under the lock.  The
	 * counters drop after it, when the memory is really back. */
	if (!e->foreign && cudaGetDevice(&cur) == cudaSuccess &&
	    cur != v->device)
		cudaSetDevice(v->device);
	ce = vram_release(e);
	vram_count_free(v, e);
	if (ce != cudaSuccess)
		orcd_errf(err, "vram_free: '%s' (%p, %zu bytes): %s: %s",
		    e->label, ptr, e->requested, e->pinned ? "cudaFreeHost" :
		    "cudaFree", cudaGetErrorString(ce));
	free(e);
	return ce == cudaSuccess ? 0 : -1;
}

/* --- queries ---------------------------------------------------------- */

bool
vram_check_range(struct vram *v, const void *ptr, size_t bytes)
{
	struct vram_entry *e;
	uintptr_t a = (uintptr_t)ptr, off;
	bool ok = false;

	if (v == nullptr || ptr == nullptr || bytes > UINTPTR_MAX - a)
		return false;
	v->lock.lock();
	e = vram_find_le(v->root, a);
	if (e != nullptr) {
		off = a - e->addr;
		if (bytes == 0)
			ok = off < e->requested;
		else
			ok = bytes <= e->requested &&
			    off <= e->requested - bytes;
	}
	v->lock.unlock();
	return ok;
}

int
vram_set_limits(struct vram *v, uint64_t soft_limit, uint64_t hard_limit,
    struct orcd_err *err)
{
	if (v == nullptr)
		return orcd_errf(err, "vram_set_limits: NULL tracker");
	if (hard_limit != 0 && soft_limit > hard_limit)
		return orcd_errf(err, "vram_set_limits: soft limit %" PRIu64
		    " bytes above the hard limit %" PRIu64, soft_limit,
		    hard_limit);
	v->soft_limit.store(soft_limit, relaxed);
	v->hard_limit.store(hard_limit, relaxed);
	return 0;
}

enum vram_limit_state
vram_check_limits(const struct vram *v)
{
	uint64_t use, soft, hard;

	if (v == nullptr)
		return VRAM_LIMIT_OK;
	use = v->total.bytes.load(relaxed);
	hard = v->hard_limit.load(relaxed);
	if (hard != 0 && use > hard)
		return VRAM_LIMIT_HARD;
	soft = v->soft_limit.load(relaxed);
	if (soft != 0 && use > soft)
		return VRAM_LIMIT_SOFT;
	return VRAM_LIMIT_OK;
}

bool
vram_over_soft(const struct vram *v)
{
	uint64_t soft;

	if (v == nullptr)
		return false;
	soft = v->soft_limit.load(relaxed);
	return soft != 0 && v->total.bytes.load(relaxed) > soft;
}

static const char *
vram_memory_type_name(enum cudaMemoryType t)
{
	switch (t) {
	case cudaMemoryTypeUnregistered:
		return "unregistered host memory";
	case cudaMemoryTypeHost:
		return "pinned host memory";
	case cudaMemoryTypeDevice:
		return "device memory";
	case cudaMemoryTypeManaged:
		return "managed memory";
	}
	return "unknown memory";
}

/*
 * Checks one address of e; returns true when fine, else writes why into
 * reason.
 */
static bool
vram_check_address(const struct vram *v, const struct vram_entry *e,
    uintptr_t a, char *reason, size_t len)
{
	struct cudaPointerAttributes attr;
	cudaError_t ce;

	memset(&attr, 0, sizeof(attr));
	if ((ce = cudaPointerGetAttributes(&attr, (const void *)a)) !=
	    cudaSuccess) {
		cudaGetLastError();
		snprintf(reason, len, "cudaPointerGetAttributes(%p): %s",
		    (void *)a, cudaGetErrorString(ce));
		return false;
	}
	if (e->pinned) {
		if (attr.type == cudaMemoryTypeHost)
			return true;
		snprintf(reason, len, "pinned IO buffer %p is %s", (void *)a,
		    vram_memory_type_name(attr.type));
		return false;
	}
	if (attr.type != cudaMemoryTypeDevice) {
		snprintf(reason, len, "%p is %s, not device memory", (void *)a,
		    vram_memory_type_name(attr.type));
		return false;
	}
	if (attr.device != v->device) {
		snprintf(reason, len, "%p is on device %d, expected %d",
		    (void *)a, attr.device, v->device);
		return false;
	}
	return true;
}

struct vram_verify {
	const struct vram *v;
	struct vram_report *r;
	int violations;
};

static void
vram_verify_walk(struct vram_entry *e, struct vram_verify *vv)
{
	char reason[sizeof(vv->r->first_reason)];
	struct vram_report *r = vv->r;
	bool ok;

	if (e == nullptr)
		return;
	vram_verify_walk(e->left, vv);
	ok = vram_check_address(vv->v, e, e->addr, reason, sizeof(reason));
	if (ok && e->requested > 1)
		ok = vram_check_address(vv->v, e, e->addr + e->requested - 1,
		    reason, sizeof(reason));
	if (e->pinned)
		r->pinned_checked++;
	else {
		r->checked++;
		r->bytes += e->reserved;
	}
	if (!ok) {
		if (vv->violations++ == 0) {
			snprintf(r->first_label, sizeof(r->first_label), "%s",
			    e->label);
			snprintf(r->first_reason, sizeof(r->first_reason), "%s",
			    reason);
		}
	}
	vram_verify_walk(e->right, vv);
}

int
vram_verify_residency(struct vram *v, struct vram_report *r,
    struct orcd_err *err)
{
	struct vram_report local;
	struct vram_verify vv;
	std::chrono::steady_clock::time_point t0;

	if (v == nullptr)
		return orcd_errf(err, "vram_verify_residency: NULL tracker");
	if (r == nullptr)
		r = &local;
	memset(r, 0, sizeof(*r));
	vv.v = v;
	vv.r = r;
	vv.violations = 0;
	t0 = std::chrono::steady_clock::now();
	v->lock.lock();
	vram_verify_walk(v->root, &vv);
	v->lock.unlock();
	r->usec = std::chrono::duration<double, std::micro>(
	    std::chrono::steady_clock::now() - t0).count();
	r->violations = (uint64_t)vv.violations;
	if (vv.violations > 0)
		orcd_errf(err, "vram_verify_residency: %d of %" PRIu64
		    " allocations not resident as required; first '%s': %s",
		    vv.violations, r->checked + r->pinned_checked,
		    r->first_label, r->first_reason);
	return vv.violations;
}

static void
vram_counters_baseline(struct vram_counters &c)
{
	c.baseline.store(c.bytes.load(relaxed), relaxed);
}

void
vram_mark_baseline(struct vram *v)
{
	int i;

	if (v == nullptr)
		return;
	for (i = 0; i < VRAM_NPURPOSES; i++)
		vram_counters_baseline(v->purpose[i]);
	vram_counters_baseline(v->total);
	vram_counters_baseline(v->pinned);
}

int64_t
vram_leaked_bytes(const struct vram *v, enum vram_purpose purpose)
{
	const struct vram_counters *c;

	if (v == nullptr || (unsigned)purpose >= VRAM_NPURPOSES)
		return 0;
	c = &v->purpose[purpose];
	return (int64_t)(c->bytes.load(relaxed) - c->baseline.load(relaxed));
}

int64_t
vram_leaked_total(const struct vram *v)
{
	if (v == nullptr)
		return 0;
	return (int64_t)(v->total.bytes.load(relaxed) -
	    v->total.baseline.load(relaxed));
}

static void
vram_counters_copy(const struct vram_counters &c, struct vram_purpose_stats *s)
{
	s->bytes = c.bytes.load(relaxed);
	s->requested = c.requested.load(relaxed);
	s->count = c.count.load(relaxed);
	s->peak = c.peak.load(relaxed);
	s->baseline = c.baseline.load(relaxed);
}

void
vram_snapshot(const struct vram *v, struct vram_stats *s)
{
	int i;

	if (s == nullptr)
		return;
	memset(s, 0, sizeof(*s));
	if (v == nullptr) {
		s->device = -1;
		return;
	}
	for (i = 0; i < VRAM_NPURPOSES; i++)
		vram_counters_copy(v->purpose[i], &s->purpose[i]);
	vram_counters_copy(v->total, &s->total);
	vram_counters_copy(v->pinned, &s->pinned);
	s->soft_limit = v->soft_limit.load(relaxed);
	s->hard_limit = v->hard_limit.load(relaxed);
	s->pinned_limit = v->pinned_limit.load(relaxed);
	s->n_allocs = v->n_allocs.load(relaxed);
	s->n_frees = v->n_frees.load(relaxed);
	s->n_refused = v->n_refused.load(relaxed);
	s->n_failed = v->n_failed.load(relaxed);
	s->n_over_soft = v->n_over_soft.load(relaxed);
	s->n_bad_free = v->n_bad_free.load(relaxed);
	s->over_soft = s->soft_limit != 0 && s->total.bytes > s->soft_limit;
	s->device = v->device;
}

struct vram_walk {
	vram_foreach_fn fn;
	void *arg;
	size_t n;
	bool stop;
};

static void
vram_foreach_walk(const struct vram_entry *e, struct vram_walk *w)
{
	struct vram_alloc_info info;

	if (e == nullptr || w->stop)
		return;
	vram_foreach_walk(e->left, w);
	if (w->stop)
		return;
	info.ptr = (const void *)e->addr;
	info.bytes = e->requested;
	info.reserved = e->reserved;
	info.purpose = e->purpose;
	info.pinned = e->pinned;
	info.foreign = e->foreign;
	info.seq = e->seq;
	info.label = e->label;
	w->n++;
	if (w->fn(&info, w->arg) != 0) {
		w->stop = true;
		return;
	}
	vram_foreach_walk(e->right, w);
}

size_t
vram_foreach(struct vram *v, vram_foreach_fn fn, void *arg)
{
	struct vram_walk w = { fn, arg, 0, false };

	if (v == nullptr || fn == nullptr)
		return 0;
	v->lock.lock();
	vram_foreach_walk(v->root, &w);
	v->lock.unlock();
	return w.n;
}

int
vram_mem_info(size_t *free_bytes, size_t *total_bytes, struct orcd_err *err)
{
	size_t f = 0, t = 0;
	cudaError_t ce;

	if (free_bytes == nullptr || total_bytes == nullptr)
		return orcd_errf(err, "vram_mem_info: NULL out pointer");
	if ((ce = cudaMemGetInfo(&f, &t)) != cudaSuccess) {
		cudaGetLastError();
		*free_bytes = *total_bytes = 0;
		return orcd_errf(err, "vram_mem_info: cudaMemGetInfo: %s",
		    cudaGetErrorString(ce));
	}
	*free_bytes = f;
	*total_bytes = t;
	return 0;
}
