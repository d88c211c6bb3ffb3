/*
 * GGUF v2/v3 reader (see gguf.h).  A cursor walks the image; every read is
 * checked against the end first, every count is checked against the bytes
 * that remain before anything is allocated for it, so a hostile file can
 * neither read out of bounds nor make us allocate more than its own size.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orcd/dtype.h"
#include "gguf.h"

#define GGUF_MAGIC "GGUF"
/* Longest key or tensor name accepted (ggml itself caps names at 64). */
#define GGUF_MAX_NAME 4096

struct cursor {
	const uint8_t *base;
	size_t size;
	size_t pos;
	struct orcd_err *err;
};

static int
cur_need(struct cursor *c, uint64_t n, const char *what)
{
	if (n > c->size - c->pos)
		return orcd_errf(c->err, "gguf: truncated %s at byte offset %zu "
		    "(needs %" PRIu64 " bytes, %zu left)", what, c->pos, n,
		    c->size - c->pos);
	return 0;
}

static int
cur_read(struct cursor *c, void *dst, size_t n, const char *what)
{
	if (cur_need(c, n, what) != 0)
		return -1;
	memcpy(dst, c->base + c->pos, n);
	c->pos += n;
	return 0;
}

static int
cur_u32(struct cursor *c, uint32_t *v, const char *what)
{
	return cur_read(c, v, sizeof(*v), what);
}

static int
cur_u64(struct cursor *c, uint64_t *v, const char *what)
{
	return cur_read(c, v, sizeof(*v), what);
}

static int
cur_str(struct cursor *c, struct gguf_str *s, const char *what)
{
	uint64_t len;
	size_t at = c->pos;

	if (cur_u64(c, &len, what) != 0)
		return -1;
	if (len > c->size - c->pos)
		return orcd_errf(c->err, "gguf: %s at byte offset %zu has length "
		    "%" PRIu64 ", beyond the end of the file (%zu bytes left)",
		    what, at, len, c->size - c->pos);
	s->ptr = (const char *)c->base + c->pos;
	s->len = len;
	c->pos += len;
	return 0;
}

static size_t
vtype_size(enum gguf_vtype t)
{
	switch (t) {
	case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL:
		return 1;
	case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
		return 2;
	case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32:
		return 4;
	case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64:
		return 8;
	default:
		return 0;
	}
}

const char *
gguf_vtype_name(enum gguf_vtype t)
{
	static const char *names[GGUF_TYPE_COUNT] = {
		"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
		"bool", "string", "array", "uint64", "int64", "float64",
	};

	if ((unsigned)t >= GGUF_TYPE_COUNT)
		return "invalid";
	return names[t];
}

/* Decodes one scalar of type t at p into kv->v. */
static void
scalar_decode(struct gguf_kv *kv, enum gguf_vtype t, const uint8_t *p)
{
	uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32;
	int32_t i32; float f32; uint64_t u64; int64_t i64; double f64;

	switch (t) {
	case GGUF_TYPE_UINT8: memcpy(&u8, p, 1); kv->v.u = u8; break;
	case GGUF_TYPE_BOOL: memcpy(&u8, p, 1); kv->v.u = u8 != 0; break;
	case GGUF_TYPE_INT8: memcpy(&i8, p, 1); kv->v.i = i8; break;
	case GGUF_TYPE_UINT16: memcpy(&u16, p, 2); kv->v.u = u16; break;
	case GGUF_TYPE_INT16: memcpy(&i16, p, 2); kv->v.i = i16; break;
	case GGUF_TYPE_UINT32: memcpy(&u32, p, 4); kv->v.u = u32; break;
	case GGUF_TYPE_INT32: memcpy(&i32, p, 4); kv->v.i = i32; break;
	case GGUF_TYPE_FLOAT32: memcpy(&f32, p, 4); kv->v.f = f32; break;
	case GGUF_TYPE_UINT64: memcpy(&u64, p, 8); kv->v.u = u64; break;
	case GGUF_TYPE_INT64: memcpy(&i64, p, 8); kv->v.i = i64; break;
	case GGUF_TYPE_FLOAT64: memcpy(&f64, p, 8); kv->v.f = f64; break;
	default: break;
	}
}

