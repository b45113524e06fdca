//! birkhoff: a tensor compiler that fuses DeepSeek's mHC
//! (Manifold-Constrained Hyper-Connections) layers.
//!
//! This facade crate is the entry point to the pipeline. So far it holds
//! [`npy`], tensors in and out of NumPy's `.npy` format.

pub mod npy;
