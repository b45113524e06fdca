//! The `birkhoff` command end to end: every command's happy path, the `run`
//! round trip through `.npy`, and every bad-input path giving a non-zero
//! exit, a one-line error and no panic.

mod common;

use common::{Scratch, birkhoff, fails, files_in, ok, stderr, stdout};

use birkhoff::ir::{DType, Tensor, TensorData, TensorType};
use birkhoff::npy::{read_npy, write_npy};

#[test]
fn models_lists_every_model_with_flags() {
    let out = ok(&["models"]);
    for m in [
        "sinkhorn",
        "mhc-pre",
        "hc-pre",
        "mhc-post",
        "mhc-sublayer",
        "mhc-block",
        "hc-block",
        "residual-block",
    ] {
        assert!(out.contains(&format!("{m}\n")), "{m} missing:\n{out}");
    }
    assert!(
        out.contains("--iters") && out.contains("default 20"),
        "{out}"
    );
}

#[test]
fn dump_text_is_checkable_and_dot_is_graphviz() {
    let s = Scratch::new("dump");
    let text = ok(&[
        "dump",
        "mhc-pre",
        "--tokens",
        "3",
        "--streams",
        "2",
        "--hidden",
        "4",
    ]);
    assert!(
        text.starts_with("graph @mhc_pre(%residual: f32[3,2,4], param %fn: f32[8,8]"),
        "{text}"
    );
    std::fs::write(s.path("pre.bir"), &text).unwrap();
    let checked = ok(&["check", &s.s("pre.bir")]);
    assert!(checked.contains("ok: graph @mhc_pre"), "{checked}");
    // dump of a file reproduces it exactly.
    assert_eq!(ok(&["dump", &s.s("pre.bir")]), text);
    let dot = ok(&["dump", "sinkhorn", "--iters", "2", "--format", "dot"]);
    assert!(
        dot.starts_with("digraph \"sinkhorn\" {") && dot.trim_end().ends_with('}'),
        "{dot}"
    );
    ok(&["dump", "sinkhorn", "-o", &s.s("s.bir")]);
    assert!(
        std::fs::read_to_string(s.path("s.bir"))
            .unwrap()
            .starts_with("graph @sinkhorn")
    );
}

#[test]
fn dumps_can_be_pictures_with_attributes() {
    let s = Scratch::new("dot-dumps");
    let dir = s.s("dumps");
    ok(&[
        "compile",
        "mhc-sublayer",
        "--tokens",
        "4",
        "--hidden",
        "8",
        "--dump-after",
        "all",
        "--dump-format",
        "dot",
        "--dump-dir",
        &dir,
    ]);
    let dumps = files_in(&s.path("dumps"));
    assert_eq!(dumps.len(), 6, "{dumps:?}");
    assert!(dumps.iter().all(|d| d.ends_with(".dot")), "{dumps:?}");
    let fused = std::fs::read_to_string(s.path("dumps/05-fuse-mhc.dot")).unwrap();
    assert!(fused.starts_with("digraph \"mhc_sublayer\" {"), "{fused}");
    // The fused op's label carries its attributes, floats as written.
    assert!(
        fused.contains("mhc_pre norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, variant=tilekernels, iters=20, eps=1e-6"),
        "{fused}"
    );
    assert!(fused.contains("get index=1"), "{fused}");
}

