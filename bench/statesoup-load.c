/*
 * statesoup-load.c - `statesoup-load`: a bounded load and fault tool for statesoupd, loopback only.
 *
 * N client threads send a weighted mix of requests for S seconds, each through the public HTTP
 * API only (libcurl, docs/api.md): saves, lists, reads, exports, imports, stored merges,
 * on-the-fly merges, generations (plain, streamed, and streams abandoned after two events), scores
 * and deletes. It prints per kind the requests/s, p50/p99 latency and status counts, and every few
 * seconds the daemon's RSS and open file descriptors (/proc/PID) and its 5xx count (/metrics).
 *
 * The point is the durability promise, not speed: every state the daemon acknowledged (2xx with
 * its record) and the tool did not delete is remembered with its record, and at the end each is
 * read back (record identical, export's checksum recomputed here with XXH3 from the exported
 * tensors and, where the tool exported it before, the export byte-identical), and every
 * acknowledged delete must stay deleted. --restart does that again after a clean restart;
 * --kill-cycles K runs K cycles of: the mix, kill -9 at a random moment mid-mix, restart,
 * verify. A delete whose answer was cut by the kill may or may not have happened: either is
 * accepted, and nothing else is.
 *
 * It floods what it targets, so it refuses any --url that is not on this machine's loopback, and
 * every count (clients, seconds, cycles) is capped. It starts statesoupd itself (--model,
 * --data; the daemon dies with it) or measures one already running (--url, --pid).
 * Exit status: 0 when every check held, 1 when a state was lost or damaged, a 5xx or an
 * unexpected answer came, a request failed outside a kill, or the daemon did not exit cleanly;
 * 2 for bad arguments.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "dproc.h"
#include "load_idle.h"
#include "load_stats.h"
#include "ss_util.h"

#define MAX_CLIENTS     1024
#define MAX_SECONDS     3600
#define MAX_CYCLES      1000
#define MAX_DAEMON_ARGS 16
#define MAX_SAMPLES     4096
#define MAX_PROBLEMS    12          /* first problems kept verbatim for the report */
#define LOG_KEEP        (64 * 1024) /* tail of the daemon's stderr kept for a post-mortem */
#define EXPORT_CACHE    8           /* exported files kept for imports */
#define REQ_TIMEOUT_S   300L

/* ---- request kinds --------------------------------------------------------------------------- */

typedef enum kind {
    K_SAVE,
    K_LIST,
    K_READ,
    K_EXPORT,
    K_IMPORT,
    K_MERGE,
    K_MERGE_FLY,
    K_GEN,
    K_GEN_STREAM,
    K_GEN_ABANDON,
    K_SCORE,
    K_DELETE,
    K__N
} kind;

static const char *const kind_name[K__N] = {
    "save",      "list",     "read",       "export",      "import", "merge",
    "merge_fly", "generate", "gen_stream", "gen_abandon", "score",  "delete",
};

/* The default mix (percent). Deletes are weighted to take back most of what the creating kinds
 * add (saves, imports, merges, a quarter of the generations), so long runs stay bounded. */
static const int kind_weight_default[K__N] = {18, 8, 12, 8, 5, 6, 5, 8, 5, 3, 8, 14};

/* Status codes beyond HTTP: a transport failure, and one cut short by our own kill -9. */
#define ST_CONN (-1)
#define ST_CUT  (-2)

/* ---- per-client statistics (merged after the threads end) ----------------------------------- */

typedef struct kstat {
    uint64_t reqs; /* requests (cut ones included) */
    double *lat;   /* [n] latencies of the answered ones, ms */
    size_t n, cap;
    struct {
        int code;
        uint64_t n;
    } codes[16];
    int n_codes;
    uint64_t bad;        /* answers with the expected status but wrong content */
    uint64_t unexpected; /* statuses other than the kind's expected one (cuts aside) */
} kstat;

typedef struct client {
    int idx;
    pthread_t th;
    uint64_t rng;
    uint64_t seq; /* names made by this client */
    CURL *curl;
    kstat ks[K__N];
} client;

/* ---- states the daemon acknowledged ------------------------------------------------------- */

enum { E_LIVE, E_DELETING, E_DELETED, E_UNCERTAIN };

typedef struct ent {
    char id[40];
    char sum[24];
    char *record; /* the acknowledged record, compact JSON text */
    uint64_t export_hash;
    int has_export;
    int users; /* clients using it as a source right now (it is not deleted meanwhile) */
    int status;
    int failed;      /* a verification found it missing or different (counted once) */
    size_t live_pos; /* index in G.live while E_LIVE */
} ent;

typedef struct xport {
    uint8_t *data;
    size_t len;
    char sum[24];
} xport;

/* ---- the daemon, when this tool runs it ---------------------------------------------------- */

typedef struct sample {
    double t;       /* s since the start */
    double rss_mb;  /* daemon's VmRSS (NAN when unknown) */
    double anon_mb; /* of which RssAnon: heap and stacks (a leak shows here) */
    double file_mb; /* of which RssFile: mapped files, mostly the LMDB map (the store's size) */
    int fds;        /* daemon's open fds (-1 when unknown) */
    long d5xx;      /* daemon's 5xx answers so far (this daemon's life; -1 when unknown) */
    uint64_t reqs;  /* requests done by the clients so far */
    long live;      /* acknowledged states not deleted */
    long long
        minflt; /* daemon's minor page faults so far (-1 when unknown): fresh memory touched */
} sample;

typedef struct vres {
    long checked, lost, corrupt, resurrected, gone_uncertain;
    double seconds; /* the verification's wall time */
} vres;

typedef struct cycle_res {
    double kill_at_s, restart_s, verify_s, rss_mb, anon_mb;
    int fds;
    long acked_total;
    vres v;
} cycle_res;

static struct {
    /* options */
    const char *url, *model, *data, *daemon_exe, *api_key;
    const char *daemon_args[MAX_DAEMON_ARGS];
    int n_daemon_args;
    const char *json_file;
    int clients, seconds, kill_cycles, restart, json, interval;
    int idle; /* --idle N */
    uint64_t seed;
    int weight[K__N], weight_sum;

    /* the target */
    char base[128];
    pid_t pid; /* 0: unknown (no /proc sampling) */
    int own;   /* this tool started the daemon */
    ss_dproc d;
    int vocab, tokenizer;
    char runid[16];

    atomic_int stop, killed;
    atomic_ullong reqs;
    int64_t t0;

    /* the acknowledged states (mu) */
    pthread_mutex_t mu;
    ent *ents;
    size_t n_ents, cap_ents;
    size_t *live;
    size_t n_live;
    xport cache[EXPORT_CACHE];
    size_t n_cache;
    char *problems[MAX_PROBLEMS];
    int n_problems;
    long n_problem_total;

    sample samples[MAX_SAMPLES];
    int n_samples;
    long d5xx_total; /* summed over the daemon's lives (kill cycles) */
    double mix_s;    /* seconds the clients ran, all phases */
} G;

static client *clients;

/* ---- small helpers --------------------------------------------------------------------------- */

static double since_start(void)
{
    return (double)(ss_mono_ns() - G.t0) / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t rnd_below(uint64_t *s, size_t n)
{
    return n ? (size_t)(rnd(s) % n) : 0;
}

static double rnd_unit(uint64_t *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

/* Remember a problem (the first MAX_PROBLEMS verbatim; all counted). Thread-safe. */
static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&G.mu);
    G.n_problem_total++;
    if (G.n_problems < MAX_PROBLEMS) G.problems[G.n_problems++] = strdup(buf);
    pthread_mutex_unlock(&G.mu);
}

/* Count an answer with status code, and its latency unless our kill cut it (no answer came). */
static void kstat_add(kstat *k, int code, double ms)
{
    k->reqs++;
    if (code != ST_CUT && k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 256;
        double *nl = realloc(k->lat, cap * sizeof *nl);
        if (nl) {
            k->lat = nl;
            k->cap = cap;
        }
    }
    if (code != ST_CUT && k->n < k->cap) k->lat[k->n++] = ms;
    for (int i = 0; i < k->n_codes; i++) {
        if (k->codes[i].code == code) {
            k->codes[i].n++;
            return;
        }
    }
    if (k->n_codes < 16) {
        k->codes[k->n_codes].code = code;
        k->codes[k->n_codes++].n = 1;
    }
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

typedef struct hresp {
    long status; /* HTTP status, ST_CONN on a transport failure */
    char *body;  /* NUL-terminated, malloc'd (may be NULL) */
    size_t len, cap;
    int abandon_after; /* >0: stop reading after this many SSE events */
    int events;
    int abandoned;
} hresp;

static size_t on_data(char *p, size_t sz, size_t nm, void *user)
{
    hresp *r = user;
    size_t n = sz * nm;
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb) return 0;
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    if (r->abandon_after > 0) {
        int ev = 0;
        for (const char *q = r->body; (q = strstr(q, "data: ")); q += 6) ev++;
        r->events = ev;
        if (ev >= r->abandon_after) {
            r->abandoned = 1;
            return 0; /* hang up mid-stream */
        }
    }
    return n;
}

/*
 * One request on this client's handle (the connection is kept between requests). path is
 * appended to G.base. body (may be NULL) is sent with ctype. r receives the answer (free
 * r->body). Returns r->status.
 */
