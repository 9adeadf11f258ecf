#!/usr/bin/env bash
# Fault injection (issue 14): the real sarasa-cni killed with SIGKILL at random points of ADD
# and DEL, KILLS times (200 by default, half in routed and half in bridge mode, dual-stack), in
# a node namespace with 8 pod namespaces, with the runtime's GC every 25 commands and at the
# end. Then: no leaked host veth, route or allocation, valid pods keep exactly their addresses,
# no address held twice, fresh ADDs get free addresses. Needs root (namespaces).
# Prints: commands, kills, GC runs, failures (target 0).
#
#   scripts/fault-cni.sh                      # 200 kills
#   KILLS=1000 SEED=7 scripts/fault-cni.sh
# The CI form (20 kills) is the plain test: cargo test -p sarasa-cni --test fault_cni
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export FAULT_KILLS=${KILLS:-200}
if [ -n "${SEED:-}" ]; then
    export FAULT_SEED=$SEED
fi
echo "fault-cni: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cpus"
cargo test -q -p sarasa-cni --test fault_cni -- --nocapture --test-threads=1 2>&1 | grep -v '^$'