#[test]
fn run_round_trips_through_npy() {
    let s = Scratch::new("run");
    // Random inputs, written out, then fed back in from files.
    let out = ok(&[
        "run",
        "mhc-post",
        "--tokens",
        "4",
        "--streams",
        "2",
        "--hidden",
        "3",
        "--seed",
        "5",
        "--outputs",
        &s.s("a"),
    ]);
    assert!(out.contains("residual_out"), "{out}");
    let first = read_npy(&s.path("a/residual_out.npy")).unwrap();
    assert_eq!(first.ty(), &TensorType::new(DType::F32, [4, 2, 3]));

    // Hand-made inputs: post = 0 and comb = identity give residual_out = residual.
    std::fs::create_dir_all(s.path("in")).unwrap();
    let f32t = |shape: &[usize], v: Vec<f32>| Tensor::new(shape, TensorData::F32(v)).unwrap();
    let residual: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let eye: Vec<f32> = (0..4).flat_map(|_| [1.0, 0.0, 0.0, 1.0]).collect();
    write_npy(
        &s.path("in/residual.npy"),
        &f32t(&[4, 2, 3], residual.clone()),
    )
    .unwrap();
    write_npy(
        &s.path("in/layer_output.npy"),
        &f32t(&[4, 3], vec![7.0; 12]),
    )
    .unwrap();
    write_npy(&s.path("in/post_mix.npy"), &f32t(&[4, 2], vec![0.0; 8])).unwrap();
    write_npy(&s.path("in/comb_mix.npy"), &f32t(&[4, 2, 2], eye)).unwrap();
    ok(&[
        "run",
        "mhc-post",
        "--tokens",
        "4",
        "--streams",
        "2",
        "--hidden",
        "3",
        "--inputs",
        &s.s("in"),
        "--outputs",
        &s.s("b"),
    ]);
    let got = read_npy(&s.path("b/residual_out.npy")).unwrap();
    assert_eq!(got.as_f32().unwrap(), residual.as_slice());
    assert_eq!(
        files_in(&s.path("b")),
        vec!["residual_out.npy"],
        "no temporary files left behind"
    );

    // The same seed gives the same outputs; an IR file runs like the model.
    ok(&[
        "run",
        "mhc-post",
        "--tokens",
        "4",
        "--streams",
        "2",
        "--hidden",
        "3",
        "--seed",
        "5",
        "--outputs",
        &s.s("c"),
    ]);
    assert_eq!(read_npy(&s.path("c/residual_out.npy")).unwrap(), first);
    let text = ok(&[
        "dump",
        "mhc-post",
        "--tokens",
        "4",
        "--streams",
        "2",
        "--hidden",
        "3",
    ]);
    std::fs::write(s.path("post.bir"), text).unwrap();
    ok(&[
        "run",
        &s.s("post.bir"),
        "--inputs",
        &s.s("in"),
        "--outputs",
        &s.s("d"),
    ]);
    assert_eq!(read_npy(&s.path("d/residual_out.npy")).unwrap(), got);
}

#[test]
fn demo_runs() {
    let out = ok(&["demo"]);
    assert!(
        out.contains("@mhc_block") && out.contains("comb_mix"),
        "{out}"
    );
}

#[test]
fn check_reports_line_and_column() {
    let s = Scratch::new("check");
    std::fs::write(
        s.path("syntax.bir"),
        "graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %1 = frobnicate %x : f32[2]\n  return %1\n}\n",
    )
    .unwrap();
    let e = fails(&["check", &s.s("syntax.bir")]);
    assert!(e.contains("syntax.bir:2:8: unknown op 'frobnicate'"), "{e}");
    std::fs::write(
        s.path("types.bir"),
        "graph @g(%x: f32[2]) -> (y: f32[3]) {\n  %1 = exp %x : f32[3]\n  return %1\n}\n",
    )
    .unwrap();
    let e = fails(&["check", &s.s("types.bir")]);
    assert!(
        e.contains("types.bir:2:3:")
            && e.contains("declared type f32[3] but the op produces f32[2]"),
        "{e}"
    );
}

