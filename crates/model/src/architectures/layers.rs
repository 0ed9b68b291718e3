//! Building blocks shared by the post-LayerNorm encoders (BERT, DistilBERT, MPNet, RoBERTa): they
//! differ in embeddings, weight names and attention bias, not in the layer itself.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use super::TokenBatch;
use crate::config::{Activation, EncoderShape};
use crate::error::Result;
use crate::ops::{
    AttentionInput, EncoderBackend, Heads, HiddenStates, LayerAttention, Rope, Rotary, Scores,
    TokenRows, Window,
};
use crate::weights::Weights;

/// A PyTorch `nn.Linear` (`weight` is `[out, in]`) as burn's `[in, out]`.
pub fn load_linear<B: Backend>(
    weights: &Weights,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>> {
    load_stacked_linear(weights, &[(name, d_out)], d_in, device)
}

/// Several PyTorch linears with the same input (`(name, out)` each), side by side as one
/// `[in, Σ out]` linear (a missing bias is zeros when another has one).
pub fn load_stacked_linear<B: Backend>(
    weights: &Weights,
    parts: &[(&str, usize)],
    d_in: usize,
    device: &B::Device,
) -> Result<Linear<B>> {
    let total: usize = parts.iter().map(|&(_, d_out)| d_out).sum();
    let mut weight = Vec::with_capacity(total * d_in);
    let mut bias = Vec::with_capacity(total);
    let mut any_bias = false;
    for &(name, d_out) in parts {
        weight.extend(weights.values(&format!("{name}.weight"), &[d_out, d_in])?);
        let bias_name = format!("{name}.bias");
        if weights.contains(&bias_name) {
            bias.extend(weights.values(&bias_name, &[d_out])?);
            any_bias = true;
        } else {
            bias.extend(std::iter::repeat_n(0.0, d_out));
        }
    }
    // Stored `[in, out]` row-major, transposed here once: the CPU's GEMM then reads the
    // weights in the order its kernel wants and needs not repack them on every call.
    let mut transposed = vec![0f32; weight.len()];
    for (o, row) in weight.chunks_exact(d_in).enumerate() {
        for (i, &w) in row.iter().enumerate() {
            transposed[i * total + o] = w;
        }
    }
    let weight = Tensor::<B, 2>::from_data(TensorData::new(transposed, [d_in, total]), device);
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias: any_bias
            .then(|| Param::from_tensor(Tensor::from_data(TensorData::new(bias, [total]), device))),
    })
}

/// A linear layer whose bias the architecture's config decides: `{name}.bias` must be there
/// when `bias`, and is not read otherwise (as Hugging Face builds the layer).
pub fn load_linear_with_bias<B: Backend>(
    weights: &Weights,
    name: &str,
    (d_in, d_out): (usize, usize),
    bias: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    load_stacked_linear_with_bias(weights, &[(name, d_out)], d_in, bias, device)
}

/// [`load_stacked_linear`] with the biases the config decides, as [`load_linear_with_bias`].
pub fn load_stacked_linear_with_bias<B: Backend>(
    weights: &Weights,
    parts: &[(&str, usize)],
    d_in: usize,
    bias: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    let mut linear = load_stacked_linear(weights, parts, d_in, device)?;
    if !bias {
        linear.bias = None;
    } else {
        // Absent where the config says it is there: the missing-tensor error, naming it.
        for &(name, d_out) in parts {
            let name = format!("{name}.bias");
            if !weights.contains(&name) {
                weights.values(&name, &[d_out])?;
            }
        }
    }
    Ok(linear)
}

/// An RMSNorm (a scale, no bias) over the last `dim` values.
pub fn load_rms_norm<B: Backend>(
    weights: &Weights,
    name: &str,
    dim: usize,
    eps: f64,
    device: &B::Device,
) -> Result<RmsNorm<B>> {
    Ok(RmsNorm {
        gamma: Param::from_tensor(weights.tensor(&format!("{name}.weight"), [dim], device)?),
        epsilon: eps,
    })
}

