//! A pool of worker processes, each pinned to a device, that encodes texts in input order:
//! sentence-transformers' `start_multi_process_pool` / `encode(pool=…)` /
//! `stop_multi_process_pool`, without its hangs.
//!
//! ```no_run
//! use pool_encode_pool::{Pool, PoolConfig, PoolEncodeOptions};
//! let pool = Pool::start(PoolConfig::new("models/all-MiniLM-L6-v2", vec!["cpu:1".parse()?, "cpu:1".parse()?]))?;
//! let first = pool.encode(&["a text", "another"], &PoolEncodeOptions::default())?;
//! let again = pool.encode(&["the pool is reused"], &PoolEncodeOptions::default())?;
//! pool.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Workers are separate processes started by exec (`pool-encode-worker`, found next to the
//! running program or through `$POOL_ENCODE_WORKER`), bootstrapped over ipc-channel. Each call's
//! texts are cut into chunks; idle workers pull the next chunk, and results are put back in
//! input order. `dispatcher.rs` describes what happens when a worker dies or hangs.

mod chunks;
mod dispatcher;
pub mod memory;
mod protocol;
mod rows;
mod sorted_stream;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
pub use pool_encode_encoder::model::ModelKind;
use pool_encode_encoder::{
    Device, Embeddings, EncodeOptions, Precision, SparseEmbeddings, default_concurrent_batches,
};

pub use chunks::FixedChunks;
use dispatcher::{Control, Dispatcher, Task, TaskOutcome};
pub use rows::Rows;
pub use sorted_stream::SortedEncodeStream;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    #[error("cannot start a worker: {0}")]
    Spawn(String),
    #[error("no worker could start: {0}")]
    Startup(String),
    #[error("the pool was stopped")]
    Stopped,
    #[error("encoding failed in a worker: {0}")]
    Encode(String),
    #[error("text {index} kills every worker that encodes it (text starts with {preview:?})")]
    PoisonText { index: usize, preview: String },
    #[error("pool protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    InvalidOption(String),
}

/// How the pool is made; [`PoolConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub model: PathBuf,
    /// Dense (`SentenceTransformer`) or sparse (`SparseEncoder`, SPLADE) model. A model
    /// folder's `modules.json` must agree; a plain `*ForMaskedLM` folder takes either.
    pub kind: ModelKind,
    /// One worker process per entry (repeats allowed). Empty: every CUDA GPU the worker program
    /// finds, else one single-threaded CPU worker per core, or fewer with more threads each
    /// where memory is short ([`default_devices`]; [`Pool::devices`] tells which).
    pub devices: Vec<Device>,
    /// The worker executable and the arguments that come before the worker's own (a program
    /// that embeds the worker, like `pool-encode worker`, names its subcommand here).
    /// Default: `$POOL_ENCODE_WORKER`, else `pool-encode-worker` next to the running program.
    pub worker_command: Option<(PathBuf, Vec<String>)>,
    /// The float type the workers compute in (f16 / bf16 on GPU devices).
    pub precision: Precision,
    /// Truncation length for every worker (ST's `model.max_seq_length = …`); default: the model's.
    pub max_seq_length: Option<usize>,
    /// Batches each GPU worker keeps in flight ([`SentenceEncoder::set_concurrent_batches`]);
    /// default: the encoder's. CPU workers keep the encoder's default (one per thread).
    ///
    /// [`SentenceEncoder::set_concurrent_batches`]: pool_encode_encoder::SentenceEncoder::set_concurrent_batches
    pub gpu_batches_in_flight: Option<usize>,
    /// Extra environment variables for the worker processes.
    pub worker_env: Vec<(String, String)>,
    /// The options the calls to come will use, as far as known when the pool starts: their
    /// batch size and token budget size the default CPU workers to the memory, and decide
    /// whether explicit CPU devices are warned about ([`memory`]).
    pub planned_options: EncodeOptions,
    /// Chunks queued at a worker at once, so it never waits for its next chunk.
    pub in_flight_per_worker: usize,
    /// A chunk held longer than this means its worker hangs: it is killed and replaced.
    pub task_timeout: Duration,
    /// A worker that has not loaded its model by then is killed and replaced.
    pub startup_timeout: Duration,
    /// How long `stop` waits for workers to exit before killing them.
    pub stop_timeout: Duration,
    /// Worker deaths a chunk may cause before it is split to find the text at fault.
    pub max_task_deaths: u32,
}

