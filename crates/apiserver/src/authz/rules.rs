//! RBAC policy rules and how a request matches them, as kube-apiserver's RBAC authorizer does
//! (`RuleAllows`): verbs, API groups, `resource/subresource` (and `*/subresource`), resourceNames
//! and non-resource URLs (exact or `prefix*`), with `*` matching everything.

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::attributes::Attributes;

/// One rule, owned and flattened from `PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    pub fn from_policy(p: &PolicyRule) -> Rule {
        Rule {
            verbs: p.verbs.clone(),
            api_groups: p.api_groups.clone().unwrap_or_default(),
            resources: p.resources.clone().unwrap_or_default(),
            resource_names: p.resource_names.clone().unwrap_or_default(),
            non_resource_urls: p.non_resource_urls.clone().unwrap_or_default(),
        }
    }

    pub fn to_policy(&self) -> PolicyRule {
        let opt = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        PolicyRule {
            verbs: self.verbs.clone(),
            api_groups: opt(&self.api_groups),
            resources: opt(&self.resources),
            resource_names: opt(&self.resource_names),
            non_resource_urls: opt(&self.non_resource_urls),
        }
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if a.resource_request {
            has(&self.api_groups, &a.api_group)
                && resource_matches(&self.resources, &a.resource, &a.subresource)
                && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
        } else {
            url_matches(&self.non_resource_urls, &a.path)
        }
    }

    /// Whether this rule grants everything `atom` (a rule with one verb, one group, one
    /// resource and at most one name, or one verb and one URL) grants: kube-apiserver's
    /// escalation check (`Covers`) compares rules this way, so a `*` in `atom` is only covered
    /// by a `*` here.
    pub fn covers(&self, atom: &Rule) -> bool {
        let all = |mine: &[String], theirs: &[String]| {
            theirs
                .iter()
                .all(|t| mine.iter().any(|m| m == "*" || m == t))
        };
        if !all(&self.verbs, &atom.verbs) {
            return false;
        }
        if !atom.non_resource_urls.is_empty() {
            return atom.non_resource_urls.iter().all(|u| {
                self.non_resource_urls.iter().any(|m| {
                    m == "*" || m == u || m.strip_suffix('*').is_some_and(|p| u.starts_with(p))
                })
            });
        }
        if !all(&self.api_groups, &atom.api_groups) {
            return false;
        }
        let resources_ok = atom.resources.iter().all(|r| {
            self.resources.iter().any(|m| {
                m == "*"
                    || m == r
                    || (m.starts_with("*/")
                        && r.split_once('/').is_some_and(|(_, sub)| &m[2..] == sub))
            })
        });
        if !resources_ok {
            return false;
        }
        self.resource_names.is_empty()
            || (!atom.resource_names.is_empty() && all(&self.resource_names, &atom.resource_names))
    }

    /// Splits a rule into atoms (see [`Rule::covers`]).
    pub fn atoms(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(Rule {
                    verbs: vec![verb.clone()],
                    non_resource_urls: vec![url.clone()],
                    ..Rule::default()
                });
            }
            for group in &self.api_groups {
                for res in &self.resources {
                    let base = Rule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![res.clone()],
                        ..Rule::default()
                    };
                    if self.resource_names.is_empty() {
                        out.push(base);
                    } else {
                        for n in &self.resource_names {
                            out.push(Rule {
                                resource_names: vec![n.clone()],
                                ..base.clone()
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// The rule as kube-apiserver prints it in escalation errors:
    /// `{APIGroups:[""], Resources:["pods"], Verbs:["create"]}`.
    pub fn compact(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:[{}]", list(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:[{}]", list(&self.resources)));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("ResourceNames:[{}]", list(&self.resource_names)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!(
                "NonResourceURLs:[{}]",
                list(&self.non_resource_urls)
            ));
        }
        parts.push(format!("Verbs:[{}]", list(&self.verbs)));
        format!("{{{}}}", parts.join(", "))
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

fn resource_matches(list: &[String], resource: &str, sub: &str) -> bool {
    list.iter().any(|r| {
        if r == "*" {
            return true;
        }
        if sub.is_empty() {
            return r == resource;
        }
        match r.split_once('/') {
            Some((res, s)) => s == sub && (res == resource || res == "*"),
            None => false,
        }
    })
}

fn url_matches(list: &[String], path: &str) -> bool {
    list.iter()
        .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p)))
}

