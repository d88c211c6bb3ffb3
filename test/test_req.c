/*
 * The request state machine, driven through every transition of its table
 * in one process: a real orcd (event loop, connections, scheduler, CPU
 * backend with the small model) whose clients are socketpairs, so the test
 * decides exactly when a client reads, cancels, disconnects or runs out of
 * time.  The trace hook records every transition; at the end every edge
 * the table allows must have been taken, and no other.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "conn.h"
#include "orcd.h"
#include "req.h"
#include "sched.h"
#include "server.h"
#include "test_server.h"

static struct orcd o;
static bool seen[REQ_STATE_COUNT][REQ_STATE_COUNT];

#define MAX_JOBS 64
static struct {
	char job[64];
	int state;
} jobs[MAX_JOBS];
static int n_jobs;

static void
trace(void *arg, const struct req *r, int from, int to)
{
	assert_true(req_transition_ok(from, to));
	seen[from][to] = true;
	if (r->job_id == NULL)
		return;
	for (int i = 0; i < n_jobs; i++)
		if (strcmp(jobs[i].job, r->job_id) == 0) {
			jobs[i].state = to;
			return;
		}
	if (n_jobs < MAX_JOBS) {
		snprintf(jobs[n_jobs].job, sizeof(jobs[0].job), "%s", r->job_id);
		jobs[n_jobs++].state = to;
	}
}

static int
job_state(const char *job)
{
	for (int i = 0; i < n_jobs; i++)
		if (strcmp(jobs[i].job, job) == 0)
			return jobs[i].state;
	return -1;
}

struct client {
	int fd;
	char buf[1 << 16];
	size_t n;
	bool reading;
	bool eof;
};

static struct client clients[32];
static int n_clients;

static struct client *
client_new(bool small_buffers)
{
	int sv[2];
	struct client *c = &clients[n_clients++];

	assert_true(n_clients <= 32);
	memset(c, 0, sizeof(*c));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	if (small_buffers) {
		int sz = 4096;

		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	}
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	conn_accept(&o, sv[0], "socketpair");
	c->fd = sv[1];
	c->reading = true;
	return c;
}

static void
client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static void
client_post(struct client *c, const char *path, const char *body, const char *extra)
{
	char req[16384];
	int n = snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
	    "%s\r\n%s", path, strlen(body), extra ? extra : "", body);

	assert_true(write(c->fd, req, (size_t)n) == n);
}

static void
execute(struct client *c, const char *job, int max_tokens, int prompt_words, const char *extra)
{
	char body[16384], prompt[12000] = "Once upon a time";

	for (int i = 0; i < prompt_words; i++)
		strcat(prompt, " there was a girl");
	snprintf(body, sizeof(body), "{\"job_id\":\"%s\",\"prompt\":\"%s\",\"params\":"
	    "{\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}}", job, prompt, max_tokens);
	client_post(c, "/execute", body, extra);
}

/* Runs the loop (and reads for every reading client) until cond() holds. */
static void
pump(bool (*cond)(void *), void *arg, const char *what)
{
	for (double t0 = test_now(); test_now() - t0 < 30;) {
		event_base_loop(o.base, EVLOOP_NONBLOCK);
		for (int i = 0; i < n_clients; i++) {
			struct client *c = &clients[i];

			if (c->fd < 0 || !c->reading)
				continue;
			for (;;) {
				if (c->n + 1 >= sizeof(c->buf)) {
					/* keep the tail: tests look for the last events */
					memmove(c->buf, c->buf + c->n / 2, c->n - c->n / 2);
					c->n -= c->n / 2;
				}
				ssize_t r = read(c->fd, c->buf + c->n, sizeof(c->buf) - 1 - c->n);
				if (r <= 0) {
					if (r == 0)
						c->eof = true;
					break;
				}
				c->n += (size_t)r;
				c->buf[c->n] = '\0';
			}
		}
		if (cond(arg))
			return;
		usleep(200);
	}
	fail_msg("timed out waiting for %s", what);
}

struct want_state {
	const char *job;
	int state;
};

static bool
is_state(void *arg)
{
	struct want_state *w = arg;

	return job_state(w->job) == w->state;
}

static void
wait_state(const char *job, int state)
{
	struct want_state w = { job, state };
	char what[128];

	snprintf(what, sizeof(what), "job %s to reach %s", job, req_state_name(state));
	pump(is_state, &w, what);
}

static bool
has_text(void *arg)
{
	struct client *c = ((void **)arg)[0];
	const char *text = ((void **)arg)[1];

	return strstr(c->buf, text) != NULL;
}

