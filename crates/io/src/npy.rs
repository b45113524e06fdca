//! Tensors in and out of NumPy's `.npy` format.
//!
//! | tensor dtype | written as | also read from                   |
//! |--------------|------------|----------------------------------|
//! | `f32`        | `<f4`      | `>f4`                            |
//! | `f64`        | `<f8`      | `>f8`                            |
//! | `i32`        | `<i4`      | `>i4`                            |
//! | `bool`       | `\|b1`     | `?`, `<b1`, …                    |
//! | `bf16`       | `<u2`      | `>u2`                            |
//!
//! NumPy has no bf16, so a `bf16` tensor is stored as its raw bit patterns
//! in a `uint16` array (the convention of PyTorch's `tensor.view(torch.uint16)`
//! and of `ml_dtypes`), and every `<u2`/`>u2` file is read back as `bf16`
//! bits: `np.load(f).view(ml_dtypes.bfloat16)` recovers the values on the
//! NumPy side.
//!
//! Reading accepts format versions 1.0, 2.0 and 3.0, either byte order (`=`,
//! `|` and no prefix mean the host's), and Fortran-order arrays, which are
//! transposed to row-major; 0-d arrays become rank-0 tensors. Anything else
//! is an [`NpyError`] naming the file, never a panic, whatever the bytes:
//! other dtypes, empty or absurd shapes, truncated or overlong data. Shapes
//! are checked against the file's length before anything is allocated.
//!
//! Writing produces exactly the bytes `numpy.save` does for the same array
//! (little-endian, C order, version 1.0, header padded to 64 bytes), and is
//! atomic: the file appears complete under its name, or not at all.
//!
//! The reader is hand-written rather than built on the `npyz` crate, whose
//! header parser (0.8) panics with an arithmetic overflow when the shape's
//! element count overflows `u64`, allocates the header length announced by
//! the file (up to 4 GiB) before reading it, and reports syntax errors as
//! multi-line dumps of the whole header. A `.npy` header holding one of the
//! dtypes above is a three-key Python dict literal; parsing just that takes
//! less code than working around those cases. The writer is hand-written
//! too, to match `numpy.save` byte for byte. `npyz` remains a
//! dev-dependency, as an independent reader in the tests.
//!
//! ```
//! use birkhoff_io::npy::{read_npy, read_npy_bytes, write_npy};
//! use birkhoff_ir::{Tensor, TensorData};
//!
//! let t = Tensor::new([2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]))?;
//! let path = std::env::temp_dir().join(format!("npy-doc-{}.npy", std::process::id()));
//! write_npy(&path, &t)?;
//! assert_eq!(read_npy(&path)?, t);
//! std::fs::remove_file(&path)?;
//!
//! let err = read_npy_bytes(b"not numpy", "x.npy").unwrap_err();
//! assert_eq!(err.to_string(), "x.npy: not an npy file (it does not start with \\x93NUMPY)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic::{Staged, stage};
use birkhoff_ir::{DType, MAX_ELEMENTS, MAX_RANK, Tensor, TensorData};
use half::bf16;

