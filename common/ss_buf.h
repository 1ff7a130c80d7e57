/*
 * ss_buf.h - the one growable array of the project: room for `need` items in a malloc'd array,
 * grown geometrically (amortised O(1) appends) with the size arithmetic checked for overflow.
 * Internal to the project; every module that appends to a buffer uses this instead of its own
 * realloc-doubling loop.
 */
#ifndef SS_BUF_H
#define SS_BUF_H

#include <stddef.h>

#include "ss_err.h"

/* Capacity of an array's first allocation, in items, unless more are needed at once. */
#define SS_GROW_FIRST 16

/*
 * Make *p (an array of *cap items of elem bytes, or NULL with *cap == 0) hold at least need items:
 * nothing when it already does, else the capacity doubles from max(*cap, SS_GROW_FIRST) until it
 * is enough and the array is realloc'd; the contents are kept. Returns SS_OK, or SS_ERR_NOMEM
 * (out of memory, or need * elem beyond SIZE_MAX) with *p and *cap unchanged. `p` is the address
 * of the array pointer cast to void ** (the project's arrays are plain object pointers).
 */
ss_err ss_grow(void **p, size_t *cap, size_t need, size_t elem);

#endif
