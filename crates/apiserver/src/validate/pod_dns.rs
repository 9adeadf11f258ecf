//! A pod's `dnsPolicy` and `dnsConfig`, validated as kube-apiserver validates them
//! (`validatePodDNSConfig` in apis/core/validation): the policy is one of four names, `None`
//! needs a `dnsConfig` with at least one nameserver, and the kubelet's resolver limits are API
//! limits (3 nameservers, 32 search domains, 2048 characters of search list). Kept apart from
//! the rest of the pod rules because the lab's kubelet renders exactly what passes here.

use serde_json::Value;

use crate::error::{quote, FieldError};
use crate::validate::meta::{dns1123_subdomain, push_all};

pub const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
/// glibc's MAXNS: more nameservers than this are ignored by the resolver.
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
/// Length of the search list joined by single spaces.
pub const MAX_SEARCH_CHARS: usize = 2048;

/// Validates `dnsPolicy` and `dnsConfig` of the pod spec at `path`.
pub fn dns(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let policy = spec.get("dnsPolicy").and_then(Value::as_str);
    if let Some(p) = policy {
        if !DNS_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{path}.dnsPolicy"),
                quote(p),
                DNS_POLICIES,
            ));
        }
    }
    let config = spec.get("dnsConfig").filter(|c| !c.is_null());
    let field = |f: &str| format!("{path}.dnsConfig{f}");
    if policy == Some("None") && config.is_none() {
        errs.push(FieldError::required(
            field(""),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    let Some(config) = config else { return };
    if !config.is_object() {
        errs.push(FieldError::invalid(field(""), "", "must be an object"));
        return;
    }
    let nameservers = strings(config.get("nameservers"), &field(".nameservers"), errs);
    if policy == Some("None") && nameservers.is_empty() {
        errs.push(FieldError::required(
            field(".nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    if nameservers.len() > MAX_NAMESERVERS {
        errs.push(FieldError::invalid(
            field(".nameservers"),
            format!("{nameservers:?}"),
            format!("must not have more than {MAX_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                field(&format!(".nameservers[{i}]")),
                quote(ns),
                "must be a valid IP address",
            ));
        }
    }
    let searches = strings(config.get("searches"), &field(".searches"), errs);
    if searches.len() > MAX_SEARCHES {
        errs.push(FieldError::invalid(
            field(".searches"),
            format!("{searches:?}"),
            format!("must not have more than {MAX_SEARCHES} search paths"),
        ));
    }
    let joined = searches.join(" ");
    if joined.len() > MAX_SEARCH_CHARS {
        errs.push(FieldError::invalid(
            field(".searches"),
            quote(&joined),
            format!(
                "must not have more than {MAX_SEARCH_CHARS} characters (including spaces) in the search list"
            ),
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        // A trailing dot (an absolute name) is allowed, as the resolver allows it.
        let name = s.strip_suffix('.').unwrap_or(s);
        push_all(
            errs,
            &field(&format!(".searches[{i}]")),
            s,
            dns1123_subdomain(name),
        );
    }
    match config.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Array(options)) => {
            for (i, o) in options.iter().enumerate() {
                if o.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    errs.push(FieldError::required(
                        field(&format!(".options[{i}].name")),
                        "",
                    ));
                }
                if o.get("value")
                    .is_some_and(|v| !v.is_null() && !v.is_string())
                {
                    errs.push(FieldError::invalid(
                        field(&format!(".options[{i}].value")),
                        "",
                        "must be a string",
                    ));
                }
            }
        }
        Some(_) => errs.push(FieldError::invalid(
            field(".options"),
            "",
            "must be a list of {name, value}",
        )),
    }
}

/// A list of strings at `field`, reporting anything else.
fn strings(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    errs.push(FieldError::invalid(
                        format!("{field}[{i}]"),
                        "",
                        "must be a string",
                    ));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errs.push(FieldError::invalid(field, "", "must be a list of strings"));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        dns(&spec, "spec", &mut errs);
        errs.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_four_policies_pass_and_others_name_the_field() {
        for p in DNS_POLICIES.iter().filter(|p| **p != "None") {
            assert!(fields(json!({"dnsPolicy": p})).is_empty(), "{p}");
        }
        assert_eq!(fields(json!({"dnsPolicy": "Cluster"})), ["spec.dnsPolicy"]);
        let mut errs = Vec::new();
        dns(&json!({"dnsPolicy": "clusterfirst"}), "spec", &mut errs);
        assert!(errs[0].detail.contains("\"ClusterFirst\""), "{:?}", errs[0]);
    }

    #[test]
    fn policy_none_needs_a_config_with_a_nameserver() {
        assert_eq!(fields(json!({"dnsPolicy": "None"})), ["spec.dnsConfig"]);
        assert_eq!(
            fields(json!({"dnsPolicy": "None", "dnsConfig": {"searches": ["a.b"]}})),
            ["spec.dnsConfig.nameservers"]
        );
        assert!(
            fields(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"]}}))
                .is_empty()
        );
        // Other policies take a config without nameservers.
        assert!(
            fields(json!({"dnsPolicy": "ClusterFirst", "dnsConfig": {"searches": ["a.b"]}}))
                .is_empty()
        );
    }

    #[test]
    fn nameserver_limits_and_syntax() {
        assert_eq!(
            fields(
                json!({"dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]}})
            ),
            ["spec.dnsConfig.nameservers"]
        );
        assert_eq!(
            fields(json!({"dnsConfig": {"nameservers": ["1.1.1.1", "dns.example"]}})),
            ["spec.dnsConfig.nameservers[1]"]
        );
        assert!(fields(json!({"dnsConfig": {"nameservers": ["fd00::10"]}})).is_empty());
    }

    #[test]
    fn search_limits_and_syntax() {
        let many: Vec<String> = (0..33).map(|i| format!("d{i}.example")).collect();
        assert_eq!(
            fields(json!({"dnsConfig": {"searches": many}})),
            ["spec.dnsConfig.searches"]
        );
        // 32 entries of 64 characters: 32*64 + 31 spaces > 2048.
        let long: Vec<String> = (0..32)
            .map(|i| format!("{}{:02}.example", "a".repeat(54), i))
            .collect();
        assert_eq!(long[0].len(), 64);
        assert_eq!(
            fields(json!({"dnsConfig": {"searches": long}})),
            ["spec.dnsConfig.searches"]
        );
        assert_eq!(
            fields(json!({"dnsConfig": {"searches": ["ok.example.", "Bad_Name"]}})),
            ["spec.dnsConfig.searches[1]"]
        );
    }

    #[test]
    fn options_need_a_name() {
        assert_eq!(
            fields(
                json!({"dnsConfig": {"options": [{"name": "ndots", "value": "2"}, {"value": "1"}]}})
            ),
            ["spec.dnsConfig.options[1].name"]
        );
        assert!(fields(json!({"dnsConfig": {"options": [{"name": "edns0"}]}})).is_empty());
    }
}
