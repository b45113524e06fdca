//! SIMD code for `vector` loops (Cranelift does not auto-vectorize).
//!
//! Input: a `LoopKind::Vector` loop `for j in 0..extent { body }` whose
//! iterations are independent, apart from accumulators `acc = acc + e`,
//! `acc = max(acc, e)` or `acc = min(acc, e)` declared outside it. Output:
//! the same computation in 128-bit lanes (`f32x4`, `i32x4`, `f64x2`),
//! or an explanation of why the loop stays scalar.
//!
//! [`plan`] classifies every expression of the body as *uniform* (the same
//! in every iteration: constants, enclosing loop indices, variables set
//! outside, loads whose index does not use `j`) or *varying*. Uniform
//! values are computed once before the loop and splatted; varying loads
//! and stores at coefficient 1 in `j` become vector loads and stores,
//! other coefficients gather and scatter lane by lane. Each access stream
//! gets its loop-invariant base address computed once, so inside the loop
//! an address is `base + j·size` (one x86 addressing mode). Small bodies
//! are unrolled (up to four vectors per iteration for reductions with one
//! or two accumulators, two for elementwise loops), with one vector
//! accumulator per unrolled copy, reduced horizontally after the loop; leftover whole vectors run straight-line, and a scalar
//! loop handles the last `extent % lanes` iterations.
//!
//! A loop stays scalar when it: mixes `f64` with 32-bit lanes, accesses
//! index elements, stores to one element from every
//! iteration, reads a buffer it writes at a different index, assigns a
//! variable of an enclosing scope (other than an accumulator), or has
//! fewer iterations than lanes.

use std::collections::{HashMap, HashSet};

use birkhoff_ir::kernel::{AccOp, Expr, Index, ScalarType, Stmt, VarId, acc_form};
use birkhoff_ir::{DType, Op};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{BlockArg, InstBuilder, Value, types};
use cranelift_frontend::Variable;

use crate::codegen::{Bound, Gen, Mem, bf16_bits, clif_ty, le, mem_flags};
use crate::math;

/// A vectorizable loop's analysis.
#[derive(Debug)]
pub(crate) struct VectorPlan {
    /// 4 (32-bit lanes) or 2 (`f64`).
    pub lanes: u8,
    /// Vectors per iteration of the main loop.
    pub unroll: usize,
    /// Accumulators: variable, operation, type.
    pub accs: Vec<(VarId, AccOp, ScalarType)>,
    /// Variables set in the body to varying values.
    pub varying: HashSet<VarId>,
}

impl VectorPlan {
    fn acc(&self, v: VarId) -> Option<usize> {
        self.accs.iter().position(|a| a.0 == v)
    }
}

fn body_reads(body: &[Stmt], v: VarId) -> usize {
    body.iter()
        .map(|s| match s {
            Stmt::Set { value, .. }
            | Stmt::Store { value, .. }
            | Stmt::LocalStore { value, .. } => value.reads(v),
            _ => 0,
        })
        .sum()
}

fn expr_nodes(e: &Expr) -> usize {
    1 + match e {
        Expr::Unary { arg, .. } | Expr::Cast { arg, .. } => expr_nodes(arg),
        Expr::Binary { lhs, rhs, .. } => expr_nodes(lhs) + expr_nodes(rhs),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => expr_nodes(cond) + expr_nodes(then) + expr_nodes(otherwise),
        _ => 0,
    }
}

fn stmt_nodes(s: &Stmt) -> usize {
    match s {
        Stmt::Set { value, .. } | Stmt::Store { value, .. } | Stmt::LocalStore { value, .. } => {
            1 + expr_nodes(value)
        }
        _ => 1,
    }
}

/// An index with `j`'s term removed and terms sorted (a stream key).
fn without(ix: &Index, j: VarId) -> Index {
    let mut terms: Vec<(VarId, i64)> = ix.terms.iter().copied().filter(|t| t.0 != j).collect();
    terms.sort();
    Index {
        offset: ix.offset,
        terms,
    }
}