static long http(CURL *c, const char *method, const char *path, const char *ctype, const void *body,
                 size_t blen, hresp *r)
{
    char url[1024], ct[128], auth[300];
    struct curl_slist *h = NULL;
    r->status = ST_CONN;
    snprintf(url, sizeof url, "%s%s", G.base, path);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, REQ_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "statesoup-load/1");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    h = curl_slist_append(h, "Expect:");
    if (ctype) {
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        h = curl_slist_append(h, ct);
    }
    if (G.api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", G.api_key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (!strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? blen : 0));
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(c);
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    if (cc == CURLE_OK || (r->abandoned && st > 0)) r->status = st;
    curl_slist_free_all(h);
    return r->status;
}

/* POST a JSON value (stolen) and parse the JSON answer into *out (NULL if none). */
static long http_json(CURL *c, const char *method, const char *path, json_t *body, json_t **out,
                      hresp *r)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    long st =
        http(c, method, path, text ? "application/json" : NULL, text, text ? strlen(text) : 0, r);
    free(text);
    if (out) *out = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    return st;
}

/* ---- the pool of acknowledged states --------------------------------------------------------- */

/* Remember an acknowledged record (a JSON object with "id" and "checksum"). Thread-safe. */
static void pool_add(const json_t *rec, const char *what)
{
    const char *id = json_string_value(json_object_get(rec, "id"));
    const char *sum = json_string_value(json_object_get(rec, "checksum"));
    if (!id || !sum || strlen(id) >= sizeof(((ent *)0)->id) || strlen(sum) >= 24) {
        problem("%s: the acknowledged answer has no usable record", what);
        return;
    }
    char *text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    pthread_mutex_lock(&G.mu);
    if (G.n_ents == G.cap_ents) {
        size_t cap = G.cap_ents ? G.cap_ents * 2 : 1024;
        ent *ne = realloc(G.ents, cap * sizeof *ne);
        size_t *nl = realloc(G.live, cap * sizeof *nl);
        if (ne) G.ents = ne;
        if (nl) G.live = nl;
        if (!ne || !nl) {
            pthread_mutex_unlock(&G.mu);
            free(text);
            problem("out of memory remembering states");
            return;
        }
        G.cap_ents = cap;
    }
    ent *e = &G.ents[G.n_ents];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->sum, sizeof e->sum, "%s", sum);
    e->record = text;
    e->status = E_LIVE;
    e->live_pos = G.n_live;
    G.live[G.n_live++] = G.n_ents++;
    pthread_mutex_unlock(&G.mu);
}

static void live_remove(size_t i) /* mu held */
{
    size_t pos = G.ents[i].live_pos, last = G.live[--G.n_live];
    G.live[pos] = last;
    G.ents[last].live_pos = pos;
}

/* Pin up to n distinct live states as sources (ids copied into ids[k]); returns how many. */
static int pool_pin(uint64_t *rng, int n, size_t *idx, char ids[][40])
{
    int got = 0;
    pthread_mutex_lock(&G.mu);
    for (int tries = 0; got < n && tries < 4 * n && G.n_live > 0; tries++) {
        size_t i = G.live[rnd_below(rng, G.n_live)];
        int dup = 0;
        for (int k = 0; k < got; k++) dup |= idx[k] == i;
        if (dup) continue;
        G.ents[i].users++;
        idx[got] = i;
        memcpy(ids[got], G.ents[i].id, 40);
        got++;
    }
    pthread_mutex_unlock(&G.mu);
    return got;
}

static void pool_unpin(const size_t *idx, int n)
{
    pthread_mutex_lock(&G.mu);
    for (int k = 0; k < n; k++) G.ents[idx[k]].users--;
    pthread_mutex_unlock(&G.mu);
}

/* The acknowledged record of entry i (malloc'd copy). */
static char *pool_record(size_t i)
{
    pthread_mutex_lock(&G.mu);
    char *r = strdup(G.ents[i].record);
    pthread_mutex_unlock(&G.mu);
    return r;
}

/* ---- checks of what the daemon answers ------------------------------------------------------- */

/* Whether the record text a (as remembered: sorted keys) and the JSON b are the same record. */
static int same_record(const char *a, const json_t *b)
{
    json_t *ja = json_loads(a, 0, NULL);
    int same = ja && b && json_equal(ja, b);
    json_decref(ja);
    return same;
}

/*
 * Check an exported state file: the safetensors header parses, tensors conv, ssm and final_hidden
 * (and decay, when the state has one) are F32 inside the file, XXH3-64 over their bytes in that
 * order (the stored blob's layout) is want_sum, and the embedded record names the same checksum.
 * Returns 1 if so, else 0 with why.
 */
static int export_ok(const uint8_t *f, size_t len, const char *want_sum, char *why, size_t cap)
{
    static const char *const names[] = {"conv", "ssm", "final_hidden", "decay"};
    json_t *hdr = NULL, *rec = NULL;
    XXH3_state_t *xs = NULL;
    int ok = 0;
    uint64_t hl = 0;
    if (len < 8) {
        snprintf(why, cap, "%zu bytes: shorter than a safetensors header", len);
        goto out;
    }
    for (int i = 7; i >= 0; i--) hl = hl << 8 | f[i];
    if (hl > len - 8) {
        snprintf(why, cap, "header length %llu beyond the file", (unsigned long long)hl);
        goto out;
    }
    hdr = json_loadb((const char *)f + 8, (size_t)hl, 0, NULL);
    if (!hdr) {
        snprintf(why, cap, "the safetensors header is not JSON");
        goto out;
    }
    const uint8_t *data = f + 8 + hl;
    size_t dlen = len - 8 - (size_t)hl;
    xs = XXH3_createState();
    if (!xs) {
        snprintf(why, cap, "out of memory");
        goto out;
    }
    XXH3_64bits_reset(xs);
    for (int t = 0; t < 4; t++) {
        json_t *tj = json_object_get(hdr, names[t]);
        if (t == 3 && !tj) break; /* a state without decay */
        json_t *off = json_object_get(tj, "data_offsets");
        json_int_t a = json_integer_value(json_array_get(off, 0));
        json_int_t b = json_integer_value(json_array_get(off, 1));
        const char *dt = json_string_value(json_object_get(tj, "dtype"));
        if (!tj || !dt || strcmp(dt, "F32") || a < 0 || b < a || (size_t)b > dlen) {
            snprintf(why, cap, "tensor %s missing, not F32 or outside the file", names[t]);
            goto out;
        }
        XXH3_64bits_update(xs, data + a, (size_t)(b - a));
    }
    char got[24];
    snprintf(got, sizeof got, "%016llx", (unsigned long long)XXH3_64bits_digest(xs));
    if (strcmp(got, want_sum)) {
        snprintf(why, cap, "data checksum %s, acknowledged %s", got, want_sum);
        goto out;
    }
    const char *rt =
        json_string_value(json_object_get(json_object_get(hdr, "__metadata__"), "record"));
    rec = rt ? json_loads(rt, 0, NULL) : NULL;
    const char *rs = json_string_value(json_object_get(rec, "checksum"));
    if (!rs || strcmp(rs, want_sum)) {
        snprintf(why, cap, "the embedded record's checksum is %s, acknowledged %s",
                 rs ? rs : "missing", want_sum);
        goto out;
    }
    ok = 1;
out:
    if (xs) XXH3_freeState(xs);
    json_decref(rec);
    json_decref(hdr);
    return ok;
}

/*
 * Export entry i and check it (export_ok, and byte-identical to an earlier export of it when there
 * was one). Returns the HTTP status; *bad is set when the file is wrong. Keeps the file for
 * imports when keep is set.
 */
static long export_check(CURL *c, size_t i, const char *id, int keep, int *bad, const char *what)
{
    char path[128], why[200], sum[24];
    hresp r = {0};
    *bad = 0;
    snprintf(path, sizeof path, "/v1/states/%s/data", id);
    long st = http(c, "GET", path, NULL, NULL, 0, &r);
    if (st != 200) goto out;
    pthread_mutex_lock(&G.mu);
    memcpy(sum, G.ents[i].sum, sizeof sum);
    pthread_mutex_unlock(&G.mu);
    if (!export_ok((const uint8_t *)r.body, r.len, sum, why, sizeof why)) {
        *bad = 1;
        problem("%s %s: export: %s", what, id, why);
        goto out;
    }
    uint64_t h = XXH3_64bits(r.body, r.len);
    pthread_mutex_lock(&G.mu);
    ent *e = &G.ents[i];
    if (!e->has_export) {
        e->has_export = 1;
        e->export_hash = h;
    } else if (e->export_hash != h) {
        *bad = 1;
    }
    if (keep && !*bad) {
        xport *x = &G.cache[G.n_cache < EXPORT_CACHE ? G.n_cache++ : (size_t)(h % EXPORT_CACHE)];
        free(x->data);
        x->data = (uint8_t *)r.body;
        x->len = r.len;
        memcpy(x->sum, sum, sizeof sum);
        r.body = NULL;
    }
    pthread_mutex_unlock(&G.mu);
    if (*bad) problem("%s %s: export differs from an earlier export of the same state", what, id);
out:
    free(r.body);
    return st;
}

/* ---- one request of each kind ---------------------------------------------------------------- */

static json_t *rand_tokens(uint64_t *rng, int lo, int hi)
{
    json_t *a = json_array();
    int n = lo + (int)rnd_below(rng, (size_t)(hi - lo + 1));
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(1 + (json_int_t)rnd_below(rng, G.vocab - 1)));
    return a;
}

static const char *const words[] = {"the", "soup", "state", "of",  "a",    "river", "cat",
                                    "sat", "on",   "warm",  "mat", "slow", "green", "hill"};

