//! The transformers, one file per architecture (encoders, and the Llama-family and Gemma
//! decoders as embedding models use them), all producing token embeddings (`last_hidden_state`) from a
//! padded batch of token ids.

mod bert;
mod decoder;
mod distilbert;
mod gemma;
mod layers;
mod llama;
pub use layers::Attention;
pub(crate) use layers::{activate, load_linear, load_linear_with_bias, load_norm};
mod modernbert;
mod mpnet;
mod roberta;
mod t5;

use burn::tensor::{Tensor, backend::Backend};

pub use bert::{Bert, Positions};
pub use distilbert::DistilBert;
pub use gemma::Gemma;
pub use llama::Llama;
pub use modernbert::ModernBert;
pub use mpnet::MPNet;
pub use t5::T5;

use crate::config::ArchitectureConfig;
use crate::error::Result;
use crate::modules::MlmHeadNames;
use crate::ops::{EncoderBackend, HiddenStates};
use crate::weights::Weights;

/// A right-padded batch of tokenized texts, row-major `[batch, seq_len]`, built on the host.
#[derive(Debug, Clone, Default)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// 1 for a real token, 0 for padding.
    pub mask: Vec<u32>,
    pub batch: usize,
    pub seq_len: usize,
}

/// Any supported encoder, chosen by `config.json`.
#[derive(Debug)]
pub enum Transformer<B: Backend> {
    Bert(Bert<B>),
    DistilBert(DistilBert<B>),
    MPNet(MPNet<B>),
    /// RoBERTa, XLM-RoBERTa, CamemBERT: BERT's module with RoBERTa's positions.
    Roberta(Bert<B>),
    ModernBert(ModernBert<B>),
    /// Llama, Mistral, Qwen2, Qwen3.
    Llama(Llama<B>),
    /// Gemma 2, Gemma 3.
    Gemma(Gemma<B>),
    /// T5's and mT5's encoder.
    T5(T5<B>),
}

impl<B: EncoderBackend> Transformer<B> {
    pub fn load(
        config: &ArchitectureConfig,
        weights: &Weights,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(match config {
            ArchitectureConfig::Bert {
                shape,
                type_vocab_size,
            } => Transformer::Bert(Bert::load(
                shape,
                *type_vocab_size,
                Positions::FromZero,
                weights,
                device,
            )?),
            ArchitectureConfig::DistilBert { shape } => {
                Transformer::DistilBert(DistilBert::load(shape, weights, device)?)
            }
            ArchitectureConfig::MPNet {
                shape,
                relative_attention_num_buckets,
                pad_token_id,
            } => Transformer::MPNet(MPNet::load(
                shape,
                *relative_attention_num_buckets,
                *pad_token_id,
                weights,
                device,
            )?),
            ArchitectureConfig::Roberta {
                shape,
                type_vocab_size,
                pad_token_id,
                ..
            } => Transformer::Roberta(roberta::load(
                shape,
                *type_vocab_size,
                *pad_token_id,
                weights,
                device,
            )?),
            ArchitectureConfig::ModernBert(config) => {
                Transformer::ModernBert(ModernBert::load(config, weights, device)?)
            }
            ArchitectureConfig::Llama(config) => {
                Transformer::Llama(Llama::load(config, weights, device)?)
            }
            ArchitectureConfig::Gemma(config) => {
                Transformer::Gemma(Gemma::load(config, weights, device)?)
            }
            ArchitectureConfig::T5(config) => Transformer::T5(T5::load(config, weights, device)?),
        })
    }

    /// The `[vocab, hidden]` word embedding table (a tied MLM head decodes with it).
    pub fn word_embeddings(&self) -> Tensor<B, 2> {
        match self {
            Transformer::Bert(m) | Transformer::Roberta(m) => m.word_embeddings.weight.val(),
            Transformer::DistilBert(m) => m.word_embeddings.weight.val(),
            Transformer::MPNet(m) => m.word_embeddings.weight.val(),
            Transformer::ModernBert(m) => m.word_embeddings.weight.val(),
            Transformer::Llama(m) => m.word_embeddings.weight.val(),
            Transformer::Gemma(m) => m.word_embeddings.weight.val(),
            Transformer::T5(m) => m.word_embeddings.weight.val(),
        }
    }

    /// Where this architecture's masked-language-model head lives, if we support one.
    pub fn mlm_head_names(&self) -> Option<MlmHeadNames> {
        match self {
            Transformer::Bert(_) => Some(bert::MLM_HEAD),
            Transformer::DistilBert(_) => Some(distilbert::MLM_HEAD),
            Transformer::Roberta(_) => Some(roberta::MLM_HEAD),
            Transformer::ModernBert(m) => Some(m.mlm_head_names()),
            // The decoders' language-model heads predict the next token, not a masked one.
            Transformer::MPNet(_)
            | Transformer::Llama(_)
            | Transformer::Gemma(_)
            | Transformer::T5(_) => None,
        }
    }

    /// The last hidden states (`last_hidden_state`), one row per token.
    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        match self {
            Transformer::Bert(m) | Transformer::Roberta(m) => m.forward(batch, attention, device),
            Transformer::DistilBert(m) => m.forward(batch, attention, device),
            Transformer::MPNet(m) => m.forward(batch, attention, device),
            Transformer::ModernBert(m) => m.forward(batch, attention, device),
            Transformer::Llama(m) => m.forward(batch, attention, device),
            Transformer::Gemma(m) => m.forward(batch, attention, device),
            Transformer::T5(m) => m.forward(batch, attention, device),
        }
    }
}
