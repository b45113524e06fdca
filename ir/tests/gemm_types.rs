//! Which operand and result types a `gemm` statement may have: f32 and
//! bf16 operands, mixed or not, with an f32 or (rounded once) bf16 result;
//! f64 only with f64; no row sums of squares for a bf16 result.

use birkhoff_ir::kernel::{
    BufferDecl, BufferId, BufferKind, Gemm, Kernel, Matrix, Program, Stmt, verify_program,
};
use birkhoff_ir::{DType, TensorType};

fn messages(p: &Program) -> Vec<String> {
    match verify_program(p) {
        Ok(()) => Vec::new(),
        Err(errs) => errs.into_iter().map(|e| e.to_string()).collect(),
    }
}

/// `c[2×2] = a[2×3] · b[3×2]` on buffers of the given dtypes, with the
/// sums of squares of `a`'s rows into `sq` if it is given.
fn typed_gemm(ab: DType, c: DType, sq: Option<DType>) -> Program {
    let m = |buf, row_stride, col_stride| Matrix {
        buf: BufferId(buf),
        offset: 0,
        row_stride,
        col_stride,
        batch_stride: 0,
    };
    let mut k = Kernel::new("k0_gemm");
    k.body = vec![Stmt::Gemm(Gemm {
        m: 2,
        n: 2,
        k: 3,
        batch: 1,
        a: m(0, 3, 1),
        b: m(1, 2, 1),
        c: m(2, 2, 1),
        accumulate: true,
        row_sumsq: sq.map(|_| m(3, 1, 1)),
    })];
    let decl = |name: &str, d, n: usize, kind| BufferDecl {
        name: name.into(),
        ty: TensorType::new(d, [n]),
        kind,
    };
    let mut buffers = vec![
        decl("a", ab, 6, BufferKind::Input),
        decl("b", ab, 6, BufferKind::Input),
        decl("c", c, 4, BufferKind::Output),
    ];
    buffers.extend(sq.map(|d| decl("sq", d, 2, BufferKind::Output)));
    Program {
        name: "g".into(),
        buffers,
        inputs: vec![("a".into(), BufferId(0)), ("b".into(), BufferId(1))],
        outputs: vec![("c".into(), BufferId(2))],
        kernels: vec![k],
        arena_bytes: 0,
    }
}

#[test]
fn gemm_results_may_be_bf16_without_row_sums() {
    use DType::{Bf16, F32, F64, I32};
    for (ab, c) in [
        (F32, F32),
        (Bf16, F32),
        (F64, F64),
        (Bf16, Bf16),
        (F32, Bf16),
    ] {
        assert_eq!(
            messages(&typed_gemm(ab, c, None)),
            Vec::<String>::new(),
            "{ab} x {ab} -> {c}"
        );
    }
    for (ab, c) in [(F64, Bf16), (F64, F32), (I32, I32), (Bf16, F64)] {
        let errs = messages(&typed_gemm(ab, c, None));
        assert!(
            errs.len() == 1 && errs[0].contains(&format!("gemm on {ab}, {ab} and {c}")),
            "{ab} x {ab} -> {c}: {errs:?}"
        );
    }
    let errs = messages(&typed_gemm(Bf16, Bf16, Some(Bf16)));
    assert!(
        errs.len() == 1 && errs[0].contains("a bf16 result takes none"),
        "{errs:?}"
    );
    assert_eq!(
        messages(&typed_gemm(Bf16, F32, Some(F32))),
        Vec::<String>::new()
    );
}

#[test]
fn gemm_operands_may_mix_f32_and_bf16_only() {
    use DType::{Bf16, F32, F64};
    let mixed = |a: DType, b: DType, c: DType| {
        let mut p = typed_gemm(a, c, None);
        p.buffers[1].ty = TensorType::new(b, [6]);
        messages(&p)
    };
    for (a, b, c) in [(F32, Bf16, F32), (Bf16, F32, F32), (F32, Bf16, Bf16)] {
        assert_eq!(mixed(a, b, c), Vec::<String>::new(), "{a} x {b} -> {c}");
    }
    for (a, b, c) in [(F64, F32, F64), (F32, F64, F32), (Bf16, F64, F32)] {
        let errs = mixed(a, b, c);
        assert!(
            errs.len() == 1 && errs[0].contains(&format!("gemm on {a}, {b} and {c}")),
            "{a} x {b} -> {c}: {errs:?}"
        );
    }
}
