//! The text format round-trips: `parse(print(g)) == g` bit for bit, and
//! printing is a fixed point. Hand-written texts check the lexical freedom
//! the parser allows (comments, spacing, hex bits, special floats, several
//! graphs in one module) and that it all prints back canonically.

use birkhoff_ir::{
    DType, FloatAttr, Graph, InputKind, Literal, Op, OpKind, PreMixSpec, SinkhornSpec,
    SinkhornVariant, TensorType, parse_and_verify, parse_graph, parse_module, verify,
};
use birkhoff_testkit::graph;
use proptest::prelude::*;

fn parse_one(text: &str) -> Graph {
    match parse_module(text) {
        Ok(mut gs) if gs.len() == 1 => gs.remove(0),
        other => panic!("expected one graph from:\n{text}\ngot {other:?}"),
    }
}

proptest! {
    #[test]
    fn parse_inverts_print(g in graph()) {
        let text = g.to_string();
        let parsed = parse_module(&text);
        prop_assert!(parsed.is_ok(), "{}\n{}", parsed.unwrap_err(), text);
        let parsed = parsed.unwrap_or_default();
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(&parsed[0], &g, "\n{}", text);
        prop_assert_eq!(&parsed[0].to_string(), &text);
        prop_assert!(parse_and_verify(&text).is_ok());
    }

    #[test]
    fn modules_of_several_graphs_round_trip(mut a in graph(), mut b in graph(), mut c in graph()) {
        // A module's graphs have distinct names.
        a.set_name("a");
        b.set_name("b");
        c.set_name("c");
        let text = format!("{a}\n; between graphs\n{b}{c}");
        let parsed = parse_module(&text);
        prop_assert!(parsed.is_ok(), "{}\n{}", parsed.unwrap_err(), text);
        prop_assert_eq!(parsed.unwrap_or_default(), vec![a, b, c]);
    }
}

#[test]
fn a_graph_name_used_twice_in_a_module_is_an_error() {
    let g = "graph @a(%x: f32[2]) -> (y: f32[2]) {\n  return %x\n}\n";
    let e = parse_module(&format!("{g}{g}")).unwrap_err();
    assert_eq!((e.line, e.col), (4, 1));
    assert!(
        e.message
            .contains("graph @a is defined twice (first at line 1)"),
        "{e}"
    );
}

#[test]
fn a_byte_order_mark_is_skipped_and_invisible_characters_are_escaped() {
    let g = "graph @a(%x: f32[2]) -> (y: f32[2]) {\n  return %x\n}\n";
    assert!(parse_module(&format!("\u{feff}{g}")).is_ok());
    let e = parse_module(&g.replace("return", "return\0")).unwrap_err();
    assert!(e.message.contains("unexpected character '\\0'"), "{e}");
}

#[test]
fn comments_spacing_and_line_breaks_are_free() {
    let messy = "; a leading comment\n\
        \n\
        graph   @messy(  %x:f32[2,3] ,param %w :  f32[2,3])->(y:f32[2,3],\tz: bool[2,3]){ ; trailing\n\
        \t%a=add %x,%w:f32[2,3]\n\
        \n\
        ;   %b = this line is a comment\n\
        %b = lt\n\
             %a ,\n\
             %x\n\
             : bool[2,3]\n\
          return %a,%b}\n";
    let canonical = "graph @messy(%x: f32[2,3], param %w: f32[2,3]) -> (y: f32[2,3], z: bool[2,3]) {\n\
        \x20 %a = add %x, %w : f32[2,3]\n\
        \x20 %b = lt %a, %x : bool[2,3]\n\
        \x20 return %a, %b\n\
        }\n";
    let g = parse_one(messy);
    assert!(verify(&g).is_ok());
    assert_eq!(g.to_string(), canonical);
    assert_eq!(parse_one(canonical), g);
    let crlf = messy.replace('\n', "\r\n");
    assert_eq!(parse_one(&crlf), g);
}

