/*
 * `orcd seal -m MODEL --key-file K [--shard-id ID] -o MODEL.seal` digests a
 * GGUF file's tensor data on the CPU and writes a signed seal file;
 * `orcd verify -m MODEL --seal MODEL.seal --key-file K` recomputes the
 * digest and reports OK or exactly what differs.  Both print progress for
 * large models and can append an audit event (--audit-log).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "gguf.h"
#include "orcd.h"
#include "seal.h"
#include "seal_cmd.h"

struct seal_opts {
	const char *model, *key_file, *shard_id, *out, *seal, *audit_log, *correlation_id;
	int threads;
	bool quiet;
};

static void
seal_usage(FILE *f, bool verify)
{
	if (verify)
		fprintf(f, "usage: orcd verify -m MODEL --seal MODEL.seal --key-file K "
		    "[options]\n\n");
	else
		fprintf(f, "usage: orcd seal -m MODEL --key-file K [--shard-id ID] "
		    "-o MODEL.seal [options]\n\n");
	fprintf(f,
	    "  -m, --model FILE           the GGUF model\n"
	    "      --key-file FILE        the secret (mode 0600 or stricter, >= 16 bytes)\n");
	if (verify)
		fprintf(f, "      --seal FILE            the seal file to check\n");
	else
		fprintf(f,
		    "      --shard-id ID          1..256 of [A-Za-z0-9._:-] (default \"0\")\n"
		    "  -o, --output FILE          the seal file to write (default MODEL.seal)\n");
	fprintf(f,
	    "      --threads N            digest threads (default: all CPUs)\n"
	    "      --audit-log PATH       append the audit event to PATH (- for stderr)\n"
	    "      --correlation-id ID    put ID into the audit event\n"
	    "  -q, --quiet                no progress output\n"
	    "\nSee doc/seal.md.\n");
}

/* 0, 1 for --help, -1 on a usage error (printed). */
static int
parse(int argc, char **argv, bool verify, struct seal_opts *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = NULL;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			seal_usage(stdout, verify);
			return 1;
		}
		if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
			o->quiet = true;
			continue;
		}
		if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0)
			dst = &o->model;
		else if (strcmp(a, "--key-file") == 0)
			dst = &o->key_file;
		else if (strcmp(a, "--audit-log") == 0)
			dst = &o->audit_log;
		else if (strcmp(a, "--correlation-id") == 0)
			dst = &o->correlation_id;
		else if (!verify && strcmp(a, "--shard-id") == 0)
			dst = &o->shard_id;
		else if (!verify && (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0))
			dst = &o->out;
		else if (verify && strcmp(a, "--seal") == 0)
			dst = &o->seal;
		else if (strcmp(a, "--threads") == 0) {
			char *end;
			long v;

			if (i + 1 >= argc)
				goto needs_value;
			v = strtol(argv[++i], &end, 10);
			if (*end != '\0' || end == argv[i] || v < 0 || v > 256) {
				fprintf(stderr, "orcd %s: --threads: '%s' is not in [0, 256]\n",
				    argv[0], argv[i]);
				return -1;
			}
			o->threads = (int)v;
			continue;
		} else {
			fprintf(stderr, "orcd %s: unknown option '%s'\n", argv[0], a);
			seal_usage(stderr, verify);
			return -1;
		}
		if (i + 1 >= argc)
			goto needs_value;
		*dst = argv[++i];
		continue;
needs_value:
		fprintf(stderr, "orcd %s: %s needs a value\n", argv[0], a);
		return -1;
	}
	if (o->model == NULL || o->key_file == NULL || (verify && o->seal == NULL)) {
		fprintf(stderr, "orcd %s: -m MODEL, --key-file K%s are required\n", argv[0],
		    verify ? " and --seal FILE" : "");
		seal_usage(stderr, verify);
		return -1;
	}
	return 0;
}

struct progress {
	const char *what;
	double t0, last;
	bool tty;
	bool quiet;
};

static void
progress_cb(void *arg, uint64_t done, uint64_t total, size_t chunks_done, size_t n_chunks)
{
	struct progress *p = arg;
	double now = orcd_now();

	if (p->quiet || done == total)
		return;
	/* a terminal gets a line a second, a log one every 10 s */
	if (!p->tty && now - p->last < 10)
		return;
	p->last = now;
	fprintf(stderr, "%s%s: %.2f of %.2f GB (%zu of %zu chunks), %.2f GB/s%s", p->tty ?
	    "\r" : "", p->what, (double)done / 1e9, (double)total / 1e9, chunks_done,
	    n_chunks, now > p->t0 ? (double)done / 1e9 / (now - p->t0) : 0.0,
	    p->tty ? "" : "\n");
}

