/*
 * kernels.h - the hot loops of the forward pass, in a portable C version and SIMD versions
 * (AVX2+FMA, AVX-512) chosen once at run time for the CPU at hand. Internal to model/.
 *
 * Vector versions work on blocks of 16 channels and need pre-transposed weights (see
 * kernels_prepare_*); the portable versions are the reference the tests compare against.
 */
#ifndef SS_KERNELS_H
#define SS_KERNELS_H

#include <stddef.h>

/* Mamba-1 selective scan over T tokens of one sequence, channels [c0, c1). */
typedef struct scan1_args {
    int T;
    int c0, c1;      /* channel range; vector kernels need multiples of 16 */
    int N;           /* d_state */
    const float *dt; /* row t at dt + t*ldd: raw dt_proj output (softplus applied here) */
    int ldd;
    const float *x; /* conv output, row stride ldx */
    int ldx;
    const float *z; /* gate, row stride ldz */
    int ldz;
    const float *B; /* B of token t at B + t*ldbc, [N]; C likewise */
    const float *C;
    int ldbc;
    const float *A;   /* [Di, N] = -exp(A_log) */
    const float *A16; /* [Di/16][N][16] transposed blocks of A, or NULL */
    const float *D;   /* [Di] */
    float *s;         /* [Di, N] the layer's SSM state of this sequence (updated) */
    float *y;         /* out, row stride ldy: (s.C + D x) * SiLU(z) */
    int ldy;
} scan1_args;

/* Causal depthwise conv + bias + SiLU over T tokens, channels [c0, c1). */
typedef struct conv_args {
    int T;
    int c0, c1;
    int K;
    const float *in; /* input row t at in + t*ld_in */
    int ld_in;
    const float *w;    /* [C, K] */
    const float *w16;  /* [C/16][K][16] transposed blocks, or NULL */
    const float *bias; /* [C] or NULL */
    float *win;        /* [C, K] the conv window of this sequence (oldest first; updated) */
    float *out;        /* row t at out + t*ld_out */
    int ld_out;
} conv_args;

typedef struct kernels {
    const char *name;
    void (*scan1)(const scan1_args *a);
    void (*conv)(const conv_args *a);
    /*
     * Y[M, N] = X[M, K] W[N, K]^T for small M (1..16): weights streamed once, every row of X
     * reused from cache. X rows at stride ldx, Y rows at stride ldy.
     */
    void (*gemm_small)(const float *X, int M, int K, int ldx, const float *W, int N, float *Y,
                       int ldy);
    /* log(sum_i exp(x[i])) over n values (the softmax normaliser of a vocabulary). */
    float (*logsumexp)(const float *x, int n);
} kernels;

/* The best kernels for this CPU (SS_KERNELS=generic|avx2|avx512 forces a choice). */
const kernels *kernels_get(void);
/* The portable reference kernels. */
const kernels *kernels_generic(void);
const kernels *kernels_avx2(void);   /* NULL when not built in */
const kernels *kernels_avx512(void); /* NULL when not built in */

/* Transpose [C, K] into [C/16][K][16] blocks (C % 16 == 0). dst has C*K floats. */
void kernels_block16(const float *src, int C, int K, float *dst);

#endif
