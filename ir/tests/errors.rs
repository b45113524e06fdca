//! Negative cases: every type error, every verifier check and every parser
//! diagnostic, each asserted by message and (where the text has one) by
//! line and column. Also: the verifier reports every error, not the first,
//! and `parse_and_verify` locates verifier errors in the source. That no
//! input makes the parser or the type rules panic is in `no_panic.rs`.

use birkhoff_ir::{
    DType, Error, Graph, InputKind, Literal, Node, Op, ParseError, TensorType, TypeError, ValueId,
    VerifyError, VerifyErrors, infer_type, parse_and_verify, parse_graph, parse_module,
    parse_module_with_locations, verify, verify_located,
};

// ---- helpers ---------------------------------------------------------------

/// A graph whose body starts on line 2, with inputs `%x: f32[2,3]`,
/// `%b: bool[2,3]`, `%i: i32[2,3]` and one output `y: f32[2,3]` that
/// returns `%x`.
fn in_graph(body: &str) -> String {
    format!(
        "graph @t(%x: f32[2,3], %b: bool[2,3], %i: i32[2,3]) -> (y: f32[2,3]) {{\n{body}\n  return %x\n}}\n"
    )
}

#[track_caller]
fn parse_error(text: &str) -> ParseError {
    match parse_module(text) {
        Err(e) => e,
        Ok(gs) => panic!(
            "expected a parse error, parsed {} graph(s) from:\n{text}",
            gs.len()
        ),
    }
}

/// Asserts that parsing `text` fails at `line:col` with a message
/// containing `msg`.
#[track_caller]
fn assert_parse_error(text: &str, line: usize, col: usize, msg: &str) {
    let e = parse_error(text);
    assert!(
        e.message.contains(msg),
        "message `{}` lacks `{msg}` for:\n{text}",
        e.message
    );
    assert_eq!(
        (e.line, e.col),
        (line, col),
        "wrong position for `{}` in:\n{text}",
        e.message
    );
    assert_eq!(e.to_string(), format!("{line}:{col}: {}", e.message));
}

/// [`assert_parse_error`] for a one-line `body` of [`in_graph`], on line 2.
#[track_caller]
fn body_error(body: &str, col: usize, msg: &str) {
    assert_parse_error(&in_graph(body), 2, col, msg);
}

/// The verifier errors of text that parses but does not verify.
#[track_caller]
fn verify_errors(text: &str) -> VerifyErrors {
    match parse_and_verify(text) {
        Err(Error::Verify(errs)) => errs,
        other => panic!("expected verifier errors, got {other:?} for:\n{text}"),
    }
}

/// Asserts that `text` fails verification with exactly one error, at
/// `line:col`, whose message contains `msg`.
#[track_caller]
fn assert_verify_error(text: &str, line: usize, col: usize, msg: &str) -> VerifyError {
    let errs = verify_errors(text);
    assert_eq!(errs.errors.len(), 1, "{errs}");
    let e = errs.errors[0].clone();
    assert!(e.message.contains(msg), "`{}` lacks `{msg}`", e.message);
    assert_eq!(e.location, Some((line, col)), "{e}");
    e
}

/// The verifier errors of a graph built through the API.
#[track_caller]
fn api_errors(g: &Graph) -> Vec<String> {
    match verify(g) {
        Err(errs) => {
            assert_eq!(errs.graph, g.name());
            errs.errors.iter().map(|e| e.message.clone()).collect()
        }
        Ok(()) => panic!("expected verifier errors for:\n{g}"),
    }
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

// ---- TypeError, one test per variant -----------------------------------------

#[test]
fn type_error_arity() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[2]));
    let e = g.add(Op::Add, &[x]).unwrap_err();
    assert_eq!(
        e,
        TypeError::Arity {
            op: "add",
            expected: "2".into(),
            got: 1
        }
    );
    assert_eq!(e.to_string(), "add takes 2 operand(s), got 1");
    let e = g.add(Op::Concat { axis: 0 }, &[]).unwrap_err();
    assert_eq!(e.to_string(), "concat takes at least 1 operand(s), got 0");
    let e = g.add(Op::Select, &[x, x]).unwrap_err();
    assert_eq!(e.to_string(), "select takes 3 operand(s), got 2");
    let c = Op::Const(Literal::scalar(DType::F32, 1.0));
    assert!(matches!(
        infer_type(&c, &[g.ty(x)]),
        Err(TypeError::Arity { got: 1, .. })
    ));
    // In text, the verifier reports it at the node.
    let e = assert_verify_error(
        &in_graph("  %1 = add %x : f32[2,3]"),
        2,
        3,
        "add takes 2 operand(s), got 1",
    );
    assert_eq!(e.value, Some(ValueId::new(3)));
    // Errors spell the value as the source did (%1), not by its index.
    assert_eq!(e.value_name, "%1");
    assert_eq!(e.node_text, "%1 = add %x : f32[2,3]");
}

