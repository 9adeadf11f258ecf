//! Node validation: podCIDRs are valid CIDRs, at most one per family, and fixed once set.

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::error::{quote, FieldError};

fn cidrs(node: &Value) -> Vec<String> {
    let mut out: Vec<String> = crate::meta::path(node, "spec.podCIDRs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        if let Some(c) = crate::meta::path_str(node, "spec.podCIDR") {
            if !c.is_empty() {
                out.push(c.to_string());
            }
        }
    }
    out
}

/// Keeps `podCIDR` and `podCIDRs` consistent (podCIDR = podCIDRs[0]).
pub fn defaults(node: &mut Value) {
    let c = cidrs(node);
    if c.is_empty() {
        return;
    }
    if let Some(spec) = node.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("podCIDR".into(), json!(c[0]));
        spec.insert("podCIDRs".into(), json!(c));
    }
}

pub fn validate(node: &Value, errs: &mut Vec<FieldError>) {
    let c = cidrs(node);
    if c.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.podCIDRs",
            format!("{c:?}"),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    let mut fams = Vec::new();
    for (i, s) in c.iter().enumerate() {
        match s.parse::<IpNet>() {
            Ok(n) => {
                let v6 = matches!(n, IpNet::V6(_));
                if fams.contains(&v6) {
                    errs.push(FieldError::invalid(
                        format!("spec.podCIDRs[{i}]"),
                        quote(s),
                        "may specify no more than one CIDR for each IP family",
                    ));
                }
                fams.push(v6);
            }
            Err(_) => errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                quote(s),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
}

pub fn validate_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let o = cidrs(old);
    if !o.is_empty() && cidrs(new) != o {
        errs.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
}
