/*
 * load_idle.h - idle connections for statesoup-load --idle (bench/load_idle.c).
 */
#ifndef SS_LOAD_IDLE_H
#define SS_LOAD_IDLE_H

#include <stddef.h>

/*
 * Open n TCP connections to the host and port of url (http://HOST:PORT) and send nothing. Raises
 * this process's open-file limit to its hard maximum first. Returns how many opened (*fds_out:
 * malloc'd array of them); when fewer than n, why says what stopped it. -1 when url is bad.
 */
int ss_load_idle_open(const char *url, int n, int **fds_out, char *why, size_t cap);
/* How many of the n connections the server has not closed (no EOF or reset pending). */
int ss_load_idle_alive(const int *fds, int n);
/* Close them and free the array (NULL is a no-op). */
void ss_load_idle_close(int *fds, int n);

#endif
