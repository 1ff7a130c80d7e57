/*
 * buf.c - ss_grow, the project's one growable array (see ss_buf.h).
 */
#include "ss_buf.h"

#include <stdint.h>
#include <stdlib.h>

ss_err ss_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return SS_OK;
    size_t nc = *cap > SS_GROW_FIRST ? *cap : SS_GROW_FIRST;
    while (nc < need) nc = nc > SIZE_MAX / 2 ? need : nc * 2;
    if (elem && nc > SIZE_MAX / elem)
        return ss_fail(SS_ERR_NOMEM, "out of memory (%zu items)", need);
    size_t bytes = nc * elem;
    void *np = realloc(*p, bytes ? bytes : 1);
    if (!np) return ss_fail(SS_ERR_NOMEM, "out of memory");
    *p = np;
    *cap = nc;
    return SS_OK;
}
