//! kubectl for sarasa: read manifests, apply them (validated by a server-side dry run first),
//! get objects as kubectl-style tables or YAML/JSON, delete them — through any
//! [`kube::Client`], so the same code talks to the lab's API server or a real cluster.

mod age;
mod api;
mod apply;
mod delete;
mod error;
mod get;
mod kind;
mod manifest;
mod object;
mod table;

pub use age::human_duration;
pub use api::DEFAULT_NAMESPACE;
pub use apply::{apply, Applied, ApplyAction, ApplyOptions, ApplyReport, LAST_APPLIED_ANNOTATION};
pub use delete::{delete, delete_manifests};
pub use error::{KubectlError, ManifestError};
pub use get::{get, parse_kind_name, render, OutputFormat, Scope};
pub use kind::ResourceKind;
pub use manifest::{load_manifests, parse_manifests, Manifest};
pub use object::Object;
pub use table::{render_table, TableOptions};
