//! Micro-benchmarks of the CPU backend's generated code: the ceilings a
//! roofline of this machine is drawn with.
//!
//! * `fma`: a degree-32 polynomial per element (Horner's rule, 32 fused
//!   multiply-adds on `f32x4`) over data that stays in cache — arithmetic
//!   throughput;
//! * `copy`, `scale`, `triad`: STREAM's kernels over 64 MiB arrays —
//!   memory bandwidth (bytes counted as STREAM does: read + written, no
//!   write-allocate traffic);
//! * `dot`: a sum reduction with vector accumulators over 64 MiB;
//! * `project`, `post`: the shapes of mHC's fused kernels — 25 vector
//!   accumulators in one sweep (the pre-mix projection, compute-bound),
//!   and the post-mix (n = 4: reads 5 rows, writes 4; memory-bound).
//!
//! `cargo bench -p birkhoff-cpu --bench microbench [-- threads]` prints the
//! median of 15 runs per kernel.

use std::collections::BTreeMap;
use std::time::Instant;

use birkhoff_cpu::{CpuOptions, compile};
use birkhoff_ir::kernel::{
    BufferDecl, BufferId, BufferKind, Expr, Index, Kernel, LoopKind, Program, ScalarType, Stmt,
};
use birkhoff_ir::{DType, Op, Tensor, TensorData, TensorType};

fn program(name: &str, shapes: &[(&str, &[usize], BufferKind)], kernel: Kernel) -> Program {
    let buffers: Vec<BufferDecl> = shapes
        .iter()
        .map(|(n, s, k)| BufferDecl {
            name: n.to_string(),
            ty: TensorType::new(DType::F32, *s),
            kind: k.clone(),
        })
        .collect();
    let pick = |kind: BufferKind| {
        buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.kind == kind)
            .map(|(i, b)| (b.name.clone(), BufferId(i as u32)))
            .collect()
    };
    Program {
        name: name.into(),
        inputs: pick(BufferKind::Input),
        outputs: pick(BufferKind::Output),
        buffers,
        kernels: vec![kernel],
        arena_bytes: 0,
    }
}

/// `out[r, c] = f(in_k[r, c] …)` with a parallel row loop and a vector column loop.
fn rows(name: &str, r: usize, c: usize, ins: usize, f: &dyn Fn(&[Expr]) -> Expr) -> Program {
    let mut k = Kernel::new(format!("k0_{name}"));
    let (i, j) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
    let at = Index::var(i, c as i64).plus(j, 1);
    let loads: Vec<Expr> = (0..ins)
        .map(|b| Expr::load(BufferId(b as u32), at.clone()))
        .collect();
    k.body = vec![Stmt::Loop {
        var: i,
        extent: r,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Loop {
            var: j,
            extent: c,
            kind: LoopKind::Vector,
            body: vec![Stmt::Store {
                buf: BufferId(ins as u32),
                index: at,
                value: f(&loads),
            }],
        }],
    }];
    let names = ["a", "b", "c"];
    let mut shapes: Vec<(&str, &[usize], BufferKind)> = Vec::new();
    let shape = [r, c];
    for name in names.iter().take(ins) {
        shapes.push((name, &shape, BufferKind::Input));
    }
    shapes.push(("y", &shape, BufferKind::Output));
    program(name, &shapes, k)
}

fn dot(r: usize, c: usize) -> Program {
    let mut k = Kernel::new("k0_dot");
    let (i, j, acc) = (
        k.var(ScalarType::Index),
        k.var(ScalarType::Index),
        k.var(ScalarType::F32),
    );
    let at = Index::var(i, c as i64).plus(j, 1);
    k.body = vec![Stmt::Loop {
        var: i,
        extent: r,
        kind: LoopKind::Parallel,
        body: vec![
            Stmt::Set {
                var: acc,
                value: Expr::constant(ScalarType::F32, 0.0),
            },
            Stmt::Loop {
                var: j,
                extent: c,
                kind: LoopKind::Vector,
                body: vec![Stmt::Set {
                    var: acc,
                    value: Expr::binary(
                        Op::Add,
                        Expr::Var(acc),
                        Expr::binary(
                            Op::Mul,
                            Expr::load(BufferId(0), at.clone()),
                            Expr::load(BufferId(1), at),
                        ),
                    ),
                }],
            },
            Stmt::Store {
                buf: BufferId(2),
                index: Index::var(i, 1),
                value: Expr::Var(acc),
            },
        ],
    }];
    program(
        "dot",
        &[
            ("a", &[r, c], BufferKind::Input),
            ("b", &[r, c], BufferKind::Input),
            ("y", &[r], BufferKind::Output),
        ],
        k,
    )
}