#[test]
fn bad_inputs_fail_cleanly() {
    let s = Scratch::new("bad");
    let dims = ["--tokens", "2", "--streams", "2", "--hidden", "3"];
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "mhc-post"];
        a.extend_from_slice(&dims);
        a.extend_from_slice(extra);
        fails(&a)
    };
    std::fs::create_dir_all(s.path("in")).unwrap();

    // Unknown model, flag for another model, bad flag value.
    assert!(fails(&["run", "nope", "--seed", "1"]).contains("unknown model 'nope'"));
    assert!(fails(&["dump", "sinkhorn", "--hidden", "8"]).contains("does not take --hidden"));
    assert!(fails(&["dump", "mhc-pre", "--iters", "0"]).contains("--iters"));
    assert!(
        fails(&[
            "dump",
            "mhc-pre",
            "--tokens",
            "4000000000",
            "--hidden",
            "4000000000"
        ])
        .contains("over the limit")
    );
    // No inputs at all; input directory missing; input file missing.
    assert!(run(&[]).contains("--inputs DIR"));
    assert!(run(&["--inputs", &s.s("missing")]).contains("does not exist"));
    assert!(run(&["--inputs", &s.s("in")]).contains("missing input file"));
    // Wrong dtype and wrong shape.
    let zeros = |shape: &[usize]| {
        Tensor::new(shape, TensorData::F64(vec![0.0; shape.iter().product()])).unwrap()
    };
    write_npy(&s.path("in/residual.npy"), &zeros(&[2, 2, 3])).unwrap();
    assert!(run(&["--inputs", &s.s("in"), "--seed", "1"]).contains("must be f32[2,2,3], but"));
    let wrong = Tensor::new([2, 3, 2], TensorData::F32(vec![0.0; 12])).unwrap();
    write_npy(&s.path("in/residual.npy"), &wrong).unwrap();
    assert!(run(&["--inputs", &s.s("in"), "--seed", "1"]).contains("holds f32[2,3,2]"));
    // Corrupt and truncated files.
    std::fs::write(s.path("in/residual.npy"), b"not an npy file").unwrap();
    assert!(run(&["--inputs", &s.s("in"), "--seed", "1"]).contains("residual.npy"));
    let good = Tensor::new([2, 2, 3], TensorData::F32(vec![1.0; 12])).unwrap();
    write_npy(&s.path("in/residual.npy"), &good).unwrap();
    let bytes = std::fs::read(s.path("in/residual.npy")).unwrap();
    std::fs::write(s.path("in/residual.npy"), &bytes[..bytes.len() - 5]).unwrap();
    assert!(run(&["--inputs", &s.s("in"), "--seed", "1"]).contains("residual.npy"));
    // NaN input, unless allowed.
    let nan = Tensor::new([2, 2, 3], TensorData::F32([f32::NAN].repeat(12))).unwrap();
    write_npy(&s.path("in/residual.npy"), &nan).unwrap();
    assert!(run(&["--inputs", &s.s("in"), "--seed", "1"]).contains("--allow-nonfinite"));
    let dir = s.s("in");
    let mut a = vec!["run", "mhc-post"];
    a.extend_from_slice(&dims);
    a.extend_from_slice(&["--inputs", &dir, "--seed", "1", "--allow-nonfinite"]);
    assert!(stdout(&birkhoff(&a)).contains("residual_out"));
    // An output directory that is a file: an error, and nothing written.
    std::fs::write(s.path("taken"), b"x").unwrap();
    assert!(run(&["--seed", "1", "--outputs", &s.s("taken")]).contains("taken"));
    assert_eq!(std::fs::read(s.path("taken")).unwrap(), b"x");
}

