//! The training runtime: loss falls, AdamW matches an f64 reference, the
//! schedule and decay rule, the Amax gain, checkpoints and errors.

use std::collections::BTreeMap;

use birkhoff::dsl::zoo::Inits;
use birkhoff::dsl::{Builder, Init, Rng, nn};
use birkhoff::ir::tolerance::Tolerance;
use birkhoff::ir::{DType, Tensor, TensorData, TensorType};
use birkhoff::{Target, compile};
use birkhoff_train::{
    StepMetrics, StepSplit, TrainError, TrainGraph, TrainOptions, Trainer, adamw_graph, amax_gain,
    clip_scale, decays, lr_at,
};

const VOCAB: usize = 16;
const BATCH: usize = 4;
const SEQ: usize = 8;

/// A tiny next-token classifier: one-hot embedding, tanh, RMSNorm with a
/// gain, output projection with a bias, cross-entropy. With `mix`, it
/// also emits two per-token 2×2 mixing matrices `h_res_0`, `h_res_1`
/// computed from parameters (and feeding the loss a little).
fn classifier(hidden: usize, mix: bool) -> TrainGraph {
    let t = BATCH * SEQ;
    let f = DType::F32;
    let b = Builder::new("classifier");
    let tokens = b.input("tokens", DType::I32, &[BATCH, SEQ]);
    let targets = b.input("targets", DType::I32, &[BATCH, SEQ]);
    let emb = b.param("emb", f, &[VOCAB, hidden]);
    let norm = b.param("norm", f, &[hidden]);
    let w = b.param("w_out", f, &[hidden, VOCAB]);
    let bias = b.param("bias", f, &[VOCAB]);
    let ids = b.iota(DType::I32, &[t, VOCAB], 1);
    let onehot = tokens.reshape(&[t, 1]).cmp_eq(ids).cast(f);
    let h = nn::rms_norm(onehot.matmul(emb).tanh(), Some(norm), 1e-6);
    let logits = h.matmul(w) + bias;
    let max = logits.max_over(&[1], true);
    let lse = (logits - max).exp().sum(&[1], true).log() + max;
    let picked = onehot_of(targets, ids, t) * logits;
    let mut loss = (lse.reshape(&[t]) - picked.sum(&[1], false)).mean(&[0], false);
    let mut params = vec!["emb", "norm", "w_out", "bias"];
    if mix {
        let gate = b.param("gate", f, &[VOCAB, 8]);
        let m = onehot.matmul(gate).tanh().reshape(&[t, 2, 2, 2]);
        for i in 0..2 {
            let hi = m.slice_axis(1, i, i + 1).reshape(&[t, 2, 2]);
            b.output(&format!("h_res_{i}"), hi);
            loss = loss + (hi * hi).mean(&[0, 1, 2], false) * 0.01;
        }
        params.push("gate");
    }
    b.output("loss", loss);
    let graph = b.build().expect("the classifier builds");
    let mut inits = Inits::new();
    for (name, std) in [("emb", 1.0), ("w_out", 0.3), ("gate", 0.5)] {
        inits.insert(name.to_string(), Init::Normal { mean: 0.0, std });
    }
    inits.insert("norm".to_string(), Init::Constant(1.0));
    inits.insert("bias".to_string(), Init::Constant(0.0));
    TrainGraph {
        graph,
        params: params.into_iter().map(str::to_string).collect(),
        inits,
    }
}

fn onehot_of<'b>(
    x: birkhoff::dsl::Var<'b>,
    ids: birkhoff::dsl::Var<'b>,
    t: usize,
) -> birkhoff::dsl::Var<'b> {
    x.reshape(&[t, 1]).cmp_eq(ids).cast(DType::F32)
}

/// Batch `k` of a learnable task: random tokens, target `(3x + 1) mod V`.
fn batch(k: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::new(1000 + k);
    let x: Vec<i32> = (0..BATCH * SEQ)
        .map(|_| (rng.next_u64() % VOCAB as u64) as i32)
        .collect();
    let y: Vec<i32> = x.iter().map(|&v| (3 * v + 1) % VOCAB as i32).collect();
    (
        Tensor::new([BATCH, SEQ], TensorData::I32(x)).unwrap(),
        Tensor::new([BATCH, SEQ], TensorData::I32(y)).unwrap(),
    )
}

fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        steps,
        lr: 3e-2,
        warmup: 3,
        weight_decay: 0.01,
        seed: 7,
        ..TrainOptions::default()
    }
}

fn train(model: &TrainGraph, opts: &TrainOptions, steps: usize) -> (Trainer, Vec<StepMetrics>) {
    let mut t = Trainer::new(model, opts).unwrap();
    let ms = (0..steps)
        .map(|k| {
            let (x, y) = batch(k as u64);
            t.step(&x, &y).unwrap()
        })
        .collect();
    (t, ms)
}

#[test]
fn loss_falls_deterministically() {
    let model = classifier(16, false);
    let opts = options(30);
    let (_, a) = train(&model, &opts, 30);
    let (_, b) = train(&model, &opts, 30);
    let losses: Vec<f64> = a.iter().map(|m| m.loss).collect();
    let again: Vec<f64> = b.iter().map(|m| m.loss).collect();
    assert_eq!(
        losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        again.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "same seed, same batches: bit-identical losses"
    );
    let (first, last) = (losses[0], losses[29]);
    // Starts near ln 16 ≈ 2.77; the map is deterministic, so it is learnt.
    assert!(first > 2.0, "initial loss {first}");
    assert!(last < 0.25 * first, "loss fell from {first} to only {last}");
    assert!(
        a.iter()
            .all(|m| m.grad_norm.is_finite() && m.seconds >= 0.0)
    );
    assert_eq!(a[0].lr, lr_at(&opts, 0));
    assert!(a[0].amax_forward.is_empty() && a[0].composite_forward == 1.0);
}

/// The split of an update's time covers its parts once each: every part
/// is measured, and together they are no more than the update's wall
/// time (taken after them).
#[test]
fn step_split_parts_add_up_to_the_step() {
    let model = classifier(16, false);
    let mut t = Trainer::new(&model, &options(3)).unwrap();
    assert_eq!(t.last_split(), StepSplit::default());
    for k in 0..3 {
        let (x, y) = batch(k);
        let m = t.step(&x, &y).unwrap();
        let s = t.last_split();
        assert!(s.gradient > 0.0 && s.update > 0.0 && s.host >= 0.0, "{s:?}");
        assert!(s.gradient + s.host + s.update <= m.seconds, "{s:?} {m:?}");
    }
}

/// AdamW in f64, as the optim module documents it.
#[allow(
    clippy::too_many_arguments,
    reason = "the update's inputs, spelled out"
)]
fn adamw_ref(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    o: &TrainOptions,
    lr: f64,
    t: i32,
    clip: f64,
    decay: bool,
) {
    for i in 0..p.len() {
        let g = g[i] * clip;
        m[i] = o.beta1 * m[i] + (1.0 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1.0 - o.beta2) * g * g;
        let mh = m[i] / (1.0 - o.beta1.powi(t));
        let vh = v[i] / (1.0 - o.beta2.powi(t));
        let wd = if decay { lr * o.weight_decay } else { 0.0 };
        p[i] = p[i] * (1.0 - wd) - lr * mh / (vh.sqrt() + o.adam_eps);
    }
}

