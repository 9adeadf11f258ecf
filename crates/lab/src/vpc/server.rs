//! The cloud's allocation API over HTTP, and the VPC's routes: every change is written to
//! `vpc.json` and routed in the fabric before it is answered, so an address a node was given
//! already reaches it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use ipnet::Ipv4Net;
use sarasa_model::vpc::{
    AssignRequest, CloudErrorBody, InstanceAddresses, UnassignRequest, ADDRESSES_PATH, CLOUD_PORT,
    UNASSIGN_PATH,
};
use sarasa_netns::Netlink;
use tokio::sync::Mutex;

use super::pool::{CloudError, Pool};
use super::VpcSpec;
use crate::spec::LabSpec;
use crate::LabError;

/// How often the VPC's routes are compared with what it assigned, and repaired.
pub const REPAIR_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// The IP TTL of the cloud's answers: one hop, the node's own.
pub const HOP_LIMIT: u32 = 1;

/// Metric marking the fabric's routes the VPC owns (one /32 per assigned address).
pub const VPC_ROUTE_METRIC: u32 = 1035;

struct Cloud {
    spec: LabSpec,
    vpc: VpcSpec,
    file: PathBuf,
    pool: Mutex<Pool>,
}

/// Serves the API until the process ends; routes what `file` holds first.
pub async fn run(spec: LabSpec, vpc: VpcSpec, file: PathBuf) -> Result<(), LabError> {
    let pool: Pool = crate::state::read_json(&file)?.unwrap_or_default();
    let routes = desired_routes(&spec, &pool);
    tokio::task::spawn_blocking(move || apply_routes(&routes))
        .await
        .map_err(|e| LabError::Process(format!("VPC routes: {e}")))??;
    let addr = SocketAddr::from((spec.fabric_ip, CLOUD_PORT));
    let cloud = Arc::new(Cloud {
        spec,
        vpc,
        file,
        pool: Mutex::new(pool),
    });
    // A periodic pass puts back a route removed behind the cloud's back.
    let repair = Arc::clone(&cloud);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REPAIR_PERIOD).await;
            let pool = repair.pool.lock().await;
            let routes = desired_routes(&repair.spec, &pool);
            let applied = tokio::task::spawn_blocking(move || apply_routes(&routes)).await;
            drop(pool);
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("VPC routes: {e}"),
                Err(e) => tracing::warn!("VPC routes: {e}"),
            }
        }
    });
    let app = Router::new()
        .route(ADDRESSES_PATH, get(describe).post(assign))
        .route(UNASSIGN_PATH, post(unassign))
        .with_state(cloud);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| LabError::Api(format!("cloud API: listening on {addr}: {e}")))?;
    // Answers leave with a hop limit of 1, as IMDSv2's PUT response does on EC2: they reach
    // a node on the underlay, but not a pod behind it (the node would have to forward them,
    // and drops them instead), so a pod cannot act as its node towards the cloud even
    // though its connections leave masqueraded to the node's address.
    listener
        .set_ttl(HOP_LIMIT)
        .map_err(|e| LabError::Api(format!("cloud API: hop limit: {e}")))?;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_ttl(HOP_LIMIT) {
            tracing::warn!("cloud API: hop limit of a connection: {e}");
        }
    });
    tracing::info!(%addr, "cloud VPC allocation API");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| LabError::Api(format!("cloud API: {e}")))
}

/// One /32 per assigned address, via its node's underlay address.
pub fn desired_routes(spec: &LabSpec, pool: &Pool) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    pool.routes()
        .into_iter()
        .filter_map(|(a, node)| Some((Ipv4Net::from(a), spec.node(&node)?.ip)))
        .collect()
}

fn apply_routes(routes: &BTreeMap<Ipv4Net, Ipv4Addr>) -> Result<(), LabError> {
    let mut nl = Netlink::current().map_err(LabError::netns)?;
    crate::fabric_routes::apply(&mut nl, routes, VPC_ROUTE_METRIC)
}

