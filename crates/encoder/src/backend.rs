//! The model on one device. Tokenization, batching and post-processing are written once in
//! `lib.rs`; everything that depends on the burn backend sits behind [`ModelRunner`], chosen
//! at load time from the [`Device`] and [`Precision`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use burn::tensor::{Tensor, backend::Backend};
use pool_encode_model::{Attention, Cpu, EncoderBackend, ModelFolder, SentenceModel, TokenBatch};

use crate::device::{Device, Precision};
use crate::error::{EncodeError, Result};

/// A forward pass on one device, returning host `f32` values.
pub(crate) trait ModelRunner: Send + Sync {
    /// `[batch, embedding_dimension]`, row-major.
    fn sentence_embeddings(
        &self,
        batch: &TokenBatch,
        prompt_length: Option<usize>,
    ) -> Result<Vec<f32>>;

    /// `[batch, seq_len, hidden]`, row-major.
    fn token_embeddings(&self, batch: &TokenBatch) -> Result<Vec<f32>>;

    fn model(&self) -> &dyn ModelInfo;

    /// The threads a CPU runner computes on (`None` on a GPU): batches in flight run on them.
    fn cpu_threads(&self) -> Option<Arc<rayon::ThreadPool>>;
}

/// What the encoder asks of the model beyond the forward pass.
pub(crate) trait ModelInfo {
    fn folder(&self) -> &ModelFolder;
    fn embedding_dimension(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn static_vocab_size(&self) -> Option<usize>;
}

impl<B: EncoderBackend> ModelInfo for SentenceModel<B> {
    fn folder(&self) -> &ModelFolder {
        SentenceModel::folder(self)
    }
    fn embedding_dimension(&self) -> usize {
        SentenceModel::embedding_dimension(self)
    }
    fn hidden_size(&self) -> usize {
        SentenceModel::hidden_size(self)
    }
    fn static_vocab_size(&self) -> Option<usize> {
        SentenceModel::static_vocab_size(self)
    }
}

struct BurnRunner<B: EncoderBackend> {
    model: SentenceModel<B>,
    device: B::Device,
    /// The CPU's threads (`cpu:N`: N; `cpu`: every core): every forward runs inside them.
    threads: Option<Arc<rayon::ThreadPool>>,
    /// GPU backends: the count of device-thread panics when the model was loaded
    /// ([`device_panics`]); any later one means this device's results can no longer be trusted.
    device_panics_at_load: Option<u64>,
}

impl<B: EncoderBackend> BurnRunner<B> {
    fn load(
        folder: &ModelFolder,
        device: B::Device,
        threads: Option<Arc<rayon::ThreadPool>>,
        attention: Attention,
        gpu: bool,
    ) -> Result<Box<dyn ModelRunner>>
    where
        B::Device: Send + Sync,
        SentenceModel<B>: Send + Sync,
    {
        // GPU backends run work on cubecl's device threads, whose panics must be watched.
        let device_panics_at_load = gpu.then(device_panics::watch);
        let model = guard(|| SentenceModel::load(folder, &device))??.with_attention(attention);
        Ok(Box::new(BurnRunner {
            model,
            device,
            threads,
            device_panics_at_load,
        }))
    }

    /// Runs `f` on this runner's threads, turning a backend panic (a GPU allocation failure is
    /// one) into an error instead of unwinding through the caller.
    fn run<const D: usize>(&self, f: impl FnOnce() -> Tensor<B, D> + Send) -> Result<Vec<f32>> {
        self.check_device()?;
        let read = || guard(|| host_values(f()));
        let values = match &self.threads {
            Some(pool) => pool.install(read),
            None => read(),
        }?;
        // A device task that failed while this batch ran leaves its values unwritten.
        self.check_device()?;
        Ok(values)
    }

    fn check_device(&self) -> Result<()> {
        match self.device_panics_at_load {
            Some(at_load) if device_panics::count() != at_load => {
                let error = classify(format!(
                    "the GPU backend failed in this process ({}); its results can no longer be trusted: encode in a new process (pool workers are replaced on their own)",
                    device_panics::first()
                ));
                Err(error)
            }
            _ => Ok(()),
        }
    }
}

/// cubecl runs GPU work on device-service threads (named `DSU-…` / `DSD-…` in cubecl 0.10) and,
/// when a task there panics, logs it and drops the task: the kernels after it read buffers that
/// were never written, and the results come back without an error. Seen on an H100: a 24 GiB
/// allocation failed ("can't allocate buffer") and the call returned rows. A panic hook counts
/// those threads' panics, so a GPU runner can refuse to return results once one has happened.
mod device_panics {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, Once};

