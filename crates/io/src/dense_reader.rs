//! Dense embeddings read back from any file pool-encode writes them to (`.npy`, `.safetensors`,
//! `.parquet`), float32 or quantized, a block of rows at a time so a file larger than memory can
//! be streamed ([`DenseReader`]) or read whole ([`read_dense`]).
//!
//! The format is told by the file's content, not its name. Besides pool-encode's own outputs
//! this reads `.npy` files of float64 (given back as float32, as ST's float rows would be) and
//! 1-D arrays (one column), and the `embeddings` tensor of any `.safetensors` file, so ranges,
//! calibration sets and reference rows saved by NumPy or ST load too.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int8Type, UInt8Type};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use pool_encode_encoder::Embeddings;

use crate::dense::{ValueType, f32_bytes, f32_values};
use crate::error::{IoError, Result};
use crate::parquet::arrow_type;

/// About this many bytes of values a block.
const BLOCK_BYTES: usize = 8 << 20;

/// A safetensors header longer than this is not an embeddings file (the format's own limit).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Rows read back: their values' little-endian bytes row-major, and their ids where the file
/// keeps them (Parquet).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseRows {
    pub ids: Option<Vec<String>>,
    pub bytes: Vec<u8>,
    pub values: ValueType,
    pub rows: usize,
    pub dim: usize,
}

impl DenseRows {
    /// The values as floats; an error naming `path` if they are quantized.
    pub fn f32_values(&self, path: &Path) -> Result<Vec<f32>> {
        match self.values {
            ValueType::F32 => Ok(f32_values(&self.bytes).collect()),
            values => Err(not_floats(path, values)),
        }
    }
}

fn not_floats(path: &Path, values: ValueType) -> IoError {
    IoError::format(
        path,
        format!("holds {} values, not float32 embeddings", values.name()),
    )
}

/// Reads a dense file whole.
pub fn read_dense(path: &Path) -> Result<DenseRows> {
    let mut reader = DenseReader::open(path)?;
    let mut all = DenseRows {
        ids: reader.has_ids().then(Vec::new),
        bytes: Vec::new(),
        values: reader.values(),
        rows: 0,
        dim: reader.dim(),
    };
    while let Some(block) = reader.next_block()? {
        all.bytes.extend_from_slice(&block.bytes);
        all.rows += block.rows;
        if let (Some(ids), Some(more)) = (&mut all.ids, block.ids) {
            ids.extend(more);
        }
    }
    Ok(all)
}

/// Reads float embeddings whole (a quantized file is an error).
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    let rows = read_dense(path)?;
    Ok(Embeddings::new(rows.f32_values(path)?, rows.rows, rows.dim))
}

/// The element type as stored; float64 is read as float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Values(ValueType),
    F64,
}

impl Stored {
    fn width(self) -> usize {
        match self {
            Stored::Values(values) => values.size(),
            Stored::F64 => 8,
        }
    }

    fn values(self) -> ValueType {
        match self {
            Stored::Values(values) => values,
            Stored::F64 => ValueType::F32,
        }
    }

    /// The type `name` names in a format where float64 is `f64` and the others `name_of`.
    fn named(name: &str, f64: &str, name_of: fn(ValueType) -> &'static str) -> Option<Stored> {
        if name == f64 {
            return Some(Stored::F64);
        }
        ValueType::find(|v| name_of(v) == name).map(Stored::Values)
    }
}

enum Source {
    /// `.npy` and `.safetensors`: the rows back to back, `left` of them still to read.
    Contiguous {
        file: BufReader<File>,
        stored: Stored,
        left: u64,
    },
    Parquet {
        batches: ParquetRecordBatchReader,
        has_ids: bool,
    },
}

/// Streams a dense file's rows a block at a time.
pub struct DenseReader {
    path: PathBuf,
    source: Source,
    values: ValueType,
    rows: u64,
    dim: usize,
}

