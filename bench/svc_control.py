#!/usr/bin/env python3
"""Control-plane benchmark helper for scripts/bench-services-control.sh (issue 4).

Runs inside the lab's fabric namespace and talks plain HTTP to the lab API server.

  svc_control.py create N [PREFIX]      create Services PREFIX-0..N-1 (no selector) and one
                                        EndpointSlice each (2 ready endpoints); waits until the
                                        agent's Lease observed RV >= the last write's RV; prints
                                        "create N secs last_rv"
  svc_control.py wait-rv RV TIMEOUT [SINCE]
                                        waits for the Lease (with SINCE, epoch seconds: of an
                                        agent started at or after SINCE); prints "wait secs"
  svc_control.py change NAME K NSEXEC   K times: PUT the EndpointSlice NAME-slice with a new
                                        second address, time response -> Lease observed RV >=
                                        write RV; prints one "sample ms addr" line per change
Stdlib only.
"""
import http.client
import json
import queue
import sys
import threading
import time
from datetime import datetime

HOST, PORT = "192.168.33.1", 6443
LEASE = "/apis/coordination.k8s.io/v1/namespaces/sarasa-system/leases/agent-node-1"
SVC = "/api/v1/namespaces/default/services"
EPS = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def conn():
    return http.client.HTTPConnection(HOST, PORT, timeout=60)


def req(c, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    hdr = {"Content-Type": "application/json"} if data else {}
    c.request(method, path, body=data, headers=hdr)
    r = c.getresponse()
    raw = r.read()
    return r.status, raw


def service(name):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": 8080}]}}


def slice_(name, second="10.244.0.11"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name + "-slice", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}}
                          for a in ("10.244.0.10", second)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def rv_of(raw):
    return int(json.loads(raw)["metadata"]["resourceVersion"])


def lease_rv(c, since=None):
    """The agent's observed resourceVersion; -1 when the Lease is missing or, with `since`
    (epoch seconds), written by an agent process started before then."""
    st, raw = req(c, "GET", LEASE)
    if st != 200:
        return -1
    lease = json.loads(raw)
    if since is not None:
        acquired = (lease.get("spec") or {}).get("acquireTime")
        if not acquired or datetime.fromisoformat(acquired.replace("Z", "+00:00")).timestamp() < since:
            return -1
    ann = lease["metadata"].get("annotations") or {}
    return int(ann.get("sarasa.io/observed-resource-version", "-1"))


def wait_rv(rv, timeout, interval=0.002, since=None):
    c = conn()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if lease_rv(c, since) >= rv:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            c = conn()
        time.sleep(interval)
    return None


def create(n, prefix, threads=8):
    q = queue.Queue()
    for i in range(n):
        q.put(i)
    maxrv = [0]
    errors = []
    lock = threading.Lock()

    def work():
        c = conn()
        local = 0
        while True:
            try:
                i = q.get_nowait()
            except queue.Empty:
                break
            name = f"{prefix}-{i}"
            for path, body in ((SVC, service(name)), (EPS, slice_(name))):
                for attempt in range(5):
                    try:
                        st, raw = req(c, "POST", path, body)
                        break
                    except (OSError, http.client.HTTPException):
                        c = conn()
                else:
                    st, raw = 0, b"connection failed"
                if st in (200, 201):
                    local = max(local, rv_of(raw))
                elif st != 409:
                    with lock:
                        errors.append((name, st, raw[:200]))
        with lock:
            maxrv[0] = max(maxrv[0], local)

    t0 = time.monotonic()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1 = time.monotonic()
    for e in errors[:5]:
        print("error", *e, file=sys.stderr)
    print(f"created {n} services+slices in {t1 - t0:.1f} s; {len(errors)} errors; last rv {maxrv[0]}",
          file=sys.stderr)
    return t0, t1, maxrv[0], len(errors)


def main():
    cmd = sys.argv[1]
    if cmd == "create":
        n = int(sys.argv[2])
        prefix = sys.argv[3] if len(sys.argv) > 3 else "bench"
        timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600
        t0, t1, rv, nerr = create(n, prefix)
        done = wait_rv(rv, timeout, 0.05)
        total = (done - t0) if done else -1
        after = (done - t1) if done else -1
        print(f"create {n} write_s {t1 - t0:.2f} program_s {total:.2f} after_last_write_s {after:.2f} last_rv {rv} errors {nerr}")
    elif cmd == "lease-rv":
        print(lease_rv(conn()))
    elif cmd == "max-rv":
        # highest resourceVersion among Services and EndpointSlices now stored
        c = conn()
        m = 0
        for p in (SVC, EPS):
            st, raw = req(c, "GET", p + "?limit=1")
            if st == 200:
                m = max(m, int(json.loads(raw)["metadata"].get("resourceVersion") or 0))
        print(m)
    elif cmd == "wait-rv":
        rv, timeout = int(sys.argv[2]), float(sys.argv[3])
        since = float(sys.argv[4]) if len(sys.argv) > 4 else None
        t0 = time.monotonic()
        done = wait_rv(rv, timeout, 0.05, since)
        print(f"wait {(done - t0) if done else -1:.2f}")
    elif cmd == "change":
        name, k = sys.argv[2], int(sys.argv[3])
        c = conn()
        path = f"{EPS}/{name}-slice"
        for i in range(k):
            addr = f"10.244.{1 + i // 250}.{1 + i % 250}"
            st, raw = req(c, "GET", path)
            obj = json.loads(raw)
            obj["endpoints"][1]["addresses"] = [addr]
            st, raw = req(c, "PUT", path, obj)
            t0 = time.monotonic()
            if st not in (200, 201):
                print(f"error PUT {st} {raw[:200]!r}", file=sys.stderr)
                continue
            rv = rv_of(raw)
            done = wait_rv(rv, 30, 0.002)
            ms = (done - t0) * 1000 if done else -1
            print(f"sample {ms:.1f} {addr}", flush=True)
            time.sleep(0.2)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
