//! Deleting stale UDP conntrack entries with conntrack-tools' `conntrack`, in the node's
//! namespace (a child of an agent running there inherits it; a test driving a namespace by path
//! goes through `nsenter --net=`).

use std::process::Command;

use sarasa_proxy::StaleUdp;

use crate::netns::NetnsTarget;

/// What one cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// `conntrack` runs that deleted something or matched nothing (both fine).
    pub ran: usize,
    /// Failures (tool missing, bad arguments), as messages naming the command.
    pub errors: Vec<String>,
}

/// The command deleting `stale`'s entries in `target`.
pub fn command(target: &NetnsTarget, stale: &StaleUdp) -> Command {
    let mut c = match target {
        NetnsTarget::Current => Command::new("conntrack"),
        NetnsTarget::Path(p) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", p.display())).arg("conntrack");
            c
        }
    };
    c.args(stale.conntrack_args());
    c
}

/// Runs the deletions (blocking: call it from a blocking task). Exit status 1 means no entry
/// matched, which is not an error.
pub fn delete_stale(target: &NetnsTarget, stale: &[StaleUdp]) -> CleanupReport {
    let mut report = CleanupReport::default();
    for s in stale {
        let mut cmd = command(target, s);
        let describe = format!("conntrack {}", s.conntrack_args().join(" "));
        match cmd.output() {
            Ok(out) if out.status.success() || out.status.code() == Some(1) => report.ran += 1,
            Ok(out) => report.errors.push(format!(
                "{describe}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => report.errors.push(format!("{describe}: {e}")),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_proxy::UdpDest;

    #[test]
    fn command_targets_the_node_namespace() {
        let stale = StaleUdp {
            dest: UdpDest::Ip {
                addr: "10.96.0.10".parse().unwrap(),
                port: 53,
            },
            endpoint: Some("10.244.1.5".parse().unwrap()),
        };
        let c = command(&NetnsTarget::Path("/run/netns/x".into()), &stale);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "nsenter");
        assert_eq!(args[0], "--net=/run/netns/x");
        assert_eq!(args[1], "conntrack");
        assert!(args.ends_with(&["--reply-src".to_string(), "10.244.1.5".to_string()]));
        assert_eq!(
            command(&NetnsTarget::Current, &stale).get_program(),
            "conntrack"
        );
    }
}
