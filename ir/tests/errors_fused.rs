//! Negative cases for tuple types, `get` and the semantic and fused ops:
//! every typing rule they add, the verifier's tuple checks and the parser
//! diagnostics for their attributes and for tuple types. Each is asserted
//! by message and, where the text has one, by line and column. (The
//! primitive ops' negative cases are in `errors.rs`.)

use birkhoff_ir::{
    DType, Error, FloatAttr, Graph, InputKind, Op, ParseError, PreMixSpec, SinkhornSpec,
    SinkhornVariant, TensorType, TypeError, ValueId, VerifyError, infer, infer_type,
    parse_and_verify, parse_module, verify,
};

// ---- helpers ---------------------------------------------------------------

/// The signature of [`in_graph`]: a residual `x [T=2, n=4, C=3]` with its
/// mixing weights, a layer output `f`, an integer, a scalar and a square
/// input.
const SIGNATURE: &str = "graph @t(%x: f32[2,4,3], param %fn: f32[24,12], param %scale: f32[3], param %base: f32[24], %f: f32[2,3], %i: i32[2,3], %s: f32[], %m: f32[3,3]) -> (y: f32[2,3]) {";

/// The tuple `mhc_pre` and `hc_pre` make of [`SIGNATURE`]'s residual.
const TUPLE: &str = "(f32[2,3], f32[2,4], f32[2,4,4])";

/// A graph whose body starts on line 2 (so its first value is `%8`) and
/// that returns `%f`.
fn in_graph(body: &str) -> String {
    format!("{SIGNATURE}\n{body}\n  return %f\n}}\n")
}

/// `hc_pre` of the residual as statement `%p` (one line).
const HC_PRE: &str =
    "  %p = hc_pre %x, %fn, %scale, %base, norm_eps=0.0 : (f32[2,3], f32[2,4], f32[2,4,4])";

/// The 1-based column of the first `needle` in `line`.
#[track_caller]
fn col(line: &str, needle: &str) -> usize {
    match line.find(needle) {
        Some(i) => line[..i].chars().count() + 1,
        None => panic!("`{needle}` is not in `{line}` (test error)"),
    }
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

/// Asserts that the last line of `body` (in [`in_graph`]) fails to parse
/// at the first `at` of that line, with a message containing `msg`.
#[track_caller]
fn body_error(body: &str, at: &str, msg: &str) {
    let text = in_graph(body);
    let line = body.lines().count() + 1;
    let last = body.lines().last().unwrap_or_default();
    assert_parse_error(&text, line, col(last, at), msg);
}

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
}

/// Asserts that `body` (in [`in_graph`]) parses and fails verification
/// with exactly one error, at the start of its last line, whose message
/// is `msg`.
#[track_caller]
fn verify_error(body: &str, msg: &str) -> VerifyError {
    let text = in_graph(body);
    let errs = match parse_and_verify(&text) {
        Err(Error::Verify(errs)) => errs,
        other => panic!("expected verifier errors, got {other:?} for:\n{text}"),
    };
    assert_eq!(errs.errors.len(), 1, "{errs}");
    let e = errs.errors[0].clone();
    assert_eq!(e.message, msg, "for:\n{text}");
    assert_eq!(e.location, Some((body.lines().count() + 1, 3)), "{e}");
    e
}

/// Asserts that `body` (in [`in_graph`]) parses and verifies.
#[track_caller]
fn verifies(body: &str) {
    let text = in_graph(body);
    if let Err(e) = parse_and_verify(&text) {
        panic!("{e}\n{text}");
    }
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

/// An API graph with inputs of the given types, named `a0`, `a1`, ….
fn with_inputs(tys: &[TensorType]) -> (Graph, Vec<ValueId>) {
    let mut g = Graph::new("t");
    let vs = tys
        .iter()
        .enumerate()
        .map(|(k, t)| g.add_input(format!("a{k}"), InputKind::Data, t.clone()))
        .collect();
    (g, vs)
}

/// The message of applying `op` to inputs of types `tys` with the checked
/// builder, which must fail.
#[track_caller]
fn add_error(op: Op, tys: &[TensorType]) -> String {
    let (mut g, vs) = with_inputs(tys);
    match g.add(op, &vs) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected a type error, got {}", g.value_type(v)),
    }
}

/// The attributes of [`mhc_pre`] and [`mhc_pre_grad`].
const PRE_MIX: PreMixSpec = PreMixSpec {
    norm_eps: FloatAttr(1e-6),
    pre_eps: FloatAttr(1e-6),
    post_mult: FloatAttr(2.0),
    sinkhorn: SinkhornSpec {
        variant: SinkhornVariant::TileKernels,
        iters: 20,
        eps: FloatAttr(1e-6),
    },
};

fn mhc_pre() -> Op {
    Op::MhcPre(PRE_MIX)
}

/// The four pre-mix operand types of `x [2,4,3]`, in f32.
fn pre_operands() -> Vec<TensorType> {
    vec![f32t(&[2, 4, 3]), f32t(&[24, 12]), f32t(&[3]), f32t(&[24])]
}

/// The four post-mix operand types for `x [2,4,3]`, in f32.
fn post_operands() -> Vec<TensorType> {
    vec![
        f32t(&[2, 3]),
        f32t(&[2, 4, 3]),
        f32t(&[2, 4]),
        f32t(&[2, 4, 4]),
    ]
}

// ---- tuples: only get takes them ---------------------------------------------

