/*
 * test_common.c - the shared helpers: error messages, relaxed JSON (HF's Infinity), hex.
 */
#include "ss_buf.h"
#include "ss_err.h"
#include "ss_util.h"
#include "test_util.h"

static void test_errors(void)
{
    ss_err_clear();
    CHECK(strcmp(ss_err_name(SS_ERR_NOT_FOUND), "not_found") == 0);
    CHECK(strcmp(ss_errmsg(), "success") == 0);
    CHECK(ss_fail(SS_ERR_FORMAT, "tensor %s: %d", "x", 3) == SS_ERR_FORMAT);
    CHECK(strcmp(ss_errmsg(), "tensor x: 3") == 0);
    CHECK(strcmp(ss_err_name((ss_err)999), "unknown_error") == 0);
    for (int e = 0; e < SS_ERR__COUNT; e++) {
        CHECKF(ss_err_name((ss_err)e) && ss_strerror((ss_err)e), "code %d has no name", e);
    }
}

static void test_relaxed_json(void)
{
    const char *text = "{\"a\": [0.0, Infinity], \"b\": -Infinity, \"c\": NaN,"
                       " \"s\": \"Infinity \\\" NaN\", \"n\": 3}";
    json_t *root = NULL;
    REQUIRE_OK(ss_json_parse_relaxed(text, strlen(text), "test", &root));
    json_t *a = json_object_get(root, "a");
    CHECK(ss_json_real(json_array_get(a, 0), -1) == 0.0);
    CHECK(isinf(ss_json_real(json_array_get(a, 1), 0)) &&
          ss_json_real(json_array_get(a, 1), 0) > 0);
    CHECK(isinf(ss_json_real(json_object_get(root, "b"), 0)));
    CHECK(ss_json_real(json_object_get(root, "b"), 0) < 0);
    CHECK(isnan(ss_json_real(json_object_get(root, "c"), 0)));
    CHECK(strcmp(json_string_value(json_object_get(root, "s")), "Infinity \" NaN") == 0);
    CHECK(ss_json_real(json_object_get(root, "n"), 0) == 3.0);
    CHECK(ss_json_real(json_object_get(root, "missing"), 7) == 7.0);
    json_decref(root);

    CHECK_ERR(ss_json_parse_relaxed("{\"a\":", 5, "cfg", &root), SS_ERR_FORMAT);
    CHECK(strncmp(ss_errmsg(), "cfg: invalid JSON", 17) == 0);
}

static void test_hex_random(void)
{
    unsigned char b[3] = {0x00, 0xab, 0x7f};
    char out[7];
    ss_hex(b, 3, out);
    CHECK(strcmp(out, "00ab7f") == 0);
    unsigned char r1[16], r2[16];
    CHECK_OK(ss_random_bytes(r1, sizeof r1));
    CHECK_OK(ss_random_bytes(r2, sizeof r2));
    CHECK(memcmp(r1, r2, sizeof r1) != 0);
}

/* ss_grow: contents kept across growth, capacity doubles from SS_GROW_FIRST, a size that cannot
 * be represented is refused with the array untouched. */
static void test_grow(void)
{
    int32_t *v = NULL;
    size_t cap = 0;
    CHECK_OK(ss_grow((void **)&v, &cap, 1, sizeof *v));
    CHECK(cap == SS_GROW_FIRST && v);
    for (int32_t i = 0; i < 1000; i++) {
        CHECK_OK(ss_grow((void **)&v, &cap, (size_t)i + 1, sizeof *v));
        v[i] = i * 3;
    }
    CHECK(cap == 1024); /* 16 doubled six times */
    int ok = 1;
    for (int32_t i = 0; i < 1000; i++) ok &= v[i] == i * 3;
    CHECK(ok);
    int32_t *before = v;
    CHECK_OK(ss_grow((void **)&v, &cap, 1024, sizeof *v)); /* already room: nothing moves */
    CHECK(v == before && cap == 1024);
    CHECK_ERR(ss_grow((void **)&v, &cap, SIZE_MAX / 2, sizeof *v), SS_ERR_NOMEM);
    CHECK(v == before && cap == 1024 && v[999] == 2997);
    free(v);
}

int main(void)
{
    test_grow();
    test_errors();
    test_relaxed_json();
    test_hex_random();
    return test_done("test_common");
}
