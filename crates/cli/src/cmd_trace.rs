//! `sarasa trace`: explains what the lab's network does with one packet, from the node plans
//! its agents program ([`sarasa_trace`]), as text, JSON or SVG.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use sarasa_lab::Lab;
use sarasa_trace::{parse_destination, parse_port, parse_source, Proto, Query, Verdict};

#[derive(Args)]
pub struct TraceArgs {
    /// Namespace of pods and Services named without one.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Source: POD, NAMESPACE/POD, node/NAME or external.
    #[arg(long)]
    from: String,
    /// Destination: POD, NAMESPACE/POD, svc/NAME[.NAMESPACE], an IP address or node/NAME.
    #[arg(long)]
    to: String,
    /// Destination port (default for a Service: its first port of the protocol).
    #[arg(long)]
    port: Option<String>,
    #[arg(long, value_enum, default_value_t = ProtoArg::Tcp)]
    proto: ProtoArg,
    /// Also send one real packet of the flow and compare the kernel's nftables trace events on
    /// every node with the model's path; exit 3 when they disagree.
    #[arg(long)]
    live: bool,
    /// text (default), json or svg.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Svg,
}

/// Exit code: 0 delivered, 1 dropped or rejected (bad input is an error: 1 with a message); with
/// `--live`, 0 when the kernel agrees with the model and 3 when it does not.
pub fn run(lab_name: &str, args: TraceArgs) -> Result<ExitCode> {
    let query = Query {
        from: parse_source(&args.from, &args.namespace)?,
        to: parse_destination(&args.to, &args.namespace)?,
        port: args.port.as_deref().map(parse_port).transpose()?,
        proto: match args.proto {
            ProtoArg::Tcp => Proto::Tcp,
            ProtoArg::Udp => Proto::Udp,
        },
    };
    let lab = Lab::open(lab_name)?;
    let mut warnings = Vec::new();
    let world = crate::trace_fetch::world(&lab, &mut warnings)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if world.nodes.is_empty() {
        bail!("no node of lab {lab_name} has a plan yet (no podCIDRs assigned?)");
    }
    let mut result = sarasa_trace::trace(&world, &query)?;
    // What the model cites, found in the kernel: the rule handles on each node.
    crate::trace_handles::fill(&lab.spec, &mut result);
    let live = if args.live {
        Some(crate::trace_live::live(&lab, &query, &result)?)
    } else {
        None
    };
    match args.output {
        Output::Text => {
            print!("{}", result.render_text());
            if let Some(l) = &live {
                print!("{}", l.render_text());
            }
        }
        Output::Json => {
            let mut v = serde_json::to_value(&result)?;
            if let Some(l) = &live {
                v["live"] = serde_json::to_value(l)?;
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Svg => print!("{}", crate::trace_fetch::svg(&lab, &query, &result)?),
    }
    Ok(match (&live, result.verdict) {
        (Some(l), _) if !l.agrees => ExitCode::from(3),
        (Some(_), _) | (None, Verdict::Delivered) => ExitCode::SUCCESS,
        (None, _) => ExitCode::from(1),
    })
}
