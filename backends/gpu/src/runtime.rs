//! The CUDA device: finding the driver, opening a device, reporting what
//! it is, and the device-to-device copy bandwidth benchmarks divide by.
//!
//! The driver library is loaded at run time (cudarc's `dynamic-loading`),
//! so every build links; on a machine without it [`GpuDevice::open`]
//! returns [`GpuError::NoDriver`] instead of letting cudarc panic. Builds
//! without the `cuda` feature keep the same types, and every entry point
//! returns [`GpuError::CudaNotEnabled`].

#[cfg(feature = "cuda")]
pub use imp::*;
#[cfg(not(feature = "cuda"))]
pub use stub::*;

use std::fmt;

/// What a device is, for reports and launch limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The CUDA device ordinal.
    pub ordinal: usize,
    /// The device's name (`NVIDIA H200`).
    pub name: String,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Global memory, in bytes.
    pub memory_bytes: u64,
    /// Compute capability (major, minor): (9, 0) for Hopper.
    pub compute_capability: (u32, u32),
    /// The driver's CUDA version as the driver reports it (12080 for 12.8).
    pub driver_version: u32,
    /// Most shared memory one block may use, static and dynamic together,
    /// after opting in (bytes).
    pub max_shared_bytes_per_block: u32,
    /// L2 cache, in bytes.
    pub l2_bytes: u64,
}

impl DeviceInfo {
    /// The PTX target of this device (`sm_90`).
    pub fn arch(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }

    /// The driver's CUDA version as `major.minor` (`12.8`).
    pub fn driver_version_string(&self) -> String {
        format!(
            "{}.{}",
            self.driver_version / 1000,
            self.driver_version % 1000 / 10
        )
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device {}: {} ({}, {} SMs, {:.1} GiB, driver {})",
            self.ordinal,
            self.name,
            self.arch(),
            self.sms,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.driver_version_string()
        )
    }
}

/// Whether a PTX target (`sm_90`, `sm_90a`) can run on a device of compute
/// capability `cc`: PTX is compiled forward to newer devices, except for
/// the architecture-specific `a` targets, which run only on their own.
pub fn arch_runs_on(arch: &str, cc: (u32, u32)) -> Option<bool> {
    let digits = arch.strip_prefix("sm_")?;
    let (digits, specific) = match digits.strip_suffix('a') {
        Some(d) => (d, true),
        None => (digits, false),
    };
    let v: u32 = digits.parse().ok()?;
    let (major, minor) = (v / 10, v % 10);
    Some(if specific {
        cc == (major, minor)
    } else {
        cc >= (major, minor)
    })
}

