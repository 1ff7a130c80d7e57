/*
 * safetensors.c - a strict reader and a small writer for the safetensors format.
 *
 * Checkpoints come from the outside world, so every field of the header is validated before a
 * single weight is touched: a truncated or corrupt file must be a clear message naming the tensor,
 * never an out-of-bounds read. The writer serves state export and the benchmark's checkpoints.
 */
#include "safetensors.h"
#include "kernels.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses headers over 100 MB; so do we. */
#define MAX_HEADER_BYTES (100u * 1024 * 1024)

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2},  [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I32] = {"I32", 4}, [ST_I64] = {"I64", 8},  [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2}, [ST_U16] = {"U16", 2},  [ST_U32] = {"U32", 4},   [ST_U64] = {"U64", 8},
    [ST_BOOL] = {"BOOL", 1},
};

size_t st_dtype_size(st_dtype t)
{
    return dtypes[t].size;
}

const char *st_dtype_name(st_dtype t)
{
    return dtypes[t].name;
}

int st_dtype_parse(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strcmp(dtypes[i].name, name) == 0) return (int)i;
    }
    return -1;
}

static int cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_name(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Parse one tensor entry into t (name already set). */
static ss_err parse_entry(st_tensor *t, json_t *v, uint64_t data_start, uint64_t data_len,
                          const char *what)
{
    if (!json_is_object(v)) {
        return ss_fail(SS_ERR_FORMAT, "%s: tensor %s: header entry is not an object", what,
                       t->name);
    }
    json_t *jd = json_object_get(v, "dtype");
    json_t *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
        json_array_size(jo) != 2) {
        return ss_fail(SS_ERR_FORMAT, "%s: tensor %s: needs dtype, shape and data_offsets [b, e]",
                       what, t->name);
    }
    int dt = st_dtype_parse(json_string_value(jd));
    if (dt < 0) {
        return ss_fail(SS_ERR_UNSUPPORTED, "%s: tensor %s: unknown dtype %s", what, t->name,
                       json_string_value(jd));
    }
    t->dtype = (st_dtype)dt;
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS) {
        return ss_fail(SS_ERR_FORMAT, "%s: tensor %s: %zu dimensions (max %d)", what, t->name, nd,
                       ST_MAX_DIMS);
    }
    t->ndim = (int)nd;
    uint64_t n = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0) {
            return ss_fail(SS_ERR_FORMAT, "%s: tensor %s: shape[%zu] is not a non-negative integer",
                           what, t->name, i);
        }
        t->shape[i] = json_integer_value(d);
        uint64_t dim = (uint64_t)t->shape[i];
        if (dim && n > UINT64_MAX / dim) {
            return ss_fail(SS_ERR_FORMAT, "%s: tensor %s: shape overflows", what, t->name);
        }
        n *= dim;
    }
    t->n_elem = n;
    json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b)) {
        return ss_fail(SS_ERR_FORMAT, "%s: tensor %s: data_offsets must be integers 0 <= b <= e",
                       what, t->name);
    }
    uint64_t ob = (uint64_t)json_integer_value(b), oe = (uint64_t)json_integer_value(e);
    if (oe > data_len) {
        return ss_fail(SS_ERR_FORMAT,
                       "%s: tensor %s: data [%llu, %llu) lies beyond the end of the file "
                       "(data section is %llu bytes): truncated?",
                       what, t->name, (unsigned long long)ob, (unsigned long long)oe,
                       (unsigned long long)data_len);
    }
    size_t es = st_dtype_size(t->dtype);
    if (n > UINT64_MAX / es || n * es != oe - ob) {
        return ss_fail(SS_ERR_FORMAT,
                       "%s: tensor %s: %llu bytes of data but shape x dtype needs %llu", what,
                       t->name, (unsigned long long)(oe - ob), (unsigned long long)(n * es));
    }
    t->offset = data_start + ob;
    t->n_bytes = oe - ob;
    return SS_OK;
}

ss_err st_parse(st_file *f, const uint8_t *base, uint64_t size, const char *what)
{
    ss_err err = SS_OK;
    json_t *root = NULL;
    memset(f, 0, sizeof *f);
    if (size < 8) return ss_fail(SS_ERR_FORMAT, "%s: %llu bytes: too short for a safetensors file",
                                 what, (unsigned long long)size);
    uint64_t hlen = read_le64(base);
    if (hlen > MAX_HEADER_BYTES || hlen > size - 8) {
        return ss_fail(SS_ERR_FORMAT,
                       "%s: header length %llu does not fit in the file (%llu bytes): truncated "
                       "or not a safetensors file",
                       what, (unsigned long long)hlen, (unsigned long long)size);
    }
    json_error_t je;
    root = json_loadb((const char *)base + 8, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        err = ss_fail(SS_ERR_FORMAT, "%s: header is not a JSON object (%s)", what,
                      root ? "wrong type" : je.text);
        goto out;
    }
    uint64_t data_start = 8 + hlen, data_len = size - data_start;
    size_t cap = json_object_size(root);
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    if (!f->tensors) {
        err = ss_fail(SS_ERR_NOMEM, "%s: out of memory", what);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                err = ss_fail(SS_ERR_FORMAT, "%s: __metadata__ is not an object", what);
                goto out;
            }
            f->metadata_json = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
            if (!f->metadata_json) {
                err = ss_fail(SS_ERR_NOMEM, "%s: out of memory", what);
                goto out;
            }
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(key);
        if (!t->name) {
            err = ss_fail(SS_ERR_NOMEM, "%s: out of memory", what);
            goto out;
        }
        f->n_tensors++;
        err = parse_entry(t, v, data_start, data_len, what);
        if (err) goto out;
        t->data = base + t->offset;
    }
    /* No two tensors may share bytes. Empty tensors take no room, so each tensor is compared
     * with the last non-empty one before it, not merely its neighbour (an empty tensor between
     * two overlapping ones hid the overlap; found by tests/fuzz). */
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_offset);
    const st_tensor *p = NULL;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!t->n_bytes) continue;
        if (p && t->offset < p->offset + p->n_bytes) {
            err = ss_fail(SS_ERR_FORMAT, "%s: tensors %s and %s overlap", what, p->name, t->name);
            goto out;
        }
        p = t;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_name);
    f->base = base;
    f->size = size;
