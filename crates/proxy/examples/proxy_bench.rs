//! Control-plane benchmark of the service proxy compiler. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p sarasa-proxy --example proxy_bench                 # 10k and 100k Services
//! cargo run --release -p sarasa-proxy --example proxy_bench -- 50000        # chosen sizes
//! cargo run --release -p sarasa-proxy --example proxy_bench -- --netns /run/netns/NAME 10000
//! cargo run --release -p sarasa-proxy --example proxy_bench -- --shards 64 100000  # not 16
//! ```
//! With `--netns`, the rulesets (main table and shard tables) are also programmed with `nft` in
//! that (existing, test-made) namespace: full program time (one table at a time), then
//! change-to-programmed times (state update + apply, all tables' parts of one change as one
//! transaction): EndpointSlice changes with the `nft` tool and with the netlink backend, and
//! endpoint loss/return (main table + shard) with the netlink backend.
//!
//! `--write DIR` writes, per size, `DIR/N-commands.nft` (the first-program script) and
//! `DIR/N-block.nft` (the rendered tables): each one file holding all tables, main first, then
//! the shards in order; either loads with `nft -f` into a namespace without those tables.
//! It also writes each table alone as `DIR/N-<table>.nft` (`nft_bench` input; with
//! `--shards 1`, `N-sarasa-svc00.nft` holds every Service's DNAT path in one table).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sarasa_model::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, NodeInfo, Protocol, Service, ServicePort,
};
use sarasa_nft::{diff, diff_kernel, Backend, NftCli, Transaction};
use sarasa_proxy::{compile, ProxyConfig, ProxyState, Update};

fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let (hi, mid, lo) = ((i / 250) / 256, (i / 250) % 256, i % 250 + 1);
        let ip =
            |a: usize| -> IpAddr { format!("10.{a}.{mid}.{lo}").parse().expect("generated IP") };
        let name = format!("s{i}");
        services.push(Service {
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                target_port: None,
            }],
            ..Service::cluster_ip("default", &name, vec![ip(96 + hi)])
        });
        slices.push(EndpointSlice {
            namespace: "default".into(),
            name: format!("{name}-1"),
            service_name: name,
            address_type: AddressType::Ipv4,
            source_cluster: None,
            endpoints: vec![
                Endpoint::ready(ip(200 + hi), Some("node-1")),
                Endpoint::ready(ip(220 + hi), Some("node-2")),
            ],
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        });
    }
    (services, slices)
}

