//! How a kernel maps onto the GPU: launches, their modes, and which
//! vector loops spread over a block's threads.
//!
//! Input: a verified kernel. Output: its launches, each with a [`Mode`],
//! a grid and a block, and — decided the same way again while emitting —
//! for every vector loop whether it is *distributed* ([`distribute`]).
//!
//! **Launches.** The top-level statements are cut at every `gemm` (each
//! its own launch, a generated tiled kernel); the runs between form one
//! launch each, or one launch per statement when a run holds a parallel
//! loop and no value or scratch array flows between its statements (the
//! CPU backend's segment rule), so each parallel loop gets a grid of its
//! own. A variable or scratch array used on both sides of a cut is
//! [`GpuError::Unsupported`] (lowering never produces one).
//!
//! A parallel loop shorter than [`GRID_MIN_ITERATIONS`] is split into a
//! launch per loop of its body when its body is several loops with
//! nothing flowing between them, and a serial loop that is a launch's
//! whole parallel body, with independent iterations, runs as the grid's
//! second dimension ([`Nest`]).
//!
//! **Modes** of a non-`gemm` launch:
//!
//! * [`Mode::Thread`] — one parallel loop with nothing to distribute:
//!   one iteration per thread, everything in it serial.
//! * [`Mode::Block`] — one parallel loop whose body holds a
//!   distributable vector loop: one iteration per block; the block runs
//!   the body in *uniform context* (the scalar statements compute the
//!   same values for the whole block, thread 0 alone stores; costly runs
//!   of them execute on warp 0 alone, see `entry`) and distributes its
//!   big vector loops.
//! * [`Mode::Lanes`] — one parallel loop with nothing to distribute over
//!   a block, but whose arithmetic sits mostly in small vector loops
//!   that can be spread over a few lanes ([`lane_plan`]): one iteration
//!   per group of lanes (see *Lane groups*).
//! * [`Mode::Single`] — anything else: one block runs the whole body in
//!   uniform context, parallel loops included (as serial loops).
//!
//! **Distributed loops.** A vector loop in uniform context with at least
//! [`DISTRIBUTE_MIN`] iterations is spread over the block's threads
//! when its iterations are independent in a way every thread can rely
//! on: its body sets only fresh variables and accumulators
//! (`acc = acc + e`, `max`, `min` of a variable set outside the loop,
//! read nowhere else in it), every store's index moves with the loop
//! index, and a buffer or scratch array it writes is read only at an
//! index it is written at (so by the same iteration). Iterations go to
//! threads in chunks of `W` consecutive ones (`W` = 16 bytes over the
//! widest element the loop moves, when every such access is at
//! coefficient 1 and `W`-aligned, so each chunk is one 16-byte access per
//! stream; else `W` = 1), chunk `c` on thread `c mod blockDim`.

//!
//! **Lane groups.** A per-token chain of small vector loops — a Sinkhorn
//! projection's row and column normalizations, `n` wide, repeated for
//! every round — is too short for a block and too long for one thread.
//! [`lane_plan`] gives each iteration a group of `L` lanes (a power of
//! two from [`LANES_MIN`] to 32; groups never straddle a warp). A spread
//! vector loop runs iteration `j` on lane `j mod L`, unrolled (when `L`
//! does not divide its extent, the lanes past the end skip the last
//! round); its accumulators start from their identity on
//! every lane and are combined by a butterfly over the lanes
//! (`shfl.sync.bfly`, so every lane ends with the same bits), then folded
//! into the accumulator. A serial loop whose body is only fresh variables
//! and vector loops may be *split*: with `e_s · e_v = L`, lane `l` runs
//! its iteration `(l / σ_s) mod e_s` and its vector loops' iteration
//! `(l / σ_v) mod e_v`, the strides read off the indices of the arrays
//! they access (row `i`, element `j` of an `n × n` matrix: `σ = n, 1`;
//! a column: `1, n`), a sum combining only the lanes that differ in the
//! vector loop's bits; with `e_s = L` and indices that move by 1 with the
//! serial loop, lane `l` runs iteration `l` alone and its vector loops in
//! order. A serial loop of `L` iterations over lines whose elements each
//! live on another lane (the rows of a matrix held a column a lane) may
//! run *transposed* instead: lane `l` runs line `l`'s scalar statements
//! once, every lane runs its own element of every line's vector loops,
//! each line's sums reach the line's lane by a reduce-scatter (`L - 1`
//! exchanges for all lines, not a butterfly each), and the line values
//! the vector loops read come from their lanes by `shfl.sync.idx` (see
//! [`transposable`]). A scratch array stays *spread* — element `e` on lane `e mod L`
//! alone — when every access to it is at an element of the lane running
//! it; others are replicated, every lane holding all of it, and a loop
//! that writes a replicated array is neither spread nor split. Everything
//! else runs on every lane, which computes the same values; its buffer
//! stores are made by lane 0. A buffer the iteration both writes and
//! reads may be written by one lane and read by another, so a warp sync
//! (`bar.warp.sync`, which orders the lanes' memory accesses) separates a
//! store from a later load of such a buffer, and a load from a later
//! store. Among the widths some loop can fill, each with and without its
//! transposable loops transposed, the plan takes the one the
//! audit's model times shortest (issue or chain, whichever is longer),
//! when that beats a thread per iteration, its spread loops hold at
//! least [`LANES_MIN_SHARE`] of the arithmetic, the audit would not
//! report its repeated scalar work, and no replicated array is indexed by
//! a lane's own position (which would put it in local memory).

use std::collections::{HashMap, HashSet};

use birkhoff_ir::kernel::{
    AccOp, BufferId, Expr, Gemm, Index, Kernel, LocalId, LoopKind, Program, ScalarType, Scopes,
    Stmt, VarId, acc_form, locals_used, walk_exprs, walk_stmts,
};

use crate::{GpuError, Result};

/// Fewest iterations a vector loop needs to be spread over a block.
pub const DISTRIBUTE_MIN: usize = 64;

/// Most iterations of a loop unrolled so that scratch-array indices
/// become constants (and the arrays registers).
pub const UNROLL_MAX_EXTENT: usize = 32;

/// Most statements a full unroll may produce.
pub const UNROLL_MAX_STMTS: usize = 4096;

/// Fewest arithmetic operations ([`scalar_ops`]) a run of scalar
/// statements in uniform context needs before it executes on warp 0
/// alone when the rest of the block needs some of its results: below
/// this, every thread computing the run costs less than the barrier and
/// the shared-memory round trip that hand the results over.
pub const WARP_RUN_MIN_OPS: usize = 32;

/// Most values (variables and scratch-array elements, one 8-byte slot
/// each) a warp-0 run hands to the rest of its block.
pub const WARP_RUN_MAX_SLOTS: usize = 128;