/* A prompt: token ids, or text when the daemon has a tokenizer (half the time). */
static json_t *rand_prompt(uint64_t *rng)
{
    if (!G.tokenizer || rnd_below(rng, 2)) return rand_tokens(rng, 4, 24);
    char buf[256] = "";
    size_t n = 3 + rnd_below(rng, 10), at = 0;
    for (size_t i = 0; i < n; i++)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%s", i ? " " : "",
                               words[rnd_below(rng, sizeof words / sizeof *words)]);
    return json_string(buf);
}

/* The tag every state of this run carries (lists filter on it); made once, the clients read it. */
static char run_tag_buf[32];
static void run_tag_once(void) { snprintf(run_tag_buf, sizeof run_tag_buf, "load-%s", G.runid); }
static const char *run_tag(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, run_tag_once);
    return run_tag_buf;
}

/* One request in flight: the sources it pinned, its answer, and what it found wrong. */
typedef struct req {
    client *cl;
    char ids[3][40];
    size_t idx[3];
    int npin;
    hresp r;
    json_t *ans;
    int *bad;
} req;

static void req_bad(req *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void req_bad(req *q, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *q->bad = 1;
    problem("%s", msg);
}

/* Pin the stored states kind k needs; returns the kind to run (a kind that needs stored states
 * falls back to a save, or an import to an export, while there are none). */
static kind pin_sources(req *q, kind k)
{
    int want_src = k == K_READ || k == K_EXPORT || k == K_MERGE || k == K_MERGE_FLY;
    if (want_src) {
        int need = k == K_MERGE || k == K_MERGE_FLY ? 2 : 1;
        q->npin = pool_pin(&q->cl->rng, need, q->idx, q->ids);
        if (q->npin < need) {
            pool_unpin(q->idx, q->npin);
            q->npin = 0;
            k = K_SAVE;
        }
    }
    if (k == K_IMPORT) {
        pthread_mutex_lock(&G.mu);
        int have = G.n_cache > 0;
        pthread_mutex_unlock(&G.mu);
        if (!have) {
            q->npin = pool_pin(&q->cl->rng, 1, q->idx, q->ids);
            k = q->npin ? K_EXPORT : K_SAVE;
        }
    }
    return k;
}

static long do_save(req *q)
{
    client *cl = q->cl;
    json_t *b = json_pack("{s:o,s:[s],s:{s:i,s:I}}", G.tokenizer ? "prompt" : "tokens",
                          rand_prompt(&cl->rng), "tags", run_tag(), "metadata", "client",
                          cl->idx, "seq", (json_int_t)cl->seq);
    if (json_is_string(json_object_get(b, "prompt")) == 0 && G.tokenizer) {
        /* rand_prompt gave ids: send them as "tokens" */
        json_object_set(b, "tokens", json_object_get(b, "prompt"));
        json_object_del(b, "prompt");
    }
    if (rnd_below(&cl->rng, 3) == 0) {
        char name[96];
        snprintf(name, sizeof name, "%s-c%d-%llu", run_tag(), cl->idx,
                 (unsigned long long)cl->seq);
        json_object_set_new(b, "name", json_string(name));
    }
    cl->seq++;
    if (rnd_below(&cl->rng, 4) == 0 && (q->npin = pool_pin(&cl->rng, 1, q->idx, q->ids)))
        json_object_set_new(b, "from", json_string(q->ids[0]));
    long st = http_json(cl->curl, "POST", "/v1/states", b, &q->ans, &q->r);
    if (st == 201) pool_add(q->ans, "save");
    return st;
}

static long do_list(req *q)
{
    char path[128];
    if (rnd_below(&q->cl->rng, 2))
        snprintf(path, sizeof path, "/v1/states?limit=20&tag=%s", run_tag());
    else
        snprintf(path, sizeof path, "/v1/states?limit=50");
    long st = http_json(q->cl->curl, "GET", path, NULL, &q->ans, &q->r);
    if (st == 200 && !json_is_array(json_object_get(q->ans, "data")))
        req_bad(q, "list: the answer has no data array");
    return st;
}

static long do_read(req *q)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/states/%s", q->ids[0]);
    long st = http_json(q->cl->curl, "GET", path, NULL, &q->ans, &q->r);
    if (st == 200) {
        char *want = pool_record(q->idx[0]);
        if (!same_record(want, q->ans))
            req_bad(q, "read %s: the record differs from the one acknowledged", q->ids[0]);
        free(want);
    }
    return st;
}

static long do_import(req *q)
{
    client *cl = q->cl;
    char path[256];
    xport x = {0};
    pthread_mutex_lock(&G.mu);
    if (G.n_cache) {
        xport *s = &G.cache[rnd_below(&cl->rng, G.n_cache)];
        x.data = malloc(s->len);
        if (x.data) memcpy(x.data, s->data, s->len);
        x.len = s->len;
        memcpy(x.sum, s->sum, sizeof x.sum);
    }
    pthread_mutex_unlock(&G.mu);
    if (!x.data) return ST_CONN; /* out of memory: not the daemon's doing, but counted */
    snprintf(path, sizeof path, "/v1/states/import?name=%s-i%d-%llu&tags=%s", run_tag(), cl->idx,
             (unsigned long long)cl->seq++, run_tag());
    long st = http(cl->curl, "POST", path, "application/octet-stream", x.data, x.len, &q->r);
    free(x.data);
    if (st == 201) {
        q->ans = json_loadb(q->r.body, q->r.len, 0, NULL);
        const char *sum = json_string_value(json_object_get(q->ans, "checksum"));
        if (!sum || strcmp(sum, x.sum)) /* an F32 file imports bit-exact: the same checksum */
            req_bad(q, "import: checksum %s, the exported state's %s", sum ? sum : "missing",
                    x.sum);
        pool_add(q->ans, "import");
    }
    return st;
}

static long do_merge(req *q)
{
    double w = rnd_unit(&q->cl->rng);
    json_t *b = json_pack("{s:[{s:s,s:f},{s:s,s:f}],s:[s]}", "sources", "state", q->ids[0],
                          "weight", w, "state", q->ids[1], "weight", 1.0 - w, "tags", run_tag());
    long st = http_json(q->cl->curl, "POST", "/v1/states/merge", b, &q->ans, &q->r);
    if (st == 201) pool_add(q->ans, "merge");
    return st;
}

/* Check a 200 answer of generate (saved: save_state was asked) or score. */
static void check_infer(req *q, kind k, int saved)
{
    if (k == K_SCORE) {
        json_t *v = json_object_get(q->ans, "logprob_sum");
        double s = json_real_value(v);
        if (!json_is_number(v) || !isfinite(s) || s > 0)
            req_bad(q, "score: logprob_sum missing, not finite or positive");
        return;
    }
    if (!json_is_array(json_object_get(q->ans, "tokens")))
        req_bad(q, "generate: the answer has no tokens");
    if (!saved) return;
    json_t *rec = json_object_get(q->ans, "state");
    if (json_is_object(rec))
        pool_add(rec, "generate save_state");
    else
        req_bad(q, "generate: save_state asked, no state record in the answer");
}

/* generate or score, from the zero state, a stored state or an on-the-fly merge */
static long do_infer(req *q, kind k)
{
    client *cl = q->cl;
    json_t *b;
    if (k == K_SCORE)
        b = json_pack("{s:o,s:o}", "context", rand_tokens(&cl->rng, 2, 12), "continuation",
                      rand_tokens(&cl->rng, 2, 12));
    else
        b = json_pack("{s:o,s:i,s:f}", "prompt", rand_tokens(&cl->rng, 2, 12), "max_tokens", 8,
                      "temperature", rnd_unit(&cl->rng));
    if (k == K_MERGE_FLY) {
        json_object_set_new(b, "merge",
                            json_pack("[{s:s,s:f},{s:s,s:f}]", "state", q->ids[0], "weight", 0.5,
                                      "state", q->ids[1], "weight", 0.5));
    } else if (rnd_below(&cl->rng, 2) && (q->npin = pool_pin(&cl->rng, 1, q->idx, q->ids))) {
        json_object_set_new(b, "state", json_string(q->ids[0]));
    }
    int save = k == K_GEN && rnd_below(&cl->rng, 4) == 0;
    if (save) json_object_set_new(b, "save_state", json_pack("{s:[s]}", "tags", run_tag()));
    long st = http_json(cl->curl, "POST", k == K_SCORE ? "/v1/score" : "/v1/generate", b, &q->ans,
                        &q->r);
    if (st == 200) check_infer(q, k, save);
    return st;
}

/* a streamed generation, read whole or abandoned after two events */
static long do_stream(req *q, int abandon)
{
    client *cl = q->cl;
    json_t *b = json_pack("{s:o,s:i,s:b,s:b}", "prompt", rand_tokens(&cl->rng, 2, 12),
                          "max_tokens", abandon ? 256 : 8, "stream", 1, "ignore_eos", abandon);
    if (rnd_below(&cl->rng, 2) && (q->npin = pool_pin(&cl->rng, 1, q->idx, q->ids)))
        json_object_set_new(b, "state", json_string(q->ids[0]));
    if (abandon) q->r.abandon_after = 2;
    long st = http_json(cl->curl, "POST", "/v1/generate", b, NULL, &q->r);
    if (st == 200 && !q->r.abandoned) {
        /* whole stream: [DONE] last, the event before it has finish_reason, no error event */
        const char *body = q->r.body;
        const char *done = body ? strstr(body, "data: [DONE]") : NULL;
        const char *fin = body ? strstr(body, "\"finish_reason\"") : NULL;
        const char *err = body ? strstr(body, "data: {\"error\"") : NULL;
        if (!done || !fin || err)
            req_bad(q, "%s: the stream did not end with finish_reason and [DONE]%s",
                    kind_name[abandon ? K_GEN_ABANDON : K_GEN_STREAM],
                    err ? " (an error event)" : "");
    }
    return st;
}