struct Planner<'g, 'a, 'f> {
    g: &'g Gen<'a, 'f>,
    j: VarId,
    /// Indices each buffer or local is stored at.
    stored: HashMap<Mem, Vec<Index>>,
    varying: HashSet<VarId>,
    set: HashSet<VarId>,
    /// Types of varying values.
    types: HashSet<ScalarType>,
    /// Varying casts `(from, to)`, and whether `j` is converted.
    casts: HashSet<(ScalarType, ScalarType)>,
    iota: bool,
    accs: Vec<(VarId, AccOp, ScalarType)>,
}

impl Planner<'_, '_, '_> {
    fn ty(&self, e: &Expr) -> ScalarType {
        e.ty(self.g.program, self.g.kernel)
    }

    fn mem_dtype(&self, m: Mem) -> Option<DType> {
        match m {
            Mem::Buf(b) => Some(self.g.program.buffer(b).dtype()),
            Mem::Local(l) => self.g.kernel.locals[l.0 as usize].ty.dtype(),
        }
    }

    fn lane_access(&mut self, m: Mem, ix: &Index) -> Result<(), String> {
        match self.mem_dtype(m) {
            None => return Err("it accesses index elements per lane".into()),
            Some(d) => {
                self.types.insert(ScalarType::of(d));
            }
        }
        if let Some(st) = self.stored.get(&m)
            && !st.contains(&ix.normalized())
        {
            return Err("it reads a buffer it writes, at another index".into());
        }
        Ok(())
    }

    /// Whether `e` is varying (`Ok(false)`: uniform).
    fn shape(&mut self, e: &Expr) -> Result<bool, String> {
        let varying = match e {
            Expr::Const { .. } => false,
            Expr::Var(v) => {
                if *v == self.j {
                    return Err("it uses its index as a value other than in a cast".into());
                }
                if self.accs.iter().any(|a| a.0 == *v) {
                    return Err("it reads an accumulator".into());
                }
                self.varying.contains(v)
            }
            Expr::Load { buf, index } => {
                let m = Mem::Buf(*buf);
                if index.coeff(self.j) == 0 {
                    if self.stored.contains_key(&m) {
                        return Err("it reads, at one element, a buffer it writes".into());
                    }
                    false
                } else {
                    self.lane_access(m, index)?;
                    true
                }
            }
            Expr::LocalLoad { local, index } => {
                let m = Mem::Local(*local);
                if index.coeff(self.j) == 0 {
                    if self.stored.contains_key(&m) {
                        return Err("it reads, at one element, a local it writes".into());
                    }
                    false
                } else {
                    self.lane_access(m, index)?;
                    true
                }
            }
            Expr::Unary { arg, .. } => self.shape(arg)?,
            Expr::Binary { lhs, rhs, .. } => {
                let a = self.shape(lhs)?;
                let b = self.shape(rhs)?;
                a || b
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.shape(cond)?;
                let a = self.shape(then)?;
                let b = self.shape(otherwise)?;
                c || a || b
            }
            Expr::Cast { to, arg } => {
                if matches!(**arg, Expr::Var(v) if v == self.j) {
                    if !matches!(to, ScalarType::F32 | ScalarType::I32) {
                        return Err(format!("it converts its index to {}", to.name()));
                    }
                    self.iota = true;
                    true
                } else {
                    let v = self.shape(arg)?;
                    if v {
                        self.casts.insert((self.ty(arg), *to));
                    }
                    v
                }
            }
        };
        if varying {
            let t = self.ty(e);
            if t == ScalarType::Index {
                return Err("it has index values per lane".into());
            }
            self.types.insert(t);
        }
        Ok(varying)
    }

    fn store(&mut self, m: Mem, ix: &Index, value: &Expr) -> Result<(), String> {
        self.shape(value)?;
        if ix.coeff(self.j) == 0 {
            return Err("every iteration stores to one element".into());
        }
        self.lane_access(m, ix)
    }
}

