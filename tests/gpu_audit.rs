//! The GPU audit (`birkhoff gpu-audit`): its suite builds and audits at
//! small shapes, and each finding fires on a program that has the problem
//! and stays quiet on one that does not. CI runs the audit itself at
//! production shapes (`.ci/run`); these tests check the checker.
#![cfg(feature = "gpu")]

use std::path::PathBuf;

use birkhoff::gpu::CodegenOptions;
use birkhoff::gpu::codegen::audit::{DeviceModel, Finding, audit};
use birkhoff::gpu_audit::{AuditShapes, audit_program, suite};
use birkhoff::ir::parse_graph;
use birkhoff::lower::{LowerOptions, lower};

fn ptxas() -> Option<PathBuf> {
    std::env::var_os("PTXAS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn small() -> AuditShapes {
    AuditShapes {
        tokens: 64,
        hidden: 128,
        streams: 4,
        block_tokens: 32,
        block_hidden: 64,
        heads: 2,
    }
}

#[test]
fn the_suite_audits_at_small_shapes() {
    let device = DeviceModel::h100();
    let programs = suite(&small()).unwrap();
    assert!(programs.len() >= 20, "{} programs", programs.len());
    let ptxas = ptxas();
    for p in &programs {
        let r = audit_program(p, ptxas.as_deref(), &device).unwrap();
        assert!(!r.launches.is_empty(), "{}: no launches", p.name);
        if p.name.starts_with("mhc-post") {
            // One streaming kernel, at its (launch) floor.
            assert!(r.failures().is_empty(), "{}: {:?}", p.name, r.failures());
        }
        for l in &r.launches {
            assert!(l.floor_s > 0.0 && l.model_s() >= l.floor_s, "{}", p.name);
            assert!(l.warp_instructions > 0.0, "{}: {}", p.name, l.launch.entry);
            assert_eq!(l.ptxas.is_some(), ptxas.is_some(), "{}", p.name);
        }
    }
}

/// A program with one launch, lowered with `lo` for the GPU's default
/// code generation.
fn audited(text: &str, lo: &LowerOptions) -> Vec<birkhoff::gpu::codegen::audit::LaunchAudit> {
    let g = parse_graph(text).unwrap();
    let p = lower(&g, lo).unwrap();
    audit(&p, &CodegenOptions::default(), None, &DeviceModel::h100()).unwrap()
}

fn kinds(l: &birkhoff::gpu::codegen::audit::LaunchAudit) -> Vec<&'static str> {
    l.findings.iter().map(Finding::name).collect()
}

#[test]
fn a_matmul_as_loops_is_a_serial_matmul() {
    // The CPU's lowering keeps bf16 products as loop nests.
    let text = "graph @g(%a: bf16[512,512], %b: bf16[512,512]) -> (c: bf16[512,512]) {
  %2 = matmul %a, %b : bf16[512,512]
  return %2
}";
    let cpu = audited(text, &LowerOptions::default());
    assert!(cpu.iter().any(|l| kinds(l).contains(&"serial-matmul")));
    let f32_text = text.replace("bf16", "f32");
    let gpu = audited(&f32_text, &LowerOptions::gpu(Default::default()));
    assert!(gpu.iter().all(|l| !kinds(l).contains(&"serial-matmul")));
}

#[test]
fn a_short_loop_over_long_rows_is_a_small_grid() {
    // A softmax over 4 rows of 65536: a block per row (its sweeps spread
    // over the block's threads), 4 blocks for 65536 chunks of work.
    let text = "graph @g(%x: f32[4,65536]) -> (y: f32[4,65536]) {
  %1 = softmax %x, axis=1 : f32[4,65536]
  return %1
}";
    let l = audited(text, &LowerOptions::gpu(Default::default()));
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].launch.grid, [4, 1, 1]);
    assert!(kinds(&l[0]).contains(&"small-grid"), "{:?}", kinds(&l[0]));
    // Column sums over 4 outer rows: the columns go on the grid, a thread
    // each, in blocks small enough for 264 of them.
    let sums = "graph @g(%x: f32[4,4096,4096]) -> (y: f32[4,4096]) {
  %1 = reduce_sum %x, axes=[1] : f32[4,4096]
  return %1
}";
    let l = audited(sums, &LowerOptions::gpu(Default::default()));
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].launch.block, 32);
    assert_eq!(l[0].launch.grid, [128, 4, 1]);
    assert!(l[0].findings.is_empty(), "{:?}", kinds(&l[0]));
    // Row sums of the same tensor: a block per row, 4 × 4096 of them.
    let rows = sums.replace("axes=[1]", "axes=[2]");
    let l = audited(&rows, &LowerOptions::gpu(Default::default()));
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].launch.grid, [4096, 4, 1]);
    assert!(l[0].findings.is_empty(), "{:?}", kinds(&l[0]));
}

#[test]
fn an_elementwise_stream_sits_at_its_memory_floor() {
    let text = "graph @g(%x: f32[8192,4096]) -> (y: f32[8192,4096]) {
  %1 = neg %x : f32[8192,4096]
  return %1
}";
    let l = audited(text, &LowerOptions::gpu(Default::default()));
    assert_eq!(l.len(), 1);
    let l = &l[0];
    assert_eq!(l.bytes, 2 * 8192 * 4096 * 4);
    assert!(l.findings.is_empty(), "{:?}", kinds(l));
    assert!(
        l.model_s() < 1.2 * l.floor_s,
        "{} vs {}",
        l.model_s(),
        l.floor_s
    );
}
