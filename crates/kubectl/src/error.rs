//! Errors of the kubectl library, each naming the file, object or field at fault.

/// A manifest that cannot be read as Kubernetes objects; the whole file is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: document {document} (line {line}{}): {message}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct ManifestError {
    pub file: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// 1-based line in the file.
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

/// Each message carries its cause, so no variant exposes `source()` (a `{:#}` chain would
/// repeat it).
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the server doesn't have a resource type {0:?}; sarasa knows {known}", known = crate::kind::ResourceKind::supported_cli_names())]
    UnknownResourceType(String),
    /// The API server refused the objects in a dry run; nothing was written.
    #[error("nothing applied, the server rejected {}:\n{}", if .0.len() == 1 { "an object".to_string() } else { format!("{} objects", .0.len()) }, .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("Error from server (NotFound): {0}")]
    NotFound(String),
    #[error("the namespace from the provided object {object:?} does not match the namespace {flag:?}; pass --namespace={object} or remove the namespace from {origin}")]
    NamespaceMismatch {
        origin: String,
        object: String,
        flag: String,
    },
    #[error("{what}: {}", crate::api::describe(.error))]
    Api { what: String, error: kube::Error },
    #[error("{0}")]
    Failed(String),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    #[error("cannot decode {what} from the server: {error}")]
    Decode {
        what: String,
        error: serde_json::Error,
    },
}

impl From<std::io::Error> for KubectlError {
    fn from(error: std::io::Error) -> Self {
        KubectlError::Output(error)
    }
}
