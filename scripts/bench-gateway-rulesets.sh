#!/usr/bin/env bash
# Where the VXLAN cable's request/response gap to the hand-built path goes (issue 12,
# "Performance"): two 2-node labs joined by the vxlan cable; between pods on the two active
# gateways, one connection's request/response rate with the gateways' rulesets replaced by
# variants of what the agents programmed (bench/gateway_rulesets.py), alternated ROUNDS times
# with the hand-built path; medians and ratios. Prints the machine; asserts nothing.
#
#   scripts/bench-gateway-rulesets.sh            ROUNDS=5
#
# Uses the labs gwrules-e and gwrules-w and the set gwrules; removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
E=gwrules-e W=gwrules-w SET=gwrules
./scripts/install-deps.sh >/dev/null
CARGO_INCREMENTAL=0 cargo build --release -q -p sarasa-cli --bin sarasa -p sarasa-cni --bin sarasa-cni
SARASA=$PWD/target/release/sarasa
cleanup() {
  "$SARASA" clusterset delete "$SET" >/dev/null 2>&1 || true
  "$SARASA" --lab "$E" lab down >/dev/null 2>&1 || true
  "$SARASA" --lab "$W" lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
cleanup
"$SARASA" --lab "$E" lab up --nodes 2 --pod-cidr 10.245.0.0/16 --service-cidr 10.112.0.0/16 --cluster-id east >/dev/null
"$SARASA" --lab "$W" lab up --nodes 2 --cluster-id west >/dev/null
"$SARASA" clusterset join "$SET" --lab "$E" --lab "$W" --cable vxlan >/dev/null
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/gateway_rulesets.py "$SARASA" "$E" "$W" "$SET" "$ROUNDS"
