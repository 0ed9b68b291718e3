//! ST's `Pooling` module: token embeddings → one vector per text, for every mode ST has,
//! concatenated in the configured order.
//!
//! The per-row quantities (which positions count, the first/last counted token, the weights of
//! `weightedmean`) are computed on the host from the attention mask the tokenizer produced, and
//! the reductions run on the backend.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::architectures::TokenBatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    Cls,
    Max,
    Mean,
    MeanSqrtLenTokens,
    WeightedMean,
    LastToken,
}

impl PoolingMode {
    /// The old boolean config keys, in the order ST concatenates them.
    pub const LEGACY_KEYS: [(&'static str, PoolingMode); 6] = [
        ("pooling_mode_cls_token", PoolingMode::Cls),
        ("pooling_mode_max_tokens", PoolingMode::Max),
        ("pooling_mode_mean_tokens", PoolingMode::Mean),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            PoolingMode::MeanSqrtLenTokens,
        ),
        (
            "pooling_mode_weightedmean_tokens",
            PoolingMode::WeightedMean,
        ),
        ("pooling_mode_lasttoken", PoolingMode::LastToken),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            "mean" => PoolingMode::Mean,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLenTokens,
            "weightedmean" => PoolingMode::WeightedMean,
            "lasttoken" => PoolingMode::LastToken,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct PoolingConfig {
    pub modes: Vec<PoolingMode>,
    /// When false, the prompt's tokens are left out of the pooled vector.
    pub include_prompt: bool,
}

impl PoolingConfig {
    pub fn output_dimension(&self, hidden: usize) -> usize {
        self.modes.len() * hidden
    }

    /// `tokens`: `[batch, seq, hidden]`; `prompt_length`: tokens of the prompt prepended to every
    /// text of the batch (excluded from pooling when `include_prompt` is false).
    pub fn forward<B: Backend>(
        &self,
        tokens: Tensor<B, 3>,
        batch: &TokenBatch,
        prompt_length: Option<usize>,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let [b, s, d] = tokens.dims();
        // Batches are right-padded, so ST's `pad_lengths` (leading padding) are zero and
        // excluding the prompt zeroes the first `prompt_length` positions of every row.
        let skip = if self.include_prompt {
            0
        } else {
            prompt_length.unwrap_or(0)
        };
        let mask: Vec<f32> = batch
            .mask
            .iter()
            .enumerate()
            .map(|(i, &m)| if i % s < skip { 0.0 } else { m as f32 })
            .collect();
        let mask_tensor =
            || Tensor::<B, 3>::from_data(TensorData::new(mask.clone(), [b, s, 1]), device);
        let rows = |positions: Vec<i64>| {
            let flat: Vec<i64> = positions
                .iter()
                .enumerate()
                .map(|(row, &p)| (row * s) as i64 + p)
                .collect();
            tokens.clone().reshape([b * s, d]).select(
                0,
                Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [b]), device),
            )
        };
        let mut outputs = Vec::with_capacity(self.modes.len());
        for mode in &self.modes {
            let pooled = match mode {
                PoolingMode::Cls => {
                    // ST takes the first counted position (argmax of the mask; 0 if none).
                    let first = mask
                        .chunks(s)
                        .map(|row| row.iter().position(|&m| m > 0.0).unwrap_or(0) as i64)
                        .collect();
                    rows(first)
                }
                PoolingMode::LastToken => {
                    // The last counted position; a row with none yields zeros, as in ST.
                    let (last, present): (Vec<i64>, Vec<f32>) = mask
                        .chunks(s)
                        .map(|row| match row.iter().rposition(|&m| m > 0.0) {
                            Some(p) => (p as i64, 1.0),
                            None => (0, 0.0),
                        })
                        .unzip();
                    rows(last) * Tensor::<B, 2>::from_data(TensorData::new(present, [b, 1]), device)
                }
                PoolingMode::Max => {
                    let padding: Vec<bool> = mask.iter().map(|&m| m == 0.0).collect();
                    let padding = Tensor::<B, 3, Bool>::from_data(
                        TensorData::new(padding, [b, s, 1]),
                        device,
                    )
                    .expand([b, s, d]);
                    tokens
                        .clone()
                        .mask_fill(padding, f32::NEG_INFINITY)
                        .max_dim(1)
                        .reshape([b, d])
                }
                PoolingMode::Mean | PoolingMode::MeanSqrtLenTokens => {
                    let m = mask_tensor();
                    let sum = (tokens.clone() * m.clone()).sum_dim(1).reshape([b, d]);
                    let count = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
                    if *mode == PoolingMode::Mean {
                        sum / count
                    } else {
                        sum / count.sqrt()
                    }
                }
                PoolingMode::WeightedMean => {
                    // Weight = 1-based position, kept for the remaining tokens when a prompt is excluded.
                    let weights: Vec<f32> = mask
                        .iter()
                        .enumerate()
                        .map(|(i, &m)| m * ((i % s) + 1) as f32)
                        .collect();
                    let w = Tensor::<B, 3>::from_data(TensorData::new(weights, [b, s, 1]), device);
                    let sum = (tokens.clone() * w.clone()).sum_dim(1).reshape([b, d]);
                    sum / w.sum_dim(1).reshape([b, 1]).clamp_min(1e-9)
                }
            };
            outputs.push(pooled);
        }
        Tensor::cat(outputs, 1)
    }
}
