//! The BGP backend's speaker: one BIRD 2 (Debian's `bird2`) per node, configured and
//! supervised by the agent, as calico-node runs BIRD beside Felix.
//!
//! The agent renders `bird.conf` from what it knows — this node's podCIDRs (announced, as a
//! blackhole route in BIRD's own table only), the cluster CIDRs (the only prefixes accepted
//! from peers), the peers (the top-of-rack router, a route reflector) and the AS number — and
//! starts BIRD on it, or has the running one reload it (`birdc configure`). BIRD installs the
//! routes it learns into the node's main table (protocol `bird`); the agent writes none.
//!
//! BIRD runs detached from the agent (its own session, no inherited descriptors), so an agent
//! that restarts or is killed leaves the sessions and routes alone: the next agent finds BIRD
//! on its control socket and only reloads the configuration — an agent restart withdraws
//! nothing. Graceful restart (RFC 4724) is on in both directions, so a restarting BIRD keeps
//! its kernel routes and its peers keep its announcements while it comes back.
//!
//! The peers' states are read with `birdc show protocols` and reported on the Node as the
//! condition [`CONDITION`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ipnet::IpNet;

use crate::error::{Error, Result};

/// The Node condition with the BGP sessions' state.
pub const CONDITION: &str = "BGPPeersEstablished";

/// Timers for a lab where convergence is measured in a second: keepalive 1 s, hold 3 s, retry
/// a failed connection after 1 s.
const HOLD_TIME: u32 = 3;
const KEEPALIVE_TIME: u32 = 1;
const CONNECT_RETRY_TIME: u32 = 1;
/// Seconds before a session that ended in an error is tried again, doubling up to
/// [`ERROR_WAIT_MAX`] (BIRD's defaults, 60 and 300 s, would leave a fixed peer unused for a
/// minute).
const ERROR_WAIT_MIN: u32 = 1;
const ERROR_WAIT_MAX: u32 = 10;
/// How long peers keep a restarting speaker's routes (RFC 4724's restart time), and then as
/// long-lived stale routes (RFC 9494), so a router down for maintenance takes nothing away.
const RESTART_TIME: u32 = 120;
pub const LONG_LIVED_STALE_TIME: u32 = 3600;

/// What the speaker's configuration is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    pub router_id: Ipv4Addr,
    /// This node's underlay address (the session's source).
    pub local: IpAddr,
    pub asn: u32,
    /// Peers, all in `asn` (iBGP to route reflectors).
    pub peers: Vec<IpAddr>,
    /// This node's podCIDRs, announced.
    pub pod_cidrs: Vec<IpNet>,
    /// Service addresses this node announces (MetalLB's BGP mode:
    /// [`crate::bgp_services::announcements`]).
    pub service_ips: Vec<IpNet>,
    /// The only prefixes accepted from peers (and only longer ones than these).
    pub cluster_cidrs: Vec<IpNet>,
    /// BIRD's log file.
    pub log: PathBuf,
}

/// A prefix set literal of `cidrs` and everything inside them, for one family.
fn prefix_set(cidrs: &[IpNet], v4: bool) -> Option<String> {
    let items: Vec<String> = cidrs
        .iter()
        .filter(|c| c.addr().is_ipv4() == v4)
        .map(|c| {
            let c = c.trunc();
            format!("{c}{{{},{}}}", c.prefix_len(), c.max_prefix_len())
        })
        .collect();
    (!items.is_empty()).then(|| format!("[ {} ]", items.join(", ")))
}

