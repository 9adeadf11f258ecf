//! The WAN's delay (`--wan-delay`), as a delay line in user space: this kernel has neither the
//! netem qdisc nor nftables' `queue` expression, but it has `br_netfilter` and the `NFQUEUE`
//! target, so the WAN namespace hands every IPv4 packet crossing its bridge (and every one the
//! broker sends) to a queue, and a process of the set, `sarasa clusterset run-delay`, gives
//! each its verdict once the delay has passed. The kernel keeps the packets meanwhile; the
//! process sees only their ids (copy range 0). A constant delay keeps their order, so the line
//! is a FIFO. The rules carry `--queue-bypass`: with no process bound, packets cross
//! undelayed rather than being lost. The process installs the rules (and turns the namespace's
//! `bridge-nf-call-iptables` on) when it starts and takes them away (and turns it off) when it
//! is stopped; a new delay is a new process.
//!
//! Written by hand over the `nfq` crate (netfilter queue over netlink, no C library): no crate
//! delays queued packets, and the line is twenty lines of it. `nfq` does not expose its socket,
//! so the line takes packets without blocking and sleeps a tick (1 ms) between looks.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{set_dir, wan_netns};
use crate::process::{Daemon, ProcessRecord};
use crate::LabError;

/// The netfilter queue the WAN's packets wait in.
pub const QUEUE: u16 = 4242;
/// Packets the kernel keeps waiting at most (a longer line drops, as a full link would).
const QUEUE_MAX_LEN: u32 = 65_536;
/// The hooks whose IPv4 packets are delayed: frames crossing the bridge (through
/// `br_netfilter`) and what the broker, on the bridge's address, sends to the sites.
const CHAINS: [&str; 2] = ["FORWARD", "OUTPUT"];

fn pid_file(set: &str) -> PathBuf {
    set_dir(set).join("delay.pid")
}

pub fn log_file(set: &str) -> PathBuf {
    set_dir(set).join("delay.log")
}

/// The running delay line's process, if any.
pub fn running(set: &str) -> Option<ProcessRecord> {
    ProcessRecord::load(&pid_file(set)).filter(ProcessRecord::alive)
}

