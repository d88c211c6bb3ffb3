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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mkmodel.h"
#include "test_util.h"

static char model_path[4096];
static char tmpdir[256];
static const char *orcd_bin;

struct server {
	pid_t pid;
	int port;
	char ready[512];
	char log[512];
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Starts orcd serve with extra flags (NULL-terminated); waits until ready. */
static void
server_start(struct server *s, const char *name, ...)
{
	const char *argv[64];
	int n = 0;
	va_list ap;

	snprintf(s->ready, sizeof(s->ready), "%s/%s.ready", tmpdir, name);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", tmpdir, name);
	unlink(s->ready);
	argv[n++] = orcd_bin;
	argv[n++] = "serve";
	argv[n++] = "-m";
	argv[n++] = model_path;
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = "--ready-file";
	argv[n++] = s->ready;
	argv[n++] = "--threads";
	argv[n++] = "2";
	va_start(ap, name);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 62;)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		dup2(fd, 2);
		dup2(fd, 1);
		execv(orcd_bin, (char *const *)argv);
		_exit(127);
	}
	for (double t0 = now_s(); now_s() - t0 < 60;) {
		FILE *f = fopen(s->ready, "r");
		int status;

		if (f != NULL) {
			char line[128];

			while (fgets(line, sizeof(line), f) != NULL)
				sscanf(line, "port=%d", &s->port);
			fclose(f);
			if (s->port > 0)
				return;
		}
		if (waitpid(s->pid, &status, WNOHANG) == s->pid)
			fail_msg("orcd exited before it was ready (see %s)", s->log);
		usleep(20000);
	}
	fail_msg("orcd was not ready within 60 s (see %s)", s->log);
}

/* SIGTERM and wait; returns the exit status. */
static int
server_stop(struct server *s)
{
	int status = 0;

	kill(s->pid, SIGTERM);
	for (double t0 = now_s(); now_s() - t0 < 30;) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(10000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, &status, 0);
	fail_msg("orcd did not exit within 30 s of SIGTERM (see %s)", s->log);
	return -1;
}

static int
tcp_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void
send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return; /* the server may close early (e.g. 431): fine */
		p += w;
		n -= (size_t)w;
	}
}

/* Reads until EOF, timeout, or `until` appears; returns bytes read. */
static size_t
recv_until(int fd, char *buf, size_t cap, const char *until, double timeout)
{
	size_t n = 0;
	double t0 = now_s();

	buf[0] = '\0';
	while (n + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)((timeout - (now_s() - t0)) * 1000);

		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = '\0';
		if (until != NULL && strstr(buf, until) != NULL)
			break;
	}
	return n;
}

/* One request on a fresh connection; returns the status code. */
static int
raw_request(int port, const char *req, size_t len, char *resp, size_t cap)
{
	int fd = tcp_connect(port), status = 0;

	send_all(fd, req, len);
	recv_until(fd, resp, cap, NULL, 10);
	close(fd);
	sscanf(resp, "HTTP/1.%*d %d", &status);
	return status;
}

static int
http_post(int port, const char *path, const char *body, const char *extra,
    char *resp, size_t cap)
{
	char req[8192];
	int n = snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s", path,
	    strlen(body), extra ? extra : "", body);

	return raw_request(port, req, (size_t)n, resp, cap);
}

static int
http_get(int port, const char *path, char *resp, size_t cap)
{
	char req[1024];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
	    path);

	return raw_request(port, req, (size_t)n, resp, cap);
}

static char *
run_capture(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t n = 0, cap = 65536;
	char *buf = malloc(cap);

	assert_non_null(p);
	for (;;) {
		size_t r = fread(buf + n, 1, cap - 1 - n, p);

		n += r;
		if (r == 0)
			break;
		if (n + 1 >= cap)
			buf = realloc(buf, cap *= 2);
	}
	buf[n] = '\0';
	pclose(p);
	return buf;
}

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

