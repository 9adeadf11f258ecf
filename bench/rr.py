#!/usr/bin/env python3
"""TCP request/response rate (netperf TCP_RR-like): 1-byte request, 1-byte response, one
connection, one transaction in flight, for a fixed duration. Python 3 stdlib only.

  rr.py server --port P [--bind ADDR] [--daemon --pidfile F] [--lifetime S]
  rr.py client --host H --port P [--duration S] [--connect-timeout S]

The server echoes every byte it reads; with --daemon it returns once it listens (the child
keeps serving and writes its pid to --pidfile). It always exits after --lifetime seconds, so a
forgotten server cannot outlive the benchmark. The client prints one JSON line:
{"transactions": N, "seconds": T, "rate": N/T}.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time


def serve_conn(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, send = conn.recv, conn.sendall
    try:
        while True:
            b = recv(1)
            if not b:
                break
            send(b)
    except OSError:
        pass
    finally:
        conn.close()


def server(args):
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(16)
    if args.daemon:
        pid = os.fork()
        if pid > 0:
            # Parent: the socket is already listening, so the caller may connect right away.
            if args.pidfile:
                tmp = args.pidfile + ".tmp"
                with open(tmp, "w") as f:
                    f.write(f"{pid}\n")
                os.rename(tmp, args.pidfile)
            os._exit(0)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    deadline = time.monotonic() + args.lifetime
    ls.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            conn, _ = ls.accept()
        except socket.timeout:
            continue
        conn.settimeout(None)
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()
    return 0


def client(args):
    s = socket.create_connection((args.host, args.port), timeout=args.connect_timeout)
    s.settimeout(max(5.0, args.duration))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send, recv = s.send, s.recv
    req = b"x"
    # Warm up (slow start, caches) before the clock starts.
    for _ in range(100):
        send(req)
        recv(1)
    n = 0
    start = time.monotonic()
    end = start + args.duration
    now = start
    while now < end:
        # Check the clock every 64 transactions to keep the loop's own cost small.
        for _ in range(64):
            send(req)
            if not recv(1):
                raise SystemExit("rr.py: server closed the connection")
        n += 64
        now = time.monotonic()
    s.close()
    secs = now - start
    print(json.dumps({"transactions": n, "seconds": round(secs, 3), "rate": round(n / secs, 1)}))
    return 0


def main():
    p = argparse.ArgumentParser(description="TCP 1-byte request/response rate")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=5300)
    s.add_argument("--daemon", action="store_true")
    s.add_argument("--pidfile")
    s.add_argument("--lifetime", type=float, default=900.0, help="exit after this many seconds")
    c = sub.add_parser("client")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, default=5300)
    c.add_argument("--duration", type=float, default=5.0)
    c.add_argument("--connect-timeout", type=float, default=5.0)
    args = p.parse_args()
    return server(args) if args.mode == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
