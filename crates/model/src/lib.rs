//! Transformer encoders in burn (BERT, DistilBERT, MPNet) and the sentence-transformers modules
//! around them, loaded from a local Hugging Face / sentence-transformers model folder.
//!
//! ```no_run
//! use pool_encode_model::{ModelFolder, SentenceModel};
//! type B = burn::backend::Flex;
//! let folder = ModelFolder::load("models/all-MiniLM-L6-v2".as_ref())?;
//! let model = SentenceModel::<B>::load(&folder, &Default::default())?;
//! # Ok::<(), pool_encode_model::ModelError>(())
//! ```

pub mod architectures;
pub mod config;
mod error;
pub mod folder;
#[cfg(feature = "hub")]
pub mod hub;
pub mod modules;
pub mod ops;
pub mod weights;

use burn::tensor::{Tensor, TensorData, backend::Backend};

pub use architectures::{Attention, TokenBatch, Transformer};
pub use config::ArchitectureConfig;
pub use error::{ModelError, Result};
pub use folder::{HeadConfig, ModelFolder, ModelKind, Pipeline, StaticEmbeddingConfig};
use modules::{Dense, MlmHead, PoolingConfig, SpladeConfig};
pub use ops::EncoderBackend;

/// The default CPU backend.
pub type Cpu = burn::backend::Flex;

/// A step after pooling.
#[derive(Debug)]
enum Head<B: Backend> {
    Dense(Box<Dense<B>>),
    Normalize,
}

/// What turns token embeddings into one vector per text.
#[derive(Debug)]
enum Output<B: Backend> {
    Dense {
        pooling: PoolingConfig,
        heads: Vec<Head<B>>,
    },
    /// Vocabulary-wide SPLADE weights; the MLM logits are computed a slice of positions at a
    /// time, so `[batch, seq, vocab]` never exists at once (ST's `chunk_size`, always on).
    Splade {
        head: Box<MlmHead<B>>,
        pooling: SpladeConfig,
    },
}

/// Logit values (batch × positions × vocab) one SPLADE slice may hold: 64 MiB of f32.
const SPLADE_SLICE_VALUES: usize = 1 << 24;

/// The whole ST pipeline for one model: transformer, then pooling and Dense/Normalize heads
/// (dense models) or the MLM head and SpladePooling (sparse models).
#[derive(Debug)]
pub struct SentenceModel<B: Backend> {
    transformer: Transformer<B>,
    folder: ModelFolder,
    output: Output<B>,
    embedding_dimension: usize,
    attention: Attention,
    /// [`SPLADE_SLICE_VALUES`]; a field so that a test can force many slices.
    splade_slice_values: usize,
}

impl<B: EncoderBackend> SentenceModel<B> {
    pub fn load(folder: &ModelFolder, device: &B::Device) -> Result<Self> {
        let weights =
            weights::Weights::open(&folder.weights_path(), folder.architecture.weight_prefix())?;
        let transformer = Transformer::load(&folder.architecture, &weights, device)?;
        let shape = folder.architecture.shape();
        let (output, dimension) = match &folder.pipeline {
            Pipeline::Dense { pooling, heads } => {
                let mut dimension = pooling.output_dimension(shape.hidden_size);
                let mut loaded = Vec::new();
                for head in heads {
                    loaded.push(match head {
                        HeadConfig::Dense(config) => {
                            if config.in_features != dimension {
                                return Err(ModelError::config(
                                    &config.weights.with_file_name("config.json"),
                                    format!(
                                        "in_features is {} but the previous module outputs {dimension}",
                                        config.in_features
                                    ),
                                ));
                            }
                            dimension = config.out_features;
                            Head::Dense(Box::new(Dense::load(config, device)?))
                        }
                        HeadConfig::Normalize => Head::Normalize,
                    });
                }
                let output = Output::Dense {
                    pooling: pooling.clone(),
                    heads: loaded,
                };
                (output, dimension)
            }
            Pipeline::Splade { pooling, .. } => {
                let names = transformer.mlm_head_names().ok_or_else(|| {
                    ModelError::config(
                        &folder.transformer_dir.join("config.json"),
                        "sparse (SPLADE) models are supported for BERT and DistilBERT masked-language models",
                    )
                })?;
                let head = MlmHead::load(
                    names,
                    shape,
                    &weights,
                    transformer.word_embeddings(),
                    device,
                )?;
                let output = Output::Splade {
                    head: Box::new(head),
                    pooling: *pooling,
                };
                (output, shape.vocab_size)
            }
        };
        Ok(SentenceModel {
            transformer,
            folder: folder.clone(),
            output,
            embedding_dimension: dimension,
            attention: Attention::default(),
            splade_slice_values: SPLADE_SLICE_VALUES,
        })
    }

