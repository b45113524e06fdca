//! Targeted edge cases of the ONNX importer: external data that points
//! where it must not or does not fit, shapes that overflow or exceed the
//! IR's limits, malformed initializers, old opsets, malformed graphs,
//! `--dim` pins, and ops on extreme operands. Each must import or be
//! refused with a one-line message that names the problem, never a
//! panic, a hang or an allocation sized by the file's numbers.
//!
//! The models are `tests/data/*.onnx` (see `tests/data/README.md`;
//! `tests/data/make.py` writes them) and the importer fixtures under
//! `tests/onnx/fixtures/`. Tests whose failure would be an allocation
//! or a hang run in a child process with its address space capped and a
//! time limit (see [`in_capped_child`]).

mod common;
use common::MEMORY_LIMIT_KIB;
use common::read_varint;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use birkhoff_onnx::{ImportError, ImportOptions, Imported, Role, import_bytes, import_file};

// ---------------------------------------------------------------------
// Helpers.

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/onnx/fixtures")
        .join(name)
        .join("model.onnx")
}

fn no_dims() -> ImportOptions {
    ImportOptions::default()
}

fn dims(pins: &[(&str, usize)]) -> ImportOptions {
    ImportOptions {
        dims: pins.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
    }
}

/// Imports `tests/data/<name>`.
fn import_data(name: &str) -> Result<Imported, ImportError> {
    import_file(&data(name), &no_dims())
}

/// The message of the error `r` must be, checked to be one line, without
/// NUL bytes, and to contain every one of `keywords` (case-insensitively).
#[track_caller]
fn refused(r: Result<Imported, ImportError>, keywords: &[&str]) -> String {
    let e = match r {
        Ok(imp) => panic!(
            "imported, but should have been refused (with {keywords:?}):\n{}",
            imp.graph
        ),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(!msg.trim().is_empty(), "empty message for {e:?}");
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "the message spans several lines: {msg:?}"
    );
    assert!(!msg.contains('\0'), "the message holds a NUL byte: {msg:?}");
    let lower = msg.to_lowercase();
    for k in keywords {
        assert!(
            lower.contains(&k.to_lowercase()),
            "the message does not mention {k:?}: {msg}"
        );
    }
    msg
}

/// A temporary directory holding `tests/data/<model>` as `model.onnx`;
/// `setup` adds what else the case needs.
fn model_dir(model: &str, setup: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("model.onnx");
    std::fs::copy(data(model), &path).expect("copies the model");
    setup(dir.path());
    (dir, path)
}