#[test]
fn same_graph_built_through_the_api() {
    let text = "graph @api(param %w: f64[2], %x: f64[2]) -> (s: f64[], m: f64[1]) {
      %2 = mul %w, %x : f64[2]
      %3 = reduce_sum %2, axes=[0] : f64[]
      %4 = reduce_max %2, axes=[0], keepdims : f64[1]
      return %3, %4
    }";
    let t = TensorType::new(DType::F64, [2]);
    let mut g = Graph::new("api");
    let w = g.add_input("w", InputKind::Param, t.clone());
    let x = g.add_input("x", InputKind::Data, t);
    let p = g.add(Op::Mul, &[w, x]).unwrap();
    let s = g
        .add(
            Op::ReduceSum {
                axes: vec![0],
                keepdims: false,
            },
            &[p],
        )
        .unwrap();
    let m = g
        .add(
            Op::ReduceMax {
                axes: vec![0],
                keepdims: true,
            },
            &[p],
        )
        .unwrap();
    g.add_output("s", s);
    g.add_output("m", m);
    assert_eq!(parse_one(text), g);
    assert_eq!(parse_graph(&g.to_string()), Ok(g));
}

#[test]
fn value_names_are_free_and_survive_printing() {
    let text = "graph @names(%in.put_0: i32[3]) -> (o.k: i32[3]) {
      %99 = neg %in.put_0 : i32[3]
      %tmp = abs %99 : i32[3]
      %0 = add %tmp, %99 : i32[3]
      return %0
    }";
    let g = parse_one(text);
    assert!(verify(&g).is_ok());
    let printed = g.to_string();
    assert!(
        printed.contains("  %99 = neg %in.put_0 : i32[3]\n"),
        "{printed}"
    );
    assert!(printed.contains("  %tmp = abs %99 : i32[3]\n"), "{printed}");
    assert!(
        printed.contains("  %0 = add %tmp, %99 : i32[3]\n"),
        "{printed}"
    );
    assert!(printed.contains("  return %0\n"), "{printed}");
    assert_eq!(parse_one(&printed), g);
    // A value added without a name prints as its index (%4: the input,
    // %99, %tmp and %0 sit at 0..=3)...
    let mut h = g;
    let v = h.add(Op::Neg, &[h.outputs()[0].value]).unwrap();
    assert_eq!(birkhoff_ir::value_name(&h, v), "%4");
    // ...unless a label took that spelling: then the first free %N_k.
    let w = h.add(Op::Neg, &[v]).unwrap();
    assert!(h.set_label(v, "5"));
    assert_eq!(birkhoff_ir::value_name(&h, v), "%5");
    assert_eq!(birkhoff_ir::value_name(&h, w), "%5_1");
    // A name another value has is refused; the text stays parseable.
    assert!(!h.set_label(w, "tmp"));
    h.add_output("p", w);
    let printed = h.to_string();
    assert_eq!(parse_one(&printed).to_string(), printed);
}

fn const_value(g: &Graph, index: usize) -> f64 {
    match &g.nodes()[index].op {
        Op::Const(lit) => lit.get(0),
        op => panic!("node {index} is {}, not a const", op.mnemonic()),
    }
}

#[test]
fn hex_bit_literals_read_exactly() {
    let text = "graph @hex() -> (a: f32[], b: f32[], c: bf16[], d: f64[], e: f32[], f: bf16[]) {
      %0 = const 0x3f800000 : f32[]
      %1 = const 0x00000001 : f32[]
      %2 = const 0x0001 : bf16[]
      %3 = const 0x8000000000000000 : f64[]
      %4 = const 0xFFC00001 : f32[]
      %5 = const 0xff80 : bf16[]
      return %0, %1, %2, %3, %4, %5
    }";
    let g = parse_one(text);
    assert!(verify(&g).is_ok());
    assert_eq!(const_value(&g, 0), 1.0);
    assert_eq!(const_value(&g, 1), f64::from(f32::from_bits(1)));
    assert_eq!(const_value(&g, 2), 2f64.powi(-133));
    let neg_zero = const_value(&g, 3);
    assert!(neg_zero == 0.0 && neg_zero.is_sign_negative());
    assert!(const_value(&g, 4).is_nan());
    assert_eq!(const_value(&g, 5), f64::NEG_INFINITY);
    let printed = g.to_string();
    for line in [
        "%0 = const 1.0 : f32[]",
        "%1 = const 1e-45 : f32[]",
        "%3 = const -0.0 : f64[]",
        "%4 = const nan : f32[]",
        "%5 = const -inf : bf16[]",
    ] {
        assert!(printed.contains(line), "missing `{line}` in\n{printed}");
    }
    // Every NaN payload reads as the one canonical NaN.
    let canonical_nan = parse_one(&text.replace("0xFFC00001", "nan"));
    assert_eq!(g, canonical_nan);
    assert_eq!(parse_one(&printed), g);
}

