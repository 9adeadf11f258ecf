#!/usr/bin/env bash
# Control-plane benchmark of the service proxy (issue 4, Performance, second bullet). Prints
# figures; asserts nothing. Needs root; works only inside its own lab's namespaces.
#
#   scripts/bench-services-control.sh                  # N = 10000 100000
#   scripts/bench-services-control.sh 10000            # chosen sizes (ascending)
#   CHANGES=20 CREATE_TIMEOUT=900 scripts/bench-services-control.sh
#
# A 1-node lab "svcb". For each N (added on top of the previous size): selector-less Services
# with one hand-made EndpointSlice each (2 ready endpoints, 10.244.0.10/11:8080 TCP), created
# over the API (bench/svc_control.py, 8 connections, run in the fabric namespace).
#   full program (create)  first POST -> agent Lease observed RV >= RV of the last write
#   full program (restart) `lab agent restart` with all objects present -> Lease observed RV
#                          >= the highest RV stored (restart command time included)
#   change -> programmed   K PUTs of one EndpointSlice (new second address): PUT response ->
#                          Lease observed RV >= that write's RV (lease polled every 2 ms); p50/p99
#   memory                 VmRSS and VmHWM of the agent process
# nft map elements (service-ips-v4) and the last changed address in the table confirm it.
set -uo pipefail

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000)
CHANGES=${CHANGES:-20}   # RESTART=1 also times a full program after `lab agent restart`
CREATE_TIMEOUT=${CREATE_TIMEOUT:-900}
LAB=svcb
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
BIN=target/release/sarasa
[ -x "$BIN" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
FAB=/run/netns/sarasa-$LAB-fabric
NODE=/run/netns/sarasa-$LAB-node-1
PY() { nsenter --net="$FAB" python3 bench/svc_control.py "$@"; }

cleanup() {
    set +e
    echo "taking lab $LAB down"
    timeout 300 "$BIN" --lab "$LAB" lab down >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

machine() {
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
}
agent_pid() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' /var/lib/sarasa/$LAB/pids/agent-node-1.json; }
mem() {
    local p; p=$(agent_pid)
    awk '/VmRSS|VmHWM/ {printf "%s %.0f MB  ", $1, $2/1024}' /proc/"$p"/status
}
map_count() {
    nsenter --net="$NODE" nft list map inet sarasa service-ips-v4 2>/dev/null | grep -c ' : '
}
pct() { # pct P < samples
    sort -n | awk -v p="$1" '{a[NR]=$1} END { if (NR==0) {print "-"; exit}
        i=int((NR*p+99)/100); if (i<1) i=1; if (i>NR) i=NR; printf "%.1f", a[i] }'
}

machine
echo "sizes: ${SIZES[*]}; $CHANGES changes each; $(date -u +%T)"
timeout 300 "$BIN" --lab "$LAB" lab down >/dev/null 2>&1
setsid -w timeout 300 "$BIN" --lab "$LAB" lab up --nodes 1 </dev/null || { echo "lab up failed"; exit 1; }

ROWS=()
have=0
for n in "${SIZES[@]}"; do
    add=$((n - have))
    echo "--- N=$n: creating $add Services + EndpointSlices ($(date -u +%T))"
    out=$(timeout "$CREATE_TIMEOUT" nsenter --net="$FAB" python3 bench/svc_control.py create "$add" "s$n" "$CREATE_TIMEOUT")
    echo "    $out"
    read -r _ _ _ write_s _ prog_s _ after_s _ _ _ errs <<<"$out"
    [ -n "${prog_s:-}" ] || { echo "    creation did not finish; stopping"; break; }
    have=$n
    echo "    nft service-ips-v4 elements: $(map_count); agent $(mem)"
    mem_create=$(mem)

    # Full program from agent restart with everything present (RESTART=1; off by default:
    # in this lab the restart signals the whole process group, which includes this script).
    restart_s=-
    if [ "${RESTART:-0}" = 1 ]; then
        maxrv=$(PY max-rv)
        t0=$(date +%s.%N)
        setsid -w timeout 600 "$BIN" --lab "$LAB" lab agent restart node-1 >/dev/null </dev/null
        w=$(PY wait-rv "$maxrv" 600)
        restart_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
        echo "    restart -> programmed (rv $maxrv): $restart_s s ($w after restart returned); elements $(map_count); agent $(mem)"
        mem_restart=$(mem)
    fi

    # Change -> programmed.
    samples=$(PY change "s$n-1" "$CHANGES")
    last=$(awk '/^sample/ {a=$3} END {print a}' <<<"$samples")
    vals=$(awk '/^sample/ && $2 >= 0 {print $2}' <<<"$samples")
    p50=$(pct 50 <<<"$vals"); p99=$(pct 99 <<<"$vals")
    mn=$(sort -n <<<"$vals" | head -1); mx=$(sort -n <<<"$vals" | tail -1)
    echo "    change->programmed ms: $(tr '\n' ' ' <<<"$vals")"
    seen=$(timeout 60 nsenter --net="$NODE" nft list table inet sarasa | grep -c "$last")
    echo "    last address $last in nft table: $seen lines (listing the table is slow at 100k)"
    ROWS+=("$(printf '%-7s %9s %9s %11s %11s %8s %8s %8s %8s  %s' "$n" "$write_s" "$prog_s" "$restart_s" \
        "$(wc -w <<<"$vals")" "$p50" "$p99" "$mn" "$mx" "$(mem)")")
done

echo
echo "=== results (lab $LAB, 1 node, 2 endpoints per Service)"
machine
printf '%-7s %9s %9s %11s %11s %8s %8s %8s %8s  %s\n' N write_s program_s restart_s changes p50_ms p99_ms min_ms max_ms "agent memory"
for r in "${ROWS[@]}"; do echo "$r"; done
echo "write_s: time to POST all objects; program_s: first POST -> Lease observed RV >= last write;"
echo "restart_s: lab agent restart -> Lease observed RV >= highest stored RV; p50/p99: one EndpointSlice PUT -> programmed"
