//! The cost model: memory traffic, kernel launches and flops per node.
//!
//! Every node that is not free is costed as one kernel that reads each
//! operand once and writes its result once (`bytes`), pays one launch, and
//! does `flops` arithmetic. Free nodes are those a backend never runs as
//! kernels: graph inputs, constants and `iota` (materialized on the fly),
//! `reshape` and `get` (views), and `broadcast` (read through by its
//! consumer, which is charged for the broadcast operand's full size — an
//! over-estimate that is the same for every alternative).
//!
//! The scalar cost that extraction minimizes converts launches and flops
//! into bytes: one launch costs [`LAUNCH_BYTES`] (the time to move 16 KiB,
//! a few microseconds at CPU memory bandwidth), and [`FLOPS_PER_BYTE`]
//! flops cost one byte (a machine balance typical of CPUs and GPUs alike).
//! Transcendentals count as [`TRANSCENDENTAL_FLOPS`] flops, divisions and
//! square roots as [`DIVIDE_FLOPS`].

use birkhoff_ir::{Graph, Op, PreMixGates, SinkhornSpec, SinkhornVariant, Type};
use serde::Serialize;

/// Bytes of memory traffic one kernel launch is worth.
pub const LAUNCH_BYTES: f64 = 16384.0;
/// Flops that cost as much as moving one byte.
pub const FLOPS_PER_BYTE: f64 = 8.0;
/// Flops charged for `exp`, `log`, `tanh`, `sigmoid`, `pow`.
pub const TRANSCENDENTAL_FLOPS: u64 = 16;
/// Flops charged for a division, square root or reciprocal.
pub const DIVIDE_FLOPS: u64 = 4;

/// What one node costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Bytes read plus bytes written.
    pub bytes: u64,
    /// Kernel launches (0 or 1 per node).
    pub launches: u64,
    /// Arithmetic operations.
    pub flops: u64,
}