/// Decides whether and how a vector loop becomes SIMD code.
pub(crate) fn plan(
    g: &Gen<'_, '_>,
    j: VarId,
    extent: usize,
    body: &[Stmt],
) -> Result<VectorPlan, String> {
    let mut p = Planner {
        g,
        j,
        stored: HashMap::new(),
        varying: HashSet::new(),
        set: HashSet::new(),
        types: HashSet::new(),
        casts: HashSet::new(),
        iota: false,
        accs: Vec::new(),
    };
    for s in body {
        let (m, ix) = match s {
            Stmt::Store { buf, index, .. } => (Mem::Buf(*buf), index),
            Stmt::LocalStore { local, index, .. } => (Mem::Local(*local), index),
            Stmt::Set { .. } => continue,
            Stmt::Loop { .. } | Stmt::Gemm(_) => return Err("it contains a loop or a call".into()),
        };
        p.stored.entry(m).or_default().push(ix.normalized());
    }
    for s in body {
        match s {
            Stmt::Set { var, value } => {
                let t = g.kernel.vars[var.0 as usize].ty;
                if g.defined(*var) && !p.set.contains(var) {
                    let Some((op, e)) = acc_form(*var, value) else {
                        return Err("it assigns a variable of an enclosing scope".into());
                    };
                    if !matches!(t, ScalarType::F32 | ScalarType::F64 | ScalarType::I32)
                        || body_reads(body, *var) != 1
                        || body
                            .iter()
                            .filter(|s| matches!(s, Stmt::Set { var: v, .. } if v == var))
                            .count()
                            != 1
                    {
                        return Err("it uses an accumulator other than to accumulate".into());
                    }
                    p.shape(e)?;
                    p.types.insert(t);
                    p.accs.push((*var, op, t));
                    continue;
                }
                let v = p.shape(value)?;
                if p.set.contains(var) && p.varying.contains(var) != v {
                    return Err("it reassigns a variable from varying to uniform or back".into());
                }
                if v {
                    p.varying.insert(*var);
                }
                p.set.insert(*var);
            }
            Stmt::Store { buf, index, value } => p.store(Mem::Buf(*buf), index, value)?,
            Stmt::LocalStore {
                local,
                index,
                value,
            } => p.store(Mem::Local(*local), index, value)?,
            Stmt::Loop { .. } | Stmt::Gemm(_) => unreachable!("rejected above"),
        }
    }
    let wide = p.types.contains(&ScalarType::F64);
    let narrow = p.types.contains(&ScalarType::F32) || p.types.contains(&ScalarType::I32);
    if wide && (narrow || p.iota) {
        return Err("it mixes f64 with 32-bit lanes".into());
    }
    let lanes: u8 = if wide { 2 } else { 4 };
    for &(from, to) in &p.casts {
        use ScalarType as S;
        let ok = from == to
            || match lanes {
                4 => matches!(
                    (from, to),
                    (S::F32 | S::I32 | S::Bool, S::F32 | S::I32 | S::Bool)
                ),
                _ => matches!((from, to), (S::F64 | S::Bool, S::F64 | S::Bool)),
            };
        if !ok {
            return Err(format!(
                "it converts {} to {} per lane",
                from.name(),
                to.name()
            ));
        }
    }
    if extent < usize::from(lanes) {
        return Err(format!("it has fewer than {lanes} iterations"));
    }
    // Unroll for instruction-level parallelism while the values of all
    // copies still fit the 16 vector registers: a reduction wants several
    // independent accumulators per add latency, but many accumulators
    // (say the 25 dot products of an mHC projection) already are.
    let nodes: usize = body.iter().map(stmt_nodes).sum();
    let unroll = match p.accs.len() {
        0 if nodes <= 16 => 2,
        0 => 1,
        1 | 2 if nodes <= 24 => 4,
        1..=4 => 2,
        _ => 1,
    };
    Ok(VectorPlan {
        lanes,
        unroll,
        accs: p.accs,
        varying: p.varying,
    })
}

/// One access stream's loop-invariant parts.
#[derive(Clone, Copy)]
struct Stream {
    /// The element index without the `j` term.
    idx: Value,
    /// The address of that element.
    addr: Value,
}

/// Emission state of one vector loop.
struct VState<'p> {
    plan: &'p VectorPlan,
    j: VarId,
    lanes: u8,
    /// Splatted uniform subexpressions, by address.
    pre: HashMap<usize, Value>,
    streams: HashMap<(Mem, Index), Stream>,
    /// Varying values of body variables in the current copy.
    vvars: HashMap<VarId, Value>,
    /// `[0, 1, 2, 3]` as `i32x4`.
    iota: Option<Value>,
    /// One vector variable per accumulator and unrolled copy.
    vaccs: Vec<Vec<Variable>>,
}