impl DenseReader {
    /// Opens `path` and checks its header against its size, so a truncated file is an error here
    /// rather than part-way through.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(IoError::io(path))?;
        let length = file.metadata().map_err(IoError::io(path))?.len();
        let mut magic = [0u8; 6];
        let read = read_up_to(&mut file, &mut magic).map_err(IoError::io(path))?;
        file.seek(SeekFrom::Start(0)).map_err(IoError::io(path))?;
        match &magic[..read] {
            b"\x93NUMPY" => Self::contiguous(path, file, length, npy_layout),
            [b'P', b'A', b'R', b'1', ..] => Self::parquet(path, file),
            _ if read >= 6 => Self::contiguous(path, file, length, safetensors_layout),
            _ => Err(IoError::format(
                path,
                "not an embeddings file (.npy, .safetensors or .parquet)",
            )),
        }
    }

    fn contiguous(
        path: &Path,
        mut file: File,
        length: u64,
        layout: fn(&Path, &mut File, u64) -> Result<Layout>,
    ) -> Result<Self> {
        let layout = layout(path, &mut file, length)?;
        let data = (layout.rows as u64)
            .checked_mul(layout.dim as u64)
            .and_then(|n| n.checked_mul(layout.stored.width() as u64));
        if data.and_then(|d| d.checked_add(layout.start)) != Some(layout.end) || layout.end > length
        {
            return Err(IoError::format(
                path,
                format!(
                    "holds {length} bytes, not the {} rows of {} values its header gives (truncated or damaged)",
                    layout.rows, layout.dim
                ),
            ));
        }
        file.seek(SeekFrom::Start(layout.start))
            .map_err(IoError::io(path))?;
        Ok(DenseReader {
            path: path.to_path_buf(),
            source: Source::Contiguous {
                file: BufReader::with_capacity(1 << 20, file),
                stored: layout.stored,
                left: layout.rows as u64,
            },
            values: layout.stored.values(),
            rows: layout.rows as u64,
            dim: layout.dim,
        })
    }

    fn parquet(path: &Path, file: File) -> Result<Self> {
        let bad = |e: parquet::errors::ParquetError| {
            IoError::format(path, format!("not a readable Parquet file: {e}"))
        };
        let not_dense = |why: String| {
            IoError::format(
                path,
                format!(
                    "not a dense embeddings file: {why} (pool-encode writes \"id\" and \"embedding\")"
                ),
            )
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
        let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let schema = builder.schema().clone();
        let (embedding, field) = schema
            .column_with_name("embedding")
            .ok_or_else(|| not_dense("no column \"embedding\"".into()))?;
        let (dim, values) = match field.data_type() {
            DataType::FixedSizeList(item, dim) => (
                *dim as usize,
                ValueType::find(|v| arrow_type(v) == *item.data_type()).ok_or_else(|| {
                    not_dense(format!(
                        "\"embedding\" holds lists of {}, not float32, int8 or uint8",
                        item.data_type()
                    ))
                })?,
            ),
            other => {
                return Err(not_dense(format!(
                    "\"embedding\" is {other}, not a fixed-size list"
                )));
            }
        };
        let id = schema
            .column_with_name("id")
            .filter(|(_, f)| f.data_type() == &DataType::Utf8)
            .map(|(i, _)| i);
        let mask =
            ProjectionMask::roots(builder.parquet_schema(), id.into_iter().chain([embedding]));
        let batch_rows = (BLOCK_BYTES / (dim * values.size()).max(1)).max(1);
        let batches = builder
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()
            .map_err(bad)?;
        Ok(DenseReader {
            path: path.to_path_buf(),
            source: Source::Parquet {
                batches,
                has_ids: id.is_some(),
            },
            values,
            rows,
            dim,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Values a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The type of the values [`next_block`](Self::next_block) gives.
    pub fn values(&self) -> ValueType {
        self.values
    }

    /// Whether rows come with ids (a Parquet file with a string column `id`).
    pub fn has_ids(&self) -> bool {
        matches!(self.source, Source::Parquet { has_ids: true, .. })
    }

    /// The next rows (at least one, about 8 MiB of values), or `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<DenseRows>> {
        let path = &self.path;
        let row_bytes = (self.dim * self.values.size()).max(1);
        match &mut self.source {
            Source::Contiguous { file, stored, left } => {
                if *left == 0 {
                    return Ok(None);
                }
                let rows = (*left).min((BLOCK_BYTES / row_bytes).max(1) as u64) as usize;
                let mut bytes = vec![0u8; rows * self.dim * stored.width()];
                file.read_exact(&mut bytes).map_err(IoError::io(path))?;
                if *stored == Stored::F64 {
                    let floats: Vec<f32> = bytes
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                        .collect();
                    bytes = f32_bytes(&floats);
                }
                *left -= rows as u64;
                Ok(Some(DenseRows {
                    ids: None,
                    bytes,
                    values: self.values,
                    rows,
                    dim: self.dim,
                }))
            }
            Source::Parquet { batches, has_ids } => {
                let Some(batch) = batches.next() else {
                    return Ok(None);
                };
                let batch = batch
                    .map_err(|e| IoError::format(path, format!("cannot read Parquet data: {e}")))?;
                let rows = batch.num_rows();
                let ids = has_ids.then(|| {
                    batch
                        .column_by_name("id")
                        .expect("projected")
                        .as_string::<i32>()
                        .iter()
                        .map(|id| id.unwrap_or_default().to_string())
                        .collect()
                });
                let list = batch
                    .column_by_name("embedding")
                    .expect("projected")
                    .as_fixed_size_list();
                let items = list.values();
                if list.null_count() > 0 || items.len() != rows * self.dim {
                    return Err(IoError::format(
                        path,
                        "\"embedding\" has missing values (null rows or items)",
                    ));
                }
                let bytes = match self.values {
                    ValueType::F32 => f32_bytes(items.as_primitive::<Float32Type>().values()),
                    ValueType::I8 => {
                        let ints = items.as_primitive::<Int8Type>().values();
                        ints.iter().map(|&v| v as u8).collect()
                    }
                    ValueType::U8 => items.as_primitive::<UInt8Type>().values().to_vec(),
                };
                Ok(Some(DenseRows {
                    ids,
                    bytes,
                    values: self.values,
                    rows,
                    dim: self.dim,
                }))
            }
        }
    }
}

/// Where a contiguous file's rows start and end, and their shape and type.
struct Layout {
    start: u64,
    end: u64,
    rows: usize,
    dim: usize,
    stored: Stored,
}

fn read_up_to(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match file.read(&mut buffer[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

/// A `.npy` header (format 1–3, C order, 1-D or 2-D, little-endian float32 / float64, int8 or
/// uint8).
fn npy_layout(path: &Path, file: &mut File, length: u64) -> Result<Layout> {
    let bad = |m: &str| IoError::format(path, format!("not a supported .npy file: {m}"));
    let mut prefix = [0u8; 12];
    let read = read_up_to(file, &mut prefix).map_err(IoError::io(path))?;
    let (header_len, start) = match prefix[6] {
        1 if read >= 10 => (u16::from_le_bytes([prefix[8], prefix[9]]) as u64, 10),
        2 | 3 if read >= 12 => (
            u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as u64,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    if start + header_len > length {
        return Err(bad("truncated header"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(IoError::io(path))?;
    let dict = std::str::from_utf8(&header).map_err(|_| bad("header is not text"))?;
    let field = |key: &str| {
        let at = dict.find(&format!("'{key}':"))? + key.len() + 3;
        Some(dict[at..].trim_start())
    };
    let descr = field("descr")
        .and_then(|d| d.strip_prefix('\'')?.split_once('\''))
        .ok_or_else(|| bad("no descr"))?
        .0;
    let stored = Stored::named(descr, "<f8", ValueType::npy_descr)
        .ok_or_else(|| bad("dtype must be little-endian float32 or float64, int8 or uint8"))?;
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran order"));
    }
    let shape = field("shape").ok_or_else(|| bad("no shape"))?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .ok_or_else(|| bad("bad shape"))?
        .0;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let (rows, dim) = match dims[..] {
        [rows, dim] => (rows, dim),
        [rows] => (rows, 1),
        _ => return Err(bad("expected a 1-D or 2-D array")),
    };
    Ok(Layout {
        start: start + header_len,
        end: length,
        rows,
        dim,
        stored,
    })
}

/// A `.safetensors` file's tensor `embeddings` (or its only tensor), 1-D or 2-D.
fn safetensors_layout(path: &Path, file: &mut File, length: u64) -> Result<Layout> {
    let bad = |m: String| IoError::format(path, format!("not a supported .safetensors file: {m}"));
    let mut size = [0u8; 8];
    file.read_exact(&mut size).map_err(IoError::io(path))?;
    let header_len = u64::from_le_bytes(size);
    if header_len > MAX_SAFETENSORS_HEADER || 8 + header_len > length {
        return Err(IoError::format(
            path,
            "not an embeddings file (.npy, .safetensors or .parquet)",
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(IoError::io(path))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let tensors: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    let name = match tensors[..] {
        _ if header.contains_key("embeddings") => "embeddings",
        [only] => only.as_str(),
        _ => return Err(bad("no tensor named \"embeddings\"".into())),
    };
    #[derive(serde::Deserialize)]
    struct Tensor {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [u64; 2],
    }
    let tensor: Tensor = serde_json::from_value(header[name].clone())
        .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
    let stored =
        Stored::named(&tensor.dtype, "F64", ValueType::safetensors_dtype).ok_or_else(|| {
            bad(format!(
                "tensor {name:?} is {}: expected F32, F64, I8 or U8",
                tensor.dtype
            ))
        })?;
    let (rows, dim) = match tensor.shape[..] {
        [rows, dim] => (rows, dim),
        [rows] => (rows, 1),
        _ => return Err(bad(format!("tensor {name:?} is not 1-D or 2-D"))),
    };
    let [begin, end] = tensor.data_offsets;
    let data = 8 + header_len;
    let expected = (rows as u64)
        .checked_mul(dim as u64)
        .and_then(|n| n.checked_mul(stored.width() as u64));
    if end < begin || expected != Some(end - begin) {
        return Err(bad(format!(
            "tensor {name:?}: data offsets {begin}..{end} do not match its shape"
        )));
    }
    Ok(Layout {
        // Other tensors (a saved file's texts) may follow the rows.
        start: data + begin,
        end: data + end,
        rows,
        dim,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OutputFormat, RowWriter, save_embeddings};

    /// Rows of `dim` distinct floats, enough of them for several blocks.
    fn floats(rows: usize, dim: usize) -> Vec<f32> {
        (0..rows * dim).map(|i| i as f32 * 0.25 - 7.0).collect()
    }

    fn read_in_blocks(path: &Path) -> (Vec<DenseRows>, DenseRows) {
        let mut reader = DenseReader::open(path).unwrap();
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block().unwrap() {
            assert!(block.rows > 0);
            blocks.push(block);
        }
        (blocks, read_dense(path).unwrap())
    }

    #[test]
    fn every_output_format_reads_back_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // 1,536 bytes a row: 12,000 rows are three blocks of at most 8 MiB.
        let (rows, dim) = (12_000, 384);
        let values = floats(rows, dim);
        let ids: Vec<String> = (0..rows).map(|i| format!("doc-{i}")).collect();
        for format in [
            OutputFormat::Npy,
            OutputFormat::Safetensors,
            OutputFormat::DenseParquet,
        ] {
            let path = dir.path().join(format!("out.{}", format.extension()));
            let mut writer = RowWriter::create(&path, format, dim, ValueType::F32).unwrap();
            writer
                .write_dense(&f32_bytes(&values), |i| ids[i].as_str())
                .unwrap();
            writer.finish().unwrap();

            let (blocks, whole) = read_in_blocks(&path);
            assert!(blocks.len() >= 2, "{format:?}: {} blocks", blocks.len());
            let joined: Vec<u8> = blocks.iter().flat_map(|b| b.bytes.clone()).collect();
            assert_eq!(joined, whole.bytes, "{format:?}");
            assert_eq!(whole.f32_values(&path).unwrap(), values, "{format:?}");
            assert_eq!((whole.rows, whole.dim), (rows, dim), "{format:?}");
            let expected_ids = format.has_ids().then(|| ids.clone());
            assert_eq!(whole.ids, expected_ids, "{format:?}");
        }
    }

    #[test]
    fn quantized_parquet_and_empty_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [0u8, 1, 127, 128, 200, 255];
        for values in [ValueType::I8, ValueType::U8] {
            let path = dir.path().join("q.parquet");
            let mut writer =
                RowWriter::create(&path, OutputFormat::DenseParquet, 3, values).unwrap();
            writer.write_dense(&bytes, |i| ["a", "b"][i]).unwrap();
            writer.finish().unwrap();
            let read = read_dense(&path).unwrap();
            assert_eq!(
                (read.ids.clone(), read.bytes.clone(), read.values),
                (Some(vec!["a".into(), "b".into()]), bytes.to_vec(), values)
            );
            let error = read.f32_values(&path).unwrap_err().to_string();
            assert!(error.contains(values.name()), "{error}");
        }
        for format in [
            OutputFormat::Npy,
            OutputFormat::Safetensors,
            OutputFormat::DenseParquet,
        ] {
            let path = dir.path().join(format!("empty.{}", format.extension()));
            RowWriter::create(&path, format, 4, ValueType::F32)
                .unwrap()
                .finish()
                .unwrap();
            let read = read_dense(&path).unwrap();
            assert_eq!((read.rows, read.dim, read.bytes.len()), (0, 4, 0));
        }
    }

    /// Files from elsewhere: NumPy's float64 and 1-D arrays, a saved file with texts after the
    /// rows, a safetensors file whose one tensor has another name.
    #[test]
    fn numpy_and_saved_files_read_as_float32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f64.npy");
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
        let header = format!("{dict:<117}\n");
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        for v in [1.5f64, -2.0, 1e-3] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, file).unwrap();
        let read = |path: &Path| read_embeddings(path).unwrap();
        assert_eq!(read(&path), Embeddings::new(vec![1.5, -2.0, 1e-3], 3, 1));

        let saved = dir.path().join("saved.safetensors");
        let embeddings = Embeddings::new(floats(3, 2), 3, 2);
        let texts: Vec<String> = ["a", "bé", "c"].map(String::from).to_vec();
        save_embeddings(&saved, &embeddings, Some(&texts)).unwrap();
        assert_eq!(read(&saved), embeddings);

        let other = dir.path().join("other.safetensors");
        let data = f32_bytes(&[1.0, 2.0]);
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 2], &data)
            .unwrap();
        safetensors::serialize_to_file([("ranges", view)], None, &other).unwrap();
        assert_eq!(read(&other), Embeddings::new(vec![1.0, 2.0], 1, 2));
    }

    #[test]
    fn damaged_and_foreign_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.npy");
        let mut writer = RowWriter::create(&good, OutputFormat::Npy, 2, ValueType::F32).unwrap();
        writer
            .write_dense(&f32_bytes(&floats(3, 2)), |_| "")
            .unwrap();
        writer.finish().unwrap();
        let good_st = dir.path().join("good.safetensors");
        let mut writer =
            RowWriter::create(&good_st, OutputFormat::Safetensors, 2, ValueType::F32).unwrap();
        writer
            .write_dense(&f32_bytes(&floats(3, 2)), |_| "")
            .unwrap();
        writer.finish().unwrap();
        let sparse = dir.path().join("sparse.parquet");
        let mut writer =
            RowWriter::create(&sparse, OutputFormat::SparseParquet, 0, ValueType::F32).unwrap();
        writer.write_sparse("a", &[1, 5], &[0.5, 0.25]).unwrap();
        writer.finish().unwrap();

        let cut = |from: &Path, name: &str, drop: usize| {
            let bytes = std::fs::read(from).unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes[..bytes.len() - drop]).unwrap();
            path
        };
        let cases = [
            (cut(&good, "cut.npy", 3), "truncated"),
            (cut(&good_st, "cut.safetensors", 4), "truncated"),
            (cut(&good, "header.npy", 24 + 60), "truncated header"),
            (sparse, "no column \"embedding\""),
            (dir.path().join("missing.npy"), "No such file"),
        ];
        std::fs::write(dir.path().join("text.npy"), "id,text\n1,hello\n").unwrap();
        std::fs::write(dir.path().join("empty.npy"), "").unwrap();
        let foreign = [
            (dir.path().join("text.npy"), "not an embeddings file"),
            (dir.path().join("empty.npy"), "not an embeddings file"),
        ];
        for (path, expected) in cases.into_iter().chain(foreign) {
            let error = match DenseReader::open(&path) {
                Ok(_) => panic!("{}: opened", path.display()),
                Err(e) => e.to_string(),
            };
            assert!(
                error.contains(&*path.to_string_lossy()) && error.contains(expected),
                "{}: {error}",
                path.display()
            );
        }
    }
}
