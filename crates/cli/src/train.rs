//! `birkhoff train`: train the byte-level language model and record what
//! the paper measures — loss, gradient norm and the Amax gain of the
//! residual mixing — as CSV, JSON and PNG charts.
//!
//! Everything lands in `--out DIR`: `metrics.csv` (one row per step),
//! `metrics.json` (the run's settings and every step, per-sublayer gains
//! included), `checkpoint.safetensors`, and `loss.png`, `grad_norm.png`,
//! `amax.png`, `amax_depth.png`. Files are replaced atomically. With
//! `--resume` the run continues from the checkpoint in `DIR`, on the same
//! batches it would have seen, and its metrics continue the old ones.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use birkhoff::dsl::lm::{LmConfig, build_lm};
use birkhoff::dsl::zoo::Connection;
use birkhoff::ir::Tensor;
use birkhoff::write_atomic;
use birkhoff_train::data::{Batches, Corpus, builtin_corpus, load_corpus};
use birkhoff_train::{StepMetrics, StepSplit, TrainOptions, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::args::TrainArgs;
use crate::plot::{Chart, Series, line_chart};

/// Validation batches averaged for each validation loss.
const VALID_BATCHES: usize = 4;

/// One step's record.
#[derive(Clone, Debug)]
struct Row {
    m: StepMetrics,
    valid: Option<f64>,
}

pub fn main(a: &TrainArgs) -> Result<ExitCode> {
    if a.model != "lm" {
        bail!(
            "unknown model '{}' for train: the trainable model is 'lm' (the byte-level language model)",
            a.model
        );
    }
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    // Flags are checked before anything is built or written.
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!(
            "--weight-decay must be a non-negative number, got {}",
            a.weight_decay
        );
    }
    if a.stop_after == Some(0) {
        bail!("--stop-after must be at least 1 (it counts the steps this run takes)");
    }
    let cfg = config(a)?;
    let opts = TrainOptions {
        steps: a.steps,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup: a.warmup.unwrap_or(a.steps / 20),
        seed: a.seed,
        target: a.target.into(),
        recompute: a.recompute,
        ..TrainOptions::default()
    };
    let corpus = match &a.corpus {
        Some(p) => load_corpus(p, 0.1)?,
        None => builtin_corpus(),
    };
    let ckpt = a.out.join("checkpoint.safetensors");
    if a.resume && !ckpt.exists() {
        bail!("--resume: no checkpoint at {}", ckpt.display());
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create the output directory {}", a.out.display()))?;
    // A read-only directory is found now, not at the first checkpoint.
    let probe = a.out.join(format!(".write-check.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write into the output directory {}", a.out.display()))?;
    let _ = std::fs::remove_file(&probe);
    // A resume is checked against the saved run before anything is built.
    let resumed_rows = if a.resume {
        let step = birkhoff_train::checkpoint_step(&ckpt)?;
        // At exactly --steps the run is complete (it may have been killed
        // while drawing its charts): the resume only writes its outputs.
        if step > a.steps {
            bail!(
                "--resume: the checkpoint is at step {step}, past --steps {}: raise --steps to train further",
                a.steps
            );
        }
        same_settings_as_the_saved_run(&a.out, &cfg, &opts)?;
        previous_rows(&a.out, step)?
    } else {
        Vec::new()
    };

    eprintln!(
        "building the {} language model: {} layers, C={}, n={}, {} heads, batch {}×{} bytes",
        cfg.connection,
        cfg.layers,
        cfg.hidden,
        cfg.stream_count(),
        cfg.heads,
        cfg.batch,
        cfg.seq
    );
    let model = build_lm(&cfg)?;
    let started = Instant::now();
    let mut trainer = if a.resume {
        Trainer::load(&model, &opts, &ckpt)?
    } else {
        Trainer::new(&model, &opts)?
    };
    eprintln!(
        "compiled the training step in {:.1} s ({} parameters)",
        started.elapsed().as_secs_f64(),
        trainer
            .param_names()
            .iter()
            .filter_map(|n| trainer.param(n))
            .map(|t| t.ty().num_elements())
            .sum::<usize>()
    );
    let memory = memory_report(&trainer);

    let mut batches = Batches::new(&corpus.train, cfg.batch, cfg.seq, a.seed)?;
    let valid = validation_batches(&corpus, &cfg, a.seed)?;
    let mut rows = resumed_rows;
    // The batches the saved run already consumed.
    for _ in 0..trainer.step_index() {
        batches.next();
    }

    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps, {elapsed} (eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step_index() as u64);
    let end = a
        .stop_after
        .map_or(a.steps, |n| (trainer.step_index() + n).min(a.steps));
    let mut splits = Vec::new();
    while trainer.step_index() < end {
        let (tokens, targets) = batches.next();
        let m = trainer.step(&tokens, &targets)?;
        splits.push(trainer.last_split());
        let step = m.step;
        let is_last = trainer.step_index() == a.steps;
        let stopping = trainer.step_index() == end;
        let valid_loss = if (step as u64).is_multiple_of(a.eval_every) || is_last {
            Some(valid_loss(&mut trainer, &valid)?)
        } else {
            None
        };
        bar.set_message(format!(
            "loss {:.3}{}, gain {:.3}",
            m.loss,
            valid_loss.map_or(String::new(), |v| format!(" (valid {v:.3})")),
            m.composite_forward
        ));
        bar.inc(1);
        rows.push(Row {
            m,
            valid: valid_loss,
        });
        if (trainer.step_index() as u64).is_multiple_of(a.checkpoint_every) || is_last || stopping {
            // Metrics first: killed between the two writes, the metrics
            // hold more rows than the checkpoint's steps, and a resume
            // keeps only the checkpoint's (and recomputes the rest
            // identically); the other order would lose rows.
            write_metrics(&a.out, a, &cfg, &opts, &rows, &memory)?;
            trainer.save(&ckpt)?;
        }
    }
    bar.finish_and_clear();
    write_metrics(&a.out, a, &cfg, &opts, &rows, &memory)?;
    plot_run(&a.out, &rows)?;
    if a.profile {
        print_split(&splits);
        let (tokens, targets) = batches.next();
        profile_step(&mut trainer, &tokens, &targets, &a.out)?;
    }
    let last = rows.last().context("no steps were run")?;
    println!(
        "trained to step {} of {} in {:.1} s: loss {:.4}, valid {}, composite Amax gain {:.4} (forward) {:.4} (backward)",
        rows.len(),
        a.steps,
        started.elapsed().as_secs_f64(),
        last.m.loss,
        rows.iter()
            .rev()
            .find_map(|r| r.valid)
            .map_or("-".into(), |v| format!("{v:.4}")),
        last.m.composite_forward,
        last.m.composite_backward
    );
    println!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// The gradient step's recomputation plan and memory, printed and kept for
/// `metrics.json`: the arena a run allocates (measured: the memory plan's
/// high-water mark) next to the planner's prediction.
fn memory_report(t: &Trainer) -> Value {
    let exe = t.gradient_executable();
    let plan = exe.recompute_plan();
    let arena = exe.arena_bytes();
    if let Some(p) = plan {
        eprintln!("{p}");
    }
    let live = exe.peak_live_bytes();
    if let (Some(bytes), Some(live)) = (arena, live) {
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        eprintln!(
            "activation arena of the gradient step: {:.2} MiB (peak of live temporaries {:.2} MiB)",
            mib(bytes),
            mib(live)
        );
    }
    json!({
        "recompute": t.options().recompute.to_string(),
        "block": plan.and_then(|p| p.block),
        "recomputed_values": plan.map(|p| p.recompute.len()),
        "arena_bytes": arena,
        "peak_live_bytes": live,
        "predicted_peak_bytes": plan.map(|p| p.peak_bytes),
        "keep_all_peak_bytes": plan.map(|p| p.keep_all_peak_bytes),
        "recompute_cost": plan.map(|p| p.recompute_cost),
    })
}

/// Prints where the updates' time went: each part's median over the
/// steps after the first (which touches fresh memory), and its share of
/// the sum of the medians.
fn print_split(splits: &[StepSplit]) {
    let kept = splits.get(1..).filter(|s| !s.is_empty()).unwrap_or(splits);
    if kept.is_empty() {
        return;
    }
    let median = |f: fn(&StepSplit) -> f64| {
        let mut v: Vec<f64> = kept.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let parts = [
        ("gradient program", median(|s| s.gradient)),
        ("host (batch, norm, checks, gains)", median(|s| s.host)),
        ("AdamW program", median(|s| s.update)),
    ];
    let total: f64 = parts.iter().map(|p| p.1).sum();
    let text: Vec<String> = parts
        .iter()
        .map(|(what, t)| format!("{what} {:.2} ms ({:.1}%)", t * 1e3, 100.0 * t / total))
        .collect();
    println!(
        "step time, median of {} steps: {}",
        kept.len(),
        text.join(", ")
    );
}

/// Kernels `--profile` prints (all go to the file).
const PROFILE_SHOWN: usize = 12;

/// Timed gradient steps `--profile` takes each kernel's fastest time from.
const PROFILE_RUNS: usize = 5;

/// Times one gradient step kernel by kernel, each kernel's fastest of
/// [`PROFILE_RUNS`] runs (on a busy machine one run's times are noisy
/// enough to hide a 1 ms kernel); writes every kernel in program order to
/// `out/profile.txt` and prints the slowest.
fn profile_step(t: &mut Trainer, tokens: &Tensor, targets: &Tensor, out: &Path) -> Result<()> {
    let batch = birkhoff_train::lm_batch(tokens, targets);
    // The first run touches the arena's pages; it is not timed.
    t.profile_gradient(&batch)?;
    let mut times = t.profile_gradient(&batch)?;
    for _ in 1..PROFILE_RUNS {
        for (best, k) in times.iter_mut().zip(t.profile_gradient(&batch)?) {
            best.time = best.time.min(k.time);
        }
    }
    let total: f64 = times.iter().map(|k| k.time.as_secs_f64()).sum();
    let mut text = format!(
        "# {} kernels, {:.3} ms in all (each kernel's fastest of {PROFILE_RUNS} runs); arena {} bytes\n# kernel  ms  share\n",
        times.len(),
        total * 1e3,
        t.gradient_executable()
            .program()
            .map_or(0, |p| p.arena_bytes)
    );
    for k in &times {
        let s = k.time.as_secs_f64();
        let _ = writeln!(text, "{} {:.4} {:.2}%", k.name, s * 1e3, 100.0 * s / total);
    }
    let path = out.join("profile.txt");
    write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut slow: Vec<_> = times.iter().enumerate().collect();
    slow.sort_by_key(|k| std::cmp::Reverse(k.1.time));
    println!(
        "profile of one gradient step (each kernel's fastest of {PROFILE_RUNS} runs): {} kernels, {:.2} ms; slowest:",
        times.len(),
        total * 1e3
    );
    for (i, k) in slow.into_iter().take(PROFILE_SHOWN) {
        let s = k.time.as_secs_f64();
        println!(
            "  #{i:<5} {:<40} {:>9.3} ms {:>5.1}%",
            k.name,
            s * 1e3,
            100.0 * s / total
        );
    }
    println!("wrote {}", path.display());
    Ok(())
}

fn config(a: &TrainArgs) -> Result<LmConfig> {
    let d = LmConfig::default();
    let hidden = a.hidden.unwrap_or(d.hidden);
    let cfg = LmConfig {
        connection: a.connection,
        layers: a.layers.unwrap_or(d.layers),
        hidden,
        streams: a.streams.unwrap_or(d.streams),
        heads: a.heads.unwrap_or(d.heads),
        ffn: a.ffn.unwrap_or(4 * hidden),
        batch: a.batch,
        seq: a.seq,
        sinkhorn_iters: a.iters.unwrap_or(d.sinkhorn_iters),
        ..d
    };
    if !cfg.hidden.is_multiple_of(cfg.heads) {
        bail!("--heads {} must divide --hidden {}", cfg.heads, cfg.hidden);
    }
    Ok(cfg)
}

/// Fixed validation batches, the same for every step and every resume.
fn validation_batches(corpus: &Corpus, cfg: &LmConfig, seed: u64) -> Result<Vec<(Tensor, Tensor)>> {
    let mut b = Batches::new(&corpus.valid, cfg.batch, cfg.seq, seed ^ 0x05ee_d0f7_a11d)
        .context("the validation split is too short for one batch")?;
    Ok((0..VALID_BATCHES).map(|_| b.next()).collect())
}

fn valid_loss(t: &mut Trainer, valid: &[(Tensor, Tensor)]) -> Result<f64> {
    let mut sum = 0.0;
    for (tokens, targets) in valid {
        sum += t.eval_loss(tokens, targets)?;
    }
    Ok(sum / valid.len() as f64)
}

/// Refuses a resume whose settings differ from the run it continues: one
/// metrics file would mix two configurations.
fn same_settings_as_the_saved_run(out: &Path, cfg: &LmConfig, o: &TrainOptions) -> Result<()> {
    let path = out.join("metrics.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--resume: cannot read {}", path.display()))?;
    let saved: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let now = [
        ("connection", json!(cfg.connection.to_string())),
        ("layers", json!(cfg.layers)),
        ("hidden", json!(cfg.hidden)),
        ("heads", json!(cfg.heads)),
        ("batch", json!(cfg.batch)),
        ("seq", json!(cfg.seq)),
        ("lr", json!(o.lr)),
        ("weight_decay", json!(o.weight_decay)),
        ("seed", json!(o.seed)),
    ];
    for (key, value) in now {
        if saved[key] != value {
            bail!(
                "--resume with {key} = {value}, but the run in {} was started with {key} = {}: \
                 resume with the same settings, or train into a new --out",
                out.display(),
                saved[key]
            );
        }
    }
    Ok(())
}

/// The rows of a previous run's `metrics.json`, up to `steps`.
fn previous_rows(out: &Path, steps: usize) -> Result<Vec<Row>> {
    let path = out.join("metrics.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--resume: cannot read {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let steps_v = v["steps"]
        .as_array()
        .with_context(|| format!("{} has no 'steps' array", path.display()))?;
    if steps_v.len() < steps {
        bail!(
            "--resume: {} holds {} steps but the checkpoint is at step {steps}: rows are missing, \
             so the resumed metrics would silently lack them",
            path.display(),
            steps_v.len()
        );
    }
    let first = steps_v.first().and_then(|s| s["step"].as_u64());
    for (i, s) in steps_v.iter().take(steps).enumerate() {
        if s["step"].as_u64() != first.map(|f| f + i as u64) {
            bail!(
                "--resume: {} row {i} is not the step after row {}: the rows are not one run's",
                path.display(),
                i.saturating_sub(1)
            );
        }
    }
    let f = |x: &Value, k: &str| x[k].as_f64().unwrap_or(f64::NAN);
    let fv = |x: &Value, k: &str| -> Vec<f64> {
        x[k].as_array()
            .map(|a| a.iter().map(|e| e.as_f64().unwrap_or(f64::NAN)).collect())
            .unwrap_or_default()
    };
    Ok(steps_v
        .iter()
        .take(steps)
        .map(|s| Row {
            m: StepMetrics {
                step: s["step"].as_u64().unwrap_or(0) as usize,
                loss: f(s, "loss"),
                grad_norm: f(s, "grad_norm"),
                lr: f(s, "lr"),
                amax_forward: fv(s, "amax_forward"),
                amax_backward: fv(s, "amax_backward"),
                composite_forward: f(s, "composite_forward"),
                composite_backward: f(s, "composite_backward"),
                seconds: f(s, "seconds"),
            },
            valid: s["valid_loss"].as_f64(),
        })
        .collect())
}

fn write_metrics(
    out: &Path,
    a: &TrainArgs,
    cfg: &LmConfig,
    o: &TrainOptions,
    rows: &[Row],
    memory: &Value,
) -> Result<()> {
    let mut csv = String::from(
        "step,loss,valid_loss,grad_norm,lr,composite_forward,composite_backward,seconds\n",
    );
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            r.m.step,
            r.m.loss,
            r.valid.map_or(String::new(), |v| v.to_string()),
            r.m.grad_norm,
            r.m.lr,
            r.m.composite_forward,
            r.m.composite_backward,
            r.m.seconds
        );
    }
    let steps: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "step": r.m.step,
                "loss": r.m.loss,
                "valid_loss": r.valid,
                "grad_norm": r.m.grad_norm,
                "lr": r.m.lr,
                "amax_forward": r.m.amax_forward,
                "amax_backward": r.m.amax_backward,
                "composite_forward": r.m.composite_forward,
                "composite_backward": r.m.composite_backward,
                "seconds": r.m.seconds,
            })
        })
        .collect();
    let doc = json!({
        "model": "lm",
        "connection": cfg.connection.to_string(),
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "streams": cfg.stream_count(),
        "heads": cfg.heads,
        "ffn": cfg.ffn,
        "batch": cfg.batch,
        "seq": cfg.seq,
        "sinkhorn_iters": cfg.sinkhorn_iters,
        "steps_planned": o.steps,
        "lr": o.lr,
        "weight_decay": o.weight_decay,
        "warmup": o.warmup,
        "seed": o.seed,
        "backend": a.target.name(),
        "corpus": a.corpus.as_ref().map(|p| p.display().to_string()),
        "memory": memory,
        "steps": steps,
    });
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())
        .with_context(|| format!("writing {}", out.join("metrics.csv").display()))?;
    let text = serde_json::to_string_pretty(&doc)?;
    write_atomic(&out.join("metrics.json"), text.as_bytes())
        .with_context(|| format!("writing {}", out.join("metrics.json").display()))?;
    Ok(())
}