#[test]
fn type_error_dtype() {
    let mut g = Graph::new("t");
    let i = g.add_input("i", InputKind::Data, TensorType::new(DType::I32, [2]));
    let b = g.add_input("b", InputKind::Data, TensorType::new(DType::Bool, [2]));
    let f = g.add_input("f", InputKind::Data, f32t(&[2]));
    let cases: [(Op, &[ValueId], &str); 8] = [
        (Op::Exp, &[i], "exp is not defined for i32 operands"),
        (Op::Neg, &[b], "neg is not defined for bool operands"),
        (Op::Not, &[f], "not is not defined for f32 operands"),
        (Op::Div, &[i, i], "div is not defined for i32 operands"),
        (Op::Add, &[b, b], "add is not defined for bool operands"),
        (Op::Lt, &[b, b], "lt is not defined for bool operands"),
        (Op::And, &[f, f], "and is not defined for f32 operands"),
        (
            Op::ReduceSum {
                axes: vec![0],
                keepdims: false,
            },
            &[b],
            "reduce_sum is not defined for bool operands",
        ),
    ];
    for (op, args, msg) in cases {
        let e = g.add(op, args).unwrap_err();
        assert!(matches!(e, TypeError::DType { .. }), "{e:?}");
        assert_eq!(e.to_string(), msg);
    }
    let iota = Op::Iota {
        axis: 0,
        ty: TensorType::new(DType::Bool, [2]),
    };
    assert_eq!(
        infer_type(&iota, &[]).unwrap_err().to_string(),
        "iota is not defined for bool operands"
    );
    assert_eq!(
        g.add(Op::MatMul, &[b, b]).unwrap_err().to_string(),
        "matmul is not defined for bool operands"
    );
    // Eq and Ne are defined on every type, bool included.
    assert!(g.add(Op::Eq, &[b, b]).is_ok());
    assert_verify_error(
        &in_graph("  %1 = sqrt %i : i32[2,3]"),
        2,
        3,
        "sqrt is not defined for i32 operands",
    );
}

#[test]
fn type_error_mismatch() {
    let mut g = Graph::new("t");
    let a = g.add_input("a", InputKind::Data, f32t(&[2, 3]));
    let b = g.add_input("b", InputKind::Data, f32t(&[3, 2]));
    let i = g.add_input("i", InputKind::Data, TensorType::new(DType::I32, [2, 3]));
    let e = g.add(Op::Add, &[a, b]).unwrap_err();
    assert!(matches!(e, TypeError::Mismatch { op: "add", .. }));
    assert_eq!(e.to_string(), "add operands disagree: f32[2,3] vs f32[3,2]");
    assert_eq!(
        g.add(Op::Max, &[a, i]).unwrap_err().to_string(),
        "max operands disagree: f32[2,3] vs i32[2,3]"
    );
    assert_eq!(
        g.add(Op::Concat { axis: 0 }, &[a, i])
            .unwrap_err()
            .to_string(),
        "concat operands disagree: f32[2,3] vs i32[2,3]"
    );
    assert_eq!(
        g.add(Op::MatMul, &[a, i]).unwrap_err().to_string(),
        "matmul operands disagree: f32[2,3] vs i32[2,3]"
    );
    let c = g.add(Op::Lt, &[a, a]).unwrap();
    assert_eq!(
        g.add(Op::Select, &[c, a, i]).unwrap_err().to_string(),
        "select operands disagree: f32[2,3] vs i32[2,3]"
    );
    assert_verify_error(
        &in_graph("  %1 = mul %x, %i : f32[2,3]"),
        2,
        3,
        "mul operands disagree: f32[2,3] vs i32[2,3]",
    );
}

fn reduce_sum(axes: &[usize], keepdims: bool) -> Op {
    let axes = axes.to_vec();
    Op::ReduceSum { axes, keepdims }
}

fn reduce_max(axes: &[usize], keepdims: bool) -> Op {
    let axes = axes.to_vec();
    Op::ReduceMax { axes, keepdims }
}

fn slice(start: &[usize], end: &[usize]) -> Op {
    let (start, end) = (start.to_vec(), end.to_vec());
    Op::Slice { start, end }
}