/// Why a `.npy` file could not be read or written. Every message starts
/// with the file's path (or the name given to [`read_npy_bytes`]).
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file does not exist.
    #[error("{}: no such file", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The path names a directory.
    #[error("{}: is a directory, not an npy file", .path.display())]
    IsDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// An I/O error while reading.
    #[error("{}: cannot read: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// An I/O error while writing; the target was left as it was.
    #[error("{}: cannot write: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// The data does not start with the `.npy` magic string.
    #[error("{}: not an npy file (it does not start with \\x93NUMPY)", .path.display())]
    NotNpy {
        /// The file.
        path: PathBuf,
    },
    /// A format version other than 1.0, 2.0 and 3.0.
    #[error("{}: unsupported npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header is not a well-formed dict with exactly the keys `descr`,
    /// `fortran_order` and `shape`, of the right types.
    #[error("{}: malformed npy header: {reason}", .path.display())]
    MalformedHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong, in a few words.
        reason: String,
    },
    /// An element type other than those in the module docs.
    #[error(
        "{}: unsupported dtype {descr} (supported: '<f4', '<f8', '<i4', '|b1', and '<u2' read as bf16 bits; big-endian too)",
        .path.display()
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The header's `descr` as written there (possibly shortened).
        descr: String,
    },
    /// A rank above [`MAX_RANK`].
    #[error("{}: rank {rank} exceeds the maximum rank {max}", .path.display())]
    RankTooLarge {
        /// The file.
        path: PathBuf,
        /// The rank of the shape.
        rank: usize,
        /// [`MAX_RANK`].
        max: usize,
    },
    /// A dimension of size 0: empty tensors are not supported.
    #[error("{}: shape {shape:?} has a zero-size dimension (empty tensors are not supported)", .path.display())]
    ZeroSizeDimension {
        /// The file.
        path: PathBuf,
        /// The shape.
        shape: Vec<u64>,
    },
    /// More elements than [`MAX_ELEMENTS`].
    #[error("{}: shape {shape:?} has more than {max} elements", .path.display())]
    TooManyElements {
        /// The file.
        path: PathBuf,
        /// The shape.
        shape: Vec<u64>,
        /// [`MAX_ELEMENTS`].
        max: u64,
    },
    /// Fewer data bytes than the shape and dtype need.
    #[error("{}: truncated data: the header's shape and dtype need {expected} bytes, only {got} follow the header", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Data bytes the header calls for.
        expected: u64,
        /// Data bytes present.
        got: u64,
    },
    /// More data bytes than the shape and dtype need.
    #[error("{}: {got} bytes follow the header where its shape and dtype need {expected} (extra bytes at the end)", .path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Data bytes the header calls for.
        expected: u64,
        /// Data bytes present.
        got: u64,
    },
    /// A byte of a `bool` array that is neither 0 nor 1.
    #[error("{}: element {index} is {byte:#04x}, not a bool (0 or 1)", .path.display())]
    InvalidBool {
        /// The file.
        path: PathBuf,
        /// Row-major position in the file's storage order.
        index: usize,
        /// The byte.
        byte: u8,
    },
}

type Result<T, E = NpyError> = std::result::Result<T, E>;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header accepted: NumPy's own default limit (`np.load`
/// refuses longer ones unless told otherwise). Headers for the dtypes and
/// ranks supported here are a few hundred bytes.
const MAX_HEADER_LEN: u64 = 10_000;

/// Deepest nesting of brackets accepted in a header.
const MAX_DEPTH: usize = 32;

/// Bytes converted per read or write call.
const CHUNK: usize = 1 << 16;

/// Reads a `.npy` file into a tensor (see the [module docs](self) for what
/// is accepted).
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let read_err = |error: io::Error| match error.kind() {
        io::ErrorKind::NotFound => NpyError::NotFound { path: path.into() },
        _ => NpyError::Read {
            path: path.into(),
            error,
        },
    };
    // Checked before opening: on some systems opening a directory succeeds,
    // and opening a FIFO blocks until a writer comes.
    if path.is_dir() {
        return Err(NpyError::IsDirectory { path: path.into() });
    }
    if path.exists() && !path.is_file() {
        return Err(NpyError::Read {
            path: path.into(),
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a device or FIFO)",
            ),
        });
    }
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(NpyError::IsDirectory { path: path.into() });
    }
    read_from(&mut BufReader::with_capacity(CHUNK, file), meta.len(), path)
}

/// Reads `.npy` data held in memory; `name` stands for the file in error
/// messages.
pub fn read_npy_bytes(bytes: &[u8], name: &str) -> Result<Tensor> {
    read_from(&mut &bytes[..], bytes.len() as u64, Path::new(name))
}

/// Writes `t` to `path` as a `.npy` file, replacing any file there.
///
/// The bytes are those `numpy.save` writes for the same array; `bf16`
/// tensors are written as `<u2` bit patterns. The data goes to a temporary
/// file in the same directory, which is flushed to disk and then renamed
/// over `path`, so readers see the old file or the complete new one, never
/// a partial one; on error the temporary file is removed. (A replaced
/// file's permissions are not carried over.)
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    stage_npy(path, t)?
        .commit()
        .map_err(|error| NpyError::Write {
            path: path.into(),
            error,
        })
}

