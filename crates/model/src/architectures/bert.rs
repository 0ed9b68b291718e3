//! BERT (Devlin et al. 2019): learned absolute positions, token types, post-LayerNorm layers.
//! Checkpoint names follow Hugging Face's `BertModel`.

use burn::nn::{Embedding, LayerNorm};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::layers::{
    Attention, EncoderLayer, LayerNames, load_embedding, load_layer_norm, load_layers, lookup,
    positions_after_padding, run_layers, sequential_positions, widen,
};
use crate::config::EncoderShape;
use crate::error::Result;
use crate::modules::MlmHeadNames;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows};
use crate::weights::Weights;

/// `BertForMaskedLM`'s head (`cls.predictions`).
pub(crate) const MLM_HEAD: MlmHeadNames = MlmHeadNames {
    transform: "cls.predictions.transform.dense",
    norm: "cls.predictions.transform.LayerNorm",
    decoder: "cls.predictions.decoder",
    shared_bias: Some("cls.predictions.bias"),
    activation: None,
    transform_bias: true,
    norm_bias: true,
    decoder_bias: true,
};

/// How tokens are numbered for the position table.
#[derive(Debug, Clone, Copy)]
pub enum Positions {
    /// `0..seq_len`: BERT.
    FromZero,
    /// From `pad_token_id + 1`, pad ids at `pad_token_id`: RoBERTa.
    AfterPadding { pad_token_id: u32 },
}

#[derive(Debug)]
pub struct Bert<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    token_type_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    positions: Positions,
}

impl<B: EncoderBackend> Bert<B> {
    pub fn load(
        shape: &EncoderShape,
        type_vocab_size: usize,
        positions: Positions,
        weights: &Weights,
        device: &B::Device,
    ) -> Result<Self> {
        let d = shape.hidden_size;
        let layers = load_layers(weights, shape, device, |i| {
            let p = format!("encoder.layer.{i}");
            LayerNames {
                query: format!("{p}.attention.self.query"),
                key: format!("{p}.attention.self.key"),
                value: format!("{p}.attention.self.value"),
                attention_output: format!("{p}.attention.output.dense"),
                attention_norm: format!("{p}.attention.output.LayerNorm"),
                ffn_in: format!("{p}.intermediate.dense"),
                ffn_out: format!("{p}.output.dense"),
                output_norm: format!("{p}.output.LayerNorm"),
            }
        })?;
        Ok(Bert {
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
            token_type_embeddings: load_embedding(
                weights,
                "embeddings.token_type_embeddings.weight",
                type_vocab_size,
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
            positions,
        })
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let rows = TokenRows::of::<B>(batch);
        let positions = match self.positions {
            Positions::FromZero => sequential_positions(batch),
            Positions::AfterPadding { pad_token_id } => {
                positions_after_padding(batch, pad_token_id)
            }
        };
        let embeddings = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device)
            + lookup(&self.position_embeddings, &rows, &positions, device)
            + lookup(
                &self.token_type_embeddings,
                &rows,
                &widen(&batch.type_ids),
                device,
            );
        let x = self.embeddings_norm.forward(embeddings);
        run_layers(&self.layers, x, batch, rows, None, attention, device)
    }
}
