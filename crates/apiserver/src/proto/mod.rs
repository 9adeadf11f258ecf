//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the
//! JSON objects the rest of the server works on. kubectl's typed clients (`create namespace`,
//! `create deployment`, ...) send this encoding and no JSON fallback exists, so the server must
//! read it. The message layouts come from Kubernetes' generated.proto files, reduced to a field
//! table (fields.txt, derived by scripts/gen-proto-fields.py); the few messages whose JSON form
//! differs from their protobuf form (Time, IntOrString, Quantity, ...) are handled in `decode`.

mod decode;
mod schema;

pub use decode::decode_object;

/// The content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    Magic,
    #[error("malformed protobuf at byte {0}")]
    Malformed(usize),
    #[error("no protobuf schema for {0}")]
    UnknownKind(String),
    #[error("field {field}: {reason}")]
    Field { field: String, reason: String },
}

/// The protobuf message of an `apiVersion` and `kind` (`k8s.io.api.apps.v1.Deployment`).
pub fn message_of(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let pkg = match group {
        "" => "k8s.io.api.core",
        "apps" => "k8s.io.api.apps",
        "discovery.k8s.io" => "k8s.io.api.discovery",
        "networking.k8s.io" => "k8s.io.api.networking",
        "coordination.k8s.io" => "k8s.io.api.coordination",
        "events.k8s.io" => "k8s.io.api.events",
        "autoscaling" => "k8s.io.api.autoscaling",
        "rbac.authorization.k8s.io" => "k8s.io.api.rbac",
        "authorization.k8s.io" => "k8s.io.api.authorization",
        "policy" => "k8s.io.api.policy",
        "authentication.k8s.io" => "k8s.io.api.authentication",
        "meta.k8s.io" => "k8s.io.apimachinery.pkg.apis.meta",
        _ => return None,
    };
    let name = format!("{pkg}.{version}.{kind}");
    schema::Schema::get().message(&name).map(|_| name)
}
