/*
 * log.c - the program's own stderr lines, text or JSON (ss_log.h).
 */
#include "ss_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *log_prog = "statesoup";
static int log_as_json;

void ss_log_init(const char *prog, int json)
{
    if (prog) log_prog = prog;
    log_as_json = json;
}

int ss_log_json(void)
{
    return log_as_json;
}

const char *ss_log_prog(void)
{
    return log_prog;
}

void ss_log_time(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* o as one compact line, its keys in the order they were set; o's reference is released. */
static void put_json(json_t *o)
{
    const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6);
    char *line = o ? json_dumps(o, flags) : NULL;
    if (line) fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(o);
}

void ss_log(const char *level, const char *event, json_t *kv, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!log_as_json) {
        fprintf(stderr, "%s: %s\n", log_prog, msg);
        json_decref(kv);
        return;
    }
    char t[40];
    ss_log_time(t, sizeof t);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "time", t, "level", level, "event", event,
                          "message", msg);
    if (o && kv) json_object_update_missing(o, kv);
    json_decref(kv);
    put_json(o);
}

void ss_log_stamped(json_t *kv, const char *text)
{
    char t[40];
    ss_log_time(t, sizeof t);
    if (!log_as_json) {
        fprintf(stderr, "%s %s\n", t, text);
        json_decref(kv);
        return;
    }
    json_t *o = json_pack("{s:s}", "time", t);
    if (o && kv) json_object_update(o, kv);
    json_decref(kv);
    put_json(o);
}