#[test]
fn tuple_used_as_an_ordinary_operand() {
    let msg = format!("operand is a tuple {TUPLE}; only get takes tuples");
    let e = verify_error(
        &format!("{HC_PRE}\n  %n = neg %p : f32[2,3]"),
        &format!("neg: {msg}"),
    );
    assert_eq!(e.value, Some(ValueId::new(9)));
    assert_eq!(e.node_text, "%n = neg %p : f32[2,3]");
    verify_error(
        &format!("{HC_PRE}\n  %n = add %f, %p : f32[2,3]"),
        &format!("add: {msg}"),
    );
    verify_error(
        &format!("{HC_PRE}\n  %n = mhc_post %f, %x, %p, %p : f32[2,4,3]"),
        &format!("mhc_post: {msg}"),
    );
    verify_error(
        &format!("{HC_PRE}\n  %n = hc_pre %p, %fn, %scale, %base, norm_eps=0.0 : {TUPLE}"),
        &format!("hc_pre: {msg}"),
    );
    // The same through the API.
    let (mut g, vs) = with_inputs(&pre_operands());
    let p = g
        .add(
            Op::HcPre {
                norm_eps: FloatAttr(0.0),
            },
            &vs,
        )
        .unwrap();
    assert!(g.value_type(p).is_tuple());
    assert_eq!(
        g.add(Op::Exp, &[p]).unwrap_err().to_string(),
        format!("exp: {msg}")
    );
    assert_eq!(
        g.add(Op::Concat { axis: 0 }, &[vs[2], p])
            .unwrap_err()
            .to_string(),
        format!("concat: {msg}")
    );
}

#[test]
fn get_of_a_tensor() {
    verify_error(
        "  %g = get %f, index=0 : f32[2,3]",
        "get: operand must be a tuple, got f32[2,3]",
    );
    assert_eq!(
        add_error(Op::Get { index: 0 }, &[f32t(&[2])]),
        "get: operand must be a tuple, got f32[2]"
    );
}

#[test]
fn get_index_out_of_range() {
    verify_error(
        &format!("{HC_PRE}\n  %g = get %p, index=3 : f32[2,3]"),
        "get: index 3 out of range for a tuple of 3",
    );
    let (mut g, vs) = with_inputs(&pre_operands());
    let p = g.add(mhc_pre(), &vs).unwrap();
    assert_eq!(
        g.add(Op::Get { index: 7 }, &[p]).unwrap_err().to_string(),
        "get: index 7 out of range for a tuple of 3"
    );
    // Every index in range is fine.
    for index in 0..3 {
        assert!(g.add(Op::Get { index }, &[p]).is_ok());
    }
}

#[test]
fn get_takes_exactly_one_operand() {
    verify_error(
        &format!("{HC_PRE}\n  %g = get %p, %p, index=0 : f32[2,3]"),
        "get takes 1 operand(s), got 2",
    );
    verify_error(
        "  %g = get index=0 : f32[2,3]",
        "get takes 1 operand(s), got 0",
    );
}

#[test]
fn tuple_as_a_graph_output() {
    // In text, the returned value must have its output's declared type.
    let text = format!("{SIGNATURE}\n{HC_PRE}\n  return %p\n}}\n");
    assert_parse_error(
        &text,
        3,
        col("  return %p", "%p"),
        &format!("output 'y' is declared f32[2,3] but the returned value has type {TUPLE}"),
    );
    // An output cannot be declared as a tuple.
    let sig = "graph @t(%x: f32[2]) -> (y: (f32[2], f32[2])) {";
    assert_parse_error(
        sig,
        1,
        col(sig, "(f32"),
        "expected a type such as f32[4,8], found '('",
    );
    // Through the API, the verifier reports it as a graph error.
    let (mut g, vs) = with_inputs(&pre_operands());
    let p = g.add(mhc_pre(), &vs).unwrap();
    let li = g.add(Op::Get { index: 0 }, &[p]).unwrap();
    g.add_output("y", li);
    g.add_output("z", p);
    let errs = verify(&g).unwrap_err();
    assert_eq!(errs.errors.len(), 1, "{errs}");
    assert_eq!(
        errs.errors[0].message,
        "output 'z' returns a tuple %4; return its elements with get"
    );
    assert_eq!(errs.errors[0].value, None);
}

#[test]
fn graph_inputs_cannot_be_tuples() {
    let sig = "graph @t(%x: (f32[2], f32[2])) -> (y: f32[2]) {";
    assert_parse_error(
        sig,
        1,
        col(sig, "(f32"),
        "expected a type such as f32[4,8], found '('",
    );
}

// ---- declared types: tuple vs tensor -----------------------------------------

#[test]
fn tuple_type_on_an_op_that_produces_a_tensor() {
    verify_error(
        "  %a = add %f, %f : (f32[2,3], f32[2,3])",
        "declared type (f32[2,3], f32[2,3]) but the op produces f32[2,3]",
    );
    verify_error(
        &format!("{HC_PRE}\n  %g = get %p, index=1 : (f32[2,4])"),
        "declared type (f32[2,4]) but the op produces f32[2,4]",
    );
    verify_error(
        "  %r = row_norm %f, eps=0.0 : (f32[2,3])",
        "declared type (f32[2,3]) but the op produces f32[2,3]",
    );
    // Ops whose result type is an attribute need a tensor: a parse error.
    for (body, op) in [
        ("  %r = reshape %f : (f32[6])", "reshape"),
        ("  %r = broadcast %f : (f32[2,2,3], f32[2])", "broadcast"),
        ("  %r = cast %f : (f64[2,3])", "cast"),
        ("  %r = iota axis=0 : (i32[2])", "iota"),
    ] {
        body_error(body, op, &format!("{op} produces a tensor, not a tuple"));
    }
}

