//! One launch of kernel-IR statements as an NVPTX kernel function.
//!
//! Input: a verified kernel and a [`Piece`] of it in mode
//! [`Mode::Thread`], [`Mode::Block`] or [`Mode::Single`] (see
//! [`super::launch`]). Output: a function `void @entry(ptr addrspace(1))`
//! taking the device array of buffer addresses, and what the launch
//! needs (grid, block, statistics).
//!
//! Code is generated in one of three *places*:
//!
//! * **thread** (mode T): one parallel iteration per thread; everything
//!   runs serially in the thread, stores go straight to memory;
//! * **uniform** (modes B and S): the code computes the same values for
//!   the whole block; stores (to buffers and to scratch arrays the block
//!   shares) are done by thread 0 alone, a vector loop that
//!   [`distribute`] accepts is spread over the threads, and the scalar
//!   statements between run either on every thread or on warp 0 alone
//!   (see *Warp-0 runs*);
//! * **lane**: one iteration of a distributed loop, on the thread that
//!   owns it. With a chunk width `W > 1`, the chunk's `W` iterations are
//!   emitted one after another, every load that moves with the loop index
//!   is one `<W x T>` load issued before them and every such store one
//!   `<W x T>` store after them.
//!
//! A distributed loop's accumulators start from their identity in every
//! thread and are combined by a block reduction: a warp butterfly
//! (`shfl.sync.bfly`, all 32 lanes end with the same bits because `+`,
//! `max` and `min` are commutative), one shared-memory slot per warp,
//! a barrier, every thread combining the warp slots in warp order (so
//! the total is the same in every thread), a barrier before the slots are
//! reused; then `acc = acc_before op total`. All accumulators of one loop
//! share one round.
//!
//! **Barriers** (uniform control flow only) come from a record of the
//! shared-memory accesses since the last barrier — buffers, and scratch
//! arrays the block shares — each with the thread that makes it: all
//! threads (uniform loads), thread 0 (uniform stores), or the owner of an
//! element in a distributed loop. The owner is known when the element
//! determines its iteration: a coefficient `c > 0` on the loop index and
//! every other coefficient a multiple of `c · extent`, so two accesses
//! with the same `(c, extent, offset mod c·extent, W)` reach an element
//! from the same thread. An access that conflicts with a recorded one
//! (same memory, one of them a write, not provably the same thread) gets
//! a barrier first. A serial loop enters with its whole body's accesses
//! recorded, standing for the previous iteration.
//!
//! **Warp-0 runs.** A uniform statement list is cut into *runs*: maximal
//! stretches of statements that hold no distributed loop, none of which
//! conflicts with itself or with an earlier statement of the stretch (in
//! the sense above — e.g. a load of what thread 0 stored in the same
//! stretch ends it), so no barrier can fall inside one. Statements that
//! hold a distributed loop are emitted as themselves (their lists cut
//! again). A run executes on *warp 0 alone* (`if (tid < 32) { run }`)
//! when the block has more than one warp, the run computes at least one
//! arithmetic operation ([`scalar_ops`]), and either nothing outside it
//! reads what it sets, or it computes at least [`WARP_RUN_MIN_OPS`]
//! operations and hands over at most [`WARP_RUN_MAX_SLOTS`] values. What
//! it hands over: every variable it sets that a statement outside the run
//! reads, and every element of each per-thread scratch array it writes
//! that a statement outside the run reads. Lane 0 writes them to the
//! run's shared-memory slots at the end of the run; after the branch joins
//! there is a barrier (uniform control flow), and every thread reads them
//! back. All lanes of warp 0 compute the same bits every thread computed
//! before, so the results are unchanged. The run's accesses (with the
//! slot write, made by thread 0) are recorded before the branch, so any
//! barrier they need comes before it; the slot read is an access by
//! every thread, so a run met again (a loop) waits for the previous
//! readers. Cheaper runs stay on every thread: they need no barrier.
//! Thread 0's stores in a warp-0 run are masked stores rather than
//! branches around a store (see [`Gen::store_t0`]).
//!
//! **Scratch arrays.** One a distributed loop writes lives in shared
//! memory (the block shares it; uniform code stores to it from thread 0).
//! In uniform code, a per-thread array bigger than
//! [`REGISTER_SCRATCH_MAX_WORDS`] is a *shared copy* (below) when it fits
//! in shared memory; all others are per-thread `alloca`s. Loops whose
//! index selects scratch elements are unrolled (up to
//! [`UNROLL_MAX_EXTENT`] iterations) so the indices are constants and the
//! `alloca`s become registers.
//!
//! **Shared slices.** In thread-per-iteration code, a per-thread array
//! bigger than [`REGISTER_SCRATCH_MAX_WORDS`] (the Sinkhorn backward's
//! state history) is a slice of a shared array, one slice per thread,
//! rather than an `alloca` that unrolling turns into registers that
//! spill; the block is cut to as many threads as the slices fit in
//! shared memory. Each thread zeroes and uses only its own slice, so no
//! ordering is needed; stores are volatile, as for shared copies.
//!
//! **Shared copies.** A per-thread array of uniform code holds the same
//! values in every thread, so the block keeps one copy of it in shared
//! memory (zeroed by the block at the start, like the others) and every
//! thread that runs a statement makes its accesses itself: all of them
//! store the same bits, with no branch, and each reads back what it
//! stored itself or what another thread stored with the same bits. What
//! can go wrong is a thread reading a later value another thread stored
//! already, or a lagging thread's store landing after a later one — so a
//! store waits until every thread that may still read or store the
//! element has done so, and a read waits for a store made by warp 0
//! alone. The generator keeps a log per copy of the elements accessed
//! since the last barrier (constant indices, as unrolled loops give; any
//! other index stands for every element), by the whole block or by warp 0
//! in a warp-0 run, and of warp 0's since its last `bar.warp.sync`:
//!
//! * a store by the whole block waits (barrier) for any access since the
//!   last barrier; a read by the whole block (in uniform code or a
//!   distributed loop) waits (barrier) for a store by warp 0 alone;
//! * in a warp-0 run, a store waits for warp 0's own accesses with a
//!   `bar.warp.sync` (all its lanes run the run: control flow in it is
//!   uniform), and a read needs nothing. The whole block's accesses are
//!   waited for before the run's branch: a barrier there when the run
//!   stores to a copy the block accessed since the last barrier;
//! * a serial loop that is not unrolled enters with its body's accesses
//!   logged at every element (standing for the previous iteration), as a
//!   warp-0 run's in a warp-0 run and as both kinds outside one.
//!
//! Every barrier clears the log; a `bar.warp.sync` clears warp 0's part
//! of it. A copy is not handed over by a warp-0 run: the block reads it
//! where it is, after the barrier its log asks for. Stores to a copy are
//! volatile: the optimizer would otherwise forward a stored value to the
//! loads that read it back, however far apart, and keep it in a register
//! all the way — the pressure the copy is there to remove. (A
//! shared-memory store is not cached either way; volatile only keeps
//! stores from merging into wider ones.) The values and their order of
//! operations are the same as in registers: only where they live
//! changes.

use std::collections::{HashMap, HashSet};

use birkhoff_ir::DType;
use birkhoff_ir::kernel::{
    BufferId, Expr, Index, Kernel, LocalId, LoopKind, Program, ScalarType, Scopes, Stmt, VarId,
    buffers_used, locals_used, walk_exprs, walk_stmts,
};
use inkwell::basic_block::BasicBlock;
use inkwell::types::{BasicType, BasicTypeEnum, VectorType};
use inkwell::values::{
    BasicValue, BasicValueEnum, FunctionValue, InstructionValue, IntValue, PointerValue,
    VectorValue,
};
use inkwell::{AddressSpace, IntPredicate};

use super::launch::{
    Acc, Dist, GRID_MIN_ITERATIONS, LanePlan, Mem, Mode, Piece, REGISTER_SCRATCH_MAX_WORDS, Spread,
    UNROLL_MAX_EXTENT, WARP_RUN_MAX_SLOTS, WARP_RUN_MIN_OPS, Work, distribute, lane_plan,
    line_vars, scalar_ops, scratch_words, slice_bytes, survey, thread_len, unrolls,
};
use super::ops::{Cx, OrLlvm, fused_operands};
use crate::{GpuError, Result};

/// Global memory.
pub(crate) const GLOBAL: u16 = 1;
/// Shared memory.
pub(crate) const SHARED: u16 = 3;

/// Bytes of static shared memory a block may use.
pub(crate) const MAX_SHARED_BYTES: usize = 48 * 1024;

/// Most chunks (16-byte pieces) of a block-per-iteration launch's longest
/// spread loop that one round of its threads covers: past this, a block
/// has half as many threads as chunks, so that each takes two.
const BLOCK_ONE_ROUND_MAX_CHUNKS: u64 = 128;

/// Bytes of shared memory the shared copies leave free for warp-0 runs'
/// hand-over slots (made later, while emitting): four runs of
/// [`WARP_RUN_MAX_SLOTS`] 8-byte slots.
const COPY_RESERVE_BYTES: usize = 4 * WARP_RUN_MAX_SLOTS * 8;

/// A launch as emitted.
#[derive(Clone, Debug)]
pub(crate) struct Emitted {
    /// Blocks per grid.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: u32,
    /// Distributed loops emitted, and of which vectorized.
    pub distributed: usize,
    pub vectorized: usize,
    /// Barriers emitted (static count).
    pub barriers: usize,
    /// The statements emitted on warp 0 alone (a warp-0 run's top-level
    /// statements, by address in the program), for the audit's model.
    pub warp0_stmts: HashSet<usize>,
}

/// Who makes a shared-memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    /// Every thread (a uniform load).
    All,
    /// Thread 0 (a uniform store).
    Thread0,
    /// The owner of the element in a distributed loop: the element's
    /// iteration is fixed by `(c, extent, r)`, its thread by `w`.
    Dist {
        c: i64,
        extent: usize,
        r: i64,
        w: usize,
    },
    /// Some thread.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Access {
    mem: Mem,
    write: bool,
    owner: Owner,
}

fn same_thread(a: Owner, b: Owner) -> bool {
    match (a, b) {
        (Owner::Thread0, Owner::Thread0) => true,
        (Owner::Dist { .. }, Owner::Dist { .. }) => a == b,
        _ => false,
    }
}

/// Whether `a` and `b` need a barrier between them: the same memory, one
/// of them a write, not provably made by the same thread.
fn conflict(a: &Access, b: &Access) -> bool {
    a.mem == b.mem && (a.write || b.write) && !same_thread(a.owner, b.owner)
}

/// Whether some access of `a` conflicts with some access of `b`.
fn conflicting<'x>(a: impl IntoIterator<Item = &'x Access>, b: &HashSet<Access>) -> bool {
    a.into_iter().any(|x| b.iter().any(|y| conflict(x, y)))
}

/// A piece of a uniform statement list (see *Warp-0 runs*).
#[derive(Clone, Debug)]
enum Seg {
    /// One statement emitted as itself: it holds a distributed loop (or
    /// conflicts with itself).
    Stmt(usize),
    /// The statements `start..end`: on every thread (`warp0: None`) or on
    /// warp 0, handing over what [`HandOver`] lists.
    Run {
        start: usize,
        end: usize,
        warp0: Option<HandOver>,
    },
}

/// What a warp-0 run hands to the rest of its block, in slot order.
#[derive(Clone, Debug, Default)]
struct HandOver {
    /// Variables, by id.
    vars: Vec<VarId>,
    /// Per-thread scratch arrays, by id, every element.
    locals: Vec<LocalId>,
}

impl HandOver {
    /// Slots needed (one per variable and scratch-array element).
    fn slots(&self, k: &Kernel) -> usize {
        self.vars.len()
            + self
                .locals
                .iter()
                .map(|l| k.locals[l.0 as usize].len)
                .sum::<usize>()
    }
}

/// How often each variable is read and each scratch array loaded in
/// `body`.
fn reads(body: &[Stmt]) -> (HashMap<VarId, usize>, HashMap<LocalId, usize>) {
    let mut vars: HashMap<VarId, usize> = HashMap::new();
    let mut locals: HashMap<LocalId, usize> = HashMap::new();
    walk_exprs(body, &mut |e| match e {
        Expr::Var(v) => *vars.entry(*v).or_default() += 1,
        Expr::LocalLoad { local, .. } => *locals.entry(*local).or_default() += 1,
        _ => {}
    });
    (vars, locals)
}

/// The owner of `ix` in a distributed loop over `j` (see the module docs).
fn owner(ix: &Index, j: VarId, extent: usize, w: usize) -> Owner {
    let c = ix.coeff(j);
    if c == 0 {
        return Owner::All;
    }
    let span = c.saturating_mul(extent as i64);
    if c < 0
        || span == i64::MAX
        || !ix
            .terms
            .iter()
            .all(|&(v, k)| v == j || k.rem_euclid(span) == 0)
    {
        return Owner::Unknown;
    }
    Owner::Dist {
        c,
        extent,
        r: ix.offset.rem_euclid(span),
        w,
    }
}

/// Where code is being generated (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Thread,
    Uniform,
    Lane,
}

