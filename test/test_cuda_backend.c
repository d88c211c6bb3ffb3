/*
 * The CUDA backend end to end on a GPU (skips, exit 77, without one): load
 * a model, generate greedily through the backend interface, then check the
 * VRAM policy: every tracked allocation is device-resident, the weights
 * take exactly the model's tensor bytes (each rounded to the tracker's
 * alignment), the KV pool its slots, and after the backend is destroyed the
 * tracker is gone and cudaMemGetInfo is back at its starting value.  The
 * numbers are printed.  Greedy tokens must equal the CPU backend's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "orcd/backend.h"
#include "orcd/vram.h"
#include "cq.h"
#include "model.h"
#include "sampler.h"
#include "test_util.h"
#include "tokenizer.h"

static char model_path[4096];

struct wait {
	struct backend_step st;
	int done;
};

static void
step_done(struct cq_item *it)
{
	((struct wait *)it)->done = 1;
}

/*
 * Greedy generation of n tokens for each of n_seq sequences with the same
 * prompt, stepped together (one prompt step, then steps of n_seq single
 * tokens); sequence 0's ids go to out, and with logits != NULL each step's
 * logits rows (n_seq * n_vocab floats per step) are kept there.  Every
 * sequence must produce sequence 0's tokens.
 */
static void
generate_batch(struct backend *b, struct event_base *base, const struct model *m,
    const int32_t *prompt, int n_prompt, int n, int n_seq, int32_t *out, float *logits)
{
	struct backend_seq *seq[8];
	struct sampler_params sp;
	struct sampler *s[8];
	struct orcd_err err;
	int32_t tok[8];
	struct backend_step_seq q[8];

	assert_true(n_seq >= 1 && n_seq <= 8);
	sampler_params_default(&sp);
	sp.temperature = 0;
	for (int k = 0; k < n_seq; k++) {
		s[k] = sampler_new(&sp, m->hp.n_vocab, &err);
		assert_non_null(s[k]);
		assert_int_equal(backend_seq_new_full(b, n_prompt + n, &seq[k], &err), 0);
	}
	for (int i = 0; i < n; i++) {
		struct wait w;
		int total = 0;

		memset(&w, 0, sizeof(w));
		for (int k = 0; k < n_seq; k++) {
			memset(&q[k], 0, sizeof(q[k]));
			q[k].seq = seq[k];
			q[k].sampler = s[k];
			if (i == 0) {
				q[k].tokens = prompt;
				q[k].n_tokens = n_prompt;
				q[k].pos = 0;
			} else {
				q[k].tokens = &tok[k];
				q[k].n_tokens = 1;
				q[k].pos = n_prompt + i - 1;
			}
			total += q[k].n_tokens;
		}
		w.st.cq.fn = step_done;
		w.st.seqs = q;
		w.st.n_seqs = n_seq;
		w.st.n_tokens = total;
		if (logits != NULL)
			w.st.logits_out = logits + (size_t)i * n_seq * m->hp.n_vocab;
		assert_int_equal(b->ops->step(b, &w.st, &err), 0);
		while (!w.done)
			event_base_loop(base, EVLOOP_ONCE);
		if (w.st.status != 0)
			fail_msg("step failed: %s", w.st.err.msg);
		for (int k = 0; k < n_seq; k++) {
			tok[k] = q[k].out_token;
			if (tok[k] != q[0].out_token)
				fail_msg("step %d: sequence %d sampled %d, sequence 0 %d", i, k,
				    tok[k], q[0].out_token);
		}
		out[i] = tok[0];
	}
	for (int k = 0; k < n_seq; k++) {
		b->ops->seq_free(b, seq[k]);
		sampler_free(s[k]);
	}
}

static void
generate(struct backend *b, struct event_base *base, const struct model *m,
    const int32_t *prompt, int n_prompt, int n, int32_t *out)
{
	generate_batch(b, base, m, prompt, n_prompt, n, 1, out, NULL);
}

static uint64_t
round_up(uint64_t n)
{
	return (n + VRAM_ALIGN - 1) / VRAM_ALIGN * VRAM_ALIGN;
}

/* What the backend must upload: every weight matrix once (a tied output
 * shares token_embd) and the float copies of the norms and biases. */
