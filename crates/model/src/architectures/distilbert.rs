//! DistilBERT (Sanh et al. 2019): BERT without token types, six layers, different weight names.

use burn::nn::{Embedding, LayerNorm};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::layers::{
    Attention, EncoderLayer, LayerNames, load_embedding, load_layer_norm, load_layers, lookup,
    run_layers, sequential_positions, widen,
};
use crate::config::EncoderShape;
use crate::error::Result;
use crate::modules::MlmHeadNames;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows};
use crate::weights::Weights;

/// `DistilBertForMaskedLM`'s head.
pub(crate) const MLM_HEAD: MlmHeadNames = MlmHeadNames {
    transform: "vocab_transform",
    norm: "vocab_layer_norm",
    decoder: "vocab_projector",
    shared_bias: None,
    activation: None,
    transform_bias: true,
    norm_bias: true,
    decoder_bias: true,
};

#[derive(Debug)]
pub struct DistilBert<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
}

impl<B: EncoderBackend> DistilBert<B> {
    pub fn load(shape: &EncoderShape, weights: &Weights, device: &B::Device) -> Result<Self> {
        let d = shape.hidden_size;
        let layers = load_layers(weights, shape, device, |i| {
            let p = format!("transformer.layer.{i}");
            LayerNames {
                query: format!("{p}.attention.q_lin"),
                key: format!("{p}.attention.k_lin"),
                value: format!("{p}.attention.v_lin"),
                attention_output: format!("{p}.attention.out_lin"),
                attention_norm: format!("{p}.sa_layer_norm"),
                ffn_in: format!("{p}.ffn.lin1"),
                ffn_out: format!("{p}.ffn.lin2"),
                output_norm: format!("{p}.output_layer_norm"),
            }
        })?;
        Ok(DistilBert {
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
        })
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let rows = TokenRows::of::<B>(batch);
        let positions = sequential_positions(batch);
        let embeddings = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device)
            + lookup(&self.position_embeddings, &rows, &positions, device);
        let x = self.embeddings_norm.forward(embeddings);
        run_layers(&self.layers, x, batch, rows, None, attention, device)
    }
}
