//! The training language model: its graph, initialization, loss, gradient
//! and fusion sites, at tiny sizes.

use std::collections::BTreeMap;

use birkhoff_dsl::lm::{Connection, LmConfig, LmGraph, build_lm, gate_bias};
use birkhoff_dsl::{Rng, random_tensor};
use birkhoff_ir::{DType, InputKind, InterpOptions, Op, Precision, Tensor, interpret, verify};

const ALL: [Connection; 3] = [Connection::Residual, Connection::Hc, Connection::Mhc];

fn tiny(connection: Connection) -> LmConfig {
    LmConfig {
        connection,
        layers: 1,
        hidden: 8,
        streams: 2,
        heads: 2,
        ffn: 16,
        vocab: 256,
        batch: 2,
        seq: 4,
        sinkhorn_iters: 20,
        dtype: DType::F64,
    }
}

/// Deterministic tokens and their shifted targets, as bytes.
fn data(cfg: &LmConfig, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::new(seed);
    let n = cfg.batch * (cfg.seq + 1);
    let bytes: Vec<i32> = (0..n).map(|_| (rng.next_u64() % 256) as i32).collect();
    let (mut toks, mut tgts) = (Vec::new(), Vec::new());
    for row in bytes.chunks(cfg.seq + 1) {
        toks.extend_from_slice(&row[..cfg.seq]);
        tgts.extend_from_slice(&row[1..]);
    }
    let t = |v: Vec<i32>| {
        Tensor::new(vec![cfg.batch, cfg.seq], birkhoff_ir::TensorData::I32(v)).unwrap()
    };
    (t(toks), t(tgts))
}

/// Parameters drawn from the model's own inits, plus tokens and targets.
fn inputs(lm: &LmGraph, cfg: &LmConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let root = Rng::new(seed);
    let mut m = BTreeMap::new();
    for name in &lm.params {
        let id = lm.graph.input_by_name(name).unwrap();
        let init = lm.inits[name].clone();
        m.insert(
            name.clone(),
            random_tensor(lm.graph.ty(id), &init, &mut root.fork(name)),
        );
    }
    let (tokens, targets) = data(cfg, seed);
    m.insert("tokens".into(), tokens);
    m.insert("targets".into(), targets);
    m
}

fn run(
    graph: &birkhoff_ir::Graph,
    inputs: &BTreeMap<String, Tensor>,
    precision: Precision,
) -> BTreeMap<String, Tensor> {
    let opts = InterpOptions {
        precision,
        ..InterpOptions::default()
    };
    interpret(graph, inputs, &opts)
        .unwrap()
        .into_iter()
        .collect()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_f64_vec()[0]
}

#[test]
fn graph_verifies_for_every_connection_and_several_sizes() {
    for connection in ALL {
        for (layers, hidden, streams, heads, batch, seq) in
            [(1, 8, 2, 2, 1, 1), (2, 16, 4, 4, 2, 8), (3, 12, 3, 3, 3, 5)]
        {
            let cfg = LmConfig {
                connection,
                layers,
                hidden,
                streams,
                heads,
                ffn: 2 * hidden,
                batch,
                seq,
                ..LmConfig::default()
            };
            let lm = build_lm(&cfg).unwrap();
            verify(&lm.graph).unwrap();
            let g = &lm.graph;
            // Primitive ops only: nothing for the optimizer to expand.
            assert!(
                g.nodes()
                    .iter()
                    .all(|n| !birkhoff_opt::is_expandable(&n.op)),
                "{connection}: a semantic op in the graph"
            );
            // Inputs: tokens, targets, then exactly the params.
            let names: Vec<&str> = g
                .inputs()
                .iter()
                .map(|&v| g.input_name(v).unwrap())
                .collect();
            assert_eq!(names[..2], ["tokens", "targets"]);
            assert_eq!(
                names[2..],
                lm.params.iter().map(String::as_str).collect::<Vec<_>>()
            );
            for &v in &g.inputs()[2..] {
                assert!(matches!(
                    g.node(v).op,
                    Op::Input {
                        kind: InputKind::Param,
                        ..
                    }
                ));
            }
            assert_eq!(g.ty(g.inputs()[0]).shape, [batch, seq]);
            assert_eq!(g.ty(g.inputs()[0]).dtype, DType::I32);
            // Outputs: loss, then one h_res per sublayer for HC / mHC.
            let outs = g.outputs();
            assert_eq!(outs[0].name, "loss");
            assert!(g.ty(outs[0].value).shape.is_empty());
            let h_res = if connection == Connection::Residual {
                0
            } else {
                2 * layers
            };
            assert_eq!(outs.len(), 1 + h_res);
            for (i, o) in outs[1..].iter().enumerate() {
                assert_eq!(o.name, format!("h_res_{i}"));
                assert_eq!(g.ty(o.value).shape, [batch * seq, streams, streams]);
            }
            // Every param has an init.
            assert_eq!(lm.inits.keys().collect::<Vec<_>>(), {
                let mut p: Vec<_> = lm.params.iter().collect();
                p.sort();
                p
            });
        }
    }
}

