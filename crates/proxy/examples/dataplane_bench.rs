//! Data-plane benchmark helper: new-connection latency through sarasa's nftables Service
//! table versus the same Services in kube-proxy's iptables layout. Prints figures; asserts
//! nothing. Driven by `scripts/bench-services-dataplane.sh`, which makes the namespaces.
//!
//! ```text
//! dataplane_bench gen N DIR            # DIR/sarasa.nft (nft -f; all of sarasa's tables,
//!                                      # replacing any earlier ones) and DIR/iptables.rules
//!                                      # (iptables-restore); prints POS=ClusterIP:port for
//!                                      # POS first, middle, last
//! dataplane_bench serve ADDR:PORT      # accept-and-close TCP server (runs until killed)
//! dataplane_bench measure COUNT WARMUP LABEL POS=IP:PORT...
//!                                      # COUNT timed connect()s per target after WARMUP
//!                                      # untimed ones; prints "LABEL POS micros" lines
//! dataplane_bench report FILE          # p50/p99 table from the samples of `measure`
//! dataplane_bench machine              # nproc, CPU model, kernel, load average
//! ```
//!
//! Every Service `s{i}` is TCP port 80 on ClusterIP `10.{96+hi}.{mid}.{lo}` (inside
//! 10.96.0.0/12) with two endpoints, 10.77.1.2:8080 and 10.77.1.3:8080, so one server
//! namespace answers for all of them. "first", "middle" and "last" are Services 0, N/2 and
//! N-1: their position in kube-proxy's linear KUBE-SERVICES chain.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sarasa_model::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, NodeInfo, Protocol, Service, ServicePort,
};
use sarasa_nft::diff_kernel;
use sarasa_proxy::{compile, ProxyConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const ENDPOINTS: [&str; 2] = ["10.77.1.2", "10.77.1.3"];
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;

fn cluster_ip(i: usize) -> IpAddr {
    let (hi, mid, lo) = ((i / 250) / 256, (i / 250) % 256, i % 250 + 1);
    format!("10.{}.{mid}.{lo}", 96 + hi)
        .parse()
        .expect("generated IP")
}

fn positions(n: usize) -> [(&'static str, usize); 3] {
    [("first", 0), ("middle", n / 2), ("last", n - 1)]
}

fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("s{i}");
        services.push(Service {
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: SERVICE_PORT,
                node_port: None,
                target_port: None,
            }],
            ..Service::cluster_ip("default", &name, vec![cluster_ip(i)])
        });
        slices.push(EndpointSlice {
            namespace: "default".into(),
            name: format!("{name}-1"),
            service_name: name,
            address_type: AddressType::Ipv4,
            source_cluster: None,
            endpoints: ENDPOINTS
                .iter()
                .map(|a| Endpoint::ready(a.parse().expect("constant IP"), Some("node-1")))
                .collect(),
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: TARGET_PORT,
            }],
        });
    }
    (services, slices)
}

/// The same Services in kube-proxy's iptables layout (nat table): a linear KUBE-SERVICES
/// list, one KUBE-SVC chain per Service choosing an endpoint with `statistic`, one KUBE-SEP
/// chain per endpoint doing the DNAT.
fn iptables_rules(n: usize) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    let cluster_cidr = "10.244.0.0/16";
    chains.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    let mut svc_rules = String::new();
    for i in 0..n {
        let ip = cluster_ip(i);
        let svc = format!("KUBE-SVC-{i:016X}");
        let comment = format!("default/s{i}:http");
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{comment} cluster IP\" -m tcp --dport {SERVICE_PORT} -j {svc}"
        );
        let _ = writeln!(
            svc_rules,
            "-A {svc} ! -s {cluster_cidr} -d {ip}/32 -p tcp -m comment --comment \"{comment} cluster IP\" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ"
        );
        for (e, ep) in ENDPOINTS.iter().enumerate() {
            let sep = format!("KUBE-SEP-{i:014X}{e:02X}");
            let _ = writeln!(chains, ":{sep} - [0:0]");
            if e + 1 < ENDPOINTS.len() {
                let _ = writeln!(
                    svc_rules,
                    "-A {svc} -m comment --comment \"{comment} -> {ep}:{TARGET_PORT}\" -m statistic --mode random --probability 0.50000000000 -j {sep}"
                );
            } else {
                let _ = writeln!(
                    svc_rules,
                    "-A {svc} -m comment --comment \"{comment} -> {ep}:{TARGET_PORT}\" -j {sep}"
                );
            }
            let _ = writeln!(
                svc_rules,
                "-A {sep} -s {ep}/32 -m comment --comment \"{comment}\" -j KUBE-MARK-MASQ\n\
                 -A {sep} -p tcp -m comment --comment \"{comment}\" -m tcp -j DNAT --to-destination {ep}:{TARGET_PORT}"
            );
        }
    }
    chains + &rules + &svc_rules + "COMMIT\n"
}

