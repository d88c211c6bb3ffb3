/*
 * Memory under load (a real `orcd serve` on the CPU backend, real sockets):
 *  - 1,000 requests, a random mix of normal ones, cancels, disconnects and
 *    deadlines, at 48 in flight over 16 batch slots and a KV pool too small
 *    for all of them: every request ends with the event its kind calls for,
 *    the server's outcome counters agree with what the clients saw, and
 *    after the drain the KV held and the tracked memory are exactly the
 *    post-load baseline (no leaked block);
 *  - a soft limit: new requests get 429 memory_pressure while the running
 *    one goes on to its end, and admission resumes when memory falls;
 *  - a hard limit: the newest requests are aborted with SSE error
 *    vram_limit, the rest complete, memory returns to the baseline.
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

enum kind { K_NORMAL, K_CANCEL, K_DISCONNECT, K_DEADLINE, K_NKINDS };
static const char *kind_name[K_NKINDS] = { "normal", "cancel", "disconnect", "deadline" };

struct client {
	int fd;
	int id;
	enum kind kind;
	int n_tokens;          /* token events seen */
	int disconnect_after;  /* K_DISCONNECT: tokens, 0 = right after the headers */
	bool cancel_sent;
	char *buf;             /* response so far */
	size_t len;
};

#define BUF_CAP (256 * 1024)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static int
send_execute(int port, const char *job, int max_tokens, const char *extra)
{
	char body[512], req[1024];
	int fd = test_connect(port);
	int n = snprintf(body, sizeof(body), "{\"prompt\":\"Once upon a time\",\"job_id\":\"%s\","
	    "\"params\":{\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}}",
	    job, max_tokens);

	n = snprintf(req, sizeof(req), "POST /execute HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
	    "Content-Length: %d\r\n%s\r\n%s", n, extra ? extra : "", body);
	test_send_all(fd, req, (size_t)n);
	return fd;
}

static int
count_tokens(const char *p)
{
	int n = 0;

	while ((p = strstr(p, "event: token")) != NULL) {
		n++;
		p += 12;
	}
	return n;
}

static void
client_start(struct client *c, int port, int id)
{
	char job[64], extra[128];
	int max_tokens;

	memset(c, 0, sizeof(*c));
	c->id = id;
	c->kind = (enum kind)(rnd(10) < 4 ? K_NORMAL : 1 + rnd(3));
	c->buf = malloc(BUF_CAP);
	snprintf(job, sizeof(job), "mem-%d", id);
	extra[0] = '\0';
	switch (c->kind) {
	case K_NORMAL:
		max_tokens = 1 + (int)rnd(48);
		break;
	case K_DEADLINE:
		/* far more tokens than the deadline allows, even on a fast host */
		max_tokens = 6000;
		snprintf(extra, sizeof(extra), "X-Deadline-Ms: %u\r\n", 20 + rnd(280));
		break;
	case K_DISCONNECT:
		c->disconnect_after = (int)rnd(6);
		max_tokens = 6000;
		break;
	default:
		max_tokens = 6000;
		break;
	}
	c->fd = send_execute(port, job, max_tokens, extra);
}

/* The outcome the client saw: "done", "cancelled", "deadline",
 * "disconnected", or NULL for anything else. */
static const char *
client_outcome(const struct client *c)
{
	const char *b = c->buf;

	if (c->kind == K_DISCONNECT)
		return "disconnected";
	if (strncmp(b, "HTTP/1.1 504", 12) == 0 && strstr(b, "deadline_exceeded"))
		return "deadline";
	if (strncmp(b, "HTTP/1.1 200", 12) != 0)
		return NULL;
	if (strstr(b, "event: end") != NULL && strstr(b, "event: error") == NULL)
		return "done";
	if (strstr(b, "\"code\":\"cancelled\""))
		return "cancelled";
	if (strstr(b, "\"code\":\"deadline_exceeded\""))
		return "deadline";
	return NULL;
}

