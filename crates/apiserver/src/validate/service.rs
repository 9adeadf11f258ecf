//! Service defaulting, validation and allocation of ClusterIPs, NodePorts and the health-check
//! node port (done at write time, as kube-apiserver's Service REST storage does).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::alloc::{in_service_range, ServiceIndex};
use crate::config::Config;
use crate::error::{quote, FieldError};
use crate::meta;
use crate::validate::meta::{dns1123_label, dns1123_subdomain, iana_svc_name, labels, push_all};
use crate::validate::pod::PROTOCOLS;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const FAMILIES: &[&str] = &["IPv4", "IPv6"];
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn family_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn needs_node_ports(spec: &Value) -> bool {
    match s(spec, "type") {
        Some("NodePort") => true,
        Some("LoadBalancer") => {
            spec.get("allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false)
        }
        _ => false,
    }
}

fn needs_health_check(spec: &Value) -> bool {
    s(spec, "type") == Some("LoadBalancer") && s(spec, "externalTrafficPolicy") == Some("Local")
}

/// Fills defaults (type, protocols, targetPorts, traffic policies, session affinity).
pub fn defaults(svc: &mut Value) {
    let spec = svc
        .as_object_mut()
        .map(|o| o.entry("spec").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut);
    let Some(spec) = spec else { return };
    spec.entry("type").or_insert(json!("ClusterIP"));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                p.entry("protocol").or_insert(json!("TCP"));
                if p.get("targetPort")
                    .is_none_or(|t| t.is_null() || t == &json!(0) || t == &json!(""))
                {
                    let port = p.get("port").cloned().unwrap_or(json!(0));
                    p.insert("targetPort".into(), port);
                }
            }
        }
    }
    if ty != "ExternalName" {
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        spec.entry("externalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        spec.entry("allocateLoadBalancerNodePorts")
            .or_insert(json!(true));
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let cfg = spec
            .entry("sessionAffinityConfig")
            .or_insert_with(|| json!({}));
        if let Some(cfg) = cfg.as_object_mut() {
            let cip = cfg.entry("clientIP").or_insert_with(|| json!({}));
            if let Some(cip) = cip.as_object_mut() {
                cip.entry("timeoutSeconds").or_insert(json!(10800));
            }
        }
    }
}

/// Copies allocated values from the stored Service into an update that omits them (as
/// kube-apiserver's patchAllocatedValues does, so `replace` without clusterIP works).
pub fn keep_allocated(new: &mut Value, old: &Value) {
    let (Some(ns), Some(os)) = (new.get("spec").cloned(), old.get("spec")) else {
        return;
    };
    let both_ip = s(&ns, "type") != Some("ExternalName") && s(os, "type") != Some("ExternalName");
    let spec = &mut new["spec"];
    if both_ip {
        if s(&ns, "clusterIP").unwrap_or("").is_empty() {
            if let Some(ip) = os.get("clusterIP") {
                spec["clusterIP"] = ip.clone();
            }
        }
        if ns
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            if let Some(ips) = os.get("clusterIPs") {
                spec["clusterIPs"] = ips.clone();
            }
        }
        if ns
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            if let Some(f) = os.get("ipFamilies") {
                spec["ipFamilies"] = f.clone();
            }
        }
        if ns.get("ipFamilyPolicy").is_none() {
            if let Some(f) = os.get("ipFamilyPolicy") {
                spec["ipFamilyPolicy"] = f.clone();
            }
        }
    }
    if needs_node_ports(&ns) && needs_node_ports(os) {
        let old_ports: HashMap<(i64, String), Value> = os
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        let np = p.get("nodePort")?.clone();
                        let key = (
                            p.get("port").and_then(Value::as_i64).unwrap_or(0),
                            s(p, "protocol").unwrap_or("TCP").to_string(),
                        );
                        Some((key, np))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                    let key = (
                        p.get("port").and_then(Value::as_i64).unwrap_or(0),
                        s(p, "protocol").unwrap_or("TCP").to_string(),
                    );
                    if let Some(np) = old_ports.get(&key) {
                        p["nodePort"] = np.clone();
                    }
                }
            }
        }
    } else if !needs_node_ports(&ns) && needs_node_ports(os) {
        // Type moved away from NodePort/LoadBalancer: drop node ports the user did not change.
        let old_nps: HashSet<i64> = crate::alloc::node_ports(old)
            .into_iter()
            .map(i64::from)
            .collect();
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports {
                if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                    if old_nps.contains(&np) {
                        if let Some(o) = p.as_object_mut() {
                            o.remove("nodePort");
                        }
                    }
                }
            }
        }
    }
    if needs_health_check(&ns) && needs_health_check(os) {
        if ns
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
        {
            if let Some(h) = os.get("healthCheckNodePort") {
                spec["healthCheckNodePort"] = h.clone();
            }
        }
    } else if !needs_health_check(&ns)
        && ns.get("healthCheckNodePort") == os.get("healthCheckNodePort")
    {
        if let Some(o) = spec.as_object_mut() {
            o.remove("healthCheckNodePort");
        }
    }
}

