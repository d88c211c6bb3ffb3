/*
 * Tests of sealed models (src/seal.c, src/audit.c, `orcd seal`, `orcd
 * verify`, the CPU backend's weights_digest and debug_flip): the digest
 * layout against values computed independently (Python hashlib/hmac, see
 * doc/seal.md), seal then verify, a flipped byte anywhere in the tensor
 * data named by chunk, a wrong key, a corpus of broken seal files and of
 * bad shard ids, key file permissions; `orcd serve --seal`: refusal to
 * start on a bad seal, and a byte flipped through the test hook
 * (ORCD_TEST_SEAL_FLIP) turning /health unhealthy with an audit line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "orcd/backend.h"
#include "audit.h"
#include "cq.h"
#include "gguf.h"
#include "mkmodel.h"
#include "model.h"
#include "seal.h"
#include "test_server.h"
#include "test_util.h"

static char big_model[4096];     /* a generated model with multi-chunk tensors */
static char key_path[4096], key2_path[4096];
static const char secret[] = "0123456789abcdef-test-secret";

static void
hex_of(const uint8_t *p, char out[65])
{
	seal_hex(p, 32, out);
}

static void
write_file(const char *path, const void *data, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static uint8_t *
read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return buf;
}

/* ------------------------------------------------------------ layout */

static void
pattern(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 131) + (i >> 8) * 7 + 1);
}

/* Expected values from doc/seal.md's reference script (Python hashlib). */
static void
test_chunk_digest_vectors(void **state)
{
	static const struct { size_t n; const char *hex; } v[] = {
		{ 1, "b413f47d13ee2fe6c845b2ee141af81de858df4ec549a58b7970bb96645bc8d2" },
		{ 4095, "2496d0764fc10abb93ee42c911b4ba37046bc6b6fa2dfd2f9e2bf91ed4787930" },
		{ 4096, "c3d9362d779c2027dd7382ed69349de52908981ad4f1ebbb12a142e24dbe0e5f" },
		{ 4097, "6d45caac6aa1d2ad804555d2de36747d99ea44695ceb266cad4fccbcf29b8a54" },
		{ 3 * 4096, "db8acf6a05730454b85a1143e5e99e8d3ab38776ace9294ece2739bcbb38e64a" },
		{ 5 * 4096 + 17, "79aab136c2421c44358b16d2a13cc1264976a01bf99974cd33dcb5f329cc493e" },
		{ 1048576, "1c325c3e27b4e0d6eae5d68d5971b45890fa3ccca2c0dd14f81a4facd8299f85" },
	};
	uint8_t *data = malloc(1048576), out[32];
	char hex[65];

	pattern(data, 1048576);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		seal_chunk_digest(data, v[i].n, out);
		hex_of(out, hex);
		assert_string_equal(hex, v[i].hex);
	}
	free(data);
}

static void
test_merkle_root_vectors(void **state)
{
	static const struct { size_t n; const char *hex; } v[] = {
		{ 1, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d" },
		{ 2, "c71a16f21f917ed84ea2caa90b0904c9179a4c9c2369a9b4ec57e11a3f25a7a2" },
		{ 3, "d78663a8f1a2d99ee97fe38a605be2f54e2872c3a63a13077d617e4a940725bd" },
		{ 5, "550347fe72bcb7c23a0576eb793f410a6192c5d678b483eb1adfd880720b55ea" },
		{ 7, "cc73b298e8e4f30a03faa5269796029c17e3fe4b1519250482ddc00a7d2e20da" },
	};
	uint8_t ds[7][32], out[32];
	char hex[65];

	/* leaves: SHA256 of the single bytes 0 .. 6 */
	for (int i = 0; i < 7; i++) {
		uint8_t b = (uint8_t)i;
		unsigned int len = 32;

		assert_int_equal(EVP_Digest(&b, 1, ds[i], &len, EVP_sha256(), NULL), 1);
	}
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		seal_merkle_root((const uint8_t (*)[32])ds, v[i].n, out);
		hex_of(out, hex);
		assert_string_equal(hex, v[i].hex);
	}
}

/* HKDF and HMAC against Python's hmac module (doc/seal.md). */
static void
test_signature_vector(void **state)
{
	struct seal s;
	struct seal_key key;
	struct orcd_err err;
	char hex[65], msg[1024];

	assert_int_equal(seal_key_derive((const uint8_t *)secret, strlen(secret), &key, &err), 0);
	hex_of(key.k, hex);
	assert_string_equal(hex, "c777431e369c71d00d53ab172a11ef006ebde1ccbf888c2b9d8ee948ea2cd842");
	memset(&s, 0, sizeof(s));
	for (int i = 0; i < 32; i++) {
		s.digest[i] = (uint8_t)i;
		s.tensor_table[i] = (uint8_t)(32 + i);
	}
	s.file_size = 123456789;
	snprintf(s.shard_id, sizeof(s.shard_id), "model-a:shard.0_1");
	snprintf(s.created, sizeof(s.created), "2026-12-06T21:00:00Z");
	assert_true(seal_message(&s, msg, sizeof(msg)) > 0);
	assert_non_null(strstr(msg, "orcd-seal-v1\ndigest=000102"));
	assert_non_null(strstr(msg, "\nchunk_bytes=1048576\nblock_bytes=4096\n"));
	assert_int_equal(seal_sign(&s, &key, &err), 0);
	hex_of(s.signature, hex);
	assert_string_equal(hex, "2e44e4758ff9f06b5323ef30df909f6a4ef48f187d5749ecf1e981744afc3203");
	assert_int_equal(seal_check_signature(&s, &key, &err), 0);
	s.file_size++;
	assert_int_equal(seal_check_signature(&s, &key, &err), -1);
	assert_non_null(strstr(err.msg, "signature bad"));
	seal_key_cleanse(&key);
	for (size_t i = 0; i < sizeof(key.k); i++)
		assert_int_equal(key.k[i], 0);
}

