#!/bin/sh
# Install what statesoup needs to build and run on Debian 12 (bookworm).
# Used by deploy/run.sh (the README's first command), tests/run.sh and .ci/run.
# curl and jq are for the README's examples and tests/test_docs.sh, which runs them.
# clang, libclang-rt-14-dev (libFuzzer, ASan/UBSan runtimes) and libomp-14-dev (OpenMP for clang)
# build the fuzz targets that tests/run.sh runs briefly (tests/fuzz/run.sh, docs/fuzzing.md).
# libhiredis-dev is the Redis client of the shared tier (--remote, docs/scale-out.md); redis-server
# and redis-tools run the real Redis Cluster its tests start (tests/redis_cluster.sh); systemd
# gives systemd-analyze, which checks deploy/statesoupd.service.
# Exits 0 when everything is there; as a user without root and without sudo, it names the
# missing packages and the command to run as root, and exits 1.
set -eu
PKGS="gcc meson ninja-build pkg-config libmicrohttpd-dev liblmdb-dev libopenblas-dev
      libjansson-dev libpcre2-dev libxxhash-dev libutf8proc-dev libcurl4-openssl-dev
      curl jq
      clang libclang-rt-14-dev libomp-14-dev
      libhiredis-dev redis-server redis-tools systemd
      python3 chromium chromium-driver"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        cat >&2 <<EOF2
statesoup: these Debian packages are missing:$missing
statesoup: installing them needs root, and sudo is not installed. As root, run:
    apt-get update && apt-get install -y --no-install-recommends$missing
then run this command again.
EOF2
        exit 1
    fi
    SUDO="sudo"
fi
echo "statesoup: installing:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
