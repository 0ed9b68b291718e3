//! The output formats of `pool-encode encode`, chosen by the output's extension and the model's
//! kind, behind one writer that streams rows in input order under `<name>.partial`.

use std::path::{Path, PathBuf};

use pool_encode_encoder::model::ModelKind;
use serde::{Deserialize, Serialize};

use crate::dense::{DenseFormat, DenseWriter};
use crate::error::{IoError, Result};
use crate::sparse_jsonl::SparseJsonlWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Dense rows, NumPy float32 `[N, dim]`.
    Npy,
    /// Dense rows, one F32 tensor `embeddings` `[N, dim]`.
    Safetensors,
    /// Sparse rows, `{"id", "indices", "values"}` a line.
    SparseJsonl,
}

impl OutputFormat {
    /// The format a model of `kind` writes to `path`, by its extension.
    pub fn for_output(path: &Path, kind: ModelKind) -> Result<Self> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match (kind, extension) {
            (ModelKind::Dense, "npy") => Ok(OutputFormat::Npy),
            (ModelKind::Dense, "safetensors") => Ok(OutputFormat::Safetensors),
            (ModelKind::Sparse, "jsonl") => Ok(OutputFormat::SparseJsonl),
            (ModelKind::Dense, _) => Err(IoError::format(
                path,
                "unsupported output format for a dense model (supported: .npy, .safetensors)",
            )),
            (ModelKind::Sparse, _) => Err(IoError::format(
                path,
                "unsupported output format for a sparse model (supported: .jsonl)",
            )),
        }
    }

    /// The format a merged output named `path` has, whatever the model's kind.
    pub(crate) fn for_output_name(path: &Path) -> Option<Self> {
        [ModelKind::Dense, ModelKind::Sparse]
            .into_iter()
            .find_map(|kind| Self::for_output(path, kind).ok())
    }

    fn dense(self) -> Option<DenseFormat> {
        match self {
            OutputFormat::Npy => Some(DenseFormat::Npy),
            OutputFormat::Safetensors => Some(DenseFormat::Safetensors),
            OutputFormat::SparseJsonl => None,
        }
    }

    /// Bytes before the first row: a header whose size does not depend on the row count.
    pub(crate) fn header_len(self) -> u64 {
        self.dense().map_or(0, |d| d.header_len() as u64)
    }

    /// The header of a file of `rows` rows of `dim` values.
    pub(crate) fn header(self, rows: u64, dim: usize) -> Vec<u8> {
        self.dense().map_or(Vec::new(), |d| d.header(rows, dim))
    }
}

/// Streams rows to an output of any format; the caller matches on the kind of rows it holds.
pub enum RowWriter {
    Dense(DenseWriter),
    Sparse(SparseJsonlWriter),
}

impl RowWriter {
    pub fn create(path: &Path, format: OutputFormat, dim: usize) -> Result<Self> {
        Ok(match format.dense() {
            Some(dense) => RowWriter::Dense(DenseWriter::create(path, dense, dim)?),
            None => RowWriter::Sparse(SparseJsonlWriter::create(path)?),
        })
    }

    /// Reopens the `.partial` of an interrupted run whose checkpoint had `rows` rows in its
    /// first `bytes` bytes.
    pub fn resume(
        path: &Path,
        format: OutputFormat,
        dim: usize,
        rows: u64,
        bytes: u64,
    ) -> Result<Self> {
        Ok(match format.dense() {
            Some(dense) => RowWriter::Dense(DenseWriter::resume(path, dense, dim, rows)?),
            None => RowWriter::Sparse(SparseJsonlWriter::resume(path, rows, bytes)?),
        })
    }

    pub fn rows(&self) -> u64 {
        match self {
            RowWriter::Dense(w) => w.rows(),
            RowWriter::Sparse(w) => w.rows(),
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            RowWriter::Dense(w) => w.bytes(),
            RowWriter::Sparse(w) => w.bytes(),
        }
    }

    /// Appends dense rows given as one row-major slice.
    pub fn write_dense(&mut self, values: &[f32]) -> Result<()> {
        match self {
            RowWriter::Dense(w) => w.write_rows(values),
            RowWriter::Sparse(w) => Err(IoError::format(
                w.path(),
                "dense rows cannot go to a sparse output",
            )),
        }
    }

    /// Appends one sparse row (`indices` ascending, a value each).
    pub fn write_sparse(&mut self, id: &str, indices: &[u32], values: &[f32]) -> Result<()> {
        match self {
            RowWriter::Sparse(w) => w.write_row(id, indices, values),
            RowWriter::Dense(w) => Err(IoError::format(
                w.path(),
                "sparse rows cannot go to a dense output",
            )),
        }
    }

    pub fn sync(&mut self) -> Result<()> {
        match self {
            RowWriter::Dense(w) => w.sync(),
            RowWriter::Sparse(w) => w.sync(),
        }
    }

    /// Completes the file and gives it its final name.
    pub fn finish(self) -> Result<PathBuf> {
        match self {
            RowWriter::Dense(w) => w.finish(),
            RowWriter::Sparse(w) => w.finish(),
        }
    }
}