#[test]
fn tensor_type_on_an_op_that_produces_a_tuple() {
    verify_error(
        "  %p = hc_pre %x, %fn, %scale, %base, norm_eps=0.0 : f32[2,3]",
        &format!("declared type f32[2,3] but the op produces {TUPLE}"),
    );
    // A tuple with one element wrong, or one element short.
    verify_error(
        "  %p = hc_pre %x, %fn, %scale, %base, norm_eps=0.0 : (f32[2,3], f32[2,4], f32[2,4,3])",
        &format!("declared type (f32[2,3], f32[2,4], f32[2,4,3]) but the op produces {TUPLE}"),
    );
    verify_error(
        "  %p = hc_pre %x, %fn, %scale, %base, norm_eps=0.0 : (f32[2,3], f32[2,4])",
        &format!("declared type (f32[2,3], f32[2,4]) but the op produces {TUPLE}"),
    );
}

#[test]
fn tuple_type_syntax() {
    let op = "  %p = hc_pre %x, %fn, %scale, %base, norm_eps=0.0 : ";
    // (declared type, offset of the offending character in it, message)
    let cases = [
        (
            "(f32[2,3] f32[2,4])",
            10,
            "expected ',' or ')', found 'f32'",
        ),
        ("()", 1, "expected a type such as f32[4,8], found ')'"),
        (
            "(f32[2,3],)",
            10,
            "expected a type such as f32[4,8], found ')'",
        ),
        (
            "((f32[2,3]))",
            1,
            "expected a type such as f32[4,8], found '('",
        ),
        (
            "(f32[2,3], 4)",
            11,
            "expected a type such as f32[4,8], found '4'",
        ),
    ];
    for (ty, offset, msg) in cases {
        let text = in_graph(&format!("{op}{ty}"));
        assert_parse_error(&text, 2, op.len() + offset + 1, msg);
    }
    // An unclosed tuple runs into the next statement.
    let text = in_graph(&format!("{op}(f32[2,3], f32[2,4], f32[2,4,4]"));
    assert_parse_error(&text, 3, 3, "expected ',' or ')', found 'return'");
    // Spacing inside a tuple type is free.
    verifies(&format!("{op}( f32[2,3] ,f32[2,4],\n    f32[2,4,4] )"));
}

// ---- operand shapes of the fused ops -----------------------------------------

#[test]
fn mhc_pre_and_hc_pre_operand_shapes() {
    let hc = Op::HcPre {
        norm_eps: FloatAttr(0.0),
    };
    let f64t = |s: &[usize]| TensorType::new(DType::F64, s);
    let i32t = |s: &[usize]| TensorType::new(DType::I32, s);
    // (which operand, its replacement type, message after "OP: ")
    let cases: Vec<(usize, TensorType, &str)> = vec![
        (0, f32t(&[2, 12]), "needs rank >= 3, got f32[2,12]"),
        (
            0,
            f32t(&[1, 2, 4, 3]),
            "residual must be [T,n,C], got f32[1,2,4,3]",
        ),
        (1, f32t(&[24, 11]), "fn must be f32[24,12], got f32[24,11]"),
        (1, f32t(&[12, 24]), "fn must be f32[24,12], got f32[12,24]"),
        (1, f64t(&[24, 12]), "fn must be f32[24,12], got f64[24,12]"),
        (2, f32t(&[4]), "scale must be f32[3], got f32[4]"),
        (2, f32t(&[1, 3]), "scale must be f32[3], got f32[1,3]"),
        (3, f32t(&[20]), "base must be f32[24], got f32[20]"),
        (3, i32t(&[24]), "base must be f32[24], got i32[24]"),
    ];
    for op in [mhc_pre(), hc] {
        let m = op.mnemonic();
        for (k, t, msg) in &cases {
            let mut tys = pre_operands();
            tys[*k] = t.clone();
            assert_eq!(
                add_error(op.clone(), &tys),
                format!("{m}: {msg}"),
                "{k} {t}"
            );
        }
        let ints: Vec<TensorType> = pre_operands()
            .iter()
            .map(|t| t.with_dtype(DType::I32))
            .collect();
        assert_eq!(
            add_error(op.clone(), &ints),
            format!("{m} is not defined for i32 operands")
        );
        assert_eq!(
            add_error(op.clone(), &pre_operands()[..3]),
            format!("{m} takes 4 operand(s), got 3")
        );
    }
    // The same in text, located at the node.
    verify_error(
        "  %p = mhc_pre %x, %fn, %base, %base, norm_eps=0.0, pre_eps=0.0, post_mult=2.0, variant=paper, iters=1, eps=0.0 : (f32[2,3], f32[2,4], f32[2,4,4])",
        "mhc_pre: scale must be f32[3], got f32[24]",
    );
    verify_error(
        "  %p = hc_pre %f, %fn, %scale, %base, norm_eps=0.0 : (f32[2,3], f32[2,4], f32[2,4,4])",
        "hc_pre: needs rank >= 3, got f32[2,3]",
    );
    verify_error(
        "  %p = hc_pre %x, %fn, %scale, norm_eps=0.0 : (f32[2,3], f32[2,4], f32[2,4,4])",
        "hc_pre takes 4 operand(s), got 3",
    );
}

