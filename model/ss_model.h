/*
 * ss_model.h - the model runtime: load a HF Mamba-family checkpoint, run it on CPU, and treat
 * its recurrent state as a first-class object (get/set/zero/serialise).
 *
 * Threading: an ss_model is immutable after ss_model_open() and may be shared by any number of
 * threads. An ss_ctx (scratch buffers) and an ss_state belong to one thread at a time.
 *
 * State layout (one contiguous float32 array, see ss_state_layout):
 *   conv          [n_state_layers, conv_channels, conv_kernel]  last conv_kernel inputs of the
 * causal conv per layer, oldest first, zero-padded (HF's cache convention) ssm [n_state_layers,
 * d_inner, d_state]            Mamba-1 / MoE-Mamba [n_state_layers, n_heads, head_dim, d_state]
 * Mamba-2 final_hidden  [d_model]  output of the final norm at the last token seen (zeros for the
 * zero state); the logits of the next token are lm_head(final_hidden). Only layers with a mixer
 * (all layers, except "moe" layers of MoE-Mamba) carry state.
 */
#ifndef SS_MODEL_H
#define SS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

typedef struct ss_model ss_model;
typedef struct ss_ctx ss_ctx;
typedef struct ss_state ss_state;

typedef enum ss_arch {
    SS_ARCH_MAMBA1 = 1, /* MambaForCausalLM */
    SS_ARCH_MAMBA2,     /* Mamba2ForCausalLM */
    SS_ARCH_MOE_MAMBA,  /* MoEMambaForCausalLM (MoE-Mamba, fine-grained MoE, Mixture of Tokens) */
} ss_arch;

/* Everything a caller may want to know about a loaded model. Owned by the model. */
typedef struct ss_model_info {
    ss_arch arch;
    const char *architecture; /* "MambaForCausalLM", ... */
    const char *model_type;   /* "mamba", "mamba2", "moe_mamba" */
    const char *dtype;        /* dtype of the checkpoint's weights: "F32", "BF16", "F16", "mixed" */
    const char *weights;      /* how the matrices are held: "stored" (as dtype says) or "q8" */
    int n_layer;              /* all layers */
    int n_state_layers;       /* layers that carry recurrent state */
    int d_model;
    int d_inner;
    int d_state;
    int conv_kernel;
    int conv_channels; /* d_inner (Mamba-1) or d_inner + 2*n_groups*d_state (Mamba-2) */
    int n_heads;       /* Mamba-2 only, else 0 */
    int head_dim;      /* Mamba-2 only, else 0 */
    int n_groups;      /* Mamba-2 only, else 0 */
    int vocab_size;    /* rows of lm_head = number of logits */
    int eos_token_id;  /* -1 when the config names none */
    int bos_token_id;  /* -1 when the config names none */
    int mot_group_size;   /* Mixture of Tokens group size, 0 for other models */
    /* MoE-Mamba only (NULL / 0 for other models): what /v1/models reports about the experts */
    const char *moe_routing;       /* "token_choice" or "mixture_of_tokens" */
    const char *router_activation; /* token choice: "softmax" or "sigmoid"; else NULL */
    int n_experts;                 /* experts per MoE layer */
    int n_experts_per_tok;         /* token choice: k; mixture of tokens: all (every expert runs) */
    int expert_granularity;        /* fine-grained MoE: the config's moe.granularity, else 0 */
    size_t state_floats;  /* floats in one state */
    size_t state_bytes;   /* state_floats * 4 */
    /* floats of a state's cumulative decay (ss_state_decay): n_state_layers * d_inner (Mamba-1,
     * MoE-Mamba) or n_state_layers * n_heads (Mamba-2) */
    size_t decay_floats;
    uint64_t n_params;        /* all parameters (tied head counted once) */
    uint64_t n_active_params; /* parameters used per token (MoE: only the routed experts) */
    /* bytes of weights a decode token reads, as the model holds them: matrices in their held
     * type and layout (BF16 / F16 16-bit, --weights q8 8-bit with its scales), the vectors (A,
     * D, the conv, the norms, biases) in F32, the head once, one row of an untied embedding,
     * the routed experts only (token choice: k of E). The bandwidth bound of batch-1 decode is
     * the bandwidth over this. */
    uint64_t token_weight_bytes;
    char fingerprint[33];     /* 32 hex chars: XXH3-128 of config + every tensor */
} ss_model_info;