/* The chunk list follows the tensor table: 1 MiB pieces, the last shorter,
 * every byte of every tensor exactly once. */
static void
test_chunk_list(void **state)
{
	struct gguf_file *g;
	struct seal_chunks cl;
	struct orcd_err err;
	size_t k = 0;
	int multi = 0;

	assert_int_equal(gguf_open(big_model, &g, &err), 0);
	assert_int_equal(seal_chunks_build(g, &cl, &err), 0);
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct gguf_tensor *t = &g->tensors[i];
		uint64_t off = 0;

		for (uint32_t ci = 0; off < t->nbytes; ci++, k++) {
			assert_true(k < cl.n);
			assert_int_equal(cl.c[k].tensor, i);
			assert_int_equal(cl.c[k].index, ci);
			assert_ptr_equal(cl.c[k].host, (const uint8_t *)t->data + off);
			assert_int_equal(cl.c[k].file_offset, g->data_offset + t->offset + off);
			assert_int_equal(cl.c[k].len, t->nbytes - off < SEAL_CHUNK_BYTES ?
			    t->nbytes - off : SEAL_CHUNK_BYTES);
			assert_int_equal(seal_chunks_find(&cl, cl.c[k].host + cl.c[k].len - 1), (long)k);
			multi += ci > 0;
			off += cl.c[k].len;
		}
	}
	assert_int_equal(k, cl.n);
	assert_true(multi >= 2); /* the test model has tensors of several chunks */
	assert_int_equal(seal_chunks_find(&cl, g->base), -1); /* the header */
	seal_chunks_free(&cl);
	gguf_close(g);
}

/* ------------------------------------------------------------ seal, verify */

static char *
run(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return test_run_capture(cmd);
}

static void
test_seal_then_verify(void **state)
{
	char seal_path[4096], audit_path[4096];
	char *out;
	size_t n;
	uint8_t *log;

	snprintf(seal_path, sizeof(seal_path), "%s/big.seal", test_tmpdir);
	snprintf(audit_path, sizeof(audit_path), "%s/cli-audit.log", test_tmpdir);
	out = run("'%s' seal -m '%s' --key-file '%s' --shard-id 'model-a:0' -o '%s' "
	    "--audit-log '%s' --correlation-id job-17 2>&1; echo rc=$?", test_orcd_bin,
	    big_model, key_path, seal_path, audit_path);
	assert_non_null(strstr(out, "rc=0"));
	assert_non_null(strstr(out, "GB/s"));
	free(out);
	out = run("'%s' verify -m '%s' --seal '%s' --key-file '%s' --audit-log '%s' 2>&1; "
	    "echo rc=$?", test_orcd_bin, big_model, seal_path, key_path, audit_path);
	assert_non_null(strstr(out, "OK: "));
	assert_non_null(strstr(out, "shard_id model-a:0"));
	assert_non_null(strstr(out, "rc=0"));
	free(out);

	/* the reference script (doc/seal.md, Python standard library only)
	 * agrees on every field and the signature */
	if (system("command -v python3 >/dev/null 2>&1") == 0) {
		const char *srcdir = getenv("srcdir");

		out = run("python3 '%s/contrib/seal-ref.py' '%s' '%s' '%s' 2>&1; echo rc=$?",
		    srcdir != NULL ? srcdir : ".", big_model, key_path, seal_path);
		if (strstr(out, "signature ok") == NULL || strstr(out, "model matches") == NULL ||
		    strstr(out, "rc=0") == NULL)
			fail_msg("contrib/seal-ref.py disagrees: %s", out);
		free(out);
	}

	/* the library reads what the CLI wrote */
	struct seal s;
	struct orcd_err err;
	assert_int_equal(seal_read(seal_path, &s, &err), 0);
	assert_string_equal(s.shard_id, "model-a:0");
	assert_true(s.n_chunks > 3);

	/* two audit lines, no key material, the correlation id */
	log = read_all(audit_path, &n);
	log[n] = '\0';
	assert_non_null(strstr((char *)log, "\"event\":\"seal_created\""));
	assert_non_null(strstr((char *)log, "\"correlation_id\":\"job-17\""));
	assert_non_null(strstr((char *)log, "\"event\":\"verify_ok\""));
	assert_null(strstr((char *)log, secret));
	char hex[65];
	hex_of(s.digest, hex);
	assert_non_null(strstr((char *)log, hex));
	free(log);
	seal_free(&s);

	/* wrong key: bad signature, exit 1 */
	out = run("'%s' verify -m '%s' --seal '%s' --key-file '%s' 2>&1; echo rc=$?",
	    test_orcd_bin, big_model, seal_path, key2_path);
	assert_non_null(strstr(out, "signature bad"));
	assert_non_null(strstr(out, "rc=1"));
	free(out);

	/* another model: the file size or tensor table differs */
	out = run("'%s' verify -m '%s' --seal '%s' --key-file '%s' 2>&1; echo rc=$?",
	    test_orcd_bin, test_model_path, seal_path, key_path);
	assert_true(strstr(out, "file size differs") != NULL ||
	    strstr(out, "tensor table differs") != NULL);
	assert_non_null(strstr(out, "rc=1"));
	free(out);

	/* a bad shard id is refused before anything is read */
	out = run("'%s' seal -m '%s' --key-file '%s' --shard-id 'a/b' -o '%s/x.seal' 2>&1; "
	    "echo rc=$?", test_orcd_bin, big_model, key_path, test_tmpdir);
	assert_non_null(strstr(out, "path separator"));
	assert_non_null(strstr(out, "rc=2"));
	free(out);
}

