/*
 * orcd-mkmodel: writes a synthetic GGUF model (real shapes, random weights,
 * a complete tokenizer) for tests and benchmarks; see orcd-mkmodel(1).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mkmodel.h"

/* OUT.partial, removed if the run is interrupted (unlink is
 * async-signal-safe). */
static char partial_path[4096];

static void
on_signal(int sig)
{
	if (partial_path[0] != '\0')
		unlink(partial_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: orcd-mkmodel --preset NAME -o OUT.gguf [--quant MIX] [--seed N]\n"
	    "                    [--ascii-output] [--threads N] [--n-layer N] [--ctx N]\n"
	    "                    [--chat-template chatml|llama2|none] [--plan] [--quiet]\n"
	    "       orcd-mkmodel --list-presets\n"
	    "\n"
	    "  -p, --preset NAME      model shape (see --list-presets)\n"
	    "  -q, --quant MIX        f32, f16 (default), bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k\n"
	    "  -o, --output FILE      where to write the model\n"
	    "  -s, --seed N           weight seed (default 1)\n"
	    "  -a, --ascii-output     make greedy output printable ASCII\n"
	    "  -t, --threads N        worker threads (default: online CPUs)\n"
	    "  -L, --n-layer N        override the number of layers\n"
	    "  -c, --ctx N            override the context length\n"
	    "      --chat-template T  chatml, llama2 or none (default: the preset's)\n"
	    "      --plan             print the tensors, their types and sizes; write nothing\n"
	    "      --quiet            no progress output\n"
	    "      --list-presets     list the presets and exit\n"
	    "  -h, --help             this help\n");
}

static int
parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "orcd-mkmodel: %s: '%s' is not a number in [%" PRIu64 ", %" PRIu64 "]\n",
		    opt, s, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static void
list_presets(void)
{
	const struct mkmodel_preset *p;
	size_t i;

	printf("%-14s %-6s %6s %5s %5s %4s %6s %7s %6s  %s\n", "preset", "arch", "n_embd", "layer",
	    "heads", "kv", "n_ff", "vocab", "ctx", "description");
	for (i = 0; (p = mkmodel_preset_at(i)) != NULL; i++)
		printf("%-14s %-6s %6u %5u %5u %4u %6u %7u %6u  %s\n", p->name, p->shape.arch,
		    p->shape.n_embd, p->shape.n_layer, p->shape.n_head, p->shape.n_head_kv,
		    p->shape.n_ff, p->shape.n_vocab, p->shape.n_ctx, p->desc);
}

static int
print_plan(const struct mkmodel_opts *o)
{
	struct mkmodel_plan plan;
	struct orcd_err err = { { 0 } };
	size_t counts[ORCD_DTYPE_COUNT] = { 0 }, i;
	uint64_t bytes[ORCD_DTYPE_COUNT] = { 0 };

	if (mkmodel_plan(o, &plan, &err) != 0) {
		fprintf(stderr, "orcd-mkmodel: %s\n", err.msg);
		return -1;
	}
	for (i = 0; i < plan.n; i++) {
		const struct mkmodel_tensor *t = &plan.t[i];

		if (t->n_dims == 1)
			printf("%-28s %-5s %8" PRIu64 "          %12" PRIu64 "\n", t->name,
			    dtype_name(t->type), t->ne[0], t->nbytes);
		else
			printf("%-28s %-5s %8" PRIu64 " x %6" PRIu64 " %12" PRIu64 "\n", t->name,
			    dtype_name(t->type), t->ne[0], t->ne[1], t->nbytes);
		counts[t->type]++;
		bytes[t->type] += t->nbytes;
	}
	printf("%zu tensors, %.1f MiB of data (general.file_type %u)\n", plan.n,
	    (double)plan.data_bytes / (1 << 20), mkmodel_mix_file_type(o->mix));
	for (i = 0; i < ORCD_DTYPE_COUNT; i++) {
		if (counts[i] > 0)
			printf("  %-5s %4zu tensors %10.1f MiB\n", dtype_name((int)i), counts[i],
			    (double)bytes[i] / (1 << 20));
	}
	mkmodel_plan_free(&plan);
	return 0;
}

