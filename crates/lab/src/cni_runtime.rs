//! The runtime side of CNI, as containerd or CRI-O do it: load a node's conflist, run each
//! plugin of the list in order for ADD (feeding each the previous result), in reverse for DEL,
//! and GC with the list of attachments that are still valid. Plugins run inside the node's
//! network namespace, as they would on a real node.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sarasa_netns::NetNs;
use serde_json::{json, Value};

use crate::paths::{LabPaths, NODE_STATE_DIR};
use crate::process::BindMount;
use crate::LabError;

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct ConfList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

/// One attachment: who the plugins are asked about.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;...`
    pub args: String,
}

/// The first `*.conflist` of a directory (sorted by name), as runtimes pick it.
pub fn load_conflist(dir: &Path) -> Result<Option<ConfList>, LabError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LabError::io(dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    files.sort();
    let Some(path) = files.into_iter().next() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| LabError::io(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| LabError::Cni(format!("{}: invalid JSON: {e}", path.display())))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| LabError::Cni(format!("{}: missing {k:?}", path.display())))
    };
    let plugins = v
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| LabError::Cni(format!("{}: missing \"plugins\"", path.display())))?;
    Ok(Some(ConfList {
        name: field("name")?,
        cni_version: field("cniVersion")?,
        path,
        plugins,
    }))
}

/// Runs plugins for one node: `cni_path` holds the plugin binaries; `node` is where they run;
/// `mounts` make the node's own directories the plugins' view of the filesystem.
pub struct CniRuntime<'a> {
    pub cni_path: PathBuf,
    pub node: &'a NetNs,
    pub mounts: Vec<BindMount>,
}

