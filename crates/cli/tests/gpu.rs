//! The `birkhoff` command's GPU paths end to end, on whatever machine the
//! tests run on. What each command must do depends on two facts, asked at
//! run time (so the tests are right whichever features the binary was
//! built with, and with or without a GPU):
//!
//! * code generation (`birkhoff::gpu::CODEGEN_ENABLED`, the `gpu` feature):
//!   without it, GPU code generation fails saying how to rebuild;
//! * a CUDA driver (`birkhoff::gpu::driver_present`): without it, anything
//!   that needs the device fails saying there is no driver; with one it
//!   runs.
//!
//! Every failure is one `error:` line, exit status 1 and no panic.
//! Artifacts are checked with a small hand-made module (LLVM-generated PTX
//! that doubles a vector), so artifact loading, its errors and — on a GPU
//! — running one need no code generator.

mod common;

use std::path::Path;

use common::{Scratch, birkhoff, fails, ok};

use birkhoff::gpu::{ARTIFACT_VERSION, BufferInfo, CODEGEN_ENABLED, GpuModule, Launch};
use birkhoff::ir::{DType, Tensor, TensorType};
use birkhoff::npy::{read_npy, write_npy};
use serde_json::Value;

/// The last line of stdout that is a JSON object, parsed.
fn json_of(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object in:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("invalid JSON ({e}): {line}"))
}

fn driver() -> bool {
    birkhoff::gpu::driver_present()
}

const NO_DRIVER: &str = "no CUDA driver found";
const REBUILD: &str = "rebuild with `--features gpu` (needs LLVM 19)";

/// What a command that compiles for and runs on the GPU must say when it
/// cannot: the device is opened first, then code is generated.
fn expected_gpu_failure() -> Option<&'static str> {
    if !driver() {
        Some(NO_DRIVER)
    } else if !CODEGEN_ENABLED {
        Some(REBUILD)
    } else {
        None
    }
}