/// Most 32-bit registers' worth of values (an `f64` or index element
/// counts two) a per-thread scratch array of uniform code — block per
/// iteration, single block — may hold and stay in registers; a larger one
/// lives in shared memory, one copy per block (see `entry`, *Shared
/// copies*). A thread has at most 255 registers and the code around the
/// array needs its own (the fused mHC kernels use 40 to 130), so an
/// array of 128 values already takes half of what is there. Every array
/// the zoo's uniform code is meant to keep in registers stays below: the
/// mHC mixes (`n(n+2)`: 24 values for four streams, 80 for eight), a
/// Sinkhorn matrix (`n²`); the Sinkhorn backward's state history
/// (`(K+1)·n²`: 640 values for four streams and 20 rounds) is far above.
pub const REGISTER_SCRATCH_MAX_WORDS: usize = 128;

/// 32-bit registers one element of a scratch array of type `t` takes.
pub(crate) fn scratch_words(t: ScalarType) -> usize {
    t.size_bytes().div_ceil(4)
}

/// How a launch runs a kernel body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One iteration of the parallel loop per thread.
    Thread,
    /// One iteration of the parallel loop per block, big vector loops
    /// spread over its threads.
    Block,
    /// One iteration of the parallel loop per group of this many lanes
    /// of a warp, small vector loops spread over them (see *Lane
    /// groups*).
    Lanes(u32),
    /// The whole body in one block.
    Single,
    /// A generated matrix-product kernel.
    Gemm,
}

impl Mode {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Thread => "thread-per-iteration",
            Mode::Block => "block-per-iteration",
            Mode::Lanes(_) => "lanes-per-iteration",
            Mode::Single => "single-block",
            Mode::Gemm => "gemm",
        }
    }
}

/// What one launch runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work<'a> {
    /// Statements of the kernel body.
    Body(&'a [Stmt]),
    /// A matrix product.
    Gemm(&'a Gemm),
}

/// One launch of a kernel, before code generation.
#[derive(Clone, Debug)]
pub(crate) struct Piece<'a> {
    /// What it runs.
    pub work: Work<'a>,
    /// How.
    pub mode: Mode,
    /// The loops its grid runs and one iteration's statements
    /// ([`Mode::Thread`] and [`Mode::Block`]; a part of `work` when a
    /// parallel loop was split, see [`nests`]).
    pub nest: Option<Nest<'a>>,
}

/// Fewest iterations a launch's parallel loop needs before it alone is
/// spread over the grid: two blocks for each of an H100's 132 SMs. Below
/// it, a serial loop that is the parallel loop's whole body and whose
/// iterations are independent ([`independent_iterations`]) becomes a
/// second grid dimension (the causal mask of 16 heads: 16 blocks, or
/// 16 × 2048 with its rows spread).
pub const GRID_MIN_ITERATIONS: usize = 264;

/// Fewest iterations a thread-per-iteration launch's parallel loop needs
/// before it alone is spread over the grid: the threads an H100 holds at
/// once (132 SMs × 2048). Below it, an independent serial loop inside
/// becomes a grid dimension as for [`GRID_MIN_ITERATIONS`] (column sums
/// over 1024 outer rows: 1024 threads, or 1024 × 4096 with the columns
/// spread, and consecutive threads then read consecutive elements).
pub const GRID_MIN_THREADS: usize = 132 * 2048;

/// The loops a thread- or block-per-iteration launch spreads over its
/// grid, and the statements of one iteration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Nest<'a> {
    /// The parallel loop: the grid's `y` dimension when `inner` is set,
    /// else its `x`.
    pub outer: (VarId, usize),
    /// A serial loop that is the parallel loop's whole body, its
    /// iterations independent: the grid's `x` dimension.
    pub inner: Option<(VarId, usize)>,
    /// One iteration's statements.
    pub body: &'a [Stmt],
}

impl Nest<'_> {
    /// Iterations the grid runs in all.
    pub fn iterations(&self) -> usize {
        self.outer.1 * self.inner.map_or(1, |(_, n)| n)
    }
}

/// The launches of a run `body` that is one parallel loop, each with its
/// nest; empty when `body` is anything else.
///
/// A parallel loop of fewer than [`GRID_MIN_ITERATIONS`] iterations whose
/// body is several loops, with no variable set between them and no
/// scratch array shared by two, becomes one launch per loop (each over
/// the same parallel range, in order), so that each loop may become a
/// grid dimension of its own. That is legal because the parallel loop's
/// iterations are independent: what statement 2 of iteration `i` reads
/// of statement 1's results, iteration `i` wrote, and that launch ran
/// before.
fn nests<'a>(p: &Program, k: &Kernel, body: &'a [Stmt]) -> Vec<Nest<'a>> {
    let [
        Stmt::Loop {
            var,
            extent,
            kind: LoopKind::Parallel,
            body: inner,
        },
    ] = body
    else {
        return Vec::new();
    };
    let outer = (*var, *extent);
    let all_loops = inner.iter().all(|s| matches!(s, Stmt::Loop { .. }));
    let mut seen: HashSet<LocalId> = HashSet::new();
    let disjoint_locals = inner.iter().all(|s| {
        let used = locals_used(std::slice::from_ref(s));
        let ok = !used.iter().any(|l| seen.contains(l));
        seen.extend(used);
        ok
    });
    let parts: Vec<&'a [Stmt]> =
        if *extent < GRID_MIN_ITERATIONS && inner.len() > 1 && all_loops && disjoint_locals {
            inner.chunks(1).collect()
        } else {
            vec![&inner[..]]
        };
    parts
        .into_iter()
        .map(|part| {
            let mut n = Nest {
                outer,
                inner: None,
                body: part,
            };
            let short = match mode(p, k, &n) {
                Mode::Thread => *extent < GRID_MIN_THREADS,
                Mode::Lanes(l) => extent.saturating_mul(l as usize) < GRID_MIN_THREADS,
                _ => *extent < GRID_MIN_ITERATIONS,
            };
            if short
                && let [
                    Stmt::Loop {
                        var: j,
                        extent: m,
                        kind: LoopKind::Serial,
                        body: iteration,
                    },
                ] = part
                && *m > 1
                && independent_iterations(k, *j, iteration)
            {
                n.inner = Some((*j, *m));
                n.body = iteration;
            }
            n
        })
        .collect()
}

