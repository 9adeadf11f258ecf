//! Pod volumes, as the kubelet's volume manager provides them to a lab pod: each volume of the
//! pod's spec is materialised under the pod's directory (`pods/<uid>/volumes/<name>/`) —
//! configMap, secret, downwardAPI and projected volumes as files with their modes, emptyDir as an
//! empty directory, hostPath as a directory of the node (`nodes/<node>/root/<path>`: the lab's
//! nodes share one filesystem, so each gets its own root) — and each container's
//! `volumeMounts` become bind mounts (read-only where asked and always for the API-sourced
//! kinds, `subPath` honoured) recorded in `volumes/mounts.json`, so `exec` enters the same
//! mounts as the container. Projected ServiceAccount tokens come from TokenRequest bound to the
//! pod and are rewritten in place before 80% of their lifetime has passed.
//!
//! Fetching (async, through the API) and writing (blocking, on the pod start thread) are
//! separate steps: [`resolve`] then [`materialize`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::paths::LabPaths;
use crate::process::BindMount;
use crate::LabError;

/// File mode of volume files when neither the item nor the volume gives one (0644).
pub const DEFAULT_MODE: u32 = 0o644;
/// Lifetime of a projected token when the source gives none (the API's default, 1 h).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// Name of the mount plan inside `volumes/`.
const MOUNTS_FILE: &str = "mounts.json";
/// Name of the projected-token records inside `volumes/`.
const TOKENS_FILE: &str = "tokens.json";

/// One file of a volume: path relative to the volume's root, content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// What one volume becomes on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// configMap, secret, downwardAPI, projected: these files, written read-only for containers.
    Files(Vec<VolumeFile>),
    /// An empty directory that lives as long as the pod.
    EmptyDir,
    /// A path on the node (already mapped into the node's root), created or checked.
    HostPath { path: PathBuf, kind: String },
}

/// A projected token the kubelet keeps fresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub volume: String,
    pub path: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    pub mode: u32,
    /// Unix seconds the current token was issued and expires.
    pub issued: i64,
    pub expires: i64,
}

impl TokenRecord {
    /// True once 80% of the token's lifetime has passed (the kubelet's refresh point).
    pub fn due(&self, now: i64) -> bool {
        now >= self.issued + (self.expires - self.issued) * 8 / 10
    }
}

/// Everything [`materialize`] writes for a pod.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    pub volumes: Vec<(String, Resolved)>,
    pub tokens: Vec<TokenRecord>,
}

