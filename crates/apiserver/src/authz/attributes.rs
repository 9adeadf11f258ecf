//! Request attributes as kube-apiserver's `RequestInfo` derives them from method and path: the
//! verb (get/list/watch/create/update/patch/delete/deletecollection, or the lower-cased method
//! for non-resource paths), API group, namespace, resource, subresource and name. These are what
//! rules are matched against.

use axum::http::{Method, Uri};

use crate::user::UserInfo;

/// What a request asks to do, and who asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    /// A request for an API resource (`/api/v1/...`, `/apis/<g>/<v>/...`) rather than a
    /// non-resource path (`/healthz`, `/version`, discovery).
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The request path (what non-resource rules match).
    pub path: String,
}

/// Subresources that connect to a pod and are authorized as `create` even when opened with a
/// GET (the WebSocket upgrade kubectl sends), as kube-apiserver does since 1.30.
const CONNECT_SUBRESOURCES: &[&str] = &["exec", "attach", "portforward"];

impl Attributes {
    /// Derives the attributes of a request.
    pub fn from_request(user: UserInfo, method: &Method, uri: &Uri) -> Attributes {
        let path = uri.path().to_string();
        let mut a = Attributes {
            user,
            path: path.clone(),
            ..Attributes::default()
        };
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", v, rest @ ..] if !rest.is_empty() => {
                a.api_version = v.to_string();
                rest
            }
            ["apis", g, v, rest @ ..] if !rest.is_empty() => {
                a.api_group = g.to_string();
                a.api_version = v.to_string();
                rest
            }
            _ => {
                a.verb = method.as_str().to_ascii_lowercase();
                a.api_group.clear();
                return a;
            }
        };
        a.resource_request = true;
        let mut rest = rest;
        // The deprecated `/watch/` path prefix.
        let mut watch_path = false;
        if rest.first() == Some(&"watch") {
            watch_path = true;
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            // `namespaces/<ns>/status` and `/finalize` are subresources of the Namespace.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        a.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
        a.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        let query = query_pairs(uri);
        let watch_param = query
            .iter()
            .any(|(k, v)| k == "watch" && matches!(v.as_str(), "1" | "true" | "True"));
        a.verb = match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if a.verb.is_empty() {
            a.verb = method.as_str().to_ascii_lowercase();
        }
        if watch_path {
            a.verb = "watch".into();
        }
        if a.verb == "get" && a.name.is_empty() {
            a.verb = if watch_param { "watch" } else { "list" }.into();
        }
        if a.verb == "get" && CONNECT_SUBRESOURCES.contains(&a.subresource.as_str()) {
            a.verb = "create".into();
        }
        if a.verb == "delete" && a.name.is_empty() {
            a.verb = "deletecollection".into();
        }
        // A list or watch of one object by field selector names it (for resourceNames rules).
        if matches!(a.verb.as_str(), "list" | "watch") {
            if let Some((_, sel)) = query.iter().find(|(k, _)| k == "fieldSelector") {
                for term in sel.split(',') {
                    let name = term
                        .strip_prefix("metadata.name==")
                        .or_else(|| term.strip_prefix("metadata.name="));
                    if let Some(n) = name {
                        a.name = n.to_string();
                    }
                }
            }
        }
        a
    }

    /// `pods` or `pods/log`.
    pub fn resource_and_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// kube-apiserver's words for a refusal (the `Status` message after `<resource> is forbidden: `).
    pub fn forbidden_reason(&self) -> String {
        let user = &self.user.name;
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let res = self.resource_and_sub();
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {res:?} in API group {:?} at the cluster scope",
                self.verb, self.api_group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {res:?} in API group {:?} in the namespace {:?}",
                self.verb, self.api_group, self.namespace
            )
        }
    }
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, uri: &str) -> Attributes {
        let uri: Uri = uri.parse().expect("uri");
        Attributes::from_request(UserInfo::anonymous(), &method, &uri)
    }

    fn tuple(a: &Attributes) -> (&str, &str, &str, &str, &str, &str) {
        (
            &a.verb,
            &a.api_group,
            &a.namespace,
            &a.resource,
            &a.subresource,
            &a.name,
        )
    }

    #[test]
    fn verbs_follow_method_and_path() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                ("list", "", "default", "pods", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/pods?watch=true",
                ("watch", "", "", "pods", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/pods?watch=1&resourceVersion=3",
                ("watch", "", "", "pods", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/a/pods",
                ("watch", "", "a", "pods", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/p",
                ("get", "", "a", "pods", "", "p"),
            ),
            (
                Method::HEAD,
                "/api/v1/namespaces/a/pods/p",
                ("get", "", "a", "pods", "", "p"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/pods",
                ("create", "", "a", "pods", "", ""),
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                ("update", "apps", "a", "deployments", "scale", "d"),
            ),
            (
                Method::PATCH,
                "/api/v1/nodes/n1/status",
                ("patch", "", "", "nodes", "status", "n1"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/services/s",
                ("delete", "", "a", "services", "", "s"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/services",
                ("deletecollection", "", "a", "services", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/p/log",
                ("get", "", "a", "pods", "log", "p"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/p/exec?command=ls",
                ("create", "", "a", "pods", "exec", "p"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/serviceaccounts/sa/token",
                ("create", "", "a", "serviceaccounts", "token", "sa"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a",
                ("get", "", "a", "namespaces", "", "a"),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/a/finalize",
                ("update", "", "a", "namespaces", "finalize", "a"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                ("list", "", "", "namespaces", "", ""),
            ),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases?fieldSelector=metadata.name%3Dl1",
                ("list", "coordination.k8s.io", "x", "leases", "", "l1"),
            ),
        ];
        for (m, uri, want) in cases {
            let a = attrs(m.clone(), uri);
            assert!(a.resource_request, "{m} {uri}");
            assert_eq!(tuple(&a), want, "{m} {uri}");
        }
    }

    #[test]
    fn other_paths_are_non_resource_requests() {
        for (m, uri, verb) in [
            (Method::GET, "/healthz", "get"),
            (Method::GET, "/api", "get"),
            (Method::GET, "/api/v1", "get"),
            (Method::GET, "/apis/apps/v1", "get"),
            (Method::POST, "/version", "post"),
            (Method::GET, "/openapi/v3", "get"),
        ] {
            let a = attrs(m, uri);
            assert!(!a.resource_request, "{uri}");
            assert_eq!(a.verb, verb, "{uri}");
            assert_eq!(a.path, uri);
        }
    }

    #[test]
    fn forbidden_reason_has_kube_apiservers_words() {
        let mut a = attrs(Method::POST, "/api/v1/namespaces/default/pods");
        a.user.name = "system:serviceaccount:ns:sa".into();
        assert_eq!(
            a.forbidden_reason(),
            r#"User "system:serviceaccount:ns:sa" cannot create resource "pods" in API group "" in the namespace "default""#
        );
        let a = attrs(Method::GET, "/api/v1/nodes");
        assert_eq!(
            a.forbidden_reason(),
            r#"User "system:anonymous" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        let a = attrs(Method::GET, "/metrics");
        assert_eq!(
            a.forbidden_reason(),
            r#"User "system:anonymous" cannot get path "/metrics""#
        );
    }
}
