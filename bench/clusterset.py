#!/usr/bin/env python3
"""The cluster-set benchmark's measurements (scripts/bench-clusterset.sh sets the labs up and
joins them with the cable CABLE).

  clusterset.py SARASA SET EAST WEST ROUNDS ROUNDS_FAILOVER CABLE

Prints: ServiceExport-to-resolvable times (median, p90, max), gateway failover times (the
active gateway's WAN uplink cut until a new connection from the other cluster succeeds; median,
max); iperf3 throughput from a west pod on a non-gateway node to an east pod through the cable,
beside the same client to a pod on another node of its own cluster (the in-cluster VXLAN
path); and between pods on the two active gateways: throughput, TCP request/response rate and
the machine's CPU seconds per Gbit, beside the same path built by hand (reference.py: veth
on a node bridge, VXLAN over the WAN bridge, no sarasa) for the vxlan cable. Every wait is bounded; nothing is asserted.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import reference

SARASA, SET, EAST, WEST = sys.argv[1:5]
ROUNDS, ROUNDS_FAILOVER = int(sys.argv[5]), int(sys.argv[6])
CABLE = sys.argv[7]
RR_ROUNDS = int(os.environ.get("RR_ROUNDS", "3"))


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
    name = f"{CABLE}-bench{i}"
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
def iperf_from(ns_or_pod, address, seconds=5):
    """iperf3 -J from a west pod (name) or a namespace (/run/netns path): the report."""
    args = ["iperf3", "-c", address, "-p", "5201", "-t", str(seconds), "-J"]
    if ns_or_pod.startswith("/"):
        r = run("nsenter", f"--net={ns_or_pod}", *args, timeout=60)
    else:
        r = s(WEST, "exec", ns_or_pod, "--", *args, timeout=60)
    return json.loads(r.stdout)


def iperf_server(lab, pod):
    """One iperf3 server (-1: it ends after one test) in a pod, once it listens."""
    s(lab, "exec", pod, "--", "iperf3", "-s", "-D", "-p", "5201", "-1")
    until(f"iperf3 listening in {pod}", 10, lambda: ":5201 " in s(
        lab, "exec", pod, "--", "ss", "-Hltn", "sport", "=", ":5201").stdout)


def iperf(server_lab, server_pod, address, client="client"):
    iperf_server(server_lab, server_pod)
    return iperf_from(client, address)["end"]["sum_received"]["bits_per_second"] / 1e9


cable = iperf(EAST, "server", east_server)
local = iperf(WEST, "local", west_local)
print(f"iperf3 5 s, west pod (non-gateway node) -> east pod through the {CABLE} cable: "
      f"{cable:.2f} Gbit/s; the same client -> a pod on another node of its own cluster: "
      f"{local:.2f} Gbit/s; ratio {cable / local:.2f}")


# 4. Between pods on the two active gateways: throughput, request/response rate and CPU per
# Gbit, beside the same path built by hand.
def busy_seconds():
    """The machine's non-idle CPU time so far (all cores), from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def agent_seconds(lab, node):
    """CPU time of the agent process in a node's namespace (the WireGuard cable's home)."""
    total = 0.0
    pids = run("ip", "netns", "pids", f"sarasa-{lab}-{node}").stdout.split()
    for pid in pids:
        try:
            argv = open(f"/proc/{pid}/cmdline").read().split("\0")
            # The DaemonSet's `sarasa agent --config=...` (not its install-cni step).
            if "agent" not in argv[:2] or "install-cni" in argv:
                continue
            st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def measured(client, address, agents=()):
    """(Gbit/s, CPU s per Gbit, agents' CPU s per Gbit) of one 5 s iperf3 run."""
    busy0, agents0 = busy_seconds(), sum(agent_seconds(*a) for a in agents)
    report = iperf_from(client, address)
    busy, used = busy_seconds() - busy0, sum(agent_seconds(*a) for a in agents) - agents0
    end = report["end"]["sum_received"]
    gbit = end["bytes"] * 8 / 1e9
    return end["bits_per_second"] / 1e9, busy / gbit, used / gbit


def rr(client, url):
    """Request/response rate of one TCP connection for 5 s (sarasa probe --hold)."""
    args = [SARASA, "probe", "--hold", "5s", "--interval", "0", url]
    if client.startswith("/"):
        r = run("nsenter", f"--net={client}", *args, timeout=60)
    else:
        r = s(WEST, "exec", client, "--", *args, timeout=60)
    line = r.stdout.strip().splitlines()[-1]
    return float(line.split("(")[1].split("/s")[0])


def active(cluster):
    return until(f"{cluster}'s active gateway", 30, lambda: next(
        (g["node"] for g in status()["gateways"]
         if g["clusterId"] == cluster and g["role"] == "active"), None))


east_gw, west_gw = active("east"), active("west")
# Named per cable: the script runs once per cable on the same labs.
GW_SERVER, GW_CLIENT = f"gw-server-{CABLE}", f"gw-client-{CABLE}"
apply(EAST, POD.format(name=GW_SERVER, app=GW_SERVER, node=east_gw))
apply(WEST, POD.format(name=GW_CLIENT, app=GW_CLIENT, node=west_gw))
gw_server = pod_ip(EAST, GW_SERVER)
pod_ip(WEST, GW_CLIENT)
until("a pod on west's gateway reaches one on east's", 30, lambda: s(
    WEST, "exec", GW_CLIENT, "--", SARASA, "probe", "--timeout", "1s",
    f"tcp://{gw_server}:8080", check=False).returncode == 0)
agents = [(EAST, east_gw), (WEST, west_gw)]

iperf_server(EAST, GW_SERVER)
lab_tput, lab_cpu, lab_agent_cpu = measured(GW_CLIENT, gw_server, agents)
line = (f"pod on west's gateway -> pod on east's gateway through the {CABLE} cable: "
        f"{lab_tput:.2f} Gbit/s, {lab_cpu:.2f} CPU s per Gbit (machine)")
if CABLE == "wireguard":
    line += f", of which the two gateways' agents (userspace WireGuard) {lab_agent_cpu:.2f}"
lab_url = f"tcp://{gw_server}:8080"

if CABLE == "vxlan":
    # Request/response is the noisier figure: RR_ROUNDS runs of each path, alternated, and
    # their medians.
    with reference.Path(SARASA) as ref:
        ref_tput, ref_cpu, _ = measured(ref.client, ref.server_ip)
        lab_rrs, ref_rrs = [], []
        for _ in range(RR_ROUNDS):
            lab_rrs.append(rr(GW_CLIENT, lab_url))
            ref_rrs.append(rr(ref.client, f"tcp://{ref.server_ip}:8080"))
    lab_rr, ref_rr = statistics.median(lab_rrs), statistics.median(ref_rrs)
    print(f"{line}; TCP request/response {lab_rr:.0f}/s (median of "
          f"{', '.join(f'{x:.0f}' for x in lab_rrs)})")
    print(f"the same path built by hand (veth on a node bridge, VXLAN over the WAN bridge, no sarasa): "
          f"{ref_tput:.2f} Gbit/s, {ref_cpu:.2f} CPU s per Gbit; TCP request/response "
          f"{ref_rr:.0f}/s (median of {', '.join(f'{x:.0f}' for x in ref_rrs)})")
    print(f"sarasa / by hand: throughput {lab_tput / ref_tput:.2f}, "
          f"request/response {lab_rr / ref_rr:.2f} (target >= 0.9)")
else:
    print(f"{line}; TCP request/response {rr(GW_CLIENT, lab_url):.0f}/s")
