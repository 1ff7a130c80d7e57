/*
 * moe.c - MoE layers of the MoE-Mamba family (docs/model-format.md).
 *
 * expert_e(x) = down_e(h), h = act(up_e x) or act(up_e x [:de]) * (up_e x)[de:] when gated.
 *
 * Token choice (Switch top-1, fine-grained top-k, sigmoid routers): p = softmax or sigmoid of
 * router(x) (+bias); y = sum over the k best experts e of p_e expert_e(x), the k weights divided
 * by their sum when normalize_topk. Dropless. Rows are grouped by expert so that each expert runs
 * one GEMM over all its tokens and only routed experts are computed.
 *
 * Mixture of tokens: a group is one token from each of n sequences at the same position;
 * w[i,e] = softmax over i of (x_i . router_e) / t; m_e = sum_i w[i,e] x_i; o_e = expert_e(m_e);
 * y_i = sum_e w[i,e] o_e. A group of one (mixing disabled) gives w = 1 for every expert.
 */
#include "mixers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void activate(act_kind a, float *v, int n)
{
    for (int i = 0; i < n; i++) {
        float x = v[i];
        switch (a) {
        case ACT_RELU:
            v[i] = x > 0 ? x : 0;
            break;
        case ACT_GELU: /* exact erf form */
            v[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
            break;
        case ACT_SILU:
            v[i] = x / (1.0f + expf(-x));
            break;
        }
    }
}

/* out[rows, d] = expert_e(in[rows, d]); eh is [rows, 2de] scratch. */
static void run_expert(const ss_model *m, ss_ctx *c, const layer *ly, int e, const float *in,
                       int rows, float *eh, float *out)
{
    const moe_config *mc = &m->cfg.moe;
    const int d = m->cfg.d_model, de = mc->expert_width;
    const int up_rows = mc->gated ? 2 * de : de;
    mm_rows(m, c, in, rows, d, d, ly->up_w[e], NULL, up_rows, eh, up_rows);
    for (int r = 0; r < rows; r++) {
        float *h = eh + (size_t)r * up_rows;
        activate(mc->activation, h, de);
        if (mc->gated) {
            for (int i = 0; i < de; i++) h[i] *= h[de + i];
        }
    }
    /* down: [d, de]; h rows have stride up_rows */
    mm_rows(m, c, eh, rows, de, up_rows, ly->down_w[e], NULL, d, out, d);
}

static ss_err token_choice(ss_model *m, ss_ctx *c, const layer *ly, int T)
{
    const moe_config *mc = &m->cfg.moe;
    const int d = m->cfg.d_model, E = mc->n_experts, k = mc->top_k;
    /* router logits [T, E] */
    mm_rows(m, c, c->xn, T, d, d, ly->router_w, ly->router_b, E, c->router, E);
    for (int t = 0; t < T; t++) {
        float *p = c->router + (size_t)t * E;
        if (mc->router_sigmoid) {
            for (int e = 0; e < E; e++) p[e] = 1.0f / (1.0f + expf(-p[e]));
        } else {
            float mx = p[0];
            for (int e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
            double sum = 0;
            for (int e = 0; e < E; e++) sum += (p[e] = expf(p[e] - mx));
            for (int e = 0; e < E; e++) p[e] = (float)(p[e] / sum);
        }
        /* top-k, best first, lowest index on ties */
        int *idx = c->route_idx + (size_t)t * k;
        float *w = c->route_w + (size_t)t * k;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int q = 0; q < j; q++) taken |= idx[q] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            idx[j] = best;
            w[j] = p[best];
        }
        if (mc->normalize_topk) {
            double s = 0;
            for (int j = 0; j < k; j++) s += w[j];
            for (int j = 0; j < k; j++) w[j] = (float)(w[j] / s);
        }
    }
    /* Group (token, slot) pairs by expert: counting sort into perm. */
    int *counts = c->counts, *fill = c->counts + E + 1;
    memset(counts, 0, (size_t)(E + 1) * sizeof *counts);
    for (int i = 0; i < T * k; i++) counts[c->route_idx[i] + 1]++;
    for (int e = 0; e < E; e++) counts[e + 1] += counts[e];
    memcpy(fill, counts, (size_t)E * sizeof *fill);
    for (int i = 0; i < T * k; i++) c->perm[fill[c->route_idx[i]]++] = i;
    memset(c->out, 0, (size_t)T * d * sizeof(float));
    for (int e = 0; e < E; e++) {
        int n = counts[e + 1] - counts[e];
        if (!n) continue;
        const int *rows = c->perm + counts[e];
        for (int j = 0; j < n; j++)
            memcpy(c->ein + (size_t)j * d, c->xn + (size_t)(rows[j] / k) * d,
                   (size_t)d * sizeof(float));
        run_expert(m, c, ly, e, c->ein, n, c->eh, c->eout);
        for (int j = 0; j < n; j++) {
            const float w = c->route_w[rows[j]];
            float *o = c->out + (size_t)(rows[j] / k) * d;
            const float *src = c->eout + (size_t)j * d;
            for (int i = 0; i < d; i++) o[i] += w * src[i];
        }
    }
    return SS_OK;
}

