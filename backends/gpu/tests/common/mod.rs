//! What the code generator's test files share: `ptxas`, reading functions
//! out of printed LLVM IR, and building small f32 kernels by hand.
#![allow(dead_code, reason = "each test file uses its own subset")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use birkhoff_gpu::{CodegenOptions, emulate};
use birkhoff_ir::kernel::{
    BufferDecl, BufferKind, Expr, LoopKind, Program, ScalarType, Stmt, VarId, run_program,
};
use birkhoff_ir::{DType, Op, Precision, Tensor, TensorType};

/// `ptxas` (`PTXAS` names it, or one on `PATH`), or `None` after a note
/// that `what` is not checked. `BIRKHOFF_REQUIRE_PTXAS` (CI sets it)
/// makes a missing one a failure.
pub fn ptxas_or_note(what: &str) -> Option<PathBuf> {
    let found = match std::env::var_os("PTXAS") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            let on_path = Command::new("ptxas").arg("--version").output().is_ok();
            on_path.then(|| PathBuf::from("ptxas"))
        }
    };
    if found.is_none() {
        assert!(
            std::env::var_os("BIRKHOFF_REQUIRE_PTXAS").is_none(),
            "BIRKHOFF_REQUIRE_PTXAS is set but no ptxas was found (set PTXAS)"
        );
        eprintln!("note: no ptxas found; {what} not checked (set PTXAS to check it)");
    }
    found
}

/// The text of function `@name` in a printed LLVM module.
pub fn function<'a>(ir: &'a str, name: &str) -> &'a str {
    let start = ir
        .find(&format!("define void @{name}("))
        .unwrap_or_else(|| panic!("no function {name}"));
    let rest = &ir[start..];
    &rest[..rest.find("\n}\n").expect("function end")]
}

/// Splits a function's text into the parts inside warp-0 runs (from a
/// `warp.run` block to its `warp.run.end` block) and the parts outside.
pub fn by_place(f: &str) -> (String, String) {
    let (mut inside, mut outside) = (String::new(), String::new());
    let mut warp0 = false;
    for line in f.lines() {
        if let Some(label) = line.split(':').next().filter(|_| !line.starts_with(' ')) {
            if label.starts_with("warp.run.end") {
                warp0 = false;
            } else if label.starts_with("warp.run") {
                warp0 = true;
            }
        }
        let out = if warp0 { &mut inside } else { &mut outside };
        out.push_str(line);
        out.push('\n');
    }
    (inside, outside)
}

/// An f32 constant.
pub fn f32c(v: f64) -> Expr {
    Expr::constant(ScalarType::F32, v)
}

/// `a + b`.
pub fn add(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Add, a, b)
}

/// `a · b`.
pub fn mul(a: Expr, b: Expr) -> Expr {
    Expr::binary(Op::Mul, a, b)
}

/// An f32 buffer.
pub fn buffer(name: &str, shape: &[usize], kind: BufferKind) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        ty: TensorType::new(DType::F32, shape),
        kind,
    }
}

/// Runs `p` on `inputs` in the host emulator and in the kernel
/// interpreter (f32) and panics at the first output element whose bits
/// differ.
pub fn emulates_bit_for_bit(p: &Program, inputs: &BTreeMap<String, Tensor>, what: &str) {
    let want = run_program(p, inputs, Precision::F32).unwrap();
    let got = emulate(p, &CodegenOptions::default(), inputs).unwrap();
    assert_eq!(want.len(), got.len(), "{what}");
    for ((wn, w), (gn, g)) in want.iter().zip(&got) {
        assert_eq!(wn, gn, "{what}");
        let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
        if let Some(i) = (0..w.len()).find(|&i| w[i].to_bits() != g[i].to_bits()) {
            panic!(
                "{what}: {wn}[{i}] is {} where the interpreter has {}",
                g[i], w[i]
            );
        }
    }
}

/// `for var in 0..extent { body }`, serial.
pub fn serial(var: VarId, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        extent,
        kind: LoopKind::Serial,
        body,
    }
}

/// `for var in 0..extent { body }`, a vector loop.
pub fn vector(var: VarId, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        extent,
        kind: LoopKind::Vector,
        body,
    }
}