static int
parse_kv(struct cursor *c, struct gguf_kv *kv, uint64_t idx)
{
	uint32_t t;
	size_t at = c->pos;

	if (cur_str(c, &kv->key, "metadata key") != 0)
		return -1;
	if (kv->key.len == 0 || kv->key.len > GGUF_MAX_NAME)
		return orcd_errf(c->err, "gguf: metadata key #%" PRIu64 " at byte "
		    "offset %zu has invalid length %" PRIu64, idx, at, kv->key.len);
	at = c->pos;
	if (cur_u32(c, &t, "metadata value type") != 0)
		return -1;
	if (t >= GGUF_TYPE_COUNT)
		return orcd_errf(c->err, "gguf: metadata key '%.*s' at byte offset "
		    "%zu has unknown value type %u", (int)kv->key.len, kv->key.ptr,
		    at, t);
	kv->type = t;
	kv->offset = c->pos;
	if (t == GGUF_TYPE_STRING)
		return cur_str(c, &kv->v.s, "metadata string value");
	if (t != GGUF_TYPE_ARRAY) {
		size_t sz = vtype_size(t);

		if (cur_need(c, sz, "metadata value") != 0)
			return -1;
		scalar_decode(kv, t, c->base + c->pos);
		c->pos += sz;
		return 0;
	}

	/* Array: element type, count, elements. */
	at = c->pos;
	if (cur_u32(c, &t, "array element type") != 0 ||
	    cur_u64(c, &kv->arr_n, "array length") != 0)
		return -1;
	if (t >= GGUF_TYPE_COUNT || t == GGUF_TYPE_ARRAY)
		return orcd_errf(c->err, "gguf: array '%.*s' at byte offset %zu has "
		    "invalid element type %u", (int)kv->key.len, kv->key.ptr, at, t);
	kv->arr_type = t;
	if (t == GGUF_TYPE_STRING) {
		/* Each string takes at least its 8-byte length. */
		if (kv->arr_n > (c->size - c->pos) / 8)
			return orcd_errf(c->err, "gguf: array '%.*s' at byte offset "
			    "%zu claims %" PRIu64 " strings, more than the file can "
			    "hold", (int)kv->key.len, kv->key.ptr, at, kv->arr_n);
		kv->arr_strs = calloc(kv->arr_n ? kv->arr_n : 1, sizeof(*kv->arr_strs));
		if (kv->arr_strs == NULL)
			return orcd_errf(c->err, "gguf: out of memory for array '%.*s'",
			    (int)kv->key.len, kv->key.ptr);
		kv->arr_data = c->base + c->pos;
		for (uint64_t i = 0; i < kv->arr_n; i++)
			if (cur_str(c, &kv->arr_strs[i], "array string element") != 0)
				return -1;
		return 0;
	}
	size_t sz = vtype_size(t);
	if (kv->arr_n > (c->size - c->pos) / sz)
		return orcd_errf(c->err, "gguf: array '%.*s' at byte offset %zu "
		    "claims %" PRIu64 " elements of %zu bytes, beyond the end of "
		    "the file", (int)kv->key.len, kv->key.ptr, at, kv->arr_n, sz);
	kv->arr_data = c->base + c->pos;
	c->pos += kv->arr_n * sz;
	return 0;
}

