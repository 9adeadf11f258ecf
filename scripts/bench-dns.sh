#!/usr/bin/env bash
# Cluster DNS benchmark (issue 10, Performance): `sarasa dns` side by side with NSD serving the
# same records, in one run. Prints figures and the machine; asserts nothing. Needs root (it
# works inside its own network namespace, sarasa-t<pid>-dnsbench, removed at exit).
#
#   scripts/bench-dns.sh                    # 10k Services, 5 endpoints each (50k endpoints)
#   SERVICES=2000 ROUNDS=5 scripts/bench-dns.sh
#   PROFILE=debug SERVICES=500 ROUNDS=1 PASSES=1 scripts/bench-dns.sh   # checks the script only
#
# Data: `dns-bench serve` (crates/dnsbench) runs the lab's API server library in-process on
# 127.0.0.1:6443 inside the namespace and fills it with SERVICES Services (every tenth headless)
# and one EndpointSlice of EPS ready endpoints each; from the objects as stored it writes the
# same records as NSD zone files (cluster.local + 10.in-addr.arpa) and the dnsperf query file:
# 40 % A, 20 % SRV, 20 % PTR, 20 % NXDOMAIN.
# Servers: NSD 4 (server-count 1) and `sarasa dns` (fed by the API), one process each, both
# pinned to SERVER_CPUS; dnsperf pinned to CLIENT_CPUS. Each round runs both (order alternating
# round to round), ROUNDS rounds, medians reported:
#   qps, lost   dnsperf -n PASSES over the query file (it waits for every reply; a query
#               without a reply within 5 s is lost), -c CLIENTS -q OUTSTANDING
#   p99         from dnsperf -v (one line per query with its latency), same load, sorted
#   p99 @rate   the same at a fixed rate (dnsperf -Q) of RATE_FRACTION (0.8) x NSD's median
#               qps, for both servers: latency below saturation, where queueing does not
#               dominate; with the lost count of that run
#   change      `dns-bench change`: Service created over the API -> `sarasa dns` answers its A
#               with the ClusterIP (UDP polled every ~1 ms); deleted -> NXDOMAIN; p50/p99;
#               and API write -> the event reaching the bench's own watcher (the API server's
#               share: its garbage collector scans the namespace on every deletion)
#   memory      VmRSS / VmHWM of the `sarasa dns` process after its first full sync and at the
#               end (after every query of the run: the fast path's answer cache included)
set -uo pipefail

SERVICES=${SERVICES:-10000}
EPS=${EPS:-5}
ROUNDS=${ROUNDS:-3}
PASSES=${PASSES:-3}
QUERIES=${QUERIES:-100000}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-200}
CHANGES=${CHANGES:-20}
SERVER_CPUS=${SERVER_CPUS:-1}
CLIENT_CPUS=${CLIENT_CPUS:-0}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace)" >&2; exit 1; }
PROFILE=${PROFILE:-release}   # PROFILE=debug: a quick check of the script, not figures
BIN=target/$PROFILE/sarasa
BENCH=target/$PROFILE/dns-bench
for b in "$BIN" "$BENCH"; do
    [ -x "$b" ] || { echo "build first: cargo build --release -p sarasa-cli -p sarasa-dnsbench" >&2; exit 1; }
