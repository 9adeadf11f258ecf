//! Reading manifests: multi-document YAML (or JSON) files, `kind: List`, directories and stdin,
//! into typed objects. A file with any bad document is rejected whole, with the file, the
//! document number and the line/column of the problem, so nothing of it gets applied.

use crate::error::{KubectlError, ManifestError};
use crate::kind::ResourceKind;
use crate::object::Object;
use std::io::Read;
use std::path::Path;

/// One object read from a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file it came from (`-` for stdin).
    pub file: String,
    /// 1-based number of its YAML document in the file (empty documents are not counted).
    pub document: usize,
    /// 1-based line where its document starts.
    pub line: usize,
    pub object: Object,
}

impl Manifest {
    /// `file (document N)`, for messages.
    pub fn origin(&self) -> String {
        format!("{} (document {})", self.file, self.document)
    }
}

/// Parses every document of `text`; `file` names it in errors.
pub fn parse_manifests(file: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    let mut document = 0;
    for chunk in split_documents(text) {
        let Some(line) = chunk.first_content_line else {
            continue;
        };
        document += 1;
        let err = |line: usize, column: Option<usize>, message: String| ManifestError {
            file: file.to_string(),
            document,
            line,
            column,
            message,
        };
        let value: serde_norway::Value = serde_norway::from_str(&chunk.text).map_err(|e| {
            let (l, c) = position(&e).unwrap_or((line, None));
            err(l, c, yaml_message(&e))
        })?;
        let (api_version, kind) = match &value {
            serde_norway::Value::Null => continue,
            serde_norway::Value::Mapping(_) => {
                type_fields(&value).map_err(|m| err(line, None, m))?
            }
            _ => {
                return Err(err(
                    line,
                    None,
                    "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
                ))
            }
        };
        if kind == "List" {
            let items = match value.get("items") {
                Some(serde_norway::Value::Sequence(items)) => items.clone(),
                None | Some(serde_norway::Value::Null) => Vec::new(),
                Some(_) => return Err(err(line, None, "items: expected a list of objects".into())),
            };
            for (i, item) in items.into_iter().enumerate() {
                let object =
                    list_item(item).map_err(|m| err(line, None, format!("items[{i}]: {m}")))?;
                manifests.push(Manifest {
                    file: file.to_string(),
                    document,
                    line,
                    object,
                });
            }
            continue;
        }
        let resource = resolve(&api_version, &kind).map_err(|m| err(line, None, m))?;
        let object = Object::from_yaml(resource, &chunk.text).map_err(|e| {
            let (l, c) = position(&e).unwrap_or((line, None));
            err(l, c, yaml_message(&e))
        })?;
        check_unknown_fields(&value, &object).map_err(|m| err(line, None, m))?;
        check_name(&object).map_err(|m| err(line, None, m))?;
        manifests.push(Manifest {
            file: file.to_string(),
            document,
            line,
            object,
        });
    }
    Ok(manifests)
}

/// Reads manifests from a file, every `*.yaml`/`*.yml`/`*.json` of a directory (sorted), or
/// stdin for `-`. All files are parsed before returning, so any bad file rejects them all.
pub fn load_manifests(path: &str) -> Result<Vec<Manifest>, KubectlError> {
    let read_err = |path: &str, error| KubectlError::Read {
        path: path.to_string(),
        error,
    };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| read_err(path, e))?;
        return Ok(parse_manifests("-", &text)?);
    }
    let p = Path::new(path);
    let files = if p.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| read_err(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|f| {
                f.is_file()
                    && f.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![p.to_path_buf()]
    };
    let mut manifests = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).map_err(|e| read_err(&name, e))?;
        manifests.extend(parse_manifests(&name, &text)?);
    }
    Ok(manifests)
}

/// One YAML document, padded with the newlines before it so that parser positions are
/// positions in the whole file.
struct Chunk {
    text: String,
    first_content_line: Option<usize>,
}

/// Splits at `---` lines (YAML forbids them inside content at column 0).
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut first_content_line = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        let line = if is_separator {
            chunks.push(Chunk {
                text: std::mem::take(&mut current),
                first_content_line: first_content_line.take(),
            });
            current = "\n".repeat(i);
            // Keep anything after the marker (`--- # c`), at its column.
            format!("   {}", &line[3..])
        } else {
            line.to_string()
        };
        let trimmed = line.trim();
        if first_content_line.is_none()
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !trimmed.starts_with('%')
            && trimmed != "..."
        {
            first_content_line = Some(i + 1);
        }
        current.push_str(&line);
    }
    chunks.push(Chunk {
        text: current,
        first_content_line,
    });
    chunks
}

