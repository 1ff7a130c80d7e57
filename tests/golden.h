/*
 * golden.h - reading the golden tensors (golden.safetensors) and cases (cases.json) of a fixture
 * model folder. Header-only, shared by the test binaries that compare against the references.
 */
#ifndef SS_TEST_GOLDEN_H
#define SS_TEST_GOLDEN_H

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "ss_util.h"
#include "test_util.h"

typedef struct golden {
    void *map;
    size_t len;
    st_file st;
    json_t *cases;
} golden;

static inline void golden_open(golden *g, const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    struct stat st;
    fstat(fd, &st);
    g->len = (size_t)st.st_size;
    g->map = mmap(NULL, g->len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    REQUIRE_OK(st_parse(&g->st, g->map, g->len, path));
    char *text;
    size_t n;
    snprintf(path, sizeof path, "%s/cases.json", dir);
    REQUIRE_OK(ss_read_file(path, 1 << 20, &text, &n));
    REQUIRE_OK(ss_json_parse_relaxed(text, n, path, &g->cases));
    free(text);
}

static inline void golden_close(golden *g)
{
    st_free(&g->st);
    munmap(g->map, g->len);
    json_decref(g->cases);
}

/* A golden tensor (F32 or I32) by name; n receives the element count. Exits when missing. */
static inline const void *gt(const golden *g, const char *name, size_t *n)
{
    const st_tensor *t = st_find(&g->st, name);
    if (!t) {
        fprintf(stderr, "golden tensor %s missing\n", name);
        exit(1);
    }
    if (n) *n = t->n_elem;
    return t->data;
}

static inline int has_gt(const golden *g, const char *name)
{
    return st_find(&g->st, name) != NULL;
}

#endif