#[test]
fn special_floats_in_every_float_type() {
    for d in ["f32", "bf16", "f64"] {
        let text = format!(
            "graph @special() -> (s: {d}[], v: {d}[6]) {{
              %0 = const -inf : {d}[]
              %1 = const [nan, inf, -inf, -0.0, 0.0, -1.5e-3] : {d}[6]
              return %0, %1
            }}"
        );
        let g = parse_one(&text);
        assert!(verify(&g).is_ok(), "{d}");
        assert_eq!(const_value(&g, 0), f64::NEG_INFINITY, "{d}");
        let Op::Const(lit) = &g.nodes()[1].op else {
            panic!("not a const")
        };
        assert!(lit.get(0).is_nan());
        assert_eq!(lit.get(1), f64::INFINITY);
        assert_eq!(lit.get(2), f64::NEG_INFINITY);
        assert!(lit.get(3) == 0.0 && lit.get(3).is_sign_negative());
        assert!(lit.get(4) == 0.0 && lit.get(4).is_sign_positive());
        let dtype = DType::from_name(d).unwrap();
        assert_eq!(lit.get(5), dtype.round(-1.5e-3), "{d}");
        let printed = g.to_string();
        assert!(
            printed.contains("%1 = const [nan, inf, -inf, -0.0, 0.0, "),
            "{printed}"
        );
        assert_eq!(parse_one(&printed), g, "{d}");
    }
}

#[test]
fn extreme_values_round_trip_bit_exactly() {
    let cases: [(DType, &[f64]); 5] = [
        (
            DType::F32,
            &[
                f32::MAX as f64,
                f32::MIN_POSITIVE as f64,
                f32::from_bits(0x007f_ffff) as f64,
                0.1f32 as f64,
                -16_777_217f32 as f64,
            ],
        ),
        (
            DType::F64,
            &[f64::MAX, f64::MIN_POSITIVE, 5e-324, 0.1, -1e300],
        ),
        (
            DType::Bf16,
            &[
                3.3895313892515355e38,
                2f64.powi(-133),
                2f64.powi(-126),
                -1.0,
                0.5,
            ],
        ),
        (
            DType::I32,
            &[i32::MIN as f64, i32::MAX as f64, 0.0, -1.0, 7.0],
        ),
        (DType::Bool, &[1.0, 0.0, 0.0, 1.0, 1.0]),
    ];
    for (d, xs) in cases {
        let ty = TensorType::new(d, [xs.len()]);
        let lit = Literal::dense(ty.clone(), xs.to_vec()).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            assert_eq!(lit.get(i).to_bits(), x.to_bits(), "{d} {x} is not exact");
        }
        let mut g = Graph::new("extremes");
        let c = g.add(Op::Const(lit), &[]).unwrap();
        let s = g
            .add(Op::Const(Literal::splat(TensorType::scalar(d), xs[0])), &[])
            .unwrap();
        g.add_output("c", c);
        g.add_output("s", s);
        let printed = g.to_string();
        assert_eq!(parse_one(&printed), g, "{printed}");
    }
}

#[test]
fn several_graphs_in_one_module_keep_their_own_names() {
    let text = "
    ; two graphs may reuse value and input names
    graph @first(%x: f32[2]) -> (y: f32[2]) {
      %1 = exp %x : f32[2]
      return %1
    }
    graph @second(%x: bool[2]) -> (y: bool[2], z: bool[2]) {
      %1 = not %x : bool[2]
      return %1, %x
    }";
    let gs = parse_module(text).unwrap();
    assert_eq!(gs.len(), 2);
    assert_eq!(gs[0].name(), "first");
    assert_eq!(gs[1].name(), "second");
    assert_eq!(gs[1].outputs()[1].value, gs[1].inputs()[0]);
    let printed: String = gs.iter().map(|g| g.to_string()).collect();
    assert_eq!(parse_module(&printed).unwrap(), gs);
    assert!(parse_and_verify(text).is_ok());
    assert!(parse_module("").unwrap().is_empty());
    assert!(parse_module("; only a comment\n\n").unwrap().is_empty());
}

