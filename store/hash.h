/*
 * hash.h - XXH3-64 compiled for the CPU at hand (internal to store/).
 *
 * The Debian libxxhash is built for baseline x86-64 (SSE2). Checksums are on the path of every
 * state read and merge, so we also compile xxHash's own header-only implementation for AVX2 and
 * AVX-512 and pick the best at run time. The hash values are identical on every path (XXH3 is
 * defined independently of the vector width).
 */
#ifndef SS_STORE_HASH_H
#define SS_STORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-64 of len bytes. Thread-safe. */
uint64_t ss_hash64(const void *data, size_t len);

/* The per-ISA builds (hash_avx2.c, hash_avx512.c). */
uint64_t ss_hash64_avx2(const void *data, size_t len);
uint64_t ss_hash64_avx512(const void *data, size_t len);

#endif
