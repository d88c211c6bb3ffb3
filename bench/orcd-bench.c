/*
 * orcd-bench: prefill and decode speed of one model on a backend (cpu or
 * cuda), measured the way llama-bench measures them, so bench/cpu-decode
 * and bench/gpu-compare.sh can print both side by side:
 *   pp N  one step of N pseudo-random prompt tokens (one sequence, the last
 *         token's logits sampled greedily, as llama-bench computes them);
 *   tg N  N single-token steps after one start token, each feeding the
 *         greedy token of the step before;
 *   with -B K (K > 1) also batched decode: K sequences stepped together,
 *         N steps, K*N tokens.
 * -r repetitions after one warm-up; mean and standard deviation of tok/s.
 * Everything runs through the backend interface the server uses (steps,
 * completions through the event loop), so the numbers include it.  One
 * line per test:
 *   orcd pp512 cuda: 12345.67 +- 12.34 tok/s
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "backend_open.h"
#include "cpu/quant.h"
#include "cq.h"
#include "model.h"
#include "orcd.h"
#include "sampler.h"

struct bench {
	struct backend *b;
	struct event_base *base;
	const struct model *m;
	struct sampler *greedy[64];
};

struct wait {
	struct backend_step st;
	int done;
};

static void
step_done(struct cq_item *it)
{
	((struct wait *)it)->done = 1;
}

static int
step(struct bench *B, struct backend_step_seq *q, int n_seq, struct orcd_err *err)
{
	struct wait w;

	memset(&w, 0, sizeof(w));
	w.st.cq.fn = step_done;
	w.st.seqs = q;
	w.st.n_seqs = n_seq;
	for (int i = 0; i < n_seq; i++)
		w.st.n_tokens += q[i].n_tokens;
	if (B->b->ops->step(B->b, &w.st, err) != 0)
		return -1;
	while (!w.done)
		event_base_loop(B->base, EVLOOP_ONCE);
	if (w.st.status != 0) {
		*err = w.st.err;
		return -1;
	}
	return 0;
}

/* deterministic pseudo-random tokens, as llama-bench uses random ones */
static int32_t
rand_token(const struct model *m, int i)
{
	return (int32_t)(((uint64_t)i * 2654435761u + 12345) % (uint64_t)m->hp.n_vocab);
}

/* One run: n_prompt prompt tokens (0: none), then n_gen decode steps of
 * n_seq sequences; the time of the measured part only. */
static int
run_once(struct bench *B, int n_prompt, int n_gen, int n_seq, double *secs,
    struct orcd_err *err)
{
	struct backend_seq *seqs[64];
	struct backend_step_seq q[64];
	int32_t *ptok = NULL, tok[64];
	int n_ctx = n_prompt + n_gen + 1, rc = -1, made = 0;

	for (; made < n_seq; made++)
		if (backend_seq_new_full(B->b, n_ctx, &seqs[made], err) != 0)
			goto out;
	if (n_prompt > 0) {
		if ((ptok = malloc((size_t)n_prompt * sizeof(*ptok))) == NULL) {
			orcd_errf(err, "out of memory");
			goto out;
		}
		for (int i = 0; i < n_prompt; i++)
			ptok[i] = rand_token(B->m, i);
		memset(q, 0, sizeof(q[0]));
		q[0].seq = seqs[0];
		q[0].tokens = ptok;
		q[0].n_tokens = n_prompt;
		q[0].sampler = B->greedy[0];
		double t0 = orcd_now();
		if (step(B, q, 1, err) != 0)
			goto out;
		*secs = orcd_now() - t0;
		rc = 0;
		goto out;
	}
	for (int k = 0; k < n_seq; k++)
		tok[k] = rand_token(B->m, k);
	double t0 = orcd_now();
	for (int i = 0; i < n_gen; i++) {
		for (int k = 0; k < n_seq; k++) {
			memset(&q[k], 0, sizeof(q[k]));
			q[k].seq = seqs[k];
			q[k].tokens = &tok[k];
			q[k].n_tokens = 1;
			q[k].pos = i;
			q[k].sampler = B->greedy[k];
		}
		if (step(B, q, n_seq, err) != 0)
			goto out;
		for (int k = 0; k < n_seq; k++)
			tok[k] = q[k].out_token;
	}
	*secs = orcd_now() - t0;
	rc = 0;
out:
	for (int k = 0; k < made; k++)
		B->b->ops->seq_free(B->b, seqs[k]);
	free(ptok);
	return rc;
}

