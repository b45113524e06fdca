//! `birkhoff gpu-info`: what a CUDA device is, and its device-to-device
//! copy bandwidth — the ceiling the GPU benchmark tables divide by. With
//! `--jit`, instead: how long the driver takes to JIT-compile the PTX of
//! every zoo model, one module at a time (the first thing to run on a new
//! device, and what `scripts/gpu-check` sizes the GPU tests' time limits
//! by).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use birkhoff::dsl::zoo::{ModelArgs, build_model, models};
use birkhoff::gpu::{
    CODEGEN_ENABLED, DeviceInfo, GpuDevice, GpuError, GpuExecutable, copy_bandwidth,
};
use birkhoff::ir::DType;
use birkhoff::{CompileOptions, Target, gpu_module};

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
    if a.jit {
        return jit(a, &device);
    }
    let info = device.info();
    let bandwidth = copy_bandwidth(&device, bytes, a.runs)?;
    let gbps = bandwidth / 1e9;
    if a.json {
        println!(
            "{{{}, \"copy_gbps\": {gbps:.2}, \"copy_bytes\": {bytes}, \"copy_runs\": {}}}",
            device_fields(info),
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

/// The JSON fields that describe the device (no braces).
fn device_fields(info: &DeviceInfo) -> String {
    format!(
        "\"device\": {}, \"ordinal\": {}, \"arch\": \"{}\", \"sms\": {}, \"memory_bytes\": {}, \"l2_bytes\": {}, \"driver_version\": \"{}\"",
        json_str(&info.name),
        info.ordinal,
        info.arch(),
        info.sms,
        info.memory_bytes,
        info.l2_bytes,
        info.driver_version_string(),
    )
}

/// One module of `--jit`: a zoo model in one dtype, fused or not.
struct JitRow {
    model: &'static str,
    dtype: DType,
    fused: bool,
    /// Launches and PTX bytes (0 if code generation failed).
    launches: usize,
    ptx_bytes: usize,
    /// Seconds of birkhoff's code generation (optimizer, lowering, LLVM).
    codegen_s: f64,
    /// The load's JIT seconds, or why there are none.
    jit: Result<f64, String>,
    /// The JIT compiler's info log.
    log: String,
}

impl JitRow {
    fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.model,
            self.dtype,
            if self.fused { "fused" } else { "unfused" }
        )
    }

    fn json(&self) -> String {
        let (jit_s, error) = match &self.jit {
            Ok(s) => (format!("{s:e}"), "null".to_string()),
            Err(e) => ("null".to_string(), json_str(e)),
        };
        format!(
            "{{\"model\": \"{}\", \"dtype\": \"{}\", \"fused\": {}, \"launches\": {}, \"ptx_bytes\": {}, \"codegen_s\": {:e}, \"jit_s\": {jit_s}, \"error\": {error}, \"jit_log\": {}}}",
            self.model,
            self.dtype,
            self.fused,
            self.launches,
            self.ptx_bytes,
            self.codegen_s,
            json_str(&self.log)
        )
    }
}

/// The dtypes `--jit` builds every model in (those `scripts/gpu-check`
/// compares and the GPU tests run).
const JIT_DTYPES: [DType; 2] = [DType::F32, DType::Bf16];

