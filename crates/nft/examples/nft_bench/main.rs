//! Netlink against `nft` for reading back and programming one big table. Prints figures and
//! checks only that both ways agree.
//!
//! ```text
//! cargo run --release -p sarasa-nft --example nft_bench -- /tmp/nftbench/10000-block.nft
//! cargo run --release -p sarasa-nft --example nft_bench -- --no-commands FILE...
//! ```
//! Each FILE is one table in the block syntax `Table::render` writes (e.g. the proxy bench's
//! `--write DIR N` output, `DIR/N-block.nft`). Needs root, `ip`, `nsenter` and `nft`. In
//! namespaces it makes (`sx-nft-bench-*`, removed at the end, also on failure):
//! - programs the table from empty: `nft -f FILE`; `nft -f -` with the first-program
//!   transaction's commands (what a fallback would run; skipped with `--no-commands`); one
//!   netlink batch of the same transaction;
//! - reads it back: `nft -j list table` + `KernelTable::parse`, and netlink `list_table`.
//!
//! Every measurement runs in its own process, so its peak memory is that process's VmHWM
//! (plus the `nft` child's, polled from /proc, for the tool paths).

mod parse;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sarasa_nft::{diff_kernel, Family, KernelTable, NetlinkBackend};

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn self_hwm_kb() -> u64 {
    hwm_kb(std::process::id()).unwrap_or(0)
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
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let nft = Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "nproc={nproc}, CPU: {cpu}, kernel {}, load {}, {nft}",
        kernel.trim(),
        load.join(" ")
    )
}

