//! Gemma 2 and Gemma 3 (Google 2024, 2025), the decoders under bge-multilingual-gemma2 and
//! EmbeddingGemma: word embeddings scaled by √hidden, RMSNorms that scale by `1 + weight`
//! before and after both the attention and the feed-forward block, grouped-query attention
//! with rotary positions, scores scaled by `query_pre_attn_scalar^-½`, and a gated GELU (tanh)
//! feed-forward block. Layers alternate between sliding-window attention and full attention.
//! Gemma 2 soft-caps its scores (`attn_logit_softcapping`); Gemma 3 adds per-head q/k norms,
//! gives each kind of layer its own rotary base, and with EmbeddingGemma's
//! `use_bidirectional_attention` lets a token see both ways. Checkpoint names follow Hugging
//! Face's `Gemma2Model` / `Gemma3TextModel`; `*ForCausalLM` checkpoints prefix them with
//! `model.`.

use burn::module::Param;
use burn::nn::{Embedding, RmsNorm};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::decoder::{DecoderBlocks, NormLoader};
use super::layers::{Attention, RotaryLayers, load_embedding, load_rms_norm, lookup, widen};
use crate::config::{Biases, GemmaConfig};
use crate::error::Result;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows};
use crate::weights::Weights;

#[derive(Debug)]
struct GemmaLayer<B: Backend> {
    input_norm: RmsNorm<B>,
    blocks: DecoderBlocks<B>,
    post_attention_norm: RmsNorm<B>,
    pre_feedforward_norm: RmsNorm<B>,
    post_feedforward_norm: RmsNorm<B>,
}

#[derive(Debug)]
pub struct Gemma<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    layers: Vec<GemmaLayer<B>>,
    final_norm: RmsNorm<B>,
    config: GemmaConfig,
}

impl<B: EncoderBackend> Gemma<B> {
    pub fn load(config: &GemmaConfig, weights: &Weights, device: &B::Device) -> Result<Self> {
        let shape = &config.shape;
        let (d, heads) = (shape.hidden_size, config.heads);
        let norm =
            |name: &str, dim| offset_rms_norm(weights, name, dim, shape.layer_norm_eps, device);
        let biases = Biases {
            qkv: config.attention_bias,
            output: config.attention_bias,
            mlp: false,
        };
        let head_norm: Option<NormLoader<B>> = config.head_norms().then_some(&norm);
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                let name = |part: &str| format!("{p}.{part}");
                let blocks =
                    DecoderBlocks::load(weights, &p, (shape, heads), biases, head_norm, device)?;
                Ok(GemmaLayer {
                    input_norm: norm(&name("input_layernorm"), d)?,
                    blocks,
                    post_attention_norm: norm(&name("post_attention_layernorm"), d)?,
                    pre_feedforward_norm: norm(&name("pre_feedforward_layernorm"), d)?,
                    post_feedforward_norm: norm(&name("post_feedforward_layernorm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma {
            word_embeddings: load_embedding(
                weights,
                "embed_tokens.weight",
                shape.vocab_size,
                d,
                device,
            )?,
            layers,
            final_norm: norm("norm", d)?,
            config: config.clone(),
        })
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let config = &self.config;
        let heads = config.heads;
        let rows = TokenRows::of::<B>(batch);
        let embeddings = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device);
        // √hidden as the float32 Hugging Face multiplies by.
        let scale = (config.shape.hidden_size as f64).sqrt() as f32;
        let mut x = embeddings.mul_scalar(scale);
        let inputs = RotaryLayers::new(&config.layers, &rows, batch, heads.dim, attention, device);

        let activation = config.shape.activation;
        for (layer, (input, rotary)) in self.layers.iter().zip(inputs.per_layer()) {
            let h = layer.input_norm.forward(x.clone());
            let attended = layer.blocks.attention(h, heads, rotary, input);
            x = x + layer.post_attention_norm.forward(attended);
            let h = layer.pre_feedforward_norm.forward(x.clone());
            let fed = layer.blocks.feed_forward(h, activation);
            x = x + layer.post_feedforward_norm.forward(fed);
        }
        HiddenStates {
            x: self.final_norm.forward(x),
            rows,
        }
    }
}

/// Gemma's RMSNorm, which scales by `1 + weight` (its weights are stored centred on 0): a
/// plain RMSNorm whose scale is that sum, computed once in f32 as Hugging Face computes it.
fn offset_rms_norm<B: Backend>(
    weights: &Weights,
    name: &str,
    dim: usize,
    eps: f64,
    device: &B::Device,
) -> Result<RmsNorm<B>> {
    let mut norm = load_rms_norm(weights, name, dim, eps, device)?;
    norm.gamma = Param::from_tensor(norm.gamma.val().add_scalar(1.0));
    Ok(norm)
}
