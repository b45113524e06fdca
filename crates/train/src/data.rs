//! Training text: a built-in corpus, files as corpora, and batches of
//! byte tokens.
//!
//! Tokenization is byte-level: every byte is one token (`0..256`), so any
//! file is a corpus and nothing is ever out of vocabulary.
//!
//! [`builtin_corpus`] generates its text with a small probabilistic grammar
//! ([`generate_text`]): short English-like stories (people, animals and
//! objects moving between places, giving things to each other), questions
//! answered from the sentence before, counting and small sums with their
//! answers. Everything is drawn from a fixed seed with [`Rng`], whose
//! stream never changes, so the corpus is the same bytes on every machine.
//! The text repeats its structure often enough that a tiny model's loss
//! falls visibly within a few hundred steps, and has enough variety
//! (several thousand distinct sentences) that it cannot simply memorize it.
//!
//! [`Batches`] cuts random windows of `seq + 1` bytes out of a corpus:
//! `tokens` is the first `seq`, `targets` the last `seq` (the next byte at
//! each position).
//!
//! ```
//! use birkhoff_train::data::{Batches, builtin_corpus};
//!
//! let corpus = builtin_corpus();
//! assert!(corpus.train.len() > 9 * corpus.valid.len() - 10);
//! let mut batches = Batches::new(&corpus.train, 2, 16, 1)?;
//! let (tokens, targets) = batches.next();
//! assert_eq!(tokens.shape(), [2, 16]);
//! assert_eq!(targets.shape(), [2, 16]);
//! # Ok::<(), birkhoff_train::data::DataError>(())
//! ```

use std::path::{Path, PathBuf};

use birkhoff::dsl::Rng;
use birkhoff::ir::{Tensor, TensorData};

pub use crate::stories::generate_text;

/// Tokens in the byte-level vocabulary.
pub const VOCAB: usize = 256;

/// Bytes [`builtin_corpus`] generates (about 512 KiB; a little more, since
/// it stops at the end of a paragraph).
pub const BUILTIN_BYTES: usize = 512 * 1024;

/// The seed of [`builtin_corpus`].
pub const BUILTIN_SEED: u64 = 0x6269_726b_686f_6666; // "birkhoff"

/// The fraction of [`builtin_corpus`] held out for validation.
pub const BUILTIN_VALID_FRACTION: f64 = 0.1;

/// A corpus split into training and validation bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corpus {
    /// Training bytes (the first part).
    pub train: Vec<u8>,
    /// Validation bytes (the last part).
    pub valid: Vec<u8>,
    /// Where the text came from, one line.
    pub source: String,
}

/// The largest corpus file read (bytes): a byte-level model's corpus
/// is held in memory whole.
pub const MAX_CORPUS_BYTES: u64 = 1 << 32;

/// Why a corpus or batches could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("cannot read corpus {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, so not also an error source).
        error: std::io::Error,
    },
    /// The file has no bytes.
    #[error("corpus {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The validation fraction is not in `[0, 1)`.
    #[error("validation fraction {value} is not in [0, 1)")]
    BadFraction {
        /// The fraction given.
        value: f64,
    },
    /// Too few bytes for what was asked.
    #[error("{what} has {len} bytes, fewer than the {needed} needed")]
    TooShort {
        /// What is short (`"corpus …"`, `"training data"`, …).
        what: String,
        /// Its length.
        len: usize,
        /// The least length that works.
        needed: usize,
    },
    /// A batch size or sequence length of zero.
    #[error("{what} must be at least 1")]
    Zero {
        /// `"batch"` or `"seq"`.
        what: &'static str,
    },
}

