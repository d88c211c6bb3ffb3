/*
 * The audit log (doc/seal.md): one JSON object per line for each seal
 * event (seal_created, verify_ok, verify_failed, reverify_ok,
 * reverify_failed, residency_violation), appended to a file or written to
 * stderr.  Each line goes out in one write(2), so lines from several
 * threads or processes appending to one file do not interleave.  No key
 * material is ever passed in.
 */
#ifndef ORCD_AUDIT_H
#define ORCD_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct audit;

struct audit_event {
	const char *event;          /* "verify_ok", ... */
	const char *model;          /* the model file's path */
	const char *shard_id;       /* NULL: none */
	const char *digest;         /* hex of the signed digest, NULL: none */
	const char *correlation_id; /* NULL: none */
	const char *detail;         /* what failed, NULL when nothing did */
	/* the first differing chunk, when one is known (chunk_tensor != NULL) */
	const char *chunk_tensor;
	int64_t chunk_index;        /* in the model's chunk list */
	int64_t chunk_in_tensor;
	uint64_t chunk_start, chunk_end; /* file bytes [start, end) */
	int64_t chunks_bad;         /* how many chunks differ; < 0: not counted */
	double seconds;             /* how long the check took; < 0: not given */
};

/* path: a file (created 0600 if absent, appended to), "-" or "stderr"; NULL
 * gives a log that drops every event. */
int audit_open(const char *path, struct audit **out, struct orcd_err *err);
void audit_close(struct audit *a);
/* Initialises an event with no optional fields. */
void audit_event_init(struct audit_event *ev, const char *event, const char *model);
/* Writes one line; safe from any thread.  -1 with err when the write failed. */
int audit_emit(struct audit *a, const struct audit_event *ev, struct orcd_err *err);
/* The line audit_emit writes, without the newline (caller frees). */
char *audit_format(const struct audit_event *ev);

#endif
