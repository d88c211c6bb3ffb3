/* Helpers for tests against a real `orcd serve` (see test_server.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include "orcd.h"
#include "test_server.h"
#include "test_util.h"

char test_model_path[4096];
char test_tmpdir[256];
const char *test_orcd_bin;

/* Starts orcd serve with extra flags (NULL-terminated); waits until ready. */
void
test_server_start(struct test_server *s, const char *name, ...)
{
	const char *argv[64];
	int n = 0;
	va_list ap;

	snprintf(s->ready, sizeof(s->ready), "%s/%s.ready", test_tmpdir, name);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", test_tmpdir, name);
	unlink(s->ready);
	argv[n++] = test_orcd_bin;
	argv[n++] = "serve";
	argv[n++] = "-m";
	argv[n++] = test_model_path;
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = "--ready-file";
	argv[n++] = s->ready;
	argv[n++] = "--threads";
	argv[n++] = getenv("ORCD_TEST_THREADS") ? getenv("ORCD_TEST_THREADS") : "2";
	if (getenv("ORCD_TEST_BACKEND") != NULL && *getenv("ORCD_TEST_BACKEND") != '\0') {
		/* the same tests against another backend (the GPU checks) */
		argv[n++] = "--backend";
		argv[n++] = getenv("ORCD_TEST_BACKEND");
	}
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
		execv(test_orcd_bin, (char *const *)argv);
		_exit(127);
	}
	for (double t0 = test_now(); test_now() - t0 < 60;) {
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
int
test_server_stop(struct test_server *s)
{
	int status = 0;

	kill(s->pid, SIGTERM);
	for (double t0 = test_now(); test_now() - t0 < 30;) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(10000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, &status, 0);
	fail_msg("orcd did not exit within 30 s of SIGTERM (see %s)", s->log);
	return -1;
}

int
test_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

void
test_send_all(int fd, const char *p, size_t n)
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
size_t
test_recv_until(int fd, char *buf, size_t cap, const char *until, double timeout)
{
	size_t n = 0;
	double t0 = test_now();

	buf[0] = '\0';
	while (n + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)((timeout - (test_now() - t0)) * 1000);

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
int
test_raw_request(int port, const char *req, size_t len, char *resp, size_t cap)
{
	int fd = test_connect(port), status = 0;

	test_send_all(fd, req, len);
	test_recv_until(fd, resp, cap, NULL, 10);
	close(fd);
	sscanf(resp, "HTTP/1.%*d %d", &status);
	return status;
}

int
test_http_post(int port, const char *path, const char *body, const char *extra,
    char *resp, size_t cap)
{
	char req[8192];
	int n = snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s", path,
	    strlen(body), extra ? extra : "", body);

	return test_raw_request(port, req, (size_t)n, resp, cap);
}

int
test_http_get(int port, const char *path, char *resp, size_t cap)
{
	char req[1024];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
	    path);

	return test_raw_request(port, req, (size_t)n, resp, cap);
}

char *
test_run_capture(const char *cmd)
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

double
test_now(void)
{
	return orcd_now();
}

double
test_metric_double(int port, const char *series)
{
	static char resp[1 << 20];
	const char *p;
	char key[512];

	test_http_get(port, "/metrics", resp, sizeof(resp));
	/* at a line start, so a HELP line naming the metric does not match */
	snprintf(key, sizeof(key), "\n%s", series);
	p = strstr(resp, key);
	return p ? strtod(p + strlen(key), NULL) : -1;
}

uint64_t
test_metric_value(int port, const char *series)
{
	double v = test_metric_double(port, series);

	return v > 0 ? (uint64_t)v : 0;
}

int
test_server_init(bool need_curl)
{
	const char *dir = test_models_dir();

	signal(SIGPIPE, SIG_IGN);
	test_orcd_bin = getenv("ORCD_BIN") ? getenv("ORCD_BIN") : "./orcd";
	if (need_curl && system("command -v curl >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: curl is not installed\n");
		return 77;
	}
	snprintf(test_tmpdir, sizeof(test_tmpdir), "/tmp/orcd-test-XXXXXX");
	if (mkdtemp(test_tmpdir) == NULL)
		return -1;
	if (dir != NULL) {
		snprintf(test_model_path, sizeof(test_model_path), "%s/stories260K.gguf", dir);
		return 0;
	}
	/* no shared models: a generated tiny model */
	struct mkmodel_opts o;
	struct orcd_err err;

	snprintf(test_model_path, sizeof(test_model_path), "%s/tiny.gguf", test_tmpdir);
	mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
	o.ascii_output = true;
	if (mkmodel_write(&o, test_model_path, &err) != 0) {
		fprintf(stderr, "mkmodel: %s\n", err.msg);
		return -1;
	}
	return 0;
}

void
test_server_cleanup(void)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", test_tmpdir);
}
