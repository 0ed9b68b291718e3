//! Dense rows written as they arrive, as NumPy `.npy` (format 1.0, little-endian, C order) or
//! `.safetensors` (one tensor `embeddings` of shape `[N, dim]`), of float32 or, for quantized
//! embeddings, int8 / uint8 ([`ValueType`]). `dense_reader` reads them back.
//!
//! The row count is unknown until the end, so the header is written with room for any count
//! (both formats allow padding it with spaces) and rewritten by [`DenseWriter::finish`]. The file
//! is written under `<name>.partial` and only renamed to its final name once complete, so an
//! interrupted run never leaves an output that looks finished.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use pool_encode_encoder::Quantization;
use serde::{Deserialize, Serialize};

use crate::error::{IoError, Result};

/// What a dense output's values are: float32 embeddings, or quantized ones' bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    F32,
    /// int8 and binary quantization.
    I8,
    /// uint8 and ubinary quantization.
    U8,
}

impl ValueType {
    /// The values of rows quantized so (`None`: float32).
    pub fn of(quantization: Option<Quantization>) -> Self {
        match quantization {
            None => ValueType::F32,
            Some(q) if q.is_signed() => ValueType::I8,
            Some(_) => ValueType::U8,
        }
    }

    /// The type for which `is` holds (a name read from a file matches the type's name in its
    /// format): one mapping per format, used both ways.
    pub(crate) fn find(mut is: impl FnMut(ValueType) -> bool) -> Option<ValueType> {
        [ValueType::F32, ValueType::I8, ValueType::U8]
            .into_iter()
            .find(|&v| is(v))
    }

    /// NumPy's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::F32 => "float32",
            ValueType::I8 => "int8",
            ValueType::U8 => "uint8",
        }
    }

    /// Bytes a value.
    pub fn size(self) -> usize {
        match self {
            ValueType::F32 => 4,
            ValueType::I8 | ValueType::U8 => 1,
        }
    }

    pub(crate) fn npy_descr(self) -> &'static str {
        match self {
            ValueType::F32 => "<f4",
            ValueType::I8 => "|i1",
            ValueType::U8 => "|u1",
        }
    }

    pub(crate) fn safetensors_dtype(self) -> &'static str {
        match self {
            ValueType::F32 => "F32",
            ValueType::I8 => "I8",
            ValueType::U8 => "U8",
        }
    }
}

/// Rows of float32 values as the little-endian bytes the writers take.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The float32 values in little-endian bytes (as files hold them); the inverse of [`f32_bytes`].
pub(crate) fn f32_values(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseFormat {
    Npy,
    Safetensors,
}

impl DenseFormat {
    /// By the file's extension: `.npy` or `.safetensors`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "npy" => Some(DenseFormat::Npy),
            "safetensors" => Some(DenseFormat::Safetensors),
            _ => None,
        }
    }

    /// The header padded to this size fits any u64 row count (and keeps the data 8-aligned).
    pub(crate) fn header_len(self) -> usize {
        match self {
            DenseFormat::Npy => 128,
            DenseFormat::Safetensors => 256,
        }
    }

    pub(crate) fn header(self, rows: u64, dim: usize, values: ValueType) -> Vec<u8> {
        let len = self.header_len();
        let mut h = Vec::with_capacity(len);
        match self {
            DenseFormat::Npy => {
                let dict = format!(
                    "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}",
                    values.npy_descr()
                );
                h.extend_from_slice(b"\x93NUMPY");
                h.extend_from_slice(&[1, 0]);
                h.extend_from_slice(&((len - 10) as u16).to_le_bytes());
                h.extend_from_slice(dict.as_bytes());
                h.resize(len - 1, b' ');
                h.push(b'\n');
            }
            DenseFormat::Safetensors => {
                let bytes = rows * (dim * values.size()) as u64;
                let json = format!(
                    "{{\"embeddings\":{{\"dtype\":\"{}\",\"shape\":[{rows},{dim}],\"data_offsets\":[0,{bytes}]}}}}",
                    values.safetensors_dtype()
                );
                h.extend_from_slice(&((len - 8) as u64).to_le_bytes());
                h.extend_from_slice(json.as_bytes());
                h.resize(len, b' ');
            }
        }
        h
    }
}

