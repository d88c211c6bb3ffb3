/*
 * GGUF v2/v3 reader.  Parses a file image (mmap'd, or any buffer: the
 * in-memory entry point is the fuzz target) into an index of metadata
 * key/values and tensor descriptors.  Every count, length, offset, size and
 * alignment is checked against the image; nothing is read outside it.
 * Strings point into the image and are not NUL-terminated.
 */
#ifndef ORCD_GGUF_H
#define ORCD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum gguf_vtype {
	GGUF_TYPE_UINT8 = 0,
	GGUF_TYPE_INT8 = 1,
	GGUF_TYPE_UINT16 = 2,
	GGUF_TYPE_INT16 = 3,
	GGUF_TYPE_UINT32 = 4,
	GGUF_TYPE_INT32 = 5,
	GGUF_TYPE_FLOAT32 = 6,
	GGUF_TYPE_BOOL = 7,
	GGUF_TYPE_STRING = 8,
	GGUF_TYPE_ARRAY = 9,
	GGUF_TYPE_UINT64 = 10,
	GGUF_TYPE_INT64 = 11,
	GGUF_TYPE_FLOAT64 = 12,
	GGUF_TYPE_COUNT
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

struct gguf_str {
	const char *ptr;
	uint64_t len;
};

struct gguf_kv {
	struct gguf_str key;
	enum gguf_vtype type;
	uint64_t offset;           /* byte offset of the value in the file */
	union {                    /* scalars */
		uint64_t u;        /* unsigned integers and bool */
		int64_t i;         /* signed integers */
		double f;          /* float32 / float64 */
		struct gguf_str s; /* string */
	} v;
	/* arrays (type == GGUF_TYPE_ARRAY) */
	enum gguf_vtype arr_type;
	uint64_t arr_n;
	const uint8_t *arr_data;   /* packed elements (numeric arrays) */
	struct gguf_str *arr_strs; /* arr_n entries (string arrays) */
};

struct gguf_tensor {
	struct gguf_str name;
	uint32_t n_dims;
	uint64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
	int type;                   /* enum orcd_dtype */
	uint64_t offset;            /* relative to the data section */
	uint64_t nbytes;
	const void *data;           /* inside the image */
	uint64_t info_offset;       /* byte offset of its descriptor */
};

struct gguf_file {
	const uint8_t *base;
	size_t size;
	uint32_t version;
	uint64_t n_kv;
	struct gguf_kv *kv;
	uint64_t n_tensors;
	struct gguf_tensor *tensors;
	uint64_t alignment;
	uint64_t data_offset;       /* start of the tensor data section */
	bool mapped;                /* base is an mmap of a file */
};

/* Parses size bytes at data (which must outlive the result). */
int gguf_parse(const void *data, size_t size, struct gguf_file **out, struct orcd_err *err);
/* mmaps path read-only and parses it. */
int gguf_open(const char *path, struct gguf_file **out, struct orcd_err *err);
void gguf_close(struct gguf_file *f);

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

/* Typed getters: 0 if found and convertible, 1 if absent, -1 (with err) if
 * present with an incompatible type or an out-of-range value.  Integer
 * getters accept any integer type whose value fits. */
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, struct orcd_err *err);
int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out, struct orcd_err *err);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, struct orcd_err *err);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, struct orcd_err *err);
int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out, struct orcd_err *err);
/* Arrays: elem_type is checked; returns the kv for direct access. */
int gguf_get_arr(const struct gguf_file *f, const char *key, enum gguf_vtype elem_type,
    const struct gguf_kv **out, struct orcd_err *err);

/* True if s equals the NUL-terminated string c. */
bool gguf_str_eq(struct gguf_str s, const char *c);
const char *gguf_vtype_name(enum gguf_vtype t);

/* Reads element i of a numeric array kv as int64 / float (no bounds check
 * beyond i < arr_n, which the caller guarantees). */
int64_t gguf_arr_i64(const struct gguf_kv *kv, uint64_t i);
float gguf_arr_f32(const struct gguf_kv *kv, uint64_t i);

#endif
