#!/usr/bin/env python3
"""BGP convergence in the lab (issue 13): a node's speaker leaves (its session disabled with
`birdc disable`, a Cease to the route reflector) and joins again (`birdc enable`), ROUNDS times;
each time, the time from the command until another node's kernel has lost (leave) or holds
(join) the route to the moving node's podCIDR, and until the fabric router has. Polls the
kernels every 2 ms with `ip -n NETNS route`. Prints medians, p90 and max; asserts nothing.

    bench/bgp_converge.py LAB MOVER WATCHER PODCIDR ROUNDS
"""
import statistics
import subprocess
import sys
import time

lab, mover, watcher, cidr, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sarasa = sys.argv[6] if len(sys.argv) > 6 else "sarasa"
ns_watch = f"sarasa-{lab}-{watcher}"
ns_fabric = f"sarasa-{lab}-fabric"


def has_route(ns):
    out = subprocess.run(["ip", "-n", ns, "-4", "route", "show", cidr, "proto", "bird"],
                         capture_output=True, text=True).stdout
    return cidr in out


def birdc(*args):
    subprocess.run([sarasa, "--lab", lab, "exec", f"node/{mover}", "--", "birdc", *args],
                   check=True, capture_output=True)


def wait(want, deadline_s=30.0):
    """Seconds until both the watcher and the fabric show `want` (each time taken)."""
    t0 = time.monotonic()
    seen = {}
    while len(seen) < 2:
        now = time.monotonic() - t0
        if now > deadline_s:
            raise SystemExit(f"no convergence within {deadline_s} s (want route={want})")
        for name, ns in (("node", ns_watch), ("fabric", ns_fabric)):
            if name not in seen and has_route(ns) == want:
                seen[name] = now
        time.sleep(0.002)
    return seen


def session():
    out = subprocess.run([sarasa, "--lab", lab, "exec", f"node/{mover}", "--", "birdc",
                          "show", "protocols"], capture_output=True, text=True).stdout
    return next(l.split()[0] for l in out.splitlines() if " BGP " in l)


proto = session()
res = {"leave": {"node": [], "fabric": []}, "join": {"node": [], "fabric": []}}
for _ in range(rounds):
    for kind, cmd, want in (("leave", "disable", False), ("join", "enable", True)):
        t0 = time.monotonic()
        birdc(cmd, proto)
        cmd_s = time.monotonic() - t0
        seen = wait(want)
        for k, v in seen.items():
            res[kind][k].append((v + cmd_s) * 1000)


def fmt(xs):
    xs = sorted(xs)
    return "median %7.1f ms  p90 %7.1f ms  max %7.1f ms" % (
        statistics.median(xs), xs[min(len(xs) - 1, int(0.9 * len(xs)))], xs[-1])


for kind in ("leave", "join"):
    for where in ("fabric", "node"):
        print(f"{kind:5} -> {where:6} ({len(res[kind][where])} rounds): {fmt(res[kind][where])}")