/* Offsets (in floats) and shapes of the three parts of a state. */
typedef struct ss_state_layout {
    size_t conv_off, conv_n;
    size_t ssm_off, ssm_n;
    size_t hidden_off, hidden_n;
    int conv_ndim, conv_shape[4];
    int ssm_ndim, ssm_shape[4];
} ss_state_layout;

/* Progress callback for long loads: called with a short phase name and done/total (bytes). */
typedef void (*ss_progress_fn)(void *user, const char *phase, uint64_t done, uint64_t total);

/* How the weight matrices are held in memory (ss_model_params.weights). */
typedef enum ss_weights {
    /* as the checkpoint stores them: the matrices copied at load onto transparent huge pages
     * (F32 as stored, BF16/F16 kept 16-bit; resident: their bytes), F32 vectors in place (the
     * file mapping); ss_model_params.f32_in_place keeps F32 matrices in the mapping too */
    SS_WEIGHTS_STORED = 0,
    /*
     * Quantised at load to symmetric int8 with one F32 scale per 32 values of a row (a quarter of
     * F32's bytes, plus 1/8): every projection and the embedding/head. Norms, conv, A, D, biases
     * and the recurrent states stay F32. Not exact: see docs/performance.md for the cost. The
     * 8-bit copies are written onto transparent huge pages.
     * Batch-1 decode (one row per step) also quantises its activations, per block of 32 values,
     * and multiplies in integers (AVX-512 VNNI / AVX2): about twice the kernel speed; the
     * quality cost of both is measured in docs/performance.md. ss_model_params.q8_f32_act (or
     * SS_Q8_ACT=f32 in the environment) keeps F32 activations instead.
     */
    SS_WEIGHTS_Q8,
} ss_weights;

typedef struct ss_model_params {
    int n_threads;          /* threads for our own kernels and BLAS; 0 = all cores */
    ss_weights weights;     /* SS_WEIGHTS_STORED by default */
    ss_progress_fn progress; /* may be NULL */
    void *progress_user;
    /*
     * 1: use F32 weight matrices straight from the read-only file mapping: 4 KiB pages, and
     * wherever the file puts them (safetensors aligns to 8 bytes only); the load takes no copy
     * and the kernel can reclaim their pages under memory pressure, but a decode token streams
     * them ~10 % slower (docs/performance.md). 0 (default): copied at load onto transparent
     * huge pages, 64-byte aligned, as 16-bit and 8-bit matrices are (resident: one copy; the
     * file's pages are released; ~0.2 s per GB at load).
     */
    int f32_in_place;
    /* With SS_WEIGHTS_Q8: keep batch-1 decode's activations in F32 (see SS_WEIGHTS_Q8). */
    int q8_f32_act;
    /*
     * Mamba-1 layers: x_proj and out_proj kept transposed, so that a decode step of up to 16
     * sequences runs each layer in two parallel steps instead of four (the threads meet twice;
     * docs/performance.md, "Two meetings per Mamba-1 layer"). Both products are then summed
     * over 16 segments of the channels in a fixed tree: prompts and decode give the same bits
     * on any thread count. 0 (default) or -1: off (the rows, four steps; on a 16-core Xeon the
     * two steps were 1-13 % faster for one stream at 16 threads but 8-16 % slower for 16
     * streams, and level or slower for both from 4 to 8 threads: docs/performance.md); 1: on
     * (with SS_WEIGHTS_Q8 the two matrices in the q8k layout with integer kernels of their own,
     * where the segments start on a block of 32 channels; otherwise the rows). The
     * environment's SS_FUSED_DECODE=1 or 0 overrides it.
     */
    int fused_decode;
} ss_model_params;

