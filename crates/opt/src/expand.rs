//! Expansion: the inverse of fusion.
//!
//! Input: a verified graph in any ops. Every semantic op (`row_norm`,
//! `col_norm`, `softmax`, `rms_norm`, `sinkhorn`) and every fused mHC op
//! (`mhc_pre`, `hc_pre`, `mhc_post`) is replaced by the primitive ops that
//! compute it, and each `get` of an expanded tuple by the primitive value
//! of that element. Passes that only understand primitives (reverse-mode
//! autodiff) run on the result.
//!
//! The primitive programs are the reference interpreter's definitions of
//! these ops (`docs/design.md` §2), spelled the way the DSL writes the math, so that
//! optimizing the expansion finds the same fused ops again:
//!
//! * `row_norm{eps}` / `col_norm{eps}`: `x / (sum(x, axis) + eps)` over the
//!   last / second-to-last axis, no add when `eps = 0`;
//! * `softmax{axis}`: `exp(x - max(x)) / sum(exp(x - max(x)))`;
//! * `rms_norm{eps}`: `x · rsqrt(sum(x·x, last) / N + eps)`;
//! * `sinkhorn`: `paper` is `exp` then `iters` rounds of row- then
//!   column-normalization; `tilekernels` is `softmax(x, last) + eps`, a
//!   column normalization, then `iters - 1` rounds; every denominator is
//!   `sum + eps`;
//! * `mhc_pre` / `hc_pre`: pre_norm_fn with the rsqrt applied after the
//!   projection, the affine split (sigmoid gates with `pre_eps` and
//!   `post_mult`, or `scale · tanh + base` gates), the Sinkhorn projection
//!   of `comb` reshaped row-major to `[T, n, n]`, and apply_mix;
//! * `mhc_post`: `comb^T x + post ⊗ f` (`comb[t, i, j]` weights stream `i`
//!   into stream `j`).
//!
//! Float attributes become splat constants of the computing dtype, rounded
//! to it as the interpreter rounds them. An additive `eps` of 0 and a
//! `post_mult` of 1 (after that rounding) are left out: adding 0 or
//! multiplying by 1 changes no value here.
//!
//! bf16: a semantic or fused op on bf16 computes in f32 and rounds only its
//! results. The expansion says so explicitly: it casts each bf16 operand to
//! f32 (exact), computes in f32, and casts each result back to bf16.
//!
//! * `sinkhorn_grad(x, dy)`: the unrolled `sinkhorn` states of `x`, then,
//!   last normalization first, `dz = (dy − Σ dy·y) / (Σ z + eps)` along the
//!   normalized axis for `y = z / (Σ z + eps)`; at the start `dx = dy·exp(x)`
//!   (`paper`) or `p·(dy − Σ_row dy·p)` with `p = softmax(x)` (`tilekernels`).
//!   This is the backward the fused op computes, written in primitives.
//! * `mhc_post_grad(f, x, post, comb, d_out)`: per token, the products
//!   `d_f = post·d_out`, `d_x = comb·d_out`, `d_post = d_out·f` and
//!   `d_comb = x·d_outᵀ` (batched `matmul`s over `T`, `post` and `f`
//!   reshaped to a row and a column).
//!
//! * `mhc_pre_grad(x, fn, scale, base, d_li, d_post, d_comb)`: the
//!   forward of `mhc_pre` up to the logits, then `dz` per gate
//!   (`d_pre·σ(z)σ(−z)`, `d_post·post_mult·σ(z)σ(−z)`, and the `sinkhorn_grad`
//!   expansion for the comb logits), `d_base = Σ_T dz`,
//!   `d_scale = Σ_T Σ_seg dz·mixes`, the projection cotangent
//!   `g = dz·scale·rms`, `d_fn = gᵀ·x_flat` and
//!   `d_x = pre ⊗ d_li + g·fn − (Σ dz·scale·dots)·rms³·x_flat / nC`.
//!
//! Output: a verified graph with the same name, inputs (in order) and
//! outputs (names, types) that contains no semantic or fused op and no
//! `get` (except those [`expand_keeping`] is told to keep). Nodes no
//! output depends on are dropped. A graph with nothing to expand comes
//! back unchanged.

