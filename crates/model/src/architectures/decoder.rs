//! Building blocks shared by the decoders that embedding models run (the Llama family, Gemma):
//! grouped-query attention with rotary positions (and, in Qwen3 and Gemma 3, an RMSNorm over
//! each query and key head before them), and a gated feed-forward block. They differ in their
//! norms around these, not in the blocks.

use burn::nn::{Linear, RmsNorm};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::layers::{load_linear_with_bias, load_stacked_linear_with_bias};
use crate::config::{Activation, Biases, EncoderShape};
use crate::error::Result;
use crate::ops::{AttentionInput, EncoderBackend, Heads, Rotary};
use crate::weights::Weights;

/// Loads an RMSNorm of `dim` values named `name`, as the architecture defines it.
pub type NormLoader<'a, B> = &'a dyn Fn(&str, usize) -> Result<RmsNorm<B>>;

/// A decoder layer's attention and feed-forward projections, in Hugging Face's names under
/// `self_attn.` and `mlp.`.
#[derive(Debug)]
pub struct DecoderBlocks<B: Backend> {
    /// `q_proj`, `k_proj`, `v_proj` side by side: `[hidden, heads.qkv_width()]`.
    qkv: Linear<B>,
    /// Over each query and key head's `head_dim` values, where the architecture has them.
    head_norms: Option<(RmsNorm<B>, RmsNorm<B>)>,
    attention_output: Linear<B>,
    /// `gate_proj` then `up_proj`: `[hidden, 2 × intermediate]`, the gated activation's
    /// activated half and its multiplier, so that `down(act(gate) ⊙ up)` is one op.
    gate_up: Linear<B>,
    down: Linear<B>,
}

impl<B: EncoderBackend> DecoderBlocks<B> {
    /// The blocks of layer `prefix` (`layers.{i}`). `head_norm(name, dim)`, for architectures
    /// with per-head query and key norms, loads one as the architecture defines it.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        (shape, heads): (&EncoderShape, Heads),
        biases: Biases,
        head_norm: Option<NormLoader<B>>,
        device: &B::Device,
    ) -> Result<Self> {
        let (d, ffn) = (shape.hidden_size, shape.intermediate_size);
        let (queries, keys) = (heads.query_width(), heads.key_value_width());
        let name = |part: &str| format!("{prefix}.{part}");
        Ok(DecoderBlocks {
            qkv: load_stacked_linear_with_bias(
                weights,
                &[
                    (&name("self_attn.q_proj"), queries),
                    (&name("self_attn.k_proj"), keys),
                    (&name("self_attn.v_proj"), keys),
                ],
                d,
                biases.qkv,
                device,
            )?,
            head_norms: match head_norm {
                Some(norm) => Some((
                    norm(&name("self_attn.q_norm"), heads.dim)?,
                    norm(&name("self_attn.k_norm"), heads.dim)?,
                )),
                None => None,
            },
            attention_output: load_linear_with_bias(
                weights,
                &name("self_attn.o_proj"),
                (queries, d),
                biases.output,
                device,
            )?,
            gate_up: load_stacked_linear_with_bias(
                weights,
                &[(&name("mlp.gate_proj"), ffn), (&name("mlp.up_proj"), ffn)],
                d,
                biases.mlp,
                device,
            )?,
            down: load_linear_with_bias(
                weights,
                &name("mlp.down_proj"),
                (ffn, d),
                biases.mlp,
                device,
            )?,
        })
    }

    /// Self-attention over the normed rows `h`, through the output projection.
    pub fn attention(
        &self,
        h: Tensor<B, 2>,
        heads: Heads,
        rotary: &Rotary<B>,
        input: &AttentionInput<B>,
    ) -> Tensor<B, 2> {
        let qkv = B::fused_linear(h, &self.qkv, None);
        let qkv = match &self.head_norms {
            Some((query_norm, key_norm)) => normalize_heads(qkv, heads, query_norm, key_norm),
            None => qkv,
        };
        let qkv = B::rotate_queries_keys(qkv, heads, rotary);
        let context = B::self_attention(qkv, heads, input);
        B::fused_linear(context, &self.attention_output, None)
    }

    /// The gated feed-forward block over the normed rows `h`: `down(act(gate) ⊙ up)`.
    pub fn feed_forward(&self, h: Tensor<B, 2>, activation: Activation) -> Tensor<B, 2> {
        let gated = B::gated_activation(B::fused_linear(h, &self.gate_up, None), activation);
        B::fused_linear(gated, &self.down, None)
    }
}

/// `q_norm` over each query head and `k_norm` over each key head of `qkv`; values unchanged.
fn normalize_heads<B: Backend>(
    qkv: Tensor<B, 2>,
    heads: Heads,
    query_norm: &RmsNorm<B>,
    key_norm: &RmsNorm<B>,
) -> Tensor<B, 2> {
    let [rows, width] = qkv.dims();
    let (queries, keys) = (heads.query_width(), heads.key_value_width());
    let norm = |columns: std::ops::Range<usize>, count: usize, norm: &RmsNorm<B>| {
        let x = qkv.clone().slice([0..rows, columns]);
        norm.forward(x.reshape([rows, count, heads.dim]))
            .reshape([rows, count * heads.dim])
    };
    Tensor::cat(
        vec![
            norm(0..queries, heads.query, query_norm),
            norm(queries..queries + keys, heads.key_value, key_norm),
            qkv.clone().slice([0..rows, queries + keys..width]),
        ],
        1,
    )
}
