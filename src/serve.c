/*
 * `orcd serve`: the daemon.  Starts the HTTP listener first, loads the model
 * and the backend on a loader thread (so /health answers 503 "loading"
 * meanwhile), then serves on one libevent loop.  SIGTERM/SIGINT drain:
 * stop accepting, let streams finish within the grace period, end the rest
 * with `shutting_down`, exit 0; a second signal exits at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"

#include "orcd/backend.h"
#include "audit.h"
#include "backend_open.h"
#include "conn.h"
#include "generate.h"
#include "log.h"
#include "metrics_orcd.h"
#include "model.h"
#include "orcd.h"
#include "req.h"
#include "sched.h"
#include "seal_serve.h"
#include "serve.h"
#include "server.h"
#include "sse.h"
#include "tokenizer.h"

/* ------------------------------------------------------------ supervisor signals */

static void
sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	socklen_t len;
	int fd;

	if (path == NULL || *path == '\0' || strlen(path) >= sizeof(sa.sun_path))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
		log_warn("sd_notify: %s", strerror(errno));
	close(fd);
}

static void
write_ready_file(struct orcd *o)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (o->cfg.ready_file == NULL)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", o->cfg.ready_file);
	f = fopen(tmp, "w");
	if (f == NULL) {
		log_error("ready file %s: %s", tmp, strerror(errno));
		return;
	}
	fprintf(f, "pid=%d\nport=%d\n", (int)getpid(), server_port(o));
	if (fclose(f) != 0 || rename(tmp, o->cfg.ready_file) != 0)
		log_error("ready file %s: %s", o->cfg.ready_file, strerror(errno));
}

/* ------------------------------------------------------------ health */

void
orcd_refresh_health(struct orcd *o)
{
	static const char *names[] = { "loading", "ok", "unhealthy", "draining" };
	struct health_snapshot *h = &o->health;
	char model[256] = "";
	int n;

	if (o->model != NULL)
		model[sse_json_escape(o->model->name, strlen(o->model->name) > 40 ? 40 :
		    strlen(o->model->name), model)] = '\0';
	/* the backend's cached counters: no device call here */
	struct backend_health bh = { 0, o->phase == ORCD_READY, 0 };
	if (o->backend != NULL && o->backend->ops->health != NULL)
		o->backend->ops->health(o->backend, &bh);
	double since = bh.checked_at > 0 ? orcd_now() - bh.checked_at : 0.0;
	/* with --seal: whether the weights matched at the last verification (an
	 * atomic flag the monitor clears; shard ids need no JSON escaping) */
	char sealed[320] = "";
	bool seal_ok = o->cfg.seal == NULL || seal_serve_sealed(o->seal);
	bool ready = o->phase == ORCD_READY && seal_ok;
	if (o->cfg.seal != NULL)
		snprintf(sealed, sizeof(sealed), ",\"sealed\":%s,\"shard_id\":\"%s\"",
		    seal_ok ? "true" : "false", seal_serve_shard_id(o->seal));
	n = snprintf(h->json, sizeof(h->json), "{\"status\":\"%s\",\"ready\":%s,"
	    "\"resident\":%s,\"vram_bytes_used\":%llu,\"last_check_secs\":%.3f,"
	    "\"model\":\"%s\",\"backend\":\"%s\",\"uptime_s\":%.3f,\"active\":%d,"
	    "\"queued\":%d,\"connections\":%d%s}\n",
	    o->phase == ORCD_READY && !seal_ok ? "unhealthy" : names[o->phase],
	    ready ? "true" : "false",
	    o->backend != NULL && bh.resident ? "true" : "false",
	    (unsigned long long)bh.vram_bytes_used, since, model,
	    o->backend ? o->backend->ops->name : "none", orcd_now() - o->t_start,
	    o->sched ? sched_n_active(o->sched) : 0, o->sched ? sched_n_queued(o->sched) : 0,
	    conn_count(o), sealed);
	h->len = n < (int)sizeof(h->json) ? n : (int)sizeof(h->json) - 1;
	h->status = ready ? 200 : 503;
	if (o->m != NULL)
		metric_gauge_set(o->m->ready, ready);
}

static void
health_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	orcd_refresh_health(arg);
}

/* The loop-stall probe: a 5 ms timer whose lateness is how long the loop
 * could not run (a blocking call, a long callback). */
