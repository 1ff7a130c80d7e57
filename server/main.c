/*
 * main.c - statesoupd: parse flags, start HTTP at once (so /healthz answers 503 while loading),
 * load the model, tokenizer, catalog and engine, serve until SIGINT/SIGTERM, then shut down in
 * the order that lets every request finish cleanly: stop accepting, let running jobs end (up to
 * a deadline), detach and close the engine (which wakes every parked request), stop HTTP.
 *
 * SIGINT/SIGTERM during a long model load end the process at once (the catalog is crash-safe);
 * afterwards they start the graceful shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "http.h"
#include "metrics.h"
#include "ss_api.h"
#include "ss_build.h"
#include "ss_log.h"
#include "ss_model.h"
#include "ss_store.h"
#include "ss_tokenizer.h"
#include "ss_util.h"

typedef struct options {
    const char *model;
    const char *tokenizer;
    const char *data;
    char host[256];
    int port;
    int threads;
    int compute_threads;
    int f32_in_place;
    int weights_q8;
    const char *api_keys;
    size_t max_body;
    int max_tokens;
    int max_batch;
    int max_queue;
    int prefill_chunk;
    double prefill_share;
    size_t store_max_bytes;
    const char *remote;          /* Redis Cluster seeds (docs/scale-out.md); NULL = LMDB alone */
    const char *remote_password;
    const char *remote_prefix;
    int remote_wait;             /* Redis replicas a write waits for (WAIT) */
    int remote_timeout_ms, remote_retry_ms;
    size_t cache_max_bytes;
    int quiet;
    int shutdown_timeout;
    int prefix_cache;
    size_t prefix_cache_budget;
    int prefix_cache_every;
    double prefix_cache_tenant_share;
    const char *retrieval_key;
    int max_connections;
    int max_per_ip;
    int idle_timeout;
    int log_json;
} options;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: statesoupd [options]\n"
        "\n"
        "Serve a recurrent language model (Mamba family) over HTTP, with a durable catalog of\n"
        "its hidden states (save, merge, export/import, generate and score from them).\n"
        "The API is described in docs/api.md.\n"
        "\n"
        "  --model DIR           checkpoint folder (config.json + model.safetensors)\n"
        "                        (default: models/demo-mamba1)\n"
        "  --tokenizer FILE      tokenizer.json (default: DIR/tokenizer.json when it exists;\n"
        "                        without one, token-id requests work and text requests get 400)\n"
        "  --data DIR            folder of the state catalog, created if missing (default: "
        "./data)\n"
        "  --listen HOST:PORT    address to listen on (default: 127.0.0.1:8080); port 0 picks\n"
        "                        a free port, printed in the \"listening on\" line.\n"
        "                        IPv6: [::1]:8080\n"
        "  --threads N           HTTP connection threads (default: 4)\n"
        "  --compute-threads N   threads for the model's math (default: 0 = all cores)\n"
        "                        (decode steps of 1 to 4 streams read each weight matrix as\n"
        "                        four far-apart streams, their prefetches ahead non-temporal\n"
        "                        on AMD CPUs; SS_FAR_STREAMS=1 or 0 forces the streams,\n"
        "                        SS_FAR_M=1 keeps them to a single stream, SS_PF_NTA=1 or 0\n"
        "                        the prefetches, SS_FAR_PF_BYTES=N how many bytes ahead each\n"
        "                        far stream prefetches (default 1536; 0: one row),\n"
        "                        SS_PF1_ROWS=N (4-64) how many rows ahead one stream\n"
        "                        prefetches (default 8), SS_FAR_T=1\n"
        "                        or 0 the same for the transposed matrices' column-blocked\n"
        "                        layout; a step's threads claim shrinking runs of rows,\n"
        "                        SS_PARTS=0 gives them equal blocks instead, from both ends\n"
        "                        of a matrix on AMD CPUs, SS_ENDS=1 or 2 sets one or two ends;\n"
        "                        decode steps of 2 to 16 streams take F32 products in chunks\n"
        "                        of their inputs on AMD CPUs, SS_K_CHUNKS=1 or 0 forces it;\n"
        "                        under SS_FUSED_DECODE=1 (below) over 4 threads Mamba-1 layers\n"
        "                        split out_proj by columns too, SS_UNITS=0 or 1 forces it, and\n"
        "                        SS_FUSED_ROWS=N (1-16) takes two steps a layer for up to N\n"
        "                        streams only: same results; SS_SCAN_AHEAD=0 and SS_HSUM4X4=0\n"
        "                        bring back the previous scan and small-product kernels,\n"
        "                        SS_PF_SPREAD=0 the previous several-stream prefetches, for\n"
        "                        measuring: same results too)\n"
        "  --f32-in-place        use F32 weight matrices straight from the mmapped file: no\n"
        "                        copy at load and pages the kernel may reclaim, but ~10 %%\n"
        "                        slower decoding (4 KiB pages, 8-byte aligned data). Default:\n"
        "                        every weight matrix is copied at load onto transparent huge\n"
        "                        pages (F32 as stored, BF16 in the kernels' layout, F16), the\n"
        "                        file's pages released: the resident size is one copy\n"
        "  --huge-pages          accepted for old command lines: the default now\n"
        "  --weights W           how the weight matrices are held: \"stored\" (default: as the\n"
        "                        checkpoint stores them, exact) or \"q8\" (quantised at load to\n"
        "                        int8 with a scale per 32 values: about a quarter of F32's\n"
        "                        memory and bytes per token, faster decoding, not exact; a\n"
        "                        single stream's decode steps also quantise their activations\n"
        "                        to 8 bits (integer products, VNNI/AVX2; SS_Q8_ACT=f32 keeps\n"
        "                        them F32); states stay F32. docs/performance.md gives the\n"
        "                        quality cost of both). Mamba-1's x_proj and out_proj are\n"
        "                        held in rows; SS_FUSED_DECODE=1 in the environment holds them\n"
        "                        transposed instead (a decode step's threads meet twice per\n"
        "                        layer, not four times: a few per cent faster for one stream\n"
        "                        on 16 threads, slower for several streams and on fewer\n"
        "                        threads; q8 in its q8k layout with integer kernels;\n"
        "                        performance.md).\n"
        "                        q8 keeps matrices of 256 outputs and inputs or more in panels\n"
        "                        of 64 outputs (read in four far streams per thread;\n"
        "                        SS_Q8P_STREAMS=1, 2 or 4 sets them); SS_Q8_LAYOUT=rows keeps\n"
        "                        every matrix in rows, the layout before, for measuring\n"
        "  --api-keys FILE       require \"Authorization: Bearer KEY\"; the file has lines\n"
        "                        \"KEY read|write|admin [tenant=NAME] [rate=N/s|N/m|N/h]\"\n"
        "                        (rate: N requests per second, minute or hour, else 429\n"
        "                        rate_limited with Retry-After; read keys cannot create,\n"
        "                        merge, import or delete states; admin keys also share and\n"
        "                        unshare states). A key's tenant sees only its own states and\n"
        "                        shared ones (names are unique per tenant); keys without\n"
        "                        tenant= belong to the default tenant. Default: no auth.\n"
        "                        SIGHUP reads the file again (kill -HUP, systemctl reload):\n"
        "                        a file that does not parse leaves the keys in use\n"
        "  --max-body BYTES      largest request body accepted, else 413 (default: 64M;\n"
        "                        suffixes K, M, G). A larger body sent without \"Expect:\n"
        "                        100-continue\" is read and thrown away (up to 32M past the\n"
        "                        limit) so that the client can read its 413\n"
        "  --max-connections N   open client connections beyond which new ones are closed at\n"
        "                        once (default: 4096; lowered to fit the process's file\n"
        "                        limit, which statesoupd raises to its hard maximum)\n"
        "  --max-per-ip N        open connections from one client address (default: no limit)\n"
        "  --idle-timeout S      close a connection idle for S seconds (default: 30; a\n"
        "                        request waiting for the engine or a stream is not idle)\n"
        "  --log-format F        text (default) or json, one line each on stderr: the daemon's\n"
        "                        own lines (start, listening, model, catalog, ready, warnings,\n"
        "                        shutdown: time, level, event, message and their fields),\n"
        "                        request lines (time, client address, method, path, status,\n"
        "                        bytes, duration, request id, key) and transport events;\n"
        "                        repeated events (clients gone mid-answer, refused\n"
        "                        connections) are summed up once a minute\n"
        "  --max-tokens N        most tokens one request may generate (default: 4096)\n"
        "  --max-batch N         most sequences the engine runs together (default: 16)\n"
        "  --max-queue N         most jobs waiting for the engine; beyond, 503 (default: 256)\n"
        "  --prefill-chunk N     prompt tokens per engine step (default: 256)\n"
        "  --prefill-share F     while streams decode, the share (0..1] of step time that\n"
        "                        prompts may take; prompts share it in turn (default: 0.4)\n"
        "  --store-max-bytes B   cap on the catalog's size, then 507 (default: the disk)\n"
        "  --remote URL          share the catalog through Redis Cluster:\n"
        "                        redis://[:password@]host:port[,host:port...] (seed nodes);\n"
        "                        --data then holds a bounded cache (docs/scale-out.md). No TLS:\n"
        "                        Debian 12's hiredis (0.14) has none\n"
        "  --remote-password P   Redis AUTH password (or $STATESOUP_REMOTE_PASSWORD)\n"
        "  --remote-prefix P     key namespace in Redis, one hash slot (default: ss)\n"
        "  --remote-wait N       Redis replicas that must confirm a write (WAIT) before it is\n"
        "                        acknowledged; 0 = the primary alone (default: 1)\n"
        "  --cache-max-bytes B   with --remote, blob bytes kept in --data (LRU; default: 1G)\n"
        "  --remote-timeout MS   connect and per-command timeout for Redis (default: 2000)\n"
        "  --remote-retry MS     how long a catalog command retries through redirects,\n"
        "                        reconnects and failovers before 503 (default: 5000); once one\n"
        "                        has given up, the next ones answer at once (cached reads\n"
        "                        served, the rest 503) until a probe every 0.5 s reaches the\n"
        "                        cluster again\n"
        "  --drain-timeout S     on SIGINT/SIGTERM the daemon stops listening at once (new\n"
        "                        connections are refused, new requests on open ones get 503\n"
        "                        shutting_down), cancels queued jobs at once (503), and gives\n"
        "                        running jobs S seconds to finish before cancelling them\n"
        "                        (default: 10; --shutdown-timeout is the old name)\n"
        "  --prefix-cache        \"reuse\" defaults to true: generate, completions and score\n"
        "                        resume from the longest stored state whose tokens begin\n"
        "                        the prompt (docs/api.md, Prompt caching)\n"
        "  --prefix-cache-budget BYTES  keep checkpoints of recent prompts as cache entries\n"
        "                        (hidden from listings, least recently used evicted first,\n"
        "                        never a saved state) within BYTES; implies --prefix-cache\n"
        "  --prefix-cache-every N  cache checkpoints every N prompt tokens, and at the end\n"
        "                        of each prompt (default: 256)\n"
        "  --prefix-cache-tenant-share F  the most of the budget one tenant's cache entries\n"
        "                        may hold, 0 < F <= 1 (default: 1): a tenant at its share\n"
        "                        evicts its own least recently used entries, not another's\n"
        "  --retrieval-key KIND  the key POST /v1/states/search compares states by:\n"
        "                        ssm_slow (default: the first layer's slowest-decaying SSM\n"
        "                        state dimensions, close to a bag of the tokens read,\n"
        "                        projected to 256 dims), ssm_norm (each layer's SSM state\n"
        "                        at unit norm, projected to 256 dims), projection (the whole\n"
        "                        state projected to 256 dims) or final_hidden (the last\n"
        "                        token's hidden vector); keys of another kind are\n"
        "                        recomputed at start (docs/retrieval.md)\n"
        "  --quiet               do not log one line per request on stderr\n"
        "  -h, --help            this text\n");
}