/// The 16 bytes `weights.bin` holds: f32 1, 2, 3, 4.
fn weights() -> Vec<u8> {
    [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

const CHILD_ENV: &str = "BIRKHOFF_ONNX_EDGE_CHILD";

/// On Unix and outside a child: runs test `name` of this binary in a
/// child process whose address space is capped at 4 GiB and which is
/// killed after `limit`, and asserts that it passed (returns true: the
/// caller is done). In the child, or elsewhere, returns false: the
/// caller runs the test itself.
///
/// A test that would allocate without bound then fails (the child
/// aborts on the failed allocation) instead of exhausting the machine,
/// and one that would hang fails after `limit`.
fn in_capped_child(name: &str, limit: Duration) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() || !cfg!(unix) {
        return false;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = common::capped_test_command(name, CHILD_ENV)
        .stdout(std::fs::File::create(&out_path).expect("a stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("a stderr file"))
        .spawn()
        .expect("starts the child");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits for the child") {
            break Some(status);
        }
        if start.elapsed() > limit {
            // The child is this test's own process (sh exec'd into it).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    match status {
        None => panic!(
            "{name} did not finish within {limit:?} (killed)\n--- stderr\n{}",
            tail(&stderr)
        ),
        Some(s) => assert!(
            s.success() && stdout.contains("1 passed"),
            "{name} failed in a child capped at {} GiB of address space ({s}):\n--- stdout\n{}\n--- stderr\n{}",
            MEMORY_LIMIT_KIB >> 20,
            tail(&stdout),
            tail(&stderr)
        ),
    }
    true
}

// ---------------------------------------------------------------------
// External data.

#[test]
fn external_data_beside_the_model_is_read() {
    let (_dir, path) = model_dir("ext_ok.onnx", |d| {
        std::fs::write(d.join("weights.bin"), weights()).unwrap();
    });
    let imp = import_file(&path, &no_dims()).expect("imports");
    let w = imp
        .ir_name("W", Role::Param)
        .and_then(|ir| imp.weights.get(ir))
        .expect("W is a param with a value");
    assert_eq!(w.shape(), &[2, 2]);
    assert_eq!(w.to_f64_vec(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn external_data_read_from_bytes_without_a_directory_is_refused() {
    let bytes = std::fs::read(data("ext_ok.onnx")).unwrap();
    refused(
        import_bytes(&bytes, "ext_ok.onnx", None, &no_dims()),
        &["`W`", "not read from a file"],
    );
}

#[test]
fn external_data_at_an_absolute_path_is_refused() {
    // /etc/passwd exists on Unix: it must not be read.
    let (_dir, path) = model_dir("ext_absolute.onnx", |_| {});
    refused(
        import_file(&path, &no_dims()),
        &["/etc/passwd", "relative path inside the model's directory"],
    );
}

#[test]
fn external_data_outside_the_directory_is_refused() {
    // ../weights.bin exists (a sibling of the model's directory) and is
    // still refused.
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("weights.bin"), weights()).unwrap();
    let inner = outer.path().join("model");
    std::fs::create_dir(&inner).unwrap();
    for (model, location) in [
        ("ext_dotdot.onnx", "../weights.bin"),
        ("ext_inner_dotdot.onnx", "sub/../weights.bin"),
    ] {
        std::fs::create_dir_all(inner.join("sub")).unwrap();
        std::fs::copy(data(model), inner.join("model.onnx")).unwrap();
        refused(
            import_file(&inner.join("model.onnx"), &no_dims()),
            &[location, "relative path inside"],
        );
    }
}

#[test]
fn external_data_that_is_a_directory_is_refused() {
    let (_dir, path) = model_dir("ext_ok.onnx", |d| {
        std::fs::create_dir(d.join("weights.bin")).unwrap();
    });
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "not a regular file"],
    );
}

#[test]
fn missing_external_data_is_refused() {
    let (_dir, path) = model_dir("ext_ok.onnx", |_| {});
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "weights.bin", "cannot open"],
    );
}

/// A symbolic link can lead anywhere: what it resolves to must be inside
/// the model's directory too (the `onnx` package refuses links outright).
#[cfg(unix)]
#[test]
fn external_data_behind_a_symlink_to_outside_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.bin");
    std::fs::write(&secret, weights()).unwrap();
    let (_dir, path) = model_dir("ext_ok.onnx", |d| {
        std::os::unix::fs::symlink(&secret, d.join("weights.bin")).unwrap();
    });
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "weights.bin", "outside the model's directory"],
    );
}

#[cfg(unix)]
#[test]
fn external_data_under_a_symlinked_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("weights.bin"), weights()).unwrap();
    // The location `sub/weights.bin`, with `sub` a link to a directory
    // outside.
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("m");
    std::fs::create_dir(&model_dir).unwrap();
    let bytes = std::fs::read(data("ext_ok.onnx")).unwrap();
    let patched = replace_location(&bytes, "weights.bin", "sub/weights.bin");
    std::fs::write(model_dir.join("model.onnx"), patched).unwrap();
    std::os::unix::fs::symlink(outside.path(), model_dir.join("sub")).unwrap();
    refused(
        import_file(&model_dir.join("model.onnx"), &no_dims()),
        &["`W`", "sub/weights.bin", "outside the model's directory"],
    );
}