/// Validates the fields that need no allocation.
pub fn validate(svc: &Value, errs: &mut Vec<FieldError>) {
    let spec = svc.get("spec").cloned().unwrap_or(json!({}));
    let ty = s(&spec, "type").unwrap_or("ClusterIP");
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", quote(ty), TYPES));
    }
    let headless = s(&spec, "clusterIP") == Some("None");
    let ports: Vec<Value> = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(p, "name").unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(FieldError::required(format!("{pp}.name"), ""));
            }
        } else {
            push_all(errs, &format!("{pp}.name"), name, dns1123_label(name));
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), quote(name)));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{pp}.port"),
                port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = s(p, "protocol").unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                quote(proto),
                PROTOCOLS,
            ));
        }
        if !keys.insert((port, proto.to_string())) {
            errs.push(FieldError::duplicate(
                pp.clone(),
                quote(&format!("{port}/{proto}")),
            ));
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => {
                let t = n.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&t) {
                    errs.push(FieldError::invalid(
                        format!("{pp}.targetPort"),
                        t.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            Some(Value::String(t)) => {
                push_all(errs, &format!("{pp}.targetPort"), t, iana_svc_name(t))
            }
            _ => {}
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if np != 0 {
                if !needs_node_ports(&spec) && ty != "LoadBalancer" {
                    errs.push(FieldError::forbidden(
                        format!("{pp}.nodePort"),
                        format!("may not be used when `type` is '{ty}'"),
                    ));
                } else if !node_ports.insert((np, proto.to_string())) {
                    errs.push(FieldError::duplicate(
                        format!("{pp}.nodePort"),
                        np.to_string(),
                    ));
                }
            }
        }
    }
    if let Some(sel) = spec.get("selector") {
        labels(Some(sel), "spec.selector", errs);
    }
    let affinity = s(&spec, "sessionAffinity").unwrap_or("None");
    if !["ClientIP", "None"].contains(&affinity) {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            quote(affinity),
            &["ClientIP", "None"],
        ));
    }
    if affinity == "ClientIP" {
        let t = meta::path(&spec, "sessionAffinityConfig.clientIP.timeoutSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(10800);
        if !(1..=86400).contains(&t) {
            errs.push(FieldError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t.to_string(),
                "must be greater than 0 and less than 86400",
            ));
        }
    } else if spec
        .get("sessionAffinityConfig")
        .is_some_and(|c| !c.is_null())
    {
        errs.push(FieldError::invalid(
            "spec.sessionAffinityConfig",
            "",
            "must not be set when session affinity is None",
        ));
    }
    if let Some(etp) = s(&spec, "externalTrafficPolicy") {
        if !["Cluster", "Local"].contains(&etp) {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                quote(etp),
                &["Cluster", "Local"],
            ));
        } else if ty != "NodePort" && ty != "LoadBalancer" {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                quote(etp),
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        }
    }
    if let Some(itp) = s(&spec, "internalTrafficPolicy") {
        if !["Cluster", "Local"].contains(&itp) {
            errs.push(FieldError::not_supported(
                "spec.internalTrafficPolicy",
                quote(itp),
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(h) = spec.get("healthCheckNodePort").and_then(Value::as_i64) {
        if h != 0 && !needs_health_check(&spec) {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                h.to_string(),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    }
    if let Some(ranges) = spec
        .get("loadBalancerSourceRanges")
        .and_then(Value::as_array)
    {
        if ty != "LoadBalancer" && !ranges.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.as_str().unwrap_or("").trim();
            if r.parse::<IpNet>().is_err() {
                errs.push(FieldError::invalid(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    quote(r),
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    }
    if let Some(ips) = spec.get("externalIPs").and_then(Value::as_array) {
        for (i, ip) in ips.iter().enumerate() {
            let ip = ip.as_str().unwrap_or("");
            if ip.parse::<IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("spec.externalIPs[{i}]"),
                    quote(ip),
                    IP_MSG,
                ));
            }
        }
    }
    if let Some(ip) = s(&spec, "loadBalancerIP") {
        if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                "spec.loadBalancerIP",
                quote(ip),
                IP_MSG,
            ));
        }
    }
    if ty == "ExternalName" {
        let en = s(&spec, "externalName").unwrap_or("");
        if en.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            push_all(
                errs,
                "spec.externalName",
                en,
                dns1123_subdomain(en.trim_end_matches('.')),
            );
        }
        let has_ips = !s(&spec, "clusterIP").unwrap_or("").is_empty()
            || spec
                .get("clusterIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        if has_ips {
            errs.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        if spec.get("ipFamilyPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                "spec.ipFamilyPolicy",
                "may not be set for ExternalName services",
            ));
        }
        if spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            errs.push(FieldError::forbidden(
                "spec.ipFamilies",
                "may not be set for ExternalName services",
            ));
        }
    } else if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            quote("None"),
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
}