static const char *
want_outcome(enum kind k)
{
	switch (k) {
	case K_NORMAL: return "done";
	case K_CANCEL: return "cancelled";
	case K_DISCONNECT: return "disconnected";
	default: return "deadline";
	}
}

static uint64_t
outcome_count(int port, const char *outcome)
{
	char series[128];

	snprintf(series, sizeof(series), "orcd_requests_total{outcome=\"%s\"} ", outcome);
	return test_metric_value(port, series);
}

/* Waits until no request is active or queued. */
static void
wait_drained(int port)
{
	for (double t0 = test_now(); test_now() - t0 < 60; usleep(20000))
		if (test_metric_value(port, "orcd_active_requests ") == 0 &&
		    test_metric_value(port, "orcd_queued_requests ") == 0)
			return;
	fail_msg("requests did not drain within 60 s");
}

static void
assert_baseline(int port, const char *what)
{
	double used = test_metric_double(port, "orcd_memory_tracked_bytes ");
	double base = test_metric_double(port, "orcd_memory_baseline_bytes ");
	double kv = test_metric_double(port, "orcd_kv_used_bytes ");
	double leaked = test_metric_double(port, "orcd_leaked_bytes ");

	print_message("%s: tracked %.0f bytes, baseline %.0f, KV held %.0f, leaked %.0f\n",
	    what, used, base, kv, leaked);
	assert_true(used >= 0 && base >= 0);
	assert_true(used == base);
	assert_true(kv == 0);
	assert_true(leaked == 0);
}

static double
block_bytes(void)
{
	struct test_server s;
	double b;

	test_server_start(&s, "probe", NULL);
	b = test_metric_double(s.port, "orcd_kv_block_bytes ");
	assert_int_equal(test_server_stop(&s), 0);
	assert_true(b > 0);
	return b;
}

