#!/usr/bin/env python3
"""The cluster-set benchmark's measurements (scripts/bench-clusterset.sh sets the labs up).

  clusterset.py SARASA SET EAST WEST ROUNDS ROUNDS_FAILOVER

Prints: ServiceExport-to-resolvable times (median, p90, max), gateway failover times (the
active gateway's WAN uplink cut until a new connection from the other cluster succeeds; median,
max), and iperf3 throughput from a west pod to an east pod through the cable beside the same
client to a pod on another node of its own cluster (the in-cluster VXLAN path), with the ratio.
Every wait is bounded; nothing is asserted.
"""

import json
import statistics
import subprocess
import sys
import time

SARASA, SET, EAST, WEST = sys.argv[1:5]
ROUNDS, ROUNDS_FAILOVER = int(sys.argv[5]), int(sys.argv[6])


def run(*args, check=True, timeout=120):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr or r.stdout}")
    return r


def s(lab, *args, **kw):
    return run(SARASA, "--lab", lab, *args, **kw)


def apply(lab, text):
    r = subprocess.run([SARASA, "--lab", lab, "apply", "-f", "-"], input=text,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"apply in {lab}: {r.stderr}")


def until(what, seconds, f):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.01)
    raise SystemExit(f"timed out: {what}")


def pod_ip(lab, name):
    def f():
        pods = json.loads(s(lab, "get", "pods", "-o", "json").stdout)["items"]
        return next((p["status"].get("podIP") for p in pods if p["metadata"]["name"] == name), None)
    return until(f"{name}'s address in {lab}", 60, f)


def status():
    return json.loads(run(SARASA, "clusterset", "status", SET, "-o", "json").stdout)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: sarasa/serve
    ports: [{{containerPort: 8080}}]
"""

# Pods: east's server on node-1, west's client on node-3 (not a gateway) and a west server on
# node-1 (the in-cluster reference).
apply(EAST, POD.format(name="server", app="server", node="node-1"))
apply(WEST, POD.format(name="client", app="client", node="node-3"))
apply(WEST, POD.format(name="local", app="local", node="node-1"))
east_server, west_local = pod_ip(EAST, "server"), pod_ip(WEST, "local")
pod_ip(WEST, "client")

# 1. ServiceExport to resolvable in the other cluster.
west_node = f"sarasa-{WEST}-node-1"
times = []
for i in range(ROUNDS):
    name = f"bench{i}"
    t0 = time.monotonic()
    apply(EAST, f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}}}
""")

    def answered():
        r = run("nsenter", f"--net=/run/netns/{west_node}", "dig", "+short", "+time=1",
                "+tries=1", "@10.96.0.10", f"{name}.default.svc.clusterset.local", check=False)
        return r.stdout.strip() and not r.stdout.startswith(";;")
    until(f"{name} resolvable in west", 30, answered)
    times.append(time.monotonic() - t0)
ms = [t * 1000 for t in times]
print(f"ServiceExport (apply in east) -> resolvable in west ({ROUNDS} rounds): "
      f"median {statistics.median(ms):.0f} ms, p90 {pct(ms, 90):.0f} ms, max {max(ms):.0f} ms")


# 2. Gateway failover.
def active_east():
    return next((g["node"] for g in status()["gateways"]
                 if g["clusterId"] == "east" and g["role"] == "active"), None)


def connects():
    r = s(WEST, "exec", "client", "--", SARASA, "probe", "--timeout", "1s",
          f"tcp://{east_server}:8080", check=False)
    return r.returncode == 0


def gateway_netns(node):
    return f"sarasa-{EAST}-{node}"


failover = []
for _ in range(ROUNDS_FAILOVER):
    until("east's active gateway", 30, active_east)
    until("a connection before the failover", 30, connects)
    before = active_east()
    # Cut the active gateway's WAN uplink: the cable through it is gone at once.
    t0 = time.monotonic()
    run("ip", "-n", gateway_netns(before), "link", "set", "wan0", "down")
    until("a connection after the failover", 60, connects)
    failover.append(time.monotonic() - t0)
    run("ip", "-n", gateway_netns(before), "link", "set", "wan0", "up")
    until(f"{before} a candidate again", 30, lambda: active_east() is not None)
print(f"gateway failover (active gateway's WAN uplink cut) -> new connection from west "
      f"({ROUNDS_FAILOVER} rounds): median {statistics.median(failover):.2f} s, "
      f"max {max(failover):.2f} s")


# 3. Throughput through the cable, beside the in-cluster path of the same client.
def iperf(server_lab, server_pod, address):
    s(server_lab, "exec", server_pod, "--", "iperf3", "-s", "-D", "-p", "5201", "-1")
    time.sleep(0.5)
    r = s(WEST, "exec", "client", "--", "iperf3", "-c", address, "-p", "5201", "-t", "5", "-J",
          timeout=60)
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


cable = iperf(EAST, "server", east_server)
local = iperf(WEST, "local", west_local)
print(f"iperf3 5 s, west pod -> east pod through the vxlan cable: {cable:.2f} Gbit/s; "
      f"the same client -> a pod on another node of its own cluster: {local:.2f} Gbit/s; "
      f"ratio {cable / local:.2f}")
