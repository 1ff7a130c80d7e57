/*
 * compose.c - decay-aware composition of states (issue 11 part 2; PICASO, arXiv 2502.17605).
 *
 * For one Mamba-1 layer, h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, so reading context c2 after c1
 * gives exactly
 *     h(c1 c2) = exp(A S2) h(c1) + h(c2 | h = 0),     S2 = sum over c2's tokens of dt
 * (per channel; Mamba-2: per head, A a scalar per head). It is exact at the first layer when c2
 * was read with c1's conv window, and an approximation deeper, where each layer's inputs change.
 *
 * sequential (sources in the given order): h = h_1, then h = exp(A S_k) h + h_k for k = 2..n.
 *   conv windows and final_hidden: the last source's (the last context read). decay: sum of S_k.
 * symmetric: the mean of the sequential composition over all n! orders, in closed form. In an
 *   order, source j is multiplied by the factors a_k = exp(A S_k) of the sources after it; over
 *   all orders the number m of sources after j is uniform on 0..n-1 and, given m, the set of them
 *   is uniform among the m-subsets of the others, so
 *       coef_j = (1/n) sum_{m=0}^{n-1} e_m(a_{-j}) / C(n-1, m)
 *   with e_m the elementary symmetric polynomials of the other sources' factors (computed by the
 *   usual O(n^2) recurrence, in double). conv windows and final_hidden: the mean over orders of
 *   the last source's, i.e. the mean of the sources'. decay: sum of S_k (the same in every order).
 */
#include <math.h>
#include <string.h>

#include "internal.h"

/* exp(A S) for SSM element e of state layer l: A of that layer's channel/head. */
typedef struct comp_geom {
    int L, rows, N;   /* per layer: rows (Di channels, or H heads of P rows each) x N */
    int P;            /* Mamba-2: rows per head (head_dim), 1 for Mamba-1 */
    int dw;           /* decay floats per layer: Di or H */
    const float *const *A; /* [L] per layer: [Di, N] (Mamba-1) or [H] (Mamba-2) */
    int m2;
} comp_geom;

/* The factor a = exp(A S) of element (l, r, n) for a source with decay S. */
static inline double factor(const comp_geom *g, const float *S, int l, int r, int n)
{
    if (g->m2) {
        int h = r / g->P;
        return exp((double)g->A[l][h] * S[(size_t)l * g->dw + h]);
    }
    return exp((double)g->A[l][(size_t)r * g->N + n] * S[(size_t)l * g->dw + r]);
}

static void geom_init(const ss_model *m, comp_geom *g, const float **A)
{
    const ss_model_info *in = &m->info;
    g->L = in->n_state_layers;
    g->N = in->d_state;
    g->m2 = in->arch == SS_ARCH_MAMBA2;
    g->P = g->m2 ? in->head_dim : 1;
    g->rows = in->d_inner;
    g->dw = g->m2 ? in->n_heads : in->d_inner;
    for (int l = 0; l < in->n_layer; l++)
        if (m->layers[l].state_index >= 0) A[m->layers[l].state_index] = m->layers[l].A;
    g->A = A;
}

/* coef[j] for one element, given the factors a[0..n-1] (symmetric mode). */
static void sym_coefs(const double *a, int n, double *coef)
{
    double e[SS_COMPOSE_MAX + 1], inv_binom[SS_COMPOSE_MAX];
    /* 1 / C(n-1, m) */
    double b = 1;
    for (int k = 0; k < n; k++) {
        inv_binom[k] = 1 / b;
        b = b * (n - 1 - k) / (k + 1);
    }
    for (int j = 0; j < n; j++) {
        e[0] = 1;
        for (int k = 1; k < n; k++) e[k] = 0;
        int cnt = 0;
        for (int k = 0; k < n; k++) {
            if (k == j) continue;
            cnt++;
            for (int q = cnt; q >= 1; q--) e[q] += a[k] * e[q - 1];
        }
        double s = 0;
        for (int q = 0; q < n; q++) s += e[q] * inv_binom[q];
        coef[j] = s / n;
    }
}

ss_err ss_state_compose(const ss_model *m, ss_compose_mode mode, const float *const *states,
                        const float *const *decays, int n, float *out, float *out_decay)
{
    if (n < 1 || n > SS_COMPOSE_MAX)
        return ss_fail(SS_ERR_INVALID, "compose: 1..%d states, not %d", SS_COMPOSE_MAX, n);
    if (mode != SS_COMPOSE_SEQUENTIAL && mode != SS_COMPOSE_SYMMETRIC)
        return ss_fail(SS_ERR_INVALID, "compose: unknown mode %d", (int)mode);
    const float *A[256];
    if (m->info.n_state_layers > 256)
        return ss_fail(SS_ERR_UNSUPPORTED, "compose: more than 256 state layers");
    comp_geom g;
    geom_init(m, &g, A);
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    const size_t per_layer = (size_t)g.rows * g.N;
    for (int l = 0; l < g.L; l++) {
        for (int r = 0; r < g.rows; r++) {
            for (int k = 0; k < g.N; k++) {
                size_t e = lay.ssm_off + (size_t)l * per_layer + (size_t)r * g.N + k;
                double a[SS_COMPOSE_MAX], h = 0;
                for (int j = 0; j < n; j++) a[j] = factor(&g, decays[j], l, r, k);
                if (mode == SS_COMPOSE_SEQUENTIAL) {
                    h = states[0][e];
                    for (int j = 1; j < n; j++) h = a[j] * h + states[j][e];
                } else {
                    double coef[SS_COMPOSE_MAX];
                    sym_coefs(a, n, coef);
                    for (int j = 0; j < n; j++) h += coef[j] * states[j][e];
                }
                out[e] = (float)h;
            }
        }
    }
    /* conv windows and final_hidden: the last source's, or the mean of the sources' */
    size_t spans[2][2] = {{lay.conv_off, lay.conv_n}, {lay.hidden_off, lay.hidden_n}};
    for (int p = 0; p < 2; p++) {
        for (size_t i = spans[p][0]; i < spans[p][0] + spans[p][1]; i++) {
            if (mode == SS_COMPOSE_SEQUENTIAL) {
                out[i] = states[n - 1][i];
            } else {
                double s = 0;
                for (int j = 0; j < n; j++) s += states[j][i];
                out[i] = (float)(s / n);
            }
        }
    }
    for (size_t i = 0; i < m->info.decay_floats; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += decays[j][i];
        out_decay[i] = (float)s;
    }
    return ss_state_check_finite(out, m->info.state_floats);
}
