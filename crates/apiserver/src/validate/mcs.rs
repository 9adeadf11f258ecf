//! ServiceExport and ServiceImport defaulting and validation: what the mcs-api CRDs' schemas
//! enforce (ServiceImport `type` in {ClusterSetIP, Headless}, `ports` required, at most two
//! `ips`), plus what a Service's own fields would be held to (ports 1-65535 with a known
//! protocol, unique port names when several, addresses that parse, one per family).
//! A ServiceExport is named after the Service it exports, so its name is a Service's
//! (DNS-1035 label, set in admission's name rule).

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::error::{quote, FieldError};
use crate::validate::meta::{dns1123_label, push_all};
use crate::validate::pod::PROTOCOLS;

const TYPES: &[&str] = &["ClusterSetIP", "Headless"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];

/// Defaults a ServiceImport: port protocols TCP, sessionAffinity None.
pub fn import_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
        }
    }
    spec.entry("sessionAffinity").or_insert(json!("None"));
}

pub fn validate_import(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    match spec.get("type").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(FieldError::required("spec.type", "")),
        t if !TYPES.contains(&t) => {
            errs.push(FieldError::not_supported("spec.type", quote(t), TYPES))
        }
        _ => {}
    }
    match spec.get("ports").and_then(Value::as_array) {
        None => errs.push(FieldError::required("spec.ports", "")),
        Some(ports) => validate_ports(ports, errs),
    }
    if let Some(ips) = spec.get("ips").and_then(Value::as_array) {
        if ips.len() > 2 {
            errs.push(FieldError::too_many("spec.ips", ips.len(), 2));
        }
        let mut families = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let field = format!("spec.ips[{i}]");
            let text = ip.as_str().unwrap_or("");
            match text.parse::<IpAddr>() {
                Ok(a) if families.contains(&a.is_ipv4()) => errs.push(FieldError::invalid(
                    field,
                    quote(text),
                    "may not hold two addresses of one IP family",
                )),
                Ok(a) => families.push(a.is_ipv4()),
                Err(_) => errs.push(FieldError::invalid(
                    field,
                    quote(text),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )),
            }
        }
        if spec.get("type").and_then(Value::as_str) == Some("Headless") && !ips.is_empty() {
            errs.push(FieldError::invalid(
                "spec.ips",
                format!("{ips:?}"),
                "must be empty for a Headless ServiceImport",
            ));
        }
    }
    if let Some(a) = spec.get("sessionAffinity").and_then(Value::as_str) {
        if !AFFINITIES.contains(&a) {
            errs.push(FieldError::not_supported(
                "spec.sessionAffinity",
                quote(a),
                AFFINITIES,
            ));
        }
    }
    if let Some(t) = spec
        .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
        .and_then(Value::as_i64)
    {
        if !(1..=86_400).contains(&t) {
            errs.push(FieldError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t.to_string(),
                "must be greater than 0 and less than 86400",
            ));
        }
    }
    if let Some(clusters) = obj.pointer("/status/clusters").and_then(Value::as_array) {
        let mut seen = Vec::new();
        for (i, c) in clusters.iter().enumerate() {
            let field = format!("status.clusters[{i}].cluster");
            let name = c.get("cluster").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(field, ""));
                continue;
            }
            push_all(errs, &field, name, dns1123_label(name));
            if seen.contains(&name) {
                errs.push(FieldError::duplicate(field, quote(name)));
            }
            seen.push(name);
        }
    }
}

fn validate_ports(ports: &[Value], errs: &mut Vec<FieldError>) {
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let base = format!("spec.ports[{i}]");
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if port == 0 {
            errs.push(FieldError::required(format!("{base}.port"), ""));
        } else if !(1..=65_535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{base}.port"),
                port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(
                format!("{base}.protocol"),
                quote(proto),
                PROTOCOLS,
            ));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(FieldError::required(format!("{base}.name"), ""));
            }
            continue;
        }
        push_all(errs, &format!("{base}.name"), name, dns1123_label(name));
        if names.contains(&name) {
            errs.push(FieldError::duplicate(format!("{base}.name"), quote(name)));
        }
        names.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(obj: Value) -> Vec<String> {
        let mut obj = obj;
        import_defaults(&mut obj);
        let mut errs = Vec::new();
        validate_import(&obj, &mut errs);
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn a_clustersetip_import_passes_and_is_defaulted() {
        let mut obj = json!({"spec": {"type": "ClusterSetIP", "ips": ["242.1.0.5", "fd00::5"],
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}});
        import_defaults(&mut obj);
        let mut errs = Vec::new();
        validate_import(&obj, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(obj["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(obj["spec"]["sessionAffinity"], "None");
    }

    #[test]
    fn each_mistake_names_its_field() {
        for (obj, want) in [
            (json!({}), "spec: "),
            (json!({"spec": {"ports": []}}), "spec.type: "),
            (
                json!({"spec": {"type": "LoadBalancer", "ports": []}}),
                "spec.type: supported values",
            ),
            (json!({"spec": {"type": "Headless"}}), "spec.ports: "),
            (
                json!({"spec": {"type": "Headless", "ports": [{"port": 70000}]}}),
                "spec.ports[0].port: must be between",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [{"name": "a"}]}}),
                "spec.ports[0].port: ",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [{"port": 1, "protocol": "ICMP"}]}}),
                "spec.ports[0].protocol",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [{"port": 1}, {"port": 2}]}}),
                "spec.ports[0].name: ",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}}),
                "spec.ports[1].name",
            ),
            (
                json!({"spec": {"type": "ClusterSetIP", "ports": [], "ips": ["1.2.3.4", "5.6.7.8"]}}),
                "spec.ips[1]: may not hold two",
            ),
            (
                json!({"spec": {"type": "ClusterSetIP", "ports": [], "ips": ["1.2.3.4", "::1", "::2"]}}),
                "spec.ips: ",
            ),
            (
                json!({"spec": {"type": "ClusterSetIP", "ports": [], "ips": ["bogus"]}}),
                "spec.ips[0]: must be a valid IP",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [], "ips": ["1.2.3.4"]}}),
                "spec.ips: must be empty",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [], "sessionAffinity": "Sticky"}}),
                "spec.sessionAffinity",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": [], "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}}),
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": []}, "status": {"clusters": [{"cluster": "Bad_Id"}]}}),
                "status.clusters[0].cluster",
            ),
            (
                json!({"spec": {"type": "Headless", "ports": []}, "status": {"clusters": [{"cluster": "a"}, {"cluster": "a"}]}}),
                "status.clusters[1].cluster",
            ),
        ] {
            let errs = errors(obj.clone());
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{obj}: want {want:?} in {errs:?}"
            );
        }
    }
}
