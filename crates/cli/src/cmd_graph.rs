//! `sarasa lab graph [-o text|dot|svg]`: the lab's topology (fabric, nodes with their
//! addresses, podCIDRs, vteps and bridges, pods, tunnels, Services with their endpoints) from
//! the lab spec and the API, drawn by `sarasa-viz` to stdout.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use sarasa_lab::Lab;

#[derive(Args)]
pub struct GraphArgs {
    /// text (default), dot (Graphviz input) or svg (laid out here, no Graphviz needed).
    #[arg(short = 'o', long, value_enum, default_value_t = GraphFormat::Text)]
    output: GraphFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Svg,
}

pub fn run(lab: &str, args: GraphArgs) -> Result<ExitCode> {
    let lab = Lab::open(lab)?;
    let objects = crate::topology::list_objects(&lab)?;
    let t = crate::topology::topology(&lab.spec, &objects);
    let out = match args.output {
        GraphFormat::Text => sarasa_viz::render_text(&t),
        GraphFormat::Dot => sarasa_viz::render_dot(&t),
        GraphFormat::Svg => sarasa_viz::render_svg(&t, &[]),
    };
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