#define LAG_INTERVAL_S 0.005

/* Memory snapshot: one log line and the gauges, from cached counters (no
 * device call), well under a millisecond. */
static void
mem_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct orcd *o = arg;

	if (o->sched == NULL)
		return;
	sched_log_snapshot(o->sched);
	orcd_metrics_mem(o);
}

static void
lag_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct orcd *o = arg;
	double now = orcd_now();
	double lag = now - o->lag_expected;

	if (lag < 0)
		lag = 0;
	metric_histogram_observe(o->m->loop_lag, lag);
	if (lag > o->lag_max) {
		o->lag_max = lag;
		metric_gauge_set(o->m->loop_lag_max, lag);
	}
	if (lag > 0.010)
		log_warn("event loop stalled for %.1f ms (%s)", lag * 1e3,
		    o->phase == ORCD_READY ? "serving" : "not serving yet");
	else if (lag > 0.002)
		log_debug("event loop stalled for %.3f ms", lag * 1e3);
	o->lag_expected = now + LAG_INTERVAL_S;
}

/* ------------------------------------------------------------ monitor */

/* A thread that re-verifies the backend's VRAM residency every
 * residency-interval seconds and the seal every seal-reverify seconds
 * (device calls and hashing never run on the loop); a violation or a
 * mismatch goes to the loop, which marks the worker unhealthy.  A seal
 * mismatch clears the seal's atomic flag first, so admission stops at
 * once. */
struct orcd_monitor {
	struct orcd *o;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
};

struct monitor_event {
	struct cq_item item;
	struct orcd *o;
	char msg[512];
};

static void
monitor_violation(struct cq_item *item)
{
	struct monitor_event *ev = (struct monitor_event *)item;
	struct orcd *o = ev->o;

	log_error("AUDIT {\"event\":\"residency_violation\",\"model\":\"%s\",\"detail\":\"%s\"}",
	    o->model ? o->model->name : "", ev->msg);
	if (o->phase == ORCD_READY) {
		o->phase = ORCD_FAILED;
		snprintf(o->load_error, sizeof(o->load_error), "residency violation: %.400s", ev->msg);
	}
	orcd_refresh_health(o);
	free(ev);
}

static void
monitor_seal_failed(struct cq_item *item)
{
	struct monitor_event *ev = (struct monitor_event *)item;
	struct orcd *o = ev->o;

	if (o->phase == ORCD_READY) {
		o->phase = ORCD_FAILED;
		snprintf(o->load_error, sizeof(o->load_error), "seal re-verification failed: "
		    "%.400s", ev->msg);
	}
	orcd_refresh_health(o);
	free(ev);
}

static void
monitor_post(struct orcd *o, void (*fn)(struct cq_item *), const char *msg)
{
	struct monitor_event *ev = calloc(1, sizeof(*ev));

	if (ev == NULL)
		return;
	ev->item.fn = fn;
	ev->o = o;
	snprintf(ev->msg, sizeof(ev->msg), "%.500s", msg);
	cq_push(o->cq, &ev->item);
}

static void
monitor_residency(struct orcd *o)
{
	struct orcd_err err;
	struct audit_event aev;
	char msg[600];
	int v;

	err.msg[0] = '\0';
	v = o->backend->ops->verify(o->backend, &err);
	if (v == 0)
		return;
	snprintf(msg, sizeof(msg), "%d allocation(s): %s", v, err.msg);
	audit_event_init(&aev, "residency_violation", o->cfg.model);
	aev.detail = msg;
	if (audit_emit(o->audit, &aev, &err) != 0)
		log_error("%s", err.msg);
	monitor_post(o, monitor_violation, msg);
}

static void
monitor_seal(struct orcd *o)
{
	struct orcd_err err;

	if (seal_serve_reverify(o->seal, &err) != 0)
		monitor_post(o, monitor_seal_failed, err.msg);
}

/* Absolute CLOCK_REALTIME time (for pthread_cond_timedwait) dt seconds on. */
static struct timespec
realtime_in(double dt)
{
	struct timespec ts;
	double when;

	clock_gettime(CLOCK_REALTIME, &ts);
	when = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + (dt > 0 ? dt : 0);
	ts.tv_sec = (time_t)when;
	ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	return ts;
}