/*
 * Mixture of tokens. The members of a group are the spans with the same nonzero group id (same
 * positions, same lengths); a span with group 0 is a group of one.
 */
static ss_err mixture_of_tokens(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp,
                                int T)
{
    const moe_config *mc = &m->cfg.moe;
    const int d = m->cfg.d_model, E = mc->n_experts;
    /* router scores [T, E] = x . router_e */
    mm_rows(m, c, c->xn, T, d, d, ly->router_w, ly->router_b, E, c->router, E);
    memset(c->out, 0, (size_t)T * d * sizeof(float));
    int *rows = c->grows;
    float *wgt = c->gw;
    int *members = c->gmembers;
    for (int q = 0; q < n_sp; q++) {
        /* the group's first span leads; the others are handled with it */
        int lead = 1, gn = 0;
        for (int o = 0; o < n_sp && lead; o++)
            if (sp[q].group && sp[o].group == sp[q].group && o < q) lead = 0;
        if (!lead) continue;
        for (int o = q; o < n_sp; o++)
            if (o == q || (sp[q].group && sp[o].group == sp[q].group)) members[gn++] = o;
        for (int j = 0; j < sp[q].n; j++) {
            for (int a = 0; a < gn; a++) rows[a] = sp[members[a]].row + j;
            for (int e = 0; e < E; e++) {
                /* softmax over the group members of score / temperature */
                float mx = -INFINITY;
                for (int a = 0; a < gn; a++) {
                    float v = c->router[(size_t)rows[a] * E + e] / mc->temperature;
                    wgt[a] = v;
                    mx = v > mx ? v : mx;
                }
                double sum = 0;
                for (int a = 0; a < gn; a++) sum += (wgt[a] = expf(wgt[a] - mx));
                for (int a = 0; a < gn; a++) wgt[a] = (float)(wgt[a] / sum);
                /* m_e = sum_a w[a] x_a */
                float *me = c->ein;
                memset(me, 0, (size_t)d * sizeof(float));
                for (int a = 0; a < gn; a++) {
                    const float *x = c->xn + (size_t)rows[a] * d;
                    for (int i = 0; i < d; i++) me[i] += wgt[a] * x[i];
                }
                run_expert(m, c, ly, e, me, 1, c->eh, c->eout);
                for (int a = 0; a < gn; a++) {
                    float *o = c->out + (size_t)rows[a] * d;
                    for (int i = 0; i < d; i++) o[i] += wgt[a] * c->eout[i];
                }
            }
        }
    }
    return SS_OK;
}

ss_err moe_block(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T)
{
    if (m->cfg.moe.routing == ROUTE_TOKEN_CHOICE) return token_choice(m, c, ly, T);
    return mixture_of_tokens(m, c, ly, sp, n_sp, T);
}
