//! RoBERTa (Liu et al. 2019), and XLM-RoBERTa and CamemBERT, which Hugging Face builds from the
//! same code: BERT's embeddings and post-LayerNorm layers under the same weight names, with
//! absolute positions numbered from `pad_token_id + 1` (as MPNet's) and a masked-language-model
//! head of its own (`lm_head`, always the exact GELU). Checkpoint names follow `RobertaModel`;
//! `*ForMaskedLM` checkpoints prefix them with `roberta.`.

use super::bert::{Bert, Positions};
use crate::config::{Activation, EncoderShape};
use crate::error::Result;
use crate::modules::MlmHeadNames;
use crate::ops::EncoderBackend;
use crate::weights::Weights;

/// `RobertaForMaskedLM`'s head (`RobertaLMHead`); its decoder bias is tied to `lm_head.bias`.
pub(crate) const MLM_HEAD: MlmHeadNames = MlmHeadNames {
    transform: "lm_head.dense",
    norm: "lm_head.layer_norm",
    decoder: "lm_head.decoder",
    shared_bias: Some("lm_head.bias"),
    activation: Some(Activation::Gelu),
    transform_bias: true,
    norm_bias: true,
    decoder_bias: true,
};

/// A RoBERTa encoder: BERT's module with RoBERTa's positions.
pub fn load<B: EncoderBackend>(
    shape: &EncoderShape,
    type_vocab_size: usize,
    pad_token_id: usize,
    weights: &Weights,
    device: &B::Device,
) -> Result<Bert<B>> {
    let positions = Positions::AfterPadding {
        pad_token_id: pad_token_id as u32,
    };
    Bert::load(shape, type_vocab_size, positions, weights, device)
}