static int
bench_test(struct bench *B, const char *label, int np, int ng, int n_seq, int reps,
    const char *be)
{
	struct orcd_err err;
	double sum = 0, sum2 = 0, secs = 0;
	int n = np > 0 ? np : ng * n_seq;

	if (run_once(B, np, ng, n_seq, &secs, &err) != 0) { /* warm-up */
		fprintf(stderr, "orcd-bench: %s\n", err.msg);
		return -1;
	}
	for (int r = 0; r < reps; r++) {
		if (run_once(B, np, ng, n_seq, &secs, &err) != 0) {
			fprintf(stderr, "orcd-bench: %s\n", err.msg);
			return -1;
		}
		sum += n / secs;
		sum2 += (n / secs) * (n / secs);
	}
	double mean = sum / reps;
	double sd = reps > 1 ? sqrt(fmax(0.0, (sum2 - sum * mean) / (reps - 1))) : 0.0;
	printf("orcd %s %s: %.2f +- %.2f tok/s\n", label, be, mean, sd);
	fflush(stdout);
	return 0;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: orcd-bench -m MODEL [-p N] [-n N] [-B SEQS] [-r REPS] [-t THREADS]\n"
	    "                  [--backend cpu|cuda|auto] [--cuda-graphs 0|1]\n");
}

int
main(int argc, char **argv)
{
	enum { O_BACKEND = 256, O_GRAPHS };
	static const struct option longopts[] = {
		{ "backend", required_argument, NULL, O_BACKEND },
		{ "cuda-graphs", required_argument, NULL, O_GRAPHS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL, *backend = NULL;
	int n_prompt = 128, n_gen = 64, reps = 3, threads = 0, n_batch = 1, graphs = 1, c;
	struct orcd_err err;
	struct model *m;
	struct bench B;
	struct cq *cq;
	struct backend_open_opts bo;
	struct sampler_params sp;
	char label[64];
	int rc = 0;

	while ((c = getopt_long(argc, argv, "m:p:n:r:t:B:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': path = optarg; break;
		case 'p': n_prompt = atoi(optarg); break;
		case 'n': n_gen = atoi(optarg); break;
		case 'r': reps = atoi(optarg); break;
		case 't': threads = atoi(optarg); break;
		case 'B': n_batch = atoi(optarg); break;
		case O_BACKEND: backend = optarg; break;
		case O_GRAPHS: graphs = atoi(optarg) != 0; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (path == NULL || optind != argc || reps < 1 || n_prompt < 0 || n_gen < 0 ||
	    n_batch < 1 || n_batch > 64) {
		usage(stderr);
		return 2;
	}
	memset(&B, 0, sizeof(B));
	if (model_load(path, &m, &err) != 0) {
		fprintf(stderr, "orcd-bench: %s\n", err.msg);
		return 1;
	}
	B.m = m;
	backend_open_opts_init(&bo);
	bo.name = backend;
	bo.threads = threads;
	bo.n_seqs = n_batch;
	bo.n_ctx = (n_prompt > n_gen ? n_prompt : n_gen) + 2;
	bo.max_step_tokens = n_prompt > n_batch ? n_prompt : n_batch;
	bo.cuda_graphs = graphs;
	sampler_params_default(&sp);
	sp.temperature = 0;
	if ((B.base = event_base_new()) == NULL || (cq = cq_new(B.base, &err)) == NULL ||
	    backend_open(m, &bo, cq, &B.b, &err) != 0) {
		fprintf(stderr, "orcd-bench: %s\n", err.msg);
		return 1;
	}
	for (int k = 0; k < n_batch; k++)
		if ((B.greedy[k] = sampler_new(&sp, m->hp.n_vocab, &err)) == NULL) {
			fprintf(stderr, "orcd-bench: %s\n", err.msg);
			return 1;
		}
	const char *be = B.b->ops->name;
	char bename[64];
	if (strcmp(be, "cpu") == 0)
		snprintf(bename, sizeof(bename), "cpu %s", quant_isa());
	else
		snprintf(bename, sizeof(bename), "%s%s", be, graphs ? "" : " (no graphs)");
	if (n_prompt > 0) {
		snprintf(label, sizeof(label), "pp%d", n_prompt);
		rc |= bench_test(&B, label, n_prompt, 0, 1, reps, bename);
	}
	if (n_gen > 0) {
		snprintf(label, sizeof(label), "tg%d", n_gen);
		rc |= bench_test(&B, label, 0, n_gen, 1, reps, bename);
		if (n_batch > 1) {
			snprintf(label, sizeof(label), "tg%dx%d", n_gen, n_batch);
			rc |= bench_test(&B, label, 0, n_gen, n_batch, reps, bename);
		}
	}
	for (int k = 0; k < n_batch; k++)
		sampler_free(B.greedy[k]);
	B.b->ops->destroy(B.b);
	cq_free(cq);
	event_base_free(B.base);
	model_free(m);
	return rc != 0;
}
