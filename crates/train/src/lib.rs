//! Training: parameters, AdamW, metrics and checkpoints around a compiled
//! gradient graph.
//!
//! A [`Trainer`] takes a model graph with a scalar `loss` output and the
//! names of its trainable parameters ([`TrainModel`]: a [`TrainGraph`],
//! or the LM of [`birkhoff::dsl::lm`]). Once, at construction, it
//! differentiates the graph ([`birkhoff::autodiff::grad`]), compiles the
//! result and the AdamW update ([`adamw_graph`]) for the chosen target,
//! and initializes the parameters from the model's inits with the seed.
//! Each [`Trainer::step`] then runs the gradient graph on a batch, checks
//! the loss and gradients are finite, clips, and runs the update graph.
//!
//! The Amax gain metric ([`amax_gain`]) comes from the model's optional
//! `h_res_<i>` outputs. The gradient graph returns only the loss and the
//! gradients, so the trainer appends the forward cones of the `h_res_<i>`
//! outputs to it, sharing every node the gradient graph already computes
//! (the mixing matrices are forward values the backward pass needs
//! anyway): the metric costs no recomputation, unlike running the forward
//! graph a second time.
//!
//! Training is deterministic: the same model, options, seed and batches
//! give bit-identical losses and parameters on the same machine and
//! target. Nothing is random after initialization.
//!
//! ```
//! use birkhoff::dsl::lm::{LmConfig, build_lm};
//! use birkhoff_train::data::{Batches, builtin_corpus};
//! use birkhoff_train::{TrainOptions, Trainer};
//!
//! let cfg = LmConfig { layers: 1, hidden: 16, heads: 2, ffn: 32, batch: 2, seq: 16, ..LmConfig::default() };
//! let model = build_lm(&cfg)?;
//! let opts = TrainOptions { steps: 3, ..TrainOptions::default() };
//! let mut trainer = Trainer::new(&model, &opts)?;
//! let corpus = builtin_corpus();
//! let mut batches = Batches::new(&corpus.train, cfg.batch, cfg.seq, 0)?;
//! for _ in 0..opts.steps {
//!     let (tokens, targets) = batches.next();
//!     let m = trainer.step(&tokens, &targets)?;
//!     println!("step {} loss {:.4} |g| {:.3}", m.step, m.loss, m.grad_norm);
//! }
//! # let dir = tempfile::tempdir()?;
//! # let checkpoint = dir.path().join("checkpoint.safetensors");
//! trainer.save(&checkpoint)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
pub mod data;
mod metrics;
mod optim;
mod stories;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use birkhoff::dsl::zoo::Inits;
use birkhoff::dsl::{Rng, random_tensor};
use birkhoff::ir::{Graph, Tensor, TensorData, TensorType, ValueId, verify};

pub use birkhoff::recompute::Recompute;
use birkhoff::{CompileError, CompileOptions, Executable, RecomputeOptions, Target, compile_with};

/// The step a checkpoint file was saved at (updates done), without
/// building a model: what a resume checks its flags against first.
///
/// # Errors
/// The file cannot be read or is not a checkpoint.
pub fn checkpoint_step(path: &std::path::Path) -> Result<usize, TrainError> {
    Ok(checkpoint::read(path)?.step)
}

pub use metrics::{amax_gain, global_norm};
pub use optim::{adamw_graph, bias_corrections, clip_scale, decays, lr_at};

/// Training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Total updates planned (the cosine schedule ends at the last one).
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (AdamW), for the parameters [`decays`]
    /// selects.
    pub weight_decay: f64,
    /// Linear warm-up length, in updates.
    pub warmup: usize,
    /// The cosine schedule's floor, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Adam's epsilon (added to the root of the second moment).
    pub adam_eps: f64,
    /// Clip gradients to this global L2 norm (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// Seed of the parameter initialization.
    pub seed: u64,
    /// Where the gradient and update graphs run.
    pub target: Target,
    /// What the gradient graph recomputes in its backward pass instead of
    /// keeping (`birkhoff::recompute`): on the CPU the loss and the
    /// gradients are bit-identical either way (`docs/recompute.md`).
    pub recompute: Recompute,
}

