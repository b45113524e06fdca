//! The general recomputation planner: the chain DP against brute force, the
//! DAG heuristic's guarantees, the rewrite's semantics and its agreement
//! with the simulator, and errors on bad input.

use std::collections::BTreeMap;
use std::sync::Mutex;

use birkhoff_ir::{
    DType, Graph, InputKind, InterpOptions, Op, Tensor, TensorType, ValueId, interpret, parse_graph,
};
use birkhoff_recompute::{
    GeneralPlan, Method, Objective, Policy, RecomputeError, Step, TensorProgram, apply,
    brute_force, chain_dp, greedy, plan,
};
use proptest::prelude::*;

/// `default` cases unless `PROPTEST_CASES` says otherwise.
fn config(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

// ---- abstract programs ------------------------------------------------------

/// One step of a generated program: bytes, integer cost (sums stay exact),
/// argument picks (reduced modulo the allowed range), recomputable, output.
fn step_strategy() -> impl Strategy<Value = (u64, u32, Vec<usize>, bool, bool)> {
    (
        0u64..100,
        1u32..10,
        prop::collection::vec(0usize..64, 0..3),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.15),
    )
}

/// A program whose forward part is a chain of `fwd` steps and whose
/// backward steps read arbitrary earlier steps.
fn chain_program() -> impl Strategy<Value = TensorProgram> {
    (
        prop::collection::vec(step_strategy(), 1..8),
        prop::collection::vec(step_strategy(), 1..7),
    )
        .prop_map(|(fwd, bwd)| {
            let nf = fwd.len();
            let mut steps: Vec<Step> = fwd
                .iter()
                .enumerate()
                .map(|(i, (b, c, _, rc, out))| Step {
                    // Some steps copy an operand while they run.
                    scratch: if c % 3 == 0 { *b / 2 } else { 0 },
                    recomputable: *rc,
                    output: *out,
                    ..Step::new(*b, f64::from(*c), if i == 0 { vec![] } else { vec![i - 1] })
                })
                .collect();
            for (j, (b, c, args, rc, out)) in bwd.iter().enumerate() {
                let here = nf + j;
                let mut a: Vec<usize> = args.iter().map(|x| x % here).collect();
                a.dedup();
                steps.push(Step {
                    scratch: if c % 3 == 0 { *b / 2 } else { 0 },
                    recomputable: *rc,
                    output: *out,
                    ..Step::new(*b, f64::from(*c), a)
                });
            }
            TensorProgram::new(steps, nf).expect("generated programs are well formed")
        })
}

/// A program whose forward part is any DAG.
fn dag_program() -> impl Strategy<Value = TensorProgram> {
    (
        prop::collection::vec(step_strategy(), 1..9),
        prop::collection::vec(step_strategy(), 1..7),
    )
        .prop_map(|(fwd, bwd)| {
            let nf = fwd.len();
            let mut steps = Vec::new();
            for (i, (b, c, args, rc, out)) in fwd.iter().chain(&bwd).enumerate() {
                // Forward steps read earlier forward steps; backward steps anything earlier.
                let mut a: Vec<usize> = if i == 0 {
                    vec![]
                } else {
                    args.iter().map(|x| x % i).collect()
                };
                a.sort_unstable();
                a.dedup();
                steps.push(Step {
                    scratch: if c % 3 == 0 { *b / 2 } else { 0 },
                    recomputable: *rc,
                    output: *out,
                    ..Step::new(*b, f64::from(*c), a)
                });
            }
            TensorProgram::new(steps, nf).expect("generated programs are well formed")
        })
}

/// Budgets spread over the interesting range of a program.
fn objectives(p: &TensorProgram) -> Vec<Objective> {
    let keep_all = p.simulate(&[]).expect("keep-all is a plan").peak_bytes;
    let total_cost: f64 = p.steps().iter().map(|s| s.cost).sum();
    let mut v = vec![Objective::MinPeak { max_cost: None }];
    for c in [0.0, 1.0, 3.0, 7.0, total_cost / 2.0] {
        v.push(Objective::MinPeak { max_cost: Some(c) });
    }
    for m in [keep_all, keep_all * 3 / 4, keep_all / 2, 0] {
        v.push(Objective::MinCost { max_peak: m });
    }
    v
}

fn key(r: &Result<GeneralPlan, RecomputeError>) -> Result<(u64, f64), String> {
    match r {
        Ok(p) => Ok((p.peak_bytes, p.recompute_cost)),
        Err(e) => Err(e.to_string()),
    }
}

