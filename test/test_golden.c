/*
 * Golden parity: for every case in golden.jsonl (greedy outputs produced by
 * llama.cpp), `orcd generate --ids` must print exactly the golden token ids.
 * Runs the real binary ($ORCD_BIN), as a user would.  Skips (77) without
 * the shared models.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test_util.h"

static const char *models_dir;

/* Single-quotes s for /bin/sh. */
static void
shell_quote(char *dst, size_t cap, const char *s)
{
	size_t n = 0;

	dst[n++] = '\'';
	for (; *s != '\0' && n + 5 < cap; s++) {
		if (*s == '\'') {
			memcpy(dst + n, "'\\''", 4);
			n += 4;
		} else {
			dst[n++] = *s;
		}
	}
	dst[n++] = '\'';
	dst[n] = '\0';
}

static int
run_case(json_t *c, const char *threads, char *why, size_t whylen)
{
	const char *bin = getenv("ORCD_BIN") ? getenv("ORCD_BIN") : "./orcd";
	const char *model = json_string_value(json_object_get(c, "model"));
	const char *prompt = json_string_value(json_object_get(c, "prompt"));
	json_t *gen = json_object_get(c, "gen_ids");
	char qp[1024], cmd[8192], out[65536];
	size_t n = 0, idx;
	json_t *v;
	FILE *p;

	shell_quote(qp, sizeof(qp), prompt);
	/* ORCD_TEST_BACKEND=cuda runs the same goldens on the GPU */
	const char *backend = getenv("ORCD_TEST_BACKEND") ? getenv("ORCD_TEST_BACKEND") : "cpu";

	snprintf(cmd, sizeof(cmd), "%s generate -m '%s/%s' -p %s -n %zu --temp 0 "
	    "--ids --threads %s --backend %s 2>/dev/null", bin, models_dir, model, qp,
	    json_array_size(gen), threads, backend);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (n + 1 < sizeof(out) && !feof(p)) {
		size_t r = fread(out + n, 1, sizeof(out) - 1 - n, p);
		if (r == 0)
			break;
		n += r;
	}
	out[n] = '\0';
	int st = pclose(p);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(why, whylen, "%s exited with status %d", cmd, st);
		return -1;
	}
	char *s = out;
	json_array_foreach(gen, idx, v) {
		char *end;
		long id = strtol(s, &end, 10);

		if (end == s) {
			snprintf(why, whylen, "%s / \"%s\": output ended after %zu of "
			    "%zu ids", model, prompt, idx, json_array_size(gen));
			return -1;
		}
		if (id != json_integer_value(v)) {
			snprintf(why, whylen, "%s / \"%s\" (threads %s): token %zu is "
			    "%ld, golden %lld", model, prompt, threads, idx, id,
			    (long long)json_integer_value(v));
			return -1;
		}
		s = end;
	}
	return 0;
}

static void
test_golden(void **state)
{
	char path[4096], line[65536], why[9000];
	int cases = 0, failed = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/golden.jsonl", models_dir);
	f = fopen(path, "r");
	if (f == NULL)
		skip();
	while (fgets(line, sizeof(line), f) != NULL) {
		json_error_t je;
		json_t *c = json_loads(line, 0, &je);

		if (c == NULL)
			fail_msg("golden.jsonl: %s", je.text);
		/* One thread and two: the thread split must not change results. */
		for (int t = 0; t < 2; t++) {
			if (run_case(c, t == 0 ? "1" : "2", why, sizeof(why)) != 0) {
				print_error("FAIL %s\n", why);
				failed++;
			}
		}
		cases++;
		json_decref(c);
	}
	fclose(f);
	print_message("%d golden cases checked, %d mismatches\n", cases, failed);
	assert_true(cases >= 8);
	assert_int_equal(failed, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
	};

	models_dir = test_models_dir_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