/// The built-in corpus: [`BUILTIN_BYTES`] of [`generate_text`] with
/// [`BUILTIN_SEED`], the last 10% held out for validation.
pub fn builtin_corpus() -> Corpus {
    let text = generate_text(BUILTIN_SEED, BUILTIN_BYTES);
    let (train, valid) = split(&text, BUILTIN_VALID_FRACTION);
    Corpus {
        train: train.to_vec(),
        valid: valid.to_vec(),
        source: format!(
            "builtin: {} bytes of generated stories, questions and arithmetic (seed {BUILTIN_SEED:#x})",
            text.len()
        ),
    }
}

/// Any file as a corpus of bytes; its last `valid_fraction` (rounded to
/// whole bytes) is the validation part.
///
/// Errors: the file cannot be read, is empty, `valid_fraction` is not in
/// `[0, 1)`, or the split leaves the training part under 2 bytes or, with a
/// positive fraction, the validation part empty.
pub fn load_corpus(path: &Path, valid_fraction: f64) -> Result<Corpus, DataError> {
    if !(0.0..1.0).contains(&valid_fraction) {
        return Err(DataError::BadFraction {
            value: valid_fraction,
        });
    }
    let bytes = birkhoff::read_bounded(path, MAX_CORPUS_BYTES).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let (train, valid) = split(&bytes, valid_fraction);
    let short = |needed: usize| DataError::TooShort {
        what: format!("corpus {}", path.display()),
        len: bytes.len(),
        needed,
    };
    if train.len() < 2 {
        return Err(short(2 + valid.len()));
    }
    if valid_fraction > 0.0 && valid.is_empty() {
        return Err(short((1.0 / valid_fraction).ceil() as usize));
    }
    Ok(Corpus {
        train: train.to_vec(),
        valid: valid.to_vec(),
        source: format!("file {} ({} bytes)", path.display(), bytes.len()),
    })
}

/// `(train, valid)`: the last `round(len · valid_fraction)` bytes are
/// `valid`.
fn split(bytes: &[u8], valid_fraction: f64) -> (&[u8], &[u8]) {
    let valid = ((bytes.len() as f64 * valid_fraction).round() as usize).min(bytes.len());
    bytes.split_at(bytes.len() - valid)
}

/// Bytes as tokens.
pub fn encode(bytes: &[u8]) -> Vec<i32> {
    bytes.iter().map(|&b| i32::from(b)).collect()
}

