//! A [`GpuModule`] loaded on a device, ready to run many times, and the
//! [`GpuBackend`] that compiles kernel programs into one.
//!
//! Loading validates the module, checks it fits the device (architecture,
//! shared memory), loads the PTX, looks every launched entry up once,
//! allocates one device buffer per input, output and constant (constants
//! uploaded once), one arena for every temporary, and the address table
//! the kernel ABI passes to every entry (see [`crate::module`]). A run
//! checks its inputs on the host first, uploads them, launches every
//! [`Launch`](crate::Launch) in order on the device's stream, waits, and
//! downloads the outputs. Device memory is reused by every run.

use std::fmt;

use birkhoff_ir::kernel::{Artifact, Backend, Program};

use crate::error::{GpuError, Result};
use crate::runtime::GpuDevice;
use crate::{CodegenOptions, compile_module};

#[cfg(feature = "cuda")]
pub use imp::GpuExecutable;
#[cfg(not(feature = "cuda"))]
pub use stub::GpuExecutable;

/// Device times of one launch over several runs.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTiming {
    /// The PTX entry.
    pub entry: String,
    /// The kernel IR kernel it came from.
    pub kernel: String,
    /// Seconds, one per timed run.
    pub times: Vec<f64>,
}

impl LaunchTiming {
    /// The median time in seconds.
    pub fn median_s(&self) -> f64 {
        crate::runtime::median(&self.times)
    }
}

/// The GPU backend: kernel IR to PTX (needs the `gpu` feature), loaded on
/// CUDA device 0.
#[derive(Clone, Debug, Default)]
pub struct GpuBackend(pub CodegenOptions);

impl Backend for GpuBackend {
    type Artifact = GpuExecutable;
    type Error = GpuError;

    fn name(&self) -> &'static str {
        "nvptx"
    }

    /// Opens the device first, so a machine without a driver says so
    /// before any code is generated.
    fn compile(&self, program: &Program) -> Result<GpuExecutable> {
        let device = GpuDevice::open(0)?;
        let module = compile_module(program, &self.0)?;
        GpuExecutable::load(module, &device)
    }
}

impl fmt::Display for GpuExecutable {
    /// The PTX.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.module().ptx)
    }
}

impl Artifact for GpuExecutable {
    type Error = GpuError;

    fn run(
        &self,
        inputs: &std::collections::BTreeMap<String, birkhoff_ir::Tensor>,
    ) -> Result<Vec<(String, birkhoff_ir::Tensor)>> {
        GpuExecutable::run(self, inputs)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, MutexGuard};

