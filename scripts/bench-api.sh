#!/usr/bin/env bash
# API server benchmark (issue 11, Performance): list, watch-event and write rates with 10k Pods
# and 100k Services, before and after TLS, authentication and RBAC, side by side in one run.
# Prints figures and the machine; asserts nothing. Needs no root: the example serves on
# 127.0.0.1 (ephemeral ports) in-process.
#
#   scripts/bench-api.sh                              # 10k pods, 100k services, 5 rounds
#   PODS=2000 SERVICES=10000 ROUNDS=3 scripts/bench-api.sh
#   PROFILE=debug PODS=500 SERVICES=2000 ROUNDS=1 scripts/bench-api.sh   # checks the script only
#
# What it measures (crates/apiserver/examples/api_bench.rs): one store, seeded in-process, is
# served twice — "before" (plain HTTP, no authentication, authorization off) and "TLS+RBAC" (the
# lab's configuration: HTTPS verified against the bench CA, every request carrying a
# ServiceAccount token of bench/bencher issued by TokenRequest, RBAC on; the SA holds the
# default `edit` ClusterRole through a RoleBinding in namespace `bench`, not system:masters).
# Each round runs both sides (order alternating), ROUNDS rounds, medians:
#   list      paging through all pods / all services of `bench` with limit=500
#   watch     MODIFIED events a pod watch delivers while the store takes 5000 label updates
#   writes    2000 pod merge patches over HTTP from 8 concurrent clients
set -euo pipefail

PODS=${PODS:-10000}
SERVICES=${SERVICES:-100000}
ROUNDS=${ROUNDS:-5}
PROFILE=${PROFILE:-release}

cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
if [ "$PROFILE" = release ]; then
    cargo build --release -q -p sarasa-apiserver --example api_bench
    bin=target/release/examples/api_bench
else
    cargo build -q -p sarasa-apiserver --example api_bench
    bin=target/debug/examples/api_bench
fi
args=(--pods "$PODS" --services "$SERVICES" --rounds "$ROUNDS")
echo "bench-api: $(date -u +%FT%TZ), profile $PROFILE, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
exec "$bin" "${args[@]}"