static void
wait_text(struct client *c, const char *text)
{
	void *arg[2] = { c, (void *)text };
	char what[128];

	snprintf(what, sizeof(what), "'%s' in a response", text);
	pump(has_text, arg, what);
}

static struct req *
find(const char *job)
{
	struct req *r = sched_find_job(o.sched, job);

	assert_non_null(r);
	return r;
}

static void
cancel(const char *job)
{
	struct client *c = client_new(false);
	char body[128];

	snprintf(body, sizeof(body), "{\"job_id\":\"%s\"}", job);
	client_post(c, "/cancel", body, NULL);
	wait_text(c, "202 Accepted");
}

/* Ends job (in whatever live state it is) by one of the four exits. */
enum exit_kind { EXIT_CANCEL, EXIT_DISCONNECT, EXIT_DEADLINE, EXIT_SHUTDOWN };
/* the exit state each kind leads to */
static const int exit_state[4] = { REQ_CANCELLED, REQ_DISCONNECTED, REQ_DEADLINE, REQ_FAILED };

static void
end_job(const char *job, struct client *c, enum exit_kind k)
{
	switch (k) {
	case EXIT_CANCEL:
		cancel(job);
		wait_state(job, REQ_DONE);
		c->reading = true;
		wait_text(c, "\"code\":\"cancelled\"");
		break;
	case EXIT_DISCONNECT:
		client_close(c);
		wait_state(job, REQ_DONE);
		break;
	case EXIT_DEADLINE:
		/* the deadline passes now; the scheduler sees it at the next step
		 * boundary (a queued or waiting request is checked there too) */
		req_set_deadline(find(job), orcd_now_ns());
		wait_state(job, REQ_DONE);
		c->reading = true;
		wait_text(c, "\"code\":\"deadline_exceeded\"");
		break;
	case EXIT_SHUTDOWN:
		req_abort(find(job), REQ_ABORT_SHUTDOWN);
		wait_state(job, REQ_DONE);
		c->reading = true;
		wait_text(c, "\"code\":\"shutting_down\"");
		break;
	}
}

/* A long-running stream that keeps the engine busy. */
static struct client *
background(const char *job)
{
	struct client *c = client_new(false);

	execute(c, job, 3000, 0, NULL);
	wait_state(job, REQ_DECODE);
	return c;
}

static void
test_table(void **state)
{
	assert_true(req_transition_ok(REQ_READ_REQUEST, REQ_ADMIT));
	assert_true(req_transition_ok(REQ_DECODE, REQ_WAIT_WRITABLE));
	assert_false(req_transition_ok(REQ_DONE, REQ_DECODE));
	assert_false(req_transition_ok(REQ_DECODE, REQ_QUEUED));
	assert_false(req_transition_ok(REQ_FINISH, REQ_CANCELLED));
	assert_false(req_transition_ok(REQ_READ_REQUEST, REQ_DONE));
	assert_false(req_transition_ok(REQ_STATE_COUNT, REQ_DONE));
	for (int s = 0; s < REQ_STATE_COUNT; s++)
		assert_non_null(req_state_name(s));
}

static void
test_normal_paths(void **state)
{
	struct client *c = client_new(false);

	/* a prompt longer than one prefill chunk, then decode to the limit */
	execute(c, "normal", 12, 6, NULL);
	wait_text(c, "event: end");
	assert_non_null(strstr(c->buf, "\"stop_reason\":\"length\""));
	assert_int_equal(job_state("normal"), REQ_DONE);

	/* one token: the first sampled token already finishes it */
	c = client_new(false);
	execute(c, "one", 1, 0, NULL);
	wait_text(c, "event: end");
	assert_true(seen[REQ_PREFILL][REQ_FINISH]);

	/* rejected in ADMIT: past deadline (504), full queue (429) */
	c = client_new(false);
	execute(c, "late", 4, 0, "X-Deadline-Ms: 0\r\n");
	wait_text(c, " 504 ");
	assert_true(seen[REQ_ADMIT][REQ_DEADLINE]);
}

