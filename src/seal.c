/*
 * Sealed models (see seal.h and doc/seal.md): digests, keys, signatures and
 * the seal file.  Everything cryptographic is OpenSSL 3 (EVP digests, the
 * HKDF KDF, the HMAC MAC, CRYPTO_memcmp, OPENSSL_cleanse).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "gguf.h"
#include "seal.h"

#define SEAL_SALT "orcd-seal-v1"
#define SEAL_INFO "orcd seal signing key"
#define SEAL_MAX_LEAVES (SEAL_CHUNK_BYTES / SEAL_BLOCK_BYTES)

/* ------------------------------------------------------------ digests */

/* SHA-256 fetched once: an implicit fetch per EVP_DigestInit costs a
 * lookup and a lock on every 4 KiB block. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *
sha256(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_md != NULL ? sha256_md : EVP_sha256();
}

/* out = SHA256(prefix || a || b); b may be NULL. */
static void
hash_node(EVP_MD_CTX *ctx, uint8_t prefix, const void *a, size_t na, const void *b,
    size_t nb, uint8_t out[32])
{
	unsigned int olen = 32;

	if (EVP_DigestInit_ex2(ctx, sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, &prefix, 1) != 1 ||
	    EVP_DigestUpdate(ctx, a, na) != 1 ||
	    (b != NULL && EVP_DigestUpdate(ctx, b, nb) != 1) ||
	    EVP_DigestFinal_ex(ctx, out, &olen) != 1) {
		/* only a broken OpenSSL gets here: never a digest that could match */
		memset(out, 0, 32);
		out[0] = 0xff;
	}
}

/* Folds n >= 1 nodes in place to their root in nodes[0]. */
static void
merkle_fold(EVP_MD_CTX *ctx, uint8_t (*nodes)[32], size_t n)
{
	while (n > 1) {
		size_t i;

		for (i = 0; i + 1 < n; i += 2)
			hash_node(ctx, 0x01, nodes[i], 32, nodes[i + 1], 32, nodes[i / 2]);
		if (n % 2 == 1)
			memmove(nodes[n / 2], nodes[n - 1], 32);
		n = (n + 1) / 2;
	}
}

void
seal_chunk_digest(const void *data, size_t n, uint8_t out[32])
{
	uint8_t leaves[SEAL_MAX_LEAVES][32];
	const uint8_t *p = data;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t nl = 0;

	if (ctx == NULL || n == 0 || n > SEAL_CHUNK_BYTES) {
		EVP_MD_CTX_free(ctx);
		memset(out, 0, 32);
		out[0] = 0xff;
		return;
	}
	for (size_t off = 0; off < n; off += SEAL_BLOCK_BYTES) {
		size_t bn = n - off < SEAL_BLOCK_BYTES ? n - off : SEAL_BLOCK_BYTES;

		hash_node(ctx, 0x00, p + off, bn, NULL, 0, leaves[nl++]);
	}
	merkle_fold(ctx, leaves, nl);
	memcpy(out, leaves[0], 32);
	EVP_MD_CTX_free(ctx);
}

void
seal_merkle_root(const uint8_t (*digests)[32], size_t n, uint8_t out[32])
{
	uint8_t (*nodes)[32];
	EVP_MD_CTX *ctx;

	memset(out, 0, 32);
	if (n == 0)
		return;
	if (n == 1) {
		memcpy(out, digests[0], 32);
		return;
	}
	nodes = malloc(n * 32);
	ctx = EVP_MD_CTX_new();
	if (nodes == NULL || ctx == NULL) {
		out[0] = 0xff;
		goto out;
	}
	memcpy(nodes, digests, n * 32);
	merkle_fold(ctx, nodes, n);
	memcpy(out, nodes[0], 32);
out:
	free(nodes);
	EVP_MD_CTX_free(ctx);
}

