//! Deployment defaulting and validation.

use serde_json::{json, Value};

use crate::error::FieldError;
use crate::selector::{JsonSelector, LabelSelector};
use crate::validate::meta::{label_selector, labels};
use crate::validate::numeric::{self, IntOrPercent, INT32_MAX};
use crate::validate::pod;

/// Fills replicas, strategy and the template's pod defaults.
pub fn defaults(d: &mut Value) {
    let Some(spec) = d.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    spec.entry("progressDeadlineSeconds").or_insert(json!(600));
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if let Some(st) = strategy.as_object_mut() {
        st.entry("type").or_insert(json!("RollingUpdate"));
        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                ru.entry("maxUnavailable").or_insert(json!("25%"));
                ru.entry("maxSurge").or_insert(json!("25%"));
            }
        }
    }
    if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod::default_spec(ps);
    }
}

/// Validates a Deployment; `max_replicas` is the server's bound of `spec.replicas`.
pub fn validate(d: &Value, max_replicas: i64, errs: &mut Vec<FieldError>) {
    let spec = d.get("spec").cloned().unwrap_or(json!({}));
    numeric::replicas(&spec, max_replicas, errs);
    let min_ready = numeric::int_in(
        spec.get("minReadySeconds"),
        "spec.minReadySeconds",
        0,
        INT32_MAX,
        errs,
    );
    numeric::int_in(
        spec.get("revisionHistoryLimit"),
        "spec.revisionHistoryLimit",
        0,
        INT32_MAX,
        errs,
    );
    if let Some(p) = numeric::int_in(
        spec.get("progressDeadlineSeconds"),
        "spec.progressDeadlineSeconds",
        1,
        INT32_MAX,
        errs,
    ) {
        if min_ready.is_some_and(|m| p <= m) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                p.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(ru) = crate::meta::path(&spec, "strategy.rollingUpdate") {
        let unavailable = numeric::int_or_percent(
            ru.get("maxUnavailable"),
            "spec.strategy.rollingUpdate.maxUnavailable",
            errs,
        );
        let surge = numeric::int_or_percent(
            ru.get("maxSurge"),
            "spec.strategy.rollingUpdate.maxSurge",
            errs,
        );
        if unavailable.is_some_and(IntOrPercent::is_zero)
            && surge.is_some_and(IntOrPercent::is_zero)
        {
            errs.push(FieldError::invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                "0",
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    selector_and_template(&spec, "deployment", errs);
    if let Some(t) = crate::meta::path_str(&spec, "strategy.type") {
        if t != "RollingUpdate" && t != "Recreate" {
            errs.push(FieldError::not_supported(
                "spec.strategy.type",
                crate::error::quote(t),
                &["Recreate", "RollingUpdate"],
            ));
        }
    }
}

/// The rules a workload's `spec.selector` and `spec.template` share (Deployment, DaemonSet):
/// a non-empty selector matching the template's labels, a valid pod template, restartPolicy
/// Always. `kind` words the empty-selector message.
pub fn selector_and_template(spec: &Value, kind: &str, errs: &mut Vec<FieldError>) {
    let template_labels = crate::meta::path(spec, "template.metadata.labels");
    labels(template_labels, "spec.template.metadata.labels", errs);
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let n = errs.len();
            label_selector(sel, "spec.selector", errs);
            if errs.len() == n {
                match LabelSelector::from_object(sel) {
                    Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
                        "spec.selector",
                        sel.to_string(),
                        format!("empty selector is invalid for {kind}"),
                    )),
                    Ok(s) => {
                        if !s.matches_json(template_labels.and_then(Value::as_object)) {
                            errs.push(FieldError::invalid(
                                "spec.template.metadata.labels",
                                template_labels.map(|l| l.to_string()).unwrap_or_default(),
                                "`selector` does not match template `labels`",
                            ));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
    match crate::meta::path(spec, "template.spec") {
        Some(ps) => {
            pod::spec(ps, "spec.template.spec", errs);
            let rp = ps
                .get("restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Always");
            if rp != "Always" {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    crate::error::quote(rp),
                    &["Always"],
                ));
            }
        }
        None => errs.push(FieldError::required("spec.template.spec.containers", "")),
    }
}

/// `spec.selector` may not change (apps/v1).
pub fn validate_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let n = crate::meta::path(new, "spec.selector");
    let o = crate::meta::path(old, "spec.selector");
    if n != o {
        errs.push(FieldError::invalid(
            "spec.selector",
            n.map(|v| v.to_string()).unwrap_or_default(),
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_must_match_template() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        defaults(&mut d);
        let mut errs = Vec::new();
        validate(&d, 1000, &mut errs);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn numeric_fields_are_bounded() {
        let cases = [
            (json!({"replicas": 2147483647}), "spec.replicas"),
            (json!({"replicas": i64::MAX}), "spec.replicas"),
            (json!({"replicas": -1}), "spec.replicas"),
            (
                json!({"strategy": {"rollingUpdate": {"maxUnavailable": "9223372036854775807%"}}}),
                "spec.strategy.rollingUpdate.maxUnavailable",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxSurge": i64::MAX}}}),
                "spec.strategy.rollingUpdate.maxSurge",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxSurge": -1}}}),
                "spec.strategy.rollingUpdate.maxSurge",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}}),
                "spec.strategy.rollingUpdate.maxUnavailable",
            ),
            (json!({"minReadySeconds": -1}), "spec.minReadySeconds"),
            (
                json!({"progressDeadlineSeconds": i64::MAX}),
                "spec.progressDeadlineSeconds",
            ),
            (
                json!({"revisionHistoryLimit": -3}),
                "spec.revisionHistoryLimit",
            ),
            (
                json!({"template": {"spec": {"terminationGracePeriodSeconds": i64::MAX}}}),
                "spec.template.spec.terminationGracePeriodSeconds",
            ),
        ];
        for (patch, field) in cases {
            let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
            json_patch::merge(&mut d["spec"], &patch);
            defaults(&mut d);
            let mut errs = Vec::new();
            validate(&d, 1000, &mut errs);
            let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, [field], "{patch}");
        }
    }
}
