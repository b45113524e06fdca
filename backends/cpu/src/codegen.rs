//! Kernel IR to Cranelift IR: one function per kernel segment.
//!
//! Input: a program that passed [`birkhoff_ir::kernel::verify_program`],
//! so every variable is typed and set before use and every index is in
//! bounds for every iteration. Output: Cranelift functions with the ABI
//!
//! ```text
//! fn(ptrs: *const *mut u8, lo: i64, hi: i64, ctx: *const Runtime) -> i64
//! ```
//!
//! where `ptrs[b]` is buffer `b`'s base address, `[lo, hi)` is the range of
//! the segment's parallel loop this call runs (ignored by serial
//! segments), `ctx` is handed to runtime calls (matrix products), and the
//! result is 0, or in checked mode `1 + access` for the first access found
//! out of bounds.
//!
//! A kernel is one segment, unless its top level is several statements
//! and none of them is a `Set` (so no value flows between them): then each
//! top-level statement is its own segment, and each parallel loop among
//! them can be split across threads.
//!
//! Scalar values map to Cranelift types (`f32`, `f64`, `i32`, `bool` as
//! an `i8` holding 0 or 1, indices as `i64`); variables become frontend
//! `Variable`s, so the SSA form is built for us. Loops are bottom-tested
//! (every extent is at least 1). Index arithmetic sums outer loop terms
//! first, so Cranelift's loop-invariant code motion hoists them. Vector
//! loops go through [`crate::vector`] when they qualify.

use std::collections::HashMap;

use birkhoff_ir::kernel::{
    BufferId, Expr, Gemm, Index, Kernel, LocalId, LoopKind, Program, ScalarType, Scopes, Stmt,
    VarId, acc_form, buffers_used, locals_used,
};
use birkhoff_ir::{DType, Op};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, Endianness, FuncRef, InstBuilder, MemFlagsData, Signature,
    StackSlot, StackSlotData, StackSlotKind, Type, Value, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};

use crate::math;
use crate::runtime::{GemmCall, Libm};

/// Most accumulators one vector loop keeps in registers.
const MAX_ACCUMULATORS: usize = 10;

/// Code generation switches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GenConfig {
    /// Bounds-check every load and store.
    pub checked: bool,
    /// Emit SIMD code for vector loops.
    pub vectorize: bool,
    /// Contract `a * b + c` into fused multiply-adds.
    pub fma: bool,
}

/// Where an element lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mem {
    /// A program buffer.
    Buf(BufferId),
    /// A scratch array of the kernel.
    Local(LocalId),
}

/// A piece of a kernel compiled to one function.
#[derive(Clone, Debug)]
pub(crate) struct SegmentPlan<'a> {
    /// The statements.
    pub body: &'a [Stmt],
    /// The extent of its parallel loop, when it is exactly one.
    pub parallel: Option<usize>,
    /// Estimated scalar operations of one whole run.
    pub work: u64,
}

/// Splits a kernel into segments (see the module documentation).
pub(crate) fn segments(kernel: &Kernel) -> Vec<SegmentPlan<'_>> {
    let splittable =
        kernel.body.len() > 1 && !kernel.body.iter().any(|s| matches!(s, Stmt::Set { .. }));
    let parts: Vec<&[Stmt]> = if splittable {
        kernel.body.chunks(1).collect()
    } else {
        vec![&kernel.body[..]]
    };
    parts
        .into_iter()
        .map(|body| {
            let parallel = match body {
                [
                    Stmt::Loop {
                        kind: LoopKind::Parallel,
                        extent,
                        ..
                    },
                ] => Some(*extent),
                _ => None,
            };
            SegmentPlan {
                body,
                parallel,
                work: work(body),
            }
        })
        .collect()
}

/// Estimated scalar operations of a statement list (statements executed,
/// matrix products counted as `m·n·k` per product).
pub(crate) fn work(body: &[Stmt]) -> u64 {
    body.iter()
        .map(|s| match s {
            Stmt::Loop { extent, body, .. } => (*extent as u64).saturating_mul(work(body).max(1)),
            Stmt::Gemm(g) => (g.m as u64 * g.n as u64)
                .saturating_mul(g.k as u64)
                .saturating_mul(g.batch as u64),
            _ => 1,
        })
        .fold(0, u64::saturating_add)
}

