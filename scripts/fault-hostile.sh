#!/usr/bin/env bash
# Fault injection, hostile objects (issue 14): objects that would hijack the network are sent
# to a lab's API server, ROUNDS times each, while a Service is probed; prints the counts.
#   - forged Nodes: another node's podCIDR, the underlay as podCIDR, a podCIDR outside the
#     cluster, the all-zero VTEP MAC (VXLAN's flood entry), a public-ip that is the API server's
#   - hijacking Services: externalIPs 192.168.33.1 port 6443 (the API server), 127.0.0.1,
#     169.254.169.254, a node's address, an address outside the lab's externalIP range
#   - hijacking EndpointSlices: the API server's address, loopback, link-local
# Each must be refused (the API's 422 naming the field) and nothing stored; the Service keeps
# answering from both nodes and the agents keep reconciling.
#
#   scripts/fault-hostile.sh            (ROUNDS=5 by default; CI runs ROUNDS=1)
#
# Environment: ROUNDS=5, FAULT_LAB=hostile (lab name, removed on exit, also on failure),
# SARASA=target/debug/sarasa (built with `cargo build --workspace --bins`), PROBES_PER_ROUND=2.
# Exit 0 when every object was refused and every probe answered; 1 otherwise.
# Only the lab's own namespaces are touched; the root network namespace never is.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
if [ -z "${SARASA_FAULT_INNER:-}" ]; then
  SARASA_FAULT_INNER=1 exec timeout -k 60 "${WATCHDOG_SECS:-900}" "$0" "$@"
fi

ROUNDS=${ROUNDS:-5}
PROBES_PER_ROUND=${PROBES_PER_ROUND:-2}
LAB=${FAULT_LAB:-hostile}
SARASA=${SARASA:-$PWD/target/debug/sarasa}
case $ROUNDS in '' | *[!0-9]*) echo "fault-hostile: ROUNDS must be a number" >&2; exit 2 ;; esac
[ -x "$SARASA" ] || { echo "fault-hostile: $SARASA not built (cargo build --workspace --bins)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/sarasa-fault-hostile.XXXXXX)
export KUBECONFIG=$WORK/kubeconfig
s() { "$SARASA" --lab "$LAB" "$@"; }
cleanup() {
  s lab down >/dev/null 2>&1 || echo "fault-hostile: lab down $LAB failed" >&2
  rm -rf "$WORK"
}
trap cleanup EXIT

s lab up --nodes 2 >/dev/null
cat >"$WORK/web.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: sarasa/serve, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
s apply -f "$WORK/web.yaml" --wait --timeout 120s >/dev/null
CLUSTER_IP=$(s get services -o json | jq -r '.items[] | select(.metadata.name=="web") | .spec.clusterIP')
NODE1_CIDR=$(s get nodes -o json | jq -r '.items[] | select(.metadata.name=="node-1") | .spec.podCIDR')
NODE1_IP=$(s get nodes -o json | jq -r '.items[] | select(.metadata.name=="node-1") | .status.addresses[0].address')
API_IP=192.168.33.1

probes=0 answered=0
probe_all() {
  local node i
  for node in node-1 node-2; do
    for ((i = 0; i < PROBES_PER_ROUND; i++)); do
      probes=$((probes + 1))
      if s exec "node/$node" -- "$SARASA" probe --timeout 3s "tcp://$CLUSTER_IP:80" >/dev/null 2>&1; then
        answered=$((answered + 1))
      else
        echo "fault-hostile: probe of $CLUSTER_IP:80 from $node failed" >&2
      fi
    done
  done
}

injected=0 refused=0 accepted=0
# expect_refused NAME FIELD: applies $WORK/obj.yaml, which the API must refuse naming FIELD.
expect_refused() {
  local what=$1 field=$2 out
  injected=$((injected + 1))
  if out=$(s apply -f "$WORK/obj.yaml" 2>&1); then
    accepted=$((accepted + 1))
    echo "fault-hostile: ACCEPTED $what" >&2
  elif grep -qF -- "$field" <<<"$out"; then
    refused=$((refused + 1))
  else
    accepted=$((accepted + 1))
    echo "fault-hostile: $what failed without naming $field: $out" >&2
  fi
}
node_obj() { # name podCIDR annotations-json
  cat >"$WORK/obj.yaml" <<EOF
apiVersion: v1
kind: Node
metadata: {name: $1, annotations: $3}
spec: {podCIDR: "$2"}
EOF
}
svc_obj() { # name externalIP port
  cat >"$WORK/obj.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: $1}
spec:
  externalIPs: ["$2"]
  selector: {app: web}
  ports: [{port: $3, targetPort: 8080}]
EOF
}
slice_obj() { # name address
  cat >"$WORK/obj.yaml" <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: ["$2"]}]
