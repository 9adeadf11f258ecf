#!/usr/bin/env bash
# Fault injection (issue 14): kill -9 of the API server mid-write, KILLS times (50 by default).
# Four clients stream ConfigMap creates, updates and deletes while a watcher follows them; the
# server (a child process on a fresh state directory) is killed with SIGKILL at a random point
# and restarted on the same directory. After each restart every acknowledged write must be
# there and resourceVersions must not go back; at the end the watcher (resuming from the last
# resourceVersion it saw) must have seen every acknowledged change once, in order.
# Prints: kills, writes acknowledged, writes checked, lost, rv monotonic, watch events, missed.
#
#   scripts/fault-apiserver.sh                 # 50 kills
#   KILLS=200 SEED=42 scripts/fault-apiserver.sh
# The CI form (5 kills) is the plain test: cargo test -p sarasa-apiserver --test fault_apiserver
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export FAULT_KILLS=${KILLS:-50}
if [ -n "${SEED:-}" ]; then
    export FAULT_SEED=$SEED
fi
echo "fault-apiserver: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cpus"
exec cargo test -q -p sarasa-apiserver --test fault_apiserver -- --nocapture --test-threads=1 2>&1 |
    grep -v '^$'
