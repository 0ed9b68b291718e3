//! The run report: `<output>.report.json`, written when a run that got its pool started ends,
//! however it ends (complete, failed, interrupted): counts, throughput, per-worker figures, the
//! settings and model used, timings, and the error if there was one. Written to a temporary file
//! and renamed, so a report is never half-written.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use pool_encode_encoder::model::ModelKind;
use pool_encode_pool::WorkerStats;
use serde_json::{Value, json};

use crate::settings::EncodeSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Complete,
    Failed,
    Interrupted,
}

/// What is known when the pool is ready; [`finish`](Self::finish) adds the outcome.
pub struct RunReport<'a> {
    pub settings: &'a EncodeSettings,
    pub model_folder: PathBuf,
    /// Dense or sparse, as resolved (the flag, else the model folder).
    pub kind: ModelKind,
    pub dimension: usize,
    /// Rows a resumed run found done already (0 for a fresh run); rates count this run's only.
    pub resumed_rows: u64,
    /// Wall-clock start, for the record; `started` / `ready` for the durations.
    pub started_at: SystemTime,
    pub started: Instant,
    pub ready: Instant,
}

/// `<output>.report.json`.
pub fn report_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".report.json");
    output.with_file_name(name)
}

/// How a run ended.
pub struct Outcome<'a> {
    pub status: Status,
    pub error: Option<String>,
    /// Rows written to `output_file`.
    pub texts: u64,
    /// Bad records set aside in the rejects file.
    pub rejected: u64,
    /// The finished output, or the `.partial` file holding the rows computed.
    pub output_file: &'a Path,
    pub workers: &'a [WorkerStats],
}

impl RunReport<'_> {
    /// Writes the report for a run that ended with `outcome`; returns the report's path.
    pub fn finish(&self, outcome: &Outcome) -> Result<PathBuf> {
        let value = self.to_json(outcome);
        let path = report_path(&self.settings.output);
        let temporary = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&value)? + "\n";
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .with_context(|| format!("{}: cannot write the run report", path.display()))?;
        Ok(path)
    }

    fn to_json(&self, outcome: &Outcome) -> Value {
        let &Outcome {
            status,
            ref error,
            texts,
            rejected,
            output_file,
            workers,
        } = outcome;
        let now = Instant::now();
        let encoding = (now - self.ready).as_secs_f64();
        let per_second = |n: u64| n as f64 / encoding.max(1e-9);
        let tokens: u64 = workers.iter().map(|w| w.tokens).sum();
        let s = self.settings;
        json!({
            "status": match status {
                Status::Complete => "complete",
                Status::Failed => "failed",
                Status::Interrupted => "interrupted",
            },
            "error": error,
            "pool_encode_version": env!("CARGO_PKG_VERSION"),
            "model": s.model,
            "model_folder": self.model_folder,
            "dimension": self.dimension,
            "input": s.input,
            "output": output_file,
            "texts": texts,
            "rejected": rejected,
            "rejects": s.rejects,
            "shard": s.shard.map(|shard| shard.to_string()),
            "resumed_after_row": self.resumed_rows,
            "tokens": tokens,
            "texts_per_second": per_second(texts.saturating_sub(self.resumed_rows)),
            "tokens_per_second": per_second(tokens),
            "started_unix_seconds": self
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            "seconds": {
                "startup": (self.ready - self.started).as_secs_f64(),
                "encoding": encoding,
                "total": (now - self.started).as_secs_f64(),
            },
            "workers": workers.iter().map(|w| json!({
                "device": w.device.to_string(),
                "texts": w.texts,
                "tokens": w.tokens,
                "texts_per_second": per_second(w.texts),
                "restarts": w.restarts,
            })).collect::<Vec<_>>(),
            "settings": {
                "kind": match self.kind {
                    ModelKind::Dense => "dense",
                    ModelKind::Sparse => "sparse",
                },
                "max_active_dims": s.max_active_dims,
                "devices": workers.iter().map(|w| w.device.to_string()).collect::<Vec<_>>(),
                "precision": s.precision.to_string(),
                "batch_size": s.batch_size,
                "max_batch_tokens": s.max_batch_tokens,
                "gpu_batches_in_flight": s.gpu_batches_in_flight,
                "chunk_size": s.chunk_size,
                "max_seq_length": s.max_seq_length,
                "text_field": s.text_field,
                "max_record_bytes": s.max_record_bytes,
                "id_field": s.id_field,
                "normalize": s.normalize,
                "truncate_dim": s.truncate_dim,
                "quantize": s.quantize.map(|q| q.name()),
                "calibration": s.calibration,
                "prompt_name": s.prompt_name,
                "prompt": s.prompt,
            },
        })
    }
}
