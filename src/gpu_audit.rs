//! The GPU audit suite: the programs whose generated code stands in for a
//! device run (`birkhoff gpu-audit`, `docs/gpu.md`).
//!
//! [`suite`] builds, at the shapes [`AuditShapes`] gives, every mHC stage
//! of the model zoo (f32 and bf16), the three fused backward ops, and the
//! transformer blocks; [`audit_program`] compiles each for the GPU and runs
//! [`birkhoff_gpu::codegen::audit::audit`] over it. Which findings count
//! against a program depends on what it is: a transformer block's layer
//! matrix products are compute-bound, so only the mHC programs are held
//! to the memory floor.

use std::path::Path;

use birkhoff_dsl::zoo::{LayerFn, ModelArgs, build_model};
use birkhoff_gpu::codegen::audit::{AuditError, DeviceModel, Finding, LaunchAudit, audit};
use birkhoff_ir::{DType, Graph, SinkhornVariant};

use crate::{CompileError, CompileOptions, Target, kernel_program};

/// The shapes the suite is built at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditShapes {
    /// Tokens of the mHC stages and backward ops.
    pub tokens: usize,
    /// Hidden width of the mHC stages and backward ops.
    pub hidden: usize,
    /// Residual streams.
    pub streams: usize,
    /// Tokens of the transformer blocks.
    pub block_tokens: usize,
    /// Hidden width of the transformer blocks.
    pub block_hidden: usize,
    /// Attention heads of the transformer blocks.
    pub heads: usize,
}

impl Default for AuditShapes {
    /// Production shapes: T = 8192, C = 4096 for the mHC stages, and a
    /// block at T = 2048, C = 2048 with 16 heads.
    fn default() -> Self {
        AuditShapes {
            tokens: 8192,
            hidden: 4096,
            streams: 4,
            block_tokens: 2048,
            block_hidden: 2048,
            heads: 16,
        }
    }
}

/// One program of the suite.
#[derive(Clone, Debug)]
pub struct AuditProgram {
    /// Its name in reports (`mhc-pre bf16 T=8192 C=4096`).
    pub name: String,
    /// Whether it is an mHC program, held to the memory floor.
    pub mhc: bool,
    /// The graph (optimized when compiled).
    pub graph: Graph,
}

/// One program's audit.
#[derive(Clone, Debug)]
pub struct ProgramAudit {
    /// The program.
    pub name: String,
    /// Whether it is held to the memory floor.
    pub mhc: bool,
    /// Every launch.
    pub launches: Vec<LaunchAudit>,
}

impl ProgramAudit {
    /// The findings that count against this program, with their launch.
    pub fn failures(&self) -> Vec<(&LaunchAudit, &Finding)> {
        self.launches
            .iter()
            .flat_map(|l| l.findings.iter().map(move |f| (l, f)))
            .filter(|(_, f)| self.mhc || !matches!(f, Finding::OverFloor { .. }))
            .collect()
    }

    /// The model's time over the floor for the whole program: its
    /// launches' model times over their floors, summed.
    pub fn ratio(&self) -> f64 {
        let model: f64 = self.launches.iter().map(LaunchAudit::model_s).sum();
        let floor: f64 = self.launches.iter().map(|l| l.floor_s).sum();
        if floor > 0.0 { model / floor } else { 0.0 }
    }
}

/// Why the suite could not be built or audited.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A zoo model could not be built at the suite's shapes.
    #[error("{program}: {message}")]
    Build {
        /// The model.
        program: String,
        /// Why.
        message: String,
    },
    /// A program failed to build or lower.
    #[error("{program}: {source}")]
    Compile {
        /// The program.
        program: String,
        /// Why.
        source: CompileError,
    },
    /// A program failed to audit.
    #[error("{program}: {source}")]
    Audit {
        /// The program.
        program: String,
        /// Why.
        source: AuditError,
    },
}

/// The programs of the suite at `shapes`.
pub fn suite(shapes: &AuditShapes) -> Result<Vec<AuditProgram>, SuiteError> {
    let mut out = Vec::new();
    let (t, n, c) = (shapes.tokens, shapes.streams, shapes.hidden);
    let zoo = |name: &str, args: ModelArgs| {
        build_model(name, &args)
            .map(|m| m.graph)
            .map_err(|e| SuiteError::Build {
                program: name.to_string(),
                message: e.to_string(),
            })
    };
    for dtype in [DType::F32, DType::Bf16] {
        let stage = |layer_fn| ModelArgs {
            tokens: Some(t),
            streams: Some(n),
            hidden: Some(c),
            dtype: Some(dtype),
            layer_fn,
            ..ModelArgs::default()
        };
        for (model, label, layer_fn) in [
            ("mhc-pre", "mhc-pre", None),
            ("hc-pre", "hc-pre", None),
            ("mhc-post", "mhc-post", None),
            ("mhc-sublayer", "mhc-sublayer", None),
            (
                "mhc-sublayer",
                "mhc-sublayer linear-tanh",
                Some(LayerFn::LinearTanh),
            ),
        ] {
            out.push(AuditProgram {
                name: format!("{label} {dtype} T={t} C={c}"),
                mhc: model != "hc-pre" && layer_fn.is_none(),
                graph: zoo(model, stage(layer_fn))?,
            });
        }
        let sink = ModelArgs {
            tokens: Some(t),
            streams: Some(n),
            dtype: Some(dtype),
            ..ModelArgs::default()
        };
        out.push(AuditProgram {
            name: format!("sinkhorn {dtype} T={t}"),
            mhc: true,
            graph: zoo("sinkhorn", sink)?,
        });
        // The TileKernels variant: the production one (its `eps` adds a
        // division's operand, so it is the larger of the two kernels).
        let variant = SinkhornVariant::TileKernels;
        out.push(AuditProgram {
            name: format!("mhc_pre_grad {dtype} T={t} C={c}"),
            mhc: true,
            graph: pre_grad(dtype, t, n, c, variant)?,
        });
        out.push(AuditProgram {
            name: format!("sinkhorn_grad {dtype} T={t}"),
            mhc: true,
            graph: sinkhorn_grad(dtype, t, n, variant)?,
        });
        out.push(AuditProgram {
            name: format!("mhc_post_grad {dtype} T={t} C={c}"),
            mhc: true,
            graph: post_grad(dtype, t, n, c)?,
        });
        for model in ["mhc-block", "hc-block", "residual-block"] {
            let args = ModelArgs {
                tokens: Some(shapes.block_tokens),
                streams: (model != "residual-block").then_some(n),
                hidden: Some(shapes.block_hidden),
                heads: Some(shapes.heads),
                dtype: Some(dtype),
                ..ModelArgs::default()
            };
            out.push(AuditProgram {
                name: format!(
                    "{model} {dtype} T={} C={} heads={}",
                    shapes.block_tokens, shapes.block_hidden, shapes.heads
                ),
                mhc: false,
                graph: zoo(model, args)?,
            });
        }
    }
    Ok(out)
}

