//! Which GPUs this process can use, found without letting a backend panic: burn-cuda panics
//! when libcuda is missing and cubecl-wgpu when no adapter matches, so both are asked first.

use crate::device::Device;

/// Every GPU device this build can use, in order: `cuda:0..` then `wgpu:0..`.
pub fn available_devices() -> Vec<Device> {
    let cuda = cuda_device_count().unwrap_or(0);
    let mut devices: Vec<Device> = (0..cuda).map(Device::Cuda).collect();
    devices.extend((0..wgpu_adapter_count()).map(Device::Wgpu));
    devices
}

/// `(CUDA_VISIBLE_DEVICES=…)` when that variable is set, for error messages.
pub fn visible_devices_note() -> String {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .map(|v| format!(" (CUDA_VISIBLE_DEVICES={v:?})"))
        .unwrap_or_default()
}

/// CUDA devices visible to this process (after `CUDA_VISIBLE_DEVICES`), asked of the driver
/// directly; an error says why there is no usable driver.
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> Result<usize, String> {
    static COUNT: std::sync::OnceLock<Result<usize, String>> = std::sync::OnceLock::new();
    COUNT.get_or_init(probe_cuda).clone()
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_device_count() -> Result<usize, String> {
    Err("this build has no `cuda` feature".into())
}

#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<usize, String> {
    use libloading::{Library, Symbol};
    const CUDA_SUCCESS: i32 = 0;
    const CUDA_ERROR_NO_DEVICE: i32 = 100;
    // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what any CUDA
    // program does; the library is kept loaded for the life of the process (burn-cuda uses it).
    let library = unsafe { Library::new("libcuda.so.1").or_else(|_| Library::new("libcuda.so")) }
        .map_err(|e| format!("no CUDA driver: {e}"))?;
    // SAFETY: both symbols have these C signatures in every CUDA driver API since 2.0.
    let count = unsafe {
        let init: Symbol<unsafe extern "C" fn(u32) -> i32> = library
            .get(b"cuInit\0")
            .map_err(|e| format!("libcuda has no cuInit: {e}"))?;
        let get_count: Symbol<unsafe extern "C" fn(*mut i32) -> i32> = library
            .get(b"cuDeviceGetCount\0")
            .map_err(|e| format!("libcuda has no cuDeviceGetCount: {e}"))?;
        match init(0) {
            CUDA_SUCCESS => {}
            CUDA_ERROR_NO_DEVICE => return Ok(0),
            code => {
                return Err(format!(
                    "the CUDA driver failed to initialise (error {code})"
                ));
            }
        }
        let mut count = 0i32;
        match get_count(&mut count) {
            CUDA_SUCCESS => count.max(0) as usize,
            code => return Err(format!("cuDeviceGetCount failed (error {code})")),
        }
    };
    std::mem::forget(library);
    Ok(count)
}

/// One wgpu adapter: what `wgpu:K` names, and the cubecl device that selects it.
#[cfg(feature = "wgpu")]
pub struct WgpuAdapter {
    pub name: String,
    pub device: burn::backend::wgpu::WgpuDevice,
}

/// The adapters of the graphics API cubecl uses, `wgpu:K` being the K-th; "other" adapters are
/// left out, as cubecl's own selection does.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapters() -> Vec<WgpuAdapter> {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    use wgpu::DeviceType;

    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters =
        pollster::block_on(instance.enumerate_adapters(AutoGraphicsApi::backend().into()));
    // cubecl numbers adapters within their type: the second discrete GPU is DiscreteGpu(1).
    let mut seen = [0usize; 4];
    adapters
        .into_iter()
        .filter_map(|adapter| {
            let info = adapter.get_info();
            let mut next = |slot: usize| {
                seen[slot] += 1;
                seen[slot] - 1
            };
            let device = match info.device_type {
                DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(next(0)),
                DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(next(1)),
                DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(next(2)),
                // cubecl reaches only the first CPU adapter.
                DeviceType::Cpu if next(3) == 0 => WgpuDevice::Cpu,
                _ => return None,
            };
            Some(WgpuAdapter {
                name: format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
                device,
            })
        })
        .collect()
}

#[cfg(feature = "wgpu")]
fn wgpu_adapter_count() -> usize {
    wgpu_adapters().len()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_adapter_count() -> usize {
    0
}

/// The cubecl device for `wgpu:index`, or why there is none.
#[cfg(feature = "wgpu")]
pub(crate) fn wgpu_device(index: usize) -> Result<burn::backend::wgpu::WgpuDevice, String> {
    let mut adapters = wgpu_adapters();
    if index >= adapters.len() {
        let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
        return Err(format!(
            "wgpu:{index} does not exist: {} adapter(s) found {names:?} (a Vulkan driver such as Mesa's lavapipe provides one)",
            adapters.len()
        ));
    }
    Ok(adapters.swap_remove(index).device)
}