#[test]
fn mhc_pre_of_an_absurdly_wide_residual_is_an_error_not_an_overflow() {
    // n(n+2) overflows; the residual itself is a legal shape (2^40 elements).
    let x = f32t(&[1, 1 << 40, 1]);
    let e = add_error(
        Op::HcPre {
            norm_eps: FloatAttr(0.0),
        },
        &[x, f32t(&[3, 1]), f32t(&[3]), f32t(&[3])],
    );
    assert_eq!(
        e,
        "hc_pre: residual f32[1,1099511627776,1] is too large to mix"
    );
    // comb_mix [T,n,n] past the element limit.
    let x = f32t(&[1 << 20, 1 << 11, 1]);
    let e = add_error(mhc_pre(), &[x, f32t(&[3, 1]), f32t(&[3]), f32t(&[3])]);
    assert_eq!(
        e,
        "mhc_pre: shape [1048576, 2048, 2048] has too many elements"
    );
}

#[test]
fn mhc_post_operand_shapes() {
    let cases: Vec<(usize, TensorType, &str)> = vec![
        (
            0,
            f32t(&[2, 4]),
            "layer_output must be f32[2,3], got f32[2,4]",
        ),
        (
            0,
            f32t(&[2, 3, 1]),
            "layer_output must be f32[2,3], got f32[2,3,1]",
        ),
        (1, f32t(&[2, 3]), "needs rank >= 3, got f32[2,3]"),
        (
            1,
            f32t(&[2, 4, 3, 1]),
            "residual must be [T,n,C], got f32[2,4,3,1]",
        ),
        (2, f32t(&[2, 3]), "post_mix must be f32[2,4], got f32[2,3]"),
        (2, f32t(&[4, 2]), "post_mix must be f32[2,4], got f32[4,2]"),
        (
            3,
            f32t(&[2, 4, 3]),
            "comb_mix must be f32[2,4,4], got f32[2,4,3]",
        ),
        (
            3,
            TensorType::new(DType::Bf16, [2, 4, 4]),
            "comb_mix must be f32[2,4,4], got bf16[2,4,4]",
        ),
    ];
    for (k, t, msg) in cases {
        let mut tys = post_operands();
        tys[k] = t.clone();
        assert_eq!(
            add_error(Op::MhcPost, &tys),
            format!("mhc_post: {msg}"),
            "{k} {t}"
        );
    }
    let mut tys = post_operands();
    tys[1] = tys[1].with_dtype(DType::I32);
    assert_eq!(
        add_error(Op::MhcPost, &tys),
        "mhc_post is not defined for i32 operands"
    );
    assert_eq!(
        add_error(Op::MhcPost, &post_operands()[1..]),
        "mhc_post takes 4 operand(s), got 3"
    );
    // Operands in the wrong order, in text.
    verify_error(
        &format!(
            "{HC_PRE}\n  %g = get %p, index=1 : f32[2,4]\n  %h = get %p, index=2 : f32[2,4,4]\n  %o = mhc_post %f, %x, %h, %g : f32[2,4,3]"
        ),
        "mhc_post: post_mix must be f32[2,4], got f32[2,4,4]",
    );
}

#[test]
fn mhc_post_grad_operand_shapes() {
    // mhc_post's operands, then a cotangent of its result type.
    let operands = || {
        let mut tys = post_operands();
        tys.push(f32t(&[2, 4, 3]));
        tys
    };
    let (mut g, vs) = with_inputs(&operands());
    let v = g.add(Op::MhcPostGrad, &vs).expect("well-typed");
    assert_eq!(
        g.value_type(v).to_string(),
        "(f32[2,3], f32[2,4,3], f32[2,4], f32[2,4,4])"
    );
    let cases: Vec<(usize, TensorType, &str)> = vec![
        (
            0,
            f32t(&[2, 4]),
            "layer_output must be f32[2,3], got f32[2,4]",
        ),
        (1, f32t(&[2, 3]), "needs rank >= 3, got f32[2,3]"),
        (2, f32t(&[4, 2]), "post_mix must be f32[2,4], got f32[4,2]"),
        (
            3,
            TensorType::new(DType::Bf16, [2, 4, 4]),
            "comb_mix must be f32[2,4,4], got bf16[2,4,4]",
        ),
        (4, f32t(&[2, 3]), "d_out must be f32[2,4,3], got f32[2,3]"),
        (
            4,
            f32t(&[2, 4, 4]),
            "d_out must be f32[2,4,3], got f32[2,4,4]",
        ),
        (
            4,
            TensorType::new(DType::Bf16, [2, 4, 3]),
            "d_out must be f32[2,4,3], got bf16[2,4,3]",
        ),
    ];
    for (k, t, msg) in cases {
        let mut tys = operands();
        tys[k] = t.clone();
        assert_eq!(
            add_error(Op::MhcPostGrad, &tys),
            format!("mhc_post_grad: {msg}"),
            "{k} {t}"
        );
    }
    let mut tys = operands();
    for t in &mut tys {
        *t = t.with_dtype(DType::I32);
    }
    assert_eq!(
        add_error(Op::MhcPostGrad, &tys),
        "mhc_post_grad is not defined for i32 operands"
    );
    assert_eq!(
        add_error(Op::MhcPostGrad, &post_operands()),
        "mhc_post_grad takes 5 operand(s), got 4"
    );
    // infer_type refuses it (the result is a tuple) instead of panicking.
    let refs: Vec<TensorType> = operands();
    let refs: Vec<&TensorType> = refs.iter().collect();
    assert!(infer_type(&Op::MhcPostGrad, &refs).is_err());
    // A cotangent of the wrong shape, in text.
    verify_error(
        &format!(
            "{HC_PRE}\n  %g = get %p, index=1 : f32[2,4]\n  %h = get %p, index=2 : f32[2,4,4]\n  %o = mhc_post_grad %f, %x, %g, %h, %f : (f32[2,3], f32[2,4,3], f32[2,4], f32[2,4,4])"
        ),
        "mhc_post_grad: d_out must be f32[2,4,3], got f32[2,3]",
    );
    verifies(&format!(
        "{HC_PRE}\n  %g = get %p, index=1 : f32[2,4]\n  %h = get %p, index=2 : f32[2,4,4]\n  %o = mhc_post_grad %f, %x, %g, %h, %x : (f32[2,3], f32[2,4,3], f32[2,4], f32[2,4,4])\n  %q = get %o, index=0 : f32[2,3]"
    ));
}

