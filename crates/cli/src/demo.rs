//! `birkhoff demo`: the main job on an embedded default model.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use birkhoff::dsl::zoo::{ModelArgs, build_model};
use birkhoff::ir::{Op, Precision};

use crate::args::DemoArgs;
use crate::run::{interpret, load_inputs, stats};
use crate::source::Source;

pub fn main(a: &DemoArgs) -> Result<ExitCode> {
    println!("birkhoff demo: one mHC transformer layer, written in primitive ops\n");

    // 1. Build.
    let model = build_model("mhc-block", &ModelArgs::default())?;
    let g = &model.graph;
    let params: usize = g
        .inputs()
        .iter()
        .filter(|&&v| {
            matches!(
                g.node(v).op,
                Op::Input {
                    kind: birkhoff::ir::InputKind::Param,
                    ..
                }
            )
        })
        .map(|&v| g.ty(v).num_elements())
        .sum();
    println!(
        "model   mhc-block: T=32 tokens, n=4 streams, C=64 hidden, 4 heads, 1 layer (attention + SwiGLU), Sinkhorn tilekernels x20"
    );
    println!(
        "graph   @{}: {} nodes, {} inputs ({} parameters), {} output",
        g.name(),
        g.len(),
        g.inputs().len(),
        params,
        g.outputs().len()
    );
    let mut hist = g.op_histogram();
    hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = hist
        .iter()
        .take(10)
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    println!("ops     {}", top.join(", "));

    // 2. Show the start of the IR.
    let text = g.to_string();
    println!(
        "\nIR (first 12 of {} lines; `birkhoff dump mhc-block` prints it all):",
        text.lines().count()
    );
    for line in text.lines().take(12) {
        let short: String = line.chars().take(140).collect();
        println!(
            "  {short}{}",
            if line.chars().count() > 140 {
                " ..."
            } else {
                ""
            }
        );
    }

    // 3. Run it on random inputs, in f64 and in f32.
    let src = Source {
        graph: model.graph.clone(),
        inits: model.inits.clone(),
        imported: None,
    };
    let inputs = load_inputs(&src, None, Some(a.seed), false)?;
    let t0 = Instant::now();
    let exact = interpret(g, &inputs, Precision::F64)?;
    let t_exact = t0.elapsed();
    let single = interpret(g, &inputs, Precision::F32)?;
    println!(
        "\nrun     reference interpreter on random inputs (seed {}): {:.1} ms in f64",
        a.seed,
        t_exact.as_secs_f64() * 1e3
    );
    for ((name, x), (_, y)) in exact.iter().zip(&single) {
        let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
        let scale = xv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = xv
            .iter()
            .zip(&yv)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        println!("  {name:<14} {:<12} {}", x.ty().to_string(), stats(x));
        println!(
            "  f32 arithmetic vs f64: max |diff| {worst:.2e}, {:.2e} of the largest |value|",
            worst / scale.max(f64::MIN_POSITIVE)
        );
    }

    // 4. Fuse: the e-graph optimizer finds what DeepSeek fused by hand.
    let t0 = Instant::now();
    let fused = birkhoff::opt::optimize(g, |_| false)?;
    let t_opt = t0.elapsed();
    let r = &fused.report;
    let sites: Vec<String> = r.sites.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "\nfuse    e-graph optimizer in {:.1} ms: {} -> {} ops, {} -> {} kernels, est. traffic {} -> {}",
        t_opt.as_secs_f64() * 1e3,
        r.ops_before,
        r.ops_after,
        r.cost_before.launches,
        r.cost_after.launches,
        birkhoff::ir::format_bytes(r.cost_before.bytes),
        birkhoff::ir::format_bytes(r.cost_after.bytes)
    );
    println!("  found {}", sites.join(", "));
    let summary = birkhoff::compare::compare_optimized_cases(g, &model.inits, 2, a.seed)?;
    for w in &summary.outputs {
        let e = &w.error;
        if e.max_abs == 0.0 {
            println!(
                "  fused vs unfused on {} random input sets (f64): {} identical to the last bit",
                summary.cases, e.name
            );
        } else {
            println!(
                "  fused vs unfused on {} random input sets (f64): {}",
                summary.cases, e
            );
        }
    }
    println!(
        "  (`birkhoff compile mhc-block --fusion-report` shows every pass; --dump-after all writes the IR after each)"
    );

    // 5. Native code: lower the fused graph to kernels and JIT them for this CPU.
    let cpu = birkhoff::compile(g, birkhoff::Target::Cpu)?;
    let unfused_opts = birkhoff::CompileOptions {
        optimize: false,
        ..birkhoff::CompileOptions::default()
    };
    let plain = birkhoff::compile_with(g, &unfused_opts)?;
    let kernels = cpu.program().map_or(0, |p| p.kernels.len());
    let arena = cpu.program().map_or(0, |p| p.arena_bytes);
    println!(
        "\ncpu     compiled for this CPU in {:.1} ms: {kernels} kernels (unfused: {}), arena {:.1} KiB",
        cpu.compile_time().as_secs_f64() * 1e3,
        plain.program().map_or(0, |p| p.kernels.len()),
        arena as f64 / 1024.0
    );
    let time = |exe: &birkhoff::Executable| -> Result<f64> {
        let mut outputs = Vec::new();
        exe.run_into(&inputs, &mut outputs)?;
        let mut ts = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            exe.run_into(&inputs, &mut outputs)?;
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(f64::total_cmp);
        Ok(ts[ts.len() / 2])
    };
    let (t_fused, t_plain) = (time(&cpu)?, time(&plain)?);
    println!(
        "  median of 20 runs: fused {:.3} ms, unfused {:.3} ms, reference interpreter {:.1} ms",
        t_fused * 1e3,
        t_plain * 1e3,
        t_exact.as_secs_f64() * 1e3
    );
    let native = cpu.run(&inputs)?;
    for e in birkhoff::compare::compare(g, &exact, &native)? {
        println!("  native vs interpreter: {e}");
    }

    // 6. The Sinkhorn projection's residual, the property mHC relies on.
    let pre = build_model("mhc-pre", &ModelArgs::default())?;
    let src = Source {
        graph: pre.graph,
        inits: pre.inits,
        imported: None,
    };
    let out = interpret(
        &src.graph,
        &load_inputs(&src, None, Some(a.seed), false)?,
        Precision::F64,
    )?;
    if let Some((_, comb)) = out.iter().find(|(n, _)| n == "comb_mix") {
        let (t, n) = (comb.shape()[0], comb.shape()[1]);
        let v = comb.to_f64_vec();
        let (mut row, mut col) = (0.0f64, 0.0f64);
        for tt in 0..t {
            for i in 0..n {
                row = row.max(((0..n).map(|j| v[(tt * n + i) * n + j]).sum::<f64>() - 1.0).abs());
                col = col.max(((0..n).map(|j| v[(tt * n + j) * n + i]).sum::<f64>() - 1.0).abs());
            }
        }
        println!(
            "\nmHC     comb_mix of mhc-pre ({t} tokens): rows sum to 1 within {row:.1e}, columns within {col:.1e} (doubly stochastic up to eps)"
        );
    }
    train_briefly(a.seed)?;
    println!(
        "\nnext    birkhoff models | birkhoff compile mhc-block --fusion-report | birkhoff compare mhc-block --target cpu\n        birkhoff bench mhc-sublayer --tokens 4096 --hidden 2560 | birkhoff run mhc-pre --seed 0 --outputs out/\n        birkhoff train lm --connection mhc --layers 4 --hidden 64 --steps 500 --out runs/mhc"
    );
    Ok(ExitCode::SUCCESS)
}

