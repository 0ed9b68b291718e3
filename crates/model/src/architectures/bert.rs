//! BERT (Devlin et al. 2019): learned absolute positions, token types, post-LayerNorm layers.
//! Checkpoint names follow Hugging Face's `BertModel`.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Int, Tensor, backend::Backend};

use super::TokenBatch;
use super::layers::{EncoderLayer, LayerNames, load_layer_norm};
use crate::config::EncoderShape;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug)]
pub struct Bert<B: Backend> {
    word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    token_type_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
}

impl<B: Backend> Bert<B> {
    pub fn load(
        shape: &EncoderShape,
        type_vocab_size: usize,
        weights: &Weights,
        device: &B::Device,
    ) -> Result<Self> {
        let d = shape.hidden_size;
        let embedding = |name: &str, rows: usize| -> Result<Embedding<B>> {
            Ok(Embedding {
                weight: Param::from_tensor(weights.tensor(name, [rows, d], device)?),
            })
        };
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                let names = LayerNames {
                    query: format!("{p}.attention.self.query"),
                    key: format!("{p}.attention.self.key"),
                    value: format!("{p}.attention.self.value"),
                    attention_output: format!("{p}.attention.output.dense"),
                    attention_norm: format!("{p}.attention.output.LayerNorm"),
                    ffn_in: format!("{p}.intermediate.dense"),
                    ffn_out: format!("{p}.output.dense"),
                    output_norm: format!("{p}.output.LayerNorm"),
                };
                EncoderLayer::load(weights, &names, shape, device)
            })
            .collect::<Result<_>>()?;
        Ok(Bert {
            word_embeddings: embedding("embeddings.word_embeddings.weight", shape.vocab_size)?,
            position_embeddings: embedding(
                "embeddings.position_embeddings.weight",
                shape.max_position_embeddings,
            )?,
            token_type_embeddings: embedding(
                "embeddings.token_type_embeddings.weight",
                type_vocab_size,
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

    pub fn forward(&self, batch: &TokenBatch, device: &B::Device) -> Tensor<B, 3> {
        let positions = Tensor::<B, 1, Int>::arange(0..batch.seq_len as i64, device)
            .reshape([1, batch.seq_len])
            .expand([batch.batch, batch.seq_len]);
        let embeddings = self.word_embeddings.forward(batch.input_ids(device))
            + self.position_embeddings.forward(positions)
            + self
                .token_type_embeddings
                .forward(batch.token_type_ids(device));
        let mut x = self.embeddings_norm.forward(embeddings);
        let padding = batch.padding_mask(device);
        for layer in &self.layers {
            x = layer.forward(x, padding.clone(), None);
        }
        x
    }
}
