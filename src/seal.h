/*
 * Sealed models (doc/seal.md): a Merkle SHA-256 digest over a GGUF file's
 * tensor data, signed with HMAC-SHA256 under a key derived by HKDF-SHA256
 * from a secret in a key file, and kept in a small JSON seal file.
 *
 * Layout: every tensor's data, in tensor-table order, is cut into 1 MiB
 * chunks (the last one shorter; empty tensors give none).  A chunk's digest
 * is the Merkle root over its 4 KiB blocks (leaf = SHA256(0x00 || block),
 * parent = SHA256(0x01 || left || right), an odd last node moves up
 * unchanged); the model digest is the same tree over the chunk digests.
 *
 * This header is also included from C++ (bench/seal-bench.cu).
 */
#ifndef ORCD_SEAL_H
#define ORCD_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "err.h"

#define SEAL_FORMAT "orcd-seal"
#define SEAL_VERSION 1
#define SEAL_CHUNK_BYTES 1048576u
#define SEAL_BLOCK_BYTES 4096u
#define SEAL_SHARD_ID_MAX 256
#define SEAL_KEY_MIN 16              /* bytes of secret, at least */
#define SEAL_KEY_FILE_MAX 65536      /* a key file larger than this is an error */
#define SEAL_FILE_MAX (64u << 20)    /* a seal file larger than this is an error */
#define SEAL_MAX_CHUNKS 0x7fffffff   /* the backend op counts chunks in an int */

struct gguf_file;

/* ------------------------------------------------------------ digests */

/* The Merkle root over data's 4 KiB blocks; 1 <= n <= SEAL_CHUNK_BYTES
 * (outside that range out is a value no real digest matches). */
void seal_chunk_digest(const void *data, size_t n, uint8_t out[32]);
/* The Merkle root over n >= 1 digests (leaves are the digests themselves);
 * n == 0 gives 32 zero bytes. */
void seal_merkle_root(const uint8_t (*digests)[32], size_t n, uint8_t out[32]);

/* One chunk of a model's tensor data. */
struct seal_chunk {
	const uint8_t *host;     /* into the GGUF image (the mmap) */
	uint32_t len;            /* 1 .. SEAL_CHUNK_BYTES */
	uint32_t tensor;         /* index in the GGUF tensor table */
	uint32_t index;          /* chunk number within that tensor */
	uint64_t file_offset;    /* absolute byte offset of host in the file */
};

struct seal_chunks {
	struct seal_chunk *c;
	size_t n;
	uint64_t data_bytes;     /* sum of len */
	/* the same as parallel arrays, the form the backend op takes */
	const void **host;
	uint32_t *len;
};

int seal_chunks_build(const struct gguf_file *g, struct seal_chunks *out,
    struct orcd_err *err);
void seal_chunks_free(struct seal_chunks *cl);
/* Finds the chunk holding the byte at host pointer p; -1 if none. */
long seal_chunks_find(const struct seal_chunks *cl, const void *p);
/* "tensor 'blk.0.attn_q.weight' chunk 2, file bytes [a, b)" */
void seal_chunk_describe(const struct gguf_file *g, const struct seal_chunk *c,
    char *buf, size_t len);

/* Progress of a long digest: bytes and chunks done so far. */
typedef void (*seal_progress_fn)(void *arg, uint64_t bytes_done, uint64_t bytes_total,
    size_t chunks_done, size_t n_chunks);

/* Chunk digests of n chunks on the host, with n_threads threads (<= 0: the
 * online CPUs); progress (may be NULL) runs on the calling thread about
 * every interval_s seconds. */
int seal_digest_host(const void *const *host, const uint32_t *len, size_t n,
    int n_threads, uint8_t (*out)[32], seal_progress_fn progress, void *arg,
    double interval_s, struct orcd_err *err);

/* SHA-256 over the tensor table (doc/seal.md gives the byte layout). */
void seal_tensor_table_hash(const struct gguf_file *g, uint8_t out[32]);

/* ------------------------------------------------------------ keys */

struct seal_key {
	uint8_t k[32];           /* HKDF-SHA256 output: the HMAC key */
};

/* Reads the secret from path (a regular file, no group/other permission
 * bits, at least SEAL_KEY_MIN bytes after one trailing newline is
 * stripped) and derives the signing key.  Every copy of the secret is
 * cleansed before return. */
int seal_key_load(const char *path, struct seal_key *key, struct orcd_err *err);
int seal_key_derive(const uint8_t *ikm, size_t n, struct seal_key *key,
    struct orcd_err *err);
void seal_key_cleanse(struct seal_key *key);

/* ------------------------------------------------------------ seals */

struct seal {
	uint8_t digest[32];
	uint64_t file_size;
	uint8_t tensor_table[32];
	char shard_id[SEAL_SHARD_ID_MAX + 1];
	char created[32];            /* RFC 3339 UTC: 2026-12-06T21:00:00Z */
	size_t n_chunks;
	uint8_t (*chunks)[32];       /* n_chunks digests */
	uint8_t signature[32];
};

/* 0 if s is a valid shard id: 1 .. 256 characters of [A-Za-z0-9._:-], not
 * "." or ".." (no separators, spaces, control or non-ASCII bytes). */
int seal_shard_id_valid(const char *s, struct orcd_err *err);

/* Formats t as RFC 3339 UTC (out: at least 21 bytes). */
void seal_time_format(time_t t, char *out, size_t len);

/* The signed message (doc/seal.md); returns its length (< len), or -1. */
int seal_message(const struct seal *s, char *buf, size_t len);
int seal_sign(struct seal *s, const struct seal_key *key, struct orcd_err *err);
/* 0 when the signature is the HMAC of the fields under key (compared in
 * constant time); -1 with "signature bad ..." otherwise. */
int seal_check_signature(const struct seal *s, const struct seal_key *key,
    struct orcd_err *err);

/* Digests the model's tensor data on the host and fills a signed seal. */
int seal_create(const struct gguf_file *g, const char *shard_id, time_t created,
    const struct seal_key *key, int n_threads, seal_progress_fn progress, void *arg,
    struct seal *out, struct orcd_err *err);

/* The JSON text (caller frees), or the file (written via path.tmp). */
char *seal_dump(const struct seal *s);
int seal_write(const struct seal *s, const char *path, struct orcd_err *err);
/* Parses and validates every field; errors name the field. */
int seal_parse(const char *buf, size_t len, struct seal *out, struct orcd_err *err);
int seal_read(const char *path, struct seal *out, struct orcd_err *err);
void seal_free(struct seal *s);

/* Checks the model's file size and tensor table against the seal. */
int seal_check_model(const struct seal *s, const struct gguf_file *g,
    struct orcd_err *err);

/* What a comparison of digests found. */
struct seal_diff {
	size_t n_bad;                /* chunks whose digest differs */
	size_t first_bad[8];         /* the first of them, up to 8 */
	size_t n_listed;
	uint8_t root[32];            /* root over the digests compared */
};

/* Compares chunk digests (cl->n of them) with the seal: the root with
 * CRYPTO_memcmp against the signed digest, then chunk by chunk to name the
 * ones that differ.  0 when equal; -1 with err naming the first differing
 * chunk (tensor, chunk, byte range) and how many differ. */
int seal_compare(const struct seal *s, const struct gguf_file *g,
    const struct seal_chunks *cl, const uint8_t (*digests)[32],
    struct seal_diff *diff, struct orcd_err *err);

void seal_hex(const uint8_t *p, size_t n, char *out);

#endif