#[test]
fn type_error_invalid_attributes_and_shapes() {
    let x = f32t(&[2, 3, 4]);
    let x1 = || vec![f32t(&[2, 3, 4])];
    let bool_ty = |s: &[usize]| TensorType::new(DType::Bool, s);
    let perm = |p: &[usize]| Op::Permute { perm: p.to_vec() };
    let reshape = |s: &[usize]| Op::Reshape { shape: s.to_vec() };
    let broadcast = |s: &[usize]| Op::Broadcast { shape: s.to_vec() };
    let huge = [1 << 21, 1 << 21, 3, 4];
    let iota = Op::Iota {
        axis: 2,
        ty: TensorType::new(DType::I32, [2, 2]),
    };
    let empty = Op::Const(Literal::splat(f32t(&[0]), 0.0));
    let too_big = Op::Const(Literal::splat(f32t(&[1 << 30, 1 << 30]), 0.0));
    let (a3, b3) = (vec![f32t(&[3])], vec![f32t(&[2, 2, 3]), f32t(&[3, 3, 4])]);
    let cases: Vec<(Op, Vec<TensorType>, &str)> = vec![
        (reduce_sum(&[], false), x1(), "reduce_sum: no axes given"),
        (
            reduce_max(&[3], true),
            x1(),
            "reduce_max: axis 3 out of range for rank 3",
        ),
        (
            reduce_sum(&[1, 1], false),
            x1(),
            "reduce_sum: axis 1 listed twice",
        ),
        (
            perm(&[0, 0, 1]),
            x1(),
            "permute: [0, 0, 1] is not a permutation of the axes of",
        ),
        (perm(&[1, 0]), x1(), "permute: [1, 0] is not a permutation"),
        (
            reshape(&[5, 5]),
            x1(),
            "reshape: cannot reshape f32[2,3,4] to [5, 5]: element counts",
        ),
        (
            reshape(&[0, 24]),
            x1(),
            "reshape: shape [0, 24] has a zero dimension",
        ),
        (
            reshape(&[1; 17]),
            x1(),
            "reshape: rank 17 exceeds the maximum 16",
        ),
        (
            broadcast(&[2, 4, 4]),
            x1(),
            "broadcast: cannot broadcast f32[2,3,4] to [2, 4, 4]",
        ),
        (
            broadcast(&[3, 4]),
            x1(),
            "broadcast: cannot broadcast f32[2,3,4] to [3, 4]",
        ),
        (
            broadcast(&huge),
            vec![f32t(&[3, 4])],
            "broadcast: shape [2097152, 2097152, 3, 4] has too many",
        ),
        (
            slice(&[0, 0], &[1, 1]),
            x1(),
            "slice: start/end need 3 entries for f32[2,3,4]",
        ),
        (
            slice(&[0, 2, 0], &[2, 2, 4]),
            x1(),
            "slice: axis 1: range 2..2 is empty or outside 0..3",
        ),
        (
            slice(&[0, 0, 0], &[2, 3, 5]),
            x1(),
            "slice: axis 2: range 0..5 is empty or outside 0..4",
        ),
        (
            Op::Concat { axis: 3 },
            vec![x.clone(); 2],
            "concat: axis 3 out of range for f32[2,3,4]",
        ),
        (
            Op::MatMul,
            vec![a3[0].clone(); 2],
            "matmul: cannot multiply f32[3] by f32[3]",
        ),
        (
            Op::MatMul,
            b3,
            "matmul: cannot multiply f32[2,2,3] by f32[3,3,4]: need [...,M,K] x",
        ),
        (
            Op::MatMul,
            vec![f32t(&[2, 3]); 2],
            "matmul: cannot multiply f32[2,3] by f32[2,3]",
        ),
        (
            Op::Select,
            vec![x; 3],
            "select: condition must be bool, got f32[2,3,4]",
        ),
        (
            Op::Select,
            vec![bool_ty(&[3]), f32t(&[2]), f32t(&[2])],
            "select: condition bool[3] does not match operands f32[2]",
        ),
        (iota, vec![], "iota: axis 2 out of range for i32[2,2]"),
        (empty, vec![], "const: shape [0] has a zero dimension"),
        (
            too_big,
            vec![],
            "const: shape [1073741824, 1073741824] has too many elements",
        ),
    ];
    for (op, args, msg) in cases {
        let refs: Vec<&TensorType> = args.iter().collect();
        let e = infer_type(&op, &refs).unwrap_err();
        assert!(matches!(e, TypeError::Invalid { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(msg),
            "{}: `{e}` lacks `{msg}`",
            op.mnemonic()
        );
    }
    let input = Op::Input {
        name: "x".into(),
        kind: InputKind::Data,
        ty: f32t(&[2, 0]),
    };
    let e = infer_type(&input, &[]).unwrap_err();
    assert_eq!(e.to_string(), "input: shape [2, 0] has a zero dimension");
}

#[test]
fn graph_add_rejects_undefined_operands() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[2]));
    let e = g.add(Op::Add, &[x, ValueId::new(7)]).unwrap_err();
    assert_eq!(e.to_string(), "add: operand %7 is not defined");
    assert_eq!(g.len(), 1, "a rejected node is not added");
}

#[test]
fn invalid_attributes_are_reported_at_their_node() {
    let text = in_graph(
        "  %1 = reduce_sum %x, axes=[2] : f32[2]\n  \
         %2 = permute %x, perm=[0,0] : f32[2,2]\n  \
         %3 = slice %x, start=[0,0], end=[3,3] : f32[3,3]\n  \
         %4 = concat %x, %i, axis=0 : f32[4,3]\n  \
         %5 = matmul %x, %x : f32[2,3]\n  \
         %6 = select %x, %x, %x : f32[2,3]\n  \
         %7 = iota axis=2 : i32[2,3]\n  \
         %8 = reshape %x : f32[7]\n  \
         %9 = broadcast %x : f32[3,3]",
    );
    let errs = verify_errors(&text);
    let got: Vec<(Option<(usize, usize)>, &str)> = errs
        .errors
        .iter()
        .map(|e| (e.location, e.message.as_str()))
        .collect();
    let want = [
        "reduce_sum: axis 2 out of range for rank 2",
        "permute: [0, 0] is not a permutation of the axes of f32[2,3]",
        "slice: axis 0: range 0..3 is empty or outside 0..2",
        "concat operands disagree: f32[2,3] vs i32[2,3]",
        "matmul: cannot multiply f32[2,3] by f32[2,3]: need [...,M,K] x [...,K,N] with equal batch dimensions",
        "select: condition must be bool, got f32[2,3]",
        "iota: axis 2 out of range for i32[2,3]",
        "reshape: cannot reshape f32[2,3] to [7]: element counts differ",
        "broadcast: cannot broadcast f32[2,3] to [3, 3]",
    ];
    assert_eq!(got.len(), want.len(), "{errs}");
    for (k, ((loc, msg), want)) in got.iter().zip(want).enumerate() {
        assert_eq!(*loc, Some((k + 2, 3)), "{msg}");
        assert_eq!(*msg, want);
    }
}

