//! `sarasa drops [-n NS] [--follow] [-o text|json]`: recent NetworkPolicy drop events from
//! every node, merged by time. Each agent keeps its newest events in a ring and serves them at
//! `GET /drops` on its health listener (127.0.0.1:9099 inside the node's namespace; see the
//! agent's `droplog` module for why a ring and not the log files); this command enters each
//! node's namespace on a thread of its own to ask, so it works from anywhere on the machine.
//! `--follow` polls every node with the last sequence it saw, so only new events travel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sarasa_agent::droplog::{DropPage, DropRecord};
use sarasa_lab::Lab;
use sarasa_netns::NetNs;

use crate::drops::{json_line, merge, parse_reply, text_line, Accepted, Cursor};

/// How long one request to an agent may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct DropsArgs {
    /// Only events with a pod of these namespaces at either end (comma-separated or repeated).
    #[arg(short = 'n', long = "namespace", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Keep printing new events until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How often --follow asks every agent.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// text (one line per event) or json (one object per line).
    #[arg(short = 'o', long, value_enum, default_value_t = DropsFormat::Text)]
    output: DropsFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DropsFormat {
    Text,
    Json,
}

/// The agent's health listener (the lab starts agents with the default).
fn agent_addr() -> SocketAddr {
    sarasa_agent::AgentConfig::new("-").health_listen
}

/// `GET /drops?since=SEQ` from the agent inside namespace `netns`.
fn fetch(netns: &str, since: u64) -> Result<DropPage> {
    let ns = NetNs::open(netns).with_context(|| format!("opening namespace {netns}"))?;
    let addr = agent_addr();
    let reply = ns
        .run(move || -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            write!(
                s,
                "GET /drops?since={since} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
            )?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf)
        })
        .with_context(|| format!("entering namespace {netns}"))?
        .with_context(|| format!("asking the agent at {addr}"))?;
    Ok(parse_reply(&reply)?)
}

/// One poll of every node: the new events per node. Nodes whose agent does not answer are
/// reported on stderr (once per failure streak) and skipped.
fn poll(
    lab: &Lab,
    cursor: &mut Cursor,
    failing: &mut Vec<String>,
) -> Vec<(String, Vec<DropRecord>)> {
    let mut out = Vec::new();
    for node in &lab.spec.nodes {
        let mut page = fetch(&node.netns, cursor.since(&node.name));
        // A restarted agent is asked once more from the start of its new sequence.
        for _ in 0..2 {
            match page {
                Ok(p) => match cursor.accept(&node.name, p) {
                    Accepted::Events(events, missed) => {
                        failing.retain(|n| n != &node.name);
                        if missed > 0 {
                            eprintln!(
                                "warning: {}: {missed} drop events were evicted before they could be read",
                                node.name
                            );
                        }
                        out.push((node.name.clone(), events));
                        break;
                    }
                    Accepted::Restarted => page = fetch(&node.netns, 0),
                },
                Err(e) => {
                    if !failing.contains(&node.name) {
                        eprintln!("warning: {}: no drop events: {e:#}", node.name);
                        failing.push(node.name.clone());
                    }
                    break;
                }
            }
        }
    }
    out
}

pub fn run(lab: &str, args: DropsArgs) -> Result<ExitCode> {
    let lab = Lab::open(lab)?;
    let mut cursor = Cursor::default();
    let mut failing = Vec::new();
    let mut stdout = std::io::stdout().lock();
    loop {
        let batches = poll(&lab, &mut cursor, &mut failing);
        if !args.follow && batches.is_empty() {
            bail!("no node's agent answered (is the lab up and are its agents running?)");
        }
        for d in merge(batches, &args.namespaces) {
            match args.output {
                DropsFormat::Text => writeln!(stdout, "{}", text_line(&d))?,
                DropsFormat::Json => writeln!(stdout, "{}", json_line(&d))?,
            }
        }
        stdout.flush()?;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(args.interval);
    }
}