fn machine() -> String {
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
    format!("nproc={nproc}, CPU: {cpu}")
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut sizes = Vec::new();
    let mut netns = None;
    let mut write: Option<String> = None;
    let mut config = ProxyConfig::default();
    while let Some(a) = args.next() {
        if a == "--write" {
            write = Some(args.next().ok_or("--write needs a directory")?);
        } else if a == "--shards" {
            let v = args.next().ok_or("--shards needs a number")?;
            config.shards = v.parse().map_err(|e| format!("--shards {v:?}: {e}"))?;
        } else if a == "--netns" {
            netns = Some(args.next().ok_or("--netns needs a path")?);
        } else {
            sizes.push(a.parse::<usize>().map_err(|e| format!("size {a:?}: {e}"))?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000];
    }
    println!("sarasa-proxy bench on {}", machine());
    let node = NodeInfo {
        name: "node-1".into(),
        addresses: vec!["192.168.33.11".parse()?],
        pod_cidrs: vec!["10.244.1.0/24".parse()?],
    };
    for n in sizes {
        let (services, slices) = objects(n);
        let before_state = rss_mb();
        let t = Instant::now();
        let mut st = compile(config.clone(), node.clone(), &services, &slices)?;
        let mut compile_time = t.elapsed();
        let state_mb = rss_mb() - before_state;
        // The state's own maps and keys, with the objects shared as in the agent (`Arc`s from
        // its watch store); measured while `st` lives, so that no freed memory is reused.
        let shared_mb = {
            let svcs: Vec<Arc<Service>> = services.iter().cloned().map(Arc::new).collect();
            let sls: Vec<Arc<EndpointSlice>> = slices.iter().cloned().map(Arc::new).collect();
            let before = rss_mb();
            let mut st = ProxyState::new(config.clone(), node.clone())?;
            for s in &sls {
                st.upsert_endpoint_slice(s.clone());
            }
            for s in &svcs {
                st.upsert_service(s.clone());
            }
            rss_mb() - before
        };
        // One table at a time, as the agent programs them (bounded memory).
        let t = Instant::now();
        let mut chains = 0;
        let mut largest = 0;
        for i in 0..st.config().shards {
            let t = st.shard_table(i);
            chains += t.chains.len();
            largest = largest.max(t.chains.len());
        }
        chains += st.main_table().chains.len();
        compile_time += t.elapsed();
        let state_rss = peak_rss_mb();

        // One EndpointSlice change (an endpoint replaced), many times over distinct Services.
        let rounds = 200.min(n);
        let mut change_times = Vec::with_capacity(rounds);
        let mut commands = 0;
        for r in 0..rounds {
            let mut s = slices[(r * 7919) % n].clone();
            s.endpoints[1] = Endpoint::ready(
                format!("10.250.{}.{}", r / 250, r % 250 + 1).parse()?,
                Some("node-3"),
            );
            let t = Instant::now();
            let u = st.upsert_endpoint_slice(s);
            change_times.push(t.elapsed());
            commands = u.ops();
        }
        // Full-table diffs of the same kind of change, for comparison.
        let before = st.tables();
        let mut s = slices[n / 2].clone();
        s.endpoints.pop();
        st.upsert_endpoint_slice(s);
        let after = st.tables();
        let t = Instant::now();
        let full: usize = before
            .iter()
            .zip(&after)
            .map(|(b, a)| diff(b, a).commands.len())
            .sum();
        let full_diff_time = t.elapsed();
        drop(before);
        let t = Instant::now();
        let programs: Vec<Transaction> = after.iter().map(|t| diff_kernel(None, t)).collect();
        let script: String = programs.iter().map(Transaction::script).collect();
        let render_time = t.elapsed();

        println!(
            "--- {n} Services x 2 endpoints ({chains} chains in {} tables, largest shard {largest})",
            after.len()
        );
        println!("compile (all, to Tables)       {}", ms(compile_time));
        println!("proxy state (objects)          {state_mb:.0} MB RSS");
        println!("proxy state (objects shared)   {shared_mb:.0} MB RSS (own maps and keys)");
        println!(
            "peak RSS after compile         {state_rss:.0} MB (inputs + state + one built Table)"
        );
        println!(
            "one EndpointSlice change       p50 {}  p99 {}  ({} nft commands)",
            ms(percentile(&mut change_times, 0.5)),
            ms(percentile(&mut change_times, 0.99)),
            commands
        );
        println!(
            "full-table diffs (same change) {}  ({} commands)",
            ms(full_diff_time),
            full
        );
        println!(
            "first-program script           {}  ({:.1} MB, {} commands)",
            ms(render_time),
            script.len() as f64 / 1e6,
            programs.iter().map(|p| p.commands.len()).sum::<usize>()
        );
        println!("peak RSS so far                {:.0} MB", peak_rss_mb());
        if let Some(dir) = &write {
            std::fs::write(format!("{dir}/{n}-commands.nft"), &script)?;
            let block: Vec<String> = after.iter().map(|t| t.render()).collect();
            std::fs::write(format!("{dir}/{n}-block.nft"), block.join("\n"))?;
            // One table per file too, for `nft_bench` (sarasa-nft), which reads one table.
            for (t, text) in after.iter().zip(&block) {
                std::fs::write(format!("{dir}/{n}-{}.nft", t.name), text)?;
            }
        }
        drop((after, programs, script));

        if let Some(path) = &netns {
            let mut nft = NftCli::in_netns(path);
            let t = Instant::now();
            nft.reconcile(&st.main_table())?;
            for i in 0..st.config().shards {
                nft.reconcile(&st.shard_table(i))?;
            }
            println!("nft: full program              {}", ms(t.elapsed()));
            let mut applied = Vec::new();
            // Each `nft` run parses the script and caches the tables: few rounds at large sizes.
            let rounds = if n > 20_000 { 3 } else { 20 };
            for r in 0..rounds.min(n) {
                let mut s = slices[(r * 104_729) % n].clone();
                s.endpoints[0] =
                    Endpoint::ready(format!("10.251.0.{}", r + 1).parse()?, Some("node-3"));
                let t = Instant::now();
                let u = st.upsert_endpoint_slice(s);
                nft.apply(&one_script(&u))?;
                applied.push(t.elapsed());
            }
            println!(
                "nft: change-to-programmed      p50 {}  p99 {}",
                ms(percentile(&mut applied, 0.5)),
                ms(percentile(&mut applied, 0.99))
            );
            let mut native = sarasa_nft::NetlinkBackend::in_netns(path)?;
            let mut applied = Vec::new();
            for r in 0..50.min(n) {
                let mut s = slices[(r * 15_485_863) % n].clone();
                s.endpoints[1] =
                    Endpoint::ready(format!("10.252.0.{}", r + 1).parse()?, Some("node-3"));
                let t = Instant::now();
                let u = st.upsert_endpoint_slice(s);
                apply_netlink(&mut native, &u)?;
                applied.push(t.elapsed());
            }
            println!(
                "netlink: change-to-programmed  p50 {}  p99 {}  (EndpointSlice: shard table)",
                ms(percentile(&mut applied, 0.5)),
                ms(percentile(&mut applied, 0.99)),
            );
            // A Service losing its endpoints and getting them back: reject element in the
            // main table, dispatch element and chains in the shard.
            let mut applied = Vec::new();
            for r in 0..25.min(n) {
                let i = (r * 7_368_787 + 1) % n;
                let mut s = slices[i].clone();
                s.endpoints.clear();
                for slice in [s, slices[i].clone()] {
                    let t = Instant::now();
                    let u = st.upsert_endpoint_slice(slice);
                    apply_netlink(&mut native, &u)?;
                    applied.push(t.elapsed());
                }
            }
            println!(
                "netlink: change-to-programmed  p50 {}  p99 {}  (no endpoints and back: main + shard; {} batches)",
                ms(percentile(&mut applied, 0.5)),
                ms(percentile(&mut applied, 0.99)),
                native.native_count
            );
            // Leave the namespace clean for the next size.
            let drop_all: String = st
                .config()
                .table_names()
                .iter()
                .map(|t| format!("delete table inet {t}\n"))
                .collect();
            nft.run_script(&drop_all)?;
        }
        drop(st);
    }
    Ok(())
}

/// All tables' parts of one change as one `nft` script (one transaction).
fn one_script(u: &Update) -> Transaction {
    let mut tx = Transaction::default();
    for t in u.transactions.values() {
        tx.append(t.clone());
    }
    tx
}

/// Applies all tables' parts over netlink as one batch (one kernel commit).
fn apply_netlink(
    native: &mut sarasa_nft::NetlinkBackend,
    u: &Update,
) -> Result<(), sarasa_nft::NftError> {
    let parts: Vec<_> = u
        .transactions
        .iter()
        .map(|(table, tx)| (sarasa_nft::Family::Inet, table.as_str(), tx))
        .collect();
    native.apply_batch(&parts)
}