fn position(e: &serde_norway::Error) -> Option<(usize, Option<usize>)> {
    e.location().map(|l| (l.line(), Some(l.column())))
}

/// serde_norway's message without its own " at line L column C" (we say where, once).
fn yaml_message(e: &serde_norway::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) if e.location().is_some() => message[..i].to_string(),
        _ => message,
    }
}

fn type_fields(value: &serde_norway::Value) -> Result<(String, String), String> {
    let field = |name: &str| match value.get(name) {
        Some(serde_norway::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{name}: expected a string")),
        None => Err(format!("missing {name}")),
    };
    Ok((field("apiVersion")?, field("kind")?))
}

fn resolve(api_version: &str, kind: &str) -> Result<ResourceKind, String> {
    if let Some(k) = ResourceKind::from_type(api_version, kind) {
        return Ok(k);
    }
    if let Some(k) = ResourceKind::ALL.iter().find(|k| k.kind() == kind) {
        return Err(format!(
            "kind {kind} needs apiVersion {}, not {api_version:?}",
            k.api_version()
        ));
    }
    let supported: Vec<String> = ResourceKind::ALL
        .iter()
        .map(|k| format!("{} ({})", k.kind(), k.api_version()))
        .collect();
    Err(format!(
        "unknown kind {kind:?} (apiVersion {api_version:?}); supported kinds: {}",
        supported.join(", ")
    ))
}

fn list_item(item: serde_norway::Value) -> Result<Object, String> {
    if !item.is_mapping() {
        return Err("expected a Kubernetes object".into());
    }
    let (api_version, kind) = type_fields(&item)?;
    let resource = resolve(&api_version, &kind)?;
    let object = Object::from_yaml_value(resource, item.clone()).map_err(|e| e.to_string())?;
    check_unknown_fields(&item, &object)?;
    check_name(&object)?;
    Ok(object)
}

/// Like the API server's strict field validation: a field the kind does not have (a typo such
/// as `replica:`) is an error rather than silently dropped.
fn check_unknown_fields(input: &serde_norway::Value, object: &Object) -> Result<(), String> {
    // Non-string keys cannot be compared; the typed parse already accepted the document.
    let Ok(input) = serde_json::to_value(input) else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    collect_unknown(&input, &object.to_json(), "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = unknown.iter().map(|f| format!("{f:?}")).collect();
    Err(format!(
        "unknown field{} {} in {} ({})",
        if fields.len() == 1 { "" } else { "s" },
        fields.join(", "),
        object.kind().kind(),
        object.kind().api_version()
    ))
}

fn collect_unknown(
    input: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    unknown: &mut Vec<String>,
) {
    use serde_json::Value;
    match (input, typed) {
        (Value::Object(given), Value::Object(known)) => {
            for (key, value) in given {
                if value.is_null() {
                    continue;
                }
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(k) => collect_unknown(value, k, &field, unknown),
                    None => unknown.push(field),
                }
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (g, k)) in given.iter().zip(known).enumerate() {
                collect_unknown(g, k, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn check_name(object: &Object) -> Result<(), String> {
    if object.name().is_empty() {
        return Err(format!(
            "{}: metadata.name is required",
            object.kind().kind()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# leading comment
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 2
  template:
    metadata:
      labels:
        run: my-nginx
    spec:
      containers:
      - name: my-nginx
        image: nginx
        ports:
        - containerPort: 80
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: my-nginx
    namespace: shop
  spec:
    ports:
    - port: 80
      protocol: TCP
    selector:
      run: my-nginx
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata:
    name: deny
  spec:
    podSelector: {}
";

    #[test]
    fn reads_every_document_and_list_items() {
        let m = parse_manifests("app.yaml", GOOD).unwrap();
        let kinds: Vec<_> = m.iter().map(|m| m.object.kind()).collect();
        assert_eq!(
            kinds,
            [
                ResourceKind::Namespace,
                ResourceKind::Deployment,
                ResourceKind::Service,
                ResourceKind::NetworkPolicy
            ]
        );
        assert_eq!(
            m.iter().map(|m| m.document).collect::<Vec<_>>(),
            [1, 2, 3, 3]
        );
        assert_eq!(m[1].line, 8);
        assert_eq!(m[2].object.namespace(), Some("shop"));
        let Object::Deployment(d) = &m[1].object else {
            panic!("not a deployment")
        };
        assert_eq!(d.spec.replicas, Some(2));
        assert_eq!(m[1].origin(), "app.yaml (document 2)");
    }

    #[test]
    fn syntax_error_names_file_document_line_and_column() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   bad: [\n";
        let e = parse_manifests("bad.yaml", text).unwrap_err();
        assert_eq!((e.file.as_str(), e.document), ("bad.yaml", 2));
        assert_eq!(e.line, 10, "{e}");
        assert!(e.column.is_some(), "{e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("bad.yaml: document 2 (line 10, column "),
            "{shown}"
        );
    }

    #[test]
    fn unknown_kind_and_wrong_api_version_are_named() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let e = parse_manifests("x.yaml", text).unwrap_err();
        assert_eq!((e.document, e.line), (2, 6));
        assert!(e.message.contains("unknown kind \"ConfigMap\""), "{e}");
        let text = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: d\n";
        let e = parse_manifests("x.yaml", text).unwrap_err();
        assert!(e.message.contains("needs apiVersion apps/v1"), "{e}");
        let e = parse_manifests("x.yaml", "kind: Pod\nmetadata:\n  name: p\n").unwrap_err();
        assert!(e.message.contains("missing apiVersion"), "{e}");
    }

    #[test]
    fn wrong_field_types_name_the_field_and_position() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: eighty\n";
        let e = parse_manifests("svc.yaml", text).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("spec.ports[0].port"), "{e}");
    }

    #[test]
    fn bad_list_items_are_named() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n";
        let e = parse_manifests("l.yaml", text).unwrap_err();
        assert!(e.message.starts_with("items[1]: unknown kind"), "{e}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, creationTimestamp: null}\nspec:\n  replica: 2\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n      - name: c\n        image: i\n        port: 80\n";
        let e = parse_manifests("d.yaml", text).unwrap_err();
        assert_eq!(
            e.message,
            "unknown fields \"spec.replica\", \"spec.template.spec.containers[0].port\" in Deployment (apps/v1)"
        );
        assert_eq!((e.document, e.line), (1, 1));
        // Everything in GOOD is known (empty maps, lists, nulls included).
        assert!(parse_manifests("app.yaml", GOOD).is_ok());
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n  spec: {finalizers: [kubernetes]}\n  bogus: 1\n";
        let e = parse_manifests("l.yaml", text).unwrap_err();
        assert!(
            e.message.starts_with("items[0]: unknown field \"bogus\""),
            "{e}"
        );
    }

    #[test]
    fn seed_network_policy_parses() {
        let text = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata:\n  name: access-nginx\n  namespace: policy-demo\nspec:\n  podSelector:\n    matchLabels:\n      run: nginx\n  ingress:\n    - from:\n      - podSelector:\n          matchLabels:\n            run: access\n";
        let m = parse_manifests("np.yaml", text).unwrap();
        let Object::NetworkPolicy(np) = &m[0].object else {
            panic!("not a NetworkPolicy")
        };
        let ingress = np.spec.as_ref().unwrap().ingress.as_ref().unwrap();
        assert_eq!(ingress[0].from.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn loads_files_and_directories_rejecting_all_on_one_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        std::fs::write(dir.path().join("1-ns.yaml"), ns).unwrap();
        std::fs::write(
            dir.path().join("2-pod.yml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let path = dir.path().to_str().unwrap();
        let m = load_manifests(path).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].file.ends_with("1-ns.yaml") && m[1].file.ends_with("2-pod.yml"));
        std::fs::write(dir.path().join("3-bad.json"), "{\"kind\": ").unwrap();
        let e = load_manifests(path).unwrap_err().to_string();
        assert!(e.contains("3-bad.json: document 1"), "{e}");
        let e = load_manifests(&format!("{path}/missing.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing.yaml"),
            "{e}"
        );
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/my-nginx.yaml");
        let m = load_manifests(example).unwrap();
        assert_eq!(m[0].object.reference(), "deployment.apps/my-nginx");
    }

    #[test]
    fn missing_name_is_rejected() {
        let e = parse_manifests("p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap_err();
        assert!(e.message.contains("metadata.name"), "{e}");
    }

    #[test]
    fn empty_and_comment_only_documents_are_skipped() {
        let text = "---\n# nothing\n---\n\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n";
        let m = parse_manifests("e.yaml", text).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].document, m[0].line), (1, 6));
        assert!(parse_manifests("e.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn json_manifests_are_yaml_too() {
        let text = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "j"}}"#;
        assert_eq!(
            parse_manifests("n.json", text).unwrap()[0].object.name(),
            "j"
        );
    }
}
