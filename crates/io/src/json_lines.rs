//! JSON lines appended under `<name>.partial`, counted and sized for checkpoints, cut back on
//! a resume and renamed when complete: what sparse outputs and rejects files have in common.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::dense::{partial_path, reopen_partial, sync};
use crate::error::{IoError, Result};

pub struct JsonLinesWriter {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    lines: u64,
    /// Bytes written so far (what a checkpoint records, to cut a resumed file back to).
    bytes: u64,
}

impl JsonLinesWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let partial = partial_path(path);
        let file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
        Ok(JsonLinesWriter {
            path: path.to_path_buf(),
            partial,
            file,
            lines: 0,
            bytes: 0,
        })
    }

    /// Reopens the `.partial` of an interrupted run whose last checkpoint had `lines` lines in
    /// its first `bytes` bytes, dropping anything written after them.
    pub fn resume(path: &Path, lines: u64, bytes: u64) -> Result<Self> {
        let (partial, file) = reopen_partial(path, bytes)?;
        Ok(JsonLinesWriter {
            path: path.to_path_buf(),
            partial,
            file,
            lines,
            bytes,
        })
    }

    /// Appends `value` as one line.
    pub fn write(&mut self, value: &impl serde::Serialize) -> Result<()> {
        let mut text = serde_json::to_vec(value)
            .map_err(std::io::Error::from)
            .map_err(IoError::io(&self.partial))?;
        text.push(b'\n');
        self.file
            .write_all(&text)
            .map_err(IoError::io(&self.partial))?;
        self.lines += 1;
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes every line written so far durable, for a checkpoint.
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
