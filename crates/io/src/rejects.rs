//! Bad input records set aside instead of stopping the run: one JSON line each,
//! `{"record": 17, "line": 18, "error": "texts.jsonl:18: missing field \"text\""}` (`record` is
//! the 0-based record index in the input). Written under `<name>.partial` like an output,
//! synced with each checkpoint, and cut back with the output on a resume.

use std::path::{Path, PathBuf};

use crate::error::{IoError, Result};
use crate::json_lines::JsonLinesWriter;

pub struct RejectsWriter(JsonLinesWriter);

impl RejectsWriter {
    pub fn create(path: &Path) -> Result<Self> {
        JsonLinesWriter::create(path).map(RejectsWriter)
    }

    /// Reopens an interrupted run's rejects, keeping the first `count` (in `bytes` bytes).
    pub fn resume(path: &Path, count: u64, bytes: u64) -> Result<Self> {
        JsonLinesWriter::resume(path, count, bytes).map(RejectsWriter)
    }

    /// Records rejected so far, and the bytes they take.
    pub fn state(&self) -> (u64, u64) {
        (self.0.lines(), self.0.bytes())
    }

    pub fn write(&mut self, record: u64, error: &IoError) -> Result<()> {
        let line = match error {
            IoError::Record { line, .. } => Some(*line),
            _ => None,
        };
        self.0.write(&serde_json::json!({
            "record": record,
            "line": line,
            "error": error.to_string(),
        }))
    }

    pub fn sync(&mut self) -> Result<()> {
        self.0.sync()
    }

    /// Syncs and gives the file its final name.
    pub fn finish(self) -> Result<PathBuf> {
        self.0.finish()
    }
}
