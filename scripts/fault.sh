#!/usr/bin/env bash
# The whole fault-injection suite of issue 14, one command: every fault run at its full size,
# in sequence, each printing its own figures, then a summary line per run; exits 1 if any run
# failed (lost a write, leaked an address, let a hostile object in, ...). Needs root.
#
#   scripts/fault.sh                 # all runs
#   scripts/fault.sh agent cni       # some of them
#
# Runs (and their own knobs, see each script):
#   apiserver  scripts/fault-apiserver.sh  kill -9 of the API server mid-write, 50 times
#   disk       the API store on a 2 MiB tmpfs that fills up (crates/apiserver/tests/full_disk.rs)
#   files      scripts/fault-files.sh      each state file garbage/truncated/emptied/deleted
#   cni        scripts/fault-cni.sh        sarasa-cni killed mid-ADD/DEL 200 times, then GC
#   agent      scripts/fault-agent.sh      kill -9 of the agent 50 times during 1,000 changes
#   hostile    scripts/fault-hostile.sh    forged Nodes, hijacking externalIPs and endpoints
#   limits     scripts/fault-limits.sh     oversized, slow, huge and overflowing requests
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
all=(apiserver disk files cni agent hostile limits)
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=("${all[@]}")
echo "fault: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cpus, $(uname -r)"
./scripts/install-deps.sh >/dev/null
cargo build -q --workspace --bins || exit 1
declare -A result
for run in "${runs[@]}"; do
    echo "== $run"
    start=$(date +%s)
    case $run in
        apiserver) ./scripts/fault-apiserver.sh ;;
        disk) cargo test -q -p sarasa-apiserver --test full_disk -- --nocapture --test-threads=1 2>&1 | grep -v '^$' ;;
        files) ./scripts/fault-files.sh ;;
        cni) ./scripts/fault-cni.sh ;;
        agent) ./scripts/fault-agent.sh ;;
        hostile) ./scripts/fault-hostile.sh ;;
        limits) ./scripts/fault-limits.sh ;;
        *) echo "unknown run $run (known: ${all[*]})"; false ;;
    esac
    rc=${PIPESTATUS[0]}
    result[$run]="$( [ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)" ) in $(( $(date +%s) - start )) s"
done
echo "== summary"
failed=0
for run in "${runs[@]}"; do
    echo "$run: ${result[$run]}"
    [[ ${result[$run]} == ok* ]] || failed=1
done
exit $failed