/// A backward op's graph from its IR text: shapes the parser or the type
/// checker refuses are an error of the suite, not a panic.
fn parsed(program: &str, text: &str) -> Result<Graph, SuiteError> {
    birkhoff_ir::parse_graph(text).map_err(|e| SuiteError::Build {
        program: program.to_string(),
        message: e.to_string(),
    })
}

fn pre_grad(
    d: DType,
    t: usize,
    n: usize,
    c: usize,
    v: SinkhornVariant,
) -> Result<Graph, SuiteError> {
    let m = n * (n + 2);
    let k = n * c;
    let text = format!(
        "graph @mhc_pre_grad(%x: {d}[{t},{n},{c}], %fn: {d}[{m},{k}], %scale: {d}[3], %base: {d}[{m}], %dl: {d}[{t},{c}], %dp: {d}[{t},{n}], %dc: {d}[{t},{n},{n}]) -> (d_x: {d}[{t},{n},{c}], d_fn: {d}[{m},{k}], d_scale: {d}[3], d_base: {d}[{m}]) {{
  %7 = mhc_pre_grad %x, %fn, %scale, %base, %dl, %dp, %dc, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant={v}, iters=20, eps={e} : ({d}[{t},{n},{c}], {d}[{m},{k}], {d}[3], {d}[{m}])
  %8 = get %7, index=0 : {d}[{t},{n},{c}]
  %9 = get %7, index=1 : {d}[{m},{k}]
  %10 = get %7, index=2 : {d}[3]
  %11 = get %7, index=3 : {d}[{m}]
  return %8, %9, %10, %11
}}",
        v = v.name(),
        e = v.default_eps(),
    );
    parsed("mhc_pre_grad", &text)
}

fn sinkhorn_grad(d: DType, t: usize, n: usize, v: SinkhornVariant) -> Result<Graph, SuiteError> {
    let text = format!(
        "graph @sinkhorn_grad(%x: {d}[{t},{n},{n}], %dy: {d}[{t},{n},{n}]) -> (dx: {d}[{t},{n},{n}]) {{
  %2 = sinkhorn_grad %x, %dy, variant={v}, iters=20, eps={e} : {d}[{t},{n},{n}]
  return %2
}}",
        v = v.name(),
        e = v.default_eps(),
    );
    parsed("sinkhorn_grad", &text)
}

fn post_grad(d: DType, t: usize, n: usize, c: usize) -> Result<Graph, SuiteError> {
    let text = format!(
        "graph @mhc_post_grad(%f: {d}[{t},{c}], %x: {d}[{t},{n},{c}], %post: {d}[{t},{n}], %comb: {d}[{t},{n},{n}], %dy: {d}[{t},{n},{c}]) -> (d_f: {d}[{t},{c}], d_x: {d}[{t},{n},{c}], d_post: {d}[{t},{n}], d_comb: {d}[{t},{n},{n}]) {{
  %5 = mhc_post_grad %f, %x, %post, %comb, %dy : ({d}[{t},{c}], {d}[{t},{n},{c}], {d}[{t},{n}], {d}[{t},{n},{n}])
  %6 = get %5, index=0 : {d}[{t},{c}]
  %7 = get %5, index=1 : {d}[{t},{n},{c}]
  %8 = get %5, index=2 : {d}[{t},{n}]
  %9 = get %5, index=3 : {d}[{t},{n},{n}]
  return %6, %7, %8, %9
}}"
    );
    parsed("mhc_post_grad", &text)
}

/// Compiles one program for the GPU (optimized, as `compile --target gpu`
/// does) and audits it.
pub fn audit_program(
    p: &AuditProgram,
    ptxas: Option<&Path>,
    device: &DeviceModel,
) -> Result<ProgramAudit, SuiteError> {
    let opts = CompileOptions {
        target: Target::Gpu,
        ..CompileOptions::default()
    };
    let program = kernel_program(&p.graph, &opts).map_err(|source| SuiteError::Compile {
        program: p.name.clone(),
        source,
    })?;
    let launches =
        audit(&program, &opts.codegen, ptxas, device).map_err(|source| SuiteError::Audit {
            program: p.name.clone(),
            source,
        })?;
    Ok(ProgramAudit {
        name: p.name.clone(),
        mhc: p.mhc,
        launches,
    })
}