// ---- verifier checks, in the order verify.rs lists them ----------------------

#[test]
fn verify_graph_name_must_be_an_identifier() {
    let text = "\n  graph @9lives(%x: f32[]) -> (y: f32[]) {\n  return %x\n}";
    let errs = verify_errors(text);
    assert_eq!(errs.errors.len(), 1);
    let e = &errs.errors[0];
    assert_eq!(e.message, "graph name '9lives' is not an identifier");
    assert_eq!(e.value, None);
    assert_eq!(
        e.location,
        Some((2, 3)),
        "graph-level errors sit at 'graph'"
    );
    assert_eq!(
        e.to_string(),
        "2:3: graph name '9lives' is not an identifier"
    );
    assert_eq!(
        api_errors(&Graph::new("")),
        ["graph name '' is not an identifier", "graph has no outputs"]
    );
}

#[test]
fn verify_input_names_must_be_identifiers() {
    let e = assert_verify_error(
        "graph @t(%x: f32[], %2x: f32[]) -> (y: f32[]) {\n  return %x\n}",
        1,
        21,
        "input name '2x' is not an identifier",
    );
    assert_eq!(e.value, Some(ValueId::new(1)));
    assert_eq!(e.node_text, "%2x: f32[]");
}

#[test]
fn verify_output_names_must_be_identifiers() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[]));
    g.add_output("0out", x);
    g.add_output("a-b", x);
    assert_eq!(
        api_errors(&g),
        [
            "output name '0out' is not an identifier",
            "output name 'a-b' is not an identifier"
        ]
    );
}

#[test]
fn verify_input_names_must_be_unique() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[]));
    g.add_input("x", InputKind::Param, f32t(&[2]));
    g.add_output("y", x);
    let errs = verify(&g).unwrap_err();
    assert_eq!(errs.errors.len(), 1);
    assert_eq!(errs.errors[0].message, "input name 'x' is used twice");
    assert_eq!(errs.errors[0].value, Some(ValueId::new(1)));
    assert_eq!(errs.errors[0].node_text, "param %x: f32[2]");
}

#[test]
fn verify_output_names_must_be_unique() {
    assert_verify_error(
        "graph @t(%x: f32[]) -> (y: f32[], y: f32[]) {\n  return %x, %x\n}",
        1,
        1,
        "output name 'y' is used twice",
    );
}

#[test]
fn verify_inputs_come_first_in_signature_order() {
    let mut g = Graph::new("t");
    let c = g
        .add(Op::Const(Literal::scalar(DType::F32, 1.0)), &[])
        .unwrap();
    let x = g.add_input("x", InputKind::Data, f32t(&[]));
    let s = g.add(Op::Add, &[c, x]).unwrap();
    g.add_output("y", s);
    assert_eq!(
        api_errors(&g),
        ["input 0 is %1: inputs must be the first nodes, in signature order"]
    );
    // Canonicalizing moves the input first and fixes the graph.
    let fixed = g.canonicalize();
    assert!(verify(&fixed).is_ok(), "{}", verify(&fixed).unwrap_err());
}

#[test]
fn verify_only_signature_inputs_are_input_nodes() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[]));
    let stray_op = Op::Input {
        name: "w".into(),
        kind: InputKind::Param,
        ty: f32t(&[]),
    };
    // The checked builder refuses to make a stray input; only the raw push can.
    assert!(g.add(stray_op.clone(), &[]).is_err());
    let stray = g.push(Node {
        op: stray_op,
        args: vec![],
        ty: f32t(&[]).into(),
    });
    let s = g.add(Op::Add, &[x, stray]).unwrap();
    g.add_output("y", s);
    let errs = verify(&g).unwrap_err();
    assert_eq!(errs.errors.len(), 1, "{errs}");
    assert_eq!(
        errs.errors[0].message,
        "input node is not in the graph signature"
    );
    assert_eq!(errs.errors[0].value, Some(stray));
    // Printing an unverified graph never panics.
    assert!(g.to_string().contains("param %w: f32[]"));
}