ss_model_params ss_model_default_params(void);

/*
 * Load the checkpoint folder `dir` (config.json + model.safetensors, or shards with
 * model.safetensors.index.json). Every header field is validated; on failure nothing is allocated,
 * *out is untouched and ss_errmsg() names the file/tensor and what is wrong.
 * F32 weights are used in place from the mmapped file; BF16/F16 are converted once.
 * Returns SS_ERR_NOT_FOUND (a file is missing), SS_ERR_IO, SS_ERR_FORMAT (malformed config or
 * tensors), SS_ERR_UNSUPPORTED (an architecture or option we do not run), SS_ERR_MISMATCH (a
 * tensor's shape disagrees with the config) or SS_ERR_NOMEM.
 */
ss_err ss_model_open(ss_model **out, const char *dir, const ss_model_params *params);

/* Release the model. NULL is a no-op. No ctx or state of it may be used afterwards. */
void ss_model_close(ss_model *m);

/* The model's shape and identity; valid as long as the model is open. */
const ss_model_info *ss_model_get_info(const ss_model *m);
/* Where the conv windows, SSM states and final hidden sit in a state's floats (see above). */
void ss_model_state_layout(const ss_model *m, ss_state_layout *out);

/* ---- scratch context ------------------------------------------------------------------------ */

/* Per-thread scratch. Grows on demand; no allocation per token once warm. SS_ERR_NOMEM. */
ss_err ss_ctx_new(const ss_model *m, ss_ctx **out);
/* Release the scratch. NULL is a no-op. */
void ss_ctx_free(ss_ctx *c);

/* ---- per-phase profile ---------------------------------------------------------------------- */

/*
 * Phases of ss_model_eval whose wall time a context can count (statesoup-bench --profile). Every
 * nanosecond of an eval falls in exactly one phase: the time since the previous phase ended.
 * Parallel steps count on the calling thread, waits included (ss_profile.pool_*).
 */
typedef enum ss_phase {
    SS_PHASE_EMBED,      /* embedding rows */
    SS_PHASE_NORM,       /* each layer's pre-norm */
    SS_PHASE_IN_PROJ,    /* Mamba in_proj (with the conv of each block's channels at decode) */
    SS_PHASE_CONV,       /* Mamba causal conv when it runs as a step of its own */
    SS_PHASE_X_PROJ,     /* Mamba-1 x_proj (and falcon-mamba's B/C/dt norms) */
    SS_PHASE_SCAN,       /* Mamba-1 dt_proj + selective scan */
    SS_PHASE_OUT_PROJ,   /* Mamba out_proj, with the residual add (not in a Mamba-1 decode step) */
    SS_PHASE_MIXER,      /* Mamba-2 between conv and out_proj; a whole MoE block */
    SS_PHASE_RESIDUAL,   /* MoE's residual add; a Mamba-1 decode step's out_proj partials summed
                          * into the residual stream (its in_proj phase includes the conv and
                          * x_proj, its dt+scan phase out_proj's partial products) */
    SS_PHASE_FINAL_NORM, /* the final norm */
    SS_PHASE_LM_HEAD,    /* logits */
    SS_PHASE_OTHER,      /* checks, bookkeeping, the final hidden copied into the states */
    SS_PHASE_COUNT
} ss_phase;

