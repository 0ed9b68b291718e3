//! The few operations whose speed decides the CPU's throughput (an encoder layer's, and SPLADE's
//! vocabulary-wide decode and pooling), as a burn backend extension: [`EncoderBackend`] has a
//! default body for each, written with burn's tensor ops (what the GPU backends run), and the
//! CPU backend overrides them with fused kernels (`cpu.rs`). The architectures call these and
//! stay backend-agnostic.
//!
//! Hidden states are 2-D, `[rows, hidden]`, one row per token. [`TokenRows`] says which rows
//! belong to which text: on the GPU every text owns `seq_len` rows (a padded batch, regular
//! shapes for the kernels); on the CPU only its real tokens (packed), so the linear layers do
//! no work on padding and attention runs per text over its own length.

mod cpu;
mod math;

use burn::nn::{LayerNorm, Linear};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::architectures::{Attention, TokenBatch, activate};
use crate::config::Activation;
use crate::modules::SpladeConfig;

/// A burn backend that can run the encoder: every backend can (the defaults), and a backend may
/// supply faster versions.
pub trait EncoderBackend: Backend {
    /// Whether hidden states hold only real tokens (see [`TokenRows`]). Packing pays where
    /// work is proportional to rows and attention can run per text (the CPU); GPUs want padded,
    /// regular shapes.
    fn packs_tokens() -> bool {
        false
    }

    /// `activation(x · W + b)` for `x: [rows, in]`.
    fn fused_linear(
        x: Tensor<Self, 2>,
        linear: &Linear<Self>,
        activation: Option<Activation>,
    ) -> Tensor<Self, 2> {
        burn_linear(x, linear, activation)
    }

    /// `LayerNorm(x + residual)`, both `[rows, hidden]`; `epsilon` is `norm`'s (burn keeps it
    /// private).
    fn add_layer_norm(
        x: Tensor<Self, 2>,
        residual: Tensor<Self, 2>,
        norm: &LayerNorm<Self>,
        epsilon: f64,
    ) -> Tensor<Self, 2> {
        let _ = epsilon;
        norm.forward(x + residual)
    }

    /// Multi-head self-attention: `qkv` is `[rows, heads.qkv_width()]` (queries, keys, values
    /// side by side, see [`Heads`]); returns the context `[rows, heads.query_width()]`. Each
    /// text attends to its own real tokens only, within the input's window.
    fn self_attention(
        qkv: Tensor<Self, 2>,
        heads: Heads,
        input: &AttentionInput<Self>,
    ) -> Tensor<Self, 2> {
        padded_self_attention(qkv, heads, input)
    }

    /// Rotary position embedding applied to the queries and keys of `qkv` (as
    /// [`self_attention`](Self::self_attention) takes it): in each head, the first and the
    /// second half of the dimensions are rotated as pairs by each row's angles. Values pass
    /// unchanged.
    fn rotate_queries_keys(
        qkv: Tensor<Self, 2>,
        heads: Heads,
        rotary: &Rotary<Self>,
    ) -> Tensor<Self, 2> {
        rotate_with_tensor_ops(qkv, heads, rotary)
    }

    /// A gated linear unit's activation: `x` is `[rows, 2 × width]`, an input half and a gate
    /// half; returns `activation(input) ⊙ gate`, `[rows, width]`.
    fn gated_activation(x: Tensor<Self, 2>, activation: Activation) -> Tensor<Self, 2> {
        let [rows, width] = x.dims();
        let half = width / 2;
        let input = x.clone().slice([0..rows, 0..half]);
        activate(input, activation) * x.slice([0..rows, half..width])
    }

    /// SPLADE's weights `[batch, vocab]`: each text's rows decoded to vocabulary logits
    /// (`x · W + b`; `hidden` holds the MLM head's transformed rows), activated and pooled over
    /// the text's real tokens. At most about `max_logits` logits exist at once.
    fn splade_pool(
        hidden: HiddenStates<Self>,
        decoder: &Linear<Self>,
        pooling: SpladeConfig,
        batch: &TokenBatch,
        max_logits: usize,
        device: &Self::Device,
    ) -> Tensor<Self, 2> {
        padded_splade_pool(hidden, decoder, pooling, batch, max_logits, device)
    }
}

impl EncoderBackend for crate::Cpu {
    fn packs_tokens() -> bool {
        true
    }

    fn fused_linear(
        x: Tensor<Self, 2>,
        linear: &Linear<Self>,
        activation: Option<Activation>,
    ) -> Tensor<Self, 2> {
        cpu::linear(x, linear, activation)
    }

    fn add_layer_norm(
        x: Tensor<Self, 2>,
        residual: Tensor<Self, 2>,
        norm: &LayerNorm<Self>,
        epsilon: f64,
    ) -> Tensor<Self, 2> {
        cpu::add_layer_norm(x, residual, norm, epsilon)
    }

