//! Deleting stale UDP conntrack entries over ctnetlink ([`sarasa_conntrack`]), in the node's
//! namespace: the socket is opened there (from outside when the agent drives a namespace by
//! path), so no `conntrack` tool and no process per deletion. Each [`StaleUdp`] becomes the
//! [`Filter`] `conntrack -D` would get from [`StaleUdp::conntrack_args`]: same entries deleted.

use sarasa_conntrack::wire::{Family, IPPROTO_UDP};
use sarasa_conntrack::{Conntrack, Filter};
use sarasa_model::IpFamily;
use sarasa_proxy::{StaleUdp, UdpDest};

use crate::netns::NetnsTarget;

/// What one cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Stale destinations swept (whether or not an entry matched: both fine).
    pub ran: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// Failures (socket, kernel refusals), as messages naming the destination.
    pub errors: Vec<String>,
}

/// The entries `stale` names: UDP to its destination (a ClusterIP/external IP and port, or a
/// NodePort on any address of the family), answered by its removed endpoint when it has one.
pub fn filter(stale: &StaleUdp) -> Filter {
    let (family, orig_dst, port) = match stale.dest {
        UdpDest::Ip { addr, port } => (Family::of(addr), Some(addr), port),
        UdpDest::NodePort { port, family } => (
            match family {
                IpFamily::V4 => Family::V4,
                IpFamily::V6 => Family::V6,
            },
            None,
            port,
        ),
    };
    Filter {
        family,
        proto: IPPROTO_UDP,
        orig_dst,
        orig_dst_port: Some(port),
        reply_src: stale.endpoint,
    }
}

/// Runs the deletions (blocking: call it from a blocking task). A failure on one destination
/// does not stop the others; every failure is reported.
pub fn delete_stale(target: &NetnsTarget, stale: &[StaleUdp]) -> CleanupReport {
    let mut report = CleanupReport::default();
    if stale.is_empty() {
        return report;
    }
    let netns = match target {
        NetnsTarget::Current => None,
        NetnsTarget::Path(p) => Some(p.as_path()),
    };
    let mut ct = match Conntrack::open(netns) {
        Ok(ct) => ct,
        Err(e) => {
            report.errors.push(format!("conntrack socket: {e}"));
            return report;
        }
    };
    for s in stale {
        match ct.delete_matching(&filter(s)) {
            Ok(n) => {
                report.ran += 1;
                report.deleted += n;
            }
            Err(e) => report.errors.push(format!(
                "stale UDP entries to {:?} (endpoint {:?}): {e}",
                s.dest, s.endpoint
            )),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_say_what_the_conntrack_arguments_say() {
        let ip = StaleUdp {
            dest: UdpDest::Ip {
                addr: "10.96.0.10".parse().unwrap(),
                port: 53,
            },
            endpoint: Some("10.244.1.5".parse().unwrap()),
        };
        // -D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.5
        assert_eq!(
            filter(&ip),
            Filter {
                family: Family::V4,
                proto: 17,
                orig_dst: Some("10.96.0.10".parse().unwrap()),
                orig_dst_port: Some(53),
                reply_src: Some("10.244.1.5".parse().unwrap()),
            }
        );
        // -D -f ipv6 -p udp --orig-port-dst 30053
        let np = StaleUdp {
            dest: UdpDest::NodePort {
                port: 30053,
                family: IpFamily::V6,
            },
            endpoint: None,
        };
        assert_eq!(
            filter(&np),
            Filter {
                family: Family::V6,
                proto: 17,
                orig_dst: None,
                orig_dst_port: Some(30053),
                reply_src: None,
            }
        );
    }
}
