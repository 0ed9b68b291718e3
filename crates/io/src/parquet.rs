//! Parquet in and out.
//!
//! Input: the texts in a string column (`text` unless told), the ids in an optional string or
//! integer column; read a batch of rows at a time, so memory stays flat. A record's "line" in
//! errors is its 1-based row.
//!
//! Output: dense rows as `id` (string) + `embedding` (fixed-size list of float32, or of int8 /
//! uint8 for quantized embeddings); sparse rows as
//! `id` + `indices` (list of uint32, ascending) + `values` (list of float32). A Parquet file
//! cannot be appended to once its footer is written, nor resumed without one, so rows are
//! staged in a plain binary file as they arrive (resumable like every other output) and the
//! Parquet file is written from it when the run completes, in row groups of bounded size.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder, UInt32Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int8Array, RecordBatch, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;

use crate::dense::{ValueType, f32_values, partial_path, reopen_partial, sync};
use crate::error::{IoError, Result};

/// Rows per batch read from an input file.
const READ_BATCH: usize = 1024;

/// The text (and id) columns of a Parquet input, a row at a time.
pub(crate) struct ParquetTexts {
    path: PathBuf,
    text_field: String,
    id_field: Option<String>,
    reader: ParquetRecordBatchReader,
    batch: Option<(ArrayRef, Option<ArrayRef>)>,
    row: usize,
    /// Rows in the file.
    pub rows: u64,
}

impl ParquetTexts {
    /// Opens `path` at row `offset`, checking the columns exist and hold strings (ids: or
    /// integers).
    pub fn open(
        path: &Path,
        text_field: &str,
        id_field: Option<&str>,
        offset: u64,
    ) -> Result<Self> {
        let file = File::open(path).map_err(IoError::io(path))?;
        let bad = |e: parquet::errors::ParquetError| {
            IoError::format(path, format!("not a readable Parquet file: {e}"))
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
        let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let schema = builder.schema().clone();
        let column = |name: &str, what: &str, allowed: &dyn Fn(&DataType) -> bool| {
            let (index, field) = schema.column_with_name(name).ok_or_else(|| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                IoError::format(
                    path,
                    format!("has no column {name:?} (its columns: {})", names.join(", ")),
                )
            })?;
            if !allowed(field.data_type()) {
                return Err(IoError::format(
                    path,
                    format!(
                        "column {name:?} must hold {what}, not {}",
                        field.data_type()
                    ),
                ));
            }
            Ok(index)
        };
        let strings =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let mut indices = vec![column(text_field, "strings", &strings)?];
        if let Some(id) = id_field {
            let ids = |t: &DataType| {
                strings(t)
                    || matches!(
                        t,
                        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
                    )
            };
            indices.push(column(id, "strings or integers", &ids)?);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH)
            .with_offset(offset.min(rows) as usize)
            .build()
            .map_err(bad)?;
        Ok(ParquetTexts {
            path: path.to_path_buf(),
            text_field: text_field.into(),
            id_field: id_field.map(Into::into),
            reader,
            batch: None,
            row: 0,
            rows,
        })
    }

    /// The next row's `(id, text)`, each `None` where null; `line` for errors.
    pub fn next_row(&mut self, line: u64) -> Option<Result<(Option<String>, Option<String>)>> {
        loop {
            if let Some((text, id)) = &self.batch
                && self.row < text.len()
            {
                let row = self.row;
                self.row += 1;
                let id = id.as_ref().and_then(|ids| value_string(ids.as_ref(), row));
                return Some(Ok((id, value_string(text.as_ref(), row))));
            }
            let batch = match self.reader.next()? {
                Ok(batch) => batch,
                Err(e) => {
                    return Some(Err(IoError::Record {
                        path: self.path.clone(),
                        line,
                        message: format!("cannot read Parquet data: {e}"),
                    }));
                }
            };
            let text = batch
                .column_by_name(&self.text_field)
                .cloned()
                .expect("projected");
            let id = self
                .id_field
                .as_deref()
                .map(|f| batch.column_by_name(f).cloned().expect("projected"));
            self.batch = Some((text, id));
            self.row = 0;
        }
    }
}