/// The temporary name an output is written under until it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Opens `path`'s `.partial` for appending after its first `keep` bytes (what a checkpoint
/// recorded as durable), cutting off anything after them.
pub(crate) fn reopen_partial(path: &Path, keep: u64) -> Result<(PathBuf, BufWriter<File>)> {
    let partial = partial_path(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .map_err(IoError::io(&partial))?;
    let length = file.metadata().map_err(IoError::io(&partial))?.len();
    if length < keep {
        return Err(IoError::format(
            &partial,
            format!("holds {length} bytes, fewer than the {keep} its checkpoint recorded"),
        ));
    }
    file.set_len(keep)
        .and_then(|()| file.seek(SeekFrom::End(0)).map(drop))
        .map_err(IoError::io(&partial))?;
    Ok((partial, BufWriter::new(file)))
}

/// Flushes and syncs a writer's data.
pub(crate) fn sync(file: &mut BufWriter<File>, partial: &Path) -> Result<()> {
    file.flush().map_err(IoError::io(partial))?;
    file.get_ref().sync_data().map_err(IoError::io(partial))
}

pub struct DenseWriter {
    format: DenseFormat,
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    dim: usize,
    values: ValueType,
    rows: u64,
}

impl DenseWriter {
    pub fn create(path: &Path, format: DenseFormat, dim: usize, values: ValueType) -> Result<Self> {
        let partial = partial_path(path);
        let mut file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
        file.write_all(&format.header(0, dim, values))
            .map_err(IoError::io(&partial))?;
        Ok(DenseWriter {
            format,
            path: path.to_path_buf(),
            partial,
            file,
            dim,
            values,
            rows: 0,
        })
    }

    /// Reopens the `.partial` of an interrupted run that had `rows` rows durable (its last
    /// checkpoint), dropping anything written after them.
    pub fn resume(
        path: &Path,
        format: DenseFormat,
        dim: usize,
        values: ValueType,
        rows: u64,
    ) -> Result<Self> {
        let keep = format.header_len() as u64 + rows * (dim * values.size()) as u64;
        let (partial, file) = reopen_partial(path, keep)?;
        Ok(DenseWriter {
            format,
            path: path.to_path_buf(),
            partial,
            file,
            dim,
            values,
            rows,
        })
    }

    /// Makes every row written so far durable, for a checkpoint.
    pub fn sync(&mut self) -> Result<()> {
        sync(&mut self.file, &self.partial)
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes a row takes.
    fn row_bytes(&self) -> usize {
        (self.dim * self.values.size()).max(1)
    }

    /// Bytes of the file so far (header included).
    pub fn bytes(&self) -> u64 {
        self.format.header_len() as u64 + self.rows * (self.dim * self.values.size()) as u64
    }

    /// Appends rows given as their values' little-endian bytes, row-major (whole rows of
    /// `dim` values of the writer's [`ValueType`]; [`f32_bytes`] makes them from floats).
    pub fn write_rows(&mut self, bytes: &[u8]) -> Result<()> {
        assert_eq!(bytes.len() % self.row_bytes(), 0, "write_rows: partial row");
        self.file
            .write_all(bytes)
            .map_err(IoError::io(&self.partial))?;
        self.rows += (bytes.len() / self.row_bytes()) as u64;
        Ok(())
    }

    /// Writes the final header, syncs, and moves the file to its final name.
    pub fn finish(self) -> Result<PathBuf> {
        let io = IoError::io(&self.partial);
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io)?;
        let io = IoError::io(&self.partial);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&self.format.header(self.rows, self.dim, self.values)))
            .and_then(|_| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&self.partial, &self.path).map_err(IoError::io(&self.path))?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense_reader::{read_dense, read_embeddings};

    #[test]
    fn streamed_rows_read_back_and_partial_file_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        let mut writer = DenseWriter::create(&path, DenseFormat::Npy, 3, ValueType::F32).unwrap();
        writer.write_rows(&f32_bytes(&[1.0, 2.0, 3.0])).unwrap();
        writer
            .write_rows(&f32_bytes(&[4.0, 5.0, 6.0, 7.0, 8.0, 9.5]))
            .unwrap();
        assert!(!path.exists(), "final name must not exist before finish");
        assert!(partial_path(&path).exists());
        writer.finish().unwrap();
        assert!(!partial_path(&path).exists());
        let read = read_embeddings(&path).unwrap();
        let (values, rows, dim) = (read.as_slice().to_vec(), read.rows(), read.dim());
        assert_eq!((rows, dim), (3, 3));
        assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.5]);
    }

    #[test]
    fn safetensors_output_is_read_by_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        for rows in [0usize, 3] {
            let path = dir.path().join(format!("out{rows}.safetensors"));
            let mut writer =
                DenseWriter::create(&path, DenseFormat::Safetensors, 2, ValueType::F32).unwrap();
            let values: Vec<f32> = (0..rows * 2).map(|i| i as f32 * 0.5).collect();
            writer.write_rows(&f32_bytes(&values)).unwrap();
            writer.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let view = tensors.tensor("embeddings").unwrap();
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            assert_eq!(view.shape(), &[rows, 2]);
            let read: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(read, values);
        }
    }

    #[test]
    fn rejects_non_npy_and_wrong_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, b"hello").unwrap();
        assert!(
            read_embeddings(&path)
                .unwrap_err()
                .to_string()
                .contains("bad.npy")
        );
        let mut bytes = DenseFormat::Npy.header(2, 2, ValueType::F32);
        bytes.extend_from_slice(&[0u8; 12]);
        std::fs::write(&path, bytes).unwrap();
        let error = read_embeddings(&path).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn quantized_rows_are_int8_or_uint8_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [0u8, 1, 127, 128, 200, 255];
        for values in [ValueType::I8, ValueType::U8] {
            let npy = dir.path().join("q.npy");
            let mut writer = DenseWriter::create(&npy, DenseFormat::Npy, 3, values).unwrap();
            writer.write_rows(&bytes).unwrap();
            assert_eq!(writer.bytes(), 128 + 6);
            writer.finish().unwrap();
            let read = read_dense(&npy).unwrap();
            assert_eq!(
                (read.ids, read.bytes, read.values, read.rows, read.dim),
                (None, bytes.to_vec(), values, 2, 3)
            );
            // Embeddings are floats: a quantized file is refused where floats are needed.
            let error = read_embeddings(&npy).unwrap_err().to_string();
            assert!(
                error.contains("q.npy") && error.contains("float32"),
                "{error}"
            );

            let path = dir.path().join("q.safetensors");
            let mut writer =
                DenseWriter::create(&path, DenseFormat::Safetensors, 3, values).unwrap();
            writer.write_rows(&bytes).unwrap();
            writer.finish().unwrap();
            let file = std::fs::read(&path).unwrap();
            let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
            let view = tensors.tensor("embeddings").unwrap();
            let dtype = match values {
                ValueType::I8 => safetensors::Dtype::I8,
                _ => safetensors::Dtype::U8,
            };
            assert_eq!(
                (view.dtype(), view.shape(), view.data()),
                (dtype, &[2, 3][..], &bytes[..])
            );
            let read = read_dense(&path).unwrap();
            assert_eq!(
                (read.bytes, read.values, read.rows, read.dim),
                (bytes.to_vec(), values, 2, 3)
            );
        }
    }
}
