//! EndpointSlice defaulting and validation.

use serde_json::{json, Value};

use crate::error::{quote, FieldError};
use crate::validate::pod::PROTOCOLS;

pub fn defaults(es: &mut Value) {
    if let Some(Value::Array(ports)) = es.get_mut("ports") {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                p.entry("protocol").or_insert(json!("TCP"));
            }
        }
    }
}

pub fn validate(es: &Value, errs: &mut Vec<FieldError>) {
    let at = es.get("addressType").and_then(Value::as_str).unwrap_or("");
    let types = ["FQDN", "IPv4", "IPv6"];
    if !types.contains(&at) {
        errs.push(FieldError::not_supported("addressType", quote(at), &types));
    }
    let eps = es
        .get("endpoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if eps.len() > 1000 {
        errs.push(FieldError::too_long("endpoints", 1000));
    }
    for (i, e) in eps.iter().enumerate() {
        let addrs = e
            .get("addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if addrs.is_empty() || addrs.len() > 100 {
            errs.push(FieldError::invalid(
                format!("endpoints[{i}].addresses"),
                addrs.len().to_string(),
                "must contain at least 1 and at most 100 addresses",
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ok = match at {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => crate::validate::meta::dns1123_subdomain(a).is_empty(),
            };
            if !ok {
                errs.push(FieldError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    quote(a),
                    format!("must be a valid {at} address"),
                ));
            }
        }
    }
    let ports = es
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, p) in ports.iter().enumerate() {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(
                format!("ports[{i}].protocol"),
                quote(proto),
                PROTOCOLS,
            ));
        }
        if let Some(port) = p.get("port").and_then(Value::as_i64) {
            if !(0..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("ports[{i}].port"),
                    port.to_string(),
                    "must be between 0 and 65535, inclusive",
                ));
            }
        }
    }
}