#[test]
fn verify_operands_are_defined_before_use() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[]));
    let fwd = g.push(Node {
        op: Op::Neg,
        args: vec![ValueId::new(2)],
        ty: f32t(&[]).into(),
    });
    let own = g.push(Node {
        op: Op::Add,
        args: vec![x, ValueId::new(2)],
        ty: f32t(&[]).into(),
    });
    let far = g.push(Node {
        op: Op::Exp,
        args: vec![ValueId::new(40)],
        ty: f32t(&[]).into(),
    });
    g.add_output("a", fwd);
    g.add_output("b", own);
    g.add_output("c", far);
    assert_eq!(
        api_errors(&g),
        [
            "operand %2 is not defined before its use",
            "operand %2 is not defined before its use",
            "operand %40 is not defined before its use",
        ]
    );
    let printed = g.to_string();
    assert!(printed.contains("%3 = exp %40 : f32[]"), "{printed}");
}

#[test]
fn verify_declared_type_matches_inferred() {
    let e = assert_verify_error(
        &in_graph("  %1 = add %x, %x : f32[3,2]"),
        2,
        3,
        "declared type f32[3,2] but the op produces f32[2,3]",
    );
    assert_eq!(e.node_text, "%1 = add %x, %x : f32[3,2]");
    assert_verify_error(
        &in_graph("  %1 = lt %x, %x : f32[2,3]"),
        2,
        3,
        "declared type f32[2,3] but the op produces bool[2,3]",
    );
    assert_verify_error(
        &in_graph("  %1 = reduce_sum %x, axes=[1], keepdims : f32[2]"),
        2,
        3,
        "declared type f32[2] but the op produces f32[2,1]",
    );
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[2]));
    let bad = g.push(Node {
        op: Op::Exp,
        args: vec![x],
        ty: TensorType::new(DType::F64, [2]).into(),
    });
    g.add_output("y", bad);
    assert_eq!(
        api_errors(&g),
        ["declared type f64[2] but the op produces f32[2]"]
    );
}

#[test]
fn verify_graph_needs_an_output() {
    assert_verify_error(
        "graph @t(%x: f32[]) -> () {\n  return\n}",
        1,
        1,
        "graph has no outputs",
    );
}

#[test]
fn verify_outputs_must_be_defined() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", InputKind::Data, f32t(&[]));
    g.add_output("y", x);
    g.add_output("z", ValueId::new(9));
    assert_eq!(api_errors(&g), ["output 'z' returns undefined value %9"]);
    let printed = g.to_string();
    assert!(printed.contains("z: ?"), "{printed}");
    assert!(printed.contains("return %x, %9"), "{printed}");
}

#[test]
fn verifier_collects_every_error() {
    let text = in_graph(
        "  %1 = neg %b : bool[2,3]\n  \
         %2 = add %x, %x : f32[2,3]\n  \
         %3 = exp %i : i32[2,3]",
    );
    let errs = verify_errors(&text);
    assert_eq!(errs.errors.len(), 2, "{errs}");
    assert_eq!(errs.errors[0].location, Some((2, 3)));
    assert_eq!(
        errs.errors[0].message,
        "neg is not defined for bool operands"
    );
    assert_eq!(errs.errors[1].location, Some((4, 3)));
    assert_eq!(
        errs.errors[1].message,
        "exp is not defined for i32 operands"
    );
    assert_eq!(
        errs.to_string(),
        "graph @t has 2 errors\n  \
         2:3: %1: neg is not defined for bool operands (in `%1 = neg %b : bool[2,3]`)\n  \
         4:3: %3: exp is not defined for i32 operands (in `%3 = exp %i : i32[2,3]`)"
    );
    // Graph-level and node-level errors together, graph-level first.
    let mut g = Graph::new("bad name");
    let x = g.add_input("x", InputKind::Data, f32t(&[2]));
    g.add(Op::Exp, &[x]).unwrap();
    g.push(Node {
        op: Op::Neg,
        args: vec![x],
        ty: f32t(&[3]).into(),
    });
    assert_eq!(
        api_errors(&g),
        [
            "graph name 'bad name' is not an identifier",
            "graph has no outputs",
            "declared type f32[3] but the op produces f32[2]",
        ]
    );
    let one = VerifyErrors {
        graph: "g".into(),
        errors: vec![errs.errors[0].clone()],
    };
    assert!(one.to_string().starts_with("graph @g has 1 error\n"));
}

#[test]
fn verify_located_maps_values_to_their_definitions() {
    let text = "graph @t(%x: f32[2], param %w: f32[2]) -> (y: f32[2]) {\n\
                \x20 %a = add %x, %w : f32[2]\n\
                \n\
                \x20     %b = exp %a : f64[2]\n\
                \x20 return %a\n\
                }\n";
    let (g, map) = parse_module_with_locations(text).unwrap().remove(0);
    assert_eq!((map.graph.line, map.graph.col), (1, 1));
    let locs: Vec<(usize, usize)> = map.values.iter().map(|l| (l.line, l.col)).collect();
    assert_eq!(locs, [(1, 10), (1, 28), (2, 3), (4, 7)]);
    let errs = verify_located(&g, &map).unwrap_err();
    assert_eq!(errs.errors.len(), 1);
    assert_eq!(errs.errors[0].location, Some((4, 7)));
    // Plain `verify` gives the same errors without locations.
    let plain = verify(&g).unwrap_err();
    assert_eq!(plain.errors[0].location, None);
    assert_eq!(plain.errors[0].message, errs.errors[0].message);
}