void
seal_hex(const uint8_t *p, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[p[i] >> 4];
		out[2 * i + 1] = hx[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ------------------------------------------------------------ chunks */

int
seal_chunks_build(const struct gguf_file *g, struct seal_chunks *out,
    struct orcd_err *err)
{
	size_t n = 0, k = 0;

	memset(out, 0, sizeof(*out));
	if (g->n_tensors > UINT32_MAX)
		return orcd_errf(err, "seal: %" PRIu64 " tensors is too many", g->n_tensors);
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		uint64_t nb = g->tensors[i].nbytes;

		n += (size_t)((nb + SEAL_CHUNK_BYTES - 1) / SEAL_CHUNK_BYTES);
		if (n > SEAL_MAX_CHUNKS)
			return orcd_errf(err, "seal: the model has more than %d chunks",
			    SEAL_MAX_CHUNKS);
	}
	if (n == 0)
		return orcd_errf(err, "seal: the model has no tensor data");
	out->c = calloc(n, sizeof(*out->c));
	out->host = calloc(n, sizeof(*out->host));
	out->len = calloc(n, sizeof(*out->len));
	if (out->c == NULL || out->host == NULL || out->len == NULL) {
		seal_chunks_free(out);
		return orcd_errf(err, "seal: out of memory for %zu chunks", n);
	}
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct gguf_tensor *t = &g->tensors[i];

		for (uint64_t off = 0, ci = 0; off < t->nbytes; off += SEAL_CHUNK_BYTES, ci++) {
			struct seal_chunk *c = &out->c[k];
			uint64_t left = t->nbytes - off;

			c->host = (const uint8_t *)t->data + off;
			c->len = (uint32_t)(left < SEAL_CHUNK_BYTES ? left : SEAL_CHUNK_BYTES);
			c->tensor = (uint32_t)i;
			c->index = (uint32_t)ci;
			c->file_offset = g->data_offset + t->offset + off;
			out->host[k] = c->host;
			out->len[k] = c->len;
			out->data_bytes += c->len;
			k++;
		}
	}
	out->n = n;
	return 0;
}

void
seal_chunks_free(struct seal_chunks *cl)
{
	free(cl->c);
	free(cl->host);
	free(cl->len);
	memset(cl, 0, sizeof(*cl));
}

long
seal_chunks_find(const struct seal_chunks *cl, const void *p)
{
	const uint8_t *q = p;
	size_t lo = 0, hi = cl->n;

	/* chunks are in file order, so their host pointers ascend */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (q < cl->c[mid].host)
			hi = mid;
		else if (q >= cl->c[mid].host + cl->c[mid].len)
			lo = mid + 1;
		else
			return (long)mid;
	}
	return -1;
}

void
seal_chunk_describe(const struct gguf_file *g, const struct seal_chunk *c,
    char *buf, size_t len)
{
	const struct gguf_tensor *t = &g->tensors[c->tensor];

	snprintf(buf, len, "tensor '%.*s' chunk %u, file bytes [%" PRIu64 ", %" PRIu64 ")",
	    (int)(t->name.len > 96 ? 96 : t->name.len), t->name.ptr, c->index,
	    c->file_offset, c->file_offset + c->len);
}

/* ------------------------------------------------------------ host digests */

