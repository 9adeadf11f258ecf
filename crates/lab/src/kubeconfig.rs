//! The lab's kubeconfig, and its entries in the user's kubeconfig, as kind manages them: a
//! cluster, user and context all named `sarasa-<lab>` pointing at the API server's loopback
//! address over TLS (`certificate-authority-data`: the lab CA) with the admin bearer token.
//! `lab up` merges them into the file kubectl would write to (the `--kubeconfig`
//! rules: with `$KUBECONFIG`, its first existing file, else its last one; without, `~/.kube/config`),
//! replacing entries of the same name and keeping everything else and the file's mode; it sets
//! `current-context` only when none is set. `lab down` removes exactly those three entries (and
//! clears `current-context` if it named the lab). Writers hold an exclusive lock on `<file>.lock`
//! and replace the file atomically, so labs coming up and down at once do not lose entries.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::LabError;

/// The name of the lab's cluster, user and context.
pub fn context_name(lab: &str) -> String {
    format!("sarasa-{lab}")
}

/// Where and how to reach a lab's API.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// `https://127.0.0.1:PORT`.
    pub server: &'a str,
    /// The CA bundle (PEM) the server's certificate chains to.
    pub ca_pem: &'a str,
    /// The bearer token of the user.
    pub token: &'a str,
}

/// A complete kubeconfig for the lab whose API is at `ep`.
pub fn render(lab: &str, ep: &Endpoint) -> Value {
    let mut doc = empty();
    upsert(&mut doc, lab, ep);
    set(&mut doc, "current-context", Value::from(context_name(lab)));
    doc
}

fn empty() -> Value {
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Config".into());
    m.insert("preferences".into(), Value::Mapping(Mapping::new()));
    for list in ["clusters", "contexts", "users"] {
        m.insert(list.into(), Value::Sequence(Vec::new()));
    }
    m.insert("current-context".into(), "".into());
    Value::Mapping(m)
}

fn set(doc: &mut Value, key: &str, v: Value) {
    if let Value::Mapping(m) = doc {
        m.insert(key.into(), v);
    }
}

fn named(name: &str, key: &str, body: Value) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    m.insert(key.into(), body);
    Value::Mapping(m)
}

/// Replaces (or appends) the entry called `name` in the list `list`.
fn put(doc: &mut Value, list: &str, name: &str, entry: Value) {
    let Value::Mapping(m) = doc else { return };
    let seq = m
        .entry(list.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !seq.is_sequence() {
        *seq = Value::Sequence(Vec::new());
    }
    if let Value::Sequence(items) = seq {
        match items
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(e) => *e = entry,
            None => items.push(entry),
        }
    }
}

fn drop_named(doc: &mut Value, list: &str, name: &str) {
    if let Some(Value::Sequence(items)) = doc.get_mut(list) {
        items.retain(|e| e.get("name").and_then(Value::as_str) != Some(name));
    }
}

/// Adds or refreshes the lab's cluster, user and context in `doc`.
pub fn upsert(doc: &mut Value, lab: &str, ep: &Endpoint) {
    use base64::Engine;
    let name = context_name(lab);
    let mut cluster = Mapping::new();
    cluster.insert("server".into(), ep.server.into());
    cluster.insert(
        "certificate-authority-data".into(),
        base64::engine::general_purpose::STANDARD
            .encode(ep.ca_pem)
            .into(),
    );
    put(
        doc,
        "clusters",
        &name,
        named(&name, "cluster", Value::Mapping(cluster)),
    );
    let mut ctx = Mapping::new();
    ctx.insert("cluster".into(), name.clone().into());
    ctx.insert("user".into(), name.clone().into());
    put(
        doc,
        "contexts",
        &name,
        named(&name, "context", Value::Mapping(ctx)),
    );
    put(
        doc,
        "users",
        &name,
        named(&name, "user", {
            let mut user = Mapping::new();
            user.insert("token".into(), ep.token.into());
            Value::Mapping(user)
        }),
    );
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    if current.is_empty() {
        set(doc, "current-context", Value::from(name));
    }
}

/// Removes the lab's cluster, user and context from `doc`.
pub fn remove(doc: &mut Value, lab: &str) {
    let name = context_name(lab);
    for list in ["clusters", "contexts", "users"] {
        drop_named(doc, list, &name);
    }
    if doc.get("current-context").and_then(Value::as_str) == Some(name.as_str()) {
        set(doc, "current-context", "".into());
    }
}

