//! The RBAC index: every binding resolved to the rules of the role it names, keyed by subject
//! (user or group) and scope, so authorizing a request is a few hash lookups instead of a scan
//! of the stored roles. Built from the store and rebuilt whenever an RBAC object changes.
//! Aggregated ClusterRoles (`aggregationRule`) get the rules of the ClusterRoles their selectors
//! pick, transitively, as kube-controller-manager's aggregation controller writes them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::rules::Rule;
use crate::resources::{CLUSTERROLEBINDINGS, CLUSTERROLES, ROLEBINDINGS, ROLES};
use crate::store::Inner;
use crate::user::UserInfo;

type Rules = Arc<Vec<Rule>>;

/// Who a binding names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SubjectKey {
    User(String),
    Group(String),
}

/// A snapshot of the stored RBAC policy, resolved.
#[derive(Debug, Default)]
pub struct Index {
    /// The store's resourceVersion this index reflects.
    pub rv: u64,
    /// Effective rules of every ClusterRole (aggregation applied).
    cluster_roles: HashMap<String, Rules>,
    /// Rules of every Role, by (namespace, name).
    roles: HashMap<(String, String), Rules>,
    /// Rules granted cluster-wide to a subject (from ClusterRoleBindings).
    cluster: HashMap<SubjectKey, Vec<Rules>>,
    /// Rules granted in one namespace to a subject (from RoleBindings).
    namespaced: HashMap<(String, SubjectKey), Vec<Rules>>,
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    match serde_json::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("skipping an undecodable RBAC object: {e}");
            None
        }
    }
}

fn rules_of(policy: Option<&Vec<k8s_openapi::api::rbac::v1::PolicyRule>>) -> Vec<Rule> {
    policy
        .map(|p| p.iter().map(Rule::from_policy).collect())
        .unwrap_or_default()
}

/// Whether `labels` satisfy a label selector (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Effective rules of the ClusterRoles, aggregation resolved (a cycle contributes nothing twice).
fn resolve_cluster_roles(roles: &[ClusterRole]) -> HashMap<String, Rules> {
    fn effective(i: usize, roles: &[ClusterRole], seen: &mut HashSet<usize>, out: &mut Vec<Rule>) {
        if !seen.insert(i) {
            return;
        }
        let r = &roles[i];
        match &r.aggregation_rule {
            Some(agg) => {
                let selectors = agg.cluster_role_selectors.as_deref().unwrap_or_default();
                for (j, other) in roles.iter().enumerate() {
                    let labels = other.metadata.labels.clone().unwrap_or_default();
                    if j != i && selectors.iter().any(|s| selector_matches(s, &labels)) {
                        effective(j, roles, seen, out);
                    }
                }
            }
            None => {
                for rule in rules_of(r.rules.as_ref()) {
                    if !out.contains(&rule) {
                        out.push(rule);
                    }
                }
            }
        }
    }
    let mut map = HashMap::new();
    for (i, r) in roles.iter().enumerate() {
        let mut out = Vec::new();
        effective(i, roles, &mut HashSet::new(), &mut out);
        map.insert(r.metadata.name.clone().unwrap_or_default(), Arc::new(out));
    }
    map
}

/// The subject key of a binding's subject; ServiceAccounts are users named
/// `system:serviceaccount:<ns>:<name>` (`ns` defaults to the binding's namespace).
fn subject_key(s: &Subject, binding_ns: &str) -> Option<SubjectKey> {
    match s.kind.as_str() {
        "User" => Some(SubjectKey::User(s.name.clone())),
        "Group" => Some(SubjectKey::Group(s.name.clone())),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            Some(SubjectKey::User(format!(
                "system:serviceaccount:{ns}:{}",
                s.name
            )))
        }
        _ => None,
    }
}

impl Index {
    /// Builds the index from the stored RBAC objects.
    pub fn build(inner: &Inner) -> Index {
        let cluster_roles: Vec<ClusterRole> = inner
            .iter(CLUSTERROLES, None)
            .filter_map(|o| decode(o))
            .collect();
        let mut ix = Index {
            rv: inner.rv,
            cluster_roles: resolve_cluster_roles(&cluster_roles),
            ..Index::default()
        };
        for r in inner.iter(ROLES, None).filter_map(|o| decode::<Role>(o)) {
            let key = (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            );
            ix.roles.insert(key, Arc::new(rules_of(r.rules.as_ref())));
        }
        for b in inner
            .iter(CLUSTERROLEBINDINGS, None)
            .filter_map(|o| decode::<ClusterRoleBinding>(o))
        {
            if b.role_ref.kind != "ClusterRole" {
                continue;
            }
            let Some(rules) = ix.cluster_roles.get(&b.role_ref.name).cloned() else {
                continue;
            };
            for s in b.subjects.iter().flatten() {
                if let Some(k) = subject_key(s, "") {
                    ix.cluster.entry(k).or_default().push(rules.clone());
                }
            }
        }
        for b in inner
            .iter(ROLEBINDINGS, None)
            .filter_map(|o| decode::<RoleBinding>(o))
        {
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let rules = match b.role_ref.kind.as_str() {
                "ClusterRole" => ix.cluster_roles.get(&b.role_ref.name).cloned(),
                "Role" => ix
                    .roles
                    .get(&(ns.clone(), b.role_ref.name.clone()))
                    .cloned(),
                _ => None,
            };
            let Some(rules) = rules else {
                continue;
            };
            for s in b.subjects.iter().flatten() {
                if let Some(k) = subject_key(s, &ns) {
                    ix.namespaced
                        .entry((ns.clone(), k))
                        .or_default()
                        .push(rules.clone());
                }
            }
        }
        ix
    }

    /// Calls `visit` with each rule set that applies to `user` in `namespace` ("" = cluster
    /// scope: only ClusterRoleBindings), until it returns true. Returns whether one did.
    pub fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&[Rule]) -> bool,
    ) -> bool {
        let user_key = SubjectKey::User(user.name.clone());
        let groups = user.groups.iter().map(|g| SubjectKey::Group(g.clone()));
        let keys: Vec<SubjectKey> = std::iter::once(user_key).chain(groups).collect();
        for k in &keys {
            for rules in self.cluster.get(k).into_iter().flatten() {
                if visit(rules) {
                    return true;
                }
            }
        }
        if namespace.is_empty() {
            return false;
        }
        let mut probe = (namespace.to_string(), SubjectKey::User(String::new()));
        for k in keys {
            probe.1 = k;
            for rules in self.namespaced.get(&probe).into_iter().flatten() {
                if visit(rules) {
                    return true;
                }
            }
        }
        false
    }

    /// Every rule that applies to `user` in `namespace`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        self.visit(user, namespace, |rules| {
            for r in rules {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
            false
        });
        out
    }

    /// The effective rules of the role a binding names (`Role` in `namespace`, or ClusterRole).
    pub fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Rules> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).cloned(),
            "Role" => self
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .cloned(),
            _ => None,
        }
    }
}
