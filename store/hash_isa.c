/*
 * hash_isa.c - xxHash's header-only XXH3-64, compiled once per ISA (see hash.h). meson builds
 * this file twice, with -mavx2 and with -mavx512f, and defines SS_HASH_FN to the name to export.
 */
#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "hash.h"

uint64_t SS_HASH_FN(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}
