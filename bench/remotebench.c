/*
 * remotebench.c - statesoup-remotebench: the shared tier (docs/scale-out.md) measured at the
 * store, where statesoupd uses it: saves per second, restore latency (a local-tier hit and a
 * remote miss) and the latency of a merge of 4 states, with 1, 2 and 4 replicas working at once
 * (each replica its own ss_store with its own local tier, on its own thread, as statesoupd
 * processes would be), against LMDB alone. bench/remote.sh starts a Redis Cluster on loopback
 * and runs it; give --remote to use another cluster.
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ss_store.h"
#include "ss_util.h"

#define MAX_REPLICAS 4
#define N_MERGE      4

typedef struct opts {
    const char *remote, *tmp;
    size_t bytes;
    int saves, reads, merges, wait;
} opts;

typedef struct worker {
    const opts *o;
    ss_store *s;
    int index, n_workers;
    char prefix[32];
    double saves_s, hit_ms, miss_ms, merge_ms; /* medians (ms) or totals (s) */
    int failed;
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n ? v[n / 2] : NAN;
}

static ss_store *open_store(const opts *o, const char *dir, int remote, size_t cache)
{
    ss_store_params p = ss_store_default_params();
    if (remote) {
        p.remote = o->remote;
        p.remote_prefix = "bench";
        p.remote_wait_replicas = o->wait;
        p.cache_max_bytes = cache;
    }
    ss_store *s = NULL;
    if (ss_store_open(&s, dir, &p)) {
        fprintf(stderr, "statesoup-remotebench: %s: %s\n", dir, ss_errmsg());
        return NULL;
    }
    return s;
}

/* One replica: saves, then reads of its own states (local hits), then merges. */
static void *work(void *arg)
{
    worker *w = arg;
    const opts *o = w->o;
    float *blob = malloc(o->bytes), *out = malloc(o->bytes);
    double *lat = malloc(sizeof(double) * (size_t)(o->reads + o->merges + o->saves + 1));
    char names[64][64];
    int n_saved = 0;
    for (size_t i = 0; i < o->bytes / sizeof(float); i++) blob[i] = (float)(i % 977) * 1e-3f;
    double t0 = now_s();
    for (int i = 0; i < o->saves && i < 64; i++) {
        char rec[256];
        snprintf(names[i], sizeof names[i], "%s-%d-%d", w->prefix, w->index, i);
        snprintf(rec, sizeof rec, "{\"name\":\"%.63s\",\"model\":\"bench\",\"n_tokens\":1,"
                 "\"dtype\":\"F32\"}", names[i]);
        blob[0] = (float)i;
        if (ss_store_put(w->s, rec, blob, o->bytes, NULL)) {
            fprintf(stderr, "statesoup-remotebench: save: %s\n", ss_errmsg());
            w->failed = 1;
            break;
        }
        n_saved++;
    }
    w->saves_s = n_saved / (now_s() - t0);
    for (int i = 0; i < o->reads && n_saved; i++) {
        double t = now_s();
        if (ss_store_get_blob(w->s, names[i % n_saved], NULL, out, o->bytes, NULL, NULL))
            w->failed = 1;
        lat[i] = (now_s() - t) * 1e3;
    }
    w->hit_ms = median(lat, o->reads);
    const char *refs[N_MERGE];
    double wts[N_MERGE] = {0.25, 0.25, 0.25, 0.25};
    for (int k = 0; k < N_MERGE; k++) refs[k] = names[k % (n_saved ? n_saved : 1)];
    for (int i = 0; i < o->merges && n_saved; i++) {
        double t = now_s();
        if (ss_store_merge_f32(w->s, refs, wts, N_MERGE, "bench", out, o->bytes, 2, NULL))
            w->failed = 1;
        lat[i] = (now_s() - t) * 1e3;
    }
    w->merge_ms = median(lat, o->merges);
    free(blob);
    free(out);
    free(lat);
    return NULL;
}

/* Remote misses: a replica whose cache holds one state reads the others' states in turn. */
static double miss_latency(const opts *o, const char *dir, worker *ws, int n)
{
    ss_store *s = open_store(o, dir, 1, 1);
    if (!s) return NAN;
    float *out = malloc(o->bytes);
    double lat[64];
    int k = 0;
    for (int i = 0; i < o->reads && i < 64; i++) {
        char name[48];
        snprintf(name, sizeof name, "%s-%d-%d", ws[i % n].prefix, i % n,
                 (i / n) % (o->saves < 64 ? o->saves : 64));
        double t = now_s();
        if (ss_store_get_blob(s, name, NULL, out, o->bytes, NULL, NULL) == SS_OK)
            lat[k++] = (now_s() - t) * 1e3;
    }
    free(out);
    ss_store_close(s);
    return median(lat, k);
}