static int
parse_tensor(struct cursor *c, struct gguf_tensor *t, uint64_t idx)
{
	uint32_t type;
	size_t at = c->pos;
	uint64_t nel = 1, row;

	t->info_offset = at;
	if (cur_str(c, &t->name, "tensor name") != 0)
		return -1;
	if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME)
		return orcd_errf(c->err, "gguf: tensor #%" PRIu64 " at byte offset "
		    "%zu has invalid name length %" PRIu64, idx, at, t->name.len);
	if (cur_u32(c, &t->n_dims, "tensor n_dims") != 0)
		return -1;
	if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
		return orcd_errf(c->err, "gguf: tensor '%.*s' at byte offset %zu has "
		    "n_dims %u (must be 1..%d)", (int)t->name.len, t->name.ptr, at,
		    t->n_dims, GGUF_MAX_DIMS);
	for (int d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = 1;
	for (uint32_t d = 0; d < t->n_dims; d++) {
		if (cur_u64(c, &t->ne[d], "tensor dimension") != 0)
			return -1;
		if (t->ne[d] == 0 || t->ne[d] > INT64_MAX ||
		    nel > (uint64_t)INT64_MAX / t->ne[d])
			return orcd_errf(c->err, "gguf: tensor '%.*s' at byte offset "
			    "%zu: dimension %u is %" PRIu64 " (zero or overflowing)",
			    (int)t->name.len, t->name.ptr, at, d, t->ne[d]);
		nel *= t->ne[d];
	}
	at = c->pos;
	if (cur_u32(c, &type, "tensor type") != 0 ||
	    cur_u64(c, &t->offset, "tensor data offset") != 0)
		return -1;
	if (!dtype_is_weight_type((int)type))
		return orcd_errf(c->err, "gguf: tensor '%.*s' at byte offset %zu has "
		    "unsupported type %u", (int)t->name.len, t->name.ptr, at, type);
	t->type = (int)type;
	if (!dtype_row_bytes(t->type, t->ne[0], &row))
		return orcd_errf(c->err, "gguf: tensor '%.*s': row length %" PRIu64
		    " is not a multiple of the %s block size %zu", (int)t->name.len,
		    t->name.ptr, t->ne[0], dtype_name(t->type),
		    dtype_block_elems(t->type));
	uint64_t rows = nel / t->ne[0];
	if (row != 0 && rows > UINT64_MAX / row)
		return orcd_errf(c->err, "gguf: tensor '%.*s' size overflows",
		    (int)t->name.len, t->name.ptr);
	t->nbytes = rows * row;
	return 0;
}

int
gguf_parse(const void *data, size_t size, struct gguf_file **out, struct orcd_err *err)
{
	struct cursor c = { .base = data, .size = size, .pos = 0, .err = err };
	struct gguf_file *f;
	char magic[4];
	uint64_t data_size;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return orcd_errf(err, "gguf: out of memory");
	f->base = data;
	f->size = size;
	f->alignment = GGUF_DEFAULT_ALIGNMENT;

	if (cur_read(&c, magic, 4, "magic") != 0)
		goto fail;
	if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
		orcd_errf(err, "gguf: bad magic at byte offset 0 (not a GGUF file)");
		goto fail;
	}
	if (cur_u32(&c, &f->version, "version") != 0)
		goto fail;
	if (f->version != 2 && f->version != 3) {
		orcd_errf(err, "gguf: unsupported version %u at byte offset 4 "
		    "(supported: 2, 3)", f->version);
		goto fail;
	}
	if (cur_u64(&c, &f->n_tensors, "tensor count") != 0 ||
	    cur_u64(&c, &f->n_kv, "metadata count") != 0)
		goto fail;
	/* A key/value takes at least 12 bytes, a tensor descriptor at least 28. */
	if (f->n_kv > (size - c.pos) / 12) {
		orcd_errf(err, "gguf: metadata count %" PRIu64 " at byte offset 16 "
		    "exceeds what the file can hold", f->n_kv);
		goto fail;
	}
	if (f->n_tensors > (size - c.pos) / 28) {
		orcd_errf(err, "gguf: tensor count %" PRIu64 " at byte offset 8 "
		    "exceeds what the file can hold", f->n_tensors);
		goto fail;
	}
	f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
	f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
	if (f->kv == NULL || f->tensors == NULL) {
		orcd_errf(err, "gguf: out of memory");
		goto fail;
	}
	for (uint64_t i = 0; i < f->n_kv; i++)
		if (parse_kv(&c, &f->kv[i], i) != 0)
			goto fail;

	const struct gguf_kv *al = gguf_find(f, "general.alignment");
	if (al != NULL) {
		if (al->type != GGUF_TYPE_UINT32 || al->v.u == 0 ||
		    (al->v.u & (al->v.u - 1)) != 0 || al->v.u > 65536) {
			orcd_errf(err, "gguf: general.alignment at byte offset %" PRIu64
			    " must be a uint32 power of two <= 65536", al->offset);
			goto fail;
		}
		f->alignment = al->v.u;
	}

	for (uint64_t i = 0; i < f->n_tensors; i++) {
		if (parse_tensor(&c, &f->tensors[i], i) != 0)
			goto fail;
		for (uint64_t j = 0; j < i; j++)
			if (f->tensors[j].name.len == f->tensors[i].name.len &&
			    memcmp(f->tensors[j].name.ptr, f->tensors[i].name.ptr,
			    f->tensors[i].name.len) == 0) {
				orcd_errf(err, "gguf: duplicate tensor name '%.*s' at "
				    "byte offset %" PRIu64, (int)f->tensors[i].name.len,
				    f->tensors[i].name.ptr, f->tensors[i].info_offset);
				goto fail;
			}
	}

	f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
	if (f->n_tensors > 0 && f->data_offset > size) {
		orcd_errf(err, "gguf: tensor data section would start at byte offset "
		    "%" PRIu64 ", beyond the end of the file (%zu bytes)",
		    f->data_offset, size);
		goto fail;
	}
	data_size = f->data_offset <= size ? size - f->data_offset : 0;
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		struct gguf_tensor *t = &f->tensors[i];

		if (t->offset % f->alignment != 0) {
			orcd_errf(err, "gguf: tensor '%.*s' (descriptor at byte offset "
			    "%" PRIu64 ") has data offset %" PRIu64 ", not a multiple "
			    "of the alignment %" PRIu64, (int)t->name.len, t->name.ptr,
			    t->info_offset, t->offset, f->alignment);
			goto fail;
		}
		if (t->offset > data_size || t->nbytes > data_size - t->offset) {
			orcd_errf(err, "gguf: tensor '%.*s' (descriptor at byte offset "
			    "%" PRIu64 ") data [%" PRIu64 ", +%" PRIu64 ") lies beyond "
			    "the end of the file (data section holds %" PRIu64 " bytes)",
			    (int)t->name.len, t->name.ptr, t->info_offset, t->offset,
			    t->nbytes, data_size);
			goto fail;
		}
		t->data = f->base + f->data_offset + t->offset;
	}
	*out = f;
	return 0;
