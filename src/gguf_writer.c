/*
 * GGUF v3 writer (see gguf_writer.h).  Key/values are serialized into a
 * byte buffer as they are added; tensor infos are kept as a list and
 * serialized by gguf_writer_begin() once every offset is known.  All
 * multi-byte values are written little-endian byte by byte, so the output
 * does not depend on the host's byte order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orcd/dtype.h"
#include "gguf_writer.h"

#define GGUF_WRITER_MAGIC "GGUF"
#define GGUF_WRITER_VERSION 3

struct gguf_writer_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
	bool oom;		/* sticky: checked once per add */
};

struct gguf_writer_tensor {
	char *name;
	uint32_t n_dims;
	uint64_t ne[GGUF_MAX_DIMS];
	int type;
	uint64_t offset;	/* in the data section */
	uint64_t nbytes;
};

struct gguf_writer {
	uint32_t alignment;

	struct gguf_writer_buf kv;	/* serialized key/values */
	uint64_t n_kv;
	char **keys;			/* for the duplicate check */
	size_t keys_cap;

	struct gguf_writer_tensor *tensors;
	size_t n_tensors;
	size_t tensors_cap;
	uint64_t data_bytes;		/* padded size of the data section */

	/* streaming state */
	FILE *fp;
	char *path;
	char *partial;
	uint64_t header_bytes;
	size_t cur;			/* tensor being written */
	uint64_t cur_done;		/* bytes of it written */
	uint64_t written;		/* data section bytes written */
	bool finished;
};

static uint64_t
gguf_writer_pad(uint64_t n, uint64_t align)
{
	return (n + align - 1) / align * align;
}