#[test]
fn parameter_names_and_order_are_stable() {
    let mhc = build_lm(&tiny(Connection::Mhc)).unwrap();
    let gates = ["fn", "scale", "base"];
    let attn = ["norm", "wq", "wk", "wv", "wo"];
    let mlp = ["norm", "w_gate", "w_up", "w_down"];
    let mut want = vec!["embed".to_string()];
    for (s, f) in [("attn", &attn[..]), ("mlp", &mlp[..])] {
        want.extend(gates.iter().chain(f).map(|p| format!("layer0.{s}.{p}")));
    }
    want.extend(["final_norm".to_string(), "unembed".to_string()]);
    assert_eq!(mhc.params, want);
    // HC has the same names; the residual model lacks only the gates.
    assert_eq!(build_lm(&tiny(Connection::Hc)).unwrap().params, want);
    let residual = build_lm(&tiny(Connection::Residual)).unwrap();
    let no_gates: Vec<_> = want
        .iter()
        .filter(|p| !gates.iter().any(|g| p.ends_with(&format!(".{g}"))))
        .cloned()
        .collect();
    assert_eq!(residual.params, no_gates);
    // Building twice gives the same graph.
    let again = build_lm(&tiny(Connection::Mhc)).unwrap();
    assert_eq!(again.graph.to_string(), mhc.graph.to_string());
}

/// Attention over `[B, T, C]` is attention over each sequence alone.
#[test]
fn batched_attention_keeps_sequences_apart() {
    let b = birkhoff_dsl::Builder::new("attn");
    attention_outputs(&b);
    let g = b.build().unwrap();
    let root = Rng::new(1);
    let ins: BTreeMap<String, Tensor> = ["q", "k", "v"]
        .iter()
        .map(|&n| {
            let ty = g.ty(g.input_by_name(n).unwrap());
            let t = random_tensor(ty, &birkhoff_dsl::Init::default(), &mut root.fork(n));
            (n.to_string(), t)
        })
        .collect();
    let out = run(&g, &ins, Precision::F64);
    let batched = out["batched"].to_f64_vec();
    let separate = [out["seq0"].to_f64_vec(), out["seq1"].to_f64_vec()].concat();
    assert_eq!(batched, separate);
}

/// `batched` on `q, k, v [2, 5, 4]`, and `seq0`, `seq1` on each sequence alone.
fn attention_outputs<'b>(b: &'b birkhoff_dsl::Builder) {
    let (q, k, v) = (
        b.input("q", DType::F64, &[2, 5, 4]),
        b.input("k", DType::F64, &[2, 5, 4]),
        b.input("v", DType::F64, &[2, 5, 4]),
    );
    b.output("batched", birkhoff_dsl::nn::causal_attention(q, k, v, 2));
    for i in 0..2 {
        let one = |x: birkhoff_dsl::Var<'b>| x.slice(&[i, 0, 0], &[i + 1, 5, 4]).reshape(&[5, 4]);
        let a = birkhoff_dsl::nn::causal_attention(one(q), one(k), one(v), 2);
        b.output(&format!("seq{i}"), a);
    }
}

#[test]
fn connection_names_round_trip() {
    for c in ALL {
        assert_eq!(c.to_string().parse::<Connection>().unwrap(), c);
    }
    assert!("resnet".parse::<Connection>().is_err());
}

