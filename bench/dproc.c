/*
 * dproc.c - statesoupd as a child process (see dproc.h).
 *
 * The drain thread owns the read end of the daemon's stderr until it sees EOF: every chunk is
 * appended to the log under mu (dropping the head when a tail is all we keep) and cv is
 * broadcast, so that callers wait on what the daemon says, not on a clock.
 */
#include "dproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LISTENING "listening on http://127.0.0.1:"

void ss_dproc_init(ss_dproc *d, size_t keep)
{
    memset(d, 0, sizeof *d);
    d->keep = keep;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
}

/* Append n bytes to the log (mu held); when memory runs out the chunk is lost, not the log. */
static void log_append(ss_dproc *d, const char *buf, size_t n)
{
    if (d->keep && n > d->keep) {
        buf += n - d->keep;
        n = d->keep;
    }
    if (d->keep && d->len + n > d->keep) { /* keep the tail */
        size_t drop = d->len + n - d->keep;
        memmove(d->log, d->log + drop, d->len - drop);
        d->len -= drop;
    }
    if (d->len + n + 1 > d->cap) {
        size_t cap = (d->len + n + 1) * 2;
        char *p = realloc(d->log, cap);
        if (!p) return;
        d->log = p;
        d->cap = cap;
    }
    memcpy(d->log + d->len, buf, n);
    d->len += n;
    d->log[d->len] = '\0';
}

static void *drain(void *arg)
{
    ss_dproc *d = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = read(d->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        pthread_mutex_lock(&d->mu);
        if (n <= 0) {
            d->eof = 1;
            pthread_cond_broadcast(&d->cv);
            pthread_mutex_unlock(&d->mu);
            break;
        }
        log_append(d, buf, (size_t)n);
        const char *l = d->log ? strstr(d->log, LISTENING) : NULL;
        if (!d->listening && l) {
            d->port = atoi(l + strlen(LISTENING));
            d->listening = d->port > 0;
        }
        /* the ready line, text or (--log-format json) {"...","event":"ready",...} */
        if (d->log &&
            (strstr(d->log, "statesoupd: ready\n") || strstr(d->log, "\"event\":\"ready\"")))
            d->ready = 1;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
    }
    return NULL;
}

/* The child's side of the fork: never returns. */
static void child(const char *const *argv, const ss_dproc_opts *o, pid_t parent, int p[2])
{
    if (o->die_with_parent) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127); /* the parent died before prctl */
    }
    dup2(p[1], 2);
    if (o->quiet_stdout) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
    }
    close(p[0]);
    close(p[1]);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int ss_dproc_start(ss_dproc *d, const char *const *argv, const ss_dproc_opts *o)
{
    int p[2];
    pthread_mutex_lock(&d->mu);
    d->len = 0;
    if (d->log) d->log[0] = '\0';
    d->port = d->listening = d->ready = d->eof = 0;
    d->base[0] = '\0';
    pthread_mutex_unlock(&d->mu);
    if (pipe(p) != 0) return -1;
    pid_t parent = getpid();
    d->pid = fork();
    if (d->pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (d->pid == 0) child(argv, o, parent, p);
    close(p[1]);
    d->fd = p[0];
    pthread_create(&d->th, NULL, drain, d);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += o->timeout_s;
    pthread_mutex_lock(&d->mu);
    while (!(d->ready && d->listening) && !d->eof)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &until) == ETIMEDOUT) break;
    int ok = d->ready && d->listening;
    pthread_mutex_unlock(&d->mu);
    if (!ok) {
        kill(d->pid, SIGKILL);
        ss_dproc_reap(d, 0);
        return -1;
    }
    snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", d->port);
    return 0;
}

/* After the wait: the drain thread ends with the pipe. */
static void reaped(ss_dproc *d, int status)
{
    d->status = status;
    pthread_join(d->th, NULL);
    close(d->fd);
    d->fd = -1;
    d->pid = 0;
}

int ss_dproc_reap(ss_dproc *d, double limit_s)
{
    int status = 0;
    if (!d->pid) return d->status;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t w = waitpid(d->pid, &status, limit_s > 0 ? WNOHANG : 0);
        if (w == d->pid || (w < 0 && errno != EINTR)) break;
        if (w == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            double s = (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
            if (s > limit_s) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, &status, 0);
                status = -1;
                break;
            }
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        }
    }
    reaped(d, status);
    return status;
}

int ss_dproc_exited(ss_dproc *d, int *status)
{
    if (!d->pid || waitpid(d->pid, status, WNOHANG) != d->pid) return 0;
    reaped(d, *status);
    return 1;
}

void ss_dproc_free(ss_dproc *d)
{
    free(d->log);
    d->log = NULL;
    d->len = d->cap = 0;
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
}