pub fn load_layer_norm<B: Backend>(
    weights: &Weights,
    name: &str,
    dim: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>> {
    load_norm(weights, name, dim, eps, true, device)
}

/// A LayerNorm with its bias, or (`bias` false: ModernBERT's `norm_bias`) without one.
pub fn load_norm<B: Backend>(
    weights: &Weights,
    name: &str,
    dim: usize,
    eps: f64,
    bias: bool,
    device: &B::Device,
) -> Result<LayerNorm<B>> {
    let mut norm = LayerNormConfig::new(dim).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(weights.tensor(&format!("{name}.weight"), [dim], device)?);
    norm.beta = if bias {
        let beta = weights.tensor(&format!("{name}.bias"), [dim], device)?;
        Some(Param::from_tensor(beta))
    } else {
        None
    };
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

/// How the default (GPU) attention is computed; the results agree, robustness differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    /// burn's fused `attention` op.
    #[default]
    Fused,
    /// softmax(scores + bias, padding masked)·V in plain ops: on burn 0.21's GPU backends the
    /// fused op's autotuner picks kernels that fail for some sequence lengths (f16 on CUDA:
    /// "Stage seq_q must divide problem seq_q"), while matmul and softmax are robust. The
    /// scores of a block of queries at a time, each block's within `max_score_bytes`: the
    /// largest buffer the device allocates (cubecl refuses a larger one whatever memory is
    /// free: under 256 MiB on lavapipe, a quarter of the memory on CUDA), which the scores of
    /// a batch of long texts would otherwise pass.
    Explicit { max_score_bytes: u64 },
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

/// One post-LayerNorm transformer layer over hidden states `[rows, hidden]`:
/// `h = LN(x + Attn(x)); out = LN(h + W2·act(W1·h))`.
#[derive(Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Query, key and value projections as one `[hidden, 3 × hidden]` linear: one GEMM
    /// instead of three.
    qkv: Linear<B>,
    attention_output: Linear<B>,
    attention_norm: LayerNorm<B>,
    ffn_in: Linear<B>,
    ffn_out: Linear<B>,
    output_norm: LayerNorm<B>,
    heads: Heads,
    activation: Activation,
    layer_norm_eps: f64,
}

impl<B: EncoderBackend> EncoderLayer<B> {
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
            qkv: load_stacked_linear(
                weights,
                &[(&names.query, d), (&names.key, d), (&names.value, d)],
                d,
                device,
            )?,
            attention_output: load_linear(weights, &names.attention_output, d, d, device)?,
            attention_norm: load_layer_norm(weights, &names.attention_norm, d, eps, device)?,
            ffn_in: load_linear(weights, &names.ffn_in, d, ffn, device)?,
            ffn_out: load_linear(weights, &names.ffn_out, ffn, d, device)?,
            output_norm: load_layer_norm(weights, &names.output_norm, d, eps, device)?,
            heads: Heads::multi(shape.num_heads, d),
            activation: shape.activation,
            layer_norm_eps: eps,
        })
    }

    pub fn forward(&self, x: Tensor<B, 2>, attention: &AttentionInput<B>) -> Tensor<B, 2> {
        let qkv = B::fused_linear(x.clone(), &self.qkv, None);
        let context = B::self_attention(qkv, self.heads, attention);
        let attended = B::fused_linear(context, &self.attention_output, None);
        let h = B::add_layer_norm(attended, x, &self.attention_norm, self.layer_norm_eps);
        let ffn = B::fused_linear(h.clone(), &self.ffn_in, Some(self.activation));
        let ffn = B::fused_linear(ffn, &self.ffn_out, None);
        B::add_layer_norm(ffn, h, &self.output_norm, self.layer_norm_eps)
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
pub fn load_layers<B: EncoderBackend>(
    weights: &Weights,
    shape: &EncoderShape,
    device: &B::Device,
    names: impl Fn(usize) -> LayerNames,
) -> Result<Vec<EncoderLayer<B>>> {
    (0..shape.num_layers)
        .map(|i| EncoderLayer::load(weights, &names(i), shape, device))
        .collect()
}

/// Runs `layers` in turn over the embedded rows.
pub fn run_layers<B: EncoderBackend>(
    layers: &[EncoderLayer<B>],
    mut x: Tensor<B, 2>,
    batch: &TokenBatch,
    rows: TokenRows,
    bias: Option<Tensor<B, 4>>,
    attention: Attention,
    device: &B::Device,
) -> HiddenStates<B> {
    let input = AttentionInput::new(rows, batch, bias, None, attention, device);
    for layer in layers {
        x = layer.forward(x, &input);
    }
    HiddenStates {
        x,
        rows: input.rows,
    }
}

/// T5's relative position bias (MPNet's too): a learned scalar per head for each bucket of
/// key-minus-query distances, exact for short distances and logarithmic up to `max_distance`,
/// the same for every layer and every text.
#[derive(Debug)]
pub struct RelativePositionBias {
    /// `[num_buckets, heads]`, kept on the host: the bias is assembled per sequence length.
    table: Vec<f32>,
    num_buckets: usize,
    max_distance: usize,
    heads: usize,
}

impl RelativePositionBias {
    pub fn load(
        weights: &Weights,
        name: &str,
        (num_buckets, max_distance): (usize, usize),
        heads: usize,
    ) -> Result<Self> {
        Ok(RelativePositionBias {
            table: weights.values(name, &[num_buckets, heads])?,
            num_buckets,
            max_distance,
            heads,
        })
    }

    /// The additive bias `[1, heads, seq, seq]` of a batch padded to `seq` positions.
    pub fn tensor<B: Backend>(&self, seq: usize, device: &B::Device) -> Tensor<B, 4> {
        let heads = self.heads;
        let mut values = vec![0f32; heads * seq * seq];
        for q in 0..seq {
            for k in 0..seq {
                let bucket = bidirectional_bucket(
                    k as i64 - q as i64,
                    self.num_buckets as i64,
                    self.max_distance as i64,
                );
                for h in 0..heads {
                    values[(h * seq + q) * seq + k] = self.table[bucket as usize * heads + h];
                }
            }
        }
        Tensor::from_data(TensorData::new(values, [1, heads, seq, seq]), device)
    }
}

/// T5's `_relative_position_bucket` of an encoder (bidirectional), in f32 like PyTorch so that
/// bucket edges agree exactly: keys after the query take the upper half of the buckets.
fn bidirectional_bucket(relative_position: i64, num_buckets: i64, max_distance: i64) -> i64 {
    let half = num_buckets / 2;
    let mut bucket = if relative_position > 0 { half } else { 0 };
    let n = relative_position.abs();
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let scaled = (n as f32 / max_exact as f32).ln()
            / (max_distance as f32 / max_exact as f32).ln()
            * (half - max_exact) as f32;
        bucket += (max_exact + scaled as i64).min(half - 1);
    }
    bucket
}