/* One flipped byte anywhere in the tensor data: verify names its chunk
 * (tensor, chunk index, byte range); the CLI prints the same. */
static void
test_flipped_byte_named(void **state)
{
	char copy[4096], seal_path[4096], want[256];
	struct gguf_file *g;
	struct seal_chunks cl;
	struct seal s;
	struct seal_key key;
	struct orcd_err err;
	uint8_t *img;
	size_t n;
	uint64_t pos[24];
	int np = 0;

	snprintf(copy, sizeof(copy), "%s/flip.gguf", test_tmpdir);
	snprintf(seal_path, sizeof(seal_path), "%s/flip.seal", test_tmpdir);
	img = read_all(big_model, &n);
	assert_int_equal(seal_key_load(key_path, &key, &err), 0);
	assert_int_equal(gguf_open(big_model, &g, &err), 0);
	assert_int_equal(seal_create(g, "flip", 1765054800, &key, 2, NULL, NULL, &s, &err), 0);
	assert_int_equal(seal_write(&s, seal_path, &err), 0);
	seal_key_cleanse(&key);
	assert_int_equal(seal_chunks_build(g, &cl, &err), 0);
	/* file offsets: first and last data byte, both sides of a chunk edge
	 * inside a multi-chunk tensor, then spread pseudo-randomly */
	pos[np++] = cl.c[0].file_offset;
	pos[np++] = cl.c[cl.n - 1].file_offset + cl.c[cl.n - 1].len - 1;
	for (size_t k = 1; k < cl.n; k++)
		if (cl.c[k].index == 1) {
			pos[np++] = cl.c[k].file_offset - 1;
			pos[np++] = cl.c[k].file_offset;
			break;
		}
	for (uint64_t x = 12345; np < 24;) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		const struct seal_chunk *c = &cl.c[(x >> 33) % cl.n];
		pos[np++] = c->file_offset + (x >> 13) % c->len;
	}
	gguf_close(g);

	for (int i = 0; i < np; i++) {
		struct gguf_file *h;
		struct seal_chunks hl;
		struct seal_diff diff;
		uint8_t (*dig)[32];
		long k = -1;

		for (size_t j = 0; j < cl.n; j++)
			if (pos[i] >= cl.c[j].file_offset && pos[i] < cl.c[j].file_offset + cl.c[j].len)
				k = (long)j;
		assert_true(k >= 0);
		img[pos[i]] ^= 0x40;
		write_file(copy, img, n, 0644);
		img[pos[i]] ^= 0x40;
		assert_int_equal(gguf_open(copy, &h, &err), 0);
		assert_int_equal(seal_check_model(&s, h, &err), 0);
		assert_int_equal(seal_chunks_build(h, &hl, &err), 0);
		dig = malloc(hl.n * 32);
		assert_int_equal(seal_digest_host(hl.host, hl.len, hl.n, 2, dig, NULL, NULL, 0,
		    &err), 0);
		assert_int_equal(seal_compare(&s, h, &hl, (const uint8_t (*)[32])dig, &diff,
		    &err), -1);
		assert_int_equal(diff.n_bad, 1);
		assert_int_equal(diff.first_bad[0], (size_t)k);
		seal_chunk_describe(h, &hl.c[k], want, sizeof(want));
		assert_non_null(strstr(err.msg, want));
		free(dig);
		seal_chunks_free(&hl);
		gguf_close(h);
	}

	/* the CLI on the last one */
	char *out = run("'%s' verify -q -m '%s' --seal '%s' --key-file '%s' 2>&1; echo rc=$?",
	    test_orcd_bin, copy, seal_path, key_path);
	assert_non_null(strstr(out, "FAILED: chunk "));
	assert_non_null(strstr(out, "file bytes ["));
	assert_non_null(strstr(out, "1 of "));
	assert_non_null(strstr(out, "rc=1"));
	free(out);
	seal_chunks_free(&cl);
	seal_free(&s);
	free(img);
}

/* ------------------------------------------------------------ corpora */

static char *valid_seal;  /* seal_dump of a real seal */
static size_t valid_len;

static void
expect_bad(const char *text, size_t len, const char *want)
{
	struct seal s;
	struct orcd_err err;

	err.msg[0] = '\0';
	if (seal_parse(text, len, &s, &err) == 0)
		fail_msg("accepted a bad seal file (expected '%s'): %.*s", want ? want : "",
		    (int)(len > 300 ? 300 : len), text);
	assert_true(strncmp(err.msg, "seal file: ", 11) == 0);
	if (want != NULL && strstr(err.msg, want) == NULL)
		fail_msg("error '%s' does not mention '%s'", err.msg, want);
	assert_null(s.chunks);
}

/* Sets (or with value NULL deletes) one field and expects an error naming want. */
static void
expect_field(const char *field, const char *value, const char *want)
{
	json_error_t je;
	json_t *o = json_loads(valid_seal, 0, &je);
	char *text;

	assert_non_null(o);
	if (value == NULL) {
		json_object_del(o, field);
	} else {
		json_t *v = json_loads(value, JSON_DECODE_ANY, &je);

		if (v == NULL)
			fail_msg("bad test value %s", value);
		json_object_set_new(o, field, v);
	}
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	expect_bad(text, strlen(text), want);
	free(text);
	json_decref(o);
}

