/*
 * load_idle.c - statesoup-load --idle N: hold N idle connections open on the target (a client
 * that connects and never sends a byte, as a flood of stalled clients does) and measure
 * /healthz on fresh connections meanwhile.
 */
#include "load_idle.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* host and port of "http://HOST:PORT[/...]" ("[::1]" without brackets); 0 on success. */
static int split_url(const char *url, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *hend, *colon;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend) return -1;
        snprintf(host, hcap, "%.*s", (int)(hend - p - 1), p + 1);
        colon = hend[1] == ':' ? hend + 1 : NULL;
    } else {
        colon = strchr(p, ':');
        hend = colon ? colon : p + strcspn(p, "/");
        snprintf(host, hcap, "%.*s", (int)(hend - p), p);
    }
    if (colon)
        snprintf(port, pcap, "%.*s", (int)strcspn(colon + 1, "/"), colon + 1);
    else
        snprintf(port, pcap, "80");
    return 0;
}

int ss_load_idle_open(const char *url, int n, int **fds_out, char *why, size_t cap)
{
    char host[256], port[16];
    *fds_out = NULL;
    if (split_url(url, host, sizeof host, port, sizeof port)) {
        snprintf(why, cap, "cannot parse %s", url);
        return -1;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* each idle connection is a descriptor here too */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) {
        snprintf(why, cap, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int *fds = malloc((size_t)(n > 0 ? n : 1) * sizeof *fds);
    int opened = 0;
    why[0] = '\0';
    for (int i = 0; fds && i < n; i++) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            snprintf(why, cap, "connection %d: %s", i + 1, strerror(errno));
            if (fd >= 0) close(fd);
            break;
        }
        fds[opened++] = fd;
    }
    freeaddrinfo(ai);
    *fds_out = fds;
    return opened;
}

int ss_load_idle_alive(const int *fds, int n)
{
    int alive = 0;
    for (int i = 0; i < n; i++) {
        char c;
        ssize_t r = recv(fds[i], &c, 1, MSG_PEEK | MSG_DONTWAIT);
        alive += r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return alive;
}

void ss_load_idle_close(int *fds, int n)
{
    for (int i = 0; fds && i < n; i++) close(fds[i]);
    free(fds);
}
