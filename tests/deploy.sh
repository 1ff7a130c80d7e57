#!/bin/bash
# deploy.sh - what of deploy/ can be checked here: the systemd unit with `systemd-analyze verify`
# (ExecStart pointed at this build's statesoupd, every warning is a failure), and the scale-out
# topology as processes on loopback (deploy/loopback.sh --check 3). Skips (77) only without
# systemd-analyze and redis-server.
set -u
src=${SS_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
bld=${SS_BUILD_ROOT:-$src/build}
fails=0
ran=0
tmp=$(mktemp -d /tmp/ss_deploy.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if command -v systemd-analyze >/dev/null; then
    ran=1
    sed "s|/usr/local/bin/statesoupd|$bld/statesoupd|" "$src/deploy/statesoupd.service" \
        >"$tmp/statesoupd.service"
    if ! systemd-analyze verify "$tmp/statesoupd.service" >"$tmp/verify.log" 2>&1 ||
        [ -s "$tmp/verify.log" ]; then
        echo "FAIL: systemd-analyze verify deploy/statesoupd.service:" >&2
        cat "$tmp/verify.log" >&2
        fails=$((fails + 1))
    fi
    grep -q '^ProtectSystem=strict$' "$src/deploy/statesoupd.service" &&
        grep -q '^User=statesoup$' "$src/deploy/statesoupd.service" &&
        grep -q '^StateDirectory=statesoup$' "$src/deploy/statesoupd.service" &&
        grep -q '^Restart=on-failure$' "$src/deploy/statesoupd.service" ||
        { echo "FAIL: the unit lost part of its hardening" >&2; fails=$((fails + 1)); }
fi
if command -v redis-server >/dev/null && command -v jq >/dev/null; then
    ran=1
    SS_BUILD_ROOT=$bld "$src/deploy/loopback.sh" --check 3 || fails=$((fails + 1))
fi
[ $ran = 1 ] || { echo "skipped: neither systemd-analyze nor redis-server"; exit 77; }
[ $fails = 0 ] && echo "deploy: all checks passed" || exit 1