/* Sets a field to raw JSON text jansson would not build (huge numbers). */
static void
expect_raw_field(const char *field, const char *raw, const char *want)
{
	json_error_t je;
	json_t *o = json_loads(valid_seal, 0, &je);
	char *text, *at, *out;

	json_object_set_new(o, field, json_string("@@@"));
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	at = strstr(text, "\"@@@\"");
	assert_non_null(at);
	out = malloc(strlen(text) + strlen(raw) + 1);
	sprintf(out, "%.*s%s%s", (int)(at - text), text, raw, at + 5);
	expect_bad(out, strlen(out), want);
	free(out);
	free(text);
	json_decref(o);
}

static void
test_seal_file_corpus(void **state)
{
	static const char *fields[] = { "format", "version", "digest", "file_size",
	    "tensor_table", "shard_id", "created", "chunk_bytes", "block_bytes",
	    "n_chunks", "chunks", "signature" };
	struct seal s;
	struct orcd_err err;
	char buf[512];

	/* the valid one parses */
	assert_int_equal(seal_parse(valid_seal, valid_len, &s, &err), 0);
	size_t n_chunks = s.n_chunks;
	seal_free(&s);

	/* truncated at every offset */
	for (size_t i = 0; i < valid_len; i++)
		expect_bad(valid_seal, i, NULL);
	/* every field missing */
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		snprintf(buf, sizeof(buf), "%s: missing", fields[i]);
		expect_field(fields[i], NULL, buf);
	}
	/* every field of the wrong type */
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		expect_field(fields[i], strcmp(fields[i], "chunks") == 0 ? "{}" :
		    strcmp(fields[i], "format") == 0 || strcmp(fields[i], "shard_id") == 0 ||
		    strcmp(fields[i], "created") == 0 ? "[]" : "\"7\"" , fields[i]);
	expect_field("format", "\"orcd-seal2\"", "format");
	expect_field("format", "\"\"", "format");
	expect_field("version", "2", "version: 2 is not supported");
	expect_field("version", "0", "version");
	expect_field("version", "1.0", "version");
	expect_field("digest", "\"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"",
	    "digest: character 0");
	expect_field("digest", "\"abcdef0123456789abcdef0123456789abcdef0123456789abcdef012345678\"",
	    "digest: 63 characters");
	expect_field("digest", "\"abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567890\"",
	    "digest: 65 characters");
	expect_field("digest", "\"zbcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"",
	    "digest: character 0");
	expect_field("signature", "\"0bcdef0123456789abcdef0123456789abcdef0123456789abcdef012345678 \"",
	    "signature: character 63");
	expect_field("tensor_table", "\"\"", "tensor_table: 0 characters");
	expect_field("file_size", "-1", "file_size: -1 is out of range");
	expect_raw_field("file_size", "1e400", NULL);
	expect_raw_field("file_size", "99999999999999999999999", "too big");
	expect_raw_field("n_chunks", "1e30", "n_chunks: must be an integer");
	expect_raw_field("version", "-99999999999999999999999", NULL);
	expect_field("file_size", "18446744073709551615.0", "file_size: must be an integer");
	expect_field("file_size", "1.5", "file_size: must be an integer");
	expect_field("n_chunks", "9223372036854775807", "n_chunks");
	expect_field("n_chunks", "0", "n_chunks");
	expect_field("n_chunks", "-3", "n_chunks");
	snprintf(buf, sizeof(buf), "%zu", n_chunks + 1);
	expect_field("n_chunks", buf, "chunks: ");
	snprintf(buf, sizeof(buf), "%zu", n_chunks - 1);
	expect_field("n_chunks", buf, "chunks: ");
	expect_field("chunks", "[]", "chunks: 0 digests");
	expect_field("chunk_bytes", "1048577", "chunk_bytes");
	expect_field("block_bytes", "512", "block_bytes");
	expect_field("created", "\"2026-12-06 21:00:00\"", "created");
	expect_field("created", "\"2026-13-06T21:00:00Z\"", "created");
	expect_field("created", "\"2026-12-06T21:00:00+01:00\"", "created");
	expect_field("shard_id", "\"a/b\"", "shard_id");
	expect_field("shard_id", "\"\"", "shard_id: must not be empty");
	expect_raw_field("shard_id", "\"a\\u0000b\"", NULL);
	expect_field("extra", "1", "unknown field 'extra'");

	/* a chunk digest changed: its root is not the signed digest */
	{
		json_error_t je;
		json_t *o = json_loads(valid_seal, 0, &je);
		json_t *arr = json_object_get(o, "chunks");
		char *text;

		json_array_set_new(arr, 1, json_string(json_string_value(json_array_get(arr, 0))));
		text = json_dumps(o, JSON_COMPACT);
		expect_bad(text, strlen(text), "Merkle root");
		free(text);
		json_array_set_new(arr, 1, json_integer(5));
		text = json_dumps(o, JSON_COMPACT);
		expect_bad(text, strlen(text), "chunks[1]");
		free(text);
		json_decref(o);
	}
	/* numbers too large for any integer, not JSON, not an object, duplicates */
	{
		static const char *raw[] = {
			"", " ", "null", "[]", "\"orcd-seal\"", "{", "{}", "{\"format\":}",
			"{\"format\":\"orcd-seal\",\"format\":\"orcd-seal\"}",
			"{\"version\":99999999999999999999999999999}",
			"\x00\x01\x02", "{\"format\":\"orcd-seal\"}garbage",
		};
		for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++)
			expect_bad(raw[i], strlen(raw[i]) + (i == 10 ? 3 : 0), NULL);
		/* a NUL byte in the middle of an otherwise valid file */
		char *t = malloc(valid_len);
		memcpy(t, valid_seal, valid_len);
		t[valid_len / 2] = '\0';
		expect_bad(t, valid_len, NULL);
		/* deep nesting */
		size_t dn = 200000;
		char *deep = malloc(dn * 2 + 1);
		for (size_t i = 0; i < dn; i++) {
			deep[i] = '[';
			deep[dn + i] = ']';
		}
		expect_bad(deep, dn * 2, NULL);
		free(deep);
		free(t);
	}
	/* a too large file is refused before parsing */
	{
		char path[4096];
		int fd;

		snprintf(path, sizeof(path), "%s/huge.seal", test_tmpdir);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_int_equal(ftruncate(fd, (off_t)SEAL_FILE_MAX + 1), 0);
		close(fd);
		assert_int_equal(seal_read(path, &s, &err), -1);
		assert_non_null(strstr(err.msg, "at most"));
		unlink(path);
	}
	/* a signed field changed to another valid value: the parse is fine,
	 * the signature is not */
	{
		json_error_t je;
		json_t *o = json_loads(valid_seal, 0, &je);
		struct seal_key key;
		char *text;

		json_object_set_new(o, "shard_id", json_string("other-shard"));
		text = json_dumps(o, JSON_COMPACT);
		assert_int_equal(seal_parse(text, strlen(text), &s, &err), 0);
		assert_int_equal(seal_key_load(key_path, &key, &err), 0);
		assert_int_equal(seal_check_signature(&s, &key, &err), -1);
		assert_non_null(strstr(err.msg, "signature bad"));
		seal_key_cleanse(&key);
		seal_free(&s);
		free(text);
		json_decref(o);
	}
}