struct digest_job {
	const void *const *host;
	const uint32_t *len;
	size_t n;
	uint8_t (*out)[32];
	atomic_size_t next;
	atomic_size_t done;
	atomic_uint_fast64_t bytes;
	int running;               /* workers not finished (under mu) */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void *
digest_worker(void *arg)
{
	struct digest_job *j = arg;

	for (;;) {
		size_t c = atomic_fetch_add(&j->next, 1);

		if (c >= j->n)
			break;
		seal_chunk_digest(j->host[c], j->len[c], j->out[c]);
		atomic_fetch_add(&j->bytes, j->len[c]);
		atomic_fetch_add(&j->done, 1);
	}
	pthread_mutex_lock(&j->mu);
	j->running--;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

int
seal_digest_host(const void *const *host, const uint32_t *len, size_t n,
    int n_threads, uint8_t (*out)[32], seal_progress_fn progress, void *arg,
    double interval_s, struct orcd_err *err)
{
	struct digest_job j;
	pthread_t th[256];
	uint64_t total = 0;
	int started = 0;

	for (size_t c = 0; c < n; c++) {
		if (len[c] == 0 || len[c] > SEAL_CHUNK_BYTES)
			return orcd_errf(err, "seal: chunk %zu has length %u (1 .. %u)", c,
			    len[c], SEAL_CHUNK_BYTES);
		total += len[c];
	}
	if (n_threads <= 0) {
		long nc = sysconf(_SC_NPROCESSORS_ONLN);

		n_threads = nc > 0 ? (int)nc : 1;
	}
	if (n_threads > 256)
		n_threads = 256;
	if ((size_t)n_threads > n)
		n_threads = n > 0 ? (int)n : 1;
	if (n_threads == 1 && progress == NULL) {
		for (size_t c = 0; c < n; c++)
			seal_chunk_digest(host[c], len[c], out[c]);
		return 0;
	}
	memset(&j, 0, sizeof(j));
	j.host = host;
	j.len = len;
	j.n = n;
	j.out = out;
	atomic_init(&j.next, 0);
	atomic_init(&j.done, 0);
	atomic_init(&j.bytes, 0);
	pthread_mutex_init(&j.mu, NULL);
	pthread_cond_init(&j.cv, NULL);
	pthread_mutex_lock(&j.mu);
	for (int i = 0; i < n_threads; i++) {
		if (pthread_create(&th[i], NULL, digest_worker, &j) != 0)
			break;
		started++;
		j.running++;
	}
	if (started == 0) {
		pthread_mutex_unlock(&j.mu);
		/* no thread at all: do it here */
		for (size_t c = 0; c < n; c++)
			seal_chunk_digest(host[c], len[c], out[c]);
		goto done;
	}
	while (j.running > 0) {
		struct timespec ts;
		double when;

		clock_gettime(CLOCK_REALTIME, &ts);
		when = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 +
		    (interval_s > 0 ? interval_s : 1.0);
		ts.tv_sec = (time_t)when;
		ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
		pthread_cond_timedwait(&j.cv, &j.mu, &ts);
		if (progress != NULL && j.running > 0) {
			pthread_mutex_unlock(&j.mu);
			progress(arg, atomic_load(&j.bytes), total, atomic_load(&j.done), n);
			pthread_mutex_lock(&j.mu);
		}
	}
	pthread_mutex_unlock(&j.mu);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
done:
	if (progress != NULL)
		progress(arg, total, total, n, n);
	pthread_mutex_destroy(&j.mu);
	pthread_cond_destroy(&j.cv);
	return 0;
}

static void
put_u32(EVP_MD_CTX *ctx, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	EVP_DigestUpdate(ctx, b, 4);
}

static void
put_u64(EVP_MD_CTX *ctx, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	EVP_DigestUpdate(ctx, b, 8);
}

void
seal_tensor_table_hash(const struct gguf_file *g, uint8_t out[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int olen = 32;

	memset(out, 0, 32);
	out[0] = 0xff;
	if (ctx == NULL || EVP_DigestInit_ex2(ctx, sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return;
	}
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct gguf_tensor *t = &g->tensors[i];

		put_u64(ctx, t->name.len);
		EVP_DigestUpdate(ctx, t->name.ptr, (size_t)t->name.len);
		put_u32(ctx, t->n_dims);
		for (uint32_t d = 0; d < t->n_dims && d < GGUF_MAX_DIMS; d++)
			put_u64(ctx, t->ne[d]);
		put_u32(ctx, (uint32_t)t->type);
		put_u64(ctx, g->data_offset + t->offset);
		put_u64(ctx, t->nbytes);
	}
	if (EVP_DigestFinal_ex(ctx, out, &olen) != 1) {
		memset(out, 0, 32);
		out[0] = 0xff;
	}
	EVP_MD_CTX_free(ctx);
}

/* ------------------------------------------------------------ keys */

int
seal_key_derive(const uint8_t *ikm, size_t n, struct seal_key *key, struct orcd_err *err)
{
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kctx = NULL;
	OSSL_PARAM params[5];
	int rc = -1;

	if (n < SEAL_KEY_MIN)
		return orcd_errf(err, "the key is %zu bytes; at least %d are needed", n,
		    SEAL_KEY_MIN);
	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (kdf == NULL || (kctx = EVP_KDF_CTX_new(kdf)) == NULL) {
		orcd_errf(err, "OpenSSL: HKDF is not available");
		goto out;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, n);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
	    (void *)SEAL_SALT, strlen(SEAL_SALT));
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
	    (void *)SEAL_INFO, strlen(SEAL_INFO));
	params[4] = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, key->k, sizeof(key->k), params) != 1) {
		orcd_errf(err, "OpenSSL: HKDF-SHA256 derivation failed");
		goto out;
	}
	rc = 0;