/// Renders `bird.conf`.
pub fn render(c: &BirdConfig) -> String {
    let mut out = format!(
        "# Written by the sarasa agent; changes are overwritten.\n\
         log \"{log}\" all;\n\
         router id {rid};\n\
         protocol device {{ scan time 10; }}\n",
        log = c.log.display(),
        rid = c.router_id,
    );
    // One family: the sessions' (the underlay's). podCIDRs of the other family would need
    // extended next hops, which this backend does not do.
    {
        let v4 = c.local.is_ipv4();
        let fam = if v4 { "ipv4" } else { "ipv6" };
        let sfx = if v4 { "4" } else { "6" };
        let cidrs: Vec<&IpNet> = c
            .pod_cidrs
            .iter()
            .filter(|p| p.addr().is_ipv4() == v4)
            .collect();
        let Some(accept) = prefix_set(&c.cluster_cidrs, v4) else {
            return out;
        };
        // Learned routes go to the kernel; the announced blackholes never do.
        out.push_str(&format!(
            "protocol kernel kernel{sfx} {{\n\
             \x20 {fam} {{ import none; export where source = RTS_BGP; }};\n\
             \x20 merge paths on;\n\
             \x20 graceful restart on;\n\
             }}\n"
        ));
        out.push_str(&format!("protocol static pods{sfx} {{\n  {fam};\n"));
        for p in &cidrs {
            out.push_str(&format!("  route {} blackhole;\n", p.trunc()));
        }
        out.push_str("}\n");
        out.push_str(&format!("protocol static services{sfx} {{\n  {fam};\n"));
        for p in c.service_ips.iter().filter(|p| p.addr().is_ipv4() == v4) {
            out.push_str(&format!("  route {} blackhole;\n", p.trunc()));
        }
        out.push_str("}\n");
        for (i, peer) in c.peers.iter().filter(|p| p.is_ipv4() == v4).enumerate() {
            out.push_str(&format!(
                "protocol bgp peer{i}_{sfx} {{\n\
                 \x20 description \"{peer}\";\n\
                 \x20 local {local} as {asn};\n\
                 \x20 neighbor {peer} as {asn};\n\
                 \x20 direct;\n\
                 \x20 hold time {HOLD_TIME}; keepalive time {KEEPALIVE_TIME};\n\
                 \x20 connect delay time 0; connect retry time {CONNECT_RETRY_TIME};\n\
                 \x20 error wait time {ERROR_WAIT_MIN}, {ERROR_WAIT_MAX};\n\
                 \x20 graceful restart on; graceful restart time {RESTART_TIME};\n\
                 \x20 long lived graceful restart on; long lived stale time {LONG_LIVED_STALE_TIME};\n\
                 \x20 {fam} {{\n\
                 \x20   import where net ~ {accept};\n\
                 \x20   export where proto = \"pods{sfx}\" || proto = \"services{sfx}\";\n\
                 \x20   next hop self;\n\
                 \x20 }};\n\
                 }}\n",
                local = c.local,
                asn = c.asn,
            ));
        }
    }
    out
}

/// One BGP session as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    /// BIRD's protocol state (`up`, `start`, `down`).
    pub state: String,
    /// The BGP state and any error (`Established`, `Active  Socket: Connection refused`).
    pub info: String,
}

impl Session {
    pub fn established(&self) -> bool {
        self.state == "up" && self.info.starts_with("Established")
    }
}

/// Parses `birdc show protocols`: the BGP rows.
pub fn parse_protocols(text: &str) -> Vec<Session> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // Name Proto Table State Since(1-2 words) Info...
            if cols.len() < 5 || cols[1] != "BGP" {
                return None;
            }
            let info_at = if cols.get(5).is_some_and(|c| c.contains(':')) {
                6
            } else {
                5
            };
            Some(Session {
                name: cols[0].to_string(),
                state: cols[3].to_string(),
                info: cols.get(info_at..).unwrap_or_default().join(" "),
            })
        })
        .collect()
}

