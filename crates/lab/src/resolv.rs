//! A pod's /etc/resolv.conf, composed as the kubelet composes it (pkg/kubelet/network/dns):
//! the pod's `dnsPolicy` picks a base — the cluster DNS (`ClusterFirst`, and
//! `ClusterFirstWithHostNet`), the node's own resolv.conf (`Default`, and `ClusterFirst` on a
//! hostNetwork pod), or nothing (`None`) — and `dnsConfig` is merged on top: nameservers and
//! searches appended without duplicates, options overriding by name. The result is trimmed to
//! the resolver's limits as the kubelet trims it. Pure: the pod runner writes what this returns.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::PodSpec;

use crate::LabError;

/// The cluster's DNS settings as the kubelet holds them (`--cluster-dns`, `--cluster-domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub nameservers: Vec<IpAddr>,
    pub domain: String,
}

/// The lines of a resolv.conf that the kubelet reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// glibc reads at most three nameservers; the kubelet keeps the first three.
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;
/// The kubelet's options for cluster DNS: every name with fewer than five dots is tried with the
/// search list first, so `my-svc` and `my-svc.other-ns` resolve.
pub const CLUSTER_OPTIONS: &[&str] = &["ndots:5"];

impl ResolvConf {
    /// Reads `nameserver`, `search`/`domain` and `options` lines (later `search` lines replace
    /// earlier ones, as in glibc); comments and other keywords are skipped.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => conf.nameservers.extend(fields.next().map(String::from)),
                Some("search") | Some("domain") => {
                    conf.searches = fields
                        .map(|s| s.trim_end_matches('.'))
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                Some("options") => conf.options.extend(fields.map(String::from)),
                _ => {}
            }
        }
        conf
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Where the base of a pod's resolv.conf comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsBase {
    Cluster,
    Node,
    Empty,
}

/// The base the kubelet picks for `dnsPolicy` (default `ClusterFirst`) on a pod that does or
/// does not use the host network.
pub fn dns_base(policy: Option<&str>, host_network: bool) -> Result<DnsBase, LabError> {
    match policy.unwrap_or("ClusterFirst") {
        "None" => Ok(DnsBase::Empty),
        "ClusterFirstWithHostNet" => Ok(DnsBase::Cluster),
        // A host-network pod shares the node's resolver unless it asks otherwise.
        "ClusterFirst" if host_network => Ok(DnsBase::Node),
        "ClusterFirst" => Ok(DnsBase::Cluster),
        "Default" => Ok(DnsBase::Node),
        other => Err(LabError::Invalid(format!(
            "spec.dnsPolicy: unsupported value {other:?}"
        ))),
    }
}

/// The resolv.conf of a pod in `namespace` with `spec`, on a node whose own resolv.conf is
/// `node`.
pub fn pod_resolv_conf(
    spec: &PodSpec,
    namespace: &str,
    cluster: &ClusterDns,
    node: &ResolvConf,
) -> Result<ResolvConf, LabError> {
    let base = dns_base(spec.dns_policy.as_deref(), spec.host_network == Some(true))?;
    let mut conf = match base {
        DnsBase::Empty => ResolvConf::default(),
        DnsBase::Node => node.clone(),
        // Without a cluster DNS address the kubelet falls back to the node's settings.
        DnsBase::Cluster if cluster.nameservers.is_empty() => node.clone(),
        DnsBase::Cluster => {
            let d = &cluster.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{d}"),
                format!("svc.{d}"),
                d.clone(),
            ];
            searches.extend(node.searches.iter().cloned());
            ResolvConf {
                nameservers: cluster
                    .nameservers
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect(),
                searches: dedup(searches),
                options: CLUSTER_OPTIONS.iter().map(|s| s.to_string()).collect(),
            }
        }
    };
    if let Some(extra) = &spec.dns_config {
        conf.nameservers
            .extend(extra.nameservers.iter().flatten().cloned());
        conf.nameservers = dedup(std::mem::take(&mut conf.nameservers));
        conf.searches.extend(
            extra
                .searches
                .iter()
                .flatten()
                .map(|s| s.trim_end_matches('.').to_string()),
        );
        conf.searches = dedup(std::mem::take(&mut conf.searches));
        for o in extra.options.iter().flatten() {
            let Some(name) = o.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let rendered = match o.value.as_deref() {
                Some(v) if !v.is_empty() => format!("{name}:{v}"),
                _ => name.to_string(),
            };
            match conf.options.iter_mut().find(|x| option_name(x) == name) {
                Some(slot) => *slot = rendered,
                None => conf.options.push(rendered),
            }
        }
    }
    Ok(fit_limits(conf))
}

fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(n, _)| n)
}

