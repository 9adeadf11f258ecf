//! Who made a request: the identity authentication establishes and authorization and admission
//! read (kube-apiserver's `user.Info`). Authentication inserts it into each request's extensions;
//! a request without one is anonymous.

use std::collections::BTreeMap;

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// `sarasa-admin`, `system:serviceaccount:<ns>:<name>`, `system:anonymous`.
    pub name: String,
    pub uid: String,
    /// `system:authenticated`, `system:masters`, `system:serviceaccounts:<ns>`...
    pub groups: Vec<String>,
    /// Extra attributes (`authentication.kubernetes.io/pod-name`...).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub const ANONYMOUS: &'static str = "system:anonymous";
    pub const MASTERS: &'static str = "system:masters";

    /// The identity of a request without credentials.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: Self::ANONYMOUS.into(),
            groups: vec!["system:unauthenticated".into()],
            ..UserInfo::default()
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}
