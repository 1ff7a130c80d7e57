/*
 * fuzz_state_import.c - libFuzzer target: a state file (what POST /v1/states/import receives)
 * into ss_state_import (model/state.c) against the mamba1-tiny fixture model.
 *
 * Properties: never a crash or a read outside the file; on success every imported value is
 * finite (import refuses NaN/inf), the metadata is a JSON object, and exporting the imported
 * state (F32) and importing that again gives the same floats bit for bit.
 */
#include <jansson.h>
#include <math.h>

#include "fuzz_util.h"
#include "ss_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ss_model *model;
static size_t n_floats;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[4096];
    ss_model_params p = {.n_threads = 1};
    if (ss_model_open(&model, fuzz_src_path("tests/fixtures/models/mamba1-tiny", path, sizeof path),
                      &p) != SS_OK) {
        fprintf(stderr, "fuzz_state_import: cannot load %s: %s\n", path, ss_errmsg());
        exit(1);
    }
    n_floats = ss_model_get_info(model)->state_floats;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float *a = malloc(n_floats * sizeof *a), *b = malloc(n_floats * sizeof *b);
    char *meta = NULL;
    uint8_t *file = NULL;
    size_t file_len = 0;
    if (!a || !b) goto out;
    if (ss_state_import(model, data, size, a, &meta) != SS_OK) goto out;
    for (size_t i = 0; i < n_floats; i++) FUZZ_CHECK(isfinite(a[i]), "value %zu not finite", i);
    json_error_t je;
    json_t *mj = json_loads(meta, 0, &je);
    FUZZ_CHECK(json_is_object(mj), "metadata %s is not a JSON object", meta);
    json_decref(mj);
    FUZZ_CHECK(ss_state_export(model, a, "F32", NULL, &file, &file_len) == SS_OK, "export: %s",
               ss_errmsg());
    FUZZ_CHECK(ss_state_import(model, file, file_len, b, NULL) == SS_OK, "re-import: %s",
               ss_errmsg());
    FUZZ_CHECK(!memcmp(a, b, n_floats * sizeof *a), "values changed in an export round trip");
out:
    free(file);
    free(meta);
    free(a);
    free(b);
    return 0;
}
