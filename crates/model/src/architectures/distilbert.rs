//! DistilBERT (Sanh et al. 2019): BERT without token types, six layers, different weight names.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Int, Tensor, backend::Backend};

use super::TokenBatch;
use super::layers::{EncoderLayer, LayerNames, load_layer_norm};
use crate::config::EncoderShape;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug)]
pub struct DistilBert<B: Backend> {
    word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
}

impl<B: Backend> DistilBert<B> {
    pub fn load(shape: &EncoderShape, weights: &Weights, device: &B::Device) -> Result<Self> {
        let d = shape.hidden_size;
        let embedding = |name: &str, rows: usize| -> Result<Embedding<B>> {
            Ok(Embedding {
                weight: Param::from_tensor(weights.tensor(name, [rows, d], device)?),
            })
        };
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("transformer.layer.{i}");
                let names = LayerNames {
                    query: format!("{p}.attention.q_lin"),
                    key: format!("{p}.attention.k_lin"),
                    value: format!("{p}.attention.v_lin"),
                    attention_output: format!("{p}.attention.out_lin"),
                    attention_norm: format!("{p}.sa_layer_norm"),
                    ffn_in: format!("{p}.ffn.lin1"),
                    ffn_out: format!("{p}.ffn.lin2"),
                    output_norm: format!("{p}.output_layer_norm"),
                };
                EncoderLayer::load(weights, &names, shape, device)
            })
            .collect::<Result<_>>()?;
        Ok(DistilBert {
            word_embeddings: embedding("embeddings.word_embeddings.weight", shape.vocab_size)?,
            position_embeddings: embedding(
                "embeddings.position_embeddings.weight",
                shape.max_position_embeddings,
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
            + self.position_embeddings.forward(positions);
        let mut x = self.embeddings_norm.forward(embeddings);
        let padding = batch.padding_mask(device);
        for layer in &self.layers {
            x = layer.forward(x, padding.clone(), None);
        }
        x
    }
}
