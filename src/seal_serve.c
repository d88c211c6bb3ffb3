/* The served model's seal (see seal_serve.h). */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orcd/backend.h"
#include "audit.h"
#include "conf.h"
#include "log.h"
#include "metrics_orcd.h"
#include "model.h"
#include "orcd.h"
#include "seal.h"
#include "seal_serve.h"

struct seal_serve {
	struct seal seal;             /* signature checked at load */
	struct seal_chunks chunks;    /* over the served model's mmap */
	uint8_t (*digests)[32];       /* scratch of the verifying thread */
	char digest_hex[65];
	char model_path[1024];
	const struct model *model;
	struct backend *backend;
	struct audit *audit;
	struct orcd_metrics *m;
	atomic_bool sealed;
	bool flip_pending;            /* ORCD_TEST_SEAL_FLIP: before the first re-verification */
};

static void
emit(struct seal_serve *ss, const char *event, const char *detail, double seconds,
    const struct seal_diff *diff)
{
	struct audit_event ev;
	struct orcd_err err;
	char tensor[128];

	audit_event_init(&ev, event, ss->model_path);
	if (ss->seal.shard_id[0] != '\0') {
		ev.shard_id = ss->seal.shard_id;
		ev.digest = ss->digest_hex;
	}
	ev.detail = detail;
	ev.seconds = seconds;
	if (diff != NULL && diff->n_listed > 0) {
		const struct seal_chunk *c = &ss->chunks.c[diff->first_bad[0]];
		const struct gguf_tensor *t = &ss->model->gguf->tensors[c->tensor];

		snprintf(tensor, sizeof(tensor), "%.*s", (int)(t->name.len > 120 ? 120 :
		    t->name.len), t->name.ptr);
		ev.chunk_tensor = tensor;
		ev.chunk_index = (int64_t)diff->first_bad[0];
		ev.chunk_in_tensor = c->index;
		ev.chunk_start = c->file_offset;
		ev.chunk_end = c->file_offset + c->len;
		ev.chunks_bad = (int64_t)diff->n_bad;
	}
	if (detail != NULL)
		log_error("seal: %s: %s", event, detail);
	else
		log_info("seal: %s (%s, shard %s, %.3f s)", event, ss->digest_hex,
		    ss->seal.shard_id, seconds);
	if (audit_emit(ss->audit, &ev, &err) != 0)
		log_error("%s", err.msg);
}

/* Digests the backend's weights and compares; records the outcome. */
static int
check(struct seal_serve *ss, const char *ok_event, const char *failed_event,
    struct orcd_err *err)
{
	struct seal_diff diff;
	double t0 = orcd_now(), dt;
	int rc;

	memset(&diff, 0, sizeof(diff));
	rc = ss->backend->ops->weights_digest(ss->backend, ss->chunks.host, ss->chunks.len,
	    (int)ss->chunks.n, ss->digests, err);
	if (rc == 0)
		rc = seal_compare(&ss->seal, ss->model->gguf, &ss->chunks,
		    (const uint8_t (*)[32])ss->digests, &diff, err);
	dt = orcd_now() - t0;
	if (ss->m != NULL && ss->m->seal_verify_seconds != NULL) {
		metric_histogram_observe(ss->m->seal_verify_seconds, dt);
		metric_counter_inc(ss->m->seal_verifications[rc == 0 ? 0 : 1]);
	}
	if (rc != 0) {
		atomic_store(&ss->sealed, false);
		if (ss->m != NULL && ss->m->sealed != NULL)
			metric_gauge_set(ss->m->sealed, 0);
		emit(ss, failed_event, err->msg, dt, &diff);
		return -1;
	}
	if (ss->m != NULL && ss->m->sealed != NULL)
		metric_gauge_set(ss->m->sealed, 1);
	emit(ss, ok_event, NULL, dt, NULL);
	return 0;
}

