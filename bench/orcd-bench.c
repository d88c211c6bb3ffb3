/*
 * orcd-bench: the CPU engine's prefill and decode speed on one model, in the
 * way llama-bench measures them (so bench/cpu-decode can print the two side
 * by side): pp = one forward pass over -p random prompt tokens, tg = -n
 * single-token steps after BOS; -r repetitions after one warm-up; mean and
 * standard deviation of tokens/s.  Prints one line per test:
 *   orcd pp128 t=2 avx512: 123.45 +- 1.23 tok/s
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/forward.h"
#include "cpu/quant.h"
#include "model.h"
#include "orcd.h"
#include "tokenizer.h"

static int
run_once(struct cpu_engine *e, const struct model *m, int n_prompt, int n_gen,
    double *secs, struct orcd_err *err)
{
	int n_ctx = (n_prompt > n_gen ? n_prompt : n_gen) + 1;
	struct cpu_kv kv;
	int32_t *tok = malloc((size_t)n_ctx * sizeof(*tok));
	int32_t *pos = malloc((size_t)n_ctx * sizeof(*pos));
	struct cpu_kv **kvs = malloc((size_t)n_ctx * sizeof(*kvs));
	float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
	int rc = -1;

	if (!tok || !pos || !kvs || !logits || cpu_kv_init(e, n_ctx, &kv, err) != 0)
		goto out;
	for (int i = 0; i < n_ctx; i++) {
		/* deterministic pseudo-random tokens, as llama-bench uses random ones */
		tok[i] = (int32_t)(((uint64_t)i * 2654435761u + 12345) % (uint64_t)m->hp.n_vocab);
		pos[i] = i;
		kvs[i] = &kv;
	}
	double t0 = orcd_now();
	if (n_prompt > 0) {
		struct cpu_batch b = { .n_tokens = n_prompt, .tokens = tok, .pos = pos,
		    .kv = kvs, .logits = NULL };
		if (cpu_forward(e, &b, logits, err) != 0)
			goto out_kv;
	}
	for (int i = 0; i < n_gen; i++) {
		struct cpu_batch b = { .n_tokens = 1, .tokens = &tok[i], .pos = &pos[i],
		    .kv = kvs, .logits = NULL };
		if (cpu_forward(e, &b, logits, err) != 0)
			goto out_kv;
		/* the next token is the argmax, as a greedy run would pick it */
		int best = 0;
		for (int v = 1; v < m->hp.n_vocab; v++)
			if (logits[v] > logits[best])
				best = v;
		if (i + 1 < n_ctx)
			tok[i + 1] = best;
	}
	*secs = orcd_now() - t0;
	rc = 0;
out_kv:
	cpu_kv_release(&kv);
out:
	free(tok);
	free(pos);
	free(kvs);
	free(logits);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *path = NULL;
	int n_prompt = 128, n_gen = 64, reps = 3, threads = 0;
	struct orcd_err err;
	struct model *m;
	struct cpu_engine *e;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc)
			n_prompt = atoi(argv[++i]);
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			n_gen = atoi(argv[++i]);
		else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
			threads = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: orcd-bench -m MODEL [-p N] [-n N] [-r REPS] [-t THREADS]\n");
			return 2;
		}
	}
	if (path == NULL || reps < 1 || n_prompt < 0 || n_gen < 0) {
		fprintf(stderr, "usage: orcd-bench -m MODEL [-p N] [-n N] [-r REPS] [-t THREADS]\n");
		return 2;
	}
	if (model_load(path, &m, &err) != 0 || cpu_engine_new(m, threads, &e, &err) != 0) {
		fprintf(stderr, "orcd-bench: %s\n", err.msg);
		return 1;
	}
	for (int test = 0; test < 2; test++) {
		int np = test == 0 ? n_prompt : 0, ng = test == 0 ? 0 : n_gen;
		int n = test == 0 ? np : ng;
		double sum = 0, sum2 = 0, secs;

		if (n == 0)
			continue;
		if (run_once(e, m, np, ng, &secs, &err) != 0) { /* warm-up */
			fprintf(stderr, "orcd-bench: %s\n", err.msg);
			return 1;
		}
		for (int r = 0; r < reps; r++) {
			if (run_once(e, m, np, ng, &secs, &err) != 0) {
				fprintf(stderr, "orcd-bench: %s\n", err.msg);
				return 1;
			}
			sum += n / secs;
			sum2 += (n / secs) * (n / secs);
		}
		double mean = sum / reps;
		double sd = reps > 1 ? sqrt(fmax(0.0, (sum2 - sum * mean) / (reps - 1))) : 0.0;
		printf("orcd %s%d t=%d %s: %.2f +- %.2f tok/s\n", test == 0 ? "pp" : "tg",
		    n, cpu_engine_threads(e), quant_isa(), mean, sd);
		fflush(stdout);
	}
	cpu_engine_free(e);
	model_free(m);
	return 0;
}