impl Default for TrainOptions {
    /// 1000 steps, lr 3e-3 with 10% of it as floor, 50 warm-up steps,
    /// β = (0.9, 0.95), eps 1e-8, weight decay 0.1, clipping at 1.0,
    /// seed 0, on the CPU.
    fn default() -> Self {
        TrainOptions {
            steps: 1000,
            lr: 3e-3,
            weight_decay: 0.1,
            warmup: 50,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            grad_clip: Some(1.0),
            seed: 0,
            target: Target::Cpu,
            recompute: Recompute::None,
        }
    }
}

/// A model a [`Trainer`] can train: a graph with a scalar float `loss`
/// output (and optionally `h_res_<i>` outputs), its trainable parameters
/// (graph inputs, by name, in a fixed order) and their initializations.
pub trait TrainModel {
    /// The forward graph.
    fn graph(&self) -> &Graph;
    /// Names of the trainable parameters, in order.
    fn params(&self) -> &[String];
    /// How each parameter is initialized (a missing entry: standard
    /// normal, as everywhere in the DSL).
    fn inits(&self) -> &Inits;
}

/// The plainest [`TrainModel`]: its three parts.
#[derive(Clone, Debug)]
pub struct TrainGraph {
    /// The forward graph.
    pub graph: Graph,
    /// Names of the trainable parameters, in order.
    pub params: Vec<String>,
    /// Their initializations.
    pub inits: Inits,
}

impl TrainModel for TrainGraph {
    fn graph(&self) -> &Graph {
        &self.graph
    }
    fn params(&self) -> &[String] {
        &self.params
    }
    fn inits(&self) -> &Inits {
        &self.inits
    }
}