    /// Chooses how attention is computed (default: burn's fused op).
    pub fn with_attention(mut self, attention: Attention) -> Self {
        self.attention = attention;
        self
    }

    pub fn folder(&self) -> &ModelFolder {
        &self.folder
    }

    /// Width of [`sentence_embeddings`](Self::sentence_embeddings): the vocabulary for SPLADE.
    pub fn embedding_dimension(&self) -> usize {
        self.embedding_dimension
    }

    pub fn hidden_size(&self) -> usize {
        self.folder.architecture.shape().hidden_size
    }

    /// `[batch, seq, hidden]`: ST's `output_value="token_embeddings"`.
    pub fn token_embeddings(&self, batch: &TokenBatch, device: &B::Device) -> Tensor<B, 3> {
        self.transformer.forward(batch, self.attention, device)
    }

    /// `[batch, embedding_dimension]`: ST's `sentence_embedding` (pooling and every head, or
    /// SPLADE's weight for every vocabulary entry).
    pub fn sentence_embeddings(
        &self,
        batch: &TokenBatch,
        prompt_length: Option<usize>,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let tokens = self.token_embeddings(batch, device);
        match &self.output {
            Output::Dense { pooling, heads } => {
                let mut x = pooling.forward(tokens, batch, prompt_length, device);
                for head in heads {
                    x = match head {
                        Head::Dense(dense) => dense.forward(x),
                        Head::Normalize => modules::normalize(x),
                    };
                }
                x
            }
            Output::Splade { head, pooling } => {
                let (b, s) = (batch.batch, batch.seq_len);
                let mask: Vec<f32> = batch.mask.iter().map(|&m| m as f32).collect();
                let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [b, s, 1]), device);
                let step =
                    (self.splade_slice_values / (b * self.embedding_dimension).max(1)).max(1);
                let mut pooled: Option<Tensor<B, 2>> = None;
                for start in (0..s).step_by(step) {
                    let end = (start + step).min(s);
                    let logits = head.forward(tokens.clone().slice([0..b, start..end]));
                    let part = pooling.pool(logits, mask.clone().slice([0..b, start..end]));
                    pooled = Some(match pooled {
                        Some(p) => pooling.combine(p, part),
                        None => part,
                    });
                }
                pooled.unwrap_or_else(|| Tensor::zeros([b, self.embedding_dimension], device))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pooling SPLADE logits a few positions at a time gives what one pass gives, for max
    /// (combined by maximum) and sum (combined by addition).
    #[test]
    fn splade_slices_combine_to_the_whole() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models");
        for name in ["splade-bert-tied-max", "splade-bert-untied-sum-old"] {
            let folder = ModelFolder::load(&root.join(name)).unwrap();
            let device = Default::default();
            let mut model = SentenceModel::<Cpu>::load(&folder, &device).unwrap();
            let batch = TokenBatch {
                ids: vec![2, 40, 50, 60, 70, 80, 3, 2, 90, 3, 0, 0, 0, 0],
                type_ids: vec![0; 14],
                mask: vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
                batch: 2,
                seq_len: 7,
            };
            let whole: Vec<f32> = model
                .sentence_embeddings(&batch, None, &device)
                .into_data()
                .to_vec()
                .unwrap();
            // Two positions per slice: four slices, the last one of a single position.
            model.splade_slice_values = 2 * 2 * model.embedding_dimension();
            let sliced: Vec<f32> = model
                .sentence_embeddings(&batch, None, &device)
                .into_data()
                .to_vec()
                .unwrap();
            assert!(
                whole.iter().any(|&v| v > 0.0),
                "{name}: some active entries"
            );
            for (a, b) in whole.iter().zip(&sliced) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{name}: {a} vs {b}"
                );
            }
        }
    }
}
