//! Unregistering a detached veth pair off DEL's path.
//!
//! Deleting a veth is one RTM_DELLINK, but the kernel answers it only after the pair is
//! unregistered, RCU grace periods included: ~21 ms of DEL's ~22 ms here, with 2.5 ms of CPU
//! (ARCHITECTURE.md, "CNI DEL returns before the kernel unregisters the pair"). DEL therefore detaches the pair at once
//! (host end down: its routes, neighbours and bridge forwarding go with it; the pod end down
//! and renamed, so `CNI_IFNAME` is free) and leaves the RTM_DELLINK to a detached child: this
//! same binary run as `sarasa-cni reap-veth INDEX NAME`, in the node's network namespace,
//! with no stdio (the runtime's pipes close when DEL exits) and in its own process group (a
//! runtime that kills the plugin's group on a timeout does not take it along).
//!
//! A reaper that never runs or dies leaves a down host veth that no attachment owns: the next
//! ADD of the same attachment removes it (same name), and GC removes any other. The reaper
//! deletes by index and only if the name still matches, so it can never take a pair that a
//! later ADD created under the same name.

use std::process::{Command, Stdio};

use sarasa_netns::Netlink;

/// The first argument that makes `sarasa-cni` a reaper instead of a CNI plugin.
pub const ARG: &str = "reap-veth";

/// Starts the reaper of host veth `name` (interface `index` in the caller's namespace); does
/// not wait for it.
pub fn spawn(index: u32, name: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    Command::new("/proc/self/exe")
        .arg0("sarasa-cni")
        .args([ARG, &index.to_string(), name])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

/// What the reaper did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaped {
    Deleted,
    /// No interface `index` any more, or one under another name: nothing to do.
    Gone,
}

/// The reaper's work: deletes interface `index` if it is still the veth `name`.
pub fn run(index: u32, name: &str) -> Result<Reaped, sarasa_netns::Error> {
    let mut node = Netlink::current()?;
    match node.link_by_index(index)? {
        Some(l) if l.name == name && l.kind.as_deref() == Some("veth") => {
            match node.delete_link(index) {
                Ok(()) => Ok(Reaped::Deleted),
                Err(e) if e.is_not_found() => Ok(Reaped::Gone),
                Err(e) => Err(e),
            }
        }
        _ => Ok(Reaped::Gone),
    }
}

/// `sarasa-cni reap-veth INDEX NAME`: `Some(exit code)` when `args` (without the program name)
/// ask for a reaper, `None` for a plugin run.
pub fn main(args: &[String]) -> Option<i32> {
    let (first, rest) = args.split_first()?;
    if first != ARG {
        return None;
    }
    let [index, name] = rest else {
        eprintln!("usage: sarasa-cni {ARG} INDEX NAME");
        return Some(2);
    };
    let Ok(index) = index.parse::<u32>() else {
        eprintln!("sarasa-cni {ARG}: INDEX must be an interface index, got {index:?}");
        return Some(2);
    };
    match run(index, name) {
        Ok(_) => Some(0),
        Err(e) => {
            eprintln!("sarasa-cni {ARG}: {e}");
            Some(1)
        }
    }
}
