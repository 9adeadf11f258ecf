//! The network configuration on stdin: the spec's fields, sarasa's keys (`mode`, `bridge`,
//! `mtu`, `ipam.ranges`, `ipam.dataDir`, `dns`), `runtimeConfig` capabilities, and
//! validation into a [`Plugin`] config. Unknown keys are ignored.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use sarasa_ipam::RangeConfig;

use crate::env::{valid_name, validate_ifname};
use crate::error::{CniError, DECODING_FAILURE, INVALID_CONFIG, UNSUPPORTED_FIELD};
use crate::result::Dns;

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "sarasa0";
/// Default MTU.
pub const DEFAULT_MTU: u32 = 1500;
/// Parent of the default IPAM data directory (`<this>/<network name>`).
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/cni/sarasa";

/// The raw config as sent on stdin.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: Option<String>,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `type`.
    #[serde(rename = "type")]
    pub plugin_type: Option<String>,
    /// `mode`: `bridge` (default) or `routed`.
    pub mode: Option<String>,
    /// `bridge`: the node bridge (bridge mode).
    pub bridge: Option<String>,
    /// `mtu` of both veth ends (and of a bridge this plugin creates).
    pub mtu: Option<u32>,
    /// `ipam`.
    pub ipam: Option<IpamConf>,
    /// `dns`, copied into the result.
    pub dns: Option<Dns>,
    /// `runtimeConfig`.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// `prevResult`.
    pub prev_result: Option<Value>,
    /// GC: `cni.dev/valid-attachments`.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC: the key an early 1.1 draft used.
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
    /// `args` (`args.cni.ips` requests addresses, per the conventions).
    pub args: Option<Value>,
    /// Optional log file (besides stderr).
    pub log_file: Option<String>,
    /// `vpc`: the ranges are the addresses the cloud assigned this node (sarasa's vpc
    /// backend), so running out is explained in the node's terms.
    pub vpc: Option<VpcConf>,
}

/// `vpc`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcConf {
    /// `vpc.addressLimit`: the most addresses the cloud gives this node.
    pub address_limit: Option<u32>,
}

/// `ipam`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// `ipam.type` (ignored: IPAM is built in).
    #[serde(rename = "type")]
    pub ipam_type: Option<String>,
    /// `ipam.ranges`: range sets in host-local's shape.
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConfig>>,
    /// `ipam.dataDir`.
    pub data_dir: Option<String>,
    /// `ipam.routes`: extra pod routes, via the pod gateway unless `gw` is given.
    #[serde(default)]
    pub routes: Vec<RouteConf>,
}

/// A route in config.
#[derive(Clone, Debug, Deserialize)]
pub struct RouteConf {
    /// Destination.
    pub dst: String,
    /// Gateway.
    pub gw: Option<String>,
}

/// `runtimeConfig` (capabilities from the conventions document).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `ips`: addresses to assign, `10.1.2.3` or `10.1.2.3/24`.
    pub ips: Option<Vec<String>>,
    /// `mac`: the container interface's MAC.
    pub mac: Option<String>,
    /// `dns`: `{servers, searches, options}`, overrides the config's `dns`.
    pub dns: Option<RuntimeDns>,
    /// `ipRanges`: range sets replacing `ipam.ranges`.
    pub ip_ranges: Option<Vec<Vec<RangeConfig>>>,
    /// `portMappings`: node ports to forward to the pod (`hostPort`).
    pub port_mappings: Option<Vec<Value>>,
}

/// `runtimeConfig.dns`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeDns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, Deserialize)]
pub struct Attachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    #[serde(default)]
    pub ifname: String,
}

/// Pod plumbing mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Host veths enslaved to a bridge that holds the gateway.
    Bridge,
    /// Per-pod host routes, gateway 169.254.1.1 / fe80::1 by proxy ARP / NDP.
    Routed,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// The version to answer in.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Mode.
    pub mode: Mode,
    /// Bridge name (bridge mode).
    pub bridge: String,
    /// MTU.
    pub mtu: u32,
    /// Range sets (after `runtimeConfig.ipRanges`).
    pub ranges: Vec<Vec<RangeConfig>>,
    /// IPAM data directory.
    pub data_dir: PathBuf,
    /// DNS for the result.
    pub dns: Dns,
    /// Requested addresses (runtimeConfig `ips`, `args.cni.ips`, `CNI_ARGS` `IP`).
    pub requested_ips: Vec<IpAddr>,
    /// Requested MAC of the container interface.
    pub mac: Option<sarasa_model::MacAddr>,
    /// Extra routes: destination and optional gateway.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
    /// Node ports to map to the pod (`runtimeConfig.portMappings`).
    pub host_ports: Vec<sarasa_ipam::HostPort>,
    /// The raw config (for `prevResult` and GC keys).
    pub raw: NetConf,
}

