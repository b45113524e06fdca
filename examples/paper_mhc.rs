//! An mHC sublayer written straight from the paper's equations, not the way
//! the model zoo spells it — and the optimizer still finds one `mhc_pre`
//! and one `mhc_post` in it:
//!
//! ```text
//! x̃'     = RMSNorm(vec(x))                      (flatten, normalize first)
//! H̃_pre  = α_pre  · (x̃' φ_pre)  + b_pre          φ_pre  [nC, n]
//! H̃_post = α_post · (x̃' φ_post) + b_post         φ_post [nC, n]
//! H̃_res  = α_res  · mat(x̃' φ_res) + b_res       φ_res  [nC, n²], b_res [n, n]
//! H_pre  = σ(H̃_pre),  H_post = 2 σ(H̃_post),  H_res = Sinkhorn-Knopp(H̃_res)
//! x_next = H_res x + H_postᵀ F(H_pre x)
//! ```
//!
//! Sinkhorn-Knopp runs as the paper writes it on `H_res`: `exp`, then
//! twenty rounds of column normalization followed by row normalization.
//! The three projections, alphas and biases become the fused op's packed
//! operands (`fn`, `scale`, `base`) through a few weight-side ops.
//!
//! `cargo run --example paper_mhc`

use birkhoff::dsl::{Builder, Var};
use birkhoff::ir::DType;
use birkhoff::opt::optimize;

const T: usize = 8;
const N: usize = 4;
const C: usize = 16;
const ROUNDS: usize = 20;

/// `m / sum(m, axis)`: one Sinkhorn normalization.
fn normalize(m: Var<'_>, axis: usize) -> Var<'_> {
    m / m.sum(&[axis], true)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let b = Builder::new("paper_mhc");
    let x = b.input("x", DType::F32, &[T, N, C]);

    // x̃' = RMSNorm(vec(x)): the stream flattened per token, then normalized.
    let flat = x.reshape(&[T, N * C]);
    let mean_square = (flat * flat).mean(&[1], true);
    let normed = flat / (mean_square + 1e-6).sqrt();

    // The three affine projections, each with its own φ, α and b; the
    // residual one on mat(·), the n × n matrix of each token's n² mixes.
    let branch = |name: &str, shape: &[usize]| {
        let width: usize = shape.iter().product();
        let phi = b.param(&format!("phi_{name}"), DType::F32, &[N * C, width]);
        let alpha = b.param(&format!("alpha_{name}"), DType::F32, &[]);
        let bias = b.param(&format!("b_{name}"), DType::F32, shape);
        let per_token: Vec<usize> = [T].iter().chain(shape).copied().collect();
        alpha * normed.matmul(phi).reshape(&per_token) + bias
    };
    let h_pre = branch("pre", &[N]).sigmoid();
    let h_post = 2.0 * branch("post", &[N]).sigmoid();
    let mut h_res = branch("res", &[N, N]).exp();
    for _ in 0..ROUNDS {
        h_res = normalize(normalize(h_res, 1), 2); // T_r(T_c(M))
    }

    // x_next = H_res x + H_postᵀ F(H_pre x), with F a linear layer.
    let w = b.param("w", DType::F32, &[C, C]);
    let layer_input = h_pre.reshape(&[T, 1, N]).matmul(x).reshape(&[T, C]);
    let f = layer_input.matmul(w).tanh();
    let x_next = h_res.matmul(x) + h_post.reshape(&[T, N, 1]).matmul(f.reshape(&[T, 1, C]));
    b.output("x_next", x_next);
    let graph = b.build()?;

    let out = optimize(&graph, |_| false)?;
    println!("{}", out.report);
    let count = |op: &str| {
        out.graph
            .nodes()
            .iter()
            .filter(|n| n.op.mnemonic() == op)
            .count()
    };
    println!("{}", out.graph);
    assert_eq!(count("mhc_pre"), 1, "one fused pre-mix");
    assert_eq!(count("mhc_post"), 1, "one fused post-mix");
    assert_eq!(count("sinkhorn") + count("rms_norm") + count("sigmoid"), 0);
    Ok(())
}