/// `bytes` with the external-data location string `from` replaced by
/// `to`, and every enclosing length prefix fixed: the location is the
/// value of a StringStringEntryProto inside a TensorProto inside the
/// GraphProto, so three lengths change.
fn replace_location(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    // Re-encode recursively: parse each length-delimited field as a
    // message when it parses, replace the exact string where it is one.
    fn varint(mut x: u64, out: &mut Vec<u8>) {
        loop {
            let b = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn rewrite(b: &[u8], from: &[u8], to: &[u8], depth: usize) -> Option<Vec<u8>> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < b.len() {
            let key = read_varint(b, &mut pos)?;
            if key >> 3 == 0 {
                return None;
            }
            varint(key, &mut out);
            match key & 7 {
                0 => varint(read_varint(b, &mut pos)?, &mut out),
                1 => {
                    out.extend(b.get(pos..pos + 8)?);
                    pos += 8;
                }
                5 => {
                    out.extend(b.get(pos..pos + 4)?);
                    pos += 4;
                }
                2 => {
                    let len = usize::try_from(read_varint(b, &mut pos)?).ok()?;
                    let v = b.get(pos..pos.checked_add(len)?)?;
                    pos += len;
                    let new = if v == from {
                        to.to_vec()
                    } else if depth < 8 {
                        rewrite(v, from, to, depth + 1).unwrap_or_else(|| v.to_vec())
                    } else {
                        v.to_vec()
                    };
                    varint(new.len() as u64, &mut out);
                    out.extend(new);
                }
                _ => return None,
            }
        }
        Some(out)
    }
    rewrite(bytes, from.as_bytes(), to.as_bytes(), 0).expect("a protobuf message")
}

#[test]
fn the_location_rewriter_rewrites_only_the_location() {
    let bytes = std::fs::read(data("ext_ok.onnx")).unwrap();
    let same = replace_location(&bytes, "weights.bin", "weights.bin");
    assert_eq!(same, bytes);
    let (_dir, path) = model_dir("ext_ok.onnx", |d| {
        std::fs::create_dir(d.join("w")).unwrap();
        std::fs::write(d.join("w/data.bin"), weights()).unwrap();
        let patched = replace_location(&bytes, "weights.bin", "w/data.bin");
        std::fs::write(d.join("model.onnx"), patched).unwrap();
    });
    let imp = import_file(&path, &no_dims()).expect("imports from w/data.bin");
    assert_eq!(imp.weights.len(), 1);
}

#[test]
fn external_data_whose_length_disagrees_with_the_shape_is_refused() {
    let (_dir, path) = model_dir("ext_length_mismatch.onnx", |d| {
        std::fs::write(d.join("weights.bin"), weights()).unwrap();
    });
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "length 12", "16 bytes"],
    );
}

#[test]
fn external_data_past_the_end_of_its_file_is_refused() {
    let (_dir, path) = model_dir("ext_offset_past_end.onnx", |d| {
        std::fs::write(d.join("weights.bin"), weights()).unwrap();
    });
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "offset 1000", "past the end", "16 bytes"],
    );
    // The fixture: 256 bytes at offset 64 of a 128-byte file.
    refused(
        import_file(&fixture("err_external_offset"), &no_dims()),
        &["past the end"],
    );
}

#[test]
fn external_data_whose_offset_plus_length_overflows_is_refused() {
    let (_dir, path) = model_dir("ext_offset_overflow.onnx", |d| {
        std::fs::write(d.join("weights.bin"), weights()).unwrap();
    });
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "offset 18446744073709551608", "past the end"],
    );
}

#[test]
fn external_data_with_a_negative_offset_is_refused() {
    let (_dir, path) = model_dir("ext_negative_offset.onnx", |d| {
        std::fs::write(d.join("weights.bin"), weights()).unwrap();
    });
    refused(
        import_file(&path, &no_dims()),
        &["`W`", "offset `-4`", "not a byte count"],
    );
}

#[test]
fn external_data_without_a_location_is_refused() {
    refused(
        import_data("ext_no_location.onnx"),
        &["`W`", "without a location"],
    );
}

// ---------------------------------------------------------------------
// Shapes and sizes.

#[test]
fn an_input_whose_dims_overflow_is_refused() {
    // [2^32, 2^32, 2^32]: the product overflows 64 bits.
    refused(
        import_data("input_dims_overflow.onnx"),
        &["input `x`", "too large", "2^40"],
    );
}

#[test]
fn an_input_of_more_than_2_40_elements_is_refused() {
    refused(
        import_data("input_dims_over_2_40.onnx"),
        &["input `x`", "[2097152, 1048576]", "too large"],
    );
    refused(
        import_file(&fixture("err_huge_dim"), &no_dims()),
        &["too large"],
    );
}

#[test]
fn an_input_with_a_negative_dim_is_refused() {
    refused(
        import_data("input_negative_dim.onnx"),
        &["input `x`", "negative dimension -3"],
    );
}

#[test]
fn an_input_with_an_unknown_dim_is_refused() {
    refused(
        import_data("input_unknown_dim.onnx"),
        &["input `x`", "unknown size on axis 0"],
    );
}

