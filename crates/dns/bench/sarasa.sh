#!/bin/bash
# Usage: run.sh SERVICES SECONDS  — sarasa (bench_server) then NSD on the same records, one netns each.
set -u
SVC=${1:-1000}; SECS=${2:-10}
W=${WORK:-/tmp/dnsperf-dns}; mkdir -p $W; NS=sarasa-t$$-perf
ip netns add $NS; ip -n $NS link set lo up
trap 'kill $PID 2>/dev/null; [ -n "${NSDPID:-}" ] && kill $NSDPID 2>/dev/null; sleep 1; ip netns del $NS' EXIT
ip netns exec $NS $(git -C "$(dirname "$0")" rev-parse --show-toplevel)/target/release/examples/bench_server $SVC $W/q.txt > $W/bench.out 2>&1 &
PID=$!
for i in $(seq 1 600); do grep -q ready $W/bench.out && break; sleep 0.1; done
grep -q ready $W/bench.out || { echo "not ready"; cat $W/bench.out; exit 1; }
echo "== sarasa dns (pid $PID), $SVC services"
ip netns exec $NS dnsperf -s 127.0.0.1 -d $W/q.txt -l $SECS -c 4 -q 100 2>&1 | grep -E "Queries|Response codes|Average Latency"
ip netns exec $NS dnsperf -s 127.0.0.1 -d $W/q.txt -l 5 -c 4 -q 100 -Q ${RATE:-50000} -v 2>/dev/null > $W/sarasa-v.txt
python3 - $W/sarasa-v.txt <<'PY'
import sys
lat=sorted(float(l.split()[-1]) for l in open(sys.argv[1]) if l.startswith('> '))
if lat: print(f"at fixed rate: {len(lat)} answers, p50 {lat[len(lat)//2]*1000:.3f} ms, p99 {lat[int(len(lat)*0.99)]*1000:.3f} ms")
PY
ip netns exec $NS dnsperf -s 127.0.0.1 -d $W/q.txt -l 5 -c 4 -q 100 -Q ${RATE:-50000} 2>&1 | grep -E "Queries (sent|completed|lost)"
ps -o rss= -p $PID | awk '{printf "RSS %.1f MiB\n", $1/1024}'
kill $PID; wait $PID 2>/dev/null