/// Whether the iterations of a serial loop over `j` with body `body` may
/// run in any order, on different blocks: no gemm and no scratch array;
/// no variable read before the same iteration sets it (nothing carried
/// from one iteration to the next); every store's `j` coefficient larger
/// than the span the loops inside it move its index over (so iterations
/// write disjoint elements); and a buffer it writes read only at an index
/// some store writes (so only by the iteration that writes it).
pub(crate) fn independent_iterations(k: &Kernel, j: VarId, body: &[Stmt]) -> bool {
    fn walk(
        k: &Kernel,
        body: &[Stmt],
        extents: &mut HashMap<VarId, usize>,
        set: &mut HashSet<VarId>,
        stores: &mut HashMap<BufferId, HashSet<Index>>,
        spans: &mut Vec<(i64, i64)>,
        j: VarId,
    ) -> bool {
        for s in body {
            let mut read_ok = true;
            if let Some(e) = s.value() {
                e.walk(&mut |x| {
                    if let Expr::Var(v) = x
                        && k.vars[v.0 as usize].ty != ScalarType::Index
                        && !set.contains(v)
                    {
                        read_ok = false;
                    }
                    if matches!(x, Expr::LocalLoad { .. }) {
                        read_ok = false;
                    }
                });
            }
            if !read_ok {
                return false;
            }
            match s {
                Stmt::Set { var, .. } => {
                    set.insert(*var);
                }
                Stmt::Store { buf, index, .. } => {
                    let span = index
                        .terms
                        .iter()
                        .filter_map(|(v, c)| {
                            let n = *extents.get(v)? as i64;
                            Some(c.abs() * (n - 1))
                        })
                        .sum();
                    spans.push((index.coeff(j).abs(), span));
                    stores.entry(*buf).or_default().insert(index.normalized());
                }
                Stmt::Loop {
                    var, extent, body, ..
                } => {
                    extents.insert(*var, *extent);
                    if !walk(k, body, extents, set, stores, spans, j) {
                        return false;
                    }
                }
                Stmt::LocalStore { .. } | Stmt::Gemm(_) => return false,
            }
        }
        true
    }
    let mut stores: HashMap<BufferId, HashSet<Index>> = HashMap::new();
    let mut spans = Vec::new();
    let fresh = walk(
        k,
        body,
        &mut HashMap::new(),
        &mut HashSet::new(),
        &mut stores,
        &mut spans,
        j,
    );
    if !fresh || !spans.iter().all(|&(c, span)| c > span) {
        return false;
    }
    let mut reads_own = true;
    walk_exprs(body, &mut |e| {
        if let Expr::Load { buf, index } = e
            && let Some(at) = stores.get(buf)
            && !at.contains(&index.normalized())
        {
            reads_own = false;
        }
    });
    reads_own
}

/// An accumulator of a distributed loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Acc {
    pub var: VarId,
    pub op: AccOp,
    pub ty: ScalarType,
}

/// How a distributed loop runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dist {
    /// Consecutive iterations per chunk (1, or 16 bytes' worth).
    pub width: usize,
    /// Its accumulators, in order of first update.
    pub accs: Vec<Acc>,
}

/// Where an element lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Mem {
    Buf(BufferId),
    Local(LocalId),
    /// The shared-memory slots through which a warp-0 run hands its
    /// results to the block (keyed by the run's first statement).
    Slots(usize),
}

/// Bytes of a buffer element as stored.
fn elem_bytes(p: &Program, b: BufferId) -> usize {
    p.buffer(b).dtype().size_bytes()
}

/// Every memory access of a flat statement list (a vector loop body), in
/// order: `(statement position, mem, index, is_store)`.
fn accesses(body: &[Stmt]) -> Vec<(usize, Mem, Index, bool)> {
    let mut out = Vec::new();
    for (pos, s) in body.iter().enumerate() {
        if let Some(v) = s.value() {
            v.walk(&mut |e| match e {
                Expr::Load { buf, index } => out.push((pos, Mem::Buf(*buf), index.clone(), false)),
                Expr::LocalLoad { local, index } => {
                    out.push((pos, Mem::Local(*local), index.clone(), false));
                }
                _ => {}
            });
        }
        match s {
            Stmt::Store { buf, index, .. } => out.push((pos, Mem::Buf(*buf), index.clone(), true)),
            Stmt::LocalStore { local, index, .. } => {
                out.push((pos, Mem::Local(*local), index.clone(), true));
            }
            _ => {}
        }
    }
    out
}

/// Whether (and how) the vector loop `for j in 0..extent { body }` in
/// uniform context is spread over a block; `Err` says why not.
/// `defined(v)` tells whether `v` is set before the loop (in scope).
pub(crate) fn distribute(
    p: &Program,
    k: &Kernel,
    j: VarId,
    extent: usize,
    body: &[Stmt],
    defined: &dyn Fn(VarId) -> bool,
) -> std::result::Result<Dist, String> {
    if extent < DISTRIBUTE_MIN {
        return Err(format!("{extent} iterations (fewer than {DISTRIBUTE_MIN})"));
    }
    let accs = spreadable(k, j, body, defined, false)?;
    Ok(Dist {
        width: width(p, j, extent, &accesses(body)),
        accs,
    })
}

/// Whether the iterations of the vector loop over `j` with body `body`
/// may run on different threads (the rules of *Distributed loops*), and
/// its accumulators, in order of first update; `Err` says why not.
/// With `by_lane`, a scratch array may be read at an index other than
/// the one written: in a lane group such an array is spread, so every
/// element an iteration touches lives on its own lane, which runs its
/// iterations in order.
fn spreadable(
    k: &Kernel,
    j: VarId,
    body: &[Stmt],
    defined: &dyn Fn(VarId) -> bool,
    by_lane: bool,
) -> std::result::Result<Vec<Acc>, String> {
    let mut accs: Vec<Acc> = Vec::new();
    // Value expressions other than the accumulators' own operand.
    let mut others: Vec<&Expr> = Vec::new();
    for s in body {
        match s {
            Stmt::Set { var, value } if defined(*var) => {
                let ty = k.vars[var.0 as usize].ty;
                let Some((op, e)) = acc_form(*var, value) else {
                    return Err(format!("it sets %v{} of an enclosing scope", var.0));
                };
                if !matches!(ty, ScalarType::F32 | ScalarType::F64 | ScalarType::I32) {
                    return Err(format!("accumulator %v{} of type {}", var.0, ty.name()));
                }
                match accs.iter().find(|a| a.var == *var) {
                    Some(a) if a.op != op => {
                        return Err(format!("accumulator %v{} combined two ways", var.0));
                    }
                    Some(_) => {}
                    None => accs.push(Acc { var: *var, op, ty }),
                }
                others.push(e);
            }
            Stmt::Set { value, .. } => others.push(value),
            Stmt::Store { index, value, .. } | Stmt::LocalStore { index, value, .. } => {
                if index.coeff(j) == 0 {
                    return Err("every iteration stores to the same element".into());
                }
                others.push(value);
            }
            Stmt::Loop { .. } | Stmt::Gemm(_) => return Err("it holds a loop or a gemm".into()),
        }
    }
    for a in &accs {
        if others.iter().any(|e| e.reads(a.var) > 0) {
            return Err(format!("it reads accumulator %v{}", a.var.0));
        }
    }
    let acc = accesses(body);
    let mut stored: HashMap<Mem, HashSet<Index>> = HashMap::new();
    for (_, m, ix, st) in &acc {
        if *st {
            stored.entry(*m).or_default().insert(ix.normalized());
        }
    }
    for (_, m, ix, st) in &acc {
        let own_lane = by_lane && matches!(m, Mem::Local(_));
        if !*st
            && !own_lane
            && let Some(at) = stored.get(m)
            && !at.contains(&ix.normalized())
        {
            return Err("it reads what it writes at another index".into());
        }
    }
    Ok(accs)
}

/// Fewest lanes a lanes-per-iteration launch gives each iteration.
pub const LANES_MIN: usize = 4;

/// Share of a body's arithmetic ([`scalar_ops`]) its spread vector loops
/// must hold for the body to run lanes-per-iteration: everything else
/// runs on every lane of the group.
pub const LANES_MIN_SHARE: f64 = 0.75;

