/*
 * The malformed-HTTP corpus: every file in test/http-corpus/ is one request
 * (curl-style data-driven tests) sent to a real orcd on its own connection;
 * the answer must carry one of the statuses the file expects, and after the
 * whole corpus the server must still stream a normal request.
 *
 * File format: the first line is "# expect CODE [CODE...] [eof]"; the rest
 * is the request with "\n" sent as "\r\n" (a missing blank line ending the
 * headers is added, except with "eof", where the client half-closes after
 * sending the truncated request instead).  In the request text:
 *   \xNN              a raw byte
 *   @repeat N C       N copies of the character C (rest of the line)
 *   @repeat-lines N L N lines L
 *   @raw TEXT         TEXT with \n, \r, \xNN escapes and no conversion
 *   Content-Length: auto   the length of the body that follows
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_server.h"

struct growing {
	char *p;
	size_t n, cap;
};

static void
add(struct growing *g, const char *s, size_t n)
{
	if (g->n + n + 1 > g->cap) {
		g->cap = (g->n + n + 1) * 2;
		g->p = realloc(g->p, g->cap);
		assert_non_null(g->p);
	}
	memcpy(g->p + g->n, s, n);
	g->n += n;
	g->p[g->n] = '\0';
}

/* Decodes \xNN, \n, \r in s into g (\n and \r only when raw). */
static void
add_escaped(struct growing *g, const char *s, size_t n, int raw)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 3 < n + 1 && s[i + 1] == 'x' && i + 3 < n + 1) {
			char hex[3] = { s[i + 2], s[i + 3], 0 };
			char b = (char)strtol(hex, NULL, 16);

			add(g, &b, 1);
			i += 3;
		} else if (raw && s[i] == '\\' && i + 1 < n && (s[i + 1] == 'n' || s[i + 1] == 'r')) {
			add(g, s[i + 1] == 'n' ? "\n" : "\r", 1);
			i++;
		} else {
			add(g, &s[i], 1);
		}
	}
}

/* Builds the request bytes of a corpus file. */
static void
build_request(const char *text, struct growing *out, int eof)
{
	struct growing g = { 0 };
	const char *p = text;

	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		const char *rep = memmem(p, len, "@repeat ", 8);
		const char *lines = memmem(p, len, "@repeat-lines ", 14);

		if (strncmp(p, "@raw ", 5) == 0) {
			add_escaped(&g, p + 5, len - 5, 1);
		} else if (lines != NULL) {
			int cnt = atoi(lines + 14);
			const char *l = strchr(lines + 14, ' ');

			for (int i = 0; i < cnt && l != NULL; i++) {
				add_escaped(&g, l + 1, len - (size_t)(l + 1 - p), 0);
				if (i + 1 < cnt)
					add(&g, "\r\n", 2);
			}
		} else if (rep != NULL) {
			int cnt = atoi(rep + 8);
			const char *c = strchr(rep + 8, ' ');
			const char *after = c ? c + 2 : p + len;

			add_escaped(&g, p, (size_t)(rep - p), 0);
			for (int i = 0; c != NULL && i < cnt; i++)
				add(&g, c + 1, 1);
			if (after < p + len)
				add_escaped(&g, after, (size_t)(p + len - after), 0);
		} else {
			add_escaped(&g, p, len, 0);
		}
		if (nl == NULL)
			break;
		add(&g, "\r\n", 2);
		p = nl + 1;
	}
	if (!eof && (g.p == NULL || strstr(g.p, "\r\n\r\n") == NULL))
		add(&g, "\r\n", 2);
	/* Content-Length: auto */
	char *cl = g.p ? strstr(g.p, "Content-Length: auto\r\n") : NULL;
	if (cl != NULL) {
		char *body = strstr(g.p, "\r\n\r\n");
		size_t blen = body ? g.n - (size_t)(body + 4 - g.p) : 0;
		char num[32];

		snprintf(num, sizeof(num), "%zu", blen);
		add(out, g.p, (size_t)(cl - g.p) + 16);
		add(out, num, strlen(num));
		add(out, cl + 20, g.n - (size_t)(cl + 20 - g.p));
	} else {
		add(out, g.p ? g.p : "", g.n);
	}
	free(g.p);
}

static struct test_server srv;

static void
test_corpus(void **state)
{
	const char *srcdir = getenv("srcdir") ? getenv("srcdir") : ".";
	char dir[4096], path[8192];
	struct dirent **names;
	static char resp[1 << 16];
	int n, failures = 0, cases = 0;

	snprintf(dir, sizeof(dir), "%s/test/http-corpus", srcdir);
	n = scandir(dir, &names, NULL, alphasort);
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		FILE *f;
		static char file[1 << 16];
		size_t len;
		int expect[4] = { 0 }, n_expect = 0, eof = 0, status = 0;

		if (strstr(names[i]->d_name, ".http") == NULL) {
			free(names[i]);
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		f = fopen(path, "rb");
		assert_non_null(f);
		len = fread(file, 1, sizeof(file) - 1, f);
		fclose(f);
		file[len] = '\0';
		char *nl = strchr(file, '\n');
		assert_non_null(nl);
		*nl = '\0';
		for (char *tok = strtok(file + 8, " "); tok != NULL; tok = strtok(NULL, " ")) {
			if (strcmp(tok, "eof") == 0)
				eof = 1;
			else if (n_expect < 4)
				expect[n_expect++] = atoi(tok);
		}
		struct growing req = { 0 };
		build_request(nl + 1, &req, eof);
		int fd = test_connect(srv.port);
		test_send_all(fd, req.p, req.n);
		if (eof)
			shutdown(fd, SHUT_WR);
		test_recv_until(fd, resp, sizeof(resp), NULL, 10);
		close(fd);
		sscanf(resp, "HTTP/1.%*d %d", &status);
		int ok = 0;
		for (int k = 0; k < n_expect; k++)
			ok |= status == expect[k];
		if (!ok) {
			print_error("%s: got status %d, expected %d%s\n", names[i]->d_name, status,
			    expect[0], n_expect > 1 ? " (or another listed)" : "");
			failures++;
		}
		if (status >= 400 && strstr(resp, "\"error\"") == NULL) {
			print_error("%s: status %d without a JSON error body\n", names[i]->d_name,
			    status);
			failures++;
		}
		cases++;
		free(req.p);
		free(names[i]);
	}
	free(names);
	print_message("%d corpus requests, %d failures\n", cases, failures);
	assert_int_equal(failures, 0);

	/* the server is unharmed */
	assert_int_equal(test_http_post(srv.port, "/execute", "{\"prompt\":\"Once upon\","
	    "\"params\":{\"max_tokens\":8,\"temperature\":0}}", NULL, resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "event: end"));
	assert_int_equal(test_http_get(srv.port, "/health", resp, sizeof(resp)), 200);
}

static int
setup(void **state)
{
	test_server_start(&srv, "corpus", "--header-timeout-ms", "1000", NULL);
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
		cmocka_unit_test(test_corpus),
	};
	int rc = test_server_init(false);

	if (rc != 0)
		return rc == 77 ? 77 : 1;
	rc = cmocka_run_group_tests(tests, setup, teardown);
	if (rc == 0)
		test_server_cleanup();
	return rc;
}