/// Worst observed heuristic-to-optimal peak ratio on random DAGs.
static WORST_DAG_RATIO: Mutex<f64> = Mutex::new(1.0);

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn chain_dp_equals_brute_force(p in chain_program()) {
        prop_assert!(p.is_chain());
        for obj in objectives(&p) {
            let dp = chain_dp(&p, obj).map(|o| o.expect("a chain"));
            let bf = brute_force(&p, obj);
            prop_assert_eq!(key(&dp), key(&bf), "objective {:?}", obj);
            if let Ok(dp) = dp {
                prop_assert_eq!(dp.method, Method::ChainDp);
                // The plan's numbers are the simulator's.
                let sim = p.simulate(&dp.recompute).unwrap();
                prop_assert_eq!(sim.peak_bytes, dp.peak_bytes);
                prop_assert_eq!(sim.recompute_cost, dp.recompute_cost);
            }
        }
    }

    #[test]
    fn heuristic_is_feasible_within_budget_and_no_worse_than_keeping_all(p in dag_program()) {
        let keep_all = p.simulate(&[]).unwrap().peak_bytes;
        for obj in objectives(&p) {
            let h = greedy(&p, obj);
            let bf = brute_force(&p, obj);
            match (&h, &bf) {
                (Ok(h), Ok(bf)) => {
                    let sim = p.simulate(&h.recompute).unwrap();
                    prop_assert_eq!(sim.peak_bytes, h.peak_bytes);
                    prop_assert!(h.peak_bytes <= keep_all);
                    prop_assert!(h.recompute.iter().all(|r| p.candidates().contains(r)));
                    match obj {
                        Objective::MinPeak { max_cost } => {
                            prop_assert!(h.recompute_cost <= max_cost.unwrap_or(f64::INFINITY));
                            prop_assert!(h.peak_bytes >= bf.peak_bytes);
                            if bf.peak_bytes > 0 {
                                let ratio = h.peak_bytes as f64 / bf.peak_bytes as f64;
                                let mut w = WORST_DAG_RATIO.lock().unwrap();
                                if ratio > *w {
                                    *w = ratio;
                                    eprintln!("worst DAG peak ratio so far: {ratio:.3}");
                                }
                            }
                        }
                        Objective::MinCost { max_peak } => {
                            prop_assert!(h.peak_bytes <= max_peak);
                            prop_assert!(h.recompute_cost >= bf.recompute_cost);
                        }
                    }
                }
                // The heuristic may miss a memory budget brute force meets,
                // never the other way round.
                (Err(RecomputeError::OverBudget { .. }), Ok(_)) => {
                    let is_mem = matches!(obj, Objective::MinCost { .. });
                    prop_assert!(is_mem);
                }
                (Err(_), Err(_)) => {}
                (h, bf) => prop_assert!(false, "heuristic {:?} vs brute force {:?}", key(h), key(bf)),
            }
        }
    }

    #[test]
    fn plan_uses_the_dp_on_chains(p in chain_program()) {
        let got = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
        prop_assert_eq!(got.method, Method::ChainDp);
    }
}

// ---- real graphs ------------------------------------------------------------

const UNARY: [Op; 5] = [Op::Tanh, Op::Sigmoid, Op::Neg, Op::Exp, Op::Abs];

/// `loss = sum(f_k(…f_1(x)))` differentiated with respect to `x`.
fn chain_graph(ops: &[usize], len: usize) -> Graph {
    let mut g = Graph::new("chain");
    let x = g.add_input("x", InputKind::Data, TensorType::new(DType::F64, [len]));
    let mut v = x;
    for &o in ops {
        v = g.add(UNARY[o % UNARY.len()].clone(), &[v]).unwrap();
    }
    let loss = g
        .add(
            Op::ReduceSum {
                axes: vec![0],
                keepdims: false,
            },
            &[v],
        )
        .unwrap();
    g.add_output("loss", loss);
    birkhoff_autodiff::grad(&g, "loss", &["x"]).unwrap()
}

/// A forward DAG: each node is a unary op of the previous one or a binary
/// op of two earlier ones; `loss = sum(last)`, differentiated w.r.t. `x`, `w`.
fn dag_graph(ops: &[(usize, usize, usize)], len: usize) -> Graph {
    let mut g = Graph::new("dag");
    let ty = TensorType::new(DType::F64, [len]);
    let x = g.add_input("x", InputKind::Data, ty.clone());
    let w = g.add_input("w", InputKind::Param, ty);
    let mut vals = vec![x, w];
    for &(kind, a, b) in ops {
        let (a, b) = (vals[a % vals.len()], vals[b % vals.len()]);
        let v = match kind % 4 {
            0 => g.add(Op::Mul, &[a, b]),
            1 => g.add(Op::Add, &[a, b]),
            2 => g.add(Op::Tanh, &[a]),
            _ => g.add(Op::Sigmoid, &[*vals.last().unwrap()]),
        }
        .unwrap();
        vals.push(v);
    }
    let loss = g
        .add(
            Op::ReduceSum {
                axes: vec![0],
                keepdims: false,
            },
            &[*vals.last().unwrap()],
        )
        .unwrap();
    g.add_output("loss", loss);
    birkhoff_autodiff::grad(&g, "loss", &["x", "w"]).unwrap()
}