static void
progress_end(struct progress *p, uint64_t bytes, size_t n_tensors, size_t n_chunks)
{
	double dt = orcd_now() - p->t0;

	if (p->quiet)
		return;
	fprintf(stderr, "%s%s: %zu tensors, %zu chunks, %.3f GB in %.2f s (%.2f GB/s)\n",
	    p->tty ? "\r" : "", p->what, n_tensors, n_chunks, (double)bytes / 1e9, dt,
	    dt > 0 ? (double)bytes / 1e9 / dt : 0.0);
}

static void
emit(const struct seal_opts *o, const char *event, const struct seal *s,
    const struct audit_event *base)
{
	struct audit *a;
	struct audit_event ev;
	struct orcd_err err;
	char hex[65];

	if (o->audit_log == NULL)
		return;
	if (base != NULL)
		ev = *base;
	else
		audit_event_init(&ev, event, o->model);
	ev.event = event;
	ev.model = o->model;
	ev.correlation_id = o->correlation_id;
	if (s != NULL) {
		ev.shard_id = s->shard_id;
		seal_hex(s->digest, 32, hex);
		ev.digest = hex;
	}
	if (audit_open(o->audit_log, &a, &err) != 0 || audit_emit(a, &ev, &err) != 0)
		fprintf(stderr, "orcd: %s\n", err.msg);
	audit_close(a);
}

int
seal_main(int argc, char **argv)
{
	struct seal_opts o;
	struct orcd_err err;
	struct gguf_file *g = NULL;
	struct seal_key key;
	struct seal s;
	struct progress p;
	char out[4096];
	int rc;

	if ((rc = parse(argc, argv, false, &o)) != 0)
		return rc > 0 ? 0 : 2;
	if (o.shard_id == NULL)
		o.shard_id = "0";
	if (seal_shard_id_valid(o.shard_id, &err) != 0) {
		fprintf(stderr, "orcd seal: --shard-id: %s\n", err.msg);
		return 2;
	}
	if (o.out == NULL)
		snprintf(out, sizeof(out), "%s.seal", o.model);
	else
		snprintf(out, sizeof(out), "%s", o.out);
	if (seal_key_load(o.key_file, &key, &err) != 0) {
		fprintf(stderr, "orcd seal: %s\n", err.msg);
		return 2;
	}
	if (gguf_open(o.model, &g, &err) != 0) {
		fprintf(stderr, "orcd seal: %s\n", err.msg);
		seal_key_cleanse(&key);
		return 2;
	}
	memset(&p, 0, sizeof(p));
	p.what = "seal";
	p.t0 = p.last = orcd_now();
	p.tty = isatty(STDERR_FILENO);
	p.quiet = o.quiet;
	rc = seal_create(g, o.shard_id, time(NULL), &key, o.threads, progress_cb, &p, &s, &err);
	seal_key_cleanse(&key);
	if (rc != 0) {
		fprintf(stderr, "orcd seal: %s: %s\n", o.model, err.msg);
		gguf_close(g);
		return 2;
	}
	progress_end(&p, g->size - g->data_offset, (size_t)g->n_tensors, s.n_chunks);
	if (seal_write(&s, out, &err) != 0) {
		fprintf(stderr, "orcd seal: %s\n", err.msg);
		rc = 2;
	} else {
		char hex[65];

		seal_hex(s.digest, 32, hex);
		printf("sealed %s -> %s\ndigest %s\nshard_id %s, %zu chunks, created %s\n",
		    o.model, out, hex, s.shard_id, s.n_chunks, s.created);
		emit(&o, "seal_created", &s, NULL);
	}
	seal_free(&s);
	gguf_close(g);
	return rc;
}