/* One row: n replicas (remote) or LMDB alone (n = 0). */
static int run_row(const opts *o, int n, int round)
{
    worker ws[MAX_REPLICAS] = {0};
    pthread_t th[MAX_REPLICAS];
    char dirs[MAX_REPLICAS][512];
    int workers = n ? n : 1, bad = 0;
    for (int i = 0; i < workers; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/ss-remotebench-%d-%d-%d", o->tmp, (int)getpid(),
                 round, i);
        ws[i] = (worker){.o = o, .index = i, .n_workers = workers};
        snprintf(ws[i].prefix, sizeof ws[i].prefix, "r%d-%d", (int)getpid(), round);
        if (!(ws[i].s = open_store(o, dirs[i], n > 0, 0))) return 1;
    }
    for (int i = 0; i < workers; i++) pthread_create(&th[i], NULL, work, &ws[i]);
    for (int i = 0; i < workers; i++) pthread_join(th[i], NULL);
    double saves = 0, hit[MAX_REPLICAS], merge[MAX_REPLICAS];
    for (int i = 0; i < workers; i++) {
        saves += ws[i].saves_s;
        hit[i] = ws[i].hit_ms;
        merge[i] = ws[i].merge_ms;
        bad |= ws[i].failed;
    }
    double miss = NAN;
    char mdir[600];
    if (n) {
        snprintf(mdir, sizeof mdir, "%s/ss-remotebench-%d-%d-miss", o->tmp, (int)getpid(), round);
        miss = miss_latency(o, mdir, ws, workers);
        ss_store_remove(mdir);
    }
    for (int i = 0; i < workers; i++) {
        ss_store_close(ws[i].s);
        ss_store_remove(dirs[i]);
    }
    char label[32];
    snprintf(label, sizeof label, n ? "Redis, %d replica%s" : "LMDB alone", n, n > 1 ? "s" : "");
    printf("| %-18s | %9.1f | %14.3f | %15.3f | %13.3f |%s\n", label, saves,
           median(hit, workers), miss, median(merge, workers), bad ? " (errors)" : "");
    return bad;
}

int main(int argc, char **argv)
{
    opts o = {.tmp = "/tmp", .bytes = 2949120, .saves = 32, .reads = 32, .merges = 16, .wait = 1};
    static const struct option lo[] = {
        {"remote", required_argument, NULL, 'r'}, {"bytes", required_argument, NULL, 'b'},
        {"saves", required_argument, NULL, 's'},  {"tmp", required_argument, NULL, 'T'},
        {"wait", required_argument, NULL, 'w'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'r': o.remote = optarg; break;
        case 'b': o.bytes = (size_t)strtoull(optarg, NULL, 10) / 4 * 4; break;
        case 's': o.saves = atoi(optarg); break;
        case 'T': o.tmp = optarg; break;
        case 'w': o.wait = atoi(optarg); break;
        case 'h':
            printf("usage: statesoup-remotebench --remote redis://HOST:PORT[,...] [options]\n"
                   "\n"
                   "Saves/s, restore latency (local-tier hit, remote miss) and the latency of a\n"
                   "merge of 4 states, with 1, 2 and 4 replicas at once on the Redis Cluster, and\n"
                   "with LMDB alone. bench/remote.sh starts a cluster on loopback and runs this.\n"
                   "\n"
                   "  --remote URL   the cluster (statesoupd --remote); keys under {bench}\n"
                   "  --bytes N      state size (default 2949120: a mamba-130m state)\n"
                   "  --saves N      saves per replica, at most 64 (default 32)\n"
                   "  --wait N       Redis replicas each write waits for (default 1)\n"
                   "  --tmp DIR      where the local tiers go (default /tmp)\n");
            return 0;
        default: return 2;
        }
    }
    if (!o.remote || o.bytes < 4 || o.saves < N_MERGE || o.saves > 64) {
        fprintf(stderr,
                "statesoup-remotebench: --remote URL is required (--help); --saves 4..64\n");
        return 2;
    }
    printf("statesoup-remotebench: %zu-byte states, %d saves per replica, WAIT %d, %s\n\n",
           o.bytes, o.saves, o.wait, o.remote);
    printf(
        "| tier               |   saves/s | restore hit ms | restore miss ms | merge of 4 ms |\n");
    printf(
        "| ---                |       --- |            --- |             --- |           --- |\n");
    int bad = run_row(&o, 0, 0);
    for (int n = 1, round = 1; n <= MAX_REPLICAS; n *= 2, round++) bad |= run_row(&o, n, round);
    printf("\nsaves/s: all replicas together; latencies: medians per replica, then the median.\n");
    return bad;
}
