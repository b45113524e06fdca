//! `.npy` interop against files written by NumPy (`tests/data/npy/`, made
//! by `make_fixtures.py` there), against the `npyz` crate as an independent
//! reader, and under random corruption.

use std::path::{Path, PathBuf};

use birkhoff_io::npy::{NpyError, read_npy, read_npy_bytes, write_npy};
use birkhoff_ir::{DType, Tensor, TensorData};
use half::bf16;
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/npy")
        .join(name)
}

fn load(name: &str) -> Tensor {
    read_npy(&fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Elements as bit patterns, so NaN and -0.0 compare exactly.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        TensorData::I32(v) => v.iter().map(|&x| u64::from(x as u32)).collect(),
        TensorData::Bf16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
    }
}

fn f32_tensor(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape, TensorData::F32(v.to_vec())).unwrap()
}

#[test]
fn reads_numpy_little_endian_files() {
    let t = load("f4_2x3.npy");
    let want = f32_tensor(&[2, 3], &[0.0, -1.5, 0.1, 3.0e38, -0.0, f32::INFINITY]);
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(bits(&t), bits(&want));

    let t = load("f8_4.npy");
    assert_eq!(t.dtype(), DType::F64);
    assert_eq!(t.shape(), &[4]);
    let v = t.to_f64_vec();
    assert_eq!(&v[..3], &[0.1, -2.0, 1e300]);
    assert!(v[3].is_nan());

    let t = load("i4_2x2.npy");
    assert_eq!(t.data(), &TensorData::I32(vec![i32::MIN, -1, 0, i32::MAX]));
    assert_eq!(t.shape(), &[2, 2]);

    let t = load("bool_5.npy");
    assert_eq!(
        t.data(),
        &TensorData::Bool(vec![true, false, false, true, true])
    );

    // `<u2` is read as bf16 bit patterns.
    let t = load("bf16_bits_4.npy");
    assert_eq!(t.dtype(), DType::Bf16);
    assert_eq!(
        t.to_f64_vec(),
        vec![1.0, -2.0, f64::INFINITY, 2f64.powi(-133)]
    );

    let t = load("f4_1x2x1x3.npy");
    assert_eq!(t.shape(), &[1, 2, 1, 3]);
    assert_eq!(t.to_f64_vec(), vec![-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
}

#[test]
fn reads_numpy_zero_d_arrays_as_rank_0() {
    let t = load("scalar_f8.npy");
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.data(), &TensorData::F64(vec![3.5]));
    let t = load("scalar_i4.npy");
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.data(), &TensorData::I32(vec![-7]));
}

#[test]
fn reads_numpy_big_endian_files() {
    let t = load("f4_be_2x2.npy");
    assert_eq!(t, f32_tensor(&[2, 2], &[1.0, -2.0, 0.5, 3.25]));
    assert_eq!(
        load("f8_be_2.npy").data(),
        &TensorData::F64(vec![0.1, -3.5])
    );
    assert_eq!(
        load("i4_be_3.npy").data(),
        &TensorData::I32(vec![1, -2, 65536])
    );
    assert_eq!(
        load("bf16_bits_be_2.npy").data(),
        &TensorData::Bf16(vec![bf16::from_f32(1.0), bf16::from_f32(-2.0)])
    );
}