#[test]
fn adamw_graph_matches_f64_reference() {
    let o = TrainOptions {
        weight_decay: 0.1,
        ..TrainOptions::default()
    };
    let shapes: [(&str, Vec<usize>); 2] = [("w", vec![3, 4]), ("b", vec![4])];
    let typed: Vec<(String, TensorType)> = shapes
        .iter()
        .map(|(n, s)| (n.to_string(), TensorType::new(DType::F32, s.clone())))
        .collect();
    let exe = compile(&adamw_graph(&typed, &o).unwrap(), Target::Cpu).unwrap();
    let mut rng = Rng::new(3);
    let mut state: Vec<[Vec<f64>; 3]> = shapes
        .iter()
        .map(|(_, s)| {
            let n: usize = s.iter().product();
            // Values that are exact in f32, so both sides start equal.
            let p = (0..n).map(|_| f64::from(rng.normal() as f32)).collect();
            [p, vec![0.0; n], vec![0.0; n]]
        })
        .collect();
    let to_t =
        |s: &[usize], x: &[f64]| Tensor::from_f64(TensorType::new(DType::F32, s), x).unwrap();
    for step in 0..4 {
        let lr = 1e-2 * (step + 1) as f64;
        let clip = if step == 2 { 0.5 } else { 1.0 };
        let (bc1, bc2) = birkhoff_train::bias_corrections(&o, step);
        let mut inputs = BTreeMap::new();
        for (k, x) in [("lr", lr), ("bc1", bc1), ("bc2", bc2), ("clip", clip)] {
            inputs.insert(k.to_string(), Tensor::scalar_f32(x as f32));
        }
        let mut grads = Vec::new();
        for ((name, s), [p, m, v]) in shapes.iter().zip(&state) {
            let g: Vec<f64> = (0..p.len())
                .map(|_| f64::from(rng.normal() as f32))
                .collect();
            inputs.insert(format!("p.{name}"), to_t(s, p));
            inputs.insert(format!("g.{name}"), to_t(s, &g));
            inputs.insert(format!("m.{name}"), to_t(s, m));
            inputs.insert(format!("v.{name}"), to_t(s, v));
            grads.push(g);
        }
        let out: BTreeMap<String, Tensor> = exe.run(&inputs).unwrap().into_iter().collect();
        for (((name, s), [p, m, v]), g) in shapes.iter().zip(&mut state).zip(&grads) {
            // The reference starts from the same f32-rounded state.
            adamw_ref(
                p,
                g,
                m,
                v,
                &o,
                f64::from(lr as f32),
                step as i32 + 1,
                clip,
                decays(s),
            );
            for (key, want) in [("p", &*p), ("m", &*m), ("v", &*v)] {
                let got = out[&format!("{key}.{name}")].to_f64_vec();
                // Per element, with an atol far below the table's f32 row:
                // the second moments are tiny, and a wrong update would hide
                // under 1e-6.
                let tol = Tolerance::new(1e-8, 1e-5);
                for (i, (&gv, &w)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        tol.accepts(gv, w),
                        "step {step} {key}.{name}[{i}]: graph {gv}, reference {w}"
                    );
                }
            }
            // Continue both from the graph's (f32) state.
            *p = out[&format!("p.{name}")].to_f64_vec();
            *m = out[&format!("m.{name}")].to_f64_vec();
            *v = out[&format!("v.{name}")].to_f64_vec();
        }
    }
}

#[test]
fn schedule_at_key_steps() {
    let o = TrainOptions {
        steps: 110,
        lr: 1.0,
        warmup: 10,
        min_lr_ratio: 0.1,
        ..TrainOptions::default()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(lr_at(&o, 0), 0.1));
    assert!(close(lr_at(&o, 4), 0.5));
    assert!(close(lr_at(&o, 9), 1.0));
    assert!(close(lr_at(&o, 10), 1.0), "the cosine starts at the peak");
    // Steps 10..=109 span 99 updates; the midpoint is halfway down.
    assert!(close(
        lr_at(&o, 10 + 99 / 2),
        0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 49.0 / 99.0).cos())
    ));
    assert!(close(lr_at(&o, 109), 0.1), "the floor at the last step");
    assert!(close(lr_at(&o, 500), 0.1), "held after it");
    let no_warmup = TrainOptions { warmup: 0, ..o };
    assert!(close(lr_at(&no_warmup, 0), 1.0));
    // Global-norm clipping scales down only norms above the limit.
    assert_eq!(clip_scale(Some(1.0), 4.0), 0.25);
    assert_eq!(clip_scale(Some(1.0), 0.5), 1.0);
    assert_eq!(clip_scale(None, 1e9), 1.0);
    // Monotone decreasing after warm-up.
    assert!((10..109).all(|s| lr_at(&o, s + 1) <= lr_at(&o, s)));
}

