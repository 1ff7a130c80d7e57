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
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "http.h"
#include "metrics.h"
#include "ss_api.h"
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
    int huge_pages;
    const char *api_keys;
    size_t max_body;
    int max_tokens;
    int max_batch;
    int max_queue;
    int prefill_chunk;
    double prefill_share;
    size_t store_max_bytes;
    int quiet;
    int shutdown_timeout;
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
        "  --huge-pages          copy the weights onto transparent huge pages at load: ~10 %%\n"
        "                        faster decoding; the load briefly needs twice the weights'\n"
        "                        memory (default: weights used straight from the mmapped file)\n"
        "  --api-keys FILE       require \"Authorization: Bearer KEY\"; the file has lines\n"
        "                        \"KEY read\" or \"KEY write\" (read keys cannot create, merge,\n"
        "                        import or delete states). Default: no auth.\n"
        "  --max-body BYTES      largest request body accepted, else 413 (default: 64M;\n"
        "                        suffixes K, M, G)\n"
        "  --max-tokens N        most tokens one request may generate (default: 4096)\n"
        "  --max-batch N         most sequences the engine runs together (default: 16)\n"
        "  --max-queue N         most jobs waiting for the engine; beyond, 503 (default: 256)\n"
        "  --prefill-chunk N     prompt tokens per engine step (default: 256)\n"
        "  --prefill-share F     while streams decode, the share (0..1] of step time that\n"
        "                        prompts may take; prompts share it in turn (default: 0.4)\n"
        "  --store-max-bytes B   cap on the catalog's size, then 507 (default: the disk)\n"
        "  --shutdown-timeout S  on SIGINT/SIGTERM, seconds to let running jobs finish\n"
        "                        before cancelling them (default: 10)\n"
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

static int parse_args(int argc, char **argv, options *o)
{
    enum {
        O_MODEL = 256,
        O_TOK,
        O_DATA,
        O_LISTEN,
        O_THREADS,
        O_CTHREADS,
        O_HUGE,
        O_KEYS,
        O_MAXBODY,
        O_MAXTOK,
        O_BATCH,
        O_QUEUE,
        O_CHUNK,
        O_SHARE,
        O_STOREMAX,
        O_SHUTDOWN,
        O_QUIET,
    };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"tokenizer", required_argument, NULL, O_TOK},
        {"data", required_argument, NULL, O_DATA},
        {"listen", required_argument, NULL, O_LISTEN},
        {"threads", required_argument, NULL, O_THREADS},
        {"compute-threads", required_argument, NULL, O_CTHREADS},
        {"huge-pages", no_argument, NULL, O_HUGE},
        {"api-keys", required_argument, NULL, O_KEYS},
        {"max-body", required_argument, NULL, O_MAXBODY},
        {"max-tokens", required_argument, NULL, O_MAXTOK},
        {"max-batch", required_argument, NULL, O_BATCH},
        {"max-queue", required_argument, NULL, O_QUEUE},
        {"prefill-chunk", required_argument, NULL, O_CHUNK},
        {"prefill-share", required_argument, NULL, O_SHARE},
        {"store-max-bytes", required_argument, NULL, O_STOREMAX},
        {"shutdown-timeout", required_argument, NULL, O_SHUTDOWN},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (options){.model = "models/demo-mamba1",
                   .data = "./data",
                   .host = "127.0.0.1",
                   .port = 8080,
                   .threads = 4,
                   .max_body = 64u << 20,
                   .max_tokens = 4096,
                   .max_batch = 16,
                   .max_queue = 256,
                   .prefill_chunk = 256,
                   .prefill_share = 0.4,
                   .shutdown_timeout = 10};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int ok = 1;
        switch (c) {
        case O_MODEL: o->model = optarg; break;
        case O_TOK: o->tokenizer = optarg; break;
        case O_DATA: o->data = optarg; break;
        case O_LISTEN: ok = parse_listen(optarg, o); break;
        case O_THREADS: ok = parse_int(optarg, 1, 1024, &o->threads); break;
        case O_CTHREADS: ok = parse_int(optarg, 0, 1024, &o->compute_threads); break;
        case O_HUGE: o->huge_pages = 1; break;
        case O_KEYS: o->api_keys = optarg; break;
        case O_MAXBODY: ok = (o->max_body = parse_size(optarg)) > 0; break;
        case O_MAXTOK: ok = parse_int(optarg, 1, 1 << 20, &o->max_tokens); break;
        case O_BATCH: ok = parse_int(optarg, 1, 64, &o->max_batch); break;
        case O_QUEUE: ok = parse_int(optarg, 1, 1 << 20, &o->max_queue); break;
        case O_CHUNK: ok = parse_int(optarg, 1, 1 << 20, &o->prefill_chunk); break;
        case O_SHARE: ok = parse_fraction(optarg, &o->prefill_share); break;
        case O_STOREMAX: ok = (o->store_max_bytes = parse_size(optarg)) > 0; break;
        case O_SHUTDOWN: ok = parse_int(optarg, 0, 3600, &o->shutdown_timeout); break;
        case O_QUIET: o->quiet = 1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return 0;
        }
        if (!ok) {
            fprintf(stderr, "statesoupd: bad value for --%s: '%s'\n", longopts[c - O_MODEL].name,
                    optarg);
            return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "statesoupd: unexpected argument '%s' (see --help)\n", argv[optind]);
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

