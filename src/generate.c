/*
 * `orcd generate` (see generate.h): tokenizes the prompt, runs it through the
 * CPU engine as one batch (prefill), then samples one token at a time until
 * -n tokens or an end-of-generation token, streaming text through the UTF-8
 * assembler so a character split across tokens is printed whole.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "orcd/backend.h"
#include "backend_open.h"
#include "cq.h"
#include "cpu/quant.h"
#include "generate.h"
#include "mkmodel.h"
#include "model.h"
#include "orcd.h"
#include "sampler.h"
#include "tokenizer.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: orcd generate [-m MODEL] -p PROMPT [-n N] [options]\n"
	    "\n"
	    "  -m, --model FILE      GGUF model (default: $ORCD_MODEL, else a generated\n"
	    "                        random-weight qwen2.5-0.5b q4_k_m model)\n"
	    "  -p, --prompt TEXT     prompt text (\"\" = BOS only)\n"
	    "  -f, --file FILE       read the prompt from FILE\n"
	    "  -n, --n-predict N     tokens to generate (default 64)\n"
	    "  -t, --threads N       CPU threads (default: all online CPUs)\n"
	    "  -c, --ctx N           context size (default prompt + n)\n"
	    "      --temp T          temperature (default 0.8; 0 = greedy)\n"
	    "      --top-k K         (default 40; 0 = off)\n"
	    "      --top-p P         (default 0.95; 1 = off)\n"
	    "      --min-p P         (default 0.05; 0 = off)\n"
	    "      --repeat-penalty R  (default 1.0 = off)\n"
	    "      --repeat-last-n N (default 64)\n"
	    "      --seed S          sampling seed (default 0)\n"
	    "      --ids             print generated token ids instead of text\n"
	    "      --no-bos          do not add BOS even if the model asks for it\n"
	    "      --special         parse special-token text (<|im_start|>) in the prompt\n"
	    "      --ignore-eos      do not stop at end-of-generation tokens\n"
	    "      --batch N         prompt tokens per forward pass (default 512)\n"
	    "      --backend B       cpu, cuda or auto (default: cuda when built and a GPU\n"
	    "                        is present, else cpu)\n"
	    "      --dump-logits FILE  write the logits after the prompt, one per line\n"
	    "      --cuda-graphs 0|1  CUDA: decode steps as CUDA graphs (default 1)\n"
	    "  -v, --verbose         print the model summary and prompt ids on stderr\n");
}

static int
parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "orcd generate: %s must be an integer in [%ld, %ld], "
		    "got '%s'\n", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

static int
parse_float(const char *opt, const char *s, float *out)
{
	char *end;

	errno = 0;
	*out = strtof(s, &end);
	if (errno != 0 || end == s || *end != '\0') {
		fprintf(stderr, "orcd generate: %s must be a number, got '%s'\n", opt, s);
		return -1;
	}
	return 0;
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;

	if (f == NULL)
		return NULL;
	for (;;) {
		if (n + 4096 > cap) {
			char *nb = realloc(buf, cap = cap * 2 + 8192);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

static void
mkmodel_progress(void *arg, size_t tensor, size_t n_tensors, const char *name,
    uint64_t done, uint64_t total)
{
	int *last = arg;
	int pct = total ? (int)(done * 100 / total) : 100;

	if (pct / 10 != *last / 10 || tensor + 1 == n_tensors) {
		fprintf(stderr, "\rorcd: generating default model: %3d%% (%zu/%zu "
		    "tensors)", pct, tensor + 1, n_tensors);
		*last = pct;
	}
}

int
generate_default_model(char *path, size_t len, struct orcd_err *err)
{
	const char *env = getenv("ORCD_MODEL");
	const char *cache = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char dir[PATH_MAX];
	struct stat st;
	struct mkmodel_opts o;
	const struct mkmodel_preset *p;
	int last = -1;

	if (env != NULL && *env != '\0') {
		snprintf(path, len, "%s", env);
		return 0;
	}
	if (cache != NULL && *cache != '\0')
		snprintf(dir, sizeof(dir), "%s/orcd", cache);
	else if (home != NULL && *home != '\0')
		snprintf(dir, sizeof(dir), "%s/.cache/orcd", home);
	else
		snprintf(dir, sizeof(dir), "/tmp/orcd-cache");
	if ((size_t)snprintf(path, len, "%s/qwen2.5-0.5b-q4_k_m-ascii.gguf", dir) >= len)
		return orcd_errf(err, "default model path is too long");
	if (stat(path, &st) == 0) {
		fprintf(stderr, "orcd: no --model given; using the generated "
		    "random-weight model %s\n", path);
		return 0;
	}

	/* mkdir -p of the cache directory */
	for (char *s = dir + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		mkdir(dir, 0755);
		*s = '/';
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return orcd_errf(err, "cannot create %s: %s", dir, strerror(errno));

	p = mkmodel_preset_find("qwen2.5-0.5b");
	if (p == NULL)
		return orcd_errf(err, "model generator has no qwen2.5-0.5b preset");
	mkmodel_opts_init(&o, p);
	o.mix = MKMODEL_MIX_Q4_K_M;
	o.seed = 1;
	o.ascii_output = true;
	o.progress = mkmodel_progress;
	o.progress_arg = &last;
	fprintf(stderr, "orcd: no --model given; generating a random-weight "
	    "qwen2.5-0.5b q4_k_m model (real shapes, random weights: the text is "
	    "gibberish) at %s (one time)\n", path);
	if (mkmodel_write(&o, path, err) != 0)
		return -1;
	fprintf(stderr, "\n");
	return 0;
}

