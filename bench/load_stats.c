/*
 * load_stats.c - percentiles and the loopback check of statesoup-load (see load_stats.h). Kept
 * apart from the tool so tests/test_load.c can check them against hand-computed values.
 */
#include "load_stats.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

double ss_load_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0 || !(p >= 0 && p <= 100)) return NAN;
    /* nearest rank: rank = ceil(p / 100 * n), 1-based; rank 0 (p = 0) means the first value */
    double r = ceil(p / 100.0 * (double)n);
    size_t rank = r < 1 ? 1 : (size_t)r;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void ss_load_sort(double *v, size_t n)
{
    if (n > 1) qsort(v, n, sizeof *v, cmp_double);
}

/* A dotted quad "a.b.c.d" (each 0..255, no empty part) whose first byte is 127. */
static int ipv4_loopback(const char *h, size_t n)
{
    int part = 0, digits = 0, val = 0, first = -1;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || h[i] == '.') {
            if (digits == 0) return 0;
            if (part == 0) first = val;
            part++;
            digits = val = 0;
            continue;
        }
        if (!isdigit((unsigned char)h[i]) || ++digits > 3) return 0;
        val = val * 10 + (h[i] - '0');
        if (val > 255) return 0;
    }
    return part == 4 && first == 127;
}

int ss_load_url_loopback(const char *url)
{
    if (!url || strncasecmp(url, "http://", 7) != 0) return 0;
    const char *h = url + 7;
    size_t auth = strcspn(h, "/?#"); /* the authority: host[:port] */
    if (memchr(h, '@', auth)) return 0;
    size_t hn;
    const char *rest;
    if (*h == '[') {
        const char *close = memchr(h, ']', auth);
        if (!close) return 0;
        if ((size_t)(close - h) != 4 || strncmp(h, "[::1]", 5) != 0) return 0;
        rest = close + 1;
        hn = 0;
    } else {
        hn = strcspn(h, ":/?#");
        if (hn > auth) hn = auth;
        rest = h + hn;
        if (!((hn == 9 && !strncasecmp(h, "localhost", 9)) || ipv4_loopback(h, hn))) return 0;
    }
    /* what follows the host within the authority: nothing, or ":digits" */
    size_t left = auth - (size_t)(rest - h);
    if (left == 0) return 1;
    if (*rest != ':' || left < 2 || left > 6) return 0;
    for (size_t i = 1; i < left; i++)
        if (!isdigit((unsigned char)rest[i])) return 0;
    return 1;
}