ports: [{name: "", port: 6443, protocol: TCP}]
EOF
}

probe_all
for ((r = 1; r <= ROUNDS; r++)); do
  node_obj "forged-cidr-$r" "$NODE1_CIDR" '{}'
  expect_refused "Node with node-1's podCIDR" 'spec.podCIDRs[0]'
  node_obj "forged-underlay-$r" 192.168.33.0/24 '{}'
  expect_refused "Node with the underlay as podCIDR" 'spec.podCIDRs[0]'
  node_obj "forged-outside-$r" 0.0.0.0/0 '{}'
  expect_refused "Node with 0.0.0.0/0 as podCIDR" 'spec.podCIDRs[0]'
  node_obj "forged-mac-$r" 10.244.200.0/24 '{sarasa.io/vtep-mac: "00:00:00:00:00:00"}'
  expect_refused "Node with the all-zero VTEP MAC" 'metadata.annotations[sarasa.io/vtep-mac]'
  node_obj "forged-ip-$r" 10.244.201.0/24 "{sarasa.io/public-ip: \"$API_IP\"}"
  expect_refused "Node with the API server as public-ip" 'metadata.annotations[sarasa.io/public-ip]'
  svc_obj "hijack-api-$r" "$API_IP" 6443
  expect_refused "externalIP $API_IP:6443" 'spec.externalIPs[0]'
  svc_obj "hijack-lo-$r" 127.0.0.1 80
  expect_refused "externalIP 127.0.0.1" 'spec.externalIPs[0]'
  svc_obj "hijack-meta-$r" 169.254.169.254 80
  expect_refused "externalIP 169.254.169.254" 'spec.externalIPs[0]'
  svc_obj "hijack-node-$r" "$NODE1_IP" 80
  expect_refused "externalIP $NODE1_IP (node-1)" 'spec.externalIPs[0]'
  svc_obj "hijack-out-$r" 203.0.113.77 80
  expect_refused "externalIP outside the lab's range" 'spec.externalIPs[0]'
  slice_obj "hijack-api-$r" "$API_IP"
  expect_refused "endpoint $API_IP" 'endpoints[0].addresses[0]'
  slice_obj "hijack-lo-$r" 127.0.0.1
  expect_refused "endpoint 127.0.0.1" 'endpoints[0].addresses[0]'
  slice_obj "hijack-meta-$r" 169.254.169.254
  expect_refused "endpoint 169.254.169.254" 'endpoints[0].addresses[0]'
  probe_all
done

# Nothing was stored: still two Nodes, no Service or EndpointSlice named hijack-*.
stored=$(( $(s get nodes -o json | jq '[.items[] | select(.metadata.name | startswith("forged"))] | length') \
  + $(s get services -o json | jq '[.items[] | select(.metadata.name | startswith("hijack"))] | length') \
  + $(s get endpointslices -o json | jq '[.items[] | select(.metadata.name | startswith("hijack"))] | length') ))

echo "hostile objects injected: $injected"
echo "refused (422 naming the field): $refused"
echo "accepted: $accepted"
echo "hostile objects stored: $stored"
echo "service probes answered: $answered/$probes"
[ "$accepted" -eq 0 ] && [ "$refused" -eq "$injected" ] && [ "$stored" -eq 0 ] && [ "$answered" -eq "$probes" ]
