//! ST's `StaticEmbedding` (model2vec / potion models, static-retrieval-mrl): a vector per
//! vocabulary entry, and a text's embedding is the mean of its tokens' vectors (`nn.EmbeddingBag`
//! in mean mode; a text without tokens gets zeros). No transformer runs: the mean is computed on
//! the host, a gather and an add per token, which costs less than sending the rows to a device.

use crate::architectures::TokenBatch;
use crate::error::{ModelError, Result};
use crate::folder::StaticTable;
use crate::weights::Weights;

#[derive(Debug)]
pub struct StaticEmbedding {
    /// `[vocab, dim]`, row-major, float32.
    table: Vec<f32>,
    vocab: usize,
    dim: usize,
}

impl StaticEmbedding {
    /// Reads the table as ST's `StaticEmbedding.load` does: `embedding.weight`, or model2vec's
    /// `embeddings` with its optional token `mapping` (the row of each token id) and per-token
    /// `weights` folded in (`row[t] = embeddings[mapping[t]] * weights[t]`).
    pub fn load(table: &StaticTable) -> Result<Self> {
        let path = table.dir.join("model.safetensors");
        let weights = Weights::open(&path, "")?;
        let matrix = |name: &str| -> Result<Option<(Vec<f32>, usize, usize)>> {
            match weights.shape(name) {
                None => Ok(None),
                Some(&[rows, dim]) => Ok(Some((weights.values(name, &[rows, dim])?, rows, dim))),
                Some(shape) => Err(ModelError::InvalidWeights {
                    path: path.clone(),
                    message: format!(
                        "{name} has shape {shape:?}; a [vocabulary, dimension] table is expected"
                    ),
                }),
            }
        };
        if let Some((table, vocab, dim)) = matrix("embedding.weight")? {
            return Ok(StaticEmbedding { table, vocab, dim });
        }
        let Some((embeddings, rows, dim)) = matrix("embeddings")? else {
            return Err(ModelError::MissingTensor {
                path,
                name: "embedding.weight".into(),
                tried: "embedding.weight (ST), embeddings (model2vec)".into(),
            });
        };
        let mapping = match weights.shape("mapping") {
            Some(&[vocab]) => Some(weights.indices("mapping", &[vocab])?),
            Some(shape) => {
                return Err(ModelError::InvalidWeights {
                    path,
                    message: format!(
                        "mapping has shape {shape:?}; one row index per token is expected"
                    ),
                });
            }
            None => None,
        };
        let vocab = mapping.as_ref().map_or(rows, Vec::len);
        let token_weights = match weights.contains("weights") {
            true => Some(weights.values("weights", &[vocab])?),
            false => None,
        };
        let mut table = Vec::with_capacity(vocab * dim);
        for token in 0..vocab {
            let row = match &mapping {
                Some(mapping) if mapping[token] >= rows => {
                    return Err(ModelError::InvalidWeights {
                        path,
                        message: format!(
                            "mapping sends token {token} to row {} of embeddings, which has {rows}",
                            mapping[token]
                        ),
                    });
                }
                Some(mapping) => mapping[token],
                None => token,
            };
            let scale = token_weights.as_ref().map_or(1.0, |w| w[token]);
            table.extend(
                embeddings[row * dim..(row + 1) * dim]
                    .iter()
                    .map(|v| v * scale),
            );
        }
        Ok(StaticEmbedding { table, vocab, dim })
    }

    /// The bytes the table takes once loaded (float32, model2vec's mapping unfolded), from the
    /// weights file's header alone.
    pub fn table_bytes(table: &StaticTable) -> Result<u64> {
        let weights = Weights::open(&table.dir.join("model.safetensors"), "")?;
        let shape = weights
            .shape("embedding.weight")
            .or_else(|| weights.shape("embeddings"))
            .unwrap_or_default();
        let rows = match weights.shape("mapping") {
            Some(&[vocab]) => vocab,
            _ => shape.first().copied().unwrap_or_default(),
        };
        Ok(4 * (rows * shape.get(1).copied().unwrap_or_default()) as u64)
    }

    /// Rows of the table: token ids must be below this.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// `[batch, dim]`, row-major: each text's mean over its real tokens (mask 1); zeros for a
    /// text without any. An id past the table (which loading the encoder rules out) adds nothing.
    pub fn mean(&self, batch: &TokenBatch) -> Vec<f32> {
        let (s, d) = (batch.seq_len, self.dim);
        let mut out = vec![0f32; batch.batch * d];
        for (row, sum) in out.chunks_exact_mut(d).enumerate() {
            let ids = &batch.ids[row * s..(row + 1) * s];
            let mask = &batch.mask[row * s..(row + 1) * s];
            let mut count = 0usize;
            for (&id, _) in ids.iter().zip(mask).filter(|(_, m)| **m != 0) {
                let Some(vector) = self.table.get(id as usize * d..(id as usize + 1) * d) else {
                    continue;
                };
                for (total, v) in sum.iter_mut().zip(vector) {
                    *total += v;
                }
                count += 1;
            }
            if count > 0 {
                let n = count as f32;
                sum.iter_mut().for_each(|v| *v /= n);
            }
        }
        out
    }

    /// `[batch, seq_len, dim]`, row-major: each token's vector, zeros at padding (what
    /// [`mean`](Self::mean) averages).
    pub fn token_vectors(&self, batch: &TokenBatch) -> Vec<f32> {
        let d = self.dim;
        let mut out = vec![0f32; batch.ids.len() * d];
        for ((&id, &mask), slot) in batch
            .ids
            .iter()
            .zip(&batch.mask)
            .zip(out.chunks_exact_mut(d))
        {
            if let Some(vector) = self.table.get(id as usize * d..(id as usize + 1) * d)
                && mask != 0
            {
                slot.copy_from_slice(vector);
            }
        }
        out
    }
}
