#!/usr/bin/env bash
# Data-plane benchmark (issue 4, Performance): new-connection latency (p50, p99) to the first,
# middle and last of N ClusterIP Services, through sarasa's nftables table and through the same
# Services in kube-proxy's iptables layout, side by side in one run (measurements interleaved
# A B A B so machine load weighs on both alike). Prints figures; asserts nothing. Needs root.
#
#   scripts/bench-services-dataplane.sh                 # N = 1 10000 50000 100000
#   scripts/bench-services-dataplane.sh 1 10000         # chosen sizes
#   COUNT=1000 ROUNDS=10 WARMUP=50 LOAD_TIMEOUT=300 scripts/bench-services-dataplane.sh
#
# Per datapath, three namespaces sarasa-dpb-<pid>-<dp>-{cli,node,srv}:
#   cli 10.244.1.2 --veth-- 10.244.1.1 node 10.77.1.1 --veth-- srv 10.77.1.2 + 10.77.1.3
# The client (a pod address, so neither datapath masquerades) routes everything to the node,
# where the rules DNAT each ClusterIP (10.96.0.0/12) to 10.77.1.2:8080 or 10.77.1.3:8080; the
# server namespace runs an accept-and-close TCP server. The time measured is connect() start to
# connected: the SYN through the DNAT and the SYN/ACK back. Nothing touches the root namespace.
set -euo pipefail

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1 10000 50000 100000)
COUNT=${COUNT:-1000}        # timed connects per target and datapath
ROUNDS=${ROUNDS:-10}        # A B alternations; COUNT/ROUNDS connects per target each
WARMUP=${WARMUP:-50}        # untimed connects per target before the first round
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/dpb}

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
if command -v iptables-legacy-restore >/dev/null; then
    IPT_RESTORE=iptables-legacy-restore; IPT=iptables-legacy
else
    IPT_RESTORE=iptables-restore; IPT=iptables
fi

echo "building dataplane_bench (release)..."
timeout 900 cargo build -q --release -p sarasa-proxy --example dataplane_bench
BIN=$CARGO_TARGET_DIR/release/examples/dataplane_bench

TAG=sarasa-dpb-$$
WORK=$(mktemp -d /tmp/$TAG.XXXX)
PIDS=()
NSS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# setup DP: the three namespaces of one datapath ("sarasa" or "iptables").
setup() {
    local dp=$1 cli=$TAG-$1-cli node=$TAG-$1-node srv=$TAG-$1-srv
    for ns in "$cli" "$node" "$srv"; do
        ip netns add "$ns"; NSS+=("$ns")
        ip -n "$ns" link set lo up
    done
    ip -n "$cli" link add c0 type veth peer name n0 netns "$node"
    ip -n "$node" link add n1 type veth peer name s0 netns "$srv"
    ip -n "$cli" addr add 10.244.1.2/24 dev c0
    ip -n "$node" addr add 10.244.1.1/24 dev n0
    ip -n "$node" addr add 10.77.1.1/24 dev n1
    ip -n "$srv" addr add 10.77.1.2/24 dev s0
    ip -n "$srv" addr add 10.77.1.3/24 dev s0
    for l in "$cli c0" "$node n0" "$node n1" "$srv s0"; do
        set -- $l; ip -n "$1" link set "$2" up
    done
    ip -n "$cli" route add default via 10.244.1.1
    ip -n "$srv" route add default via 10.77.1.1
    ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$srv" "$BIN" serve 0.0.0.0:8080 &
    PIDS+=($!)
}

# Short TIME_WAIT in the node's conntrack (its own namespace) so thousands of connects to the
# same two endpoint addresses do not collide with old entries.
short_timewait() {
    ip netns exec "$TAG-$1-node" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 \
        2>/dev/null || true
}

load_sarasa() {
    ip netns exec "$TAG-sarasa-node" nft delete table inet sarasa 2>/dev/null || true
    timeout "$LOAD_TIMEOUT" ip netns exec "$TAG-sarasa-node" nft -f "$WORK/sarasa.nft"
}
load_iptables() {
    timeout "$LOAD_TIMEOUT" ip netns exec "$TAG-iptables-node" "$IPT_RESTORE" <"$WORK/iptables.rules"
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f s", b - a }'; }

"$BIN" machine
echo "iptables datapath: $IPT_RESTORE ($($IPT --version 2>/dev/null | head -1))"
echo "sizes: ${SIZES[*]}; $COUNT connects per target and datapath in $ROUNDS A/B rounds, $WARMUP warm-up"
setup sarasa
setup iptables

LOADS=()
SAMPLES=$WORK/samples
: >"$SAMPLES"
for n in "${SIZES[@]}"; do
    echo "--- N=$n: generating rules ($(date -u +%T))"
    mapfile -t TARGETS < <(timeout "$LOAD_TIMEOUT" "$BIN" gen "$n" "$WORK")
    echo "    targets: ${TARGETS[*]}; sarasa.nft $(du -h "$WORK/sarasa.nft" | cut -f1), iptables.rules $(du -h "$WORK/iptables.rules" | cut -f1)"
    t=$(now)
    if ! load_sarasa; then
        echo "    sarasa: nft -f failed or took over ${LOAD_TIMEOUT}s at N=$n; stopping here"; break
    fi
    LOADS+=("N=$n sarasa: nft -f $(secs "$t" "$(now)")")
    echo "    ${LOADS[-1]}"
    t=$(now)
    if ! load_iptables; then
        echo "    iptables: $IPT_RESTORE failed or took over ${LOAD_TIMEOUT}s at N=$n; stopping here"; break
    fi
    LOADS+=("N=$n iptables: $IPT_RESTORE $(secs "$t" "$(now)") ($(ip netns exec "$TAG-iptables-node" "$IPT" -t nat -S | wc -l) rules)")
    echo "    ${LOADS[-1]}"
    short_timewait sarasa; short_timewait iptables
    for dp in sarasa iptables; do
        if ! timeout 30 ip netns exec "$TAG-$dp-cli" "$BIN" measure 1 0 check "${TARGETS[@]}" >/dev/null; then
            echo "    $dp: connect check failed"; exit 1
        fi
    done
    per=$(( (COUNT + ROUNDS - 1) / ROUNDS ))
    for r in $(seq 1 "$ROUNDS"); do
        w=0; [ "$r" = 1 ] && w=$WARMUP
        for dp in sarasa iptables; do
            timeout 600 ip netns exec "$TAG-$dp-cli" "$BIN" measure "$per" "$w" "$n $dp" "${TARGETS[@]}" >>"$SAMPLES"
        done
        echo "    round $r/$ROUNDS done ($(date -u +%T))"
    done
    "$BIN" report "$SAMPLES" | awk -v n="$n" 'NR == 1 || $1 == n'
done

echo
echo "=== results (µs, connect() start to connected; last/first = p50 ratio, p99 ratio)"
"$BIN" machine
echo "iptables datapath: $IPT_RESTORE"
printf 'load: %s\n' "${LOADS[@]}"
"$BIN" report "$SAMPLES"
