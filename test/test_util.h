/* Helpers shared by the tests: where the shared test models are. */
#ifndef ORCD_TEST_UTIL_H
#define ORCD_TEST_UTIL_H

/* $ORCD_TEST_MODELS, else $srcdir/../shared/models (srcdir from automake,
 * default "."); NULL when the directory does not exist. */
const char *test_models_dir(void);
/* Like test_models_dir() but exits 77 (automake SKIP) when absent. */
const char *test_models_dir_or_skip(void);

#endif
