#!/usr/bin/env bash
# The whole test suite: pure unit tests, privileged namespace tests, lab end-to-end tests.
# Needs root (namespaces); installs its Debian packages itself.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
