/*
 * Configuration (see config.h): one table describes every key, its type,
 * range and help text; files, flags and usage are all driven from it.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"

enum opt_type { OPT_STR, OPT_INT, OPT_LONG, OPT_BYTES, OPT_DOUBLE, OPT_LISTEN, OPT_LEVEL };

struct opt {
	const char *key;
	enum opt_type type;
	size_t off;
	double lo, hi;
	const char *help;
};

#define OFF(f) offsetof(struct conf, f)
static const struct opt opts[] = {
	{ "model", OPT_STR, OFF(model), 0, 0, "GGUF model file (-m)" },
	{ "listen", OPT_LISTEN, 0, 0, 0, "ADDR:PORT to listen on, repeatable (default 127.0.0.1:8080)" },
	{ "backend", OPT_STR, OFF(backend), 0, 0, "cpu or cuda (default: cuda when built and a GPU is present, else cpu)" },
	{ "threads", OPT_INT, OFF(threads), 0, 1024, "CPU engine threads (0 = all CPUs)" },
	{ "compute-nice", OPT_INT, OFF(compute_nice), -1, 19, "priority of the CPU engine's threads below the event loop: a nice value, or -1 for SCHED_IDLE (the loop preempts them at once)" },
	{ "max-connections", OPT_INT, OFF(max_connections), 1, 1000000, "open connections before new ones get 503" },
	{ "max-header-bytes", OPT_LONG, OFF(max_header_bytes), 256, 1 << 24, "request line + headers limit (431)" },
	{ "max-body-bytes", OPT_LONG, OFF(max_body_bytes), 0, 1L << 30, "request body limit (413)" },
	{ "header-timeout-ms", OPT_INT, OFF(header_timeout_ms), 1, 3600000, "time to receive the headers (408)" },
	{ "body-timeout-ms", OPT_INT, OFF(body_timeout_ms), 1, 3600000, "time to receive the body (408)" },
	{ "keepalive-timeout-ms", OPT_INT, OFF(keepalive_timeout_ms), 1, 3600000, "idle keep-alive connections are closed after this" },
	{ "write-high-watermark", OPT_LONG, OFF(write_high_watermark), 1024, 1L << 30, "unsent bytes per connection before its stream pauses" },
	{ "shutdown-grace", OPT_DOUBLE, OFF(shutdown_grace_s), 0, 3600, "seconds streams may run after SIGTERM" },
	{ "ready-file", OPT_STR, OFF(ready_file), 0, 0, "file written when the model is loaded and serving" },
	{ "log-level", OPT_LEVEL, OFF(log_level), 0, 0, "error, warn, info or debug" },
	{ "ctx-size", OPT_INT, OFF(ctx_size), 0, 1 << 24, "context per request, prompt + generated (0 = model's, capped at 4096)" },
	{ "max-batch", OPT_INT, OFF(max_batch), 1, 4096, "sequences per step" },
	{ "max-queue", OPT_INT, OFF(max_queue), 0, 1000000, "waiting requests before new ones get 429" },
	{ "prefill-chunk", OPT_INT, OFF(prefill_chunk), 1, 1 << 20, "prompt tokens per sequence per step" },
	{ "max-step-tokens", OPT_INT, OFF(max_step_tokens), 1, 1 << 20, "tokens per step over all sequences" },
	{ "default-max-tokens", OPT_INT, OFF(default_max_tokens), 1, 1 << 24, "max_tokens when a request gives none" },
	{ "deadline-min-ms", OPT_INT, OFF(deadline_min_ms), 0, 3600000, "deadlines closer than this are rejected up front (504)" },
	{ "health-interval-ms", OPT_INT, OFF(health_interval_ms), 10, 3600000, "refresh period of the cached /health snapshot" },
	{ "residency-interval", OPT_DOUBLE, OFF(residency_interval_s), 0, 86400, "seconds between re-verifications that every VRAM allocation is device-resident (0 = only at load)" },
	{ "cuda-graphs", OPT_INT, OFF(cuda_graphs), 0, 1, "CUDA backend: run decode steps (up to 64 tokens) as captured CUDA graphs (1) or launch their kernels one by one (0)" },
	{ "max-job-id-bytes", OPT_INT, OFF(max_job_id_bytes), 1, 4096, "longest accepted job_id" },
	{ "kv-memory", OPT_BYTES, OFF(kv_memory), 0, 9.0e18, "CPU backend: bytes of the paged KV pool, suffix K/M/G/T allowed (0 = 64 x 4096 positions, at most a quarter of RAM)" },
	{ "kv-block-tokens", OPT_INT, OFF(kv_block_tokens), 1, 4096, "positions per KV block (a power of two, at least 4)" },
	{ "prefix-cache", OPT_INT, OFF(prefix_cache), 0, 1, "reuse the KV blocks of prompt prefixes earlier requests computed (1) or not (0); CPU backend" },
	{ "cuda-kv-paged", OPT_INT, OFF(cuda_kv_paged), 0, 1, "CUDA backend: a paged KV pool of kv-memory bytes (1) or a slot of ctx-size positions per batch sequence (0)" },
	{ "mem-soft-limit", OPT_BYTES, OFF(mem_soft_limit), 0, 9.0e18, "tracked memory above which admission pauses (new requests get 429), 0 = none" },
	{ "mem-hard-limit", OPT_BYTES, OFF(mem_hard_limit), 0, 9.0e18, "tracked memory above which the newest requests are aborted (vram_limit), 0 = none" },
	{ "mem-snapshot-interval", OPT_DOUBLE, OFF(mem_snapshot_interval_s), 0, 86400, "seconds between memory snapshot log lines (0 = off)" },
	{ "prefill-latency-ratio", OPT_DOUBLE, OFF(prefill_latency_ratio), 0, 1000, "prompt chunks are sized so a step that carries one takes at most this many times a decode-only step (0 = only prefill-chunk and max-step-tokens bound them)" },
	{ "max-wait-ms", OPT_INT, OFF(max_wait_ms), 0, 10000, "hold a decode-only step this long for new arrivals when fewer than max-batch/4 streams run (0 = never)" },
	{ "seal", OPT_STR, OFF(seal), 0, 0, "seal file of the model (orcd seal): verified over the loaded weights before serving (doc/seal.md)" },
	{ "seal-key-file", OPT_STR, OFF(seal_key_file), 0, 0, "the seal's secret key file (mode 0600 or stricter)" },
	{ "seal-reverify", OPT_DOUBLE, OFF(seal_reverify_s), 0, 86400, "seconds between re-verifications of the seal (0 = only at load)" },
	{ "audit-log", OPT_STR, OFF(audit_log), 0, 0, "append audit events (JSON lines) to this file, or - for stderr" },
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

void
conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	c->compute_nice = -1;
	c->max_connections = 4096;
	c->max_header_bytes = 16384;
	c->max_body_bytes = 1 << 20;
	c->header_timeout_ms = 10000;
	c->body_timeout_ms = 30000;
	c->keepalive_timeout_ms = 60000;
	c->write_high_watermark = 256 * 1024;
	c->shutdown_grace_s = 5.0;
	c->log_level = LOG_INFO;
	c->max_batch = 64;
	c->max_queue = 1024;
	c->prefill_chunk = 256;
	c->max_step_tokens = 512;
	c->default_max_tokens = 128;
	c->deadline_min_ms = 5;
	c->health_interval_ms = 250;
	c->residency_interval_s = 60;
	c->cuda_graphs = 1;
	c->max_job_id_bytes = 256;
	c->kv_block_tokens = 32;
	c->mem_snapshot_interval_s = 60;
	c->prefill_latency_ratio = 1.5;
	c->prefix_cache = 1;
	c->seal_reverify_s = 300;
}

void
conf_free(struct conf *c)
{
	free(c->model);
	free(c->backend);
	free(c->ready_file);
	free(c->seal);
	free(c->seal_key_file);
	free(c->audit_log);
	for (int i = 0; i < c->n_listen; i++)
		free(c->listen[i]);
	memset(c, 0, sizeof(*c));
}

static const struct opt *
opt_find(const char *key)
{
	char norm[64];
	size_t n = strlen(key);

	if (n >= sizeof(norm))
		return NULL;
	/* file keys may use '_' where flags use '-' */
	for (size_t i = 0; i <= n; i++)
		norm[i] = key[i] == '_' ? '-' : key[i];
	for (size_t i = 0; i < N_OPTS; i++)
		if (strcmp(opts[i].key, norm) == 0)
			return &opts[i];
	return NULL;
}