static uint64_t
expected_weight_bytes(const struct model *m)
{
	const struct model_hparams *hp = &m->hp;
	uint64_t qd = (uint64_t)hp->n_head * hp->head_dim;
	uint64_t kd = (uint64_t)hp->n_head_kv * hp->head_dim;
	uint64_t sum = round_up(m->tok_embd.nbytes) + round_up((uint64_t)hp->n_embd * 4);

	if (!m->tied_output)
		sum += round_up(m->output.nbytes);
	for (int il = 0; il < hp->n_layer; il++) {
		const struct model_layer *L = &m->layers[il];

		sum += 2 * round_up((uint64_t)hp->n_embd * 4);
		if (L->bq)
			sum += round_up(qd * 4) + 2 * round_up(kd * 4);
		sum += round_up(L->wq.nbytes) + round_up(L->wk.nbytes) + round_up(L->wv.nbytes) +
		    round_up(L->wo.nbytes) + round_up(L->w_gate.nbytes) +
		    round_up(L->w_up.nbytes) + round_up(L->w_down.nbytes);
	}
	return sum;
}

static void
test_backend_residency(void **state)
{
	struct orcd_err err;
	struct model *m;
	struct event_base *base = event_base_new();
	struct cq *cq = cq_new(base, &err);
	struct backend *gpu, *cpu;
	struct backend_cuda_opts o = { .device = 0, .n_seqs = 4, .n_ctx = 256,
	    .max_step_tokens = 256, .graphs = 1 };
	size_t free0, total, free1;
	int32_t *prompt;
	size_t n_prompt;
	int32_t g[48], c[48];

	assert_int_equal(model_load(model_path, &m, &err), 0);
	assert_int_equal(tokenizer_encode(m->tok, "Once upon a time", 16, true, false, &prompt,
	    &n_prompt, &err), 0);
	/* the context is created before the baseline is read */
	assert_int_equal(vram_mem_info(&free0, &total, &err), 0);
	assert_int_equal(backend_cuda_new(m, &o, cq, &gpu, &err), 0);

	generate(gpu, base, m, prompt, (int)n_prompt, 48, g);
	assert_int_equal(backend_cpu_new(m, 2, cq, &cpu, &err), 0);
	generate(cpu, base, m, prompt, (int)n_prompt, 48, c);
	cpu->ops->destroy(cpu);
	for (int i = 0; i < 48; i++)
		assert_int_equal(g[i], c[i]);

	/* residency and accounting */
	assert_int_equal(gpu->ops->verify(gpu, &err), 0);
	struct vram_stats vs;
	vram_snapshot(backend_cuda_vram(gpu), &vs);
	uint64_t want_w = expected_weight_bytes(m);
	uint64_t kv_want = 2 * round_up((uint64_t)m->hp.n_layer * o.n_ctx * m->hp.n_head_kv *
	    m->hp.head_dim * 2 * o.n_seqs);
	print_message("tracked VRAM: weights %llu B (model tensors %llu B + norms/biases, "
	    "expected %llu), kv %llu B (expected %llu), activations %llu B, scratch %llu B, "
	    "io %llu B; total %llu B = weights + kv + activations + scratch + io; pinned host "
	    "io %llu B\n",
	    (unsigned long long)vs.purpose[VRAM_WEIGHTS].bytes,
	    (unsigned long long)m->weight_bytes, (unsigned long long)want_w,
	    (unsigned long long)vs.purpose[VRAM_KV].bytes, (unsigned long long)kv_want,
	    (unsigned long long)vs.purpose[VRAM_ACTIVATIONS].bytes,
	    (unsigned long long)vs.purpose[VRAM_SCRATCH].bytes,
	    (unsigned long long)vs.purpose[VRAM_IO].bytes,
	    (unsigned long long)vs.total.bytes, (unsigned long long)vs.pinned.bytes);
	assert_int_equal(vs.purpose[VRAM_WEIGHTS].bytes, want_w);
	assert_int_equal(vs.purpose[VRAM_KV].bytes, kv_want);
	assert_int_equal(vs.total.bytes, vs.purpose[VRAM_WEIGHTS].bytes +
	    vs.purpose[VRAM_KV].bytes + vs.purpose[VRAM_ACTIVATIONS].bytes +
	    vs.purpose[VRAM_SCRATCH].bytes + vs.purpose[VRAM_IO].bytes);
	/* after the steps, usage is what it was after load */
	assert_int_equal(vram_leaked_total(backend_cuda_vram(gpu)), 0);

	gpu->ops->destroy(gpu);
	assert_int_equal(vram_mem_info(&free1, &total, &err), 0);
	print_message("cudaMemGetInfo free: %zu B before the backend, %zu B after it was "
	    "destroyed (difference %lld B)\n", free0, free1, (long long)free1 - (long long)free0);
	/* the driver may keep a little for itself; no more than 4 MiB */
	assert_true(free1 + (4u << 20) >= free0);
	free(prompt);
	cq_free(cq);
	event_base_free(base);
	model_free(m);
}

