/*
 * web.c - the operators' console: GET / (the page) and GET /ui/NAME (its script and style),
 * served from the table web/embed.py compiles in. These routes are public (no API key: the
 * files hold no data); every call the page makes to /v1/... is authenticated as usual.
 *
 * Every answer carries a strict Content-Security-Policy: scripts and styles only from this
 * origin (no inline script or style, no eval), no frames, no plugins, requests only to this
 * origin; with nosniff so a file is only ever read as its declared type.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "web.h"

#define CSP                                                                                        \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "             \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static const api_web_asset *find(const char *name)
{
    for (const api_web_asset *w = api_web_assets; w->name; w++)
        if (!strcmp(w->name, name)) return w;
    return NULL;
}

static void send_asset(ss_host_req *r, const api_web_asset *w)
{
    void *body = malloc(w->len ? w->len : 1);
    if (!body) {
        api_reject(r, SS_ERR_NOMEM, NULL, "out of memory");
        return;
    }
    memcpy(body, w->data, w->len);
    ss_host_add_header(r, "Content-Security-Policy", CSP);
    ss_host_add_header(r, "X-Content-Type-Options", "nosniff");
    ss_host_add_header(r, "Referrer-Policy", "no-referrer");
    ss_host_add_header(r, "X-Frame-Options", "DENY");
    /* small files; revalidate so that a new daemon's page is never mixed with an old script */
    ss_host_add_header(r, "Cache-Control", "no-cache");
    ss_host_respond(r, 200, w->content_type, body, w->len);
}

void api_h_ui_index(void *app, ss_host_req *r)
{
    (void)app;
    const api_web_asset *w = find("index.html");
    if (!w) {
        api_reject(r, SS_ERR_INTERNAL, NULL, "the console was not built into this daemon");
        return;
    }
    send_asset(r, w);
}

void api_h_ui_asset(void *app, ss_host_req *r)
{
    (void)app;
    const char *name = ss_host_param(r, "file");
    const api_web_asset *w = name ? find(name) : NULL;
    if (!w) {
        api_reject(r, SS_ERR_NOT_FOUND, NULL, "no such file in the console: /ui/%s",
                   name ? name : "");
        return;
    }
    send_asset(r, w);
}