fn key(e: &Expr) -> usize {
    std::ptr::from_ref(e) as usize
}

impl VState<'_> {
    fn uniform(&self, e: &Expr) -> bool {
        match e {
            Expr::Const { .. } => true,
            Expr::Var(v) => {
                *v != self.j && !self.plan.varying.contains(v) && self.plan.acc(*v).is_none()
            }
            Expr::Load { index, .. } | Expr::LocalLoad { index, .. } => index.coeff(self.j) == 0,
            Expr::Unary { arg, .. } | Expr::Cast { arg, .. } => self.uniform(arg),
            Expr::Binary { lhs, rhs, .. } => self.uniform(lhs) && self.uniform(rhs),
            Expr::Select {
                cond,
                then,
                otherwise,
            } => self.uniform(cond) && self.uniform(then) && self.uniform(otherwise),
        }
    }
}

impl Gen<'_, '_> {
    /// A uniform scalar spread over the lanes (bools become lane masks).
    fn splat(&mut self, t: ScalarType, x: Value, lanes: u8) -> Value {
        let ty = clif_ty(t, lanes);
        if t == ScalarType::Bool {
            let lane = ty.lane_type();
            let w = self.b.ins().uextend(lane, x);
            let m = self.b.ins().ineg(w);
            return self.b.ins().splat(ty, m);
        }
        self.b.ins().splat(ty, x)
    }

    /// Before the loop: uniform values, splats and stream bases for `e`.
    fn prepare(&mut self, vs: &mut VState<'_>, e: &Expr) {
        if vs.uniform(e) {
            if !vs.pre.contains_key(&key(e)) {
                let t = self.ty(e);
                let x = self.expr(e);
                let s = self.splat(t, x, vs.lanes);
                vs.pre.insert(key(e), s);
            }
            return;
        }
        match e {
            Expr::Load { buf, index } => self.prepare_stream(vs, Mem::Buf(*buf), index),
            Expr::LocalLoad { local, index } => self.prepare_stream(vs, Mem::Local(*local), index),
            Expr::Unary { arg, .. } => self.prepare(vs, arg),
            Expr::Cast { arg, .. } => {
                if matches!(**arg, Expr::Var(v) if v == vs.j) {
                    if vs.iota.is_none() {
                        let bytes: Vec<u8> = (0..4i32).flat_map(i32::to_le_bytes).collect();
                        let c = self.b.func.dfg.constants.insert(bytes.into());
                        vs.iota = Some(self.b.ins().vconst(types::I32X4, c));
                    }
                } else {
                    self.prepare(vs, arg);
                }
            }
            Expr::Binary { op, lhs, rhs } => {
                let t = self.ty(lhs);
                if let Some((a, b, c, _)) = self.fma_operands(op, t, lhs, rhs) {
                    self.prepare(vs, a);
                    self.prepare(vs, b);
                    self.prepare(vs, c);
                } else {
                    self.prepare(vs, lhs);
                    self.prepare(vs, rhs);
                }
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                self.prepare(vs, cond);
                self.prepare(vs, then);
                self.prepare(vs, otherwise);
            }
            Expr::Var(_) | Expr::Const { .. } => {}
        }
    }

    fn prepare_stream(&mut self, vs: &mut VState<'_>, m: Mem, ix: &Index) {
        let k = (m, without(ix, vs.j));
        if vs.streams.contains_key(&k) {
            return;
        }
        let idx = self.index(&k.1);
        let base = self.base(m);
        let addr = self.offset_addr(base, idx, self.elem_bytes(m));
        vs.streams.insert(k, Stream { idx, addr });
    }