    fn self_attention(
        qkv: Tensor<Self, 2>,
        heads: Heads,
        input: &AttentionInput<Self>,
    ) -> Tensor<Self, 2> {
        if input.rows.packed {
            cpu::self_attention(qkv, heads, input)
        } else {
            padded_self_attention(qkv, heads, input)
        }
    }

    fn rotate_queries_keys(
        qkv: Tensor<Self, 2>,
        heads: Heads,
        rotary: &Rotary<Self>,
    ) -> Tensor<Self, 2> {
        cpu::rotate_queries_keys(qkv, heads, rotary)
    }

    fn gated_activation(x: Tensor<Self, 2>, activation: Activation) -> Tensor<Self, 2> {
        cpu::gated_activation(x, activation)
    }

    fn splade_pool(
        hidden: HiddenStates<Self>,
        decoder: &Linear<Self>,
        pooling: SpladeConfig,
        batch: &TokenBatch,
        _max_logits: usize,
        _device: &Self::Device,
    ) -> Tensor<Self, 2> {
        cpu::splade_pool(hidden, decoder, pooling, batch)
    }
}

/// The GPU backends, in every precision the encoder loads them in, use the default bodies.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
macro_rules! default_ops {
    ($backend:ident) => {
        impl EncoderBackend for burn::backend::$backend<f32> {}
        impl EncoderBackend for burn::backend::$backend<half::f16> {}
        impl EncoderBackend for burn::backend::$backend<half::bf16> {}
    };
}

#[cfg(feature = "cuda")]
default_ops!(Cuda);

#[cfg(feature = "wgpu")]
default_ops!(Wgpu);

/// Where each text's tokens sit among the rows of the hidden states.
#[derive(Debug, Clone)]
pub struct TokenRows {
    /// First row of each text.
    pub starts: Vec<usize>,
    /// Real tokens of each text.
    pub lengths: Vec<usize>,
    /// Rows in all: `batch × seq_len` when padded, the sum of `lengths` when packed.
    pub rows: usize,
    pub packed: bool,
    pub batch: usize,
    pub seq_len: usize,
}

impl TokenRows {
    /// The layout `B` wants for `batch`. Packing needs each text's real tokens to come first in
    /// its padded row (right padding, no masked token inside a text); a batch that breaks this
    /// stays padded, so the attention mask keeps its meaning.
    pub fn of<B: EncoderBackend>(batch: &TokenBatch) -> Self {
        let (b, s) = (batch.batch, batch.seq_len);
        let lengths: Vec<usize> = (0..b)
            .map(|i| {
                batch.mask[i * s..(i + 1) * s]
                    .iter()
                    .take_while(|&&m| m != 0)
                    .count()
            })
            .collect();
        let prefix_masks = (0..b).all(|i| {
            batch.mask[i * s + lengths[i]..(i + 1) * s]
                .iter()
                .all(|&m| m == 0)
        });
        if B::packs_tokens() && prefix_masks {
            let starts = lengths
                .iter()
                .scan(0, |next, &len| {
                    let start = *next;
                    *next += len;
                    Some(start)
                })
                .collect();
            TokenRows {
                starts,
                rows: lengths.iter().sum(),
                lengths,
                packed: true,
                batch: b,
                seq_len: s,
            }
        } else {
            TokenRows {
                starts: (0..b).map(|i| i * s).collect(),
                lengths,
                rows: b * s,
                packed: false,
                batch: b,
                seq_len: s,
            }
        }
    }

    /// `values` (one per padded position, `[batch × seq_len]`) as one per row: unchanged when
    /// padded, the real tokens' only when packed.
    pub fn per_row<T: Copy>(&self, values: &[T]) -> Vec<T> {
        if !self.packed {
            return values.to_vec();
        }
        let mut out = Vec::with_capacity(self.rows);
        for (i, &len) in self.lengths.iter().enumerate() {
            let start = i * self.seq_len;
            out.extend_from_slice(&values[start..start + len]);
        }
        out
    }

    /// For each row, the text it is a real token of (`None` for padding); `mask` is the
    /// batch's `[batch × seq_len]` attention mask.
    pub fn texts_of_rows(&self, mask: &[u32]) -> Vec<Option<usize>> {
        let mut texts = vec![None; self.rows];
        for (text, &start) in self.starts.iter().enumerate() {
            if self.packed {
                texts[start..start + self.lengths[text]].fill(Some(text));
            } else {
                let mask = &mask[text * self.seq_len..(text + 1) * self.seq_len];
                for (p, &m) in mask.iter().enumerate() {
                    if m != 0 {
                        texts[start + p] = Some(text);
                    }
                }
            }
        }
        texts
    }