out:
    json_decref(root);
    if (err) st_free(f);
    return err;
}

void st_free(st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->metadata_json);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f->n_tensors) return NULL;
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof key, cmp_name);
}

/* ---- conversions -------------------------------------------------------------------------- */

uint16_t st_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);                                           /* nearest even */
    return (uint16_t)(u >> 16);
}

uint16_t st_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;  /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00; /* overflow (>= 65520 rounds to inf) */
    if (a < 0x38800000u) {                      /* subnormal or zero in f16 */
        if (a < 0x33000000u) return sign;       /* below half the smallest subnormal */
        uint32_t man = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(a >> 23); /* 14..24 */
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1); /* round mantissa to 10 bits, nearest even */
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

void st_to_f32(st_dtype t, const void *src, float *dst, uint64_t n)
{
    const uint8_t *s = src;
    uint16_t h;
    switch (t) {
    case ST_F32:
        memcpy(dst, src, n * 4);
        break;
    case ST_BF16:
    case ST_F16:
        if (((uintptr_t)src & 1) == 0) {
            const kernels *k = kernels_get();
            (t == ST_BF16 ? k->widen_bf16 : k->widen_f16)(src, dst, n);
            break;
        }
        for (uint64_t i = 0; i < n; i++) { /* unaligned 16-bit data */
            memcpy(&h, s + 2 * i, 2);
            dst[i] = t == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
        break;
    default:
        for (uint64_t i = 0; i < n; i++) dst[i] = NAN;
        break;
    }
}

void st_from_f32(st_dtype t, const float *src, void *dst, uint64_t n)
{
    uint8_t *d = dst;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h = t == ST_BF16 ? st_f32_to_bf16(src[i]) : st_f32_to_f16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
    if (t == ST_F32) memcpy(dst, src, n * 4);
}

/* ---- writer ------------------------------------------------------------------------------- */

ss_err st_write_mem(const st_out_tensor *t, int n, const char *metadata_json, uint8_t **out,
                    size_t *out_len)
{
    ss_err err = SS_OK;
    json_t *hdr = json_object();
    char *htext = NULL;
    uint8_t *buf = NULL;
    if (!hdr) return ss_fail(SS_ERR_NOMEM, "out of memory");
    if (metadata_json) {
        json_error_t je;
        json_t *meta = json_loads(metadata_json, 0, &je);
        if (!json_is_object(meta)) {
            json_decref(meta);
            err = ss_fail(SS_ERR_INVALID, "safetensors metadata must be a JSON object");
            goto out;
        }
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v)
        {
            if (!json_is_string(v)) {
                /* the message first: k belongs to meta (a use after free before; tests/fuzz) */
                err = ss_fail(SS_ERR_INVALID, "safetensors metadata value %s is not a string", k);
                json_decref(meta);
                goto out;
            }
        }
        json_object_set_new(hdr, "__metadata__", meta);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t ne = 1;
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++) {
            json_array_append_new(shape, json_integer(t[i].shape[d]));
            ne *= (uint64_t)t[i].shape[d];
        }
        uint64_t nb = ne * st_dtype_size(t[i].dtype);
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_name(t[i].dtype), "shape",
                              shape, "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
        if (!e || json_object_set_new(hdr, t[i].name, e)) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
            goto out;
        }
        off += nb;
    }
    htext = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!htext) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t hl = strlen(htext), padded = (hl + 7) & ~(size_t)7;
    size_t total = 8 + padded + off;
    buf = malloc(total);
    if (!buf) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory (%zu bytes)", total);
        goto out;
    }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, htext, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    uint8_t *p = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (int d = 0; d < t[i].ndim; d++) ne *= (uint64_t)t[i].shape[d];
        size_t nb = ne * st_dtype_size(t[i].dtype);
        if (nb) memcpy(p, t[i].data, nb);
        p += nb;
    }
    *out = buf;
    *out_len = total;
    buf = NULL;
out:
    free(buf);
    free(htext);
    json_decref(hdr);
    return err;
}
