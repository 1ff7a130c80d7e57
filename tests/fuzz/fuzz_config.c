/*
 * fuzz_config.c - libFuzzer target: a config.json into ss_model_open (model/checkpoint.c:
 * relaxed JSON parsing, parse_config, and the shape checks of every tensor against it).
 *
 * Each input is written as config.json into a scratch folder whose model.safetensors is a link
 * to a fixture checkpoint of the family the input names (model_type / architectures: Mamba-1,
 * Mamba-2 or MoE-Mamba; Mamba-1 when it names none), so configs near the real ones load.
 * Properties: the load fails with an error (never a crash, a read outside a buffer, undefined
 * arithmetic or a leak) or gives a model whose info agrees with its state layout, and that model
 * computes logits from the zero state.
 */
#include <jansson.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "ss_model.h"
#include "ss_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FAM_MAMBA1, FAM_MAMBA2, FAM_MOE, N_FAM };
static const char *const fixture[N_FAM] = {"mamba1-tiny", "mamba2-tiny", "moe-mamba-switch"};
static char dir[N_FAM][32];

static void cleanup(void)
{
    char p[256];
    for (int i = 0; i < N_FAM; i++) {
        if (!dir[i][0]) continue;
        snprintf(p, sizeof p, "%s/config.json", dir[i]);
        unlink(p);
        snprintf(p, sizeof p, "%s/model.safetensors", dir[i]);
        unlink(p);
        rmdir(dir[i]);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (int i = 0; i < N_FAM; i++) {
        char src[8192], rel[256], link[256];
        snprintf(dir[i], sizeof dir[i], "/tmp/ss-fuzz-config-XXXXXX");
        if (!mkdtemp(dir[i])) {
            perror("fuzz_config: mkdtemp");
            exit(1);
        }
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/model.safetensors", fixture[i]);
        char rel_src[4096], cwd[2048] = ".";
        fuzz_src_path(rel, rel_src, sizeof rel_src);
        if (rel_src[0] != '/' && !getcwd(cwd, sizeof cwd)) exit(1);
        /* the link must work from the scratch folder: make a relative root absolute */
        snprintf(src, sizeof src, "%s%s%s", rel_src[0] == '/' ? "" : cwd,
                 rel_src[0] == '/' ? "" : "/", rel_src);
        snprintf(link, sizeof link, "%s/model.safetensors", dir[i]);
        if (symlink(src, link) != 0) {
            perror("fuzz_config: symlink");
            exit(1);
        }
    }
    atexit(cleanup);
    return 0;
}

/* Which fixture to pair the config with: the family it names (as parse_config decides it). */
static int family_of(const uint8_t *data, size_t size)
{
    json_t *j = NULL;
    int fam = FAM_MAMBA1;
    if (ss_json_parse_relaxed((const char *)data, size, "config.json", &j) != SS_OK) return fam;
    const char *mt = json_string_value(json_object_get(j, "model_type"));
    const char *arch = json_string_value(json_array_get(json_object_get(j, "architectures"), 0));
    if ((mt && !strcmp(mt, "mamba2")) || (!mt && arch && !strcmp(arch, "Mamba2ForCausalLM")))
        fam = FAM_MAMBA2;
    else if ((mt && !strcmp(mt, "moe_mamba")) ||
             (!mt && arch && !strcmp(arch, "MoEMambaForCausalLM")))
        fam = FAM_MOE;
    json_decref(j);
    return fam;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fam = family_of(data, size);
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir[fam]);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size) return 0;

    ss_model *m = NULL;
    ss_model_params p = {.n_threads = 1};
    if (ss_model_open(&m, dir[fam], &p) != SS_OK) {
        FUZZ_CHECK(m == NULL, "failed load set the model");
        return 0;
    }
    const ss_model_info *in = ss_model_get_info(m);
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    FUZZ_CHECK(in->state_floats == lay.conv_n + lay.ssm_n + lay.hidden_n &&
                   lay.hidden_n == (size_t)in->d_model && in->state_bytes == 4 * in->state_floats,
               "info and layout disagree");
    FUZZ_CHECK(in->vocab_size > 0 && in->n_layer > 0 && in->n_state_layers <= in->n_layer,
               "vocab %d, layers %d / %d", in->vocab_size, in->n_layer, in->n_state_layers);
    ss_ctx *c = NULL;
    ss_state *s = NULL;
    float *logits = malloc((size_t)in->vocab_size * sizeof *logits);
    if (logits && ss_ctx_new(m, &c) == SS_OK && ss_state_new(m, &s) == SS_OK)
        FUZZ_CHECK(ss_model_logits_from_state(m, c, s, logits) == SS_OK, "logits: %s",
                   ss_errmsg());
    free(logits);
    ss_state_free(s);
    ss_ctx_free(c);
    ss_model_close(m);
    return 0;
}
