//! The vpc backend's address pool (AWS VPC CNI's IP address management daemon, in the
//! agent): the node's pod addresses are VPC addresses the cloud assigns it through its
//! allocation API ([`sarasa_model::vpc`]), up to the node's limit. The agent keeps a warm
//! pool — at least `vpcWarmAddresses` assigned but unused — so a pod's ADD takes a local
//! address and never waits on the cloud, and gives back what exceeds twice that.
//!
//! What the node holds is published on its Node (`sarasa.io/vpc-addresses`, with
//! `sarasa.io/vpc-address-limit`): the node plan reads them from there like a podCIDR, so the
//! conflist, trace and `lab check` see the same addresses. An address to give back is first
//! taken out of that list (no new ADD can pick it), and returned to the cloud only when it is
//! still unused [`DRAIN`] later. The Node condition [`CONDITION`] says whether pods can get
//! addresses: `WarmPoolReady`, `AddressLimitReached`, `SubnetExhausted` or `CloudUnreachable`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use sarasa_cluster::state::{ANNOTATION_VPC_ADDRESSES, ANNOTATION_VPC_ADDRESS_LIMIT};
use sarasa_model::vpc::{
    AssignRequest, CloudErrorBody, InstanceAddresses, UnassignRequest, ADDRESSES_PATH,
    UNASSIGN_PATH,
};

use crate::error::{Error, Result};

/// The Node condition that reports the pool.
pub const CONDITION: &str = "VPCAddressesAvailable";
/// How long an address is out of the published list before it goes back to the cloud.
pub const DRAIN: Duration = Duration::from_secs(2);
/// How often the pool is looked at (the IPAM store is a small local file).
const TICK: Duration = Duration::from_millis(200);
/// Every this many looks the Node's annotations and condition are compared again (~10 s).
const RECHECK_TICKS: u32 = 50;
/// How long one call to the cloud may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A call to the cloud that did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CloudCallError {
    /// The cloud refused (its EC2-style code and message).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// The cloud could not be reached or answered something unreadable.
    #[error("cloud API {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// The cloud's allocation API at one `http://HOST:PORT`.
#[derive(Debug, Clone)]
pub struct CloudClient {
    authority: String,
}

impl CloudClient {
    /// Checks `url` (`vpcCloudURL`): plain `http://HOST:PORT`, nothing after.
    pub fn new(url: Option<&str>) -> Result<CloudClient> {
        let bad = |why: &str| Error::Config(format!("vpcCloudURL: {why}"));
        let url =
            url.ok_or_else(|| bad("required with backend vpc (the cloud's allocation API)"))?;
        let uri: http::Uri = url
            .parse()
            .map_err(|e| bad(&format!("{url:?} is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(&format!("{url:?}: only http://HOST:PORT is served")));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad(&format!("{url:?}: give no path")));
        }
        let authority = uri
            .authority()
            .filter(|a| a.port_u16().is_some())
            .ok_or_else(|| bad(&format!("{url:?}: give a host and port")))?;
        Ok(CloudClient {
            authority: authority.to_string(),
        })
    }

    async fn call<B: serde::Serialize>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&B>,
    ) -> std::result::Result<InstanceAddresses, CloudCallError> {
        let unreachable = |reason: String| CloudCallError::Unreachable {
            url: format!("http://{}{path}", self.authority),
            reason,
        };
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| unreachable(e.to_string()))?,
            None => Vec::new(),
        };
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, &self.authority)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| unreachable(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                return serde_json::from_slice(&bytes)
                    .map_err(|e| unreachable(format!("unreadable answer: {e}")));
            }
            match serde_json::from_slice::<CloudErrorBody>(&bytes) {
                Ok(b) => Err(CloudCallError::Refused {
                    code: b.code,
                    message: b.message,
                }),
                Err(_) => Err(unreachable(format!("HTTP {status}"))),
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer in {CALL_TIMEOUT:?}")))?
    }

    /// What this node holds.
    pub async fn describe(&self) -> std::result::Result<InstanceAddresses, CloudCallError> {
        self.call::<()>(http::Method::GET, ADDRESSES_PATH, None)
            .await
    }

    /// Takes `count` more addresses.
    pub async fn assign(
        &self,
        count: u32,
    ) -> std::result::Result<InstanceAddresses, CloudCallError> {
        self.call(
            http::Method::POST,
            ADDRESSES_PATH,
            Some(&AssignRequest { count }),
        )
        .await
    }

    /// Gives `addresses` back.
    pub async fn unassign(
        &self,
        addresses: Vec<Ipv4Addr>,
    ) -> std::result::Result<InstanceAddresses, CloudCallError> {
        self.call(
            http::Method::POST,
            UNASSIGN_PATH,
            Some(&UnassignRequest { addresses }),
        )
        .await
    }
}

/// What one look at the pool decides (pure: [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the cloud for this many more.
    Assign(u32),
    /// Take these out of the published list (to give back after [`DRAIN`]).
    Drain(Vec<Ipv4Addr>),
    /// Nothing to change.
    Hold,
}

