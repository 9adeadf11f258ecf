#!/usr/bin/env bash
# Container-native load balancing benchmark (issue 13, "Performance"): the lab's cloud load
# balancer in `instance` mode (targets: every node's NodePort, then the node's proxy; with the
# Cluster and with the Local traffic policy) against `ip` mode (targets: the pods), side by side
# in one run, with the pods placed unevenly (4 on node-1, 1 on node-2, 1 on node-3 — the seed's
# double-load-balancer imbalance, which shows with Local: the balancer spreads over nodes, each
# node over its own pods).
# Prints, per mode: request latency p50/p99 (new TCP connection + one request/reply, from the
# external host), mean hops (1 = balancer straight to the pod; 2 = balancer → node proxy on the
# pod's node; 3 = the node proxy forwards to another node, seen from the masqueraded client
# address the pod reports), requests per pod max/min, and the machine. Asserts nothing.
#
#   scripts/bench-lb.sh                 REQUESTS=400 ROUNDS=3 (modes alternate each round)
#
# Uses the lab `lbbench` (BENCH_LAB); removes it on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${BENCH_LAB:-lbbench}
REQUESTS=${REQUESTS:-400}
ROUNDS=${ROUNDS:-3}
./scripts/install-deps.sh >/dev/null
CARGO_INCREMENTAL=0 cargo build --release -q -p sarasa-cli --bin sarasa -p sarasa-cni --bin sarasa-cni
SARASA=$PWD/target/release/sarasa
s() { "$SARASA" --lab "$LAB" "$@"; }
cleanup() { s lab down >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
s lab down >/dev/null 2>&1 || true
s lab up --nodes 3 >/dev/null

pods=""
place=(node-1 node-1 node-1 node-1 node-2 node-3)
for i in "${!place[@]}"; do
  pods+="
---
apiVersion: v1
kind: Pod
metadata: {name: web-$i, labels: {app: web}}
spec:
  nodeName: ${place[$i]}
  containers:
  - {name: web, image: sarasa/serve, ports: [{name: http, containerPort: 8080}]}"
done
cat >"/tmp/$LAB.yaml" <<YAML
$pods
---
apiVersion: v1
kind: Service
metadata: {name: web-instance}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web-ip
  annotations: {sarasa.io/load-balancer-target: ip}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
YAML
s apply -f "/tmp/$LAB.yaml" --wait --timeout 120s >/dev/null
rm -f "/tmp/$LAB.yaml"

vip() {
  for _ in $(seq 1 100); do
    ip=$(s get service "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["loadBalancer"]["ingress"][0]["ip"])' 2>/dev/null || true)
    [ -n "$ip" ] && { echo "$ip"; return; }
    sleep 0.2
  done
  echo "no ingress address for $1" >&2; exit 1
}
declare -A VIP=([instance]=$(vip web-instance) [instance-local]=$(vip web-local) [ip]=$(vip web-ip))
# Pod name -> node, node addresses.
podnode=$(s get pods -o json | python3 -c 'import json,sys; print(json.dumps({p["metadata"]["name"]: p["spec"]["nodeName"] for p in json.load(sys.stdin)["items"]}))')
# Every target healthy before measuring (one warm-up pass each).
for mode in instance instance-local ip; do
  for _ in $(seq 1 100); do
    s exec external -- python3 bench/lb_requests.py "${VIP[$mode]}" 80 20 | grep -q '"errors": 0' && break
    sleep 0.3
  done
done

declare -A OUT
for round in $(seq 1 "$ROUNDS"); do
  for mode in instance instance-local ip; do
    OUT[$mode]+="$(s exec external -- python3 bench/lb_requests.py "${VIP[$mode]}" 80 "$REQUESTS")"$'\n'
  done
done

echo "bench-lb: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cpus, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pods: 4 on node-1, 1 on node-2, 1 on node-3; $ROUNDS rounds x $REQUESTS requests per mode, modes alternating"
for mode in instance instance-local ip; do
  printf '%s' "${OUT[$mode]}" | PODNODE="$podnode" MODE=$mode python3 -c '
import json, os, sys
podnode = json.loads(os.environ["PODNODE"])
node_ip = {"node-%d" % i: "192.168.33.%d" % (10 + i) for i in range(1, 10)}
lat, hops, per_pod, errors = [], [], {}, 0
for line in sys.stdin:
    if not line.strip():
        continue
    r = json.loads(line)
    lat += r["lat"]; errors += r["errors"]
    for pod, client in zip(r["pods"], r["clients"]):
        per_pod[pod] = per_pod.get(pod, 0) + 1
        node = podnode.get(pod, "")
        mode = os.environ["MODE"]
        if mode == "ip":
            hops.append(1)            # balancer -> the pod (its node only delivers)
        elif client == "203.0.113.10" or client == node_ip.get(node) or client.endswith(".1"):
            hops.append(2)            # balancer -> node proxy on the pod'"'"'s node
        else:
            hops.append(3)            # balancer -> node proxy -> another node
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
counts = [per_pod.get(p, 0) for p in sorted(podnode) if p.startswith("web-")]
print("%-14s p50 %.2f ms  p99 %.2f ms  mean hops %.2f  per pod max/min %d/%d (%.2f)  requests %d  errors %d" % (
    os.environ["MODE"], q(0.5), q(0.99), sum(hops) / max(1, len(hops)), max(counts), min(counts),
    max(counts) / max(1, min(counts)), len(lat), errors))
print("               per pod: " + " ".join("%s@%s=%d" % (p, podnode[p], per_pod.get(p, 0)) for p in sorted(podnode) if p.startswith("web-")))
'
done
