#!/usr/bin/env bash
# Control-plane benchmark of the service proxy (issue 4, Performance, second bullet). Prints
# figures; asserts nothing. Needs root; works only inside its own lab's namespaces.
#
#   scripts/bench-services-control.sh                  # N = 10000 100000
#   scripts/bench-services-control.sh 10000            # chosen sizes (ascending)
#   CHANGES=20 CREATE_TIMEOUT=900 RESTART=0 scripts/bench-services-control.sh
#
# A 1-node lab "svcb". For each N (added on top of the previous size): selector-less Services
# with one hand-made EndpointSlice each (2 ready endpoints, 10.244.0.10/11:8080 TCP), created
# over the API (bench/svc_control.py, 8 connections, run in the fabric namespace).
#   full program (create)  first POST -> agent Lease observed RV >= RV of the last write
#   full program (restart) `lab agent restart` with all objects present and the tables already
#                          programmed -> Lease observed RV >= the last write's RV (restart
#                          command time included): list, build, read the kernel back, diff
#   full program (cold)    `lab agent stop`, the proxy's tables deleted in the node namespace,
#                          `lab agent start` -> Lease observed RV >= the last write's RV:
#                          list, build and program every table from nothing
#   change -> programmed   K PUTs of one EndpointSlice (new second address): PUT response ->
#                          Lease observed RV >= that write's RV (lease polled every 2 ms); p50/p99
#   memory                 VmRSS and VmHWM of the agent process
# nft map elements (service-ips-v4) and the last changed address in the table confirm it.
set -uo pipefail

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000)
CHANGES=${CHANGES:-20}   # RESTART=0 skips the restart and cold full-program timings
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
# node-1's agent: the agent container of its sarasa-agent DaemonSet pod (the kubelet's record).
agent_pid() { python3 -c '
import glob, json, sys
for f in glob.glob(sys.argv[1] + "/*.json"):
    r = json.load(open(f))
    if r.get("namespace") == "sarasa-system" and r.get("node") == "node-1":
        for c in r.get("containers", []):
            if c.get("name") == "agent" and c.get("process"):
                print(c["process"]["pid"])' /var/lib/sarasa/$LAB/pods; }
mem() {
    local p; p=$(agent_pid)
    awk '/VmRSS|VmHWM/ {printf "%s %.0f MB  ", $1, $2/1024}' /proc/"$p"/status
}
# The proxy's tables in the node: `inet sarasa` and its shards `inet sarasa-svcNN` (found
# through `list sets`: `list tables` dumps every chain, minutes at 100k Services).
svc_tables() {
    nsenter --net="$NODE" nft list sets 2>/dev/null | awk '$1 == "table" && $2 == "inet" && $3 ~ /^sarasa(-svc[0-9]+)?$/ {print $3}' | sort -u
}
map_count() {
    local t total=0
    for t in $(svc_tables); do
        [ "$t" = sarasa ] && continue
        total=$((total + $(nsenter --net="$NODE" nft list map inet "$t" service-ips-v4 2>/dev/null | grep -c ' : \(goto\|jump\) ')))
    done
    echo "$total"
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
    read -r _ _ _ write_s _ prog_s _ after_s _ last_rv _ errs <<<"$out"
    [ -n "${prog_s:-}" ] || { echo "    creation did not finish; stopping"; break; }
    have=$n
    echo "    nft service-ips-v4 elements: $(map_count); agent $(mem)"

    # Full program with everything present: after a restart (tables in place), and cold
    # (tables deleted first). RESTART=0 skips both.
    restart_s=-; cold_s=-
    if [ "${RESTART:-1}" = 1 ]; then
        # The newest Service/EndpointSlice write (the store's own resourceVersion also counts
        # Lease renewals, which the agent does not watch).
        maxrv=$last_rv
        t0=$(date +%s.%N)
        setsid -w timeout 600 "$BIN" --lab "$LAB" lab agent restart node-1 >/dev/null </dev/null
        w=$(PY wait-rv "$maxrv" 600 "$t0")
        restart_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
        echo "    restart -> programmed (rv $maxrv): $restart_s s ($w after restart returned); elements $(map_count); agent $(mem)"

        setsid -w timeout 120 "$BIN" --lab "$LAB" lab agent stop node-1 >/dev/null </dev/null
        for t in $(svc_tables); do nsenter --net="$NODE" nft delete table inet "$t"; done
        echo "    tables left after delete: $(svc_tables | wc -l)"
        t0=$(date +%s.%N)
        setsid -w timeout 600 "$BIN" --lab "$LAB" lab agent start node-1 >/dev/null </dev/null
        w=$(PY wait-rv "$maxrv" 600 "$t0")
        cold_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
        echo "    cold start -> programmed (rv $maxrv): $cold_s s ($w after start returned); elements $(map_count); agent $(mem)"
    fi

    # Change -> programmed.
    samples=$(PY change "s$n-1" "$CHANGES")
    last=$(awk '/^sample/ {a=$3} END {print a}' <<<"$samples")
    vals=$(awk '/^sample/ && $2 >= 0 {print $2}' <<<"$samples")
    p50=$(pct 50 <<<"$vals"); p99=$(pct 99 <<<"$vals")
    mn=$(sort -n <<<"$vals" | head -1); mx=$(sort -n <<<"$vals" | tail -1)
    echo "    change->programmed ms: $(tr '\n' ' ' <<<"$vals")"
    # The changed Service's chain, found through its map element (listing a whole table
    # dumps every chain: slow at 100k).
    seen=0
    for t in $(svc_tables); do
        [ "$t" = sarasa ] && continue
        c=$(nsenter --net="$NODE" nft list map inet "$t" service-ips-v4 | grep -o "goto svc4-default-s$n-1-http-[^ ,]*" | head -1 | cut -d' ' -f2)
        [ -n "$c" ] || continue
        seen=$(nsenter --net="$NODE" nft list chain inet "$t" "$c" | grep -c "$last")
        echo "    last address $last in $t chain $c: $seen rules"
    done
    ROWS+=("$(printf '%-7s %9s %9s %9s %9s %8s %8s %8s %8s %8s  %s' "$n" "$write_s" "$prog_s" "$restart_s" "$cold_s" \
        "$(wc -w <<<"$vals")" "$p50" "$p99" "$mn" "$mx" "$(mem)")")
done

echo
echo "=== results (lab $LAB, 1 node, 2 endpoints per Service)"
machine
printf '%-7s %9s %9s %9s %9s %8s %8s %8s %8s %8s  %s\n' N write_s program_s restart_s cold_s changes p50_ms p99_ms min_ms max_ms "agent memory"
for r in "${ROWS[@]}"; do echo "$r"; done
echo "write_s: time to POST all objects; program_s: first POST -> Lease observed RV >= last write;"
echo "restart_s: lab agent restart -> Lease observed RV >= the last write's RV (tables in place); cold_s: the same"
echo "from deleted tables; p50/p99: one EndpointSlice PUT -> programmed"