impl TrainModel for birkhoff::dsl::lm::LmGraph {
    fn graph(&self) -> &Graph {
        &self.graph
    }
    fn params(&self) -> &[String] {
        &self.params
    }
    fn inits(&self) -> &Inits {
        &self.inits
    }
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A parameter name that is no input of the graph.
    #[error("unknown parameter '{name}': the graph has no input of that name")]
    UnknownParam {
        /// The name.
        name: String,
    },
    /// A parameter that cannot be trained (not a float tensor, or listed
    /// twice).
    #[error("parameter '{name}' cannot be trained: {reason}")]
    BadParam {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The graph has no `loss` output.
    #[error("the graph has no output named 'loss'")]
    NoLoss,
    /// The `loss` output is not a float scalar.
    #[error("the loss must be a float scalar, got {ty}")]
    NonScalarLoss {
        /// Its type.
        ty: TensorType,
    },
    /// A batch names an input that is no data input of the graph.
    #[error("'{name}' is not a data input of the graph")]
    UnknownInput {
        /// The name.
        name: String,
    },
    /// Differentiating the graph failed.
    #[error(transparent)]
    Autodiff(#[from] birkhoff::autodiff::AutodiffError),
    /// Building a graph (the update) failed.
    #[error(transparent)]
    Build(#[from] birkhoff::dsl::Error),
    /// A graph is invalid.
    #[error(transparent)]
    Ir(#[from] birkhoff::ir::Error),
    /// Compiling or running a graph failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The loss of an update was NaN or infinite; nothing was updated.
    #[error("the loss at step {step} is {loss}: training diverged")]
    NonFiniteLoss {
        /// The update's index (0-based).
        step: usize,
        /// The loss.
        loss: f64,
    },
    /// A gradient of an update had a NaN or infinity; nothing was
    /// updated.
    #[error("the gradient of '{param}' at step {step} is not finite: training diverged")]
    NonFiniteGrad {
        /// The update's index (0-based).
        step: usize,
        /// The first parameter whose gradient is not finite.
        param: String,
    },
    /// Reading or writing a checkpoint failed.
    #[error("checkpoint {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not also an error source).
        error: std::io::Error,
    },
    /// A checkpoint file is not a valid checkpoint.
    #[error("checkpoint {} is corrupt: {message}", path.display())]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint is valid but for another model.
    #[error("checkpoint {} does not match the model: {message}", path.display())]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// Encoding a checkpoint failed.
    #[error("{0}")]
    Checkpoint(String),
}

/// What one update measured.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// The update's index (0-based): [`Trainer::step_index`] before it.
    pub step: usize,
    /// The loss on the batch, before the update.
    pub loss: f64,
    /// The global L2 norm of the gradients, before clipping.
    pub grad_norm: f64,
    /// The learning rate of the update.
    pub lr: f64,
    /// Per sublayer, the forward Amax gain of its mixing matrix, maxed
    /// over tokens (empty without `h_res_<i>` outputs).
    pub amax_forward: Vec<f64>,
    /// Per sublayer, the backward Amax gain, maxed over tokens.
    pub amax_backward: Vec<f64>,
    /// Forward gain of the product of all sublayers' maps, maxed over
    /// tokens (1 without `h_res_<i>` outputs).
    pub composite_forward: f64,
    /// Backward gain of the product, maxed over tokens.
    pub composite_backward: f64,
    /// Wall time of the update, in seconds.
    pub seconds: f64,
}

/// Where one update's wall time went, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepSplit {
    /// Running the compiled gradient program (forward and backward).
    pub gradient: f64,
    /// The host's work around it: taking the batch in, the gradients'
    /// global norm and finiteness checks, the Amax gains.
    pub host: f64,
    /// The compiled AdamW program over all parameters, with moving the
    /// parameters and moments in and out of it.
    pub update: f64,
}

/// A model being trained: compiled gradient and update graphs, the
/// parameters and the AdamW moments.
pub struct Trainer {
    opts: TrainOptions,
    names: Vec<String>,
    types: Vec<TensorType>,
    data_inputs: Vec<String>,
    h_res: Vec<String>,
    forward: Graph,
    train: Executable,
    eval: Option<Executable>,
    adam: Executable,
    /// The gradient graph's inputs: the parameters by name, and the last
    /// batch.
    inputs: BTreeMap<String, Tensor>,
    /// The update graph's persistent inputs: `m.k`, `v.k`.
    moments: BTreeMap<String, Tensor>,
    step: usize,
    /// The last update's [`StepSplit`].
    split: StepSplit,
}

impl Trainer {
    /// Differentiates and compiles `model` and initializes its parameters
    /// from its inits with `opts.seed` (each from its own stream, forked
    /// from the seed by the parameter's name).
    pub fn new(model: &impl TrainModel, opts: &TrainOptions) -> Result<Trainer, TrainError> {
        let graph = model.graph();
        verify(graph).map_err(birkhoff::ir::Error::from)?;
        let names = model.params().to_vec();
        let types = param_types(graph, &names)?;
        let loss = graph
            .outputs()
            .iter()
            .find(|o| o.name == "loss")
            .ok_or(TrainError::NoLoss)?;
        let loss_ty = graph.ty(loss.value);
        if !loss_ty.shape.is_empty() || !loss_ty.dtype.is_float() {
            return Err(TrainError::NonScalarLoss {
                ty: loss_ty.clone(),
            });
        }
        let data_inputs = graph
            .inputs()
            .iter()
            .filter_map(|&v| graph.input_name(v))
            .filter(|n| !names.iter().any(|p| p == n))
            .map(str::to_string)
            .collect();
        let h_res = h_res_outputs(graph);

        let wrt: Vec<&str> = names.iter().map(String::as_str).collect();
        // Differentiating the fused forward graph gives the fused ops'
        // own backward (`sinkhorn_grad`, `mhc_post_grad`); the primitive
        // graph's backward would be primitives throughout.
        let fused = birkhoff::opt::optimize(graph, |_| false)
            .map_err(CompileError::from)?
            .graph;
        let grad = birkhoff::autodiff::grad(&fused, "loss", &wrt)?;
        let grad = with_forward_outputs(grad, &fused, &h_res)?;
        let copts = compile_options(opts);
        let forward_outputs = std::iter::once("loss".to_string())
            .chain(h_res.iter().cloned())
            .collect();
        let train = compile_with(
            &grad,
            &CompileOptions {
                recompute: Some(RecomputeOptions {
                    mode: opts.recompute,
                    forward_outputs,
                }),
                ..copts.clone()
            },
        )?;
        let typed: Vec<(String, TensorType)> =
            names.iter().cloned().zip(types.iter().cloned()).collect();
        let adam = compile_with(&adamw_graph(&typed, opts)?, &copts)?;

        let root = Rng::new(opts.seed);
        let mut inputs = BTreeMap::new();
        let mut moments = BTreeMap::new();
        for (name, ty) in names.iter().zip(&types) {
            let init = model.inits().get(name).cloned().unwrap_or_default();
            inputs.insert(name.clone(), random_tensor(ty, &init, &mut root.fork(name)));
            moments.insert(format!("m.{name}"), zeros_f32(&ty.shape));
            moments.insert(format!("v.{name}"), zeros_f32(&ty.shape));
        }
        Ok(Trainer {
            opts: opts.clone(),
            names,
            types,
            data_inputs,
            h_res,
            forward: graph.clone(),
            train,
            eval: None,
            adam,
            inputs,
            moments,
            step: 0,
            split: StepSplit::default(),
        })
    }