    static COUNT: AtomicU64 = AtomicU64::new(0);
    /// The first one's message: later ones (e.g. "Memory page 0 doesn't exist") follow from it.
    static FIRST: Mutex<String> = Mutex::new(String::new());

    /// Installs the hook (once; the previous hook still runs) and returns the current count.
    pub fn watch() -> u64 {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let thread = std::thread::current();
                let name = thread.name().unwrap_or_default();
                if name.starts_with("DSU-") || name.starts_with("DSD-") {
                    let message = info
                        .payload()
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
                    if first.is_empty() {
                        *first = super::first_line(&message);
                    }
                    COUNT.fetch_add(1, Ordering::SeqCst);
                }
                previous(info);
            }));
        });
        count()
    }

    pub fn count() -> u64 {
        COUNT.load(Ordering::SeqCst)
    }

    /// The first line of the first such panic's message.
    pub fn first() -> String {
        FIRST.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<B: EncoderBackend> ModelRunner for BurnRunner<B>
where
    B::Device: Send + Sync,
    SentenceModel<B>: Send + Sync,
{
    fn sentence_embeddings(
        &self,
        batch: &TokenBatch,
        prompt_length: Option<usize>,
    ) -> Result<Vec<f32>> {
        self.run(|| {
            self.model
                .sentence_embeddings(batch, prompt_length, &self.device)
        })
    }

    fn token_embeddings(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        self.run(|| self.model.token_embeddings(batch, &self.device))
    }

    fn model(&self) -> &dyn ModelInfo {
        &self.model
    }

    fn cpu_threads(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.threads.clone()
    }
}

fn host_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

/// Calls `f`, turning a panic into [`EncodeError::OutOfMemory`] when its message is about
/// memory and [`EncodeError::Backend`] otherwise.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        classify(first_line(&message))
    })
}

/// A backend failure's message → [`EncodeError::OutOfMemory`] when it is about device memory,
/// else [`EncodeError::Backend`].
fn classify(message: String) -> EncodeError {
    let lower = message.to_lowercase();
    if lower.contains("out of memory")
        || lower.contains("out-of-memory")
        || lower.contains("outofmemory")
        || lower.contains("buffertoobig")
        // cubecl-cuda's message for a failed device allocation
        || lower.contains("can't allocate")
    {
        EncodeError::OutOfMemory(message)
    } else {
        EncodeError::Backend(message)
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

/// Loads `folder` onto `device` in `precision`: the one place that maps devices to backends.
pub(crate) fn load(
    folder: &ModelFolder,
    device: Device,
    precision: Precision,
) -> Result<Box<dyn ModelRunner>> {
    if precision == Precision::F16
        && let Some(why) = folder
            .transformer()
            .ok()
            .and_then(|t| t.architecture.float16_refusal())
    {
        return Err(EncodeError::InvalidOption(why.into()));
    }
    match device {
        Device::Cpu { threads } => {
            if precision != Precision::F32 {
                return Err(EncodeError::InvalidOption(format!(
                    "precision {precision} needs a GPU device; the CPU backend computes in f32"
                )));
            }
            let n = threads.unwrap_or_else(rayon::current_num_threads);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("cpu-{i}"))
                .build()
                .map_err(|e| EncodeError::InvalidOption(format!("cpu:{n}: {e}")))?;
            BurnRunner::<Cpu>::load(
                folder,
                Default::default(),
                Some(Arc::new(pool)),
                Attention::Fused,
                false,
            )
        }
        Device::Cuda(index) => cuda::load(folder, index, precision),
        Device::Wgpu(index) => wgpu::load(folder, index, precision),
    }
}

/// burn keeps one float type per device and process: the first model loaded on a device fixes
/// it, and a later one in another precision would silently compute in the first one's. Refuse.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn check_one_precision<B: Backend>(
    device: &B::Device,
    index: usize,
    precision: Precision,
) -> Result<()> {
    use burn::tensor::{DType, FloatDType};
    let wanted = match precision {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    };
    let float: FloatDType = wanted.into();
    match burn::tensor::backend::set_default_dtypes::<B>(device, float, DType::I32) {
        Ok(()) => Ok(()),
        Err(_) => {
            let current: DType = burn::tensor::backend::get_device_settings::<B>(device)
                .float_dtype
                .into();
            if current == wanted {
                Ok(())
            } else {
                Err(EncodeError::InvalidOption(format!(
                    "GPU {index} already computes in {current:?} in this process; burn allows one float type per device and process (load the {precision} model in another process, e.g. a pool worker)"
                )))
            }
        }
    }
}