static void *
monitor_main(void *arg)
{
	struct orcd_monitor *mon = arg;
	struct orcd *o = mon->o;

	bool residency = o->backend->ops->verify != NULL && o->cfg.residency_interval_s > 0;
	bool seal = o->seal != NULL && o->cfg.seal_reverify_s > 0;
	double next_res = residency ? orcd_now() + o->cfg.residency_interval_s : INFINITY;
	double next_seal = seal ? orcd_now() + o->cfg.seal_reverify_s : INFINITY;

	pthread_mutex_lock(&mon->mu);
	while (!mon->stop) {
		double next = next_res < next_seal ? next_res : next_seal;
		struct timespec ts = realtime_in(next - orcd_now());

		pthread_cond_timedwait(&mon->cv, &mon->mu, &ts);
		if (mon->stop)
			break;
		pthread_mutex_unlock(&mon->mu);
		if (orcd_now() >= next_res) {
			monitor_residency(o);
			next_res = orcd_now() + o->cfg.residency_interval_s;
		}
		if (orcd_now() >= next_seal) {
			monitor_seal(o);
			/* after a mismatch the worker stays unhealthy until restarted */
			next_seal = seal_serve_sealed(o->seal) ? orcd_now() +
			    o->cfg.seal_reverify_s : INFINITY;
		}
		pthread_mutex_lock(&mon->mu);
		if (next_res == INFINITY && next_seal == INFINITY)
			break;   /* nothing left to check */
	}
	pthread_mutex_unlock(&mon->mu);
	return NULL;
}

static void
monitor_start(struct orcd *o)
{
	struct orcd_monitor *mon;

	if ((o->backend->ops->verify == NULL || o->cfg.residency_interval_s <= 0) &&
	    (o->seal == NULL || o->cfg.seal_reverify_s <= 0))
		return;
	mon = calloc(1, sizeof(*mon));
	if (mon == NULL)
		return;
	mon->o = o;
	pthread_mutex_init(&mon->mu, NULL);
	pthread_cond_init(&mon->cv, NULL);
	if (pthread_create(&mon->thread, NULL, monitor_main, mon) != 0) {
		log_warn("cannot start the monitor thread");
		free(mon);
		return;
	}
	o->monitor = mon;
}

static void
monitor_stop(struct orcd *o)
{
	struct orcd_monitor *mon = o->monitor;

	if (mon == NULL)
		return;
	pthread_mutex_lock(&mon->mu);
	mon->stop = true;
	pthread_cond_signal(&mon->cv);
	pthread_mutex_unlock(&mon->mu);
	pthread_join(mon->thread, NULL);
	pthread_mutex_destroy(&mon->mu);
	pthread_cond_destroy(&mon->cv);
	free(mon);
	o->monitor = NULL;
}

/* ------------------------------------------------------------ loading */

struct load_job {
	struct cq_item item;
	struct orcd *o;
	struct model *model;
	struct backend *backend;
	struct sse_vocab *vocab;
	struct seal_serve *seal;
	struct orcd_err err;
	int status;
	double t_model, t_backend;
};

static void
load_done(struct cq_item *item)
{
	struct load_job *j = (struct load_job *)item;
	struct orcd *o = j->o;
	struct orcd_err err;
	char desc[512];

	if (j->status != 0) {
		log_error("cannot load the model: %s", j->err.msg);
		snprintf(o->load_error, sizeof(o->load_error), "%s", j->err.msg);
		o->phase = ORCD_FAILED;
		o->exit_code = 1;
		free(j);
		event_base_loopexit(o->base, NULL);
		return;
	}
	o->model = j->model;
	o->backend = j->backend;
	o->vocab = j->vocab;
	o->seal = j->seal;
	metric_gauge_set(o->m->phase_model_load, j->t_model);
	metric_gauge_set(o->m->phase_backend_init, j->t_backend);
	free(j);
	if ((o->sched = sched_new(o, &err)) == NULL) {
		log_error("%s", err.msg);
		snprintf(o->load_error, sizeof(o->load_error), "%s", err.msg);
		o->phase = ORCD_FAILED;
		o->exit_code = 1;
		event_base_loopexit(o->base, NULL);
		return;
	}
	if (o->cfg.ctx_size <= 0)
		o->cfg.ctx_size = o->model->hp.n_ctx_train < 4096 ? o->model->hp.n_ctx_train : 4096;
	model_describe(o->model, desc, sizeof(desc));
	log_info("model loaded: %s", desc);
	if (o->phase == ORCD_DRAINING) {
		orcd_maybe_exit(o);
		return;
	}
	o->phase = ORCD_READY;
	monitor_start(o);
	orcd_refresh_health(o);
	log_info("ready: backend %s, context %d per request, max batch %d, listening on port %d",
	    o->backend->ops->name, o->cfg.ctx_size, o->cfg.max_batch, server_port(o));
	sd_notify_msg("READY=1\nSTATUS=serving");
	write_ready_file(o);
}