out:
	if (rc != 0)
		OPENSSL_cleanse(key->k, sizeof(key->k));
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return rc;
}

void
seal_key_cleanse(struct seal_key *key)
{
	OPENSSL_cleanse(key->k, sizeof(key->k));
}

int
seal_key_load(const char *path, struct seal_key *key, struct orcd_err *err)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	struct stat st;
	int fd, rc = -1;

	memset(key, 0, sizeof(*key));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return orcd_errf(err, "key file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		orcd_errf(err, "key file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		orcd_errf(err, "key file %s: not a regular file", path);
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		orcd_errf(err, "key file %s has mode %04o: it must not be readable or "
		    "writable by group or others (chmod 600 %s)", path,
		    (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	if (st.st_size > SEAL_KEY_FILE_MAX) {
		orcd_errf(err, "key file %s: %lld bytes, more than %d", path,
		    (long long)st.st_size, SEAL_KEY_FILE_MAX);
		goto out;
	}
	if ((buf = malloc(SEAL_KEY_FILE_MAX + 1)) == NULL) {
		orcd_errf(err, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, SEAL_KEY_FILE_MAX + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			orcd_errf(err, "key file %s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > SEAL_KEY_FILE_MAX) {
			orcd_errf(err, "key file %s: more than %d bytes", path, SEAL_KEY_FILE_MAX);
			goto out;
		}
	}
	/* one trailing newline (an editor's or echo's) is not part of the key */
	if (n > 0 && buf[n - 1] == '\n') {
		n--;
		if (n > 0 && buf[n - 1] == '\r')
			n--;
	}
	if (n < SEAL_KEY_MIN) {
		orcd_errf(err, "key file %s: the key is %zu bytes; at least %d are needed",
		    path, n, SEAL_KEY_MIN);
		goto out;
	}
	if (seal_key_derive(buf, n, key, err) != 0) {
		orcd_err_prefix(err, path);
		goto out;
	}
	rc = 0;
out:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, SEAL_KEY_FILE_MAX + 1);
		free(buf);
	}
	close(fd);
	return rc;
}

/* ------------------------------------------------------------ fields */

int
seal_shard_id_valid(const char *s, struct orcd_err *err)
{
	size_t n;

	if (s == NULL || *s == '\0')
		return orcd_errf(err, "shard_id: must not be empty");
	n = strnlen(s, SEAL_SHARD_ID_MAX + 1);
	if (n > SEAL_SHARD_ID_MAX)
		return orcd_errf(err, "shard_id: longer than %d characters", SEAL_SHARD_ID_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
		    ch == '-')
			continue;
		if (ch == '/' || ch == '\\')
			return orcd_errf(err, "shard_id: byte %zu is a path separator "
			    "('%c'); allowed are A-Z a-z 0-9 . _ : -", i, ch);
		if (ch < 0x20 || ch == 0x7f)
			return orcd_errf(err, "shard_id: byte %zu is a control character "
			    "(0x%02x); allowed are A-Z a-z 0-9 . _ : -", i, ch);
		if (ch >= 0x80)
			return orcd_errf(err, "shard_id: byte %zu is not ASCII (0x%02x); "
			    "allowed are A-Z a-z 0-9 . _ : -", i, ch);
		return orcd_errf(err, "shard_id: character %zu ('%c') is not allowed; "
		    "allowed are A-Z a-z 0-9 . _ : -", i, ch);
	}
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return orcd_errf(err, "shard_id: '%s' is not allowed (a path component)", s);
	return 0;
}

void
seal_time_format(time_t t, char *out, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* YYYY-MM-DDTHH:MM:SSZ with plausible ranges. */
static bool
time_valid(const char *s)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:ddZ";
	int mo, d, h, mi, se;

	if (strlen(s) != sizeof(pat) - 1)
		return false;
	for (size_t i = 0; pat[i] != '\0'; i++) {
		if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
			return false;
	}
	mo = (s[5] - '0') * 10 + s[6] - '0';
	d = (s[8] - '0') * 10 + s[9] - '0';
	h = (s[11] - '0') * 10 + s[12] - '0';
	mi = (s[14] - '0') * 10 + s[15] - '0';
	se = (s[17] - '0') * 10 + s[18] - '0';
	return mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 && mi <= 59 && se <= 60;
}