/// The GPU attention, its scores bounded by the largest buffer cubecl allocates on `device`
/// (its memory's page size), which a batch of long texts would otherwise pass.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn explicit_attention<R: burn::cubecl::Runtime>(device: &R::Device) -> Attention {
    let max_score_bytes = R::client(device).properties().memory.max_page_size;
    Attention::Explicit { max_score_bytes }
}

#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::cubecl::cuda::CudaRuntime;
    use half::{bf16, f16};

    use super::*;

    pub fn load(
        folder: &ModelFolder,
        index: usize,
        precision: Precision,
    ) -> Result<Box<dyn ModelRunner>> {
        // burn-cuda panics without a driver or device: ask the driver first.
        let visible = crate::gpu::cuda_device_count().map_err(EncodeError::Device)?;
        if index >= visible {
            return Err(EncodeError::Device(format!(
                "cuda:{index} does not exist: {visible} CUDA device(s) visible{}",
                crate::gpu::visible_devices_note()
            )));
        }
        let device = CudaDevice::new(index);
        check_one_precision::<Cuda>(&device, index, precision)?;
        let attention = explicit_attention::<CudaRuntime>(&device);
        match precision {
            Precision::F32 => BurnRunner::<Cuda<f32>>::load(folder, device, None, attention, true),
            Precision::F16 => BurnRunner::<Cuda<f16>>::load(folder, device, None, attention, true),
            Precision::Bf16 => {
                BurnRunner::<Cuda<bf16>>::load(folder, device, None, attention, true)
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub fn load(_: &ModelFolder, index: usize, _: Precision) -> Result<Box<dyn ModelRunner>> {
        Err(EncodeError::Device(format!(
            "device cuda:{index} needs a build with the `cuda` feature (cargo build --features cuda)"
        )))
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use burn::backend::Wgpu;
    use burn::backend::wgpu::WgpuRuntime;
    use half::f16;

    use super::*;

    pub fn load(
        folder: &ModelFolder,
        index: usize,
        precision: Precision,
    ) -> Result<Box<dyn ModelRunner>> {
        // cubecl-wgpu panics when no adapter matches: pick one from the list first.
        let device = crate::gpu::wgpu_device(index).map_err(EncodeError::Device)?;
        check_one_precision::<Wgpu>(&device, index, precision)?;
        let attention = explicit_attention::<WgpuRuntime>(&device);
        match precision {
            Precision::F32 => BurnRunner::<Wgpu<f32>>::load(folder, device, None, attention, true),
            Precision::F16 => BurnRunner::<Wgpu<f16>>::load(folder, device, None, attention, true),
            Precision::Bf16 => Err(EncodeError::InvalidOption(
                "precision bf16 is not available on wgpu (WGSL has no bf16); use f16 or f32".into(),
            )),
        }
    }
}

#[cfg(not(feature = "wgpu"))]
mod wgpu {
    use super::*;

    pub fn load(_: &ModelFolder, index: usize, _: Precision) -> Result<Box<dyn ModelRunner>> {
        Err(EncodeError::Device(format!(
            "device wgpu:{index} needs a build with the `wgpu` feature (cargo build --features wgpu)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics on cubecl device-service threads are counted and the first one kept; others are not.
    #[test]
    fn device_thread_panics_are_counted_and_classified() {
        let before = device_panics::watch();
        let panic_on = |name: &str, message: &'static str| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || panic!("{message}"))
                .unwrap()
                .join()
                .unwrap_err();
        };
        panic_on("some-other-thread", "not a device failure");
        assert_eq!(device_panics::count(), before);
        panic_on(
            "DSD-0-0",
            "can't allocate buffer of size: 25769803776\nmore",
        );
        assert_eq!(device_panics::count(), before + 1);
        assert_eq!(
            device_panics::first(),
            "can't allocate buffer of size: 25769803776"
        );
        assert!(matches!(
            classify(device_panics::first()),
            EncodeError::OutOfMemory(_)
        ));
        assert!(matches!(
            classify("Memory page 0 doesn't exist".into()),
            EncodeError::Backend(_)
        ));
    }
}