/// Where a scratch array lives (see *Scratch arrays*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Home {
    /// A per-thread `alloca`.
    Private,
    /// Shared memory, written by a distributed loop (and by thread 0 in
    /// uniform code).
    Shared,
    /// A shared copy: one per block, accessed by every thread that runs
    /// the code (see *Shared copies*).
    Copy,
    /// A thread's own slice of a shared array, one slice per thread of
    /// the block (see *Shared slices*).
    Slice,
}

/// A scratch array's storage.
#[derive(Clone, Copy, Debug)]
struct Slot<'ctx> {
    ptr: PointerValue<'ctx>,
    home: Home,
}

/// Elements of a scratch array: some, by index, or every one.
#[derive(Clone, Debug, Default)]
struct Elems {
    every: bool,
    some: HashSet<i64>,
}

impl Elems {
    /// Adds element `e` (`None`: every element).
    fn add(&mut self, e: Option<i64>) {
        match e {
            Some(e) if !self.every => {
                self.some.insert(e);
            }
            Some(_) => {}
            None => {
                self.every = true;
                self.some.clear();
            }
        }
    }

    /// Whether element `e` (`None`: some element) may be in the set.
    fn hits(&self, e: Option<i64>) -> bool {
        self.every
            || match e {
                Some(e) => self.some.contains(&e),
                None => !self.some.is_empty(),
            }
    }
}

/// The accesses to one shared copy since the last barrier (see *Shared
/// copies*).
#[derive(Clone, Debug, Default)]
struct CopyLog {
    /// By the whole block.
    block_read: Elems,
    block_written: Elems,
    /// By warp 0 alone, in warp-0 runs.
    warp_read: Elems,
    warp_written: Elems,
    /// By warp 0 alone since its last `bar.warp.sync`.
    unsynced_read: Elems,
    unsynced_written: Elems,
}

impl CopyLog {
    /// Whether the whole block accessed some element since the last
    /// barrier.
    fn block_busy(&self) -> bool {
        self.block_read.hits(None) || self.block_written.hits(None)
    }
}

/// What must come before an access to a shared copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Wait {
    Nothing,
    WarpSync,
    Barrier,
}

/// An element stream of a chunk: a buffer and its (normalized) index.
type Stream = (BufferId, Index);

/// A chunk's per-lane values of one store, filled in lane order.
type Lanes<'ctx> = Vec<Option<BasicValueEnum<'ctx>>>;

/// The chunk being emitted by a vectorized distributed loop.
struct Chunk<'ctx> {
    j: VarId,
    width: usize,
    lane: usize,
    /// Each moving load's lane values (compute type).
    loads: HashMap<(BufferId, Index), Vec<BasicValueEnum<'ctx>>>,
    /// Each moving store's lane values (storage type), in first-store order.
    stores: Vec<(Stream, Lanes<'ctx>)>,
}

/// A lanes-per-iteration launch's state (see `launch`, *Lane groups*).
struct LaneGroup<'ctx> {
    plan: LanePlan,
    /// This thread's lane in its group (`i64`).
    lane: IntValue<'ctx>,
    /// Whether the group's iteration is in range (`i1`): a group past the
    /// end runs the last iteration again, for its lanes' shuffles, and
    /// stores nothing.
    valid: IntValue<'ctx>,
    /// The spread loop being emitted: its index and this lane's round.
    spreading: Option<(VarId, i64)>,
    /// The indices of the split loops being emitted.
    split_vars: Vec<VarId>,
    /// Buffers the iteration both writes and reads, and whether some lane
    /// read or wrote one since the last warp sync.
    exchanged: HashSet<BufferId>,
    read: bool,
    wrote: bool,
    /// Inside a spread loop, whose lanes touch only their own elements
    /// (one sync before the loop orders it after earlier accesses): its
    /// accesses are recorded, and no sync is placed among them (a sync in
    /// the last round of a loop the group's width does not divide would
    /// be reached by some lanes only).
    quiet: bool,
}