    /// Hidden states `[rows, hidden]` as the padded `[batch, seq_len, hidden]` that pooling and
    /// callers expect; padding positions are zero.
    pub fn unpack<B: Backend>(&self, x: Tensor<B, 2>, device: &B::Device) -> Tensor<B, 3> {
        let [rows, hidden] = x.dims();
        let (b, s) = (self.batch, self.seq_len);
        if !self.packed {
            return x.reshape([b, s, hidden]);
        }
        // Every padding position reads an appended zero row.
        let mut index = vec![rows as i64; b * s];
        for (i, (&start, &len)) in self.starts.iter().zip(&self.lengths).enumerate() {
            for p in 0..len {
                index[i * s + p] = (start + p) as i64;
            }
        }
        let padded = Tensor::cat(vec![x, Tensor::zeros([1, hidden], device)], 0);
        padded
            .select(
                0,
                Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * s]), device),
            )
            .reshape([b, s, hidden])
    }
}

/// An encoder's output: hidden states `[rows, hidden]` and which rows are whose.
pub struct HiddenStates<B: Backend> {
    pub x: Tensor<B, 2>,
    pub rows: TokenRows,
}

impl<B: Backend> HiddenStates<B> {
    /// `[batch, seq_len, hidden]`, zeros at padding: what pooling and callers expect.
    pub fn padded(self, device: &B::Device) -> Tensor<B, 3> {
        self.rows.unpack(self.x, device)
    }
}

/// How attention's columns are laid out: `query` heads, each `dim` wide, and `key_value`
/// heads that groups of `query / key_value` consecutive query heads share (grouped-query
/// attention; as many as the query heads in multi-head attention). `qkv` holds the queries,
/// then the keys, then the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub query: usize,
    pub key_value: usize,
    pub dim: usize,
}

impl Heads {
    /// Multi-head attention: `heads` heads splitting `hidden` columns.
    pub fn multi(heads: usize, hidden: usize) -> Self {
        Heads {
            query: heads,
            key_value: heads,
            dim: hidden / heads,
        }
    }

    pub fn query_width(&self) -> usize {
        self.query * self.dim
    }

    pub fn key_value_width(&self) -> usize {
        self.key_value * self.dim
    }

    /// The columns of `qkv`.
    pub fn qkv_width(&self) -> usize {
        self.query_width() + 2 * self.key_value_width()
    }

    /// The key / value head that query head `head` reads.
    pub fn key_value_of(&self, head: usize) -> usize {
        head / (self.query / self.key_value)
    }
}

/// Which keys a query sees, by position: from `before` positions back to `after` ahead.
/// ModernBERT's local layers see a window each way; a decoder's causal attention sees every
/// earlier token and none after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub before: usize,
    pub after: usize,
}

impl Window {
    /// Causal attention: a token sees itself and the tokens before it.
    pub const CAUSAL: Window = Window {
        before: usize::MAX,
        after: 0,
    };

    /// A causal sliding window of `width` tokens: the query and the `width - 1` before it
    /// (transformers' sliding mask keeps keys less than `width` positions back).
    pub fn sliding(width: usize) -> Self {
        Window {
            before: width.saturating_sub(1),
            after: 0,
        }
    }

    /// `reach` positions each way.
    pub fn around(reach: usize) -> Self {
        Window {
            before: reach,
            after: reach,
        }
    }

    /// The keys `query` sees in a text of `len` tokens.
    pub fn keys(&self, query: usize, len: usize) -> std::ops::Range<usize> {
        query.saturating_sub(self.before)
            ..query.saturating_add(self.after).saturating_add(1).min(len)
    }

    pub fn sees(&self, query: usize, key: usize) -> bool {
        if key <= query {
            query - key <= self.before
        } else {
            key - query <= self.after
        }
    }
}

/// How a layer of a rotary model (ModernBERT, the Llama family, Gemma) attends: the keys a
/// query sees (`None`: every key of its text), its rotary positions and how its scores are
/// computed. Models mix layers of two kinds (local and global, sliding and full), each with
/// its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAttention {
    pub window: Option<Window>,
    pub rope: Rope,
    pub scores: Scores,
}

/// How `Q·Kᵀ` becomes the scores that the mask and softmax take (burn's
/// `AttentionModuleOptions` says the same): scaled, then soft-capped where the model caps them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    /// The factor on `Q·Kᵀ`; `None`: `head_dim^-½`. Gemma's is `query_pre_attn_scalar^-½`,
    /// T5's 1 (it scales nothing).
    pub scale: Option<f64>,
    /// Gemma 2's `attn_logit_softcapping`: scores become `cap · tanh(score / cap)`, before the
    /// mask and any bias.
    pub softcap: Option<f64>,
}

impl Scores {
    /// The factor on `Q·Kᵀ` for heads of `head_dim` values.
    pub fn scale(&self, head_dim: usize) -> f64 {
        self.scale.unwrap_or(1.0 / (head_dim as f64).sqrt())
    }
}