impl PoolConfig {
    pub fn new(model: impl Into<PathBuf>, devices: Vec<Device>) -> Self {
        PoolConfig {
            model: model.into(),
            kind: ModelKind::Dense,
            devices,
            worker_command: None,
            precision: Precision::F32,
            max_seq_length: None,
            gpu_batches_in_flight: None,
            worker_env: Vec::new(),
            planned_options: EncodeOptions::default(),
            in_flight_per_worker: 2,
            task_timeout: Duration::from_secs(600),
            startup_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(5),
            max_task_deaths: 2,
        }
    }
}

/// The devices used when none are given: every CUDA GPU that `worker_program` can see, else one
/// single-threaded CPU worker per core this process may run on, or fewer workers with more
/// threads each where the memory does not hold a worker per core at the batches `config`
/// plans ([`memory::plan_cpu_workers`]). The worker program is asked (`--list-devices`) so
/// that the coordinator itself never loads a GPU driver.
pub fn default_devices(
    worker_program: &(PathBuf, Vec<String>),
    config: &PoolConfig,
) -> Vec<Device> {
    planned_default_devices(worker_program, MemoryPlan::of(config).as_ref())
}

/// [`default_devices`] with the memory plan at hand (`None`: the model cannot be read).
fn planned_default_devices(
    worker_program: &(PathBuf, Vec<String>),
    plan: Option<&MemoryPlan>,
) -> Vec<Device> {
    let gpus: Vec<Device> = list_gpus(worker_program)
        .0
        .into_iter()
        .filter(|d| matches!(d, Device::Cuda(_)))
        .collect();
    if !gpus.is_empty() {
        return gpus;
    }
    let Some(plan) = plan else {
        // The workers will say what is wrong with the model folder.
        return vec![Device::Cpu { threads: Some(1) }; available_cores()];
    };
    let devices =
        memory::plan_cpu_workers(plan.cores, plan.available, &plan.model, plan.batch_tokens);
    if devices.len() < plan.cores {
        eprintln!(
            "pool-encode: {} CPU workers for {} cores: memory ({}) holds no more workers of this model at batches of up to {} tokens ({} each at most); --devices overrides",
            devices.len(),
            plan.cores,
            gib(plan.available.unwrap_or(0)),
            plan.batch_tokens,
            gib(plan
                .model
                .worker_bytes(plan.cores.div_ceil(devices.len()), plan.batch_tokens)),
        );
    }
    devices
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What sizing CPU workers to the memory needs to know.
struct MemoryPlan {
    cores: usize,
    available: Option<u64>,
    model: memory::ModelFootprint,
    batch_tokens: usize,
}

impl MemoryPlan {
    /// `None` if the model folder cannot be read (the workers will say why).
    fn of(config: &PoolConfig) -> Option<MemoryPlan> {
        let folder = pool_encode_encoder::model::ModelFolder::load(&config.model).ok()?;
        let max_seq_length = config
            .max_seq_length
            .or(folder.max_seq_length())
            .unwrap_or(memory::UNCUT_TEXT_TOKENS);
        Some(MemoryPlan {
            cores: available_cores(),
            available: memory::available_memory(),
            model: memory::ModelFootprint::of(&folder)?,
            batch_tokens: memory::batch_tokens(&config.planned_options, max_seq_length),
        })
    }

    /// Says on stderr when the CPU workers among `devices` (the caller's, or a default plan of
    /// which even one worker is too large) may need more memory than is theirs to take: a
    /// worker the kernel kills for memory is replaced and its chunk retried, and in the end its
    /// texts are blamed; the warning names the likely cause first.
    fn warn_if_cpu_workers_do_not_fit(&self, devices: &[Device]) {
        if let Some(needed) = memory::cpu_workers_shortfall(
            devices,
            self.cores,
            self.available,
            &self.model,
            self.batch_tokens,
        ) {
            eprintln!(
                "pool-encode: warning: the CPU workers may need up to {} at batches of up to {} tokens, more than the workers' share (80 %) of the {} of memory available; workers killed for lack of memory would be retried and their texts finally reported as failing. Fewer workers (more threads each), a smaller batch size or --max-batch-tokens need less",
                gib(needed),
                self.batch_tokens,
                gib(self.available.unwrap_or(0)),
            );
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The GPU devices `worker_program --list-devices` reports (none if it cannot run), and why
/// CUDA is unusable if it says so.
fn list_gpus(worker_program: &(PathBuf, Vec<String>)) -> (Vec<Device>, Option<String>) {
    let output = std::process::Command::new(&worker_program.0)
        .args(&worker_program.1)
        .arg("--list-devices")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let devices = stdout.lines().filter_map(|l| l.parse().ok()).collect();
            let why = stdout
                .lines()
                .find_map(|l| l.strip_prefix("# no cuda: "))
                .map(str::to_string);
            (devices, why)
        }
        Ok(out) => (
            Vec::new(),
            Some(format!("the worker program exited with {}", out.status)),
        ),
        Err(e) => (
            Vec::new(),
            Some(format!("cannot run the worker program: {e}")),
        ),
    }
}

/// What to do with a text that kills every worker that encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPoison {
    /// The call fails with [`PoolError::PoisonText`].
    #[default]
    Fail,
    /// Its row is filled with NaN, its index reported in [`Encoded::skipped`], the rest completes.
    Skip,
}

#[derive(Debug, Clone)]
pub struct PoolEncodeOptions {
    pub encode: EncodeOptions,
    /// Texts per chunk; default as ST, `ceil(texts / workers / 10)` clamped to 1..=5000, but
    /// at least `batch_size` × the batches a worker keeps in flight (1000 for a stream of
    /// unknown length). A call's input held whole ([`Pool::encode`]) is cut into chunks of
    /// equal size, none larger than this, as many as a multiple of the workers.
    pub chunk_size: Option<usize>,
    pub on_poison: OnPoison,
    /// Chunks a stream dispatches ahead of the consumer (bounds memory).
    pub chunks_ahead: Option<usize>,
}

impl Default for PoolEncodeOptions {
    fn default() -> Self {
        PoolEncodeOptions {
            encode: EncodeOptions::default(),
            chunk_size: None,
            on_poison: OnPoison::Fail,
            chunks_ahead: None,
        }
    }
}

/// Rows of one call, in input order, starting at row `offset`: [`Embeddings`] from a dense
/// model, [`SparseEmbeddings`] from a sparse one.
#[derive(Debug, Clone)]
pub struct Encoded<R = Embeddings> {
    pub offset: usize,
    pub embeddings: R,
    /// Rows (indices within the call) that were skipped as poison (`OnPoison::Skip`).
    pub skipped: Vec<usize>,
}

/// What one worker slot has done so far: the figures behind progress lines and run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    pub device: Device,
    /// Process id of the worker running now, if one is.
    pub pid: Option<u32>,
    /// Texts and tokens (special tokens included, after truncation) of the chunks it returned.
    pub texts: u64,
    pub tokens: u64,
    /// Processes started for this slot after the first (crashes, hangs, out of memory).
    pub restarts: u32,
}

