#!/usr/bin/env python3
"""N sequential requests to a `sarasa serve` TCP port, one new connection each (run inside the
external host's namespace). Prints one JSON line: latencies (ms) and, per request, the pod that
answered and the client address it saw. Used by scripts/bench-lb.sh."""
import json
import socket
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat, pods, clients, errors = [], [], [], 0
for _ in range(count):
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"bench\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        lat.append((time.perf_counter() - t0) * 1000.0)
        reply = json.loads(buf.decode())
        pods.append(reply.get("pod", ""))
        clients.append(reply.get("client", "").rsplit(":", 1)[0])
    except (OSError, ValueError):
        errors += 1
print(json.dumps({"lat": lat, "pods": pods, "clients": clients, "errors": errors}))
