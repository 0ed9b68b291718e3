//! Sparse rows as JSON lines, `{"id": …, "indices": [ascending ids], "values": [weights]}`,
//! one line per input in input order; written under `<name>.partial` and renamed when complete,
//! as the `.npy` writer does.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::json_lines::JsonLinesWriter;

pub struct SparseJsonlWriter(JsonLinesWriter);

#[derive(serde::Serialize)]
struct Line<'a> {
    id: &'a str,
    indices: &'a [u32],
    values: &'a [f32],
}

impl SparseJsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        JsonLinesWriter::create(path).map(SparseJsonlWriter)
    }

    /// Reopens the `.partial` of an interrupted run whose last checkpoint had `rows` lines in
    /// its first `bytes` bytes, dropping anything written after them.
    pub fn resume(path: &Path, rows: u64, bytes: u64) -> Result<Self> {
        JsonLinesWriter::resume(path, rows, bytes).map(SparseJsonlWriter)
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn rows(&self) -> u64 {
        self.0.lines()
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes()
    }

    /// Makes every line written so far durable, for a checkpoint.
    pub fn sync(&mut self) -> Result<()> {
        self.0.sync()
    }

    /// Appends one row; `indices` ascending, one value each.
    pub fn write_row(&mut self, id: &str, indices: &[u32], values: &[f32]) -> Result<()> {
        self.0.write(&Line {
            id,
            indices,
            values,
        })
    }

    /// Syncs and renames the file to its final name.
    pub fn finish(self) -> Result<PathBuf> {
        self.0.finish()
    }
}