fn mhc_pre_grad() -> Op {
    Op::MhcPreGrad(PRE_MIX)
}

#[test]
fn mhc_pre_grad_operand_shapes() {
    // mhc_pre's operands, then cotangents of its three result types.
    let operands = || {
        let mut tys = pre_operands();
        tys.extend([f32t(&[2, 3]), f32t(&[2, 4]), f32t(&[2, 4, 4])]);
        tys
    };
    let (mut g, vs) = with_inputs(&operands());
    let v = g.add(mhc_pre_grad(), &vs).expect("well-typed");
    assert_eq!(
        g.value_type(v).to_string(),
        "(f32[2,4,3], f32[24,12], f32[3], f32[24])"
    );
    let cases: Vec<(usize, TensorType, &str)> = vec![
        (0, f32t(&[2, 12]), "needs rank >= 3, got f32[2,12]"),
        (1, f32t(&[24, 13]), "fn must be f32[24,12], got f32[24,13]"),
        (2, f32t(&[4]), "scale must be f32[3], got f32[4]"),
        (
            3,
            TensorType::new(DType::Bf16, [24]),
            "base must be f32[24], got bf16[24]",
        ),
        (
            4,
            f32t(&[2, 4]),
            "d_layer_input must be f32[2,3], got f32[2,4]",
        ),
        (5, f32t(&[4, 2]), "d_post must be f32[2,4], got f32[4,2]"),
        (
            6,
            TensorType::new(DType::Bf16, [2, 4, 4]),
            "d_comb must be f32[2,4,4], got bf16[2,4,4]",
        ),
    ];
    for (k, t, msg) in cases {
        let mut tys = operands();
        tys[k] = t.clone();
        assert_eq!(
            add_error(mhc_pre_grad(), &tys),
            format!("mhc_pre_grad: {msg}"),
            "{k} {t}"
        );
    }
    let mut tys = operands();
    for t in &mut tys {
        *t = t.with_dtype(DType::I32);
    }
    assert_eq!(
        add_error(mhc_pre_grad(), &tys),
        "mhc_pre_grad is not defined for i32 operands"
    );
    assert_eq!(
        add_error(mhc_pre_grad(), &pre_operands()),
        "mhc_pre_grad takes 7 operand(s), got 4"
    );
    // Bad attributes are errors too.
    let bad = Op::MhcPreGrad(PreMixSpec {
        norm_eps: FloatAttr(f64::NAN),
        pre_eps: FloatAttr(0.0),
        post_mult: FloatAttr(1.0),
        sinkhorn: SinkhornSpec {
            variant: SinkhornVariant::Paper,
            iters: 1,
            eps: FloatAttr(0.0),
        },
    });
    assert!(add_error(bad, &operands()).starts_with("mhc_pre_grad: "));
    // infer_type refuses it (the result is a tuple) instead of panicking.
    let refs: Vec<TensorType> = operands();
    let refs: Vec<&TensorType> = refs.iter().collect();
    assert!(infer_type(&mhc_pre_grad(), &refs).is_err());
}

// ---- semantic ops -------------------------------------------------------------

#[test]
fn semantic_ops_need_float_operands_of_enough_rank() {
    verify_error(
        "  %r = row_norm %i, eps=0.0 : i32[2,3]",
        "row_norm is not defined for i32 operands",
    );
    verify_error(
        "  %r = rms_norm %s, eps=0.0 : f32[]",
        "rms_norm: needs rank >= 1, got f32[]",
    );
    verify_error(
        "  %r = softmax %s, axis=0 : f32[]",
        "softmax: needs rank >= 1, got f32[]",
    );
    verify_error(
        "  %r = softmax %f, axis=2 : f32[2,3]",
        "softmax: axis 2 out of range for f32[2,3]",
    );
    verify_error(
        "  %r = softmax %i, axis=0 : i32[2,3]",
        "softmax is not defined for i32 operands",
    );
    let f3 = f32t(&[3]);
    assert_eq!(
        add_error(
            Op::ColNorm {
                eps: FloatAttr(0.0)
            },
            std::slice::from_ref(&f3)
        ),
        "col_norm: needs rank >= 2, got f32[3]"
    );
    assert_eq!(
        add_error(
            Op::RowNorm {
                eps: FloatAttr(0.0)
            },
            &[TensorType::new(DType::Bool, [3])]
        ),
        "row_norm is not defined for bool operands"
    );
    assert_eq!(
        add_error(
            Op::RowNorm {
                eps: FloatAttr(0.0)
            },
            &[f3.clone(), f3]
        ),
        "row_norm takes 1 operand(s), got 2"
    );
}

