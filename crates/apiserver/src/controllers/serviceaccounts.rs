//! Two kube-controller-manager controllers that come with ServiceAccount tokens: the
//! ServiceAccount controller keeps a `default` ServiceAccount in every active namespace, and the
//! root-CA publisher keeps the ConfigMap `kube-root-ca.crt` (key `ca.crt`: the cluster CA that
//! in-cluster clients trust) in every active namespace, restoring it when changed or deleted.

use std::time::Duration;

use serde_json::json;

use crate::authn::admission::{DEFAULT_SERVICE_ACCOUNT, ROOT_CA_CONFIGMAP};
use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, CONFIGMAPS, NAMESPACES, SERVICEACCOUNTS};
use crate::store::{Event, Store, Sub, WriteOpts};

pub struct ServiceAccounts {
    /// The PEM bundle to publish; `None`: only the ServiceAccounts are kept.
    pub root_ca: Option<String>,
}

impl ServiceAccounts {
    fn ensure(&self, store: &Store, ns: &str) -> bool {
        let mut retry = false;
        let opts = WriteOpts::internal();
        if store
            .get(SERVICEACCOUNTS, ns, DEFAULT_SERVICE_ACCOUNT)
            .is_err()
        {
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": ns}});
            if let Err(e) = store.create(SERVICEACCOUNTS, ns, sa, opts) {
                if e.code != 409 {
                    tracing::warn!("creating serviceaccount {ns}/default: {e}");
                    retry = true;
                }
            }
        }
        let Some(ca) = &self.root_ca else {
            return retry;
        };
        let want = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ca}});
        let r = match store.get(CONFIGMAPS, ns, ROOT_CA_CONFIGMAP) {
            Err(_) => store.create(CONFIGMAPS, ns, want, opts).map(|_| ()),
            Ok(cur) => {
                if cur.get("data") == Some(&json!({"ca.crt": ca})) {
                    Ok(())
                } else {
                    store
                        .modify(CONFIGMAPS, ns, ROOT_CA_CONFIGMAP, Sub::Main, opts, |c| {
                            let mut new = c.clone();
                            new["data"] = json!({"ca.crt": ca});
                            Ok(new)
                        })
                        .map(|_| ())
                }
            }
        };
        if let Err(e) = r {
            if e.code != 409 {
                tracing::warn!("publishing {ns}/{ROOT_CA_CONFIGMAP}: {e}");
            }
            retry = true;
        }
        retry
    }
}

impl Controller for ServiceAccounts {
    fn name(&self) -> &'static str {
        "serviceaccounts"
    }

    fn watches(&self) -> &'static [ResId] {
        &[NAMESPACES, SERVICEACCOUNTS, CONFIGMAPS]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let namespaces: Vec<String> = match events {
            None => store
                .list(NAMESPACES, None, |n| !meta::is_deleting(n))
                .0
                .iter()
                .map(|n| meta::name(n).to_string())
                .collect(),
            Some(evs) => {
                let mut ns: Vec<String> = evs
                    .iter()
                    .map(|e| match e.res {
                        NAMESPACES => meta::name(&e.obj).to_string(),
                        _ => meta::namespace(&e.obj).to_string(),
                    })
                    .collect();
                ns.sort();
                ns.dedup();
                ns
            }
        };
        let mut retry = false;
        for ns in namespaces {
            match store.get(NAMESPACES, "", &ns) {
                Ok(n) if !meta::is_deleting(&n) => retry |= self.ensure(store, &ns),
                _ => {}
            }
        }
        retry.then(|| Duration::from_secs(1))
    }
}
