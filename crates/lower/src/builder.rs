//! Assembling a program: buffers, kernels, names.

use birkhoff_ir::TensorType;
use birkhoff_ir::kernel::{BufferDecl, BufferId, BufferKind, Kernel, Program};

/// A program under construction.
pub struct ProgramBuilder {
    name: String,
    buffers: Vec<BufferDecl>,
    inputs: Vec<(String, BufferId)>,
    outputs: Vec<(String, BufferId)>,
    kernels: Vec<Kernel>,
    /// [`crate::LowerOptions::column_reductions`], for the templates.
    pub(crate) column_reductions: bool,
    /// [`crate::LowerOptions::reciprocal_lines`], for the templates.
    pub(crate) reciprocal_lines: bool,
}

impl ProgramBuilder {
    /// An empty program called `name`.
    pub fn new(name: &str) -> Self {
        ProgramBuilder {
            name: name.to_string(),
            buffers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            kernels: Vec::new(),
            column_reductions: false,
            reciprocal_lines: false,
        }
    }

    /// Adds a buffer.
    pub fn buffer(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        kind: BufferKind,
    ) -> BufferId {
        self.buffers.push(BufferDecl {
            name: name.into(),
            ty,
            kind,
        });
        BufferId(self.buffers.len() as u32 - 1)
    }

    /// Adds a graph input buffer.
    pub fn input(&mut self, name: &str, ty: TensorType) -> BufferId {
        let b = self.buffer(name, ty, BufferKind::Input);
        self.inputs.push((name.to_string(), b));
        b
    }

    /// Adds a graph output buffer.
    pub fn output(&mut self, name: &str, ty: TensorType) -> BufferId {
        let b = self.buffer(name, ty, BufferKind::Output);
        self.outputs.push((name.to_string(), b));
        b
    }

    /// Adds an intermediate buffer (placed by the memory plan later).
    pub fn temp(&mut self, name: impl Into<String>, ty: TensorType) -> BufferId {
        self.buffer(name, ty, BufferKind::Temp { offset: 0 })
    }

    /// A buffer's declaration.
    pub fn decl(&self, b: BufferId) -> &BufferDecl {
        &self.buffers[b.0 as usize]
    }

    /// A fresh kernel named `k<N>_<what>`.
    pub fn kernel(&self, what: &str) -> Kernel {
        Kernel::new(format!("k{}_{what}", self.kernels.len()))
    }

    /// Appends a finished kernel.
    pub fn push(&mut self, k: Kernel) {
        self.kernels.push(k);
    }

    /// The kernels so far.
    pub fn kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    /// The program, with temporaries laid out back to back (no reuse);
    /// the memory planner replaces this layout.
    pub fn finish(self) -> Program {
        let mut p = Program {
            name: self.name,
            buffers: self.buffers,
            inputs: self.inputs,
            outputs: self.outputs,
            kernels: self.kernels,
            arena_bytes: 0,
        };
        let mut offset = 0;
        for b in &mut p.buffers {
            if let BufferKind::Temp { offset: o } = &mut b.kind {
                *o = offset;
                offset += b.ty.size_bytes().div_ceil(64) * 64;
            }
        }
        p.arena_bytes = offset;
        p
    }
}