static void
gguf_writer_buf_put(struct gguf_writer_buf *b, const void *data, size_t len)
{
	size_t ncap;
	uint8_t *np;

	if (b->oom || len == 0)
		return;
	if (b->len + len > b->cap) {
		ncap = b->cap == 0 ? 4096 : b->cap;
		while (ncap < b->len + len)
			ncap *= 2;
		np = realloc(b->p, ncap);
		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void
gguf_writer_buf_le(struct gguf_writer_buf *b, uint64_t v, size_t bytes)
{
	uint8_t tmp[8];
	size_t i;

	for (i = 0; i < bytes; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	gguf_writer_buf_put(b, tmp, bytes);
}

static void
gguf_writer_buf_str(struct gguf_writer_buf *b, const char *s, size_t len)
{
	gguf_writer_buf_le(b, len, 8);
	gguf_writer_buf_put(b, s, len);
}

/* Size in bytes of one element of a numeric/bool GGUF type; 0 otherwise. */
static size_t
gguf_writer_vtype_size(enum gguf_vtype t)
{
	switch (t) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_BOOL:
		return 1;
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_INT16:
		return 2;
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_FLOAT32:
		return 4;
	case GGUF_TYPE_UINT64:
	case GGUF_TYPE_INT64:
	case GGUF_TYPE_FLOAT64:
		return 8;
	default:
		return 0;
	}
}

struct gguf_writer *
gguf_writer_new(uint32_t alignment, struct orcd_err *err)
{
	struct gguf_writer *w;

	if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
		orcd_errf(err, "gguf_writer: alignment %u is not a power of two", alignment);
		return NULL;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		orcd_errf(err, "gguf_writer: out of memory");
		return NULL;
	}
	w->alignment = alignment;
	if (alignment != GGUF_DEFAULT_ALIGNMENT &&
	    gguf_writer_add_u32(w, "general.alignment", alignment, err) != 0) {
		gguf_writer_free(w);
		return NULL;
	}
	return w;
}

void
gguf_writer_free(struct gguf_writer *w)
{
	size_t i;

	if (w == NULL)
		return;
	if (w->fp != NULL)
		fclose(w->fp);
	if (w->partial != NULL && !w->finished)
		unlink(w->partial);
	for (i = 0; i < w->n_kv; i++)
		free(w->keys[i]);
	free(w->keys);
	for (i = 0; i < w->n_tensors; i++)
		free(w->tensors[i].name);
	free(w->tensors);
	free(w->kv.p);
	free(w->path);
	free(w->partial);
	free(w);
}

/* Checks the key, records it, and writes the key and the value type. */
static int
gguf_writer_key(struct gguf_writer *w, const char *key, enum gguf_vtype type,
    struct orcd_err *err)
{
	size_t i, ncap;
	char **nk;

	if (w->fp != NULL)
		return orcd_errf(err, "gguf_writer: key '%s' added after the header was written", key);
	if (key == NULL || key[0] == '\0')
		return orcd_errf(err, "gguf_writer: empty key");
	for (i = 0; i < w->n_kv; i++) {
		if (strcmp(w->keys[i], key) == 0)
			return orcd_errf(err, "gguf_writer: key '%s' added twice", key);
	}
	if (w->n_kv == w->keys_cap) {
		ncap = w->keys_cap == 0 ? 32 : w->keys_cap * 2;
		nk = realloc(w->keys, ncap * sizeof(*nk));
		if (nk == NULL)
			return orcd_errf(err, "gguf_writer: out of memory adding key '%s'", key);
		w->keys = nk;
		w->keys_cap = ncap;
	}
	w->keys[w->n_kv] = strdup(key);
	if (w->keys[w->n_kv] == NULL)
		return orcd_errf(err, "gguf_writer: out of memory adding key '%s'", key);
	w->n_kv++;
	gguf_writer_buf_str(&w->kv, key, strlen(key));
	gguf_writer_buf_le(&w->kv, (uint32_t)type, 4);
	return 0;
}

static int
gguf_writer_check(struct gguf_writer *w, const char *key, struct orcd_err *err)
{
	if (w->kv.oom)
		return orcd_errf(err, "gguf_writer: out of memory adding key '%s'", key);
	return 0;
}

static int
gguf_writer_add_scalar(struct gguf_writer *w, const char *key, enum gguf_vtype type,
    uint64_t bits, struct orcd_err *err)
{
	if (gguf_writer_key(w, key, type, err) != 0)
		return -1;
	gguf_writer_buf_le(&w->kv, bits, gguf_writer_vtype_size(type));
	return gguf_writer_check(w, key, err);
}

int
gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT8, v, err);
}

int
gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT8, (uint8_t)v, err);
}

int
gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT16, v, err);
}

int
gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT16, (uint16_t)v, err);
}

int
gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT32, v, err);
}

int
gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT32, (uint32_t)v, err);
}

int
gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT64, v, err);
}

int
gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT64, (uint64_t)v, err);
}

int
gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v, struct orcd_err *err)
{
	uint32_t bits;

	memcpy(&bits, &v, sizeof(bits));
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_FLOAT32, bits, err);
}

int
gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v, struct orcd_err *err)
{
	uint64_t bits;

	memcpy(&bits, &v, sizeof(bits));
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_FLOAT64, bits, err);
}

int
gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v, struct orcd_err *err)
{
	return gguf_writer_add_scalar(w, key, GGUF_TYPE_BOOL, v ? 1 : 0, err);
}

int
gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *v, size_t len,
    struct orcd_err *err)
{
	if (gguf_writer_key(w, key, GGUF_TYPE_STRING, err) != 0)
		return -1;
	gguf_writer_buf_str(&w->kv, v, len);
	return gguf_writer_check(w, key, err);
}

int
gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *v, struct orcd_err *err)
{
	return gguf_writer_add_strn(w, key, v, strlen(v), err);
}

