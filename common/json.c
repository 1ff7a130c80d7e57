/*
 * json.c - file reading, JSON as HF writes it (bare Infinity/NaN), clocks and randomness.
 */
#include "ss_util.h"
#include "ss_log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ss_err ss_read_file(const char *path, size_t max_bytes, char **buf, size_t *len)
{
    ss_err err = SS_OK;
    char *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        return ss_fail(errno == ENOENT ? SS_ERR_NOT_FOUND : SS_ERR_IO, "%s: %s", path,
                       strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        err = ss_fail(SS_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        err = ss_fail(SS_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        err = ss_fail(SS_ERR_TOO_LARGE, "%s: %lld bytes, more than the limit of %zu", path,
                      (long long)st.st_size, max_bytes);
        goto out;
    }
    size_t n = (size_t)st.st_size;
    data = malloc(n + 1);
    if (!data) {
        err = ss_fail(SS_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
        goto out;
    }
    if (n && fread(data, 1, n, f) != n) {
        err = ss_fail(SS_ERR_IO, "%s: short read", path);
        goto out;
    }
    data[n] = '\0';
    *buf = data;
    data = NULL;
    if (len) *len = n;
out:
    free(data);
    fclose(f);
    return err;
}

/* Copy text, quoting bare Infinity / -Infinity / NaN tokens that stand outside strings. */
static char *quote_nonfinite(const char *text, size_t len, size_t *out_len)
{
    /* Worst case every byte starts "NaN" -> 5 bytes per 3: 2x is plenty. */
    char *out = malloc(2 * len + 1);
    if (!out) return NULL;
    size_t o = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\' && i + 1 < len) out[o++] = text[++i];
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
            out[o++] = c;
            continue;
        }
        static const char *const words[] = {"-Infinity", "Infinity", "NaN"};
        int done = 0;
        for (size_t w = 0; w < 3 && !done; w++) {
            size_t wl = strlen(words[w]);
            if (len - i >= wl && memcmp(text + i, words[w], wl) == 0) {
                out[o++] = '"';
                memcpy(out + o, words[w], wl);
                o += wl;
                out[o++] = '"';
                i += wl - 1;
                done = 1;
            }
        }
        if (!done) out[o++] = c;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

ss_err ss_json_parse_relaxed(const char *text, size_t len, const char *what, json_t **out)
{
    size_t qlen = 0;
    char *q = quote_nonfinite(text, len, &qlen);
    if (!q) return ss_fail(SS_ERR_NOMEM, "%s: out of memory", what);
    json_error_t je;
    json_t *root = json_loadb(q, qlen, JSON_REJECT_DUPLICATES, &je);
    free(q);
    if (!root) {
        return ss_fail(SS_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", what, je.line,
                       je.column, je.text);
    }
    *out = root;
    return SS_OK;
}

int ss_json_is_number(const json_t *v)
{
    if (json_is_number(v)) return 1;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        return !strcmp(s, "Infinity") || !strcmp(s, "-Infinity") || !strcmp(s, "NaN");
    }
    return 0;
}

double ss_json_real(const json_t *v, double dflt)
{
    if (json_is_number(v)) return json_number_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcmp(s, "Infinity")) return INFINITY;
        if (!strcmp(s, "-Infinity")) return -INFINITY;
        if (!strcmp(s, "NaN")) return NAN;
    }
    return dflt;
}

int64_t ss_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t ss_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

ss_err ss_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return ss_fail(SS_ERR_IO, "getrandom: %s", strerror(errno));
        }
        p += r;
        n -= (size_t)r;
    }
    return SS_OK;
}

void ss_hex(const void *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void ss_progress_print(void *prefix, const char *phase, uint64_t done, uint64_t total)
{
    static int last = -1;
    static char finished[32]; /* the last phase reported complete: once is enough */
    /* no prefix: the log's program name (ss_log.h), "statesoupd: " */
    const char *pre = prefix ? prefix : ss_log_prog(), *sep = prefix ? "" : ": ";
    int pct = total ? (int)(100 * done / total) : 100;
    if (done >= total && strcmp(finished, phase) == 0) return;
    if (pct == last && done < total) return;
    last = pct;
    if (done >= total) snprintf(finished, sizeof finished, "%s", phase);
    if (!prefix && ss_log_json()) {
        /* one JSON line per phase done (--log-format json) */
        if (done >= total)
            ss_log("info", "loading", json_pack("{s:s}", "phase", phase), "loading model: %s done",
                   phase);
    } else if (isatty(STDERR_FILENO)) {
        fprintf(stderr, "\r%s%sloading model: %s %3d%%%s", pre, sep, phase, pct,
                done >= total ? "\n" : "");
    } else if (done >= total) {
        /* a log file gets one line per phase, not a carriage-return animation */
        fprintf(stderr, "%s%sloading model: %s done\n", pre, sep, phase);
    }
}
