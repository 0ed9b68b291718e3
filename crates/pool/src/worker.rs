//! The worker process: loads the model on its device, then encodes the chunks it is sent until
//! told to stop or until the coordinator disappears.
//!
//! Started by exec as
//! `pool-encode-worker SERVER MODEL DEVICE CORES PARENT_PID MAX_SEQ_LENGTH PRECISION GPU_BATCHES_IN_FLIGHT`
//! (or by any program that passes those arguments to [`main`]); `CORES` is a comma-separated CPU
//! list to pin to, or `-`; `MAX_SEQ_LENGTH` and `GPU_BATCHES_IN_FLIGHT` a number, or `-` for the
//! model's / encoder's own.
//! `pool-encode-worker --list-devices` prints the GPU devices it can use, one a line (and a
//! `# no cuda: …` line saying why CUDA is unusable, if it is): the
//! coordinator asks this way so that it never loads a GPU driver itself.
//!
//! Two threads: one receives chunks and tokenizes them, the other runs the forward passes, so
//! the next chunk is tokenized while the device encodes this one.

use std::process::ExitCode;
use std::sync::Arc;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender, IpcSharedMemory};
use nix::sys::signal::{SigHandler, Signal, signal};
use pool_encode_encoder::{
    Device, EncodeError, EncodeOptions, Precision, PreparedTexts, SentenceEncoder, SparseEncoder,
    gpu,
};

use crate::protocol::{Request, WorkerMessage};
use crate::rows::{WorkerRows, encode_slot};

/// The model a worker serves: dense or sparse, chosen by the pool.
// One per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Model {
    Dense(SentenceEncoder),
    Sparse(SparseEncoder),
}

impl Model {
    fn load(model: &str, kind: &str, device: Device, precision: Precision) -> Result<Self, String> {
        match kind {
            "dense" => {
                SentenceEncoder::load_with_precision(model, device, precision).map(Model::Dense)
            }
            "sparse" => {
                SparseEncoder::load_with_precision(model, device, precision).map(Model::Sparse)
            }
            other => return Err(format!("bad model kind {other:?}")),
        }
        .map_err(|e| e.to_string())
    }

    fn dimension(&self) -> usize {
        match self {
            Model::Dense(m) => m.embedding_dimension(),
            Model::Sparse(m) => m.embedding_dimension(),
        }
    }

    fn device(&self) -> Device {
        match self {
            Model::Dense(m) => m.device(),
            Model::Sparse(m) => m.device(),
        }
    }

    fn set_max_seq_length(&mut self, n: usize) -> pool_encode_encoder::Result<()> {
        match self {
            Model::Dense(m) => m.set_max_seq_length(n),
            Model::Sparse(m) => m.set_max_seq_length(n),
        }
    }

    fn set_concurrent_batches(&mut self, n: usize) -> pool_encode_encoder::Result<()> {
        match self {
            Model::Dense(m) => m.set_concurrent_batches(n),
            Model::Sparse(m) => m.set_concurrent_batches(n),
        }
    }

    fn prepare(
        &self,
        texts: &[String],
        options: &EncodeOptions,
    ) -> pool_encode_encoder::Result<PreparedTexts> {
        match self {
            Model::Dense(m) => m.prepare(texts, options),
            Model::Sparse(m) => m.prepare(texts, options),
        }
    }

    fn encode(
        &self,
        prepared: &PreparedTexts,
        options: &EncodeOptions,
    ) -> pool_encode_encoder::Result<WorkerRows> {
        Ok(match self {
            Model::Dense(m) => WorkerRows::Dense(m.encode_prepared(prepared, options)?),
            Model::Sparse(m) => WorkerRows::Sparse(m.encode_prepared(prepared, options)?),
        })
    }
}

