//! The algebra rules one by one, at random shapes: each property writes the
//! spelling its rule is for, runs the one pass that holds the rule, checks
//! that the rule's result is in the optimized graph, and that the graph
//! still computes what the original does in the f64 interpreter.

mod common;

use birkhoff_dsl::{Builder, Init, Var};
use birkhoff_ir::{DType, Graph};
use birkhoff_opt::{Optimized, pass, run_passes};
use birkhoff_testkit::proptest_cases;
use birkhoff_testkit::spellings::log_normalize;
use common::{agree, count, draw_inputs, inits};
use proptest::prelude::*;

/// Runs the passes named on `g`, checks agreement on two input sets.
fn passes(g: &Graph, names: &[&str]) -> Result<Optimized, TestCaseError> {
    let chosen: Vec<_> = names
        .iter()
        .map(|n| *pass(n).expect("a pass of the registry"))
        .collect();
    let out = run_passes(g, &chosen, |_| false).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for seed in [1, 2] {
        let inputs = draw_inputs(g, &inits(&[]), seed);
        agree(g, &out.graph, &inputs)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{g}\n{}", out.graph)))?;
    }
    Ok(out)
}

/// How many times rule `rule` of pass `pass_name` changed the e-graph.
fn applied(out: &Optimized, pass_name: &str, rule: &str) -> usize {
    out.report
        .passes
        .iter()
        .find(|p| p.name == pass_name)
        .and_then(|p| p.applied.get(rule).copied())
        .unwrap_or(0)
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..5, 1..4)
}

