//! Static checks of generated GPU code that stand in for a device.
//!
//! Nothing here runs a GPU. For every launch of a program, [`audit`]
//! reports:
//!
//! * what `ptxas -v` says of its entry: registers, spill stores and loads
//!   (the spills ptxas itself makes, which the PTX's `.local` cannot show);
//! * its launch plan: mode, grid and block, and the occupancy its
//!   registers allow;
//! * a **time model**: how many warp instructions the launch issues, how
//!   long the longest dependent chain of one block takes, and how many
//!   bytes it must move at least, each turned into seconds on a
//!   [`DeviceModel`]. The model's time is the largest of the three.
//!
//! and lists [`Finding`]s: spills, serial matrix products, launches with
//! too few blocks for the device when their work could be split, blocks
//! whose threads repeat scalar work only one of them stores, and launches
//! the model puts more than [`ISSUE_OVER_FLOOR_MAX`] times over their
//! memory floor.
//!
//! **How operations are counted.** The model walks the kernel IR, whose
//! loop extents are all static, with the launch's mapping: a
//! thread-per-iteration launch runs its body once per thread; a
//! block-per-iteration or single-block launch runs its scalar statements
//! on every thread of the block, or on warp 0 alone where code generation
//! put them there (a warp-0 run), and spreads each distributed vector loop
//! over the threads in chunks (as [`super::launch`] decides). Each
//! operation is priced in PTX instructions ([`op_cost`]): the inline math
//! routines at the instruction counts of their PTX, `div.rn` and `sqrt.rn`
//! at an estimate of their machine-code expansion. No SASS tools are
//! used; the counts are PTX-level, so they are a model, not a measurement,
//! until a device runs the kernels.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::process::Command;

use birkhoff_ir::Op;
use birkhoff_ir::kernel::{
    BufferId, Expr, Gemm, Kernel, LoopKind, Program, ScalarType, Stmt, VarId,
};

use super::launch::{
    LanePlan, Mode, Piece, Work, distribute, lane_plan, line_vars, pieces, unrolls,
};
use super::ops::fused_operands;
use super::skinny::Flavor;
use super::{LaunchInfo, launch_plan_with_warp0};
use crate::{CodegenOptions, GpuError};

/// Why an audit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Code generation failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// `ptxas` could not be run or rejected the PTX.
    #[error("ptxas: {0}")]
    Ptxas(String),
}

type Result<T> = std::result::Result<T, AuditError>;

/// A launch the model puts more than this many times over its memory
/// floor is reported ([`Finding::OverFloor`]).
pub const ISSUE_OVER_FLOOR_MAX: f64 = 2.0;

/// No launch takes less than this on a current GPU (launch and drain):
/// the floor of a launch that moves few bytes.
pub const LAUNCH_FLOOR_S: f64 = 2e-6;

/// Launches shorter than this (model seconds) are too small for grid or
/// replication findings: their launch overhead dominates anyway.
pub const NEGLIGIBLE_S: f64 = 2e-6;

/// The machine the model prices instructions and bytes on.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceModel {
    /// Its name, for reports.
    pub name: String,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Sustained clock, GHz.
    pub clock_ghz: f64,
    /// Warp instructions an SM issues per clock (one per scheduler).
    pub issue_per_clock: f64,
    /// Cycles per instruction along one warp's dependent chain, after the
    /// instruction-level parallelism scalar code has.
    pub chain_cycles: f64,
    /// Memory bandwidth the floor divides by, GB/s.
    pub memory_gbps: f64,
    /// 32-bit registers per SM.
    pub registers_per_sm: u32,
    /// Resident threads per SM.
    pub threads_per_sm: u32,
    /// Resident blocks per SM.
    pub blocks_per_sm: u32,
    /// Shared memory per SM that blocks may use, bytes.
    pub shared_per_sm: u32,
}

impl DeviceModel {
    /// An H100 SXM: 132 SMs at 1.755 GHz, 3.35 TB/s of HBM3 (the data
    /// sheet's figures), 4 schedulers per SM, and 2 cycles per instruction
    /// along a warp's chain (a 4-cycle dependent latency with two
    /// independent chains in flight, an assumption).
    pub fn h100() -> DeviceModel {
        DeviceModel {
            name: "H100 SXM (model)".into(),
            sms: 132,
            clock_ghz: 1.755,
            issue_per_clock: 4.0,
            chain_cycles: 2.0,
            memory_gbps: 3350.0,
            registers_per_sm: 65536,
            threads_per_sm: 2048,
            blocks_per_sm: 32,
            // 228 KB, less the 1 KB the driver reserves per resident block
            // (charged per block below).
            shared_per_sm: 228 * 1024,
        }
    }
}

/// What `ptxas -v` reports for one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxasStats {
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_stores: u64,
    /// Bytes of spill loads.
    pub spill_loads: u64,
    /// Bytes of stack frame.
    pub stack_bytes: u64,
    /// Bytes of static shared memory per block.
    pub shared_bytes: u64,
}

