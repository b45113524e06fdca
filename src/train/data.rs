//! Corpus and byte-level batches for training (being written).