struct progress_state {
	bool tty;
	double start;
	double last;
	int last_decile;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
progress(void *arg, size_t tensor, size_t n_tensors, const char *name, uint64_t done,
    uint64_t total)
{
	struct progress_state *ps = arg;
	double t = now_s();
	int decile = total > 0 ? (int)(done * 10 / total) : 10;

	if (ps->tty) {
		/* Redraw at most five times a second, and at the end. */
		if (t - ps->last < 0.2 && done < total)
			return;
		ps->last = t;
		fprintf(stderr, "\rorcd-mkmodel: tensor %zu/%zu %-28s %8.1f / %.1f MB", tensor + 1,
		    n_tensors, name, (double)done / 1e6, (double)total / 1e6);
		if (done == total)
			fputc('\n', stderr);
	} else if (decile != ps->last_decile) {
		ps->last_decile = decile;
		fprintf(stderr, "orcd-mkmodel: tensor %zu/%zu %s, %.1f / %.1f MB (%d%%, %.1f s)\n",
		    tensor + 1, n_tensors, name, (double)done / 1e6, (double)total / 1e6,
		    decile * 10, t - ps->start);
	}
}

int
main(int argc, char **argv)
{
	enum { OPT_PLAN = 256, OPT_QUIET, OPT_LIST, OPT_TEMPLATE };
	static const struct option longopts[] = {
		{ "preset", required_argument, NULL, 'p' },
		{ "quant", required_argument, NULL, 'q' },
		{ "output", required_argument, NULL, 'o' },
		{ "seed", required_argument, NULL, 's' },
		{ "ascii-output", no_argument, NULL, 'a' },
		{ "threads", required_argument, NULL, 't' },
		{ "n-layer", required_argument, NULL, 'L' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "chat-template", required_argument, NULL, OPT_TEMPLATE },
		{ "plan", no_argument, NULL, OPT_PLAN },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "list-presets", no_argument, NULL, OPT_LIST },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const struct mkmodel_preset *preset = NULL;
	struct mkmodel_opts o;
	struct orcd_err err = { { 0 } };
	struct progress_state ps = { 0 };
	const char *preset_name = NULL, *out = NULL, *mix_name = "f16", *tmpl_name = NULL;
	uint64_t seed = 1, threads = 0, n_layer = 0, n_ctx = 0;
	bool ascii = false, plan = false, quiet = false;
	double t0;
	int c;

	while ((c = getopt_long(argc, argv, "p:q:o:s:at:L:c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': preset_name = optarg; break;
		case 'q': mix_name = optarg; break;
		case 'o': out = optarg; break;
		case 's':
			if (parse_u64("--seed", optarg, 0, UINT64_MAX, &seed) != 0)
				return 2;
			break;
		case 'a': ascii = true; break;
		case 't':
			if (parse_u64("--threads", optarg, 1, 256, &threads) != 0)
				return 2;
			break;
		case 'L':
			if (parse_u64("--n-layer", optarg, 1, 1000, &n_layer) != 0)
				return 2;
			break;
		case 'c':
			if (parse_u64("--ctx", optarg, 1, UINT32_MAX, &n_ctx) != 0)
				return 2;
			break;
		case OPT_TEMPLATE: tmpl_name = optarg; break;
		case OPT_PLAN: plan = true; break;
		case OPT_QUIET: quiet = true; break;
		case OPT_LIST:
			list_presets();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "orcd-mkmodel: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (preset_name == NULL) {
		fprintf(stderr, "orcd-mkmodel: --preset is required (see --list-presets)\n");
		return 2;
	}
	preset = mkmodel_preset_find(preset_name);
	if (preset == NULL) {
		fprintf(stderr, "orcd-mkmodel: unknown preset '%s' (see --list-presets)\n", preset_name);
		return 2;
	}
	mkmodel_opts_init(&o, preset);
	if (mkmodel_mix_parse(mix_name, &o.mix, &err) != 0) {
		fprintf(stderr, "orcd-mkmodel: --quant: %s\n", err.msg);
		return 2;
	}
	if (tmpl_name != NULL) {
		o.chat_template = mkmodel_chat_template(tmpl_name);
		if (o.chat_template == NULL) {
			fprintf(stderr, "orcd-mkmodel: --chat-template: unknown template '%s' "
			    "(chatml, llama2, none)\n", tmpl_name);
			return 2;
		}
	}
	o.seed = seed;
	o.ascii_output = ascii;
	o.n_threads = (int)threads;
	if (n_layer > 0)
		o.shape.n_layer = (uint32_t)n_layer;
	if (n_ctx > 0)
		o.shape.n_ctx = (uint32_t)n_ctx;
	if (mkmodel_shape_check(&o.shape, &err) != 0) {
		fprintf(stderr, "orcd-mkmodel: %s\n", err.msg);
		return 2;
	}
	if (plan)
		return print_plan(&o) == 0 ? 0 : 1;
	if (out == NULL) {
		fprintf(stderr, "orcd-mkmodel: -o OUT.gguf is required\n");
		return 2;
	}

	snprintf(partial_path, sizeof(partial_path), "%s.partial", out);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);

	ps.tty = isatty(STDERR_FILENO);
	ps.start = t0 = now_s();
	ps.last_decile = -1;
	if (!quiet) {
		o.progress = progress;
		o.progress_arg = &ps;
		fprintf(stderr, "orcd-mkmodel: %s %s, %u layers, seed %" PRIu64 "%s -> %s\n",
		    preset->name, mkmodel_mix_name(o.mix), o.shape.n_layer, seed,
		    ascii ? ", ASCII output" : "", out);
	}
	if (mkmodel_write(&o, out, &err) != 0) {
		fprintf(stderr, "orcd-mkmodel: %s\n", err.msg);
		return 1;
	}
	if (!quiet)
		fprintf(stderr, "orcd-mkmodel: wrote %s in %.1f s\n", out, now_s() - t0);
	return 0;
}