/// The attention inputs of a rotary model's layers (ModernBERT, the Llama family, Gemma) for
/// one batch: an input per distinct window and scoring, and a rotary table per distinct rope,
/// each built once and shared by every layer that attends alike. A token's position is its
/// index in the text, in either layout (Hugging Face numbers a left-padded batch from its
/// first column, which shifts every position of a text alike: rotary attention and windows
/// depend on differences of positions only).
pub struct RotaryLayers<B: Backend> {
    inputs: Vec<(AttentionKey, AttentionInput<B>)>,
    rotaries: Vec<(Rope, Rotary<B>)>,
    /// Per layer: its input and its rotary table, as indices into the two lists.
    of_layer: Vec<(usize, usize)>,
}

impl<B: EncoderBackend> RotaryLayers<B> {
    pub fn new(
        layers: &[LayerAttention],
        rows: &TokenRows,
        batch: &TokenBatch,
        head_dim: usize,
        attention: Attention,
        device: &B::Device,
    ) -> Self {
        let positions = rows.per_row(&sequential_positions(batch));
        let mut inputs: Vec<(AttentionKey, AttentionInput<B>)> = Vec::new();
        let mut rotaries: Vec<(Rope, Rotary<B>)> = Vec::new();
        let of_layer = layers
            .iter()
            .map(|layer| {
                let input = shared(
                    &mut inputs,
                    (layer.window, layer.scores),
                    |(window, scores)| {
                        AttentionInput::new(rows.clone(), batch, None, window, attention, device)
                            .with_scores(scores)
                    },
                );
                let rotary = shared(&mut rotaries, layer.rope, |rope| {
                    Rotary::new(&positions, head_dim, &rope, device)
                });
                (input, rotary)
            })
            .collect();
        RotaryLayers {
            inputs,
            rotaries,
            of_layer,
        }
    }

