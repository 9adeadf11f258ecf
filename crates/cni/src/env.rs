//! The `CNI_*` environment: which variables each command needs and the reference library's
//! validation rules (container id, interface name, `CNI_ARGS` pairs).

use crate::error::{CniError, INVALID_ENV};

/// A CNI command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment against `prevResult`.
    Check,
    /// Release what valid attachments do not use.
    Gc,
    /// Readiness.
    Status,
    /// Supported versions.
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The name as in `CNI_COMMAND`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// The validated environment of one invocation.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `CNI_COMMAND` as given.
    pub raw_command: String,
    /// The command, `None` when unknown (reported after the config is read, as the reference
    /// library does).
    pub command: Option<Command>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (absent or empty → `None`).
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`.
    pub path: String,
}

impl Env {
    /// The value of `CNI_ARGS` key `k`.
    pub fn arg(&self, k: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads and validates the environment through `get` (e.g. `std::env::var`).
///
/// Variables are checked in the reference order; a present-but-invalid container id or
/// interface name fails at once, missing required variables are reported together; every
/// message names the variables, as the spec requires for code 4.
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let val = |k: &str| get(k).filter(|v| !v.is_empty());
    let raw_command = val("CNI_COMMAND").unwrap_or_default();
    let command = Command::parse(&raw_command);
    use Command::*;
    let needs = |vars: &[Command]| command.is_some_and(|c| vars.contains(&c));
    let mut missing: Vec<&str> = Vec::new();
    if raw_command.is_empty() {
        missing.push("CNI_COMMAND");
    }
    let mut env = Env {
        raw_command: raw_command.clone(),
        command,
        ..Env::default()
    };
    match val("CNI_CONTAINERID") {
        Some(id) => {
            if needs(&[Add, Check, Del]) {
                validate_container_id(&id)?;
            }
            env.container_id = id;
        }
        None if needs(&[Add, Check, Del]) => missing.push("CNI_CONTAINERID"),
        None => {}
    }
    match val("CNI_NETNS") {
        Some(ns) => env.netns = Some(ns),
        None if needs(&[Add, Check]) => missing.push("CNI_NETNS"),
        None => {}
    }
    match val("CNI_IFNAME") {
        Some(ifname) => {
            if needs(&[Add, Check, Del]) {
                validate_ifname(&ifname, "CNI_IFNAME")?;
            }
            env.ifname = ifname;
        }
        None if needs(&[Add, Check, Del]) => missing.push("CNI_IFNAME"),
        None => {}
    }
    if let Some(args) = val("CNI_ARGS") {
        env.args = parse_args(&args)?;
    }
    match val("CNI_PATH") {
        Some(p) => env.path = p,
        None if needs(&[Add, Check, Del, Gc, Status]) => missing.push("CNI_PATH"),
        None => {}
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
            format!(
                "CNI_COMMAND={raw_command:?} needs {} to be set and non-empty",
                missing.join(", ")
            ),
        ));
    }
    Ok(env)
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the reference rule for container ids and network names.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    if !valid_name(id) {
        return Err(CniError::new(
            INVALID_ENV,
            "invalid characters in CNI_CONTAINERID",
            format!(
                "CNI_CONTAINERID {id:?} must start with an alphanumeric character followed by alphanumerics, '_', '.' or '-'"
            ),
        ));
    }
    Ok(())
}

/// Linux interface-name rules as the spec states them: not empty, under 16 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace. `var` names the variable or field for the message.
pub fn validate_ifname(name: &str, var: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > 15 {
        Some(format!(
            "is {} bytes long; it must be less than 16",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("is . or ..".to_string())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains / or : or whitespace characters".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::new(
            INVALID_ENV,
            format!("invalid interface name in {var}"),
            format!("{var} {name:?} {p}"),
        )),
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`.
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(
                INVALID_ENV,
                "invalid CNI_ARGS",
                format!("CNI_ARGS pair {pair:?} is not KEY=VALUE"),
            ));
        };
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| m.get(k).cloned())
    }

    const FULL: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn full_add_env() {
        let e = env(&FULL).unwrap();
        assert_eq!(e.command, Some(Command::Add));
        assert_eq!(e.netns.as_deref(), Some("/run/netns/x"));
    }

    #[test]
    fn missing_variables_are_named() {
        for skip in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ] {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != skip).collect();
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.code, INVALID_ENV, "{skip}");
            assert!(e.msg.contains(skip), "{skip}: {}", e.msg);
        }
        // empty counts as missing
        let mut pairs = FULL.to_vec();
        pairs[3] = ("CNI_IFNAME", "");
        assert!(env(&pairs).unwrap_err().msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn per_command_requirements() {
        // DEL: netns optional
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ])
        .unwrap();
        assert!(e.netns.is_none());
        // GC and STATUS need only the command and CNI_PATH
        for c in ["GC", "STATUS"] {
            env(&[("CNI_COMMAND", c), ("CNI_PATH", "/x")]).unwrap();
            let e = env(&[("CNI_COMMAND", c)]).unwrap_err();
            assert!(e.msg.contains("CNI_PATH"));
        }
        env(&[("CNI_COMMAND", "VERSION")]).unwrap();
        // unknown command: accepted here, rejected by the dispatcher
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap().command, None);
    }

    #[test]
    fn container_id_rules() {
        for bad in ["-abc", "_a", ".a", "a/b", "a b", "a:b", "ä"] {
            let mut pairs = FULL.to_vec();
            pairs[1] = ("CNI_CONTAINERID", bad);
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.code, INVALID_ENV, "{bad}");
            assert!(e.msg.contains("CNI_CONTAINERID"), "{bad}");
        }
        for good in ["a", "A-b_c.d", "0123456789abcdef"] {
            let mut pairs = FULL.to_vec();
            pairs[1] = ("CNI_CONTAINERID", good);
            env(&pairs).unwrap();
        }
    }

    #[test]
    fn ifname_rules() {
        for bad in [".", "..", "a/b", "a:b", "a b", "a\tb", "0123456789abcdef"] {
            let mut pairs = FULL.to_vec();
            pairs[3] = ("CNI_IFNAME", bad);
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.code, INVALID_ENV, "{bad:?}");
            assert!(e.msg.contains("CNI_IFNAME"));
        }
        let mut pairs = FULL.to_vec();
        pairs[3] = ("CNI_IFNAME", "0123456789abcde");
        env(&pairs).unwrap();
    }

    #[test]
    fn cni_args() {
        let mut pairs = FULL.to_vec();
        pairs.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5"));
        let e = env(&pairs).unwrap();
        assert_eq!(e.arg("IP"), Some("10.0.0.5"));
        assert_eq!(e.arg("K8S_POD_NAME"), Some("web"));
        pairs.pop();
        pairs.push(("CNI_ARGS", "novalue"));
        let e = env(&pairs).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.contains("CNI_ARGS"));
    }
}
