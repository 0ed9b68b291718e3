//! Sparse rows as JSON lines, `{"id": …, "indices": [ascending ids], "values": [weights]}`,
//! one line per input in input order; written under `<name>.partial` and renamed when complete,
//! as the `.npy` writer does.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::dense::{partial_path, reopen_partial, sync};
use crate::error::{IoError, Result};

pub struct SparseJsonlWriter {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    rows: u64,
    /// Bytes written so far (what a checkpoint records, to cut a resumed file back to).
    bytes: u64,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    id: &'a str,
    indices: &'a [u32],
    values: &'a [f32],
}

impl SparseJsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let partial = partial_path(path);
        let file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
        Ok(SparseJsonlWriter {
            path: path.to_path_buf(),
            partial,
            file,
            rows: 0,
            bytes: 0,
        })
    }

    /// Reopens the `.partial` of an interrupted run whose last checkpoint had `rows` lines in
    /// its first `bytes` bytes, dropping anything written after them.
    pub fn resume(path: &Path, rows: u64, bytes: u64) -> Result<Self> {
        let (partial, file) = reopen_partial(path, bytes)?;
        Ok(SparseJsonlWriter {
            path: path.to_path_buf(),
            partial,
            file,
            rows,
            bytes,
        })
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes every line written so far durable, for a checkpoint.
    pub fn sync(&mut self) -> Result<()> {
        sync(&mut self.file, &self.partial)
    }

    /// Appends one row; `indices` ascending, one value each.
    pub fn write_row(&mut self, id: &str, indices: &[u32], values: &[f32]) -> Result<()> {
        let line = Line {
            id,
            indices,
            values,
        };
        let mut text = serde_json::to_vec(&line)
            .map_err(std::io::Error::from)
            .map_err(IoError::io(&self.partial))?;
        text.push(b'\n');
        self.file
            .write_all(&text)
            .map_err(IoError::io(&self.partial))?;
        self.rows += 1;
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// Flushes, syncs and renames the file to its final name.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.file.flush().map_err(IoError::io(&self.partial))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(IoError::io(&self.partial))?;
        std::fs::rename(&self.partial, &self.path).map_err(IoError::io(&self.path))?;
        Ok(self.path)
    }
}
