//! GPU artifacts (`.bkx`): round trips, and every way a file or module can
//! be wrong giving a clear error — never a panic, never a partial file.
//! Also the host-side input check every run does before touching a device.
//! None of this needs a GPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use birkhoff_gpu::{
    ARTIFACT_MAGIC, ARTIFACT_VERSION, BufferInfo, GpuError, GpuModule, Launch, ptx_entries,
};
use birkhoff_ir::{DType, Tensor, TensorType};
use proptest::prelude::*;

/// A fresh scratch directory, removed on drop.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    /// Every file name in the directory.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn buffer(name: &str, dtype: &str, shape: &[usize], role: &str) -> BufferInfo {
    BufferInfo {
        name: name.into(),
        dtype: dtype.into(),
        shape: shape.to_vec(),
        role: role.into(),
        values: Vec::new(),
        offset: 0,
    }
}

/// A small, valid module: x f32[4] and a bf16 constant in, y f32[4] out,
/// a temp in a 16-byte arena, two launches of entries the PTX defines.
fn sample() -> GpuModule {
    let mut c = buffer("c", "bf16", &[2], "const");
    c.values = vec![1.5, f64::NEG_INFINITY];
    let mut t = buffer("t", "f32", &[4], "temp");
    t.offset = 0;
    GpuModule {
        version: ARTIFACT_VERSION,
        name: "sample".into(),
        ptx: ".version 8.0\n.target sm_90\n.address_size 64\n\
              .visible .entry k0_first(\n\t.param .u64 p\n)\n{\n\tret;\n}\n\
              .visible .entry k1_second(\n\t.param .u64 p\n)\n{\n\tret;\n}\n"
            .into(),
        arch: "sm_90".into(),
        buffers: vec![
            buffer("x", "f32", &[4], "input"),
            buffer("y", "f32", &[4], "output"),
            c,
            t,
        ],
        inputs: vec![("x".into(), 0)],
        outputs: vec![("y".into(), 1)],
        arena_bytes: 16,
        launches: vec![
            Launch {
                entry: "k0_first".into(),
                kernel: "k0".into(),
                grid: [1, 1, 1],
                block: [4, 1, 1],
                shared_bytes: 0,
            },
            Launch {
                entry: "k1_second".into(),
                kernel: "k1".into(),
                grid: [2, 1, 1],
                block: [128, 1, 1],
                shared_bytes: 64 << 10,
            },
        ],
    }
}

/// The message of an artifact error, which must name `path`.
fn artifact_error(e: GpuError, path: &Path) -> String {
    match e {
        GpuError::Artifact { path: p, message } => {
            assert_eq!(p, path.display().to_string());
            message
        }
        other => panic!("expected an artifact error, got {other:?}"),
    }
}

fn load_err(bytes: &[u8], name: &str) -> String {
    let dir = Scratch::new();
    let path = dir.path(&format!("{name}.bkx"));
    std::fs::write(&path, bytes).unwrap();
    let e = GpuModule::load(&path).expect_err("must not load");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    artifact_error(e, &path)
}