/// The median of some timings (0 for none).
pub(crate) fn median(times: &[f64]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::{Arc, OnceLock};

    use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError, result, sys};

    use super::{DeviceInfo, median};
    use crate::error::{GpuError, Result};

    /// A driver error as a one-line message: what failed, the error's name
    /// and the driver's description of it.
    pub(crate) fn cuda_error(what: &str, e: &DriverError) -> GpuError {
        GpuError::Cuda(format!("{what}: {}", driver_error_text(e)))
    }

    /// A driver error's name and, where the driver has one, its
    /// description: `CUDA_ERROR_INVALID_PTX (a PTX JIT compilation failed)`.
    pub(crate) fn driver_error_text(e: &DriverError) -> String {
        let desc = e
            .error_string()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if desc.is_empty() {
            format!("{:?}", e.0)
        } else {
            format!("{:?} ({desc})", e.0)
        }
    }

    /// Whether the CUDA driver library can be loaded on this machine.
    pub fn driver_present() -> bool {
        static PRESENT: OnceLock<bool> = OnceLock::new();
        *PRESENT.get_or_init(probe_driver)
    }

    #[expect(
        unsafe_code,
        reason = "cudarc marks the probe unsafe because loading a library runs its initializers; libcuda's are the driver's own"
    )]
    fn probe_driver() -> bool {
        // SAFETY: see the reason above; nothing else is called.
        unsafe { sys::is_culib_present() }
    }

    /// Whether the loaded driver exports `symbol`. cudarc panics when it
    /// calls a missing one, so calls newer than the oldest driver we
    /// support are checked first.
    #[expect(
        unsafe_code,
        reason = "looking a symbol up in the driver library; it is not called"
    )]
    fn has_symbol(symbol: &str) -> bool {
        // SAFETY: only called after `driver_present`; the pointer type is
        // irrelevant because the symbol is not used.
        unsafe { sys::culib().get::<*const ()>(symbol.as_bytes()).is_ok() }
    }

    /// The number of CUDA devices the driver reports.
    pub fn device_count() -> Result<usize> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        result::init().map_err(|e| cuda_error("cannot initialize the CUDA driver", &e))?;
        let n =
            result::device::get_count().map_err(|e| cuda_error("cannot count CUDA devices", &e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    #[expect(
        unsafe_code,
        reason = "cudarc has no safe wrapper for cuDriverGetVersion; it writes one int"
    )]
    fn driver_version() -> Result<u32> {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: `v` is a valid, writable int for the call's duration.
        let r = unsafe { sys::cuDriverGetVersion(&mut v) };
        r.result()
            .map_err(|e| cuda_error("cannot read the driver version", &e))?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// An open CUDA device: its context and the stream every launch,
    /// copy and timing event of this crate goes through. Cheap to clone.
    #[derive(Clone, Debug)]
    pub struct GpuDevice {
        pub(crate) ctx: Arc<CudaContext>,
        pub(crate) stream: Arc<CudaStream>,
        info: DeviceInfo,
    }

    impl GpuDevice {
        /// Opens device `ordinal`: loads the driver, initializes it and
        /// retains the device's primary context. Fails with
        /// [`GpuError::NoDriver`] when no driver library is installed and
        /// [`GpuError::Cuda`] when the driver cannot initialize or has no
        /// such device.
        pub fn open(ordinal: usize) -> Result<GpuDevice> {
            let count = device_count()?;
            if count == 0 {
                return Err(GpuError::Cuda(
                    "the CUDA driver is loaded but reports no devices".into(),
                ));
            }
            if ordinal >= count {
                return Err(GpuError::Cuda(format!(
                    "no CUDA device {ordinal}: the driver reports {count} device(s) (0..{count})"
                )));
            }
            let ctx = CudaContext::new(ordinal)
                .map_err(|e| cuda_error(&format!("cannot open CUDA device {ordinal}"), &e))?;
            let stream = ctx.default_stream();
            let attr = |a: sys::CUdevice_attribute, what: &str| -> Result<u32> {
                let v = ctx.attribute(a).map_err(|e| {
                    cuda_error(&format!("cannot read the {what} of device {ordinal}"), &e)
                })?;
                Ok(u32::try_from(v).unwrap_or(0))
            };
            use sys::CUdevice_attribute as A;
            let info = DeviceInfo {
                ordinal,
                name: ctx
                    .name()
                    .map_err(|e| cuda_error("cannot read the device name", &e))?,
                sms: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count")?,
                memory_bytes: ctx
                    .total_mem()
                    .map_err(|e| cuda_error("cannot read the device memory size", &e))?
                    as u64,
                compute_capability: (
                    attr(
                        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                        "compute capability",
                    )?,
                    attr(
                        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                        "compute capability",
                    )?,
                ),
                driver_version: driver_version()?,
                max_shared_bytes_per_block: attr(
                    A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                    "shared memory limit",
                )?,
                l2_bytes: u64::from(attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "L2 size")?),
            };
            Ok(GpuDevice { ctx, stream, info })
        }

        /// What the device is.
        pub fn info(&self) -> &DeviceInfo {
            &self.info
        }

        /// Waits for everything queued on the device's stream.
        pub fn synchronize(&self) -> Result<()> {
            self.stream
                .synchronize()
                .map_err(|e| cuda_error("synchronizing the stream", &e))
        }

        /// A timing event (recorded on the device's stream by the caller).
        pub(crate) fn timing_event(&self) -> Result<CudaEvent> {
            self.ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| cuda_error("cannot create a timing event", &e))
        }

        /// Records `event` at the current end of the stream.
        pub(crate) fn record(&self, event: &CudaEvent) -> Result<()> {
            event
                .record(&self.stream)
                .map_err(|e| cuda_error("cannot record a timing event", &e))
        }
    }

    /// Seconds between two recorded events, waiting for the second.
    pub(crate) fn elapsed_s(start: &CudaEvent, end: &CudaEvent) -> Result<f64> {
        static HAS_V2: OnceLock<bool> = OnceLock::new();
        let err = |e: DriverError| cuda_error("cannot read a timing event", &e);
        end.synchronize().map_err(err)?;
        // cudarc's CUDA 13 bindings call cuEventElapsedTime_v2, which
        // drivers before 12.8 lack; older drivers get the original entry
        // point (same signature and meaning).
        if *HAS_V2.get_or_init(|| has_symbol("cuEventElapsedTime_v2")) {
            return Ok(f64::from(start.elapsed_ms(end).map_err(err)?) / 1e3);
        }
        elapsed_v1(start, end)
    }

    /// [`elapsed_s`] through the driver's original `cuEventElapsedTime`.
    #[expect(
        unsafe_code,
        reason = "calling cuEventElapsedTime from the driver library directly, with the signature the CUDA headers declare"
    )]
    fn elapsed_v1(start: &CudaEvent, end: &CudaEvent) -> Result<f64> {
        type ElapsedTime =
            unsafe extern "C" fn(*mut f32, sys::CUevent, sys::CUevent) -> sys::CUresult;
        let err = |e: DriverError| cuda_error("cannot read a timing event", &e);
        start.context().bind_to_thread().map_err(err)?;
        let mut ms = 0f32;
        // SAFETY: the symbol has the declared signature in every driver
        // that exports it; both events are live, recorded and complete,
        // and `ms` is writable for the call's duration.
        let r = unsafe {
            let f = sys::culib()
                .get::<ElapsedTime>(b"cuEventElapsedTime")
                .map_err(|e| {
                    GpuError::Cuda(format!("the driver has no cuEventElapsedTime: {e}"))
                })?;
            f(&mut ms, start.cu_event(), end.cu_event())
        };
        r.result().map_err(err)?;
        Ok(f64::from(ms) / 1e3)
    }

    /// Device-to-device copy bandwidth, in bytes per second (bytes read
    /// plus bytes written): the median of `runs` copies of `bytes` bytes,
    /// each timed with events on the device's stream, after one untimed
    /// copy. This is the ceiling memory-bound kernels are compared with.
    pub fn copy_bandwidth(device: &GpuDevice, bytes: usize, runs: usize) -> Result<f64> {
        if bytes == 0 || runs == 0 {
            return Err(GpuError::InvalidArgument(format!(
                "copy_bandwidth needs at least one byte and one run (got {bytes} bytes, {runs} runs)"
            )));
        }
        let s = &device.stream;
        let alloc = |what: &str| {
            s.alloc_zeros::<u8>(bytes).map_err(|e| {
                cuda_error(&format!("cannot allocate the {bytes}-byte copy {what}"), &e)
            })
        };
        let src = alloc("source")?;
        let mut dst = alloc("destination")?;
        let copy = |dst: &mut cudarc::driver::CudaSlice<u8>| {
            s.memcpy_dtod(&src, dst)
                .map_err(|e| cuda_error("device-to-device copy", &e))
        };
        copy(&mut dst)?;
        let events = (0..=runs)
            .map(|_| device.timing_event())
            .collect::<Result<Vec<_>>>()?;
        device.record(&events[0])?;
        for e in &events[1..] {
            copy(&mut dst)?;
            device.record(e)?;
        }
        let times = events
            .windows(2)
            .map(|w| elapsed_s(&w[0], &w[1]))
            .collect::<Result<Vec<_>>>()?;
        let t = median(&times);
        if t <= 0.0 {
            return Err(GpuError::Cuda(
                "the copy took no measurable time; use more bytes".into(),
            ));
        }
        Ok(2.0 * bytes as f64 / t)
    }
}