/* Delete a live state nobody uses; when there is none, list instead (*k_done says so). */
static long do_delete(req *q, kind *k_done)
{
    client *cl = q->cl;
    char path[128];
    size_t i = 0;
    int found = 0;
    pthread_mutex_lock(&G.mu);
    for (int tries = 0; tries < 8 && G.n_live > 0 && !found; tries++) {
        i = G.live[rnd_below(&cl->rng, G.n_live)];
        if (G.ents[i].users == 0) {
            found = 1;
            G.ents[i].status = E_DELETING;
            live_remove(i);
            memcpy(q->ids[0], G.ents[i].id, 40);
        }
    }
    pthread_mutex_unlock(&G.mu);
    if (!found) {
        *k_done = K_LIST;
        return http_json(cl->curl, "GET", "/v1/states?limit=20", NULL, NULL, &q->r);
    }
    snprintf(path, sizeof path, "/v1/states/%s", q->ids[0]);
    long st = http(cl->curl, "DELETE", path, NULL, NULL, 0, &q->r);
    pthread_mutex_lock(&G.mu);
    if (st == 204) {
        G.ents[i].status = E_DELETED;
    } else if (st == ST_CONN) {
        G.ents[i].status = E_UNCERTAIN; /* cut: it may or may not have happened */
    } else {                            /* refused: it must still be there, and intact */
        G.ents[i].status = E_LIVE;
        G.ents[i].live_pos = G.n_live;
        G.live[G.n_live++] = i;
    }
    pthread_mutex_unlock(&G.mu);
    return st;
}

/* Run one request of kind k; returns its status and sets *bad for wrong content. *k_done is the
 * kind actually run (a kind that needs stored states falls back to a save while there are none). */
static long run_kind(client *cl, kind k, kind *k_done, int *bad)
{
    req q = {.cl = cl, .bad = bad};
    long st = 0;
    *bad = 0;
    k = pin_sources(&q, k);
    *k_done = k;
    switch (k) {
    case K_SAVE: st = do_save(&q); break;
    case K_LIST: st = do_list(&q); break;
    case K_READ: st = do_read(&q); break;
    case K_EXPORT: st = export_check(cl->curl, q.idx[0], q.ids[0], 1, bad, "export"); break;
    case K_IMPORT: st = do_import(&q); break;
    case K_MERGE: st = do_merge(&q); break;
    case K_MERGE_FLY:
    case K_GEN:
    case K_SCORE: st = do_infer(&q, k); break;
    case K_GEN_STREAM:
    case K_GEN_ABANDON: st = do_stream(&q, k == K_GEN_ABANDON); break;
    case K_DELETE: st = do_delete(&q, k_done); break;
    case K__N: break;
    }
    pool_unpin(q.idx, q.npin);
    json_decref(q.ans);
    free(q.r.body);
    return st;
}

static const long expected_status[K__N] = {201, 200, 200, 200, 201, 201,
                                           200, 200, 200, 200, 200, 204};

static kind pick_kind(uint64_t *rng)
{
    int x = (int)rnd_below(rng, (size_t)G.weight_sum);
    for (int k = 0; k < K__N; k++) {
        if (x < G.weight[k]) return (kind)k;
        x -= G.weight[k];
    }
    return K_LIST;
}

static void *client_main(void *arg)
{
    client *cl = arg;
    while (!atomic_load(&G.stop)) {
        kind k = pick_kind(&cl->rng), done = k;
        int bad = 0;
        int64_t t = ss_mono_ns();
        long st = run_kind(cl, k, &done, &bad);
        double ms = (double)(ss_mono_ns() - t) / 1e6;
        if (st == ST_CONN && atomic_load(&G.killed)) st = ST_CUT;
        kstat *ks = &cl->ks[done];
        kstat_add(ks, (int)st, ms);
        ks->bad += (uint64_t)bad;
        if (st != ST_CUT && st != expected_status[done]) {
            ks->unexpected++;
            if (st == ST_CONN)
                problem("%s: the request failed (no answer) outside a kill", kind_name[done]);
        }
        atomic_fetch_add(&G.reqs, 1);
    }
    return NULL;
}

/* ---- the daemon's process ------------------------------------------------------------------- */

/* Start statesoupd on a free loopback port and wait for its "ready" line. 0 on success. */
static int daemon_start(void)
{
    const char *argv[32 + MAX_DAEMON_ARGS];
    int n = 0;
    argv[n++] = G.daemon_exe;
    argv[n++] = "--model";
    argv[n++] = G.model;
    argv[n++] = "--data";
    argv[n++] = G.data;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--quiet";
    for (int i = 0; i < G.n_daemon_args; i++) argv[n++] = G.daemon_args[i];
    argv[n] = NULL;
    ss_dproc_opts o = {.timeout_s = 180, .die_with_parent = 1}; /* never outlive the tool */
    if (ss_dproc_start(&G.d, argv, &o)) {
        fprintf(stderr, "statesoup-load: statesoupd did not start; its log:\n%s\n",
                G.d.log ? G.d.log : "");
        return -1;
    }
    snprintf(G.base, sizeof G.base, "%s", G.d.base);
    G.pid = G.d.pid;
    return 0;
}

/* Wait for the daemon (up to limit_s, then SIGKILL) and its log thread; returns the wait status. */
static int daemon_reap(double limit_s)
{
    int status = ss_dproc_reap(&G.d, limit_s);
    G.pid = 0;
    return status;
}

/* Whether the daemon we started has died on its own (reaps it then). */
static int daemon_died(void)
{
    int status;
    if (!G.own || !G.pid) return 0;
    if (!ss_dproc_exited(&G.d, &status)) return 0;
    G.pid = 0;
    fprintf(stderr, "statesoup-load: statesoupd died (status 0x%x); the end of its log:\n%s\n",
            status, G.d.log ? G.d.log : "");
    problem("statesoupd died on its own (wait status 0x%x)", status);
    return 1;
}

/* ---- observing the daemon ------------------------------------------------------------------- */

/* The daemon's VmRSS in MB (NAN when unknown); *anon and *file (may be NULL) its RssAnon and
 * RssFile parts. */
static double proc_rss_mb(pid_t pid, double *anon, double *file)
{
    char path[64], line[256];
    double mb = NAN, a = NAN, fl = NAN;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = pid ? fopen(path, "r") : NULL;
    while (f && fgets(line, sizeof line, f)) {
        long kb;
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) mb = (double)kb / 1024.0;
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1) a = (double)kb / 1024.0;
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1) fl = (double)kb / 1024.0;
    }
    if (f) fclose(f);
    if (anon) *anon = a;
    if (file) *file = fl;
    return mb;
}

/* The daemon's minor page faults so far (/proc/PID/stat, field 10), -1 when unknown. */
static long long proc_minflt(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = pid ? fopen(path, "r") : NULL;
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after the command's name, which may hold spaces */
    long long v = -1;
    /* ") state ppid pgrp session tty_nr tpgid flags minflt" */
    if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %lld", &v) != 1) v = -1;
    return v;
}

/* Minor faults per request between samples i - 1 and i (NAN when unknown or no request). */
static double faults_per_req(int i)
{
    if (i < 1) return NAN;
    const sample *a = &G.samples[i - 1], *b = &G.samples[i];
    if (a->minflt < 0 || b->minflt < a->minflt || b->reqs <= a->reqs) return NAN;
    return (double)(b->minflt - a->minflt) / (double)(b->reqs - a->reqs);
}

static int proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = pid ? opendir(path) : NULL;
    if (!dir) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (e->d_name[0] != '.') n++;
    closedir(dir);
    return n;
}

/* The daemon's count of 5xx answers, from /metrics (-1 when it cannot be read). */
static long daemon_5xx(CURL *c)
{
    hresp r = {0};
    long n = -1;
    if (http(c, "GET", "/metrics", NULL, NULL, 0, &r) == 200 && r.body) {
        n = 0;
        for (char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            if (strncmp(l, "statesoup_http_requests_total{", 30)) continue;
            char *s = strstr(l, "status=\"");
            char *nl = strchr(l, '\n');
            if (!s || (nl && s > nl) || s[8] != '5') continue;
            char *v = strchr(s, '}');
            if (v) n += strtol(v + 1, NULL, 10);
        }
    }
    free(r.body);
    return n;
}

/* Add the 5xx count of the daemon's life that ends now (before a kill or a stop, or at the end
 * of a --url run) to the total. */
static void life_end(CURL *c)
{
    long n = daemon_5xx(c);
    if (n > 0) G.d5xx_total += n;
}

static void take_sample(CURL *c)
{
    if (G.n_samples >= MAX_SAMPLES) return;
    sample s = {.t = since_start(),
                .fds = proc_fds(G.pid),
                .d5xx = c ? daemon_5xx(c) : -1,
                .reqs = atomic_load(&G.reqs),
                .minflt = proc_minflt(G.pid)};
    s.rss_mb = proc_rss_mb(G.pid, &s.anon_mb, &s.file_mb);
    pthread_mutex_lock(&G.mu);
    s.live = (long)G.n_live;
    pthread_mutex_unlock(&G.mu);
    G.samples[G.n_samples++] = s;
    if (!G.json || isatty(2))
        fprintf(stderr,
                "  t=%6.1fs  rss %7.1f MB (anon %.1f)  fds %4d  5xx %ld  requests %llu  live "
                "states %ld  faults/request %.1f\n",
                s.t, s.rss_mb, s.anon_mb, s.fds, s.d5xx, (unsigned long long)s.reqs, s.live,
                faults_per_req(G.n_samples - 1));
}