static void
test_thousand_mixed(void **state)
{
	enum { N = 1000, CONC = 48 };
	struct test_server s;
	static struct client cl[CONC];
	struct pollfd p[CONC];
	uint64_t before[K_NKINDS], seen[K_NKINDS] = { 0 }, kinds[K_NKINDS] = { 0 };
	int started = 0, finished = 0, wrong = 0;
	char resp[4096];

	/* 16 slots; a pool of 800 blocks of 32 positions: 4 long requests
	 * (6,005 positions, 188 blocks), so admission waits on KV claims as
	 * well as on slots */
	double block = block_bytes();
	char kvmem[32];
	snprintf(kvmem, sizeof(kvmem), "%.0f", block * 800);
	test_server_start(&s, "mixed", "--max-batch", "16", "--kv-block-tokens", "32",
	    "--ctx-size", "8192", "--kv-memory", kvmem, "--mem-snapshot-interval", "0.5",
	    "--compute-nice", "0", NULL);
	assert_baseline(s.port, "before");
	for (int k = 0; k < K_NKINDS; k++)
		before[k] = outcome_count(s.port, want_outcome((enum kind)k));

	for (int i = 0; i < CONC; i++) {
		client_start(&cl[i], s.port, started++);
		kinds[cl[i].kind]++;
		p[i].fd = cl[i].fd;
		p[i].events = POLLIN;
	}
	for (double t0 = test_now(); finished < N && test_now() - t0 < 600;) {
		if (poll(p, CONC, 1000) <= 0)
			continue;
		for (int i = 0; i < CONC; i++) {
			struct client *c = &cl[i];
			bool end = false;

			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = recv(c->fd, c->buf + c->len, BUF_CAP - 1 - c->len, 0);
			if (r <= 0) {
				end = true;
			} else {
				c->len += (size_t)r;
				c->buf[c->len] = '\0';
				c->n_tokens = count_tokens(c->buf);
				if (c->kind == K_CANCEL && !c->cancel_sent && c->n_tokens > 0) {
					char body[96];

					snprintf(body, sizeof(body), "{\"job_id\":\"mem-%d\"}", c->id);
					int st = test_http_post(s.port, "/cancel", body, NULL, resp,
					    sizeof(resp));
					if (st != 202)
						print_message("cancel of mem-%d: HTTP %d\n", c->id, st);
					c->cancel_sent = true;
				}
				if (c->kind == K_DISCONNECT && strstr(c->buf, "\r\n\r\n") != NULL &&
				    c->n_tokens >= c->disconnect_after)
					end = true;
				if (c->len >= BUF_CAP - 1)
					end = true;
			}
			if (!end)
				continue;
			const char *got = client_outcome(c);
			if (got == NULL || strcmp(got, want_outcome(c->kind)) != 0) {
				if (wrong++ < 5)
					print_message("request %d (%s): wanted %s, got %s: %.300s\n",
					    c->id, kind_name[c->kind], want_outcome(c->kind),
					    got ? got : "?", c->buf);
			} else {
				seen[c->kind]++;
			}
			close(c->fd);
			free(c->buf);
			finished++;
			if (started < N) {
				client_start(c, s.port, started++);
				kinds[c->kind]++;
				p[i].fd = c->fd;
			} else {
				p[i].fd = -1;
				c->buf = NULL;
			}
		}
	}
	assert_int_equal(finished, N);
	print_message("1000 mixed requests: %llu normal, %llu cancelled, %llu disconnected, "
	    "%llu deadline; %d with the wrong ending\n", (unsigned long long)kinds[K_NORMAL],
	    (unsigned long long)kinds[K_CANCEL], (unsigned long long)kinds[K_DISCONNECT],
	    (unsigned long long)kinds[K_DEADLINE], wrong);
	assert_int_equal(wrong, 0);
	wait_drained(s.port);
	/* the server's view agrees with the clients' (disconnects are
	 * counted when the server notices them: wait for that) */
	for (double t0 = test_now(); test_now() - t0 < 10; usleep(20000))
		if (outcome_count(s.port, "disconnected") - before[K_DISCONNECT] >= kinds[K_DISCONNECT])
			break;
	for (int k = 0; k < K_NKINDS; k++)
		assert_int_equal(outcome_count(s.port, want_outcome((enum kind)k)) - before[k],
		    kinds[k]);
	assert_baseline(s.port, "after 1000 mixed requests");
	assert_int_equal(test_metric_value(s.port, "orcd_memory_emergency_aborts_total "), 0);
	assert_int_equal(test_server_stop(&s), 0);
}

/* The limit tests size their limits in CPU KV blocks; on CUDA the tracked
 * memory is every VRAM allocation and a "block" is a whole slot. */
static bool
cpu_backend(void)
{
	const char *b = getenv("ORCD_TEST_BACKEND");

	return b == NULL || *b == '\0' || strcmp(b, "cpu") == 0;
}

static void
test_soft_limit(void **state)
{
	struct test_server s;
	static char a[1 << 20], resp[1 << 16];
	char lim[32];

	if (!cpu_backend())
		skip();
	double block = block_bytes();

	/* above one block held: admission pauses */
	snprintf(lim, sizeof(lim), "%.0f", block);
	test_server_start(&s, "soft", "--mem-soft-limit", lim, "--compute-nice", "0", NULL);
	int fa = send_execute(s.port, "soft-a", 300, NULL);
	/* wait until A holds two blocks (more than 32 positions) */
	test_recv_until(fa, a, sizeof(a), "\"index\":40,", 120);
	assert_non_null(strstr(a, "\"index\":40,"));
	const char *body = "{\"prompt\":\"Once upon a time\",\"params\":{\"max_tokens\":4}}";
	assert_int_equal(test_http_post(s.port, "/execute", body, NULL, resp, sizeof(resp)), 429);
	assert_non_null(strstr(resp, "memory_pressure"));
	assert_non_null(strstr(resp, "Retry-After:"));
	assert_true(test_metric_value(s.port, "orcd_memory_soft_violations_total ") >= 1);
	/* A goes on to its end */
	test_recv_until(fa, a, sizeof(a), "event: end", 120);
	assert_non_null(strstr(a, "event: end"));
	assert_null(strstr(a, "event: error"));
	close(fa);
	wait_drained(s.port);
	/* memory fell: admission resumes */
	assert_int_equal(test_http_post(s.port, "/execute", body, NULL, resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "event: end"));
	wait_drained(s.port);
	assert_baseline(s.port, "after the soft-limit test");
	assert_int_equal(test_server_stop(&s), 0);
}

