#!/bin/sh
# The README's first command: install what is needed, build, and start statesoupd on its
# embedded default (the bundled demo model, LMDB catalog under ./data, http://127.0.0.1:8080).
# Extra arguments go to statesoupd (e.g. --listen 0.0.0.0:8080, --data /var/lib/statesoup).
set -eu
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build statesoupd cli/statesoup bench/statesoup-bench
exec ./build/statesoupd --model models/demo-mamba1 --data ./data "$@"