typedef struct ss_profile {
    uint64_t evals;                   /* ss_model_eval calls counted */
    uint64_t eval_ns;                 /* their wall time; = the sum of ns[] */
    uint64_t ns[SS_PHASE_COUNT];      /* wall time per phase */
    uint64_t calls[SS_PHASE_COUNT];   /* how often each phase ran */
    uint64_t pool_steps;              /* parallel steps (meetings of the pool's threads) */
    uint64_t pool_wait_ns;            /* the caller spinning after its own parts (inside ns[]) */
    uint64_t pool_spread_ns;          /* first part finishing -> last part finishing */
    uint64_t pool_lag_ns;             /* step published -> a worker starting a part */
    uint64_t pool_alone;              /* steps the caller ran alone: no worker came in time */
    uint64_t pool_woken;              /* steps that had to wake a worker sleeping on the futex */
    uint64_t pool_woken_lag_ns;       /* the part of pool_lag_ns in those steps */
    /* the meetings by phase (the phase a parallel step ran in): steps, the caller's wait, the
     * spread of the parts' ends, the lag of the first worker */
    uint64_t ph_steps[SS_PHASE_COUNT], ph_wait_ns[SS_PHASE_COUNT];
    uint64_t ph_spread_ns[SS_PHASE_COUNT], ph_lag_ns[SS_PHASE_COUNT];
} ss_profile;

/* A short lowercase name ("in_proj", "dt+scan", ...); "?" outside [0, SS_PHASE_COUNT). */
const char *ss_phase_name(ss_phase p);
/*
 * Count (on != 0) or stop counting the phases of c's evals, and zero the counts. Off by default;
 * when off, ss_model_eval reads one flag per phase and nothing else.
 */
void ss_ctx_set_profile(ss_ctx *c, int on);
/* The counts since ss_ctx_set_profile. */
void ss_ctx_get_profile(const ss_ctx *c, ss_profile *out);

/* ---- states --------------------------------------------------------------------------------- */

/* A zero state for model m. SS_ERR_NOMEM. */
ss_err ss_state_new(const ss_model *m, ss_state **out);
/* Release the state. NULL is a no-op. */
void ss_state_free(ss_state *s);
/*
 * A buffer of at least `floats` floats, not zeroed, 64-byte aligned; NULL when out of memory.
 * The model keeps buffers given back (states' blocks too; up to 128 MB, 40 buffers) and hands
 * them out again, so a request does not wait for fresh memory to be touched (state.c). Give it
 * back to the same model with ss_buf_give (NULL is a no-op), never to free(); the model must
 * outlive it, as it outlives its states.
 */
float *ss_buf_take(const ss_model *m, size_t floats);
void ss_buf_give(const ss_model *m, float *p);
/* The same for a stored state's blob: at least state_floats + decay_floats + 1 floats (a
 * state's own block size). */
float *ss_scratch_take(const ss_model *m);
void ss_scratch_give(const ss_model *m, float *b);
/* The state's floats (ss_model_info.state_floats of them), laid out as described above. */
float *ss_state_data(ss_state *s);
/* The same, read-only. */
const float *ss_state_cdata(const ss_state *s);
/* How many floats the state holds (ss_model_info.state_floats). */
size_t ss_state_floats(const ss_state *s);
/* Back to the zero state (the state of an empty prompt). */
void ss_state_zero(ss_state *s);
/* Copy src into dst. SS_ERR_MISMATCH if the sizes differ. */
ss_err ss_state_copy(ss_state *dst, const ss_state *src);
/* Copy `n` floats from `data` into the state; SS_ERR_MISMATCH if n != ss_state_floats(s). */
ss_err ss_state_set(ss_state *s, const float *data, size_t n);
/*
 * The state's cumulative decay S: per state layer and channel (Mamba-1, MoE-Mamba: [n_state_layers,
 * d_inner]) or head (Mamba-2: [n_state_layers, n_heads]), the sum over every token the state has
 * seen of dt = softplus(dt_proj(.) + b) (Mamba-2: the clamped dt), so that the SSM state decayed
 * since the start is exp(A S). ss_model_eval adds to it as it runs. ss_model_info.decay_floats
 * floats, always allocated; whether they are known is ss_state_has_decay.
 */
float *ss_state_decay(ss_state *s);
const float *ss_state_cdecay(const ss_state *s);
/* 1 when the decay is known: a state that started from zero (ss_state_new, ss_state_zero) or whose
 * decay was set (ss_state_set_decay); 0 after ss_state_set (floats from elsewhere). */
