//! `runtimeConfig.portMappings` (the `portMappings` capability of the CNI conventions, as the
//! reference `portmap` plugin reads it): `[{hostPort, containerPort, protocol, hostIP}]`,
//! validated into [`HostPort`]s with errors naming the entry and field.

use std::net::IpAddr;

use sarasa_ipam::HostPort;
use serde_json::Value;

use crate::error::CniError;

/// Parses and validates the mappings; an empty list maps nothing.
pub fn parse(entries: &[Value]) -> Result<Vec<HostPort>, CniError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_one(i, e))
        .collect()
}

fn parse_one(i: usize, e: &Value) -> Result<HostPort, CniError> {
    let field = |name: &str| format!("runtimeConfig.portMappings[{i}].{name}");
    let obj = e.as_object().ok_or_else(|| {
        CniError::config(format!(
            "runtimeConfig.portMappings[{i}] must be an object, got {e}"
        ))
    })?;
    let port = |name: &str| -> Result<u16, CniError> {
        match obj.get(name) {
            None | Some(Value::Null) => {
                Err(CniError::config(format!("{} is missing", field(name))))
            }
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
                .ok_or_else(|| {
                    CniError::config(format!("{} {v} is not a port (1-65535)", field(name)))
                }),
        }
    };
    let host_port = port("hostPort")?;
    let container_port = port("containerPort")?;
    let protocol = match obj.get("protocol") {
        None | Some(Value::Null) => "tcp".to_string(),
        Some(Value::String(p)) => match p.to_ascii_lowercase().as_str() {
            "" | "tcp" => "tcp".to_string(),
            "udp" => "udp".to_string(),
            "sctp" => "sctp".to_string(),
            _ => {
                return Err(CniError::config(format!(
                    "{} {p:?} is not tcp, udp or sctp",
                    field("protocol")
                )))
            }
        },
        Some(v) => {
            return Err(CniError::config(format!(
                "{} must be a string, got {v}",
                field("protocol")
            )))
        }
    };
    let host_ip = match obj.get("hostIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            let ip: IpAddr = s.parse().map_err(|_| {
                CniError::config(format!("{} {s:?} is not an IP address", field("hostIP")))
            })?;
            if ip.is_loopback() || ip.is_multicast() {
                return Err(CniError::config(format!(
                    "{} {s:?}: loopback and multicast addresses cannot be mapped",
                    field("hostIP")
                )));
            }
            Some(ip)
        }
        Some(v) => {
            return Err(CniError::config(format!(
                "{} must be a string, got {v}",
                field("hostIP")
            )))
        }
    };
    Ok(HostPort {
        host_port,
        container_port,
        protocol,
        host_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_kubelet_and_podman_send() {
        let got = parse(&[
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "TCP"}),
            json!({"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.1"}),
            json!({"hostPort": 9000, "containerPort": 9000, "hostIP": ""}),
        ])
        .unwrap();
        assert_eq!(got[0].protocol, "tcp");
        assert_eq!(got[0].host_ip, None);
        assert_eq!(got[1].host_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(got[2].protocol, "tcp");
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        for (entry, want) in [
            (
                json!({"containerPort": 80}),
                "portMappings[0].hostPort is missing",
            ),
            (
                json!({"hostPort": 0, "containerPort": 80}),
                "portMappings[0].hostPort 0",
            ),
            (
                json!({"hostPort": 70000, "containerPort": 80}),
                "hostPort 70000",
            ),
            (
                json!({"hostPort": 80, "containerPort": -1}),
                "containerPort -1",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}),
                "protocol \"icmp\"",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "hostIP": "nope"}),
                "hostIP \"nope\"",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "hostIP": "127.0.0.1"}),
                "loopback",
            ),
            (json!("80:80"), "portMappings[0] must be an object"),
        ] {
            let e = parse(&[entry]).unwrap_err();
            assert_eq!(e.code, crate::error::INVALID_CONFIG);
            assert!(
                e.details.contains(want) || e.msg.contains(want),
                "{want}: {e:?}"
            );
        }
    }
}