/// [`write_npy`] up to the rename: the file is written in full next to
/// `path` and goes in place on [`Staged::commit`], so that several outputs
/// appear all together or, if any fails, none does.
pub fn stage_npy(path: &Path, t: &Tensor) -> Result<Staged> {
    check_shape(
        path,
        &t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
    )?;
    if path.is_dir() {
        return Err(NpyError::IsDirectory { path: path.into() });
    }
    stage(path, |file| encode(file, t)).map_err(|error| NpyError::Write {
        path: path.into(),
        error,
    })
}

// ---------------------------------------------------------------- reading

/// What a header says about the data that follows it.
struct Header {
    dtype: DType,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Reads a whole `.npy` file of `len` bytes from `r`.
fn read_from(r: &mut impl Read, len: u64, path: &Path) -> Result<Tensor> {
    let (header, data_offset) = read_header(r, len, path)?;
    let count = header.shape.iter().product::<usize>();
    let expected = count as u64 * header.dtype.size_bytes() as u64;
    let got = len - data_offset;
    if got < expected {
        return Err(NpyError::Truncated {
            path: path.into(),
            expected,
            got,
        });
    }
    if got > expected {
        return Err(NpyError::TrailingBytes {
            path: path.into(),
            expected,
            got,
        });
    }
    let big = header.big_endian;
    let mut data = match header.dtype {
        DType::F32 => TensorData::F32(read_elems(r, count, path, |_, b| {
            Ok(f32::from_bits(u32_from(b, big)))
        })?),
        DType::F64 => TensorData::F64(read_elems(r, count, path, |_, b| {
            Ok(f64::from_bits(if big {
                u64::from_be_bytes(b)
            } else {
                u64::from_le_bytes(b)
            }))
        })?),
        DType::I32 => TensorData::I32(read_elems(r, count, path, |_, b| {
            Ok(u32_from(b, big) as i32)
        })?),
        DType::Bf16 => TensorData::Bf16(read_elems(r, count, path, |_, b| {
            Ok(bf16::from_bits(if big {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }))
        })?),
        DType::Bool => TensorData::Bool(read_elems(r, count, path, |index, [byte]| match byte {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(NpyError::InvalidBool {
                path: path.into(),
                index,
                byte,
            }),
        })?),
    };
    if header.fortran_order && header.shape.len() > 1 {
        data = match data {
            TensorData::F32(v) => TensorData::F32(fortran_to_c(&v, &header.shape)),
            TensorData::F64(v) => TensorData::F64(fortran_to_c(&v, &header.shape)),
            TensorData::I32(v) => TensorData::I32(fortran_to_c(&v, &header.shape)),
            TensorData::Bf16(v) => TensorData::Bf16(fortran_to_c(&v, &header.shape)),
            TensorData::Bool(v) => TensorData::Bool(fortran_to_c(&v, &header.shape)),
        };
    }
    Ok(Tensor::new(header.shape, data).expect("element count matches the checked shape"))
}

fn u32_from(b: [u8; 4], big: bool) -> u32 {
    if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Reads the magic string, version, header length and header of a file of
/// `len` bytes, leaving `r` at the start of the data; returns the header
/// and the data's offset.
fn read_header(r: &mut impl Read, len: u64, path: &Path) -> Result<(Header, u64)> {
    let read = |r: &mut dyn Read, buf: &mut [u8]| {
        r.read_exact(buf).map_err(|error| NpyError::Read {
            path: path.into(),
            error,
        })
    };
    let malformed = |reason: String| NpyError::MalformedHeader {
        path: path.into(),
        reason,
    };
    let mut prefix = [0u8; 8];
    let n = len.min(8) as usize;
    read(r, &mut prefix[..n])?;
    if n < MAGIC.len() || prefix[..6] != MAGIC[..] {
        return Err(NpyError::NotNpy { path: path.into() });
    }
    if n < 8 {
        return Err(malformed("the file ends inside the version number".into()));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let len_size = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(NpyError::UnsupportedVersion {
                path: path.into(),
                major,
                minor,
            });
        }
    };
    if len < 8 + len_size {
        return Err(malformed(
            "the file ends inside the header length field".into(),
        ));
    }
    let mut len_bytes = [0u8; 4];
    read(r, &mut len_bytes[..len_size as usize])?;
    let header_len = u64::from(u32::from_le_bytes(len_bytes));
    if header_len > MAX_HEADER_LEN {
        return Err(malformed(format!(
            "header length {header_len} exceeds the limit of {MAX_HEADER_LEN} bytes"
        )));
    }
    let data_offset = 8 + len_size + header_len;
    if data_offset > len {
        return Err(malformed(format!(
            "header length {header_len} runs past the end of the file ({len} bytes)"
        )));
    }
    let mut text = vec![0u8; header_len as usize];
    read(r, &mut text)?;
    let text = std::str::from_utf8(&text)
        .map_err(|e| malformed(format!("invalid text at byte {}", e.valid_up_to())))?;
    Ok((parse_header(text, path)?, data_offset))
}

/// Interprets the header text: a dict with exactly the keys `descr`,
/// `fortran_order` and `shape`, as `numpy.lib.format` requires.
fn parse_header(text: &str, path: &Path) -> Result<Header> {
    let malformed = |reason: String| NpyError::MalformedHeader {
        path: path.into(),
        reason,
    };
    let mut p = Parser { text, pos: 0 };
    let dict = p.value(0).map_err(malformed)?;
    p.skip_ws();
    if p.pos < text.len() {
        return Err(malformed(format!(
            "unexpected text after the header dict at byte {}",
            p.pos
        )));
    }
    let Lit::Dict(entries) = dict.lit else {
        return Err(malformed("the header is not a dict".into()));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        let slot = match &key.lit {
            Lit::Str(name) if name == "descr" => &mut descr,
            Lit::Str(name) if name == "fortran_order" => &mut fortran,
            Lit::Str(name) if name == "shape" => &mut shape,
            Lit::Str(_) => return Err(malformed(format!("unexpected key {}", key.text))),
            _ => return Err(malformed(format!("key {} is not a string", key.text))),
        };
        if slot.replace(value).is_some() {
            return Err(malformed(format!("duplicate key {}", key.text)));
        }
    }
    let missing = |key: &str| malformed(format!("missing key '{key}'"));
    let (descr, fortran, shape) = (
        descr.ok_or_else(|| missing("descr"))?,
        fortran.ok_or_else(|| missing("fortran_order"))?,
        shape.ok_or_else(|| missing("shape"))?,
    );

    let Lit::Bool(fortran_order) = fortran.lit else {
        return Err(malformed(format!(
            "'fortran_order' is {}, not True or False",
            fortran.text
        )));
    };
    let Lit::Tuple(dims) = shape.lit else {
        return Err(malformed(format!(
            "'shape' is {}, not a tuple of integers",
            shape.text
        )));
    };
    let mut dims64 = Vec::with_capacity(dims.len());
    for d in dims {
        match d.lit {
            Lit::Int {
                negative: false,
                value: Some(v),
            } => dims64.push(v),
            Lit::Int {
                negative: false,
                value: None,
            } => {
                return Err(malformed(format!(
                    "dimension {} does not fit in 64 bits",
                    d.text
                )));
            }
            _ => {
                return Err(malformed(format!(
                    "dimension {} is not a non-negative integer",
                    d.text
                )));
            }
        }
    }
    let (dtype, big_endian) = match &descr.lit {
        Lit::Str(s) => parse_descr(s),
        // A list is a structured dtype: well-formed, but not ours.
        Lit::List => None,
        _ => {
            return Err(malformed(format!(
                "'descr' is {}, not a dtype string",
                descr.text
            )));
        }
    }
    .ok_or_else(|| NpyError::UnsupportedDtype {
        path: path.into(),
        descr: descr.text.clone(),
    })?;
    let count = check_shape(path, &dims64)?;
    debug_assert_eq!(count, dims64.iter().product::<u64>());
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape: dims64.iter().map(|&d| d as usize).collect(),
    })
}