/// The Cranelift type of a scalar type in `lanes` lanes (1: scalar).
pub(crate) fn clif_ty(t: ScalarType, lanes: u8) -> Type {
    match (t, lanes) {
        (ScalarType::F32, 1) => types::F32,
        (ScalarType::F64, 1) => types::F64,
        (ScalarType::I32, 1) => types::I32,
        (ScalarType::Bool, 1) => types::I8,
        (ScalarType::Index, 1) => types::I64,
        (ScalarType::F32, 4) => types::F32X4,
        (ScalarType::I32 | ScalarType::Bool, 4) => types::I32X4,
        (ScalarType::F64, 2) => types::F64X2,
        (ScalarType::Bool, 2) => types::I64X2,
        _ => unreachable!("no {lanes}-lane form of {}", t.name()),
    }
}

/// Little-endian flags for bitcasts (required between lane shapes).
pub(crate) fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// Flags for loads and stores the verifier proved in bounds. Vector
/// accesses are not marked aligned: buffers are only element-aligned.
pub(crate) fn mem_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The function signature every segment has.
pub(crate) fn segment_signature(module: &JITModule) -> Signature {
    let mut sig = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.push(AbiParam::new(types::I64));
    sig
}

/// Runtime functions a segment may call, declared once per module.
pub(crate) struct Imports {
    /// The matrix-product entry point.
    pub gemm: FuncId,
    /// libm-backed math entry points.
    pub libm: HashMap<Libm, FuncId>,
}

/// Generates one segment function.
pub(crate) struct Gen<'a, 'f> {
    pub b: FunctionBuilder<'f>,
    pub module: &'a mut JITModule,
    pub imports: &'a Imports,
    pub program: &'a Program,
    pub kernel: &'a Kernel,
    pub cfg: GenConfig,
    /// Matrix products of the whole program; calls pass their position.
    pub gemms: &'a mut Vec<GemmCall>,
    /// Descriptions of checked accesses; a failure returns `1 + position`.
    pub accesses: &'a mut Vec<String>,
    pub ptrs: Value,
    pub ctx: Value,
    pub bases: HashMap<BufferId, Value>,
    pub slots: Vec<Option<StackSlot>>,
    pub vars: Vec<Variable>,
    /// Enclosing loop variables, outermost first.
    pub loops: Vec<VarId>,
    /// Value variables set so far, per scope.
    pub scopes: Scopes,
    /// The block that returns a failure code (checked mode, made on demand).
    pub fail: Option<Block>,
    /// Imported functions, by id.
    pub refs: HashMap<FuncId, FuncRef>,
    /// Vector loops emitted as SIMD code, and ones left scalar (with why).
    pub vectorized: usize,
    pub scalar_loops: Vec<String>,
}

