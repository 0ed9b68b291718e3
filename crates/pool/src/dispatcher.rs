//! The dispatcher: one long-lived thread that owns every worker and every queued task.
//!
//! It spawns workers (and respawns them: the spawning thread must outlive them for
//! `PR_SET_PDEATHSIG`), hands tasks to workers that have a free slot (at most
//! `in_flight_per_worker` each, so a worker always has its next task queued), copies results
//! out of shared memory, and turns every failure into a retry or an error for the call, never a
//! wait without end:
//! - a worker whose connection closes (killed, crashed) has its tasks requeued and is respawned;
//! - a worker that reports its device out of memory exits too; that task is requeued with
//!   batches half as large, and fails its call only when one text per batch does not fit;
//! - a task past its deadline gets its worker killed, which is the case above;
//! - a task that has killed `max_task_deaths` workers is split in halves until the single text
//!   that kills workers is found and reported to its call.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender, IpcSharedMemory};
use pool_encode_encoder::model::ModelKind;
use pool_encode_encoder::{Device, EncodeOptions};

use crate::protocol::{Request, WorkerMessage};
use crate::rows::{WorkerRows, decode_slot};
use crate::{PoolConfig, PoolError, WorkerStats};

/// What `CUDA_VISIBLE_DEVICES` a worker for `cuda:k` gets: entry `k` of the coordinator's own
/// list when it has one (so `cuda:K` counts visible devices, as in torch), else `k`.
fn physical_cuda_device(k: usize) -> String {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .filter(|list| !list.trim().is_empty())
        .and_then(|list| list.split(',').nth(k).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| k.to_string())
}

/// A worker that dies this many times in a row while loading its model is given up on.
const MAX_STARTUP_FAILURES: u32 = 3;

/// A contiguous run of one call's texts, starting at row `offset` of that call.
pub(crate) struct Task {
    pub offset: usize,
    pub texts: Vec<String>,
    pub options: Arc<EncodeOptions>,
    pub reply: Sender<TaskOutcome>,
    pub cancelled: Arc<AtomicBool>,
    /// Workers that died while holding this task.
    pub deaths: u32,
}

pub(crate) enum TaskOutcome {
    Done {
        offset: usize,
        rows: WorkerRows,
    },
    /// The text at row `index` of the call kills every worker that encodes it.
    Poison {
        index: usize,
        text: String,
    },
    Failed(PoolError),
}

pub(crate) enum Control {
    Submit(Task),
    Stop,
}

enum Event {
    Message {
        worker: usize,
        generation: u64,
        message: WorkerMessage,
    },
    /// The worker's connection closed: it exited, crashed or was killed.
    Closed { worker: usize, generation: u64 },
}

enum State {
    /// Spawned, model loading; `server` is the one-shot name, to unblock `accept` if it dies.
    Starting {
        since: Instant,
        server: String,
    },
    Ready {
        requests: IpcSender<Request>,
    },
    /// Could not start (broken model, missing device): not respawned.
    Failed,
}

struct Worker {
    device: Device,
    cores: Option<Vec<usize>>,
    generation: u64,
    state: State,
    child: Option<Child>,
    pid: Option<u32>,
    /// Deaths in a row before reaching Ready: past `MAX_STARTUP_FAILURES` it is not respawned.
    startup_failures: u32,
    /// Tasks sent and not yet answered, by slot, with their send time.
    in_flight: HashMap<usize, (u64, Instant)>,
    /// When the worker started the task it is on now (it works through its tasks in order):
    /// the hang deadline counts from here, not from when queued tasks were sent.
    busy_since: Option<Instant>,
    regions: Vec<Option<IpcSharedMemory>>,
}

pub(crate) struct Dispatcher {
    config: PoolConfig,
    /// Program and leading arguments of a worker process.
    worker_command: (PathBuf, Vec<String>),
    workers: Vec<Worker>,
    pending: VecDeque<u64>,
    tasks: HashMap<u64, Task>,
    next_task: u64,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    commands: Receiver<Control>,
    stats: Arc<std::sync::Mutex<Vec<WorkerStats>>>,
    ready: Sender<Result<usize, PoolError>>,
    announced: bool,
}

