//! Transformer encoders in burn (BERT, DistilBERT, MPNet, RoBERTa, ModernBERT, and the
//! Llama-family (Llama, Mistral, Qwen2, Qwen3) and Gemma 3 decoders) and the sentence-transformers modules around them (or ST's
//! `StaticEmbedding` table in a transformer's place), loaded from a local Hugging Face /
//! sentence-transformers model folder.
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
pub use folder::{
    HeadConfig, InputModule, ModelFolder, ModelKind, Pipeline, SparseStaticEmbeddingConfig,
    StaticTable, TransformerModule,
};
use modules::{Dense, MlmHead, PoolingConfig, SpladeConfig, StaticEmbedding};
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
    /// Vocabulary-wide SPLADE weights; the MLM logits are computed a part at a time, so
    /// `[batch, seq, vocab]` never exists at once (ST's `chunk_size`, always on).
    Splade {
        head: Box<MlmHead<B>>,
        pooling: SpladeConfig,
    },
}

/// SPLADE logits that may exist at once where a backend computes them a slice of positions
/// at a time (`EncoderBackend::splade_pool`): 64 MiB of f32.
const MAX_SPLADE_LOGITS: usize = 1 << 24;

/// What turns token ids into token vectors.
#[derive(Debug)]
enum Backbone<B: Backend> {
    Transformer(Box<Transformer<B>>),
    /// A table, on the host: its pooled output is computed there (see [`StaticEmbedding`]).
    Static(StaticEmbedding),
}

/// The whole ST pipeline for one model: transformer, then pooling and Dense/Normalize heads
/// (dense models) or the MLM head and SpladePooling (sparse models); or a `StaticEmbedding`
/// table's mean, then the heads.
#[derive(Debug)]
pub struct SentenceModel<B: Backend> {
    backbone: Backbone<B>,
    folder: ModelFolder,
    output: Output<B>,
    /// Width of the token vectors.
    hidden_size: usize,
    embedding_dimension: usize,
    attention: Attention,
}

impl<B: EncoderBackend> SentenceModel<B> {
    pub fn load(folder: &ModelFolder, device: &B::Device) -> Result<Self> {
        let (backbone, hidden_size, transformer_weights) = match &folder.input {
            InputModule::Transformer(module) => {
                let weights = weights::Weights::open(
                    &folder.weights_path(),
                    module.architecture.weight_prefix(),
                )?;
                let transformer = Transformer::load(&module.architecture, &weights, device)?;
                let hidden = module.architecture.shape().hidden_size;
                (
                    Backbone::Transformer(Box::new(transformer)),
                    hidden,
                    Some(weights),
                )
            }
            InputModule::Static(table) => {
                let table = StaticEmbedding::load(table)?;
                let hidden = table.dimension();
                (Backbone::Static(table), hidden, None)
            }
        };
        let (output, dimension) = match &folder.pipeline {
            Pipeline::Dense { pooling, heads } => {
                let mut dimension = pooling.output_dimension(hidden_size);
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
                let (Backbone::Transformer(transformer), Some(weights)) =
                    (&backbone, &transformer_weights)
                else {
                    return Err(ModelError::config(
                        &folder.root,
                        "a StaticEmbedding model is dense: SpladePooling needs a transformer",
                    ));
                };
                let module = folder.transformer()?;
                let names = transformer.mlm_head_names().ok_or_else(|| {
                    ModelError::config(
                        &module.dir.join("config.json"),
                        "sparse (SPLADE) models are supported for BERT, DistilBERT, RoBERTa-family and ModernBERT masked-language models",
                    )
                })?;
                let shape = module.architecture.shape();
                let head = MlmHead::load(
                    &names,
                    shape,
                    weights,
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
            backbone,
            folder: folder.clone(),
            output,
            hidden_size,
            embedding_dimension: dimension,
            attention: Attention::default(),
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
        self.hidden_size
    }

    /// A `StaticEmbedding` model's table rows (token ids must be below); `None` for a
    /// transformer.
    pub fn static_vocab_size(&self) -> Option<usize> {
        match &self.backbone {
            Backbone::Transformer(_) => None,
            Backbone::Static(table) => Some(table.vocab_size()),
        }
    }

    /// `[batch, seq, hidden]`: ST's `output_value="token_embeddings"` (a `StaticEmbedding`
    /// model's: its tokens' table rows, which ST does not give).
    pub fn token_embeddings(&self, batch: &TokenBatch, device: &B::Device) -> Tensor<B, 3> {
        match &self.backbone {
            Backbone::Transformer(transformer) => transformer
                .forward(batch, self.attention, device)
                .padded(device),
            Backbone::Static(table) => Tensor::from_data(
                TensorData::new(
                    table.token_vectors(batch),
                    [batch.batch, batch.seq_len, self.hidden_size],
                ),
                device,
            ),
        }
    }

    /// `[batch, embedding_dimension]`: ST's `sentence_embedding` (pooling and every head, or
    /// SPLADE's weight for every vocabulary entry).
    pub fn sentence_embeddings(
        &self,
        batch: &TokenBatch,
        prompt_length: Option<usize>,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        match &self.output {
            Output::Dense { pooling, heads } => {
                let mut x = match &self.backbone {
                    Backbone::Transformer(_) => {
                        let tokens = self.token_embeddings(batch, device);
                        pooling.forward(tokens, batch, prompt_length, device)
                    }
                    // The table's mean is the mean pooling its pipeline names.
                    Backbone::Static(table) => Tensor::from_data(
                        TensorData::new(table.mean(batch), [batch.batch, self.hidden_size]),
                        device,
                    ),
                };
                for head in heads {
                    x = match head {
                        Head::Dense(dense) => dense.forward(x),
                        Head::Normalize => modules::normalize(x),
                    };
                }
                x
            }
            Output::Splade { head, pooling } => head.splade(
                match &self.backbone {
                    Backbone::Transformer(transformer) => {
                        transformer.forward(batch, self.attention, device)
                    }
                    Backbone::Static(_) => unreachable!("load gives a static table no SPLADE head"),
                },
                *pooling,
                batch,
                MAX_SPLADE_LOGITS,
                device,
            ),
        }
    }
}
