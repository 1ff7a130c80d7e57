/*
 * mixers.h - the per-layer pieces of the forward pass, shared by mamba.c (Mamba-1 and the eval
 * loop), mamba2.c and moe.c. Internal to model/.
 */
#ifndef SS_MIXERS_H
#define SS_MIXERS_H

#include "internal.h"

/* A run of consecutive tokens of one sequence inside a round: rows [row, row + n) of the
 * scratch matrices hold tokens [pos, pos + n) of sequence `seq`, whose state is `state`. */
typedef struct span {
    int seq;
    ss_state *state;
    int pos;
    int row;
    int n;
    int group; /* Mixture-of-Tokens group (0 = alone) */
} span;

/* The arguments of one layer's scan, shared by the pool's threads. */
typedef struct scan_job {
    const ss_model *m;
    ss_ctx *c;
    const layer *ly;
    const span *sp;
    int n_sp;
    size_t ssm_off; /* the layer's SSM state within a state */
    int fuse_dt;    /* Mamba-1, <= 16 rows: each thread computes dt_proj for its own channels */
} scan_job;

/* y = norm(x) row by row (RMSNorm or LayerNorm per the config); x, y: [rows, d]. */
void norm_rows(const model_config *c, const float *w, const float *b, const float *x, float *y,
               int rows, int d);
/* Causal depthwise conv + SiLU over channels [0, C) of `in` (row stride ld_in) -> out [T, C];
 * updates the conv windows of the layer in each span's state. */
void conv_rows(const ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp,
               const float *in, int ld_in, float *out, int C);

/*
 * [T, W] = in_proj(c->xn) into c->proj, then the causal conv of its columns [off, off + C) into
 * c->xc [T, C] (updating the windows). At decode (T <= 16, off and C multiples of 16) each
 * thread convolves the blocks of channels it just produced, inside in_proj's step; otherwise
 * the conv is a step of its own. The same bits either way.
 */
void in_proj_conv(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T,
                  int W, int off, int C);
/* c->h += out_proj(c->y) (c->out holds the projection): each block of out_proj's columns is
 * added to the residual stream by the thread that produced it. */
void out_proj_residual(ss_model *m, ss_ctx *c, const layer *ly, int T);

/* Mamba-2 mixer: reads c->xn [T, d], adds its output to c->h [T, d], advances the states. */
void mamba2_mixer(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T);
/* MoE layer (token choice or mixture of tokens): reads c->xn, writes c->out. SS_OK always
 * today (the scratch is reserved before); ss_err so an expert kernel may fail later. */
ss_err moe_block(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T);

#endif
