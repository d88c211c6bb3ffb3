/*
 * `orcd generate`: one prompt through the CPU engine, printed as text (or
 * token ids), with prompt and generation speed on stderr.  Also resolves the
 * default model (a generated one when no --model is given).
 */
#ifndef ORCD_GENERATE_H
#define ORCD_GENERATE_H

#include "err.h"

/* argv[0] is "generate". */
int generate_main(int argc, char **argv);

/* The model to use when none is given: $ORCD_MODEL, else a random-weight
 * qwen2.5-0.5b q4_k_m model in $XDG_CACHE_HOME/orcd (or ~/.cache/orcd),
 * generated on first use with a notice on stderr. */
int generate_default_model(char *path, size_t len, struct orcd_err *err);

#endif