#[test]
fn reads_numpy_fortran_order_as_row_major() {
    let t = load("fortran_f4_2x3.npy");
    assert_eq!(t, f32_tensor(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    // The bytes on disk really are in column order: 0, 3, 1, 4, 2, 5.
    let raw = std::fs::read(fixture("fortran_f4_2x3.npy")).unwrap();
    assert_eq!(&raw[raw.len() - 20..raw.len() - 16], &3.0f32.to_le_bytes());

    let t = load("fortran_i4_2x3x4.npy");
    assert_eq!(t.shape(), &[2, 3, 4]);
    assert_eq!(t.data(), &TensorData::I32((0..24).collect()));

    let t = load("fortran_bool_2x2.npy");
    assert_eq!(t.data(), &TensorData::Bool(vec![true, true, false, true]));
}

#[test]
fn reads_other_format_versions() {
    for name in ["v2_f4_3.npy", "v3_f4_3.npy"] {
        assert_eq!(load(name), f32_tensor(&[3], &[1.0, 2.0, 3.0]), "{name}");
    }
}

#[test]
fn writes_what_numpy_writes() {
    let scratch = tempfile::tempdir().unwrap();
    for name in [
        "f4_2x3.npy",
        "f8_4.npy",
        "i4_2x2.npy",
        "bool_5.npy",
        "bf16_bits_4.npy",
        "f4_1x2x1x3.npy",
        "scalar_f8.npy",
        "scalar_i4.npy",
    ] {
        let numpy = std::fs::read(fixture(name)).unwrap();
        let out = scratch.path().join(name);
        write_npy(&out, &load(name)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), numpy, "{name}");
    }
}

#[test]
fn rejects_numpy_files_of_other_dtypes() {
    for (name, descr) in [
        ("c8.npy", "'<c8'"),
        ("U3.npy", "'<U3'"),
        ("i8.npy", "'<i8'"),
        ("f2.npy", "'<f2'"),
        ("object.npy", "'|O'"),
        ("structured.npy", "[('a', '<i4'), ('b', '<f4')]"),
    ] {
        let e = read_npy(&fixture(name)).unwrap_err();
        match &e {
            NpyError::UnsupportedDtype { path, descr: got } => {
                assert_eq!(got, descr);
                assert_eq!(path, &fixture(name));
            }
            _ => panic!("{name}: {e}"),
        }
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains(descr) && !msg.contains('\n'));
    }
    let e = read_npy(&fixture("empty_0x3.npy")).unwrap_err();
    assert!(
        matches!(e, NpyError::ZeroSizeDimension { ref shape, .. } if shape == &[0, 3]),
        "{e}"
    );
}

/// Checks a file we wrote with `npyz`, a reader independent of ours.
fn npyz_reads<T>(bytes: &[u8], shape: &[u64], want: &[T])
where
    T: npyz::Deserialize + PartialEq + std::fmt::Debug,
{
    let file = npyz::NpyFile::new(bytes).unwrap();
    assert_eq!(file.shape(), shape);
    assert_eq!(file.into_vec::<T>().unwrap(), want);
}

#[test]
fn npyz_reads_what_we_write() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("t.npy");
    let write = |t: &Tensor| {
        write_npy(&path, t).unwrap();
        std::fs::read(&path).unwrap()
    };
    let t = f32_tensor(&[2, 2], &[1.0, -2.0, 0.5, 1e-40]);
    npyz_reads(&write(&t), &[2, 2], &[1.0f32, -2.0, 0.5, 1e-40]);
    let t = Tensor::new([3], TensorData::F64(vec![0.1, 2.0, -3.0])).unwrap();
    npyz_reads(&write(&t), &[3], &[0.1f64, 2.0, -3.0]);
    let t = Tensor::new([1, 3], TensorData::I32(vec![i32::MIN, 0, 7])).unwrap();
    npyz_reads(&write(&t), &[1, 3], &[i32::MIN, 0, 7]);
    let t = Tensor::new([2], TensorData::Bool(vec![true, false])).unwrap();
    npyz_reads(&write(&t), &[2], &[true, false]);
    let t = Tensor::new(
        [2],
        TensorData::Bf16(vec![bf16::from_f32(1.0), bf16::from_f32(-0.5)]),
    )
    .unwrap();
    npyz_reads(&write(&t), &[2], &[0x3f80u16, 0xbf00]);
    npyz_reads(&write(&Tensor::scalar_f32(2.5)), &[], &[2.5f32]);
}

// ------------------------------------------------ hand-made headers

/// A version-1.0 file with this header text and data.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f4_header(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

#[test]
fn header_syntax_variants_numpy_accepts() {
    let data = [0u8; 8];
    for header in [
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
        "{'shape': (2,), 'fortran_order': False, 'descr': 'f4'}\n",
        "{ 'descr' : '=f4' , 'fortran_order' : False , 'shape' : ( 2 , ) , }   \n",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,)}",
        "{'descr': '<f4', 'fortran_order': True, 'shape': ((2),)}",
    ] {
        let t = read_npy_bytes(&npy(header, &data), "t.npy")
            .unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(t.shape(), &[2], "{header}");
    }
    for descr in ["|b1", "<b1", "?", "|?"] {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,)}}");
        let t = read_npy_bytes(&npy(&header, &[1, 0]), "t.npy").unwrap();
        assert_eq!(t.data(), &TensorData::Bool(vec![true, false]));
    }
}