/* ---- runs ------------------------------------------------------------------------------------ */

static int clients_start(void)
{
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 512 * 1024);
    atomic_store(&G.stop, 0);
    for (int i = 0; i < G.clients; i++) {
        if (pthread_create(&clients[i].th, &at, client_main, &clients[i])) {
            fprintf(stderr, "statesoup-load: cannot start client thread %d\n", i);
            atomic_store(&G.stop, 1);
            for (int k = 0; k < i; k++) pthread_join(clients[k].th, NULL);
            pthread_attr_destroy(&at);
            return -1;
        }
    }
    pthread_attr_destroy(&at);
    return 0;
}

static void clients_stop(void)
{
    atomic_store(&G.stop, 1);
    for (int i = 0; i < G.clients; i++) pthread_join(clients[i].th, NULL);
}

/*
 * Run the mix for up to secs seconds (sampling every G.interval s when interval_samples).
 * Returns early (1) when the daemon died; 0 otherwise. With kill_at >= 0, kill -9s the daemon
 * that many seconds in, then stops.
 */
static int mix(double secs, double kill_at, CURL *obs, int interval_samples)
{
    int64_t t = ss_mono_ns();
    double next = G.interval;
    int died = 0;
    atomic_store(&G.killed, 0);
    if (clients_start()) return 1;
    for (;;) {
        double el = (double)(ss_mono_ns() - t) / 1e9;
        if (kill_at >= 0 && el >= kill_at) {
            life_end(obs);
            atomic_store(&G.killed, 1);
            atomic_store(&G.stop, 1); /* only the requests in flight are cut */
            kill(G.pid, SIGKILL);
            daemon_reap(30);
            break;
        }
        if (el >= secs) break;
        if ((died = daemon_died())) break;
        if (interval_samples && el >= next) {
            take_sample(obs);
            next += G.interval;
        }
        sleep_s(0.05);
    }
    clients_stop();
    G.mix_s += (double)(ss_mono_ns() - t) / 1e9;
    return died;
}

static void mark_failed(size_t i)
{
    pthread_mutex_lock(&G.mu);
    G.ents[i].failed = 1;
    pthread_mutex_unlock(&G.mu);
}

typedef struct vjob {
    size_t *idx;
    size_t n;
    atomic_size_t next;
    pthread_mutex_t mu;
    vres v;
} vjob;

static void *verify_main(void *arg)
{
    vjob *j = arg;
    CURL *c = curl_easy_init();
    vres v = {0};
    for (size_t k; c && (k = atomic_fetch_add(&j->next, 1)) < j->n;) {
        size_t i = j->idx[k];
        char id[40], path[128];
        pthread_mutex_lock(&G.mu);
        memcpy(id, G.ents[i].id, sizeof id);
        int status = G.ents[i].status;
        pthread_mutex_unlock(&G.mu);
        hresp r = {0};
        json_t *got = NULL;
        snprintf(path, sizeof path, "/v1/states/%s", id);
        long st = http_json(c, "GET", path, NULL, &got, &r);
        free(r.body);
        v.checked++;
        if (status == E_DELETED) {
            if (st != 404) {
                v.resurrected++;
                problem("verify %s: deleted (204) but answers %ld", id, st);
            }
        } else if (st == 404 && status == E_UNCERTAIN) {
            v.gone_uncertain++;
            pthread_mutex_lock(&G.mu);
            G.ents[i].status = E_DELETED; /* the cut delete had happened */
            pthread_mutex_unlock(&G.mu);
        } else if (st != 200) {
            v.lost++;
            mark_failed(i);
            problem("verify %s: acknowledged, answers %ld", id, st);
        } else {
            char *want = pool_record(i);
            int bad = !same_record(want, got);
            free(want);
            if (bad) problem("verify %s: the record differs from the one acknowledged", id);
            int xbad = 0;
            long xs = export_check(c, i, id, 0, &xbad, "verify");
            if (xs != 200) problem("verify %s: export answers %ld", id, xs);
            if (bad || xbad || xs != 200) {
                v.corrupt++;
                mark_failed(i);
            }
        }
        json_decref(got);
    }
    if (c) curl_easy_cleanup(c);
    pthread_mutex_lock(&j->mu);
    j->v.checked += v.checked;
    j->v.lost += v.lost;
    j->v.corrupt += v.corrupt;
    j->v.resurrected += v.resurrected;
    j->v.gone_uncertain += v.gone_uncertain;
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Check every acknowledged state (and every acknowledged delete) on up to 8 threads. */
static vres verify_all(void)
{
    vjob j = {0};
    int64_t t0 = ss_mono_ns();
    pthread_mutex_init(&j.mu, NULL);
    pthread_mutex_lock(&G.mu);
    j.idx = malloc((G.n_ents ? G.n_ents : 1) * sizeof *j.idx);
    for (size_t i = 0; j.idx && i < G.n_ents; i++)
        if (G.ents[i].status != E_DELETING) j.idx[j.n++] = i;
    pthread_mutex_unlock(&G.mu);
    if (!j.idx) {
        problem("verify: out of memory");
        j.v.lost = 1;
        return j.v;
    }
    int nt = G.clients < 8 ? G.clients : 8;
    pthread_t th[8];
    for (int t = 0; t < nt; t++) pthread_create(&th[t], NULL, verify_main, &j);
    for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
    free(j.idx);
    pthread_mutex_destroy(&j.mu);
    j.v.seconds = (double)(ss_mono_ns() - t0) / 1e9;
    return j.v;
}

/* GET /v1/models: vocabulary size and whether text prompts work. 0 on success. */
static int model_info(CURL *c)
{
    hresp r = {0};
    json_t *j = NULL;
    long st = http_json(c, "GET", "/v1/models", NULL, &j, &r);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    G.vocab = (int)json_integer_value(json_object_get(m, "vocab_size"));
    G.tokenizer = json_is_true(json_object_get(m, "tokenizer"));
    free(r.body);
    json_decref(j);
    if (st != 200 || G.vocab < 2) {
        fprintf(stderr, "statesoup-load: GET %s/v1/models answered %ld (no usable model)\n", G.base,
                st);
        return -1;
    }
    return 0;
}

/* ---- report ---------------------------------------------------------------------------------- */

typedef struct ktotal {
    kstat k; /* merged */
    double p50, p99;
} ktotal;

static void merge_stats(ktotal *kt)
{
    for (int k = 0; k < K__N; k++) {
        kstat *m = &kt[k].k;
        for (int c = 0; c < G.clients; c++) {
            kstat *s = &clients[c].ks[k];
            if (s->n) {
                double *nl = realloc(m->lat, (m->n + s->n) * sizeof *nl);
                if (nl) {
                    memcpy(nl + m->n, s->lat, s->n * sizeof *nl);
                    m->lat = nl;
                    m->n += s->n;
                }
            }
            for (int a = 0; a < s->n_codes; a++) {
                int f = 0;
                for (int b = 0; b < m->n_codes && !f; b++)
                    if (m->codes[b].code == s->codes[a].code) {
                        m->codes[b].n += s->codes[a].n;
                        f = 1;
                    }
                if (!f && m->n_codes < 16) m->codes[m->n_codes++] = s->codes[a];
            }
            m->reqs += s->reqs;
            m->bad += s->bad;
            m->unexpected += s->unexpected;
        }
        ss_load_sort(m->lat, m->n);
        kt[k].p50 = ss_load_percentile(m->lat, m->n, 50);
        kt[k].p99 = ss_load_percentile(m->lat, m->n, 99);
    }
}

static const char *code_name(int code, char *buf, size_t cap)
{
    if (code == ST_CONN) return "conn";
    if (code == ST_CUT) return "cut";
    snprintf(buf, cap, "%d", code);
    return buf;
}

static json_t *vres_json(const vres *v)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:f}", "checked", (json_int_t)v->checked, "lost",
                     (json_int_t)v->lost, "corrupt", (json_int_t)v->corrupt, "resurrected",
                     (json_int_t)v->resurrected, "cut_deletes_done", (json_int_t)v->gone_uncertain,
                     "seconds", v->seconds);
}

static json_t *num_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* ---- options --------------------------------------------------------------------------------- */