impl<'a, 'f> Gen<'a, 'f> {
    /// Emits the whole function for `seg` into the builder.
    pub fn segment(&mut self, seg: &SegmentPlan<'_>) {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        self.ptrs = params[0];
        self.ctx = params[3];
        let (lo, hi) = (params[1], params[2]);

        let base_flags = MemFlagsData::trusted().with_readonly().with_can_move();
        for b in buffers_used(seg.body) {
            let p = self
                .b
                .ins()
                .load(types::I64, base_flags, self.ptrs, 8 * b.0 as i32);
            self.bases.insert(b, p);
        }
        for l in locals_used(seg.body) {
            let d = &self.kernel.locals[l.0 as usize];
            let bytes = (d.len as u32 * d.ty.size_bytes() as u32).next_multiple_of(16);
            let slot = self.b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                bytes,
                4,
            ));
            self.slots[l.0 as usize] = Some(slot);
            self.zero_slot(slot, bytes);
        }

        self.scopes.push();
        match (seg.parallel, seg.body) {
            (Some(_), [Stmt::Loop { var, body, .. }]) => {
                // The caller guarantees lo < hi.
                self.counted_loop(*var, lo, Bound::Value(hi), body);
            }
            _ => {
                for s in seg.body {
                    self.stmt(s);
                }
            }
        }
        self.scopes.pop();
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.ins().return_(&[zero]);
        if let Some(fail) = self.fail {
            self.b.switch_to_block(fail);
            let code = self.b.block_params(fail)[0];
            self.b.ins().return_(&[code]);
        }
        self.b.seal_all_blocks();
    }

    fn zero_slot(&mut self, slot: StackSlot, bytes: u32) {
        let zero = self.b.ins().iconst(types::I64, 0);
        let flags = MemFlagsData::trusted();
        if bytes <= 256 {
            let base = self.b.ins().stack_addr(types::I64, slot, 0);
            for off in (0..bytes).step_by(8) {
                self.b.ins().store(flags, zero, base, off as i32);
            }
            return;
        }
        let body = self.b.create_block();
        let exit = self.b.create_block();
        let off = self.b.append_block_param(body, types::I64);
        let start = self.b.ins().iconst(types::I64, 0);
        self.b.ins().jump(body, &[BlockArg::Value(start)]);
        self.b.switch_to_block(body);
        let base = self.b.ins().stack_addr(types::I64, slot, 0);
        let p = self.b.ins().iadd(base, off);
        self.b.ins().store(flags, zero, p, 0);
        let next = self.b.ins().iadd_imm_s(off, 8);
        let more = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, next, i64::from(bytes));
        self.b
            .ins()
            .brif(more, body, &[BlockArg::Value(next)], exit, &[]);
        self.b.switch_to_block(exit);
    }

    /// Whether `v` is set in an enclosing scope.
    pub fn defined(&self, v: VarId) -> bool {
        self.scopes.defined(v)
    }

    fn stmts(&mut self, body: &[Stmt]) {
        self.scopes.push();
        for s in body {
            self.stmt(s);
        }
        self.scopes.pop();
    }

    /// Emits one statement.
    pub fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Loop {
                var,
                extent,
                kind,
                body,
            } => {
                if *kind == LoopKind::Vector && self.cfg.vectorize {
                    if let Some(parts) = self.split_reduction(*var, *extent, body) {
                        for part in parts {
                            self.stmt(&Stmt::Loop {
                                var: *var,
                                extent: *extent,
                                kind: *kind,
                                body: part.to_vec(),
                            });
                        }
                        return;
                    }
                    match crate::vector::plan(self, *var, *extent, body) {
                        Ok(plan) => {
                            self.vector_loop(&plan, *var, *extent, body);
                            self.vectorized += 1;
                            return;
                        }
                        Err(why) => self
                            .scalar_loops
                            .push(format!("loop over %i{}: {why}", var.0)),
                    }
                }
                let lo = self.b.ins().iconst(types::I64, 0);
                self.counted_loop(*var, lo, Bound::Const(*extent as i64), body);
            }
            Stmt::Set { var, value } => {
                let x = self.expr(value);
                self.b.def_var(self.vars[var.0 as usize], x);
                self.scopes.set(*var);
            }
            Stmt::Store { buf, index, value } => {
                let x = self.expr(value);
                let d = self.program.buffer(*buf).dtype();
                let idx = self.index(index);
                let what = format!("store into {}", self.describe(Mem::Buf(*buf), index));
                let addr = self.addr(Mem::Buf(*buf), idx, &what);
                self.store_elem(d, x, addr, 0);
            }
            Stmt::LocalStore {
                local,
                index,
                value,
            } => {
                let x = self.expr(value);
                let idx = self.index(index);
                let what = format!("store into {}", self.describe(Mem::Local(*local), index));
                let addr = self.addr(Mem::Local(*local), idx, &what);
                self.b.ins().store(mem_flags(), x, addr, 0);
            }
            Stmt::Gemm(g) => self.gemm(g),
        }
    }

    /// A vector loop that only updates more accumulators than fit the 16
    /// vector registers (with the loads they need) runs as several loops
    /// over groups of at most [`MAX_ACCUMULATORS`]: the updates are
    /// independent, and re-reading the operands from cache costs less than
    /// spilling every accumulator on every iteration.
    fn split_reduction<'s>(
        &self,
        var: VarId,
        extent: usize,
        body: &'s [Stmt],
    ) -> Option<Vec<&'s [Stmt]>> {
        let all_accs = body.iter().all(|s| {
            matches!(s, Stmt::Set { var, value }
                if self.defined(*var) && acc_form(*var, value).is_some())
        });
        if body.len() <= MAX_ACCUMULATORS
            || !all_accs
            || crate::vector::plan(self, var, extent, body).is_err()
        {
            return None;
        }
        let groups = body.len().div_ceil(MAX_ACCUMULATORS);
        let size = body.len().div_ceil(groups);
        Some(body.chunks(size).collect())
    }

    fn gemm(&mut self, g: &Gemm) {
        let id = self.gemms.len();
        self.gemms
            .push(GemmCall::new(self.program, g, &self.kernel.name));
        let f = self.import(self.imports.gemm);
        let idv = self.b.ins().iconst(types::I64, id as i64);
        let call = self.b.ins().call(f, &[self.ctx, idv, self.ptrs]);
        let status = self.b.inst_results(call)[0];
        self.bail_if_nonzero(status);
    }

    /// Returns `status` from the function unless it is 0.
    fn bail_if_nonzero(&mut self, status: Value) {
        let fail = self.fail_block();
        let cont = self.b.create_block();
        self.b
            .ins()
            .brif(status, fail, &[BlockArg::Value(status)], cont, &[]);
        self.b.switch_to_block(cont);
    }

    fn fail_block(&mut self) -> Block {
        if let Some(b) = self.fail {
            return b;
        }
        let b = self.b.create_block();
        self.b.append_block_param(b, types::I64);
        self.b.set_cold_block(b);
        self.fail = Some(b);
        b
    }

    /// A function reference for an import, declared in this function once.
    pub fn import(&mut self, id: FuncId) -> FuncRef {
        if let Some(&r) = self.refs.get(&id) {
            return r;
        }
        let r = self.module.declare_func_in_func(id, self.b.func);
        self.refs.insert(id, r);
        r
    }

    /// `for var in lo..hi { body }`, bottom-tested: requires `lo < hi`.
    pub fn counted_loop(&mut self, var: VarId, lo: Value, hi: Bound, body: &[Stmt]) {
        let head = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(head, types::I64);
        self.b.ins().jump(head, &[BlockArg::Value(lo)]);
        self.b.switch_to_block(head);
        self.b.def_var(self.vars[var.0 as usize], i);
        self.loops.push(var);
        self.stmts(body);
        self.loops.pop();
        let i = self.b.use_var(self.vars[var.0 as usize]);
        let next = self.b.ins().iadd_imm_s(i, 1);
        let more = match hi {
            Bound::Const(n) => self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, n),
            Bound::Value(h) => self.b.ins().icmp(IntCC::SignedLessThan, next, h),
        };
        self.b
            .ins()
            .brif(more, head, &[BlockArg::Value(next)], exit, &[]);
        self.b.switch_to_block(exit);
    }

    /// An index as an `i64` element number: outer loop terms first, so the
    /// invariant part of an inner loop's index is hoisted out of it.
    pub fn index(&mut self, ix: &Index) -> Value {
        let mut terms = ix.terms.clone();
        let depth = |v: VarId| self.loops.iter().position(|&l| l == v).unwrap_or(0);
        terms.sort_by_key(|&(v, _)| depth(v));
        let mut acc = self.b.ins().iconst(types::I64, ix.offset);
        for (v, c) in terms {
            let x = self.b.use_var(self.vars[v.0 as usize]);
            let t = if c == 1 {
                x
            } else {
                self.b.ins().imul_imm_s(x, c)
            };
            acc = self.b.ins().iadd(acc, t);
        }
        acc
    }

    /// Bytes per element of a buffer or local as stored.
    pub fn elem_bytes(&self, m: Mem) -> u32 {
        match m {
            Mem::Buf(b) => self.program.buffer(b).dtype().size_bytes() as u32,
            Mem::Local(l) => self.kernel.locals[l.0 as usize].ty.size_bytes() as u32,
        }
    }

    /// Elements of a buffer or local.
    pub fn mem_len(&self, m: Mem) -> usize {
        match m {
            Mem::Buf(b) => self.program.buffer(b).len(),
            Mem::Local(l) => self.kernel.locals[l.0 as usize].len,
        }
    }

    /// A readable name for an access, for checked-mode errors.
    pub fn describe(&self, m: Mem, ix: &Index) -> String {
        match m {
            Mem::Buf(b) => format!(
                "{b}[{ix}] ({}, {} elements)",
                self.program.buffer(b).name,
                self.mem_len(m)
            ),
            Mem::Local(l) => format!("{l}[{ix}] ({} elements)", self.mem_len(m)),
        }
    }

    /// The base address of a buffer or local.
    pub fn base(&mut self, m: Mem) -> Value {
        match m {
            Mem::Buf(b) => self.bases[&b],
            Mem::Local(l) => {
                let slot = self.slots[l.0 as usize].expect("locals are collected");
                self.b.ins().stack_addr(types::I64, slot, 0)
            }
        }
    }

    /// In checked mode, branches to the failure exit unless
    /// `0 <= idx + k < len` for every `k` in `lanes`.
    pub fn check(&mut self, m: Mem, idx: Value, lanes: &[i64], what: &str) {
        if !self.cfg.checked {
            return;
        }
        let len = self.mem_len(m) as i64;
        self.accesses
            .push(format!("{what} in kernel {}", self.kernel.name));
        let code = self.accesses.len() as i64;
        let fail = self.fail_block();
        for &k in lanes {
            let at = self.b.ins().iadd_imm_s(idx, k);
            let ok = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, at, len);
            let cont = self.b.create_block();
            let codev = self.b.ins().iconst(types::I64, code);
            self.b
                .ins()
                .brif(ok, cont, &[], fail, &[BlockArg::Value(codev)]);
            self.b.switch_to_block(cont);
        }
    }

    /// The address of element `idx` (checked in checked mode).
    pub fn addr(&mut self, m: Mem, idx: Value, what: &str) -> Value {
        self.check(m, idx, &[0], what);
        let base = self.base(m);
        self.offset_addr(base, idx, self.elem_bytes(m))
    }

    /// `base + idx * size`.
    pub fn offset_addr(&mut self, base: Value, idx: Value, size: u32) -> Value {
        let off = match size {
            1 => idx,
            _ => self
                .b
                .ins()
                .ishl_imm_s(idx, i64::from(size.trailing_zeros())),
        };
        self.b.ins().iadd(base, off)
    }

    /// Flags for a load from `m`. Buffers no kernel writes (inputs and
    /// constants) are `readonly` and `can_move`, which makes their loads
    /// pure to Cranelift: duplicates are merged, invariant ones hoisted out
    /// of loops, and each is scheduled next to its use (which matters for
    /// register pressure in wide reductions). Not in checked mode, where
    /// loads must stay behind their bounds checks.
    pub fn load_flags(&self, m: Mem) -> MemFlagsData {
        let frozen = match m {
            Mem::Buf(b) => !self.program.buffer(b).is_writable(),
            Mem::Local(_) => false,
        };
        if frozen && !self.cfg.checked {
            mem_flags().with_readonly().with_can_move()
        } else {
            mem_flags()
        }
    }

    /// Loads one element stored as `d`, widened to its compute type.
    pub fn load_elem(&mut self, d: DType, addr: Value, offset: i32, f: MemFlagsData) -> Value {
        match d {
            DType::F32 => self.b.ins().load(types::F32, f, addr, offset),
            DType::F64 => self.b.ins().load(types::F64, f, addr, offset),
            DType::I32 => self.b.ins().load(types::I32, f, addr, offset),
            DType::Bool => self.b.ins().load(types::I8, f, addr, offset),
            DType::Bf16 => {
                let bits = self.b.ins().uload16(types::I32, f, addr, offset);
                let wide = self.b.ins().ishl_imm_s(bits, 16);
                self.b.ins().bitcast(types::F32, le(), wide)
            }
        }
    }

    /// Stores one element of compute type into storage type `d`.
    pub fn store_elem(&mut self, d: DType, x: Value, addr: Value, offset: i32) {
        let f = mem_flags();
        if d == DType::Bf16 {
            let bits = bf16_bits(&mut self.b, x, 1);
            self.b.ins().istore16(f, bits, addr, offset);
        } else {
            self.b.ins().store(f, x, addr, offset);
        }
    }

    /// The type of an expression.
    pub fn ty(&self, e: &Expr) -> ScalarType {
        e.ty(self.program, self.kernel)
    }

    /// A constant of type `t`, in `lanes` lanes.
    pub fn konst(&mut self, t: ScalarType, value: f64, lanes: u8) -> Value {
        let s = match t {
            ScalarType::F32 => self.b.ins().f32const(value as f32),
            ScalarType::F64 => self.b.ins().f64const(value),
            ScalarType::I32 => self.b.ins().iconst(types::I32, i64::from(value as i32)),
            ScalarType::Index => self.b.ins().iconst(types::I64, value as i64),
            ScalarType::Bool => {
                let on = value != 0.0;
                if lanes > 1 {
                    let lane = if lanes == 4 { types::I32 } else { types::I64 };
                    let m = self.b.ins().iconst(lane, if on { -1 } else { 0 });
                    return self.b.ins().splat(clif_ty(t, lanes), m);
                }
                self.b.ins().iconst(types::I8, i64::from(on))
            }
        };
        if lanes > 1 {
            self.b.ins().splat(clif_ty(t, lanes), s)
        } else {
            s
        }
    }

    /// Emits a scalar expression.
    pub fn expr(&mut self, e: &Expr) -> Value {
        match e {
            Expr::Const { ty, value } => self.konst(*ty, *value, 1),
            Expr::Var(v) => self.b.use_var(self.vars[v.0 as usize]),
            Expr::Load { buf, index } => {
                let d = self.program.buffer(*buf).dtype();
                let idx = self.index(index);
                let what = format!("load of {}", self.describe(Mem::Buf(*buf), index));
                let addr = self.addr(Mem::Buf(*buf), idx, &what);
                let f = self.load_flags(Mem::Buf(*buf));
                self.load_elem(d, addr, 0, f)
            }
            Expr::LocalLoad { local, index } => {
                let t = self.kernel.locals[local.0 as usize].ty;
                let idx = self.index(index);
                let what = format!("load of {}", self.describe(Mem::Local(*local), index));
                let addr = self.addr(Mem::Local(*local), idx, &what);
                self.b.ins().load(clif_ty(t, 1), mem_flags(), addr, 0)
            }
            Expr::Unary { op, arg } => {
                let t = self.ty(arg);
                let x = self.expr(arg);
                self.unary(op, t, x, 1)
            }
            Expr::Binary { op, lhs, rhs } => {
                let t = self.ty(lhs);
                if let Some((a, b, c, negate_product)) = self.fma_operands(op, t, lhs, rhs) {
                    let (a, b, c) = (self.expr(a), self.expr(b), self.expr(c));
                    return self.fused(a, b, c, negate_product);
                }
                if *op == Op::Pow
                    && let Expr::Const { value, .. } = **rhs
                    && let Some(x) = self.pow_const(t, lhs, value, 1, &mut |g, e| g.expr(e))
                {
                    return x;
                }
                let (a, b) = (self.expr(lhs), self.expr(rhs));
                self.binary(op, t, a, b, 1)
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.expr(cond);
                let (a, b) = (self.expr(then), self.expr(otherwise));
                self.b.ins().select(c, a, b)
            }
            Expr::Cast { to, arg } => {
                let from = self.ty(arg);
                let x = self.expr(arg);
                self.cast(from, *to, x, 1)
            }
        }
    }

    /// `a * b + c` patterns to contract: `(a, b, c, negate the product)`.
    pub fn fma_operands<'e>(
        &self,
        op: &Op,
        t: ScalarType,
        lhs: &'e Expr,
        rhs: &'e Expr,
    ) -> Option<(&'e Expr, &'e Expr, &'e Expr, bool)> {
        if !self.cfg.fma || !matches!(t, ScalarType::F32 | ScalarType::F64) {
            return None;
        }
        birkhoff_ir::kernel::contraction(op, lhs, rhs)
    }

    /// `a * b + c`, or `c - a * b` when `negate_product`, with one rounding.
    pub fn fused(&mut self, a: Value, b: Value, c: Value, negate_product: bool) -> Value {
        let a = if negate_product {
            self.b.ins().fneg(a)
        } else {
            a
        };
        self.b.ins().fma(a, b, c)
    }

    /// `x ** value` for exponents with a cheaper exact or near-exact form.
    pub fn pow_const(
        &mut self,
        t: ScalarType,
        base: &Expr,
        value: f64,
        lanes: u8,
        emit: &mut dyn FnMut(&mut Self, &Expr) -> Value,
    ) -> Option<Value> {
        if !matches!(value, 0.0 | 1.0 | 2.0 | 3.0 | -1.0 | -2.0 | 0.5 | -0.5) {
            return None;
        }
        let x = emit(self, base);
        let one = self.konst(t, 1.0, lanes);
        Some(match value {
            0.0 => one,
            1.0 => x,
            2.0 => self.b.ins().fmul(x, x),
            3.0 => {
                let sq = self.b.ins().fmul(x, x);
                self.b.ins().fmul(sq, x)
            }
            -1.0 => self.b.ins().fdiv(one, x),
            -2.0 => {
                let sq = self.b.ins().fmul(x, x);
                self.b.ins().fdiv(one, sq)
            }
            _ => {
                // pow(-0, ±0.5) is +0 / +inf and pow(-inf, ±0.5) is +inf / +0,
                // where sqrt gives -0 and NaN.
                let zero = self.konst(t, 0.0, lanes);
                let s = self.b.ins().sqrt(x);
                let s = self.b.ins().fadd(s, zero);
                let inf = self.konst(t, f64::INFINITY, lanes);
                let ninf = self.konst(t, f64::NEG_INFINITY, lanes);
                let is_ninf = self.b.ins().fcmp(FloatCC::Equal, x, ninf);
                let s = self.select(is_ninf, inf, s, lanes);
                if value < 0.0 {
                    self.b.ins().fdiv(one, s)
                } else {
                    s
                }
            }
        })
    }

    /// `cond ? a : b` for a condition from `fcmp`/`icmp` or a bool value.
    pub fn select(&mut self, cond: Value, a: Value, b: Value, lanes: u8) -> Value {
        if lanes == 1 {
            return self.b.ins().select(cond, a, b);
        }
        math::bitselect(&mut self.b, cond, a, b)
    }

    /// A unary op on a value of type `t`.
    pub fn unary(&mut self, op: &Op, t: ScalarType, x: Value, lanes: u8) -> Value {
        let float = matches!(t, ScalarType::F32 | ScalarType::F64);
        match op {
            Op::Neg if float => self.b.ins().fneg(x),
            Op::Neg => self.b.ins().ineg(x),
            Op::Abs if float => self.b.ins().fabs(x),
            Op::Abs => self.b.ins().iabs(x),
            Op::Not if lanes == 1 => self.b.ins().bxor_imm_s(x, 1),
            Op::Not => self.b.ins().bnot(x),
            Op::Sqrt => self.b.ins().sqrt(x),
            Op::Rsqrt => {
                let s = self.b.ins().sqrt(x);
                let one = self.konst(t, 1.0, lanes);
                self.b.ins().fdiv(one, s)
            }
            Op::Recip => {
                let one = self.konst(t, 1.0, lanes);
                self.b.ins().fdiv(one, x)
            }
            Op::Exp | Op::Log | Op::Tanh | Op::Sigmoid if t == ScalarType::F32 => {
                let fma = self.cfg.fma;
                match op {
                    Op::Exp => math::exp(&mut self.b, x, fma),
                    Op::Log => math::log(&mut self.b, x, fma),
                    Op::Tanh => math::tanh(&mut self.b, x, fma),
                    _ => math::sigmoid(&mut self.b, x, fma),
                }
            }
            Op::Exp | Op::Log | Op::Tanh | Op::Sigmoid => {
                let f = match op {
                    Op::Exp => Libm::ExpF64,
                    Op::Log => Libm::LogF64,
                    Op::Tanh => Libm::TanhF64,
                    _ => Libm::SigmoidF64,
                };
                self.call_lanes(f, &[x], lanes)
            }
            _ => unreachable!("{} is not a unary op on {}", op.mnemonic(), t.name()),
        }
    }

    /// Calls a libm entry point once per lane.
    pub fn call_lanes(&mut self, f: Libm, args: &[Value], lanes: u8) -> Value {
        let fref = self.import(self.imports.libm[&f]);
        if lanes == 1 {
            let call = self.b.ins().call(fref, args);
            return self.b.inst_results(call)[0];
        }
        let ty = self.b.func.dfg.value_type(args[0]);
        let mut out = None;
        for l in 0..lanes {
            let lane_args: Vec<Value> = args
                .iter()
                .map(|&a| self.b.ins().extractlane(a, l))
                .collect();
            let call = self.b.ins().call(fref, &lane_args);
            let r = self.b.inst_results(call)[0];
            out = Some(match out {
                None => self.b.ins().splat(ty, r),
                Some(v) => self.b.ins().insertlane(v, r, l),
            });
        }
        out.expect("at least one lane")
    }

    /// A binary op on operands of type `t`.
    pub fn binary(&mut self, op: &Op, t: ScalarType, a: Value, b: Value, lanes: u8) -> Value {
        let float = matches!(t, ScalarType::F32 | ScalarType::F64);
        let ins = self.b.ins();
        match op {
            Op::Add if float => ins.fadd(a, b),
            Op::Sub if float => ins.fsub(a, b),
            Op::Mul if float => ins.fmul(a, b),
            Op::Div => ins.fdiv(a, b),
            Op::Max if float => ins.fmax(a, b),
            Op::Min if float => ins.fmin(a, b),
            Op::Add => ins.iadd(a, b),
            Op::Sub => ins.isub(a, b),
            Op::Mul => ins.imul(a, b),
            Op::Max => ins.smax(a, b),
            Op::Min => ins.smin(a, b),
            Op::And => ins.band(a, b),
            Op::Or => ins.bor(a, b),
            Op::Pow => {
                let f = if t == ScalarType::F32 {
                    Libm::PowF32
                } else {
                    Libm::PowF64
                };
                self.call_lanes(f, &[a, b], lanes)
            }
            _ if op.is_comparison() && float => {
                let cc = match op {
                    Op::Eq => FloatCC::Equal,
                    Op::Ne => FloatCC::NotEqual,
                    Op::Lt => FloatCC::LessThan,
                    Op::Le => FloatCC::LessThanOrEqual,
                    Op::Gt => FloatCC::GreaterThan,
                    _ => FloatCC::GreaterThanOrEqual,
                };
                ins.fcmp(cc, a, b)
            }
            _ if op.is_comparison() => {
                let cc = match op {
                    Op::Eq => IntCC::Equal,
                    Op::Ne => IntCC::NotEqual,
                    Op::Lt => IntCC::SignedLessThan,
                    Op::Le => IntCC::SignedLessThanOrEqual,
                    Op::Gt => IntCC::SignedGreaterThan,
                    _ => IntCC::SignedGreaterThanOrEqual,
                };
                ins.icmp(cc, a, b)
            }
            _ => unreachable!("{} is not a binary op on {}", op.mnemonic(), t.name()),
        }
    }

    /// Converts `x` from `from` to `to` as `DType::round` does (scalar; the
    /// vector forms are in [`crate::vector`]).
    pub fn cast(&mut self, from: ScalarType, to: ScalarType, x: Value, lanes: u8) -> Value {
        use ScalarType as S;
        debug_assert_eq!(lanes, 1);
        let ins = self.b.ins();
        match (from, to) {
            _ if from == to => x,
            (S::F32, S::F64) => ins.fpromote(types::F64, x),
            (S::F64, S::F32) => ins.fdemote(types::F32, x),
            (S::F32 | S::F64, S::I32) => ins.fcvt_to_sint_sat(types::I32, x),
            (S::I32, S::F32 | S::F64) | (S::Index, S::F32 | S::F64) => {
                ins.fcvt_from_sint(clif_ty(to, 1), x)
            }
            (S::Bool, S::F32 | S::F64) => {
                let i = ins.uextend(types::I32, x);
                self.b.ins().fcvt_from_uint(clif_ty(to, 1), i)
            }
            (S::Bool, S::I32) => ins.uextend(types::I32, x),
            (S::F32 | S::F64, S::Bool) => {
                let zero = if from == S::F32 {
                    ins.f32const(0.0)
                } else {
                    ins.f64const(0.0)
                };
                self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
            }
            (S::I32 | S::Index, S::Bool) => ins.icmp_imm_s(IntCC::NotEqual, x, 0),
            (S::Index, S::I32) => {
                // `x as i32` saturates; indices are non-negative.
                let c = ins.iconst(types::I64, i64::from(i32::MAX));
                let m = self.b.ins().smin(x, c);
                self.b.ins().ireduce(types::I32, m)
            }
            _ => unreachable!("cast from {} to {}", from.name(), to.name()),
        }
    }
}

