/* The audit log (see audit.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"

struct audit {
	int fd;                  /* -1: events are dropped */
	bool own_fd;
	char path[512];
	pthread_mutex_t mu;      /* orders lines from several threads */
};

int
audit_open(const char *path, struct audit **out, struct orcd_err *err)
{
	struct audit *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (a == NULL)
		return orcd_errf(err, "audit log: out of memory");
	a->fd = -1;
	pthread_mutex_init(&a->mu, NULL);
	if (path == NULL) {
		snprintf(a->path, sizeof(a->path), "none");
	} else if (strcmp(path, "-") == 0 || strcmp(path, "stderr") == 0) {
		a->fd = STDERR_FILENO;
		snprintf(a->path, sizeof(a->path), "stderr");
	} else {
		a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (a->fd < 0) {
			orcd_errf(err, "audit log %s: %s", path, strerror(errno));
			pthread_mutex_destroy(&a->mu);
			free(a);
			return -1;
		}
		a->own_fd = true;
		snprintf(a->path, sizeof(a->path), "%s", path);
	}
	*out = a;
	return 0;
}

void
audit_close(struct audit *a)
{
	if (a == NULL)
		return;
	if (a->own_fd)
		close(a->fd);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

void
audit_event_init(struct audit_event *ev, const char *event, const char *model)
{
	memset(ev, 0, sizeof(*ev));
	ev->event = event;
	ev->model = model;
	ev->chunk_index = -1;
	ev->chunk_in_tensor = -1;
	ev->chunks_bad = -1;
	ev->seconds = -1;
}

static void
set_str(json_t *o, const char *key, const char *v)
{
	json_t *s;

	if (v == NULL)
		return;
	s = json_string(v);
	json_object_set_new(o, key, s != NULL ? s : json_string("(not UTF-8)"));
}

char *
audit_format(const struct audit_event *ev)
{
	struct timeval tv;
	struct tm tm;
	char when[40];
	json_t *o = json_object();
	char *line;

	if (o == NULL)
		return NULL;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%03dZ",
	    (int)(tv.tv_usec / 1000));
	json_object_set_new(o, "time", json_string(when));
	set_str(o, "event", ev->event);
	set_str(o, "model", ev->model);
	set_str(o, "shard_id", ev->shard_id);
	set_str(o, "digest", ev->digest);
	set_str(o, "correlation_id", ev->correlation_id);
	if (ev->seconds >= 0)
		json_object_set_new(o, "seconds", json_real(ev->seconds));
	set_str(o, "detail", ev->detail);
	if (ev->chunk_tensor != NULL) {
		json_t *c = json_object();

		json_object_set_new(c, "index", json_integer(ev->chunk_index));
		set_str(c, "tensor", ev->chunk_tensor);
		json_object_set_new(c, "tensor_chunk", json_integer(ev->chunk_in_tensor));
		json_object_set_new(c, "start", json_integer((json_int_t)ev->chunk_start));
		json_object_set_new(c, "end", json_integer((json_int_t)ev->chunk_end));
		json_object_set_new(o, "chunk", c);
	}
	if (ev->chunks_bad >= 0)
		json_object_set_new(o, "chunks_bad", json_integer(ev->chunks_bad));
	line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	json_decref(o);
	return line;
}

int
audit_emit(struct audit *a, const struct audit_event *ev, struct orcd_err *err)
{
	char *line;
	size_t n, off = 0;
	int rc = 0;

	if (a == NULL || a->fd < 0)
		return 0;
	if ((line = audit_format(ev)) == NULL)
		return orcd_errf(err, "audit log: out of memory");
	n = strlen(line);
	line[n++] = '\n'; /* replaces the NUL: written with its length */
	pthread_mutex_lock(&a->mu);
	while (off < n) {
		ssize_t w = write(a->fd, line + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = orcd_errf(err, "audit log %s: %s", a->path,
			    w < 0 ? strerror(errno) : "short write");
			break;
		}
		off += (size_t)w;
	}
	pthread_mutex_unlock(&a->mu);
	free(line);
	return rc;
}