impl Dispatcher {
    pub fn start(
        config: PoolConfig,
        worker_command: (PathBuf, Vec<String>),
        commands: Receiver<Control>,
        stats: Arc<std::sync::Mutex<Vec<WorkerStats>>>,
        ready: Sender<Result<usize, PoolError>>,
    ) -> Self {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let workers = assign_cores(&config.devices)
            .into_iter()
            .map(|(device, cores)| Worker {
                device,
                cores,
                generation: 0,
                state: State::Failed,
                child: None,
                pid: None,
                startup_failures: 0,
                in_flight: HashMap::new(),
                busy_since: None,
                regions: Vec::new(),
            })
            .collect();
        Dispatcher {
            config,
            worker_command,
            workers,
            pending: VecDeque::new(),
            tasks: HashMap::new(),
            next_task: 0,
            events_tx,
            events,
            commands,
            stats,
            ready,
            announced: false,
        }
    }

    pub fn run(mut self) {
        for w in 0..self.workers.len() {
            self.spawn(w);
        }
        let tick = crossbeam_channel::tick(Duration::from_millis(100));
        loop {
            select! {
                recv(self.commands) -> command => match command {
                    Ok(Control::Submit(task)) => {
                        let id = self.next_task;
                        self.next_task += 1;
                        self.tasks.insert(id, task);
                        self.pending.push_back(id);
                    }
                    Ok(Control::Stop) | Err(_) => break,
                },
                recv(self.events) -> event => {
                    if let Ok(event) = event {
                        self.handle(event);
                    }
                },
                recv(tick) -> _ => self.check_deadlines(),
            }
            self.dispatch();
        }
        self.shutdown();
    }