    /// Each layer's attention input and rotary table, in layer order.
    pub fn per_layer(&self) -> impl Iterator<Item = (&AttentionInput<B>, &Rotary<B>)> {
        self.of_layer
            .iter()
            .map(|&(input, rotary)| (&self.inputs[input].1, &self.rotaries[rotary].1))
    }
}

/// What sets one layer's [`AttentionInput`] apart from another's.
type AttentionKey = (Option<Window>, Scores);

/// The index of `key`'s entry in `entries`, made by `make` the first time `key` is asked for.
fn shared<K: Copy + PartialEq, V>(
    entries: &mut Vec<(K, V)>,
    key: K,
    make: impl FnOnce(K) -> V,
) -> usize {
    match entries.iter().position(|(seen, _)| *seen == key) {
        Some(index) => index,
        None => {
            entries.push((key, make(key)));
            entries.len() - 1
        }
    }
}

/// `embedding`'s vectors for the batch's token rows, `[rows, hidden]`: `per_position` holds
/// one index (a token id, a position) per padded position, `[batch × seq_len]`, and the rows
/// keep those of real tokens where the layout is packed.
pub fn lookup<B: Backend>(
    embedding: &Embedding<B>,
    rows: &TokenRows,
    per_position: &[i64],
    device: &B::Device,
) -> Tensor<B, 2> {
    let values = rows.per_row(per_position);
    let n = values.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(values, [1, n]), device);
    let embedded = embedding.forward(ids);
    let [_, n, hidden] = embedded.dims();
    embedded.reshape([n, hidden])
}

/// Positions `0..seq_len` of every text: BERT's and DistilBERT's absolute positions.
pub fn sequential_positions(batch: &TokenBatch) -> Vec<i64> {
    (0..batch.batch)
        .flat_map(|_| 0..batch.seq_len as i64)
        .collect()
}

/// RoBERTa's and MPNet's absolute positions (Hugging Face's `create_position_ids_from_input_ids`):
/// tokens that are not the pad id are numbered from `pad + 1`; pad ids get position `pad`. One
/// per padded position. A pad id inside a text (its literal `<pad>`) is skipped in the count,
/// as there.
pub fn positions_after_padding(batch: &TokenBatch, pad_token_id: u32) -> Vec<i64> {
    let pad = pad_token_id as i64;
    let mut positions = Vec::with_capacity(batch.ids.len());
    for row in batch.ids.chunks(batch.seq_len) {
        let mut count = 0;
        for &id in row {
            if id == pad_token_id {
                positions.push(pad);
            } else {
                count += 1;
                positions.push(pad + count);
            }
        }
    }
    positions
}

/// Widens token ids for an embedding lookup.
pub fn widen(ids: &[u32]) -> Vec<i64> {
    ids.iter().map(|&id| id as i64).collect()
}

#[cfg(test)]
mod tests {
    use super::bidirectional_bucket;

    #[test]
    fn buckets_match_hugging_face_for_known_distances() {
        // Values printed by transformers 5.23: MPNetEncoder.relative_position_bucket(torch.tensor(d), 32).
        let mpnet = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-8, 8),
            (20, 26),
            (-127, 15),
            (300, 31),
        ];
        // T5Attention._relative_position_bucket(torch.tensor(d), True, 8, 20): the tiny T5's.
        let t5 = [
            (0, 0),
            (1, 5),
            (-1, 1),
            (2, 6),
            (-2, 2),
            (3, 6),
            (-5, 2),
            (7, 7),
            (-12, 3),
            (19, 7),
            (-20, 3),
            (21, 7),
            (100, 7),
            (-1000, 3),
        ];
        let cases = mpnet.map(|case| (case, (32, 128))).into_iter();
        for ((distance, bucket), (buckets, max_distance)) in cases.chain(t5.map(|c| (c, (8, 20)))) {
            assert_eq!(
                bidirectional_bucket(distance, buckets, max_distance),
                bucket,
                "distance {distance} in {buckets} buckets up to {max_distance}"
            );
        }
    }
}
