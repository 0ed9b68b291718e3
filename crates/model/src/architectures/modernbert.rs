//! ModernBERT (Warner et al. 2024): pre-LayerNorm layers (the first one's attention reads the
//! embeddings as they are), no position table but rotary positions, a gated feed-forward block
//! (`act(input) ⊙ gate`), and attention that alternates between the whole text (global layers)
//! and a window around each token (local layers), each kind with its own rotary base. Biases
//! are off by default, each group by its config flag. Checkpoint names follow Hugging Face's
//! `ModernBertModel`; `ModernBertForMaskedLM` checkpoints prefix them with `model.`.

use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;

use super::TokenBatch;
use super::layers::{
    Attention, RotaryLayers, load_embedding, load_linear_with_bias, load_norm, lookup, widen,
};
use crate::config::ModernBertConfig;
use crate::error::Result;
use crate::modules::MlmHeadNames;
use crate::ops::{EncoderBackend, Heads, HiddenStates, TokenRows};
use crate::weights::Weights;

/// `ModernBertForMaskedLM`'s head (`head`, then `decoder`, tied to the token embeddings); its
/// activation and biases come from the config ([`ModernBert::mlm_head_names`]).
const MLM_HEAD: MlmHeadNames = MlmHeadNames {
    transform: "head.dense",
    norm: "head.norm",
    decoder: "decoder",
    shared_bias: None,
    activation: None,
    transform_bias: false,
    norm_bias: false,
    decoder_bias: true,
};

#[derive(Debug)]
struct ModernBertLayer<B: Backend> {
    /// `None` in the first layer (Hugging Face's `nn.Identity`).
    attention_norm: Option<LayerNorm<B>>,
    qkv: Linear<B>,
    attention_output: Linear<B>,
    mlp_norm: LayerNorm<B>,
    /// `[hidden, 2 × intermediate]`: the input half, then the gate half.
    mlp_in: Linear<B>,
    mlp_out: Linear<B>,
}

#[derive(Debug)]
pub struct ModernBert<B: Backend> {
    pub(super) word_embeddings: Embedding<B>,
    embeddings_norm: LayerNorm<B>,
    layers: Vec<ModernBertLayer<B>>,
    final_norm: LayerNorm<B>,
    config: ModernBertConfig,
}

impl<B: EncoderBackend> ModernBert<B> {
    pub fn load(config: &ModernBertConfig, weights: &Weights, device: &B::Device) -> Result<Self> {
        let shape = &config.shape;
        let (d, ffn, eps) = (
            shape.hidden_size,
            shape.intermediate_size,
            shape.layer_norm_eps,
        );
        let norm = |name: &str| load_norm(weights, name, d, eps, config.norm_bias, device);
        let layers = (0..shape.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                let (attention, mlp) = (config.attention_bias, config.mlp_bias);
                Ok(ModernBertLayer {
                    attention_norm: if i == 0 {
                        None
                    } else {
                        Some(norm(&format!("{p}.attn_norm"))?)
                    },
                    qkv: load_linear_with_bias(
                        weights,
                        &format!("{p}.attn.Wqkv"),
                        (d, 3 * d),
                        attention,
                        device,
                    )?,
                    attention_output: load_linear_with_bias(
                        weights,
                        &format!("{p}.attn.Wo"),
                        (d, d),
                        attention,
                        device,
                    )?,
                    mlp_norm: norm(&format!("{p}.mlp_norm"))?,
                    mlp_in: load_linear_with_bias(
                        weights,
                        &format!("{p}.mlp.Wi"),
                        (d, 2 * ffn),
                        mlp,
                        device,
                    )?,
                    mlp_out: load_linear_with_bias(
                        weights,
                        &format!("{p}.mlp.Wo"),
                        (ffn, d),
                        mlp,
                        device,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModernBert {
            word_embeddings: load_embedding(
                weights,
                "embeddings.tok_embeddings.weight",
                shape.vocab_size,
                d,
                device,
            )?,
            embeddings_norm: norm("embeddings.norm")?,
            layers,
            final_norm: norm("final_norm")?,
            config: config.clone(),
        })
    }

    /// The masked-language-model head as this checkpoint's config builds it.
    pub fn mlm_head_names(&self) -> MlmHeadNames {
        MlmHeadNames {
            activation: Some(self.config.head_activation),
            transform_bias: self.config.head_bias,
            norm_bias: self.config.norm_bias,
            decoder_bias: self.config.decoder_bias,
            ..MLM_HEAD
        }
    }

    pub fn forward(
        &self,
        batch: &TokenBatch,
        attention: Attention,
        device: &B::Device,
    ) -> HiddenStates<B> {
        let config = &self.config;
        let heads = Heads::multi(config.shape.num_heads, config.shape.hidden_size);
        let rows = TokenRows::of::<B>(batch);
        let embeddings = lookup(&self.word_embeddings, &rows, &widen(&batch.ids), device);
        let mut x = self.embeddings_norm.forward(embeddings);
        let inputs = RotaryLayers::new(&config.layers, &rows, batch, heads.dim, attention, device);

        for (layer, (input, rotary)) in self.layers.iter().zip(inputs.per_layer()) {
            let h = match &layer.attention_norm {
                Some(norm) => norm.forward(x.clone()),
                None => x.clone(),
            };
            let qkv = B::fused_linear(h, &layer.qkv, None);
            let qkv = B::rotate_queries_keys(qkv, heads, rotary);
            let context = B::self_attention(qkv, heads, input);
            x = x + B::fused_linear(context, &layer.attention_output, None);

            let h = layer.mlp_norm.forward(x.clone());
            let gated = B::fused_linear(h, &layer.mlp_in, None);
            let gated = B::gated_activation(gated, config.shape.activation);
            x = x + B::fused_linear(gated, &layer.mlp_out, None);
        }
        HiddenStates {
            x: self.final_norm.forward(x),
            rows,
        }
    }
}