/// A string or integer cell as text; `None` if null.
fn value_string(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => array.as_string_view().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        other => unreachable!("column type {other} was checked at open"),
    })
}

/// The shape of the rows a Parquet output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParquetRows {
    Dense { dim: usize, values: ValueType },
    Sparse,
}

/// The list items of a Parquet output's column of values of `data_type`.
fn item(data_type: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", data_type, false))
}

pub(crate) fn arrow_type(values: ValueType) -> DataType {
    match values {
        ValueType::F32 => DataType::Float32,
        ValueType::I8 => DataType::Int8,
        ValueType::U8 => DataType::UInt8,
    }
}

impl ParquetRows {
    fn schema(self) -> SchemaRef {
        let id = Field::new("id", DataType::Utf8, false);
        Arc::new(Schema::new(match self {
            ParquetRows::Dense { dim, values } => vec![
                id,
                Field::new(
                    "embedding",
                    DataType::FixedSizeList(item(arrow_type(values)), dim as i32),
                    false,
                ),
            ],
            ParquetRows::Sparse => vec![
                id,
                Field::new("indices", DataType::List(item(DataType::UInt32)), false),
                Field::new("values", DataType::List(item(DataType::Float32)), false),
            ],
        }))
    }

    /// Rows per row group: about 64 MiB of dense values; sparse rows are small.
    fn group_rows(self) -> usize {
        match self.dense_row_bytes() {
            Some(bytes) => ((64 << 20) / bytes).clamp(1024, 1 << 20),
            None => 65536,
        }
    }

    /// Bytes of a dense row's values.
    fn dense_row_bytes(self) -> Option<usize> {
        match self {
            ParquetRows::Dense { dim, values } => Some((dim * values.size()).max(1)),
            ParquetRows::Sparse => None,
        }
    }

    fn writer(self, file: File) -> parquet::errors::Result<ArrowWriter<File>> {
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(self.group_rows()))
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        ArrowWriter::try_new(file, self.schema(), Some(properties))
    }
}

/// Streams rows to a Parquet output: staged under `<name>.partial` as
/// `[u32 id length][id][dense: dim values | sparse: u32 nnz, nnz u32 indices, nnz f32 values]`
/// per row, converted when [`finish`](Self::finish) is called.
pub struct ParquetWriter {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    rows_kind: ParquetRows,
    rows: u64,
    bytes: u64,
    buffer: Vec<u8>,
}

impl ParquetWriter {
    pub(crate) fn create(path: &Path, rows_kind: ParquetRows) -> Result<Self> {
        let partial = partial_path(path);
        let file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
        Ok(Self::with(path, partial, file, rows_kind, 0, 0))
    }

    pub(crate) fn resume(
        path: &Path,
        rows_kind: ParquetRows,
        rows: u64,
        bytes: u64,
    ) -> Result<Self> {
        let (partial, file) = reopen_partial(path, bytes)?;
        Ok(Self::with(path, partial, file, rows_kind, rows, bytes))
    }

