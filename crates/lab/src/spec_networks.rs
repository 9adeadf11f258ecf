//! Checks of the ranges and the cluster id `lab up` takes (`--pod-cidr`, `--service-cidr`,
//! `--cluster-id`): labs that will join a cluster set need ranges of their own, and a range
//! that collides with the lab's own networks would route silently wrong, so each mistake is
//! refused naming the flag before anything is built.

use ipnet::{Ipv4Net, Ipv6Net};

use crate::spec::LabSpec;
use crate::LabError;

/// The podCIDR size the control plane gives each node (kube-controller-manager's default
/// `--node-cidr-mask-size` for IPv4).
pub const NODE_MASK_V4: u8 = 24;
/// kube-apiserver refuses a larger IPv4 Service range than /12.
pub const SERVICE_PREFIX_MIN: u8 = 12;
/// The DNS Service takes the range's tenth address.
pub const SERVICE_PREFIX_MAX: u8 = 28;
/// The IPv6 podCIDR size (kube-controller-manager's default `--node-cidr-mask-size-ipv6`).
pub const NODE_MASK_V6: u8 = 64;
/// kube-apiserver refuses an IPv6 Service range larger than /108 (20 bits of addresses).
pub const SERVICE_PREFIX_MIN_V6: u8 = 108;
/// The largest IPv6 Service range prefix `lab up` takes (the DNS Service's tenth address).
pub const SERVICE_PREFIX_MAX_V6: u8 = 124;

fn invalid(msg: String) -> LabError {
    LabError::Invalid(msg)
}

/// An IPv4 network address with its prefix, as `flag` was given it.
pub fn parse_v4_network(flag: &str, text: &str) -> Result<Ipv4Net, LabError> {
    let net: Ipv4Net = text.trim().parse().map_err(|_| {
        invalid(format!(
            "{flag} {text:?}: not an IPv4 CIDR (address/prefix, e.g. 10.244.0.0/16; with \
             --dual-stack an IPv6 range may follow: 10.244.0.0/16,fd00:10:244::/56)"
        ))
    })?;
    if net.addr() != net.network() {
        return Err(invalid(format!(
            "{flag} {text:?}: host bits are set; the network is {}",
            net.trunc()
        )));
    }
    if let Some(why) = special(net) {
        return Err(invalid(format!("{flag} {net}: {why}")));
    }
    Ok(net)
}

/// `IPV4[,IPV6]` as `flag` was given it: the IPv6 range only in a dual-stack `spec`.
pub fn parse_ranges(
    flag: &str,
    text: &str,
    spec: &LabSpec,
) -> Result<(Ipv4Net, Option<Ipv6Net>), LabError> {
    let (first, second) = match text.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let v4 = parse_v4_network(flag, first)?;
    let Some(second) = second else {
        return Ok((v4, None));
    };
    if spec.ipv6.is_none() {
        return Err(invalid(format!(
            "{flag} {text:?}: a second (IPv6) range needs --dual-stack"
        )));
    }
    parse_v6_network(flag, second).map(|v6| (v4, Some(v6)))
}

/// An IPv6 network address with its prefix, the second range of `flag`.
fn parse_v6_network(flag: &str, text: &str) -> Result<Ipv6Net, LabError> {
    let net: Ipv6Net = text.trim().parse().map_err(|_| {
        invalid(format!(
            "{flag} {text:?}: the second range is not an IPv6 CIDR (IPV4,IPV6, e.g. \
             10.244.0.0/16,fd00:10:244::/56)"
        ))
    })?;
    if net.addr() != net.network() {
        return Err(invalid(format!(
            "{flag} {text:?}: host bits are set; the network is {}",
            net.trunc()
        )));
    }
    let unique_local: Ipv6Net = "fc00::/7".parse().expect("static CIDR");
    let documentation: Ipv6Net = "2001:db8::/32".parse().expect("static CIDR");
    if !unique_local.contains(&net) && !documentation.contains(&net) {
        return Err(invalid(format!(
            "{flag} {net}: a lab's IPv6 ranges are unique local (fc00::/7) or documentation \
             (2001:db8::/32) addresses, never global ones"
        )));
    }
    Ok(net)
}