fn invalid(pod: &Pod, msg: String) -> LabError {
    LabError::Invalid(format!(
        "pod {}/{}: {msg}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A relative path without `..` (volume item paths and `subPath`, as the API validates them).
pub fn check_relative(field: &str, p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return Err(format!("{field}: {p:?} must be a relative path"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{field}: {p:?} must not contain '..'"));
    }
    Ok(())
}

/// Files of a configMap/secret source: every key, or just `items` (key → path, mode). A key
/// named in `items` that does not exist is an error unless the source is optional.
pub fn key_files(
    field: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Vec<VolumeFile>, String> {
    match items {
        None | Some([]) => Ok(data
            .iter()
            .map(|(k, v)| VolumeFile {
                path: k.clone(),
                data: v.clone(),
                mode: default_mode,
            })
            .collect()),
        Some(items) => {
            let mut out = Vec::new();
            for (i, it) in items.iter().enumerate() {
                check_relative(&format!("{field}.items[{i}].path"), &it.path)?;
                match data.get(&it.key) {
                    Some(v) => out.push(VolumeFile {
                        path: it.path.clone(),
                        data: v.clone(),
                        mode: it.mode.map_or(default_mode, |m| m as u32),
                    }),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "{field}.items[{i}].key: {:?} is not in the source",
                            it.key
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// `k="v"` lines, sorted, as the kubelet renders labels and annotations.
fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API `fieldRef` for a volume file.
pub fn field_value(pod: &Pod, field_path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(rest) = field_path
        .strip_prefix("metadata.labels['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return Ok(m
            .labels
            .as_ref()
            .and_then(|l| l.get(rest))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(rest) = field_path
        .strip_prefix("metadata.annotations['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return Ok(m
            .annotations
            .as_ref()
            .and_then(|l| l.get(rest))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match field_path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&m.labels.clone().unwrap_or_default()),
        "metadata.annotations" => format_map(&m.annotations.clone().unwrap_or_default()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        other => return Err(format!("fieldPath {other:?} is not supported")),
    })
}

fn downward_files(
    pod: &Pod,
    field: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Vec<VolumeFile>, String> {
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        check_relative(&format!("{field}.items[{i}].path"), &it.path)?;
        let Some(f) = &it.field_ref else {
            return Err(format!(
                "{field}.items[{i}]: only fieldRef is supported (no resourceFieldRef)"
            ));
        };
        let v = field_value(pod, &f.field_path)
            .map_err(|e| format!("{field}.items[{i}].fieldRef: {e}"))?;
        out.push(VolumeFile {
            path: it.path.clone(),
            data: v.into_bytes(),
            mode: it.mode.map_or(default_mode, |m| m as u32),
        });
    }
    Ok(out)
}

fn configmap_bytes(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.clone().unwrap_or_default() {
        out.insert(k, v.0);
    }
    out
}

fn secret_bytes(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

async fn get_configmap(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<ConfigMap>, LabError> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| LabError::Api(format!("getting configmap {ns}/{name}: {e}")))
}

async fn get_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, LabError> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| LabError::Api(format!("getting secret {ns}/{name}: {e}")))
}

/// A token of the pod's ServiceAccount bound to the pod: (token, issued, expires).
pub async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<&str>,
    seconds: i64,
) -> Result<(String, i64, i64), LabError> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = now();
    let out = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| {
            LabError::Api(format!(
                "requesting a token of serviceaccount {ns}/{sa}: {e}"
            ))
        })?;
    let status = out
        .status
        .ok_or_else(|| LabError::Api(format!("TokenRequest for {ns}/{sa} has no status")))?;
    let expires = status
        .expiration_timestamp
        .map_or(issued + seconds, |t| t.0.as_second());
    let token = status
        .token
        .ok_or_else(|| LabError::Api(format!("TokenRequest for {ns}/{sa} returned no token")))?;
    Ok((token, issued, expires))
}

/// Fetches what every volume of `pod` needs from the API. `node_root` is the pod's node's root
/// directory (hostPath volumes are mapped under it).
pub async fn resolve(client: &Client, pod: &Pod, node_root: &Path) -> Result<PodVolumes, LabError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = PodVolumes::default();
    let volumes: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for (vi, v) in volumes.iter().enumerate() {
        let field = format!("spec.volumes[{vi}]");
        let bad = |e: String| invalid(pod, e);
        let resolved = if let Some(cm) = &v.config_map {
            let optional = cm.optional == Some(true);
            let mode = cm.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            match get_configmap(client, &ns, &cm.name).await? {
                Some(obj) => Resolved::Files(
                    key_files(
                        &format!("{field}.configMap"),
                        &configmap_bytes(&obj),
                        cm.items.as_deref(),
                        mode,
                        optional,
                    )
                    .map_err(bad)?,
                ),
                None if optional => Resolved::Files(Vec::new()),
                None => {
                    return Err(bad(format!(
                        "{field}.configMap: configmap {:?} not found",
                        cm.name
                    )))
                }
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional == Some(true);
            let mode = s.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            match get_secret(client, &ns, &name).await? {
                Some(obj) => Resolved::Files(
                    key_files(
                        &format!("{field}.secret"),
                        &secret_bytes(&obj),
                        s.items.as_deref(),
                        mode,
                        optional,
                    )
                    .map_err(bad)?,
                ),
                None if optional => Resolved::Files(Vec::new()),
                None => return Err(bad(format!("{field}.secret: secret {name:?} not found"))),
            }
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            Resolved::Files(
                downward_files(
                    pod,
                    &format!("{field}.downwardAPI"),
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                )
                .map_err(bad)?,
            )
        } else if v.empty_dir.is_some() {
            Resolved::EmptyDir
        } else if let Some(h) = &v.host_path {
            Resolved::HostPath {
                path: host_path(node_root, &h.path)
                    .map_err(|e| bad(format!("{field}.hostPath.path: {e}")))?,
                kind: h.type_.clone().unwrap_or_default(),
            }
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.map_or(DEFAULT_MODE, |m| m as u32);
            let mut files = Vec::new();
            for (si, src) in p.sources.iter().flatten().enumerate() {
                let sf = format!("{field}.projected.sources[{si}]");
                if let Some(cm) = &src.config_map {
                    let optional = cm.optional == Some(true);
                    match get_configmap(client, &ns, &cm.name).await? {
                        Some(obj) => files.extend(
                            key_files(
                                &format!("{sf}.configMap"),
                                &configmap_bytes(&obj),
                                cm.items.as_deref(),
                                mode,
                                optional,
                            )
                            .map_err(bad)?,
                        ),
                        None if optional => {}
                        None => {
                            return Err(bad(format!(
                                "{sf}.configMap: configmap {:?} not found",
                                cm.name
                            )))
                        }
                    }
                } else if let Some(s) = &src.secret {
                    let optional = s.optional == Some(true);
                    match get_secret(client, &ns, &s.name).await? {
                        Some(obj) => files.extend(
                            key_files(
                                &format!("{sf}.secret"),
                                &secret_bytes(&obj),
                                s.items.as_deref(),
                                mode,
                                optional,
                            )
                            .map_err(bad)?,
                        ),
                        None if optional => {}
                        None => {
                            return Err(bad(format!("{sf}.secret: secret {:?} not found", s.name)))
                        }
                    }
                } else if let Some(d) = &src.downward_api {
                    files.extend(
                        downward_files(
                            pod,
                            &format!("{sf}.downwardAPI"),
                            d.items.as_deref().unwrap_or_default(),
                            mode,
                        )
                        .map_err(bad)?,
                    );
                } else if let Some(t) = &src.service_account_token {
                    check_relative(&format!("{sf}.serviceAccountToken.path"), &t.path)
                        .map_err(bad)?;
                    let seconds = t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
                    let (token, issued, expires) =
                        request_token(client, pod, t.audience.as_deref(), seconds).await?;
                    files.push(VolumeFile {
                        path: t.path.clone(),
                        data: token.into_bytes(),
                        mode,
                    });
                    out.tokens.push(TokenRecord {
                        volume: v.name.clone(),
                        path: t.path.clone(),
                        audience: t.audience.clone(),
                        expiration_seconds: seconds,
                        mode,
                        issued,
                        expires,
                    });
                } else {
                    return Err(bad(format!("{sf}: no supported source (configMap, secret, downwardAPI, serviceAccountToken)")));
                }
            }
            Resolved::Files(files)
        } else {
            return Err(bad(format!(
                "{field} ({:?}): unsupported volume type (supported: configMap, secret, emptyDir, hostPath, downwardAPI, projected)",
                v.name
            )));
        };
        out.volumes.push((v.name.clone(), resolved));
    }
    Ok(out)
}

/// `path` of a hostPath volume inside the node's root; a device under /dev is the machine's
/// own (every lab node runs on the machine's kernel, so its devices are the machine's, e.g.
/// the agent's /dev/net/tun).
pub fn host_path(node_root: &Path, path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{path:?} must not contain '..'"));
    }
    if p.starts_with("/dev") && p != Path::new("/dev") {
        return Ok(p.to_path_buf());
    }
    Ok(node_root.join(path.trim_start_matches('/')))
}

/// Creates or checks a hostPath per its `type` (as the kubelet's hostPath type checker).
pub fn prepare_host_path(path: &Path, kind: &str) -> Result<(), String> {
    let what = path.display();
    match kind {
        "" => {
            // No check; the kubelet would mount whatever is there. A missing path becomes a
            // directory so the bind mount has a source.
            if !path.exists() {
                fs::create_dir_all(path).map_err(|e| format!("{what}: {e}"))?;
            }
            Ok(())
        }
        "DirectoryOrCreate" => {
            if path.exists() && !path.is_dir() {
                return Err(format!("{what} exists and is not a directory"));
            }
            fs::create_dir_all(path).map_err(|e| format!("{what}: {e}"))?;
            Ok(())
        }
        "Directory" => path
            .is_dir()
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {what} is not a directory")),
        "FileOrCreate" => {
            if path.is_dir() {
                return Err(format!("{what} exists and is a directory"));
            }
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(path)
                .map(drop)
                .map_err(|e| format!("{what}: {e}"))
        }
        "File" => path
            .is_file()
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {what} is not a file")),
        "CharDevice" => fs::metadata(path)
            .ok()
            .filter(|m| std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()))
            .map(drop)
            .ok_or_else(|| {
                format!("hostPath type check failed: {what} is not a character device")
            }),
        other => Err(format!(
            "hostPath type {other:?} is not supported (supported: \"\", DirectoryOrCreate, Directory, FileOrCreate, File, CharDevice)"
        )),
    }
}

/// Writes `data` to `path` atomically (a temporary file renamed over it) with `mode`.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), LabError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("..{name}.tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| LabError::io(&tmp, e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(&tmp, e))?;
    f.write_all(data).map_err(|e| LabError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))
}

/// The directory of the pod's volumes.
pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// Where a volume lives on disk.
fn volume_source(pod_dir: &Path, vols: &PodVolumes, name: &str) -> Option<(PathBuf, bool)> {
    vols.volumes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(n, r)| match r {
            Resolved::HostPath { path, .. } => (path.clone(), false),
            Resolved::EmptyDir => (volumes_dir(pod_dir).join(n), false),
            // The API-sourced kinds are always mounted read-only, as the kubelet does.
            Resolved::Files(_) => (volumes_dir(pod_dir).join(n), true),
        })
}

