//! Messages between the coordinator and a worker process.
//!
//! Results travel through shared-memory slots, not the socket: a worker writes a chunk's
//! embeddings in place into one of its slots and sends only the slot number. A slot that is too
//! small is replaced by a larger region, sent once with the result; later results reuse it.

use ipc_channel::ipc::{IpcSender, IpcSharedMemory};
use pool_encode_encoder::EncodeOptions;
use serde::{Deserialize, Serialize};

/// Coordinator → worker.
#[derive(Serialize, Deserialize, Debug)]
pub enum Request {
    Encode {
        task: u64,
        slot: usize,
        texts: Vec<String>,
        options: EncodeOptions,
    },
    /// Finish and exit.
    Shutdown,
}

/// Worker → coordinator.
#[derive(Serialize, Deserialize, Debug)]
pub enum WorkerMessage {
    /// The model is loaded; send requests here.
    Ready {
        requests: IpcSender<Request>,
        pid: u32,
        dimension: usize,
    },
    /// The rows of task `task` are in slot `slot` (layout: `rows::encode_slot`).
    Done {
        task: u64,
        slot: usize,
        rows: usize,
        dim: usize,
        /// Sparse rows: their entries in all; `None` for dense rows.
        nnz: Option<usize>,
        /// Tokens encoded (special tokens included, after truncation).
        tokens: usize,
        /// A new region for this slot, when the old one was too small (or absent).
        region: Option<IpcSharedMemory>,
    },
    /// Encoding returned an error (bad option, prompt name…): reported, not retried.
    Failed { task: u64, error: String },
    /// The device ran out of memory on task `task`. The worker exits next (a failed GPU
    /// allocation leaves burn's device unusable in that process); the task is retried with
    /// batches half as large on a fresh worker.
    OutOfMemory { task: u64, error: String },
    /// The worker could not start (model folder broken, device missing…).
    StartupFailed { error: String },
    /// Sent by the coordinator to itself to unblock `accept` when a worker died before connecting.
    Abandoned,
}
