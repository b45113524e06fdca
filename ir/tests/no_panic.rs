//! Robustness: no input text makes the parser panic (random mutations of
//! valid IR text, token soup, arbitrary strings), and `infer` / `infer_type`
//! never panic on arbitrary ops and operand types (tuples included) and
//! agree with the verifier.

use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, Literal, Op, OpKind, PreMixSpec, SinkhornSpec,
    SinkhornVariant, TensorType, Type, ValueId, infer, infer_type, parse_and_verify, parse_graph,
    parse_module, parse_module_with_locations, verify, verify_located,
};
use birkhoff_testkit::graph;
use proptest::prelude::*;

/// One edit to IR text.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    FlipBit(usize, u8),
    SetByte(usize, u8),
    DeleteToken(usize),
    DuplicateToken(usize),
    SwapTokens(usize, usize),
    InsertToken(usize, &'static str),
}

const VOCABULARY: &[&str] = &[
    "graph",
    "@g",
    "(",
    ")",
    "%x",
    "%0",
    "%1",
    "%",
    "@",
    ":",
    "f32",
    "bf16",
    "i32",
    "bool",
    "[",
    "]",
    "[]",
    "2",
    "0",
    "-1",
    ",",
    "->",
    "-",
    ">",
    "{",
    "}",
    "=",
    "add",
    "const",
    "return",
    "axes",
    "axis",
    "keepdims",
    "perm",
    "start",
    "end",
    "inf",
    "-inf",
    "nan",
    "0x3f800000",
    "0x3f80",
    "param",
    "input",
    "\n",
    ";",
    "reduce_sum",
    "concat",
    "slice",
    "iota",
    "matmul",
    "1e-45",
    "1e",
    "1.5",
    "true",
    "é",
    "\u{0}",
    "\t",
    "get",
    "index",
    "mhc_pre",
    "hc_pre",
    "mhc_post",
    "sinkhorn",
    "row_norm",
    "softmax",
    "variant",
    "paper",
    "tilekernels",
    "iters",
    "eps",
    "norm_eps",
    "1e-6",
    "(f32[2], f32[2])",
    "%4",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<prop::sample::Index>();
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        any::<usize>().prop_map(Mutation::DeleteToken),
        any::<usize>().prop_map(Mutation::DuplicateToken),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::SwapTokens(i, j)),
        (any::<usize>(), ix)
            .prop_map(|(i, w)| Mutation::InsertToken(i, VOCABULARY[w.index(VOCABULARY.len())])),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut tokens: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
    let n = bytes.len().max(1);
    let t = tokens.len().max(1);
    match *m {
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::FlipBit(i, b) => {
            if let Some(x) = bytes.get_mut(i % n) {
                *x ^= 1 << b;
            }
        }
        Mutation::SetByte(i, b) => {
            if let Some(x) = bytes.get_mut(i % n) {
                *x = b;
            }
        }
        Mutation::DeleteToken(i) if !tokens.is_empty() => {
            tokens.remove(i % t);
            return tokens.concat();
        }
        Mutation::DuplicateToken(i) if !tokens.is_empty() => {
            tokens.insert(i % t, tokens[i % t]);
            return tokens.concat();
        }
        Mutation::SwapTokens(i, j) if !tokens.is_empty() => {
            tokens.swap(i % t, j % t);
            return tokens.concat();
        }
        Mutation::InsertToken(i, w) => {
            tokens.insert(i % (tokens.len() + 1), w);
            return tokens.concat();
        }
        _ => {}
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs every entry point on `text`; all must return. If the text is a
/// valid module, it must also round-trip.
fn check_no_panic(text: &str) -> Result<(), TestCaseError> {
    let _ = parse_graph(text);
    if let Ok(located) = parse_module_with_locations(text) {
        for (g, map) in &located {
            // Unverified graphs still print and verify without panicking.
            let _ = g.to_string();
            let _ = verify_located(g, map);
        }
    }
    if let Ok(gs) = parse_and_verify(text) {
        let printed: String = gs.iter().map(|g| g.to_string()).collect();
        let again = parse_module(&printed);
        prop_assert!(again.is_ok(), "{:?}\n{}", again, printed);
        prop_assert_eq!(again.unwrap_or_default(), gs);
    }
    Ok(())
}

proptest! {
    #[test]
    fn mutated_ir_never_panics_the_parser(
        g in graph(),
        others in proptest::collection::vec(graph(), 0..2),
        edits in proptest::collection::vec(mutation(), 1..=4),
    ) {
        let mut text = g.to_string();
        for o in &others {
            text.push_str(&o.to_string());
        }
        for m in &edits {
            text = apply(&text, m);
        }
        check_no_panic(&text)?;
    }

    #[test]
    fn token_soup_never_panics_the_parser(
        words in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
        spaced in any::<bool>(),
    ) {
        let sep = if spaced { " " } else { "" };
        let text: Vec<&str> = words.iter().map(|w| *w.get(VOCABULARY)).collect();
        check_no_panic(&text.join(sep))?;
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(text in ".{0,200}") {
        check_no_panic(&text)?;
    }

    #[test]
    fn infer_agrees_with_infer_type_and_the_verifier(
        op in arbitrary_op(),
        tys in prop_oneof![
            proptest::collection::vec(birkhoff_testkit::tensor_type(), 0..5),
            mix_operand_types(),
        ],
    ) {
        check_op(&op, &tys)?;
    }

    #[test]
    fn fused_ops_on_near_valid_operands(op in fused_op(), tys in mix_operand_types()) {
        check_op(&op, &tys)?;
    }

    #[test]
    fn tuple_operands_are_refused_by_every_op_but_get(
        op in arbitrary_op(),
        tys in proptest::collection::vec(birkhoff_testkit::tensor_type(), 0..4),
        at in any::<prop::sample::Index>(),
    ) {
        // A well-typed hc_pre provides the tuple, placed among the operands.
        let tuple = Type::Tuple(vec![
            TensorType::new(DType::F32, [2, 3]),
            TensorType::new(DType::F32, [2, 1]),
            TensorType::new(DType::F32, [2, 1, 1]),
        ]);
        let mut args: Vec<Type> = tys.into_iter().map(Type::Tensor).collect();
        args.insert(at.index(args.len() + 1), tuple);
        let refs: Vec<&Type> = args.iter().collect();
        match (&op, infer(&op, &refs)) {
            (Op::Get { index }, Ok(t)) => {
                prop_assert!(args.len() == 1 && *index < 3, "{:?}", t);
            }
            (_, Ok(t)) => prop_assert!(false, "{} took a tuple and gave {}", op.mnemonic(), t),
            (_, Err(_)) => {}
        }
    }
}

/// Checks one op on operands of types `tys` (tensors): `infer` and
/// `infer_type` agree where both apply, the checked builder agrees with
/// `infer`, and what it builds verifies and round-trips through text.
fn check_op(op: &Op, tys: &[TensorType]) -> Result<(), TestCaseError> {
    let refs: Vec<&TensorType> = tys.iter().collect();
    let wrapped: Vec<Type> = tys.iter().cloned().map(Type::Tensor).collect();
    let inferred = infer(op, &wrapped.iter().collect::<Vec<_>>());
    let tensor_only = infer_type(op, &refs);
    if op.is_multi_result() || matches!(op, Op::Get { .. }) {
        // Tuple ops are typed by infer alone.
        prop_assert!(tensor_only.is_err());
    } else {
        prop_assert_eq!(&tensor_only.map(Type::Tensor), &inferred);
    }
    let mut g = Graph::new("t");
    let args: Vec<ValueId> = tys
        .iter()
        .enumerate()
        .map(|(k, ty)| g.add_input(format!("x{k}"), InputKind::Data, ty.clone()))
        .collect();
    let built = g.add(op.clone(), &args);
    if matches!(op, Op::Input { .. }) {
        // Inputs are declared with add_input; the checked builder refuses them.
        prop_assert!(built.is_err());
        return Ok(());
    }
    prop_assert_eq!(&built.clone().map(|v| g.value_type(v).clone()), &inferred);
    if let Ok(v) = built {
        match g.value_type(v).clone() {
            Type::Tensor(_) => g.add_output("y", v),
            Type::Tuple(parts) => {
                for (index, want) in parts.into_iter().enumerate() {
                    let part = g.add(Op::Get { index }, &[v]);
                    prop_assert_eq!(part.clone().map(|p| g.ty(p).clone()), Ok(want));
                    if let Ok(p) = part {
                        g.add_output(format!("y{index}"), p);
                    }
                }
            }
        }
        prop_assert_eq!(verify(&g), Ok(()));
        prop_assert_eq!(parse_and_verify(&g.to_string()), Ok(vec![g.clone()]));
    }
    Ok(())
}

/// Operand types for the fused ops: `mhc_pre`'s `(x [T,n,C], fn [m,nC],
/// scale [3], base [m])` or `mhc_post`'s `(f [T,C], x [T,n,C], post [T,n],
/// comb [T,n,n])`, right half the time and otherwise off in one dimension
/// or in one dtype.
fn mix_operand_types() -> impl Strategy<Value = Vec<TensorType>> {
    (
        1usize..4,
        1usize..4,
        1usize..4,
        any::<bool>(),
        proptest::sample::select(vec![DType::F32, DType::Bf16, DType::F64, DType::I32]),
        any::<prop::sample::Index>(),
        0usize..8,
    )
        .prop_map(|(t, n, c, pre, d, which, off)| {
            let m = n * (n + 2);
            let shapes = if pre {
                vec![vec![t, n, c], vec![m, n * c], vec![3], vec![m]]
            } else {
                vec![vec![t, c], vec![t, n, c], vec![t, n], vec![t, n, n]]
            };
            let mut tys: Vec<TensorType> =
                shapes.into_iter().map(|s| TensorType::new(d, s)).collect();
            let k = which.index(4);
            match off {
                // One dimension one larger.
                0 | 1 => {
                    let r = tys[k].rank();
                    tys[k].shape[which.index(r)] += 1;
                }
                // One operand of another dtype.
                2 => {
                    tys[k].dtype = if d == DType::F64 {
                        DType::F32
                    } else {
                        DType::F64
                    }
                }
                // One operand of another rank.
                3 => tys[k].shape.push(1),
                _ => {}
            }
            tys
        })
}

/// Any op with attributes that may or may not fit its operands: every kind
/// of [`OpKind::ALL`], equally likely.
fn arbitrary_op() -> impl Strategy<Value = Op> {
    proptest::sample::select(OpKind::ALL)
        .prop_flat_map(|kind| op_of(kind, float_attr().boxed(), sinkhorn_spec().boxed()))
}

/// A fused op (`mhc_pre`, `hc_pre`, `mhc_post`, their backward and
/// replay ops, `sinkhorn_grad`), with attributes valid three times in four.
fn fused_op() -> impl Strategy<Value = Op> {
    let attr = || {
        prop_oneof![
            3 => proptest::sample::select(vec![0.0, 1e-6, 2.0]).prop_map(FloatAttr),
            1 => float_attr(),
        ]
    };
    let spec = (
        proptest::sample::select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        prop_oneof![3 => 1usize..=20, 1 => Just(0usize)],
        attr(),
    )
        .prop_map(|(variant, iters, eps)| SinkhornSpec {
            variant,
            iters,
            eps,
        });
    let fused: Vec<OpKind> = OpKind::ALL
        .iter()
        .copied()
        .filter(|k| k.sample().is_fused())
        .collect();
    proptest::sample::select(fused)
        .prop_flat_map(move |kind| op_of(kind, attr().boxed(), spec.clone().boxed()))
}

/// An op of `kind` with float attributes from `attr`, Sinkhorn settings
/// from `spec`, and small axes, lists and leaf types that may or may not
/// fit. Attribute-free ops are their kind's one op; every kind with
/// attributes needs an arm here ([`every_kind_has_an_op_strategy`]).
fn op_of(
    kind: OpKind,
    attr: BoxedStrategy<FloatAttr>,
    spec: BoxedStrategy<SinkhornSpec>,
) -> BoxedStrategy<Op> {
    let small = || 0usize..5;
    let list = || proptest::collection::vec(0usize..6, 0..5);
    let leaf_ty = birkhoff_testkit::tensor_type;
    let pre_mix = || {
        (attr.clone(), attr.clone(), attr.clone(), spec.clone()).prop_map(
            |(norm_eps, pre_eps, post_mult, sinkhorn)| PreMixSpec {
                norm_eps,
                pre_eps,
                post_mult,
                sinkhorn,
            },
        )
    };
    match kind {
        OpKind::Input => leaf_ty()
            .prop_map(|ty| Op::Input {
                name: "i".into(),
                kind: InputKind::Data,
                ty,
            })
            .boxed(),
        OpKind::Const => leaf_ty()
            .prop_map(|ty| Op::Const(Literal::splat(ty, 1.0)))
            .boxed(),
        OpKind::Iota => (small(), leaf_ty())
            .prop_map(|(axis, ty)| Op::Iota { axis, ty })
            .boxed(),
        OpKind::ReduceSum => (list(), any::<bool>())
            .prop_map(|(axes, keepdims)| Op::ReduceSum { axes, keepdims })
            .boxed(),
        OpKind::ReduceMax => (list(), any::<bool>())
            .prop_map(|(axes, keepdims)| Op::ReduceMax { axes, keepdims })
            .boxed(),
        OpKind::Reshape => list().prop_map(|shape| Op::Reshape { shape }).boxed(),
        OpKind::Permute => list().prop_map(|perm| Op::Permute { perm }).boxed(),
        OpKind::Broadcast => list().prop_map(|shape| Op::Broadcast { shape }).boxed(),
        OpKind::Slice => (list(), list())
            .prop_map(|(start, end)| Op::Slice { start, end })
            .boxed(),
        OpKind::Concat => small().prop_map(|axis| Op::Concat { axis }).boxed(),
        OpKind::Cast => birkhoff_testkit::dtype()
            .prop_map(|dtype| Op::Cast { dtype })
            .boxed(),
        OpKind::RowNorm => attr.prop_map(|eps| Op::RowNorm { eps }).boxed(),
        OpKind::ColNorm => attr.prop_map(|eps| Op::ColNorm { eps }).boxed(),
        OpKind::RmsNorm => attr.prop_map(|eps| Op::RmsNorm { eps }).boxed(),
        OpKind::Softmax => small().prop_map(|axis| Op::Softmax { axis }).boxed(),
        OpKind::Sinkhorn => spec.prop_map(Op::Sinkhorn).boxed(),
        OpKind::SinkhornGrad => spec.prop_map(Op::SinkhornGrad).boxed(),
        OpKind::MhcPre => pre_mix().prop_map(Op::MhcPre).boxed(),
        OpKind::MhcPreProjected => pre_mix().prop_map(Op::MhcPreProjected).boxed(),
        OpKind::MhcPreGrad => pre_mix().prop_map(Op::MhcPreGrad).boxed(),
        OpKind::HcPre => attr.prop_map(|norm_eps| Op::HcPre { norm_eps }).boxed(),
        OpKind::Get => small().prop_map(|index| Op::Get { index }).boxed(),
        _ => match kind.plain() {
            Some(op) => Just(op).boxed(),
            None => panic!("no strategy for the attributes of {kind:?}"),
        },
    }
}

#[test]
fn every_kind_has_an_op_strategy() {
    for &kind in OpKind::ALL {
        let _ = op_of(kind, float_attr().boxed(), sinkhorn_spec().boxed());
    }
}

/// A float attribute, valid or not: zero, small, negative, NaN or infinite.
fn float_attr() -> impl Strategy<Value = FloatAttr> {
    proptest::sample::select(vec![0.0, -0.0, 1e-6, 2.0, -0.5, f64::NAN, f64::INFINITY])
        .prop_map(FloatAttr)
}

/// A Sinkhorn spec, its iteration count valid or not.
fn sinkhorn_spec() -> impl Strategy<Value = SinkhornSpec> {
    (
        proptest::sample::select(vec![SinkhornVariant::Paper, SinkhornVariant::TileKernels]),
        proptest::sample::select(vec![0, 1, 3, 10_000, 10_001]),
        float_attr(),
    )
        .prop_map(|(variant, iters, eps)| SinkhornSpec {
            variant,
            iters,
            eps,
        })
}
