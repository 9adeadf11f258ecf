#!/usr/bin/env bash
# Fault injection (issue 14): kill -9 of the agent at random points, KILLS times (50 by
# default), during a stream of CHANGES (1,000) Service, EndpointSlice and NetworkPolicy
# changes, in a 2-node lab; after each kill the node's agent pod is replaced and, with the
# stream paused, every node's nftables tables must equal the plan compiled from the API
# (`sarasa lab check`) within 30 s; a TCP connection from a pod on node-1 through a Service to
# a pod on node-2 must answer every 200 ms throughout.
# Prints: seed, kills, changes applied, plan checks equal/unequal, connections held, broken.
#
#   scripts/fault-agent.sh                     # 50 kills, 1,000 changes
#   KILLS=100 CHANGES=3000 SEED=7 scripts/fault-agent.sh
# The CI form (5 kills, 100 changes) is the plain test: cargo test -p sarasa-cli --test lab_fault_agent
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export FAULT_KILLS=${KILLS:-50} FAULT_CHANGES=${CHANGES:-1000}
if [ -n "${SEED:-}" ]; then
    export FAULT_SEED=$SEED
fi
echo "fault-agent: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cpus"
cargo build -q --workspace --bins
exec cargo test -q -p sarasa-cli --test lab_fault_agent -- --nocapture --test-threads=1 2>&1 |
    grep -v '^$'
