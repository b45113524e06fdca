//! `birkhoff gpu-info`: what a CUDA device is, and its device-to-device
//! copy bandwidth — the ceiling the GPU benchmark tables divide by.

use std::process::ExitCode;

use anyhow::{Result, bail};
use birkhoff::gpu::{GpuDevice, copy_bandwidth};

use crate::args::GpuInfoArgs;
use crate::bench::json_str;

pub fn main(a: &GpuInfoArgs) -> Result<ExitCode> {
    if a.copy_mib == 0 || a.runs == 0 {
        bail!("--copy-mib and --runs must be at least 1");
    }
    let Some(bytes) = a.copy_mib.checked_mul(1 << 20) else {
        bail!("--copy-mib {} is too large", a.copy_mib);
    };
    let device = GpuDevice::open(a.device)?;
    let info = device.info();
    let bandwidth = copy_bandwidth(&device, bytes, a.runs)?;
    let gbps = bandwidth / 1e9;
    if a.json {
        println!(
            "{{\"device\": {}, \"ordinal\": {}, \"arch\": \"{}\", \"sms\": {}, \"memory_bytes\": {}, \"l2_bytes\": {}, \"driver_version\": \"{}\", \"copy_gbps\": {gbps:.2}, \"copy_bytes\": {bytes}, \"copy_runs\": {}}}",
            json_str(&info.name),
            info.ordinal,
            info.arch(),
            info.sms,
            info.memory_bytes,
            info.l2_bytes,
            info.driver_version_string(),
            a.runs
        );
    } else {
        println!("{info}");
        println!(
            "  device-to-device copy of {} MiB: {gbps:.1} GB/s (bytes read + written, median of {} copies)",
            a.copy_mib, a.runs
        );
    }
    Ok(ExitCode::SUCCESS)
}