/* A number in (0, 1]; 0 on a malformed value. */
static int parse_fraction(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0 && v <= 1)) return 0;
    *out = v;
    return 1;
}

/* "64M" -> bytes; 0 on a malformed value. */
static size_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return 0;
    unsigned long long mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1ull << 10;
    else if (*end == 'M' || *end == 'm')
        mul = 1ull << 20;
    else if (*end == 'G' || *end == 'g')
        mul = 1ull << 30;
    else if (*end)
        return 0;
    if (mul > 1 && end[1]) return 0;
    if (v > SIZE_MAX / mul) return 0;
    return (size_t)(v * mul);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static int parse_listen(const char *s, options *o)
{
    const char *colon = strrchr(s, ':');
    if (!colon) return 0;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof o->host) return 0;
    memcpy(o->host, s, hl);
    o->host[hl] = '\0';
    return parse_int(colon + 1, 0, 65535, &o->port);
}

/* Long options, numbered from O_MODEL (two names may share a number: drain-timeout). */
enum {
    O_MODEL = 256,
    O_TOK,
    O_DATA,
    O_LISTEN,
    O_THREADS,
    O_CTHREADS,
    O_HUGE,
    O_F32_IN_PLACE,
    O_WEIGHTS,
    O_KEYS,
    O_MAXBODY,
    O_MAXTOK,
    O_BATCH,
    O_QUEUE,
    O_CHUNK,
    O_SHARE,
    O_STOREMAX,
    O_REMOTE,
    O_RPASS,
    O_RPREFIX,
    O_RWAIT,
    O_CACHEMAX,
    O_RTIMEOUT,
    O_RRETRY,
    O_SHUTDOWN,
    O_PCACHE,
    O_PCBUDGET,
    O_PCEVERY,
    O_PCSHARE,
    O_QUIET,
    O_RKEY,
    O_MAXCONN,
    O_PERIP,
    O_IDLE,
    O_LOGFMT,
};