    use birkhoff_ir::Tensor;
    use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg, sys};
    use cudarc::nvrtc::Ptx;

    use super::LaunchTiming;
    use crate::error::{GpuError, Result};
    use crate::module::{GpuModule, const_storage, from_storage, to_storage};
    use crate::runtime::{GpuDevice, arch_runs_on, cuda_error, elapsed_s};

    /// Dynamic shared memory a launch may use without opting in.
    const DEFAULT_SHARED_BYTES: u32 = 48 << 10;

    /// Device memory of an executable; one run at a time holds it.
    struct State {
        /// Inputs, outputs and constants by buffer index (`None`: a temp,
        /// which lives in the arena).
        buffers: Vec<Option<CudaSlice<u8>>>,
        /// Every temporary, at its offset; kept alive for the table.
        _arena: Option<CudaSlice<u8>>,
        /// The kernel ABI's argument: one device address per buffer.
        table: CudaSlice<u64>,
    }

    /// A module loaded on a device.
    ///
    /// `run` takes `&self`: concurrent calls from several threads take
    /// turns on the executable's device memory (a mutex).
    pub struct GpuExecutable {
        module: GpuModule,
        device: GpuDevice,
        /// One function per launch, in launch order.
        functions: Vec<CudaFunction>,
        state: Mutex<State>,
    }

    impl std::fmt::Debug for GpuExecutable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GpuExecutable")
                .field("module", &self.module.name)
                .field("launches", &self.module.launches.len())
                .field("device", &self.device.info().name)
                .finish_non_exhaustive()
        }
    }

    impl GpuExecutable {
        /// Loads `module` on `device`: validates it, checks it fits the
        /// device, loads its PTX and allocates its memory (see the module
        /// docs).
        pub fn load(module: GpuModule, device: &GpuDevice) -> Result<GpuExecutable> {
            module.validate()?;
            let info = device.info();
            if arch_runs_on(&module.arch, info.compute_capability) == Some(false) {
                return Err(GpuError::Cuda(format!(
                    "@{} was compiled for {}, which cannot run on device {} ({}, {})",
                    module.name,
                    module.arch,
                    info.ordinal,
                    info.name,
                    info.arch()
                )));
            }
            let ptx = Ptx::from_src(module.ptx.clone());
            let cu_module = device.ctx.load_module(ptx).map_err(|e| {
                cuda_error(
                    &format!(
                        "the driver rejected the PTX of @{} (target {}) on {}",
                        module.name,
                        module.arch,
                        info.arch()
                    ),
                    &e,
                )
            })?;
            // One lookup per entry; the largest dynamic shared memory any
            // launch of it asks for decides its opt-in.
            let mut by_entry: BTreeMap<&str, (CudaFunction, u32)> = BTreeMap::new();
            for l in &module.launches {
                if !by_entry.contains_key(l.entry.as_str()) {
                    let f = cu_module.load_function(&l.entry).map_err(|e| {
                        cuda_error(
                            &format!("cannot find entry {} in the loaded PTX", l.entry),
                            &e,
                        )
                    })?;
                    by_entry.insert(&l.entry, (f, 0));
                }
                let slot = by_entry.get_mut(l.entry.as_str()).expect("inserted above");
                slot.1 = slot.1.max(l.shared_bytes);
            }
            for (entry, (f, shared)) in &by_entry {
                if *shared > info.max_shared_bytes_per_block {
                    return Err(GpuError::Cuda(format!(
                        "entry {entry} needs {shared} bytes of shared memory per block; {} allows {}",
                        info.name, info.max_shared_bytes_per_block
                    )));
                }
                if *shared > DEFAULT_SHARED_BYTES {
                    f.set_attribute(
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        i32::try_from(*shared).unwrap_or(i32::MAX),
                    )
                    .map_err(|e| {
                        cuda_error(
                            &format!("cannot give entry {entry} {shared} bytes of shared memory"),
                            &e,
                        )
                    })?;
                }
            }
            let functions = module
                .launches
                .iter()
                .map(|l| by_entry[l.entry.as_str()].0.clone())
                .collect();
            let state = allocate(&module, device)?;
            Ok(GpuExecutable {
                module,
                device: device.clone(),
                functions,
                state: Mutex::new(state),
            })
        }

        /// The loaded module.
        pub fn module(&self) -> &GpuModule {
            &self.module
        }

        /// The device it runs on.
        pub fn device(&self) -> &GpuDevice {
            &self.device
        }

        /// Runs on `inputs` (one tensor per graph input, by name); returns
        /// the outputs by name, in signature order. Inputs are checked
        /// against the buffer plan before anything touches the device.
        pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
            self.module.check_inputs(inputs)?;
            let mut state = self.lock();
            self.upload(&mut state, inputs)?;
            self.launch_all(&state)?;
            self.device.synchronize().map_err(|e| self.failed_run(&e))?;
            self.download(&state)
        }

        /// Device seconds of each of `runs` runs of the whole launch
        /// sequence, after `warmup` untimed runs. Inputs are uploaded once,
        /// outputs are not downloaded; runs are queued back to back and
        /// timed with events on the stream.
        pub fn time(
            &self,
            inputs: &BTreeMap<String, Tensor>,
            warmup: usize,
            runs: usize,
        ) -> Result<Vec<f64>> {
            let state = self.prepare_timing(inputs, warmup, runs)?;
            let events = (0..=runs)
                .map(|_| self.device.timing_event())
                .collect::<Result<Vec<_>>>()?;
            self.device.record(&events[0])?;
            for e in &events[1..] {
                self.launch_all(&state)?;
                self.device.record(e)?;
            }
            self.device.synchronize().map_err(|e| self.failed_run(&e))?;
            events.windows(2).map(|w| elapsed_s(&w[0], &w[1])).collect()
        }

        /// Device seconds of every launch, one [`LaunchTiming`] per launch
        /// in order, over `runs` runs after `warmup` untimed ones. An event
        /// between every two launches: the sum is close to, not exactly,
        /// what [`time`](Self::time) measures.
        pub fn time_launches(
            &self,
            inputs: &BTreeMap<String, Tensor>,
            warmup: usize,
            runs: usize,
        ) -> Result<Vec<LaunchTiming>> {
            let state = self.prepare_timing(inputs, warmup, runs)?;
            let n = self.module.launches.len();
            let mut out: Vec<LaunchTiming> = self
                .module
                .launches
                .iter()
                .map(|l| LaunchTiming {
                    entry: l.entry.clone(),
                    kernel: l.kernel.clone(),
                    times: Vec::with_capacity(runs),
                })
                .collect();
            let events = (0..=n)
                .map(|_| self.device.timing_event())
                .collect::<Result<Vec<_>>>()?;
            for _ in 0..runs {
                self.device.record(&events[0])?;
                for (i, e) in events[1..].iter().enumerate() {
                    self.launch(&state, i)?;
                    self.device.record(e)?;
                }
                self.device.synchronize().map_err(|e| self.failed_run(&e))?;
                for (i, w) in events.windows(2).enumerate() {
                    out[i].times.push(elapsed_s(&w[0], &w[1])?);
                }
            }
            Ok(out)
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            // A run that failed halfway leaves nothing half-updated on the
            // host side, so a poisoned lock is still usable.
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        fn prepare_timing(
            &self,
            inputs: &BTreeMap<String, Tensor>,
            warmup: usize,
            runs: usize,
        ) -> Result<MutexGuard<'_, State>> {
            if runs == 0 {
                return Err(GpuError::InvalidArgument(
                    "timing needs at least one run".into(),
                ));
            }
            self.module.check_inputs(inputs)?;
            let mut state = self.lock();
            self.upload(&mut state, inputs)?;
            for _ in 0..warmup {
                self.launch_all(&state)?;
            }
            self.device.synchronize().map_err(|e| self.failed_run(&e))?;
            Ok(state)
        }

        /// Copies `inputs` (already checked) into their device buffers.
        fn upload(&self, state: &mut State, inputs: &BTreeMap<String, Tensor>) -> Result<()> {
            for (name, idx) in &self.module.inputs {
                let buf = state.buffers[*idx].as_mut().expect("inputs have buffers");
                self.device
                    .stream
                    .memcpy_htod(&to_storage(&inputs[name]), buf)
                    .map_err(|e| cuda_error(&format!("cannot upload input '{name}'"), &e))?;
            }
            Ok(())
        }

        fn download(&self, state: &State) -> Result<Vec<(String, Tensor)>> {
            let types = self.module.output_types()?;
            let mut out = Vec::with_capacity(types.len());
            for ((name, idx), (_, ty)) in self.module.outputs.iter().zip(types) {
                let buf = state.buffers[*idx].as_ref().expect("outputs have buffers");
                let bytes = self
                    .device
                    .stream
                    .clone_dtoh(buf)
                    .map_err(|e| cuda_error(&format!("cannot download output '{name}'"), &e))?;
                out.push((name.clone(), from_storage(&ty, &bytes)?));
            }
            Ok(out)
        }

        fn launch_all(&self, state: &State) -> Result<()> {
            (0..self.functions.len()).try_for_each(|i| self.launch(state, i))
        }

        #[expect(
            unsafe_code,
            reason = "launching generated code: cudarc cannot check kernel arguments"
        )]
        fn launch(&self, state: &State, i: usize) -> Result<()> {
            let l = &self.module.launches[i];
            let cfg = LaunchConfig {
                grid_dim: (l.grid[0], l.grid[1], l.grid[2]),
                block_dim: (l.block[0], l.block[1], l.block[2]),
                shared_mem_bytes: l.shared_bytes,
            };
            let mut args = self.device.stream.launch_builder(&self.functions[i]);
            args.arg(&state.table);
            // SAFETY: every entry takes exactly one parameter, the address
            // table (the kernel ABI of `crate::module`); the table holds one
            // address per buffer of this module, each pointing into memory
            // this executable owns, sized by the buffer plan that code
            // generation indexed against (`validate` checked the temps fit
            // the arena). The memory outlives the launch: it is freed only
            // when the executable drops, on the same stream.
            unsafe { args.launch(cfg) }.map_err(|e| {
                cuda_error(
                    &format!(
                        "cannot launch {} (grid {:?}, block {:?}, {} bytes shared)",
                        l.entry, l.grid, l.block, l.shared_bytes
                    ),
                    &e,
                )
            })?;
            Ok(())
        }

        /// The error of a launch sequence that failed on the device (the
        /// driver reports it at the next synchronization).
        fn failed_run(&self, e: &GpuError) -> GpuError {
            GpuError::Cuda(format!(
                "running @{} ({} launches) failed: {e}",
                self.module.name,
                self.module.launches.len()
            ))
        }
    }

    /// Allocates an executable's device memory: a buffer per input,
    /// output and constant (constants filled), the arena, and the address
    /// table.
    fn allocate(module: &GpuModule, device: &GpuDevice) -> Result<State> {
        let s = &device.stream;
        let alloc = |bytes: usize, what: &str| {
            // Zeroed, so no kernel can ever read stale memory; at least
            // one byte, because the driver rejects empty allocations.
            s.alloc_zeros::<u8>(bytes.max(1))
                .map_err(|e| cuda_error(&format!("cannot allocate {bytes} bytes for {what}"), &e))
        };
        let arena = if module.arena_bytes > 0 {
            Some(alloc(module.arena_bytes, "the arena of temporaries")?)
        } else {
            None
        };
        let arena_base = arena.as_ref().map(|a| a.device_ptr(s).0);
        let mut buffers = Vec::with_capacity(module.buffers.len());
        let mut table = Vec::with_capacity(module.buffers.len());
        for b in &module.buffers {
            let what = format!("{} buffer '{}'", b.role, b.name);
            if b.role == "temp" {
                // `validate` checked the temp lies inside the arena.
                let base = arena_base.expect("a temp implies a non-empty arena");
                table.push(base + b.offset as u64);
                buffers.push(None);
                continue;
            }
            let bytes = b.size_bytes().expect("validated");
            let mut buf = alloc(bytes, &what)?;
            if b.role == "const" {
                s.memcpy_htod(&const_storage(b)?, &mut buf)
                    .map_err(|e| cuda_error(&format!("cannot upload {what}"), &e))?;
            }
            table.push(buf.device_ptr(s).0);
            buffers.push(Some(buf));
        }
        let table = if table.is_empty() {
            // A program without buffers still passes a valid pointer.
            s.alloc_zeros::<u64>(1)
        } else {
            s.clone_htod(&table)
        }
        .map_err(|e| cuda_error("cannot upload the buffer address table", &e))?;
        Ok(State {
            buffers,
            _arena: arena,
            table,
        })
    }
}

