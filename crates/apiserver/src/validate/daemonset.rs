//! DaemonSet defaulting and validation (apps/v1): updateStrategy defaults, maxUnavailable and
//! maxSurge as int-or-percent, the shared selector/template rules, and the template generation
//! the API server keeps in an annotation (the pods' `pod-template-generation`).

use serde_json::{json, Value};

use crate::controllers::daemonsets::TEMPLATE_GENERATION_ANNOTATION;
use crate::error::{quote, FieldError};
use crate::validate::numeric::{int_in, int_or_percent, IntOrPercent, INT32_MAX};
use crate::validate::{deployment, pod};

/// Fills updateStrategy (RollingUpdate, maxUnavailable 1, maxSurge 0), revisionHistoryLimit and
/// the template's pod defaults.
pub fn defaults(ds: &mut Value) {
    let Some(spec) = ds.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if let Some(st) = strategy.as_object_mut() {
        st.entry("type").or_insert(json!("RollingUpdate"));
        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                ru.entry("maxUnavailable").or_insert(json!(1));
                ru.entry("maxSurge").or_insert(json!(0));
            }
        }
    }
    if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod::default_spec(ps);
    }
}

/// Sets the template generation annotation: 1 on create, +1 when an update changes the template.
pub fn template_generation(ds: &mut Value, old: Option<&Value>) {
    let read = |v: &Value| {
        crate::meta::path(v, "metadata.annotations")
            .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok())
    };
    let generation = match old {
        None => 1,
        Some(old) => {
            let prev = read(old).unwrap_or(1);
            if crate::meta::path(old, "spec.template") != crate::meta::path(ds, "spec.template") {
                prev.saturating_add(1)
            } else {
                prev
            }
        }
    };
    let m = crate::meta::metadata_mut(ds);
    let annotations = m.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[TEMPLATE_GENERATION_ANNOTATION] = json!(generation.to_string());
}

pub fn validate(ds: &Value, errs: &mut Vec<FieldError>) {
    let spec = ds.get("spec").cloned().unwrap_or(json!({}));
    deployment::selector_and_template(&spec, "daemonset", errs);
    int_in(
        spec.get("minReadySeconds"),
        "spec.minReadySeconds",
        0,
        INT32_MAX,
        errs,
    );
    int_in(
        spec.get("revisionHistoryLimit"),
        "spec.revisionHistoryLimit",
        0,
        INT32_MAX,
        errs,
    );
    match crate::meta::path_str(&spec, "updateStrategy.type") {
        Some("RollingUpdate") => {
            let ru = crate::meta::path(&spec, "updateStrategy.rollingUpdate");
            let unavailable_zero = int_or_percent(
                ru.and_then(|r| r.get("maxUnavailable")),
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                errs,
            );
            let surge_zero = int_or_percent(
                ru.and_then(|r| r.get("maxSurge")),
                "spec.updateStrategy.rollingUpdate.maxSurge",
                errs,
            );
            let unavailable_zero = unavailable_zero.map(IntOrPercent::is_zero);
            let surge_zero = surge_zero.map(IntOrPercent::is_zero);
            if unavailable_zero == Some(true) && surge_zero != Some(false) {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    "0",
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        Some("OnDelete") | None => {}
        Some(t) => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            quote(t),
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(strategy: Value) -> Value {
        let mut d = json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        defaults(&mut d);
        d
    }

    fn fields(d: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate(d, &mut errs);
        errs.into_iter().map(|e| e.field).collect::<Vec<_>>()
    }

    #[test]
    fn defaults_and_strategy_rules() {
        let d = ds(json!({}));
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert!(fields(&d).is_empty());
        let bad = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}}));
        assert_eq!(
            fields(&bad),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
        );
        let zero = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}));
        assert_eq!(
            fields(&zero),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
        );
        let other = ds(json!({"type": "Recreate"}));
        assert_eq!(fields(&other), ["spec.updateStrategy.type"]);
        assert!(fields(&ds(json!({"type": "OnDelete"}))).is_empty());
    }

    #[test]
    fn template_generation_moves_with_the_template_only() {
        let mut d = ds(json!({}));
        template_generation(&mut d, None);
        let gen = |d: &Value| d["metadata"]["annotations"][TEMPLATE_GENERATION_ANNOTATION].clone();
        assert_eq!(gen(&d), "1");
        let old = d.clone();
        let mut same = d.clone();
        same["spec"]["minReadySeconds"] = json!(5);
        template_generation(&mut same, Some(&old));
        assert_eq!(gen(&same), "1");
        let mut changed = d.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j");
        template_generation(&mut changed, Some(&old));
        assert_eq!(gen(&changed), "2");
    }
}