/// The code generator of one launch.
pub(crate) struct Gen<'a, 'm, 'ctx> {
    pub cx: Cx<'m, 'ctx>,
    p: &'a Program,
    k: &'a Kernel,
    f: FunctionValue<'ctx>,
    name: String,
    /// The block holding every `alloca` (branches to the code at the end).
    allocas: BasicBlock<'ctx>,
    alloca_b: inkwell::builder::Builder<'ctx>,
    bufs: PointerValue<'ctx>,
    bases: HashMap<BufferId, PointerValue<'ctx>>,
    /// Buffers this launch writes (the others are loaded as invariant).
    written: HashSet<BufferId>,
    vars: HashMap<VarId, PointerValue<'ctx>>,
    /// Accumulators redirected to their per-thread partials.
    redirect: HashMap<VarId, PointerValue<'ctx>>,
    loops: HashMap<VarId, IntValue<'ctx>>,
    locals: HashMap<LocalId, Slot<'ctx>>,
    scopes: Scopes,
    place: Place,
    chunk: Option<Chunk<'ctx>>,
    pending: HashSet<Access>,
    tid: Option<IntValue<'ctx>>,
    block: u32,
    slots: Option<(PointerValue<'ctx>, usize)>,
    /// Reads of each variable and scratch array in the whole launch.
    var_reads: HashMap<VarId, usize>,
    local_reads: HashMap<LocalId, usize>,
    /// Inside a run (see *Warp-0 runs*): lists are not cut again.
    in_run: bool,
    /// Inside a warp-0 run: a barrier here would be a bug.
    warp0: bool,
    /// Each warp-0 run's hand-over slots, by run key, with their count.
    handover: HashMap<usize, (PointerValue<'ctx>, usize)>,
    /// Bytes of shared memory taken so far.
    shared_bytes: usize,
    /// Each shared copy's accesses since the last barrier.
    copies: HashMap<LocalId, CopyLog>,
    /// Set in a lanes-per-iteration launch.
    group: Option<LaneGroup<'ctx>>,
    stats: Emitted,
}

impl<'a, 'm, 'ctx> Gen<'a, 'm, 'ctx> {
    /// Emits `piece` of kernel `k` as the kernel function `name`.
    pub fn launch(
        cx: Cx<'m, 'ctx>,
        p: &'a Program,
        k: &'a Kernel,
        piece: &Piece<'a>,
        name: &str,
        block_threads: u32,
    ) -> Result<(FunctionValue<'ctx>, Emitted)> {
        let Work::Body(body) = piece.work else {
            return Err(GpuError::Llvm(
                "a matrix product is not a statement launch".into(),
            ));
        };
        let unsupported = |message: String| GpuError::Unsupported {
            kernel: k.name.clone(),
            message,
        };
        let ctx = cx.ctx;
        let ptr1 = ctx.ptr_type(AddressSpace::from(GLOBAL));
        let f = cx
            .module
            .add_function(name, ctx.void_type().fn_type(&[ptr1.into()], false), None);
        let allocas = ctx.append_basic_block(f, "allocas");
        let start = ctx.append_basic_block(f, "start");
        let alloca_b = ctx.create_builder();
        alloca_b.position_at_end(allocas);
        cx.b.position_at_end(start);
        let bufs = f
            .get_nth_param(0)
            .ok_or_else(|| GpuError::Llvm("missing parameter".into()))?
            .into_pointer_value();

        let inner = piece.nest.map_or(body, |n| n.body);
        let plan = match piece.mode {
            Mode::Lanes(_) => lane_plan(p, k, inner, piece.nest.map_or(1, |n| n.outer.1)),
            _ => None,
        };
        let sv = match piece.mode {
            Mode::Block => survey(p, k, inner),
            Mode::Single => survey(p, k, body),
            _ => Default::default(),
        };
        let warp = 32u32;
        // The loop on the grid's x dimension: the nest's inner loop when it
        // has one (the parallel loop is then on y).
        let x_loop = piece.nest.map(|n| n.inner.unwrap_or(n.outer));
        let y_extent = piece
            .nest
            .and_then(|n| n.inner.map(|_| n.outer.1))
            .unwrap_or(1);
        let (grid, block) = match (piece.mode, x_loop) {
            (Mode::Thread, Some((_, extent))) => {
                let mut block = block_threads.min((extent as u64).next_multiple_of(32) as u32);
                // Few iterations in all: blocks small enough that there
                // are GRID_MIN_ITERATIONS of them, spread over every SM.
                let total = piece.nest.map_or(extent, |n| n.iterations());
                let spread = (total / GRID_MIN_ITERATIONS / 32 * 32).max(32);
                block = block.min(u32::try_from(spread).unwrap_or(u32::MAX));
                // Big scratch arrays take a slice of shared memory per
                // thread: as many threads as their slices fit.
                if let Some(fit) = MAX_SHARED_BYTES.checked_div(slice_bytes(k, inner, None)) {
                    let fit = u32::try_from(fit).unwrap_or(u32::MAX);
                    if fit >= 32 {
                        block = block.min(fit / 32 * 32);
                    } else if fit >= 1 {
                        block = block.min(fit);
                    }
                }
                let grid = (extent as u64).div_ceil(u64::from(block));
                (grid, block)
            }
            (Mode::Lanes(lanes), Some((_, extent))) => {
                let plan = plan
                    .as_ref()
                    .ok_or_else(|| unsupported("no lane plan".into()))?;
                let threads = (extent as u64).saturating_mul(u64::from(lanes));
                let mut block = block_threads.min(threads.next_multiple_of(32) as u32);
                let spread = (threads / GRID_MIN_ITERATIONS as u64 / 32 * 32).max(32);
                block = block.min(u32::try_from(spread).unwrap_or(u32::MAX));
                if let Some(fit) = MAX_SHARED_BYTES.checked_div(slice_bytes(k, inner, Some(plan))) {
                    let fit = u32::try_from(fit).unwrap_or(u32::MAX);
                    if fit >= 32 {
                        block = block.min(fit / 32 * 32);
                    } else if fit >= lanes {
                        block = block.min(fit / lanes * lanes);
                    } else {
                        return Err(unsupported(format!(
                            "the scratch arrays of {lanes} lanes exceed {MAX_SHARED_BYTES} bytes"
                        )));
                    }
                }
                (threads.div_ceil(u64::from(block)), block)
            }
            (Mode::Block, Some((_, extent))) => {
                // Two chunks a thread once there are more than 128: with
                // one, every spread loop is straight-line code that ptxas
                // schedules as one piece, all its loads first (bf16
                // `mhc_pre_grad` at C = 2048: 142 registers, one block an
                // SM, chain-bound at 2.4× its memory floor; in blocks of
                // 128 threads, two rounds each: 121 registers, four blocks
                // an SM, 1.6×).
                let chunks = sv.max_chunks as u64;
                let rounds = if chunks > BLOCK_ONE_ROUND_MAX_CHUNKS {
                    2
                } else {
                    1
                };
                let want = chunks.div_ceil(rounds).next_multiple_of(32).max(32);
                (extent as u64, block_threads.min(want as u32))
            }
            (Mode::Single, _) => {
                let want = (sv.max_chunks as u64).next_multiple_of(32).max(32);
                (
                    1,
                    if sv.distributed > 0 {
                        block_threads.min(want as u32)
                    } else {
                        warp
                    },
                )
            }
            _ => return Err(GpuError::Llvm(format!("launch mode {:?}", piece.mode))),
        };
        let grid = u32::try_from(grid)
            .ok()
            .filter(|&g| g <= i32::MAX as u32)
            .ok_or_else(|| unsupported(format!("{grid} blocks exceed the grid limit")))?;
        let grid_y = u32::try_from(y_extent)
            .ok()
            .filter(|&g| g <= 65535)
            .ok_or_else(|| unsupported(format!("{y_extent} blocks exceed the grid's y limit")))?;

        let mut written = HashSet::new();
        walk_stmts(inner, &mut |s| {
            if let Stmt::Store { buf, .. } = s {
                written.insert(*buf);
            }
        });
        let (var_reads, local_reads) = reads(inner);
        let mut g = Gen {
            cx,
            p,
            k,
            f,
            name: name.to_string(),
            allocas,
            alloca_b,
            bufs,
            bases: HashMap::new(),
            written,
            vars: HashMap::new(),
            redirect: HashMap::new(),
            loops: HashMap::new(),
            locals: HashMap::new(),
            scopes: Scopes::default(),
            place: Place::Thread,
            chunk: None,
            pending: HashSet::new(),
            tid: None,
            block,
            slots: None,
            var_reads,
            local_reads,
            in_run: false,
            warp0: false,
            handover: HashMap::new(),
            shared_bytes: 0,
            copies: HashMap::new(),
            group: None,
            stats: Emitted {
                grid: [grid, grid_y, 1],
                block,
                distributed: 0,
                vectorized: 0,
                barriers: 0,
                warp0_stmts: HashSet::new(),
            },
        };
        let uniform = matches!(piece.mode, Mode::Block | Mode::Single);
        if let Some(plan) = plan {
            let zero = g.cx.i64c(0);
            let mut read = HashSet::new();
            walk_exprs(inner, &mut |e| {
                if let Expr::Load { buf, .. } = e {
                    read.insert(*buf);
                }
            });
            g.group = Some(LaneGroup {
                plan,
                lane: zero,
                valid: g.cx.ctx.bool_type().const_int(1, false),
                spreading: None,
                split_vars: Vec::new(),
                exchanged: g.written.intersection(&read).copied().collect(),
                read: false,
                wrote: false,
                quiet: false,
            });
        }
        g.prologue(inner, &sv.shared, sv.max_accs, uniform)?;
        if let Some((var, _)) = piece.nest.and_then(|n| n.inner.map(|_| n.outer)) {
            let ctaid = g.special("ctaid.y")?;
            let iter =
                g.cx.b
                    .build_int_z_extend(ctaid, ctx.i64_type(), "outer")
                    .ll()?;
            g.loops.insert(var, iter);
        }
        match (piece.mode, x_loop) {
            (Mode::Thread, Some((var, extent))) => {
                let iter = g.global_thread(block, "iter")?;
                let inside =
                    g.cx.icmp(IntPredicate::ULT, iter, g.cx.i64c(extent as i64))?;
                let then = ctx.append_basic_block(f, "iter");
                let done = ctx.append_basic_block(f, "done");
                g.cx.b.build_conditional_branch(inside, then, done).ll()?;
                g.cx.b.position_at_end(then);
                g.loops.insert(var, iter);
                g.place = Place::Thread;
                g.stmts(inner)?;
                g.cx.b.build_unconditional_branch(done).ll()?;
                g.cx.b.position_at_end(done);
            }
            (Mode::Lanes(lanes), Some((var, extent))) => {
                let gid = g.global_thread(block, "")?;
                let b = &g.cx.b;
                let l = g.cx.i64c(i64::from(lanes));
                let iter = b.build_int_unsigned_div(gid, l, "iter").ll()?;
                let lane = b.build_int_unsigned_rem(gid, l, "lane").ll()?;
                let last = g.cx.i64c(extent as i64 - 1);
                let valid = g.cx.icmp(IntPredicate::ULE, iter, last)?;
                let iter = g.cx.b.build_select(valid, iter, last, "").ll()?;
                if let Some(gr) = &mut g.group {
                    gr.lane = lane;
                    gr.valid = valid;
                }
                g.loops.insert(var, iter.into_int_value());
                g.place = Place::Thread;
                g.stmts(inner)?;
            }
            (Mode::Block, Some((var, _))) => {
                let ctaid = g.special("ctaid.x")?;
                let iter =
                    g.cx.b
                        .build_int_z_extend(ctaid, ctx.i64_type(), "iter")
                        .ll()?;
                g.loops.insert(var, iter);
                g.place = Place::Uniform;
                g.stmts(inner)?;
            }
            _ => {
                g.place = Place::Uniform;
                g.stmts(body)?;
            }
        }
        g.cx.b.build_return(None).ll()?;
        g.alloca_b.build_unconditional_branch(start).ll()?;
        Ok((g.f, g.stats))
    }

    /// This thread's index in the grid's x dimension (`i64`), for blocks
    /// of `block` threads.
    fn global_thread(&self, block: u32, name: &str) -> Result<IntValue<'ctx>> {
        let tid = self.special("tid.x")?;
        let ctaid = self.special("ctaid.x")?;
        let i64t = self.cx.ctx.i64_type();
        let b = &self.cx.b;
        let tid = b.build_int_z_extend(tid, i64t, "").ll()?;
        let ctaid = b.build_int_z_extend(ctaid, i64t, "").ll()?;
        let base = b
            .build_int_mul(ctaid, self.cx.i64c(i64::from(block)), "")
            .ll()?;
        b.build_int_add(base, tid, name).ll()
    }

    fn unsupported(&self, message: String) -> GpuError {
        GpuError::Unsupported {
            kernel: self.k.name.clone(),
            message,
        }
    }

    /// Reads a PTX special register (`tid.x`, `ntid.x`, `ctaid.x`, …).
    fn special(&self, reg: &str) -> Result<IntValue<'ctx>> {
        Ok(self
            .cx
            .intrinsic(&format!("llvm.nvvm.read.ptx.sreg.{reg}"), &[], &[])?
            .into_int_value())
    }

    /// This thread's index in the block (`i32`), read once.
    fn tid(&mut self) -> Result<IntValue<'ctx>> {
        if let Some(t) = self.tid {
            return Ok(t);
        }
        // Read in the alloca block so it dominates every use.
        let f = crate::codegen::ops::Cx {
            ctx: self.cx.ctx,
            module: self.cx.module,
            b: self.cx.ctx.create_builder(),
        };
        f.b.position_at_end(self.allocas);
        let t = f
            .intrinsic("llvm.nvvm.read.ptx.sreg.tid.x", &[], &[])?
            .into_int_value();
        self.tid = Some(t);
        Ok(t)
    }

    /// Buffer base pointers, scratch arrays (zeroed), reduction slots.
    /// `uniform`: the launch runs uniform code (shared copies allowed).
    fn prologue(
        &mut self,
        body: &[Stmt],
        shared: &HashSet<LocalId>,
        max_accs: usize,
        uniform: bool,
    ) -> Result<()> {
        let ctx = self.cx.ctx;
        let bufs = buffers_used(body);
        let i64t = ctx.i64_type();
        let ptr1 = ctx.ptr_type(AddressSpace::from(GLOBAL));
        for b in bufs {
            let b_ = &self.alloca_b;
            let at = gep(b_, i64t.into(), self.bufs, self.cx.i64c(i64::from(b.0)))?;
            let addr = b_.build_load(i64t, at, "").ll()?;
            mark_invariant(&self.cx, addr)?;
            set_align(addr, 8)?;
            let ptr = b_
                .build_int_to_ptr(addr.into_int_value(), ptr1, &format!("b{}", b.0))
                .ll()?;
            self.bases.insert(b, ptr);
        }
        let used = locals_used(body);
        let nwarps = (self.block / 32) as usize;
        // Where each array lives: shared arrays and the reduction slots
        // first, then shared copies while they fit (see *Scratch arrays*).
        let plan = self.group.as_ref().map(|g| &g.plan);
        let len_of = |l: LocalId| thread_len(self.k, l, plan);
        let bytes_of = |l: LocalId| {
            let d = &self.k.locals[l.0 as usize];
            (len_of(l) * d.ty.size_bytes()).next_multiple_of(16)
        };
        let mut taken = max_accs * nwarps * 8;
        let mut homes: HashMap<LocalId, Home> = HashMap::new();
        for &l in &used {
            if shared.contains(&l) {
                taken += bytes_of(l);
                homes.insert(l, Home::Shared);
            }
        }
        for &l in &used {
            if homes.contains_key(&l) {
                continue;
            }
            let d = &self.k.locals[l.0 as usize];
            let big = len_of(l).saturating_mul(scratch_words(d.ty)) > REGISTER_SCRATCH_MAX_WORDS;
            let fits = taken + bytes_of(l) + COPY_RESERVE_BYTES <= MAX_SHARED_BYTES;
            let slices = bytes_of(l) * self.block as usize;
            let home = if uniform && big && fits {
                taken += bytes_of(l);
                Home::Copy
            } else if !uniform && big && taken + slices <= MAX_SHARED_BYTES {
                taken += slices;
                Home::Slice
            } else {
                Home::Private
            };
            homes.insert(l, home);
        }
        let mut zero_shared = Vec::new();
        let lens: HashMap<LocalId, usize> = used.iter().map(|&l| (l, len_of(l))).collect();
        for l in used {
            let d = &self.k.locals[l.0 as usize];
            let ety = self.cx.local_ty(d.ty);
            let elems = lens[&l];
            let len = u32::try_from(elems)
                .map_err(|_| self.unsupported(format!("scratch array %l{} is too long", l.0)))?;
            let aty = ety.array_type(len);
            let bytes = elems * d.ty.size_bytes();
            let home = homes.get(&l).copied().unwrap_or(Home::Private);
            if home == Home::Slice {
                let all = ety.array_type(len * self.block);
                self.shared_bytes += bytes.next_multiple_of(16) * self.block as usize;
                let gv = self.shared_array(all, l);
                // This thread's slice starts at tid·len, computed where it
                // dominates every use.
                let tid = self.tid()?;
                let b_ = &self.alloca_b;
                let tid = b_.build_int_z_extend(tid, i64t, "").ll()?;
                let first = b_
                    .build_int_mul(tid, self.cx.i64c(i64::from(len)), "")
                    .ll()?;
                let ptr = gep(b_, ety, gv, first)?;
                self.zero(ptr, bytes)?;
                self.locals.insert(l, Slot { ptr, home });
            } else if home != Home::Private {
                self.shared_bytes += bytes.next_multiple_of(16);
                let ptr = self.shared_array(aty, l);
                self.locals.insert(l, Slot { ptr, home });
                zero_shared.push((ptr, ety, elems));
            } else {
                let ptr = self.alloca_b.build_alloca(aty, &format!("l{}", l.0)).ll()?;
                // Scratch arrays start at zero, as in the interpreter.
                self.zero(ptr, bytes)?;
                self.locals.insert(l, Slot { ptr, home });
            }
        }
        if max_accs > 0 {
            let n = max_accs * nwarps;
            self.shared_bytes += n * 8;
            let aty = i64t.array_type(n as u32);
            let gv = self.cx.module.add_global(
                aty,
                Some(AddressSpace::from(SHARED)),
                &format!("{}.red", self.name),
            );
            gv.set_initializer(&aty.get_undef());
            gv.set_alignment(8);
            gv.set_linkage(inkwell::module::Linkage::Internal);
            self.slots = Some((gv.as_pointer_value(), nwarps));
        }
        if self.shared_bytes > MAX_SHARED_BYTES {
            return Err(self.unsupported(format!(
                "{} bytes of shared memory (at most {MAX_SHARED_BYTES})",
                self.shared_bytes
            )));
        }
        if !zero_shared.is_empty() {
            // The block zeroes its shared scratch arrays together.
            for (ptr, ety, len) in zero_shared {
                let tid = self.tid()?;
                let tid = self.cx.b.build_int_z_extend(tid, i64t, "").ll()?;
                self.strided_loop(tid, len as i64, i64::from(self.block), |g, i| {
                    let at = gep(&g.cx.b, ety, ptr, i)?;
                    g.cx.b.build_store(at, ety.const_zero()).ll()?;
                    Ok(())
                })?;
            }
            self.barrier()?;
        }
        Ok(())
    }

    /// A shared-memory array of type `aty` for scratch array `l`.
    fn shared_array(&self, aty: inkwell::types::ArrayType<'ctx>, l: LocalId) -> PointerValue<'ctx> {
        let gv = self.cx.module.add_global(
            aty,
            Some(AddressSpace::from(SHARED)),
            &format!("{}.l{}", self.name, l.0),
        );
        gv.set_initializer(&aty.get_undef());
        gv.set_alignment(16);
        gv.set_linkage(inkwell::module::Linkage::Internal);
        gv.as_pointer_value()
    }

    /// Zeroes `bytes` bytes at `ptr`, this thread alone.
    fn zero(&self, ptr: PointerValue<'ctx>, bytes: usize) -> Result<()> {
        let ctx = self.cx.ctx;
        self.cx
            .b
            .build_memset(
                ptr,
                4,
                ctx.i8_type().const_zero(),
                self.cx.i64c(bytes as i64),
            )
            .ll()?;
        Ok(())
    }

    /// `for (i = first; i < end; i += step) f(i)` for a per-thread `first`.
    fn strided_loop(
        &mut self,
        first: IntValue<'ctx>,
        end: i64,
        step: i64,
        mut f: impl FnMut(&mut Self, IntValue<'ctx>) -> Result<()>,
    ) -> Result<()> {
        let ctx = self.cx.ctx;
        let endv = self.cx.i64c(end);
        let pre = self.cur()?;
        let body = ctx.append_basic_block(self.f, "strided");
        let exit = ctx.append_basic_block(self.f, "strided.end");
        let any = self.cx.icmp(IntPredicate::ULT, first, endv)?;
        self.cx.b.build_conditional_branch(any, body, exit).ll()?;
        self.cx.b.position_at_end(body);
        let i = self.cx.b.build_phi(ctx.i64_type(), "i").ll()?;
        let iv = i.as_basic_value().into_int_value();
        f(self, iv)?;
        let next = self.cx.b.build_int_add(iv, self.cx.i64c(step), "").ll()?;
        let more = self.cx.icmp(IntPredicate::ULT, next, endv)?;
        let latch = self.cur()?;
        self.cx.b.build_conditional_branch(more, body, exit).ll()?;
        i.add_incoming(&[(&first, pre), (&next, latch)]);
        self.cx.b.position_at_end(exit);
        Ok(())
    }

    fn cur(&self) -> Result<BasicBlock<'ctx>> {
        self.cx
            .b
            .get_insert_block()
            .ok_or_else(|| GpuError::Llvm("builder is not positioned".into()))
    }

    /// `__syncthreads()`; forgets every recorded access.
    fn barrier(&mut self) -> Result<()> {
        if self.warp0 {
            return Err(GpuError::Llvm(format!(
                "{}: a barrier inside a warp-0 run",
                self.name
            )));
        }
        self.cx.intrinsic_void("llvm.nvvm.barrier0", &[])?;
        self.pending.clear();
        self.copies.clear();
        self.stats.barriers += 1;
        Ok(())
    }

    /// `__syncwarp()` on warp 0 in a warp-0 run; forgets warp 0's
    /// accesses to shared copies since the last one.
    fn warp_sync(&mut self) -> Result<()> {
        if !self.warp0 {
            return Err(GpuError::Llvm(format!(
                "{}: a warp sync outside a warp-0 run",
                self.name
            )));
        }
        let all = self.cx.i32c(-1);
        self.cx
            .intrinsic_void("llvm.nvvm.bar.warp.sync", &[all.into()])?;
        for log in self.copies.values_mut() {
            log.unsynced_read = Elems::default();
            log.unsynced_written = Elems::default();
        }
        Ok(())
    }

    /// What an access to element `e` (`None`: any) of shared copy `l` by
    /// the threads running the current code must wait for (see *Shared
    /// copies*).
    fn copy_wait(&self, l: LocalId, e: Option<i64>, write: bool) -> Result<Wait> {
        let Some(log) = self.copies.get(&l) else {
            return Ok(Wait::Nothing);
        };
        if self.warp0 {
            if !write {
                return Ok(Wait::Nothing);
            }
            if log.block_read.hits(e) || log.block_written.hits(e) {
                // The run's branch waits for the block (see `run`).
                return Err(GpuError::Llvm(format!(
                    "{}: warp 0 stores to shared copy %l{} the block may still use",
                    self.name, l.0
                )));
            }
            let busy = log.unsynced_read.hits(e) || log.unsynced_written.hits(e);
            return Ok(if busy { Wait::WarpSync } else { Wait::Nothing });
        }
        let busy = if write {
            log.block_read.hits(e)
                || log.block_written.hits(e)
                || log.warp_read.hits(e)
                || log.warp_written.hits(e)
        } else {
            log.warp_written.hits(e)
        };
        Ok(if busy { Wait::Barrier } else { Wait::Nothing })
    }

    /// Logs an access to element `e` (`None`: any) of shared copy `l` by
    /// the threads running the current code; `both`: as the whole
    /// block's and as warp 0's (a loop body that may hold warp-0 runs).
    fn copy_log(&mut self, l: LocalId, e: Option<i64>, write: bool, both: bool) {
        let warp0 = self.warp0;
        let log = self.copies.entry(l).or_default();
        if !warp0 {
            if write {
                log.block_written.add(e);
            } else {
                log.block_read.add(e);
            }
        }
        if warp0 || both {
            if write {
                log.warp_written.add(e);
                log.unsynced_written.add(e);
            } else {
                log.warp_read.add(e);
                log.unsynced_read.add(e);
            }
        }
    }

    /// Waits as `accesses` (shared copy, element, store) need (the
    /// strongest wait of them), then logs them (see *Shared copies*).
    fn copy_order(&mut self, accesses: &[(LocalId, Option<i64>, bool)], both: bool) -> Result<()> {
        let mut wait = Wait::Nothing;
        for &(l, e, write) in accesses {
            wait = wait.max(self.copy_wait(l, e, write)?);
        }
        match wait {
            Wait::Nothing => {}
            Wait::WarpSync => self.warp_sync()?,
            Wait::Barrier => self.barrier()?,
        }
        for &(l, e, write) in accesses {
            self.copy_log(l, e, write, both);
        }
        Ok(())
    }

    /// Every shared-copy access of `body`, at any element, without
    /// repeats: (copy, `None`, store).
    fn copy_accesses(&self, body: &[Stmt]) -> Vec<(LocalId, Option<i64>, bool)> {
        let mut out = Vec::new();
        let mut add = |l: LocalId, write: bool| {
            if self.is_copy(l) && !out.contains(&(l, None, write)) {
                out.push((l, None, write));
            }
        };
        walk_exprs(body, &mut |e| {
            if let Expr::LocalLoad { local, .. } = e {
                add(*local, false);
            }
        });
        walk_stmts(body, &mut |s| {
            if let Stmt::LocalStore { local, .. } = s {
                add(*local, true);
            }
        });
        out
    }

    /// The element `ix` selects when every loop index in it is a
    /// constant (an unrolled loop's), else `None`.
    fn const_index(&self, ix: &Index) -> Option<i64> {
        let mut at = ix.offset;
        for &(v, c) in &ix.terms {
            let x = self.loops.get(&v)?.get_sign_extended_constant()?;
            at = at.checked_add(c.checked_mul(x)?)?;
        }
        Some(at)
    }

    /// Records `accesses`, with a barrier first if one conflicts with an
    /// access recorded since the last barrier.
    fn order(&mut self, accesses: &[Access]) -> Result<()> {
        let conflict = accesses
            .iter()
            .any(|a| self.pending.iter().any(|p| conflict(p, a)));
        if conflict {
            self.barrier()?;
        }
        self.pending.extend(accesses.iter().copied());
        Ok(())
    }

    fn is_shared(&self, l: LocalId) -> bool {
        self.locals.get(&l).is_some_and(|s| s.home == Home::Shared)
    }

    /// Whether scratch array `l` is a shared copy (see *Shared copies*).
    fn is_slice(&self, l: LocalId) -> bool {
        self.locals.get(&l).is_some_and(|s| s.home == Home::Slice)
    }

    fn is_copy(&self, l: LocalId) -> bool {
        self.locals.get(&l).is_some_and(|s| s.home == Home::Copy)
    }

    /// The shared-memory loads of `e`, made by every thread.
    fn uniform_loads(&self, e: &Expr, out: &mut Vec<Access>) {
        e.walk(&mut |x| match x {
            Expr::Load { buf, .. } => out.push(Access {
                mem: Mem::Buf(*buf),
                write: false,
                owner: Owner::All,
            }),
            Expr::LocalLoad { local, .. } if self.is_shared(*local) => out.push(Access {
                mem: Mem::Local(*local),
                write: false,
                owner: Owner::All,
            }),
            _ => {}
        });
    }

    /// The shared-memory accesses of one uniform statement (not a loop).
    fn uniform_accesses(&self, s: &Stmt) -> Vec<Access> {
        let mut out = Vec::new();
        if let Some(v) = s.value() {
            self.uniform_loads(v, &mut out);
        }
        match s {
            Stmt::Store { buf, .. } => out.push(Access {
                mem: Mem::Buf(*buf),
                write: true,
                owner: Owner::Thread0,
            }),
            Stmt::LocalStore { local, .. } if self.is_shared(*local) => out.push(Access {
                mem: Mem::Local(*local),
                write: true,
                owner: Owner::Thread0,
            }),
            _ => {}
        }
        out
    }

    /// The shared-memory accesses of a distributed loop.
    fn lane_accesses(&self, j: VarId, extent: usize, w: usize, body: &[Stmt]) -> Vec<Access> {
        let mut out = Vec::new();
        let mut add = |mem: Mem, ix: &Index, write: bool| {
            out.push(Access {
                mem,
                write,
                owner: owner(ix, j, extent, w),
            });
        };
        for s in body {
            if let Some(v) = s.value() {
                v.walk(&mut |e| match e {
                    Expr::Load { buf, index } => add(Mem::Buf(*buf), index, false),
                    Expr::LocalLoad { local, index } if self.is_shared(*local) => {
                        add(Mem::Local(*local), index, false);
                    }
                    _ => {}
                });
            }
            match s {
                Stmt::Store { buf, index, .. } => add(Mem::Buf(*buf), index, true),
                Stmt::LocalStore { local, index, .. } if self.is_shared(*local) => {
                    add(Mem::Local(*local), index, true);
                }
                _ => {}
            }
        }
        out
    }

    /// Every shared-memory access `body` may make in uniform context, its
    /// lists cut into runs (see *Warp-0 runs*) when `cut`.
    fn summary(&self, body: &[Stmt], sc: &mut Scopes, out: &mut Vec<Access>, cut: bool) {
        sc.push();
        if cut {
            for seg in self.plan(body, sc) {
                match seg {
                    Seg::Stmt(i) => self.summary_stmt(&body[i], sc, out, true),
                    Seg::Run { start, end, warp0 } => {
                        let run = &body[start..end];
                        for s in run {
                            self.summary_stmt(s, sc, out, false);
                        }
                        if warp0.is_some_and(|h| h.slots(self.k) > 0) {
                            out.extend(slot_accesses(run));
                        }
                    }
                }
            }
        } else {
            for s in body {
                self.summary_stmt(s, sc, out, false);
            }
        }
        sc.pop();
    }

    /// Every shared-memory access statement `s` may make in uniform
    /// context (see [`Self::summary`]).
    fn summary_stmt(&self, s: &Stmt, sc: &mut Scopes, out: &mut Vec<Access>, cut: bool) {
        match s {
            Stmt::Loop {
                var,
                extent,
                kind,
                body,
            } => {
                if *kind == LoopKind::Vector
                    && let Ok(d) =
                        distribute(self.p, self.k, *var, *extent, body, &|v| sc.defined(v))
                {
                    out.extend(self.lane_accesses(*var, *extent, d.width, body));
                } else {
                    self.summary(body, sc, out, cut);
                }
            }
            Stmt::Set { var, .. } => {
                out.extend(self.uniform_accesses(s));
                sc.set(*var);
            }
            _ => out.extend(self.uniform_accesses(s)),
        }
    }

    /// Whether `s`, in uniform context, holds a distributed loop.
    fn holds_distributed(&self, s: &Stmt, sc: &mut Scopes) -> bool {
        match s {
            Stmt::Loop {
                var,
                extent,
                kind,
                body,
            } => {
                if *kind == LoopKind::Vector
                    && distribute(self.p, self.k, *var, *extent, body, &|v| sc.defined(v)).is_ok()
                {
                    return true;
                }
                sc.push();
                let mut hit = false;
                for s in body {
                    if self.holds_distributed(s, sc) {
                        hit = true;
                        break;
                    }
                    if let Stmt::Set { var, .. } = s {
                        sc.set(*var);
                    }
                }
                sc.pop();
                hit
            }
            Stmt::Gemm(_) => true,
            Stmt::Set { .. } | Stmt::Store { .. } | Stmt::LocalStore { .. } => false,
        }
    }

    /// A uniform statement list cut into runs and the statements between
    /// (see *Warp-0 runs*); `scopes` as at the list's start (opened).
    fn plan(&self, body: &[Stmt], scopes: &Scopes) -> Vec<Seg> {
        let mut sc = scopes.clone();
        let mut out = Vec::new();
        let mut i = 0;
        while i < body.len() {
            let start = i;
            let mut seen: HashSet<Access> = HashSet::new();
            while let Some(s) = body.get(i) {
                if self.holds_distributed(s, &mut sc.clone()) {
                    break;
                }
                let mut acc = Vec::new();
                self.summary_stmt(s, &mut sc.clone(), &mut acc, false);
                let acc: HashSet<Access> = acc.into_iter().collect();
                if conflicting(&acc, &acc) || conflicting(&seen, &acc) {
                    break;
                }
                seen.extend(acc);
                if let Stmt::Set { var, .. } = s {
                    sc.set(*var);
                }
                i += 1;
            }
            if i == start {
                if let Stmt::Set { var, .. } = &body[i] {
                    sc.set(*var);
                }
                out.push(Seg::Stmt(i));
                i += 1;
            } else {
                let run = &body[start..i];
                out.push(Seg::Run {
                    start,
                    end: i,
                    warp0: self.delegate(run),
                });
            }
        }
        out
    }

    /// What run `run` hands over if it executes on warp 0, or `None` if it
    /// stays on every thread (the rule is in *Warp-0 runs*).
    fn delegate(&self, run: &[Stmt]) -> Option<HandOver> {
        if self.block <= 32 {
            return None;
        }
        let ops = scalar_ops(run);
        if ops == 0 {
            return None;
        }
        let (var_reads, local_reads) = reads(run);
        let outside = |all: Option<&usize>, inside: usize| all.copied().unwrap_or(0) > inside;
        let mut h = HandOver::default();
        let mut set: HashSet<VarId> = HashSet::new();
        let mut written: HashSet<LocalId> = HashSet::new();
        walk_stmts(run, &mut |s| match s {
            Stmt::Set { var, .. } => {
                set.insert(*var);
            }
            Stmt::LocalStore { local, .. } => {
                written.insert(*local);
            }
            _ => {}
        });
        for v in set {
            if outside(
                self.var_reads.get(&v),
                var_reads.get(&v).copied().unwrap_or(0),
            ) {
                h.vars.push(v);
            }
        }
        // Shared copies read outside are not handed over, but the block
        // waits for them as for slots.
        let mut copies_out = false;
        for l in written {
            let read_outside = outside(
                self.local_reads.get(&l),
                local_reads.get(&l).copied().unwrap_or(0),
            );
            if self.is_copy(l) {
                copies_out |= read_outside;
            } else if !self.is_shared(l) && read_outside {
                h.locals.push(l);
            }
        }
        h.vars.sort_unstable();
        h.locals.sort_unstable();
        let slots = h.slots(self.k);
        let hands = slots > 0 || copies_out;
        (!hands || (ops >= WARP_RUN_MIN_OPS && slots <= WARP_RUN_MAX_SLOTS)).then_some(h)
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<()> {
        self.scopes.push();
        if self.place == Place::Uniform && !self.in_run {
            for seg in self.plan(body, &self.scopes) {
                match seg {
                    Seg::Stmt(i) => self.stmt(&body[i])?,
                    Seg::Run { start, end, warp0 } => self.run(&body[start..end], warp0)?,
                }
            }
        } else {
            for s in body {
                self.stmt(s)?;
            }
        }
        self.scopes.pop();
        Ok(())
    }

    /// A run of scalar statements, on every thread or on warp 0 (see
    /// *Warp-0 runs*).
    fn run(&mut self, run: &[Stmt], warp0: Option<HandOver>) -> Result<()> {
        let slots = match &warp0 {
            Some(h) if h.slots(self.k) > 0 => self.handover_slots(run, h.slots(self.k))?,
            _ => None,
        };
        let handover = match warp0 {
            // No room for its slots: it stays on every thread.
            Some(h) if h.slots(self.k) == 0 || slots.is_some() => h,
            _ => {
                self.in_run = true;
                for s in run {
                    self.stmt(s)?;
                }
                self.in_run = false;
                return Ok(());
            }
        };
        // Every access of the run (and its slot write) is recorded before
        // the branch, so a barrier it needs is placed in uniform control
        // flow; the run conflicts with none of its own.
        let mut acc = Vec::new();
        let mut sc = self.scopes.clone();
        for s in run {
            self.summary_stmt(s, &mut sc, &mut acc, false);
        }
        if slots.is_some() {
            acc.extend(slot_accesses(run).into_iter().filter(|a| a.write));
        }
        self.order(&acc)?;
        // Warp 0 stores to a shared copy only once the whole block is
        // done with it.
        let block_busy = self
            .copy_accesses(run)
            .iter()
            .any(|&(l, _, write)| write && self.copies.get(&l).is_some_and(CopyLog::block_busy));
        if block_busy {
            self.barrier()?;
        }
        let tid = self.tid()?;
        let first = self.cx.icmp(IntPredicate::ULT, tid, self.cx.i32c(32))?;
        let then = self.cx.ctx.append_basic_block(self.f, "warp.run");
        let cont = self.cx.ctx.append_basic_block(self.f, "warp.run.end");
        self.cx.b.build_conditional_branch(first, then, cont).ll()?;
        self.cx.b.position_at_end(then);
        self.in_run = true;
        self.warp0 = true;
        for s in run {
            self.stats
                .warp0_stmts
                .insert(std::ptr::from_ref(s) as usize);
            self.stmt(s)?;
        }
        if let Some(at) = slots {
            // All lanes hold the same values: lane 0 writes them.
            self.on_thread0(|g| g.hand_over(&handover, at, true))?;
        }
        self.in_run = false;
        self.warp0 = false;
        self.cx.b.build_unconditional_branch(cont).ll()?;
        // Keep the run's blocks between its branch and its join.
        cont.move_after(self.cur()?)
            .map_err(|()| GpuError::Llvm("moving a block".into()))?;
        self.cx.b.position_at_end(cont);
        if let Some(at) = slots {
            self.barrier()?;
            let read: Vec<Access> = slot_accesses(run)
                .into_iter()
                .filter(|a| !a.write)
                .collect();
            self.order(&read)?;
            self.hand_over(&handover, at, false)?;
        }
        Ok(())
    }

    /// The shared-memory slots of warp-0 run `run` (`n` of them), made on
    /// first use; `None` when they would not fit in shared memory.
    fn handover_slots(&mut self, run: &[Stmt], n: usize) -> Result<Option<PointerValue<'ctx>>> {
        let key = run_key(run);
        if let Some(&(at, m)) = self.handover.get(&key) {
            return if m == n {
                Ok(Some(at))
            } else {
                Err(GpuError::Llvm("a run planned two ways".into()))
            };
        }
        if self.shared_bytes + n * 8 > MAX_SHARED_BYTES {
            return Ok(None);
        }
        self.shared_bytes += n * 8;
        let i64t = self.cx.ctx.i64_type();
        let aty = i64t.array_type(n as u32);
        let gv = self.cx.module.add_global(
            aty,
            Some(AddressSpace::from(SHARED)),
            &format!("{}.pub{}", self.name, self.handover.len()),
        );
        gv.set_initializer(&aty.get_undef());
        gv.set_alignment(8);
        gv.set_linkage(inkwell::module::Linkage::Internal);
        let at = gv.as_pointer_value();
        self.handover.insert(key, (at, n));
        Ok(Some(at))
    }

    /// Copies what `h` lists into its slots at `at` (`put`), or back out
    /// of them.
    fn hand_over(&mut self, h: &HandOver, at: PointerValue<'ctx>, put: bool) -> Result<()> {
        let i64t = self.cx.ctx.i64_type();
        let mut items: Vec<(BasicTypeEnum<'ctx>, PointerValue<'ctx>)> = Vec::new();
        for v in &h.vars {
            let ty = self.cx.ty(self.k.vars[v.0 as usize].ty);
            items.push((ty, self.var_slot(*v)?));
        }
        for l in &h.locals {
            let d = &self.k.locals[l.0 as usize];
            let ety = self.cx.local_ty(d.ty);
            let base =
                self.locals.get(l).map(|s| s.ptr).ok_or_else(|| {
                    GpuError::Llvm(format!("scratch array %l{} has no storage", l.0))
                })?;
            for e in 0..d.len {
                items.push((ety, gep(&self.cx.b, ety, base, self.cx.i64c(e as i64))?));
            }
        }
        for (i, (ty, reg)) in items.into_iter().enumerate() {
            let slot = gep(&self.cx.b, i64t.into(), at, self.cx.i64c(i as i64))?;
            let (from, to) = if put { (reg, slot) } else { (slot, reg) };
            let x = self.cx.b.build_load(ty, from, "").ll()?;
            self.cx.b.build_store(to, x).ll()?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        match s {
            Stmt::Loop {
                var,
                extent,
                kind,
                body,
            } => {
                let addr = std::ptr::from_ref(s) as usize;
                if let Some(gr) = &self.group {
                    if let Some(sp) = gr.plan.loops.get(&addr) {
                        let sp = sp.clone();
                        return self.lane_loop(*var, *extent, body, &sp);
                    }
                    if let Some(&stride) = gr.plan.split.get(&addr) {
                        return self.split_loop(*var, *extent, body, stride);
                    }
                    if gr.plan.transposed.contains(&addr) {
                        return self.transposed_loop(*var, *extent, body);
                    }
                }
                if self.place == Place::Uniform && *kind == LoopKind::Vector {
                    let sc = &self.scopes;
                    if let Ok(d) =
                        distribute(self.p, self.k, *var, *extent, body, &|v| sc.defined(v))
                    {
                        return self.distributed(*var, *extent, body, &d);
                    }
                }
                self.serial_loop(*var, *extent, body)
            }
            Stmt::Set { var, value } => {
                if self.place == Place::Uniform {
                    let acc = self.uniform_accesses(s);
                    self.order(&acc)?;
                }
                let x = self.expr(value)?;
                let slot = self.var_slot(*var)?;
                self.cx.b.build_store(slot, x).ll()?;
                self.scopes.set(*var);
                Ok(())
            }
            Stmt::Store { buf, index, value } => {
                if self.place == Place::Uniform {
                    let acc = self.uniform_accesses(s);
                    self.order(&acc)?;
                }
                let x = self.expr(value)?;
                let d = self.p.buffer(*buf).dtype();
                let x = self.cx.to_storage(d, x)?;
                if let Some(ch) = &mut self.chunk
                    && index.coeff(ch.j) != 0
                {
                    let key = (*buf, index.normalized());
                    let lane = ch.lane;
                    let width = ch.width;
                    match ch.stores.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v[lane] = Some(x),
                        None => {
                            let mut v = vec![None; width];
                            v[lane] = Some(x);
                            ch.stores.push((key, v));
                        }
                    }
                    return Ok(());
                }
                let at = self.elem_ptr(*buf, index)?;
                if self.place == Place::Uniform {
                    return self.store_t0(at, x, ty_bytes(d));
                }
                self.lane_order(*buf, true)?;
                if let Some(gr) = &self.group {
                    // A spread loop's lane stores its own elements, as does
                    // a lane running its own iteration of a split loop;
                    // lane 0 stores for the group elsewhere.
                    let mut ok = gr.valid;
                    if gr.spreading.is_none() && gr.split_vars.is_empty() {
                        let lane0 = self.cx.icmp(IntPredicate::EQ, gr.lane, self.cx.i64c(0))?;
                        ok = self.cx.b.build_and(ok, lane0, "").ll()?;
                    }
                    return self.store_if(ok, at, x, ty_bytes(d));
                }
                let st = self.cx.b.build_store(at, x).ll()?;
                set_align(st, ty_bytes(d))
            }
            Stmt::LocalStore {
                local,
                index,
                value,
            } => {
                let shared = self.is_shared(*local);
                if self.place == Place::Uniform {
                    let acc = self.uniform_accesses(s);
                    self.order(&acc)?;
                }
                let x = self.expr(value)?;
                let t = self.k.locals[local.0 as usize].ty;
                let x = self.cx.to_local(t, x)?;
                if self.is_copy(*local) {
                    // After the value's reads: a store waits for them.
                    let e = self.const_index(index);
                    self.copy_order(&[(*local, e, true)], false)?;
                }
                let at = self.local_ptr(*local, index)?;
                if shared && self.place == Place::Uniform {
                    let align = self.k.locals[local.0 as usize].ty.size_bytes() as u32;
                    return self.store_t0(at, x, align);
                }
                let st = self.cx.b.build_store(at, x).ll()?;
                if self.is_copy(*local) || self.is_slice(*local) {
                    // Not forwarded to the loads that read it back: see
                    // *Shared copies*.
                    st.set_volatile(true).ll()?;
                }
                Ok(())
            }
            Stmt::Gemm(_) => Err(GpuError::Llvm(
                "a matrix product inside a statement launch".into(),
            )),
        }
    }

    /// `*at = x` by thread 0 alone (`align`: the store's alignment).
    ///
    /// In a warp-0 run the store is masked (`llvm.masked.store`, mask
    /// `tid == 0`) rather than branched around: the optimizer sinks into
    /// such a branch everything only its store uses — for the Sinkhorn
    /// backward, the whole cotangent chain — while the shared-copy loads
    /// that chain reads cannot follow it past warp syncs, so their values
    /// would stay live across everything between. Warp 0's lanes run in
    /// step, so the branch saved nothing there.
    fn store_t0(
        &mut self,
        at: PointerValue<'ctx>,
        x: BasicValueEnum<'ctx>,
        align: u32,
    ) -> Result<()> {
        if !self.warp0 {
            return self.on_thread0(|g| {
                let st = g.cx.b.build_store(at, x).ll()?;
                set_align(st, align)
            });
        }
        let tid = self.tid()?;
        let is0 = self.cx.icmp(IntPredicate::EQ, tid, self.cx.i32c(0))?;
        let zero = self.cx.i32c(0);
        let vty = vec_of(x.get_type(), 1)
            .ok_or_else(|| GpuError::Llvm("a masked store of a pointer".into()))?;
        let v = self
            .cx
            .b
            .build_insert_element(vty.get_undef(), x, zero, "")
            .ll()?;
        let mty = self.cx.ctx.bool_type().vec_type(1);
        let mask = self
            .cx
            .b
            .build_insert_element(mty.get_undef(), is0, zero, "")
            .ll()?;
        let f = inkwell::intrinsics::Intrinsic::find("llvm.masked.store")
            .and_then(|i| i.get_declaration(self.cx.module, &[vty.into(), at.get_type().into()]))
            .ok_or_else(|| GpuError::Llvm("no intrinsic llvm.masked.store".into()))?;
        let align = self.cx.i32c(align as i32);
        self.cx
            .b
            .build_call(f, &[v.into(), at.into(), align.into(), mask.into()], "")
            .ll()?;
        Ok(())
    }

    /// In a lane group, a warp sync before an access to `buf` when
    /// another lane may have made a conflicting one since the last (see
    /// `launch`, *Lane groups*).
    fn lane_order(&mut self, buf: BufferId, write: bool) -> Result<()> {
        let Some(gr) = &mut self.group else {
            return Ok(());
        };
        if !gr.exchanged.contains(&buf) {
            return Ok(());
        }
        let conflict = if write { gr.read || gr.wrote } else { gr.wrote };
        if conflict && !gr.quiet {
            gr.read = false;
            gr.wrote = false;
            let all = self.cx.i32c(-1);
            self.cx
                .intrinsic_void("llvm.nvvm.bar.warp.sync", &[all.into()])?;
        }
        if let Some(gr) = &mut self.group {
            if write {
                gr.wrote = true;
            } else {
                gr.read = true;
            }
        }
        Ok(())
    }

    /// `*at = x` where `ok` holds.
    fn store_if(
        &mut self,
        ok: IntValue<'ctx>,
        at: PointerValue<'ctx>,
        x: BasicValueEnum<'ctx>,
        align: u32,
    ) -> Result<()> {
        let then = self.cx.ctx.append_basic_block(self.f, "st");
        let cont = self.cx.ctx.append_basic_block(self.f, "st.end");
        self.cx.b.build_conditional_branch(ok, then, cont).ll()?;
        self.cx.b.position_at_end(then);
        let st = self.cx.b.build_store(at, x).ll()?;
        set_align(st, align)?;
        self.cx.b.build_unconditional_branch(cont).ll()?;
        self.cx.b.position_at_end(cont);
        Ok(())
    }

    /// `(lane / stride) mod extent` for this lane (`i64`).
    fn lane_coordinate(&self, stride: usize, extent: usize) -> Result<IntValue<'ctx>> {
        let lane = match &self.group {
            Some(gr) => gr.lane,
            None => {
                return Err(GpuError::Llvm(
                    "a lane coordinate outside a lane group".into(),
                ));
            }
        };
        let b = &self.cx.b;
        let q = b
            .build_int_unsigned_div(lane, self.cx.i64c(stride as i64), "")
            .ll()?;
        b.build_int_unsigned_rem(q, self.cx.i64c(extent as i64), "")
            .ll()
    }

    /// A split serial loop: this lane runs iteration `(lane / stride) mod
    /// extent` alone (see `launch`, *Lane groups*).
    fn split_loop(
        &mut self,
        var: VarId,
        extent: usize,
        body: &[Stmt],
        stride: usize,
    ) -> Result<()> {
        let at = self.lane_coordinate(stride, extent)?;
        self.loops.insert(var, at);
        if let Some(gr) = &mut self.group {
            gr.split_vars.push(var);
        }
        self.stmts(body)?;
        if let Some(gr) = &mut self.group {
            gr.split_vars.pop();
        }
        self.loops.remove(&var);
        Ok(())
    }

    /// A vector loop spread over a lane group: lane `l` runs iterations
    /// `l, l + L, …` below its extent (unrolled), or in a split loop iteration `(l /
    /// stride) mod extent`, then the lanes combine the accumulators (see
    /// `launch`, *Lane groups*).
    fn lane_loop(&mut self, j: VarId, extent: usize, body: &[Stmt], sp: &Spread) -> Result<()> {
        let accs = &sp.accs;
        let (lanes, lane) = match &self.group {
            Some(gr) => (gr.plan.lanes, gr.lane),
            None => return Err(GpuError::Llvm("a spread loop outside a lane group".into())),
        };
        let rounds = if sp.stride.is_some() {
            1
        } else {
            extent.div_ceil(lanes)
        };
        if rounds > UNROLL_MAX_EXTENT {
            return Err(self.unsupported(format!("a spread loop of {extent} iterations")));
        }
        let partials = self.partials(accs)?;
        let quiet = sp.stride.is_none() && self.quiet_loop(body)?;
        for r in 0..rounds {
            let at = match sp.stride {
                Some(stride) => self.lane_coordinate(stride, extent)?,
                None => self
                    .cx
                    .b
                    .build_int_add(lane, self.cx.i64c((r * lanes) as i64), "")
                    .ll()?,
            };
            self.loops.insert(j, at);
            if let Some(gr) = &mut self.group {
                gr.spreading = Some((j, r as i64));
            }
            if sp.stride.is_none() && (r + 1) * lanes > extent {
                // The last round of a loop `lanes` does not divide: the
                // lanes past its end skip it.
                let ok = self
                    .cx
                    .b
                    .build_int_compare(IntPredicate::ULT, at, self.cx.i64c(extent as i64), "")
                    .ll()?;
                let then = self.cx.ctx.append_basic_block(self.f, "lane.round");
                let cont = self.cx.ctx.append_basic_block(self.f, "lane.round.end");
                self.cx.b.build_conditional_branch(ok, then, cont).ll()?;
                self.cx.b.position_at_end(then);
                self.stmts(body)?;
                self.cx.b.build_unconditional_branch(cont).ll()?;
                self.cx.b.position_at_end(cont);
            } else {
                self.stmts(body)?;
            }
        }
        if let Some(gr) = &mut self.group {
            gr.spreading = None;
            gr.quiet &= !quiet;
        }
        self.loops.remove(&j);
        for (a, slot) in accs.iter().zip(partials) {
            self.redirect.remove(&a.var);
            let mut x = self.cx.b.build_load(self.cx.ty(a.ty), slot, "").ll()?;
            // The lanes that differ in this loop's bits: all of them, or
            // `stride · [0, extent)` in a split loop.
            let (low, mut m) = match sp.stride {
                Some(stride) => (stride, stride * extent / 2),
                None => (1, lanes / 2),
            };
            while m >= low {
                let other = self.shfl_bfly(a.ty, x, m as i32)?;
                x = self.cx.binary(&a.op.op(), a.ty, x, other)?;
                m /= 2;
            }
            let slot = self.var_slot(a.var)?;
            let before = self.cx.b.build_load(self.cx.ty(a.ty), slot, "").ll()?;
            let after = self.cx.binary(&a.op.op(), a.ty, before, x)?;
            self.cx.b.build_store(slot, after).ll()?;
        }
        Ok(())
    }

    /// A transposed serial loop over `lines` lines (see `launch`,
    /// `transposable`): this lane runs its own line's variables; each
    /// vector loop runs for every line, this lane its own element.
    fn transposed_loop(&mut self, i: VarId, lines: usize, body: &[Stmt]) -> Result<()> {
        let (lane, plan) = match &self.group {
            Some(gr) => (gr.lane, gr.plan.clone()),
            None => {
                return Err(GpuError::Llvm(
                    "a transposed loop outside a lane group".into(),
                ));
            }
        };
        let own = line_vars(body);
        for s in body {
            let addr = std::ptr::from_ref(s) as usize;
            match s {
                Stmt::Set { .. } => {
                    self.loops.insert(i, lane);
                    self.stmt(s)?;
                }
                Stmt::Loop { var, body: b, .. } => {
                    let sp = plan.loops.get(&addr).cloned().ok_or_else(|| {
                        GpuError::Llvm("a transposed loop's vector loop is not spread".into())
                    })?;
                    self.transposed_lines(i, lines, *var, b, &sp.accs, &own)?;
                }
                _ => {
                    return Err(GpuError::Llvm(
                        "a transposed loop holds more than variables and vector loops".into(),
                    ));
                }
            }
        }
        self.loops.remove(&i);
        Ok(())
    }

    /// One vector loop of a transposed loop, for every line `r`: this
    /// lane runs element `lane` with line `r`'s values of `own` shuffled
    /// from lane `r`, each accumulator into a partial of its own per line;
    /// a reduce-scatter then leaves line `lane`'s totals on this lane.
    fn transposed_lines(
        &mut self,
        i: VarId,
        lines: usize,
        j: VarId,
        body: &[Stmt],
        accs: &[Acc],
        own: &HashSet<VarId>,
    ) -> Result<()> {
        let lane = match &self.group {
            Some(gr) => gr.lane,
            None => {
                return Err(GpuError::Llvm(
                    "a transposed loop outside a lane group".into(),
                ));
            }
        };
        let mut reads = HashSet::new();
        walk_exprs(body, &mut |e| {
            if let Expr::Var(v) = e
                && own.contains(v)
                && !accs.iter().any(|a| a.var == *v)
            {
                reads.insert(*v);
            }
        });
        let mut reads: Vec<VarId> = reads.into_iter().collect();
        reads.sort_unstable_by_key(|v| v.0);
        let mut partials: Vec<Vec<PointerValue<'ctx>>> = Vec::with_capacity(lines);
        self.loops.insert(j, lane);
        if let Some(gr) = &mut self.group {
            gr.spreading = Some((j, 0));
        }
        for r in 0..lines {
            let mut gathered = Vec::with_capacity(reads.len());
            for &v in &reads {
                let ty = self.k.vars[v.0 as usize].ty;
                let slot = self.var_slot(v)?;
                let x = self.cx.b.build_load(self.cx.ty(ty), slot, "").ll()?;
                let x = self.shfl_from(ty, x, r, lines)?;
                let at = self.alloca_b.build_alloca(self.cx.ty(ty), "line").ll()?;
                self.cx.b.build_store(at, x).ll()?;
                gathered.push(at);
            }
            let line = self.partials(accs)?;
            for (&v, &at) in reads.iter().zip(&gathered) {
                self.redirect.insert(v, at);
            }
            self.loops.insert(i, self.cx.i64c(r as i64));
            self.stmts(body)?;
            for v in reads.iter().chain(accs.iter().map(|a| &a.var)) {
                self.redirect.remove(v);
            }
            partials.push(line);
        }
        if let Some(gr) = &mut self.group {
            gr.spreading = None;
        }
        self.loops.remove(&j);
        for (n, a) in accs.iter().enumerate() {
            let mut vals = Vec::with_capacity(lines);
            for line in &partials {
                vals.push(self.cx.b.build_load(self.cx.ty(a.ty), line[n], "").ll()?);
            }
            let total = self.reduce_scatter(a, vals, lane)?;
            let slot = self.var_slot(a.var)?;
            let before = self.cx.b.build_load(self.cx.ty(a.ty), slot, "").ll()?;
            let after = self.cx.binary(&a.op.op(), a.ty, before, total)?;
            self.cx.b.build_store(slot, after).ll()?;
        }
        Ok(())
    }

    /// Before a spread loop: the one warp sync its first access to a
    /// buffer other lanes also touch would need, then the group goes quiet
    /// (see `LaneGroup::quiet`). Whether it went quiet (so the loop's end
    /// turns it back).
    fn quiet_loop(&mut self, body: &[Stmt]) -> Result<bool> {
        let Some(gr) = &self.group else {
            return Ok(false);
        };
        if gr.quiet {
            return Ok(false);
        }
        let (mut write, mut read) = (None, None);
        walk_stmts(body, &mut |s| {
            if let Stmt::Store { buf, .. } = s
                && gr.exchanged.contains(buf)
            {
                write = Some(*buf);
            }
            if let Some(e) = s.value() {
                e.walk(&mut |x| {
                    if let Expr::Load { buf, .. } = x
                        && gr.exchanged.contains(buf)
                    {
                        read = Some(*buf);
                    }
                });
            }
        });
        match (write, read) {
            (Some(b), _) => self.lane_order(b, true)?,
            (None, Some(b)) => self.lane_order(b, false)?,
            (None, None) => {}
        }
        if let Some(gr) = &mut self.group {
            gr.quiet = true;
        }
        Ok(true)
    }

    /// A partial of each accumulator, from its identity, that the
    /// accumulator's updates go to until the redirect is removed.
    fn partials(&mut self, accs: &[Acc]) -> Result<Vec<PointerValue<'ctx>>> {
        let mut out = Vec::with_capacity(accs.len());
        for a in accs {
            let ty = self.cx.ty(a.ty);
            let slot = self.alloca_b.build_alloca(ty, "partial").ll()?;
            let id = self.cx.konst(a.ty, a.op.identity(a.ty));
            self.cx.b.build_store(slot, id).ll()?;
            self.redirect.insert(a.var, slot);
            out.push(slot);
        }
        Ok(out)
    }

    /// Combines `vals` (one per line, a power of two of them) over the
    /// lane group so that lane `l` ends with line `l`'s total: at each
    /// step, on the top bit of the lines left, a lane keeps the half its
    /// own bit names and adds the half its partner sends.
    fn reduce_scatter(
        &mut self,
        a: &Acc,
        mut vals: Vec<BasicValueEnum<'ctx>>,
        lane: IntValue<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>> {
        while vals.len() > 1 {
            let half = vals.len() / 2;
            let bit = self
                .cx
                .b
                .build_and(lane, self.cx.i64c(half as i64), "")
                .ll()?;
            let high = self.cx.icmp(IntPredicate::NE, bit, self.cx.i64c(0))?;
            let mut next = Vec::with_capacity(half);
            for k in 0..half {
                let (lo, hi) = (vals[k], vals[half + k]);
                let send = self.cx.select(high, lo, hi)?;
                let keep = self.cx.select(high, hi, lo)?;
                let got = self.shfl_bfly(a.ty, send, half as i32)?;
                next.push(self.cx.binary(&a.op.op(), a.ty, keep, got)?);
            }
            vals = next;
        }
        Ok(vals[0])
    }

    /// Runs `f` on thread 0 only.
    fn on_thread0(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let tid = self.tid()?;
        let is0 = self.cx.icmp(IntPredicate::EQ, tid, self.cx.i32c(0))?;
        let then = self.cx.ctx.append_basic_block(self.f, "t0");
        let cont = self.cx.ctx.append_basic_block(self.f, "t0.end");
        self.cx.b.build_conditional_branch(is0, then, cont).ll()?;
        self.cx.b.position_at_end(then);
        f(self)?;
        self.cx.b.build_unconditional_branch(cont).ll()?;
        self.cx.b.position_at_end(cont);
        Ok(())
    }

    /// A loop run in order by every thread that reaches it.
    fn serial_loop(&mut self, var: VarId, extent: usize, body: &[Stmt]) -> Result<()> {
        if unrolls(var, extent, body) {
            for i in 0..extent {
                self.loops.insert(var, self.cx.i64c(i as i64));
                self.stmts(body)?;
            }
            self.loops.remove(&var);
            return Ok(());
        }
        if self.place == Place::Uniform {
            // Entering stands for the previous iteration too.
            let mut sc = self.scopes.clone();
            let mut acc = Vec::new();
            self.summary(body, &mut sc, &mut acc, !self.in_run);
            self.order(&acc)?;
            // Outside a run the body may hold warp-0 runs.
            let copies = self.copy_accesses(body);
            self.copy_order(&copies, !self.in_run)?;
        }
        // The previous iteration's accesses stand before the body's.
        let mark = |g: &mut Self| {
            if let Some(gr) = &mut g.group {
                gr.read = true;
                gr.wrote = true;
            }
        };
        mark(self);
        let ctx = self.cx.ctx;
        let pre = self.cur()?;
        let head = ctx.append_basic_block(self.f, "loop");
        let exit = ctx.append_basic_block(self.f, "loop.end");
        self.cx.b.build_unconditional_branch(head).ll()?;
        self.cx.b.position_at_end(head);
        let i = self.cx.b.build_phi(ctx.i64_type(), "i").ll()?;
        let iv = i.as_basic_value().into_int_value();
        self.loops.insert(var, iv);
        self.stmts(body)?;
        let next = self.cx.b.build_int_add(iv, self.cx.i64c(1), "").ll()?;
        let more = self
            .cx
            .icmp(IntPredicate::ULT, next, self.cx.i64c(extent as i64))?;
        let latch = self.cur()?;
        self.cx.b.build_conditional_branch(more, head, exit).ll()?;
        let zero = self.cx.i64c(0);
        i.add_incoming(&[(&zero, pre), (&next, latch)]);
        self.cx.b.position_at_end(exit);
        self.loops.remove(&var);
        mark(self);
        Ok(())
    }

    /// A vector loop spread over the block (see the module documentation).
    fn distributed(&mut self, j: VarId, extent: usize, body: &[Stmt], d: &Dist) -> Result<()> {
        let ctx = self.cx.ctx;
        let i64t = ctx.i64_type();
        let w = d.width;
        let acc = self.lane_accesses(j, extent, w, body);
        self.order(&acc)?;
        // The loop reads shared copies (it cannot write them) at elements
        // that move with it.
        let copies = self.copy_accesses(body);
        self.copy_order(&copies, false)?;
        self.stats.distributed += 1;
        self.stats.vectorized += usize::from(w > 1);
        let partials = self.partials(&d.accs)?;
        let tid = self.tid()?;
        let first = self.cx.b.build_int_z_extend(tid, i64t, "").ll()?;
        let chunks = (extent / w) as i64;
        let step = i64::from(self.block);
        self.place = Place::Lane;
        // The chunk's vector loads: every moving element read before the
        // iteration stores it. One read after the store is the stored
        // value itself, forwarded from the chunk's pending store.
        let mut moving: Vec<Stream> = Vec::new();
        if w > 1 {
            let mut stored: HashSet<Stream> = HashSet::new();
            for s in body {
                if let Some(v) = s.value() {
                    v.walk(&mut |e| {
                        if let Expr::Load { buf, index } = e
                            && index.coeff(j) != 0
                        {
                            let key = (*buf, index.normalized());
                            if !stored.contains(&key) && !moving.contains(&key) {
                                moving.push(key);
                            }
                        }
                    });
                }
                if let Stmt::Store { buf, index, .. } = s
                    && index.coeff(j) != 0
                {
                    stored.insert((*buf, index.normalized()));
                }
            }
        }
        self.strided_loop(first, chunks, step, |g, c| {
            let j0 = g.cx.b.build_int_mul(c, g.cx.i64c(w as i64), "j0").ll()?;
            if w == 1 {
                g.loops.insert(j, j0);
                return g.stmts(body);
            }
            g.loops.insert(j, j0);
            let mut loads = HashMap::new();
            for (buf, ix) in &moving {
                let lanes = g.vector_load(*buf, ix, w)?;
                loads.insert((*buf, ix.clone()), lanes);
            }
            g.chunk = Some(Chunk {
                j,
                width: w,
                lane: 0,
                loads,
                stores: Vec::new(),
            });
            for lane in 0..w {
                let jl = g.cx.b.build_int_add(j0, g.cx.i64c(lane as i64), "").ll()?;
                g.loops.insert(j, jl);
                if let Some(ch) = &mut g.chunk {
                    ch.lane = lane;
                }
                g.stmts(body)?;
            }
            let ch = g
                .chunk
                .take()
                .ok_or_else(|| GpuError::Llvm("lost chunk".into()))?;
            g.loops.insert(j, j0);
            for ((buf, ix), lanes) in ch.stores {
                g.vector_store(buf, &ix, lanes)?;
            }
            Ok(())
        })?;
        self.loops.remove(&j);
        self.place = Place::Uniform;
        for a in &d.accs {
            self.redirect.remove(&a.var);
        }
        if d.accs.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        for (a, slot) in d.accs.iter().zip(partials) {
            parts.push(self.cx.b.build_load(self.cx.ty(a.ty), slot, "").ll()?);
        }
        self.block_reduce(&d.accs, parts)
    }

    /// Combines each thread's partials over the block and folds the
    /// totals into the accumulators (see the module documentation).
    fn block_reduce(&mut self, accs: &[Acc], parts: Vec<BasicValueEnum<'ctx>>) -> Result<()> {
        let ctx = self.cx.ctx;
        let i64t = ctx.i64_type();
        let (slots, nwarps) = self
            .slots
            .ok_or_else(|| GpuError::Llvm("no reduction slots".into()))?;
        let tid = self.tid()?;
        let warp = self
            .cx
            .b
            .build_right_shift(tid, self.cx.i32c(5), false, "warp")
            .ll()?;
        let lane = self.cx.b.build_and(tid, self.cx.i32c(31), "lane").ll()?;
        // Butterfly within each warp: every lane ends with the warp's total.
        let mut warp_totals = Vec::new();
        for (a, mut x) in accs.iter().zip(parts) {
            let mut m = 16;
            while m >= 1 {
                let other = self.shfl_bfly(a.ty, x, m)?;
                x = self.cx.binary(&a.op.op(), a.ty, x, other)?;
                m /= 2;
            }
            warp_totals.push(x);
        }
        // Lane 0 of each warp publishes its total.
        let is0 = self.cx.icmp(IntPredicate::EQ, lane, self.cx.i32c(0))?;
        let then = ctx.append_basic_block(self.f, "red.put");
        let cont = ctx.append_basic_block(self.f, "red.put.end");
        self.cx.b.build_conditional_branch(is0, then, cont).ll()?;
        self.cx.b.position_at_end(then);
        let warp64 = self.cx.b.build_int_z_extend(warp, i64t, "").ll()?;
        for (i, (a, x)) in accs.iter().zip(&warp_totals).enumerate() {
            let at = self
                .cx
                .b
                .build_int_add(warp64, self.cx.i64c((i * nwarps) as i64), "")
                .ll()?;
            let ptr = gep(&self.cx.b, i64t.into(), slots, at)?;
            let bits = self.to_bits64(a.ty, *x)?;
            self.cx.b.build_store(ptr, bits).ll()?;
        }
        self.cx.b.build_unconditional_branch(cont).ll()?;
        self.cx.b.position_at_end(cont);
        self.barrier()?;
        // Every thread combines the warp totals in warp order, so every
        // thread holds the same bits.
        for (i, a) in accs.iter().enumerate() {
            let mut total = self.cx.konst(a.ty, a.op.identity(a.ty));
            for w in 0..nwarps {
                let ptr = gep(
                    &self.cx.b,
                    i64t.into(),
                    slots,
                    self.cx.i64c((i * nwarps + w) as i64),
                )?;
                let bits = self.cx.b.build_load(i64t, ptr, "").ll()?.into_int_value();
                let x = self.of_bits64(a.ty, bits)?;
                total = self.cx.binary(&a.op.op(), a.ty, total, x)?;
            }
            let slot = self.var_slot(a.var)?;
            let before = self.cx.b.build_load(self.cx.ty(a.ty), slot, "").ll()?;
            let after = self.cx.binary(&a.op.op(), a.ty, before, total)?;
            self.cx.b.build_store(slot, after).ll()?;
        }
        // The slots are reused by the next reduction.
        self.barrier()
    }

    /// `shfl.sync.bfly` of a value of type `t` with lane mask `m`.
    fn shfl_bfly(
        &self,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
        m: i32,
    ) -> Result<BasicValueEnum<'ctx>> {
        self.shfl("llvm.nvvm.shfl.sync.bfly.i32", t, x, m, 31)
    }

    /// `shfl.sync.idx` of a value of type `t` from lane `src` of this
    /// lane's group of `lanes` (the segment the operand `c` names).
    fn shfl_from(
        &self,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
        src: usize,
        lanes: usize,
    ) -> Result<BasicValueEnum<'ctx>> {
        let c = (((32 - lanes) << 8) | 31) as i32;
        self.shfl("llvm.nvvm.shfl.sync.idx.i32", t, x, src as i32, c)
    }

    /// A shuffle `name` of a value of type `t` with operands `b` and `c`,
    /// over every lane of the warp.
    fn shfl(
        &self,
        name: &str,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
        b: i32,
        c: i32,
    ) -> Result<BasicValueEnum<'ctx>> {
        let ctx = self.cx.ctx;
        let i32t = ctx.i32_type();
        let full = self.cx.i32c(-1);
        let (b, c) = (self.cx.i32c(b), self.cx.i32c(c));
        let shfl = |v: IntValue<'ctx>| -> Result<IntValue<'ctx>> {
            Ok(self
                .cx
                .intrinsic(name, &[], &[full.into(), v.into(), b.into(), c.into()])?
                .into_int_value())
        };
        match t {
            ScalarType::I32 => Ok(shfl(x.into_int_value())?.into()),
            ScalarType::F32 => {
                let v = self.cx.b.build_bit_cast(x, i32t, "").ll()?.into_int_value();
                let r = shfl(v)?;
                self.cx.b.build_bit_cast(r, ctx.f32_type(), "").ll()
            }
            ScalarType::F64 => {
                let v = self
                    .cx
                    .b
                    .build_bit_cast(x, ctx.i64_type(), "")
                    .ll()?
                    .into_int_value();
                let lo = self.cx.b.build_int_truncate(v, i32t, "").ll()?;
                let hi = self
                    .cx
                    .b
                    .build_right_shift(v, self.cx.i64c(32), false, "")
                    .ll()?;
                let hi = self.cx.b.build_int_truncate(hi, i32t, "").ll()?;
                let (lo, hi) = (shfl(lo)?, shfl(hi)?);
                let lo = self.cx.b.build_int_z_extend(lo, ctx.i64_type(), "").ll()?;
                let hi = self.cx.b.build_int_z_extend(hi, ctx.i64_type(), "").ll()?;
                let hi = self.cx.b.build_left_shift(hi, self.cx.i64c(32), "").ll()?;
                let v = self.cx.b.build_or(lo, hi, "").ll()?;
                self.cx.b.build_bit_cast(v, ctx.f64_type(), "").ll()
            }
            _ => Err(GpuError::Llvm(format!(
                "no block reduction of {}",
                t.name()
            ))),
        }
    }

    /// A register value's bits in an `i64` (reduction slots).
    fn to_bits64(&self, t: ScalarType, x: BasicValueEnum<'ctx>) -> Result<IntValue<'ctx>> {
        let ctx = self.cx.ctx;
        let i64t = ctx.i64_type();
        Ok(match t {
            ScalarType::F64 => self.cx.b.build_bit_cast(x, i64t, "").ll()?.into_int_value(),
            ScalarType::F32 => {
                let v = self
                    .cx
                    .b
                    .build_bit_cast(x, ctx.i32_type(), "")
                    .ll()?
                    .into_int_value();
                self.cx.b.build_int_z_extend(v, i64t, "").ll()?
            }
            _ => self
                .cx
                .b
                .build_int_z_extend(x.into_int_value(), i64t, "")
                .ll()?,
        })
    }

    /// The inverse of [`Self::to_bits64`].
    fn of_bits64(&self, t: ScalarType, bits: IntValue<'ctx>) -> Result<BasicValueEnum<'ctx>> {
        let ctx = self.cx.ctx;
        Ok(match t {
            ScalarType::F64 => self.cx.b.build_bit_cast(bits, ctx.f64_type(), "").ll()?,
            ScalarType::F32 => {
                let v = self
                    .cx
                    .b
                    .build_int_truncate(bits, ctx.i32_type(), "")
                    .ll()?;
                self.cx.b.build_bit_cast(v, ctx.f32_type(), "").ll()?
            }
            _ => {
                let it = self.cx.ty(t).into_int_type();
                self.cx.b.build_int_truncate(bits, it, "").ll()?.into()
            }
        })
    }

    /// The value of `e` in the current place.
    fn expr(&mut self, e: &Expr) -> Result<BasicValueEnum<'ctx>> {
        match e {
            Expr::Const { ty, value } => Ok(self.cx.konst(*ty, *value)),
            Expr::Var(v) => {
                let ty = self.k.vars[v.0 as usize].ty;
                if ty == ScalarType::Index {
                    return self.loops.get(v).map(|x| (*x).into()).ok_or_else(|| {
                        GpuError::Llvm(format!("loop index %v{} out of scope", v.0))
                    });
                }
                let slot = self.var_slot(*v)?;
                self.cx.b.build_load(self.cx.ty(ty), slot, "").ll()
            }
            Expr::Load { buf, index } => {
                if let Some(ch) = &self.chunk
                    && index.coeff(ch.j) != 0
                {
                    let key = (*buf, index.normalized());
                    // This iteration stored the element already: what
                    // memory would give back is the stored value.
                    let pending = ch
                        .stores
                        .iter()
                        .find(|(k, _)| *k == key)
                        .and_then(|(_, lanes)| lanes[ch.lane]);
                    if let Some(v) = pending {
                        let d = self.p.buffer(*buf).dtype();
                        return self.cx.value_of_stored(d, v);
                    }
                    if let Some(lanes) = ch.loads.get(&key) {
                        return Ok(lanes[ch.lane]);
                    }
                }
                self.lane_order(*buf, false)?;
                let d = self.p.buffer(*buf).dtype();
                let at = self.elem_ptr(*buf, index)?;
                let x = self.cx.b.build_load(self.cx.storage_ty(d), at, "").ll()?;
                set_align(x, ty_bytes(d))?;
                if !self.written.contains(buf) {
                    mark_invariant(&self.cx, x)?;
                }
                self.cx.value_of_stored(d, x)
            }
            Expr::LocalLoad { local, index } => {
                if self.is_copy(*local) && self.place == Place::Uniform {
                    // A distributed loop's reads are logged before it.
                    let e = self.const_index(index);
                    self.copy_order(&[(*local, e, false)], false)?;
                }
                let t = self.k.locals[local.0 as usize].ty;
                let at = self.local_ptr(*local, index)?;
                let x = self.cx.b.build_load(self.cx.local_ty(t), at, "").ll()?;
                self.cx.value_of_local(t, x)
            }
            Expr::Unary { op, arg } => {
                let t = arg.ty(self.p, self.k);
                let x = self.expr(arg)?;
                self.cx.unary(op, t, x)
            }
            Expr::Binary { op, lhs, rhs } => {
                let t = lhs.ty(self.p, self.k);
                if let Some((a, b, c, negate)) = fused_operands(op, t, lhs, rhs) {
                    let a = self.expr(a)?.into_float_value();
                    let b = self.expr(b)?.into_float_value();
                    let c = self.expr(c)?.into_float_value();
                    let a = if negate { self.cx.fneg(a)? } else { a };
                    return Ok(self.cx.fma(a, b, c)?.into());
                }
                let a = self.expr(lhs)?;
                let b = self.expr(rhs)?;
                self.cx.binary(op, t, a, b)
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.expr(cond)?.into_int_value();
                let a = self.expr(then)?;
                let b = self.expr(otherwise)?;
                self.cx.select(c, a, b)
            }
            Expr::Cast { to, arg } => {
                let from = arg.ty(self.p, self.k);
                let x = self.expr(arg)?;
                self.cx.cast(from, *to, x)
            }
        }
    }

    /// The register slot of variable `v` (its partial inside a
    /// distributed loop that accumulates it).
    fn var_slot(&mut self, v: VarId) -> Result<PointerValue<'ctx>> {
        if let Some(p) = self.redirect.get(&v) {
            return Ok(*p);
        }
        if let Some(p) = self.vars.get(&v) {
            return Ok(*p);
        }
        let ty = self.cx.ty(self.k.vars[v.0 as usize].ty);
        let p = self.alloca_b.build_alloca(ty, &format!("v{}", v.0)).ll()?;
        self.vars.insert(v, p);
        Ok(p)
    }

    /// The element offset `ix` as an `i64`.
    fn index(&self, ix: &Index) -> Result<IntValue<'ctx>> {
        let mut at = self.cx.i64c(ix.offset);
        for &(v, c) in &ix.terms {
            let x = *self
                .loops
                .get(&v)
                .ok_or_else(|| GpuError::Llvm(format!("loop index %v{} out of scope", v.0)))?;
            let t = if c == 1 {
                x
            } else {
                self.cx.b.build_int_mul(x, self.cx.i64c(c), "").ll()?
            };
            at = self.cx.b.build_int_add(at, t, "").ll()?;
        }
        Ok(at)
    }

    /// `&buf[ix]`.
    fn elem_ptr(&self, buf: BufferId, ix: &Index) -> Result<PointerValue<'ctx>> {
        let base = *self
            .bases
            .get(&buf)
            .ok_or_else(|| GpuError::Llvm(format!("buffer %b{} has no base", buf.0)))?;
        let d = self.p.buffer(buf).dtype();
        let at = self.index(ix)?;
        gep(&self.cx.b, self.cx.storage_ty(d), base, at)
    }

    /// `&local[ix]`.
    fn local_ptr(&self, local: LocalId, ix: &Index) -> Result<PointerValue<'ctx>> {
        let slot = self
            .locals
            .get(&local)
            .ok_or_else(|| GpuError::Llvm(format!("scratch array %l{} has no storage", local.0)))?;
        let t = self.k.locals[local.0 as usize].ty;
        let at = match &self.group {
            Some(gr) if gr.plan.spread.contains(&local) => {
                // Element `j + L·q` of the lane running round `r` (`j =
                // lane + L·r`) is its slot `r + q`; in a split loop, the
                // split and spread indices together make the lane.
                let (j, r) = match gr.spreading {
                    Some(at) => (Some(at.0), at.1),
                    None if !gr.split_vars.is_empty() => (None, 0),
                    None => {
                        return Err(GpuError::Llvm(format!(
                            "spread scratch array %l{} outside its loops",
                            local.0
                        )));
                    }
                };
                let l = gr.plan.lanes as i64;
                let mut q = Index::constant(ix.offset.div_euclid(l) + r);
                for &(v, c) in &ix.terms {
                    if Some(v) != j && !gr.split_vars.contains(&v) {
                        q = q.plus(v, c.div_euclid(l));
                    }
                }
                self.index(&q)?
            }
            _ => self.index(ix)?,
        };
        gep(&self.cx.b, self.cx.local_ty(t), slot.ptr, at)
    }

    /// The `w` lanes of `buf[ix]` (loop index at the chunk's first
    /// iteration) as one vector load, widened to the compute type.
    fn vector_load(
        &mut self,
        buf: BufferId,
        ix: &Index,
        w: usize,
    ) -> Result<Vec<BasicValueEnum<'ctx>>> {
        let d = self.p.buffer(buf).dtype();
        let ety = self.cx.storage_ty(d);
        let vty =
            vec_of(ety, w as u32).ok_or_else(|| GpuError::Llvm("vector of pointers".into()))?;
        let at = self.elem_ptr(buf, ix)?;
        let bytes = ty_bytes(d) * w as u32;
        // 16 bytes of 1- or 2-byte elements load as four words: NVPTX
        // selects the read-only path (`ld.global.nc.v4`) for that shape.
        let words = bytes == 16 && ty_bytes(d) < 4;
        let lty: BasicTypeEnum<'ctx> = if words {
            self.cx.ctx.i32_type().vec_type(4).into()
        } else {
            vty.into()
        };
        let v = self.cx.b.build_load(lty, at, "").ll()?;
        set_align(v, bytes)?;
        if !self.written.contains(&buf) {
            mark_invariant(&self.cx, v)?;
        }
        if words && d == DType::Bf16 {
            return self.bf16_words(v.into_vector_value());
        }
        let v = if words {
            self.cx.b.build_bit_cast(v, vty, "").ll()?
        } else {
            v
        };
        let v = v.into_vector_value();
        let mut out = Vec::with_capacity(w);
        for lane in 0..w {
            let x = self
                .cx
                .b
                .build_extract_element(v, self.cx.i32c(lane as i32), "")
                .ll()?;
            out.push(self.cx.value_of_stored(d, x)?);
        }
        Ok(out)
    }

    /// Eight bf16 elements from four loaded words, widened to `f32` with
    /// one instruction each: the low half (the earlier element) shifted
    /// up, the high half masked (unpacking to 16-bit values first, as
    /// `bf16_widen` does for one element, costs three).
    fn bf16_words(&self, v: VectorValue<'ctx>) -> Result<Vec<BasicValueEnum<'ctx>>> {
        let b = &self.cx.b;
        let splat = |x: u32| {
            VectorType::const_vector(&[self.cx.ctx.i32_type().const_int(u64::from(x), false); 4])
        };
        // Whole-vector operations keep the load whole (and on the
        // read-only path); element-wise ones let LLVM split it.
        let lo = b.build_left_shift(v, splat(16), "").ll()?;
        let hi = b.build_and(v, splat(0xffff_0000), "").ll()?;
        let f32v = self.cx.ctx.f32_type().vec_type(4);
        let lo = self.cx.bitcast(lo, f32v)?.into_vector_value();
        let hi = self.cx.bitcast(hi, f32v)?.into_vector_value();
        let mut out = Vec::with_capacity(8);
        for word in 0..4 {
            for half in [lo, hi] {
                out.push(b.build_extract_element(half, self.cx.i32c(word), "").ll()?);
            }
        }
        Ok(out)
    }

    /// One vector store of a chunk's lanes of `buf[ix]` (storage type).
    fn vector_store(
        &mut self,
        buf: BufferId,
        ix: &Index,
        lanes: Vec<Option<BasicValueEnum<'ctx>>>,
    ) -> Result<()> {
        let d = self.p.buffer(buf).dtype();
        let ety = self.cx.storage_ty(d);
        let w = lanes.len();
        let vty =
            vec_of(ety, w as u32).ok_or_else(|| GpuError::Llvm("vector of pointers".into()))?;
        let mut v: BasicValueEnum<'ctx> = vty.get_undef().into();
        for (lane, x) in lanes.into_iter().enumerate() {
            let x = x.ok_or_else(|| GpuError::Llvm("a chunk lane did not store".into()))?;
            v = self
                .cx
                .b
                .build_insert_element(v.into_vector_value(), x, self.cx.i32c(lane as i32), "")
                .ll()?
                .into();
        }
        let at = self.elem_ptr(buf, ix)?;
        let st = self.cx.b.build_store(at, v).ll()?;
        set_align(st, ty_bytes(d) * w as u32)
    }
}