#[test]
fn parse_and_verify_stops_at_the_first_bad_graph_of_a_module() {
    let text = "graph @ok(%x: f32[]) -> (y: f32[]) {\n  return %x\n}\n\
                graph @bad(%x: f32[]) -> (y: f32[]) {\n  %1 = not %x : f32[]\n  return %1\n}\n";
    let errs = verify_errors(text);
    assert_eq!(errs.graph, "bad");
    assert_eq!(errs.errors[0].location, Some((5, 3)));
    assert_eq!(parse_module(text).unwrap().len(), 2);
}

// ---- parser diagnostics, one per distinct message -----------------------------

/// [`body_error`] for each `(body, col, message)`.
#[track_caller]
fn body_errors(cases: &[(&str, usize, &str)]) {
    for &(body, col, msg) in cases {
        body_error(body, col, msg);
    }
}

/// [`assert_parse_error`] for each `(text, line, col, message)`.
#[track_caller]
fn text_errors(cases: &[(&str, usize, usize, &str)]) {
    for &(text, line, col, msg) in cases {
        assert_parse_error(text, line, col, msg);
    }
}

#[test]
fn parse_unexpected_character() {
    body_errors(&[
        (
            "  %1 = add %x # %x : f32[2,3]",
            15,
            "unexpected character '#'",
        ),
        ("  %1 = neg %x : f32[2,3] é", 26, "unexpected character 'é'"),
    ]);
    text_errors(&[(
        "graph @t(%x: f32[+2]) -> ()",
        1,
        18,
        "unexpected character '+'",
    )]);
}

#[test]
fn parse_sigil_without_name() {
    body_error("  %1 = neg % : f32[2,3]", 12, "expected a name after '%'");
    text_errors(&[(
        "graph @ (%x: f32[]) -> ()",
        1,
        7,
        "expected a name after '@'",
    )]);
}

#[test]
fn parse_unknown_type() {
    let msg = "unknown element type 'f16' (expected f32, bf16, f64, i32 or bool)";
    body_error("  %1 = neg %x : f16[2,3]", 17, msg);
    text_errors(&[(
        "graph @t(%x: int[2]) -> ()",
        1,
        14,
        "unknown element type 'int'",
    )]);
}

#[test]
fn parse_unknown_op() {
    body_errors(&[
        (
            "  %1 = frobnicate %x : f32[2,3]",
            8,
            "unknown op 'frobnicate'",
        ),
        ("  %1 = Add %x, %x : f32[2,3]", 8, "unknown op 'Add'"),
    ]);
}

#[test]
fn parse_undefined_value() {
    body_errors(&[
        ("  %1 = neg %nope : f32[2,3]", 12, "undefined value %nope"),
        (
            "  %1 = neg %2 : f32[2,3]\n  %2 = neg %x : f32[2,3]",
            12,
            "undefined value %2",
        ),
    ]);
    let ret = "graph @t(%x: f32[]) -> (y: f32[]) {\n  return %y\n}";
    // Names do not leak from one graph of a module into the next.
    let leak = "graph @a(%x: f32[]) -> (y: f32[]) {\n  return %x\n}\n\
                graph @b(%z: f32[]) -> (y: f32[]) {\n  return %x\n}";
    text_errors(&[
        (ret, 2, 10, "undefined value %y"),
        (leak, 5, 10, "undefined value %x"),
    ]);
}

#[test]
fn parse_value_defined_twice() {
    let twice = in_graph("  %1 = neg %x : f32[2,3]\n  %1 = abs %x : f32[2,3]");
    assert_parse_error(&twice, 3, 3, "value %1 is defined twice");
    body_error("  %x = neg %x : f32[2,3]", 3, "value %x is defined twice");
    let inputs = "graph @t(%x: f32[], param %x: f32[]) -> ()";
    assert_parse_error(inputs, 1, 27, "input %x is declared twice");
}

#[test]
fn parse_missing_attribute() {
    body_errors(&[
        (
            "  %1 = reduce_sum %x : f32[3]",
            8,
            "reduce_sum needs attribute 'axes'",
        ),
        (
            "  %1 = reduce_max %x, keepdims : f32[1,3]",
            8,
            "reduce_max needs attribute 'axes'",
        ),
        (
            "  %1 = permute %x : f32[3,2]",
            8,
            "permute needs attribute 'perm'",
        ),
        (
            "  %1 = slice %x : f32[1,1]",
            8,
            "slice needs attribute 'start'",
        ),
        (
            "  %1 = slice %x, start=[0,0] : f32[1,1]",
            8,
            "slice needs attribute 'end'",
        ),
        (
            "  %1 = concat %x, %x : f32[4,3]",
            8,
            "concat needs attribute 'axis'",
        ),
        ("  %1 = iota : i32[4]", 8, "iota needs attribute 'axis'"),
    ]);
}

#[test]
fn parse_unknown_attribute() {
    body_errors(&[
        (
            "  %1 = neg %x, axis=0 : f32[2,3]",
            16,
            "neg takes no attribute 'axis'",
        ),
        (
            "  %1 = reshape %x, shape=[6] : f32[6]",
            20,
            "reshape takes no attribute 'shape'",
        ),
        (
            "  %1 = reduce_sum %x, axes=[0], keep : f32[3]",
            33,
            "reduce_sum takes no attribute 'keep'",
        ),
        (
            "  %1 = concat %x, axis=0, perm=[1] : f32[2,3]",
            27,
            "concat takes no attribute 'perm'",
        ),
    ]);
}

