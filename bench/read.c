/*
 * read.c - the plain read that statesoup-bench's machine limits and statesoup-kernbench's "read"
 * row measure the kernels against.
 */
#include <stddef.h>

#include "read.h"

/*
 * Sum a buffer with 4 independent accumulators, read as one sequential stream (step 1) or as four
 * interleaved ones, one per quarter (step = n / 4: several streams per core reach more of the
 * bandwidth on some CPUs, and our GEMV kernels read four weight rows at once). Compiled for
 * AVX-512 and for the baseline so the limit is measured with the widest loads the CPU has.
 */
#define READ_LOOP(NAME, ATTR)                                                                  \
    ATTR static float NAME(const v16f *buf, size_t n, size_t step)                             \
    {                                                                                          \
        v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                           \
        const size_t stride = step == 1 ? 4 : 1, end = step == 1 ? n : step;                   \
        for (size_t i = 0; i + 3 * step < n && i < end; i += stride) {                         \
            a0 += buf[i];                                                                      \
            a1 += buf[i + step];                                                               \
            a2 += buf[i + 2 * step];                                                           \
            a3 += buf[i + 3 * step];                                                           \
        }                                                                                      \
        v16f a = a0 + a1 + a2 + a3;                                                            \
        float t = 0;                                                                           \
        for (int k = 0; k < 16; k++) t += a[k];                                                \
        return t;                                                                              \
    }
READ_LOOP(read_avx512, __attribute__((target("avx512f"))))
READ_LOOP(read_base, )

float bench_read(const void *buf, size_t bytes, int streams)
{
    const size_t n = bytes / sizeof(v16f), step = streams == 4 ? n / 4 : 1;
    return __builtin_cpu_supports("avx512f") ? read_avx512(buf, n, step) : read_base(buf, n, step);
}
