//! `--dtype bf16`: every zoo model builds with every tensor in bf16, draws
//! sensible bf16 inputs, and computes what its f32 twin does, up to bf16
//! rounding.

use std::collections::BTreeMap;

use birkhoff_dsl::zoo::{Flag, ModelArgs, build_model, models};
use birkhoff_dsl::{Init, Rng, random_tensor};
use birkhoff_ir::tolerance::{Rule, Tolerance};
use birkhoff_ir::{DType, InterpOptions, Tensor, TensorType, Type, interpret, parse_and_verify};

/// Small shapes (two layers for the stacks), restricted to the flags
/// `model` takes, in `dtype`.
fn small(model: &str, dtype: DType) -> ModelArgs {
    let info = models().iter().find(|m| m.name == model).unwrap();
    let takes = |f: Flag| info.flags.contains(&f);
    ModelArgs {
        tokens: Some(5),
        streams: takes(Flag::Streams).then_some(3),
        hidden: takes(Flag::Hidden).then_some(8),
        heads: takes(Flag::Heads).then_some(2),
        layers: takes(Flag::Layers).then_some(2),
        dtype: Some(dtype),
        ..ModelArgs::default()
    }
}

fn dtypes(ty: &Type) -> Vec<DType> {
    match ty {
        Type::Tensor(t) => vec![t.dtype],
        Type::Tuple(ts) => ts.iter().map(|t| t.dtype).collect(),
    }
}

#[test]
fn every_model_builds_in_bf16_with_every_float_in_bf16() {
    for info in models() {
        let default = ModelArgs {
            dtype: Some(DType::Bf16),
            ..ModelArgs::default()
        };
        for args in [default, small(info.name, DType::Bf16)] {
            let bf = build_model(info.name, &args).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            let f32 = build_model(
                info.name,
                &ModelArgs {
                    dtype: Some(DType::F32),
                    ..args.clone()
                },
            )
            .unwrap();
            let (g, h) = (&bf.graph, &f32.graph);
            assert_eq!(parse_and_verify(&g.to_string()).unwrap()[0], *g);
            // The same graph as in f32, op for op and shape for shape; only
            // the float element type differs (i32/bool masks stay as they are).
            assert_eq!(g.len(), h.len(), "{}", info.name);
            for (a, b) in g.nodes().iter().zip(h.nodes()) {
                assert_eq!(a.op.mnemonic(), b.op.mnemonic(), "{}", info.name);
                for (da, db) in dtypes(&a.ty).into_iter().zip(dtypes(&b.ty)) {
                    let want = if db == DType::F32 { DType::Bf16 } else { db };
                    assert_eq!(da, want, "{}: {}", info.name, a.op.mnemonic());
                }
            }
            for o in g.outputs() {
                assert_eq!(g.ty(o.value).dtype, DType::Bf16, "{}", info.name);
            }
            assert_eq!(bf.inits, f32.inits, "{}", info.name);
        }
    }
}

/// Each input drawn in bf16 is the f32 draw rounded to bf16 (the same
/// samples, one rounding apart), and is not degenerate: its values spread
/// like the f32 ones.
#[test]
fn bf16_inputs_are_the_f32_draws_rounded() {
    let args = ModelArgs {
        dtype: Some(DType::Bf16),
        ..ModelArgs::default()
    };
    for name in ["mhc-sublayer", "mhc-post", "mhc-block"] {
        let m = build_model(name, &args).unwrap();
        let root = Rng::new(9);
        for &v in m.graph.inputs() {
            let name = m.graph.input_name(v).unwrap();
            let ty = m.graph.ty(v);
            let init = m.inits[name].clone();
            let b = random_tensor(ty, &init, &mut root.fork(name)).to_f64_vec();
            let f = random_tensor(
                &TensorType::new(DType::F32, ty.shape.clone()),
                &init,
                &mut root.fork(name),
            )
            .to_f64_vec();
            for (x, y) in b.iter().zip(&f) {
                // Rounding f64 → bf16 directly and f32 → bf16 can differ by
                // a double-rounding step only at exact midpoints.
                assert!(
                    Tolerance::elementwise(DType::Bf16).accepts(*x, *y),
                    "{name}: bf16 {x} vs f32 {y}"
                );
                assert!(x.is_finite());
            }
            let distinct = {
                let mut s: Vec<u64> = b.iter().map(|x| x.to_bits()).collect();
                s.sort_unstable();
                s.dedup();
                s.len()
            };
            match init {
                Init::Constant(_) => assert_eq!(distinct, 1),
                // bf16 has 2^8 values per binade: a few hundred samples
                // still take many distinct values.
                _ if b.len() >= 64 => assert!(distinct > 32, "{name}: {distinct} distinct"),
                _ => assert!(distinct > 1, "{name}: {distinct} distinct"),
            }
        }
    }
}

/// The bf16 model on bf16 inputs against its f32 twin on the same values:
/// every intermediate is rounded to 8 bits, so the outputs differ by a few
/// bf16 units (2^-8) of the output's peak; 8 units is the bound (the
/// measured worst is below 4.5).
#[test]
fn bf16_models_compute_what_f32_models_do_up_to_rounding() {
    for info in models() {
        let bf = build_model(info.name, &small(info.name, DType::Bf16)).unwrap();
        let f32 = build_model(info.name, &small(info.name, DType::F32)).unwrap();
        for seed in 0..4 {
            let root = Rng::new(seed);
            let mut ins_bf = BTreeMap::new();
            let mut ins_f32 = BTreeMap::new();
            for &v in bf.graph.inputs() {
                let name = bf.graph.input_name(v).unwrap();
                let t = random_tensor(bf.graph.ty(v), &bf.inits[name], &mut root.fork(name));
                let ty = TensorType::new(DType::F32, t.shape().to_vec());
                ins_f32.insert(
                    name.to_string(),
                    Tensor::from_f64(ty, &t.to_f64_vec()).unwrap(),
                );
                ins_bf.insert(name.to_string(), t);
            }
            let opts = InterpOptions::default();
            let got = interpret(&bf.graph, &ins_bf, &opts).unwrap();
            let want = interpret(&f32.graph, &ins_f32, &opts).unwrap();
            // The bf16 graph rounds every intermediate, the f32 one none:
            // two programs that round apart.
            let rule = Rule::rounded_apart(DType::Bf16);
            for ((name, g), (_, w)) in got.iter().zip(&want) {
                let c = rule.compare(&g.to_f64_vec(), &w.to_f64_vec());
                assert!(c.passed(), "{} seed {seed} {name}: {c:?}", info.name);
            }
        }
    }
}