static void
test_shard_id_corpus(void **state)
{
	static const char *bad[] = { "", "/", "..", ".", "a/b", "a\\b", "a b", " ", "a\tb",
	    "a\nb", "\x01", "\x7f", "x\x1b[31m", "caf\xc3\xa9", "\xe2\x80\xae", "a,b", "a;b",
	    "a*", "$HOME", "a\"b", "a'b", "%2e%2e", "~", "a@b" };
	static const char *good[] = { "0", "a", "model-a:shard.0_1", "...", ".a", "a..b",
	    "Z9", "::", "-" };
	char long_id[300];
	struct orcd_err err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err.msg[0] = '\0';
		if (seal_shard_id_valid(bad[i], &err) == 0)
			fail_msg("shard id '%s' accepted", bad[i]);
		assert_true(strncmp(err.msg, "shard_id: ", 10) == 0);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(seal_shard_id_valid(good[i], &err), 0);
	memset(long_id, 'a', 257);
	long_id[257] = '\0';
	assert_int_equal(seal_shard_id_valid(long_id, &err), -1);
	assert_non_null(strstr(err.msg, "longer than 256"));
	long_id[256] = '\0';
	assert_int_equal(seal_shard_id_valid(long_id, &err), 0);
	/* a NUL cuts the C string; the JSON reader rejects embedded NULs
	 * (test_seal_file_corpus) */
	assert_int_equal(seal_shard_id_valid("\0abc", &err), -1);
	assert_int_equal(seal_shard_id_valid(NULL, &err), -1);
}

static void
test_key_file(void **state)
{
	char path[4096];
	struct seal_key a, b;
	struct orcd_err err;

	snprintf(path, sizeof(path), "%s/k", test_tmpdir);
	/* one trailing "\n" or "\r\n" is not part of the secret */
	write_file(path, "0123456789abcdef-test-secret\n", 29, 0600);
	assert_int_equal(seal_key_load(path, &a, &err), 0);
	write_file(path, "0123456789abcdef-test-secret\r\n", 30, 0600);
	assert_int_equal(seal_key_load(path, &b, &err), 0);
	assert_memory_equal(a.k, b.k, 32);
	assert_int_equal(seal_key_derive((const uint8_t *)secret, strlen(secret), &b, &err), 0);
	assert_memory_equal(a.k, b.k, 32);
	/* only one newline is stripped */
	write_file(path, "0123456789abcdef-test-secret\n\n", 30, 0600);
	assert_int_equal(seal_key_load(path, &b, &err), 0);
	assert_memory_not_equal(a.k, b.k, 32);
	/* group/world access is refused, naming the mode */
	write_file(path, "0123456789abcdef-test-secret\n", 29, 0640);
	assert_int_equal(seal_key_load(path, &b, &err), -1);
	assert_non_null(strstr(err.msg, "mode 0640"));
	write_file(path, "0123456789abcdef-test-secret\n", 29, 0604);
	assert_int_equal(seal_key_load(path, &b, &err), -1);
	assert_non_null(strstr(err.msg, "mode 0604"));
	write_file(path, "0123456789abcdef-test-secret\n", 29, 0400);
	assert_int_equal(seal_key_load(path, &b, &err), 0);
	/* too short: 15 bytes after the newline */
	write_file(path, "0123456789abcde\n", 16, 0600);
	assert_int_equal(seal_key_load(path, &b, &err), -1);
	assert_non_null(strstr(err.msg, "at least 16"));
	write_file(path, "0123456789abcdef", 16, 0600);
	assert_int_equal(seal_key_load(path, &b, &err), 0);
	/* not a file, absent */
	assert_int_equal(seal_key_load(test_tmpdir, &b, &err), -1);
	assert_non_null(strstr(err.msg, "not a regular file"));
	snprintf(path, sizeof(path), "%s/absent", test_tmpdir);
	assert_int_equal(seal_key_load(path, &b, &err), -1);
	seal_key_cleanse(&a);
	seal_key_cleanse(&b);
}