/* Model, escaped vocabulary and backend: the slow part, off the loop. */
static void
load_run(struct load_job *j)
{
	struct orcd *o = j->o;
	double t0 = orcd_now();

	j->status = model_load(o->cfg.model, &j->model, &j->err);
	/* the escaped vocabulary is built here, not on the loop */
	if (j->status == 0 && (j->vocab = sse_vocab_new(j->model->tok, &j->err)) == NULL) {
		model_free(j->model);
		j->model = NULL;
		j->status = -1;
	}
	j->t_model = orcd_now() - t0;
	if (j->status == 0) {
		t0 = orcd_now();
		struct backend_open_opts bo;

		backend_open_opts_init(&bo);
		bo.name = o->cfg.backend;
		bo.threads = o->cfg.threads;
		bo.compute_nice = o->cfg.compute_nice;
		bo.n_seqs = o->cfg.max_batch;
		bo.n_ctx = o->cfg.ctx_size > 0 ? o->cfg.ctx_size :
		    (j->model->hp.n_ctx_train < 4096 ? j->model->hp.n_ctx_train : 4096);
		bo.max_step_tokens = o->cfg.max_step_tokens;
		bo.cuda_graphs = o->cfg.cuda_graphs;
		bo.kv_bytes = (uint64_t)o->cfg.kv_memory;
		bo.kv_block_tokens = o->cfg.kv_block_tokens;
		bo.cuda_kv_paged = o->cfg.cuda_kv_paged;
		j->status = backend_open(j->model, &bo, o->cq, &j->backend, &j->err);
		j->t_backend = orcd_now() - t0;
		/* the seal: over the bytes the backend holds, before anything is served */
		if (j->status == 0 && o->cfg.seal != NULL) {
			j->status = seal_serve_open(&o->cfg, j->model, j->backend, o->audit, o->m,
			    &j->seal, &j->err);
			if (j->status != 0) {
				j->backend->ops->destroy(j->backend);
				j->backend = NULL;
			}
		}
		if (j->status != 0) {
			sse_vocab_free(j->vocab);
			j->vocab = NULL;
			model_free(j->model);
			j->model = NULL;
		}
	}
}

static void *
load_main(void *arg)
{
	struct load_job *j = arg;

	load_run(j);
	cq_push(j->o->cq, &j->item);
	return NULL;
}

int
orcd_load_sync(struct orcd *o, struct orcd_err *err)
{
	struct load_job *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return orcd_errf(err, "out of memory");
	j->o = o;
	load_run(j);
	if (j->status != 0) {
		*err = j->err;
		free(j);
		return -1;
	}
	load_done(&j->item);
	return o->phase == ORCD_READY ? 0 : orcd_errf(err, "%s", o->load_error);
}

/* ------------------------------------------------------------ shutdown */

void
orcd_maybe_exit(struct orcd *o)
{
	if (o->phase != ORCD_DRAINING)
		return;
	if (o->sched != NULL && (sched_n_active(o->sched) > 0 ||
	    sched_n_queued(o->sched) > 0 || sched_busy(o->sched)))
		return;
	if (conn_count(o) > 0)
		return;
	double took = orcd_now() - o->t_drain;
	if (o->m != NULL)
		metric_gauge_set(o->m->shutdown_seconds, took);
	log_info("shutdown complete in %.3f s", took);
	event_base_loopexit(o->base, NULL);
}