/// Quick checks the reference library makes on any non-VERSION input: valid JSON (code 6)
/// and a valid network name (code 7). Returns the `cniVersion` for error reports.
pub fn precheck(stdin: &[u8]) -> Result<Option<String>, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODING_FAILURE,
            "failed to decode network config",
            format!("error unmarshalling network config: {e}"),
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err(CniError::new(
            DECODING_FAILURE,
            "failed to decode network config",
            "network config is not a JSON object",
        ));
    };
    let version = match obj.get("cniVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(other) => {
            return Err(CniError::new(
                DECODING_FAILURE,
                "failed to decode cniVersion",
                format!("cniVersion must be a string, got {other}"),
            ))
        }
    };
    let err = |e: CniError| match &version {
        Some(v) if crate::version::SUPPORTED.contains(&v.as_str()) => e.with_version(v),
        _ => e,
    };
    match obj.get("name") {
        None | Some(Value::Null) => Err(err(CniError::config("missing network name"))),
        Some(Value::String(n)) if n.is_empty() => Err(err(CniError::config("missing network name"))),
        Some(Value::String(n)) if !valid_name(n) => Err(err(CniError::new(
            INVALID_CONFIG,
            "invalid characters found in network name",
            format!("network name {n:?} must start with an alphanumeric character followed by alphanumerics, '_', '.' or '-'"),
        ))),
        Some(Value::String(_)) => Ok(version),
        Some(other) => Err(err(CniError::new(
            DECODING_FAILURE,
            "failed to decode network config",
            format!("name must be a string, got {other}"),
        ))),
    }
}

/// Decodes the config (code 6 on wrong JSON types).
pub fn decode(stdin: &[u8]) -> Result<NetConf, CniError> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODING_FAILURE,
            "failed to decode network config",
            e.to_string(),
        )
    })
}

