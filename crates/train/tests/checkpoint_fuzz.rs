//! Corrupted checkpoints: flipped, cut, spliced or extended safetensors
//! files are refused with an error naming the file, never a panic, a hang
//! or an allocation sized by the corruption. `PROPTEST_CASES` widens the
//! search (CI runs more cases than `cargo test`).

use std::sync::OnceLock;

use birkhoff::dsl::lm::{LmConfig, build_lm};
use birkhoff::dsl::zoo::Connection;
use birkhoff_train::{TrainOptions, Trainer, checkpoint_step};
use proptest::prelude::*;

/// A valid checkpoint of a tiny model, made once.
fn valid_checkpoint() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let cfg = LmConfig {
            connection: Connection::Mhc,
            layers: 1,
            hidden: 8,
            heads: 2,
            ffn: 16,
            batch: 1,
            seq: 4,
            sinkhorn_iters: 2,
            ..LmConfig::default()
        };
        let model = build_lm(&cfg).expect("builds");
        let trainer = Trainer::new(&model, &TrainOptions::default()).expect("compiles");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        trainer.save(&path).expect("saves");
        std::fs::read(&path).unwrap()
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bits: u8,
    },
    Cut {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Overwrite 8 bytes with a little-endian number (header lengths,
    /// offsets, counts).
    Number {
        at: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (
            any::<usize>(),
            prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 40), any::<u64>()]
        )
            .prop_map(|(at, value)| Mutation::Number { at, value }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip { at, bits } => {
            let i = at % bytes.len();
            bytes[i] ^= bits;
        }
        Mutation::Cut { at } => bytes.truncate(at % bytes.len()),
        Mutation::Insert { at, bytes: b } => {
            let i = at % bytes.len();
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Number { at, value } => {
            let i = (at % bytes.len()).min(bytes.len().saturating_sub(8));
            let end = (i + 8).min(bytes.len());
            bytes[i..end].copy_from_slice(&value.to_le_bytes()[..end - i]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        birkhoff_testkit::proptest_cases(64)
    ))]

    #[test]
    fn corrupted_checkpoints_are_errors(mutations in prop::collection::vec(mutation(), 1..4)) {
        let mut bytes = valid_checkpoint().to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        match checkpoint_step(&path) {
            // A change that leaves the file valid (a flipped bit in a
            // parameter's value, another digit in the step) reads.
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("fuzz.safetensors"), "{}", msg);
                prop_assert_eq!(msg.lines().count(), 1, "{}", msg);
            }
        }
    }
}

#[test]
fn the_valid_checkpoint_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    std::fs::write(&path, valid_checkpoint()).unwrap();
    assert_eq!(checkpoint_step(&path).unwrap(), 0);
}