/// Checks rank, zero dimensions and element count; returns the count.
fn check_shape(path: &Path, shape: &[u64]) -> Result<u64> {
    if shape.len() > MAX_RANK {
        return Err(NpyError::RankTooLarge {
            path: path.into(),
            rank: shape.len(),
            max: MAX_RANK,
        });
    }
    if shape.contains(&0) {
        return Err(NpyError::ZeroSizeDimension {
            path: path.into(),
            shape: shape.to_vec(),
        });
    }
    let too_many = || NpyError::TooManyElements {
        path: path.into(),
        shape: shape.to_vec(),
        max: MAX_ELEMENTS,
    };
    let mut count: u64 = 1;
    for &d in shape {
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(too_many)?;
    }
    // Where `usize` is narrower than 40 bits, the limit is lower.
    usize::try_from(count).map_err(|_| too_many())?;
    Ok(count)
}

/// The element type and byte order of a `descr` string, if supported.
fn parse_descr(descr: &str) -> Option<(DType, bool)> {
    let (big, code) = match descr.as_bytes().first()? {
        b'<' => (false, &descr[1..]),
        b'>' => (true, &descr[1..]),
        b'|' | b'=' => (cfg!(target_endian = "big"), &descr[1..]),
        _ => (cfg!(target_endian = "big"), descr),
    };
    let dtype = match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i4" => DType::I32,
        "u2" => DType::Bf16,
        "b1" | "?" => DType::Bool,
        _ => return None,
    };
    Some((dtype, big))
}