#[test]
fn parse_attribute_given_twice() {
    body_errors(&[
        (
            "  %1 = concat %x, axis=0, axis=1 : f32[2,3]",
            27,
            "attribute 'axis' given twice",
        ),
        (
            "  %1 = reduce_sum %x, axes=[0], keepdims, keepdims : f32[1,3]",
            43,
            "attribute 'keepdims' given twice",
        ),
    ]);
}

#[test]
fn parse_attribute_value_of_the_wrong_form() {
    body_errors(&[
        (
            "  %1 = concat %x, axis=[0,1] : f32[2,3]",
            19,
            "attribute 'axis' needs an integer",
        ),
        (
            "  %1 = iota axis : i32[2]",
            13,
            "attribute 'axis' needs an integer",
        ),
        (
            "  %1 = permute %x, perm : f32[3,2]",
            20,
            "attribute 'perm' needs a list such as [0,1]",
        ),
        (
            "  %1 = reduce_sum %x, axes=[0], keepdims=1 : f32[1,3]",
            33,
            "'keepdims' is a flag and takes no value",
        ),
        (
            "  %1 = iota axis=x : i32[2]",
            18,
            "expected an integer, found 'x'",
        ),
        (
            "  %1 = iota axis=-1 : i32[2]",
            18,
            "'-1' is not a non-negative integer",
        ),
    ]);
}

#[test]
fn parse_wrong_literal_count() {
    body_errors(&[
        (
            "  %1 = const [1.0, 2.0] : f32[3]",
            27,
            "2 values given for f32[3], which has 3 elements",
        ),
        (
            "  %1 = const [1, 2, 3, 4, 5] : i32[2,2]",
            32,
            "5 values given for i32[2,2], which has 4 elements",
        ),
        (
            "  %1 = const [] : f32[]",
            15,
            "expected a literal value, found ']'",
        ),
    ]);
}

#[test]
fn parse_bad_literal() {
    body_errors(&[
        ("  %1 = const 1.5 : i32[]", 14, "'1.5' is not a i32 value"),
        (
            "  %1 = const 3000000000 : i32[]",
            14,
            "'3000000000' is not a i32 value",
        ),
        ("  %1 = const nan : i32[]", 14, "'nan' is not a i32 value"),
        ("  %1 = const 1 : bool[]", 14, "'1' is not a bool value"),
        ("  %1 = const abc : f32[]", 14, "'abc' is not a f32 value"),
        (
            "  %1 = const 1.2.3 : f64[]",
            14,
            "'1.2.3' is not a f64 value",
        ),
        (
            "  %1 = const [1.0, oops] : f32[2]",
            20,
            "'oops' is not a f32 value",
        ),
        (
            "  %1 = const 0x3f80 : f32[]",
            14,
            "hex literal '0x3f80' has the wrong width for f32",
        ),
        (
            "  %1 = const 0x3f800000 : bf16[]",
            14,
            "hex literal '0x3f800000' has the wrong width for bf16",
        ),
        (
            "  %1 = const 0x00000001 : i32[]",
            14,
            "hex literal '0x00000001' has the wrong width for i32",
        ),
        ("  %1 = const 0xzz : f32[]", 14, "'0xzz' is not a f32 value"),
        (
            "  %1 = const - 5 : f32[]",
            16,
            "expected 'inf' after '-', found '5'",
        ),
        (
            "  %1 = const : f32[]",
            14,
            "expected a literal value, found ':'",
        ),
    ]);
}

#[test]
fn parse_output_type_mismatch() {
    let one = "graph @t(%x: f32[2,3]) -> (y: f32[3,2]) {\n  return %x\n}";
    let two = "graph @t(%x: f32[2]) -> (y: f32[2], z: f64[2]) {\n\
               \x20 %1 = neg %x : f32[2]\n  return %1, %1\n}";
    text_errors(&[
        (
            one,
            2,
            10,
            "output 'y' is declared f32[3,2] but the returned value has type f32[2,3]",
        ),
        (
            two,
            3,
            14,
            "output 'z' is declared f64[2] but the returned value has type f32[2]",
        ),
    ]);
}

#[test]
fn parse_return_count_mismatch() {
    let more = "graph @t(%x: f32[]) -> (y: f32[]) {\n  return %x, %x\n}";
    let fewer = "graph @t(%x: f32[]) -> (y: f32[], z: f32[]) {\n  return %x\n}";
    text_errors(&[
        (
            more,
            2,
            3,
            "returns 2 value(s) but the signature declares 1 output(s)",
        ),
        (
            fewer,
            2,
            3,
            "returns 1 value(s) but the signature declares 2 output(s)",
        ),
    ]);
}

#[test]
fn parse_inputs_in_body() {
    let msg = "inputs and params are declared in the graph signature";
    body_errors(&[
        ("  %1 = input : f32[2]", 8, msg),
        ("  %w = param : f32[2]", 8, msg),
    ]);
}