#[test]
fn weight_decay_only_on_matrices() {
    assert!(decays(&[16, 16]) && decays(&[2, 3, 4]));
    assert!(!decays(&[16]) && !decays(&[3]) && !decays(&[]));
    // With zero gradients (and moments), only decay moves a parameter.
    let o = TrainOptions {
        weight_decay: 0.5,
        ..TrainOptions::default()
    };
    let typed = vec![
        ("w".to_string(), TensorType::new(DType::F32, [2, 2])),
        ("gain".to_string(), TensorType::new(DType::F32, [2])),
    ];
    let exe = compile(&adamw_graph(&typed, &o).unwrap(), Target::Cpu).unwrap();
    let mut inputs = BTreeMap::new();
    for (k, x) in [("lr", 0.1), ("bc1", 10.0), ("bc2", 20.0), ("clip", 1.0)] {
        inputs.insert(k.to_string(), Tensor::scalar_f32(x));
    }
    for (name, ty) in &typed {
        let n = ty.shape.iter().product();
        inputs.insert(
            format!("p.{name}"),
            Tensor::from_f64(ty.clone(), &vec![2.0; n]).unwrap(),
        );
        for k in ["g", "m", "v"] {
            inputs.insert(
                format!("{k}.{name}"),
                Tensor::from_f64(ty.clone(), &vec![0.0; n]).unwrap(),
            );
        }
    }
    let out: BTreeMap<String, Tensor> = exe.run(&inputs).unwrap().into_iter().collect();
    assert_eq!(
        out["p.w"].to_f64_vec(),
        vec![f64::from(2.0f32 * (1.0 - 0.1 * 0.5)); 4]
    );
    assert_eq!(out["p.gain"].to_f64_vec(), vec![2.0; 2]);
}

fn mats(n: usize, values: &[f64]) -> Tensor {
    let tokens = values.len() / (n * n);
    Tensor::from_f64(TensorType::new(DType::F32, [tokens, n, n]), values).unwrap()
}

#[test]
fn amax_gain_on_known_matrices() {
    let id = mats(2, &[1.0, 0.0, 0.0, 1.0]);
    let (f, b, cf, cb) = amax_gain(&[id.clone(), id]);
    assert_eq!((f, b, cf, cb), (vec![1.0, 1.0], vec![1.0, 1.0], 1.0, 1.0));

    // M in the layout the model emits (x_next[j] = Σ_i M[i,j] x[i]):
    // the map is Mᵀ = [[1, 3], [-2, 4]]: row sums 4, 6; column sums 3, 7.
    let m = mats(2, &[1.0, -2.0, 3.0, 4.0]);
    let (f, b, cf, cb) = amax_gain(std::slice::from_ref(&m));
    assert_eq!((f, b, cf, cb), (vec![6.0], vec![7.0], 6.0, 7.0));

    // Two layers: A1 = Mᵀ, A2 = [[0, 1], [1, 0]]ᵀ (a swap), P = A2·A1 =
    // [[-2, 4], [1, 3]]: row sums 6, 4; column sums 3, 7.
    let swap = mats(2, &[0.0, 1.0, 1.0, 0.0]);
    let (f, b, cf, cb) = amax_gain(&[m, swap]);
    assert_eq!((f, b, cf, cb), (vec![6.0, 1.0], vec![7.0, 1.0], 6.0, 7.0));

    // The composite is per token: two tokens whose product gains differ
    // from the product of per-layer maxima.
    let a = mats(2, &[2.0, 0.0, 0.0, 1.0, /* token 2 */ 1.0, 0.0, 0.0, 2.0]);
    let (f, _, cf, _) = amax_gain(&[a.clone(), a]);
    assert_eq!(f, vec![2.0, 2.0]);
    assert_eq!(cf, 4.0, "diag(2,1)² and diag(1,2)² both have gain 4");
    let a1 = mats(2, &[2.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0]);
    let a2 = mats(2, &[1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 1.0]);
    let (f, _, cf, _) = amax_gain(&[a1, a2]);
    assert_eq!(f, vec![2.0, 2.0]);
    assert_eq!(cf, 2.0, "per token the product is diag(2, 2)");
    assert_eq!(amax_gain(&[]).2, 1.0);
}

