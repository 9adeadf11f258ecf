//! `sarasa-cni`: the CNI plugin binary. Thin: the library does the work; this prints the
//! result or the CNI error JSON on stdout and exits non-zero on error.

fn main() {
    let outcome = sarasa_cni::run(|k| std::env::var(k).ok(), &mut std::io::stdin().lock());
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    std::process::exit(outcome.exit_code);
}
