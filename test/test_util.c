/* Shared test helpers (see test_util.h). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "test_util.h"

const char *
test_models_dir(void)
{
	static char path[4096];
	const char *env = getenv("ORCD_TEST_MODELS");
	const char *srcdir = getenv("srcdir");
	struct stat st;

	if (env != NULL && *env != '\0')
		snprintf(path, sizeof(path), "%s", env);
	else
		snprintf(path, sizeof(path), "%s/../shared/models",
		    srcdir != NULL && *srcdir != '\0' ? srcdir : ".");
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return NULL;
	return path;
}

const char *
test_models_dir_or_skip(void)
{
	const char *d = test_models_dir();

	if (d == NULL) {
		fprintf(stderr, "SKIP: test models not found (set ORCD_TEST_MODELS "
		    "or put them in ../shared/models)\n");
		exit(77);
	}
	return d;
}
