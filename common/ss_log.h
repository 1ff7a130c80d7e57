/*
 * ss_log.h - a program's own lines on stderr (what it is doing, warnings, errors): text,
 * "<prog>: <message>", or with --log-format json one JSON object a line, so that a log shipper
 * reading the daemon's stderr parses every line, not only the request lines:
 *   {"time":"2026-12-06T18:20:00.123Z","level":"info","event":"ready","message":"ready"}
 * plus the fields the caller adds (a port, a path, a count). Thread-safe: one fprintf a line.
 */
#ifndef SS_LOG_H
#define SS_LOG_H

#include <jansson.h>
#include <stddef.h>

/* The program's name in text lines (default "statesoup") and the format (default text). Call
 * once at start, before other threads log. */
void ss_log_init(const char *prog, int json);
int ss_log_json(void);
const char *ss_log_prog(void);

/* Now as 2026-12-04T04:12:00.123Z (UTC, milliseconds) into out (at least 32 bytes). */
void ss_log_time(char *out, size_t cap);

/*
 * One line. level: "info", "warning" or "error"; event: a short stable name a query can select
 * on ("listening", "model", "ready", ...); kv: extra fields for the JSON object (a reference is
 * taken over; NULL for none; text lines leave them out: say them in the message too); fmt: the
 * message, as printf.
 */
void ss_log(const char *level, const char *event, json_t *kv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * A line whose text form starts with the time (the HTTP request and transport lines):
 * "<time> <text>", or kv with "time" first as JSON. kv: a reference is taken over.
 */
void ss_log_stamped(json_t *kv, const char *text);

#endif
