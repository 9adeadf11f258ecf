//! One module per CNI command; shared helpers for opening the pod namespace.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod rebuild;
pub mod status;

use sarasa_netns::{Error as NsError, NetNs};

use crate::error::{CniError, INVALID_ENV, IO_FAILURE, UNKNOWN_CONTAINER};
use crate::version;

/// The VERSION answer.
pub fn version() -> String {
    serde_json::json!({
        "cniVersion": version::LATEST,
        "supportedVersions": version::SUPPORTED,
    })
    .to_string()
}

/// Opens `CNI_NETNS`: code 3 when it does not exist, 4 when it is not a network namespace
/// or is the plugin's own.
pub fn open_pod_netns(path: &str) -> Result<NetNs, CniError> {
    let ns = NetNs::open(path).map_err(|e| match &e {
        NsError::NotNetNs(_) => CniError::new(
            INVALID_ENV,
            "invalid CNI_NETNS",
            format!("CNI_NETNS {path:?} is not a network namespace"),
        ),
        e if e.is_not_found() => CniError::new(
            UNKNOWN_CONTAINER,
            "container network namespace does not exist",
            format!("CNI_NETNS {path:?}: {e}"),
        ),
        e => CniError::new(IO_FAILURE, "cannot open CNI_NETNS", e.to_string()),
    })?;
    let own = NetNs::current()?;
    if ns.id()? == own.id()? {
        return Err(CniError::new(
            INVALID_ENV,
            "invalid CNI_NETNS",
            format!("CNI_NETNS {path:?} is the plugin's own network namespace"),
        ));
    }
    Ok(ns)
}
