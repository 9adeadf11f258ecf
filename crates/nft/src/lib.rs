//! Typed nftables ruleset model, rendering and apply backends