/// The warm-pool rule: keep at least `warm` free (up to the limit), at most `2 × warm`.
pub fn decide(
    held: &BTreeSet<Ipv4Addr>,
    draining: &BTreeSet<Ipv4Addr>,
    in_use: &BTreeSet<Ipv4Addr>,
    limit: u32,
    warm: u32,
) -> Step {
    let free: Vec<Ipv4Addr> = held
        .iter()
        .filter(|a| !in_use.contains(a) && !draining.contains(a))
        .copied()
        .collect();
    let free_n = free.len() as u32;
    let held_n = held.len() as u32;
    if free_n < warm && held_n < limit {
        return Step::Assign((warm - free_n).min(limit - held_n));
    }
    if free_n > 2 * warm {
        // The highest addresses go: the pool stays packed at the low end.
        return Step::Drain(free[warm as usize..].to_vec());
    }
    Step::Hold
}

/// The condition for the pool as it stands: (status, reason, message).
pub fn condition(
    held: usize,
    in_use: usize,
    limit: u32,
    warm: u32,
    cloud: Option<&CloudCallError>,
) -> (&'static str, &'static str, String) {
    match cloud {
        Some(CloudCallError::Refused { code, message })
            if code == "InsufficientFreeAddressesInSubnet" =>
        {
            return ("False", "SubnetExhausted", message.clone());
        }
        Some(e @ CloudCallError::Unreachable { .. }) => {
            return ("False", "CloudUnreachable", e.to_string());
        }
        _ => {}
    }
    if in_use >= limit as usize {
        return (
            "False",
            "AddressLimitReached",
            format!(
                "all {limit} VPC addresses the node may hold are in use: it takes no more pods"
            ),
        );
    }
    let _ = held;
    (
        "True",
        "WarmPoolReady",
        format!("pods take VPC addresses from a warm pool of {warm} (limit {limit})"),
    )
}

/// The pool's loop, for the life of the agent.
pub struct VpcPool {
    pub nodes: Api<Node>,
    pub node: String,
    pub cloud: CloudClient,
    pub warm: u32,
    pub ipam_data_dir: PathBuf,
}

