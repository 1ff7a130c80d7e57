/*
 * test_fixtures.c - the in-repo fixtures are byte-identical copies of the shared originals.
 *
 * tests/fixtures/ mirrors ../shared/fixtures/ (without demo-mamba1, which is bundled as
 * models/demo-mamba1/ because the daemon runs on it by default). A clone without ../shared skips
 * this test (exit 77); CI, which lays shared/ beside the clone, checks every byte.
 */
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>

#include "ss_util.h"
#include "test_util.h"

static char shared[4096], repo_fix[4096], repo_demo[4096];
static int n_compared;

/* Map a path under ../shared/fixtures to its copy in the repo. */
static void repo_path(const char *shared_file, char *out, size_t cap)
{
    const char *rel = shared_file + strlen(shared);
    if (strncmp(rel, "/models/demo-mamba1/", 20) == 0)
        snprintf(out, cap, "%s%s", repo_demo, rel + strlen("/models/demo-mamba1"));
    else
        snprintf(out, cap, "%s%s", repo_fix, rel);
}

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type != FTW_F) return 0;
    char copy[8192];
    repo_path(path, copy, sizeof copy);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    if (ss_read_file(path, 1u << 30, &a, &na) != SS_OK) {
        CHECKF(0, "cannot read %s", path);
    } else if (ss_read_file(copy, 1u << 30, &b, &nb) != SS_OK) {
        CHECKF(0, "%s has no copy at %s", path, copy);
    } else {
        CHECKF(na == nb && memcmp(a, b, na) == 0, "%s differs from %s", copy, path);
        n_compared++;
    }
    free(a);
    free(b);
    return 0;
}

int main(void)
{
    snprintf(shared, sizeof shared, "%s/../shared/fixtures", test_source_root());
    snprintf(repo_fix, sizeof repo_fix, "%s/tests/fixtures", test_source_root());
    snprintf(repo_demo, sizeof repo_demo, "%s/models/demo-mamba1", test_source_root());
    struct stat st;
    if (stat(shared, &st) != 0) {
        printf("no ../shared/fixtures beside the clone: nothing to compare\n");
        return 77;
    }
    nftw(shared, visit, 16, FTW_PHYS);
    printf("%d fixture files compared\n", n_compared);
    CHECK(n_compared > 20);
    return test_done("test_fixtures");
}
