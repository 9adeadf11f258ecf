//! Validation of the RBAC kinds, with kube-apiserver's field paths and words: rules need verbs
//! and API groups (or non-resource URLs, which namespaced Roles cannot have); bindings need a
//! roleRef in the RBAC group naming a Role or ClusterRole (only a ClusterRole for a
//! ClusterRoleBinding) that never changes once set, and subjects of kind User, Group or
//! ServiceAccount.

use serde_json::Value;

use crate::error::{quote, FieldError};
use crate::resources::{CLUSTERROLEBINDINGS, ROLES};
use sarasa_model::names::dns1123_subdomain;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A Role (`res == ROLES`) or ClusterRole.
pub fn role(res: usize, obj: &Value, errs: &mut Vec<FieldError>) {
    let namespaced = res == ROLES;
    let rules = obj.get("rules").and_then(Value::as_array);
    for (i, r) in rules.into_iter().flatten().enumerate() {
        let f = |s: &str| format!("rules[{i}].{s}");
        if strs(r.get("verbs")).is_empty() {
            errs.push(FieldError::required(
                f("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = strs(r.get("nonResourceURLs"));
        if !urls.is_empty() {
            let shown = format!(
                "[]string{{{}}}",
                urls.iter().map(|u| quote(u)).collect::<Vec<_>>().join(", ")
            );
            if namespaced {
                errs.push(FieldError::invalid(
                    f("nonResourceURLs"),
                    shown,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            } else if !strs(r.get("apiGroups")).is_empty() || !strs(r.get("resources")).is_empty() {
                errs.push(FieldError::invalid(
                    f("nonResourceURLs"),
                    shown,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if strs(r.get("apiGroups")).is_empty() {
            errs.push(FieldError::required(
                f("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if strs(r.get("resources")).is_empty() {
            errs.push(FieldError::required(
                f("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// The roleRef as kube-apiserver prints it in the immutability error.
fn show_ref(r: Option<&Value>) -> String {
    let s = |k: &str| {
        r.and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        quote(s("apiGroup")),
        quote(s("kind")),
        quote(s("name"))
    )
}

/// A RoleBinding or ClusterRoleBinding (`res`), with the stored one on update.
pub fn binding(res: usize, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let cluster = res == CLUSTERROLEBINDINGS;
    let rr = obj.get("roleRef");
    let get = |k: &str| {
        rr.and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    if get("apiGroup") != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            quote(get("apiGroup")),
            &[RBAC_GROUP],
        ));
    }
    let kinds: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    if !kinds.contains(&get("kind")) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            quote(get("kind")),
            kinds,
        ));
    }
    let name = get("name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else if let Some(bad) = path_segment_error(name) {
        errs.push(FieldError::invalid("roleRef.name", quote(name), bad));
    }
    if let Some(old) = old {
        if old.get("roleRef") != obj.get("roleRef") {
            errs.push(FieldError::invalid(
                "roleRef",
                show_ref(rr),
                "cannot change roleRef",
            ));
        }
    }
    let subjects = obj.get("subjects").and_then(Value::as_array);
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let f = |k: &str| format!("subjects[{i}].{k}");
        let g = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
        if g("name").is_empty() {
            errs.push(FieldError::required(f("name"), ""));
        }
        match g("kind") {
            "ServiceAccount" => {
                if !g("apiGroup").is_empty() {
                    errs.push(FieldError::not_supported(
                        f("apiGroup"),
                        quote(g("apiGroup")),
                        &[""],
                    ));
                }
                if !g("name").is_empty() {
                    for m in dns1123_subdomain(g("name")) {
                        errs.push(FieldError::invalid(f("name"), quote(g("name")), m));
                    }
                }
                if cluster && g("namespace").is_empty() {
                    errs.push(FieldError::required(f("namespace"), ""));
                }
            }
            "User" | "Group" => {
                if g("apiGroup") != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        f("apiGroup"),
                        quote(g("apiGroup")),
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                f("kind"),
                quote(other),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// kube-apiserver's rule for RBAC object names (`path.IsValidPathSegmentName`).
pub fn path_segment_error(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CLUSTERROLES, ROLEBINDINGS};
    use serde_json::json;

    fn errors(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut e = Vec::new();
        f(&mut e);
        e.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn rules_need_verbs_groups_and_resources() {
        let obj = json!({"rules": [{"resources": ["pods"]}, {"verbs": ["get"], "nonResourceURLs": ["/x"]}]});
        assert_eq!(
            errors(|e| role(ROLES, &obj, e)),
            vec![
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[1].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs",
            ]
        );
        assert!(errors(|e| role(CLUSTERROLES, &obj, e)).len() == 2);
    }

    #[test]
    fn bindings_check_role_ref_and_subjects() {
        let ok = json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}]});
        assert!(errors(|e| binding(ROLEBINDINGS, &ok, None, e)).is_empty());
        assert_eq!(
            errors(|e| binding(CLUSTERROLEBINDINGS, &ok, None, e)),
            vec![
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
            ]
        );
        let bad = json!({"roleRef": {"apiGroup": "x", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "Robot", "name": "r2"}]});
        assert_eq!(
            errors(|e| binding(ROLEBINDINGS, &bad, None, e)),
            vec![
                "roleRef.apiGroup: Unsupported value: \"x\": supported values: \"rbac.authorization.k8s.io\"",
                "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        let changed =
            json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "view"}});
        assert_eq!(
            errors(|e| binding(ROLEBINDINGS, &changed, Some(&ok), e)),
            vec!["roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"view\"}: cannot change roleRef"]
        );
    }
}