pub struct Pool {
    control: Sender<Control>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// Never sent on; disconnected when the dispatcher thread ends. A submit can still reach
    /// the control channel after the dispatcher stopped reading it, and a call waiting for
    /// that task's answer learns here that none will come.
    dispatcher_gone: Receiver<()>,
    stats: Arc<Mutex<Vec<WorkerStats>>>,
    devices: Vec<Device>,
    /// The most batches any worker keeps in flight.
    batches_per_worker: usize,
    dimension: usize,
}

impl Pool {
    /// Starts the workers and returns once one of them has loaded the model.
    pub fn start(mut config: PoolConfig) -> Result<Pool, PoolError> {
        let program = match &config.worker_command {
            Some(command) => command.clone(),
            None => (default_worker_program()?, Vec::new()),
        };
        // Read once: the default plan and the warning both size workers with it.
        let memory = MemoryPlan::of(&config);
        if config.devices.is_empty() {
            config.devices = planned_default_devices(&program, memory.as_ref());
        } else {
            check_gpus_exist(&config.devices, &program)?;
        }
        if let Some(memory) = &memory {
            memory.warn_if_cpu_workers_do_not_fit(&config.devices);
        }
        let (control, commands) = crossbeam_channel::unbounded();
        // Unbounded: the dispatcher must never block on a report nobody reads any more.
        let (ready_tx, ready) = crossbeam_channel::unbounded();
        let stats = config
            .devices
            .iter()
            .map(|&device| WorkerStats {
                device,
                pid: None,
                texts: 0,
                tokens: 0,
                restarts: 0,
            })
            .collect();
        let stats = Arc::new(Mutex::new(stats));
        let devices = config.devices.clone();
        let batches_per_worker = devices
            .iter()
            .map(|&device| match device {
                Device::Cpu { .. } => default_concurrent_batches(device),
                _ => config
                    .gpu_batches_in_flight
                    .unwrap_or_else(|| default_concurrent_batches(device)),
            })
            .max()
            .unwrap_or(1);
        let dispatcher = Dispatcher::start(config, program, commands, stats.clone(), ready_tx);
        let (alive, dispatcher_gone) = crossbeam_channel::bounded::<()>(0);
        // The dispatcher thread spawns every worker and lives as long as the pool.
        let handle = std::thread::Builder::new()
            .name("pool-encode-dispatcher".into())
            .spawn(move || {
                dispatcher.run();
                drop(alive);
            })
            .map_err(|e| PoolError::Spawn(e.to_string()))?;
        let mut pool = Pool {
            control,
            dispatcher: Mutex::new(Some(handle)),
            dispatcher_gone,
            stats,
            devices,
            batches_per_worker,
            dimension: 0,
        };
        // On error, dropping `pool` stops the dispatcher and whatever workers did start.
        pool.dimension = match ready.recv() {
            Ok(Ok(dimension)) => dimension,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(PoolError::Stopped),
        };
        Ok(pool)
    }