/// Reads `count` elements of `N` bytes each, converting each with `conv`
/// (which gets the element's index). The caller has checked that the data
/// is there, so the allocation is bounded by the input's length.
fn read_elems<T, const N: usize>(
    r: &mut impl Read,
    count: usize,
    path: &Path,
    mut conv: impl FnMut(usize, [u8; N]) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0u8; (CHUNK / N).min(count) * N];
    while out.len() < count {
        let take = (count - out.len()).min(buf.len() / N) * N;
        r.read_exact(&mut buf[..take])
            .map_err(|error| NpyError::Read {
                path: path.into(),
                error,
            })?;
        for bytes in buf[..take].chunks_exact(N) {
            let bytes = <[u8; N]>::try_from(bytes).expect("chunks_exact yields N bytes");
            out.push(conv(out.len(), bytes)?);
        }
    }
    Ok(out)
}

/// Reorders Fortran-order (first index fastest) elements into row-major.
fn fortran_to_c<T: Copy>(src: &[T], shape: &[usize]) -> Vec<T> {
    let rank = shape.len();
    // Distance in `src` between neighbours along each axis.
    let mut stride = vec![1usize; rank];
    for d in 1..rank {
        stride[d] = stride[d - 1] * shape[d - 1];
    }
    let mut out = Vec::with_capacity(src.len());
    let mut index = vec![0usize; rank];
    let mut offset = 0;
    for _ in 0..src.len() {
        out.push(src[offset]);
        // Advance the row-major index, last axis fastest.
        for d in (0..rank).rev() {
            index[d] += 1;
            offset += stride[d];
            if index[d] < shape[d] {
                break;
            }
            offset -= stride[d] * shape[d];
            index[d] = 0;
        }
    }
    out
}

/// A parsed Python literal with its source text (shortened for messages).
struct Spanned {
    lit: Lit,
    text: String,
}

/// The Python literals a header can hold.
enum Lit {
    Str(String),
    Bool(bool),
    None,
    /// `value` is `None` when the magnitude does not fit in 64 bits.
    Int {
        negative: bool,
        value: Option<u64>,
    },
    Tuple(Vec<Spanned>),
    /// Lists only occur as structured dtypes, so their items are dropped.
    List,
    Dict(Vec<(Spanned, Spanned)>),
}

