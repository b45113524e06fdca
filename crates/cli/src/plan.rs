//! `birkhoff plan`: the recomputation plan for training an mHC model — the
//! block size, its blocks, predicted activation memory and recompute cost,
//! and a chart of peak memory against block size.

use std::process::ExitCode;

use anyhow::{Result, bail};
use birkhoff::dsl::zoo::Connection;
use birkhoff::ir::format_bytes;
use birkhoff::recompute::{MhcStack, PlanError};

use crate::args::{PlanArgs, PlanDType};
use crate::plot::{Chart, Series, line_chart};

/// Runs `birkhoff plan`.
pub fn main(a: &PlanArgs) -> Result<ExitCode> {
    if a.model != "lm" {
        bail!(
            "unknown model '{}' for plan: the planned model is 'lm' (the byte-level language model)",
            a.model
        );
    }
    if a.connection != Connection::Mhc {
        bail!(
            "only --connection mhc is planned so far (block recomputation of the widened stream)"
        );
    }
    let stack = MhcStack {
        layers: a.layers,
        streams: a.streams,
        hidden: a.hidden,
        tokens: a.tokens,
        bytes_per_element: match a.dtype {
            PlanDType::Bf16 => 2,
            PlanDType::F32 => 4,
        },
    };
    let boundaries = a.boundaries.as_deref();
    let plan = match stack.plan(a.memory_budget, boundaries) {
        Err(PlanError::OverBudget {
            budget,
            min_peak,
            block,
        }) => bail!(
            "no block size fits the memory budget of {}: the smallest peak is {} (block size {block})",
            format_bytes(budget),
            format_bytes(min_peak)
        ),
        p => p?,
    };
    let m = plan.estimate;
    let r = plan.recompute;
    println!(
        "mHC stack: L={} layers, n={} streams, C={}, T={} tokens, {} bytes/element",
        stack.layers, stack.streams, stack.hidden, stack.tokens, stack.bytes_per_element
    );
    println!("block size: {}", plan.block);
    println!(
        "analytic optimum: sqrt(nL/(n+2)) = {:.2}",
        stack.analytic_block()
    );
    println!("blocks ({}): {plan}", plan.blocks.len());
    println!("resident: {}", format_bytes(m.resident_bytes));
    println!("transient: {}", format_bytes(m.transient_bytes));
    println!("peak: {}", format_bytes(m.peak_bytes));
    if let Some(b) = a.memory_budget {
        println!("budget: {}", format_bytes(b));
    }
    println!(
        "recompute: {} elements of mHC intermediates ({}), {} kept-stream elements re-read ({}); F is not re-run",
        r.recomputed_elements,
        format_bytes(
            r.recomputed_elements
                .saturating_mul(stack.bytes_per_element as u64)
        ),
        r.reread_elements,
        format_bytes(
            r.reread_elements
                .saturating_mul(stack.bytes_per_element as u64)
        ),
    );
    if let Some(path) = &a.plot {
        const GIB: f64 = (1u64 << 30) as f64;
        let mut curve = Vec::with_capacity(stack.layers);
        for b in 1..=stack.layers {
            let p = stack.plan_block(b, boundaries)?;
            curve.push((b as f64, p.estimate.peak_bytes as f64 / GIB));
        }
        let top = curve.iter().map(|p| p.1).fold(0.0, f64::max);
        let at = |x: f64| vec![(x, 0.0), (x, top)];
        let a_opt = stack.analytic_block();
        line_chart(
            path,
            &Chart {
                title: "mHC recomputation: peak activation memory",
                x: "block size L_r (layers)",
                y: "peak (GiB)",
                log_y: false,
            },
            &[
                Series {
                    name: "peak memory".into(),
                    points: curve,
                },
                Series {
                    name: format!("chosen L_r = {}", plan.block),
                    points: at(plan.block as f64),
                },
                Series {
                    name: format!("sqrt(nL/(n+2)) = {a_opt:.2}"),
                    points: at(a_opt),
                },
            ],
        )?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a byte count: a non-negative number with an optional unit, `B`,
/// decimal `KB`/`MB`/`GB`/`TB` or binary `KiB`/`MiB`/`GiB`/`TiB` (unit
/// letters in any case), e.g. `40GiB`, `512MiB`, `1.5GB`, `1000000`.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), &t[split..]);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid memory size '{s}': unknown unit '{unit}' (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let x: f64 = num.parse().map_err(|_| {
        format!("invalid memory size '{s}': expected a number and a unit, e.g. 40GiB")
    })?;
    let bytes = x * mult as f64;
    if !x.is_finite() || x < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!(
            "invalid memory size '{s}': must be a non-negative number of bytes below 2^64"
        ));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("40GiB"), Ok(40 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert!(
            parse_bytes("40XB")
                .unwrap_err()
                .contains("unknown unit 'XB'")
        );
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("-1GiB").is_err());
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(5), "5 B");
    }
}
