#!/usr/bin/env bash
# CNI ADD/DEL latency (p50, p99) over 200 sequential and 20 concurrent pods, for sarasa-cni
# and, in the same run, Debian's reference bridge + host-local plugins (/usr/lib/cni).
# Builds release binaries first. Needs root (creates and removes its own namespaces).
#
# Usage: scripts/bench-cni.sh [--pods N] [--concurrent C] [--reference-dir DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/host-local ]; then
    echo "installing containernetworking-plugins for the reference figures" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y containernetworking-plugins >&2 \
        || { apt-get update >&2 && apt-get install -y containernetworking-plugins >&2; }
fi
cargo build --release -p sarasa-cni --bins >&2
echo "nproc: $(nproc); $(grep -m1 'model name' /proc/cpuinfo); kernel: $(uname -r)"
exec "$TARGET/release/cni-bench" --sarasa "$TARGET/release/sarasa-cni" "$@"
