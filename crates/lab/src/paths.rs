//! Where a lab keeps its files: `/var/lib/sarasa/<lab>/` (override the root with
//! `SARASA_STATE_ROOT`, which tests use to stay out of the way of a real lab).

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct LabPaths {
    pub root: PathBuf,
}

impl LabPaths {
    pub fn new(lab: &str) -> LabPaths {
        let base = std::env::var_os("SARASA_STATE_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/sarasa"));
        LabPaths {
            root: base.join(lab),
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
    /// The node's CNI config dir (the agent writes the conflist here).
    pub fn cni_conf_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("net.d")
    }
    /// The node's IPAM store.
    pub fn ipam_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("ipam")
    }
}