/// Assembles `ptx` for `arch` with `ptxas -v` and returns each entry's
/// figures, by entry name.
pub fn ptxas_stats(ptxas: &Path, ptx: &str, arch: &str) -> Result<BTreeMap<String, PtxasStats>> {
    let dir = std::env::temp_dir().join(format!(
        "birkhoff-audit-{}-{}",
        std::process::id(),
        fnv(ptx.as_bytes())
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| AuditError::Ptxas(format!("creating {}: {e}", dir.display())))?;
    let src = dir.join("module.ptx");
    let result = (|| {
        std::fs::write(&src, ptx)
            .map_err(|e| AuditError::Ptxas(format!("writing {}: {e}", src.display())))?;
        let out = Command::new(ptxas)
            .arg(format!("-arch={arch}"))
            .arg("-v")
            .arg(&src)
            .arg("-o")
            .arg(dir.join("module.cubin"))
            .output()
            .map_err(|e| AuditError::Ptxas(format!("running {}: {e}", ptxas.display())))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let first = log.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(AuditError::Ptxas(format!("it rejected the PTX: {first}")));
        }
        Ok(parse_ptxas_log(&log))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Each entry's figures from a `ptxas -v` log.
pub fn parse_ptxas_log(log: &str) -> BTreeMap<String, PtxasStats> {
    let mut out: BTreeMap<String, PtxasStats> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(name) = quoted_after(line, "Compiling entry function '")
            .or_else(|| quoted_after(line, "Function properties for "))
        {
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(name) = &current else { continue };
        let st = out.entry(name.clone()).or_default();
        if let Some(n) = number_before(line, " bytes spill stores") {
            st.spill_stores = n;
        }
        if let Some(n) = number_before(line, " bytes spill loads") {
            st.spill_loads = n;
        }
        if let Some(n) = number_before(line, " bytes stack frame") {
            st.stack_bytes = n;
        }
        if let Some(n) = number_before(line, " bytes smem") {
            st.shared_bytes = n;
        }
        if let Some(rest) = line.split("Used ").nth(1)
            && let Some(n) = rest.split(' ').next().and_then(|n| n.parse().ok())
        {
            st.registers = n;
        }
    }
    out
}

/// The name in `line` after `prefix`, up to the next quote or space.
fn quoted_after(line: &str, prefix: &str) -> Option<String> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let name: String = rest
        .chars()
        .take_while(|c| !matches!(c, '\'' | ' ' | ':'))
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The decimal number just before `suffix` in `line`.
fn number_before(line: &str, suffix: &str) -> Option<u64> {
    let head = &line[..line.find(suffix)?];
    let digits: String = head
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// PTX instructions in each entry's body (labels, directives and braces
/// excluded): the static size of the code.
pub fn ptx_instruction_counts(ptx: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut depth = 0usize;
    for line in ptx.lines() {
        let t = line.trim();
        if let Some(rest) = t.split(".entry ").nth(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
                .collect();
            out.insert(name.clone(), 0);
            current = Some(name);
            depth = 0;
            continue;
        }
        let Some(name) = &current else { continue };
        depth += t.matches('{').count();
        if t.starts_with('}') {
            depth = depth.saturating_sub(t.matches('}').count());
            if depth == 0 {
                current = None;
            }
            continue;
        }
        let is_instruction = depth > 0
            && !t.is_empty()
            && !t.starts_with('.')
            && !t.starts_with("//")
            && !t.starts_with('{')
            && !t.ends_with(':');
        if is_instruction && let Some(n) = out.get_mut(name) {
            *n += 1;
        }
    }
    out
}

/// A problem the audit found in one launch.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// ptxas spilled registers to local memory.
    Spills {
        /// Bytes of spill stores.
        stores: u64,
        /// Bytes of spill loads.
        loads: u64,
    },
    /// A matrix product runs as a serial loop nest.
    SerialMatmul {
        /// Multiply-adds it does.
        macs: u64,
    },
    /// Fewer blocks than twice the SMs, although the work has enough
    /// independent parts to fill the device.
    SmallGrid {
        /// Blocks launched.
        blocks: u64,
        /// Independent parts of the work (threads' worth).
        parts: u64,
    },
    /// Scalar work every warp of a block repeats while one thread stores
    /// it, taking more than [`REPLICATED_MAX_SHARE`] of the launch's warp
    /// instructions and of its time.
    Replicated {
        /// Share of the launch's warp instructions that repeat it.
        share: f64,
    },
    /// The model's time is more than [`ISSUE_OVER_FLOOR_MAX`] times the
    /// launch's memory floor.
    OverFloor {
        /// Model time over floor.
        ratio: f64,
    },
}

impl Finding {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Finding::Spills { .. } => "spills",
            Finding::SerialMatmul { .. } => "serial-matmul",
            Finding::SmallGrid { .. } => "small-grid",
            Finding::Replicated { .. } => "replicated-scalar-work",
            Finding::OverFloor { .. } => "over-floor",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Spills { stores, loads } => {
                write!(
                    f,
                    "spills: {stores} B of spill stores, {loads} B of spill loads"
                )
            }
            Finding::SerialMatmul { macs } => {
                write!(f, "serial-matmul: a loop nest of {macs} multiply-adds")
            }
            Finding::SmallGrid { blocks, parts } => write!(
                f,
                "small-grid: {blocks} blocks for {parts} independent parts of work"
            ),
            Finding::Replicated { share } => write!(
                f,
                "replicated-scalar-work: {:.0}% of the warp instructions repeat scalar work one thread stores",
                share * 100.0
            ),
            Finding::OverFloor { ratio } => write!(
                f,
                "over-floor: the model's time is {ratio:.1}x the memory floor (at most {ISSUE_OVER_FLOOR_MAX}x)"
            ),
        }
    }
}

/// One launch, audited.
#[derive(Clone, Debug)]
pub struct LaunchAudit {
    /// The launch as planned.
    pub launch: LaunchInfo,
    /// ptxas's figures for its entry (`None` without ptxas).
    pub ptxas: Option<PtxasStats>,
    /// PTX instructions in its entry.
    pub ptx_instructions: usize,
    /// Resident blocks per SM its registers and block allow.
    pub resident_blocks: u32,
    /// Warp instructions the whole launch issues (model).
    pub warp_instructions: f64,
    /// Of those, the ones that repeat scalar work beyond one warp.
    pub replicated: f64,
    /// Instructions along one block's longest dependent chain (model).
    pub chain: f64,
    /// Minimal bytes: every buffer it reads read once, every buffer it
    /// writes written once.
    pub bytes: u64,
    /// Independent parts of its work (threads' worth).
    pub parts: u64,
    /// Issue time, seconds.
    pub issue_s: f64,
    /// Dependent-chain time, seconds.
    pub chain_s: f64,
    /// Memory floor, seconds: the minimal bytes over the bandwidth, and
    /// never under [`LAUNCH_FLOOR_S`].
    pub floor_s: f64,
    /// What is wrong.
    pub findings: Vec<Finding>,
}

impl LaunchAudit {
    /// The model's time: the largest of issue, chain and memory.
    pub fn model_s(&self) -> f64 {
        self.issue_s.max(self.chain_s).max(self.floor_s)
    }

    /// Blocks in the grid.
    pub fn blocks(&self) -> u64 {
        self.launch.grid.iter().map(|&g| u64::from(g)).product()
    }

    /// Occupancy: resident threads over the SM's maximum.
    pub fn occupancy(&self, d: &DeviceModel) -> f64 {
        f64::from(self.resident_blocks * self.launch.block) / f64::from(d.threads_per_sm)
    }
}

/// Audits every launch of `program` as [`super::compile`] would build it.
/// With `ptxas`, the PTX is assembled and its spills and registers read.
pub fn audit(
    program: &Program,
    opts: &CodegenOptions,
    ptxas: Option<&Path>,
    device: &DeviceModel,
) -> Result<Vec<LaunchAudit>> {
    let plan = launch_plan_with_warp0(program, opts)?;
    let sm = super::sm_version(&opts.arch)?;
    let (stats, counts) = match ptxas {
        Some(p) => {
            let module = super::compile(program, opts)?;
            (
                Some(ptxas_stats(p, &module.ptx, &opts.arch)?),
                ptx_instruction_counts(&module.ptx),
            )
        }
        None => (None, BTreeMap::new()),
    };
    let mut work = Vec::new();
    for k in &program.kernels {
        for piece in pieces(program, k).map_err(AuditError::Gpu)? {
            work.push((k, piece));
        }
    }
    if work.len() != plan.len() {
        return Err(AuditError::Gpu(GpuError::InvalidModule(format!(
            "the audit found {} launches where the plan has {}",
            work.len(),
            plan.len()
        ))));
    }
    let mut out = Vec::new();
    for ((k, piece), (launch, warp0)) in work.into_iter().zip(plan) {
        let model = Model {
            p: program,
            k,
            block: launch.block,
            warp0: &warp0,
            sm,
        };
        let t = model.launch(&piece, &launch.grid);
        let ptxas = stats.as_ref().and_then(|s| s.get(&launch.entry).cloned());
        let regs = ptxas.as_ref().map_or(64, |s| s.registers.max(1));
        let smem = ptxas.as_ref().map_or(0, |s| s.shared_bytes);
        let resident = resident_blocks(device, launch.block, regs, smem);
        let blocks: u64 = launch.grid.iter().map(|&g| u64::from(g)).product();
        let hz = device.clock_ghz * 1e9;
        let busy_sms = blocks.min(u64::from(device.sms)) as f64;
        let issue_s = t.warp_instructions / (busy_sms * device.issue_per_clock * hz);
        let waves = (blocks as f64 / (f64::from(device.sms) * f64::from(resident))).ceil();
        let chain_s = waves * t.chain * device.chain_cycles / hz;
        let floor_s = (t.bytes as f64 / (device.memory_gbps * 1e9)).max(LAUNCH_FLOOR_S);
        let mut a = LaunchAudit {
            ptx_instructions: counts.get(&launch.entry).copied().unwrap_or(0),
            launch,
            ptxas,
            resident_blocks: resident,
            warp_instructions: t.warp_instructions,
            replicated: t.replicated,
            chain: t.chain,
            bytes: t.bytes,
            parts: t.parts,
            issue_s,
            chain_s,
            floor_s,
            findings: Vec::new(),
        };
        a.findings = findings(&a, &t, device);
        out.push(a);
    }
    Ok(out)
}

/// Blocks of `block` threads at `regs` registers each, with `smem` bytes
/// of shared memory per block, that fit on one SM.
fn resident_blocks(d: &DeviceModel, block: u32, regs: u32, smem: u64) -> u32 {
    // Registers are allocated per warp in units of 256.
    let warp_regs = (regs * 32).div_ceil(256) * 256;
    let warps = block.div_ceil(32);
    let by_regs = d.registers_per_sm / (warp_regs * warps).max(1);
    let by_threads = d.threads_per_sm / block.max(1);
    let by_shared = if smem > 0 {
        u64::from(d.shared_per_sm) / (smem + 1024)
    } else {
        u64::from(d.blocks_per_sm)
    };
    let by_shared = u32::try_from(by_shared).unwrap_or(u32::MAX);
    by_regs
        .min(by_threads)
        .min(by_shared)
        .min(d.blocks_per_sm)
        .max(1)
}

fn findings(a: &LaunchAudit, t: &Tally, d: &DeviceModel) -> Vec<Finding> {
    let mut f = Vec::new();
    if let Some(s) = &a.ptxas
        && (s.spill_stores > 0 || s.spill_loads > 0)
    {
        f.push(Finding::Spills {
            stores: s.spill_stores,
            loads: s.spill_loads,
        });
    }
    if t.serial_macs >= SERIAL_MATMUL_MIN_MACS {
        f.push(Finding::SerialMatmul {
            macs: t.serial_macs,
        });
    }
    let model = a.model_s();
    let wanted = 2 * u64::from(d.sms);
    if model > NEGLIGIBLE_S && a.blocks() < wanted && a.parts >= wanted * 32 {
        f.push(Finding::SmallGrid {
            blocks: a.blocks(),
            parts: a.parts,
        });
    }
    if t.warp_instructions > 0.0 {
        let share = t.replicated / t.warp_instructions;
        // Replication that only fills issue slots a memory-bound launch
        // leaves idle costs nothing: it counts when it is also a share of
        // the launch's time.
        let replicated_s = a.issue_s * share;
        if model > NEGLIGIBLE_S
            && share > REPLICATED_MAX_SHARE
            && replicated_s > REPLICATED_MAX_SHARE * model
        {
            f.push(Finding::Replicated { share });
        }
    }
    if a.floor_s > 0.0 && model > NEGLIGIBLE_S && model > ISSUE_OVER_FLOOR_MAX * a.floor_s {
        f.push(Finding::OverFloor {
            ratio: model / a.floor_s,
        });
    }
    f
}

/// A serial loop nest with at least this many multiply-adds of loaded
/// operands is a serial matrix product ([`Finding::SerialMatmul`]).
pub const SERIAL_MATMUL_MIN_MACS: u64 = 1 << 16;

/// Replicated scalar work above this share of a launch's warp
/// instructions, and of its model time, is reported
/// ([`Finding::Replicated`]).
pub const REPLICATED_MAX_SHARE: f64 = 0.10;

/// What the model counts for one launch.
#[derive(Clone, Debug, Default)]
struct Tally {
    warp_instructions: f64,
    replicated: f64,
    chain: f64,
    bytes: u64,
    parts: u64,
    serial_macs: u64,
}

/// The PTX instructions one evaluation of `op` on `ty` costs: the inline
/// routines at the size of their PTX (measured on `sm_90` f32 code, less
/// the launch's fixed instructions), `div.rn` and `sqrt.rn` at an estimate
/// of their machine-code expansion; f64 routines count twice.
pub fn op_cost(op: &Op, ty: ScalarType) -> f64 {
    let f32_cost = match op {
        Op::Exp => 31.0,
        Op::Log => 38.0,
        Op::Tanh => 53.0,
        Op::Sigmoid => 38.0,
        Op::Pow => 75.0,
        Op::Div | Op::Recip | Op::Sqrt => 8.0,
        Op::Rsqrt => 9.0,
        _ => 1.0,
    };
    if ty == ScalarType::F64 && f32_cost > 1.0 {
        2.0 * f32_cost
    } else {
        f32_cost
    }
}

/// The model's walk over one launch.
struct Model<'a> {
    p: &'a Program,
    k: &'a Kernel,
    block: u32,
    /// Statements (by address) code generation put on warp 0 alone.
    warp0: &'a HashSet<usize>,
    /// The target's compute capability (which matrix-product kernel runs).
    sm: u32,
}