#[test]
fn metrics_read_h_res_outputs() {
    let model = classifier(8, true);
    let mut t = Trainer::new(&model, &options(5)).unwrap();
    assert_eq!(t.h_res_outputs(), ["h_res_0", "h_res_1"]);
    // The gains of the forward outputs, evaluated by the interpreter from
    // the same initial parameters.
    let (x, y) = batch(0);
    let mut inputs = BTreeMap::from([
        ("tokens".to_string(), x.clone()),
        ("targets".to_string(), y.clone()),
    ]);
    for name in t.param_names() {
        inputs.insert(name.clone(), t.param(name).unwrap().clone());
    }
    let out: BTreeMap<String, Tensor> = compile(&model.graph, Target::Interp)
        .unwrap()
        .run(&inputs)
        .unwrap()
        .into_iter()
        .collect();
    let (f, b, cf, cb) = amax_gain(&[out["h_res_0"].clone(), out["h_res_1"].clone()]);
    let m = t.step(&x, &y).unwrap();
    let tol = Tolerance::new(1e-5, 1e-5);
    let near = |a: f64, b: f64| tol.accepts(a, b);
    assert!((m.loss - out["loss"].to_f64_vec()[0]).abs() < 1e-4);
    assert_eq!(m.amax_forward.len(), 2);
    for i in 0..2 {
        assert!(near(m.amax_forward[i], f[i]) && near(m.amax_backward[i], b[i]));
    }
    assert!(near(m.composite_forward, cf) && near(m.composite_backward, cb));
    assert!(m.composite_forward > 0.0);
}