    fn spawn(&mut self, w: usize) {
        let worker = &mut self.workers[w];
        worker.generation += 1;
        worker.in_flight.clear();
        worker.busy_since = None;
        worker.regions.clear();
        let generation = worker.generation;
        let (server, name) = match IpcOneShotServer::<WorkerMessage>::new() {
            Ok(pair) => pair,
            Err(e) => {
                worker.state = State::Failed;
                eprintln!("pool-encode: worker {w}: cannot create its IPC server: {e}");
                return;
            }
        };
        let cores = worker
            .cores
            .as_ref()
            .map(|c| c.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "-".into());
        // A GPU worker sees only its own GPU (as device 0), pinned by CUDA_VISIBLE_DEVICES.
        let (local_device, cuda_visible) = match worker.device {
            Device::Cuda(k) => (Device::Cuda(0), Some(physical_cuda_device(k))),
            Device::Cpu { .. } => (worker.device, Some(String::new())),
            Device::Wgpu(_) => (worker.device, None),
        };
        let mut command = Command::new(&self.worker_command.0);
        command
            .args(&self.worker_command.1)
            .arg(&name)
            .arg(&self.config.model)
            .arg(local_device.to_string())
            .arg(cores)
            .arg(std::process::id().to_string())
            .arg(
                self.config
                    .max_seq_length
                    .map_or("-".into(), |n| n.to_string()),
            )
            .arg(self.config.precision.to_string())
            .arg(
                self.config
                    .gpu_batches_in_flight
                    .map_or("-".into(), |n| n.to_string()),
            )
            .arg(match self.config.kind {
                ModelKind::Dense => "dense",
                ModelKind::Sparse => "sparse",
            })
            .envs(self.config.worker_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(visible) = cuda_visible {
            command.env("CUDA_VISIBLE_DEVICES", visible);
        }
        if let Device::Cpu { threads: Some(n) } = worker.device {
            command.env("RAYON_NUM_THREADS", n.to_string());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                worker.state = State::Failed;
                let _ = self.ready.send(Err(PoolError::Spawn(format!(
                    "{}: {e}",
                    self.worker_command.0.display()
                ))));
                return;
            }
        };
        let label = format!("worker {w} {}", worker.device);
        if let Some(stderr) = child.stderr.take() {
            // Worker logs reach the coordinator's log, one prefixed line at a time.
            let label = label.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[{label}] {line}");
                }
            });
        }
        worker.pid = Some(child.id());
        worker.child = Some(child);
        worker.state = State::Starting {
            since: Instant::now(),
            server: name,
        };
        let mut stats = self.stats.lock().expect("stats lock");
        if worker.generation > 1 {
            stats[w].restarts += 1;
        }
        stats[w].pid = worker.pid;
        drop(stats);
        let events = self.events_tx.clone();
        std::thread::spawn(move || read_worker(w, generation, server, events));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Message {
                worker,
                generation,
                message,
            } if generation == self.workers[worker].generation => self.on_message(worker, message),
            Event::Closed { worker, generation }
                if generation == self.workers[worker].generation =>
            {
                self.on_closed(worker)
            }
            _ => {} // from an earlier, already replaced process of that worker
        }
    }

    fn on_message(&mut self, w: usize, message: WorkerMessage) {
        match message {
            WorkerMessage::Ready {
                requests,
                pid,
                dimension,
            } => {
                let worker = &mut self.workers[w];
                worker.state = State::Ready { requests };
                worker.pid = Some(pid);
                worker.startup_failures = 0;
                if !self.announced {
                    self.announced = true;
                    let _ = self.ready.send(Ok(dimension));
                }
            }
            WorkerMessage::StartupFailed { error } => {
                let device = self.workers[w].device;
                self.workers[w].state = State::Failed;
                eprintln!("pool-encode: worker {w} ({device}) could not start: {error}");
                if self
                    .workers
                    .iter()
                    .all(|w| matches!(w.state, State::Failed))
                {
                    let error = PoolError::Startup(format!("{device}: {error}"));
                    let _ = self.ready.send(Err(error.clone()));
                    self.fail_all(error);
                }
            }
            WorkerMessage::Done {
                task,
                slot,
                rows,
                dim,
                nnz,
                tokens,
                region,
            } => {
                let mut stats = self.stats.lock().expect("stats lock");
                stats[w].texts += rows as u64;
                stats[w].tokens += tokens as u64;
                drop(stats);
                let worker = &mut self.workers[w];
                worker.in_flight.remove(&slot);
                worker.busy_since = (!worker.in_flight.is_empty()).then(Instant::now);
                if let Some(region) = region {
                    if worker.regions.len() <= slot {
                        worker.regions.resize(slot + 1, None);
                    }
                    worker.regions[slot] = Some(region);
                }
                let result = worker
                    .regions
                    .get(slot)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| "a result in a slot it never received".to_string())
                    .and_then(|region| decode_slot(region, rows, dim, nnz));
                if let Some(task) = self.tasks.remove(&task) {
                    let outcome = match result {
                        Ok(rows) => TaskOutcome::Done {
                            offset: task.offset,
                            rows,
                        },
                        Err(why) => TaskOutcome::Failed(PoolError::Protocol(format!(
                            "worker {w} reported {why}"
                        ))),
                    };
                    let _ = task.reply.send(outcome);
                }
            }
            WorkerMessage::Failed { task, error } => {
                let worker = &mut self.workers[w];
                worker.in_flight.retain(|_, (t, _)| *t != task);
                worker.busy_since = (!worker.in_flight.is_empty()).then(Instant::now);
                if let Some(task) = self.tasks.remove(&task) {
                    let _ = task
                        .reply
                        .send(TaskOutcome::Failed(PoolError::Encode(error)));
                }
            }
            WorkerMessage::OutOfMemory { task, error } => {
                let worker = &mut self.workers[w];
                worker.in_flight.retain(|_, (t, _)| *t != task);
                let device = worker.device;
                // Taken off the worker before its exit, so the death is not charged to the task.
                if let Some(task) = self.tasks.remove(&task) {
                    self.retry_with_smaller_batches(task, w, device, &error);
                }
            }
            WorkerMessage::Abandoned => {}
        }
    }

    /// A task ran its worker's device out of memory: queue it again with batches half as large
    /// (in texts and in the token budget), or fail its call when one text per batch was too much.
    fn retry_with_smaller_batches(
        &mut self,
        mut task: Task,
        w: usize,
        device: Device,
        error: &str,
    ) {
        let rows = task.options.batch_size.min(task.texts.len());
        if rows <= 1 {
            let row = task.offset;
            let _ = task.reply.send(TaskOutcome::Failed(PoolError::Encode(format!(
                "{device} ran out of memory encoding row {row} alone ({error}); lower max_seq_length or use a device with more memory"
            ))));
            return;
        }
        let mut options = (*task.options).clone();
        options.batch_size = rows / 2;
        options.max_batch_tokens = options.max_batch_tokens.map(|t| (t / 2).max(1));
        eprintln!(
            "pool-encode: worker {w} ({device}) ran out of memory on batches of {rows} texts ({error}); retrying rows {}..{} with batches of {}",
            task.offset,
            task.offset + task.texts.len(),
            options.batch_size
        );
        task.options = Arc::new(options);
        self.requeue_front(task);
    }

    /// The worker's process is gone: requeue (or narrow down) its tasks and start a new one.
    fn on_closed(&mut self, w: usize) {
        let worker = &mut self.workers[w];
        if let Some(mut child) = worker.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stats.lock().expect("stats lock")[w].pid = None;
        // A worker handles its requests in order: the oldest one sent is the one it was
        // working on, and only that one is charged with the death; the others merely waited.
        let culprit = worker
            .in_flight
            .values()
            .min_by_key(|(_, sent)| *sent)
            .map(|(task, _)| *task);
        let lost: Vec<u64> = worker
            .in_flight
            .drain()
            .map(|(_, (task, _))| task)
            .collect();
        if matches!(worker.state, State::Starting { .. }) {
            worker.startup_failures += 1;
            if worker.startup_failures >= MAX_STARTUP_FAILURES {
                worker.state = State::Failed;
                let error = format!(
                    "worker {w} ({}) died {MAX_STARTUP_FAILURES} times while loading the model",
                    worker.device
                );
                eprintln!("pool-encode: {error}");
                if self
                    .workers
                    .iter()
                    .all(|w| matches!(w.state, State::Failed))
                {
                    let _ = self.ready.send(Err(PoolError::Startup(error.clone())));
                    self.fail_all(PoolError::Startup(error));
                }
            }
        }
        let was_failed = matches!(self.workers[w].state, State::Failed);
        for id in lost {
            let Some(mut task) = self.tasks.remove(&id) else {
                continue;
            };
            if Some(id) == culprit {
                task.deaths += 1;
            }
            if task.deaths < self.config.max_task_deaths {
                self.requeue_front(task);
            } else if task.texts.len() == 1 {
                let _ = task.reply.send(TaskOutcome::Poison {
                    index: task.offset,
                    text: task.texts.pop().unwrap_or_default(),
                });
            } else {
                // Narrow down: each half has one death to spend before it is split again.
                let back = task.texts.split_off(task.texts.len() / 2);
                let second = Task {
                    offset: task.offset + task.texts.len(),
                    texts: back,
                    options: task.options.clone(),
                    reply: task.reply.clone(),
                    cancelled: task.cancelled.clone(),
                    deaths: self.config.max_task_deaths - 1,
                };
                task.deaths = self.config.max_task_deaths - 1;
                self.requeue_front(second);
                self.requeue_front(task);
            }
        }
        if !was_failed {
            eprintln!(
                "pool-encode: worker {w} ({}) exited; starting a new one",
                self.workers[w].device
            );
            self.spawn(w);
        }
    }

    fn requeue_front(&mut self, task: Task) {
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(id, task);
        self.pending.push_front(id);
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        for (w, worker) in self.workers.iter_mut().enumerate() {
            let stuck = match &worker.state {
                State::Starting { since, server } => {
                    let exited = worker
                        .child
                        .as_mut()
                        .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                    if exited || now - *since > self.config.startup_timeout {
                        // `accept` has no timeout: connect to it ourselves so it returns.
                        if let Ok(unblock) = IpcSender::<WorkerMessage>::connect(server.clone()) {
                            let _ = unblock.send(WorkerMessage::Abandoned);
                        }
                        if !exited {
                            eprintln!(
                                "pool-encode: worker {w} did not start within {:?}",
                                self.config.startup_timeout
                            );
                        }
                        true
                    } else {
                        false
                    }
                }
                State::Ready { .. } => worker
                    .busy_since
                    .is_some_and(|since| now - since > self.config.task_timeout),
                State::Failed => false,
            };
            if stuck && let Some(child) = worker.child.as_mut() {
                if matches!(worker.state, State::Ready { .. }) {
                    eprintln!(
                        "pool-encode: worker {w} ({}) has held a task for over {:?}: killing it",
                        worker.device, self.config.task_timeout
                    );
                }
                // The closed connection that follows retries its tasks and respawns it.
                let _ = child.kill();
            }
        }
    }

    /// Gives queued tasks to workers with a free slot, in queue order.
    fn dispatch(&mut self) {
        while let Some(&id) = self.pending.front() {
            let cancelled = self
                .tasks
                .get(&id)
                .is_none_or(|t| t.cancelled.load(Ordering::Relaxed));
            if cancelled {
                self.pending.pop_front();
                self.tasks.remove(&id);
                continue;
            }
            let limit = self.config.in_flight_per_worker;
            // The least busy ready worker, so work spreads before it queues.
            let Some(w) = (0..self.workers.len())
                .filter(|&w| {
                    matches!(self.workers[w].state, State::Ready { .. })
                        && self.workers[w].in_flight.len() < limit
                })
                .min_by_key(|&w| self.workers[w].in_flight.len())
            else {
                if self
                    .workers
                    .iter()
                    .all(|w| matches!(w.state, State::Failed))
                {
                    self.fail_all(PoolError::Startup("no worker could start".into()));
                }
                return;
            };
            self.pending.pop_front();
            let worker = &mut self.workers[w];
            let slot = (0..limit)
                .find(|s| !worker.in_flight.contains_key(s))
                .expect("a free slot");
            let task = &self.tasks[&id];
            let request = Request::Encode {
                task: id,
                slot,
                texts: task.texts.clone(),
                options: (*task.options).clone(),
            };
            let State::Ready { requests } = &worker.state else {
                unreachable!()
            };
            if worker.in_flight.is_empty() {
                worker.busy_since = Some(Instant::now());
            }
            worker.in_flight.insert(slot, (id, Instant::now()));
            if requests.send(request).is_err() {
                // Its connection is closing; the Closed event will requeue this task.
                continue;
            }
        }
    }

    fn fail_all(&mut self, error: PoolError) {
        self.pending.clear();
        for (_, task) in self.tasks.drain() {
            let _ = task.reply.send(TaskOutcome::Failed(error.clone()));
        }
    }

    fn shutdown(mut self) {
        self.fail_all(PoolError::Stopped);
        for worker in &mut self.workers {
            match &worker.state {
                State::Ready { requests } => {
                    let _ = requests.send(Request::Shutdown);
                }
                // Its reader thread waits in `accept`: release it.
                State::Starting { server, .. } => {
                    if let Ok(unblock) = IpcSender::<WorkerMessage>::connect(server.clone()) {
                        let _ = unblock.send(WorkerMessage::Abandoned);
                    }
                }
                State::Failed => {}
            }
        }
        let deadline = Instant::now() + self.config.stop_timeout;
        for worker in &mut self.workers {
            if let Some(mut child) = worker.child.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for worker in self.stats.lock().expect("stats lock").iter_mut() {
            worker.pid = None;
        }
    }
}

