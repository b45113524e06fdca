//! `birkhoff train` and `train-compare` end to end, on a model small
//! enough to train in a second: the loss falls, every output file is
//! written, an interrupted run resumed gives exactly the uninterrupted
//! run's metrics, bad flags fail cleanly, and `--profile` lists every
//! kernel once with times that add up.

mod common;

use common::{Scratch, birkhoff, fails, files_in, ok, stderr};
use serde_json::Value;

/// A one-layer model of width 32 on 2×32-byte batches.
const TINY: &[&str] = &[
    "train",
    "lm",
    "--layers",
    "1",
    "--hidden",
    "32",
    "--heads",
    "2",
    "--seq",
    "32",
    "--batch",
    "2",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
];

fn train(extra: &[&str]) -> String {
    let mut args = TINY.to_vec();
    args.extend_from_slice(extra);
    ok(&args)
}

fn metrics(dir: &str) -> Value {
    let text = std::fs::read_to_string(format!("{dir}/metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn column(csv: &str, col: usize) -> Vec<String> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').nth(col).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn training_lowers_the_loss_and_writes_every_file() {
    let d = Scratch::new("train-files");
    let out = d.s("mhc");
    let said = train(&["--steps", "40", "--out", &out]);
    assert!(said.contains("trained to step 40 of 40"), "{said}");
    assert_eq!(
        files_in(&d.path("mhc")),
        [
            "amax.png",
            "amax_depth.png",
            "checkpoint.safetensors",
            "grad_norm.png",
            "loss.png",
            "metrics.csv",
            "metrics.json"
        ]
    );
    for png in ["amax.png", "amax_depth.png", "grad_norm.png", "loss.png"] {
        let b = std::fs::read(d.path(&format!("mhc/{png}"))).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
    let m = metrics(&out);
    let steps = m["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 40);
    assert_eq!(m["connection"], "mhc");
    let first = steps[0]["loss"].as_f64().unwrap();
    let last = steps[39]["loss"].as_f64().unwrap();
    // A byte-level model starts near ln 256 ≈ 5.55 nats and learns the
    // corpus's byte frequencies within a few dozen steps.
    assert!((first - 256f64.ln()).abs() < 0.2, "initial loss {first}");
    assert!(last < first - 1.0, "loss {first} -> {last}");
    // One Amax gain per sublayer (attention and MLP of one layer), and
    // mHC's doubly stochastic mixing keeps the composite gain near 1.
    assert_eq!(steps[39]["amax_forward"].as_array().unwrap().len(), 2);
    let gain = steps[39]["composite_forward"].as_f64().unwrap();
    assert!((gain - 1.0).abs() < 0.05, "composite gain {gain}");
    let csv = std::fs::read_to_string(d.path("mhc/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 41);
    let valid = column(&csv, 2);
    assert!(!valid[0].is_empty() && valid[1].is_empty() && !valid[39].is_empty());
}

#[test]
fn an_interrupted_run_resumes_to_the_same_metrics() {
    let d = Scratch::new("train-resume");
    let (a, b) = (d.s("a"), d.s("b"));
    train(&["--steps", "25", "--out", &a]);
    let said = train(&["--steps", "25", "--stop-after", "12", "--out", &b]);
    assert!(said.contains("trained to step 12 of 25"), "{said}");
    train(&["--steps", "25", "--resume", "--out", &b]);
    let ca = std::fs::read_to_string(d.path("a/metrics.csv")).unwrap();
    let cb = std::fs::read_to_string(d.path("b/metrics.csv")).unwrap();
    // Everything but the step times.
    for col in 0..7 {
        assert_eq!(column(&ca, col), column(&cb, col), "column {col}");
    }
}

#[test]
fn residual_and_hc_train_and_compare() {
    let d = Scratch::new("train-compare");
    let (r, h) = (d.s("residual"), d.s("hc"));
    train(&["--steps", "5", "--connection", "residual", "--out", &r]);
    train(&["--steps", "5", "--connection", "hc", "--out", &h]);
    // The residual model has no mixing: no gain charts.
    assert!(!files_in(&d.path("residual")).contains(&"amax.png".to_string()));
    assert!(files_in(&d.path("hc")).contains(&"amax.png".to_string()));
    let cmp = d.s("cmp");
    ok(&["train-compare", &r, &h, "--out", &cmp]);
    assert_eq!(
        files_in(&d.path("cmp")),
        ["amax.png", "grad_norm.png", "loss.png", "valid_loss.png"]
    );
}

#[test]
fn bad_training_flags_fail_cleanly() {
    let d = Scratch::new("train-bad");
    let out = d.s("x");
    let e = fails(&["train", "mlp", "--out", &out]);
    assert!(e.contains("unknown model 'mlp'"), "{e}");
    let e = fails(&["train", "lm", "--heads", "5", "--out", &out]);
    assert!(e.contains("--heads 5 must divide --hidden 64"), "{e}");
    let e = fails(&["train", "lm", "--steps", "0", "--out", &out]);
    assert!(e.contains("--steps must be at least 1"), "{e}");
    let e = fails(&["train", "lm", "--resume", "--out", &out]);
    assert!(e.contains("no checkpoint"), "{e}");
    let missing = d.s("nope.txt");
    let e = fails(&["train", "lm", "--corpus", &missing, "--out", &out]);
    assert!(e.contains("nope.txt"), "{e}");
    let e = fails(&["train-compare", &d.s("none"), "--out", &d.s("cmp")]);
    assert!(e.contains("metrics.json"), "{e}");
}

#[test]
fn recompute_plans_train_to_the_same_metrics() {
    let d = Scratch::new("train-recompute");
    let (none, block) = (d.s("none"), d.s("block"));
    train(&["--steps", "6", "--out", &none]);
    let said = train(&["--steps", "6", "--recompute", "block=2", "--out", &block]);
    assert!(said.contains("trained to step 6 of 6"), "{said}");
    let m = metrics(&block);
    assert_eq!(m["memory"]["recompute"], "block=2");
    assert_eq!(m["memory"]["block"], 2);
    assert!(m["memory"]["recomputed_values"].as_u64().unwrap() > 0);
    assert!(m["memory"]["arena_bytes"].as_u64().unwrap() > 0);
    let (ca, cb) = (
        std::fs::read_to_string(d.path("none/metrics.csv")).unwrap(),
        std::fs::read_to_string(d.path("block/metrics.csv")).unwrap(),
    );
    // Recomputation changes no bits (docs/recompute.md): every loss and
    // gradient norm is printed the same.
    for col in [1, 3] {
        assert_eq!(column(&ca, col), column(&cb, col), "column {col}");
    }
}

#[test]
fn bad_recompute_plans_fail_cleanly() {
    let d = Scratch::new("train-recompute-bad");
    let out = d.s("x");
    // (The model is built, and says so, before the plan is refused.)
    let refused = |extra: &[&str]| {
        let mut args = TINY.to_vec();
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", &out]);
        let o = birkhoff(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let e = refused(&["--connection", "residual", "--recompute", "block=2"]);
    assert!(e.contains("needs mHC (or HC) connections"), "{e}");
    let e = refused(&["--recompute", "block=3"]);
    assert!(
        e.contains("larger than the graph's 2 mHC connections"),
        "{e}"
    );
}

#[test]
fn a_profile_times_every_kernel_and_adds_up() {
    let d = Scratch::new("train-profile");
    let out = d.s("p");
    let said = train(&["--steps", "2", "--profile", "--out", &out]);
    assert!(
        said.contains("profile of one gradient step (each kernel's fastest of 5 runs)"),
        "{said}"
    );
    let text = std::fs::read_to_string(d.path("p/profile.txt")).unwrap();
    let mut lines = text.lines();
    // "# N kernels, T ms in all (…); arena B bytes"
    let header = lines.next().unwrap();
    let words: Vec<&str> = header.split_whitespace().collect();
    let (count, total): (usize, f64) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert_eq!(lines.next(), Some("# kernel  ms  share"));
    let kernels: Vec<(String, f64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l}");
            assert!(f[2].ends_with('%'), "{l}");
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect();
    assert!(count > 10 && kernels.len() == count, "{header}");
    let mut names: Vec<&str> = kernels.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "every kernel once");
    assert!(kernels.iter().all(|(_, ms)| *ms >= 0.0));
    // Each line is rounded to 0.1 µs.
    let sum: f64 = kernels.iter().map(|(_, ms)| ms).sum();
    assert!(
        (sum - total).abs() <= 1e-3 + 1e-4 * count as f64,
        "{sum} against {total}"
    );
}

/// Impossible flags are refused before anything runs, a resume that
/// would mix settings or lose rows is refused, and a checkpoint past the
/// planned steps is an error, not a silent no-op.
#[test]
fn training_refuses_what_would_go_wrong_later() {
    let d = Scratch::new("train-refusals");
    let out = d.s("x");
    for (flag, says) in [
        ("--lr=-1", "--lr must be a positive number"),
        ("--lr=nan", "--lr must be a positive number"),
        (
            "--weight-decay=-5",
            "--weight-decay must be a non-negative number",
        ),
        ("--stop-after=0", "--stop-after must be at least 1"),
    ] {
        let mut args = TINY.to_vec();
        args.extend_from_slice(&["--steps", "3", flag, "--out", &out]);
        let e = fails(&args);
        assert!(e.contains(says), "{flag}: {e}");
    }
    assert!(!d.path("x").exists(), "a refused run wrote its --out");

    let run = d.s("run");
    train(&["--steps", "6", "--stop-after", "3", "--out", &run]);
    let resume = |extra: &[&str]| {
        let mut args = TINY.to_vec();
        args.extend_from_slice(&["--resume", "--out", &run]);
        args.extend_from_slice(extra);
        fails(&args)
    };
    // A resume with other settings would mix two runs in one file.
    let e = resume(&["--steps", "6", "--seed", "9"]);
    assert!(e.contains("--resume with seed = 9"), "{e}");
    // Rows lost from metrics.json are noticed, not silently dropped.
    let saved = std::fs::read_to_string(d.path("run/metrics.json")).unwrap();
    let mut emptied: Value = serde_json::from_str(&saved).unwrap();
    emptied["steps"] = Value::Array(Vec::new());
    std::fs::write(d.path("run/metrics.json"), emptied.to_string()).unwrap();
    let e = resume(&["--steps", "6"]);
    assert!(
        e.contains("holds 0 steps but the checkpoint is at step 3"),
        "{e}"
    );
    std::fs::write(d.path("run/metrics.json"), saved).unwrap();
    // A checkpoint past the planned steps.
    let e = resume(&["--steps", "2"]);
    assert!(
        e.contains("the checkpoint is at step 3, past --steps 2"),
        "{e}"
    );
}

/// kill -9 at random moments of short runs, each resumed until it
/// finishes: the metrics always equal an uninterrupted run's (the step
/// times aside). `BIRKHOFF_KILLS` sets how many kills (4 by default; CI
/// runs 50).
#[cfg(unix)]
#[test]
fn killed_runs_resume_to_the_uninterrupted_metrics() {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let d = Scratch::new("train-kill");
    // TINY, checkpointing every other step.
    let every_other: Vec<&str> = TINY
        .iter()
        .map(|&a| if a == "10" { "2" } else { a })
        .collect();
    let run_args = |dir: &str, resume: bool| {
        let mut a: Vec<String> = every_other.iter().map(|s| (*s).to_string()).collect();
        a.extend(["--steps", "20", "--out", dir].map(String::from));
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let whole = d.s("whole");
    let args = run_args(&whole, false);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let want = std::fs::read_to_string(d.path("whole/metrics.csv")).unwrap();
    let target: u64 = std::env::var("BIRKHOFF_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let (mut kills, mut runs) = (0, 0);
    while kills < target {
        let dir = d.s(&format!("killed{runs}"));
        runs += 1;
        // Start, kill at a random moment, resume, until a start finishes.
        loop {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let resume = Path::new(&dir).join("checkpoint.safetensors").exists();
            let mut child = Command::new(env!("CARGO_BIN_EXE_birkhoff"))
                .args(run_args(&dir, resume))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(50 + rng % 1500));
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "a run failed on its own: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        let got = std::fs::read_to_string(format!("{dir}/metrics.csv")).unwrap();
        for col in 0..7 {
            assert_eq!(
                column(&want, col),
                column(&got, col),
                "run {runs}, column {col}"
            );
        }
    }
}
