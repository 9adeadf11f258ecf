//! Controllers running inside the server: each is a task fed by the store's change history and
//! reconciling level-triggered (a full pass at start, after a history gap and when it asks for a
//! requeue; otherwise only what the changes touched).

pub mod daemonsets;
pub mod deployments;
pub mod endpointslices;
pub mod events;
pub mod gc;
pub mod mcs;
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

use crate::metrics::Metrics;
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

/// Spawns every controller, each supervised: restarted with backoff after a panic.
pub fn spawn_all(store: Arc<Store>, metrics: Arc<Metrics>) -> Vec<JoinHandle<()>> {
    let m = &metrics;
    let mut all = vec![
        spawn(store.clone(), m.clone(), || namespaces::Namespaces),
        spawn(store.clone(), m.clone(), || nodes::NodeIpam),
        spawn(store.clone(), m.clone(), || scheduler::Scheduler),
        spawn(store.clone(), m.clone(), || deployments::Deployments),
        spawn(store.clone(), m.clone(), || daemonsets::DaemonSets),
        spawn(store.clone(), m.clone(), || services::LoadBalancers),
        spawn(
            store.clone(),
            m.clone(),
            endpointslices::EndpointSlices::default,
        ),
        spawn(store.clone(), m.clone(), mcs::ServiceExports::default),
        spawn(store.clone(), m.clone(), || events::EventExpiry),
        spawn(store.clone(), m.clone(), || gc::GarbageCollector),
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
        all.push(spawn(store, metrics, move || {
            serviceaccounts::ServiceAccounts {
                root_ca: root_ca.clone(),
            }
        }));
    }
    all
}

/// Spawns the controller `make` builds, supervised: when a reconcile panics the panic is
/// logged and counted (`sarasa_controller_restarts_total`), and after a backoff (doubling from
/// [`crate::Config::controller_restart_backoff`]'s first value up to its second, reset after a
/// run longer than the cap) a fresh controller from `make` starts over with a full pass.
pub fn spawn<C: Controller>(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    make: impl Fn() -> C + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(supervise(store, metrics, make))
}

async fn supervise<C: Controller>(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    make: impl Fn() -> C + Send + 'static,
) {
    let (first, cap) = store.config.controller_restart_backoff;
    let mut backoff = first;
    loop {
        let c = make();
        let name = c.name();
        let started = Instant::now();
        let Err(panic) = run(&store, c).await else {
            return;
        };
        if store.is_closed() {
            return;
        }
        if started.elapsed() > cap {
            backoff = first;
        }
        metrics.controller_restarted(name);
        tracing::error!(
            "controller {name} panicked: {panic}; restarting in {} ms",
            backoff.as_millis()
        );
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(cap);
    }
}

/// A reconcile panicked; the message of the panic.
struct Panicked(String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn panic_message(e: tokio::task::JoinError) -> Panicked {
    if !e.is_panic() {
        return Panicked(e.to_string());
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    Panicked(msg)
}

/// Runs one reconcile on the blocking pool (reconciles are synchronous and may take a while on
/// big objects; the async workers keep serving requests meanwhile).
async fn reconcile<C: Controller>(
    store: &Arc<Store>,
    c: C,
    events: Option<Vec<Event>>,
) -> Result<(C, Option<Duration>), Panicked> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = c;
        let r = c.reconcile(&store, events.as_deref());
        (c, r)
    })
    .await
    .map_err(panic_message)
}

/// Runs a controller until the store closes (`Ok`) or a reconcile panics.
async fn run(store: &Arc<Store>, c: impl Controller) -> Result<(), Panicked> {
    let mut rx = store.subscribe();
    let mut since = store.rv();
    let watches = c.watches();
    let name = c.name();
    let at = |d: Option<Duration>| d.map(|d| Instant::now() + d);
    let (mut c, first) = reconcile(store, c, None).await?;
    let mut deadline = at(first);
    loop {
        if store.is_closed() {
            return Ok(());
        }
        let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let full = tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                false
            }
            _ = tokio::time::sleep_until(wake), if deadline.is_some() => true,
        };
        if store.is_closed() {
            return Ok(());
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
        let (next_c, r) = reconcile(store, c, (!full).then_some(events)).await?;
        c = next_c;
        match (full, at(r)) {
            (true, next) => deadline = next,
            // A full pass asked for earlier stays asked for.
            (false, Some(next)) => deadline = Some(deadline.map_or(next, |d| d.min(next))),
            (false, None) => {}
        }
    }
}
