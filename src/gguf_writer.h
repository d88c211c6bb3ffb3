/*
 * GGUF v3 writer.  Metadata key/values and tensor descriptors are collected
 * in memory (they are small), then gguf_writer_begin() writes the header,
 * the key/values and the tensor infos, and tensor data is streamed after it
 * in the order the tensors were added, so a model of any size is written
 * without holding its weights.  Tensor offsets are packed and padded to the
 * alignment as llama.cpp's loader requires (each offset equals the sum of
 * the padded sizes before it).
 *
 * The file is written as PATH.partial and renamed to PATH by
 * gguf_writer_finish(), so a failed or interrupted run leaves no file that
 * looks complete.
 */
#ifndef ORCD_GGUF_WRITER_H
#define ORCD_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

struct gguf_writer;

/* alignment: a power of two; GGUF_DEFAULT_ALIGNMENT unless there is a
 * reason.  A non-default alignment is recorded as general.alignment. */
struct gguf_writer *gguf_writer_new(uint32_t alignment, struct orcd_err *err);
/* Removes PATH.partial if the file was begun and not finished. */
void gguf_writer_free(struct gguf_writer *w);

/*
 * Metadata.  Keys must be unique (a duplicate is an error).  The scalar
 * setters take the value in the named GGUF type.
 */
int gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v, struct orcd_err *err);
int gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v, struct orcd_err *err);
int gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v, struct orcd_err *err);
int gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v, struct orcd_err *err);
int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v, struct orcd_err *err);
int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v, struct orcd_err *err);
int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v, struct orcd_err *err);
int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v, struct orcd_err *err);
int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v, struct orcd_err *err);
int gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v, struct orcd_err *err);
int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v, struct orcd_err *err);
/* NUL-terminated string. */
int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *v, struct orcd_err *err);
/* String of len bytes (may contain NUL). */
int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *v, size_t len,
    struct orcd_err *err);
/* Array of n numeric or bool elements of elem_type, packed little-endian in
 * data (bool: one byte each). */
int gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_vtype elem_type,
    const void *data, uint64_t n, struct orcd_err *err);
/* Array of n strings; lens may be NULL for NUL-terminated strings. */
int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
    const size_t *lens, uint64_t n, struct orcd_err *err);

/*
 * Tensors, in file order.  ne[0] is the row length (the fastest-varying
 * dimension, as in GGUF); type is an enum orcd_dtype and ne[0] must be a
 * whole number of its blocks.  The data size is returned in *nbytes if not
 * NULL.
 */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, int type, uint32_t n_dims,
    const uint64_t *ne, uint64_t *nbytes, struct orcd_err *err);

/* Creates PATH.partial and writes everything before the tensor data. */
int gguf_writer_begin(struct gguf_writer *w, const char *path, struct orcd_err *err);
/* Appends tensor data: the tensors' bytes in order, in pieces of any size
 * (a piece may span tensors).  Padding between tensors is inserted here. */
int gguf_writer_write(struct gguf_writer *w, const void *data, size_t len, struct orcd_err *err);
/* Checks that every tensor's data was written, closes and renames the file. */
int gguf_writer_finish(struct gguf_writer *w, struct orcd_err *err);

/* Bytes of metadata (header, key/values, tensor infos, padding) and of the
 * whole file; valid after the last add. */
uint64_t gguf_writer_header_bytes(const struct gguf_writer *w);
uint64_t gguf_writer_file_bytes(const struct gguf_writer *w);
/* Tensor data bytes appended so far (padding included). */
uint64_t gguf_writer_data_written(const struct gguf_writer *w);

#endif