#[test]
fn sinkhorn_needs_square_float_matrices() {
    let sk = "variant=paper, iters=3, eps=0.0";
    verify_error(
        &format!("  %k = sinkhorn %f, {sk} : f32[2,3]"),
        "sinkhorn: needs square [..., n, n] matrices, got f32[2,3]",
    );
    verify_error(
        &format!("  %k = sinkhorn %x, {sk} : f32[2,4,3]"),
        "sinkhorn: needs square [..., n, n] matrices, got f32[2,4,3]",
    );
    verify_error(
        &format!("  %k = sinkhorn %scale, {sk} : f32[3]"),
        "sinkhorn: needs rank >= 2, got f32[3]",
    );
    verify_error(
        &format!("  %k = sinkhorn %i, {sk} : i32[2,3]"),
        "sinkhorn is not defined for i32 operands",
    );
    verifies(&format!("  %k = sinkhorn %m, {sk} : f32[3,3]"));
}

#[test]
fn sinkhorn_grad_needs_a_cotangent_of_the_logits_type() {
    let sk = "variant=tilekernels, iters=3, eps=1e-6";
    // %m is f32[3,3]; %f is f32[2,3], %s f32[], %i i32[2,3].
    verify_error(
        &format!("  %k = sinkhorn_grad %m, %f, {sk} : f32[3,3]"),
        "sinkhorn_grad operands disagree: f32[3,3] vs f32[2,3]",
    );
    verify_error(
        &format!("  %k = sinkhorn_grad %m, %s, {sk} : f32[3,3]"),
        "sinkhorn_grad operands disagree: f32[3,3] vs f32[]",
    );
    verify_error(
        &format!("  %k = sinkhorn_grad %f, %f, {sk} : f32[2,3]"),
        "sinkhorn_grad: needs square [..., n, n] matrices, got f32[2,3]",
    );
    verify_error(
        &format!("  %k = sinkhorn_grad %i, %i, {sk} : i32[2,3]"),
        "sinkhorn_grad is not defined for i32 operands",
    );
    verify_error(
        "  %k = sinkhorn_grad %m, %m, variant=paper, iters=0, eps=0.0 : f32[3,3]",
        "sinkhorn_grad: iters=0 is outside 1..=10000",
    );
    let one = f32t(&[3, 3]);
    let spec = SinkhornSpec {
        variant: SinkhornVariant::Paper,
        iters: 2,
        eps: FloatAttr(0.0),
    };
    assert!(
        add_error(Op::SinkhornGrad(spec), std::slice::from_ref(&one)).contains("sinkhorn_grad")
    );
    let bf = TensorType::new(DType::Bf16, [3, 3]);
    assert!(add_error(Op::SinkhornGrad(spec), &[one, bf]).contains("sinkhorn_grad"));
    verifies(&format!("  %k = sinkhorn_grad %m, %m, {sk} : f32[3,3]"));
}

// ---- attribute values -----------------------------------------------------------

/// `mhc_pre` of the residual with `attrs` (all six).
fn mhc_pre_line(attrs: &str) -> String {
    format!("  %p = mhc_pre %x, %fn, %scale, %base, {attrs} : {TUPLE}")
}

const PRE_ATTRS: &str =
    "norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=tilekernels, iters=20, eps=1e-6";

#[test]
fn sinkhorn_iters_outside_1_to_10000() {
    for iters in [0, 10_001] {
        verify_error(
            &format!("  %k = sinkhorn %m, variant=tilekernels, iters={iters}, eps=1e-6 : f32[3,3]"),
            &format!("sinkhorn: iters={iters} is outside 1..=10000"),
        );
        verify_error(
            &mhc_pre_line(&PRE_ATTRS.replace("iters=20", &format!("iters={iters}"))),
            &format!("mhc_pre: iters={iters} is outside 1..=10000"),
        );
    }
    verifies("  %k = sinkhorn %m, variant=paper, iters=10000, eps=0.0 : f32[3,3]");
    verifies("  %k = sinkhorn %m, variant=paper, iters=1, eps=0.0 : f32[3,3]");
}