int
seal_message(const struct seal *s, char *buf, size_t len)
{
	char dh[65], th[65];
	int n;

	seal_hex(s->digest, 32, dh);
	seal_hex(s->tensor_table, 32, th);
	n = snprintf(buf, len, "orcd-seal-v1\ndigest=%s\nfile_size=%" PRIu64 "\n"
	    "tensor_table=%s\nshard_id=%s\ncreated=%s\nchunk_bytes=%u\nblock_bytes=%u\n",
	    dh, s->file_size, th, s->shard_id, s->created, SEAL_CHUNK_BYTES,
	    SEAL_BLOCK_BYTES);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

static int
seal_hmac(const struct seal *s, const struct seal_key *key, uint8_t out[32],
    struct orcd_err *err)
{
	char msg[1024];
	int n = seal_message(s, msg, sizeof(msg));
	EVP_MAC *mac = NULL;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	size_t olen = 0;
	int rc = -1;

	if (n < 0)
		return orcd_errf(err, "seal: the signed message is too long");
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac == NULL || (ctx = EVP_MAC_CTX_new(mac)) == NULL) {
		orcd_errf(err, "OpenSSL: HMAC is not available");
		goto out;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(ctx, key->k, sizeof(key->k), params) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)msg, (size_t)n) != 1 ||
	    EVP_MAC_final(ctx, out, &olen, 32) != 1 || olen != 32) {
		orcd_errf(err, "OpenSSL: HMAC-SHA256 failed");
		goto out;
	}
	rc = 0;
out:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return rc;
}

int
seal_sign(struct seal *s, const struct seal_key *key, struct orcd_err *err)
{
	return seal_hmac(s, key, s->signature, err);
}

int
seal_check_signature(const struct seal *s, const struct seal_key *key,
    struct orcd_err *err)
{
	uint8_t want[32];

	if (seal_hmac(s, key, want, err) != 0)
		return -1;
	if (CRYPTO_memcmp(want, s->signature, 32) != 0)
		return orcd_errf(err, "signature bad: the seal was not signed with this key, "
		    "or its signed fields (digest, file_size, tensor_table, shard_id, "
		    "created) were changed");
	return 0;
}

int
seal_create(const struct gguf_file *g, const char *shard_id, time_t created,
    const struct seal_key *key, int n_threads, seal_progress_fn progress, void *arg,
    struct seal *out, struct orcd_err *err)
{
	struct seal_chunks cl;

	memset(out, 0, sizeof(*out));
	if (seal_shard_id_valid(shard_id, err) != 0)
		return -1;
	if (seal_chunks_build(g, &cl, err) != 0)
		return -1;
	out->chunks = malloc(cl.n * 32);
	if (out->chunks == NULL) {
		seal_chunks_free(&cl);
		return orcd_errf(err, "seal: out of memory for %zu chunk digests", cl.n);
	}
	out->n_chunks = cl.n;
	if (seal_digest_host(cl.host, cl.len, cl.n, n_threads, out->chunks, progress, arg,
	    1.0, err) != 0)
		goto fail;
	seal_merkle_root((const uint8_t (*)[32])out->chunks, cl.n, out->digest);
	out->file_size = g->size;
	seal_tensor_table_hash(g, out->tensor_table);
	snprintf(out->shard_id, sizeof(out->shard_id), "%s", shard_id);
	seal_time_format(created, out->created, sizeof(out->created));
	if (seal_sign(out, key, err) != 0)
		goto fail;
	seal_chunks_free(&cl);
	return 0;
fail:
	seal_chunks_free(&cl);
	seal_free(out);
	return -1;
}

