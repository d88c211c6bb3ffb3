/*
 * deadline-bench: the cost of the per-request deadline check the scheduler
 * runs at every step boundary (one monotonic clock read per step, then a
 * load and a compare per live request), over 256 live requests.  With a
 * model (deadline-bench STEPS MODEL [BACKEND]), also the memory monitor's
 * cost on a real backend: check_limits (the O(1) read of the backend's
 * counters before every step) and one snapshot log line.
 *
 * usage: deadline-bench [STEPS] [MODEL [cpu|cuda]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "orcd/backend.h"
#include "backend_open.h"
#include "log.h"
#include "metrics_orcd.h"
#include "model.h"
#include "orcd.h"
#include "req.h"
#include "sched.h"

static int
mem_bench(const char *path, const char *backend, long n)
{
	static struct orcd o;
	struct backend_open_opts bo;
	struct orcd_err err;
	double t0, el;
	long over = 0;

	conf_defaults(&o.cfg);
	o.cfg.mem_soft_limit = 1L << 40;
	o.cfg.mem_hard_limit = 2L << 40;
	if ((o.base = event_base_new()) == NULL || (o.cq = cq_new(o.base, &err)) == NULL ||
	    orcd_metrics_init(&o) != 0 || model_load(path, &o.model, &err) != 0) {
		fprintf(stderr, "deadline-bench: %s\n", err.msg);
		return 1;
	}
	backend_open_opts_init(&bo);
	bo.name = backend;
	bo.n_seqs = 64;
	bo.n_ctx = 512;
	if (backend_open(o.model, &bo, o.cq, &o.backend, &err) != 0 ||
	    (o.sched = sched_new(&o, &err)) == NULL) {
		fprintf(stderr, "deadline-bench: %s\n", err.msg);
		return 1;
	}
	t0 = orcd_now();
	for (long i = 0; i < n; i++)
		over += sched_check_limits(o.sched) != SCHED_MEM_OK;
	el = orcd_now() - t0;
	printf("memory check_limits (%s backend): %.1f ns per check (%ld checks, %ld over)\n",
	    o.backend->ops->name, el * 1e9 / (double)n, n, over);
	/* the snapshot line goes to stderr: time it with stderr on /dev/null */
	if (freopen("/dev/null", "w", stderr) != NULL) {
		enum { SNAPS = 1000 };

		t0 = orcd_now();
		for (int i = 0; i < SNAPS; i++)
			sched_log_snapshot(o.sched);
		el = orcd_now() - t0;
		printf("memory log_snapshot: %.1f us per snapshot (%d, no device call)\n",
		    el * 1e6 / SNAPS, SNAPS);
	}
	sched_free(o.sched);
	o.backend->ops->destroy(o.backend);
	model_free(o.model);
	return 0;
}

int
main(int argc, char **argv)
{
	enum { N_REQ = 256 };
	long steps = argc > 1 ? atol(argv[1]) : 200000;
	static struct req reqs[N_REQ];
	uint64_t now = orcd_now_ns();
	long hits = 0;

	for (int i = 0; i < N_REQ; i++)
		reqs[i].deadline_ns = i % 3 == 0 ? 0 : now + 3600ull * 1000000000ull + (uint64_t)i;
	double t0 = orcd_now();
	for (long s = 0; s < steps; s++) {
		uint64_t t = orcd_now_ns();

		for (int i = 0; i < N_REQ; i++)
			hits += req_deadline_passed(&reqs[i], t);
	}
	double el = orcd_now() - t0;
	double t1 = orcd_now();
	uint64_t sink = 0;
	for (long s = 0; s < steps; s++)
		sink += orcd_now_ns();
	double clock_el = orcd_now() - t1;
	printf("deadline check: %.2f ns per request per step (%d requests, %ld steps, "
	    "clock read included), clock_gettime %.1f ns, %ld expired%s\n",
	    el * 1e9 / ((double)steps * N_REQ), N_REQ, steps, clock_el * 1e9 / (double)steps,
	    hits, sink == 0 ? "" : "");
	if (argc > 2)
		return mem_bench(argv[2], argc > 3 ? argv[3] : "cpu", steps * 10);
	return 0;
}