/// Tokens as text: each token in `0..256` is one byte, anything else
/// becomes `?`; invalid UTF-8 is replaced (lossy).
pub fn decode(tokens: &[i32]) -> String {
    let bytes: Vec<u8> = tokens
        .iter()
        .map(|&t| u8::try_from(t).unwrap_or(b'?'))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An endless, seeded stream of `(tokens, targets)` batches.
///
/// Each row is a window of `seq + 1` consecutive bytes starting at an
/// offset drawn uniformly from every possible start (`Rng::next_u64`
/// modulo the count); `tokens` holds its first `seq` bytes and `targets`
/// its last `seq`. The same data, sizes and seed give the same batches.
#[derive(Clone, Debug)]
pub struct Batches {
    data: Vec<i32>,
    batch: usize,
    seq: usize,
    rng: Rng,
}

impl Batches {
    /// Batches of `batch` rows of `seq` tokens from `data`.
    ///
    /// Errors: `batch` or `seq` is 0, or `data` has fewer than `seq + 1`
    /// bytes.
    pub fn new(data: &[u8], batch: usize, seq: usize, seed: u64) -> Result<Batches, DataError> {
        if batch == 0 {
            return Err(DataError::Zero { what: "batch" });
        }
        if seq == 0 {
            return Err(DataError::Zero { what: "seq" });
        }
        if data.len() < seq + 1 {
            return Err(DataError::TooShort {
                what: format!("data for sequences of {seq} tokens"),
                len: data.len(),
                needed: seq + 1,
            });
        }
        Ok(Batches {
            data: encode(data),
            batch,
            seq,
            rng: Rng::new(seed),
        })
    }

    /// Rows per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per row.
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// The next batch: `tokens` and `targets`, both `i32 [batch, seq]`,
    /// `targets[r, i] = tokens[r, i + 1]` within the row's window.
    #[expect(
        clippy::should_implement_trait,
        reason = "the stream is endless: every call returns a batch, never None"
    )]
    pub fn next(&mut self) -> (Tensor, Tensor) {
        let (b, s) = (self.batch, self.seq);
        let starts = (self.data.len() - s) as u64;
        let mut tokens = Vec::with_capacity(b * s);
        let mut targets = Vec::with_capacity(b * s);
        for _ in 0..b {
            let at = (self.rng.next_u64() % starts) as usize;
            let window = &self.data[at..at + s + 1];
            tokens.extend_from_slice(&window[..s]);
            targets.extend_from_slice(&window[1..]);
        }
        let tensor = |v| Tensor::new(vec![b, s], TensorData::I32(v)).expect("b·s elements");
        (tensor(tokens), tensor(targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytes` written to the file `name` in `dir`.
    fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn builtin_corpus_is_deterministic_ascii_and_split_90_10() {
        let a = builtin_corpus();
        assert_eq!(a, builtin_corpus());
        let total = a.train.len() + a.valid.len();
        assert!(
            (BUILTIN_BYTES..BUILTIN_BYTES + 1024).contains(&total),
            "{total}"
        );
        assert_eq!(a.valid.len(), (total as f64 * 0.1).round() as usize);
        assert!(a.train.iter().chain(&a.valid).all(|b| b.is_ascii()));
        assert!(a.source.starts_with("builtin:"));
        // The split keeps the order: train then valid is the generated text.
        let text = generate_text(BUILTIN_SEED, BUILTIN_BYTES);
        assert_eq!([a.train.as_slice(), a.valid.as_slice()].concat(), text);
        // Another seed gives other text.
        assert_ne!(generate_text(1, 4096), text[..4096.min(text.len())]);
    }

    #[test]
    fn builtin_corpus_has_structure_and_variety() {
        let c = builtin_corpus();
        let text = String::from_utf8(c.train.clone()).unwrap();
        for needle in ["Where is the ", " = ", " to the ", "\n"] {
            assert!(text.contains(needle), "{needle:?}");
        }
        // Byte entropy well under 8 bits (learnable), sentences varied.
        let mut counts = [0usize; 256];
        for &b in &c.train {
            counts[b as usize] += 1;
        }
        let n = c.train.len() as f64;
        let entropy: f64 = counts
            .iter()
            .filter(|&&k| k > 0)
            .map(|&k| -(k as f64 / n) * (k as f64 / n).log2())
            .sum();
        assert!((3.0..5.0).contains(&entropy), "{entropy}");
        let lines: std::collections::BTreeSet<&str> = text.lines().collect();
        assert!(lines.len() > 2000, "{}", lines.len());
        // Answers are right.
        for line in text.lines().filter(|l| l.contains(" = ")) {
            for fact in line.split(". ") {
                let fact = fact.trim_end_matches('.');
                let w: Vec<&str> = fact.split(' ').collect();
                let (a, b, c): (i64, i64, i64) = (
                    w[0].parse().unwrap(),
                    w[2].parse().unwrap(),
                    w[4].parse().unwrap(),
                );
                assert_eq!(if w[1] == "+" { a + b } else { a - b }, c, "{fact}");
            }
        }
    }

    #[test]
    fn batches_are_deterministic_and_targets_are_shifted_tokens() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut a = Batches::new(&data, 3, 7, 42).unwrap();
        let mut b = Batches::new(&data, 3, 7, 42).unwrap();
        let mut c = Batches::new(&data, 3, 7, 43).unwrap();
        let (mut same, mut differs) = (true, false);
        for _ in 0..5 {
            let (ta, ga) = a.next();
            let (tb, gb) = b.next();
            let (tc, _) = c.next();
            same &= ta == tb && ga == gb;
            differs |= ta != tc;
            assert_eq!(ta.shape(), [3, 7]);
            let (t, g) = (ta.to_f64_vec(), ga.to_f64_vec());
            for r in 0..3 {
                let row = &t[r * 7..][..7];
                // A window of consecutive bytes of `data`.
                for i in 1..7 {
                    assert_eq!(row[i], (row[i - 1] + 1.0) % 256.0);
                }
                assert_eq!(&g[r * 7..][..6], &row[1..]);
                assert_eq!(g[r * 7 + 6], (row[6] + 1.0) % 256.0);
            }
        }
        assert!(same && differs);
    }

    #[test]
    fn batches_cover_the_whole_data() {
        // With seq + 1 == len - 1 there are two starts; both occur, and the
        // last byte is reachable as a target.
        let data = b"abcdef";
        let mut batches = Batches::new(data, 8, 4, 0).unwrap();
        let (tokens, targets) = batches.next();
        let firsts: std::collections::BTreeSet<i32> =
            tokens.to_f64_vec().chunks(4).map(|r| r[0] as i32).collect();
        assert_eq!(firsts, [i32::from(b'a'), i32::from(b'b')].into());
        assert!(targets.to_f64_vec().contains(&f64::from(b'f')));
        // Exactly seq + 1 bytes works: one window.
        let (t, g) = Batches::new(b"xyz", 2, 2, 5).unwrap().next();
        assert_eq!(
            decode(&t.to_f64_vec().iter().map(|&v| v as i32).collect::<Vec<_>>()),
            "xyxy"
        );
        assert_eq!(g.to_f64_vec(), [121.0, 122.0, 121.0, 122.0]);
    }

    #[test]
    fn batch_errors() {
        let too_short = Batches::new(b"abcd", 1, 4, 0).unwrap_err();
        assert!(matches!(
            too_short,
            DataError::TooShort {
                len: 4,
                needed: 5,
                ..
            }
        ));
        assert!(too_short.to_string().contains("fewer than the 5 needed"));
        assert!(matches!(
            Batches::new(b"abcd", 0, 2, 0),
            Err(DataError::Zero { what: "batch" })
        ));
        assert!(matches!(
            Batches::new(b"abcd", 1, 0, 0),
            Err(DataError::Zero { what: "seq" })
        ));
    }

    #[test]
    fn load_corpus_splits_files_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = |name: &str, bytes: &[u8]| file(&dir, name, bytes);
        let text: Vec<u8> = (0..100u8).collect();
        let c = load_corpus(&tmp("ok.txt", &text), 0.1).unwrap();
        assert_eq!(c.train, text[..90]);
        assert_eq!(c.valid, text[90..]);
        assert!(c.source.contains("ok.txt"));
        let all = load_corpus(&tmp("ok.txt", &text), 0.0).unwrap();
        assert_eq!((all.train.len(), all.valid.len()), (100, 0));

        let missing = dir.path().join("birkhoff-no-such-corpus.txt");
        let err = load_corpus(&missing, 0.1).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(
            err.to_string().contains("birkhoff-no-such-corpus.txt"),
            "{err}"
        );

        let err = load_corpus(&tmp("empty.txt", b""), 0.1).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("is empty"));

        let err = load_corpus(&tmp("one.txt", b"a"), 0.0).unwrap_err();
        assert!(matches!(err, DataError::TooShort { len: 1, .. }), "{err}");
        let err = load_corpus(&tmp("short.txt", b"abc"), 0.1).unwrap_err();
        assert!(matches!(err, DataError::TooShort { len: 3, .. }), "{err}");

        for bad in [-0.1, 1.0, f64::NAN] {
            let err = load_corpus(&tmp("ok.txt", &text), bad).unwrap_err();
            assert!(matches!(err, DataError::BadFraction { .. }), "{err}");
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = "Where is the key? 3 + 4 = 7.\n";
        assert_eq!(decode(&encode(s.as_bytes())), s);
        assert_eq!(decode(&[72, 105, 300, -1]), "Hi??");
    }
}