static const char usage_text[] =
    "usage: statesoup-load (--model DIR --data DIR | --url URL [--pid PID]) [options]\n"
    "\n"
    "A bounded load and fault run against statesoupd on this machine (loopback only): N clients\n"
    "send a weighted mix of saves, lists, reads, exports, imports, stored and on-the-fly merges,\n"
    "generations (plain, streamed, abandoned mid-stream), scores and deletes for S seconds, then\n"
    "every acknowledged state is verified (record, export checksum) and every acknowledged delete\n"
    "must have held. Exit 0 when everything held, 1 otherwise, 2 for bad arguments.\n"
    "\n"
    "  --model DIR          start statesoupd with this model (and --data) and stop it at the end\n"
    "  --data DIR           its data dir (created if missing)\n"
    "  --daemon PATH        the statesoupd binary (default: the one built beside this tool)\n"
    "  --daemon-arg ARG     one more argument for statesoupd (repeatable, at most 16)\n"
    "  --url URL            a running daemon instead (host 127.0.0.0/8, [::1] or localhost)\n"
    "  --pid PID            its process, for RSS and fd figures (with --url)\n"
    "  --api-key KEY        sent as 'Authorization: Bearer KEY' (a write key)\n"
    "  --clients N          concurrent clients, 1..1024 (default 8)\n"
    "  --seconds S          length of the mix, 1..3600 (default 10; per cycle with --kill-cycles)\n"
    "  --interval S         seconds between samples of RSS, fds, 5xx and minor page faults\n"
    "                       per request (fresh memory the daemon touched; default 5)\n"
    "  --mix KIND=W,...     change weights (kinds: save list read export import merge merge_fly\n"
    "                       generate gen_stream gen_abandon score delete; W 0..1000)\n"
    "  --restart            after the run, restart the daemon cleanly and verify again\n"
    "  --kill-cycles K      K cycles (1..1000) of: mix, kill -9 at a random moment within\n"
    "                       --seconds, restart, verify every acknowledged state (needs --model)\n"
    "  --idle N             before the mix, open N idle connections (never sending a byte) and\n"
    "                       measure /healthz on fresh connections beside them (200 probes:\n"
    "                       p50/p99/max); they stay open during the mix (0..100000)\n"
    "  --seed N             random seed (default: from the clock)\n"
    "  --json               print the report as JSON on stdout\n"
    "  --json-file FILE     also write the JSON report to FILE\n"
    "  -h, --help           this text\n";

static int bad_arg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_arg(const char *fmt, ...)
{
    va_list ap;
    fputs("statesoup-load: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(statesoup-load --help lists the options)\n", stderr);
    return 2;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_mix(const char *s)
{
    char *dup = strdup(s), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(dup, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        long w;
        int k;
        if (!eq) {
            rc = -1;
            break;
        }
        *eq = '\0';
        for (k = 0; k < K__N && strcmp(kind_name[k], t); k++) {
        }
        if (k == K__N || parse_int(eq + 1, 0, 1000, &w))
            rc = -1;
        else
            G.weight[k] = (int)w;
    }
    free(dup);
    return rc;
}

/* The statesoupd next to this binary (build/bench/.. or the same bin/ folder), else from PATH. */
static const char *find_daemon(void)
{
    static char path[PATH_MAX];
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *dir = dirname(self);
        snprintf(path, sizeof path, "%s/statesoupd", dir);
        if (access(path, X_OK) == 0) return path;
        snprintf(path, sizeof path, "%s/../statesoupd", dir);
        if (access(path, X_OK) == 0) return path;
    }
    return "statesoupd";
}

enum {
    O_URL = 1000,
    O_PID,
    O_MODEL,
    O_DATA,
    O_DAEMON,
    O_DARG,
    O_KEY,
    O_CLIENTS,
    O_SECONDS,
    O_INTERVAL,
    O_MIX,
    O_RESTART,
    O_KILL,
    O_SEED,
    O_IDLE,
    O_JSON,
    O_JSON_FILE
};

static int check_args(void);

/* The options that take a bounded integer: --NAME N into *dst, N in [lo, hi]. */
static const struct int_opt {
    int c;
    const char *name;
    long lo, hi;
    int *dst;
} int_opts[] = {
    {O_CLIENTS, "clients", 1, MAX_CLIENTS, &G.clients},
    {O_SECONDS, "seconds", 1, MAX_SECONDS, &G.seconds},
    {O_INTERVAL, "interval", 1, MAX_SECONDS, &G.interval},
    {O_KILL, "kill-cycles", 1, MAX_CYCLES, &G.kill_cycles},
    {O_IDLE, "idle", 0, 100000, &G.idle},
};

/* Set option c (one of int_opts) from arg: 0, or bad_arg's exit status. */
static int int_option(int c, const char *arg)
{
    for (size_t i = 0; i < sizeof int_opts / sizeof *int_opts; i++) {
        const struct int_opt *o = &int_opts[i];
        long v;
        if (o->c != c) continue;
        if (parse_int(arg, o->lo, o->hi, &v))
            return bad_arg("--%s %s: expected %ld..%ld", o->name, arg, o->lo, o->hi);
        *o->dst = (int)v;
        return 0;
    }
    return bad_arg("unknown option");
}

static int parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"pid", required_argument, NULL, O_PID},
        {"model", required_argument, NULL, O_MODEL},
        {"data", required_argument, NULL, O_DATA},
        {"daemon", required_argument, NULL, O_DAEMON},
        {"daemon-arg", required_argument, NULL, O_DARG},
        {"api-key", required_argument, NULL, O_KEY},
        {"clients", required_argument, NULL, O_CLIENTS},
        {"seconds", required_argument, NULL, O_SECONDS},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"mix", required_argument, NULL, O_MIX},
        {"restart", no_argument, NULL, O_RESTART},
        {"kill-cycles", required_argument, NULL, O_KILL},
        {"seed", required_argument, NULL, O_SEED},
        {"json", no_argument, NULL, O_JSON},
        {"json-file", required_argument, NULL, O_JSON_FILE},
        {"idle", required_argument, NULL, O_IDLE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long v;
    int c, rc;
    G.clients = 8;
    G.seconds = 10;
    G.interval = 5;
    G.seed = (uint64_t)ss_now_ns();
    memcpy(G.weight, kind_weight_default, sizeof G.weight);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_URL:
            G.url = optarg;
            break;
        case O_PID:
            if (parse_int(optarg, 1, INT_MAX, &v)) return bad_arg("--pid %s: not a pid", optarg);
            G.pid = (pid_t)v;
            break;
        case O_MODEL:
            G.model = optarg;
            break;
        case O_DATA:
            G.data = optarg;
            break;
        case O_DAEMON:
            G.daemon_exe = optarg;
            break;
        case O_DARG:
            if (G.n_daemon_args == MAX_DAEMON_ARGS) return bad_arg("too many --daemon-arg");
            G.daemon_args[G.n_daemon_args++] = optarg;
            break;
        case O_KEY:
            G.api_key = optarg;
            break;
        case O_CLIENTS:
        case O_SECONDS:
        case O_INTERVAL:
        case O_KILL:
        case O_IDLE:
            if ((rc = int_option(c, optarg))) return rc;
            break;
        case O_MIX:
            if (parse_mix(optarg)) return bad_arg("--mix %s: expected KIND=W,...", optarg);
            break;
        case O_RESTART:
            G.restart = 1;
            break;
        case O_SEED:
            if (parse_int(optarg, 0, LONG_MAX, &v))
                return bad_arg("--seed %s: not a number", optarg);
            G.seed = (uint64_t)v;
            break;
        case O_JSON:
            G.json = 1;
            break;
        case O_JSON_FILE:
            G.json_file = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(0);
        default:
            return bad_arg("unknown option");
        }
    }
    if (optind < argc) return bad_arg("unexpected argument '%s'", argv[optind]);
    return check_args();
}

/* The options together: what goes with what, and the target's base URL. */
static int check_args(void)
{
    for (int k = 0; k < K__N; k++) G.weight_sum += G.weight[k];
    if (G.weight_sum <= 0) return bad_arg("--mix: every weight is 0");
    if (G.url && G.model)
        return bad_arg("--url and --model: give one (a running daemon, or one to start)");
    if (!G.url && !G.model)
        return bad_arg("give --model DIR --data DIR (or --url of a running daemon)");
    if (G.model && !G.data) return bad_arg("--model needs --data DIR");
    if (G.pid && !G.url)
        return bad_arg("--pid goes with --url (with --model the tool knows its daemon)");
    if (G.url && (G.kill_cycles || G.restart))
        return bad_arg(
            "--kill-cycles and --restart need a daemon this tool starts (--model, --data)");
    if (G.url && !ss_load_url_loopback(G.url))
        return bad_arg("--url %s: only http:// on this machine's loopback (127.0.0.0/8, [::1], "
                       "localhost) is allowed",
                       G.url);
    if (G.url) {
        size_t n = strlen(G.url);
        while (n > 0 && G.url[n - 1] == '/') n--;
        if (n >= sizeof G.base) return bad_arg("--url: too long");
        snprintf(G.base, sizeof G.base, "%.*s", (int)n, G.url);
    }
    if (G.model && !G.daemon_exe) G.daemon_exe = find_daemon();
    return 0;
}

/* ---- main ------------------------------------------------------------------------------------ */

/* What a run found, for the reports. */
typedef struct outcome {
    vres v_end, v_restart, kv; /* kv: summed over the kill cycles */
    int have_restart, died, clean_exit, n_cyc;
    cycle_res *cyc;
    ktotal kt[K__N];
    uint64_t n5, unexpected, bad, total;
    long lost, corrupt, resur, acked, deleted, live_end, failed;
    int ok;
    double secs;
    /* --idle: connections held, /healthz beside them, how many the server still held after */
    int idle_held, idle_alive_end, idle_probe_fail;
    double idle_p50, idle_p99, idle_max;
} outcome;

#define IDLE_PROBES 200

/* /healthz on a fresh connection each time, IDLE_PROBES times, beside the idle connections. */
static void idle_probe(outcome *o)
{
    double lat[IDLE_PROBES];
    int n = 0;
    for (int i = 0; i < IDLE_PROBES; i++) {
        CURL *c = curl_easy_init();
        hresp r = {0};
        int64_t t = ss_mono_ns();
        long st = c ? http(c, "GET", "/healthz", NULL, NULL, 0, &r) : ST_CONN;
        if (st == 200)
            lat[n++] = (double)(ss_mono_ns() - t) / 1e6;
        else
            o->idle_probe_fail++;
        free(r.body);
        if (c) curl_easy_cleanup(c);
    }
    ss_load_sort(lat, (size_t)n);
    o->idle_p50 = ss_load_percentile(lat, (size_t)n, 50);
    o->idle_p99 = ss_load_percentile(lat, (size_t)n, 99);
    o->idle_max = ss_load_percentile(lat, (size_t)n, 100);
}

