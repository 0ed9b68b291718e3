//! Qwen3 (Qwen team 2025), the decoder under Qwen3-Embedding: pre-RMSNorm layers, grouped-query
//! attention with an RMSNorm over each query and key head before rotary positions, causal
//! attention (a token sees itself and the tokens before it), a gated SiLU feed-forward block,
//! and a final norm. An embedding model pools the last token, the one that has seen the whole
//! text. Checkpoint names follow Hugging Face's `Qwen3Model`; `Qwen3ForCausalLM` checkpoints
//! prefix them with `model.`.

use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::layers::{
    Attention, flatten_rows, load_embedding, load_linear_with_bias, load_rms_norm,
    load_stacked_linear_with_bias, row_ids, sequential_positions, widen,
};
use crate::config::Qwen3Config;
use crate::error::Result;
use crate::ops::{AttentionInput, EncoderBackend, Heads, HiddenStates, Rotary, TokenRows, Window};
use crate::weights::Weights;

#[derive(Debug)]
struct Qwen3Layer<B: Backend> {
    input_norm: RmsNorm<B>,
    /// `q_proj`, `k_proj`, `v_proj` side by side: `[hidden, heads.qkv_width()]`.
    qkv: Linear<B>,
    /// Over each head's `head_dim` values.
    query_norm: RmsNorm<B>,
    key_norm: RmsNorm<B>,
    attention_output: Linear<B>,
    mlp_norm: RmsNorm<B>,
    /// `gate_proj` then `up_proj`: `[hidden, 2 × intermediate]`, the gated activation's
    /// activated half and its multiplier, so that `down(act(gate) ⊙ up)` is one op.
    gate_up: Linear<B>,
    down: Linear<B>,
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
        let (d, ffn, eps) = (
            shape.hidden_size,
            shape.intermediate_size,
            shape.layer_norm_eps,
        );
        let heads = config.heads();
        let (queries, keys) = (heads.query_width(), heads.key_value_width());
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                let name = |part: &str| format!("{p}.{part}");
                let norm = |part: &str, dim| load_rms_norm(weights, &name(part), dim, eps, device);
                let bias = config.attention_bias;
                Ok(Qwen3Layer {
                    input_norm: norm("input_layernorm", d)?,
                    qkv: load_stacked_linear_with_bias(
                        weights,
                        &[
                            (&name("self_attn.q_proj"), queries),
                            (&name("self_attn.k_proj"), keys),
                            (&name("self_attn.v_proj"), keys),
                        ],
                        d,
                        bias,
                        device,
                    )?,
                    query_norm: norm("self_attn.q_norm", heads.dim)?,
                    key_norm: norm("self_attn.k_norm", heads.dim)?,
                    attention_output: load_linear_with_bias(
                        weights,
                        &name("self_attn.o_proj"),
                        (queries, d),
                        bias,
                        device,
                    )?,
                    mlp_norm: norm("post_attention_layernorm", d)?,
                    gate_up: load_stacked_linear_with_bias(
                        weights,
                        &[(&name("mlp.gate_proj"), ffn), (&name("mlp.up_proj"), ffn)],
                        d,
                        false,
                        device,
                    )?,
                    down: load_linear_with_bias(
                        weights,
                        &name("mlp.down_proj"),
                        (ffn, d),
                        false,
                        device,
                    )?,
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
            final_norm: load_rms_norm(weights, "norm", d, eps, device)?,
            config: config.clone(),
        })
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let heads = self.config.heads();
        let rows = TokenRows::of::<B>(batch);
        let embeddings = self
            .word_embeddings
            .forward(row_ids(&rows, &widen(&batch.ids), device));
        let mut x = flatten_rows(embeddings);

        // Right padding: a token's position is its index in the text, in either layout (Hugging
        // Face numbers a left-padded batch from its first column, which shifts every position of
        // a text alike: rotary attention depends on differences of positions only).
        let positions = rows.per_row(&sequential_positions(batch));
        let rotary = Rotary::new(&positions, heads.dim, self.config.rope_theta, device);
        let input = AttentionInput::new(rows, batch, None, Some(Window::CAUSAL), attention, device);

        for layer in &self.layers {
            let h = layer.input_norm.forward(x.clone());
            let qkv = B::fused_linear(h, &layer.qkv, None);
            let qkv = normalize_heads(qkv, heads, &layer.query_norm, &layer.key_norm);
            let qkv = B::rotate_queries_keys(qkv, heads, &rotary);
            let context = B::self_attention(qkv, heads, &input);
            x = x + B::fused_linear(context, &layer.attention_output, None);

            let h = layer.mlp_norm.forward(x.clone());
            let gated = B::fused_linear(h, &layer.gate_up, None);
            let gated = B::gated_activation(gated, self.config.shape.activation);
            x = x + B::fused_linear(gated, &layer.down, None);
        }
        HiddenStates {
            x: self.final_norm.forward(x),
            rows: input.rows,
        }
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