/// What a statement list costs when run by one thread in order.
#[derive(Clone, Copy, Debug, Default)]
struct Serial {
    instructions: f64,
    macs: u64,
}

impl Model<'_> {
    fn launch(&self, piece: &Piece<'_>, grid: &[u32; 3]) -> Tally {
        let (w, mode) = (piece.work, piece.mode);
        // One iteration of the grid's loops, and how many there are.
        let iteration = |body| piece.nest.map_or((1, body), |n| (n.iterations(), n.body));
        let mut t = Tally::default();
        let mut reads = HashSet::new();
        let mut writes = HashSet::new();
        match w {
            Work::Gemm(g) => {
                let blocks: f64 = grid.iter().map(|&g| f64::from(g)).product();
                self.gemm(g, blocks, &mut t);
                reads.extend([g.a.buf, g.b.buf]);
                writes.insert(g.c.buf);
                if g.accumulate {
                    reads.insert(g.c.buf);
                }
                if let Some(s) = &g.row_sumsq {
                    writes.insert(s.buf);
                }
            }
            Work::Body(body) => {
                // A launch split off a parallel loop moves only its part's
                // buffers.
                buffers(piece.nest.map_or(body, |n| n.body), &mut reads, &mut writes);
                let blocks: f64 = grid.iter().map(|&g| f64::from(g)).product();
                match mode {
                    Mode::Thread => {
                        let (extent, inner) = iteration(body);
                        let s = self.serial(inner);
                        t.warp_instructions = (extent as f64 / 32.0).ceil() * s.instructions;
                        t.chain = s.instructions;
                        t.parts = extent as u64;
                        t.serial_macs = s.macs * extent as u64;
                    }
                    Mode::Lanes(l) => {
                        let (extent, inner) = iteration(body);
                        let plan = lane_plan(self.p, self.k, inner, extent).unwrap_or_default();
                        let s = self.lanes(inner, &plan);
                        let lanes = f64::from(l);
                        let warps = (extent as f64 * lanes / 32.0).ceil();
                        t.warp_instructions = warps * s.instructions;
                        t.chain = s.instructions;
                        // The scalar statements every lane but one repeats.
                        t.replicated = warps * s.scalar * (lanes - 1.0) / lanes;
                        t.parts = extent as u64 * u64::from(l);
                        t.serial_macs = s.macs * extent as u64;
                    }
                    Mode::Block => {
                        let (extent, inner) = iteration(body);
                        let mut u = Uniform::default();
                        self.uniform(inner, 1.0, 1, &mut HashSet::new(), &mut u);
                        self.finish_block(&u, blocks, extent as u64, &mut t);
                    }
                    Mode::Single | Mode::Gemm => {
                        let mut u = Uniform::default();
                        self.uniform(body, 1.0, 1, &mut HashSet::new(), &mut u);
                        self.finish_block(&u, 1.0, 1, &mut t);
                    }
                }
            }
        }
        t.bytes = reads
            .iter()
            .chain(writes.iter())
            .map(|&b| self.buffer_bytes(b))
            .sum();
        t
    }

    fn finish_block(&self, u: &Uniform, blocks: f64, per: u64, t: &mut Tally) {
        let warps = f64::from(self.block.div_ceil(32));
        let scalar_warps = u.scalar * warps;
        t.warp_instructions = blocks * (scalar_warps + u.warp0 + u.spread);
        t.replicated = blocks * u.scalar * (warps - 1.0);
        t.chain = u.scalar + u.warp0 + u.spread_chain;
        t.parts = per * u.max_parts.max(1);
        t.serial_macs = u.serial_macs;
    }

    fn buffer_bytes(&self, b: BufferId) -> u64 {
        let d = self.p.buffer(b);
        (d.len() * d.dtype().size_bytes()) as u64
    }

    fn gemm(&self, g: &Gemm, blocks: f64, t: &mut Tally) {
        let macs = (g.m * g.n * g.k * g.batch) as f64;
        t.warp_instructions = match super::skinny::applies(self.p, g, self.sm) {
            // Tensor cores: one m16n8k16 per 2048 multiply-adds, plus one
            // 16-byte load per lane for each 8 bf16 of `a` and of `b`.
            Some(s) if s.flavor == Flavor::TensorCore => {
                macs / 2048.0 + ((g.m + g.n) * g.k * g.batch) as f64 / 8.0 / 32.0
            }
            // The f32 tall-and-skinny kernel: per step of 4 elements, a lane
            // loads its R rows and the N rows of `b`, does 4·R·N
            // multiply-adds, 4·R more for the row sums, and 5 of
            // bookkeeping (counted from its PTX loop).
            Some(s) => {
                let rows = 16 * s.tiles;
                let r = if s.tiles == 4 { 4.0 } else { 2.0 };
                let padded = (g.m.div_ceil(rows) * rows * g.k * g.batch) as f64;
                let n = g.n as f64;
                let sq = if g.row_sumsq.is_some() { 4.0 * r } else { 0.0 };
                padded / (4.0 * r) / 32.0 * (r + n + 4.0 * r * n + sq + 4.0 * r + 5.0)
            }
            None => match super::wide::applies(self.p, g) {
                // The short-and-wide kernel: per step of K, a thread loads
                // 4 elements of `b` (4 more to widen bf16) and `a`'s column
                // in M/4 loads, does 4·M multiply-adds, and 3 of loop.
                Some(w) => {
                    let m = w.m as f64;
                    let widen = if w.b_bf16 { 4.0 } else { 0.0 };
                    let threads = (w.n / 4 * w.k * w.batch) as f64;
                    threads / 32.0 * (1.0 + widen + m / 4.0 + 4.0 * m + 3.0)
                }
                // The general kernel: a fused multiply-add and two
                // shared-memory loads per multiply-add and thread, its
                // tile staging on top.
                None => macs * 3.25 / 32.0,
            },
        };
        // A block's warps share its work.
        let warps = f64::from(self.block.div_ceil(32)).max(1.0);
        t.chain = t.warp_instructions / blocks.max(1.0) / warps;
        t.parts = (g.m * g.n * g.batch) as u64 * (g.k as u64 / 64).max(1);
    }

    /// A statement list in uniform context, `mult` times, of which
    /// `independent` are iterations of loops whose iterations are
    /// independent (parallel or vector loops run in order).
    fn uniform(
        &self,
        body: &[Stmt],
        mult: f64,
        independent: u64,
        defined: &mut HashSet<u32>,
        u: &mut Uniform,
    ) {
        for s in body {
            if self.warp0.contains(&(std::ptr::from_ref(s) as usize)) {
                // A warp-0 run's statement: one warp runs it.
                let c = self.serial(std::slice::from_ref(s));
                u.warp0 += mult * c.instructions;
                u.serial_macs += (mult as u64).saturating_mul(c.macs);
                if let Stmt::Set { var, .. } = s {
                    defined.insert(var.0);
                }
                continue;
            }
            match s {
                Stmt::Loop {
                    var,
                    extent,
                    kind: LoopKind::Vector,
                    body: inner,
                } => {
                    let d = distribute(self.p, self.k, *var, *extent, inner, &|v| {
                        defined.contains(&v.0)
                    });
                    match d {
                        Ok(d) => {
                            let chunks = extent.div_ceil(d.width) as f64;
                            let per_chunk = self.chunk_cost(inner, d.width);
                            let threads = f64::from(self.block);
                            let rounds = (chunks / threads).ceil();
                            // Chunk `c` runs on thread `c mod threads`: a
                            // warp none of whose threads has a chunk left
                            // leaves the loop, so a partial last round
                            // issues only for the warps it reaches.
                            let warp_rounds = (chunks / 32.0).ceil();
                            // Each accumulator: a 5-step butterfly, a slot
                            // store, a barrier and the warps' totals.
                            let warps = threads / 32.0;
                            let reduce = d.accs.len() as f64 * (12.0 + warps);
                            u.spread += mult * (warp_rounds * per_chunk + reduce * warps);
                            u.spread_chain += mult * (rounds * per_chunk + reduce);
                            u.max_parts = u.max_parts.max(independent * chunks as u64);
                        }
                        Err(_) => {
                            u.max_parts = u.max_parts.max(independent * *extent as u64);
                            let s = self.serial(std::slice::from_ref(s));
                            u.scalar += mult * s.instructions;
                            u.serial_macs += s.macs;
                        }
                    }
                }
                Stmt::Loop {
                    var,
                    extent,
                    body: inner,
                    kind,
                } => {
                    let times = mult * *extent as f64;
                    let split = match kind {
                        LoopKind::Serial => independent_iterations(*var, inner, defined),
                        LoopKind::Parallel | LoopKind::Vector => true,
                    };
                    let independent = if split {
                        independent * *extent as u64
                    } else {
                        independent
                    };
                    u.max_parts = u.max_parts.max(independent);
                    self.uniform(inner, times, independent, defined, u);
                    if multiplies_loads(inner) {
                        u.serial_macs += times as u64;
                    }
                }
                Stmt::Set { var, .. } => {
                    defined.insert(var.0);
                    u.scalar += mult * self.stmt_cost(s);
                }
                _ => u.scalar += mult * self.stmt_cost(s),
            }
        }
    }

    /// The instructions of one chunk of `width` iterations: arithmetic per
    /// iteration, loads and stores per chunk when it is vectorized.
    fn chunk_cost(&self, body: &[Stmt], width: usize) -> f64 {
        let mut arith = 0.0;
        let mut mem = 0.0;
        for s in body {
            if let Some(e) = s.value() {
                e.walk(&mut |e| match e {
                    Expr::Load { buf, .. } => {
                        mem += 1.0;
                        if self.p.buffer(*buf).dtype() == birkhoff_ir::DType::Bf16 {
                            arith += 1.0;
                        }
                    }
                    _ => arith += self.expr_own_cost(e),
                });
            }
            if let Stmt::Store { .. } | Stmt::LocalStore { .. } = s {
                mem += 1.0;
            }
        }
        let w = width as f64;
        if width > 1 {
            arith * w + mem + 2.0
        } else {
            arith + mem + 2.0
        }
    }

    /// A statement list run by one lane of a lane group: a spread loop
    /// runs `1/L` of its iterations there, unrolled, and a butterfly of
    /// `log2 L` shuffles and operations per accumulator.
    fn lanes(&self, body: &[Stmt], plan: &LanePlan) -> LaneCost {
        let mut out = LaneCost::default();
        for s in body {
            match s {
                Stmt::Loop {
                    var,
                    extent,
                    body: b,
                    ..
                } => {
                    let addr = std::ptr::from_ref(s) as usize;
                    if let Some(sp) = plan.loops.get(&addr) {
                        let inner = self.serial(b);
                        let (rounds, width) = match sp.stride {
                            Some(_) => (1.0, *extent),
                            None => (extent.div_ceil(plan.lanes.max(1)) as f64, plan.lanes),
                        };
                        let steps = f64::from(width.trailing_zeros());
                        out.instructions += rounds * inner.instructions
                            + sp.accs.len() as f64 * (2.0 * steps + 1.0);
                        out.macs += inner.macs * rounds as u64;
                    } else if plan.split.contains_key(&addr) {
                        // Each lane runs one iteration, its own: nothing
                        // in it is repeated across the group.
                        let inner = self.lanes(b, plan);
                        out.instructions += inner.instructions;
                        out.macs += inner.macs;
                    } else if plan.transposed.contains(&addr) {
                        let t = self.transposed(b, plan);
                        out.instructions += t.instructions;
                        out.macs += t.macs;
                    } else {
                        let inner = self.lanes(b, plan);
                        let n = *extent as f64;
                        let o = overhead(*var, *extent, b);
                        out.instructions += n * (inner.instructions + o);
                        out.scalar += n * (inner.scalar + o);
                        out.macs += inner.macs * *extent as u64;
                    }
                }
                _ => {
                    let c = self.stmt_cost(s);
                    out.instructions += c;
                    out.scalar += c;
                }
            }
        }
        out
    }

    /// One lane of a transposed loop over `plan.lanes` lines: its own
    /// line's variables once; every line's element of each vector loop,
    /// with a shuffle for each line value it reads and, per accumulator,
    /// a reduce-scatter (`L - 1` exchanges, each two selects, a shuffle
    /// and the operation) and the fold into the variable.
    fn transposed(&self, body: &[Stmt], plan: &LanePlan) -> LaneCost {
        let lines = plan.lanes as f64;
        let own = line_vars(body);
        let mut out = LaneCost::default();
        for s in body {
            if let Stmt::Loop { body: b, .. } = s {
                let inner = self.serial(b);
                let accs = plan
                    .loops
                    .get(&(std::ptr::from_ref(s) as usize))
                    .map_or(0, |sp| sp.accs.len()) as f64;
                let mut reads = HashSet::new();
                birkhoff_ir::kernel::walk_exprs(b, &mut |e| {
                    if let Expr::Var(v) = e
                        && own.contains(v)
                    {
                        reads.insert(*v);
                    }
                });
                let gathered = reads.len() as f64 - accs;
                out.instructions += lines * (inner.instructions + gathered.max(0.0))
                    + accs * (4.0 * (lines - 1.0) + 1.0);
                out.macs += inner.macs * plan.lanes as u64;
            } else {
                out.instructions += self.stmt_cost(s);
            }
        }
        out
    }

    /// A statement list run in order by one thread.
    fn serial(&self, body: &[Stmt]) -> Serial {
        let mut out = Serial::default();
        for s in body {
            match s {
                Stmt::Loop {
                    var,
                    extent,
                    body: b,
                    ..
                } => {
                    let inner = self.serial(b);
                    out.instructions +=
                        *extent as f64 * (inner.instructions + overhead(*var, *extent, b));
                    let mut macs = inner.macs * *extent as u64;
                    if macs == 0 && multiplies_loads(b) {
                        macs = *extent as u64;
                    }
                    out.macs += macs;
                }
                _ => out.instructions += self.stmt_cost(s),
            }
        }
        out
    }

    fn stmt_cost(&self, s: &Stmt) -> f64 {
        let mut c = match s {
            Stmt::Store { .. } => 2.0,
            Stmt::LocalStore { .. } => 0.5,
            _ => 0.0,
        };
        if let Some(e) = s.value() {
            e.walk(&mut |e| c += self.expr_own_cost(e));
        }
        c
    }

    /// One expression node's own cost (its operands counted separately).
    fn expr_own_cost(&self, e: &Expr) -> f64 {
        match e {
            Expr::Const { .. } | Expr::Var(_) => 0.0,
            Expr::Load { buf, index } => {
                let widen = f64::from(self.p.buffer(*buf).dtype() == birkhoff_ir::DType::Bf16);
                1.0 + index.terms.len() as f64 + widen
            }
            // Scratch arrays live in registers once their loops unroll.
            Expr::LocalLoad { .. } => 0.0,
            Expr::Unary { op, arg } => op_cost(op, self.ty(arg)),
            // A multiply-add is one `fma`: its multiply counts it.
            Expr::Binary { op, lhs, rhs }
                if fused_operands(op, self.ty(lhs), lhs, rhs).is_some() =>
            {
                0.0
            }
            Expr::Binary { op, lhs, .. } => op_cost(op, self.ty(lhs)),
            Expr::Select { .. } | Expr::Cast { .. } => 1.0,
        }
    }

    fn ty(&self, e: &Expr) -> ScalarType {
        match e {
            Expr::Const { ty, .. } => *ty,
            Expr::Var(v) => self.k.vars[v.0 as usize].ty,
            Expr::Load { buf, .. } => ScalarType::of(self.p.buffer(*buf).dtype()),
            Expr::LocalLoad { local, .. } => self.k.locals[local.0 as usize].ty,
            Expr::Unary { arg, .. } => self.ty(arg),
            Expr::Binary { lhs, .. } => self.ty(lhs),
            Expr::Select { then, .. } => self.ty(then),
            Expr::Cast { to, .. } => *to,
        }
    }
}

