//! Building blocks shared by the post-LayerNorm encoders (BERT, DistilBERT, MPNet): they differ
//! in embeddings, weight names and attention bias, not in the layer itself.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use super::TokenBatch;
use crate::config::{Activation, EncoderShape};
use crate::error::Result;
use crate::weights::Weights;

/// A PyTorch `nn.Linear` (`weight` is `[out, in]`), kept as burn's `[in, out]` by a transposed view.
pub fn load_linear<B: Backend>(
    weights: &Weights,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>> {
    let weight = weights.tensor::<B, 2>(&format!("{name}.weight"), [d_out, d_in], device)?;
    let bias_name = format!("{name}.bias");
    let bias = if weights.contains(&bias_name) {
        Some(Param::from_tensor(weights.tensor::<B, 1>(
            &bias_name,
            [d_out],
            device,
        )?))
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(weight.transpose()),
        bias,
    })
}

pub fn load_layer_norm<B: Backend>(
    weights: &Weights,
    name: &str,
    dim: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>> {
    let mut norm = LayerNormConfig::new(dim).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(weights.tensor(&format!("{name}.weight"), [dim], device)?);
    norm.beta = Some(Param::from_tensor(weights.tensor(
        &format!("{name}.bias"),
        [dim],
        device,
    )?));
    Ok(norm)
}

pub fn activate<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    activation: Activation,
) -> Tensor<B, D> {
    match activation {
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_approximate(x),
        Activation::Relu => relu(x),
        Activation::Silu => silu(x),
    }
}

/// How a layer computes attention; the results agree, the speed and robustness differ by backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    /// burn's fused `attention` op: on the CPU it avoids flex's slow Q·Kᵀ batched-matmul shape.
    #[default]
    Fused,
    /// softmax(Q·Kᵀ/√d + bias, padding masked)·V in plain ops: on burn 0.21's GPU backends the
    /// fused op's autotuner picks kernels that fail for some sequence lengths (f16 on CUDA:
    /// "Stage seq_q must divide problem seq_q"), while matmul and softmax are robust.
    Explicit,
}

/// Where one layer's tensors live in a checkpoint; each architecture fills these in.
pub struct LayerNames {
    pub query: String,
    pub key: String,
    pub value: String,
    pub attention_output: String,
    pub attention_norm: String,
    pub ffn_in: String,
    pub ffn_out: String,
    pub output_norm: String,
}

/// One post-LayerNorm transformer layer:
/// `h = LN(x + Attn(x)); out = LN(h + W2·act(W1·h))`.
#[derive(Debug)]
pub struct EncoderLayer<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    attention_output: Linear<B>,
    attention_norm: LayerNorm<B>,
    ffn_in: Linear<B>,
    ffn_out: Linear<B>,
    output_norm: LayerNorm<B>,
    num_heads: usize,
    activation: Activation,
}

impl<B: Backend> EncoderLayer<B> {
    pub fn load(
        weights: &Weights,
        names: &LayerNames,
        shape: &EncoderShape,
        device: &B::Device,
    ) -> Result<Self> {
        let (d, ffn, eps) = (
            shape.hidden_size,
            shape.intermediate_size,
            shape.layer_norm_eps,
        );
        Ok(EncoderLayer {
            query: load_linear(weights, &names.query, d, d, device)?,
            key: load_linear(weights, &names.key, d, d, device)?,
            value: load_linear(weights, &names.value, d, d, device)?,
            attention_output: load_linear(weights, &names.attention_output, d, d, device)?,
            attention_norm: load_layer_norm(weights, &names.attention_norm, d, eps, device)?,
            ffn_in: load_linear(weights, &names.ffn_in, d, ffn, device)?,
            ffn_out: load_linear(weights, &names.ffn_out, ffn, d, device)?,
            output_norm: load_layer_norm(weights, &names.output_norm, d, eps, device)?,
            num_heads: shape.num_heads,
            activation: shape.activation,
        })
    }

    /// `padding`: `[batch, 1, seq, seq]`, true where a key position is padding.
    /// `bias`: optional additive attention bias broadcastable to `[batch, heads, seq, seq]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        padding: Tensor<B, 4, Bool>,
        bias: Option<Tensor<B, 4>>,
        kind: Attention,
    ) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let heads = |t: Tensor<B, 3>| {
            t.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (
            heads(self.query.forward(x.clone())),
            heads(self.key.forward(x.clone())),
            heads(self.value.forward(x.clone())),
        );
        let context = match kind {
            Attention::Fused => attention(
                q,
                k,
                v,
                Some(padding),
                bias,
                AttentionModuleOptions::default(),
            ),
            Attention::Explicit => {
                let mut scores = q
                    .matmul(k.swap_dims(2, 3))
                    .div_scalar((head_dim as f64).sqrt());
                if let Some(bias) = bias {
                    scores = scores + bias;
                }
                // The most negative f16 value: finite in every precision, zero after softmax.
                let scores = scores.mask_fill(padding, -65504.0);
                softmax(scores, 3).matmul(v)
            }
        };
        let context = context.swap_dims(1, 2).reshape([batch, seq, hidden]);
        let h = self
            .attention_norm
            .forward(x + self.attention_output.forward(context));
        let ffn = self
            .ffn_out
            .forward(activate(self.ffn_in.forward(h.clone()), self.activation));
        self.output_norm.forward(h + ffn)
    }
}

/// An embedding table `[rows, dim]`.
pub fn load_embedding<B: Backend>(
    weights: &Weights,
    name: &str,
    rows: usize,
    dim: usize,
    device: &B::Device,
) -> Result<Embedding<B>> {
    Ok(Embedding {
        weight: Param::from_tensor(weights.tensor(name, [rows, dim], device)?),
    })
}

/// The `num_layers` layers, named by `names(i)`.
pub fn load_layers<B: Backend>(
    weights: &Weights,
    shape: &EncoderShape,
    device: &B::Device,
    names: impl Fn(usize) -> LayerNames,
) -> Result<Vec<EncoderLayer<B>>> {
    (0..shape.num_layers)
        .map(|i| EncoderLayer::load(weights, &names(i), shape, device))
        .collect()
}

/// Runs `layers` in turn over the embedded batch.
pub fn run_layers<B: Backend>(
    layers: &[EncoderLayer<B>],
    mut x: Tensor<B, 3>,
    batch: &TokenBatch,
    bias: Option<Tensor<B, 4>>,
    attention: Attention,
    device: &B::Device,
) -> Tensor<B, 3> {
    let padding = batch.padding_mask(device);
    for layer in layers {
        x = layer.forward(x, padding.clone(), bias.clone(), attention);
    }
    x
}

/// Positions `0..seq_len` for every row: BERT's and DistilBERT's absolute positions.
pub fn sequential_positions<B: Backend>(
    batch: &TokenBatch,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(0..batch.seq_len as i64, device)
        .reshape([1, batch.seq_len])
        .expand([batch.batch, batch.seq_len])
}