/// An IPv6 pod range holds /64 podCIDRs.
pub fn check_pod_range_v6(net: Ipv6Net) -> Result<(), LabError> {
    if net.prefix_len() > NODE_MASK_V6 - 6 {
        return Err(invalid(format!(
            "--pod-cidr {net}: each node takes a /{NODE_MASK_V6} IPv6 podCIDR, so the range must \
             be /{} or larger (one for each of up to {} nodes)",
            NODE_MASK_V6 - 6,
            crate::spec::MAX_NODES
        )));
    }
    Ok(())
}

/// An IPv6 Service range between /108 and /124.
pub fn check_service_range_v6(net: Ipv6Net) -> Result<(), LabError> {
    if !(SERVICE_PREFIX_MIN_V6..=SERVICE_PREFIX_MAX_V6).contains(&net.prefix_len()) {
        return Err(invalid(format!(
            "--service-cidr {net}: the IPv6 prefix must be between /{SERVICE_PREFIX_MIN_V6} (the \
             largest kube-apiserver takes) and /{SERVICE_PREFIX_MAX_V6}"
        )));
    }
    Ok(())
}

/// Why `net` cannot be a cluster range, if it cannot.
fn special(net: Ipv4Net) -> Option<&'static str> {
    let reserved: [(&str, &str); 5] = [
        ("0.0.0.0/8", "overlaps 0.0.0.0/8 (this network)"),
        ("127.0.0.0/8", "overlaps loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "overlaps link-local (169.254.0.0/16)"),
        ("224.0.0.0/4", "overlaps multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "overlaps the reserved 240.0.0.0/4"),
    ];
    reserved
        .iter()
        .find(|(r, _)| overlaps(net, r.parse().expect("static CIDR")))
        .map(|(_, why)| *why)
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A pod range holds a /24 podCIDR for each of `nodes` nodes.
pub fn check_pod_range(net: Ipv4Net, nodes: usize) -> Result<(), LabError> {
    if net.prefix_len() > NODE_MASK_V4 {
        return Err(invalid(format!(
            "--pod-cidr {net}: each node takes a /{NODE_MASK_V4} podCIDR, so the range must be \
             /{NODE_MASK_V4} or larger"
        )));
    }
    let blocks = 1u64 << (NODE_MASK_V4 - net.prefix_len());
    if blocks < nodes as u64 {
        return Err(invalid(format!(
            "--pod-cidr {net}: holds {blocks} /{NODE_MASK_V4} podCIDR(s), not one for each of \
             the {nodes} nodes"
        )));
    }
    Ok(())
}

/// A Service range between /12 and /28.
pub fn check_service_range(net: Ipv4Net) -> Result<(), LabError> {
    if !(SERVICE_PREFIX_MIN..=SERVICE_PREFIX_MAX).contains(&net.prefix_len()) {
        return Err(invalid(format!(
            "--service-cidr {net}: the prefix must be between /{SERVICE_PREFIX_MIN} (the \
             largest kube-apiserver takes) and /{SERVICE_PREFIX_MAX} (the DNS Service is the \
             tenth address)"
        )));
    }
    Ok(())
}

/// The pod and Service ranges overlap neither each other nor the lab's own networks.
pub fn check_disjoint(spec: &LabSpec) -> Result<(), LabError> {
    let edge = Ipv4Net::new(crate::cloud_lb::edge::EDGE_FABRIC_IP, 30)
        .expect("static prefix")
        .trunc();
    let external_ips: Ipv4Net = crate::control_plane::EXTERNAL_IPS
        .parse()
        .expect("static CIDR");
    let lab_nets: [(&str, Ipv4Net); 5] = [
        ("the lab's underlay", spec.underlay),
        ("the lab's external network", spec.external_net),
        ("the lab's LoadBalancer pool", spec.lb_pool),
        ("the lab's externalIPs range", external_ips),
        ("the lab's edge link", edge),
    ];
    for (flag, net) in [
        ("--pod-cidr", spec.cluster_cidr),
        ("--service-cidr", spec.service_cidr),
    ] {
        if let Some((what, other)) = lab_nets.iter().find(|(_, n)| overlaps(net, *n)) {
            return Err(invalid(format!("{flag} {net} overlaps {what} {other}")));
        }
    }
    if overlaps(spec.cluster_cidr, spec.service_cidr) {
        return Err(invalid(format!(
            "--pod-cidr {} and --service-cidr {} overlap",
            spec.cluster_cidr, spec.service_cidr
        )));
    }
    if let Some(side) = &spec.ipv6 {
        let v6_overlap =
            |a: Ipv6Net, b: Ipv6Net| a.contains(&b.network()) || b.contains(&a.network());
        for (flag, net) in [
            ("--pod-cidr", side.cluster_cidr),
            ("--service-cidr", side.service_cidr),
        ] {
            if v6_overlap(net, side.underlay) {
                return Err(invalid(format!(
                    "{flag} {net} overlaps the lab's IPv6 underlay {}",
                    side.underlay
                )));
            }
        }
        if v6_overlap(side.cluster_cidr, side.service_cidr) {
            return Err(invalid(format!(
                "--pod-cidr {} and --service-cidr {} overlap",
                side.cluster_cidr, side.service_cidr
            )));
        }
    }
    Ok(())
}

/// A cluster id is a DNS label (it is one in `hostname.clusterid.svc.ns.svc.clusterset.local`).
pub fn check_cluster_id(id: &str) -> Result<(), LabError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "--cluster-id {id:?}: a cluster id is a DNS label: 1-63 lowercase letters, digits or \
             '-', not starting or ending with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, CniMode};

    fn spec(nodes: usize) -> LabSpec {
        LabSpec::new("t", nodes, Backend::Vxlan, CniMode::Bridge).unwrap()
    }

    fn err(nodes: usize, pod: Option<&str>, svc: Option<&str>, id: Option<&str>) -> String {
        spec(nodes)
            .with_networks(pod, svc, id)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_stay_and_given_ranges_are_taken() {
        let s = spec(3).with_networks(None, None, None).unwrap();
        assert_eq!(s.cluster_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(s.service_cidr.to_string(), "10.96.0.0/12");
        assert_eq!(s.cluster_id(), "t");
        let s = spec(3)
            .with_networks(Some("10.245.0.0/16"), Some("10.112.0.0/16"), Some("west"))
            .unwrap();
        assert_eq!(s.cluster_cidr.to_string(), "10.245.0.0/16");
        assert_eq!(s.service_cidr.to_string(), "10.112.0.0/16");
        assert_eq!(s.cluster_id(), "west");
        assert_eq!(crate::dns_ip(&s).to_string(), "10.112.0.10");
        assert_eq!(
            crate::container_env::kubernetes_service_ip(&s).to_string(),
            "10.112.0.1"
        );
        assert!(crate::pki::server_sans(&s).contains(&"10.112.0.1".to_string()));
        // A /22 holds four nodes' /24s.
        spec(4)
            .with_networks(Some("172.20.0.0/22"), Some("172.21.0.0/28"), None)
            .unwrap();
    }

    #[test]
    fn dual_stack_takes_an_ipv6_range_after_the_ipv4_one() {
        let s = spec(2)
            .with_dual_stack()
            .unwrap()
            .with_networks(None, None, None)
            .unwrap();
        let text = |v: Vec<ipnet::IpNet>| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            text(s.cluster_cidrs()),
            ["10.244.0.0/16", "fd00:10:244::/56"]
        );
        assert_eq!(
            text(s.service_cidrs()),
            ["10.96.0.0/12", "fd00:10:96::/112"]
        );
        assert_eq!(s.nodes[1].ips()[1].to_string(), "fd00:33::c");
        let s = spec(2)
            .with_dual_stack()
            .unwrap()
            .with_networks(
                Some("10.245.0.0/16,fd00:245::/56"),
                Some("10.112.0.0/16,fd00:112::/112"),
                None,
            )
            .unwrap();
        assert_eq!(text(s.cluster_cidrs())[1], "fd00:245::/56");
        assert_eq!(text(s.service_cidrs())[1], "fd00:112::/112");
        // Single-stack labs take no IPv6 range; each bad IPv6 range names flag and reason.
        let single = spec(2)
            .with_networks(Some("10.245.0.0/16,fd00:245::/56"), None, None)
            .unwrap_err()
            .to_string();
        assert!(single.contains("needs --dual-stack"), "{single}");
        let routed = LabSpec::new("t", 2, Backend::HostGw, CniMode::Bridge)
            .unwrap()
            .with_dual_stack()
            .unwrap_err()
            .to_string();
        assert!(
            routed.contains("--dual-stack") && routed.contains("--backend host-gw"),
            "{routed}"
        );
        for (pod, svc, want) in [
            (
                Some("10.245.0.0/16,10.246.0.0/16"),
                None,
                "not an IPv6 CIDR",
            ),
            (
                Some("10.245.0.0/16,fd00:245::1/56"),
                None,
                "host bits are set",
            ),
            (Some("10.245.0.0/16,2600::/56"), None, "never global ones"),
            (
                Some("10.245.0.0/16,fd00:245::/64"),
                None,
                "must be /58 or larger",
            ),
            (None, Some("10.112.0.0/16,fd00:112::/64"), "between /108"),
            (
                Some("10.245.0.0/16,fd00:33::/56"),
                None,
                "overlaps the lab's IPv6 underlay",
            ),
            (
                Some("10.245.0.0/16,fd00:1::/56"),
                Some("10.112.0.0/16,fd00:1::/112"),
                "overlap",
            ),
        ] {
            let err = spec(2)
                .with_dual_stack()
                .unwrap()
                .with_networks(pod, svc, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{pod:?} {svc:?}: {err}");
            let flag = if pod.is_some() {
                "--pod-cidr"
            } else {
                "--service-cidr"
            };
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn bad_ranges_are_refused_naming_the_flag_and_the_reason() {
        for (pod, svc, want) in [
            (
                Some("10.245.0.0"),
                None,
                "--pod-cidr \"10.245.0.0\": not an IPv4 CIDR",
            ),
            (
                Some("fd00::/64"),
                None,
                "--pod-cidr \"fd00::/64\": not an IPv4 CIDR",
            ),
            (
                Some("10.245.0.1/16"),
                None,
                "host bits are set; the network is 10.245.0.0/16",
            ),
            (Some("10.245.0.0/25"), None, "must be /24 or larger"),
            (
                Some("10.245.0.0/23"),
                None,
                "holds 2 /24 podCIDR(s), not one for each of the 3",
            ),
            (
                Some("127.0.0.0/16"),
                None,
                "--pod-cidr 127.0.0.0/16: overlaps loopback",
            ),
            (Some("224.0.0.0/16"), None, "overlaps multicast"),
            (
                Some("192.168.0.0/16"),
                None,
                "--pod-cidr 192.168.0.0/16 overlaps the lab's underlay 192.168.33.0/24",
            ),
            (
                Some("198.51.100.0/24"),
                None,
                "overlaps the lab's LoadBalancer pool",
            ),
            (
                Some("192.168.34.0/24"),
                None,
                "overlaps the lab's edge link",
            ),
            (
                None,
                Some("10.0.0.0/8"),
                "--service-cidr 10.0.0.0/8: the prefix must be between /12",
            ),
            (None, Some("10.96.0.0/29"), "and /28"),
            (
                None,
                Some("203.0.113.0/24"),
                "--service-cidr 203.0.113.0/24 overlaps the lab's external network",
            ),
            (
                None,
                Some("192.0.2.0/24"),
                "overlaps the lab's externalIPs range",
            ),
            (
                None,
                Some("10.244.128.0/17"),
                "--pod-cidr 10.244.0.0/16 and --service-cidr 10.244.128.0/17 overlap",
            ),
            (
                Some("10.96.0.0/16"),
                None,
                "--pod-cidr 10.96.0.0/16 and --service-cidr 10.96.0.0/12 overlap",
            ),
        ] {
            // One node, so only the "one /24 per node" case is about size.
            let nodes = if want.contains("each of the 3") { 3 } else { 1 };
            let e = err(nodes, pod, svc, None);
            assert!(e.contains(want), "{pod:?} {svc:?}: {e}");
        }
    }

    #[test]
    fn cluster_ids_are_dns_labels() {
        for bad in ["", "West", "a_b", "-a", "a-", "a.b", &"x".repeat(64)] {
            let e = err(1, None, None, Some(bad));
            assert!(
                e.contains("--cluster-id") && e.contains("DNS label"),
                "{bad}: {e}"
            );
        }
        for good in ["a", "west-1", &"x".repeat(63)] {
            spec(1).with_networks(None, None, Some(good)).unwrap();
        }
    }
}