impl Cost {
    /// The single number extraction minimizes, in byte-equivalents.
    pub fn scalar(&self) -> f64 {
        self.bytes as f64 + LAUNCH_BYTES * self.launches as f64 + self.flops as f64 / FLOPS_PER_BYTE
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            bytes: self.bytes.saturating_add(o.bytes),
            launches: self.launches.saturating_add(o.launches),
            flops: self.flops.saturating_add(o.flops),
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

fn elements(t: &Type) -> u64 {
    match t {
        Type::Tensor(t) => t.num_elements() as u64,
        Type::Tuple(ts) => ts.iter().map(|t| t.num_elements() as u64).sum(),
    }
}

/// Flops of Sinkhorn on `count` scalars (`count / n²` matrices).
fn sinkhorn_flops(spec: &SinkhornSpec, count: u64) -> u64 {
    // Each normalization: a sum, an add, a divide per element.
    let per_norm = 2 + DIVIDE_FLOPS;
    let (start, norms) = match spec.computed_as() {
        SinkhornVariant::Paper => (TRANSCENDENTAL_FLOPS, 2 * spec.iters as u64),
        // softmax (max, subtract, exp, sum, divide) plus eps
        SinkhornVariant::TileKernels => (
            4 + TRANSCENDENTAL_FLOPS + DIVIDE_FLOPS + 1,
            2 * spec.iters as u64 - 1,
        ),
    };
    count * (start + norms * per_norm)
}

/// Flops of Sinkhorn's backward on `count` scalars, without the
/// recomputed forward: per normalization a line sum, a dot product, a
/// subtract and a divide per element, and the start's backward (a
/// product, or a recomputed softmax and its backward).
fn sinkhorn_backward_flops(spec: &SinkhornSpec, count: u64) -> u64 {
    let norms = match spec.computed_as() {
        SinkhornVariant::Paper => 2 * spec.iters as u64,
        SinkhornVariant::TileKernels => 2 * spec.iters as u64 - 1,
    };
    let start = match spec.computed_as() {
        SinkhornVariant::Paper => 1,
        SinkhornVariant::TileKernels => 4 + TRANSCENDENTAL_FLOPS + DIVIDE_FLOPS + 4,
    };
    count * (norms * (4 + DIVIDE_FLOPS) + start)
}

/// Whether a node is free (never a kernel of its own).
pub fn is_free(op: &Op) -> bool {
    matches!(
        op,
        Op::Input { .. }
            | Op::Const(_)
            | Op::Iota { .. }
            | Op::Reshape { .. }
            | Op::Get { .. }
            | Op::Broadcast { .. }
    )
}

/// The cost of `op` on operands of types `args` with result type `out`.
pub fn node_cost(op: &Op, args: &[&Type], out: &Type) -> Cost {
    if is_free(op) {
        return Cost::default();
    }
    let bytes = args.iter().map(|a| a.size_bytes() as u64).sum::<u64>() + out.size_bytes() as u64;
    let n = elements(out);
    let input = |i: usize| args.get(i).map_or(0, |a| elements(a));
    let dims = |i: usize| match args.get(i) {
        Some(Type::Tensor(t)) if t.rank() == 3 => {
            (t.shape[0] as u64, t.shape[1] as u64, t.shape[2] as u64)
        }
        _ => (0, 0, 0),
    };
    let flops = match op {
        Op::Exp | Op::Log | Op::Tanh | Op::Sigmoid | Op::Pow => n * TRANSCENDENTAL_FLOPS,
        Op::Div | Op::Sqrt | Op::Rsqrt | Op::Recip => n * DIVIDE_FLOPS,
        op if op.is_elementwise() => n,
        Op::Cast { .. } => n,
        Op::ReduceSum { .. } | Op::ReduceMax { .. } => input(0),
        Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } => 0,
        Op::MatMul => match args.first() {
            Some(Type::Tensor(a)) => 2 * n * a.shape[a.rank() - 1] as u64,
            _ => 0,
        },
        Op::RowNorm { .. } | Op::ColNorm { .. } => n * (2 + DIVIDE_FLOPS),
        Op::RmsNorm { .. } => n * 4 + n / 8 * DIVIDE_FLOPS,
        Op::Softmax { .. } => n * (4 + TRANSCENDENTAL_FLOPS + DIVIDE_FLOPS),
        Op::Sinkhorn(spec) => sinkhorn_flops(spec, n),
        // The recomputed forward, then per normalization a line sum, a dot
        // product, a subtract and a divide per element, and the start's
        // backward (a product, or a recomputed softmax and its backward).
        Op::SinkhornGrad(spec) => sinkhorn_flops(spec, n) + sinkhorn_backward_flops(spec, n),
        Op::MhcProject => {
            let (t, s, c) = dims(0);
            2 * t * s * (s + 2) * s * c
        }
        _ if let Some((_, gating)) = op.pre_mix() => {
            let (t, s, c) = dims(0);
            let m = s * (s + 2);
            // The projection (none given its mixes), the sum of squares.
            let project = if matches!(op, Op::MhcPreProjected(_)) {
                0
            } else {
                2 * t * m * s * c
            };
            let norm = project + 2 * t * s * c;
            // scale and bias for all m, a sigmoid or tanh for the 2n gates
            let gates = 2 * t * m + 2 * t * s * TRANSCENDENTAL_FLOPS;
            let mix = 2 * t * s * c;
            let proj = match gating {
                PreMixGates::Constrained { sinkhorn, .. } => sinkhorn_flops(&sinkhorn, t * s * s),
                PreMixGates::Unconstrained => 0,
            };
            norm + gates + mix + proj
        }
        Op::MhcPost => {
            let (t, s, c) = dims(1);
            2 * t * s * s * c + 2 * t * s * c
        }
        // Four per-token products: d_x and d_comb (n²·C multiply-adds
        // each), d_f and d_post (n·C each).
        Op::MhcPostGrad => {
            let (t, s, c) = dims(1);
            4 * t * s * s * c + 4 * t * s * c
        }
        // The recomputed forward (the projection, gates and Sinkhorn), the
        // Sinkhorn backward and the two products of the projection's
        // backward, `g·fn` and `gᵀ·x` (m·nC multiply-adds per token each).
        Op::MhcPreGrad(spec) => {
            let sinkhorn = &spec.sinkhorn;
            let (t, s, c) = dims(0);
            let m = s * (s + 2);
            let forward = 2 * t * m * s * c
                + 2 * t * s * c
                + 2 * t * m
                + 2 * t * s * TRANSCENDENTAL_FLOPS
                + sinkhorn_flops(sinkhorn, t * s * s);
            forward
                + sinkhorn_backward_flops(sinkhorn, t * s * s)
                + 4 * t * m * s * c
                + 6 * t * s * c
                + 8 * t * m
        }
        _ => n,
    };
    Cost {
        bytes,
        launches: 1,
        flops,
    }
}

/// The cost of every node of a graph, summed (each node once).
pub fn graph_cost(graph: &Graph) -> Cost {
    graph
        .values()
        .map(|v| {
            let node = graph.node(v);
            let args: Vec<&Type> = node.args.iter().map(|&a| graph.value_type(a)).collect();
            node_cost(&node.op, &args, &node.ty)
        })
        .sum()
}

/// Weight-side work (values computed from parameters and constants
/// only) counts at [`WEIGHT_SIDE_SHARE`] of its cost. It is sized by the
/// weights, not by the tokens, and is the same for every call with the
/// same weights; extraction should not trade token-side traffic for it.
/// The bias is deliberate: at a handful of tokens it can choose a fused
/// program whose weight packing (a few small kernels) costs more than the
/// token traffic it saves, by microseconds; at the sizes fusion is for,
/// the packing is noise either way.
pub fn weight_side_cost(c: Cost) -> Cost {
    Cost {
        bytes: c.bytes / WEIGHT_SIDE_SHARE,
        launches: 0,
        flops: c.flops / WEIGHT_SIDE_SHARE,
    }
}

/// The share of its cost weight-side work counts at is one in this.
pub const WEIGHT_SIDE_SHARE: u64 = 64;

/// [`graph_cost`] as extraction counts it: the nodes whose values depend
/// on no data input (only on parameters and constants) at
/// [`weight_side_cost`]. The optimizer's `extraction_cost` is this of the
/// graph it returns.
pub fn extraction_cost(graph: &Graph) -> Cost {
    let mut weight_side = vec![false; graph.len()];
    graph
        .values()
        .map(|v| {
            let node = graph.node(v);
            weight_side[v.index()] = match &node.op {
                Op::Input { kind, .. } => *kind == birkhoff_ir::InputKind::Param,
                _ => node.args.iter().all(|a| weight_side[a.index()]),
            };
            let args: Vec<&Type> = node.args.iter().map(|&a| graph.value_type(a)).collect();
            let cost = node_cost(&node.op, &args, &node.ty);
            if weight_side[v.index()] {
                weight_side_cost(cost)
            } else {
                cost
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use birkhoff_ir::{DType, FloatAttr, PreMixSpec, TensorType};

    fn t(shape: &[usize]) -> Type {
        Type::Tensor(TensorType::new(DType::F32, shape))
    }

    #[test]
    fn elementwise_reads_operands_and_writes_its_result() {
        let x = t(&[4, 8]);
        let c = node_cost(&Op::Add, &[&x, &x], &x);
        assert_eq!(
            c,
            Cost {
                bytes: 3 * 128,
                launches: 1,
                flops: 32
            }
        );
        let e = node_cost(&Op::Exp, &[&x], &x);
        assert_eq!(e.flops, 32 * TRANSCENDENTAL_FLOPS);
        assert_eq!(
            e.scalar(),
            256.0 + LAUNCH_BYTES + (32 * TRANSCENDENTAL_FLOPS) as f64 / FLOPS_PER_BYTE
        );
    }

    #[test]
    fn views_and_leaves_are_free() {
        let x = t(&[4, 8]);
        assert_eq!(
            node_cost(&Op::Reshape { shape: vec![32] }, &[&x], &t(&[32])),
            Cost::default()
        );
        assert_eq!(
            node_cost(
                &Op::Broadcast {
                    shape: vec![2, 4, 8]
                },
                &[&x],
                &t(&[2, 4, 8])
            ),
            Cost::default()
        );
        assert_eq!(
            node_cost(&Op::Get { index: 0 }, &[&Type::Tuple(vec![])], &x),
            Cost::default()
        );
    }

    #[test]
    fn matmul_and_reductions() {
        let (a, b, o) = (t(&[2, 3, 5]), t(&[2, 5, 7]), t(&[2, 3, 7]));
        let c = node_cost(&Op::MatMul, &[&a, &b], &o);
        assert_eq!(c.flops, 2 * 2 * 3 * 7 * 5);
        assert_eq!(c.bytes, 4 * (30 + 70 + 42));
        let s = node_cost(
            &Op::ReduceSum {
                axes: vec![2],
                keepdims: false,
            },
            &[&a],
            &t(&[2, 3]),
        );
        assert_eq!((s.bytes, s.flops), (4 * (30 + 6), 30));
    }

    #[test]
    fn one_fused_kernel_beats_its_unrolled_parts() {
        // A 20-round Sinkhorn as one op vs 40 separate normalizations.
        let x = t(&[64, 4, 4]);
        let spec = SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 20,
            // With eps = 0 the start is computed as a softmax; here exp.
            eps: FloatAttr(1e-6),
        };
        let fused = node_cost(&Op::Sinkhorn(spec), &[&x], &x).scalar();
        let norm = node_cost(
            &Op::RowNorm {
                eps: FloatAttr(0.0),
            },
            &[&x],
            &x,
        )
        .scalar();
        assert!(fused < 40.0 * norm, "{fused} vs {}", 40.0 * norm);
        // Flops of the fused op equal the flops of its parts (no free lunch).
        let parts = 40
            * node_cost(
                &Op::RowNorm {
                    eps: FloatAttr(0.0),
                },
                &[&x],
                &x,
            )
            .flops
            + node_cost(&Op::Exp, &[&x], &x).flops;
        assert_eq!(node_cost(&Op::Sinkhorn(spec), &[&x], &x).flops, parts);
    }

    #[test]
    fn mhc_post_grad_is_one_kernel_with_its_products_flops() {
        let (tt, n, c) = (8, 4, 16);
        let (f, x, p, m) = (t(&[tt, c]), t(&[tt, n, c]), t(&[tt, n]), t(&[tt, n, n]));
        let out = Type::Tuple(vec![
            TensorType::new(DType::F32, [tt, c]),
            TensorType::new(DType::F32, [tt, n, c]),
            TensorType::new(DType::F32, [tt, n]),
            TensorType::new(DType::F32, [tt, n, n]),
        ]);
        let cost = node_cost(&Op::MhcPostGrad, &[&f, &x, &p, &m, &x], &out);
        // The same flops as the four matmuls of its expansion.
        let mm = |a: &Type, b: &Type, o: &Type| node_cost(&Op::MatMul, &[a, b], o).flops;
        let parts = mm(&t(&[tt, 1, n]), &x, &t(&[tt, 1, c]))
            + mm(&m, &x, &x)
            + mm(&x, &t(&[tt, c, 1]), &t(&[tt, n, 1]))
            + mm(&x, &t(&[tt, c, n]), &m);
        assert_eq!(cost.flops, parts);
        assert_eq!(cost.launches, 1);
        // Reads its five operands and writes its four results once.
        let elems = (tt * c + 2 * tt * n * c + tt * n + tt * n * n)
            + (tt * c + tt * n * c + tt * n + tt * n * n);
        assert_eq!(cost.bytes, 4 * elems as u64);
    }

    #[test]
    fn mhc_pre_grad_is_one_launch_costlier_than_its_forward() {
        let (tt, n, c) = (8, 4, 16);
        let m = n * (n + 2);
        let spec = SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 20,
            eps: FloatAttr(1e-6),
        };
        let (x, f, sc, b) = (t(&[tt, n, c]), t(&[m, n * c]), t(&[3]), t(&[m]));
        let (li, po, cm) = (t(&[tt, c]), t(&[tt, n]), t(&[tt, n, n]));
        let fwd_out = Type::Tuple(vec![
            TensorType::new(DType::F32, [tt, c]),
            TensorType::new(DType::F32, [tt, n]),
            TensorType::new(DType::F32, [tt, n, n]),
        ]);
        let out = Type::Tuple(vec![
            TensorType::new(DType::F32, [tt, n, c]),
            TensorType::new(DType::F32, [m, n * c]),
            TensorType::new(DType::F32, [3]),
            TensorType::new(DType::F32, [m]),
        ]);
        let attrs = PreMixSpec {
            norm_eps: FloatAttr(1e-6),
            pre_eps: FloatAttr(0.0),
            post_mult: FloatAttr(2.0),
            sinkhorn: spec,
        };
        let (fwd, bwd) = (Op::MhcPre(attrs), Op::MhcPreGrad(attrs));
        let f_cost = node_cost(&fwd, &[&x, &f, &sc, &b], &fwd_out);
        let cost = node_cost(&bwd, &[&x, &f, &sc, &b, &li, &po, &cm], &out);
        assert_eq!(cost.launches, 1);
        // The recomputed forward plus at least the two backward products.
        let products = 4 * (tt * m * n * c) as u64;
        assert!(cost.flops >= f_cost.flops + products, "{cost:?} {f_cost:?}");
    }
}