/// The file kubectl would write to: `$KUBECONFIG`'s first existing file (its last one when none
/// exists), else `~/.kube/config`.
pub fn user_path() -> Result<PathBuf, LabError> {
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if let Some(p) = paths.iter().find(|p| p.exists()).or(paths.last()) {
            return Ok(p.clone());
        }
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| LabError::Invalid("neither KUBECONFIG nor HOME is set".into()))?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// Applies `f` to the kubeconfig at `path` (an empty one when missing) under its lock and
/// writes it back atomically with the same mode (0600 for a new file).
pub fn edit(path: &Path, f: impl FnOnce(&mut Value)) -> Result<(), LabError> {
    let dir = path
        .parent()
        .ok_or_else(|| LabError::Invalid(format!("{} has no directory", path.display())))?;
    fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let lock_path = path.with_extension("lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| LabError::io(&lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| LabError::io(&lock_path, e.into()))?;
    let (mut doc, mode) = match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)
                .map_err(|e| LabError::io(path, e))?
                .permissions()
                .mode()
                & 0o7777;
            let doc = if bytes.iter().all(u8::is_ascii_whitespace) {
                empty()
            } else {
                serde_norway::from_slice(&bytes).map_err(|e| {
                    LabError::Invalid(format!("{} is not a kubeconfig: {e}", path.display()))
                })?
            };
            (doc, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (empty(), 0o600),
        Err(e) => return Err(LabError::io(path, e)),
    };
    if !doc.is_mapping() {
        return Err(LabError::Invalid(format!(
            "{} is not a kubeconfig (not a YAML mapping)",
            path.display()
        )));
    }
    f(&mut doc);
    let text = serde_norway::to_string(&doc)
        .map_err(|e| LabError::Invalid(format!("encoding {}: {e}", path.display())))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| LabError::io(&tmp, e))?;
    out.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(&tmp, e))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| LabError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHER: &str = "apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: 'https://prod:6443'}
contexts:
- name: prod
  context: {cluster: prod, user: admin}
users:
- name: admin
  user: {token: secret}
current-context: prod
";

    fn ep(server: &str) -> Endpoint<'_> {
        Endpoint {
            server,
            ca_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            token: "tok",
        }
    }

    fn names(doc: &Value, list: &str) -> Vec<String> {
        doc[list]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn rendered_config_points_at_the_loopback_server() {
        let doc = render("demo", &ep("http://127.0.0.1:40000"));
        assert_eq!(doc["current-context"], "sarasa-demo");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:40000"
        );
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "sarasa-demo");
        assert_eq!(doc["contexts"][0]["context"]["user"], "sarasa-demo");
        assert_eq!(names(&doc, "users"), ["sarasa-demo"]);
        assert_eq!(doc["users"][0]["user"]["token"], "tok");
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(
                doc["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert!(String::from_utf8(ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn merge_keeps_other_entries_mode_and_current_context_then_remove_restores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, OTHER).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        edit(&path, |d| upsert(d, "a", &ep("http://127.0.0.1:1"))).unwrap();
        // Refreshing replaces, never duplicates.
        edit(&path, |d| upsert(d, "a", &ep("http://127.0.0.1:2"))).unwrap();
        let doc: Value = serde_norway::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(names(&doc, "clusters"), ["prod", "sarasa-a"]);
        assert_eq!(names(&doc, "users"), ["admin", "sarasa-a"]);
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "http://127.0.0.1:2"
        );
        assert_eq!(doc["current-context"], "prod");
        assert_eq!(doc["users"][0]["user"]["token"], "secret");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        edit(&path, |d| remove(d, "a")).unwrap();
        let doc: Value = serde_norway::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let orig: Value = serde_norway::from_str(OTHER).unwrap();
        for list in ["clusters", "contexts", "users"] {
            assert_eq!(doc[list], orig[list], "{list}");
        }
        assert_eq!(doc["current-context"], "prod");
    }

    #[test]
    fn a_missing_file_is_created_private_and_the_context_made_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        edit(&path, |d| upsert(d, "b", &ep("http://127.0.0.1:3"))).unwrap();
        let doc: Value = serde_norway::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["current-context"], "sarasa-b");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        edit(&path, |d| remove(d, "b")).unwrap();
        let doc: Value = serde_norway::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["current-context"], "");
        assert!(names(&doc, "contexts").is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_kubeconfig_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "- just\n- a list\n").unwrap();
        let err = edit(&path, |d| upsert(d, "c", &ep("http://127.0.0.1:4"))).unwrap_err();
        assert!(err.to_string().contains("not a kubeconfig"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "- just\n- a list\n");
    }
}
