//! The fabric's top-of-rack router for `--backend bgp`: BIRD 2 (Debian's `bird2`) in the
//! fabric namespace, a route reflector for every node on the underlay (dynamic neighbours:
//! any address of the underlay may peer, so no list of nodes is configured), installing what
//! the nodes announce into the fabric's kernel table, as the ToR of a Calico cluster does.
//! Graceful restart is on: a node whose speaker restarts keeps its routes here meanwhile.
//!
//! Config, control socket, pid file and log live in the lab's state dir (`bird/`); `sarasa
//! exec fabric -- birdc ...` passes that socket to `birdc`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};

use crate::LabError;

/// The AS of the fabric and the nodes (iBGP; the agent's default `bgpASN`).
pub const ASN: u32 = 64512;

/// BIRD's control socket inside `dir`.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join("bird.ctl")
}

/// `bird.conf` for the router at `ip` on `underlay`, accepting routes inside `cluster` and
/// host routes inside `services` (the Service addresses nodes announce, MetalLB-style).
pub fn config(
    dir: &Path,
    ip: Ipv4Addr,
    underlay: Ipv4Net,
    cluster: IpNet,
    services: &[IpNet],
) -> String {
    let c = cluster.trunc();
    let hosts: String = services
        .iter()
        .map(|s| format!(", {}{{{m},{m}}}", s.trunc(), m = s.max_prefix_len()))
        .collect();
    format!(
        "log \"{log}\" all;\n\
         router id {ip};\n\
         protocol device {{ scan time 10; }}\n\
         protocol kernel {{\n\
         \x20 ipv4 {{ import none; export where source = RTS_BGP; }};\n\
         \x20 merge paths on;\n\
         }}\n\
         protocol bgp nodes {{\n\
         \x20 description \"route reflector for the nodes\";\n\
         \x20 local {ip} as {ASN};\n\
         \x20 neighbor range {underlay} as {ASN};\n\
         \x20 direct;\n\
         \x20 rr client;\n\
         \x20 hold time 3; keepalive time 1;\n\
         \x20 graceful restart on;\n\
         \x20 long lived graceful restart on; long lived stale time 3600;\n\
         \x20 ipv4 {{ import where net ~ [ {c}{{{lo},{hi}}}{hosts} ]; export all; }};\n\
         }}\n",
        log = dir.join("bird.log").display(),
        lo = c.prefix_len(),
        hi = c.max_prefix_len(),
    )
}

/// Writes the config into `dir`; returns the command line running BIRD on it in the
/// foreground (a lab daemon).
pub fn prepare(
    dir: &Path,
    ip: Ipv4Addr,
    underlay: Ipv4Net,
    cluster: IpNet,
    services: &[IpNet],
) -> Result<(PathBuf, Vec<String>), LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let conf = dir.join("bird.conf");
    std::fs::write(&conf, config(dir, ip, underlay, cluster, services))
        .map_err(|e| LabError::io(&conf, e))?;
    let bird = ["/usr/sbin/bird", "/usr/local/sbin/bird"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            LabError::Invalid(
                "bird is not installed (the fabric's BGP router for --backend bgp; run scripts/install-deps.sh)"
                    .into(),
            )
        })?;
    Ok((
        bird,
        vec![
            "-f".into(),
            "-c".into(),
            conf.display().to_string(),
            "-s".into(),
            socket(dir).display().to_string(),
            "-P".into(),
            dir.join("bird.pid").display().to_string(),
        ],
    ))
}

/// Asks BIRD to shut down in graceful-restart mode (`graceful restart` on its control socket),
/// so its peers keep its routes; best effort (the caller ends the process anyway).
pub fn graceful_shutdown(dir: &Path) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket(dir)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf);
    let _ = s.write_all(b"graceful restart\n");
    // BIRD closes the socket as it goes.
    while s.read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// Waits until BIRD answers on its control socket.
pub fn wait_answering(dir: &Path, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    let sock = socket(dir);
    loop {
        // The control protocol greets every client with "0001 BIRD <version> ready.".
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) {
            use std::io::Read;
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            if (&s)
                .read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"0001"))
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(LabError::Timeout(format!(
                "the fabric's BGP router never answered on {}",
                sock.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflects_for_the_whole_underlay_and_accepts_only_pod_routes() {
        let c = config(
            Path::new("/var/lib/sarasa/x/bird"),
            "192.168.33.1".parse().unwrap(),
            "192.168.33.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            &["198.51.100.0/24".parse().unwrap()],
        );
        assert!(
            c.contains("neighbor range 192.168.33.0/24 as 64512;"),
            "{c}"
        );
        assert!(c.contains("rr client;"), "{c}");
        assert!(
            c.contains("import where net ~ [ 10.244.0.0/16{16,32}, 198.51.100.0/24{32,32} ];"),
            "{c}"
        );
        assert!(c.contains("log \"/var/lib/sarasa/x/bird/bird.log\""), "{c}");
    }

    #[test]
    fn bird_accepts_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(
            dir.path(),
            "192.168.33.1".parse().unwrap(),
            "192.168.33.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            &["198.51.100.0/24".parse().unwrap()],
        );
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, &c).unwrap();
        let out = std::process::Command::new("bird")
            .args(["-p", "-c"])
            .arg(&path)
            .output()
            .expect("bird2 is installed (scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "{}\n{c}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
