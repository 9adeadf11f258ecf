//! `get KIND [NAME] [-n NS | -A] [-o wide|yaml|json|name]`.

use crate::api::{self, dynamic_json, is_not_found, not_found, DEFAULT_NAMESPACE};
use crate::error::KubectlError;
use crate::kind::ResourceKind;
use crate::table::{render_table, TableOptions};
use kube::api::{DynamicObject, ListParams};
use kube::Client;
use serde::Serialize;
use std::str::FromStr;
use std::time::SystemTime;

/// Which namespaces to look in (ignored for cluster-scoped kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    AllNamespaces,
}

impl Scope {
    /// `-n NS` / `-A` / neither (`default`).
    pub fn from_flags(namespace: Option<&str>, all_namespaces: bool) -> Scope {
        match (all_namespaces, namespace) {
            (true, _) => Scope::AllNamespaces,
            (false, Some(ns)) => Scope::Namespace(ns.to_string()),
            (false, None) => Scope::Namespace(DEFAULT_NAMESPACE.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

impl FromStr for OutputFormat {
    type Err = KubectlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wide" => Ok(OutputFormat::Wide),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            "name" => Ok(OutputFormat::Name),
            other => Err(KubectlError::Failed(format!(
                "unable to match a printer suitable for the output format {other:?}, allowed formats are: json,name,wide,yaml"
            ))),
        }
    }
}

/// Splits `pod/web` into kind and name; `pods` into kind only.
pub fn parse_kind_name(arg: &str) -> Result<(ResourceKind, Option<String>), KubectlError> {
    let (kind, name) = match arg.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
        _ => (arg, None),
    };
    let kind = ResourceKind::from_cli_name(kind)
        .ok_or_else(|| KubectlError::UnknownResourceType(kind.to_string()))?;
    Ok((kind, name))
}

/// Gets one object (`name`) or lists them, rendered as `output`. `kind` is any kubectl name
/// or alias (`po`, `svc`, `deploy`, `pod/web`, ...). An empty table is kubectl's
/// `No resources found in NS namespace.` line.
pub async fn get(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    scope: &Scope,
    output: OutputFormat,
) -> Result<String, KubectlError> {
    let (kind, name_in_kind) = parse_kind_name(kind)?;
    let name = name.map(str::to_string).or(name_in_kind);
    let namespace = match scope {
        Scope::Namespace(ns) => Some(ns.as_str()),
        Scope::AllNamespaces if name.is_some() && kind.namespaced() => Some(DEFAULT_NAMESPACE),
        Scope::AllNamespaces => None,
    };
    let api = api::api(client, kind, namespace);
    let objects: Vec<DynamicObject> = match &name {
        Some(name) => match api.get(name).await {
            Ok(o) => vec![o],
            Err(e) if is_not_found(&e) => return Err(not_found(kind, name, namespace)),
            Err(error) => {
                return Err(KubectlError::Api {
                    what: format!("cannot get {}/{name}", kind.qualified_singular()),
                    error,
                })
            }
        },
        None => {
            let mut items = api
                .list(&ListParams::default())
                .await
                .map_err(|error| KubectlError::Api {
                    what: format!("cannot list {}", kind.qualified_plural()),
                    error,
                })?
                .items;
            items.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            items
        }
    };
    render(
        kind,
        &objects,
        name.is_some(),
        scope,
        output,
        SystemTime::now(),
    )
}

/// Renders objects of `kind` from the server; `single` prints one object rather than a List.
pub fn render(
    kind: ResourceKind,
    objects: &[DynamicObject],
    single: bool,
    scope: &Scope,
    output: OutputFormat,
    now: SystemTime,
) -> Result<String, KubectlError> {
    match output {
        OutputFormat::Table | OutputFormat::Wide => {
            if objects.is_empty() {
                return Ok(match (scope, kind.namespaced()) {
                    (Scope::Namespace(ns), true) => {
                        format!("No resources found in {ns} namespace.\n")
                    }
                    _ => "No resources found\n".to_string(),
                });
            }
            let typed = objects
                .iter()
                .map(|o| api::from_dynamic(kind, o))
                .collect::<Result<Vec<_>, _>>()?;
            let opts = TableOptions {
                wide: output == OutputFormat::Wide,
                all_namespaces: *scope == Scope::AllNamespaces,
                now,
            };
            Ok(render_table(kind, &typed, &opts))
        }
        OutputFormat::Name => Ok(objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}\n",
                    kind.qualified_singular(),
                    o.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect()),
        OutputFormat::Yaml | OutputFormat::Json => {
            let mut items: Vec<serde_json::Value> = objects
                .iter()
                .map(|o| clean(dynamic_json(kind, o)))
                .collect();
            let document = if single && items.len() == 1 {
                items.remove(0)
            } else {
                sorted(serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": items,
                    "metadata": {"resourceVersion": ""},
                }))
            };
            if output == OutputFormat::Yaml {
                serde_norway::to_string(&document)
                    .map_err(|e| KubectlError::Failed(format!("cannot render YAML: {e}")))
            } else {
                // kubectl indents JSON by four spaces.
                let mut buf = Vec::new();
                let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
                document
                    .serialize(&mut ser)
                    .map_err(|error| KubectlError::Decode {
                        what: "output".into(),
                        error,
                    })?;
                buf.push(b'\n');
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
        }
    }
}

/// kubectl drops managedFields from its output; keys are sorted as kubectl prints them.
fn clean(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    sorted(value)
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
                         "managedFields": [{"manager": "x"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    fn scope() -> Scope {
        Scope::Namespace("default".into())
    }

    #[test]
    fn yaml_of_one_object_without_managed_fields() {
        let out = render(
            ResourceKind::Pod,
            &[pod("web")],
            true,
            &scope(),
            OutputFormat::Yaml,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(
            out,
            "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  resourceVersion: '7'
spec:
  containers:
  - image: i
    name: c
"
        );
    }

    #[test]
    fn json_list_like_kubectl() {
        let out = render(
            ResourceKind::Pod,
            &[pod("a")],
            false,
            &scope(),
            OutputFormat::Json,
            SystemTime::now(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"][0]["kind"], "Pod");
        assert_eq!(v["items"][0]["apiVersion"], "v1");
        assert!(v["items"][0]["metadata"].get("managedFields").is_none());
        assert!(
            out.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"items\": ["),
            "{out}"
        );
    }

    #[test]
    fn names_and_empty_tables() {
        let out = render(
            ResourceKind::Deployment,
            &[pod("a")],
            false,
            &scope(),
            OutputFormat::Name,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(out, "deployment.apps/a\n");
        let out = render(
            ResourceKind::Pod,
            &[],
            false,
            &scope(),
            OutputFormat::Table,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(out, "No resources found in default namespace.\n");
        let out = render(
            ResourceKind::Node,
            &[],
            false,
            &scope(),
            OutputFormat::Wide,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(out, "No resources found\n");
    }

    #[test]
    fn kind_name_arguments() {
        assert_eq!(
            parse_kind_name("po/web").unwrap(),
            (ResourceKind::Pod, Some("web".into()))
        );
        assert_eq!(
            parse_kind_name("svc").unwrap(),
            (ResourceKind::Service, None)
        );
        let e = parse_kind_name("configmaps").unwrap_err().to_string();
        assert!(e.contains("\"configmaps\"") && e.contains("netpol"), "{e}");
        assert!("yml".parse::<OutputFormat>().is_err());
        assert_eq!(
            Scope::from_flags(None, false),
            Scope::Namespace("default".into())
        );
        assert_eq!(Scope::from_flags(Some("x"), true), Scope::AllNamespaces);
    }
}