#[test]
fn every_attribute_form_round_trips() {
    let text = "graph @attrs(%x: f32[2,3,4]) -> (a: f32[3,4], b: f32[4,2,3], c: f32[1,2,2], d: f32[2,6,4], e: i32[2,3,4], f: f32[5,2,3,4], g: bf16[6,4], h: f32[2,3,3], i: f32[]) {
      %1 = reduce_max %x, axes=[0] : f32[3,4]
      %2 = permute %x, perm=[2,0,1] : f32[4,2,3]
      %3 = slice %x, start=[1,0,2], end=[2,2,4] : f32[1,2,2]
      %4 = concat %x, %x, axis=1 : f32[2,6,4]
      %5 = iota axis=2 : i32[2,3,4]
      %6 = broadcast %x : f32[5,2,3,4]
      %7 = reshape %x : f32[6,4]
      %8 = cast %7 : bf16[6,4]
      %9 = permute %x, perm=[0,2,1] : f32[2,4,3]
      %10 = matmul %x, %9 : f32[2,3,3]
      %11 = reduce_sum %x, axes=[2,0,1] : f32[]
      return %1, %2, %3, %4, %5, %6, %8, %10, %11
    }";
    let g = parse_and_verify(text).unwrap().remove(0);
    let printed = g.to_string();
    assert!(printed.contains("axes=[2,0,1] : f32[]"), "{printed}");
    assert_eq!(parse_one(&printed), g);
    assert_eq!(parse_one(&printed).to_string(), printed);
}

#[test]
fn bf16_decimal_literals_round_to_nearest() {
    // 1 + 2^-8 + 2^-30 lies just above the midpoint between the bf16 values
    // 1 and 1 + 2^-7, so it rounds up; reading it as an f32 first lands
    // exactly on the midpoint, which ties to even (down).
    let text = "graph @b() -> (y: bf16[2]) {
      %0 = const [1.0039062509313226, -1.0039062509313226] : bf16[2]
      return %0
    }";
    let g = parse_one(text);
    let Op::Const(lit) = &g.nodes()[0].op else {
        panic!("not a const")
    };
    assert_eq!(lit.get(0), 1.0 + 1.0 / 128.0);
    assert_eq!(lit.get(1), -(1.0 + 1.0 / 128.0));
    assert_eq!(
        lit.get(0),
        DType::Bf16.round(1.0 + 2f64.powi(-8) + 2f64.powi(-30))
    );
    // An exact midpoint still ties to even.
    let tie = parse_one(&text.replace("1.0039062509313226", "1.00390625"));
    let Op::Const(lit) = &tie.nodes()[0].op else {
        panic!("not a const")
    };
    assert_eq!(lit.get(0), 1.0);
    assert_eq!(lit.get(1), -1.0);
}

/// Every semantic and fused op, `get` of each tuple element, and tuple
/// types, in canonical form.
const FUSED: &str = "\
graph @fused(%x: f32[2,4,3], param %fn: f32[24,12], param %scale: f32[3], param %base: f32[24], %f: f32[2,3]) -> (a: f32[2,4,3], b: f32[2,4,3], c: f32[2,4,3], d: f32[2,4,3], e: f32[2,3,3], li: f32[2,3], comb: f32[2,4,4], post: f32[2,4], y: f32[2,4,3]) {
  %5 = row_norm %x, eps=0.0 : f32[2,4,3]
  %6 = col_norm %x, eps=1e-6 : f32[2,4,3]
  %7 = softmax %x, axis=1 : f32[2,4,3]
  %8 = rms_norm %x, eps=1e-5 : f32[2,4,3]
  %9 = slice %x, start=[0,0,0], end=[2,3,3] : f32[2,3,3]
  %10 = sinkhorn %9, variant=tilekernels, iters=20, eps=1e-6 : f32[2,3,3]
  %11 = mhc_pre %x, %fn, %scale, %base, norm_eps=1e-6, pre_eps=-0.5, post_mult=2.0, variant=paper, iters=3, eps=0.0 : (f32[2,3], f32[2,4], f32[2,4,4])
  %12 = get %11, index=0 : f32[2,3]
  %13 = get %11, index=1 : f32[2,4]
  %14 = get %11, index=2 : f32[2,4,4]
  %15 = hc_pre %x, %fn, %scale, %base, norm_eps=0.001 : (f32[2,3], f32[2,4], f32[2,4,4])
  %16 = get %15, index=1 : f32[2,4]
  %17 = mhc_post %f, %x, %13, %14 : f32[2,4,3]
  return %5, %6, %7, %8, %10, %12, %14, %16, %17
}
";

