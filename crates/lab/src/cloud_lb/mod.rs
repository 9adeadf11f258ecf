//! The lab's cloud load balancer (issue 13, after the container-native load balancing seed):
//! a namespace between the fabric and the external host — the cloud's edge — holding an L4
//! load balancer in nftables, programmed by a controller in the control plane.
//!
//! ```text
//! external 203.0.113.10 ── edge (203.0.113.1 | 192.168.34.2) ── fabric (192.168.34.1) ── nodes
//!                          table inet sarasa-cloud-lb
//! ```
//! Every packet between the external host and the cluster crosses the edge both ways, so the
//! balancer only rewrites destinations (DNAT) and conntrack reverses them: clients keep their
//! own address. A Service of type LoadBalancer gets one listener per port on its ingress
//! address; the targets depend on `sarasa.io/load-balancer-target`:
//! - `instance` (default): every Ready node's NodePort — the seed's double hop (the node's
//!   proxy picks the pod, maybe on another node);
//! - `ip`: the Service's ready endpoints themselves (pod addresses: the fabric routes each
//!   node's podCIDR to it — this controller's routes with vxlan and host-gw, BGP's with bgp,
//!   the VPC's per-address routes with vpc), as AWS's IP targets and GCP's network endpoint
//!   groups.
//!
//! The balancer's own health checks (TCP connect; HTTP on `healthCheckNodePort` for
//! `externalTrafficPolicy: Local` instance targets) take failing targets out; with none
//! healthy it fails open to all registered targets, as AWS's NLB does. Terminating endpoints
//! get no new connections while established ones finish (conntrack keeps their DNAT):
//! connection draining. Pods are not reachable from the external host except through a
//! listener (the edge drops other traffic to the cluster CIDR, as a VPC is not routed from the
//! internet). An invalid annotation value keeps the default and posts a Warning Event on the
//! Service.

mod controller;
pub(crate) mod edge;
mod health;
pub mod table;
pub mod targets;

pub use controller::run;
pub use edge::{create_edge, EDGE_FABRIC_IP, EDGE_IP};
