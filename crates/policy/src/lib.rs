//! NetworkPolicy: Kubernetes `networking.k8s.io/v1` semantics, evaluated in plain Rust and
//! compiled to an nftables model (pure: no I/O).
//!
//! - [`PolicyState`] holds namespaces, pods, policies and node addresses (`apply_*`/`delete_*`
//!   per object, as a watcher delivers them);
//! - [`allowed`] / [`matrix`] answer "is this new connection allowed, and which policies
//!   isolate its ends" — the oracle of the tests and of `sarasa policy matrix`;
//! - [`compile`] builds table `inet sarasa-policy`; diff two compiles with [`sarasa_nft::diff`]
//!   for the minimal update; `sarasa_nft::interp::run_hook` runs a packet through it (with
//!   every other table of the node) at the forward hook — the tests check that interpreter
//!   against [`allowed`] and against real packets;
//! - [`drop_event`] turns a logged drop (nflog prefix + addresses) into pods and policies;
//! - [`PolicyCompiler`] is the same compiler kept alive: one object change at a time, touching
//!   only what it can affect, and [`PolicyCompiler::take_transaction`] for the nft update.
//!
//! # Use from the node agent
//! ```text
//! let mut pc = PolicyCompiler::new(state, CompileOptions { node: Some(node_name), ..Default::default() });
//! backend.reconcile(pc.table())?;            // start/restart: diff against what the kernel holds
//! // per watch event (several may be batched into one transaction):
//! pc.apply_pod(pod) / pc.delete_pod(&key) / pc.apply_namespace(ns) / pc.delete_namespace(name)
//! pc.apply_policy(policy)? / pc.delete_policy(&key)   // Err: invalid policy, report it, go on
//! backend.apply(&pc.take_transaction())?;    // on failure: backend.reconcile(pc.table())
//! // NETLINK_NETFILTER socket: send bind_request(opts.log_group, seq), then for each datagram
//! // parse_messages(&buf) -> LoggedPacket; packet.event(pc.state()) -> DropEvent
//! ```
//!
//! # Semantics chosen where Kubernetes leaves room
//! - `ipBlock` matches by address, pod addresses included (as Calico, and as the upstream e2e
//!   tests "allow egress access to server in CIDR block" expect).
//! - Named ports resolve on the destination pod's container ports of the same protocol: for
//!   ingress the selected pod, for egress each peer pod; towards an address that belongs to no
//!   pod a named port matches nothing.
//! - Traffic between a pod and its own node is always allowed: node-originated packets leave
//!   through the `output` hook and packets to the node arrive at `input`; the table hooks only
//!   `forward`, so neither is policed. A pod's loopback never leaves the pod.
//! - Established connections stay allowed when policies change (`ct state established,related
//!   accept` first): policy judges new connections, as kube-proxy-era implementations do.
//!
//! # Datapath
//! One base chain `forward` (filter, priority 0, after service DNAT at prerouting -100, so
//! traffic through a Service is judged on the endpoint pod's address). A packet costs the
//! conntrack check, four map lookups (`egress-v4/v6` by source, `ingress-v4/v6` by destination)
//! and, for an isolated pod, the rules of the policies selecting that pod — each a set lookup.
//! Neither the number of pods nor of other policies adds work. Same-node pod-to-pod traffic
//! must traverse `forward`: routed pod interfaces, or a bridge with `bridge-nf-call-iptables`.

mod compile;
mod eval;
mod event;
mod incremental;
mod matrix;
mod nflog;
mod ranges;
mod sets;
mod state;

pub use compile::{
    allow_comment, chain_name, compile, log_prefix, logged_set_name, map_name, parse_allow_comment,
    CompileOptions, FORWARD_CHAIN, FORWARD_PRIORITY, TABLE,
};
pub use eval::{allowed, Endpoint, Verdict};
pub use event::{drop_event, parse_log_prefix, DropEvent, PrefixTarget};
pub use incremental::PolicyCompiler;
pub use matrix::{matrix, render_bits, Matrix};
pub use nflog::{bind_request, parse_messages, LoggedPacket};
pub use ranges::{port_blocks, subtract};
pub use sarasa_model::selector::{
    validate_label_key, validate_label_value, LabelSelector, Labels, Operator, Requirement,
};
pub use state::PolicyState;
// The domain types live in `sarasa-model`; these paths stay for existing users.
pub use sarasa_model::policy::{
    validate_port_name, ContainerPort, Direction, IpBlock, NetworkPolicy, Peer, PodKey,
    PolicyError, PolicyKey, PolicyNamespace, PolicyPod, PolicyPort, PolicyRule, PortRef,
    NAMESPACE_NAME_LABEL,
};
pub use sarasa_model::Protocol;