/// The model's instructions for one lane of a lane group running `body`
/// under `plan`, and of those the ones every lane repeats; for one thread
/// running it alone (`plan` `None`), all of them and none.
pub(crate) fn lane_instructions(
    p: &Program,
    k: &Kernel,
    body: &[Stmt],
    plan: Option<&LanePlan>,
) -> (f64, f64) {
    let none = HashSet::new();
    let model = Model {
        p,
        k,
        block: 32,
        warp0: &none,
        sm: 90,
    };
    match plan {
        Some(plan) => {
            let c = model.lanes(body, plan);
            (c.instructions, c.scalar)
        }
        None => (model.serial(body).instructions, 0.0),
    }
}

/// Instructions per iteration a loop's control costs: none when code
/// generation unrolls it, an increment, a compare and a branch else.
fn overhead(var: VarId, extent: usize, body: &[Stmt]) -> f64 {
    if unrolls(var, extent, body) { 0.0 } else { 2.0 }
}

/// What one lane of a lane group runs ([`Model::lanes`]).
#[derive(Clone, Copy, Debug, Default)]
struct LaneCost {
    instructions: f64,
    /// Of which outside spread loops: every lane of the group runs them.
    scalar: f64,
    macs: u64,
}

/// What the uniform-context walk adds up for one block.
#[derive(Clone, Debug, Default)]
struct Uniform {
    /// Scalar instructions every thread runs.
    scalar: f64,
    /// Scalar instructions warp 0 alone runs.
    warp0: f64,
    /// Warp instructions of the distributed loops.
    spread: f64,
    /// Their instructions along one thread.
    spread_chain: f64,
    /// Most independent parts of work (distributed chunks, or iterations
    /// of independent loops) at one place.
    max_parts: u64,
    /// Multiply-adds of serial loop nests.
    serial_macs: u64,
}