#[test]
fn semantic_and_fused_ops_round_trip() {
    let g = parse_and_verify(FUSED).unwrap().remove(0);
    assert_eq!(g.to_string(), FUSED);
    assert_eq!(parse_one(&g.to_string()), g);
    // The attributes were read, not just echoed; an f32 op stores them
    // rounded to f32, the constants its kernel computes with.
    let e6 = FloatAttr(f64::from(1e-6_f32));
    let ops: Vec<&Op> = g.nodes().iter().map(|n| &n.op).collect();
    assert_eq!(ops[6], &Op::ColNorm { eps: e6 });
    assert_eq!(ops[7], &Op::Softmax { axis: 1 });
    assert_eq!(
        ops[10],
        &Op::Sinkhorn(SinkhornSpec {
            variant: SinkhornVariant::TileKernels,
            iters: 20,
            eps: e6,
        })
    );
    assert_eq!(
        ops[11],
        &Op::MhcPre(PreMixSpec {
            norm_eps: e6,
            pre_eps: FloatAttr(-0.5),
            post_mult: FloatAttr(2.0),
            sinkhorn: SinkhornSpec {
                variant: SinkhornVariant::Paper,
                iters: 3,
                eps: FloatAttr(0.0),
            },
        })
    );
    assert_eq!(ops[16], &Op::Get { index: 1 });
    assert_eq!(
        g.value_type(birkhoff_ir::ValueId::new(15)).to_string(),
        "(f32[2,3], f32[2,4], f32[2,4,4])"
    );
}

#[test]
fn non_canonical_spellings_of_the_new_syntax_print_canonically() {
    // Attributes in any order; floats as integers, with capital exponents,
    // or as raw f64 bits (1e-6 is 0x3eb0c6f7a0b5ed8d); spaces and line
    // breaks inside a tuple type; integer attributes as one-element lists.
    let messy = FUSED
        .replace(
            "norm_eps=1e-6, pre_eps=-0.5, post_mult=2.0, variant=paper, iters=3, eps=0.0",
            "eps=0, iters=[3], variant=paper, post_mult=2, pre_eps=-5E-1, norm_eps=0x3eb0c6f7a0b5ed8d",
        )
        .replace("eps=1e-5", "eps=0.00001")
        .replace("axis=1", "axis=[1]")
        .replace(
            "norm_eps=0.001 : (f32[2,3], f32[2,4], f32[2,4,4])",
            "norm_eps=1e-3 : ( f32[2,3],f32[2,4] ,\n      f32[2,4,4])",
        );
    assert_ne!(messy, FUSED);
    let g = parse_and_verify(&messy).unwrap().remove(0);
    assert_eq!(g.to_string(), FUSED);
    // -0.0 keeps its sign: it is a different attribute from 0.0.
    let neg = parse_one(&FUSED.replace("row_norm %x, eps=0.0", "row_norm %x, eps=-0.0"));
    assert_ne!(neg, g);
    assert!(neg.to_string().contains("row_norm %x, eps=-0.0 :"));
    // A list attribute may be one integer.
    let text = "graph @l(%x: f32[2,3]) -> (y: f32[2]) {
      %1 = reduce_sum %x, axes=1 : f32[2]
      return %1
    }";
    assert!(parse_one(text).to_string().contains("axes=[1] : f32[2]"));
}