/// A refusal as the cloud answers it.
struct Refusal(StatusCode, CloudError);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = CloudErrorBody {
            code: self.1.code().into(),
            message: self.1.to_string(),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<CloudError> for Refusal {
    fn from(e: CloudError) -> Self {
        let status = match e {
            CloudError::UnauthorizedOperation(_) => StatusCode::FORBIDDEN,
            CloudError::InvalidParameterValue(_) => StatusCode::BAD_REQUEST,
            CloudError::AddressLimitExceeded { .. }
            | CloudError::InsufficientFreeAddressesInSubnet { .. } => StatusCode::CONFLICT,
        };
        Refusal(status, e)
    }
}

fn internal(e: LabError) -> Refusal {
    tracing::warn!("cloud API: {e}");
    Refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        CloudError::InvalidParameterValue(format!("the cloud failed: {e}")),
    )
}

impl Cloud {
    /// The node calling from `peer`.
    fn caller(&self, peer: SocketAddr) -> Result<String, Refusal> {
        self.spec
            .nodes
            .iter()
            .find(|n| IpAddr::V4(n.ip) == peer.ip())
            .map(|n| n.name.clone())
            .ok_or_else(|| CloudError::UnauthorizedOperation(peer.ip().to_string()).into())
    }

    fn answer(&self, node: &str, pool: &Pool) -> Json<InstanceAddresses> {
        Json(InstanceAddresses {
            node: node.into(),
            addresses: pool.held(node).into_iter().collect(),
            limit: self.vpc.address_limit,
        })
    }

    /// Makes `next` the pool: persisted, then routed; on failure nothing changes.
    async fn commit(&self, pool: &mut Pool, next: Pool) -> Result<(), Refusal> {
        crate::state::write_json_atomic(&self.file, &next).map_err(internal)?;
        let routes = desired_routes(&self.spec, &next);
        let routed = tokio::task::spawn_blocking(move || apply_routes(&routes))
            .await
            .map_err(|e| internal(LabError::Process(e.to_string())))?;
        if let Err(e) = routed {
            // Put the file back as it was; the routes are retried with the next change.
            let _ = crate::state::write_json_atomic(&self.file, &*pool);
            return Err(internal(e));
        }
        *pool = next;
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| CloudError::InvalidParameterValue(format!("request body: {e}")).into())
}

async fn describe(
    State(cloud): State<Arc<Cloud>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<InstanceAddresses>, Refusal> {
    let node = cloud.caller(peer)?;
    let pool = cloud.pool.lock().await;
    Ok(cloud.answer(&node, &pool))
}

async fn assign(
    State(cloud): State<Arc<Cloud>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<InstanceAddresses>, Refusal> {
    let node = cloud.caller(peer)?;
    let req: AssignRequest = parse(&body)?;
    let (limit, range) = (cloud.vpc.address_limit, cloud.spec.cluster_cidr);
    change(&cloud, node, "assigned", |pool, node| {
        pool.assign(node, req.count, limit, range)
    })
    .await
}

async fn unassign(
    State(cloud): State<Arc<Cloud>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<InstanceAddresses>, Refusal> {
    let node = cloud.caller(peer)?;
    let req: UnassignRequest = parse(&body)?;
    change(&cloud, node, "unassigned", |pool, node| {
        pool.unassign(node, &req.addresses)
            .map(|()| req.addresses.clone())
    })
    .await
}

/// One change of `node`'s addresses: `f` on a copy of the pool, committed (persisted,
/// routed) only when it succeeds; answers what the node then holds.
async fn change(
    cloud: &Cloud,
    node: String,
    what: &str,
    f: impl FnOnce(&mut Pool, &str) -> Result<Vec<Ipv4Addr>, CloudError>,
) -> Result<Json<InstanceAddresses>, Refusal> {
    let mut pool = cloud.pool.lock().await;
    let mut next = pool.clone();
    let changed = f(&mut next, &node)?;
    cloud.commit(&mut pool, next).await?;
    tracing::info!(%node, addresses = ?changed, "VPC addresses {what}");
    Ok(cloud.answer(&node, &pool))
}