#[test]
fn run_verify_and_bench_on_the_gpu_run_or_say_why_not() {
    let run = ["run", "mhc-pre", "--seed", "1", "--target", "gpu"];
    let verify = ["compare", "mhc-pre", "--cases", "1", "--target", "gpu"];
    let bench = [
        "bench", "mhc-pre", "--runs", "2", "--warmup", "1", "--target", "gpu", "--json",
    ];
    match expected_gpu_failure() {
        Some(why) => {
            for args in [&run[..], &verify, &bench] {
                let e = fails(args);
                assert!(e.contains(why), "{args:?}: {e}");
            }
        }
        None => {
            let out = ok(&run);
            assert!(
                out.contains("on GPU") && out.contains("layer_input"),
                "{out}"
            );
            let out = ok(&verify);
            assert!(out.contains("compiled for GPU"), "{out}");
            let j = json_of(&ok(&bench));
            assert_eq!(j["backend"], "gpu", "{j}");
            assert!(j["device"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
            let launches = j["launches"].as_array().expect("launches");
            assert!(!launches.is_empty(), "{j}");
            for l in launches {
                assert!(l["entry"].is_string(), "{l}");
                assert!(l["median_s"].as_f64().is_some_and(|t| t > 0.0), "{l}");
            }
            assert!(j["median_s"].as_f64().is_some_and(|t| t > 0.0), "{j}");
        }
    }
}

#[test]
fn gpu_info_describes_the_device_or_says_there_is_no_driver() {
    let args = ["gpu-info", "--json", "--copy-mib", "4", "--runs", "3"];
    if !driver() {
        for a in [&args[..], &["gpu-info"]] {
            let e = fails(a);
            assert!(e.contains(NO_DRIVER), "{a:?}: {e}");
        }
        return;
    }
    let j = json_of(&ok(&args));
    assert!(j["device"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
    assert!(j["sms"].as_u64().is_some_and(|n| n > 0), "{j}");
    assert!(j["memory_bytes"].as_u64().is_some_and(|n| n > 0), "{j}");
    assert_eq!(j["copy_bytes"].as_u64(), Some(4 << 20), "{j}");
    assert!(j["copy_gbps"].as_f64().is_some_and(|g| g > 0.0), "{j}");
    assert!(ok(&["gpu-info", "--copy-mib", "4"]).contains("GB/s"));
}

#[test]
fn gpu_info_rejects_empty_copies_before_the_device() {
    let e = fails(&["gpu-info", "--copy-mib", "0"]);
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn cpu_bench_json_has_the_fields_the_gpu_table_reads() {
    let j = json_of(&ok(&[
        "bench", "mhc-pre", "--runs", "2", "--warmup", "0", "--tokens", "4", "--json",
    ]));
    assert_eq!(j["model"], "mhc_pre", "{j}");
    assert_eq!(j["backend"], "cpu", "{j}");
    assert_eq!(j["inputs"]["residual"], "f32[4,4,64]", "{j}");
    assert_eq!(j["inputs"]["fn"], "f32[24,256]", "{j}");
    // f32 [4,4,64] residual, [24,256] fn, [3] scale, [24] base in;
    // [4,64] + [4,4] + [4,4,4] out.
    let elements = 4 * 4 * 64 + 24 * 256 + 3 + 24 + 4 * 64 + 4 * 4 + 4 * 4 * 4;
    assert_eq!(j["bytes"].as_u64(), Some(4 * elements), "{j}");
    assert!(j["median_s"].as_f64().is_some_and(|t| t > 0.0), "{j}");
    assert!(
        j.get("device").is_none() && j.get("launches").is_none(),
        "{j}"
    );
}

#[test]
fn compile_for_the_gpu_needs_an_output_or_an_emit() {
    let e = fails(&["compile", "mhc-pre", "--target", "gpu"]);
    assert!(e.contains("-o FILE"), "{e}");
}

#[test]
fn emit_and_target_must_agree() {
    let e = fails(&["compile", "mhc-pre", "--target", "cpu", "--emit", "ptx"]);
    assert!(e.contains("--emit ptx needs --target gpu"), "{e}");
    let e = fails(&["compile", "mhc-pre", "--target", "gpu", "--emit", "clif"]);
    assert!(e.contains("--emit clif needs --target cpu"), "{e}");
    // The CPU paths are unchanged.
    assert!(ok(&["compile", "mhc-pre", "--emit", "clif"]).contains("function"));
    assert!(ok(&["compile", "mhc-pre", "--target", "cpu"]).contains("graph @mhc_pre"));
}

#[test]
fn kernel_ir_is_lowered_for_the_target() {
    let cpu = ok(&[
        "compile",
        "mhc-pre",
        "--dtype",
        "bf16",
        "--emit",
        "kernel-ir",
    ]);
    let gpu = ok(&[
        "compile",
        "mhc-pre",
        "--dtype",
        "bf16",
        "--emit",
        "kernel-ir",
        "--target",
        "gpu",
    ]);
    assert!(
        cpu.contains("kernel") && gpu.contains("kernel"),
        "{cpu}\n{gpu}"
    );
    // The GPU's matrix product reads bf16 operands and sums rows' squares,
    // so its program differs from the CPU's (no widening copies).
    assert_ne!(cpu, gpu);
}

#[test]
fn gpu_code_is_printed_or_the_build_says_how_to_get_it() {
    let s = Scratch::new("emit");
    let artifact = s.s("m.bkx");
    let ptx_file = s.s("m.ptx");
    let cases: [&[&str]; 4] = [
        &["compile", "mhc-pre", "--emit", "ptx", "--tokens", "4"],
        &["compile", "mhc-pre", "--target", "gpu", "--emit", "llvm"],
        &["compile", "mhc-pre", "--emit", "ptx", "-o", &ptx_file],
        &["compile", "mhc-pre", "--target", "gpu", "-o", &artifact],
    ];
    if !CODEGEN_ENABLED {
        for args in cases {
            let e = fails(args);
            assert!(e.contains(REBUILD), "{args:?}: {e}");
        }
        assert!(!s.path("m.bkx").exists() && !s.path("m.ptx").exists());
        return;
    }
    let ptx = ok(cases[0]);
    assert!(
        ptx.contains(".entry") && ptx.contains(".target sm_90"),
        "{ptx}"
    );
    let llvm = ok(cases[1]);
    assert!(llvm.contains("nvptx64"), "{llvm}");
    ok(cases[2]);
    assert_eq!(
        std::fs::read_to_string(&ptx_file).unwrap(),
        ok(&["compile", "mhc-pre", "--emit", "ptx"])
    );
    ok(cases[3]);
    let module = GpuModule::load(Path::new(&artifact)).unwrap();
    assert_eq!(module.name, "mhc_pre");
    assert!(!module.launches.is_empty());
    // The artifact runs by itself: the run stops at the device, or runs.
    let run = ["run", "--artifact", &artifact, "--seed", "1"];
    if driver() {
        let out = ok(&run);
        assert!(
            out.contains("layer_input") && out.contains("comb_mix"),
            "{out}"
        );
    } else {
        let e = fails(&run);
        assert!(e.contains(NO_DRIVER), "{e}");
    }
}

/// PTX that LLVM 19 generated for `y[i] = 2 * x[i]`, one thread per
/// element, with the ABI of `GpuModule` (one parameter: the address table).
const DOUBLE_PTX: &str = "\
.version 4.0
.target sm_50
.address_size 64

.visible .entry double4(
\t.param .u64 double4_param_0
)
{
\t.reg .b32 \t%r<2>;
\t.reg .f32 \t%f<3>;
\t.reg .b64 \t%rd<7>;

\tld.param.u64 \t%rd1, [double4_param_0];
\tld.global.u64 \t%rd2, [%rd1];
\tld.global.u64 \t%rd3, [%rd1+8];
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd4, %r1, 4;
\tadd.s64 \t%rd5, %rd2, %rd4;
\tadd.s64 \t%rd6, %rd3, %rd4;
\tld.global.f32 \t%f1, [%rd5];
\tadd.rn.f32 \t%f2, %f1, %f1;
\tst.global.f32 \t[%rd6], %f2;
\tret;
}
";

/// A valid artifact: x f32[4] in, y = 2x f32[4] out, one launch.
fn double_module() -> GpuModule {
    let buffer = |name: &str, role: &str| BufferInfo {
        name: name.into(),
        dtype: "f32".into(),
        shape: vec![4],
        role: role.into(),
        values: Vec::new(),
        offset: 0,
    };
    GpuModule {
        version: ARTIFACT_VERSION,
        name: "double".into(),
        ptx: DOUBLE_PTX.into(),
        arch: "sm_50".into(),
        buffers: vec![buffer("x", "input"), buffer("y", "output")],
        inputs: vec![("x".into(), 0)],
        outputs: vec![("y".into(), 1)],
        arena_bytes: 0,
        launches: vec![Launch {
            entry: "double4".into(),
            kernel: "k0".into(),
            grid: [1, 1, 1],
            block: [4, 1, 1],
            shared_bytes: 0,
        }],
    }
}

#[test]
fn a_hand_made_artifact_is_read_before_the_device_and_runs_on_one() {
    let s = Scratch::new("hand-made");
    let path = s.s("double.bkx");
    double_module().save(Path::new(&path)).unwrap();
    // Inputs are gathered (and missing ones reported) before the device.
    let e = fails(&["run", "--artifact", &path]);
    assert!(
        e.contains("artifact") && e.contains("needs inputs") && e.contains("--seed"),
        "{e}"
    );
    let inputs = s.path("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let x = Tensor::from_f64(TensorType::new(DType::F32, vec![4]), &[1.0, -2.5, 0.0, 3.0]).unwrap();
    write_npy(&inputs.join("x.npy"), &x).unwrap();
    let wrong = Tensor::from_f64(TensorType::new(DType::F32, vec![5]), &[0.0; 5]).unwrap();
    let bad_inputs = s.path("bad-in");
    std::fs::create_dir_all(&bad_inputs).unwrap();
    write_npy(&bad_inputs.join("x.npy"), &wrong).unwrap();
    // An input of the wrong shape is refused, naming it, before the device.
    let e = fails(&[
        "run",
        "--artifact",
        &path,
        "--inputs",
        &bad_inputs.display().to_string(),
    ]);
    assert!(e.contains("'x'") && e.contains("f32[4]"), "{e}");
    let out = s.s("out");
    let args = [
        "run",
        "--artifact",
        &path,
        "--inputs",
        &inputs.display().to_string(),
        "--outputs",
        &out,
    ];
    if !driver() {
        let e = fails(&args);
        assert!(e.contains(NO_DRIVER), "{e}");
        return;
    }
    let stdout = ok(&args);
    assert!(
        stdout.contains("ran artifact") && stdout.contains("@double"),
        "{stdout}"
    );
    let y = read_npy(&s.path("out/y.npy")).unwrap();
    assert_eq!(y.to_f64_vec(), vec![2.0, -5.0, 0.0, 6.0]);
}

#[test]
fn bad_artifacts_are_one_line_errors_naming_the_file() {
    let s = Scratch::new("bad-artifact");
    let missing = s.s("missing.bkx");
    let e = fails(&["run", "--artifact", &missing, "--seed", "1"]);
    assert!(e.contains(&missing) && e.contains("cannot read"), "{e}");
    let junk = s.s("junk.bkx");
    std::fs::write(&junk, b"this is not an artifact").unwrap();
    let e = fails(&["run", "--artifact", &junk, "--seed", "1", "--target", "gpu"]);
    assert!(e.contains(&junk) && e.contains("bad magic"), "{e}");

    let good = double_module().to_artifact_bytes().unwrap();
    let corrupt = s.s("corrupt.bkx");
    let mut bytes = good.clone();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&corrupt, &bytes).unwrap();
    let e = fails(&["run", "--artifact", &corrupt, "--seed", "1"]);
    assert!(e.contains(&corrupt) && e.contains("checksum"), "{e}");
    let truncated = s.s("truncated.bkx");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let e = fails(&["run", "--artifact", &truncated, "--seed", "1"]);
    assert!(e.contains(&truncated) && e.contains("truncated"), "{e}");
    let newer = s.s("newer.bkx");
    let mut bytes = good;
    bytes[8..12].copy_from_slice(&(ARTIFACT_VERSION + 1).to_le_bytes());
    std::fs::write(&newer, &bytes).unwrap();
    let e = fails(&["run", "--artifact", &newer, "--seed", "1"]);
    assert!(e.contains(&newer) && e.contains("version"), "{e}");

    // Flags that cannot apply to an artifact.
    let e = fails(&["run", "--artifact", &junk, "--target", "cpu"]);
    assert!(e.contains("runs only on the GPU"), "{e}");
    let e = fails(&["run", "--artifact", &junk, "--tokens", "4"]);
    assert!(e.contains("model flag"), "{e}");
    let e = fails(&["run", "--artifact", &junk, "--optimize"]);
    assert!(e.contains("--optimize"), "{e}");
    // A source and an artifact at once is a usage error (clap's exit 2).
    let o = birkhoff(&["run", "mhc-pre", "--artifact", &junk]);
    assert_eq!(o.status.code(), Some(2));
}

/// Whether this binary has `gpu-audit` (its own `gpu` feature): without
/// it, the command says how to rebuild and nothing else.
fn audit_built() -> bool {
    let o = birkhoff(&["gpu-audit", "--only", "no such program"]);
    let err = common::stderr(&o);
    if err.contains(REBUILD) {
        assert_eq!(o.status.code(), Some(1), "{err}");
        return false;
    }
    true
}

#[test]
fn gpu_audit_refuses_bad_arguments_before_compiling() {
    if !audit_built() {
        return;
    }
    let s = Scratch::new("audit-args");
    std::fs::write(s.path("bad.txt"), "mhc-post f32 T=64 C=128 k0 spills\n").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["gpu-audit", "--allow", "bogus"], "not a finding"),
        (
            &["gpu-audit", "--tokens", "0"],
            "--tokens must be at least 1",
        ),
        (&["gpu-audit", "--only", "no such program"], "matched none"),
        (
            &["gpu-audit", "--baseline", &s.s("missing.txt")],
            "missing.txt",
        ),
        (
            &["gpu-audit", "--baseline", &s.s("bad.txt")],
            "bad.txt:1: expected program<TAB>entry<TAB>finding",
        ),
    ];
    for (args, want) in cases {
        let e = fails(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

#[test]
fn gpu_audit_passes_a_clean_program_and_its_baseline_only_shrinks() {
    if !audit_built() {
        return;
    }
    let s = Scratch::new("audit");
    let small = [
        "gpu-audit",
        "--only",
        "mhc-post f32",
        "--tokens",
        "64",
        "--hidden",
        "128",
    ];
    // One streaming kernel at its floor: nothing to report.
    let mut args = small.to_vec();
    let written = s.s("written.txt");
    args.extend(["--write-baseline", &written]);
    let out = ok(&args);
    assert!(out.contains("every check passed (1 programs"), "{out}");
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
    // A baseline line for that program whose finding does not occur fails.
    std::fs::write(
        s.path("stale.txt"),
        "# known\nmhc-post f32 T=64 C=128\tk0_mhc_post\tspills\n",
    )
    .unwrap();
    let mut args = small.to_vec();
    let stale = s.s("stale.txt");
    args.extend(["--baseline", &stale]);
    let o = birkhoff(&args);
    let out = common::stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "fixed, remove from the baseline: mhc-post f32 T=64 C=128\tk0_mhc_post\tspills"
        ),
        "{out}"
    );
    // JSON: one array, a program with its launches.
    let mut args = small.to_vec();
    args.push("--json");
    let v: Value = serde_json::from_str(&ok(&args)).unwrap();
    let p = &v.as_array().unwrap()[0];
    assert_eq!(p["program"], "mhc-post f32 T=64 C=128");
    assert!(!p["launches"].as_array().unwrap().is_empty());
}