use birkhoff_ir::{
    DType, FloatAttr, Graph, Literal, Node, Op, PreMixGates, PreMixSpec, SinkhornSpec,
    SinkhornVariant, TensorType, Type, ValueId, VerifyError, VerifyErrors, eliminate_dead_nodes,
    verify,
};

use crate::error::{Error, Result};

/// Whether `op` is one that [`expand`] replaces (a semantic op, a fused op
/// or a `get` of a fused op's tuple).
pub fn is_expandable(op: &Op) -> bool {
    op.is_semantic() || op.is_fused() || matches!(op, Op::Get { .. })
}

/// Returns an equivalent graph with every semantic and fused op replaced by
/// primitive ops (see the module documentation for each definition).
///
/// The same inputs, outputs, names and types; verified. A graph without
/// such ops is returned unchanged.
///
/// # Errors
/// [`Error::Input`] if `graph` does not verify; [`Error::PassOutput`] (pass
/// `expand`) if the expansion does not, which is a bug here.
pub fn expand(graph: &Graph) -> Result<Graph> {
    expand_keeping(graph, |_| false)
}

/// [`expand`], except that every semantic or fused op for which `keep`
/// holds stays as it is, also where it is part of another op's expansion
/// (a `sinkhorn` inside `mhc_pre`), and so do the `get`s of a kept tuple.
///
/// Reverse-mode autodiff keeps `sinkhorn` this way: it has a gradient
/// rule of its own (`sinkhorn_grad`, which recomputes the rounds), so
/// expanding it would only keep every round's intermediates alive.
///
/// # Errors
/// As [`expand`].
pub fn expand_keeping(graph: &Graph, keep: impl Fn(&Op) -> bool) -> Result<Graph> {
    verify(graph).map_err(Error::Input)?;
    let expands = |v: ValueId| {
        let op = &graph.node(v).op;
        match op {
            Op::Get { .. } => !keep(&graph.node(graph.node(v).args[0]).op),
            _ => (op.is_semantic() || op.is_fused()) && !keep(op),
        }
    };
    if !graph.values().any(expands) {
        return Ok(graph.clone());
    }
    let mut b = Builder {
        g: Graph::new(graph.name()),
        keep: &keep,
    };
    // What each original value became: one value, or the elements of a tuple.
    let mut map: Vec<Option<Vec<ValueId>>> = vec![None; graph.len()];
    for &v in graph.inputs() {
        if let Op::Input { name, kind, ty } = &graph.node(v).op {
            map[v.index()] = Some(vec![b.g.add_input(name.clone(), *kind, ty.clone())]);
        }
    }
    for v in graph.values() {
        let node = graph.node(v);
        if map[v.index()].is_some() {
            continue;
        }
        let mapped = |a: ValueId| -> &[ValueId] {
            map[a.index()]
                .as_deref()
                .expect("operands precede their users in a verified graph")
        };
        let result = match &node.op {
            Op::Get { index } if expands(v) => vec![mapped(node.args[0])[*index]],
            op => {
                let args: Vec<ValueId> = node.args.iter().map(|&a| mapped(a)[0]).collect();
                if expands(v) {
                    b.composite(op, &args, &node.ty)?
                } else {
                    vec![b.g.push(Node {
                        op: op.clone(),
                        args,
                        ty: node.ty.clone(),
                    })]
                }
            }
        };
        map[v.index()] = Some(result);
    }
    for o in graph.outputs() {
        let v = map[o.value.index()].as_ref().expect("outputs are defined")[0];
        b.g.add_output(o.name.clone(), v);
    }
    let out = eliminate_dead_nodes(&b.g);
    verify(&out).map_err(|errors| Error::PassOutput {
        pass: "expand".to_string(),
        errors,
    })?;
    Ok(out)
}

/// Appends type-checked primitive nodes to the expanded graph.
struct Builder<'k> {
    g: Graph,
    /// The ops that stay as they are (see [`expand_keeping`]).
    keep: &'k dyn Fn(&Op) -> bool,
}