/// A network namespace removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> R<Netns> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sx-nft-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let st = Command::new("ip").args(["netns", "add", &name]).status()?;
        if !st.success() {
            return Err(format!("ip netns add {name} failed (root?)").into());
        }
        Ok(Netns(name))
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `nft ARGS` in namespace `path` with `stdin`; returns (stdout, seconds, nft's VmHWM).
fn run_nft(path: &str, args: &[&str], stdin: Option<&str>) -> R<(Vec<u8>, f64, u64)> {
    let started = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={path}"))
        .arg("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let input = stdin.map(str::to_string);
    let mut w = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let (Some(w), Some(s)) = (w.as_mut(), input) {
            use std::io::Write;
            let _ = w.write_all(s.as_bytes());
        }
    });
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = err.read_to_string(&mut v);
        v
    });
    // VmHWM only grows: the last value read before the exit is (nearly) the peak.
    let mut hwm = 0;
    let status = loop {
        if let Some(h) = hwm_kb(pid) {
            hwm = hwm.max(h);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = started.elapsed().as_secs_f64();
    let _ = writer.join();
    let stdout = reader.join().map_err(|_| "reader thread")?;
    let stderr = err_reader.join().map_err(|_| "reader thread")?;
    if !status.success() {
        return Err(format!("nft {args:?}: {status}: {stderr}").into());
    }
    Ok((stdout, secs, hwm))
}

/// A digest of a listing, to check that two readers agree without printing them.
fn digest(t: &Option<KernelTable>) -> u64 {
    struct H(DefaultHasher);
    impl std::fmt::Write for H {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut h = H(DefaultHasher::new());
    let _ = std::fmt::write(&mut h, format_args!("{t:?}"));
    h.0.finish()
}

fn family(s: &str) -> R<Family> {
    Ok(match s {
        "inet" => Family::Inet,
        "ip" => Family::Ip,
        "ip6" => Family::Ip6,
        "bridge" => Family::Bridge,
        _ => return Err(format!("family {s}").into()),
    })
}

/// One measurement in this (child) process; prints `key=value` pairs.
fn child(args: &[String]) -> R<()> {
    let base = self_hwm_kb();
    match args {
        [what, path, fam, name] if what == "list-json" => {
            let fam = family(fam)?;
            let t0 = Instant::now();
            let (json, nft_secs, nft_hwm) =
                run_nft(path, &["-j", "list", "table", fam.as_str(), name], None)?;
            let t1 = Instant::now();
            let json = String::from_utf8(json)?;
            let t = KernelTable::parse(&json, fam, name)?;
            let parse_secs = t1.elapsed().as_secs_f64();
            let total = t0.elapsed().as_secs_f64();
            let d = digest(&Some(t));
            println!(
                "total_s={total:.3} nft_s={nft_secs:.3} parse_s={parse_secs:.3} json_mb={:.1} \
                 nft_hwm_kb={nft_hwm} hwm_kb={} base_kb={base} digest={d:x}",
                json.len() as f64 / 1e6,
                self_hwm_kb()
            );
        }
        [what, path, fam, name, rest @ ..] if what == "list-netlink" => {
            let fam = family(fam)?;
            // With the table's file: look chains up by the names the model has.
            let hint = match rest {
                [file] => Some(parse::table(&std::fs::read_to_string(file)?)?),
                _ => None,
            };
            let base = self_hwm_kb();
            let mut nl = NetlinkBackend::in_netns(path)?;
            let t0 = Instant::now();
            let t = match &hint {
                Some(h) => nl.list_table_like(h)?,
                None => nl.list_table(fam, name)?,
            };
            let total = t0.elapsed().as_secs_f64();
            let chains = t.as_ref().map_or(0, |t| t.chains.len());
            let d = digest(&t);
            println!(
                "total_s={total:.3} chains={chains} hwm_kb={} base_kb={base} digest={d:x}",
                self_hwm_kb()
            );
        }
        [what, path, file] if what == "program-netlink" => {
            let text = std::fs::read_to_string(file)?;
            let table = parse::table(&text)?;
            drop(text);
            let after_parse = self_hwm_kb();
            let t0 = Instant::now();
            let tx = diff_kernel(None, &table);
            let diff_secs = t0.elapsed().as_secs_f64();
            let after_diff = self_hwm_kb();
            let mut nl = NetlinkBackend::in_netns(path)?;
            let t1 = Instant::now();
            nl.apply_to(table.family, &table.name, &tx)?;
            let apply_secs = t1.elapsed().as_secs_f64();
            println!(
                "diff_s={diff_secs:.3} apply_s={apply_secs:.3} commands={} chains={} \
                 hwm_parse_kb={after_parse} hwm_diff_kb={after_diff} hwm_kb={} base_kb={base}",
                tx.commands.len(),
                table.chains.len(),
                self_hwm_kb()
            );
        }
        [what, path, file] if what == "program-commands" => {
            let text = std::fs::read_to_string(file)?;
            let table = parse::table(&text)?;
            let script = diff_kernel(None, &table).script();
            drop(table);
            let (_, secs, hwm) = run_nft(path, &["-f", "-"], Some(&script))?;
            println!(
                "total_s={secs:.3} script_mb={:.1} nft_hwm_kb={hwm}",
                script.len() as f64 / 1e6
            );
        }
        [what, path, file] if what == "program-file" => {
            let (_, secs, hwm) = run_nft(path, &["-f", file], None)?;
            println!("total_s={secs:.3} nft_hwm_kb={hwm}");
        }
        _ => return Err(format!("bad child arguments {args:?}").into()),
    }
    Ok(())
}

/// Runs a measurement in a child process; returns its `key=value` pairs.
fn measure(args: &[&str]) -> R<Vec<(String, String)>> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--child")
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> &'a str {
    kv.iter()
        .find(|(key, _)| key == k)
        .map_or("?", |(_, v)| v.as_str())
}

fn mb(kv: &[(String, String)], k: &str) -> String {
    get(kv, k)
        .parse::<f64>()
        .map_or("?".into(), |kb| format!("{:.0} MB", kb / 1024.0))
}

fn bench(file: &str, commands: bool) -> R<()> {
    let text = std::fs::read_to_string(file)?;
    let t0 = Instant::now();
    let table = parse::table(&text)?;
    let parse_secs = t0.elapsed().as_secs_f64();
    let again = table.render();
    if again != text {
        let line = again
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "{file}: not Table::render output (differs at line {})",
            line + 1
        )
        .into());
    }
    let (fam, name) = (table.family.as_str(), table.name.clone());
    println!(
        "--- {file}: table {fam} {name}, {} chains, {} rules, {} sets, {} elements ({:.1} MB; model parsed in {parse_secs:.2} s)",
        table.chains.len(),
        table.chains.values().map(|c| c.rules.len()).sum::<usize>(),
        table.sets.len(),
        table.sets.values().map(|s| s.elements.len()).sum::<usize>(),
        text.len() as f64 / 1e6
    );
    drop((table, text, again));

    let by_file = Netns::new()?;
    let p = measure(&["program-file", &by_file.path(), file])?;
    println!(
        "program  nft -f FILE              {:>8} s   nft peak {}",
        get(&p, "total_s"),
        mb(&p, "nft_hwm_kb")
    );
    if commands {
        let by_cmds = Netns::new()?;
        let p = measure(&["program-commands", &by_cmds.path(), file])?;
        println!(
            "program  nft -f - (tx commands)   {:>8} s   nft peak {}   ({} MB script)",
            get(&p, "total_s"),
            mb(&p, "nft_hwm_kb"),
            get(&p, "script_mb")
        );
    }
    let native = Netns::new()?;
    let p = measure(&["program-netlink", &native.path(), file])?;
    println!(
        "program  netlink batch            {:>8} s   (+ diff {} s)   process peak {} ({} with the model, {} with the transaction)",
        get(&p, "apply_s"),
        get(&p, "diff_s"),
        mb(&p, "hwm_kb"),
        mb(&p, "hwm_parse_kb"),
        mb(&p, "hwm_diff_kb"),
    );

    let j = measure(&["list-json", &by_file.path(), fam, &name])?;
    println!(
        "list     nft -j + JSON parse      {:>8} s   (nft {} s, parse {} s, {} MB JSON)   nft peak {} + parser peak {}",
        get(&j, "total_s"),
        get(&j, "nft_s"),
        get(&j, "parse_s"),
        get(&j, "json_mb"),
        mb(&j, "nft_hwm_kb"),
        mb(&j, "hwm_kb")
    );
    let n = measure(&["list-netlink", &by_file.path(), fam, &name])?;
    println!(
        "list     netlink list_table       {:>8} s   process peak {} (of which {} at start)",
        get(&n, "total_s"),
        mb(&n, "hwm_kb"),
        mb(&n, "base_kb")
    );
    let h = measure(&["list-netlink", &by_file.path(), fam, &name, file])?;
    println!(
        "list     netlink list_table_like  {:>8} s   process peak {} (of which {} before: the model)",
        get(&h, "total_s"),
        mb(&h, "hwm_kb"),
        mb(&h, "base_kb")
    );
    let n2 = measure(&["list-netlink", &native.path(), fam, &name])?;
    let same = get(&j, "digest") == get(&n, "digest") && get(&n, "digest") == get(&h, "digest");
    let same_native = get(&n, "digest") == get(&n2, "digest");
    println!(
        "check    netlink listings == JSON listing: {same}; table programmed natively lists the same: {same_native}"
    );
    if !(same && same_native) {
        return Err("listings differ".into());
    }
    Ok(())
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let commands = !args.iter().any(|a| a == "--no-commands");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if files.is_empty() {
        return Err("usage: nft_bench [--no-commands] FILE.nft...".into());
    }
    println!("sarasa-nft bench on {}", machine());
    for f in files {
        bench(f, commands)?;
    }
    Ok(())
}