int
verify_main(int argc, char **argv)
{
	struct seal_opts o;
	struct orcd_err err;
	struct gguf_file *g = NULL;
	struct seal_key key;
	struct seal s;
	struct seal_chunks cl;
	struct seal_diff diff;
	struct progress p;
	struct audit_event ev;
	uint8_t (*dig)[32] = NULL;
	char where[256];
	int rc, ret = 2;

	memset(&cl, 0, sizeof(cl));
	if ((rc = parse(argc, argv, true, &o)) != 0)
		return rc > 0 ? 0 : 2;
	if (seal_read(o.seal, &s, &err) != 0) {
		fprintf(stderr, "orcd verify: %s\n", err.msg);
		audit_event_init(&ev, "verify_failed", o.model);
		ev.detail = err.msg;
		emit(&o, "verify_failed", NULL, &ev);
		return 2;
	}
	if (seal_key_load(o.key_file, &key, &err) != 0) {
		fprintf(stderr, "orcd verify: %s\n", err.msg);
		audit_event_init(&ev, "verify_failed", o.model);
		ev.detail = err.msg;
		emit(&o, "verify_failed", &s, &ev);
		seal_free(&s);
		return 2;
	}
	rc = seal_check_signature(&s, &key, &err);
	seal_key_cleanse(&key);
	audit_event_init(&ev, "verify_failed", o.model);
	if (rc != 0) {
		printf("FAILED: %s\n", err.msg);
		ev.detail = err.msg;
		ret = 1;
		goto out;
	}
	if (gguf_open(o.model, &g, &err) != 0) {
		fprintf(stderr, "orcd verify: %s\n", err.msg);
		ev.detail = err.msg;
		goto out;
	}
	if (seal_check_model(&s, g, &err) != 0) {
		printf("FAILED: %s\n", err.msg);
		ev.detail = err.msg;
		ret = 1;
		goto out;
	}
	if (seal_chunks_build(g, &cl, &err) != 0 || (dig = malloc(cl.n * 32)) == NULL) {
		if (dig == NULL && cl.n > 0)
			orcd_errf(&err, "out of memory");
		fprintf(stderr, "orcd verify: %s\n", err.msg);
		ev.detail = err.msg;
		goto out;
	}
	memset(&p, 0, sizeof(p));
	p.what = "verify";
	p.t0 = p.last = orcd_now();
	p.tty = isatty(STDERR_FILENO);
	p.quiet = o.quiet;
	if (seal_digest_host(cl.host, cl.len, cl.n, o.threads, dig, progress_cb, &p, 1.0,
	    &err) != 0) {
		fprintf(stderr, "orcd verify: %s\n", err.msg);
		ev.detail = err.msg;
		goto out;
	}
	progress_end(&p, cl.data_bytes, (size_t)g->n_tensors, cl.n);
	ev.seconds = orcd_now() - p.t0;
	if (seal_compare(&s, g, &cl, (const uint8_t (*)[32])dig, &diff, &err) != 0) {
		printf("FAILED: %s\n", err.msg);
		for (size_t i = 0; i < diff.n_listed; i++) {
			seal_chunk_describe(g, &cl.c[diff.first_bad[i]], where, sizeof(where));
			printf("  chunk %zu differs: %s\n", diff.first_bad[i], where);
		}
		if (diff.n_bad > diff.n_listed && diff.n_listed > 0)
			printf("  ... and %zu more\n", diff.n_bad - diff.n_listed);
		ev.detail = err.msg;
		if (diff.n_listed > 0) {
			const struct seal_chunk *c = &cl.c[diff.first_bad[0]];
			const struct gguf_tensor *t = &g->tensors[c->tensor];

			snprintf(where, sizeof(where), "%.*s", (int)(t->name.len > 200 ? 200 :
			    t->name.len), t->name.ptr);
			ev.chunk_tensor = where;
			ev.chunk_index = (int64_t)diff.first_bad[0];
			ev.chunk_in_tensor = c->index;
			ev.chunk_start = c->file_offset;
			ev.chunk_end = c->file_offset + c->len;
		}
		ev.chunks_bad = (int64_t)diff.n_bad;
		ret = 1;
		goto out;
	}
	{
		char hex[65];

		seal_hex(s.digest, 32, hex);
		printf("OK: %s matches %s\ndigest %s\nshard_id %s, %zu chunks, created %s\n",
		    o.model, o.seal, hex, s.shard_id, s.n_chunks, s.created);
	}
	ev.event = "verify_ok";
	ret = 0;
out:
	emit(&o, ev.event, &s, &ev);
	free(dig);
	seal_chunks_free(&cl);
	if (g != NULL)
		gguf_close(g);
	seal_free(&s);
	return ret;
}
