#!/usr/bin/env bash
# Fault injection on the lab's state files (issue 14): the API store's snapshot, log and
# resourceVersion reservation, a node's IPAM allocations.json, the control plane's process
# record, a pod's runtime record (a pod's and a hostNetwork pod's), the lab spec and the API
# loopback record, each garbage-filled, truncated, emptied and deleted in turn (lab stopped or
# running as fits), ROUNDS times; what reads the file is restarted and the outcome counted:
# recovered (objects intact, addresses rebuilt), a clear error naming the file, or a silent
# failure (target 0); addresses held twice are counted on the pods' real interfaces (target 0);
# orphans are container instances left running beside a restarted pod (target 0). Needs root
# (namespaces).
#
#   scripts/fault-files.sh              # every file x kind once (36 faults)
#   ROUNDS=3 scripts/fault-files.sh
# The CI form (every file x kind once) is the plain test:
#   cargo test -p sarasa-cli --test lab_fault_files
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export FAULT_FILES_ROUNDS=${ROUNDS:-1}
echo "fault-files: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cpus"
cargo build -q --workspace --bins
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo test -q -p sarasa-cli --test lab_fault_files -- --nocapture --test-threads=1 >"$out" 2>&1 || status=$?
grep -E '^(file|store|ipam|pids|pods|lab\.json|api-loopback|total|duplicate|test result)' "$out" || cat "$out"
exit "$status"