    /// Emits a vector loop following `plan`.
    pub(crate) fn vector_loop(
        &mut self,
        plan: &VectorPlan,
        j: VarId,
        extent: usize,
        body: &[Stmt],
    ) {
        let lanes = plan.lanes;
        let w = i64::from(lanes);
        let u = plan.unroll as i64;
        let extent = extent as i64;
        let vec_end = extent - extent % w;
        let main_end = extent - extent % (w * u);
        let mut vs = VState {
            plan,
            j,
            lanes,
            pre: HashMap::new(),
            streams: HashMap::new(),
            vvars: HashMap::new(),
            iota: None,
            vaccs: Vec::new(),
        };
        // Before the loop: uniform variables, uniform subexpressions, stream bases.
        for s in body {
            match s {
                Stmt::Set { var, value } if plan.acc(*var).is_some() => {
                    match acc_form(*var, value).expect("planned as an accumulator") {
                        (
                            AccOp::Add,
                            Expr::Binary {
                                op: Op::Mul,
                                lhs,
                                rhs,
                            },
                        ) if self.cfg.fma => {
                            self.prepare(&mut vs, lhs);
                            self.prepare(&mut vs, rhs);
                        }
                        (_, e) => self.prepare(&mut vs, e),
                    }
                }
                Stmt::Set { var, value } if !plan.varying.contains(var) => {
                    let x = self.expr(value);
                    self.b.def_var(self.vars[var.0 as usize], x);
                }
                Stmt::Set { value, .. } => self.prepare(&mut vs, value),
                Stmt::Store { buf, index, value } => {
                    self.prepare(&mut vs, value);
                    self.prepare_stream(&mut vs, Mem::Buf(*buf), index);
                }
                Stmt::LocalStore {
                    local,
                    index,
                    value,
                } => {
                    self.prepare(&mut vs, value);
                    self.prepare_stream(&mut vs, Mem::Local(*local), index);
                }
                Stmt::Loop { .. } | Stmt::Gemm(_) => unreachable!("vector loops hold neither"),
            }
        }
        for &(_, op, t) in &plan.accs {
            let identity = op.identity(t);
            let init = self.konst(t, identity, lanes);
            let vty = clif_ty(t, lanes);
            let vars: Vec<Variable> = (0..u)
                .map(|_| {
                    let v = self.b.declare_var(vty);
                    self.b.def_var(v, init);
                    v
                })
                .collect();
            vs.vaccs.push(vars);
        }

        if main_end > 0 {
            let head = self.b.create_block();
            let exit = self.b.create_block();
            let jj = self.b.append_block_param(head, types::I64);
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.ins().jump(head, &[BlockArg::Value(zero)]);
            self.b.switch_to_block(head);
            for c in 0..u {
                self.vector_copy(&mut vs, body, jj, c as usize, c as usize);
            }
            let next = self.b.ins().iadd_imm_s(jj, w * u);
            let more = self
                .b
                .ins()
                .icmp_imm_s(IntCC::SignedLessThan, next, main_end);
            self.b
                .ins()
                .brif(more, head, &[BlockArg::Value(next)], exit, &[]);
            self.b.switch_to_block(exit);
        }
        if vec_end > main_end {
            let jj = self.b.ins().iconst(types::I64, main_end);
            for c in 0..((vec_end - main_end) / w) as usize {
                self.vector_copy(&mut vs, body, jj, c, c);
            }
        }
        for (a, &(var, op, t)) in plan.accs.iter().enumerate() {
            let mut v = self.b.use_var(vs.vaccs[a][0]);
            for c in 1..u as usize {
                let x = self.b.use_var(vs.vaccs[a][c]);
                v = self.combine(op, t, v, x);
            }
            let mut lanes_v: Vec<Value> =
                (0..lanes).map(|l| self.b.ins().extractlane(v, l)).collect();
            while lanes_v.len() > 1 {
                let hi = lanes_v.split_off(lanes_v.len() / 2);
                lanes_v = lanes_v
                    .iter()
                    .zip(&hi)
                    .map(|(&x, &y)| self.combine(op, t, x, y))
                    .collect();
            }
            let old = self.b.use_var(self.vars[var.0 as usize]);
            let new = self.combine(op, t, old, lanes_v[0]);
            self.b.def_var(self.vars[var.0 as usize], new);
        }
        if vec_end < extent {
            let lo = self.b.ins().iconst(types::I64, vec_end);
            self.counted_loop(j, lo, Bound::Const(extent), body);
        }
    }