/// `gpu-info --jit`: every zoo model, f32 and bf16, fused and unfused, at
/// its default shape, generated and loaded on `device` one at a time.
/// Every module is tried; the command fails at the end if any failed.
fn jit(a: &GpuInfoArgs, device: &GpuDevice) -> Result<ExitCode> {
    if !CODEGEN_ENABLED {
        return Err(GpuError::CodegenNotEnabled.into());
    }
    let info = device.info();
    if !a.json {
        println!("{info}");
        println!(
            "  JIT: the driver compiling each module's PTX (codegen: birkhoff's optimizer, lowering and LLVM)"
        );
        println!(
            "  {:<15} {:<5} {:<8} {:>8} {:>8} {:>10} {:>8}",
            "model", "dtype", "program", "launches", "PTX KiB", "codegen s", "JIT s"
        );
    }
    let mut rows = Vec::new();
    for m in models() {
        for dtype in JIT_DTYPES {
            for fused in [true, false] {
                let row = jit_one(m.name, dtype, fused, a.device, device);
                if a.json {
                    // Progress, so a run cut short still says how far it got.
                    match &row.jit {
                        Ok(s) => eprintln!("jit {}: {s:.3} s", row.label()),
                        Err(e) => eprintln!("jit {}: FAILED: {e}", row.label()),
                    }
                } else {
                    let program = if fused { "fused" } else { "unfused" };
                    match &row.jit {
                        Ok(s) => println!(
                            "  {:<15} {:<5} {program:<8} {:>8} {:>8.1} {:>10.3} {s:>8.3}",
                            row.model,
                            row.dtype.to_string(),
                            row.launches,
                            row.ptx_bytes as f64 / 1024.0,
                            row.codegen_s
                        ),
                        Err(e) => println!(
                            "  {:<15} {:<5} {program:<8} FAILED: {e}",
                            row.model,
                            row.dtype.to_string()
                        ),
                    }
                }
                rows.push(row);
            }
        }
    }
    let times: Vec<(f64, &JitRow)> = rows
        .iter()
        .filter_map(|r| r.jit.as_ref().ok().map(|&s| (s, r)))
        .collect();
    let total: f64 = times.iter().map(|(s, _)| s).sum();
    let slowest = times.iter().max_by(|x, y| x.0.total_cmp(&y.0));
    let failed: Vec<&JitRow> = rows.iter().filter(|r| r.jit.is_err()).collect();
    if a.json {
        println!(
            "{{{}, \"jit\": [{}], \"jit_modules\": {}, \"jit_failed\": {}, \"jit_total_s\": {total:e}, \"jit_max_s\": {}}}",
            device_fields(info),
            rows.iter().map(JitRow::json).collect::<Vec<_>>().join(", "),
            rows.len(),
            failed.len(),
            slowest.map_or("null".to_string(), |(s, _)| format!("{s:e}")),
        );
    } else {
        match slowest {
            Some((s, r)) => println!(
                "  {} of {} modules loaded: JIT {total:.3} s in all, slowest {s:.3} s ({})",
                times.len(),
                rows.len(),
                r.label()
            ),
            None => println!("  none of {} modules loaded", rows.len()),
        }
    }
    if let Some(first) = failed.first() {
        bail!(
            "{} of {} modules failed to generate or load; the first, {}: {}",
            failed.len(),
            rows.len(),
            first.label(),
            first.jit.as_ref().err().map_or("", String::as_str)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Generates and loads one module; never fails, the row says how it went.
fn jit_one(
    model: &'static str,
    dtype: DType,
    fused: bool,
    ordinal: usize,
    device: &GpuDevice,
) -> JitRow {
    let mut row = JitRow {
        model,
        dtype,
        fused,
        launches: 0,
        ptx_bytes: 0,
        codegen_s: 0.0,
        jit: Err(String::new()),
        log: String::new(),
    };
    let args = ModelArgs {
        dtype: Some(dtype),
        ..ModelArgs::default()
    };
    let graph = match build_model(model, &args) {
        Ok(m) => m.graph,
        Err(e) => {
            row.jit = Err(format!("building the model: {e}"));
            return row;
        }
    };
    let opts = CompileOptions {
        target: Target::Gpu,
        optimize: fused,
        device: ordinal,
        ..CompileOptions::default()
    };
    let start = Instant::now();
    let module = gpu_module(&graph, &opts);
    row.codegen_s = start.elapsed().as_secs_f64();
    let module = match module {
        Ok(m) => m,
        Err(e) => {
            row.jit = Err(format!("generating code: {e}"));
            return row;
        }
    };
    row.launches = module.launches.len();
    row.ptx_bytes = module.ptx.len();
    match GpuExecutable::load(module, device) {
        Ok(exe) => {
            row.jit = Ok(exe.jit_seconds());
            row.log = exe.jit_log().to_string();
        }
        Err(e) => row.jit = Err(e.to_string()),
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(jit: Result<f64, String>) -> JitRow {
        JitRow {
            model: "mhc-pre",
            dtype: DType::Bf16,
            fused: true,
            launches: 3,
            ptx_bytes: 4096,
            codegen_s: 0.25,
            jit,
            log: "ptxas info : Used 40 registers\n\"quoted\"".into(),
        }
    }

    #[test]
    fn a_jit_row_is_valid_json_with_its_time_or_its_error() {
        let ok: serde_json::Value = serde_json::from_str(&row(Ok(0.125)).json()).unwrap();
        assert_eq!(ok["model"], "mhc-pre");
        assert_eq!(ok["dtype"], "bf16");
        assert_eq!(ok["fused"], true);
        assert_eq!(ok["launches"], 3);
        assert_eq!(ok["ptx_bytes"], 4096);
        assert_eq!(ok["codegen_s"], 0.25);
        assert_eq!(ok["jit_s"], 0.125);
        assert!(ok["error"].is_null());
        assert_eq!(ok["jit_log"], "ptxas info : Used 40 registers\n\"quoted\"");
        let e = "CUDA: the driver rejected \"x\"";
        let failed: serde_json::Value = serde_json::from_str(&row(Err(e.into())).json()).unwrap();
        assert!(failed["jit_s"].is_null());
        assert_eq!(failed["error"], e);
        assert_eq!(row(Ok(0.0)).label(), "mhc-pre bf16 fused");
    }
}
