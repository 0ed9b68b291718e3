//! Reading safetensors checkpoints into burn tensors.
//!
//! Real checkpoints name the same tensor in several ways: with or without the architecture
//! prefix (`bert.encoder…` from a `*ForMaskedLM` save, `encoder…` from a base model save), and
//! with the legacy LayerNorm names `gamma`/`beta` instead of `weight`/`bias`. Names are
//! normalised once at load time so the architecture code asks for one canonical name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

struct Entry {
    original_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range inside the file (already offset past the header).
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors file whose tensor names have been normalised.
pub struct Weights {
    path: PathBuf,
    data: Mmap,
    entries: HashMap<String, Entry>,
}

impl Weights {
    /// Opens `path`, validating the header and every tensor's byte range against the file size,
    /// and strips `prefix.` (e.g. `bert`) from tensor names that carry it.
    pub fn open(path: &Path, prefix: &str) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ModelError::MissingFile {
                path: path.to_path_buf(),
            },
            _ => ModelError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        // SAFETY: the mapping is read-only; a checkpoint modified while we read it would give
        // wrong numbers, which is the same contract every mmap-based loader (PyTorch's too) has.
        let data = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| ModelError::InvalidWeights {
            path: path.to_path_buf(),
            message,
        };
        // `deserialize` validates the header JSON and that every tensor's offsets lie inside
        // the file and match its dtype and shape.
        let parsed = SafeTensors::deserialize(&data).map_err(|e| invalid(e.to_string()))?;
        let mut entries = HashMap::new();
        let strip = format!("{prefix}.");
        for (name, view) in parsed.tensors() {
            let start = view.data().as_ptr() as usize - data.as_ptr() as usize;
            let canonical = canonical_name(name.strip_prefix(&strip).unwrap_or(&name));
            entries.insert(
                canonical,
                Entry {
                    original_name: name.clone(),
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    start,
                    end: start + view.data().len(),
                },
            );
        }
        drop(parsed);
        Ok(Weights {
            path: path.to_path_buf(),
            data,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the floating-point tensors take as float32, as they are computed on the CPU.
    pub fn f32_bytes(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64))
            .map(|e| 4 * e.shape.iter().product::<usize>() as u64)
            .sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor `name`'s shape, if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Loads integer tensor `name` (I64, I32, U32 or U16) as indices, checking its shape; a
    /// negative value is an error.
    pub fn indices(&self, name: &str, shape: &[usize]) -> Result<Vec<usize>> {
        let (entry, bytes) = self.entry(name, shape)?;
        let signed: Vec<i64> = match entry.dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunk of 8")))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("chunk of 4")).into())
                .collect(),
            Dtype::U32 => bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("chunk of 4")).into())
                .collect(),
            Dtype::U16 => bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]).into())
                .collect(),
            other => return Err(self.unsupported(entry, other)),
        };
        signed
            .into_iter()
            .map(|v| {
                usize::try_from(v).map_err(|_| ModelError::InvalidWeights {
                    path: self.path.clone(),
                    message: format!("{} holds a negative index ({v})", entry.original_name),
                })
            })
            .collect()
    }

    fn unsupported(&self, entry: &Entry, dtype: Dtype) -> ModelError {
        ModelError::UnsupportedDtype {
            path: self.path.clone(),
            name: entry.original_name.clone(),
            dtype: format!("{dtype:?}"),
        }
    }

    /// Tensor `name`'s entry and bytes, its shape checked.
    fn entry(&self, name: &str, shape: &[usize]) -> Result<(&Entry, &[u8])> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                tried: format!(
                    "{name} (with or without the model prefix, gamma/beta or weight/bias)"
                ),
            })?;
        if entry.shape != shape {
            return Err(ModelError::WrongShape {
                path: self.path.clone(),
                name: entry.original_name.clone(),
                found: entry.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok((entry, &self.data[entry.start..entry.end]))
    }

    /// Loads tensor `name` as f32, checking that its shape is `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Loads tensor `name` as a flat f32 vector, checking its shape.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (entry, bytes) = self.entry(name, shape)?;
        let values = match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
                .collect(),
            other => return Err(self.unsupported(entry, other)),
        };
        Ok(values)
    }
}

/// `LayerNorm.gamma` → `LayerNorm.weight`, `LayerNorm.beta` → `LayerNorm.bias` (TF-era names).
fn canonical_name(name: &str) -> String {
    if let Some(stem) = name.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = name.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_name;

    #[test]
    fn legacy_layer_norm_names_are_canonicalised() {
        assert_eq!(canonical_name("a.LayerNorm.gamma"), "a.LayerNorm.weight");
        assert_eq!(canonical_name("a.LayerNorm.beta"), "a.LayerNorm.bias");
        assert_eq!(canonical_name("a.dense.weight"), "a.dense.weight");
    }
}