void
seal_free(struct seal *s)
{
	free(s->chunks);
	memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------ the file */

char *
seal_dump(const struct seal *s)
{
	char hex[65];
	json_t *o = json_object(), *chunks = json_array();
	char *text = NULL;

	if (o == NULL || chunks == NULL)
		goto out;
	json_object_set_new(o, "format", json_string(SEAL_FORMAT));
	json_object_set_new(o, "version", json_integer(SEAL_VERSION));
	seal_hex(s->digest, 32, hex);
	json_object_set_new(o, "digest", json_string(hex));
	json_object_set_new(o, "file_size", json_integer((json_int_t)s->file_size));
	seal_hex(s->tensor_table, 32, hex);
	json_object_set_new(o, "tensor_table", json_string(hex));
	json_object_set_new(o, "shard_id", json_string(s->shard_id));
	json_object_set_new(o, "created", json_string(s->created));
	json_object_set_new(o, "chunk_bytes", json_integer(SEAL_CHUNK_BYTES));
	json_object_set_new(o, "block_bytes", json_integer(SEAL_BLOCK_BYTES));
	json_object_set_new(o, "n_chunks", json_integer((json_int_t)s->n_chunks));
	for (size_t i = 0; i < s->n_chunks; i++) {
		seal_hex(s->chunks[i], 32, hex);
		json_array_append_new(chunks, json_string(hex));
	}
	json_object_set(o, "chunks", chunks);
	seal_hex(s->signature, 32, hex);
	json_object_set_new(o, "signature", json_string(hex));
	text = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
out:
	json_decref(chunks);
	json_decref(o);
	return text;
}

int
seal_write(const struct seal *s, const char *path, struct orcd_err *err)
{
	char tmp[4096];
	char *text = seal_dump(s);
	size_t n, off = 0;
	int fd;

	if (text == NULL)
		return orcd_errf(err, "seal: out of memory");
	n = strlen(text);
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		free(text);
		return orcd_errf(err, "%s: path too long", path);
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(text);
		return orcd_errf(err, "%s: %s", tmp, strerror(errno));
	}
	text[n++] = '\n'; /* replaces the NUL: written with its length */
	while (off < n) {
		ssize_t w = write(fd, text + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			orcd_errf(err, "%s: %s", tmp, w < 0 ? strerror(errno) : "short write");
			goto fail;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0) {
		orcd_errf(err, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		orcd_errf(err, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		orcd_errf(err, "%s: %s", path, strerror(errno));
		goto fail;
	}
	free(text);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(text);
	return -1;
}

static int
get_hex(json_t *o, const char *key, uint8_t out[32], struct orcd_err *err)
{
	json_t *v = json_object_get(o, key);
	const char *s;

	if (v == NULL)
		return orcd_errf(err, "%s: missing", key);
	if (!json_is_string(v))
		return orcd_errf(err, "%s: must be a string of 64 lowercase hex digits", key);
	s = json_string_value(v);
	if (json_string_length(v) != 64)
		return orcd_errf(err, "%s: %zu characters, must be 64 lowercase hex digits",
		    key, json_string_length(v));
	for (int i = 0; i < 64; i++) {
		int c = (unsigned char)s[i];
		int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

		if (x < 0)
			return orcd_errf(err, "%s: character %d is not a lowercase hex digit",
			    key, i);
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)(x << 4);
		else
			out[i / 2] |= (uint8_t)x;
	}
	return 0;
}

static int
get_int(json_t *o, const char *key, json_int_t lo, json_int_t hi, json_int_t *out,
    struct orcd_err *err)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL)
		return orcd_errf(err, "%s: missing", key);
	if (!json_is_integer(v))
		return orcd_errf(err, "%s: must be an integer", key);
	*out = json_integer_value(v);
	if (*out < lo || *out > hi)
		return orcd_errf(err, "%s: %lld is out of range [%lld, %lld]", key,
		    (long long)*out, (long long)lo, (long long)hi);
	return 0;
}

static const char *
get_str(json_t *o, const char *key, struct orcd_err *err)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL) {
		orcd_errf(err, "%s: missing", key);
		return NULL;
	}
	if (!json_is_string(v)) {
		orcd_errf(err, "%s: must be a string", key);
		return NULL;
	}
	return json_string_value(v);
}