/// Whether the iterations of a serial loop over `var` could run apart:
/// it sets no variable of an enclosing scope, and every store moves with
/// `var` (so no two iterations write one element). A read of what another
/// iteration writes is not ruled out: this only estimates how much work
/// a launch could spread, it does not transform anything.
fn independent_iterations(
    var: birkhoff_ir::kernel::VarId,
    body: &[Stmt],
    defined: &HashSet<u32>,
) -> bool {
    let mut ok = true;
    birkhoff_ir::kernel::walk_stmts(body, &mut |s| match s {
        Stmt::Set { var: v, .. } if defined.contains(&v.0) => ok = false,
        Stmt::Store { index, .. } | Stmt::LocalStore { index, .. } if index.coeff(var) == 0 => {
            ok = false;
        }
        Stmt::Gemm(_) => ok = false,
        _ => {}
    });
    ok
}

/// Whether a loop body updates an accumulator with a product of two
/// loaded values (`acc = acc + a[..] * b[..]`).
fn multiplies_loads(body: &[Stmt]) -> bool {
    body.iter().any(|s| {
        let Stmt::Set { var, value } = s else {
            return false;
        };
        let Some((Op::Add, e)) = value.accumulates(*var) else {
            return false;
        };
        let Expr::Binary {
            op: Op::Mul,
            lhs,
            rhs,
        } = e
        else {
            return false;
        };
        loads(lhs) && loads(rhs)
    })
}

