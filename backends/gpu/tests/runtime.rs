//! The runtime on a machine without a CUDA driver: every entry point
//! returns a clear error and none panics. Where a driver is installed the
//! no-driver assertions are skipped (the device tests live in the
//! workspace's `tests/gpu.rs`), but nothing here may panic either way.

use std::collections::BTreeMap;

use birkhoff_gpu::{
    ARTIFACT_VERSION, BufferInfo, CodegenOptions, GpuBackend, GpuDevice, GpuError, GpuExecutable,
    GpuModule, Launch, copy_bandwidth, device_count, driver_present,
};
use birkhoff_ir::kernel::{Backend, BufferDecl, BufferId, BufferKind, Program};
use birkhoff_ir::{DType, TensorType};

/// Whether this machine has no driver, so the no-driver paths can be
/// checked; says why the checks are skipped otherwise.
fn no_driver() -> bool {
    if driver_present() {
        eprintln!("a CUDA driver is installed: skipping the no-driver assertions");
        return false;
    }
    true
}

/// The error a driverless machine gives for a runtime entry point: no
/// driver, or no runtime at all in a build without the `cuda` feature.
fn assert_no_driver<T: std::fmt::Debug>(what: &str, r: Result<T, GpuError>) {
    match r {
        Err(e @ GpuError::NoDriver) if cfg!(feature = "cuda") => {
            assert_eq!(
                e.to_string(),
                "no CUDA driver found (libcuda could not be loaded)"
            );
        }
        Err(GpuError::CudaNotEnabled) if !cfg!(feature = "cuda") => {}
        other => panic!("{what}: expected the no-driver error, got {other:?}"),
    }
}

fn tiny_program() -> Program {
    let ty = TensorType::new(DType::F32, [4]);
    Program {
        name: "tiny".into(),
        buffers: vec![
            BufferDecl {
                name: "x".into(),
                ty: ty.clone(),
                kind: BufferKind::Input,
            },
            BufferDecl {
                name: "y".into(),
                ty,
                kind: BufferKind::Output,
            },
        ],
        inputs: vec![("x".into(), BufferId(0))],
        outputs: vec![("y".into(), BufferId(1))],
        kernels: Vec::new(),
        arena_bytes: 0,
    }
}

fn tiny_module() -> GpuModule {
    let (buffers, inputs, outputs) = GpuModule::buffer_plan(&tiny_program());
    GpuModule {
        version: ARTIFACT_VERSION,
        name: "tiny".into(),
        ptx: ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k0(\n.param .u64 p\n)\n{\nret;\n}\n".into(),
        arch: "sm_90".into(),
        buffers,
        inputs,
        outputs,
        arena_bytes: 0,
        launches: vec![Launch {
            entry: "k0".into(),
            kernel: "k0".into(),
            grid: [1, 1, 1],
            block: [4, 1, 1],
            shared_bytes: 0,
        }],
    }
}

#[test]
fn the_buffer_plan_follows_the_program() {
    let m = tiny_module();
    m.validate().unwrap();
    assert_eq!(
        m.buffers[0],
        BufferInfo {
            name: "x".into(),
            dtype: "f32".into(),
            shape: vec![4],
            role: "input".into(),
            values: Vec::new(),
            offset: 0,
        }
    );
    assert_eq!(m.inputs, vec![("x".to_string(), 0)]);
    assert_eq!(m.outputs, vec![("y".to_string(), 1)]);
}

#[test]
fn opening_a_device_without_a_driver_fails_cleanly() {
    if no_driver() {
        assert_no_driver("GpuDevice::open", GpuDevice::open(0));
        assert_no_driver("GpuDevice::open(7)", GpuDevice::open(7));
        assert_no_driver("device_count", device_count());
    }
}

#[test]
fn every_entry_point_fails_cleanly_without_a_driver() {
    if !no_driver() {
        return;
    }
    assert_no_driver(
        "GpuBackend::compile",
        GpuBackend(CodegenOptions::default()).compile(&tiny_program()),
    );
    // Loading and timing need an open device, which is the error above;
    // through the device a module would load on:
    assert_no_driver(
        "loading a module",
        GpuDevice::open(0).and_then(|d| GpuExecutable::load(tiny_module(), &d)),
    );
    assert_no_driver(
        "copy_bandwidth",
        GpuDevice::open(0).and_then(|d| copy_bandwidth(&d, 1 << 20, 3)),
    );
}

#[test]
fn the_backend_is_named_nvptx() {
    assert_eq!(GpuBackend::default().name(), "nvptx");
}

#[test]
fn a_device_runs_the_tiny_module_when_present() {
    // On a machine with a GPU: the launch plan loads and runs end to end
    // (the entry does nothing, so y reads back as the zeros it was
    // allocated with), inputs are checked first, and bad arguments fail.
    let Ok(device) = GpuDevice::open(0) else {
        return;
    };
    let exe = GpuExecutable::load(tiny_module(), &device).unwrap();
    let x = birkhoff_ir::Tensor::from_f64(TensorType::new(DType::F32, [4]), &[1.0; 4]).unwrap();
    let out = exe
        .run(&BTreeMap::from([("x".to_string(), x.clone())]))
        .unwrap();
    assert_eq!(out[0].0, "y");
    assert_eq!(out[0].1.to_f64_vec(), vec![0.0; 4]);
    assert!(matches!(
        exe.run(&BTreeMap::new()),
        Err(GpuError::Input { .. })
    ));
    let inputs = BTreeMap::from([("x".to_string(), x)]);
    assert_eq!(exe.time(&inputs, 1, 3).unwrap().len(), 3);
    assert_eq!(exe.time_launches(&inputs, 0, 2).unwrap()[0].times.len(), 2);
    assert!(exe.time(&inputs, 0, 0).is_err());
    assert!(copy_bandwidth(&device, 0, 1).is_err());
    assert!(copy_bandwidth(&device, 1 << 20, 2).unwrap() > 0.0);
    assert_eq!(exe.to_string(), tiny_module().ptx);
}
