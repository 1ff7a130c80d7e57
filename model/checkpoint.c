/*
 * checkpoint.c - load a HF checkpoint folder into an ss_model.
 *
 * config.json is parsed as HF writes it (unknown keys ignored, bare Infinity accepted); the
 * safetensors files are mmapped read-only and every tensor the architecture needs is looked up,
 * shape-checked against the config and either copied onto huge pages (matrices: F32, 64-byte
 * aligned; BF16 in the kernels' pair layout; F16), used in place (F32 vectors, and F32 matrices
 * with --f32-in-place), quantised (--weights q8) or converted once to F32 (BF16/F16 vectors).
 * Anything missing or inconsistent is an error naming the tensor. The fingerprint hashes the
 * canonical config and every tensor (name, dtype, shape, bytes) with XXH3-128, tensors in parallel,
 * so a 2.8b checkpoint takes about a second from page cache.
 */
#include "internal.h"
#include "kernels.h"
#include "safetensors.h"
#include "ss_buf.h"
#include "ss_util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_INDEX_BYTES  (64u << 20)

/* A shard: its mapping and parsed header. */
typedef struct shard {
    char *path;
    st_file st;
    int in_place; /* some weight is used straight from this shard's mapping */
    const st_tensor **copied; /* matrices copied out of the mapping (copy_mat) */
    int n_copied;
    size_t cap_copied;
} shard;

typedef struct loader {
    ss_model *m;
    const char *dir;
    json_t *config;
    char *config_canon;
    shard *shards;
    int n_shards;
    const ss_model_params *params;
    uint64_t bytes_total, bytes_done;
    /* bytes of the weights as held (F32 vectors, matrices in their held type and layout,
     * scales included), the tied head once: what fill_info makes token_weight_bytes of */
    uint64_t held_bytes;
    /* of those, what a token does not read: an untied embedding's rows but one, the experts
     * token choice does not route to */
    uint64_t idle_bytes;
    int dtype_mask; /* bit per st_dtype seen among used weights */
} loader;

static ss_err own(ss_model *m, void *p)
{
    if (ss_grow((void **)&m->owned, &m->cap_owned, (size_t)m->n_owned + 1, sizeof *m->owned)) {
        free(p);
        return SS_ERR_NOMEM;
    }
    m->owned[m->n_owned++] = p;
    return SS_OK;
}

/* ---- config ------------------------------------------------------------------------------- */

static int cfg_int(json_t *c, const char *key, int dflt)
{
    json_t *v = json_object_get(c, key);
    if (json_is_integer(v)) return (int)json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)))
        return (int)json_real_value(v);
    return dflt;
}

static int cfg_bool(json_t *c, const char *key, int dflt)
{
    json_t *v = json_object_get(c, key);
    if (json_is_boolean(v)) return json_is_true(v);
    return dflt;
}

static const char *cfg_str(json_t *c, const char *key, const char *dflt)
{
    json_t *v = json_object_get(c, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

/* A required positive integer key. */
static ss_err need_pos(json_t *c, const char *key, int *out)
{
    json_t *v = json_object_get(c, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 24)) {
        return ss_fail(SS_ERR_FORMAT, "config.json: %s must be a positive integer%s", key,
                       v ? "" : " (missing)");
    }
    *out = (int)json_integer_value(v);
    return SS_OK;
}

static ss_err parse_act(const char *s, act_kind *out)
{
    if (!strcmp(s, "relu"))
        *out = ACT_RELU;
    else if (!strcmp(s, "gelu"))
        *out = ACT_GELU;
    else if (!strcmp(s, "silu") || !strcmp(s, "swish"))
        *out = ACT_SILU;
    else
        return ss_fail(SS_ERR_UNSUPPORTED, "config.json: moe.expert_activation %s unknown", s);
    return SS_OK;
}

static ss_err parse_moe(model_config *cfg, json_t *moe)
{
    moe_config *mc = &cfg->moe;
    ss_err err;
    if (!json_is_object(moe)) return ss_fail(SS_ERR_FORMAT, "config.json: moe must be an object");
    const char *routing = cfg_str(moe, "routing", "token_choice");
    if (!strcmp(routing, "token_choice"))
        mc->routing = ROUTE_TOKEN_CHOICE;
    else if (!strcmp(routing, "mixture_of_tokens"))
        mc->routing = ROUTE_MIXTURE_OF_TOKENS;
    else
        return ss_fail(SS_ERR_UNSUPPORTED, "config.json: moe.routing %s unknown", routing);
    if ((err = need_pos(moe, "num_experts", &mc->n_experts))) return err;
    if ((err = need_pos(moe, "expert_intermediate_size", &mc->expert_width))) return err;
    if ((err = parse_act(cfg_str(moe, "expert_activation", "relu"), &mc->activation))) return err;
    mc->gated = cfg_bool(moe, "expert_gated", 0);
    if (mc->routing == ROUTE_TOKEN_CHOICE) {
        mc->top_k = cfg_int(moe, "num_experts_per_tok", 1);
        if (mc->top_k < 1 || mc->top_k > mc->n_experts) {
            return ss_fail(SS_ERR_FORMAT, "config.json: moe.num_experts_per_tok %d not in 1..%d",
                           mc->top_k, mc->n_experts);
        }
        const char *ra = cfg_str(moe, "router_activation", "softmax");
        if (!strcmp(ra, "softmax"))
            mc->router_sigmoid = 0;
        else if (!strcmp(ra, "sigmoid"))
            mc->router_sigmoid = 1;
        else
            return ss_fail(SS_ERR_UNSUPPORTED, "config.json: moe.router_activation %s unknown", ra);
        mc->router_bias = cfg_bool(moe, "router_bias", 0);
        mc->normalize_topk = cfg_bool(moe, "normalize_topk", 0);
    } else {
        if ((err = need_pos(moe, "group_size", &mc->group_size))) return err;
        mc->temperature = (float)ss_json_real(json_object_get(moe, "temperature"), 1.0);
        if (!(mc->temperature > 0) || !isfinite(mc->temperature)) {
            return ss_fail(SS_ERR_FORMAT, "config.json: moe.temperature must be > 0");
        }
    }
    return SS_OK;
}

/* The family (model_type, or the first architectures entry when it is absent), and the names
 * the model card reports. */
static ss_err parse_arch(ss_model *m, json_t *c)
{
    const char *mt = cfg_str(c, "model_type", NULL);
    json_t *archs = json_object_get(c, "architectures");
    const char *arch = json_is_array(archs) && json_is_string(json_array_get(archs, 0))
                           ? json_string_value(json_array_get(archs, 0))
                           : NULL;
    if (!mt && !arch) {
        return ss_fail(SS_ERR_FORMAT, "config.json: neither model_type nor architectures is set");
    }
    if ((mt && (!strcmp(mt, "mamba") || !strcmp(mt, "falcon_mamba"))) ||
        (!mt && (!strcmp(arch, "MambaForCausalLM") || !strcmp(arch, "FalconMambaForCausalLM")))) {
        m->info.arch = SS_ARCH_MAMBA1;
    } else if ((mt && !strcmp(mt, "mamba2")) || (!mt && !strcmp(arch, "Mamba2ForCausalLM"))) {
        m->info.arch = SS_ARCH_MAMBA2;
    } else if ((mt && !strcmp(mt, "moe_mamba")) || (!mt && !strcmp(arch, "MoEMambaForCausalLM"))) {
        m->info.arch = SS_ARCH_MOE_MAMBA;
    } else {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "config.json: model_type %s / architecture %s is not a Mamba-family model "
                       "this runtime knows (mamba, falcon_mamba, mamba2, moe_mamba)",
                       mt ? mt : "(none)", arch ? arch : "(none)");
    }
    static const char *const arch_names[] = {
        [SS_ARCH_MAMBA1] = "MambaForCausalLM",
        [SS_ARCH_MAMBA2] = "Mamba2ForCausalLM",
        [SS_ARCH_MOE_MAMBA] = "MoEMambaForCausalLM",
    };
    static const char *const type_names[] = {
        [SS_ARCH_MAMBA1] = "mamba",
        [SS_ARCH_MAMBA2] = "mamba2",
        [SS_ARCH_MOE_MAMBA] = "moe_mamba",
    };
    snprintf(m->architecture, sizeof m->architecture, "%s", arch ? arch : arch_names[m->info.arch]);
    snprintf(m->model_type, sizeof m->model_type, "%s", mt ? mt : type_names[m->info.arch]);
    return SS_OK;
}