    fn combine(&mut self, op: AccOp, t: ScalarType, a: Value, b: Value) -> Value {
        let float = t != ScalarType::I32;
        let ins = self.b.ins();
        match (op, float) {
            (AccOp::Add, true) => ins.fadd(a, b),
            (AccOp::Max, true) => ins.fmax(a, b),
            (AccOp::Min, true) => ins.fmin(a, b),
            (AccOp::Add, false) => ins.iadd(a, b),
            (AccOp::Max, false) => ins.smax(a, b),
            (AccOp::Min, false) => ins.smin(a, b),
        }
    }

    /// One vector's worth of the body: iterations `jj + copy·lanes ..`,
    /// accumulating into accumulator copy `slot`.
    fn vector_copy(
        &mut self,
        vs: &mut VState<'_>,
        body: &[Stmt],
        jj: Value,
        copy: usize,
        slot: usize,
    ) {
        vs.vvars.clear();
        for s in body {
            match s {
                Stmt::Set { var, value } => {
                    if let Some(a) = vs.plan.acc(*var) {
                        let (op, t) = (vs.plan.accs[a].1, vs.plan.accs[a].2);
                        let (_, e) = acc_form(*var, value).expect("planned as an accumulator");
                        let acc = vs.vaccs[a][slot];
                        let old = self.b.use_var(acc);
                        let new = match (op, e) {
                            (
                                AccOp::Add,
                                Expr::Binary {
                                    op: Op::Mul,
                                    lhs,
                                    rhs,
                                },
                            ) if self.cfg.fma && t != ScalarType::I32 => {
                                let x = self.vexpr(vs, lhs, jj, copy);
                                let y = self.vexpr(vs, rhs, jj, copy);
                                self.b.ins().fma(x, y, old)
                            }
                            _ => {
                                let x = self.vexpr(vs, e, jj, copy);
                                self.combine(op, t, old, x)
                            }
                        };
                        self.b.def_var(acc, new);
                    } else if vs.plan.varying.contains(var) {
                        let x = self.vexpr(vs, value, jj, copy);
                        vs.vvars.insert(*var, x);
                    }
                }
                Stmt::Store { buf, index, value } => {
                    let x = self.vexpr(vs, value, jj, copy);
                    self.vstore(vs, Mem::Buf(*buf), index, x, jj, copy);
                }
                Stmt::LocalStore {
                    local,
                    index,
                    value,
                } => {
                    let x = self.vexpr(vs, value, jj, copy);
                    self.vstore(vs, Mem::Local(*local), index, x, jj, copy);
                }
                Stmt::Loop { .. } | Stmt::Gemm(_) => unreachable!("vector loops hold neither"),
            }
        }
    }

    /// The element index of lane 0 of an access in this copy (checked mode).
    fn lane0_index(&mut self, s: Stream, c: i64, jj: Value, copy: usize, lanes: u8) -> Value {
        let jc = self.b.ins().imul_imm_s(jj, c);
        let i = self.b.ins().iadd(s.idx, jc);
        self.b
            .ins()
            .iadd_imm_s(i, copy as i64 * i64::from(lanes) * c)
    }

    /// The address of lane 0 and the byte step between lanes.
    fn lane_addr(
        &mut self,
        vs: &VState<'_>,
        m: Mem,
        ix: &Index,
        jj: Value,
        copy: usize,
        what: &str,
    ) -> (Value, i32, i64) {
        let s = vs.streams[&(m, without(ix, vs.j))];
        let c = ix.coeff(vs.j);
        let size = i64::from(self.elem_bytes(m));
        if self.cfg.checked {
            let first = self.lane0_index(s, c, jj, copy, vs.lanes);
            let offs: Vec<i64> = if c == 1 {
                vec![0, i64::from(vs.lanes) - 1]
            } else {
                (0..i64::from(vs.lanes)).map(|l| l * c).collect()
            };
            self.check(m, first, &offs, what);
        }
        let step = c * size;
        let scaled = if step > 0 && (step as u64).is_power_of_two() {
            self.b
                .ins()
                .ishl_imm_s(jj, i64::from(step.trailing_zeros()))
        } else {
            self.b.ins().imul_imm_s(jj, step)
        };
        let addr = self.b.ins().iadd(s.addr, scaled);
        let off = copy as i64 * i64::from(vs.lanes) * step;
        (addr, off as i32, step)
    }

