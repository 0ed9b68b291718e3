//! The output formats of `pool-encode encode`, chosen by the output's extension and the model's
//! kind, behind one writer that streams rows in input order under `<name>.partial`.

use std::path::{Path, PathBuf};

use pool_encode_encoder::model::ModelKind;
use serde::{Deserialize, Serialize};

use crate::dense::{DenseFormat, DenseWriter, ValueType};
use crate::error::{IoError, Result};
use crate::parquet::{ParquetRows, ParquetWriter};
use crate::sparse_jsonl::SparseJsonlWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Dense rows, NumPy float32 (or int8 / uint8 when quantized) `[N, dim]`.
    Npy,
    /// Dense rows, one F32 (or I8 / U8) tensor `embeddings` `[N, dim]`.
    Safetensors,
    /// Sparse rows, `{"id", "indices", "values"}` a line.
    SparseJsonl,
    /// Dense rows, columns `id` and `embedding` (fixed-size list of float32, or of int8 / uint8).
    DenseParquet,
    /// Sparse rows, columns `id`, `indices` (list of uint32) and `values` (list of float32).
    SparseParquet,
}

impl OutputFormat {
    /// The format a model of `kind` writes to `path`, by its extension.
    pub fn for_output(path: &Path, kind: ModelKind) -> Result<Self> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match (kind, extension) {
            (ModelKind::Dense, "npy") => Ok(OutputFormat::Npy),
            (ModelKind::Dense, "safetensors") => Ok(OutputFormat::Safetensors),
            (ModelKind::Dense, "parquet") => Ok(OutputFormat::DenseParquet),
            (ModelKind::Sparse, "jsonl") => Ok(OutputFormat::SparseJsonl),
            (ModelKind::Sparse, "parquet") => Ok(OutputFormat::SparseParquet),
            (ModelKind::Dense, _) => Err(IoError::format(
                path,
                "unsupported output format for a dense model (supported: .npy, .safetensors, .parquet)",
            )),
            (ModelKind::Sparse, _) => Err(IoError::format(
                path,
                "unsupported output format for a sparse model (supported: .jsonl, .parquet)",
            )),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Npy => "npy",
            OutputFormat::Safetensors => "safetensors",
            OutputFormat::SparseJsonl => "jsonl",
            OutputFormat::DenseParquet | OutputFormat::SparseParquet => "parquet",
        }
    }

    /// Whether each row is written with its record's id.
    pub fn has_ids(self) -> bool {
        !matches!(self, OutputFormat::Npy | OutputFormat::Safetensors)
    }

    fn dense(self) -> Option<DenseFormat> {
        match self {
            OutputFormat::Npy => Some(DenseFormat::Npy),
            OutputFormat::Safetensors => Some(DenseFormat::Safetensors),
            _ => None,
        }
    }

    /// The rows of a Parquet output; `None` for other formats.
    pub(crate) fn parquet(self, dim: usize, values: ValueType) -> Option<ParquetRows> {
        match self {
            OutputFormat::DenseParquet => Some(ParquetRows::Dense { dim, values }),
            OutputFormat::SparseParquet => Some(ParquetRows::Sparse),
            _ => None,
        }
    }

    /// Bytes before the first row: a header whose size does not depend on the row count.
    pub(crate) fn header_len(self) -> u64 {
        self.dense().map_or(0, |d| d.header_len() as u64)
    }

    /// The header of a file of `rows` rows of `dim` values.
    pub(crate) fn header(self, rows: u64, dim: usize, values: ValueType) -> Vec<u8> {
        self.dense()
            .map_or(Vec::new(), |d| d.header(rows, dim, values))
    }
}

/// Streams rows to an output of any format; the caller matches on the kind of rows it holds.
pub enum RowWriter {
    Dense(DenseWriter),
    Sparse(SparseJsonlWriter),
    Parquet(ParquetWriter),
}

impl RowWriter {
    /// A writer of rows of `dim` values of type `values` (dense formats; sparse rows are f32).
    pub fn create(
        path: &Path,
        format: OutputFormat,
        dim: usize,
        values: ValueType,
    ) -> Result<Self> {
        Ok(match (format.dense(), format.parquet(dim, values)) {
            (Some(dense), _) => RowWriter::Dense(DenseWriter::create(path, dense, dim, values)?),
            (_, Some(rows)) => RowWriter::Parquet(ParquetWriter::create(path, rows)?),
            _ => RowWriter::Sparse(SparseJsonlWriter::create(path)?),
        })
    }

    /// Reopens the `.partial` of an interrupted run whose checkpoint had `rows` rows in its
    /// first `bytes` bytes.
    pub fn resume(
        path: &Path,
        format: OutputFormat,
        dim: usize,
        values: ValueType,
        rows: u64,
        bytes: u64,
    ) -> Result<Self> {
        Ok(match (format.dense(), format.parquet(dim, values)) {
            (Some(dense), _) => {
                RowWriter::Dense(DenseWriter::resume(path, dense, dim, values, rows)?)
            }
            (_, Some(kind)) => RowWriter::Parquet(ParquetWriter::resume(path, kind, rows, bytes)?),
            _ => RowWriter::Sparse(SparseJsonlWriter::resume(path, rows, bytes)?),
        })
    }

    pub fn rows(&self) -> u64 {
        match self {
            RowWriter::Dense(w) => w.rows(),
            RowWriter::Sparse(w) => w.rows(),
            RowWriter::Parquet(w) => w.rows(),
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            RowWriter::Dense(w) => w.bytes(),
            RowWriter::Sparse(w) => w.bytes(),
            RowWriter::Parquet(w) => w.bytes(),
        }
    }

    /// Appends dense rows given as their values' little-endian bytes, row-major (whole rows of
    /// the writer's `dim` values of its type; [`f32_bytes`](crate::f32_bytes) makes them from
    /// floats); `id(i)` is row `i`'s record id (for formats that keep ids).
    pub fn write_dense<'a>(&mut self, rows: &[u8], id: impl Fn(usize) -> &'a str) -> Result<()> {
        match self {
            RowWriter::Dense(w) => w.write_rows(rows),
            RowWriter::Parquet(w) => {
                let row_bytes = w.dense_row_bytes().ok_or_else(|| {
                    IoError::format(w.path(), "dense rows cannot go to a sparse output")
                })?;
                rows.chunks_exact(row_bytes)
                    .enumerate()
                    .try_for_each(|(i, row)| w.write_dense_row(id(i), row))
            }
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
            RowWriter::Parquet(w) => w.write_sparse_row(id, indices, values),
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
            RowWriter::Parquet(w) => w.sync(),
        }
    }

    /// Completes the file and gives it its final name.
    pub fn finish(self) -> Result<PathBuf> {
        match self {
            RowWriter::Dense(w) => w.finish(),
            RowWriter::Sparse(w) => w.finish(),
            RowWriter::Parquet(w) => w.finish(),
        }
    }
}