#[test]
fn checkpoint_resume_is_bit_exact() {
    let model = classifier(8, true);
    let opts = options(8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resume.safetensors");
    let mut a = Trainer::new(&model, &opts).unwrap();
    for k in 0..3 {
        let (x, y) = batch(k);
        a.step(&x, &y).unwrap();
    }
    a.save(&path).unwrap();
    let mut b = Trainer::load(&model, &opts, &path).unwrap();
    assert_eq!(b.step_index(), 3);
    for name in a.param_names() {
        assert_eq!(a.param(name), b.param(name), "{name} round-trips");
    }
    for k in 3..6 {
        let (x, y) = batch(k);
        let ma = a.step(&x, &y).unwrap();
        let mb = b.step(&x, &y).unwrap();
        assert_eq!(ma.step, mb.step);
        assert_eq!(ma.loss.to_bits(), mb.loss.to_bits(), "step {k}");
        assert_eq!(ma.lr.to_bits(), mb.lr.to_bits());
    }
    for name in a.param_names() {
        assert_eq!(a.param(name), b.param(name), "{name} after resuming");
    }
    let (x, y) = batch(99);
    assert_eq!(
        a.eval_loss(&x, &y).unwrap().to_bits(),
        b.eval_loss(&x, &y).unwrap().to_bits()
    );
}

#[test]
fn bad_checkpoints_are_reported() {
    let model = classifier(8, false);
    let opts = options(4);
    let t = Trainer::new(&model, &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let temp_path = |name: &str| dir.path().join(name);
    let path = temp_path("good.safetensors");
    t.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let missing = temp_path("missing.safetensors");
    let err = Trainer::load(&model, &opts, &missing).err().unwrap();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");

    let garbage = temp_path("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let err = Trainer::load(&model, &opts, &garbage).err().unwrap();
    assert!(matches!(err, TrainError::CorruptCheckpoint { .. }), "{err}");

    let torn = temp_path("torn.safetensors");
    std::fs::write(&torn, &bytes[..bytes.len() - 10]).unwrap();
    let err = Trainer::load(&model, &opts, &torn).err().unwrap();
    assert!(matches!(err, TrainError::CorruptCheckpoint { .. }), "{err}");

    // Another width: same names, other shapes.
    let wider = classifier(12, false);
    let err = Trainer::load(&wider, &opts, &path).err().unwrap();
    assert!(
        matches!(err, TrainError::CheckpointMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("'emb'"), "{err}");

    // Another parameter set.
    let mixed = classifier(8, true);
    let err = Trainer::load(&mixed, &opts, &path).err().unwrap();
    assert!(
        matches!(err, TrainError::CheckpointMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("gate"), "{err}");
}

/// `loss = scale · Σ w²`, `scale` fed per batch.
fn scaled() -> TrainGraph {
    let b = Builder::new("scaled");
    let s = b.input("scale", DType::F32, &[]);
    let w = b.param("w", DType::F32, &[3]);
    b.output("loss", (w * w).sum(&[0], false) * s);
    TrainGraph {
        graph: b.build().unwrap(),
        params: vec!["w".to_string()],
        inits: Inits::new(),
    }
}

#[test]
fn non_finite_loss_stops_with_the_step() {
    let model = scaled();
    let mut t = Trainer::new(&model, &options(10)).unwrap();
    let feed = |x: f32| BTreeMap::from([("scale".to_string(), Tensor::scalar_f32(x))]);
    t.step_with(&feed(1.0)).unwrap();
    t.step_with(&feed(1.0)).unwrap();
    let before = t.param("w").unwrap().clone();
    let err = t.step_with(&feed(f32::NAN)).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFiniteLoss { step: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("step 2"), "{err}");
    assert_eq!(t.param("w").unwrap(), &before, "nothing updated");
    assert_eq!(t.step_index(), 2);
    let err = t.step_with(&feed(f32::INFINITY)).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFiniteLoss { step: 2, .. }),
        "{err}"
    );
    // Training goes on after a bad batch.
    assert_eq!(t.step_with(&feed(1.0)).unwrap().step, 2);
}

#[test]
fn construction_errors() {
    let mut m = scaled();
    m.params.push("nope".to_string());
    let err = Trainer::new(&m, &options(1)).err().unwrap();
    assert!(
        matches!(err, TrainError::UnknownParam { ref name } if name == "nope"),
        "{err}"
    );

    let b = Builder::new("vector_loss");
    let w = b.param("w", DType::F32, &[3]);
    b.output("loss", w * w);
    let m = TrainGraph {
        graph: b.build().unwrap(),
        params: vec!["w".to_string()],
        inits: Inits::new(),
    };
    let err = Trainer::new(&m, &options(1)).err().unwrap();
    assert!(matches!(err, TrainError::NonScalarLoss { .. }), "{err}");

    let b = Builder::new("no_loss");
    let w = b.param("w", DType::F32, &[3]);
    b.output("y", (w * w).sum(&[0], false));
    let m = TrainGraph {
        graph: b.build().unwrap(),
        params: vec!["w".to_string()],
        inits: Inits::new(),
    };
    assert!(matches!(
        Trainer::new(&m, &options(1)).err().unwrap(),
        TrainError::NoLoss
    ));

    let mut t = Trainer::new(&scaled(), &options(1)).unwrap();
    let err = t
        .step_with(&BTreeMap::from([(
            "w".to_string(),
            Tensor::scalar_f32(1.0),
        )]))
        .unwrap_err();
    assert!(matches!(err, TrainError::UnknownInput { .. }), "{err}");
}

/// Windows of a short repeating text, as bytes.
fn text_batch(k: usize, batch: usize, seq: usize) -> (Tensor, Tensor) {
    let text = b"the cat sat on the mat. the dog sat on the log. ";
    let at = |i: usize| i32::from(text[i % text.len()]);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let start = (k * 7 + b * 13) % text.len();
        for s in 0..seq {
            x.push(at(start + s));
            y.push(at(start + s + 1));
        }
    }
    (
        Tensor::new([batch, seq], TensorData::I32(x)).unwrap(),
        Tensor::new([batch, seq], TensorData::I32(y)).unwrap(),
    )
}

#[test]
fn tiny_mhc_lm_trains() {
    use birkhoff::dsl::lm::{Connection, LmConfig, build_lm};
    let cfg = LmConfig {
        connection: Connection::Mhc,
        layers: 1,
        hidden: 16,
        streams: 4,
        heads: 2,
        ffn: 32,
        batch: 2,
        seq: 16,
        ..LmConfig::default()
    };
    let lm = build_lm(&cfg).unwrap();
    let opts = TrainOptions {
        steps: 15,
        lr: 1e-2,
        warmup: 2,
        seed: 1,
        ..TrainOptions::default()
    };
    let mut t = Trainer::new(&lm, &opts).unwrap();
    let ms: Vec<StepMetrics> = (0..15)
        .map(|k| {
            let (x, y) = text_batch(k, cfg.batch, cfg.seq);
            t.step(&x, &y).unwrap()
        })
        .collect();
    let (first, last) = (ms[0].loss, ms[14].loss);
    assert!((first - 256f64.ln()).abs() < 0.5, "initial loss {first}");
    assert!(last < first - 1.0, "loss fell from {first} to only {last}");
    // Two sublayers whose mixing is (nearly) doubly stochastic: the gains
    // stay near 1 (the columns of `comb` sum to 1 after Sinkhorn's last
    // column normalization, so the forward gain is 1 up to rounding).
    assert_eq!(ms[0].amax_forward.len(), 2);
    for m in &ms {
        assert!(
            m.composite_forward > 0.5 && m.composite_forward < 1.5,
            "{m:?}"
        );
        assert!(
            m.composite_backward > 0.5 && m.composite_backward < 1.5,
            "{m:?}"
        );
    }
}

/// On a CUDA device (the `gpu` feature and a driver), the same training
/// run gives about the CPU's losses; skipped elsewhere. The tolerance is
/// loose on purpose: the GPU's matrix product reads bf16 operands, and
/// six Adam steps carry that rounding into the parameters.
#[test]
fn gpu_trains_like_cpu() {
    let model = classifier(8, true);
    let cpu = options(6);
    let gpu = TrainOptions {
        target: Target::Gpu,
        ..cpu
    };
    let mut on_gpu = match Trainer::new(&model, &gpu) {
        Ok(t) => t,
        Err(TrainError::Compile(birkhoff::CompileError::Gpu(e))) => {
            eprintln!("skipped: no GPU ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (_, want) = train(&model, &cpu, 6);
    for (k, w) in want.iter().enumerate() {
        let (x, y) = batch(k as u64);
        let got = on_gpu.step(&x, &y).unwrap();
        assert!(
            (got.loss - w.loss).abs() <= 3e-2 * w.loss.abs().max(1.0),
            "step {k}: gpu {} cpu {}",
            got.loss,
            w.loss
        );
    }
}

#[test]
fn non_finite_gradient_stops_with_the_parameter() {
    // loss = Σ sqrt(w) at w = 0: a finite loss with an infinite gradient.
    let b = Builder::new("sqrt");
    let w = b.param("w", DType::F32, &[2]);
    b.output("loss", w.sqrt().sum(&[0], false));
    let model = TrainGraph {
        graph: b.build().unwrap(),
        params: vec!["w".to_string()],
        inits: Inits::from([("w".to_string(), Init::Constant(0.0))]),
    };
    let mut t = Trainer::new(&model, &options(3)).unwrap();
    let err = t.step_with(&BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFiniteGrad { step: 0, ref param } if param == "w"),
        "{err}"
    );
    assert_eq!(t.step_index(), 0);
    let g = Tensor::from_f64(TensorType::new(DType::F32, [2]), &[3.0, 4.0]).unwrap();
    let h = Tensor::from_f64(TensorType::new(DType::F64, [1]), &[12.0]).unwrap();
    assert_eq!(birkhoff_train::global_norm([&g, &h]), 13.0);
}
