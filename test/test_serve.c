/*
 * Integration tests of `orcd serve`: a real server on 127.0.0.1 (random
 * port, read from its --ready-file) with a small real model (the shared
 * stories260K, else a generated tiny model), driven by real clients: curl
 * for SSE streams and /cancel, raw sockets for malformed, oversized,
 * pipelined and slow requests.  Covers the event sequence, text equal to
 * `orcd generate`, cancel, disconnect, deadlines (504 and mid-stream),
 * limits, keep-alive, the connection limit and the SIGTERM drain.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_server.h"
#include "test_util.h"

struct sse_events {
	int n;
	char name[4096][16];
	json_t *data[4096];
};

/* Parses an SSE body (dechunked by curl) into events. */
static void
sse_parse(const char *body, struct sse_events *ev)
{
	const char *p = body;

	ev->n = 0;
	while ((p = strstr(p, "event: ")) != NULL && ev->n < 4096) {
		const char *nl = strchr(p, '\n');
		const char *d;
		json_error_t je;

		if (nl == NULL)
			break;
		snprintf(ev->name[ev->n], sizeof(ev->name[0]), "%.*s", (int)(nl - p - 7), p + 7);
		d = strstr(nl, "data: ");
		if (d == NULL)
			break;
		d += 6;
		const char *end = strchr(d, '\n');
		ev->data[ev->n] = json_loadb(d, end ? (size_t)(end - d) : strlen(d), 0, &je);
		ev->n++;
		p = end ? end : d + strlen(d);
	}
}

static void
sse_free(struct sse_events *ev)
{
	for (int i = 0; i < ev->n; i++)
		json_decref(ev->data[i]);
	ev->n = 0;
}

static struct test_server srv; /* the shared server for most tests */

/* ------------------------------------------------------------ tests */

static void
test_stream_matches_generate(void **state)
{
	char cmd[8192];
	static struct sse_events ev;
	char *body, *gen;
	char text[65536] = "";

	snprintf(cmd, sizeof(cmd), "curl -sS -N -H 'X-Correlation-Id: test-stream-1' "
	    "-d '{\"job_id\":\"s1\",\"prompt\":\"Once upon a time\",\"params\":{\"max_tokens\":40,"
	    "\"temperature\":0}}' http://127.0.0.1:%d/execute", srv.port);
	body = test_run_capture(cmd);
	sse_parse(body, &ev);
	assert_true(ev.n >= 3);
	assert_string_equal(ev.name[0], "started");
	assert_string_equal(json_string_value(json_object_get(ev.data[0], "job_id")), "s1");
	for (int i = 1; i < ev.n - 1; i++) {
		assert_string_equal(ev.name[i], "token");
		assert_int_equal(json_integer_value(json_object_get(ev.data[i], "index")), i - 1);
		strcat(text, json_string_value(json_object_get(ev.data[i], "text")));
	}
	assert_string_equal(ev.name[ev.n - 1], "end");
	assert_int_equal(json_integer_value(json_object_get(ev.data[ev.n - 1], "tokens")), ev.n - 2);
	free(body);
	sse_free(&ev);

	snprintf(cmd, sizeof(cmd), "%s generate -m '%s' -p 'Once upon a time' -n 40 --temp 0 "
	    "2>/dev/null", test_orcd_bin, test_model_path);
	gen = test_run_capture(cmd);
	size_t gl = strlen(gen);
	if (gl > 0 && gen[gl - 1] == '\n')
		gen[gl - 1] = '\0';
	assert_string_equal(text, gen);
	free(gen);

	/* the correlation id is echoed */
	snprintf(cmd, sizeof(cmd), "curl -sS -i -N -H 'X-Correlation-Id: corr-42' -d '{\"prompt\":"
	    "\"Hi\",\"params\":{\"max_tokens\":2}}' http://127.0.0.1:%d/execute", srv.port);
	body = test_run_capture(cmd);
	assert_non_null(strstr(body, "X-Correlation-Id: corr-42"));
	assert_non_null(strstr(body, "Content-Type: text/event-stream"));
	assert_non_null(strstr(body, "Cache-Control: no-cache"));
	assert_non_null(strstr(body, "X-Accel-Buffering: no"));
	free(body);
}

