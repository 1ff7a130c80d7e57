/*
 * read.h - the plain read of a buffer, as fast as this CPU streams memory without a kernel.
 */
#ifndef SS_BENCH_READ_H
#define SS_BENCH_READ_H

#include <stddef.h>

/* A 64-byte vector of 16 floats: the unit bench_read loads (and its callers' buffers count). */
typedef float v16f __attribute__((vector_size(64)));

/* Sum `bytes` (a multiple of 256) at buf, 64-byte aligned, as 1 stream or 4 interleaved ones
 * (one per quarter), with the widest loads the CPU has: the machine limits' plain read. */
float bench_read(const void *buf, size_t bytes, int streams);

#endif