impl<'a> CniRuntime<'a> {
    /// The runtime of lab node `node` (namespace `ns`): its /opt/cni/bin, its /var/lib/sarasa.
    pub fn for_node(paths: &LabPaths, node: &str, ns: &'a NetNs) -> CniRuntime<'a> {
        CniRuntime {
            cni_path: paths.cni_bin_dir(node),
            node: ns,
            mounts: vec![BindMount::new(paths.node_state_dir(node), NODE_STATE_DIR)],
        }
    }

    /// ADD through the whole list; returns the final result. On failure, runs DEL for the list
    /// so that nothing stays half-configured, and returns the ADD error.
    pub fn add(&self, conf: &ConfList, att: &Attachment) -> Result<Value, LabError> {
        let mut prev: Option<Value> = None;
        for plugin in &conf.plugins {
            match self.exec("ADD", conf, plugin, att, prev.as_ref()) {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    let _ = self.del(conf, att, prev.as_ref());
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| LabError::Cni("conflist produced no result".into()))
    }

    /// DEL through the list in reverse order, with the last ADD result as prevResult.
    pub fn del(
        &self,
        conf: &ConfList,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<(), LabError> {
        let mut errors = Vec::new();
        for plugin in conf.plugins.iter().rev() {
            if let Err(e) = self.exec("DEL", conf, plugin, att, prev) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Cni(errors.join("; ")))
        }
    }

    /// GC: every plugin releases what is not in `valid` (container id, ifname).
    pub fn gc(&self, conf: &ConfList, valid: &[(String, String)]) -> Result<(), LabError> {
        let valid: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        for plugin in &conf.plugins {
            let mut cfg = plugin_config(conf, plugin, None);
            cfg["cni.dev/valid-attachments"] = Value::Array(valid.clone());
            self.run("GC", &cfg, None)?;
        }
        Ok(())
    }

    fn exec(
        &self,
        command: &str,
        conf: &ConfList,
        plugin: &Value,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<Value, LabError> {
        let cfg = plugin_config(conf, plugin, prev);
        self.run(command, &cfg, Some(att))
    }

    fn run(&self, command: &str, cfg: &Value, att: Option<&Attachment>) -> Result<Value, LabError> {
        let kind = cfg.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind.is_empty() || kind.contains('/') {
            return Err(LabError::Cni(format!(
                "plugin has an invalid \"type\": {kind:?}"
            )));
        }
        let bin = self.cni_path.join(kind);
        for m in &self.mounts {
            std::fs::create_dir_all(&m.source).map_err(|e| LabError::io(&m.source, e))?;
        }
        // The plugin runs with the node's /var/lib/sarasa over the machine's, which may hide
        // the lab's own files (the node's /opt/cni/bin among them): it is opened here and run
        // from its descriptor, as fexecve does.
        let exe = std::fs::File::open(&bin)
            .map_err(|e| LabError::Cni(format!("plugin {}: {e}", bin.display())))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&exe);
        let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
        std::os::unix::process::CommandExt::arg0(&mut cmd, kind);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(att) = att {
            cmd.env("CNI_CONTAINERID", &att.container_id)
                .env("CNI_NETNS", &att.netns)
                .env("CNI_IFNAME", &att.ifname)
                .env("CNI_ARGS", &att.args);
        }
        let held = crate::process::enter_before_exec(
            &mut cmd,
            Some(self.node.path()),
            &self.mounts,
            false,
        )?;
        let mut child = cmd
            .spawn()
            .map_err(|e| LabError::Cni(format!("running {}: {e}", bin.display())))?;
        drop((held, exe));
        let input = serde_json::to_vec(cfg).map_err(|e| LabError::Cni(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .map_err(|e| LabError::Cni(format!("writing to {kind}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| LabError::Cni(format!("waiting for {kind}: {e}")))?;
        if out.status.success() {
            if out.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&out.stdout)
                .map_err(|e| LabError::Cni(format!("{kind} {command}: result is not JSON: {e}")));
        }
        let msg = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(err) => format!(
                "{kind} {command} failed (code {}): {}{}",
                err.get("code").unwrap_or(&Value::Null),
                err.get("msg").and_then(Value::as_str).unwrap_or(""),
                err.get("details")
                    .and_then(Value::as_str)
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            Err(_) => format!(
                "{kind} {command} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        Err(LabError::Cni(msg))
    }
}

/// A plugin's config as the spec builds it from a list: the plugin object plus the list's
/// `name` and `cniVersion`, plus `prevResult` when chaining.
fn plugin_config(conf: &ConfList, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut cfg = plugin.clone();
    cfg["name"] = Value::String(conf.name.clone());
    cfg["cniVersion"] = Value::String(conf.cni_version.clone());
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        cfg["prevResult"] = prev.clone();
    }
    cfg
}

/// The pod's addresses from a CNI result (`ips[].address`, prefix length dropped).
pub fn result_ips(result: &Value) -> Vec<String> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_carries_list_name_version_and_prev_result() {
        let conf = ConfList {
            path: "/x".into(),
            name: "sarasa".into(),
            cni_version: "1.1.0".into(),
            plugins: vec![json!({"type": "sarasa-cni", "mode": "routed"})],
        };
        let prev = json!({"ips": [{"address": "10.244.1.5/24"}]});
        let cfg = plugin_config(&conf, &conf.plugins[0], Some(&prev));
        assert_eq!(cfg["name"], "sarasa");
        assert_eq!(cfg["cniVersion"], "1.1.0");
        assert_eq!(cfg["mode"], "routed");
        assert_eq!(cfg["prevResult"], prev);
        assert_eq!(result_ips(&prev), ["10.244.1.5"]);
    }

    #[test]
    fn conflist_loading_picks_the_first_file_and_names_missing_fields() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_conflist(dir.path()).unwrap().is_none());
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.1.0","name":"b","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"name":"a","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        let err = load_conflist(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cniVersion"), "{err}");
        std::fs::remove_file(dir.path().join("10-a.conflist")).unwrap();
        let conf = load_conflist(dir.path()).unwrap().unwrap();
        assert_eq!(conf.name, "b");
    }
}