    /// One update on the batch `tokens`, `targets` (the graph's data
    /// inputs of those names).
    pub fn step(&mut self, tokens: &Tensor, targets: &Tensor) -> Result<StepMetrics, TrainError> {
        self.step_with(&lm_batch(tokens, targets))
    }

    /// One update on a batch given as the graph's data inputs by name.
    ///
    /// If the loss or a gradient is not finite, nothing changes and the
    /// error names the step.
    pub fn step_with(
        &mut self,
        batch: &BTreeMap<String, Tensor>,
    ) -> Result<StepMetrics, TrainError> {
        let start = Instant::now();
        let step = self.step;
        self.set_batch(batch)?;
        let batched = start.elapsed();
        let out = self.train.run(&self.inputs)?;
        let ran = start.elapsed();
        let mut out: HashMap<String, Tensor> = out.into_iter().collect();
        let loss = scalar(&out["loss"]);
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { step, loss });
        }
        let mut grads = Vec::with_capacity(self.names.len());
        let mut sum_sq = 0.0;
        for name in &self.names {
            let g = out
                .remove(&format!("d_{name}"))
                .expect("a gradient per parameter");
            let sq = metrics::sum_squares(&g);
            if !sq.is_finite() {
                return Err(TrainError::NonFiniteGrad {
                    step,
                    param: name.clone(),
                });
            }
            sum_sq += sq;
            grads.push(g);
        }
        let grad_norm = sum_sq.sqrt();
        let h_res: Vec<Tensor> = self
            .h_res
            .iter()
            .map(|n| out.remove(n).expect("an h_res output"))
            .collect();
        let (amax_forward, amax_backward, composite_forward, composite_backward) =
            amax_gain(&h_res);

