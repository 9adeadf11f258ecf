//! The ADD result, modelled once and written in the config's version: 0.4.0 (with
//! `ips[].version`), 1.0.0, or 1.1.0 (adds interface `mtu` and route attributes). Also reads
//! `prevResult` of any of those versions.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{CniError, DECODING_FAILURE};

/// An interface in the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Netns path for container interfaces; absent for host ones.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// MTU (1.1.0).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Socket path (1.1.0), passed through.
    #[serde(default)]
    pub socket_path: Option<String>,
    /// PCI id (1.1.0), passed through.
    #[serde(default, rename = "pciID")]
    pub pci_id: Option<String>,
}

/// An address in the result.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    /// Address with prefix.
    pub address: IpNet,
    /// Gateway.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// A route in the result.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteEntry {
    /// Destination.
    pub dst: IpNet,
    /// Gateway.
    #[serde(default)]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default)]
    pub advmss: Option<u32>,
    /// Priority/metric (1.1.0).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Table (1.1.0).
    #[serde(default)]
    pub table: Option<u32>,
    /// Scope (1.1.0).
    #[serde(default)]
    pub scope: Option<u32>,
}

impl RouteEntry {
    /// A plain route.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> RouteEntry {
        RouteEntry {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CniResult {
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// DNS.
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a `prevResult` (code 6 when it is not a result).
    pub fn from_prev(v: &Value) -> Result<CniResult, CniError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                "failed to decode prevResult",
                e.to_string(),
            )
        })
    }

    /// Appends `ours` after this (previous) result: interface indexes of `ours` shift past
    /// the previous interfaces; DNS from `ours` fills what the previous result left empty.
    pub fn merge(mut self, ours: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(ours.interfaces);
        self.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(ours.routes);
        if self.dns.is_empty() {
            self.dns = ours.dns;
        }
        self
    }

    /// The JSON for `version` (one of the supported versions).
    pub fn to_json(&self, version: &str) -> Value {
        let v11 = version == "1.1.0";
        let v04 = version.starts_with("0.");
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        let ifaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    m.insert("mac".into(), json!(mac));
                }
                if v11 {
                    if let Some(mtu) = i.mtu {
                        m.insert("mtu".into(), json!(mtu));
                    }
                }
                if let Some(s) = &i.sandbox {
                    m.insert("sandbox".into(), json!(s));
                }
                if v11 {
                    if let Some(s) = &i.socket_path {
                        m.insert("socketPath".into(), json!(s));
                    }
                    if let Some(s) = &i.pci_id {
                        m.insert("pciID".into(), json!(s));
                    }
                }
                Value::Object(m)
            })
            .collect();
        if !ifaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if v04 {
                    let fam = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), json!(fam));
                }
                if let Some(i) = ip.interface {
                    m.insert("interface".into(), json!(i));
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(m)
            })
            .collect();
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    m.insert("gw".into(), json!(gw.to_string()));
                }
                if v11 {
                    for (k, v) in [
                        ("mtu", r.mtu),
                        ("advmss", r.advmss),
                        ("priority", r.priority),
                        ("table", r.table),
                        ("scope", r.scope),
                    ] {
                        if let Some(v) = v {
                            m.insert(k.into(), json!(v));
                        }
                    }
                }
                Value::Object(m)
            })
            .collect();
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        if !self.dns.is_empty() {
            out.insert(
                "dns".into(),
                serde_json::to_value(&self.dns).unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "sa0ab1234567890".into(),
                    mac: Some("0a:58:00:00:00:01".into()),
                    mtu: Some(1500),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:00:00:00:02".into()),
                    sandbox: Some("/run/netns/p".into()),
                    mtu: Some(1500),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.2/24".parse().unwrap(),
                    gateway: Some("10.244.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![RouteEntry::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.244.1.1".parse().unwrap()),
            )],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn version_shapes() {
        let r = sample();
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04["interfaces"][0].get("mtu").is_none());
        let v10 = r.to_json("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["interfaces"][1].get("mtu").is_none());
        assert_eq!(v10["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v10["ips"][0]["interface"], 1);
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["dns"]["nameservers"][0], "10.96.0.10");
        assert!(v11["interfaces"][0].get("sandbox").is_none());
    }

    #[test]
    fn prev_result_round_trip_any_version() {
        let r = sample();
        for v in ["0.4.0", "1.0.0", "1.1.0"] {
            let back = CniResult::from_prev(&r.to_json(v)).unwrap();
            assert_eq!(back.ips, r.ips, "{v}");
            assert_eq!(back.routes, r.routes, "{v}");
            assert_eq!(back.interfaces[1].sandbox, r.interfaces[1].sandbox);
        }
        assert_eq!(
            CniResult::from_prev(&json!({"ips": "nope"}))
                .unwrap_err()
                .code,
            DECODING_FAILURE
        );
    }

    #[test]
    fn merge_shifts_interface_indexes() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "x".into(),
                ..Default::default()
            }],
            dns: Dns::default(),
            ..Default::default()
        };
        let m = prev.merge(sample());
        assert_eq!(m.interfaces.len(), 3);
        assert_eq!(m.ips[0].interface, Some(2));
        assert_eq!(m.dns.nameservers, vec!["10.96.0.10"]);
    }
}