fn inputs(g: &Graph, seed: &[f64]) -> BTreeMap<String, Tensor> {
    g.inputs()
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let ty = g.ty(v).clone();
            let n = ty.num_elements();
            let vals: Vec<f64> = (0..n).map(|i| seed[(i + 3 * k) % seed.len()]).collect();
            (
                g.input_name(v).unwrap().to_string(),
                Tensor::from_f64(ty, &vals).unwrap(),
            )
        })
        .collect()
}

fn outputs_bits(g: &Graph, ins: &BTreeMap<String, Tensor>) -> Vec<(String, Vec<u64>)> {
    interpret(g, ins, &InterpOptions::default())
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_f64_vec().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// `apply` keeps the outputs bit for bit, and the simulator's prediction
/// for the plan on the original equals its keep-all prediction on the
/// rewritten graph.
fn check_rewrite(g: &Graph, r: &[ValueId], seed: &[f64]) -> Result<(), TestCaseError> {
    let p = TensorProgram::from_graph(g, &["loss"], Policy::permissive()).unwrap();
    let rs = p.steps_of(g, r).unwrap();
    let predicted = p.simulate(&rs).unwrap();
    let h = apply(g, &["loss"], r).unwrap();
    let ins = inputs(g, seed);
    prop_assert_eq!(outputs_bits(g, &ins), outputs_bits(&h, &ins));
    let q = TensorProgram::from_graph(&h, &["loss"], Policy::permissive()).unwrap();
    let kept = q.simulate(&[]).unwrap();
    prop_assert_eq!(predicted.peak_bytes, kept.peak_bytes);
    // Every re-run step is one extra node in the rewritten graph.
    prop_assert_eq!(q.steps().len(), p.steps().len() + predicted.rerun.len());
    Ok(())
}

fn subset<T: Copy>(all: &[T], mask: u64) -> Vec<T> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| mask >> (i % 64) & 1 == 1)
        .map(|(_, &v)| v)
        .collect()
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn autodiff_chains_dp_equals_brute_force_and_rewrite_is_exact(
        ops in prop::collection::vec(0usize..5, 1..7),
        len in 1usize..5,
        mask in any::<u64>(),
        seed in prop::collection::vec(-3.0f64..3.0, 1..6),
    ) {
        let g = chain_graph(&ops, len);
        let p = TensorProgram::from_graph(&g, &["loss"], Policy::default()).unwrap();
        prop_assert!(p.is_chain());
        let keep_all = p.simulate(&[]).unwrap().peak_bytes;
        let total: f64 = p.steps().iter().map(|s| s.cost).sum();
        for obj in [
            Objective::MinPeak { max_cost: None },
            Objective::MinPeak { max_cost: Some(total / 4.0) },
            Objective::MinCost { max_peak: keep_all * 2 / 3 },
        ] {
            let dp = chain_dp(&p, obj).map(|o| o.expect("a chain"));
            prop_assert_eq!(key(&dp), key(&brute_force(&p, obj)));
        }
        let best = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
        check_rewrite(&g, &best.recompute_values(&p), &seed)?;
        let cands: Vec<ValueId> = p.candidates().iter().map(|&s| p.steps()[s].value.unwrap()).collect();
        check_rewrite(&g, &subset(&cands, mask), &seed)?;
    }

    #[test]
    fn autodiff_dags_rewrite_is_exact(
        ops in prop::collection::vec((0usize..4, 0usize..16, 0usize..16), 1..7),
        len in 1usize..4,
        mask in any::<u64>(),
        seed in prop::collection::vec(-2.0f64..2.0, 1..6),
    ) {
        let g = dag_graph(&ops, len);
        let p = TensorProgram::from_graph(&g, &["loss"], Policy::default()).unwrap();
        let h = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
        prop_assert!(h.peak_bytes <= h.keep_all_peak_bytes);
        check_rewrite(&g, &h.recompute_values(&p), &seed)?;
        let cands: Vec<ValueId> = p.candidates().iter().map(|&s| p.steps()[s].value.unwrap()).collect();
        check_rewrite(&g, &subset(&cands, mask), &seed)?;
    }
}