/*
 * CUDA graphs replay exactly what eager launches compute: the same tokens
 * and bit-identical logits, for one sequence and for three stepped
 * together (whose tokens must equal the single sequence's).  The run is
 * long enough (300 positions) to cross a context bucket, i.e. to use
 * several graphs of one batch size.
 */
static void
test_graphs_match_eager(void **state)
{
	struct orcd_err err;
	struct model *m;
	struct event_base *base = event_base_new();
	struct cq *cq = cq_new(base, &err);
	struct backend *eager, *graphs;
	struct backend_cuda_opts o = { .device = 0, .n_seqs = 4, .n_ctx = 512,
	    .max_step_tokens = 256, .graphs = 0 };
	int32_t *prompt;
	size_t n_prompt;
	enum { N = 300 };
	static int32_t te[N], tg[N], tb[N];

	assert_int_equal(model_load(model_path, &m, &err), 0);
	assert_int_equal(tokenizer_encode(m->tok, "Once upon a time", 16, true, false, &prompt,
	    &n_prompt, &err), 0);
	size_t per = (size_t)N * 3 * m->hp.n_vocab;
	float *le = calloc(per, sizeof(float)), *lg = calloc(per, sizeof(float));
	assert_non_null(le);
	assert_non_null(lg);
	assert_int_equal(backend_cuda_new(m, &o, cq, &eager, &err), 0);
	o.graphs = 1;
	assert_int_equal(backend_cuda_new(m, &o, cq, &graphs, &err), 0);

	generate_batch(eager, base, m, prompt, (int)n_prompt, N, 3, te, le);
	generate_batch(graphs, base, m, prompt, (int)n_prompt, N, 3, tg, lg);
	generate_batch(graphs, base, m, prompt, (int)n_prompt, N, 1, tb, NULL);
	for (int i = 0; i < N; i++) {
		assert_int_equal(tg[i], te[i]);
		assert_int_equal(tb[i], te[i]);
	}
	size_t diff = 0;
	for (size_t i = 0; i < per; i++)
		diff += memcmp(&le[i], &lg[i], sizeof(float)) != 0;
	print_message("%d steps x 3 sequences: graph and eager logits differ in %zu of %zu "
	    "values; tokens equal, also for one sequence alone\n", N, diff, per);
	assert_int_equal(diff, 0);
	eager->ops->destroy(eager);
	graphs->ops->destroy(graphs);
	free(le);
	free(lg);
	free(prompt);
	cq_free(cq);
	event_base_free(base);
	model_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backend_residency),
		cmocka_unit_test(test_graphs_match_eager),
	};
	const char *dir = test_models_dir();
	char why[256];

	if (!backend_cuda_available(why, sizeof(why))) {
		fprintf(stderr, "SKIP: %s\n", why);
		return 77;
	}
	if (dir == NULL) {
		fprintf(stderr, "SKIP: no test models\n");
		return 77;
	}
	snprintf(model_path, sizeof(model_path), "%s/%s", dir,
	    getenv("ORCD_TEST_MODEL") ? getenv("ORCD_TEST_MODEL") : "stories260K-qwen2arch.gguf");
	if (getenv("ORCD_TEST_MODEL") && getenv("ORCD_TEST_MODEL")[0] == '/')
		snprintf(model_path, sizeof(model_path), "%s", getenv("ORCD_TEST_MODEL"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