fn series(name: &str, rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Series {
    Series {
        name: name.to_string(),
        points: rows
            .iter()
            .filter_map(|r| f(r).map(|y| (r.m.step as f64, y)))
            .collect(),
    }
}

/// The run's charts.
fn plot_run(out: &Path, rows: &[Row]) -> Result<()> {
    let chart = |title, y, log_y| Chart {
        title,
        x: "step",
        y,
        log_y,
    };
    line_chart(
        &out.join("loss.png"),
        &chart("loss", "cross-entropy (nats/byte)", false),
        &[
            series("train", rows, |r| Some(r.m.loss)),
            series("valid", rows, |r| r.valid),
        ],
    )?;
    line_chart(
        &out.join("grad_norm.png"),
        &chart("gradient norm", "global L2 norm", true),
        &[series("", rows, |r| Some(r.m.grad_norm))],
    )?;
    if rows.iter().any(|r| !r.m.amax_forward.is_empty()) {
        line_chart(
            &out.join("amax.png"),
            &chart("composite Amax gain", "gain (max over tokens)", true),
            &[
                series("forward", rows, |r| Some(r.m.composite_forward)),
                series("backward", rows, |r| Some(r.m.composite_backward)),
            ],
        )?;
        if let Some(last) = rows.last() {
            let depth = |v: &[f64]| -> Vec<(f64, f64)> {
                v.iter().enumerate().map(|(i, &g)| (i as f64, g)).collect()
            };
            line_chart(
                &out.join("amax_depth.png"),
                &Chart {
                    title: "Amax gain per sublayer (last step)",
                    x: "sublayer",
                    y: "gain",
                    log_y: true,
                },
                &[
                    Series {
                        name: "forward".into(),
                        points: depth(&last.m.amax_forward),
                    },
                    Series {
                        name: "backward".into(),
                        points: depth(&last.m.amax_backward),
                    },
                ],
            )?;
        }
    }
    Ok(())
}

/// `birkhoff train-compare`: the runs in `dirs` on shared charts.
pub fn compare(dirs: &[PathBuf], out: &Path) -> Result<ExitCode> {
    if dirs.is_empty() {
        bail!("name at least one training output directory");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut runs = Vec::new();
    for d in dirs {
        let path = d.join("metrics.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let steps = v["steps"].as_array().cloned().unwrap_or_default();
        let name = format!(
            "{} (L={}, C={})",
            v["connection"].as_str().unwrap_or("?"),
            v["layers"],
            v["hidden"]
        );
        runs.push((name, steps));
    }
    let pick = |key: &str| -> Vec<Series> {
        runs.iter()
            .map(|(name, steps)| Series {
                name: name.clone(),
                points: steps
                    .iter()
                    .filter_map(|s| Some((s["step"].as_f64()?, s[key].as_f64()?)))
                    .collect(),
            })
            .collect()
    };
    let chart = |title, y, log_y| Chart {
        title,
        x: "step",
        y,
        log_y,
    };
    line_chart(
        &out.join("valid_loss.png"),
        &chart("validation loss", "nats/byte", false),
        &pick("valid_loss"),
    )?;
    line_chart(
        &out.join("loss.png"),
        &chart("training loss", "nats/byte", false),
        &pick("loss"),
    )?;
    line_chart(
        &out.join("grad_norm.png"),
        &chart("gradient norm", "global L2 norm", true),
        &pick("grad_norm"),
    )?;
    // A residual run has no mixing matrices, so no gain to draw.
    let mixing: Vec<bool> = runs
        .iter()
        .map(|(_, steps)| {
            steps
                .iter()
                .any(|s| s["amax_forward"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .collect();
    let gains: Vec<Series> = pick("composite_forward")
        .into_iter()
        .zip(&mixing)
        .filter(|(_, m)| **m)
        .map(|(s, _)| s)
        .collect();
    if !gains.is_empty() {
        line_chart(
            &out.join("amax.png"),
            &chart("composite Amax gain (forward)", "gain", true),
            &gains,
        )?;
    }
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The connection flag's parser.
pub fn parse_connection(s: &str) -> std::result::Result<Connection, String> {
    s.parse::<Connection>()
        .map_err(|_| format!("unknown connection '{s}' (residual, hc or mhc)"))
}