/* The dimensions and flags every family shares. */
static ss_err parse_dims(model_config *cfg, json_t *c, ss_arch arch)
{
    ss_err err;
    if ((err = need_pos(c, "hidden_size", &cfg->d_model))) return err;
    if ((err = need_pos(c, "vocab_size", &cfg->vocab))) return err;
    if ((err = need_pos(c, "state_size", &cfg->d_state))) return err;
    cfg->conv_kernel = cfg_int(c, "conv_kernel", 4);
    cfg->expand = cfg_int(c, "expand", 2);
    if (cfg->conv_kernel < 1 || cfg->conv_kernel > 64 || cfg->expand < 1 || cfg->expand > 64) {
        return ss_fail(SS_ERR_FORMAT, "config.json: conv_kernel %d / expand %d out of range",
                       cfg->conv_kernel, cfg->expand);
    }
    cfg->d_inner = cfg_int(c, "intermediate_size", cfg->expand * cfg->d_model);
    if (cfg->d_inner <= 0) return ss_fail(SS_ERR_FORMAT, "config.json: intermediate_size <= 0");
    json_t *tsr = json_object_get(c, "time_step_rank");
    if (json_is_string(tsr) && !strcmp(json_string_value(tsr), "auto")) {
        cfg->dt_rank = (cfg->d_model + 15) / 16;
    } else {
        cfg->dt_rank = cfg_int(c, "time_step_rank", (cfg->d_model + 15) / 16);
    }
    if (cfg->dt_rank <= 0) return ss_fail(SS_ERR_FORMAT, "config.json: time_step_rank <= 0");
    cfg->use_bias = cfg_bool(c, "use_bias", 0);
    cfg->use_conv_bias = cfg_bool(c, "use_conv_bias", 1);
    cfg->tie_embeddings = cfg_bool(c, "tie_word_embeddings", 1);
    cfg->norm_eps = (float)ss_json_real(json_object_get(c, "layer_norm_epsilon"), 1e-5);
    if (!(cfg->norm_eps >= 0) || !isfinite(cfg->norm_eps)) {
        return ss_fail(SS_ERR_FORMAT, "config.json: layer_norm_epsilon must be >= 0");
    }
    cfg->eos = cfg_int(c, "eos_token_id", -1);
    cfg->bos = cfg_int(c, "bos_token_id", -1);
    json_t *mre = json_object_get(c, "mixer_rms_eps");
    if (ss_json_is_number(mre) && arch == SS_ARCH_MAMBA1) {
        cfg->has_mixer_rms = 1;
        cfg->mixer_rms_eps = (float)ss_json_real(mre, 1e-6);
    }
    return SS_OK;
}

/* The layer count and, for MoE-Mamba, the layer types' norm and the moe block. */
static ss_err parse_layers(model_config *cfg, json_t *c, ss_arch arch)
{
    ss_err err;
    json_t *lt = json_object_get(c, "layer_types");
    if (arch == SS_ARCH_MOE_MAMBA) {
        if (!json_is_array(lt) || json_array_size(lt) == 0) {
            return ss_fail(SS_ERR_FORMAT, "config.json: moe_mamba needs a layer_types array");
        }
        cfg->n_layer = (int)json_array_size(lt);
        int nl = cfg_int(c, "num_hidden_layers", cfg->n_layer);
        if (nl != cfg->n_layer) {
            return ss_fail(SS_ERR_FORMAT,
                           "config.json: num_hidden_layers %d but layer_types has %d entries", nl,
                           cfg->n_layer);
        }
        const char *nt = cfg_str(c, "norm_type", "rms");
        if (!strcmp(nt, "rms"))
            cfg->norm = NORM_RMS;
        else if (!strcmp(nt, "layer"))
            cfg->norm = NORM_LAYER;
        else
            return ss_fail(SS_ERR_UNSUPPORTED, "config.json: norm_type %s unknown", nt);
        if ((err = parse_moe(cfg, json_object_get(c, "moe")))) return err;
    } else {
        if ((err = need_pos(c, "num_hidden_layers", &cfg->n_layer))) return err;
        cfg->norm = NORM_RMS;
    }
    if (cfg->n_layer > 4096) return ss_fail(SS_ERR_FORMAT, "config.json: too many layers");
    return SS_OK;
}

/* Mamba-2's heads, groups, chunk size and time-step limits; the forms it does not compute. */
static ss_err parse_mamba2(model_config *cfg, json_t *c)
{
    ss_err err;
    if ((err = need_pos(c, "num_heads", &cfg->n_heads))) return err;
    if ((err = need_pos(c, "head_dim", &cfg->head_dim))) return err;
    cfg->n_groups = cfg_int(c, "n_groups", 1);
    cfg->chunk_size = cfg_int(c, "chunk_size", 256);
    if (cfg->n_groups < 1 || cfg->n_heads % cfg->n_groups) {
        return ss_fail(SS_ERR_FORMAT, "config.json: num_heads %d not divisible by n_groups %d",
                       cfg->n_heads, cfg->n_groups);
    }
    if (cfg->n_heads * cfg->head_dim != cfg->d_inner) {
        return ss_fail(SS_ERR_FORMAT,
                       "config.json: num_heads * head_dim = %d but intermediate_size is %d",
                       cfg->n_heads * cfg->head_dim, cfg->d_inner);
    }
    cfg->dt_min = 0;
    cfg->dt_max = INFINITY;
    json_t *lim = json_object_get(c, "time_step_limit");
    if (json_is_array(lim) && json_array_size(lim) == 2) {
        cfg->dt_min = (float)ss_json_real(json_array_get(lim, 0), 0);
        cfg->dt_max = (float)ss_json_real(json_array_get(lim, 1), INFINITY);
        if (isnan(cfg->dt_min) || isnan(cfg->dt_max) || cfg->dt_min > cfg->dt_max) {
            return ss_fail(SS_ERR_FORMAT, "config.json: time_step_limit is not [lo, hi]");
        }
    }
    if (cfg_bool(c, "rms_norm", 1) == 0) {
        return ss_fail(SS_ERR_UNSUPPORTED, "config.json: Mamba-2 without rms_norm");
    }
    /* y = norm(y * SiLU(z)) is the released models' form (mamba_ssm's default); refuse the
     * other order rather than compute something else */
    if (cfg_bool(c, "norm_before_gate", 0)) {
        return ss_fail(SS_ERR_UNSUPPORTED, "config.json: Mamba-2 with norm_before_gate true "
                                           "is not supported");
    }
    return SS_OK;
}

