//! Egress masquerade in sarasa's own nftables table (`inet sarasa-node`; the service proxy owns
//! `inet sarasa`). The whole table is replaced in one `nft -f -` transaction
//! (`add; delete; define`), which is atomic and leaves conntrack (established NAT flows) alone.
//! Kept as plain text in this one module so it can move onto the typed model of `crates/nft`.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::netns::{run_in, NetnsTarget};
use crate::plan::Masquerade;

pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "sarasa-node";

/// Drops CIDRs covered by another one (nft rejects overlapping intervals in a set).
fn collapse(cidrs: &[IpNet]) -> Vec<IpNet> {
    let mut sorted: Vec<IpNet> = cidrs.iter().map(|c| c.trunc()).collect();
    sorted.sort_by_key(|c| (c.prefix_len(), *c));
    sorted.dedup();
    let mut out: Vec<IpNet> = Vec::new();
    for c in sorted {
        if !out.iter().any(|o| o.contains(&c)) {
            out.push(c);
        }
    }
    out.sort();
    out
}

fn set_of(cidrs: &[IpNet]) -> String {
    let items: Vec<String> = collapse(cidrs).iter().map(|c| c.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The nft script that (re)defines the table atomically.
pub fn render(m: &Masquerade) -> String {
    let mut rules = Vec::new();
    for (family, multicast, is_v4) in [("ip", "224.0.0.0/4", true), ("ip6", "ff00::/8", false)] {
        let pods: Vec<IpNet> = m
            .pod_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == is_v4)
            .copied()
            .collect();
        if pods.is_empty() {
            continue;
        }
        let cluster: Vec<IpNet> = m
            .cluster_cidrs
            .iter()
            .chain(m.pod_cidrs.iter())
            .filter(|c| c.addr().is_ipv4() == is_v4)
            .copied()
            .collect();
        rules.push(format!(
            "\t\t{family} saddr {} {family} daddr != {} {family} daddr != {multicast} counter masquerade fully-random",
            set_of(&pods),
            set_of(&cluster),
        ));
    }
    let mut out = format!(
        "add table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n\
         table {TABLE_FAMILY} {TABLE_NAME} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for r in rules {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    out
}

/// The script that removes the table (if present).
pub fn render_delete() -> String {
    format!("add table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n")
}

/// Pipes `script` to `nft -f -` in the target namespace.
pub async fn run_nft(target: &NetnsTarget, script: String) -> Result<()> {
    run_in(target, move || nft_blocking(&script)).await
}

fn nft_blocking(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::Nft(format!("writing script: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(format!(
            "nft -f - failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Applies the masquerade plan.
pub async fn apply(target: &NetnsTarget, m: &Masquerade) -> Result<()> {
    run_nft(target, render(m)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_atomic_replace_of_own_table() {
        let m = Masquerade {
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        };
        let expected = "add table inet sarasa-node\n\
delete table inet sarasa-node\n\
table inet sarasa-node {\n\
\tchain postrouting {\n\
\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
\t\tip saddr { 10.244.1.0/24 } ip daddr != { 10.244.0.0/16 } ip daddr != 224.0.0.0/4 counter masquerade fully-random\n\
\t}\n\
}\n";
        assert_eq!(render(&m), expected);
    }

    #[test]
    fn dual_stack_gets_an_ip6_rule() {
        let m = Masquerade {
            pod_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        };
        let s = render(&m);
        assert!(s.contains("ip6 saddr { fd00:10:244:1::/64 } ip6 daddr != { fd00:10:244:1::/64 }"));
    }
}