/// The bind mounts of one container: its `volumeMounts` in mount-path depth order (parents
/// before what is mounted inside them).
pub fn plan_mounts(
    pod_dir: &Path,
    vols: &PodVolumes,
    c: &Container,
) -> Result<Vec<BindMount>, String> {
    let mut out = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let field = format!("container {:?} volumeMounts[{i}]", c.name);
        let (mut source, forced_ro) = volume_source(pod_dir, vols, &m.name)
            .ok_or_else(|| format!("{field}.name: no volume named {:?}", m.name))?;
        if !m.mount_path.starts_with('/') {
            return Err(format!(
                "{field}.mountPath: {:?} must be absolute",
                m.mount_path
            ));
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            check_relative(&format!("{field}.subPath"), sub)?;
            source = source.join(sub);
            if !source.exists() {
                // The kubelet creates a missing subPath as a directory.
                fs::create_dir_all(&source).map_err(|e| format!("{field}.subPath: {e}"))?;
            }
        }
        let mut b = BindMount::new(source, &m.mount_path);
        if forced_ro || m.read_only == Some(true) {
            b = b.read_only();
        }
        out.push(b);
    }
    out.sort_by_key(|b| b.target.components().count());
    Ok(out)
}

/// Writes every volume and the mount plan of every container (and init container); containers
/// of the `sarasa` image also get `hidden` ([`crate::image_fs`]: what that image lacks).
pub fn materialize(
    pod_dir: &Path,
    pod: &Pod,
    vols: &PodVolumes,
    hidden: &[BindMount],
) -> Result<(), LabError> {
    let root = volumes_dir(pod_dir);
    fs::create_dir_all(&root).map_err(|e| LabError::io(&root, e))?;
    for (name, r) in &vols.volumes {
        let dir = root.join(name);
        match r {
            Resolved::Files(files) => {
                fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
                for f in files {
                    write_file_atomic(&dir.join(&f.path), &f.data, f.mode)?;
                }
            }
            Resolved::EmptyDir => {
                fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                    .map_err(|e| LabError::io(&dir, e))?;
            }
            Resolved::HostPath { path, kind } => {
                prepare_host_path(path, kind)
                    .map_err(|e| invalid(pod, format!("volume {name:?}: {e}")))?;
            }
        }
    }
    let spec = pod.spec.clone().unwrap_or_default();
    // Containers first (the first is `exec`'s default), then init containers.
    let mut plan: Vec<(String, Vec<BindMount>)> = Vec::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let mut mounts = plan_mounts(pod_dir, vols, c).map_err(|e| invalid(pod, e))?;
        if crate::image_fs::is_sarasa_image(c.image.as_deref().unwrap_or_default()) {
            mounts.extend(hidden.iter().cloned());
        }
        plan.push((c.name.clone(), mounts));
    }
    crate::state::write_json_atomic(&root.join(MOUNTS_FILE), &plan)?;
    crate::state::write_json_atomic(&root.join(TOKENS_FILE), &vols.tokens)
}

