/*
 * dproc.h - statesoupd as a child process, for the programs that drive the real daemon over
 * HTTP: statesoup-load (bench/) and the integration tests (tests/daemon.h).
 *
 * Start it with its stderr drained by a thread into a log, and wait until its own lines say where
 * it listens ("listening on http://127.0.0.1:PORT") and that it is "ready": never on a clock
 * alone. Then reap it. Linux only (prctl for die_with_parent).
 */
#ifndef SS_DPROC_H
#define SS_DPROC_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ss_dproc {
    pid_t pid;     /* 0 when not running (never started, or reaped) */
    int status;    /* the wait status once reaped (-1: killed after the limit) */
    int port;      /* from its "listening on" line */
    char base[64]; /* "http://127.0.0.1:PORT" once started */
    int fd;        /* read end of its stderr */
    pthread_t th;  /* the thread draining fd into log */
    /* mu guards what follows; cv is broadcast after each chunk of the log and at its end */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *log;   /* its stderr so far, NUL-terminated: all of it, or its last `keep` bytes */
    size_t len;  /* bytes in log */
    size_t cap;  /* bytes allocated */
    size_t keep; /* 0: keep the whole log */
    int listening, ready, eof;
} ss_dproc;

typedef struct ss_dproc_opts {
    int timeout_s;       /* give up when it is not ready after this long */
    int quiet_stdout;    /* its stdout to /dev/null */
    int die_with_parent; /* SIGKILL it when this process dies */
} ss_dproc_opts;

/* Zero d, keeping `keep` bytes of log at most (0: all), and create its lock. Once per d. */
void ss_dproc_init(ss_dproc *d, size_t keep);

/*
 * Run argv (argv[0] the executable, NULL-terminated) and wait for it to be listening and ready.
 * 0 on success. -1 when it could not be started, exited first or was not ready in time: then it is
 * killed and reaped, and d->log holds what it said. d must be initialised and not running; it may
 * be started again after ss_dproc_reap (the log starts afresh).
 */
int ss_dproc_start(ss_dproc *d, const char *const *argv, const ss_dproc_opts *o);

/*
 * Wait for it to exit (signal it first if you want it to) and for its log to end: without a limit
 * when limit_s <= 0, else SIGKILL after limit_s seconds. Returns the wait status, or -1 when it
 * had to be killed. Once reaped (also by a failed ss_dproc_start), it returns that status again.
 */
int ss_dproc_reap(ss_dproc *d, double limit_s);

/* Whether it has exited on its own; when it has, it is reaped (*status: the wait status). */
int ss_dproc_exited(ss_dproc *d, int *status);

/* Free the log and the lock. d must not be running. */
void ss_dproc_free(ss_dproc *d);

#endif