// ---- fixed cases ------------------------------------------------------------

/// A hand-written training graph with a fused tuple op: the backward part
/// reads two of `mhc_pre`'s results through `get`s.
const MHC: &str = "graph @mhc(%x: f64[2,2,3], param %fn: f64[8,6], param %scale: f64[3], param %base: f64[8]) -> (loss: f64[], d: f64[2,3], e: f64[2,2]) {
  %4 = mhc_pre %x, %fn, %scale, %base, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=tilekernels, iters=2, eps=1e-6 : (f64[2,3], f64[2,2], f64[2,2,2])
  %5 = get %4, index=0 : f64[2,3]
  %6 = get %4, index=1 : f64[2,2]
  %7 = tanh %5 : f64[2,3]
  %8 = reduce_sum %7, axes=[0, 1] : f64[]
  %9 = mul %7, %5 : f64[2,3]
  %10 = exp %6 : f64[2,2]
  return %8, %9, %10
}";

#[test]
fn tuple_ops_are_cloned_with_their_gets() {
    let g = parse_graph(MHC).unwrap();
    let p = TensorProgram::from_graph(&g, &["loss"], Policy::default()).unwrap();
    // The tuple %4 owns no storage; each get owns its element's, and every
    // get of it is forward (%6, read only by the backward %10, included).
    let tuple = p.step_of(ValueId::new(4)).unwrap();
    let first = p.step_of(ValueId::new(5)).unwrap();
    assert_eq!(p.steps()[tuple].bytes, 0);
    assert_eq!(p.steps()[first].bytes, 6 * 8);
    assert_eq!(p.steps()[first].args, vec![tuple]);
    assert!(p.candidates().contains(&first));
    assert!(p.step_of(ValueId::new(6)).unwrap() < p.forward_len());
    assert!(!p.is_saved(tuple));
    // Recomputing the element re-runs the fused op (and the get) in the
    // backward part.
    let h = apply(&g, &["loss"], &[ValueId::new(5)]).unwrap();
    let text = h.to_string();
    assert_eq!(text.matches("mhc_pre").count(), 2, "{text}");
    let seed = [0.3, -1.2, 0.7, 2.0, -0.4];
    check_rewrite(&g, &[ValueId::new(5)], &seed).unwrap();
}

#[test]
fn matmuls_are_not_recomputed_by_default() {
    let g = parse_graph(
        "graph @mm(%x: f64[4,4], param %w: f64[4,4]) -> (loss: f64[], d: f64[4,4]) {
           %2 = matmul %x, %w : f64[4,4]
           %3 = tanh %2 : f64[4,4]
           %4 = reduce_sum %3, axes=[0, 1] : f64[]
           %5 = mul %2, %3 : f64[4,4]
           return %4, %5
         }",
    )
    .unwrap();
    let p = TensorProgram::from_graph(&g, &["loss"], Policy::default()).unwrap();
    let mm = p.step_of(ValueId::new(2)).unwrap();
    assert!(!p.candidates().contains(&mm));
    assert!(matches!(
        p.simulate(&[mm]),
        Err(RecomputeError::NotRecomputable(_))
    ));
    let q = TensorProgram::from_graph(
        &g,
        &["loss"],
        Policy {
            recompute_matmul: true,
        },
    )
    .unwrap();
    assert!(q.candidates().contains(&mm));
}

#[test]
fn bad_input_is_an_error() {
    let g = chain_graph(&[0, 1, 2], 3);
    assert!(matches!(
        TensorProgram::from_graph(&g, &["nope"], Policy::default()),
        Err(RecomputeError::UnknownOutput(n)) if n == "nope"
    ));
    assert!(matches!(
        apply(&g, &["nope"], &[]),
        Err(RecomputeError::UnknownOutput(_))
    ));
    let x = g.inputs()[0];
    assert!(matches!(
        apply(&g, &["loss"], &[x]),
        Err(RecomputeError::Resident(_))
    ));
    assert!(matches!(
        apply(&g, &["loss"], &[ValueId::new(10_000)]),
        Err(RecomputeError::NoSuchValue(_))
    ));
    // The loss is a forward value the backward part does not read.
    let loss = g.outputs()[0].value;
    assert!(matches!(
        apply(&g, &["loss"], &[loss]),
        Err(RecomputeError::NotSaved(_))
    ));
    // A backward value is not a saved activation either.
    let d = g.outputs()[1].value;
    assert!(matches!(
        apply(&g, &["loss"], &[d]),
        Err(RecomputeError::NotSaved(_))
    ));

    assert!(matches!(
        TensorProgram::new(vec![Step::new(1, 1.0, vec![0])], 1),
        Err(RecomputeError::BadArgument { .. })
    ));
    assert!(matches!(
        TensorProgram::new(
            vec![Step::new(1, 1.0, vec![]), Step::new(1, 1.0, vec![0])],
            3
        ),
        Err(RecomputeError::BadBoundary { .. })
    ));
    let p = TensorProgram::new(
        vec![
            Step::new(1, 1.0, vec![]),
            Step::new(1, 1.0, vec![0]),
            Step::new(1, 1.0, vec![1]),
        ],
        2,
    )
    .unwrap();
    assert!(matches!(
        p.simulate(&[7]),
        Err(RecomputeError::NoSuchValue(_))
    ));
    assert!(matches!(p.simulate(&[0]), Err(RecomputeError::NotSaved(_))));
    assert!(matches!(
        plan(
            &p,
            Objective::MinPeak {
                max_cost: Some(f64::NAN)
            }
        ),
        Err(RecomputeError::BadBudget(_))
    ));
    assert!(matches!(
        plan(&p, Objective::MinCost { max_peak: 0 }),
        Err(RecomputeError::OverBudget { .. })
    ));
}