/// The IR has no zero-sized dimensions; the importer passes an input of
/// [0, 4] on, and here (the input is the output) the verifier refuses
/// the graph, with a message that calls it an importer bug and spans two
/// lines. (Through a Relu it is "node 0 (Relu): const: shape [0, 4] has
/// a zero dimension", which does not name the input.)
#[test]
fn an_input_with_a_zero_dim_is_refused_clearly() {
    let msg = refused(import_data("input_zero_dim.onnx"), &["input `x`", "zero"]);
    assert!(!msg.contains("importer bug"), "{msg}");
    // [2^32, 2^32, 0]: no elements, though the first two dims overflow.
    refused(
        import_data("input_zero_after_overflow.onnx"),
        &["input `x`", "too large"],
    );
}

#[test]
fn an_initializer_of_more_than_2_40_elements_is_refused() {
    // A float initializer (a param once used) of [2^21, 2^20], no data.
    refused(
        import_data("init_dims_over_2_40.onnx"),
        &["initializer `W`", "[2097152, 1048576]", "too large"],
    );
}

#[test]
fn an_integer_initializer_whose_dims_overflow_is_refused() {
    refused(
        import_data("init_int_dims_overflow.onnx"),
        &["`W`", "too large"],
    );
}

/// Dims like [2^32, 2^32, 0] hold no elements, and the size check (a
/// saturating product) passes them; element counts computed next
/// overflow before they reach the 0: an int64 initializer of those dims
/// panics in `decode`, Expand of an empty constant to [2^62, 4, 1] in
/// the folding of Expand.
#[test]
fn zero_sized_shapes_whose_other_dims_overflow_are_refused() {
    refused(import_data("init_int_zero_after_overflow.onnx"), &["`W`"]);
    refused(import_data("expand_empty_overflow.onnx"), &["Expand"]);
}

/// `declare` multiplies a float initializer's dims as `i64` to decide
/// whether it becomes a param: [2^32, 2^32] overflows (a panic in debug
/// builds, a wrapped count in release).
#[test]
fn a_float_initializer_whose_dims_overflow_is_refused() {
    refused(
        import_data("init_dims_overflow.onnx"),
        &["`W`", "too large"],
    );
}

/// A float initializer with dims [-2, -1] (a product of 2) becomes a
/// param whose shape is the dims cast to `usize`: the Add then reports
/// shapes [18446744073709551614, 18446744073709551615] that do not
/// broadcast, not the negative dims.
#[test]
fn an_initializer_with_negative_dims_is_refused() {
    refused(
        import_data("init_negative_dims.onnx"),
        &["`W`", "negative dimension"],
    );
}

/// Size of that initializer multiplies the huge sizes: an overflow panic.
#[test]
fn size_of_an_initializer_with_negative_dims_is_refused() {
    refused(
        import_data("init_negative_dims_size.onnx"),
        &["`W`", "negative dimension"],
    );
}

#[test]
fn an_initializer_with_short_raw_data_is_refused() {
    refused(
        import_data("init_raw_data_short.onnx"),
        &["`W`", "[2, 3]", "needs 24 bytes of raw data, but holds 20"],
    );
}

#[test]
fn an_initializer_with_too_many_values_is_refused() {
    refused(
        import_data("init_float_data_long.onnx"),
        &["`W`", "needs 6 values, but holds 7"],
    );
}

#[test]
fn a_constant_of_more_than_2_40_elements_is_refused() {
    refused(
        import_data("constant_huge.onnx"),
        &["Constant", "too large"],
    );
}

#[test]
fn constant_of_shape_past_2_40_elements_is_refused() {
    refused(
        import_data("constant_of_shape_huge.onnx"),
        &["ConstantOfShape", "too large"],
    );
}

// ---------------------------------------------------------------------
// The model and its graph.

#[test]
fn opset_12_is_refused() {
    refused(
        import_data("opset_12.onnx"),
        &["opset 12", "13", "version_converter"],
    );
}

#[test]
fn a_model_without_a_graph_is_refused() {
    refused(import_data("no_graph.onnx"), &["no graph"]);
    // No bytes at all decode as an empty ModelProto: no graph either.
    refused(
        import_bytes(&[], "empty.onnx", None, &no_dims()),
        &["empty.onnx", "no graph"],
    );
}

#[test]
fn a_model_without_the_default_opset_is_refused() {
    refused(import_data("no_default_opset.onnx"), &["opset", "ai.onnx"]);
}

#[test]
fn a_graph_output_nothing_computes_is_refused() {
    refused(
        import_data("output_not_computed.onnx"),
        &["graph output `nowhere`", "not computed"],
    );
}

