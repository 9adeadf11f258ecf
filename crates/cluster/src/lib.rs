//! The cluster view every consumer shares: the node agent, `sarasa policy matrix`, `sarasa
//! trace` and the cluster DNS server.
//!
//! Watchers ([`watch`]) fold each watch event into small per-kind projections ([`state`],
//! [`objects`]): only the fields the datapath compilers use, converted once into their domain
//! types when the event arrives, kept in a [`store::ProjectedStore`]. The kinds the compilers
//! consume are journaled ([`service_objects`], [`policy_objects`]): a reconcile takes a
//! [`Delta`] of what changed and feeds it to a [`Consumer`] (the service proxy, the policy
//! compiler), handing back what it could not program. A one-shot [`list_view`] folds a list of
//! every kind through the same projections for the CLI ([`ClusterView`]).

pub mod client_config;
pub mod journal;
pub mod objects;
pub mod policy_objects;
pub mod service_objects;
pub mod state;
pub mod store;
pub mod view;
pub mod watch;

pub use journal::{Consumer, Converted, Delta, DeltaItem, Fed, Rejected};
pub use policy_objects::{build_policy_state, PolicyDelta};
pub use service_objects::ServiceDelta;
pub use state::{ClusterState, NodeInfo, PodInfo};
pub use view::{list_objects, list_view, ClusterError, ClusterObjects, ClusterView};