static struct server srv; /* the shared server for most tests */

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
	body = run_capture(cmd);
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
	    "2>/dev/null", orcd_bin, model_path);
	gen = run_capture(cmd);
	size_t gl = strlen(gen);
	if (gl > 0 && gen[gl - 1] == '\n')
		gen[gl - 1] = '\0';
	assert_string_equal(text, gen);
	free(gen);

	/* the correlation id is echoed */
	snprintf(cmd, sizeof(cmd), "curl -sS -i -N -H 'X-Correlation-Id: corr-42' -d '{\"prompt\":"
	    "\"Hi\",\"params\":{\"max_tokens\":2}}' http://127.0.0.1:%d/execute", srv.port);
	body = run_capture(cmd);
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

	assert_int_equal(http_get(srv.port, "/health", resp, sizeof(resp)), 200);
	json_t *h = json_loads(strstr(resp, "\r\n\r\n") + 4, 0, &je);
	assert_non_null(h);
	assert_true(json_is_true(json_object_get(h, "ready")));
	assert_string_equal(json_string_value(json_object_get(h, "status")), "ok");
	assert_non_null(json_object_get(h, "uptime_s"));
	assert_non_null(json_object_get(h, "vram_bytes_used"));
	json_decref(h);
	assert_int_equal(http_get(srv.port, "/health/live", resp, sizeof(resp)), 200);
	assert_int_equal(http_get(srv.port, "/metrics", resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "orcd_time_to_first_token_seconds_bucket"));
	assert_non_null(strstr(resp, "orcd_startup_phase_seconds{phase=\"model_load\"}"));

	/* promtool, when installed, accepts the exposition */
	if (system("command -v promtool >/dev/null 2>&1") == 0) {
		char path[512], cmd[1024];
		FILE *f;

		snprintf(path, sizeof(path), "%s/metrics.txt", tmpdir);
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
	int fd = tcp_connect(port), n;

	n = snprintf(body, sizeof(body), "{\"job_id\":\"%s\",\"prompt\":\"Once upon a time\","
	    "\"params\":{\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}}", job,
	    max_tokens);
	n = snprintf(req, sizeof(req), "POST /execute HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
	    "%s\r\n%s", n, extra ? extra : "", body);
	send_all(fd, req, (size_t)n);
	recv_until(fd, buf, cap, "event: token", 10);
	return fd;
}

static uint64_t
metric_value(int port, const char *series)
{
	static char resp[1 << 20];
	const char *p;

	http_get(port, "/metrics", resp, sizeof(resp));
	p = strstr(resp, series);
	return p ? strtoull(p + strlen(series), NULL, 10) : 0;
}

static void
test_cancel(void **state)
{
	static char buf[1 << 20], resp[8192];

	int fd = open_stream(srv.port, "cancel-me", 90000, NULL, buf, sizeof(buf));
	assert_non_null(strstr(buf, "event: token"));
	assert_int_equal(http_post(srv.port, "/cancel", "{\"job_id\":\"cancel-me\"}", NULL,
	    resp, sizeof(resp)), 202);
	recv_until(fd, buf, sizeof(buf), "event: error", 10);
	assert_non_null(strstr(buf, "event: error"));
	assert_non_null(strstr(buf, "\"code\":\"cancelled\""));
	close(fd);
	/* unknown or finished job */
	assert_int_equal(http_post(srv.port, "/cancel", "{\"job_id\":\"cancel-me\"}", NULL,
	    resp, sizeof(resp)), 404);
	assert_int_equal(http_post(srv.port, "/cancel", "{\"job\":1}", NULL, resp, sizeof(resp)), 400);
}

static void
test_disconnect(void **state)
{
	static char buf[1 << 20];
	uint64_t before = metric_value(srv.port, "orcd_requests_total{outcome=\"disconnected\"} ");

	int fd = open_stream(srv.port, "gone", 90000, NULL, buf, sizeof(buf));
	assert_non_null(strstr(buf, "event: token"));
	close(fd);
	for (double t0 = now_s(); now_s() - t0 < 10; usleep(20000))
		if (metric_value(srv.port, "orcd_requests_total{outcome=\"disconnected\"} ") > before)
			return;
	fail_msg("the disconnect was not noticed within 10 s");
}