/// A graph without outputs reaches the verifier, whose refusal the
/// importer passes on as "an importer bug" over two lines.
#[test]
fn a_graph_without_outputs_is_refused_clearly() {
    let msg = refused(import_data("no_outputs.onnx"), &["no outputs"]);
    assert!(!msg.contains("importer bug"), "{msg}");
}

#[test]
fn two_nodes_producing_one_value_are_refused() {
    refused(
        import_data("two_producers.onnx"),
        &["`y`", "more than one node", "second"],
    );
}

#[test]
fn a_graph_output_that_is_an_input_imports() {
    let imp = import_data("output_is_input.onnx").expect("imports");
    assert_eq!(imp.graph.outputs().len(), 1);
}

#[test]
fn a_cycle_is_refused() {
    refused(import_file(&fixture("err_cycle"), &no_dims()), &["cycle"]);
}

/// Names come from the file and are printed as they are: a node name
/// with a newline splits the message, an output name with a NUL byte
/// puts one in it.
#[test]
fn messages_quote_names_from_the_file() {
    refused(import_data("newline_node_name.onnx"), &["NoSuchOp"]);
    refused(import_data("nul_output_name.onnx"), &["not computed"]);
}

#[test]
fn a_file_that_is_not_there_or_not_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        import_file(&dir.path().join("missing.onnx"), &no_dims()),
        &["cannot read", "missing.onnx"],
    );
    refused(import_file(dir.path(), &no_dims()), &["cannot read"]);
}

// ---------------------------------------------------------------------
// `--dim` pins.

#[test]
fn pinned_symbolic_dims_import() {
    let imp = import_file(&data("input_symbolic.onnx"), &dims(&[("batch", 3)])).expect("imports");
    let x = imp.graph.inputs()[0];
    assert_eq!(imp.graph.ty(x).shape, vec![3, 4]);

    let imp =
        import_file(&fixture("mlp_dynamic"), &dims(&[("batch", 3), ("seq", 5)])).expect("imports");
    let x = imp.graph.inputs()[0];
    assert_eq!(imp.graph.ty(x).shape, vec![3, 5, 16]);
}

#[test]
fn unpinned_symbolic_dims_name_the_dim_and_the_input() {
    let e = import_file(&data("input_symbolic.onnx"), &no_dims()).unwrap_err();
    assert!(
        matches!(&e, ImportError::UnpinnedDim { name, input } if name == "batch" && input == "x"),
        "{e:?}"
    );
    refused(Err(e), &["input `x`", "`batch`", "--dim batch=SIZE"]);
    // One of two pinned: the other is named.
    refused(
        import_file(&fixture("mlp_dynamic"), &dims(&[("batch", 3)])),
        &["input `x`", "`seq`", "--dim seq=SIZE"],
    );
    // Pins of other names do not help.
    refused(
        import_file(&fixture("block_dynamic"), &dims(&[("t", 7)])),
        &["`T`", "--dim T=SIZE"],
    );
}

#[test]
fn symbolic_dims_pinned_past_2_40_elements_are_refused() {
    if in_capped_child(
        "symbolic_dims_pinned_past_2_40_elements_are_refused",
        Duration::from_secs(60),
    ) {
        return;
    }
    refused(
        import_file(&data("input_symbolic.onnx"), &dims(&[("batch", 1 << 40)])),
        &["input `x`", "too large", "2^40"],
    );
    refused(
        import_file(
            &fixture("mlp_dynamic"),
            &dims(&[("batch", 1 << 20), ("seq", 1 << 20)]),
        ),
        &["input `x`", "too large"],
    );
    refused(
        import_file(&fixture("block_dynamic"), &dims(&[("T", 1 << 40)])),
        &["input `x`", "too large"],
    );
}

/// A pin beyond `i64::MAX` is cast to a negative dim: the message says
/// "negative dimension -1" about a size the user gave as positive.
#[test]
fn a_pin_beyond_i64_is_refused_as_too_large() {
    refused(
        import_file(
            &data("input_symbolic.onnx"),
            &dims(&[("batch", usize::MAX)]),
        ),
        &["input `x`", "too large"],
    );
}