/// Keeps the first occurrence of each entry, in order.
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// What the kubelet does when the composed config exceeds the resolver's limits: keep the first
/// three nameservers, the first 32 searches, and as many searches as fit in 2048 characters.
fn fit_limits(mut conf: ResolvConf) -> ResolvConf {
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCHES);
    let mut len = 0;
    let mut keep = 0;
    for (i, s) in conf.searches.iter().enumerate() {
        let add = s.len() + usize::from(i > 0);
        if len + add > MAX_SEARCH_CHARS {
            break;
        }
        len += add;
        keep = i + 1;
    }
    conf.searches.truncate(keep);
    conf
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameservers: vec!["10.96.0.10".parse().unwrap()],
            domain: "cluster.local".into(),
        }
    }

    fn node() -> ResolvConf {
        ResolvConf::parse(
            "# the node\nsearch corp.example.\nnameserver 203.0.113.10\noptions timeout:2\n",
        )
    }

    fn spec(policy: Option<&str>, host_network: bool, config: Option<PodDNSConfig>) -> PodSpec {
        PodSpec {
            dns_policy: policy.map(String::from),
            host_network: Some(host_network),
            dns_config: config,
            ..Default::default()
        }
    }

    #[test]
    fn parse_reads_the_lines_the_resolver_reads() {
        let c = ResolvConf::parse(
            "domain old.example\nsearch a.example b.example. ; comment\nnameserver 1.1.1.1\nnameserver fd00::1 # v6\nsortlist 10.0.0.0\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.searches, ["a.example", "b.example"]);
        assert_eq!(c.nameservers, ["1.1.1.1", "fd00::1"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
        assert_eq!(ResolvConf::parse(&c.render()), c);
    }

    #[test]
    fn cluster_first_points_at_cluster_dns_with_the_namespace_search_path() {
        let c = pod_resolv_conf(&spec(None, false, None), "shop", &cluster(), &node()).unwrap();
        assert_eq!(
            c.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
        let explicit = pod_resolv_conf(
            &spec(Some("ClusterFirst"), false, None),
            "shop",
            &cluster(),
            &node(),
        )
        .unwrap();
        assert_eq!(explicit, c);
    }

    #[test]
    fn cluster_first_on_the_host_network_falls_back_to_the_node() {
        let c = pod_resolv_conf(
            &spec(Some("ClusterFirst"), true, None),
            "x",
            &cluster(),
            &node(),
        )
        .unwrap();
        assert_eq!(c, node());
        let c = pod_resolv_conf(
            &spec(Some("ClusterFirstWithHostNet"), true, None),
            "x",
            &cluster(),
            &node(),
        )
        .unwrap();
        assert_eq!(c.nameservers, ["10.96.0.10"]);
        assert_eq!(c.searches[0], "x.svc.cluster.local");
    }

    #[test]
    fn default_is_the_node_and_none_is_only_dns_config() {
        let c = pod_resolv_conf(
            &spec(Some("Default"), false, None),
            "x",
            &cluster(),
            &node(),
        )
        .unwrap();
        assert_eq!(c, node());
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.53".into()]),
            searches: Some(vec!["my.example".into()]),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".into()),
                value: Some("1".into()),
            }]),
        };
        let c = pod_resolv_conf(
            &spec(Some("None"), false, Some(cfg)),
            "x",
            &cluster(),
            &node(),
        )
        .unwrap();
        assert_eq!(
            c.render(),
            "search my.example\nnameserver 192.0.2.53\noptions ndots:1\n"
        );
    }

    #[test]
    fn dns_config_merges_as_the_kubelet_merges() {
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["10.96.0.10".into(), "192.0.2.1".into()]),
            searches: Some(vec!["svc.cluster.local".into(), "extra.example.".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let c =
            pod_resolv_conf(&spec(None, false, Some(cfg)), "shop", &cluster(), &node()).unwrap();
        assert_eq!(c.nameservers, ["10.96.0.10", "192.0.2.1"]);
        assert_eq!(
            c.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "extra.example"
            ]
        );
        assert_eq!(c.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn limits_are_applied_as_the_kubelet_applies_them() {
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "2.2.2.2".into(), "3.3.3.3".into()]),
            searches: Some(
                (0..40)
                    .map(|i| format!("{}{i:02}.example", "s".repeat(60)))
                    .collect(),
            ),
            options: None,
        };
        let c = pod_resolv_conf(&spec(None, false, Some(cfg)), "ns", &cluster(), &node()).unwrap();
        assert_eq!(c.nameservers, ["10.96.0.10", "1.1.1.1", "2.2.2.2"]);
        assert!(c.searches.len() <= MAX_SEARCHES);
        assert!(c.searches.join(" ").len() <= MAX_SEARCH_CHARS);
        assert_eq!(c.searches[0], "ns.svc.cluster.local");
    }

    #[test]
    fn an_unknown_policy_is_an_error_naming_the_field() {
        let e = pod_resolv_conf(&spec(Some("Bogus"), false, None), "x", &cluster(), &node())
            .unwrap_err();
        assert!(e.to_string().contains("spec.dnsPolicy"), "{e}");
    }

    #[test]
    fn without_cluster_dns_cluster_first_uses_the_node() {
        let none = ClusterDns {
            nameservers: vec![],
            domain: "cluster.local".into(),
        };
        let c = pod_resolv_conf(&spec(None, false, None), "x", &none, &node()).unwrap();
        assert_eq!(c, node());
    }
}
