//! The sentence-transformers modules that follow the transformer: Pooling, Dense, Normalize for
//! dense models; the MLM head and SpladePooling for sparse ones. And `StaticEmbedding`, which
//! takes the transformer's place in token-table models.

mod dense;
mod mlm_head;
mod pooling;
mod splade;
mod static_embedding;

use burn::tensor::{Tensor, backend::Backend};

pub use dense::{Dense, DenseActivation, DenseConfig};
pub use mlm_head::{MlmHead, MlmHeadNames};
pub use pooling::{PoolingConfig, PoolingMode};
pub use splade::{SpladeActivation, SpladeConfig, SpladeStrategy};
pub use static_embedding::StaticEmbedding;

/// ST's `Normalize` (`F.normalize(x, p=2, dim=-1)`): divide by the L2 norm, floored at 1e-12.
pub fn normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
