//! T5's encoder (Raffel et al. 2020), under sentence-t5 and GTR-T5, and mT5's: pre-norm
//! layers with T5's RMSNorm (a scale, no bias, no mean), attention without biases whose scores
//! are not scaled (T5 folds `d_kv^-½` into its initialisation) plus a relative position bias
//! that the first layer holds and every layer adds, and a ReLU feed-forward block (gated GELU
//! in T5 v1.1 and mT5). Checkpoint names follow Hugging Face's `T5EncoderModel` (`shared.`,
//! `encoder.block.{i}.layer.{0,1}.…`), which `T5Model` / `T5ForConditionalGeneration`
//! checkpoints share.

use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::layers::{
    Attention, RelativePositionBias, load_embedding, load_rms_norm, load_stacked_linear_with_bias,
    lookup, widen,
};
use crate::config::{Activation, T5Config};
use crate::error::Result;
use crate::ops::{AttentionInput, EncoderBackend, Heads, HiddenStates, Scores, TokenRows};
use crate::weights::Weights;

#[derive(Debug)]
struct T5Layer<B: Backend> {
    attention_norm: RmsNorm<B>,
    /// `q`, `k`, `v` side by side: `[d_model, 3 × heads × d_kv]`.
    qkv: Linear<B>,
    attention_output: Linear<B>,
    feed_forward_norm: RmsNorm<B>,
    /// `wi`, or `wi_0` then `wi_1` in a gated block (the activated half, then its multiplier).
    feed_forward_in: Linear<B>,
    feed_forward_out: Linear<B>,
}

#[derive(Debug)]
pub struct T5<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    layers: Vec<T5Layer<B>>,
    final_norm: RmsNorm<B>,
    relative_attention_bias: RelativePositionBias,
    heads: Heads,
    activation: Activation,
    gated: bool,
}

impl<B: EncoderBackend> T5<B> {
    pub fn load(config: &T5Config, weights: &Weights, device: &B::Device) -> Result<Self> {
        let shape = &config.shape;
        let (d, ffn, heads) = (shape.hidden_size, shape.intermediate_size, config.heads);
        let norm = |name: &str| load_rms_norm(weights, name, d, shape.layer_norm_eps, device);
        let linear = |parts: &[(&str, usize)], d_in| {
            load_stacked_linear_with_bias(weights, parts, d_in, false, device)
        };
        let layers = (0..shape.num_layers)
            .map(|i| {
                let attention = format!("encoder.block.{i}.layer.0");
                let feed_forward = format!("encoder.block.{i}.layer.1");
                let name = |block: &str, part: &str| format!("{block}.{part}");
                let (q, k, v) = (
                    name(&attention, "SelfAttention.q"),
                    name(&attention, "SelfAttention.k"),
                    name(&attention, "SelfAttention.v"),
                );
                let width = heads.query_width();
                let ffn_in = if config.gated {
                    linear(
                        &[
                            (&name(&feed_forward, "DenseReluDense.wi_0"), ffn),
                            (&name(&feed_forward, "DenseReluDense.wi_1"), ffn),
                        ],
                        d,
                    )?
                } else {
                    linear(&[(&name(&feed_forward, "DenseReluDense.wi"), ffn)], d)?
                };
                Ok(T5Layer {
                    attention_norm: norm(&name(&attention, "layer_norm"))?,
                    qkv: linear(&[(&q, width), (&k, width), (&v, width)], d)?,
                    attention_output: linear(&[(&name(&attention, "SelfAttention.o"), d)], width)?,
                    feed_forward_norm: norm(&name(&feed_forward, "layer_norm"))?,
                    feed_forward_in: ffn_in,
                    feed_forward_out: linear(
                        &[(&name(&feed_forward, "DenseReluDense.wo"), d)],
                        ffn,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // `shared` is the model's table; a checkpoint may carry the encoder's tied copy only.
        let embeddings = if weights.contains("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        Ok(T5 {
            word_embeddings: load_embedding(weights, embeddings, shape.vocab_size, d, device)?,
            layers,
            final_norm: norm("encoder.final_layer_norm")?,
            relative_attention_bias: RelativePositionBias::load(
                weights,
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                (
                    config.relative_attention_num_buckets,
                    config.relative_attention_max_distance,
                ),
                heads.query,
            )?,
            heads,
            activation: shape.activation,
            gated: config.gated,
        })
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let rows = TokenRows::of::<B>(batch);
        let mut x = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device);
        let bias = self.relative_attention_bias.tensor(batch.seq_len, device);
        let unscaled = Scores {
            scale: Some(1.0),
            softcap: None,
        };
        let input = AttentionInput::new(rows, batch, Some(bias), None, attention, device)
            .with_scores(unscaled);
        for layer in &self.layers {
            let h = layer.attention_norm.forward(x.clone());
            let qkv = B::fused_linear(h, &layer.qkv, None);
            let context = B::self_attention(qkv, self.heads, &input);
            x = x + B::fused_linear(context, &layer.attention_output, None);
            let h = layer.feed_forward_norm.forward(x.clone());
            x = x + self.feed_forward(layer, h);
        }
        HiddenStates {
            x: self.final_norm.forward(x),
            rows: input.rows,
        }
    }

    fn feed_forward(&self, layer: &T5Layer<B>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let hidden = if self.gated {
            B::gated_activation(
                B::fused_linear(h, &layer.feed_forward_in, None),
                self.activation,
            )
        } else {
            B::fused_linear(h, &layer.feed_forward_in, Some(self.activation))
        };
        B::fused_linear(hidden, &layer.feed_forward_out, None)
    }
}
