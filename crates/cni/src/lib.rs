//! `sarasa-cni`, a CNI 1.1 plugin with built-in IPAM.
//!
//! [`run`] is the whole protocol: read `CNI_*` from the environment and the config from stdin,
//! validate both the way the spec and the reference library do, run the command, and return
//! what goes to stdout (a result, or an error JSON) with the exit code.
//!
//! Modules: [`env`] (variables and their rules), [`config`] (stdin config), [`version`],
//! [`result`] (result per spec version), [`error`] (codes), [`naming`] (host veth names),
//! [`plumbing`] (veth, bridge, routed), [`commands`] (ADD, DEL, CHECK, GC, STATUS, VERSION).

//! ## Decisions
//! - **Error codes**: the spec's 1–7, 11, 50, 51; plugin codes 100 plumbing, 101 range set
//!   exhausted, 102 address unavailable / already held, 103 interface exists, 104 CHECK
//!   mismatch. Env rules follow the reference `skel` (CNI_PATH required for ADD, CHECK, DEL,
//!   GC, STATUS), with messages that name the variables as the spec requires. A cniVersion
//!   that is not `major.minor.patch` is code 6, a valid but unsupported one code 1.
//! - **Host veth names**: `sa` + 3 hex of the network name + 10 hex of (container id, ifname):
//!   DEL and GC need no state, and GC of one network never touches another's veths.
//! - **Bridge mode**: the bridge is node infrastructure (like cni0): created on first use
//!   with a MAC fixed from the gateway (pods' neighbour entries survive port changes), kept
//!   when the last pod leaves.
//! - **Routed mode**: pod gets /32 and /128, default via 169.254.1.1 (onlink) and fe80::1;
//!   the host veth has proxy_arp and proxy_ndp (+ a proxy entry for fe80::1). The pod also
//!   pins 169.254.1.1 to the host veth's MAC, because proxy ARP only answers for targets the
//!   node can route and a node need not have a default route.
//! - **IPv6**: no DAD on pod addresses or on the pod's / host veth's link-local address, so
//!   the first packets are not lost while addresses are tentative.
//! - **Rollback**: deleting the host end removes the pair with every route, neighbour and
//!   proxy entry on it; the allocation is released last.

pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod log;
pub mod naming;
pub mod plumbing;
pub mod port_mappings;
pub mod reap;
pub mod result;
pub mod version;
pub mod vpc;

use std::io::Read;

use env::Command;
use error::{CniError, INVALID_ENV, IO_FAILURE};
use version::Version;

/// What the process prints and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout (may be empty).
    pub stdout: String,
    /// Process exit code.
    pub exit_code: i32,
}

/// Runs one invocation.
pub fn run(getenv: impl Fn(&str) -> Option<String>, stdin: &mut dyn Read) -> Outcome {
    let mut version_for_errors = version::LATEST.to_string();
    let result = dispatch(&getenv, stdin, &mut version_for_errors);
    match result {
        Ok(out) => Outcome {
            stdout: out,
            exit_code: 0,
        },
        Err(e) => {
            let e = e.with_version(&version_for_errors);
            log::error(&e.to_string());
            Outcome {
                stdout: e.to_json(),
                exit_code: 1,
            }
        }
    }
}

fn dispatch(
    getenv: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    version_for_errors: &mut String,
) -> Result<String, CniError> {
    let env = match env::parse(getenv) {
        Ok(e) => e,
        Err(e) => {
            if getenv("CNI_COMMAND").unwrap_or_default().is_empty() {
                eprintln!(
                    "sarasa-cni: CNI plugin (spec {}); CNI protocol versions supported: {}",
                    version::LATEST,
                    version::SUPPORTED.join(", ")
                );
            }
            return Err(e);
        }
    };
    if env.command == Some(Command::Version) {
        return Ok(commands::version());
    }
    let mut input = Vec::new();
    stdin.read_to_end(&mut input).map_err(|e| {
        CniError::new(
            IO_FAILURE,
            "failed to read network config from stdin",
            e.to_string(),
        )
    })?;
    let cfg_version = config::precheck(&input)?;
    if let Some(v) = &cfg_version {
        if version::SUPPORTED.contains(&v.as_str()) {
            *version_for_errors = v.clone();
        }
    }
    let Some(command) = env.command else {
        return Err(CniError::new(
            INVALID_ENV,
            format!("unknown CNI_COMMAND: {}", env.raw_command),
            "CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION",
        ));
    };
    let floor = match command {
        Command::Check => Version(0, 4, 0),
        Command::Gc | Command::Status => Version(1, 1, 0),
        _ => Version(0, 0, 0),
    };
    version::check(cfg_version.as_deref(), command.name(), floor)?;
    let conf = config::decode(&input)?;
    log::init(conf.log_file.as_deref());
    let plugin = conf.validate(&env.args)?;
    match command {
        Command::Add => commands::add::run(&env, &plugin),
        Command::Del => commands::del::run(&env, &plugin).map(|_| String::new()),
        Command::Check => commands::check::run(&env, &plugin).map(|_| String::new()),
        Command::Gc => commands::gc::run(&plugin).map(|_| String::new()),
        Command::Status => commands::status::run(&plugin).map(|_| String::new()),
        Command::Version => Ok(commands::version()),
    }
}
