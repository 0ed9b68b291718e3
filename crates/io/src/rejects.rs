//! Bad input records set aside instead of stopping the run: one JSON line each,
//! `{"record": 17, "line": 18, "error": "texts.jsonl:18: missing field \"text\""}` (`record` is
//! the 0-based record index in the input). Written under `<name>.partial` like an output,
//! synced with each checkpoint, and cut back with the output on a resume.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::dense::{partial_path, reopen_partial, sync};
use crate::error::{IoError, Result};

pub struct RejectsWriter {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    count: u64,
    bytes: u64,
}

impl RejectsWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let partial = partial_path(path);
        let file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
        Ok(RejectsWriter {
            path: path.to_path_buf(),
            partial,
            file,
            count: 0,
            bytes: 0,
        })
    }

    /// Reopens an interrupted run's rejects, keeping the first `count` (in `bytes` bytes).
    pub fn resume(path: &Path, count: u64, bytes: u64) -> Result<Self> {
        let (partial, file) = reopen_partial(path, bytes)?;
        Ok(RejectsWriter {
            path: path.to_path_buf(),
            partial,
            file,
            count,
            bytes,
        })
    }

    /// Records rejected so far, and the bytes they take.
    pub fn state(&self) -> (u64, u64) {
        (self.count, self.bytes)
    }

    pub fn write(&mut self, record: u64, error: &IoError) -> Result<()> {
        let line = match error {
            IoError::Record { line, .. } => Some(*line),
            _ => None,
        };
        let mut text = serde_json::to_vec(&serde_json::json!({
            "record": record,
            "line": line,
            "error": error.to_string(),
        }))
        .map_err(std::io::Error::from)
        .map_err(IoError::io(&self.partial))?;
        text.push(b'\n');
        self.file
            .write_all(&text)
            .map_err(IoError::io(&self.partial))?;
        self.count += 1;
        self.bytes += text.len() as u64;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        sync(&mut self.file, &self.partial)
    }

    /// Syncs and gives the file its final name.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.sync()?;
        std::fs::rename(&self.partial, &self.path).map_err(IoError::io(&self.path))?;
        Ok(self.path)
    }
}