static void
grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct orcd *o = arg;

	if (o->sched != NULL && (sched_n_active(o->sched) > 0 || sched_n_queued(o->sched) > 0)) {
		log_warn("shutdown grace period over: ending %d running and %d queued streams",
		    sched_n_active(o->sched), sched_n_queued(o->sched));
		sched_abort_all(o->sched, REQ_ABORT_SHUTDOWN);
	}
	conn_drain_all(o);
	orcd_maybe_exit(o);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct orcd *o = arg;

	if (++o->n_signals > 1) {
		log_warn("second signal (%d): exiting now", (int)sig);
		_exit(1);
	}
	log_info("signal %d: draining (grace %.1f s)", (int)sig, o->cfg.shutdown_grace_s);
	sd_notify_msg("STOPPING=1");
	o->t_drain = orcd_now();
	if (o->phase == ORCD_LOADING) {
		o->phase = ORCD_DRAINING;
		event_base_loopexit(o->base, NULL);
		return;
	}
	o->phase = ORCD_DRAINING;
	orcd_refresh_health(o);
	server_stop_listening(o);
	conn_drain_all(o);
	struct timeval tv = { (time_t)o->cfg.shutdown_grace_s,
	    (suseconds_t)((o->cfg.shutdown_grace_s - (double)(time_t)o->cfg.shutdown_grace_s) * 1e6) };
	o->grace_timer = evtimer_new(o->base, grace_cb, o);
	evtimer_add(o->grace_timer, &tv);
	orcd_maybe_exit(o);
}

/* ------------------------------------------------------------ setup */

int
orcd_init(struct orcd *o, struct orcd_err *err)
{
	struct timeval tv;

	struct event_config *ec = event_config_new();

	o->t_start = orcd_now();
	if (ec == NULL)
		return orcd_errf(err, "cannot create the event loop");
	/* After 16 callbacks (or 0.5 ms) of sockets and streaming output, run
	 * due timers again: a burst of arrivals or a step's token writes to
	 * hundreds of sockets must not hold deadlines and timeouts. */
	struct timeval slice = { 0, 500 };
	event_config_set_max_dispatch_interval(ec, &slice, 16, ORCD_PRIO_DEFAULT);
	/* timerfd-backed timeouts: epoll_wait's millisecond timeout makes
	 * deadlines (and the stall probe) up to several ms late otherwise */
	event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	o->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (o->base == NULL)
		return orcd_errf(err, "cannot create the event loop");
	/* Priorities: streaming sockets' writes run after everything else in a
	 * loop iteration, so a /health probe or a new request is not queued
	 * behind a step's worth of token writes. */
	if (event_base_priority_init(o->base, ORCD_PRIORITIES) != 0)
		return orcd_errf(err, "cannot set event priorities");
	if ((o->cq = cq_new(o->base, err)) == NULL)
		return -1;
	if (audit_open(o->cfg.audit_log, &o->audit, err) != 0)
		return -1;
	if (orcd_metrics_init(o) != 0)
		return orcd_errf(err, "out of memory for metrics");
	o->health_timer = event_new(o->base, -1, EV_PERSIST, health_timer_cb, o);
	event_priority_set(o->health_timer, ORCD_PRIO_TIMER);
	tv.tv_sec = o->cfg.health_interval_ms / 1000;
	tv.tv_usec = (o->cfg.health_interval_ms % 1000) * 1000;
	event_add(o->health_timer, &tv);
	o->lag_timer = event_new(o->base, -1, EV_PERSIST, lag_timer_cb, o);
	event_priority_set(o->lag_timer, ORCD_PRIO_TIMER);
	tv.tv_sec = 0;
	tv.tv_usec = (suseconds_t)(LAG_INTERVAL_S * 1e6);
	o->lag_expected = orcd_now() + LAG_INTERVAL_S;
	event_add(o->lag_timer, &tv);
	if (o->cfg.mem_snapshot_interval_s > 0) {
		o->mem_timer = event_new(o->base, -1, EV_PERSIST, mem_timer_cb, o);
		event_priority_set(o->mem_timer, ORCD_PRIO_TIMER);
		tv.tv_sec = (time_t)o->cfg.mem_snapshot_interval_s;
		tv.tv_usec = (suseconds_t)((o->cfg.mem_snapshot_interval_s - (double)tv.tv_sec) * 1e6);
		event_add(o->mem_timer, &tv);
	}
	return 0;
}

