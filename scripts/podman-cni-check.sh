#!/usr/bin/env bash
# A real container runtime drives sarasa-cni: Podman with its CNI backend starts a busybox
# container on a sarasa conflist inside a throw-away "node" network namespace. The container
# must get the address sarasa allocated and reach its gateway; stopping it must release the
# address and remove the host veth. Then `podman run -p 18081:8080` (the portMappings
# capability): a client namespace wired to the node reaches the container's web server at the
# node's address, and stopping the container takes the mapping away.
#
# Everything is private and removed on exit, also on failure: the node namespace, Podman's
# storage root, run root and tmp dir, the CNI config and plugin dirs, the IPAM data dir, and
# libcni's cached result for this network.
#
# Usage: scripts/podman-cni-check.sh [path/to/sarasa-cni]
#   (default: $SARASA_CNI_BIN, else target/debug/sarasa-cni under $CARGO_TARGET_DIR or ./target)
# Needs root, podman (4.x), runc, busybox-static; installs them with apt-get when missing.
set -euo pipefail

log() { echo "podman-cni-check: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-${SARASA_CNI_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/sarasa-cni}}
[ -x "$BIN" ] || die "sarasa-cni binary not found at $BIN (build it: cargo build -p sarasa-cni)"

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v nsenter >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
# The image holds just this one binary, so it must be static (ldd fails on static ones).
static_busybox() {
    for b in /bin/busybox /usr/bin/busybox; do
        if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then echo "$b"; return; fi
    done
}
BUSYBOX=$(static_busybox)
[ -n "$BUSYBOX" ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${need[@]}" >&2 || { apt-get update >&2 && apt-get install -y "${need[@]}" >&2; }
    BUSYBOX=$(static_busybox)
    [ -n "$BUSYBOX" ] || die "no static busybox after installing busybox-static"
fi

TAG="sarasa-pm$$"
NODE="$TAG-node"
CLIENT="$TAG-client"
NET="$TAG-net"
WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
CTR="$TAG-ctr"
IMAGE="localhost/sarasa-busybox:check"
SUBNET_PREFIX="10.88.77"
GATEWAY="$SUBNET_PREFIX.1"

export CONTAINERS_CONF="$WORK/containers.conf"
# libcni caches results under /var/lib/cni (not configurable in Podman 4.x): remove the
# directories afterwards if this run created them.
CNI_CACHE_EXISTED=0
[ -d /var/lib/cni ] && CNI_CACHE_EXISTED=1
PODMAN=(podman --root "$WORK/root" --runroot "$WORK/runroot" --tmpdir "$WORK/tmp"
        --storage-driver vfs --runtime runc --cgroup-manager cgroupfs
        --events-backend file --network-config-dir "$WORK/net.d")
in_node() { nsenter --net="/run/netns/$NODE" "$@"; }

cleanup() {
    local rc=$?
    set +e
    if [ -d "$WORK" ]; then
        in_node "${PODMAN[@]}" rm -f -t 0 "$CTR" >/dev/null 2>&1
        "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
        # vfs layers and overlay mounts live under the private root
        for m in $(awk -v w="$WORK" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r); do
            umount -l "$m" 2>/dev/null
        done
        rm -rf "$WORK"
    fi
    rm -f /var/lib/cni/results/"$NET"-* 2>/dev/null
    if [ $CNI_CACHE_EXISTED = 0 ]; then
        rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null
    fi
    ip netns del "$NODE" 2>/dev/null
    ip netns del "$CLIENT" 2>/dev/null
    if [ $rc -eq 0 ]; then log "PASS"; else log "FAIL (exit $rc)"; fi
    exit $rc
}
trap cleanup EXIT INT TERM

mkdir -p "$WORK"/{bin,net.d,root,runroot,tmp,ipam,rootfs/bin}
cp "$BIN" "$WORK/bin/sarasa-cni"

cat >"$CONTAINERS_CONF" <<EOF
[network]
network_backend = "cni"
cni_plugin_dirs = ["$WORK/bin"]
network_config_dir = "$WORK/net.d"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF

# Podman 4.x links libcni 1.1 (spec up to 1.0.0): the list says 1.0.0; newer runtimes pick
# 1.1.0 from cniVersions.
cat >"$WORK/net.d/$NET.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "$NET",
  "plugins": [
    {
      "type": "sarasa-cni",
      "mode": "bridge",
      "bridge": "sarasa0",
      "mtu": 1500,
      "ipam": {
        "ranges": [[{"subnet": "$SUBNET_PREFIX.0/24"}]],
        "dataDir": "$WORK/ipam"
      },
      "dns": {"nameservers": ["10.96.0.10"]},
      "capabilities": {"portMappings": true}
    }
  ]
}
EOF

# A one-binary image: static busybox imported as a rootfs tarball.
cp "$BUSYBOX" "$WORK/rootfs/bin/busybox"
ln -s busybox "$WORK/rootfs/bin/sh"
tar -C "$WORK/rootfs" -cf "$WORK/busybox.tar" .
"${PODMAN[@]}" import "$WORK/busybox.tar" "$IMAGE" >/dev/null 2>&1

ip netns add "$NODE"
ip -n "$NODE" link set lo up

log "starting container on $NET inside netns $NODE"
in_node "${PODMAN[@]}" run -d --name "$CTR" --pull never \
    --ulimit nproc=1024:1024 --ulimit nofile=1024:1024 \
    --network "$NET" "$IMAGE" /bin/busybox sleep 600 >/dev/null

ALLOC=$(cat "$WORK/ipam/allocations.json")
ADDR=$(echo "$ALLOC" | grep -o "\"$SUBNET_PREFIX\.[0-9]*/24\"" | head -1 | tr -d '"')
[ -n "$ADDR" ] || die "no allocation recorded: $ALLOC"
log "sarasa allocated $ADDR"

INSIDE=$(in_node "${PODMAN[@]}" exec "$CTR" /bin/busybox ip -4 -o addr show dev eth0)
echo "$INSIDE" | grep -q "inet $ADDR" || die "container eth0 lacks $ADDR: $INSIDE"
ROUTE=$(in_node "${PODMAN[@]}" exec "$CTR" /bin/busybox ip route)
echo "$ROUTE" | grep -q "default via $GATEWAY" || die "no default route via $GATEWAY: $ROUTE"
in_node "${PODMAN[@]}" exec "$CTR" /bin/busybox ping -c 2 -W 2 "$GATEWAY" >/dev/null \
    || die "container cannot reach gateway $GATEWAY"
log "container has $ADDR and reaches $GATEWAY"
HOSTVETHS=$(ip -n "$NODE" -o link show type veth | wc -l)
[ "$HOSTVETHS" = 1 ] || die "expected one host veth in the node, found $HOSTVETHS"

in_node "${PODMAN[@]}" stop -t 0 "$CTR" >/dev/null 2>&1
tr -d ' \n' <"$WORK/ipam/allocations.json" | grep -q '"allocations":\[\]' \
    || die "address still allocated after stop: $(cat "$WORK/ipam/allocations.json")"
HOSTVETHS=$(ip -n "$NODE" -o link show type veth | wc -l)
[ "$HOSTVETHS" = 0 ] || die "host veth left after stop"
log "stop released $ADDR and removed the host veth"
in_node "${PODMAN[@]}" rm "$CTR" >/dev/null

# hostPort through Podman's -p: a client outside the node reaches the container.
# The body of GET / from inside netns $1 to $2:$3 (bash's /dev/tcp: no client to install).
http_get() {
    nsenter --net="/run/netns/$1" timeout 3 bash -c \
        "exec 3<>/dev/tcp/$2/$3 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null |
        tr -d '\r' | awk 'body {print} /^$/ {body=1}' || true
}
ip netns add "$CLIENT"
ip -n "$NODE" link add hp0 type veth peer name hp1 netns "$CLIENT"
ip -n "$NODE" addr add 192.168.202.1/24 dev hp0
ip -n "$NODE" link set hp0 up
ip -n "$CLIENT" addr add 192.168.202.2/24 dev hp1
ip -n "$CLIENT" link set hp1 up
ip -n "$CLIENT" link set lo up
log "starting a web server container with -p 18081:8080"
in_node "${PODMAN[@]}" run -d --name "$CTR" --pull never \
    --ulimit nproc=1024:1024 --ulimit nofile=1024:1024 \
    --network "$NET" -p 18081:8080 "$IMAGE" /bin/sh -c \
    '/bin/busybox mkdir -p /www && echo hostport-ok > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www' >/dev/null
tr -d ' \n' <"$WORK/ipam/allocations.json" | grep -q '"hostPort":18081' \
    || die "the mapping is not recorded: $(cat "$WORK/ipam/allocations.json")"
GOT=""
for _ in $(seq 1 50); do
    GOT=$(http_get "$CLIENT" 192.168.202.1 18081)
    [ "$GOT" = hostport-ok ] && break
    sleep 0.2
done
[ "$GOT" = hostport-ok ] || {
    in_node nft list table inet sarasa-hostport >&2 || true
    in_node "${PODMAN[@]}" logs "$CTR" >&2 || true
    in_node "${PODMAN[@]}" ps -a >&2 || true
    die "hostPort 18081 on the node did not answer from the client (got: $GOT)"
}
log "the client reached the container through hostPort 18081"
in_node "${PODMAN[@]}" stop -t 0 "$CTR" >/dev/null 2>&1
if in_node nft list table inet sarasa-hostport >/dev/null 2>&1; then
    die "table inet sarasa-hostport left after stop: $(in_node nft list table inet sarasa-hostport)"
fi
log "stop removed the host port"
in_node "${PODMAN[@]}" rm "$CTR" >/dev/null