/// Resolves IP families and allocates ClusterIPs, NodePorts and the health-check node port.
/// `old` is the stored Service on update.
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    idx: &ServiceIndex,
    cfg: &Config,
    errs: &mut Vec<FieldError>,
) {
    let me = format!("{}/{}", meta::namespace(svc), meta::name(svc));
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        families_and_ips(spec, old, idx, cfg, &me, errs);
    }
    let sv = Value::Object(spec.clone());
    let mut taken_now: Vec<u16> = Vec::new();
    if needs_node_ports(&sv) {
        let (lo, hi) = cfg.node_port_range;
        // Ports given explicitly first, then allocate the rest.
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for (i, p) in ports.iter().enumerate() {
                let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
                if np == 0 {
                    continue;
                }
                let field = format!("spec.ports[{i}].nodePort");
                if np < lo as i64 || np > hi as i64 {
                    errs.push(FieldError::invalid(
                        field,
                        np.to_string(),
                        format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    ));
                } else if idx.port_taken(np as u16, &me) {
                    errs.push(FieldError::invalid(
                        field,
                        np.to_string(),
                        "provided port is already allocated",
                    ));
                } else {
                    taken_now.push(np as u16);
                }
            }
            // Ports with the same number share one nodePort (TCP and UDP on 53).
            let mut by_number: HashMap<i64, u16> = HashMap::new();
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    continue;
                }
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                let np = match by_number.get(&port) {
                    Some(np) => Some(*np),
                    None => idx.free_port(cfg.node_port_range, &taken_now),
                };
                match np {
                    Some(np) => {
                        by_number.insert(port, np);
                        if !taken_now.contains(&np) {
                            taken_now.push(np);
                        }
                        p["nodePort"] = json!(np);
                    }
                    None => errs.push(FieldError::invalid(
                        "spec.ports",
                        "",
                        "failed to allocate a nodePort: range is full",
                    )),
                }
            }
        }
    }
    if needs_health_check(&sv) {
        let h = spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let (lo, hi) = cfg.node_port_range;
        if h == 0 {
            match idx.free_port(cfg.node_port_range, &taken_now) {
                Some(p) => {
                    spec.insert("healthCheckNodePort".into(), json!(p));
                }
                None => errs.push(FieldError::invalid(
                    "spec.healthCheckNodePort",
                    "",
                    "failed to allocate a nodePort: range is full",
                )),
            }
        } else if h < lo as i64 || h > hi as i64 {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                h.to_string(),
                format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
            ));
        } else if idx.port_taken(h as u16, &me) || taken_now.contains(&(h as u16)) {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                h.to_string(),
                "provided port is already allocated",
            ));
        }
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn families_and_ips(
    spec: &mut Map<String, Value>,
    old: Option<&Value>,
    idx: &ServiceIndex,
    cfg: &Config,
    me: &str,
    errs: &mut Vec<FieldError>,
) {
    let n0 = errs.len();
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut ips = strings(spec.get("clusterIPs"));
    if ips.is_empty() && !cluster_ip.is_empty() {
        ips.push(cluster_ip.clone());
    }
    if !cluster_ip.is_empty() && ips.first() != Some(&cluster_ip) {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "element [0] must match clusterIP",
        ));
        return;
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "may specify no more than two IPs",
        ));
        return;
    }
    let headless = ips.first().map(String::as_str) == Some("None");
    if headless && ips.len() > 1 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[1]",
            quote(&ips[1]),
            "must be empty when the first element is 'None'",
        ));
        return;
    }
    let mut parsed: Vec<IpAddr> = Vec::new();
    if !headless {
        for (i, ip) in ips.iter().enumerate() {
            match ip.parse::<IpAddr>() {
                Ok(a) => parsed.push(a),
                Err(_) => errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    quote(ip),
                    IP_MSG,
                )),
            }
        }
        if parsed.len() == 2 && parsed[0].is_ipv6() == parsed[1].is_ipv6() {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[1]",
                quote(&ips[1]),
                "may not be the same IP family as clusterIPs[0]",
            ));
        }
    }
    let mut families = strings(spec.get("ipFamilies"));
    for (i, f) in families.iter().enumerate() {
        if !FAMILIES.contains(&f.as_str()) {
            errs.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                quote(f),
                FAMILIES,
            ));
        } else if families[..i].contains(f) {
            errs.push(FieldError::duplicate(
                format!("spec.ipFamilies[{i}]"),
                quote(f),
            ));
        } else if cfg.service_cidr(f == "IPv6").is_none() {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                quote(f),
                "not configured on this cluster",
            ));
        }
    }
    if families.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.ipFamilies",
            format!("{families:?}"),
            "may specify no more than two IP families",
        ));
    }
    let policy = match spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        Some(p) => p.to_string(),
        None if parsed.len() == 2 || families.len() == 2 => "RequireDualStack".to_string(),
        None => "SingleStack".to_string(),
    };
    if !POLICIES.contains(&policy.as_str()) {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            quote(&policy),
            POLICIES,
        ));
    }
    if policy == "SingleStack" && (families.len() > 1 || parsed.len() > 1) {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            quote(&policy),
            "must be RequireDualStack or PreferDualStack when multiple IP families are specified",
        ));
    }
    if policy == "RequireDualStack" && !cfg.dual_stack_services() {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            quote(&policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, ip) in parsed.iter().enumerate() {
        if let Some(f) = families.get(i) {
            if f != family_of(*ip) {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    quote(&ip.to_string()),
                    format!("expected an {f} value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    if errs.len() > n0 {
        return;
    }
    // Families: from the given IPs, then the given families, then the primary; dual-stack policies
    // add the other configured family.
    if families.is_empty() {
        families = parsed.iter().map(|ip| family_of(*ip).to_string()).collect();
    }
    if families.is_empty() {
        families.push(cfg.primary_service_family().to_string());
    }
    if policy != "SingleStack" && families.len() == 1 && cfg.dual_stack_services() {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.to_string());
    }
    for (i, ip) in parsed.iter().enumerate() {
        if cfg.service_cidr(ip.is_ipv6()).is_none() {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                quote(&ip.to_string()),
                format!("{} is not configured on this cluster", family_of(*ip)),
            ));
        }
    }
    if errs.len() > n0 {
        return;
    }
    // On update the primary ClusterIP is immutable.
    if let Some(old) = old {
        let old_ips = strings(meta::path(old, "spec.clusterIPs"));
        if let (Some(o), Some(n)) = (old_ips.first(), ips.first()) {
            if o != n && meta::path_str(old, "spec.type") != Some("ExternalName") {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    quote(n),
                    "may not change once set",
                ));
                return;
            }
        }
    }
    let mut out: Vec<String> = Vec::new();
    if headless {
        out.push("None".to_string());
    } else {
        let mut chosen: Vec<IpAddr> = Vec::new();
        for (i, fam) in families.iter().enumerate() {
            let v6 = fam == "IPv6";
            let Some(net) = cfg.service_cidr(v6) else {
                continue;
            };
            if let Some(ip) = parsed.get(i) {
                if !in_service_range(net, *ip) {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        format!("{ips:?}"),
                        format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {net}"),
                    ));
                } else if idx.ip_taken(*ip, me) {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        format!("{ips:?}"),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                } else {
                    chosen.push(*ip);
                }
            } else {
                match idx.free_ip(net, &chosen) {
                    Some(ip) => chosen.push(ip),
                    None => errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        "",
                        format!("failed to allocate a serviceIP: range {net} is full"),
                    )),
                }
            }
        }
        out = chosen.iter().map(ToString::to_string).collect();
    }
    if errs.len() > n0 {
        return;
    }
    spec.insert(
        "clusterIP".into(),
        json!(out.first().cloned().unwrap_or_default()),
    );
    spec.insert("clusterIPs".into(), json!(out));
    spec.insert("ipFamilies".into(), json!(families));
    spec.insert("ipFamilyPolicy".into(), json!(policy));
}