#[test]
fn epsilons_must_be_finite_and_non_negative() {
    // (spelling, as the message shows it)
    let bad = [
        ("-0.1", "-0.1"),
        ("-2", "-2"),
        ("nan", "NaN"),
        ("inf", "inf"),
        ("-inf", "-inf"),
    ];
    for (v, shown) in bad {
        for op in ["row_norm", "col_norm", "rms_norm"] {
            verify_error(
                &format!("  %r = {op} %f, eps={v} : f32[2,3]"),
                &format!("{op}: eps={shown} must be finite and non-negative"),
            );
        }
        verify_error(
            &format!("  %k = sinkhorn %m, variant=paper, iters=1, eps={v} : f32[3,3]"),
            &format!("sinkhorn: eps={shown} must be finite and non-negative"),
        );
        verify_error(
            &mhc_pre_line(&PRE_ATTRS.replace("norm_eps=1e-6", &format!("norm_eps={v}"))),
            &format!("mhc_pre: norm_eps={shown} must be finite and non-negative"),
        );
        verify_error(
            &mhc_pre_line(&PRE_ATTRS.replace(", eps=1e-6", &format!(", eps={v}"))),
            &format!("mhc_pre: eps={shown} must be finite and non-negative"),
        );
        verify_error(
            &format!("  %p = hc_pre %x, %fn, %scale, %base, norm_eps={v} : {TUPLE}"),
            &format!("hc_pre: norm_eps={shown} must be finite and non-negative"),
        );
    }
    // pre_eps and post_mult may be negative, but not NaN or infinite.
    verifies(&mhc_pre_line(
        &PRE_ATTRS
            .replace("pre_eps=1e-6", "pre_eps=-0.5")
            .replace("post_mult=2.0", "post_mult=-2.0"),
    ));
    for (v, shown) in [("nan", "NaN"), ("inf", "inf"), ("-inf", "-inf")] {
        verify_error(
            &mhc_pre_line(&PRE_ATTRS.replace("pre_eps=1e-6", &format!("pre_eps={v}"))),
            &format!("mhc_pre: pre_eps={shown} must be finite"),
        );
        verify_error(
            &mhc_pre_line(&PRE_ATTRS.replace("post_mult=2.0", &format!("post_mult={v}"))),
            &format!("mhc_pre: post_mult={shown} must be finite"),
        );
    }
    // -0.0 is zero, so a valid eps.
    verifies("  %r = row_norm %f, eps=-0.0 : f32[2,3]");
}

#[test]
fn missing_attributes() {
    let cases = [
        (
            "  %r = row_norm %f : f32[2,3]",
            "row_norm needs attribute 'eps'",
        ),
        (
            "  %r = col_norm %f : f32[2,3]",
            "col_norm needs attribute 'eps'",
        ),
        (
            "  %r = rms_norm %f : f32[2,3]",
            "rms_norm needs attribute 'eps'",
        ),
        (
            "  %r = softmax %f : f32[2,3]",
            "softmax needs attribute 'axis'",
        ),
        (
            "  %k = sinkhorn %m, iters=3, eps=0.0 : f32[3,3]",
            "sinkhorn needs attribute 'variant'",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, eps=0.0 : f32[3,3]",
            "sinkhorn needs attribute 'iters'",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, iters=3 : f32[3,3]",
            "sinkhorn needs attribute 'eps'",
        ),
        (
            "  %p = hc_pre %x, %fn, %scale, %base : (f32[2,3], f32[2,4], f32[2,4,4])",
            "hc_pre needs attribute 'norm_eps'",
        ),
        ("  %g = get %f : f32[2,3]", "get needs attribute 'index'"),
    ];
    for (body, msg) in cases {
        let op = body.split_whitespace().nth(2).unwrap_or_default();
        body_error(body, op, msg);
    }
    for key in [
        "norm_eps",
        "pre_eps",
        "post_mult",
        "variant",
        "iters",
        "eps",
    ] {
        let attrs: Vec<&str> = PRE_ATTRS
            .split(", ")
            .filter(|a| !a.starts_with(&format!("{key}=")))
            .collect();
        body_error(
            &mhc_pre_line(&attrs.join(", ")),
            "mhc_pre",
            &format!("mhc_pre needs attribute '{key}'"),
        );
    }
}

#[test]
fn ill_typed_attribute_values() {
    // (line, where the error points, message)
    let cases = [
        (
            "  %r = row_norm %f, eps=abc : f32[2,3]",
            "abc",
            "attribute 'eps' needs a number, got 'abc'",
        ),
        (
            "  %r = row_norm %f, eps=1.2.3 : f32[2,3]",
            "1.2.3",
            "attribute 'eps' needs a number, got '1.2.3'",
        ),
        (
            "  %r = col_norm %f, eps=true : f32[2,3]",
            "true",
            "attribute 'eps' needs a number, got 'true'",
        ),
        (
            "  %r = rms_norm %f, eps=0x3f800000 : f32[2,3]",
            "0x3f800000",
            "attribute 'eps' needs a number, got '0x3f800000'",
        ),
        (
            "  %r = row_norm %f, eps=[1] : f32[2,3]",
            "eps",
            "attribute 'eps' needs a number",
        ),
        (
            "  %r = row_norm %f, eps : f32[2,3]",
            "eps",
            "attribute 'eps' needs a number",
        ),
        (
            "  %r = softmax %f, axis=1.0 : f32[2,3]",
            "1.0",
            "'1.0' is not a non-negative integer",
        ),
        (
            "  %r = softmax %f, axis=last : f32[2,3]",
            "last",
            "expected an integer, found 'last'",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, iters=1.5, eps=0.0 : f32[3,3]",
            "1.5",
            "'1.5' is not a non-negative integer",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, iters=-1, eps=0.0 : f32[3,3]",
            "-1",
            "'-1' is not a non-negative integer",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, iters=x, eps=0.0 : f32[3,3]",
            "x,",
            "expected an integer, found 'x'",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, iters=[3,4], eps=0.0 : f32[3,3]",
            "iters",
            "attribute 'iters' needs an integer",
        ),
        (
            "  %k = sinkhorn %m, variant=Paper, iters=3, eps=0.0 : f32[3,3]",
            "Paper",
            "'Paper' is not a Sinkhorn variant (paper, tilekernels)",
        ),
        (
            "  %k = sinkhorn %m, variant=knopp, iters=3, eps=0.0 : f32[3,3]",
            "knopp",
            "'knopp' is not a Sinkhorn variant (paper, tilekernels)",
        ),
        (
            "  %k = sinkhorn %m, variant=1, iters=3, eps=0.0 : f32[3,3]",
            "1,",
            "'1' is not a Sinkhorn variant",
        ),
        (
            "  %k = sinkhorn %m, variant=[1], iters=3, eps=0.0 : f32[3,3]",
            "variant",
            "attribute 'variant' needs paper or tilekernels",
        ),
        (
            "  %k = sinkhorn %m, variant, iters=3, eps=0.0 : f32[3,3]",
            "variant",
            "attribute 'variant' needs paper or tilekernels",
        ),
        (
            "  %g = get %f, index=one : f32[2,3]",
            "one",
            "expected an integer, found 'one'",
        ),
        (
            "  %g = get %f, index=-1 : f32[2,3]",
            "-1",
            "'-1' is not a non-negative integer",
        ),
    ];
    for (body, at, msg) in cases {
        body_error(body, at, msg);
    }
    body_error(
        &mhc_pre_line(&PRE_ATTRS.replace("post_mult=2.0", "post_mult=two")),
        "two",
        "attribute 'post_mult' needs a number, got 'two'",
    );
    body_error(
        &mhc_pre_line(&PRE_ATTRS.replace("variant=tilekernels", "variant=tk")),
        "tk",
        "'tk' is not a Sinkhorn variant (paper, tilekernels)",
    );
}