/// Reads `bytes`, expecting an error; checks it names the file on one line.
fn error(bytes: &[u8]) -> NpyError {
    let e = read_npy_bytes(bytes, "t.npy").expect_err("expected an error");
    let msg = e.to_string();
    assert!(msg.starts_with("t.npy: ") && !msg.contains('\n'), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    e
}

fn malformed(bytes: &[u8], reason_part: &str) {
    match error(bytes) {
        NpyError::MalformedHeader { reason, .. } => {
            assert!(
                reason.contains(reason_part),
                "{reason:?} lacks {reason_part:?}"
            );
        }
        e => panic!("expected a malformed header, got {e}"),
    }
}

#[test]
fn bad_prefix() {
    for bytes in [
        &b""[..],
        b"\x93NUM",
        b"\x93NUMPX\x01\x00",
        b"PK\x03\x04 zip file",
    ] {
        assert!(matches!(error(bytes), NpyError::NotNpy { .. }), "{bytes:?}");
    }
    assert!(matches!(
        error(b"\x93NUMPY\x04\x00\x10\x00"),
        NpyError::UnsupportedVersion {
            major: 4,
            minor: 0,
            ..
        }
    ));
    malformed(b"\x93NUMPY\x01", "version");
    malformed(b"\x93NUMPY\x01\x00\x10", "header length field");
    malformed(b"\x93NUMPY\x02\x00\x10\x00\x00", "header length field");
    malformed(b"\x93NUMPY\x01\x00\x40\x00{'descr'", "runs past the end");
    // A huge announced header is refused before anything is allocated.
    malformed(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{", "exceeds the limit");
    malformed(&npy("{'descr': '\u{e9}\u{ff}", b""), "unterminated string");
    let mut latin1 = npy(&f4_header("(1,)"), &[0; 4]);
    latin1[12] = 0xe9;
    malformed(&latin1, "invalid text");
}

#[test]
fn bad_header_dicts() {
    let d = [0u8; 24];
    for (header, reason) in [
        ("", "expected a value, found the end"),
        ("{", "expected"),
        ("(1, 2)", "not a dict"),
        (
            "{'descr': '<f4', 'fortran_order': False}",
            "missing key 'shape'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}",
            "unexpected key 'x'",
        ),
        (
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}",
            "duplicate key 'descr'",
        ),
        ("{1: '<f4'}", "key 1 is not a string"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': [6]}",
            "not a tuple",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6)}",
            "not a tuple",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-6,)}",
            "dimension -6",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6.0,)}",
            "expected ',' or ')'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': ('6',)}",
            "dimension '6'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
            "64 bits",
        ),
        (
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (6,)}",
            "'fortran_order' is 0",
        ),
        (
            "{'descr': 5, 'fortran_order': False, 'shape': (6,)}",
            "'descr' is 5",
        ),
        (
            "{'descr': '<f4', 'fortran_order': false, 'shape': (6,)}",
            "unknown name 'false'",
        ),
        (
            "{'descr': '<f4' 'fortran_order': False, 'shape': (6,)}",
            "expected ',' or '}'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,)} x",
            "after the header dict",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,)}}",
            "after the header dict",
        ),
        ("{'descr' '<f4'}", "expected ':'"),
        ("{'descr': -}", "expected a digit"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), ",
            "end of the header",
        ),
    ] {
        malformed(&npy(header, &d), reason);
    }
    let deep = format!("{}{}", "[".repeat(4_000), "]".repeat(4_000));
    malformed(&npy(&deep, &d), "nested deeper than 32");
    let deep = format!("{}{}", "(".repeat(1_000), ")".repeat(1_000));
    malformed(&npy(&deep, &d), "nested deeper than 32");
}

#[test]
fn unsupported_dtypes_name_the_descr() {
    for (descr, shown) in [
        ("'<c8'", "'<c8'"),
        ("'<U3'", "'<U3'"),
        ("'<i8'", "'<i8'"),
        ("'<f2'", "'<f2'"),
        ("'|O'", "'|O'"),
        ("''", "''"),
        (
            "[('a', '<i4'), ('b', '<f4')]",
            "[('a', '<i4'), ('b', '<f4')]",
        ),
    ] {
        let header = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2,)}}");
        let e = error(&npy(&header, &[0; 8]));
        let NpyError::UnsupportedDtype { descr: got, .. } = &e else {
            panic!("{descr}: {e}");
        };
        assert_eq!(got, shown);
        assert!(
            e.to_string()
                .contains("supported: '<f4', '<f8', '<i4', '|b1'")
        );
    }
}