/// The upper bound of a counted loop.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    /// A compile-time constant.
    Const(i64),
    /// A runtime value.
    Value(Value),
}

/// Rounds `f32` values (scalar or `f32x4`) to bf16, nearest-even, and
/// returns the bf16 bit patterns in the low 16 bits of `i32` lanes. NaNs
/// stay NaN (quieted), as `half::bf16::from_f32` does.
pub(crate) fn bf16_bits(b: &mut FunctionBuilder<'_>, x: Value, lanes: u8) -> Value {
    let ity = if lanes == 1 { types::I32 } else { types::I32X4 };
    let k = |b: &mut FunctionBuilder<'_>, v: i64| {
        let c = b.ins().iconst(types::I32, v);
        if lanes == 1 { c } else { b.ins().splat(ity, c) }
    };
    let u = b.ins().bitcast(ity, le(), x);
    let hi = b.ins().ushr_imm_s(u, 16);
    let one = k(b, 1);
    let odd = b.ins().band(hi, one);
    let bias = k(b, 0x7fff);
    let r = b.ins().iadd(u, bias);
    let r = b.ins().iadd(r, odd);
    let rounded = b.ins().ushr_imm_s(r, 16);
    let quiet = k(b, 0x40);
    let nan_bits = b.ins().bor(hi, quiet);
    let is_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    if lanes == 1 {
        b.ins().select(is_nan, nan_bits, rounded)
    } else {
        b.ins().bitselect(is_nan, nan_bits, rounded)
    }
}
