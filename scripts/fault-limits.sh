#!/usr/bin/env bash
# Hostile-inputs fault run (issue 14): oversized bodies (announced and chunked), half-sent
# headers, half-sent bodies beyond the write budget, huge replicas and overflowing numbers,
# ROUNDS of each, against a real API server on 127.0.0.1 (ephemeral port, temporary state,
# default limits except TIMEOUT_MS header/body timeouts so a run takes seconds), while a
# well-behaved client keeps listing. Prints sent/refused per kind, what the good client got,
# objects left behind, and the server's refusal counters; exits 1 if anything got through.
# Needs no root. The short form runs in `cargo test -p sarasa-apiserver --test fault_limits`.
#
#   scripts/fault-limits.sh                       # 50 rounds, 2 s timeouts
#   ROUNDS=200 TIMEOUT_MS=1000 scripts/fault-limits.sh
set -euo pipefail

ROUNDS=${ROUNDS:-50}
TIMEOUT_MS=${TIMEOUT_MS:-2000}
PROFILE=${PROFILE:-debug}

cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
flags=()
[ "$PROFILE" = release ] && flags=(--release)
cargo build -q "${flags[@]}" -p sarasa-apiserver --example fault_limits
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
ROUNDS=$ROUNDS TIMEOUT_MS=$TIMEOUT_MS "target/$PROFILE/examples/fault_limits"