int
seal_parse(const char *buf, size_t len, struct seal *out, struct orcd_err *err)
{
	static const char *known[] = { "format", "version", "digest", "file_size",
	    "tensor_table", "shard_id", "created", "chunk_bytes", "block_bytes",
	    "n_chunks", "chunks", "signature" };
	json_error_t je;
	json_t *o, *v, *arr;
	const char *key, *s;
	json_int_t x;
	uint8_t root[32];
	struct orcd_err ferr;

	memset(out, 0, sizeof(*out));
	if (len > SEAL_FILE_MAX)
		return orcd_errf(err, "seal file: %zu bytes, more than %u", len, SEAL_FILE_MAX);
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (o == NULL)
		return orcd_errf(err, "seal file: not JSON: %s at line %d column %d", je.text,
		    je.line, je.column);
	if (!json_is_object(o)) {
		orcd_errf(err, "seal file: not a JSON object");
		goto fail;
	}
	json_object_foreach(o, key, v) {
		size_t i;

		for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (i == sizeof(known) / sizeof(known[0])) {
			orcd_errf(&ferr, "unknown field '%.64s'", key);
			goto field_fail;
		}
	}
	if ((s = get_str(o, "format", &ferr)) == NULL)
		goto field_fail;
	if (strcmp(s, SEAL_FORMAT) != 0) {
		orcd_errf(&ferr, "format: '%.64s' is not \"%s\"", s, SEAL_FORMAT);
		goto field_fail;
	}
	if (get_int(o, "version", INT64_MIN, INT64_MAX, &x, &ferr) != 0)
		goto field_fail;
	if (x != SEAL_VERSION) {
		orcd_errf(&ferr, "version: %lld is not supported (this orcd reads version %d)",
		    (long long)x, SEAL_VERSION);
		goto field_fail;
	}
	if (get_hex(o, "digest", out->digest, &ferr) != 0)
		goto field_fail;
	if (get_int(o, "file_size", 0, INT64_MAX, &x, &ferr) != 0)
		goto field_fail;
	out->file_size = (uint64_t)x;
	if (get_hex(o, "tensor_table", out->tensor_table, &ferr) != 0)
		goto field_fail;
	if ((s = get_str(o, "shard_id", &ferr)) == NULL)
		goto field_fail;
	if (strlen(s) != json_string_length(json_object_get(o, "shard_id"))) {
		orcd_errf(&ferr, "shard_id: contains a NUL byte");
		goto field_fail;
	}
	if (seal_shard_id_valid(s, &ferr) != 0)
		goto field_fail;
	snprintf(out->shard_id, sizeof(out->shard_id), "%s", s);
	if ((s = get_str(o, "created", &ferr)) == NULL)
		goto field_fail;
	if (!time_valid(s)) {
		orcd_errf(&ferr, "created: '%.40s' is not an RFC 3339 UTC time "
		    "(YYYY-MM-DDTHH:MM:SSZ)", s);
		goto field_fail;
	}
	snprintf(out->created, sizeof(out->created), "%s", s);
	if (get_int(o, "chunk_bytes", INT64_MIN, INT64_MAX, &x, &ferr) != 0)
		goto field_fail;
	if (x != SEAL_CHUNK_BYTES) {
		orcd_errf(&ferr, "chunk_bytes: %lld is not %u", (long long)x, SEAL_CHUNK_BYTES);
		goto field_fail;
	}
	if (get_int(o, "block_bytes", INT64_MIN, INT64_MAX, &x, &ferr) != 0)
		goto field_fail;
	if (x != SEAL_BLOCK_BYTES) {
		orcd_errf(&ferr, "block_bytes: %lld is not %u", (long long)x, SEAL_BLOCK_BYTES);
		goto field_fail;
	}
	if (get_int(o, "n_chunks", 1, SEAL_MAX_CHUNKS, &x, &ferr) != 0)
		goto field_fail;
	out->n_chunks = (size_t)x;
	arr = json_object_get(o, "chunks");
	if (arr == NULL) {
		orcd_errf(&ferr, "chunks: missing");
		goto field_fail;
	}
	if (!json_is_array(arr)) {
		orcd_errf(&ferr, "chunks: must be an array of digests");
		goto field_fail;
	}
	if (json_array_size(arr) != out->n_chunks) {
		orcd_errf(&ferr, "chunks: %zu digests, but n_chunks is %zu",
		    json_array_size(arr), out->n_chunks);
		goto field_fail;
	}
	out->chunks = malloc(out->n_chunks * 32);
	if (out->chunks == NULL) {
		orcd_errf(&ferr, "chunks: out of memory");
		goto field_fail;
	}
	for (size_t i = 0; i < out->n_chunks; i++) {
		json_t *wrap = json_object();
		char name[48];
		int rc;

		snprintf(name, sizeof(name), "chunks[%zu]", i);
		json_object_set(wrap, name, json_array_get(arr, i));
		rc = get_hex(wrap, name, out->chunks[i], &ferr);
		json_decref(wrap);
		if (rc != 0)
			goto field_fail;
	}
	if (get_hex(o, "signature", out->signature, &ferr) != 0)
		goto field_fail;
	/* the chunk list is covered by the signature through its root */
	seal_merkle_root((const uint8_t (*)[32])out->chunks, out->n_chunks, root);
	if (CRYPTO_memcmp(root, out->digest, 32) != 0) {
		orcd_errf(&ferr, "chunks: their Merkle root is not digest (the chunk list "
		    "was changed)");
		goto field_fail;
	}
	json_decref(o);
	return 0;
field_fail:
	orcd_errf(err, "seal file: %s", ferr.msg);
fail:
	json_decref(o);
	seal_free(out);
	return -1;
}