/* The audit line format: RFC 3339 UTC time, the fields given, valid JSON. */
static void
test_audit_format(void **state)
{
	struct audit_event ev;
	json_error_t je;
	char *line;
	json_t *o;

	audit_event_init(&ev, "reverify_failed", "/m/model.gguf");
	ev.shard_id = "s1";
	ev.digest = "ab";
	ev.detail = "chunk 3 differs \"quoted\"\n";
	ev.chunk_tensor = "blk.0.attn_q.weight";
	ev.chunk_index = 3;
	ev.chunk_in_tensor = 1;
	ev.chunk_start = 100;
	ev.chunk_end = 200;
	ev.chunks_bad = 1;
	line = audit_format(&ev);
	assert_null(strchr(line, '\n'));
	o = json_loads(line, 0, &je);
	assert_non_null(o);
	const char *t = json_string_value(json_object_get(o, "time"));
	assert_non_null(t);
	assert_int_equal(strlen(t), 24); /* 2026-12-06T21:00:00.123Z */
	assert_int_equal(t[10], 'T');
	assert_int_equal(t[23], 'Z');
	assert_string_equal(json_string_value(json_object_get(o, "event")), "reverify_failed");
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "chunk"),
	    "tensor")), "blk.0.attn_q.weight");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "chunk"),
	    "end")), 200);
	assert_null(json_object_get(o, "correlation_id"));
	json_decref(o);
	free(line);
}

/* ------------------------------------------------------------ the CPU backend */

static void
noop_cq(struct cq_item *item)
{
}

/* weights_digest equals the digest of the mmap; debug_flip changes one
 * chunk of the backend's copy (a matrix in the mmap, a norm in its float
 * copy) and leaves the file alone. */
static void
test_cpu_weights_digest(void **state)
{
	struct event_base *base = event_base_new();
	struct orcd_err err;
	struct cq *cq = cq_new(base, &err);
	struct model *m;
	struct backend *b;
	struct seal_chunks cl;
	uint8_t (*want)[32], (*got)[32];
	const struct gguf_tensor *norm;
	long kn, km;

	(void)noop_cq;
	assert_non_null(cq);
	assert_int_equal(model_load(big_model, &m, &err), 0);
	assert_int_equal(backend_cpu_new(m, 2, cq, &b, &err), 0);
	assert_non_null(b->ops->weights_digest);
	assert_non_null(b->ops->debug_flip);
	assert_int_equal(seal_chunks_build(m->gguf, &cl, &err), 0);
	want = malloc(cl.n * 32);
	got = malloc(cl.n * 32);
	assert_int_equal(seal_digest_host(cl.host, cl.len, cl.n, 1, want, NULL, NULL, 0, &err), 0);
	assert_int_equal(b->ops->weights_digest(b, cl.host, cl.len, (int)cl.n, got, &err), 0);
	assert_memory_equal(want, got, cl.n * 32);

	/* a matrix byte in the middle of the data (the mmap, copy-on-write) */
	km = (long)(cl.n / 2);
	assert_int_equal(b->ops->debug_flip(b, cl.c[km].host + cl.c[km].len / 2, &err), 0);
	/* a norm weight (read from its float copy) */
	norm = gguf_find_tensor(m->gguf, "blk.1.ffn_norm.weight");
	assert_non_null(norm);
	kn = seal_chunks_find(&cl, norm->data);
	assert_true(kn >= 0);
	assert_int_equal(b->ops->debug_flip(b, (const uint8_t *)norm->data + 5, &err), 0);
	assert_int_equal(b->ops->weights_digest(b, cl.host, cl.len, (int)cl.n, got, &err), 0);
	for (size_t k = 0; k < cl.n; k++) {
		if ((long)k == km || (long)k == kn)
			assert_memory_not_equal(want[k], got[k], 32);
		else
			assert_memory_equal(want[k], got[k], 32);
	}
	/* the norm's mmap bytes are untouched: the flip hit the engine's copy */
	uint8_t d[32];
	seal_chunk_digest(cl.c[kn].host, cl.c[kn].len, d);
	assert_memory_equal(d, want[kn], 32);
	/* the file is untouched */
	{
		struct gguf_file *g;
		struct seal_chunks fl;
		uint8_t (*f)[32] = malloc(cl.n * 32);

		assert_int_equal(gguf_open(big_model, &g, &err), 0);
		assert_int_equal(seal_chunks_build(g, &fl, &err), 0);
		assert_int_equal(seal_digest_host(fl.host, fl.len, fl.n, 2, f, NULL, NULL, 0,
		    &err), 0);
		assert_memory_equal(f, want, cl.n * 32);
		seal_chunks_free(&fl);
		gguf_close(g);
		free(f);
	}
	/* flipping back restores the digest */
	assert_int_equal(b->ops->debug_flip(b, cl.c[km].host + cl.c[km].len / 2, &err), 0);
	assert_int_equal(b->ops->debug_flip(b, (const uint8_t *)norm->data + 5, &err), 0);
	assert_int_equal(b->ops->weights_digest(b, cl.host, cl.len, (int)cl.n, got, &err), 0);
	assert_memory_equal(want, got, cl.n * 32);
	/* a pointer outside the model is refused */
	assert_int_equal(b->ops->debug_flip(b, &d[0], &err), -1);

	free(want);
	free(got);
	seal_chunks_free(&cl);
	b->ops->destroy(b);
	model_free(m);
	cq_free(cq);
	event_base_free(base);
}

