#!/usr/bin/env bash
# Builds the sarasa container image with podman, offline: static release binaries of `sarasa`
# and `sarasa-cni` (glibc, +crt-static) on `FROM scratch` (deploy/image/Containerfile).
#
#   scripts/build-image.sh [TAG]        default TAG: localhost/sarasa:<workspace version>
#
# SARASA_IMAGE_REUSE=1 reuses binaries already built. SARASA_IMAGE_PROFILE=image-test builds
# them unoptimised (minutes, not ~17 min: the test suite's short form, same Containerfile).
# Prints the image's size. deploy/*.yaml name the image `sarasa`: tag or push it to where
# your nodes pull from (e.g. `podman tag localhost/sarasa:0.1.0 registry.example/sarasa:0.1.0`).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${1:-localhost/sarasa:${version}}
target=x86_64-unknown-linux-gnu
profile=${SARASA_IMAGE_PROFILE:-release}
out=target/$target/$profile
podman=(podman --runtime runc --cgroup-manager cgroupfs)

if [[ "${SARASA_IMAGE_REUSE:-0}" != 1 || ! -x $out/sarasa || ! -x $out/sarasa-cni ]]; then
    CARGO_INCREMENTAL=0 RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --profile "$profile" --target "$target" -p sarasa-cli --bin sarasa -p sarasa-cni --bin sarasa-cni
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for bin in sarasa sarasa-cni; do
    # FROM scratch has no loader: refuse anything dynamically linked.
    if ldd "$out/$bin" 2>&1 | grep -q "=>"; then
        echo "error: $out/$bin is dynamically linked; build with -C target-feature=+crt-static" >&2
        exit 1
    fi
    strip -o "$ctx/$bin" "$out/$bin"
done
cp deploy/image/Containerfile "$ctx/"
"${podman[@]}" build --network=none --tag "$tag" --file "$ctx/Containerfile" "$ctx" >&2
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$tag")
echo "$tag $size bytes"
