//! DEL: detach the veth pair, release the addresses, and leave unregistering the pair to a
//! detached reaper ([`crate::reap`]: the kernel takes ~20 ms to answer that deletion). Idempotent:
//! a missing netns, interface or allocation is not an error; every step runs and all errors are
//! reported.

use sarasa_netns::{Link, Netlink};

use crate::config::Plugin;
use crate::env::Env;
use crate::error::CniError;
use crate::plumbing::hostport;
use crate::{log, naming, reap};

/// Runs DEL.
pub fn run(env: &Env, p: &Plugin) -> Result<(), CniError> {
    let mut errors: Vec<CniError> = Vec::new();
    let host = naming::host_veth(&p.name, &env.container_id, &env.ifname);
    let mut host_link: Option<Link> = None;
    match Netlink::current() {
        Ok(mut node) => match node.link_by_name(&host) {
            Ok(Some(l)) => {
                // Down first: the pod's routes, neighbours and bridge forwarding go at once.
                match node.set_down(l.index) {
                    Ok(()) => host_link = Some(l),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => errors.push(e.into()),
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e.into()),
        },
        Err(e) => errors.push(e.into()),
    }
    if let Some(path) = env.netns.as_deref() {
        match super::open_pod_netns(path) {
            Ok(ns) => match Netlink::open_in(&ns) {
                Ok(mut pod) => {
                    if let Err(e) = release_pod_end(&mut pod, &env.ifname, host_link.is_some()) {
                        if !e.is_not_found() {
                            errors.push(e.into());
                        }
                    }
                }
                Err(e) => errors.push(e.into()),
            },
            Err(e) => log::info(&format!("DEL: netns {path} not usable ({e}); continuing")),
        }
    }
    if let Some(l) = &host_link {
        // The pair goes with its host end; unregistering it is left to the reaper, or done
        // here when the reaper cannot be started.
        if let Err(e) = reap::spawn(l.index, &l.name) {
            log::info(&format!(
                "DEL: reaper for {host} not started ({e}); deleting here"
            ));
            match Netlink::current().and_then(|mut node| node.delete_link(l.index)) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => errors.push(e.into()),
            }
        }
    }
    match p.ipam() {
        Ok(ipam) => {
            // An unreadable store is rebuilt from the node (this attachment's veth is gone
            // already), so DEL leaves a usable store behind.
            if let Err(e) = super::rebuild::ensure(p, &ipam) {
                log::error(&format!("DEL: rebuilding the ipam store: {}", e.details));
            }
            let mapped = ipam
                .lookup(&env.container_id, &env.ifname)
                .map(|a| a.is_some_and(|a| !a.host_ports.is_empty()))
                .unwrap_or(false);
            if let Err(e) = ipam.release(&env.container_id, &env.ifname) {
                errors.push(e.into());
            } else if mapped {
                if let Err(e) = hostport::sync(&ipam) {
                    errors.push(e);
                }
            }
        }
        Err(e) => errors.push(e),
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let first = errors[0].clone();
            let all: Vec<String> = errors.iter().map(|e| e.details.clone()).collect();
            Err(CniError::new(first.code, first.msg, all.join("; ")))
        }
    }
}

/// Frees `ifname` in the pod's namespace. With the host end still there (`paired`), the pod
/// end is brought down and renamed `sxdel<INDEX>` until the reaper unregisters the pair; a pod
/// end without one (the host end was removed by hand) is deleted here.
fn release_pod_end(pod: &mut Netlink, ifname: &str, paired: bool) -> sarasa_netns::Result<()> {
    let Some(l) = pod.link_by_name(ifname)? else {
        return Ok(());
    };
    if l.kind.as_deref() != Some("veth") {
        return Ok(());
    }
    if !paired {
        return pod.delete_link(l.index);
    }
    pod.set_down(l.index)?;
    pod.set_name(l.index, &format!("sxdel{}", l.index))
}