/// Runs a worker; `args` are the eight arguments above (or `--list-devices`).
pub fn main(args: &[String]) -> ExitCode {
    if let [flag] = args
        && flag == "--list-devices"
    {
        for device in gpu::available_devices() {
            println!("{device}");
        }
        if let Err(why) = gpu::cuda_device_count() {
            println!("# no cuda: {why}");
        }
        return ExitCode::SUCCESS;
    }
    let [
        server,
        model,
        device,
        cores,
        parent,
        max_seq_length,
        precision,
        gpu_batches_in_flight,
        kind,
    ] = args
    else {
        eprintln!(
            "usage: pool-encode-worker SERVER MODEL DEVICE CORES PARENT_PID MAX_SEQ_LENGTH PRECISION GPU_BATCHES_IN_FLIGHT KIND (started by the pool, not by hand)"
        );
        return ExitCode::from(2);
    };
    // Die with the coordinator. The signal is tied to the coordinator's spawning thread, which
    // lives as long as the pool; the ppid check closes the race where it died before this line.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if parent.parse::<i32>().ok() != Some(nix::unistd::getppid().as_raw()) {
        return ExitCode::from(3);
    }
    // Ctrl-C in a terminal reaches the whole process group; the coordinator decides what stops.
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
    }
    let Ok(to_coordinator) = IpcSender::<WorkerMessage>::connect(server.clone()) else {
        eprintln!("pool-encode-worker: cannot connect to the coordinator");
        return ExitCode::from(4);
    };
    #[cfg(feature = "fault-injection")]
    fault_injection::maybe_crash_at_start();
    if let Err(error) = pin_to_cores(cores) {
        let _ = to_coordinator.send(WorkerMessage::StartupFailed { error });
        return ExitCode::FAILURE;
    }
    let encoder = device
        .parse::<Device>()
        .and_then(|device| Ok((device, precision.parse::<Precision>()?)))
        .map_err(|e| e.to_string())
        .and_then(|(device, precision)| Model::load(model, kind, device, precision))
        .and_then(|mut encoder| {
            if max_seq_length != "-" {
                let n = max_seq_length
                    .parse()
                    .map_err(|_| format!("bad max_seq_length {max_seq_length:?}"))?;
                encoder.set_max_seq_length(n).map_err(|e| e.to_string())?;
            }
            let gpu = !matches!(encoder.device(), Device::Cpu { .. });
            if gpu && gpu_batches_in_flight != "-" {
                let n = gpu_batches_in_flight
                    .parse()
                    .map_err(|_| format!("bad batches in flight {gpu_batches_in_flight:?}"))?;
                encoder
                    .set_concurrent_batches(n)
                    .map_err(|e| e.to_string())?;
            }
            Ok(encoder)
        });
    let encoder = match encoder {
        Ok(encoder) => encoder,
        Err(error) => {
            let _ = to_coordinator.send(WorkerMessage::StartupFailed { error });
            return ExitCode::FAILURE;
        }
    };
    let Ok((requests, incoming)) = ipc::channel::<Request>() else {
        return ExitCode::FAILURE;
    };
    let ready = WorkerMessage::Ready {
        requests,
        pid: std::process::id(),
        dimension: encoder.dimension(),
    };
    if to_coordinator.send(ready).is_err() {
        return ExitCode::FAILURE;
    }
    let encoder = Arc::new(encoder);
    let prepared = spawn_tokenizer(encoder.clone(), incoming);
    let mut slots: Vec<Option<IpcSharedMemory>> = Vec::new();
    // Ends when the tokenizer thread does: on Shutdown, or when the coordinator is gone.
    for job in prepared {
        #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
        let mut prepared = job.prepared;
        #[cfg(feature = "fault-injection")]
        {
            fault_injection::maybe_fail(&job.texts);
            if let Some(error) = fault_injection::simulated_out_of_memory(&job.texts, &job.options)
            {
                prepared = Err(error);
            }
        }
        let encoded = prepared.and_then(|p| {
            let rows = encoder.encode(&p, &job.options)?;
            Ok((rows, p.tokens()))
        });
        let message = match encoded {
            Ok((result, tokens)) => {
                let (rows, dim, nnz) = match &result {
                    WorkerRows::Dense(e) => (e.rows(), e.dim(), None),
                    WorkerRows::Sparse(s) => (s.rows(), s.dim(), Some(s.nnz())),
                };
                let region = write_slot(&mut slots, job.slot, &encode_slot(&result));
                WorkerMessage::Done {
                    task: job.task,
                    slot: job.slot,
                    rows,
                    dim,
                    nnz,
                    tokens,
                    region,
                }
            }
            // The backend failed, and the device is unusable in this process (the encoder
            // refuses results after cubecl drops failed device work). Exit, so that a fresh
            // worker takes the chunk over:
            // with smaller batches after running out of memory (the coordinator halves them),
            // else as a worker death (a chunk that keeps killing workers is split).
            Err(EncodeError::OutOfMemory(error)) => {
                eprintln!("pool-encode-worker: out of device memory: {error}; exiting");
                let _ = to_coordinator.send(WorkerMessage::OutOfMemory {
                    task: job.task,
                    error,
                });
                return ExitCode::from(70);
            }
            Err(e @ EncodeError::Backend(_)) => {
                eprintln!("pool-encode-worker: {e}; exiting so a fresh worker takes over");
                return ExitCode::from(70);
            }
            Err(e) => WorkerMessage::Failed {
                task: job.task,
                error: e.to_string(),
            },
        };
        if to_coordinator.send(message).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// A chunk tokenized and ready for the device.
struct Job {
    task: u64,
    slot: usize,
    options: EncodeOptions,
    prepared: pool_encode_encoder::Result<PreparedTexts>,
    #[cfg(feature = "fault-injection")]
    texts: Vec<String>,
}

/// Receives chunks and tokenizes them one chunk ahead of the forward passes (the channel holds
/// one finished chunk). Detached: when the coordinator is gone the process simply exits.
fn spawn_tokenizer(
    encoder: Arc<Model>,
    incoming: IpcReceiver<Request>,
) -> crossbeam_channel::Receiver<Job> {
    let (jobs, prepared) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        // A closed channel means the coordinator is gone.
        while let Ok(Request::Encode {
            task,
            slot,
            texts,
            options,
        }) = incoming.recv()
        {
            let job = Job {
                task,
                slot,
                prepared: encoder.prepare(&texts, &options),
                options,
                #[cfg(feature = "fault-injection")]
                texts,
            };
            if jobs.send(job).is_err() {
                break;
            }
        }
    });
    prepared
}

