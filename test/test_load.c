/*
 * Load behaviour of `orcd serve` (real server, real sockets):
 *  - the event loop never blocks: 64 streams generate at once and the
 *    server's own stall probe (orcd_loop_lag_max_seconds, a 5 ms timer's
 *    lateness) stays small; the value is printed;
 *  - 1,000 concurrent SSE connections whose clients never read are held
 *    with bounded memory (server RSS per connection is printed), then all
 *    closed: every one is counted as a disconnect and the server shuts down
 *    cleanly (leak-checked when built with ASAN).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_server.h"

static long
rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int
start_stream(int port, int max_tokens)
{
	char body[256], req[1024];
	int fd = test_connect(port);
	int n = snprintf(body, sizeof(body), "{\"prompt\":\"Once upon a time\",\"params\":"
	    "{\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}}", max_tokens);

	n = snprintf(req, sizeof(req), "POST /execute HTTP/1.1\r\nHost: t\r\nContent-Length: %d"
	    "\r\n\r\n%s", n, body);
	test_send_all(fd, req, (size_t)n);
	return fd;
}

static void
test_loop_never_blocks(void **state)
{
	struct test_server s;
	enum { N = 64 };
	struct pollfd p[N];
	static char buf[65536];
	char tail[N][32];
	int done = 0;

	test_server_start(&s, "stall", "--max-batch", "64", NULL);
	for (int i = 0; i < N; i++) {
		p[i].fd = start_stream(s.port, 256);
		p[i].events = POLLIN;
		tail[i][0] = '\0';
	}
	for (double t0 = test_now(); done < N && test_now() - t0 < 120;) {
		if (poll(p, N, 1000) <= 0)
			continue;
		for (int i = 0; i < N; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			ssize_t r = recv(p[i].fd, buf, sizeof(buf) - 1, 0);
			if (r <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				done++;
				continue;
			}
			buf[r] = '\0';
			/* "event: end" may straddle two reads: keep a tail */
			static char joined[sizeof(tail[0]) + sizeof(buf)];
			size_t tl = strlen(tail[i]);
			memcpy(joined, tail[i], tl);
			memcpy(joined + tl, buf, (size_t)r + 1);
			if (strstr(joined, "event: end") != NULL) {
				close(p[i].fd);
				p[i].fd = -1;
				done++;
				continue;
			}
			size_t jl = strlen(joined), keep = jl > 16 ? 16 : jl;
			memcpy(tail[i], joined + jl - keep, keep + 1);
		}
	}
	assert_int_equal(done, N);
	double lag = test_metric_double(s.port, "orcd_loop_lag_max_seconds ");
	print_message("64 concurrent streams: largest event-loop stall %.3f ms\n", lag * 1e3);
	assert_true(lag >= 0);
	/* the goal is < 2 ms; the bound here leaves room for a loaded CI host
	 * and sanitizer builds */
	assert_true(lag < 0.25);
	assert_int_equal(test_server_stop(&s), 0);
}

static void
test_thousand_idle_streams(void **state)
{
	struct test_server s;
	enum { N = 1000 };
	static int fds[N];
	struct rlimit rl;

	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 2 * N + 64) {
		rl.rlim_cur = rl.rlim_max < 2 * N + 64 ? rl.rlim_max : 2 * N + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < 2 * N + 64)
		skip();
	/* small write watermark: each unread stream parks after a few KB */
	test_server_start(&s, "idle", "--max-queue", "2000", "--max-batch", "16",
	    "--write-high-watermark", "4096", "--ctx-size", "100000", NULL);
	uint64_t before = test_metric_value(s.port, "orcd_requests_total{outcome=\"disconnected\"} ");
	long rss0 = rss_kb(s.pid);
	for (int i = 0; i < N; i++) {
		fds[i] = start_stream(s.port, 90000);
		/* a tiny receive buffer, so the server's output backs up quickly */
		int small = 4096;
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	/* let every stream start and the active ones fill their buffers */
	usleep(3000000);
	long rss1 = rss_kb(s.pid);
	int conns = (int)test_metric_value(s.port, "orcd_connections ");
	print_message("1000 idle SSE connections: server RSS %ld kB -> %ld kB, %.0f bytes "
	    "per connection (%d open)\n", rss0, rss1, (double)(rss1 - rss0) * 1024.0 / N, conns);
	assert_true(conns >= N);
	/* bounded: well under 256 KB per connection even with KV for the
	 * active ones */
	assert_true((rss1 - rss0) * 1024.0 / N < 256 * 1024);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	for (double t0 = test_now(); test_now() - t0 < 30; usleep(50000))
		if (test_metric_value(s.port, "orcd_requests_total{outcome=\"disconnected\"} ") >=
		    before + N)
			break;
	assert_int_equal(test_metric_value(s.port,
	    "orcd_requests_total{outcome=\"disconnected\"} "), before + N);
	assert_int_equal(test_server_stop(&s), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loop_never_blocks),
		cmocka_unit_test(test_thousand_idle_streams),
	};
	int rc = test_server_init(false);

	if (rc != 0)
		return rc == 77 ? 77 : 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (rc == 0)
		test_server_cleanup();
	return rc;
}
