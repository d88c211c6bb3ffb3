/*
 * struct orcd: the one server object, passed down to every module (no other
 * global state).  Everything in it is owned by the loop thread unless a
 * field says otherwise.
 */
#ifndef ORCD_ORCD_H
#define ORCD_ORCD_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "cq.h"

struct event_base;
struct event;
struct model;
struct backend;
struct sse_vocab;
struct sched;
struct server;
struct metrics;
struct orcd_metrics;
struct orcd_monitor;
struct audit;
struct seal_serve;

enum orcd_phase {
	ORCD_LOADING,     /* listener up, model loading on a thread */
	ORCD_READY,
	ORCD_FAILED,      /* model load failed: /health 503, no work */
	ORCD_DRAINING,    /* SIGTERM seen: no new work, streams finishing */
};

/* Event priorities (event_base_priority_init): 0 timers (deadlines,
 * timeouts, the stall probe, health refresh), 1 default (the libevent
 * default for 3 levels: sockets, completions), 2 bulk streaming output.
 * Levels 1 and 2 yield to level 0 every 16 callbacks. */
#define ORCD_PRIORITIES 3
#define ORCD_PRIO_TIMER 0
#define ORCD_PRIO_DEFAULT 1
#define ORCD_PRIO_STREAM 2

/* Transition trace for tests: called on every request state change. */
struct req;
typedef void (*orcd_trace_fn)(void *arg, const struct req *r, int from, int to);

/* The cached /health view, rebuilt by a timer, read by GET /health. */
struct health_snapshot {
	char json[1536];
	int len;
	int status;              /* 200 or 503 */
};

struct orcd {
	struct conf cfg;
	struct event_base *base;
	struct cq *cq;
	enum orcd_phase phase;
	char load_error[512];
	struct model *model;
	struct backend *backend;
	struct sse_vocab *vocab;
	struct sched *sched;
	struct server *server;
	struct metrics *metrics;
	struct orcd_metrics *m;
	struct health_snapshot health;
	struct event *health_timer;
	struct event *lag_timer;   /* loop stall probe */
	struct event *mem_timer;   /* memory snapshot log line */
	double lag_expected;
	double lag_max;
	struct event *sig_term, *sig_int, *grace_timer;
	double t_start;          /* monotonic seconds at startup */
	double t_drain;          /* when draining started */
	int n_signals;
	int exit_code;
	uint64_t next_id;        /* connection / request ids */
	struct orcd_monitor *monitor; /* residency and seal re-verification thread */
	struct audit *audit;     /* --audit-log (any thread) */
	struct seal_serve *seal; /* --seal: set by load_done; flag read atomically */
	orcd_trace_fn trace;     /* NULL except in tests */
	void *trace_arg;
};

/* Monotonic clock, seconds and nanoseconds. */
double orcd_now(void);
uint64_t orcd_now_ns(void);

/* Setup and teardown (serve.c), also used by in-process tests: init makes
 * the event loop, completion queue, metrics and timers from o->cfg;
 * orcd_load_sync loads the model and backend on the calling thread and
 * makes the server ready; fini frees everything (o->cfg too). */
int orcd_init(struct orcd *o, struct orcd_err *err);
int orcd_load_sync(struct orcd *o, struct orcd_err *err);
void orcd_fini(struct orcd *o);

/* Loop-thread helpers implemented in serve.c. */
void orcd_refresh_health(struct orcd *o);
/* Called when the last stream has ended during a drain. */
void orcd_maybe_exit(struct orcd *o);

#endif
