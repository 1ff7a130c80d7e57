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

/*
 * coef[j] for one element, given the factors a[0..n-1] (symmetric mode) and ib[m] = 1/C(n-1, m).
 * E = the elementary symmetric polynomials of all n factors; those without a_j follow from
 * e_m(-j) = E_m - a_j e_{m-1}(-j) (O(n) per source instead of a fresh O(n^2) product).
 */
static void sym_coefs(const double *a, int n, const double *ib, double *coef)
{
    double E[SS_COMPOSE_MAX + 1];
    E[0] = 1;
    for (int k = 1; k <= n; k++) E[k] = 0;
    for (int k = 0; k < n; k++)
        for (int q = k + 1; q >= 1; q--) E[q] += a[k] * E[q - 1];
    for (int j = 0; j < n; j++) {
        double e = 1, s = ib[0]; /* e_0(-j) = 1 */
        for (int q = 1; q < n; q++) {
            e = E[q] - a[j] * e;
            s += e * ib[q];
        }
        coef[j] = s / n;
    }
}

/* One composition, split over the model's threads by rows (layer x channel). */
typedef struct comp_job {
    const comp_geom *g;
    ss_compose_mode mode;
    const float *const *states;
    const float *const *decays;
    int n;
    const double *ib;
    size_t ssm_off;
    float *out;
} comp_job;

static void compose_rows(void *arg, int tid, int nt)
{
    const comp_job *j = arg;
    const comp_geom *g = j->g;
    int r0, r1;
    pool_range(g->L * g->rows, 1, tid, nt, &r0, &r1);
    for (int lr = r0; lr < r1; lr++) {
        const int l = lr / g->rows, r = lr % g->rows;
        for (int k = 0; k < g->N; k++) {
            size_t e = j->ssm_off + ((size_t)lr * g->N) + k;
            double a[SS_COMPOSE_MAX], h = 0;
            for (int i = 0; i < j->n; i++) a[i] = factor(g, j->decays[i], l, r, k);
            if (j->mode == SS_COMPOSE_SEQUENTIAL) {
                h = j->states[0][e];
                for (int i = 1; i < j->n; i++) h = a[i] * h + j->states[i][e];
            } else {
                double coef[SS_COMPOSE_MAX];
                sym_coefs(a, j->n, j->ib, coef);
                for (int i = 0; i < j->n; i++) h += coef[i] * j->states[i][e];
            }
            j->out[e] = (float)h;
        }
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
    double ib[SS_COMPOSE_MAX], b = 1; /* 1 / C(n-1, m) */
    for (int k = 0; k < n; k++) {
        ib[k] = 1 / b;
        b = b * (n - 1 - k) / (k + 1);
    }
    comp_job job = {.g = &g, .mode = mode, .states = states, .decays = decays, .n = n, .ib = ib,
                    .ssm_off = lay.ssm_off, .out = out};
    pool_run(m->pool, compose_rows, &job);
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
