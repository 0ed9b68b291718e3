//! Reading safetensors checkpoints into burn tensors.
//!
//! Real checkpoints name the same tensor in several ways: with or without the architecture
//! prefix (`bert.encoder…` from a `*ForMaskedLM` save, `encoder…` from a base model save), and
//! with the legacy LayerNorm names `gamma`/`beta` instead of `weight`/`bias`. Names are
//! normalised once at load time so the architecture code asks for one canonical name.
//!
//! A checkpoint is one file, or shards named by a `model.safetensors.index.json` (Hugging Face
//! splits large models so: Qwen3-Embedding-4B and 8B, e5-mistral-7b-instruct).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{ModelError, Result, read_json};

/// The index of a sharded checkpoint's file name ends so.
const INDEX_SUFFIX: &str = ".safetensors.index.json";

struct Entry {
    original_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Which of the checkpoint's files holds it.
    file: usize,
    /// Byte range inside the file (already offset past the header).
    start: usize,
    end: usize,
}

/// One memory-mapped safetensors file.
struct MappedFile {
    path: PathBuf,
    data: Mmap,
}

/// A memory-mapped safetensors checkpoint (one file, or every shard of a sharded one) whose
/// tensor names have been normalised.
pub struct Weights {
    /// The file, or the sharded checkpoint's index.
    path: PathBuf,
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
}

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// Whether `path` names a sharded checkpoint's index rather than a safetensors file.
pub fn is_shard_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(INDEX_SUFFIX))
}

/// The shard files a sharded checkpoint's index names, in order, each once; a name that is not
/// a plain file name beside the index (`../x`, `a/b`) is an error.
pub fn shard_files(index: &Path) -> Result<Vec<String>> {
    ShardIndex::read(index)?.shards(index)
}

impl ShardIndex {
    fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// See [`shard_files`]; `path` is the index's, for the error.
    fn shards(&self, path: &Path) -> Result<Vec<String>> {
        let names: BTreeSet<&String> = self.weight_map.values().collect();
        names
            .into_iter()
            .map(|name| {
                // `..` and `a/b` have another file name, or none.
                match Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name) {
                    true => Ok(name.clone()),
                    false => Err(ModelError::InvalidWeights {
                        path: path.to_path_buf(),
                        message: format!("shard {name:?} is not a file name beside the index"),
                    }),
                }
            })
            .collect()
    }
}

impl Weights {
    /// Opens the checkpoint at `path`, a safetensors file or a sharded checkpoint's index
    /// (`*.safetensors.index.json`), validating each file's header and every tensor's byte
    /// range against the file's size, and strips `prefix.` (e.g. `bert`) from tensor names
    /// that carry it.
    pub fn open(path: &Path, prefix: &str) -> Result<Self> {
        let mut weights = Weights {
            path: path.to_path_buf(),
            files: Vec::new(),
            entries: HashMap::new(),
        };
        if !is_shard_index(path) {
            weights.add_file(path, prefix)?;
            return Ok(weights);
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        let index = ShardIndex::read(path)?;
        for shard in index.shards(path)? {
            weights.add_file(&dir.join(shard), prefix)?;
        }
        // Every tensor the index names must be in the shard it names.
        for (name, shard) in index.weight_map {
            let found = weights
                .entries
                .get(&canonical_name(&name, prefix))
                .map(|e| &weights.files[e.file].path);
            if found.and_then(|p| p.file_name()) != Some(std::ffi::OsStr::new(&shard)) {
                return Err(ModelError::InvalidWeights {
                    path: path.to_path_buf(),
                    message: format!("tensor {name:?} is not in {shard}, where the index puts it"),
                });
            }
        }
        Ok(weights)
    }

    /// Maps the safetensors file at `path` and adds its tensors.
    fn add_file(&mut self, path: &Path, prefix: &str) -> Result<()> {
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
        let index = self.files.len();
        for (name, view) in parsed.tensors() {
            let start = view.data().as_ptr() as usize - data.as_ptr() as usize;
            let canonical = canonical_name(&name, prefix);
            let entry = Entry {
                original_name: name.clone(),
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                file: index,
                start,
                end: start + view.data().len(),
            };
            if let Some(other) = self.entries.insert(canonical, entry)
                && other.file != index
            {
                return Err(invalid(format!(
                    "tensor {name:?} is also in {}",
                    self.files[other.file].path.display()
                )));
            }
        }
        drop(parsed);
        self.files.push(MappedFile {
            path: path.to_path_buf(),
            data,
        });
        Ok(())
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
                    path: self.file_of(entry).to_path_buf(),
                    message: format!("{} holds a negative index ({v})", entry.original_name),
                })
            })
            .collect()
    }

    fn unsupported(&self, entry: &Entry, dtype: Dtype) -> ModelError {
        ModelError::UnsupportedDtype {
            path: self.file_of(entry).to_path_buf(),
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
                path: self.file_of(entry).to_path_buf(),
                name: entry.original_name.clone(),
                found: entry.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok((entry, &self.files[entry.file].data[entry.start..entry.end]))
    }

    /// The file that holds `entry`: where an error about it points.
    fn file_of(&self, entry: &Entry) -> &Path {
        &self.files[entry.file].path
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

/// `name` without the `prefix.` it may carry, and with TF-era LayerNorm names:
/// `LayerNorm.gamma` → `LayerNorm.weight`, `LayerNorm.beta` → `LayerNorm.bias`.
fn canonical_name(name: &str, prefix: &str) -> String {
    let name = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(name);
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
        assert_eq!(
            canonical_name("a.LayerNorm.gamma", ""),
            "a.LayerNorm.weight"
        );
        assert_eq!(canonical_name("a.LayerNorm.beta", ""), "a.LayerNorm.bias");
        assert_eq!(canonical_name("a.dense.weight", ""), "a.dense.weight");
        assert_eq!(
            canonical_name("bert.a.LayerNorm.gamma", "bert"),
            "a.LayerNorm.weight"
        );
        assert_eq!(canonical_name("bertish.a", "bert"), "bertish.a");
    }
}
