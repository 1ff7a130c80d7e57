#!/bin/sh
# Install what statesoup needs to build and run on Debian 12 (bookworm).
# Used by deploy/run.sh (the README's first command) and by .ci/run.
# clang, libclang-rt-14-dev (libFuzzer, ASan/UBSan runtimes) and libomp-14-dev (OpenMP for clang)
# build the fuzz targets that tests/run.sh runs briefly (tests/fuzz/run.sh, docs/fuzzing.md).
set -eu
PKGS="gcc meson ninja-build pkg-config libmicrohttpd-dev liblmdb-dev libopenblas-dev
      libjansson-dev libpcre2-dev libxxhash-dev libutf8proc-dev libcurl4-openssl-dev
      curl
      clang libclang-rt-14-dev libomp-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "statesoup: installing:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