#[test]
fn bad_configs_are_errors() {
    let base = tiny(Connection::Mhc);
    let cases = [
        (LmConfig { heads: 3, ..base }, "heads"),
        (LmConfig { streams: 1, ..base }, "streams"),
        (LmConfig { seq: 0, ..base }, "seq"),
        (
            LmConfig {
                dtype: DType::I32,
                ..base
            },
            "dtype",
        ),
        (
            LmConfig {
                sinkhorn_iters: 0,
                ..base
            },
            "iters",
        ),
        (
            LmConfig {
                vocab: 1 << 24,
                seq: 1 << 12,
                batch: 1 << 10,
                ..base
            },
            "seq",
        ),
    ];
    for (cfg, flag) in cases {
        let err = match build_lm(&cfg) {
            Ok(_) => panic!("--{flag}: {cfg:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("--{flag}")), "{err}");
    }
    // One stream is fine for the residual model: streams is ignored.
    let residual = LmConfig {
        connection: Connection::Residual,
        streams: 1,
        ..base
    };
    assert!(build_lm(&residual).is_ok());
}

/// The output projection starts small, so the initial loss is close to the
/// uniform prediction's `ln 256`: logits have std about
/// `0.02·sqrt(C)`, which raises the expected loss by about half their
/// variance (< 0.01 at C = 8..16).
#[test]
fn initial_loss_is_close_to_ln_vocab() {
    let ln256 = 256f64.ln();
    for connection in ALL {
        for (dtype, precision) in [(DType::F64, Precision::F64), (DType::F32, Precision::F32)] {
            let cfg = LmConfig {
                dtype,
                ..tiny(connection)
            };
            let lm = build_lm(&cfg).unwrap();
            let out = run(&lm.graph, &inputs(&lm, &cfg, 7), precision);
            let loss = scalar(&out["loss"]);
            assert!(
                (loss - ln256).abs() < 0.05,
                "{connection} {dtype}: initial loss {loss}, ln 256 = {ln256}"
            );
        }
    }
}

/// With every stream a copy of the embedding and the gates at rest, HC and
/// mHC compute almost what the residual model does.
#[test]
fn hc_and_mhc_start_close_to_the_residual_model() {
    let losses: Vec<f64> = ALL
        .iter()
        .map(|&c| {
            let cfg = tiny(c);
            let lm = build_lm(&cfg).unwrap();
            // Each weight is drawn from a stream named after it, so the
            // shared weights are the same in all three models.
            let ins = inputs(&lm, &cfg, 3);
            scalar(&run(&lm.graph, &ins, Precision::F64)["loss"])
        })
        .collect();
    for l in &losses[1..] {
        assert!((l - losses[0]).abs() < 2e-3, "{losses:?}");
    }
}

#[test]
fn h_res_at_init_mhc_doubly_stochastic_hc_near_identity() {
    for connection in [Connection::Hc, Connection::Mhc] {
        let cfg = LmConfig {
            layers: 2,
            streams: 4,
            ..tiny(connection)
        };
        let n = cfg.streams;
        let lm = build_lm(&cfg).unwrap();
        let out = run(&lm.graph, &inputs(&lm, &cfg, 11), Precision::F64);
        for i in 0..2 * cfg.layers {
            let h = out[&format!("h_res_{i}")].to_f64_vec();
            assert_eq!(h.len(), cfg.batch * cfg.seq * n * n);
            for m in h.chunks(n * n) {
                for k in 0..n {
                    let row: f64 = (0..n).map(|j| m[k * n + j]).sum();
                    let col: f64 = (0..n).map(|j| m[j * n + k]).sum();
                    for j in 0..n {
                        let want = match (connection, j == k) {
                            (Connection::Mhc, true) => 0.95,
                            (Connection::Mhc, false) => 0.05 / (n - 1) as f64,
                            (_, true) => 1.0,
                            (_, false) => 0.0,
                        };
                        // α = 0.01 times a unit-scale mix moves each entry a little.
                        assert!(
                            (m[k * n + j] - want).abs() < 0.02,
                            "{connection} h_res_{i}: {m:?}"
                        );
                    }
                    if connection == Connection::Mhc {
                        // Columns are normalized last; rows only approach 1
                        // (slowly for a strongly diagonal matrix, `docs/design.md` §3).
                        assert!((col - 1.0).abs() < 1e-5, "column sum {col}");
                        assert!((row - 1.0).abs() < 1e-3, "row sum {row}");
                    }
                }
            }
        }
    }
}

#[test]
fn gate_bias_gives_the_documented_maps() {
    let n = 4;
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let b = gate_bias(Connection::Mhc, n);
    assert_eq!(b.len(), n * (n + 2));
    assert!(b[..n].iter().all(|&z| (sigmoid(z) - 0.25).abs() < 1e-12));
    assert!(
        b[n..2 * n]
            .iter()
            .all(|&z| (2.0 * sigmoid(z) - 1.0).abs() < 1e-12)
    );
    let row = &b[2 * n..3 * n];
    let denom: f64 = row.iter().map(|z| z.exp()).sum();
    assert!((row[0].exp() / denom - 0.95).abs() < 1e-12);
    let hc = gate_bias(Connection::Hc, n);
    assert_eq!(hc[..n], [0.25; 4]);
    assert_eq!(hc[n..2 * n], [1.0; 4]);
    assert_eq!(hc[2 * n..3 * n], [1.0, 0.0, 0.0, 0.0]);
    assert!(gate_bias(Connection::Residual, n).is_empty());
}

#[test]
fn gradient_matches_finite_differences() {
    for connection in ALL {
        let cfg = tiny(connection);
        let lm = build_lm(&cfg).unwrap();
        let wrt: Vec<&str> = lm.params.iter().map(String::as_str).collect();
        let grad = birkhoff_autodiff::grad(&lm.graph, "loss", &wrt).unwrap();
        let mut ins = inputs(&lm, &cfg, 5);
        // Move the gates off their rest point so that every gate matters:
        // at init all streams are equal, and RMSNorm makes the first
        // sublayer blind to the scale of its input, so some gate gradients
        // vanish there.
        let mut rng = Rng::new(9);
        for (name, t) in ins.iter_mut() {
            if name.ends_with(".scale") {
                *t = Tensor::from_f64(t.ty().clone(), &[0.5, 0.7, 0.9]).unwrap();
            }
            if name.ends_with(".base") {
                let v: Vec<f64> = (0..t.data().len()).map(|_| 0.5 * rng.normal()).collect();
                *t = Tensor::from_f64(t.ty().clone(), &v).unwrap();
            }
        }
        let out = run(&grad, &ins, Precision::F64);
        let loss =
            |ins: &BTreeMap<String, Tensor>| scalar(&run(&lm.graph, ins, Precision::F64)["loss"]);
        // A few elements of several kinds of parameter.
        let token0 = ins["tokens"].to_f64_vec()[0] as usize;
        let mut probes = vec![
            ("embed", token0 * cfg.hidden + 1),
            ("layer0.attn.wq", 5),
            ("layer0.attn.wv", 9),
            ("layer0.mlp.w_down", 3),
            ("layer0.mlp.norm", 2),
            ("unembed", 17),
        ];
        if connection != Connection::Residual {
            probes.extend([
                ("layer0.attn.base", 1),
                ("layer0.mlp.fn", 3),
                ("layer0.mlp.fn", 21),
                ("layer0.mlp.scale", 0),
                ("layer0.mlp.scale", 2),
                ("layer0.mlp.base", 6),
            ]);
        }
        for (name, k) in probes {
            let g = out[&format!("d_{name}")].to_f64_vec()[k];
            // Not vacuous: only the first sublayer's gates (which see equal
            // streams) have gradients near the finite-difference noise.
            assert!(
                name.starts_with("layer0.attn.base") || g.abs() > 1e-6,
                "{connection} d_{name}[{k}] = {g}"
            );
            let h = 1e-5;
            let at = |delta: f64| {
                let mut moved = ins.clone();
                let t = &moved[name];
                let mut v = t.to_f64_vec();
                v[k] += delta;
                let t = Tensor::from_f64(t.ty().clone(), &v).unwrap();
                moved.insert(name.to_string(), t);
                loss(&moved)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g).abs() <= 1e-9 + 1e-4 * g.abs().max(fd.abs()),
                "{connection} d_{name}[{k}]: autodiff {g}, finite differences {fd}"
            );
        }
    }
}

#[test]
fn optimizer_finds_the_fusion_sites() {
    let cfg = LmConfig {
        layers: 2,
        hidden: 16,
        streams: 4,
        heads: 2,
        ffn: 32,
        batch: 2,
        seq: 4,
        dtype: DType::F32,
        ..tiny(Connection::Mhc)
    };
    for (connection, pre) in [(Connection::Mhc, "mhc_pre"), (Connection::Hc, "hc_pre")] {
        let lm = build_lm(&LmConfig { connection, ..cfg }).unwrap();
        let report = birkhoff_opt::optimize(&lm.graph, |_| false).unwrap().report;
        let sites = &report.sites;
        let sublayers = 2 * cfg.layers;
        assert_eq!(sites.get(pre), Some(&sublayers), "{connection}: {sites:?}");
        assert_eq!(
            sites.get("mhc_post"),
            Some(&sublayers),
            "{connection}: {sites:?}"
        );
    }
}