static ss_err parse_config(loader *L)
{
    ss_model *m = L->m;
    json_t *c = L->config;
    ss_err err;
    if (!json_is_object(c)) return ss_fail(SS_ERR_FORMAT, "config.json: not a JSON object");
    if ((err = parse_arch(m, c))) return err;
    if ((err = parse_dims(&m->cfg, c, m->info.arch))) return err;
    if ((err = parse_layers(&m->cfg, c, m->info.arch))) return err;
    if (m->info.arch == SS_ARCH_MAMBA2 && (err = parse_mamba2(&m->cfg, c))) return err;
    return SS_OK;
}

/* ---- files -------------------------------------------------------------------------------- */

#define HUGE_BYTES ((size_t)2 << 20)

/* span (a multiple of 2 MiB) bytes of zeroed anonymous memory, read-write, 2 MiB-aligned and
 * advised onto transparent huge pages; NULL on failure. */
static char *map_huge_anon(size_t span)
{
    char *res =
        mmap(NULL, span + HUGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (res == MAP_FAILED) return NULL;
    char *at = (char *)(((uintptr_t)res + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
    if (at > res) munmap(res, (size_t)(at - res));
    munmap(at + span, (size_t)(res + span + HUGE_BYTES - (at + span)));
    madvise(at, span, MADV_HUGEPAGE);
    return at;
}

static ss_err map_file(loader *L, const char *path, shard *sh)
{
    ss_model *m = L->m;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ss_fail(errno == ENOENT ? SS_ERR_NOT_FOUND : SS_ERR_IO, "%s: %s", path,
                       strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ss_fail(SS_ERR_IO, "%s: not a regular file", path);
    }
    const size_t len = (size_t)st.st_size;
    void *addr = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (addr == MAP_FAILED) return ss_fail(SS_ERR_IO, "%s: mmap: %s", path, strerror(errno));
    mapping *nm = realloc(m->maps, (size_t)(m->n_maps + 1) * sizeof *nm);
    if (!nm) {
        if (addr) munmap(addr, len);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    m->maps = nm;
    m->maps[m->n_maps++] = (mapping){addr, len};
    sh->path = strdup(path);
    if (!sh->path) return ss_fail(SS_ERR_NOMEM, "out of memory");
    return st_parse(&sh->st, addr, len, path);
}

static int shard_index(loader *L, const char *path)
{
    for (int i = 0; i < L->n_shards; i++)
        if (!strcmp(L->shards[i].path, path)) return i;
    return -1;
}

static ss_err open_files(loader *L)
{
    ss_err err = SS_OK;
    char path[PATH_MAX];
    char *text = NULL;
    json_t *idx = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", L->dir);
    if (access(path, F_OK) != 0) {
        L->shards = calloc(1, sizeof *L->shards);
        if (!L->shards) return ss_fail(SS_ERR_NOMEM, "out of memory");
        L->n_shards = 1;
        snprintf(path, sizeof path, "%s/model.safetensors", L->dir);
        if (access(path, F_OK) != 0) {
            return ss_fail(SS_ERR_NOT_FOUND,
                           "%s: neither model.safetensors nor model.safetensors.index.json found "
                           "(only safetensors checkpoints are supported)",
                           L->dir);
        }
        return map_file(L, path, &L->shards[0]);
    }
    size_t len;
    if ((err = ss_read_file(path, MAX_INDEX_BYTES, &text, &len))) goto out;
    if ((err = ss_json_parse_relaxed(text, len, path, &idx))) goto out;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        err = ss_fail(SS_ERR_FORMAT, "%s: weight_map missing or empty", path);
        goto out;
    }
    L->shards = calloc(json_object_size(wm), sizeof *L->shards);
    if (!L->shards) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    const char *tname;
    json_t *fv;
    json_object_foreach(wm, tname, fv)
    {
        const char *file = json_string_value(fv);
        if (!file || strchr(file, '/') || !strcmp(file, "..") || !file[0]) {
            err = ss_fail(SS_ERR_FORMAT, "%s: weight_map[%s] is not a file name in the folder",
                          path, tname);
            goto out;
        }
        char fpath[PATH_MAX];
        snprintf(fpath, sizeof fpath, "%s/%s", L->dir, file);
        int si = shard_index(L, fpath);
        if (si < 0) {
            si = L->n_shards++;
            if ((err = map_file(L, fpath, &L->shards[si]))) goto out;
        }
        if (!st_find(&L->shards[si].st, tname)) {
            err = ss_fail(SS_ERR_FORMAT, "%s: weight_map puts %s in %s, which does not contain it",
                          path, tname, file);
            goto out;
        }
    }
out:
    json_decref(idx);
    free(text);
    return err;
}

/* Find a tensor across shards (*si: its shard); a name in two shards is an error. */
static ss_err find_tensor(loader *L, const char *name, const st_tensor **out, int *si)
{
    const st_tensor *found = NULL;
    for (int i = 0; i < L->n_shards; i++) {
        const st_tensor *t = st_find(&L->shards[i].st, name);
        if (t && found) return ss_fail(SS_ERR_FORMAT, "tensor %s appears in two shards", name);
        if (t) {
            found = t;
            *si = i;
        }
    }
    *out = found;
    return SS_OK;
}

/* t has ndim dims of the sizes in want (-1 = any) and a dtype the loader reads; counted in the
 * checkpoint's dtypes. */
static ss_err check_tensor(loader *L, const char *name, const st_tensor *t, int ndim,
                           const int64_t *want)
{
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = want[i] < 0 || t->shape[i] == want[i];
    if (!ok) {
        char got[128] = "", exp[128] = "";
        size_t gl = 0, el = 0;
        for (int i = 0; i < t->ndim; i++)
            gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%lld", i ? ", " : "",
                                   (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            el += (size_t)snprintf(exp + el, sizeof exp - el, "%s%lld", i ? ", " : "",
                                   (long long)want[i]);
        return ss_fail(SS_ERR_MISMATCH, "tensor %s has shape [%s] but the config implies [%s]",
                       name, got, exp);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) {
        return ss_fail(SS_ERR_UNSUPPORTED, "tensor %s: dtype %s (need F32, BF16 or F16)", name,
                       st_dtype_name(t->dtype));
    }
    L->dtype_mask |= 1 << t->dtype;
    return SS_OK;
}

/*
 * Get tensor `name` with the expected shape (ndim dims; -1 = any), as F32. `optional`: a missing
 * tensor gives *out = NULL instead of an error.
 */
static ss_err get_f32(loader *L, const char *name, int optional, const float **out, int ndim, ...)
{
    const st_tensor *t = NULL;
    int si = 0;
    ss_err err = find_tensor(L, name, &t, &si);
    *out = NULL;
    if (err) return err;
    if (!t) {
        if (optional) return SS_OK;
        return ss_fail(SS_ERR_FORMAT, "checkpoint %s: required tensor %s is missing", L->dir, name);
    }
    int64_t want[ST_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int64_t);
    va_end(ap);
    if ((err = check_tensor(L, name, t, ndim, want))) return err;
    /* under --weights q8 nothing stays in place, so that the shards are unmapped after the load
     * (the small vectors are copied; the matrices are quantised) */
    if (t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0 &&
        L->params->weights != SS_WEIGHTS_Q8) {
        *out = (const float *)t->data;
        L->shards[si].in_place = 1;
    } else {
        float *buf = malloc(t->n_elem ? t->n_elem * sizeof(float) : 1);
        if (!buf) return ss_fail(SS_ERR_NOMEM, "tensor %s: cannot allocate", name);
        st_to_f32(t->dtype, t->data, buf, t->n_elem);
        if ((err = own(L->m, buf))) return err;
        *out = buf;
    }
    L->held_bytes += t->n_elem * sizeof(float);
    L->bytes_done += t->n_bytes;
    if (L->params->progress)
        L->params->progress(L->params->progress_user, "load", L->bytes_done, L->bytes_total);
    return SS_OK;
}

#define I64(x) ((int64_t)(x))

/* Chunks of the weights' arena (8-bit and 16-bit matrices): 64 MiB, or one matrix's size when
 * larger. */
#define ARENA_CHUNK ((size_t)64 << 20)

/*
 * n bytes (64-byte aligned) for the model's lifetime, bump-allocated from 2 MiB-aligned chunks
 * advised onto transparent huge pages: the 8-bit matrices are written here as they are quantised
 * and the F32 and 16-bit ones as they are copied (copy_mat). A decode token streams every matrix
 * once,
 * and on 4 KiB pages that is one page walk and one restart of the hardware prefetcher per 4 KiB
 * (36,000 of each per token at 130m in q8). Parts of a chunk never written are never resident.
 * NULL when out of memory.
 */
static void *arena_alloc(ss_model *m, size_t n)
{
    n = (n + 63) & ~(size_t)63;
    if (m->n_arena && m->arena_used + n <= m->arena[m->n_arena - 1].len) {
        void *p = (char *)m->arena[m->n_arena - 1].addr + m->arena_used;
        m->arena_used += n;
        return p;
    }
    const size_t len = n > ARENA_CHUNK ? (n + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1) : ARENA_CHUNK;
    mapping *na = realloc(m->arena, (size_t)(m->n_arena + 1) * sizeof *na);
    if (!na) return NULL;
    m->arena = na;
    char *at = map_huge_anon(len);
    if (!at) return NULL;
    m->arena[m->n_arena++] = (mapping){at, len};
    m->arena_used = n;
    return at;
}

/*
 * --weights q8: quantise the matrix t [rows, cols] (F32, BF16 or F16, read from the mapping) into
 * owned int8 values and block scales; the mapping is not kept for it, so a shard whose weights
 * were all converted is unmapped after the load and the resident size is the 8-bit copy.
 */
static ss_err quantize_mat(loader *L, const char *name, const st_tensor *t, wmat *out)
{
    const size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    const size_t nb = (size_t)q8_blocks((int)cols), esz = t->dtype == ST_F32 ? 4 : 2;
    /* the q8p layout (kernels.h) for matrices of at least 256 outputs; the short ones
     * (Mamba-1's x_proj: 80-160 outputs) keep the row layout: at 370m in panels (a panel and a
     * half of x_proj for two threads) it took 0.6 ms a token more. dt_proj (48-160 inputs, a
     * row of each channel's) is in panels since its batch-1 decode multiplies 8-bit
     * activations there (mamba.c scan1_range; 130m, this host, interleaved: 0.98 of the step).
     * SS_Q8_LAYOUT=rows: rows for all; =panels: panels for all (tests: the small models) */
    const char *lay = getenv("SS_Q8_LAYOUT");
    const int panels = lay && !strcmp(lay, "rows")     ? 0
                       : lay && !strcmp(lay, "panels") ? 1
                                                       : rows >= 256;
    const size_t np = (size_t)q8p_panels((int)rows);
    const size_t nq = panels ? np * q8p_panel_bytes((int)cols) : rows * cols;
    int8_t *q = arena_alloc(L->m, nq > 0 ? nq : 1);
    /* rows: the scales apart; panels hold theirs */
    float *sc = panels ? NULL : arena_alloc(L->m, (rows * nb > 0 ? rows * nb : 1) * sizeof *sc);
    float *row = malloc((cols ? cols : 1) * sizeof *row), *rs = malloc((nb + 1) * sizeof *rs);
    int8_t *rq = malloc(cols + 1);
    ss_err err = SS_OK;
    if (!q || (!panels && !sc) || !row || !rs || !rq) {
        err = ss_fail(SS_ERR_NOMEM, "tensor %s: cannot allocate its 8-bit copy", name);
    } else {
        for (size_t r = 0; r < (panels ? np * Q8P_W : rows); r++) {
            if (r >= rows) { /* the last panel's padding: zero weights and scales */
                memset(rq, 0, cols + 1);
                memset(rs, 0, (nb + 1) * sizeof *rs);
            } else {
                st_to_f32(t->dtype, (const uint8_t *)t->data + r * cols * esz, row, cols);
                if (q8_quantize_row(row, (int)cols, panels ? rq : q + r * cols,
                                    panels ? rs : sc + r * nb)) {
                    err = ss_fail(SS_ERR_FORMAT,
                                  "tensor %s: row %zu has a value that is not finite; it cannot "
                                  "be quantised to 8 bits",
                                  name, r);
                    break;
                }
            }
            if (panels)
                q8k_put_row((uint8_t *)q + r / Q8P_W * q8p_panel_bytes((int)cols), Q8P_W,
                            (int)cols, (int)(r % Q8P_W), rq, rs);
        }
    }
    free(row);
    free(rs);
    free(rq);
    if (err) return err; /* the arena is released with the model */
    *out = (wmat){.p = q, .t = panels ? W_Q8P : W_Q8, .scale = sc};
    L->held_bytes += nq + (panels ? 0 : rows * nb * sizeof *sc);
    L->dtype_mask |= 1 << t->dtype;
    L->bytes_done += t->n_bytes;
    if (L->params->progress)
        L->params->progress(L->params->progress_user, "load", L->bytes_done, L->bytes_total);
    return SS_OK;
}

/* The tensor's bytes were copied: its whole pages of the shard's mapping are dropped after the
 * load (drop_copied), unless the shard is unmapped anyway. */
static ss_err note_copied(loader *L, int si, const st_tensor *t)
{
    shard *sh = &L->shards[si];
    if (ss_grow((void **)&sh->copied, &sh->cap_copied, (size_t)sh->n_copied + 1,
                sizeof *sh->copied))
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    sh->copied[sh->n_copied++] = t;
    return SS_OK;
}

/*
 * A matrix copied onto transparent huge pages (arena_alloc, 64-byte aligned): F32 as stored,
 * BF16 / F16 kept 16-bit (widened as the kernels read it: a 7B BF16 checkpoint needs 15 GB, not
 * 29), BF16 in the pair layout (kernels.h, bf16_pack_rows), F16 in row order. Streamed from the
 * file mapping instead (4 KiB pages, and F32 wherever the file puts it: safetensors aligns its
 * data to 8 bytes only, so most 64-byte loads span two cache lines), a 130m F32 decode token took
 * ~10 % longer, BF16 ~6 % (docs/performance.md). The mapping is not kept for it: a shard whose
 * tensors were all copied is unmapped after the load, so the resident size is the copy's.
 */
typedef struct copy_job {
    const char *src;
    char *dst;
    size_t row_bytes;
    int rows, pack;
} copy_job;

static void copy_part(void *arg, int tid, int nt)
{
    const copy_job *j = arg;
    int lo, hi;
    pool_range(j->rows, 1, tid, nt, &lo, &hi);
    const size_t off = (size_t)lo * j->row_bytes, n = (size_t)(hi - lo);
    if (lo >= hi) return;
    if (j->pack)
        bf16_pack_rows((const uint16_t *)(j->src + off), n, (int)(j->row_bytes / 2),
                       (uint16_t *)(j->dst + off));
    else
        memcpy(j->dst + off, j->src + off, n * j->row_bytes);
}

static ss_err copy_mat(loader *L, const char *name, const st_tensor *t, int si, wmat *out)
{
    const size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    const size_t esz = t->dtype == ST_F32 ? 4 : 2;
    char *w = arena_alloc(L->m, rows * cols > 0 ? rows * cols * esz : 1);
    if (!w) return ss_fail(SS_ERR_NOMEM, "tensor %s: cannot allocate its copy", name);
    /* the model's threads share the copy: the time goes to faulting in (zeroing) the fresh
     * pages, ~0.25 GB/s per thread on the development VM */
    copy_job j = {(const char *)t->data, w, cols * esz, (int)rows, t->dtype == ST_BF16};
    if (rows < 64) /* (the test fixtures' matrices have 128-512 rows: they take the pool too) */
        copy_part(&j, 0, 1);
    else
        pool_run(L->m->pool, copy_part, &j);
    L->dtype_mask |= 1 << t->dtype;
    L->held_bytes += rows * cols * esz;
    *out = (wmat){.p = w, .t = t->dtype == ST_F32 ? W_F32 : t->dtype == ST_BF16 ? W_BF16 : W_F16};
    L->bytes_done += t->n_bytes;
    if (L->params->progress)
        L->params->progress(L->params->progress_user, "load", L->bytes_done, L->bytes_total);
    return note_copied(L, si, t);
}

/* A weight matrix: copied onto huge pages (copy_mat; 16-bit ones stay 16-bit; F32 used in place
 * instead with --f32-in-place, as get_f32), or under --weights q8 quantised (quantize_mat). */
static ss_err get_mat_as(loader *L, const char *name, wmat *out, int64_t rows, int64_t cols,
                         int may_quantize)
{
    const st_tensor *t = NULL;
    int si = 0;
    ss_err err = find_tensor(L, name, &t, &si);
    if (err) return err;
    if (t && L->params->weights != SS_WEIGHTS_Q8 &&
        (t->dtype == ST_BF16 || t->dtype == ST_F16 ||
         (t->dtype == ST_F32 && !L->params->f32_in_place)) &&
        ((uintptr_t)t->data & (t->dtype == ST_F32 ? 3 : 1)) == 0 && t->ndim == 2 &&
        t->shape[0] == rows && t->shape[1] == cols)
        return copy_mat(L, name, t, si, out);
    if (may_quantize && L->params->weights == SS_WEIGHTS_Q8 && t && t->ndim == 2 &&
        t->shape[0] == rows && t->shape[1] == cols &&
        (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16))
        return quantize_mat(L, name, t, out);
    const float *f = NULL;
    err = get_f32(L, name, 0, &f, 2, rows, cols);
    *out = (wmat){.p = f, .t = W_F32};
    return err;
}

/*
 * A matrix W [rows, cols] kept transposed, Wt [cols][rows] (Mamba-1's x_proj and out_proj: a
 * decode step sums their partial products over segments of the input channels, kernels.h
 * gemm_t): on the weights' arena, in the checkpoint's type (F32, or BF16 / F16 in row order;
 * column-blocked, the far layout of kernels.h far_t_width, when far streams are on), or
 * under --weights q8 in the q8k layout (kernels.h: each row of W quantised as the row layout
 * quantises it, a scale per block of Q8_BLOCK inputs, the values in rows of 4 inputs for the
 * integer kernels, each block's scales after its values). The tensor's pages of the mapping
 * are released after the load, as for the other copies.
 */
static ss_err get_mat_t(loader *L, const char *name, wmat *out, int64_t rows, int64_t cols)
{
    const st_tensor *t = NULL;
    int si = 0;
    ss_err err = find_tensor(L, name, &t, &si);
    if (err) return err;
    if (!t)
        return ss_fail(SS_ERR_FORMAT, "checkpoint %s: required tensor %s is missing", L->dir, name);
    const int64_t want[2] = {rows, cols};
    if ((err = check_tensor(L, name, t, 2, want))) return err;
    const size_t R = (size_t)rows, C = (size_t)cols, esz = t->dtype == ST_F32 ? 4 : 2;
    if (L->params->weights == SS_WEIGHTS_Q8) {
        const size_t nb = (size_t)q8_blocks((int)C);
        uint8_t *w = arena_alloc(L->m, q8k_bytes((int)R, (int)C) + 1);
        float *row = malloc((C + 1) * sizeof *row), *rs = malloc((nb + 1) * sizeof *rs);
        int8_t *q = malloc(C + 1);
        if (!w || !row || !rs || !q)
            err = ss_fail(SS_ERR_NOMEM, "tensor %s: cannot allocate its 8-bit copy", name);
        for (size_t r = 0; r < R && !err; r++) {
            st_to_f32(t->dtype, (const uint8_t *)t->data + r * C * esz, row, C);
            if (q8_quantize_row(row, (int)C, q, rs))
                err = ss_fail(SS_ERR_FORMAT,
                              "tensor %s: row %zu has a value that is not finite; it cannot be "
                              "quantised to 8 bits",
                              name, r);
            else
                q8k_put_row(w, (int)R, (int)C, (int)r, q, rs);
        }
        free(row);
        free(rs);
        free(q);
        if (err) return err; /* the arena is released with the model */
        *out = (wmat){.p = w, .t = W_Q8}; /* the scales in the layout */
        L->held_bytes += q8k_bytes((int)R, (int)C);
    } else {
        const int wide = t->dtype == ST_F32;
        (void)kernels_get(); /* far_t_width reads kernels_far_rows, which it sets */
        const size_t bw = (size_t)far_t_width((int)R); /* 0: plain rows of R */
        enum { BR = 64 }; /* source rows per block: each row of Wt gets BR values at a time */
        void *dst = arena_alloc(L->m, R * C * (wide ? 4 : 2) + 1);
        void *blk = malloc(BR * C * (wide ? 4 : 2) + 1);
        if (!dst || !blk) {
            free(blk);
            return ss_fail(SS_ERR_NOMEM, "tensor %s: cannot allocate its transposed copy", name);
        }
        for (size_t r0 = 0; r0 < R; r0 += BR) {
            const size_t nr = R - r0 < BR ? R - r0 : BR;
            const uint8_t *src = (const uint8_t *)t->data + r0 * C * esz;
            memcpy(blk, src, nr * C * esz);
            for (size_t c = 0; c < C; c++)
                for (size_t r = 0; r < nr; r++) { /* Wt[c][n], n = r0 + r: where it goes */
                    const size_t n = r0 + r,
                                 at = bw ? n / bw * C * bw + c * bw + n % bw : c * R + n;
                    if (wide)
                        ((float *)dst)[at] = ((const float *)blk)[r * C + c];
                    else
                        ((uint16_t *)dst)[at] = ((const uint16_t *)blk)[r * C + c];
                }
        }
        free(blk);
        L->held_bytes += R * C * (wide ? 4 : 2);
        *out = (wmat){.p = dst,
                      .t = wide ? W_F32 : t->dtype == ST_BF16 ? W_BF16 : W_F16,
                      .bw = (int)bw,
                      .bs = C * bw};
    }
    L->bytes_done += t->n_bytes;
    if (L->params->progress)
        L->params->progress(L->params->progress_user, "load", L->bytes_done, L->bytes_total);
    return note_copied(L, si, t);
}

static ss_err get_mat(loader *L, const char *name, wmat *out, int64_t rows, int64_t cols)
{
    return get_mat_as(L, name, out, rows, cols, 1);
}

static ss_err load_norm(loader *L, const char *prefix, const float **w, const float **b)
{
    char name[256];
    int d = L->m->cfg.d_model;
    snprintf(name, sizeof name, "%s.weight", prefix);
    ss_err err = get_f32(L, name, 0, w, 1, I64(d));
    if (err || L->m->cfg.norm != NORM_LAYER) return err;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return get_f32(L, name, 0, b, 1, I64(d));
}

/* Precompute A = -exp(A_log) into an owned buffer. */
static ss_err load_A(loader *L, const char *name, float **out, int ndim, int64_t n0, int64_t n1)
{
    const float *alog;
    ss_err err =
        ndim == 2 ? get_f32(L, name, 0, &alog, 2, n0, n1) : get_f32(L, name, 0, &alog, 1, n0);
    if (err) return err;
    size_t n = (size_t)n0 * (size_t)(ndim == 2 ? n1 : 1);
    float *a = malloc(n * sizeof *a);
    if (!a) return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) a[i] = -expf(alog[i]);
    if ((err = own(L->m, a))) return err;
    *out = a;
    return SS_OK;
}

/* Blocked copy [C/16][K][16] of a [C, K] matrix for the SIMD kernels (NULL if C % 16 != 0). */
static ss_err block16(loader *L, const float *src, int C, int K, float **out)
{
    *out = NULL;
    if (C % 16) return SS_OK;
    float *b = malloc((size_t)C * K * sizeof *b);
    if (!b) return ss_fail(SS_ERR_NOMEM, "out of memory");
    kernels_block16(src, C, K, b);
    *out = b;
    return own(L->m, b);
}

static ss_err load_mixer(loader *L, layer *ly, int i)
{
    model_config *c = &L->m->cfg;
    char p[200], n[256];
    ss_err err;
    int d = c->d_model, Di = c->d_inner, N = c->d_state, K = c->conv_kernel, R = c->dt_rank;
    snprintf(p, sizeof p, "backbone.layers.%d.mixer", i);
#define T(suffix) (snprintf(n, sizeof n, "%s.%s", p, suffix), n)
    if (ly->kind == LAYER_MAMBA1) {
        if ((err = get_mat(L, T("in_proj.weight"), &ly->in_proj_w, I64(2 * Di), I64(d))))
            return err;
        if (c->use_bias && (err = get_f32(L, T("in_proj.bias"), 0, &ly->in_proj_b, 1, I64(2 * Di))))
            return err;
        if ((err = get_f32(L, T("conv1d.weight"), 0, &ly->conv_w, 3, I64(Di), I64(1), I64(K))))
            return err;
        if (c->use_conv_bias && (err = get_f32(L, T("conv1d.bias"), 0, &ly->conv_b, 1, I64(Di))))
            return err;
        if ((err = L->m->fused
                       ? get_mat_t(L, T("x_proj.weight"), &ly->x_proj_t, I64(R + 2 * N), I64(Di))
                       : get_mat(L, T("x_proj.weight"), &ly->x_proj_w, I64(R + 2 * N), I64(Di))))
            return err;
        if ((err = get_mat(L, T("dt_proj.weight"), &ly->dt_proj_w, I64(Di), I64(R)))) return err;
        if ((err = get_f32(L, T("dt_proj.bias"), 0, &ly->dt_proj_b, 1, I64(Di)))) return err;
        if ((err = load_A(L, T("A_log"), &ly->A, 2, Di, N))) return err;
        if ((err = block16(L, ly->A, Di, N, &ly->A16))) return err;
        if ((err = block16(L, ly->conv_w, Di, K, &ly->conv_w16))) return err;
        if ((err = get_f32(L, T("D"), 0, &ly->D, 1, I64(Di)))) return err;
    } else {
        int H = c->n_heads, G = c->n_groups, C = Di + 2 * G * N;
        if ((err = get_mat(L, T("in_proj.weight"), &ly->in_proj_w, I64(Di + C + H), I64(d))))
            return err;
        if (c->use_bias &&
            (err = get_f32(L, T("in_proj.bias"), 0, &ly->in_proj_b, 1, I64(Di + C + H))))
            return err;
        if ((err = get_f32(L, T("conv1d.weight"), 0, &ly->conv_w, 3, I64(C), I64(1), I64(K))))
            return err;
        if (c->use_conv_bias && (err = get_f32(L, T("conv1d.bias"), 0, &ly->conv_b, 1, I64(C))))
            return err;
        if ((err = block16(L, ly->conv_w, C, K, &ly->conv_w16))) return err;
        if ((err = get_f32(L, T("dt_bias"), 0, &ly->dt_bias, 1, I64(H)))) return err;
        if ((err = load_A(L, T("A_log"), &ly->A, 1, H, 0))) return err;
        if ((err = get_f32(L, T("D"), 0, &ly->D, 1, I64(H)))) return err;
        if ((err = get_f32(L, T("norm.weight"), 0, &ly->gnorm_w, 1, I64(Di)))) return err;
    }
    if (ly->kind == LAYER_MAMBA1 && L->m->fused)
        err = get_mat_t(L, T("out_proj.weight"), &ly->out_proj_t, I64(d), I64(Di));
    else
        err = get_mat(L, T("out_proj.weight"), &ly->out_proj_w, I64(d), I64(Di));
    if (err) return err;
    if (c->use_bias && (err = get_f32(L, T("out_proj.bias"), 0, &ly->out_proj_b, 1, I64(d))))
        return err;
#undef T
    return SS_OK;
}

static ss_err load_moe(loader *L, layer *ly, int i)
{
    model_config *c = &L->m->cfg;
    moe_config *mc = &c->moe;
    char n[256];
    ss_err err;
    int d = c->d_model, E = mc->n_experts, de = mc->expert_width;
    snprintf(n, sizeof n, "backbone.layers.%d.moe.router.weight", i);
    /* the router stays exact under --weights q8: it makes discrete choices, and it is small */
    if ((err = get_mat_as(L, n, &ly->router_w, I64(E), I64(d), 0))) return err;
    if (mc->routing == ROUTE_TOKEN_CHOICE && mc->router_bias) {
        snprintf(n, sizeof n, "backbone.layers.%d.moe.router.bias", i);
        if ((err = get_f32(L, n, 0, &ly->router_b, 1, I64(E)))) return err;
    }
    ly->up_w = calloc((size_t)E, sizeof *ly->up_w);
    if (!ly->up_w || (err = own(L->m, (void *)ly->up_w))) return ss_fail(SS_ERR_NOMEM, "oom");
    ly->down_w = calloc((size_t)E, sizeof *ly->down_w);
    if (!ly->down_w || (err = own(L->m, (void *)ly->down_w))) return ss_fail(SS_ERR_NOMEM, "oom");
    const uint64_t before = L->held_bytes;
    for (int e = 0; e < E; e++) {
        snprintf(n, sizeof n, "backbone.layers.%d.moe.experts.%d.up.weight", i, e);
        if ((err = get_mat(L, n, &ly->up_w[e], I64(mc->gated ? 2 * de : de), I64(d)))) return err;
        snprintf(n, sizeof n, "backbone.layers.%d.moe.experts.%d.down.weight", i, e);
        if ((err = get_mat(L, n, &ly->down_w[e], I64(d), I64(de)))) return err;
    }
    if (mc->routing == ROUTE_TOKEN_CHOICE) /* every expert held alike: k of E read */
        L->idle_bytes += (L->held_bytes - before) / (uint64_t)E * (uint64_t)(E - mc->top_k);
    return SS_OK;
}

static ss_err load_weights(loader *L)
{
    ss_model *m = L->m;
    model_config *c = &m->cfg;
    ss_err err;
    /* progress counts tensor bytes: the total is theirs, so the load phase ends at 100 % */
    for (int i = 0; i < L->n_shards; i++)
        for (int t = 0; t < L->shards[i].st.n_tensors; t++)
            L->bytes_total += L->shards[i].st.tensors[t].n_bytes;
    const uint64_t held_before = L->held_bytes;
    if ((err = get_mat(L, "backbone.embeddings.weight", &m->embed, I64(c->vocab), I64(c->d_model))))
        return err;
    const uint64_t embed_bytes = L->held_bytes - held_before;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return ss_fail(SS_ERR_NOMEM, "out of memory");
    json_t *lt = json_object_get(L->config, "layer_types");
    int n_state = 0;
    for (int i = 0; i < c->n_layer; i++) {
        layer *ly = &m->layers[i];
        char name[200];
        if (m->info.arch == SS_ARCH_MOE_MAMBA) {
            const char *k = json_string_value(json_array_get(lt, (size_t)i));
            if (!k || (strcmp(k, "mamba") && strcmp(k, "moe"))) {
                return ss_fail(SS_ERR_FORMAT,
                               "config.json: layer_types[%d] must be \"mamba\" or "
                               "\"moe\"",
                               i);
            }
            ly->kind = !strcmp(k, "moe") ? LAYER_MOE : LAYER_MAMBA1;
        } else {
            ly->kind = m->info.arch == SS_ARCH_MAMBA2 ? LAYER_MAMBA2 : LAYER_MAMBA1;
        }
        ly->state_index = ly->kind == LAYER_MOE ? -1 : n_state++;
        snprintf(name, sizeof name, "backbone.layers.%d.norm", i);
        if ((err = load_norm(L, name, &ly->norm_w, &ly->norm_b))) return err;
        err = ly->kind == LAYER_MOE ? load_moe(L, ly, i) : load_mixer(L, ly, i);
        if (err) return err;
    }
    if ((err = load_norm(L, "backbone.norm_f", &m->norm_f_w, &m->norm_f_b))) return err;
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if ((err = get_mat(L, "lm_head.weight", &m->lm_head, I64(c->vocab), I64(c->d_model)))) {
        return err;
    } else { /* a token reads one row of its own embedding */
        L->idle_bytes += embed_bytes - embed_bytes / (uint64_t)c->vocab;
    }
    m->info.n_state_layers = n_state;
    return SS_OK;
}

/* ---- fingerprint -------------------------------------------------------------------------- */

typedef struct tensor_ref {
    const char *name;
    const st_tensor *t;
} tensor_ref;

static int cmp_ref(const void *a, const void *b)
{
    return strcmp(((const tensor_ref *)a)->name, ((const tensor_ref *)b)->name);
}

typedef struct hash_job {
    const tensor_ref *refs;
    XXH128_hash_t *digests;
    int n;
    atomic_int next;
} hash_job;

static void hash_part(void *arg, int tid, int nt)
{
    (void)tid;
    (void)nt;
    hash_job *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->n;)
        j->digests[i] = XXH3_128bits(j->refs[i].t->data, j->refs[i].t->n_bytes);
}

static ss_err fingerprint(loader *L)
{
    int n = 0;
    for (int i = 0; i < L->n_shards; i++) n += L->shards[i].st.n_tensors;
    tensor_ref *refs = calloc((size_t)(n ? n : 1), sizeof *refs);
    XXH128_hash_t *digests = calloc((size_t)(n ? n : 1), sizeof *digests);
    if (!refs || !digests) {
        free(refs);
        free(digests);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    int k = 0;
    for (int i = 0; i < L->n_shards; i++)
        for (int j = 0; j < L->shards[i].st.n_tensors; j++) {
            refs[k].t = &L->shards[i].st.tensors[j];
            refs[k].name = refs[k].t->name;
            k++;
        }
    qsort(refs, (size_t)n, sizeof *refs, cmp_ref);
    /* Hash tensors in parallel (big tensors dominate: threads take the next one as they go). */
    hash_job hj = {.refs = refs, .digests = digests, .n = n};
    pool_run(L->m->pool, hash_part, &hj);

    XXH3_state_t *st = XXH3_createState();
    if (!st) {
        free(refs);
        free(digests);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, "statesoup-fingerprint-v1", 24);
    XXH3_128bits_update(st, L->config_canon, strlen(L->config_canon) + 1);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = refs[i].t;
        XXH3_128bits_update(st, t->name, strlen(t->name) + 1);
        const char *dt = st_dtype_name(t->dtype);
        XXH3_128bits_update(st, dt, strlen(dt) + 1);
        for (int d = 0; d < t->ndim; d++) {
            uint64_t v = (uint64_t)t->shape[d];
            XXH3_128bits_update(st, &v, sizeof v);
        }
        XXH128_canonical_t can;
        XXH128_canonicalFromHash(&can, digests[i]);
        XXH3_128bits_update(st, &can, sizeof can);
    }
    XXH128_canonical_t can;
    XXH128_canonicalFromHash(&can, XXH3_128bits_digest(st));
    ss_hex(can.digest, 16, L->m->info.fingerprint);
    XXH3_freeState(st);
    free(refs);
    free(digests);
    return SS_OK;
}

/* ---- info --------------------------------------------------------------------------------- */

static void fill_info(loader *L)
{
    ss_model *m = L->m;
    model_config *c = &m->cfg;
    ss_model_info *in = &m->info;
    in->architecture = m->architecture;
    in->model_type = m->model_type;
    int mask = L->dtype_mask;
    snprintf(m->dtype, sizeof m->dtype, "%s",
             mask == (1 << ST_F32)    ? "F32"
             : mask == (1 << ST_BF16) ? "BF16"
             : mask == (1 << ST_F16)  ? "F16"
                                      : "mixed");
    in->dtype = m->dtype;
    in->weights = L->params->weights == SS_WEIGHTS_Q8 ? "q8" : "stored";
    in->n_layer = c->n_layer;
    in->d_model = c->d_model;
    in->d_inner = c->d_inner;
    in->d_state = c->d_state;
    in->conv_kernel = c->conv_kernel;
    in->vocab_size = c->vocab;
    in->eos_token_id = c->eos >= 0 && c->eos < c->vocab ? c->eos : -1;
    in->bos_token_id = c->bos >= 0 && c->bos < c->vocab ? c->bos : -1;
    if (in->arch == SS_ARCH_MAMBA2) {
        in->n_heads = c->n_heads;
        in->head_dim = c->head_dim;
        in->n_groups = c->n_groups;
        in->conv_channels = c->d_inner + 2 * c->n_groups * c->d_state;
    } else {
        in->conv_channels = c->d_inner;
    }
    if (in->arch == SS_ARCH_MOE_MAMBA && c->moe.routing == ROUTE_MIXTURE_OF_TOKENS)
        in->mot_group_size = c->moe.group_size;
    if (in->arch == SS_ARCH_MOE_MAMBA) {
        int tc = c->moe.routing == ROUTE_TOKEN_CHOICE;
        in->moe_routing = tc ? "token_choice" : "mixture_of_tokens";
        in->router_activation = !tc ? NULL : c->moe.router_sigmoid ? "sigmoid" : "softmax";
        in->n_experts = c->moe.n_experts;
        in->n_experts_per_tok = tc ? c->moe.top_k : c->moe.n_experts;
        /* informational (fine-grained MoE: E = granularity * expansion_rate) */
        int gr = cfg_int(json_object_get(L->config, "moe"), "granularity", 0);
        in->expert_granularity = gr > 0 ? gr : 0;
    }
    size_t L_ = (size_t)in->n_state_layers;
    in->state_floats = L_ * (size_t)in->conv_channels * (size_t)c->conv_kernel +
                       L_ * (size_t)c->d_inner * (size_t)c->d_state + (size_t)c->d_model;
    in->state_bytes = in->state_floats * sizeof(float);
    in->decay_floats = L_ * (size_t)(in->arch == SS_ARCH_MAMBA2 ? in->n_heads : in->d_inner);

    /* Parameters: every tensor once; active: MoE layers count only k experts (all for MoT). */
    uint64_t total = 0, inactive = 0;
    for (int i = 0; i < L->n_shards; i++)
        for (int j = 0; j < L->shards[i].st.n_tensors; j++) {
            const st_tensor *t = &L->shards[i].st.tensors[j];
            total += t->n_elem;
        }
    if (in->arch == SS_ARCH_MOE_MAMBA && c->moe.routing == ROUTE_TOKEN_CHOICE) {
        uint64_t per_expert =
            (uint64_t)c->d_model * (uint64_t)c->moe.expert_width * (uint64_t)(c->moe.gated ? 3 : 2);
        for (int i = 0; i < c->n_layer; i++)
            if (m->layers[i].kind == LAYER_MOE)
                inactive += per_expert * (uint64_t)(c->moe.n_experts - c->moe.top_k);
    }
    in->n_params = total;
    in->n_active_params = total - inactive;
    in->token_weight_bytes = L->held_bytes - L->idle_bytes;
}

/* ---- entry points ------------------------------------------------------------------------- */

/*
 * A shard that stays mapped (F32 weights in place beside copied 16-bit ones): release the whole
 * pages of the copied tensors (read-only file pages: a later read would fault them in again
 * from the file, unchanged; nothing reads them), so that they do not count twice in the resident
 * size once the load and the fingerprint have read them.
 */
static void drop_copied(const shard *sh)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < sh->n_copied; i++) {
        const uintptr_t a = (uintptr_t)sh->copied[i]->data;
        const uintptr_t lo = (a + pg - 1) & ~(pg - 1);
        const uintptr_t hi = (a + sh->copied[i]->n_bytes) & ~(pg - 1);
        if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
}

ss_err model_load(ss_model *m, const char *dir, const ss_model_params *p)
{
    ss_err err = SS_OK;
    loader L = {.m = m, .dir = dir, .params = p};
    char path[PATH_MAX];
    char *text = NULL;
    size_t len;
    m->n_threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (m->n_threads < 1) m->n_threads = 1;
    if (m->n_threads > 64) m->n_threads = 64;
    m->pool = pool_new(m->n_threads);
    if (!m->pool) return ss_fail(SS_ERR_NOMEM, "cannot start %d threads", m->n_threads);
    const char *act = getenv("SS_Q8_ACT");
    m->act8 = p->weights == SS_WEIGHTS_Q8 && !p->q8_f32_act && !(act && !strcmp(act, "f32"));
    const char *fused = getenv("SS_FUSED_DECODE");
    m->fused = p->fused_decode > 0;
    if (fused && (!strcmp(fused, "0") || !strcmp(fused, "1"))) m->fused = fused[0] == '1';

    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return ss_fail(SS_ERR_NOT_FOUND, "model directory %s does not exist", dir);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((err = ss_read_file(path, MAX_CONFIG_BYTES, &text, &len))) goto out;
    if ((err = ss_json_parse_relaxed(text, len, path, &L.config))) goto out;
    L.config_canon = json_dumps(L.config, JSON_COMPACT | JSON_SORT_KEYS);
    if (!L.config_canon) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((err = parse_config(&L))) goto out;
    /* 8-bit weights fuse only when the segments start on a block (the q8k layout, kernels.h) */
    if (m->fused && p->weights == SS_WEIGHTS_Q8 && mamba1_seg(m->cfg.d_inner) % Q8_BLOCK)
        m->fused = 0;
    if ((err = open_files(&L))) goto out;
    if ((err = load_weights(&L))) goto out;
    if (p->progress) /* tensors the model does not use (a tied lm_head) were never counted */
        p->progress(p->progress_user, "load", L.bytes_total, L.bytes_total);
    fill_info(&L);
    if (p->progress) p->progress(p->progress_user, "fingerprint", 0, 1);
    if ((err = fingerprint(&L))) goto out;
    if (p->progress) p->progress(p->progress_user, "fingerprint", 1, 1);
    /* Shards whose weights were all copied or converted (BF16/F16, q8) are not needed any more:
     * unmapping them keeps the resident size at the copies alone. Maps and shards share
     * indexes. */
    for (int i = 0; i < L.n_shards && i < m->n_maps; i++) {
        if (!m->maps[i].addr) continue;
        if (!L.shards[i].in_place) {
            munmap(m->maps[i].addr, m->maps[i].len);
            m->maps[i].addr = NULL;
        } else {
            drop_copied(&L.shards[i]);
        }
    }
out:
    for (int i = 0; i < L.n_shards; i++) {
        free(L.shards[i].path);
        free(L.shards[i].copied);
        st_free(&L.shards[i].st);
    }
    free(L.shards);
    free(L.config_canon);
    json_decref(L.config);
    free(text);
    return err;
}

void model_unload(ss_model *m)
{
    pool_free(m->pool);
    m->pool = NULL;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    for (int i = 0; i < m->n_arena; i++) munmap(m->arena[i].addr, m->arena[i].len);
    free(m->arena);
    for (int i = 0; i < m->n_maps; i++)
        if (m->maps[i].addr) munmap(m->maps[i].addr, m->maps[i].len);
    free(m->maps);
    free(m->layers);
}
