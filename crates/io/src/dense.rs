//! Dense rows written as they arrive, as NumPy `.npy` (format 1.0, little-endian f32, C order)
//! or `.safetensors` (one F32 tensor `embeddings` of shape `[N, dim]`); and `.npy` read back.
//!
//! The row count is unknown until the end, so the header is written with room for any count
//! (both formats allow padding it with spaces) and rewritten by [`DenseWriter::finish`]. The file
//! is written under `<name>.partial` and only renamed to its final name once complete, so an
//! interrupted run never leaves an output that looks finished.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

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

    pub(crate) fn header(self, rows: u64, dim: usize) -> Vec<u8> {
        let len = self.header_len();
        let mut h = Vec::with_capacity(len);
        match self {
            DenseFormat::Npy => {
                let dict = format!(
                    "{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
                );
                h.extend_from_slice(MAGIC);
                h.extend_from_slice(&[1, 0]);
                h.extend_from_slice(&((len - 10) as u16).to_le_bytes());
                h.extend_from_slice(dict.as_bytes());
                h.resize(len - 1, b' ');
                h.push(b'\n');
            }
            DenseFormat::Safetensors => {
                let bytes = rows * dim as u64 * 4;
                let json = format!(
                    "{{\"embeddings\":{{\"dtype\":\"F32\",\"shape\":[{rows},{dim}],\"data_offsets\":[0,{bytes}]}}}}"
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
    rows: u64,
}

impl DenseWriter {
    pub fn create(path: &Path, format: DenseFormat, dim: usize) -> Result<Self> {
        let partial = partial_path(path);
        let mut file = BufWriter::new(File::create(&partial).map_err(IoError::io(&partial))?);
        file.write_all(&format.header(0, dim))
            .map_err(IoError::io(&partial))?;
        Ok(DenseWriter {
            format,
            path: path.to_path_buf(),
            partial,
            file,
            dim,
            rows: 0,
        })
    }

    /// Reopens the `.partial` of an interrupted run that had `rows` rows durable (its last
    /// checkpoint), dropping anything written after them.
    pub fn resume(path: &Path, format: DenseFormat, dim: usize, rows: u64) -> Result<Self> {
        let keep = format.header_len() as u64 + rows * dim as u64 * 4;
        let (partial, file) = reopen_partial(path, keep)?;
        Ok(DenseWriter {
            format,
            path: path.to_path_buf(),
            partial,
            file,
            dim,
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

    /// Bytes of the file so far (header included).
    pub fn bytes(&self) -> u64 {
        self.format.header_len() as u64 + self.rows * self.dim as u64 * 4
    }

    /// Appends rows given as one row-major slice (`values.len()` a multiple of `dim`).
    pub fn write_rows(&mut self, values: &[f32]) -> Result<()> {
        assert_eq!(values.len() % self.dim.max(1), 0, "write_rows: partial row");
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.file
            .write_all(&bytes)
            .map_err(IoError::io(&self.partial))?;
        self.rows += (values.len() / self.dim.max(1)) as u64;
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
            .and_then(|_| file.write_all(&self.format.header(self.rows, self.dim)))
            .and_then(|_| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&self.partial, &self.path).map_err(IoError::io(&self.path))?;
        Ok(self.path)
    }
}

/// Reads a 2-D `.npy` of f32 (or f64, converted) in C order: `(values, rows, dim)`.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(IoError::io(path))?;
    let bad = |m: &str| IoError::format(path, format!("not a supported .npy file: {m}"));
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let dict = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let field = |key: &str| {
        let at = dict.find(&format!("'{key}':"))? + key.len() + 3;
        Some(dict[at..].trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad("no descr"))?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad("dtype must be little-endian float32 or float64"));
    };
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran order"));
    }
    let shape = field("shape").ok_or_else(|| bad("no shape"))?;
    let shape = &shape[1..shape.find(')').ok_or_else(|| bad("bad shape"))?];
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let (rows, dim) = match dims[..] {
        [r, d] => (r, d),
        [r] => (r, 1),
        _ => return Err(bad("expected a 1-D or 2-D array")),
    };
    let data = &bytes[start + header_len..];
    if data.len() != rows * dim * width {
        return Err(bad("data length does not match the shape"));
    }
    let values = if width == 4 {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Ok((values, rows, dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_rows_read_back_and_partial_file_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        let mut writer = DenseWriter::create(&path, DenseFormat::Npy, 3).unwrap();
        writer.write_rows(&[1.0, 2.0, 3.0]).unwrap();
        writer.write_rows(&[4.0, 5.0, 6.0, 7.0, 8.0, 9.5]).unwrap();
        assert!(!path.exists(), "final name must not exist before finish");
        assert!(partial_path(&path).exists());
        writer.finish().unwrap();
        assert!(!partial_path(&path).exists());
        let (values, rows, dim) = read_npy(&path).unwrap();
        assert_eq!((rows, dim), (3, 3));
        assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.5]);
    }

    #[test]
    fn safetensors_output_is_read_by_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        for rows in [0usize, 3] {
            let path = dir.path().join(format!("out{rows}.safetensors"));
            let mut writer = DenseWriter::create(&path, DenseFormat::Safetensors, 2).unwrap();
            let values: Vec<f32> = (0..rows * 2).map(|i| i as f32 * 0.5).collect();
            writer.write_rows(&values).unwrap();
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
        assert!(read_npy(&path).unwrap_err().to_string().contains("bad.npy"));
        let mut bytes = DenseFormat::Npy.header(2, 2);
        bytes.extend_from_slice(&[0u8; 12]);
        std::fs::write(&path, bytes).unwrap();
        assert!(read_npy(&path).unwrap_err().to_string().contains("length"));
    }
}