/// The key of a run: its first statement's address (a run is cut the
/// same way wherever its list is emitted).
fn run_key(run: &[Stmt]) -> usize {
    run.as_ptr() as usize
}

/// A warp-0 run's slot write (by thread 0) and slot read (by every
/// thread).
fn slot_accesses(run: &[Stmt]) -> Vec<Access> {
    let mem = Mem::Slots(run_key(run));
    vec![
        Access {
            mem,
            write: true,
            owner: Owner::Thread0,
        },
        Access {
            mem,
            write: false,
            owner: Owner::All,
        },
    ]
}

/// Bytes of a buffer element.
fn ty_bytes(d: DType) -> u32 {
    d.size_bytes() as u32
}

/// `&base[i]` for elements of type `ty`.
#[allow(
    unsafe_code,
    reason = "inkwell marks GEPs unsafe; see the safety comment"
)]
pub(crate) fn gep<'ctx>(
    b: &inkwell::builder::Builder<'ctx>,
    ty: BasicTypeEnum<'ctx>,
    base: PointerValue<'ctx>,
    i: IntValue<'ctx>,
) -> Result<PointerValue<'ctx>> {
    // SAFETY: building a GEP cannot misbehave at compile time; inkwell
    // marks it unsafe because an out-of-bounds `inbounds` GEP is undefined
    // in the generated code. Every index here is in bounds: the kernel-IR
    // verifier proved each access's range inside its buffer or scratch
    // array, and the matrix-product and reduction indices are guarded.
    unsafe { b.build_in_bounds_gep(ty, base, &[i], "") }.ll()
}

