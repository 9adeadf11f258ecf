//! The lab's cluster DNS add-on: `lab up` applies `deploy/dns.yaml` (Deployment `sarasa-dns`
//! and Service `kube-dns` in kube-system) through the same path `sarasa apply` takes — server-side
//! dry run, then create — and waits until the Deployment's replicas are ready, so a lab reported
//! up resolves names. The manifest is compiled in, so the binary carries the file it ships with.

use std::time::Duration;

use anyhow::{Context, Result};
use sarasa_lab::Lab;

/// `deploy/dns.yaml` as shipped.
pub const MANIFEST: &str = include_str!("../../../deploy/dns.yaml");
const MANIFEST_NAME: &str = "deploy/dns.yaml";

/// The manifest as this lab applies it: `kube-dns` at the tenth address of the lab's Service
/// range (the address its kubelets give pods; 10.96.0.10 as shipped) and, with
/// `--insecure-api`, the replicas told the API's plain-HTTP URL.
pub fn manifests(spec: &sarasa_lab::LabSpec) -> Result<Vec<sarasa_kubectl::Manifest>> {
    let mut manifests = sarasa_kubectl::parse_manifests(MANIFEST_NAME, MANIFEST)
        .context("parsing the built-in deploy/dns.yaml")?;
    let dns_ip = sarasa_lab::dns_ip(spec).to_string();
    for m in &mut manifests {
        if let sarasa_kubectl::Object::Service(svc) = &mut m.object {
            if let Some(s) = svc.spec.as_mut() {
                s.cluster_ip = Some(dns_ip.clone());
                s.cluster_ips = Some(vec![dns_ip.clone()]);
            }
        }
    }
    if spec.insecure_api {
        // The API speaks plain HTTP (`lab up --insecure-api`): in-cluster config cannot reach it.
        for m in &mut manifests {
            if let sarasa_kubectl::Object::Deployment(d) = &mut m.object {
                let pod = d.spec.template.spec.iter_mut();
                for c in pod.flat_map(|p| p.containers.iter_mut()) {
                    let args = c.args.get_or_insert_with(Vec::new);
                    args.push(format!("--apiserver={}", spec.api_url()));
                }
            }
        }
    }
    Ok(manifests)
}

/// Applies the DNS manifest to `lab` and waits up to `timeout` for its replicas to be ready.
pub fn install(lab: &Lab, timeout: Duration) -> Result<()> {
    let manifests = manifests(&lab.spec)?;
    let opts = sarasa_kubectl::ApplyOptions::default();
    let report = sarasa_lab::client::with_client(&lab.spec, |c| async move {
        let mut sink = std::io::sink();
        sarasa_kubectl::apply(&c, &manifests, &opts, &mut sink)
            .await
            .map_err(|e| sarasa_lab::LabError::Api(format!("applying {MANIFEST_NAME}: {e}")))
    })?;
    let what = sarasa_lab::wait::WaitFor {
        pods: Vec::new(),
        deployments: report
            .deployments()
            .map(|d| {
                (
                    d.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "kube-system".into()),
                    d.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect(),
        resource_version: report.agent_resource_version().unwrap_or(0),
    };
    sarasa_lab::wait::wait(lab, what, timeout)
        .context("waiting for the cluster DNS (Deployment kube-system/sarasa-dns) to be ready")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_kubectl::Object;

    fn objects() -> Vec<Object> {
        sarasa_kubectl::parse_manifests(MANIFEST_NAME, MANIFEST)
            .expect("deploy/dns.yaml parses")
            .into_iter()
            .map(|m| m.object)
            .collect()
    }

    #[test]
    fn the_service_is_kube_dns_at_the_address_pods_are_given() {
        let spec = sarasa_lab::LabSpec::new(
            "dnstest",
            3,
            sarasa_lab::Backend::Vxlan,
            sarasa_lab::CniMode::Bridge,
        )
        .expect("spec");
        let svc = objects()
            .into_iter()
            .find_map(|o| match o {
                Object::Service(s) => Some(s),
                _ => None,
            })
            .expect("a Service");
        assert_eq!(svc.metadata.name.as_deref(), Some("kube-dns"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("kube-system"));
        let spec_svc = svc.spec.expect("spec");
        assert_eq!(
            spec_svc.cluster_ip.as_deref(),
            Some(sarasa_lab::dns_ip(&spec).to_string().as_str())
        );
        let ports: Vec<(String, i32, String)> = spec_svc
            .ports
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p.name.unwrap_or_default(),
                    p.port,
                    p.protocol.unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".to_string(), 53, "UDP".to_string()),
                ("dns-tcp".to_string(), 53, "TCP".to_string()),
                ("metrics".to_string(), 9153, "TCP".to_string()),
            ]
        );
    }

    #[test]
    fn kube_dns_takes_the_tenth_address_of_the_labs_service_range() {
        let spec = sarasa_lab::LabSpec::new(
            "dnstest",
            1,
            sarasa_lab::Backend::Vxlan,
            sarasa_lab::CniMode::Bridge,
        )
        .expect("spec")
        .with_networks(None, Some("10.112.0.0/16"), None)
        .expect("ranges");
        let svc = manifests(&spec)
            .expect("manifests")
            .into_iter()
            .find_map(|m| match m.object {
                Object::Service(s) => Some(s),
                _ => None,
            })
            .expect("a Service")
            .spec
            .expect("spec");
        assert_eq!(svc.cluster_ip.as_deref(), Some("10.112.0.10"));
        assert_eq!(svc.cluster_ips, Some(vec!["10.112.0.10".to_string()]));
    }

    #[test]
    fn the_deployment_runs_two_sarasa_dns_replicas_probed_on_the_metrics_port() {
        let d = objects()
            .into_iter()
            .find_map(|o| match o {
                Object::Deployment(d) => Some(d),
                _ => None,
            })
            .expect("a Deployment");
        assert_eq!(d.metadata.name.as_deref(), Some("sarasa-dns"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.dns_policy.as_deref(), Some("Default"));
        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["sarasa".to_string(), "dns".to_string()][..])
        );
        let readiness = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
        let liveness = c.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(liveness.and_then(|h| h.path.as_deref()), Some("/healthz"));
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(labels.get("k8s-app").map(String::as_str), Some("kube-dns"));
    }
}