static void
test_hard_limit(void **state)
{
	enum { N = 4 };
	struct test_server s;
	static char buf[N][1 << 20];
	char lim[32], job[32];
	int fd[N], n_end = 0, n_limit = 0;

	if (!cpu_backend())
		skip();
	double block = block_bytes();

	/* each request grows to ceil((5 + 300) / 32) = 10 blocks; the limit is
	 * 20: all four cannot finish, the newest must go */
	snprintf(lim, sizeof(lim), "%.0f", block * 20);
	test_server_start(&s, "hard", "--mem-hard-limit", lim, "--compute-nice", "0", NULL);
	for (int i = 0; i < N; i++) {
		snprintf(job, sizeof(job), "hard-%d", i);
		fd[i] = send_execute(s.port, job, 300, NULL);
		/* staggered, so "newest" is well defined */
		test_recv_until(fd[i], buf[i], sizeof(buf[i]), "event: token", 30);
	}
	for (int i = 0; i < N; i++) {
		size_t have = strlen(buf[i]);

		/* Connection: close: the server closes after the last event */
		test_recv_until(fd[i], buf[i] + have, sizeof(buf[i]) - have, NULL, 60);
		close(fd[i]);
		if (strstr(buf[i], "event: error") != NULL) {
			assert_non_null(strstr(buf[i], "\"code\":\"vram_limit\""));
			n_limit++;
		} else {
			assert_non_null(strstr(buf[i], "event: end"));
			n_end++;
		}
	}
	print_message("hard limit of 20 blocks, 4 requests of 10: %d completed, %d aborted "
	    "(vram_limit)\n", n_end, n_limit);
	assert_true(n_limit >= 1);
	assert_true(n_end >= 1);
	/* the oldest one is never the victim */
	assert_null(strstr(buf[0], "event: error"));
	assert_non_null(strstr(buf[N - 1], "vram_limit"));
	assert_int_equal(test_metric_value(s.port, "orcd_memory_emergency_aborts_total "),
	    (uint64_t)n_limit);
	wait_drained(s.port);
	assert_baseline(s.port, "after the hard-limit test");
	assert_int_equal(test_server_stop(&s), 0);
}

/* The token events of an SSE response (index and text), joined. */
static void
token_lines(const char *resp, char *out, size_t cap)
{
	size_t n = 0;

	out[0] = '\0';
	for (const char *p = resp; (p = strstr(p, "data: {\"index\":")) != NULL;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (n + len + 2 < cap) {
			memcpy(out + n, p, len);
			n += len;
			out[n++] = '\n';
			out[n] = '\0';
		}
		p += len;
	}
}

/* Prefix reuse: a second request with the same long prompt takes its KV
 * blocks from the cache, a third with a longer prompt shares the common
 * blocks, and the tokens are those of a server with the cache off. */
