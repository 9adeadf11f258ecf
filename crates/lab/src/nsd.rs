//! The internet's name server: the lab's external host runs NSD (NLnet Labs' authoritative
//! server, Debian's `nsd`) in the foreground, serving a small zone so pods resolve "names on
//! the internet" through the cluster DNS, which forwards to the nodes' resolver — this server.
//! Config, zone, pid file and database live under the lab's state dir (`nsd/`); the process is
//! a lab daemon like the external HTTP server, stopped by `lab down`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sarasa_netns::NetNs;

use crate::LabError;

/// The zone the external host serves.
pub const ZONE: &str = "example.com";

/// The zone file: the external HTTP server by name (`www`, and `web` as a CNAME to it), an
/// IPv6 address, text and mail records, so each common type is on the wire.
pub fn zone_file(external_ip: Ipv4Addr) -> String {
    format!(
        "$ORIGIN {ZONE}.\n\
         $TTL 300\n\
         @     SOA   ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 900 604800 60\n\
         @     NS    ns1\n\
         @     A     {external_ip}\n\
         @     MX    10 mail\n\
         @     TXT   \"v=spf1 -all\"\n\
         ns1   A     {external_ip}\n\
         www   A     {external_ip}\n\
         www   AAAA  2001:db8::10\n\
         web   CNAME www\n\
         mail  A     203.0.113.25\n\
         info  TXT   \"sarasa lab internet\"\n"
    )
}

/// `nsd.conf` for a server on `ip:53` whose files all live in `dir` (no chroot, no privilege
/// drop, no control socket: one lab, one foreground process).
pub fn config(dir: &Path, ip: Ipv4Addr) -> String {
    let d = dir.display();
    format!(
        "server:\n\
         \x20 ip-address: {ip}\n\
         \x20 port: 53\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 zonesdir: \"{d}\"\n\
         \x20 database: \"{d}/nsd.db\"\n\
         \x20 pidfile: \"{d}/nsd.pid\"\n\
         \x20 xfrdfile: \"{d}/xfrd.state\"\n\
         \x20 xfrdir: \"{d}\"\n\
         \x20 zonelistfile: \"{d}/zone.list\"\n\
         \x20 server-count: 1\n\
         \x20 hide-version: yes\n\
         \x20 verbosity: 1\n\
         remote-control:\n\
         \x20 control-enable: no\n\
         zone:\n\
         \x20 name: {ZONE}\n\
         \x20 zonefile: {ZONE}.zone\n"
    )
}

/// Writes the config and zone into `dir`; returns the command line that runs NSD on them in
/// the foreground.
pub fn prepare(dir: &Path, ip: Ipv4Addr) -> Result<(PathBuf, Vec<String>), LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let zone = dir.join(format!("{ZONE}.zone"));
    std::fs::write(&zone, zone_file(ip)).map_err(|e| LabError::io(&zone, e))?;
    let conf = dir.join("nsd.conf");
    std::fs::write(&conf, config(dir, ip)).map_err(|e| LabError::io(&conf, e))?;
    let nsd = find_nsd()?;
    Ok((
        nsd,
        vec!["-d".into(), "-c".into(), conf.display().to_string()],
    ))
}

fn find_nsd() -> Result<PathBuf, LabError> {
    ["/usr/sbin/nsd", "/usr/local/sbin/nsd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            LabError::Invalid(
                "nsd is not installed (the lab's external name server; run scripts/install-deps.sh)"
                    .into(),
            )
        })
}

/// Waits until the server at `ip:53` inside `netns` answers the zone's SOA.
pub fn wait_answering(netns: &str, ip: Ipv4Addr, timeout: Duration) -> Result<(), LabError> {
    let ns = NetNs::open(netns).map_err(LabError::netns)?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match ns.run(|| soa_query(SocketAddr::from((ip, 53)))) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(e) => return Err(LabError::netns(e)),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(LabError::Timeout(format!(
        "the external name server (NSD on {ip}:53) never answered: {last}"
    )))
}

/// One SOA query for the zone over UDP; Ok when a NOERROR answer with our id comes back.
fn soa_query(server: SocketAddr) -> Result<(), String> {
    let sock = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let id: u16 = 0x5a5a;
    let query = encode_query(id, ZONE, 6);
    sock.send_to(&query, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
    let reply = &buf[..n];
    if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id {
        return Err("a reply that is not ours".into());
    }
    match reply[3] & 0x0f {
        0 if reply[2] & 0x80 != 0 => Ok(()),
        rcode => Err(format!("rcode {rcode}")),
    }
}

/// A standard query (RD clear) for `name`/`qtype` in class IN.
fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_every_file_in_the_state_dir() {
        let c = config(
            Path::new("/var/lib/sarasa/x/nsd"),
            "203.0.113.10".parse().unwrap(),
        );
        for key in ["database", "pidfile", "xfrdfile", "zonelistfile"] {
            let line = c.lines().find(|l| l.trim_start().starts_with(key)).unwrap();
            assert!(line.contains("\"/var/lib/sarasa/x/nsd/"), "{line}");
        }
        assert!(c.contains("ip-address: 203.0.113.10\n"));
        assert!(c.contains("control-enable: no"));
    }

    #[test]
    fn zone_names_the_external_server() {
        let z = zone_file("203.0.113.10".parse().unwrap());
        assert!(z.contains("www   A     203.0.113.10"));
        for t in ["SOA", "NS", "AAAA", "MX", "TXT", "CNAME"] {
            assert!(
                z.lines().any(|l| l.split_whitespace().nth(1) == Some(t)),
                "{t}"
            );
        }
    }

    #[test]
    fn query_encoding() {
        let q = encode_query(7, "example.com", 6);
        assert_eq!(&q[..4], &[0, 7, 0, 0]);
        assert_eq!(&q[12..], b"\x07example\x03com\x00\x00\x06\x00\x01");
    }
}
