//! A [`GpuModule`] loaded on a device, ready to run many times, and the
//! [`GpuBackend`] that compiles kernel programs into one.
//!
//! Loading validates the module, checks it fits the device (architecture,
//! shared memory), loads the PTX (`cuModuleLoadDataEx`: the driver's JIT
//! compiles it to machine code, with its info and error logs captured and
//! its wall time measured), looks every launched entry up once,
//! allocates one device buffer per input, output and constant (constants
//! uploaded once), one arena for every temporary, and the address table
//! the kernel ABI passes to every entry (see [`crate::module`]). A run
//! checks its inputs on the host first, uploads them, launches every
//! [`Launch`](crate::Launch) in order on the device's stream, waits, and
//! downloads the outputs. Device memory is reused by every run.
//!
//! A module the driver rejects fails with [`GpuError::Jit`], which carries
//! the JIT compiler's error log on one line ([`one_line_log`]); a loaded
//! one keeps its JIT seconds and verbose info log
//! ([`GpuExecutable::jit_seconds`], [`GpuExecutable::jit_log`]).

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

/// Most characters of a JIT log that an error message keeps.
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "the CUDA runtime's; unit-tested in every build")
)]
pub(crate) const JIT_LOG_MAX_CHARS: usize = 2000;

/// The text the driver wrote into a JIT log buffer.
///
/// `filled` is the byte count the driver reported back through the
/// buffer's size option. It is not trusted: drivers differ on whether it
/// counts the terminating NUL, and it could exceed the buffer. The text
/// ends at the end of the buffer, at `filled` or at the first NUL,
/// whichever comes first; bytes that are not UTF-8 are replaced (U+FFFD),
/// and leading and trailing whitespace is trimmed.
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "the CUDA runtime's; unit-tested in every build")
)]
pub(crate) fn decode_jit_log(buf: &[u8], filled: usize) -> String {
    let bytes = &buf[..filled.min(buf.len())];
    let bytes = bytes
        .iter()
        .position(|&b| b == 0)
        .map_or(bytes, |nul| &bytes[..nul]);
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// A (multi-line) log as one line of an error message: trailing
/// whitespace cut from every line, blank lines dropped, the lines joined
/// by newlines, and every control character escaped (a newline reads
/// `\n`, a tab `\t`), as the project's other one-line errors do. At most
/// `max_chars` characters are kept; a longer log is cut between two
/// characters of the input (never inside an escape) and ends with
/// `… (N more characters)`.
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "the CUDA runtime's; unit-tested in every build")
)]
pub(crate) fn one_line_log(log: &str, max_chars: usize) -> String {
    let joined = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut kept = 0;
    let mut cut = 0;
    for c in joined.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let n = piece.chars().count();
        if cut > 0 || kept + n > max_chars {
            cut += n;
        } else {
            kept += n;
            out.push_str(&piece);
        }
    }
    if cut > 0 {
        let s = if cut == 1 { "" } else { "s" };
        out.push_str(&format!("… ({cut} more character{s})"));
    }
    out
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
    use std::ffi::{CString, c_uint, c_void};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Instant;

    use birkhoff_ir::Tensor;
    use cudarc::driver::{CudaContext, CudaSlice, DevicePtr, DriverError, result, sys};

    use super::{JIT_LOG_MAX_CHARS, LaunchTiming, decode_jit_log, one_line_log};
    use crate::error::{GpuError, JitError, Result};
    use crate::module::{GpuModule, const_storage, from_storage, to_storage};
    use crate::runtime::{GpuDevice, arch_runs_on, cuda_error, driver_error_text, elapsed_s};

    /// Dynamic shared memory a launch may use without opting in.
    const DEFAULT_SHARED_BYTES: u32 = 48 << 10;

    /// Bytes of each of the two log buffers the JIT compiler gets (info
    /// and error); a longer log is cut by the driver.
    const JIT_LOG_BYTES: usize = 64 << 10;

    /// A module the driver loaded into a context (`cuModuleLoadDataEx`),
    /// unloaded when dropped, as cudarc's own modules are.
    struct LoadedModule {
        handle: sys::CUmodule,
        ctx: Arc<CudaContext>,
    }

    // SAFETY: a CUmodule is a handle to driver state, not host memory the
    // handle's owner could race on: the driver API may use it from any
    // thread on which its context is current, and every use here binds the
    // context first (cudarc's modules are `Send` and `Sync` for the same
    // reason).
    #[expect(unsafe_code, reason = "a driver handle, usable from any thread")]
    unsafe impl Send for LoadedModule {}
    // SAFETY: as for `Send`; nothing here mutates the handle.
    #[expect(unsafe_code, reason = "a driver handle, usable from any thread")]
    unsafe impl Sync for LoadedModule {}

    impl Drop for LoadedModule {
        #[expect(unsafe_code, reason = "cuModuleUnload of the handle this value owns")]
        fn drop(&mut self) {
            // A drop cannot return errors: like cudarc, record them on the
            // context, which reports them at its next use.
            self.ctx.record_err(self.ctx.bind_to_thread());
            // Work still queued may run this module's code (a run that
            // failed halfway returns before synchronizing); its error, if
            // any, was that run's to report.
            let _ = result::ctx::synchronize();
            // SAFETY: `handle` came from a successful cuModuleLoadDataEx
            // (`load_ptx`) and is unloaded only here, once. The entries
            // looked up in it live in the same executable and are not used
            // after it drops.
            self.ctx
                .record_err(unsafe { result::module::unload(self.handle) });
        }
    }

    /// A kernel entry of a [`LoadedModule`], valid while that module is
    /// loaded: the executable holds both and uses the entry only while it
    /// lives.
    #[derive(Clone, Copy)]
    struct Entry(sys::CUfunction);

    // SAFETY: as for `LoadedModule`: a driver handle, used only with its
    // context current.
    #[expect(unsafe_code, reason = "a driver handle, usable from any thread")]
    unsafe impl Send for Entry {}
    // SAFETY: as for `Send`.
    #[expect(unsafe_code, reason = "a driver handle, usable from any thread")]
    unsafe impl Sync for Entry {}

    /// What one `cuModuleLoadDataEx` call did.
    struct JitOutcome {
        /// The module, or the driver's error.
        module: std::result::Result<LoadedModule, DriverError>,
        /// Wall time of the call.
        seconds: f64,
        /// The JIT compiler's (verbose) info log, decoded.
        info_log: String,
        /// Its error log, decoded.
        error_log: String,
    }

    /// Loads `ptx` into `ctx` through `cuModuleLoadDataEx`, with the JIT
    /// compiler's info and error logs (verbose) captured in buffers owned
    /// here and the call's wall time measured. The safe face of the one
    /// unsafe call: the source is NUL-terminated, every option value is a
    /// buffer that outlives the call or an integer in a pointer-sized slot,
    /// and the byte counts the driver writes back are checked against the
    /// buffers ([`decode_jit_log`]).
    #[expect(
        unsafe_code,
        reason = "cuModuleLoadDataEx has no safe wrapper in cudarc; the wrapper is this function"
    )]
    fn load_ptx(ctx: &Arc<CudaContext>, ptx: &str) -> Result<JitOutcome> {
        let src = CString::new(ptx).map_err(|e| {
            GpuError::InvalidModule(format!(
                "the PTX holds a NUL byte at offset {}",
                e.nul_position()
            ))
        })?;
        ctx.bind_to_thread()
            .map_err(|e| cuda_error("cannot make the device's context current", &e))?;
        let mut info = vec![0u8; JIT_LOG_BYTES];
        let mut error = vec![0u8; JIT_LOG_BYTES];
        use sys::CUjit_option as O;
        let mut options = [
            O::CU_JIT_INFO_LOG_BUFFER,
            O::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            O::CU_JIT_ERROR_LOG_BUFFER,
            O::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            O::CU_JIT_LOG_VERBOSE,
        ];
        // One pointer-sized slot per option: a buffer's address, or an
        // integer cast to a pointer (the driver API's convention). The
        // driver overwrites each size slot with the bytes it wrote.
        let mut values: [*mut c_void; 5] = [
            info.as_mut_ptr().cast(),
            std::ptr::without_provenance_mut(info.len()),
            error.as_mut_ptr().cast(),
            std::ptr::without_provenance_mut(error.len()),
            std::ptr::without_provenance_mut(1),
        ];
        let mut handle: sys::CUmodule = std::ptr::null_mut();
        let start = Instant::now();
        // SAFETY: `handle` is writable; `src` is a NUL-terminated string
        // that outlives the call (the driver reads it as PTX text); the two
        // arrays hold `options.len()` entries each; each log buffer is
        // writable for the size its size slot gives (the driver writes at
        // most that many bytes, the NUL included) and lives until after
        // the call; the context is current on this thread.
        let r = unsafe {
            sys::cuModuleLoadDataEx(
                &mut handle,
                src.as_ptr().cast(),
                options.len() as c_uint,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        let seconds = start.elapsed().as_secs_f64();
        let info_log = decode_jit_log(&info, values[1].addr());
        let error_log = decode_jit_log(&error, values[3].addr());
        let module = r.result().map(|()| LoadedModule {
            handle,
            ctx: ctx.clone(),
        });
        Ok(JitOutcome {
            module,
            seconds,
            info_log,
            error_log,
        })
    }

    /// Looks entry `name` up in `module` (its context current).
    #[expect(
        unsafe_code,
        reason = "cuModuleGetFunction on a module this crate loaded"
    )]
    fn entry(module: &LoadedModule, name: &str) -> Result<Entry> {
        let c = CString::new(name).map_err(|_| {
            GpuError::InvalidModule(format!("entry name {name:?} holds a NUL byte"))
        })?;
        // SAFETY: `module.handle` is loaded for as long as `module` lives
        // (`LoadedModule`'s invariant).
        let f = unsafe { result::module::get_function(module.handle, c) }
            .map_err(|e| cuda_error(&format!("cannot find entry {name} in the loaded PTX"), &e))?;
        Ok(Entry(f))
    }

    /// Lets `f` use up to `bytes` of dynamic shared memory.
    #[expect(
        unsafe_code,
        reason = "cuFuncSetAttribute on an entry of a module this crate loaded"
    )]
    fn opt_in_shared(f: Entry, bytes: u32) -> std::result::Result<(), DriverError> {
        // SAFETY: `f` belongs to a module that is loaded (the caller holds
        // it), and the attribute takes a byte count.
        unsafe {
            result::function::set_function_attribute(
                f.0,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                i32::try_from(bytes).unwrap_or(i32::MAX),
            )
        }
    }

    /// Device memory of an executable; one run at a time holds it.
    struct State {
        /// Inputs, outputs and constants by buffer index (`None`: a temp,
        /// which lives in the arena).
        buffers: Vec<Option<CudaSlice<u8>>>,
        /// Every temporary, at its offset; kept alive for the table.
        _arena: Option<CudaSlice<u8>>,
        /// The kernel ABI's argument: one device address per buffer.
        _table: CudaSlice<u64>,
        /// The table's device address, the one parameter of every entry.
        table_addr: sys::CUdeviceptr,
    }

    /// A module loaded on a device.
    ///
    /// `run` takes `&self`: concurrent calls from several threads take
    /// turns on the executable's device memory (a mutex).
    pub struct GpuExecutable {
        module: GpuModule,
        device: GpuDevice,
        /// One entry per launch, in launch order (valid while `_loaded` is).
        functions: Vec<Entry>,
        /// The module as the driver loaded it.
        _loaded: LoadedModule,
        /// Wall time of loading the PTX (the JIT), seconds.
        jit_seconds: f64,
        /// The JIT compiler's verbose info log.
        jit_log: String,
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
            let jit = load_ptx(&device.ctx, &module.ptx)?;
            let loaded = jit.module.map_err(|e| {
                let log = if jit.error_log.is_empty() {
                    &jit.info_log
                } else {
                    &jit.error_log
                };
                GpuError::Jit(Box::new(JitError {
                    module: module.name.clone(),
                    target: module.arch.clone(),
                    device: info.arch(),
                    cause: driver_error_text(&e),
                    log: one_line_log(log, JIT_LOG_MAX_CHARS),
                }))
            })?;
            // One lookup per entry; the largest dynamic shared memory any
            // launch of it asks for decides its opt-in.
            let mut by_entry: BTreeMap<&str, (Entry, u32)> = BTreeMap::new();
            for l in &module.launches {
                if !by_entry.contains_key(l.entry.as_str()) {
                    by_entry.insert(&l.entry, (entry(&loaded, &l.entry)?, 0));
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
                    opt_in_shared(*f, *shared).map_err(|e| {
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
                .map(|l| by_entry[l.entry.as_str()].0)
                .collect();
            let state = allocate(&module, device)?;
            Ok(GpuExecutable {
                module,
                device: device.clone(),
                functions,
                _loaded: loaded,
                jit_seconds: jit.seconds,
                jit_log: jit.info_log,
                state: Mutex::new(state),
            })
        }

        /// Wall-clock seconds the driver took to load the module's PTX:
        /// its JIT compilation to the device's machine code, every entry
        /// at once (one `cuModuleLoadDataEx`). Birkhoff's own code
        /// generation is not included, nor are entry lookups or memory
        /// allocation. The driver may serve a module it compiled before
        /// from its compute cache (`CUDA_CACHE_DISABLE=1` turns that off),
        /// so a repeated load can take almost no time.
        pub fn jit_seconds(&self) -> f64 {
            self.jit_seconds
        }

        /// The JIT compiler's verbose info log for this module, trimmed
        /// (often empty; with `ptxas`-style lines such as registers used
        /// and spill stores per entry where the driver writes them).
        pub fn jit_log(&self) -> &str {
            &self.jit_log
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
            reason = "launching generated code: nothing can check kernel arguments"
        )]
        fn launch(&self, state: &State, i: usize) -> Result<()> {
            let l = &self.module.launches[i];
            let failed = |e: DriverError| {
                cuda_error(
                    &format!(
                        "cannot launch {} (grid {:?}, block {:?}, {} bytes shared)",
                        l.entry, l.grid, l.block, l.shared_bytes
                    ),
                    &e,
                )
            };
            self.device.ctx.bind_to_thread().map_err(failed)?;
            // cuLaunchKernel takes the address of each parameter's value.
            let mut table = state.table_addr;
            let mut params = [std::ptr::from_mut(&mut table).cast::<c_void>()];
            // SAFETY: the entry belongs to the module this executable keeps
            // loaded, and its context is current. Every entry takes exactly
            // one parameter, the address table (the kernel ABI of
            // `crate::module`), passed by the address of a local that
            // outlives the call (the driver copies parameters at launch);
            // the table holds one address per buffer of this module, each
            // pointing into memory this executable owns, sized by the
            // buffer plan that code generation indexed against (`validate`
            // checked the temps fit the arena). The memory outlives the
            // launch: it is freed only when the executable drops, on the
            // same stream, after the work queued before it.
            unsafe {
                result::launch_kernel(
                    self.functions[i].0,
                    (l.grid[0], l.grid[1], l.grid[2]),
                    (l.block[0], l.block[1], l.block[2]),
                    l.shared_bytes,
                    self.device.stream.cu_stream(),
                    &mut params,
                )
            }
            .map_err(failed)
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
        let table_addr = table.device_ptr(s).0;
        Ok(State {
            buffers,
            _arena: arena,
            _table: table,
            table_addr,
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

        /// Seconds the driver took to load the PTX.
        pub fn jit_seconds(&self) -> f64 {
            match self.never {}
        }

        /// The JIT compiler's info log.
        pub fn jit_log(&self) -> &str {
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

#[cfg(test)]
mod tests {
    use super::{decode_jit_log, one_line_log};

    #[test]
    fn a_log_ends_at_the_reported_size_the_first_nul_or_the_buffer() {
        let mut buf = b"ptxas error : bad\0garbage".to_vec();
        // The reported size counting the NUL, not counting it, or past it.
        assert_eq!(decode_jit_log(&buf, 18), "ptxas error : bad");
        assert_eq!(decode_jit_log(&buf, 17), "ptxas error : bad");
        assert_eq!(decode_jit_log(&buf, 25), "ptxas error : bad");
        // Less than the text: cut there.
        assert_eq!(decode_jit_log(&buf, 5), "ptxas");
        // More than the buffer, and no NUL at all: the whole buffer.
        buf.truncate(11);
        assert_eq!(decode_jit_log(&buf, 1 << 20), "ptxas error");
        // Nothing written: the zeroed buffer decodes to nothing.
        assert_eq!(decode_jit_log(&[0u8; 64], 0), "");
        assert_eq!(decode_jit_log(&[0u8; 64], 64), "");
        assert_eq!(decode_jit_log(&[], 10), "");
    }

    #[test]
    fn a_log_is_trimmed_and_invalid_utf8_replaced() {
        assert_eq!(decode_jit_log(b"\n  info : ok \r\n\0", 99), "info : ok");
        assert_eq!(decode_jit_log(b"a\xffb", 3), "a\u{fffd}b");
    }

    #[test]
    fn a_log_becomes_one_line_with_control_characters_escaped() {
        let log = "ptxas application ptx input, line 12; error   : Unknown symbol 'x'\r\n\n\
                   ptxas fatal   : Ptx assembly aborted due to errors   \n";
        let line = one_line_log(log, 2000);
        assert_eq!(
            line,
            "ptxas application ptx input, line 12; error   : Unknown symbol 'x'\\n\
             ptxas fatal   : Ptx assembly aborted due to errors"
        );
        assert!(!line.chars().any(char::is_control), "{line}");
        assert_eq!(one_line_log("a\tb\0c\u{1b}", 100), "a\\tb\\u{0}c\\u{1b}");
        assert_eq!(one_line_log("", 100), "");
        assert_eq!(one_line_log(" \n\n", 100), "");
    }

    #[test]
    fn a_long_log_is_cut_between_characters_and_says_how_much_is_left() {
        let log = "x".repeat(50);
        assert_eq!(one_line_log(&log, 50), log);
        assert_eq!(one_line_log(&log, 10), "xxxxxxxxxx… (40 more characters)");
        // Never inside an escape: `\n` is kept whole or not at all.
        assert_eq!(one_line_log("abc\ndef", 4), "abc… (5 more characters)");
        assert_eq!(one_line_log("abc\ndef", 5), "abc\\n… (3 more characters)");
        // Characters, not bytes.
        assert_eq!(one_line_log("ééé", 2), "éé… (1 more character)");
        assert_eq!(one_line_log(&log, 0), "… (50 more characters)");
    }

    #[test]
    fn a_rejected_module_says_which_where_why_and_what_the_jit_said() {
        let e = |log: &str| {
            crate::GpuError::Jit(Box::new(crate::JitError {
                module: "mhc_pre".into(),
                target: "sm_90".into(),
                device: "sm_90".into(),
                cause: "CUDA_ERROR_INVALID_PTX (a PTX JIT compilation failed)".into(),
                log: log.into(),
            }))
        };
        assert_eq!(
            e("ptxas fatal : bad").to_string(),
            "CUDA: the driver rejected the PTX of @mhc_pre (target sm_90) on sm_90: \
             CUDA_ERROR_INVALID_PTX (a PTX JIT compilation failed); JIT log: ptxas fatal : bad"
        );
        assert!(e("").to_string().ends_with("; JIT log: (empty)"));
    }
}
