/*
 * `orcd serve --seal`: the served model's seal (doc/seal.md).  At load the
 * signature and the model's file size and tensor table are checked and the
 * digest is recomputed over the bytes the backend holds
 * (backend_ops.weights_digest); the monitor thread re-verifies
 * periodically.  The loop only reads the atomic sealed flag.
 */
#ifndef ORCD_SEAL_SERVE_H
#define ORCD_SEAL_SERVE_H

#include <stdbool.h>

#include "err.h"

struct audit;
struct backend;
struct conf;
struct model;
struct orcd_metrics;
struct seal_serve;

/* Reads the key (cleansed before return), the seal, checks them against m
 * and runs the first verification over b's weights; emits verify_ok or
 * verify_failed.  -1 with err when the worker must not become ready. */
int seal_serve_open(const struct conf *cfg, const struct model *m, struct backend *b,
    struct audit *audit, struct orcd_metrics *metrics, struct seal_serve **out,
    struct orcd_err *err);
/* A re-verification (the monitor thread): 0 when the weights still match,
 * -1 with err otherwise (the flag is cleared, reverify_failed emitted).
 * With ORCD_TEST_SEAL_FLIP=1 the first call flips one byte first. */
int seal_serve_reverify(struct seal_serve *ss, struct orcd_err *err);
/* Any thread: false once a verification failed. */
bool seal_serve_sealed(const struct seal_serve *ss);
const char *seal_serve_shard_id(const struct seal_serve *ss);
void seal_serve_free(struct seal_serve *ss);

#endif