#[test]
fn bad_shapes_and_sizes() {
    let e = error(&npy(&f4_header("(0, 3)"), b""));
    assert!(matches!(e, NpyError::ZeroSizeDimension { ref shape, .. } if shape == &[0, 3]));
    let rank17 = format!("({})", vec!["1"; 17].join(", "));
    assert!(matches!(
        error(&npy(&f4_header(&rank17), &[0; 4])),
        NpyError::RankTooLarge {
            rank: 17,
            max: 16,
            ..
        }
    ));
    // Element counts past 2^40, including ones whose product overflows
    // u64, with only a few bytes of data.
    for shape in ["(1099511627777,)", "(4294967296, 4294967296, 4294967296)"] {
        let e = error(&npy(&f4_header(shape), &[0; 8]));
        assert!(matches!(e, NpyError::TooManyElements { .. }), "{e}");
    }
    // Within the limit, but far more than the file holds.
    let e = error(&npy(&f4_header("(1073741824,)"), &[0; 8]));
    assert!(
        matches!(
            e,
            NpyError::Truncated {
                expected: 4_294_967_296,
                got: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = error(&npy(&f4_header("(2, 3)"), &[0; 23]));
    assert!(matches!(
        e,
        NpyError::Truncated {
            expected: 24,
            got: 23,
            ..
        }
    ));
    let e = error(&npy(&f4_header("(2, 3)"), &[0; 25]));
    assert!(matches!(
        e,
        NpyError::TrailingBytes {
            expected: 24,
            got: 25,
            ..
        }
    ));
    let e = error(&npy(&f4_header("()"), &[]));
    assert!(matches!(
        e,
        NpyError::Truncated {
            expected: 4,
            got: 0,
            ..
        }
    ));

    let bools = "{'descr': '|b1', 'fortran_order': False, 'shape': (3,)}";
    let e = error(&npy(bools, &[1, 0, 2]));
    assert!(matches!(
        e,
        NpyError::InvalidBool {
            index: 2,
            byte: 2,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "t.npy: element 2 is 0x02, not a bool (0 or 1)"
    );
}

// ------------------------------------------------ corruption

/// A small valid file of every kind the reader handles.
fn valid_files() -> Vec<Vec<u8>> {
    [
        "f4_2x3.npy",
        "bool_5.npy",
        "scalar_f8.npy",
        "f4_be_2x2.npy",
        "fortran_i4_2x3x4.npy",
        "v3_f4_3.npy",
        "bf16_bits_4.npy",
    ]
    .iter()
    .map(|name| std::fs::read(fixture(name)).unwrap())
    .collect()
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Replace a byte with a character that means something in a header.
    Token(usize, usize),
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "'",
    "\"",
    " ",
    "\n",
    "0",
    "9",
    "-",
    "L",
    "True",
    "False",
    "None",
    "'descr'",
    "'shape'",
    "'fortran_order'",
    "'<f4'",
    "'>u2'",
    "'|b1'",
    "'<c8'",
    "99999999999999999999",
    "4294967296",
    "\\",
    "é",
    "\u{0}",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    // Offsets are taken modulo the length; the first 128 bytes (the
    // header of every fixture) are hit most often.
    let pos = prop_oneof![0usize..128, any::<usize>()];
    prop_oneof![
        (pos.clone(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (pos.clone(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (pos.clone(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (pos, 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Token(i, t)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Set(i, b) => {
            if !bytes.is_empty() {
                let i = at(*i, bytes.len());
                bytes[i] = *b;
            }
        }
        Mutation::Insert(i, v) => {
            let i = at(*i, bytes.len() + 1);
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Truncate(n) => bytes.truncate(at(*n, bytes.len() + 1)),
        Mutation::Token(i, t) => {
            let i = at(*i, bytes.len());
            let end = (i + 1).min(bytes.len());
            bytes.splice(i..end, TOKENS[*t].bytes());
        }
    }
}

proptest! {
    /// Any corruption of a valid file gives a tensor or an error naming
    /// the file on one line, never a panic.
    #[test]
    fn corrupted_files_never_panic(
        which in 0usize..7,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = valid_files().swap_remove(which);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        match read_npy_bytes(&bytes, "fuzz.npy") {
            Ok(t) => prop_assert!(!t.shape().contains(&0)),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("fuzz.npy: ") && !msg.contains('\n'), "{}", msg);
            }
        }
    }

    /// A header of random tokens: the parser's paths, reached directly.
    #[test]
    fn random_headers_never_panic(tokens in prop::collection::vec(0..TOKENS.len(), 0..40)) {
        let text: String = tokens.iter().map(|&t| TOKENS[t]).collect();
        let mut bytes = b"\x93NUMPY\x03\x00".to_vec();
        bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&[1; 8]);
        let _ = read_npy_bytes(&bytes, "fuzz.npy");
    }
}
