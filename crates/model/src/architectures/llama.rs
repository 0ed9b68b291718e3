//! The Llama family of decoders as embedding models use them: Llama, Mistral (under
//! e5-mistral-7b-instruct and SFR-Embedding-Mistral), Qwen2 and Qwen3 (under Qwen3-Embedding).
//! Pre-RMSNorm layers, grouped-query attention with rotary positions, causal attention (a token
//! sees itself and the tokens before it, or only the last `sliding_window` of them in Mistral's
//! and some Qwen layers), a gated SiLU feed-forward block, and a final norm. Qwen3 adds an
//! RMSNorm over each query and key head before rotary positions; the members differ otherwise
//! only in their biases. An embedding model pools the last token, the one that has seen the
//! whole text. Checkpoint names follow Hugging Face's `*Model`; `*ForCausalLM` checkpoints
//! prefix them with `model.`.

use burn::nn::{Embedding, RmsNorm};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::decoder::{DecoderBlocks, NormLoader};
use super::layers::{Attention, RotaryLayers, load_embedding, load_rms_norm, lookup, widen};
use crate::config::LlamaConfig;
use crate::error::Result;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows};
use crate::weights::Weights;

#[derive(Debug)]
struct LlamaLayer<B: Backend> {
    input_norm: RmsNorm<B>,
    blocks: DecoderBlocks<B>,
    mlp_norm: RmsNorm<B>,
}

#[derive(Debug)]
pub struct Llama<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    layers: Vec<LlamaLayer<B>>,
    final_norm: RmsNorm<B>,
    config: LlamaConfig,
}

impl<B: EncoderBackend> Llama<B> {
    pub fn load(config: &LlamaConfig, weights: &Weights, device: &B::Device) -> Result<Self> {
        let shape = &config.shape;
        let (d, eps) = (shape.hidden_size, shape.layer_norm_eps);
        let norm = |name: &str, dim| load_rms_norm(weights, name, dim, eps, device);
        let head_norm: Option<NormLoader<B>> = config.head_norms().then_some(&norm);
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                Ok(LlamaLayer {
                    input_norm: norm(&format!("{p}.input_layernorm"), d)?,
                    blocks: DecoderBlocks::load(
                        weights,
                        &p,
                        (shape, config.heads),
                        config.biases,
                        head_norm,
                        device,
                    )?,
                    mlp_norm: norm(&format!("{p}.post_attention_layernorm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
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
        let mut x = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device);
        let inputs = RotaryLayers::new(&config.layers, &rows, batch, heads.dim, attention, device);

        let activation = config.shape.activation;
        for (layer, (input, rotary)) in self.layers.iter().zip(inputs.per_layer()) {
            let h = layer.input_norm.forward(x.clone());
            x = x + layer.blocks.attention(h, heads, rotary, input);
            let h = layer.mlp_norm.forward(x.clone());
            x = x + layer.blocks.feed_forward(h, activation);
        }
        HiddenStates {
            x: self.final_norm.forward(x),
            rows,
        }
    }
}