/// The condition's (status, reason, message) for `sessions`.
pub fn condition(sessions: &[Session]) -> (&'static str, &'static str, String) {
    let line = |s: &Session| format!("{} {} ({})", s.name, s.state, s.info.trim());
    let down: Vec<String> = sessions
        .iter()
        .filter(|s| !s.established())
        .map(line)
        .collect();
    // A NOTIFICATION ended the session, sent by the peer ("Received: Bad peer AS") or by this
    // speaker ("BGP Error: Bad peer AS"), whichever saw the other's OPEN first: a
    // misconfiguration, and BIRD 2 ends graceful restart on it (no RFC 8538), so what the
    // peer announced is gone.
    let refused: Vec<String> = sessions
        .iter()
        .filter(|s| {
            !s.established() && (s.info.contains("Received:") || s.info.contains("BGP Error:"))
        })
        .map(line)
        .collect();
    if !refused.is_empty() {
        return (
            "False",
            "PeerRefused",
            format!(
                "session refused with a BGP error: {}; the routes BGP learned are withdrawn (an error \
                 ends graceful restart) and the node keeps routing with the agent's own routes \
                 (metric {}); fix the peer's or this node's BGP configuration",
                refused.join(", "),
                crate::datapath::BGP_FALLBACK_METRIC
            ),
        );
    }
    if sessions.is_empty() {
        ("False", "NoPeers", "no BGP session is configured".into())
    } else if down.is_empty() {
        (
            "True",
            "AllEstablished",
            format!("{} BGP session(s) established", sessions.len()),
        )
    } else {
        (
            "False",
            "PeerDown",
            format!(
                "not established: {}; learned routes are kept for up to {} s (graceful restart)",
                down.join(", "),
                RESTART_TIME + LONG_LIVED_STALE_TIME
            ),
        )
    }
}

/// BIRD on this node: its files live in `dir` (a hostPath, so a restarted agent finds them).
pub struct Speaker {
    dir: PathBuf,
    rendered: Option<String>,
}

