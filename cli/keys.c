/*
 * keys.c - `statesoup key-new`: a fresh API key as a line of statesoupd's --api-keys file
 * ("KEY SCOPE [tenant=NAME]"), the key 32 random bytes (getrandom) in hex after "ss_". Append
 * the line to the file and send the daemon SIGHUP (systemctl reload statesoupd): it is in use
 * from the next request on, no restart.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ss_store.h"
#include "ss_util.h"

static const char key_new_help[] =
    "usage: statesoup key-new [--scope read|write|admin] [--tenant NAME]\n"
    "\n"
    "Print a new API key as a line of statesoupd's --api-keys file: KEY SCOPE [tenant=NAME].\n"
    "The key is 32 random bytes from the kernel (getrandom), in hex after 'ss_'. Append the\n"
    "line to the file, then reload the daemon (kill -HUP, systemctl reload statesoupd): the\n"
    "key works from the next request on, without a restart (docs/api.md, Auth). Nothing is\n"
    "sent anywhere; the key exists only in what you do with this line.\n"
    "\n"
    "  --scope S            read, write (default) or admin\n"
    "  --tenant NAME        the tenant whose states the key sees (default: the default one)\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  statesoup key-new --scope read --tenant team-a >> /etc/statesoup/keys\n"
    "  sudo systemctl reload statesoupd\n";

enum { OPT_SCOPE = CLI_OPT_FIRST_LOCAL, OPT_TENANT };

int cmd_key_new(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scope", required_argument, NULL, OPT_SCOPE},
        {"tenant", required_argument, NULL, OPT_TENANT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *scope = "write", *tenant = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SCOPE: scope = optarg; break;
        case OPT_TENANT: tenant = optarg; break;
        case 'h': fputs(key_new_help, stdout); return CLI_OK;
        default: return cli_bad_option("key-new");
        }
    }
    if (optind < argc) return cli_usage("key-new", "takes no arguments");
    if (strcmp(scope, "read") && strcmp(scope, "write") && strcmp(scope, "admin"))
        return cli_usage("key-new", "--scope is read, write or admin, not '%s'", scope);
    if (tenant && ss_store_check_tenant(tenant))
        return cli_usage("key-new", "%s", ss_errmsg());
    unsigned char rnd[32];
    char hex[2 * sizeof rnd + 1];
    if (ss_random_bytes(rnd, sizeof rnd)) return cli_fail("key-new");
    ss_hex(rnd, sizeof rnd, hex);
    printf("ss_%s %s%s%s\n", hex, scope, tenant ? " tenant=" : "", tenant ? tenant : "");
    return CLI_OK;
}
