#!/usr/bin/env bash
# The whole test suite: pure unit tests, mock- and real-API-server tests, privileged namespace
# tests, Podman driving the CNI plugin, and lab end-to-end tests. Needs root (namespaces);
# installs its Debian packages itself.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --workspace --bins
# Libraries and the CNI plugin: two test threads.
cargo test --workspace --exclude sarasa-cli -- --test-threads=2
# The lab end-to-end tests (crates/cli/tests/lab_*.rs) each bring up a multi-node lab; they run
# one at a time so timing-sensitive checks (held connections across datapath changes) are not
# judged under the load of a second lab.
cargo test -p sarasa-cli -- --test-threads=1
