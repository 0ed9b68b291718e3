//! Resume: `<output>.checkpoint.json` records how many rows of `<output>.partial` are durable.
//!
//! Rows are written in input order, a sorted window at a time; after each window the output (and
//! the rejects file) is synced and the checkpoint replaced atomically (written aside, synced,
//! renamed). A resumed run cuts the partial output back to the checkpoint's bytes, skips the
//! records it counts as done, and cuts the rest of the input into the same windows, so its chunks
//! and batches are the ones an uninterrupted run would have had: the output is byte for byte the
//! same (given workers that compute alike, e.g. all `cpu:1` or all on one kind of GPU).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Input records done (from the run's first: a shard's start): encoded or rejected.
    pub records: u64,
    /// Rows durable in the partial output.
    pub rows: u64,
    /// Bytes of the partial output those rows fill.
    pub bytes: u64,
    /// Records set aside in the rejects file so far, and the bytes they take.
    pub rejected: u64,
    pub rejects_bytes: u64,
    /// Texts per sorted window; a resumed run keeps it whatever its worker count.
    pub window: usize,
    /// Everything the output's bytes depend on; a resumed run must have the same.
    pub fingerprint: Value,
}

pub fn path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoint.json");
    output.with_file_name(name)
}

pub fn load(output: &Path) -> Result<Option<Checkpoint>> {
    let path = path(output);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{}: not a checkpoint pool-encode wrote", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Replaces the checkpoint atomically: a crash leaves the old one or the new one, never half.
pub fn save(output: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let path = path(output);
    let temporary = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&temporary)?;
        serde_json::to_writer(&file, checkpoint)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    };
    write().with_context(|| format!("{}: cannot write the checkpoint", path.display()))
}

pub fn remove(output: &Path) -> Result<()> {
    let path = path(output);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("{}: cannot remove", path.display()))
        }
        _ => Ok(()),
    }
}

/// Says which part of a resumed run's fingerprint differs from the checkpoint's.
pub fn check_fingerprint(output: &Path, saved: &Value, now: &Value) -> Result<()> {
    // A setting newer than the interrupted run's binary is unset (null) there.
    let saved_value = |key: &str| saved.get(key).unwrap_or(&Value::Null);
    let differing: Vec<String> = now
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| saved_value(key) != *value)
        .map(|(key, value)| {
            format!(
                "{key} is {value} now but {} in the interrupted run",
                saved_value(key)
            )
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    bail!(
        "{}: cannot resume with other settings ({}); use the interrupted run's settings, or --overwrite to start over",
        path(output).display(),
        differing.join("; ")
    )
}