/// The projection sweep of an mHC pre-mix (n = 4, so m = 24 rows of
/// `fn`): per token, `m` dot products and a sum of squares over the
/// token's `n·C` row, all accumulated in one vector sweep.
fn projection(t: usize, nc: usize, m: usize) -> Program {
    let mut k = Kernel::new("k0_projection");
    let (i, j) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
    let accs: Vec<_> = (0..=m).map(|_| k.var(ScalarType::F32)).collect();
    let x = Expr::load(BufferId(0), Index::var(i, nc as i64).plus(j, 1));
    let mut body = Vec::new();
    for (r, &a) in accs.iter().enumerate() {
        let other = if r == m {
            x.clone()
        } else {
            Expr::load(BufferId(1), Index::var(j, 1).shifted((r * nc) as i64))
        };
        body.push(Stmt::Set {
            var: a,
            value: Expr::binary(
                Op::Add,
                Expr::Var(a),
                Expr::binary(Op::Mul, x.clone(), other),
            ),
        });
    }
    let mut outer: Vec<Stmt> = accs
        .iter()
        .map(|&a| Stmt::Set {
            var: a,
            value: Expr::constant(ScalarType::F32, 0.0),
        })
        .collect();
    outer.push(Stmt::Loop {
        var: j,
        extent: nc,
        kind: LoopKind::Vector,
        body,
    });
    for (r, &a) in accs.iter().enumerate() {
        outer.push(Stmt::Store {
            buf: BufferId(2),
            index: Index::var(i, (m + 1) as i64).shifted(r as i64),
            value: Expr::Var(a),
        });
    }
    k.body = vec![Stmt::Loop {
        var: i,
        extent: t,
        kind: LoopKind::Parallel,
        body: outer,
    }];
    program(
        "project",
        &[
            ("x", &[t, nc], BufferKind::Input),
            ("fn", &[m, nc], BufferKind::Input),
            ("y", &[t, m + 1], BufferKind::Output),
        ],
        k,
    )
}

/// The post-mix of mHC: `out[t, i, c] = post[t, i] · f[t, c] +
/// Σ_k comb[t, k, i] · x[t, k, c]`, weights in variables, one sweep over `c`.
fn post_mix(t: usize, n: usize, c: usize) -> Program {
    let mut k = Kernel::new("k0_post");
    let (ti, ci) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
    let post: Vec<_> = (0..n).map(|_| k.var(ScalarType::F32)).collect();
    let comb: Vec<_> = (0..n * n).map(|_| k.var(ScalarType::F32)).collect();
    let mut outer = Vec::new();
    for (i, &p) in post.iter().enumerate() {
        outer.push(Stmt::Set {
            var: p,
            value: Expr::load(BufferId(2), Index::var(ti, n as i64).shifted(i as i64)),
        });
    }
    for (q, &w) in comb.iter().enumerate() {
        outer.push(Stmt::Set {
            var: w,
            value: Expr::load(
                BufferId(3),
                Index::var(ti, (n * n) as i64).shifted(q as i64),
            ),
        });
    }
    let f = Expr::load(BufferId(0), Index::var(ti, c as i64).plus(ci, 1));
    let row = |kk: usize| {
        Index::var(ti, (n * c) as i64)
            .plus(ci, 1)
            .shifted((kk * c) as i64)
    };
    let mut body = Vec::new();
    for (i, &p) in post.iter().enumerate() {
        let mut v = Expr::binary(Op::Mul, Expr::Var(p), f.clone());
        for kk in 0..n {
            let xk = Expr::load(BufferId(1), row(kk));
            v = Expr::binary(
                Op::Add,
                v,
                Expr::binary(Op::Mul, Expr::Var(comb[kk * n + i]), xk),
            );
        }
        body.push(Stmt::Store {
            buf: BufferId(4),
            index: row(i),
            value: v,
        });
    }
    outer.push(Stmt::Loop {
        var: ci,
        extent: c,
        kind: LoopKind::Vector,
        body,
    });
    k.body = vec![Stmt::Loop {
        var: ti,
        extent: t,
        kind: LoopKind::Parallel,
        body: outer,
    }];
    program(
        "post",
        &[
            ("f", &[t, c], BufferKind::Input),
            ("x", &[t, n, c], BufferKind::Input),
            ("post", &[t, n], BufferKind::Input),
            ("comb", &[t, n, n], BufferKind::Input),
            ("y", &[t, n, c], BufferKind::Output),
        ],
        k,
    )
}