impl NetConf {
    /// Validates into a [`Plugin`]. `cni_args` are the `CNI_ARGS` pairs (for `IP`/`MAC`).
    pub fn validate(self, cni_args: &[(String, String)]) -> Result<Plugin, CniError> {
        let cni_version = self.cni_version.clone().unwrap_or_default();
        match self.plugin_type.as_deref() {
            None | Some("") => return Err(CniError::config("missing plugin type (\"type\")")),
            Some(t) if t.contains('/') || t.contains('\\') => {
                return Err(CniError::config(format!(
                    "type {t:?} must not contain path separators"
                )))
            }
            _ => {}
        }
        let mode = match self.mode.as_deref() {
            None | Some("bridge") => Mode::Bridge,
            Some("routed") => Mode::Routed,
            Some(other) => {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!("unsupported field: mode={other:?}"),
                    format!("mode={other:?} is not supported; use \"bridge\" or \"routed\""),
                ))
            }
        };
        let bridge = self
            .bridge
            .clone()
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        validate_ifname(&bridge, "bridge").map_err(|e| CniError::config(e.details))?;
        let mtu = self.mtu.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(CniError::config(format!(
                "mtu {mtu} is out of range (68-65535)"
            )));
        }
        let ipam = self
            .ipam
            .clone()
            .ok_or_else(|| CniError::config("missing \"ipam\" section with \"ranges\""))?;
        let ranges = match &self.runtime_config.ip_ranges {
            Some(r) if !r.is_empty() => r.clone(),
            _ => ipam.ranges.clone(),
        };
        if ranges.is_empty() {
            return Err(CniError::config(
                "ipam.ranges is empty: at least one range set is required",
            ));
        }
        let data_dir = match &ipam.data_dir {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(DEFAULT_DATA_ROOT).join(&self.name),
        };

        let mut dns = self.dns.clone().unwrap_or_default();
        if let Some(rd) = &self.runtime_config.dns {
            if !rd.servers.is_empty() {
                dns.nameservers = rd.servers.clone();
            }
            if !rd.searches.is_empty() {
                dns.search = rd.searches.clone();
            }
            if !rd.options.is_empty() {
                dns.options = rd.options.clone();
            }
        }

        let mut requested_ips = Vec::new();
        let mut add_ip = |s: &str, field: &str| -> Result<(), CniError> {
            let s = s.trim();
            let ip = s
                .parse::<IpAddr>()
                .or_else(|_| s.parse::<IpNet>().map(|n| n.addr()))
                .map_err(|_| CniError::config(format!("{field}: {s:?} is not an IP address")))?;
            if !requested_ips.contains(&ip) {
                requested_ips.push(ip);
            }
            Ok(())
        };
        for ip in self.runtime_config.ips.iter().flatten() {
            add_ip(ip, "runtimeConfig.ips")?;
        }
        if let Some(ips) = self
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/ips"))
            .and_then(|v| v.as_array())
        {
            for ip in ips {
                let s = ip
                    .as_str()
                    .ok_or_else(|| CniError::config("args.cni.ips entries must be strings"))?;
                add_ip(s, "args.cni.ips")?;
            }
        }
        for (k, v) in cni_args {
            if k == "IP" {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    add_ip(s, "CNI_ARGS IP")?;
                }
            }
        }

        let mac_src = self
            .runtime_config
            .mac
            .clone()
            .or_else(|| {
                self.args
                    .as_ref()
                    .and_then(|a| a.pointer("/cni/mac"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .or_else(|| {
                cni_args
                    .iter()
                    .find(|(k, _)| k == "MAC")
                    .map(|(_, v)| v.clone())
            });
        let mac = match mac_src {
            None => None,
            Some(m) => Some(
                m.parse::<sarasa_model::MacAddr>()
                    .map_err(|_| CniError::config(format!("mac {m:?} is not a MAC address")))?,
            ),
        };

        let mut routes = Vec::new();
        for r in &ipam.routes {
            let dst: IpNet = r.dst.parse().map_err(|_| {
                CniError::config(format!("ipam.routes dst {:?} is not a CIDR", r.dst))
            })?;
            let gw = match &r.gw {
                None => None,
                Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                    CniError::config(format!("ipam.routes gw {g:?} is not an IP address"))
                })?),
            };
            routes.push((dst.trunc(), gw));
        }

        Ok(Plugin {
            cni_version,
            name: self.name.clone(),
            mode,
            bridge,
            mtu,
            ranges,
            data_dir,
            dns,
            requested_ips,
            mac,
            routes,
            host_ports: crate::port_mappings::parse(
                self.runtime_config
                    .port_mappings
                    .as_deref()
                    .unwrap_or_default(),
            )?,
            raw: self,
        })
    }
}

impl Plugin {
    /// The allocator for this config (code 7 for invalid ranges).
    pub fn ipam(&self) -> Result<sarasa_ipam::Ipam, CniError> {
        sarasa_ipam::Ipam::new(&self.data_dir, &self.ranges).map_err(CniError::from)
    }