static void
test_deadlines(void **state)
{
	static char resp[1 << 20];
	const char *body = "{\"prompt\":\"Once upon a time\",\"params\":{\"max_tokens\":8}}";

	/* already past / too close: 504 before any work */
	assert_int_equal(http_post(srv.port, "/execute", body, "X-Deadline-Ms: 0\r\n",
	    resp, sizeof(resp)), 504);
	assert_non_null(strstr(resp, "deadline_exceeded"));
	assert_int_equal(http_post(srv.port, "/execute", body,
	    "X-Deadline: 2001-01-01T00:00:00Z\r\n", resp, sizeof(resp)), 504);
	assert_int_equal(http_post(srv.port, "/execute", body, "X-Deadline: yesterday\r\n",
	    resp, sizeof(resp)), 400);
	/* a far deadline is no obstacle */
	assert_int_equal(http_post(srv.port, "/execute", body,
	    "X-Deadline: 2099-01-01T00:00:00.5Z\r\n", resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "event: end"));

	/* expiry mid-stream: an SSE error event */
	int fd = open_stream(srv.port, "dl", 90000, "X-Deadline-Ms: 300\r\n", resp, sizeof(resp));
	recv_until(fd, resp, sizeof(resp), "event: error", 10);
	assert_non_null(strstr(resp, "\"code\":\"deadline_exceeded\""));
	close(fd);
}

