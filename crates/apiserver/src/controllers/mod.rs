//! Controllers running inside the server: each is a task fed by the store's change history and
//! reconciling level-triggered (a full pass at start, after a history gap and when it asks for a
//! requeue; otherwise only what the changes touched).

pub mod daemonsets;
pub mod deployments;
pub mod endpointslices;
pub mod events;
pub mod gc;
pub mod namespaces;
pub mod nodefit;
pub mod nodes;
pub mod scheduler;
pub mod serviceaccounts;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::resources::ResId;
use crate::store::{Event, Store};

/// One controller.
pub trait Controller: Send + 'static {
    fn name(&self) -> &'static str;
    /// Resources whose changes wake it.
    fn watches(&self) -> &'static [ResId];
    /// Reconciles after `events` (`None`: everything). Returns when to run a full pass again.
    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration>;
}

/// Spawns every controller.
pub fn spawn_all(store: Arc<Store>) -> Vec<JoinHandle<()>> {
    let mut all = vec![
        spawn(store.clone(), namespaces::Namespaces),
        spawn(store.clone(), nodes::NodeIpam),
        spawn(store.clone(), scheduler::Scheduler),
        spawn(store.clone(), deployments::Deployments),
        spawn(store.clone(), daemonsets::DaemonSets),
        spawn(store.clone(), services::LoadBalancers),
        spawn(store.clone(), endpointslices::EndpointSlices::default()),
        spawn(store.clone(), events::EventExpiry),
        spawn(store.clone(), gc::GarbageCollector),
    ];
    // ServiceAccounts and the root CA come with token authentication.
    if let Some(a) = &store.config.authentication {
        let root_ca = a
            .root_ca_file
            .as_ref()
            .and_then(|p| match std::fs::read_to_string(p) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(
                        "root CA file {}: {e}; kube-root-ca.crt is not published",
                        p.display()
                    );
                    None
                }
            });
        all.push(spawn(store, serviceaccounts::ServiceAccounts { root_ca }));
    }
    all
}

pub fn spawn(store: Arc<Store>, c: impl Controller) -> JoinHandle<()> {
    tokio::spawn(run(store, c))
}

/// Runs one reconcile on the blocking pool (reconciles are synchronous and may take a while on
/// big objects; the async workers keep serving requests meanwhile).
async fn reconcile<C: Controller>(
    store: &Arc<Store>,
    c: C,
    events: Option<Vec<Event>>,
) -> Option<(C, Option<Duration>)> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = c;
        let r = c.reconcile(&store, events.as_deref());
        (c, r)
    })
    .await
    .ok()
}

async fn run(store: Arc<Store>, c: impl Controller) {
    let mut rx = store.subscribe();
    let mut since = store.rv();
    let watches = c.watches();
    let name = c.name();
    let at = |d: Option<Duration>| d.map(|d| Instant::now() + d);
    let Some((mut c, first)) = reconcile(&store, c, None).await else {
        tracing::error!("controller {name} panicked");
        return;
    };
    let mut deadline = at(first);
    loop {
        if store.is_closed() {
            return;
        }
        let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let full = tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            _ = tokio::time::sleep_until(wake), if deadline.is_some() => true,
        };
        if store.is_closed() {
            return;
        }
        let (events, full) = match store.changes_since(since, |e| watches.contains(&e.res)) {
            Ok((events, up_to)) => {
                since = up_to;
                if !full && events.is_empty() {
                    continue;
                }
                (events, full)
            }
            Err(_) => {
                tracing::debug!("{name}: history gap, full resync");
                since = store.rv();
                (Vec::new(), true)
            }
        };
        let Some((next_c, r)) = reconcile(&store, c, (!full).then_some(events)).await else {
            tracing::error!("controller {name} panicked");
            return;
        };
        c = next_c;
        match (full, at(r)) {
            (true, next) => deadline = next,
            // A full pass asked for earlier stays asked for.
            (false, Some(next)) => deadline = Some(deadline.map_or(next, |d| d.min(next))),
            (false, None) => {}
        }
    }
}
