/*
 * test_vram: the VRAM tracker (cuda/vram.cu) against a real GPU.  Every
 * purpose and odd sizes (alignment, totals), limits, argument validation,
 * range checks, residency (real device memory passes, managed and host
 * memory registered as device memory are caught), 8 threads of allocation
 * and free, baseline and leak accounting, cudaMemGetInfo back at its start
 * once everything is freed, and the cost of vram_check_limits.
 *
 * Standalone: prints one line per failed check and a final
 * "vram: N passed, M failed"; exit 0, 1 on failures, 77 (skip) without a
 * CUDA device.
 */
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

extern "C" {
#include "err.h"
}
#include "orcd/vram.h"
#include "../cuda/vram.cuh"

static int n_pass, n_fail;

static void
check(bool ok, const char *what, const char *file, int line)
{
	if (ok)
		n_pass++;
	else {
		n_fail++;
		printf("FAIL %s:%d: %s\n", file, line, what);
	}
}

#define CHECK(c) check((c), #c, __FILE__, __LINE__)
/* A call that must fail with a message containing text. */
#define CHECK_ERR(call, e, text) do {					\
	memset(&(e), 0, sizeof(e));					\
	bool failed_ = (call) != 0;					\
	check(failed_, #call " fails", __FILE__, __LINE__);		\
	check(strstr((e).msg, (text)) != NULL,				\
	    "error of " #call " mentions \"" text "\"", __FILE__, __LINE__); \
	if (strstr((e).msg, (text)) == NULL)				\
		printf("     message: %s\n", (e).msg);			\
} while (0)

static const enum vram_purpose device_purposes[] = {
	VRAM_WEIGHTS, VRAM_KV, VRAM_ACTIVATIONS, VRAM_SCRATCH, VRAM_IO
};

static size_t
round256(size_t n)
{
	return (n + 255) & ~(size_t)255;
}

__global__ void
fill_kernel(unsigned char *p, size_t n, unsigned char value)
{
	size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (; i < n; i += stride)
		p[i] = value;
}

/* Writes the whole requested range on the device and reads back its two
 * ends: the memory is real and usable to its last byte. */
static bool
fill_and_probe(void *p, size_t n, unsigned char value)
{
	unsigned char first = 0, last = 0;

	fill_kernel<<<64, 256>>>((unsigned char *)p, n, value);
	if (cudaDeviceSynchronize() != cudaSuccess)
		return false;
	if (cudaMemcpy(&first, p, 1, cudaMemcpyDeviceToHost) != cudaSuccess ||
	    cudaMemcpy(&last, (unsigned char *)p + n - 1, 1,
	    cudaMemcpyDeviceToHost) != cudaSuccess)
		return false;
	return first == value && last == value;
}

static struct vram *
new_tracker(uint64_t soft, uint64_t hard)
{
	struct vram_config cfg;
	struct orcd_err err;
	struct vram *v;

	vram_config_init(&cfg);
	cfg.soft_limit = soft;
	cfg.hard_limit = hard;
	memset(&err, 0, sizeof(err));
	v = vram_create(&cfg, &err);
	if (v == NULL) {
		printf("vram_create: %s\n", err.msg);
		exit(1);
	}
	return v;
}

static void
destroy_clean(struct vram *v)
{
	struct orcd_err err;
	size_t live;

	memset(&err, 0, sizeof(err));
	live = vram_destroy(v, &err);
	CHECK(live == 0);
	if (live != 0)
		printf("     %s\n", err.msg);
}

static bool
stats_equal(const struct vram_purpose_stats *a,
    const struct vram_purpose_stats *b)
{
	return a->bytes == b->bytes && a->requested == b->requested &&
	    a->count == b->count;
}

/* --- create ----------------------------------------------------------- */

static void
test_create(void)
{
	struct vram_config cfg;
	struct orcd_err err;
	struct vram *v;

	v = vram_create(NULL, &err);
	CHECK(v != NULL);
	CHECK(vram_device(v) >= 0);
	destroy_clean(v);

	vram_config_init(&cfg);
	CHECK(cfg.device == -1 && cfg.soft_limit == 0 && cfg.hard_limit == 0);
	CHECK(cfg.pinned_limit == VRAM_PINNED_LIMIT_DEFAULT);
	cfg.soft_limit = 2000;
	cfg.hard_limit = 1000;
	memset(&err, 0, sizeof(err));
	CHECK(vram_create(&cfg, &err) == NULL);
	CHECK(strstr(err.msg, "soft limit") != NULL);

	vram_config_init(&cfg);
	cfg.device = 9999;
	memset(&err, 0, sizeof(err));
	CHECK(vram_create(&cfg, &err) == NULL);
	CHECK(strstr(err.msg, "out of range") != NULL);
	CHECK(vram_destroy(NULL, NULL) == 0);
}

/* --- every purpose, odd sizes ----------------------------------------- */

struct listing {
	size_t n;
	uintptr_t last;
	bool ordered;
	bool labelled;
	uint64_t bytes[VRAM_NPURPOSES];
	uint64_t pinned_bytes;
};

static int
list_cb(const struct vram_alloc_info *info, void *arg)
{
	struct listing *l = (struct listing *)arg;

	if (l->n > 0 && (uintptr_t)info->ptr <= l->last)
		l->ordered = false;
	l->last = (uintptr_t)info->ptr;
	if (info->label == NULL || strncmp(info->label, "t.", 2) != 0)
		l->labelled = false;
	if (info->pinned)
		l->pinned_bytes += info->bytes;
	else
		l->bytes[info->purpose] += info->bytes;
	l->n++;
	return 0;
}

static int
stop_after_two(const struct vram_alloc_info *, void *arg)
{
	return ++*(int *)arg >= 2;
}

static void
test_purposes(void)
{
	static const size_t sizes[] = { 1, 255, 256, 257, 1000, 4097, 65537,
	    (1u << 20) + 3 };
	const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
	struct vram *v = new_tracker(0, 0);
	struct vram_stats s;
	struct orcd_err err;
	struct listing l;
	std::vector<void *> ptrs;
	std::vector<size_t> lens;
	uint64_t want_bytes[VRAM_NPURPOSES] = { 0 };
	uint64_t want_req[VRAM_NPURPOSES] = { 0 };
	uint64_t all_bytes = 0, all_req = 0;
	bool aligned = true, usable = true, ranges = true;
	char label[64];
	void *p;
	int ok, stops = 0;

	for (enum vram_purpose pu : device_purposes) {
		for (size_t i = 0; i < nsizes; i++) {
			snprintf(label, sizeof(label), "t.%s.%zu",
			    vram_purpose_name(pu), sizes[i]);
			p = NULL;
			ok = vram_alloc(v, sizes[i], pu, label, &p, &err);
			CHECK(ok == 0 && p != NULL);
			if (ok != 0) {
				printf("     %s\n", err.msg);
				continue;
			}
			if ((uintptr_t)p % VRAM_ALIGN != 0)
				aligned = false;
			if (!fill_and_probe(p, sizes[i],
			    (unsigned char)(i + 1)))
				usable = false;
			if (!vram_check_range(v, p, sizes[i]) ||
			    vram_check_range(v, p, sizes[i] + 1))
				ranges = false;
			ptrs.push_back(p);
			lens.push_back(sizes[i]);
			want_bytes[pu] += round256(sizes[i]);
			want_req[pu] += sizes[i];
			all_bytes += round256(sizes[i]);
			all_req += sizes[i];
		}
	}
	CHECK(aligned);
	CHECK(usable);
	CHECK(ranges);

	vram_snapshot(v, &s);
	for (enum vram_purpose pu : device_purposes) {
		CHECK(s.purpose[pu].bytes == want_bytes[pu]);
		CHECK(s.purpose[pu].requested == want_req[pu]);
		CHECK(s.purpose[pu].count == nsizes);
		CHECK(s.purpose[pu].peak == want_bytes[pu]);
	}
	CHECK(s.total.bytes == all_bytes);
	CHECK(s.total.requested == all_req);
	CHECK(s.total.count == ptrs.size());
	CHECK(s.total.peak == all_bytes);
	CHECK(s.pinned.bytes == 0 && s.pinned.count == 0);
	CHECK(s.n_allocs == ptrs.size() && s.n_frees == 0);
	CHECK(!s.over_soft && s.device == vram_device(v));
	printf("purposes: %zu allocations, %" PRIu64 " bytes requested, %"
	    PRIu64 " reserved\n", ptrs.size(), all_req, all_bytes);

	memset(&l, 0, sizeof(l));
	l.ordered = l.labelled = true;
	CHECK(vram_foreach(v, list_cb, &l) == ptrs.size());
	CHECK(l.ordered && l.labelled);
	for (enum vram_purpose pu : device_purposes)
		CHECK(l.bytes[pu] == want_req[pu]);
	CHECK(vram_foreach(v, stop_after_two, &stops) == 2 && stops == 2);

	for (size_t i = 0; i < ptrs.size(); i++)
		CHECK(vram_free(v, ptrs[i], &err) == 0);
	vram_snapshot(v, &s);
	for (enum vram_purpose pu : device_purposes) {
		CHECK(s.purpose[pu].bytes == 0 &&
		    s.purpose[pu].requested == 0 && s.purpose[pu].count == 0);
		CHECK(s.purpose[pu].peak == want_bytes[pu]);
	}
	CHECK(s.total.bytes == 0 && s.total.requested == 0 &&
	    s.total.count == 0);
	CHECK(s.total.peak == all_bytes);
	CHECK(s.n_frees == ptrs.size());
	CHECK(vram_foreach(v, list_cb, &l) == 0);
	destroy_clean(v);
}

/* --- pinned IO buffer ------------------------------------------------- */

static void
test_pinned(void)
{
	struct vram *v = new_tracker(0, 0);
	struct vram_report r;
	struct vram_stats s;
	struct orcd_err err;
	int32_t *host = NULL, *dev = NULL, want[25];
	void *p = NULL, *big = (void *)1;
	bool copied = true;
	int i;

	CHECK(vram_alloc_io_pinned(v, 100, "t.io.pinned", &p, &err) == 0);
	CHECK(p != NULL && (uintptr_t)p % VRAM_ALIGN == 0);
	host = (int32_t *)p;
	vram_snapshot(v, &s);
	CHECK(s.pinned.bytes == 256 && s.pinned.requested == 100 &&
	    s.pinned.count == 1 && s.pinned.peak == 256);
	CHECK(s.total.bytes == 0 && s.total.count == 0);
	CHECK(s.purpose[VRAM_IO].bytes == 0);
	CHECK(vram_check_range(v, p, 100) && !vram_check_range(v, p, 101));

	/* The use it is for: token ids copied back from the device. */
	CHECK(vram_alloc(v, sizeof(want), VRAM_IO, "t.io.tokens", (void **)&dev,
	    &err) == 0);
	for (i = 0; i < 25; i++)
		want[i] = 1000 + i;
	if (cudaMemcpy(dev, want, sizeof(want), cudaMemcpyHostToDevice) !=
	    cudaSuccess || cudaMemcpy(host, dev, sizeof(want),
	    cudaMemcpyDeviceToHost) != cudaSuccess)
		copied = false;
	for (i = 0; copied && i < 25; i++)
		copied = host[i] == want[i];
	CHECK(copied);
	vram_snapshot(v, &s);
	CHECK(s.purpose[VRAM_IO].bytes == 256 && s.total.bytes == 256);

	CHECK(vram_verify_residency(v, &r, &err) == 0);
	CHECK(r.checked == 1 && r.pinned_checked == 1 && r.violations == 0);
	CHECK(r.bytes == 256);

	CHECK_ERR(vram_alloc_io_pinned(v, 2u << 20, "t.io.big", &big, &err),
	    err, "pinned limit");
	CHECK(big == NULL);
	CHECK(strstr(err.msg, "t.io.big") != NULL);
	vram_snapshot(v, &s);
	CHECK(s.pinned.bytes == 256 && s.pinned.count == 1 && s.n_refused == 1);

	CHECK(vram_free(v, p, &err) == 0);
	CHECK(vram_free(v, dev, &err) == 0);
	vram_snapshot(v, &s);
	CHECK(s.pinned.bytes == 0 && s.pinned.count == 0 &&
	    s.pinned.requested == 0);
	CHECK(s.total.bytes == 0);
	destroy_clean(v);
}

/* --- limits ----------------------------------------------------------- */

static void
test_limits(void)
{
	const size_t kib = 1024, chunk = 768 * kib;
	struct vram *v = new_tracker(1024 * kib, 2048 * kib);
	struct vram_stats before, after;
	struct orcd_err err;
	size_t free0, free1, total;
	void *a = NULL, *b = NULL, *c = (void *)1, *d = NULL, *e = (void *)1;

	CHECK(vram_check_limits(v) == VRAM_LIMIT_OK && !vram_over_soft(v));
	CHECK(vram_alloc(v, chunk, VRAM_WEIGHTS, "t.lim.a", &a, &err) == 0);
	CHECK(vram_check_limits(v) == VRAM_LIMIT_OK && !vram_over_soft(v));

	/* Crossing the soft limit is allowed and flagged. */
	CHECK(vram_alloc(v, chunk, VRAM_KV, "t.lim.b", &b, &err) == 0);
	CHECK(b != NULL);
	CHECK(vram_over_soft(v));
	CHECK(vram_check_limits(v) == VRAM_LIMIT_SOFT);
	vram_snapshot(v, &before);
	CHECK(before.over_soft && before.n_over_soft == 1);

	/* Crossing the hard limit is refused, nothing allocated. */
	CHECK(vram_mem_info(&free0, &total, &err) == 0);
	CHECK_ERR(vram_alloc(v, chunk, VRAM_ACTIVATIONS, "t.lim.c", &c, &err),
	    err, "t.lim.c");
	CHECK(strstr(err.msg, "786432") != NULL);    /* bytes */
	CHECK(strstr(err.msg, "1572864") != NULL);   /* in use */
	CHECK(strstr(err.msg, "2097152") != NULL);   /* limit */
	CHECK(strstr(err.msg, "hard limit") != NULL);
	printf("hard limit refusal: %s\n", err.msg);
	CHECK(c == NULL);
	CHECK(vram_mem_info(&free1, &total, &err) == 0);
	CHECK(free1 == free0);
	vram_snapshot(v, &after);
	CHECK(stats_equal(&before.total, &after.total));
	for (enum vram_purpose pu : device_purposes)
		CHECK(stats_equal(&before.purpose[pu], &after.purpose[pu]));
	CHECK(after.total.peak == before.total.peak);
	CHECK(after.n_refused == before.n_refused + 1);
	CHECK(after.n_allocs == before.n_allocs);

	/* The hard limit itself is allowed, one byte more is not. */
	CHECK(vram_alloc(v, 512 * kib, VRAM_SCRATCH, "t.lim.d", &d, &err) == 0);
	vram_snapshot(v, &after);
	CHECK(after.total.bytes == 2048 * kib);
	CHECK(after.total.peak == 2048 * kib);
	CHECK_ERR(vram_alloc(v, 1, VRAM_SCRATCH, "t.lim.e", &e, &err), err,
	    "refused");
	CHECK(e == NULL);
	CHECK(vram_check_limits(v) == VRAM_LIMIT_SOFT);

	/* Lowered below the use: nothing is freed, the state says so. */
	CHECK(vram_set_limits(v, 512 * kib, 1024 * kib, &err) == 0);
	CHECK(vram_check_limits(v) == VRAM_LIMIT_HARD);
	CHECK_ERR(vram_set_limits(v, 4096, 1024, &err), err, "soft limit");
	CHECK(vram_check_limits(v) == VRAM_LIMIT_HARD);
	CHECK(vram_set_limits(v, 0, 0, &err) == 0);
	CHECK(vram_check_limits(v) == VRAM_LIMIT_OK && !vram_over_soft(v));
	CHECK_ERR(vram_set_limits(NULL, 0, 0, &err), err, "NULL tracker");

	CHECK(vram_free(v, a, &err) == 0);
	CHECK(vram_free(v, b, &err) == 0);
	CHECK(vram_free(v, d, &err) == 0);
	vram_snapshot(v, &after);
	CHECK(after.total.bytes == 0 && after.total.count == 0);
	destroy_clean(v);
}

/* --- validation ------------------------------------------------------- */

static void
test_validation(void)
{
	struct vram *v = new_tracker(0, 0);
	struct vram_stats s0, s1;
	struct vram_report r;
	struct orcd_err err;
	size_t f, t;
	void *p = (void *)1, *q = NULL, *raw = NULL;
	int on_stack = 0;

	CHECK_ERR(vram_alloc(NULL, 256, VRAM_KV, "t.v", &p, &err), err,
	    "NULL tracker");
	CHECK(p == NULL);
	CHECK_ERR(vram_alloc(v, 256, VRAM_KV, "t.v", NULL, &err), err,
	    "NULL out pointer");
	p = (void *)1;
	CHECK_ERR(vram_alloc(v, 0, VRAM_KV, "t.zero", &p, &err), err,
	    "zero bytes");
	CHECK(p == NULL);
	CHECK(strstr(err.msg, "t.zero") != NULL);
	CHECK_ERR(vram_alloc(v, SIZE_MAX, VRAM_KV, "t.huge", &p, &err), err,
	    "overflow");
	CHECK_ERR(vram_alloc(v, SIZE_MAX - 254, VRAM_KV, "t.huge", &p, &err),
	    err, "overflow");
	CHECK_ERR(vram_alloc(v, 256, (enum vram_purpose)42, "t.v", &p, &err),
	    err, "bad purpose");
	CHECK_ERR(vram_alloc(v, 256, (enum vram_purpose)-1, "t.v", &p, &err),
	    err, "bad purpose");
	CHECK_ERR(vram_alloc_io_pinned(NULL, 64, "t.v", &p, &err), err,
	    "NULL tracker");
	CHECK_ERR(vram_alloc_io_pinned(v, 64, "t.v", NULL, &err), err,
	    "NULL out pointer");
	CHECK_ERR(vram_alloc_io_pinned(v, 0, "t.v", &p, &err), err,
	    "zero bytes");

	/* Rounds without overflow but no device has that much: the
	 * cudaMalloc failure is reported, counted, cleared and leaves the
	 * totals as they were. */
	vram_snapshot(v, &s0);
	CHECK_ERR(vram_alloc(v, SIZE_MAX - 255, VRAM_WEIGHTS, "t.toobig", &p,
	    &err), err, "cudaMalloc");
	CHECK(p == NULL && strstr(err.msg, "t.toobig") != NULL);
	CHECK(cudaGetLastError() == cudaSuccess);
	vram_snapshot(v, &s1);
	CHECK(stats_equal(&s0.total, &s1.total) && s1.total.bytes == 0);
	CHECK(s1.n_failed == s0.n_failed + 1);

	/* A NULL label is allowed and named. */
	CHECK(vram_alloc(v, 10, VRAM_SCRATCH, NULL, &q, &err) == 0);

	/* Frees the tracker must refuse, without calling cudaFree. */
	vram_snapshot(v, &s0);
	CHECK_ERR(vram_free(NULL, q, &err), err, "NULL tracker");
	CHECK_ERR(vram_free(v, &on_stack, &err), err, "not a tracked");
	CHECK(cudaMalloc(&raw, 4096) == cudaSuccess);
	CHECK_ERR(vram_free(v, raw, &err), err, "not a tracked");
	CHECK(fill_and_probe(raw, 4096, 7));       /* still allocated */
	CHECK(cudaFree(raw) == cudaSuccess);
	CHECK_ERR(vram_free(v, (char *)q + 4, &err), err, "inside");
	CHECK(strstr(err.msg, "(unlabeled)") != NULL);
	CHECK(vram_check_range(v, q, 10));          /* still tracked */
	vram_snapshot(v, &s1);
	CHECK(stats_equal(&s0.total, &s1.total));
	CHECK(s1.n_bad_free == s0.n_bad_free + 3);
	CHECK(vram_free(v, NULL, &err) == 0);
	CHECK(vram_free(v, q, &err) == 0);
	CHECK_ERR(vram_free(v, q, &err), err, "double free");
	CHECK(strstr(err.msg, "(unlabeled)") != NULL);

	/* Foreign registration arguments. */
	CHECK_ERR(vram_track_foreign(v, NULL, 64, VRAM_KV, "t.f", &err), err,
	    "NULL pointer");
	CHECK_ERR(vram_track_foreign(NULL, &on_stack, 4, VRAM_KV, "t.f", &err),
	    err, "NULL tracker");
	CHECK_ERR(vram_track_foreign(v, &on_stack, 0, VRAM_KV, "t.f", &err),
	    err, "zero bytes");
	CHECK_ERR(vram_track_foreign(v, (void *)(UINTPTR_MAX - 16), 64, VRAM_KV,
	    "t.f", &err), err, "wraps");
	CHECK(vram_alloc(v, 1000, VRAM_KV, "t.owner", &q, &err) == 0);
	CHECK_ERR(vram_track_foreign(v, (char *)q + 512, 64, VRAM_KV,
	    "t.overlap", &err), err, "overlaps");
	CHECK(strstr(err.msg, "t.owner") != NULL);
	CHECK_ERR(vram_track_foreign(v, q, 64, VRAM_KV, "t.same", &err), err,
	    "overlaps");
	CHECK(vram_free(v, q, &err) == 0);

	/* Queries with NULL arguments answer, never crash. */
	CHECK_ERR(vram_verify_residency(NULL, &r, &err) < 0 ? -1 : 0, err,
	    "NULL tracker");
	CHECK(vram_verify_residency(v, NULL, NULL) == 0);
	CHECK_ERR(vram_mem_info(NULL, &t, &err), err, "NULL out pointer");
	CHECK_ERR(vram_mem_info(&f, NULL, &err), err, "NULL out pointer");
	CHECK(vram_check_limits(NULL) == VRAM_LIMIT_OK);
	CHECK(!vram_over_soft(NULL));
	vram_snapshot(NULL, &s0);
	CHECK(s0.device == -1 && s0.total.bytes == 0);
	vram_snapshot(v, NULL);
	CHECK(vram_leaked_bytes(NULL, VRAM_KV) == 0);
	CHECK(vram_leaked_bytes(v, (enum vram_purpose)77) == 0);
	CHECK(vram_leaked_total(NULL) == 0);
	CHECK(vram_foreach(NULL, list_cb, NULL) == 0);
	CHECK(vram_foreach(v, NULL, NULL) == 0);
	vram_mark_baseline(NULL);
	CHECK(!vram_check_range(NULL, &on_stack, 1));
	CHECK(strcmp(vram_purpose_name(VRAM_KV), "kv") == 0);
	CHECK(strcmp(vram_purpose_name((enum vram_purpose)9), "?") == 0);
	CHECK(vram_device(NULL) == -1);
	destroy_clean(v);
}

/* --- check_range edges ------------------------------------------------ */

static void
test_check_range(void)
{
	struct vram *v = new_tracker(0, 0);
	struct orcd_err err;
	char *a = NULL, *b = NULL, *pin = NULL;

	CHECK(vram_alloc(v, 1000, VRAM_ACTIVATIONS, "t.r.a", (void **)&a,
	    &err) == 0);
	CHECK(vram_alloc(v, 4096, VRAM_ACTIVATIONS, "t.r.b", (void **)&b,
	    &err) == 0);
	CHECK(vram_alloc_io_pinned(v, 64, "t.r.pin", (void **)&pin, &err) == 0);
	if (a == NULL || b == NULL || pin == NULL)
		return;
	CHECK(vram_check_range(v, a, 1000));
	CHECK(vram_check_range(v, a, 0));
	CHECK(vram_check_range(v, a, 1));
	CHECK(vram_check_range(v, a + 999, 1));
	CHECK(vram_check_range(v, a + 500, 500));
	CHECK(vram_check_range(v, a + 999, 0));
	CHECK(!vram_check_range(v, a, 1001));
	CHECK(!vram_check_range(v, a + 999, 2));
	CHECK(!vram_check_range(v, a + 500, 501));
	CHECK(!vram_check_range(v, a + 1000, 0));   /* one past the end */
	CHECK(!vram_check_range(v, a + 1000, 1));   /* rounding padding */
	CHECK(!vram_check_range(v, a + 1023, 1));
	CHECK(!vram_check_range(v, a - 1, 1));
	CHECK(!vram_check_range(v, a - 1, 2));
	CHECK(!vram_check_range(v, a, SIZE_MAX));
	CHECK(!vram_check_range(v, a + 1, SIZE_MAX));  /* wraps */
	CHECK(!vram_check_range(v, NULL, 1));
	CHECK(!vram_check_range(v, NULL, 0));
	CHECK(vram_check_range(v, b, 4096));
	CHECK(!vram_check_range(v, b, 4097));
	CHECK(!vram_check_range(v, b + 4096, 0));
	if (b > a)
		CHECK(!vram_check_range(v, a, (size_t)(b - a) + 1));
	else
		CHECK(!vram_check_range(v, b, (size_t)(a - b) + 1));
	CHECK(vram_check_range(v, pin, 64) && !vram_check_range(v, pin, 65));
	CHECK(vram_check_elems(v, (const float *)a, 250));
	CHECK(!vram_check_elems(v, (const float *)a, 251));
	CHECK(!vram_check_elems(v, (const float *)a, SIZE_MAX / 2));
	CHECK(!vram_check_elems(v, (const double *)a, SIZE_MAX / 8 + 1));
	CHECK(vram_free(v, a, &err) == 0);
	CHECK(!vram_check_range(v, a, 1));
	CHECK(!vram_check_range(v, a, 0));
	CHECK(vram_check_range(v, b, 4096));
	CHECK(vram_free(v, b, &err) == 0);
	CHECK(vram_free(v, pin, &err) == 0);
	CHECK(!vram_check_range(v, b, 1) && !vram_check_range(v, pin, 1));
	destroy_clean(v);
}

/* --- residency -------------------------------------------------------- */

static void
test_residency(void)
{
	struct vram *v = new_tracker(0, 0), *w;
	struct vram_report r;
	struct vram_stats s;
	struct orcd_err err;
	std::vector<void *> ptrs;
	void *p, *managed = NULL, *pinned = NULL, *host = NULL;
	uint64_t bytes = 0;
	int n;

	for (enum vram_purpose pu : device_purposes) {
		for (size_t sz : { (size_t)300, (size_t)(3u << 20) + 1 }) {
			p = NULL;
			CHECK(vram_alloc(v, sz, pu, "t.res", &p, &err) == 0);
			if (p != NULL) {
				ptrs.push_back(p);
				bytes += round256(sz);
			}
		}
	}
	CHECK(vram_alloc_io_pinned(v, 512, "t.res.pinned", &p, &err) == 0);
	ptrs.push_back(p);

	memset(&err, 0, sizeof(err));
	n = vram_verify_residency(v, &r, &err);
	CHECK(n == 0 && r.violations == 0);
	CHECK(r.checked == ptrs.size() - 1 && r.bytes == bytes);
	CHECK(r.pinned_checked == 1);
	CHECK(r.first_label[0] == '\0' && err.msg[0] == '\0');
	printf("residency: %" PRIu64 " device + %" PRIu64 " pinned allocations "
	    "(%" PRIu64 " bytes) verified in %.1f us, %" PRIu64 " violations\n",
	    r.checked, r.pinned_checked, r.bytes, r.usec, r.violations);

	/* Managed memory passed off as weights is caught. */
	CHECK(cudaMallocManaged(&managed, 8192, cudaMemAttachGlobal) ==
	    cudaSuccess);
	CHECK(vram_track_foreign(v, managed, 8192, VRAM_WEIGHTS,
	    "t.foreign.managed", &err) == 0);
	vram_snapshot(v, &s);
	CHECK(s.purpose[VRAM_WEIGHTS].bytes == round256(300) +
	    round256((3u << 20) + 1) + 8192);
	memset(&err, 0, sizeof(err));
	n = vram_verify_residency(v, &r, &err);
	CHECK(n == 1 && r.violations == 1);
	CHECK(strcmp(r.first_label, "t.foreign.managed") == 0);
	CHECK(strstr(r.first_reason, "managed") != NULL);
	CHECK(strstr(err.msg, "t.foreign.managed") != NULL);
	printf("managed violation: %s\n", err.msg);

	/* So is pinned host memory registered as KV. */
	CHECK(cudaHostAlloc(&pinned, 4096, cudaHostAllocDefault) ==
	    cudaSuccess);
	CHECK(vram_track_foreign(v, pinned, 4096, VRAM_KV, "t.foreign.pinned",
	    &err) == 0);
	n = vram_verify_residency(v, &r, &err);
	CHECK(n == 2 && r.violations == 2);
	CHECK(vram_free(v, managed, &err) == 0);     /* untracked only */
	n = vram_verify_residency(v, &r, &err);
	CHECK(n == 1 && strcmp(r.first_label, "t.foreign.pinned") == 0);
	CHECK(strstr(r.first_reason, "pinned host") != NULL);
	printf("pinned-host violation: %s\n", err.msg);
	CHECK(vram_free(v, pinned, &err) == 0);

	/* And plain pageable host memory. */
	host = malloc(4096);
	CHECK(vram_track_foreign(v, host, 4096, VRAM_ACTIVATIONS,
	    "t.foreign.malloc", &err) == 0);
	n = vram_verify_residency(v, &r, &err);
	CHECK(n == 1 && strcmp(r.first_label, "t.foreign.malloc") == 0);
	printf("pageable-host violation: %s\n", err.msg);
	CHECK(vram_free(v, host, &err) == 0);
	CHECK(vram_verify_residency(v, &r, &err) == 0);

	/* The tracker never freed the foreign memory: freeing it here
	 * succeeds (a second free would be an error). */
	CHECK(cudaFree(managed) == cudaSuccess);
	CHECK(cudaFreeHost(pinned) == cudaSuccess);
	free(host);

	for (void *q : ptrs)
		CHECK(vram_free(v, q, &err) == 0);
	vram_snapshot(v, &s);
	CHECK(s.total.bytes == 0 && s.pinned.bytes == 0);
	destroy_clean(v);

	/* vram_destroy drops a foreign registration without freeing it. */
	w = new_tracker(0, 0);
	CHECK(cudaMallocManaged(&managed, 4096, cudaMemAttachGlobal) ==
	    cudaSuccess);
	CHECK(vram_track_foreign(w, managed, 4096, VRAM_SCRATCH,
	    "t.foreign.left", &err) == 0);
	memset(&err, 0, sizeof(err));
	CHECK(vram_destroy(w, &err) == 1);
	CHECK(strstr(err.msg, "t.foreign.left") != NULL);
	CHECK(cudaFree(managed) == cudaSuccess);

	if (cudaGetDeviceCount(&n) == cudaSuccess && n < 2)
		printf("residency: one device, wrong-device check not "
		    "exercised\n");
}

/* --- concurrency ------------------------------------------------------ */

struct worker_result {
	int failures;
	int range_misses;
	uint64_t allocs;
};

static void
worker(struct vram *v, int id, int iters, struct worker_result *res)
{
	const int keep = 4;
	void *live[keep] = { NULL };
	size_t len[keep] = { 0 };
	uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
	struct orcd_err err;
	char label[32];
	int i, slot;

	snprintf(label, sizeof(label), "t.thread.%d", id);
	for (i = 0; i < iters; i++) {
		slot = i % keep;
		if (live[slot] != NULL) {
			if (!vram_check_range(v, live[slot], len[slot]))
				res->range_misses++;
			if (vram_free(v, live[slot], &err) != 0)
				res->failures++;
			live[slot] = NULL;
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		len[slot] = 1 + (size_t)(x % 70000);
		if (vram_alloc(v, len[slot], device_purposes[(x >> 20) % 5],
		    label, &live[slot], &err) != 0) {
			res->failures++;
			printf("     thread %d: %s\n", id, err.msg);
		} else
			res->allocs++;
	}
	for (slot = 0; slot < keep; slot++)
		if (live[slot] != NULL && vram_free(v, live[slot], &err) != 0)
			res->failures++;
}

static void
limit_worker(struct vram *v, int tries, size_t bytes, std::vector<void *> *got,
    int *refused)
{
	struct orcd_err err;
	void *p;
	int i;

	for (i = 0; i < tries; i++) {
		if (vram_alloc(v, bytes, VRAM_KV, "t.race", &p, &err) == 0)
			got->push_back(p);
		else if (strstr(err.msg, "hard limit") != NULL)
			(*refused)++;
	}
}

static void
test_concurrency(void)
{
	const int nthreads = 8, iters = 1000;
	struct vram *v = new_tracker(0, 0);
	struct worker_result res[nthreads];
	std::vector<std::thread> threads;
	std::atomic<bool> done{false};
	std::atomic<int> reader_violations{0};
	std::atomic<uint64_t> reads{0};
	struct vram_stats s;
	struct orcd_err err;
	uint64_t allocs = 0;
	int failures = 0, misses = 0, stop = 0, i;
	std::chrono::steady_clock::time_point t0;
	double secs;

	memset(res, 0, sizeof(res));
	/* A reader in parallel: totals, limits and residency, as the
	 * monitor thread would. */
	std::thread reader([&]() {
		struct vram_stats rs;
		struct vram_report rr;

		while (!done.load()) {
			vram_snapshot(v, &rs);
			(void)vram_check_limits(v);
			if (vram_verify_residency(v, &rr, NULL) != 0)
				reader_violations++;
			reads++;
			/* A monitor runs now and then, not in a spin. */
			std::this_thread::sleep_for(
			    std::chrono::microseconds(50));
		}
	});
	t0 = std::chrono::steady_clock::now();
	for (i = 0; i < nthreads; i++)
		threads.emplace_back(worker, v, i, iters, &res[i]);
	for (auto &t : threads)
		t.join();
	secs = std::chrono::duration<double>(std::chrono::steady_clock::now() -
	    t0).count();
	done.store(true);
	reader.join();
	for (i = 0; i < nthreads; i++) {
		failures += res[i].failures;
		misses += res[i].range_misses;
		allocs += res[i].allocs;
	}
	CHECK(failures == 0 && misses == 0);
	CHECK(allocs == (uint64_t)nthreads * iters);
	CHECK(reader_violations.load() == 0);
	vram_snapshot(v, &s);
	CHECK(s.total.bytes == 0 && s.total.requested == 0 &&
	    s.total.count == 0);
	for (enum vram_purpose pu : device_purposes)
		CHECK(s.purpose[pu].bytes == 0 &&
		    s.purpose[pu].requested == 0 && s.purpose[pu].count == 0);
	CHECK(s.n_allocs == allocs && s.n_frees == allocs);
	CHECK(s.total.peak > 0 && s.total.peak <= (uint64_t)nthreads * 4 *
	    round256(70000));
	CHECK(vram_foreach(v, stop_after_two, &stop) == 0);
	printf("concurrency: %d threads x %d alloc/free in %.3f s (%.1f us "
	    "per pair), peak %" PRIu64 " bytes, %" PRIu64 " parallel reads\n",
	    nthreads, iters, secs, secs * 1e6 / (double)allocs, s.total.peak,
	    reads.load());

	/* Racing for the last room under the hard limit: exactly the room
	 * is granted, never more. */
	const size_t chunk = 64 * 1024;
	const int room = 64, tries = 16;
	std::vector<void *> got[nthreads];
	int refused[nthreads] = { 0 };
	size_t granted = 0;
	int nrefused = 0;

	CHECK(vram_set_limits(v, 0, (uint64_t)room * chunk, &err) == 0);
	threads.clear();
	for (i = 0; i < nthreads; i++)
		threads.emplace_back(limit_worker, v, tries, chunk, &got[i],
		    &refused[i]);
	for (auto &t : threads)
		t.join();
	for (i = 0; i < nthreads; i++) {
		granted += got[i].size();
		nrefused += refused[i];
	}
	vram_snapshot(v, &s);
	CHECK(granted == (size_t)room);
	CHECK(nrefused == nthreads * tries - room);
	CHECK(s.total.bytes == (uint64_t)room * chunk);
	CHECK(s.total.peak == (uint64_t)room * chunk);
	CHECK(s.purpose[VRAM_KV].count == (uint64_t)room);
	printf("hard-limit race: %zu of %d granted, %d refused\n", granted,
	    nthreads * tries, nrefused);
	for (i = 0; i < nthreads; i++)
		for (void *p : got[i])
			CHECK(vram_free(v, p, &err) == 0);
	vram_snapshot(v, &s);
	CHECK(s.total.bytes == 0 && s.total.count == 0);
	destroy_clean(v);
}

/* --- baseline and leaks ----------------------------------------------- */

static int
print_cb(const struct vram_alloc_info *info, void *arg)
{
	printf("  live: %-16s %-11s %8zu B (%zu reserved)%s%s\n", info->label,
	    vram_purpose_name(info->purpose), info->bytes, info->reserved,
	    info->pinned ? " pinned" : "", info->foreign ? " foreign" : "");
	++*(int *)arg;
	return 0;
}

static void
test_baseline(void)
{
	struct vram *v = new_tracker(0, 0);
	struct vram_stats s;
	struct orcd_err err;
	void *w[3], *kv[2], *io, *act, *scr, *kv2, *leak;
	int i, n = 0;

	for (i = 0; i < 3; i++)
		CHECK(vram_alloc(v, 1u << 20, VRAM_WEIGHTS, "t.b.weight", &w[i],
		    &err) == 0);
	for (i = 0; i < 2; i++)
		CHECK(vram_alloc(v, 512u << 10, VRAM_KV, "t.b.kv", &kv[i],
		    &err) == 0);
	CHECK(vram_alloc_io_pinned(v, 64, "t.b.tokens", &io, &err) == 0);
	vram_mark_baseline(v);
	vram_snapshot(v, &s);
	CHECK(s.total.baseline == (3u << 20) + (1u << 20));
	CHECK(s.purpose[VRAM_WEIGHTS].baseline == 3u << 20);
	CHECK(s.purpose[VRAM_KV].baseline == 1u << 20);
	CHECK(s.pinned.baseline == 256);
	for (enum vram_purpose pu : device_purposes)
		CHECK(vram_leaked_bytes(v, pu) == 0);
	CHECK(vram_leaked_total(v) == 0);

	/* A request's worth of memory comes and goes. */
	CHECK(vram_alloc(v, 10000, VRAM_ACTIVATIONS, "t.b.act", &act, &err) ==
	    0);
	CHECK(vram_alloc(v, 300, VRAM_SCRATCH, "t.b.scratch", &scr, &err) == 0);
	CHECK(vram_alloc(v, 4096, VRAM_KV, "t.b.kv2", &kv2, &err) == 0);
	CHECK(vram_leaked_bytes(v, VRAM_ACTIVATIONS) == 10240);
	CHECK(vram_leaked_bytes(v, VRAM_SCRATCH) == 512);
	CHECK(vram_leaked_bytes(v, VRAM_KV) == 4096);
	CHECK(vram_leaked_bytes(v, VRAM_WEIGHTS) == 0);
	CHECK(vram_leaked_total(v) == 10240 + 512 + 4096);
	CHECK(vram_free(v, act, &err) == 0);
	CHECK(vram_free(v, scr, &err) == 0);
	CHECK(vram_free(v, kv2, &err) == 0);
	for (enum vram_purpose pu : device_purposes)
		CHECK(vram_leaked_bytes(v, pu) == 0);
	CHECK(vram_leaked_total(v) == 0);

	/* One leaks; one weight goes below the baseline. */
	CHECK(vram_alloc(v, 1000, VRAM_SCRATCH, "t.b.leaky", &leak, &err) == 0);
	CHECK(vram_leaked_bytes(v, VRAM_SCRATCH) == 1024);
	CHECK(vram_free(v, w[2], &err) == 0);
	CHECK(vram_leaked_bytes(v, VRAM_WEIGHTS) == -(int64_t)(1u << 20));
	CHECK(vram_leaked_total(v) == 1024 - (int64_t)(1u << 20));
	CHECK(vram_foreach(v, print_cb, &n) == 6 && n == 6);

	/* vram_destroy frees what is left and names it. */
	memset(&err, 0, sizeof(err));
	CHECK(vram_destroy(v, &err) == 6);
	CHECK(strstr(err.msg, "still live") != NULL);
	CHECK(strstr(err.msg, "t.b.leaky") != NULL);
	CHECK(strstr(err.msg, "t.b.tokens") != NULL);
	printf("destroy: %s\n", err.msg);
	(void)kv;
	(void)io;
}

/* --- timing ----------------------------------------------------------- */

static void
test_timing(void)
{
	const long n = 10 * 1000 * 1000;
	struct vram *v = new_tracker(1 << 20, 2 << 20);
	struct vram_stats s;
	struct orcd_err err;
	std::chrono::steady_clock::time_point t0;
	volatile unsigned sink = 0;
	double ns_limits, ns_snapshot, ns_range;
	void *p;
	long i;

	CHECK(vram_alloc(v, 1 << 19, VRAM_KV, "t.time", &p, &err) == 0);
	t0 = std::chrono::steady_clock::now();
	for (i = 0; i < n; i++)
		sink = sink + (unsigned)vram_check_limits(v);
	ns_limits = std::chrono::duration<double, std::nano>(
	    std::chrono::steady_clock::now() - t0).count() / (double)n;
	t0 = std::chrono::steady_clock::now();
	for (i = 0; i < n / 100; i++) {
		vram_snapshot(v, &s);
		sink = sink + (unsigned)s.total.count;
	}
	ns_snapshot = std::chrono::duration<double, std::nano>(
	    std::chrono::steady_clock::now() - t0).count() / (double)(n / 100);
	t0 = std::chrono::steady_clock::now();
	for (i = 0; i < n / 10; i++)
		sink = sink + (unsigned)vram_check_range(v,
		    (char *)p + (i & 1023), 64);
	ns_range = std::chrono::duration<double, std::nano>(
	    std::chrono::steady_clock::now() - t0).count() / (double)(n / 10);
	printf("timing: vram_check_limits %.2f ns/call, vram_snapshot %.1f "
	    "ns/call, vram_check_range %.1f ns/call (sink %u)\n", ns_limits,
	    ns_snapshot, ns_range, (unsigned)sink);
	CHECK(ns_limits < 1000.0);
	CHECK(vram_free(v, p, &err) == 0);
	destroy_clean(v);
}

int
main(void)
{
	struct orcd_err err;
	size_t free_start, free_end, total, diff;
	void *warm = NULL;
	int n = 0;
	/* The driver may keep a little for itself; say how much it kept. */
	const size_t tolerance = 2u << 20;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
		printf("vram: no CUDA device, skipped\n");
		return 77;
	}
	/* Context, module and first-allocation costs before the reference
	 * reading of free memory. */
	if (cudaSetDevice(0) != cudaSuccess || cudaMalloc(&warm, 1 << 20) !=
	    cudaSuccess || !fill_and_probe(warm, 1 << 20, 1) ||
	    cudaFree(warm) != cudaSuccess) {
		printf("vram: device 0 unusable, skipped\n");
		return 77;
	}
	if (vram_mem_info(&free_start, &total, &err) != 0) {
		printf("vram: %s\n", err.msg);
		return 1;
	}
	printf("device: %d device(s); free %zu of %zu bytes at start\n", n,
	    free_start, total);

	test_create();
	test_purposes();
	test_pinned();
	test_limits();
	test_validation();
	test_check_range();
	test_residency();
	test_concurrency();
	test_baseline();
	test_timing();

	CHECK(cudaDeviceSynchronize() == cudaSuccess);
	CHECK(vram_mem_info(&free_end, &total, &err) == 0);
	diff = free_end > free_start ? free_end - free_start :
	    free_start - free_end;
	printf("cudaMemGetInfo: free %zu at start, %zu at end (%s%zu bytes, "
	    "%s)\n", free_start, free_end, free_end >= free_start ? "+" : "-",
	    diff, diff == 0 ? "exact" : diff <= tolerance ?
	    "within the 2 MiB tolerance" : "over the 2 MiB tolerance");
	CHECK(diff <= tolerance);
	printf("vram: %d passed, %d failed\n", n_pass, n_fail);
	return n_fail == 0 ? 0 : 1;
}