/// The rules in `owner` fail to cover: the permissions a role would grant that its author lacks.
pub fn uncovered(owner: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    wanted
        .iter()
        .flat_map(Rule::atoms)
        .filter(|atom| !owner.iter().any(|o| o.covers(atom)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], res: &[&str], names: &[&str]) -> Rule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Rule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(res),
            resource_names: s(names),
            non_resource_urls: vec![],
        }
    }

    fn req(verb: &str, group: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "default".into(),
            resource_request: true,
            ..Attributes::default()
        }
    }

    #[test]
    fn verbs_groups_and_resources_match_exactly_or_by_star() {
        let r = rule(&["get", "list"], &[""], &["pods"], &[]);
        assert!(r.allows(&req("get", "", "pods", "", "a")));
        assert!(r.allows(&req("list", "", "pods", "", "")));
        assert!(!r.allows(&req("delete", "", "pods", "", "a")));
        assert!(!r.allows(&req("get", "apps", "pods", "", "a")));
        assert!(!r.allows(&req("get", "", "services", "", "a")));
        let star = rule(&["*"], &["*"], &["*"], &[]);
        assert!(star.allows(&req("deletecollection", "apps", "deployments", "scale", "")));
    }

    #[test]
    fn subresources_need_their_own_grant_or_star_slash() {
        let pods = rule(&["get"], &[""], &["pods"], &[]);
        assert!(!pods.allows(&req("get", "", "pods", "log", "a")));
        let log = rule(&["get"], &[""], &["pods/log"], &[]);
        assert!(log.allows(&req("get", "", "pods", "log", "a")));
        assert!(!log.allows(&req("get", "", "pods", "", "a")));
        assert!(!log.allows(&req("get", "", "pods", "exec", "a")));
        let any_status = rule(&["patch"], &[""], &["*/status"], &[]);
        assert!(any_status.allows(&req("patch", "", "nodes", "status", "n1")));
        assert!(!any_status.allows(&req("patch", "", "nodes", "", "n1")));
    }

    #[test]
    fn resource_names_restrict_to_named_objects() {
        let r = rule(&["get", "list"], &[""], &["configmaps"], &["cfg"]);
        assert!(r.allows(&req("get", "", "configmaps", "", "cfg")));
        assert!(!r.allows(&req("get", "", "configmaps", "", "other")));
        // A list names no object, so a rule with resourceNames does not allow it.
        assert!(!r.allows(&req("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let r = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/apis/*".into()],
            ..Rule::default()
        };
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Attributes::default()
        };
        assert!(r.allows(&path("/healthz")));
        assert!(r.allows(&path("/apis/apps/v1")));
        assert!(!r.allows(&path("/healthz/ping")));
        assert!(!r.allows(&path("/version")));
        // A non-resource rule never allows a resource request.
        assert!(!r.allows(&req("get", "", "pods", "", "")));
    }

    #[test]
    fn covers_compares_atoms_and_star_only_covers_star() {
        let owner = vec![rule(&["get", "list"], &[""], &["pods", "services"], &[])];
        assert!(uncovered(&owner, &[rule(&["get"], &[""], &["pods"], &[])]).is_empty());
        assert!(uncovered(&owner, &[rule(&["get"], &[""], &["pods"], &["a"])]).is_empty());
        let missing = uncovered(&owner, &[rule(&["get", "delete"], &[""], &["pods"], &[])]);
        assert_eq!(missing, vec![rule(&["delete"], &[""], &["pods"], &[])]);
        assert_eq!(
            uncovered(&owner, &[rule(&["*"], &[""], &["pods"], &[])]).len(),
            1
        );
        let named = vec![rule(&["get"], &[""], &["pods"], &["a"])];
        assert_eq!(
            uncovered(&named, &[rule(&["get"], &[""], &["pods"], &[])]).len(),
            1
        );
        let admin = vec![rule(&["*"], &["*"], &["*"], &[])];
        assert!(uncovered(
            &admin,
            &[rule(&["*"], &["apps"], &["deployments/scale"], &[])]
        )
        .is_empty());
        assert_eq!(
            rule(&["create"], &[""], &["pods"], &[]).compact(),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["create"]}"#
        );
    }
}
