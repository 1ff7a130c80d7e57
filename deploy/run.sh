#!/bin/sh
# The README's first command: install what is needed, build, and start statesoupd on its
# embedded default (the bundled demo model, LMDB catalog under ./data, http://127.0.0.1:8080).
# Extra arguments go to statesoupd (e.g. --listen 0.0.0.0:8080, --data /var/lib/statesoup).
#
# The release build lives in build-release/, apart from tests/run.sh's build/ (debug, asserts
# on): sharing one folder meant whichever ran first chose the build type for both.
set -eu
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
[ -f build-release/build.ninja ] || meson setup build-release --buildtype=release
ninja -C build-release statesoupd cli/statesoup bench/statesoup-bench

# What to do next, printed once the daemon answers. The daemon itself must stay this script's
# process (exec below) so that Ctrl-C and SIGTERM reach it directly; a background waiter polls
# /healthz while the daemon ($$ after the exec) lives, at most 10 minutes (the largest
# checkpoint's load), and prints the hints. 401 counts as up (the daemon runs with --api-keys).
listen=127.0.0.1:8080
prev=""
for a in "$@"; do
    case $prev in --listen) listen=$a ;; esac
    case $a in --listen=*) listen=${a#--listen=} ;; esac
    prev=$a
done
url="http://$(echo "$listen" | sed 's/^0\.0\.0\.0:/127.0.0.1:/; s/^\[::\]:/[::1]:/')"
(
    i=0
    while [ $i -lt 1200 ] && kill -0 $$ 2>/dev/null; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz" 2>/dev/null || true)
        if [ "$code" = 200 ] || [ "$code" = 401 ]; then
            cat >&2 <<HINTS

statesoup is ready at $url  (stop it with Ctrl-C)
  open:  $url/  in a browser: the operators' console (docs/console.md)
  try:   curl -s $url/v1/models
         ./build-release/cli/statesoup ls --url $url
  then:  the README's tour (README.md, "A tour"), or docs/tutorial.md

HINTS
            exit 0
        fi
        sleep 0.5
        i=$((i + 1))
    done
) &
exec ./build-release/statesoupd --model models/demo-mamba1 --data ./data "$@"