static void
test_queue_exits(void **state)
{
	/* two streams take both batch slots; the rest wait in the queue */
	struct client *b1 = background("bg1");
	struct client *b2 = background("bg2");
	struct client *q[4];
	const char *names[4] = { "q-cancel", "q-gone", "q-late", "q-shut" };

	for (int i = 0; i < 4; i++) {
		q[i] = client_new(false);
		execute(q[i], names[i], 8, 0, NULL);
		wait_state(names[i], REQ_QUEUED);
	}
	/* the queue holds max-queue (4): the next one is refused */
	struct client *full = client_new(false);
	execute(full, "refused", 8, 0, NULL);
	wait_text(full, " 429 ");
	assert_non_null(strstr(full->buf, "Retry-After"));
	assert_true(seen[REQ_ADMIT][REQ_FAILED]);

	end_job("q-cancel", q[0], EXIT_CANCEL);
	end_job("q-gone", q[1], EXIT_DISCONNECT);
	end_job("q-late", q[2], EXIT_DEADLINE);
	end_job("q-shut", q[3], EXIT_SHUTDOWN);
	for (int s = REQ_CANCELLED; s <= REQ_FAILED; s++)
		assert_true(seen[REQ_QUEUED][s]);
	end_job("bg1", b1, EXIT_CANCEL);
	end_job("bg2", b2, EXIT_CANCEL);
}

static void
test_prefill_exits(void **state)
{
	const char *names[4] = { "p-cancel", "p-gone", "p-late", "p-shut" };

	for (int k = 0; k < 4; k++) {
		struct client *c = client_new(false);

		/* ~100 prompt tokens at 4 per step: many steps in PREFILL */
		execute(c, names[k], 8, 25, NULL);
		wait_state(names[k], REQ_PREFILL);
		end_job(names[k], c, (enum exit_kind)k);
		assert_true(seen[REQ_PREFILL][exit_state[k]]);
	}
}

static void
test_decode_exits(void **state)
{
	const char *names[4] = { "d-cancel", "d-gone", "d-late", "d-shut" };

	for (int k = 0; k < 4; k++) {
		struct client *c = client_new(false);

		execute(c, names[k], 3000, 0, NULL);
		wait_text(c, "event: token");
		assert_int_equal(job_state(names[k]), REQ_DECODE);
		end_job(names[k], c, (enum exit_kind)k);
		assert_true(seen[REQ_DECODE][exit_state[k]]);
	}
}

static void
test_backpressure(void **state)
{
	const char *names[4] = { "w-cancel", "w-gone", "w-late", "w-shut" };

	for (int k = 0; k < 4; k++) {
		struct client *c = client_new(true);

		c->reading = false; /* the client stops reading at once */
		execute(c, names[k], 3000, 0, NULL);
		wait_state(names[k], REQ_WAIT_WRITABLE);
		if (k == 0) {
			/* reading again resumes the stream */
			c->reading = true;
			wait_state(names[k], REQ_DECODE);
			assert_true(seen[REQ_WAIT_WRITABLE][REQ_DECODE]);
			c->reading = false;
			wait_state(names[k], REQ_WAIT_WRITABLE);
		}
		end_job(names[k], c, (enum exit_kind)k);
		assert_true(seen[REQ_WAIT_WRITABLE][exit_state[k]]);
	}
}

static void
test_every_edge_taken(void **state)
{
	int missing = 0;

	for (int f = 0; f < REQ_STATE_COUNT; f++)
		for (int t = 0; t < REQ_STATE_COUNT; t++) {
			if (req_transition_ok(f, t) && !seen[f][t]) {
				print_error("transition %s -> %s was never taken\n",
				    req_state_name(f), req_state_name(t));
				missing++;
			}
			/* the trace asserts no disallowed edge is ever taken */
		}
	assert_int_equal(missing, 0);
}

static int
setup(void **state)
{
	struct orcd_err err;

	memset(&o, 0, sizeof(o));
	conf_defaults(&o.cfg);
	o.cfg.model = strdup(test_model_path);
	o.cfg.threads = 1;
	o.cfg.compute_nice = 0;
	o.cfg.max_batch = 2;
	o.cfg.max_queue = 4;
	o.cfg.prefill_chunk = 4;
	o.cfg.max_step_tokens = 8;
	o.cfg.ctx_size = 4096;
	o.cfg.write_high_watermark = 2048;
	o.cfg.listen[o.cfg.n_listen++] = strdup("127.0.0.1:0");
	o.trace = trace;
	if (orcd_init(&o, &err) != 0 || server_start(&o, &err) != 0 ||
	    orcd_load_sync(&o, &err) != 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	for (int i = 0; i < n_clients; i++)
		client_close(&clients[i]);
	event_base_loop(o.base, EVLOOP_NONBLOCK);
	orcd_fini(&o);
	test_server_cleanup();
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_normal_paths),
		cmocka_unit_test(test_queue_exits),
		cmocka_unit_test(test_prefill_exits),
		cmocka_unit_test(test_decode_exits),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_every_edge_taken),
	};

	int rc = test_server_init(false);

	if (rc != 0)
		return rc == 77 ? 77 : 1;
	return cmocka_run_group_tests(tests, setup, teardown);
}