/// How a [`Mode::Lanes`] launch spreads one iteration over its lanes
/// (see *Lane groups* in the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LanePlan {
    /// Lanes per iteration: a power of two from [`LANES_MIN`] to 32.
    pub lanes: usize,
    /// The spread vector loops (statement addresses).
    pub loops: HashMap<usize, Spread>,
    /// The split serial loops (statement addresses): lane `l` runs
    /// iteration `(l / stride) mod extent` alone; the value is `stride`.
    pub split: HashMap<usize, usize>,
    /// Scratch arrays whose element `e` lives on lane `e mod lanes` only.
    pub spread: HashSet<LocalId>,
    /// Serial loops of `lanes` iterations run *transposed* (statement
    /// addresses): lane `l` runs iteration `l`'s scalar statements, every
    /// lane its own element of every iteration's vector loops (see
    /// [`transposable`]).
    pub transposed: HashSet<usize>,
}

/// How one vector loop is spread over a lane group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spread {
    /// Its accumulators, in order of first update.
    pub accs: Vec<Acc>,
    /// `None`: lane `l` runs iterations `l, l + L, …`. `Some(stride)`: the
    /// loop sits in a split serial loop and lane `l` runs iteration
    /// `(l / stride) mod extent` alone; its accumulators combine over the
    /// lanes that differ in those bits.
    pub stride: Option<usize>,
}

/// A memory access: where, at which index, whether a store, the innermost
/// vector loop around it and the serial loop directly around that (each
/// by statement address and index).
type Located = (
    Mem,
    Index,
    bool,
    Option<(usize, VarId)>,
    Option<(usize, VarId)>,
);

/// Every memory access of `body` with the vector loop around it and the
/// serial loop around that, if any.
fn accesses_in(
    body: &[Stmt],
    serial: Option<(usize, VarId)>,
    around: Option<(usize, VarId)>,
    out: &mut Vec<Located>,
) {
    for s in body {
        let addr = std::ptr::from_ref(s) as usize;
        match s {
            Stmt::Loop {
                var, kind, body, ..
            } => {
                if *kind == LoopKind::Vector {
                    accesses_in(body, serial, Some((addr, *var)), out);
                } else {
                    accesses_in(body, Some((addr, *var)), None, out);
                }
            }
            _ => {
                for (_, m, ix, st) in accesses(std::slice::from_ref(s)) {
                    out.push((m, ix, st, around, serial.filter(|_| around.is_some())));
                }
            }
        }
    }
}

/// A vector loop a lane plan may spread.
struct Candidate {
    addr: usize,
    extent: usize,
    accs: Option<Vec<Acc>>,
    ops: usize,
    /// The serial loop directly around it, when that loop's body is only
    /// variables and vector loops, and none of those variables is set
    /// before it: `(address, extent)`.
    split: Option<(usize, usize)>,
}

impl Candidate {
    /// Lanes it can keep busy: its extent's largest power-of-two factor
    /// (at most 32), or both extents' product in a splittable loop.
    fn span(&self) -> usize {
        match self.split {
            Some((_, e))
                if e.is_power_of_two()
                    && self.extent.is_power_of_two()
                    && e * self.extent <= 32 =>
            {
                e * self.extent
            }
            _ => 1usize << self.extent.trailing_zeros().min(5),
        }
    }
}