int
conf_set(struct conf *c, const char *key, const char *value, struct orcd_err *err)
{
	const struct opt *o = opt_find(key);
	char *end;
	void *field;

	if (o == NULL)
		return orcd_errf(err, "unknown option '%s'", key);
	field = (char *)c + o->off;
	errno = 0;
	switch (o->type) {
	case OPT_STR: {
		char **s = field;

		free(*s);
		*s = strdup(value);
		return *s ? 0 : orcd_errf(err, "out of memory");
	}
	case OPT_LISTEN:
		if (c->n_listen >= CONF_MAX_LISTEN)
			return orcd_errf(err, "listen: at most %d addresses", CONF_MAX_LISTEN);
		if (strchr(value, ':') == NULL)
			return orcd_errf(err, "listen: '%s' is not ADDR:PORT", value);
		c->listen[c->n_listen] = strdup(value);
		if (c->listen[c->n_listen] == NULL)
			return orcd_errf(err, "out of memory");
		c->n_listen++;
		return 0;
	case OPT_LEVEL: {
		int l = log_level_parse(value);

		if (l < 0)
			return orcd_errf(err, "log-level: '%s' is not error, warn, info or debug", value);
		*(int *)field = l;
		return 0;
	}
	case OPT_INT:
	case OPT_LONG: {
		long long v = strtoll(value, &end, 10);

		if (errno != 0 || end == value || *end != '\0' || v < (long long)o->lo ||
		    v > (long long)o->hi)
			return orcd_errf(err, "%s: '%s' is not an integer in [%.0f, %.0f]",
			    o->key, value, o->lo, o->hi);
		if (o->type == OPT_INT)
			*(int *)field = (int)v;
		else
			*(long *)field = (long)v;
		return 0;
	}
	case OPT_BYTES: {
		unsigned long long v = strtoull(value, &end, 10), mul = 1;

		if (end != value && *end != '\0' && end[1] == '\0') {
			switch (*end) {
			case 'k': case 'K': mul = 1ull << 10; end++; break;
			case 'm': case 'M': mul = 1ull << 20; end++; break;
			case 'g': case 'G': mul = 1ull << 30; end++; break;
			case 't': case 'T': mul = 1ull << 40; end++; break;
			}
		}
		if (errno != 0 || end == value || *end != '\0' || value[0] == '-' ||
		    v > (unsigned long long)o->hi / mul)
			return orcd_errf(err, "%s: '%s' is not a byte count (digits with an "
			    "optional K, M, G or T suffix)", o->key, value);
		*(long *)field = (long)(v * mul);
		return 0;
	}
	case OPT_DOUBLE: {
		double v = strtod(value, &end);

		if (errno != 0 || end == value || *end != '\0' || !isfinite(v) ||
		    v < o->lo || v > o->hi)
			return orcd_errf(err, "%s: '%s' is not a number in [%g, %g]",
			    o->key, value, o->lo, o->hi);
		*(double *)field = v;
		return 0;
	}
	}
	return orcd_errf(err, "%s: bad option type", key);
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int
conf_load_file(struct conf *c, const char *path, struct orcd_err *err)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int lineno = 0;

	if (f == NULL)
		return orcd_errf(err, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		char *s, *eq, *key, *val;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			fclose(f);
			return orcd_errf(err, "%s:%d: line too long", path, lineno);
		}
		s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (eq == NULL) {
			fclose(f);
			return orcd_errf(err, "%s:%d: expected 'key = value'", path, lineno);
		}
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (strlen(val) >= 2 && val[0] == '"' && val[strlen(val) - 1] == '"') {
			val[strlen(val) - 1] = '\0';
			val++;
		}
		if (conf_set(c, key, val, err) != 0) {
			char msg[sizeof(err->msg)];

			snprintf(msg, sizeof(msg), "%s:%d", path, lineno);
			orcd_err_prefix(err, msg);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

void
conf_usage(FILE *f)
{
	fprintf(f, "usage: orcd serve [-m MODEL] [--listen ADDR:PORT ...] [--config FILE] [options]\n\n");
	fprintf(f, "  -m, --model FILE\n  -c, --config FILE           key = value lines, same keys as the flags\n");
	for (size_t i = 0; i < N_OPTS; i++) {
		if (strcmp(opts[i].key, "model") == 0)
			continue;
		fprintf(f, "      --%-24s %s\n", opts[i].key, opts[i].help);
	}
}

int
conf_parse_args(struct conf *c, int argc, char **argv, struct orcd_err *err)
{
	/* The config file first, so flags override it wherever they appear. */
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0)) {
			if (i + 1 >= argc)
				return orcd_errf(err, "%s needs a file", argv[i]);
			if (conf_load_file(c, argv[i + 1], err) != 0)
				return -1;
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			if (conf_load_file(c, argv[i] + 9, err) != 0)
				return -1;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char key[128];
		const char *val;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			conf_usage(stdout);
			return 1;
		}
		if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
			i++;
			continue;
		}
		if (strncmp(a, "--config=", 9) == 0)
			continue;
		if (strcmp(a, "-m") == 0) {
			snprintf(key, sizeof(key), "model");
		} else if (strncmp(a, "--", 2) == 0) {
			const char *eq = strchr(a, '=');
			size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);

			if (n >= sizeof(key))
				return orcd_errf(err, "unknown option '%s'", a);
			memcpy(key, a + 2, n);
			key[n] = '\0';
			if (eq != NULL) {
				if (conf_set(c, key, eq + 1, err) != 0)
					return -1;
				continue;
			}
		} else {
			return orcd_errf(err, "unexpected argument '%s'", a);
		}
		if (opt_find(key) == NULL)
			return orcd_errf(err, "unknown option '%s'", a);
		if (i + 1 >= argc)
			return orcd_errf(err, "%s needs a value", a);
		val = argv[++i];
		if (conf_set(c, key, val, err) != 0)
			return -1;
	}
	return 0;
}
