//! `sarasa-cni`: the CNI plugin binary. Thin: the library does the work; this prints the
//! result or the CNI error JSON on stdout and exits non-zero on error. Run with arguments
//! `reap-veth INDEX NAME`, it is DEL's detached reaper instead.

fn main() {
    // `sarasa-cni reap-veth INDEX NAME`: the detached half of a DEL (sarasa_cni::reap).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = sarasa_cni::reap::main(&args) {
        std::process::exit(code);
    }
    let outcome = sarasa_cni::run(|k| std::env::var(k).ok(), &mut std::io::stdin().lock());
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    std::process::exit(outcome.exit_code);
}
