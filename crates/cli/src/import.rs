//! `birkhoff import`: an ONNX model as IR text plus its weights.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use birkhoff::onnx::Role;

use crate::args::ImportArgs;
use crate::source::import_onnx;

pub fn main(a: &ImportArgs) -> Result<ExitCode> {
    let weights = a
        .weights
        .clone()
        .unwrap_or_else(|| a.output.with_extension("safetensors"));
    if weights == a.output {
        bail!(
            "the IR and the weights would both be written to {}: pass -o FILE.bir or --weights FILE.safetensors",
            a.output.display()
        );
    }
    let m = import_onnx(&a.model, &a.dims)?;
    let text = format!("{}{}", m.header(), m.graph);
    let tensors: Vec<(String, &birkhoff::ir::Tensor)> =
        m.weights.iter().map(|(k, t)| (k.clone(), t)).collect();
    // The ONNX name of each weight, so a reader can map them back.
    let meta: HashMap<String, String> = m
        .names
        .iter()
        .filter(|r| r.role == Role::Param)
        .map(|r| (format!("onnx:{}", r.ir), r.onnx.clone()))
        .collect();
    let bytes = birkhoff::safetensors::encode(&tensors, meta).map_err(anyhow::Error::msg)?;
    // Both files or neither: the weights are staged first.
    let staged = birkhoff::stage(&weights, |f| std::io::Write::write_all(f, &bytes))
        .with_context(|| format!("cannot write {}", weights.display()))?;
    birkhoff::write_atomic(&a.output, text.as_bytes())
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    staged
        .commit()
        .with_context(|| format!("cannot write {}", weights.display()))?;
    let g = &m.graph;
    println!(
        "imported {} (opset {}): graph @{} ({} nodes, {} inputs, {} outputs) -> {}; {} weights -> {}",
        a.model.display(),
        m.opset,
        g.name(),
        g.len(),
        g.inputs().len(),
        g.outputs().len(),
        a.output.display(),
        m.weights.len(),
        weights.display()
    );
    Ok(ExitCode::SUCCESS)
}