    fn vload(&mut self, vs: &VState<'_>, m: Mem, ix: &Index, jj: Value, copy: usize) -> Value {
        let what = format!("load of {}", self.describe(m, ix));
        let (addr, off, step) = self.lane_addr(vs, m, ix, jj, copy, &what);
        let d = match m {
            Mem::Buf(b) => self.program.buffer(b).dtype(),
            Mem::Local(l) => self.kernel.locals[l.0 as usize]
                .ty
                .dtype()
                .expect("planned: no index locals"),
        };
        let t = ScalarType::of(d);
        let vty = clif_ty(t, vs.lanes);
        let f = self.load_flags(m);
        // Two bools are loaded lane by lane.
        if ix.coeff(vs.j) == 1 && (d != DType::Bool || vs.lanes == 4) {
            return match d {
                DType::Bool => {
                    // Four bytes of 0/1 to four all-ones/zero lanes.
                    let w = self.b.ins().load(types::I32, f, addr, off);
                    let v = self.b.ins().scalar_to_vector(types::I32X4, w);
                    let v = self.b.ins().bitcast(types::I8X16, le(), v);
                    let v = self.b.ins().swiden_low(v);
                    let v = self.b.ins().swiden_low(v);
                    let zero = self.konst(ScalarType::I32, 0.0, 4);
                    self.b.ins().icmp(IntCC::NotEqual, v, zero)
                }
                DType::Bf16 => {
                    let w = self.b.ins().uload16x4(f, addr, off);
                    let w = self.b.ins().ishl_imm_s(w, 16);
                    self.b.ins().bitcast(types::F32X4, le(), w)
                }
                _ => self.b.ins().load(vty, f, addr, off),
            };
        }
        let mut v = None;
        for l in 0..vs.lanes {
            let x = self.load_elem(d, addr, off + i32::from(l) * step as i32, f);
            let x = if d == DType::Bool {
                let w = self.b.ins().uextend(vty.lane_type(), x);
                self.b.ins().ineg(w)
            } else {
                x
            };
            v = Some(match v {
                None => self.b.ins().splat(vty, x),
                Some(v) => self.b.ins().insertlane(v, x, l),
            });
        }
        v.expect("at least one lane")
    }

    fn vstore(&mut self, vs: &VState<'_>, m: Mem, ix: &Index, x: Value, jj: Value, copy: usize) {
        let what = format!("store into {}", self.describe(m, ix));
        let (addr, off, step) = self.lane_addr(vs, m, ix, jj, copy, &what);
        let d = match m {
            Mem::Buf(b) => self.program.buffer(b).dtype(),
            Mem::Local(l) => self.kernel.locals[l.0 as usize]
                .ty
                .dtype()
                .expect("planned: no index locals"),
        };
        if ix.coeff(vs.j) == 1 && (d != DType::Bool || vs.lanes == 4) {
            if d == DType::Bool {
                // Lane masks to four bytes of 0/1.
                let one = self.konst(ScalarType::I32, 1.0, 4);
                let v = self.b.ins().band(x, one);
                let v = self.b.ins().snarrow(v, v);
                let v = self.b.ins().snarrow(v, v);
                let v = self.b.ins().bitcast(types::I32X4, le(), v);
                let w = self.b.ins().extractlane(v, 0);
                self.b.ins().store(mem_flags(), w, addr, off);
            } else if d == DType::Bf16 {
                let bits = bf16_bits(&mut self.b, x, 4);
                let packed = self.b.ins().unarrow(bits, bits);
                let q = self.b.ins().bitcast(types::I64X2, le(), packed);
                let lo = self.b.ins().extractlane(q, 0);
                self.b.ins().store(mem_flags(), lo, addr, off);
            } else {
                self.b.ins().store(mem_flags(), x, addr, off);
            }
            return;
        }
        for l in 0..vs.lanes {
            let e = self.b.ins().extractlane(x, l);
            let e = if d == DType::Bool {
                let bit = self.b.ins().band_imm_s(e, 1);
                self.b.ins().ireduce(types::I8, bit)
            } else {
                e
            };
            self.store_elem(d, e, addr, off + i32::from(l) * step as i32);
        }
    }

