/*
 * deadline-bench: the cost of the per-request deadline check the scheduler
 * runs at every step boundary (one monotonic clock read per step, then a
 * load and a compare per live request), over 256 live requests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "orcd.h"
#include "req.h"

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
	return 0;
}