#[cfg(not(feature = "cuda"))]
mod stub {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use birkhoff_ir::Tensor;

    use super::LaunchTiming;
    use crate::error::{GpuError, Result};
    use crate::module::GpuModule;
    use crate::runtime::GpuDevice;

    /// A module loaded on a device; this build cannot load one.
    #[derive(Debug)]
    pub struct GpuExecutable {
        never: Infallible,
    }

    impl GpuExecutable {
        /// Fails with [`GpuError::CudaNotEnabled`].
        pub fn load(module: GpuModule, device: &GpuDevice) -> Result<GpuExecutable> {
            let _ = (module, device);
            Err(GpuError::CudaNotEnabled)
        }

        /// The loaded module.
        pub fn module(&self) -> &GpuModule {
            match self.never {}
        }

        /// The device it runs on.
        pub fn device(&self) -> &GpuDevice {
            match self.never {}
        }

        /// Runs on `inputs`.
        pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
            let _ = inputs;
            match self.never {}
        }

        /// Device seconds per run.
        pub fn time(
            &self,
            inputs: &BTreeMap<String, Tensor>,
            warmup: usize,
            runs: usize,
        ) -> Result<Vec<f64>> {
            let _ = (inputs, warmup, runs);
            match self.never {}
        }

        /// Device seconds per launch.
        pub fn time_launches(
            &self,
            inputs: &BTreeMap<String, Tensor>,
            warmup: usize,
            runs: usize,
        ) -> Result<Vec<LaunchTiming>> {
            let _ = (inputs, warmup, runs);
            match self.never {}
        }
    }
}