static const struct option longopts[] = {
    {"model", required_argument, NULL, O_MODEL},
    {"tokenizer", required_argument, NULL, O_TOK},
    {"data", required_argument, NULL, O_DATA},
    {"listen", required_argument, NULL, O_LISTEN},
    {"threads", required_argument, NULL, O_THREADS},
    {"compute-threads", required_argument, NULL, O_CTHREADS},
    {"huge-pages", no_argument, NULL, O_HUGE},
    {"f32-in-place", no_argument, NULL, O_F32_IN_PLACE},
    {"weights", required_argument, NULL, O_WEIGHTS},
    {"api-keys", required_argument, NULL, O_KEYS},
    {"max-body", required_argument, NULL, O_MAXBODY},
    {"max-tokens", required_argument, NULL, O_MAXTOK},
    {"max-batch", required_argument, NULL, O_BATCH},
    {"max-queue", required_argument, NULL, O_QUEUE},
    {"prefill-chunk", required_argument, NULL, O_CHUNK},
    {"prefill-share", required_argument, NULL, O_SHARE},
    {"store-max-bytes", required_argument, NULL, O_STOREMAX},
    {"remote", required_argument, NULL, O_REMOTE},
    {"remote-password", required_argument, NULL, O_RPASS},
    {"remote-prefix", required_argument, NULL, O_RPREFIX},
    {"remote-wait", required_argument, NULL, O_RWAIT},
    {"cache-max-bytes", required_argument, NULL, O_CACHEMAX},
    {"remote-timeout", required_argument, NULL, O_RTIMEOUT},
    {"remote-retry", required_argument, NULL, O_RRETRY},
    {"drain-timeout", required_argument, NULL, O_SHUTDOWN},
    {"shutdown-timeout", required_argument, NULL, O_SHUTDOWN},
    {"prefix-cache", no_argument, NULL, O_PCACHE},
    {"prefix-cache-budget", required_argument, NULL, O_PCBUDGET},
    {"prefix-cache-every", required_argument, NULL, O_PCEVERY},
    {"prefix-cache-tenant-share", required_argument, NULL, O_PCSHARE},
    {"quiet", no_argument, NULL, O_QUIET},
    {"retrieval-key", required_argument, NULL, O_RKEY},
    {"max-connections", required_argument, NULL, O_MAXCONN},
    {"max-per-ip", required_argument, NULL, O_PERIP},
    {"idle-timeout", required_argument, NULL, O_IDLE},
    {"log-format", required_argument, NULL, O_LOGFMT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

#define MAX_COUNT (1 << 20) /* upper bound of --max-tokens, --max-queue, --prefill-chunk */

/* Apply option c (one of O_*) with argument arg to o; 0 when the value is malformed. */
static int apply_option(int c, const char *arg, options *o)
{
    switch (c) {
    case O_MODEL: o->model = arg; return 1;
    case O_TOK: o->tokenizer = arg; return 1;
    case O_DATA: o->data = arg; return 1;
    case O_LISTEN: return parse_listen(arg, o);
    case O_THREADS: return parse_int(arg, 1, 1024, &o->threads);
    case O_CTHREADS: return parse_int(arg, 0, 1024, &o->compute_threads);
    case O_HUGE: return 1; /* the default now */
    case O_F32_IN_PLACE: o->f32_in_place = 1; return 1;
    case O_WEIGHTS:
        if (!strcmp(arg, "q8") || !strcmp(arg, "stored")) {
            o->weights_q8 = !strcmp(arg, "q8");
            return 1;
        }
        return 0;
    case O_KEYS: o->api_keys = arg; return 1;
    case O_MAXBODY: return (o->max_body = parse_size(arg)) > 0;
    case O_MAXTOK: return parse_int(arg, 1, MAX_COUNT, &o->max_tokens);
    case O_BATCH: return parse_int(arg, 1, SS_ENGINE_MAX_BATCH, &o->max_batch);
    case O_QUEUE: return parse_int(arg, 1, MAX_COUNT, &o->max_queue);
    case O_CHUNK: return parse_int(arg, 1, MAX_COUNT, &o->prefill_chunk);
    case O_SHARE: return parse_fraction(arg, &o->prefill_share);
    case O_STOREMAX: return (o->store_max_bytes = parse_size(arg)) > 0;
    case O_REMOTE: o->remote = arg; return 1;
    case O_RPASS: o->remote_password = arg; return 1;
    case O_RPREFIX: o->remote_prefix = arg; return 1;
    case O_RWAIT: return parse_int(arg, 0, 16, &o->remote_wait);
    case O_CACHEMAX: return (o->cache_max_bytes = parse_size(arg)) > 0;
    case O_RTIMEOUT: return parse_int(arg, 10, 600000, &o->remote_timeout_ms);
    case O_RRETRY: return parse_int(arg, 1, 600000, &o->remote_retry_ms);
    case O_SHUTDOWN: return parse_int(arg, 0, 3600, &o->shutdown_timeout);
    case O_PCACHE: o->prefix_cache = 1; return 1;
    case O_MAXCONN: return parse_int(arg, 1, 1 << 20, &o->max_connections);
    case O_PERIP: return parse_int(arg, 1, 1 << 20, &o->max_per_ip);
    case O_IDLE: return parse_int(arg, 1, 86400, &o->idle_timeout);
    case O_LOGFMT:
        if (strcmp(arg, "text") && strcmp(arg, "json")) return 0;
        o->log_json = !strcmp(arg, "json");
        return 1;
    case O_PCBUDGET: return (o->prefix_cache_budget = parse_size(arg)) > 0;
    case O_PCEVERY: return parse_int(arg, 1, MAX_COUNT, &o->prefix_cache_every);
    case O_PCSHARE: return parse_fraction(arg, &o->prefix_cache_tenant_share);
    case O_QUIET: o->quiet = 1; return 1;
    case O_RKEY: {
        ss_key_kind k;
        if (ss_key_kind_parse(arg, &k)) return 0;
        o->retrieval_key = arg;
        return 1;
    }
    }
    return 0;
}

/* Parse the command line into o (defaults first); 0 after printing what is wrong. */
static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.model = "models/demo-mamba1",
                   .data = "./data",
                   .remote_wait = 1,
                   .host = "127.0.0.1",
                   .port = 8080,
                   .threads = 4,
                   .max_body = 64u << 20,
                   .max_tokens = 4096,
                   .max_batch = 16,
                   .max_queue = 256,
                   .prefill_chunk = 256,
                   .prefill_share = 0.4,
                   .shutdown_timeout = 10,
                   .max_connections = 4096,
                   .idle_timeout = 30};
    int c, li = -1;
    while ((c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (c < O_MODEL || c > O_LOGFMT) {
            usage(stderr);
            return 0;
        }
        if (!apply_option(c, optarg, o)) {
            /* the name as given (longopts' index, not c: two names share O_SHUTDOWN) */
            fprintf(stderr, "statesoupd: bad value for --%s: '%s'\n",
                    li >= 0 ? longopts[li].name : "?", optarg);
            return 0;
        }
        li = -1;
    }
    if (optind < argc) {
        fprintf(stderr, "statesoupd: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 0;
    }
    if (o->prefix_cache_tenant_share > 0 && !o->prefix_cache_budget) {
        fprintf(stderr, "statesoupd: --prefix-cache-tenant-share shares out the automatic "
                        "cache's budget: give --prefix-cache-budget too\n");
        return 0;
    }
    return 1;
}

/* ---- signals ------------------------------------------------------------------------------ */

/*
 * Threads started before main() (OpenBLAS's pool) do not inherit a signal mask we set, so
 * SIGINT/SIGTERM are caught with a handler: while loading it ends the process (the catalog is
 * crash-safe), afterwards it writes a byte to a pipe the main thread waits on (self-pipe trick).
 */
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t loaded;

static void on_signal(int sig)
{
    if (sig == SIGHUP && !loaded) return; /* the keys are read once loading is done anyway */
    if (!loaded) {
        static const char msg[] = "statesoupd: interrupted while loading; exiting\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(1);
    }
    unsigned char c = (unsigned char)sig;
    ssize_t w = write(sig_pipe[1], &c, 1);
    (void)w;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *base_name(const char *path, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    const char *b = strrchr(buf, '/');
    return b ? b + 1 : buf;
}

/* Catch SIGINT/SIGTERM (see on_signal) and ignore SIGPIPE. 0 when the pipe cannot be made. */
static int signals_init(void)
{
    if (pipe(sig_pipe) != 0) {
        fprintf(stderr, "statesoupd: pipe: %s\n", strerror(errno));
        return 0;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL); /* reload --api-keys (serve) */
    signal(SIGPIPE, SIG_IGN);
    return 1;
}

/* ---- the parts of the daemon -------------------------------------------------------------- */

/* Everything the daemon runs; NULL until opened, closed in reverse order by shut_down. */
typedef struct parts {
    ss_metrics *metrics;
    ss_api *api;
    ss_http *http;
    ss_model *model;
    ss_tokenizer *tok;
    ss_store *store;
    ss_engine *engine;
    char model_name[4096]; /* the model folder's base name, served as the model's id */
    char tok_path[4096];
} parts;

/* Descriptors kept for the catalog, the model, logs and the engine beside the connections. */
#define FD_RESERVE 256

/*
 * Raise the file limit to its hard maximum (each connection is a descriptor) and return the
 * connection limit that fits in it: max_connections, or less with a warning.
 */
static int fit_file_limit(int max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return max_connections;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)max_connections + FD_RESERVE)
        return max_connections;
    int fit = rl.rlim_cur > FD_RESERVE * 2 ? (int)(rl.rlim_cur - FD_RESERVE) : (int)rl.rlim_cur / 2;
    ss_log("warning", "file_limit",
           json_pack("{s:I,s:i,s:i}", "file_limit", (json_int_t)rl.rlim_cur, "max_connections", fit,
                     "asked", max_connections),
           "warning: the file limit (%llu) holds %d connections, not %d: --max-connections "
           "lowered (raise `ulimit -n` / LimitNOFILE)",
           (unsigned long long)rl.rlim_cur, fit, max_connections);
    return fit;
}

/*
 * Metrics, the API (not ready yet) and HTTP, so that /healthz answers 503 while the model loads.
 * Returns ss_metrics_new's, ss_api_new's or ss_http_start's error.
 */
static ss_err start_http(parts *d, const options *o)
{
    ss_err err;
    if ((err = ss_metrics_new(&d->metrics))) return err;
    ss_api_params ap = {.max_body = o->max_body,
                        .max_tokens = o->max_tokens,
                        .model_name = base_name(o->model, d->model_name, sizeof d->model_name),
                        .metrics = d->metrics,
                        .prefix_cache = o->prefix_cache,
                        .prefix_cache_budget = o->prefix_cache_budget,
                        .prefix_cache_every = o->prefix_cache_every,
                        .prefix_cache_tenant_share = o->prefix_cache_tenant_share,
                        .retrieval_key = o->retrieval_key};
    if ((err = ss_api_new(&d->api, &ap))) return err;
    int n_routes;
    const ss_host_route *routes = ss_api_routes(d->api, &n_routes);
    ss_http_params hp = {.host = o->host,
                         .port = o->port,
                         .threads = o->threads,
                         .max_body = o->max_body,
                         .api_keys = o->api_keys,
                         .log_requests = !o->quiet,
                         .routes = routes,
                         .n_routes = n_routes,
                         .app = d->api,
                         .metrics = d->metrics,
                         .max_connections = fit_file_limit(o->max_connections),
                         .max_per_ip = o->max_per_ip,
                         .idle_timeout = o->idle_timeout};
    ss_metrics_set_build(d->metrics, SS_VERSION, SS_GIT);
    if ((err = ss_http_start(&d->http, &hp))) return err;
    int port = ss_http_port(d->http);
    char url[300];
    snprintf(url, sizeof url, strchr(o->host, ':') ? "http://[%s]:%d" : "http://%s:%d", o->host,
             port);
    ss_log("info", "listening", json_pack("{s:s,s:i}", "url", url, "port", port),
           "listening on %s", url);
    return SS_OK;
}

/* Load the checkpoint and say what it is. Returns ss_model_open's error. */
static ss_err load_model(parts *d, const options *o)
{
    ss_model_params mp = ss_model_default_params();
    mp.n_threads = o->compute_threads;
    mp.f32_in_place = o->f32_in_place;
    mp.weights = o->weights_q8 ? SS_WEIGHTS_Q8 : SS_WEIGHTS_STORED;
    mp.progress = ss_progress_print;
    mp.progress_user = NULL; /* ss_progress_print: the log's program name and format */
    int64_t t0 = ss_mono_ns();
    ss_err err = ss_model_open(&d->model, o->model, &mp);
    if (err) return err;
    const ss_model_info *info = ss_model_get_info(d->model);
    const double ms = (double)(ss_mono_ns() - t0) / 1e6;
    ss_log("info", "model",
           json_pack("{s:s,s:s,s:i,s:i,s:i,s:I,s:s,s:s,s:I,s:s,s:f}", "path", o->model,
                     "architecture", info->architecture, "layers", info->n_layer, "d_model",
                     info->d_model, "vocab", info->vocab_size, "params",
                     (json_int_t)info->n_params, "dtype", info->dtype, "weights", info->weights,
                     "state_bytes", (json_int_t)info->state_bytes, "fingerprint",
                     info->fingerprint, "ms", ms),
           "model %s: %s, %d layers, d_model %d, vocab %d, %.1fM params, %s%s, state %zu bytes, "
           "fingerprint %s (%.0f ms)",
           o->model, info->architecture, info->n_layer, info->d_model, info->vocab_size,
           (double)info->n_params / 1e6, info->dtype,
           strcmp(info->weights, "q8") ? "" : " quantised to q8", info->state_bytes,
           info->fingerprint, ms);
    return SS_OK;
}

/*
 * The tokenizer: --tokenizer, else the model folder's tokenizer.json when there is one, else
 * none (token ids only). Returns ss_tokenizer_open's error, except SS_ERR_UNSUPPORTED for the
 * folder's own file, which only leaves the daemon without a tokenizer.
 */
static ss_err open_tokenizer(parts *d, const options *o)
{
    const char *tp = o->tokenizer;
    if (!tp) {
        snprintf(d->tok_path, sizeof d->tok_path, "%s/tokenizer.json", o->model);
        if (file_exists(d->tok_path)) tp = d->tok_path;
    }
    if (!tp) {
        ss_log("warning", "no_tokenizer", NULL,
               "no tokenizer: text requests will be refused (400), token ids work");
        return SS_OK;
    }
    ss_err err = ss_tokenizer_open(&d->tok, tp);
    if (err == SS_ERR_UNSUPPORTED && !o->tokenizer) {
        /* The checkpoint's own tokenizer is of a kind we do not implement (e.g. Mistral's
         * SentencePiece one beside Mamba-Codestral): serve token ids rather than nothing. */
        ss_log("warning", "no_tokenizer", json_pack("{s:s}", "path", tp),
               "%s: %s; continuing without a tokenizer: text requests will be refused (400), "
               "token ids work",
               tp, ss_errmsg());
        return SS_OK;
    }
    if (err) return err;
    const int ids = ss_tokenizer_vocab_size(d->tok);
    ss_log("info", "tokenizer", json_pack("{s:s,s:i}", "path", tp, "ids", ids),
           "tokenizer %s (%d ids)", tp, ids);
    return SS_OK;
}

/* The state catalog in --data (created if missing). SS_ERR_IO, or ss_store_open's error. */
static ss_err open_catalog(parts *d, const options *o)
{
    if (mkdir(o->data, 0755) != 0 && errno != EEXIST)
        return ss_fail(SS_ERR_IO, "cannot create %s: %s", o->data, strerror(errno));
    ss_store_params sp = ss_store_default_params();
    sp.max_map_size = o->store_max_bytes;
    if (o->store_max_bytes && o->store_max_bytes < sp.initial_map_size)
        sp.initial_map_size = o->store_max_bytes;
    sp.remote = o->remote;
    sp.remote_password = o->remote_password ? o->remote_password
                                            : getenv("STATESOUP_REMOTE_PASSWORD");
    sp.remote_prefix = o->remote_prefix;
    sp.remote_wait_replicas = o->remote_wait;
    sp.cache_max_bytes = o->cache_max_bytes;
    sp.remote_timeout_ms = o->remote_timeout_ms;
    sp.remote_retry_ms = o->remote_retry_ms;
    ss_err err = ss_store_open(&d->store, o->data, &sp);
    if (err) return err;
    ss_store_stats st;
    if (ss_store_get_stats(d->store, &st) == SS_OK)
        ss_log("info", "catalog", json_pack("{s:s,s:I}", "path", o->data, "states",
                                            (json_int_t)st.n_states),
               "catalog %s: %llu states", o->data, (unsigned long long)st.n_states);
    return SS_OK;
}

/* Start the engine and hand everything to the API, which becomes ready. */
static ss_err start_engine(parts *d, const options *o)
{
    ss_engine_params ep = ss_engine_default_params();
    ep.max_batch = o->max_batch;
    ep.max_queue = o->max_queue;
    ep.prefill_chunk = o->prefill_chunk;
    ep.prefill_share = o->prefill_share;
    ss_err err = ss_engine_open(&d->engine, d->model, &ep);
    if (err) return err;
    ss_api_attach(d->api, d->model, d->tok, d->store, d->engine);
    return SS_OK;
}

#define SHUTDOWN_POLL_MS 50 /* how often running jobs are looked at while they finish */

/* SIGHUP: read --api-keys again; a file that does not parse leaves the keys in use. */
static void reload_keys(parts *d)
{
    int n = 0;
    ss_err err = ss_http_reload_keys(d->http, &n);
    if (err)
        ss_log("warning", "keys_not_reloaded", json_pack("{s:s}", "code", ss_err_name(err)),
               "SIGHUP: the API keys were not reloaded (the ones in use stay): %s", ss_errmsg());
    else
        ss_log("info", "keys_reloaded", json_pack("{s:i}", "keys", n),
               "SIGHUP: %d API keys reloaded", n);
    ss_err_clear();
}

/* Serve until SIGINT/SIGTERM (SIGHUP reloads the keys); then stop accepting and give running
 * jobs up to timeout_s. */
static void serve(parts *d, int timeout_s)
{
    unsigned char sig = 0;
    for (;;) {
        if (read(sig_pipe[0], &sig, 1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (sig != SIGHUP) break;
        reload_keys(d);
    }
    ss_log("info", "shutting_down",
           json_pack("{s:s,s:i}", "signal", strsignal(sig), "timeout_s", timeout_s),
           "%s: shutting down (no new connections; queued jobs cancelled; running jobs get %d s)",
           strsignal(sig), timeout_s);
    ss_http_quiesce(d->http);
    ss_engine_drain(d->engine);
    for (int i = 0; i < timeout_s * (1000 / SHUTDOWN_POLL_MS); i++) {
        ss_engine_stats es;
        ss_engine_get_stats(d->engine, &es);
        if (es.queued == 0 && es.running == 0) break;
        struct timespec ts = {0, SHUTDOWN_POLL_MS * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/*
 * Close everything that was opened, in the order that lets every request finish cleanly: detach
 * and close the engine (cancels what is left and wakes every parked request), let the answers
 * out, stop HTTP, then the rest.
 */
static void shut_down(parts *d)
{
    if (d->api) ss_api_detach_engine(d->api);
    ss_engine_close(d->engine);
    if (d->http && !ss_http_drain(d->http, 5000))
        ss_log("warning", "clients_slow", NULL,
               "some clients did not take their answers; closing");
    ss_http_stop(d->http);
    ss_store_close(d->store);
    ss_tokenizer_close(d->tok);
    ss_model_close(d->model);
    ss_api_free(d->api);
    ss_metrics_free(d->metrics);
}

/*
 * The heap of a long-running daemon whose requests take and free buffers of megabytes (a state's
 * blob, LMDB's overflow pages for a saved value, an export's file). glibc gives each thread an
 * arena of its own and serves a request above its dynamic mmap threshold with a fresh mapping, so
 * a save or an export of a 130m state touched ~760 fresh pages on about half the requests (minor
 * faults at ~11 us a page on the development VM: a save took 22-33 ms then, 11-19 without), and
 * each thread's arena kept its own high-water mark. One arena, fixed thresholds: fresh mappings
 * only above 32 MB, up to 64 MB free at the heap's top kept for the next request (docs/load.md).
 * The compute threads allocate nothing per token, so the one arena's lock is the HTTP threads'
 * alone. GLIBC_TUNABLES naming a glibc.malloc setting leaves glibc's defaults to the operator.
 */
static void heap_policy(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if (t && strstr(t, "glibc.malloc.")) return;
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

int main(int argc, char **argv)
{
    heap_policy();
    ss_blas_ensure_kernels(argv);
    options o;
    static parts d; /* static: two 4 KiB path buffers */
    if (!parse_args(argc, argv, &o)) return 2;
    if (!signals_init()) return 1;
    ss_log_init("statesoupd", o.log_json);
    ss_log("info", "start",
           json_pack("{s:s,s:s,s:s}", "version", SS_VERSION, "git", SS_GIT, "openblas_core",
                     ss_blas_core_name()),
           "version %s (git %s), OpenBLAS core %s", SS_VERSION, SS_GIT, ss_blas_core_name());
    ss_err err = start_http(&d, &o);
    if (!err) err = load_model(&d, &o);
    if (!err) err = open_tokenizer(&d, &o);
    if (!err) err = open_catalog(&d, &o);
    if (!err) err = start_engine(&d, &o);
    if (!err) {
        loaded = 1;
        ss_log("info", "ready", NULL, "ready");
        serve(&d, o.shutdown_timeout);
    } else {
        ss_log("error", "failed", json_pack("{s:s}", "code", ss_err_name(err)), "%s", ss_errmsg());
    }
    shut_down(&d);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    if (!err) ss_log("info", "stopped", NULL, "stopped");
    return err ? 1 : 0;
}