done
for t in nsd dnsperf dig taskset curl nsenter bc; do
    command -v $t >/dev/null || { echo "$t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

NS=sarasa-t$$-dnsbench
WORK=$(mktemp -d /tmp/sarasa-dnsbench.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# nsenter execs the command itself (ip netns exec forks and waits), so $! is the process.
IN() { nsenter --net="/run/netns/$NS" "$@"; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "date: $(date -u '+%F %T') UTC; $(nsd -v 2>&1 | head -1); $(dnsperf -h 2>&1 | grep -m1 Version)"
echo "data: $SERVICES Services ($((SERVICES / 10)) headless), $((SERVICES * EPS)) endpoints; servers on CPU $SERVER_CPUS, dnsperf on CPU $CLIENT_CPUS; $ROUNDS rounds"

ip netns add "$NS" && ip -n "$NS" link set lo up || exit 1
NET=--net=/run/netns/$NS
# Long-running processes are started as plain commands (not through the IN function, whose
# subshell would be what $! names).
nsenter "$NET" "$BENCH" serve --state "$WORK/state" --out "$WORK/out" --listen 127.0.0.1:6443 \
    --services "$SERVICES" --endpoints-per-service "$EPS" --queries "$QUERIES" \
    --nsd-address 127.0.0.1 --nsd-port 5354 >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 3000); do grep -q '^ready' "$WORK/serve.log" && break; sleep 0.1; done
grep -q '^ready' "$WORK/serve.log" || { echo "dns-bench serve failed:"; cat "$WORK/serve.log"; exit 1; }
grep -v '^ready' "$WORK/serve.log"

nsenter "$NET" taskset -c "$SERVER_CPUS" nsd -d -c "$WORK/out/nsd.conf" >"$WORK/nsd.log" 2>&1 &
PIDS+=($!)
nsenter "$NET" taskset -c "$SERVER_CPUS" "$BIN" dns --apiserver http://127.0.0.1:6443 \
    --listen 127.0.0.1:5353 --metrics-listen 127.0.0.1:9153 --upstream 127.0.0.1:5354 \
    >"$WORK/sarasa-dns.log" 2>&1 &
DNS_PID=$!
PIDS+=($DNS_PID)
started=$(date +%s.%N)
ready=""
for _ in $(seq 1200); do
    if IN curl -sf -o /dev/null http://127.0.0.1:9153/readyz; then ready=1; break; fi
    sleep 0.05
done
[ -n "$ready" ] || { echo "sarasa dns never got ready:"; tail -20 "$WORK/sarasa-dns.log"; exit 1; }
echo "sarasa dns: first full sync served after $(echo "$(date +%s.%N) - $started" | bc | cut -c1-5) s"
awk '/VmRSS|VmHWM/ {printf "sarasa dns after the first sync: %s %.0f MB\n", $1, $2/1024}' /proc/$DNS_PID/status
for _ in $(seq 100); do IN dig +short +time=1 +tries=1 @127.0.0.1 -p 5354 dns-version.cluster.local TXT | grep -q 1.1.0 && break; sleep 0.1; done

# Both servers must give the same answers for a sample of the mix (answer sections compared).
diffs=0
while read -r name type; do
    a=$(IN dig +short +time=2 +tries=1 @127.0.0.1 -p 5353 "$name" "$type" | sort)
    b=$(IN dig +short +time=2 +tries=1 @127.0.0.1 -p 5354 "$name" "$type" | sort)
    [ "$a" = "$b" ] || { diffs=$((diffs + 1)); [ $diffs -le 3 ] && echo "answers differ for $name $type: sarasa [$a] nsd [$b]"; }
done < <(head -200 "$WORK/out/queries.txt")
echo "answers compared on 200 queries of the mix: $diffs differ"

# dnsperf's "Queries per second", "Queries lost" count, and the p99 of a verbose run.
perf() { # perf PORT -> "qps lost"
    IN taskset -c "$CLIENT_CPUS" dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/out/queries.txt" \
        -n "$PASSES" -c "$CLIENTS" -q "$OUTSTANDING" 2>/dev/null |
        awk '/Queries per second/ {q=$4} /Queries lost/ {l=$3} END {printf "%.0f %s\n", q, l}'
}
p99() { # p99 PORT [dnsperf args] -> milliseconds
    local port=$1; shift
    IN taskset -c "$CLIENT_CPUS" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/out/queries.txt" \
        -n 1 -c "$CLIENTS" -q "$OUTSTANDING" -v "$@" 2>/dev/null |
        awk '/^> / && $2 != "T" {print $NF}' | sort -g |
        awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f\n", a[i]*1000}'
}
lost_at() { # lost_at PORT RATE -> queries lost in one pass at RATE qps
    IN taskset -c "$CLIENT_CPUS" dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/out/queries.txt" \
        -n 1 -c "$CLIENTS" -q "$OUTSTANDING" -Q "$2" 2>/dev/null |
        awk '/Queries lost/ {print $3}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} print a[int((NR+1)/2)]}'; }

declare -A QPS LOST P99
for r in $(seq "$ROUNDS"); do
    order="nsd sarasa"; [ $((r % 2)) = 0 ] && order="sarasa nsd"
    for s in $order; do
        port=5353; [ "$s" = nsd ] && port=5354
        read -r q l < <(perf $port)
        p=$(p99 $port)
        QPS[$s]+="$q "; LOST[$s]+="$l "; P99[$s]+="$p "
        echo "round $r $s: $q qps, $l lost, p99 $p ms"
    done
done
echo
printf '%-12s %12s %8s %10s\n' server "qps(median)" lost "p99 ms"
for s in nsd sarasa; do
    printf '%-12s %12s %8s %10s\n' "$s" \
        "$(echo ${QPS[$s]} | tr ' ' '\n' | median)" \
        "$(echo ${LOST[$s]} | tr ' ' '\n' | sort -g | tail -1)" \
        "$(echo ${P99[$s]} | tr ' ' '\n' | median)"
done
q_nsd=$(echo ${QPS[nsd]} | tr ' ' '\n' | median)
q_sar=$(echo ${QPS[sarasa]} | tr ' ' '\n' | median)
echo "sarasa/nsd qps ratio: $(echo "scale=2; $q_sar / $q_nsd" | bc)   (lost: worst round)"
echo
RATE=$(echo "$q_nsd * ${RATE_FRACTION:-0.8} / 1" | bc)
echo "at a fixed rate of $RATE qps (${RATE_FRACTION:-0.8} x NSD's median), $ROUNDS rounds, medians:"
declare -A RP99 RLOST
for r in $(seq "$ROUNDS"); do
    for s in nsd sarasa; do
        port=5353; [ "$s" = nsd ] && port=5354
        RP99[$s]+="$(p99 $port -Q "$RATE") "
        RLOST[$s]+="$(lost_at $port "$RATE") "
    done
done
printf '%-12s %10s %8s\n' server "p99 ms" lost
for s in nsd sarasa; do
    printf '%-12s %10s %8s\n' "$s" \
        "$(echo ${RP99[$s]} | tr ' ' '\n' | median)" \
        "$(echo ${RLOST[$s]} | tr ' ' '\n' | sort -g | tail -1)"
done
echo
echo "change -> answer with $SERVICES Services present ($CHANGES changes):"
IN "$BENCH" change --apiserver http://127.0.0.1:6443 --dns 127.0.0.1:5353 --count "$CHANGES"
echo
awk '/VmRSS|VmHWM/ {printf "sarasa dns at the end: %s %.0f MB\n", $1, $2/1024}' /proc/$DNS_PID/status
IN curl -sf http://127.0.0.1:9153/metrics | grep -E '^sarasa_dns_queries_total' | sort -t' ' -k2 -gr | head -6
