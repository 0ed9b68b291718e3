//! ST's `Dense` module: a linear projection of the sentence embedding with an activation.

use std::path::PathBuf;

use burn::nn::Linear;
use burn::tensor::activation::{gelu, relu, sigmoid};
use burn::tensor::{Tensor, backend::Backend};

use crate::architectures::load_linear;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
    Relu,
    Sigmoid,
    Gelu,
}

#[derive(Debug, Clone)]
pub struct DenseConfig {
    pub weights: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: DenseActivation,
    pub use_residual: bool,
}

#[derive(Debug)]
pub struct Dense<B: Backend> {
    linear: Linear<B>,
    /// Projection for the residual when in and out sizes differ (`use_residual`).
    residual: Option<Linear<B>>,
    use_residual: bool,
    activation: DenseActivation,
}

impl<B: Backend> Dense<B> {
    pub fn load(config: &DenseConfig, device: &B::Device) -> Result<Self> {
        let weights = Weights::open(&config.weights, "")?;
        let (i, o) = (config.in_features, config.out_features);
        let linear = load_linear(&weights, "linear", i, o, device)?;
        if config.bias && !weights.contains("linear.bias") {
            // `bias: true` in the config but no tensor: the file is wrong, not the model.
            weights.values("linear.bias", &[o])?;
        }
        let residual = if config.use_residual && i != o {
            Some(load_linear(&weights, "residual", i, o, device)?)
        } else {
            None
        };
        Ok(Dense {
            linear,
            residual,
            use_residual: config.use_residual,
            activation: config.activation,
        })
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.linear.forward(x.clone());
        let y = match self.activation {
            DenseActivation::Identity => y,
            DenseActivation::Tanh => y.tanh(),
            DenseActivation::Relu => relu(y),
            DenseActivation::Sigmoid => sigmoid(y),
            DenseActivation::Gelu => gelu(y),
        };
        match (&self.residual, self.use_residual) {
            (Some(projection), _) => y + projection.forward(x),
            (None, true) => y + x,
            (None, false) => y,
        }
    }
}