/// Validates `status.loadBalancer.ingress` written through /status.
pub fn validate_status(svc: &Value, errs: &mut Vec<FieldError>) {
    let Some(ing) = meta::path(svc, "status.loadBalancer.ingress").and_then(Value::as_array) else {
        return;
    };
    for (i, e) in ing.iter().enumerate() {
        if let Some(ip) = e.get("ip").and_then(Value::as_str) {
            if ip.parse::<IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("status.loadBalancer.ingress[{i}].ip"),
                    quote(ip),
                    IP_MSG,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::new("/nonexistent")
    }

    fn run(mut svc: Value, idx: &ServiceIndex) -> (Value, Vec<FieldError>) {
        defaults(&mut svc);
        let mut errs = Vec::new();
        validate(&svc, &mut errs);
        if errs.is_empty() {
            allocate(&mut svc, None, idx, &cfg(), &mut errs);
        }
        (svc, errs)
    }

    #[test]
    fn allocates_cluster_ip_and_node_ports() {
        let idx = ServiceIndex::default();
        let (svc, errs) = run(
            json!({"metadata":{"name":"a","namespace":"d"},"spec":{"type":"LoadBalancer","externalTrafficPolicy":"Local","ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}),
            &idx,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96."));
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(
            svc["spec"]["ports"][0]["nodePort"],
            svc["spec"]["ports"][1]["nodePort"]
        );
        assert_ne!(
            svc["spec"]["healthCheckNodePort"],
            svc["spec"]["ports"][0]["nodePort"]
        );
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(53));
    }

    #[test]
    fn rejects_bad_ports_and_families() {
        let idx = ServiceIndex::default();
        let (_, errs) = run(
            json!({"metadata":{"name":"a","namespace":"d"},"spec":{"ipFamilies":["IPv6"],"ports":[{"port":70000}]}}),
            &idx,
        );
        assert_eq!(errs[0].field, "spec.ports[0].port");
        let (_, errs) = run(
            json!({"metadata":{"name":"a","namespace":"d"},"spec":{"ipFamilies":["IPv6"],"ports":[{"port":80}]}}),
            &idx,
        );
        assert_eq!(errs[0].field, "spec.ipFamilies[0]");
        let (_, errs) = run(
            json!({"metadata":{"name":"a","namespace":"d"},"spec":{"ipFamilyPolicy":"RequireDualStack","ports":[{"port":80}]}}),
            &idx,
        );
        assert_eq!(errs[0].field, "spec.ipFamilyPolicy");
    }

    #[test]
    fn duplicate_cluster_ip_and_out_of_range() {
        let mut idx = ServiceIndex::default();
        idx.add(
            &json!({"metadata":{"name":"x","namespace":"d"},"spec":{"clusterIP":"10.96.0.10"}}),
        );
        let (_, errs) = run(
            json!({"metadata":{"name":"a","namespace":"d"},"spec":{"clusterIP":"10.96.0.10","ports":[{"port":80}]}}),
            &idx,
        );
        assert!(errs[0].detail.contains("already allocated"), "{errs:?}");
        let (_, errs) = run(
            json!({"metadata":{"name":"a","namespace":"d"},"spec":{"clusterIP":"10.0.0.1","ports":[{"port":80}]}}),
            &idx,
        );
        assert!(
            errs[0].detail.contains("not in the valid range"),
            "{errs:?}"
        );
    }
}
