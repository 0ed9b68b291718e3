//! The masked-language-model head of a `*ForMaskedLM` checkpoint: dense → activation →
//! LayerNorm → decoder to vocabulary logits. SPLADE pools these logits into sparse vectors.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

use super::SpladeConfig;
use crate::architectures::{TokenBatch, load_linear_with_bias, load_norm};
use crate::config::{Activation, EncoderShape};
use crate::error::Result;
use crate::ops::{EncoderBackend, HiddenStates};
use crate::weights::Weights;

/// Where an architecture keeps its MLM head in the checkpoint, and the head's few options
/// (each architecture file has one).
#[derive(Debug, Clone, Copy)]
pub struct MlmHeadNames {
    pub transform: &'static str,
    pub norm: &'static str,
    /// `{decoder}.weight` (absent when tied to the word embeddings) and `{decoder}.bias`.
    pub decoder: &'static str,
    /// A bias kept beside the decoder and tied to its bias (BERT's `cls.predictions.bias`).
    pub shared_bias: Option<&'static str>,
    /// The head's own activation; `None`: the encoder's (`hidden_act`).
    pub activation: Option<Activation>,
    /// Whether the transform, the LayerNorm and the decoder have biases (always in BERT's
    /// family; ModernBERT's `classifier_bias`, `norm_bias`, `decoder_bias`).
    pub transform_bias: bool,
    pub norm_bias: bool,
    pub decoder_bias: bool,
}

#[derive(Debug)]
pub struct MlmHead<B: Backend> {
    transform: Linear<B>,
    activation: Activation,
    norm: LayerNorm<B>,
    /// `[hidden, vocab]` (a transposed view of the word embeddings when tied), with its bias.
    decoder: Linear<B>,
}

impl<B: EncoderBackend> MlmHead<B> {
    /// `word_embeddings`: the encoder's `[vocab, hidden]` table, the decoder when it is tied
    /// (the config says so, or the checkpoint has no decoder weight).
    pub fn load(
        names: &MlmHeadNames,
        shape: &EncoderShape,
        weights: &Weights,
        word_embeddings: Tensor<B, 2>,
        device: &B::Device,
    ) -> Result<Self> {
        let (h, v) = (shape.hidden_size, shape.vocab_size);
        let decoder_weight = format!("{}.weight", names.decoder);
        let tied = shape.tie_word_embeddings || !weights.contains(&decoder_weight);
        let decoder = if tied {
            word_embeddings.transpose()
        } else {
            weights
                .tensor::<B, 2>(&decoder_weight, [v, h], device)?
                .transpose()
        };
        // Hugging Face ties the decoder's bias to the shared one only when the weights are tied;
        // an untied BERT head decodes with `decoder.bias`.
        let decoder_bias = format!("{}.bias", names.decoder);
        let mut candidates = vec![decoder_bias.as_str()];
        if let Some(shared) = names.shared_bias {
            if tied {
                candidates.insert(0, shared);
            } else {
                candidates.push(shared);
            }
        }
        let bias_name = candidates
            .iter()
            .find(|name| weights.contains(name))
            .copied()
            .unwrap_or(candidates[0]);
        let bias = if names.decoder_bias {
            Some(Param::from_tensor(weights.tensor(
                bias_name,
                [v],
                device,
            )?))
        } else {
            None
        };
        let eps = shape.layer_norm_eps;
        Ok(MlmHead {
            transform: load_linear_with_bias(
                weights,
                names.transform,
                (h, h),
                names.transform_bias,
                device,
            )?,
            activation: names.activation.unwrap_or(shape.activation),
            norm: load_norm(weights, names.norm, h, eps, names.norm_bias, device)?,
            decoder: Linear {
                weight: Param::from_tensor(decoder),
                bias,
            },
        })
    }

    /// SPLADE's weights `[batch, vocab]` from the encoder's hidden states: the head's
    /// transform on every row, then the vocabulary logits pooled by `pooling` (at most about
    /// `max_logits` of them at once on backends that hold a slice of them).
    pub fn splade(
        &self,
        hidden: HiddenStates<B>,
        pooling: SpladeConfig,
        batch: &TokenBatch,
        max_logits: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let x = B::fused_linear(hidden.x, &self.transform, Some(self.activation));
        let hidden = HiddenStates {
            x: self.norm.forward(x),
            rows: hidden.rows,
        };
        B::splade_pool(hidden, &self.decoder, pooling, batch, max_logits, device)
    }
}