static void
test_bad_requests(void **state)
{
	static char resp[1 << 16], big[1 << 16];
	int n;

	assert_int_equal(raw_request(srv.port, "GARBAGE\r\n\r\n", 11, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "\"error\""));
	assert_int_equal(http_get(srv.port, "/nope", resp, sizeof(resp)), 404);
	assert_int_equal(http_get(srv.port, "/execute", resp, sizeof(resp)), 405);
	assert_non_null(strstr(resp, "Allow: POST"));
	assert_int_equal(http_post(srv.port, "/execute", "{not json", NULL, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "invalid_json"));
	assert_int_equal(http_post(srv.port, "/execute", "[1,2]", NULL, resp, sizeof(resp)), 400);
	assert_int_equal(http_post(srv.port, "/execute", "{\"prompt\":5}", NULL, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "prompt"));
	assert_int_equal(http_post(srv.port, "/execute",
	    "{\"prompt\":\"a\",\"params\":{\"max_tokens\":-3}}", NULL, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "max_tokens"));
	assert_int_equal(http_post(srv.port, "/execute",
	    "{\"prompt\":\"a\",\"params\":{\"temperature\":\"hot\"}}", NULL, resp, sizeof(resp)), 400);
	assert_int_equal(http_post(srv.port, "/execute",
	    "{\"prompt\":\"a\",\"params\":{\"max_tokens\":99999999999999}}", NULL, resp, sizeof(resp)), 400);
	/* oversized header: 431 */
	n = snprintf(big, sizeof(big), "GET /health HTTP/1.1\r\nX-Big: ");
	memset(big + n, 'a', 20000);
	n += 20000;
	n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n\r\n");
	assert_int_equal(raw_request(srv.port, big, (size_t)n, resp, sizeof(resp)), 431);
	/* oversized body (declared): 413 */
	n = snprintf(big, sizeof(big), "POST /execute HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
	assert_int_equal(raw_request(srv.port, big, (size_t)n, resp, sizeof(resp)), 413);
	/* bad chunked encoding */
	n = snprintf(big, sizeof(big), "POST /execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "zz\r\nhello\r\n0\r\n\r\n");
	assert_int_equal(raw_request(srv.port, big, (size_t)n, resp, sizeof(resp)), 400);
	/* still serving */
	assert_int_equal(http_get(srv.port, "/health", resp, sizeof(resp)), 200);
}

static void
test_keepalive_pipelining(void **state)
{
	static char resp[1 << 16];
	const char *body = "{\"prompt\":\"Once\",\"params\":{\"max_tokens\":3,\"top_k\":1}}";
	char two[1024];
	int fd = tcp_connect(srv.port);
	char *a, *b, *c;

	snprintf(two, sizeof(two), "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
	    "POST /execute HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s"
	    "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", strlen(body), body);
	send_all(fd, two, strlen(two));
	recv_until(fd, resp, sizeof(resp), NULL, 10);
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
	fd = tcp_connect(srv.port);
	send_all(fd, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", 33);
	recv_until(fd, resp, sizeof(resp), "}\n", 5);
	assert_non_null(strstr(resp, "200 OK"));
	send_all(fd, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n", 38);
	recv_until(fd, resp, sizeof(resp), "}\n", 5);
	assert_non_null(strstr(resp, "alive"));
	close(fd);
}

static void
test_slow_client(void **state)
{
	static char resp[4096];
	int fd = tcp_connect(srv.port);
	double t0 = now_s();

	/* headers that never finish: 408 after --header-timeout-ms (500) */
	send_all(fd, "GET /health HTTP/1.1\r\nHost:", 27);
	recv_until(fd, resp, sizeof(resp), NULL, 10);
	close(fd);
	assert_non_null(strstr(resp, " 408 "));
	assert_true(now_s() - t0 >= 0.4);
	assert_true(now_s() - t0 < 5);
}

static void
test_connection_limit(void **state)
{
	struct server s;
	static char resp[4096];
	int fds[3];

	server_start(&s, "limit", "--max-connections", "3", NULL);
	for (int i = 0; i < 3; i++)
		fds[i] = tcp_connect(s.port);
	usleep(100000);
	assert_int_equal(http_get(s.port, "/health", resp, sizeof(resp)), 503);
	assert_non_null(strstr(resp, "too_many_connections"));
	close(fds[0]);
	usleep(100000);
	assert_int_equal(http_get(s.port, "/health", resp, sizeof(resp)), 200);
	close(fds[1]);
	close(fds[2]);
	assert_int_equal(server_stop(&s), 0);
}

static void
test_sigterm_drain(void **state)
{
	struct server s;
	static char buf[1 << 20], done[1 << 16];

	server_start(&s, "drain", "--shutdown-grace", "1", "--ctx-size", "100000", NULL);
	/* one short stream finishes during the drain, one long one is ended */
	int fd = open_stream(s.port, "long", 90000, NULL, buf, sizeof(buf));
	int fd2 = tcp_connect(s.port);
	const char *sbody = "{\"prompt\":\"Once\",\"params\":{\"max_tokens\":200,\"top_k\":1,"
	    "\"ignore_eos\":true}}";
	char shortreq[512];
	snprintf(shortreq, sizeof(shortreq), "POST /execute HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: %zu\r\n\r\n%s", strlen(sbody), sbody);
	send_all(fd2, shortreq, strlen(shortreq));
	recv_until(fd2, done, sizeof(done), "event: token", 5);
	double t0 = now_s();
	kill(s.pid, SIGTERM);
	recv_until(fd2, done, sizeof(done), "event: end", 10);
	assert_non_null(strstr(done, "event: end"));
	recv_until(fd, buf, sizeof(buf), "shutting_down", 10);
	assert_non_null(strstr(buf, "\"code\":\"shutting_down\""));
	assert_true(now_s() - t0 >= 0.8);
	close(fd);
	close(fd2);
	int status;
	for (double t1 = now_s(); now_s() - t1 < 10; usleep(10000))
		if (waitpid(s.pid, &status, WNOHANG) == s.pid) {
			assert_true(WIFEXITED(status));
			assert_int_equal(WEXITSTATUS(status), 0);
			return;
		}
	kill(s.pid, SIGKILL);
	fail_msg("orcd did not exit after the grace period");
}

static int
setup(void **state)
{
	server_start(&srv, "main", "--header-timeout-ms", "500", "--ctx-size", "100000", NULL);
	return 0;
}

static int
teardown(void **state)
{
	assert_int_equal(server_stop(&srv), 0);
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
		cmocka_unit_test(test_sigterm_drain),
	};
	const char *dir = test_models_dir();
	int rc;

	signal(SIGPIPE, SIG_IGN);
	orcd_bin = getenv("ORCD_BIN") ? getenv("ORCD_BIN") : "./orcd";
	if (system("command -v curl >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: curl is not installed\n");
		return 77;
	}
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/orcd-test-serve-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	if (dir != NULL) {
		snprintf(model_path, sizeof(model_path), "%s/stories260K.gguf", dir);
	} else {
		/* no shared models: a generated tiny model */
		struct mkmodel_opts o;
		struct orcd_err err;

		snprintf(model_path, sizeof(model_path), "%s/tiny.gguf", tmpdir);
		mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
		o.ascii_output = true;
		if (mkmodel_write(&o, model_path, &err) != 0) {
			fprintf(stderr, "mkmodel: %s\n", err.msg);
			return 1;
		}
	}
	rc = cmocka_run_group_tests(tests, setup, teardown);
	if (rc == 0) {
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			rc = 1;
	}
	return rc;
}
