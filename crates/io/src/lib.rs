//! Files in and out of birkhoff.
//!
//! * [`npy`]: tensors in NumPy's `.npy` format, read without ever
//!   panicking on a malformed file and written byte for byte as
//!   `numpy.save` writes them;
//! * [`safetensors`]: named tensors and metadata in one file
//!   (checkpoints, imported weights);
//! * [`write_atomic`]: a file appears complete under its name or not at
//!   all, which every writer in the workspace (outputs, checkpoints,
//!   artifacts, blessed test files) goes through.
//!
//! ```
//! use birkhoff_io::npy::{read_npy, write_npy};
//! use birkhoff_ir::{Tensor, TensorData};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("x.npy");
//! let t = Tensor::new([3], TensorData::I32(vec![1, 2, 3]))?;
//! write_npy(&path, &t)?;
//! assert_eq!(read_npy(&path)?, t);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod atomic;
mod memory;
pub mod npy;
mod read;
pub mod safetensors;

pub use atomic::{Staged, stage, write_atomic, write_atomically};
pub use memory::{available_memory, ensure_memory};
pub use read::{MAX_TEXT_BYTES, read_bounded, read_text};
