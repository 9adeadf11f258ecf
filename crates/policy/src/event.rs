//! Drop events: from the log prefix and addresses of an nflog message to "which pods, which
//! port, which policies isolate".

use std::net::IpAddr;

use sarasa_model::hash::fnv1a64;
use sarasa_nft::L4Proto;

use crate::eval::Endpoint;
use crate::state::PolicyState;
use crate::{Direction, PodKey, PolicyKey};

/// A packet dropped by policy, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropEvent {
    /// Ingress: dropped at the destination; egress: at the source.
    pub direction: Direction,
    /// The pod whose chain dropped it.
    pub pod: PodKey,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub protocol: L4Proto,
    pub port: u16,
    /// The policies that isolate `pod` in `direction` (none of them allowed the packet).
    pub policies: Vec<PolicyKey>,
}

/// Which chain a log prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixTarget {
    Pod(PodKey),
    /// A hashed name (pod key too long for the prefix).
    Hash(u64),
}

/// Parses `np in <ns>/<pod> ` / `np out #<hash> ` (see [`crate::compile::log_prefix`]).
pub fn parse_log_prefix(prefix: &str) -> Option<(Direction, PrefixTarget)> {
    let rest = prefix.trim_end().strip_prefix("np ")?;
    let (dir, target) = rest.split_once(' ')?;
    let dir = match dir {
        "in" => Direction::Ingress,
        "out" => Direction::Egress,
        _ => return None,
    };
    let target = match target.strip_prefix('#') {
        Some(h) => PrefixTarget::Hash(u64::from_str_radix(h, 16).ok()?),
        None => {
            let (ns, name) = target.split_once('/')?;
            PrefixTarget::Pod(PodKey::new(ns, name))
        }
    };
    Some((dir, target))
}

/// Turns one logged drop into an event; `None` when the prefix is not ours or names no pod the
/// state knows.
pub fn drop_event(
    state: &PolicyState,
    prefix: &str,
    saddr: IpAddr,
    daddr: IpAddr,
    protocol: L4Proto,
    port: u16,
) -> Option<DropEvent> {
    let (direction, target) = parse_log_prefix(prefix)?;
    let pod = match target {
        PrefixTarget::Pod(k) => state.pod(&k)?,
        PrefixTarget::Hash(h) => state
            .pods()
            .find(|p| fnv1a64(p.key().to_string().as_bytes()) == h)?,
    };
    let endpoint = |a: IpAddr| match state.pod_by_ip(a) {
        Some(p) => Endpoint::Pod(p.key()),
        None => Endpoint::External(a),
    };
    Some(DropEvent {
        direction,
        pod: pod.key(),
        src: endpoint(saddr),
        dst: endpoint(daddr),
        protocol,
        port,
        policies: state
            .isolating_policies(pod, direction)
            .iter()
            .map(|p| p.key())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::log_prefix;

    #[test]
    fn prefix_round_trip() {
        let k = PodKey::new("x", "a");
        assert_eq!(
            parse_log_prefix(&log_prefix(Direction::Ingress, &k)),
            Some((Direction::Ingress, PrefixTarget::Pod(k.clone())))
        );
        let long = PodKey::new("x", "p".repeat(150));
        let p = log_prefix(Direction::Egress, &long);
        assert!(p.len() <= 127);
        assert_eq!(
            parse_log_prefix(&p),
            Some((
                Direction::Egress,
                PrefixTarget::Hash(fnv1a64(long.to_string().as_bytes()))
            ))
        );
        assert_eq!(parse_log_prefix("other prefix"), None);
    }
}
