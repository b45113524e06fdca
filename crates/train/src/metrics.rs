//! Training metrics: the global gradient norm and the Amax gain magnitude
//! of `docs/design.md` §2.
//!
//! The model emits, per sublayer `l`, a tensor `h_res_<l>` of shape
//! `[..., n, n]` holding that sublayer's residual mixing matrix per token
//! in the layout the post step uses it (`comb`): the stream update is
//! `x_next[j] = Σ_i M[i, j] · x[i]`, so the linear map on the streams is
//! `A = Mᵀ`. The gains are those of the map:
//!
//! * forward gain of a map `A` — its largest absolute row sum (the most a
//!   stream's magnitude can grow going forward, `‖A‖_∞`);
//! * backward gain — its largest absolute column sum (the same for the
//!   gradient, which flows through `Aᵀ`, `‖A‖_1`).
//!
//! The composite map of the stack is `P = A_L ⋯ A_1` per token.

use birkhoff::ir::{Tensor, TensorData};

/// The Amax gain of a stack of residual mixing matrices, as
/// `(forward, backward, composite_forward, composite_backward)`:
/// per sublayer the forward and backward gain (see the module docs),
/// each maxed over tokens, and the gains of the composite map
/// `P = A_L ⋯ A_1` per token, maxed over tokens.
///
/// Every tensor must have shape `[..., n, n]` with the same `n` and the
/// same number of tokens (the product of the leading axes); an empty
/// stack gives empty vectors and composite gains of 1 (the identity).
///
/// # Panics
///
/// If the shapes disagree (a model bug, not user input).
pub fn amax_gain(h_res: &[Tensor]) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let Some(first) = h_res.first() else {
        return (Vec::new(), Vec::new(), 1.0, 1.0);
    };
    let shape = first.shape();
    assert!(shape.len() >= 2, "h_res tensors need shape [..., n, n]");
    let n = shape[shape.len() - 1];
    assert_eq!(shape[shape.len() - 2], n, "h_res matrices must be square");
    let tokens: usize = shape[..shape.len() - 2].iter().product();
    let mats: Vec<Vec<f64>> = h_res
        .iter()
        .map(|t| {
            let v = t.to_f64_vec();
            assert_eq!(v.len(), tokens * n * n, "h_res tensors differ in size");
            v
        })
        .collect();

    let mut forward = vec![0.0f64; mats.len()];
    let mut backward = vec![0.0f64; mats.len()];
    let (mut comp_f, mut comp_b) = (0.0f64, 0.0f64);
    let mut p = vec![0.0f64; n * n];
    let mut a = vec![0.0f64; n * n];
    let mut tmp = vec![0.0f64; n * n];
    for t in 0..tokens {
        // P = identity.
        p.iter_mut().for_each(|x| *x = 0.0);
        (0..n).for_each(|i| p[i * n + i] = 1.0);
        for (l, m) in mats.iter().enumerate() {
            let m = &m[t * n * n..(t + 1) * n * n];
            // A = Mᵀ.
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = m[j * n + i];
                }
            }
            let (f, b) = gains(&a, n);
            forward[l] = forward[l].max(f);
            backward[l] = backward[l].max(b);
            // P = A · P.
            for i in 0..n {
                for j in 0..n {
                    tmp[i * n + j] = (0..n).map(|k| a[i * n + k] * p[k * n + j]).sum();
                }
            }
            std::mem::swap(&mut p, &mut tmp);
        }
        let (f, b) = gains(&p, n);
        comp_f = comp_f.max(f);
        comp_b = comp_b.max(b);
    }
    (forward, backward, comp_f, comp_b)
}

/// The largest absolute row sum and column sum of the row-major `n × n`
/// matrix `a`.
fn gains(a: &[f64], n: usize) -> (f64, f64) {
    let row = (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let col = (0..n)
        .map(|j| (0..n).map(|i| a[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    (row, col)
}

/// The global L2 norm of all `grads` together, accumulated in `f64`.
pub fn global_norm<'a>(grads: impl IntoIterator<Item = &'a Tensor>) -> f64 {
    grads.into_iter().map(sum_squares).sum::<f64>().sqrt()
}

/// The sum of the squares of `t`'s elements, in `f64`, without copying
/// the tensor. Not finite exactly when an element is NaN or infinite (the
/// square of any finite `f32` or `bf16` is far inside `f64`'s range).
pub(crate) fn sum_squares(t: &Tensor) -> f64 {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x) * f64::from(x)).sum(),
        TensorData::Bf16(v) => v.iter().map(|x| x.to_f64() * x.to_f64()).sum(),
        TensorData::F64(v) => v.iter().map(|&x| x * x).sum(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x) * f64::from(x)).sum(),
        TensorData::Bool(v) => v.iter().filter(|&&x| x).count() as f64,
    }
}
