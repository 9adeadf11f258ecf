#!/usr/bin/env python3
"""Where the cable's request/response gap goes (scripts/bench-gateway-rulesets.sh sets up the
labs): between pods on the two active gateways of a VXLAN-cabled set, one TCP connection's
request/response rate (sarasa probe --hold) with each gateway's ruleset replaced by variants
of what the agents programmed, loaded with `nft -f` on both gateways, alternated round by
round with the hand-built path (reference.py). Prints each variant's rates and the median
ratio to the hand-built path; asserts nothing.

  gateway_rulesets.py SARASA EAST WEST SET ROUNDS

Variants: as programmed; without the tunnels' raw (notrack) chains; without the MSS clamp's
and the policy table's forward chains; conntrack only (one `ct state established accept`
chain); no ruleset at all. The programmed rulesets are loaded again at the end.
"""

import json
import statistics
import subprocess
import sys
import time

import reference

SARASA, EAST, WEST, SET = sys.argv[1:5]
ROUNDS = int(sys.argv[5])
CT_ONLY = ("table inet bench-ct {\n chain f {\n  type filter hook forward priority 0; "
           "policy accept;\n  ct state established accept\n }\n}\n")


def run(*args, stdin=None):
    r = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr or r.stdout}")
    return r.stdout


def drop_chain(text, table, chain):
    """`text` (an `nft list ruleset`) without chain `chain` of `table`."""
    t = text.index(f"table {table} {{")
    start = text.index(f"\tchain {chain} {{", t)
    end = text.index("\n\t}\n", start) + 4
    return text[:start] + text[end:]


def rate(out):
    return float(out.strip().splitlines()[-1].split("(")[1].split("/s")[0])


def pod_ip(lab, name):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in json.loads(run(SARASA, "--lab", lab, "get", "pods", "-o", "json"))["items"]:
            if p["metadata"]["name"] == name and p["status"].get("podIP"):
                return p["status"]["podIP"]
        time.sleep(0.1)
    raise SystemExit(f"pod {name} in {lab} got no address")


def active_gateway(cluster):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = json.loads(run(SARASA, "clusterset", "status", SET, "-o", "json"))
        for g in st["gateways"]:
            if g["clusterId"] == cluster and g["role"] == "active":
                return g["node"]
        time.sleep(0.1)
    raise SystemExit(f"{cluster} has no active gateway")


POD = """apiVersion: v1
kind: Pod
metadata: {{name: gw-{lab}, labels: {{app: gw}}}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: sarasa/serve
    ports: [{{containerPort: 8080}}]
"""

gateways = {lab: f"/run/netns/sarasa-{lab}-{active_gateway(cluster)}"
            for lab, cluster in ((EAST, "east"), (WEST, "west"))}
for lab, ns in gateways.items():
    run(SARASA, "--lab", lab, "apply", "-f", "-",
        stdin=POD.format(lab=lab, node=ns.rsplit(f"sarasa-{lab}-", 1)[1]))
server = pod_ip(EAST, f"gw-{EAST}")
pod_ip(WEST, f"gw-{WEST}")

programmed = {lab: run("nsenter", f"--net={ns}", "nft", "list", "ruleset")
              for lab, ns in gateways.items()}
variants = {
    "as programmed": lambda t: t,
    "without the raw (notrack) chains": lambda t: drop_chain(
        drop_chain(t, "inet sarasa-node", "raw-prerouting"), "inet sarasa-node", "raw-output"),
    "without the MSS clamp's and the policy table's forward chains": lambda t: drop_chain(
        drop_chain(t, "inet sarasa-node", "forward"), "inet sarasa-policy", "forward"),
    "conntrack only": lambda t: CT_ONLY,
    "no ruleset": lambda t: "",
}


def load(variant):
    for lab, ns in gateways.items():
        run("nsenter", f"--net={ns}", "nft", "flush", "ruleset")
        text = variants[variant](programmed[lab])
        if text:
            run("nsenter", f"--net={ns}", "nft", "-f", "-", stdin=text)


def lab_rr():
    return rate(run(SARASA, "--lab", WEST, "exec", f"gw-{WEST}", "--", SARASA, "probe",
                    "--hold", "4s", "--interval", "0", f"tcp://{server}:8080"))


results = {"by hand": []}
try:
    with reference.Path(SARASA) as ref:
        for _ in range(ROUNDS):
            results["by hand"].append(rate(run(
                "nsenter", f"--net={ref.client}", SARASA, "probe", "--hold", "4s",
                "--interval", "0", f"tcp://{ref.server_ip}:8080")))
            for v in variants:
                load(v)
                results.setdefault(v, []).append(lab_rr())
finally:
    load("as programmed")
base = statistics.median(results["by hand"])
for name, rates in results.items():
    print(f"{name}: median {statistics.median(rates):.0f}/s "
          f"({', '.join(f'{r:.0f}' for r in rates)}), "
          f"{statistics.median(rates) / base:.3f} of the hand-built path")
