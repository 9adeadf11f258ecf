//! Pod and pod-template validation and defaulting.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::error::{quote, FieldError};
use crate::validate::meta::{dns1123_label, dns1123_subdomain, iana_svc_name, push_all};

pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Fills the defaults kube-apiserver fills in a pod spec.
pub fn default_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    s.entry("restartPolicy").or_insert(json!("Always"));
    s.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    s.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    s.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = s.get_mut(list) {
            for c in cs {
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports {
                        if let Some(p) = p.as_object_mut() {
                            p.entry("protocol").or_insert(json!("TCP"));
                        }
                    }
                }
                if let Some(c) = c.as_object_mut() {
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    c.entry("terminationMessagePolicy").or_insert(json!("File"));
                }
            }
        }
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    let mut port_names = HashSet::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let cp = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{cp}.name"), ""));
            } else {
                push_all(errs, &format!("{cp}.name"), name, dns1123_label(name));
                if !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(format!("{cp}.name"), quote(name)));
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .is_empty()
            {
                errs.push(FieldError::required(format!("{cp}.image"), ""));
            }
            let Some(ports) = c.get("ports").and_then(Value::as_array) else {
                continue;
            };
            for (j, p) in ports.iter().enumerate() {
                let pp = format!("{cp}.ports[{j}]");
                let cport = int(p.get("containerPort")).unwrap_or(0);
                if !(1..=65535).contains(&cport) {
                    errs.push(FieldError::invalid(
                        format!("{pp}.containerPort"),
                        cport.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if let Some(h) = int(p.get("hostPort")) {
                    if !(0..=65535).contains(&h) {
                        errs.push(FieldError::invalid(
                            format!("{pp}.hostPort"),
                            h.to_string(),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
                let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                if !PROTOCOLS.contains(&proto) {
                    errs.push(FieldError::not_supported(
                        format!("{pp}.protocol"),
                        quote(proto),
                        PROTOCOLS,
                    ));
                }
                if let Some(n) = p.get("name").and_then(Value::as_str) {
                    if !n.is_empty() {
                        push_all(errs, &format!("{pp}.name"), n, iana_svc_name(n));
                        if !port_names.insert(n.to_string()) {
                            errs.push(FieldError::duplicate(format!("{pp}.name"), quote(n)));
                        }
                    }
                }
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        let ok = ["Always", "OnFailure", "Never"];
        if !ok.contains(&rp) {
            errs.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                quote(rp),
                &ok,
            ));
        }
    }
    if let Some(n) = spec.get("nodeName").and_then(Value::as_str) {
        if !n.is_empty() {
            push_all(errs, &format!("{path}.nodeName"), n, dns1123_subdomain(n));
        }
    }
    crate::validate::pod_dns::dns(spec, path, errs);
    crate::validate::numeric::pod_spec(spec, path, errs);
}

/// Pod spec fields an update may change (kube-apiserver allows images, activeDeadlineSeconds,
/// tolerations additions, and setting nodeName through binding).
pub fn spec_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let strip = |s: &Value| -> Value {
        let mut s = s.clone();
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = s.get_mut(list) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("activeDeadlineSeconds");
            o.remove("tolerations");
        }
        s
    };
    let n = new.get("spec").cloned().unwrap_or(Value::Null);
    let o = old.get("spec").cloned().unwrap_or(Value::Null);
    if strip(&n) != strip(&o) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)",
        ));
    }
}

/// Validates the IPs a pod runner reports in status.
pub fn status(status: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(st) = status else { return };
    if let Some(ip) = st.get("podIP").and_then(Value::as_str) {
        if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                "status.podIP",
                quote(ip),
                "must be a valid IP address",
            ));
        }
    }
    if let Some(ips) = st.get("podIPs").and_then(Value::as_array) {
        for (i, v) in ips.iter().enumerate() {
            let ip = v.get("ip").and_then(Value::as_str).unwrap_or("");
            if ip.parse::<std::net::IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("status.podIPs[{i}].ip"),
                    quote(ip),
                    "must be a valid IP address",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rules() {
        let mut s = json!({"containers": [
            {"name": "a", "image": "x", "ports": [
                {"containerPort": 70000},
                {"containerPort": 80, "protocol": "ICMP", "name": "http"},
                {"containerPort": 81, "name": "http"}
            ]}
        ]});
        default_spec(&mut s);
        let mut errs = Vec::new();
        spec(&s, "spec", &mut errs);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[1].protocol",
                "spec.containers[0].ports[2].name"
            ]
        );
    }

    #[test]
    fn containers_required() {
        let mut errs = Vec::new();
        spec(&json!({}), "spec.template.spec", &mut errs);
        assert_eq!(errs[0].field, "spec.template.spec.containers");
    }
}