/// Makes the WAN's delay `delay_us`: a delay line of that delay (a new process when it
/// changes), or none at 0. Waits until the process has bound the queue.
pub fn set(set: &str, delay_us: u64, sarasa: &std::path::Path) -> Result<(), LabError> {
    stop(set)?;
    if delay_us == 0 {
        return Ok(());
    }
    let netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(wan_netns(set));
    let rec = Daemon {
        program: sarasa.to_path_buf(),
        args: vec![
            "clusterset".into(),
            "run-delay".into(),
            set.to_string(),
            "--delay-us".into(),
            delay_us.to_string(),
        ],
        env: Vec::new(),
        netns: Some(&netns),
        mounts: &[],
        log: log_file(set),
    }
    .spawn()?;
    rec.save(&pid_file(set))?;
    let ns = sarasa_netns::NetNs::open(wan_netns(set)).map_err(LabError::netns)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bound = ns
            .run(|| {
                // /proc/net is the process's namespace; a thread's is thread-self's.
                std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")
                    .map(|t| queue_bound(&t))
                    .unwrap_or(false)
            })
            .map_err(LabError::netns)?;
        let rules = ns.run(rules_present).map_err(LabError::netns)?;
        if bound && rules {
            return Ok(());
        }
        if !rec.alive() {
            return Err(LabError::Process(format!(
                "the WAN delay line of {set} exited; see {}",
                log_file(set).display()
            )));
        }
        if Instant::now() > deadline {
            let _ = stop(set);
            return Err(LabError::Timeout(format!(
                "the WAN delay line of {set} did not bind queue {QUEUE}; see {}",
                log_file(set).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `/proc/net/netfilter/nfnetlink_queue` lists [`QUEUE`] as bound (its first column).
fn queue_bound(text: &str) -> bool {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|q| q.parse::<u16>() == Ok(QUEUE))
}

/// Stops the delay line (its process takes its rules away).
pub fn stop(set: &str) -> Result<(), LabError> {
    match ProcessRecord::load(&pid_file(set)) {
        Some(rec) => {
            rec.stop(Duration::from_secs(5))?;
            let _ = std::fs::remove_file(pid_file(set));
            Ok(())
        }
        None => Ok(()),
    }
}

/// `iptables ARGS` (the WAN namespace's, the caller's); its error output when it fails.
fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn rule(chain: &str) -> Vec<String> {
    [
        chain,
        "-t",
        "mangle",
        "-j",
        "NFQUEUE",
        "--queue-num",
        &QUEUE.to_string(),
        "--queue-bypass",
    ]
    .map(String::from)
    .to_vec()
}

fn rules_present() -> bool {
    CHAINS.iter().all(|c| {
        let mut args = vec!["-C".to_string()];
        args.extend(rule(c));
        iptables(&args.iter().map(String::as_str).collect::<Vec<_>>()).is_ok()
    })
}

/// Adds (`-A`, when absent) or deletes (`-D`) the queue rules.
fn rules(add: bool) -> Result<(), String> {
    for c in CHAINS {
        let mut check = vec!["-C".to_string()];
        check.extend(rule(c));
        let check: Vec<&str> = check.iter().map(String::as_str).collect();
        let present = iptables(&check).is_ok();
        if add == present {
            continue;
        }
        let mut args = vec![if add { "-A" } else { "-D" }.to_string()];
        args.extend(rule(c));
        iptables(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .map_err(|e| format!("iptables {}: {e}", args.join(" ")))?;
    }
    Ok(())
}

/// The delay line itself (`sarasa clusterset run-delay SET --delay-us N`, in the WAN
/// namespace): binds the queue, then gives each packet its verdict `delay` after it came,
/// until SIGTERM or SIGINT; then takes its rules away.
pub fn run(set: &str, delay: Duration) -> Result<(), LabError> {
    let fail =
        |what: &str, e: std::io::Error| LabError::Process(format!("WAN delay line: {what}: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| fail("signals", e))?;
    }
    // Bridged IPv4 frames pass the IPv4 hooks (this namespace's setting).
    std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
        .map_err(|e| fail("net.bridge.bridge-nf-call-iptables", e))?;
    let mut queue = nfq::Queue::open().map_err(|e| fail("opening the queue", e))?;
    queue
        .bind(QUEUE)
        .map_err(|e| fail("binding the queue", e))?;
    queue
        .set_copy_range(QUEUE, 0)
        .map_err(|e| fail("copy range", e))?;
    queue
        .set_queue_max_len(QUEUE, QUEUE_MAX_LEN)
        .map_err(|e| fail("queue length", e))?;
    queue.set_nonblocking(true);
    rules(true).map_err(LabError::Process)?;
    tracing::info!(set, delay = ?delay, queue = QUEUE, "WAN delay line running");
    let result = delay_packets(&mut queue, delay, &stop);
    let removed = rules(false);
    // Without a line, bridged frames need not pass the IPv4 hooks (nor conntrack) again.
    let _ = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "0");
    result.map_err(|e| fail("moving packets", e))?;
    removed.map_err(LabError::Process)
}

/// How often the line looks for packets (the queue's socket is not exposed to poll on): the
/// delay is kept within this much.
const TICK: Duration = Duration::from_millis(1);

/// The line: takes what the kernel queued, releases what is due, sleeps a tick or until the
/// next is due.
fn delay_packets(
    queue: &mut nfq::Queue,
    delay: Duration,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut line: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match queue.recv() {
                Ok(msg) => line.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        while line.front().is_some_and(|(due, _)| *due <= now) {
            let (_, mut msg) = line.pop_front().expect("a front");
            msg.set_verdict(nfq::Verdict::Accept);
            queue.verdict(msg)?;
        }
        let wait = line
            .front()
            .map_or(TICK, |(due, _)| {
                due.saturating_duration_since(Instant::now())
            })
            .min(TICK);
        std::thread::sleep(wait);
    }
    // What is still waiting goes on at once.
    for (_, mut msg) in line {
        msg.set_verdict(nfq::Verdict::Accept);
        queue.verdict(msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_found_bound_by_its_number() {
        // /proc/net/netfilter/nfnetlink_queue: queue, portid, waiting, copy mode, range, ...
        assert!(queue_bound("4242  12345 0 2 0 0 0 0 1\n"));
        assert!(!queue_bound("424  12345 0 2 0 0 0 0 1\n"));
        assert!(!queue_bound(""));
    }

    #[test]
    fn the_rules_queue_with_bypass() {
        let r = rule("FORWARD").join(" ");
        assert_eq!(
            r,
            "FORWARD -t mangle -j NFQUEUE --queue-num 4242 --queue-bypass"
        );
    }
}