/* ------------------------------------------------------------ serve */

static char serve_seal[4096];

static char *
file_text(const char *path)
{
	size_t n;
	char *t = (char *)read_all(path, &n);

	t[n] = '\0';
	return t;
}

/* GET /health: the status code and the parsed body. */
static int
health(int port, json_t **body)
{
	static char resp[65536];
	json_error_t je;
	int status = test_http_get(port, "/health", resp, sizeof(resp));
	const char *b = strstr(resp, "\r\n\r\n");

	*body = b != NULL ? json_loads(b + 4, 0, &je) : NULL;
	return status;
}

static void
test_serve_sealed(void **state)
{
	struct test_server s;
	char audit_path[4096];
	json_t *h;
	char *text, *out;

	snprintf(serve_seal, sizeof(serve_seal), "%s/serve.seal", test_tmpdir);
	out = run("'%s' seal -q -m '%s' --key-file '%s' --shard-id 'serve-1' -o '%s' 2>&1; "
	    "echo rc=$?", test_orcd_bin, test_model_path, key_path, serve_seal);
	assert_non_null(strstr(out, "rc=0"));
	free(out);
	snprintf(audit_path, sizeof(audit_path), "%s/serve-ok-audit.log", test_tmpdir);
	test_server_start(&s, "sealed", "--seal", serve_seal, "--seal-key-file", key_path,
	    "--seal-reverify", "0.2", "--audit-log", audit_path, NULL);
	/* re-verifications pass and are audited */
	for (double t0 = test_now(); test_now() - t0 < 20;) {
		text = file_text(audit_path);
		if (strstr(text, "\"event\":\"reverify_ok\"") != NULL)
			break;
		free(text);
		text = NULL;
		usleep(50000);
	}
	assert_non_null(text);
	assert_non_null(strstr(text, "\"event\":\"verify_ok\""));
	assert_non_null(strstr(text, "\"shard_id\":\"serve-1\""));
	assert_null(strstr(text, secret));
	free(text);
	assert_int_equal(health(s.port, &h), 200);
	assert_true(json_is_true(json_object_get(h, "sealed")));
	assert_string_equal(json_string_value(json_object_get(h, "shard_id")), "serve-1");
	json_decref(h);
	assert_true(test_metric_double(s.port, "orcd_seal_verifications_total{result=\"ok\"} ") >= 2);
	assert_true(test_metric_double(s.port, "orcd_sealed ") == 1);
	assert_int_equal(test_server_stop(&s), 0);

	/* without --seal: no "sealed" field and no seal metrics */
	test_server_start(&s, "unsealed", NULL);
	assert_int_equal(health(s.port, &h), 200);
	assert_null(json_object_get(h, "sealed"));
	json_decref(h);
	assert_true(test_metric_double(s.port, "orcd_sealed ") < 0);
	assert_int_equal(test_server_stop(&s), 0);
}

/* The test hook flips a byte before the first re-verification: /health
 * turns 503 with sealed:false, new work gets 503, the audit log names the
 * chunk, and no key material is written anywhere. */
static void
test_serve_flip_unhealthy(void **state)
{
	static char resp[65536];
	struct test_server s;
	char audit_path[4096];
	json_t *h = NULL;
	int status = 0;
	char *text;

	assert_true(serve_seal[0] != '\0');
	snprintf(audit_path, sizeof(audit_path), "%s/serve-flip-audit.log", test_tmpdir);
	setenv("ORCD_TEST_SEAL_FLIP", "1", 1);
	test_server_start(&s, "flip", "--seal", serve_seal, "--seal-key-file", key_path,
	    "--seal-reverify", "1", "--audit-log", audit_path, NULL);
	unsetenv("ORCD_TEST_SEAL_FLIP");
	for (double t0 = test_now(); test_now() - t0 < 20; usleep(50000)) {
		json_decref(h);
		status = health(s.port, &h);
		if (status == 503 && json_is_false(json_object_get(h, "sealed")))
			break;
	}
	assert_int_equal(status, 503);
	assert_true(json_is_false(json_object_get(h, "sealed")));
	assert_true(json_is_false(json_object_get(h, "ready")));
	assert_string_equal(json_string_value(json_object_get(h, "status")), "unhealthy");
	json_decref(h);
	/* new work is refused */
	assert_int_equal(test_http_post(s.port, "/execute", "{\"prompt\":\"Once\"}", NULL,
	    resp, sizeof(resp)), 503);
	assert_non_null(strstr(resp, "seal"));
	assert_true(test_metric_double(s.port, "orcd_seal_verifications_total{result=\"failed\"} ") >= 1);
	assert_true(test_metric_double(s.port, "orcd_sealed ") == 0);

	text = file_text(audit_path);
	assert_non_null(strstr(text, "\"event\":\"verify_ok\""));
	assert_non_null(strstr(text, "\"event\":\"reverify_failed\""));
	{
		json_error_t je;
		const char *start = strstr(text, "\"event\":\"reverify_failed\"");
		while (start > text && start[-1] != '\n')
			start--;
		json_t *ev = json_loadb(start, (size_t)(strchr(start, '\n') - start), 0, &je);
		assert_non_null(ev);
		json_t *c = json_object_get(ev, "chunk");
		assert_non_null(c);
		assert_non_null(json_string_value(json_object_get(c, "tensor")));
		assert_true(json_integer_value(json_object_get(c, "end")) >
		    json_integer_value(json_object_get(c, "start")));
		assert_int_equal(json_integer_value(json_object_get(ev, "chunks_bad")), 1);
		assert_non_null(strstr(json_string_value(json_object_get(ev, "detail")),
		    json_string_value(json_object_get(c, "tensor"))));
		assert_int_equal(strlen(json_string_value(json_object_get(ev, "digest"))), 64);
		json_decref(ev);
	}
	assert_null(strstr(text, secret));
	free(text);
	assert_int_equal(test_server_stop(&s), 0);
	text = file_text(s.log);
	assert_null(strstr(text, secret));
	free(text);
	/* the model file was not changed by the flip (copy-on-write) */
	char *out = run("'%s' verify -q -m '%s' --seal '%s' --key-file '%s' 2>&1; echo rc=$?",
	    test_orcd_bin, test_model_path, serve_seal, key_path);
	assert_non_null(strstr(out, "OK: "));
	free(out);
}

