/*
 * blas.c - make OpenBLAS use kernels fit for this CPU.
 *
 * Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) does not know recent Xeons (e.g. Emerald Rapids)
 * and falls back to its SSE3 "Prescott" kernels (sgemm 4-6x slower than its AVX-512 ones), or,
 * on some hosts, to its AVX2 "Haswell" kernels (measured here: 231 vs 408 GFLOP/s for a
 * 512x1536x768 sgemm on 2 threads). The kernel set is chosen in the library's constructor, before
 * main() runs, from the environment variable OPENBLAS_CORETYPE; so when the chosen set is weaker
 * than what the CPU supports, we set the variable and re-execute ourselves. A CPU the library
 * detects properly is left alone.
 */
#include "ss_model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Declared by OpenBLAS's cblas.h on most builds; repeated here for those that do not. */
char *openblas_get_corename(void);

const char *ss_blas_core_name(void)
{
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

/* Kernel sets that use AVX-512 (nothing to gain) and those that are generic fallbacks. */
static int in_list(const char *core, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp(core, *list) == 0) return 1;
    return 0;
}

static const char *const avx512_cores[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
static const char *const avx2_cores[] = {"haswell", "zen", "skylake", NULL};

void ss_blas_ensure_kernels(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv("SS_NO_BLAS_REEXEC")) return;
    const char *core = ss_blas_core_name();
    if (in_list(core, avx512_cores)) return;
    const char *want = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        want = __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
    } else if (!in_list(core, avx2_cores) && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma")) {
        want = "Haswell";
    }
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    /* SS_NO_BLAS_REEXEC guards against a loop should the library ignore the variable. */
    setenv("SS_NO_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* execv failed: carry on with the slow kernels rather than not at all. */
    unsetenv("OPENBLAS_CORETYPE");
}