/// Artifact bytes around an arbitrary payload, with a valid header.
fn wrap(payload: &[u8]) -> Vec<u8> {
    // The checksum is FNV-1a 64, as module.rs documents.
    let sum = payload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut v = ARTIFACT_MAGIC.to_vec();
    v.extend_from_slice(&ARTIFACT_VERSION.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    v.extend_from_slice(&sum.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Bitwise equality (constants may hold NaN).
fn same(a: &GpuModule, b: &GpuModule) -> bool {
    let bits = |m: &GpuModule| -> Vec<Vec<u64>> {
        m.buffers
            .iter()
            .map(|b| b.values.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let strip = |m: &GpuModule| {
        let mut m = m.clone();
        m.buffers.iter_mut().for_each(|b| b.values.clear());
        m
    };
    bits(a) == bits(b) && strip(a) == strip(b)
}

#[test]
fn a_saved_module_loads_back_equal() {
    let dir = Scratch::new();
    let path = dir.path("sample.bkx");
    let m = sample();
    m.save(&path).unwrap();
    let back = GpuModule::load(&path).unwrap();
    assert!(same(&m, &back), "{m:?}\n{back:?}");
    // Nothing but the artifact is left behind.
    assert_eq!(dir.files(), vec!["sample.bkx"]);
    // Saving again replaces the file.
    let mut m2 = m;
    m2.name = "second".into();
    m2.save(&path).unwrap();
    assert_eq!(GpuModule::load(&path).unwrap().name, "second");
    assert_eq!(dir.files(), vec!["sample.bkx"]);
}

#[test]
fn constants_keep_every_bit() {
    let mut m = sample();
    m.buffers[2].dtype = "f64".into();
    m.buffers[2].values = vec![-0.0, f64::MIN_POSITIVE / 4.0];
    let back = GpuModule::from_artifact_bytes(&m.to_artifact_bytes().unwrap()).unwrap();
    assert!(same(&m, &back));
    assert!(back.buffers[2].values[0].is_sign_negative());
}

#[cfg(feature = "gpu")]
#[test]
fn a_compiled_module_round_trips() {
    use birkhoff_dsl::zoo::{ModelArgs, build_model};
    use birkhoff_lower::{LowerOptions, PreMixProjection, lower};
    let model = build_model("mhc-pre", &ModelArgs::default()).unwrap();
    let graph = birkhoff_opt::optimize(&model.graph, |_| false)
        .unwrap()
        .graph;
    let opts = LowerOptions {
        projection: PreMixProjection::InKernel,
        ..LowerOptions::default()
    };
    let program = lower(&graph, &opts).unwrap();
    let m = birkhoff_gpu::compile_module(&program, &birkhoff_gpu::CodegenOptions::default())
        .expect("GPU code generation");
    m.validate().unwrap();
    let dir = Scratch::new();
    let path = dir.path("mhc_pre.bkx");
    m.save(&path).unwrap();
    assert!(same(&m, &GpuModule::load(&path).unwrap()));
}

#[test]
fn a_missing_file_is_named() {
    let dir = Scratch::new();
    let path = dir.path("nope.bkx");
    let msg = artifact_error(GpuModule::load(&path).unwrap_err(), &path);
    assert!(msg.contains("cannot read"), "{msg}");
}

#[test]
fn other_files_are_not_artifacts() {
    assert!(load_err(b"", "empty").contains("empty file"));
    assert!(load_err(b"\x7fELF\x02\x01\x01\0\0\0\0\0", "elf").contains("bad magic"));
    assert!(load_err(b"{\"version\": 1}", "json").contains("bad magic"));
}

#[test]
fn every_truncation_is_reported() {
    let bytes = sample().to_artifact_bytes().unwrap();
    for cut in 1..bytes.len() {
        let msg = GpuModule::from_artifact_bytes(&bytes[..cut]).unwrap_err();
        assert!(msg.contains("truncated"), "cut at {cut}: {msg}");
    }
    // Through the file system too, with the path.
    assert!(load_err(&bytes[..bytes.len() / 2], "truncated").contains("truncated"));
}

#[test]
fn another_version_is_rejected_naming_both() {
    let mut bytes = sample().to_artifact_bytes().unwrap();
    bytes[8..12].copy_from_slice(&(ARTIFACT_VERSION + 1).to_le_bytes());
    let msg = load_err(&bytes, "version");
    assert!(
        msg.contains(&format!("version {}", ARTIFACT_VERSION + 1))
            && msg.contains(&format!("version {ARTIFACT_VERSION}")),
        "{msg}"
    );
}

#[test]
fn corruption_is_detected() {
    let bytes = sample().to_artifact_bytes().unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x20;
    assert!(load_err(&flipped, "flip").contains("checksum"));
    let mut longer = bytes;
    longer.extend_from_slice(b"junk");
    assert!(load_err(&longer, "trailing").contains("unexpected bytes"));
}

#[test]
fn corrupt_json_is_reported() {
    let msg = load_err(&wrap(b"{\"version\": 1, \"name\": "), "json-eof");
    assert!(msg.contains("corrupt module description"), "{msg}");
    let msg = load_err(&wrap(b"[1, 2, 3]"), "json-type");
    assert!(msg.contains("corrupt module description"), "{msg}");
    // Version fields that disagree.
    let mut m = sample();
    m.version = ARTIFACT_VERSION + 7;
    let json = serde_json::to_vec(&m).unwrap();
    let msg = load_err(&wrap(&json), "json-version");
    assert!(msg.contains("module says"), "{msg}");
}

/// Each inconsistency, the substring its message must contain.
fn inconsistent_modules() -> Vec<(&'static str, GpuModule, &'static str)> {
    let mut cases = Vec::new();
    let mut m = sample();
    m.inputs[0].1 = 9;
    cases.push(("input out of range", m, "there are 4 buffers"));
    let mut m = sample();
    m.outputs[0].1 = 0;
    cases.push(("output of the wrong role", m, "whose role is 'input'"));
    let mut m = sample();
    m.launches[0].grid = [0, 1, 1];
    cases.push(("zero grid", m, "empty launch"));
    let mut m = sample();
    m.launches[1].block = [128, 0, 1];
    cases.push(("zero block", m, "empty launch"));
    let mut m = sample();
    m.launches[1].block = [2048, 1, 1];
    cases.push(("oversized block", m, "exceeds CUDA's limits"));
    let mut m = sample();
    m.launches[0].entry = "k9_missing".into();
    cases.push((
        "entry not in the PTX",
        m,
        "no entry 'k9_missing' in the PTX",
    ));
    let mut m = sample();
    m.arena_bytes = 8;
    cases.push(("arena too small", m, "past the arena's 8 bytes"));
    // Names become file names: never a path.
    let mut m = sample();
    m.inputs[0].0 = "../../x".into();
    cases.push((
        "input name with a path",
        m,
        "input name \"../../x\" is not an identifier",
    ));
    let mut m = sample();
    m.outputs[0].0 = "/etc/y".into();
    cases.push((
        "absolute output name",
        m,
        "output name \"/etc/y\" is not an identifier",
    ));
    let mut m = sample();
    m.outputs[0].0 = "a\0b".into();
    cases.push(("output name with a NUL", m, "is not an identifier"));
    let mut m = sample();
    m.inputs[0].0 = String::new();
    cases.push((
        "empty input name",
        m,
        "input name \"\" is not an identifier",
    ));
    let mut m = sample();
    m.buffers[0].shape = vec![0, 4];
    cases.push(("zero dimension", m, "no zero dimensions"));
    let mut m = sample();
    m.buffers[0].shape = vec![1; 100];
    cases.push(("rank 100", m, "rank at most"));
    let mut m = sample();
    m.launches[0].shared_bytes = u32::MAX;
    cases.push(("4 GiB of shared memory", m, "bytes of shared memory"));
    let mut m = sample();
    m.buffers[3].offset = usize::MAX - 2;
    cases.push(("offset overflow", m, "past the arena"));
    let mut m = sample();
    m.buffers[3].offset = 2;
    m.arena_bytes = 32;
    cases.push(("misaligned temp", m, "not aligned"));
    let mut m = sample();
    m.buffers[2].values.push(0.0);
    cases.push(("constant count", m, "3 values for 2 elements"));
    let mut m = sample();
    m.buffers[0].dtype = "f16".into();
    cases.push(("unknown dtype", m, "unknown dtype 'f16'"));
    let mut m = sample();
    m.buffers[1].role = "scratch".into();
    cases.push(("unknown role", m, "unknown role 'scratch'"));
    let mut m = sample();
    m.ptx.push('\0');
    cases.push(("NUL in the PTX", m, "NUL"));
    let mut m = sample();
    m.inputs.push(("x".into(), 0));
    cases.push(("input listed twice", m, "listed twice"));
    cases
}

#[test]
fn inconsistent_modules_are_rejected_on_load_and_save() {
    let dir = Scratch::new();
    for (what, m, expect) in inconsistent_modules() {
        let msg = load_err(&m.to_artifact_bytes().unwrap(), "inconsistent-load");
        assert!(
            msg.contains("inconsistent module") && msg.contains(expect),
            "{what}: {msg}"
        );
        let path = dir.path("bad.bkx");
        let msg = artifact_error(m.save(&path).unwrap_err(), &path);
        assert!(msg.contains(expect), "{what}: {msg}");
        assert!(
            dir.files().is_empty(),
            "{what}: save left {:?}",
            dir.files()
        );
    }
}

#[test]
fn validation_reports_every_problem() {
    let mut m = sample();
    m.inputs[0].1 = 9;
    m.launches[0].grid = [0, 1, 1];
    let msg = m.validate().unwrap_err().to_string();
    assert!(
        msg.contains("there are 4 buffers") && msg.contains("empty launch"),
        "{msg}"
    );
}

#[test]
fn a_failed_save_leaves_nothing() {
    let dir = Scratch::new();
    let path = dir.path("no-such-dir/m.bkx");
    let msg = artifact_error(sample().save(&path).unwrap_err(), &path);
    assert!(msg.contains("cannot write"), "{msg}");
    assert!(dir.files().is_empty());
    // A directory in the way: the rename fails, the temporary is removed.
    std::fs::create_dir(dir.path("taken.bkx")).unwrap();
    std::fs::write(dir.path("taken.bkx/keep"), b"x").unwrap();
    let path = dir.path("taken.bkx");
    assert!(sample().save(&path).is_err());
    assert_eq!(dir.files(), vec!["taken.bkx"]);
}

fn tensor(dtype: DType, shape: &[usize]) -> Tensor {
    let ty = TensorType::new(dtype, shape.to_vec());
    Tensor::from_f64(ty.clone(), &vec![1.0; ty.num_elements()]).unwrap()
}

#[test]
fn inputs_are_checked_by_name_dtype_and_shape() {
    let m = sample();
    let ok = BTreeMap::from([("x".to_string(), tensor(DType::F32, &[4]))]);
    m.check_inputs(&ok).unwrap();
    let input_error = |inputs: BTreeMap<String, Tensor>| match m.check_inputs(&inputs) {
        Err(GpuError::Input { name, message }) => (name, message),
        other => panic!("expected an input error, got {other:?}"),
    };
    let (name, msg) = input_error(BTreeMap::new());
    assert_eq!(name, "x");
    assert!(msg.contains("missing") && msg.contains("f32[4]"), "{msg}");
    let (name, msg) = input_error(BTreeMap::from([(
        "x".to_string(),
        tensor(DType::Bf16, &[4]),
    )]));
    assert_eq!(name, "x");
    assert!(msg.contains("expected f32[4], got bf16[4]"), "{msg}");
    let (_, msg) = input_error(BTreeMap::from([(
        "x".to_string(),
        tensor(DType::F32, &[2, 2]),
    )]));
    assert!(msg.contains("expected f32[4], got f32[2,2]"), "{msg}");
    let mut extra = ok;
    extra.insert("z".into(), tensor(DType::F32, &[1]));
    let (name, msg) = input_error(extra);
    assert_eq!(name, "z");
    assert!(msg.contains("unknown input") && msg.contains("x"), "{msg}");
}

#[test]
fn input_and_output_types_come_from_the_buffer_plan() {
    let m = sample();
    assert_eq!(
        m.input_types().unwrap(),
        vec![("x".to_string(), TensorType::new(DType::F32, [4]))]
    );
    assert_eq!(
        m.output_types().unwrap(),
        vec![("y".to_string(), TensorType::new(DType::F32, [4]))]
    );
}

/// A random valid module: buffers of every dtype and role (temps packed
/// into the arena at aligned offsets, constants of arbitrary bit
/// patterns), launches of the entries its PTX declares.
fn module() -> impl Strategy<Value = GpuModule> {
    let dtype = proptest::sample::select(vec!["f32", "bf16", "f64", "i32", "bool"]);
    let role = proptest::sample::select(vec!["input", "output", "const", "temp"]);
    let buf = (dtype, role, proptest::collection::vec(1usize..4, 0..3));
    (
        proptest::collection::vec(buf, 1..6),
        proptest::collection::vec(any::<u64>(), 64),
        1usize..4,
        "[a-z_]{1,12}",
    )
        .prop_map(|(bufs, bits, entries, name)| {
            let mut arena = 0usize;
            let mut m = GpuModule {
                version: ARTIFACT_VERSION,
                name,
                ptx: String::new(),
                arch: "sm_90".into(),
                buffers: Vec::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                arena_bytes: 0,
                launches: Vec::new(),
            };
            for (i, (dtype, role, shape)) in bufs.into_iter().enumerate() {
                let mut b = buffer(&format!("b{i}"), dtype, &shape, role);
                let bytes = b.size_bytes().unwrap();
                match role {
                    "input" => m.inputs.push((b.name.clone(), i)),
                    "output" => m.outputs.push((b.name.clone(), i)),
                    "const" => {
                        let n: usize = shape.iter().product();
                        b.values = bits[..n].iter().map(|&x| f64::from_bits(x)).collect();
                    }
                    _ => {
                        b.offset = arena.next_multiple_of(8);
                        arena = b.offset + bytes;
                    }
                }
                m.buffers.push(b);
            }
            m.arena_bytes = arena;
            for e in 0..entries {
                m.ptx.push_str(&format!(
                    ".visible .entry k{e}_x(\n.param .u64 p\n)\n{{\nret;\n}}\n"
                ));
                m.launches.push(Launch {
                    entry: format!("k{e}_x"),
                    kernel: format!("k{e}"),
                    grid: [e as u32 + 1, 1, 1],
                    block: [32, 2, 1],
                    shared_bytes: 0,
                });
            }
            m
        })
}

/// 64 cases, or `PROPTEST_CASES` when set (the CI's bounded fuzz run).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_modules_round_trip(m in module()) {
        m.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = GpuModule::from_artifact_bytes(&m.to_artifact_bytes().unwrap())
            .map_err(TestCaseError::fail)?;
        prop_assert!(same(&m, &back));
        prop_assert_eq!(ptx_entries(&back.ptx).len(), back.launches.len());
    }

    #[test]
    fn no_single_byte_change_loads(m in module(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let mut bytes = m.to_artifact_bytes().unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        prop_assert!(GpuModule::from_artifact_bytes(&bytes).is_err(), "byte {} ^ {}", i, x);
    }
}
