//! The Cranelift CPU backend (being written).