int ss_state_has_decay(const ss_state *s);
/* Set the decay (n must be decay_floats: SS_ERR_MISMATCH), or mark it unknown (d NULL). */
ss_err ss_state_set_decay(ss_state *s, const float *d, size_t n);
/* Decay-aware composition modes (ss_state_compose). */
typedef enum ss_compose_mode {
    SS_COMPOSE_SEQUENTIAL = 1, /* the sources read one after the other, in the given order */
    SS_COMPOSE_SYMMETRIC,      /* the mean of the sequential composition over all orders */
} ss_compose_mode;
#define SS_COMPOSE_MAX 64 /* most sources of one composition */

/*
 * Compose n states (each state_floats floats, with its decay of decay_floats floats) the way the
 * SSM itself would (model/compose.c has the equations): per SSM element, sequential gives
 * h = h_1, h = exp(A S_k) h + h_k for k = 2..n (exact at the first layer when each context was
 * read with the previous one's conv window), symmetric the mean of that over all n! orders in
 * closed form (elementary symmetric polynomials of the other sources' factors exp(A S)). Conv
 * windows and final_hidden: the last source's (sequential) or the sources' mean (symmetric).
 * out_decay = sum of the decays (every order reads every context once). out and out_decay are
 * written in full. SS_ERR_INVALID (n outside 1..SS_COMPOSE_MAX, unknown mode, a result that is
 * not finite, naming the value), SS_ERR_UNSUPPORTED (over 256 state layers).
 */
ss_err ss_state_compose(const ss_model *m, ss_compose_mode mode, const float *const *states,
                        const float *const *decays, int n, float *out, float *out_decay);
/* States are merged by the store (ss_store_merge_f32), where the sum is fused with the checksum
 * pass over the stored bytes; the model has no merge kernel of its own. */
/* SS_ERR_INVALID naming the first non-finite value, else SS_OK. */
ss_err ss_state_check_finite(const float *data, size_t n);

/* ---- retrieval keys (key.c) ---------------------------------------------------------------- */

/*
 * A retrieval key is a short L2-normalised F32 vector computed from a state, so that the cosine
 * similarity of two states is the dot product of their keys (docs/retrieval.md). Kinds:
 *   SS_KEY_FINAL_HIDDEN  final_hidden [d_model], normalised
 *   SS_KEY_SSM_NORM      each layer's SSM state at unit norm, reduced to SS_KEY_SKETCH_DIM by a
 *                        fixed-seed random projection (count sketch), normalised
 *   SS_KEY_PROJECTION    the whole state reduced by the same projection, normalised
 *   SS_KEY_SSM_SLOW      the first state layer's SSM state at its slowest-decaying dimensions
 *                        (Mamba-1, MoE: per channel the state dimension with the smallest |A|;
 *                        Mamba-2: the slowest quarter of the heads), at unit norm, reduced by
 *                        the same projection, normalised: close to a bag of the tokens read
 * The zero state's key is all zeros (it matches nothing). Keys are deterministic: the same state
 * gives the same key on every machine.
 */
typedef enum ss_key_kind {
    SS_KEY_FINAL_HIDDEN = 0,
    SS_KEY_SSM_NORM,
    SS_KEY_PROJECTION,
    SS_KEY_SSM_SLOW,
    SS_KEY__COUNT
} ss_key_kind;
#define SS_KEY_SKETCH_DIM 256 /* dims of the projected kinds (a power of two) */

/* "final_hidden", "ssm_norm", "projection", "ssm_slow" ("?" outside the enum). */
const char *ss_key_kind_name(ss_key_kind k);
/* By name: SS_OK, or SS_ERR_INVALID naming the kinds. */
ss_err ss_key_kind_parse(const char *name, ss_key_kind *out);
/* Floats in a key of kind k for model m (d_model for final_hidden, else SS_KEY_SKETCH_DIM). */
int ss_key_dim(const ss_model *m, ss_key_kind k);
/*
 * out[ss_key_dim(m, k)] = the key of state floats data[n]. SS_ERR_MISMATCH when n is not the
 * model's state_floats, SS_ERR_UNSUPPORTED (final_hidden of d_model > 4096), SS_ERR_INVALID
 * (unknown kind). Thread-safe; O(n).
 */
