//! Command-line forms of `sarasa serve` and `sarasa probe`, for the `sarasa` binary to embed.

use crate::duration::parse_duration;
use crate::probe::{hold, probe, ProbeError, ProbeTarget};
use crate::reply::PodIdentity;
use crate::serve::{serve, PortSpec, ServeConfig, ServeError};
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

/// `sarasa serve [--port PORT[/tcp|/udp]]...`
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port to serve, e.g. `80`, `80/tcp`, `53/udp` (repeatable). Without ports, the server
    /// just waits for SIGTERM, like a container with nothing to serve.
    #[arg(long = "port", short = 'p', value_name = "PORT[/tcp|/udp]")]
    pub ports: Vec<PortSpec>,
    /// Address to listen on (default: every IPv4 and IPv6 address).
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,
    /// Pod name reported in replies (default: $POD_NAME, else the hostname).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Pod namespace reported in replies.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Pod IP reported in replies (default: the address each request arrived on).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<String>,
    /// Concurrent TCP connections; more are closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Close a TCP connection silent for this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

impl ServeArgs {
    pub fn config(&self) -> ServeConfig {
        let env = PodIdentity::from_env();
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        ServeConfig {
            ports: self.ports.clone(),
            address: self.address,
            identity: PodIdentity {
                pod: non_empty(&self.pod_name).unwrap_or(env.pod),
                namespace: non_empty(&self.pod_namespace).unwrap_or(env.namespace),
                pod_ip: non_empty(&self.pod_ip).or(env.pod_ip),
            },
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Runs `sarasa serve` until SIGTERM/SIGINT (see [`serve`]); `Ok` means a clean shutdown.
pub fn run_serve(args: &ServeArgs) -> Result<(), ServeError> {
    serve(args.config())
}

/// `sarasa probe [--timeout D] [--hold D] URL`
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// `tcp://HOST:PORT`, `udp://HOST:PORT` or `http://HOST:PORT/PATH` (IPv6 as `[::1]`).
    #[arg(value_name = "URL")]
    pub target: ProbeTarget,
    /// Give up after this long (with --hold: the longest wait for each reply).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Keep one TCP connection open this long, sending a line every --interval and failing
    /// if any reply is missing.
    #[arg(long, value_parser = parse_duration, value_name = "D")]
    pub hold: Option<Duration>,
    /// Time between lines with --hold; `0` sends the next line as soon as the reply is in
    /// (a request/response rate benchmark).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
}

/// Runs `sarasa probe`: prints the reply (JSON line or HTTP body) to `out`. The caller prints
/// an `Err` on stderr and exits non-zero.
pub fn run_probe(args: &ProbeArgs, out: &mut dyn Write) -> Result<(), ProbeError> {
    let io_err = |error| ProbeError::Io {
        target: args.target.to_string(),
        error,
    };
    match args.hold {
        None => {
            let reply = probe(&args.target, args.timeout)?;
            writeln!(out, "{}", reply.text).map_err(io_err)?;
        }
        Some(duration) => {
            let report = hold(&args.target, duration, args.interval, args.timeout)?;
            writeln!(out, "{}", report.first.text).map_err(io_err)?;
            let secs = report.held.as_secs_f64();
            writeln!(
                out,
                "held {} for {secs:.1}s: {} replies ({:.0}/s), none missing",
                args.target,
                report.replies,
                report.replies as f64 / secs.max(f64::EPSILON),
            )
            .map_err(io_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Serve(ServeArgs),
        Probe(ProbeArgs),
    }

    #[test]
    fn cli_forms_parse() {
        let cli =
            Cli::try_parse_from(["sarasa", "serve", "--port", "80/tcp", "-p", "53/udp"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.ports.len(), 2);
        let cli = Cli::try_parse_from([
            "sarasa",
            "probe",
            "--timeout",
            "2s",
            "--hold",
            "10s",
            "tcp://[::1]:80",
        ])
        .unwrap();
        let Command::Probe(p) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.hold, Some(Duration::from_secs(10)));
        assert_eq!(p.target.to_string(), "tcp://[::1]:80");
    }

    #[test]
    fn run_probe_prints_the_reply_and_the_hold_rate() {
        let config = crate::ServeConfig::new(vec!["0/tcp".parse().unwrap()]);
        let server = crate::Server::start(config).unwrap();
        let url = format!(
            "tcp://127.0.0.1:{}",
            server.port(crate::Protocol::Tcp).unwrap()
        );
        let cli = Cli::try_parse_from([
            "sarasa",
            "probe",
            "--hold",
            "300ms",
            "--interval",
            "0",
            &url,
        ])
        .unwrap();
        let Command::Probe(p) = cli.command else {
            panic!("not probe")
        };
        let mut out = Vec::new();
        run_probe(&p, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("{\"pod\":"), "{out}");
        let summary = lines.next().unwrap();
        assert!(
            summary.starts_with(&format!("held {url} for 0.3s: ")),
            "{summary}"
        );
        assert!(summary.ends_with("/s), none missing"), "{summary}");
    }

    #[test]
    fn bad_cli_values_are_named() {
        let e = Cli::try_parse_from(["sarasa", "probe", "tcp://x"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing port"), "{e}");
        let e = Cli::try_parse_from(["sarasa", "serve", "--port", "80/sctp"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sctp"), "{e}");
    }
}