/// The volume bind mounts of `container` (the first container's when `None`) of the pod `uid`.
pub fn container_mounts(paths: &LabPaths, uid: &str, container: Option<&str>) -> Vec<BindMount> {
    let file = volumes_dir(&paths.pods_dir().join(uid)).join(MOUNTS_FILE);
    let plan: Vec<(String, Vec<BindMount>)> = crate::state::read_json(&file)
        .ok()
        .flatten()
        .unwrap_or_default();
    plan.into_iter()
        .find(|(name, _)| container.is_none_or(|c| c == name))
        .map(|(_, m)| m)
        .unwrap_or_default()
}

/// Rewrites the pod's projected tokens that passed 80% of their lifetime.
pub async fn refresh_tokens(client: &Client, pod_dir: &Path, pod: &Pod) -> Result<(), LabError> {
    let file = volumes_dir(pod_dir).join(TOKENS_FILE);
    let mut tokens: Vec<TokenRecord> = match crate::state::read_json(&file)? {
        Some(t) => t,
        None => return Ok(()),
    };
    let t_now = now();
    let mut changed = false;
    for t in tokens.iter_mut().filter(|t| t.due(t_now)) {
        let (token, issued, expires) =
            request_token(client, pod, t.audience.as_deref(), t.expiration_seconds).await?;
        let path = volumes_dir(pod_dir).join(&t.volume).join(&t.path);
        write_file_atomic(&path, token.as_bytes(), t.mode)?;
        t.issued = issued;
        t.expires = expires;
        changed = true;
    }
    if changed {
        crate::state::write_json_atomic(&file, &tokens)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
