//! The runtime side of CNI, as containerd or CRI-O do it: load a node's conflist, run each
//! plugin of the list in order for ADD (feeding each the previous result), in reverse for DEL,
//! and GC with the list of attachments that are still valid. Plugins run inside the node's
//! network namespace, as they would on a real node.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// The `portMappings` capability's entries (`hostPort`s), passed as
    /// `runtimeConfig.portMappings` to plugins that declare the capability.
    pub port_mappings: Vec<Value>,
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

/// How long one plugin invocation may take before it is killed (a kubelet's runtime request
/// timeout is 2 min; a plugin of the lab answers in milliseconds).
pub const CNI_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs plugins for one node: `cni_path` holds the plugin binaries; `node` is where they run;
/// `mounts` make the node's own directories the plugins' view of the filesystem; a plugin still
/// running after `timeout` is killed (with anything it started) and the call fails, so a hung
/// plugin never stalls the pod's worker.
pub struct CniRuntime<'a> {
    pub cni_path: PathBuf,
    pub node: &'a NetNs,
    pub mounts: Vec<BindMount>,
    pub timeout: Duration,
}

impl<'a> CniRuntime<'a> {
    /// The runtime of lab node `node` (namespace `ns`): its /opt/cni/bin, its /var/lib/sarasa,
    /// no `nft` ([`crate::image_fs`]), the default [`CNI_TIMEOUT`].
    pub fn for_node(paths: &LabPaths, node: &str, ns: &'a NetNs) -> CniRuntime<'a> {
        let mut mounts = vec![BindMount::new(paths.node_state_dir(node), NODE_STATE_DIR)];
        mounts.extend(crate::image_fs::hide_binaries(paths));
        CniRuntime {
            cni_path: paths.cni_bin_dir(node),
            node: ns,
            mounts,
            timeout: CNI_TIMEOUT,
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
        let mut cfg = plugin_config(conf, plugin, prev);
        // As libcni: runtimeConfig carries only the capabilities the plugin declares.
        let wants = plugin.pointer("/capabilities/portMappings") == Some(&Value::Bool(true));
        if wants && !att.port_mappings.is_empty() {
            cfg["runtimeConfig"] = json!({ "portMappings": att.port_mappings });
        }
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
        // The node's directories are made on first use; a file source (what hides `nft`) exists.
        for m in self.mounts.iter().filter(|m| !m.source.exists()) {
            std::fs::create_dir_all(&m.source).map_err(|e| LabError::io(&m.source, e))?;
        }
        // With mounts, the plugin runs with the node's /var/lib/sarasa over the machine's,
        // which may hide the lab's own files (the node's /opt/cni/bin among them): it is opened
        // here and run from its descriptor, as fexecve does (an ELF binary, as plugins are: a
        // script's interpreter could not reopen the close-on-exec descriptor). Without mounts
        // it runs from its path.
        let exe = if self.mounts.is_empty() {
            None
        } else {
            Some(
                std::fs::File::open(&bin)
                    .map_err(|e| LabError::Cni(format!("plugin {}: {e}", bin.display())))?,
            )
        };
        let mut cmd = match &exe {
            Some(f) => Command::new(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(f)
            )),
            None => Command::new(&bin),
        };
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
        // Its own process group, so a timeout kills whatever the plugin started too.
        cmd.process_group(0);
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
            if let Err(e) = stdin.write_all(&input) {
                kill_group(&mut child);
                return Err(LabError::Cni(format!("writing to {kind}: {e}")));
            }
        }
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                v
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(&mut child);
                    let _ = (stdout.join(), stderr.join());
                    return Err(LabError::Cni(format!(
                        "{kind} {command} timed out after {} s; the plugin was killed",
                        self.timeout.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    kill_group(&mut child);
                    return Err(LabError::Cni(format!("waiting for {kind}: {e}")));
                }
            }
        };
        let out = std::process::Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
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

/// Kills a plugin and its process group, and reaps it.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
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

    /// Deletes the test's namespace even when an assertion fails.
    struct NsGuard(String);
    impl Drop for NsGuard {
        fn drop(&mut self) {
            let _ = NetNs::delete(&self.0);
        }
    }

    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            // A zombie waiting for its reaper is dead too.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    #[test]
    fn a_hung_plugin_is_killed_with_what_it_started_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let script = |name: &str, body: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        };
        script(
            "hang",
            format!("#!/bin/sh\necho $$ > {d}/pid\nsleep 30 &\necho $! > {d}/child\nwait\n"),
        );
        script("quick", "#!/bin/sh\ncat >/dev/null\necho '{}'\n".into());
        let name = format!("sarasa-limits-cni-{}", std::process::id());
        let _ = NetNs::delete(&name);
        let ns = NetNs::create(&name).unwrap();
        let _guard = NsGuard(name);
        let rt = CniRuntime {
            cni_path: dir.path().to_path_buf(),
            node: &ns,
            mounts: Vec::new(),
            timeout: Duration::from_millis(300),
        };
        let conf = |ty: &str| ConfList {
            path: dir.path().join("x.conflist"),
            name: "n".into(),
            cni_version: "1.1.0".into(),
            plugins: vec![json!({"type": ty})],
        };
        let t = Instant::now();
        let err = rt.gc(&conf("hang"), &[]).unwrap_err().to_string();
        let took = t.elapsed();
        assert!(err.contains("hang GC timed out after 0.3 s"), "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        for f in ["pid", "child"] {
            let pid = std::fs::read_to_string(dir.path().join(f)).unwrap();
            while !gone(&pid) {
                assert!(Instant::now() < deadline, "{f} {pid} still runs");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A plugin that answers in time is unaffected.
        rt.gc(&conf("quick"), &[]).unwrap();
    }
}