static void
test_health_metrics(void **state)
{
	static char resp[1 << 20];
	json_error_t je;

	assert_int_equal(test_http_get(srv.port, "/health", resp, sizeof(resp)), 200);
	json_t *h = json_loads(strstr(resp, "\r\n\r\n") + 4, 0, &je);
	assert_non_null(h);
	assert_true(json_is_true(json_object_get(h, "ready")));
	assert_string_equal(json_string_value(json_object_get(h, "status")), "ok");
	assert_non_null(json_object_get(h, "uptime_s"));
	assert_non_null(json_object_get(h, "vram_bytes_used"));
	json_decref(h);
	assert_int_equal(test_http_get(srv.port, "/health/live", resp, sizeof(resp)), 200);
	assert_int_equal(test_http_get(srv.port, "/metrics", resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "orcd_time_to_first_token_seconds_bucket"));
	assert_non_null(strstr(resp, "orcd_startup_phase_seconds{phase=\"model_load\"}"));

	/* promtool, when installed, accepts the exposition */
	if (system("command -v promtool >/dev/null 2>&1") == 0) {
		char path[512], cmd[1024];
		FILE *f;

		snprintf(path, sizeof(path), "%s/metrics.txt", test_tmpdir);
		f = fopen(path, "w");
		fputs(strstr(resp, "\r\n\r\n") + 4, f);
		fclose(f);
		snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
		assert_int_equal(system(cmd), 0);
	}
}

/* Opens a stream on a raw socket and waits for its first token. */
static int
open_stream(int port, const char *job, int max_tokens, const char *extra, char *buf, size_t cap)
{
	char body[512], req[2048];
	int fd = test_connect(port), n;

	n = snprintf(body, sizeof(body), "{\"job_id\":\"%s\",\"prompt\":\"Once upon a time\","
	    "\"params\":{\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}}", job,
	    max_tokens);
	n = snprintf(req, sizeof(req), "POST /execute HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
	    "%s\r\n%s", n, extra ? extra : "", body);
	test_send_all(fd, req, (size_t)n);
	test_recv_until(fd, buf, cap, "event: token", 10);
	return fd;
}


static void
test_cancel(void **state)
{
	static char buf[1 << 20], resp[8192];

	int fd = open_stream(srv.port, "cancel-me", 90000, NULL, buf, sizeof(buf));
	assert_non_null(strstr(buf, "event: token"));
	assert_int_equal(test_http_post(srv.port, "/cancel", "{\"job_id\":\"cancel-me\"}", NULL,
	    resp, sizeof(resp)), 202);
	test_recv_until(fd, buf, sizeof(buf), "event: error", 10);
	assert_non_null(strstr(buf, "event: error"));
	assert_non_null(strstr(buf, "\"code\":\"cancelled\""));
	close(fd);
	/* unknown or finished job */
	assert_int_equal(test_http_post(srv.port, "/cancel", "{\"job_id\":\"cancel-me\"}", NULL,
	    resp, sizeof(resp)), 404);
	assert_int_equal(test_http_post(srv.port, "/cancel", "{\"job\":1}", NULL, resp, sizeof(resp)), 400);
}

static void
test_disconnect(void **state)
{
	static char buf[1 << 20];
	uint64_t before = test_metric_value(srv.port, "orcd_requests_total{outcome=\"disconnected\"} ");

	int fd = open_stream(srv.port, "gone", 90000, NULL, buf, sizeof(buf));
	assert_non_null(strstr(buf, "event: token"));
	close(fd);
	for (double t0 = test_now(); test_now() - t0 < 10; usleep(20000))
		if (test_metric_value(srv.port, "orcd_requests_total{outcome=\"disconnected\"} ") > before)
			return;
	fail_msg("the disconnect was not noticed within 10 s");
}

static void
test_deadlines(void **state)
{
	static char resp[1 << 20];
	const char *body = "{\"prompt\":\"Once upon a time\",\"params\":{\"max_tokens\":8}}";

	/* already past / too close: 504 before any work */
	assert_int_equal(test_http_post(srv.port, "/execute", body, "X-Deadline-Ms: 0\r\n",
	    resp, sizeof(resp)), 504);
	assert_non_null(strstr(resp, "deadline_exceeded"));
	assert_int_equal(test_http_post(srv.port, "/execute", body,
	    "X-Deadline: 2001-01-01T00:00:00Z\r\n", resp, sizeof(resp)), 504);
	assert_int_equal(test_http_post(srv.port, "/execute", body, "X-Deadline: yesterday\r\n",
	    resp, sizeof(resp)), 400);
	/* a far deadline is no obstacle */
	assert_int_equal(test_http_post(srv.port, "/execute", body,
	    "X-Deadline: 2099-01-01T00:00:00.5Z\r\n", resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "event: end"));

	/* expiry mid-stream: an SSE error event */
	int fd = open_stream(srv.port, "dl", 90000, "X-Deadline-Ms: 300\r\n", resp, sizeof(resp));
	test_recv_until(fd, resp, sizeof(resp), "event: error", 10);
	assert_non_null(strstr(resp, "\"code\":\"deadline_exceeded\""));
	close(fd);
}