/* The kill -9 cycles: mix, kill mid-mix, restart, verify everything acknowledged so far. */
static void run_cycles(CURL *obs, outcome *o)
{
    uint64_t krng = G.seed ^ 0xD1B54A32D192ED03ull;
    for (int c = 0; c < G.kill_cycles && !o->died; c++) {
        cycle_res *cr = &o->cyc[c];
        /* the kill falls between 20 % and 100 % of the cycle: mid-mix, clients busy */
        cr->kill_at_s = G.seconds * (0.2 + 0.8 * rnd_unit(&krng));
        if ((o->died = mix(G.seconds, cr->kill_at_s, obs, 0))) break;
        int64_t t = ss_mono_ns();
        if (daemon_start()) {
            o->died = 1;
            problem("cycle %d: statesoupd did not start again after kill -9", c + 1);
            break;
        }
        cr->restart_s = (double)(ss_mono_ns() - t) / 1e9;
        t = ss_mono_ns();
        cr->v = verify_all();
        cr->verify_s = (double)(ss_mono_ns() - t) / 1e9;
        cr->rss_mb = proc_rss_mb(G.pid, &cr->anon_mb, NULL);
        cr->fds = proc_fds(G.pid);
        pthread_mutex_lock(&G.mu);
        cr->acked_total = (long)G.n_ents;
        pthread_mutex_unlock(&G.mu);
        o->n_cyc++;
        if (!G.json || isatty(2))
            fprintf(stderr,
                    "  cycle %3d: kill -9 at %.2f s, restart %.2f s, verify %.2f s: "
                    "%ld acknowledged, %ld checked, lost %ld, corrupt %ld, resurrected %ld\n",
                    c + 1, cr->kill_at_s, cr->restart_s, cr->verify_s, cr->acked_total,
                    cr->v.checked, cr->v.lost, cr->v.corrupt, cr->v.resurrected);
    }
}

/* One mix, verified at the end, and (--restart) again after a clean stop and start. */
static void run_plain(CURL *obs, outcome *o)
{
    take_sample(obs);
    o->died = mix(G.seconds, -1, obs, 1);
    if (!o->died) {
        take_sample(obs);
        o->v_end = verify_all();
    }
    if (o->died || !G.restart) return;
    life_end(obs);
    kill(G.pid, SIGTERM);
    int st = daemon_reap(120);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        problem("statesoupd did not exit cleanly on SIGTERM before the restart (wait status 0x%x)",
                st);
    if (daemon_start()) {
        o->died = 1;
        problem("statesoupd did not start again after a clean stop");
    } else {
        o->v_restart = verify_all();
        o->have_restart = 1;
    }
}

/* The final stop must be clean: exit 0 (under ASan that also means no leak, no error). */
static void final_stop(CURL *obs, outcome *o)
{
    int daemon_exit = -1;
    o->clean_exit = 1;
    if (!o->died) life_end(obs);
    if (G.own && G.pid) {
        kill(G.pid, SIGTERM);
        daemon_exit = daemon_reap(120);
    }
    if (G.own && (daemon_exit != -1 || !o->died)) {
        o->clean_exit =
            daemon_exit != -1 && WIFEXITED(daemon_exit) && WEXITSTATUS(daemon_exit) == 0;
        if (!o->clean_exit) {
            problem("statesoupd did not exit cleanly on SIGTERM (wait status 0x%x)", daemon_exit);
            fprintf(stderr, "statesoup-load: the end of statesoupd's log:\n%s\n",
                    G.d.log ? G.d.log : "");
        }
    }
}

static void summarize(outcome *o)
{
    merge_stats(o->kt);
    for (int k = 0; k < K__N; k++) {
        const kstat *ks = &o->kt[k].k;
        for (int a = 0; a < ks->n_codes; a++)
            if (ks->codes[a].code >= 500) o->n5 += ks->codes[a].n;
        o->unexpected += ks->unexpected;
        o->bad += ks->bad;
        o->total += ks->reqs;
    }
    for (int c = 0; c < o->n_cyc; c++) {
        o->kv.checked += o->cyc[c].v.checked;
        o->kv.lost += o->cyc[c].v.lost;
        o->kv.corrupt += o->cyc[c].v.corrupt;
        o->kv.resurrected += o->cyc[c].v.resurrected;
        o->kv.gone_uncertain += o->cyc[c].v.gone_uncertain;
    }
    o->lost = o->v_end.lost + o->v_restart.lost + o->kv.lost;
    o->corrupt = o->v_end.corrupt + o->v_restart.corrupt + o->kv.corrupt;
    o->resur = o->v_end.resurrected + o->v_restart.resurrected + o->kv.resurrected;
    o->acked = (long)G.n_ents;
    for (size_t i = 0; i < G.n_ents; i++) {
        o->failed += G.ents[i].failed;
        o->deleted += G.ents[i].status == E_DELETED;
        o->live_end += G.ents[i].status == E_LIVE || G.ents[i].status == E_UNCERTAIN;
    }
    o->ok = !o->died && o->clean_exit && o->lost == 0 && o->corrupt == 0 && o->resur == 0 &&
            o->n5 == 0 && G.d5xx_total == 0 && o->unexpected == 0 && o->bad == 0 &&
            o->idle_probe_fail == 0 && o->idle_held == G.idle &&
            (!G.kill_cycles || o->n_cyc == G.kill_cycles) && o->total > 0;
    o->secs = G.mix_s > 0 ? G.mix_s : 1;
}

static json_t *kinds_json(const outcome *o)
{
    json_t *kinds = json_array();
    for (int k = 0; k < K__N; k++) {
        const ktotal *t = &o->kt[k];
        json_t *codes = json_object();
        char b[16];
        for (int a = 0; a < t->k.n_codes; a++)
            json_object_set_new(codes, code_name(t->k.codes[a].code, b, sizeof b),
                                json_integer((json_int_t)t->k.codes[a].n));
        json_array_append_new(
            kinds, json_pack("{s:s,s:I,s:f,s:o,s:o,s:o,s:I,s:I}", "kind", kind_name[k],
                             "requests", (json_int_t)t->k.reqs, "per_s",
                             (double)t->k.reqs / o->secs, "p50_ms", num_or_null(t->p50), "p99_ms",
                             num_or_null(t->p99), "status", codes, "bad", (json_int_t)t->k.bad,
                             "unexpected", (json_int_t)t->k.unexpected));
    }
    return kinds;
}

static json_t *samples_json(void)
{
    json_t *samples = json_array();
    for (int i = 0; i < G.n_samples; i++) {
        sample *s = &G.samples[i];
        json_array_append_new(
            samples, json_pack("{s:f,s:o,s:o,s:o,s:i,s:I,s:I,s:I,s:I,s:o}", "t", s->t, "rss_mb",
                               num_or_null(s->rss_mb), "rss_anon_mb", num_or_null(s->anon_mb),
                               "rss_file_mb", num_or_null(s->file_mb), "fds", s->fds, "daemon_5xx",
                               (json_int_t)s->d5xx, "requests", (json_int_t)s->reqs,
                               "live_states", (json_int_t)s->live, "minor_faults",
                               (json_int_t)s->minflt, "faults_per_request",
                               num_or_null(faults_per_req(i))));
    }
    return samples;
}

static json_t *kill_json(const outcome *o)
{
    json_t *cl = json_array();
    for (int c = 0; c < o->n_cyc; c++) {
        const cycle_res *y = &o->cyc[c];
        json_array_append_new(
            cl, json_pack("{s:i,s:f,s:f,s:f,s:I,s:o,s:o,s:i,s:o}", "cycle", c + 1, "kill_at_s",
                          y->kill_at_s, "restart_s", y->restart_s, "verify_s", y->verify_s,
                          "acknowledged", (json_int_t)y->acked_total, "rss_mb",
                          num_or_null(y->rss_mb), "rss_anon_mb", num_or_null(y->anon_mb), "fds",
                          y->fds, "verify", vres_json(&y->v)));
    }
    return json_pack("{s:i,s:i,s:I,s:I,s:I,s:I,s:o}", "cycles_asked", G.kill_cycles, "cycles",
                     o->n_cyc, "acknowledged", (json_int_t)o->acked, "lost",
                     (json_int_t)o->kv.lost, "corrupt", (json_int_t)o->kv.corrupt, "resurrected",
                     (json_int_t)o->kv.resurrected, "per_cycle", cl);
}