/// Marks a load `!invariant.load` (`ld.global.nc` on NVPTX).
pub(crate) fn mark_invariant<'ctx>(cx: &Cx<'_, 'ctx>, load: BasicValueEnum<'ctx>) -> Result<()> {
    let kind = cx.ctx.get_kind_id("invariant.load");
    let empty = cx.ctx.metadata_node(&[]);
    if let Some(i) = load.as_instruction_value() {
        i.set_metadata(empty, kind).ll()?;
    }
    Ok(())
}

/// Sets the alignment of a load or store.
pub(crate) fn set_align<'ctx>(v: impl AsInstr<'ctx>, bytes: u32) -> Result<()> {
    if let Some(i) = v.instr() {
        i.set_alignment(bytes).ll()?;
    }
    Ok(())
}

/// Loads and stores as instructions.
pub(crate) trait AsInstr<'ctx> {
    /// The instruction.
    fn instr(self) -> Option<InstructionValue<'ctx>>;
}

impl<'ctx> AsInstr<'ctx> for InstructionValue<'ctx> {
    fn instr(self) -> Option<InstructionValue<'ctx>> {
        Some(self)
    }
}

impl<'ctx> AsInstr<'ctx> for BasicValueEnum<'ctx> {
    fn instr(self) -> Option<InstructionValue<'ctx>> {
        self.as_instruction_value()
    }
}

/// `<n x ty>`.
pub(crate) fn vec_of(ty: BasicTypeEnum<'_>, n: u32) -> Option<VectorType<'_>> {
    match ty {
        BasicTypeEnum::FloatType(f) => Some(f.vec_type(n)),
        BasicTypeEnum::IntType(i) => Some(i.vec_type(n)),
        _ => None,
    }
}