#[test]
fn parse_bad_dimensions() {
    text_errors(&[
        (
            "graph @t(%x: f32[-1]) -> ()",
            1,
            18,
            "'-1' is not a non-negative integer",
        ),
        (
            "graph @t(%x: f32[2.5]) -> ()",
            1,
            18,
            "'2.5' is not a non-negative integer",
        ),
        (
            "graph @t(%x: f32[99999999999999999999999]) -> ()",
            1,
            18,
            "'99999999999999999999999' is not",
        ),
        (
            "graph @t(%x: f32[2 3]) -> ()",
            1,
            20,
            "expected ',' or ']', found '3'",
        ),
        ("graph @t(%x: f32) -> ()", 1, 17, "expected '[', found ')'"),
    ]);
    // Absurd but well-formed shapes parse, and the verifier rejects them.
    let huge = "graph @t(%x: f32[1048576,1048576,2]) -> (y: f32[1048576,1048576,2]) {\n\
                \x20 return %x\n}";
    let e = assert_verify_error(huge, 1, 10, "too many elements");
    assert_eq!(
        e.message,
        "input: shape [1048576, 1048576, 2] has too many elements"
    );
    let zero = "graph @t(%x: f32[3,0]) -> (y: f32[3,0]) {\n  return %x\n}";
    assert_verify_error(zero, 1, 10, "input: shape [3, 0] has a zero dimension");
}

#[test]
fn parse_expected_token() {
    for (text, line, col, msg) in [
        ("grph @t() -> ()", 1, 1, "expected 'graph'"),
        ("@t() -> ()", 1, 1, "expected 'graph', found '@t'"),
        (
            "graph t() -> ()",
            1,
            7,
            "expected a graph name such as @main, found 't'",
        ),
        ("graph @t -> ()", 1, 10, "expected '(', found '->'"),
        (
            "graph @t(x: f32[]) -> ()",
            1,
            10,
            "expected an input such as %x, found 'x'",
        ),
        (
            "graph @t(%x f32[]) -> ()",
            1,
            13,
            "expected ':', found 'f32'",
        ),
        (
            "graph @t(%x: [2]) -> ()",
            1,
            14,
            "expected a type such as f32[4,8], found '['",
        ),
        (
            "graph @t(%x: f32[] %y: f32[]) -> ()",
            1,
            20,
            "expected ',' or ')', found '%y'",
        ),
        (
            "graph @t(%x: f32[]) (y: f32[])",
            1,
            21,
            "expected '->', found '('",
        ),
        (
            "graph @t(%x: f32[]) -> (%y: f32[])",
            1,
            25,
            "expected an output name, found '%y'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[] z: f32[])",
            1,
            34,
            "expected ',' or ')', found 'z'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[])\n  return %x\n}",
            2,
            3,
            "expected '{', found 'return'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  neg %x\n}",
            2,
            3,
            "expected a statement such as '%1 = add %0, %0 : f32[4]' or 'return', found 'neg'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = neg %x : f32[]\n",
            2,
            22,
            "found end of input",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 neg %x : f32[]\n}",
            2,
            6,
            "expected '=', found 'neg'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = %x : f32[]\n}",
            2,
            8,
            "expected an op name, found '%x'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = neg 3 : f32[]\n}",
            2,
            12,
            "expected an operand or attribute, found '3'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = concat axis=0, %x : f32[]\n}",
            2,
            23,
            "expected an attribute, found '%x'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = add %x %x : f32[]\n}",
            2,
            15,
            "expected ',' or ':', found '%x'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = neg %x\n  return %1\n}",
            3,
            3,
            "expected ',' or ':', found 'return'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  %1 = const [1.0 2.0] : f32[2]\n}",
            2,
            19,
            "expected ',' or ']', found '2.0'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  return 3\n}",
            2,
            10,
            "expected a returned value, found '3'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[], z: f32[]) {\n  return %x %x\n}",
            2,
            13,
            "expected ',' or '}', found '%x'",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  return %x",
            2,
            12,
            "expected ',' or '}', found end of input",
        ),
        (
            "graph @t(%x: f32[]) -> (y: f32[]) {\n  return %x\n}\nreturn",
            4,
            1,
            "expected 'graph'",
        ),
    ] {
        assert_parse_error(text, line, col, msg);
    }
}

#[test]
fn parse_graph_needs_exactly_one_graph() {
    let one = "graph @a(%x: f32[]) -> (y: f32[]) {\n  return %x\n}\n";
    assert!(parse_graph(one).is_ok());
    let two = format!("{one}{}", one.replace("@a", "@b"));
    let e = parse_graph(&two).unwrap_err();
    assert_eq!(e.message, "expected exactly one graph, found 2");
    assert_eq!((e.line, e.col), (1, 1));
    let e = parse_graph("; nothing\n").unwrap_err();
    assert_eq!(e.message, "expected exactly one graph, found 0");
    // A parse error inside a module reaches parse_and_verify as Error::Parse.
    match parse_and_verify(&format!("{one}graph @b(")) {
        Err(Error::Parse(e)) => assert_eq!((e.line, e.col), (4, 10)),
        other => panic!("{other:?}"),
    }
}