/// Pins that keep every input within the IR's limits but make the
/// model's activations large (block_dynamic: T = 2^20 tokens, so its
/// causal attention is [2, 2^20, 2^20], 2^41 elements): the graph is
/// symbolic, so this imports or is refused, quickly and without
/// building anything of that size.
#[test]
fn large_pins_import_without_allocating_for_them() {
    if in_capped_child(
        "large_pins_import_without_allocating_for_them",
        Duration::from_secs(120),
    ) {
        return;
    }
    for t in [1usize << 12, 1 << 16, 1 << 20] {
        let start = Instant::now();
        let r = import_file(&fixture("block_dynamic"), &dims(&[("T", t)]));
        if let Err(e) = &r {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "T={t} took {:?}",
            start.elapsed()
        );
    }
    let r = import_file(
        &fixture("mlp_dynamic"),
        &dims(&[("batch", 1 << 14), ("seq", 1 << 14)]),
    );
    if let Err(e) = r {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

/// As [`an_input_with_a_zero_dim_is_refused_clearly`], through a pin.
#[test]
fn a_zero_pin_is_refused_clearly() {
    let msg = refused(
        import_file(&data("input_symbolic.onnx"), &dims(&[("batch", 0)])),
        &["input `x`"],
    );
    assert!(!msg.contains("importer bug"), "{msg}");
}

// ---------------------------------------------------------------------
// Ops on extreme operands.

#[test]
fn slice_with_more_starts_than_axes_is_refused() {
    refused(import_data("slice_scalar.onnx"), &["Slice"]);
}

#[test]
fn split_sizes_that_overflow_are_refused() {
    refused(
        import_data("split_sizes_overflow.onnx"),
        &["Split", "split sizes"],
    );
}

/// Split with `num_outputs` 2^40 (opset 18) makes a list of 2^40 sizes
/// before it compares them with the node's two outputs: an 8 TiB
/// allocation (a value past `isize::MAX` bytes panics with "capacity
/// overflow" instead).
#[test]
fn split_into_a_huge_number_of_outputs_is_refused() {
    if in_capped_child(
        "split_into_a_huge_number_of_outputs_is_refused",
        Duration::from_secs(60),
    ) {
        return;
    }
    refused(
        import_data("split_num_outputs_huge.onnx"),
        &["Split", "num_outputs"],
    );
}

#[test]
fn reshape_to_an_overflowing_shape_is_refused() {
    refused(
        import_data("reshape_overflow.onnx"),
        &["Reshape", "cannot reshape"],
    );
}

/// Expand of a constant to [2^20, 2^20] (the IR's limit of 2^40
/// elements): folding it would take 8 TiB; it must stay a broadcast in
/// the graph (or be refused).
#[test]
fn expanding_a_constant_to_a_huge_shape_does_not_allocate_it() {
    if in_capped_child(
        "expanding_a_constant_to_a_huge_shape_does_not_allocate_it",
        Duration::from_secs(60),
    ) {
        return;
    }
    let _ = import_data("expand_constant_huge.onnx");
}

/// Gather of constants folds without a bound on the result's size:
/// indices [4096, 4096] into a [1, 4096] table make 2^36 elements.
#[test]
fn gathering_constants_into_a_huge_result_does_not_allocate_it() {
    if in_capped_child(
        "gathering_constants_into_a_huge_result_does_not_allocate_it",
        Duration::from_secs(60),
    ) {
        return;
    }
    let _ = import_data("gather_constant_huge.onnx");
}

/// Trilu of a [65536, 65536] input: the graph is small whatever the
/// shape; a mask built as a constant would take 32 GiB.
#[test]
fn trilu_of_a_large_input_does_not_build_a_mask_of_its_size() {
    if in_capped_child(
        "trilu_of_a_large_input_does_not_build_a_mask_of_its_size",
        Duration::from_secs(60),
    ) {
        return;
    }
    let _ = import_data("trilu_large.onnx");
}

/// Local functions nest at most 16 deep, but nothing bounds how many
/// nodes inlining makes: ten levels of ten calls is 10^10 nodes from a
/// 2.5 KB file.
#[test]
fn nested_function_calls_do_not_blow_up() {
    if in_capped_child(
        "nested_function_calls_do_not_blow_up",
        Duration::from_secs(60),
    ) {
        return;
    }
    let start = Instant::now();
    let r = import_data("function_blowup.onnx");
    assert!(start.elapsed() < Duration::from_secs(10));
    if let Err(e) = r {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn a_recursive_function_is_refused() {
    refused(
        import_data("function_recursive.onnx"),
        &["`r`", "more than 16 deep"],
    );
}

#[test]
fn the_data_models_are_small() {
    for entry in std::fs::read_dir(data("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len < 10 << 10, "{} is {len} bytes", path.display());
        }
    }
}