/// A recursive-descent parser for the Python literal syntax of headers:
/// strings, integers, `True`/`False`/`None`, tuples, lists and dicts.
/// Errors are short reasons with a byte offset into the header.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.text[self.pos..].chars().next() {
            Some(c) => format!("expected {wanted}, found {c:?} at byte {}", self.pos),
            None => format!("expected {wanted}, found the end of the header"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Spanned, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "brackets nested deeper than {MAX_DEPTH} levels at byte {}",
                self.pos
            ));
        }
        self.skip_ws();
        let start = self.pos;
        let lit = match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                while !self.close(b'}') {
                    let key = self.value(depth + 1)?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.unexpected("':'"));
                    }
                    self.pos += 1;
                    entries.push((key, self.value(depth + 1)?));
                    self.separator(b'}')?;
                }
                Lit::Dict(entries)
            }
            Some(b'(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.items(b')', depth)?;
                if items.len() == 1 && !trailing_comma {
                    // `(x)` is x in parentheses, not a tuple.
                    return Ok(items.into_iter().next().expect("one item"));
                }
                Lit::Tuple(items)
            }
            Some(b'[') => {
                self.pos += 1;
                self.items(b']', depth)?;
                Lit::List
            }
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    let Some(c) = self.text[self.pos..].chars().next() else {
                        return Err(format!("unterminated string starting at byte {start}"));
                    };
                    self.pos += c.len_utf8();
                    match c {
                        _ if c == char::from(q) => break,
                        // Escapes only matter in names of structured
                        // fields, which are rejected anyway: keep the
                        // escaped character as it is.
                        '\\' => {
                            if let Some(e) = self.text[self.pos..].chars().next() {
                                self.pos += e.len_utf8();
                                s.push(e);
                            }
                        }
                        _ => s.push(c),
                    }
                }
                Lit::Str(s)
            }
            Some(b'-' | b'+' | b'0'..=b'9') => {
                let negative = self.peek() == Some(b'-');
                if matches!(self.peek(), Some(b'-' | b'+')) {
                    self.pos += 1;
                }
                let mut value = Some(0u64);
                let digits = self.pos;
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    value = value
                        .and_then(|v| v.checked_mul(10))
                        .and_then(|v| v.checked_add(u64::from(c - b'0')));
                    self.pos += 1;
                }
                if self.pos == digits {
                    return Err(self.unexpected("a digit"));
                }
                // Python 2 wrote long integers with a suffix: `(3L, 4L)`.
                if matches!(self.peek(), Some(b'L' | b'l')) {
                    self.pos += 1;
                }
                Lit::Int { negative, value }
            }
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => {
                let end = self.text[self.pos..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(self.text.len(), |n| self.pos + n);
                let lit = match &self.text[self.pos..end] {
                    "True" => Lit::Bool(true),
                    "False" => Lit::Bool(false),
                    "None" => Lit::None,
                    word => return Err(format!("unknown name '{word}' at byte {}", self.pos)),
                };
                self.pos = end;
                lit
            }
            _ => return Err(self.unexpected("a value")),
        };
        Ok(Spanned {
            lit,
            text: shorten(&self.text[start..self.pos]),
        })
    }

    /// Comma-separated values up to `close`; also says whether a comma
    /// came last.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Spanned>, bool), String> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        while !self.close(close) {
            items.push(self.value(depth + 1)?);
            trailing_comma = self.separator(close)?;
        }
        Ok((items, trailing_comma))
    }

    /// Consumes `close` (after whitespace) if it is next.
    fn close(&mut self, close: u8) -> bool {
        self.skip_ws();
        let found = self.peek() == Some(close);
        if found {
            self.pos += 1;
        }
        found
    }

    /// After an item: a comma (returns true) or, left in place, `close`.
    fn separator(&mut self, close: u8) -> Result<bool, String> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(c) if c == close => Ok(false),
            _ => Err(self.unexpected(&format!("',' or '{}'", char::from(close)))),
        }
    }
}