    /// GC's valid attachments as (container id, ifname).
    pub fn valid_attachments(&self) -> Vec<(String, String)> {
        self.raw
            .valid_attachments
            .iter()
            .chain(self.raw.attachments.iter())
            .flatten()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"1.1.0","name":"pods","type":"sarasa-cni",
                "ipam":{{"ranges":[[{{"subnet":"10.244.1.0/24"}}]]}}{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn defaults() {
        let p = decode(&conf("")).unwrap().validate(&[]).unwrap();
        assert_eq!(p.mode, Mode::Bridge);
        assert_eq!(p.bridge, "sarasa0");
        assert_eq!(p.mtu, 1500);
        assert_eq!(p.data_dir, PathBuf::from("/var/lib/cni/sarasa/pods"));
        p.ipam().unwrap();
    }

    #[test]
    fn unknown_keys_ignored_and_runtime_config_read() {
        let p = decode(&conf(
            r#","whatever":{"x":1},"mode":"routed","mtu":1400,
               "dns":{"nameservers":["10.96.0.10"],"search":["default.svc.cluster.local"]},
               "runtimeConfig":{"ips":["10.244.1.9/24"],"mac":"0a:58:0a:f4:01:09",
                                "dns":{"servers":["1.1.1.1"]},"portMappings":[]}"#,
        ))
        .unwrap()
        .validate(&[])
        .unwrap();
        assert_eq!(p.mode, Mode::Routed);
        assert_eq!(p.mtu, 1400);
        assert_eq!(
            p.requested_ips,
            vec!["10.244.1.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            p.mac,
            Some(sarasa_model::MacAddr([0x0a, 0x58, 0x0a, 0xf4, 1, 9]))
        );
        assert_eq!(p.dns.nameservers, vec!["1.1.1.1"]);
        assert_eq!(p.dns.search, vec!["default.svc.cluster.local"]);
    }

    #[test]
    fn precheck_codes() {
        assert_eq!(precheck(b"{not json").unwrap_err().code, DECODING_FAILURE);
        assert_eq!(precheck(b"[]").unwrap_err().code, DECODING_FAILURE);
        assert_eq!(
            precheck(br#"{"cniVersion":1,"name":"a"}"#)
                .unwrap_err()
                .code,
            DECODING_FAILURE
        );
        assert_eq!(
            precheck(br#"{"cniVersion":"1.1.0"}"#).unwrap_err().code,
            INVALID_CONFIG
        );
        assert_eq!(
            precheck(br#"{"name":"-bad"}"#).unwrap_err().code,
            INVALID_CONFIG
        );
        assert_eq!(
            precheck(br#"{"cniVersion":"0.4.0","name":"ok"}"#)
                .unwrap()
                .as_deref(),
            Some("0.4.0")
        );
    }

    #[test]
    fn validation_codes() {
        let bad = |extra: &str| {
            decode(&conf(extra))
                .and_then(|c| c.validate(&[]))
                .unwrap_err()
        };
        let e = bad(r#","mode":"vxlan""#);
        assert_eq!(e.code, UNSUPPORTED_FIELD);
        assert!(e.msg.contains("mode") && e.msg.contains("vxlan"));
        assert_eq!(bad(r#","mtu":20"#).code, INVALID_CONFIG);
        assert_eq!(bad(r#","mtu":"big""#).code, DECODING_FAILURE);
        assert_eq!(
            bad(r#","bridge":"a-very-long-bridge-name""#).code,
            INVALID_CONFIG
        );
        assert_eq!(bad(r#","runtimeConfig":{"mac":"zz"}"#).code, INVALID_CONFIG);
        let no_type =
            br#"{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]}}"#;
        assert_eq!(
            decode(no_type).unwrap().validate(&[]).unwrap_err().code,
            INVALID_CONFIG
        );
        let no_ipam = br#"{"cniVersion":"1.1.0","name":"n","type":"sarasa-cni"}"#;
        assert_eq!(
            decode(no_ipam).unwrap().validate(&[]).unwrap_err().code,
            INVALID_CONFIG
        );
        let bad_range = String::from_utf8(conf(""))
            .unwrap()
            .replace("10.244.1.0/24", "10.244.1.0/33");
        let p = decode(bad_range.as_bytes()).unwrap().validate(&[]).unwrap();
        assert_eq!(p.ipam().unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn args_cni_ips_and_mac() {
        let p = decode(&conf(
            r#","args":{"cni":{"ips":["10.244.1.8"],"mac":"0a:58:00:00:00:08"}}"#,
        ))
        .unwrap()
        .validate(&[])
        .unwrap();
        assert_eq!(p.requested_ips[0].to_string(), "10.244.1.8");
        assert_eq!(p.mac.unwrap().0[5], 8);
    }

    #[test]
    fn cni_args_ip_and_mac() {
        let args = vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("IP".to_string(), "10.244.1.7".to_string()),
            ("MAC".to_string(), "0a:58:00:00:00:07".to_string()),
        ];
        let p = decode(&conf("")).unwrap().validate(&args).unwrap();
        assert_eq!(p.requested_ips[0].to_string(), "10.244.1.7");
        assert_eq!(p.mac.unwrap().0[5], 7);
    }
}
