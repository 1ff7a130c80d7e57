/*
 * safetensors.h - parse and write the safetensors format (internal to model/ and its tests).
 *
 * File layout: u64 little-endian header length N, N bytes of JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
 * then the data section; offsets are relative to the start of the data section.
 */
#ifndef SS_SAFETENSORS_H
#define SS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

typedef enum st_dtype {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I32,
    ST_I64,
    ST_U8,
    ST_I8,
    ST_I16,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_BOOL,
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t n_elem;
    const uint8_t *data; /* into the file's bytes */
    uint64_t n_bytes;
    uint64_t offset; /* from the start of the file */
} st_tensor;

typedef struct st_file {
    const uint8_t *base; /* whole file */
    uint64_t size;
    st_tensor *tensors; /* sorted by name (st_find searches them) */
    int n_tensors;
    char *metadata_json; /* __metadata__ as JSON text, or NULL */
} st_file;

/* Bytes per element of a dtype. */
size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);
/* Parse a dtype name ("F32"); -1 if unknown. */
int st_dtype_parse(const char *name);

/*
 * Parse and validate the header of a safetensors image of `size` bytes at `base` (which must stay
 * valid while *f is used). Checks: header length within the file, valid JSON object, every
 * tensor's dtype known, shape non-negative with a product matching the byte range, offsets
 * inside the data section, no two tensors overlapping, no duplicate names. `what` (the file name)
 * prefixes error messages. On failure *f is left zeroed.
 */
ss_err st_parse(st_file *f, const uint8_t *base, uint64_t size, const char *what);
void st_free(st_file *f);
/* Tensor by name or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/* Convert n elements of F32/F16/BF16 at src into float32 dst. Unaligned src is fine. */
void st_to_f32(st_dtype t, const void *src, float *dst, uint64_t n);
/* Convert float32 to F16/BF16 (round to nearest even), n elements. */
void st_from_f32(st_dtype t, const float *src, void *dst, uint64_t n);
/* One float32 to BF16 / F16, rounded to nearest even (NaN stays NaN, overflow becomes inf). */
uint16_t st_f32_to_bf16(float f);
uint16_t st_f32_to_f16(float f);

/* ---- writer ----------------------------------------------------------------------------- */

typedef struct st_out_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* n_elem * dtype size bytes, already in `dtype` */
} st_out_tensor;

/*
 * Serialise tensors (in the given order) with optional metadata (JSON object text whose values
 * are strings, or NULL) into a malloc'd buffer. The header is padded with spaces so the data
 * section starts 8-byte aligned (as the reference writer does).
 */
ss_err st_write_mem(const st_out_tensor *t, int n, const char *metadata_json, uint8_t **out,
                    size_t *out_len);

#endif