/// Source text for an error message: control characters escaped, so the
/// message stays on one line, and at most 60 characters kept.
fn shorten(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 59 && s.chars().nth(60).is_some() {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------- writing

/// Magic string, version 1.0, header length and header, exactly as
/// `numpy.lib.format` writes them for a little-endian C-order array.
fn header_bytes(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I32 => "<i4",
        DType::Bf16 => "<u2",
        DType::Bool => "|b1",
    };
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // NumPy leaves room for the first dimension to grow to 21 digits in
    // place, then pads with spaces and a newline so that the data starts
    // at a multiple of 64 bytes.
    if let Some(d0) = dims.first() {
        text.push_str(&" ".repeat(21usize.saturating_sub(d0.len())));
    }
    let pad = 64 - (MAGIC.len() + 2 + 2 + text.len() + 1) % 64;
    text.push_str(&" ".repeat(pad));
    text.push('\n');
    let header_len =
        u16::try_from(text.len()).expect("a header of rank at most MAX_RANK fits in 64 KiB");
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + text.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Writes the whole file: header, then the elements in little-endian.
fn encode(w: &mut impl Write, t: &Tensor) -> io::Result<()> {
    w.write_all(&header_bytes(t))?;
    match t.data() {
        TensorData::F32(v) => write_elems(w, v, |x| x.to_le_bytes()),
        TensorData::F64(v) => write_elems(w, v, |x| x.to_le_bytes()),
        TensorData::I32(v) => write_elems(w, v, |x| x.to_le_bytes()),
        TensorData::Bf16(v) => write_elems(w, v, |x| x.to_bits().to_le_bytes()),
        TensorData::Bool(v) => write_elems(w, v, |&x| [u8::from(x)]),
    }
}

/// Writes `items` through a buffer of about [`CHUNK`] bytes.
fn write_elems<T, const N: usize>(
    w: &mut impl Write,
    items: &[T],
    bytes: impl Fn(&T) -> [u8; N],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK);
    for chunk in items.chunks(CHUNK / N) {
        buf.clear();
        for x in chunk {
            buf.extend_from_slice(&bytes(x));
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::write_atomically;
    use std::fs;

    /// A version-1.0 file with this header text and data.
    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f4_header(shape: &str) -> String {
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
    }

    fn encoded(t: &Tensor) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, t).unwrap();
        out
    }

    fn read(bytes: &[u8]) -> Result<Tensor> {
        read_npy_bytes(bytes, "t.npy")
    }

    /// Elements as bit patterns, so NaNs compare equal to themselves.
    fn bits(t: &Tensor) -> Vec<u64> {
        match t.data() {
            TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
            TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as u32 as u64).collect(),
            TensorData::Bf16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
        }
    }

    /// A tensor of `shape` whose elements run through special values.
    fn sample(dtype: DType, shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        let data = match dtype {
            DType::F32 => {
                let s = [1.5, -0.0, f32::NAN, f32::INFINITY, 1e-45, -3.4e38, 0.1];
                TensorData::F32((0..n).map(|i| s[i % s.len()]).collect())
            }
            DType::F64 => {
                let s = [1.5, -0.0, f64::NAN, f64::NEG_INFINITY, 5e-324, 1e300, 0.1];
                TensorData::F64((0..n).map(|i| s[i % s.len()]).collect())
            }
            DType::I32 => {
                let s = [i32::MIN, -1, 0, 1, i32::MAX, 65536];
                TensorData::I32((0..n).map(|i| s[i % s.len()]).collect())
            }
            DType::Bf16 => TensorData::Bf16(
                (0..n)
                    .map(|i| bf16::from_bits((i as u16).wrapping_mul(4099)))
                    .collect(),
            ),
            DType::Bool => TensorData::Bool((0..n).map(|i| i % 3 == 1).collect()),
        };
        Tensor::new(shape, data).unwrap()
    }

    #[test]
    fn round_trip_every_dtype_and_rank() {
        let shapes: [&[usize]; 6] = [&[], &[1], &[5], &[2, 3], &[3, 1, 2], &[2, 3, 1, 4]];
        for dtype in DType::ALL {
            for shape in shapes {
                let t = sample(dtype, shape);
                let back = read(&encoded(&t)).unwrap();
                assert_eq!(back.ty(), t.ty(), "{dtype} {shape:?}");
                assert_eq!(bits(&back), bits(&t), "{dtype} {shape:?}");
            }
        }
        // More elements than one read or write chunk.
        let t = sample(DType::F64, &[3, CHUNK / 8 + 5]);
        assert_eq!(bits(&read(&encoded(&t)).unwrap()), bits(&t));
    }

    #[test]
    fn header_matches_numpy_layout() {
        let bytes = encoded(&sample(DType::F32, &[2, 3]));
        let expected = format!("{}{}\n", f4_header("(2, 3)"), " ".repeat(58));
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
        assert_eq!(std::str::from_utf8(&bytes[10..128]).unwrap(), expected);
        assert_eq!(bytes.len(), 128 + 24);
        for shape in [
            &[][..],
            &[7],
            &[100_000, 2],
            &[1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2],
        ] {
            let bytes = encoded(&sample(DType::Bool, shape));
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0, "{shape:?}");
            assert_eq!(bytes[9 + header_len], b'\n');
        }
    }

    #[test]
    fn big_endian_and_fortran_order() {
        let header = "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }";
        let data: Vec<u8> = [0i32, 3, 1, 4, 2, -5]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let t = read(&npy(header, &data)).unwrap();
        assert_eq!(t.data(), &TensorData::I32(vec![0, 1, 2, 3, 4, -5]));

        let src: Vec<u32> = (0..24).collect();
        // Element [i, j, k] of a Fortran-order 2x3x4 array sits at i + 2j + 6k.
        let c = fortran_to_c(&src, &[2, 3, 4]);
        for (flat, &v) in c.iter().enumerate() {
            let (i, j, k) = (flat / 12, flat / 4 % 3, flat % 4);
            assert_eq!(v as usize, i + 2 * j + 6 * k);
        }
        assert_eq!(fortran_to_c(&[1, 2, 3], &[3]), vec![1, 2, 3]);
        assert_eq!(fortran_to_c(&[9], &[]), vec![9]);
    }

    /// The sorted file names in `dir`.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_round_trip_and_path_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let t = sample(DType::I32, &[4, 3]);
        write_npy(&path, &t).unwrap();
        assert_eq!(read_npy(&path).unwrap(), t);
        assert_eq!(fs::read(&path).unwrap(), encoded(&t));
        // Overwriting replaces the file whole.
        let u = sample(DType::Bool, &[2]);
        write_npy(&path, &u).unwrap();
        assert_eq!(read_npy(&path).unwrap(), u);
        assert_eq!(entries(dir.path()), ["x.npy"]);

        let missing = dir.path().join("missing.npy");
        assert!(matches!(read_npy(&missing), Err(NpyError::NotFound { .. })));
        let e = read_npy(dir.path()).unwrap_err();
        assert!(matches!(e, NpyError::IsDirectory { .. }));
        assert!(e.to_string().ends_with(": is a directory, not an npy file"));
        assert!(matches!(
            write_npy(dir.path(), &t),
            Err(NpyError::IsDirectory { .. })
        ));
        let e = write_npy(&dir.path().join("no/such/dir.npy"), &t).unwrap_err();
        assert!(matches!(e, NpyError::Write { .. }), "{e}");
        let empty = Tensor::new([0], TensorData::F32(vec![])).unwrap();
        assert!(matches!(
            write_npy(&path, &empty),
            Err(NpyError::ZeroSizeDimension { .. })
        ));
        fs::write(&path, b"\x93NUMPY\x01\x00").unwrap();
        let e = read_npy(&path).unwrap_err();
        assert!(e.to_string().starts_with(&path.display().to_string()));
        assert_eq!(entries(dir.path()), ["x.npy"]);
    }

    #[test]
    fn failed_writes_leave_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.npy");
        fs::write(&path, b"old").unwrap();
        let e = write_atomically(&path, |f| {
            f.write_all(b"half of the new")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["keep.npy"]);

        let panicked = std::panic::catch_unwind(|| {
            let _ = write_atomically(&path, |f| {
                f.write_all(b"half")?;
                panic!("crash mid-write");
            });
        });
        assert!(panicked.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["keep.npy"]);

        write_atomically(&path, |f| f.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(dir.path()), ["keep.npy"]);
    }
}
