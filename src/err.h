/*
 * Error reporting: a function that can fail returns -1 (or NULL) and fills a
 * struct orcd_err with a message naming what was wrong and where.
 */
#ifndef ORCD_ERR_H
#define ORCD_ERR_H

#include <stddef.h>

struct orcd_err {
	char msg[512];
};

/* Formats into e (may be NULL) and returns -1, so callers can write
 * `return orcd_errf(e, "...")`. */
int orcd_errf(struct orcd_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to the message already in e (truncating the end). */
void orcd_err_prefix(struct orcd_err *e, const char *prefix);

#endif