int main(int argc, char **argv)
{
    ss_blas_ensure_kernels(argv);
    int rc = 1;
    options o;
    ss_metrics *metrics = NULL;
    ss_api *api = NULL;
    ss_http *http = NULL;
    ss_model *model = NULL;
    ss_tokenizer *tok = NULL;
    ss_store *store = NULL;
    ss_engine *engine = NULL;
    ss_err err;
    char tok_path[4096], name_buf[4096];
    if (!parse_args(argc, argv, &o)) return 2;

    if (pipe(sig_pipe) != 0) {
        fprintf(stderr, "statesoupd: pipe: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    fprintf(stderr, "statesoupd %s: OpenBLAS core %s\n", "0.1.0", ss_blas_core_name());
    if ((err = ss_metrics_new(&metrics))) goto fail;
    ss_api_params ap = {.max_body = o.max_body,
                        .max_tokens = o.max_tokens,
                        .model_name = base_name(o.model, name_buf, sizeof name_buf),
                        .metrics = metrics};
    if ((err = ss_api_new(&api, &ap))) goto fail;
    int n_routes;
    const ss_http_route *routes = ss_api_routes(api, &n_routes);
    ss_http_params hp = {.host = o.host,
                         .port = o.port,
                         .threads = o.threads,
                         .max_body = o.max_body,
                         .api_keys = o.api_keys,
                         .log_requests = !o.quiet,
                         .routes = routes,
                         .n_routes = n_routes,
                         .app = api,
                         .metrics = metrics};
    if ((err = ss_http_start(&http, &hp))) goto fail;
    int port = ss_http_port(http);
    if (strchr(o.host, ':'))
        fprintf(stderr, "statesoupd: listening on http://[%s]:%d\n", o.host, port);
    else
        fprintf(stderr, "statesoupd: listening on http://%s:%d\n", o.host, port);

    ss_model_params mp = ss_model_default_params();
    mp.n_threads = o.compute_threads;
    mp.huge_pages = o.huge_pages;
    mp.progress = ss_progress_print;
    mp.progress_user = (void *)"statesoupd: ";
    int64_t t0 = ss_mono_ns();
    if ((err = ss_model_open(&model, o.model, &mp))) goto fail;
    const ss_model_info *info = ss_model_get_info(model);
    fprintf(stderr,
            "statesoupd: model %s: %s, %d layers, d_model %d, vocab %d, %.1fM params, %s, state "
            "%zu bytes, fingerprint %s (%.0f ms)\n",
            o.model, info->architecture, info->n_layer, info->d_model, info->vocab_size,
            (double)info->n_params / 1e6, info->dtype, info->state_bytes, info->fingerprint,
            (double)(ss_mono_ns() - t0) / 1e6);

    const char *tp = o.tokenizer;
    if (!tp) {
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o.model);
        if (file_exists(tok_path)) tp = tok_path;
    }
    if (tp) {
        err = ss_tokenizer_open(&tok, tp);
        if (err == SS_ERR_UNSUPPORTED && !o.tokenizer) {
            /* The checkpoint's own tokenizer is of a kind we do not implement (e.g. Mistral's
             * SentencePiece one beside Mamba-Codestral): serve token ids rather than nothing. */
            fprintf(stderr, "statesoupd: %s: %s; continuing without a tokenizer: text requests "
                            "will be refused (400), token ids work\n", tp, ss_errmsg());
            err = SS_OK;
        } else if (err) {
            goto fail;
        } else {
            fprintf(stderr, "statesoupd: tokenizer %s (%d ids)\n", tp,
                    ss_tokenizer_vocab_size(tok));
        }
    } else {
        fprintf(stderr, "statesoupd: no tokenizer: text requests will be refused (400), token "
                        "ids work\n");
    }

    if (mkdir(o.data, 0755) != 0 && errno != EEXIST) {
        err = ss_fail(SS_ERR_IO, "cannot create %s: %s", o.data, strerror(errno));
        goto fail;
    }
    ss_store_params sp = ss_store_default_params();
    sp.max_map_size = o.store_max_bytes;
    if (o.store_max_bytes && o.store_max_bytes < sp.initial_map_size)
        sp.initial_map_size = o.store_max_bytes;
    if ((err = ss_store_open(&store, o.data, &sp))) goto fail;
    ss_store_stats st;
    if (ss_store_get_stats(store, &st) == SS_OK)
        fprintf(stderr, "statesoupd: catalog %s: %llu states\n", o.data,
                (unsigned long long)st.n_states);

    ss_engine_params ep = ss_engine_default_params();
    ep.max_batch = o.max_batch;
    ep.max_queue = o.max_queue;
    ep.prefill_chunk = o.prefill_chunk;
    ep.prefill_share = o.prefill_share;
    if ((err = ss_engine_open(&engine, model, &ep))) goto fail;
    ss_api_attach(api, model, tok, store, engine);
    loaded = 1;
    fprintf(stderr, "statesoupd: ready\n");

    unsigned char sig = 0;
    while (read(sig_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    fprintf(stderr, "statesoupd: %s: shutting down\n", strsignal(sig));

    /* Stop accepting; give running jobs a moment to finish, then cancel the rest. */
    ss_http_quiesce(http);
    for (int i = 0; i < o.shutdown_timeout * 20; i++) {
        ss_engine_stats es;
        ss_engine_get_stats(engine, &es);
        if (es.queued == 0 && es.running == 0) break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "statesoupd: %s\n", ss_errmsg());
    (void)err;
out:
    if (api) ss_api_detach_engine(api);
    ss_engine_close(engine); /* cancels what is left; every parked request is woken */
    if (http && !ss_http_drain(http, 5000))
        fprintf(stderr, "statesoupd: some clients did not take their answers; closing\n");
    ss_http_stop(http);
    ss_store_close(store);
    ss_tokenizer_close(tok);
    ss_model_close(model);
    ss_api_free(api);
    ss_metrics_free(metrics);
    if (sig_pipe[0] >= 0) {
        close(sig_pipe[0]);
        close(sig_pipe[1]);
    }
    if (rc == 0) fprintf(stderr, "statesoupd: stopped\n");
    return rc;
}
