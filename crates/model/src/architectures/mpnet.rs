//! MPNet (Song et al. 2020): BERT-shaped layers plus a T5-style relative position bias shared
//! by all layers, and RoBERTa-style absolute positions counted from `pad_token_id + 1`.

use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::TokenBatch;
use super::layers::{
    Attention, EncoderLayer, LayerNames, load_embedding, load_layer_norm, load_layers, lookup,
    positions_after_padding, run_layers, widen,
};
use crate::config::EncoderShape;
use crate::error::Result;
use crate::ops::{EncoderBackend, HiddenStates, TokenRows};
use crate::weights::Weights;

/// Hugging Face's MPNet uses this fixed distance for the largest relative-position bucket.
const MAX_DISTANCE: i64 = 128;

#[derive(Debug)]
pub struct MPNet<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    /// `[num_buckets, heads]`, kept on the host: the bias is assembled per sequence length.
    relative_attention_bias: Vec<f32>,
    num_buckets: usize,
    num_heads: usize,
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
            relative_attention_bias: weights.values(
                "encoder.relative_attention_bias.weight",
                &[num_buckets, shape.num_heads],
            )?,
            num_buckets,
            num_heads: shape.num_heads,
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
        let bias = self.position_bias(batch.seq_len, device);
        run_layers(&self.layers, x, batch, rows, Some(bias), attention, device)
    }

    fn position_bias(&self, seq: usize, device: &B::Device) -> Tensor<B, 4> {
        let heads = self.num_heads;
        let mut values = vec![0f32; heads * seq * seq];
        for q in 0..seq {
            for k in 0..seq {
                let bucket = relative_position_bucket(k as i64 - q as i64, self.num_buckets as i64);
                for h in 0..heads {
                    values[(h * seq + q) * seq + k] =
                        self.relative_attention_bias[bucket as usize * heads + h];
                }
            }
        }
        Tensor::from_data(TensorData::new(values, [1, heads, seq, seq]), device)
    }
}

/// T5's bucketing as MPNet implements it, in f32 like PyTorch so bucket edges agree exactly.
fn relative_position_bucket(relative_position: i64, num_buckets: i64) -> i64 {
    let half = num_buckets / 2;
    let n = -relative_position;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let scaled = (n as f32 / max_exact as f32).ln()
            / (MAX_DISTANCE as f32 / max_exact as f32).ln()
            * (half - max_exact) as f32;
        bucket += (max_exact + scaled as i64).min(half - 1);
    }
    bucket
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    #[test]
    fn buckets_match_hugging_face_for_known_distances() {
        // Values printed by transformers 5.23: MPNetEncoder.relative_position_bucket(torch.tensor(d), 32).
        let expected = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-8, 8),
            (20, 26),
            (-127, 15),
            (300, 31),
        ];
        for (distance, bucket) in expected {
            assert_eq!(
                relative_position_bucket(distance, 32),
                bucket,
                "distance {distance}"
            );
        }
    }
}