impl VpcPool {
    fn in_use(&self) -> Result<BTreeSet<Ipv4Addr>> {
        let state = sarasa_ipam::Store::new(&self.ipam_data_dir)
            .read()
            .map_err(|e| Error::Config(format!("reading the IPAM store: {e}")))?;
        Ok(state
            .allocations
            .iter()
            .flat_map(|a| a.leases.iter())
            .filter_map(|l| match l.address.addr() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    pub async fn run(self) {
        let mut known: Option<InstanceAddresses> = None;
        let mut draining: Vec<(Ipv4Addr, Instant)> = Vec::new();
        let mut reported: Option<(String, String, String)> = None;
        let mut published: Option<(String, String)> = None;
        let mut ticks: u32 = 0;
        loop {
            // Now and then the Node itself is compared again (it may have been recreated or
            // edited by someone else); in between, only a change is written.
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(RECHECK_TICKS) {
                published = None;
                reported = None;
            }
            let mut problem: Option<CloudCallError> = None;
            if known.is_none() {
                match self.cloud.describe().await {
                    Ok(k) => known = Some(k),
                    Err(e) => problem = Some(e),
                }
            }
            let in_use = match self.in_use() {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "VPC pool");
                    BTreeSet::new()
                }
            };
            if let Some(k) = known.clone() {
                let held: BTreeSet<Ipv4Addr> = k.addresses.iter().copied().collect();
                // Back to the cloud: drained addresses still unused; in use again: kept.
                let now = Instant::now();
                draining.retain(|(a, _)| held.contains(a) && !in_use.contains(a));
                let due: Vec<Ipv4Addr> = draining
                    .iter()
                    .filter(|(_, since)| now.duration_since(*since) >= DRAIN)
                    .map(|(a, _)| *a)
                    .collect();
                if !due.is_empty() {
                    match self.cloud.unassign(due.clone()).await {
                        Ok(k) => {
                            tracing::info!(addresses = ?due, "VPC addresses given back");
                            draining.retain(|(a, _)| !due.contains(a));
                            known = Some(k);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "giving VPC addresses back");
                            known = None;
                            problem = Some(e);
                        }
                    }
                }
            }
            if let Some(k) = known.clone() {
                let held: BTreeSet<Ipv4Addr> = k.addresses.iter().copied().collect();
                let drain_set: BTreeSet<Ipv4Addr> = draining.iter().map(|(a, _)| *a).collect();
                match decide(&held, &drain_set, &in_use, k.limit, self.warm) {
                    Step::Assign(n) => match self.cloud.assign(n).await {
                        Ok(k) => {
                            tracing::info!(
                                count = n,
                                held = k.addresses.len(),
                                "VPC addresses assigned"
                            );
                            known = Some(k);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "taking VPC addresses");
                            // The cloud's view is re-read before the next try.
                            known = None;
                            problem = Some(e);
                        }
                    },
                    Step::Drain(addrs) => {
                        let now = Instant::now();
                        draining.extend(addrs.into_iter().map(|a| (a, now)));
                    }
                    Step::Hold => {}
                }
            }
            if let Some(k) = &known {
                let drain_set: BTreeSet<Ipv4Addr> = draining.iter().map(|(a, _)| *a).collect();
                let list: Vec<String> = k
                    .addresses
                    .iter()
                    .filter(|a| !drain_set.contains(a))
                    .map(ToString::to_string)
                    .collect();
                let want = (list.join(","), k.limit.to_string());
                if published.as_ref() != Some(&want) && self.publish(&want).await {
                    published = Some(want);
                }
            }
            let (status, reason, message) = condition(
                known.as_ref().map_or(0, |k| k.addresses.len()),
                in_use.len(),
                known.as_ref().map_or(0, |k| k.limit),
                self.warm,
                problem.as_ref(),
            );
            let now = (status.to_string(), reason.to_string(), message.clone());
            if reported.as_ref() != Some(&now) {
                match crate::node::set_condition(
                    &self.nodes,
                    &self.node,
                    CONDITION,
                    status,
                    reason,
                    &message,
                )
                .await
                {
                    Ok(_) => reported = Some(now),
                    Err(e) => tracing::warn!(error = %e, "setting {CONDITION}"),
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Writes the node's addresses and limit on its Node; whether it took.
    async fn publish(&self, (list, limit): &(String, String)) -> bool {
        let desired = std::collections::BTreeMap::from([
            (
                ANNOTATION_VPC_ADDRESSES,
                (!list.is_empty()).then(|| list.clone()),
            ),
            (ANNOTATION_VPC_ADDRESS_LIMIT, Some(limit.clone())),
        ]);
        let current = match self.nodes.get(&self.node).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the Node to publish VPC addresses");
                return false;
            }
        };
        match crate::node::publish_annotations(&self.nodes, &current, &desired).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "publishing VPC addresses");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u8]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|i| Ipv4Addr::new(10, 244, 0, *i)).collect()
    }

    #[test]
    fn fills_the_warm_pool_up_to_the_limit() {
        let none = BTreeSet::new();
        assert_eq!(decide(&none, &none, &none, 15, 3), Step::Assign(3));
        // 4 held, 2 in use: 2 free, one more wanted.
        assert_eq!(
            decide(&set(&[4, 5, 6, 7]), &none, &set(&[4, 5]), 15, 3),
            Step::Assign(1)
        );
        // At the limit nothing more is asked for, however few are free.
        assert_eq!(
            decide(&set(&[4, 5, 6]), &none, &set(&[4, 5, 6]), 3, 3),
            Step::Hold
        );
        assert_eq!(
            decide(&set(&[4, 5, 6, 7]), &none, &set(&[4, 5, 6]), 5, 3),
            Step::Assign(1)
        );
        // Draining addresses do not count as free.
        assert_eq!(
            decide(&set(&[4, 5, 6]), &set(&[6]), &none, 15, 3),
            Step::Assign(1)
        );
    }

    #[test]
    fn gives_back_the_highest_beyond_twice_the_warm_pool() {
        let none = BTreeSet::new();
        let held = set(&[4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(
            decide(&held, &none, &none, 15, 3),
            Step::Drain(vec![
                Ipv4Addr::new(10, 244, 0, 7),
                Ipv4Addr::new(10, 244, 0, 8),
                Ipv4Addr::new(10, 244, 0, 9),
                Ipv4Addr::new(10, 244, 0, 10)
            ])
        );
        // Six free of warm 3: within the band.
        assert_eq!(
            decide(&set(&[4, 5, 6, 7, 8, 9]), &none, &none, 15, 3),
            Step::Hold
        );
    }

    #[test]
    fn the_condition_names_what_stops_pods() {
        assert_eq!(condition(3, 1, 15, 3, None).1, "WarmPoolReady");
        let full = condition(2, 2, 2, 1, None);
        assert_eq!((full.0, full.1), ("False", "AddressLimitReached"));
        let subnet = CloudCallError::Refused {
            code: "InsufficientFreeAddressesInSubnet".into(),
            message: "the VPC range 10.244.0.0/28 has no free address left".into(),
        };
        assert_eq!(condition(1, 1, 15, 3, Some(&subnet)).1, "SubnetExhausted");
        let down = CloudCallError::Unreachable {
            url: "http://192.168.33.1:8775/v1/instance/addresses".into(),
            reason: "connection refused".into(),
        };
        let c = condition(0, 0, 0, 3, Some(&down));
        assert_eq!(c.1, "CloudUnreachable");
        assert!(c.2.contains("connection refused"));
    }

    #[test]
    fn the_cloud_url_is_checked_naming_the_key() {
        assert!(CloudClient::new(Some("http://192.168.33.1:8775")).is_ok());
        for bad in [
            None,
            Some("192.168.33.1:8775"),
            Some("https://a:1"),
            Some("http://a"),
            Some("http://a:1/x"),
        ] {
            let e = CloudClient::new(bad).unwrap_err().to_string();
            assert!(e.contains("vpcCloudURL"), "{bad:?}: {e}");
        }
    }
}
