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

/// Exit code: 0 delivered, 1 dropped or rejected, 2 bad input (clap and errors).
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
    let result = sarasa_trace::trace(&world, &query)?;
    match args.output {
        Output::Text => print!("{}", result.render_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Output::Svg => print!("{}", crate::trace_fetch::svg(&lab, &query, &result)?),
    }
    Ok(if result.verdict == Verdict::Delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