/* A bad seal keeps the worker from ever becoming ready: exit non-zero with
 * the reason. */
static void
test_serve_refuses(void **state)
{
	char bad_key[4096], wrong_model_seal[4096];
	char *out;

	assert_true(serve_seal[0] != '\0');
	snprintf(bad_key, sizeof(bad_key), "%s/open.key", test_tmpdir);
	write_file(bad_key, "0123456789abcdef-test-secret\n", 29, 0644);
	snprintf(wrong_model_seal, sizeof(wrong_model_seal), "%s/big.seal", test_tmpdir);
	const struct { const char *seal, *key, *want; } c[] = {
		{ serve_seal, key2_path, "signature bad" },
		{ serve_seal, bad_key, "mode 0644" },
		{ wrong_model_seal, key_path, "differs" },
		{ "/nonexistent.seal", key_path, "/nonexistent.seal" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		out = run("'%s' serve -m '%s' --listen 127.0.0.1:0 --threads 1 --seal '%s' "
		    "--seal-key-file '%s' --ready-file '%s/never.ready' 2>&1; echo rc=$?",
		    test_orcd_bin, test_model_path, c[i].seal, c[i].key, test_tmpdir);
		if (strstr(out, c[i].want) == NULL || strstr(out, "rc=1") == NULL)
			fail_msg("case %zu: expected '%s' and rc=1: %s", i, c[i].want, out);
		assert_null(strstr(out, "ready: backend"));
		free(out);
	}
	out = run("'%s' serve -m '%s' --listen 127.0.0.1:0 --seal '%s' 2>&1; echo rc=$?",
	    test_orcd_bin, test_model_path, serve_seal);
	assert_non_null(strstr(out, "--seal and --seal-key-file go together"));
	assert_non_null(strstr(out, "rc=2"));
	free(out);
}

/* ------------------------------------------------------------ main */

static int
make_fixtures(void)
{
	struct mkmodel_opts o;
	struct orcd_err err;
	struct gguf_file *g;
	struct seal_key key;
	struct seal s;

	/* f32, 128 wide, 5000 tokens: token_embd and output are 2.56 MB each
	 * (three chunks), the rest single chunks */
	snprintf(big_model, sizeof(big_model), "%s/big.gguf", test_tmpdir);
	mkmodel_opts_init(&o, mkmodel_preset_find("tiny"));
	o.shape.n_embd = 128;
	o.shape.n_vocab = 5000;
	o.mix = MKMODEL_MIX_F32;
	o.n_threads = 2;
	if (mkmodel_write(&o, big_model, &err) != 0) {
		fprintf(stderr, "mkmodel: %s\n", err.msg);
		return -1;
	}
	snprintf(key_path, sizeof(key_path), "%s/seal.key", test_tmpdir);
	snprintf(key2_path, sizeof(key2_path), "%s/other.key", test_tmpdir);
	write_file(key_path, "0123456789abcdef-test-secret\n", 29, 0600);
	write_file(key2_path, "another-secret-of-enough-length\n", 32, 0600);
	if (seal_key_load(key_path, &key, &err) != 0 || gguf_open(big_model, &g, &err) != 0 ||
	    seal_create(g, "corpus", 1765054800, &key, 2, NULL, NULL, &s, &err) != 0) {
		fprintf(stderr, "fixtures: %s\n", err.msg);
		return -1;
	}
	seal_key_cleanse(&key);
	valid_seal = seal_dump(&s);
	valid_len = strlen(valid_seal);
	seal_free(&s);
	gguf_close(g);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunk_digest_vectors),
		cmocka_unit_test(test_merkle_root_vectors),
		cmocka_unit_test(test_signature_vector),
		cmocka_unit_test(test_chunk_list),
		cmocka_unit_test(test_seal_then_verify),
		cmocka_unit_test(test_flipped_byte_named),
		cmocka_unit_test(test_seal_file_corpus),
		cmocka_unit_test(test_shard_id_corpus),
		cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_audit_format),
		cmocka_unit_test(test_cpu_weights_digest),
		cmocka_unit_test(test_serve_sealed),
		cmocka_unit_test(test_serve_flip_unhealthy),
		cmocka_unit_test(test_serve_refuses),
	};
	int rc = test_server_init(false);

	if (rc != 0)
		return rc == 77 ? 77 : 1;
	if (make_fixtures() != 0)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	free(valid_seal);
	if (rc == 0)
		test_server_cleanup();
	return rc;
}
