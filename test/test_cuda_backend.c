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

/* Greedy generation of n tokens through backend b; returns the ids. */
static void
generate(struct backend *b, struct event_base *base, const struct model *m,
    const int32_t *prompt, int n_prompt, int n, int32_t *out)
{
	struct backend_seq *seq;
	struct sampler_params sp;
	struct sampler *s;
	struct orcd_err err;
	int32_t tok;

	sampler_params_default(&sp);
	sp.temperature = 0;
	s = sampler_new(&sp, m->hp.n_vocab, &err);
	assert_non_null(s);
	assert_int_equal(b->ops->seq_new(b, n_prompt + n, &seq, &err), 0);
	for (int i = 0; i < n; i++) {
		struct backend_step_seq q = { .seq = seq, .sampler = s };
		struct wait w;

		memset(&w, 0, sizeof(w));
		if (i == 0) {
			q.tokens = prompt;
			q.n_tokens = n_prompt;
			q.pos = 0;
		} else {
			q.tokens = &tok;
			q.n_tokens = 1;
			q.pos = n_prompt + i - 1;
		}
		w.st.cq.fn = step_done;
		w.st.seqs = &q;
		w.st.n_seqs = 1;
		w.st.n_tokens = q.n_tokens;
		assert_int_equal(b->ops->step(b, &w.st, &err), 0);
		while (!w.done)
			event_base_loop(base, EVLOOP_ONCE);
		if (w.st.status != 0)
			fail_msg("step failed: %s", w.st.err.msg);
		tok = q.out_token;
		out[i] = tok;
	}
	b->ops->seq_free(b, seq);
	sampler_free(s);
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
	    .max_step_tokens = 256 };
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backend_residency),
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