int
gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_vtype elem_type,
    const void *data, uint64_t n, struct orcd_err *err)
{
	const uint8_t *p = data;
	size_t es, i, j;
	uint64_t bits;

	es = gguf_writer_vtype_size(elem_type);
	if (es == 0)
		return orcd_errf(err, "gguf_writer: key '%s': array element type %d is not numeric",
		    key, (int)elem_type);
	if (gguf_writer_key(w, key, GGUF_TYPE_ARRAY, err) != 0)
		return -1;
	gguf_writer_buf_le(&w->kv, (uint32_t)elem_type, 4);
	gguf_writer_buf_le(&w->kv, n, 8);
	/* Elements arrive in host order; re-emit each little-endian. */
	for (i = 0; i < n; i++) {
		bits = 0;
		switch (es) {
		case 1: bits = p[i]; break;
		case 2: { uint16_t v; memcpy(&v, p + i * 2, 2); bits = v; break; }
		case 4: { uint32_t v; memcpy(&v, p + i * 4, 4); bits = v; break; }
		default: { uint64_t v; memcpy(&v, p + i * 8, 8); bits = v; break; }
		}
		if (elem_type == GGUF_TYPE_BOOL)
			bits = bits != 0;
		for (j = 0; j < es; j++) {
			uint8_t byte = (uint8_t)(bits >> (8 * j));
			gguf_writer_buf_put(&w->kv, &byte, 1);
		}
	}
	return gguf_writer_check(w, key, err);
}

int
gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
    const size_t *lens, uint64_t n, struct orcd_err *err)
{
	uint64_t i;

	if (gguf_writer_key(w, key, GGUF_TYPE_ARRAY, err) != 0)
		return -1;
	gguf_writer_buf_le(&w->kv, GGUF_TYPE_STRING, 4);
	gguf_writer_buf_le(&w->kv, n, 8);
	for (i = 0; i < n; i++) {
		if (strs[i] == NULL)
			return orcd_errf(err, "gguf_writer: key '%s': string %llu is NULL",
			    key, (unsigned long long)i);
		gguf_writer_buf_str(&w->kv, strs[i], lens != NULL ? lens[i] : strlen(strs[i]));
	}
	return gguf_writer_check(w, key, err);
}

