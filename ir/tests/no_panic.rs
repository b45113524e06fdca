//! Robustness: no input text makes the parser panic (random mutations of
//! valid IR text, token soup, arbitrary strings), and `infer_type` never
//! panics on arbitrary ops and operand types and agrees with the verifier.

use birkhoff_ir::{
    Graph, InputKind, Literal, Op, TensorType, ValueId, infer_type, parse_and_verify, parse_graph,
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
    fn infer_type_agrees_with_the_verifier(
        op in arbitrary_op(),
        tys in proptest::collection::vec(birkhoff_testkit::tensor_type(), 0..4),
    ) {
        let refs: Vec<&TensorType> = tys.iter().collect();
        let inferred = infer_type(&op, &refs);
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
        prop_assert_eq!(&built.clone().map(|v| g.ty(v).clone()), &inferred);
        if let Ok(v) = built {
            g.add_output("y", v);
            prop_assert_eq!(verify(&g), Ok(()));
            prop_assert_eq!(parse_and_verify(&g.to_string()), Ok(vec![g.clone()]));
        }
    }
}

/// Any op with attributes that may or may not fit its operands.
fn arbitrary_op() -> impl Strategy<Value = Op> {
    let small = 0usize..5;
    let list = || proptest::collection::vec(0usize..6, 0..5);
    let leaf_ty = birkhoff_testkit::tensor_type;
    prop_oneof![
        (small.clone(), leaf_ty()).prop_map(|(axis, ty)| Op::Iota { axis, ty }),
        leaf_ty().prop_map(|ty| Op::Const(Literal::splat(ty, 1.0))),
        leaf_ty().prop_map(|ty| Op::Input {
            name: "i".into(),
            kind: InputKind::Data,
            ty,
        }),
        proptest::sample::select(vec![
            Op::Neg,
            Op::Abs,
            Op::Exp,
            Op::Log,
            Op::Sqrt,
            Op::Rsqrt,
            Op::Recip,
            Op::Sigmoid,
            Op::Tanh,
            Op::Not,
            Op::Add,
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::Max,
            Op::Min,
            Op::Pow,
            Op::Eq,
            Op::Ne,
            Op::Lt,
            Op::Le,
            Op::Gt,
            Op::Ge,
            Op::And,
            Op::Or,
            Op::Select,
            Op::MatMul,
        ]),
        (list(), any::<bool>()).prop_map(|(axes, keepdims)| Op::ReduceSum { axes, keepdims }),
        (list(), any::<bool>()).prop_map(|(axes, keepdims)| Op::ReduceMax { axes, keepdims }),
        list().prop_map(|shape| Op::Reshape { shape }),
        list().prop_map(|perm| Op::Permute { perm }),
        list().prop_map(|shape| Op::Broadcast { shape }),
        (list(), list()).prop_map(|(start, end)| Op::Slice { start, end }),
        small.prop_map(|axis| Op::Concat { axis }),
        birkhoff_testkit::dtype().prop_map(|dtype| Op::Cast { dtype }),
    ]
}
