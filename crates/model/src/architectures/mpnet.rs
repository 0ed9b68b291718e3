//! MPNet (Song et al. 2020): BERT-shaped layers plus T5's relative position bias shared by
//! all layers, and RoBERTa-style absolute positions counted from `pad_token_id + 1`.

use burn::nn::{Embedding, LayerNorm};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::layers::{
    Attention, EncoderLayer, LayerNames, RelativePositionBias, load_embedding, load_layer_norm,
    load_layers, lookup, positions_after_padding, run_layers, widen,
};
use crate::config::EncoderShape;
use crate::error::Result;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows};
use crate::weights::Weights;

#[derive(Debug)]
pub struct MPNet<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    relative_attention_bias: RelativePositionBias,
    pad_token_id: u32,
}

impl<B: EncoderBackend> MPNet<B> {
    pub fn load(
        shape: &EncoderShape,
        num_buckets: usize,
        pad_token_id: usize,
        weights: &Weights,
        device: &B::Device,
    ) -> Result<Self> {
        let d = shape.hidden_size;
        let layers = load_layers(weights, shape, device, |i| {
            let p = format!("encoder.layer.{i}");
            LayerNames {
                query: format!("{p}.attention.attn.q"),
                key: format!("{p}.attention.attn.k"),
                value: format!("{p}.attention.attn.v"),
                attention_output: format!("{p}.attention.attn.o"),
                attention_norm: format!("{p}.attention.LayerNorm"),
                ffn_in: format!("{p}.intermediate.dense"),
                ffn_out: format!("{p}.output.dense"),
                output_norm: format!("{p}.output.LayerNorm"),
            }
        })?;
        Ok(MPNet {
            word_embeddings: load_embedding(
                weights,
                "embeddings.word_embeddings.weight",
                shape.vocab_size,
                d,
                device,
            )?,
            position_embeddings: load_embedding(
                weights,
                "embeddings.position_embeddings.weight",
                shape.max_position_embeddings,
                d,
                device,
            )?,
            embeddings_norm: load_layer_norm(
                weights,
                "embeddings.LayerNorm",
                d,
                shape.layer_norm_eps,
                device,
            )?,
            layers,
            // Hugging Face's MPNet fixes the distance of the largest bucket at 128.
            relative_attention_bias: RelativePositionBias::load(
                weights,
                "encoder.relative_attention_bias.weight",
                (num_buckets, 128),
                shape.num_heads,
            )?,
            pad_token_id: pad_token_id as u32,
        })
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let rows = TokenRows::of::<B>(batch);
        let positions = positions_after_padding(batch, self.pad_token_id);
        let embeddings = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device)
            + lookup(&self.position_embeddings, &rows, &positions, device);
        let x = self.embeddings_norm.forward(embeddings);
        let bias = self.relative_attention_bias.tensor(batch.seq_len, device);
        run_layers(&self.layers, x, batch, rows, Some(bias), attention, device)
    }
}