impl Speaker {
    pub fn new(dir: &Path) -> Speaker {
        Speaker {
            dir: dir.to_path_buf(),
            rendered: None,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("bird.log")
    }

    /// Runs `birdc` on the control socket; Err when BIRD does not answer.
    async fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::Bgp(format!("running birdc (is bird2 installed?): {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("Unable to connect to server") {
            return Err(Error::Bgp(format!(
                "BIRD does not answer on {}: {}{}",
                self.socket().display(),
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(text)
    }

    /// Makes BIRD run `config`: writes it, then has the running BIRD reload it, or starts
    /// BIRD (in graceful-restart recovery, `-R`, so its kernel routes are taken over, not
    /// flushed). Does nothing when the configuration is what BIRD already runs.
    pub async fn ensure(&mut self, config: &BirdConfig) -> Result<()> {
        let text = render(config);
        // Unchanged since it was last applied: nothing to ask BIRD (the session poll that
        // follows finds a BIRD that stopped answering, and [`Speaker::sessions`] then forgets
        // the configuration so the next call starts it again).
        if self.rendered.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let running = self.birdc(&["show", "status"]).await.is_ok();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::Bgp(format!("creating {}: {e}", self.dir.display())))?;
        let tmp = self.dir.join("bird.conf.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, self.conf()))
            .map_err(|e| Error::Bgp(format!("writing {}: {e}", self.conf().display())))?;
        let conf = self.conf().display().to_string();
        if running {
            let said = self.birdc(&["configure", &format!("\"{conf}\"")]).await?;
            if !said.contains("Reconfigur") {
                return Err(Error::Bgp(format!("BIRD refused {conf}: {}", said.trim())));
            }
            tracing::info!(config = %conf, "BIRD reconfigured");
        } else {
            self.start(&conf).await?;
        }
        self.rendered = Some(text);
        Ok(())
    }

    /// Starts BIRD detached (it daemonizes into its own session; no descriptor of the
    /// agent's goes with it), then waits for its control socket.
    async fn start(&self, conf: &str) -> Result<()> {
        let sock = self.socket();
        let _ = std::fs::remove_file(&sock);
        let out = tokio::process::Command::new("bird")
            .args(["-R", "-c", conf, "-s"])
            .arg(&sock)
            .arg("-P")
            .arg(self.dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| Error::Bgp(format!("starting bird (is bird2 installed?): {e}")))?;
        if !out.status.success() {
            return Err(Error::Bgp(format!(
                "bird refused {conf}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if self.birdc(&["show", "status"]).await.is_ok() {
                tracing::info!(config = %conf, "BIRD started");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Bgp(format!(
                    "BIRD started but never answered on {}",
                    sock.display()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The BGP sessions' states.
    pub async fn sessions(&mut self) -> Result<Vec<Session>> {
        match self.birdc(&["show", "protocols"]).await {
            Ok(text) => Ok(parse_protocols(&text)),
            Err(e) => {
                self.rendered = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BirdConfig {
        BirdConfig {
            router_id: "192.168.33.11".parse().unwrap(),
            local: "192.168.33.11".parse().unwrap(),
            asn: 64512,
            peers: vec!["192.168.33.1".parse().unwrap()],
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            service_ips: vec!["198.51.100.1/32".parse().unwrap()],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            log: "/var/lib/sarasa/bird/bird.log".into(),
        }
    }

    #[test]
    fn announces_the_pod_cidr_and_accepts_only_the_cluster_cidrs() {
        let c = render(&config());
        assert!(c.contains("route 10.244.1.0/24 blackhole;"), "{c}");
        assert!(c.contains("route 198.51.100.1/32 blackhole;"), "{c}");
        assert!(
            c.contains(r#"export where proto = "pods4" || proto = "services4";"#),
            "{c}"
        );
        assert!(
            c.contains("import where net ~ [ 10.244.0.0/16{16,32} ];"),
            "{c}"
        );
        assert!(c.contains("neighbor 192.168.33.1 as 64512;"), "{c}");
        assert!(c.contains("export where source = RTS_BGP;"), "{c}");
        assert!(c.contains("graceful restart on;"), "{c}");
        // No IPv6 part without IPv6 cluster CIDRs.
        assert!(!c.contains("ipv6"), "{c}");
    }

    #[test]
    fn bird_accepts_the_rendered_config() {
        // `bird -p` parses a configuration and exits: the real parser, when bird2 is here.
        if std::process::Command::new("bird")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("bird2 is not installed (scripts/install-deps.sh installs it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.log = dir.path().join("bird.log");
        // A dual-stack cluster: the IPv6 podCIDR is left out over an IPv4 underlay.
        cfg.pod_cidrs.push("fd00:10:244:1::/64".parse().unwrap());
        cfg.cluster_cidrs.push("fd00:10:244::/56".parse().unwrap());
        assert!(!render(&cfg).contains("fd00"));
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, render(&cfg)).unwrap();
        let out = std::process::Command::new("bird")
            .args(["-p", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            render(&cfg)
        );
    }

    #[test]
    fn protocols_are_parsed_and_judged() {
        let text = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            device1    Device     ---        up     05:43:01.462  \n\
            peer0_4    BGP        ---        up     05:43:13.845  Established   \n\
            peer1_4    BGP        ---        start  05:43:09.314  Active        Socket: Connection refused\n";
        let s = parse_protocols(text);
        assert_eq!(s.len(), 2);
        assert!(s[0].established());
        assert!(!s[1].established());
        assert_eq!(s[1].info, "Active Socket: Connection refused");
        let (status, reason, msg) = condition(&s);
        assert_eq!((status, reason), ("False", "PeerDown"));
        assert!(msg.contains("peer1_4 start"), "{msg}");
        assert_eq!(condition(&s[..1]).0, "True");
        let bad = parse_protocols(
            "peer0_4    BGP        ---        start  09:06:24.383  Idle          Received: Bad peer AS\n",
        );
        let (status, reason, msg) = condition(&bad);
        assert_eq!((status, reason), ("False", "PeerRefused"));
        assert!(
            msg.contains("Bad peer AS") && msg.contains("withdrawn"),
            "{msg}"
        );
        assert!(msg.contains("keeps routing"), "{msg}");
        // This speaker may be the one that saw the bad OPEN first.
        let sent = parse_protocols(
            "peer0_4    BGP        ---        start  09:06:24.383  Idle          BGP Error: Bad peer AS\n",
        );
        assert_eq!(condition(&sent).1, "PeerRefused");
    }
}