int
gguf_writer_add_tensor(struct gguf_writer *w, const char *name, int type, uint32_t n_dims,
    const uint64_t *ne, uint64_t *nbytes, struct orcd_err *err)
{
	struct gguf_writer_tensor *t, *nt;
	uint64_t row_bytes, rows, size;
	size_t i, ncap;
	uint32_t d;

	if (w->fp != NULL)
		return orcd_errf(err, "gguf_writer: tensor '%s' added after the header was written", name);
	if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
		return orcd_errf(err, "gguf_writer: tensor '%s': %u dimensions (1..%d allowed)",
		    name, n_dims, GGUF_MAX_DIMS);
	if (!dtype_is_weight_type(type))
		return orcd_errf(err, "gguf_writer: tensor '%s': type %d is not a weight type", name, type);
	rows = 1;
	for (d = 0; d < n_dims; d++) {
		if (ne[d] == 0)
			return orcd_errf(err, "gguf_writer: tensor '%s': dimension %u is 0", name, d);
		if (d > 0) {
			if (rows > UINT64_MAX / ne[d])
				return orcd_errf(err, "gguf_writer: tensor '%s': element count overflows", name);
			rows *= ne[d];
		}
	}
	if (!dtype_row_bytes(type, ne[0], &row_bytes))
		return orcd_errf(err, "gguf_writer: tensor '%s': row length %llu is not a multiple of "
		    "the %s block size", name, (unsigned long long)ne[0], dtype_name(type));
	if (row_bytes != 0 && rows > UINT64_MAX / 2 / row_bytes)
		return orcd_errf(err, "gguf_writer: tensor '%s': size overflows", name);
	size = row_bytes * rows;
	for (i = 0; i < w->n_tensors; i++) {
		if (strcmp(w->tensors[i].name, name) == 0)
			return orcd_errf(err, "gguf_writer: tensor '%s' added twice", name);
	}
	if (w->n_tensors == w->tensors_cap) {
		ncap = w->tensors_cap == 0 ? 64 : w->tensors_cap * 2;
		nt = realloc(w->tensors, ncap * sizeof(*nt));
		if (nt == NULL)
			return orcd_errf(err, "gguf_writer: out of memory adding tensor '%s'", name);
		w->tensors = nt;
		w->tensors_cap = ncap;
	}
	t = &w->tensors[w->n_tensors];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (t->name == NULL)
		return orcd_errf(err, "gguf_writer: out of memory adding tensor '%s'", name);
	t->n_dims = n_dims;
	for (d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = d < n_dims ? ne[d] : 1;
	t->type = type;
	t->offset = w->data_bytes;
	t->nbytes = size;
	w->data_bytes += gguf_writer_pad(size, w->alignment);
	w->n_tensors++;
	if (nbytes != NULL)
		*nbytes = size;
	return 0;
}

/* Serializes header, key/values and tensor infos into one buffer. */
static int
gguf_writer_header(struct gguf_writer *w, struct gguf_writer_buf *b, struct orcd_err *err)
{
	static const uint8_t zeros[64];
	const struct gguf_writer_tensor *t;
	uint64_t padded;
	size_t i;
	uint32_t d;

	gguf_writer_buf_put(b, GGUF_WRITER_MAGIC, 4);
	gguf_writer_buf_le(b, GGUF_WRITER_VERSION, 4);
	gguf_writer_buf_le(b, w->n_tensors, 8);
	gguf_writer_buf_le(b, w->n_kv, 8);
	gguf_writer_buf_put(b, w->kv.p, w->kv.len);
	for (i = 0; i < w->n_tensors; i++) {
		t = &w->tensors[i];
		gguf_writer_buf_str(b, t->name, strlen(t->name));
		gguf_writer_buf_le(b, t->n_dims, 4);
		for (d = 0; d < t->n_dims; d++)
			gguf_writer_buf_le(b, t->ne[d], 8);
		gguf_writer_buf_le(b, (uint32_t)t->type, 4);
		gguf_writer_buf_le(b, t->offset, 8);
	}
	padded = gguf_writer_pad(b->len, w->alignment);
	while (b->len < padded) {
		size_t n = padded - b->len;
		gguf_writer_buf_put(b, zeros, n < sizeof(zeros) ? n : sizeof(zeros));
		if (b->oom)
			break;
	}
	if (b->oom)
		return orcd_errf(err, "gguf_writer: out of memory building the header");
	return 0;
}

int
gguf_writer_begin(struct gguf_writer *w, const char *path, struct orcd_err *err)
{
	struct gguf_writer_buf hdr = { 0 };
	size_t plen;

	if (w->fp != NULL || w->finished)
		return orcd_errf(err, "gguf_writer: %s: already begun", path);
	if (w->kv.oom)
		return orcd_errf(err, "gguf_writer: out of memory");
	plen = strlen(path);
	w->path = strdup(path);
	w->partial = malloc(plen + sizeof(".partial"));
	if (w->path == NULL || w->partial == NULL)
		return orcd_errf(err, "gguf_writer: out of memory");
	memcpy(w->partial, path, plen);
	memcpy(w->partial + plen, ".partial", sizeof(".partial"));
	if (gguf_writer_header(w, &hdr, err) != 0)
		goto fail;
	w->fp = fopen(w->partial, "wb");
	if (w->fp == NULL) {
		orcd_errf(err, "gguf_writer: cannot create %s: %s", w->partial, strerror(errno));
		goto fail;
	}
	/* Large stdio buffer: tensor data arrives in chunks of a few MB. */
	setvbuf(w->fp, NULL, _IOFBF, 1 << 20);
	if (fwrite(hdr.p, 1, hdr.len, w->fp) != hdr.len) {
		orcd_errf(err, "gguf_writer: writing the header of %s: %s", w->partial, strerror(errno));
		goto fail;
	}
	w->header_bytes = hdr.len;
	free(hdr.p);
	return 0;
fail:
	free(hdr.p);
	return -1;
}

/* Writes the padding after tensor w->cur and moves to the next one. */
static int
gguf_writer_next_tensor(struct gguf_writer *w, struct orcd_err *err)
{
	static const uint8_t zeros[256];
	uint64_t pad;
	const struct gguf_writer_tensor *t = &w->tensors[w->cur];

	pad = gguf_writer_pad(t->nbytes, w->alignment) - t->nbytes;
	while (pad > 0) {
		size_t n = pad < sizeof(zeros) ? (size_t)pad : sizeof(zeros);
		if (fwrite(zeros, 1, n, w->fp) != n)
			return orcd_errf(err, "gguf_writer: writing %s: %s", w->partial, strerror(errno));
		pad -= n;
		w->written += n;
	}
	w->cur++;
	w->cur_done = 0;
	return 0;
}

int
gguf_writer_write(struct gguf_writer *w, const void *data, size_t len, struct orcd_err *err)
{
	const uint8_t *p = data;
	const struct gguf_writer_tensor *t;
	uint64_t left;
	size_t n;

	if (w->fp == NULL)
		return orcd_errf(err, "gguf_writer: data written before gguf_writer_begin");
	while (len > 0) {
		/* Every tensor has at least one byte (dimensions are > 0),
		 * so finishing one always moves cur forward. */
		if (w->cur >= w->n_tensors)
			return orcd_errf(err, "gguf_writer: %s: %zu bytes of data past the last tensor",
			    w->partial, len);
		t = &w->tensors[w->cur];
		left = t->nbytes - w->cur_done;
		n = len < left ? len : (size_t)left;
		if (fwrite(p, 1, n, w->fp) != n)
			return orcd_errf(err, "gguf_writer: writing tensor '%s' to %s: %s",
			    t->name, w->partial, strerror(errno));
		p += n;
		len -= n;
		w->cur_done += n;
		w->written += n;
		if (w->cur_done == t->nbytes && gguf_writer_next_tensor(w, err) != 0)
			return -1;
	}
	return 0;
}

int
gguf_writer_finish(struct gguf_writer *w, struct orcd_err *err)
{
	FILE *fp;

	if (w->fp == NULL)
		return orcd_errf(err, "gguf_writer: finish before gguf_writer_begin");
	if (w->cur < w->n_tensors)
		return orcd_errf(err, "gguf_writer: %s: tensor '%s' has %llu of %llu bytes written",
		    w->partial, w->tensors[w->cur].name, (unsigned long long)w->cur_done,
		    (unsigned long long)w->tensors[w->cur].nbytes);
	fp = w->fp;
	w->fp = NULL;
	if (fflush(fp) != 0 || ferror(fp)) {
		orcd_errf(err, "gguf_writer: writing %s: %s", w->partial, strerror(errno));
		fclose(fp);
		return -1;
	}
	if (fclose(fp) != 0)
		return orcd_errf(err, "gguf_writer: closing %s: %s", w->partial, strerror(errno));
	if (rename(w->partial, w->path) != 0)
		return orcd_errf(err, "gguf_writer: renaming %s to %s: %s", w->partial, w->path,
		    strerror(errno));
	w->finished = true;
	return 0;
}

uint64_t
gguf_writer_header_bytes(const struct gguf_writer *w)
{
	uint64_t n;
	size_t i;

	if (w->fp != NULL || w->finished)
		return w->header_bytes;
	n = 4 + 4 + 8 + 8 + w->kv.len;
	for (i = 0; i < w->n_tensors; i++)
		n += 8 + strlen(w->tensors[i].name) + 4 + 8 * (uint64_t)w->tensors[i].n_dims + 4 + 8;
	return gguf_writer_pad(n, w->alignment);
}

uint64_t
gguf_writer_file_bytes(const struct gguf_writer *w)
{
	return gguf_writer_header_bytes(w) + w->data_bytes;
}

uint64_t
gguf_writer_data_written(const struct gguf_writer *w)
{
	return w->written;
}