/* --json / --json-file; returns 0 when a file could not be written */
static int report_json(const outcome *o)
{
    json_t *probs = json_array();
    for (int i = 0; i < G.n_problems; i++) json_array_append_new(probs, json_string(G.problems[i]));
    json_t *rep = json_pack(
        "{s:s,s:s,s:i,s:i,s:I,s:f,s:o,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:o,s:I,s:b}",
        "url", G.base, "run_tag", run_tag(), "clients", G.clients, "seconds", G.seconds, "seed",
        (json_int_t)G.seed, "mix_seconds", G.mix_s, "kinds", kinds_json(o), "samples",
        samples_json(), "totals", "requests", (json_int_t)o->total, "http_5xx", (json_int_t)o->n5,
        "daemon_5xx", (json_int_t)G.d5xx_total, "unexpected", (json_int_t)o->unexpected, "bad",
        (json_int_t)o->bad, "states_acknowledged", (json_int_t)o->acked, "states_deleted",
        (json_int_t)o->deleted, "states_lost", (json_int_t)o->failed, "resurrected",
        (json_int_t)o->resur, "problems", probs, "problems_total", (json_int_t)G.n_problem_total,
        "ok", o->ok);
    if (!G.kill_cycles) json_object_set_new(rep, "verify", vres_json(&o->v_end));
    if (o->have_restart) json_object_set_new(rep, "verify_after_restart", vres_json(&o->v_restart));
    if (G.kill_cycles) json_object_set_new(rep, "kill", kill_json(o));
    if (G.idle)
        json_object_set_new(rep, "idle",
                            json_pack("{s:i,s:i,s:o,s:o,s:o,s:i,s:i}", "asked", G.idle, "held",
                                      o->idle_held, "healthz_p50_ms", num_or_null(o->idle_p50),
                                      "healthz_p99_ms", num_or_null(o->idle_p99),
                                      "healthz_max_ms", num_or_null(o->idle_max),
                                      "healthz_failed", o->idle_probe_fail, "alive_at_end",
                                      o->idle_alive_end));
    int wrote = 1;
    if (G.json) {
        json_dumpf(rep, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
    }
    if (G.json_file && json_dump_file(rep, G.json_file, JSON_INDENT(1))) {
        fprintf(stderr, "statesoup-load: cannot write %s\n", G.json_file);
        wrote = 0;
    }
    json_decref(rep);
    return wrote;
}

static void print_kinds(const outcome *o)
{
    printf("%-12s %8s %8s %9s %9s  %s\n", "kind", "requests", "req/s", "p50 ms", "p99 ms",
           "status counts");
    for (int k = 0; k < K__N; k++) {
        const ktotal *t = &o->kt[k];
        char codes[256] = "", b[16];
        size_t at = 0;
        for (int a = 0; a < t->k.n_codes && at < sizeof codes; a++)
            at += (size_t)snprintf(codes + at, sizeof codes - at, "%s%s:%llu", a ? " " : "",
                                   code_name(t->k.codes[a].code, b, sizeof b),
                                   (unsigned long long)t->k.codes[a].n);
        printf("%-12s %8llu %8.1f %9.1f %9.1f  %s%s\n", kind_name[k], (unsigned long long)t->k.reqs,
               (double)t->k.reqs / o->secs, t->p50, t->p99, codes,
               t->k.bad ? "  BAD CONTENT" : "");
    }
    if (!G.n_samples) return;
    printf("\n%8s %9s %9s %9s %5s %6s %9s %7s %10s\n", "t (s)", "RSS (MB)", "anon", "file",
           "fds", "5xx", "requests", "states", "faults/req");
    for (int i = 0; i < G.n_samples; i++) {
        const sample *s = &G.samples[i];
        printf("%8.1f %9.1f %9.1f %9.1f %5d %6ld %9llu %7ld %10.1f\n", s->t, s->rss_mb,
               s->anon_mb, s->file_mb, s->fds, s->d5xx, (unsigned long long)s->reqs, s->live,
               faults_per_req(i));
    }
}

static void print_vres(const char *what, const vres *v)
{
    printf("verify %s (%.1f s): %ld checked, %ld lost, %ld corrupt, %ld resurrected\n", what,
           v->seconds, v->checked, v->lost, v->corrupt, v->resurrected);
}

static void report_text(const outcome *o)
{
    printf("\n%d clients, %.1f s of mix%s, %llu requests (%.1f/s)\n", G.clients, G.mix_s,
           G.kill_cycles ? " (all cycles)" : "", (unsigned long long)o->total,
           (double)o->total / o->secs);
    print_kinds(o);
    printf("\nstates: %ld acknowledged, %ld deleted (acknowledged), %ld kept, %ld lost or "
           "damaged\n",
           o->acked, o->deleted, o->live_end, o->failed);
    if (!G.kill_cycles) print_vres("at the end", &o->v_end);
    if (o->have_restart) print_vres("after a restart", &o->v_restart);
    if (G.kill_cycles)
        printf("kill -9: %d of %d cycles, %ld states acknowledged, %ld checks: lost %ld, "
               "corrupt %ld, resurrected %ld\n",
               o->n_cyc, G.kill_cycles, o->acked, o->kv.checked, o->kv.lost, o->kv.corrupt,
               o->kv.resurrected);
    printf("5xx: %llu seen by clients, %ld counted by the daemon; unexpected answers %llu, "
           "bad content %llu\n",
           (unsigned long long)o->n5, G.d5xx_total, (unsigned long long)o->unexpected,
           (unsigned long long)o->bad);
    if (G.idle)
        printf("idle: %d connections held; /healthz beside them p50 %.2f ms, p99 %.2f ms, max "
               "%.2f ms, %d failed; %d still open after the mix (the daemon's --idle-timeout "
               "closes the rest)\n",
               o->idle_held, o->idle_p50, o->idle_p99, o->idle_max, o->idle_probe_fail,
               o->idle_alive_end);
    for (int i = 0; i < G.n_problems; i++) printf("problem: %s\n", G.problems[i]);
    if (G.n_problem_total > G.n_problems) printf("(%ld problems in all)\n", G.n_problem_total);
    printf("%s\n", o->ok ? "OK" : "FAILED");
}

/* libcurl handles and seeds for the clients; returns 0 on success */
static int clients_init(void)
{
    clients = calloc((size_t)G.clients, sizeof *clients);
    if (!clients) {
        fprintf(stderr, "statesoup-load: out of memory\n");
        return 1;
    }
    uint64_t seeder = G.seed;
    for (int i = 0; i < G.clients; i++) {
        clients[i].idx = i;
        /* each client's state is a mixed output, not seed + i * step: splitmix64 states that
         * differ by a multiple of its step walk the same sequence, shifted, and clients in step
         * with each other skew the mix */
        clients[i].rng = rnd(&seeder);
        clients[i].curl = curl_easy_init();
        if (!clients[i].curl) {
            fprintf(stderr, "statesoup-load: cannot start libcurl\n");
            return 1;
        }
    }
    return 0;
}

static void cleanup(CURL *obs, outcome *o)
{
    if (G.own && G.pid) { /* an early exit: do not leave the daemon behind */
        kill(G.pid, SIGKILL);
        daemon_reap(30);
    }
    for (int k = 0; k < K__N; k++) free(o->kt[k].k.lat);
    for (int i = 0; clients && i < G.clients; i++) {
        for (int k = 0; k < K__N; k++) free(clients[i].ks[k].lat);
        if (clients[i].curl) curl_easy_cleanup(clients[i].curl);
    }
    free(clients);
    free(o->cyc);
    for (size_t i = 0; i < G.n_ents; i++) free(G.ents[i].record);
    free(G.ents);
    free(G.live);
    for (size_t i = 0; i < G.n_cache; i++) free(G.cache[i].data);
    for (int i = 0; i < G.n_problems; i++) free(G.problems[i]);
    if (obs) curl_easy_cleanup(obs);
    curl_global_cleanup();
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc) return rc;
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_init(&G.mu, NULL);
    ss_dproc_init(&G.d, LOG_KEEP);
    G.t0 = ss_mono_ns();
    {
        uint64_t s = G.seed;
        snprintf(G.runid, sizeof G.runid, "%08llx", (unsigned long long)(rnd(&s) & 0xffffffffu));
    }
    outcome o = {0};
    CURL *obs = curl_easy_init();
    rc = 1;
    if (G.kill_cycles && !(o.cyc = calloc((size_t)G.kill_cycles, sizeof *o.cyc))) {
        fprintf(stderr, "statesoup-load: out of memory\n");
        goto out;
    }
    if (!obs || clients_init()) goto out;
    if (G.model) {
        G.own = 1;
        if (daemon_start()) goto out;
    }
    if (model_info(obs)) goto out;
    if (!G.json)
        fprintf(stderr, "statesoup-load: %s (pid %d), %d clients, %d s%s, run tag %s, seed %llu\n",
                G.base, (int)G.pid, G.clients, G.seconds, G.kill_cycles ? " per cycle" : "",
                run_tag(), (unsigned long long)G.seed);
    int *idle_fds = NULL;
    if (G.idle) {
        char why[256];
        o.idle_held = ss_load_idle_open(G.base, G.idle, &idle_fds, why, sizeof why);
        if (o.idle_held < G.idle)
            problem("--idle %d: opened %d (%s)", G.idle, o.idle_held < 0 ? 0 : o.idle_held, why);
        idle_probe(&o);
        if (!G.json)
            fprintf(stderr,
                    "statesoup-load: %d idle connections held; /healthz on a fresh connection: "
                    "p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d failed\n",
                    o.idle_held, o.idle_p50, o.idle_p99, o.idle_max, o.idle_probe_fail);
    }
    if (G.kill_cycles)
        run_cycles(obs, &o);
    else
        run_plain(obs, &o);
    if (idle_fds) {
        o.idle_alive_end = ss_load_idle_alive(idle_fds, o.idle_held);
        ss_load_idle_close(idle_fds, o.idle_held);
    }
    final_stop(obs, &o);
    summarize(&o);
    if ((G.json || G.json_file) && !report_json(&o)) o.ok = 0;
    if (!G.json) report_text(&o);
    rc = o.ok ? 0 : 1;
out:
    cleanup(obs, &o);
    ss_dproc_free(&G.d);
    return rc;
}