impl Builder<'_> {
    /// `op(args)`; a type error is a bug in the expansion, reported as the
    /// `expand` pass producing an invalid graph.
    fn op(&mut self, op: Op, args: &[ValueId]) -> Result<ValueId> {
        let mnemonic = op.mnemonic();
        self.g.add(op, args).map_err(|e| Error::PassOutput {
            pass: "expand".to_string(),
            errors: VerifyErrors {
                graph: self.g.name().to_string(),
                errors: vec![VerifyError {
                    value: None,
                    value_name: String::new(),
                    node_text: String::new(),
                    message: format!("expanding to {mnemonic}: {e}"),
                    location: None,
                }],
            },
        })
    }

    fn ty(&self, v: ValueId) -> &TensorType {
        self.g.ty(v)
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.ty(v).shape.clone()
    }

    /// A splat constant of `v`'s type.
    fn splat_like(&mut self, v: ValueId, value: f64) -> Result<ValueId> {
        let ty = self.ty(v).clone();
        self.op(Op::Const(Literal::splat(ty, value)), &[])
    }

    /// `v` broadcast to `shape`; `v` itself if it already has it.
    fn broadcast(&mut self, v: ValueId, shape: &[usize]) -> Result<ValueId> {
        if self.ty(v).shape == shape {
            return Ok(v);
        }
        self.op(
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            &[v],
        )
    }

    /// `a op b`, with `b` broadcast to `a`'s shape.
    fn binary(&mut self, op: Op, a: ValueId, b: ValueId) -> Result<ValueId> {
        let shape = self.shape(a);
        let b = self.broadcast(b, &shape)?;
        self.op(op, &[a, b])
    }

    /// `v op k` for a splat `k`.
    fn with_const(&mut self, op: Op, v: ValueId, k: f64) -> Result<ValueId> {
        let k = self.splat_like(v, k)?;
        self.op(op, &[v, k])
    }

    /// `v + eps`, or `v` when `eps` is 0.
    fn plus_eps(&mut self, v: ValueId, eps: f64) -> Result<ValueId> {
        if eps == 0.0 {
            Ok(v)
        } else {
            self.with_const(Op::Add, v, eps)
        }
    }

    fn sum_keep(&mut self, v: ValueId, axis: usize) -> Result<ValueId> {
        self.op(
            Op::ReduceSum {
                axes: vec![axis],
                keepdims: true,
            },
            &[v],
        )
    }

    fn slice(&mut self, v: ValueId, start: &[usize], end: &[usize]) -> Result<ValueId> {
        self.op(
            Op::Slice {
                start: start.to_vec(),
                end: end.to_vec(),
            },
            &[v],
        )
    }

    fn reshape(&mut self, v: ValueId, shape: &[usize]) -> Result<ValueId> {
        self.op(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[v],
        )
    }

    /// The primitive program of one semantic or fused op with (already
    /// expanded) operands `args` and result type `ty`: one value per result.
    fn composite(&mut self, op: &Op, args: &[ValueId], ty: &Type) -> Result<Vec<ValueId>> {
        let dtype = match ty {
            Type::Tensor(t) => t.dtype,
            Type::Tuple(ts) => ts[0].dtype,
        };
        // bf16 ops compute in f32: widen the operands (exact), narrow the results.
        let wide = dtype == DType::Bf16;
        let cd = if wide { DType::F32 } else { dtype };
        let args = if wide {
            // (mhc_pre_projected's mixes are f32 already.)
            args.iter()
                .map(|&a| {
                    if self.ty(a).dtype == cd {
                        Ok(a)
                    } else {
                        self.op(Op::Cast { dtype: cd }, &[a])
                    }
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            args.to_vec()
        };
        // Attributes are constants of the computing dtype, as the
        // interpreter reads them.
        let attr = |a: FloatAttr| a.rounded_to(cd).get();
        let x = args[0];
        let rank = self.ty(x).rank();
        let results = match op {
            Op::RowNorm { eps } => vec![self.normalize(x, rank - 1, attr(*eps))?],
            Op::ColNorm { eps } => vec![self.normalize(x, rank - 2, attr(*eps))?],
            Op::Softmax { axis } => vec![self.softmax(x, *axis)?],
            Op::RmsNorm { eps } => vec![self.rms_norm(x, attr(*eps))?],
            Op::Sinkhorn(spec) => vec![self.sinkhorn(x, spec, attr(spec.eps))?],
            Op::SinkhornGrad(spec) => vec![self.sinkhorn_grad(x, args[1], spec, attr(spec.eps))?],
            Op::MhcProject => {
                // f32 for bf16 operands (the result type says so); the
                // widening is exact.
                let widen = |e: &mut Self, v: ValueId| {
                    if e.ty(v).dtype == dtype {
                        Ok(v)
                    } else {
                        e.op(Op::Cast { dtype }, &[v])
                    }
                };
                let (x, w) = (widen(self, args[0])?, widen(self, args[1])?);
                vec![self.project(x, w)?]
            }
            Op::MhcPost => vec![self.post_mix(&args)?],
            Op::MhcPostGrad => self.post_mix_grad(&args)?,
            Op::MhcPreGrad(spec) => self.pre_mix_grad(&args, spec, cd)?,
            _ if let Some((norm_eps, gates)) = op.pre_mix() => {
                let projected = matches!(op, Op::MhcPreProjected(_));
                self.pre_mix(&args, attr(norm_eps), &gates, cd, projected)?
            }
            _ => unreachable!("only semantic and fused ops are expanded"),
        };
        if wide {
            results
                .into_iter()
                .map(|r| self.op(Op::Cast { dtype }, &[r]))
                .collect()
        } else {
            Ok(results)
        }
    }

    /// `x / (sum(x, axis) + eps)`.
    fn normalize(&mut self, x: ValueId, axis: usize, eps: f64) -> Result<ValueId> {
        let s = self.sum_keep(x, axis)?;
        let d = self.plus_eps(s, eps)?;
        self.binary(Op::Div, x, d)
    }

    /// `exp(x - max(x)) / sum(exp(x - max(x)))` along `axis`.
    fn softmax(&mut self, x: ValueId, axis: usize) -> Result<ValueId> {
        let m = self.op(
            Op::ReduceMax {
                axes: vec![axis],
                keepdims: true,
            },
            &[x],
        )?;
        let u = self.binary(Op::Sub, x, m)?;
        let e = self.op(Op::Exp, &[u])?;
        let s = self.sum_keep(e, axis)?;
        self.binary(Op::Div, e, s)
    }

    /// `rsqrt(sum(x·x, axis) / N + eps)`, keepdims, for the `N` elements
    /// along `axis`.
    fn rms_factor(&mut self, x: ValueId, axis: usize, eps: f64) -> Result<ValueId> {
        let n = self.ty(x).shape[axis] as f64;
        let sq = self.op(Op::Mul, &[x, x])?;
        let ss = self.sum_keep(sq, axis)?;
        let ms = self.with_const(Op::Div, ss, n)?;
        let v = self.plus_eps(ms, eps)?;
        self.op(Op::Rsqrt, &[v])
    }

    /// `x · rsqrt(mean(x², last) + eps)`.
    fn rms_norm(&mut self, x: ValueId, eps: f64) -> Result<ValueId> {
        let last = self.ty(x).rank() - 1;
        let f = self.rms_factor(x, last, eps)?;
        self.binary(Op::Mul, x, f)
    }

    /// Sinkhorn-Knopp on the trailing `n × n` matrices of `x` (rows are the
    /// last axis), with `eps` already in the computing dtype; one kept
    /// `sinkhorn` node if the caller keeps that op.
    fn sinkhorn(&mut self, x: ValueId, spec: &SinkhornSpec, eps: f64) -> Result<ValueId> {
        if (self.keep)(&Op::Sinkhorn(*spec)) {
            return self.op(Op::Sinkhorn(*spec), &[x]);
        }
        Ok(self
            .sinkhorn_states(x, spec, eps)?
            .pop()
            .expect("a start state"))
    }

    /// The states of the unrolled Sinkhorn: the start (`exp(x)`, or
    /// `softmax(x) + eps`) and the result of every normalization, in order.
    fn sinkhorn_states(
        &mut self,
        x: ValueId,
        spec: &SinkhornSpec,
        eps: f64,
    ) -> Result<Vec<ValueId>> {
        let rank = self.ty(x).rank();
        let (row, col) = (rank - 1, rank - 2);
        let mut states = match spec.computed_as() {
            SinkhornVariant::Paper => vec![self.op(Op::Exp, &[x])?],
            SinkhornVariant::TileKernels => {
                let s = self.softmax(x, row)?;
                let s = self.plus_eps(s, eps)?;
                let c = self.normalize(s, col, eps)?;
                vec![s, c]
            }
        };
        let rounds = match spec.computed_as() {
            SinkhornVariant::Paper => spec.iters,
            SinkhornVariant::TileKernels => spec.iters - 1,
        };
        for _ in 0..rounds {
            let m = states[states.len() - 1];
            let r = self.normalize(m, row, eps)?;
            states.push(r);
            let c = self.normalize(r, col, eps)?;
            states.push(c);
        }
        Ok(states)
    }

    /// `sinkhorn_grad(x, dy)`: the unrolled forward states, then per
    /// normalization `y = z / (Σz + eps)`, last first,
    /// `dz = (dy − Σ dy·y) / (Σz + eps)`; at the start `dx = dy·exp(x)`
    /// (`paper`) or `p·(dy − Σ_row dy·p)` with `p = softmax(x)` (`tilekernels`).
    fn sinkhorn_grad(
        &mut self,
        x: ValueId,
        dy: ValueId,
        spec: &SinkhornSpec,
        eps: f64,
    ) -> Result<ValueId> {
        let rank = self.ty(x).rank();
        let (row, col) = (rank - 1, rank - 2);
        let states = self.sinkhorn_states(x, spec, eps)?;
        // Which axis normalization k (from states[k-1] to states[k]) used.
        let first = usize::from(spec.computed_as() == SinkhornVariant::TileKernels);
        let mut d = dy;
        for k in (1..states.len()).rev() {
            let axis = if k <= first || (k - first) % 2 == 0 {
                col
            } else {
                row
            };
            let (z, y) = (states[k - 1], states[k]);
            let s = self.sum_keep(z, axis)?;
            let s = self.plus_eps(s, eps)?;
            let dyy = self.op(Op::Mul, &[d, y])?;
            let t = self.sum_keep(dyy, axis)?;
            let u = self.binary(Op::Sub, d, t)?;
            d = self.binary(Op::Div, u, s)?;
        }
        match spec.computed_as() {
            SinkhornVariant::Paper => self.op(Op::Mul, &[d, states[0]]),
            SinkhornVariant::TileKernels => {
                let p = self.softmax(x, row)?;
                let dp = self.op(Op::Mul, &[d, p])?;
                let t = self.sum_keep(dp, row)?;
                let u = self.binary(Op::Sub, d, t)?;
                self.op(Op::Mul, &[p, u])
            }
        }
    }

    /// The pre-mix of `docs/design.md` §2 on `[x [T,n,C], fn [m,nC], scale [3], base [m]]`:
    /// `[layer_input [T,C], post_mix [T,n], comb_mix [T,n,n]]`.
    /// Each of the `n(n+2)` mixes' scale: `[scale0 ×n, scale1 ×n, scale2 ×n²]`.
    fn mix_scales(&mut self, scale: ValueId, n: usize) -> Result<ValueId> {
        let mut parts = Vec::with_capacity(3);
        for (i, len) in [(0, n), (1, n), (2, n * n)] {
            let s = self.slice(scale, &[i], &[i + 1])?;
            parts.push(self.broadcast(s, &[len])?);
        }
        self.op(Op::Concat { axis: 0 }, &parts)
    }

    /// `x [T,n,C]` (rows flattened) times `weightsᵀ` (`weights [m,nC]`).
    fn project(&mut self, x: ValueId, weights: ValueId) -> Result<ValueId> {
        let xs = self.shape(x);
        let xf = self.reshape(x, &[xs[0], xs[1] * xs[2]])?;
        let w = self.op(Op::Permute { perm: vec![1, 0] }, &[weights])?;
        self.op(Op::MatMul, &[xf, w])
    }

    /// `mhc_pre` / `hc_pre` (`args[1]` the weights `fn`), or with
    /// `projected`, `mhc_pre_projected` (`args[1]` the mixes `x·fnᵀ`).
    /// `norm_eps` comes rounded to the computing dtype `cd`; the gates'
    /// attributes are rounded here (a kept `sinkhorn` keeps the op's own
    /// settings).
    fn pre_mix(
        &mut self,
        args: &[ValueId],
        norm_eps: f64,
        gates: &PreMixGates,
        cd: DType,
        projected: bool,
    ) -> Result<Vec<ValueId>> {
        let (x, proj, scale, base) = (args[0], args[1], args[2], args[3]);
        let xs = self.shape(x);
        let (t, n, c) = (xs[0], xs[1], xs[2]);
        let m = n * (n + 2);
        // pre_norm_fn: the projection first, the per-token rsqrt after it.
        let xf = self.reshape(x, &[t, n * c])?;
        let dots = if projected {
            proj
        } else {
            self.project(x, proj)?
        };
        let r = self.rms_factor(xf, 1, norm_eps)?;
        let mixes = self.binary(Op::Mul, dots, r)?;
        let (pre, post, comb) = match *gates {
            PreMixGates::Constrained {
                pre_eps,
                post_mult,
                sinkhorn,
            } => {
                let (pre_eps, post_mult) =
                    (pre_eps.rounded_to(cd).get(), post_mult.rounded_to(cd).get());
                // z = mixes ⊙ scales + base.
                let sv = self.mix_scales(scale, n)?;
                let zm = self.binary(Op::Mul, mixes, sv)?;
                let z = self.binary(Op::Add, zm, base)?;
                let zp = self.slice(z, &[0, 0], &[t, n])?;
                let gp = self.op(Op::Sigmoid, &[zp])?;
                let pre = self.plus_eps(gp, pre_eps)?;
                let zq = self.slice(z, &[0, n], &[t, 2 * n])?;
                let gq = self.op(Op::Sigmoid, &[zq])?;
                let post = if post_mult == 1.0 {
                    gq
                } else {
                    self.with_const(Op::Mul, gq, post_mult)?
                };
                let zc = self.slice(z, &[0, 2 * n], &[t, m])?;
                let logits = self.reshape(zc, &[t, n, n])?;
                let comb = self.sinkhorn(logits, &sinkhorn, sinkhorn.eps.rounded_to(cd).get())?;
                (pre, post, comb)
            }
            PreMixGates::Unconstrained => {
                let pre = self.tanh_gate(mixes, scale, base, 0, (0, n))?;
                let post = self.tanh_gate(mixes, scale, base, 1, (n, 2 * n))?;
                let flat = self.tanh_gate(mixes, scale, base, 2, (2 * n, m))?;
                let comb = self.reshape(flat, &[t, n, n])?;
                (pre, post, comb)
            }
        };
        // apply_mix: layer_input[t, c] = Σ_i pre[t, i] · x[t, i, c].
        let row = self.reshape(pre, &[t, 1, n])?;
        let mixed = self.op(Op::MatMul, &[row, x])?;
        let li = self.reshape(mixed, &[t, c])?;
        Ok(vec![li, post, comb])
    }

    /// `scale[i] · tanh(mixes[:, lo..hi]) + base[lo..hi]`.
    fn tanh_gate(
        &mut self,
        mixes: ValueId,
        scale: ValueId,
        base: ValueId,
        i: usize,
        (lo, hi): (usize, usize),
    ) -> Result<ValueId> {
        let t = self.shape(mixes)[0];
        let s = self.slice(scale, &[i], &[i + 1])?;
        let s = self.reshape(s, &[])?;
        let s = self.broadcast(s, &[t, hi - lo])?;
        let cols = self.slice(mixes, &[0, lo], &[t, hi])?;
        let th = self.op(Op::Tanh, &[cols])?;
        let g = self.op(Op::Mul, &[s, th])?;
        let b = self.slice(base, &[lo], &[hi])?;
        self.binary(Op::Add, g, b)
    }

    /// The post-mix on `[f [T,C], x [T,n,C], post [T,n], comb [T,n,n]]`:
    /// `comb^T x + post ⊗ f`.
    fn post_mix(&mut self, args: &[ValueId]) -> Result<ValueId> {
        let (f, x, post, comb) = (args[0], args[1], args[2], args[3]);
        let xs = self.shape(x);
        let (t, n, c) = (xs[0], xs[1], xs[2]);
        let ct = self.op(
            Op::Permute {
                perm: vec![0, 2, 1],
            },
            &[comb],
        )?;
        let mixed = self.op(Op::MatMul, &[ct, x])?;
        let p = self.reshape(post, &[t, n, 1])?;
        let p = self.broadcast(p, &[t, n, c])?;
        let fr = self.reshape(f, &[t, 1, c])?;
        let fr = self.broadcast(fr, &[t, n, c])?;
        let prod = self.op(Op::Mul, &[p, fr])?;
        self.op(Op::Add, &[mixed, prod])
    }

    /// The post-mix's backward on `[f, x, post, comb, d_out]`: four batched
    /// products, `d_f = post·d_out`, `d_x = comb·d_out`,
    /// `d_post = d_out·f` and `d_comb = x·d_outᵀ` (per token).
    fn post_mix_grad(&mut self, args: &[ValueId]) -> Result<Vec<ValueId>> {
        let (f, x, post, comb, g) = (args[0], args[1], args[2], args[3], args[4]);
        let xs = self.shape(x);
        let (t, n, c) = (xs[0], xs[1], xs[2]);
        let p = self.reshape(post, &[t, 1, n])?;
        let d_f = self.op(Op::MatMul, &[p, g])?;
        let d_f = self.reshape(d_f, &[t, c])?;
        let d_x = self.op(Op::MatMul, &[comb, g])?;
        let fc = self.reshape(f, &[t, c, 1])?;
        let d_post = self.op(Op::MatMul, &[g, fc])?;
        let d_post = self.reshape(d_post, &[t, n])?;
        let gt = self.op(
            Op::Permute {
                perm: vec![0, 2, 1],
            },
            &[g],
        )?;
        let d_comb = self.op(Op::MatMul, &[x, gt])?;
        Ok(vec![d_f, d_x, d_post, d_comb])
    }
}

impl Builder<'_> {
    /// The pre-mix's backward on `[x, fn, scale, base, d_li, d_post,
    /// d_comb]` with the float attributes of `attrs` rounded to the
    /// computing dtype `cd`: `[d_x, d_fn, d_scale, d_base]` (see the module
    /// documentation).
    fn pre_mix_grad(
        &mut self,
        args: &[ValueId],
        attrs: &PreMixSpec,
        cd: DType,
    ) -> Result<Vec<ValueId>> {
        // A kept `sinkhorn_grad` keeps the op's own Sinkhorn settings; the
        // expansion uses its eps rounded like the others.
        let attr = |a: FloatAttr| a.rounded_to(cd).get();
        let (norm_eps, pre_eps) = (attr(attrs.norm_eps), attr(attrs.pre_eps));
        let post_mult = attr(attrs.post_mult);
        let (spec, eps) = (&attrs.sinkhorn, attr(attrs.sinkhorn.eps));
        let (x, proj, scale, base) = (args[0], args[1], args[2], args[3]);
        let (d_li, d_post, d_comb) = (args[4], args[5], args[6]);
        let xs = self.shape(x);
        let (t, n, c) = (xs[0], xs[1], xs[2]);
        let (m, k) = (n * (n + 2), n * c);
        // The forward, as pre_mix computes it.
        let xf = self.reshape(x, &[t, k])?;
        let dots = self.project(x, proj)?;
        let f = self.rms_factor(xf, 1, norm_eps)?;
        let mixes = self.binary(Op::Mul, dots, f)?;
        // z = mixes ⊙ scales + base.
        let sv = self.mix_scales(scale, n)?;
        let zm = self.binary(Op::Mul, mixes, sv)?;
        let z = self.binary(Op::Add, zm, base)?;
        let zp = self.slice(z, &[0, 0], &[t, n])?;
        let sp = self.op(Op::Sigmoid, &[zp])?;
        let pre = self.plus_eps(sp, pre_eps)?;
        let zq = self.slice(z, &[0, n], &[t, 2 * n])?;
        let sq = self.op(Op::Sigmoid, &[zq])?;
        let zc = self.slice(z, &[0, 2 * n], &[t, m])?;
        let logits = self.reshape(zc, &[t, n, n])?;
        // σ'(z) = σ(z)·σ(−z), as the reference computes it.
        let dsig = |b: &mut Self, s: ValueId, z: ValueId| -> Result<ValueId> {
            let neg = b.op(Op::Neg, &[z])?;
            let sn = b.op(Op::Sigmoid, &[neg])?;
            b.op(Op::Mul, &[s, sn])
        };
        // apply_mix: d_pre[t, i] = Σ_c d_li[t, c]·x[t, i, c].
        let lc = self.reshape(d_li, &[t, c, 1])?;
        let d_pre = self.op(Op::MatMul, &[x, lc])?;
        let d_pre = self.reshape(d_pre, &[t, n])?;
        let dp = dsig(self, sp, zp)?;
        let dzp = self.op(Op::Mul, &[d_pre, dp])?;
        let d_post = if post_mult == 1.0 {
            d_post
        } else {
            self.with_const(Op::Mul, d_post, post_mult)?
        };
        let dq = dsig(self, sq, zq)?;
        let dzq = self.op(Op::Mul, &[d_post, dq])?;
        let dzc = self.sinkhorn_grad(logits, d_comb, spec, eps)?;
        let dzc = self.reshape(dzc, &[t, n * n])?;
        let dz = self.op(Op::Concat { axis: 1 }, &[dzp, dzq, dzc])?;
        // The affine split.
        let d_base = self.op(
            Op::ReduceSum {
                axes: vec![0],
                keepdims: false,
            },
            &[dz],
        )?;
        let dzm = self.op(Op::Mul, &[dz, mixes])?;
        let mut parts = Vec::with_capacity(3);
        for (lo, hi) in [(0, n), (n, 2 * n), (2 * n, m)] {
            let cols = self.slice(dzm, &[0, lo], &[t, hi])?;
            let s = self.op(
                Op::ReduceSum {
                    axes: vec![0, 1],
                    keepdims: false,
                },
                &[cols],
            )?;
            parts.push(self.reshape(s, &[1])?);
        }
        let d_scale = self.op(Op::Concat { axis: 0 }, &parts)?;
        let d_mix = self.binary(Op::Mul, dz, sv)?;
        // The projection (g is the cotangent of the raw dot products) and
        // the RMS factor: d rsqrt(v) = −rsqrt(v)³/2 · dv, v = Σx²/k + eps.
        let g = self.binary(Op::Mul, d_mix, f)?;
        let d_fn = {
            let gt = self.op(Op::Permute { perm: vec![1, 0] }, &[g])?;
            self.op(Op::MatMul, &[gt, xf])?
        };
        let back = self.op(Op::MatMul, &[g, proj])?;
        let dd = self.op(Op::Mul, &[d_mix, dots])?;
        let d_f = self.sum_keep(dd, 1)?;
        let f2 = self.op(Op::Mul, &[f, f])?;
        let f3 = self.op(Op::Mul, &[f2, f])?;
        let u = self.op(Op::Mul, &[d_f, f3])?;
        let coef = self.with_const(Op::Div, u, -(k as f64))?;
        let d_rms = self.binary(Op::Mul, xf, coef)?;
        let pr = self.reshape(pre, &[t, n, 1])?;
        let pr = self.broadcast(pr, &[t, n, c])?;
        let lr = self.reshape(d_li, &[t, 1, c])?;
        let lr = self.broadcast(lr, &[t, n, c])?;
        let direct = self.op(Op::Mul, &[pr, lr])?;
        let direct = self.reshape(direct, &[t, k])?;
        let d_x = self.op(Op::Add, &[direct, d_rms])?;
        let d_x = self.op(Op::Add, &[d_x, back])?;
        let d_x = self.reshape(d_x, &[t, n, c])?;
        Ok(vec![d_x, d_fn, d_scale, d_base])
    }
}
