//! LoadBalancer addresses: every `type: LoadBalancer` Service gets one address per IP family
//! from the configured pools into `status.loadBalancer.ingress` (its `spec.loadBalancerIP` when
//! that is in a pool and free); Services that stop being LoadBalancers give theirs back.
//! (ClusterIPs and NodePorts are allocated at write time, see `validate::service`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, SERVICES};
use crate::store::{Event, EventKind, Obj, Store, Sub, WriteOpts};

pub struct LoadBalancers;

fn ingress_ips(svc: &Value) -> Vec<IpAddr> {
    meta::path(svc, "status.loadBalancer.ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("ip")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn is_lb(svc: &Value) -> bool {
    meta::path_str(svc, "spec.type") == Some("LoadBalancer") && !meta::is_deleting(svc)
}

fn key(svc: &Value) -> String {
    format!("{}/{}", meta::namespace(svc), meta::name(svc))
}

/// A free address of `pool` (skipping network and broadcast addresses of IPv4 pools).
fn free_in(pool: IpNet, used: &HashMap<IpAddr, String>, want: Option<IpAddr>) -> Option<IpAddr> {
    if let Some(w) = want {
        if pool.contains(&w) && !used.contains_key(&w) {
            return Some(w);
        }
    }
    pool.hosts().take(1 << 20).find(|ip| !used.contains_key(ip))
}

impl Controller for LoadBalancers {
    fn name(&self) -> &'static str {
        "services"
    }

    fn watches(&self) -> &'static [ResId] {
        &[SERVICES]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        if let Some(evs) = events {
            let relevant = evs.iter().any(|e| {
                e.kind != EventKind::Deleted && is_lb(&e.obj) == ingress_ips(&e.obj).is_empty()
            });
            if !relevant {
                return None;
            }
        }
        let (all, _) = store.list(SERVICES, None, |s| is_lb(s) || !ingress_ips(s).is_empty());
        let mut used: HashMap<IpAddr, String> = HashMap::new();
        for s in all.iter().filter(|s| is_lb(s)) {
            for ip in ingress_ips(s) {
                used.insert(ip, key(s));
            }
        }
        let pools = store.config.load_balancer_pools.clone();
        let todo: Vec<&Obj> = all
            .iter()
            .filter(|s| is_lb(s) == ingress_ips(s).is_empty())
            .collect();
        for s in todo {
            let ingress: Vec<Value> = if is_lb(s) {
                let want: Option<IpAddr> =
                    meta::path_str(s, "spec.loadBalancerIP").and_then(|i| i.parse().ok());
                let families: Vec<String> = meta::path(s, "spec.ipFamilies")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_else(|| vec!["IPv4".to_string()]);
                let mut out = Vec::new();
                for fam in families {
                    let v6 = fam == "IPv6";
                    let Some(pool) = pools.iter().find(|p| matches!(p, IpNet::V6(_)) == v6) else {
                        continue;
                    };
                    match free_in(*pool, &used, want.filter(|w| w.is_ipv6() == v6)) {
                        Some(ip) => {
                            used.insert(ip, key(s));
                            out.push(json!({"ip": ip.to_string(), "ipMode": "VIP"}));
                        }
                        None => {
                            tracing::warn!("LoadBalancer pool {pool} is exhausted ({})", key(s))
                        }
                    }
                }
                if out.is_empty() {
                    continue;
                }
                out
            } else {
                Vec::new()
            };
            let r = store.modify(
                SERVICES,
                meta::namespace(s),
                meta::name(s),
                Sub::Status,
                WriteOpts::internal(),
                |cur| {
                    let mut new = cur.clone();
                    if !new.get("status").is_some_and(Value::is_object) {
                        new["status"] = json!({});
                    }
                    new["status"]["loadBalancer"] = if ingress.is_empty() {
                        json!({})
                    } else {
                        json!({"ingress": ingress})
                    };
                    Ok(new)
                },
            );
            if let Err(e) = r {
                if e.code != 404 {
                    tracing::warn!("service {}: writing status.loadBalancer: {e}", key(s));
                }
            }
        }
        None
    }
}