proptest! {
    // The contraction property rejects draws outside its size window;
    // many cases (PROPTEST_CASES) need room for that.
    #![proptest_config(ProptestConfig {
        max_global_rejects: 1 << 20,
        ..ProptestConfig::with_cases(proptest_cases(32))
    })]

    /// `pow(x, 2) = x · x`: an RMS norm written with pow is recognized.
    #[test]
    fn pow_two_is_a_square(s in shape()) {
        let b = Builder::new("pow2");
        let x = b.input("x", DType::F64, &s);
        let two = b.full(2.0, DType::F64, &s);
        let last = s.len() - 1;
        let ms = x.pow(two).sum(&[last], true) * (1.0 / s[last] as f64);
        let y = x * (ms + 1e-6).rsqrt();
        b.output("y", y);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize"])?;
        prop_assert!(applied(&out, "canonicalize", "pow-two-to-mul") > 0);
        prop_assert_eq!(count(&out.graph, "rms_norm"), 1, "{}", out.graph);
    }

    /// `x + x = x · 2`.
    #[test]
    fn a_sum_of_a_value_with_itself_is_twice_it(s in shape()) {
        let b = Builder::new("twice");
        let x = b.input("x", DType::F64, &s);
        let g2 = x.sigmoid();
        b.output("y", g2 + g2);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize"])?;
        prop_assert!(applied(&out, "canonicalize", "add-self-to-mul-two") > 0);
    }

    /// `1 / (1 + exp(-z)) = sigmoid(z)`, with a reciprocal or a division.
    #[test]
    fn the_logistic_function_is_a_sigmoid(s in shape(), divide in any::<bool>(), one_first in any::<bool>()) {
        let b = Builder::new("logistic");
        let z = b.input("z", DType::F64, &s);
        let e = (-z).exp();
        #[allow(clippy::if_same_then_else, reason = "the two operand orders are the spellings under test")]
        let d = if one_first { 1.0 + e } else { e + 1.0 };
        let y = if divide { 1.0 / d } else { d.recip() };
        b.output("y", y);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize"])?;
        prop_assert_eq!(count(&out.graph, "sigmoid"), 1, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "exp"), 0, "{}", out.graph);
    }

    /// A broadcast product summed over shared axes, in any axis order, is
    /// a matrix product: no reduce_sum and no product of the full shape
    /// remain. (Both operands broadcast — each lacks the other's free axes —
    /// and sizes large enough that the full product's bytes, not the
    /// launches of the reshapes and permutes around a matrix product,
    /// decide extraction; with one operand already full-shape the two forms
    /// move about the same bytes, and extraction may keep either.)
    #[test]
    fn broadcast_products_summed_are_matrix_products(
        batch in proptest::collection::vec(2usize..5, 0..2),
        m in proptest::collection::vec(8usize..33, 1..3),
        k in proptest::collection::vec(8usize..33, 1..3),
        n in proptest::collection::vec(8usize..33, 1..3),
        order in any::<u64>(),
        keepdims in any::<bool>(),
    ) {
        // Axes of the product, as (role, size), in a random order.
        let mut axes: Vec<(u8, usize)> = batch.iter().map(|&d| (0, d))
            .chain(m.iter().map(|&d| (1, d)))
            .chain(k.iter().map(|&d| (2, d)))
            .chain(n.iter().map(|&d| (3, d)))
            .collect();
        let mut r = order;
        for i in (1..axes.len()).rev() {
            axes.swap(i, (r % (i as u64 + 1)) as usize);
            r /= i as u64 + 1;
        }
        let full: Vec<usize> = axes.iter().map(|a| a.1).collect();
        let elements: usize = full.iter().product();
        prop_assume!((32_768..=262_144).contains(&elements));
        // a has batch, m, k axes (1 elsewhere); b has batch, k, n.
        let view = |has: &[u8]| -> Vec<usize> {
            axes.iter().map(|&(role, d)| if has.contains(&role) { d } else { 1 }).collect()
        };
        let b = Builder::new("contraction");
        let a_shape = view(&[0, 1, 2]);
        let b_shape = view(&[0, 2, 3]);
        let a = b.input("a", DType::F64, &a_shape);
        let bb = b.input("b", DType::F64, &b_shape);
        let summed: Vec<usize> = axes.iter().enumerate().filter(|(_, a)| a.0 == 2).map(|(i, _)| i).collect();
        let prod: Var<'_> = a.broadcast_to(&full) * bb.broadcast_to(&full);
        b.output("y", prod.sum(&summed, keepdims));
        let g = b.build().unwrap();
        let out = passes(&g, &["recognize"])?;
        prop_assert!(applied(&out, "recognize", "contraction") > 0);
        prop_assert_eq!(count(&out.graph, "reduce_sum"), 0, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "matmul"), 1, "{}", out.graph);
    }

    /// Sinkhorn written columns first (the paper on H_res) is the Sinkhorn
    /// of the transpose. (Two rounds at least: one round is two kernels,
    /// cheaper than the transposes around one Sinkhorn.)
    #[test]
    fn columns_first_chains_are_transposed_sinkhorns(t in 1usize..4, n in 1usize..5, rounds in 2usize..6, eps in prop_oneof![Just(0.0), Just(1e-3)]) {
        let b = Builder::new("columns_first");
        let x = b.input("x", DType::F64, &[t, n, n]);
        fn normalize(m: Var<'_>, axis: usize, eps: f64) -> Var<'_> {
            let s = m.sum(&[axis], true);
            let s = if eps == 0.0 { s } else { s + eps };
            m / s
        }
        let mut m = x.exp();
        for _ in 0..rounds {
            m = normalize(normalize(m, 1, eps), 2, eps);
        }
        b.output("y", m);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize", "sinkhorn"])?;
        prop_assert_eq!(count(&out.graph, "sinkhorn"), 1, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "row_norm") + count(&out.graph, "col_norm"), 0, "{}", out.graph);
    }

    /// A shift of the logits along the rows (a per-row or per-matrix
    /// constant: here the max) changes no Sinkhorn: with eps = 0 under a
    /// bare `exp` (the first normalization cancels it), and under the
    /// softmax whatever eps the chain adds.
    #[test]
    fn a_shift_along_the_rows_is_no_sinkhorn_input(t in 1usize..4, n in 2usize..5, rounds in 1usize..5, per_matrix in any::<bool>(), under_softmax in any::<bool>()) {
        let b = Builder::new("shifted");
        let x = b.input("x", DType::F64, &[t, n, n]);
        let axes: &[usize] = if per_matrix { &[1, 2] } else { &[2] };
        let shifted = x - x.max_over(axes, true).broadcast_to(&[t, n, n]);
        fn normalize(m: Var<'_>, axis: usize, eps: f64) -> Var<'_> {
            let s = m.sum(&[axis], true);
            if eps == 0.0 { m / s } else { m / (s + eps) }
        }
        // tilekernels: softmax + eps, a column normalization, then rounds;
        // paper (eps = 0): exp, then rounds.
        let (mut m, eps, done) = if under_softmax {
            let eps = 1e-3;
            (normalize(birkhoff_dsl::nn::softmax(shifted, 2) + eps, 1, eps), eps, 1)
        } else {
            (shifted.exp(), 0.0, 0)
        };
        for _ in done..rounds {
            m = normalize(normalize(m, 2, eps), 1, eps);
        }
        b.output("y", m);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize", "sinkhorn"])?;
        prop_assert_eq!(count(&out.graph, "sinkhorn"), 1, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "reduce_max"), 0, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "sub"), 0, "{}", out.graph);
    }

    /// `pow(v, -0.5) = rsqrt(v)` and `pow(v, 0.5) = sqrt(v)` for `v` a mean
    /// square plus eps: an RMS norm written with either is recognized.
    #[test]
    fn half_powers_of_a_mean_square_are_roots(s in shape(), divide in any::<bool>()) {
        let b = Builder::new("pow_half");
        let x = b.input("x", DType::F64, &s);
        let last = s.len() - 1;
        let v = (x * x).sum(&[last], true) * (1.0 / s[last] as f64) + 1e-6;
        let y = if divide {
            x / v.pow(b.full(0.5, DType::F64, &v.shape()))
        } else {
            x * v.pow(b.full(-0.5, DType::F64, &v.shape()))
        };
        b.output("y", y);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize"])?;
        prop_assert!(applied(&out, "canonicalize", "pow-to-root") > 0);
        prop_assert_eq!(count(&out.graph, "rms_norm"), 1, "{}", out.graph);
    }

    /// A half power of a value that may be `-0` or `-inf` stays a power:
    /// there `pow` and the roots disagree. `pow(x, -1)` is a reciprocal.
    #[test]
    fn half_powers_of_any_value_stay_powers(s in shape(), e in prop_oneof![Just(0.5), Just(-0.5)]) {
        let b = Builder::new("pow_any");
        let x = b.input("x", DType::F64, &s);
        let y = x.pow(b.full(e, DType::F64, &s));
        let r = x.pow(b.full(-1.0, DType::F64, &s));
        b.output("y", y);
        b.output("r", r);
        let g = b.build().unwrap();
        // Drawn positive: the structure, not the values, keeps the pow.
        let out = run_passes(&g, &[*pass("canonicalize").unwrap()], |_| false)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let positive = inits(&[("x", Init::Uniform { low: 0.5, high: 2.0 })]);
        agree(&g, &out.graph, &draw_inputs(&g, &positive, 1)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(count(&out.graph, "pow"), 1, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "recip"), 1, "{}", out.graph);
    }

    /// `(a · b)ᵀ = bᵀ · aᵀ`: a projection written as a product of
    /// transposes is found as the plain product.
    #[test]
    fn a_transposed_product_is_a_product_of_transposes(batch in proptest::collection::vec(1usize..4, 0..2), m in 1usize..6, k in 1usize..6, n in 1usize..6) {
        let b = Builder::new("transposed_product");
        let sh = |r: usize, c: usize| -> Vec<usize> { batch.iter().copied().chain([r, c]).collect() };
        let a = b.input("a", DType::F64, &sh(m, k));
        let w = b.input("w", DType::F64, &sh(n, k));
        // (w · aᵀ)ᵀ = a · wᵀ, the layout of a linear layer.
        b.output("y", w.matmul(a.transpose()).transpose());
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize"])?;
        prop_assert!(applied(&out, "canonicalize", "transpose-of-matmul") > 0);
    }

    /// Sinkhorn in the log domain: `exp` of rounds of `z − lse(z)` along
    /// rows and columns (`lse` spelled three ways, rows or columns first)
    /// is one Sinkhorn of the logits (`log-softmax`, `softmax-of-log`,
    /// `exp-of-log`). Two rounds or more, `n ≥ 2`: a lone one-round
    /// columns-first chain extracts as its two normalizations (cheaper than
    /// the Sinkhorn between two transposes), and on 1×1 matrices a lone
    /// chain may keep its normalizations; inside an mHC sublayer both fuse
    /// (`spellings.rs`).
    #[test]
    fn log_domain_chains_are_sinkhorns(t in 1usize..4, n in 2usize..5, rounds in 2usize..6, lse in 1u8..4, rows_first in any::<bool>()) {
        let b = Builder::new("log_domain");
        let x = b.input("x", DType::F64, &[t, n, n]);
        let (first, second) = if rows_first { (2, 1) } else { (1, 2) };
        let mut z = x;
        for _ in 0..rounds {
            z = log_normalize(lse, z, first);
            z = log_normalize(lse, z, second);
        }
        b.output("y", z.exp());
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize", "sinkhorn"])?;
        prop_assert!(applied(&out, "recognize", "log-softmax") > 0);
        prop_assert_eq!(count(&out.graph, "sinkhorn"), 1, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "log"), 0, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "exp"), 0, "{}", out.graph);
    }

    /// `softmax(log(y))` and `exp(log(y))` of a value that may be negative
    /// stay as written: there they are not `y / Σ y` and `y`.
    #[test]
    fn logs_of_any_value_stay_logs(s in proptest::collection::vec(1usize..5, 2..4)) {
        let b = Builder::new("log_any");
        let x = b.input("x", DType::F64, &s);
        let last = s.len() - 1;
        b.output("y", birkhoff_dsl::nn::softmax(x.log(), last));
        b.output("e", x.log().exp());
        let g = b.build().unwrap();
        let out = run_passes(&g, &[*pass("canonicalize").unwrap(), *pass("recognize").unwrap()], |_| false)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let positive = inits(&[("x", Init::Uniform { low: 0.5, high: 2.0 })]);
        agree(&g, &out.graph, &draw_inputs(&g, &positive, 1)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(count(&out.graph, "row_norm"), 0, "{}", out.graph);
        prop_assert_eq!(count(&out.graph, "exp"), 1, "{}", out.graph);
    }

    /// `α · mat(h) + b` with `b` a matrix (the paper's `H̃_res`): the scale
    /// and bias move before the reshape that splits the last axis
    /// (`elementwise-before-split`), in either operand order.
    #[test]
    fn an_affine_after_a_split_is_an_affine_before_it(t in 1usize..4, n in 1usize..5, k in 1usize..6, scale_first in any::<bool>(), bias_first in any::<bool>()) {
        let b = Builder::new("affine_after_split");
        let x = b.input("x", DType::F64, &[t, k]);
        let w = b.input("w", DType::F64, &[k, n * n]);
        let alpha = b.input("alpha", DType::F64, &[]);
        let bias = b.input("bias", DType::F64, &[n, n]);
        let m = x.matmul(w).reshape(&[t, n, n]);
        let a = alpha.broadcast_to(&[t, n, n]);
        let scaled = if scale_first { a * m } else { m * a };
        let bb = bias.broadcast_to(&[t, n, n]);
        let y = if bias_first { bb + scaled } else { scaled + bb };
        b.output("y", y);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize"])?;
        prop_assert!(applied(&out, "canonicalize", "elementwise-before-split") > 0);
    }

    /// A sum reduced away and reshaped back (`x.sum(-1)[..., None]`) is a
    /// keepdims sum (`reshape-to-keepdims`): a normalization written so is
    /// found.
    #[test]
    fn an_unsqueezed_sum_is_a_keepdims_sum(t in 1usize..4, n in 1usize..6, rows in any::<bool>()) {
        let b = Builder::new("unsqueezed");
        let x = b.input("x", DType::F64, &[t, n]);
        let axis = if rows { 1 } else { 0 };
        let mut kept = vec![t, n];
        kept[axis] = 1;
        let s = x.sum(&[axis], false).reshape(&kept).broadcast_to(&[t, n]);
        b.output("y", x / s);
        let g = b.build().unwrap();
        let out = passes(&g, &["canonicalize", "recognize"])?;
        prop_assert!(applied(&out, "canonicalize", "reshape-to-keepdims") > 0);
        let norm = if rows { "row_norm" } else { "col_norm" };
        prop_assert_eq!(count(&out.graph, norm), 1, "{}", out.graph);
    }
}
