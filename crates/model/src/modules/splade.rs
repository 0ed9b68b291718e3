//! ST's `SpladePooling`: vocabulary logits → one weight per vocabulary entry,
//! `log(1 + relu(logit))` (twice `log1p` for `log1p_relu`), max or sum over the real tokens.

use burn::tensor::activation::relu;
use burn::tensor::{Tensor, backend::Backend};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpladeStrategy {
    Max,
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpladeActivation {
    /// `log1p(relu(x))`: every SPLADE model.
    Relu,
    /// `log1p(log1p(relu(x)))`: the OpenSearch variant.
    Log1pRelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpladeConfig {
    pub strategy: SpladeStrategy,
    pub activation: SpladeActivation,
}

impl Default for SpladeConfig {
    /// What ST builds for a bare `*ForMaskedLM` folder.
    fn default() -> Self {
        SpladeConfig {
            strategy: SpladeStrategy::Max,
            activation: SpladeActivation::Relu,
        }
    }
}

impl SpladeConfig {
    /// `logits`: `[batch, seq, vocab]`; `mask`: `[batch, seq, 1]`, 1 for real tokens.
    /// Returns `[batch, vocab]`. Every activated value is ≥ 0, so masking after the activation
    /// (padding → 0) is what ST's masking of the logits before it gives, for max and sum alike.
    pub fn pool<B: Backend>(&self, logits: Tensor<B, 3>, mask: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, v] = logits.dims();
        let mut x = relu(logits).log1p();
        if self.activation == SpladeActivation::Log1pRelu {
            x = x.log1p();
        }
        let x = x * mask;
        match self.strategy {
            SpladeStrategy::Max => x.max_dim(1),
            SpladeStrategy::Sum => x.sum_dim(1),
        }
        .reshape([b, v])
    }

    /// Combines the pooled values of two parts of the same rows' tokens.
    pub fn combine<B: Backend>(&self, a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.strategy {
            SpladeStrategy::Max => a.max_pair(b),
            SpladeStrategy::Sum => a + b,
        }
    }
}