proptest! {
    #[test]
    fn float_attributes_round_trip_bit_exactly(
        eps in any::<f64>(),
        signed in any::<f64>(),
        iters in 1usize..=10_000,
        paper in any::<bool>(),
    ) {
        // Every bit pattern prints and reads back: the verifier's range
        // checks are not the printer's business.
        let spec = SinkhornSpec {
            variant: if paper { SinkhornVariant::Paper } else { SinkhornVariant::TileKernels },
            iters,
            eps: FloatAttr(eps),
        };
        let t = TensorType::new(DType::F64, [1, 2, 2]);
        let mut g = Graph::new("attrs");
        let x = g.add_input("x", InputKind::Data, t.clone());
        let ops = [
            Op::RowNorm { eps: FloatAttr(eps) },
            Op::ColNorm { eps: FloatAttr(signed) },
            Op::RmsNorm { eps: FloatAttr(eps) },
            Op::Sinkhorn(spec),
        ];
        for op in ops {
            let v = g.push(birkhoff_ir::Node { op, args: vec![x], ty: t.clone().into() });
            g.add_output(format!("y{}", v.index()), v);
        }
        let pre = Op::MhcPre(PreMixSpec {
            norm_eps: FloatAttr(eps),
            pre_eps: FloatAttr(signed),
            post_mult: FloatAttr(-signed),
            sinkhorn: spec,
        });
        let tuple = birkhoff_ir::Type::Tuple(vec![t.clone(), t.clone(), t.clone()]);
        let p = g.push(birkhoff_ir::Node { op: pre, args: vec![x, x, x, x], ty: tuple });
        let h = g.push(birkhoff_ir::Node {
            op: Op::HcPre { norm_eps: FloatAttr(signed) },
            args: vec![x, x, x, x],
            ty: g.value_type(p).clone(),
        });
        for (k, tup) in [p, h].into_iter().enumerate() {
            let v = g.push(birkhoff_ir::Node { op: Op::Get { index: k }, args: vec![tup], ty: t.clone().into() });
            g.add_output(format!("g{k}"), v);
        }
        let text = g.to_string();
        let parsed = parse_module(&text);
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed, text);
        let parsed = parsed.unwrap_or_default();
        // NaN payloads read back as the one canonical NaN.
        let canonical = |x: f64| if x.is_nan() { f64::NAN } else { x };
        if eps.to_bits() == canonical(eps).to_bits() && signed.to_bits() == canonical(signed).to_bits() {
            prop_assert_eq!(&parsed[0], &g, "\n{}", text);
        }
        prop_assert_eq!(&parsed[0].to_string(), &text);
    }
}

/// The fenced `bir` blocks of `docs/ir.md`: each parses, verifies and, with
/// its comment lines dropped, is already in canonical printed form.
#[test]
fn ir_reference_examples_are_canonical() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ir.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bir") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) if !l.trim_start().starts_with(';') => {
                block.push_str(l);
                block.push('\n');
            }
            _ => {}
        }
    }
    assert!(blocks.len() >= 2, "no bir examples found in {path}");
    for block in &blocks {
        let graphs = parse_and_verify(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let printed: String = graphs.iter().map(|g| g.to_string()).collect();
        assert_eq!(&printed, block);
    }
    // Every op has an example: the primitives in the every-op block, the
    // semantic and fused ops and `get` in the one with `mhc_pre`, except
    // the backward and replay ops, which the reference tables show alone.
    let every_op = &blocks[1];
    let fused = blocks
        .iter()
        .find(|b| b.contains(" = mhc_pre "))
        .expect("an example with mhc_pre");
    let table_only = [
        "sinkhorn_grad",
        "mhc_post_grad",
        "mhc_pre_grad",
        "mhc_project",
        "mhc_pre_projected",
    ];
    for &kind in OpKind::ALL {
        let op = kind.sample();
        let name = kind.mnemonic();
        if kind == OpKind::Input {
            // Inputs are declared in the signature, not by a node.
            continue;
        }
        if table_only.contains(&name) {
            assert!(doc.contains(&format!("| `{name}` |")), "{name} missing");
        } else if op.is_semantic() || op.is_fused() || kind == OpKind::Get {
            assert!(fused.contains(&format!(" = {name} ")), "{name} missing");
        } else {
            assert!(every_op.contains(&format!(" = {name} ")), "{name} missing");
        }
    }
}