#[test]
fn bad_ir_files_fail_cleanly() {
    let s = Scratch::new("ir");
    assert!(fails(&["check", &s.s("absent.bir")]).contains("absent.bir"));
    assert!(fails(&["run", &s.s("absent.bir"), "--seed", "1"]).contains("absent.bir"));
    std::fs::write(s.path("bin.bir"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    assert!(fails(&["check", &s.s("bin.bir")]).contains("bin.bir"));
    std::fs::write(s.path("empty.bir"), "").unwrap();
    assert!(fails(&["run", &s.s("empty.bir"), "--seed", "1"]).contains("holds no graph"));
    let one = "graph @a(%x: f32[1]) -> (y: f32[1]) {\n  return %x\n}\n";
    std::fs::write(
        s.path("two.bir"),
        format!("{one}{}", one.replace("@a", "@b")),
    )
    .unwrap();
    assert!(fails(&["run", &s.s("two.bir"), "--seed", "1"]).contains("holds 2 graphs"));
    assert!(ok(&["check", &s.s("two.bir")]).contains("@b"));
    std::fs::write(s.path("one.bir"), one).unwrap();
    assert!(
        fails(&["run", &s.s("one.bir"), "--seed", "1", "--tokens", "3"])
            .contains("does not apply to an IR file")
    );
    std::fs::write(s.path("cut.bir"), &one[..30]).unwrap();
    assert!(fails(&["check", &s.s("cut.bir")]).contains("cut.bir:1:"));
}

#[test]
fn compile_fuses_and_dumps_every_pass() {
    let s = Scratch::new("compile");
    let dims = [
        "--tokens",
        "4",
        "--streams",
        "2",
        "--hidden",
        "8",
        "--heads",
        "2",
        "--ffn",
        "8",
    ];
    let mut args = vec!["compile", "mhc-block"];
    args.extend_from_slice(&dims);
    let dir = s.s("dumps");
    let out = s.s("fused.bir");
    args.extend_from_slice(&[
        "--dump-after",
        "all",
        "--dump-dir",
        &dir,
        "-o",
        &out,
        "--fusion-report",
    ]);
    let report = ok(&args);
    assert!(
        report.contains("mhc_pre    x2") && report.contains("mhc_post   x2"),
        "{report}"
    );
    assert!(report.contains("saturated"), "{report}");
    let dumps = files_in(&s.path("dumps"));
    assert_eq!(
        dumps,
        [
            "00-input.bir",
            "01-canonicalize.bir",
            "02-simplify.bir",
            "03-recognize.bir",
            "04-sinkhorn.bir",
            "05-fuse-mhc.bir"
        ]
    );
    // Every dump and the result are valid IR; the result runs like the source.
    for d in &dumps {
        ok(&["check", &s.s(&format!("dumps/{d}"))]);
    }
    let fused = std::fs::read_to_string(s.path("fused.bir")).unwrap();
    assert_eq!(fused.matches("= mhc_pre ").count(), 2, "{fused}");
    assert!(
        !fused.contains("row_norm") && !fused.contains(" exp "),
        "{fused}"
    );
    // The same inputs through the unfused and the fused graph. (A .bir file
    // carries no initialization hints, so compare through the model.)
    let (a, b) = (s.s("a"), s.s("b"));
    for (dir, extra) in [(&a, None), (&b, Some("--optimize"))] {
        let mut run = vec!["run", "mhc-block"];
        run.extend_from_slice(&dims);
        run.extend_from_slice(&["--seed", "3", "--outputs", dir]);
        run.extend(extra);
        ok(&run);
    }
    ok(&["run", &out, "--seed", "3"]);
    let (x, y) = (
        read_npy(&s.path("a/residual_out.npy")).unwrap(),
        read_npy(&s.path("b/residual_out.npy")).unwrap(),
    );
    let worst = x
        .to_f64_vec()
        .iter()
        .zip(y.to_f64_vec())
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    assert!(worst < 1e-5, "fused and unfused outputs differ by {worst}");
}

#[test]
fn compile_json_report_and_bad_pass() {
    let json = ok(&[
        "compile",
        "mhc-pre",
        "--tokens",
        "2",
        "--fusion-report",
        "--format",
        "json",
    ]);
    assert!(
        json.trim_start().starts_with('{') && json.contains("\"mhc_pre\": 1"),
        "{json}"
    );
    assert!(json.contains("\"stop_reason\": \"saturated\""), "{json}");
    assert!(fails(&["compile", "mhc-pre", "--dump-after", "nope"]).contains("unknown pass 'nope'"));
}

#[test]
fn run_optimize_and_verify() {
    let out = ok(&[
        "run",
        "mhc-sublayer",
        "--tokens",
        "3",
        "--hidden",
        "8",
        "--seed",
        "1",
        "--optimize",
    ]);
    assert!(out.contains("1 mhc_post, 1 mhc_pre"), "{out}");
    let v = ok(&[
        "compare",
        "mhc-pre",
        "--tokens",
        "3",
        "--hidden",
        "12",
        "--sinkhorn",
        "paper",
        "--iters",
        "5",
        "--cases",
        "3",
        "--seed",
        "9",
    ]);
    assert!(
        v.contains("layer_input") && v.contains("comb_mix") && v.contains("ok"),
        "{v}"
    );
    assert!(v.contains("worst seed"), "{v}");
    assert!(fails(&["compare", "mhc-pre", "--cases", "0"]).contains("--cases"));
}

/// `verify` (numeric comparison) was renamed `compare`, since `check`
/// verifies IR; the old name still works for one release and says so,
/// and `--backend` still means `--target`.
#[test]
fn verify_is_an_alias_of_compare_with_a_note() {
    let args = ["mhc-pre", "--tokens", "2", "--hidden", "4", "--cases", "1"];
    let old = birkhoff(&[&["verify"][..], &args, &["--backend", "interp"]].concat());
    assert!(old.status.success(), "{}", stderr(&old));
    assert!(
        stderr(&old).contains("`birkhoff verify` is now `birkhoff compare`"),
        "{}",
        stderr(&old)
    );
    let new = ok(&[&["compare"][..], &args, &["--target", "interp"]].concat());
    assert_eq!(stdout(&old), new);
    assert!(!new.contains("note:"));
}

/// A reader that goes away after one line (`birkhoff dump … | head -1`)
/// ends the program quietly with success, as Unix tools do; a full disk is
/// one error line and a failure.
#[test]
fn a_closed_or_full_stdout_is_no_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_birkhoff"))
        .args(["dump", "mhc-block", "--layers", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The pipe's read end is closed here, with most of the graph unwritten.
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with("graph @mhc_block"), "{first}");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    if std::path::Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_birkhoff"))
            .args(["models"])
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: cannot write to standard output: No space left on device"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// One output that cannot be written (a directory has its name) fails the
/// run and leaves no other output written: all appear or none do.
#[test]
fn outputs_appear_all_together_or_not_at_all() {
    let s = Scratch::new("outputs-all-or-none");
    std::fs::create_dir_all(s.path("out/post_mix.npy")).unwrap();
    let args = [
        "run",
        "mhc-pre",
        "--tokens",
        "2",
        "--streams",
        "2",
        "--hidden",
        "4",
        "--seed",
        "1",
    ];
    let out_dir = s.s("out");
    let mut failing = args.to_vec();
    failing.extend_from_slice(&["--outputs", &out_dir]);
    let err = fails(&failing);
    assert!(err.contains("post_mix.npy"), "{err}");
    assert_eq!(files_in(&s.path("out")), ["post_mix.npy"]);
    // With the obstacle gone, all three appear.
    std::fs::remove_dir(s.path("out/post_mix.npy")).unwrap();
    ok(&failing);
    assert_eq!(
        files_in(&s.path("out")),
        ["comb_mix.npy", "layer_input.npy", "post_mix.npy"]
    );
}

#[test]
fn inputs_that_name_a_file_say_so() {
    let s = Scratch::new("inputs-file");
    std::fs::write(s.path("x.npy"), b"not a directory").unwrap();
    let err = fails(&["run", "sinkhorn", "--inputs", &s.s("x.npy")]);
    assert!(err.contains("is a file, not a directory"), "{err}");
}

/// Flags that do nothing for the chosen target are refused, not ignored.
#[test]
fn flags_without_effect_on_the_target_are_refused() {
    let err = fails(&[
        "run",
        "sinkhorn",
        "--seed",
        "1",
        "--target",
        "cpu",
        "--precision",
        "f32",
    ]);
    assert!(
        err.contains("--precision sets the interpreter's arithmetic"),
        "{err}"
    );
    let err = fails(&["run", "sinkhorn", "--seed", "1", "--device", "1"]);
    assert!(err.contains("--device picks a GPU"), "{err}");
    ok(&["run", "sinkhorn", "--seed", "1", "--precision", "f32"]);
}

/// Files that never end or never open (a device, a FIFO) are refused
/// before they are read, and a directory search does not follow links
/// back into itself.
#[cfg(unix)]
#[test]
fn endless_files_fifos_and_link_loops_are_refused_or_skipped() {
    let err = fails(&["check", "/dev/zero"]);
    assert!(err.contains("not a regular file"), "{err}");
    let s = Scratch::new("special-files");
    std::fs::create_dir_all(s.path("in")).unwrap();
    let fifo = s.path("in/comb.npy");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|st| st.success())
    {
        let err = fails(&["run", "sinkhorn", "--inputs", &s.s("in")]);
        assert!(err.contains("not a regular file"), "{err}");
    }
    std::fs::create_dir_all(s.path("tests")).unwrap();
    std::fs::write(
        s.path("tests/one.bir"),
        "test print\ngraph @g(%x: f32[2]) -> (y: f32[2]) {\n  return %x\n}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(".", s.path("tests/a")).unwrap();
    std::os::unix::fs::symlink(".", s.path("tests/b")).unwrap();
    let out = ok(&["test", &s.s("tests")]);
    assert!(out.contains("1 passed, 0 failed"), "{out}");
}

/// Sizes that cannot fit in memory are an error with both sizes, before
/// the allocation that would abort the process.
#[test]
fn allocations_that_cannot_succeed_are_errors() {
    let err = fails(&["bench", "sinkhorn", "--runs", "100000000000"]);
    assert!(err.contains("--runs 100000000000 is more than"), "{err}");
    if !std::path::Path::new("/proc/meminfo").exists() {
        return;
    }
    let s = Scratch::new("huge");
    std::fs::write(
        s.path("in.bir"),
        "graph @g(%x: f32[1048576,1048576]) -> (y: f32[1048576,1048576]) {\n  return %x\n}\n",
    )
    .unwrap();
    let err = fails(&["run", &s.s("in.bir"), "--seed", "1"]);
    assert!(
        err.contains("the inputs of graph @g: 8796093022208 bytes"),
        "{err}"
    );
    std::fs::write(
        s.path("out.bir"),
        "graph @g(%x: f32[2]) -> (y: f32[1048576,1048576]) {\n  %1 = iota axis=0 : f32[1048576,1048576]\n  return %1\n}\n",
    )
    .unwrap();
    let err = fails(&["run", &s.s("out.bir"), "--seed", "1", "--target", "cpu"]);
    assert!(err.contains("the compiled program's buffers"), "{err}");
    assert!(err.contains("more than the"), "{err}");
}