/// The lane plan of a thread-per-iteration candidate's iteration `body`,
/// or `None` when it is not worth one (see *Lane groups*).
pub(crate) fn lane_plan(
    p: &Program,
    k: &Kernel,
    body: &[Stmt],
    iterations: usize,
) -> Option<LanePlan> {
    fn walk(
        k: &Kernel,
        body: &[Stmt],
        mult: usize,
        split: Option<(usize, usize)>,
        sc: &mut Scopes,
        out: &mut Vec<Candidate>,
    ) {
        sc.push();
        for s in body {
            match s {
                Stmt::Loop {
                    var,
                    extent,
                    kind: LoopKind::Vector,
                    body: b,
                } => out.push(Candidate {
                    addr: std::ptr::from_ref(s) as usize,
                    extent: *extent,
                    accs: spreadable(k, *var, b, &|v| sc.defined(v), true).ok(),
                    ops: mult.saturating_mul(scalar_ops(std::slice::from_ref(s))),
                    split,
                }),
                Stmt::Loop {
                    extent, body: b, ..
                } => {
                    let fresh = b.iter().all(|x| match x {
                        Stmt::Set { var, .. } => !sc.defined(*var),
                        Stmt::Loop {
                            kind: LoopKind::Vector,
                            ..
                        } => true,
                        _ => false,
                    });
                    let split = fresh.then_some((std::ptr::from_ref(s) as usize, *extent));
                    walk(k, b, mult.saturating_mul(*extent), split, sc, out);
                }
                Stmt::Set { var, .. } => sc.set(*var),
                _ => {}
            }
        }
        sc.pop();
    }
    let mut cands = Vec::new();
    walk(k, body, 1, None, &mut Scopes::default(), &mut cands);
    // Every width some loop can fill: its own extent's, both extents'
    // with its split loop's, or the split loop's alone.
    let mut widths: Vec<usize> = cands
        .iter()
        .filter(|c| c.accs.is_some())
        .flat_map(|c| {
            let alone = c.split.map_or(1, |(_, e)| e);
            [
                c.span(),
                1usize << c.extent.trailing_zeros().min(5),
                if alone.is_power_of_two() {
                    alone.min(32)
                } else {
                    1
                },
            ]
        })
        .filter(|&w| w >= LANES_MIN)
        .collect();
    widths.sort_unstable();
    widths.dedup();
    let all = scalar_ops(body);
    // The width the audit's model gives the shortest time: the larger of
    // the instructions all lanes issue and one lane's chain. More lanes
    // shorten the chain and add butterflies and repeated scalar work; a
    // width whose repeated work the audit would report is not taken.
    let d = super::audit::DeviceModel::h100();
    // A chain runs once per wave of resident threads, as many as the
    // shared-memory slices of big scratch arrays leave room for.
    let waves = |lanes: usize, plan: Option<&LanePlan>| {
        let threads = iterations.saturating_mul(lanes) as f64;
        let slice = slice_bytes(k, body, plan) as f64;
        let per_sm = if slice > 0.0 {
            (f64::from(d.shared_per_sm) / slice).min(f64::from(d.threads_per_sm))
        } else {
            f64::from(d.threads_per_sm)
        };
        (threads / (f64::from(d.sms) * per_sm.max(1.0)))
            .ceil()
            .max(1.0)
    };
    let time = |lanes: usize, waves: f64, (per_lane, scalar): (f64, f64)| {
        let warps = iterations.saturating_mul(lanes).div_ceil(32) as f64;
        let issue = warps * per_lane / (f64::from(d.sms) * d.issue_per_clock);
        let t = issue.max(waves * per_lane * d.chain_cycles);
        let share = scalar * (lanes as f64 - 1.0) / (lanes as f64 * per_lane.max(1.0));
        let repeats = share > super::audit::REPLICATED_MAX_SHARE
            && issue * share > super::audit::REPLICATED_MAX_SHARE * t;
        (t, repeats)
    };
    let (thread, _) = time(
        1,
        waves(1, None),
        super::audit::lane_instructions(p, k, body, None),
    );
    let mut best: Option<(f64, LanePlan)> = None;
    let mut acc = Vec::new();
    accesses_in(body, None, None, &mut acc);
    for lanes in widths {
        let Some((plan, spread_ops)) = plan_for(body, &cands, lanes) else {
            continue;
        };
        if (spread_ops as f64) < LANES_MIN_SHARE * all as f64 {
            continue;
        }
        // Each width with and without its transposable loops transposed.
        let transposed = LanePlan {
            transposed: transposable(body, &plan, &acc),
            ..plan.clone()
        };
        for plan in [plan, transposed] {
            let cost = super::audit::lane_instructions(p, k, body, Some(&plan));
            let (t, repeats) = time(lanes, waves(lanes, Some(&plan)), cost);
            if !repeats && t < thread && best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, plan));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// The serial loops `plan` may run transposed: loops of `plan.lanes`
/// iterations (lines) whose body is fresh variables, computed from
/// variables and constants, and vector loops of `plan.lanes` iterations
/// spread one a lane; their accesses touch no buffer, and every scratch
/// element one line writes is one no other line touches. Then lane `l`
/// runs line `l`'s variables, and each vector loop runs for every line,
/// a lane its own element (the element of vector index `j` lives on lane
/// `j`); a line's sums reach its lane by a reduce-scatter, and the line
/// values a vector loop reads come from their lanes by shuffles. A row
/// normalization of an `n × n` matrix on `n` lanes (a lane a column)
/// then sums with `n - 1` exchanges for all rows together, and each row's
/// scalar work runs once, not on every lane.
fn transposable(body: &[Stmt], plan: &LanePlan, acc: &[Located]) -> HashSet<usize> {
    let lanes = plan.lanes;
    let mut out = HashSet::new();
    walk_stmts(body, &mut |s| {
        let Stmt::Loop {
            var,
            extent,
            kind: LoopKind::Serial,
            body: lines,
        } = s
        else {
            return;
        };
        let addr = std::ptr::from_ref(s) as usize;
        if *extent != lanes || plan.split.contains_key(&addr) {
            return;
        }
        // Variables set at the top of the body, before any read (so no
        // line reads another's).
        let mut set: HashSet<VarId> = HashSet::new();
        let mut fresh = true;
        let own = line_vars(lines);
        let mut vectors = 0;
        for x in lines {
            let mut reads_ok = |e: &Expr| {
                e.walk(&mut |y| {
                    if let Expr::Var(v) = y
                        && own.contains(v)
                        && !set.contains(v)
                    {
                        fresh = false;
                    }
                });
            };
            match x {
                Stmt::Set { var: v, value } => {
                    let mut pure = value.reads(*var) == 0;
                    value.walk(&mut |y| {
                        pure &= !matches!(y, Expr::Load { .. } | Expr::LocalLoad { .. });
                    });
                    reads_ok(value);
                    if !pure {
                        return;
                    }
                    set.insert(*v);
                }
                Stmt::Loop {
                    kind: LoopKind::Vector,
                    extent,
                    body: b,
                    ..
                } if *extent == lanes
                    && plan
                        .loops
                        .get(&(std::ptr::from_ref(x) as usize))
                        .is_some_and(|sp| sp.stride.is_none()) =>
                {
                    vectors += 1;
                    walk_exprs(b, &mut |e| reads_ok(e));
                }
                _ => return,
            }
        }
        let mine: Vec<&Located> = acc
            .iter()
            .filter(|a| a.4.is_some_and(|(s_addr, _)| s_addr == addr))
            .collect();
        let apart = mine.iter().all(|w| match w.0 {
            Mem::Buf(_) | Mem::Slots(_) => false,
            Mem::Local(x) if w.2 => mine
                .iter()
                .filter(|o| o.0 == Mem::Local(x))
                .all(|o| lines_apart(&w.1, &o.1, *var, w.3, o.3, lanes)),
            Mem::Local(_) => true,
        });
        if fresh && vectors > 0 && apart && !read_after(body, addr) {
            out.insert(addr);
        }
    });
    out
}

/// The variables a transposable loop's `body` sets at its top level: its
/// line values, each lane holding its own line's.
pub(crate) fn line_vars(body: &[Stmt]) -> HashSet<VarId> {
    body.iter()
        .filter_map(|s| match s {
            Stmt::Set { var, .. } => Some(*var),
            _ => None,
        })
        .collect()
}

/// Whether accesses `a` and `b` (one a write) of a transposable loop over
/// `i` reach the same element only on the same line: both move by one
/// with their vector loop's index (`0..lanes`), by the same non-zero step
/// with `i`, and alike with every other variable, and no two lines'
/// elements meet.
fn lines_apart(
    a: &Index,
    b: &Index,
    i: VarId,
    va: Option<(usize, VarId)>,
    vb: Option<(usize, VarId)>,
    lanes: usize,
) -> bool {
    let (Some((_, ja)), Some((_, jb))) = (va, vb) else {
        return false;
    };
    let step = a.coeff(i);
    let others_alike = a
        .terms
        .iter()
        .chain(&b.terms)
        .all(|&(v, _)| v == i || v == ja || v == jb || a.coeff(v) == b.coeff(v));
    if step == 0 || b.coeff(i) != step || a.coeff(ja) != 1 || b.coeff(jb) != 1 || !others_alike {
        return false;
    }
    let (l, d) = (lanes as i64, b.offset - a.offset);
    (1 - l..l)
        .filter(|&r| r != 0)
        .all(|r| (step * r - d).abs() >= l)
}

/// The plan for `lanes` lanes per iteration, and the arithmetic its
/// spread loops hold; `None` when a split loop's variable is read after
/// it.
fn plan_for(body: &[Stmt], cands: &[Candidate], lanes: usize) -> Option<(LanePlan, usize)> {
    let mut loops: HashMap<usize, Spread> = HashMap::new();
    let mut ops = HashMap::new();
    let mut split: HashMap<usize, usize> = HashMap::new();
    let mut acc = Vec::new();
    accesses_in(body, None, None, &mut acc);
    // Split candidates lose a loop they cannot spread with them: none of
    // theirs is spread across both.
    let mut unsplit: HashSet<usize> = HashSet::new();
    for c in cands {
        if let Some((s, e)) = c.split
            && (c.accs.is_none() || e * c.extent != lanes)
        {
            unsplit.insert(s);
        }
    }
    // Such a loop of exactly `lanes` iterations whose scratch accesses
    // move by 1 with it (a column of a row-major matrix) runs one
    // iteration a lane instead, its vector loops in order on that lane.
    let mut alone: HashSet<usize> = HashSet::new();
    for c in cands {
        if let Some((s, e)) = c.split
            && unsplit.contains(&s)
            && e == lanes
            && acc.iter().any(|(m, ix, _, _, serial)| {
                matches!(m, Mem::Local(_))
                    && serial.is_some_and(|(a, v)| a == s && ix.coeff(v) == 1)
            })
        {
            alone.insert(s);
        }
    }
    for &s in &alone {
        split.insert(s, 1);
    }
    for c in cands {
        let Some(accs) = c.accs.clone() else { continue };
        let stride = match c.split {
            Some((s, _)) if alone.contains(&s) => continue,
            Some((s, _)) if !unsplit.contains(&s) => {
                split.insert(s, 0);
                Some(0)
            }
            // Code generation unrolls a spread loop's rounds on each lane;
            // one with more rounds than that allows runs on every lane.
            _ if c.extent.div_ceil(lanes) > UNROLL_MAX_EXTENT => continue,
            _ => None,
        };
        loops.insert(c.addr, Spread { accs, stride });
        ops.insert(c.addr, c.ops);
    }
    for c in cands {
        if let Some((s, _)) = c.split
            && alone.contains(&s)
        {
            ops.insert(c.addr, c.ops);
        }
    }
    // A split loop's stores to a buffer must reach a different element
    // from every lane: the split index moves the element, over a span the
    // vector index's (spread too, or in order on the lane) does not
    // overlap.
    for (m, ix, st, around, serial) in &acc {
        if let (Mem::Buf(_), true, Some((a, v)), Some((s_addr, sv))) = (m, *st, around, serial)
            && split.contains_key(s_addr)
        {
            let (cv, cs) = (ix.coeff(*v).abs(), ix.coeff(*sv).abs());
            let (ev, es) = (
                loop_extent(body, *a) as i64,
                loop_extent(body, *s_addr) as i64,
            );
            let in_lane_ok = alone.contains(s_addr) && cv == 0;
            let apart = cs != 0 && (in_lane_ok || (cv != 0 && (cs >= cv * ev || cv >= cs * es)));
            if !apart {
                split.remove(s_addr);
                alone.remove(s_addr);
                for inner in loops_in(body, *s_addr) {
                    loops.remove(&inner);
                    ops.remove(&inner);
                }
            }
        }
    }
    let l = lanes as i64;
    let mut spread: HashSet<LocalId> = acc
        .iter()
        .filter_map(|(m, ..)| match m {
            Mem::Local(x) => Some(*x),
            _ => None,
        })
        .collect();
    // Strides: a split loop's and its vector loops' come from the indices
    // of the spread arrays they access (the row or the column of an n × n
    // matrix); the first access sets them.
    let mut strides: HashMap<usize, usize> = HashMap::new();
    // An array stays spread while every access is in a spread loop at an
    // element its own lane holds; a loop that writes a replicated array
    // is not spread, nor is any loop of a split loop that loses one.
    loop {
        let mut changed = false;
        for (m, ix, _, around, serial) in &acc {
            let Mem::Local(x) = m else { continue };
            if !spread.contains(x) {
                continue;
            }
            let rest_ok = |skip: &[VarId]| {
                ix.offset.rem_euclid(l) == 0
                    && ix
                        .terms
                        .iter()
                        .all(|&(t, c)| skip.contains(&t) || c.rem_euclid(l) == 0)
            };
            let own = match (around, serial) {
                (Some((a, v)), Some((s, sv)))
                    if loops.get(a).is_some_and(|sp| sp.stride.is_some())
                        && split.contains_key(s) =>
                {
                    let (cv, cs) = (ix.coeff(*v), ix.coeff(*sv));
                    let ev = loop_extent(body, *a);
                    let es = loop_extent(body, *s);
                    let fits = (cv == 1 && cs == ev as i64) || (cs == 1 && cv == es as i64);
                    let agree = |addr: usize, c: i64, strides: &mut HashMap<usize, usize>| {
                        *strides.entry(addr).or_insert(c as usize) == c as usize
                    };
                    fits && rest_ok(&[*v, *sv])
                        && agree(*a, cv, &mut strides)
                        && agree(*s, cs, &mut strides)
                }
                (Some((a, v)), _) if loops.get(a).is_some_and(|sp| sp.stride.is_none()) => {
                    ix.coeff(*v) == 1 && rest_ok(&[*v])
                }
                (Some(_), Some((s, sv))) if alone.contains(s) => {
                    ix.coeff(*sv) == 1 && rest_ok(&[*sv])
                }
                _ => false,
            };
            if !own {
                spread.remove(x);
                changed = true;
            }
        }
        for (m, _, st, around, serial) in &acc {
            // A loop that runs one iteration a lane must not write what
            // every lane keeps whole.
            if let (Mem::Local(x), true, Some((s, _))) = (m, *st, serial)
                && !spread.contains(x)
                && alone.remove(s)
            {
                split.remove(s);
                changed = true;
            }
            if let (Mem::Local(x), true, Some((a, _))) = (m, *st, around)
                && !spread.contains(x)
                && let Some(sp) = loops.remove(a)
            {
                changed = true;
                if sp.stride.is_some() {
                    // Its split loop is split no more.
                    let gone: Vec<usize> = split.keys().copied().collect();
                    for s in gone {
                        if loops_in(body, s).contains(a) {
                            split.remove(&s);
                            for inner in loops_in(body, s) {
                                loops.remove(&inner);
                            }
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    // A split loop's stride is what its accesses say, or follows from its
    // vector loops' (one of the two is 1), or else the vector loops take
    // the low lanes; its vector loops take the other bits.
    let splits: Vec<usize> = split
        .keys()
        .copied()
        .filter(|s| !alone.contains(s))
        .collect();
    for s_addr in splits {
        let inner = loops_in(body, s_addr);
        let es = loop_extent(body, s_addr);
        let ev = lanes / es.max(1);
        let sigma = strides
            .get(&s_addr)
            .copied()
            .or_else(|| {
                inner
                    .iter()
                    .find_map(|v| strides.get(v))
                    .map(|&sv| if sv == 1 { ev } else { 1 })
            })
            .unwrap_or(ev);
        split.insert(s_addr, sigma);
        for v in inner {
            if let Some(sp) = loops.get_mut(&v) {
                sp.stride = Some(if sigma == 1 { es } else { 1 });
            }
        }
    }
    // A split loop's variables must not be read after it: its lanes end
    // with different values.
    if split.keys().any(|&s| read_after(body, s)) {
        return None;
    }
    // Nor may a replicated array be indexed by a lane's own loop
    // position: that index is only known at run time, which puts the
    // array in local memory.
    for (m, ix, _, around, serial) in &acc {
        if let Mem::Local(x) = m
            && !spread.contains(x)
        {
            let by_lane = |at: &Option<(usize, VarId)>, lanes_run: bool| {
                at.is_some_and(|(_, v)| lanes_run && ix.coeff(v) != 0)
            };
            let spread_loop = around.is_some_and(|(a, _)| loops.contains_key(&a));
            let split_loop = serial.is_some_and(|(s, _)| split.contains_key(&s));
            if by_lane(around, spread_loop) || by_lane(serial, split_loop) {
                return None;
            }
        }
    }
    let in_lanes = alone.iter().flat_map(|&s| loops_in(body, s));
    let spread_ops: usize = loops
        .keys()
        .copied()
        .chain(in_lanes)
        .filter_map(|a| ops.get(&a))
        .sum();
    if spread_ops == 0 {
        return None;
    }
    Some((
        LanePlan {
            lanes,
            loops,
            split,
            spread,
            transposed: HashSet::new(),
        },
        spread_ops,
    ))
}

/// Whether a variable the loop at address `addr` sets at its top level
/// is read outside that loop.
fn read_after(body: &[Stmt], addr: usize) -> bool {
    let mut set = HashSet::new();
    walk_stmts(body, &mut |s| {
        if std::ptr::from_ref(s) as usize == addr
            && let Stmt::Loop { body, .. } = s
        {
            for x in body {
                if let Stmt::Set { var, .. } = x {
                    set.insert(*var);
                }
            }
        }
    });
    fn walk(body: &[Stmt], addr: usize, set: &HashSet<VarId>, hit: &mut bool) {
        for s in body {
            if std::ptr::from_ref(s) as usize == addr {
                continue;
            }
            if let Some(e) = s.value() {
                e.walk(&mut |x| {
                    if let Expr::Var(v) = x
                        && set.contains(v)
                    {
                        *hit = true;
                    }
                });
            }
            if let Stmt::Loop { body, .. } = s {
                walk(body, addr, set, hit);
            }
        }
    }
    let mut hit = false;
    walk(body, addr, &set, &mut hit);
    hit
}

/// The extent of the loop at statement address `addr` in `body` (0 when
/// there is none).
fn loop_extent(body: &[Stmt], addr: usize) -> usize {
    let mut out = 0;
    walk_stmts(body, &mut |s| {
        if std::ptr::from_ref(s) as usize == addr
            && let Stmt::Loop { extent, .. } = s
        {
            out = *extent;
        }
    });
    out
}

/// The statement addresses of the vector loops directly in the loop at
/// address `addr`.
fn loops_in(body: &[Stmt], addr: usize) -> Vec<usize> {
    let mut out = Vec::new();
    walk_stmts(body, &mut |s| {
        if std::ptr::from_ref(s) as usize == addr
            && let Stmt::Loop { body, .. } = s
        {
            out = body
                .iter()
                .filter(|x| {
                    matches!(
                        x,
                        Stmt::Loop {
                            kind: LoopKind::Vector,
                            ..
                        }
                    )
                })
                .map(|x| std::ptr::from_ref(x) as usize)
                .collect();
        }
    });
    out
}

/// The chunk width of a distributed loop (see the module documentation).
fn width(p: &Program, j: VarId, extent: usize, acc: &[(usize, Mem, Index, bool)]) -> usize {
    let varying: Vec<(usize, BufferId, &Index, bool)> = acc
        .iter()
        .filter_map(|(pos, m, ix, st)| match *m {
            Mem::Buf(b) if ix.coeff(j) != 0 => Some((*pos, b, ix, *st)),
            _ => None,
        })
        .collect();
    let Some(widest) = varying.iter().map(|v| elem_bytes(p, v.1)).max() else {
        return 1;
    };
    // A buffer the loop both reads and writes is read only where the same
    // iteration writes it (`distribute` checked): a read before the write
    // comes from the chunk's vector load, one after it from the value the
    // chunk is about to store, so the order of the two needs no check.
    let mut w = 16 / widest;
    while w >= 2 {
        let aligned = extent.is_multiple_of(w)
            && varying.iter().all(|&(_, _, ix, _)| {
                ix.coeff(j) == 1
                    && ix.offset.rem_euclid(w as i64) == 0
                    && ix
                        .terms
                        .iter()
                        .all(|&(v, c)| v == j || c.rem_euclid(w as i64) == 0)
            });
        if aligned {
            return w;
        }
        w /= 2;
    }
    1
}

/// What a walk over a launch body in uniform context finds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Survey {
    /// Distributed loops (per appearance in the code).
    pub distributed: usize,
    /// Of which with a chunk width above 1.
    pub vectorized: usize,
    /// Most iterations (chunks) any distributed loop has per block.
    pub max_chunks: usize,
    /// Most accumulators any distributed loop reduces.
    pub max_accs: usize,
    /// Scratch arrays some distributed loop writes (shared by the block).
    pub shared: HashSet<LocalId>,
    /// Arithmetic operations in distributed loops, loops multiplied out
    /// (see [`scalar_ops`]).
    pub distributed_ops: usize,
}

/// Walks `body` in uniform context (parallel loops are serial there)
/// and records its distributed loops.
pub(crate) fn survey(p: &Program, k: &Kernel, body: &[Stmt]) -> Survey {
    fn walk(
        p: &Program,
        k: &Kernel,
        body: &[Stmt],
        mult: usize,
        sc: &mut Scopes,
        out: &mut Survey,
    ) {
        sc.push();
        for s in body {
            match s {
                Stmt::Loop {
                    var,
                    extent,
                    kind: LoopKind::Vector,
                    body,
                } => {
                    if let Ok(d) = distribute(p, k, *var, *extent, body, &|v| sc.defined(v)) {
                        out.distributed += 1;
                        out.distributed_ops = out.distributed_ops.saturating_add(
                            mult.saturating_mul(scalar_ops(std::slice::from_ref(s))),
                        );
                        out.vectorized += usize::from(d.width > 1);
                        out.max_chunks = out.max_chunks.max(extent / d.width);
                        out.max_accs = out.max_accs.max(d.accs.len());
                        walk_stmts(body, &mut |s| {
                            if let Stmt::LocalStore { local, .. } = s {
                                out.shared.insert(*local);
                            }
                        });
                    }
                    // Variables set inside a vector loop are scoped to it.
                }
                Stmt::Loop { extent, body, .. } => {
                    walk(p, k, body, mult.saturating_mul(*extent), sc, out);
                }
                Stmt::Set { var, .. } => sc.set(*var),
                _ => {}
            }
        }
        sc.pop();
    }
    let mut out = Survey::default();
    walk(p, k, body, 1, &mut Scopes::default(), &mut out);
    out
}

/// Variables read anywhere in `body` (loop indices excluded).
fn vars_read(k: &Kernel, body: &[Stmt]) -> HashSet<VarId> {
    let mut out = HashSet::new();
    walk_exprs(body, &mut |e| {
        if let Expr::Var(v) = e
            && k.vars[v.0 as usize].ty != ScalarType::Index
        {
            out.insert(*v);
        }
    });
    out
}

/// Variables set anywhere in `body`.
fn vars_set(body: &[Stmt]) -> HashSet<VarId> {
    let mut out = HashSet::new();
    walk_stmts(body, &mut |s| {
        if let Stmt::Set { var, .. } = s {
            out.insert(*var);
        }
    });
    out
}

/// Splits a kernel into launches and picks each one's mode.
pub(crate) fn pieces<'a>(p: &Program, k: &'a Kernel) -> Result<Vec<Piece<'a>>> {
    let unsupported = |message: String| GpuError::Unsupported {
        kernel: k.name.clone(),
        message,
    };
    // Runs between gemms.
    let mut runs: Vec<Work<'a>> = Vec::new();
    let mut start = 0;
    for (i, s) in k.body.iter().enumerate() {
        if let Stmt::Gemm(g) = s {
            if start < i {
                runs.push(Work::Body(&k.body[start..i]));
            }
            runs.push(Work::Gemm(g));
            start = i + 1;
        }
    }
    if start < k.body.len() {
        runs.push(Work::Body(&k.body[start..]));
    }
    // Nothing may flow across a cut: each launch has its own registers
    // and scratch arrays.
    let bodies: Vec<&[Stmt]> = runs
        .iter()
        .filter_map(|w| match w {
            Work::Body(b) => Some(*b),
            Work::Gemm(_) => None,
        })
        .collect();
    if bodies.len() > 1 {
        let mut local_owner: HashMap<LocalId, usize> = HashMap::new();
        for (i, b) in bodies.iter().enumerate() {
            let set = vars_set(b);
            if let Some(v) = vars_read(k, b).iter().find(|v| !set.contains(v)) {
                return Err(unsupported(format!(
                    "%v{} flows across a matrix product (each is its own launch)",
                    v.0
                )));
            }
            for l in locals_used(b) {
                if *local_owner.entry(l).or_insert(i) != i {
                    return Err(unsupported(format!(
                        "scratch array %l{} is used on both sides of a matrix product",
                        l.0
                    )));
                }
            }
        }
    }
    let mut out = Vec::new();
    for w in runs {
        match w {
            Work::Gemm(g) => out.push(Piece {
                work: Work::Gemm(g),
                mode: Mode::Gemm,
                nest: None,
            }),
            Work::Body(body) => {
                for part in split(body) {
                    let nests = nests(p, k, part);
                    if nests.is_empty() {
                        out.push(Piece {
                            work: Work::Body(part),
                            mode: Mode::Single,
                            nest: None,
                        });
                    }
                    for n in nests {
                        out.push(Piece {
                            work: Work::Body(part),
                            mode: mode(p, k, &n),
                            nest: Some(n),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A run as one launch, or one launch per statement when that lets
/// parallel loops have grids of their own and nothing flows between the
/// statements.
fn split(body: &[Stmt]) -> Vec<&[Stmt]> {
    let has_parallel = body.iter().any(|s| {
        matches!(
            s,
            Stmt::Loop {
                kind: LoopKind::Parallel,
                ..
            }
        )
    });
    let no_sets = !body.iter().any(|s| matches!(s, Stmt::Set { .. }));
    let mut seen: HashSet<LocalId> = HashSet::new();
    let disjoint_locals = body.iter().all(|s| {
        let used = locals_used(std::slice::from_ref(s));
        let ok = !used.iter().any(|l| seen.contains(l));
        seen.extend(used);
        ok
    });
    if body.len() > 1 && has_parallel && no_sets && disjoint_locals {
        body.chunks(1).collect()
    } else {
        vec![body]
    }
}

/// Most chunks a block's distributed loops may all have and still leave
/// the choice to a lane group: no more than one warp's lanes.
pub const LANES_OVER_BLOCK_MAX_CHUNKS: usize = 32;

/// The mode of a launch whose grid runs `nest`. A block per iteration
/// whose distributed loops all fit one warp and hold under half of the
/// iteration's arithmetic (the Sinkhorn projection of eight streams,
/// whose only loop of 64 is the copy of its 8 × 8 result) would keep
/// the block's other warps idle while one runs the chain; a lane group
/// spreads the chain's loops within a warp, so it is taken when there is
/// a lane plan. A row swept by the block keeps it: its 16-byte chunks
/// are what a lane group does not make.
fn mode(p: &Program, k: &Kernel, nest: &Nest<'_>) -> Mode {
    let survey = survey(p, k, nest.body);
    let chains = survey.max_chunks <= LANES_OVER_BLOCK_MAX_CHUNKS
        && survey.distributed_ops.saturating_mul(2) < scalar_ops(nest.body);
    if survey.distributed > 0 && !chains {
        Mode::Block
    } else if nest.inner.is_none()
        && let Some(plan) = lane_plan(p, k, nest.body, nest.outer.1)
    {
        Mode::Lanes(plan.lanes as u32)
    } else if survey.distributed > 0 {
        Mode::Block
    } else {
        Mode::Thread
    }
}

/// A PTX identifier made of `name`: letters, digits and `_`, starting
/// with a letter, at most 64 characters.
pub(crate) fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64)
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert(0, 'k');
    }
    s
}

/// Statements one full unroll of `body` produces (loops multiplied out).
pub(crate) fn unrolled_size(body: &[Stmt]) -> usize {
    body.iter()
        .map(|s| match s {
            Stmt::Loop { extent, body, .. } => extent.saturating_mul(unrolled_size(body)),
            _ => 1,
        })
        .fold(0, usize::saturating_add)
}

/// Arithmetic operations (unary, binary, select, cast; not loads or
/// constants) one execution of `body` computes, loops multiplied out.
pub(crate) fn scalar_ops(body: &[Stmt]) -> usize {
    body.iter()
        .map(|s| match s {
            Stmt::Loop { extent, body, .. } => extent.saturating_mul(scalar_ops(body)),
            _ => s.value().map_or(0, |e| {
                let mut n = 0usize;
                e.walk(&mut |x| {
                    if matches!(
                        x,
                        Expr::Unary { .. }
                            | Expr::Binary { .. }
                            | Expr::Select { .. }
                            | Expr::Cast { .. }
                    ) {
                        n += 1;
                    }
                });
                n
            }),
        })
        .fold(0, usize::saturating_add)
}

/// Whether code generation unrolls the serial loop `for var in
/// 0..extent { body }`: so its scratch-array indices become constants
/// (and the arrays registers), when that stays small.
pub(crate) fn unrolls(var: VarId, extent: usize, body: &[Stmt]) -> bool {
    extent <= 1
        || (extent <= UNROLL_MAX_EXTENT
            && indexes_locals(body, var)
            && extent.saturating_mul(unrolled_size(body)) <= UNROLL_MAX_STMTS)
}

/// Whether some scratch-array index in `body` uses `var`.
pub(crate) fn indexes_locals(body: &[Stmt], var: VarId) -> bool {
    let mut hit = false;
    walk_stmts(body, &mut |s| {
        if let Stmt::LocalStore { index, .. } = s
            && index.coeff(var) != 0
        {
            hit = true;
        }
    });
    walk_exprs(body, &mut |e| {
        if let Expr::LocalLoad { index, .. } = e
            && index.coeff(var) != 0
        {
            hit = true;
        }
    });
    hit
}

/// Bytes of shared memory one thread's slices of the big scratch arrays
/// of thread-per-iteration code `body` take (see *Shared slices* in
/// `entry`).
pub(crate) fn slice_bytes(k: &Kernel, body: &[Stmt], plan: Option<&LanePlan>) -> usize {
    locals_used(body)
        .iter()
        .map(|&l| (k.locals[l.0 as usize].ty, thread_len(k, l, plan)))
        .filter(|(t, len)| len.saturating_mul(scratch_words(*t)) > REGISTER_SCRATCH_MAX_WORDS)
        .map(|(t, len)| (len * t.size_bytes()).next_multiple_of(16))
        .sum()
}

/// Elements of scratch array `l` one thread holds: a spread array's
/// share of a lane.
pub(crate) fn thread_len(k: &Kernel, l: LocalId, plan: Option<&LanePlan>) -> usize {
    let len = k.locals[l.0 as usize].len;
    match plan {
        Some(p) if p.spread.contains(&l) => len.div_ceil(p.lanes),
        _ => len,
    }
}