        let lr = lr_at(&self.opts, step);
        let (bc1, bc2) = bias_corrections(&self.opts, step);
        let clip = clip_scale(self.opts.grad_clip, grad_norm);
        let checked = start.elapsed();
        self.update(grads, [lr, bc1, bc2, clip])?;
        let done = start.elapsed();
        self.split = StepSplit {
            gradient: (ran - batched).as_secs_f64(),
            host: (batched + (checked - ran)).as_secs_f64(),
            update: (done - checked).as_secs_f64(),
        };
        self.step += 1;
        Ok(StepMetrics {
            step,
            loss,
            grad_norm,
            lr,
            amax_forward,
            amax_backward,
            composite_forward,
            composite_backward,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Times every kernel of one gradient computation on `batch` (the
    /// graph's data inputs by name), without updating anything (CPU
    /// target; see [`Executable::profile`]).
    ///
    /// # Errors
    /// A bad batch, a failed run, or a target without profiles.
    pub fn profile_gradient(
        &mut self,
        batch: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<birkhoff::cpu::KernelTime>, TrainError> {
        self.set_batch(batch)?;
        Ok(self.train.profile(&self.inputs)?)
    }

    /// The compiled gradient graph (forward and backward pass): its
    /// optimized graph, kernel program and memory plan.
    pub fn gradient_executable(&self) -> &Executable {
        &self.train
    }

    /// Runs the AdamW graph; on error the parameters are left as they
    /// were.
    fn update(&mut self, grads: Vec<Tensor>, scalars: [f64; 4]) -> Result<(), TrainError> {
        // The parameters and moments move into the update's inputs and
        // back, never copied.
        let mut a = std::mem::take(&mut self.moments);
        for (key, x) in ["lr", "bc1", "bc2", "clip"].into_iter().zip(scalars) {
            a.insert(key.to_string(), Tensor::scalar_f32(x as f32));
        }
        for (name, g) in self.names.iter().zip(grads) {
            let p = self
                .inputs
                .remove(name)
                .expect("every parameter is an input");
            a.insert(format!("p.{name}"), p);
            a.insert(format!("g.{name}"), g);
        }
        let result = self.adam.run(&a);
        let outs = match result {
            Ok(outs) => outs,
            Err(e) => {
                a.retain(|k, _| !k.starts_with("g.") && k.contains('.'));
                outs_into(a, &mut self.inputs, &mut self.moments);
                return Err(e.into());
            }
        };
        outs_into(outs, &mut self.inputs, &mut self.moments);
        Ok(())
    }

    /// The loss on `tokens`, `targets` with the current parameters, no
    /// update (the forward graph, compiled on first use).
    pub fn eval_loss(&mut self, tokens: &Tensor, targets: &Tensor) -> Result<f64, TrainError> {
        self.eval_loss_with(&lm_batch(tokens, targets))
    }

    /// [`eval_loss`](Self::eval_loss) on a batch given by input name.
    pub fn eval_loss_with(&mut self, batch: &BTreeMap<String, Tensor>) -> Result<f64, TrainError> {
        self.set_batch(batch)?;
        if self.eval.is_none() {
            // The whole forward graph: its other outputs (the mixing
            // matrices) are values the loss needs anyway.
            self.eval = Some(compile_with(&self.forward, &compile_options(&self.opts))?);
        }
        let exe = self.eval.as_ref().expect("compiled above");
        let out = exe.run(&self.inputs)?;
        let loss = out
            .iter()
            .find(|(n, _)| n == "loss")
            .expect("checked in new");
        Ok(scalar(&loss.1))
    }

    /// Puts `batch` into the gradient graph's inputs, after checking every
    /// name is a data input.
    fn set_batch(&mut self, batch: &BTreeMap<String, Tensor>) -> Result<(), TrainError> {
        for (name, t) in batch {
            if !self.data_inputs.contains(name) {
                return Err(TrainError::UnknownInput { name: name.clone() });
            }
            self.inputs.insert(name.clone(), t.clone());
        }
        Ok(())
    }

    /// Where the last update's time went ([`StepSplit`]; zeros before
    /// the first).
    pub fn last_split(&self) -> StepSplit {
        self.split
    }

    /// Updates done so far (0 for a fresh trainer; a loaded one continues
    /// from its checkpoint's count).
    pub fn step_index(&self) -> usize {
        self.step
    }

    /// The options.
    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }

    /// The parameter names, in order.
    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    /// The current value of a parameter.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.names
            .iter()
            .any(|n| n == name)
            .then(|| &self.inputs[name])
    }

    /// The names of the `h_res_<i>` outputs the Amax metric reads, in
    /// depth order.
    pub fn h_res_outputs(&self) -> &[String] {
        &self.h_res
    }

    /// Saves the parameters, AdamW moments, step count and options to a
    /// safetensors file, atomically (see the `checkpoint` format in
    /// `docs/training.md`).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let tensors: Vec<(&Tensor, &Tensor, &Tensor)> = self
            .names
            .iter()
            .map(|n| {
                (
                    &self.inputs[n],
                    &self.moments[&format!("m.{n}")],
                    &self.moments[&format!("v.{n}")],
                )
            })
            .collect();
        let mut options = String::new();
        let _ = write!(options, "{:?}", self.opts);
        let bytes = checkpoint::encode(self.step, &self.names, &tensors, &options)?;
        birkhoff::write_atomic(path, &bytes).map_err(|error| TrainError::Io {
            path: path.to_path_buf(),
            error,
        })
    }

    /// A trainer for `model` with `opts`, resumed from the checkpoint at
    /// `path`: its parameters, moments and step count. The checkpoint must
    /// hold exactly the model's parameters (names, order, shapes, dtypes).
    /// Training on from here gives bit for bit what the run that saved it
    /// would have given next.
    pub fn load(
        model: &impl TrainModel,
        opts: &TrainOptions,
        path: &Path,
    ) -> Result<Trainer, TrainError> {
        let ckpt = checkpoint::read(path)?;
        let mismatch = |message: String| TrainError::CheckpointMismatch {
            path: path.to_path_buf(),
            message,
        };
        if ckpt.names != model.params() {
            let missing: Vec<&String> = model
                .params()
                .iter()
                .filter(|n| !ckpt.names.contains(n))
                .collect();
            let extra: Vec<&String> = ckpt
                .names
                .iter()
                .filter(|n| !model.params().contains(n))
                .collect();
            return Err(mismatch(if missing.is_empty() && extra.is_empty() {
                "the parameters are in another order".to_string()
            } else {
                format!("parameters missing from it: {missing:?}; not in the model: {extra:?}")
            }));
        }
        let mut trainer = Trainer::new(model, opts)?;
        for (name, ty) in trainer.names.iter().zip(&trainer.types) {
            let (p, m, v) = &ckpt.tensors[name];
            if p.ty() != ty {
                return Err(mismatch(format!(
                    "parameter '{name}' is {} in the checkpoint, {ty} in the model",
                    p.ty()
                )));
            }
            let f32_ty = TensorType::new(birkhoff::ir::DType::F32, ty.shape.clone());
            for (what, t) in [("first", m), ("second", v)] {
                if *t.ty() != f32_ty {
                    return Err(mismatch(format!(
                        "the {what} moment of '{name}' is {}, expected {f32_ty}",
                        t.ty()
                    )));
                }
            }
        }
        for (name, (p, m, v)) in ckpt.tensors {
            trainer.inputs.insert(name.clone(), p);
            trainer.moments.insert(format!("m.{name}"), m);
            trainer.moments.insert(format!("v.{name}"), v);
        }
        trainer.step = ckpt.step;
        Ok(trainer)
    }
}

/// Sorts the update graph's tensors `p.k` (back into `inputs` as `k`)
/// from `m.k`, `v.k` (into `moments`).
fn outs_into(
    outs: impl IntoIterator<Item = (String, Tensor)>,
    inputs: &mut BTreeMap<String, Tensor>,
    moments: &mut BTreeMap<String, Tensor>,
) {
    for (key, t) in outs {
        match key.strip_prefix("p.") {
            Some(name) => {
                inputs.insert(name.to_string(), t);
            }
            None => {
                moments.insert(key, t);
            }
        }
    }
}

/// The language model's batch as the graph's data inputs:
/// `{tokens, targets}`.
pub fn lm_batch(tokens: &Tensor, targets: &Tensor) -> BTreeMap<String, Tensor> {
    BTreeMap::from([
        ("tokens".to_string(), tokens.clone()),
        ("targets".to_string(), targets.clone()),
    ])
}

/// The compile options for `opts.target` (optimizer on).
fn compile_options(opts: &TrainOptions) -> CompileOptions {
    CompileOptions {
        target: opts.target,
        ..CompileOptions::default()
    }
}

/// A rank-0 tensor's value.
fn scalar(t: &Tensor) -> f64 {
    t.to_f64_vec().first().copied().unwrap_or(f64::NAN)
}

/// An `f32` tensor of zeros.
fn zeros_f32(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), TensorData::F32(vec![0.0; n])).expect("count matches")
}