/// Per worker process: accept its connection, then forward each message until it closes.
fn read_worker(
    worker: usize,
    generation: u64,
    server: IpcOneShotServer<WorkerMessage>,
    events: Sender<Event>,
) {
    let forward = |message| {
        events
            .send(Event::Message {
                worker,
                generation,
                message,
            })
            .is_ok()
    };
    if let Ok((receiver, first)) = server.accept() {
        let receiver: IpcReceiver<WorkerMessage> = receiver;
        if forward(first) {
            while let Ok(message) = receiver.recv() {
                if !forward(message) {
                    return;
                }
            }
        }
    }
    let _ = events.send(Event::Closed { worker, generation });
}

/// Pins `cpu:N` workers to disjoint runs of N cores of those this process may use.
fn assign_cores(devices: &[Device]) -> Vec<(Device, Option<Vec<usize>>)> {
    let allowed: Vec<usize> = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    let mut next = 0;
    devices
        .iter()
        .map(|&device| {
            let cores = match device {
                Device::Cpu { threads: Some(n) } if !allowed.is_empty() => {
                    let cores = (0..n)
                        .map(|i| allowed[(next + i) % allowed.len()])
                        .collect();
                    next += n;
                    Some(cores)
                }
                _ => None,
            };
            (device, cores)
        })
        .collect()
}