ss_err ss_state_key(const ss_model *m, ss_key_kind k, const float *data, size_t n, float *out);

/* ---- evaluation ----------------------------------------------------------------------------- */

/* One sequence of a batch: feed `tokens` to `state`, optionally returning logits. */
typedef struct ss_seq {
    ss_state *state;       /* in: starting state; out: state after the last token */
    const int32_t *tokens; /* [n_tokens], each in [0, vocab_size) */
    int n_tokens;          /* >= 0; 0 leaves the state untouched */
    float *logits;         /* NULL, or out: [n_tokens, vocab] if logits_all, else [vocab] (last) */
    int logits_all;
    /*
     * Mixture-of-Tokens group: sequences of one eval call with the same group > 0 are mixed at
     * every MoT layer, position by position (they must have the same n_tokens; at most
     * mot_group_size of them). 0 = alone: a group of one, mixing disabled. Ignored by other
     * models.
     */
    int group;
} ss_seq;

/*
 * Run the model over every sequence of the batch. Sequences are independent (except for
 * Mixture-of-Tokens groups, see ss_seq.group) and may have different lengths; all their tokens go
 * through the projections together (GEMMs). `lockstep` is a shorthand for Mixture-of-Tokens
 * models: sequences whose group is 0 are put in groups of mot_group_size consecutive sequences.
 * Token ids and groups are validated before any state is touched (SS_ERR_INVALID says what).
 */
ss_err ss_model_eval(ss_model *m, ss_ctx *c, ss_seq *seqs, int n_seqs, int lockstep);

/* Logits of the next token from a state alone: lm_head(final_hidden). logits: [vocab].
 * SS_ERR_MISMATCH when s is not a state of m's size. */
ss_err ss_model_logits_from_state(ss_model *m, ss_ctx *c, const ss_state *s, float *logits);

/* ---- sampling ------------------------------------------------------------------------------- */

typedef struct ss_sample_params {
    float temperature; /* 0 = greedy (argmax); default 1 */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    uint64_t seed;     /* same seed + same logits = same tokens */
} ss_sample_params;

ss_sample_params ss_sample_default_params(void);
/* SS_ERR_INVALID with a message for out-of-range values (negative temperature, top_p > 1, ...). */
ss_err ss_sample_params_check(const ss_sample_params *p);

typedef struct ss_sampler ss_sampler;
ss_err ss_sampler_new(const ss_sample_params *p, int vocab, ss_sampler **out);
void ss_sampler_free(ss_sampler *s);
/*
 * Pick the next token from logits [vocab]. *logprob (may be NULL) receives the token's
 * log-probability under the model's distribution (softmax of the raw logits, temperature 1).
 */
int32_t ss_sampler_sample(ss_sampler *s, const float *logits, float *logprob);

/* log_softmax(logits)[i] for one i; logits [vocab]. */
float ss_logprob_of(const float *logits, int vocab, int32_t id);
/* The k most likely tokens (k <= vocab), best first, with their log-probabilities. */
void ss_logprobs_top(const float *logits, int vocab, int k, int32_t *ids, float *logprobs);
/* Index of the largest logit (lowest index on ties). */
int32_t ss_argmax(const float *logits, int vocab);

/* ---- stop strings ------------------------------------------------------------------------- */

/*
 * Streaming stop-string matcher: generated text goes in piece by piece; what comes out is safe
 * to show now. Text that might be the start of a stop string is held back until it is decided;
 * when a stop string appears, the text before it is released and the rest (the stop string and
 * whatever followed) is dropped, as OpenAI's `stop` does (the earliest match wins).
 * Released text never ends inside a multi-byte UTF-8 character: when the text pushed so far is
 * valid UTF-8, so is every piece returned (a character whose bytes have not all arrived is held
 * back; a stop string that begins inside a character drops that whole character).
 * One matcher per generation; not thread-safe.
 */
