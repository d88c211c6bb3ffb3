/*
 * Thread pool tests: every task runs exactly once per run, workers see
 * distinct ids, back-to-back runs (as a decode step issues) and runs after
 * the workers went to sleep both complete.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "cpu/pool.h"

struct count {
	atomic_int *hits;
	atomic_int max_worker;
	int n_workers;
};

static void
count_task(void *arg, int task, int worker)
{
	struct count *c = arg;

	atomic_fetch_add(&c->hits[task], 1);
	assert_true(worker >= 0 && worker < c->n_workers);
}

static void
run_checked(struct pool *p, int n)
{
	struct count c = { .n_workers = pool_size(p) };

	c.hits = calloc((size_t)n, sizeof(*c.hits));
	pool_run(p, count_task, &c, n);
	for (int i = 0; i < n; i++)
		assert_int_equal(atomic_load(&c.hits[i]), 1);
	free(c.hits);
}

static void
test_every_task_once(void **state)
{
	for (int threads = 1; threads <= 4; threads++) {
		struct pool *p = pool_new(threads);

		assert_non_null(p);
		assert_int_equal(pool_size(p), threads);
		for (int n = 0; n < 70; n++)
			run_checked(p, n);
		/* many back-to-back runs */
		for (int r = 0; r < 2000; r++)
			run_checked(p, 7);
		/* after the workers have gone to sleep */
		usleep(20000);
		run_checked(p, 1000);
		pool_free(p);
	}
}

static void
test_default_size(void **state)
{
	struct pool *p = pool_new(0);

	assert_non_null(p);
	assert_true(pool_size(p) >= 1);
	run_checked(p, 100);
	pool_free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_task_once),
		cmocka_unit_test(test_default_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