static void
test_bad_requests(void **state)
{
	static char resp[1 << 16], big[1 << 16];
	int n;

	assert_int_equal(test_raw_request(srv.port, "GARBAGE\r\n\r\n", 11, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "\"error\""));
	assert_int_equal(test_http_get(srv.port, "/nope", resp, sizeof(resp)), 404);
	assert_int_equal(test_http_get(srv.port, "/execute", resp, sizeof(resp)), 405);
	assert_non_null(strstr(resp, "Allow: POST"));
	assert_int_equal(test_http_post(srv.port, "/execute", "{not json", NULL, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "invalid_json"));
	assert_int_equal(test_http_post(srv.port, "/execute", "[1,2]", NULL, resp, sizeof(resp)), 400);
	assert_int_equal(test_http_post(srv.port, "/execute", "{\"prompt\":5}", NULL, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "prompt"));
	assert_int_equal(test_http_post(srv.port, "/execute",
	    "{\"prompt\":\"a\",\"params\":{\"max_tokens\":-3}}", NULL, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "max_tokens"));
	assert_int_equal(test_http_post(srv.port, "/execute",
	    "{\"prompt\":\"a\",\"params\":{\"temperature\":\"hot\"}}", NULL, resp, sizeof(resp)), 400);
	assert_int_equal(test_http_post(srv.port, "/execute",
	    "{\"prompt\":\"a\",\"params\":{\"max_tokens\":99999999999999}}", NULL, resp, sizeof(resp)), 400);
	/* oversized header: 431 */
	n = snprintf(big, sizeof(big), "GET /health HTTP/1.1\r\nX-Big: ");
	memset(big + n, 'a', 20000);
	n += 20000;
	n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n\r\n");
	assert_int_equal(test_raw_request(srv.port, big, (size_t)n, resp, sizeof(resp)), 431);
	/* oversized body (declared): 413 */
	n = snprintf(big, sizeof(big), "POST /execute HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
	assert_int_equal(test_raw_request(srv.port, big, (size_t)n, resp, sizeof(resp)), 413);
	/* bad chunked encoding */
	n = snprintf(big, sizeof(big), "POST /execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "zz\r\nhello\r\n0\r\n\r\n");
	assert_int_equal(test_raw_request(srv.port, big, (size_t)n, resp, sizeof(resp)), 400);
	/* still serving */
	assert_int_equal(test_http_get(srv.port, "/health", resp, sizeof(resp)), 200);
}

static void
test_keepalive_pipelining(void **state)
{
	static char resp[1 << 16];
	const char *body = "{\"prompt\":\"Once\",\"params\":{\"max_tokens\":3,\"top_k\":1}}";
	char two[1024];
	int fd = test_connect(srv.port);
	char *a, *b, *c;

	snprintf(two, sizeof(two), "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
	    "POST /execute HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s"
	    "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", strlen(body), body);
	test_send_all(fd, two, strlen(two));
	test_recv_until(fd, resp, sizeof(resp), NULL, 10);
	close(fd);
	a = strstr(resp, "HTTP/1.1 200");
	b = a ? strstr(a + 1, "HTTP/1.1 200") : NULL;
	c = b ? strstr(b + 1, "HTTP/1.1 404") : NULL;
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	/* the stream sits between the two plain answers */
	assert_true(strstr(b, "event: end") != NULL && strstr(b, "event: end") < c);

	/* keep-alive: two requests, one after the other, on one connection */
	fd = test_connect(srv.port);
	test_send_all(fd, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", 33);
	test_recv_until(fd, resp, sizeof(resp), "}\n", 5);
	assert_non_null(strstr(resp, "200 OK"));
	test_send_all(fd, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n", 38);
	test_recv_until(fd, resp, sizeof(resp), "}\n", 5);
	assert_non_null(strstr(resp, "alive"));
	close(fd);
}

static void
test_slow_client(void **state)
{
	static char resp[4096];
	int fd = test_connect(srv.port);
	double t0 = test_now();

	/* headers that never finish: 408 after --header-timeout-ms (500) */
	test_send_all(fd, "GET /health HTTP/1.1\r\nHost:", 27);
	test_recv_until(fd, resp, sizeof(resp), NULL, 10);
	close(fd);
	assert_non_null(strstr(resp, " 408 "));
	assert_true(test_now() - t0 >= 0.4);
	assert_true(test_now() - t0 < 5);
}

static void
test_connection_limit(void **state)
{
	struct test_server s;
	static char resp[4096];
	int fds[3];

	test_server_start(&s, "limit", "--max-connections", "3", NULL);
	for (int i = 0; i < 3; i++)
		fds[i] = test_connect(s.port);
	usleep(100000);
	assert_int_equal(test_http_get(s.port, "/health", resp, sizeof(resp)), 503);
	assert_non_null(strstr(resp, "too_many_connections"));
	close(fds[0]);
	usleep(100000);
	assert_int_equal(test_http_get(s.port, "/health", resp, sizeof(resp)), 200);
	close(fds[1]);
	close(fds[2]);
	assert_int_equal(test_server_stop(&s), 0);
}

static void
test_sigterm_drain(void **state)
{
	struct test_server s;
	static char buf[1 << 20], done[1 << 16];

	test_server_start(&s, "drain", "--shutdown-grace", "2", "--ctx-size", "100000", NULL);
	/* one short stream finishes during the drain, one long one is ended */
	int fd = open_stream(s.port, "long", 90000, NULL, buf, sizeof(buf));
	int fd2 = test_connect(s.port);
	const char *sbody = "{\"prompt\":\"Once\",\"params\":{\"max_tokens\":30,\"top_k\":1,"
	    "\"ignore_eos\":true}}";
	char shortreq[512];
	snprintf(shortreq, sizeof(shortreq), "POST /execute HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: %zu\r\n\r\n%s", strlen(sbody), sbody);
	test_send_all(fd2, shortreq, strlen(shortreq));
	test_recv_until(fd2, done, sizeof(done), "event: token", 5);
	double t0 = test_now();
	kill(s.pid, SIGTERM);
	test_recv_until(fd2, done, sizeof(done), "event: end", 10);
	assert_non_null(strstr(done, "event: end"));
	test_recv_until(fd, buf, sizeof(buf), "shutting_down", 10);
	assert_non_null(strstr(buf, "\"code\":\"shutting_down\""));
	assert_true(test_now() - t0 >= 1.6);
	close(fd);
	close(fd2);
	int status;
	for (double t1 = test_now(); test_now() - t1 < 10; usleep(10000))
		if (waitpid(s.pid, &status, WNOHANG) == s.pid) {
			assert_true(WIFEXITED(status));
			assert_int_equal(WEXITSTATUS(status), 0);
			return;
		}
	kill(s.pid, SIGKILL);
	fail_msg("orcd did not exit after the grace period");
}

static void
test_sd_notify(void **state)
{
	struct test_server s;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[100], msg[256];
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	ssize_t n;

	snprintf(path, sizeof(path), "%.80s/notify.sock", test_tmpdir);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", path, 1);
	test_server_start(&s, "notify", NULL);
	unsetenv("NOTIFY_SOCKET");
	/* READY=1 is sent before the ready file is written */
	n = recv(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	msg[n] = '\0';
	assert_non_null(strstr(msg, "READY=1"));
	assert_int_equal(test_server_stop(&s), 0);
	n = recv(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	msg[n] = '\0';
	assert_non_null(strstr(msg, "STOPPING=1"));
	close(fd);
}

static int
setup(void **state)
{
	test_server_start(&srv, "main", "--header-timeout-ms", "500", "--ctx-size", "100000", NULL);
	return 0;
}

static int
teardown(void **state)
{
	assert_int_equal(test_server_stop(&srv), 0);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_matches_generate),
		cmocka_unit_test(test_health_metrics),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_disconnect),
		cmocka_unit_test(test_deadlines),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_keepalive_pipelining),
		cmocka_unit_test(test_slow_client),
		cmocka_unit_test(test_connection_limit),
		cmocka_unit_test(test_sd_notify),
		cmocka_unit_test(test_sigterm_drain),
	};
	int rc = test_server_init(true);

	if (rc != 0)
		return rc == 77 ? 77 : 1;
	rc = cmocka_run_group_tests(tests, setup, teardown);
	if (rc == 0)
		test_server_cleanup();
	return rc;
}
