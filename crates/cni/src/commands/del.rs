//! DEL: remove the veth pair and release the addresses. Idempotent: a missing netns,
//! interface or allocation is not an error; every step runs and all errors are reported.

use sarasa_netns::Netlink;

use crate::config::Plugin;
use crate::env::Env;
use crate::error::CniError;
use crate::plumbing::hostport;
use crate::{log, naming};

/// Runs DEL.
pub fn run(env: &Env, p: &Plugin) -> Result<(), CniError> {
    let mut errors: Vec<CniError> = Vec::new();
    let host = naming::host_veth(&p.name, &env.container_id, &env.ifname);
    let mut host_deleted = false;
    match Netlink::current() {
        Ok(mut node) => match node.delete_link_by_name(&host) {
            Ok(deleted) => host_deleted = deleted,
            Err(e) => errors.push(e.into()),
        },
        Err(e) => errors.push(e.into()),
    }
    if let (false, Some(path)) = (host_deleted, env.netns.as_deref()) {
        // Deleting the host end removes the pair; only when there was none may a container
        // end remain (e.g. the host end was removed by hand).
        match super::open_pod_netns(path) {
            Ok(ns) => match Netlink::open_in(&ns) {
                Ok(mut pod) => match pod.link_by_name(&env.ifname) {
                    Ok(Some(l)) if l.kind.as_deref() == Some("veth") => {
                        if let Err(e) = pod.delete_link(l.index) {
                            if !e.is_not_found() {
                                errors.push(e.into());
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e.into()),
                },
                Err(e) => errors.push(e.into()),
            },
            Err(e) => log::info(&format!("DEL: netns {path} not usable ({e}); continuing")),
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