/// A 25-step forward chain whose backward part reads the chain's values
/// top down, as reverse-mode autodiff does.
fn long_chain(reverse: bool) -> TensorProgram {
    let n = 25;
    let steps: Vec<Step> = (0..n)
        .map(|i| Step::new(8, 1.0, if i == 0 { vec![] } else { vec![i - 1] }))
        .chain((0..n).map(|j| {
            let i = if reverse { n - 1 - j } else { j };
            let prev = if j == 0 { vec![i] } else { vec![i, n + j - 1] };
            Step::new(1, 1.0, prev)
        }))
        .collect();
    TensorProgram::new(steps, n).unwrap()
}

#[test]
fn brute_force_refuses_large_programs() {
    let p = long_chain(true);
    assert!(matches!(
        brute_force(&p, Objective::MinPeak { max_cost: None }),
        Err(RecomputeError::TooManyCandidates { candidates: 25, .. })
    ));
    // The chain DP handles it, and recomputing beats keeping all 25.
    let best = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
    assert_eq!(best.method, Method::ChainDp);
    assert!(best.peak_bytes < best.keep_all_peak_bytes, "{best}");
    // Under a cost budget of one re-run per value the peak is higher.
    let cheap = plan(
        &p,
        Objective::MinPeak {
            max_cost: Some(25.0),
        },
    )
    .unwrap();
    assert!(cheap.recompute_cost <= 25.0 && cheap.peak_bytes >= best.peak_bytes);
}

#[test]
fn chains_read_in_forward_order_fall_back_to_the_heuristic() {
    // Every partial plan is incomparable here, so the DP gives up early
    // rather than enumerate them; the heuristic still helps.
    let p = long_chain(false);
    let got = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
    assert_eq!(got.method, Method::Heuristic);
    assert!(got.peak_bytes <= got.keep_all_peak_bytes, "{got}");
}

#[test]
fn long_autodiff_chains_use_the_dp() {
    let ops: Vec<usize> = (0..40).map(|i| i * 7 % 5).collect();
    let g = chain_graph(&ops, 64);
    let p = TensorProgram::from_graph(&g, &["loss"], Policy::default()).unwrap();
    eprintln!(
        "chain {} fwd {} steps {}",
        p.is_chain(),
        p.forward_len(),
        p.steps().len()
    );
    let best = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
    assert_eq!(best.method, Method::ChainDp);
    assert!(best.peak_bytes < best.keep_all_peak_bytes, "{best}");
    let h = apply(&g, &["loss"], &best.recompute_values(&p)).unwrap();
    let q = TensorProgram::from_graph(&h, &["loss"], Policy::default()).unwrap();
    assert_eq!(q.simulate(&[]).unwrap().peak_bytes, best.peak_bytes);
}

#[test]
fn plans_print() {
    let p = TensorProgram::new(
        vec![
            Step::new(100, 1.0, vec![]),
            Step::new(100, 1.0, vec![0]),
            Step::new(100, 1.0, vec![1]),
            Step::new(1, 1.0, vec![2]),
            Step::new(1, 1.0, vec![3, 1]),
            Step::new(1, 1.0, vec![4, 0]),
        ],
        3,
    )
    .unwrap();
    let best = plan(&p, Objective::MinPeak { max_cost: None }).unwrap();
    let text = best.to_string();
    assert!(
        text.starts_with("recompute plan (chain-dp): peak"),
        "{text}"
    );
    assert!(text.contains("recompute: step"), "{text}");
}
