/*
 * keys.c - `statesoup key-new`: a fresh API key as a line of statesoupd's --api-keys file
 * ("KEY SCOPE [tenant=NAME]"), the key 32 random bytes (getrandom) in hex after "ss_". Append
 * the line to the file and send the daemon SIGHUP (systemctl reload statesoupd): it is in use
 * from the next request on, no restart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_store.h"
#include "ss_util.h"

static const char key_new_help[] =
    "usage: statesoup key-new [--scope read|write|admin] [--tenant NAME] [--rate N/s|N/m|N/h]\n"
    "\n"
    "Print a new API key as a line of statesoupd's --api-keys file: KEY SCOPE [tenant=NAME]\n"
    "[rate=N/P].\n"
    "The key is 32 random bytes from the kernel (getrandom), in hex after 'ss_'. Append the\n"
    "line to the file, then reload the daemon (kill -HUP, systemctl reload statesoupd): the\n"
    "key works from the next request on, without a restart (docs/api.md, Auth). Nothing is\n"
    "sent anywhere; the key exists only in what you do with this line.\n"
    "\n"
    "  --scope S            read, write (default) or admin\n"
    "  --tenant NAME        the tenant whose states the key sees (default: the default one)\n"
    "  --rate N/P           at most N requests a second (s), minute (m) or hour (h), else\n"
    "                       429 rate_limited (default: no limit)\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  statesoup key-new --scope read --tenant team-a >> /etc/statesoup/keys\n"
    "  sudo systemctl reload statesoupd\n";

enum { OPT_SCOPE = CLI_OPT_FIRST_LOCAL, OPT_TENANT, OPT_RATE };

/* "N/s", "N/m" or "N/h" with N over 0, as the daemon reads rate= */
static int rate_ok(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return end != s && v > 0 && v <= 1e9 && end[0] == '/' && end[1] && strchr("smh", end[1]) &&
           !end[2];
}

int cmd_key_new(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scope", required_argument, NULL, OPT_SCOPE},
        {"tenant", required_argument, NULL, OPT_TENANT},
        {"rate", required_argument, NULL, OPT_RATE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *scope = "write", *tenant = NULL, *rate = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SCOPE: scope = optarg; break;
        case OPT_TENANT: tenant = optarg; break;
        case OPT_RATE: rate = optarg; break;
        case 'h': fputs(key_new_help, stdout); return CLI_OK;
        default: return cli_bad_option("key-new");
        }
    }
    if (optind < argc) return cli_usage("key-new", "takes no arguments");
    if (strcmp(scope, "read") && strcmp(scope, "write") && strcmp(scope, "admin"))
        return cli_usage("key-new", "--scope is read, write or admin, not '%s'", scope);
    if (tenant && ss_store_check_tenant(tenant))
        return cli_usage("key-new", "%s", ss_errmsg());
    if (rate && !rate_ok(rate))
        return cli_usage("key-new", "--rate is N/s, N/m or N/h with N over 0, not '%s'", rate);
    unsigned char rnd[32];
    char hex[2 * sizeof rnd + 1];
    if (ss_random_bytes(rnd, sizeof rnd)) return cli_fail("key-new");
    ss_hex(rnd, sizeof rnd, hex);
    printf("ss_%s %s%s%s%s%s\n", hex, scope, tenant ? " tenant=" : "", tenant ? tenant : "",
           rate ? " rate=" : "", rate ? rate : "");
    return CLI_OK;
}