struct gen_opts {
	const char *model;
	char *prompt;
	size_t prompt_len;
	long n_predict;
	long threads;
	long n_ctx;
	long batch;
	bool ids, no_bos, special, ignore_eos, verbose;
	const char *backend;
	const char *dump_logits;
	int cuda_graphs;
	struct sampler_params sp;
};

static int
parse_args(int argc, char **argv, struct gen_opts *o)
{
	enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_REP, O_REPN, O_SEED,
	    O_IDS, O_NOBOS, O_SPECIAL, O_IGNORE, O_BATCH, O_BACKEND, O_DUMP, O_GRAPHS };
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "file", required_argument, NULL, 'f' },
		{ "n-predict", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 't' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "temp", required_argument, NULL, O_TEMP },
		{ "top-k", required_argument, NULL, O_TOPK },
		{ "top-p", required_argument, NULL, O_TOPP },
		{ "min-p", required_argument, NULL, O_MINP },
		{ "repeat-penalty", required_argument, NULL, O_REP },
		{ "repeat-last-n", required_argument, NULL, O_REPN },
		{ "seed", required_argument, NULL, O_SEED },
		{ "ids", no_argument, NULL, O_IDS },
		{ "no-bos", no_argument, NULL, O_NOBOS },
		{ "special", no_argument, NULL, O_SPECIAL },
		{ "ignore-eos", no_argument, NULL, O_IGNORE },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "backend", required_argument, NULL, O_BACKEND },
		{ "dump-logits", required_argument, NULL, O_DUMP },
		{ "cuda-graphs", required_argument, NULL, O_GRAPHS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long v;
	int c;

	memset(o, 0, sizeof(*o));
	o->n_predict = 64;
	o->batch = 512;
	o->cuda_graphs = 1;
	sampler_params_default(&o->sp);
	optind = 1;
	while ((c = getopt_long(argc, argv, "m:p:f:n:t:c:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'p':
			free(o->prompt);
			o->prompt = strdup(optarg);
			o->prompt_len = strlen(optarg);
			break;
		case 'f':
			free(o->prompt);
			o->prompt = read_file(optarg, &o->prompt_len);
			if (o->prompt == NULL) {
				fprintf(stderr, "orcd generate: %s: %s\n", optarg,
				    strerror(errno));
				return -1;
			}
			break;
		case 'n': if (parse_int("-n", optarg, 0, 1 << 24, &o->n_predict)) return -1; break;
		case 't': if (parse_int("--threads", optarg, 1, 1024, &o->threads)) return -1; break;
		case 'c': if (parse_int("--ctx", optarg, 1, 1 << 24, &o->n_ctx)) return -1; break;
		case O_BATCH: if (parse_int("--batch", optarg, 1, 65536, &o->batch)) return -1; break;
		case O_TEMP: if (parse_float("--temp", optarg, &o->sp.temperature)) return -1; break;
		case O_TOPK: if (parse_int("--top-k", optarg, 0, INT_MAX, &v)) return -1; o->sp.top_k = (int)v; break;
		case O_TOPP: if (parse_float("--top-p", optarg, &o->sp.top_p)) return -1; break;
		case O_MINP: if (parse_float("--min-p", optarg, &o->sp.min_p)) return -1; break;
		case O_REP: if (parse_float("--repeat-penalty", optarg, &o->sp.repeat_penalty)) return -1; break;
		case O_REPN: if (parse_int("--repeat-last-n", optarg, 0, INT_MAX, &v)) return -1; o->sp.repeat_last_n = (int)v; break;
		case O_SEED: if (parse_int("--seed", optarg, 0, LONG_MAX, &v)) return -1; o->sp.seed = (uint64_t)v; break;
		case O_IDS: o->ids = true; break;
		case O_BACKEND: o->backend = optarg; break;
		case O_DUMP: o->dump_logits = optarg; break;
		case O_GRAPHS: if (parse_int("--cuda-graphs", optarg, 0, 1, &v)) return -1; o->cuda_graphs = (int)v; break;
		case O_NOBOS: o->no_bos = true; break;
		case O_SPECIAL: o->special = true; break;
		case O_IGNORE: o->ignore_eos = true; break;
		case 'v': o->verbose = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "orcd generate: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	if (o->prompt == NULL) {
		fprintf(stderr, "orcd generate: no prompt: give -p TEXT or -f FILE\n");
		usage(stderr);
		return -1;
	}
	return 0;
}

/* Runs one step through the backend and waits for its completion (this
 * command has no other work, so it simply runs the event loop). */
struct gen_wait {
	struct backend_step st;
	bool done;
};

static void
gen_step_done(struct cq_item *item)
{
	((struct gen_wait *)item)->done = true;
}

static int
gen_step(struct backend *b, struct event_base *base, struct backend_step_seq *q,
    float *logits_out, struct orcd_err *err)
{
	struct gen_wait w;

	memset(&w, 0, sizeof(w));
	w.st.logits_out = logits_out;
	w.st.cq.fn = gen_step_done;
	w.st.seqs = q;
	w.st.n_seqs = 1;
	w.st.n_tokens = q->n_tokens;
	if (b->ops->step(b, &w.st, err) != 0)
		return -1;
	while (!w.done)
		event_base_loop(base, EVLOOP_ONCE);
	if (w.st.status != 0) {
		*err = w.st.err;
		return -1;
	}
	return 0;
}

int
generate_main(int argc, char **argv)
{
	struct gen_opts o;
	struct orcd_err err;
	struct model *m = NULL;
	struct event_base *base = NULL;
	struct cq *cq = NULL;
	struct backend *b = NULL;
	struct backend_seq *seq = NULL;
	struct sampler *s = NULL;
	struct tokenizer_utf8 u8;
	int32_t *ids = NULL;
	size_t n_ids = 0;
	char model_path[PATH_MAX];
	int rc = 1, n_gen = 0;
	double t0, t_load, t_prompt = 0, t_gen = 0;

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	if (sampler_params_validate(&o.sp, &err) != 0) {
		fprintf(stderr, "orcd generate: %s\n", err.msg);
		free(o.prompt);
		return 2;
	}
	if (o.model == NULL) {
		if (generate_default_model(model_path, sizeof(model_path), &err) != 0) {
			fprintf(stderr, "orcd generate: %s\n", err.msg);
			goto out;
		}
		o.model = model_path;
	}

	t0 = orcd_now();
	if (model_load(o.model, &m, &err) != 0) {
		fprintf(stderr, "orcd generate: %s\n", err.msg);
		goto out;
	}
	if (tokenizer_encode(m->tok, o.prompt, o.prompt_len,
	    !o.no_bos, o.special, &ids, &n_ids, &err) != 0) {
		fprintf(stderr, "orcd generate: %s\n", err.msg);
		goto out;
	}
	if (n_ids == 0) {
		/* An empty prompt with no BOS: start from BOS anyway, or fail. */
		if (tokenizer_bos(m->tok) < 0) {
			fprintf(stderr, "orcd generate: the prompt is empty and the "
			    "model has no BOS token to start from\n");
			goto out;
		}
		ids = malloc(sizeof(*ids));
		ids[0] = tokenizer_bos(m->tok);
		n_ids = 1;
	}
	long n_ctx = o.n_ctx > 0 ? o.n_ctx : (long)n_ids + o.n_predict;
	if ((long)n_ids >= n_ctx) {
		fprintf(stderr, "orcd generate: the prompt has %zu tokens, the "
		    "context only %ld\n", n_ids, n_ctx);
		goto out;
	}

	struct backend_open_opts bo;
	backend_open_opts_init(&bo);
	bo.name = o.backend;
	bo.cuda_graphs = o.cuda_graphs;
	bo.threads = (int)o.threads;
	bo.n_seqs = 1;
	bo.n_ctx = (int)n_ctx;
	bo.max_step_tokens = (int)(o.batch < n_ctx ? o.batch : n_ctx);
	if ((base = event_base_new()) == NULL || (cq = cq_new(base, &err)) == NULL ||
	    backend_open(m, &bo, cq, &b, &err) != 0 ||
	    backend_seq_new_full(b, (int)n_ctx, &seq, &err) != 0 ||
	    (s = sampler_new(&o.sp, m->hp.n_vocab, &err)) == NULL) {
		fprintf(stderr, "orcd generate: %s\n", base == NULL ? "cannot create the event "
		    "loop" : err.msg);
		goto out;
	}
	t_load = orcd_now() - t0;
	if (o.verbose) {
		char desc[512];

		model_describe(m, desc, sizeof(desc));
		fprintf(stderr, "orcd: %s\norcd: loaded in %.3f s, backend %s, %s CPU kernels\n",
		    desc, t_load, b->ops->name, quant_isa());
		fprintf(stderr, "orcd: prompt ids (%zu):", n_ids);
		for (size_t i = 0; i < n_ids; i++)
			fprintf(stderr, " %d", ids[i]);
		fprintf(stderr, "\n");
	}
	for (size_t i = 0; i < n_ids; i++)
		sampler_accept(s, ids[i]);

	/* Prefill in chunks of --batch tokens; the last one samples. */
	struct backend_step_seq q;
	float *first_logits = NULL;
	if (o.dump_logits != NULL &&
	    (first_logits = malloc((size_t)m->hp.n_vocab * sizeof(float))) == NULL) {
		fprintf(stderr, "orcd generate: out of memory\n");
		goto out;
	}
	t0 = orcd_now();
	for (size_t done = 0; done < n_ids;) {
		size_t n = n_ids - done < (size_t)o.batch ? n_ids - done : (size_t)o.batch;

		memset(&q, 0, sizeof(q));
		q.seq = seq;
		q.tokens = ids + done;
		q.n_tokens = (int)n;
		q.pos = (int)done;
		q.sampler = done + n == n_ids ? s : NULL;
		if (gen_step(b, base, &q, q.sampler && o.dump_logits ? first_logits : NULL,
		    &err) != 0) {
			fprintf(stderr, "orcd generate: %s\n", err.msg);
			goto out;
		}
		done += n;
	}
	t_prompt = orcd_now() - t0;
	if (first_logits != NULL) {
		FILE *lf = fopen(o.dump_logits, "w");

		if (lf == NULL) {
			fprintf(stderr, "orcd generate: %s: %s\n", o.dump_logits, strerror(errno));
			free(first_logits);
			goto out;
		}
		for (int i = 0; i < m->hp.n_vocab; i++)
			fprintf(lf, "%.9g\n", (double)first_logits[i]);
		fclose(lf);
		free(first_logits);
	}

	tokenizer_utf8_init(&u8);
	t0 = orcd_now();
	int32_t tok = q.out_token;
	for (long i = 0; i < o.n_predict; i++) {
		size_t plen;
		const char *piece;

		if (!o.ignore_eos && tokenizer_is_eog(m->tok, tok))
			break;
		n_gen++;
		sampler_accept(s, tok);
		if (o.ids) {
			printf(i == 0 ? "%d" : " %d", tok);
		} else {
			char out[TOKENIZER_UTF8_OUT_MAX(512)];

			piece = tokenizer_piece(m->tok, tok, &plen);
			while (plen > 0) {
				size_t chunk = plen > 512 ? 512 : plen;
				size_t w = tokenizer_utf8_feed(&u8, piece, chunk, out);

				fwrite(out, 1, w, stdout);
				piece += chunk;
				plen -= chunk;
			}
		}
		fflush(stdout);
		if (i + 1 == o.n_predict || (long)n_ids + i + 1 >= n_ctx)
			break;
		memset(&q, 0, sizeof(q));
		q.seq = seq;
		q.tokens = &tok;
		q.n_tokens = 1;
		q.pos = (int)(n_ids + (size_t)i);
		q.sampler = s;
		if (gen_step(b, base, &q, NULL, &err) != 0) {
			fprintf(stderr, "\norcd generate: %s\n", err.msg);
			goto out;
		}
		tok = q.out_token;
	}
	t_gen = orcd_now() - t0;
	if (!o.ids) {
		char out[4];
		size_t w = tokenizer_utf8_flush(&u8, out);

		fwrite(out, 1, w, stdout);
	}
	printf("\n");
	fflush(stdout);
	fprintf(stderr, "orcd: prompt %zu tokens in %.3f s (%.1f tokens/s), "
	    "generated %d tokens in %.3f s (%.1f tokens/s), backend %s\n", n_ids, t_prompt,
	    t_prompt > 0 ? (double)n_ids / t_prompt : 0.0, n_gen, t_gen,
	    t_gen > 0 && n_gen > 1 ? (double)(n_gen - 1) / t_gen : 0.0, b->ops->name);
	rc = 0;
out:
	free(o.prompt);
	free(ids);
	sampler_free(s);
	if (b != NULL) {
		b->ops->seq_free(b, seq);
		b->ops->destroy(b);
	}
	cq_free(cq);
	if (base != NULL)
		event_base_free(base);
	model_free(m);
	return rc;
}
