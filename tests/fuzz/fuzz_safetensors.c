/*
 * fuzz_safetensors.c - libFuzzer target: a safetensors image (checkpoint or state file) into
 * st_parse (model/safetensors.c), the parser every checkpoint header and state import goes
 * through.
 *
 * Properties: st_parse never reads outside the image; on failure the st_file is left zeroed; on
 * success every tensor lies inside the file, its byte count is its element count times its dtype
 * size, no two tensors share a byte, the tensors are sorted by name and st_find finds each,
 * and the float dtypes convert (reading every byte). Written back with st_write_mem, the parsed
 * file parses again to the same names, dtypes, shapes, bytes and metadata.
 */
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static void same_tensors(const st_file *a, const st_file *b)
{
    FUZZ_CHECK(a->n_tensors == b->n_tensors, "%d tensors, %d after a round trip", a->n_tensors,
               b->n_tensors);
    for (int i = 0; i < a->n_tensors; i++) {
        const st_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        FUZZ_CHECK(!strcmp(x->name, y->name) && x->dtype == y->dtype && x->ndim == y->ndim &&
                       x->n_bytes == y->n_bytes && !memcmp(x->shape, y->shape, sizeof x->shape),
                   "tensor %d (%s) changed in a round trip", i, x->name);
        FUZZ_CHECK(!x->n_bytes || !memcmp(x->data, y->data, x->n_bytes),
                   "tensor %s: bytes changed in a round trip", x->name);
    }
    FUZZ_CHECK(!a->metadata_json == !b->metadata_json &&
                   (!a->metadata_json || !strcmp(a->metadata_json, b->metadata_json)),
               "metadata changed in a round trip");
}

static int cmp_span(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* No two tensors with bytes share one (empty tensors take no room, wherever they point). */
static void no_overlap(const st_file *f)
{
    const st_tensor **v = malloc(((size_t)f->n_tensors + 1) * sizeof *v);
    if (!v) return;
    int n = 0;
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].n_bytes) v[n++] = &f->tensors[i];
    qsort(v, (size_t)n, sizeof *v, cmp_span);
    for (int i = 1; i < n; i++)
        FUZZ_CHECK(v[i]->offset >= v[i - 1]->offset + v[i - 1]->n_bytes, "%s and %s overlap",
                   v[i - 1]->name, v[i]->name);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file f;
    memset(&f, 0xA5, sizeof f); /* st_parse must set every field, success or not */
    if (st_parse(&f, data, size, "fuzz input") != SS_OK) {
        FUZZ_CHECK(!f.tensors && !f.n_tensors && !f.metadata_json, "failed parse left state");
        return 0;
    }
    FUZZ_CHECK(f.base == data && f.size == size, "base/size");
    no_overlap(&f);
    float *tmp = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "%s: ndim %d", t->name, t->ndim);
        FUZZ_CHECK(n == t->n_elem, "%s: shape product %llu, n_elem %llu", t->name,
                   (unsigned long long)n, (unsigned long long)t->n_elem);
        FUZZ_CHECK(t->n_bytes == t->n_elem * st_dtype_size(t->dtype), "%s: n_bytes", t->name);
        FUZZ_CHECK(t->offset <= size && t->n_bytes <= size - t->offset,
                   "%s: [%llu, +%llu) outside the file", t->name,
                   (unsigned long long)t->offset, (unsigned long long)t->n_bytes);
        FUZZ_CHECK(t->data == data + t->offset, "%s: data pointer", t->name);
        FUZZ_CHECK(st_find(&f, t->name) == t, "st_find(%s)", t->name);
        FUZZ_CHECK(i == 0 || strcmp(f.tensors[i - 1].name, t->name) < 0, "not sorted by name");
        FUZZ_CHECK(st_dtype_parse(st_dtype_name(t->dtype)) == (int)t->dtype, "dtype name");
        if ((t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) && t->n_elem) {
            float *nt = realloc(tmp, t->n_elem * sizeof *tmp);
            if (!nt) continue;
            tmp = nt;
            st_to_f32(t->dtype, t->data, tmp, t->n_elem);
        }
    }
    free(tmp);

    /* Round trip through the writer. */
    st_out_tensor *out = calloc((size_t)f.n_tensors + 1, sizeof *out);
    if (out) {
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            out[i] = (st_out_tensor){.name = t->name, .dtype = t->dtype, .ndim = t->ndim,
                                     .data = t->data};
            memcpy(out[i].shape, t->shape, sizeof t->shape);
        }
        uint8_t *buf = NULL;
        size_t len = 0;
        if (st_write_mem(out, f.n_tensors, f.metadata_json, &buf, &len) == SS_OK) {
            st_file g;
            FUZZ_CHECK(st_parse(&g, buf, len, "round trip") == SS_OK, "rewritten file: %s",
                       ss_errmsg());
            same_tensors(&f, &g);
            st_free(&g);
            free(buf);
        }
        free(out);
    }
    st_free(&f);
    return 0;
}