/// A rotary position embedding's frequencies: transformers' `rope_parameters` of the
/// `rope_type`s that change only the frequencies (not the scale of `cos` and `sin`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// The base: frequency `i` of a head is `theta^(−2i/head_dim)` before scaling.
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `default`.
    None,
    /// `linear`: every frequency divided by `factor` (Gemma 3's full layers).
    Linear { factor: f64 },
    /// `llama3` (Llama 3.1 on): frequencies whose wavelength exceeds
    /// `original_max_position_embeddings / low_freq_factor` divided by `factor`, those
    /// shorter than `… / high_freq_factor` kept, and those between blended smoothly.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

impl Rope {
    /// The `head_dim / 2` frequencies, in f32 and in the order of operations of transformers'
    /// `modeling_rope_utils` (torch computes `scalar / tensor` as `tensor.reciprocal() *
    /// scalar`), so that they agree to the bit.
    pub fn inverse_frequencies(&self, head_dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let default = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
        match self.scaling {
            RopeScaling::None => default.collect(),
            RopeScaling::Linear { factor } => default.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: context,
            } => {
                let factor = factor as f32;
                let low_wavelength = (context / low_freq_factor) as f32;
                let high_wavelength = (context / high_freq_factor) as f32;
                let band = (high_freq_factor - low_freq_factor) as f32;
                default
                    .map(|f| {
                        let wavelength = (1.0 / f) * std::f64::consts::TAU as f32;
                        if wavelength > low_wavelength {
                            f / factor
                        } else if wavelength < high_wavelength {
                            f
                        } else {
                            let smooth = ((1.0 / wavelength) * context as f32
                                - low_freq_factor as f32)
                                / band;
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// What attention needs besides the projections; built once per forward pass.
pub struct AttentionInput<B: Backend> {
    pub rows: TokenRows,
    /// The padded layout's mask.
    pub mask: Option<AttentionMask<B>>,
    /// Additive bias `[1, heads, seq, seq]` (T5's and MPNet's relative positions), the same for
    /// every text.
    pub bias: Option<Tensor<B, 4>>,
    /// The keys each query sees by position (`None`: every key of its text).
    pub window: Option<Window>,
    pub scores: Scores,
    pub kind: Attention,
}

impl<B: Backend> AttentionInput<B> {
    pub fn new(
        rows: TokenRows,
        batch: &TokenBatch,
        bias: Option<Tensor<B, 4>>,
        window: Option<Window>,
        kind: Attention,
        device: &B::Device,
    ) -> Self {
        let mask = (!rows.packed).then(|| AttentionMask::new(batch, window, device));
        AttentionInput {
            rows,
            mask,
            bias,
            window,
            scores: Scores::default(),
            kind,
        }
    }

    /// The same input with scores computed as `scores` says.
    pub fn with_scores(self, scores: Scores) -> Self {
        AttentionInput { scores, ..self }
    }
}

/// The padded layout's attention mask, true where a query may not see the key: the key is
/// padding, or outside the query's window. Kept as its two parts, each only as large as what it
/// depends on, and combined for the queries at hand: no `[batch, 1, seq, seq]` tensor exists
/// unless the attention takes every query at once.
pub struct AttentionMask<B: Backend> {
    /// `[batch, 1, 1, seq]`: the padding keys of each text.
    padding: Tensor<B, 4, Bool>,
    /// `[1, 1, seq, seq]`: the keys outside each query's window, the same for every text.
    unseen: Option<Tensor<B, 4, Bool>>,
}

impl<B: Backend> AttentionMask<B> {
    pub fn new(batch: &TokenBatch, window: Option<Window>, device: &B::Device) -> Self {
        let (b, s) = (batch.batch, batch.seq_len);
        let padding: Vec<bool> = batch.mask.iter().map(|&m| m == 0).collect();
        let padding = Tensor::<B, 2, Bool>::from_data(TensorData::new(padding, [b, s]), device)
            .reshape([b, 1, 1, s]);
        let unseen = window.map(|window| {
            let unseen: Vec<bool> = (0..s)
                .flat_map(|query| (0..s).map(move |key| !window.sees(query, key)))
                .collect();
            Tensor::<B, 2, Bool>::from_data(TensorData::new(unseen, [s, s]), device)
                .reshape([1, 1, s, s])
        });
        AttentionMask { padding, unseen }
    }

    /// `[batch, 1, queries, seq]`: the mask of these queries.
    pub fn of_queries(&self, queries: std::ops::Range<usize>) -> Tensor<B, 4, Bool> {
        let [b, _, _, s] = self.padding.dims();
        let shape = [b, 1, queries.len(), s];
        let padding = self.padding.clone().expand(shape);
        match &self.unseen {
            Some(unseen) => {
                padding.bool_or(unseen.clone().slice([0..1, 0..1, queries]).expand(shape))
            }
            None => padding,
        }
    }
}

/// Rotary position embedding (RoFormer; Hugging Face's default RoPE) for each row of the hidden
/// states: `cos` and `sin` of its position times each frequency, `[rows, head_dim / 2]`.
pub struct Rotary<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> Rotary<B> {
    /// `positions`: one per row.
    pub fn new(positions: &[i64], head_dim: usize, rope: &Rope, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let frequencies = rope.inverse_frequencies(head_dim);
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &position in positions {
            for &frequency in &frequencies {
                let angle = position as f32 * frequency;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |values| {
            Tensor::<B, 2>::from_data(TensorData::new(values, [positions.len(), half]), device)
        };
        Rotary {
            cos: table(cos),
            sin: table(sin),
        }
    }
}

/// The default rotary embedding, in tensor ops: per head, `(x₁, x₂) → (x₁·cos − x₂·sin,
/// x₂·cos + x₁·sin)` for the halves `x₁`, `x₂` of its dimensions.
fn rotate_with_tensor_ops<B: Backend>(
    qkv: Tensor<B, 2>,
    heads: Heads,
    rotary: &Rotary<B>,
) -> Tensor<B, 2> {
    let [rows, width] = qkv.dims();
    let (head_dim, half) = (heads.dim, heads.dim / 2);
    let cos = rotary.cos.clone().reshape([rows, 1, half]);
    let sin = rotary.sin.clone().reshape([rows, 1, half]);
    let rotate = |columns: std::ops::Range<usize>, count: usize| {
        let x = qkv
            .clone()
            .slice([0..rows, columns])
            .reshape([rows, count, head_dim]);
        let first = x.clone().slice([0..rows, 0..count, 0..half]);
        let second = x.slice([0..rows, 0..count, half..head_dim]);
        Tensor::cat(
            vec![
                first.clone() * cos.clone() - second.clone() * sin.clone(),
                second * cos.clone() + first * sin.clone(),
            ],
            2,
        )
        .reshape([rows, count * head_dim])
    };
    let (queries, keys) = (heads.query_width(), heads.key_value_width());
    let values = qkv.clone().slice([0..rows, queries + keys..width]);
    Tensor::cat(
        vec![
            rotate(0..queries, heads.query),
            rotate(queries..queries + keys, heads.key_value),
            values,
        ],
        1,
    )
}

/// The default linear: burn's `Linear` then the activation.
fn burn_linear<B: Backend>(
    x: Tensor<B, 2>,
    linear: &Linear<B>,
    activation: Option<Activation>,
) -> Tensor<B, 2> {
    let y = linear.forward(x);
    match activation {
        Some(activation) => activate(y, activation),
        None => y,
    }
}

/// The default attention, on a padded batch: burn's fused `attention` op, or softmax(scores +
/// bias)·V in plain ops where the fused op is not robust ([`Attention`]); the scores are Q·Kᵀ
/// as [`Scores`] says.
fn padded_self_attention<B: Backend>(
    qkv: Tensor<B, 2>,
    heads: Heads,
    input: &AttentionInput<B>,
) -> Tensor<B, 2> {
    let rows = &input.rows;
    assert!(!rows.packed, "the default attention needs a padded batch");
    let (batch, seq, dim) = (rows.batch, rows.seq_len, heads.dim);
    let (queries, keys) = (heads.query_width(), heads.key_value_width());
    // `[batch, heads.query, seq, dim]`: a group's shared key / value head repeated for each
    // of its query heads.
    let part = |columns: std::ops::Range<usize>, count: usize| {
        let x = qkv
            .clone()
            .slice([0..batch * seq, columns])
            .reshape([batch, seq, count, 1, dim]);
        x.expand([batch, seq, count, heads.query / count, dim])
            .reshape([batch, seq, heads.query, dim])
            .swap_dims(1, 2)
    };
    let q = part(0..queries, heads.query);
    let k = part(queries..queries + keys, heads.key_value);
    let v = part(queries + keys..queries + 2 * keys, heads.key_value);
    let mask = input.mask.as_ref().expect("a padded batch has a mask");
    let scale = input.scores.scale(dim);
    let context = match input.kind {
        Attention::Fused => attention(
            q,
            k,
            v,
            Some(mask.of_queries(0..seq)),
            input.bias.clone(),
            AttentionModuleOptions {
                scale: Some(scale),
                softcap: input.scores.softcap,
                is_causal: false,
            },
        ),
        Attention::Explicit { max_score_bytes } => {
            // `[batch, heads, block, seq]` scores at a time.
            let query_bytes = batch * heads.query * seq * std::mem::size_of::<B::FloatElem>();
            let block = (max_score_bytes as usize / query_bytes.max(1)).clamp(1, seq.max(1));
            let keys = k.swap_dims(2, 3);
            let attend = |queries: std::ops::Range<usize>| {
                let q = q
                    .clone()
                    .slice([0..batch, 0..heads.query, queries.clone(), 0..dim]);
                let mut scores = q.matmul(keys.clone()).mul_scalar(scale);
                if let Some(cap) = input.scores.softcap {
                    scores = scores.div_scalar(cap).tanh().mul_scalar(cap);
                }
                if let Some(bias) = &input.bias {
                    scores = scores + bias.clone().slice([0..1, 0..heads.query, queries.clone()]);
                }
                let mask = mask.of_queries(queries);
                // The most negative f16 value: finite in every precision, zero after softmax.
                let scores = scores.mask_fill(mask, -65504.0);
                burn::tensor::activation::softmax(scores, 3).matmul(v.clone())
            };
            if block >= seq {
                attend(0..seq)
            } else {
                let blocks = (0..seq).step_by(block);
                Tensor::cat(
                    blocks
                        .map(|start| attend(start..(start + block).min(seq)))
                        .collect(),
                    2,
                )
            }
        }
    };
    context.swap_dims(1, 2).reshape([batch * seq, queries])
}

/// The default SPLADE pooling, on the padded batch: the logits of a slice of positions of
/// every text at a time (ST's `chunk_size`, always on), pooled and combined slice by slice.
fn padded_splade_pool<B: Backend>(
    hidden: HiddenStates<B>,
    decoder: &Linear<B>,
    pooling: SpladeConfig,
    batch: &TokenBatch,
    max_logits: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let x = hidden.padded(device);
    let [b, s, h] = x.dims();
    let vocab = decoder.weight.dims()[1];
    let mask: Vec<f32> = batch.mask.iter().map(|&m| m as f32).collect();
    let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [b, s, 1]), device);
    let step = (max_logits / (b * vocab).max(1)).max(1);
    let mut pooled: Option<Tensor<B, 2>> = None;
    for start in (0..s).step_by(step) {
        let end = (start + step).min(s);
        let rows = x
            .clone()
            .slice([0..b, start..end])
            .reshape([b * (end - start), h]);
        let logits = burn_linear(rows, decoder, None).reshape([b, end - start, vocab]);
        let part = pooling.pool(logits, mask.clone().slice([0..b, start..end]));
        pooled = Some(match pooled {
            Some(p) => pooling.combine(p, part),
            None => part,
        });
    }
    pooled.unwrap_or_else(|| Tensor::zeros([b, vocab], device))
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::LayerNormConfig;

    use super::*;
    use crate::Cpu;
    use crate::modules::{SpladeActivation, SpladeStrategy};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Cpu, D> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn max_diff<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        let (a, b) = (
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn cpu_linear_and_layer_norm_match_burn() {
        let (rows, d_in, d_out) = (37, 24, 40);
        let x = tensor(random(rows * d_in, 1), [rows, d_in]);
        for activation in [
            None,
            Some(Activation::Gelu),
            Some(Activation::GeluTanh),
            Some(Activation::Relu),
            Some(Activation::Silu),
        ] {
            for bias in [true, false] {
                let linear = Linear {
                    weight: Param::from_tensor(tensor(random(d_in * d_out, 2), [d_in, d_out])),
                    bias: bias.then(|| Param::from_tensor(tensor(random(d_out, 3), [d_out]))),
                };
                let ours = Cpu::fused_linear(x.clone(), &linear, activation);
                let theirs = burn_linear(x.clone(), &linear, activation);
                assert!(max_diff(ours, theirs) < 1e-5, "{activation:?}, bias {bias}");
                // A transposed view as the weight, as other callers may build it.
                let transposed = Linear {
                    weight: Param::from_tensor(
                        tensor(random(d_in * d_out, 2), [d_out, d_in]).transpose(),
                    ),
                    bias: None,
                };
                let ours = Cpu::fused_linear(x.clone(), &transposed, activation);
                assert!(max_diff(ours, burn_linear(x.clone(), &transposed, activation)) < 1e-5);
            }
        }

        let mut norm = LayerNormConfig::new(d_in)
            .with_epsilon(1e-12)
            .init::<Cpu>(&Default::default());
        norm.gamma = Param::from_tensor(tensor(random(d_in, 4), [d_in]));
        norm.beta = Some(Param::from_tensor(tensor(random(d_in, 5), [d_in])));
        let residual = tensor(random(rows * d_in, 6), [rows, d_in]);
        let ours = Cpu::add_layer_norm(x.clone(), residual.clone(), &norm, 1e-12);
        let theirs = norm.forward(x + residual);
        assert!(max_diff(ours, theirs) < 1e-5);
    }

    /// Packed attention per text equals the padded batch's masked attention (ours in blocks,
    /// and burn's fused op), with and without a relative-position bias, with and without a
    /// window (each way, causal, causal within a reach), with the default scale and with
    /// another scale and a soft cap, in multi-head and grouped-query layouts, for texts of every
    /// length down to none and past one block of queries.
    #[test]
    fn packed_cpu_attention_matches_padded_burn_attention() {
        let layouts = [
            Heads::multi(3, 12),
            Heads {
                query: 4,
                key_value: 2,
                dim: 4,
            },
        ];
        for heads in layouts {
            check_packed_attention(heads);
        }
    }

    fn check_packed_attention(heads: Heads) {
        let seq = 300;
        let width = heads.qkv_width();
        let lengths = [300, 1, 5, 0, 137];
        let batch = TokenBatch {
            ids: vec![0; lengths.len() * seq],
            type_ids: vec![0; lengths.len() * seq],
            mask: lengths
                .iter()
                .flat_map(|&n| (0..seq).map(move |p| (p < n) as u32))
                .collect(),
            batch: lengths.len(),
            seq_len: seq,
        };
        let packed_rows = TokenRows::of::<Cpu>(&batch);
        assert!(packed_rows.packed);
        assert_eq!(packed_rows.rows, lengths.iter().sum::<usize>());
        let padded_rows = TokenRows {
            starts: (0..lengths.len()).map(|i| i * seq).collect(),
            rows: lengths.len() * seq,
            packed: false,
            ..packed_rows.clone()
        };
        let device = Default::default();
        let padded_qkv = tensor(
            random(padded_rows.rows * width, 7),
            [padded_rows.rows, width],
        );
        let packed_qkv_values: Vec<f32> = {
            let all = padded_qkv.clone().into_data().to_vec::<f32>().unwrap();
            let rows: Vec<usize> = (0..lengths.len())
                .flat_map(|i| (0..lengths[i]).map(move |p| i * seq + p))
                .collect();
            rows.iter()
                .flat_map(|&r| all[r * width..(r + 1) * width].to_vec())
                .collect()
        };
        let packed_qkv = tensor(packed_qkv_values, [packed_rows.rows, width]);
        let biases = [
            None,
            Some(tensor(
                random(heads.query * seq * seq, 8),
                [1, heads.query, seq, seq],
            )),
        ];
        let windows = [
            None,
            Some(Window::around(2)),
            Some(Window::around(70)),
            Some(Window::CAUSAL),
            Some(Window {
                before: 130,
                after: 0,
            }),
        ];
        let scorings = [
            Scores::default(),
            Scores {
                scale: Some(0.3),
                softcap: Some(0.8),
            },
        ];
        // The padded attention whole, in blocks of 7 queries (the last one shorter), one
        // query at a time, and burn's fused op.
        let query_bytes = (lengths.len() * heads.query * seq * 4) as u64;
        let kinds = [u64::MAX, 7 * query_bytes + 3, 1]
            .map(|max_score_bytes| Attention::Explicit { max_score_bytes })
            .into_iter()
            .chain([Attention::Fused]);
        let cases = biases.iter().flat_map(|b| windows.map(|w| (b.clone(), w)));
        let cases = cases.flat_map(|case| scorings.map(|scores| (case.clone(), scores)));
        for (((bias, window), scores), kind) in
            cases.flat_map(|case| kinds.clone().map(move |kind| (case.clone(), kind)))
        {
            let input = |rows: &TokenRows, kind| {
                AttentionInput::<Cpu>::new(
                    rows.clone(),
                    &batch,
                    bias.clone(),
                    window,
                    kind,
                    &device,
                )
                .with_scores(scores)
            };
            let padded_input = input(&padded_rows, kind);
            let packed_input = input(&packed_rows, Attention::Fused);
            let theirs = padded_rows.unpack(
                padded_self_attention(padded_qkv.clone(), heads, &padded_input),
                &device,
            );
            let ours = packed_rows.unpack(
                Cpu::self_attention(packed_qkv.clone(), heads, &packed_input),
                &device,
            );
            // Compare real tokens only: padding rows are zero in ours, arbitrary in burn's.
            let mask = tensor(
                batch.mask.iter().map(|&m| m as f32).collect(),
                [lengths.len(), seq, 1],
            );
            assert!(
                max_diff(ours * mask.clone(), theirs * mask) < 1e-5,
                "{heads:?}, bias {}, window {window:?}, {scores:?}, {kind:?}",
                bias.is_some()
            );
        }
    }

    /// The CPU's rotary and gated-activation kernels equal the default tensor ops.
    #[test]
    fn cpu_rotary_and_gated_activation_match_tensor_ops() {
        let rows = 37;
        let positions: Vec<i64> = (0..rows as i64).map(|p| (p * 7) % 23).collect();
        let layouts = [
            Heads::multi(3, 24),
            Heads {
                query: 4,
                key_value: 2,
                dim: 8,
            },
        ];
        for (heads, theta) in layouts
            .into_iter()
            .flat_map(|h| [10_000.0, 160_000.0].map(|t| (h, t)))
        {
            let (width, rotated) = (
                heads.qkv_width(),
                heads.query_width() + heads.key_value_width(),
            );
            let qkv = tensor(random(rows * width, 21), [rows, width]);
            let rope = Rope {
                theta,
                scaling: RopeScaling::None,
            };
            let rotary = Rotary::<Cpu>::new(&positions, heads.dim, &rope, &Default::default());
            let ours = Cpu::rotate_queries_keys(qkv.clone(), heads, &rotary);
            let theirs = rotate_with_tensor_ops(qkv.clone(), heads, &rotary);
            assert!(
                max_diff(ours.clone(), theirs) < 1e-6,
                "{heads:?}, theta {theta}"
            );
            // Values pass unchanged; position 0 leaves queries and keys as they were, and
            // other positions change every query and key head.
            let unchanged = |t: Tensor<Cpu, 2>, cols: std::ops::Range<usize>| t.slice([0..1, cols]);
            assert_eq!(
                max_diff(
                    unchanged(ours.clone(), 0..width),
                    unchanged(qkv.clone(), 0..width)
                ),
                0.0
            );
            let values = |t: Tensor<Cpu, 2>| t.slice([0..rows, rotated..width]);
            assert_eq!(max_diff(values(ours.clone()), values(qkv.clone())), 0.0);
            for head in 0..heads.query + heads.key_value {
                let columns =
                    |t: Tensor<Cpu, 2>| t.slice([1..2, head * heads.dim..(head + 1) * heads.dim]);
                assert!(max_diff(columns(ours.clone()), columns(qkv.clone())) > 1e-3);
            }
        }
        let x = tensor(random(rows * 2 * 40, 22), [rows, 80]);
        for activation in [
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
            Activation::Silu,
        ] {
            let [input, gate] = [0..40, 40..80].map(|cols| x.clone().slice([0..rows, cols]));
            let theirs = activate(input, activation) * gate;
            let ours = Cpu::gated_activation(x.clone(), activation);
            assert!(max_diff(ours, theirs) < 1e-5, "{activation:?}");
        }
    }

    /// The CPU's tiled SPLADE pooling equals burn's over the padded batch, sliced or in one
    /// pass: packed and padded rows (padding rows hold garbage that must not count), tied
    /// (transposed view) and untied decoders, every strategy and activation, texts of every
    /// length down to none.
    #[test]
    fn cpu_splade_pool_matches_padded_burn_pooling() {
        let (hidden, vocab, seq) = (8, 1100, 6);
        let lengths = [6, 1, 0, 4];
        let batch = TokenBatch {
            ids: vec![0; lengths.len() * seq],
            type_ids: vec![0; lengths.len() * seq],
            mask: lengths
                .iter()
                .flat_map(|&n| (0..seq).map(move |p| (p < n) as u32))
                .collect(),
            batch: lengths.len(),
            seq_len: seq,
        };
        let packed = TokenRows::of::<Cpu>(&batch);
        let padded = TokenRows {
            starts: (0..lengths.len()).map(|i| i * seq).collect(),
            rows: lengths.len() * seq,
            packed: false,
            ..packed.clone()
        };
        let padded_x = random(padded.rows * hidden, 11);
        let packed_x: Vec<f32> = (0..lengths.len())
            .flat_map(|i| (0..lengths[i]).map(move |p| i * seq + p))
            .flat_map(|r| padded_x[r * hidden..(r + 1) * hidden].to_vec())
            .collect();
        let states = |rows: &TokenRows, x: &[f32]| HiddenStates {
            x: tensor(x.to_vec(), [rows.rows, hidden]),
            rows: rows.clone(),
        };
        let bias = Some(Param::from_tensor(tensor(random(vocab, 13), [vocab])));
        let decoders = [
            Linear {
                weight: Param::from_tensor(tensor(random(hidden * vocab, 12), [hidden, vocab])),
                bias: bias.clone(),
            },
            Linear {
                weight: Param::from_tensor(
                    tensor(random(vocab * hidden, 14), [vocab, hidden]).transpose(),
                ),
                bias,
            },
        ];
        let device = Default::default();
        for decoder in &decoders {
            for strategy in [SpladeStrategy::Max, SpladeStrategy::Sum] {
                for activation in [SpladeActivation::Relu, SpladeActivation::Log1pRelu] {
                    let pooling = SpladeConfig {
                        strategy,
                        activation,
                    };
                    let whole = padded_splade_pool(
                        states(&padded, &padded_x),
                        decoder,
                        pooling,
                        &batch,
                        usize::MAX,
                        &device,
                    );
                    let values = whole.clone().into_data().to_vec::<f32>().unwrap();
                    assert!(values.iter().any(|&v| v > 0.1), "some active entries");
                    // Two positions of every text per slice: three slices.
                    let sliced = padded_splade_pool(
                        states(&padded, &padded_x),
                        decoder,
                        pooling,
                        &batch,
                        2 * lengths.len() * vocab,
                        &device,
                    );
                    let case = format!("{strategy:?}, {activation:?}");
                    assert!(max_diff(sliced, whole.clone()) < 1e-5, "sliced: {case}");
                    for (rows, x) in [(&packed, &packed_x), (&padded, &padded_x)] {
                        let ours = Cpu::splade_pool(
                            states(rows, x),
                            decoder,
                            pooling,
                            &batch,
                            usize::MAX,
                            &device,
                        );
                        let layout = if rows.packed { "packed" } else { "padded" };
                        assert!(max_diff(ours, whole.clone()) < 1e-5, "{layout}: {case}");
                    }
                }
            }
        }
    }
}