void
orcd_fini(struct orcd *o)
{
	monitor_stop(o);
	seal_serve_free(o->seal);
	o->seal = NULL;
	server_free(o);
	if (o->backend != NULL)
		o->backend->ops->destroy(o->backend);
	o->backend = NULL;
	sched_free(o->sched);
	o->sched = NULL;
	sse_vocab_free(o->vocab);
	o->vocab = NULL;
	model_free(o->model);
	o->model = NULL;
	if (o->health_timer)
		event_free(o->health_timer);
	if (o->lag_timer)
		event_free(o->lag_timer);
	if (o->mem_timer)
		event_free(o->mem_timer);
	o->mem_timer = NULL;
	if (o->grace_timer)
		event_free(o->grace_timer);
	if (o->sig_term)
		event_free(o->sig_term);
	if (o->sig_int)
		event_free(o->sig_int);
	o->health_timer = o->lag_timer = o->grace_timer = o->sig_term = o->sig_int = NULL;
	cq_free(o->cq);
	o->cq = NULL;
	audit_close(o->audit);
	o->audit = NULL;
	orcd_metrics_free(o);
	if (o->base)
		event_base_free(o->base);
	o->base = NULL;
	conf_free(&o->cfg);
}

/* ------------------------------------------------------------ main */

int
serve_main(int argc, char **argv)
{
	struct orcd o;
	struct orcd_err err;
	char model_path[PATH_MAX];
	struct load_job *j;
	pthread_t loader;
	int rc;

	memset(&o, 0, sizeof(o));
	conf_defaults(&o.cfg);
	rc = conf_parse_args(&o.cfg, argc, argv, &err);
	if (rc != 0) {
		if (rc > 0) {
			conf_free(&o.cfg);
			return 0;
		}
		fprintf(stderr, "orcd serve: %s\n", err.msg);
		conf_usage(stderr);
		conf_free(&o.cfg);
		return 2;
	}
	log_set_level((enum log_level)o.cfg.log_level);
	if ((o.cfg.seal == NULL) != (o.cfg.seal_key_file == NULL)) {
		fprintf(stderr, "orcd serve: --seal and --seal-key-file go together\n");
		conf_free(&o.cfg);
		return 2;
	}
	if (o.cfg.mem_hard_limit != 0 && o.cfg.mem_soft_limit > o.cfg.mem_hard_limit) {
		fprintf(stderr, "orcd serve: mem-soft-limit (%ld) is above mem-hard-limit (%ld)\n",
		    o.cfg.mem_soft_limit, o.cfg.mem_hard_limit);
		conf_free(&o.cfg);
		return 2;
	}
	if (o.cfg.model == NULL) {
		if (generate_default_model(model_path, sizeof(model_path), &err) != 0) {
			fprintf(stderr, "orcd serve: %s\n", err.msg);
			conf_free(&o.cfg);
			return 1;
		}
		o.cfg.model = strdup(model_path);
	}
	signal(SIGPIPE, SIG_IGN);
	if (orcd_init(&o, &err) != 0) {
		fprintf(stderr, "orcd serve: %s\n", err.msg);
		orcd_fini(&o);
		return 1;
	}
	o.sig_term = evsignal_new(o.base, SIGTERM, signal_cb, &o);
	o.sig_int = evsignal_new(o.base, SIGINT, signal_cb, &o);
	evsignal_add(o.sig_term, NULL);
	evsignal_add(o.sig_int, NULL);

	double t0 = orcd_now();
	if (server_start(&o, &err) != 0) {
		log_error("%s", err.msg);
		rc = 1;
		goto out;
	}
	metric_gauge_set(o.m->phase_http_start, orcd_now() - t0);
	log_info("orcd %s listening on port %d; loading %s", PACKAGE_VERSION,
	    server_port(&o), o.cfg.model);

	o.phase = ORCD_LOADING;
	orcd_refresh_health(&o);
	j = calloc(1, sizeof(*j));
	j->o = &o;
	j->item.fn = load_done;
	if (pthread_create(&loader, NULL, load_main, j) != 0) {
		log_error("cannot start the loader thread");
		rc = 1;
		goto out;
	}
	pthread_detach(loader);

	event_base_dispatch(o.base);
	rc = o.exit_code;
out:
	orcd_fini(&o);
	return rc;
}