static void
test_prefix_cache(void **state)
{
	struct test_server s;
	static char resp[1 << 18], t1[1 << 16], t2[1 << 16], t3[1 << 16], t4[1 << 16];
	static char body[8192], body2[8192];
	int n = 0, n2;

	if (!cpu_backend())
		skip();
	n = snprintf(body, sizeof(body), "{\"prompt\":\"Once upon a time");
	for (int i = 0; i < 60; i++)
		n += snprintf(body + n, sizeof(body) - (size_t)n, " there was a little cat");
	memcpy(body2, body, (size_t)n);
	n2 = n + snprintf(body2 + n, sizeof(body2) - (size_t)n, " and a dog");
	snprintf(body + n, sizeof(body) - (size_t)n,
	    "\",\"params\":{\"max_tokens\":16,\"temperature\":0,\"ignore_eos\":true}}");
	snprintf(body2 + n2, sizeof(body2) - (size_t)n2,
	    "\",\"params\":{\"max_tokens\":16,\"temperature\":0,\"ignore_eos\":true}}");

	test_server_start(&s, "prefix", "--compute-nice", "0", NULL);
	assert_int_equal(test_http_post(s.port, "/execute", body, NULL, resp, sizeof(resp)), 200);
	token_lines(resp, t1, sizeof(t1));
	uint64_t r0 = test_metric_value(s.port, "orcd_prompt_tokens_reused_total ");
	uint64_t p0 = test_metric_value(s.port, "orcd_prompt_tokens_total ");
	assert_int_equal(test_http_post(s.port, "/execute", body, NULL, resp, sizeof(resp)), 200);
	token_lines(resp, t2, sizeof(t2));
	uint64_t r1 = test_metric_value(s.port, "orcd_prompt_tokens_reused_total ");
	uint64_t p1 = test_metric_value(s.port, "orcd_prompt_tokens_total ");
	assert_int_equal(test_http_post(s.port, "/execute", body2, NULL, resp, sizeof(resp)), 200);
	token_lines(resp, t4, sizeof(t4));
	uint64_t r2 = test_metric_value(s.port, "orcd_prompt_tokens_reused_total ");
	print_message("prefix cache: first request %llu prompt tokens computed, the same "
	    "prompt again %llu computed and %llu reused, a longer one %llu reused\n",
	    (unsigned long long)p0, (unsigned long long)(p1 - p0),
	    (unsigned long long)(r1 - r0), (unsigned long long)(r2 - r1));
	assert_int_equal(r0, 0);
	assert_true(r1 - r0 >= 32);            /* whole blocks of 32 */
	assert_true((r1 - r0) % 32 == 0);
	assert_true(p1 - p0 < p0);             /* less prefill the second time */
	assert_true(r2 - r1 >= r1 - r0);       /* the longer prompt shares them all */
	assert_true(t1[0] != '\0');
	assert_string_equal(t1, t2);
	wait_drained(s.port);
	assert_baseline(s.port, "after the prefix-cache test");
	assert_int_equal(test_server_stop(&s), 0);

	/* the same tokens with the cache off */
	test_server_start(&s, "noprefix", "--compute-nice", "0", "--prefix-cache", "0", NULL);
	assert_int_equal(test_http_post(s.port, "/execute", body, NULL, resp, sizeof(resp)), 200);
	token_lines(resp, t3, sizeof(t3));
	assert_string_equal(t1, t3);
	assert_int_equal(test_http_post(s.port, "/execute", body, NULL, resp, sizeof(resp)), 200);
	assert_int_equal(test_metric_value(s.port, "orcd_prompt_tokens_reused_total "), 0);
	assert_int_equal(test_http_post(s.port, "/execute", body2, NULL, resp, sizeof(resp)), 200);
	token_lines(resp, t3, sizeof(t3));
	assert_string_equal(t4, t3);
	assert_int_equal(test_server_stop(&s), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soft_limit),
		cmocka_unit_test(test_hard_limit),
		cmocka_unit_test(test_prefix_cache),
		cmocka_unit_test(test_thousand_mixed),
	};
	int rc = test_server_init(false);

	if (rc != 0)
		return rc == 77 ? 77 : 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (rc == 0)
		test_server_cleanup();
	return rc;
}
