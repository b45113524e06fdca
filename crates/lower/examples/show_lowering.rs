//! Prints the kernel IR of a zoo model: `cargo run -p birkhoff-lower --example show_lowering -- mhc-post`.

use birkhoff_dsl::zoo::{ModelArgs, build_model};
use birkhoff_lower::{LowerOptions, lower};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mhc-post".to_string());
    let fuse = std::env::args().any(|a| a == "--fuse");
    let args = ModelArgs {
        tokens: Some(4),
        hidden: Some(8),
        streams: Some(2),
        ..ModelArgs::default()
    };
    let mut graph = build_model(&name, &args)?.graph;
    if fuse {
        graph = birkhoff_opt::optimize(&graph, |_| false)?.graph;
    }
    print!("{}", lower(&graph, &LowerOptions::default())?);
    Ok(())
}