fail:
	gguf_close(f);
	return -1;
}

int
gguf_open(const char *path, struct gguf_file **out, struct orcd_err *err)
{
	struct stat st;
	void *map;
	int fd;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return orcd_errf(err, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		orcd_errf(err, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		close(fd);
		return orcd_errf(err, "%s: not a regular, non-empty file", path);
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return orcd_errf(err, "%s: mmap: %s", path, strerror(errno));
	if (gguf_parse(map, (size_t)st.st_size, out, err) != 0) {
		munmap(map, (size_t)st.st_size);
		orcd_err_prefix(err, path);
		return -1;
	}
	(*out)->mapped = true;
	return 0;
}

void
gguf_close(struct gguf_file *f)
{
	if (f == NULL)
		return;
	if (f->kv != NULL)
		for (uint64_t i = 0; i < f->n_kv; i++)
			free(f->kv[i].arr_strs);
	free(f->kv);
	free(f->tensors);
	if (f->mapped)
		munmap((void *)f->base, f->size);
	free(f);
}

bool
gguf_str_eq(struct gguf_str s, const char *c)
{
	size_t n = strlen(c);

	return s.len == n && memcmp(s.ptr, c, n) == 0;
}

const struct gguf_kv *
gguf_find(const struct gguf_file *f, const char *key)
{
	for (uint64_t i = 0; i < f->n_kv; i++)
		if (gguf_str_eq(f->kv[i].key, key))
			return &f->kv[i];
	return NULL;
}

const struct gguf_tensor *
gguf_find_tensor(const struct gguf_file *f, const char *name)
{
	for (uint64_t i = 0; i < f->n_tensors; i++)
		if (gguf_str_eq(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

static bool
vtype_is_signed(enum gguf_vtype t)
{
	return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 ||
	    t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

static bool
vtype_is_unsigned(enum gguf_vtype t)
{
	return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 ||
	    t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}

static int
wrong_type(const struct gguf_kv *kv, const char *want, struct orcd_err *err)
{
	return orcd_errf(err, "gguf: key '%.*s' (value at byte offset %" PRIu64
	    ") has type %s, expected %s", (int)kv->key.len, kv->key.ptr,
	    kv->offset, gguf_vtype_name(kv->type), want);
}

int
gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out, struct orcd_err *err)
{
	const struct gguf_kv *kv = gguf_find(f, key);

	if (kv == NULL)
		return 1;
	if (vtype_is_signed(kv->type)) {
		*out = kv->v.i;
		return 0;
	}
	if (vtype_is_unsigned(kv->type)) {
		if (kv->v.u > INT64_MAX)
			return orcd_errf(err, "gguf: key '%s' value %" PRIu64
			    " is out of range", key, kv->v.u);
		*out = (int64_t)kv->v.u;
		return 0;
	}
	return wrong_type(kv, "an integer", err);
}

int
gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, struct orcd_err *err)
{
	int64_t v;
	int rc = gguf_get_i64(f, key, &v, err);

	if (rc != 0)
		return rc;
	if (v < 0 || v > UINT32_MAX)
		return orcd_errf(err, "gguf: key '%s' value %" PRId64 " is out of "
		    "range for a uint32", key, v);
	*out = (uint32_t)v;
	return 0;
}

int
gguf_get_f32(const struct gguf_file *f, const char *key, float *out, struct orcd_err *err)
{
	const struct gguf_kv *kv = gguf_find(f, key);

	if (kv == NULL)
		return 1;
	if (kv->type == GGUF_TYPE_FLOAT32 || kv->type == GGUF_TYPE_FLOAT64)
		*out = (float)kv->v.f;
	else if (vtype_is_signed(kv->type))
		*out = (float)kv->v.i;
	else if (vtype_is_unsigned(kv->type))
		*out = (float)kv->v.u;
	else
		return wrong_type(kv, "a number", err);
	return 0;
}

int
gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, struct orcd_err *err)
{
	const struct gguf_kv *kv = gguf_find(f, key);

	if (kv == NULL)
		return 1;
	if (kv->type != GGUF_TYPE_BOOL)
		return wrong_type(kv, "bool", err);
	*out = kv->v.u != 0;
	return 0;
}

int
gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out, struct orcd_err *err)
{
	const struct gguf_kv *kv = gguf_find(f, key);

	if (kv == NULL)
		return 1;
	if (kv->type != GGUF_TYPE_STRING)
		return wrong_type(kv, "string", err);
	*out = kv->v.s;
	return 0;
}

int
gguf_get_arr(const struct gguf_file *f, const char *key, enum gguf_vtype elem_type,
    const struct gguf_kv **out, struct orcd_err *err)
{
	const struct gguf_kv *kv = gguf_find(f, key);

	if (kv == NULL)
		return 1;
	if (kv->type != GGUF_TYPE_ARRAY)
		return wrong_type(kv, "array", err);
	if (kv->arr_type != elem_type)
		return orcd_errf(err, "gguf: array '%s' (at byte offset %" PRIu64
		    ") holds %s elements, expected %s", key, kv->offset,
		    gguf_vtype_name(kv->arr_type), gguf_vtype_name(elem_type));
	*out = kv;
	return 0;
}

int64_t
gguf_arr_i64(const struct gguf_kv *kv, uint64_t i)
{
	struct gguf_kv tmp;
	size_t sz = vtype_size(kv->arr_type);

	if (sz == 0)
		return 0;
	scalar_decode(&tmp, kv->arr_type, kv->arr_data + i * sz);
	if (vtype_is_signed(kv->arr_type))
		return tmp.v.i;
	if (kv->arr_type == GGUF_TYPE_FLOAT32 || kv->arr_type == GGUF_TYPE_FLOAT64)
		return (int64_t)tmp.v.f;
	return (int64_t)tmp.v.u;
}

float
gguf_arr_f32(const struct gguf_kv *kv, uint64_t i)
{
	struct gguf_kv tmp;
	size_t sz = vtype_size(kv->arr_type);

	if (sz == 0)
		return 0;
	scalar_decode(&tmp, kv->arr_type, kv->arr_data + i * sz);
	if (kv->arr_type == GGUF_TYPE_FLOAT32 || kv->arr_type == GGUF_TYPE_FLOAT64)
		return (float)tmp.v.f;
	if (vtype_is_signed(kv->arr_type))
		return (float)tmp.v.i;
	return (float)tmp.v.u;
}