/// A few dozen steps of the byte-level mHC language model: autodiff, the
/// optimizer and the CPU backend compile one training step, and the loss
/// falls while the composite Amax gain stays near 1.
fn train_briefly(seed: u64) -> Result<()> {
    use birkhoff::dsl::lm::{LmConfig, build_lm};
    use birkhoff_train::data::{Batches, builtin_corpus};
    use birkhoff_train::{TrainOptions, Trainer};

    const STEPS: usize = 30;
    let cfg = LmConfig {
        layers: 1,
        hidden: 32,
        heads: 2,
        ffn: 128,
        batch: 2,
        seq: 32,
        ..LmConfig::default()
    };
    let start = Instant::now();
    let model = build_lm(&cfg)?;
    let opts = TrainOptions {
        steps: STEPS,
        warmup: 2,
        seed,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&model, &opts)?;
    let corpus = builtin_corpus();
    let mut batches = Batches::new(&corpus.train, cfg.batch, cfg.seq, seed)?;
    let mut first = None;
    let mut last = None;
    for _ in 0..STEPS {
        let (tokens, targets) = batches.next();
        let m = trainer.step(&tokens, &targets)?;
        first.get_or_insert(m.loss);
        last = Some(m);
    }
    if let (Some(first), Some(m)) = (first, last) {
        println!(
            "\ntrain   {STEPS} AdamW steps of a 1-layer mHC byte-level LM (gradients by autodiff, compiled once) in {:.1} s:\n        loss {first:.3} -> {:.3} nats/byte, composite Amax gain {:.4} (forward), {:.4} (backward)",
            start.elapsed().as_secs_f64(),
            m.loss,
            m.composite_forward,
            m.composite_backward
        );
    }
    Ok(())
}
