//! Qwen3 (Qwen team 2025), the decoder under Qwen3-Embedding: pre-RMSNorm layers, grouped-query
//! attention with an RMSNorm over each query and key head before rotary positions, causal
//! attention (a token sees itself and the tokens before it), a gated SiLU feed-forward block,
//! and a final norm. An embedding model pools the last token, the one that has seen the whole
//! text. Checkpoint names follow Hugging Face's `Qwen3Model`; `Qwen3ForCausalLM` checkpoints
//! prefix them with `model.`.

use burn::nn::{Embedding, RmsNorm};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::decoder::DecoderBlocks;
use super::layers::{
    Attention, flatten_rows, load_embedding, load_rms_norm, rotary_attention, row_ids, widen,
};
use crate::config::Qwen3Config;
use crate::error::Result;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows, Window};
use crate::weights::Weights;

#[derive(Debug)]
struct Qwen3Layer<B: Backend> {
    input_norm: RmsNorm<B>,
    blocks: DecoderBlocks<B>,
    mlp_norm: RmsNorm<B>,
}

#[derive(Debug)]
pub struct Qwen3<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    layers: Vec<Qwen3Layer<B>>,
    final_norm: RmsNorm<B>,
    config: Qwen3Config,
}

impl<B: EncoderBackend> Qwen3<B> {
    pub fn load(config: &Qwen3Config, weights: &Weights, device: &B::Device) -> Result<Self> {
        let shape = &config.shape;
        let (d, eps) = (shape.hidden_size, shape.layer_norm_eps);
        let norm = |name: &str, dim| load_rms_norm(weights, name, dim, eps, device);
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                Ok(Qwen3Layer {
                    input_norm: norm(&format!("{p}.input_layernorm"), d)?,
                    blocks: DecoderBlocks::load(
                        weights,
                        &p,
                        (shape, config.heads),
                        config.attention_bias,
                        &norm,
                        device,
                    )?,
                    mlp_norm: norm(&format!("{p}.post_attention_layernorm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen3 {
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
        let heads = self.config.heads;
        let rows = TokenRows::of::<B>(batch);
        let embeddings = self
            .word_embeddings
            .forward(row_ids(&rows, &widen(&batch.ids), device));
        let mut x = flatten_rows(embeddings);

        let (input, rotary) = rotary_attention(
            &rows,
            batch,
            heads.dim,
            (Some(Window::CAUSAL), self.config.rope_theta),
            attention,
            device,
        );

        let activation = self.config.shape.activation;
        for layer in &self.layers {
            let h = layer.input_norm.forward(x.clone());
            x = x + layer.blocks.attention(h, heads, &rotary, &input);
            let h = layer.mlp_norm.forward(x.clone());
            x = x + layer.blocks.feed_forward(h, activation);
        }
        HiddenStates {
            x: self.final_norm.forward(x),
            rows,
        }
    }
}