/// The types of the parameters `names`, checked to be distinct float
/// inputs of `graph`.
fn param_types(graph: &Graph, names: &[String]) -> Result<Vec<TensorType>, TrainError> {
    let mut types = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let v = graph
            .input_by_name(name)
            .ok_or_else(|| TrainError::UnknownParam { name: name.clone() })?;
        let ty = graph.ty(v);
        if !ty.dtype.is_float() {
            return Err(TrainError::BadParam {
                name: name.clone(),
                reason: format!("its type {ty} is not a float type"),
            });
        }
        if names[..i].contains(name) {
            return Err(TrainError::BadParam {
                name: name.clone(),
                reason: "it is listed twice".to_string(),
            });
        }
        types.push(ty.clone());
    }
    Ok(types)
}

/// The graph's `h_res_<i>` outputs, by `i`.
fn h_res_outputs(graph: &Graph) -> Vec<String> {
    let mut found: Vec<(usize, String)> = graph
        .outputs()
        .iter()
        .filter_map(|o| {
            let i = o.name.strip_prefix("h_res_")?.parse::<usize>().ok()?;
            Some((i, o.name.clone()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// `grad` (a gradient graph of `fwd`) with `fwd`'s outputs `names` added.
/// The forward nodes they depend on are copied in only where `grad` does
/// not already compute the same node (same op on the same operands), so
/// values the gradient graph already has are shared, not recomputed.
fn with_forward_outputs(
    mut grad: Graph,
    fwd: &Graph,
    names: &[String],
) -> Result<Graph, TrainError> {
    if names.is_empty() {
        return Ok(grad);
    }
    let key = |g: &Graph, v: ValueId, args: &[ValueId]| format!("{:?} {args:?}", g.node(v).op);
    let mut existing: HashMap<String, ValueId> = HashMap::new();
    for v in grad.values() {
        if grad.input_name(v).is_none() {
            existing
                .entry(key(&grad, v, &grad.node(v).args))
                .or_insert(v);
        }
    }
    // The cone of the wanted outputs.
    let mut needed = vec![false; fwd.len()];
    for o in fwd.outputs().iter().filter(|o| names.contains(&o.name)) {
        needed[o.value.index()] = true;
    }
    for v in fwd.values().rev() {
        if needed[v.index()] {
            for a in &fwd.node(v).args {
                needed[a.index()] = true;
            }
        }
    }
    let mut remap: Vec<Option<ValueId>> = vec![None; fwd.len()];
    for v in fwd.values().filter(|v| needed[v.index()]) {
        let mapped = if let Some(name) = fwd.input_name(v) {
            grad.input_by_name(name)
                .ok_or_else(|| TrainError::UnknownInput {
                    name: name.to_string(),
                })?
        } else {
            let node = fwd.node(v);
            let args: Vec<ValueId> = node
                .args
                .iter()
                .map(|a| remap[a.index()].expect("operands come first"))
                .collect();
            let k = key(fwd, v, &args);
            match existing.get(&k) {
                Some(&same) => same,
                None => {
                    let mut n = node.clone();
                    n.args = args;
                    let new = grad.push(n);
                    existing.insert(k, new);
                    new
                }
            }
        };
        remap[v.index()] = Some(mapped);
    }
    for name in names {
        let o = fwd
            .outputs()
            .iter()
            .find(|o| &o.name == name)
            .expect("listed from fwd");
        grad.add_output(name.clone(), remap[o.value.index()].expect("in the cone"));
    }
    verify(&grad).map_err(birkhoff::ir::Error::from)?;
    Ok(grad)
}