fn loads(e: &Expr) -> bool {
    let mut any = false;
    e.walk(&mut |e| any |= matches!(e, Expr::Load { .. }));
    any
}

/// The buffers a statement list reads and writes.
fn buffers(body: &[Stmt], reads: &mut HashSet<BufferId>, writes: &mut HashSet<BufferId>) {
    birkhoff_ir::kernel::walk_stmts(body, &mut |s| {
        if let Stmt::Store { buf, .. } = s {
            writes.insert(*buf);
        }
        if let Some(e) = s.value() {
            e.walk(&mut |e| {
                if let Expr::Load { buf, .. } = e {
                    reads.insert(*buf);
                }
            });
        }
    });
}

/// FNV-1a 64 of `bytes` (a scratch directory's name).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_logs_are_read_per_entry() {
        let log = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k0_pre' for 'sm_90'
ptxas info    : Function properties for k0_pre
    8 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 48 registers, used 0 barriers, 8 bytes cumulative stack size
ptxas info    : Compiling entry function 'k1_post' for 'sm_90'
ptxas info    : Function properties for k1_post
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 190 registers, used 1 barriers, 8448 bytes smem
";
        let s = parse_ptxas_log(log);
        assert_eq!(
            s["k0_pre"],
            PtxasStats {
                registers: 48,
                spill_stores: 8,
                spill_loads: 12,
                stack_bytes: 8,
                shared_bytes: 0,
            }
        );
        assert_eq!(s["k1_post"].registers, 190);
        assert_eq!(s["k1_post"].shared_bytes, 8448);
        assert_eq!(s["k1_post"].spill_stores, 0);
    }

    #[test]
    fn ptx_instructions_are_counted_per_entry() {
        let ptx = "\
.version 7.8
.visible .entry k0_a(
\t.param .u64 k0_a_param_0
)
{
\t.reg .b32 \t%r<4>;
\tmov.u32 \t%r1, %tid.x;
$L__BB0_1:
\t@%p1 bra \t$L__BB0_1;
\tret;
}
.visible .entry k1_b(
\t.param .u64 k1_b_param_0
)
{
\tret;
}
";
        let c = ptx_instruction_counts(ptx);
        assert_eq!(c["k0_a"], 3);
        assert_eq!(c["k1_b"], 1);
    }

    #[test]
    fn occupancy_follows_registers_and_shared_memory() {
        let d = DeviceModel::h100();
        assert_eq!(resident_blocks(&d, 256, 32, 0), 8);
        assert_eq!(resident_blocks(&d, 256, 64, 0), 4);
        assert_eq!(resident_blocks(&d, 256, 170, 0), 1);
        assert_eq!(resident_blocks(&d, 256, 255, 0), 1);
        // 48 KB blocks: four fit in 228 KB with the driver's 1 KB each.
        assert_eq!(resident_blocks(&d, 32, 32, 48 * 1024), 4);
        assert_eq!(resident_blocks(&d, 32, 32, 8 * 1024), 25);
    }
}