    fn with(
        path: &Path,
        partial: PathBuf,
        file: BufWriter<File>,
        rows_kind: ParquetRows,
        rows: u64,
        bytes: u64,
    ) -> Self {
        ParquetWriter {
            path: path.to_path_buf(),
            partial,
            file,
            rows_kind,
            rows,
            bytes,
            buffer: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The staging file holding the rows so far.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of a dense row's values; `None` for a sparse output.
    pub fn dense_row_bytes(&self) -> Option<usize> {
        self.rows_kind.dense_row_bytes()
    }

    pub fn sync(&mut self) -> Result<()> {
        sync(&mut self.file, &self.partial)
    }

    fn append(&mut self) -> Result<()> {
        self.file
            .write_all(&self.buffer)
            .map_err(IoError::io(&self.partial))?;
        self.rows += 1;
        self.bytes += self.buffer.len() as u64;
        Ok(())
    }

    fn start_row(&mut self, id: &str) {
        self.buffer.clear();
        self.buffer
            .extend_from_slice(&(id.len() as u32).to_le_bytes());
        self.buffer.extend_from_slice(id.as_bytes());
    }

    /// One dense row: its values' little-endian bytes.
    pub fn write_dense_row(&mut self, id: &str, row: &[u8]) -> Result<()> {
        self.start_row(id);
        self.buffer.extend_from_slice(row);
        self.append()
    }

    pub fn write_sparse_row(&mut self, id: &str, indices: &[u32], values: &[f32]) -> Result<()> {
        self.start_row(id);
        self.buffer
            .extend_from_slice(&(indices.len() as u32).to_le_bytes());
        for i in indices {
            self.buffer.extend_from_slice(&i.to_le_bytes());
        }
        for v in values {
            self.buffer.extend_from_slice(&v.to_le_bytes());
        }
        self.append()
    }

    /// Writes the Parquet file from the staged rows (under `<name>.parquet-tmp`, then renamed)
    /// and removes the staging file.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.sync()?;
        drop(self.file);
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".parquet-tmp");
        let temporary = self.path.with_file_name(name);
        let staged = File::open(&self.partial).map_err(IoError::io(&self.partial))?;
        let mut reader = BufReader::with_capacity(1 << 20, staged);
        let out = File::create(&temporary).map_err(IoError::io(&temporary))?;
        let parquet_error = |e: parquet::errors::ParquetError| {
            IoError::format(&temporary, format!("cannot write Parquet: {e}"))
        };
        let mut writer = self.rows_kind.writer(out).map_err(parquet_error)?;
        let mut left = self.rows;
        while left > 0 {
            let n = left.min(self.rows_kind.group_rows() as u64);
            let batch = read_staged(&mut reader, self.rows_kind, n as usize).map_err(|e| {
                IoError::format(&self.partial, format!("damaged staging file: {e}"))
            })?;
            writer.write(&batch).map_err(parquet_error)?;
            left -= n;
        }
        let file = writer.into_inner().map_err(parquet_error)?;
        file.sync_all().map_err(IoError::io(&temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(IoError::io(&self.path))?;
        std::fs::remove_file(&self.partial).map_err(IoError::io(&self.partial))?;
        Ok(self.path)
    }
}

/// `n` staged rows as one record batch.
fn read_staged(
    reader: &mut impl Read,
    rows_kind: ParquetRows,
    n: usize,
) -> std::io::Result<RecordBatch> {
    let u32_at = |reader: &mut dyn Read| -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        reader.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    };
    let mut ids = StringBuilder::new();
    let mut bytes = Vec::new();
    let columns: Vec<ArrayRef> = match rows_kind {
        ParquetRows::Dense { dim, values } => {
            let row_bytes = dim * values.size();
            let mut data = Vec::with_capacity(n * row_bytes);
            for _ in 0..n {
                let len = u32_at(reader)? as usize;
                bytes.resize(len + row_bytes, 0);
                reader.read_exact(&mut bytes)?;
                ids.append_value(
                    std::str::from_utf8(&bytes[..len]).map_err(std::io::Error::other)?,
                );
                data.extend_from_slice(&bytes[len..]);
            }
            let items: ArrayRef = match values {
                ValueType::F32 => Arc::new(Float32Array::from_iter_values(f32_values(&data))),
                ValueType::I8 => {
                    Arc::new(Int8Array::from_iter_values(data.iter().map(|&b| b as i8)))
                }
                ValueType::U8 => Arc::new(UInt8Array::from(data)),
            };
            let embedding =
                FixedSizeListArray::try_new(item(arrow_type(values)), dim as i32, items, None)
                    .map_err(std::io::Error::other)?;
            vec![Arc::new(ids.finish()), Arc::new(embedding)]
        }
        ParquetRows::Sparse => {
            let mut indices =
                ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
            let mut values =
                ListBuilder::new(Float32Builder::new()).with_field(item(DataType::Float32));
            for _ in 0..n {
                let len = u32_at(reader)? as usize;
                bytes.resize(len, 0);
                reader.read_exact(&mut bytes)?;
                ids.append_value(std::str::from_utf8(&bytes).map_err(std::io::Error::other)?);
                let nnz = u32_at(reader)? as usize;
                bytes.resize(8 * nnz, 0);
                reader.read_exact(&mut bytes)?;
                let (i, v) = bytes.split_at(4 * nnz);
                for b in i.chunks_exact(4) {
                    indices
                        .values()
                        .append_value(u32::from_le_bytes(b.try_into().expect("4")));
                }
                values.values().extend(f32_values(v).map(Some));
                indices.append(true);
                values.append(true);
            }
            vec![
                Arc::new(ids.finish()),
                Arc::new(indices.finish()),
                Arc::new(values.finish()),
            ]
        }
    };
    RecordBatch::try_new(rows_kind.schema(), columns).map_err(std::io::Error::other)
}

/// Joins Parquet outputs of one kind of rows into `output` (a new file), batch by batch, in the
/// row groups a single run would have written.
pub(crate) fn concatenate(parts: &[PathBuf], output: &Path, rows_kind: ParquetRows) -> Result<()> {
    let out = File::create(output).map_err(IoError::io(output))?;
    let write_error = |e: parquet::errors::ParquetError| {
        IoError::format(output, format!("cannot write Parquet: {e}"))
    };
    let mut writer = rows_kind.writer(out).map_err(write_error)?;
    for part in parts {
        let file = File::open(part).map_err(IoError::io(part))?;
        let read_error = |e: parquet::errors::ParquetError| {
            IoError::format(part, format!("not a readable Parquet file: {e}"))
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(read_error)?
            .build()
            .map_err(read_error)?;
        for batch in reader {
            let batch = batch
                .map_err(|e| IoError::format(part, format!("cannot read Parquet data: {e}")))?;
            // Same columns, but the reader gives its own field metadata: rebuild on our schema.
            let batch = RecordBatch::try_new(rows_kind.schema(), batch.columns().to_vec())
                .map_err(|e| {
                    IoError::format(part, format!("not a pool-encode Parquet output: {e}"))
                })?;
            writer.write(&batch).map_err(write_error)?;
        }
    }
    let file = writer.into_inner().map_err(write_error)?;
    file.sync_all().map_err(IoError::io(output))
}

/// One row of a sparse output: `(id, indices, values)`.
pub type SparseParquetRow = (String, Vec<u32>, Vec<f32>);

/// Reads a sparse Parquet output back, a row at a time.
pub fn read_sparse_parquet(path: &Path) -> Result<Vec<SparseParquetRow>> {
    let mut rows = Vec::new();
    for batch in read_batches(path)? {
        let ids = batch.column(0).as_string::<i32>();
        let (indices, values) = (
            batch.column(1).as_list::<i32>(),
            batch.column(2).as_list::<i32>(),
        );
        for row in 0..batch.num_rows() {
            rows.push((
                ids.value(row).to_string(),
                indices
                    .value(row)
                    .as_primitive::<UInt32Type>()
                    .values()
                    .to_vec(),
                values
                    .value(row)
                    .as_primitive::<arrow_array::types::Float32Type>()
                    .values()
                    .to_vec(),
            ));
        }
    }
    Ok(rows)
}

fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(IoError::io(path))?;
    let bad = |e: parquet::errors::ParquetError| {
        IoError::format(path, format!("not a readable Parquet file: {e}"))
    };
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(bad)?
        .build()
        .map_err(bad)?
        .map(|b| b.map_err(|e| IoError::format(path, format!("cannot read Parquet data: {e}"))))
        .collect()
}