int
seal_serve_open(const struct conf *cfg, const struct model *m, struct backend *b,
    struct audit *audit, struct orcd_metrics *metrics, struct seal_serve **out,
    struct orcd_err *err)
{
	struct seal_serve *ss = calloc(1, sizeof(*ss));
	struct seal_key key;
	const char *flip = getenv("ORCD_TEST_SEAL_FLIP");
	int rc;

	*out = NULL;
	if (ss == NULL)
		return orcd_errf(err, "seal: out of memory");
	ss->model = m;
	ss->backend = b;
	ss->audit = audit;
	ss->m = metrics;
	atomic_init(&ss->sealed, false);
	snprintf(ss->model_path, sizeof(ss->model_path), "%s", cfg->model);
	if (b->ops->weights_digest == NULL) {
		orcd_errf(err, "seal: sealing is not supported by the %s backend (no "
		    "weights_digest)", b->ops->name);
		goto fail;
	}
	if (seal_read(cfg->seal, &ss->seal, err) != 0)
		goto fail;
	seal_hex(ss->seal.digest, 32, ss->digest_hex);
	if (seal_key_load(cfg->seal_key_file, &key, err) != 0)
		goto fail;
	rc = seal_check_signature(&ss->seal, &key, err);
	seal_key_cleanse(&key);   /* re-verification compares digests only */
	if (rc != 0 || seal_check_model(&ss->seal, m->gguf, err) != 0)
		goto fail;
	if (seal_chunks_build(m->gguf, &ss->chunks, err) != 0)
		goto fail;
	ss->digests = malloc(ss->chunks.n * 32);
	if (ss->digests == NULL) {
		orcd_errf(err, "seal: out of memory for %zu digests", ss->chunks.n);
		goto fail;
	}
	if (check(ss, "verify_ok", "verify_failed", err) != 0) {
		orcd_err_prefix(err, "seal: the loaded weights do not match the seal");
		goto fail_reported;
	}
	atomic_store(&ss->sealed, true);
	if (flip != NULL && strcmp(flip, "1") == 0) {
		log_warn("ORCD_TEST_SEAL_FLIP=1: a byte of the weights will be flipped "
		    "before the first re-verification (test only)");
		ss->flip_pending = true;
	}
	*out = ss;
	return 0;
fail:
	emit(ss, "verify_failed", err->msg, -1, NULL);
	if (metrics != NULL && metrics->seal_verifications[1] != NULL)
		metric_counter_inc(metrics->seal_verifications[1]);
	orcd_err_prefix(err, "seal");
fail_reported:
	seal_serve_free(ss);
	return -1;
}

int
seal_serve_reverify(struct seal_serve *ss, struct orcd_err *err)
{
	if (!atomic_load(&ss->sealed))
		return orcd_errf(err, "seal: an earlier verification failed");
	if (ss->flip_pending) {
		const struct seal_chunk *c = &ss->chunks.c[ss->chunks.n / 2];
		struct orcd_err ferr;

		ss->flip_pending = false;
		if (ss->backend->ops->debug_flip == NULL)
			log_warn("ORCD_TEST_SEAL_FLIP: the %s backend has no debug_flip",
			    ss->backend->ops->name);
		else if (ss->backend->ops->debug_flip(ss->backend, c->host + c->len / 2,
		    &ferr) != 0)
			log_warn("ORCD_TEST_SEAL_FLIP: %s", ferr.msg);
		else
			log_warn("ORCD_TEST_SEAL_FLIP: flipped the byte at file offset %" PRIu64,
			    c->file_offset + c->len / 2);
	}
	return check(ss, "reverify_ok", "reverify_failed", err);
}

bool
seal_serve_sealed(const struct seal_serve *ss)
{
	return ss != NULL && atomic_load(&((struct seal_serve *)ss)->sealed);
}

const char *
seal_serve_shard_id(const struct seal_serve *ss)
{
	return ss != NULL ? ss->seal.shard_id : "";
}

void
seal_serve_free(struct seal_serve *ss)
{
	if (ss == NULL)
		return;
	seal_free(&ss->seal);
	seal_chunks_free(&ss->chunks);
	free(ss->digests);
	free(ss);
}