fn bench(p: &Program, threads: usize, work: f64, unit: &str) {
    let exe = compile(
        p,
        &CpuOptions {
            threads,
            ..CpuOptions::default()
        },
    )
    .expect("compiles");
    for k in exe.kernel_stats() {
        for why in &k.scalar_vector_loops {
            println!("  {}: scalar vector loop: {why}", k.name);
        }
    }
    if std::env::var_os("BIRKHOFF_BENCH_ASM").is_some() {
        let asm = compile(
            p,
            &CpuOptions {
                disassemble: true,
                ..CpuOptions::default()
            },
        );
        println!(
            "{}",
            asm.ok().and_then(|e| e.disassembly()).unwrap_or_default()
        );
    }
    let inputs: BTreeMap<String, Tensor> = p
        .inputs
        .iter()
        .map(|(n, b)| {
            let ty = &p.buffer(*b).ty;
            let v: Vec<f32> = (0..ty.num_elements())
                .map(|i| (i % 1000) as f32 * 1e-3)
                .collect();
            (
                n.clone(),
                Tensor::new(ty.shape.clone(), TensorData::F32(v)).unwrap(),
            )
        })
        .collect();
    let mut out = Vec::new();
    exe.run_into(&inputs, &mut out).expect("runs");
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            exe.run_into(&inputs, &mut out).expect("runs");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{:8} threads={threads}  median {:8.3} ms  {:7.2} {unit}  (best {:.2}, compile {:.1} ms)",
        p.name,
        median * 1e3,
        work / median / 1e9,
        work / times[0] / 1e9,
        exe.compile_time().as_secs_f64() * 1e3
    );
}

fn main() {
    let arg_threads: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let all = std::thread::available_parallelism().map_or(1, usize::from);
    let thread_counts: Vec<usize> = match arg_threads {
        Some(t) => vec![t],
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    let s = Expr::constant(ScalarType::F32, 3.0);
    // 16 Mi f32 = 64 MiB per array.
    let (r, c) = (4096, 4096);
    let bytes = (r * c * 4) as f64;
    for &t in &thread_counts {
        // fma: 256 rows × 1024 columns = 1 MiB in + 1 MiB out; 32 FMAs = 64 flops each.
        let fma = rows("fma", 256, 1024, 1, &|x| {
            let mut p = Expr::constant(ScalarType::F32, 0.5);
            for i in 0..32 {
                let ci = Expr::constant(ScalarType::F32, 1.0 / f64::from(i + 2));
                p = Expr::binary(Op::Add, Expr::binary(Op::Mul, p, x[0].clone()), ci);
            }
            p
        });
        bench(&fma, t, 256.0 * 1024.0 * 64.0, "GFLOP/s");
        bench(
            &rows("copy", r, c, 1, &|x| x[0].clone()),
            t,
            2.0 * bytes,
            "GB/s",
        );
        bench(
            &rows("scale", r, c, 1, &|x| {
                Expr::binary(Op::Mul, x[0].clone(), s.clone())
            }),
            t,
            2.0 * bytes,
            "GB/s",
        );
        bench(
            &rows("triad", r, c, 2, &|x| {
                Expr::binary(
                    Op::Add,
                    x[0].clone(),
                    Expr::binary(Op::Mul, s.clone(), x[1].clone()),
                )
            }),
            t,
            3.0 * bytes,
            "GB/s",
        );
        bench(&dot(r, c), t, 2.0 * bytes, "GB/s");
        // 512 tokens × n·C = 4096: 24 dot products and a sum of squares.
        let flops = 512.0 * 4096.0 * 25.0 * 2.0;
        bench(&projection(512, 4096, 24), t, flops, "GFLOP/s");
        // 2048 tokens, n = 4, C = 2048: reads f and x, writes the output.
        let bytes_post = 2048.0 * 2048.0 * 4.0 * 9.0;
        bench(&post_mix(2048, 4, 2048), t, bytes_post, "GB/s");
        bench(
            &rows("exp", 1024, 4096, 1, &|x| {
                Expr::unary(Op::Exp, x[0].clone())
            }),
            t,
            1024.0 * 4096.0,
            "Gelem/s",
        );
    }
}
