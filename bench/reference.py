"""The cluster-set cable's path built by hand, for bench/clusterset.py: what a pod on one
cluster's gateway reaches a pod on the other's through, with no sarasa in it.

  client --veth(1450)-- [br0] gw-a --wan0(1500)-- [bridge in wan] --wan0-- gw-b [br0]
      --veth(1450)-- server
                        gw-a and gw-b: a VXLAN device (VNI 4242, port 4800, MTU 1450) on wan0

The same devices and MTUs as the lab's (pod veth on the node's bridge, which holds the pods'
gateway address as the lab's `sarasa0` does in its default bridge mode, the gateway's VXLAN
cable over its WAN link, the WAN bridge), built with iproute2 in namespaces of its own (`csref<pid>-*`, private
addresses only inside them), removed on exit. The server namespace runs `sarasa serve` on 8080
and one iperf3 server; both are stopped by their pids.
"""

import os
import subprocess
import time


def _run(*args):
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr}")
    return r.stdout


class Path:
    def __init__(self, sarasa):
        self.sarasa = sarasa
        self.prefix = f"csref{os.getpid()}"
        self.namespaces = []
        self.children = []
        self.server_ip = "10.99.2.2"

    def ns(self, role):
        return f"{self.prefix}-{role}"

    @property
    def client(self):
        return f"/run/netns/{self.ns('client')}"

    def _add(self, role):
        name = self.ns(role)
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _veth(self, a, a_if, b, b_if, mtu):
        _run("ip", "-n", a, "link", "add", a_if, "mtu", str(mtu), "type", "veth",
             "peer", "name", b_if, "mtu", str(mtu), "netns", b)
        _run("ip", "-n", a, "link", "set", a_if, "up")
        _run("ip", "-n", b, "link", "set", b_if, "up")

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self):
        client, gw_a, wan, gw_b, server = (
            self._add(r) for r in ("client", "gw-a", "wan", "gw-b", "server"))
        _run("ip", "-n", wan, "link", "add", "wan", "type", "bridge")
        _run("ip", "-n", wan, "link", "set", "wan", "up")
        sides = [
            (client, gw_a, "10.99.1.2", "10.99.1.1", "10.99.2.0/24", "172.31.9.11", "241.0.0.11",
             "172.31.9.12", "241.0.0.12"),
            (server, gw_b, "10.99.2.2", "10.99.2.1", "10.99.1.0/24", "172.31.9.12", "241.0.0.12",
             "172.31.9.11", "241.0.0.11"),
        ]
        for i, (pod, gw, pod_ip, gw_ip, far, wan_ip, vtep, far_wan, far_vtep) in enumerate(sides):
            self._veth(gw, "veth0", pod, "eth0", 1450)
            _run("ip", "-n", pod, "addr", "add", f"{pod_ip}/24", "dev", "eth0")
            _run("ip", "-n", pod, "route", "add", "default", "via", gw_ip)
            _run("ip", "-n", gw, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", gw, "link", "set", "veth0", "master", "br0")
            _run("ip", "-n", gw, "link", "set", "br0", "up")
            _run("ip", "-n", gw, "addr", "add", f"{gw_ip}/24", "dev", "br0")
            self._veth(wan, f"p{i}", gw, "wan0", 1500)
            _run("ip", "-n", wan, "link", "set", f"p{i}", "master", "wan")
            _run("ip", "-n", gw, "addr", "add", f"{wan_ip}/24", "dev", "wan0")
            _run("ip", "-n", gw, "link", "add", "cable", "mtu", "1450", "type", "vxlan", "id",
                 "4242", "dstport", "4800", "local", wan_ip, "dev", "wan0", "nolearning")
            _run("ip", "-n", gw, "addr", "add", f"{vtep}/8", "dev", "cable")
            _run("ip", "-n", gw, "link", "set", "cable", "up")
            _run("bridge", "-n", gw, "fdb", "append", "00:00:00:00:00:00", "dev", "cable",
                 "dst", far_wan)
            _run("ip", "-n", gw, "route", "add", far, "via", far_vtep, "dev", "cable", "onlink")
            _run("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        serve = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{server}", self.sarasa, "serve", "-p", "8080",
             "--pod-name", "reference"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(serve)
        iperf = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{server}", "iperf3", "-s", "-p", "5201", "-1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(iperf)
        deadline = time.monotonic() + 30
        while ":5201 " not in subprocess.run(
                ["nsenter", f"--net=/run/netns/{server}", "ss", "-Hltn", "sport", "=", ":5201"],
                capture_output=True, text=True).stdout:
            if time.monotonic() > deadline:
                raise SystemExit("iperf3 does not listen in the hand-built path")
            time.sleep(0.05)
        while subprocess.run(
                ["nsenter", f"--net={self.client}", self.sarasa, "probe", "--timeout", "1s",
                 f"tcp://{self.server_ip}:8080"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the hand-built path does not carry a connection")
            time.sleep(0.05)

    def __exit__(self, *exc):
        for c in self.children:
            c.kill()
            c.wait()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        return False
