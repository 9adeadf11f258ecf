//! CNI errors: the spec's well-known codes, plugin codes (≥ 100), and the JSON printed on
//! stdout when a command fails.

use serde::Serialize;

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in network configuration (message names key and value).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables (message names them).
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content.
pub const DECODING_FAILURE: u32 = 6;
/// Invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot service ADD.
pub const NOT_AVAILABLE: u32 = 50;
/// STATUS: not available and existing containers may have limited connectivity.
pub const LIMITED_CONNECTIVITY: u32 = 51;

/// Plugin-specific: a kernel (netlink, sysctl) operation failed.
pub const PLUMBING_FAILURE: u32 = 100;
/// Plugin-specific: a range set has no free address.
pub const ADDRESS_EXHAUSTED: u32 = 101;
/// Plugin-specific: a requested address is unavailable, or the attachment already holds one.
pub const ADDRESS_UNAVAILABLE: u32 = 102;
/// Plugin-specific: the container interface already exists.
pub const INTERFACE_EXISTS: u32 = 103;
/// Plugin-specific: CHECK found the attachment not as `prevResult` describes it.
pub const CHECK_FAILED: u32 = 104;
/// Plugin-specific: a requested `hostPort` is already mapped on this node.
pub const HOST_PORT_IN_USE: u32 = 105;

/// A CNI error as printed on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The protocol version of the output (the config's when known).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Error code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer description.
    pub details: String,
}

impl CniError {
    /// An error with `code`, message and details (version filled in by the caller).
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            cni_version: crate::version::LATEST.to_string(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 7 with a message naming the problem.
    pub fn config(msg: impl Into<String>) -> CniError {
        let m = msg.into();
        CniError::new(INVALID_CONFIG, "invalid network config", m)
    }

    /// Code 100: a kernel operation failed.
    pub fn plumbing(what: impl Into<String>) -> CniError {
        CniError::new(PLUMBING_FAILURE, "network plumbing failed", what)
    }

    /// Sets the protocol version the error is reported in.
    pub fn with_version(mut self, v: &str) -> CniError {
        self.cni_version = v.to_string();
        self
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{}","code":{},"msg":"error","details":""}}"#,
                self.cni_version, self.code
            )
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}: {}", self.code, self.msg, self.details)
    }
}

impl From<sarasa_netns::Error> for CniError {
    fn from(e: sarasa_netns::Error) -> Self {
        let code = match e.errno() {
            Some(libc::EAGAIN | libc::EBUSY) => TRY_AGAIN_LATER,
            _ => PLUMBING_FAILURE,
        };
        CniError::new(code, "network plumbing failed", e.to_string())
    }
}

impl From<sarasa_ipam::Error> for CniError {
    fn from(e: sarasa_ipam::Error) -> Self {
        use sarasa_ipam::Error as E;
        let (code, msg) = match &e {
            E::InvalidConfig(_) => (INVALID_CONFIG, "invalid ipam config"),
            E::Exhausted { .. } => (ADDRESS_EXHAUSTED, "no free address"),
            E::AlreadyAllocated { .. } | E::Unavailable { .. } => {
                (ADDRESS_UNAVAILABLE, "address unavailable")
            }
            E::HostPortInUse { .. } => (HOST_PORT_IN_USE, "hostPort in use"),
            E::Io { .. } => (IO_FAILURE, "ipam store i/o failure"),
            E::Corrupt { .. } => (DECODING_FAILURE, "ipam store corrupt"),
            E::NeedsRebuild { .. } => (TRY_AGAIN_LATER, "ipam store being rebuilt"),
        };
        CniError::new(code, msg, e.to_string())
    }
}
