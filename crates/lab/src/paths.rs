//! Where a lab keeps its files: `/var/lib/sarasa/<lab>/` (override the root with
//! `SARASA_STATE_ROOT`, which tests use to stay out of the way of a real lab).

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct LabPaths {
    pub root: PathBuf,
}

/// Where every lab's directory lives: `/var/lib/sarasa`, or `SARASA_STATE_ROOT`.
pub fn state_root() -> PathBuf {
    std::env::var_os("SARASA_STATE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/sarasa"))
}

impl LabPaths {
    pub fn new(lab: &str) -> LabPaths {
        LabPaths {
            root: state_root().join(lab),
        }
    }
    /// The lab's spec, written by `lab up`; its presence means "this lab exists".
    pub fn spec_file(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    /// Records of the processes the lab started (control plane, agents).
    pub fn pids_dir(&self) -> PathBuf {
        self.root.join("pids")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The loopback port of the API server (`{"port": N}`), kept across control-plane restarts.
    pub fn api_loopback_file(&self) -> PathBuf {
        self.root.join("api-loopback.json")
    }
    /// The API server's object store.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }
    /// Per-pod runtime records of the pod runner (netns, container pids).
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }
    /// The nodes' own resolv.conf (what `dnsPolicy: Default` pods get): the lab's nodes
    /// resolve through the external host's name server.
    pub fn node_resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
    /// The external host's name server (NSD): config, zone, pid file, database.
    /// The fabric router's BIRD (`--backend bgp`): config, control socket, log.
    pub fn bird_dir(&self) -> PathBuf {
        self.root.join("bird")
    }
    pub fn nsd_dir(&self) -> PathBuf {
        self.root.join("nsd")
    }
    /// The lab's CA, serving certificate, token signing key and tokens ([`crate::pki`]).
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }
    /// The node's own filesystem root: hostPath volumes of pods on the node live under it
    /// (`<root>/etc/cni/net.d` is the node's /etc/cni/net.d), as each lab node shares the
    /// machine's filesystem otherwise.
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("root")
    }
    /// The node's /etc/cni/net.d: the agent's DaemonSet pod writes the conflist there (hostPath).
    pub fn cni_conf_dir(&self, node: &str) -> PathBuf {
        self.node_root(node).join("etc/cni/net.d")
    }
    /// The node's /opt/cni/bin: the DaemonSet's init container installs sarasa-cni there.
    pub fn cni_bin_dir(&self, node: &str) -> PathBuf {
        self.node_root(node).join("opt/cni/bin")
    }
    /// The node's /var/lib/sarasa (hostPath of the agent's `state` volume).
    pub fn node_state_dir(&self, node: &str) -> PathBuf {
        self.node_root(node)
            .join(NODE_STATE_DIR.trim_start_matches('/'))
    }
    /// The node's IPAM store (the agent's default `--ipam-data-dir`, under its state dir).
    pub fn ipam_dir(&self, node: &str) -> PathBuf {
        self.node_state_dir(node).join("ipam")
    }
}

/// Where sarasa keeps its state on a node (the DaemonSet's `state` hostPath volume).
pub const NODE_STATE_DIR: &str = "/var/lib/sarasa";
