#!/bin/bash
# NSD serving the same records as bench_server (from its query file), same dnsperf runs.
set -u
SECS=${1:-10}
W=${WORK:-/tmp/dnsperf-dns}; NS=sarasa-t$$-nsd; D=$W/nsd; rm -rf $D; mkdir -p $D
python3 - $W/q.txt $D <<'PY'
import sys
lines=[l.split() for l in open(sys.argv[1])]
d=sys.argv[2]
z=open(d+'/cluster.local.zone','w'); r=open(d+'/in-addr.arpa.zone','w')
soa="@ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n@ 30 IN NS ns.dns.cluster.local.\n"
z.write("$ORIGIN cluster.local.\n"+soa+"ns.dns 30 IN A 127.0.0.1\n"); r.write("$ORIGIN in-addr.arpa.\n"+soa)
for i in range(0,len(lines),4):
    a,srv,ptr=lines[i][0],lines[i+1][0],lines[i+2][0]
    ip='.'.join(reversed(ptr.split('.')[:4]))
    z.write(f"{a}. 30 IN A {ip}\n{srv}. 30 IN SRV 0 100 80 {a}.\n"); r.write(f"{ptr}. 30 IN PTR {a}.\n")
PY
cat > $D/nsd.conf <<CONF
server:
  ip-address: 127.0.0.1
  port: 53
  username: ""
  chroot: ""
  zonesdir: "$D"
  database: ""
  pidfile: "$D/nsd.pid"
  xfrdfile: "$D/xfrd.state"
  xfrdir: "$D"
  zonelistfile: "$D/zone.list"
  logfile: "$D/nsd.log"
  server-count: 1
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: cluster.local
  zonefile: cluster.local.zone
zone:
  name: in-addr.arpa
  zonefile: in-addr.arpa.zone
CONF
ip netns add $NS; ip -n $NS link set lo up
ip netns exec $NS nsd -d -c $D/nsd.conf & NSDPID=$!
trap 'kill $NSDPID 2>/dev/null; wait $NSDPID 2>/dev/null; ip netns del $NS' EXIT
for i in $(seq 1 100); do ip netns exec $NS dig @127.0.0.1 +short +time=1 +tries=1 $(head -1 $W/q.txt) | grep -q . && break; sleep 0.1; done
echo "== NSD (server-count 1)"
sleep 1; ip netns exec $NS dnsperf -s 127.0.0.1 -d $W/q.txt -l $SECS -c 4 -q 100 2>&1 | grep -E "Queries|Response codes|Average Latency"
