//! The benchmark cluster: `services` Services in namespace `bench`, every tenth headless, each
//! with one EndpointSlice of `endpoints_per_service` ready endpoints (headless endpoints carry
//! hostnames `ep-K`, so SRV targets are names both servers spell alike). Services have two
//! named ports, `http` 80/TCP and `dns` 53/UDP.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// One Service as the benchmark knows it after the API server stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchService {
    pub name: String,
    /// None for a headless Service.
    pub cluster_ip: Option<Ipv4Addr>,
    /// (hostname, address) of each ready endpoint.
    pub endpoints: Vec<(String, Ipv4Addr)>,
}

/// (port name, protocol, port) of every benchmark Service.
pub const PORTS: &[(&str, &str, u16)] = &[("http", "TCP", 80), ("dns", "UDP", 53)];

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

pub fn is_headless(i: usize) -> bool {
    i % 10 == 9
}

/// The address of endpoint `k` of Service `i`: unique across the cluster, in 10.128.0.0/9.
pub fn endpoint_ip(i: usize, k: usize, per_service: usize) -> Ipv4Addr {
    let n = (i * per_service + k) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + n)
}

/// The Service object to create (the API server allocates the ClusterIP).
pub fn service_object(i: usize) -> Value {
    let ports: Vec<Value> = PORTS
        .iter()
        .map(|(name, proto, port)| json!({"name": name, "protocol": proto, "port": port}))
        .collect();
    let mut spec = json!({"ports": ports});
    if is_headless(i) {
        spec["clusterIP"] = json!("None");
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(i), "namespace": crate::NAMESPACE},
        "spec": spec,
    })
}

/// The Service's EndpointSlice (selector-less Services get hand-made slices, as here).
pub fn slice_object(i: usize, per_service: usize) -> Value {
    let endpoints: Vec<Value> = (0..per_service)
        .map(|k| {
            let mut ep = json!({
                "addresses": [endpoint_ip(i, k, per_service).to_string()],
                "conditions": {"ready": true},
            });
            if is_headless(i) {
                ep["hostname"] = json!(format!("ep-{k}"));
            }
            ep
        })
        .collect();
    let ports: Vec<Value> = PORTS
        .iter()
        .map(|(name, proto, port)| json!({"name": name, "protocol": proto, "port": port}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{}-1", service_name(i)),
            "namespace": crate::NAMESPACE,
            "labels": {"kubernetes.io/service-name": service_name(i)},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// What the benchmark knows of Service `i` once stored (`stored` is the API's Service).
pub fn bench_service(i: usize, stored: &Value, per_service: usize) -> BenchService {
    let cluster_ip = stored
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let endpoints = (0..per_service)
        .map(|k| (format!("ep-{k}"), endpoint_ip(i, k, per_service)))
        .collect();
    BenchService {
        name: service_name(i),
        cluster_ip,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_addresses_are_unique_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            for k in 0..5 {
                let ip = endpoint_ip(i, k, 5);
                assert!(ip.octets()[0] == 10 && ip.octets()[1] >= 128);
                assert!(seen.insert(ip));
            }
        }
        assert_eq!(endpoint_ip(0, 0, 5), Ipv4Addr::new(10, 128, 0, 1));
    }

    #[test]
    fn every_tenth_service_is_headless_with_hostnames() {
        assert_eq!(service_object(9)["spec"]["clusterIP"], "None");
        assert!(service_object(8)["spec"].get("clusterIP").is_none());
        let s = slice_object(9, 5);
        assert_eq!(s["endpoints"].as_array().unwrap().len(), 5);
        assert_eq!(s["endpoints"][4]["hostname"], "ep-4");
        assert_eq!(
            s["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-9"
        );
        assert!(slice_object(8, 5)["endpoints"][0].get("hostname").is_none());
    }
}