#[test]
fn unknown_and_repeated_attributes() {
    let cases = [
        (
            "  %r = row_norm %f, eps=0.0, axis=1 : f32[2,3]",
            "axis",
            "row_norm takes no attribute 'axis'",
        ),
        (
            "  %r = softmax %f, axis=1, eps=0.0 : f32[2,3]",
            "eps",
            "softmax takes no attribute 'eps'",
        ),
        (
            "  %k = sinkhorn %m, variant=paper, iters=3, eps=0.0, axis=0 : f32[3,3]",
            "axis",
            "sinkhorn takes no attribute 'axis'",
        ),
        (
            "  %p = hc_pre %x, %fn, %scale, %base, norm_eps=0.0, post_mult=2.0 : (f32[2,3], f32[2,4], f32[2,4,4])",
            "post_mult",
            "hc_pre takes no attribute 'post_mult'",
        ),
        (
            "  %o = mhc_post %f, %x, %f, %x, eps=0.0 : f32[2,4,3]",
            "eps",
            "mhc_post takes no attribute 'eps'",
        ),
        (
            "  %g = get %f, index=0, axis=0 : f32[2,3]",
            "axis",
            "get takes no attribute 'axis'",
        ),
        (
            "  %r = row_norm %f, eps=0.0, eps=1.0 : f32[2,3]",
            "eps=1.0",
            "attribute 'eps' given twice",
        ),
        (
            "  %k = sinkhorn %m, iters=3, variant=paper, iters=4, eps=0.0 : f32[3,3]",
            "iters=4",
            "attribute 'iters' given twice",
        ),
    ];
    for (body, at, msg) in cases {
        body_error(body, at, msg);
    }
    // Attributes come in any order and print in canonical order.
    verifies(&mhc_pre_line(
        "eps=1e-6, iters=20, variant=tilekernels, post_mult=2.0, pre_eps=1e-6, norm_eps=1e-6",
    ));
}

// ---- the tensor-only rules and the verifier ---------------------------------------

#[test]
fn infer_type_refuses_tuple_ops() {
    let tys = pre_operands();
    let refs: Vec<&TensorType> = tys.iter().collect();
    for op in [
        mhc_pre(),
        Op::HcPre {
            norm_eps: FloatAttr(0.0),
        },
    ] {
        let e = infer_type(&op, &refs).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: has a tuple result or operand; use infer",
                op.mnemonic()
            )
        );
        // infer types the same operands.
        let wrapped: Vec<_> = tys.iter().cloned().map(Into::into).collect();
        let t = infer(&op, &wrapped.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(t.to_string(), TUPLE);
    }
    assert!(matches!(
        infer_type(&Op::Get { index: 0 }, &refs[..1]),
        Err(TypeError::Invalid { op: "get", .. })
    ));
    assert!(matches!(
        infer(&Op::Get { index: 0 }, &[]),
        Err(TypeError::Arity {
            op: "get",
            got: 0,
            ..
        })
    ));
}

#[test]
fn verifier_reports_every_tuple_error_at_its_node() {
    let body = format!(
        "{HC_PRE}
  \
         %a = exp %p : f32[2,3]
  \
         %b = get %p, index=5 : f32[2,3]
  \
         %c = get %f, index=0 : f32[2,3]"
    );
    let text = in_graph(&body);
    let errs = match parse_and_verify(&text) {
        Err(Error::Verify(errs)) => errs,
        other => panic!("expected verifier errors, got {other:?}"),
    };
    let got: Vec<(Option<(usize, usize)>, &str)> = errs
        .errors
        .iter()
        .map(|e| (e.location, e.message.as_str()))
        .collect();
    let tuple_operand = format!("exp: operand is a tuple {TUPLE}; only get takes tuples");
    assert_eq!(
        got,
        [
            (Some((3, 3)), tuple_operand.as_str()),
            (Some((4, 3)), "get: index 5 out of range for a tuple of 3"),
            (Some((5, 3)), "get: operand must be a tuple, got f32[2,3]"),
        ]
    );
}
