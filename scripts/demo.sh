#!/usr/bin/env bash
# The main job: a 3-node lab, the seeds' first example (my-nginx, 2 replicas), and pods on
# different nodes reaching each other with their own addresses (no NAT). Leaves the lab up;
# take it down with `target/release/sarasa lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --bins
export PATH="$PWD/target/release:$PATH"

if sarasa lab status >/dev/null 2>&1; then
  echo "== a lab named 'default' is already up: taking it down first"
  sarasa lab down
fi
echo "== sarasa lab up --nodes 3"
sarasa lab up --nodes 3
echo
echo "== sarasa apply -f examples/my-nginx.yaml --wait"
sarasa apply -f examples/my-nginx.yaml --wait
sarasa get pods -o wide
echo
mapfile -t pods < <(sarasa get pods -o json | python3 -c '
import json,sys
for p in json.load(sys.stdin)["items"]:
    if p["metadata"].get("labels", {}).get("run") == "my-nginx":
        print(p["metadata"]["name"], p["status"]["podIP"], p["spec"]["nodeName"])')
read -r a_name a_ip a_node <<<"${pods[0]}"
read -r b_name b_ip b_node <<<"${pods[1]}"
echo "== $a_name ($a_ip on $a_node) -> $b_name ($b_ip on $b_node)"
sarasa exec "$a_name" -- sarasa probe "http://$b_ip:80/"
echo "== $b_name ($b_ip on $b_node) -> $a_name ($a_ip on $a_node)"
sarasa exec "$b_name" -- sarasa probe "http://$a_ip:80/"
echo "== node-1 -> $b_name"
sarasa exec node/node-1 -- sarasa probe "tcp://$b_ip:80"
echo
echo "Each reply's \"client\" is the sender's own pod address: pod-to-pod across nodes without NAT."
echo
echo "== sarasa apply -f examples/my-nginx-svc.yaml --wait   (a ClusterIP Service, programmed in nftables)"
sarasa apply -f examples/my-nginx-svc.yaml --wait
sarasa get svc my-nginx
cip=$(sarasa get svc my-nginx -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["clusterIP"])')
for i in 1 2 3 4; do
  sarasa exec "$a_name" -- sarasa probe "tcp://$cip:80"
done
echo "New connections to the ClusterIP $cip spread over the endpoints (kube-proxy semantics, in nftables)."
echo
echo "== by name: cluster DNS (sarasa dns x2 behind kube-dns 10.96.0.10), the pod's search path"
sarasa exec "$a_name" -- sarasa probe "http://my-nginx/"
sarasa exec "$a_name" -- sarasa probe "http://www.example.com/"
echo "my-nginx resolved through the cluster domain; www.example.com through the upstream (NSD on the external host)."
echo
echo "== sarasa trace --from $a_name --to svc/my-nginx   (every decision, from the node plans the agents program)"
sarasa trace --from "$a_name" --to svc/my-nginx
echo "Explore: sarasa trace ... --live | sarasa lab graph -o svg | sarasa drops | sarasa exec external -- sarasa probe ... | sarasa lab down"