#[cfg(not(feature = "cuda"))]
mod stub {
    use std::convert::Infallible;

    use super::DeviceInfo;
    use crate::error::{GpuError, Result};

    /// Whether the CUDA driver library can be loaded (never, in a build
    /// without the `cuda` feature).
    pub fn driver_present() -> bool {
        false
    }

    /// The number of CUDA devices (fails: no `cuda` feature).
    pub fn device_count() -> Result<usize> {
        Err(GpuError::CudaNotEnabled)
    }

    /// An open CUDA device; this build cannot open one.
    #[derive(Clone, Debug)]
    pub struct GpuDevice {
        never: Infallible,
    }

    impl GpuDevice {
        /// Fails with [`GpuError::CudaNotEnabled`].
        pub fn open(ordinal: usize) -> Result<GpuDevice> {
            let _ = ordinal;
            Err(GpuError::CudaNotEnabled)
        }

        /// What the device is.
        pub fn info(&self) -> &DeviceInfo {
            match self.never {}
        }

        /// Waits for everything queued on the device.
        pub fn synchronize(&self) -> Result<()> {
            match self.never {}
        }
    }

    /// Device-to-device copy bandwidth (fails: no `cuda` feature).
    pub fn copy_bandwidth(device: &GpuDevice, bytes: usize, runs: usize) -> Result<f64> {
        let _ = (bytes, runs);
        match device.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_targets_run_forward_except_specific_ones() {
        assert_eq!(arch_runs_on("sm_90", (9, 0)), Some(true));
        assert_eq!(arch_runs_on("sm_80", (9, 0)), Some(true));
        assert_eq!(arch_runs_on("sm_90", (8, 9)), Some(false));
        assert_eq!(arch_runs_on("sm_90a", (9, 0)), Some(true));
        assert_eq!(arch_runs_on("sm_90a", (10, 0)), Some(false));
        assert_eq!(arch_runs_on("compute_90", (9, 0)), None);
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }
}
