//! Network namespaces and synchronous netlink, shared by the CNI plugin, the lab and tests.
//!
//! - [`NetNs`]: create/open/delete named namespaces (`ip netns` compatible), run a closure
//!   inside one on a dedicated thread, spawn processes inside one ([`CommandExt::netns`]).
//! - [`Netlink`]: an rtnetlink socket opened in a given namespace, with links (veth, bridge, vxlan), addresses, routes (with their protocol number), neighbours and
//!   FDB entries. No async runtime; the CNI plugin, the lab and the agent share it.
//! - [`sysctl`]: `/proc/sys` reads and writes for the calling thread's namespace.
//!
//! Nothing here touches a namespace the caller did not name: the calling thread never changes
//! namespace.

mod error;
mod netlink;
mod ns;
pub mod sysctl;
mod vxlan;

pub use error::{Error, Result};
pub use netlink::{
    Address, Family, Link, Neighbour, Netlink, Route, Scope, Veth, IP6_DEFAULT_METRIC, TABLE_MAIN,
};
pub use ns::{enter_in_child, CommandExt, NetNs, NETNS_RUN_DIR};
pub use vxlan::{Fdb, VxlanInfo, VxlanSpec};

/// The packet crate, for callers that need [`Netlink::request`] with messages not wrapped here.
pub use netlink_packet_route as packet;