    pub fn embedding_dimension(&self) -> usize {
        self.dimension
    }

    pub fn workers(&self) -> usize {
        self.devices.len()
    }

    /// The device of each worker, in order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Process ids of the workers running now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.worker_stats().iter().filter_map(|w| w.pid).collect()
    }

    /// Each worker slot's figures so far, in [`devices`](Self::devices) order.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Encodes `texts`, returning every row in input order.
    ///
    /// The whole input is known here, so it is sorted by length before it is cut into chunks:
    /// each chunk's batches then hold texts of similar length and pad little (ST sorts only
    /// within a chunk). Rows are put back in input order.
    pub fn encode<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &PoolEncodeOptions,
    ) -> Result<Encoded, PoolError> {
        self.encode_rows(texts, options)
    }

    /// [`encode`](Self::encode) for a pool of a sparse model: sparse rows in input order.
    pub fn encode_sparse<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &PoolEncodeOptions,
    ) -> Result<Encoded<SparseEmbeddings>, PoolError> {
        self.encode_rows(texts, options)
    }

    /// [`encode`](Self::encode) for either kind of rows.
    pub fn encode_rows<R: Rows, S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &PoolEncodeOptions,
    ) -> Result<Encoded<R>, PoolError> {
        let chunk_size = self.chunk_size(options, Some(texts.len()));
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().len()));
        let sorted: Vec<String> = order
            .iter()
            .map(|&i| texts[i].as_ref().to_string())
            .collect();
        // Equal chunks, as many as a multiple of the workers: the workers end together, with
        // no small remainder chunk (or one chunk more than the others) at the end.
        let count = chunks::whole_call_chunks(texts.len(), chunk_size, self.workers());
        let chunks = chunks::cut_evenly(sorted, count);
        let options = PoolEncodeOptions {
            chunk_size: Some(chunk_size),
            // Everything may be in flight: the caller holds all texts anyway.
            chunks_ahead: Some(options.chunks_ahead.unwrap_or(usize::MAX / 2)),
            ..options.clone()
        };
        let mut rows = R::empty(self.output_dimension(&options.encode));
        let mut skipped = Vec::new();
        for piece in self.encode_chunks::<R, _>(chunks, &options) {
            let piece = piece.map_err(|e| match e {
                PoolError::PoisonText { index, preview } => PoolError::PoisonText {
                    index: order[index],
                    preview,
                },
                other => other,
            })?;
            rows.append(piece.embeddings);
            skipped.extend(piece.skipped.iter().map(|&s| order[s]));
        }
        skipped.sort_unstable();
        Ok(Encoded {
            offset: 0,
            embeddings: rows.unsort(&order),
            skipped,
        })
    }

    /// `options.chunk_size`, else the default for a call of `texts` texts (`None`: unknown).
    fn chunk_size(&self, options: &PoolEncodeOptions, texts: Option<usize>) -> usize {
        let batch = options.encode.batch_size.max(1) * self.batches_per_worker;
        options
            .chunk_size
            .unwrap_or_else(|| chunks::default_chunk_size(texts, self.workers(), batch))
            .max(1)
    }

    /// Width of the rows a call with `options` returns.
    fn output_dimension(&self, options: &EncodeOptions) -> usize {
        options.output_dimension(self.dimension)
    }

    /// Encodes a stream of texts, yielding rows chunk by chunk in input order while later
    /// chunks are still being encoded. At most `chunks_ahead` chunks (default: 3 per worker)
    /// are in the pool ahead of the consumer.
    pub fn encode_stream<I: IntoIterator<Item = String>>(
        &self,
        texts: I,
        options: &PoolEncodeOptions,
    ) -> EncodeStream<'_, FixedChunks<I::IntoIter>> {
        self.encode_stream_rows(texts, options)
    }

    /// [`encode_stream`](Self::encode_stream) for either kind of rows.
    pub fn encode_stream_rows<R: Rows, I: IntoIterator<Item = String>>(
        &self,
        texts: I,
        options: &PoolEncodeOptions,
    ) -> EncodeStream<'_, FixedChunks<I::IntoIter>, R> {
        let texts = texts.into_iter();
        let known_length = match texts.size_hint() {
            (low, Some(high)) if low == high => Some(low),
            _ => None,
        };
        let chunk_size = self.chunk_size(options, known_length);
        let options = PoolEncodeOptions {
            chunk_size: Some(chunk_size),
            ..options.clone()
        };
        self.encode_chunks(FixedChunks::new(texts, chunk_size), &options)
    }

    /// Encodes chunks as cut by the caller; `options.chunk_size` (set) sizes the look-ahead.
    fn encode_chunks<R: Rows, C: Iterator<Item = Vec<String>>>(
        &self,
        chunks: C,
        options: &PoolEncodeOptions,
    ) -> EncodeStream<'_, C, R> {
        let chunk_size = options.chunk_size.unwrap_or(1000);
        let (reply, results) = crossbeam_channel::unbounded();
        EncodeStream {
            pool: self,
            chunks,
            options: Arc::new(options.encode.clone()),
            on_poison: options.on_poison,
            window: options
                .chunks_ahead
                .unwrap_or(3 * self.workers())
                .max(1)
                .saturating_mul(chunk_size.max(1)),
            reply,
            results,
            cancelled: Arc::new(AtomicBool::new(false)),
            submitted: 0,
            emitted: 0,
            exhausted: false,
            arrived: BTreeMap::new(),
            failed: false,
        }
    }

    /// As [`encode_stream`](Self::encode_stream), sorting the input by length in windows of
    /// `window` texts (rounded up to whole chunks) so that chunks pad little, as
    /// [`encode`](Self::encode) does for a whole input. The last window is cut into as many
    /// chunks as a full one (none smaller than a batch), so the end of the input is shared by
    /// the workers. Yields whole windows, in input order; memory holds about one window of
    /// texts and rows beyond the stream's own look-ahead.
    pub fn encode_stream_sorted<I: IntoIterator<Item = String>>(
        &self,
        texts: I,
        options: &PoolEncodeOptions,
        window: usize,
    ) -> SortedEncodeStream<'_, I::IntoIter> {
        self.encode_stream_sorted_rows(texts, options, window)
    }

    /// [`encode_stream_sorted`](Self::encode_stream_sorted) for either kind of rows.
    pub fn encode_stream_sorted_rows<R: Rows, I: IntoIterator<Item = String>>(
        &self,
        texts: I,
        options: &PoolEncodeOptions,
        window: usize,
    ) -> SortedEncodeStream<'_, I::IntoIter, R> {
        let chunk_size = options.chunk_size.unwrap_or(1000).max(1);
        let options = PoolEncodeOptions {
            chunk_size: Some(chunk_size),
            ..options.clone()
        };
        let dim = self.output_dimension(&options.encode);
        SortedEncodeStream::new(
            texts.into_iter(),
            window,
            (chunk_size, options.encode.batch_size),
            dim,
            |chunks| self.encode_chunks(chunks, &options),
        )
    }

    /// Stops every worker; calls still running get [`PoolError::Stopped`]. Also done on drop.
    pub fn stop(&self) {
        let _ = self.control.send(Control::Stop);
        if let Some(handle) = self.dispatcher.lock().expect("dispatcher lock").take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a temporary pool on `devices`, encodes, and stops it (ST's `encode(device=[…])`).
/// A dense model; for a sparse one, start a [`Pool`] with [`ModelKind::Sparse`].
pub fn encode<S: AsRef<str>>(
    model: impl Into<PathBuf>,
    devices: Vec<Device>,
    texts: &[S],
    options: &PoolEncodeOptions,
) -> Result<Encoded, PoolError> {
    let pool = Pool::start(PoolConfig::new(model, devices))?;
    pool.encode(texts, options)
}

/// A requested `cuda:K` that the worker program cannot see fails the start with a clear error,
/// instead of a worker that fails to load.
fn check_gpus_exist(
    devices: &[Device],
    worker_program: &(PathBuf, Vec<String>),
) -> Result<(), PoolError> {
    if !devices.iter().any(|d| matches!(d, Device::Cuda(_))) {
        return Ok(());
    }
    let (found, why) = list_gpus(worker_program);
    let cuda = found
        .iter()
        .filter(|d| matches!(d, Device::Cuda(_)))
        .count();
    match devices
        .iter()
        .find(|d| matches!(d, Device::Cuda(k) if *k >= cuda))
    {
        Some(missing) => Err(PoolError::InvalidOption(format!(
            "device {missing} does not exist: {cuda} CUDA device(s) visible{}{}",
            pool_encode_encoder::gpu::visible_devices_note(),
            why.map(|w| format!("; {w}")).unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

fn default_worker_program() -> Result<PathBuf, PoolError> {
    if let Some(path) = std::env::var_os("POOL_ENCODE_WORKER") {
        return Ok(PathBuf::from(path));
    }
    let name = format!("pool-encode-worker{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().map_err(|e| PoolError::Spawn(e.to_string()))?;
    // Next to the program, or one folder up (cargo puts test binaries in target/*/deps).
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            PoolError::Spawn(format!(
                "cannot find {name} next to {}; set POOL_ENCODE_WORKER to its path",
                exe.display()
            ))
        })
}

/// The ordered stream of one call's results; see [`Pool::encode_stream`]. `C` yields the
/// call's texts cut into chunks.
pub struct EncodeStream<'p, C: Iterator<Item = Vec<String>>, R: Rows = Embeddings> {
    pool: &'p Pool,
    chunks: C,
    options: Arc<EncodeOptions>,
    on_poison: OnPoison,
    /// Rows allowed in the pool ahead of the consumer.
    window: usize,
    reply: Sender<TaskOutcome>,
    results: Receiver<TaskOutcome>,
    cancelled: Arc<AtomicBool>,
    submitted: usize,
    emitted: usize,
    exhausted: bool,
    /// Results that arrived ahead of their turn, by first row.
    arrived: BTreeMap<usize, Encoded<R>>,
    failed: bool,
}

impl<C: Iterator<Item = Vec<String>>, R: Rows> EncodeStream<'_, C, R> {
    fn submit_ahead(&mut self) -> Result<(), PoolError> {
        while !self.exhausted && self.submitted - self.emitted < self.window {
            let Some(texts) = self.chunks.next().filter(|chunk| !chunk.is_empty()) else {
                self.exhausted = true;
                break;
            };
            let rows = texts.len();
            let task = Task {
                offset: self.submitted,
                texts,
                options: self.options.clone(),
                reply: self.reply.clone(),
                cancelled: self.cancelled.clone(),
                deaths: 0,
            };
            self.pool
                .control
                .send(Control::Submit(task))
                .map_err(|_| PoolError::Stopped)?;
            self.submitted += rows;
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<(), PoolError> {
        // Every task the dispatcher took is answered, if only with `Stopped` as it stops. A task
        // submitted as it stopped is never read: its end is the dispatcher's, and then only
        // answers already sent remain.
        let outcome = crossbeam_channel::select! {
            recv(self.results) -> outcome => outcome.ok(),
            recv(self.pool.dispatcher_gone) -> _ => self.results.try_recv().ok(),
        };
        let outcome = outcome.ok_or(PoolError::Stopped)?;
        let piece = match outcome {
            TaskOutcome::Done { offset, rows } => Encoded {
                offset,
                embeddings: R::from_worker(rows)?,
                skipped: Vec::new(),
            },
            TaskOutcome::Poison { index, text } => match self.on_poison {
                OnPoison::Fail => {
                    return Err(PoolError::PoisonText {
                        index,
                        preview: text.chars().take(80).collect(),
                    });
                }
                OnPoison::Skip => {
                    eprintln!(
                        "pool-encode: skipping text {index}: it kills every worker that encodes it"
                    );
                    Encoded {
                        offset: index,
                        embeddings: R::skipped_row(self.pool.output_dimension(&self.options)),
                        skipped: vec![index],
                    }
                }
            },
            TaskOutcome::Failed(error) => return Err(error),
        };
        self.arrived.insert(piece.offset, piece);
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Encoded<R>>, PoolError> {
        loop {
            self.submit_ahead()?;
            if let Some(piece) = self.arrived.remove(&self.emitted) {
                self.emitted += piece.embeddings.rows();
                return Ok(Some(piece));
            }
            if self.exhausted && self.emitted == self.submitted {
                return Ok(None);
            }
            self.receive()?;
        }
    }
}

impl<C: Iterator<Item = Vec<String>>, R: Rows> Iterator for EncodeStream<'_, C, R> {
    type Item = Result<Encoded<R>, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(piece) => piece.map(Ok),
            Err(e) => {
                self.failed = true;
                self.cancelled.store(true, Ordering::Relaxed);
                Some(Err(e))
            }
        }
    }
}

impl<C: Iterator<Item = Vec<String>>, R: Rows> Drop for EncodeStream<'_, C, R> {
    fn drop(&mut self) {
        // Chunks of an abandoned call are not dispatched any more.
        self.cancelled.store(true, Ordering::Relaxed);
    }
}