fn gen(n: usize, dir: &str) -> Res<()> {
    if n == 0 {
        return Err("N must be at least 1".into());
    }
    let (services, slices) = objects(n);
    let node = NodeInfo {
        name: "node-1".into(),
        addresses: vec!["10.244.1.1".parse()?],
        pod_cidrs: vec!["10.244.1.0/24".parse()?],
    };
    let st = compile(ProxyConfig::default(), node, &services, &slices)?;
    // One transaction: delete our tables if present (`add` first so that `delete` cannot
    // fail; this nft has no `destroy`), then create them all. Loading a size after another
    // leaves no shard table of the earlier one behind.
    let mut script = String::new();
    for name in st.config().table_names() {
        let _ = writeln!(script, "add table inet {name}\ndelete table inet {name}");
    }
    for t in st.tables() {
        script.push_str(&diff_kernel(None, &t).script());
    }
    std::fs::write(format!("{dir}/sarasa.nft"), script)?;
    std::fs::write(format!("{dir}/iptables.rules"), iptables_rules(n))?;
    for (pos, i) in positions(n) {
        println!("{pos}={}:{SERVICE_PORT}", cluster_ip(i));
    }
    Ok(())
}

fn serve(addr: &str) -> Res<()> {
    let listener = TcpListener::bind(addr)?;
    for conn in listener.incoming() {
        // Accept and close: only the handshake is measured.
        drop(conn);
    }
    Ok(())
}

fn measure(count: usize, warmup: usize, label: &str, targets: &[String]) -> Res<()> {
    let targets: Vec<(&str, SocketAddr)> = targets
        .iter()
        .map(|t| {
            let (pos, addr) = t
                .split_once('=')
                .ok_or_else(|| format!("target {t:?}: expected POS=IP:PORT"))?;
            let addr = addr.parse().map_err(|e| format!("target {t:?}: {e}"))?;
            Ok::<_, String>((pos, addr))
        })
        .collect::<Result<_, _>>()?;
    let timeout = Duration::from_secs(3);
    let mut out = String::new();
    let mut failures = 0usize;
    for (_, t) in &targets {
        for _ in 0..warmup {
            let _ = TcpStream::connect_timeout(t, timeout);
        }
    }
    // Round-robin over the targets so drift in machine load weighs on all of them alike.
    for _ in 0..count {
        for (pos, t) in &targets {
            let start = Instant::now();
            match TcpStream::connect_timeout(t, timeout) {
                Ok(s) => {
                    let us = start.elapsed().as_secs_f64() * 1e6;
                    drop(s);
                    let _ = writeln!(out, "{label} {pos} {us:.1}");
                }
                Err(_) => failures += 1,
            }
        }
    }
    print!("{out}");
    if failures > 0 {
        eprintln!("{label}: {failures} failed connects (not counted)");
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Samples file lines: `N DATAPATH POSITION MICROS` (`measure` output with LABEL "N DATAPATH").
fn report(file: &str) -> Res<()> {
    let text = std::fs::read_to_string(file)?;
    let mut samples: BTreeMap<(usize, String, String), Vec<f64>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            continue;
        }
        let n: usize = f[0].parse()?;
        let us: f64 = f[3].parse()?;
        samples
            .entry((n, f[1].to_string(), f[2].to_string()))
            .or_default()
            .push(us);
    }
    /// Per position: p50, p99, sample count.
    type Row = BTreeMap<String, (f64, f64, usize)>;
    let mut rows: BTreeMap<(usize, String), Row> = BTreeMap::new();
    for ((n, dp, pos), mut v) in samples {
        v.sort_by(|a, b| a.total_cmp(b));
        let stats = (percentile(&v, 0.5), percentile(&v, 0.99), v.len());
        rows.entry((n, dp)).or_default().insert(pos, stats);
    }
    println!(
        "{:>7} {:<9} {:>17} {:>17} {:>17} {:>13} {:>8}",
        "N",
        "datapath",
        "first p50/p99 µs",
        "middle p50/p99 µs",
        "last p50/p99 µs",
        "last/first",
        "samples"
    );
    for ((n, dp), pos) in rows {
        let cell = |p: &str| {
            pos.get(p)
                .map_or("-".to_string(), |(a, b, _)| format!("{a:.0}/{b:.0}"))
        };
        let ratio = match (pos.get("first"), pos.get("last")) {
            (Some(f), Some(l)) => format!("{:.2} (p99 {:.2})", l.0 / f.0, l.1 / f.1),
            _ => "-".into(),
        };
        let count = pos.values().map(|s| s.2).min().unwrap_or(0);
        println!(
            "{n:>7} {dp:<9} {:>17} {:>17} {:>17} {ratio:>13} {count:>8}",
            cell("first"),
            cell("middle"),
            cell("last")
        );
    }
    Ok(())
}

fn machine() {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: nproc={nproc}, CPU: {cpu}, kernel {}, loadavg {}",
        kernel.trim(),
        load.trim()
    );
}

fn usage() -> Box<dyn std::error::Error> {
    "usage: dataplane_bench gen N DIR | serve ADDR:PORT | measure COUNT WARMUP LABEL POS=IP:PORT... | report FILE | machine".into()
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 3 => gen(args[1].parse()?, &args[2]),
        Some("serve") if args.len() == 2 => serve(&args[1]),
        Some("measure") if args.len() >= 5 => {
            measure(args[1].parse()?, args[2].parse()?, &args[3], &args[4..])
        }
        Some("report") if args.len() == 2 => report(&args[1]),
        Some("machine") => {
            machine();
            Ok(())
        }
        _ => Err(usage()),
    }
}
