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
pub mod weights;

use burn::tensor::{Tensor, backend::Backend};

pub use architectures::{Attention, TokenBatch, Transformer};
pub use config::ArchitectureConfig;
pub use error::{ModelError, Result};
pub use folder::{HeadConfig, ModelFolder};
use modules::Dense;

/// The default CPU backend.
pub type Cpu = burn::backend::Flex;

/// A step after pooling.
#[derive(Debug)]
enum Head<B: Backend> {
    Dense(Box<Dense<B>>),
    Normalize,
}

/// The whole ST pipeline for one model: transformer, pooling, then Dense/Normalize heads.
#[derive(Debug)]
pub struct SentenceModel<B: Backend> {
    transformer: Transformer<B>,
    folder: ModelFolder,
    heads: Vec<Head<B>>,
    embedding_dimension: usize,
    attention: Attention,
}

impl<B: Backend> SentenceModel<B> {
    pub fn load(folder: &ModelFolder, device: &B::Device) -> Result<Self> {
        let weights =
            weights::Weights::open(&folder.weights_path(), folder.architecture.weight_prefix())?;
        let transformer = Transformer::load(&folder.architecture, &weights, device)?;
        let mut dimension = folder
            .pooling
            .output_dimension(folder.architecture.shape().hidden_size);
        let mut heads = Vec::new();
        for head in &folder.heads {
            heads.push(match head {
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
        Ok(SentenceModel {
            transformer,
            folder: folder.clone(),
            heads,
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

    /// `[batch, embedding_dimension]`: pooling and every head, as ST's forward.
    pub fn sentence_embeddings(
        &self,
        batch: &TokenBatch,
        prompt_length: Option<usize>,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let tokens = self.token_embeddings(batch, device);
        let mut x = self
            .folder
            .pooling
            .forward(tokens, batch, prompt_length, device);
        for head in &self.heads {
            x = match head {
                Head::Dense(dense) => dense.forward(x),
                Head::Normalize => modules::normalize(x),
            };
        }
        x
    }
}