    /// Emits a varying expression as a vector.
    fn vexpr(&mut self, vs: &mut VState<'_>, e: &Expr, jj: Value, copy: usize) -> Value {
        if let Some(&v) = vs.pre.get(&key(e)) {
            return v;
        }
        let lanes = vs.lanes;
        if vs.uniform(e) {
            // Not reached by `prepare` (it prepares what this reaches);
            // correct anyway, computed in place.
            let t = self.ty(e);
            let x = self.expr(e);
            return self.splat(t, x, lanes);
        }
        match e {
            Expr::Var(v) => vs.vvars[v],
            Expr::Load { buf, index } => self.vload(vs, Mem::Buf(*buf), index, jj, copy),
            Expr::LocalLoad { local, index } => self.vload(vs, Mem::Local(*local), index, jj, copy),
            Expr::Unary { op, arg } => {
                let t = self.ty(arg);
                let x = self.vexpr(vs, arg, jj, copy);
                self.unary(op, t, x, lanes)
            }
            Expr::Binary { op, lhs, rhs } => {
                let t = self.ty(lhs);
                if let Some((a, b, c, neg)) = self.fma_operands(op, t, lhs, rhs) {
                    let a = self.vexpr(vs, a, jj, copy);
                    let b = self.vexpr(vs, b, jj, copy);
                    let c = self.vexpr(vs, c, jj, copy);
                    return self.fused(a, b, c, neg);
                }
                if *op == Op::Pow
                    && let Expr::Const { value, .. } = **rhs
                {
                    let mut emit = |g: &mut Self, e: &Expr| g.vexpr(vs, e, jj, copy);
                    if let Some(x) = self.pow_const(t, lhs, value, lanes, &mut emit) {
                        return x;
                    }
                }
                let a = self.vexpr(vs, lhs, jj, copy);
                let b = self.vexpr(vs, rhs, jj, copy);
                self.binary(op, t, a, b, lanes)
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.vexpr(vs, cond, jj, copy);
                let a = self.vexpr(vs, then, jj, copy);
                let b = self.vexpr(vs, otherwise, jj, copy);
                math::bitselect(&mut self.b, c, a, b)
            }
            Expr::Cast { to, arg } => {
                if matches!(**arg, Expr::Var(v) if v == vs.j) {
                    let base = self.b.ins().ireduce(types::I32, jj);
                    let base = self
                        .b
                        .ins()
                        .iadd_imm_s(base, copy as i64 * i64::from(lanes));
                    let base = self.b.ins().splat(types::I32X4, base);
                    let ids = self.b.ins().iadd(base, vs.iota.expect("prepared"));
                    return match to {
                        ScalarType::F32 => self.b.ins().fcvt_from_sint(types::F32X4, ids),
                        _ => ids,
                    };
                }
                let from = self.ty(arg);
                let x = self.vexpr(vs, arg, jj, copy);
                self.vcast(from, *to, x, lanes)
            }
            Expr::Const { .. } => unreachable!("constants are uniform"),
        }
    }

    /// Lane-wise conversion (the pairs [`plan`] admits).
    fn vcast(&mut self, from: ScalarType, to: ScalarType, x: Value, lanes: u8) -> Value {
        use ScalarType as S;
        let vty = clif_ty(to, lanes);
        match (from, to) {
            _ if from == to => x,
            (S::F32, S::I32) => self.b.ins().fcvt_to_sint_sat(types::I32X4, x),
            (S::I32, S::F32) => self.b.ins().fcvt_from_sint(types::F32X4, x),
            (S::Bool, S::F32 | S::F64) => {
                let one = self.konst(to, 1.0, lanes);
                let ity = clif_ty(S::Bool, lanes);
                let bits = self.b.ins().bitcast(ity, le(), one);
                let m = self.b.ins().band(x, bits);
                self.b.ins().bitcast(vty, le(), m)
            }
            (S::Bool, S::I32) => {
                let one = self.konst(S::I32, 1.0, lanes);
                self.b.ins().band(x, one)
            }
            (S::F32 | S::F64, S::Bool) => {
                let zero = self.konst(from, 0.0, lanes);
                self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
            }
            (S::I32, S::Bool) => {
                let zero = self.konst(S::I32, 0.0, lanes);
                self.b.ins().icmp(IntCC::NotEqual, x, zero)
            }
            _ => unreachable!("planned casts only"),
        }
    }
}
