//! The ONNX frontend against onnxruntime, on the committed fixtures of
//! `tests/onnx/fixtures` (built by `tests/onnx/gen.py`; no Python is
//! needed here).
//!
//! For every model: it imports, the reference interpreter and the CPU
//! backend (optimized) both match onnxruntime's outputs within the
//! output rule of `docs/design.md` §3, and an mHC model fuses into the
//! number of `mhc_pre` and `mhc_post` its manifest entry gives. For every
//! error fixture: the import fails, without a panic, with a message that
//! says what is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use birkhoff::compare::{Outputs, compare_with, reference_options};
use birkhoff::ir::tolerance::Rule;
use birkhoff::ir::{DType, Graph, Tensor, TensorData, interpret};
use birkhoff::npy::read_npy;
use birkhoff::onnx::{ImportOptions, Imported, Role, import_file};
use birkhoff::{CompileOptions, compile_with};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/fixtures")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest.json");
    serde_json::from_str::<Vec<Value>>(&text).expect("manifest is a JSON list")
}

fn entries(pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    manifest().into_iter().filter(|e| pred(e)).collect()
}

fn name(e: &Value) -> &str {
    e["name"].as_str().unwrap_or("?")
}

fn import(e: &Value) -> Result<Imported, String> {
    let dims = e
        .get("dims")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as usize))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    let path = fixtures().join(e["model"].as_str().unwrap_or_default());
    import_file(&path, &ImportOptions { dims }).map_err(|err| err.to_string())
}

/// A fixture's `.npy` file (integer inputs, token ids, are saved as
/// `int32`, birkhoff's integer type).
fn npy(file: &str) -> Tensor {
    let path = fixtures().join(file);
    read_npy(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The graph inputs of fixture `e`, by IR name: data from its files,
/// params from the model.
fn inputs(e: &Value, m: &Imported) -> Result<BTreeMap<String, Tensor>, String> {
    let mut map = m.weights.clone();
    for pair in e["inputs"].as_array().into_iter().flatten() {
        let onnx = pair[0].as_str().unwrap_or_default();
        let ir = m
            .ir_name(onnx, Role::Input)
            .ok_or_else(|| format!("no graph input for ONNX input `{onnx}`"))?;
        map.insert(ir.to_string(), npy(pair[1].as_str().unwrap_or_default()));
    }
    Ok(map)
}

/// onnxruntime's outputs, under the graph's output names.
fn expected(e: &Value, m: &Imported) -> Result<Outputs, String> {
    let mut out = Vec::new();
    for pair in e["outputs"].as_array().into_iter().flatten() {
        let onnx = pair[0].as_str().unwrap_or_default();
        let ir = m
            .ir_name(onnx, Role::Output)
            .ok_or_else(|| format!("no graph output for ONNX output `{onnx}`"))?;
        out.push((ir.to_string(), npy(pair[1].as_str().unwrap_or_default())));
    }
    Ok(out)
}

/// `got` against onnxruntime's `want` under the output rule.
fn check(graph: &Graph, want: &Outputs, got: &Outputs, what: &str) -> Result<(), String> {
    let errors =
        compare_with(graph, want, got, Rule::output).map_err(|e| format!("{what}: {e}"))?;
    let bad: Vec<String> = errors
        .iter()
        .filter(|o| !o.within)
        .map(|o| format!("{what}: {o:?}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n"))
    }
}

fn run_fixture(e: &Value) -> Result<(), String> {
    let m = import(e)?;
    let ins = inputs(e, &m)?;
    let want = expected(e, &m)?;
    let g = &m.graph;
    let interp = interpret(g, &ins, &reference_options()).map_err(|e| e.to_string())?;
    check(g, &want, &interp, "interpreter")?;
    let exe = compile_with(g, &CompileOptions::default()).map_err(|e| e.to_string())?;
    let cpu = exe.run(&ins).map_err(|e| e.to_string())?;
    check(g, &want, &cpu, "cpu backend (optimized)")
}

fn report(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_model_matches_onnxruntime() {
    let models = entries(|e| e.get("error").is_none());
    assert!(models.len() >= 80, "only {} model fixtures", models.len());
    let failures: Vec<String> = models
        .iter()
        .filter_map(|e| run_fixture(e).err().map(|m| format!("{}: {m}", name(e))))
        .collect();
    report(&failures, models.len());
}

#[test]
fn mhc_models_fuse_into_mhc_pre_and_mhc_post() {
    let models = entries(|e| e.get("fuse").is_some());
    assert!(models.len() >= 4, "only {} mHC fixtures", models.len());
    let mut failures = Vec::new();
    for e in &models {
        let m = match import(e) {
            Ok(m) => m,
            Err(err) => {
                failures.push(format!("{}: {err}", name(e)));
                continue;
            }
        };
        let out = birkhoff::opt::optimize(&m.graph, |_| false).expect("optimizes");
        let hist = out.graph.op_histogram();
        let count = |op: &str| hist.iter().find(|(k, _)| *k == op).map_or(0, |&(_, n)| n);
        for (op, want) in e["fuse"].as_object().into_iter().flatten() {
            let want = want.as_u64().unwrap_or(0) as usize;
            if count(op) != want {
                failures.push(format!(
                    "{}: {} {op}, expected {want}; fusion report:\n{}",
                    name(e),
                    count(op),
                    out.report
                ));
            }
        }
    }
    report(&failures, models.len());
}

#[test]
fn malformed_and_unsupported_models_are_clear_errors() {
    let cases = entries(|e| e.get("error").is_some());
    assert!(cases.len() >= 10, "only {} error fixtures", cases.len());
    let mut failures = Vec::new();
    for e in &cases {
        let want = e["error"].as_str().unwrap_or_default().to_lowercase();
        match std::panic::catch_unwind(|| import(e)) {
            Err(_) => failures.push(format!("{}: the importer panicked", name(e))),
            Ok(Ok(_)) => failures.push(format!("{}: imported, expected an error", name(e))),
            Ok(Err(msg)) if !msg.to_lowercase().contains(&want) => failures.push(format!(
                "{}: error `{msg}` does not mention `{want}`",
                name(e)
            )),
            Ok(Err(_)) => {}
        }
    }
    report(&failures, cases.len());
}

#[test]
fn renamed_values_keep_their_onnx_names() {
    let e = entries(|e| name(e) == "op_odd_names")
        .pop()
        .expect("the op_odd_names fixture");
    let m = import(&e).expect("imports");
    for pair in e["inputs"].as_array().into_iter().flatten() {
        let onnx = pair[0].as_str().unwrap_or_default();
        let ir = m.ir_name(onnx, Role::Input).expect("mapped");
        assert!(birkhoff::ir::is_identifier(ir), "{ir}");
        if ir != onnx {
            assert!(m.header().contains(&format!("{onnx:?}")), "{}", m.header());
        }
    }
    assert!(m.graph.to_string().starts_with("graph"));
    // The text form with its header reads back as the same graph.
    let text = format!("{}{}", m.header(), m.graph);
    let back = birkhoff::ir::parse_and_verify(&text).expect("the dump parses");
    assert_eq!(back[0].to_string(), m.graph.to_string());
}

#[test]
fn integer_inputs_are_i32() {
    let e = entries(|e| name(e) == "gpt_tiny").pop().expect("gpt_tiny");
    let m = import(&e).expect("imports");
    let ids = m.graph.input_by_name("ids").expect("the token ids input");
    assert_eq!(m.graph.ty(ids).dtype, DType::I32);
    let t = npy("gpt_tiny/in0.npy");
    assert!(matches!(t.data(), TensorData::I32(_)));
}
