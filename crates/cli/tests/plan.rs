//! `birkhoff plan`: the mHC block plan, budgets, boundaries, the chart.

mod common;

use common::{Scratch, birkhoff, fails, ok, stderr};

const BASE: [&str; 10] = [
    "plan",
    "lm",
    "--connection",
    "mhc",
    "--layers",
    "60",
    "--hidden",
    "2560",
    "--tokens",
    "4096",
];

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = BASE.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn prints_the_plan() {
    let out = ok(&with(&["--streams", "4"]));
    // 4·⌈60/b⌉ + 6b is smallest (76) at b = 6; 76 · 2560 · 4096 · 2 bytes.
    assert!(out.contains("block size: 6\n"), "{out}");
    assert!(out.contains("sqrt(nL/(n+2)) = 6.32"), "{out}");
    assert!(out.contains("blocks (10): 0..60 (10 × 6)"), "{out}");
    assert!(out.contains("peak: 1.48 GiB"), "{out}");
    assert!(out.contains("recompute: "), "{out}");
}

#[test]
fn boundaries_budget_and_plot() {
    let dir = Scratch::new("plan-plot");
    let png = dir.s("peak.png");
    let out = ok(&with(&[
        "--memory-budget",
        "40GiB",
        "--boundaries",
        "0,15,30,45",
        "--dtype",
        "f32",
        "--plot",
        &png,
    ]));
    assert!(out.contains("block size: 5\n"), "{out}");
    assert!(out.contains("blocks (12): 0..60 (12 × 5)"), "{out}");
    assert!(out.contains("budget: 40.00 GiB"), "{out}");
    let bytes = std::fs::read(dir.path("peak.png")).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
}

#[test]
fn errors() {
    let e = fails(&with(&["--memory-budget", "1GiB"]));
    assert!(
        e.contains("smallest peak is 1.48 GiB (block size 6)"),
        "{e}"
    );
    let e = fails(&with(&["--boundaries", "0,70"]));
    assert!(e.contains("boundary 70 is outside 0..60"), "{e}");
    let e = fails(&with(&["--boundaries", "30,15"]));
    assert!(e.contains("strictly increasing"), "{e}");
    let e = fails(&[
        "plan",
        "lm",
        "--connection",
        "hc",
        "--layers",
        "6",
        "--hidden",
        "8",
        "--tokens",
        "4",
    ]);
    assert!(e.contains("only --connection mhc"), "{e}");
    let o = birkhoff(&with(&["--memory-budget", "40XB"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown unit 'XB'"), "{}", stderr(&o));
    let o = birkhoff(&with(&["--memory-budget", "lots"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid memory size 'lots'"),
        "{}",
        stderr(&o)
    );
}