/// Writes `values` into slot `slot`, growing it when needed; returns the new region to send.
fn write_slot(
    slots: &mut Vec<Option<IpcSharedMemory>>,
    slot: usize,
    data: &[u8],
) -> Option<IpcSharedMemory> {
    let bytes = data.len();
    if slots.len() <= slot {
        slots.resize(slot + 1, None);
    }
    let mut fresh = None;
    if slots[slot].as_ref().is_none_or(|r| r.len() < bytes) {
        // Power-of-two sizes: a growing chunk size reallocates rarely.
        let region = IpcSharedMemory::from_byte(0, bytes.max(64).next_power_of_two());
        slots[slot] = Some(region.clone());
        fresh = Some(region);
    }
    let region = slots[slot].as_mut().expect("slot just ensured");
    // SAFETY: the coordinator reads this slot only after our `Done` for it and sends no other
    // task for it until it has copied the result out, so nobody reads while we write.
    let target = unsafe { region.deref_mut() };
    target[..bytes].copy_from_slice(data);
    fresh
}

fn pin_to_cores(cores: &str) -> Result<(), String> {
    if cores == "-" {
        return Ok(());
    }
    let mut set = nix::sched::CpuSet::new();
    for core in cores.split(',') {
        let core: usize = core
            .parse()
            .map_err(|_| format!("bad core list {cores:?}"))?;
        set.set(core).map_err(|e| format!("core {core}: {e}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("cannot pin to cores {cores}: {e}"))
}

#[cfg(feature = "fault-injection")]
mod fault_injection {
    /// Aborts while "loading" when `$POOL_ENCODE_FAULT_CRASH_AT_START` is set.
    pub fn maybe_crash_at_start() {
        if std::env::var_os("POOL_ENCODE_FAULT_CRASH_AT_START").is_some() {
            std::process::abort();
        }
    }

    /// With `$POOL_ENCODE_FAULT_OOM_ABOVE_BATCH=N`, a task whose batches would hold more than N
    /// texts fails as a GPU out of memory would: how the tests exercise the retry with
    /// smaller batches without a GPU.
    pub fn simulated_out_of_memory(
        texts: &[String],
        options: &pool_encode_encoder::EncodeOptions,
    ) -> Option<pool_encode_encoder::EncodeError> {
        let limit: usize = std::env::var("POOL_ENCODE_FAULT_OOM_ABOVE_BATCH")
            .ok()?
            .parse()
            .ok()?;
        let rows = options.batch_size.min(texts.len());
        (rows > limit).then(|| {
            pool_encode_encoder::EncodeError::OutOfMemory(format!(
                "simulated: batches of {rows} texts, more than {limit}"
            ))
        })
    }

    /// Aborts on a text containing `$POOL_ENCODE_FAULT_CRASH`, hangs on one containing
    /// `$POOL_ENCODE_FAULT_HANG`: how the tests make a worker crash or hang on one text.
    pub fn maybe_fail(texts: &[String]) {
        let marker = |name| std::env::var(name).ok().filter(|m| !m.is_empty());
        if let Some(m) = marker("POOL_ENCODE_FAULT_CRASH")
            && texts.iter().any(|t| t.contains(&m))
        {
            std::process::abort();
        }
        if let Some(m) = marker("POOL_ENCODE_FAULT_HANG")
            && texts.iter().any(|t| t.contains(&m))
        {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}
