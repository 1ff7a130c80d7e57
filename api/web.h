/*
 * web.h - the operators' console's static files, compiled into the daemon (web/embed.py writes
 * the table from the files of web/ at build time; web.c serves it at / and /ui/NAME).
 */
#ifndef SS_API_WEB_H
#define SS_API_WEB_H

#include <stddef.h>

typedef struct api_web_asset {
    const char *name;         /* "console.js": served at /ui/console.js */
    const char *content_type; /* from the extension */
    const unsigned char *data;
    size_t len;
} api_web_asset;

/* Every file, ended by a row whose name is NULL. */
extern const api_web_asset api_web_assets[];

#endif