typedef struct ss_stopper ss_stopper;
/* stops: n strings (n may be 0; empty strings are ignored). Copied. SS_ERR_NOMEM. */
ss_err ss_stopper_new(const char *const *stops, int n, ss_stopper **out);
/* Release the matcher. NULL is a no-op. */
void ss_stopper_free(ss_stopper *s);
/*
 * Feed `len` bytes of text. Returns the text to emit now (owned by s, valid until the next call,
 * NUL-terminated) and its length in *out_len; NULL (and *out_len 0) when out of memory, in which
 * case this piece is lost. *hit is set to 1 once a stop string matched; after that every call
 * returns "".
 */
const char *ss_stopper_push(ss_stopper *s, const char *text, size_t len, size_t *out_len, int *hit);
/* End of generation: release what is still held back (no stop string can complete any more).
 * NULL when out of memory. */
const char *ss_stopper_flush(ss_stopper *s, size_t *out_len);

/* ---- state files (safetensors) ------------------------------------------------------------ */

/*
 * Serialise state floats `data` (ss_model_info.state_floats of them) as a safetensors file in
 * memory: tensors "conv", "ssm", "final_hidden" in `dtype` ("F32", "BF16" or "F16"; NULL = F32),
 * shaped as in ss_state_layout. `metadata_json` (may be NULL) is a JSON object whose values are
 * strings; it becomes __metadata__. The model fingerprint is always added as "model_fingerprint".
 * On success *out (free() it) and *out_len are set. SS_ERR_INVALID (unknown dtype, metadata
 * that is not an object of strings) or SS_ERR_NOMEM.
 */
ss_err ss_state_export(const ss_model *m, const float *data, const char *dtype,
                       const char *metadata_json, uint8_t **out, size_t *out_len);

/*
 * Parse a safetensors state file from memory, check it against model m and write its values as
 * F32 into dst (state_floats). Accepts F32/BF16/F16 tensors; final_hidden may be absent (zeros).
 * SS_ERR_FORMAT for a malformed file, SS_ERR_MISMATCH when shapes or the recorded
 * model_fingerprint differ from m, SS_ERR_INVALID when a value is not finite.
 * *metadata_json (may be NULL) receives the __metadata__ object as JSON text (free() it), "{}" if
 * none.
 */
ss_err ss_state_import(const ss_model *m, const uint8_t *buf, size_t len, float *dst,
                       char **metadata_json);

/*
 * The same with the state's cumulative decay: export adds a tensor "decay" (always F32, shaped
 * [n_state_layers, d_inner] or [n_state_layers, n_heads] for Mamba-2) when decay is not NULL;
 * import reads it into decay (decay_floats) when the file has one and sets *has_decay to 1,
 * else to 0 (a file without it imports as before). Errors as ss_state_export / ss_state_import.
 */
ss_err ss_state_export_decay(const ss_model *m, const float *data, const float *decay,
                             const char *dtype, const char *metadata_json, uint8_t **out,
                             size_t *out_len);
ss_err ss_state_import_decay(const ss_model *m, const uint8_t *buf, size_t len, float *dst,
                             float *decay, int *has_decay, char **metadata_json);

/* ---- BLAS kernels -------------------------------------------------------------------------- */

/*
 * Make sure OpenBLAS runs kernels fit for this CPU. Debian's OpenBLAS misdetects recent Xeons and
 * falls back to SSE3 kernels (4-6x slower); its kernel choice is made when the library loads, so
 * this re-executes the program (execv of /proc/self/exe with argv) with OPENBLAS_CORETYPE set when
 * needed. Call first thing in main(). Returns only when no re-exec was needed or it failed.
 */
void ss_blas_ensure_kernels(char **argv);
/* The active OpenBLAS core name ("SkylakeX", "Prescott", ...). */
const char *ss_blas_core_name(void);

#endif