int
seal_read(const char *path, struct seal *out, struct orcd_err *err)
{
	struct stat st;
	char *buf;
	size_t n = 0;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return orcd_errf(err, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return orcd_errf(err, "%s: not a regular file", path);
	}
	if (st.st_size > (off_t)SEAL_FILE_MAX) {
		close(fd);
		return orcd_errf(err, "%s: %lld bytes, a seal file is at most %u", path,
		    (long long)st.st_size, SEAL_FILE_MAX);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		close(fd);
		return orcd_errf(err, "%s: out of memory", path);
	}
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			orcd_errf(err, "%s: %s", path, strerror(errno));
			close(fd);
			free(buf);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	rc = seal_parse(buf, n, out, err);
	free(buf);
	if (rc != 0)
		orcd_err_prefix(err, path);
	return rc;
}

/* ------------------------------------------------------------ comparison */

int
seal_check_model(const struct seal *s, const struct gguf_file *g, struct orcd_err *err)
{
	uint8_t tt[32];
	char a[65], b[65];

	if (s->file_size != (uint64_t)g->size)
		return orcd_errf(err, "file size differs: the seal says %" PRIu64 " bytes, "
		    "the model is %zu bytes", s->file_size, g->size);
	seal_tensor_table_hash(g, tt);
	if (CRYPTO_memcmp(tt, s->tensor_table, 32) != 0) {
		seal_hex(s->tensor_table, 32, a);
		seal_hex(tt, 32, b);
		return orcd_errf(err, "tensor table differs: the model's tensor names, "
		    "shapes, types or offsets are not the sealed ones (sealed %s, model %s)",
		    a, b);
	}
	return 0;
}

int
seal_compare(const struct seal *s, const struct gguf_file *g,
    const struct seal_chunks *cl, const uint8_t (*digests)[32],
    struct seal_diff *diff, struct orcd_err *err)
{
	char where[256];

	memset(diff, 0, sizeof(*diff));
	seal_merkle_root(digests, cl->n, diff->root);
	if (cl->n != s->n_chunks) {
		diff->n_bad = cl->n > s->n_chunks ? cl->n : s->n_chunks;
		return orcd_errf(err, "chunk count differs: the seal has %zu chunks, the "
		    "model %zu", s->n_chunks, cl->n);
	}
	if (CRYPTO_memcmp(diff->root, s->digest, 32) == 0)
		return 0;
	for (size_t i = 0; i < cl->n; i++) {
		if (CRYPTO_memcmp(digests[i], s->chunks[i], 32) == 0)
			continue;
		if (diff->n_listed < sizeof(diff->first_bad) / sizeof(diff->first_bad[0]))
			diff->first_bad[diff->n_listed++] = i;
		diff->n_bad++;
	}
	if (diff->n_bad == 0) /* the seal file's own check makes this unreachable */
		return orcd_errf(err, "digest differs but every chunk matches");
	seal_chunk_describe(g, &cl->c[diff->first_bad[0]], where, sizeof(where));
	return orcd_errf(err, "chunk %zu of %zu differs: %s; %zu of %zu chunks differ",
	    diff->first_bad[0], cl->n, where, diff->n_bad, cl->n);
}
